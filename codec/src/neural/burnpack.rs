//! A reader for the burnpack (`.bpk`) files that Burn's `burn-store` writes: only what a
//! robot needs to load its model's f32 weights, without linking Burn.
//!
//! Layout (burn-pack 0.22, format version 1): magic `0x4255524E` (u32 LE), version (u16 LE),
//! metadata size (u32 LE), CBOR metadata `{tensors: {name: {dtype, shape, data_offsets,
//! param_id?}}, metadata?: {string: string}}`, padding to a 256-byte boundary, then the
//! tensor data, each tensor's byte range relative to the start of that section.

use std::collections::BTreeMap;

use ciborium::value::Value;

use crate::CodecError;

const MAGIC: u32 = 0x4255_524E;
const VERSION: u16 = 1;
const HEADER: usize = 10;
const ALIGNMENT: usize = 256;
/// Model packages are small; anything larger is refused before it is parsed.
const MAX_METADATA: usize = 1 << 20;
const MAX_RECURSION: usize = 16;

pub(crate) struct F32Tensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

pub(crate) struct Pack {
    pub tensors: BTreeMap<String, F32Tensor>,
    pub metadata: BTreeMap<String, String>,
}

fn bad(message: impl Into<String>) -> CodecError {
    CodecError::ModelMismatch(format!("weights file: {}", message.into()))
}

fn field<'a>(map: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    map.iter()
        .find(|(k, _)| k.as_text() == Some(key))
        .map(|(_, v)| v)
}

fn as_u64(v: &Value) -> Option<u64> {
    v.as_integer().and_then(|i| u64::try_from(i).ok())
}

pub(crate) fn read(bytes: &[u8]) -> Result<Pack, CodecError> {
    if bytes.len() < HEADER {
        return Err(bad("shorter than its header"));
    }
    let magic = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if magic != MAGIC {
        return Err(bad(format!("bad magic {magic:08x}: not a burnpack file")));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != VERSION {
        return Err(bad(format!(
            "burnpack version {version}, this reader knows {VERSION}"
        )));
    }
    let meta_len = u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]) as usize;
    if meta_len > MAX_METADATA || HEADER + meta_len > bytes.len() {
        return Err(bad(format!("metadata of {meta_len} bytes does not fit")));
    }
    let meta: Value = ciborium::de::from_reader_with_recursion_limit(
        &bytes[HEADER..HEADER + meta_len],
        MAX_RECURSION,
    )
    .map_err(|e| bad(format!("metadata is not valid CBOR: {e}")))?;
    let data_start = (HEADER + meta_len).div_ceil(ALIGNMENT) * ALIGNMENT;
    let data = bytes.get(data_start..).unwrap_or(&[]);
    let root = meta.as_map().ok_or_else(|| bad("metadata is not a map"))?;

    let mut metadata = BTreeMap::new();
    if let Some(m) = field(root, "metadata") {
        for (k, v) in m
            .as_map()
            .ok_or_else(|| bad("user metadata is not a map"))?
        {
            if let (Some(k), Some(v)) = (k.as_text(), v.as_text()) {
                metadata.insert(k.to_owned(), v.to_owned());
            }
        }
    }
    let mut tensors = BTreeMap::new();
    let entries = field(root, "tensors")
        .and_then(Value::as_map)
        .ok_or_else(|| bad("no tensor table"))?;
    for (name, desc) in entries {
        let name = name
            .as_text()
            .ok_or_else(|| bad("tensor name is not text"))?;
        let desc = desc
            .as_map()
            .ok_or_else(|| bad(format!("{name}: descriptor is not a map")))?;
        let dtype = field(desc, "dtype").and_then(Value::as_text);
        if dtype != Some("F32") {
            return Err(bad(format!(
                "{name}: dtype {dtype:?}, only F32 is supported"
            )));
        }
        let shape: Vec<usize> = field(desc, "shape")
            .and_then(Value::as_array)
            .ok_or_else(|| bad(format!("{name}: no shape")))?
            .iter()
            .map(|d| as_u64(d).and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| bad(format!("{name}: shape is not a list of sizes")))?;
        let offsets = field(desc, "data_offsets")
            .and_then(Value::as_array)
            .ok_or_else(|| bad(format!("{name}: no data offsets")))?;
        let (Some(start), Some(end)) = (
            offsets.first().and_then(as_u64),
            offsets.get(1).and_then(as_u64),
        ) else {
            return Err(bad(format!("{name}: data offsets are not two sizes")));
        };
        let elements = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad(format!("{name}: shape overflows")))?;
        let raw = usize::try_from(start)
            .ok()
            .zip(usize::try_from(end).ok())
            .filter(|(s, e)| s <= e && e - s == elements * 4)
            .and_then(|(s, e)| data.get(s..e))
            .ok_or_else(|| {
                bad(format!(
                    "{name}: bytes {start}..{end} do not hold {elements} f32"
                ))
            })?;
        let values = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        tensors.insert(name.to_owned(), F32Tensor { shape, values });
    }
    Ok(Pack { tensors, metadata })
}

