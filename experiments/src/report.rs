//! `report.md` with SVG plots for a run, and the regression gate against a stored baseline.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, bail};
use lydlr_bus::messages::{FleetState, ModelStatus, NodeMetrics, RdReport, RolloutState};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

use crate::outputs::SummaryRow;
use crate::runner::EventRecord;
use crate::scenario::{Event, Scenario};

/// What a run leaves for the report.
pub struct RunData<'a> {
    pub scenario: &'a Scenario,
    pub rows: &'a [SummaryRow],
    pub metrics: &'a [NodeMetrics],
    /// Arrival of the first `metrics_at_s.len()` metrics reports (run clock, seconds).
    pub metrics_at_s: &'a [f64],
    pub fleet: &'a [FleetState],
    pub rd: &'a [RdReport],
    pub events: &'a [EventRecord],
    /// When each fleet state arrived (run clock, seconds).
    pub fleet_at_s: &'a [f64],
    /// Model steps and rollout states, with their arrival (run clock, seconds).
    pub model_statuses: &'a [(f64, ModelStatus)],
    pub rollouts: &'a [(f64, RolloutState)],
    /// Squared errors (noise sigmas) and samples by second of stream time.
    pub distortion_by_second: &'a BTreeMap<i64, (f64, u64)>,
    pub wall_s: f64,
}

