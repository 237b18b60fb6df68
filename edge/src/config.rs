//! Node configuration: a TOML file, overridden by the environment.

use std::path::Path;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum EdgeConfigError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path}: {error}")]
    Parse {
        path: String,
        error: toml::de::Error,
    },
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// The node's name, also its topic segment (`NODE_ID`).
    pub node_id: String,
    /// `mqtt://host:port` (`LYDLR_BROKER`).
    pub broker: String,
    /// The robot's own broker, carrying its raw streams, when the uplink (`broker`) is another
    /// one (`LYDLR_LOCAL_BROKER`): then losing the uplink loses no sensor data.
    pub local_broker: Option<String>,
    /// A block closes when it spans this much stream time and holds `min_block_frames`...
    pub block_ms: u32,
    pub min_block_frames: u16,
    /// ...or when it spans `max_block_ms` (a latency bound for slow streams)...
    pub max_block_ms: u32,
    /// ...or holds this many frames.
    pub max_block_frames: u16,
    /// Metrics period in stream time; a heartbeat goes out at least this often in wall time.
    pub metrics_period_ms: u32,
    /// Raw messages held while waiting for their stream's schema.
    pub max_pending_messages: usize,
    /// Folder of `*.rhai` scripts loaded at start, in file-name order (`LYDLR_SCRIPTS`
    /// names a parent holding one folder per node).
    pub scripts_dir: Option<String>,
    /// Folder of model versions, one folder per node: versions live in
    /// `<models_dir>/<node>/<version>/` (`LYDLR_MODELS`).
    pub models_dir: String,
    /// Version to load at start, if any.
    pub model: Option<String>,
    /// The operator's ed25519 public keys (hex; `LYDLR_MODEL_KEYS`, comma separated). When
    /// any is set, model packages and scripts (pushed or in the scripts folder) must carry a
    /// signature one of them verifies; unsigned or mis-signed ones are refused and reported.
    pub model_keys: Vec<String>,
    /// Blocks coded by a new model before it counts as healthy, its encode p99 budget (the
    /// encoding thread's CPU time: the model's cost, not the scheduler's), and the largest
    /// size it may give sampled blocks relative to the classical codec.
    pub health_blocks: u32,
    pub latency_budget_us: f64,
    pub health_max_size_ratio: f64,
    /// Offline queue folder (`<spool_dir>/<node>`, `LYDLR_SPOOL`) and its bound in bytes.
    pub spool_dir: String,
    pub spool_max_bytes: u64,
    /// After a reconnect, packets keep going to the offline queue this long before it drains:
    /// a restarted broker has lost every subscription, and the consumers need a moment to
    /// subscribe again before anything is published to them.
    pub reconnect_grace_ms: u32,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            node_id: "robot-00".into(),
            broker: "mqtt://127.0.0.1:1883".into(),
            local_broker: None,
            block_ms: 200,
            min_block_frames: 10,
            max_block_ms: 2000,
            max_block_frames: 1000,
            metrics_period_ms: 1000,
            max_pending_messages: 256,
            scripts_dir: None,
            models_dir: "models".into(),
            model: None,
            model_keys: Vec::new(),
            health_blocks: 200,
            latency_budget_us: 20_000.0,
            health_max_size_ratio: 1.10,
            spool_dir: "spool".into(),
            spool_max_bytes: 256 << 20,
            reconnect_grace_ms: 1000,
        }
    }
}

