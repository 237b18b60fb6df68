//! `lydlr bench`: speed figures printed as JSON lines (run with `--release`).

use std::time::{Duration, Instant};

use lydlr_codec::{Frame, StreamSchema};
use lydlr_sim::{LidarConfig, SimConfig, Swarm};
use serde::Serialize;

use crate::timing::{DEFAULT_WINDOW, time_it};

/// One configuration of `lydlr bench sim`.
#[derive(Debug, Clone, Serialize)]
pub struct SimBench {
    pub robots: usize,
    pub lidar_beams: usize,
    pub imu_hz: f64,
    pub sim_seconds: f64,
    pub wall_seconds: f64,
    pub realtime_factor: f64,
    pub frames: u64,
}

/// A swarm of `robots` with room to move (about 4 m^2 each) and one obstacle per 5 robots.
pub fn bench_config(robots: usize, lidar_beams: usize, sim_seconds: f64) -> SimConfig {
    let mut config = SimConfig {
        seed: 42,
        duration_s: sim_seconds,
        ..SimConfig::default()
    };
    let side = (4.0 * robots as f64).sqrt().ceil() + 6.0;
    config.arena.size_m = [side, side];
    config.arena.obstacles = robots / 5;
    config.robots.count = robots;
    config.sensors.imu.rate_hz = 200.0;
    config.sensors.lidar = (lidar_beams > 0).then(|| LidarConfig {
        beams: lidar_beams,
        rate_hz: 10.0,
        ..LidarConfig::default()
    });
    config
}

/// Steps the swarm for its duration on the calling thread and times it (set-up excluded).
pub fn bench_sim(config: &SimConfig) -> anyhow::Result<SimBench> {
    let mut swarm = Swarm::new(config)?;
    let mut frames = 0u64;
    let started = Instant::now();
    for _ in 0..swarm.total_steps() {
        swarm.step();
        frames += swarm.drain_frames().len() as u64;
    }
    let wall = started.elapsed().as_secs_f64();
    Ok(SimBench {
        robots: config.robots.count,
        lidar_beams: config.sensors.lidar.as_ref().map_or(0, |l| l.beams),
        imu_hz: config.sensors.imu.rate_hz,
        sim_seconds: config.duration_s,
        wall_seconds: wall,
        realtime_factor: config.duration_s / wall,
        frames,
    })
}

/// The standard grid: 10, 100 and 1000 robots, with and without a 360-beam lidar.
pub fn sim_grid(scale: f64) -> Vec<SimConfig> {
    let mut out = Vec::new();
    for (robots, seconds) in [(10, 20.0), (100, 5.0), (1000, 2.0)] {
        for beams in [0, 360] {
            out.push(bench_config(robots, beams, seconds * scale));
        }
    }
    out
}

/// One stream of `lydlr bench codec`.
#[derive(Debug, Clone, Serialize)]
pub struct CodecBench {
    pub stream: String,
    pub frames: usize,
    pub lossless_ratio: f64,
    pub lossless_encode_mb_s: f64,
    pub lossless_decode_mb_s: f64,
    pub bounded_1sigma_ratio: f64,
    pub bounded_encode_mb_s: f64,
    pub bounded_decode_mb_s: f64,
    /// Lossless ratio in 10-frame packets, the size nodes send (headers included).
    pub lossless_block10_ratio: f64,
    /// Encode latency of one 10-frame block, microseconds.
    pub block10_p50_us: f64,
    pub block10_p99_us: f64,
    /// Bits the range coder spent on the lossless residuals, and their empirical entropy:
    /// each column's histogram's, and Chao and Shen's coverage-adjusted estimate (the
    /// histogram's is biased low where residuals spread wide, as a lidar beam's do).
    pub coded_bits: f64,
    pub entropy_bits: f64,
    pub coverage_adjusted_entropy_bits: f64,
    /// The same for the bounded codec's quantisation indices at one sigma, in 1000-frame
    /// packets (each column's entropy taken in its packet).
    pub bounded_coded_bits: f64,
    pub bounded_entropy_bits: f64,
    pub bounded_coverage_adjusted_entropy_bits: f64,
}

