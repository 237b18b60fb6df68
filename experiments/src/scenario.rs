//! Scenario files: one TOML per experiment.

use std::path::Path;

use lydlr_coordinator::CoordinatorConfig;
use lydlr_sim::SimConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {path}: {error}")]
    Read { path: String, error: std::io::Error },
    /// Syntax errors and unknown or mistyped fields; toml's message names the line.
    #[error("invalid scenario {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid scenario {path}:{line}: {field}: {reason}")]
    Invalid {
        path: String,
        line: usize,
        field: String,
        reason: String,
    },
}

/// A complete experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub sim: SimConfig,
    #[serde(default)]
    pub edge: EdgeSection,
    #[serde(default)]
    pub coordinator: CoordinatorConfig,
    #[serde(default)]
    pub run: RunSection,
    /// The nodes' uplinks: latency and losses of the radio.
    #[serde(default)]
    pub link: LinkSection,
    /// Real recordings replayed as robots instead of the simulated swarm (`sim` then only
    /// gives the seed and caps the duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<crate::source::ReplaySection>,
    /// Things that happen during the run: faults and budget changes.
    #[serde(default)]
    pub events: Vec<ScheduledEvent>,
}

/// An event at a time of the simulation clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduledEvent {
    pub at_s: f64,
    #[serde(flatten)]
    pub event: Event,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    /// The node's process dies: no goodbye, the broker publishes its last will.
    KillNode { node: String },
    /// A killed node starts again.
    RestartNode { node: String },
    /// The fleet uplink budget changes (published on `lydlr/v1/fleet/budget`).
    SetBudget { bps: f64 },
    /// The node's uplink goes dead (its sensors keep publishing on the robot's own broker).
    CutLink { node: String },
    /// A cut uplink comes back.
    RestoreLink { node: String },
    /// The fleet broker goes away for `down_s` and comes back empty (no sessions, no
    /// retained messages): the embedded broker is replaced by a new one on the same address,
    /// a Mosquitto started by the run (`--broker mosquitto`) is killed and restarted; an
    /// external broker cannot be, and every link to it is cut instead.
    RestartBroker {
        #[serde(default = "Event::default_down_s")]
        down_s: f64,
    },
    /// One node is sent a model package directly (no canary): a package folder.
    DeployModel { node: String, model: String },
    /// The coordinator rolls a package out: canaries, then waves.
    Rollout {
        model: String,
        #[serde(default)]
        canary: Vec<String>,
        #[serde(default = "Event::default_waves")]
        waves: Vec<f64>,
        #[serde(default = "Event::default_health_timeout_s")]
        health_timeout_s: f64,
    },
    /// A user script (a `.rhai` file) is pushed to one node.
    LoadScript { node: String, script: String },
}

impl Event {
    fn default_down_s() -> f64 {
        2.0
    }

    fn default_waves() -> Vec<f64> {
        vec![0.5, 1.0]
    }

    fn default_health_timeout_s() -> f64 {
        30.0
    }

    /// The node the event concerns, if one.
    pub fn node(&self) -> Option<&str> {
        match self {
            Event::KillNode { node }
            | Event::RestartNode { node }
            | Event::CutLink { node }
            | Event::RestoreLink { node }
            | Event::DeployModel { node, .. }
            | Event::LoadScript { node, .. } => Some(node),
            Event::SetBudget { .. } | Event::RestartBroker { .. } | Event::Rollout { .. } => None,
        }
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::KillNode { node } => write!(f, "kill {node}"),
            Event::RestartNode { node } => write!(f, "restart {node}"),
            Event::SetBudget { bps } => write!(f, "budget {:.1} kbit/s", bps / 1000.0),
            Event::CutLink { node } => write!(f, "cut {node}'s link"),
            Event::RestoreLink { node } => write!(f, "restore {node}'s link"),
            Event::RestartBroker { down_s } => write!(f, "restart the broker ({down_s} s down)"),
            Event::DeployModel { node, model } => write!(f, "deploy {model} to {node}"),
            Event::Rollout { model, .. } => write!(f, "roll {model} out"),
            Event::LoadScript { node, script } => write!(f, "load {script} on {node}"),
        }
    }
}

