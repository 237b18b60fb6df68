use thiserror::Error;

/// Everything that can go wrong while encoding or decoding. Decoding never panics on bad
/// bytes: it returns one of these.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CodecError {
    #[error("packet truncated: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    #[error("bad magic {0:02x?}: not a lydlr packet")]
    BadMagic([u8; 4]),
    #[error("unsupported container format version {0}")]
    UnsupportedFormat(u8),
    #[error("packet was written by codec {found:?}, this decoder is {expected:?}")]
    WrongCodec {
        expected: crate::CodecId,
        found: crate::CodecId,
    },
    #[error("unknown codec id {0}")]
    UnknownCodec(u8),
    #[error("unsupported version {version} of codec {codec:?}")]
    UnsupportedCodecVersion { codec: crate::CodecId, version: u8 },
    #[error("CRC-32C mismatch: header says {expected:08x}, payload hashes to {actual:08x}")]
    CrcMismatch { expected: u32, actual: u32 },
    #[error("schema hash mismatch: packet {packet:016x}, decoder {decoder:016x}")]
    SchemaMismatch { packet: u64, decoder: u64 },
    #[error("frame {frame} has {found} values, the schema has {expected} channels")]
    ChannelCount {
        frame: usize,
        expected: usize,
        found: usize,
    },
    #[error("cannot encode an empty block")]
    EmptyBlock,
    #[error("block of {0} frames exceeds the container limit")]
    BlockTooLarge(usize),
    #[error("this codec cannot code the block: {0}")]
    Unsupported(&'static str),
    #[error("model does not fit: {0}")]
    ModelMismatch(String),
    #[error("neural packets decode only with their model")]
    ModelRequired,
    #[error("packet was coded with conditioning streams the decoder was not given")]
    MissingCondition,
    #[error("corrupt payload: {0}")]
    Corrupt(&'static str),
}
