//! The synchronous core of a node: blocks, codec, counters. No I/O.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use lydlr_bus::messages::{
    Allocation, ModelState, ModelStatus, NodeMetrics, RawFrames, RdReport, StreamMetrics, StreamRd,
};
use lydlr_codec::{Codec, CodecId, Frame, QualityLadder, StreamSchema};

use crate::latency::Stopwatch;
use crate::models::{
    ActiveModel, DeployRequest, Health, HealthVerdict, ModelSlot, StreamCodec, first_miss,
};
use crate::rate::RateControl;
use crate::scripts::{FrameVerdict, ScriptHost, ScriptLimits};
use crate::{EdgeConfig, LatencyHistogram};

/// A packet ready to publish on `.../compressed/<stream>`.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedPacket {
    pub stream: String,
    pub bytes: Vec<u8>,
    pub frames: usize,
}

struct StreamState {
    schema: StreamSchema,
    pending: Vec<Frame>,
    counters: StreamMetrics,
    latency: LatencyHistogram,
    rate: RateControl,
}

/// Cuts each stream into blocks and encodes them.
pub struct Compressor {
    node: String,
    block_ns: i64,
    max_block_ns: i64,
    min_block_frames: usize,
    max_block_frames: usize,
    ladder: QualityLadder,
    streams: BTreeMap<String, StreamState>,
    /// Raw batches that arrived before their stream's schema.
    waiting: VecDeque<(String, RawFrames)>,
    max_waiting: usize,
    rejected: u64,
    newest_ns: Option<i64>,
    allocated_bps: f64,
    scripts: ScriptHost,
    dropped_by_scripts: u64,
    models: ModelSlot,
    /// The version the last block was coded with, and the one to roll back to.
    running: Option<Arc<ActiveModel>>,
    previous: Option<Arc<ActiveModel>>,
    health: Option<Health>,
    health_blocks: u32,
    latency_budget_us: f64,
    max_size_ratio: f64,
    model_events: Vec<ModelStatus>,
    model_keys: Vec<ed25519_dalek::VerifyingKey>,
    /// The rollout that last deployed each version, echoed in its statuses.
    rollouts: BTreeMap<String, String>,
}

impl Compressor {
    pub fn new(config: &EdgeConfig) -> Self {
        // The operator's keys sign both models and scripts; validated with the configuration.
        let operator_keys: Vec<ed25519_dalek::VerifyingKey> = config
            .model_keys
            .iter()
            .filter_map(|k| crate::models::parse_public_key(k).ok())
            .collect();
        let mut scripts = ScriptHost::new(ScriptLimits::default());
        scripts.require_signatures(operator_keys.clone());
        Self {
            node: config.node_id.clone(),
            block_ns: i64::from(config.block_ms) * 1_000_000,
            max_block_ns: i64::from(config.max_block_ms) * 1_000_000,
            min_block_frames: usize::from(config.min_block_frames),
            max_block_frames: usize::from(config.max_block_frames),
            ladder: QualityLadder::standard(),
            streams: BTreeMap::new(),
            waiting: VecDeque::new(),
            max_waiting: config.max_pending_messages,
            rejected: 0,
            newest_ns: None,
            allocated_bps: 0.0,
            scripts,
            dropped_by_scripts: 0,
            models: ModelSlot::default(),
            running: None,
            previous: None,
            health: None,
            health_blocks: config.health_blocks,
            latency_budget_us: config.latency_budget_us,
            max_size_ratio: config.health_max_size_ratio,
            model_events: Vec::new(),
            rollouts: BTreeMap::new(),
            model_keys: operator_keys,
        }
    }

    /// Where deployments store the version they switch to.
    pub fn model_slot(&self) -> ModelSlot {
        self.models.clone()
    }

    /// A deployment of `version` with the node's streams and recent frames, to prepare off
    /// the node's loop ([`crate::models::prepare`]).
    pub fn deploy_request(
        &mut self,
        root: PathBuf,
        version: String,
        files: Vec<(String, Vec<u8>)>,
    ) -> DeployRequest {
        DeployRequest {
            root,
            version,
            files,
            streams: self
                .streams
                .values_mut()
                .map(|s| (s.schema.clone(), s.rate.recent().to_vec()))
                .collect(),
            ladder: self.ladder.clone(),
            keys: self.model_keys.clone(),
        }
    }

    /// Remembers which rollout deployed `version` (`None`: a deploy of its own).
    pub fn tag_rollout(&mut self, version: &str, rollout: Option<String>) {
        match rollout {
            Some(id) => self.rollouts.insert(version.to_owned(), id),
            None => self.rollouts.remove(version),
        };
    }

