//! The neural predictor: a small causal MLP over the stream's recent reconstructed frames,
//! the conditioning streams and the quantisation step, that predicts each channel's next
//! value and the scale of its residual.
//!
//! The forward pass is written out here rather than run through Burn: this crate is what a
//! robot builds, and the pass must give the same bits on every machine (fixed summation
//! order, no fused multiply-add, no transcendental functions). `lydlr-learn` trains the same
//! network in Burn and tests that both passes agree.

use std::collections::BTreeMap;

use crate::neural::laplace::{det_exp2, det_log2};
use crate::{CodecError, StreamSchema};

/// Metadata keys in the weights file (`.bpk` user metadata).
pub mod keys {
    pub const STREAM: &str = "lydlr.stream";
    pub const CHANNELS: &str = "lydlr.channels";
    pub const CONDITIONS: &str = "lydlr.conditions";
    pub const CONTEXT: &str = "lydlr.context";
    pub const DELTA_SCALE: &str = "lydlr.delta_scale";
    pub const LEVEL_MEAN: &str = "lydlr.level_mean";
    pub const LEVEL_SCALE: &str = "lydlr.level_scale";
    pub const CONDITION_SCALE: &str = "lydlr.condition_scale";
    pub const LAYERS: &str = "lydlr.layers";
    pub const LAYOUT: &str = "lydlr.layout";
    pub const LOCAL_UNIT: &str = "lydlr.local_unit";
}

/// How a model sees a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One network call per frame predicts every channel (IMU, encoders, motors).
    Frame,
    /// One network, shared by every channel, called per channel in order: each beam of a scan
    /// is predicted from its own past, its neighbours in the previous scan and the beams of
    /// this scan already coded (lidar).
    Scan,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::Frame => "frame",
            Layout::Scan => "scan",
        }
    }
}

/// Neighbours of a beam in the previous scan, as offsets.
const SCAN_NEIGHBOURS: [isize; 4] = [-2, -1, 1, 2];
/// Beams of the current scan already coded that a beam sees (the ones just before it).
const SCAN_CAUSAL: usize = 2;

/// The per-frame unit spans this many quarter octaves either side of the training scale.
const UNIT_QUARTERS: f64 = 32.0;

/// Largest magnitude of a normalised input.
const INPUT_LIMIT: f32 = 32.0;

/// Non-finite inputs must not poison the prediction, and inputs far outside anything seen in
/// training (another robot, another sensor) are held at the edge of that range rather than
/// extrapolated.
fn clean_inputs(out: &mut [f32]) {
    for v in out.iter_mut() {
        *v = if v.is_finite() {
            v.clamp(-INPUT_LIMIT, INPUT_LIMIT)
        } else {
            0.0
        };
    }
}

/// What a model predicts from, apart from its weights.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelShape {
    /// Stream name the model serves (`imu`, `wheels`, ...).
    pub stream: String,
    pub channels: Vec<String>,
    /// `stream.channel` names of the conditioning inputs (may be empty).
    pub conditions: Vec<String>,
    /// Past frames seen per prediction.
    pub context: usize,
    /// Per-channel scale of one-step changes (at least the noise sigma): differences in the
    /// input, and the predicted mean and scale, are in these units.
    pub delta_scale: Vec<f64>,
    pub level_mean: Vec<f64>,
    pub level_scale: Vec<f64>,
    pub condition_scale: Vec<f64>,
    pub layout: Layout,
    /// Frame layout: measure each frame's unit from its own history (see
    /// [`Self::features`]) instead of using the training delta scale.
    pub local_unit: bool,
}

impl ModelShape {
    /// Channels one network call predicts.
    pub fn predicted(&self) -> usize {
        match self.layout {
            Layout::Frame => self.channels.len(),
            Layout::Scan => 1,
        }
    }

    pub fn input_width(&self) -> usize {
        let c = self.predicted();
        let own = (self.context - 1) * c + 2 * c + 1 + self.conditions.len() + 1;
        match self.layout {
            Layout::Frame => own + c,
            Layout::Scan => own + SCAN_NEIGHBOURS.len() + 2 * SCAN_CAUSAL + 3,
        }
    }

    pub fn output_width(&self) -> usize {
        2 * self.predicted()
    }

