//! Columns of integers: how values become integers bit-exactly (representations), how
//! integers are predicted (predictors), and how residuals are coded with a warm-up context.
//! Shared by the lossless and the error-bounded codecs; layouts in `codec/FORMAT.md`.

use crate::divisor::gcd;
use crate::entropy::{
    ResidualContext, ResidualDecoder, ResidualEncoder, bucket_of, bucket_of_quotient, zigzag,
};
use crate::frame::lsb_multiple;
use crate::varint::{Reader, put_uvarint};
use crate::{CodecError, SampleType};

/// Values looked at when estimating a quantum or ranking predictors.
const SAMPLE: usize = 512;
/// Fixed-point precision of fitted predictor coefficients.
const COEFF_BITS: u32 = 12;
/// Largest decimal exponent tried for decimal representations.
const MAX_DECIMAL_DIGITS: u8 = 15;

/// How a column's values become integers, bit-exactly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Representation {
    /// The value is an integer.
    Integer,
    /// The value is `count * lsb` rounded to the sample type (ADC counts).
    LsbCounts,
    /// The order-preserving `f32` bit pattern.
    F32Bits,
    /// The order-preserving `f64` bit pattern: every value has one.
    F64Bits,
    /// The value is `count / 10^digits` (decimal text, as CSV files hold it).
    Decimal(u8),
    /// The value is `count * quantum` rounded to the sample type: an ADC step found in the
    /// data when the schema does not give one.
    Quantum(f64),
}

impl Representation {
    pub(crate) fn tag(self) -> u8 {
        match self {
            Representation::Integer => 0,
            Representation::LsbCounts => 1,
            Representation::F32Bits => 2,
            Representation::F64Bits => 3,
            Representation::Decimal(_) => 4,
            Representation::Quantum(_) => 5,
        }
    }

    /// Converts every value, or `None` if one of them has no exact integer in this form.
    pub(crate) fn to_integers(self, values: &[f64], lsb: f64, ty: SampleType) -> Option<Vec<i64>> {
        // The form is matched once, not per value.
        let step = match self {
            Representation::LsbCounts => lsb,
            Representation::Quantum(q) => q,
            Representation::F32Bits => return values.iter().map(|&x| f32_count(x)).collect(),
            Representation::Integer => {
                return values.iter().map(|&x| as_exact_integer(x)).collect();
            }
            _ => {
                return values
                    .iter()
                    .map(|&x| self.to_integer(x, lsb, ty))
                    .collect();
            }
        };
        let reciprocal = 1.0 / step;
        // Where every count is below 2^51 (an ADC's always are), the counts and then their
        // check in passes without an early exit, which vectorise; a miss fails the whole
        // column either way.
        match nearest_integers_of_small(values, reciprocal) {
            Some(counts) => {
                let exact = values
                    .iter()
                    .zip(&counts)
                    .fold(true, |exact, (&x, &c)| exact & gives_back(c, step, ty, x));
                exact.then_some(counts)
            }
            None => values
                .iter()
                .map(|&x| step_count(x, step, reciprocal, ty))
                .collect(),
        }
    }

    #[inline]
    pub(crate) fn to_integer(self, x: f64, lsb: f64, ty: SampleType) -> Option<i64> {
        match self {
            Representation::Integer => as_exact_integer(x),
            Representation::LsbCounts => step_count(x, lsb, 1.0 / lsb, ty),
            Representation::F32Bits => f32_count(x),
            Representation::F64Bits => Some(ordered_f64(x.to_bits())),
            Representation::Decimal(digits) => {
                let scale = POW10[usize::from(digits)];
                let count = nearest_integer(x * scale).filter(|c| c.unsigned_abs() < 1 << 53)?;
                decimal_gives_back(count, scale, x).then_some(count)
            }
            Representation::Quantum(q) => Representation::LsbCounts.to_integer(x, q, ty),
        }
    }

    pub(crate) fn value_of(self, v: i64, lsb: f64, ty: SampleType) -> Result<f64, CodecError> {
        Ok(match self {
            Representation::Integer => v as f64,
            Representation::LsbCounts => lsb_multiple(v, lsb, ty),
            Representation::F32Bits => f64::from(f32::from_bits(unordered_f32(v)?)),
            Representation::F64Bits => f64::from_bits(unordered_f64(v)),
            Representation::Decimal(digits) => v as f64 / POW10[usize::from(digits)],
            Representation::Quantum(q) => lsb_multiple(v, q, ty),
        })
    }

    /// Writes the value of every integer of `ints` to every `stride`-th slot of `values` from
    /// `start` on (a column of a block, row- or column-major); the form is chosen once, not
    /// per value.
    pub(crate) fn fill_column(
        self,
        ints: &[i64],
        lsb: f64,
        ty: SampleType,
        values: &mut [f64],
        start: usize,
        stride: usize,
    ) -> Result<(), CodecError> {
        let slots = values.iter_mut().skip(start).step_by(stride).zip(ints);
        match self {
            Representation::F32Bits => {
                for (slot, &v) in slots {
                    *slot = f64::from(f32::from_bits(unordered_f32(v)?));
                }
            }
            Representation::LsbCounts | Representation::Quantum(_) => {
                let step = if let Representation::Quantum(q) = self {
                    q
                } else {
                    lsb
                };
                slots.for_each(|(slot, &v)| *slot = lsb_multiple(v, step, ty));
            }
            Representation::Integer => slots.for_each(|(slot, &v)| *slot = v as f64),
            Representation::F64Bits => {
                slots.for_each(|(slot, &v)| *slot = f64::from_bits(unordered_f64(v)))
            }
            Representation::Decimal(digits) => {
                let scale = POW10[usize::from(digits)];
                slots.for_each(|(slot, &v)| *slot = v as f64 / scale)
            }
        }
        Ok(())
    }

    /// The cheapest exact representation of `values`, trying the forms the sample type
    /// allows from most to least compact (each looked for only when the ones before fail).
    /// `hint` is the quantum of the column before, if it had one (see [`detect_quantum`]).
    pub(crate) fn choose(
        values: &[f64],
        ty: SampleType,
        lsb: Option<f64>,
        hint: Option<f64>,
    ) -> (Representation, Vec<i64>) {
        Representation::in_units_above(values, ty, lsb, 0.0, hint)
            .or_else(|| {
                (ty == SampleType::F32)
                    .then(|| Representation::F32Bits.to_integers(values, 1.0, ty))?
                    .map(|ints| (Representation::F32Bits, ints))
            })
            .unwrap_or_else(|| {
                let ints = values.iter().map(|x| ordered_f64(x.to_bits())).collect();
                (Representation::F64Bits, ints)
            })
    }

    /// The first of [`Representation::choose`]'s forms that counts units, where its unit is
    /// wider than `finest`. Finer grids are given up as soon as two values lie closer than
    /// `finest` (a lossy codec quantises those columns on a grid of its own).
    pub(crate) fn in_units_above(
        values: &[f64],
        ty: SampleType,
        lsb: Option<f64>,
        finest: f64,
        hint: Option<f64>,
    ) -> Option<(Representation, Vec<i64>)> {
        let step = lsb.unwrap_or(1.0);
        let exact = |r: Representation| r.to_integers(values, step, ty).map(|ints| (r, ints));
        (finest < 1.0)
            .then(|| exact(Representation::Integer))
            .flatten()
            .or_else(|| match lsb {
                Some(_) => exact(Representation::LsbCounts),
                None if !ty.is_integer() => detect_quantum(values, ty, finest, hint),
                None => None,
            })
            .or_else(|| (ty == SampleType::F64).then(|| decimal_counts(values, finest))?)
            .filter(|(repr, _)| repr.unit(lsb).is_some_and(|u| u > finest))
    }

    /// The size of one count, for the forms that count units (an ADC step's, `lsb`, where
    /// the schema names one).
    pub(crate) fn unit(self, lsb: Option<f64>) -> Option<f64> {
        match self {
            Representation::Integer => Some(1.0),
            Representation::LsbCounts => lsb,
            Representation::Decimal(d) => Some(10f64.powi(-i32::from(d))),
            Representation::Quantum(q) => Some(q),
            Representation::F32Bits | Representation::F64Bits => None,
        }
    }
}

const POW10: [f64; MAX_DECIMAL_DIGITS as usize + 1] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// An ADC step: the `q` for which every value is `round(x / q) * q` rounded to the sample
/// type. The smallest gap between distinct values of a sample estimates it, least squares
/// over the counts refines it, and the exact answer is the intersection, over all values, of
/// the intervals of `q` that round `count * q` to that value (the estimate alone is too
/// coarse once values have been rounded to `f32`). Returns the representation with the
/// counts.
///
/// A short run of consecutive values usually holds two one step apart, and sorting it is
/// cheap; a column where it does not gets the longer look. A sample's estimate is never finer
/// than a larger sample's, so the quick look finds the same step or none.
///
/// `hint`, the quantum of the column before (a lidar's beams, one sensor's axes), is tried
/// first: where it reproduces every value and the counts have no common factor (the column
/// has no coarser step), it refines to what the search would find, without the sort.
fn detect_quantum(
    values: &[f64],
    ty: SampleType,
    finest: f64,
    hint: Option<f64>,
) -> Option<(Representation, Vec<i64>)> {
    if values.len() < 8 {
        return None;
    }
    let (min, max) = finite_extremes(values)?;
    if let Some(found) = hint
        .filter(|&q| q > finest)
        .and_then(|q| exact_quantum(values, q, ty))
        .filter(|(_, counts)| counts_coprime(counts))
    {
        return Some(found);
    }
    for sample in [QUICK_SAMPLE, SAMPLE] {
        // Two values no further apart than `finest` rule out a wider quantum: hashing the
        // sample usually finds two in a fraction of the time it takes to sort it. (Hashing
        // a whole 1000-value column found more pairs in x-io's, for no measurable gain, and
        // made columns without a pair, the flock's pose, 2-3 % slower to encode.)
        if sample > QUICK_SAMPLE
            && finest > 0.0
            && distinct_pair_within(&values[..values.len().min(SAMPLE)], finest)
        {
            return None;
        }
        let Some(estimate) = QuantumEstimate::of(values, ty, sample, min, max) else {
            continue;
        };
        if estimate.gap <= finest {
            return None;
        }
        // A sample's smallest gap is often a few quanta: its whole fractions are tried,
        // coarsest first (a wrong one fails within a few values).
        if let Some(found) = (1..=GAP_FRACTIONS)
            .take_while(|&k| estimate.gap / k as f64 > finest)
            .find_map(|k| exact_quantum(values, estimate.refined(k), ty))
        {
            return Some(found);
        }
    }
    None
}

/// The smallest and largest value, where every value is finite. In four lanes of
/// comparisons a vector instruction makes (`f64::min` also orders NaN, which costs more).
pub(crate) fn finite_extremes(values: &[f64]) -> Option<(f64, f64)> {
    let (mut lo, mut hi) = ([f64::INFINITY; 4], [f64::NEG_INFINITY; 4]);
    let mut nan = [false; 4];
    let mut take = |lane: usize, v: f64| {
        lo[lane] = if v < lo[lane] { v } else { lo[lane] };
        hi[lane] = if v > hi[lane] { v } else { hi[lane] };
        nan[lane] |= v.is_nan();
    };
    let lanes = values.chunks_exact(4);
    let rest = lanes.remainder();
    for four in lanes {
        (0..4).for_each(|lane| take(lane, four[lane]));
    }
    rest.iter().for_each(|&v| take(0, v));
    let min = lo.into_iter().fold(f64::INFINITY, f64::min);
    let max = hi.into_iter().fold(f64::NEG_INFINITY, f64::max);
    (nan == [false; 4] && min.is_finite() && max.is_finite()).then_some((min, max))
}