/// Writes the same layout (used by tests and by tools that build packages without Burn).
pub fn write(
    tensors: &[(&str, Vec<usize>, &[f32])],
    metadata: &BTreeMap<String, String>,
) -> Vec<u8> {
    let mut offset = 0u64;
    let mut table = Vec::new();
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        let start = offset;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        offset += bytes.len() as u64;
        data.extend_from_slice(&bytes);
        let pad = (ALIGNMENT - data.len() % ALIGNMENT) % ALIGNMENT;
        data.extend(std::iter::repeat_n(0u8, pad));
        offset += pad as u64;
        table.push((
            Value::Text((*name).to_owned()),
            Value::Map(vec![
                (Value::Text("dtype".into()), Value::Text("F32".into())),
                (
                    Value::Text("shape".into()),
                    Value::Array(
                        shape
                            .iter()
                            .map(|&d| Value::Integer((d as u64).into()))
                            .collect(),
                    ),
                ),
                (
                    Value::Text("data_offsets".into()),
                    Value::Array(vec![
                        Value::Integer(start.into()),
                        Value::Integer((start + values.len() as u64 * 4).into()),
                    ]),
                ),
            ]),
        ));
    }
    let meta = Value::Map(vec![
        (Value::Text("tensors".into()), Value::Map(table)),
        (
            Value::Text("metadata".into()),
            Value::Map(
                metadata
                    .iter()
                    .map(|(k, v)| (Value::Text(k.clone()), Value::Text(v.clone())))
                    .collect(),
            ),
        ),
    ]);
    let mut meta_bytes = Vec::new();
    // Writing a `Value` into a Vec cannot fail.
    let _ = ciborium::ser::into_writer(&meta, &mut meta_bytes);
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(meta_bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(&meta_bytes);
    out.resize(
        (HEADER + meta_bytes.len()).div_ceil(ALIGNMENT) * ALIGNMENT,
        0,
    );
    out.extend_from_slice(&data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::neural::{NeuralModel, untrained_model};
    use crate::synthetic::imu_schema;

    #[test]
    fn a_model_survives_its_weights_file() {
        let model = untrained_model(&imu_schema(), 6, 12, 3);
        let bytes = model.to_burnpack();
        let back = NeuralModel::from_burnpack(&bytes).unwrap();
        assert_eq!(back, model);
        // A truncation fails cleanly unless it only cut the trailing alignment padding.
        for n in 0..bytes.len() {
            match NeuralModel::from_burnpack(&bytes[..n]) {
                Ok(m) => assert_eq!(m, model, "truncated to {n}"),
                Err(e) => assert!(matches!(e, CodecError::ModelMismatch(_))),
            }
        }
        let mut wrong = bytes.clone();
        wrong[0] ^= 1;
        assert!(matches!(
            NeuralModel::from_burnpack(&wrong),
            Err(CodecError::ModelMismatch(_))
        ));
    }
}
