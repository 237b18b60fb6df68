//! The error-bounded codec (codec id 2, version 9): every decoded value lies within the bound
//! of its original, always.
//!
//! Prediction runs on the reconstructed values (what the decoder will have), the prediction
//! residual is quantised to a step of twice the bound, and the quantisation indices are
//! range-coded like the lossless residuals. A predictor fitted over twelve values of a first
//! reconstruction averages out the noise the bound lets through. Columns whose values are
//! integers in some unit (ADC counts, decimal digits, integer samples) are quantised in that
//! unit, so the bound is met exactly; genuine floats are quantised in floating point and
//! every sample is checked: one that misses the bound after rounding (or is NaN, infinite,
//! or out of range) is sent exactly as an exception. Units columns share the lossless
//! codec's neighbour median, inherited contexts, indices coded beside the channel before's
//! step, and holes. Layout in `codec/FORMAT.md`.

use crate::column::{
    EXACT_IN_FLOAT, Fit, FloatFitted, MAX_ORDER, Past, PredictedLoop, Predictor, Representation,
    activity_at, encode_residuals, finite_extremes, nearest_integer, nearest_integers_of_small,
    neighbour_activities, neighbour_median, residual_bits, same_unit, starting_context,
    with_prediction,
};
use crate::container::{CodecId, Packet, PacketHeader};
use crate::divisor::Divisor;
use crate::entropy::{ChosenAhead, ResidualContext, ResidualDecoder, ResidualEncoder, zigzag};
use crate::holes::{self, Holes, neighbour_seen};
use crate::lossless::{
    ALL_ZERO_BIT, ColumnHead, Columns, DecodedBlock, HOLES_BIT, Layout, Prediction, REPR_SHIFT,
    check_block, column_payload, decode_value_column, descriptor, encode_column, holes_bit,
    quantum, read_column_head, read_representation, row_buffer, write_representation_parameters,
};
use crate::timestamps::{decode_timestamps, encode_timestamps, read_timestamp_head};
use crate::varint::{Reader, put_uvarint};
use crate::{Codec, CodecError, Frame, SampleType, StreamSchema};

/// The only version this build reads: versions 5 to 8 coded an index's top mantissa bit after
/// its bucket symbol, from a probability of its own ([`crate::entropy`]).
const VERSION: u8 = 9;
/// Units column representation: a detected quantum given as an `f32`.
const QUANTUM_F32_TAG: u8 = 6;
const MODE_LOSSLESS: u8 = 0;
const MODE_UNITS: u8 = 1;
const MODE_FLOAT: u8 = 2;
/// Quantisation indices beyond this go out as exceptions (keeps every product exact).
pub(crate) const MAX_INDEX: f64 = 4_503_599_627_370_496.0;

/// How large an error each channel may have.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ErrorBound {
    /// The same absolute bound, in each channel's unit.
    Absolute(f64),
    /// A multiple of each channel's noise sigma (from the schema).
    Sigma(f64),
    /// A fraction of each channel's range within the block.
    RangeFraction(f64),
}

impl ErrorBound {
    /// The bound of every channel for this block; 0 means lossless.
    pub fn per_channel(&self, schema: &StreamSchema, frames: &[Frame]) -> Vec<f64> {
        let channels = schema.channels.len();
        let clean = |v: f64| if v.is_finite() && v > 0.0 { v } else { 0.0 };
        (0..channels)
            .map(|c| match *self {
                ErrorBound::Absolute(eb) => clean(eb),
                ErrorBound::Sigma(k) => {
                    clean(k * schema.noise_sigma.get(c).copied().unwrap_or(0.0))
                }
                ErrorBound::RangeFraction(f) => {
                    let (lo, hi) = frames
                        .iter()
                        .map(|fr| fr.values[c])
                        .filter(|v| v.is_finite())
                        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                            (lo.min(v), hi.max(v))
                        });
                    clean(f * (hi - lo))
                }
            })
            .collect()
    }
}

/// Error-bounded predictive coding at a quality level of the stream's ladder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoundedCodec {
    pub bound: ErrorBound,
    /// Written into the packet header (index on the stream's quality ladder).
    pub quality: u8,
}

impl BoundedCodec {
    pub fn new(bound: ErrorBound) -> Self {
        Self { bound, quality: 1 }
    }
}

/// An error bound as a whole number of units (ADC steps, integer counts), conservative by a
/// hair so that a bound that is an exact multiple of the unit does not turn every extreme
/// reconstruction into a miss after rounding. Every codec and the training use this rule.
pub fn bound_in_units(eb: f64, unit: f64) -> i64 {
    (eb / unit - 1e-6)
        .floor()
        .clamp(0.0, MAX_UNITS_BOUND as f64) as i64
}

/// The widest bound in units a packet names; wider ones are tightened to it (still a
/// quantisation step of 2^53 units).
const MAX_UNITS_BOUND: i64 = (1 << 52) - 1;

pub(crate) fn round_to_type(v: f64, ty: SampleType) -> f64 {
    match ty {
        SampleType::F32 => f64::from(v as f32),
        SampleType::F64 => v,
        _ => v.round(),
    }
}

fn predict_float(order: u8, h: [f64; 2]) -> f64 {
    let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
    match order {
        0 => 0.0,
        1 => finite(h[0]),
        _ => 2.0 * finite(h[0]) - finite(h[1]),
    }
}

/// One float column quantised at `step`: indices, exceptions, and the reconstruction.
struct FloatQuantised {
    indices: Vec<i64>,
    exceptions: Vec<(usize, f64)>,
}

fn quantise_float(values: &[f64], order: u8, eb: f64, ty: SampleType) -> FloatQuantised {
    let step = 2.0 * eb;
    let mut h = [0.0f64; 2];
    let mut out = FloatQuantised {
        indices: Vec::with_capacity(values.len()),
        exceptions: Vec::new(),
    };
    for (i, &x) in values.iter().enumerate() {
        let prediction = predict_float(order, h);
        let q = ((x - prediction) / step).round();
        let reconstructed = round_to_type(prediction + q * step, ty);
        let within = x.is_finite() && q.abs() <= MAX_INDEX && (x - reconstructed).abs() <= eb;
        let r = if within {
            out.indices.push(q as i64);
            reconstructed
        } else {
            out.exceptions.push((i, x));
            x
        };
        h = [r, h[0]];
    }
    out
}

/// A quantised column's reconstruction as a decoder builds it: each sample is either an
/// exception (sent exactly) or a coded index, turned into a value from the ones before.
trait Reconstruction {
    type Value: Copy;
    fn reconstruct(&self, index: i64) -> Self::Value;
    fn push(&mut self, value: Self::Value);
    /// Decodes the next coded sample from `ctx` (`after_warmup`: the rest's context).
    #[inline(always)]
    fn decode_next(
        &mut self,
        decoder: &mut ResidualDecoder,
        ctx: &mut ResidualContext,
        _after_warmup: bool,
    ) -> Result<Self::Value, CodecError> {
        Ok(self.reconstruct(decoder.decode(ctx)?))
    }
}

/// Decodes `n` samples into `column`. The first `warmup` coded indices have a context of
/// their own, as the encoder's did.
fn dequantise<C: Reconstruction>(
    decoder: &mut ResidualDecoder,
    n: usize,
    warmup: usize,
    exceptions: &[(usize, C::Value)],
    column: &mut C,
    rest: ResidualContext,
) -> Result<ResidualContext, CodecError> {
    crate::entropy::with_cpu_features(
        #[inline(always)]
        || {
            let mut next = exceptions.iter().peekable();
            let (mut i, mut coded) = (0, 0);
            // A local copy of the coder's position keeps it in registers through the loop,
            // and so does one context per phase (a choice per sample would keep it in memory).
            let mut local = *decoder;
            let mut contexts = [ResidualContext::default(), rest];
            for (phase, coded_end) in [warmup, usize::MAX].into_iter().enumerate() {
                let mut ctx = std::mem::take(&mut contexts[phase]);
                while i < n && coded < coded_end {
                    // The coded run up to the next exception (positions ascend, below `n`)
                    // goes without a check per sample.
                    let run_end = next.peek().map_or(n, |(at, _)| *at);
                    if run_end == i {
                        let (_, value) = next.next().expect("peeked");
                        column.push(*value);
                        i += 1;
                        continue;
                    }
                    let run = (run_end - i).min(coded_end - coded);
                    for _ in 0..run {
                        let value = column.decode_next(&mut local, &mut ctx, phase == 1)?;
                        column.push(value);
                    }
                    i += run;
                    coded += run;
                }
                contexts[phase] = ctx;
            }
            *decoder = local;
            let [_, rest] = contexts;
            Ok(rest)
        },
    )
}

/// A units column: the prediction plus the index's multiple of the step, in units.
struct UnitsReconstruction<P> {
    past: Past,
    predict: P,
    step: i64,
}

impl<P: Fn(&Past) -> i64> Reconstruction for UnitsReconstruction<P> {
    type Value = i64;

    #[inline(always)]
    fn reconstruct(&self, index: i64) -> i64 {
        units_reconstruction((self.predict)(&self.past), index, self.step)
    }

    #[inline(always)]
    fn push(&mut self, value: i64) {
        self.past.push(value);
    }
}

/// A units column of `present` samples to dequantise from `decoder`, its coded indices after
/// the warm-up from `rest` ([`dequantise`]): its values and the context they leave.
struct UnitsColumn<'d, 'a, 'e> {
    decoder: &'d mut ResidualDecoder<'a>,
    present: usize,
    warmup: usize,
    exceptions: &'e [(usize, i64)],
    step: i64,
    rest: ResidualContext,
}

impl PredictedLoop for UnitsColumn<'_, '_, '_> {
    type Output = Result<(Vec<i64>, ResidualContext), CodecError>;

    #[inline(always)]
    fn run(self, predict: impl Fn(&Past) -> i64) -> Self::Output {
        let mut column = UnitsReconstruction {
            past: Past::new(&[0; MAX_ORDER], self.present),
            predict,
            step: self.step,
        };
        let left = dequantise(
            self.decoder,
            self.present,
            self.warmup,
            self.exceptions,
            &mut column,
            self.rest,
        )?;
        Ok((column.past.into_values(), left))
    }
}

/// The prediction `p` plus `index` steps, in units, saturated where that leaves the `i64`
/// range (only a corrupt packet takes it there): the check is a branch the processor
/// predicts, where computing in 128 bits costs every sample.
#[inline(always)]
fn units_reconstruction(p: i64, index: i64, step: i64) -> i64 {
    index
        .checked_mul(step)
        .and_then(|offset| p.checked_add(offset))
        .unwrap_or_else(|| {
            let r = i128::from(p) + i128::from(index) * i128::from(step);
            r.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
        })
}

/// A units column predicted by [`neighbour_median`] from the channel before's
/// reconstruction; its indices after the warm-up coded beside their activity.
struct NeighbourReconstruction<'a> {
    values: Vec<i64>,
    neighbour: &'a [i64],
    step: i64,
    beside: Beside,
}

/// The activities of a column's coded indices ([`neighbour_activities`]), the model chosen
/// ahead for the next index decoded after the warm-up
/// ([`ChosenAhead`]) and which one it is.
struct Beside {
    activities: Activities,
    chosen: ChosenAhead,
    next: usize,
}

/// The activities of a column's coded indices.
enum Activities {
    /// Collected beforehand, where exceptions leave samples out.
    Collected(Vec<u32>),
    /// Every sample's, read from the neighbour as the decoder goes, in steps of this many
    /// units: collected first, they cost the bounded lidar decoder 2-3 %.
    OfEverySample(u64),
}

impl Beside {
    /// Beside the activities of the neighbour's samples not at `exceptions` (ascending
    /// positions), in steps of `step` units, the model of the first index after the warm-up
    /// chosen from `rest`, the context the indices after the warm-up are decoded from.
    fn new(
        neighbour: &[i64],
        exceptions: &[(usize, i64)],
        step: u64,
        rest: &mut ResidualContext,
    ) -> Beside {
        let activities = match exceptions {
            [] => Activities::OfEverySample(step),
            _ => Activities::Collected(neighbour_activities(
                neighbour,
                exceptions.iter().map(|e| e.0),
                step,
            )),
        };
        Beside {
            chosen: rest.choose_beside(activities.of_index(neighbour, NEIGHBOUR_WARMUP)),
            activities,
            next: NEIGHBOUR_WARMUP,
        }
    }
}

