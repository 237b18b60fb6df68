//! `lydlr train CONFIG`: simulate training and held-out data, train one neural predictor per
//! stream in Burn, measure it against the classical bounded codec on held-out seeds and on
//! the real recordings, and write the model package plus its loss curves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use lydlr_codec::neural::package::TrainingRecord;
use lydlr_codec::neural::{Layout, condition_names, merge_conditions};
use lydlr_codec::{
    BoundedCodec, Codec, ErrorBound, Frame, NeuralCodec, NeuralModel, SampleType, SensorKind,
    StreamSchema,
};
use lydlr_learn::package::{TrainedStream, data_sha256, write_package};
use lydlr_learn::train::{Series, TrainConfig, TrainPoint, remount_imu, shape_for, train};
use lydlr_sim::{SimConfig, Swarm};
use plotters::style::{BLUE, RED};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use crate::eval::{noise_sigma, read_tables};
use crate::report::xy_chart;

/// The training configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainFile {
    /// Version written into the package.
    pub version: String,
    /// Package directory.
    pub output: PathBuf,
    #[serde(default)]
    pub sim: SimConfig,
    pub data: DataConfig,
    #[serde(default)]
    pub train: TrainConfig,
    pub streams: BTreeMap<String, StreamSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub train_seeds: Vec<u64>,
    pub validation_seeds: Vec<u64>,
    /// Simulated seconds per seed.
    pub duration_s: f64,
    /// Real recordings to evaluate on (never trained on); missing files are skipped.
    #[serde(default)]
    pub real: Vec<PathBuf>,
    /// Frames per packet when measuring, in seconds of stream.
    #[serde(default = "one_second")]
    pub block_s: f64,
    /// Domain randomisation of the training seeds (held-out seeds stay nominal).
    #[serde(default)]
    pub randomise: Option<Randomise>,
}

/// Sensor-model randomisation per training seed, so that a model sees more than one IMU.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Randomise {
    /// IMU rates to draw from (the physics runs at the IMU rate).
    pub imu_rate_hz: Vec<f64>,
    /// Range of a log-uniform factor on both IMU noise densities.
    pub imu_noise_scale: [f64; 2],
    /// Range of a log-uniform factor on the drive-train vibration.
    pub vibration_scale: [f64; 2],
    /// Mount each robot's IMU another way round (a signed permutation of its axes).
    pub remount_imu: bool,
}

impl Default for Randomise {
    fn default() -> Self {
        Self {
            imu_rate_hz: Vec::new(),
            imu_noise_scale: [1.0, 1.0],
            vibration_scale: [1.0, 1.0],
            remount_imu: false,
        }
    }
}

fn log_uniform(rng: &mut ChaCha8Rng, [lo, hi]: [f64; 2]) -> f64 {
    (lo.ln() + rng.random::<f64>() * (hi.ln() - lo.ln())).exp()
}

fn one_second() -> f64 {
    1.0
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    /// Streams whose latest frames condition this one's predictions (sensor-motor fusion;
    /// see `lydlr_codec::neural::merge_conditions`).
    #[serde(default)]
    pub conditions: Vec<String>,
    /// Hyper-parameters for this stream instead of `[train]`.
    pub train: Option<TrainConfig>,
    /// Normalise each frame by its own history's scale (`ModelShape::local_unit`).
    #[serde(default)]
    pub local_unit: bool,
    /// Recordings of this stream (CSV, parquet or MCAP, one column per channel, named as the
    /// stream's channels) trained on besides the simulated robots, without conditioning.
    #[serde(default)]
    pub files: Vec<PathBuf>,
}

