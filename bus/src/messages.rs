//! Message payloads. Raw frames are binary (they are the bulk of the traffic); everything
//! else is JSON with a version field `v`, readable with `mosquitto_sub`.
//!
//! Raw frame payload, little-endian:
//! ```text
//! 0  2  magic "LF"
//! 2  1  version (1)
//! 3  1  flags: bit 0 = flush (encode the node's partial block now); other bits zero
//! 4  2  channels C
//! 6  4  frames N
//! 10 .. N times { i64 timestamp_ns, C times f64 value }
//! ```

use lydlr_codec::{Frame, StreamSchema};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Version of every JSON message and of the raw frame layout.
pub const VERSION: u32 = 1;
const RAW_MAGIC: [u8; 2] = *b"LF";
const RAW_HEADER: usize = 10;
pub const FLAG_FLUSH: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("raw frames: {0}")]
    Raw(String),
    #[error("json message: {0}")]
    Json(String),
    #[error("message version {found}, this build speaks {VERSION}")]
    Version { found: u32 },
}

/// A batch of frames of one stream, as a driver publishes them.
#[derive(Debug, Clone, PartialEq)]
pub struct RawFrames {
    pub flush: bool,
    pub frames: Vec<Frame>,
}

impl RawFrames {
    pub fn encode(frames: &[Frame], flush: bool) -> Vec<u8> {
        let channels = frames.first().map_or(0, |f| f.values.len());
        let mut out = Vec::with_capacity(RAW_HEADER + frames.len() * (8 + 8 * channels));
        out.extend_from_slice(&RAW_MAGIC);
        out.push(VERSION as u8);
        out.push(if flush { FLAG_FLUSH } else { 0 });
        out.extend_from_slice(&(channels as u16).to_le_bytes());
        out.extend_from_slice(&(frames.len() as u32).to_le_bytes());
        for frame in frames {
            debug_assert_eq!(frame.values.len(), channels);
            out.extend_from_slice(&frame.timestamp_ns.to_le_bytes());
            for v in &frame.values {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<RawFrames, MessageError> {
        let err = |m: String| MessageError::Raw(m);
        if bytes.len() < RAW_HEADER {
            return Err(err(format!(
                "{} bytes is shorter than the header",
                bytes.len()
            )));
        }
        if bytes[0..2] != RAW_MAGIC {
            return Err(err("bad magic".into()));
        }
        if u32::from(bytes[2]) != VERSION {
            return Err(MessageError::Version {
                found: u32::from(bytes[2]),
            });
        }
        let flags = bytes[3];
        if flags & !FLAG_FLUSH != 0 {
            return Err(err(format!("unknown flags {flags:#04x}")));
        }
        let channels = usize::from(u16::from_le_bytes([bytes[4], bytes[5]]));
        let count = u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]) as usize;
        let frame_len = 8 + 8 * channels;
        let expected = count
            .checked_mul(frame_len)
            .and_then(|b| b.checked_add(RAW_HEADER));
        if expected != Some(bytes.len()) {
            return Err(err(format!(
                "{count} frames of {channels} channels need {expected:?} bytes, got {}",
                bytes.len()
            )));
        }
        let word = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            b
        };
        let frames = (0..count)
            .map(|i| {
                let at = RAW_HEADER + i * frame_len;
                let values = (0..channels)
                    .map(|c| f64::from_le_bytes(word(at + 8 + 8 * c)))
                    .collect();
                Frame::new(i64::from_le_bytes(word(at)), values)
            })
            .collect();
        Ok(RawFrames {
            flush: flags & FLAG_FLUSH != 0,
            frames,
        })
    }
}

/// A JSON message with a version field.
pub trait JsonMessage: Serialize + DeserializeOwned {
    fn to_json(&self) -> Vec<u8> {
        let mut value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let serde_json::Value::Object(map) = &mut value {
            map.insert("v".into(), VERSION.into());
        }
        serde_json::to_vec(&value).unwrap_or_default()
    }

    fn from_json(bytes: &[u8]) -> Result<Self, MessageError> {
        #[derive(Deserialize)]
        struct Versioned {
            v: u32,
        }
        let versioned: Versioned =
            serde_json::from_slice(bytes).map_err(|e| MessageError::Json(e.to_string()))?;
        if versioned.v != VERSION {
            return Err(MessageError::Version { found: versioned.v });
        }
        serde_json::from_slice(bytes).map_err(|e| MessageError::Json(e.to_string()))
    }
}