impl RunData<'_> {
    /// The budget in force at simulation time `t`.
    fn budget_at(&self, t: f64) -> f64 {
        self.scenario
            .events
            .iter()
            .filter(|e| e.at_s <= t)
            .filter_map(|e| match e.event {
                Event::SetBudget { bps } => Some((e.at_s, bps)),
                _ => None,
            })
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map_or(self.scenario.coordinator.fleet_budget_bps, |(_, bps)| bps)
    }

    /// The first fleet state that arrived after `wall_s` and satisfies `pred`: seconds later.
    fn fleet_after(&self, wall_s: f64, pred: impl Fn(&FleetState) -> bool) -> Option<f64> {
        self.fleet
            .iter()
            .zip(self.fleet_at_s)
            .find(|(f, at)| **at >= wall_s && pred(f))
            .map(|(_, &at)| at - wall_s)
    }

    /// Seconds after `wall_s` until every one of `nodes` has reported an empty offline queue
    /// in a metrics report of stream time `from_s` or later (a report written before the
    /// outage, even one delivered after it, says nothing of the queue it built).
    fn drained_after(&self, wall_s: f64, from_s: f64, nodes: &[&str]) -> Option<f64> {
        let mut latest: f64 = 0.0;
        for node in nodes {
            let first = self.metrics.iter().zip(self.metrics_at_s).find(|(m, at)| {
                **at >= wall_s && m.node == *node && m.t_stream_s >= from_s && m.spool_queued == 0
            })?;
            latest = latest.max(first.1 - wall_s);
        }
        Some(latest)
    }

    fn fault_rows(&self) -> Vec<String> {
        let after = |d: Option<f64>| d.map_or("never".to_owned(), |d| format!("{d:.2} s"));
        self.events
            .iter()
            .map(|e| {
                let at = e.wall_s;
                let effect = match &e.event {
                    Event::KillNode { node } => {
                        let lost: u64 = self.rows.iter().filter(|r| &r.node == node).map(|r| r.frames_lost).sum();
                        let detected = self.fleet_after(at, |f| f.offline.contains(node));
                        format!(
                            "declared offline after {}; {lost} of its frames lost (what it held in memory: the robot's broker kept the rest for it)",
                            after(detected)
                        )
                    }
                    Event::RestartNode { node } => {
                        format!("online again after {}", after(self.fleet_after(at, |f| f.online.contains(node))))
                    }
                    Event::SetBudget { bps } => {
                        let applied = self.fleet_after(at, |f| (f.fleet_budget_bps - bps).abs() < 1e-6);
                        format!("allocations follow after {}", after(applied))
                    }
                    Event::CutLink { node } => {
                        let detected = self.fleet_after(at, |f| f.offline.contains(node));
                        let queued = self
                            .metrics
                            .iter()
                            .filter(|m| &m.node == node)
                            .map(|m| m.spool_queued)
                            .max()
                            .unwrap_or(0);
                        format!(
                            "declared offline after {}; up to {queued} packets queued on disk",
                            after(detected)
                        )
                    }
                    Event::RestoreLink { node } => {
                        let back = self.fleet_after(at, |f| f.online.contains(node));
                        let drained = self.drained_after(at, e.at_s, &[node]);
                        format!(
                            "online again after {}, its queue drained after {}",
                            after(back),
                            after(drained)
                        )
                    }
                    Event::RestartBroker { down_s } => {
                        let names: Vec<&str> = self
                            .rows
                            .iter()
                            .filter(|r| r.node != "TOTAL")
                            .map(|r| r.node.as_str())
                            .collect::<std::collections::BTreeSet<_>>()
                            .into_iter()
                            .collect();
                        let nodes = names.len();
                        let back = self.fleet_after(at + down_s, |f| f.online.len() == nodes && f.offline.is_empty()).map(|d| d + down_s);
                        let drained = self.drained_after(at, e.at_s + down_s, &names);
                        format!(
                            "all {nodes} nodes online again after {}, queues drained after {} (from the start of the outage)",
                            after(back),
                            after(drained)
                        )
                    }
                    Event::DeployModel { node, .. } => {
                        let steps: Vec<String> = self
                            .model_statuses
                            .iter()
                            .filter(|(t, s)| *t >= at && &s.node == node && !s.version.is_empty())
                            .take(3)
                            .map(|(t, s)| format!("{:?} after {:.2} s ({})", s.state, t - at, s.reason))
                            .collect();
                        if steps.is_empty() {
                            "no word from the node".to_owned()
                        } else {
                            steps.join("; ")
                        }
                    }
                    Event::Rollout { .. } => {
                        let id = e.outcome.split_whitespace().nth(1).unwrap_or_default();
                        match self.rollouts.iter().filter(|(_, r)| r.id == id).find(|(_, r)| {
                            r.phase != lydlr_bus::messages::RolloutPhase::Running
                        }) {
                            Some((t, r)) => format!(
                                "{:?} after {:.2} s, {} of {} nodes healthy{}",
                                r.phase,
                                t - at,
                                r.nodes.iter().filter(|n| n.state == lydlr_bus::messages::NodeRolloutState::Healthy).count(),
                                r.nodes.len(),
                                if r.reason.is_empty() { String::new() } else { format!(": {}", r.reason) }
                            ),
                            None => "still running at the end of the run".to_owned(),
                        }
                    }
                    Event::LoadScript { node, script } => {
                        let name = std::path::Path::new(script)
                            .file_stem()
                            .and_then(|s| s.to_str())
                            .unwrap_or_default();
                        let status = self
                            .metrics
                            .iter()
                            .filter(|m| &m.node == node)
                            .flat_map(|m| &m.scripts)
                            .rfind(|s| s.name == name);
                        match status {
                            Some(s) if !s.enabled => format!(
                                "disabled: {}; frames went on",
                                s.error.as_deref().unwrap_or("no reason given")
                            ),
                            Some(s) => format!("running ({} calls)", s.calls),
                            None => "never reported".to_owned(),
                        }
                    }
                };
                format!("| {:.1} s | {} | {} | {} |", e.at_s, e.event, e.outcome, effect)
            })
            .collect()
    }
}

/// A node's last report in one second: sequence, delivered and allocated bit/s, mean rung.
/// One node's latest report in a second: sequence number, delivered and target rates, mean
/// rung, and whether every stream was at the lossless rung.
type NodeSecond = (u64, f64, f64, f64, bool);

/// One plotted line: label, colour, points.
pub type Series<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

/// The fleet in one second of stream time.
#[derive(Debug, Clone, Copy, PartialEq)]
struct FleetSecond {
    t: f64,
    delivered_bps: f64,
    allocated_bps: f64,
    mean_level: f64,
    /// Every live stream was coded losslessly: the fleet sent all it had, whatever the budget.
    all_lossless: bool,
    /// Nodes reporting: a node that leaves or joins changes the fleet as a budget change does.
    nodes: usize,
}

