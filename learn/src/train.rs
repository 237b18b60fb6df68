//! Training one stream's predictor in Burn (autodiff over the flex CPU backend).
//!
//! The network is the one `lydlr_codec::neural` runs: an MLP over the features that
//! [`ModelShape::features`] computes. Training minimises the code length, in bits, of the
//! quantised residuals under the predicted discretised Laplace, over the whole quality ladder
//! at once: every example draws a quantisation step (lossless counts or a multiple of sigma),
//! and its history gets the reconstruction error that step would leave, so the model learns
//! to predict from what a decoder has, not from the clean signal.

use burn::module::Param;
use burn::nn::Linear;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use lydlr_codec::neural::{Dense, Layout, ModelShape, NeuralModel};
use lydlr_codec::{Frame, StreamSchema};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::LearnError;

/// One robot's recording of a stream, with the conditioning frames it was recorded with.
#[derive(Debug, Clone)]
pub struct Series {
    pub frames: Vec<Frame>,
    /// Conditioning streams, sample-and-hold; empty when the model has none.
    pub condition: Vec<Frame>,
    /// This recording's noise sigma per channel when it differs from the schema's (sensor
    /// models randomised per seed); empty otherwise.
    pub noise_sigma: Vec<f64>,
}

/// Domain randomisation of IMU axes: applies one signed permutation of the three axes to
/// the accelerometer (channels 0-2) and the gyroscope (3-5) of every frame, as if the sensor
/// were mounted another way round. `choice` picks one of the 48 signed permutations.
pub fn remount_imu(frames: &mut [Frame], choice: usize) {
    const PERMUTATIONS: [[usize; 3]; 6] = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    let perm = PERMUTATIONS[choice % 6];
    let signs = [(choice / 6) & 1, (choice / 12) & 1, (choice / 24) & 1]
        .map(|b| if b == 1 { -1.0 } else { 1.0 });
    for f in frames {
        if f.values.len() < 6 {
            continue;
        }
        let old = f.values.clone();
        for axis in 0..3 {
            f.values[axis] = signs[axis] * old[perm[axis]];
            f.values[3 + axis] = signs[axis] * old[3 + perm[axis]];
        }
    }
}

/// Hyper-parameters of one model's training.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub context: usize,
    pub hidden: usize,
    pub hidden_layers: usize,
    pub steps: usize,
    pub batch: usize,
    pub learning_rate: f64,
    /// Error bounds in sigmas drawn for examples; 0 means lossless counts.
    pub sigma_levels: Vec<f64>,
    /// Share of examples trained without their conditioning streams (the codec must also
    /// work when they are missing).
    pub condition_dropout: f64,
    /// Share of examples with a history cut short, as at the start of a block.
    pub short_history: f64,
    /// Validation every this many steps.
    pub validate_every: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            context: 16,
            hidden: 48,
            hidden_layers: 2,
            steps: 1500,
            batch: 256,
            learning_rate: 2e-3,
            sigma_levels: vec![0.0, 0.5, 1.0, 2.0, 4.0, 8.0],
            condition_dropout: 0.2,
            short_history: 0.1,
            validate_every: 100,
        }
    }
}

/// Progress of a training run, reported to the caller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainPoint {
    pub step: usize,
    /// Mean bits per sample on the last training batch.
    pub train_bits: f64,
    /// Mean bits per sample on the validation set (held-out seeds), when measured.
    pub validation_bits: Option<f64>,
}

#[derive(Module, Debug)]
pub struct Predictor {
    pub layers: Vec<Linear>,
    /// Linear path from input to output (see `NeuralModel::skip`).
    pub skip: Linear,
}

impl Predictor {
    /// A network with the given layer widths, its weights drawn from `seed` alone (Burn's
    /// own initialiser draws from a process-wide generator that other threads also use).
    pub fn new(widths: &[usize], device: &Device, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut linear = |inputs: usize, outputs: usize| {
            // Uniform in +-sqrt(1 / inputs), as Burn's default for `Linear`.
            let bound = (1.0 / inputs as f64).sqrt();
            let mut draw = |n: usize| -> Vec<f32> {
                (0..n)
                    .map(|_| ((rng.random::<f64>() * 2.0 - 1.0) * bound) as f32)
                    .collect()
            };
            let weight = draw(inputs * outputs);
            let bias = draw(outputs);
            Linear {
                weight: Param::from_tensor(Tensor::from_data(
                    TensorData::new(weight, [inputs, outputs]),
                    device,
                )),
                bias: Some(Param::from_tensor(Tensor::from_data(
                    TensorData::new(bias, [outputs]),
                    device,
                ))),
            }
        };
        let (first, last) = (widths[0], widths[widths.len() - 1]);
        let layers = widths.windows(2).map(|w| linear(w[0], w[1])).collect();
        let skip = linear(first, last);
        Self { layers, skip }
    }