    /// Scan layout: fills `out` for beam `beam` of the current scan, of which `current`
    /// holds the beams already coded. History, availability, steps and condition are as in
    /// [`Self::features`]; beams wrap around (a full turn).
    #[allow(clippy::too_many_arguments)]
    pub fn scan_features(
        &self,
        history: &[&[f64]],
        available: usize,
        current: &[f64],
        beam: usize,
        step_log2: f32,
        condition: Option<&[f64]>,
        out: &mut [f32],
    ) {
        let beams = self.channels.len();
        let k = self.context;
        let last = history[k - 1];
        let scale = self.delta_scale[beam];
        let mut i = 0;
        for pair in history.windows(2) {
            out[i] = ((pair[1][beam] - pair[0][beam]) / scale) as f32;
            i += 1;
        }
        out[i] = ((last[beam] - self.level_mean[beam]) / self.level_scale[beam]) as f32;
        out[i + 1] = step_log2;
        out[i + 2] = available.min(k) as f32 / k as f32;
        i += 3;
        for j in 0..self.conditions.len() {
            out[i] = condition.map_or(0.0, |v| (v[j] * self.condition_scale[j]) as f32);
            i += 1;
        }
        out[i] = if condition.is_some() { 1.0 } else { 0.0 };
        i += 1;
        for o in SCAN_NEIGHBOURS {
            let n = (beam as isize + o).rem_euclid(beams as isize) as usize;
            out[i] = ((last[n] - last[beam]) / scale) as f32;
            i += 1;
        }
        for back in 1..=SCAN_CAUSAL {
            // How the beams just coded moved since the last scan: the scan-wide shift that
            // the robot's motion causes.
            let coded = beam >= back;
            out[i] = if coded {
                ((current[beam - back] - last[beam - back]) / scale) as f32
            } else {
                0.0
            };
            out[i + 1] = if coded { 1.0 } else { 0.0 };
            i += 2;
        }
        // Where the beam points, as exact piecewise-linear functions of its index (a sine
        // from libm could round differently on another machine).
        let a = beam as f32 / beams as f32;
        out[i] = a;
        out[i + 1] = 1.0 - 4.0 * (a - 0.5).abs();
        out[i + 2] = 1.0 - 4.0 * ((a + 0.25).fract() - 0.5).abs();
        clean_inputs(out);
    }

    /// Fills `out` (length [`Self::input_width`]) with the network's input for one frame, and
    /// `unit[c]` with the unit of channel `c`'s predicted mean and scale, `step_log2[c]` with
    /// `log2(step_c / unit_c)`.
    ///
    /// `history` holds the last `context` reconstructed frames, oldest first (rows before the
    /// block's start repeat its first frame); `available` is how many of them are real. With
    /// `local_unit` the unit is the RMS of the history's successive differences (and of half
    /// the step), on a quarter-octave grid around the training delta scale; otherwise it is
    /// the delta scale. A local unit means that the network sees the signal's shape, not its size,
    /// so that another robot's sensor (louder, faster, shakier) looks like a familiar one.
    /// The layout is the training contract: differences in units, the last frame's level, the
    /// steps, the units (log2 against the training scale), the share of real history, the
    /// conditioning values and whether they are present.
    #[allow(clippy::too_many_arguments)]
    pub fn features(
        &self,
        history: &[&[f64]],
        available: usize,
        steps: &[f64],
        condition: Option<&[f64]>,
        out: &mut [f32],
        unit: &mut [f64],
        step_log2: &mut [f32],
    ) {
        let c = self.channels.len();
        let k = self.context;
        let last = history[k - 1];
        // The units' octaves go after the differences, levels and steps.
        let octave_at = (k - 1) * c + 2 * c;
        for ch in 0..c {
            let power = history
                .windows(2)
                .map(|p| (p[1][ch] - p[0][ch]) * (p[1][ch] - p[0][ch]))
                .sum::<f64>()
                / (k - 1) as f64;
            // The quantisation step counts too: a history flattened by coarse steps must not
            // read as a silent sensor.
            let rms = (power + steps[ch] * steps[ch] / 4.0).sqrt();
            let g = if !self.local_unit {
                0.0
            } else if rms.is_finite() && rms > 0.0 {
                (4.0 * det_log2(rms / self.delta_scale[ch])).round()
            } else {
                -UNIT_QUARTERS
            };
            let q = g.clamp(-UNIT_QUARTERS, UNIT_QUARTERS);
            unit[ch] = self.delta_scale[ch] * det_exp2(q / 4.0);
            step_log2[ch] = det_log2(steps[ch] / unit[ch]) as f32;
            out[octave_at + ch] = (q / 4.0) as f32;
        }
        let mut i = 0;
        for pair in history.windows(2) {
            for ch in 0..c {
                out[i] = ((pair[1][ch] - pair[0][ch]) / unit[ch]) as f32;
                i += 1;
            }
        }
        for ((v, mean), scale) in last.iter().zip(&self.level_mean).zip(&self.level_scale) {
            out[i] = ((v - mean) / scale) as f32;
            i += 1;
        }
        out[i..i + c].copy_from_slice(&step_log2[..c]);
        i += c;
        i += c;
        out[i] = available.min(k) as f32 / k as f32;
        i += 1;
        for j in 0..self.conditions.len() {
            out[i] = condition.map_or(0.0, |v| (v[j] * self.condition_scale[j]) as f32);
            i += 1;
        }
        out[i] = if condition.is_some() { 1.0 } else { 0.0 };
        clean_inputs(out);
    }

