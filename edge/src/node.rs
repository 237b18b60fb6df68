//! The node on the bus: subscriptions, the message loop, metrics and status, model
//! deployments, and the offline queue that holds packets while the broker is out of reach.

use std::time::Duration;

use lydlr_bus::messages::{
    Allocation, Control, JsonMessage, ModelCommand, ModelState, NodeMetrics, NodeState, NodeStatus,
    RawFrames, ScriptLoad,
};
use lydlr_bus::topics::PREFIX;
use lydlr_bus::{BrokerUrl, BusClient, BusError, BusMessage, ClientOptions, Topic};
use lydlr_codec::StreamSchema;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::models::{ModelSlot, prepare};
use crate::spool::Spool;
use crate::{Compressor, EdgeConfig, EncodedPacket};

/// A deployment's outcome: the version, and what was checked or why it was refused.
type Deployed = (String, Result<String, String>);

const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running node: ask it to stop, then await its final metrics.
pub struct NodeHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<NodeMetrics, BusError>>,
    /// Tasks that feed the node from its connections; a crash takes them down with it.
    feeders: Vec<JoinHandle<()>>,
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
        for feeder in &self.feeders {
            feeder.abort();
        }
        self.task.abort();
    }
}

/// Connects to `url` and runs the node until stopped. Returns once the node is subscribed
/// and has announced itself online.
pub async fn run_node(config: EdgeConfig, url: &BrokerUrl) -> Result<NodeHandle, BusError> {
    url.check()?;
    let node = config.node_id.clone();
    let status_topic = Topic::Status { node: node.clone() }.to_string();
    let mut compressor = Compressor::new(&config);
    for (stream, schema) in remembered_schemas(&config) {
        compressor.set_schema(&stream, schema);
    }
    let spool = Spool::open(&config.spool_path(), config.spool_max_bytes)
        .map_err(|e| BusError::Broker(format!("node {node}: {e}")))?;
    let (deployed_tx, deployed_rx) = mpsc::unbounded_channel();
    if let Some(version) = &config.model {
        let request = compressor.deploy_request(config.model_root(), version.clone(), Vec::new());
        let slot = compressor.model_slot();
        let outcome = tokio::task::spawn_blocking(move || install(request, &slot))
            .await
            .map_err(|e| BusError::Broker(format!("model loader failed: {e}")))?;
        let _ = deployed_tx.send(outcome);
    }
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
    let online = NodeStatus {
        state: NodeState::Online,
        ..offline.clone()
    };
    let raw_filters = ["raw/+", "schema/+"].map(|kind| format!("{}/{node}/{kind}", PREFIX));
    let mut filters: Vec<String> = [
        Topic::Control { node: node.clone() },
        Topic::Alloc { node: node.clone() },
        Topic::ScriptLoad { node: node.clone() },
        Topic::ModelDeploy { node: node.clone() },
    ]
    .iter()
    .map(Topic::to_string)
    .collect();
    let local = match &config.local_broker {
        // The robot's own broker carries its sensors; `url` is the uplink.
        Some(local) => {
            let local: BrokerUrl = local.parse().map_err(|_| BusError::Url(local.clone()))?;
            // The robot's broker keeps the sensors' frames for a node that died, until it is
            // back (its schemas come from the node's own folder then: a resumed session
            // does not resend retained messages).
            let mut options = ClientOptions::new(format!("lydlr-edge-{node}-local"));
            options.persistent_session = true;
            Some(connect_ready(&local, options, &raw_filters, &status_topic, &online, false).await?)
        }
        None => {
            filters.extend(raw_filters.iter().cloned());
            None
        }
    };
    let mut options = ClientOptions::new(format!("lydlr-edge-{node}"));
    options.last_will = Some((status_topic.clone(), offline.to_json()));
    let (client, mut rx, mut early) =
        connect_ready(url, options, &filters, &status_topic, &online, true).await?;
    let mut feeders = Vec::new();
    if let Some((local_client, mut local_rx, local_early)) = local {
        early.extend(local_early);
        let (merged_tx, merged_rx) = mpsc::unbounded_channel();
        let uplink_tx = merged_tx.clone();
        feeders.push(tokio::spawn(async move {
            // Holding the local client keeps its connection for as long as the node reads.
            let _local_client = local_client;
            while let Some(message) = local_rx.recv().await {
                if merged_tx.send(message).is_err() {
                    break;
                }
            }
        }));
        feeders.push(tokio::spawn(async move {
            while let Some(message) = rx.recv().await {
                if uplink_tx.send(message).is_err() {
                    break;
                }
            }
        }));
        rx = merged_rx;
    }

    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(
        NodeLoop {
            config,
            client,
            compressor,
            spool,
            deployed_tx,
            online: online.to_json(),
            seq: 0,
            next_metrics_ns: None,
            busy: Duration::ZERO,
            last_report: std::time::Instant::now(),
            grace_until: None,
        }
        .run(early, rx, deployed_rx, stop_rx, status_topic, offline),
    );
    Ok(NodeHandle {
        stop,
        task,
        feeders,
    })
}

