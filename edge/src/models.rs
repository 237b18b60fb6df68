//! Learned models on the node: deploying a package version (verify, store, load, warm up,
//! switch), watching it through a health window, and rolling it back.
//!
//! The switch is one pointer store into an [`ArcSwapOption`] shared with the compressor,
//! which reads it once per block: the heavy work (checksums, parsing, warm-up) runs on a
//! blocking thread beside the node's loop, so no frame waits for it, and the new version takes
//! over between two blocks. Streams the package has no fitting model for, and any block the
//! model fails to code, go through the classical codecs: the node never stops compressing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwapOption;
use ed25519_dalek::VerifyingKey;
use lydlr_codec::neural::package::{MANIFEST_FILE, is_plain_file_name};
use lydlr_codec::{
    Codec, CodecError, CodecId, ErrorBound, Frame, ModelPackage, NeuralCodec, Packet,
    QualityLadder, Rung, StreamSchema,
};

use crate::LatencyHistogram;

/// A verified, warmed-up package version.
#[derive(Debug)]
pub struct ActiveModel {
    pub version: String,
    pub package: ModelPackage,
}

/// What the node codes with; `None` is the classical codecs alone.
pub type ModelSlot = Arc<ArcSwapOption<ActiveModel>>;

impl ActiveModel {
    /// The learned codec of `schema`'s stream at `rung`, if this version has a model that fits.
    pub fn codec(&self, schema: &StreamSchema, rung: &Rung) -> Option<NeuralCodec> {
        let model = self.package.model_for(schema)?;
        let bound = rung.bound.unwrap_or(ErrorBound::Absolute(0.0));
        Some(NeuralCodec::new(model, bound, rung.level))
    }

    /// The node's streams this version codes.
    pub fn streams(&self) -> Vec<String> {
        self.package.models.keys().cloned().collect()
    }
}

/// A stream's codec at one rung: the learned model when the running version has one for the
/// stream, else (and for any block the model cannot code) the classical codec.
pub struct StreamCodec {
    pub model: Option<NeuralCodec>,
    pub classical: Box<dyn Codec>,
}

impl StreamCodec {
    pub fn new(
        active: Option<&ActiveModel>,
        schema: &StreamSchema,
        ladder: &QualityLadder,
        level: u8,
    ) -> Option<StreamCodec> {
        let rung = ladder.rungs.iter().find(|r| r.level == level)?;
        Some(StreamCodec {
            model: active.and_then(|m| m.codec(schema, rung)),
            classical: ladder.codec(level)?,
        })
    }
}

impl Codec for StreamCodec {
    fn id(&self) -> CodecId {
        self.model
            .as_ref()
            .map_or_else(|| self.classical.id(), |m| m.id())
    }

    fn encode(&self, schema: &StreamSchema, frames: &[Frame]) -> Result<Packet, CodecError> {
        match self.model.as_ref().map(|m| m.encode(schema, frames)) {
            Some(Ok(packet)) => Ok(packet),
            _ => self.classical.encode(schema, frames),
        }
    }

    fn decode(&self, schema: &StreamSchema, packet: &Packet) -> Result<Vec<Frame>, CodecError> {
        match (&self.model, packet.header.codec) {
            (Some(model), CodecId::Neural) => model.decode(schema, packet),
            _ => lydlr_codec::codec_for(packet.header.codec)?.decode(schema, packet),
        }
    }
}

pub use lydlr_codec::neural::package::{SIGNATURE_FILE, is_valid_version};

pub use crate::signing::parse_public_key;

/// The signature a holder of `secret` (32 bytes) makes over a package's manifest.
pub fn sign_manifest(manifest: &[u8], secret: &[u8; 32]) -> [u8; 64] {
    crate::signing::sign(manifest, secret)
}

/// With keys configured, the manifest must carry a signature one of them verifies.
fn check_signature(files: &BTreeMap<String, Vec<u8>>, keys: &[VerifyingKey]) -> Result<(), String> {
    if keys.is_empty() {
        return Ok(());
    }
    let signature = files.get(SIGNATURE_FILE).ok_or_else(|| {
        format!("unsigned package (no {SIGNATURE_FILE}): this node requires a signature")
    })?;
    let manifest = files.get(MANIFEST_FILE).map_or(&[][..], Vec::as_slice);
    crate::signing::verify(manifest, signature, keys).map_err(|e| format!("{SIGNATURE_FILE}: {e}"))
}