/// Fleet delivered rate per second of stream time, from each node's latest report in it.
fn delivered_series(metrics: &[NodeMetrics]) -> Vec<FleetSecond> {
    let mut by_second: BTreeMap<i64, BTreeMap<&str, NodeSecond>> = BTreeMap::new();
    for m in metrics {
        let second = m.t_stream_s.ceil() as i64;
        let delivered: f64 = m.streams.iter().map(|s| s.delivered_bps).sum();
        let target: f64 = m.streams.iter().map(|s| s.target_bps).sum();
        let level = m.streams.iter().map(|s| f64::from(s.level)).sum::<f64>()
            / m.streams.len().max(1) as f64;
        let lossless = m.streams.iter().all(|s| s.level == 0);
        let slot = by_second.entry(second).or_default();
        let entry = slot.entry(&m.node).or_insert((0, 0.0, 0.0, 0.0, true));
        if m.seq >= entry.0 {
            *entry = (m.seq, delivered, target, level, lossless);
        }
    }
    // A node whose report for a second went missing (reports land near second boundaries)
    // counts with its previous second's values; one silent for longer (killed) does not.
    let mut last: BTreeMap<&str, (i64, NodeSecond)> = BTreeMap::new();
    let mut out = Vec::with_capacity(by_second.len());
    for (second, nodes) in by_second {
        for (node, values) in nodes {
            last.insert(node, (second, values));
        }
        let live: Vec<&NodeSecond> = last
            .values()
            .filter(|(at, _)| *at >= second - 1)
            .map(|(_, v)| v)
            .collect();
        let n = live.len().max(1) as f64;
        out.push(FleetSecond {
            t: second as f64,
            delivered_bps: live.iter().map(|v| v.1).sum(),
            allocated_bps: live.iter().map(|v| v.2).sum(),
            mean_level: live.iter().map(|v| v.3).sum::<f64>() / n,
            all_lossless: live.iter().all(|v| v.4),
            nodes: live.len(),
        });
    }
    out
}

/// How the delivered rate kept to the budget, over the trailing 2 s windows that are judged.
#[derive(Debug, Clone, Copy, PartialEq)]
struct BudgetKeeping {
    /// Windows in which the budget bound (some stream was coded lossy): lowest and highest
    /// deviation from the budget, percent.
    binding: Option<(f64, f64)>,
    binding_windows: usize,
    /// Windows in which every stream was lossless throughout (the fleet needed less than the
    /// budget): highest deviation, which must stay below the tolerance; falling short of the
    /// budget there is no fault, there was nothing more to send.
    unbound_highest: Option<f64>,
    unbound_windows: usize,
}

/// Judges each second's trailing 2 s window once the first allocation after the start, after
/// each budget change and after each node that left or joined has had a full window
/// (`lag_s`) to show.
fn budget_keeping(
    series: &[FleetSecond],
    budget_at: impl Fn(f64) -> f64,
    budget_changes: &[f64],
    lag_s: f64,
) -> BudgetKeeping {
    let mut keeping = BudgetKeeping {
        binding: None,
        binding_windows: 0,
        unbound_highest: None,
        unbound_windows: 0,
    };
    let Some(first) = series.iter().find(|p| p.allocated_bps > 0.0) else {
        return keeping;
    };
    let membership_changes = series
        .windows(2)
        .filter(|w| w[0].nodes != w[1].nodes)
        .map(|w| w[1].t);
    let changes: Vec<f64> = budget_changes
        .iter()
        .copied()
        .chain(membership_changes)
        .collect();
    let settled =
        |t: f64| t >= first.t + lag_s && !changes.iter().any(|c| t >= *c && t < c + lag_s);
    for (i, p) in series.iter().enumerate() {
        if !settled(p.t) {
            continue;
        }
        let budget = budget_at(p.t);
        let deviation = (p.delivered_bps - budget) / budget * 100.0;
        // The window reaches back two seconds: lossless throughout means this second and the
        // one before it.
        let unbound = p.all_lossless && i > 0 && series[i - 1].all_lossless;
        if unbound && deviation < 0.0 {
            keeping.unbound_windows += 1;
            keeping.unbound_highest = Some(
                keeping
                    .unbound_highest
                    .map_or(deviation, |h| h.max(deviation)),
            );
        } else {
            keeping.binding_windows += 1;
            keeping.binding = Some(keeping.binding.map_or((deviation, deviation), |(lo, hi)| {
                (lo.min(deviation), hi.max(deviation))
            }));
        }
    }
    keeping
}

type Chart<'b, 'a, X, Y> = ChartContext<
    'b,
    SVGBackend<'a>,
    Cartesian2d<<X as AsRangedCoord>::CoordDescType, <Y as AsRangedCoord>::CoordDescType>,
>;

