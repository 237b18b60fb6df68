//! `lydlr sim`: a scenario's streams written to files, for training, evaluation and other
//! tools. CSV and parquet follow the external-data contract of ARCHITECTURE.md (one file per
//! robot and stream, first column `t` in seconds, then one column per channel); MCAP holds
//! every stream of every robot, one JSON message per frame, viewable in Foxglove.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use lydlr_codec::{Frame, StreamSchema};
use lydlr_sim::{SimConfig, Swarm};
use polars::prelude::*;

use crate::outputs::Recorder;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    Parquet,
    Mcap,
}

impl ExportFormat {
    /// `.mcap` means MCAP; anything else needs `--format` or defaults to CSV.
    pub fn infer(out: &Path, explicit: Option<&str>) -> anyhow::Result<ExportFormat> {
        Ok(match explicit {
            Some("csv") => ExportFormat::Csv,
            Some("parquet") => ExportFormat::Parquet,
            Some("mcap") => ExportFormat::Mcap,
            Some(other) => bail!("unknown format {other:?}: use csv, parquet or mcap"),
            None if out.extension().is_some_and(|e| e == "mcap") => ExportFormat::Mcap,
            None => ExportFormat::Csv,
        })
    }
}

/// Seconds as an exact decimal (`t_ns` has nanosecond resolution).
pub fn seconds(t_ns: i64) -> String {
    let sign = if t_ns < 0 { "-" } else { "" };
    let abs = t_ns.unsigned_abs();
    format!("{sign}{}.{:09}", abs / 1_000_000_000, abs % 1_000_000_000)
}

trait Sink {
    fn frame(&mut self, robot: usize, slot: usize, frame: &Frame) -> anyhow::Result<()>;
    fn finish(self: Box<Self>) -> anyhow::Result<Vec<PathBuf>>;
}