/// Every node's uplink to the fleet broker, as a radio would make it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkSection {
    /// One-way delay, each direction.
    pub latency_ms: f64,
    /// Extra delay, uniform in [0, jitter_ms), per chunk.
    pub jitter_ms: f64,
    /// Probability that a chunk is lost once (TCP resends it after `retransmission_timeout_ms`).
    pub loss: f64,
    pub retransmission_timeout_ms: Option<f64>,
}

impl LinkSection {
    pub fn is_perfect(&self) -> bool {
        self.latency_ms == 0.0 && self.jitter_ms == 0.0 && self.loss == 0.0
    }

    /// The proxy's settings for one node's link.
    pub fn quality(&self, seed: u64) -> lydlr_bus::LinkQuality {
        let ms = |v: f64| std::time::Duration::from_secs_f64(v / 1000.0);
        let d = lydlr_bus::LinkQuality::default();
        lydlr_bus::LinkQuality {
            latency: ms(self.latency_ms),
            jitter: ms(self.jitter_ms),
            loss: self.loss,
            retransmission_timeout: self
                .retransmission_timeout_ms
                .map_or(d.retransmission_timeout, ms),
            seed,
        }
    }
}

/// How every edge node of the run is configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeSection {
    pub block_ms: u32,
    pub min_block_frames: u16,
    pub max_block_ms: u32,
    pub max_block_frames: u16,
    pub metrics_period_ms: u32,
    /// Folder of Rhai scripts every node loads at start.
    pub scripts: Option<String>,
    /// A model package folder (as `lydlr train` writes it) every node starts with.
    pub model: Option<String>,
    /// A new model version's health window: blocks, encode p99 budget, size against the
    /// classical codecs.
    pub health_blocks: u32,
    pub latency_budget_us: f64,
    pub health_max_size_ratio: f64,
}

impl EdgeSection {
    /// The configuration of one node of the run; its offline queue and model versions live
    /// under the run's folder `work`, and it starts with `model`, a version staged there.
    pub fn node_config(
        &self,
        node: &str,
        broker: &str,
        work: &std::path::Path,
        model: Option<&str>,
    ) -> lydlr_edge::EdgeConfig {
        lydlr_edge::EdgeConfig {
            model: model.map(str::to_owned),
            spool_dir: work.join("spool").display().to_string(),
            models_dir: work.join("models").display().to_string(),
            node_id: node.to_owned(),
            broker: broker.to_owned(),
            block_ms: self.block_ms,
            min_block_frames: self.min_block_frames,
            max_block_ms: self.max_block_ms,
            max_block_frames: self.max_block_frames,
            metrics_period_ms: self.metrics_period_ms,
            scripts_dir: self.scripts.clone(),
            health_blocks: self.health_blocks,
            latency_budget_us: self.latency_budget_us,
            health_max_size_ratio: self.health_max_size_ratio,
            ..lydlr_edge::EdgeConfig::default()
        }
    }
}

impl Default for EdgeSection {
    fn default() -> Self {
        let d = lydlr_edge::EdgeConfig::default();
        Self {
            block_ms: d.block_ms,
            min_block_frames: d.min_block_frames,
            max_block_ms: d.max_block_ms,
            max_block_frames: d.max_block_frames,
            metrics_period_ms: d.metrics_period_ms,
            scripts: None,
            model: None,
            health_blocks: d.health_blocks,
            latency_budget_us: d.latency_budget_us,
            health_max_size_ratio: d.health_max_size_ratio,
        }
    }
}

/// How the run itself behaves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSection {
    /// Raw frames are batched per stream over this much simulated time before publishing.
    pub publish_every_ms: u32,
    /// Pace the simulation to the wall clock instead of running as fast as possible.
    pub realtime: bool,
    /// Write `recording.rrd`.
    pub rerun: bool,
    /// Wall-clock limit for the sink to receive everything after the simulation ends.
    pub drain_timeout_s: f64,
}

