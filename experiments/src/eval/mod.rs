//! `lydlr eval`: every codec on the same streams, measured the same way.
//!
//! Each codec compresses a whole table (timestamps and channels) and must give it back:
//! bit-exact for lossless codecs, within the bound on every sample for lossy ones (checked,
//! not assumed). `raw_bytes` counts the channel values as `f32` for every codec.

pub mod gorilla;
pub mod table;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use lydlr_codec::{
    BoundedCodec, Codec, ErrorBound, Frame, LosslessCodec, ModelPackage, NeuralCodec, SampleType,
    StreamSchema,
};
use serde::Serialize;

use crate::timing::time_it;
pub use table::{Table, read_tables};

/// One line of `lydlr eval`.
#[derive(Debug, Clone, Serialize)]
pub struct EvalLine {
    pub codec: String,
    pub input: String,
    pub channels: usize,
    pub samples: usize,
    pub raw_bytes: usize,
    pub compressed_bytes: usize,
    pub ratio: f64,
    pub bits_per_sample: f64,
    pub max_abs_error: f64,
    pub nrmse: f64,
    pub encode_mb_s: f64,
    pub decode_mb_s: f64,
}

/// The error bound requested on the command line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    Absolute(f64),
    /// In units of each channel's noise sigma, estimated from the data.
    Sigma(f64),
}

/// What every codec needs to know about the table besides its values.
pub struct Prepared<'a> {
    pub table: &'a Table,
    pub sample_type: SampleType,
    pub schema: StreamSchema,
    /// Per-channel bound (lossy runs only).
    pub bounds: Option<Vec<f64>>,
    pub block_frames: usize,
    /// The table's rows as frames, the form lydlr's codecs take (a robot produces frames):
    /// made once, outside the timed runs, as every codec's input is.
    pub frames: Vec<Frame>,
}

/// Robust noise estimate per channel: the median absolute second difference, scaled to the
/// standard deviation of white noise (a second difference of white noise has variance 6 sigma^2).
pub fn noise_sigma(column: &[f64]) -> f64 {
    let mut d: Vec<f64> = column
        .windows(3)
        .map(|w| (w[0] - 2.0 * w[1] + w[2]).abs())
        .filter(|v| v.is_finite())
        .collect();
    if d.is_empty() {
        return 0.0;
    }
    let mid = d.len() / 2;
    let median = *d.select_nth_unstable_by(mid, f64::total_cmp).1;
    1.4826 * median / 6f64.sqrt()
}

impl<'a> Prepared<'a> {
    pub fn new(table: &'a Table, bound: Option<Bound>, block_frames: usize) -> Prepared<'a> {
        let schema = table.schema("eval");
        let bounds = bound.map(|b| match b {
            Bound::Absolute(eb) => vec![eb; table.names.len()],
            Bound::Sigma(k) => schema.noise_sigma.iter().map(|s| k * s).collect(),
        });
        Prepared {
            frames: (0..table.samples()).map(|i| table.frame(i)).collect(),
            table,
            sample_type: schema.sample_type,
            schema,
            bounds,
            block_frames,
        }
    }

    fn width(&self) -> u32 {
        if self.sample_type == SampleType::F32 {
            32
        } else {
            64
        }
    }
}

/// A compressor under evaluation.
pub trait EvalCodec {
    fn name(&self) -> &'static str;
    /// Whether decoded values may differ from the originals (within a bound).
    fn lossy(&self) -> bool {
        false
    }
    fn compress(&self, input: &Prepared) -> anyhow::Result<Vec<u8>>;
    /// Timestamps and columns back; the shape (rows, columns) is known to the caller.
    fn decompress(
        &self,
        input: &Prepared,
        bytes: &[u8],
    ) -> anyhow::Result<(Vec<i64>, Vec<Vec<f64>>)>;
}

fn push_section(out: &mut Vec<u8>, section: &[u8]) {
    out.extend_from_slice(&(section.len() as u32).to_le_bytes());
    out.extend_from_slice(section);
}

fn sections(bytes: &[u8]) -> anyhow::Result<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        ensure!(rest.len() >= 4, "truncated section header");
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        ensure!(rest.len() >= 4 + len, "truncated section");
        out.push(&rest[4..4 + len]);
        rest = &rest[4 + len..];
    }
    Ok(out)
}

