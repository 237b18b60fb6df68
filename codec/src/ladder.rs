//! The quality ladder: the operating points a stream can be sent at, each with its measured
//! rate and distortion, for the edge's rate control and the coordinator's allocation.

use std::collections::BTreeMap;

use crate::column::{choose_predictor, residuals};
use crate::entropy::{ResidualContext, ResidualEncoder};
use crate::lossless::{for_each_value_column, plan_column};
use crate::timestamps::timestamp_ticks;
use crate::{BoundedCodec, Codec, CodecError, ErrorBound, Frame, LosslessCodec, StreamSchema};

/// One rung: lossless (level 0) or an error bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rung {
    pub level: u8,
    /// `None` is lossless.
    pub bound: Option<ErrorBound>,
}

/// A measured operating point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RdPoint {
    pub level: u8,
    pub bits_per_second: f64,
    /// Root-mean-square error over all channels, in units of each channel's noise sigma
    /// (0 for lossless), so that channels of different units add up.
    pub distortion: f64,
    /// Largest error over all samples, in the channels' own units.
    pub max_abs_error: f64,
}

/// The rungs of a stream, cheapest last.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityLadder {
    pub rungs: Vec<Rung>,
}

impl QualityLadder {
    /// Lossless, then bounds of 0.5, 1, 2, 4 and 8 noise sigmas.
    pub fn standard() -> Self {
        let mut rungs = vec![Rung {
            level: 0,
            bound: None,
        }];
        for (i, k) in [0.5, 1.0, 2.0, 4.0, 8.0].into_iter().enumerate() {
            rungs.push(Rung {
                level: i as u8 + 1,
                bound: Some(ErrorBound::Sigma(k)),
            });
        }
        Self { rungs }
    }

    /// The error bound of each channel at `level` (0 for lossless), to check decoded data.
    pub fn channel_bounds(&self, schema: &StreamSchema, level: u8) -> Option<Vec<f64>> {
        let rung = self.rungs.iter().find(|r| r.level == level)?;
        Some(match rung.bound {
            None => vec![0.0; schema.channels.len()],
            Some(bound) => bound.per_channel(schema, &[]),
        })
    }

    /// The codec of one rung.
    pub fn codec(&self, level: u8) -> Option<Box<dyn Codec>> {
        let rung = self.rungs.iter().find(|r| r.level == level)?;
        Some(match rung.bound {
            None => Box::new(LosslessCodec),
            Some(bound) => Box::new(BoundedCodec {
                bound,
                quality: level,
            }),
        })
    }

    /// Encodes `frames` at every rung, in packets of `block_frames` as a node would send
    /// them, and measures rate and distortion.
    pub fn measure(
        &self,
        schema: &StreamSchema,
        frames: &[Frame],
        block_frames: usize,
    ) -> Result<Vec<RdPoint>, CodecError> {
        self.measure_with(schema, frames, block_frames, |level| self.codec(level))
    }

    /// [`QualityLadder::measure`] with the codec of each rung chosen by `codec_at` (a node
    /// running a learned model measures the model's rungs).
    pub fn measure_with(
        &self,
        schema: &StreamSchema,
        frames: &[Frame],
        block_frames: usize,
        codec_at: impl Fn(u8) -> Option<Box<dyn Codec>>,
    ) -> Result<Vec<RdPoint>, CodecError> {
        let span_s = match (frames.first(), frames.last()) {
            (Some(a), Some(b)) if b.timestamp_ns > a.timestamp_ns => {
                (b.timestamp_ns - a.timestamp_ns) as f64 * 1e-9 + 1.0 / schema.rate_hz.max(1e-9)
            }
            _ => frames.len() as f64 / schema.rate_hz.max(1e-9),
        };
        let mut points = Vec::with_capacity(self.rungs.len());
        for rung in &self.rungs {
            let codec = codec_at(rung.level).ok_or(CodecError::Corrupt("no such rung"))?;
            let mut bytes = 0usize;
            let mut decoded = Vec::with_capacity(frames.len());
            for block in frames.chunks(block_frames.max(1)) {
                let packet = codec.encode(schema, block)?;
                bytes += packet.len();
                decoded.extend(codec.decode(schema, &packet)?);
            }
            let (mut sq, mut n, mut max) = (0.0f64, 0usize, 0.0f64);
            for (a, b) in frames.iter().zip(&decoded) {
                for (c, (x, y)) in a.values.iter().zip(&b.values).enumerate() {
                    if x.is_finite() {
                        let e = (x - y).abs();
                        sq += schema.error_in_sigmas(c, *x, *y).powi(2);
                        n += 1;
                        max = max.max(e);
                    }
                }
            }
            points.push(RdPoint {
                level: rung.level,
                bits_per_second: bytes as f64 * 8.0 / span_s,
                distortion: (sq / n.max(1) as f64).sqrt(),
                max_abs_error: max,
            });
        }
        Ok(points)
    }
}

