//! Discretised Laplace entropy models on a fixed grid of scales, and the arithmetic that
//! builds them.
//!
//! Encoder and decoder must hold bit-identical tables, on any machine. The tables are built
//! from IEEE basic operations only (`+ - * /`, comparisons, `floor`): `exp` and `log2` come
//! from the platform's libm, which may round differently on another CPU, so both are
//! implemented here from those operations.

use core::num::NonZeroU32;
use std::sync::OnceLock;

use constriction::stream::model::{DecoderModel, EncoderModel, EntropyModel};

pub(crate) const PRECISION: usize = 16;
const ONE: u32 = 1 << PRECISION;
/// Quantisation indices in `-RANGE..=RANGE` are coded directly; others escape.
pub(crate) const RANGE: i64 = 64;
/// Symbols: `2 * RANGE + 1` indices, then the escape.
pub(crate) const SYMBOLS: usize = 2 * RANGE as usize + 2;
pub(crate) const ESCAPE: usize = SYMBOLS - 1;
/// Scale grid: index `s` is a Laplace scale of `2^((s - SCALE_ZERO) / SCALES_PER_OCTAVE)`
/// quantisation steps.
pub(crate) const SCALES: usize = 64;
const SCALE_ZERO: i32 = 16;
const SCALES_PER_OCTAVE: f32 = 4.0;

const LN_2: f64 = core::f64::consts::LN_2;
const LOG2_E: f64 = core::f64::consts::LOG2_E;

/// `2^y`, from basic operations only (relative error below 1e-15).
pub fn det_exp2(y: f64) -> f64 {
    if y.is_nan() {
        return f64::NAN;
    }
    if y >= 1024.0 {
        return f64::INFINITY;
    }
    if y < -1022.0 {
        return 0.0;
    }
    let n = y.floor();
    let f = (y - n) * LN_2;
    // Taylor series of e^f on [0, ln 2), Horner form; 18 terms reach f64 precision.
    let mut sum = 1.0;
    let mut k = 18.0;
    while k >= 1.0 {
        sum = 1.0 + sum * f / k;
        k -= 1.0;
    }
    let exponent = (n as i64 + 1023) as u64;
    sum * f64::from_bits(exponent << 52)
}

/// `e^x` from basic operations only.
pub fn det_exp(x: f64) -> f64 {
    det_exp2(x * LOG2_E)
}

/// `log2(x)` for positive finite `x`, from basic operations and the float's bits.
pub fn det_log2(x: f64) -> f64 {
    if x.is_nan() || x < 0.0 {
        return f64::NAN;
    }
    if x == 0.0 {
        return f64::NEG_INFINITY;
    }
    if x.is_infinite() {
        return f64::INFINITY;
    }
    let (mut mantissa, mut exponent) = if x < f64::MIN_POSITIVE {
        // Subnormal: scale into the normal range first (2^54 is exact).
        let scaled = x * 18_014_398_509_481_984.0;
        split(scaled, -54)
    } else {
        split(x, 0)
    };
    if mantissa > core::f64::consts::SQRT_2 {
        mantissa /= 2.0;
        exponent += 1;
    }
    // ln m = 2 atanh(z), z = (m - 1) / (m + 1), |z| < 0.172.
    let z = (mantissa - 1.0) / (mantissa + 1.0);
    let z2 = z * z;
    let mut series = 0.0;
    let mut k = 21.0;
    while k >= 1.0 {
        series = 1.0 / k + z2 * series;
        k -= 2.0;
    }
    f64::from(exponent) + 2.0 * z * series * LOG2_E
}

fn split(x: f64, bias: i32) -> (f64, i32) {
    let bits = x.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i32 - 1023 + bias;
    let mantissa = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    (mantissa, exponent)
}

/// The grid index of a Laplace scale given as `log2(scale / step)`; NaN takes the widest.
pub fn scale_index(log2_scale_in_steps: f32) -> usize {
    if log2_scale_in_steps.is_nan() {
        return SCALES - 1;
    }
    let s = (log2_scale_in_steps * SCALES_PER_OCTAVE).round() + SCALE_ZERO as f32;
    s.clamp(0.0, (SCALES - 1) as f32) as usize
}

/// The scale (in quantisation steps) of grid index `s`.
pub fn grid_scale(s: usize) -> f64 {
    det_exp2(f64::from(s as i32 - SCALE_ZERO) / f64::from(SCALES_PER_OCTAVE))
}

/// Cumulative frequencies of every grid scale: `SYMBOLS + 1` entries each, from 0 to `ONE`.
pub(crate) struct LaplaceTables {
    cdf: Vec<u32>,
}