    /// `log2(step / delta_scale)` of a channel, deterministically.
    pub fn step_log2(&self, channel: usize, step: f64) -> f32 {
        det_log2(step / self.delta_scale[channel]) as f32
    }

    /// Whether the model can serve this stream.
    pub fn check_schema(&self, schema: &StreamSchema) -> Result<(), CodecError> {
        if schema.channels != self.channels {
            return Err(CodecError::ModelMismatch(format!(
                "model for {} expects channels {:?}, stream {} has {:?}",
                self.stream, self.channels, schema.name, schema.channels
            )));
        }
        Ok(())
    }
}

/// One fully connected layer, weights stored `[input][output]` as Burn's `Linear` does.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    pub inputs: usize,
    pub outputs: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Dense {
    fn apply(&self, x: &[f32], y: &mut [f32], relu: bool) {
        y[..self.outputs].copy_from_slice(&self.bias);
        for (i, &xi) in x.iter().enumerate().take(self.inputs) {
            let row = &self.weight[i * self.outputs..(i + 1) * self.outputs];
            for (acc, &w) in y.iter_mut().zip(row) {
                *acc += xi * w;
            }
        }
        if relu {
            for v in &mut y[..self.outputs] {
                *v = v.max(0.0);
            }
        }
    }
}

/// A trained predictor, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct NeuralModel {
    pub shape: ModelShape,
    /// The MLP: ReLU after every layer but the last.
    pub layers: Vec<Dense>,
    /// A linear map from input to output added to the MLP's: linear prediction (what the
    /// classical codecs do) is then the easy case, and the MLP learns what is left.
    pub skip: Dense,
    /// Identifies the exact weights; written into every packet so that a decoder holding
    /// other weights refuses it instead of decoding garbage.
    pub fingerprint: u64,
}

/// Scratch buffers for [`NeuralModel::forward`].
#[derive(Debug, Default)]
pub struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
    skip: Vec<f32>,
}

