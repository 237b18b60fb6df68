//! Run outputs: `summary.csv` and `metrics.parquet` (Polars), `recording.rrd` (Rerun), and
//! the table printed at the end of a run.

use std::fs::File;
use std::path::Path;

use anyhow::Context;
use lydlr_bus::messages::NodeMetrics;
use lydlr_codec::StreamSchema;
use lydlr_sim::{Pose2, StreamId};
use polars::prelude::*;

use crate::sink::{GroundTruth, SinkReport};

/// One line of `summary.csv`: a (node, stream), or the `TOTAL` over all of them.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRow {
    pub node: String,
    pub stream: String,
    pub frames_produced: u64,
    pub frames_delivered: u64,
    pub frames_lost: u64,
    pub frames_mismatched: u64,
    /// Values at the stream's sample type plus an 8-byte timestamp per frame.
    pub raw_bytes: u64,
    pub compressed_bytes: u64,
    pub ratio: f64,
    /// RMS error in units of the channels' noise sigma (0 when every packet was lossless).
    pub distortion_rms_sigma: f64,
    /// Coarsest quality-ladder rung used (0 = lossless throughout).
    pub max_level: u8,
    pub encode_p50_us: f64,
    pub encode_p99_us: f64,
}

pub fn summary_rows(
    names: &[String],
    schemas: &[StreamSchema],
    truth: &GroundTruth,
    report: &SinkReport,
    finals: &[NodeMetrics],
) -> Vec<SummaryRow> {
    let mut rows = Vec::new();
    for name in names {
        let node_metrics = finals.iter().find(|m| &m.node == name);
        for schema in schemas {
            let produced = truth.produced(name, &schema.name) as u64;
            let delivery = report
                .delivery
                .get(&(name.clone(), schema.name.clone()))
                .cloned()
                .unwrap_or_default();
            let latency =
                node_metrics.and_then(|m| m.streams.iter().find(|s| s.stream == schema.name));
            // A replayed robot has its recording's stream only.
            if produced == 0 && delivery.frames == 0 && latency.is_none() {
                continue;
            }
            let raw_bytes = produced * (8 + schema.raw_value_bytes()) as u64;
            rows.push(SummaryRow {
                node: name.clone(),
                stream: schema.name.clone(),
                frames_produced: produced,
                frames_delivered: delivery.frames,
                frames_lost: produced.saturating_sub(delivery.frames),
                frames_mismatched: delivery.mismatched,
                raw_bytes,
                compressed_bytes: delivery.compressed_bytes,
                ratio: ratio(raw_bytes, delivery.compressed_bytes),
                distortion_rms_sigma: rms(delivery.squared_error_sigma, delivery.samples),
                max_level: delivery.max_level,
                encode_p50_us: latency.map_or(0.0, |s| s.encode_p50_us),
                encode_p99_us: latency.map_or(0.0, |s| s.encode_p99_us),
            });
        }
    }
    let mut total = SummaryRow {
        node: "TOTAL".into(),
        stream: "all".into(),
        frames_produced: 0,
        frames_delivered: 0,
        frames_lost: 0,
        frames_mismatched: 0,
        raw_bytes: 0,
        compressed_bytes: 0,
        ratio: 0.0,
        distortion_rms_sigma: 0.0,
        max_level: 0,
        encode_p50_us: finals.iter().map(|m| m.encode_p50_us).fold(0.0, f64::max),
        encode_p99_us: finals.iter().map(|m| m.encode_p99_us).fold(0.0, f64::max),
    };
    for r in &rows {
        total.frames_produced += r.frames_produced;
        total.frames_delivered += r.frames_delivered;
        total.frames_lost += r.frames_lost;
        total.frames_mismatched += r.frames_mismatched;
        total.raw_bytes += r.raw_bytes;
        total.compressed_bytes += r.compressed_bytes;
    }
    total.ratio = ratio(total.raw_bytes, total.compressed_bytes);
    let (sq, n) = report.delivery.values().fold((0.0, 0), |(sq, n), d| {
        (sq + d.squared_error_sigma, n + d.samples)
    });
    total.distortion_rms_sigma = rms(sq, n);
    total.max_level = rows.iter().map(|r| r.max_level).max().unwrap_or(0);
    rows.push(total);
    rows
}