/// The common frame of every plot: a white 860x420 SVG, a caption, and axes with labels.
fn chart<'b, 'a: 'b, X, Y>(
    root: &'b DrawingArea<SVGBackend<'a>, plotters::coord::Shift>,
    caption: &str,
    (x, x_desc): (X, &str),
    (y, y_desc): (Y, &str),
) -> anyhow::Result<Chart<'b, 'a, X, Y>>
where
    X: AsRangedCoord,
    Y: AsRangedCoord,
    X::CoordDescType: ValueFormatter<X::Value>,
    Y::CoordDescType: ValueFormatter<Y::Value>,
{
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(root)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()?;
    Ok(chart)
}

/// Draws the series' legend and writes the SVG.
fn legend_and_save<'b, 'a: 'b, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'b, SVGBackend<'a>, Cartesian2d<X, Y>>,
    root: &DrawingArea<SVGBackend<'a>, plotters::coord::Shift>,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;
    root.present()?;
    Ok(())
}

fn line_chart(path: &Path, caption: &str, y_desc: &str, series: &[Series]) -> anyhow::Result<()> {
    xy_chart(path, caption, "stream time (s)", y_desc, series)
}

/// Lines of `(x, y)` points on one chart, the y axis from zero.
pub fn xy_chart(
    path: &Path,
    caption: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
) -> anyhow::Result<()> {
    let x_max = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let y_max = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.1))
        .fold(1e-9f64, f64::max)
        * 1.15;
    let root = SVGBackend::new(path, (860, 420)).into_drawing_area();
    let mut chart = chart(&root, caption, (0f64..x_max, x_desc), (0f64..y_max, y_desc))?;
    for (name, color, points) in series {
        let color = *color;
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    legend_and_save(&mut chart, &root)
}

/// Operating points of every stream (from the nodes' last reports): rate against distortion.
fn rd_chart(path: &Path, rd: &[RdReport]) -> anyhow::Result<()> {
    let mut curves: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for report in rd {
        for s in &report.streams {
            let curve = curves.entry(s.stream.clone()).or_default();
            for p in &s.points {
                curve.push((p.bits_per_second / 1000.0, p.distortion));
            }
        }
    }
    let x_max = curves
        .values()
        .flatten()
        .map(|p| p.0)
        .fold(1e-9f64, f64::max)
        * 1.1;
    let y_max = curves
        .values()
        .flatten()
        .map(|p| p.1)
        .fold(1e-9f64, f64::max)
        * 1.15;
    let root = SVGBackend::new(path, (860, 420)).into_drawing_area();
    let mut chart = chart(
        &root,
        "operating points per stream (all nodes)",
        (0f64..x_max, "rate (kbit/s)"),
        (0f64..y_max, "RMS error / noise sigma"),
    )?;
    let palette = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    for (i, (stream, points)) in curves.iter().enumerate() {
        let color = palette[i % palette.len()];
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?
            .label(stream.as_str())
            .legend(move |(x, y)| Circle::new((x + 10, y), 3, color.filled()));
    }
    legend_and_save(&mut chart, &root)
}