impl JsonMessage for StreamSchema {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Online,
    Offline,
}

/// Retained on `.../status`; the last will publishes the offline form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    pub state: NodeState,
    /// Codec or model version the node runs.
    pub codec: String,
}
impl JsonMessage for NodeStatus {}

/// Per-stream counters inside [`NodeMetrics`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamMetrics {
    pub stream: String,
    pub frames_in: u64,
    pub frames_out: u64,
    pub packets_out: u64,
    /// Frame values at the schema's sample type, plus 8-byte timestamps.
    pub raw_bytes: u64,
    pub compressed_bytes: u64,
    pub encode_p50_us: f64,
    pub encode_p99_us: f64,
    pub encode_max_us: f64,
    /// Rung of the quality ladder in use (0 = lossless).
    #[serde(default)]
    pub level: u8,
    /// Allocated rate (0 before the first allocation) and the rate delivered over the last
    /// two seconds of stream time, bits per second.
    #[serde(default)]
    pub target_bps: f64,
    #[serde(default)]
    pub delivered_bps: f64,
}

/// A user script's state, as the node reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScriptStatus {
    pub name: String,
    pub enabled: bool,
    pub calls: u64,
    pub time_us: f64,
    /// Why it was disabled or refused.
    pub error: Option<String>,
}

/// `.../script/load`: install (or replace) a script, or remove it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScriptLoad {
    pub name: String,
    /// Scripts run in ascending order.
    #[serde(default)]
    pub order: i64,
    /// Rhai source; absent to remove the script.
    #[serde(default)]
    pub source: Option<String>,
    /// The operator's ed25519 signature over `source` (128 hex digits); nodes configured
    /// with keys refuse a script without a valid one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}
impl JsonMessage for ScriptLoad {}

/// Published on `.../metrics` once per second of stream time; also the node's heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeMetrics {
    pub node: String,
    pub seq: u64,
    /// Stream time (the newest frame's timestamp) in seconds.
    pub t_stream_s: f64,
    /// Cumulative totals since the node started.
    pub frames_in: u64,
    pub frames_out: u64,
    pub raw_bytes: u64,
    pub compressed_bytes: u64,
    pub ratio: f64,
    pub encode_p50_us: f64,
    pub encode_p99_us: f64,
    pub encode_max_us: f64,
    /// Frames waiting in partial blocks.
    pub queue_depth: u64,
    /// Messages the node refused (malformed, unknown stream, wrong shape).
    pub rejected: u64,
    /// Bits per second the node is allocated in total (0 before the first allocation).
    pub allocated_bps: f64,
    pub streams: Vec<StreamMetrics>,
    /// Frames user scripts dropped, and the time spent in scripts, microseconds.
    #[serde(default)]
    pub frames_dropped_by_scripts: u64,
    #[serde(default)]
    pub script_time_us: f64,
    /// Share of one core the node's message handling (decoding, scripts, encoding, rate
    /// measurement) used since its previous report.
    #[serde(default)]
    pub cpu_share: f64,
    #[serde(default)]
    pub scripts: Vec<ScriptStatus>,
    /// Model package version in use; `None` is the classical codecs alone.
    #[serde(default)]
    pub model_version: Option<String>,
    /// The offline queue: packets waiting on disk for the link, dropped because it was
    /// full, and delivered from it after a reconnect.
    #[serde(default)]
    pub spool_queued: u64,
    #[serde(default)]
    pub spool_dropped: u64,
    #[serde(default)]
    pub spool_drained: u64,
    /// Fields added by the scripts' `on_metrics` hooks.
    #[serde(default)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}
impl JsonMessage for NodeMetrics {}

/// One stream's share in an [`Allocation`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamAllocation {
    pub stream: String,
    pub target_bps: f64,
    /// The quality level the allocator chose (0 = lossless).
    #[serde(default)]
    pub level: u8,
    /// The highest level the stream may use: quality never falls below it.
    pub quality_floor: u8,
}

/// One measured operating point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RdPointMessage {
    pub level: u8,
    pub bits_per_second: f64,
    /// RMS error in units of the channels' noise sigma (0 = lossless).
    pub distortion: f64,
}

/// A stream's operating points in an [`RdReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamRd {
    pub stream: String,
    pub points: Vec<RdPointMessage>,
}