/// Codec figures on one simulated robot's streams (60 s of the quickstart swarm).
type RobotStreams = (Vec<lydlr_sim::StreamId>, Vec<StreamSchema>, Vec<Vec<Frame>>);

/// One robot's streams (lidar included) for 60 simulated seconds, seed 7.
fn robot_streams() -> anyhow::Result<RobotStreams> {
    let mut config = SimConfig {
        seed: 7,
        duration_s: 400.0,
        ..SimConfig::default()
    };
    config.sensors.lidar = Some(LidarConfig::default());
    let mut swarm = Swarm::new(&config)?;
    let streams = swarm.streams();
    let schemas = swarm.schemas();
    let mut frames = vec![Vec::new(); streams.len()];
    for _ in 0..swarm.total_steps() {
        swarm.step();
        for sf in swarm.drain_frames() {
            if sf.robot == 0 {
                let slot = streams.iter().position(|s| *s == sf.stream).unwrap_or(0);
                frames[slot].push(sf.frame);
            }
        }
    }
    Ok((streams, schemas, frames))
}

/// Percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
}

/// The conditioning frames a model asks for, merged from the streams at hand (None when it
/// needs none or one is missing).
pub fn conditions_for(
    names: &[String],
    schemas: &[StreamSchema],
    frames: &[Vec<Frame>],
) -> Option<Vec<Frame>> {
    let mut streams: Vec<usize> = Vec::new();
    for name in names {
        let stream = name.split('.').next()?;
        let i = schemas.iter().position(|s| s.name == stream)?;
        if !streams.contains(&i) {
            streams.push(i);
        }
    }
    if streams.is_empty() {
        return None;
    }
    let picked: Vec<(&StreamSchema, &[Frame])> = streams
        .iter()
        .map(|&i| (&schemas[i], frames[i].as_slice()))
        .collect();
    let merged = lydlr_codec::neural::merge_conditions(&picked);
    (merged.first().map(|f| f.values.len()) == Some(names.len())).then_some(merged)
}

/// One stream of `lydlr bench neural`.
#[derive(Debug, Clone, Serialize)]
pub struct NeuralBench {
    pub stream: String,
    /// Loading and verifying the whole package from disk (sha256, parse), fastest of 5.
    pub package_load_ms: f64,
    pub frames: usize,
    /// At one sigma, 1000-frame packets (lidar: 10 scans).
    pub neural_bits_per_sample: f64,
    pub bounded_bits_per_sample: f64,
    pub encode_mb_s: f64,
    pub decode_mb_s: f64,
    /// Encoding one 10-frame block (conditioned where the model is), one core.
    pub block10_encode_p50_us: f64,
    pub block10_encode_p99_us: f64,
    pub block10_decode_p99_us: f64,
}