/// lydlr's own codecs, in blocks of `block_frames` packets.
struct Lydlr {
    lossy: bool,
}

impl EvalCodec for Lydlr {
    fn name(&self) -> &'static str {
        if self.lossy {
            "lydlr-bounded"
        } else {
            "lydlr-lossless"
        }
    }

    fn lossy(&self) -> bool {
        self.lossy
    }

    fn compress(&self, input: &Prepared) -> anyhow::Result<Vec<u8>> {
        packets_of(input, |block| {
            Ok(match (&input.bounds, self.lossy) {
                (Some(bounds), true) => per_channel_bounded(&input.schema, bounds, block)?,
                _ => LosslessCodec.encode(&input.schema, block)?.to_bytes(),
            })
        })
    }

    fn decompress(
        &self,
        input: &Prepared,
        bytes: &[u8],
    ) -> anyhow::Result<(Vec<i64>, Vec<Vec<f64>>)> {
        // Straight into columns: no frame per row.
        columns_of(input, bytes, |section| {
            Ok(lydlr_codec::decode_packet_columns(&input.schema, section)?)
        })
    }
}

/// The table's frames in packets of `block_frames`, each a section.
fn packets_of(
    input: &Prepared,
    mut encode: impl FnMut(&[Frame]) -> anyhow::Result<Vec<u8>>,
) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    for block in input
        .frames
        .chunks(input.block_frames.clamp(1, usize::from(u16::MAX)))
    {
        push_section(&mut out, &encode(block)?);
    }
    Ok(out)
}

/// Timestamps and columns back from the sections of [`packets_of`], each decoded into its
/// timestamps and columns.
fn columns_of(
    input: &Prepared,
    bytes: &[u8],
    mut decode: impl FnMut(&[u8]) -> anyhow::Result<(Vec<i64>, Vec<Vec<f64>>)>,
) -> anyhow::Result<(Vec<i64>, Vec<Vec<f64>>)> {
    let rows = input.table.samples();
    let mut t = Vec::with_capacity(rows);
    let mut columns = vec![Vec::with_capacity(rows); input.table.columns.len()];
    for section in sections(bytes)? {
        let (times, block) = decode(section)?;
        t.extend(times);
        for (column, values) in columns.iter_mut().zip(block) {
            column.extend(values);
        }
    }
    Ok((t, columns))
}

/// The bounded codec with a different absolute bound per channel: the schema's sigma is set
/// to the bound and the codec asked for one sigma.
fn per_channel_bounded(
    schema: &StreamSchema,
    bounds: &[f64],
    block: &[Frame],
) -> anyhow::Result<Vec<u8>> {
    let mut s = schema.clone();
    s.noise_sigma = bounds.to_vec();
    let packet = BoundedCodec::new(ErrorBound::Sigma(1.0)).encode(&s, block)?;
    Ok(packet.to_bytes())
}

/// pcodec on every column (timestamps as i64, values as f32 or f64).
struct Pco;

fn pco_column(values: &[f64], width: u32) -> anyhow::Result<Vec<u8>> {
    let config = pco::ChunkConfig::default();
    Ok(if width == 32 {
        let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
        pco::standalone::simple_compress(&v, &config)?
    } else {
        pco::standalone::simple_compress(values, &config)?
    })
}

fn pco_decolumn(bytes: &[u8], width: u32) -> anyhow::Result<Vec<f64>> {
    Ok(if width == 32 {
        pco::standalone::simple_decompress::<f32>(bytes)?
            .into_iter()
            .map(f64::from)
            .collect()
    } else {
        pco::standalone::simple_decompress::<f64>(bytes)?
    })
}