impl LaplaceTables {
    pub(crate) fn get() -> &'static LaplaceTables {
        static TABLES: OnceLock<LaplaceTables> = OnceLock::new();
        TABLES.get_or_init(LaplaceTables::build)
    }

    fn build() -> LaplaceTables {
        let mut cdf = Vec::with_capacity(SCALES * (SYMBOLS + 1));
        for s in 0..SCALES {
            let probabilities = discretised_laplace(grid_scale(s));
            // Every symbol keeps at least one count, so any index can be coded; the rest of
            // the mass is shared in proportion, and what rounding leaves goes to zero.
            let spare = f64::from(ONE - SYMBOLS as u32);
            let mut counts: Vec<u32> = probabilities
                .iter()
                .map(|p| 1 + (p * spare).floor() as u32)
                .collect();
            let used: u32 = counts.iter().sum();
            counts[RANGE as usize] += ONE - used;
            let mut acc = 0u32;
            cdf.push(0);
            for c in counts {
                acc += c;
                cdf.push(acc);
            }
        }
        LaplaceTables { cdf }
    }

    /// Bits that coding `symbol` at grid scale `scale` costs.
    pub(crate) fn cost_bits(&self, scale: usize, symbol: usize) -> f64 {
        let row = &self.cdf[scale * (SYMBOLS + 1)..];
        let width = row[symbol + 1] - row[symbol];
        f64::from(PRECISION as u32) - f64::from(width).log2()
    }

    pub(crate) fn model(&self, scale: usize) -> LaplaceModel<'_> {
        let s = scale.min(SCALES - 1);
        LaplaceModel {
            cdf: &self.cdf[s * (SYMBOLS + 1)..(s + 1) * (SYMBOLS + 1)],
        }
    }
}

/// Probabilities of the indices `-RANGE..=RANGE` and of the escape (the two tails).
fn discretised_laplace(scale: f64) -> Vec<f64> {
    let decay = det_exp(-1.0 / scale);
    let half = det_exp(-0.5 / scale);
    let mut p = vec![0.0; SYMBOLS];
    p[RANGE as usize] = 1.0 - half;
    // P(|q| = k) = half * (1 - decay) * decay^(k-1) / 2 on each side; both tails beyond
    // RANGE together hold half * decay^RANGE.
    let mut power = 1.0;
    for k in 1..=RANGE as usize {
        let side = 0.5 * half * (1.0 - decay) * power;
        p[RANGE as usize + k] = side;
        p[RANGE as usize - k] = side;
        power *= decay;
    }
    p[ESCAPE] = half * power;
    p
}

/// One row of the tables, as a `constriction` model over symbol indices.
#[derive(Clone, Copy)]
pub(crate) struct LaplaceModel<'a> {
    cdf: &'a [u32],
}

impl EntropyModel<PRECISION> for LaplaceModel<'_> {
    type Symbol = usize;
    type Probability = u32;
}

impl EncoderModel<PRECISION> for LaplaceModel<'_> {
    fn left_cumulative_and_probability(
        &self,
        symbol: impl core::borrow::Borrow<usize>,
    ) -> Option<(u32, NonZeroU32)> {
        let s = *symbol.borrow();
        let left = *self.cdf.get(s)?;
        let right = *self.cdf.get(s + 1)?;
        Some((left, NonZeroU32::new(right - left)?))
    }
}

impl DecoderModel<PRECISION> for LaplaceModel<'_> {
    fn quantile_function(&self, quantile: u32) -> (usize, u32, NonZeroU32) {
        // The last entry whose cumulative is <= quantile; every width is >= 1.
        let s = self.cdf[1..]
            .partition_point(|&c| c <= quantile)
            .min(SYMBOLS - 1);
        let left = self.cdf[s];
        let width = self.cdf[s + 1] - left;
        (s, left, NonZeroU32::new(width).unwrap_or(NonZeroU32::MIN))
    }
}

/// Map a quantisation index to its symbol, or `None` when it escapes.
pub(crate) fn symbol_of(q: i64) -> Option<usize> {
    (-RANGE..=RANGE).contains(&q).then(|| (q + RANGE) as usize)
}

pub(crate) fn index_of(symbol: usize) -> i64 {
    symbol as i64 - RANGE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_exp_and_log_match_libm_closely() {
        for i in -2000..2000 {
            let y = f64::from(i) * 0.0137;
            let rel = (det_exp2(y) - y.exp2()).abs() / y.exp2();
            assert!(rel < 1e-14, "exp2({y}): {} vs {}", det_exp2(y), y.exp2());
            let x = det_exp2(y);
            assert!((det_log2(x) - y).abs() < 1e-12, "log2({x})");
        }
        assert_eq!(det_log2(8.0), 3.0);
        assert!((det_log2(1e-310) - 1e-310f64.log2()).abs() < 1e-9);
    }

    #[test]
    fn tables_are_valid_distributions() {
        let tables = LaplaceTables::get();
        for s in 0..SCALES {
            let m = tables.model(s);
            assert_eq!(m.cdf[0], 0);
            assert_eq!(m.cdf[SYMBOLS], ONE);
            assert!(m.cdf.windows(2).all(|w| w[1] > w[0]), "scale {s}");
            for symbol in [0, RANGE as usize, ESCAPE] {
                let (left, p) = m.left_cumulative_and_probability(symbol).unwrap();
                let (back, l2, p2) = m.quantile_function(left + p.get() - 1);
                assert_eq!((back, l2, p2), (symbol, left, p));
            }
        }
        // Narrow scales put nearly everything on zero; wide ones escape often.
        let narrow = tables.model(0);
        assert!(narrow.cdf[RANGE as usize + 1] - narrow.cdf[RANGE as usize] > ONE - 400);
        let wide = tables.model(SCALES - 1);
        assert!(wide.cdf[SYMBOLS] - wide.cdf[ESCAPE] > ONE / 2);
    }
}
