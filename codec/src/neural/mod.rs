//! The neural codec (codec id 3, version 5): a learned predictor and a learned residual
//! distribution, with the error bound of the classical bounded codec.
//!
//! For every frame, the [`NeuralModel`] sees the stream's last reconstructed frames (what the
//! decoder has), the latest frame of its conditioning streams when the caller supplies them
//! (motor commands and encoders for the IMU), and the quantisation step. It predicts each
//! channel's value and the scale of a Laplace distribution around it. The residual is
//! quantised to the step (`2 eb`, or `2 e + 1` ADC counts; one count is lossless), and the index
//! is range-coded with the discretised Laplace of that scale, taken from a fixed grid of
//! [`laplace::SCALES`] tables so that the encoder and the decoder use identical frequencies.
//! Layout in `codec/FORMAT.md`.

pub mod burnpack;
pub mod laplace;
mod model;
pub mod package;

use std::sync::Arc;

use constriction::stream::queue::{DefaultRangeDecoder, DefaultRangeEncoder};
use constriction::stream::{Decode, Encode};

use crate::column::Representation;
use crate::container::{CodecId, Packet, PacketHeader};
use crate::entropy::{ResidualDecoder, ResidualEncoder, unzigzag, zigzag};
use crate::lossless::{check_block, check_header};
use crate::lossy::{MAX_INDEX, bound_in_units, round_to_type};
use crate::timestamps::{decode_timestamps, encode_timestamps, read_timestamp_head};
use crate::varint::{Reader, put_uvarint};
use crate::{Codec, CodecError, ErrorBound, Frame, StreamSchema};
use laplace::{ESCAPE, LaplaceTables, index_of, scale_index, symbol_of};
pub use model::{
    Dense, Layout, ModelShape, NeuralModel, Scratch, format_numbers, keys, shape_metadata,
};

/// The neural codec's payload layout version (`codec/FORMAT.md`).
/// The only version this build reads: versions 3 and 4 coded their timestamps' residuals'
/// top mantissa bits after the bucket symbols, from a probability of their own
/// ([`crate::entropy`]).
pub const VERSION: u8 = 5;
const FLAG_CONDITIONED: u8 = 1;
const FLAG_SCALE_OFFSETS: u8 = 2;
/// Every timestamp is the first plus a whole number of the schema's nominal periods: the
/// timestamp section is left out.
const FLAG_REGULAR_TIME: u8 = 4;
/// A channel's mode word: `e << 1` for counts, `1` for float (an `f64` bound follows).
const MODE_FLOAT: u64 = 1;
/// An escape's word: `zigzag(q) << 1` for a large index, `1` for an exact value.
const ESCAPE_EXACT: u64 = 1;

/// How one channel is quantised in a block.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Integer counts of `lsb`, quantised to `2 e + 1` counts (`e = 0` is lossless).
    Units {
        lsb: f64,
        e: i64,
        repr: Representation,
    },
    /// Floating point, quantised to `2 eb`, misses sent exactly.
    Float { eb: f64 },
}

impl Mode {
    fn step(self) -> f64 {
        match self {
            Mode::Units { lsb, e, .. } => (2 * e + 1) as f64 * lsb,
            Mode::Float { eb } => 2.0 * eb,
        }
    }
}

/// Neural predictive coding at one quality level.
#[derive(Debug, Clone)]
pub struct NeuralCodec {
    pub model: Arc<NeuralModel>,
    pub bound: ErrorBound,
    /// Written into the packet header (index on the stream's quality ladder).
    pub quality: u8,
}

/// The latest conditioning frame at or before each time: sample and hold, as a decoder that
/// has already received those streams would see them.
struct Held<'a> {
    frames: &'a [Frame],
    next: usize,
}

impl<'a> Held<'a> {
    fn at(&mut self, t: i64) -> Option<&'a [f64]> {
        while self.next < self.frames.len() && self.frames[self.next].timestamp_ns <= t {
            self.next += 1;
        }
        self.next
            .checked_sub(1)
            .map(|i| self.frames[i].values.as_slice())
    }
}

