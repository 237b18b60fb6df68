//! Registry, liveness and allocation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lydlr_bus::messages::{
    Allocation, FleetBudget, FleetState, JsonMessage, ModelStatus, NodeMetrics, NodeState,
    NodeStatus, RdPointMessage, RdReport, RolloutCommand, RolloutPhase, RolloutState,
    StreamAllocation,
};

use crate::allocator::{
    AllocationResult, OperatingPoint, StreamDemand, allocate, allocate_equal_share,
    allocate_proportional,
};
use crate::rollout::Rollout;
use lydlr_bus::{BusMessage, Topic};
use serde::{Deserialize, Serialize};

/// Headroom a lossless stream gets over its measured rate, as a share of that rate.
const LOSSLESS_MARGIN: f64 = 0.01;

/// The rollout's state file under `state_dir`.
pub const ROLLOUT_FILE: &str = "rollout.json";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("coordinator state {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("coordinator state {path} is not a rollout this build can read: {message}")]
    Corrupt { path: PathBuf, message: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Allocation and liveness period.
    pub period_ms: u32,
    /// Uplink budget of the whole fleet, bits per second.
    pub fleet_budget_bps: f64,
    /// A node silent for this many periods is offline.
    pub offline_after_periods: u32,
    pub allocator: AllocatorKind,
    /// Weight of each stream's distortion, by stream name (default 1).
    pub stream_weights: BTreeMap<String, f64>,
    /// Weight of each node's distortion, by node name (default 1).
    pub node_weights: BTreeMap<String, f64>,
    /// Quality floor by stream name: the highest quality level (coarsest rung) it may use.
    pub max_level: BTreeMap<String, u8>,
    /// Where the rollout in progress is kept, so that it survives a restart; none: in memory.
    pub state_dir: Option<PathBuf>,
}

/// Which allocator runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocatorKind {
    /// Rate-distortion optimal.
    #[default]
    Rd,
    /// Baseline: the same rate for every stream.
    Equal,
    /// Baseline: rates proportional to each stream's lossless rate.
    Proportional,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            period_ms: 500,
            fleet_budget_bps: 2_000_000.0,
            offline_after_periods: 3,
            allocator: AllocatorKind::Rd,
            stream_weights: BTreeMap::new(),
            node_weights: BTreeMap::new(),
            max_level: BTreeMap::new(),
            state_dir: None,
        }
    }
}

impl CoordinatorConfig {
    pub fn period(&self) -> Duration {
        Duration::from_millis(u64::from(self.period_ms.max(1)))
    }
}

#[derive(Debug)]
struct NodeEntry {
    online: bool,
    last_seen: Instant,
    streams: Vec<String>,
    /// The latest metrics report.
    metrics: NodeMetrics,
    /// Delivered rate between the last two metrics reports, bits per second of stream time.
    rate_bps: f64,
    /// Latest operating points per stream.
    rd: BTreeMap<String, Vec<RdPointMessage>>,
}

/// A message for the bus.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// The fleet as the coordinator sees it.
pub struct Coordinator {
    config: CoordinatorConfig,
    nodes: BTreeMap<String, NodeEntry>,
    period: u64,
    rejected: u64,
    rollout: Option<Rollout>,
    /// Orders decided between two periods, sent with the next.
    outbox: Vec<Outgoing>,
}

impl Coordinator {
    /// A coordinator with nothing behind it (the state directory is not read).
    pub fn new(config: CoordinatorConfig) -> Self {
        Self {
            config,
            nodes: BTreeMap::new(),
            period: 0,
            rejected: 0,
            rollout: None,
            outbox: Vec::new(),
        }
    }