/// Published by a node on `.../rd`: what each of its streams would cost at each quality.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RdReport {
    pub node: String,
    pub streams: Vec<StreamRd>,
}
impl JsonMessage for RdReport {}

impl RdReport {
    /// Rejects what an allocator must not trust: too many streams or points, repeated
    /// levels, negative or non-finite rates and distortions.
    pub fn validate(&self) -> Result<(), MessageError> {
        let bad = |m: &str| Err(MessageError::Json(format!("rd report: {m}")));
        if self.streams.len() > 256 {
            return bad("more than 256 streams");
        }
        for s in &self.streams {
            if s.points.is_empty() || s.points.len() > 32 {
                return bad("a stream needs 1 to 32 points");
            }
            for (i, p) in s.points.iter().enumerate() {
                if !(p.bits_per_second.is_finite() && p.bits_per_second >= 0.0) {
                    return bad("rates must be finite and non-negative");
                }
                if !(p.distortion.is_finite() && p.distortion >= 0.0) {
                    return bad("distortions must be finite and non-negative");
                }
                if s.points[..i].iter().any(|q| q.level == p.level) {
                    return bad("repeated quality level");
                }
            }
        }
        Ok(())
    }
}

/// Published by the coordinator on `.../alloc` every period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Allocation {
    pub period: u64,
    pub fleet_budget_bps: f64,
    pub streams: Vec<StreamAllocation>,
}
impl JsonMessage for Allocation {}

/// Published by the coordinator on `lydlr/v1/fleet/state` every period.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetState {
    pub period: u64,
    pub fleet_budget_bps: f64,
    pub online: Vec<String>,
    pub offline: Vec<String>,
    /// Sum of the nodes' cumulative raw and compressed bytes, from their latest metrics.
    pub raw_bytes: u64,
    pub compressed_bytes: u64,
    /// Messages the coordinator refused.
    pub rejected: u64,
    /// Sum of the allocated rates; above the budget only when `over_budget`.
    #[serde(default)]
    pub allocated_bps: f64,
    /// Even every stream's cheapest allowed point does not fit the budget.
    #[serde(default)]
    pub over_budget: bool,
    /// Fleet totals from the nodes' latest metrics (cumulative, all nodes ever seen).
    #[serde(default)]
    pub frames_in: u64,
    #[serde(default)]
    pub frames_out: u64,
    /// Messages the nodes refused.
    #[serde(default)]
    pub node_rejected: u64,
    #[serde(default)]
    pub spool_dropped: u64,
    /// Online nodes: compressed bits per second of stream time between their last two
    /// reports, the worst encode p99, packets waiting in offline queues.
    #[serde(default)]
    pub delivered_bps: f64,
    #[serde(default)]
    pub encode_p99_us_max: f64,
    #[serde(default)]
    pub spool_queued: u64,
    /// Online nodes per model version ("classical" for none).
    #[serde(default)]
    pub models: std::collections::BTreeMap<String, u32>,
    /// Raw over compressed bytes, fleet-wide.
    #[serde(default)]
    pub ratio: f64,
    /// This period's allocation per online node, bits per second.
    #[serde(default)]
    pub node_allocated_bps: std::collections::BTreeMap<String, f64>,
}
impl JsonMessage for FleetState {}

/// `lydlr/v1/fleet/budget`: the fleet's uplink budget from now on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FleetBudget {
    pub bps: f64,
}
impl JsonMessage for FleetBudget {}

/// `.../model/deploy`: what the node should run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ModelCommand {
    /// Verify, load, warm up and switch to a package version: its files carried here (name to
    /// base64 content, a `manifest.toml` among them) or, when `files` is empty, a version
    /// already under the node's model folder.
    Deploy {
        version: String,
        #[serde(default)]
        files: std::collections::BTreeMap<String, String>,
        /// The coordinator's rollout this deploy belongs to; echoed in every
        /// [`ModelStatus`] about the version, so that a status from an earlier deploy of the
        /// same version is never taken for this one's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rollout: Option<String>,
    },
    /// Go back to the version that ran before the current one.
    Rollback {
        #[serde(default)]
        reason: Option<String>,
        /// Only if this version is the one running (a rollout's rollback must not undo a
        /// version it did not install).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
    },
}
impl JsonMessage for ModelCommand {}

