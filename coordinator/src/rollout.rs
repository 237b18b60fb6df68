//! Staged model rollout: canaries first, then the rest of the fleet in waves, each wave
//! deployed only when every node of the one before reports its health window passed.
//!
//! A node that refuses the version, fails its health window, goes offline while on probation
//! or is not healthy within the timeout halts the rollout, and every node it reached is
//! ordered back to the version it ran before (a rollback naming the version, so a node that
//! never switched keeps what it runs). A node offline when its wave comes is skipped, never
//! waited for; canaries are never skipped: no canary healthy, no wider deploy.
//!
//! Progress is driven by the nodes' `.../model/status` reports that carry this rollout's id,
//! so a status left from an earlier deploy of the same version is never taken for this one.

use std::time::Duration;

use lydlr_bus::Topic;
use lydlr_bus::messages::{
    JsonMessage, ModelCommand, ModelState, ModelStatus, NodeRollout, NodeRolloutState,
    RolloutPhase, RolloutRequest, RolloutState,
};
use serde::{Deserialize, Serialize};

use crate::fleet::Outgoing;

/// A rollout in progress or ended: the operator's request (with the package files, to
/// deploy the later waves) and where it stands. This is what the state file holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    request: RolloutRequest,
    state: RolloutState,
    #[serde(skip)]
    changed: bool,
}

impl Rollout {
    /// Splits the target nodes into the canary group and the waves. `online` is the fleet
    /// now, sorted by name.
    pub fn plan(request: RolloutRequest, online: &[String]) -> Result<Rollout, String> {
        let mut targets: Vec<String> = if request.nodes.is_empty() {
            online.to_vec()
        } else {
            request.nodes.clone()
        };
        let canary: Vec<String> = if request.canary.is_empty() {
            targets.first().cloned().into_iter().collect()
        } else {
            request.canary.clone()
        };
        if canary.is_empty() {
            return Err("no node to deploy to (none online and none named)".into());
        }
        targets.retain(|n| !canary.contains(n));
        targets.sort();
        targets.dedup();
        let mut nodes: Vec<NodeRollout> = canary
            .iter()
            .map(|node| NodeRollout {
                node: node.clone(),
                wave: 0,
                state: NodeRolloutState::Waiting,
                reason: String::new(),
            })
            .collect();
        let mut wave = 0;
        let mut start = 0;
        for fraction in &request.waves {
            let end = ((fraction * targets.len() as f64).ceil() as usize).min(targets.len());
            if end > start {
                wave += 1;
                nodes.extend(targets[start..end].iter().map(|node| NodeRollout {
                    node: node.clone(),
                    wave,
                    state: NodeRolloutState::Waiting,
                    reason: String::new(),
                }));
                start = end;
            }
        }
        let state = RolloutState {
            id: request.id.clone(),
            version: request.version.clone(),
            phase: RolloutPhase::Running,
            wave: 0,
            waves: wave + 1,
            waited_periods: 0,
            nodes,
            reason: String::new(),
        };
        Ok(Rollout {
            request,
            state,
            changed: true,
        })
    }

    pub fn state(&self) -> &RolloutState {
        &self.state
    }

    pub fn is_running(&self) -> bool {
        self.state.phase == RolloutPhase::Running
    }

    /// Whether the state moved since the last call (and so must be published and saved).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Marks a rollout read back from its state file as needing a publish.
    pub fn mark_changed(&mut self) {
        self.changed = true;
    }