    pub fn forward(&self, mut x: Tensor<2>) -> Tensor<2> {
        let linear = self.skip.forward(x.clone());
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i < last {
                x = burn::tensor::activation::relu(x);
            }
        }
        x + linear
    }

    /// The same network as the codec runs it.
    pub fn to_codec(&self, shape: ModelShape) -> Result<NeuralModel, LearnError> {
        let layers = self
            .layers
            .iter()
            .map(dense)
            .collect::<Result<Vec<_>, LearnError>>()?;
        let skip = dense(&self.skip)?;
        NeuralModel::new(shape, layers, skip).map_err(|e| LearnError::Model(e.to_string()))
    }
}

fn dense(l: &Linear) -> Result<Dense, LearnError> {
    let w = l.weight.val();
    let [inputs, outputs] = w.dims();
    let bias = l
        .bias
        .as_ref()
        .map(|b| b.val().into_data().try_to_vec::<f32>())
        .transpose()
        .map_err(|e| LearnError::Model(format!("{e:?}")))?
        .unwrap_or_else(|| vec![0.0; outputs]);
    Ok(Dense {
        inputs,
        outputs,
        weight: w
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| LearnError::Model(format!("{e:?}")))?,
        bias,
    })
}

/// Sigmas used to normalise each channel: the schema's, or the ADC step (or 1) where the
/// schema gives none.
pub fn normalising_sigma(schema: &StreamSchema) -> Vec<f64> {
    (0..schema.channels.len())
        .map(|c| {
            let s = schema.noise_sigma.get(c).copied().unwrap_or(0.0);
            if s > 0.0 {
                s
            } else {
                schema.lsb(c).unwrap_or(1.0)
            }
        })
        .collect()
}

/// The step a channel is quantised with at `k` sigmas, as the codec will choose it.
fn quantisation_step(
    schema: &StreamSchema,
    noise_sigma: &[f64],
    sigma_k: f64,
    c: usize,
) -> Option<f64> {
    let sigma = noise_sigma.get(c).or(schema.noise_sigma.get(c)).copied();
    let eb = sigma_k * sigma.unwrap_or(0.0);
    match schema.lsb(c) {
        Some(lsb) => {
            let e = lydlr_codec::bound_in_units(eb, lsb);
            Some((2 * e + 1) as f64 * lsb)
        }
        None if eb > 0.0 => Some(2.0 * eb),
        None => None,
    }
}

/// The shape (normalisation included) of a model for `schema`, from training data.
pub fn shape_for(
    schema: &StreamSchema,
    conditions: Vec<String>,
    condition_scale: Vec<f64>,
    series: &[Series],
    config: &TrainConfig,
    layout: Layout,
) -> ModelShape {
    let c = schema.channels.len();
    let (mut sum, mut sq, mut n) = (vec![0.0; c], vec![0.0; c], 0usize);
    let (mut dsq, mut dn) = (vec![0.0; c], 0usize);
    for s in series {
        for (i, f) in s.frames.iter().enumerate() {
            for ch in 0..c {
                sum[ch] += f.values[ch];
                sq[ch] += f.values[ch] * f.values[ch];
                if i > 0 {
                    let d = f.values[ch] - s.frames[i - 1].values[ch];
                    dsq[ch] += d * d;
                }
            }
            n += 1;
            dn += usize::from(i > 0);
        }
    }
    let n = n.max(1) as f64;
    let dn = dn.max(1) as f64;
    let sigma = normalising_sigma(schema);
    let level_mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let level_scale: Vec<f64> = (0..c)
        .map(|ch| {
            let var = sq[ch] / n - level_mean[ch] * level_mean[ch];
            var.max(0.0).sqrt().max(sigma[ch])
        })
        .collect();
    let mut delta_scale: Vec<f64> = (0..c)
        .map(|ch| (dsq[ch] / dn).sqrt().max(sigma[ch]))
        .collect();
    let mut level_mean = level_mean;
    let mut level_scale: Vec<f64> = level_scale;
    if layout == Layout::Scan {
        // One network serves every beam: one set of statistics, pooled over the beams.
        let pool = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let rms = |v: &[f64]| (v.iter().map(|x| x * x).sum::<f64>() / v.len().max(1) as f64).sqrt();
        let (m, l, d) = (pool(&level_mean), rms(&level_scale), rms(&delta_scale));
        level_mean = vec![m; c];
        level_scale = vec![l; c];
        delta_scale = vec![d; c];
    }
    ModelShape {
        stream: schema.name.clone(),
        channels: schema.channels.clone(),
        conditions,
        context: config.context,
        delta_scale,
        level_mean,
        level_scale,
        condition_scale,
        layout,
        local_unit: false,
    }
}