impl ModelCommand {
    /// A deploy carrying `files` (name and bytes).
    pub fn deploy_files<'a>(
        version: &str,
        files: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> ModelCommand {
        use base64::Engine as _;
        ModelCommand::Deploy {
            version: version.to_owned(),
            rollout: None,
            files: files
                .into_iter()
                .map(|(name, bytes)| {
                    (
                        name.to_owned(),
                        base64::engine::general_purpose::STANDARD.encode(bytes),
                    )
                })
                .collect(),
        }
    }

    /// The carried files, decoded.
    pub fn decoded_files(
        files: &std::collections::BTreeMap<String, String>,
    ) -> Result<Vec<(String, Vec<u8>)>, MessageError> {
        use base64::Engine as _;
        files
            .iter()
            .map(|(name, text)| {
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map(|bytes| (name.clone(), bytes))
                    .map_err(|e| MessageError::Json(format!("model file {name}: {e}")))
            })
            .collect()
    }
}

/// A step of a model deployment, as reported on `.../model/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelState {
    /// Refused before it ran: unreadable, wrong checksum or signature, wrong streams.
    Rejected,
    /// Verified, warmed up and switched to; its health window starts.
    Active,
    /// Passed its health window.
    Healthy,
    /// Taken out of service (failed health, or a rollback was ordered).
    RolledBack,
}

/// Published (retained) on `.../model/status` at every step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelStatus {
    pub node: String,
    /// The version this step concerns.
    pub version: String,
    pub state: ModelState,
    /// The version running after this step; `None` is the classical codecs alone.
    pub running: Option<String>,
    /// Why it was rejected or rolled back; what was checked when it passed.
    pub reason: String,
    /// Streams the running version codes.
    #[serde(default)]
    pub streams: Vec<String>,
    /// The rollout that deployed `version`, when a coordinator did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<String>,
}
impl JsonMessage for ModelStatus {}

/// `lydlr/v1/fleet/rollout/command`: the operator's orders to the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum RolloutCommand {
    /// Deploy a version to the canaries, then to the rest of the fleet in waves.
    Start(RolloutRequest),
    /// Stop the running rollout and roll back every node it deployed to.
    Abort {
        #[serde(default)]
        reason: Option<String>,
    },
}
impl JsonMessage for RolloutCommand {}

/// What a rollout deploys, where, and how carefully.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutRequest {
    /// Names the rollout in every status it causes.
    pub id: String,
    /// The package version (its manifest's `version`).
    pub version: String,
    /// The package files, as in [`ModelCommand::Deploy`]; empty deploys a version the nodes
    /// already hold on disk.
    #[serde(default)]
    pub files: std::collections::BTreeMap<String, String>,
    /// Nodes that take the version first; empty: the first target node by name.
    #[serde(default)]
    pub canary: Vec<String>,
    /// After the canaries, cumulative fractions of the other nodes per wave, ending at 1.
    #[serde(default = "RolloutRequest::default_waves")]
    pub waves: Vec<f64>,
    /// Nodes the rollout is for; empty: every node online when it starts.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// A wave whose nodes are not all healthy this long after its deploy fails.
    #[serde(default = "RolloutRequest::default_health_timeout_s")]
    pub health_timeout_s: f64,
}
impl JsonMessage for RolloutRequest {}

impl RolloutRequest {
    fn default_waves() -> Vec<f64> {
        vec![0.25, 1.0]
    }

    fn default_health_timeout_s() -> f64 {
        120.0
    }

    /// A rollout of `version` with the default canary, waves and timeout.
    pub fn new(id: &str, version: &str) -> RolloutRequest {
        RolloutRequest {
            id: id.to_owned(),
            version: version.to_owned(),
            files: Default::default(),
            canary: Vec::new(),
            waves: Self::default_waves(),
            nodes: Vec::new(),
            health_timeout_s: Self::default_health_timeout_s(),
        }
    }