/// Whether the counts' greatest common divisor is 1 (not 0: all zero).
fn counts_coprime(counts: &[i64]) -> bool {
    let mut divisor = 0;
    for c in counts {
        divisor = gcd(divisor, c.unsigned_abs());
        if divisor == 1 {
            return true;
        }
    }
    false
}

/// Whether two distinct values lie no more than `distance` apart, found by hashing each
/// value's cell (its multiple of `distance`, truncated) into a table that keeps the last value
/// per slot: two such values lie in one cell or in neighbouring ones. A slot shared by two
/// cells forgets one, so a pair may be missed, never made up. Checked every
/// [`PAIR_CHUNK`] values, so that a column with a pair near its start stops early.
fn distinct_pair_within(values: &[f64], distance: f64) -> bool {
    const SLOTS: usize = 1 << 10;
    // NaN never lies within a distance: the empty slots find nothing.
    let mut table = [f64::NAN; SLOTS];
    let reciprocal = 1.0 / distance;
    let near = |d: f64| (d > 0.0) & (d <= distance);
    values.chunks(PAIR_CHUNK).any(|chunk| {
        let mut found = false;
        for &v in chunk {
            // Saturating: cells beyond i64 only share slots, which can miss, never invent.
            let cell = (v * reciprocal) as i64 as usize;
            // Offsets modulo the table: `SLOTS - 1` is the cell below.
            let at = |offset: usize| cell.wrapping_add(offset) % SLOTS;
            found |= near((v - table[at(SLOTS - 1)]).abs())
                | near((v - table[at(0)]).abs())
                | near((v - table[at(1)]).abs());
            table[at(0)] = v;
        }
        found
    })
}

/// Values hashed between looks for a pair (see [`distinct_pair_within`]).
const PAIR_CHUNK: usize = 32;

/// Values sorted for the first estimate of a quantum.
const QUICK_SAMPLE: usize = 64;

/// A sample's smallest gap is tried as 1, 2, ... this many quanta.
const GAP_FRACTIONS: usize = 4;

/// A sample's distinct values, sorted, and the smallest gap between them: a whole number of
/// quanta, if the column has one.
struct QuantumEstimate {
    sorted: Vec<f64>,
    gap: f64,
    /// Where the gap is: between `sorted[at]` and `sorted[at + 1]`.
    at: usize,
    /// An upper bound on any value's rounding to the sample type.
    rounding: f64,
}

impl QuantumEstimate {
    /// The first `sample` values and the extremes (for the longest distance).
    fn of(
        values: &[f64],
        ty: SampleType,
        sample: usize,
        min: f64,
        max: f64,
    ) -> Option<QuantumEstimate> {
        // Sorted as integers that order as the floats do: several times faster than
        // comparing floats.
        let mut keys: Vec<i64> = values
            .iter()
            .take(sample)
            .chain([&min, &max])
            .map(|v| ordered_f64(v.to_bits()))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let sorted: Vec<f64> = keys
            .into_iter()
            .map(|k| f64::from_bits(unordered_f64(k)))
            .collect();
        let (at, gap) = sorted
            .windows(2)
            .map(|w| w[1] - w[0])
            .enumerate()
            .filter(|(_, d)| *d > 0.0)
            .fold(
                (0, f64::INFINITY),
                |best, (i, d)| {
                    if d < best.1 { (i, d) } else { best }
                },
            );
        if !gap.is_finite() || gap <= 0.0 || sorted.iter().any(|v| (v / gap).abs() > 1e12) {
            return None;
        }
        let rounding = min.abs().max(max.abs())
            * match ty {
                SampleType::F32 => f64::from(f32::EPSILON),
                _ => f64::EPSILON,
            };
        Some(QuantumEstimate {
            sorted,
            gap,
            at,
            rounding,
        })
    }

    /// The quantum, taking the gap as `parts` quanta, refined along ever longer distances
    /// from the gap: a distance's relative error shrinks as it grows, while its count of
    /// quanta stays sure as long as the count's error (the count times the estimate's
    /// relative error, at most a value's rounding over the distance before) stays under a
    /// quarter. Values far from the rest (a lidar's zeros for no return, ranges metres away)
    /// wait until the estimate is good enough for them: measured from the smallest value,
    /// they were reached in one jump with a wrong count.
    fn refined(&self, parts: usize) -> f64 {
        let sorted = &self.sorted;
        let base = sorted[self.at];
        let (mut q, mut reach) = (self.gap / parts as f64, self.gap);
        let mut refine = |d: f64| {
            if d < reach * 8.0 {
                return true;
            }
            let n = (d / q).round();
            if n * self.rounding * 4.0 > reach {
                return false;
            }
            if n >= 1.0 {
                q = d / n;
                reach = d;
            }
            true
        };
        // Upward, then downward, each in increasing distance; then the longest distance.
        let _ = sorted[self.at + 1..].iter().all(|&v| refine(v - base))
            && sorted[..self.at].iter().rev().all(|&v| refine(base - v));
        refine(sorted[sorted.len() - 1] - sorted[0]);
        q
    }
}

/// The quantum near `q` that reproduces every value, with the counts, if there is one. The
/// intervals of a sample usually pin it down, and converting every value checks it; only
/// when that fails are all the intervals intersected.
fn exact_quantum(values: &[f64], q: f64, ty: SampleType) -> Option<(Representation, Vec<i64>)> {
    let counts_with = |q: f64| {
        let quantum = Representation::Quantum(q);
        (q > 0.0)
            .then(|| quantum.to_integers(values, 1.0, ty))?
            .map(|counts| (quantum, counts))
    };
    let sample = &values[..values.len().min(SAMPLE)];
    let refined = quantum_interval(sample, q, ty)?;
    // A column no longer than the sample has no more intervals to intersect.
    let longer = values.len() > sample.len();
    counts_with(refined)
        .or_else(|| longer.then(|| counts_with(quantum_interval(values, q, ty)?))?)
        .or_else(|| counts_with(q))
}

/// The middle of the interval of quanta near `q` that reproduce each of `values`, if they
/// have one in common.
fn quantum_interval(values: &[f64], q: f64, ty: SampleType) -> Option<f64> {
    // In magnitudes (a count has its value's sign, and the intervals are symmetric), whose
    // neighbours are one bit pattern away: no branch on the sign, which noise flips at random.
    // One loop per type, so that the choice is not made per value.
    // Zeros (a lidar's no-returns) are skipped by selection, not by a branch, and the
    // intervals are checked for meeting once per chunk: the branches mispredicted wherever
    // zeros and values mix.
    #[inline(always)]
    fn intersect(values: &[f64], q: f64, neighbours: impl Fn(f64) -> (f64, f64)) -> Option<f64> {
        const CHUNK: usize = 32;
        let (mut lo, mut hi) = (0.0f64, f64::INFINITY);
        let reciprocal = 1.0 / q;
        for chunk in values.chunks(CHUNK) {
            let mut below_one_step = false;
            for &x in chunk {
                let magnitude = x.abs();
                let c = round_to_integer(magnitude * reciprocal);
                let zero = c == 0.0;
                // A nonzero value within half a quantum of zero has no count.
                below_one_step |= zero & (x != 0.0);
                let (below, above) = neighbours(magnitude);
                let half_over_c = 0.5 / c;
                // A zero's bounds are the neutral ones (`lo` starts at 0). Compared, not
                // `f64::max`: nothing here is NaN, and ordering NaN lengthened the chain from
                // one value to the next.
                let low = if zero {
                    0.0
                } else {
                    (magnitude + below) * half_over_c
                };
                let high = if zero {
                    f64::INFINITY
                } else {
                    (magnitude + above) * half_over_c
                };
                lo = if low > lo { low } else { lo };
                hi = if high < hi { high } else { hi };
            }
            if below_one_step || lo > hi {
                return None;
            }
        }
        Some((lo + hi) / 2.0)
    }
    match ty {
        SampleType::F32 => intersect(values, q, |m| {
            let bits = (m as f32).to_bits();
            (
                f64::from(f32::from_bits(bits.wrapping_sub(1))),
                f64::from(f32::from_bits(bits + 1)),
            )
        }),
        _ => intersect(values, q, |m| {
            let bits = m.to_bits();
            (
                f64::from_bits(bits.wrapping_sub(1)),
                f64::from_bits(bits + 1),
            )
        }),
    }
}

/// The fewest decimal digits that represent every value exactly, if any do with a unit wider
/// than `finest`, with the counts.
fn decimal_counts(values: &[f64], finest: f64) -> Option<(Representation, Vec<i64>)> {
    let mut digits = 0u8;
    let mut counts = Vec::with_capacity(values.len());
    let mut fours = values.chunks_exact(4);
    for four in fours.by_ref() {
        match decimal_counts_of_four(four, digits) {
            Some(held) => counts.extend_from_slice(&held),
            None => {
                for &x in four {
                    push_decimal_count(&mut counts, &mut digits, x, finest)?;
                }
            }
        }
    }
    for &x in fours.remainder() {
        push_decimal_count(&mut counts, &mut digits, x, finest)?;
    }
    Some((Representation::Decimal(digits), counts))
}

/// The counts of four values at `digits` decimal digits where all four hold there and are
/// below 2^51 units (the common case once a column's digits are found), side by side: the
/// divisions that check them vectorise.
#[inline(always)]
fn decimal_counts_of_four(four: &[f64], digits: u8) -> Option<[i64; 4]> {
    let scale = POW10[usize::from(digits)];
    let x: [f64; 4] = four.try_into().ok()?;
    let scaled = x.map(|v| v * scale);
    if !scaled
        .iter()
        .fold(true, |small, s| small & (s.abs() < SHIFTABLE))
    {
        return None;
    }
    let counts = scaled.map(nearest_of_shiftable);
    let held = counts.iter().zip(&x).fold(true, |held, (&c, &v)| {
        held & decimal_gives_back(c, scale, v)
    });
    held.then_some(counts)
}

/// Whether `count` units of `1 / scale` (a power of ten) are `x` bit for bit. Division by an
/// exact power of ten is correctly rounded, so it reproduces the double nearest to the
/// decimal text, which is what a parser produced.
#[inline(always)]
fn decimal_gives_back(count: i64, scale: f64, x: f64) -> bool {
    (count as f64 / scale).to_bits() == x.to_bits()
}

/// Pushes the count of `x` at `digits` decimal digits, first adding digits (and rescaling
/// the counts before) until `x` holds; None where it holds at none wider than `finest`.
fn push_decimal_count(counts: &mut Vec<i64>, digits: &mut u8, x: f64, finest: f64) -> Option<()> {
    let count = loop {
        if let Some(count) = Representation::Decimal(*digits).to_integer(x, 1.0, SampleType::F64) {
            break count;
        }
        *digits += 1;
        if *digits > MAX_DECIMAL_DIGITS || POW10[usize::from(*digits)] * finest >= 1.0 {
            return None;
        }
        // The values before hold at the extra digit too: `c / 10^d` and `10 c / 10^(d+1)`
        // are the same decimal, so they round to the same double.
        for c in counts.iter_mut() {
            *c = i64::checked_mul(*c, 10).filter(|c| c.unsigned_abs() < 1 << 53)?;
        }
    };
    counts.push(count);
    Some(())
}