/// A batch of examples: features, targets (next value minus last reconstruction, in sigmas)
/// and the inverse step (sigma / step) of every channel.
struct Batch {
    rows: usize,
    features: Vec<f32>,
    targets: Vec<f32>,
    inverse_steps: Vec<f32>,
}

struct Sampler<'a> {
    schema: &'a StreamSchema,
    shape: &'a ModelShape,
    series: &'a [Series],
    /// Per series, for each frame, the index of the held conditioning frame.
    held: Vec<Vec<Option<usize>>>,
    levels: Vec<f64>,
    config: &'a TrainConfig,
}

impl<'a> Sampler<'a> {
    fn new(
        schema: &'a StreamSchema,
        shape: &'a ModelShape,
        series: &'a [Series],
        config: &'a TrainConfig,
    ) -> Self {
        let held = series
            .iter()
            .map(|s| {
                let mut next = 0;
                s.frames
                    .iter()
                    .map(|f| {
                        while next < s.condition.len()
                            && s.condition[next].timestamp_ns <= f.timestamp_ns
                        {
                            next += 1;
                        }
                        next.checked_sub(1)
                    })
                    .collect()
            })
            .collect();
        // Lossless needs counts on every channel; without them the level is not drawn.
        let lossless = (0..schema.channels.len()).all(|c| schema.lsb(c).is_some());
        let levels = config
            .sigma_levels
            .iter()
            .copied()
            .filter(|&k| k > 0.0 || lossless)
            .collect();
        Self {
            schema,
            shape,
            series,
            held,
            levels,
            config,
        }
    }

    fn batch(&self, rng: &mut ChaCha8Rng, rows: usize) -> Batch {
        let c = self.shape.channels.len();
        let k = self.shape.context;
        let width = self.shape.input_width();
        let mut b = Batch {
            rows: 0,
            features: Vec::with_capacity(rows * width),
            targets: Vec::with_capacity(rows * c),
            inverse_steps: Vec::with_capacity(rows * c),
        };
        let usable: Vec<usize> = (0..self.series.len())
            .filter(|&i| self.series[i].frames.len() > k)
            .collect();
        if usable.is_empty() || self.levels.is_empty() {
            return b;
        }
        let mut out = vec![0.0f32; width];
        // The history and, last, the current frame, as a decoder would have reconstructed them.
        let mut rows_buf: Vec<Vec<f64>> = vec![vec![0.0; c]; k + 1];
        for _ in 0..rows {
            let s = usable[rng.random_range(0..usable.len())];
            let series = &self.series[s];
            let t = rng.random_range(k..series.frames.len());
            let level = self.levels[rng.random_range(0..self.levels.len())];
            let steps: Vec<f64> = (0..c)
                .map(|ch| {
                    quantisation_step(self.schema, &series.noise_sigma, level, ch)
                        .unwrap_or(self.shape.delta_scale[ch])
                })
                .collect();
            let lossy = level > 0.0;
            for (j, row) in rows_buf.iter_mut().enumerate() {
                let frame = &series.frames[t + j - k];
                for ch in 0..c {
                    let noise = if lossy && steps[ch] > self.schema.lsb(ch).unwrap_or(0.0) {
                        (rng.random::<f64>() - 0.5) * steps[ch]
                    } else {
                        0.0
                    };
                    row[ch] = frame.values[ch] + noise;
                }
            }
            let available = if rng.random::<f64>() < self.config.short_history {
                rng.random_range(1..=k)
            } else {
                k
            };
            let history: Vec<&[f64]> = (0..k)
                .map(|j| rows_buf[j.max(k - available)].as_slice())
                .collect();
            let step_log2: Vec<f32> = (0..c)
                .map(|ch| self.shape.step_log2(ch, steps[ch]))
                .collect();
            let condition = self.held[s][t]
                .filter(|_| rng.random::<f64>() >= self.config.condition_dropout)
                .map(|i| series.condition[i].values.as_slice())
                .filter(|v| v.len() == self.shape.conditions.len() && !v.is_empty());
            let last = history[k - 1];
            let mut unit = self.shape.delta_scale.clone();
            let predicted: Vec<usize> = match self.shape.layout {
                Layout::Frame => {
                    let mut local_log2 = vec![0.0f32; c];
                    self.shape.features(
                        &history,
                        available,
                        &steps,
                        condition,
                        &mut out,
                        &mut unit,
                        &mut local_log2,
                    );
                    (0..c).collect()
                }
                Layout::Scan => {
                    let beam = rng.random_range(0..c);
                    self.shape.scan_features(
                        &history,
                        available,
                        &rows_buf[k],
                        beam,
                        step_log2[beam],
                        condition,
                        &mut out,
                    );
                    vec![beam]
                }
            };
            b.features.extend_from_slice(&out);
            for ch in predicted {
                let target = (series.frames[t].values[ch] - last[ch]) / unit[ch];
                b.targets.push(if target.is_finite() {
                    target as f32
                } else {
                    0.0
                });
                b.inverse_steps.push((unit[ch] / steps[ch]) as f32);
            }
            b.rows += 1;
        }
        b
    }
}