    /// Takes a node's model status; statuses of other rollouts and versions are ignored.
    pub fn on_status(&mut self, status: &ModelStatus, out: &mut Vec<Outgoing>) {
        if status.rollout.as_deref() != Some(self.state.id.as_str())
            || status.version != self.state.version
        {
            return;
        }
        let running = self.is_running();
        let Some(i) = self.state.nodes.iter().position(|n| n.node == status.node) else {
            return;
        };
        let node = &mut self.state.nodes[i];
        let before = (node.state, node.reason.clone());
        use NodeRolloutState as N;
        match (status.state, running) {
            (ModelState::Active, true) if matches!(node.state, N::Deploying) => {
                node.state = N::Active;
            }
            (ModelState::Healthy, true) if matches!(node.state, N::Deploying | N::Active) => {
                node.state = N::Healthy;
                node.reason = status.reason.clone();
            }
            (ModelState::Rejected | ModelState::RolledBack, true)
                if matches!(node.state, N::Deploying | N::Active | N::Healthy) =>
            {
                node.state = N::Failed;
                node.reason = status.reason.clone();
            }
            // After a halt: a node that switched late is ordered back too.
            (ModelState::Active | ModelState::Healthy, false)
                if !matches!(node.state, N::Waiting | N::Skipped) =>
            {
                node.state = N::RollingBack;
                out.push(self.rollback_order(i, &self.state.reason));
            }
            (ModelState::RolledBack | ModelState::Rejected, false)
                if matches!(node.state, N::RollingBack) =>
            {
                node.state = N::RolledBack;
                node.reason = status.reason.clone();
            }
            _ => {}
        }
        let node = &self.state.nodes[i];
        if (node.state, &node.reason) != (before.0, &before.1) {
            self.changed = true;
        }
    }

    /// One coordinator period: deploys the wave that is due, checks the one in progress,
    /// halts or moves on.
    pub fn on_tick(
        &mut self,
        is_online: impl Fn(&str) -> bool,
        period: Duration,
        out: &mut Vec<Outgoing>,
    ) {
        if !self.is_running() {
            return;
        }
        let wave = self.state.wave;
        for i in 0..self.state.nodes.len() {
            let node = &mut self.state.nodes[i];
            if node.wave != wave {
                continue;
            }
            match node.state {
                NodeRolloutState::Waiting if is_online(&node.node) => {
                    node.state = NodeRolloutState::Deploying;
                    out.push(self.deploy_order(i));
                    self.changed = true;
                }
                NodeRolloutState::Waiting if wave > 0 => {
                    node.state = NodeRolloutState::Skipped;
                    node.reason = "offline when its wave came".into();
                    self.changed = true;
                }
                NodeRolloutState::Waiting => {
                    node.state = NodeRolloutState::Failed;
                    node.reason = "canary offline".into();
                    self.changed = true;
                }
                NodeRolloutState::Deploying | NodeRolloutState::Active
                    if !is_online(&node.node) =>
                {
                    node.state = NodeRolloutState::Failed;
                    node.reason = "went offline before its health window passed".into();
                    // It may come back running the version.
                    out.push(self.rollback_order(i, "went offline during the rollout"));
                    self.changed = true;
                }
                _ => {}
            }
        }
        self.state.waited_periods += 1;
        let waited = period.as_secs_f64() * self.state.waited_periods as f64;
        if waited > self.request.health_timeout_s {
            let reason = format!(
                "not healthy {:.0} s after its deploy",
                self.request.health_timeout_s
            );
            for i in 0..self.state.nodes.len() {
                let node = &mut self.state.nodes[i];
                if node.wave == wave
                    && matches!(
                        node.state,
                        NodeRolloutState::Deploying | NodeRolloutState::Active
                    )
                {
                    node.state = NodeRolloutState::Failed;
                    node.reason = reason.clone();
                    out.push(self.rollback_order(i, &reason));
                    self.changed = true;
                }
            }
        }
        let group = || self.state.nodes.iter().filter(|n| n.wave == wave);
        if let Some(failed) = group().find(|n| n.state == NodeRolloutState::Failed) {
            let reason = format!(
                "{} (wave {wave}) failed: {}",
                failed.node,
                if failed.reason.is_empty() {
                    "no reason given"
                } else {
                    &failed.reason
                }
            );
            self.halt(RolloutPhase::Halted, reason, out);
            return;
        }
        let done = group().all(|n| {
            matches!(
                n.state,
                NodeRolloutState::Healthy | NodeRolloutState::Skipped
            )
        });
        if done {
            self.state.wave += 1;
            self.state.waited_periods = 0;
            self.changed = true;
            if self.state.wave >= self.state.waves {
                self.state.phase = RolloutPhase::Completed;
                tracing::info!(id = %self.state.id, version = %self.state.version, "rollout completed");
            } else {
                tracing::info!(id = %self.state.id, wave = self.state.wave, "rollout: next wave");
                // Deploy the next wave now rather than a period later.
                self.state.waited_periods = 0;
                self.on_tick(is_online, period, out);
                self.state.waited_periods = 0;
            }
        }
    }