impl NeuralModel {
    pub fn new(
        shape: ModelShape,
        layers: Vec<Dense>,
        skip: Dense,
    ) -> Result<NeuralModel, CodecError> {
        let bad = |m: String| Err(CodecError::ModelMismatch(m));
        let c = shape.channels.len();
        if c == 0 || shape.context < 2 {
            return bad("a model needs channels and a context of at least 2 frames".into());
        }
        for (name, v, n) in [
            ("delta_scale", &shape.delta_scale, c),
            ("level_mean", &shape.level_mean, c),
            ("level_scale", &shape.level_scale, c),
            (
                "condition_scale",
                &shape.condition_scale,
                shape.conditions.len(),
            ),
        ] {
            if v.len() != n || v.iter().any(|x| !x.is_finite()) {
                return bad(format!("{name} needs {n} finite values, has {v:?}"));
            }
        }
        if shape
            .delta_scale
            .iter()
            .chain(&shape.level_scale)
            .any(|&s| s <= 0.0)
        {
            return bad("delta_scale and level_scale must be positive".into());
        }
        let mut width = shape.input_width();
        let skip_ok = skip.inputs == width
            && skip.outputs == shape.output_width()
            && skip.weight.len() == skip.inputs * skip.outputs
            && skip.bias.len() == skip.outputs
            && skip.weight.iter().chain(&skip.bias).all(|w| w.is_finite());
        if !skip_ok {
            return bad(format!(
                "the skip layer is {}x{}, expected {width}x{}",
                skip.inputs,
                skip.outputs,
                shape.output_width()
            ));
        }
        for (i, layer) in layers.iter().enumerate() {
            if layer.inputs != width
                || layer.weight.len() != layer.inputs * layer.outputs
                || layer.bias.len() != layer.outputs
            {
                return bad(format!(
                    "layer {i} is {}x{} with {} weights, expected {width} inputs",
                    layer.inputs,
                    layer.outputs,
                    layer.weight.len()
                ));
            }
            if layer
                .weight
                .iter()
                .chain(&layer.bias)
                .any(|w| !w.is_finite())
            {
                return bad(format!("layer {i} has non-finite weights"));
            }
            width = layer.outputs;
        }
        if layers.is_empty() || width != shape.output_width() {
            return bad(format!(
                "the network ends with {width} outputs, the stream needs {}",
                shape.output_width()
            ));
        }
        let fingerprint = fingerprint(&shape, layers.iter().chain([&skip]));
        Ok(NeuralModel {
            shape,
            layers,
            skip,
            fingerprint,
        })
    }

    /// The fingerprint's low 32 bits, as packets carry it.
    pub fn packet_fingerprint(&self) -> u32 {
        self.fingerprint as u32
    }