impl EvalCodec for Pco {
    fn name(&self) -> &'static str {
        "pco"
    }
    fn compress(&self, input: &Prepared) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        push_section(
            &mut out,
            &pco::standalone::simple_compress(&input.table.t_ns, &pco::ChunkConfig::default())?,
        );
        for c in &input.table.columns {
            push_section(&mut out, &pco_column(c, input.width())?);
        }
        Ok(out)
    }
    fn decompress(
        &self,
        input: &Prepared,
        bytes: &[u8],
    ) -> anyhow::Result<(Vec<i64>, Vec<Vec<f64>>)> {
        let s = sections(bytes)?;
        ensure!(!s.is_empty(), "no sections");
        let t = pco::standalone::simple_decompress::<i64>(s[0])?;
        let columns = s[1..]
            .iter()
            .map(|b| pco_decolumn(b, input.width()))
            .collect::<anyhow::Result<_>>()?;
        Ok((t, columns))
    }
}

/// Rows as the sensor produces them: `t` (i64) then the values (f32 or f64), little-endian.
fn row_major(input: &Prepared) -> Vec<u8> {
    let t = input.table;
    let mut out = Vec::with_capacity(t.samples() * (8 + 8 * t.columns.len()));
    for i in 0..t.samples() {
        out.extend_from_slice(&t.t_ns[i].to_le_bytes());
        for c in &t.columns {
            if input.width() == 32 {
                out.extend_from_slice(&(c[i] as f32).to_le_bytes());
            } else {
                out.extend_from_slice(&c[i].to_le_bytes());
            }
        }
    }
    out
}

fn from_row_major(input: &Prepared, bytes: &[u8]) -> anyhow::Result<(Vec<i64>, Vec<Vec<f64>>)> {
    let w = input.width() as usize / 8;
    let channels = input.table.columns.len();
    let row = 8 + w * channels;
    ensure!(
        bytes.len().is_multiple_of(row),
        "row-major bytes of the wrong length"
    );
    let mut t = Vec::new();
    let mut columns = vec![Vec::new(); channels];
    for r in bytes.chunks_exact(row) {
        t.push(i64::from_le_bytes(r[..8].try_into()?));
        for (c, column) in columns.iter_mut().enumerate() {
            let cell = &r[8 + c * w..8 + (c + 1) * w];
            column.push(if w == 4 {
                f64::from(f32::from_le_bytes(cell.try_into()?))
            } else {
                f64::from_le_bytes(cell.try_into()?)
            });
        }
    }
    Ok((t, columns))
}

/// Column-major with each column's bytes transposed into planes (as Blosc's shuffle does).
fn shuffled(input: &Prepared) -> Vec<u8> {
    let t = input.table;
    let mut out = Vec::new();
    let mut plane = |cells: Vec<Vec<u8>>| {
        let width = cells.first().map_or(0, Vec::len);
        for b in 0..width {
            out.extend(cells.iter().map(|c| c[b]));
        }
    };
    plane(t.t_ns.iter().map(|v| v.to_le_bytes().to_vec()).collect());
    for c in &t.columns {
        plane(
            c.iter()
                .map(|&v| {
                    if input.width() == 32 {
                        (v as f32).to_le_bytes().to_vec()
                    } else {
                        v.to_le_bytes().to_vec()
                    }
                })
                .collect(),
        );
    }
    out
}

fn unshuffled(input: &Prepared, bytes: &[u8]) -> anyhow::Result<(Vec<i64>, Vec<Vec<f64>>)> {
    let n = input.table.samples();
    let w = input.width() as usize / 8;
    let channels = input.table.columns.len();
    ensure!(
        bytes.len() == n * (8 + w * channels),
        "shuffled bytes of the wrong length"
    );
    let cell = |base: usize, width: usize, i: usize| -> Vec<u8> {
        (0..width).map(|b| bytes[base + b * n + i]).collect()
    };
    let t = (0..n)
        .map(|i| i64::from_le_bytes(cell(0, 8, i).try_into().unwrap_or([0; 8])))
        .collect();
    let columns = (0..channels)
        .map(|c| {
            let base = 8 * n + c * w * n;
            (0..n)
                .map(|i| {
                    let raw = cell(base, w, i);
                    if w == 4 {
                        f64::from(f32::from_le_bytes(raw.try_into().unwrap_or([0; 4])))
                    } else {
                        f64::from_le_bytes(raw.try_into().unwrap_or([0; 8]))
                    }
                })
                .collect()
        })
        .collect();
    Ok((t, columns))
}