/// A recorded stream as training series: its columns picked by the schema's channel names.
fn recorded_series(schema: &StreamSchema, path: &Path) -> anyhow::Result<Vec<Series>> {
    let mut out = Vec::new();
    for table in read_tables(path)? {
        let columns: Vec<&Vec<f64>> = schema
            .channels
            .iter()
            .map(|ch| {
                table
                    .names
                    .iter()
                    .position(|n| n == ch)
                    .map(|i| &table.columns[i])
                    .with_context(|| {
                        format!("{}: no column {ch:?} for {}", table.source, schema.name)
                    })
            })
            .collect::<anyhow::Result<_>>()?;
        let frames = (0..table.samples())
            .map(|i| Frame::new(table.t_ns[i], columns.iter().map(|c| c[i]).collect()))
            .collect();
        out.push(Series {
            frames,
            condition: Vec::new(),
            noise_sigma: Vec::new(),
        });
    }
    Ok(out)
}

impl TrainFile {
    pub fn load(path: &Path) -> anyhow::Result<TrainFile> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file: TrainFile = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("invalid training config {}: {e}", path.display()))?;
        if file.data.train_seeds.is_empty() || file.streams.is_empty() {
            bail!(
                "{}: needs train seeds and at least one stream",
                path.display()
            );
        }
        if !(file.data.duration_s > 0.0 && file.data.block_s > 0.0) {
            bail!(
                "{}: data.duration_s and data.block_s must be positive",
                path.display()
            );
        }
        Ok(file)
    }
}

/// Every robot's frames of every stream, from one simulated seed.
struct Recording {
    schemas: Vec<StreamSchema>,
    /// `[stream][robot]`.
    frames: Vec<Vec<Vec<Frame>>>,
}

fn simulate(
    sim: &SimConfig,
    seed: u64,
    duration_s: f64,
    randomise: Option<&Randomise>,
) -> anyhow::Result<Recording> {
    let mut config = sim.clone();
    config.seed = seed;
    config.duration_s = duration_s;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xd0_3a11);
    if let Some(r) = randomise {
        let imu = &mut config.sensors.imu;
        if !r.imu_rate_hz.is_empty() {
            imu.rate_hz = r.imu_rate_hz[rng.random_range(0..r.imu_rate_hz.len())];
        }
        let noise = log_uniform(&mut rng, r.imu_noise_scale);
        imu.accel_noise_ug_per_sqrt_hz *= noise;
        imu.gyro_noise_dps_per_sqrt_hz *= noise;
        imu.vibration_m_s2_per_m_s *= log_uniform(&mut rng, r.vibration_scale);
    }
    let mut swarm = Swarm::new(&config)?;
    let streams = swarm.streams();
    let robots = swarm.robot_names().len();
    let mut frames = vec![vec![Vec::new(); robots]; streams.len()];
    for _ in 0..swarm.total_steps() {
        swarm.step();
        for sf in swarm.drain_frames() {
            if let Some(slot) = streams.iter().position(|s| *s == sf.stream) {
                frames[slot][sf.robot].push(sf.frame);
            }
        }
    }
    let schemas = swarm.schemas();
    if randomise.is_some_and(|r| r.remount_imu)
        && let Some(imu) = schemas.iter().position(|s| s.kind == SensorKind::Imu)
    {
        for robot in &mut frames[imu] {
            remount_imu(robot, rng.random_range(0..48));
        }
    }
    Ok(Recording { schemas, frames })
}

fn slot(rec: &Recording, name: &str) -> anyhow::Result<usize> {
    rec.schemas
        .iter()
        .position(|s| s.name == name)
        .with_context(|| {
            format!("the simulator has no stream {name:?} (enable it in [sim.sensors])")
        })
}

fn series_of(rec: &Recording, stream: usize, conditions: &[usize]) -> Vec<Series> {
    (0..rec.frames[stream].len())
        .map(|robot| Series {
            frames: rec.frames[stream][robot].clone(),
            condition: if conditions.is_empty() {
                Vec::new()
            } else {
                let streams: Vec<(&StreamSchema, &[Frame])> = conditions
                    .iter()
                    .map(|&c| (&rec.schemas[c], rec.frames[c][robot].as_slice()))
                    .collect();
                merge_conditions(&streams)
            },
            noise_sigma: rec.schemas[stream].noise_sigma.clone(),
        })
        .collect()
}

