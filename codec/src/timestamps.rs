//! The timestamp column, column 0 of every codec's packet.
//!
//! Timestamps are counted in ticks of the greatest common divisor of their offsets from the
//! block's first (a logger's microsecond clock, a camera's frame period) and either predicted
//! like any column, from the nominal period extrapolated backwards (a regular stream's cost
//! nothing), or, when the intervals take a few values over and over, coded as ranks in a
//! palette of those intervals. The second case is a sample timer stamped by another clock:
//! x-io's 100 Hz IMU logs 49 distinct intervals in 13,514, ten of them 95 % of the time, which
//! a predictor sees as residuals of hundreds of nanoseconds. Layout in `codec/FORMAT.md`.
//!
//! Must not: know what the value columns hold; every codec calls these same functions.

use crate::column::{
    History, Predictor, Representation, choose_predictor, decode_column, residual_bits, residuals,
};
use crate::divisor::{ExactDivisor, gcd};
use crate::entropy::{ResidualContext, ResidualDecoder, ResidualEncoder, unzigzag, zigzag};
use crate::lossless::{ALL_ZERO_BIT, REPR_SHIFT, descriptor, encode_predicted_column};
use crate::varint::{Reader, put_uvarint};
use crate::{CodecError, StreamSchema};

/// Representation tags of a timestamp column counted in ticks of a common step given as a
/// parameter, and of the nominal period (no parameter). Tag 0 (integer) is a tick of 1 ns.
const TICKS_TAG: u8 = 6;
const PERIOD_TICKS_TAG: u8 = 7;

/// The stream's nominal sampling period in nanoseconds (0 when it has no rate).
fn nominal_period_ns(schema: &StreamSchema) -> i64 {
    if schema.rate_hz > 0.0 && schema.rate_hz.is_finite() {
        (1e9 / schema.rate_hz).round() as i64
    } else {
        0
    }
}

/// The timestamp column (column 0 of every codec): the offsets from the block's first
/// timestamp counted in ticks of their greatest common divisor (a logger's microsecond
/// clock, a camera's frame period), predicted from the nominal period in ticks. Jittery
/// timestamps then cost the jitter, not the nanosecond digits no clock produced.
pub(crate) fn encode_timestamps(
    descriptors: &mut Vec<u8>,
    encoder: &mut ResidualEncoder,
    times: &[i64],
    schema: &StreamSchema,
) {
    let (tick, ticks, history) = timestamp_ticks(times, schema);
    let mut parameters = Vec::new();
    let tag = if tick == nominal_period_ns(schema) {
        PERIOD_TICKS_TAG
    } else if tick == 1 {
        Representation::Integer.tag()
    } else {
        put_uvarint(&mut parameters, tick as u64);
        TICKS_TAG
    };
    let (predictor, residuals) = match continues_its_history(&ticks, history) {
        // Linear prediction leaves only zeros, which nothing beats: `choose_predictor`'s
        // choice, without its passes.
        true => (Predictor::Linear, vec![0; ticks.len()]),
        false => {
            let predictor = choose_predictor(&ticks, history);
            (predictor, residuals(&ticks, predictor, history))
        }
    };
    // A regular stream's residuals are all zero, and nothing is cheaper.
    if residuals.iter().any(|r| *r != 0)
        && let Some(palette) = IntervalPalette::of(&ticks, history[0])
        && palette.estimated_bits() < bucketed_bits(&residuals)
    {
        palette.encode(descriptors, encoder, tag, &parameters);
        return;
    }
    encode_predicted_column(descriptors, encoder, tag, &parameters, predictor, residuals);
}

/// Whether `ticks` go on from `history` at its step (0, 1, 2, ... after a regular history),
/// so that linear prediction leaves only zeros, and neither zero nor previous-value
/// prediction, which [`choose_predictor`] tries first, does so on the values it judges.
fn continues_its_history(ticks: &[i64], history: History) -> bool {
    let linear = ticks
        .iter()
        .zip(1..)
        .all(|(&t, k)| t == tick_continuing(history, k));
    // Zero prediction leaves only zeros where every tick is 0, previous-value prediction
    // where every tick is the history's newest: neither where the step is not 0 and there
    // are two ticks to differ.
    linear && history[0] != history[1] && ticks.len() >= 2
}