/// Histogram of the per-report encode latency p99 over all nodes and streams.
fn latency_chart(path: &Path, metrics: &[NodeMetrics]) -> anyhow::Result<()> {
    let values: Vec<f64> = metrics
        .iter()
        .flat_map(|m| m.streams.iter().map(|s| s.encode_p99_us))
        .filter(|v| *v > 0.0)
        .collect();
    let max = values.iter().copied().fold(1.0f64, f64::max);
    let bins = 30usize;
    let width = max / bins as f64;
    let mut counts = vec![0u32; bins];
    for v in &values {
        counts[((v / width) as usize).min(bins - 1)] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(1).max(1);
    let root = SVGBackend::new(path, (860, 420)).into_drawing_area();
    let mut chart = chart(
        &root,
        "encode latency p99 per report (all nodes and streams)",
        (0f64..max, "microseconds"),
        (0u32..top + 1, "reports"),
    )?;
    chart.draw_series(counts.iter().enumerate().map(|(i, &c)| {
        let x0 = i as f64 * width;
        Rectangle::new([(x0, 0), (x0 + width * 0.9, c)], BLUE.mix(0.7).filled())
    }))?;
    root.present()?;
    Ok(())
}

/// Writes `report.md` and its plots into `dir`.
pub fn write_report(dir: &Path, run: &RunData) -> anyhow::Result<()> {
    let series = delivered_series(run.metrics);
    let budget: Vec<(f64, f64)> = series
        .iter()
        .map(|s| (s.t, run.budget_at(s.t) / 1000.0))
        .collect();
    line_chart(
        &dir.join("bandwidth.svg"),
        "fleet uplink: delivered rate against budget and allocation",
        "kbit/s",
        &[
            (
                "delivered",
                BLUE,
                series
                    .iter()
                    .map(|s| (s.t, s.delivered_bps / 1000.0))
                    .collect(),
            ),
            (
                "allocated",
                GREEN,
                series
                    .iter()
                    .map(|s| (s.t, s.allocated_bps / 1000.0))
                    .collect(),
            ),
            ("budget", RED, budget),
        ],
    )?;
    line_chart(
        &dir.join("quality.svg"),
        "mean quality rung over the fleet (0 = lossless)",
        "rung",
        &[(
            "mean rung",
            MAGENTA,
            series.iter().map(|s| (s.t, s.mean_level)).collect(),
        )],
    )?;
    line_chart(
        &dir.join("distortion.svg"),
        "delivered distortion: RMS error over the fleet, by second of stream time",
        "noise sigmas",
        &[(
            "RMS error",
            BLUE,
            run.distortion_by_second
                .iter()
                .map(|(s, (sq, n))| (*s as f64 + 1.0, (sq / (*n).max(1) as f64).sqrt()))
                .collect(),
        )],
    )?;
    rd_chart(&dir.join("rd.svg"), run.rd)?;
    latency_chart(&dir.join("latency.svg"), run.metrics)?;

    let s = run.scenario;
    let mut md = String::new();
    writeln!(md, "# {}\n\n{}\n", s.name, s.description)?;
    writeln!(
        md,
        "{} robots, {:.0} s simulated in {:.1} s wall, seed {}, fleet budget {:.1} kbit/s.\n",
        run.rows
            .iter()
            .filter(|r| r.node != "TOTAL")
            .map(|r| r.node.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        s.sim.duration_s,
        run.wall_s,
        s.sim.seed,
        s.coordinator.fleet_budget_bps / 1000.0
    )?;
    if let Some(total) = run.rows.iter().find(|r| r.node == "TOTAL") {
        writeln!(
            md,
            "**How much bandwidth:** {} of {} raw bytes sent (ratio {:.2}). **How much distortion:** RMS {:.3} noise sigmas, coarsest rung {}. **What broke:** {} frames lost, {} outside their contract.\n",
            total.compressed_bytes,
            total.raw_bytes,
            total.ratio,
            total.distortion_rms_sigma,
            total.max_level,
            total.frames_lost,
            total.frames_mismatched
        )?;
    }
    let changes: Vec<f64> = s
        .events
        .iter()
        .filter(|e| matches!(e.event, Event::SetBudget { .. }))
        .map(|e| e.at_s)
        .collect();
    // The coordinator answers within a period: a 2 s window plus one period after it.
    let lag = 2.0 + f64::from(s.coordinator.period_ms) / 1000.0;
    let keeping = budget_keeping(&series, |t| run.budget_at(t), &changes, lag);
    if let Some((low, high)) = keeping.binding {
        writeln!(
            md,
            "Delivered rate over trailing 2 s windows, one per second, leaving out the first window after the first allocation and after each budget change or node leaving or joining: between {low:+.1} % and {high:+.1} % of the budget in force in the {} windows where the budget bound.",
            keeping.binding_windows
        )?;
    }
    if let Some(high) = keeping.unbound_highest {
        writeln!(
            md,
            "In {} windows every stream was lossless and the fleet needed less than the budget (at most {high:+.1} % of it): nothing more to send.",
            keeping.unbound_windows
        )?;
    }
    writeln!(md)?;
    writeln!(md, "## Streams\n")?;
    writeln!(
        md,
        "| node | stream | produced | delivered | lost | outside contract | ratio | RMS / sigma | rung | encode p50 us | p99 us |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|")?;
    for r in run.rows {
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {:.2} | {:.3} | {} | {:.1} | {:.1} |",
            r.node,
            r.stream,
            r.frames_produced,
            r.frames_delivered,
            r.frames_lost,
            r.frames_mismatched,
            r.ratio,
            r.distortion_rms_sigma,
            r.max_level,
            r.encode_p50_us,
            r.encode_p99_us
        )?;
    }
    writeln!(
        md,
        "\n## Bandwidth\n\n![bandwidth](bandwidth.svg)\n\n![quality](quality.svg)\n\n![distortion](distortion.svg)\n"
    )?;
    writeln!(md, "## Rate and distortion\n\n![rd](rd.svg)\n")?;
    writeln!(md, "## Encode latency\n\n![latency](latency.svg)\n")?;
    if run.events.is_empty() {
        writeln!(
            md,
            "## Faults\n\nNo faults were scheduled in this scenario."
        )?;
    } else {
        writeln!(
            md,
            "## Faults and events\n\n| at (sim) | event | outcome | effect |\n|---|---|---|---|"
        )?;
        for row in run.fault_rows() {
            writeln!(md, "{row}")?;
        }
    }
    std::fs::write(dir.join("report.md"), md).context("writing report.md")?;
    Ok(())
}

/// A baseline row with its tolerances.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineRow {
    pub node: String,
    pub stream: String,
    pub ratio: f64,
    pub distortion_rms_sigma: f64,
    pub frames_lost: u64,
    pub encode_p99_us: f64,
    /// Largest allowed drop of the ratio, percent.
    pub max_ratio_drop_pct: f64,
    /// Largest allowed rise of the RMS distortion, in noise sigmas.
    pub max_distortion_rise: f64,
    pub max_lost_rise: u64,
    /// The p99 encode latency regresses only when it rises by more than this percentage
    /// *and* this many microseconds: latency varies by machine and load, and the p99 of a
    /// slow stream's few packets is one scheduling hiccup away from its maximum (a run faster
    /// than real time on two cores preempts encoders now and then: milliseconds, not a
    /// regression). The default, 10 ms, is a twentieth of a 200 ms block.
    pub max_p99_rise_pct: f64,
    pub max_p99_rise_us: f64,
}

