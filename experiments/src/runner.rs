//! `lydlr run`: one scenario end to end.
//!
//! Data flow: the swarm steps in a blocking task and publishes raw frames per stream on
//! `lydlr/v1/<node>/raw/<stream>` on the robots' broker; one edge node per robot compresses
//! and sends packets over its uplink to the fleet broker ([`crate::links`]); the coordinator
//! tracks liveness and allocates; the sink decodes every packet and checks it against the
//! ground truth the runner recorded before publishing. Scheduled events (faults, budget
//! changes, deployments) are carried out beside the simulation as its clock reaches them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use lydlr_bus::messages::{JsonMessage, NodeMetrics, RawFrames};
use lydlr_bus::{BusClient, ClientOptions, Topic};
use lydlr_codec::{Frame, StreamSchema};
use lydlr_coordinator::run_coordinator;
use lydlr_edge::{NodeHandle, run_node};

use crate::links::{BrokerChoice, Links};
use crate::outputs::{self, SummaryRow};
use crate::scenario::{Event, Scenario};
use crate::sink::{GroundTruth, Sink};
use crate::source::{ReplaySource, SimSource, Source};

/// Command-line choices that are not part of the scenario.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Output directory; default `<results_root>/<scenario>/<run-id>`.
    pub out_dir: Option<PathBuf>,
    pub results_root: PathBuf,
    /// The fleet broker: embedded (default), a Mosquitto the run starts, or an external one.
    pub broker: BrokerChoice,
    /// Overrides the scenario's `sim.duration_s`.
    pub duration_s: Option<f64>,
    pub progress: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            out_dir: None,
            results_root: PathBuf::from("results"),
            broker: BrokerChoice::Embedded,
            duration_s: None,
            progress: true,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub dir: PathBuf,
    pub broker: String,
    pub rows: Vec<SummaryRow>,
    pub sim_s: f64,
    /// The whole run, and the source's loop alone (what "real time" is measured on).
    pub wall_s: f64,
    pub sim_wall_s: f64,
    pub produced: u64,
    pub delivered: u64,
    pub lost: u64,
    pub mismatched: u64,
    /// Scheduled events as they were carried out.
    pub events: Vec<EventRecord>,
    /// Fleet states as the sink received them, with their arrival (run clock, seconds).
    pub fleet: Vec<(f64, lydlr_bus::messages::FleetState)>,
    /// Model steps and rollout states, with their arrival (run clock, seconds).
    pub model_statuses: Vec<(f64, lydlr_bus::messages::ModelStatus)>,
    pub rollouts: Vec<(f64, lydlr_bus::messages::RolloutState)>,
    /// Every metrics report the nodes published.
    pub metrics: Vec<NodeMetrics>,
}

impl RunReport {
    /// Every frame arrived once and decoded within its contract (bit-exact when lossless,
    /// within the rung's bound when lossy).
    pub fn all_delivered_within_bounds(&self) -> bool {
        self.produced > 0
            && self.lost == 0
            && self.mismatched == 0
            && self.delivered == self.produced
    }

    /// Every frame arrived bit-exact: nothing was sent at a lossy rung.
    pub fn all_bit_exact(&self) -> bool {
        self.all_delivered_within_bounds() && self.rows.iter().all(|r| r.max_level == 0)
    }
}

pub fn run_scenario(scenario: &Scenario, options: &RunOptions) -> anyhow::Result<RunReport> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(scenario.clone(), options.clone()))
}

