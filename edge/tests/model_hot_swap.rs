//! Model deployment on a running node, on the embedded broker and on Mosquitto: a good
//! package switches in with no frame lost, a corrupt one is refused while the old one keeps
//! running, one too slow for its latency budget is rolled back by its health window, and an
//! ordered rollback returns to the classical codecs; a script that never returns is disabled
//! on the way. Every frame the node was given comes out of the packets, bit-exact, in order.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lydlr_bus::messages::{
    Control, JsonMessage, ModelCommand, ModelState, ModelStatus, ScriptLoad,
};
use lydlr_bus::{
    BrokerUrl, BusClient, BusMessage, ClientOptions, EmbeddedBroker, Mosquitto, Topic,
};
use lydlr_codec::neural::package::MANIFEST_FILE;
use lydlr_codec::synthetic::imu_frames;
use lydlr_codec::{
    CodecId, Frame, ModelPackage, NeuralModel, Packet, StreamSchema, decode_packet_with,
};
use lydlr_edge::run_node;
use tokio::sync::mpsc::UnboundedReceiver;

mod common;

const NODE: &str = "r1";
const GOOD: &str = "2026.11.26";

fn load(files: &[(String, Vec<u8>)]) -> ModelPackage {
    let files: BTreeMap<_, _> = files.iter().cloned().collect();
    let manifest = std::str::from_utf8(&files[MANIFEST_FILE]).unwrap();
    ModelPackage::load(manifest, |name| Ok(files[name].clone())).unwrap()
}

fn deploy(files: &[(String, Vec<u8>)], version: &str) -> Vec<u8> {
    ModelCommand::deploy_files(
        version,
        files.iter().map(|(n, b)| (n.as_str(), b.as_slice())),
    )
    .to_json()
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("lydlr-hotswap-{name}-{}", std::process::id()))
}

struct Driver {
    client: BusClient,
    rx: UnboundedReceiver<BusMessage>,
    frames: Vec<Frame>,
    sent: usize,
    packets: Vec<Vec<u8>>,
    events: Vec<ModelStatus>,
}

impl Driver {
    /// Sends 100 ms of frames, and collects what the node published meanwhile.
    async fn step(&mut self) {
        let batch = &self.frames[self.sent..self.sent + 20];
        self.sent += 20;
        common::publish_raw(&self.client, NODE, "imu", batch).await;
        self.collect();
    }

    fn collect(&mut self) {
        while let Ok(message) = self.rx.try_recv() {
            match Topic::parse(&message.topic).unwrap() {
                Topic::Compressed { .. } => self.packets.push(message.payload),
                Topic::ModelStatus { .. } => self
                    .events
                    .push(ModelStatus::from_json(&message.payload).unwrap()),
                _ => {}
            }
        }
    }

    /// Feeds frames until the node reports `state` for `version`.
    async fn until(&mut self, version: &str, state: ModelState) -> ModelStatus {
        for _ in 0..400 {
            if let Some(event) = self
                .events
                .iter()
                .find(|e| e.version == version && e.state == state)
            {
                return event.clone();
            }
            self.step().await;
        }
        panic!("no {state:?} for {version}; events: {:#?}", self.events);
    }
}

