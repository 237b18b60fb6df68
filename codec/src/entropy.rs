//! Adaptive binary range coding of integer residuals, on `constriction`'s range coder.
//!
//! A residual `r` is zigzag-mapped to `z`, split into a bucket `b` (the bit length of `z`) and
//! `b - 1` mantissa bits below the implicit leading one. The bucket goes through a 7-level
//! binary tree of adaptive probabilities, the top mantissa bit through an adaptive probability
//! per bucket, and the rest as uniform bits. The models adapt per symbol with integer updates,
//! so encoder and decoder stay in lockstep on every machine, and they start afresh in every
//! packet, so packets decode independently.

use core::num::NonZeroU32;

use constriction::stream::model::{DecoderModel, EncoderModel, EntropyModel, UniformModel};
use constriction::stream::queue::{DefaultRangeDecoder, DefaultRangeEncoder};
use constriction::stream::{Decode, Encode};

use crate::CodecError;

const PRECISION: usize = 16;
const ONE: u32 = 1 << PRECISION;
/// Slowest adaptation step, 1/ADAPT_LIMIT.
const ADAPT_LIMIT: u32 = 24;
const PROB_MIN: u32 = 48;
const BUCKET_LEVELS: u32 = 7;
/// Widest chunk of uniform bits coded as one symbol.
const RAW_CHUNK: u32 = 16;

/// Probability of a zero bit, in units of 2^-16, that moves towards what it sees: at first
/// as a counting estimator (step 1/(n+2)), so a short block learns in a few symbols, then at a
/// fixed rate, so a long block keeps tracking.
#[derive(Clone, Copy)]
struct AdaptiveBit {
    p0: u32,
    seen: u32,
}

impl AdaptiveBit {
    const FAIR: AdaptiveBit = AdaptiveBit {
        p0: ONE / 2,
        seen: 0,
    };

    fn update(&mut self, bit: bool) {
        let divisor = (self.seen + 2).min(ADAPT_LIMIT);
        let p = i64::from(self.p0);
        let target = if bit { 0 } else { i64::from(ONE) };
        let next = p + (target - p) / i64::from(divisor);
        self.p0 = (next as u32).clamp(PROB_MIN, ONE - PROB_MIN);
        self.seen = self.seen.saturating_add(1);
    }
}

impl EntropyModel<PRECISION> for AdaptiveBit {
    type Symbol = bool;
    type Probability = u32;
}

fn nonzero(p: u32) -> NonZeroU32 {
    // `AdaptiveBit` keeps both probabilities within [PROB_MIN, ONE - PROB_MIN].
    NonZeroU32::new(p).unwrap_or(NonZeroU32::MIN)
}

impl EncoderModel<PRECISION> for AdaptiveBit {
    fn left_cumulative_and_probability(
        &self,
        symbol: impl core::borrow::Borrow<bool>,
    ) -> Option<(u32, NonZeroU32)> {
        Some(if *symbol.borrow() {
            (self.p0, nonzero(ONE - self.p0))
        } else {
            (0, nonzero(self.p0))
        })
    }
}

impl DecoderModel<PRECISION> for AdaptiveBit {
    fn quantile_function(&self, quantile: u32) -> (bool, u32, NonZeroU32) {
        if quantile < self.p0 {
            (false, 0, nonzero(self.p0))
        } else {
            (true, self.p0, nonzero(ONE - self.p0))
        }
    }
}

/// Adaptive state for one channel's residuals.
#[derive(Clone)]
pub(crate) struct ResidualContext {
    bucket_tree: [AdaptiveBit; 1 << BUCKET_LEVELS],
    top_mantissa: [AdaptiveBit; 65],
}

impl Default for ResidualContext {
    fn default() -> Self {
        Self {
            bucket_tree: [AdaptiveBit::FAIR; 1 << BUCKET_LEVELS],
            top_mantissa: [AdaptiveBit::FAIR; 65],
        }
    }
}

pub(crate) fn zigzag(r: i64) -> u64 {
    ((r << 1) ^ (r >> 63)) as u64
}

pub(crate) fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

fn bucket_of(z: u64) -> u32 {
    64 - z.leading_zeros()
}

pub(crate) struct ResidualEncoder {
    coder: DefaultRangeEncoder,
}

impl ResidualEncoder {
    pub(crate) fn new() -> Self {
        Self {
            coder: DefaultRangeEncoder::new(),
        }
    }

    fn bit(&mut self, model: &mut AdaptiveBit, bit: bool) {
        // The range coder cannot fail with a model that gives every symbol a nonzero
        // probability and an in-memory backend.
        let _ = self.coder.encode_symbol(bit, *model);
        model.update(bit);
    }

    fn raw_bits(&mut self, value: u64, count: u32) {
        let mut left = count;
        while left > 0 {
            let width = left.min(RAW_CHUNK);
            left -= width;
            let chunk = ((value >> left) & ((1u64 << width) - 1)) as usize;
            let _ = self
                .coder
                .encode_symbol(chunk, UniformModel::<u32, 24>::new(1 << width));
        }
    }

