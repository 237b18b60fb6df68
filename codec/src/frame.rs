use serde::{Deserialize, Serialize};

/// One sample of every channel of a stream at one instant.
///
/// Values travel as `f64`, which holds every `i16`, `i32`, `f32` and every integer up to
/// 2^53 exactly; [`StreamSchema::sample_type`] says which of those the sensor produces, and
/// the codecs use it to pick a bit-exact integer representation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// The values come first and stay there (`repr(C)`): decoders build thousands of frames,
// and a frame copied into its vector in 16-byte moves then reads the inline values back as
// they were written, instead of stalling on moves that straddle two stores (measured: a
// two-channel stream decodes 5 % faster).
#[repr(C)]
pub struct Frame {
    pub values: FrameValues,
    /// Nanoseconds on the robot's clock (the simulator's clock in simulation).
    pub timestamp_ns: i64,
}

/// A frame's values: up to eight are kept inline, so that a decoder making thousands of
/// frames of a few channels allocates none of them (a fifth of decoding a two-channel stream
/// went to allocating and freeing one `Vec` per frame).
pub type FrameValues = smallvec::SmallVec<[f64; INLINE_VALUES]>;

/// How many values a frame holds without allocating.
pub(crate) const INLINE_VALUES: usize = 8;

impl Frame {
    pub fn new(timestamp_ns: i64, values: Vec<f64>) -> Self {
        Self {
            timestamp_ns,
            values: FrameValues::from_vec(values),
        }
    }

    /// A frame of the values in `values`, copied.
    pub fn from_slice(timestamp_ns: i64, values: &[f64]) -> Self {
        Self {
            timestamp_ns,
            values: FrameValues::from_slice(values),
        }
    }

    /// Bit-level equality: distinguishes -0.0 from 0.0 and compares NaN payloads.
    pub fn bit_eq(&self, other: &Frame) -> bool {
        self.timestamp_ns == other.timestamp_ns
            && self.values.len() == other.values.len()
            && self
                .values
                .iter()
                .zip(&other.values)
                .all(|(a, b)| a.to_bits() == b.to_bits())
    }
}

/// The numeric type a sensor produces; every value of the stream is exactly representable in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SampleType {
    I16,
    I32,
    /// Integers of magnitude up to 2^53 (encoder ticks, counters).
    I64,
    F32,
    F64,
}

impl SampleType {
    pub(crate) fn tag(self) -> u8 {
        match self {
            SampleType::I16 => 1,
            SampleType::I32 => 2,
            SampleType::I64 => 3,
            SampleType::F32 => 4,
            SampleType::F64 => 5,
        }
    }

    pub fn is_integer(self) -> bool {
        matches!(self, SampleType::I16 | SampleType::I32 | SampleType::I64)
    }
}

/// What kind of sensor or actuator a stream comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SensorKind {
    Imu,
    WheelEncoder,
    MotorCommand,
    MotorEffort,
    Lidar,
    Battery,
    Pose,
    Other,
}

impl SensorKind {
    fn tag(self) -> u8 {
        self as u8
    }
}

/// Describes one stream: its channels, units, rate and noise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamSchema {
    /// Stream name, also the last topic segment (`imu`, `wheels`, ...).
    pub name: String,
    pub kind: SensorKind,
    pub sample_type: SampleType,
    pub channels: Vec<String>,
    pub units: Vec<String>,
    /// Nominal sample rate in Hz.
    pub rate_hz: f64,
    /// Noise standard deviation per channel, in the channel's unit (0 when unknown).
    pub noise_sigma: Vec<f64>,
    /// ADC step per channel: every value is an integer multiple of it (rounded to
    /// `sample_type`), or `None` when the sensor reports unquantised values.
    pub lsb: Vec<Option<f64>>,
}

impl StreamSchema {
    /// 64-bit FNV-1a over a canonical byte form of everything that changes how samples are
    /// interpreted; packets carry it so a decoder never misreads another stream's data.
    pub fn hash(&self) -> u64 {
        let mut h = Fnv1a::new();
        h.bytes(self.name.as_bytes());
        h.bytes(&[self.kind.tag(), self.sample_type.tag()]);
        h.bytes(&(self.channels.len() as u32).to_le_bytes());
        for (i, channel) in self.channels.iter().enumerate() {
            h.bytes(channel.as_bytes());
            h.bytes(self.units.get(i).map_or(&[][..], |u| u.as_bytes()));
            let lsb = self.lsb.get(i).copied().flatten().unwrap_or(0.0);
            h.bytes(&lsb.to_bits().to_le_bytes());
        }
        h.bytes(&self.rate_hz.to_bits().to_le_bytes());
        h.finish()
    }