async fn hot_swap_on(url: BrokerUrl, name: &str) {
    let work = temp(name);
    let models = work.join("models");
    let config = common::model_node_config(NODE, &url, &work);
    let (client, rx) = BusClient::connect(&url, ClientOptions::new(format!("driver-{name}")));
    for filter in [
        format!("lydlr/v1/{NODE}/compressed/+"),
        Topic::ModelStatus { node: NODE.into() }.to_string(),
    ] {
        client.subscribe(filter).await.unwrap();
    }
    let node = run_node(config, &url).await.unwrap();
    common::publish_imu_schema(&client, NODE).await;
    let mut driver = Driver {
        client,
        rx,
        frames: imu_frames(40_000, 5, 3.0),
        sent: 0,
        packets: Vec::new(),
        events: Vec::new(),
    };
    let deploy_topic = Topic::ModelDeploy { node: NODE.into() }.to_string();
    for _ in 0..10 {
        driver.step().await;
    }

    // A good package: switched to, then healthy.
    let good = common::shipped_files();
    driver
        .client
        .publish(&deploy_topic, deploy(&good, GOOD), false)
        .await
        .unwrap();
    let active = driver.until(GOOD, ModelState::Active).await;
    assert_eq!(active.running.as_deref(), Some(GOOD));
    assert!(active.streams.contains(&"imu".to_string()));
    let healthy = driver.until(GOOD, ModelState::Healthy).await;
    assert!(healthy.reason.contains("12 blocks"), "{}", healthy.reason);
    assert!(models.join(NODE).join(GOOD).join(MANIFEST_FILE).exists());

    // A user script that never returns: stopped by its time budget, disabled; frames go on.
    let script = ScriptLoad {
        name: "spin".into(),
        order: 0,
        source: Some("fn on_frame(frame) { loop { } }".into()),
        signature: None,
    };
    driver
        .client
        .publish(
            Topic::ScriptLoad { node: NODE.into() }.to_string(),
            script.to_json(),
            false,
        )
        .await
        .unwrap();

    // A corrupt one: refused, the good one keeps running.
    let mut corrupt = good.clone();
    let weights = corrupt.iter_mut().find(|(n, _)| n == "imu.bpk").unwrap();
    weights.1[1000] ^= 0x10;
    driver
        .client
        .publish(&deploy_topic, deploy(&corrupt, "bad-1"), false)
        .await
        .unwrap();
    let rejected = driver.until("bad-1", ModelState::Rejected).await;
    assert!(rejected.reason.contains("sha256"), "{}", rejected.reason);
    assert_eq!(rejected.running.as_deref(), Some(GOOD));
    assert!(!models.join(NODE).join("bad-1").exists());

    // A package for other streams only: refused.
    let sonar = StreamSchema {
        name: "sonar".into(),
        ..common::imu_model_schema()
    };
    let foreign = common::untrained_package("foreign-1", &sonar, 16);
    driver
        .client
        .publish(&deploy_topic, deploy(&foreign, "foreign-1"), false)
        .await
        .unwrap();
    let rejected = driver.until("foreign-1", ModelState::Rejected).await;
    assert!(
        rejected.reason.contains("none of the node's streams"),
        "{}",
        rejected.reason
    );

    // One too slow for the budget: runs, fails its health window, rolled back to the good one.
    // A model far too big for the node's latency budget.
    let heavy = common::untrained_package("heavy-1", &common::imu_model_schema(), 700);
    driver
        .client
        .publish(&deploy_topic, deploy(&heavy, "heavy-1"), false)
        .await
        .unwrap();
    driver.until("heavy-1", ModelState::Active).await;
    let rolled = driver.until("heavy-1", ModelState::RolledBack).await;
    assert!(rolled.reason.contains("budget"), "{}", rolled.reason);
    assert_eq!(rolled.running.as_deref(), Some(GOOD));

    // An ordered rollback: back to the classical codecs.
    driver
        .client
        .publish(
            &deploy_topic,
            ModelCommand::Rollback {
                reason: Some("operator".into()),
                version: None,
            }
            .to_json(),
            false,
        )
        .await
        .unwrap();
    let ordered = driver.until(GOOD, ModelState::RolledBack).await;
    assert_eq!(
        (ordered.running, ordered.reason.as_str()),
        (None, "operator")
    );
    for _ in 0..5 {
        driver.step().await;
    }
    // Every frame sent so far comes out once the node flushes its partial block.
    driver
        .client
        .publish(
            Topic::Control { node: NODE.into() }.to_string(),
            Control::Flush.to_json(),
            false,
        )
        .await
        .unwrap();
    let coded = |packets: &[Vec<u8>]| -> usize {
        packets
            .iter()
            .map(|p| usize::from(Packet::from_bytes(p).unwrap().header.frame_count))
            .sum()
    };
    for _ in 0..100 {
        if coded(&driver.packets) == driver.sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        driver.collect();
    }
    let metrics = node.stop().await.unwrap();
    assert_eq!(metrics.frames_in, driver.sent as u64);
    let spin = metrics.scripts.iter().find(|s| s.name == "spin").unwrap();
    assert!(!spin.enabled && spin.error.is_some(), "{spin:?}");
    assert_eq!(metrics.frames_out, driver.sent as u64);

    // Every frame, bit-exact (lossless rung), in order, from packets of both kinds.
    let mut by_fingerprint: BTreeMap<u32, Arc<NeuralModel>> = BTreeMap::new();
    for package in [load(&good), load(&heavy)] {
        for model in package.models.values() {
            by_fingerprint.insert(model.packet_fingerprint(), model.clone());
        }
    }
    let mut decoded = Vec::new();
    let mut neural = 0;
    for bytes in &driver.packets {
        if Packet::from_bytes(bytes).unwrap().header.codec == CodecId::Neural {
            neural += 1;
        }
        decoded.extend(
            decode_packet_with(&common::imu_model_schema(), bytes, |fp| {
                by_fingerprint.get(&fp).cloned()
            })
            .unwrap(),
        );
    }
    assert!(neural >= 24, "{neural} neural packets");
    assert!(neural < driver.packets.len(), "classical packets too");
    assert_eq!(decoded.len(), driver.sent);
    assert!(decoded.iter().zip(&driver.frames).all(|(a, b)| a.bit_eq(b)));
    let _ = std::fs::remove_dir_all(work);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_deploy_fail_and_roll_back_on_the_embedded_broker() {
    let broker = EmbeddedBroker::start().unwrap();
    hot_swap_on(broker.url(), "embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_deploy_fail_and_roll_back_on_mosquitto() {
    let Some(mosquitto) = Mosquitto::for_tests() else {
        return;
    };
    hot_swap_on(mosquitto.url(), "mosquitto").await;
}