/// Bits per sample of `targets` under the network's output: discretised Laplace with the
/// predicted mean and scale, on the quantisation grid of each example.
fn code_length(output: Tensor<2>, batch: &Batch, device: &Device) -> Tensor<1> {
    let c = batch.targets.len() / batch.rows.max(1);
    let targets = Tensor::<2>::from_data(
        TensorData::new(batch.targets.clone(), [batch.rows, c]),
        device,
    );
    let inverse = Tensor::<2>::from_data(
        TensorData::new(batch.inverse_steps.clone(), [batch.rows, c]),
        device,
    );
    let mean = output.clone().narrow(1, 0, c);
    let log2_scale = output.narrow(1, c, c).clamp(-12.0, 16.0);
    // Residual and scale in quantisation steps; the scale is floored at the codec's grid.
    let y = (targets - mean) * inverse.clone();
    let scale = ((log2_scale * core::f32::consts::LN_2).exp() * inverse).clamp_min(1.0 / 16.0);
    let a = y.abs();
    // P(|q| = a) for a >= 1/2: (e^{-(a-1/2)/b} - e^{-(a+1/2)/b}) / 2; near zero: 1 - e^{-1/(2b)} cosh(a/b).
    let far = ((a.clone() - 0.5).clamp_min(0.0).neg() / scale.clone()).exp()
        - ((a.clone() + 0.5).neg() / scale.clone()).exp();
    let far = far * 0.5;
    // Both branches are evaluated; each is clamped to its own domain so that the branch not
    // taken cannot overflow (an infinity there turns the gradient into NaN).
    let near = (((a.clone() - 0.5).clamp_max(0.0) / scale.clone()).exp()
        + ((a.clone().clamp_max(0.5) + 0.5).neg() / scale).exp())
        * 0.5;
    let near = near.neg() + 1.0;
    let centre = a.lower_elem(0.5);
    let p = far.mask_where(centre, near).clamp_min(1e-9);
    p.log().neg().mean() * core::f32::consts::LOG2_E
}