    /// A coordinator that carries on the rollout its state directory holds, if any.
    pub fn restore(config: CoordinatorConfig) -> Result<Self, StateError> {
        let rollout = match &config.state_dir {
            Some(dir) => load_rollout(&dir.join(ROLLOUT_FILE))?,
            None => None,
        };
        if let Some(r) = &rollout {
            let s = r.state();
            tracing::info!(id = %s.id, version = %s.version, phase = ?s.phase, wave = s.wave, "rollout restored");
        }
        let mut coordinator = Self::new(config);
        coordinator.rollout = rollout.map(|mut r| {
            r.mark_changed();
            r
        });
        Ok(coordinator)
    }

    /// The rollout in progress or the last one.
    pub fn rollout(&self) -> Option<&RolloutState> {
        self.rollout.as_ref().map(Rollout::state)
    }

    pub fn set_budget(&mut self, bps: f64) {
        self.config.fleet_budget_bps = bps;
    }

    pub fn is_online(&self, node: &str) -> bool {
        self.nodes.get(node).is_some_and(|n| n.online)
    }

    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Takes one message from the bus; anything it cannot use is counted, never fatal.
    pub fn handle(&mut self, message: &BusMessage, now: Instant) {
        let accepted = match Topic::parse(&message.topic) {
            Ok(Topic::Status { node }) => match NodeStatus::from_json(&message.payload) {
                Ok(status) if status.node == node => {
                    let entry = self.entry(&node, now);
                    entry.online = status.state == NodeState::Online;
                    if entry.online {
                        entry.last_seen = now;
                    }
                    true
                }
                _ => false,
            },
            Ok(Topic::Rd { node }) => match RdReport::from_json(&message.payload) {
                Ok(report) if report.node == node && report.validate().is_ok() => {
                    let entry = self.entry(&node, now);
                    entry.last_seen = now;
                    entry.rd = report
                        .streams
                        .into_iter()
                        .map(|s| (s.stream, s.points))
                        .collect();
                    true
                }
                _ => false,
            },
            Ok(Topic::FleetBudget) => match FleetBudget::from_json(&message.payload) {
                Ok(b) if b.bps.is_finite() && b.bps > 0.0 => {
                    tracing::info!(bps = b.bps, "new fleet budget");
                    self.config.fleet_budget_bps = b.bps;
                    true
                }
                _ => false,
            },
            Ok(Topic::Metrics { node }) => match NodeMetrics::from_json(&message.payload) {
                Ok(m) if m.node == node && m.streams.len() <= 1024 => {
                    let entry = self.entry(&node, now);
                    entry.online = true;
                    entry.last_seen = now;
                    entry.streams = m.streams.iter().map(|s| s.stream.clone()).collect();
                    let dt = m.t_stream_s - entry.metrics.t_stream_s;
                    if dt > 0.0 && m.compressed_bytes >= entry.metrics.compressed_bytes {
                        entry.rate_bps =
                            (m.compressed_bytes - entry.metrics.compressed_bytes) as f64 * 8.0 / dt;
                    }
                    entry.metrics = m;
                    true
                }
                _ => false,
            },
            Ok(Topic::ModelStatus { node }) => match ModelStatus::from_json(&message.payload) {
                Ok(status) if status.node == node => {
                    if let Some(rollout) = &mut self.rollout {
                        rollout.on_status(&status, &mut self.outbox);
                    }
                    true
                }
                _ => false,
            },
            Ok(Topic::RolloutCommand) => match RolloutCommand::from_json(&message.payload) {
                Ok(command) => self.command(command),
                Err(e) => {
                    tracing::warn!("rollout command refused: {e}");
                    false
                }
            },
            // Our own rollout state, echoed back.
            Ok(Topic::RolloutState) => true,
            _ => false,
        };
        if !accepted {
            self.rejected += 1;
        }
    }