/// Everything a deployment needs, copied out of the node so it can run on another thread.
pub struct DeployRequest {
    /// `models/<node>`: one folder per version.
    pub root: PathBuf,
    pub version: String,
    /// Carried files (name, bytes); empty to load the version already under `root`.
    pub files: Vec<(String, Vec<u8>)>,
    /// The node's streams, with recent frames to warm up on.
    pub streams: Vec<(StreamSchema, Vec<Frame>)>,
    pub ladder: QualityLadder,
    /// Keys one of which must have signed the package; none: signatures are not checked.
    pub keys: Vec<VerifyingKey>,
}

/// Verifies, stores and loads a version, then warms it up on the node's streams. Returns the
/// ready model and a line saying what was checked, or why it was refused.
pub fn prepare(request: DeployRequest) -> Result<(ActiveModel, String), String> {
    let version = &request.version;
    if !is_valid_version(version) {
        return Err(format!(
            "version {version:?} must be 1-64 of [A-Za-z0-9._-], not starting with '.'"
        ));
    }
    let dir = request.root.join(version);
    let files: BTreeMap<String, Vec<u8>> = if request.files.is_empty() {
        read_version(&dir)?
    } else {
        request.files.into_iter().collect()
    };
    check_signature(&files, &request.keys)?;
    let manifest = files
        .get(MANIFEST_FILE)
        .ok_or_else(|| format!("no {MANIFEST_FILE} in the package"))?;
    let manifest =
        std::str::from_utf8(manifest).map_err(|_| format!("{MANIFEST_FILE} is not UTF-8"))?;
    let package = ModelPackage::load(manifest, |name| {
        files
            .get(name)
            .cloned()
            .ok_or_else(|| "not in the package".to_string())
    })
    .map_err(|e| e.to_string())?;
    if package.manifest.version != *version {
        return Err(format!(
            "the manifest says version {:?}, the deployment {version:?}",
            package.manifest.version
        ));
    }
    let mut covered = Vec::new();
    for (schema, _) in &request.streams {
        if let Some(model) = package.models.get(&schema.name) {
            model
                .shape
                .check_schema(schema)
                .map_err(|e| format!("stream {}: {e}", schema.name))?;
            covered.push(schema.name.clone());
        }
    }
    if !request.streams.is_empty() && covered.is_empty() {
        return Err(format!(
            "the package has models for {:?}, none of the node's streams",
            package.models.keys().collect::<Vec<_>>()
        ));
    }
    let active = ActiveModel {
        version: version.clone(),
        package,
    };
    let started = Instant::now();
    let mut blocks = 0;
    for (schema, recent) in &request.streams {
        blocks += warm_up(&active, schema, recent, &request.ladder)?;
    }
    let warm_ms = started.elapsed().as_secs_f64() * 1e3;
    if !files_on_disk(&dir, &files) {
        store_version(&request.root, version, &files)?;
    }
    Ok((
        active,
        format!(
            "{}sha256 and fingerprints verified, streams {covered:?} fit, \
             {blocks} warm-up blocks round-tripped within their bounds in {warm_ms:.1} ms",
            if request.keys.is_empty() {
                ""
            } else {
                "signature, "
            }
        ),
    ))
}

/// Codes a block of `recent` (or of a still signal when there is none) at every rung the model
/// serves and checks that it decodes within the rung's bound. Returns the blocks coded.
fn warm_up(
    active: &ActiveModel,
    schema: &StreamSchema,
    recent: &[Frame],
    ladder: &QualityLadder,
) -> Result<usize, String> {
    let still: Vec<Frame>;
    let block = if recent.len() >= 2 {
        &recent[recent.len().saturating_sub(200)..]
    } else {
        let period = (1e9 / schema.rate_hz.max(1e-3)) as i64;
        still = (0..20)
            .map(|i| Frame::new(i * period, vec![0.0; schema.channels.len()]))
            .collect();
        &still
    };
    let mut blocks = 0;
    for rung in &ladder.rungs {
        let Some(codec) = active.codec(schema, rung) else {
            return Ok(blocks);
        };
        let packet = match codec.encode(schema, block) {
            Ok(packet) => packet,
            // A rung the model cannot serve (lossless on float samples) stays classical.
            Err(CodecError::Unsupported(_)) => continue,
            Err(e) => return Err(format!("stream {}: warm-up encode: {e}", schema.name)),
        };
        let decoded = codec
            .decode(schema, &packet)
            .map_err(|e| format!("stream {}: warm-up decode: {e}", schema.name))?;
        let bounds = ladder
            .channel_bounds(schema, rung.level)
            .unwrap_or_default();
        if let Some(miss) = first_miss(block, &decoded, &bounds) {
            return Err(format!(
                "stream {}: warm-up at level {}: {miss}",
                schema.name, rung.level
            ));
        }
        blocks += 1;
    }
    Ok(blocks)
}