/// Bits per sample of `frames` coded by `codec` in blocks; checks every decoded sample.
fn measure(
    schema: &StreamSchema,
    series: &[Series],
    block: usize,
    bounds: &[f64],
    mut encode: impl FnMut(&[Frame], &[Frame]) -> anyhow::Result<(usize, Vec<Frame>)>,
) -> anyhow::Result<f64> {
    let (mut bytes, mut samples) = (0usize, 0usize);
    for s in series {
        for chunk in s.frames.chunks(block.max(1)) {
            let (size, back) = encode(chunk, &s.condition)?;
            bytes += size;
            samples += chunk.len() * schema.channels.len();
            for (a, b) in chunk.iter().zip(&back) {
                for (c, (x, y)) in a.values.iter().zip(&b.values).enumerate() {
                    if x.to_bits() != y.to_bits() && (x - y).abs() > bounds[c] {
                        bail!("{}: decoded {y} for {x}, bound {}", schema.name, bounds[c]);
                    }
                }
            }
        }
    }
    Ok(bytes as f64 * 8.0 / samples.max(1) as f64)
}

/// Neural against classical bits per sample at `k` sigmas (0: lossless).
fn compare(
    schema: &StreamSchema,
    model: &Arc<NeuralModel>,
    series: &[Series],
    k: f64,
    block: usize,
) -> anyhow::Result<(f64, f64)> {
    let bound = ErrorBound::Sigma(k);
    let bounds: Vec<f64> = (0..schema.channels.len())
        .map(|c| k * schema.noise_sigma.get(c).copied().unwrap_or(0.0))
        .collect();
    let neural = NeuralCodec::new(model.clone(), bound, 1);
    let neural_bits = measure(schema, series, block, &bounds, |chunk, cond| {
        let cond = (!cond.is_empty()).then_some(cond);
        let p = neural.encode_conditioned(schema, chunk, cond)?;
        let back = neural.decode_conditioned(schema, &p, cond)?;
        Ok((p.len(), back))
    })?;
    let classical = BoundedCodec::new(bound);
    let classical_bits = measure(schema, series, block, &bounds, |chunk, _| {
        let p = classical.encode(schema, chunk)?;
        let back = classical.decode(schema, &p)?;
        Ok((p.len(), back))
    })?;
    Ok((neural_bits, classical_bits))
}

/// Column names in real recordings that carry the simulator's IMU channels, with the factor
/// to SI units.
const REAL_IMU_COLUMNS: [(&str, &[(&str, f64)]); 6] = [
    (
        "accel_x",
        &[
            ("accel_x", 1.0),
            ("accelerometer_m_s2_0", 1.0),
            ("accel_x_g", 9.80665),
        ],
    ),
    (
        "accel_y",
        &[
            ("accel_y", 1.0),
            ("accelerometer_m_s2_1", 1.0),
            ("accel_y_g", 9.80665),
        ],
    ),
    (
        "accel_z",
        &[
            ("accel_z", 1.0),
            ("accelerometer_m_s2_2", 1.0),
            ("accel_z_g", 9.80665),
        ],
    ),
    (
        "gyro_x",
        &[
            ("gyro_x", 1.0),
            ("gyro_rad_0", 1.0),
            ("gyro_x_dps", core::f64::consts::PI / 180.0),
        ],
    ),
    (
        "gyro_y",
        &[
            ("gyro_y", 1.0),
            ("gyro_rad_1", 1.0),
            ("gyro_y_dps", core::f64::consts::PI / 180.0),
        ],
    ),
    (
        "gyro_z",
        &[
            ("gyro_z", 1.0),
            ("gyro_rad_2", 1.0),
            ("gyro_z_dps", core::f64::consts::PI / 180.0),
        ],
    ),
];