/// The `k`-th tick after `history` at its step (its newest less the one before), modulo
/// 2^64 as linear predictions wrap: what linear prediction makes with zero residuals.
fn tick_continuing(history: History, k: i64) -> i64 {
    let step = history[0].wrapping_sub(history[1]);
    history[0].wrapping_add(step.wrapping_mul(k))
}

/// A block's timestamps as tick counts from the first: the tick, the counts, and the history
/// they are predicted from.
pub(crate) fn timestamp_ticks(times: &[i64], schema: &StreamSchema) -> (i64, Vec<i64>, History) {
    let first = times.first().copied().unwrap_or(0);
    let tick = timestamp_tick(times);
    let tick_divisor = ExactDivisor::new(tick);
    let ticks = times
        .iter()
        .map(|t| tick_divisor.quotient(t.wrapping_sub(first)))
        .collect();
    (tick, ticks, tick_history(schema, tick))
}

/// The largest step dividing every offset from the first timestamp (wrapping, as the
/// offsets are taken), 1 when there is none. The common case, offsets that fit an `i64`,
/// takes the divisor of the successive differences, which needs a division only when a
/// difference is not a multiple of the divisor so far (a regular stream needs none, a
/// jittery one a few).
fn timestamp_tick(times: &[i64]) -> i64 {
    match regular_step(times) {
        // Every offset a multiple of the step, the step itself one: the steps' divisor.
        Some(step) => tick_of(step.unsigned_abs()),
        None => tick_of_steps(times),
    }
}

/// [`timestamp_tick`] from the divisor of the steps.
fn tick_of_steps(times: &[i64]) -> i64 {
    let first = times.first().copied().unwrap_or(0);
    let mut divisor = 0u64;
    let mut multiples: Option<ExactDivisor> = None;
    let mut previous = first;
    for &t in times {
        let offset = i128::from(t) - i128::from(first);
        if i64::try_from(offset).is_err() {
            return wrapping_timestamp_tick(times);
        }
        let step = i128::from(t) - i128::from(previous);
        previous = t;
        let divided =
            multiples.is_some_and(|m| i64::try_from(step).is_ok_and(|step| m.divides(step)));
        if step != 0 && !divided {
            // Both offsets fit an i64, so their difference fits a u64.
            divisor = gcd(divisor, step.unsigned_abs() as u64);
            multiples = i64::try_from(divisor).ok().map(ExactDivisor::new);
        }
    }
    tick_of(divisor)
}

/// The step of a block whose timestamps all follow the first at the same step, without
/// overflowing (the common case, found in a pass that vectorises): the last is the first
/// plus the steps, so none of the timestamps between wrapped.
fn regular_step(times: &[i64]) -> Option<i64> {
    let (&first, &last) = (times.first()?, times.last()?);
    let step = times.get(1)?.checked_sub(first)?;
    let span = step.checked_mul(i64::try_from(times.len() - 1).ok()?)?;
    (first.checked_add(span) == Some(last)
        && times.windows(2).all(|w| w[1].wrapping_sub(w[0]) == step))
    .then_some(step)
}

/// [`timestamp_tick`] over the wrapped offsets, for blocks that span more than an `i64`.
fn wrapping_timestamp_tick(times: &[i64]) -> i64 {
    let first = times.first().copied().unwrap_or(0);
    tick_of(
        times
            .iter()
            .fold(0, |g, t| gcd(g, t.wrapping_sub(first).unsigned_abs())),
    )
}

fn tick_of(divisor: u64) -> i64 {
    i64::try_from(divisor).ok().filter(|g| *g > 0).unwrap_or(1)
}

/// The history the tick counts start from: the nominal period, in ticks, extrapolated
/// backwards from zero (the first timestamp), so a regular stream leaves all-zero residuals.
fn tick_history(schema: &StreamSchema, tick: i64) -> History {
    let period_ticks = (nominal_period_ns(schema) as f64 / tick as f64).round() as i64;
    std::array::from_fn(|k| period_ticks.wrapping_mul(-(k as i64) - 1))
}

/// The head of a timestamp column: its tick and how its ticks are coded.
pub(crate) struct TimestampHead {
    tick: i64,
    model: TimestampModel,
    all_zero: bool,
}