/// `x` rounded to an integer (ties either way), inline: without SSE4.1 `f64::round` is a
/// library call, and the conversions that use this check their results anyway. Below 2^51
/// in magnitude, adding 1.5 * 2^52 rounds `x` into the sum's low mantissa bits (two
/// additions, where converting to an integer and back waits twice as long).
#[inline(always)]
fn round_to_integer(x: f64) -> f64 {
    if x.abs() < SHIFTABLE {
        (x + SHIFTER) - SHIFTER
    } else if x.abs() < (1u64 << 52) as f64 {
        let truncated = x as i64;
        let fraction = x - truncated as f64;
        (truncated + i64::from(fraction >= 0.5) - i64::from(fraction <= -0.5)) as f64
    } else {
        // Integral already, infinite or not a number.
        x
    }
}

/// 1.5 * 2^52: added to a number below 2^51 in magnitude, it leaves that number rounded to
/// an integer in the low mantissa bits.
const SHIFTER: f64 = 6_755_399_441_055_744.0;
/// 2^51: below it in magnitude, [`SHIFTER`] rounds.
const SHIFTABLE: f64 = (1u64 << 51) as f64;

/// `x`, below [`SHIFTABLE`] in magnitude, rounded to the nearest integer (ties either way).
#[inline(always)]
fn nearest_of_shiftable(x: f64) -> i64 {
    (x + SHIFTER).to_bits() as i64 - SHIFTER.to_bits() as i64
}

/// [`nearest_integer`] of every value times `scale`, where every product is below 2^51 in
/// magnitude (None otherwise): in two passes without an early exit, so that both vectorise
/// (collected into an `Option<Vec>`, each value stops to be checked).
pub(crate) fn nearest_integers_of_small(values: &[f64], scale: f64) -> Option<Vec<i64>> {
    let small = values
        .iter()
        .fold(true, |small, &x| small & ((x * scale).abs() < SHIFTABLE));
    small.then(|| {
        values
            .iter()
            .map(|&x| nearest_of_shiftable(x * scale))
            .collect()
    })
}

/// The integer nearest `x` (ties either way), if an `i64` holds it, by the same addition
/// (SSE2 converts to integers only by truncating).
#[inline(always)]
pub(crate) fn nearest_integer(x: f64) -> Option<i64> {
    if x.abs() < SHIFTABLE {
        Some(nearest_of_shiftable(x))
    } else {
        as_exact_integer(round_to_integer(x))
    }
}

/// The count of `step` that `x` is exactly (the count times the step, rounded to the sample
/// type, gives `x` back), from `reciprocal = 1 / step`: multiplying instead of dividing may
/// only move a quotient that is not near an integer, and the count is checked anyway.
#[inline]
fn step_count(x: f64, step: f64, reciprocal: f64, ty: SampleType) -> Option<i64> {
    let count = nearest_integer(x * reciprocal)?;
    gives_back(count, step, ty, x).then_some(count)
}

/// Whether `count` steps, rounded to the sample type, are `x` bit for bit.
#[inline(always)]
fn gives_back(count: i64, step: f64, ty: SampleType, x: f64) -> bool {
    lsb_multiple(count, step, ty).to_bits() == x.to_bits()
}

/// The order-preserving integer of `x`'s `f32` bit pattern, if `x` is an `f32`.
#[inline(always)]
fn f32_count(x: f64) -> Option<i64> {
    let narrow = x as f32;
    (f64::from(narrow).to_bits() == x.to_bits()).then(|| ordered_f32(narrow.to_bits()))
}

#[inline(always)]
fn as_exact_integer(x: f64) -> Option<i64> {
    let i = x as i64;
    ((i as f64).to_bits() == x.to_bits()).then_some(i)
}

pub(crate) fn ordered_f64(bits: u64) -> i64 {
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    };
    (ordered ^ 1 << 63) as i64
}

pub(crate) fn unordered_f64(value: i64) -> u64 {
    let ordered = (value as u64) ^ 1 << 63;
    if ordered >> 63 == 1 {
        ordered & !(1 << 63)
    } else {
        !ordered
    }
}

fn ordered_f32(bits: u32) -> i64 {
    let ordered = if bits >> 31 == 1 {
        !bits
    } else {
        bits | 1 << 31
    };
    i64::from(ordered) - (1 << 31)
}

fn unordered_f32(value: i64) -> Result<u32, CodecError> {
    let ordered = value
        .checked_add(1 << 31)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or(CodecError::Corrupt("f32 column value out of range"))?;
    Ok(if ordered >> 31 == 1 {
        ordered & !(1 << 31)
    } else {
        !ordered
    })
}

/// Longest fitted predictor.
pub(crate) const MAX_ORDER: usize = 16;

/// How each integer of a column is predicted from the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Predictor {
    Zero,
    Previous,
    /// `2 x[i-1] - x[i-2]`.
    Linear,
    /// `intercept + (sum_j coeffs[j] x[i-1-j]) / 2^12` over `order` past values, fitted per
    /// block by least squares (order 3 to follow the signal, longer ones to average noise
    /// out of a bounded codec's reconstruction).
    Fitted {
        order: u8,
        coeffs: [i16; MAX_ORDER],
        intercept: i64,
    },
}

/// The values before the current one, newest first.
pub(crate) type History = [i64; MAX_ORDER];

/// What a predictor looks back on: the synthetic history, oldest first, then every value of
/// the column so far. Predicting reads the window at its end, so nothing shifts per value.
pub(crate) struct Past {
    values: Vec<i64>,
    /// One past the last value that is not [`is_small`] (0 for none): a window that ends
    /// `MAX_ORDER` or more values after it takes the 64-bit prediction without checking.
    large_end: usize,
}

impl Past {
    pub(crate) fn new(history: &History, capacity: usize) -> Past {
        let mut past = Past {
            values: Vec::with_capacity(MAX_ORDER + capacity),
            large_end: 0,
        };
        past.extend(history.iter().rev().copied());
        past
    }

    /// The history followed by a whole column.
    fn of(history: &History, column: &[i64]) -> Past {
        let mut past = Past::new(history, column.len());
        past.extend(column.iter().copied());
        past
    }

    fn extend(&mut self, values: impl Iterator<Item = i64>) {
        for x in values {
            self.push(x);
        }
    }

    #[inline(always)]
    pub(crate) fn push(&mut self, x: i64) {
        self.values.push(x);
        if !is_small(x) {
            self.large_end = self.values.len();
        }
    }

    #[inline(always)]
    pub(crate) fn predict(&self, predictor: Predictor) -> i64 {
        let (window, known_small) = self.window();
        predictor.predict_within(window, known_small)
    }

    /// The last `MAX_ORDER` values, and whether every one [`is_small`].
    #[inline(always)]
    fn window(&self) -> (&[i64; MAX_ORDER], bool) {
        let end = self.values.len();
        let window: &[i64; MAX_ORDER] = self.values[end - MAX_ORDER..]
            .try_into()
            .expect("the history keeps MAX_ORDER values");
        (window, end >= self.large_end + MAX_ORDER)
    }

    /// The column's values, the history left out.
    pub(crate) fn into_values(mut self) -> Vec<i64> {
        self.values.split_off(MAX_ORDER)
    }
}

impl Predictor {
    pub(crate) fn tag(self) -> u8 {
        match self {
            Predictor::Zero => 0,
            Predictor::Previous => 1,
            Predictor::Linear => 2,
            Predictor::Fitted { .. } => 3,
        }
    }

    /// Samples at the start of a block whose prediction leans on the synthetic history.
    pub(crate) fn warmup(self) -> usize {
        match self {
            Predictor::Fitted { order, .. } => usize::from(order),
            other => other.tag() as usize,
        }
    }

    /// The prediction from `h`, newest first.
    #[cfg(test)]
    pub(crate) fn predict(self, h: &History) -> i64 {
        let mut window = *h;
        window.reverse();
        self.predict_from(&window)
    }

    /// The prediction from the last `MAX_ORDER` values, oldest first.
    #[inline(always)]
    pub(crate) fn predict_from(self, window: &[i64; MAX_ORDER]) -> i64 {
        self.predict_within(window, false)
    }

    /// The prediction from the last three values, newest first, where every value is
    /// [`is_small`] (the fitted orders up to three; the decoder's prediction from the same
    /// values).
    #[inline(always)]
    pub(crate) fn predict_short(self, last: [i64; 3]) -> i64 {
        let mut window = [0; MAX_ORDER];
        window[MAX_ORDER - 3..].copy_from_slice(&[last[2], last[1], last[0]]);
        self.predict_within(&window, true)
    }

    /// The intercept of a fitted predictor (0 for the others).
    pub(crate) fn intercept(self) -> i64 {
        match self {
            Predictor::Fitted { intercept, .. } => intercept,
            _ => 0,
        }
    }

    /// [`Predictor::predict_from`] where `known_small` says that every value of the window
    /// [`is_small`] (otherwise the values a fitted prediction uses are checked).
    #[inline(always)]
    fn predict_within(self, window: &[i64; MAX_ORDER], known_small: bool) -> i64 {
        let newest = MAX_ORDER - 1;
        match self {
            Predictor::Zero => 0,
            Predictor::Previous => window[newest],
            Predictor::Linear => window[newest]
                .wrapping_mul(2)
                .wrapping_sub(window[newest - 1]),
            Predictor::Fitted {
                order,
                coeffs,
                intercept,
            } => match order {
                // The orders the encoders fit get code of their own (unrolled loops).
                3 => fitted_prediction::<3>(window, &coeffs, intercept, known_small),
                12 => fitted_prediction::<12>(window, &coeffs, intercept, known_small),
                _ => fitted_prediction_of_order(
                    window,
                    &coeffs,
                    intercept,
                    usize::from(order),
                    known_small,
                ),
            },
        }
    }

    pub(crate) fn write_parameters(self, out: &mut Vec<u8>) {
        if let Predictor::Fitted {
            order,
            coeffs,
            intercept,
        } = self
        {
            out.push(order);
            for c in &coeffs[..usize::from(order)] {
                out.extend_from_slice(&c.to_le_bytes());
            }
            put_uvarint(out, zigzag(intercept));
        }
    }

    pub(crate) fn read(tag: u8, reader: &mut Reader<'_>) -> Result<Predictor, CodecError> {
        Ok(match tag {
            0 => Predictor::Zero,
            1 => Predictor::Previous,
            2 => Predictor::Linear,
            3 => {
                let order = reader.u8()?;
                if !(1..=MAX_ORDER as u8).contains(&order) {
                    return Err(CodecError::Corrupt("fitted predictor order outside 1..=16"));
                }
                let mut coeffs = [0i16; MAX_ORDER];
                for c in &mut coeffs[..usize::from(order)] {
                    *c = i16::from_le_bytes(reader.array()?);
                }
                let intercept = crate::entropy::unzigzag(reader.uvarint()?);
                Predictor::Fitted {
                    order,
                    coeffs,
                    intercept,
                }
            }
            _ => return Err(CodecError::Corrupt("unknown predictor")),
        })
    }