async fn run(mut scenario: Scenario, options: RunOptions) -> anyhow::Result<RunReport> {
    if let Some(d) = options.duration_s {
        scenario.sim.duration_s = d;
    }
    let started = Instant::now();
    let dir = options.out_dir.clone().unwrap_or_else(|| {
        options.results_root.join(&scenario.name).join(format!(
            "{}-seed{}",
            outputs::utc_stamp(),
            scenario.sim.seed
        ))
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(
        dir.join("scenario.toml"),
        toml_echo(&scenario).unwrap_or_default(),
    )
    .ok();

    let recording = dir.join("recording.rrd");
    let recording = scenario.run.rerun.then_some(recording.as_path());
    let source: Box<dyn Source> = match &scenario.replay {
        Some(replay) => Box::new(ReplaySource::new(
            replay,
            scenario.sim.duration_s,
            recording,
        )?),
        None => Box::new(SimSource::new(&scenario.sim, recording)?),
    };
    let names = source.names();
    let schemas = source.schemas();

    let links = Links::start(&scenario, &options.broker, &names).await?;
    let url = links.fleet_url();
    let robot_url = links.robot_url();
    let broker_name = links.describe();
    let truth = Arc::new(Mutex::new(GroundTruth::default()));
    let clock = Instant::now();
    let package = match &scenario.edge.model {
        Some(folder) => Some(stage_model(Path::new(folder), &dir, &names)?),
        None => None,
    };
    let model_version = package.as_ref().map(|p| p.manifest.version.clone());
    let sink = Sink::start(
        &url,
        schemas.clone(),
        truth.clone(),
        clock,
        package.as_ref(),
        source.recording(),
    )
    .await?;
    let coordinator = run_coordinator(scenario.coordinator.clone(), &url).await?;
    let nodes: Arc<tokio::sync::Mutex<BTreeMap<String, NodeHandle>>> = Arc::default();
    let node_config = {
        let edge = scenario.edge.clone();
        let dir = dir.clone();
        let robot_url = robot_url.to_string();
        move |name: &str, uplink: &lydlr_bus::BrokerUrl, model: Option<&str>| {
            let mut config = edge.node_config(name, &uplink.to_string(), &dir, model);
            config.local_broker = Some(robot_url.clone());
            config
        }
    };
    for name in &names {
        let uplink = links.uplink_url(name);
        let config = node_config(name, &uplink, model_version.as_deref());
        let handle = run_node(config, &uplink).await?;
        nodes.lock().await.insert(name.clone(), handle);
    }
    // Nodes announce themselves after subscribing, and the broker handles a connection's
    // packets in order: once the sink has seen every node online, both ends are listening.
    let mut online = sink.online.clone();
    tokio::time::timeout(
        Duration::from_secs(20),
        online.wait_for(|n| *n >= names.len()),
    )
    .await
    .context("edge nodes did not come online within 20 s")??;

    let (publisher, _) = BusClient::connect(&robot_url, ClientOptions::new("lydlr-sim-bridge"));
    let (operator, _) = BusClient::connect(&url, ClientOptions::new("lydlr-run-operator"));
    let carried: Vec<Vec<usize>> = (0..names.len()).map(|r| source.streams_of(r)).collect();
    for (name, slots) in names.iter().zip(&carried) {
        for schema in slots.iter().map(|&slot| &schemas[slot]) {
            let topic = Topic::Schema {
                node: name.clone(),
                stream: schema.name.clone(),
            };
            publisher
                .publish(topic.to_string(), schema.to_json(), true)
                .await?;
        }
    }

    // Events are triggered by the source's clock and carried out here.
    let mut schedule: Vec<(i64, Event)> = scenario
        .events
        .iter()
        .map(|e| ((e.at_s * 1e9).round() as i64, e.event.clone()))
        .collect();
    schedule.sort_by_key(|e| e.0);
    let (event_tx, mut event_rx) = tokio::sync::mpsc::unbounded_channel::<(f64, Event)>();
    let event_log: Arc<Mutex<Vec<EventRecord>>> = Arc::default();
    let executor = {
        let log = event_log.clone();
        let mut events = EventContext {
            nodes: nodes.clone(),
            links,
            operator: operator.clone(),
            node_config: Box::new(node_config),
            version: model_version.clone(),
            rollouts: 0,
        };
        tokio::spawn(async move {
            while let Some((at_s, event)) = event_rx.recv().await {
                let wall_s = clock.elapsed().as_secs_f64();
                let outcome = events.carry_out(&event).await;
                if let Ok(mut log) = log.lock() {
                    log.push(EventRecord {
                        at_s,
                        wall_s,
                        event,
                        outcome,
                    });
                }
            }
            events.links
        })
    };
    let bridge = Bridge {
        schedule,
        event_tx,
        source,
        carried,
        names: names.clone(),
        schemas: schemas.clone(),
        publisher: publisher.clone(),
        truth: truth.clone(),
        publish_every_ms: scenario.run.publish_every_ms,
        realtime: scenario.run.realtime,
        progress: options.progress,
    };
    let runtime = tokio::runtime::Handle::current();
    let sim_wall = tokio::task::spawn_blocking(move || bridge.run(&runtime))
        .await
        .context("simulation task panicked")??;

    let produced = truth.lock().map(|t| t.total()).unwrap_or(0) as u64;
    // Wait until everything arrived, or nothing more arrives for a second (frames sent to a
    // killed node never will), within the drain timeout.
    let mut delivered = sink.delivered.clone();
    let drain_until = Instant::now() + Duration::from_secs_f64(scenario.run.drain_timeout_s);
    let mut last = *delivered.borrow();
    while last < produced && Instant::now() < drain_until {
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            delivered.wait_for(|d| *d >= produced),
        )
        .await;
        let now = *delivered.borrow();
        if now == last {
            tracing::warn!("{} frames did not arrive", produced - now);
            break;
        }
        last = now;
    }

    // The links (and the brokers behind them) live until everything has stopped.
    let _links = executor.await.context("event task panicked")?;
    let mut finals: Vec<NodeMetrics> = Vec::new();
    for (_, node) in std::mem::take(&mut *nodes.lock().await) {
        finals.push(node.stop().await?);
    }
    let events = event_log.lock().map(|l| l.clone()).unwrap_or_default();
    coordinator.stop().await?;
    let _ = publisher.disconnect().await;
    let mut report = sink.stop().await;
    for m in &finals {
        if !report
            .metrics
            .iter()
            .any(|r| r.node == m.node && r.seq == m.seq)
        {
            report.metrics.push(m.clone());
        }
    }

    let truth = truth.lock().unwrap_or_else(|e| e.into_inner());
    let rows = outputs::summary_rows(&names, &schemas, &truth, &report, &finals);
    outputs::write_summary_csv(&dir.join("summary.csv"), &rows)?;
    outputs::write_metrics_parquet(&dir.join("metrics.parquet"), &report.metrics)?;
    crate::report::write_report(
        &dir,
        &crate::report::RunData {
            scenario: &scenario,
            rows: &rows,
            metrics: &report.metrics,
            metrics_at_s: &report.metrics_at_s,
            fleet: &report.fleet,
            rd: &report.rd,
            events: &events,
            fleet_at_s: &report.fleet_at_s,
            model_statuses: &report.model_statuses,
            rollouts: &report.rollouts,
            distortion_by_second: &report.distortion_by_second,
            wall_s: started.elapsed().as_secs_f64(),
        },
    )?;
    let total = rows.iter().find(|r| r.node == "TOTAL").cloned();
    let total = total.context("summary has no total row")?;
    Ok(RunReport {
        dir,
        broker: broker_name,
        sim_s: scenario.sim.duration_s,
        wall_s: started.elapsed().as_secs_f64(),
        sim_wall_s: sim_wall,
        produced: total.frames_produced,
        delivered: total.frames_delivered,
        lost: total.frames_lost,
        mismatched: total.frames_mismatched,
        fleet: report
            .fleet_at_s
            .iter()
            .copied()
            .zip(report.fleet.iter().cloned())
            .collect(),
        events: events.clone(),
        model_statuses: report.model_statuses.clone(),
        rollouts: report.rollouts.clone(),
        metrics: report.metrics.clone(),
        rows,
    })
    .inspect(|r: &RunReport| {
        tracing::info!(sim_wall_s = sim_wall, wall_s = r.wall_s, "run finished");
    })
}

/// The scenario as this run used it (overrides applied), so the run can be repeated.
fn toml_echo(scenario: &Scenario) -> Option<String> {
    toml::to_string(scenario).ok()
}

/// Steps the swarm and publishes its frames, batched per stream.
/// A scheduled event as it happened.
#[derive(Debug, Clone)]
pub struct EventRecord {
    /// Simulation time it was due, and wall time (since the run's clock) it was carried out.
    pub at_s: f64,
    pub wall_s: f64,
    pub event: Event,
    pub outcome: String,
}

struct Bridge {
    /// (source time in ns, event), in order; sent to the executor when the clock reaches it.
    schedule: Vec<(i64, Event)>,
    event_tx: tokio::sync::mpsc::UnboundedSender<(f64, Event)>,
    source: Box<dyn Source>,
    /// Each robot's stream slots.
    carried: Vec<Vec<usize>>,
    names: Vec<String>,
    /// Schemas of the transmitted streams; a frame's batch slot indexes them.
    schemas: Vec<StreamSchema>,
    publisher: BusClient,
    truth: Arc<Mutex<GroundTruth>>,
    publish_every_ms: u32,
    realtime: bool,
    progress: bool,
}

impl Bridge {
    fn run(mut self, runtime: &tokio::runtime::Handle) -> anyhow::Result<f64> {
        let started = Instant::now();
        let total = self.source.total_steps();
        let step_ns = self.source.step_ns();
        let publish_steps = ((u64::from(self.publish_every_ms) * 1_000_000) / step_ns).max(1);
        let bar = if self.progress {
            ProgressBar::new(total)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} sim {bar:40} {pos}/{len} steps  {per_sec}  eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let streams = self.schemas.len();
        let mut batches: Vec<Vec<Frame>> = vec![Vec::new(); self.names.len() * streams];
        let mut next_event = 0;
        for step in 1..=total {
            let frames = self.source.step()?;
            let now_ns = self.source.time_ns();
            while next_event < self.schedule.len() && self.schedule[next_event].0 <= now_ns {
                let t = now_ns as f64 * 1e-9;
                let _ = self.event_tx.send((t, self.schedule[next_event].1.clone()));
                next_event += 1;
            }
            for (robot, slot, frame) in frames {
                batches[robot * streams + slot].push(frame);
            }
            let last = step == total;
            if step % publish_steps == 0 || last {
                self.publish(runtime, &mut batches, last)?;
            }
            if self.realtime {
                let due = Duration::from_nanos(step * step_ns);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        self.source.finish()?;
        Ok(started.elapsed().as_secs_f64())
    }

    fn publish(
        &self,
        runtime: &tokio::runtime::Handle,
        batches: &mut [Vec<Frame>],
        flush: bool,
    ) -> anyhow::Result<()> {
        let streams = self.schemas.len();
        for (i, batch) in batches.iter_mut().enumerate() {
            let (robot, slot) = (i / streams, i % streams);
            // The last publish flushes every stream a robot has, even with nothing new, so
            // that no frame stays in a node's partial block.
            if batch.is_empty() && !(flush && self.carried[robot].contains(&slot)) {
                continue;
            }
            let frames = std::mem::take(batch);
            let node = &self.names[robot];
            let stream = &self.schemas[slot].name;
            match self.truth.lock() {
                Ok(mut truth) => truth.record(node, stream, &frames),
                Err(_) => bail!("ground truth lock poisoned"),
            }
            let topic = Topic::Raw {
                node: node.clone(),
                stream: stream.clone(),
            };
            runtime.block_on(self.publisher.publish(
                topic.to_string(),
                RawFrames::encode(&frames, flush),
                false,
            ))?;
        }
        Ok(())
    }
}

type NodeConfigFn =
    Box<dyn Fn(&str, &lydlr_bus::BrokerUrl, Option<&str>) -> lydlr_edge::EdgeConfig + Send + Sync>;

/// What the event task needs to carry events out.
struct EventContext {
    nodes: Arc<tokio::sync::Mutex<BTreeMap<String, NodeHandle>>>,
    links: Links,
    /// A client on the fleet broker, as an operator's console would be.
    operator: BusClient,
    node_config: NodeConfigFn,
    /// The model version the nodes started with.
    version: Option<String>,
    rollouts: u32,
}

impl EventContext {
    async fn carry_out(&mut self, event: &Event) -> String {
        match self.try_carry_out(event).await {
            Ok(outcome) => outcome,
            Err(e) => format!("failed: {e:#}"),
        }
    }

    async fn try_carry_out(&mut self, event: &Event) -> anyhow::Result<String> {
        Ok(match event {
            Event::KillNode { node } => match self.nodes.lock().await.remove(node) {
                Some(handle) => {
                    handle.abort();
                    "killed".to_owned()
                }
                None => "not running".to_owned(),
            },
            Event::RestartNode { node } => {
                if self.nodes.lock().await.contains_key(node) {
                    return Ok("already running".to_owned());
                }
                let uplink = self.links.uplink_url(node);
                let config = (self.node_config)(node, &uplink, self.version.as_deref());
                let handle = run_node(config, &uplink).await?;
                self.nodes.lock().await.insert(node.clone(), handle);
                "restarted".to_owned()
            }
            Event::SetBudget { bps } => {
                // Not retained: a later run on the same external broker must not inherit
                // this run's budget.
                let message = lydlr_bus::messages::FleetBudget { bps: *bps };
                self.publish(Topic::FleetBudget, message.to_json()).await?;
                "published".to_owned()
            }
            Event::CutLink { node } => self.links.cut(node),
            Event::RestoreLink { node } => self.links.restore(node),
            Event::RestartBroker { down_s } => {
                self.links
                    .restart_broker(Duration::from_secs_f64(*down_s))
                    .await
            }
            Event::DeployModel { node, model } => {
                let (package, files) = lydlr_learn::package::package_files(Path::new(model))?;
                let command = lydlr_bus::messages::ModelCommand::deploy_files(
                    &package.manifest.version,
                    files.iter().map(|(n, b)| (n.as_str(), b.as_slice())),
                );
                let topic = Topic::ModelDeploy { node: node.clone() };
                self.publish(topic, command.to_json()).await?;
                format!("sent {}", package.manifest.version)
            }
            Event::Rollout {
                model,
                canary,
                waves,
                health_timeout_s,
            } => {
                self.rollouts += 1;
                let id = format!("run-{}", self.rollouts);
                let request = lydlr_bus::messages::RolloutRequest {
                    canary: canary.clone(),
                    waves: waves.clone(),
                    health_timeout_s: *health_timeout_s,
                    ..crate::operator::rollout_request(Path::new(model), Some(id.clone()))?
                };
                let version = request.version.clone();
                let command = lydlr_bus::messages::RolloutCommand::Start(request);
                self.publish(Topic::RolloutCommand, command.to_json())
                    .await?;
                format!("rollout {id} of {version} sent to the coordinator")
            }
            Event::LoadScript { node, script } => {
                let load = crate::operator::script_load(Path::new(script))?;
                let signed = load.signature.is_some();
                let topic = Topic::ScriptLoad { node: node.clone() };
                self.publish(topic, load.to_json()).await?;
                if signed {
                    "sent, signed".to_owned()
                } else {
                    "sent".to_owned()
                }
            }
        })
    }

    async fn publish(&self, topic: Topic, payload: Vec<u8>) -> anyhow::Result<()> {
        self.operator
            .publish(topic.to_string(), payload, false)
            .await
            .map_err(Into::into)
    }
}

/// Reads and verifies the package in `folder` and copies it into every node's model folder
/// under the run's folder, as a deployment would leave it.
fn stage_model(
    folder: &Path,
    work: &Path,
    nodes: &[String],
) -> anyhow::Result<lydlr_codec::ModelPackage> {
    let (package, files) = lydlr_learn::package::package_files(folder)
        .with_context(|| format!("model package {}", folder.display()))?;
    for node in nodes {
        let target = work
            .join("models")
            .join(node)
            .join(&package.manifest.version);
        std::fs::create_dir_all(&target).with_context(|| format!("{}", target.display()))?;
        for (name, bytes) in &files {
            let path = target.join(name);
            std::fs::write(&path, bytes).with_context(|| format!("{}", path.display()))?;
        }
    }
    Ok(package)
}