struct Zstd {
    shuffle: bool,
}

impl EvalCodec for Zstd {
    fn name(&self) -> &'static str {
        if self.shuffle { "zstd-shuffle" } else { "zstd" }
    }
    fn compress(&self, input: &Prepared) -> anyhow::Result<Vec<u8>> {
        let raw = if self.shuffle {
            shuffled(input)
        } else {
            row_major(input)
        };
        Ok(zstd::bulk::compress(&raw, 3)?)
    }
    fn decompress(
        &self,
        input: &Prepared,
        bytes: &[u8],
    ) -> anyhow::Result<(Vec<i64>, Vec<Vec<f64>>)> {
        let capacity = input.table.samples() * (8 + 8 * input.table.columns.len());
        let raw = zstd::bulk::decompress(bytes, capacity)?;
        if self.shuffle {
            unshuffled(input, &raw)
        } else {
            from_row_major(input, &raw)
        }
    }
}

struct Lz4;

impl EvalCodec for Lz4 {
    fn name(&self) -> &'static str {
        "lz4"
    }
    fn compress(&self, input: &Prepared) -> anyhow::Result<Vec<u8>> {
        Ok(lz4_flex::compress_prepend_size(&row_major(input)))
    }
    fn decompress(
        &self,
        input: &Prepared,
        bytes: &[u8],
    ) -> anyhow::Result<(Vec<i64>, Vec<Vec<f64>>)> {
        from_row_major(input, &lz4_flex::decompress_size_prepended(bytes)?)
    }
}

struct Gorilla;

impl EvalCodec for Gorilla {
    fn name(&self) -> &'static str {
        "gorilla"
    }
    fn compress(&self, input: &Prepared) -> anyhow::Result<Vec<u8>> {
        Ok(gorilla::encode(
            &input.table.t_ns,
            &input.table.columns,
            input.width(),
        ))
    }
    fn decompress(
        &self,
        input: &Prepared,
        bytes: &[u8],
    ) -> anyhow::Result<(Vec<i64>, Vec<Vec<f64>>)> {
        gorilla::decode(
            bytes,
            input.table.samples(),
            input.table.columns.len(),
            input.width(),
        )
        .context("gorilla stream ended early")
    }
}

/// The reference lossy pipeline: quantise to steps of 2 eb, delta, pcodec.
struct QuantDeltaPco;

impl EvalCodec for QuantDeltaPco {
    fn name(&self) -> &'static str {
        "quant-delta-pco"
    }
    fn lossy(&self) -> bool {
        true
    }
    fn compress(&self, input: &Prepared) -> anyhow::Result<Vec<u8>> {
        let bounds = input
            .bounds
            .as_ref()
            .context("lossy codec without a bound")?;
        let mut out = Vec::new();
        push_section(
            &mut out,
            &pco::standalone::simple_compress(&input.table.t_ns, &pco::ChunkConfig::default())?,
        );
        for (c, &eb) in input.table.columns.iter().zip(bounds) {
            if eb <= 0.0 {
                // No bound (a constant channel's noise estimate): keep it exact.
                push_section(&mut out, &pco_column(c, input.width())?);
                continue;
            }
            let q: Vec<i64> = c.iter().map(|&v| (v / (2.0 * eb)).round() as i64).collect();
            let mut prev = 0i64;
            let deltas: Vec<i64> = q
                .iter()
                .map(|&v| {
                    let d = v.wrapping_sub(prev);
                    prev = v;
                    d
                })
                .collect();
            push_section(
                &mut out,
                &pco::standalone::simple_compress(&deltas, &pco::ChunkConfig::default())?,
            );
        }
        Ok(out)
    }
    fn decompress(
        &self,
        input: &Prepared,
        bytes: &[u8],
    ) -> anyhow::Result<(Vec<i64>, Vec<Vec<f64>>)> {
        let bounds = input
            .bounds
            .as_ref()
            .context("lossy codec without a bound")?;
        let s = sections(bytes)?;
        ensure!(s.len() == bounds.len() + 1, "section count");
        let t = pco::standalone::simple_decompress::<i64>(s[0])?;
        let mut columns = Vec::new();
        for (section, &eb) in s[1..].iter().zip(bounds) {
            if eb <= 0.0 {
                columns.push(pco_decolumn(section, input.width())?);
                continue;
            }
            let mut acc = 0i64;
            let values = pco::standalone::simple_decompress::<i64>(section)?
                .into_iter()
                .map(|d| {
                    acc = acc.wrapping_add(d);
                    let v = acc as f64 * 2.0 * eb;
                    if input.width() == 32 {
                        f64::from(v as f32)
                    } else {
                        v
                    }
                })
                .collect();
            columns.push(values);
        }
        Ok((t, columns))
    }
}