    /// Least-squares predictor of order `order` for `values` from their own past.
    pub(crate) fn fit(values: &[i64], history: &History, order: usize) -> Option<Predictor> {
        Predictor::fit_from(values, values, history, order)
    }

    /// Least-squares predictor of `targets[i]` from `inputs[i - 1]`, `inputs[i - 2]`, ...
    /// (`history` before the first): a bounded codec fits its targets to its own
    /// reconstruction, which is what the decoder will predict from. Orders 3 and 12, the ones
    /// the encoders use, are fitted (the decoder takes any order up to 16).
    pub(crate) fn fit_from(
        targets: &[i64],
        inputs: &[i64],
        history: &History,
        order: usize,
    ) -> Option<Predictor> {
        Predictor::fit_against(targets, inputs, history, order, None).map(|fit| fit.predictor)
    }

    /// [`Predictor::fit_from`], with what the fit promises over `incumbent`, the predictor it
    /// would replace on the same targets and inputs ([`Fit::promised_bits`]).
    pub(crate) fn fit_against(
        targets: &[i64],
        inputs: &[i64],
        history: &History,
        order: usize,
        incumbent: Option<Predictor>,
    ) -> Option<Fit> {
        if targets.len() < 16.max(4 * order) || inputs.len() != targets.len() || order > MAX_ORDER {
            return None;
        }
        // The orders in use get code of their own: the loops unroll and vectorise.
        match order {
            3 => fit_of_order::<3>(targets, inputs, history, incumbent),
            12 => fit_of_order::<12>(targets, inputs, history, incumbent),
            _ => None,
        }
    }

    /// The weights by lag (1 first) of a predictor of order up to `N`, and its intercept,
    /// in units: the prediction is `intercept + sum_k weights[k] x[i - 1 - k]` (before a
    /// fitted predictor's rounding).
    fn weights<const N: usize>(self) -> Option<([f64; N], f64)> {
        let mut weights = [0.0; N];
        let intercept = match self {
            Predictor::Zero => 0.0,
            Predictor::Previous => {
                *weights.first_mut()? = 1.0;
                0.0
            }
            Predictor::Linear => {
                weights.get_mut(..2)?.copy_from_slice(&[2.0, -1.0]);
                0.0
            }
            Predictor::Fitted {
                order,
                coeffs,
                intercept,
            } => {
                let scale = f64::from(1u32 << COEFF_BITS);
                for (w, &c) in weights
                    .get_mut(..usize::from(order))?
                    .iter_mut()
                    .zip(&coeffs)
                {
                    *w = f64::from(c) / scale;
                }
                intercept as f64
            }
        };
        Some((weights, intercept))
    }
}

/// A least-squares predictor and what it promises over the one it would replace.
pub(crate) struct Fit {
    pub(crate) predictor: Predictor,
    /// The bits the fit would save over the incumbent if residuals were coded at high rate:
    /// half a bit a value for each halving of their sum of squares (the fit's and the
    /// incumbent's, both from the normal equations). An upper estimate where most residuals
    /// fall in the zero step (a bounded codec at one noise sigma): there, narrower residuals
    /// save less. `None` without an incumbent, for one longer than the fit, or where the
    /// sums do not tell (a fit that leaves no residual, or rounding that cancelled
    /// everything).
    pub(crate) promised_bits: Option<f64>,
}

/// [`Predictor::fit_against`] at order `N`.
fn fit_of_order<const N: usize>(
    targets: &[i64],
    inputs: &[i64],
    history: &History,
    incumbent: Option<Predictor>,
) -> Option<Fit> {
    // The first `N` targets, whose lags reach into the history (for a value column
    // zeros), are left out of the squares (`normal_equations` skips them) and of the
    // mean and the intercept: centred over them, the residuals of a 16,190-unit battery
    // voltage after them were all off by about 3 x 16,190 / 1000 units, five
    // quantisation steps at one sigma.
    // Summed exactly (an integer add per value, where a float sum is a chain of adds).
    let targets_sum: i128 = targets[N..].iter().map(|&v| i128::from(v)).sum();
    let mean = targets_sum as f64 / (targets.len() - N) as f64;
    // The inputs after their history, oldest first, centred: the values lag 1, 2, ...
    // before target `i` are `past[MAX_ORDER + i - 1]`, `past[MAX_ORDER + i - 2]`, ...
    let past: Vec<f64> = history
        .iter()
        .rev()
        .chain(inputs)
        .map(|&v| v as f64 - mean)
        .collect();
    let equations = crate::entropy::with_cpu_features(
        #[inline(always)]
        || normal_equations::<N>(targets, &past, mean),
    );
    let c = solve((equations.a, equations.b))?;
    let limit = f64::from(i16::MAX) / f64::from(1u32 << COEFF_BITS);
    if c.iter().any(|v| !v.is_finite() || v.abs() >= limit) {
        return None;
    }
    let mut coeffs = [0i16; MAX_ORDER];
    for (q, v) in coeffs.iter_mut().zip(&c) {
        *q = (v * f64::from(1u32 << COEFF_BITS)).round() as i16;
    }
    let intercept = centring_intercept(
        targets_sum,
        &inputs[N..],
        &history_before(N, inputs, history),
        &coeffs[..N],
    );
    let predictor = Predictor::Fitted {
        order: N as u8,
        coeffs,
        intercept,
    };
    // Priced with its rounded coefficients: on a slow signal far from zero (a robot's
    // position in fine units) rounding made some order-12 fits far worse than the order-3
    // fit they would replace.
    let promised_bits = incumbent.and_then(|incumbent| {
        let ratio = equations.squares(incumbent)? / equations.squares(predictor)?;
        (ratio.is_finite() && ratio > 0.0).then(|| equations.targets / 2.0 * ratio.log2())
    });
    Some(Fit {
        predictor,
        promised_bits,
    })
}

/// The least-squares normal equations `A c = b` of order `N`, with what else prices any
/// predictor over the same lags and targets ([`NormalEquations::squares`]).
struct NormalEquations<const N: usize> {
    a: [[f64; N]; N],
    b: [f64; N],
    /// The centred targets' sum of squares, their count and the mean they are centred on.
    yy: f64,
    targets: f64,
    mean: f64,
}

impl<const N: usize> NormalEquations<N> {
    /// The residual sum of squares of `predictor` (before its rounding), `y'y - 2 w'b +
    /// w'Aw` for its weights `w` on the centred values, plus the square of the offset the
    /// centring leaves it; `None` for one longer than `N`.
    fn squares(&self, predictor: Predictor) -> Option<f64> {
        let dot = |u: &[f64; N], v: &[f64; N]| u.iter().zip(v).map(|(x, y)| x * y).sum::<f64>();
        let (w, intercept) = predictor.weights::<N>()?;
        let offset = self.mean * (1.0 - w.iter().sum::<f64>()) - intercept;
        let aw: [f64; N] = std::array::from_fn(|r| dot(&self.a[r], &w));
        Some(self.yy - 2.0 * dot(&w, &self.b) + dot(&w, &aw) + self.targets * offset * offset)
    }
}

/// The history of the value `skip` places into `inputs`, newest first: the inputs before
/// it, then `history`.
fn history_before(skip: usize, inputs: &[i64], history: &History) -> History {
    std::array::from_fn(|j| {
        if j < skip {
            inputs[skip - 1 - j]
        } else {
            history[j - skip]
        }
    })
}