/// The node's copy of its streams' schemas, beside its offline queue.
fn schema_dir(config: &EdgeConfig) -> std::path::PathBuf {
    config.spool_path().join("schemas")
}

/// Keeps a schema the node was sent, for its next start.
fn remember_schema(config: &EdgeConfig, stream: &str, json: &[u8]) {
    let dir = schema_dir(config);
    let path = dir.join(format!("{stream}.json"));
    if std::fs::read(&path).is_ok_and(|known| known == json) {
        return;
    }
    let written = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, json));
    if let Err(e) = written {
        tracing::warn!(node = %config.node_id, stream, "cannot keep the schema: {e}");
    }
}

/// The schemas an earlier run of the node was sent.
fn remembered_schemas(config: &EdgeConfig) -> Vec<(String, StreamSchema)> {
    let Ok(entries) = std::fs::read_dir(schema_dir(config)) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|path| {
            let stream = path.file_stem()?.to_str()?.to_owned();
            let schema = StreamSchema::from_json(&std::fs::read(&path).ok()?).ok()?;
            lydlr_bus::topics::is_valid_name(&stream).then_some((stream, schema))
        })
        .collect()
}

/// Connects, subscribes `filters` and the status topic, and publishes `status` there. The
/// broker handles a connection's packets in order, so once the status comes back every
/// subscription is active: only then is the connection ready. Returns what arrived before.
async fn connect_ready(
    url: &BrokerUrl,
    options: ClientOptions,
    filters: &[String],
    status_topic: &str,
    status: &NodeStatus,
    retain: bool,
) -> Result<
    (
        BusClient,
        mpsc::UnboundedReceiver<BusMessage>,
        Vec<BusMessage>,
    ),
    BusError,
> {
    let (client, mut rx) = BusClient::connect(url, options);
    for filter in filters.iter().map(String::as_str).chain([status_topic]) {
        client.subscribe(filter).await?;
    }
    client
        .publish(status_topic, status.to_json(), retain)
        .await?;
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
            "node {}: no answer from the broker at {url} within {READY_TIMEOUT:?}",
            status.node
        )));
    }
    Ok((client, rx, early))
}

/// Prepares a deployment and, when it passes, switches the node to it.
fn install(request: crate::models::DeployRequest, slot: &ModelSlot) -> Deployed {
    let version = request.version.clone();
    let outcome = prepare(request).map(|(model, checked)| {
        slot.store(Some(std::sync::Arc::new(model)));
        checked
    });
    (version, outcome)
}

struct NodeLoop {
    config: EdgeConfig,
    client: BusClient,
    compressor: Compressor,
    spool: Spool,
    deployed_tx: mpsc::UnboundedSender<Deployed>,
    /// The retained online status, published again after every reconnect.
    online: Vec<u8>,
    seq: u64,
    next_metrics_ns: Option<i64>,
    /// Time spent handling messages since the last report, and when that report went out.
    busy: Duration,
    last_report: std::time::Instant,
    /// Until then, after a reconnect, packets queue instead of going out.
    grace_until: Option<tokio::time::Instant>,
}