/// The prediction loop shared by encoder and decoder: for each frame and channel it asks
/// `code` for the reconstruction given the prediction and the scale's grid index.
fn predict_block(
    model: &NeuralModel,
    times: &[i64],
    steps: &[f64],
    condition: Option<&[Frame]>,
    mut code: impl FnMut(usize, usize, f64, usize) -> Result<f64, CodecError>,
) -> Result<Vec<Vec<f64>>, CodecError> {
    let shape = &model.shape;
    let c = shape.channels.len();
    let k = shape.context;
    let step_log2: Vec<f32> = (0..c).map(|ch| shape.step_log2(ch, steps[ch])).collect();
    let mut held = condition.map(|frames| Held { frames, next: 0 });
    let mut out: Vec<Vec<f64>> = Vec::with_capacity(times.len());
    let mut input = vec![0.0f32; shape.input_width()];
    let mut scratch = Scratch::default();
    let (mut unit, mut local_log2) = (vec![0.0f64; c], vec![0.0f32; c]);
    for (t, &time) in times.iter().enumerate() {
        let mut frame = Vec::with_capacity(c);
        if t == 0 {
            for (ch, &own_step) in step_log2.iter().enumerate() {
                // No history: a scan's beam is predicted by the one before it, anything else
                // by its training mean.
                let (mu, spread) = match (shape.layout, frame.last()) {
                    (Layout::Scan, Some(&previous)) => (previous, shape.delta_scale[ch] * 8.0),
                    _ => (shape.level_mean[ch], shape.level_scale[ch]),
                };
                let log_scale = shape.step_log2(ch, spread) - own_step
                    + shape.step_log2(ch, shape.delta_scale[ch]);
                frame.push(code(t, ch, mu, scale_index(log_scale))?);
            }
        } else {
            let cond = held.as_mut().and_then(|h| h.at(time));
            let cond = cond.filter(|v| v.len() == shape.conditions.len());
            // Rows before the block's start repeat its first frame.
            let history: Vec<&[f64]> = (0..k)
                .map(|j| out[(t + j).saturating_sub(k)].as_slice())
                .collect();
            let last = history[k - 1];
            let finite = |m: f32| if m.is_finite() { f64::from(m) } else { 0.0 };
            match shape.layout {
                Layout::Scan => {
                    for ch in 0..c {
                        let own_step = step_log2[ch];
                        shape.scan_features(&history, t, &frame, ch, own_step, cond, &mut input);
                        let prediction = model.forward(&input, &mut scratch);
                        let mu = last[ch] + finite(prediction[0]) * shape.delta_scale[ch];
                        let scale = scale_index(prediction[1] - own_step);
                        frame.push(code(t, ch, mu, scale)?);
                    }
                }
                Layout::Frame => {
                    shape.features(
                        &history,
                        t,
                        steps,
                        cond,
                        &mut input,
                        &mut unit,
                        &mut local_log2,
                    );
                    let prediction = model.forward(&input, &mut scratch);
                    for ch in 0..c {
                        let mu = last[ch] + finite(prediction[ch]) * unit[ch];
                        let scale = scale_index(prediction[c + ch] - local_log2[ch]);
                        frame.push(code(t, ch, mu, scale)?);
                    }
                }
            }
        }
        out.push(frame);
    }
    Ok(out)
}

/// Per-channel correction of the predicted scales, in grid steps (quarter octaves), chosen by
/// the encoder for each block: a model that is over- or under-confident on this robot's data
/// (another sensor, another platform) costs a little instead of a lot.
const MIN_OFFSET: i8 = -8;
const MAX_OFFSET: i8 = 24;

fn offset_scale(scale: usize, offset: i8) -> usize {
    (scale as i64 + i64::from(offset)).clamp(0, laplace::SCALES as i64 - 1) as usize
}

/// The offset that codes a channel's symbols in the fewest bits: a coarse pass every octave,
/// then the quarter octaves around the best.
fn best_scale_offset(tables: &LaplaceTables, symbols: &[(usize, usize)]) -> i8 {
    let cost = |o: i8| -> f64 {
        symbols
            .iter()
            .map(|&(symbol, scale)| tables.cost_bits(offset_scale(scale, o), symbol))
            .sum()
    };
    let pick = |candidates: &mut dyn Iterator<Item = i8>| {
        candidates
            .map(|o| (cost(o), o))
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.abs().cmp(&b.1.abs())))
            .map_or(0, |(_, o)| o)
    };
    let coarse = pick(&mut (MIN_OFFSET..=MAX_OFFSET).step_by(4));
    pick(&mut (coarse.saturating_sub(3).max(MIN_OFFSET)..=coarse.saturating_add(3).min(MAX_OFFSET)))
}

