//! The packet container; `codec/FORMAT.md` is its specification and must change with it.

use crate::CodecError;
use crate::varint::Reader;

pub const MAGIC: [u8; 4] = *b"LYDR";
/// Version of the container layout (not of the codecs inside it).
pub const FORMAT_VERSION: u8 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 28;
const CRC_OFFSET: usize = 24;

/// Which codec produced a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CodecId {
    /// Per-channel prediction with adaptive binary range coding (`LosslessCodec`).
    Lossless = 1,
    /// Error-bounded predictive quantisation (`BoundedCodec`).
    Bounded = 2,
    /// Learned prediction and residual distribution (`NeuralCodec`).
    Neural = 3,
}

impl TryFrom<u8> for CodecId {
    type Error = CodecError;
    fn try_from(value: u8) -> Result<Self, CodecError> {
        match value {
            1 => Ok(CodecId::Lossless),
            2 => Ok(CodecId::Bounded),
            3 => Ok(CodecId::Neural),
            other => Err(CodecError::UnknownCodec(other)),
        }
    }
}

/// The fixed-size header of every packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketHeader {
    pub codec: CodecId,
    pub codec_version: u8,
    /// Index on the stream's quality ladder; 0 is lossless.
    pub quality: u8,
    /// Low 32 bits of [`crate::StreamSchema::hash`].
    pub schema_hash: u32,
    pub frame_count: u16,
    pub first_timestamp_ns: i64,
}

impl PacketHeader {
    /// The header of a block of `frame_count` frames of `schema`'s stream.
    pub fn for_block(
        codec: CodecId,
        codec_version: u8,
        quality: u8,
        schema: &crate::StreamSchema,
        frame_count: u16,
        first_timestamp_ns: i64,
    ) -> PacketHeader {
        PacketHeader {
            codec,
            codec_version,
            quality,
            schema_hash: schema.hash() as u32,
            frame_count,
            first_timestamp_ns,
        }
    }
}

/// One encoded block of frames: header plus codec payload, protected by CRC-32C.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub header: PacketHeader,
    pub payload: Vec<u8>,
}

impl Packet {
    /// Total size on the wire.
    pub fn len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Never: a packet always has its header (and at least one frame).
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let h = &self.header;
        let mut out = Vec::with_capacity(self.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&[FORMAT_VERSION, h.codec as u8, h.codec_version, h.quality]);
        out.extend_from_slice(&h.schema_hash.to_le_bytes());
        out.extend_from_slice(&h.frame_count.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&h.first_timestamp_ns.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&out), &self.payload);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// Parses and verifies a packet from untrusted bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Packet, CodecError> {
        let mut r = Reader::new(bytes);
        let magic = r.array::<4>()?;
        if magic != MAGIC {
            return Err(CodecError::BadMagic(magic));
        }
        let [format, codec, codec_version, quality] = r.array::<4>()?;
        if format != FORMAT_VERSION {
            return Err(CodecError::UnsupportedFormat(format));
        }
        let codec = CodecId::try_from(codec)?;
        let schema_hash = u32::from_le_bytes(r.array()?);
        let frame_count = u16::from_le_bytes(r.array()?);
        let reserved = u16::from_le_bytes(r.array()?);
        let first_timestamp_ns = i64::from_le_bytes(r.array()?);
        let expected = u32::from_le_bytes(r.array()?);
        let payload = r.take(r.remaining())?;
        let actual = crc32c::crc32c_append(crc32c::crc32c(&bytes[..CRC_OFFSET]), payload);
        if expected != actual {
            return Err(CodecError::CrcMismatch { expected, actual });
        }
        if reserved != 0 {
            return Err(CodecError::Corrupt("reserved header bits set"));
        }
        if frame_count == 0 {
            return Err(CodecError::Corrupt("packet holds no frames"));
        }
        Ok(Packet {
            header: PacketHeader {
                codec,
                codec_version,
                quality,
                schema_hash,
                frame_count,
                first_timestamp_ns,
            },
            payload: payload.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Packet {
        Packet {
            header: PacketHeader {
                codec: CodecId::Lossless,
                codec_version: 1,
                quality: 0,
                schema_hash: 0xdead_beef,
                frame_count: 20,
                first_timestamp_ns: -5,
            },
            payload: vec![1, 2, 3, 250],
        }
    }

    #[test]
    fn header_round_trips() {
        let bytes = sample().to_bytes();
        assert_eq!(bytes.len(), HEADER_LEN + 4);
        assert_eq!(Packet::from_bytes(&bytes).unwrap(), sample());
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let bytes = sample().to_bytes();
        for bit in 0..bytes.len() * 8 {
            let mut corrupt = bytes.clone();
            corrupt[bit / 8] ^= 1 << (bit % 8);
            assert!(
                Packet::from_bytes(&corrupt).is_err(),
                "bit {bit} flip accepted"
            );
        }
    }

    #[test]
    fn every_truncation_is_rejected_or_detected() {
        let bytes = sample().to_bytes();
        for len in 0..bytes.len() {
            assert!(
                Packet::from_bytes(&bytes[..len]).is_err(),
                "length {len} accepted"
            );
        }
    }
}