impl NodeLoop {
    async fn run(
        mut self,
        early: Vec<BusMessage>,
        mut rx: mpsc::UnboundedReceiver<BusMessage>,
        mut deployed: mpsc::UnboundedReceiver<Deployed>,
        mut stop: watch::Receiver<bool>,
        status_topic: String,
        offline: NodeStatus,
    ) -> Result<NodeMetrics, BusError> {
        let period = Duration::from_millis(u64::from(self.config.metrics_period_ms));
        let mut heartbeat = tokio::time::interval(period);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut since_metrics = tokio::time::Instant::now();
        let mut connection = self.client.connection();
        // Connected already (the node waited for its own status); only later changes count.
        connection.borrow_and_update();
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
                    if let Some(report) = self.compressor.take_rd_report()
                        && self.client.is_connected()
                    {
                        let topic = Topic::Rd { node: self.config.node_id.clone() };
                        self.client.publish(topic.to_string(), report.to_json(), false).await?;
                    }
                    self.publish_model_events().await?;
                    if self.stream_metrics_due() {
                        self.publish_metrics().await?;
                        since_metrics = tokio::time::Instant::now();
                    }
                }
                Some((version, outcome)) = deployed.recv() => {
                    match outcome {
                        Ok(checked) => self.compressor.model_event(&version, ModelState::Active, checked),
                        Err(reason) => {
                            tracing::warn!(node = %self.config.node_id, version, "model refused: {reason}");
                            self.compressor.model_event(&version, ModelState::Rejected, reason);
                        }
                    }
                    self.publish_model_events().await?;
                }
                Ok(()) = connection.changed() => {
                    if *connection.borrow_and_update() {
                        let grace = Duration::from_millis(u64::from(self.config.reconnect_grace_ms));
                        self.grace_until = Some(tokio::time::Instant::now() + grace);
                        // The broker may have lost our retained status (a restart) or
                        // published our last will (a cut link).
                        let topic = Topic::Status { node: self.config.node_id.clone() };
                        self.client.publish(topic.to_string(), self.online.clone(), true).await?;
                    }
                }
                () = std::future::ready(()), if self.uplink_ready() && !self.spool.is_empty() => {
                    self.drain_spool().await?;
                }
                () = tokio::time::sleep_until(self.grace_until.unwrap_or_else(tokio::time::Instant::now)), if self.grace_until.is_some() => {
                    self.grace_until = None;
                }
                _ = heartbeat.tick() => {
                    if let Some(dir) = &self.config.scripts_dir {
                        for (script, error) in self.compressor.scripts().load_dir(std::path::Path::new(dir)) {
                            tracing::warn!(node = %self.config.node_id, script, "script refused: {error}");
                        }
                    }
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
        if self.client.is_connected() {
            while !self.spool.is_empty() {
                self.drain_spool().await?;
            }
        }
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
                Ok(schema) => {
                    remember_schema(&self.config, &stream, &message.payload);
                    self.compressor.set_schema(&stream, schema)
                }
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
                        signature,
                    }) => {
                        let signature = signature.map(|hex| {
                            crate::signing::hex_bytes::<64>(&hex)
                                .map_or_else(Vec::new, |b| b.to_vec())
                        });
                        if let Err(e) = self.compressor.scripts().load_signed(
                            &name,
                            order,
                            &source,
                            signature.as_deref(),
                        ) {
                            tracing::warn!(node = %self.config.node_id, script = %name, "script refused: {e}");
                        }
                    }
                    Ok(ScriptLoad {
                        name,
                        source: None,
                        signature,
                        ..
                    }) => {
                        let signature =
                            signature.and_then(|hex| crate::signing::hex_bytes::<64>(&hex));
                        if let Err(e) = self
                            .compressor
                            .scripts()
                            .unload_signed(&name, signature.as_ref().map(|s| &s[..]))
                        {
                            tracing::warn!(node = %self.config.node_id, script = %name, "unload refused: {e}");
                            self.compressor.reject();
                        }
                    }
                    Err(_) => self.compressor.reject(),
                }
                Vec::new()
            }
            Topic::ModelDeploy { .. } => {
                match ModelCommand::from_json(&message.payload) {
                    Ok(ModelCommand::Deploy {
                        version,
                        files,
                        rollout,
                    }) => {
                        self.compressor.tag_rollout(&version, rollout);
                        match ModelCommand::decoded_files(&files) {
                            Ok(files) => self.deploy(version, files),
                            Err(e) => self.compressor.model_event(
                                &version,
                                ModelState::Rejected,
                                e.to_string(),
                            ),
                        }
                    }
                    Ok(ModelCommand::Rollback { reason, version }) => self.compressor.rollback(
                        reason.unwrap_or_else(|| "rollback ordered".into()),
                        version.as_deref(),
                    ),
                    Err(e) => {
                        self.compressor.reject();
                        self.compressor.model_event(
                            "",
                            ModelState::Rejected,
                            format!("bad deploy message: {e}"),
                        );
                    }
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

    /// Prepares a version on a blocking thread; the loop goes on compressing meanwhile and
    /// hears the outcome on `deployed`.
    fn deploy(&mut self, version: String, files: Vec<(String, Vec<u8>)>) {
        let request = self
            .compressor
            .deploy_request(self.config.model_root(), version, files);
        let slot = self.compressor.model_slot();
        let done = self.deployed_tx.clone();
        tokio::task::spawn_blocking(move || {
            let _ = done.send(install(request, &slot));
        });
    }

    async fn publish_model_events(&mut self) -> Result<(), BusError> {
        for event in self.compressor.take_model_events() {
            let topic = Topic::ModelStatus {
                node: self.config.node_id.clone(),
            };
            self.client
                .publish(topic.to_string(), event.to_json(), true)
                .await?;
        }
        Ok(())
    }

    /// Delivers the oldest segment of the offline queue.
    async fn drain_spool(&mut self) -> Result<(), BusError> {
        let records = self
            .spool
            .pop_segment()
            .map_err(|e| BusError::Broker(e.to_string()))?;
        for (topic, payload) in records.unwrap_or_default() {
            self.client.publish(topic, payload, false).await?;
        }
        Ok(())
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

    /// Hands packets to the broker, or to the offline queue while the link is down or the
    /// queue still holds older ones (order is kept).
    /// Connected, and past the grace period after a reconnect.
    fn uplink_ready(&self) -> bool {
        self.client.is_connected() && self.grace_until.is_none()
    }

    async fn publish_packets(&mut self, packets: Vec<EncodedPacket>) -> Result<(), BusError> {
        for packet in packets {
            let topic = Topic::Compressed {
                node: self.config.node_id.clone(),
                stream: packet.stream,
            }
            .to_string();
            if self.uplink_ready() && self.spool.is_empty() {
                self.client.publish(topic, packet.bytes, false).await?;
            } else if let Err(e) = self.spool.push(&topic, &packet.bytes) {
                tracing::error!(node = %self.config.node_id, "offline queue: {e}");
                self.compressor.reject();
            }
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
        let spool = self.spool.counters();
        metrics.spool_queued = spool.queued;
        metrics.spool_dropped = spool.dropped;
        metrics.spool_drained = spool.drained;
        if !self.client.is_connected() {
            // A heartbeat nobody can hear; it would only fill the client's queue.
            return Ok(metrics);
        }
        let topic = Topic::Metrics {
            node: self.config.node_id.clone(),
        };
        self.client
            .publish(topic.to_string(), metrics.to_json(), false)
            .await?;
        Ok(metrics)
    }
}