    /// Records a model step to report on `.../model/status`.
    pub fn model_event(&mut self, version: &str, state: ModelState, reason: String) {
        let running = self.models.load_full();
        self.model_events.push(ModelStatus {
            node: self.node.clone(),
            version: version.to_owned(),
            state,
            running: running.as_ref().map(|m| m.version.clone()),
            reason,
            streams: running.map(|m| m.streams()).unwrap_or_default(),
            rollout: self.rollouts.get(version).cloned(),
        });
    }

    /// Model steps since the last call.
    pub fn take_model_events(&mut self) -> Vec<ModelStatus> {
        std::mem::take(&mut self.model_events)
    }

    /// Goes back to the version that ran before the current one (the classical codecs if
    /// none did); with `only`, only if that version is the one running.
    pub fn rollback(&mut self, reason: String, only: Option<&str>) {
        self.sync_model();
        let running = self.running.as_ref().map(|m| m.version.as_str());
        if let Some(version) = only
            && running != Some(version)
        {
            let running = running.unwrap_or("the classical codecs");
            self.model_event(
                version,
                ModelState::Rejected,
                format!("rollback of {version} refused: {running} is running"),
            );
            return;
        }
        let Some(from) = self.running.take() else {
            self.model_event("", ModelState::Rejected, "no model is running".into());
            return;
        };
        let to = self.previous.take();
        self.models.store(to.clone());
        self.running = to;
        self.health = None;
        self.model_event(&from.version, ModelState::RolledBack, reason);
    }

    /// Follows a switch made by a deployment: its health window starts.
    fn sync_model(&mut self) {
        let current = self.models.load_full();
        let same = match (&current, &self.running) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if same {
            return;
        }
        // A version still on probation is no place to roll back to.
        if self.health.is_none() {
            self.previous = self.running.take();
        }
        self.health = current.as_ref().map(|m| {
            Health::new(
                &m.version,
                self.health_blocks,
                self.latency_budget_us,
                self.max_size_ratio,
            )
        });
        self.running = current;
    }

    /// The node's user scripts.
    pub fn scripts(&mut self) -> &mut ScriptHost {
        &mut self.scripts
    }

    /// Name and version of the codecs in use, as reported in the node's status.
    pub fn codec_name(&self) -> String {
        format!("ladder/{}", self.ladder.rungs.len())
    }

    /// Counts a message the node could not use.
    pub fn reject(&mut self) {
        self.rejected += 1;
    }

    /// Takes the coordinator's allocation: a rate and a rung per stream.
    pub fn set_allocation(&mut self, allocation: Allocation) {
        self.allocated_bps = allocation.streams.iter().map(|s| s.target_bps).sum();
        for s in allocation.streams {
            if let Some(state) = self.streams.get_mut(&s.stream) {
                state.rate.allocate(s);
            }
        }
    }

    /// Operating points measured since the last call, if any.
    pub fn take_rd_report(&mut self) -> Option<RdReport> {
        let mut streams = Vec::new();
        let mut fresh = false;
        for (name, state) in &mut self.streams {
            fresh |= state.rate.fresh;
            state.rate.fresh = false;
            let points = state.rate.points();
            if !points.is_empty() {
                streams.push(StreamRd {
                    stream: name.clone(),
                    points,
                });
            }
        }
        fresh.then(|| RdReport {
            node: self.node.clone(),
            streams,
        })
    }

    /// Newest frame timestamp seen on any stream.
    pub fn stream_time_ns(&self) -> Option<i64> {
        self.newest_ns
    }