/// The names of the values [`merge_conditions`] produces: `stream.channel`, and
/// `stream.d_channel` for a counter's change.
pub fn condition_names(schemas: &[&StreamSchema]) -> Vec<String> {
    schemas
        .iter()
        .flat_map(|s| {
            let prefix = if is_counter(s) { "d_" } else { "" };
            s.channels
                .iter()
                .map(move |c| format!("{}.{prefix}{c}", s.name))
        })
        .collect()
}

fn is_counter(schema: &StreamSchema) -> bool {
    schema.kind == crate::SensorKind::WheelEncoder
}

/// Conditioning frames from several decoded streams (sensor-motor fusion): at every instant
/// where any of them has a frame, the latest values of each, concatenated in order. A counter
/// (wheel encoder ticks) contributes its change since its previous frame, not its running
/// total. Instants before every stream has delivered are left out. Encoder and decoder
/// build the same frames from the same (reconstructed) streams.
pub fn merge_conditions(streams: &[(&StreamSchema, &[Frame])]) -> Vec<Frame> {
    let mut next = vec![0usize; streams.len()];
    let mut out = Vec::new();
    loop {
        let Some(t) = streams
            .iter()
            .zip(&next)
            .filter_map(|((_, frames), &i)| frames.get(i).map(|f| f.timestamp_ns))
            .min()
        else {
            return out;
        };
        for ((_, frames), i) in streams.iter().zip(next.iter_mut()) {
            while frames.get(*i).is_some_and(|f| f.timestamp_ns <= t) {
                *i += 1;
            }
        }
        let mut values = Vec::new();
        let mut complete = true;
        for ((schema, frames), &i) in streams.iter().zip(&next) {
            let (Some(latest), before) = (i.checked_sub(1).map(|j| &frames[j]), i.checked_sub(2))
            else {
                complete = false;
                break;
            };
            if is_counter(schema) {
                let Some(previous) = before.map(|j| &frames[j]) else {
                    complete = false;
                    break;
                };
                values.extend(
                    latest
                        .values
                        .iter()
                        .zip(&previous.values)
                        .map(|(a, b)| a - b),
                );
            } else {
                values.extend_from_slice(&latest.values);
            }
        }
        if complete {
            out.push(Frame::new(t, values));
        }
    }
}

/// The schema's nominal sample period in nanoseconds, when it has one.
fn nominal_period(schema: &StreamSchema) -> Option<i64> {
    let period = (schema.rate_hz > 0.0 && schema.rate_hz.is_finite())
        .then(|| (1e9 / schema.rate_hz).round() as i64)?;
    (period > 0).then_some(period)
}

fn regular_time(first: i64, period: i64, i: usize) -> Option<i64> {
    first.checked_add(period.checked_mul(i64::try_from(i).ok()?)?)
}

/// The counts prediction: `mu` in counts, rounded; unusable predictions predict zero.
fn counts_prediction(mu: f64, lsb: f64) -> i64 {
    let p = (mu / lsb).round();
    if p.is_finite() && p.abs() < MAX_INDEX {
        p as i64
    } else {
        0
    }
}

impl NeuralCodec {
    pub fn new(model: Arc<NeuralModel>, bound: ErrorBound, quality: u8) -> Self {
        Self {
            model,
            bound,
            quality,
        }
    }

    fn modes(&self, schema: &StreamSchema, frames: &[Frame]) -> Result<Vec<Mode>, CodecError> {
        let bounds = self.bound.per_channel(schema, frames);
        let ty = schema.sample_type;
        let mut column = Vec::with_capacity(frames.len());
        bounds
            .iter()
            .enumerate()
            .map(|(c, &eb)| {
                column.clear();
                column.extend(frames.iter().map(|f| f.values[c]));
                let (repr, lsb) = match schema.lsb(c) {
                    Some(lsb) => (Representation::LsbCounts, lsb),
                    None if ty.is_integer() => (Representation::Integer, 1.0),
                    None => (Representation::F64Bits, 0.0),
                };
                let counts = lsb > 0.0 && repr.to_integers(&column, lsb, ty).is_some();
                if counts {
                    let e = bound_in_units(eb, lsb);
                    Ok(Mode::Units { lsb, e, repr })
                } else if eb > 0.0 {
                    Ok(Mode::Float { eb })
                } else {
                    Err(CodecError::Unsupported(
                        "lossless neural coding needs integer or ADC-count samples",
                    ))
                }
            })
            .collect()
    }

