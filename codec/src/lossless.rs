//! The lossless predictive codec (codec id 1, version 1).
//!
//! Per block and per column (the timestamps, then each channel) it picks the cheapest exact
//! integer representation (plain integers, counts of the channel's ADC step, or the
//! order-preserving bit pattern of the float) and the cheapest predictor (previous sample,
//! linear extrapolation, or none), then range-codes the prediction residuals with adaptive
//! binary models (see `entropy`). Layout in `codec/FORMAT.md`.

use crate::container::{CodecId, Packet, PacketHeader};
use crate::entropy::{ResidualContext, ResidualDecoder, ResidualEncoder, zigzag};
use crate::frame::lsb_multiple;
use crate::varint::{Reader, put_uvarint};
use crate::{Codec, CodecError, Frame, SampleType, StreamSchema};

const VERSION: u8 = 1;
/// Descriptor bit: every residual of the column is zero and none is coded.
const ALL_ZERO_SHIFT: u8 = 4;

/// How a column's values become integers, bit-exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Representation {
    Integer = 0,
    LsbCounts = 1,
    F32Bits = 2,
    F64Bits = 3,
}

impl Representation {
    fn from_tag(tag: u8) -> Result<Self, CodecError> {
        Ok(match tag {
            0 => Representation::Integer,
            1 => Representation::LsbCounts,
            2 => Representation::F32Bits,
            3 => Representation::F64Bits,
            _ => return Err(CodecError::Corrupt("unknown column representation")),
        })
    }
}

fn ordered_f64(bits: u64) -> i64 {
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    };
    (ordered ^ 1 << 63) as i64
}

fn unordered_f64(value: i64) -> u64 {
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
    let ordered = u32::try_from(value + (1 << 31))
        .map_err(|_| CodecError::Corrupt("f32 column value out of range"))?;
    Ok(if ordered >> 31 == 1 {
        ordered & !(1 << 31)
    } else {
        !ordered
    })
}

fn as_exact_integer(x: f64) -> Option<i64> {
    let i = x as i64;
    ((i as f64).to_bits() == x.to_bits()).then_some(i)
}

fn to_integers(values: &[f64], repr: Representation, lsb: f64, ty: SampleType) -> Option<Vec<i64>> {
    match repr {
        Representation::Integer => values.iter().map(|&x| as_exact_integer(x)).collect(),
        Representation::LsbCounts => values
            .iter()
            .map(|&x| {
                let count = (x / lsb).round();
                let count = as_exact_integer(count)?;
                (lsb_multiple(count, lsb, ty).to_bits() == x.to_bits()).then_some(count)
            })
            .collect(),
        Representation::F32Bits => values
            .iter()
            .map(|&x| {
                let narrow = x as f32;
                (f64::from(narrow).to_bits() == x.to_bits()).then(|| ordered_f32(narrow.to_bits()))
            })
            .collect(),
        Representation::F64Bits => Some(values.iter().map(|x| ordered_f64(x.to_bits())).collect()),
    }
}

fn from_integer(v: i64, repr: Representation, lsb: f64, ty: SampleType) -> Result<f64, CodecError> {
    Ok(match repr {
        Representation::Integer => v as f64,
        Representation::LsbCounts => lsb_multiple(v, lsb, ty),
        Representation::F32Bits => f64::from(f32::from_bits(unordered_f32(v)?)),
        Representation::F64Bits => f64::from_bits(unordered_f64(v)),
    })
}

/// Candidate representations, cheapest first; `F64Bits` always succeeds.
fn candidates(ty: SampleType, lsb: Option<f64>) -> Vec<Representation> {
    let mut out = Vec::with_capacity(4);
    if ty.is_integer() {
        out.push(Representation::Integer);
    }
    if lsb.is_some() {
        out.push(Representation::LsbCounts);
    }
    if ty == SampleType::F32 {
        out.push(Representation::F32Bits);
    }
    out.push(Representation::F64Bits);
    out
}

/// Predicts `x[i]` from earlier values; `history` holds the two values before the block.
fn residuals(values: &[i64], order: u8, history: [i64; 2]) -> impl Iterator<Item = i64> + '_ {
    let (mut prev2, mut prev1) = (history[0], history[1]);
    values.iter().map(move |&x| {
        let prediction = predict(order, prev2, prev1);
        prev2 = prev1;
        prev1 = x;
        x.wrapping_sub(prediction)
    })
}