    /// Starts or aborts a rollout; false when the order cannot be carried out.
    fn command(&mut self, command: RolloutCommand) -> bool {
        match command {
            RolloutCommand::Start(request) => {
                if let Err(e) = request.validate() {
                    tracing::warn!("{e}");
                    return false;
                }
                if let Some(current) = self.rollout.as_ref().filter(|r| r.is_running()) {
                    tracing::warn!(
                        running = %current.state().id,
                        refused = %request.id,
                        "a rollout is running; abort it first"
                    );
                    return false;
                }
                let online: Vec<String> = self
                    .nodes
                    .iter()
                    .filter(|(_, n)| n.online)
                    .map(|(name, _)| name.clone())
                    .collect();
                match Rollout::plan(request, &online) {
                    Ok(rollout) => {
                        let s = rollout.state();
                        tracing::info!(id = %s.id, version = %s.version, nodes = s.nodes.len(), waves = s.waves, "rollout started");
                        self.rollout = Some(rollout);
                        true
                    }
                    Err(e) => {
                        tracing::warn!("rollout refused: {e}");
                        false
                    }
                }
            }
            RolloutCommand::Abort { reason } => match &mut self.rollout {
                Some(rollout) if rollout.is_running() => {
                    let reason = reason.unwrap_or_else(|| "aborted by the operator".into());
                    rollout.halt(RolloutPhase::Aborted, reason, &mut self.outbox);
                    true
                }
                _ => false,
            },
        }
    }

    fn entry(&mut self, node: &str, now: Instant) -> &mut NodeEntry {
        self.nodes
            .entry(node.to_owned())
            .or_insert_with(|| NodeEntry {
                online: false,
                last_seen: now,
                streams: Vec::new(),
                metrics: NodeMetrics::default(),
                rate_bps: 0.0,
                rd: BTreeMap::new(),
            })
    }

    /// The rollout's share of a period: progress, its orders, and its state published and
    /// saved when it moved.
    fn advance_rollout(&mut self, out: &mut Vec<Outgoing>) {
        let Some(rollout) = &mut self.rollout else {
            return;
        };
        // Until every live node has had the time to be heard, silence means nothing: a
        // restarted coordinator must not take its fleet for offline.
        let heard_from_all = self.period > u64::from(self.config.offline_after_periods);
        let nodes = &self.nodes;
        if heard_from_all {
            rollout.on_tick(
                |node| nodes.get(node).is_some_and(|n| n.online),
                self.config.period(),
                &mut self.outbox,
            );
        }
        out.append(&mut self.outbox);
        if rollout.take_changed() {
            out.push(Outgoing {
                topic: Topic::RolloutState.to_string(),
                payload: rollout.state().to_json(),
                retain: true,
            });
            if let Some(dir) = &self.config.state_dir
                && let Err(e) = save_rollout(dir, rollout)
            {
                // The rollout goes on; only a restart would lose track of it.
                tracing::error!("{e}");
            }
        }
    }

    /// One period: expire silent nodes, allocate, summarise.
    pub fn tick(&mut self, now: Instant) -> Vec<Outgoing> {
        self.period += 1;
        let timeout = self.config.period() * self.config.offline_after_periods;
        for (name, node) in &mut self.nodes {
            if node.online && now.saturating_duration_since(node.last_seen) > timeout {
                tracing::warn!(node = %name, "silent for {timeout:?}: offline");
                node.online = false;
            }
        }
        let (mut out, allocated_bps, over_budget) = self.allocate();
        let mut state = self.fleet_state();
        state.allocated_bps = allocated_bps;
        state.over_budget = over_budget;
        for message in &out {
            if let Ok(Topic::Alloc { node }) = Topic::parse(&message.topic)
                && let Ok(allocation) = Allocation::from_json(&message.payload)
            {
                let total = allocation.streams.iter().map(|s| s.target_bps).sum();
                state.node_allocated_bps.insert(node, total);
            }
        }
        self.advance_rollout(&mut out);
        out.push(Outgoing {
            topic: Topic::FleetState.to_string(),
            payload: state.to_json(),
            retain: true,
        });
        out
    }