const BASELINE_HEADER: &str = "node,stream,ratio,distortion_rms_sigma,frames_lost,encode_p99_us,max_ratio_drop_pct,max_distortion_rise,max_lost_rise,max_p99_rise_pct,max_p99_rise_us";

/// Reads a run's `summary.csv` (as written by `outputs::write_summary_csv`).
pub fn read_summary(path: &Path) -> anyhow::Result<Vec<BTreeMap<String, String>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().context("empty summary")?.split(',').collect();
    lines
        .enumerate()
        .map(|(i, line)| {
            let cells: Vec<&str> = line.split(',').collect();
            if cells.len() != header.len() {
                bail!(
                    "{}: row {} has {} cells, the header {}",
                    path.display(),
                    i + 2,
                    cells.len(),
                    header.len()
                );
            }
            Ok(header
                .iter()
                .map(|h| (*h).to_owned())
                .zip(cells.iter().map(|c| (*c).to_owned()))
                .collect())
        })
        .collect()
}

fn field<T: std::str::FromStr>(
    row: &BTreeMap<String, String>,
    name: &str,
    origin: &str,
) -> anyhow::Result<T> {
    row.get(name)
        .with_context(|| format!("{origin}: no column {name}"))?
        .parse()
        .map_err(|_| anyhow::anyhow!("{origin}: column {name} is not a number: {:?}", row[name]))
}

/// Writes a baseline from a run directory, with default tolerances.
pub fn write_baseline(run_dir: &Path, out: &Path) -> anyhow::Result<usize> {
    let origin = run_dir.join("summary.csv");
    let rows = read_summary(&origin)?;
    let mut csv = String::from(BASELINE_HEADER);
    csv.push('\n');
    for row in &rows {
        let o = origin.display().to_string();
        writeln!(
            csv,
            "{},{},{},{},{},{},2,0.05,0,400,10000",
            row.get("node").context("no node")?,
            row.get("stream").context("no stream")?,
            field::<f64>(row, "ratio", &o)?,
            field::<f64>(row, "distortion_rms_sigma", &o)?,
            field::<u64>(row, "frames_lost", &o)?,
            field::<f64>(row, "encode_p99_us", &o)?,
        )?;
    }
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(out, csv).with_context(|| format!("writing {}", out.display()))?;
    Ok(rows.len())
}