enum TimestampModel {
    Predicted(Predictor),
    /// The intervals, most frequent first: a rank per timestamp.
    Palette(Vec<i64>),
}

pub(crate) fn read_timestamp_head(
    reader: &mut Reader<'_>,
    schema: &StreamSchema,
) -> Result<TimestampHead, CodecError> {
    let d = reader.u8()?;
    if d & 0x80 != 0 {
        return Err(CodecError::Corrupt("bad timestamp column descriptor"));
    }
    let tick = match d >> REPR_SHIFT & 0b111 {
        0 => Some(1),
        TICKS_TAG => i64::try_from(reader.uvarint()?).ok(),
        PERIOD_TICKS_TAG => Some(nominal_period_ns(schema)),
        _ => return Err(CodecError::Corrupt("timestamps must be counted in ticks")),
    }
    .filter(|t| *t > 0)
    .ok_or(CodecError::Corrupt("timestamp tick out of range"))?;
    let model = match d & 0b111 {
        PALETTE_TAG => {
            TimestampModel::Palette(read_palette(reader, tick_history(schema, tick)[0])?)
        }
        tag => TimestampModel::Predicted(Predictor::read(tag, reader)?),
    };
    Ok(TimestampHead {
        tick,
        model,
        all_zero: d & ALL_ZERO_BIT != 0,
    })
}

/// Decodes the `n` timestamps of a block whose first is `first`.
pub(crate) fn decode_timestamps(
    decoder: &mut ResidualDecoder,
    n: usize,
    head: &TimestampHead,
    first: i64,
    schema: &StreamSchema,
) -> Result<Vec<i64>, CodecError> {
    let history = tick_history(schema, head.tick);
    let ticks = match &head.model {
        // A regular block (linear prediction, every residual zero): the ticks go on from
        // the history at its step, in closed form rather than a chain of predictions.
        TimestampModel::Predicted(Predictor::Linear) if head.all_zero => {
            return Ok((1..=n as i64)
                .map(|k| first.wrapping_add(tick_continuing(history, k).wrapping_mul(head.tick)))
                .collect());
        }
        TimestampModel::Predicted(predictor) => {
            let fresh = ResidualContext::default();
            decode_column(decoder, n, *predictor, history, head.all_zero, fresh)?.0
        }
        TimestampModel::Palette(intervals) => {
            decode_palette_ticks(decoder, n, intervals, history[0], head.all_zero)?
        }
    };
    Ok(ticks
        .into_iter()
        .map(|k| first.wrapping_add(k.wrapping_mul(head.tick)))
        .collect())
}

/// Predictor tag of a timestamp column coded as palette ranks (value columns have none).
const PALETTE_TAG: u8 = 4;
/// Most intervals a palette holds: beyond, its description costs more than it saves.
const PALETTE_MAX: usize = 256;
/// Slots of the encoder's interval table (a power of two, four times [`PALETTE_MAX`]).
const PALETTE_SLOTS: usize = 4 * PALETTE_MAX;

/// A rank is coded in the context of the previous one: a timer beating against a clock
/// repeats a pattern of intervals (x-io's three-interval cycle leaves 1.8 bits of the 3.3 of
/// the intervals' histogram).
const RANK_CONTEXTS: usize = 6;

fn rank_context(previous_rank: usize) -> usize {
    match previous_rank {
        0..=3 => previous_rank,
        4..=7 => 4,
        _ => 5,
    }
}

/// The distinct intervals between successive tick counts, most frequent first, and the
/// rank of each interval.
struct IntervalPalette {
    /// The newest count of the history, before the first timestamp: minus the nominal
    /// period, which the intervals are written as differences from.
    previous: i64,
    intervals: Vec<i64>,
    /// How often each interval occurs.
    counts: Vec<u32>,
    ranks: Vec<u32>,
}