impl Default for RunSection {
    fn default() -> Self {
        Self {
            publish_every_ms: 50,
            realtime: false,
            rerun: true,
            drain_timeout_s: 30.0,
        }
    }
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|error| ScenarioError::Read {
            path: path.display().to_string(),
            error,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates; `origin` names the source in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            path: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        scenario
            .validate()
            .map_err(|(field, reason)| ScenarioError::Invalid {
                path: origin.to_owned(),
                line: line_of(text, &field).unwrap_or(0),
                field,
                reason,
            })?;
        Ok(scenario)
    }

    /// The robots of the run: the swarm's, or one per replayed recording.
    pub fn robot_names(&self) -> Vec<String> {
        match &self.replay {
            Some(replay) => (0..replay.files.len())
                .map(crate::source::replay_robot_name)
                .collect(),
            None => (0..self.sim.robots.count)
                .map(lydlr_sim::robot_name)
                .collect(),
        }
    }

    fn validate(&self) -> Result<(), (String, String)> {
        if !lydlr_bus::topics::is_valid_name(&self.name) {
            return Err(("name".into(), "must be 1-64 of [A-Za-z0-9_-]".into()));
        }
        self.sim
            .validate()
            .map_err(|e| (format!("sim.{}", e.field), e.reason))?;
        if let Err(lydlr_edge::EdgeConfigError::Invalid { field, reason }) = self
            .edge
            .node_config(
                "robot-00",
                "mqtt://127.0.0.1:1883",
                std::path::Path::new("."),
                None,
            )
            .validate()
        {
            return Err((format!("edge.{field}"), reason));
        }
        for (field, value) in [
            (
                "coordinator.period_ms",
                u64::from(self.coordinator.period_ms),
            ),
            (
                "coordinator.offline_after_periods",
                u64::from(self.coordinator.offline_after_periods),
            ),
            ("run.publish_every_ms", u64::from(self.run.publish_every_ms)),
        ] {
            if value == 0 {
                return Err((field.into(), "must be positive".into()));
            }
        }
        let budget = self.coordinator.fleet_budget_bps;
        if !(budget.is_finite() && budget > 0.0) {
            return Err((
                "coordinator.fleet_budget_bps".into(),
                format!("must be positive, got {budget}"),
            ));
        }
        if !(self.run.drain_timeout_s.is_finite() && self.run.drain_timeout_s > 0.0) {
            return Err(("run.drain_timeout_s".into(), "must be positive".into()));
        }
        for (field, value, max) in [
            ("link.latency_ms", self.link.latency_ms, 10_000.0),
            ("link.jitter_ms", self.link.jitter_ms, 10_000.0),
            ("link.loss", self.link.loss, 1.0),
            (
                "link.retransmission_timeout_ms",
                self.link.retransmission_timeout_ms.unwrap_or(200.0),
                60_000.0,
            ),
        ] {
            if !(value.is_finite() && (0.0..=max).contains(&value)) {
                return Err((field.into(), format!("must be 0 to {max}, got {value}")));
            }
        }
        let names = self.robot_names();
        if let Some(replay) = &self.replay
            && (replay.files.is_empty() || replay.files.len() > 100)
        {
            return Err((
                "replay.files".into(),
                "must name 1 to 100 recordings".into(),
            ));
        }
        for (i, e) in self.events.iter().enumerate() {
            let field = format!("events[{i}]");
            if !(e.at_s.is_finite() && (0.0..self.sim.duration_s).contains(&e.at_s)) {
                return Err((format!("{field}.at_s"), "must lie within the run".into()));
            }
            let known = |node: &str| names.iter().any(|n| n == node);
            if let Some(node) = e.event.node()
                && !known(node)
            {
                return Err((format!("{field}.node"), format!("no robot named {node:?}")));
            }
            match &e.event {
                Event::SetBudget { bps } => {
                    if !(bps.is_finite() && *bps > 0.0) {
                        return Err((format!("{field}.bps"), "must be positive".into()));
                    }
                }
                Event::RestartBroker { down_s } => {
                    if !(down_s.is_finite() && (0.0..=600.0).contains(down_s)) {
                        return Err((format!("{field}.down_s"), "must be 0 to 600".into()));
                    }
                }
                Event::Rollout {
                    canary,
                    waves,
                    health_timeout_s,
                    ..
                } => {
                    if let Some(node) = canary.iter().find(|n| !known(n)) {
                        return Err((
                            format!("{field}.canary"),
                            format!("no robot named {node:?}"),
                        ));
                    }
                    let mut request = lydlr_bus::messages::RolloutRequest::new("check", "0");
                    request.waves = waves.clone();
                    request.health_timeout_s = *health_timeout_s;
                    if let Err(e) = request.validate() {
                        return Err((format!("{field}.waves"), e.to_string()));
                    }
                }
                Event::KillNode { .. }
                | Event::RestartNode { .. }
                | Event::CutLink { .. }
                | Event::RestoreLink { .. }
                | Event::DeployModel { .. }
                | Event::LoadScript { .. } => {}
            }
        }
        Ok(())
    }
}