    /// Bytes of one frame's values when stored as the schema's sample type (what a raw
    /// uncompressed stream costs on the wire, timestamps excluded).
    pub fn raw_value_bytes(&self) -> usize {
        let width = match self.sample_type {
            SampleType::I16 => 2,
            SampleType::I32 | SampleType::F32 => 4,
            SampleType::I64 | SampleType::F64 => 8,
        };
        width * self.channels.len()
    }

    /// `|x - y|` in units of channel `index`'s noise sigma (in its own unit when the sigma is
    /// unknown), so that errors of channels with different units add up.
    pub fn error_in_sigmas(&self, index: usize, x: f64, y: f64) -> f64 {
        let sigma = self
            .noise_sigma
            .get(index)
            .copied()
            .filter(|s| *s > 0.0)
            .unwrap_or(1.0);
        (x - y).abs() / sigma
    }

    /// The ADC step of channel `index`, if it has one.
    pub fn lsb(&self, index: usize) -> Option<f64> {
        self.lsb.get(index).copied().flatten().filter(|q| *q > 0.0)
    }
}

/// Rounds `value` to the nearest multiple of `lsb` the way an ADC reports it, then to the
/// stream's sample type. The sensor models and the codecs share this function, so a codec's
/// integer representation reproduces the sensor's values bit for bit.
pub fn quantize_to_lsb(value: f64, lsb: f64, sample_type: SampleType) -> f64 {
    lsb_multiple((value / lsb).round() as i64, lsb, sample_type)
}

pub(crate) fn lsb_multiple(count: i64, lsb: f64, sample_type: SampleType) -> f64 {
    let value = count as f64 * lsb;
    match sample_type {
        SampleType::F32 => f64::from(value as f32),
        _ => value,
    }
}

struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // Field separator, so ("ab","c") and ("a","bc") hash differently.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) use crate::synthetic::imu_schema;

    /// The payload bytes of each channel of `frames` encoded as a stream of its own, summed:
    /// what a column costs predicted only from its own past.
    pub(crate) fn payload_of_each_channel_alone(
        codec: &dyn crate::Codec,
        schema: &StreamSchema,
        frames: &[Frame],
    ) -> usize {
        (0..schema.channels.len())
            .map(|c| {
                let (one, channel) = one_channel(schema, frames, c);
                codec.encode(&one, &channel).unwrap().payload.len()
            })
            .sum()
    }

    /// Asserts that `codec` refuses each packet of `earlier` (its bytes and codec version)
    /// by that version, codec `id`'s.
    pub(crate) fn assert_refused_by_version(
        codec: &dyn crate::Codec,
        id: crate::CodecId,
        schema: &StreamSchema,
        earlier: &[(&[u8], u8)],
    ) {
        for &(bytes, version) in earlier {
            let packet = crate::Packet::from_bytes(bytes).expect("a packet");
            let refused = codec.decode(schema, &packet);
            assert!(
                matches!(
                    refused,
                    Err(crate::CodecError::UnsupportedCodecVersion { codec, version: v })
                        if codec == id && v == version
                ),
                "version {version}: {refused:?}"
            );
        }
    }

    /// Channel `c` of a stream as a stream of its own.
    pub(crate) fn one_channel(
        schema: &StreamSchema,
        frames: &[Frame],
        c: usize,
    ) -> (StreamSchema, Vec<Frame>) {
        let mut one = schema.clone();
        one.channels = vec![schema.channels[c].clone()];
        one.units = vec![schema.units[c].clone()];
        one.noise_sigma = vec![schema.noise_sigma[c]];
        one.lsb = vec![schema.lsb[c]];
        let frames = frames
            .iter()
            .map(|f| Frame::new(f.timestamp_ns, vec![f.values[c]]))
            .collect();
        (one, frames)
    }

    #[test]
    fn schema_hash_changes_with_any_interpreting_field() {
        let base = imu_schema();
        let mut renamed = base.clone();
        renamed.channels[0] = "ax2".into();
        let mut retyped = base.clone();
        retyped.sample_type = SampleType::F64;
        let mut rescaled = base.clone();
        rescaled.lsb[3] = None;
        let hashes = [base.hash(), renamed.hash(), retyped.hash(), rescaled.hash()];
        for i in 0..hashes.len() {
            for j in i + 1..hashes.len() {
                assert_ne!(hashes[i], hashes[j], "{i} vs {j}");
            }
        }
        assert_eq!(base.hash(), imu_schema().hash());
    }

    #[test]
    fn quantize_is_an_exact_multiple() {
        let lsb = 0.004_788_636;
        for x in [-3.21, 0.0, 9.80665, 1e-9] {
            let q = quantize_to_lsb(x, lsb, SampleType::F32);
            let count = (q / lsb).round() as i64;
            assert_eq!(
                lsb_multiple(count, lsb, SampleType::F32).to_bits(),
                q.to_bits()
            );
        }
    }
}