    /// Encodes a block, conditioned on the streams the model names when `condition` holds
    /// their frames (one frame per instant, values in the model's `conditions` order).
    pub fn encode_conditioned(
        &self,
        schema: &StreamSchema,
        frames: &[Frame],
        condition: Option<&[Frame]>,
    ) -> Result<Packet, CodecError> {
        let frame_count = check_block(schema, frames)?;
        let model = &self.model;
        model.shape.check_schema(schema)?;
        let modes = self.modes(schema, frames)?;
        let bounds = self.bound.per_channel(schema, frames);
        let ty = schema.sample_type;
        let first = frames[0].timestamp_ns;
        let times: Vec<i64> = frames.iter().map(|f| f.timestamp_ns).collect();
        let condition = condition.filter(|_| !model.shape.conditions.is_empty());

        let mut payload = Vec::with_capacity(64 + frames.len() * schema.channels.len() / 2);
        payload.push(if condition.is_some() {
            FLAG_CONDITIONED
        } else {
            0
        });
        payload.extend_from_slice(&model.packet_fingerprint().to_le_bytes());
        for mode in &modes {
            match *mode {
                Mode::Units { e, .. } => put_uvarint(&mut payload, (e as u64) << 1),
                Mode::Float { eb } => {
                    put_uvarint(&mut payload, MODE_FLOAT);
                    payload.extend_from_slice(&eb.to_le_bytes());
                }
            }
        }
        let regular = nominal_period(schema).is_some_and(|period| {
            times
                .iter()
                .enumerate()
                .all(|(i, &t)| Some(t) == regular_time(first, period, i))
        });
        let (mut head, mut time_bytes) = (Vec::new(), Vec::new());
        if regular {
            payload[0] |= FLAG_REGULAR_TIME;
        } else {
            let mut time_coder = ResidualEncoder::new();
            encode_timestamps(&mut head, &mut time_coder, &times, schema);
            time_bytes = time_coder.finish();
        }

        let tables = LaplaceTables::get();
        let mut side = Vec::new();
        let steps: Vec<f64> = modes.iter().map(|m| m.step()).collect();
        // Symbols are range-coded after the pass, once each channel's scale offset is known;
        // escapes go to the side section in coding order as they occur.
        let mut coded: Vec<(usize, usize, usize)> = Vec::with_capacity(frames.len() * modes.len());
        let mut emit = |ch: usize, q: Option<i64>, scale: usize, side: &mut Vec<u8>| {
            let symbol = q.and_then(symbol_of).unwrap_or(ESCAPE);
            coded.push((ch, symbol, scale));
            if symbol == ESCAPE {
                match q {
                    // |q| <= 2^53 here, so the shifted zigzag fits.
                    Some(q) => put_uvarint(side, zigzag(q) << 1),
                    None => put_uvarint(side, ESCAPE_EXACT),
                }
            }
        };
        predict_block(model, &times, &steps, condition, |t, ch, mu, scale| {
            let x = frames[t].values[ch];

            match modes[ch] {
                Mode::Units { lsb, e, repr } => {
                    let u = repr.to_integer(x, lsb, ty).unwrap_or(0);
                    let step = 2 * i128::from(e) + 1;
                    let p = i128::from(counts_prediction(mu, lsb));
                    let d = i128::from(u) - p;
                    let q = (d + if d >= 0 { e.into() } else { -i128::from(e) }) / step;
                    let r = i64::try_from(p + q * step).ok();
                    let value = r.and_then(|r| repr.value_of(r, lsb, ty).ok());
                    match (value, i64::try_from(q)) {
                        // Checked against the requested bound: rounding to the sample type
                        // may move a value by a hair past `e` counts, never past `eb`.
                        (Some(v), Ok(q)) if e == 0 || (x - v).abs() <= bounds[ch] => {
                            emit(ch, Some(q), scale, &mut side);
                            Ok(v)
                        }
                        _ => {
                            emit(ch, None, scale, &mut side);
                            put_uvarint(&mut side, zigzag(u));
                            Ok(x)
                        }
                    }
                }
                Mode::Float { eb } => {
                    let step = 2.0 * eb;
                    let q = ((x - mu) / step).round();
                    let v = round_to_type(mu + q * step, ty);
                    if x.is_finite() && q.abs() <= MAX_INDEX && (x - v).abs() <= eb {
                        emit(ch, Some(q as i64), scale, &mut side);
                        Ok(v)
                    } else {
                        emit(ch, None, scale, &mut side);
                        side.extend_from_slice(&x.to_le_bytes());
                        Ok(x)
                    }
                }
            }
        })?;
        let mut per_channel: Vec<Vec<(usize, usize)>> = vec![Vec::new(); modes.len()];
        for &(ch, symbol, scale) in &coded {
            per_channel[ch].push((symbol, scale));
        }
        let offsets: Vec<i8> = per_channel
            .iter()
            .map(|symbols| best_scale_offset(tables, symbols))
            .collect();
        if offsets.iter().any(|&o| o != 0) {
            payload[0] |= FLAG_SCALE_OFFSETS;
            payload.extend(offsets.iter().map(|&o| o as u8));
        }
        let mut coder = DefaultRangeEncoder::new();
        for &(ch, symbol, scale) in &coded {
            // Every symbol has a nonzero frequency, so encoding cannot fail.
            let _ = coder.encode_symbol(symbol, tables.model(offset_scale(scale, offsets[ch])));
        }
        if !regular {
            put_uvarint(&mut payload, head.len() as u64);
            payload.extend_from_slice(&head);
            put_uvarint(&mut payload, time_bytes.len() as u64);
            payload.extend_from_slice(&time_bytes);
        }
        put_uvarint(&mut payload, side.len() as u64);
        payload.extend_from_slice(&side);
        let words = coder.into_compressed().unwrap_or_default();
        payload.extend(words.iter().flat_map(|w| w.to_le_bytes()));
        Ok(Packet {
            header: PacketHeader::for_block(
                CodecId::Neural,
                VERSION,
                self.quality,
                schema,
                frame_count,
                first,
            ),
            payload,
        })
    }

