//! `lydlr-codec`: the data model and the codecs of lydlr.
//!
//! Owns [`Frame`] and [`StreamSchema`] (what a sensor-motor stream is), the versioned packet
//! container ([`Packet`], specified byte by byte in `codec/FORMAT.md`), the [`Codec`] trait and
//! the codecs themselves, with their entropy coding (a rANS coder of our own, `entropy`, for
//! the classical codecs; `constriction`'s range coder for the neural one).
//!
//! Must not: open sockets or files, spawn threads, or depend on the simulator, the bus or any
//! heavy framework. This crate is what a robot builds (it cross-compiles to aarch64), and every
//! function here is a pure transformation of bytes and samples (each thread keeps a few spare
//! vectors for the entropy coder's models: an allocation cache, invisible in any result).

mod column;
mod container;
mod divisor;
mod entropy;
mod error;
mod frame;
mod holes;
mod ladder;
mod lossless;
mod lossy;
pub mod neural;
pub mod synthetic;
mod timestamps;
mod varint;

pub use container::{CodecId, HEADER_LEN, MAGIC, Packet, PacketHeader};
pub use error::CodecError;
pub use frame::{Frame, FrameValues, SampleType, SensorKind, StreamSchema, quantize_to_lsb};
pub use ladder::{
    EntropyReport, QualityLadder, RdPoint, Rung, bounded_entropy_report, entropy_report,
};
pub use lossless::LosslessCodec;
pub use lossy::{BoundedCodec, ErrorBound, bound_in_units};
pub use neural::package::{ModelPackage, sha256_hex};
pub use neural::{NeuralCodec, NeuralModel};

/// The codec that decodes packets carrying `id`; neural packets need their model, which
/// only the caller holds ([`NeuralCodec`]).
pub fn codec_for(id: CodecId) -> Result<&'static dyn Codec, CodecError> {
    // The bound only matters when encoding; any instance decodes any bounded packet.
    const BOUNDED: BoundedCodec = BoundedCodec {
        bound: ErrorBound::Absolute(0.0),
        quality: 1,
    };
    match id {
        CodecId::Lossless => Ok(&LosslessCodec),
        CodecId::Bounded => Ok(&BOUNDED),
        CodecId::Neural => Err(CodecError::ModelRequired),
    }
}

/// Parses, verifies and decodes packet bytes with the codec named in their header.
pub fn decode_packet(schema: &StreamSchema, bytes: &[u8]) -> Result<Vec<Frame>, CodecError> {
    let packet = Packet::from_bytes(bytes)?;
    codec_for(packet.header.codec)?.decode(schema, &packet)
}

/// [`decode_packet`] into columns, for tables and analysis: the timestamps and one `Vec` per
/// channel, without building a frame for each row. Neural packets need their model
/// ([`decode_packet_with`]).
pub fn decode_packet_columns(
    schema: &StreamSchema,
    bytes: &[u8],
) -> Result<(Vec<i64>, Vec<Vec<f64>>), CodecError> {
    let packet = Packet::from_bytes(bytes)?;
    let block = match packet.header.codec {
        CodecId::Lossless => lossless::decode_lossless(schema, &packet, lossless::Layout::Columns)?,
        CodecId::Bounded => lossy::decode_bounded(schema, &packet, lossless::Layout::Columns)?,
        CodecId::Neural => return Err(CodecError::ModelRequired),
    };
    Ok(block.into_columns(schema.channels.len()))
}

/// [`decode_packet`] for packets of any codec: `model(fingerprint)` supplies the model a
/// neural packet names (from the packages the caller holds).
pub fn decode_packet_with(
    schema: &StreamSchema,
    bytes: &[u8],
    model: impl Fn(u32) -> Option<std::sync::Arc<NeuralModel>>,
) -> Result<Vec<Frame>, CodecError> {
    let packet = Packet::from_bytes(bytes)?;
    if packet.header.codec == CodecId::Neural {
        let model = model(neural::packet_model(&packet)?).ok_or(CodecError::ModelRequired)?;
        // The bound only matters when encoding.
        return NeuralCodec::new(model, ErrorBound::Absolute(0.0), packet.header.quality)
            .decode(schema, &packet);
    }
    codec_for(packet.header.codec)?.decode(schema, &packet)
}

/// A codec turns a block of frames of one stream into one [`Packet`] and back.
///
/// Implementations are stateless between blocks: every packet decodes on its own, so a lost
/// packet costs exactly its own frames.
pub trait Codec: Send + Sync {
    /// Identifier written into every packet this codec produces.
    fn id(&self) -> CodecId;

    /// Encodes `frames` (non-empty, each with `schema.channels.len()` values).
    fn encode(&self, schema: &StreamSchema, frames: &[Frame]) -> Result<Packet, CodecError>;

    /// Decodes a packet produced by [`Codec::encode`] for the same schema.
    fn decode(&self, schema: &StreamSchema, packet: &Packet) -> Result<Vec<Frame>, CodecError>;
}