    /// One operating point per stream of every online node, by the configured allocator.
    /// Streams that have not reported their operating points yet are held at an equal share.
    fn allocate(&self) -> (Vec<Outgoing>, f64, bool) {
        let online: Vec<(&String, &NodeEntry)> =
            self.nodes.iter().filter(|(_, n)| n.online).collect();
        let mut owners = Vec::new();
        let mut demands = Vec::new();
        let count: usize = online
            .iter()
            .map(|(_, n)| n.streams.len().max(n.rd.len()))
            .sum();
        if count == 0 {
            return (Vec::new(), 0.0, false);
        }
        let share = self.config.fleet_budget_bps / count as f64;
        for (name, node) in &online {
            let mut streams: Vec<&String> = node.streams.iter().chain(node.rd.keys()).collect();
            streams.sort();
            streams.dedup();
            for stream in streams {
                let points: Vec<OperatingPoint> = match node.rd.get(stream) {
                    Some(points) => points
                        .iter()
                        .map(|p| OperatingPoint {
                            level: p.level,
                            bits_per_second: p.bits_per_second,
                            distortion: p.distortion,
                        })
                        .collect(),
                    None => vec![OperatingPoint {
                        level: 0,
                        bits_per_second: share,
                        distortion: 0.0,
                    }],
                };
                let weight = self
                    .config
                    .stream_weights
                    .get(stream)
                    .copied()
                    .unwrap_or(1.0)
                    * self.config.node_weights.get(*name).copied().unwrap_or(1.0);
                demands.push(StreamDemand {
                    points,
                    weight,
                    max_level: self
                        .config
                        .max_level
                        .get(stream)
                        .copied()
                        .unwrap_or(u8::MAX),
                });
                owners.push(((*name).clone(), stream.clone()));
            }
        }
        let budget = self.config.fleet_budget_bps;
        let result: AllocationResult = match self.config.allocator {
            AllocatorKind::Rd => allocate(&demands, budget),
            AllocatorKind::Equal => allocate_equal_share(&demands, budget),
            AllocatorKind::Proportional => allocate_proportional(&demands, budget),
        };
        // What the chosen points leave of the budget is handed out as headroom, so that the
        // targets add up to the budget. A lossless stream can use only its wobble of it; the
        // rest goes to the lossy streams, in proportion to their rates, which the nodes spend
        // by alternating with the next finer rung.
        let spare = if result.over_budget {
            0.0
        } else {
            (budget - result.total_rate).max(0.0)
        };
        let chosen: Vec<OperatingPoint> = demands
            .iter()
            .zip(&result.choice)
            .map(|(d, &i)| d.points[i])
            .collect();
        let lossless_rate: f64 = chosen
            .iter()
            .filter(|p| p.level == 0)
            .map(|p| p.bits_per_second)
            .sum();
        let lossy_rate = result.total_rate - lossless_rate;
        let (lossless_scale, lossy_scale) = if lossy_rate > 0.0 {
            let margin = (LOSSLESS_MARGIN * lossless_rate).min(spare);
            (
                1.0 + margin / lossless_rate.max(f64::MIN_POSITIVE),
                1.0 + (spare - margin) / lossy_rate,
            )
        } else {
            let all = 1.0 + spare / result.total_rate.max(f64::MIN_POSITIVE);
            (all, all)
        };
        let mut per_node: BTreeMap<String, Vec<StreamAllocation>> = BTreeMap::new();
        for (((node, stream), demand), point) in owners.into_iter().zip(&demands).zip(&chosen) {
            let scale = if point.level == 0 {
                lossless_scale
            } else {
                lossy_scale
            };
            per_node.entry(node).or_default().push(StreamAllocation {
                stream,
                target_bps: point.bits_per_second * scale,
                level: point.level,
                quality_floor: demand.max_level,
            });
        }
        let messages = per_node
            .into_iter()
            .map(|(node, streams)| Outgoing {
                topic: Topic::Alloc { node }.to_string(),
                payload: Allocation {
                    period: self.period,
                    fleet_budget_bps: budget,
                    streams,
                }
                .to_json(),
                retain: false,
            })
            .collect();
        (messages, result.total_rate, result.over_budget)
    }