impl IntervalPalette {
    /// The palette of `ticks`, the first interval taken from `previous` (the history's
    /// newest count); `None` when there are more than [`PALETTE_MAX`] distinct intervals.
    fn of(ticks: &[i64], previous: i64) -> Option<Self> {
        // Open addressing over a table four times the palette: the encoder's one pass over
        // the intervals, without allocation per interval or a sort of all of them.
        let mut keys = [0i64; PALETTE_SLOTS];
        let mut counts = [0u32; PALETTE_SLOTS];
        let mut slots = Vec::with_capacity(ticks.len());
        let mut distinct = 0;
        let mut last = previous;
        for &t in ticks {
            let interval = t.wrapping_sub(last);
            last = t;
            let mut slot = (interval as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) as usize
                >> (usize::BITS - PALETTE_SLOTS.trailing_zeros());
            while counts[slot] != 0 && keys[slot] != interval {
                slot = (slot + 1) % PALETTE_SLOTS;
            }
            if counts[slot] == 0 {
                distinct += 1;
                if distinct > PALETTE_MAX {
                    return None;
                }
                keys[slot] = interval;
            }
            counts[slot] += 1;
            slots.push(slot as u16);
        }
        let mut entries: Vec<(u32, i64, usize)> = (0..PALETTE_SLOTS)
            .filter(|&s| counts[s] != 0)
            .map(|s| (counts[s], keys[s], s))
            .collect();
        // Most frequent first, ties by value: the same palette for the same ticks.
        entries.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut rank_of_slot = [0u32; PALETTE_SLOTS];
        for (rank, &(_, _, slot)) in entries.iter().enumerate() {
            rank_of_slot[slot] = rank as u32;
        }
        Some(IntervalPalette {
            previous,
            intervals: entries.iter().map(|e| e.1).collect(),
            counts: entries.iter().map(|e| e.0).collect(),
            ranks: slots
                .iter()
                .map(|&s| rank_of_slot[usize::from(s)])
                .collect(),
        })
    }

    /// What coding the palette costs, near enough to choose: its description and the ranks'
    /// zeroth-order entropy (the contexts only gain: 5-10 % on x-io and px4).
    fn estimated_bits(&self) -> u64 {
        let n = self.ranks.len() as f64;
        let entropy: f64 = self
            .counts
            .iter()
            .map(|&c| f64::from(c) * (n / f64::from(c)).log2())
            .sum();
        let mut description = Vec::new();
        self.write(&mut description);
        entropy as u64 + 8 * description.len() as u64
    }

    /// The palette's count and intervals, each as the zigzag difference from the one
    /// before, the first from the nominal period.
    fn write(&self, out: &mut Vec<u8>) {
        put_uvarint(out, self.intervals.len() as u64);
        let mut last = self.previous.wrapping_neg();
        for &interval in &self.intervals {
            put_uvarint(out, zigzag(interval.wrapping_sub(last)));
            last = interval;
        }
    }

    fn encode(
        &self,
        descriptors: &mut Vec<u8>,
        encoder: &mut ResidualEncoder,
        repr_tag: u8,
        parameters: &[u8],
    ) {
        let all_zero = self.ranks.iter().all(|r| *r == 0);
        descriptors.push(descriptor(PALETTE_TAG, repr_tag, all_zero));
        descriptors.extend_from_slice(parameters);
        self.write(descriptors);
        if all_zero {
            return;
        }
        // Compiled for the CPU's instructions, as the columns' coding loop is.
        crate::entropy::with_cpu_features(
            #[inline(always)]
            || {
                let mut contexts: [ResidualContext; RANK_CONTEXTS] = Default::default();
                let mut previous = 0;
                for &rank in &self.ranks {
                    let rank = rank as usize;
                    encoder.encode(&mut contexts[rank_context(previous)], unzigzag(rank as u64));
                    previous = rank;
                }
            },
        );
    }
}

/// A palette as [`IntervalPalette::write`] wrote it, `previous` the history's newest count.
fn read_palette(reader: &mut Reader<'_>, previous: i64) -> Result<Vec<i64>, CodecError> {
    let m = reader.uvarint()?;
    if !(1..=PALETTE_MAX as u64).contains(&m) {
        return Err(CodecError::Corrupt(
            "interval palette of more than 256 or no intervals",
        ));
    }
    let mut last = previous.wrapping_neg();
    (0..m)
        .map(|_| {
            last = last.wrapping_add(unzigzag(reader.uvarint()?));
            Ok(last)
        })
        .collect()
}