/// Runs the scenario's swarm and writes every stream, and a Rerun recording to `rrd` if
/// given; returns the files written.
pub fn export(
    config: &SimConfig,
    out: &Path,
    format: ExportFormat,
    rrd: Option<&Path>,
    progress: bool,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut swarm = Swarm::new(config)?;
    let names = swarm.robot_names();
    let schemas = swarm.schemas();
    let streams = swarm.streams();
    let mut recorder = match rrd {
        Some(path) => Some(Recorder::create(
            path,
            &names,
            &streams,
            &schemas,
            swarm.arena_half_extents(),
        )?),
        None => None,
    };
    let mut sink: Box<dyn Sink> = match format {
        ExportFormat::Csv => Box::new(CsvSink::create(out, &names, &schemas)?),
        ExportFormat::Parquet => Box::new(ParquetSink::new(out, &names, &schemas)),
        ExportFormat::Mcap => Box::new(McapSink::create(out, &names, &schemas)?),
    };
    let bar = if progress {
        ProgressBar::new(swarm.total_steps())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} sim {bar:40} {pos}/{len} steps  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    for step in 1..=swarm.total_steps() {
        swarm.step();
        let frames = swarm.drain_frames();
        if let Some(rec) = &mut recorder {
            rec.step(&mut swarm, step, &frames);
        }
        for sf in &frames {
            let slot = streams
                .iter()
                .position(|s| *s == sf.stream)
                .context("unknown stream")?;
            sink.frame(sf.robot, slot, &sf.frame)?;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mut files = sink.finish()?;
    if let (Some(rec), Some(path)) = (recorder, rrd) {
        rec.finish()?;
        files.push(path.to_path_buf());
    }
    Ok(files)
}

fn stream_path(dir: &Path, robot: &str, schema: &StreamSchema, extension: &str) -> PathBuf {
    dir.join(robot).join(format!("{}.{extension}", schema.name))
}

struct CsvSink {
    files: Vec<(PathBuf, BufWriter<File>)>,
    streams: usize,
}

impl CsvSink {
    fn create(dir: &Path, names: &[String], schemas: &[StreamSchema]) -> anyhow::Result<CsvSink> {
        let mut files = Vec::new();
        for name in names {
            std::fs::create_dir_all(dir.join(name))
                .with_context(|| format!("creating {}", dir.display()))?;
            for schema in schemas {
                let path = stream_path(dir, name, schema, "csv");
                let mut w = BufWriter::new(
                    File::create(&path).with_context(|| format!("creating {}", path.display()))?,
                );
                writeln!(w, "t,{}", schema.channels.join(","))?;
                files.push((path, w));
            }
        }
        Ok(CsvSink {
            files,
            streams: schemas.len(),
        })
    }
}

impl Sink for CsvSink {
    fn frame(&mut self, robot: usize, slot: usize, frame: &Frame) -> anyhow::Result<()> {
        let (_, w) = &mut self.files[robot * self.streams + slot];
        write!(w, "{}", seconds(frame.timestamp_ns))?;
        for v in &frame.values {
            // Rust prints the shortest decimal that parses back to the same f64.
            write!(w, ",{v}")?;
        }
        writeln!(w)?;
        Ok(())
    }

    fn finish(self: Box<Self>) -> anyhow::Result<Vec<PathBuf>> {
        let mut paths = Vec::new();
        for (path, mut w) in self.files {
            w.flush()?;
            paths.push(path);
        }
        Ok(paths)
    }
}

struct ParquetSink {
    dir: PathBuf,
    names: Vec<String>,
    schemas: Vec<StreamSchema>,
    frames: Vec<Vec<Frame>>,
}

impl ParquetSink {
    fn new(dir: &Path, names: &[String], schemas: &[StreamSchema]) -> ParquetSink {
        ParquetSink {
            dir: dir.to_path_buf(),
            names: names.to_vec(),
            schemas: schemas.to_vec(),
            frames: vec![Vec::new(); names.len() * schemas.len()],
        }
    }
}

impl Sink for ParquetSink {
    fn frame(&mut self, robot: usize, slot: usize, frame: &Frame) -> anyhow::Result<()> {
        self.frames[robot * self.schemas.len() + slot].push(frame.clone());
        Ok(())
    }

    fn finish(self: Box<Self>) -> anyhow::Result<Vec<PathBuf>> {
        let mut paths = Vec::new();
        for (i, frames) in self.frames.iter().enumerate() {
            let name = &self.names[i / self.schemas.len()];
            let schema = &self.schemas[i % self.schemas.len()];
            std::fs::create_dir_all(self.dir.join(name))?;
            let path = stream_path(&self.dir, name, schema, "parquet");
            let mut columns = vec![Column::new(
                "t".into(),
                frames
                    .iter()
                    .map(|f| f.timestamp_ns as f64 * 1e-9)
                    .collect::<Vec<f64>>(),
            )];
            for (c, channel) in schema.channels.iter().enumerate() {
                columns.push(Column::new(
                    channel.as_str().into(),
                    frames.iter().map(|f| f.values[c]).collect::<Vec<f64>>(),
                ));
            }
            let mut df = DataFrame::new_infer_height(columns)?;
            let file =
                File::create(&path).with_context(|| format!("creating {}", path.display()))?;
            ParquetWriter::new(file).finish(&mut df)?;
            paths.push(path);
        }
        Ok(paths)
    }
}

struct McapSink {
    path: PathBuf,
    writer: mcap::Writer<BufWriter<File>>,
    channels: Vec<u16>,
    channel_names: Vec<Vec<String>>,
    streams: usize,
    sequence: u32,
    line: Vec<u8>,
}

impl McapSink {
    fn create(path: &Path, names: &[String], schemas: &[StreamSchema]) -> anyhow::Result<McapSink> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = BufWriter::new(
            File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        // Single-threaded zstd, so the file is the same on every machine.
        let mut writer = mcap::WriteOptions::new()
            .compression_threads(0)
            .library("lydlr")
            .create(file)?;
        let mut channels = Vec::new();
        let mut channel_names = Vec::new();
        for schema in schemas {
            let properties: serde_json::Map<String, serde_json::Value> = std::iter::once("t")
                .chain(schema.channels.iter().map(String::as_str))
                .map(|c| (c.to_owned(), serde_json::json!({"type": "number"})))
                .collect();
            let json_schema = serde_json::json!({"type": "object", "properties": properties});
            let schema_id = writer.add_schema(
                &schema.name,
                "jsonschema",
                json_schema.to_string().as_bytes(),
            )?;
            for name in names {
                let mut metadata = BTreeMap::new();
                metadata.insert(
                    "lydlr.stream_schema".to_owned(),
                    serde_json::to_string(schema).unwrap_or_default(),
                );
                let topic = format!("/{name}/{}", schema.name);
                channels.push((
                    name.clone(),
                    writer.add_channel(schema_id, &topic, "json", &metadata)?,
                ));
            }
        }
        // Channels were added per schema then robot; index them per robot then schema.
        let mut by_robot = Vec::with_capacity(channels.len());
        for r in 0..names.len() {
            for s in 0..schemas.len() {
                by_robot.push(channels[s * names.len() + r].1);
            }
        }
        for schema in schemas {
            channel_names.push(schema.channels.clone());
        }
        Ok(McapSink {
            path: path.to_path_buf(),
            writer,
            channels: by_robot,
            channel_names,
            streams: schemas.len(),
            sequence: 0,
            line: Vec::new(),
        })
    }
}

impl Sink for McapSink {
    fn frame(&mut self, robot: usize, slot: usize, frame: &Frame) -> anyhow::Result<()> {
        self.line.clear();
        write!(self.line, "{{\"t\":{}", seconds(frame.timestamp_ns))?;
        for (name, v) in self.channel_names[slot].iter().zip(&frame.values) {
            if v.is_finite() {
                write!(self.line, ",\"{name}\":{v}")?;
            } else {
                write!(self.line, ",\"{name}\":null")?;
            }
        }
        self.line.push(b'}');
        self.sequence += 1;
        let time = u64::try_from(frame.timestamp_ns).unwrap_or(0);
        self.writer.write_to_known_channel(
            &mcap::records::MessageHeader {
                channel_id: self.channels[robot * self.streams + slot],
                sequence: self.sequence,
                log_time: time,
                publish_time: time,
            },
            &self.line,
        )?;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> anyhow::Result<Vec<PathBuf>> {
        self.writer.finish()?;
        Ok(vec![self.path])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_exact_decimals() {
        assert_eq!(seconds(0), "0.000000000");
        assert_eq!(seconds(5_000_000), "0.005000000");
        assert_eq!(seconds(-1_500_000_001), "-1.500000001");
        assert_eq!(seconds(i64::MIN), "-9223372036.854775808");
    }
}
