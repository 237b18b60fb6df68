//! The uplink goes away and comes back: the node keeps compressing the frames its local
//! broker still brings, queues the packets on disk, and delivers them in order after the
//! reconnect. Once with the link cut (embedded brokers), once with the uplink broker killed
//! and restarted (Mosquitto): nothing is lost.

use std::path::PathBuf;
use std::time::Duration;

use lydlr_bus::messages::{Control, JsonMessage, NodeState, NodeStatus};
use lydlr_bus::{
    BrokerUrl, BusClient, BusMessage, ClientOptions, EmbeddedBroker, LinkProxy, Mosquitto, Topic,
};
use lydlr_codec::{Frame, Packet, StreamSchema, decode_packet};
use lydlr_edge::{EdgeConfig, NodeHandle, run_node};
use tokio::sync::mpsc::UnboundedReceiver;

const NODE: &str = "rover";

mod common;

fn schema() -> StreamSchema {
    common::wheels_schema(100.0)
}

fn frame(i: i64) -> Frame {
    let left = (i as f64 * 0.37).floor() + ((i * 7919) % 5) as f64;
    Frame::new(i * 10_000_000, vec![left, (i as f64 * 0.41).floor()])
}

struct Harness {
    local: BusClient,
    observer: BusClient,
    observed: UnboundedReceiver<BusMessage>,
    node: Option<NodeHandle>,
    sent: i64,
    packets: Vec<Vec<u8>>,
    statuses: Vec<NodeState>,
    spool: PathBuf,
}

impl Harness {
    async fn start(local: &BrokerUrl, uplink: &BrokerUrl, observer_url: &BrokerUrl) -> Harness {
        let spool = std::env::temp_dir().join(format!(
            "lydlr-offline-{}-{}",
            std::process::id(),
            uplink.port
        ));
        let config = EdgeConfig {
            node_id: NODE.into(),
            broker: uplink.to_string(),
            local_broker: Some(local.to_string()),
            spool_dir: spool.display().to_string(),
            models_dir: spool.display().to_string(),
            metrics_period_ms: 100,
            ..EdgeConfig::default()
        };
        let (observer, observed) = BusClient::connect(observer_url, ClientOptions::new("observer"));
        for filter in [
            format!("lydlr/v1/{NODE}/compressed/+"),
            Topic::Status { node: NODE.into() }.to_string(),
        ] {
            observer.subscribe(filter).await.unwrap();
        }
        let (local_client, _) = BusClient::connect(local, ClientOptions::new("driver"));
        let node = run_node(config, uplink).await.unwrap();
        common::publish_schema(&local_client, NODE, &schema()).await;
        Harness {
            local: local_client,
            observer,
            observed,
            node: Some(node),
            sent: 0,
            packets: Vec::new(),
            statuses: Vec::new(),
            spool,
        }
    }

    /// Sends `seconds` of frames in 100 ms batches on the local broker.
    async fn send(&mut self, seconds: i64) {
        for _ in 0..seconds * 10 {
            let batch: Vec<Frame> = (self.sent..self.sent + 10).map(frame).collect();
            self.sent += 10;
            common::publish_raw(&self.local, NODE, "wheels", &batch).await;
            self.collect();
        }
    }

    fn collect(&mut self) {
        while let Ok(message) = self.observed.try_recv() {
            match Topic::parse(&message.topic).unwrap() {
                Topic::Compressed { .. } => self.packets.push(message.payload),
                Topic::Status { .. } => self
                    .statuses
                    .push(NodeStatus::from_json(&message.payload).unwrap().state),
                _ => {}
            }
        }
    }

    /// Distinct packets (a replay after a broken session may repeat one), in arrival order.
    fn distinct(&self) -> Vec<&Vec<u8>> {
        let mut seen = std::collections::HashSet::new();
        self.packets.iter().filter(|p| seen.insert(*p)).collect()
    }