impl Activities {
    /// The activity of coded index `i` (0 past the last).
    #[inline(always)]
    fn of_index(&self, neighbour: &[i64], i: usize) -> u32 {
        match self {
            Activities::Collected(activities) => activities.get(i).copied().unwrap_or(0),
            // Without exceptions the coded indices are the samples.
            Activities::OfEverySample(step) => activity_at(neighbour, i, *step),
        }
    }
}

impl NeighbourReconstruction<'_> {
    /// The prediction's inputs for the next sample: `west`, `north`, `north_west`.
    #[inline(always)]
    fn around_next(&self) -> (i64, i64, i64) {
        let t = self.values.len();
        let (north, north_west) = match t {
            0 => (0, 0),
            _ => (self.values[t - 1], self.neighbour[t - 1]),
        };
        (self.neighbour[t], north, north_west)
    }

    #[inline(always)]
    fn reconstruct_from(&self, (west, north, north_west): (i64, i64, i64), index: i64) -> i64 {
        units_reconstruction(neighbour_median(west, north, north_west), index, self.step)
    }
}

impl Reconstruction for NeighbourReconstruction<'_> {
    type Value = i64;

    #[inline(always)]
    fn reconstruct(&self, index: i64) -> i64 {
        self.reconstruct_from(self.around_next(), index)
    }

    #[inline(always)]
    fn push(&mut self, value: i64) {
        self.values.push(value);
    }

    #[inline(always)]
    fn decode_next(
        &mut self,
        decoder: &mut ResidualDecoder,
        ctx: &mut ResidualContext,
        after_warmup: bool,
    ) -> Result<i64, CodecError> {
        let index = if after_warmup {
            self.beside.next += 1;
            let next = self
                .beside
                .activities
                .of_index(self.neighbour, self.beside.next);
            decoder.decode_beside(ctx, &mut self.beside.chosen, next)?
        } else {
            decoder.decode(ctx)?
        };
        Ok(self.reconstruct_from(self.around_next(), index))
    }
}

/// A column without integer units, predicted in floating point.
struct FloatReconstruction {
    values: Vec<f64>,
    /// The last two values, newest first.
    history: [f64; 2],
    order: u8,
    eb: f64,
    ty: SampleType,
}

impl Reconstruction for FloatReconstruction {
    type Value = f64;

    fn reconstruct(&self, index: i64) -> f64 {
        round_to_type(
            predict_float(self.order, self.history) + index as f64 * 2.0 * self.eb,
            self.ty,
        )
    }

    fn push(&mut self, value: f64) {
        self.history = [value, self.history[0]];
        self.values.push(value);
    }
}

/// A units column quantised at `2 eb + 1` units, predicted from the reconstruction.
#[cfg_attr(test, derive(Clone))]
struct UnitsQuantised {
    /// `Zero`, and unused, where the column is predicted from its neighbour.
    predictor: Predictor,
    /// Predicted by [`neighbour_median`] from the channel before's reconstruction.
    from_neighbour: bool,
    indices: Vec<i64>,
    /// The indices' rough size in bits ([`residual_bits`]), summed as they are made: the
    /// quantising loops wait on each prediction, and the sum fits in the wait.
    bits: u64,
    /// Positions and exact integers of samples sent as they are.
    exceptions: Vec<(usize, i64)>,
    /// What the decoder will reconstruct, in units.
    reconstruction: Vec<i64>,
}

impl UnitsQuantised {
    /// Room for `capacity` indices, for [`UnitsQuantised::take`] (the reconstruction is
    /// set at the end).
    fn new(predictor: Predictor, capacity: usize, buffers: &mut Buffers) -> Self {
        UnitsQuantised {
            predictor,
            from_neighbour: false,
            indices: buffers.empty(capacity),
            bits: 0,
            exceptions: Vec::new(),
            reconstruction: Vec::new(),
        }
    }

    /// [`UnitsQuantised::filled`] for the neighbour median.
    fn filled_from_neighbour(n: usize, buffers: &mut Buffers) -> Self {
        UnitsQuantised {
            from_neighbour: true,
            ..UnitsQuantised::filled(Predictor::Zero, n, buffers)
        }
    }

    /// Room for `n` samples' indices and reconstructions, for [`UnitsQuantised::put`].
    fn filled(predictor: Predictor, n: usize, buffers: &mut Buffers) -> Self {
        UnitsQuantised {
            predictor,
            from_neighbour: false,
            indices: buffers.zeroed(n),
            bits: 0,
            exceptions: Vec::new(),
            reconstruction: buffers.zeroed(n),
        }
    }

    /// Records the quantisation of sample `i` of a column without exceptions (made
    /// [`UnitsQuantised::filled`]); returns its reconstruction. A store where a push would
    /// also keep the length: the short loops are short of instructions, not of time waiting.
    #[inline(always)]
    fn put(&mut self, i: usize, (q, r): (i64, i64)) -> i64 {
        self.indices[i] = q;
        self.bits += residual_bits(q);
        self.reconstruction[i] = r;
        r
    }

    /// Records sample `i` (`x` units) as its quantisation index, or as an exception where it
    /// has none; returns its reconstruction (not recorded).
    #[inline(always)]
    fn take(&mut self, i: usize, x: i64, quantised: Option<(i64, i64)>) -> i64 {
        match quantised {
            Some((q, r)) => {
                self.indices.push(q);
                self.bits += residual_bits(q);
                r
            }
            None => {
                self.exceptions.push((i, x));
                x
            }
        }
    }

    /// Rough size in bits: indices, exceptions and the predictor's coefficients.
    fn cost(&self) -> u64 {
        let coefficients = match self.predictor {
            Predictor::Fitted { order, .. } => 16 * u64::from(order) + 16,
            _ => 0,
        };
        self.bits + 64 * self.exceptions.len() as u64 + coefficients
    }
}

/// Room for columns' indices and reconstructions, handed on from column to column within a
/// block: what a losing candidate, or a column once coded, leaves is a later column's. A
/// 200-value column's short ranking fills six 1.6 KB buffers, which glibc's `calloc` serves
/// from no thread cache: fresh ones held the 20 s flock lidar CSV's bounded encode at 98 MB/s
/// at four sigma, 112 at one (103 and 118 handed on).
#[derive(Default)]
struct Buffers {
    free: Vec<Vec<i64>>,
}

impl Buffers {
    /// The most kept: a column never needs more at once (its short ranking takes six).
    const KEPT: usize = 8;

    /// None, with room for `n`.
    fn empty(&mut self, n: usize) -> Vec<i64> {
        match self.free.pop() {
            Some(mut buffer) => {
                buffer.clear();
                buffer.reserve(n);
                buffer
            }
            None => Vec::with_capacity(n),
        }
    }

    /// `n` zeros. Fresh ones from `calloc`, which skips clearing memory the kernel just
    /// gave (the 20 s flock motors CSV at four sigma: 136-137 MB/s, 134-135 with
    /// [`Buffers::empty`] filled).
    fn zeroed(&mut self, n: usize) -> Vec<i64> {
        if self.free.is_empty() {
            return vec![0; n];
        }
        let mut buffer = self.empty(n);
        buffer.resize(n, 0);
        buffer
    }

    fn give(&mut self, buffer: Vec<i64>) {
        if self.free.len() < Self::KEPT && buffer.capacity() > 0 {
            self.free.push(buffer);
        }
    }

    /// Takes back a candidate's indices and reconstruction.
    fn give_quantised(&mut self, quantised: UnitsQuantised) {
        self.give(quantised.indices);
        self.give(quantised.reconstruction);
    }
}

/// The fewest values a column needs for the refit: its coefficients cost 26 bytes, which
/// shorter columns rarely earn back. A 60 s flock IMU at one sigma in 200-frame blocks: the
/// refit won 26 of 720 column blocks and saved 0.13 % of the bytes; in 100-frame blocks
/// none; the 20 s flock files' battery and lidar columns (200 values) none of 362. Skipping it
/// there took their bounded CSV encode from 74 to 96 MB/s (battery) and 70 to 88 (lidar).
const REFIT_MIN_VALUES: usize = 256;

/// The least [`Fit::promised_bits`] of a refit worth quantising: its coefficients cost 208
/// bits (an order-3 fit's 64), and the promise overstates what a bounded codec at one noise
/// sigma saves (most residuals there fall in the zero step). On the bench's streams, the
/// real IMUs' CSVs and four 20 s flock IMUs, at one sigma in 1000-frame packets, 250 skips
/// 40-71 % of the refits (66 % of px4's); a few of those skipped would have won, by up to
/// 188 bits, all on the bench. Its bounded ratios moved -0.09 % to +0.16 % (the rough cost
/// that picks a refit is not the coded size), the CSVs' sizes not at all, and their bounded
/// encode sped up 5-20 % (px4 94-95 -> 101-103 MB/s, flock motors 96-97 -> 115-116).
const REFIT_PROMISE: f64 = 250.0;

/// Order of the predictor fitted to a first reconstruction: long enough to average the
/// noise the bound lets through out of the prediction (at one noise sigma, 10 % fewer
/// bits on a simulated IMU than order 3).
const RECONSTRUCTION_ORDER: usize = 12;
/// Integer-unit quantisation in one pass: each reconstruction is converted back to a value
/// and checked against the bound there (the conversion rounds); a miss is sent exactly and
/// the prediction chain continues from the exact value, as the decoder's will.
fn quantise_units(
    column: &[f64],
    ints: &[i64],
    predictor: Predictor,
    eb_units: i64,
    bound: Option<Bound<'_>>,
    buffers: &mut Buffers,
) -> UnitsQuantised {
    let [quantised] = quantise_units_together(column, ints, [predictor], eb_units, bound, buffers);
    quantised
}

/// [`quantise_units`] with several predictors in one loop: each sample's quantisation waits
/// on the previous reconstruction (a division and a prediction), so one chain leaves the
/// core idle where `K` independent ones keep it busy.
fn quantise_units_together<const K: usize>(
    column: &[f64],
    ints: &[i64],
    predictors: [Predictor; K],
    eb_units: i64,
    bound: Option<Bound<'_>>,
    buffers: &mut Buffers,
) -> [UnitsQuantised; K] {
    let quantiser = Quantiser::new(eb_units);
    let mut pasts: [Past; K] = std::array::from_fn(|_| Past::new(&[0; MAX_ORDER], ints.len()));
    let mut out = predictors.map(|predictor| UnitsQuantised::new(predictor, ints.len(), buffers));
    for (i, (&x, &value)) in ints.iter().zip(column).enumerate() {
        for (past, out) in pasts.iter_mut().zip(&mut out) {
            let quantised = quantiser
                .quantise(x, past.predict(out.predictor))
                .filter(|&(_, r)| bound.is_none_or(|bound| bound.holds(r, value)));
            past.push(out.take(i, x, quantised));
        }
    }
    for (past, out) in pasts.into_iter().zip(&mut out) {
        out.reconstruction = past.into_values();
    }
    out
}

/// A column quantised with [`neighbour_median`] predictions from its own reconstruction and
/// `neighbour`'s (the channel before's, in the same unit).
fn quantise_units_neighbour(
    column: &[f64],
    ints: &[i64],
    neighbour: &[i64],
    eb_units: i64,
    bound: Option<Bound<'_>>,
    buffers: &mut Buffers,
) -> UnitsQuantised {
    let quantiser = Quantiser::new(eb_units);
    let mut out = UnitsQuantised {
        from_neighbour: true,
        ..UnitsQuantised::new(Predictor::Zero, ints.len(), buffers)
    };
    let mut reconstruction = buffers.empty(ints.len());
    let (mut north, mut north_west) = (0, 0);
    for (i, ((&x, &value), &west)) in ints.iter().zip(column).zip(neighbour).enumerate() {
        let quantised = quantiser
            .quantise(x, neighbour_median(west, north, north_west))
            .filter(|&(_, r)| bound.is_none_or(|bound| bound.holds(r, value)));
        let r = out.take(i, x, quantised);
        reconstruction.push(r);
        (north, north_west) = (r, west);
    }
    out.reconstruction = reconstruction;
    out
}

/// The rough cost of the neighbour median's indices and of the previous value's over the
/// column's first values, judged on the originals (no quantiser's chain): the column is
/// quantised with the median only where it looks cheaper (an IMU's axes share a unit and
/// would each pay a quantising chain for nothing), and with nothing else where it looks
/// far cheaper (see [`CLEAR_WIN`]).
fn neighbour_trial(ints: &[i64], neighbour: &[i64], e: i64) -> NeighbourTrial {
    let n = ints.len().min(NEIGHBOUR_TRIAL);
    let per_step = 1.0 / (2 * e + 1) as f64;
    // Truncated: `round` is a call where the baseline x86-64 has no instruction for it.
    let steps = |r: i64| residual_bits((r as f64 * per_step) as i64);
    let (mut north, mut north_west) = (0, 0);
    let (mut median_bits, mut previous_bits) = (0, 0);
    for (&x, &west) in ints[..n].iter().zip(neighbour) {
        median_bits += steps(x.wrapping_sub(neighbour_median(west, north, north_west)));
        previous_bits += steps(x.wrapping_sub(north));
        (north, north_west) = (x, west);
    }
    NeighbourTrial {
        median_bits,
        previous_bits,
    }
}