fn predict(order: u8, prev2: i64, prev1: i64) -> i64 {
    match order {
        0 => 0,
        1 => prev1,
        _ => prev1.wrapping_mul(2).wrapping_sub(prev2),
    }
}

/// Rough code length in bits, enough to rank predictors.
fn cost(residuals: impl Iterator<Item = i64>) -> u64 {
    residuals
        .map(|r| u64::from(64 - zigzag(r).leading_zeros()) + 1)
        .sum()
}

/// Timestamps start from the header's first timestamp, extrapolated backwards by one nominal
/// period, so a regular stream's timestamp residuals are all zero.
fn timestamp_history(first: i64, schema: &StreamSchema) -> [i64; 2] {
    let period = if schema.rate_hz > 0.0 && schema.rate_hz.is_finite() {
        (1e9 / schema.rate_hz).round() as i64
    } else {
        0
    };
    [
        first.wrapping_sub(period.wrapping_mul(2)),
        first.wrapping_sub(period),
    ]
}

/// Per-channel prediction with adaptive range coding; exact for every `f64` bit pattern.
#[derive(Debug, Default, Clone, Copy)]
pub struct LosslessCodec;

impl Codec for LosslessCodec {
    fn id(&self) -> CodecId {
        CodecId::Lossless
    }

    fn encode(&self, schema: &StreamSchema, frames: &[Frame]) -> Result<Packet, CodecError> {
        let first = frames.first().ok_or(CodecError::EmptyBlock)?;
        let frame_count =
            u16::try_from(frames.len()).map_err(|_| CodecError::BlockTooLarge(frames.len()))?;
        let channels = schema.channels.len();
        if let Some((i, f)) = frames
            .iter()
            .enumerate()
            .find(|(_, f)| f.values.len() != channels)
        {
            return Err(CodecError::ChannelCount {
                frame: i,
                expected: channels,
                found: f.values.len(),
            });
        }

        let mut descriptors = Vec::with_capacity(channels + 1);
        let mut encoder = ResidualEncoder::new();
        let mut code_column = |ints: &[i64], repr: Representation, history: [i64; 2]| {
            let order = (0..=2u8)
                .min_by_key(|&o| cost(residuals(ints, o, history)))
                .unwrap_or(1);
            let all_zero = residuals(ints, order, history).all(|r| r == 0);
            descriptors.push(order | (repr as u8) << 2 | u8::from(all_zero) << ALL_ZERO_SHIFT);
            if !all_zero {
                let mut ctx = ResidualContext::default();
                for r in residuals(ints, order, history) {
                    encoder.encode(&mut ctx, r);
                }
            }
        };

        let times: Vec<i64> = frames.iter().map(|f| f.timestamp_ns).collect();
        code_column(
            &times,
            Representation::Integer,
            timestamp_history(first.timestamp_ns, schema),
        );

        let mut column = Vec::with_capacity(frames.len());
        for ch in 0..channels {
            column.clear();
            column.extend(frames.iter().map(|f| f.values[ch]));
            let lsb = schema.lsb(ch);
            let (repr, ints) = candidates(schema.sample_type, lsb)
                .into_iter()
                .find_map(|repr| {
                    to_integers(&column, repr, lsb.unwrap_or(1.0), schema.sample_type)
                        .map(|ints| (repr, ints))
                })
                .expect("F64Bits represents every value");
            code_column(&ints, repr, [0, 0]);
        }

        let mut payload = Vec::with_capacity(descriptors.len() + 16 + frames.len() * channels);
        put_uvarint(&mut payload, descriptors.len() as u64);
        payload.extend_from_slice(&descriptors);
        payload.extend_from_slice(&encoder.finish());
        Ok(Packet {
            header: PacketHeader {
                codec: CodecId::Lossless,
                codec_version: VERSION,
                quality: 0,
                schema_hash: schema.hash() as u32,
                frame_count,
                first_timestamp_ns: first.timestamp_ns,
            },
            payload,
        })
    }