/// The neural codec of a package on one simulated robot's streams.
pub fn bench_neural(package_dir: &std::path::Path) -> anyhow::Result<Vec<NeuralBench>> {
    use lydlr_codec::{BoundedCodec, Codec, ErrorBound, NeuralCodec};

    let (package, load_s) = time_it(Duration::ZERO, || {
        lydlr_learn::package::read_package(package_dir)
    })?;
    let (_, schemas, all) = robot_streams()?;
    let mut out = Vec::new();
    for (schema, frames) in schemas.iter().zip(&all) {
        let Some(model) = package.model_for(schema) else {
            continue;
        };
        let merged = conditions_for(&model.shape.conditions, &schemas, &all);
        let condition = merged.as_deref();
        let codec = NeuralCodec::new(model.clone(), ErrorBound::Sigma(1.0), 1);
        let per_packet = if schema.channels.len() > 64 { 10 } else { 1000 };
        let blocks: Vec<&[Frame]> = frames.chunks(per_packet).collect();
        let (packets, encode_s) = time_it(Duration::ZERO, || {
            blocks
                .iter()
                .map(|b| codec.encode_conditioned(schema, b, condition))
                .collect::<Result<Vec<_>, _>>()
        })?;
        let ((), decode_s) = time_it(Duration::ZERO, || {
            for p in &packets {
                codec.decode_conditioned(schema, p, condition)?;
            }
            Ok::<(), lydlr_codec::CodecError>(())
        })?;
        let bounded = BoundedCodec::new(ErrorBound::Sigma(1.0));
        let bounded_bytes: usize = blocks
            .iter()
            .map(|b| bounded.encode(schema, b).map(|p| p.len()))
            .sum::<Result<usize, _>>()?;
        let samples = (frames.len() * schema.channels.len()) as f64;
        let raw = samples * 4.0;
        let bytes: usize = packets.iter().map(|p| p.len()).sum();
        let mut encode_us = Vec::new();
        let mut decode_us = Vec::new();
        for block in frames.chunks_exact(10).take(2000) {
            let started = Instant::now();
            let packet = codec.encode_conditioned(schema, block, condition)?;
            encode_us.push(started.elapsed().as_secs_f64() * 1e6);
            let started = Instant::now();
            std::hint::black_box(codec.decode_conditioned(schema, &packet, condition)?);
            decode_us.push(started.elapsed().as_secs_f64() * 1e6);
        }
        encode_us.sort_by(f64::total_cmp);
        decode_us.sort_by(f64::total_cmp);
        out.push(NeuralBench {
            stream: schema.name.clone(),
            package_load_ms: load_s * 1e3,
            frames: frames.len(),
            neural_bits_per_sample: bytes as f64 * 8.0 / samples,
            bounded_bits_per_sample: bounded_bytes as f64 * 8.0 / samples,
            encode_mb_s: raw / 1e6 / encode_s,
            decode_mb_s: raw / 1e6 / decode_s,
            block10_encode_p50_us: percentile(&encode_us, 0.5),
            block10_encode_p99_us: percentile(&encode_us, 0.99),
            block10_decode_p99_us: percentile(&decode_us, 0.99),
        });
    }
    Ok(out)
}

pub fn bench_codec() -> anyhow::Result<Vec<CodecBench>> {
    use lydlr_codec::{
        BoundedCodec, Codec, ErrorBound, LosslessCodec, bounded_entropy_report, entropy_report,
    };

    let (streams, schemas, frames) = robot_streams()?;
    let mut out = Vec::new();
    for ((id, schema), frames) in streams.iter().zip(&schemas).zip(&frames) {
        if !id.is_transmitted() || frames.is_empty() {
            continue;
        }
        let raw = (frames.len() * schema.channels.len() * 4) as f64;
        let throughput = |codec: &dyn Codec| -> anyhow::Result<(f64, f64, f64)> {
            let blocks: Vec<&[lydlr_codec::Frame]> = frames.chunks(1000).collect();
            let (packets, encode_s) = time_it(DEFAULT_WINDOW, || {
                blocks
                    .iter()
                    .map(|b| codec.encode(schema, b))
                    .collect::<Result<Vec<_>, _>>()
            })?;
            let ((), decode_s) = time_it(DEFAULT_WINDOW, || {
                for p in &packets {
                    codec.decode(schema, p)?;
                }
                Ok::<(), lydlr_codec::CodecError>(())
            })?;
            let bytes: usize = packets.iter().map(|p| p.len()).sum();
            Ok((
                raw / bytes as f64,
                raw / 1e6 / encode_s,
                raw / 1e6 / decode_s,
            ))
        };
        let (lr, le, ld) = throughput(&LosslessCodec)?;
        let (br, be, bd) = throughput(&BoundedCodec::new(ErrorBound::Sigma(1.0)))?;
        let block10_bytes: usize = frames
            .chunks(10)
            .map(|block| {
                LosslessCodec
                    .encode(schema, block)
                    .map(|p| p.to_bytes().len())
            })
            .sum::<Result<usize, _>>()?;
        let mut latencies: Vec<f64> = frames
            .chunks_exact(10)
            .cycle()
            .take(20_000)
            .map(|block| {
                let started = Instant::now();
                let packet = LosslessCodec.encode(schema, block);
                let us = started.elapsed().as_secs_f64() * 1e6;
                std::hint::black_box(packet).ok();
                us
            })
            .collect();
        latencies.sort_by(f64::total_cmp);
        let at = |q: f64| percentile(&latencies, q);
        let entropy = entropy_report(schema, &frames[..frames.len().min(4000)]);
        let bounded_entropy = bounded_entropy_report(
            schema,
            &frames[..frames.len().min(4000)],
            ErrorBound::Sigma(1.0),
            1000,
        )?;
        out.push(CodecBench {
            stream: schema.name.clone(),
            frames: frames.len(),
            lossless_ratio: lr,
            lossless_encode_mb_s: le,
            lossless_decode_mb_s: ld,
            bounded_1sigma_ratio: br,
            bounded_encode_mb_s: be,
            bounded_decode_mb_s: bd,
            lossless_block10_ratio: raw / block10_bytes as f64,
            block10_p50_us: at(0.5),
            block10_p99_us: at(0.99),
            coded_bits: entropy.coded_bits,
            entropy_bits: entropy.entropy_bits,
            coverage_adjusted_entropy_bits: entropy.coverage_adjusted_entropy_bits,
            bounded_coded_bits: bounded_entropy.coded_bits,
            bounded_entropy_bits: bounded_entropy.entropy_bits,
            bounded_coverage_adjusted_entropy_bits: bounded_entropy.coverage_adjusted_entropy_bits,
        });
    }
    Ok(out)
}

