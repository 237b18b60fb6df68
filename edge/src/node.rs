//! The node on the bus: subscriptions, the message loop, metrics and status.

use std::time::Duration;

use lydlr_bus::messages::{
    Allocation, Control, JsonMessage, NodeMetrics, NodeState, NodeStatus, RawFrames, ScriptLoad,
};
use lydlr_bus::{BrokerUrl, BusClient, BusError, BusMessage, ClientOptions, Topic};
use lydlr_codec::StreamSchema;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::{Compressor, EdgeConfig, EncodedPacket};

const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running node: ask it to stop, then await its final metrics.
pub struct NodeHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<NodeMetrics, BusError>>,
}

impl NodeHandle {
    /// Flushes every partial block, publishes final metrics and an offline status,
    /// disconnects, and returns the final metrics.
    pub async fn stop(self) -> Result<NodeMetrics, BusError> {
        let _ = self.stop.send(true);
        self.task
            .await
            .map_err(|e| BusError::Broker(format!("node task failed: {e}")))?
    }

    /// Waits until the node ends by itself (it does not, unless its task fails).
    pub async fn join(self) -> Result<NodeMetrics, BusError> {
        self.task
            .await
            .map_err(|e| BusError::Broker(format!("node task failed: {e}")))?
    }

    /// Kills the node without a goodbye, as a crash or a power cut would: the broker
    /// publishes its last will.
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Connects to `url` and runs the node until stopped. Returns once the node is subscribed
/// and has announced itself online.
pub async fn run_node(config: EdgeConfig, url: &BrokerUrl) -> Result<NodeHandle, BusError> {
    let node = config.node_id.clone();
    let status_topic = Topic::Status { node: node.clone() }.to_string();
    let mut compressor = Compressor::new(&config);
    if let Some(dir) = &config.scripts_dir {
        for (script, error) in compressor.scripts().load_dir(std::path::Path::new(dir)) {
            tracing::warn!(node = %node, script, "script refused: {error}");
        }
    }
    let offline = NodeStatus {
        node: node.clone(),
        state: NodeState::Offline,
        codec: compressor.codec_name(),
    };
    let mut options = ClientOptions::new(format!("lydlr-edge-{node}"));
    options.last_will = Some((status_topic.clone(), offline.to_json()));
    let (client, rx) = BusClient::connect(url, options);
    for kind in ["raw/+", "schema/+"] {
        client
            .subscribe(format!("{}/{node}/{kind}", lydlr_bus::topics::PREFIX))
            .await?;
    }
    for topic in [
        Topic::Control { node: node.clone() },
        Topic::Alloc { node: node.clone() },
        Topic::ScriptLoad { node: node.clone() },
        Topic::Status { node: node.clone() },
    ] {
        client.subscribe(topic.to_string()).await?;
    }
    let online = NodeStatus {
        state: NodeState::Online,
        ..offline.clone()
    };
    client
        .publish(status_topic.clone(), online.to_json(), true)
        .await?;
    // The broker handles a connection's packets in order, so once anything comes back on the
    // status topic every subscription above is active: only then is the node ready.
    let mut rx = rx;
    let mut early = Vec::new();
    let ready = tokio::time::timeout(READY_TIMEOUT, async {
        while let Some(message) = rx.recv().await {
            if message.topic == status_topic {
                return true;
            }
            early.push(message);
        }
        false
    });
    if !ready.await.unwrap_or(false) {
        return Err(BusError::Broker(format!(
            "node {node}: no answer from the broker at {url} within {READY_TIMEOUT:?}"
        )));
    }

    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(
        NodeLoop {
            config,
            client,
            compressor,
            seq: 0,
            next_metrics_ns: None,
            busy: Duration::ZERO,
            last_report: std::time::Instant::now(),
        }
        .run(early, rx, stop_rx, status_topic, offline),
    );
    Ok(NodeHandle { stop, task })
}

struct NodeLoop {
    config: EdgeConfig,
    client: BusClient,
    compressor: Compressor,
    seq: u64,
    next_metrics_ns: Option<i64>,
    /// Time spent handling messages since the last report, and when that report went out.
    busy: Duration,
    last_report: std::time::Instant,
}

impl NodeLoop {
    async fn run(
        mut self,
        early: Vec<BusMessage>,
        mut rx: mpsc::UnboundedReceiver<BusMessage>,
        mut stop: watch::Receiver<bool>,
        status_topic: String,
        offline: NodeStatus,
    ) -> Result<NodeMetrics, BusError> {
        let period = Duration::from_millis(u64::from(self.config.metrics_period_ms));
        let mut heartbeat = tokio::time::interval(period);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut since_metrics = tokio::time::Instant::now();
        for message in early {
            let packets = self.handle(message);
            self.publish_packets(packets).await?;
        }
        loop {
            tokio::select! {
                message = rx.recv() => {
                    let Some(message) = message else { break };
                    let started = std::time::Instant::now();
                    let packets = self.handle(message);
                    self.busy += started.elapsed();
                    self.publish_packets(packets).await?;
                    if let Some(report) = self.compressor.take_rd_report() {
                        let topic = Topic::Rd { node: self.config.node_id.clone() };
                        self.client.publish(topic.to_string(), report.to_json(), false).await?;
                    }
                    if self.stream_metrics_due() {
                        self.publish_metrics().await?;
                        since_metrics = tokio::time::Instant::now();
                    }
                }
                _ = heartbeat.tick() => {
                    // Stream time drives metrics; this keeps the node visibly alive when
                    // its sensors are quiet.
                    if since_metrics.elapsed() >= period / 2 {
                        self.publish_metrics().await?;
                        since_metrics = tokio::time::Instant::now();
                    }
                }
                _ = stop.changed() => break,
            }
        }
        let packets = self.compressor.flush_all();
        self.publish_packets(packets).await?;
        let last = self.publish_metrics().await?;
        self.client
            .publish(status_topic, offline.to_json(), true)
            .await?;
        self.client.disconnect().await?;
        Ok(last)
    }