    fn decode(&self, schema: &StreamSchema, packet: &Packet) -> Result<Vec<Frame>, CodecError> {
        let h = &packet.header;
        if h.codec != CodecId::Lossless {
            return Err(CodecError::WrongCodec {
                expected: CodecId::Lossless,
                found: h.codec,
            });
        }
        if h.codec_version != VERSION {
            return Err(CodecError::UnsupportedCodecVersion {
                codec: h.codec,
                version: h.codec_version,
            });
        }
        if h.schema_hash != schema.hash() as u32 {
            return Err(CodecError::SchemaMismatch {
                packet: u64::from(h.schema_hash),
                decoder: schema.hash() & 0xffff_ffff,
            });
        }
        let n = usize::from(h.frame_count);
        let channels = schema.channels.len();
        let mut reader = Reader::new(&packet.payload);
        let columns = reader.uvarint()?;
        if columns != channels as u64 + 1 {
            return Err(CodecError::Corrupt("column count differs from the schema"));
        }
        let descriptors = reader.take(channels + 1)?;
        let mut decoder = ResidualDecoder::new(reader.take(reader.remaining())?)?;

        let mut decode_column = |descriptor: u8, history: [i64; 2]| {
            let order = descriptor & 0b11;
            if order > 2 || descriptor >> (ALL_ZERO_SHIFT + 1) != 0 {
                return Err(CodecError::Corrupt("bad column descriptor"));
            }
            let all_zero = descriptor >> ALL_ZERO_SHIFT & 1 == 1;
            let mut ctx = ResidualContext::default();
            let (mut prev2, mut prev1) = (history[0], history[1]);
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                let residual = if all_zero {
                    0
                } else {
                    decoder.decode(&mut ctx)?
                };
                let x = predict(order, prev2, prev1).wrapping_add(residual);
                out.push(x);
                prev2 = prev1;
                prev1 = x;
            }
            Ok(out)
        };