    /// Installs (or replaces) a stream's schema. Frames of the old schema are encoded first,
    /// and raw batches that waited for this schema are processed.
    pub fn set_schema(&mut self, stream: &str, schema: StreamSchema) -> Vec<EncodedPacket> {
        if schema.name != stream || schema.channels.is_empty() || schema.channels.len() > 4096 {
            self.reject();
            return Vec::new();
        }
        let mut out = Vec::new();
        match self.streams.get_mut(stream) {
            Some(state) if state.schema == schema => return out,
            Some(_) => {
                out.extend(self.close_block(stream));
                if let Some(state) = self.streams.get_mut(stream) {
                    state.schema = schema;
                }
            }
            None => {
                self.streams.insert(
                    stream.to_owned(),
                    StreamState {
                        counters: StreamMetrics {
                            stream: stream.to_owned(),
                            ..StreamMetrics::default()
                        },
                        schema,
                        pending: Vec::new(),
                        latency: LatencyHistogram::default(),
                        rate: RateControl::new(&self.ladder),
                    },
                );
            }
        }
        let (ready, still_waiting): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|(s, _)| s == stream);
        self.waiting = still_waiting;
        for (_, raw) in ready {
            out.extend(self.push_raw(stream, raw));
        }
        out
    }

    /// Adds a batch of raw frames; returns the packets of every block it closed.
    pub fn push_raw(&mut self, stream: &str, raw: RawFrames) -> Vec<EncodedPacket> {
        let Some(state) = self.streams.get_mut(stream) else {
            if self.waiting.len() >= self.max_waiting {
                self.reject();
            } else {
                self.waiting.push_back((stream.to_owned(), raw));
            }
            return Vec::new();
        };
        let channels = state.schema.channels.len();
        if raw.frames.iter().any(|f| f.values.len() != channels) {
            self.reject();
            return Vec::new();
        }
        let frame_bytes = (8 + state.schema.raw_value_bytes()) as u64;
        state.counters.frames_in += raw.frames.len() as u64;
        state.counters.raw_bytes += frame_bytes * raw.frames.len() as u64;
        let mut out = Vec::new();
        for frame in raw.frames {
            let frame = if self.scripts.is_empty() {
                frame
            } else {
                match self.scripts.on_frame(stream, frame) {
                    FrameVerdict::Keep { frame, boost_s } => {
                        if boost_s > 0.0
                            && let Some(state) = self.streams.get_mut(stream)
                        {
                            state
                                .rate
                                .boost(frame.timestamp_ns + (boost_s * 1e9) as i64);
                        }
                        frame
                    }
                    FrameVerdict::Drop => {
                        self.dropped_by_scripts += 1;
                        continue;
                    }
                }
            };
            self.newest_ns = Some(
                self.newest_ns
                    .map_or(frame.timestamp_ns, |t| t.max(frame.timestamp_ns)),
            );
            let state = self.streams.get_mut(stream).expect("checked above");
            let span = state.pending.first().map_or(0, |first| {
                frame.timestamp_ns.saturating_sub(first.timestamp_ns)
            });
            let full = state.pending.len() >= self.max_block_frames
                || span >= self.max_block_ns
                || (span >= self.block_ns && state.pending.len() >= self.min_block_frames);
            if full {
                out.extend(self.close_block(stream));
            }
            if let Some(state) = self.streams.get_mut(stream) {
                state.rate.observe(frame.timestamp_ns);
                state.pending.push(frame);
            }
        }
        if let (Some(state), Some(now)) = (self.streams.get_mut(stream), self.newest_ns) {
            let block_frames = ((state.schema.rate_hz * self.block_ns as f64 * 1e-9).round()
                as usize)
                .clamp(self.min_block_frames.max(1), self.max_block_frames.max(1));
            let (schema, ladder, model) = (&state.schema, &self.ladder, self.running.as_deref());
            state.rate.measure_if_due(now, |recent| {
                ladder.measure_with(schema, recent, block_frames, |level| {
                    StreamCodec::new(model, schema, ladder, level)
                        .map(|c| Box::new(c) as Box<dyn Codec>)
                })
            });
        }
        if raw.flush {
            out.extend(self.close_block(stream));
        }
        out
    }

    /// Encodes every partial block.
    pub fn flush_all(&mut self) -> Vec<EncodedPacket> {
        let names: Vec<String> = self.streams.keys().cloned().collect();
        names.iter().filter_map(|s| self.close_block(s)).collect()
    }

    fn close_block(&mut self, stream: &str) -> Option<EncodedPacket> {
        let state = self.streams.get_mut(stream)?;
        if state.pending.is_empty() {
            return None;
        }
        let frames = std::mem::take(&mut state.pending);
        let level = state.rate.level();
        let schema = state.schema.clone();
        self.sync_model();
        let codec = StreamCodec::new(self.running.as_deref(), &schema, &self.ladder, level)?;
        let stopwatch = Stopwatch::start();
        let mut encoded = codec.encode(&schema, &frames);
        let took = stopwatch.stop();
        if let Ok(packet) = &encoded
            && packet.header.codec == CodecId::Neural
            && let Some(failure) = self.check_health(&codec, &schema, &frames, packet, took.cpu_ns)
        {
            // The block goes out classically; the model is gone for the next one.
            encoded = codec.classical.encode(&schema, &frames);
            self.rollback(failure, None);
        }
        let encoded = encoded.map(|p| p.to_bytes());
        let state = self.streams.get_mut(stream)?;
        state.latency.record(took.wall_ns);
        match encoded {
            Ok(bytes) => {
                state.counters.frames_out += frames.len() as u64;
                state.counters.packets_out += 1;
                state.counters.compressed_bytes += bytes.len() as u64;
                let end = frames.last().map_or(0, |f| f.timestamp_ns);
                state.rate.sent(end, bytes.len());
                let count = frames.len();
                state.rate.keep(frames);
                Some(EncodedPacket {
                    stream: stream.to_owned(),
                    bytes,
                    frames: count,
                })
            }
            Err(e) => {
                tracing::warn!(node = %self.node, stream, "block dropped: {e}");
                self.rejected += 1;
                None
            }
        }
    }

    /// Times a block the model coded during its health window and, when sampled, checks its
    /// decoding and its size. Returns why the model must go, if it must.
    fn check_health(
        &mut self,
        codec: &StreamCodec,
        schema: &StreamSchema,
        frames: &[Frame],
        packet: &lydlr_codec::Packet,
        encode_ns: u64,
    ) -> Option<String> {
        let health = self.health.as_mut()?;
        if health.coded(encode_ns) {
            let bounds = self
                .ladder
                .channel_bounds(schema, packet.header.quality)
                .unwrap_or_default();
            let miss = match codec.decode(schema, packet) {
                Ok(decoded) => first_miss(frames, &decoded, &bounds),
                Err(e) => Some(e.to_string()),
            };
            if let Some(miss) = miss {
                return Some(format!("sampled decode check on {}: {miss}", schema.name));
            }
            let classical = codec
                .classical
                .encode(schema, frames)
                .map_or(0, |p| p.len());
            health.sampled(packet.len(), classical);
        }
        match health.verdict()? {
            HealthVerdict::Passed(reason) => {
                let version = health.version.clone();
                self.health = None;
                self.model_event(&version, ModelState::Healthy, reason);
                None
            }
            HealthVerdict::Failed(reason) => Some(reason),
        }
    }

    /// A snapshot of the node's counters, with the scripts' `on_metrics` fields.
    pub fn metrics(&mut self, seq: u64) -> NodeMetrics {
        let extra = if self.scripts.is_empty() {
            serde_json::Map::new()
        } else {
            self.scripts
                .on_metrics(self.newest_ns.unwrap_or(0) as f64 * 1e-9)
        };
        let status = self.scripts.status();
        let mut m = self.counters(seq);
        m.frames_dropped_by_scripts = self.dropped_by_scripts;
        m.script_time_us = status.iter().map(|s| s.time_us).sum();
        m.scripts = status;
        m.extra = extra;
        m
    }

    fn counters(&self, seq: u64) -> NodeMetrics {
        let mut all = LatencyHistogram::default();
        let mut m = NodeMetrics {
            node: self.node.clone(),
            seq,
            t_stream_s: self.newest_ns.unwrap_or(0) as f64 * 1e-9,
            rejected: self.rejected,
            allocated_bps: self.allocated_bps,
            model_version: self.running.as_ref().map(|m| m.version.clone()),
            ..NodeMetrics::default()
        };
        for state in self.streams.values() {
            let mut s = state.counters.clone();
            s.level = state.rate.base_level();
            s.target_bps = state.rate.target_bps();
            s.delivered_bps = state.rate.delivered_bps();
            s.encode_p50_us = state.latency.quantile_us(0.5);
            s.encode_p99_us = state.latency.quantile_us(0.99);
            s.encode_max_us = state.latency.max_us();
            m.frames_in += s.frames_in;
            m.frames_out += s.frames_out;
            m.raw_bytes += s.raw_bytes;
            m.compressed_bytes += s.compressed_bytes;
            m.queue_depth += state.pending.len() as u64;
            all.merge(&state.latency);
            m.streams.push(s);
        }
        m.ratio = if m.compressed_bytes > 0 {
            m.raw_bytes as f64 / m.compressed_bytes as f64
        } else {
            0.0
        };
        m.encode_p50_us = all.quantile_us(0.5);
        m.encode_p99_us = all.quantile_us(0.99);
        m.encode_max_us = all.max_us();
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lydlr_codec::{Codec, LosslessCodec, Packet, SampleType, SensorKind};

    fn schema() -> StreamSchema {
        StreamSchema {
            name: "wheels".into(),
            kind: SensorKind::WheelEncoder,
            sample_type: SampleType::I64,
            channels: vec!["l".into(), "r".into()],
            units: vec!["tick".into(), "tick".into()],
            rate_hz: 50.0,
            noise_sigma: vec![0.5, 0.5],
            lsb: vec![Some(1.0), Some(1.0)],
        }
    }

    fn frames(range: std::ops::Range<i64>) -> Vec<Frame> {
        range
            .map(|i| Frame::new(i * 20_000_000, vec![(i * 37) as f64, (i * 41) as f64]))
            .collect()
    }

    fn decode_all(packets: &[EncodedPacket]) -> Vec<Frame> {
        packets
            .iter()
            .flat_map(|p| {
                LosslessCodec
                    .decode(&schema(), &Packet::from_bytes(&p.bytes).unwrap())
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn blocks_close_on_span_and_every_frame_comes_out_once() {
        let mut c = Compressor::new(&EdgeConfig::default());
        let mut packets = c.set_schema("wheels", schema());
        let input = frames(0..95);
        for chunk in input.chunks(7) {
            packets.extend(c.push_raw(
                "wheels",
                RawFrames {
                    flush: false,
                    frames: chunk.to_vec(),
                },
            ));
        }
        // 200 ms blocks at 50 Hz hold 10 frames, which is also the minimum.
        assert_eq!(packets.len(), 9);
        assert!(packets.iter().all(|p| p.frames == 10));
        packets.extend(c.flush_all());
        let decoded = decode_all(&packets);
        assert_eq!(decoded.len(), input.len());
        assert!(decoded.iter().zip(&input).all(|(a, b)| a.bit_eq(b)));
        let m = c.metrics(1);
        assert_eq!((m.frames_in, m.frames_out, m.queue_depth), (95, 95, 0));
        assert!(m.ratio > 1.0);
    }

    #[test]
    fn slow_streams_fill_the_minimum_then_the_latency_bound_closes_blocks() {
        let config = EdgeConfig {
            min_block_frames: 10,
            max_block_ms: 2000,
            ..EdgeConfig::default()
        };
        let mut c = Compressor::new(&config);
        c.set_schema("wheels", schema());
        // 5 Hz: 10 frames span 1.8 s, under the 2 s bound.
        let slow: Vec<Frame> = (0..30)
            .map(|i| Frame::new(i * 200_000_000, vec![0.0, 0.0]))
            .collect();
        let packets = c.push_raw(
            "wheels",
            RawFrames {
                flush: false,
                frames: slow,
            },
        );
        assert_eq!(
            packets.iter().map(|p| p.frames).collect::<Vec<_>>(),
            vec![10, 10]
        );
        // 1 Hz: the 2 s bound closes blocks of 2 frames.
        let mut c = Compressor::new(&config);
        c.set_schema("wheels", schema());
        let crawl: Vec<Frame> = (0..7)
            .map(|i| Frame::new(i * 1_000_000_000, vec![0.0, 0.0]))
            .collect();
        let packets = c.push_raw(
            "wheels",
            RawFrames {
                flush: false,
                frames: crawl,
            },
        );
        assert_eq!(
            packets.iter().map(|p| p.frames).collect::<Vec<_>>(),
            vec![2, 2, 2]
        );
    }

    #[test]
    fn frames_before_the_schema_wait_and_bad_shapes_are_rejected() {
        let mut c = Compressor::new(&EdgeConfig::default());
        assert!(
            c.push_raw(
                "wheels",
                RawFrames {
                    flush: true,
                    frames: frames(0..3)
                }
            )
            .is_empty()
        );
        let packets = c.set_schema("wheels", schema());
        assert_eq!(decode_all(&packets).len(), 3);
        let bad = vec![Frame::new(0, vec![1.0])];
        assert!(
            c.push_raw(
                "wheels",
                RawFrames {
                    flush: true,
                    frames: bad
                }
            )
            .is_empty()
        );
        let mut wrong_name = schema();
        wrong_name.name = "imu".into();
        assert!(c.set_schema("wheels", wrong_name).is_empty());
        assert_eq!(c.metrics(0).rejected, 2);
    }

    #[test]
    fn the_waiting_room_is_bounded() {
        let config = EdgeConfig {
            max_pending_messages: 2,
            ..EdgeConfig::default()
        };
        let mut c = Compressor::new(&config);
        for _ in 0..5 {
            c.push_raw(
                "nope",
                RawFrames {
                    flush: false,
                    frames: frames(0..1),
                },
            );
        }
        assert_eq!(c.metrics(0).rejected, 3);
    }
}