fn rms(squares: f64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        (squares / n as f64).sqrt()
    }
}

fn ratio(raw: u64, compressed: u64) -> f64 {
    if compressed == 0 {
        0.0
    } else {
        raw as f64 / compressed as f64
    }
}

fn summary_frame(rows: &[SummaryRow]) -> PolarsResult<DataFrame> {
    let text = |f: fn(&SummaryRow) -> &str| rows.iter().map(f).collect::<Vec<_>>();
    let int = |f: fn(&SummaryRow) -> u64| rows.iter().map(f).collect::<Vec<_>>();
    let real = |f: fn(&SummaryRow) -> f64| rows.iter().map(f).collect::<Vec<_>>();
    DataFrame::new_infer_height(vec![
        Column::new("node".into(), text(|r| &r.node)),
        Column::new("stream".into(), text(|r| &r.stream)),
        Column::new("frames_produced".into(), int(|r| r.frames_produced)),
        Column::new("frames_delivered".into(), int(|r| r.frames_delivered)),
        Column::new("frames_lost".into(), int(|r| r.frames_lost)),
        Column::new("frames_mismatched".into(), int(|r| r.frames_mismatched)),
        Column::new("raw_bytes".into(), int(|r| r.raw_bytes)),
        Column::new("compressed_bytes".into(), int(|r| r.compressed_bytes)),
        Column::new("ratio".into(), real(|r| r.ratio)),
        Column::new(
            "distortion_rms_sigma".into(),
            real(|r| r.distortion_rms_sigma),
        ),
        Column::new(
            "max_level".into(),
            rows.iter()
                .map(|r| u32::from(r.max_level))
                .collect::<Vec<_>>(),
        ),
        Column::new("encode_p50_us".into(), real(|r| r.encode_p50_us)),
        Column::new("encode_p99_us".into(), real(|r| r.encode_p99_us)),
    ])
}

pub fn write_summary_csv(path: &Path, rows: &[SummaryRow]) -> anyhow::Result<()> {
    let mut df = summary_frame(rows)?;
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    CsvWriter::new(file).finish(&mut df)?;
    Ok(())
}

/// The metrics time series in long form: one row per (node, stream, report).
pub fn write_metrics_parquet(path: &Path, metrics: &[NodeMetrics]) -> anyhow::Result<()> {
    let mut sorted: Vec<&NodeMetrics> = metrics.iter().collect();
    sorted.sort_by(|a, b| a.node.cmp(&b.node).then(a.seq.cmp(&b.seq)));
    let rows: Vec<(&NodeMetrics, &lydlr_bus::messages::StreamMetrics)> = sorted
        .iter()
        .flat_map(|m| m.streams.iter().map(move |s| (*m, s)))
        .collect();
    let text = |f: fn(&(&NodeMetrics, &lydlr_bus::messages::StreamMetrics)) -> String| {
        rows.iter().map(f).collect::<Vec<_>>()
    };
    let int = |f: fn(&(&NodeMetrics, &lydlr_bus::messages::StreamMetrics)) -> u64| {
        rows.iter().map(f).collect::<Vec<_>>()
    };
    let real = |f: fn(&(&NodeMetrics, &lydlr_bus::messages::StreamMetrics)) -> f64| {
        rows.iter().map(f).collect::<Vec<_>>()
    };
    let mut df = DataFrame::new_infer_height(vec![
        Column::new("node".into(), text(|(m, _)| m.node.clone())),
        Column::new("stream".into(), text(|(_, s)| s.stream.clone())),
        Column::new("seq".into(), int(|(m, _)| m.seq)),
        Column::new("t_stream_s".into(), real(|(m, _)| m.t_stream_s)),
        Column::new("frames_in".into(), int(|(_, s)| s.frames_in)),
        Column::new("frames_out".into(), int(|(_, s)| s.frames_out)),
        Column::new("packets_out".into(), int(|(_, s)| s.packets_out)),
        Column::new("raw_bytes".into(), int(|(_, s)| s.raw_bytes)),
        Column::new("compressed_bytes".into(), int(|(_, s)| s.compressed_bytes)),
        Column::new("encode_p50_us".into(), real(|(_, s)| s.encode_p50_us)),
        Column::new("encode_p99_us".into(), real(|(_, s)| s.encode_p99_us)),
        Column::new("encode_max_us".into(), real(|(_, s)| s.encode_max_us)),
        Column::new(
            "level".into(),
            rows.iter()
                .map(|(_, s)| u32::from(s.level))
                .collect::<Vec<_>>(),
        ),
        Column::new("target_bps".into(), real(|(_, s)| s.target_bps)),
        Column::new("delivered_bps".into(), real(|(_, s)| s.delivered_bps)),
        Column::new("queue_depth".into(), int(|(m, _)| m.queue_depth)),
        Column::new("rejected".into(), int(|(m, _)| m.rejected)),
        Column::new("cpu_share".into(), real(|(m, _)| m.cpu_share)),
        Column::new("allocated_bps".into(), real(|(m, _)| m.allocated_bps)),
    ])?;
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    ParquetWriter::new(file).finish(&mut df)?;
    Ok(())
}