        let times = decode_column(
            descriptors[0],
            timestamp_history(h.first_timestamp_ns, schema),
        )?;
        let mut frames: Vec<Frame> = times
            .into_iter()
            .map(|t| Frame::new(t, Vec::with_capacity(channels)))
            .collect();
        for (ch, &descriptor) in descriptors[1..].iter().enumerate() {
            let repr = Representation::from_tag(descriptor >> 2 & 0b11)?;
            let lsb = match repr {
                Representation::LsbCounts => schema.lsb(ch).ok_or(CodecError::Corrupt(
                    "ADC-step column for a channel without one",
                ))?,
                _ => 1.0,
            };
            for (frame, v) in frames.iter_mut().zip(decode_column(descriptor, [0, 0])?) {
                frame
                    .values
                    .push(from_integer(v, repr, lsb, schema.sample_type)?);
            }
        }
        Ok(frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::tests::imu_schema;
    use crate::quantize_to_lsb;
    use proptest::prelude::*;

    fn imu_block(n: usize, seed: u64) -> Vec<Frame> {
        let schema = imu_schema();
        let mut state = seed;
        let mut noise = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f64 / (1u64 << 31) as f64) - 0.5
        };
        (0..n)
            .map(|i| {
                let t = i as f64 * 0.005;
                let raw = [
                    0.3 * (t * 3.0).sin() + 0.05 * noise(),
                    0.05 * noise(),
                    9.80665 + 0.05 * noise(),
                    0.01 * noise(),
                    0.01 * noise(),
                    0.5 * (t * 2.0).cos() + 0.01 * noise(),
                ];
                let values = raw
                    .iter()
                    .enumerate()
                    .map(|(c, &x)| quantize_to_lsb(x, schema.lsb[c].unwrap(), SampleType::F32))
                    .collect();
                Frame::new(1_000_000_000 + i as i64 * 5_000_000, values)
            })
            .collect()
    }

    fn assert_round_trip(schema: &StreamSchema, frames: &[Frame]) -> Packet {
        let packet = LosslessCodec.encode(schema, frames).unwrap();
        let bytes = packet.to_bytes();
        let parsed = Packet::from_bytes(&bytes).unwrap();
        let decoded = LosslessCodec.decode(schema, &parsed).unwrap();
        assert_eq!(decoded.len(), frames.len());
        for (a, b) in frames.iter().zip(&decoded) {
            assert!(a.bit_eq(b), "{a:?} != {b:?}");
        }
        packet
    }

    #[test]
    fn quantised_imu_round_trips_and_compresses() {
        let schema = imu_schema();
        let frames = imu_block(200, 1);
        let packet = assert_round_trip(&schema, &frames);
        let raw = frames.len() * (8 + schema.raw_value_bytes());
        let ratio = raw as f64 / packet.len() as f64;
        assert!(ratio > 2.5, "ratio {ratio:.2} on a quantised IMU block");
    }

    #[test]
    fn regular_timestamps_cost_almost_nothing() {
        let schema = imu_schema();
        let frames: Vec<Frame> = (0..200)
            .map(|i| Frame::new(i * 5_000_000, vec![0.0; 6]))
            .collect();
        let packet = assert_round_trip(&schema, &frames);
        assert!(
            packet.payload.len() < 24,
            "{} payload bytes",
            packet.payload.len()
        );
    }

    #[test]
    fn special_floats_round_trip_bit_exactly() {
        let mut schema = imu_schema();
        schema.lsb = vec![None; 6];
        schema.sample_type = SampleType::F64;
        let specials = [
            f64::NAN,
            -f64::NAN,
            f64::from_bits(0x7ff0_0000_0000_0001),
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            0.0,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::MIN,
            1e-310,
        ];
        let frames: Vec<Frame> = specials
            .iter()
            .enumerate()
            .map(|(i, &x)| Frame::new(i as i64, vec![x, -x, x * 0.5, 1.0, x, 2.0]))
            .collect();
        assert_round_trip(&schema, &frames);
        schema.sample_type = SampleType::F32;
        assert_round_trip(&schema, &frames);
    }

    #[test]
    fn integer_streams_round_trip_at_the_extremes() {
        let mut schema = imu_schema();
        schema.sample_type = SampleType::I64;
        schema.lsb = vec![None; 6];
        let big = (1i64 << 53) as f64;
        let frames: Vec<Frame> = (0..50)
            .map(|i| Frame::new(i64::MIN + i, vec![big, -big, i as f64, 0.0, -1.0, 1.5]))
            .collect();
        assert_round_trip(&schema, &frames);
    }

    #[test]
    fn wrong_schema_and_corrupt_payloads_are_errors_not_panics() {
        let schema = imu_schema();
        let packet = LosslessCodec.encode(&schema, &imu_block(40, 2)).unwrap();
        let mut other = schema.clone();
        other.rate_hz = 100.0;
        assert!(matches!(
            LosslessCodec.decode(&other, &packet),
            Err(CodecError::SchemaMismatch { .. })
        ));
        for cut in 0..packet.payload.len() {
            let mut truncated = packet.clone();
            truncated.payload.truncate(cut);
            let _ = LosslessCodec.decode(&schema, &truncated);
        }
        for i in 0..packet.payload.len() {
            let mut flipped = packet.clone();
            flipped.payload[i] ^= 0x5a;
            let _ = LosslessCodec.decode(&schema, &flipped);
        }
    }

    #[test]
    fn ragged_frames_are_rejected() {
        let schema = imu_schema();
        let mut frames = imu_block(5, 3);
        frames[3].values.pop();
        assert_eq!(
            LosslessCodec.encode(&schema, &frames),
            Err(CodecError::ChannelCount {
                frame: 3,
                expected: 6,
                found: 5
            })
        );
        assert_eq!(
            LosslessCodec.encode(&schema, &[]),
            Err(CodecError::EmptyBlock)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bits_round_trip(
            bits in proptest::collection::vec(any::<u64>(), 1..120),
            times in proptest::collection::vec(any::<i64>(), 1..120),
            f32_stream in any::<bool>(),
        ) {
            let mut schema = imu_schema();
            schema.sample_type = if f32_stream { SampleType::F32 } else { SampleType::F64 };
            let n = bits.len().min(times.len()) / 6 + 1;
            let frames: Vec<Frame> = (0..n)
                .map(|i| Frame::new(
                    times[i % times.len()],
                    (0..6).map(|c| f64::from_bits(bits[(i * 6 + c) % bits.len()])).collect(),
                ))
                .collect();
            let packet = LosslessCodec.encode(&schema, &frames).unwrap();
            let decoded = LosslessCodec.decode(&schema, &Packet::from_bytes(&packet.to_bytes()).unwrap()).unwrap();
            for (a, b) in frames.iter().zip(&decoded) {
                prop_assert!(a.bit_eq(b));
            }
        }
    }
}
