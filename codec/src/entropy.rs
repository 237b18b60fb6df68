//! Adaptive binary range coding of integer residuals, on `constriction`'s range coder.
//!
//! A residual `r` is zigzag-mapped to `z`, split into a bucket `b` (the bit length of `z`) and
//! `b - 1` mantissa bits below the implicit leading one. The bucket is coded relative to the
//! bit length `k` of the running mean of recent `z` (as LOCO-I estimates its Golomb
//! parameter): "is it `k`?", "above or below?", then a unary distance, each decision with an
//! adaptive probability. The top mantissa bit has an adaptive probability per bucket; the
//! rest are uniform. Models adapt per symbol with integer updates, so encoder and decoder
//! stay in lockstep on every machine, and start afresh in every packet, so packets decode
//! independently.

use core::num::NonZeroU32;

use constriction::stream::model::{DecoderModel, EncoderModel, EntropyModel};
use constriction::stream::queue::{DefaultRangeDecoder, DefaultRangeEncoder};
use constriction::stream::{Decode, Encode};

use crate::CodecError;

const PRECISION: usize = 16;
const ONE: u32 = 1 << PRECISION;
/// Slowest adaptation step, 1/ADAPT_LIMIT.
const ADAPT_LIMIT: usize = 24;
const PROB_MIN: u32 = 48;
/// Unary steps with their own probability; longer runs share the last.
const UNARY_CONTEXTS: usize = 12;
/// The running mean halves its history every this many symbols.
const MEAN_WINDOW: u32 = 32;

/// `RECIPROCAL[d] = 2^16 / d`: the adaptation divides by multiplying (fast, and exact enough:
/// encoder and decoder only need the same arithmetic, not true division).
const RECIPROCAL: [i64; ADAPT_LIMIT + 1] = {
    let mut table = [0i64; ADAPT_LIMIT + 1];
    let mut d = 1;
    while d <= ADAPT_LIMIT {
        table[d] = (1 << 16) / d as i64;
        d += 1;
    }
    table
};

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

    #[inline]
    fn update(&mut self, bit: bool) {
        let divisor = (self.seen as usize + 2).min(ADAPT_LIMIT);
        let p = i64::from(self.p0);
        let target = if bit { 0 } else { i64::from(ONE) };
        let next = p + (((target - p) * RECIPROCAL[divisor]) >> 16);
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

/// Adaptive state for one column's residuals.
#[derive(Clone)]
pub(crate) struct ResidualContext {
    /// Running sum and count of recent `z`; their ratio's bit length is the expected bucket.
    sum: u64,
    count: u32,
    hit: [AdaptiveBit; 65],
    above: [AdaptiveBit; 65],
    up: [AdaptiveBit; UNARY_CONTEXTS],
    down: [AdaptiveBit; UNARY_CONTEXTS],
    top_mantissa: [AdaptiveBit; 65],
}

impl Default for ResidualContext {
    fn default() -> Self {
        Self {
            sum: 0,
            count: 0,
            hit: [AdaptiveBit::FAIR; 65],
            above: [AdaptiveBit::FAIR; 65],
            up: [AdaptiveBit::FAIR; UNARY_CONTEXTS],
            down: [AdaptiveBit::FAIR; UNARY_CONTEXTS],
            top_mantissa: [AdaptiveBit::FAIR; 65],
        }
    }
}

impl ResidualContext {
    #[inline]
    fn expected_bucket(&self) -> u32 {
        if self.count == 0 {
            0
        } else {
            bucket_of(self.sum / u64::from(self.count))
        }
    }

    #[inline]
    fn observe(&mut self, z: u64) {
        self.sum = self.sum.saturating_add(z);
        self.count += 1;
        if self.count >= MEAN_WINDOW {
            self.sum /= 2;
            self.count /= 2;
        }
    }
}

pub(crate) fn zigzag(r: i64) -> u64 {
    ((r << 1) ^ (r >> 63)) as u64
}

pub(crate) fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

#[inline]
fn bucket_of(z: u64) -> u32 {
    64 - z.leading_zeros()
}

pub(crate) struct ResidualEncoder {
    coder: DefaultRangeEncoder,
    raw: RawBitWriter,
}

/// Uniform bits go around the range coder, packed LSB-first into 64-bit words: they cost
/// exactly their width either way, and shifting is far cheaper than coding.
#[derive(Default)]
struct RawBitWriter {
    words: Vec<u64>,
    current: u64,
    filled: u32,
}

impl RawBitWriter {
    #[inline]
    fn put(&mut self, value: u64, count: u32) {
        if count == 0 {
            return;
        }
        let value = value & (u64::MAX >> (64 - count));
        self.current |= value << self.filled;
        let room = 64 - self.filled;
        if count >= room {
            self.words.push(self.current);
            self.current = if room == 64 { 0 } else { value >> room };
            self.filled = count - room;
        } else {
            self.filled += count;
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.filled > 0 {
            self.words.push(self.current);
        }
        let used = self.words.len() * 8
            - if self.filled > 0 {
                (64 - self.filled as usize) / 8
            } else {
                0
            };
        let mut bytes: Vec<u8> = self.words.iter().flat_map(|w| w.to_le_bytes()).collect();
        bytes.truncate(used);
        bytes
    }
}

struct RawBitReader<'a> {
    bytes: &'a [u8],
    /// Next bit to read.
    position: usize,
}

impl RawBitReader<'_> {
    #[inline]
    fn get(&mut self, count: u32) -> Result<u64, CodecError> {
        if count == 0 {
            return Ok(0);
        }
        let end = self.position + count as usize;
        if end > self.bytes.len() * 8 {
            return Err(CodecError::Corrupt("raw bits run past the payload"));
        }
        let first = self.position / 8;
        let shift = self.position % 8;
        // Up to 64 bits starting mid-byte span at most 9 bytes.
        let mut window = [0u8; 16];
        let available = (self.bytes.len() - first).min(16);
        window[..available].copy_from_slice(&self.bytes[first..first + available]);
        let wide = u128::from_le_bytes(window) >> shift;
        self.position = end;
        Ok((wide as u64) & (u64::MAX >> (64 - count)))
    }
}