impl EdgeConfig {
    /// Reads `path` (if given), then applies `NODE_ID` and `LYDLR_BROKER` from `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<EdgeConfig, EdgeConfigError> {
        let mut config = match path {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|error| EdgeConfigError::Read {
                        path: path.display().to_string(),
                        error,
                    })?;
                toml::from_str(&text).map_err(|error| EdgeConfigError::Parse {
                    path: path.display().to_string(),
                    error,
                })?
            }
            None => EdgeConfig::default(),
        };
        if let Some(node) = env("NODE_ID") {
            config.node_id = node;
        }
        if let Some(broker) = env("LYDLR_BROKER") {
            config.broker = broker;
        }
        if let Some(local) = env("LYDLR_LOCAL_BROKER") {
            config.local_broker = Some(local);
        }
        if let Some(root) = env("LYDLR_MODELS") {
            config.models_dir = root;
        }
        if let Some(keys) = env("LYDLR_MODEL_KEYS") {
            config.model_keys = keys.split(',').map(|k| k.trim().to_owned()).collect();
        }
        if let Some(root) = env("LYDLR_SPOOL") {
            config.spool_dir = root;
        }
        if let Some(root) = env("LYDLR_SCRIPTS") {
            config.scripts_dir = Some(format!("{root}/{}", config.node_id));
        }
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), EdgeConfigError> {
        if !lydlr_bus::topics::is_valid_name(&self.node_id) {
            return Err(EdgeConfigError::Invalid {
                field: "node_id",
                reason: format!("{:?} must be 1-64 of [A-Za-z0-9_-]", self.node_id),
            });
        }
        if let Err(e) = self.broker.parse::<lydlr_bus::BrokerUrl>() {
            return Err(EdgeConfigError::Invalid {
                field: "broker",
                reason: e.to_string(),
            });
        }
        if let Some(local) = &self.local_broker
            && let Err(e) = local.parse::<lydlr_bus::BrokerUrl>()
        {
            return Err(EdgeConfigError::Invalid {
                field: "local_broker",
                reason: e.to_string(),
            });
        }
        if self.block_ms == 0 || self.max_block_frames == 0 || self.metrics_period_ms == 0 {
            return Err(EdgeConfigError::Invalid {
                field: "block_ms",
                reason: "block_ms, max_block_frames and metrics_period_ms must be positive".into(),
            });
        }
        if self.max_block_ms < self.block_ms || self.min_block_frames > self.max_block_frames {
            return Err(EdgeConfigError::Invalid {
                field: "max_block_ms",
                reason: "need block_ms <= max_block_ms and min_block_frames <= max_block_frames"
                    .into(),
            });
        }
        if !(self.latency_budget_us > 0.0 && self.health_max_size_ratio >= 1.0) {
            return Err(EdgeConfigError::Invalid {
                field: "latency_budget_us",
                reason: "latency_budget_us must be positive and health_max_size_ratio >= 1".into(),
            });
        }
        for key in &self.model_keys {
            if let Err(reason) = crate::models::parse_public_key(key) {
                return Err(EdgeConfigError::Invalid {
                    field: "model_keys",
                    reason,
                });
            }
        }
        if let Some(version) = &self.model
            && !crate::models::is_valid_version(version)
        {
            return Err(EdgeConfigError::Invalid {
                field: "model",
                reason: format!("{version:?} is not a version name"),
            });
        }
        Ok(())
    }

    /// This node's model versions.
    pub fn model_root(&self) -> std::path::PathBuf {
        std::path::Path::new(&self.models_dir).join(&self.node_id)
    }

    /// This node's offline queue.
    pub fn spool_path(&self) -> std::path::PathBuf {
        std::path::Path::new(&self.spool_dir).join(&self.node_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_file_and_bad_values_are_named() {
        let dir = std::env::temp_dir().join(format!("lydlr-edge-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("edge.toml");
        std::fs::write(&path, "node_id = \"a\"\nblock_ms = 100\n").unwrap();
        let env = |k: &str| (k == "NODE_ID").then(|| "robot-7".to_string());
        let config = EdgeConfig::load(Some(&path), env).unwrap();
        assert_eq!(config.node_id, "robot-7");
        assert_eq!(config.block_ms, 100);

        std::fs::write(&path, "node_id = \"a\"\nblock_msec = 100\n").unwrap();
        let err = EdgeConfig::load(Some(&path), |_| None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("block_msec") && err.contains("line 2"),
            "{err}"
        );

        let bad = |k: &str| (k == "NODE_ID").then(|| "a/b".to_string());
        assert!(matches!(
            EdgeConfig::load(None, bad),
            Err(EdgeConfigError::Invalid {
                field: "node_id",
                ..
            })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
