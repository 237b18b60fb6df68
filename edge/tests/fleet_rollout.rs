//! A staged rollout across four live edge nodes, driven by the coordinator over the embedded
//! broker: a version whose canary fails its health window never reaches another node; a good
//! version goes canary, then two waves, to every node, healthy — with the coordinator stopped
//! and restarted from its state file in the middle.

use std::collections::BTreeMap;
use std::path::PathBuf;

use lydlr_bus::messages::{
    FleetState, JsonMessage, ModelCommand, ModelStatus, NodeRolloutState, RolloutCommand,
    RolloutPhase, RolloutRequest, RolloutState,
};
use lydlr_bus::{BrokerUrl, BusClient, BusMessage, ClientOptions, EmbeddedBroker, Topic};
use lydlr_codec::Frame;
use lydlr_codec::synthetic::imu_frames;
use lydlr_coordinator::{CoordinatorConfig, CoordinatorHandle, ROLLOUT_FILE, run_coordinator};
use lydlr_edge::{NodeHandle, run_node};
use tokio::sync::mpsc::UnboundedReceiver;

mod common;

const NODES: [&str; 4] = ["r1", "r2", "r3", "r4"];
const GOOD: &str = "2026.11.26";

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("lydlr-rollout-{name}-{}", std::process::id()))
}

/// Feeds every node its IMU and records what the fleet reports.
struct Fleet {
    client: BusClient,
    rx: UnboundedReceiver<BusMessage>,
    frames: Vec<Frame>,
    sent: usize,
    statuses: Vec<ModelStatus>,
    rollout: Option<RolloutState>,
    fleet: Option<FleetState>,
}

impl Fleet {
    /// 100 ms of frames to every node.
    async fn step(&mut self) {
        let batch = &self.frames[self.sent..self.sent + 20];
        self.sent += 20;
        for node in NODES {
            common::publish_raw(&self.client, node, "imu", batch).await;
        }
        while let Ok(message) = self.rx.try_recv() {
            match Topic::parse(&message.topic).unwrap() {
                Topic::ModelStatus { .. } => self
                    .statuses
                    .push(ModelStatus::from_json(&message.payload).unwrap()),
                Topic::RolloutState => {
                    self.rollout = Some(RolloutState::from_json(&message.payload).unwrap())
                }
                Topic::FleetState => {
                    self.fleet = Some(FleetState::from_json(&message.payload).unwrap())
                }
                _ => {}
            }
        }
    }

    async fn until(&mut self, what: &str, done: impl Fn(&Fleet) -> bool) {
        for _ in 0..1500 {
            if done(self) {
                return;
            }
            self.step().await;
        }
        panic!(
            "no {what}; rollout: {:#?}; statuses: {:#?}",
            self.rollout, self.statuses
        );
    }

    fn rollout(&self, id: &str) -> Option<&RolloutState> {
        self.rollout.as_ref().filter(|r| r.id == id)
    }

    async fn start(&self, request: RolloutRequest) {
        self.client
            .publish(
                Topic::RolloutCommand.to_string(),
                RolloutCommand::Start(request).to_json(),
                false,
            )
            .await
            .unwrap();
    }
}

fn files_of(files: &[(String, Vec<u8>)], version: &str) -> BTreeMap<String, String> {
    match ModelCommand::deploy_files(
        version,
        files.iter().map(|(n, b)| (n.as_str(), b.as_slice())),
    ) {
        ModelCommand::Deploy { files, .. } => files,
        ModelCommand::Rollback { .. } => unreachable!(),
    }
}