#[derive(Clone, Copy)]
struct NeighbourTrial {
    median_bits: u64,
    previous_bits: u64,
}

/// Where the neighbour median's trial cost is below this share of the previous value's, the
/// column is quantised with the median alone: the own candidates and the refit cost the
/// lidar's encoder most of its time, and lost to the median on all but 8 of 2,880 of the
/// bench's column blocks.
const CLEAR_WIN: (u64, u64) = (3, 4);

/// Predictor tag of a units column predicted by [`neighbour_median`] from the channel
/// before's reconstruction (which must be a units column), and its warm-up.
const NEIGHBOUR_TAG: u8 = 4;
const NEIGHBOUR_WARMUP: usize = 1;

/// Samples [`neighbour_trial`] judges on.
const NEIGHBOUR_TRIAL: usize = 128;

/// The first ranking's candidates: none, previous, linear and an order-3 fit (Linear again
/// without one), quantised without the bound check.
fn first_ranking(
    column: &[f64],
    ints: &[i64],
    e: i64,
    fit3: Option<Predictor>,
    buffers: &mut Buffers,
) -> [UnitsQuantised; 4] {
    let candidates = [
        Predictor::Zero,
        Predictor::Previous,
        Predictor::Linear,
        fit3.unwrap_or(Predictor::Linear),
    ];
    quantise_units_together(column, ints, candidates, e, None, buffers)
}

/// Below this in magnitude, values, bounds and an order-3 fit's intercept keep the first
/// ranking's predictions and reconstructions far inside the 64-bit fast paths: a
/// reconstruction is within `e` of its value (under 2^41), a linear extrapolation under 2^43,
/// an order-3 fit's sum under 2^58 (what [`is_small`](crate::column) asks of a window).
const SHORT_RANKING_LIMIT: i64 = 1 << 40;

/// Below this, values and bounds keep reconstructions below [`EXACT_IN_FLOAT`]: fitted
/// predictions can be made in floating point (with intercepts below it too).
const FLOAT_PREDICTION_LIMIT: i64 = EXACT_IN_FLOAT / 2;

/// Whether the values, the bound and the fitted predictor's intercept are below `limit`.
fn within(limit: i64, ints: &[i64], e: i64, fitted: Option<Predictor>) -> bool {
    let limit = -limit + 1..limit;
    limit.contains(&e)
        && ints.iter().all(|x| limit.contains(x))
        && fitted.is_none_or(|p| limit.contains(&p.intercept()))
}

/// [`first_ranking`] where everything is below [`SHORT_RANKING_LIMIT`], the same candidates
/// made faster. Zero, previous and linear prediction share their reconstructions: a
/// prediction from reconstructions on the lattice of steps (multiples of `2e + 1`, where the
/// history's zeros are) by integer weights summing to one, or none, lies on the lattice, and
/// the reconstruction within `e` of a value is then its lattice point, whatever the
/// prediction. So each value is quantised once, on its own, and the previous and linear
/// indices are differences of its lattice indices; only the fitted chain waits on its last
/// reconstruction, kept in registers (the generic windows in memory put a store and a load
/// on every step). With `float_fit` (everything below [`FLOAT_PREDICTION_LIMIT`]) the fit's
/// older values are taken in floating point.
///
/// With `median_of`, the neighbour median's chain runs beside the fitted one (the two
/// overlap, where a pass of its own waited on each reconstruction): it comes back where no
/// prediction left the fast path.
fn first_ranking_short(
    ints: &[i64],
    e: i64,
    fit3: Option<Predictor>,
    float_fit: bool,
    median_of: Option<&[i64]>,
    buffers: &mut Buffers,
) -> Option<(LatticeRanking, Option<UnitsQuantised>)> {
    let quantiser = Quantiser::new(e);
    let n = ints.len();
    let fitted_predictor = fit3.unwrap_or(Predictor::Linear);
    let mut zero = UnitsQuantised::filled(Predictor::Zero, n, buffers);
    let mut fitted = UnitsQuantised::filled(fitted_predictor, n, buffers);
    let mut median = median_of.map(|_| UnitsQuantised::filled_from_neighbour(n, buffers));
    let (mut north, mut north_west) = (0, 0);
    let fit = FloatFitted::<3>::new(fitted_predictor);
    // The lattice indices of the last two values, newest first; the fitted chain's last
    // three reconstructions, newest first, and as floats, oldest first (the history is zeros).
    let mut lattice = [0i64; 2];
    let (mut previous_bits, mut linear_bits) = (0, 0);
    let mut f = [0i64; 3];
    let mut f_float = [0.0; 3];
    for (i, &x) in ints.iter().enumerate() {
        let (k, r) = quantiser.quantise_near(x, 0)?;
        zero.put(i, (k, r));
        previous_bits += residual_bits(k - lattice[0]);
        linear_bits += residual_bits(k - 2 * lattice[0] + lattice[1]);
        lattice = [k, lattice[0]];
        let prediction = match fit3 {
            Some(_) if float_fit => fit.predict(&f_float, [f[0], f[1]]),
            Some(fit3) => fit3.predict_short(f),
            None => 2 * f[0] - f[1],
        };
        let r = fitted.put(i, quantiser.quantise_near(x, prediction)?);
        f = [r, f[0], f[1]];
        f_float = [f_float[1], f_float[2], r as f64];
        if let (Some(neighbour), Some(out)) = (median_of, median.as_mut()) {
            let west = neighbour[i];
            match quantiser.quantise(x, neighbour_median(west, north, north_west)) {
                Some(quantised) => (north, north_west) = (out.put(i, quantised), west),
                None => median = None,
            }
        }
    }
    let ranking = LatticeRanking {
        zero,
        fitted,
        previous_bits,
        linear_bits,
    };
    Some((ranking, median))
}

/// [`first_ranking_short`]'s candidates: none and the fit quantised, previous and linear
/// prediction costed on the lattice, their indices made only for the one that is taken
/// (a pass and a copy of the reconstruction each).
struct LatticeRanking {
    zero: UnitsQuantised,
    fitted: UnitsQuantised,
    previous_bits: u64,
    linear_bits: u64,
}

impl LatticeRanking {
    /// None, previous, linear and the fit: [`first_ranking`]'s order.
    fn costs(&self) -> [u64; 4] {
        [
            self.zero.cost(),
            self.previous_bits,
            self.linear_bits,
            self.fitted.cost(),
        ]
    }

    /// The cheapest candidate, the first of equals (as `min_by_key` takes it); the others'
    /// room goes back to `buffers`.
    fn cheapest(mut self, buffers: &mut Buffers) -> UnitsQuantised {
        let costs = self.costs();
        match (0..4).min_by_key(|&i| costs[i]) {
            Some(i @ (1 | 2)) => {
                let reconstruction = std::mem::take(&mut self.zero.reconstruction);
                let indices = std::mem::take(&mut self.fitted.indices);
                let taken = self.on_lattice(i, reconstruction, indices);
                buffers.give_quantised(self.zero);
                buffers.give_quantised(self.fitted);
                taken
            }
            Some(3) => {
                buffers.give_quantised(self.zero);
                self.fitted
            }
            _ => {
                buffers.give_quantised(self.fitted);
                self.zero
            }
        }
    }

    /// Candidate `i` in [`LatticeRanking::costs`]'s order.
    #[cfg(test)]
    fn candidate(&self, i: usize) -> UnitsQuantised {
        match i {
            0 => self.zero.clone(),
            3 => self.fitted.clone(),
            i => self.on_lattice(i, self.zero.reconstruction.clone(), Vec::new()),
        }
    }

    /// Previous (`i = 1`) or linear prediction on the lattice, with `reconstruction` (the
    /// lattice points, none's); the indices are made in `indices`' room.
    fn on_lattice(
        &self,
        i: usize,
        reconstruction: Vec<i64>,
        mut indices: Vec<i64>,
    ) -> UnitsQuantised {
        let (predictor, bits, weights) = match i {
            1 => (Predictor::Previous, self.previous_bits, [1, 0]),
            _ => (Predictor::Linear, self.linear_bits, [2, -1]),
        };
        let mut before = [0i64; 2];
        indices.clear();
        indices.extend(self.zero.indices.iter().map(|&k| {
            let q = k - weights[0] * before[0] - weights[1] * before[1];
            before = [k, before[0]];
            q
        }));
        UnitsQuantised {
            predictor,
            from_neighbour: false,
            indices,
            bits,
            exceptions: Vec::new(),
            reconstruction,
        }
    }
}

/// [`quantise_units`] without the bound check, for a fitted predictor, where the values,
/// the bound and the intercept are below [`FLOAT_PREDICTION_LIMIT`]: reconstructions stay below
/// [`EXACT_IN_FLOAT`], so the older values' part of each prediction is made in floating
/// point, exactly, off the wait from one reconstruction to the next (see [`FloatFitted`]):
/// the generic loop took 8.0 ns a value on the bench's IMU, this one 4.7. `None` where a
/// sample would be an exception (none can be here).
fn quantise_units_fitted_short<const N: usize>(
    ints: &[i64],
    predictor: Predictor,
    e: i64,
    buffers: &mut Buffers,
) -> Option<UnitsQuantised> {
    let quantiser = Quantiser::new(e);
    let fit = FloatFitted::<N>::new(predictor);
    let mut out = UnitsQuantised::filled(predictor, ints.len(), buffers);
    // The reconstruction after a history of zeros, as floats, which the prediction reads.
    let mut past = vec![0.0; N + ints.len()];
    let mut newest = [0; 2];
    for (i, &x) in ints.iter().enumerate() {
        let window: &[f64; N] = past[i..i + N].try_into().expect("N values");
        // Never `None` here (every value is small); the generic loop takes it otherwise.
        let r = out.put(i, quantiser.quantise_near(x, fit.predict(window, newest))?);
        past[i + N] = r as f64;
        newest = [r, newest[0]];
    }
    Some(out)
}

/// Quantisation at steps of `2e + 1` units.
#[derive(Clone, Copy)]
struct Quantiser {
    e: i64,
    step: i64,
    divisor: Divisor,
    /// Whole steps added to a residual so that its index's numerator is rarely negative:
    /// `shift` steps, and `e + shift * step` in all.
    shift: i64,
    offset: i64,
}

impl Quantiser {
    fn new(e: i64) -> Self {
        let step = 2 * e + 1;
        // Half the 32-bit range below the prediction, half above.
        let shift = (1 << 31) / step;
        Self {
            e,
            step,
            divisor: Divisor::new(step as u64),
            shift,
            offset: e + shift * step,
        }
    }

    /// The index of a residual shifted by whole steps to the non-negative 32-bit `narrow`
    /// (`x - p + offset`): one multiplication.
    #[inline(always)]
    fn index_of_shifted(&self, narrow: u32) -> i64 {
        i64::from(self.divisor.quotient(narrow)) - self.shift
    }

    /// [`Quantiser::quantise`] where `x` and `p` are below 2^61 in magnitude (the short
    /// ranking's values and predictions are far below): nothing can overflow on the way to
    /// the 32-bit numerator, so one comparison stands for the overflow checks of the general
    /// case, and the reconstruction needs none.
    #[inline(always)]
    fn quantise_near(&self, x: i64, p: i64) -> Option<(i64, i64)> {
        debug_assert!(x.unsigned_abs() < 1 << 61 && p.unsigned_abs() < 1 << 61);
        let shifted = x.wrapping_sub(p).wrapping_add(self.offset);
        match u32::try_from(shifted) {
            Ok(narrow) => {
                let q = self.index_of_shifted(narrow);
                // |q step| <= |x - p| + e + step < 2^63 - 2^61.
                Some((q, p.wrapping_add(q * self.step)))
            }
            Err(_) => self.quantise(x, p),
        }
    }

