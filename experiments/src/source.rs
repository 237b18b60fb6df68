//! Where a run's sensor frames come from: the simulated swarm, or real recordings replayed
//! as robots (one robot per recording, its frames released when the replay clock reaches
//! their own timestamps, jitter and gaps included).

use std::path::Path;

use anyhow::Context;
use lydlr_codec::{Frame, SensorKind, StreamSchema};
use lydlr_sim::{SimConfig, StreamId, Swarm};
use serde::{Deserialize, Serialize};

use crate::outputs::Recorder;

/// A clocked producer of frames.
pub trait Source: Send {
    fn names(&self) -> Vec<String>;
    /// The transmitted streams' schemas; a frame's slot indexes them.
    fn schemas(&self) -> Vec<StreamSchema>;
    /// The slots of the streams robot `robot` has.
    fn streams_of(&self, robot: usize) -> Vec<usize> {
        let _ = robot;
        (0..self.schemas().len()).collect()
    }
    fn total_steps(&self) -> u64;
    fn step_ns(&self) -> u64;
    fn time_ns(&self) -> i64;
    /// Advances one step; the frames that became due, as (robot, slot, frame).
    fn step(&mut self) -> anyhow::Result<Vec<(usize, usize, Frame)>>;
    /// Closes side outputs (the Rerun recording).
    fn finish(&mut self) -> anyhow::Result<()>;
    /// The Rerun recording the source writes, if any.
    fn recording(&self) -> Option<rerun::RecordingStream> {
        None
    }
}

/// The simulated swarm, with its Rerun recording when asked for.
pub struct SimSource {
    swarm: Swarm,
    streams: Vec<StreamId>,
    slot_of: [Option<usize>; StreamId::ALL.len()],
    recorder: Option<Recorder>,
    steps: u64,
}

impl SimSource {
    pub fn new(config: &SimConfig, recording: Option<&Path>) -> anyhow::Result<SimSource> {
        let swarm = Swarm::new(config)?;
        let streams = swarm.streams();
        let mut slot_of = [None; StreamId::ALL.len()];
        for (slot, id) in streams.iter().filter(|id| id.is_transmitted()).enumerate() {
            slot_of[id.index()] = Some(slot);
        }
        let recorder = recording
            .map(|path| {
                Recorder::create(
                    path,
                    &swarm.robot_names(),
                    &streams,
                    &swarm.schemas(),
                    swarm.arena_half_extents(),
                )
            })
            .transpose()?;
        Ok(SimSource {
            swarm,
            streams,
            slot_of,
            recorder,
            steps: 0,
        })
    }
}

impl Source for SimSource {
    fn names(&self) -> Vec<String> {
        self.swarm.robot_names()
    }

    fn schemas(&self) -> Vec<StreamSchema> {
        // Ground truth (pose) stays on the robot's side; everything else goes to the nodes.
        self.streams
            .iter()
            .zip(self.swarm.schemas())
            .filter(|(id, _)| id.is_transmitted())
            .map(|(_, schema)| schema)
            .collect()
    }

    fn total_steps(&self) -> u64 {
        self.swarm.total_steps()
    }

    fn step_ns(&self) -> u64 {
        self.swarm.config().step_ns() as u64
    }

    fn time_ns(&self) -> i64 {
        self.swarm.time_ns()
    }

    fn step(&mut self) -> anyhow::Result<Vec<(usize, usize, Frame)>> {
        self.swarm.step();
        self.steps += 1;
        let t = self.swarm.time_ns();
        let frames = self.swarm.drain_frames();
        if let Some(rec) = &mut self.recorder {
            let lidar = frames.iter().any(|f| f.stream == StreamId::Lidar);
            let poses = if lidar || self.steps.is_multiple_of(20) {
                self.swarm.poses()
            } else {
                Vec::new()
            };
            for sf in &frames {
                rec.sensor(
                    t,
                    sf.robot,
                    sf.stream,
                    &sf.frame.values,
                    poses.get(sf.robot),
                );
            }
            if self.steps.is_multiple_of(20) {
                rec.poses(t, &poses);
            }
        }
        Ok(frames
            .into_iter()
            .filter_map(|sf| self.slot_of[sf.stream.index()].map(|slot| (sf.robot, slot, sf.frame)))
            .collect())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        match self.recorder.take() {
            Some(rec) => rec.finish(),
            None => Ok(()),
        }
    }

    fn recording(&self) -> Option<rerun::RecordingStream> {
        self.recorder.as_ref().map(Recorder::stream)
    }
}