/// The tick counts from their ranks in `intervals`, the first interval after `previous`.
fn decode_palette_ticks(
    decoder: &mut ResidualDecoder,
    n: usize,
    intervals: &[i64],
    previous: i64,
    all_zero: bool,
) -> Result<Vec<i64>, CodecError> {
    let mut ticks = Vec::with_capacity(n);
    let mut last = previous;
    if all_zero {
        for _ in 0..n {
            last = last.wrapping_add(intervals[0]);
            ticks.push(last);
        }
        return Ok(ticks);
    }
    crate::entropy::with_cpu_features(
        #[inline(always)]
        || {
            // A local copy of the coder's position keeps it in registers through the loop.
            let mut local = *decoder;
            let mut contexts: [ResidualContext; RANK_CONTEXTS] = Default::default();
            let mut previous_rank = 0;
            for _ in 0..n {
                let rank = zigzag(local.decode(&mut contexts[rank_context(previous_rank)])?);
                let interval = *intervals
                    .get(rank as usize)
                    .ok_or(CodecError::Corrupt("interval rank beyond the palette"))?;
                last = last.wrapping_add(interval);
                ticks.push(last);
                previous_rank = rank as usize;
            }
            *decoder = local;
            Ok(ticks)
        },
    )
}

/// The bits a column of residuals costs the residual coder, near enough to choose: the
/// entropy of their bucket histogram and the mantissa bits (`entropy`'s model with its
/// distribution known).
fn bucketed_bits(residuals: &[i64]) -> u64 {
    let mut histogram = [0u32; 65];
    for &r in residuals {
        histogram[residual_bits(r) as usize - 1] += 1;
    }
    let n = residuals.len() as f64;
    let bits: f64 = histogram
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(bucket, &c)| {
            f64::from(c) * ((n / f64::from(c)).log2() + bucket.saturating_sub(1) as f64)
        })
        .sum();
    bits as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::tests::imu_schema;
    use crate::{BoundedCodec, Codec, ErrorBound, Frame, LosslessCodec};
    use proptest::prelude::*;

    /// A 100 Hz timer whose true period is not a whole number of the logger's 10 ns ticks,
    /// with the logger's phase jitter: a few intervals in a repeating pattern, as in x-io's
    /// log.
    fn beating_timer(n: usize) -> Vec<i64> {
        let mut state = 3u64;
        (0..n as i64)
            .map(|i| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                let phase_jitter = [0, 0, 0, 470][(state >> 62) as usize];
                1_000_000_000 + (i * 1_007_938_333 / 100 + phase_jitter) / 10 * 10
            })
            .collect()
    }

    fn frames_at(times: &[i64]) -> Vec<Frame> {
        times
            .iter()
            .map(|&t| Frame::new(t, vec![0.25; 6]))
            .collect()
    }

    fn coded(times: &[i64], palette: bool) -> (u8, usize) {
        let schema = imu_schema();
        let mut descriptors = Vec::new();
        let mut encoder = ResidualEncoder::new();
        if palette {
            encode_timestamps(&mut descriptors, &mut encoder, times, &schema);
        } else {
            let (_, ticks, history) = timestamp_ticks(times, &schema);
            let predictor = choose_predictor(&ticks, history);
            let residuals = residuals(&ticks, predictor, history);
            encode_predicted_column(&mut descriptors, &mut encoder, 0, &[], predictor, residuals);
        }
        let descriptor = descriptors[0];
        (descriptor, descriptors.len() + encoder.finish().len())
    }

    #[test]
    fn a_timer_beating_against_the_logger_clock_is_coded_as_palette_ranks() {
        let times = beating_timer(1000);
        let (descriptor, palette_bytes) = coded(&times, true);
        let (_, predicted_bytes) = coded(&times, false);
        assert_eq!(descriptor & 0b111, PALETTE_TAG);
        assert!(
            palette_bytes * 2 < predicted_bytes,
            "{palette_bytes} bytes as ranks, {predicted_bytes} predicted"
        );
        for codec in [
            &LosslessCodec as &dyn Codec,
            &BoundedCodec::new(ErrorBound::Sigma(1.0)),
        ] {
            let frames = frames_at(&times);
            let packet = codec.encode(&imu_schema(), &frames).unwrap();
            let back = codec.decode(&imu_schema(), &packet).unwrap();
            let back_times: Vec<i64> = back.iter().map(|f| f.timestamp_ns).collect();
            assert_eq!(back_times, times);
        }
    }

    #[test]
    fn regular_and_widely_jittered_timestamps_keep_their_predictor() {
        let regular: Vec<i64> = (0..500).map(|i| i * 5_000_000).collect();
        assert_ne!(coded(&regular, true).0 & 0b111, PALETTE_TAG);
        let mut state = 11u64;
        let jittered: Vec<i64> = (0..500)
            .map(|i| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                i * 5_000_000 + (state >> 40) as i64 % 100_000
            })
            .collect();
        assert_ne!(coded(&jittered, true).0 & 0b111, PALETTE_TAG);
    }

    /// The shortcuts for regular blocks find the tick the steps' divisor finds, and the
    /// predictor `choose_predictor` chooses, with all-zero residuals: steps up and down, of
    /// 0 and 1, at the ends of the clock, one and two timestamps, and irregular blocks
    /// (which they leave alone).
    #[test]
    fn regular_blocks_take_the_shortcuts_to_the_same_choices() {
        let schema = imu_schema();
        let mut cases: Vec<Vec<i64>> = Vec::new();
        for (first, step) in [
            (0, 5_000_000),
            (1_000, -7),
            (i64::MAX - 100, 1),
            (i64::MIN, i64::MAX),
            (i64::MAX, 0),
            (-3, 1 << 62),
        ] {
            for n in [1, 2, 3, 600] {
                cases.push(
                    (0..n)
                        .map(|k| first.wrapping_add(step.wrapping_mul(k)))
                        .collect(),
                );
            }
        }
        cases.push(beating_timer(300));
        cases.push(vec![0, 10, 20, 31, 40]);
        let mut regular = 0;
        for (case, times) in cases.iter().enumerate() {
            let step = regular_step(times);
            if let Some(step) = step {
                assert_eq!(
                    tick_of(step.unsigned_abs()),
                    tick_of_steps(times),
                    "case {case}"
                );
                regular += 1;
            }
            let (_, ticks, history) = timestamp_ticks(times, &schema);
            if continues_its_history(&ticks, history) {
                assert_eq!(
                    choose_predictor(&ticks, history),
                    Predictor::Linear,
                    "case {case}"
                );
                let residuals = residuals(&ticks, Predictor::Linear, history);
                assert!(residuals.iter().all(|&r| r == 0), "case {case}");
            }
        }
        // Of the 24 blocks at a step, the six single timestamps and five whose steps or span
        // overflow take the loop, as the irregular ones do.
        assert_eq!(regular, 13, "regular blocks");
    }

    #[test]
    fn corrupt_palettes_are_errors() {
        let times = beating_timer(300);
        let packet = LosslessCodec
            .encode(&imu_schema(), &frames_at(&times))
            .unwrap();
        // Column count, then the timestamp descriptor (ticks of 10 ns: tag 6, its
        // parameter), then the palette's size.
        assert_eq!(packet.payload[1] & 0b111, PALETTE_TAG);
        let size_at = 3;
        let size = packet.payload[size_at];
        for (bad_size, error) in [
            (0, "interval palette of more than 256 or no intervals"),
            (size - 1, ""),
        ] {
            let mut corrupt = packet.clone();
            corrupt.payload[size_at] = bad_size;
            let decoded = LosslessCodec.decode(&imu_schema(), &corrupt);
            match decoded {
                Err(CodecError::Corrupt(message)) if error.is_empty() || message == error => {}
                other => panic!("palette of {bad_size}: {other:?}"),
            }
        }
    }

    proptest! {
        /// Any few intervals in any order, extremes included, come back exactly.
        #[test]
        fn palette_timestamps_round_trip(
            intervals in proptest::collection::vec(any::<i64>(), 1..6),
            picks in proptest::collection::vec(0usize..6, 2..400),
            first in any::<i64>(),
        ) {
            let mut t = first;
            let times: Vec<i64> = picks
                .iter()
                .map(|&k| {
                    t = t.wrapping_add(intervals[k % intervals.len()]);
                    t
                })
                .collect();
            let frames = frames_at(&times);
            let packet = LosslessCodec.encode(&imu_schema(), &frames).unwrap();
            let back = LosslessCodec.decode(&imu_schema(), &packet).unwrap();
            let back_times: Vec<i64> = back.iter().map(|f| f.timestamp_ns).collect();
            prop_assert_eq!(back_times, times);
        }
    }
}
