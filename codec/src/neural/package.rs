//! Model packages: a `manifest.toml` naming one weights file per stream, each checked against
//! its sha256 and fingerprint before use. The caller reads the files (this crate does no
//! I/O); the package only names plain files beside the manifest.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{CodecError, NeuralModel, StreamSchema};

/// Manifest format understood by this crate.
pub const MANIFEST_FORMAT: u32 = 1;
pub const MANIFEST_FILE: &str = "manifest.toml";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    /// The package's version, as deployed and reported (`2026.11.26`, `1.3.0`, ...).
    pub version: String,
    pub training: TrainingRecord,
    pub models: Vec<ModelEntry>,
}

/// How the package was made, so that it can be made again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingRecord {
    /// The command that produced it.
    pub command: String,
    /// sha256 over every training frame (timestamps and value bits, in order).
    pub data_sha256: String,
    pub seeds: Vec<u64>,
    pub frames: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub stream: String,
    pub kind: String,
    /// `StreamSchema::hash` of the stream it was trained on, hex.
    pub schema_hash: String,
    pub channels: Vec<String>,
    pub conditions: Vec<String>,
    /// Error bounds (in sigmas) it was trained for; 0 is lossless.
    pub quality_sigmas: Vec<f64>,
    pub weights: String,
    pub sha256: String,
    pub fingerprint: String,
    /// Measured on held-out simulator seeds (bits per sample and the like).
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

/// A verified package, its models ready to run.
#[derive(Debug, Clone)]
pub struct ModelPackage {
    pub manifest: Manifest,
    pub models: BTreeMap<String, Arc<NeuralModel>>,
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Version names: 1 to 64 of `[A-Za-z0-9._-]`, not starting with a dot (a folder name that
/// cannot climb out of the model folder).
pub fn is_valid_version(version: &str) -> bool {
    !version.is_empty()
        && version.len() <= 64
        && !version.starts_with('.')
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The package file holding an ed25519 signature (64 bytes) over `manifest.toml`, whose
/// sha256 lines pin every weights file: signing the manifest signs the package.
pub const SIGNATURE_FILE: &str = "manifest.sig";

/// A file name a package may hold: no folders, nothing hidden, so it stays beside the
/// manifest wherever the package is unpacked.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['/', '\\']) && !name.starts_with('.')
}

fn refuse(message: String) -> CodecError {
    CodecError::ModelMismatch(message)
}

impl ModelPackage {
    /// Parses and verifies a package; `read(name)` returns the bytes of a file beside the
    /// manifest.
    pub fn load(
        manifest_text: &str,
        mut read: impl FnMut(&str) -> Result<Vec<u8>, String>,
    ) -> Result<ModelPackage, CodecError> {
        let manifest: Manifest = toml::from_str(manifest_text)
            .map_err(|e| refuse(format!("manifest.toml: {}", e.message())))?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(refuse(format!(
                "manifest format {}, this node reads {MANIFEST_FORMAT}",
                manifest.format
            )));
        }
        let mut models = BTreeMap::new();
        for entry in &manifest.models {
            if !is_plain_file_name(&entry.weights) {
                return Err(refuse(format!(
                    "{}: weights {:?} must be a plain file name beside the manifest",
                    entry.stream, entry.weights
                )));
            }
            let bytes = read(&entry.weights).map_err(|e| {
                refuse(format!(
                    "{}: cannot read {}: {e}",
                    entry.stream, entry.weights
                ))
            })?;
            let digest = sha256_hex(&bytes);
            if digest != entry.sha256 {
                return Err(refuse(format!(
                    "{}: sha256 of {} is {digest}, the manifest says {}",
                    entry.stream, entry.weights, entry.sha256
                )));
            }
            let model = NeuralModel::from_burnpack(&bytes)?;
            if format!("{:016x}", model.fingerprint) != entry.fingerprint
                || model.shape.channels != entry.channels
                || model.shape.conditions != entry.conditions
                || model.shape.stream != entry.stream
            {
                return Err(refuse(format!(
                    "{}: weights do not match their manifest entry",
                    entry.stream
                )));
            }
            if models
                .insert(entry.stream.clone(), Arc::new(model))
                .is_some()
            {
                return Err(refuse(format!(
                    "{}: two models for one stream",
                    entry.stream
                )));
            }
        }
        Ok(ModelPackage { manifest, models })
    }

    /// The model for a stream, if the package has one that fits its schema.
    pub fn model_for(&self, schema: &StreamSchema) -> Option<Arc<NeuralModel>> {
        self.models
            .get(&schema.name)
            .filter(|m| m.shape.check_schema(schema).is_ok())
            .cloned()
    }
}