/// The intercept that centres the residuals of `coeffs` (scaled by `2^COEFF_BITS`): the
/// targets' sum less the coefficients times the sums of the inputs at each lag, in exact
/// integer arithmetic, the mean truncated toward zero. Leaving out each prediction's rounding
/// (to nearest, half a unit at most, as often up as down) takes a sum over the block instead
/// of a prediction per target (the bench's bounded IMU encode: 70 -> 76 MB/s). Rounding the mean to
/// nearest instead measured 0.3 % bigger on one 60 s flock IMU at one sigma and 0.05 %
/// smaller on two others: where units are coarse, half a unit of offset moves sizes either way.
fn centring_intercept(targets_sum: i128, inputs: &[i64], history: &History, coeffs: &[i16]) -> i64 {
    let n = inputs.len();
    // The history newest first, then the inputs: `before(j)` is the input `j` places before
    // target 0 (1 = newest history value), for j up to MAX_ORDER.
    let before = |j: usize| history[j - 1];
    let wide = |v: i64| i128::from(v);
    // Sum of the inputs one place before each target: the newest history value and every
    // input but the last; each further lag takes on one older value and drops the newest.
    let mut lag_sum: i128 =
        wide(before(1)) + inputs[..n - 1].iter().map(|&v| wide(v)).sum::<i128>();
    let mut predicted: i128 = 0;
    for (k, &c) in coeffs.iter().enumerate() {
        if k > 0 {
            lag_sum += wide(before(k + 1)) - wide(inputs[n - 1 - k]);
        }
        predicted += i128::from(c) * lag_sum;
    }
    let offset = (targets_sum << COEFF_BITS) - predicted;
    let denominator = (n as i128) << COEFF_BITS;
    (offset / denominator).clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// Below this in magnitude, a fitted prediction's products and sums are exact in an `f64`:
/// sixteen coefficients below 2^15 times values below 2^33 sum to under 2^52.
pub(crate) const EXACT_IN_FLOAT: i64 = 1 << 33;

/// A fitted predictor of order `N` made in floating point: the same predictions as the
/// integer arithmetic where every value of the window is below [`EXACT_IN_FLOAT`] (each
/// product and partial sum is then an integer an `f64` holds exactly, so neither rounding
/// nor the order of the additions changes the sum).
pub(crate) struct FloatFitted<const N: usize> {
    coeffs: [f64; N],
    /// The two newest values' coefficients.
    newest: [i64; 2],
    /// The intercept and the rounding, as a sum before the scaling.
    bias: f64,
}

impl<const N: usize> FloatFitted<N> {
    /// `predictor`'s coefficients (zeros for one that is not fitted). Exact where the
    /// intercept is below 2^40 as well.
    pub(crate) fn new(predictor: Predictor) -> Self {
        let (coeffs, intercept) = match predictor {
            Predictor::Fitted {
                coeffs, intercept, ..
            } => (coeffs, intercept),
            _ => ([0; MAX_ORDER], 0),
        };
        FloatFitted {
            coeffs: std::array::from_fn(|k| f64::from(coeffs[k])),
            newest: [i64::from(coeffs[0]), i64::from(coeffs[1])],
            // (s + 2^11) >> 12 plus the intercept is (s + 2^11 + 2^12 intercept) >> 12.
            bias: (1 << (COEFF_BITS - 1)) as f64 + intercept as f64 * (1 << COEFF_BITS) as f64,
        }
    }

    /// The prediction from the last `N` values, oldest first (as floats), the two newest
    /// also as integers, newest first. A prediction waits on the values just made: those two
    /// are taken in integers (a multiplication and an addition each, as in the integer
    /// arithmetic), the older ones in floating point, oldest first, so that the conversion
    /// and the additions of the third newest finish within the two steps before it is used.
    #[inline(always)]
    pub(crate) fn predict(&self, window: &[f64; N], newest: [i64; 2]) -> i64 {
        // Four running sums: one would chain every addition on the last.
        let mut sums = [self.bias, 0.0, 0.0, 0.0];
        for k in (2..N).rev() {
            sums[k % 4] += self.coeffs[k] * window[N - 1 - k];
        }
        let older = ((sums[0] + sums[1]) + (sums[2] + sums[3])) as i64;
        (older + self.newest[1] * newest[1] + self.newest[0] * newest[0]) >> COEFF_BITS
    }
}

/// A fitted prediction of order `N` from the last `MAX_ORDER` values, oldest first.
#[inline(always)]
fn fitted_prediction<const N: usize>(
    window: &[i64; MAX_ORDER],
    coeffs: &[i16; MAX_ORDER],
    intercept: i64,
    known_small: bool,
) -> i64 {
    fitted_prediction_of_order(window, coeffs, intercept, N, known_small)
}

/// Below 2^43 in magnitude each product of a value and a coefficient is under 2^58 and the
/// sum of sixteen fits an `i64`: the same result as the 128-bit arithmetic, several times
/// faster.
#[inline(always)]
fn is_small(x: i64) -> bool {
    const SMALL: i64 = 1 << 43;
    (-SMALL..SMALL).contains(&x)
}

#[inline(always)]
fn fitted_prediction_of_order(
    window: &[i64; MAX_ORDER],
    coeffs: &[i16; MAX_ORDER],
    intercept: i64,
    order: usize,
    known_small: bool,
) -> i64 {
    let past = window.iter().rev().take(order);
    if known_small || past.clone().all(|&x| is_small(x)) {
        let sum: i64 = coeffs
            .iter()
            .zip(past)
            .map(|(&c, &x)| i64::from(c) * x)
            .sum();
        let scaled = (sum + (1 << (COEFF_BITS - 1))) >> COEFF_BITS;
        return scaled.saturating_add(intercept);
    }
    let sum: i128 = coeffs
        .iter()
        .zip(past)
        .map(|(&c, &x)| i128::from(c) * i128::from(x))
        .sum();
    let scaled = (sum + (1 << (COEFF_BITS - 1))) >> COEFF_BITS;
    let p = scaled + i128::from(intercept);
    p.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// The least-squares normal equations `A c = b` for predicting each centred target from the
/// `N` centred values before it (`past`: the history and inputs, oldest first), as rows.
///
/// `A[r][c]` sums the products of the inputs `r + 1` and `c + 1` before each target; one
/// row further down and to the right is the same sum one target earlier, so only row 0 is
/// summed over the block and the rest follows by adding the product that enters and taking
/// off the one that leaves: 2N products per target instead of N(N + 1).
#[inline(always)]
fn normal_equations<const N: usize>(
    targets: &[i64],
    past: &[f64],
    mean: f64,
) -> NormalEquations<N> {
    // The input `lag` values before target `i`.
    let input = |i: usize, lag: usize| past[MAX_ORDER + i - lag];
    let window = |i: usize| -> &[f64; N] {
        past[MAX_ORDER + i - N..MAX_ORDER + i]
            .try_into()
            .expect("a window of N values")
    };
    // Summed by position in the window (oldest first), which a vector loads whole: lag
    // `c + 1` is position `N - 1 - c`. Each sum still adds its products in target order, so
    // it is the same, to the bit, as summed lag by lag.
    let mut b_by_position = [0.0f64; N];
    let mut first_row_by_position = [0.0f64; N];
    let mut yy = 0.0;
    for (i, &y) in targets.iter().enumerate().skip(N) {
        let y = y as f64 - mean;
        yy += y * y;
        let window = window(i);
        let newest = window[N - 1];
        for d in 0..N {
            b_by_position[d] += window[d] * y;
            first_row_by_position[d] += window[d] * newest;
        }
    }
    let b: [f64; N] = std::array::from_fn(|c| b_by_position[N - 1 - c]);
    let first_row: [f64; N] = std::array::from_fn(|c| first_row_by_position[N - 1 - c]);
    let mut a = [[0.0f64; N]; N];
    a[0] = first_row;
    for (row, &sum) in a.iter_mut().zip(&first_row).skip(1) {
        row[0] = sum;
    }
    let last = targets.len() - 1;
    for r in 1..N {
        for c in r..N {
            // Targets N..=last for row r, c are targets N-1..=last-1 for row r-1, c-1.
            let sum = a[r - 1][c - 1] + input(N - 1, r) * input(N - 1, c)
                - input(last, r) * input(last, c);
            a[r][c] = sum;
            a[c][r] = sum;
        }
    }
    NormalEquations {
        a,
        b,
        yy,
        targets: (targets.len() - N) as f64,
        mean,
    }
}

/// Gaussian elimination with partial pivoting.
fn solve<const N: usize>((mut a, mut b): ([[f64; N]; N], [f64; N])) -> Option<[f64; N]> {
    for col in 0..N {
        let pivot = (col..N).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-9 * (1.0 + a[col][col].abs()) {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let pivot_row = a[col];
        for row in col + 1..N {
            let f = a[row][col] / pivot_row[col];
            for (cell, p) in a[row][col..].iter_mut().zip(&pivot_row[col..]) {
                *cell -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = [0.0; N];
    for row in (0..N).rev() {
        let s: f64 = (row + 1..N).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Some(x)
}

/// The residuals of `values` under `predictor`, starting from `history`.
pub(crate) fn residuals(values: &[i64], predictor: Predictor, history: History) -> Vec<i64> {
    let mut out = Vec::with_capacity(values.len());
    for_each_residual(&Past::of(&history, values), predictor, |r| out.push(r));
    out
}

/// Gives `f` each residual of the values after the history in `past`, in order. The simple
/// predictors get loops of their own (no window, no choice per value).
#[inline(always)]
fn for_each_residual(past: &Past, predictor: Predictor, mut f: impl FnMut(i64)) {
    let v = &past.values;
    let current = &v[MAX_ORDER..];
    let before = |lag: usize| &v[MAX_ORDER - lag..];
    match predictor {
        Predictor::Zero => current.iter().for_each(|&x| f(x)),
        Predictor::Previous => current
            .iter()
            .zip(before(1))
            .for_each(|(&x, &p)| f(x.wrapping_sub(p))),
        Predictor::Linear => current
            .iter()
            .zip(before(1).iter().zip(before(2)))
            .for_each(|(&x, (&p1, &p2))| f(x.wrapping_sub(p1.wrapping_mul(2).wrapping_sub(p2)))),
        // Every value small (as a column's usually are): the order-3 fit from its last three
        // values in registers, without checks.
        Predictor::Fitted { order: 3, .. } if past.large_end == 0 => current
            .iter()
            .zip(before(1).iter().zip(before(2).iter().zip(before(3))))
            .for_each(|(&x, (&p1, (&p2, &p3)))| {
                f(x.wrapping_sub(predictor.predict_short([p1, p2, p3])))
            }),
        Predictor::Fitted { .. } => v.windows(MAX_ORDER + 1).for_each(|w| {
            let (window, current) = w.split_at(MAX_ORDER);
            let window: &[i64; MAX_ORDER] = window.try_into().expect("MAX_ORDER values");
            f(current[0].wrapping_sub(predictor.predict_from(window)))
        }),
    }
}

/// Rough code length in bits of `predictor`'s residuals, enough to rank predictors.
fn cost(past: &Past, predictor: Predictor) -> u64 {
    let mut bits = 0;
    for_each_residual(past, predictor, |r| bits += residual_bits(r));
    bits
}

/// A residual's rough code length: its bucket and one bit.
#[inline(always)]
pub(crate) fn residual_bits(r: i64) -> u64 {
    u64::from(64 - zigzag(r).leading_zeros()) + 1
}

/// The cheapest predictor for `values`, fitted one included (charged for its parameters).
/// Long columns are judged on their first `SAMPLE` values.
pub(crate) fn choose_predictor(values: &[i64], history: History) -> Predictor {
    choose_predictor_and_cost(values, history).0
}

/// [`choose_predictor`] and its rough cost over the sample it was judged on (its first
/// [`SAMPLE`] values).
pub(crate) fn choose_predictor_and_cost(values: &[i64], history: History) -> (Predictor, u64) {
    let values = &values[..values.len().min(SAMPLE)];
    let past = Past::of(&history, values);
    let mut best = (Predictor::Previous, u64::MAX);
    // Every residual zero is the least cost there is (a bit each): the candidates after can
    // only tie, and ties go to the first. Regular timestamps stop at the linear one, before
    // the fit.
    let least = values.len() as u64;
    for p in [Predictor::Zero, Predictor::Previous, Predictor::Linear] {
        let c = cost(&past, p);
        if c < best.1 {
            best = (p, c);
        }
        if c == least {
            return best;
        }
    }
    if let Some(fitted) = Predictor::fit(values, &history, 3) {
        let c = cost(&past, fitted) + 64;
        if c < best.1 {
            best = (fitted, c);
        }
    }
    best
}

/// Codes a column's residuals: the warm-up samples in a context of their own, so that the
/// large first residuals do not distort the model of the rest, and the rest from `rest`
/// (fresh, or what the channel before left: [`starting_context`]), each beside its
/// [`activity`] where the column is predicted from the channel before (`activities`, one per
/// residual). Returns the context the rest leaves.
pub(crate) fn encode_residuals(
    encoder: &mut ResidualEncoder,
    mut residuals: impl Iterator<Item = i64>,
    activities: Option<&[u32]>,
    warmup: usize,
    rest: ResidualContext,
) -> ResidualContext {
    crate::entropy::with_cpu_features(
        #[inline(always)]
        || {
            // One context per phase, a local of its own, so that it stays in registers (a
            // choice per residual would keep it in memory).
            let mut first = ResidualContext::default();
            let mut coded = 0;
            for r in residuals.by_ref().take(warmup) {
                encoder.encode(&mut first, r);
                coded += 1;
            }
            let mut ctx = rest;
            debug_assert!(activities.is_none_or(|a| a.len() == coded + residuals.size_hint().0));
            match activities {
                // A loop, not `for_each`: the iterator's fold would be a function of its
                // own, compiled without the CPU's features.
                None => {
                    for r in residuals {
                        encoder.encode(&mut ctx, r);
                    }
                }
                Some(activities) => {
                    let activity_at = |i: usize| activities.get(i).copied().unwrap_or(0);
                    let mut chosen = ctx.choose_beside(activity_at(coded));
                    for (i, r) in (coded..).zip(residuals) {
                        encoder.encode_beside(&mut ctx, &mut chosen, r, activity_at(i + 1));
                    }
                }
            }
            ctx
        },
    )
}

/// The context a column's residuals after its warm-up start from: where it is predicted
/// from the channel before (the neighbour median), the one that channel left in `carried`
/// (its models and running mean), else a fresh one. The two channels' residuals are alike (a
/// lidar's beams), and a fresh context learns its distributions again in every column (at
/// one sigma, 3.8 % of the bench's bounded lidar indices; 0.9 % of its lossless residuals).
/// Inheriting along every channel after one in the same unit was measured too: the bench's
/// IMU lost 0.03 % lossless and 0.4 % bounded, its motors gained 0.4 %.
pub(crate) fn starting_context(
    from_neighbour: bool,
    carried: &mut ResidualContext,
) -> ResidualContext {
    if from_neighbour {
        std::mem::take(carried)
    } else {
        ResidualContext::default()
    }
}

/// Whether a column counted in `unit` may be predicted from a neighbour counted in
/// `neighbour_unit` (both the same, but for the last digits that quanta detected in two
/// columns differ in): a neighbour in other units (an accelerometer beside a gyroscope)
/// would only be tried and lost.
pub(crate) fn same_unit(unit: Option<f64>, neighbour_unit: f64) -> bool {
    unit.is_some_and(|unit| (unit - neighbour_unit).abs() <= unit * 1e-9)
}

/// LOCO-I's (JPEG-LS) median edge detector over a column and the channel before it, seen
/// as an image whose rows are the samples: the prediction of `x[t]` from `west = y[t]`,
/// `north = x[t - 1]` and `north_west = y[t - 1]` (`y` the channel before). It follows an
/// edge in either direction and the plane `west + north - north_west` elsewhere: a lidar
/// beam's range moves as its neighbour's did while the robot drives, and jumps where the
/// neighbour jumped as an edge sweeps across the beams. Written as the plane clamped between
/// `west` and `north`, which is the detector's three cases where the plane does not wrap,
/// and takes no branch.
#[inline(always)]
pub(crate) fn neighbour_median(west: i64, north: i64, north_west: i64) -> i64 {
    let plane = west.wrapping_add(north).wrapping_sub(north_west);
    plane.max(west.min(north)).min(west.max(north))
}

/// The rough cost of [`neighbour_median`]'s residuals over the first [`SAMPLE`] values, as
/// [`choose_predictor_and_cost`] judges its own.
pub(crate) fn neighbour_cost(values: &[i64], neighbour: &[i64]) -> u64 {
    let n = values.len().min(SAMPLE);
    let mut north = 0;
    let mut north_west = 0;
    let mut bits = 0;
    for (&x, &west) in values[..n].iter().zip(neighbour) {
        bits += residual_bits(x.wrapping_sub(neighbour_median(west, north, north_west)));
        (north, north_west) = (x, west);
    }
    bits
}

/// How much the channel before a column moved at a sample, as the neighbour median sees it
/// (`west`, `north_west` as there), in multiples of `step` (the residuals' unit), as a bit
/// length: an edge sweeping across the beams shows there. The entropy coder codes the
/// column's residual beside it ([`crate::entropy::ChosenAhead`]). It
/// leaves out the column's own gap to the channel before a sample earlier (LOCO-I's other
/// gradient), which would have saved another 0.5 % of the bench lidar's bits lossless and
/// 1.1 % at one sigma: that one waits on the sample just decoded, and choosing the model
/// after it cost the lidar's decoders 16 and 23 % of their speed.
#[inline(always)]
pub(crate) fn activity(west: i64, north_west: i64, step: u64) -> u32 {
    let moved = west.abs_diff(north_west);
    match step {
        1 => bucket_of(moved),
        _ => bucket_of_quotient(moved, step),
    }
}

/// The [`activity`] at sample `i` of a column predicted by [`neighbour_median`] from
/// `neighbour` (from a history of zeros, as the median), in steps of `step` units; 0 past
/// the last sample. What [`neighbour_activities`] collects, for decoders that read it as
/// they go.
#[inline(always)]
pub(crate) fn activity_at(neighbour: &[i64], i: usize, step: u64) -> u32 {
    match neighbour.get(i) {
        Some(&west) => {
            let north_west = i.checked_sub(1).map_or(0, |before| neighbour[before]);
            activity(west, north_west, step)
        }
        None => 0,
    }
}

/// The [`activity`] of each coded sample of a column predicted by [`neighbour_median`] from
/// `neighbour` (from a history of zeros, as the median), in steps of `step` units: every
/// sample but those at `uncoded` (ascending positions; an error-bounded column's
/// exceptions).
pub(crate) fn neighbour_activities(
    neighbour: &[i64],
    uncoded: impl Iterator<Item = usize>,
    step: u64,
) -> Vec<u32> {
    let mut uncoded = uncoded.peekable();
    let mut activities = Vec::with_capacity(neighbour.len());
    let mut north_west = 0;
    for (i, &west) in neighbour.iter().enumerate() {
        if uncoded.next_if_eq(&i).is_none() {
            activities.push(activity(west, north_west, step));
        }
        north_west = west;
    }
    activities
}

/// The residuals of [`neighbour_median`] down a column, `neighbour` the channel before
/// (as long); both start from a history of zeros.
pub(crate) fn neighbour_residuals(values: &[i64], neighbour: &[i64]) -> Vec<i64> {
    let mut north = 0;
    let mut north_west = 0;
    values
        .iter()
        .zip(neighbour)
        .map(|(&x, &west)| {
            let r = x.wrapping_sub(neighbour_median(west, north, north_west));
            (north, north_west) = (x, west);
            r
        })
        .collect()
}

/// Decodes a column predicted by [`neighbour_median`] from `neighbour`, the decoded channel
/// before it (one warm-up residual, as [`neighbour_residuals`] codes them), the rest beside
/// their [`neighbour_activities`].
pub(crate) fn decode_neighbour_column(
    decoder: &mut ResidualDecoder,
    neighbour: &[i64],
    all_zero: bool,
    rest: ResidualContext,
) -> Result<(Vec<i64>, ResidualContext), CodecError> {
    crate::entropy::with_cpu_features(
        #[inline(always)]
        || {
            let mut values = Vec::with_capacity(neighbour.len());
            let mut local = *decoder;
            let (mut north, mut north_west) = (0, 0);
            let mut warmup = ResidualContext::default();
            let mut rest = rest;
            // [`neighbour_activities`] read from the neighbour as it goes: collected first,
            // they cost this decoder 3 %.
            let mut chosen = (!all_zero).then(|| rest.choose_beside(activity_at(neighbour, 1, 1)));
            for (t, &west) in neighbour.iter().enumerate() {
                let r = match (t, chosen.as_mut()) {
                    (_, None) => 0,
                    (0, Some(_)) => local.decode(&mut warmup)?,
                    (_, Some(chosen)) => {
                        local.decode_beside(&mut rest, chosen, activity_at(neighbour, t + 1, 1))?
                    }
                };
                let x = neighbour_median(west, north, north_west).wrapping_add(r);
                values.push(x);
                (north, north_west) = (x, west);
            }
            *decoder = local;
            Ok((values, rest))
        },
    )
}

/// Decodes `n` values of a column predicted by `predictor` from `history`, the residuals
/// after the warm-up from `rest`; returns the values and the context they leave.
pub(crate) fn decode_column(
    decoder: &mut ResidualDecoder,
    n: usize,
    predictor: Predictor,
    history: History,
    all_zero: bool,
    rest: ResidualContext,
) -> Result<(Vec<i64>, ResidualContext), CodecError> {
    crate::entropy::with_cpu_features(
        #[inline(always)]
        || {
            let mut past = Past::new(&history, n);
            if all_zero {
                for _ in 0..n {
                    past.push(past.predict(predictor));
                }
                return Ok((past.into_values(), rest));
            }
            // A local copy of the coder's position keeps it in registers through the loop.
            let mut local = *decoder;
            let warmup = predictor.warmup().min(n);
            let mut contexts = [ResidualContext::default(), rest];
            let phases = Phases {
                decoder: &mut local,
                past: &mut past,
                ranges: [0..warmup, warmup..n],
                contexts: &mut contexts,
            };
            with_prediction(predictor, phases)?;
            *decoder = local;
            let [_, rest] = contexts;
            Ok((past.into_values(), rest))
        },
    )
}

/// A loop over a column's values that predicts each from the ones before, as
/// [`with_prediction`] says.
pub(crate) trait PredictedLoop {
    type Output;
    fn run(self, predict: impl Fn(&Past) -> i64) -> Self::Output;
}

/// Runs `job` with `predictor`'s prediction. The predictors the encoders choose get a loop
/// of their own, with no choice of predictor per value: the bench's lossless decode IMU
/// 191-194 -> 206-215 MB/s, motors 194-196 -> 205-213, battery 170-172 -> 190-198; its
/// bounded decode IMU 195-197 -> 208-210, motors 193-196 -> 203-204, battery 177-178 ->
/// 193-195 (the fitted orders); wheels bounded 200 -> 205-206 (previous and linear).
#[inline(always)]
pub(crate) fn with_prediction<J: PredictedLoop>(predictor: Predictor, job: J) -> J::Output {
    match predictor {
        Predictor::Fitted {
            order: 3,
            coeffs,
            intercept,
        } => job.run(fitted_of_order::<3>(coeffs, intercept)),
        Predictor::Fitted {
            order: 12,
            coeffs,
            intercept,
        } => job.run(fitted_of_order::<12>(coeffs, intercept)),
        // A variant known here makes the prediction's choice of predictor fold away.
        Predictor::Previous => job.run(predicting(Predictor::Previous)),
        Predictor::Linear => job.run(predicting(Predictor::Linear)),
        _ => job.run(predicting(predictor)),
    }
}

/// The prediction of a fitted predictor of order `N` from a column's past, in the
/// unrolled code of its order.
#[inline(always)]
fn fitted_of_order<const N: usize>(
    coeffs: [i16; MAX_ORDER],
    intercept: i64,
) -> impl Fn(&Past) -> i64 {
    #[inline(always)]
    move |past: &Past| {
        let (window, small) = past.window();
        fitted_prediction::<N>(window, &coeffs, intercept, small)
    }
}

/// `predictor`'s prediction from a column's past.
#[inline(always)]
fn predicting(predictor: Predictor) -> impl Fn(&Past) -> i64 {
    #[inline(always)]
    move |past: &Past| past.predict(predictor)
}

/// A column's values decoded in two phases (the warm-up, then the rest), each phase's
/// residuals from its context, onto `past`.
struct Phases<'p, 'd, 'a> {
    decoder: &'d mut ResidualDecoder<'a>,
    past: &'p mut Past,
    ranges: [std::ops::Range<usize>; 2],
    contexts: &'p mut [ResidualContext; 2],
}

impl PredictedLoop for Phases<'_, '_, '_> {
    type Output = Result<(), CodecError>;

    #[inline(always)]
    fn run(self, predict: impl Fn(&Past) -> i64) -> Self::Output {
        for (phase, samples) in self.ranges.into_iter().enumerate() {
            // One context per phase, a local of its own, so that it stays in registers.
            let mut ctx = std::mem::take(&mut self.contexts[phase]);
            for _ in samples {
                let r = self.decoder.decode(&mut ctx)?;
                self.past.push(predict(self.past).wrapping_add(r));
            }
            self.contexts[phase] = ctx;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two columns of alike residuals (a lidar's neighbouring beams): the second, started
    /// from the context the first left, codes in fewer bits than from a fresh one, and
    /// decodes back from the same context.
    #[test]
    fn a_column_started_from_its_neighbours_context_codes_in_fewer_bits() {
        // Small noise and, one in eight, an edge's jump of metres: a shape the fresh
        // distributions' prior does not expect.
        let mut uniform = crate::synthetic::uniform_source(8);
        let mut residual = || {
            let magnitude = if uniform() < 0.125 {
                500 + (uniform() * 4500.0) as i64
            } else {
                (-(1.0 - uniform()).ln() * 3.0) as i64
            };
            if uniform() < 0.5 {
                magnitude
            } else {
                -magnitude
            }
        };
        let first: Vec<i64> = (0..200).map(|_| residual()).collect();
        let second: Vec<i64> = (0..200).map(|_| residual()).collect();
        let mut encoder = ResidualEncoder::new();
        let left = encode_residuals(
            &mut encoder,
            first.iter().copied(),
            None,
            1,
            Default::default(),
        );
        let fresh_bytes = {
            let mut fresh = ResidualEncoder::new();
            encode_residuals(
                &mut fresh,
                second.iter().copied(),
                None,
                1,
                Default::default(),
            );
            fresh.finish().len()
        };
        let mut inherited = ResidualEncoder::new();
        encode_residuals(
            &mut inherited,
            second.iter().copied(),
            None,
            1,
            left.clone(),
        );
        let inherited = inherited.finish();
        assert!(
            inherited.len() * 100 < fresh_bytes * 97,
            "{} bytes inherited, {fresh_bytes} fresh",
            inherited.len()
        );
        // The decoder, started from the same context, reads the same residuals.
        let mut decoder = ResidualDecoder::new(&inherited).unwrap();
        let mut warmup = ResidualContext::default();
        let mut rest = left;
        let decoded: Vec<i64> = (0..second.len())
            .map(|i| {
                let ctx = if i == 0 { &mut warmup } else { &mut rest };
                decoder.decode(ctx).unwrap()
            })
            .collect();
        assert_eq!(decoded, second);
    }

    /// A lidar's ranges in millimetres as f32s, with zeros for no return metres below them,
    /// where no two of the first 64 values lie closer than a few centimetres and none of the
    /// others closer than two millimetres: the quantum is found (from a gap of two quanta,
    /// refined along distances within the ranges, not in one jump from the zeros).
    /// A battery's voltage in millivolts: a level of 16 V, a slow sag and noise of a few
    /// units. The fit must leave the residuals after the warm-up centred: fitted with the
    /// warm-up rows (16,190 predicted from the zero history), every later residual was
    /// off by about 3 x 16,190 / 1000 units.
    #[test]
    fn a_fit_to_a_column_far_from_zero_leaves_centred_residuals() {
        let mut uniform = crate::synthetic::uniform_source(5);
        let values: Vec<i64> = (0..1000)
            .map(|i| 16_190 - i / 40 + ((uniform() - 0.5) * 16.0).round() as i64)
            .collect();
        for order in [3, 12] {
            let predictor = Predictor::fit(&values, &[0; MAX_ORDER], order).expect("a fit");
            let after_warmup = &residuals(&values, predictor, [0; MAX_ORDER])[order..];
            let mean = after_warmup.iter().sum::<i64>() as f64 / after_warmup.len() as f64;
            assert!(mean.abs() < 1.0, "order {order}: mean residual {mean:.2}");
        }
    }

    #[test]
    fn a_quantum_is_found_beside_values_far_from_the_rest() {
        let millimetres = |i: usize| match i {
            _ if i.is_multiple_of(7) => 0,
            // Even counts only among the first 64 values: their smallest gap is 2 mm.
            0..64 => 4000 + 2 * (i * 7919 % 1500),
            _ => 4000 + i * 7919 % 3000,
        };
        let values: Vec<f64> = (0..400)
            .map(|i| f64::from((millimetres(i) as f64 * 0.001) as f32))
            .collect();
        let (repr, counts) = Representation::choose(&values, SampleType::F32, None, None);
        let Representation::Quantum(q) = repr else {
            panic!("no quantum: {repr:?}");
        };
        assert!((q - 0.001).abs() < 1e-12, "{q}");
        for (i, &c) in counts.iter().enumerate() {
            assert_eq!(c, millimetres(i) as i64, "value {i}");
        }
    }

    /// The extremes over every lane and the remainder, and none where any value, in any
    /// position, is NaN or infinite.
    #[test]
    fn finite_extremes_see_every_value() {
        for len in 1..=11 {
            let values: Vec<f64> = (0..len).map(|i| (i as f64 - 4.5) * 1.5).collect();
            for at in 0..len {
                let mut spiked = values.clone();
                spiked[at] = 100.0;
                let min = spiked.iter().copied().fold(f64::INFINITY, f64::min);
                assert_eq!(finite_extremes(&spiked), Some((min, 100.0)), "{len} {at}");
                for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                    spiked[at] = bad;
                    assert_eq!(finite_extremes(&spiked), None, "{len} {at} {bad}");
                }
            }
        }
    }

    /// Hashing finds two distinct values within the distance wherever a sort would, as long
    /// as the column spans fewer cells than the table has slots, and never finds a pair the
    /// sort does not: at any span, across zero (whose cell is twice as wide) and at exactly
    /// the distance.
    #[test]
    fn a_pair_within_the_distance_is_found_where_sorting_finds_it() {
        let sorted_gap_within = |values: &[f64], distance: f64| {
            let mut sorted = values.to_vec();
            sorted.sort_by(f64::total_cmp);
            sorted
                .windows(2)
                .any(|w| w[1] > w[0] && w[1] - w[0] <= distance)
        };
        for (values, distance, pair) in [
            (vec![0.3, -0.3], 0.6, true),
            (vec![-1.2, -0.2], 1.0, true),
            (vec![0.0, 0.5], 0.5, true),
            (vec![0.0, 0.5000001], 0.5, false),
            (vec![3.0, 3.0, 5.0], 1.0, false),
        ] {
            assert_eq!(distinct_pair_within(&values, distance), pair, "{values:?}");
        }
        let mut uniform = crate::synthetic::uniform_source(11);
        let (mut found, mut missed) = (0, 0);
        for trial in 0..2000 {
            let distance = 10f64.powf(uniform() * 8.0 - 4.0);
            // Under the table's 1024 slots, or thousands of times over.
            let span = if trial % 2 == 0 { 1000.0 } else { 1e7 };
            let len = 2 + (uniform() * 400.0) as usize;
            let values: Vec<f64> = (0..len)
                .map(|_| ((uniform() - 0.5) * span).round() * distance * 0.75)
                .collect();
            let hashed = distinct_pair_within(&values, distance);
            let sorted = sorted_gap_within(&values, distance);
            assert!(sorted || !hashed, "trial {trial}: a pair made up");
            if span < 1024.0 {
                assert_eq!(hashed, sorted, "trial {trial}: {len} values");
            }
            found += usize::from(hashed);
            missed += usize::from(sorted && !hashed);
        }
        // Both answers occur, so the comparisons above test something.
        assert!(found > 200 && found < 1800, "{found} found");
        assert!(missed < 100, "{missed} missed at the wide span");
    }

    /// The quantum of the column before, given as a hint, gives what the search finds: the
    /// same counts of the same quantum where the column has it, and the search's coarser
    /// one where every value is a multiple of two of them.
    #[test]
    fn a_quantum_hint_gives_what_the_search_finds() {
        let millimetres = |k: usize| f64::from((k as f64 * 0.001) as f32);
        let every: Vec<f64> = (0..300)
            .map(|i| millimetres(4000 + i * 7919 % 3001))
            .collect();
        let even: Vec<f64> = (0..300)
            .map(|i| millimetres(4000 + 2 * (i * 7919 % 1500)))
            .collect();
        for values in [&every, &even] {
            let searched = Representation::choose(values, SampleType::F32, None, None);
            let hinted = Representation::choose(values, SampleType::F32, None, Some(0.001));
            assert_eq!(searched, hinted);
        }
        let (Representation::Quantum(q), _) =
            Representation::choose(&even, SampleType::F32, None, Some(0.001))
        else {
            panic!("no quantum");
        };
        assert!((q - 0.002).abs() < 1e-12, "{q}");
    }

    /// Found by fuzzing (`decode_packet`): a corrupt f32 column can decode to any i64; the
    /// ones no f32 maps to are an error, not an overflow.
    #[test]
    fn f32_bit_patterns_round_trip_and_out_of_range_counts_are_corrupt() {
        for x in [
            0.0f32,
            -0.0,
            1.5,
            -3.25e-38,
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NAN,
        ] {
            let back = f32::from_bits(unordered_f32(ordered_f32(x.to_bits())).unwrap());
            assert_eq!(back.to_bits(), x.to_bits());
        }
        for v in [i64::MAX, i64::MIN, 1 << 31, -(1 << 31) - 1] {
            assert!(unordered_f32(v).is_err(), "{v}");
        }
    }

    /// ADC-step counts: exactly each value's [`step_count`], none where a value is off the
    /// grid, and counts past 2^51 through the per-value path.
    #[test]
    fn adc_step_counts_are_each_values_count_or_none() {
        let lsb = 0.000_976_562_5 * 1.1;
        let mut uniform = crate::synthetic::uniform_source(33);
        let values: Vec<f64> = (0..500)
            .map(|_| crate::quantize_to_lsb((uniform() - 0.5) * 40.0, lsb, SampleType::F32))
            .collect();
        let counts = Representation::LsbCounts
            .to_integers(&values, lsb, SampleType::F32)
            .expect("on the grid");
        for (&x, &c) in values.iter().zip(&counts) {
            assert_eq!(Some(c), step_count(x, lsb, 1.0 / lsb, SampleType::F32));
        }
        let mut off = values.clone();
        off[250] = f64::from((off[250] as f32).next_up());
        assert_eq!(
            Representation::LsbCounts.to_integers(&off, lsb, SampleType::F32),
            None
        );
        let (tiny, far) = (1.0 / 1024.0, 2f64.powi(42));
        let wide = [0.0, far, -far - tiny, tiny];
        let counts = Representation::LsbCounts.to_integers(&wide, tiny, SampleType::F64);
        assert_eq!(counts, Some(vec![0, 1 << 52, -(1 << 52) - 1, 1]));
    }

    /// The vectorised pass gives [`nearest_integer`]'s counts, and none where a product
    /// reaches 2^51 (or is not a number).
    #[test]
    fn nearest_integers_of_small_values_are_nearest_integers() {
        let mut uniform = crate::synthetic::uniform_source(21);
        let values: Vec<f64> = (0..1000).map(|_| (uniform() - 0.5) * 1e9).collect();
        let scale = 2f64.powi(21);
        let counts = nearest_integers_of_small(&values, scale).expect("all below 2^51");
        for (&x, &c) in values.iter().zip(&counts) {
            assert_eq!(Some(c), nearest_integer(x * scale), "{x}");
        }
        for outlier in [2f64.powi(30), -2f64.powi(30), f64::NAN, f64::INFINITY] {
            let mut with = values.clone();
            with[500] = outlier;
            assert_eq!(nearest_integers_of_small(&with, scale), None, "{outlier}");
        }
    }

    #[test]
    fn the_nearest_integer_is_exact_at_every_magnitude() {
        let below = |x: f64| x.next_down();
        for x in [
            0.0,
            -0.0,
            0.49999999999999994,
            0.5,
            1.5,
            -2.5,
            3.7,
            -3.7,
            below(2f64.powi(51)),
            2f64.powi(51),
            2f64.powi(51) + 0.5,
            -2f64.powi(52) - 1.0,
            2f64.powi(62),
            f64::NAN,
            f64::INFINITY,
        ] {
            let expected = match x.round() {
                r if (r - x).abs() == 0.5 => None,
                r if r.is_finite() => Some(r as i64),
                _ => Some(i64::MIN),
            };
            let got = nearest_integer(x);
            // The float rounding agrees (where an i64 holds the result).
            if let Some(c) = got {
                assert_eq!(round_to_integer(x), c as f64, "{x}");
            }
            match expected {
                // A tie may round either way.
                None => assert!(
                    got.is_some_and(|c| (c as f64 - x).abs() == 0.5),
                    "{x}: {got:?}"
                ),
                Some(i64::MIN) => assert_eq!(got, None, "{x}"),
                Some(c) => assert_eq!(got, Some(c), "{x}"),
            }
        }
    }

    /// Columns whose digits grow inside a group of four and in the values after the last
    /// group get the fewest digits and each value's count at them.
    #[test]
    fn decimal_digits_grow_wherever_a_value_needs_them() {
        let mut uniform = crate::synthetic::uniform_source(41);
        let mut text: Vec<String> = (0..403)
            .map(|_| format!("{:.1}", (uniform() - 0.5) * 200.0))
            .collect();
        text[201] = "-3.125".into();
        text[401] = "17.00625".into();
        let values: Vec<f64> = text.iter().map(|t| t.parse().unwrap()).collect();
        for (cut, digits) in [(200, 1), (300, 3), (403, 5)] {
            let (repr, counts) = decimal_counts(&values[..cut], 0.0).expect("decimal text");
            assert_eq!(repr, Representation::Decimal(digits), "first {cut}");
            for (&x, &c) in values.iter().zip(&counts) {
                assert_eq!(Some(c), repr.to_integer(x, 1.0, SampleType::F64), "{x}");
            }
        }
    }

    #[test]
    fn decimal_text_values_are_found_and_reproduced() {
        let values: Vec<f64> = ["0.1", "-2.375", "1234.5", "0", "-0.001"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let (repr, ints) = Representation::choose(&values, SampleType::F64, None, None);
        assert_eq!(repr, Representation::Decimal(3));
        for (x, v) in values.iter().zip(ints) {
            assert_eq!(
                repr.value_of(v, 1.0, SampleType::F64).unwrap().to_bits(),
                x.to_bits()
            );
        }
        // -0.0 and NaN have no decimal form: the column falls back to bit patterns.
        let (repr, _) = Representation::choose(&[0.5, -0.0], SampleType::F64, None, None);
        assert_eq!(repr, Representation::F64Bits);
    }

    #[test]
    fn fitted_prediction_is_the_128_bit_result_for_every_magnitude() {
        let reference = |p: Predictor, h: &History| -> i64 {
            let Predictor::Fitted {
                order,
                coeffs,
                intercept,
            } = p
            else {
                unreachable!()
            };
            let sum: i128 = coeffs[..usize::from(order)]
                .iter()
                .zip(h)
                .map(|(&c, &x)| i128::from(c) * i128::from(x))
                .sum();
            let p = ((sum + (1 << (COEFF_BITS - 1))) >> COEFF_BITS) + i128::from(intercept);
            p.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
        };
        let edge = 1i64 << 43;
        let values = [
            0,
            1,
            -1,
            4095,
            edge - 1,
            -edge,
            edge,
            -edge - 1,
            i64::MAX,
            i64::MIN,
        ];
        for (order, c) in [
            (3u8, i16::MAX),
            (3, i16::MIN),
            (16, i16::MAX),
            (16, i16::MIN),
            (12, -7),
        ] {
            let mut coeffs = [0i16; MAX_ORDER];
            for (j, slot) in coeffs[..usize::from(order)].iter_mut().enumerate() {
                *slot = if j % 3 == 2 { c / 2 } else { c };
            }
            for intercept in [0, -7, i64::MAX, i64::MIN] {
                let predictor = Predictor::Fitted {
                    order,
                    coeffs,
                    intercept,
                };
                for &a in &values {
                    for &b in &values {
                        let h: History = std::array::from_fn(|k| if k % 2 == 0 { a } else { b });
                        assert_eq!(predictor.predict(&h), reference(predictor, &h));
                    }
                }
                // Along a column, where each large value leaves the window MAX_ORDER
                // values after it entered and the check is skipped from then on.
                let mut past = Past::new(&[0; MAX_ORDER], 0);
                let mut newest_first = [0i64; MAX_ORDER];
                for i in 0..120usize {
                    assert_eq!(
                        past.predict(predictor),
                        reference(predictor, &newest_first),
                        "at {i}"
                    );
                    let x = match i % 37 {
                        5 => values[i % values.len()],
                        _ => i as i64 % 9 - 4,
                    };
                    past.push(x);
                    newest_first.rotate_right(1);
                    newest_first[0] = x;
                }
            }
        }
    }

    /// Up to the limit, the floating-point prediction is the integer one, extreme
    /// coefficients and values included.
    #[test]
    fn float_predictions_are_exact_below_the_limit() {
        let mut uniform = crate::synthetic::uniform_source(33);
        let edge = EXACT_IN_FLOAT - 1;
        for case in 0..2000 {
            // In [-scale, scale]; the ends only, half the time.
            let extreme = case % 2 == 0;
            let mut draw = |scale: f64| {
                let u = uniform() * 2.0 - 1.0;
                let u = if extreme { u.signum() } else { u };
                (u * scale).round() as i64
            };
            let coeffs: [i16; MAX_ORDER] =
                std::array::from_fn(|_| draw(f64::from(i16::MAX)) as i16);
            let window: [i64; MAX_ORDER] = std::array::from_fn(|_| draw(edge as f64));
            let intercept = draw((1u64 << 40) as f64);
            let predictor = Predictor::Fitted {
                order: 12,
                coeffs,
                intercept,
            };
            let float = FloatFitted::<12>::new(predictor);
            let tail: &[i64; 12] = window[MAX_ORDER - 12..].try_into().unwrap();
            let as_floats = tail.map(|v| v as f64);
            assert_eq!(
                float.predict(&as_floats, [window[MAX_ORDER - 1], window[MAX_ORDER - 2]]),
                predictor.predict_from(&window),
                "case {case}"
            );
        }
    }

    /// A fit's promise over an incumbent is half a bit a value per halving of the residual
    /// sums of squares, as summed directly from each prediction (before its rounding to a
    /// unit).
    #[test]
    fn a_fits_promise_follows_the_residual_sums_of_squares() {
        let mut uniform = crate::synthetic::uniform_source(777);
        // An oscillation with noise, offset from zero; the inputs a reconstruction of it
        // (the targets moved by up to 40 units).
        let targets: Vec<i64> = (0..1000)
            .map(|i| {
                let t = f64::from(i);
                (5000.0 + 3000.0 * (t * 0.07).sin() + 400.0 * (uniform() - 0.5)).round() as i64
            })
            .collect();
        let inputs: Vec<i64> = targets
            .iter()
            .map(|&x| x + (80.0 * (uniform() - 0.5)) as i64)
            .collect();
        let squares = |p: Predictor| -> f64 {
            let (w, intercept) = p.weights::<MAX_ORDER>().expect("order up to 16");
            (12..targets.len())
                .map(|i| {
                    let prediction: f64 = intercept
                        + (0..MAX_ORDER.min(i))
                            .map(|k| w[k] * inputs[i - 1 - k] as f64)
                            .sum::<f64>();
                    (targets[i] as f64 - prediction).powi(2)
                })
                .sum()
        };
        let fit3 = Predictor::fit(&targets, &[0; MAX_ORDER], 3).expect("a fit");
        let mut promises = Vec::new();
        for incumbent in [
            Predictor::Zero,
            Predictor::Previous,
            Predictor::Linear,
            fit3,
        ] {
            let fit =
                Predictor::fit_against(&targets, &inputs, &[0; MAX_ORDER], 12, Some(incumbent))
                    .expect("a fit");
            let promised = fit.promised_bits.expect("a promise");
            let direct = 988.0 / 2.0 * (squares(incumbent) / squares(fit.predictor)).log2();
            assert!(
                (promised - direct).abs() <= 1e-6 * direct,
                "{incumbent:?}: promised {promised:.1} bits, direct sums {direct:.1}"
            );
            promises.push(promised);
        }
        // Every incumbent predicts worse than the fit, none by nothing.
        assert!(promises.iter().all(|&p| p > 10.0), "{promises:?}");
        // Without an incumbent, or one longer than the fit, nothing is promised.
        let longer = Predictor::Fitted {
            order: 16,
            coeffs: [1; MAX_ORDER],
            intercept: 0,
        };
        for incumbent in [None, Some(longer)] {
            let fit = Predictor::fit_against(&targets, &inputs, &[0; MAX_ORDER], 12, incumbent);
            assert_eq!(fit.expect("a fit").promised_bits, None);
        }
    }

    /// The normal equations built from row 0 alone equal the ones summed product by product.
    #[test]
    fn normal_equations_match_the_direct_sums() {
        let mut uniform = crate::synthetic::uniform_source(12345);
        let mut noise = || (uniform() * 2001.0) as i64 - 1000;
        let targets: Vec<i64> = (0..300).map(|i| (i * i % 97) * 40 + noise()).collect();
        let past: Vec<f64> = (0..MAX_ORDER as i64 + 300)
            .map(|_| noise() as f64 * 3.5)
            .collect();
        let mean = 17.0;
        let NormalEquations { a, b, yy, .. } = normal_equations::<12>(&targets, &past, mean);
        let direct_yy: f64 = (12..300).map(|i| (targets[i] as f64 - mean).powi(2)).sum();
        assert!((yy - direct_yy).abs() <= 1e-9 * direct_yy);
        let lag = |i: usize, k: usize| past[MAX_ORDER + i - k];
        for (r, (row, &br)) in a.iter().zip(&b).enumerate() {
            let direct_b: f64 = (12..300)
                .map(|i| lag(i, r + 1) * (targets[i] as f64 - mean))
                .sum();
            assert!((br - direct_b).abs() <= 1e-9 * direct_b.abs().max(1.0));
            for (c, &arc) in row.iter().enumerate() {
                let direct: f64 = (12..300).map(|i| lag(i, r + 1) * lag(i, c + 1)).sum();
                assert!(
                    (arc - direct).abs() <= 1e-9 * direct.abs().max(1.0),
                    "A[{r}][{c}] = {arc} against {direct}"
                );
            }
        }
    }

    #[test]
    fn fitted_predictor_learns_an_oscillation() {
        let values: Vec<i64> = (0..400)
            .map(|i| (1000.0 * (i as f64 * 0.05).sin()).round() as i64 + 500)
            .collect();
        let p = Predictor::fit(&values, &[0; MAX_ORDER], 3).expect("fit");
        let cost = |p| -> u64 {
            let rs = residuals(&values, p, [0; MAX_ORDER]);
            rs[3..].iter().map(|&r| residual_bits(r)).sum()
        };
        let (fitted_cost, linear_cost) = (cost(p), cost(Predictor::Linear));
        assert!(fitted_cost <= linear_cost, "{fitted_cost} > {linear_cost}");
        assert_eq!(choose_predictor(&values, [0; MAX_ORDER]).tag(), 3);
    }

    #[test]
    fn fitted_predictor_finds_the_mean_of_noise() {
        let mut state = 7u64;
        let values: Vec<i64> = (0..400)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                5000 + ((state >> 40) % 41) as i64 - 20
            })
            .collect();
        let p = Predictor::fit(&values, &[0; MAX_ORDER], 3).expect("fit");
        let mean_residual: f64 = residuals(&values, p, [0; MAX_ORDER])
            .into_iter()
            .skip(3)
            .map(|r| r as f64)
            .sum::<f64>()
            / 397.0;
        assert!(
            mean_residual.abs() < 2.0,
            "{p:?}: mean residual {mean_residual}"
        );
    }
}