/// The first sample outside its bound (bit-exact where the bound is 0), described.
pub fn first_miss(original: &[Frame], decoded: &[Frame], bounds: &[f64]) -> Option<String> {
    if original.len() != decoded.len() {
        return Some(format!(
            "{} frames in, {} decoded",
            original.len(),
            decoded.len()
        ));
    }
    for (i, (a, b)) in original.iter().zip(decoded).enumerate() {
        if a.timestamp_ns != b.timestamp_ns {
            return Some(format!("frame {i}: timestamp changed"));
        }
        for (c, (x, y)) in a.values.iter().zip(&b.values).enumerate() {
            let bound = bounds.get(c).copied().unwrap_or(0.0);
            let ok = if bound == 0.0 || !x.is_finite() {
                x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
            } else {
                (x - y).abs() <= bound
            };
            if !ok {
                return Some(format!(
                    "frame {i} channel {c}: {x} decoded as {y}, bound {bound}"
                ));
            }
        }
    }
    None
}

fn read_version(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("no version at {}: {e}", dir.display()))?;
    let mut files = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            files.insert(name.to_owned(), bytes);
        }
    }
    Ok(files)
}

fn files_on_disk(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> bool {
    files
        .iter()
        .all(|(name, bytes)| std::fs::read(dir.join(name)).is_ok_and(|b| b == *bytes))
}

/// Writes a verified version under `root`, whole or not at all: into a hidden folder first,
/// then renamed into place.
fn store_version(
    root: &Path,
    version: &str,
    files: &BTreeMap<String, Vec<u8>>,
) -> Result<(), String> {
    let incoming = root.join(format!(".{version}.incoming"));
    let fail = |path: &Path, e: std::io::Error| format!("{}: {e}", path.display());
    let _ = std::fs::remove_dir_all(&incoming);
    std::fs::create_dir_all(&incoming).map_err(|e| fail(&incoming, e))?;
    for (name, bytes) in files {
        if !is_plain_file_name(name) {
            return Err(format!(
                "file name {name:?} in the package is not a plain name"
            ));
        }
        let path = incoming.join(name);
        std::fs::write(&path, bytes).map_err(|e| fail(&path, e))?;
    }
    let dir = root.join(version);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| fail(&dir, e))?;
    }
    std::fs::rename(&incoming, &dir).map_err(|e| fail(&dir, e))
}

/// The health window after a switch: the blocks the new version codes are timed, and every
/// `sample_every`-th is decoded and checked against its bound and against the size the
/// classical codec gives the same block.
#[derive(Debug)]
pub struct Health {
    pub version: String,
    blocks: u32,
    needed: u32,
    sample_every: u32,
    latency: LatencyHistogram,
    budget_us: f64,
    model_bytes: u64,
    classical_bytes: u64,
    /// Largest tolerated model size over classical size on the sampled blocks.
    max_size_ratio: f64,
}

/// How a health window ended.
#[derive(Debug, Clone, PartialEq)]
pub enum HealthVerdict {
    Passed(String),
    Failed(String),
}

impl Health {
    pub fn new(version: &str, needed: u32, budget_us: f64, max_size_ratio: f64) -> Health {
        Health {
            version: version.to_owned(),
            blocks: 0,
            needed: needed.max(1),
            sample_every: 4,
            latency: LatencyHistogram::default(),
            budget_us,
            model_bytes: 0,
            classical_bytes: 0,
            max_size_ratio,
        }
    }

    /// Counts a block the model coded; whether this one is to be checked.
    pub fn coded(&mut self, encode_ns: u64) -> bool {
        self.latency.record(encode_ns);
        self.blocks += 1;
        self.blocks % self.sample_every == 1 || self.sample_every == 1
    }

    /// A checked block's sizes, by the model and by the classical codec.
    pub fn sampled(&mut self, model_bytes: usize, classical_bytes: usize) {
        self.model_bytes += model_bytes as u64;
        self.classical_bytes += classical_bytes as u64;
    }