/// The summary as an aligned text table.
pub fn format_table(rows: &[SummaryRow]) -> String {
    let header = [
        "node",
        "stream",
        "produced",
        "delivered",
        "lost",
        "mismatch",
        "raw B",
        "comp B",
        "ratio",
        "rms/sigma",
        "rung",
        "p50 us",
        "p99 us",
    ];
    let cells: Vec<[String; 13]> = rows
        .iter()
        .map(|r| {
            [
                r.node.clone(),
                r.stream.clone(),
                r.frames_produced.to_string(),
                r.frames_delivered.to_string(),
                r.frames_lost.to_string(),
                r.frames_mismatched.to_string(),
                r.raw_bytes.to_string(),
                r.compressed_bytes.to_string(),
                format!("{:.2}", r.ratio),
                format!("{:.3}", r.distortion_rms_sigma),
                r.max_level.to_string(),
                format!("{:.1}", r.encode_p50_us),
                format!("{:.1}", r.encode_p99_us),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            cells
                .iter()
                .map(|c| c[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |items: Vec<&str>| {
        items
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if i < 2 {
                    format!("{s:<w$}", w = widths[i])
                } else {
                    format!("{s:>w$}", w = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for c in &cells {
        out.push_str(&line(c.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// `YYYYMMDDTHHMMSSZ` from the system clock (run directory names).
pub fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Writes `recording.rrd`: the arena, robot poses and trails, lidar scans as world points,
/// and every other sensor channel on the `sim_time` timeline.
pub struct Recorder {
    rec: rerun::RecordingStream,
    names: Vec<String>,
    /// Entity path per (robot, stream slot); `slot_of` maps a stream to its slot.
    sensor_paths: Vec<String>,
    slot_of: [Option<usize>; StreamId::ALL.len()],
    streams: usize,
    trails: Vec<Vec<[f32; 3]>>,
}

impl Recorder {
    pub fn create(
        path: &Path,
        names: &[String],
        streams: &[StreamId],
        schemas: &[StreamSchema],
        half_extents: [f32; 2],
    ) -> anyhow::Result<Recorder> {
        let rec = rerun::RecordingStreamBuilder::new("lydlr")
            .save(path)
            .with_context(|| format!("creating {}", path.display()))?;
        let [hx, hy] = half_extents;
        rec.log_static(
            "world/arena",
            &rerun::LineStrips3D::new([[
                [-hx, -hy, 0.0],
                [hx, -hy, 0.0],
                [hx, hy, 0.0],
                [-hx, hy, 0.0],
                [-hx, -hy, 0.0],
            ]]),
        )?;
        let mut slot_of = [None; StreamId::ALL.len()];
        for (slot, id) in streams.iter().enumerate() {
            slot_of[id.index()] = Some(slot);
        }
        let mut sensor_paths = Vec::new();
        for name in names {
            for schema in schemas {
                sensor_paths.push(format!("robots/{name}/{}", schema.name));
            }
        }
        Ok(Recorder {
            rec,
            names: names.to_vec(),
            sensor_paths,
            slot_of,
            streams: streams.len(),
            trails: vec![Vec::new(); names.len()],
        })
    }

    /// Logs one frame; lidar scans become points in the world frame (needs the pose).
    pub fn sensor(
        &self,
        t_ns: i64,
        robot: usize,
        stream: StreamId,
        values: &[f64],
        pose: Option<&Pose2>,
    ) {
        let Some(slot) = self.slot_of[stream.index()] else {
            return;
        };
        let Some(path) = self.sensor_paths.get(robot * self.streams + slot) else {
            return;
        };
        self.rec.set_duration_secs("sim_time", t_ns as f64 * 1e-9);
        if stream == StreamId::Lidar {
            let Some(pose) = pose else { return };
            let step = std::f64::consts::TAU / values.len().max(1) as f64;
            let points = values
                .iter()
                .enumerate()
                .filter(|(_, r)| **r > 0.0)
                .map(|(i, r)| {
                    let a = f64::from(pose.yaw) + i as f64 * step;
                    [
                        pose.x + (r * a.cos()) as f32,
                        pose.y + (r * a.sin()) as f32,
                        0.05,
                    ]
                });
            let _ = self.rec.log(
                format!("world/lidar/{}", self.names[robot]),
                &rerun::Points3D::new(points).with_radii([0.03]),
            );
        } else {
            let _ = self
                .rec
                .log(path.as_str(), &rerun::Scalars::new(values.iter().copied()));
        }
    }

    /// Logs everything one simulation step produced; poses every 20 steps.
    pub fn step(
        &mut self,
        swarm: &mut lydlr_sim::Swarm,
        step: u64,
        frames: &[lydlr_sim::SensorFrame],
    ) {
        let t = swarm.time_ns();
        let lidar = frames.iter().any(|f| f.stream == StreamId::Lidar);
        let poses = if lidar || step.is_multiple_of(20) {
            swarm.poses()
        } else {
            Vec::new()
        };
        for sf in frames {
            self.sensor(
                t,
                sf.robot,
                sf.stream,
                &sf.frame.values,
                poses.get(sf.robot),
            );
        }
        if step.is_multiple_of(20) {
            self.poses(t, &poses);
        }
    }

    pub fn poses(&mut self, t_ns: i64, poses: &[Pose2]) {
        self.rec.set_duration_secs("sim_time", t_ns as f64 * 1e-9);
        let points: Vec<[f32; 3]> = poses.iter().map(|p| [p.x, p.y, 0.0]).collect();
        let _ = self.rec.log(
            "world/robots",
            &rerun::Points3D::new(points.iter().copied())
                .with_labels(self.names.iter().map(String::as_str))
                .with_radii([0.2]),
        );
        for (trail, point) in self.trails.iter_mut().zip(&points) {
            trail.push(*point);
        }
        if self.trails.first().is_some_and(|t| t.len() % 10 == 0) {
            let _ = self.rec.log(
                "world/trails",
                &rerun::LineStrips3D::new(self.trails.iter().map(|t| t.iter().copied())),
            );
        }
    }

    pub fn finish(self) -> anyhow::Result<()> {
        self.rec.flush_blocking()?;
        Ok(())
    }

    /// The recording, for the sink to add what it decoded and what the coordinator did.
    pub fn stream(&self) -> rerun::RecordingStream {
        self.rec.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamp_has_the_expected_shape() {
        let s = utc_stamp();
        assert_eq!(s.len(), 16);
        assert!(s.starts_with("20") && s.ends_with('Z') && s.as_bytes()[8] == b'T');
    }
}