/// Coded size of the lossless residuals against their empirical (zeroth-order) entropy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EntropyReport {
    pub residuals: usize,
    /// Bits the entropy coder spent on the residuals, each block's columns in one coded
    /// section as the codec codes them (the section's length, final state and padding
    /// included; the packet's headers excluded).
    pub coded_bits: f64,
    /// `n * H`, with `H` the entropy of each column's residual histogram.
    pub entropy_bits: f64,
    /// The same with each column's entropy estimated as Chao and Shen's coverage-adjusted
    /// estimator does: a histogram prices a value seen once at `log2 n` bits, and a column
    /// whose residuals spread wide (a lidar beam's) holds many, so its entropy is biased
    /// low; this one corrects for the values not seen.
    pub coverage_adjusted_entropy_bits: f64,
}

/// What the lossless codec's entropy coder spends against the entropy of what it codes.
pub fn entropy_report(schema: &StreamSchema, frames: &[Frame]) -> EntropyReport {
    let mut report = EntropyReport::default();
    if frames.is_empty() {
        return report;
    }
    let times: Vec<i64> = frames.iter().map(|f| f.timestamp_ns).collect();
    let (_, ticks, history) = timestamp_ticks(&times, schema);
    let predictor = choose_predictor(&ticks, history);
    // A column codes its residuals from the context the codec starts it from
    // (`starting_context`).
    let mut encoder = ResidualEncoder::new();
    let mut add = |residuals: &[i64], activities: Option<&[u32]>, warmup: usize, rest| {
        // An all-zero column codes nothing (its descriptor says so).
        if residuals.iter().any(|r| *r != 0) {
            report.add(&mut encoder, residuals, activities, warmup, rest)
        } else {
            rest
        }
    };
    let fresh = ResidualContext::default();
    add(
        &residuals(&ticks, predictor, history),
        None,
        predictor.warmup(),
        fresh,
    );
    let mut carried = ResidualContext::default();
    for_each_value_column(
        schema,
        |c| {
            frames
                .iter()
                .map(|f| f.values.get(c).copied().unwrap_or(0.0))
                .collect::<Vec<f64>>()
        },
        |_, ints, neighbour| {
            let plan = plan_column(ints, neighbour);
            let rest = plan.prediction.starting_context(&mut carried);
            carried = add(
                &plan.residuals,
                plan.activities.as_deref(),
                plan.prediction.warmup(),
                rest,
            );
        },
    );
    report.close_section(encoder);
    report
}

/// What the bounded codec's entropy coder spends on the quantisation indices of each block
/// of `block_frames` against the entropy of each column's indices in its block.
pub fn bounded_entropy_report(
    schema: &StreamSchema,
    frames: &[Frame],
    bound: ErrorBound,
    block_frames: usize,
) -> Result<EntropyReport, CodecError> {
    let mut report = EntropyReport::default();
    let codec = BoundedCodec::new(bound);
    for block in frames.chunks(block_frames.max(1)) {
        let mut carried = ResidualContext::default();
        let mut encoder = ResidualEncoder::new();
        codec.encode_observed(schema, block, |indices, activities, warmup| {
            let rest = crate::column::starting_context(activities.is_some(), &mut carried);
            carried = report.add(&mut encoder, indices, activities, warmup, rest);
        })?;
        report.close_section(encoder);
    }
    Ok(report)
}

impl Default for EntropyReport {
    fn default() -> Self {
        EntropyReport {
            residuals: 0,
            coded_bits: 0.0,
            entropy_bits: 0.0,
            coverage_adjusted_entropy_bits: 0.0,
        }
    }
}

impl EntropyReport {
    /// One column's residuals: the entropy of their histogram, and their coding into
    /// `encoder` after the warm-up from `rest` (beside their activities where they have
    /// them); returns the context they leave.
    fn add(
        &mut self,
        encoder: &mut ResidualEncoder,
        residuals: &[i64],
        activities: Option<&[u32]>,
        warmup: usize,
        rest: ResidualContext,
    ) -> ResidualContext {
        let mut histogram: BTreeMap<i64, usize> = BTreeMap::new();
        for r in residuals {
            *histogram.entry(*r).or_default() += 1;
        }
        let n = residuals.len() as f64;
        self.entropy_bits += histogram
            .values()
            .map(|&k| -(k as f64) * (k as f64 / n).log2())
            .sum::<f64>();
        self.coverage_adjusted_entropy_bits += n * coverage_adjusted_entropy(histogram.values());
        let left = crate::column::encode_residuals(
            encoder,
            residuals.iter().copied(),
            activities,
            warmup,
            rest,
        );
        self.residuals += residuals.len();
        left
    }

