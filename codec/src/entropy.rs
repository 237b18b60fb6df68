//! Adaptive binary range coding of integer residuals.
//!
//! A residual `r` is zigzag-mapped to `z`, split into a bucket `b` (the bit length of `z`) and
//! `b - 1` mantissa bits below the implicit leading one. The bucket is coded relative to the
//! bit length `k` of the running mean of recent `z` (as LOCO-I estimates its Golomb
//! parameter): "is it `k`?", "above or below?", then a unary distance, each decision with an
//! adaptive probability. The top mantissa bit has an adaptive probability per bucket; the
//! rest are uniform. Models adapt per symbol with integer updates, so encoder and decoder
//! stay in lockstep on every machine, and start afresh in every packet, so packets decode
//! independently.
//!
//! Every decision is binary, so the coder is a binary arithmetic coder (the LZMA layout: a
//! 32-bit range split by a 16-bit probability, byte-wise renormalisation, carries resolved in
//! the encoder) rather than a general multi-symbol range coder: one multiply and one compare
//! per decision is what makes decoding run at memory speed.

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

    #[inline(always)]
    fn update(&mut self, bit: bool) {
        let divisor = (self.seen as usize + 2).min(ADAPT_LIMIT);
        let p = i64::from(self.p0);
        let target = if bit { 0 } else { i64::from(ONE) };
        let next = p + (((target - p) * RECIPROCAL[divisor]) >> 16);
        self.p0 = (next as u32).clamp(PROB_MIN, ONE - PROB_MIN);
        self.seen = self.seen.saturating_add(1);
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
    /// The bit length of `sum / count` (integer division), without dividing: with `m` the
    /// difference of the two bit lengths, the quotient has `m` or `m + 1` bits.
    #[inline]
    fn expected_bucket(&self) -> u32 {
        if self.count == 0 || self.sum < u64::from(self.count) {
            return 0;
        }
        let count = u64::from(self.count);
        let m = bucket_of(self.sum) - bucket_of(count);
        if u128::from(self.sum) >= u128::from(count) << m {
            m + 1
        } else {
            m
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

/// Renormalise when the range falls below this.
const TOP: u32 = 1 << 24;

/// Binary arithmetic encoder: `low` keeps a 33rd bit for the carry, and a run of 0xFF bytes
/// waits in `cache`/`pending` until it is known whether the carry reaches it.
struct BinaryEncoder {
    low: u64,
    range: u32,
    cache: u8,
    pending: u64,
    out: Vec<u8>,
}

impl BinaryEncoder {
    fn new() -> Self {
        Self {
            low: 0,
            range: u32::MAX,
            cache: 0,
            pending: 1,
            out: Vec::new(),
        }
    }

    #[inline(always)]
    fn encode(&mut self, p0: u32, bit: bool) {
        let bound = (self.range >> PRECISION) * p0;
        let mask = (bit as u32).wrapping_neg();
        self.low += u64::from(bound & mask);
        self.range = (bound & !mask) | ((self.range - bound) & mask);
        while self.range < TOP {
            self.range <<= 8;
            self.shift_low();
        }
    }

    #[inline]
    fn shift_low(&mut self) {
        if self.low < 0xFF00_0000 || self.low >= 1 << 32 {
            let carry = (self.low >> 32) as u8;
            let mut byte = self.cache;
            loop {
                self.out.push(byte.wrapping_add(carry));
                byte = 0xFF;
                self.pending -= 1;
                if self.pending == 0 {
                    break;
                }
            }
            self.cache = (self.low >> 24) as u8;
        }
        self.pending += 1;
        self.low = (self.low & 0x00FF_FFFF) << 8;
    }

    /// The coded bytes; the first is always zero (the carry slot) and is left out.
    fn finish(mut self) -> Vec<u8> {
        // Any value in [low, low + range) decodes the same. Take the one with the most
        // trailing zero bits: the decoder reads zeros past the end, so those bytes need not
        // be stored (small packets are where a few bytes matter).
        let end = self.low + u64::from(self.range);
        for zeros in (0..=32).rev() {
            let mask = (1u64 << zeros) - 1;
            let value = (self.low + mask) & !mask;
            if value < end {
                self.low = value;
                break;
            }
        }
        for _ in 0..5 {
            self.shift_low();
        }
        // Only the flush's bytes may go: the decoder tolerates four bytes of padding.
        for _ in 0..4 {
            if self.out.last() != Some(&0) {
                break;
            }
            self.out.pop();
        }
        self.out.drain(..1.min(self.out.len()));
        self.out
    }
}

/// Reads past the end see zero bytes; more than a few of them mean the section is corrupt.
struct BinaryDecoder<'a> {
    bytes: &'a [u8],
    position: usize,
    code: u32,
    range: u32,
}

impl<'a> BinaryDecoder<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        let mut decoder = Self {
            bytes,
            position: 0,
            code: 0,
            range: u32::MAX,
        };
        for _ in 0..4 {
            decoder.code = (decoder.code << 8) | u32::from(decoder.next_byte());
        }
        decoder
    }

    #[inline]
    fn next_byte(&mut self) -> u8 {
        let byte = self.bytes.get(self.position).copied().unwrap_or(0);
        self.position += 1;
        byte
    }

    /// Branch-free: the decoded bits are close to coin flips, so a branch on them would be
    /// mispredicted about half the time.
    #[inline(always)]
    fn decode(&mut self, p0: u32) -> bool {
        let bound = (self.range >> PRECISION) * p0;
        let bit = self.code >= bound;
        let mask = (bit as u32).wrapping_neg();
        self.code -= bound & mask;
        self.range = (bound & !mask) | ((self.range - bound) & mask);
        // A decision shrinks the range by at most 2^16 / PROB_MIN < 2^11: at most two bytes.
        let shift = (self.range.leading_zeros() / 8) * 8;
        if shift > 0 {
            let next = self.next_bytes_be();
            self.range <<= shift;
            self.code =
                ((u64::from(self.code) << shift) | (u64::from(next) >> (32 - shift))) as u32;
            self.position += shift as usize / 8;
        }
        bit
    }

    /// The next four bytes, big-endian, without moving (zeros past the end).
    #[inline]
    fn next_bytes_be(&self) -> u32 {
        match self.bytes.get(self.position..self.position + 4) {
            Some(b) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            None => {
                let mut b = [0u8; 4];
                for (i, byte) in b.iter_mut().enumerate() {
                    *byte = self.bytes.get(self.position + i).copied().unwrap_or(0);
                }
                u32::from_be_bytes(b)
            }
        }
    }

    /// The encoder's flush leaves four bytes the decoder may read ahead into; beyond that the
    /// bytes were never written.
    #[inline]
    fn overran(&self) -> bool {
        self.position > self.bytes.len() + 4
    }
}