    /// The verdict once the window is complete.
    pub fn verdict(&self) -> Option<HealthVerdict> {
        if self.blocks < self.needed {
            return None;
        }
        let p99 = self.latency.quantile_us(0.99);
        let size = self.model_bytes as f64 / self.classical_bytes.max(1) as f64;
        Some(if p99 > self.budget_us {
            HealthVerdict::Failed(format!(
                "encode p99 {p99:.0} us over the {:.0} us budget",
                self.budget_us
            ))
        } else if size > self.max_size_ratio {
            HealthVerdict::Failed(format!(
                "sampled blocks {:.0}% larger than the classical codec makes them \
                 (tolerance {:.0}%)",
                (size - 1.0) * 100.0,
                (self.max_size_ratio - 1.0) * 100.0
            ))
        } else {
            HealthVerdict::Passed(format!(
                "{} blocks: encode p99 {p99:.0} us, sampled blocks decode within bound \
                 at {:.1}% of the classical size",
                self.blocks,
                size * 100.0
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names_cannot_leave_the_model_folder() {
        for good in ["2026.11.26", "v1.3.0-rc1", "a_b"] {
            assert!(is_valid_version(good), "{good}");
        }
        for bad in ["", "..", ".hidden", "a/b", "a\\b", &"x".repeat(65)] {
            assert!(!is_valid_version(bad), "{bad}");
        }
    }

    #[test]
    fn with_a_key_configured_only_packages_it_signed_are_accepted() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default");
        let files = read_version(&shipped).unwrap();
        let secret = [7u8; 32];
        let public = ed25519_dalek::SigningKey::from_bytes(&secret).verifying_key();
        let other = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]).verifying_key();
        let root = std::env::temp_dir().join(format!("lydlr-signed-{}", std::process::id()));
        let attempt = |files: &BTreeMap<String, Vec<u8>>, keys: Vec<VerifyingKey>| {
            prepare(DeployRequest {
                root: root.clone(),
                version: "2026.11.26".into(),
                files: files.clone().into_iter().collect(),
                streams: Vec::new(),
                ladder: QualityLadder::standard(),
                keys,
            })
            .map(|(_, checked)| checked)
        };
        let unsigned = attempt(&files, vec![public]).unwrap_err();
        assert!(unsigned.contains("unsigned"), "{unsigned}");
        let mut signed = files.clone();
        let signature = sign_manifest(&files[MANIFEST_FILE], &secret);
        signed.insert(SIGNATURE_FILE.into(), signature.to_vec());
        assert!(
            attempt(&signed, vec![other, public])
                .unwrap()
                .starts_with("signature")
        );
        assert!(
            attempt(&signed, vec![other])
                .unwrap_err()
                .contains("does not verify")
        );
        // The manifest pins the weights, so changing either breaks the package.
        let mut tampered = signed.clone();
        let manifest = String::from_utf8(tampered[MANIFEST_FILE].clone()).unwrap();
        tampered.insert(
            MANIFEST_FILE.into(),
            manifest
                .replacen("2026.11.26", "2026.11.27", 1)
                .into_bytes(),
        );
        assert!(
            attempt(&tampered, vec![public])
                .unwrap_err()
                .contains("does not verify")
        );
        let mut swapped = signed.clone();
        swapped.get_mut("imu.bpk").unwrap()[100] ^= 1;
        assert!(
            attempt(&swapped, vec![public])
                .unwrap_err()
                .contains("sha256")
        );
        // No key configured: signatures are not required.
        assert!(attempt(&files, Vec::new()).is_ok());
        assert!(parse_public_key(&"zz".repeat(32)).is_err());
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn a_health_window_fails_on_latency_or_size_and_passes_otherwise() {
        let mut health = Health::new("v", 8, 100.0, 1.1);
        for i in 0..8 {
            assert_eq!(health.verdict(), None);
            if health.coded(20_000) {
                assert!(i % 4 == 0);
                health.sampled(90, 100);
            }
        }
        assert!(matches!(health.verdict(), Some(HealthVerdict::Passed(_))));

        let mut slow = Health::new("v", 2, 100.0, 1.1);
        slow.coded(20_000);
        slow.coded(500_000);
        assert!(matches!(slow.verdict(), Some(HealthVerdict::Failed(m)) if m.contains("p99")));

        let mut big = Health::new("v", 1, 100.0, 1.1);
        big.coded(1_000);
        big.sampled(150, 100);
        assert!(matches!(big.verdict(), Some(HealthVerdict::Failed(m)) if m.contains("50%")));
    }
}