/// Trains a predictor; `validation` (other seeds) is scored every `validate_every` steps.
pub fn train(
    schema: &StreamSchema,
    shape: ModelShape,
    training: &[Series],
    validation: &[Series],
    config: &TrainConfig,
    seed: u64,
    mut progress: impl FnMut(TrainPoint),
) -> Result<(Predictor, NeuralModel, Vec<TrainPoint>), LearnError> {
    let device = Device::flex().autodiff();
    let mut widths = vec![shape.input_width()];
    widths.extend(std::iter::repeat_n(config.hidden, config.hidden_layers));
    widths.push(shape.output_width());
    let mut model = Predictor::new(&widths, &device, seed);
    let mut optimizer = AdamConfig::new().init();
    let train_sampler = Sampler::new(schema, &shape, training, config);
    let valid_sampler = Sampler::new(schema, &shape, validation, config);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let validation_batch = valid_sampler.batch(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x5eed), 4096);
    let mut curve = Vec::new();
    for step in 1..=config.steps {
        let batch = train_sampler.batch(&mut rng, config.batch);
        if batch.rows == 0 {
            return Err(LearnError::Data(format!(
                "{}: no series longer than the context of {} frames",
                schema.name, config.context
            )));
        }
        let input = Tensor::<2>::from_data(
            TensorData::new(batch.features.clone(), [batch.rows, shape.input_width()]),
            &device,
        );
        let loss = code_length(model.forward(input), &batch, &device);
        let train_bits = f64::from(loss.clone().into_scalar::<f32>());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        // Cosine decay to a tenth of the rate.
        let progress_frac = step as f64 / config.steps as f64;
        let lr = config.learning_rate
            * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * progress_frac).cos()));
        model = optimizer.step(lr, model, grads);
        let validate = step % config.validate_every == 0 || step == config.steps;
        let validation_bits = (validate && validation_batch.rows > 0).then(|| {
            let input = Tensor::<2>::from_data(
                TensorData::new(
                    validation_batch.features.clone(),
                    [validation_batch.rows, shape.input_width()],
                ),
                &device,
            );
            f64::from(
                code_length(model.valid().forward(input), &validation_batch, &device)
                    .into_scalar::<f32>(),
            )
        });
        let point = TrainPoint {
            step,
            train_bits,
            validation_bits,
        };
        if validate {
            curve.push(point);
        }
        progress(point);
    }
    let model = model.valid();
    let trained = model.to_codec(shape)?;
    Ok((model, trained, curve))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use lydlr_codec::synthetic::{imu_frames, imu_schema};

    pub(crate) fn series(seed: u64) -> Vec<Series> {
        vec![Series {
            frames: imu_frames(600, seed, 5.0),
            condition: Vec::new(),
            noise_sigma: Vec::new(),
        }]
    }

    /// A small network on synthetic IMU data: schema, data, settings and shape.
    pub(crate) fn tiny(
        hidden: usize,
        steps: usize,
        batch: usize,
    ) -> (StreamSchema, Vec<Series>, TrainConfig, ModelShape) {
        let schema = imu_schema();
        let data = series(4);
        let config = TrainConfig {
            context: 4,
            hidden,
            steps,
            batch,
            validate_every: steps,
            ..TrainConfig::default()
        };
        let shape = shape_for(
            &schema,
            Vec::new(),
            Vec::new(),
            &data,
            &config,
            Layout::Frame,
        );
        (schema, data, config, shape)
    }

    #[test]
    fn training_lowers_the_code_length_and_burn_agrees_with_the_codec() {
        let schema = imu_schema();
        let config = TrainConfig {
            context: 6,
            hidden: 16,
            steps: 60,
            batch: 64,
            validate_every: 20,
            ..TrainConfig::default()
        };
        let train_set = series(1);
        let shape = shape_for(
            &schema,
            Vec::new(),
            Vec::new(),
            &train_set,
            &config,
            Layout::Frame,
        );
        let (_, model, curve) = train(
            &schema,
            shape.clone(),
            &train_set,
            &series(2),
            &config,
            3,
            |_| {},
        )
        .unwrap();
        let first = curve.first().unwrap().validation_bits.unwrap();
        let last = curve.last().unwrap().validation_bits.unwrap();
        assert!(last < first, "validation bits {first} -> {last}");

        // The codec's hand-written pass and Burn's give the same outputs.
        let device = Device::flex();
        let mut widths = vec![shape.input_width()];
        widths.extend([16, 16, shape.output_width()]);
        let burn_model = Predictor::new(&widths, &device, 1);
        let codec_model = burn_model.to_codec(shape.clone()).unwrap();
        let input: Vec<f32> = (0..shape.input_width())
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let burn_out = burn_model
            .forward(Tensor::<2>::from_data(
                TensorData::new(input.clone(), [1, input.len()]),
                &device,
            ))
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let mut scratch = lydlr_codec::neural::Scratch::default();
        let codec_out = codec_model.forward(&input, &mut scratch);
        for (a, b) in burn_out.iter().zip(codec_out) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + a.abs()), "{a} vs {b}");
        }
        assert_eq!(model.shape, shape);
    }

    #[test]
    fn the_same_seed_trains_the_same_weights() {
        let (schema, data, config, shape) = tiny(8, 30, 32);
        let run = || {
            train(&schema, shape.clone(), &data, &data, &config, 11, |_| {})
                .unwrap()
                .1
        };
        let (a, b) = (run(), run());
        assert_eq!(a.layers[0].weight[..8], b.layers[0].weight[..8]);
        assert_eq!(a.fingerprint, b.fingerprint);
    }
}