pub(crate) struct ResidualEncoder {
    coder: BinaryEncoder,
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
        self.position = end;
        // Up to 64 bits starting mid-byte span at most 9 bytes.
        let wide = match self.bytes.get(first..first + 16) {
            Some(window) => u128::from_le_bytes(window.try_into().unwrap_or([0; 16])),
            None => {
                let mut window = [0u8; 16];
                let available = self.bytes.len() - first;
                window[..available].copy_from_slice(&self.bytes[first..]);
                u128::from_le_bytes(window)
            }
        } >> shift;
        Ok((wide as u64) & (u64::MAX >> (64 - count)))
    }
}

impl ResidualEncoder {
    pub(crate) fn new() -> Self {
        Self {
            coder: BinaryEncoder::new(),
            raw: RawBitWriter::default(),
        }
    }

    #[inline(always)]
    fn bit(&mut self, model: &mut AdaptiveBit, bit: bool) {
        self.coder.encode(model.p0, bit);
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
                self.coder.encode(steps[slot].p0, more);
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

    /// The coded bytes' count (varint), the coded bytes, then the raw bits.
    pub(crate) fn finish(self) -> Vec<u8> {
        let coded = self.coder.finish();
        let mut out = Vec::with_capacity(coded.len() + self.raw.words.len() * 8 + 10);
        crate::varint::put_uvarint(&mut out, coded.len() as u64);
        out.extend_from_slice(&coded);
        out.extend_from_slice(&self.raw.finish());
        out
    }
}

pub(crate) struct ResidualDecoder<'a> {
    coder: BinaryDecoder<'a>,
    raw: RawBitReader<'a>,
}

const CORRUPT: CodecError = CodecError::Corrupt("entropy-coded section does not decode");