    pub fn fleet_state(&self) -> FleetState {
        let mut state = FleetState {
            period: self.period,
            fleet_budget_bps: self.config.fleet_budget_bps,
            rejected: self.rejected,
            ..FleetState::default()
        };
        for (name, node) in &self.nodes {
            let m = &node.metrics;
            state.raw_bytes += m.raw_bytes;
            state.compressed_bytes += m.compressed_bytes;
            state.frames_in += m.frames_in;
            state.frames_out += m.frames_out;
            state.node_rejected += m.rejected;
            state.spool_dropped += m.spool_dropped;
            if !node.online {
                state.offline.push(name.clone());
                continue;
            }
            state.online.push(name.clone());
            state.delivered_bps += node.rate_bps;
            state.encode_p99_us_max = state.encode_p99_us_max.max(m.encode_p99_us);
            state.spool_queued += m.spool_queued;
            let version = m.model_version.as_deref().unwrap_or("classical");
            *state.models.entry(version.to_owned()).or_default() += 1;
        }
        if state.compressed_bytes > 0 {
            state.ratio = state.raw_bytes as f64 / state.compressed_bytes as f64;
        }
        state
    }
}

fn load_rollout(path: &Path) -> Result<Option<Rollout>, StateError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| StateError::Corrupt {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

/// Written beside and renamed over the old file, so a crash leaves one whole state or the other.
fn save_rollout(dir: &Path, rollout: &Rollout) -> Result<(), StateError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| StateError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(ROLLOUT_FILE);
    let partial = dir.join(format!(".{ROLLOUT_FILE}.partial"));
    let json = serde_json::to_vec(rollout).expect("a rollout always serialises");
    std::fs::write(&partial, json).map_err(io(&partial))?;
    std::fs::rename(&partial, &path).map_err(io(&path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lydlr_bus::messages::StreamMetrics;

    fn metrics(node: &str, streams: &[&str]) -> BusMessage {
        let m = NodeMetrics {
            node: node.into(),
            streams: streams
                .iter()
                .map(|s| StreamMetrics {
                    stream: (*s).into(),
                    ..StreamMetrics::default()
                })
                .collect(),
            ..NodeMetrics::default()
        };
        BusMessage {
            topic: Topic::Metrics { node: node.into() }.to_string(),
            payload: m.to_json(),
            retained: false,
        }
    }

    fn allocations(out: &[Outgoing]) -> Vec<Allocation> {
        out.iter()
            .filter(|o| o.topic.ends_with("/alloc"))
            .map(|o| Allocation::from_json(&o.payload).unwrap())
            .collect()
    }

    #[test]
    fn budget_is_shared_and_a_silent_node_is_dropped_within_three_periods() {
        let config = CoordinatorConfig {
            period_ms: 500,
            fleet_budget_bps: 9000.0,
            offline_after_periods: 3,
            ..CoordinatorConfig::default()
        };
        let mut c = Coordinator::new(config);
        let t0 = Instant::now();
        c.handle(&metrics("a", &["imu", "wheels"]), t0);
        c.handle(&metrics("b", &["imu"]), t0);
        let first = allocations(&c.tick(t0));
        let total: f64 = first
            .iter()
            .flat_map(|a| &a.streams)
            .map(|s| s.target_bps)
            .sum();
        assert!((total - 9000.0).abs() < 1e-6);

        // "b" goes silent; "a" keeps reporting.
        let mut dropped_at = None;
        for period in 1..=5 {
            let now = t0 + Duration::from_millis(500 * period);
            c.handle(&metrics("a", &["imu", "wheels"]), now);
            c.tick(now);
            if dropped_at.is_none() && !c.is_online("b") {
                dropped_at = Some(period);
            }
        }
        assert_eq!(
            dropped_at,
            Some(4),
            "offline after more than 3 silent periods"
        );
        let now = t0 + Duration::from_secs(3);
        let last = allocations(&c.tick(now));
        assert_eq!(last.len(), 1);
        assert!(
            last[0]
                .streams
                .iter()
                .all(|s| (s.target_bps - 4500.0).abs() < 1e-6)
        );

        // It comes back.
        c.handle(&metrics("b", &["imu"]), now);
        assert!(c.is_online("b"));
    }

    fn rd(node: &str, stream: &str, points: &[(u8, f64, f64)]) -> BusMessage {
        let report = RdReport {
            node: node.into(),
            streams: vec![lydlr_bus::messages::StreamRd {
                stream: stream.into(),
                points: points
                    .iter()
                    .map(|&(level, bits_per_second, distortion)| RdPointMessage {
                        level,
                        bits_per_second,
                        distortion,
                    })
                    .collect(),
            }],
        };
        BusMessage {
            topic: Topic::Rd { node: node.into() }.to_string(),
            payload: report.to_json(),
            retained: false,
        }
    }

    #[test]
    fn reported_operating_points_are_allocated_within_the_budget() {
        let mut c = Coordinator::new(CoordinatorConfig {
            fleet_budget_bps: 1000.0,
            max_level: [("lidar".to_string(), 1u8)].into_iter().collect(),
            ..CoordinatorConfig::default()
        });
        let now = Instant::now();
        c.handle(
            &rd(
                "a",
                "imu",
                &[(0, 800.0, 0.0), (1, 400.0, 0.3), (2, 200.0, 0.9)],
            ),
            now,
        );
        c.handle(
            &rd(
                "b",
                "lidar",
                &[(0, 900.0, 0.0), (1, 600.0, 0.2), (2, 100.0, 2.0)],
            ),
            now,
        );
        // A report with a negative rate is refused and changes nothing.
        c.handle(&rd("b", "lidar", &[(0, -5.0, 0.0)]), now);
        assert_eq!(c.rejected(), 1);
        c.handle(&metrics("a", &["imu"]), now);
        c.handle(&metrics("b", &["lidar"]), now);
        let alloc = allocations(&c.tick(now));
        let all: Vec<&StreamAllocation> = alloc.iter().flat_map(|a| &a.streams).collect();
        let total: f64 = all.iter().map(|s| s.target_bps).sum();
        assert!(total <= 1000.0, "{total}");
        let lidar = all.iter().find(|s| s.stream == "lidar").unwrap();
        // The floor keeps lidar at level 1 or better although level 2 would be cheap.
        assert_eq!((lidar.level, lidar.quality_floor), (1, 1));
        let imu = all.iter().find(|s| s.stream == "imu").unwrap();
        assert_eq!(imu.level, 1, "400 + 600 fills the budget exactly");
    }

    #[test]
    fn last_will_marks_offline_and_bad_messages_are_counted() {
        let mut c = Coordinator::new(CoordinatorConfig::default());
        let now = Instant::now();
        c.handle(&metrics("a", &["imu"]), now);
        let will = NodeStatus {
            node: "a".into(),
            state: NodeState::Offline,
            codec: "lossless".into(),
        };
        c.handle(
            &BusMessage {
                topic: Topic::Status { node: "a".into() }.to_string(),
                payload: will.to_json(),
                retained: true,
            },
            now,
        );
        assert!(!c.is_online("a"));
        for (topic, payload) in [
            ("lydlr/v1/a/metrics", b"{garbage".to_vec()),
            ("lydlr/v1/b/metrics", metrics("a", &[]).payload),
            ("not/ours", Vec::new()),
            (
                "lydlr/v1/a/status",
                br#"{"v":1,"node":"a","state":"dancing","codec":""}"#.to_vec(),
            ),
        ] {
            c.handle(
                &BusMessage {
                    topic: topic.into(),
                    payload,
                    retained: false,
                },
                now,
            );
        }
        assert_eq!(c.rejected(), 4);
        assert!(!c.is_online("b"));
    }
}
