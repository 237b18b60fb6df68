//! The sink: receives every packet, decodes it, and checks it bit-exact against what the
//! simulator produced; also collects metrics and fleet states for the outputs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use lydlr_bus::messages::{
    FleetState, JsonMessage, ModelCommand, ModelStatus, NodeMetrics, NodeState, NodeStatus,
    RdReport, RolloutCommand, RolloutState,
};
use lydlr_bus::{BrokerUrl, BusClient, BusError, BusMessage, ClientOptions, Topic};
use lydlr_codec::neural::package::MANIFEST_FILE;
use lydlr_codec::{
    Frame, ModelPackage, NeuralModel, Packet, QualityLadder, StreamSchema, decode_packet_with,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// What the simulator produced, per (node, stream), in timestamp order.
#[derive(Default)]
pub struct GroundTruth {
    streams: HashMap<(String, String), Vec<Frame>>,
}

impl GroundTruth {
    pub fn record(&mut self, node: &str, stream: &str, frames: &[Frame]) {
        self.streams
            .entry((node.to_owned(), stream.to_owned()))
            .or_default()
            .extend_from_slice(frames);
    }

    pub fn produced(&self, node: &str, stream: &str) -> usize {
        self.streams
            .get(&(node.to_owned(), stream.to_owned()))
            .map_or(0, Vec::len)
    }

    pub fn total(&self) -> usize {
        self.streams.values().map(Vec::len).sum()
    }
}

/// Delivery counters of one (node, stream).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delivery {
    pub packets: u64,
    pub frames: u64,
    pub compressed_bytes: u64,
    /// Decoded frames that break their contract (lossless: any bit differs; lossy: an error
    /// over the rung's bound), or that have no original.
    pub mismatched: u64,
    /// Packets encoded at a lossy rung, and the coarsest rung seen.
    pub lossy_packets: u64,
    pub max_level: u8,
    /// Sum of squared errors in units of each channel's noise sigma, and samples counted.
    pub squared_error_sigma: f64,
    pub samples: u64,
    pub duplicate_packets: u64,
    pub undecodable_packets: u64,
}

/// Everything the sink saw.
#[derive(Debug, Clone, Default)]
pub struct SinkReport {
    pub delivery: BTreeMap<(String, String), Delivery>,
    pub metrics: Vec<NodeMetrics>,
    /// When each metrics report arrived, seconds on the run's clock (the final reports the
    /// runner adds after the sink stopped have none).
    pub metrics_at_s: Vec<f64>,
    pub fleet: Vec<FleetState>,
    /// When each fleet state arrived, seconds on the run's clock.
    pub fleet_at_s: Vec<f64>,
    /// Each node's latest operating points.
    pub rd: Vec<RdReport>,
    /// Model steps the nodes reported and rollout states the coordinator published, with
    /// their arrival on the run's clock.
    pub model_statuses: Vec<(f64, ModelStatus)>,
    pub rollouts: Vec<(f64, RolloutState)>,
    /// Squared errors (in noise sigmas) and samples, fleet-wide, by second of stream time.
    pub distortion_by_second: BTreeMap<i64, (f64, u64)>,
    pub rejected_messages: u64,
}

pub struct Sink {
    stop: watch::Sender<bool>,
    task: JoinHandle<SinkReport>,
    /// Frames delivered so far, all streams together.
    pub delivered: watch::Receiver<u64>,
    /// Nodes currently announcing themselves online.
    pub online: watch::Receiver<usize>,
}