/// The 1-based line where a dotted field (`sim.robots.count`, `sim.arena.size_m[0]`,
/// `events[1].at_s` for the second `[[events]]` table) is set.
fn line_of(text: &str, field: &str) -> Option<usize> {
    // An entry of an array of tables: find its header, then the key below it.
    if let Some((array, rest)) = field.split_once('[')
        && let Some((index, key)) = rest.split_once("].")
        && let Ok(index) = index.parse::<usize>()
        && !array.contains('.')
    {
        let header = format!("[[{array}]]");
        let mut seen = 0;
        let mut inside = false;
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.starts_with('[') {
                inside = line == header && {
                    seen += 1;
                    seen == index + 1
                };
                if inside && key.is_empty() {
                    return Some(i + 1);
                }
                continue;
            }
            if inside && line.split_once('=').is_some_and(|(k, _)| k.trim() == key) {
                return Some(i + 1);
            }
        }
        return None;
    }
    let field = field.split('[').next().unwrap_or(field);
    let (table, key) = field.rsplit_once('.').unwrap_or(("", field));
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = header.trim().to_owned();
            continue;
        }
        let Some((k, _)) = line.split_once('=') else {
            continue;
        };
        let k = k.trim().trim_matches('"');
        let full = if current.is_empty() {
            k.to_owned()
        } else {
            format!("{current}.{k}")
        };
        if full == field || (current == table && k == key) {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semantic_errors_name_field_and_line() {
        let text = "name = \"t\"\n\n[sim.robots]\nmass_kg = 3.0\ncount = 0\n";
        let err = Scenario::parse(text, "t.toml").unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid scenario t.toml:5: sim.robots.count: must be 1 to 10000, got 0"
        );
    }

    #[test]
    fn unknown_fields_and_bad_types_name_the_line() {
        let err = Scenario::parse("name = \"t\"\n[sim]\nduration = 3\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3") && err.contains("duration"), "{err}");
        let err = Scenario::parse("name = \"t\"\n[edge]\nblock_ms = \"x\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
        let err = Scenario::parse("[sim]\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("name"), "{err}");
    }

    #[test]
    fn events_parse_and_bad_ones_name_their_field() {
        let ok = "name = \"t\"\n[[events]]\nat_s = 5.0\nkind = \"kill_node\"\nnode = \"robot-01\"\n\n[[events]]\nat_s = 6.0\nkind = \"set_budget\"\nbps = 1000.0\n";
        let s = Scenario::parse(ok, "t.toml").unwrap();
        assert_eq!(s.events.len(), 2);
        assert_eq!(
            s.events[0].event,
            Event::KillNode {
                node: "robot-01".into()
            }
        );
        let err = Scenario::parse(&ok.replace("robot-01", "robot-09"), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("events[0].node") && err.contains("robot-09"),
            "{err}"
        );
        let err = Scenario::parse(&ok.replace("at_s = 6.0", "at_s = 99.0"), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("t.toml:8: events[1].at_s"), "{err}");
        let err = Scenario::parse(&ok.replace("kill_node", "explode"), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("explode"), "{err}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = Scenario::load(Path::new("no/such/scenario.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no/such/scenario.toml"), "{err}");
    }
}
