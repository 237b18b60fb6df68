//! Writing model packages: `manifest.toml` plus one burnpack weights file per stream,
//! written by Burn's own store and read back through the codec's reader before the manifest
//! names it (a package that the robot cannot load is never written).

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Module;
use burn::store::ModuleSnapshot;
use burn::store::burn_pack::{Tensor as PackTensor, Writer};
use lydlr_codec::neural::package::{
    MANIFEST_FILE, MANIFEST_FORMAT, Manifest, ModelEntry, SIGNATURE_FILE, TrainingRecord,
};
use lydlr_codec::neural::shape_metadata;
use lydlr_codec::{Frame, ModelPackage, NeuralModel, StreamSchema, sha256_hex};
use sha2::{Digest, Sha256};

use crate::LearnError;
use crate::train::Predictor;

/// One trained stream, ready to be packaged.
pub struct TrainedStream {
    pub schema: StreamSchema,
    pub predictor: Predictor,
    pub model: NeuralModel,
    pub quality_sigmas: Vec<f64>,
    pub metrics: BTreeMap<String, f64>,
}

/// sha256 over frames (timestamps and value bits, in order): the training data's identity.
pub fn data_sha256<'a>(frames: impl IntoIterator<Item = &'a Frame>) -> String {
    let mut hasher = Sha256::new();
    for f in frames {
        hasher.update(f.timestamp_ns.to_le_bytes());
        for v in &f.values {
            hasher.update(v.to_bits().to_le_bytes());
        }
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn package_error(path: &Path, message: impl ToString) -> LearnError {
    LearnError::Package {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Writes the package into `dir` (created if needed) and returns its manifest.
pub fn write_package(
    dir: &Path,
    version: &str,
    training: TrainingRecord,
    streams: &[TrainedStream],
) -> Result<Manifest, LearnError> {
    std::fs::create_dir_all(dir).map_err(|e| package_error(dir, e))?;
    let mut models = Vec::new();
    for s in streams {
        let file = format!("{}.bpk", s.schema.name);
        let path = dir.join(&file);
        // Burn's snapshot of the module, written with burn-pack; parameter ids are random per
        // process, so they are left out and the same training writes the same bytes.
        let tensors = s
            .predictor
            .clone()
            .valid()
            .collect(None, None, false)
            .into_iter()
            .map(|t| {
                let (name, dtype, shape, _, bytes) = t.into_parts()?;
                Ok(PackTensor::new(name, dtype, shape.to_vec(), None, bytes))
            })
            .collect::<Result<Vec<_>, burn::store::burn_pack::Error>>()
            .map_err(|e| package_error(&path, format!("{e:?}")))?;
        let mut writer = Writer::new(tensors);
        for (k, v) in shape_metadata(&s.model.shape, s.model.layers.len()) {
            writer = writer.with_metadata(&k, &v);
        }
        let packed = writer
            .into_bytes()
            .map_err(|e| package_error(&path, format!("{e:?}")))?;
        std::fs::write(&path, &*packed).map_err(|e| package_error(&path, e))?;
        let bytes = std::fs::read(&path).map_err(|e| package_error(&path, e))?;
        let back = NeuralModel::from_burnpack(&bytes).map_err(|e| package_error(&path, e))?;
        if back.fingerprint != s.model.fingerprint {
            return Err(package_error(
                &path,
                "weights read back differ from the trained model",
            ));
        }
        models.push(ModelEntry {
            stream: s.schema.name.clone(),
            kind: format!("{:?}", s.schema.kind).to_lowercase(),
            schema_hash: format!("{:016x}", s.schema.hash()),
            channels: s.model.shape.channels.clone(),
            conditions: s.model.shape.conditions.clone(),
            quality_sigmas: s.quality_sigmas.clone(),
            weights: file,
            sha256: sha256_hex(&bytes),
            fingerprint: format!("{:016x}", s.model.fingerprint),
            metrics: s.metrics.clone(),
        });
    }
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        version: version.to_owned(),
        training,
        models,
    };
    let text = toml::to_string_pretty(&manifest).map_err(|e| package_error(dir, e))?;
    let manifest_path = dir.join(MANIFEST_FILE);
    std::fs::write(&manifest_path, &text).map_err(|e| package_error(&manifest_path, e))?;
    // The package as a node will load it.
    ModelPackage::load(&text, |name| {
        std::fs::read(dir.join(name)).map_err(|e| e.to_string())
    })
    .map_err(|e| package_error(dir, e))?;
    Ok(manifest)
}

/// Loads a package directory (manifest and weights) from disk.
pub fn read_package(dir: &Path) -> Result<ModelPackage, LearnError> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let text =
        std::fs::read_to_string(&manifest_path).map_err(|e| package_error(&manifest_path, e))?;
    ModelPackage::load(&text, |name| {
        std::fs::read(dir.join(name)).map_err(|e| e.to_string())
    })
    .map_err(|e| package_error(dir, e))
}

/// Package files by name, as they travel to a node.
pub type PackageFiles = Vec<(String, Vec<u8>)>;

/// A verified package and the files a node needs of it, by name: the manifest, its
/// signature when there is one, and the weights the manifest names (nothing else in the
/// folder travels).
pub fn package_files(dir: &Path) -> Result<(ModelPackage, PackageFiles), LearnError> {
    let package = read_package(dir)?;
    let mut names = vec![MANIFEST_FILE.to_owned()];
    if dir.join(SIGNATURE_FILE).is_file() {
        names.push(SIGNATURE_FILE.to_owned());
    }
    names.extend(package.manifest.models.iter().map(|m| m.weights.clone()));
    let files = names
        .into_iter()
        .map(|name| {
            let path = dir.join(&name);
            std::fs::read(&path)
                .map(|bytes| (name, bytes))
                .map_err(|e| package_error(&path, e))
        })
        .collect::<Result<_, _>>()?;
    Ok((package, files))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::tests::tiny;
    use crate::train::train;
    use burn::prelude::Device;
    use burn::store::BurnpackStore;

    #[test]
    fn packages_are_burnpack_files_that_burn_and_the_codec_both_load() {
        let (schema, data, config, shape) = tiny(8, 10, 16);
        let (predictor, model, _) =
            train(&schema, shape.clone(), &data, &data, &config, 1, |_| {}).unwrap();
        let dir = std::env::temp_dir().join(format!("lydlr-pkg-{}", std::process::id()));
        let record = TrainingRecord {
            command: "test".into(),
            data_sha256: data_sha256(&data[0].frames),
            seeds: vec![5],
            frames: 300,
        };
        let stream = TrainedStream {
            schema: schema.clone(),
            predictor,
            model: model.clone(),
            quality_sigmas: vec![1.0],
            metrics: BTreeMap::new(),
        };
        let manifest = write_package(&dir, "test-1", record, &[stream]).unwrap();
        assert_eq!(
            manifest.models[0].fingerprint,
            format!("{:016x}", model.fingerprint)
        );

        // Burn's own store reads the weights back into a fresh module.
        let widths = [shape.input_width(), 8, 8, shape.output_width()];
        let mut fresh = Predictor::new(&widths, &Device::flex(), 99);
        let mut store = BurnpackStore::from_file(dir.join("imu.bpk")).auto_extension(false);
        fresh.load_from(&mut store).unwrap();
        assert_eq!(
            fresh.to_codec(shape).unwrap().fingerprint,
            model.fingerprint
        );

        // A tampered weights file is refused by its sha256.
        let loaded = read_package(&dir).unwrap();
        assert_eq!(loaded.models["imu"].fingerprint, model.fingerprint);
        let mut bytes = std::fs::read(dir.join("imu.bpk")).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(dir.join("imu.bpk"), bytes).unwrap();
        let err = read_package(&dir).unwrap_err().to_string();
        assert!(err.contains("sha256"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