    /// Runs the network; returns `[mean_c..., log2_scale_c...]` in delta_scale units.
    pub fn forward<'s>(&self, input: &[f32], scratch: &'s mut Scratch) -> &'s [f32] {
        let widest = self.layers.iter().map(|l| l.outputs).max().unwrap_or(0);
        scratch.a.resize(widest.max(input.len()), 0.0);
        scratch.b.resize(widest, 0.0);
        scratch.a[..input.len()].copy_from_slice(input);
        scratch.skip.resize(self.skip.outputs, 0.0);
        self.skip.apply(input, &mut scratch.skip, false);
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            layer.apply(&scratch.a[..layer.inputs], &mut scratch.b, i < last);
            std::mem::swap(&mut scratch.a, &mut scratch.b);
        }
        let out = &mut scratch.a[..self.shape.output_width()];
        for (o, s) in out.iter_mut().zip(&scratch.skip) {
            *o += s;
        }
        out
    }

    /// The model as a burnpack weights file, in the layout `lydlr-learn` writes (tools and
    /// tests that build packages without Burn).
    pub fn to_burnpack(&self) -> Vec<u8> {
        let names: Vec<(String, String)> = (0..self.layers.len())
            .map(|i| (format!("layers.{i}.weight"), format!("layers.{i}.bias")))
            .chain([("skip.weight".to_owned(), "skip.bias".to_owned())])
            .collect();
        let mut tensors = Vec::with_capacity(2 * names.len());
        for (layer, (w, b)) in self.layers.iter().chain([&self.skip]).zip(&names) {
            tensors.push((
                w.as_str(),
                vec![layer.inputs, layer.outputs],
                layer.weight.as_slice(),
            ));
            tensors.push((b.as_str(), vec![layer.outputs], layer.bias.as_slice()));
        }
        crate::neural::burnpack::write(&tensors, &shape_metadata(&self.shape, self.layers.len()))
    }

    /// Parses a burnpack (`.bpk`) weights file written by `lydlr-learn`.
    pub fn from_burnpack(bytes: &[u8]) -> Result<NeuralModel, CodecError> {
        let pack = crate::neural::burnpack::read(bytes)?;
        let meta = &pack.metadata;
        let get = |key: &str| {
            meta.get(key)
                .ok_or_else(|| CodecError::ModelMismatch(format!("weights lack metadata {key}")))
        };
        let list = |key: &str| -> Result<Vec<String>, CodecError> {
            let text = get(key)?;
            Ok(if text.is_empty() {
                Vec::new()
            } else {
                text.split(',').map(str::to_owned).collect()
            })
        };
        let numbers = |key: &str| -> Result<Vec<f64>, CodecError> {
            list(key)?
                .iter()
                .map(|v| {
                    v.parse::<f64>().map_err(|_| {
                        CodecError::ModelMismatch(format!("{key}: {v:?} is not a number"))
                    })
                })
                .collect()
        };
        let count = |key: &str| -> Result<usize, CodecError> {
            get(key)?
                .parse()
                .map_err(|_| CodecError::ModelMismatch(format!("{key} is not a count")))
        };
        let shape = ModelShape {
            stream: get(keys::STREAM)?.clone(),
            channels: list(keys::CHANNELS)?,
            conditions: list(keys::CONDITIONS)?,
            context: count(keys::CONTEXT)?,
            delta_scale: numbers(keys::DELTA_SCALE)?,
            level_mean: numbers(keys::LEVEL_MEAN)?,
            level_scale: numbers(keys::LEVEL_SCALE)?,
            condition_scale: numbers(keys::CONDITION_SCALE)?,
            local_unit: meta.get(keys::LOCAL_UNIT).is_some_and(|v| v == "true"),
            layout: match meta.get(keys::LAYOUT).map(String::as_str) {
                None | Some("frame") => Layout::Frame,
                Some("scan") => Layout::Scan,
                Some(other) => {
                    return Err(CodecError::ModelMismatch(format!(
                        "unknown layout {other:?}"
                    )));
                }
            },
        };
        let layer_count = count(keys::LAYERS)?;
        if layer_count == 0 || layer_count > 16 {
            return Err(CodecError::ModelMismatch(format!(
                "{layer_count} layers: expected 1 to 16"
            )));
        }
        let dense = |prefix: &str| -> Result<Dense, CodecError> {
            let tensor = |name: String| {
                pack.tensors
                    .get(&name)
                    .ok_or_else(|| CodecError::ModelMismatch(format!("weights lack {name}")))
            };
            let w = tensor(format!("{prefix}.weight"))?;
            let b = tensor(format!("{prefix}.bias"))?;
            let [inputs, outputs] = w.shape[..] else {
                return Err(CodecError::ModelMismatch(format!(
                    "{prefix}.weight has shape {:?}",
                    w.shape
                )));
            };
            Ok(Dense {
                inputs,
                outputs,
                weight: w.values.clone(),
                bias: b.values.clone(),
            })
        };
        let layers = (0..layer_count)
            .map(|i| dense(&format!("layers.{i}")))
            .collect::<Result<Vec<_>, _>>()?;
        let skip = dense("skip")?;
        NeuralModel::new(shape, layers, skip)
    }
}

/// FNV-1a over the shape and the weights' bits.
fn fingerprint<'a>(shape: &ModelShape, layers: impl Iterator<Item = &'a Dense>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(format!("{shape:?}").as_bytes());
    for layer in layers {
        for v in layer.weight.iter().chain(&layer.bias) {
            eat(&v.to_bits().to_le_bytes());
        }
    }
    h
}

/// Text form of a list of numbers for the weights' metadata (round-trips exactly).
pub fn format_numbers(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:?}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The metadata map a weights file needs besides its tensors.
pub fn shape_metadata(shape: &ModelShape, layers: usize) -> BTreeMap<String, String> {
    [
        (keys::STREAM, shape.stream.clone()),
        (keys::CHANNELS, shape.channels.join(",")),
        (keys::CONDITIONS, shape.conditions.join(",")),
        (keys::CONTEXT, shape.context.to_string()),
        (keys::DELTA_SCALE, format_numbers(&shape.delta_scale)),
        (keys::LEVEL_MEAN, format_numbers(&shape.level_mean)),
        (keys::LEVEL_SCALE, format_numbers(&shape.level_scale)),
        (
            keys::CONDITION_SCALE,
            format_numbers(&shape.condition_scale),
        ),
        (keys::LAYERS, layers.to_string()),
        (keys::LAYOUT, shape.layout.name().to_owned()),
        (keys::LOCAL_UNIT, shape.local_unit.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}