impl ResidualEncoder {
    pub(crate) fn new() -> Self {
        Self {
            coder: DefaultRangeEncoder::new(),
            raw: RawBitWriter::default(),
        }
    }

    fn bit(&mut self, model: &mut AdaptiveBit, bit: bool) {
        // The range coder cannot fail with a model that gives every symbol a nonzero
        // probability and an in-memory backend.
        let _ = self.coder.encode_symbol(bit, *model);
        model.update(bit);
    }

    #[inline]
    fn raw_bits(&mut self, value: u64, count: u32) {
        self.raw.put(value, count);
    }

    pub(crate) fn encode(&mut self, ctx: &mut ResidualContext, residual: i64) {
        let z = zigzag(residual);
        let bucket = bucket_of(z);
        let k = ctx.expected_bucket();
        self.bit(&mut ctx.hit[k as usize], bucket != k);
        if bucket != k {
            let above = bucket > k;
            self.bit(&mut ctx.above[k as usize], above);
            let (distance, room, steps) = if above {
                (bucket - k - 1, 64 - k - 1, &mut ctx.up)
            } else {
                (k - bucket - 1, k - 1, &mut ctx.down)
            };
            for i in 0..room {
                let more = distance > i;
                let slot = (i as usize).min(UNARY_CONTEXTS - 1);
                let _ = self.coder.encode_symbol(more, steps[slot]);
                steps[slot].update(more);
                if !more {
                    break;
                }
            }
        }
        if bucket >= 2 {
            let below_top = bucket - 1;
            let top = (z >> (below_top - 1)) & 1 == 1;
            self.bit(&mut ctx.top_mantissa[bucket as usize], top);
            self.raw_bits(z, below_top - 1);
        }
        ctx.observe(z);
    }

    /// Finishes the range coder and returns its words as little-endian bytes.
    /// The range coder's word count (varint), its words (little-endian), then the raw bits.
    pub(crate) fn finish(self) -> Vec<u8> {
        let words = self.coder.into_compressed().unwrap_or_default();
        let mut out = Vec::with_capacity(words.len() * 4 + self.raw.words.len() * 8 + 4);
        crate::varint::put_uvarint(&mut out, words.len() as u64);
        out.extend(words.iter().flat_map(|w| w.to_le_bytes()));
        out.extend_from_slice(&self.raw.finish());
        out
    }
}

pub(crate) struct ResidualDecoder<'a> {
    coder: DefaultRangeDecoder,
    raw: RawBitReader<'a>,
}

const CORRUPT: CodecError = CodecError::Corrupt("entropy-coded section does not decode");

impl<'a> ResidualDecoder<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Result<Self, CodecError> {
        let mut reader = crate::varint::Reader::new(bytes);
        let count = reader.uvarint()?;
        let words_len = usize::try_from(count)
            .ok()
            .and_then(|n| n.checked_mul(4))
            .filter(|&n| n <= reader.remaining())
            .ok_or(CORRUPT)?;
        let words: Vec<u32> = reader
            .take(words_len)?
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let raw = reader.take(reader.remaining())?;
        let coder = DefaultRangeDecoder::from_compressed(words).map_err(|_| CORRUPT)?;
        Ok(Self {
            coder,
            raw: RawBitReader {
                bytes: raw,
                position: 0,
            },
        })
    }

    fn bit(&mut self, model: &mut AdaptiveBit) -> Result<bool, CodecError> {
        let bit = self.coder.decode_symbol(*model).map_err(|_| CORRUPT)?;
        model.update(bit);
        Ok(bit)
    }

    #[inline]
    fn raw_bits(&mut self, count: u32) -> Result<u64, CodecError> {
        self.raw.get(count)
    }

    pub(crate) fn decode(&mut self, ctx: &mut ResidualContext) -> Result<i64, CodecError> {
        let k = ctx.expected_bucket();
        let bucket = if !self.bit(&mut ctx.hit[k as usize])? {
            k
        } else {
            let above = self.bit(&mut ctx.above[k as usize])?;
            let (room, steps) = if above {
                (64 - k - 1, &mut ctx.up)
            } else {
                (k.saturating_sub(1), &mut ctx.down)
            };
            if !above && k == 0 {
                return Err(CodecError::Corrupt("residual bucket below zero"));
            }
            let mut distance = 0;
            while distance < room {
                let slot = (distance as usize).min(UNARY_CONTEXTS - 1);
                let more = self.coder.decode_symbol(steps[slot]).map_err(|_| CORRUPT)?;
                steps[slot].update(more);
                if !more {
                    break;
                }
                distance += 1;
            }
            if above {
                k + 1 + distance
            } else {
                k - 1 - distance
            }
        };
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
        ctx.observe(z);
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