    /// Decodes a block; `condition` must be what the encoder was given, when it was given any.
    pub fn decode_conditioned(
        &self,
        schema: &StreamSchema,
        packet: &Packet,
        condition: Option<&[Frame]>,
    ) -> Result<Vec<Frame>, CodecError> {
        check_header(packet, CodecId::Neural, VERSION, schema)?;
        let model = &self.model;
        model.shape.check_schema(schema)?;
        let n = usize::from(packet.header.frame_count);
        let ty = schema.sample_type;
        let mut reader = Reader::new(&packet.payload);
        let flags = reader.u8()?;
        let condition = if flags & FLAG_CONDITIONED != 0 {
            Some(condition.ok_or(CodecError::MissingCondition)?)
        } else {
            None
        };
        let fingerprint = u32::from_le_bytes(reader.array()?);
        if fingerprint != model.packet_fingerprint() {
            return Err(CodecError::ModelMismatch(format!(
                "packet was coded with model {fingerprint:08x}, this decoder holds {:08x}",
                model.packet_fingerprint()
            )));
        }
        let mut modes = Vec::with_capacity(schema.channels.len());
        for c in 0..schema.channels.len() {
            let word = reader.uvarint()?;
            modes.push(match word {
                MODE_FLOAT => {
                    let eb = f64::from_le_bytes(reader.array()?);
                    if !(eb.is_finite() && eb > 0.0) {
                        return Err(CodecError::Corrupt("error bound must be positive"));
                    }
                    Mode::Float { eb }
                }
                _ if word & 1 == 0 => {
                    let e = i64::try_from(word >> 1)
                        .ok()
                        .filter(|&e| e < 1 << 52)
                        .ok_or(CodecError::Corrupt("quantisation step out of range"))?;
                    let (repr, lsb) = match schema.lsb(c) {
                        Some(lsb) => (Representation::LsbCounts, lsb),
                        None => (Representation::Integer, 1.0),
                    };
                    Mode::Units { lsb, e, repr }
                }
                _ => return Err(CodecError::Corrupt("unknown channel mode")),
            });
        }
        let with_offsets = flags & FLAG_SCALE_OFFSETS != 0;
        let offsets = (0..modes.len())
            .map(|_| {
                if !with_offsets {
                    return Ok(0);
                }
                let o = reader.u8()? as i8;
                if (MIN_OFFSET..=MAX_OFFSET).contains(&o) {
                    Ok(o)
                } else {
                    Err(CodecError::Corrupt("scale offset out of range"))
                }
            })
            .collect::<Result<Vec<i8>, CodecError>>()?;
        let t0 = packet.header.first_timestamp_ns;
        let times = if flags & FLAG_REGULAR_TIME != 0 {
            let period = nominal_period(schema).ok_or(CodecError::Corrupt(
                "regular timestamps for a stream without a rate",
            ))?;
            (0..n)
                .map(|i| regular_time(t0, period, i))
                .collect::<Option<Vec<i64>>>()
                .ok_or(CodecError::Corrupt("regular timestamps overflow"))?
        } else {
            let head_len = usize::try_from(reader.uvarint()?).unwrap_or(usize::MAX);
            let mut head = Reader::new(reader.take(head_len)?);
            let time_head = read_timestamp_head(&mut head, schema)?;
            let time_len = usize::try_from(reader.uvarint()?).unwrap_or(usize::MAX);
            let mut time_decoder = ResidualDecoder::new(reader.take(time_len)?)?;
            decode_timestamps(&mut time_decoder, n, &time_head, t0, schema)?
        };
        let side_len = usize::try_from(reader.uvarint()?).unwrap_or(usize::MAX);
        let mut side = Reader::new(reader.take(side_len)?);
        let rest = reader.take(reader.remaining())?;
        if rest.len() % 4 != 0 {
            return Err(CodecError::Corrupt(
                "range-coded section is not whole words",
            ));
        }
        let words: Vec<u32> = rest
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        const CORRUPT: CodecError = CodecError::Corrupt("range-coded section does not decode");
        let mut coder = DefaultRangeDecoder::from_compressed(words).map_err(|_| CORRUPT)?;
        let tables = LaplaceTables::get();
        let steps: Vec<f64> = modes.iter().map(|m| m.step()).collect();
        let values = predict_block(model, &times, &steps, condition, |_, ch, mu, scale| {
            let symbol = coder
                .decode_symbol(tables.model(offset_scale(scale, offsets[ch])))
                .map_err(|_| CORRUPT)?;
            let q = if symbol == ESCAPE {
                match side.uvarint()? {
                    ESCAPE_EXACT => None,
                    word if word & 1 == 0 => Some(unzigzag(word >> 1)),
                    _ => return Err(CodecError::Corrupt("unknown escape")),
                }
            } else {
                Some(index_of(symbol))
            };
            match (modes[ch], q) {
                (Mode::Units { lsb, e, repr }, Some(q)) => {
                    let p = i128::from(counts_prediction(mu, lsb));
                    let r = i64::try_from(p + i128::from(q) * (2 * i128::from(e) + 1))
                        .map_err(|_| CodecError::Corrupt("reconstruction out of range"))?;
                    repr.value_of(r, lsb, ty)
                }
                (Mode::Units { lsb, repr, .. }, None) => {
                    repr.value_of(unzigzag(side.uvarint()?), lsb, ty)
                }
                (Mode::Float { eb }, Some(q)) => Ok(round_to_type(mu + q as f64 * 2.0 * eb, ty)),
                (Mode::Float { .. }, None) => Ok(f64::from_le_bytes(side.array()?)),
            }
        })?;
        Ok(times
            .into_iter()
            .zip(values)
            .map(|(t, v)| Frame::new(t, v))
            .collect())
    }
}