    /// What the block's columns cost coded together (coded apart, each paid a section's
    /// length, final state and padding of its own, about 6 bytes, which the codec pays once
    /// a packet); a block with nothing coded (no quantised column) has no section.
    fn close_section(&mut self, encoder: ResidualEncoder) {
        if !encoder.is_empty() {
            self.coded_bits += encoder.finish().len() as f64 * 8.0;
        }
    }
}

/// Chao and Shen's (2003) coverage-adjusted entropy estimate, in bits, of a source seen
/// through the counts of its values: each relative frequency shrunk by the sample coverage
/// `C = 1 - f1 / n` (`f1` the values seen once; `n - 1` of them where all were) and each
/// term weighted up by the chance `1 / (1 - (1 - C p)^n)` that its value was seen at all.
fn coverage_adjusted_entropy<'a>(counts: impl Iterator<Item = &'a usize> + Clone) -> f64 {
    let n: usize = counts.clone().sum();
    if n == 0 {
        return 0.0;
    }
    let singletons = counts.clone().filter(|&&k| k == 1).count();
    let coverage = 1.0 - singletons.min(n - 1) as f64 / n as f64;
    counts
        .map(|&k| {
            let p = coverage * k as f64 / n as f64;
            -p * p.log2() / (1.0 - (1.0 - p).powi(n as i32))
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::tests::imu_schema;

    fn frames() -> Vec<Frame> {
        crate::synthetic::imu_frames(2000, 11, 8.0)
    }

    /// 4,000 draws from 2,048 equally likely values (11 bits): the histogram's entropy is
    /// biased low by the values it saw once, the coverage-adjusted estimate less than half
    /// as far off (it errs high here: 11.18).
    #[test]
    fn the_coverage_adjusted_entropy_corrects_the_histograms_bias() {
        let mut uniform = crate::synthetic::uniform_source(3);
        let mut histogram: BTreeMap<i64, usize> = BTreeMap::new();
        let n = 4000;
        for _ in 0..n {
            *histogram.entry((uniform() * 2048.0) as i64).or_default() += 1;
        }
        let plug_in: f64 = histogram
            .values()
            .map(|&k| -(k as f64 / n as f64) * (k as f64 / n as f64).log2())
            .sum();
        let adjusted = coverage_adjusted_entropy(histogram.values());
        assert!(plug_in < 10.6, "histogram: {plug_in} bits");
        assert!(
            (adjusted - 11.0).abs() < (11.0 - plug_in) / 2.0,
            "coverage-adjusted: {adjusted} bits, histogram {plug_in}"
        );
        // Where every value is seen many times the two agree.
        let many = [1000usize, 2000, 1000];
        let plug_in = 1.5;
        assert!((coverage_adjusted_entropy(many.iter()) - plug_in).abs() < 1e-9);
    }

    #[test]
    fn rate_falls_and_distortion_rises_down_the_ladder() {
        let points = QualityLadder::standard()
            .measure(&imu_schema(), &frames(), 40)
            .unwrap();
        assert_eq!(points[0].distortion, 0.0);
        for pair in points.windows(2) {
            assert!(
                pair[1].bits_per_second < pair[0].bits_per_second,
                "{pair:?}"
            );
            assert!(pair[1].distortion >= pair[0].distortion, "{pair:?}");
        }
    }

    /// Every channel's indices are seen once per packet, and priced. The synthetic IMU's
    /// uniform noise makes the gyros' indices uniform over -2..=2, where the coder loses
    /// about 0.2 bits an index: +2 alone fills bucket 3 (zigzag 4 to 7), whose lowest
    /// mantissa bit goes raw; 8.5 % over the histogram's entropy in 500-frame packets
    /// (6.7 % in 2000-frame ones, where less of the gap is the histogram's small-sample bias).
    #[test]
    fn the_bounded_report_prices_every_index() {
        let frames = frames();
        let report =
            bounded_entropy_report(&imu_schema(), &frames, ErrorBound::Sigma(1.0), 500).unwrap();
        assert_eq!(report.residuals, frames.len() * 6);
        let overhead = report.coded_bits / report.entropy_bits - 1.0;
        assert!(
            (0.0..0.10).contains(&overhead),
            "{:.1}% over the empirical entropy",
            overhead * 100.0
        );
    }

    /// Where the bound is under one count, no column is quantised: no index, no section,
    /// nothing coded.
    #[test]
    fn a_block_without_indices_costs_nothing() {
        let report =
            bounded_entropy_report(&imu_schema(), &frames(), ErrorBound::Absolute(1e-12), 500)
                .unwrap();
        assert_eq!(report.residuals, 0);
        assert_eq!(report.coded_bits, 0.0);
    }

    #[test]
    fn the_coder_stays_near_the_entropy_of_its_residuals() {
        let report = entropy_report(&imu_schema(), &frames());
        let overhead = report.coded_bits / report.entropy_bits - 1.0;
        assert!(
            overhead < 0.05,
            "{:.1}% over the empirical entropy",
            overhead * 100.0
        );
    }
}