/// One size of `lydlr bench alloc`.
#[derive(Debug, Clone, Serialize)]
pub struct AllocBench {
    pub streams: usize,
    pub millis: f64,
    /// Relative excess of weighted distortion over the exact optimum (null where the exact
    /// dynamic programme is too large to run).
    pub gap_to_optimum: Option<f64>,
    pub budget_used: f64,
}

/// The allocator on synthetic fleets of 10 to 10,000 streams.
pub fn bench_alloc() -> Vec<AllocBench> {
    use lydlr_coordinator::allocator::{allocate, allocate_exact, synthetic_instance};
    [10usize, 100, 1000, 10_000]
        .into_iter()
        .map(|streams| {
            let (demands, budget) = synthetic_instance(streams as u64, streams);
            let runs = if streams >= 10_000 { 5 } else { 20 };
            let mut best = f64::INFINITY;
            let mut result = None;
            for _ in 0..runs {
                let started = Instant::now();
                let r = allocate(&demands, budget);
                best = best.min(started.elapsed().as_secs_f64() * 1e3);
                result = Some(r);
            }
            let result = result.expect("ran");
            let gap = (streams <= 1000)
                .then(|| allocate_exact(&demands, budget, 1.0))
                .flatten()
                .map(|exact| {
                    (result.total_distortion - exact.total_distortion)
                        / exact.total_distortion.max(1.0)
                });
            AllocBench {
                streams,
                millis: best,
                gap_to_optimum: gap,
                budget_used: result.total_rate / budget,
            }
        })
        .collect()
}

/// `lydlr bench script`: per-frame cost of a user script on a 6-channel IMU frame.
#[derive(Debug, Clone, Serialize)]
pub struct ScriptBench {
    pub script: String,
    pub calls: usize,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// Times the shipped filter and event scripts, one at a time, on simulated IMU frames.
pub fn bench_script() -> anyhow::Result<Vec<ScriptBench>> {
    use lydlr_edge::scripts::{ScriptHost, ScriptLimits};
    let frames = lydlr_codec::synthetic::imu_frames(20_000, 5, 3.0);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts");
    let mut out = Vec::new();
    for (folder, file) in [
        ("filters", "10-lowpass.rhai"),
        ("events", "collision-boost.rhai"),
    ] {
        let source = std::fs::read_to_string(root.join(folder).join(file))?;
        let mut host = ScriptHost::new(ScriptLimits::default());
        host.load(file, 0, &source)
            .map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
        let mut times: Vec<f64> = frames
            .iter()
            .map(|f| {
                let started = Instant::now();
                std::hint::black_box(host.on_frame("imu", f.clone()));
                started.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        times.sort_by(f64::total_cmp);
        out.push(ScriptBench {
            script: file.to_owned(),
            calls: times.len(),
            p50_us: times[times.len() / 2],
            p99_us: times[times.len() * 99 / 100],
        });
    }
    Ok(out)
}