pub fn read_baseline(path: &Path) -> anyhow::Result<Vec<BaselineRow>> {
    let o = path.display().to_string();
    read_summary(path)?
        .iter()
        .map(|row| {
            Ok(BaselineRow {
                node: row.get("node").cloned().context("no node")?,
                stream: row.get("stream").cloned().context("no stream")?,
                ratio: field(row, "ratio", &o)?,
                distortion_rms_sigma: field(row, "distortion_rms_sigma", &o)?,
                frames_lost: field(row, "frames_lost", &o)?,
                encode_p99_us: field(row, "encode_p99_us", &o)?,
                max_ratio_drop_pct: field(row, "max_ratio_drop_pct", &o)?,
                max_distortion_rise: field(row, "max_distortion_rise", &o)?,
                max_lost_rise: field(row, "max_lost_rise", &o)?,
                max_p99_rise_pct: field(row, "max_p99_rise_pct", &o)?,
                max_p99_rise_us: field(row, "max_p99_rise_us", &o)?,
            })
        })
        .collect()
}

/// Compares a run with a baseline; returns the lines to print and whether anything regressed.
pub fn compare(baseline: &Path, run_dir: &Path) -> anyhow::Result<(Vec<String>, bool)> {
    let base = read_baseline(baseline)?;
    let run_path = run_dir.join("summary.csv");
    let run = read_summary(&run_path)?;
    let o = run_path.display().to_string();
    let mut lines = Vec::new();
    let mut regressed = false;
    for b in &base {
        let Some(r) = run
            .iter()
            .find(|r| r.get("node") == Some(&b.node) && r.get("stream") == Some(&b.stream))
        else {
            lines.push(format!(
                "REGRESSION {}/{}: missing from the run",
                b.node, b.stream
            ));
            regressed = true;
            continue;
        };
        let ratio: f64 = field(r, "ratio", &o)?;
        let distortion: f64 = field(r, "distortion_rms_sigma", &o)?;
        let lost: u64 = field(r, "frames_lost", &o)?;
        let p99: f64 = field(r, "encode_p99_us", &o)?;
        let checks = [
            (
                "ratio",
                format!("{:.3} -> {:.3}", b.ratio, ratio),
                (b.ratio - ratio) / b.ratio.max(1e-12) * 100.0 > b.max_ratio_drop_pct,
            ),
            (
                "distortion",
                format!("{:.3} -> {:.3}", b.distortion_rms_sigma, distortion),
                distortion - b.distortion_rms_sigma > b.max_distortion_rise,
            ),
            (
                "lost frames",
                format!("{} -> {}", b.frames_lost, lost),
                lost > b.frames_lost + b.max_lost_rise,
            ),
            (
                "encode p99 us",
                format!("{:.1} -> {:.1}", b.encode_p99_us, p99),
                b.encode_p99_us > 0.0
                    && (p99 - b.encode_p99_us) / b.encode_p99_us * 100.0 > b.max_p99_rise_pct
                    && p99 - b.encode_p99_us > b.max_p99_rise_us,
            ),
        ];
        for (what, change, bad) in checks {
            if bad {
                regressed = true;
                lines.push(format!(
                    "REGRESSION {}/{} {what}: {change}",
                    b.node, b.stream
                ));
            } else if !change
                .split(" -> ")
                .collect::<Vec<_>>()
                .windows(2)
                .all(|w| w[0] == w[1])
            {
                lines.push(format!(
                    "changed    {}/{} {what}: {change}",
                    b.node, b.stream
                ));
            }
        }
    }
    if lines.is_empty() {
        lines.push(format!("no change against {}", baseline.display()));
    }
    Ok((lines, regressed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_dir(tag: &str, imu_ratio: f64, lost: u64) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("lydlr-report-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let csv = format!(
            "node,stream,frames_produced,frames_delivered,frames_lost,frames_mismatched,raw_bytes,compressed_bytes,ratio,distortion_rms_sigma,max_level,encode_p50_us,encode_p99_us\n\
             robot-00,imu,100,{d},{lost},0,3200,700,{imu_ratio},0.0,0,10.0,40.0\n\
             TOTAL,all,100,{d},{lost},0,3200,700,{imu_ratio},0.0,0,10.0,40.0\n",
            d = 100 - lost
        );
        std::fs::write(dir.join("summary.csv"), csv).unwrap();
        dir
    }

    fn report(node: &str, seq: u64, t: f64, delivered: f64) -> NodeMetrics {
        NodeMetrics {
            node: node.into(),
            seq,
            t_stream_s: t,
            streams: vec![lydlr_bus::messages::StreamMetrics {
                stream: "imu".into(),
                delivered_bps: delivered,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn only_windows_where_the_budget_binds_must_reach_it() {
        let second = |t: f64, delivered: f64, all_lossless: bool| FleetSecond {
            t,
            delivered_bps: delivered,
            allocated_bps: 100.0,
            mean_level: if all_lossless { 0.0 } else { 1.0 },
            all_lossless,
            nodes: if t < 9.0 { 2 } else { 1 },
        };
        let series = [
            second(1.0, 10.0, true), // before the first window is judged
            second(2.0, 50.0, true),
            second(3.0, 80.0, true), // lossless for two seconds: short of the budget, no fault
            second(4.0, 90.0, false),
            second(5.0, 104.0, false),
            second(6.0, 60.0, true), // lossless now, lossy a second ago: judged as binding
            second(7.0, 55.0, false), // inside the lag after the change at 6.5 s
            second(8.0, 51.0, false),
        ];
        let budget = |t: f64| if t < 6.5 { 100.0 } else { 50.0 };
        let keeping = budget_keeping(&series, budget, &[6.5], 1.5);
        assert_eq!(keeping.unbound_windows, 1);
        assert_eq!(keeping.unbound_highest, Some(-20.0));
        assert_eq!(keeping.binding_windows, 4);
        let (low, high) = keeping.binding.unwrap();
        assert!(
            (low + 40.0).abs() < 1e-9 && (high - 4.0).abs() < 1e-9,
            "{low} {high}"
        );
        // A node that leaves is a change too: its first windows are not judged.
        let mut left = series.to_vec();
        left.push(second(9.0, 10.0, false));
        left.push(second(10.0, 49.0, false));
        let keeping = budget_keeping(&left, budget, &[6.5], 1.5);
        assert_eq!(keeping.binding_windows, 4);
        // Lossless but over the budget is still judged.
        let over = [
            second(1.0, 100.0, true),
            second(3.0, 120.0, true),
            second(4.0, 120.0, true),
        ];
        let keeping = budget_keeping(&over, |_| 100.0, &[], 1.0);
        assert_eq!(keeping.unbound_windows, 0);
        assert_eq!(keeping.binding, Some((20.0, 20.0)));
    }

    #[test]
    fn a_missing_report_is_carried_but_a_dead_node_drops_out() {
        let metrics = vec![
            report("a", 1, 1.0, 100.0),
            report("b", 1, 1.0, 50.0),
            report("a", 2, 2.0, 100.0), // b's second-2 report went missing
            report("a", 3, 3.0, 100.0),
            report("b", 2, 3.0, 60.0),
            report("a", 4, 4.0, 100.0), // b is dead from here on
            report("a", 5, 5.0, 100.0),
        ];
        let totals: Vec<f64> = delivered_series(&metrics)
            .iter()
            .map(|p| p.delivered_bps)
            .collect();
        assert_eq!(totals, vec![150.0, 150.0, 160.0, 160.0, 100.0]);
    }

    #[test]
    fn the_gate_passes_an_identical_run_and_catches_each_regression() {
        let base_run = run_dir("base", 4.0, 0);
        let baseline = base_run.join("baseline.csv");
        assert_eq!(write_baseline(&base_run, &baseline).unwrap(), 2);
        let (_, regressed) = compare(&baseline, &base_run).unwrap();
        assert!(!regressed);
        // A 1 % drop is within the 2 % tolerance, a 3 % drop is not.
        let (_, regressed) = compare(&baseline, &run_dir("small", 3.96, 0)).unwrap();
        assert!(!regressed);
        let (lines, regressed) = compare(&baseline, &run_dir("drop", 3.88, 0)).unwrap();
        assert!(
            regressed
                && lines
                    .iter()
                    .any(|l| l.contains("REGRESSION robot-00/imu ratio")),
            "{lines:?}"
        );
        let (lines, regressed) = compare(&baseline, &run_dir("lost", 4.0, 1)).unwrap();
        assert!(
            regressed && lines.iter().any(|l| l.contains("lost frames")),
            "{lines:?}"
        );
        // A malformed baseline is an error, not a pass.
        std::fs::write(&baseline, "node,stream\nrobot-00\n").unwrap();
        assert!(compare(&baseline, &base_run).is_err());
    }
}