/// A real IMU recording in the simulator's channels and units, with its own noise estimate.
pub fn real_imu(path: &Path) -> anyhow::Result<(StreamSchema, Vec<Frame>)> {
    let table = read_tables(path)?
        .into_iter()
        .next()
        .context("empty recording")?;
    let mut columns = Vec::new();
    for (channel, candidates) in REAL_IMU_COLUMNS {
        let (index, factor) = candidates
            .iter()
            .find_map(|(name, f)| table.names.iter().position(|n| n == name).map(|i| (i, *f)))
            .with_context(|| format!("{}: no column for {channel}", path.display()))?;
        columns.push(
            table.columns[index]
                .iter()
                .map(|v| v * factor)
                .collect::<Vec<f64>>(),
        );
    }
    let frames: Vec<Frame> = (0..table.samples())
        .map(|i| Frame::new(table.t_ns[i], columns.iter().map(|c| c[i]).collect()))
        .collect();
    let span = (table.t_ns.last().copied().unwrap_or(0) - table.t_ns[0]) as f64 * 1e-9;
    let schema = StreamSchema {
        name: "imu".into(),
        kind: SensorKind::Imu,
        sample_type: SampleType::F64,
        channels: REAL_IMU_COLUMNS
            .iter()
            .map(|(c, _)| (*c).to_owned())
            .collect(),
        units: ["m/s^2", "m/s^2", "m/s^2", "rad/s", "rad/s", "rad/s"]
            .map(String::from)
            .to_vec(),
        rate_hz: (frames.len().saturating_sub(1)) as f64 / span.max(1e-9),
        noise_sigma: columns.iter().map(|c| noise_sigma(c)).collect(),
        lsb: vec![None; 6],
    };
    Ok((schema, frames))
}

/// What `lydlr train` measured, per stream.
#[derive(Debug, Clone)]
pub struct StreamResult {
    pub stream: String,
    pub curve: Vec<TrainPoint>,
    pub metrics: BTreeMap<String, f64>,
}

/// Command-line replacements for parts of the configuration.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub output: Option<PathBuf>,
    pub block_s: Option<f64>,
}