async fn coordinator(url: &BrokerUrl, state: &std::path::Path) -> CoordinatorHandle {
    let config = CoordinatorConfig {
        period_ms: 200,
        offline_after_periods: 10,
        state_dir: Some(state.to_owned()),
        ..CoordinatorConfig::default()
    };
    run_coordinator(config, url).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollout_stops_at_a_failing_canary_and_survives_a_coordinator_restart() {
    let broker = EmbeddedBroker::start().unwrap();
    let url = broker.url();
    let work = temp("nodes");
    let state = temp("state");
    let mut nodes: Vec<NodeHandle> = Vec::new();
    for node in NODES {
        let config = common::model_node_config(node, &url, &work);
        nodes.push(run_node(config, &url).await.unwrap());
    }
    let (client, rx) = BusClient::connect(&url, ClientOptions::new("fleet-driver"));
    for filter in [
        Topic::all_nodes("model/status"),
        Topic::RolloutState.to_string(),
        Topic::FleetState.to_string(),
    ] {
        client.subscribe(filter).await.unwrap();
    }
    for node in NODES {
        common::publish_imu_schema(&client, node).await;
    }
    let mut fleet = Fleet {
        client,
        rx,
        frames: imu_frames(400_000, 5, 3.0),
        sent: 0,
        statuses: Vec::new(),
        rollout: None,
        fleet: None,
    };
    let first = coordinator(&url, &state).await;
    fleet
        .until("four nodes online", |f| {
            f.fleet.as_ref().is_some_and(|s| s.online.len() == 4)
        })
        .await;

    // A valid model too slow for the nodes' latency budget: verified and switched to, then
    // rolled back by the canary's health window; the rollout halts there.
    let bad = common::untrained_package("bad-1", &common::imu_model_schema(), 700);
    fleet
        .start(RolloutRequest {
            files: files_of(&bad, "bad-1"),
            canary: vec!["r1".into()],
            waves: vec![0.5, 1.0],
            ..RolloutRequest::new("bad", "bad-1")
        })
        .await;
    fleet
        .until("the bad rollout's end", |f| {
            f.rollout("bad")
                .is_some_and(|r| r.phase != RolloutPhase::Running)
        })
        .await;
    let halted = fleet.rollout("bad").unwrap().clone();
    assert_eq!(halted.phase, RolloutPhase::Halted);
    assert!(
        halted.reason.starts_with("r1 (wave 0) failed"),
        "{}",
        halted.reason
    );
    println!("bad rollout halted: {}", halted.reason);
    for n in &halted.nodes[1..] {
        assert_eq!(n.state, NodeRolloutState::Waiting, "{}", n.node);
    }
    assert!(
        fleet.statuses.iter().all(|s| s.node == "r1"),
        "only the canary heard of bad-1: {:#?}",
        fleet.statuses
    );

    // A good version: canary r1, then r2 and r3, then r4. The coordinator is stopped once
    // the first wave is out and a new one carries on from the state file.
    let good = common::shipped_files();
    fleet
        .start(RolloutRequest {
            files: files_of(&good, GOOD),
            canary: vec!["r1".into()],
            waves: vec![0.5, 1.0],
            ..RolloutRequest::new("good", GOOD)
        })
        .await;
    fleet
        .until("the first wave deployed", |f| {
            f.rollout("good").is_some_and(|r| r.wave == 1)
        })
        .await;
    first.stop().await.unwrap();
    assert!(state.join(ROLLOUT_FILE).exists());
    let started = std::time::Instant::now();
    let second = coordinator(&url, &state).await;
    fleet
        .until("the good rollout's end", |f| {
            f.rollout("good")
                .is_some_and(|r| r.phase != RolloutPhase::Running)
        })
        .await;
    let done = fleet.rollout("good").unwrap().clone();
    println!(
        "good rollout completed {:.1} s after the coordinator restart: {:?}",
        started.elapsed().as_secs_f64(),
        done.nodes
            .iter()
            .map(|n| (&n.node, n.wave, n.state))
            .collect::<Vec<_>>()
    );
    assert_eq!(done.phase, RolloutPhase::Completed, "{}", done.reason);
    let waves: Vec<u32> = done.nodes.iter().map(|n| n.wave).collect();
    assert_eq!(waves, [0, 1, 1, 2]);
    assert!(
        done.nodes
            .iter()
            .all(|n| n.state == NodeRolloutState::Healthy)
    );
    // Each node said so itself, for this rollout.
    for node in NODES {
        let last = fleet
            .statuses
            .iter()
            .rev()
            .find(|s| s.node == node)
            .unwrap();
        assert_eq!(
            (last.version.as_str(), last.rollout.as_deref()),
            (GOOD, Some("good")),
            "{node}"
        );
        assert_eq!(last.running.as_deref(), Some(GOOD));
    }
    fleet
        .until("the fleet state counting four nodes on the version", |f| {
            f.fleet
                .as_ref()
                .is_some_and(|s| s.models.get(GOOD) == Some(&4))
        })
        .await;

    second.stop().await.unwrap();
    for node in nodes {
        node.stop().await.unwrap();
    }
    for dir in [work, state] {
        let _ = std::fs::remove_dir_all(dir);
    }
}