impl Sink {
    /// Subscribes to packets, metrics, status and fleet state of every node.
    pub async fn start(
        url: &BrokerUrl,
        schemas: Vec<StreamSchema>,
        truth: Arc<Mutex<GroundTruth>>,
        clock: std::time::Instant,
        models: Option<&ModelPackage>,
        recording: Option<rerun::RecordingStream>,
    ) -> Result<Sink, BusError> {
        let (client, rx) = BusClient::connect(url, ClientOptions::new("lydlr-sink"));
        for kind in ["compressed/+", "metrics", "status", "rd", "model/status"] {
            client.subscribe(Topic::all_nodes(kind)).await?;
        }
        client.subscribe(Topic::FleetState.to_string()).await?;
        // Packages deployed during the run: the sink decodes with whatever the nodes run.
        client.subscribe(Topic::all_nodes("model/deploy")).await?;
        client.subscribe(Topic::RolloutCommand.to_string()).await?;
        client.subscribe(Topic::RolloutState.to_string()).await?;
        let (stop, stop_rx) = watch::channel(false);
        let (delivered_tx, delivered) = watch::channel(0);
        let (online_tx, online) = watch::channel(0);
        let state = SinkState {
            clock,
            ladder: QualityLadder::standard(),
            schemas: schemas.into_iter().map(|s| (s.name.clone(), s)).collect(),
            models: models
                .map(|p| {
                    p.models
                        .values()
                        .map(|m| (m.packet_fingerprint(), m.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            packages_seen: HashSet::new(),
            recording,
            truth,
            seen: HashSet::new(),
            online: HashSet::new(),
            report: SinkReport::default(),
            delivered_tx,
            online_tx,
        };
        let task = tokio::spawn(state.run(client, rx, stop_rx));
        Ok(Sink {
            stop,
            task,
            delivered,
            online,
        })
    }

    pub async fn stop(self) -> SinkReport {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

struct SinkState {
    clock: std::time::Instant,
    ladder: QualityLadder,
    schemas: HashMap<String, StreamSchema>,
    /// The models neural packets may name, by fingerprint.
    models: HashMap<u32, Arc<NeuralModel>>,
    /// sha256 of every deployed manifest already loaded.
    packages_seen: HashSet<String>,
    /// The run's Rerun recording: decoded signals beside the originals, and the fleet's
    /// budget, allocation and delivered rate.
    recording: Option<rerun::RecordingStream>,
    truth: Arc<Mutex<GroundTruth>>,
    seen: HashSet<(String, String, i64)>,
    online: HashSet<String>,
    report: SinkReport,
    delivered_tx: watch::Sender<u64>,
    online_tx: watch::Sender<usize>,
}

impl SinkState {
    async fn run(
        mut self,
        client: BusClient,
        mut rx: mpsc::UnboundedReceiver<BusMessage>,
        mut stop: watch::Receiver<bool>,
    ) -> SinkReport {
        loop {
            tokio::select! {
                message = rx.recv() => match message {
                    Some(m) => self.handle(m),
                    None => break,
                },
                _ = stop.changed() => break,
            }
        }
        // Whatever already arrived still counts.
        while let Ok(m) = rx.try_recv() {
            self.handle(m);
        }
        if let Some(rec) = &self.recording {
            let _ = rec.flush_blocking();
        }
        let _ = client.disconnect().await;
        self.report
    }

    fn handle(&mut self, message: BusMessage) {
        match Topic::parse(&message.topic) {
            Ok(Topic::Compressed { node, stream }) => self.packet(node, stream, &message.payload),
            Ok(Topic::Metrics { .. }) => match NodeMetrics::from_json(&message.payload) {
                Ok(m) => {
                    self.report.metrics.push(m);
                    self.report.metrics_at_s.push(self.now());
                }
                Err(_) => self.report.rejected_messages += 1,
            },
            Ok(Topic::Status { node }) => match NodeStatus::from_json(&message.payload) {
                Ok(s) => {
                    if s.state == NodeState::Online {
                        self.online.insert(node);
                    } else {
                        self.online.remove(&node);
                    }
                    let _ = self.online_tx.send(self.online.len());
                }
                Err(_) => self.report.rejected_messages += 1,
            },
            Ok(Topic::Rd { node }) => match RdReport::from_json(&message.payload) {
                Ok(r) if r.node == node => {
                    self.report.rd.retain(|old| old.node != node);
                    self.report.rd.push(r);
                }
                _ => self.report.rejected_messages += 1,
            },
            Ok(Topic::FleetState) => match FleetState::from_json(&message.payload) {
                Ok(f) => {
                    if let Some(rec) = &self.recording {
                        rec.set_duration_secs("wall_time", self.now());
                        for (path, bps) in [
                            ("fleet/budget_kbps", f.fleet_budget_bps),
                            ("fleet/allocated_kbps", f.allocated_bps),
                            ("fleet/delivered_kbps", f.delivered_bps),
                        ] {
                            let _ = rec.log(path, &rerun::Scalars::new([bps / 1000.0]));
                        }
                    }
                    self.report.fleet.push(f);
                    self.report.fleet_at_s.push(self.now());
                }
                Err(_) => self.report.rejected_messages += 1,
            },
            Ok(Topic::ModelDeploy { .. }) => {
                if let Ok(ModelCommand::Deploy { files, .. }) =
                    ModelCommand::from_json(&message.payload)
                {
                    self.learn_package(&files);
                }
            }
            Ok(Topic::ModelStatus { .. }) => match ModelStatus::from_json(&message.payload) {
                Ok(s) => self.report.model_statuses.push((self.now(), s)),
                Err(_) => self.report.rejected_messages += 1,
            },
            Ok(Topic::RolloutState) => match RolloutState::from_json(&message.payload) {
                Ok(s) => self.report.rollouts.push((self.now(), s)),
                Err(_) => self.report.rejected_messages += 1,
            },
            Ok(Topic::RolloutCommand) => {
                if let Ok(RolloutCommand::Start(request)) =
                    RolloutCommand::from_json(&message.payload)
                {
                    self.learn_package(&request.files);
                }
            }
            _ => self.report.rejected_messages += 1,
        }
    }

    fn now(&self) -> f64 {
        self.clock.elapsed().as_secs_f64()
    }

    /// Takes the models of a package sent to the nodes; one they would refuse is ignored
    /// (they will not send packets coded with it).
    fn learn_package(&mut self, files: &std::collections::BTreeMap<String, String>) {
        let Ok(files) = ModelCommand::decoded_files(files) else {
            return;
        };
        let files: HashMap<String, Vec<u8>> = files.into_iter().collect();
        let Some(manifest) = files
            .get(MANIFEST_FILE)
            .and_then(|m| std::str::from_utf8(m).ok())
        else {
            return;
        };
        if !self
            .packages_seen
            .insert(lydlr_codec::sha256_hex(manifest.as_bytes()))
        {
            return;
        }
        let loaded = ModelPackage::load(manifest, |name| {
            files
                .get(name)
                .cloned()
                .ok_or_else(|| format!("{name} not sent"))
        });
        match loaded {
            Ok(package) => {
                for model in package.models.values() {
                    self.models
                        .insert(model.packet_fingerprint(), model.clone());
                }
            }
            Err(e) => tracing::info!("deployed package not loaded by the sink: {e}"),
        }
    }

    fn packet(&mut self, node: String, stream: String, bytes: &[u8]) {
        let key = (node, stream);
        let delivery = self.report.delivery.entry(key.clone()).or_default();
        let Some(schema) = self.schemas.get(&key.1) else {
            delivery.undecodable_packets += 1;
            return;
        };
        let decoded = Packet::from_bytes(bytes).and_then(|p| {
            let frames = decode_packet_with(schema, bytes, |fp| self.models.get(&fp).cloned())?;
            Ok((p.header.quality, frames))
        });
        let (level, frames) = match decoded {
            Ok(decoded) => decoded,
            Err(e) => {
                tracing::warn!(node = %key.0, stream = %key.1, "undecodable packet: {e}");
                delivery.undecodable_packets += 1;
                return;
            }
        };
        let first = frames.first().map_or(0, |f| f.timestamp_ns);
        if !self.seen.insert((key.0.clone(), key.1.clone(), first)) {
            delivery.duplicate_packets += 1;
            return;
        }
        delivery.packets += 1;
        delivery.frames += frames.len() as u64;
        if let Some(rec) = &self.recording
            && schema.kind != lydlr_codec::SensorKind::Lidar
        {
            // Beside the original (`robots/<node>/<stream>`), on the same timeline.
            let path = format!("robots/{}/{}/reconstructed", key.0, key.1);
            for frame in &frames {
                rec.set_duration_secs("sim_time", frame.timestamp_ns as f64 * 1e-9);
                let _ = rec.log(
                    path.as_str(),
                    &rerun::Scalars::new(frame.values.iter().copied()),
                );
            }
        }
        delivery.compressed_bytes += bytes.len() as u64;
        let truth = self.truth.lock().unwrap_or_else(|e| e.into_inner());
        let original = truth.streams.get(&key).map_or(&[][..], Vec::as_slice);
        let start = original.partition_point(|f| f.timestamp_ns < first);
        let Some(bounds) = self.ladder.channel_bounds(schema, level) else {
            delivery.undecodable_packets += 1;
            return;
        };
        if level > 0 {
            delivery.lossy_packets += 1;
            delivery.max_level = delivery.max_level.max(level);
        }
        let mut matching = 0;
        let (mut squared, mut samples) = (0.0, 0u64);
        for (decoded, truth) in frames.iter().zip(original.get(start..).unwrap_or(&[])) {
            let ok =
                if level == 0 {
                    decoded.bit_eq(truth)
                } else {
                    decoded.timestamp_ns == truth.timestamp_ns
                        && decoded.values.len() == truth.values.len()
                        && decoded.values.iter().zip(&truth.values).zip(&bounds).all(
                            |((y, x), eb)| {
                                if x.is_finite() {
                                    (x - y).abs() <= *eb
                                } else {
                                    x.to_bits() == y.to_bits()
                                }
                            },
                        )
                };
            matching += usize::from(ok);
            for (c, (y, x)) in decoded.values.iter().zip(&truth.values).enumerate() {
                if x.is_finite() && y.is_finite() {
                    squared += schema.error_in_sigmas(c, *x, *y).powi(2);
                    samples += 1;
                }
            }
        }
        delivery.squared_error_sigma += squared;
        delivery.samples += samples;
        delivery.mismatched += (frames.len() - matching) as u64;
        let second = self
            .report
            .distortion_by_second
            .entry(first.div_euclid(1_000_000_000))
            .or_default();
        second.0 += squared;
        second.1 += samples;
        let total: u64 = self.report.delivery.values().map(|d| d.frames).sum();
        let _ = self.delivered_tx.send(total);
    }
}