    /// The index `q` of the step whose reconstruction `p + q (2e + 1)` lies within `e` units
    /// of `x` (there is one: the steps' reaches tile the integers), and the reconstruction;
    /// `None` where either leaves the `i64` range.
    #[inline(always)]
    fn quantise(&self, x: i64, p: i64) -> Option<(i64, i64)> {
        // q = floor((x - p + e) / step). Shifted by whole steps, most residuals give a
        // non-negative 32-bit numerator: one multiplication finds q, and the way from one
        // prediction to the next has no detour through the residual's sign.
        let shifted = x.checked_sub(p).and_then(|d| d.checked_add(self.offset));
        if let Some(Ok(narrow)) = shifted.map(u32::try_from) {
            let q = self.index_of_shifted(narrow);
            // |q step| <= |x - p| + e + step < 2^54.
            return Some((q, p.checked_add(q * self.step)?));
        }
        // Wider residuals (fine units: a detected quantum far below the bound) take a 64-bit
        // division, still far cheaper than a 128-bit one: the same index as
        // trunc((x - p ± e) / step), the sign that of x - p.
        if let Some(d) = x.checked_sub(p) {
            let magnitude = d.unsigned_abs().wrapping_add(self.e as u64);
            if magnitude < 1 << 63 {
                let q = (magnitude / self.step as u64) as i64;
                let q = if d < 0 { -q } else { q };
                // |q step| <= |d| + e < 2^63.
                return Some((q, p.checked_add(q * self.step)?));
            }
        }
        let d = i128::from(x) - i128::from(p);
        let (e, step) = (i128::from(self.e), i128::from(self.step));
        let q = (d + if d >= 0 { e } else { -e }) / step;
        let r = i128::from(p) + q * step;
        Some((i64::try_from(q).ok()?, i64::try_from(r).ok()?))
    }
}

/// What a units column's reconstruction must satisfy.
#[derive(Clone, Copy)]
struct Bound<'a> {
    repr: &'a Representation,
    lsb: f64,
    ty: SampleType,
    eb: f64,
}

impl Bound<'_> {
    /// Whether `units` decode to a value within the bound of `value`.
    fn holds(&self, units: i64, value: f64) -> bool {
        self.repr
            .value_of(units, self.lsb, self.ty)
            .is_ok_and(|v| v.is_finite() && (value - v).abs() <= self.eb)
    }

    /// [`Bound::holds`] for each of `units` and its value, converted a column at a time.
    fn holds_everywhere(&self, units: &[i64], values: &[f64]) -> bool {
        let mut decoded = vec![0.0; units.len()];
        self.repr
            .fill_column(units, self.lsb, self.ty, &mut decoded, 0, 1)
            .is_ok()
            && decoded
                .iter()
                .zip(values)
                .all(|(&v, &value)| v.is_finite() & ((value - v).abs() <= self.eb))
    }
}

/// A column quantised with the neighbour median and nothing else. Out of line: inlined, it
/// cost the other columns' ranking loops 2-3 % (their registers).
#[inline(never)]
fn quantise_with_median_alone(
    column: &[f64],
    ints: &[i64],
    e: i64,
    bound: Bound<'_>,
    neighbour: &[i64],
    buffers: &mut Buffers,
) -> UnitsQuantised {
    let median = quantise_units_neighbour(column, ints, neighbour, e, None, buffers);
    checked(column, ints, e, bound, median, Some(neighbour), buffers)
}

/// Quantises a units column with the predictor that codes it cheapest: none, previous,
/// linear and an order-3 fit, ranked without checking the bound in value space (the rare
/// rounding misses it finds barely move a ranking), then an order-12 fit to the winner's
/// reconstruction, which is what the decoder will predict from, quantised where its least
/// squares promise enough ([`REFIT_PROMISE`]) and kept when it is cheaper (on 31 % of a
/// flock IMU's column blocks, 11 % of the benchmark's simulated streams', 6-14 % of the real
/// IMUs'; previous value and linear extrapolation win most of the first rankings on
/// simulated streams, so all four candidates stay).
fn choose_units_quantisation(
    column: &[f64],
    ints: &[i64],
    e: i64,
    bound: Bound<'_>,
    neighbour: Option<&[i64]>,
    buffers: &mut Buffers,
) -> UnitsQuantised {
    let trial = neighbour.map(|nb| (nb, neighbour_trial(ints, nb, e)));
    if let Some((nb, trial)) = trial
        && trial.median_bits * CLEAR_WIN.1 < trial.previous_bits * CLEAR_WIN.0
    {
        return quantise_with_median_alone(column, ints, e, bound, nb, buffers);
    }
    let neighbour = trial
        .filter(|(_, trial)| trial.median_bits < trial.previous_bits)
        .map(|(nb, _)| nb);
    // A predictor fitted to the originals serves the reconstruction as well: the two differ
    // by at most the bound. (Without a fit, Linear stands in twice: the first of equals is
    // taken.)
    let fit3 = Predictor::fit(ints, &[0; MAX_ORDER], 3);
    let short = within(SHORT_RANKING_LIMIT, ints, e, fit3);
    let float_fit = short && within(FLOAT_PREDICTION_LIMIT, ints, e, fit3);
    let (first, median) = match short
        .then(|| first_ranking_short(ints, e, fit3, float_fit, neighbour, buffers))
        .flatten()
    {
        Some((ranking, median)) => (ranking.cheapest(buffers), median),
        None => {
            let candidates = first_ranking(column, ints, e, fit3, buffers);
            let first = cheapest_of(candidates, buffers);
            (first, None)
        }
    };
    // Predicted from the channel before where that is cheaper; where it is cheaper by a
    // tenth, the column skips the refit: a longer predictor from its own past averages
    // noise, but a lidar beam's next range is in its neighbour's present.
    let median = median.or_else(|| {
        neighbour
            .map(|neighbour| quantise_units_neighbour(column, ints, neighbour, e, None, buffers))
    });
    let best = match median {
        Some(median) if median.cost() * 10 < first.cost() * 9 => {
            buffers.give_quantised(first);
            return checked(column, ints, e, bound, median, neighbour, buffers);
        }
        Some(median) => cheapest_of([first, median], buffers),
        None => first,
    };
    // Fitted on the whole block: fitting only the first 512 values of a 1000-frame block
    // cost 2 % more bits at one sigma on simulated IMUs; fitting only the first 1024 of a
    // 60 s flock IMU recording in one packet (a robot standing, then driving) cost 20 %.
    // The refit is fitted to the first ranking's reconstruction, or the median's.
    // A refit whose least squares promise little is not quantised (see [`REFIT_PROMISE`]);
    // the median's is priced by quantising it (its prediction is no sum over lags).
    let incumbent = (!best.from_neighbour).then_some(best.predictor);
    let refit = (ints.len() >= REFIT_MIN_VALUES)
        .then(|| {
            Predictor::fit_against(
                ints,
                &best.reconstruction,
                &[0; MAX_ORDER],
                RECONSTRUCTION_ORDER,
                incumbent,
            )
        })
        .flatten()
        .filter(|fit| fit.promised_bits.is_none_or(|bits| bits >= REFIT_PROMISE))
        .map(|Fit { predictor: p, .. }| {
            if float_fit
                && within(FLOAT_PREDICTION_LIMIT, &[], e, Some(p))
                && p.warmup() == RECONSTRUCTION_ORDER
            {
                quantise_units_fitted_short::<RECONSTRUCTION_ORDER>(ints, p, e, buffers)
                    .unwrap_or_else(|| quantise_units(column, ints, p, e, None, buffers))
            } else {
                quantise_units(column, ints, p, e, None, buffers)
            }
        });
    // The incumbent stays where the refit costs more.
    let taken = match refit {
        Some(refit) => cheapest_of([refit, best], buffers),
        None => best,
    };
    checked(column, ints, e, bound, taken, neighbour, buffers)
}

/// The cheapest of `candidates`, the first of equals; the others' room goes back to
/// `buffers`.
fn cheapest_of<const K: usize>(
    candidates: [UnitsQuantised; K],
    buffers: &mut Buffers,
) -> UnitsQuantised {
    let costs = candidates.each_ref().map(UnitsQuantised::cost);
    let cheapest = (0..K).min_by_key(|&i| costs[i]).expect("a candidate");
    let mut taken = None;
    for (i, candidate) in candidates.into_iter().enumerate() {
        if i == cheapest {
            taken = Some(candidate);
        } else {
            buffers.give_quantised(candidate);
        }
    }
    taken.expect("the cheapest is among the candidates")
}

/// `quantised`, made without the bound check, where every reconstruction meets the bound
/// anyway (misses are rare: none on the simulated streams), otherwise quantised again with
/// the check. Where nothing misses, the check at each sample would have made the same
/// choices: checking the result after the pass takes the check off the prediction chain.
/// `neighbour` is what a column quantised with the neighbour median was predicted from.
fn checked(
    column: &[f64],
    ints: &[i64],
    e: i64,
    bound: Bound<'_>,
    quantised: UnitsQuantised,
    neighbour: Option<&[i64]>,
    buffers: &mut Buffers,
) -> UnitsQuantised {
    if bound.holds_everywhere(&quantised.reconstruction, column) {
        return quantised;
    }
    let requantised = match neighbour {
        Some(neighbour) if quantised.from_neighbour => {
            quantise_units_neighbour(column, ints, neighbour, e, Some(bound), buffers)
        }
        _ => quantise_units(column, ints, quantised.predictor, e, Some(bound), buffers),
    };
    buffers.give_quantised(quantised);
    requantised
}

/// `repr`'s quantum rounded to an `f32`, when it is a quantum and that is a positive normal
/// number.
fn narrowed_quantum(repr: Representation) -> Option<Representation> {
    match repr {
        Representation::Quantum(q) => {
            let narrow = q as f32;
            (narrow.is_normal() && narrow > 0.0).then(|| Representation::Quantum(f64::from(narrow)))
        }
        _ => None,
    }
}

fn cost(indices: &[i64]) -> u64 {
    indices.iter().map(|&q| residual_bits(q)).sum()
}

/// The integers a column is quantised in, and the bound in those units.
struct QuantisationGrid {
    repr: Representation,
    ints: Vec<i64>,
    /// Whether the integers are the values exactly (the column's own representation), or
    /// the nearest counts of a coarser quantum.
    exact: bool,
    /// `None` for a representation without integer units (floats quantised as floats).
    bound_in_units: Option<i64>,
}

/// A coarse grid's quantum: the power of two above 2^-(COARSE_GRID_BITS + 1) and up to
/// 2^-COARSE_GRID_BITS times the bound. Quantising on it rather than on a finer grid of the
/// column's own makes the step at most a 2^-COARSE_GRID_BITS part smaller (about
/// 0.0014 bits a sample at 10 bits), and keeps the counts small enough for the quantisers'
/// fast paths: decimal text with 8 to 12 digits (the real IMUs' CSVs) made them 2^33 to 2^38
/// units.
const COARSE_GRID_BITS: i32 = 10;

impl QuantisationGrid {
    /// The grid for a column with bound `eb`: the column's own representation where its
    /// unit is wider than a coarse grid's quantum (the step then gains up to a unit), the
    /// coarse grid where a float column has a finer one or none.
    /// `hint` is the quantum of the column before, if it had one.
    fn of(
        column: &[f64],
        eb: f64,
        ty: SampleType,
        lsb: Option<f64>,
        hint: Option<f64>,
    ) -> QuantisationGrid {
        let own = |(repr, ints): (Representation, Vec<i64>)| QuantisationGrid {
            repr,
            ints,
            exact: true,
            bound_in_units: repr.unit(lsb).map(|u| bound_in_units(eb, u)),
        };
        let coarse = (!ty.is_integer() && lsb.is_none())
            .then(|| coarse_quantum(eb))
            .flatten();
        if let Some(q) = coarse {
            if let Some(wider) = Representation::in_units_above(column, ty, lsb, q, hint) {
                return own(wider);
            }
            if let Some(grid) = QuantisationGrid::coarse(column, eb, q, ty) {
                return grid;
            }
        }
        own(Representation::choose(column, ty, lsb, hint))
    }

    /// Counts of `q` nearest each value, if each is finite and the counts are exact
    /// doubles. The count's rounding takes up to half a quantum of the bound, and rounding a
    /// reconstruction to the sample type up to [`type_rounding`].
    fn coarse(column: &[f64], eb: f64, q: f64, ty: SampleType) -> Option<QuantisationGrid> {
        // A power of two: the products are exact.
        let reciprocal = 1.0 / q;
        let ints = nearest_integers_of_small(column, reciprocal).or_else(|| {
            column
                .iter()
                .map(|&x| nearest_integer(x * reciprocal).filter(|c| c.unsigned_abs() < 1 << 52))
                .collect::<Option<Vec<i64>>>()
        })?;
        Some(QuantisationGrid {
            repr: Representation::Quantum(q),
            ints,
            exact: false,
            bound_in_units: Some(bound_in_units(
                eb - q / 2.0 - type_rounding(column, eb, ty),
                q,
            )),
        })
    }
}