    fn frames_out(&self) -> i64 {
        self.distinct()
            .iter()
            .map(|p| i64::from(Packet::from_bytes(p).unwrap().header.frame_count))
            .sum()
    }

    /// Flushes the node and waits until the observer holds every frame sent.
    async fn settle(&mut self) {
        // Control comes from the fleet side.
        self.observer
            .publish(
                Topic::Control { node: NODE.into() }.to_string(),
                Control::Flush.to_json(),
                false,
            )
            .await
            .unwrap();
        for _ in 0..200 {
            self.collect();
            if self.frames_out() == self.sent {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{} of {} frames arrived", self.frames_out(), self.sent);
    }

    /// After the link is back: more frames, the node online again, the queue drained, and
    /// every frame delivered.
    async fn recover(mut self) {
        self.send(1).await;
        wait_until("the node online again", || {
            self.collect();
            self.statuses.last() == Some(&NodeState::Online)
        })
        .await;
        let metrics = self.finish().await;
        assert!(metrics.spool_drained > 0, "{metrics:?}");
        assert_eq!((metrics.spool_queued, metrics.spool_dropped), (0, 0));
    }

    /// Stops the node and checks that every frame arrived once, bit-exact and in order.
    async fn finish(mut self) -> lydlr_bus::messages::NodeMetrics {
        self.settle().await;
        let metrics = self.node.take().unwrap().stop().await.unwrap();
        let decoded: Vec<Frame> = self
            .distinct()
            .iter()
            .flat_map(|p| decode_packet(&schema(), p).unwrap())
            .collect();
        assert_eq!(decoded.len() as i64, self.sent);
        for (i, f) in decoded.iter().enumerate() {
            assert!(
                f.bit_eq(&frame(i as i64)),
                "frame {i} out of order or changed"
            );
        }
        let _ = std::fs::remove_dir_all(&self.spool);
        metrics
    }
}

async fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    for _ in 0..200 {
        if ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_uplink_queues_on_disk_and_delivers_in_order() {
    let local = EmbeddedBroker::start().unwrap();
    let uplink = EmbeddedBroker::start().unwrap();
    let link = LinkProxy::start(&uplink.url()).await.unwrap();
    let mut h = Harness::start(&local.url(), &link.url(), &uplink.url()).await;
    h.send(2).await;
    link.cut();
    h.send(3).await;
    // The uplink broker saw the node vanish and published its last will.
    wait_until("the last will", || {
        h.collect();
        h.statuses.last() == Some(&NodeState::Offline)
    })
    .await;
    let before_restore = h.frames_out();
    assert!(
        before_restore < h.sent,
        "frames were held back during the cut"
    );
    link.restore();
    h.recover().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_and_restarted_broker_loses_nothing() {
    let Some(mut mosquitto) = Mosquitto::for_tests() else {
        return;
    };
    let local = EmbeddedBroker::start().unwrap();
    // The node reaches Mosquitto through a link the test holds shut until the observer is
    // back, so that the observer, not the node, decides what a fresh broker has seen.
    let link = LinkProxy::start(&mosquitto.url()).await.unwrap();
    let mut h = Harness::start(&local.url(), &link.url(), &mosquitto.url()).await;
    h.send(2).await;
    h.settle().await;
    link.cut();
    mosquitto.kill();
    h.send(3).await;
    mosquitto.restart().unwrap();
    wait_until("the observer to reconnect", || h.observer.is_connected()).await;
    // Its subscriptions are restored right after the connection: probe until one answers.
    let probe = Topic::Status { node: NODE.into() }.to_string();
    let mut answered = false;
    for _ in 0..100 {
        let status = NodeStatus {
            node: NODE.into(),
            state: NodeState::Offline,
            codec: "probe".into(),
        };
        h.observer
            .publish(&probe, status.to_json(), false)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        h.collect();
        if !h.statuses.is_empty() {
            answered = true;
            break;
        }
    }
    assert!(answered, "the observer's subscriptions came back");
    link.restore();
    h.recover().await;
}