impl<'a> ResidualDecoder<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Result<Self, CodecError> {
        let mut reader = crate::varint::Reader::new(bytes);
        let count = reader.uvarint()?;
        let coded_len = usize::try_from(count)
            .ok()
            .filter(|&n| n <= reader.remaining())
            .ok_or(CORRUPT)?;
        let coded = reader.take(coded_len)?;
        let raw = reader.take(reader.remaining())?;
        Ok(Self {
            coder: BinaryDecoder::new(coded),
            raw: RawBitReader {
                bytes: raw,
                position: 0,
            },
        })
    }

    #[inline(always)]
    fn bit(&mut self, model: &mut AdaptiveBit) -> bool {
        let bit = self.coder.decode(model.p0);
        model.update(bit);
        bit
    }

    #[inline]
    fn raw_bits(&mut self, count: u32) -> Result<u64, CodecError> {
        self.raw.get(count)
    }

    pub(crate) fn decode(&mut self, ctx: &mut ResidualContext) -> Result<i64, CodecError> {
        let k = ctx.expected_bucket();
        let bucket = if !self.bit(&mut ctx.hit[k as usize]) {
            k
        } else {
            let above = self.bit(&mut ctx.above[k as usize]);
            let (room, steps) = if above {
                (63u32.saturating_sub(k), &mut ctx.up)
            } else {
                (k.saturating_sub(1), &mut ctx.down)
            };
            if !above && k == 0 {
                return Err(CodecError::Corrupt("residual bucket below zero"));
            }
            // A running mean of 64 bits leaves no bucket above it: only a corrupt packet
            // gets here (found by fuzzing).
            if above && k >= 64 {
                return Err(CodecError::Corrupt("residual bucket beyond 64 bits"));
            }
            let mut distance = 0;
            while distance < room {
                let slot = (distance as usize).min(UNARY_CONTEXTS - 1);
                let more = self.coder.decode(steps[slot].p0);
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
                let top = self.bit(&mut ctx.top_mantissa[bucket as usize]) as u64;
                let rest = self.raw_bits(below_top - 1)?;
                (1u64 << below_top) | (top << (below_top - 1)) | rest
            }
        };
        if self.coder.overran() {
            return Err(CORRUPT);
        }
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

    /// Found by fuzzing (`decode_packet`): a bounded packet whose residuals drive the running
    /// mean to 64 bits, then claim a bucket above it.
    #[test]
    fn a_bucket_above_a_64_bit_mean_is_corrupt_not_a_panic() {
        const PACKET: [u8; 163] = [
            0x4c, 0x59, 0x44, 0x52, 0x01, 0x02, 0x03, 0x01, 0xa8, 0x99, 0x23, 0x54, 0x28, 0x00,
            0x00, 0x00, 0x00, 0xca, 0x9a, 0x3b, 0x00, 0x00, 0x00, 0x00, 0x4c, 0xa3, 0x84, 0xd3,
            0x07, 0x31, 0xe8, 0x07, 0x01, 0x09, 0x10, 0x00, 0x01, 0x08, 0x10, 0x00, 0x01, 0x09,
            0x10, 0x00, 0x01, 0x08, 0x07, 0x00, 0x01, 0x08, 0x07, 0x00, 0x01, 0x09, 0x07, 0x00,
            0x22, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x78,
            0x7c, 0xe2, 0x57, 0x69, 0x9b, 0x9b, 0x9b, 0x9b, 0x9b, 0x9b, 0x9b, 0x9b, 0x9b, 0x9b,
            0x9b, 0x9b, 0x9b, 0x9b, 0x9b, 0x9b, 0xa3, 0xa9, 0xe1, 0x3a, 0x40, 0x4e, 0x55, 0x3d,
            0x9b, 0xd4, 0x18, 0x3a, 0xe8, 0x99, 0x99, 0xc9, 0x1d,
        ];
        // The fuzz target makes the CRC valid so that the payload decoders are reached.
        let mut packet = PACKET;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&packet[..24]), &packet[28..]);
        packet[24..28].copy_from_slice(&crc.to_le_bytes());
        let decoded = crate::decode_packet(&crate::synthetic::imu_schema(), &packet);
        assert!(
            matches!(decoded, Err(CodecError::Corrupt(_))),
            "{decoded:?}"
        );
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