pub fn run_training(
    config_path: &Path,
    overrides: &Overrides,
    progress: bool,
    plots: &Path,
) -> anyhow::Result<Vec<StreamResult>> {
    let mut file = TrainFile::load(config_path)?;
    if let Some(dir) = &overrides.output {
        file.output = dir.clone();
    }
    if let Some(b) = overrides.block_s {
        anyhow::ensure!(b > 0.0, "--block-s must be positive");
        file.data.block_s = b;
    }
    let started = Instant::now();
    let bar = if progress {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg:32} {bar:30} {pos}/{len}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let seeds: Vec<u64> = file
        .data
        .train_seeds
        .iter()
        .chain(&file.data.validation_seeds)
        .copied()
        .collect();
    bar.set_length(seeds.len() as u64);
    let mut recordings = Vec::new();
    for &seed in &seeds {
        bar.set_message(format!("simulating seed {seed}"));
        let randomise = file
            .data
            .randomise
            .as_ref()
            .filter(|_| file.data.train_seeds.contains(&seed));
        recordings.push(simulate(&file.sim, seed, file.data.duration_s, randomise)?);
        bar.inc(1);
    }
    let (train_recs, valid_recs) = recordings.split_at(file.data.train_seeds.len());
    let first = &train_recs[0];
    let total_steps: u64 = file
        .streams
        .values()
        .map(|s| s.train.as_ref().unwrap_or(&file.train).steps as u64)
        .sum();
    bar.set_position(0);
    bar.set_length(total_steps);
    std::fs::create_dir_all(plots)?;
    let rrd = rerun::RecordingStreamBuilder::new("lydlr-train")
        .save(plots.join("training.rrd"))
        .context("creating training.rrd")?;

    let mut trained = Vec::new();
    let mut results = Vec::new();
    let mut hashed: Vec<&Frame> = Vec::new();
    let mut hashed_files: Vec<Frame> = Vec::new();
    for (name, spec) in &file.streams {
        let stream = slot(first, name)?;
        let condition: Vec<usize> = spec
            .conditions
            .iter()
            .map(|c| slot(first, c))
            .collect::<anyhow::Result<_>>()?;
        let schema = first.schemas[stream].clone();
        // Held-out seeds are never randomised: they are measured with their own (nominal)
        // sensor models.
        let heldout_schema = valid_recs
            .first()
            .map_or(&schema, |r| &r.schemas[stream])
            .clone();
        let mut training: Vec<Series> = train_recs
            .iter()
            .flat_map(|r| series_of(r, stream, &condition))
            .collect();
        for path in &spec.files {
            let recorded = recorded_series(&schema, path)?;
            hashed_files.extend(recorded.iter().flat_map(|s| s.frames.clone()));
            training.extend(recorded);
        }
        let validation: Vec<Series> = valid_recs
            .iter()
            .flat_map(|r| series_of(r, stream, &condition))
            .collect();
        hashed.extend(
            train_recs
                .iter()
                .flat_map(|r| r.frames[stream].iter().flatten()),
        );
        let (conditions, condition_scale) = match condition.is_empty() {
            false => {
                let schemas: Vec<&StreamSchema> =
                    condition.iter().map(|&c| &first.schemas[c]).collect();
                let names = condition_names(&schemas);
                let scale = (0..names.len())
                    .map(|ch| {
                        let values: Vec<f64> = training
                            .iter()
                            .flat_map(|s| s.condition.iter().map(|f| f.values[ch]))
                            .collect();
                        let n = values.len().max(1) as f64;
                        let mean = values.iter().sum::<f64>() / n;
                        let sd = (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n)
                            .sqrt();
                        if sd > 0.0 { 1.0 / sd } else { 1.0 }
                    })
                    .collect();
                (names, scale)
            }
            true => (Vec::new(), Vec::new()),
        };
        let layout = if schema.kind == SensorKind::Lidar {
            Layout::Scan
        } else {
            Layout::Frame
        };
        let config = spec.train.clone().unwrap_or_else(|| file.train.clone());
        let mut shape = shape_for(
            &schema,
            conditions,
            condition_scale,
            &training,
            &config,
            layout,
        );
        shape.local_unit = spec.local_unit;
        if schema.kind == SensorKind::Imu
            && file.data.randomise.as_ref().is_some_and(|r| r.remount_imu)
        {
            // Any axis may carry gravity: one set of statistics per sensor triple.
            for group in [0..3, 3..6] {
                let n = group.len() as f64;
                let power = group
                    .clone()
                    .map(|c| shape.level_scale[c].powi(2) + shape.level_mean[c].powi(2))
                    .sum::<f64>()
                    / n;
                let delta = (group
                    .clone()
                    .map(|c| shape.delta_scale[c].powi(2))
                    .sum::<f64>()
                    / n)
                    .sqrt();
                for c in group {
                    shape.level_mean[c] = 0.0;
                    shape.level_scale[c] = power.sqrt();
                    shape.delta_scale[c] = delta;
                }
            }
        }
        bar.set_message(format!("training {name}"));
        let rec = rrd.clone();
        let (predictor, model, curve) =
            train(&schema, shape, &training, &validation, &config, 7, |p| {
                bar.inc(1);
                rec.set_time_sequence("step", p.step as i64);
                let _ = rec.log(
                    format!("loss/{name}/train_bits"),
                    &rerun::Scalars::new([p.train_bits]),
                );
                if let Some(v) = p.validation_bits {
                    let _ = rec.log(
                        format!("loss/{name}/validation_bits"),
                        &rerun::Scalars::new([v]),
                    );
                }
            })?;
        let model = Arc::new(model);
        bar.set_message(format!("measuring {name}"));
        let block = (schema.rate_hz * file.data.block_s).round().max(1.0) as usize;
        let mut metrics = BTreeMap::new();
        if let Some(v) = curve.last().and_then(|p| p.validation_bits) {
            // The training objective on held-out seeds, over every quality level.
            metrics.insert("heldout_objective_bits".to_owned(), v);
        }
        let lossless = (0..schema.channels.len()).all(|c| schema.lsb(c).is_some());
        for &k in &config.sigma_levels {
            if k == 0.0 && !lossless {
                continue;
            }
            let (n, c) = compare(&heldout_schema, &model, &validation, k, block)?;
            let tag = if k == 0.0 {
                "lossless".to_owned()
            } else {
                format!("{k}sigma")
            };
            metrics.insert(format!("heldout_neural_bits_{tag}"), n);
            metrics.insert(format!("heldout_classical_bits_{tag}"), c);
            metrics.insert(format!("heldout_saving_{tag}"), 1.0 - n / c);
        }
        if schema.kind == SensorKind::Imu {
            for path in file.data.real.iter().filter(|p| p.exists()) {
                let (real_schema, frames) = real_imu(path)?;
                let block = (real_schema.rate_hz * file.data.block_s).round().max(1.0) as usize;
                let series = [Series {
                    frames,
                    condition: Vec::new(),
                    noise_sigma: Vec::new(),
                }];
                let (n, c) = compare(&real_schema, &model, &series, 1.0, block)?;
                let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("real");
                metrics.insert(format!("real_{stem}_neural_bits_1sigma"), n);
                metrics.insert(format!("real_{stem}_classical_bits_1sigma"), c);
                metrics.insert(format!("real_{stem}_saving_1sigma"), 1.0 - n / c);
            }
        }
        let points = |f: fn(&TrainPoint) -> Option<f64>| -> Vec<(f64, f64)> {
            curve
                .iter()
                .filter_map(|p| f(p).map(|v| (p.step as f64, v)))
                .collect()
        };
        xy_chart(
            &plots.join(format!("loss_{name}.svg")),
            &format!("{name}: code length during training"),
            "step",
            "bits per sample",
            &[
                ("train batch", BLUE, points(|p| Some(p.train_bits))),
                ("held-out seeds", RED, points(|p| p.validation_bits)),
            ],
        )?;
        results.push(StreamResult {
            stream: name.clone(),
            curve,
            metrics: metrics.clone(),
        });
        trained.push(TrainedStream {
            schema,
            predictor,
            model: Arc::unwrap_or_clone(model),
            quality_sigmas: config.sigma_levels.clone(),
            metrics,
        });
    }
    bar.finish_and_clear();
    let record = TrainingRecord {
        command: format!("lydlr train {}", config_path.display()),
        data_sha256: data_sha256(hashed.into_iter().chain(&hashed_files)),
        seeds: file.data.train_seeds.clone(),
        frames: train_recs
            .iter()
            .map(|r| r.frames.iter().flatten().map(Vec::len).sum::<usize>() as u64)
            .sum::<u64>()
            + hashed_files.len() as u64,
    };
    write_package(&file.output, &file.version, record, &trained)?;
    eprintln!(
        "package {} written in {:.1} s",
        file.output.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recordings_are_read_by_channel_name_and_missing_channels_are_named() {
        let dir = std::env::temp_dir().join(format!("lydlr-train-rec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wheels.csv");
        std::fs::write(
            &path,
            "t,right_ticks,left_ticks\n0,10,20\n0.02,11,22\n0.04,12,24\n",
        )
        .unwrap();
        let schema = lydlr_sim::schema(&SimConfig::default(), lydlr_sim::StreamId::Wheels);
        let series = recorded_series(&schema, &path).unwrap();
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].frames.len(), 3);
        assert_eq!(series[0].frames[2].values.as_slice(), [24.0, 12.0]);
        assert_eq!(series[0].frames[1].timestamp_ns, 20_000_000);
        std::fs::write(&path, "t,left_ticks\n0,1\n").unwrap();
        let err = recorded_series(&schema, &path).unwrap_err().to_string();
        assert!(err.contains("right_ticks"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