/// The neural codec with the package's model for the table's channels (lossy runs only:
/// the evaluated tables carry no ADC step, so there is no lossless counts mode).
struct Neural {
    package: Option<Arc<ModelPackage>>,
}

impl Neural {
    fn codec(&self, input: &Prepared) -> anyhow::Result<(NeuralCodec, StreamSchema)> {
        let package = self
            .package
            .as_ref()
            .context("neural: give a model package with --model DIR")?;
        let model = package
            .models
            .values()
            .find(|m| m.shape.channels == input.table.names)
            .with_context(|| {
                format!(
                    "neural: no model in the package for channels {:?}",
                    input.table.names
                )
            })?;
        let bounds = input
            .bounds
            .as_ref()
            .context("neural: needs an error bound")?;
        let mut schema = input.schema.clone();
        schema.noise_sigma = bounds.clone();
        Ok((
            NeuralCodec::new(model.clone(), ErrorBound::Sigma(1.0), 1),
            schema,
        ))
    }
}

impl EvalCodec for Neural {
    fn name(&self) -> &'static str {
        "neural"
    }

    fn lossy(&self) -> bool {
        true
    }

    fn compress(&self, input: &Prepared) -> anyhow::Result<Vec<u8>> {
        let (codec, schema) = self.codec(input)?;
        packets_of(input, |block| Ok(codec.encode(&schema, block)?.to_bytes()))
    }

    fn decompress(
        &self,
        input: &Prepared,
        bytes: &[u8],
    ) -> anyhow::Result<(Vec<i64>, Vec<Vec<f64>>)> {
        let (codec, schema) = self.codec(input)?;
        columns_of(input, bytes, |section| {
            let packet = lydlr_codec::Packet::from_bytes(section)?;
            let frames = codec.decode(&schema, &packet)?;
            let times = frames.iter().map(|f| f.timestamp_ns).collect();
            let columns = (0..schema.channels.len())
                .map(|c| frames.iter().map(|f| f.values[c]).collect())
                .collect();
            Ok((times, columns))
        })
    }
}

/// Every codec `lydlr eval` knows; `neural` runs with the given model package.
pub fn all_codecs(package: Option<Arc<ModelPackage>>) -> Vec<Box<dyn EvalCodec>> {
    let neural_available = package.is_some();
    let mut codecs: Vec<Box<dyn EvalCodec>> = vec![
        Box::new(Lydlr { lossy: false }),
        Box::new(Pco),
        Box::new(Zstd { shuffle: false }),
        Box::new(Zstd { shuffle: true }),
        Box::new(Lz4),
        Box::new(Gorilla),
        Box::new(Lydlr { lossy: true }),
        Box::new(QuantDeltaPco),
    ];
    if neural_available {
        codecs.push(Box::new(Neural { package }));
    }
    codecs
}