/// `[replay]`: real recordings (CSV, parquet or MCAP in the external-data contract, as
/// `lydlr eval` reads them) replayed as robots instead of the simulator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaySection {
    pub files: Vec<String>,
    /// What the recordings hold (their schema's sensor kind).
    #[serde(default = "ReplaySection::default_kind")]
    pub kind: SensorKind,
}

impl ReplaySection {
    fn default_kind() -> SensorKind {
        SensorKind::Imu
    }
}

/// The robot that replays the `index`-th recording.
pub fn replay_robot_name(index: usize) -> String {
    format!("real-{index:02}")
}

/// The stream a recording becomes: its file name, reduced to a topic-safe name.
fn stream_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("stream");
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() {
        "stream".into()
    } else {
        name
    }
}

/// Recordings replayed on a 1 ms clock.
pub struct ReplaySource {
    robots: Vec<(String, StreamSchema, Vec<Frame>)>,
    cursors: Vec<usize>,
    time_ns: i64,
    steps: u64,
    /// The replayed signals (`robots/<robot>/<stream>`), which the sink's decoded ones join.
    recording: Option<rerun::RecordingStream>,
}

const REPLAY_STEP_NS: u64 = 1_000_000;

impl ReplaySource {
    /// Reads every recording; `duration_s` caps the replay. With `recording`, the replayed
    /// signals are also written there as a Rerun recording.
    pub fn new(
        section: &ReplaySection,
        duration_s: f64,
        recording: Option<&Path>,
    ) -> anyhow::Result<ReplaySource> {
        let mut robots = Vec::new();
        for (i, file) in section.files.iter().enumerate() {
            let path = Path::new(file);
            let table = crate::eval::table::read_tables(path)
                .with_context(|| format!("replay file {file}"))?
                .into_iter()
                .next()
                .with_context(|| format!("replay file {file} holds no stream"))?;
            let mut schema = table.schema(&stream_name(path));
            schema.kind = section.kind;
            let frames: Vec<Frame> = (0..table.samples()).map(|j| table.frame(j)).collect();
            robots.push((replay_robot_name(i), schema, frames));
        }
        let last_ns = robots
            .iter()
            .filter_map(|(_, _, f)| f.last().map(|f| f.timestamp_ns))
            .max()
            .unwrap_or(0);
        let span_s = (last_ns as f64 * 1e-9).min(duration_s);
        let steps = ((span_s * 1e9) / REPLAY_STEP_NS as f64).ceil() as u64 + 1;
        let recording = recording
            .map(|path| {
                rerun::RecordingStreamBuilder::new("lydlr")
                    .save(path)
                    .with_context(|| format!("creating {}", path.display()))
            })
            .transpose()?;
        Ok(ReplaySource {
            cursors: vec![0; robots.len()],
            robots,
            time_ns: 0,
            steps,
            recording,
        })
    }
}

impl Source for ReplaySource {
    fn names(&self) -> Vec<String> {
        self.robots.iter().map(|(n, _, _)| n.clone()).collect()
    }

    fn schemas(&self) -> Vec<StreamSchema> {
        self.robots.iter().map(|(_, s, _)| s.clone()).collect()
    }

    fn streams_of(&self, robot: usize) -> Vec<usize> {
        vec![robot]
    }

    fn total_steps(&self) -> u64 {
        self.steps
    }

    fn step_ns(&self) -> u64 {
        REPLAY_STEP_NS
    }

    fn time_ns(&self) -> i64 {
        self.time_ns
    }

    fn step(&mut self) -> anyhow::Result<Vec<(usize, usize, Frame)>> {
        let mut due = Vec::new();
        for (robot, (name, schema, frames)) in self.robots.iter().enumerate() {
            let cursor = &mut self.cursors[robot];
            while let Some(frame) = frames.get(*cursor)
                && frame.timestamp_ns <= self.time_ns
            {
                if let Some(rec) = &self.recording {
                    rec.set_duration_secs("sim_time", frame.timestamp_ns as f64 * 1e-9);
                    let _ = rec.log(
                        format!("robots/{name}/{}", schema.name),
                        &rerun::Scalars::new(frame.values.iter().copied()),
                    );
                }
                // Robot i replays recording i, which is stream slot i.
                due.push((robot, robot, frame.clone()));
                *cursor += 1;
            }
        }
        self.time_ns += REPLAY_STEP_NS as i64;
        Ok(due)
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        match self.recording.take() {
            Some(rec) => Ok(rec.flush_blocking()?),
            None => Ok(()),
        }
    }

    fn recording(&self) -> Option<rerun::RecordingStream> {
        self.recording.clone()
    }
}