    pub(crate) fn encode(&mut self, ctx: &mut ResidualContext, residual: i64) {
        let z = zigzag(residual);
        let bucket = bucket_of(z);
        let mut node = 1usize;
        for level in (0..BUCKET_LEVELS).rev() {
            let bit = (bucket >> level) & 1 == 1;
            self.bit(&mut ctx.bucket_tree[node], bit);
            node = node * 2 + bit as usize;
        }
        if bucket >= 2 {
            let below_top = bucket - 1;
            let top = (z >> (below_top - 1)) & 1 == 1;
            self.bit(&mut ctx.top_mantissa[bucket as usize], top);
            self.raw_bits(z, below_top - 1);
        }
    }

    /// Finishes the range coder and returns its words as little-endian bytes.
    pub(crate) fn finish(self) -> Vec<u8> {
        let words = self.coder.into_compressed().unwrap_or_default();
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }
}

pub(crate) struct ResidualDecoder {
    coder: DefaultRangeDecoder,
}

const CORRUPT: CodecError = CodecError::Corrupt("entropy-coded section does not decode");

impl ResidualDecoder {
    pub(crate) fn new(bytes: &[u8]) -> Result<Self, CodecError> {
        if !bytes.len().is_multiple_of(4) {
            return Err(CodecError::Corrupt(
                "entropy-coded section is not whole words",
            ));
        }
        let words: Vec<u32> = bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let coder = DefaultRangeDecoder::from_compressed(words).map_err(|_| CORRUPT)?;
        Ok(Self { coder })
    }

    fn bit(&mut self, model: &mut AdaptiveBit) -> Result<bool, CodecError> {
        let bit = self.coder.decode_symbol(*model).map_err(|_| CORRUPT)?;
        model.update(bit);
        Ok(bit)
    }

    fn raw_bits(&mut self, count: u32) -> Result<u64, CodecError> {
        let mut value = 0u64;
        let mut left = count;
        while left > 0 {
            let width = left.min(RAW_CHUNK);
            left -= width;
            let chunk = self
                .coder
                .decode_symbol(UniformModel::<u32, 24>::new(1 << width))
                .map_err(|_| CORRUPT)?;
            value = (value << width) | chunk as u64;
        }
        Ok(value)
    }

    pub(crate) fn decode(&mut self, ctx: &mut ResidualContext) -> Result<i64, CodecError> {
        let mut node = 1usize;
        for _ in 0..BUCKET_LEVELS {
            let bit = self.bit(&mut ctx.bucket_tree[node])?;
            node = node * 2 + bit as usize;
        }
        let bucket = (node - (1 << BUCKET_LEVELS)) as u32;
        let z = match bucket {
            0 => 0,
            1 => 1,
            65.. => return Err(CodecError::Corrupt("residual bucket beyond 64 bits")),
            _ => {
                let below_top = bucket - 1;
                let top = self.bit(&mut ctx.top_mantissa[bucket as usize])? as u64;
                let rest = self.raw_bits(below_top - 1)?;
                (1u64 << below_top) | (top << (below_top - 1)) | rest
            }
        };
        Ok(unzigzag(z))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(residuals: &[i64]) -> usize {
        let mut enc = ResidualEncoder::new();
        let mut ctx = ResidualContext::default();
        for &r in residuals {
            enc.encode(&mut ctx, r);
        }
        let bytes = enc.finish();
        let mut dec = ResidualDecoder::new(&bytes).unwrap();
        let mut ctx = ResidualContext::default();
        for &r in residuals {
            assert_eq!(dec.decode(&mut ctx).unwrap(), r);
        }
        bytes.len()
    }

    #[test]
    fn extremes_round_trip() {
        round_trip(&[
            0,
            1,
            -1,
            2,
            -2,
            i64::MAX,
            i64::MIN,
            i64::MIN + 1,
            1 << 40,
            -(1 << 52),
        ]);
    }

    #[test]
    fn zigzag_is_a_bijection_on_edges() {
        for r in [0, 1, -1, i64::MAX, i64::MIN, 12345, -12345] {
            assert_eq!(unzigzag(zigzag(r)), r);
        }
    }

    #[test]
    fn small_residuals_cost_few_bits() {
        // Residuals uniform in -8..=8 carry about 4.1 bits of entropy each.
        let residuals: Vec<i64> = (0..4000).map(|i| ((i * 7919) % 17) as i64 - 8).collect();
        let bytes = round_trip(&residuals);
        let bits_per = bytes as f64 * 8.0 / residuals.len() as f64;
        assert!(bits_per < 4.6, "{bits_per} bits per residual");
    }

    #[test]
    fn constant_zero_residuals_are_nearly_free() {
        let bytes = round_trip(&vec![0; 10_000]);
        assert!(bytes < 40, "{bytes} bytes for 10k zeros");
    }
}