    /// Refuses what the coordinator cannot carry out: bad names, waves that do not climb to
    /// the whole fleet, a timeout that is not a positive number of seconds.
    pub fn validate(&self) -> Result<(), MessageError> {
        let bad = |m: String| Err(MessageError::Json(format!("rollout request: {m}")));
        if !crate::topics::is_valid_name(&self.id) {
            return bad(format!("id {:?} is not 1-64 of [A-Za-z0-9_-]", self.id));
        }
        if !lydlr_codec::neural::package::is_valid_version(&self.version) {
            return bad(format!(
                "version {:?} is not 1-64 of [A-Za-z0-9._-]",
                self.version
            ));
        }
        if let Some(node) = self
            .canary
            .iter()
            .chain(&self.nodes)
            .find(|n| !crate::topics::is_valid_name(n))
        {
            return bad(format!("node {node:?} is not a valid name"));
        }
        if self.canary.len() + self.nodes.len() > 100_000 {
            return bad("more than 100000 nodes".into());
        }
        let climbs = self.waves.windows(2).all(|w| w[0] < w[1]);
        if self.waves.is_empty()
            || self.waves.len() > 64
            || !climbs
            || self.waves[0] <= 0.0
            || self.waves.last() != Some(&1.0)
        {
            return bad(format!(
                "waves {:?} must be 1 to 64 increasing fractions ending at 1",
                self.waves
            ));
        }
        if !(self.health_timeout_s.is_finite()
            && self.health_timeout_s > 0.0
            && self.health_timeout_s <= 86_400.0)
        {
            return bad(format!(
                "health_timeout_s {} must be in (0, 86400]",
                self.health_timeout_s
            ));
        }
        Ok(())
    }
}

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutPhase {
    Running,
    /// Every target node that was online for its wave runs the version, healthy.
    Completed,
    /// A node failed; every node it reached was ordered back.
    Halted,
    /// The operator stopped it; every node it reached was ordered back.
    Aborted,
}

/// One node's part in a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRolloutState {
    /// Its wave has not come.
    Waiting,
    /// Sent the version; no word yet.
    Deploying,
    /// Switched to the version; in its health window.
    Active,
    Healthy,
    /// Refused the version, failed its health window, or went silent.
    Failed,
    /// Ordered back to its previous version.
    RollingBack,
    RolledBack,
    /// Offline when its wave came; never sent the version.
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRollout {
    pub node: String,
    /// 0 for the canaries, then 1, 2, ...
    pub wave: u32,
    pub state: NodeRolloutState,
    /// The node's own words (its model status) or the coordinator's.
    #[serde(default)]
    pub reason: String,
}

/// Published retained on `lydlr/v1/fleet/rollout/state` whenever a rollout moves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutState {
    pub id: String,
    pub version: String,
    pub phase: RolloutPhase,
    /// The wave in progress (0 = canaries) and how many there are.
    pub wave: u32,
    pub waves: u32,
    /// Coordinator periods the wave in progress has waited for its nodes to be healthy.
    pub waited_periods: u64,
    pub nodes: Vec<NodeRollout>,
    /// Why it halted or was aborted; empty while it runs.
    #[serde(default)]
    pub reason: String,
}
impl JsonMessage for RolloutState {}

/// Requests on `.../control`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Control {
    /// Encode and publish every partial block now.
    Flush,
}
impl JsonMessage for Control {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_frames_round_trip_bit_exactly() {
        let frames = vec![
            Frame::new(-1, vec![f64::NAN, -0.0, 1.5]),
            Frame::new(i64::MAX, vec![f64::INFINITY, 3.0, -2.25]),
        ];
        let decoded = RawFrames::decode(&RawFrames::encode(&frames, true)).unwrap();
        assert!(decoded.flush);
        assert!(frames.iter().zip(&decoded.frames).all(|(a, b)| a.bit_eq(b)));
    }

    #[test]
    fn malformed_raw_frames_are_rejected() {
        let good = RawFrames::encode(&[Frame::new(1, vec![1.0, 2.0])], false);
        for cut in 0..good.len() {
            assert!(RawFrames::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(RawFrames::decode(&longer).is_err());
        let mut huge = good.clone();
        huge[6..10].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(RawFrames::decode(&huge).is_err());
        let mut flags = good;
        flags[3] = 0x80;
        assert!(RawFrames::decode(&flags).is_err());
    }

    #[test]
    fn json_messages_carry_and_check_their_version() {
        let status = NodeStatus {
            node: "r1".into(),
            state: NodeState::Online,
            codec: "lossless/1".into(),
        };
        let json = status.to_json();
        assert_eq!(NodeStatus::from_json(&json).unwrap(), status);
        let future = String::from_utf8(json)
            .unwrap()
            .replace("\"v\":1", "\"v\":9");
        assert_eq!(
            NodeStatus::from_json(future.as_bytes()),
            Err(MessageError::Version { found: 9 })
        );
        assert!(NodeStatus::from_json(b"{not json").is_err());
        assert!(Allocation::from_json(br#"{"v":1,"period":"x"}"#).is_err());
    }
}