impl Codec for NeuralCodec {
    fn id(&self) -> CodecId {
        CodecId::Neural
    }

    fn encode(&self, schema: &StreamSchema, frames: &[Frame]) -> Result<Packet, CodecError> {
        self.encode_conditioned(schema, frames, None)
    }

    fn decode(&self, schema: &StreamSchema, packet: &Packet) -> Result<Vec<Frame>, CodecError> {
        self.decode_conditioned(schema, packet, None)
    }
}

/// The fingerprint of the model a neural packet was coded with (see
/// [`NeuralModel::packet_fingerprint`]), to pick the decoder's model.
pub fn packet_model(packet: &Packet) -> Result<u32, CodecError> {
    match packet.payload.get(1..5) {
        Some(&[a, b, c, d]) if packet.header.codec == CodecId::Neural => {
            Ok(u32::from_le_bytes([a, b, c, d]))
        }
        Some(_) => Err(CodecError::Corrupt("not a neural packet")),
        None => Err(CodecError::Corrupt(
            "neural packet shorter than its model fingerprint",
        )),
    }
}

/// A small model with pseudo-random weights, for tests and benchmarks of the codec
/// machinery (a trained one comes from `lydlr-learn`).
pub fn untrained_model(
    schema: &StreamSchema,
    context: usize,
    hidden: usize,
    seed: u64,
) -> NeuralModel {
    let c = schema.channels.len();
    let shape = ModelShape {
        stream: schema.name.clone(),
        channels: schema.channels.clone(),
        conditions: vec!["cmd.left".into(), "cmd.right".into()],
        context,
        delta_scale: schema
            .noise_sigma
            .iter()
            .map(|&s| if s > 0.0 { s } else { 1.0 })
            .collect(),
        level_mean: vec![0.0; c],
        level_scale: vec![1.0; c],
        condition_scale: vec![1.0; 2],
        layout: Layout::Frame,
        local_unit: true,
    };
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
    };
    let widths = [shape.input_width(), hidden, hidden, shape.output_width()];
    let skip = Dense {
        inputs: shape.input_width(),
        outputs: shape.output_width(),
        weight: (0..shape.input_width() * shape.output_width())
            .map(|_| next() * 0.1)
            .collect(),
        bias: vec![0.0; shape.output_width()],
    };
    let layers = widths
        .windows(2)
        .map(|w| Dense {
            inputs: w[0],
            outputs: w[1],
            weight: (0..w[0] * w[1]).map(|_| next()).collect(),
            bias: (0..w[1]).map(|_| next()).collect(),
        })
        .collect();
    // The widths above always agree with the shape.
    NeuralModel::new(shape, layers, skip).expect("consistent untrained model")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{imu_frames, imu_schema};
    use proptest::prelude::*;

    const GOLDEN: [u32; 3] = [0x9072_c437, 0x060b_44e9, 0x0964_848a];

    fn codec(bound: ErrorBound) -> NeuralCodec {
        NeuralCodec::new(Arc::new(untrained_model(&imu_schema(), 8, 16, 7)), bound, 1)
    }

    fn commands(frames: &[Frame]) -> Vec<Frame> {
        frames
            .iter()
            .step_by(4)
            .enumerate()
            .map(|(i, f)| Frame::new(f.timestamp_ns, vec![(i % 7) as f64, -((i % 5) as f64)]))
            .collect()
    }

    fn round_trip(codec: &NeuralCodec, frames: &[Frame], cond: Option<&[Frame]>) -> Vec<Frame> {
        let schema = imu_schema();
        let packet = codec.encode_conditioned(&schema, frames, cond).unwrap();
        let parsed = Packet::from_bytes(&packet.to_bytes()).unwrap();
        codec.decode_conditioned(&schema, &parsed, cond).unwrap()
    }

    #[test]
    fn lossless_on_adc_counts_is_bit_exact_with_and_without_conditioning() {
        let frames = imu_frames(120, 3, 5.0);
        let codec = codec(ErrorBound::Absolute(0.0));
        let cond = commands(&frames);
        for c in [None, Some(cond.as_slice())] {
            let back = round_trip(&codec, &frames, c);
            assert!(frames.iter().zip(&back).all(|(a, b)| a.bit_eq(b)));
        }
    }

    #[test]
    fn a_conditioned_packet_needs_its_condition_and_its_model() {
        let schema = imu_schema();
        let frames = imu_frames(40, 4, 5.0);
        let cond = commands(&frames);
        let codec = codec(ErrorBound::Sigma(1.0));
        let packet = codec
            .encode_conditioned(&schema, &frames, Some(&cond))
            .unwrap();
        assert_eq!(
            codec.decode(&schema, &packet),
            Err(CodecError::MissingCondition)
        );
        let other = NeuralCodec::new(Arc::new(untrained_model(&schema, 8, 16, 8)), codec.bound, 1);
        assert!(matches!(
            other.decode_conditioned(&schema, &packet, Some(&cond)),
            Err(CodecError::ModelMismatch(_))
        ));
        assert_eq!(
            crate::decode_packet(&schema, &packet.to_bytes()),
            Err(CodecError::ModelRequired)
        );
    }

    /// The bytes of a packet are part of the format: the same model and block must give them
    /// on every machine and in every later version (a change here breaks stored packets).
    #[test]
    fn packets_are_identical_across_runs_and_machines() {
        let schema = imu_schema();
        let frames = imu_frames(100, 3, 5.0);
        let cond = commands(&frames);
        let crc = |k: f64, c: Option<&[Frame]>| {
            let bytes = codec(ErrorBound::Sigma(k))
                .encode_conditioned(&schema, &frames, c)
                .unwrap()
                .to_bytes();
            crc32c::crc32c(&bytes)
        };
        let got = [crc(0.0, None), crc(1.0, None), crc(4.0, Some(&cond))];
        assert_eq!(got, GOLDEN, "packet bytes changed: {got:08x?}");
    }

    #[test]
    fn encoding_is_identical_across_threads() {
        let schema = imu_schema();
        let frames = imu_frames(200, 9, 5.0);
        let codec = codec(ErrorBound::Sigma(2.0));
        let reference = codec.encode(&schema, &frames).unwrap().to_bytes();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (codec, schema, frames) = (codec.clone(), schema.clone(), frames.clone());
                std::thread::spawn(move || codec.encode(&schema, &frames).unwrap().to_bytes())
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), reference);
        }
    }

    #[test]
    fn merged_conditions_hold_each_stream_and_difference_counters() {
        let mut ticks = imu_schema();
        ticks.name = "wheels".into();
        ticks.kind = crate::SensorKind::WheelEncoder;
        ticks.channels = vec!["left".into()];
        let mut cmd = imu_schema();
        cmd.name = "motors".into();
        cmd.channels = vec!["cmd".into()];
        let wheel_frames = [
            Frame::new(0, vec![100.0]),
            Frame::new(20, vec![130.0]),
            Frame::new(40, vec![170.0]),
        ];
        let cmd_frames = [Frame::new(5, vec![1.5]), Frame::new(30, vec![2.5])];
        let merged = merge_conditions(&[(&cmd, &cmd_frames), (&ticks, &wheel_frames)]);
        let expected = [
            (20, vec![1.5, 30.0]),
            (30, vec![2.5, 30.0]),
            (40, vec![2.5, 40.0]),
        ];
        assert_eq!(merged.len(), expected.len());
        for (f, (t, v)) in merged.iter().zip(expected) {
            assert_eq!((f.timestamp_ns, f.values.as_slice()), (t, v.as_slice()));
        }
        assert_eq!(
            condition_names(&[&cmd, &ticks]),
            ["motors.cmd", "wheels.d_left"]
        );
    }

    #[test]
    fn float_streams_cannot_be_coded_losslessly() {
        let mut schema = imu_schema();
        schema.lsb = vec![None; 6];
        schema.sample_type = crate::SampleType::F64;
        let frames: Vec<Frame> = (0..10)
            .map(|i| Frame::new(i, vec![0.1 * i as f64 + 1e-9; 6]))
            .collect();
        let model = untrained_model(&schema, 4, 8, 1);
        let codec = NeuralCodec::new(Arc::new(model), ErrorBound::Absolute(0.0), 0);
        assert!(matches!(
            codec.encode(&schema, &frames),
            Err(CodecError::Unsupported(_))
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn every_sample_stays_within_the_bound(
            seed in 0u64..1000,
            k in prop_oneof![Just(0.5), Just(1.0), Just(3.0), Just(8.0)],
            float in any::<bool>(),
            spikes in proptest::collection::vec((0usize..90, 0usize..6, -1e6f64..1e6), 0..5),
        ) {
            let mut schema = imu_schema();
            let mut frames = imu_frames(90, seed, 5.0);
            if float {
                schema.lsb = vec![None; 6];
                schema.sample_type = crate::SampleType::F64;
                for f in &mut frames { for v in &mut f.values { *v += 1e-7 * (*v).sin(); } }
                for &(i, c, v) in &spikes { frames[i].values[c] = v; }
                if let Some(&(i, c, _)) = spikes.first() { frames[i].values[c] = f64::NAN; }
            }
            let model = untrained_model(&schema, 8, 16, seed);
            let codec = NeuralCodec::new(Arc::new(model), ErrorBound::Sigma(k), 2);
            let packet = codec.encode(&schema, &frames).unwrap();
            let back = codec.decode(&schema, &Packet::from_bytes(&packet.to_bytes()).unwrap()).unwrap();
            let bounds = ErrorBound::Sigma(k).per_channel(&schema, &frames);
            for (a, b) in frames.iter().zip(&back) {
                prop_assert_eq!(a.timestamp_ns, b.timestamp_ns);
                for ((&x, &y), &eb) in a.values.iter().zip(&b.values).zip(&bounds) {
                    prop_assert!(x.to_bits() == y.to_bits() || (x - y).abs() <= eb, "{} vs {} (eb {})", x, y, eb);
                }
            }
        }

        #[test]
        fn arbitrary_payloads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let schema = imu_schema();
            let codec = codec(ErrorBound::Sigma(1.0));
            let packet = Packet {
                header: PacketHeader {
                    codec: CodecId::Neural,
                    codec_version: VERSION,
                    quality: 1,
                    schema_hash: schema.hash() as u32,
                    frame_count: 20,
                    first_timestamp_ns: 0,
                },
                payload: bytes,
            };
            let _ = codec.decode_conditioned(&schema, &packet, None);
        }
    }
}