    fn handle(&mut self, message: BusMessage) -> Vec<EncodedPacket> {
        let Ok(topic) = Topic::parse(&message.topic) else {
            self.compressor.reject();
            return Vec::new();
        };
        if topic.node() != self.config.node_id {
            self.compressor.reject();
            return Vec::new();
        }
        match topic {
            Topic::Schema { stream, .. } => match StreamSchema::from_json(&message.payload) {
                Ok(schema) => self.compressor.set_schema(&stream, schema),
                Err(e) => {
                    tracing::warn!(node = %self.config.node_id, stream, "bad schema: {e}");
                    self.compressor.reject();
                    Vec::new()
                }
            },
            Topic::Raw { stream, .. } => match RawFrames::decode(&message.payload) {
                Ok(raw) => self.compressor.push_raw(&stream, raw),
                Err(_) => {
                    self.compressor.reject();
                    Vec::new()
                }
            },
            Topic::Control { .. } => match Control::from_json(&message.payload) {
                Ok(Control::Flush) => self.compressor.flush_all(),
                Err(_) => {
                    self.compressor.reject();
                    Vec::new()
                }
            },
            // Our own status, echoed back.
            Topic::Status { .. } => Vec::new(),
            Topic::ScriptLoad { .. } => {
                match ScriptLoad::from_json(&message.payload) {
                    Ok(ScriptLoad {
                        name,
                        order,
                        source: Some(source),
                    }) => {
                        if let Err(e) = self.compressor.scripts().load(&name, order, &source) {
                            tracing::warn!(node = %self.config.node_id, script = %name, "script refused: {e}");
                        }
                    }
                    Ok(ScriptLoad {
                        name, source: None, ..
                    }) => self.compressor.scripts().unload(&name),
                    Err(_) => self.compressor.reject(),
                }
                Vec::new()
            }
            Topic::Alloc { .. } => {
                match Allocation::from_json(&message.payload) {
                    Ok(a) => self.compressor.set_allocation(a),
                    Err(_) => self.compressor.reject(),
                }
                Vec::new()
            }
            _ => {
                self.compressor.reject();
                Vec::new()
            }
        }
    }

    fn stream_metrics_due(&mut self) -> bool {
        let Some(now) = self.compressor.stream_time_ns() else {
            return false;
        };
        let period = i64::from(self.config.metrics_period_ms) * 1_000_000;
        let next = *self
            .next_metrics_ns
            .get_or_insert(now - now.rem_euclid(period) + period);
        if now < next {
            return false;
        }
        self.next_metrics_ns = Some(now - now.rem_euclid(period) + period);
        true
    }

    async fn publish_packets(&self, packets: Vec<EncodedPacket>) -> Result<(), BusError> {
        for packet in packets {
            let topic = Topic::Compressed {
                node: self.config.node_id.clone(),
                stream: packet.stream,
            };
            self.client
                .publish(topic.to_string(), packet.bytes, false)
                .await?;
        }
        Ok(())
    }

    async fn publish_metrics(&mut self) -> Result<NodeMetrics, BusError> {
        self.seq += 1;
        let mut metrics = self.compressor.metrics(self.seq);
        let wall = self.last_report.elapsed().as_secs_f64();
        metrics.cpu_share = if wall > 0.0 {
            self.busy.as_secs_f64() / wall
        } else {
            0.0
        };
        self.busy = Duration::ZERO;
        self.last_report = std::time::Instant::now();
        let topic = Topic::Metrics {
            node: self.config.node_id.clone(),
        };
        self.client
            .publish(topic.to_string(), metrics.to_json(), false)
            .await?;
        Ok(metrics)
    }
}