/// The most that rounding a reconstruction to the sample type moves it: for `f32`, half its
/// step at the largest magnitude a reconstruction of `column` within `eb` reaches; nothing
/// for `f64` (a coarse grid's multiples are exact). Left in the bound, it let a
/// reconstruction near the bound miss it once rounded, to be sent exactly, and the column
/// quantised a second time with the check: on the flock's pose (f32 positions; a quarter of
/// their noise sigma is 19-28 f32 steps) up to 6 samples of a 1000-sample column, in
/// one or two of its three columns. Taken out, the bound in units shrinks by 0.4-2.6 % there.
fn type_rounding(column: &[f64], eb: f64, ty: SampleType) -> f64 {
    if ty != SampleType::F32 {
        return 0.0;
    }
    // A coarse grid's column is finite; were it not, no room would do (the column goes
    // lossless).
    let Some((min, max)) = finite_extremes(column) else {
        return f64::INFINITY;
    };
    let reach = min.abs().max(max.abs()) + eb;
    // Subnormals share the smallest normal's step.
    2f64.powi(binary_exponent(reach).max(-126) - 24)
}

/// The exponent of a non-negative `x`'s leading bit, where it is normal.
fn binary_exponent(x: f64) -> i32 {
    ((x.to_bits() >> 52) & 0x7ff) as i32 - 1023
}

/// The power of two above 2^-(COARSE_GRID_BITS + 1) and up to 2^-COARSE_GRID_BITS times `eb`,
/// where that is a normal `f32` (the packet carries it as one).
fn coarse_quantum(eb: f64) -> Option<f64> {
    if !(eb.is_normal() && eb > 0.0) {
        return None;
    }
    let q = 2f64.powi(binary_exponent(eb) - COARSE_GRID_BITS);
    (q as f32).is_normal().then_some(q)
}

impl Codec for BoundedCodec {
    fn id(&self) -> CodecId {
        CodecId::Bounded
    }

    fn encode(&self, schema: &StreamSchema, frames: &[Frame]) -> Result<Packet, CodecError> {
        self.encode_observed(schema, frames, |_, _, _| {})
    }

    fn decode(&self, schema: &StreamSchema, packet: &Packet) -> Result<Vec<Frame>, CodecError> {
        Ok(decode_bounded(schema, packet, Layout::Rows)?.into_frames(schema.channels.len()))
    }
}

impl BoundedCodec {
    /// [`Codec::encode`], showing `observe` each quantised column's indices, warm-up count
    /// and whether it is predicted from the column before (whose context it then starts
    /// from), as they go to the entropy coder (for [`crate::bounded_entropy_report`]).
    pub(crate) fn encode_observed(
        &self,
        schema: &StreamSchema,
        frames: &[Frame],
        mut observe: impl FnMut(&[i64], Option<&[u32]>, usize),
    ) -> Result<Packet, CodecError> {
        let frame_count = check_block(schema, frames)?;
        let first = frames[0].timestamp_ns;
        let bounds = self.bound.per_channel(schema, frames);
        let ty = schema.sample_type;
        let mut head = Vec::with_capacity(16 * bounds.len());
        let mut encoder = ResidualEncoder::for_residuals(frames.len() * (bounds.len() + 1));
        let times: Vec<i64> = frames.iter().map(|f| f.timestamp_ns).collect();
        encode_timestamps(&mut head, &mut encoder, &times, schema);

        let columns = Columns::of(frames, bounds.len());
        let mut quantum = None;
        // The channel before's unit and reconstruction, where it was a units column.
        let mut previous: Option<(f64, Vec<i64>)> = None;
        // The context the channel before left (see `starting_context`).
        let mut carried = ResidualContext::default();
        let mut buffers = Buffers::default();
        for (c, &eb) in bounds.iter().enumerate() {
            let column = columns.column(c);
            let QuantisationGrid {
                repr,
                ints,
                exact: on_own_grid,
                bound_in_units: unit_bound,
            } = QuantisationGrid::of(column, eb, ty, schema.lsb(c), quantum);
            if let (Representation::Quantum(q), true) = (repr, on_own_grid) {
                quantum = Some(q);
            }
            let lsb = schema.lsb(c).unwrap_or(1.0);
            let mut before = previous.take();
            match unit_bound {
                _ if eb <= 0.0 => {
                    head.push(MODE_LOSSLESS);
                    encode_column(&mut head, &mut encoder, &ints, repr, None, &mut carried);
                }
                Some(e) if e < 1 => {
                    head.push(MODE_LOSSLESS);
                    encode_column(&mut head, &mut encoder, &ints, repr, None, &mut carried);
                }
                Some(e) => {
                    // Holes are 0 units, which the representation gives back as 0: exactly
                    // the value on the column's own grid, within the bound on a coarse grid
                    // (it rounds to within half a unit of the bound), checked all the same.
                    let holes = Holes::worth_taking_out(&ints, 2 * e + 1).filter(|holes| {
                        on_own_grid || {
                            let bound = Bound {
                                repr: &repr,
                                lsb,
                                ty,
                                eb,
                            };
                            holes.holes_of(column).all(|&value| bound.holds(0, value))
                        }
                    });
                    // The column, its integers and the channel before, at the samples
                    // that are not holes.
                    let mut ints = ints;
                    let mut compacted = None;
                    if let Some(holes) = &holes {
                        holes.compact_in_place(&mut ints);
                        compacted = Some(holes.compact(column));
                        before = before.map(|(unit, reconstruction)| {
                            (unit, holes.neighbour_at_present(reconstruction))
                        });
                    }
                    let column = compacted.as_deref().unwrap_or(column);
                    let ints = ints.as_slice();
                    let neighbour_in = |unit: Option<f64>| {
                        before
                            .as_ref()
                            .filter(|(u, _)| same_unit(unit, *u))
                            .map(|(_, reconstruction)| reconstruction.as_slice())
                    };
                    // A units column needs its quantum only as finely as its bound: as an
                    // f32 it takes 4 bytes instead of 8, where every sample, exceptions
                    // included, still meets the bound with it.
                    let narrowed =
                        narrowed_quantum(repr)
                            .filter(|_| on_own_grid)
                            .and_then(|narrow| {
                                let e = narrow
                                    .unit(None)
                                    .map(|u| bound_in_units(eb, u))
                                    .filter(|&e| e >= 1)?;
                                let bound = Bound {
                                    repr: &narrow,
                                    lsb,
                                    ty,
                                    eb,
                                };
                                let quantised = choose_units_quantisation(
                                    column,
                                    ints,
                                    e,
                                    bound,
                                    neighbour_in(narrow.unit(None)),
                                    &mut buffers,
                                );
                                if quantised
                                    .exceptions
                                    .iter()
                                    .all(|&(i, x)| bound.holds(x, column[i]))
                                {
                                    return Some((narrow, e, quantised));
                                }
                                buffers.give_quantised(quantised);
                                None
                            });
                    // A coarse grid's quantum is a power of two: exactly an f32.
                    let quantum_as_f32 = narrowed.is_some() || !on_own_grid;
                    let (repr, e, quantised) = narrowed.unwrap_or_else(|| {
                        let bound = Bound {
                            repr: &repr,
                            lsb,
                            ty,
                            eb,
                        };
                        let neighbour = neighbour_in(repr.unit(schema.lsb(c)));
                        (
                            repr,
                            e,
                            choose_units_quantisation(
                                column,
                                ints,
                                e,
                                bound,
                                neighbour,
                                &mut buffers,
                            ),
                        )
                    });
                    let predictor = quantised.predictor;
                    let (predictor_tag, warmup) = if quantised.from_neighbour {
                        (NEIGHBOUR_TAG, NEIGHBOUR_WARMUP)
                    } else {
                        (predictor.tag(), predictor.warmup())
                    };
                    head.push(MODE_UNITS);
                    let (repr_tag, unit) = match repr {
                        Representation::Quantum(q) if quantum_as_f32 => {
                            (QUANTUM_F32_TAG, Some(f64::from(q as f32)))
                        }
                        _ => (repr.tag(), repr.unit(schema.lsb(c))),
                    };
                    head.push(
                        descriptor(predictor_tag, repr_tag, false) | holes_bit(holes.as_ref()),
                    );
                    match repr {
                        Representation::Quantum(q) if quantum_as_f32 => {
                            head.extend_from_slice(&(q as f32).to_le_bytes());
                        }
                        _ => write_representation_parameters(&mut head, repr),
                    }
                    if !quantised.from_neighbour {
                        predictor.write_parameters(&mut head);
                    }
                    put_uvarint(&mut head, e as u64);
                    write_exception_positions(&mut head, quantised.exceptions.iter().map(|e| e.0));
                    for (_, v) in &quantised.exceptions {
                        put_uvarint(&mut head, zigzag(*v));
                    }
                    if let Some(holes) = &holes {
                        holes.encode(&mut encoder);
                    }
                    // The channel before it was quantised from (as chosen above).
                    let activities = neighbour_in(repr.unit(schema.lsb(c)))
                        .filter(|_| quantised.from_neighbour)
                        .map(|neighbour| {
                            neighbour_activities(
                                neighbour,
                                quantised.exceptions.iter().map(|e| e.0),
                                (2 * e + 1) as u64,
                            )
                        });
                    observe(&quantised.indices, activities.as_deref(), warmup);
                    let rest = starting_context(quantised.from_neighbour, &mut carried);
                    carried = encode_residuals(
                        &mut encoder,
                        quantised.indices.iter().copied(),
                        activities.as_deref(),
                        warmup,
                        rest,
                    );
                    buffers.give(quantised.indices);
                    let reconstruction = holes::put_back(holes.as_ref(), quantised.reconstruction);
                    previous = unit.map(|u| (u, reconstruction));
                    if let Some((_, reconstruction)) = before {
                        buffers.give(reconstruction);
                    }
                }
                None => {
                    let (order, quantised) = (0..=2u8)
                        .map(|o| (o, quantise_float(column, o, eb, ty)))
                        .min_by_key(|(_, q)| cost(&q.indices) + 64 * q.exceptions.len() as u64)
                        .expect("three candidates");
                    head.push(MODE_FLOAT);
                    head.push(order);
                    head.extend_from_slice(&eb.to_le_bytes());
                    write_exception_positions(&mut head, quantised.exceptions.iter().map(|e| e.0));
                    for (_, v) in &quantised.exceptions {
                        head.extend_from_slice(&v.to_bits().to_le_bytes());
                    }
                    observe(&quantised.indices, None, usize::from(order));
                    carried = encode_residuals(
                        &mut encoder,
                        quantised.indices.into_iter(),
                        None,
                        usize::from(order),
                        ResidualContext::default(),
                    );
                }
            }
        }

        let mut payload = Vec::with_capacity(head.len() + 16 + frames.len() * bounds.len());
        put_uvarint(&mut payload, bounds.len() as u64 + 1);
        payload.extend_from_slice(&head);
        payload.extend_from_slice(&encoder.finish());
        Ok(Packet {
            header: PacketHeader::for_block(
                CodecId::Bounded,
                VERSION,
                self.quality,
                schema,
                frame_count,
                first,
            ),
            payload,
        })
    }
}

/// Count, then the gaps between successive positions (the first from 0).
fn write_exception_positions(out: &mut Vec<u8>, positions: impl ExactSizeIterator<Item = usize>) {
    put_uvarint(out, positions.len() as u64);
    let mut last = 0;
    for at in positions {
        put_uvarint(out, (at - last) as u64);
        last = at;
    }
}

fn read_exception_positions(reader: &mut Reader<'_>, n: usize) -> Result<Vec<usize>, CodecError> {
    let count = reader.uvarint()?;
    if count > n as u64 {
        return Err(CodecError::Corrupt("more exceptions than samples"));
    }
    let mut positions = Vec::with_capacity(count as usize);
    let mut last = 0usize;
    for k in 0..count {
        let gap = usize::try_from(reader.uvarint()?)
            .map_err(|_| CodecError::Corrupt("exception position"))?;
        let at = last
            .checked_add(gap)
            .filter(|&a| a < n && (k == 0 || gap > 0));
        let at = at.ok_or(CodecError::Corrupt("exception positions out of order"))?;
        positions.push(at);
        last = at;
    }
    Ok(positions)
}