/// Runs one codec on one table and checks what comes back.
pub fn evaluate(
    codec: &dyn EvalCodec,
    input: &Prepared,
    timing_window: Duration,
) -> anyhow::Result<EvalLine> {
    let table = input.table;
    let (bytes, encode_s) = time_it(timing_window, || codec.compress(input))?;
    let ((t, columns), decode_s) = time_it(timing_window, || codec.decompress(input, &bytes))?;
    ensure!(
        t == table.t_ns,
        "{}: timestamps did not come back exactly",
        codec.name()
    );
    ensure!(
        columns.len() == table.columns.len(),
        "{}: wrong column count",
        codec.name()
    );
    let mut max_abs_error = 0.0f64;
    let mut nrmse_sum = 0.0;
    for (c, (orig, back)) in table.columns.iter().zip(&columns).enumerate() {
        ensure!(
            orig.len() == back.len(),
            "{}: wrong row count",
            codec.name()
        );
        let (mut sq, mut lo, mut hi) = (0.0, f64::INFINITY, f64::NEG_INFINITY);
        for (i, (&x, &y)) in orig.iter().zip(back).enumerate() {
            let typed = if input.sample_type == SampleType::F32 {
                f64::from(x as f32)
            } else {
                x
            };
            if !codec.lossy() {
                ensure!(
                    typed.to_bits() == y.to_bits(),
                    "{}: not lossless at row {}, column {}",
                    codec.name(),
                    i + 1,
                    table.names[c]
                );
            } else if x.is_finite() {
                let e = (x - y).abs();
                if let Some(bounds) = &input.bounds
                    && matches!(codec.name(), "lydlr-bounded" | "neural")
                {
                    ensure!(
                        e <= bounds[c],
                        "{}: error {e} over the bound {} at row {}",
                        codec.name(),
                        bounds[c],
                        i + 1
                    );
                }
                max_abs_error = max_abs_error.max(e);
                sq += e * e;
                lo = lo.min(x);
                hi = hi.max(x);
            }
        }
        let range = if hi > lo { hi - lo } else { 1.0 };
        nrmse_sum += (sq / orig.len().max(1) as f64).sqrt() / range;
    }
    let samples = table.samples();
    let channels = table.columns.len();
    let raw_bytes = samples * channels * 4;
    Ok(EvalLine {
        codec: codec.name().to_owned(),
        input: table.source.clone(),
        channels,
        samples,
        raw_bytes,
        compressed_bytes: bytes.len(),
        ratio: raw_bytes as f64 / bytes.len().max(1) as f64,
        bits_per_sample: bytes.len() as f64 * 8.0 / (samples * channels).max(1) as f64,
        max_abs_error,
        nrmse: nrmse_sum / channels.max(1) as f64,
        encode_mb_s: raw_bytes as f64 / 1e6 / encode_s,
        decode_mb_s: raw_bytes as f64 / 1e6 / decode_s,
    })
}

/// Runs the selected codecs (all by default; lossless ones without a bound, lossy ones with),
/// timing each over `timing_window` of repeated runs.
pub fn run_eval(
    tables: &[Table],
    codec: Option<&str>,
    bound: Option<Bound>,
    block_frames: usize,
    package: Option<Arc<ModelPackage>>,
    timing_window: Duration,
) -> anyhow::Result<Vec<EvalLine>> {
    let codecs: Vec<Box<dyn EvalCodec>> = all_codecs(package)
        .into_iter()
        .filter(|c| match codec {
            None | Some("all") => c.lossy() == bound.is_some(),
            Some(name) => c.name() == name,
        })
        .collect();
    if codecs.is_empty() {
        let mut names: Vec<&str> = all_codecs(None).iter().map(|c| c.name()).collect();
        names.push("neural (with --model)");
        bail!("unknown codec {codec:?}; known: all, {}", names.join(", "));
    }
    let mut lines = Vec::new();
    for table in tables {
        let input = Prepared::new(table, bound, block_frames);
        for c in &codecs {
            if c.lossy() && bound.is_none() {
                bail!(
                    "{} is lossy: give --error-bound or --error-bound-sigma",
                    c.name()
                );
            }
            lines.push(evaluate(c.as_ref(), &input, timing_window)?);
        }
    }
    Ok(lines)
}