    /// Stops the rollout and orders every node it reached back.
    pub fn halt(&mut self, phase: RolloutPhase, reason: String, out: &mut Vec<Outgoing>) {
        if !self.is_running() {
            return;
        }
        tracing::warn!(id = %self.state.id, version = %self.state.version, "rollout {phase:?}: {reason}");
        self.state.phase = phase;
        self.state.reason = reason;
        self.changed = true;
        for i in 0..self.state.nodes.len() {
            let node = &mut self.state.nodes[i];
            if matches!(
                node.state,
                NodeRolloutState::Deploying | NodeRolloutState::Active | NodeRolloutState::Healthy
            ) {
                node.state = NodeRolloutState::RollingBack;
                out.push(self.rollback_order(i, &self.state.reason));
            }
        }
    }

    fn deploy_order(&self, i: usize) -> Outgoing {
        let node = &self.state.nodes[i].node;
        Outgoing {
            topic: Topic::ModelDeploy { node: node.clone() }.to_string(),
            payload: ModelCommand::Deploy {
                version: self.request.version.clone(),
                files: self.request.files.clone(),
                rollout: Some(self.request.id.clone()),
            }
            .to_json(),
            retain: false,
        }
    }

    fn rollback_order(&self, i: usize, why: &str) -> Outgoing {
        let node = &self.state.nodes[i].node;
        Outgoing {
            topic: Topic::ModelDeploy { node: node.clone() }.to_string(),
            payload: ModelCommand::Rollback {
                reason: Some(format!(
                    "rollout {} of {}: {why}",
                    self.state.id, self.state.version
                )),
                version: Some(self.request.version.clone()),
            }
            .to_json(),
            retain: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use lydlr_bus::BusMessage;
    use lydlr_bus::messages::{FleetState, NodeMetrics, RolloutCommand};

    use super::*;
    use crate::{Coordinator, CoordinatorConfig};

    const VERSION: &str = "v2";

    struct Fleet {
        coordinator: Coordinator,
        now: Instant,
        /// Deploy and rollback orders sent, in order: (node, "deploy" | "rollback").
        orders: Vec<(String, &'static str)>,
        states: Vec<RolloutState>,
        fleet: Vec<FleetState>,
    }

    impl Fleet {
        fn new(nodes: &[&str], config: CoordinatorConfig) -> Fleet {
            let mut fleet = Fleet {
                coordinator: Coordinator::new(config),
                now: Instant::now(),
                orders: Vec::new(),
                states: Vec::new(),
                fleet: Vec::new(),
            };
            // Past the coordinator's first periods, when it waits to hear from every node.
            for _ in 0..3 {
                fleet.tick(nodes);
            }
            fleet
        }

        fn send(&mut self, topic: Topic, payload: Vec<u8>) {
            let message = BusMessage {
                topic: topic.to_string(),
                payload,
                retained: false,
            };
            self.coordinator.handle(&message, self.now);
        }

        fn heartbeat(&mut self, node: &str) {
            let metrics = NodeMetrics {
                node: node.into(),
                ..NodeMetrics::default()
            };
            self.send(Topic::Metrics { node: node.into() }, metrics.to_json());
        }

        fn start(&mut self, request: RolloutRequest) {
            self.send(
                Topic::RolloutCommand,
                RolloutCommand::Start(request).to_json(),
            );
        }

        fn report(&mut self, node: &str, state: ModelState, rollout: Option<&str>) {
            let status = ModelStatus {
                node: node.into(),
                version: VERSION.into(),
                state,
                running: None,
                reason: format!("{state:?} on {node}"),
                streams: Vec::new(),
                rollout: rollout.map(String::from),
            };
            self.send(Topic::ModelStatus { node: node.into() }, status.to_json());
        }

        /// One period, with heartbeats from `alive`.
        fn tick(&mut self, alive: &[&str]) {
            self.now += Duration::from_millis(500);
            for node in alive {
                self.heartbeat(node);
            }
            for out in self.coordinator.tick(self.now) {
                match Topic::parse(&out.topic).unwrap() {
                    Topic::ModelDeploy { node } => {
                        let kind = match ModelCommand::from_json(&out.payload).unwrap() {
                            ModelCommand::Deploy { rollout, .. } => {
                                assert_eq!(rollout.as_deref(), Some("r"));
                                "deploy"
                            }
                            ModelCommand::Rollback { version, .. } => {
                                assert_eq!(version.as_deref(), Some(VERSION));
                                "rollback"
                            }
                        };
                        self.orders.push((node, kind));
                    }
                    Topic::RolloutState => {
                        assert!(out.retain);
                        self.states
                            .push(RolloutState::from_json(&out.payload).unwrap());
                    }
                    Topic::FleetState => self
                        .fleet
                        .push(FleetState::from_json(&out.payload).unwrap()),
                    _ => {}
                }
            }
        }

        fn take_orders(&mut self) -> Vec<(String, &'static str)> {
            std::mem::take(&mut self.orders)
        }

        fn state(&self) -> &RolloutState {
            self.coordinator.rollout().unwrap()
        }

        fn node(&self, node: &str) -> NodeRolloutState {
            self.state()
                .nodes
                .iter()
                .find(|n| n.node == node)
                .unwrap()
                .state
        }
    }

    const ALL: [&str; 5] = ["a", "b", "c", "d", "e"];

    fn orders(nodes: &[&str], kind: &'static str) -> Vec<(String, &'static str)> {
        nodes.iter().map(|n| ((*n).to_string(), kind)).collect()
    }

    fn request() -> RolloutRequest {
        RolloutRequest {
            waves: vec![0.5, 1.0],
            ..RolloutRequest::new("r", VERSION)
        }
    }

    #[test]
    fn a_rollout_goes_to_the_canary_first_then_to_the_rest_in_waves() {
        let mut fleet = Fleet::new(&ALL, CoordinatorConfig::default());
        fleet.start(request());
        fleet.tick(&ALL);
        assert_eq!(fleet.take_orders(), orders(&["a"], "deploy"));
        assert_eq!((fleet.state().wave, fleet.state().waves), (0, 3));

        // Active is not enough: the canary must pass its health window.
        fleet.report("a", ModelState::Active, Some("r"));
        for _ in 0..5 {
            fleet.tick(&ALL);
        }
        assert!(fleet.take_orders().is_empty());
        fleet.report("a", ModelState::Healthy, Some("r"));
        fleet.tick(&ALL);
        assert_eq!(fleet.take_orders(), orders(&["b", "c"], "deploy"));
        fleet.report("b", ModelState::Healthy, Some("r"));
        fleet.tick(&ALL);
        assert!(fleet.take_orders().is_empty(), "c is not healthy yet");
        fleet.report("c", ModelState::Healthy, Some("r"));
        fleet.tick(&ALL);
        assert_eq!(fleet.take_orders(), orders(&["d", "e"], "deploy"));
        fleet.report("d", ModelState::Healthy, Some("r"));
        fleet.report("e", ModelState::Healthy, Some("r"));
        fleet.tick(&ALL);
        assert_eq!(fleet.state().phase, RolloutPhase::Completed);
        assert!(fleet.take_orders().is_empty());
        // Published at every move, retained; the last says completed.
        assert_eq!(fleet.states.last().unwrap().phase, RolloutPhase::Completed);
        let published = fleet.states.len();
        fleet.tick(&ALL);
        assert_eq!(fleet.states.len(), published, "no move, no publish");
    }

    #[test]
    fn a_failing_canary_stops_the_rollout_before_any_other_node_gets_it() {
        for failure in [ModelState::RolledBack, ModelState::Rejected] {
            let mut fleet = Fleet::new(&ALL, CoordinatorConfig::default());
            fleet.start(request());
            fleet.tick(&ALL);
            fleet.report("a", ModelState::Active, Some("r"));
            fleet.report("a", failure, Some("r"));
            for _ in 0..10 {
                fleet.tick(&ALL);
            }
            let state = fleet.state();
            assert_eq!(state.phase, RolloutPhase::Halted);
            assert!(
                state.reason.starts_with("a (wave 0) failed"),
                "{}",
                state.reason
            );
            assert_eq!(fleet.node("a"), NodeRolloutState::Failed);
            assert!(
                ALL[1..]
                    .iter()
                    .all(|n| fleet.node(n) == NodeRolloutState::Waiting)
            );
            // The canary undid it itself; nobody else ever had it.
            assert_eq!(fleet.take_orders(), orders(&["a"], "deploy"));
        }
    }

    #[test]
    fn a_failure_in_a_wave_rolls_back_every_node_the_rollout_reached() {
        let mut fleet = Fleet::new(&ALL, CoordinatorConfig::default());
        fleet.start(request());
        fleet.tick(&ALL);
        fleet.report("a", ModelState::Healthy, Some("r"));
        fleet.tick(&ALL);
        fleet.report("b", ModelState::Healthy, Some("r"));
        fleet.report("c", ModelState::Active, Some("r"));
        fleet.report("c", ModelState::RolledBack, Some("r"));
        fleet.take_orders();
        fleet.tick(&ALL);
        assert_eq!(fleet.state().phase, RolloutPhase::Halted);
        assert_eq!(fleet.take_orders(), orders(&["a", "b"], "rollback"));
        assert_eq!(fleet.node("a"), NodeRolloutState::RollingBack);
        fleet.report("a", ModelState::RolledBack, Some("r"));
        fleet.report("b", ModelState::RolledBack, Some("r"));
        fleet.tick(&ALL);
        for (node, state) in [
            ("a", NodeRolloutState::RolledBack),
            ("b", NodeRolloutState::RolledBack),
            ("c", NodeRolloutState::Failed),
            ("d", NodeRolloutState::Waiting),
        ] {
            assert_eq!(fleet.node(node), state, "{node}");
        }
        // A node that switches late is ordered back as well.
        fleet.report("b", ModelState::Active, Some("r"));
        fleet.tick(&ALL);
        assert_eq!(fleet.take_orders(), orders(&["b"], "rollback"));
        // And an abort after the halt changes nothing.
        let before = fleet.coordinator.rejected();
        fleet.send(
            Topic::RolloutCommand,
            RolloutCommand::Abort { reason: None }.to_json(),
        );
        assert_eq!(fleet.coordinator.rejected(), before + 1);
    }

    #[test]
    fn statuses_of_other_deploys_of_the_version_are_not_taken_for_this_one() {
        let mut fleet = Fleet::new(&ALL, CoordinatorConfig::default());
        fleet.start(request());
        fleet.tick(&ALL);
        // A failure left over from an earlier rollout and one from a manual deploy.
        fleet.report("a", ModelState::RolledBack, Some("earlier"));
        fleet.report("a", ModelState::Rejected, None);
        fleet.tick(&ALL);
        assert_eq!(fleet.state().phase, RolloutPhase::Running);
        assert_eq!(fleet.node("a"), NodeRolloutState::Deploying);
    }

    #[test]
    fn a_silent_or_slow_node_fails_its_wave_and_an_offline_one_is_skipped() {
        // d is offline when its wave comes: skipped. e goes silent after its deploy.
        let config = CoordinatorConfig {
            period_ms: 500,
            ..CoordinatorConfig::default()
        };
        let mut fleet = Fleet::new(&ALL, config.clone());
        fleet.start(RolloutRequest {
            waves: vec![1.0],
            ..request()
        });
        fleet.tick(&ALL);
        for _ in 0..4 {
            fleet.tick(&["a", "b", "c", "e"]);
        }
        fleet.report("a", ModelState::Healthy, Some("r"));
        fleet.tick(&["a", "b", "c", "e"]);
        assert_eq!(fleet.node("d"), NodeRolloutState::Skipped);
        assert_eq!(fleet.take_orders(), orders(&["a", "b", "c", "e"], "deploy"));
        fleet.report("b", ModelState::Healthy, Some("r"));
        fleet.report("c", ModelState::Healthy, Some("r"));
        for _ in 0..4 {
            fleet.tick(&["a", "b", "c"]);
        }
        let state = fleet.state();
        assert_eq!(state.phase, RolloutPhase::Halted);
        assert!(
            state.reason.contains("e (wave 1) failed: went offline"),
            "{}",
            state.reason
        );
        // e may come back running it: ordered back with the others.
        let mut sent = fleet.take_orders();
        sent.sort();
        assert_eq!(sent, orders(&["a", "b", "c", "e"], "rollback"));

        // A node that never becomes healthy fails at the timeout.
        let mut fleet = Fleet::new(&ALL, config);
        fleet.start(RolloutRequest {
            health_timeout_s: 5.0,
            ..request()
        });
        fleet.tick(&ALL);
        fleet.report("a", ModelState::Active, Some("r"));
        let mut periods = 1;
        while fleet.state().phase == RolloutPhase::Running {
            fleet.tick(&ALL);
            periods += 1;
            assert!(periods < 100);
        }
        assert_eq!(periods, 11, "5 s of 500 ms periods, then the verdict");
        assert!(fleet.state().reason.contains("not healthy 5 s"));

        // A canary that is offline at the start halts it at once.
        let mut fleet = Fleet::new(&ALL, CoordinatorConfig::default());
        fleet.start(RolloutRequest {
            canary: vec!["z".into()],
            ..request()
        });
        fleet.tick(&ALL);
        assert_eq!(fleet.state().phase, RolloutPhase::Halted);
        assert!(fleet.take_orders().is_empty());
    }

    #[test]
    fn bad_or_conflicting_rollout_orders_are_refused_and_counted() {
        let mut fleet = Fleet::new(&ALL, CoordinatorConfig::default());
        let bad = [
            RolloutRequest {
                waves: vec![0.5, 0.4, 1.0],
                ..request()
            },
            RolloutRequest {
                waves: vec![0.5],
                ..request()
            },
            RolloutRequest {
                health_timeout_s: f64::NAN,
                ..request()
            },
            RolloutRequest::new("r", "../etc"),
            RolloutRequest::new("r/x", VERSION),
            RolloutRequest {
                canary: vec!["+".into()],
                ..request()
            },
        ];
        for request in bad {
            fleet.start(request);
        }
        fleet.send(Topic::RolloutCommand, b"{\"action\":\"start\"}".to_vec());
        fleet.send(Topic::RolloutCommand, b"\xff".to_vec());
        assert_eq!(fleet.coordinator.rejected(), 8);
        assert!(fleet.coordinator.rollout().is_none());
        fleet.start(request());
        fleet.start(RolloutRequest::new("other", "v3"));
        assert_eq!(fleet.coordinator.rejected(), 9, "one rollout at a time");
        fleet.send(
            Topic::RolloutCommand,
            RolloutCommand::Abort {
                reason: Some("operator".into()),
            }
            .to_json(),
        );
        fleet.tick(&ALL);
        assert_eq!(
            (fleet.state().phase, fleet.state().reason.as_str()),
            (RolloutPhase::Aborted, "operator")
        );
        // Once ended, a new one may start.
        fleet.start(RolloutRequest::new("other", "v3"));
        assert_eq!(fleet.state().id, "other");
    }

    #[test]
    fn a_restarted_coordinator_carries_on_the_rollout_from_its_state_file() {
        let dir = std::env::temp_dir().join(format!("lydlr-rollout-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = CoordinatorConfig {
            state_dir: Some(dir.clone()),
            ..CoordinatorConfig::default()
        };
        let mut fleet = Fleet::new(&ALL, config.clone());
        let mut req = request();
        req.files
            .insert("manifest.toml".into(), "dmVyc2lvbg==".into());
        fleet.start(req.clone());
        fleet.tick(&ALL);
        fleet.report("a", ModelState::Healthy, Some("r"));
        fleet.tick(&ALL);
        assert_eq!(
            fleet.take_orders(),
            [orders(&["a"], "deploy"), orders(&["b", "c"], "deploy")].concat()
        );
        let before = fleet.state().clone();
        drop(fleet);

        let mut restarted = Fleet {
            coordinator: Coordinator::restore(config.clone()).unwrap(),
            now: Instant::now(),
            orders: Vec::new(),
            states: Vec::new(),
            fleet: Vec::new(),
        };
        assert_eq!(restarted.state(), &before);
        for node in ALL {
            restarted.heartbeat(node);
        }
        // The nodes' retained statuses arrive again; the next wave goes out with the same files.
        restarted.report("b", ModelState::Healthy, Some("r"));
        restarted.report("c", ModelState::Healthy, Some("r"));
        // Nothing moves until every node had the time to be heard from.
        for _ in 0..3 {
            restarted.tick(&ALL);
            assert!(restarted.take_orders().is_empty());
        }
        restarted.tick(&ALL);
        assert_eq!(restarted.take_orders(), orders(&["d", "e"], "deploy"));
        // The restored state was published on the first period, then the move to wave 2.
        assert_eq!(
            (restarted.states[0].id.as_str(), restarted.states[0].wave),
            ("r", 1)
        );
        assert_eq!(restarted.states.len(), 2);
        let saved: Rollout =
            serde_json::from_slice(&std::fs::read(dir.join(crate::ROLLOUT_FILE)).unwrap()).unwrap();
        assert_eq!(saved.request, req);
        assert_eq!(saved.state.wave, 2);

        // A damaged state file is an error that names it, not a fresh start.
        std::fs::write(dir.join(crate::ROLLOUT_FILE), b"{\"request\":").unwrap();
        let err = Coordinator::restore(config).err().unwrap().to_string();
        assert!(
            err.contains("rollout.json") && err.contains("not a rollout"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fleet_metrics_are_aggregated_every_period() {
        let mut fleet = Fleet::new(&[], CoordinatorConfig::default());
        for (node, bytes, model) in [("a", [1000, 3000], Some(VERSION)), ("b", [500, 1500], None)] {
            for (t, compressed) in [(1.0, bytes[0]), (2.0, bytes[1])] {
                let m = NodeMetrics {
                    node: node.into(),
                    t_stream_s: t,
                    raw_bytes: 4 * compressed,
                    compressed_bytes: compressed,
                    frames_in: 10,
                    frames_out: 9,
                    encode_p99_us: if node == "a" { 40.0 } else { 70.0 },
                    model_version: model.map(String::from),
                    ..NodeMetrics::default()
                };
                fleet.send(Topic::Metrics { node: node.into() }, m.to_json());
            }
        }
        fleet.tick(&[]);
        let state = fleet.fleet.last().unwrap();
        assert_eq!(state.delivered_bps, (2000.0 + 1000.0) * 8.0);
        assert_eq!((state.frames_in, state.frames_out), (20, 18));
        assert_eq!(state.ratio, 4.0);
        assert_eq!(state.encode_p99_us_max, 70.0);
        assert_eq!(
            state.models,
            [("classical".to_string(), 1), (VERSION.to_string(), 1)]
                .into_iter()
                .collect()
        );
    }
}