pub(crate) fn decode_bounded(
    schema: &StreamSchema,
    packet: &Packet,
    layout: Layout,
) -> Result<DecodedBlock, CodecError> {
    let mut reader = column_payload(packet, CodecId::Bounded, VERSION, schema)?;
    let n = usize::from(packet.header.frame_count);
    let channels = schema.channels.len();
    let ty = schema.sample_type;
    enum Head {
        Lossless(ColumnHead),
        Units {
            predictor: Predictor,
            from_neighbour: bool,
            has_holes: bool,
            repr: Representation,
            eb: i64,
            exceptions: Vec<(usize, i64)>,
        },
        Float {
            order: u8,
            eb: f64,
            exceptions: Vec<(usize, f64)>,
        },
    }
    let time_head = read_timestamp_head(&mut reader, schema)?;
    let mut heads = Vec::with_capacity(channels);
    for c_index in 0..channels {
        heads.push(match reader.u8()? {
            MODE_LOSSLESS => match read_column_head(&mut reader)? {
                head @ ColumnHead {
                    prediction: Prediction::Own(_),
                    ..
                } => Head::Lossless(head),
                _ => {
                    return Err(CodecError::Corrupt(
                        "a bounded column predicted from another",
                    ));
                }
            },
            MODE_UNITS => {
                let d = reader.u8()?;
                // Bit 6 (all zero in a lossless column's descriptor) is not used here.
                if d & ALL_ZERO_BIT != 0 {
                    return Err(CodecError::Corrupt("bad units column descriptor"));
                }
                let repr = match d >> REPR_SHIFT & 0b111 {
                    QUANTUM_F32_TAG => quantum(f64::from(f32::from_le_bytes(reader.array()?)))?,
                    tag => read_representation(tag, &mut reader)?,
                };
                if repr.unit(schema.lsb(c_index)).is_none() {
                    return Err(CodecError::Corrupt("units column without integer units"));
                }
                let (predictor, from_neighbour) = match d & 0b111 {
                    NEIGHBOUR_TAG => (Predictor::Zero, true),
                    tag => (Predictor::read(tag, &mut reader)?, false),
                };
                let eb =
                    i64::try_from(reader.uvarint()?).map_err(|_| CodecError::Corrupt("bound"))?;
                if !(1..=MAX_UNITS_BOUND).contains(&eb) {
                    return Err(CodecError::Corrupt("bad units column"));
                }
                let positions = read_exception_positions(&mut reader, n)?;
                let exceptions = positions
                    .into_iter()
                    .map(|at| Ok((at, crate::entropy::unzigzag(reader.uvarint()?))))
                    .collect::<Result<Vec<_>, CodecError>>()?;
                Head::Units {
                    predictor,
                    from_neighbour,
                    has_holes: d & HOLES_BIT != 0,
                    repr,
                    eb,
                    exceptions,
                }
            }
            MODE_FLOAT => {
                let order = reader.u8()?;
                let eb = f64::from_le_bytes(reader.array()?);
                if order > 2 || !(eb.is_finite() && eb > 0.0) {
                    return Err(CodecError::Corrupt("bad float column"));
                }
                let positions = read_exception_positions(&mut reader, n)?;
                let exceptions = positions
                    .into_iter()
                    .map(|at| Ok((at, f64::from_bits(u64::from_le_bytes(reader.array()?)))))
                    .collect::<Result<Vec<_>, CodecError>>()?;
                Head::Float {
                    order,
                    eb,
                    exceptions,
                }
            }
            _ => return Err(CodecError::Corrupt("unknown column mode")),
        });
    }
    let mut decoder = ResidualDecoder::new(reader.take(reader.remaining())?)?;
    let t0 = packet.header.first_timestamp_ns;
    let times = decode_timestamps(&mut decoder, n, &time_head, t0, schema)?;
    let mut values = row_buffer(n, channels);
    // The channel before's reconstruction, where it was a units column.
    let mut previous: Option<Vec<i64>> = None;
    // The context the channel before left (see `starting_context`).
    let mut carried = ResidualContext::default();
    for (c, head) in heads.into_iter().enumerate() {
        let lsb = schema.lsb(c).unwrap_or(1.0);
        let (start, stride) = layout.column(c, n, channels);
        let before = previous.take();
        match head {
            Head::Lossless(head) => {
                if head.repr == Representation::LsbCounts && schema.lsb(c).is_none() {
                    return Err(CodecError::Corrupt(
                        "ADC-step column for a channel without one",
                    ));
                }
                let ints = decode_value_column(&mut decoder, n, &head, None, &mut carried)?;
                head.repr
                    .fill_column(&ints, lsb, ty, &mut values, start, stride)?;
            }
            Head::Units {
                predictor,
                from_neighbour,
                has_holes,
                repr,
                eb,
                exceptions,
            } => {
                if repr == Representation::LsbCounts && schema.lsb(c).is_none() {
                    return Err(CodecError::Corrupt(
                        "ADC-step column for a channel without one",
                    ));
                }
                // Exceptions count the samples that are not holes.
                let (holes, present) = holes::decode_if(has_holes, &mut decoder, n)?;
                if exceptions.last().is_some_and(|&(at, _)| at >= present) {
                    return Err(CodecError::Corrupt(
                        "an exception past the column's samples",
                    ));
                }
                let mut rest = starting_context(from_neighbour, &mut carried);
                let ints = if from_neighbour {
                    let neighbour = before.as_deref().ok_or(CodecError::Corrupt(
                        "a column predicted from a channel before it that is not a units column",
                    ))?;
                    let neighbour = neighbour_seen(holes.as_ref(), neighbour);
                    let mut column = NeighbourReconstruction {
                        values: Vec::with_capacity(present),
                        neighbour: &neighbour,
                        step: 2 * eb + 1,
                        beside: Beside::new(
                            &neighbour,
                            &exceptions,
                            (2 * eb + 1) as u64,
                            &mut rest,
                        ),
                    };
                    carried = dequantise(
                        &mut decoder,
                        present,
                        NEIGHBOUR_WARMUP,
                        &exceptions,
                        &mut column,
                        rest,
                    )?;
                    column.values
                } else {
                    let units = UnitsColumn {
                        decoder: &mut decoder,
                        present,
                        warmup: predictor.warmup(),
                        exceptions: &exceptions,
                        step: 2 * eb + 1,
                        rest,
                    };
                    let (values, left) = with_prediction(predictor, units)?;
                    carried = left;
                    values
                };
                let ints = holes::put_back(holes.as_ref(), ints);
                repr.fill_column(&ints, lsb, ty, &mut values, start, stride)?;
                previous = Some(ints);
            }
            Head::Float {
                order,
                eb,
                exceptions,
            } => {
                let mut column = FloatReconstruction {
                    values: Vec::with_capacity(n),
                    history: [0.0; 2],
                    order,
                    eb,
                    ty,
                };
                carried = dequantise(
                    &mut decoder,
                    n,
                    usize::from(order),
                    &exceptions,
                    &mut column,
                    ResidualContext::default(),
                )?;
                for (slot, v) in values
                    .iter_mut()
                    .skip(start)
                    .step_by(stride)
                    .zip(column.values)
                {
                    *slot = v;
                }
            }
        }
    }
    Ok(DecodedBlock { times, values })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::tests::imu_schema;
    use crate::{LosslessCodec, quantize_to_lsb};
    use proptest::prelude::*;

    fn noisy_imu(n: usize, seed: u64) -> Vec<Frame> {
        crate::synthetic::imu_frames(n, seed, 8.0)
    }

    fn max_error(a: &[Frame], b: &[Frame], channel: usize) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x.values[channel] - y.values[channel]).abs())
            .fold(0.0, f64::max)
    }

    /// A signal under noise the bound lets through: a predictor fitted to the first
    /// reconstruction over twelve values follows the vibration while averaging the noise out
    /// of the prediction, which no short predictor can.
    /// Neighbouring lidar beams predict each other from their reconstructions: every range
    /// within the bound, in fewer bytes than each beam from its own past.
    #[test]
    fn neighbouring_lidar_beams_predict_each_other_within_the_bound() {
        let (schema, frames) = crate::synthetic::lidar_scans(32, 400);
        let codec = BoundedCodec::new(ErrorBound::Sigma(2.0));
        let packet = codec.encode(&schema, &frames).unwrap();
        let back = codec.decode(&schema, &packet).unwrap();
        for c in 0..32 {
            let bound = 2.0 * schema.noise_sigma[c];
            assert!(max_error(&frames, &back, c) <= bound, "beam {c}");
        }
        let alone = crate::frame::tests::payload_of_each_channel_alone(&codec, &schema, &frames);
        assert!(
            packet.payload.len() * 10 < alone * 8,
            "{} bytes with neighbours, {alone} alone",
            packet.payload.len()
        );
    }

    /// Room handed on from other columns, longer or shorter and full of other values,
    /// changes nothing a column is quantised to: on lidar beams beside each other (short
    /// columns, the median, the short ranking) and on long IMU columns (the refit).
    #[test]
    fn room_handed_on_between_columns_changes_no_quantisation() {
        let mut cases = Vec::new();
        for (beams, scans) in [(12, 200), (4, 700)] {
            let (schema, frames) = crate::synthetic::lidar_scans(beams, scans);
            cases.push((schema, frames, 3));
        }
        let imu = crate::synthetic::imu_frames(700, 17, 1.0);
        cases.push((crate::synthetic::imu_schema(), imu, usize::MAX));
        let mut handed_on = Buffers::default();
        let mut columns = 0;
        for (schema, frames, neighbour_from) in &cases {
            let mut before: Option<Vec<i64>> = None;
            for c in 0..schema.channels.len() {
                let column: Vec<f64> = frames.iter().map(|f| f.values[c]).collect();
                let lsb = schema.lsb(c);
                let (repr, ints) = Representation::choose(&column, schema.sample_type, lsb, None);
                let Some(unit) = repr.unit(lsb) else { continue };
                for sigma in [0.25, 1.0, 4.0] {
                    let eb = sigma * schema.noise_sigma[c];
                    let e = bound_in_units(eb, unit);
                    if e < 1 {
                        continue;
                    }
                    let bound = Bound {
                        repr: &repr,
                        lsb: lsb.unwrap_or(1.0),
                        ty: schema.sample_type,
                        eb,
                    };
                    let neighbour = before.as_deref().filter(|_| c >= *neighbour_from);
                    let fresh = choose_units_quantisation(
                        &column,
                        &ints,
                        e,
                        bound,
                        neighbour,
                        &mut Buffers::default(),
                    );
                    // Stale room: longer and shorter than the column, not zero.
                    for length in [ints.len() + 37, ints.len() / 3, 1] {
                        handed_on.give(vec![-12_345; length]);
                    }
                    let reused = choose_units_quantisation(
                        &column,
                        &ints,
                        e,
                        bound,
                        neighbour,
                        &mut handed_on,
                    );
                    assert_eq!(reused.predictor, fresh.predictor, "channel {c} at {sigma}");
                    assert_eq!(reused.from_neighbour, fresh.from_neighbour);
                    assert_eq!(reused.indices, fresh.indices, "channel {c} at {sigma}");
                    assert_eq!(reused.reconstruction, fresh.reconstruction);
                    assert_eq!(reused.exceptions, fresh.exceptions);
                    assert_eq!(reused.bits, fresh.bits);
                    handed_on.give_quantised(reused);
                    columns += 1;
                    if sigma == 1.0 {
                        before = Some(fresh.reconstruction);
                    }
                }
            }
        }
        assert!(columns >= 40, "{columns} columns quantised");
        assert!(handed_on.free.len() <= Buffers::KEPT);
    }

    /// A bound a few dozen f32 steps wide on f32 values (a smooth position, as the flock's
    /// pose): the coarse grid leaves room for rounding each reconstruction to f32, so every
    /// reconstruction, quantised without the check, holds the bound.
    #[test]
    fn a_coarse_grid_leaves_room_for_rounding_to_f32() {
        let mut uniform = crate::synthetic::uniform_source(5);
        // Through zero, where f32 steps are fine: no quantum above the coarse grid's.
        let column: Vec<f64> = (0..1000)
            .map(|i| {
                let x = 3.5 * (0.01 * f64::from(i)).sin() + 1e-5 * (uniform() - 0.5);
                f64::from(x as f32)
            })
            .collect();
        let step = f64::from(f32::EPSILON) * 2.0; // an f32 step between 2 and 4
        // Bounds between f32 steps: a reconstruction within half a step of one rounds past it.
        for steps in [4.6, 20.7, 60.9] {
            let eb = steps * step;
            let grid = QuantisationGrid::of(&column, eb, SampleType::F32, None, None);
            assert!(!grid.exact, "{steps} steps: a coarse grid");
            let e = grid.bound_in_units.expect("units");
            let bound = Bound {
                repr: &grid.repr,
                lsb: 1.0,
                ty: SampleType::F32,
                eb,
            };
            for predictor in [Predictor::Previous, Predictor::Linear] {
                let quantised = quantise_units(
                    &column,
                    &grid.ints,
                    predictor,
                    e,
                    None,
                    &mut Buffers::default(),
                );
                for (i, (&r, &x)) in quantised.reconstruction.iter().zip(&column).enumerate() {
                    assert!(
                        bound.holds(r, x),
                        "{steps} steps, {predictor:?}, sample {i}"
                    );
                }
            }
        }
    }

    /// The packet of `lidar_scans(16, 120)` at one sigma that this version wrote decodes
    /// within its bound (a change of the format shows here first); those of the versions
    /// before, which coded top mantissa bits apart, are refused by their version.
    #[test]
    fn packets_of_this_version_decode_and_earlier_ones_are_refused() {
        let (schema, frames) = crate::synthetic::lidar_scans(16, 120);
        let packet = Packet::from_bytes(include_bytes!("../testdata/lidar_bounded_v9.bin"))
            .expect("a packet");
        assert_eq!(packet.header.codec_version, VERSION);
        let decoded = BoundedCodec::new(ErrorBound::Sigma(1.0))
            .decode(&schema, &packet)
            .unwrap();
        for c in 0..16 {
            assert!(
                max_error(&frames, &decoded, c) <= schema.noise_sigma[c],
                "beam {c}"
            );
        }
        crate::frame::tests::assert_refused_by_version(
            &BoundedCodec::new(ErrorBound::Sigma(1.0)),
            CodecId::Bounded,
            &schema,
            &[
                (include_bytes!("../testdata/lidar_bounded_v6.bin"), 6),
                (include_bytes!("../testdata/lidar_bounded_v7.bin"), 7),
            ],
        );
    }

    #[test]
    fn lidar_no_returns_come_back_exactly_and_cost_little() {
        let (schema, clean) = crate::synthetic::lidar_scans(32, 400);
        let (frames, holes) = crate::synthetic::with_no_returns(&clean, 0.02, 4, 100..140);
        let codec = BoundedCodec::new(ErrorBound::Sigma(2.0));
        let packet = codec.encode(&schema, &frames).unwrap();
        let back = codec.decode(&schema, &packet).unwrap();
        for c in 0..32 {
            assert!(
                max_error(&frames, &back, c) <= 2.0 * schema.noise_sigma[c],
                "beam {c}"
            );
        }
        for (original, decoded) in frames.iter().zip(&back) {
            for (&a, &b) in original.values.iter().zip(decoded.values.iter()) {
                assert_eq!(a == 0.0, b == 0.0);
            }
        }
        let clean_bytes = codec.encode(&schema, &clean).unwrap().payload.len();
        let extra_bits = (packet.payload.len() - clean_bytes) * 8;
        assert!(
            extra_bits < holes * 12,
            "{extra_bits} bits for {holes} no-returns"
        );
    }

    #[test]
    fn a_bounded_column_cannot_lean_on_a_channel_that_is_not_a_units_column() {
        let (schema, frames) = crate::synthetic::lidar_scans(2, 100);
        let codec = BoundedCodec::new(ErrorBound::Sigma(2.0));
        let mut packet = codec.encode(&schema, &frames).unwrap();
        // Column count, the regular timestamps' descriptor, then channel 0's mode and
        // descriptor: a predictor without parameters (none, previous, linear).
        assert_eq!(packet.payload[2], MODE_UNITS);
        assert!(packet.payload[3] & 0b111 <= 2);
        packet.payload[3] = packet.payload[3] & !0b111 | NEIGHBOUR_TAG;
        assert_eq!(
            codec.decode(&schema, &packet),
            Err(CodecError::Corrupt(
                "a column predicted from a channel before it that is not a units column"
            ))
        );
    }

    #[test]
    fn a_long_predictor_fitted_to_the_reconstruction_beats_the_short_ones() {
        let schema = imu_schema();
        let lsb = schema.lsb(0).unwrap();
        let sigma = 40.0 * lsb;
        // A slow motion and a wheel's 15 Hz vibration under Gaussian noise (a sum of twelve
        // uniforms), as a rolling robot's accelerometer axis.
        let mut state = 5u64;
        let mut uniform = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let frames: Vec<Frame> = (0..1000)
            .map(|i| {
                let t = f64::from(i) / schema.rate_hz;
                let noise: f64 = (0..12).map(|_| uniform()).sum::<f64>() - 6.0;
                let mut values = vec![0.0; 6];
                values[0] = quantize_to_lsb(
                    0.3 * (t * 3.0).sin()
                        + 5.0 * sigma * (t * std::f64::consts::TAU * 15.0).sin()
                        + sigma * noise,
                    lsb,
                    schema.sample_type,
                );
                Frame::new(i64::from(i) * 5_000_000, values)
            })
            .collect();
        let column: Vec<f64> = frames.iter().map(|f| f.values[0]).collect();
        let (repr, ints) = Representation::choose(&column, schema.sample_type, Some(lsb), None);
        let eb = sigma;
        let e = bound_in_units(eb, lsb);
        let bound = Bound {
            repr: &repr,
            lsb,
            ty: schema.sample_type,
            eb,
        };
        let short = [Predictor::Zero, Predictor::Previous, Predictor::Linear]
            .into_iter()
            .chain(Predictor::fit(&ints, &[0; MAX_ORDER], 3))
            .map(|p| quantise_units(&column, &ints, p, e, Some(bound), &mut Buffers::default()))
            .min_by_key(UnitsQuantised::cost)
            .unwrap();
        let long = Predictor::fit_from(&ints, &short.reconstruction, &[0; MAX_ORDER], 12).unwrap();
        let long = quantise_units(
            &column,
            &ints,
            long,
            e,
            Some(bound),
            &mut Buffers::default(),
        );
        assert!(
            (long.cost() as f64) < 0.95 * short.cost() as f64,
            "order 12: {} bits, best short predictor ({:?}): {} bits",
            long.cost(),
            short.predictor,
            short.cost()
        );
        // And the codec takes it: its first column's warm-up is the long predictor's.
        let codec = BoundedCodec::new(ErrorBound::Absolute(eb));
        let mut warmups = Vec::new();
        codec
            .encode_observed(&schema, &frames, |_, _, warmup| warmups.push(warmup))
            .unwrap();
        assert_eq!(warmups[0], RECONSTRUCTION_ORDER);
        let packet = codec.encode(&schema, &frames).unwrap();
        let decoded = codec.decode(&schema, &packet).unwrap();
        assert!(max_error(&frames, &decoded, 0) <= eb);
    }

    /// Read as the decoder goes, a column's activities without exceptions are those collected
    /// beforehand, index for index, and 0 past the last (as `get` gives it).
    #[test]
    fn activities_read_as_the_decoder_goes_are_the_collected_ones() {
        let mut uniform = crate::synthetic::uniform_source(3);
        let neighbour: Vec<i64> = (0..300)
            .map(|i| ((uniform() - 0.5) * 4000.0) as i64 * (i % 7))
            .collect();
        for step in [1, 3, 41] {
            let collected = neighbour_activities(&neighbour, std::iter::empty(), step);
            let on_the_fly = Activities::OfEverySample(step);
            let collected = Activities::Collected(collected);
            for i in 0..neighbour.len() + 3 {
                assert_eq!(
                    on_the_fly.of_index(&neighbour, i),
                    collected.of_index(&neighbour, i),
                    "step {step}, index {i}"
                );
            }
        }
    }

    /// Where the short loops apply, they quantise as the generic one does, candidate for
    /// candidate and for the refit.
    #[test]
    fn the_short_loops_quantise_as_the_generic_one() {
        let mut uniform = crate::synthetic::uniform_source(99);
        let mut tags = std::collections::BTreeSet::new();
        let (mut refits, mut floats, mut shorts, mut medians) = (0, 0, 0, 0);
        // Shared by every case, as by a block's columns.
        let mut buffers = Buffers::default();
        for case in 0..60 {
            // The last scale leaves floating-point predictions out.
            let scale = [1.0, 30.0, 1e4, 1e9, 1e11][case % 5];
            let drift = [0.0, 0.02, 0.3][case % 3];
            let mut level = 0.0;
            let mut ints: Vec<i64> = (0..600)
                .map(|i| {
                    level += drift * scale * (uniform() - 0.4);
                    (level + scale * (0.05 * i as f64).sin() + scale * 0.2 * (uniform() - 0.5))
                        .round() as i64
                })
                .collect();
            if case == 39 {
                // Constant: no fit.
                ints.fill(7);
            }
            let column: Vec<f64> = ints.iter().map(|&x| x as f64).collect();
            let e = [1, 3, 50, 100_000][case % 4];
            let fit3 = Predictor::fit(&ints, &[0; MAX_ORDER], 3);
            if !within(SHORT_RANKING_LIMIT, &ints, e, fit3) {
                continue;
            }
            let float_fit = within(FLOAT_PREDICTION_LIMIT, &ints, e, fit3);
            floats += usize::from(float_fit);
            shorts += 1;
            // A neighbour that follows the column, off by noise.
            let neighbour: Vec<i64> = ints
                .iter()
                .map(|&x| x + (scale * 0.1 * (uniform() - 0.5)) as i64)
                .collect();
            let (ranking, median) =
                first_ranking_short(&ints, e, fit3, float_fit, Some(&neighbour), &mut buffers)
                    .expect("small values");
            let short: [UnitsQuantised; 4] = std::array::from_fn(|i| ranking.candidate(i));
            let cheapest = short.iter().min_by_key(|q| q.cost()).expect("four");
            let taken = ranking.cheapest(&mut buffers);
            assert_eq!(taken.predictor, cheapest.predictor, "case {case}");
            assert_eq!(taken.indices, cheapest.indices, "case {case}");
            assert_eq!(taken.reconstruction, cheapest.reconstruction, "case {case}");
            let alone = quantise_units_neighbour(&column, &ints, &neighbour, e, None, &mut buffers);
            if let Some(median) = median {
                medians += 1;
                assert_eq!(median.indices, alone.indices, "case {case}");
                assert_eq!(median.reconstruction, alone.reconstruction, "case {case}");
                assert_eq!(median.cost(), alone.cost(), "case {case}");
            }
            let generic = first_ranking(&column, &ints, e, fit3, &mut buffers);
            for (short, generic) in short.iter().zip(&generic) {
                assert_eq!(short.predictor, generic.predictor, "case {case}");
                assert_eq!(short.cost(), generic.cost(), "case {case}");
                assert_eq!(short.indices, generic.indices, "case {case}");
                assert_eq!(short.exceptions, generic.exceptions, "case {case}");
                assert_eq!(short.reconstruction, generic.reconstruction, "case {case}");
            }
            // The refit, as the encoder makes it.
            let refit = Predictor::fit_from(
                &ints,
                &short[3].reconstruction,
                &[0; MAX_ORDER],
                RECONSTRUCTION_ORDER,
            );
            let float_refit = |p: &Predictor| within(FLOAT_PREDICTION_LIMIT, &ints, e, Some(*p));
            if let Some(refit) = refit.filter(float_refit) {
                let fast = quantise_units_fitted_short::<RECONSTRUCTION_ORDER>(
                    &ints,
                    refit,
                    e,
                    &mut buffers,
                )
                .expect("small values");
                let generic = quantise_units(&column, &ints, refit, e, None, &mut buffers);
                assert_eq!(fast.indices, generic.indices, "case {case}");
                assert_eq!(fast.reconstruction, generic.reconstruction, "case {case}");
                assert_eq!(fast.cost(), generic.cost(), "case {case}");
                refits += 1;
            }
            tags.insert(short.map(|q| q.predictor.tag()));
        }
        assert_eq!(
            tags,
            [[0, 1, 2, 2], [0, 1, 2, 3]].into(),
            "with and without a fit"
        );
        assert!(refits >= 25, "{refits} refits");
        assert!(
            floats >= 20 && shorts - floats >= 5,
            "{floats} of {shorts} in floats"
        );
        assert!(
            medians * 2 >= shorts,
            "{medians} of {shorts} with the median"
        );
    }

    /// A bound of more units than a packet can name is tightened to the widest it can, so
    /// that the packet decodes (and still holds the bound asked for).
    #[test]
    fn a_bound_wider_than_the_format_names_still_decodes() {
        let schema = imu_schema();
        let frames = noisy_imu(300, 4);
        for eb in [1e12, 1e300] {
            let codec = BoundedCodec::new(ErrorBound::Absolute(eb));
            let packet = codec.encode(&schema, &frames).unwrap();
            let decoded = codec.decode(&schema, &packet).unwrap();
            for c in 0..schema.channels.len() {
                assert!(max_error(&frames, &decoded, c) <= eb, "channel {c}");
            }
        }
    }

    /// The quantiser's 64-bit shortcut (division by multiplying with a reciprocal) gives the
    /// 128-bit arithmetic's index and reconstruction, or `None` exactly where those leave
    /// the `i64` range; so does its unchecked form wherever that may be used.
    #[test]
    fn quantisation_matches_the_128_bit_arithmetic() {
        let reference = |x: i64, p: i64, e: i64| -> Option<(i64, i64)> {
            let d = i128::from(x) - i128::from(p);
            let step = 2 * i128::from(e) + 1;
            let q = (d + if d >= 0 {
                i128::from(e)
            } else {
                -i128::from(e)
            }) / step;
            let r = i128::from(p) + q * step;
            Some((i64::try_from(q).ok()?, i64::try_from(r).ok()?))
        };
        let mut uniform = crate::synthetic::uniform_source(3);
        let edges = [
            0i64,
            1,
            -1,
            7,
            (1 << 31) - 1,
            1 << 31,
            (1 << 32) - 5,
            1 << 32,
            i64::MAX,
            i64::MIN,
        ];
        for e in [1i64, 2, 3, 1000, (1 << 31) - 1, 1 << 31, (1 << 52) - 1] {
            let quantiser = Quantiser::new(e);
            for _ in 0..2000 {
                let scale = 2f64.powi((uniform() * 40.0) as i32);
                let x = ((uniform() - 0.5) * scale) as i64;
                let p = ((uniform() - 0.5) * scale) as i64;
                assert_eq!(quantiser.quantise(x, p), reference(x, p, e), "{x} {p} {e}");
                assert_eq!(
                    quantiser.quantise_near(x, p),
                    reference(x, p, e),
                    "{x} {p} {e}"
                );
            }
            for &x in &edges {
                for &p in &edges {
                    assert_eq!(quantiser.quantise(x, p), reference(x, p, e), "{x} {p} {e}");
                    if x.unsigned_abs() < 1 << 61 && p.unsigned_abs() < 1 << 61 {
                        let near = quantiser.quantise_near(x, p);
                        assert_eq!(near, reference(x, p, e), "{x} {p} {e}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_bound_holds_and_the_rate_drops_as_it_grows() {
        let schema = imu_schema();
        let frames = noisy_imu(400, 3);
        let lossless = LosslessCodec.encode(&schema, &frames).unwrap().len();
        let mut previous = lossless;
        for k in [0.5, 1.0, 2.0, 4.0] {
            let codec = BoundedCodec::new(ErrorBound::Sigma(k));
            let packet = codec.encode(&schema, &frames).unwrap();
            let decoded = codec
                .decode(&schema, &Packet::from_bytes(&packet.to_bytes()).unwrap())
                .unwrap();
            for c in 0..6 {
                let eb = k * schema.noise_sigma[c];
                assert!(max_error(&frames, &decoded, c) <= eb, "k={k} channel {c}");
            }
            assert!(
                decoded
                    .iter()
                    .zip(&frames)
                    .all(|(a, b)| a.timestamp_ns == b.timestamp_ns)
            );
            assert!(
                packet.len() < previous,
                "k={k}: {} bytes, not below {previous}",
                packet.len()
            );
            previous = packet.len();
        }
    }

    #[test]
    fn non_finite_and_extreme_values_survive_as_exceptions() {
        let mut schema = imu_schema();
        schema.lsb = vec![None; 6];
        schema.sample_type = SampleType::F64;
        let specials = [
            f64::NAN,
            f64::INFINITY,
            -f64::INFINITY,
            f64::MAX,
            -f64::MAX,
            1e300,
            0.1,
            -0.0,
        ];
        let frames: Vec<Frame> = (0..40)
            .map(|i| {
                Frame::new(
                    i,
                    (0..6)
                        .map(|c| specials[(i as usize + c) % specials.len()] * 0.5)
                        .collect(),
                )
            })
            .collect();
        let codec = BoundedCodec::new(ErrorBound::Absolute(0.01));
        let decoded = codec
            .decode(&schema, &codec.encode(&schema, &frames).unwrap())
            .unwrap();
        for (a, b) in frames.iter().zip(&decoded) {
            for (x, y) in a.values.iter().zip(&b.values) {
                if x.is_finite() {
                    assert!((x - y).abs() <= 0.01, "{x} -> {y}");
                } else {
                    assert_eq!(x.to_bits(), y.to_bits());
                }
            }
        }
    }

    #[test]
    fn a_bound_on_a_unit_multiple_holds_after_rounding_to_f32() {
        // Ranges in millimetres stored as f32 and a bound of just over 23 mm: a reconstruction
        // 23 counts away rounds to slightly more than the bound and must not be used.
        let mut schema = imu_schema();
        schema.lsb = vec![None; 6];
        let frames: Vec<Frame> = (0..500)
            .map(|i| {
                let values = (0..6)
                    .map(|c| {
                        quantize_to_lsb(
                            2.0 + ((i * 37 + c * 11) % 400) as f64 * 0.013,
                            0.001,
                            SampleType::F32,
                        )
                    })
                    .collect();
                Frame::new(i as i64, values)
            })
            .collect();
        let eb = 0.023_000_139;
        let codec = BoundedCodec::new(ErrorBound::Absolute(eb));
        let decoded = codec
            .decode(&schema, &codec.encode(&schema, &frames).unwrap())
            .unwrap();
        for c in 0..6 {
            assert!(max_error(&frames, &decoded, c) <= eb, "channel {c}");
        }
    }

    /// A detected quantum costs a units column 4 bytes as an f32 instead of 8, and the bound
    /// still holds on every sample decoded with it.
    #[test]
    fn a_detected_quantum_is_sent_as_an_f32() {
        let mut schema = imu_schema();
        schema.lsb = vec![None; 6];
        let step = 0.004_785_156_f32;
        let frames: Vec<Frame> = (0..1000)
            .map(|i| {
                let values = (0..6)
                    .map(|c| {
                        let x = 900.0 * (i as f64 * 0.01 + c as f64).sin() + (i * 7 % 13) as f64;
                        quantize_to_lsb(x * f64::from(step), f64::from(step), SampleType::F32)
                    })
                    .collect();
                Frame::new(i as i64 * 2_500_000, values)
            })
            .collect();
        let eb = 0.05;
        let codec = BoundedCodec::new(ErrorBound::Absolute(eb));
        let packet = codec.encode(&schema, &frames).unwrap();
        let narrow = step.to_le_bytes();
        let quanta = packet.payload.windows(4).filter(|w| *w == narrow).count();
        assert_eq!(quanta, 6, "one f32 quantum per channel");
        let decoded = codec.decode(&schema, &packet).unwrap();
        for c in 0..6 {
            assert!(max_error(&frames, &decoded, c) <= eb, "channel {c}");
        }
    }

    /// Decimal text printed finer than the bound needs (a real IMU's CSV: 8 digits, counts
    /// of 2^33 units) is quantised on a power-of-two grid of about a thousandth of the bound:
    /// every reconstruction is a multiple of it and within the bound. Text as coarse as the
    /// bound (2 digits at eb = 0.05) keeps its own grid: every reconstruction is one of its
    /// decimals.
    #[test]
    fn columns_finer_than_the_bound_are_quantised_on_a_coarse_grid() {
        let mut schema = imu_schema();
        schema.sample_type = SampleType::F64;
        schema.lsb = vec![None; 6];
        let eb = 0.05;
        let coarse = 2f64.powi(-5 - COARSE_GRID_BITS);
        for (digits, own_grid) in [(8, false), (2, true)] {
            let scale = 10f64.powi(digits);
            let frames: Vec<Frame> = noisy_imu(1000, 3)
                .into_iter()
                .map(|mut f| {
                    for v in f.values.iter_mut() {
                        // Plus zero: no negative zeros, which no decimal grid has.
                        *v = (*v * 3.0 * scale).round() / scale + 0.0;
                    }
                    f
                })
                .collect();
            let codec = BoundedCodec::new(ErrorBound::Absolute(eb));
            let packet = codec.encode(&schema, &frames).unwrap();
            let decoded = codec.decode(&schema, &packet).unwrap();
            let quanta = (packet.payload.windows(4))
                .filter(|w| *w == (coarse as f32).to_le_bytes())
                .count();
            assert_eq!(quanta, if own_grid { 0 } else { 6 }, "{digits} digits");
            for c in 0..6 {
                assert!(max_error(&frames, &decoded, c) <= eb, "channel {c}");
                for f in &decoded {
                    let x = f.values[c];
                    let on_grid = if own_grid {
                        ((x * scale).round() / scale).to_bits() == x.to_bits()
                    } else {
                        (x / coarse).fract() == 0.0
                    };
                    assert!(on_grid, "{digits} digits: {x} off the grid");
                }
            }
        }
    }

    /// Columns decoded without frames are the frames' values, column by column: lossless,
    /// units and float columns alike.
    #[test]
    fn columns_decode_as_the_frames_do() {
        let mut schema = imu_schema();
        schema.lsb[5] = None;
        let mut frames = noisy_imu(700, 9);
        for (i, f) in frames.iter_mut().enumerate() {
            f.values[5] = f64::from((i as f32 * 0.37).sin() * 1.7);
        }
        let packets = [
            LosslessCodec.encode(&schema, &frames).unwrap(),
            BoundedCodec::new(ErrorBound::Sigma(1.0))
                .encode(&schema, &frames)
                .unwrap(),
        ];
        for packet in packets {
            let bytes = packet.to_bytes();
            let decoded = crate::decode_packet(&schema, &bytes).unwrap();
            let (times, columns) = crate::decode_packet_columns(&schema, &bytes).unwrap();
            assert_eq!(columns.len(), schema.channels.len());
            for (i, frame) in decoded.iter().enumerate() {
                assert_eq!(times[i], frame.timestamp_ns);
                for (c, column) in columns.iter().enumerate() {
                    assert_eq!(column[i].to_bits(), frame.values[c].to_bits(), "{i} {c}");
                }
            }
        }
    }

    #[test]
    fn corrupt_payloads_are_errors_not_panics() {
        let schema = imu_schema();
        let codec = BoundedCodec::new(ErrorBound::Sigma(1.0));
        let packet = codec.encode(&schema, &noisy_imu(60, 9)).unwrap();
        for i in 0..packet.payload.len() {
            let mut flipped = packet.clone();
            flipped.payload[i] ^= 0xa5;
            let _ = codec.decode(&schema, &flipped);
            let mut cut = packet.clone();
            cut.payload.truncate(i);
            let _ = codec.decode(&schema, &cut);
        }
    }

    proptest! {
        #[test]
        fn every_sample_is_within_the_bound(
            values in proptest::collection::vec(-1e6f64..1e6, 6..300),
            eb in 1e-6f64..100.0,
            f32_stream in any::<bool>(),
            integers in any::<bool>(),
            zero_every in 0usize..8,
        ) {
            // Zeros scattered through the columns (none where `zero_every` is 0): holes,
            // where they are taken out.
            let values: Vec<f64> = values
                .iter()
                .enumerate()
                .map(|(i, &v)| if zero_every > 0 && (i * 7 + i / 6) % zero_every == 0 { 0.0 } else { v })
                .collect();
            let mut schema = imu_schema();
            schema.lsb = vec![None; 6];
            schema.sample_type = match (integers, f32_stream) {
                (true, _) => SampleType::I64,
                (false, true) => SampleType::F32,
                (false, false) => SampleType::F64,
            };
            let frames: Vec<Frame> = values
                .chunks_exact(6)
                .enumerate()
                .map(|(i, chunk)| Frame::new(
                    i as i64 * 1_000_000,
                    chunk.iter().map(|&v| round_to_type(v, schema.sample_type)).collect(),
                ))
                .collect();
            let codec = BoundedCodec::new(ErrorBound::Absolute(eb));
            let packet = codec.encode(&schema, &frames).unwrap();
            let decoded = codec.decode(&schema, &Packet::from_bytes(&packet.to_bytes()).unwrap()).unwrap();
            prop_assert_eq!(decoded.len(), frames.len());
            for (a, b) in frames.iter().zip(&decoded) {
                prop_assert_eq!(a.timestamp_ns, b.timestamp_ns);
                for (x, y) in a.values.iter().zip(&b.values) {
                    prop_assert!((x - y).abs() <= eb, "{} -> {} (eb {})", x, y, eb);
                }
            }
        }
    }
}
