//! The lossless predictive codec (codec id 1, version 8).
//!
//! Per block and per column (the timestamps, then each channel) it picks the cheapest exact
//! integer representation (integers, ADC-step counts, decimal counts, or the order-preserving
//! bit pattern of the float) and the cheapest predictor (none, previous value, linear
//! extrapolation, a fitted third-order predictor, or, from the channel before in the same
//! unit, LOCO-I's median edge detector, whose residuals then start from the context that
//! channel left and are coded beside its step at each sample), takes a lidar's no-return
//! zeros out of prediction where that is cheaper (`holes`), then codes the prediction
//! residuals with rANS over adaptive models (see `entropy`). Layout in `codec/FORMAT.md`.

use std::borrow::Cow;

use crate::column::{
    MAX_ORDER, Predictor, Representation, choose_predictor_and_cost, decode_column,
    decode_neighbour_column, encode_residuals, neighbour_activities, neighbour_cost,
    neighbour_residuals, residuals, same_unit, starting_context,
};
use crate::container::{CodecId, Packet, PacketHeader};
use crate::entropy::{ResidualContext, ResidualDecoder, ResidualEncoder};
use crate::frame::INLINE_VALUES;
use crate::holes::{self, Holes, neighbour_seen};
use crate::timestamps::{decode_timestamps, encode_timestamps, read_timestamp_head};
use crate::varint::{Reader, put_uvarint};
use crate::{Codec, CodecError, Frame, FrameValues, StreamSchema};

/// The only version this build reads: versions 4 to 7 coded a residual's top mantissa bit
/// after its bucket symbol, from a probability of its own ([`crate::entropy`]).
const VERSION: u8 = 8;
/// Descriptor: bits 0-2 predictor, bits 3-5 representation, bit 6 all residuals zero.
pub(crate) const REPR_SHIFT: u8 = 3;
pub(crate) const ALL_ZERO_BIT: u8 = 1 << 6;
/// Descriptor bit 7 of a value column (both codecs): its holes' runs precede its residuals.
pub(crate) const HOLES_BIT: u8 = 1 << 7;
/// Writes one column: descriptor, parameters, and residuals into the shared coder. With
/// `neighbour`, the channel before counted in the same unit (the lossless codec's columns
/// only), the column may be predicted from it as well. `carried` is the context the channel
/// before left ([`starting_context`]); the column leaves its own there.
pub(crate) fn encode_column(
    descriptors: &mut Vec<u8>,
    encoder: &mut ResidualEncoder,
    ints: &[i64],
    repr: Representation,
    neighbour: Option<&[i64]>,
    carried: &mut ResidualContext,
) {
    let mut parameters = Vec::new();
    write_representation_parameters(&mut parameters, repr);
    let ColumnPlan {
        holes,
        prediction,
        residuals,
        activities,
    } = plan_column(ints, neighbour);
    let (predictor_tag, predictor) = match prediction {
        Prediction::Own(predictor) => (predictor.tag(), Some(predictor)),
        Prediction::NeighbourMedian => (NEIGHBOUR_TAG, None),
    };
    let rest = prediction.starting_context(carried);
    *carried = write_column(
        descriptors,
        encoder,
        (predictor_tag, repr.tag()),
        &parameters,
        predictor,
        holes.as_ref(),
        (residuals, activities.as_deref(), prediction.warmup(), rest),
    );
}

/// A column's plan: its holes where they are taken out of prediction, the prediction of the
/// rest, the residuals, and each one's activity where the neighbour median predicts them.
pub(crate) struct ColumnPlan {
    pub holes: Option<Holes>,
    pub prediction: Prediction,
    pub residuals: Vec<i64>,
    pub activities: Option<Vec<u32>>,
}

/// The cheapest of a column's own predictors, or the neighbour median where a neighbour is
/// given and that is cheaper, over the column's samples that are not holes (all of them
/// where the holes are better predicted through). Both are judged on the column's first
/// values, as [`choose_predictor`] judges its own.
pub(crate) fn plan_column(ints: &[i64], neighbour: Option<&[i64]>) -> ColumnPlan {
    let holes = Holes::worth_taking_out(ints, 1);
    let present = match &holes {
        Some(holes) => Cow::Owned(holes.compact(ints)),
        None => Cow::Borrowed(ints),
    };
    let neighbour = neighbour.map(|nb| neighbour_seen(holes.as_ref(), nb));
    let (predictor, cost) = choose_predictor_and_cost(&present, [0; MAX_ORDER]);
    let (prediction, residuals, activities) = match neighbour {
        Some(neighbour) if neighbour_cost(&present, &neighbour) < cost => {
            let activities = neighbour_activities(&neighbour, std::iter::empty(), 1);
            let residuals = neighbour_residuals(&present, &neighbour);
            (Prediction::NeighbourMedian, residuals, Some(activities))
        }
        _ => (
            Prediction::Own(predictor),
            residuals(&present, predictor, [0; MAX_ORDER]),
            None,
        ),
    };
    ColumnPlan {
        holes,
        prediction,
        residuals,
        activities,
    }
}

/// The lossless codec's value columns, in order: each channel's representation, integers
/// and the channel before it where that counts in the [`same_unit`].
pub(crate) fn for_each_value_column<C: AsRef<[f64]>>(
    schema: &StreamSchema,
    column: impl Fn(usize) -> C,
    mut each: impl FnMut(Representation, &[i64], Option<&[i64]>),
) {
    let mut previous: Option<(f64, Vec<i64>)> = None;
    let mut quantum = None;
    for ch in 0..schema.channels.len() {
        let (repr, ints) = Representation::choose(
            column(ch).as_ref(),
            schema.sample_type,
            schema.lsb(ch),
            quantum,
        );
        let unit = repr.unit(schema.lsb(ch));
        quantum = match repr {
            Representation::Quantum(q) => Some(q),
            _ => quantum,
        };
        let neighbour = previous
            .as_ref()
            .filter(|(u, _)| same_unit(unit, *u))
            .map(|(_, ints)| ints.as_slice());
        each(repr, &ints, neighbour);
        previous = unit.map(|u| (u, ints));
    }
}

/// A timestamp column's descriptor, parameters and residuals, once its predictor and its
/// residuals are known.
pub(crate) fn encode_predicted_column(
    descriptors: &mut Vec<u8>,
    encoder: &mut ResidualEncoder,
    repr_tag: u8,
    parameters: &[u8],
    predictor: Predictor,
    residuals: Vec<i64>,
) {
    write_column(
        descriptors,
        encoder,
        (predictor.tag(), repr_tag),
        parameters,
        Some(predictor),
        None,
        (
            residuals,
            None,
            predictor.warmup(),
            ResidualContext::default(),
        ),
    );
}

/// A column's descriptor (the all-zero and holes bits added here), the representation's
/// parameters, the predictor's (where it has any), then in the coder the holes' runs and
/// the residuals with their warm-up, the rest from `rest` (beside their activities where
/// they have them); returns the context they leave.
fn write_column(
    descriptors: &mut Vec<u8>,
    encoder: &mut ResidualEncoder,
    (predictor_tag, repr_tag): (u8, u8),
    parameters: &[u8],
    predictor: Option<Predictor>,
    holes: Option<&Holes>,
    (residuals, activities, warmup, rest): (Vec<i64>, Option<&[u32]>, usize, ResidualContext),
) -> ResidualContext {
    let all_zero = residuals.iter().all(|r| *r == 0);
    descriptors.push(descriptor(predictor_tag, repr_tag, all_zero) | holes_bit(holes));
    descriptors.extend_from_slice(parameters);
    if let Some(predictor) = predictor {
        predictor.write_parameters(descriptors);
    }
    if let Some(holes) = holes {
        holes.encode(encoder);
    }
    if all_zero {
        return rest;
    }
    encode_residuals(encoder, residuals.into_iter(), activities, warmup, rest)
}

/// A column's descriptor byte.
pub(crate) fn descriptor(predictor_tag: u8, repr_tag: u8, all_zero: bool) -> u8 {
    predictor_tag | repr_tag << REPR_SHIFT | if all_zero { ALL_ZERO_BIT } else { 0 }
}

/// The descriptor bit of a value column whose holes are taken out of prediction.
pub(crate) fn holes_bit(holes: Option<&Holes>) -> u8 {
    if holes.is_some() { HOLES_BIT } else { 0 }
}

/// Parameters that follow a descriptor: decimal digits or the detected quantum.
pub(crate) fn write_representation_parameters(out: &mut Vec<u8>, repr: Representation) {
    match repr {
        Representation::Decimal(digits) => out.push(digits),
        Representation::Quantum(q) => out.extend_from_slice(&q.to_le_bytes()),
        _ => {}
    }
}

pub(crate) fn read_representation(
    tag: u8,
    reader: &mut Reader<'_>,
) -> Result<Representation, CodecError> {
    Ok(match tag {
        0 => Representation::Integer,
        1 => Representation::LsbCounts,
        2 => Representation::F32Bits,
        3 => Representation::F64Bits,
        4 => {
            let digits = reader.u8()?;
            if digits > 15 {
                return Err(CodecError::Corrupt(
                    "decimal column with more than 15 digits",
                ));
            }
            Representation::Decimal(digits)
        }
        5 => quantum(f64::from_le_bytes(reader.array()?))?,
        _ => return Err(CodecError::Corrupt("unknown column representation")),
    })
}

/// A quantum read from a packet: a positive finite number.
pub(crate) fn quantum(q: f64) -> Result<Representation, CodecError> {
    if !(q.is_finite() && q > 0.0) {
        return Err(CodecError::Corrupt("quantum must be a positive number"));
    }
    Ok(Representation::Quantum(q))
}

/// Predictor tag of a value column predicted by [`neighbour_median`] from the channel before
/// it (the lossless codec only: the error-bounded codec's reconstruction is another column).
const NEIGHBOUR_TAG: u8 = 4;

/// How a column's values are predicted.
#[derive(Clone, Copy)]
pub(crate) enum Prediction {
    /// From the column's own past.
    Own(Predictor),
    /// From its own past and the channel before it ([`neighbour_median`]).
    NeighbourMedian,
}

impl Prediction {
    /// The context the column's residuals after the warm-up start from
    /// ([`starting_context`]).
    pub(crate) fn starting_context(self, carried: &mut ResidualContext) -> ResidualContext {
        starting_context(matches!(self, Prediction::NeighbourMedian), carried)
    }

    /// Samples at the start of a block whose prediction leans on the zero history.
    pub(crate) fn warmup(self) -> usize {
        match self {
            Prediction::Own(predictor) => predictor.warmup(),
            Prediction::NeighbourMedian => 1,
        }
    }
}

/// The parsed head of one column.
pub(crate) struct ColumnHead {
    pub repr: Representation,
    pub prediction: Prediction,
    pub all_zero: bool,
    pub holes: bool,
}

pub(crate) fn read_column_head(reader: &mut Reader<'_>) -> Result<ColumnHead, CodecError> {
    let d = reader.u8()?;
    let repr = read_representation(d >> REPR_SHIFT & 0b111, reader)?;
    let prediction = match d & 0b111 {
        NEIGHBOUR_TAG => Prediction::NeighbourMedian,
        tag => Prediction::Own(Predictor::read(tag, reader)?),
    };
    Ok(ColumnHead {
        repr,
        prediction,
        all_zero: d & ALL_ZERO_BIT != 0,
        holes: d & HOLES_BIT != 0,
    })
}

/// Decodes a value column of `n` samples with `head`: its holes' runs first where it has
/// them, then the samples that are not holes. `neighbour` is the channel before, decoded,
/// where the column may be predicted from it, `carried` the context it left, where the
/// column leaves its own.
pub(crate) fn decode_value_column(
    decoder: &mut ResidualDecoder,
    n: usize,
    head: &ColumnHead,
    neighbour: Option<&[i64]>,
    carried: &mut ResidualContext,
) -> Result<Vec<i64>, CodecError> {
    let (holes, present) = holes::decode_if(head.holes, decoder, n)?;
    let rest = head.prediction.starting_context(carried);
    let (ints, left) = match head.prediction {
        Prediction::Own(predictor) => decode_column(
            decoder,
            present,
            predictor,
            [0; MAX_ORDER],
            head.all_zero,
            rest,
        )?,
        Prediction::NeighbourMedian => {
            let neighbour = neighbour.ok_or(CodecError::Corrupt(
                "the first channel predicted from the one before",
            ))?;
            let neighbour = neighbour_seen(holes.as_ref(), neighbour);
            decode_neighbour_column(decoder, &neighbour, head.all_zero, rest)?
        }
    };
    *carried = left;
    Ok(holes::put_back(holes.as_ref(), ints))
}

/// The payload of a packet of columns (codecs 1 and 2), its header checked, read past the
/// column count (the timestamps and one column per channel).
pub(crate) fn column_payload<'a>(
    packet: &'a Packet,
    codec: CodecId,
    version: u8,
    schema: &StreamSchema,
) -> Result<Reader<'a>, CodecError> {
    check_header(packet, codec, version, schema)?;
    let mut reader = Reader::new(&packet.payload);
    if reader.uvarint()? != schema.channels.len() as u64 + 1 {
        return Err(CodecError::Corrupt("column count differs from the schema"));
    }
    Ok(reader)
}

/// Checks a packet's header against the codec and schema that are to decode it.
pub(crate) fn check_header(
    packet: &Packet,
    codec: CodecId,
    version: u8,
    schema: &StreamSchema,
) -> Result<(), CodecError> {
    let h = &packet.header;
    if h.codec != codec {
        return Err(CodecError::WrongCodec {
            expected: codec,
            found: h.codec,
        });
    }
    if h.codec_version != version {
        return Err(CodecError::UnsupportedCodecVersion {
            codec: h.codec,
            version: h.codec_version,
        });
    }
    if h.schema_hash != schema.hash() as u32 {
        return Err(CodecError::SchemaMismatch {
            packet: u64::from(h.schema_hash),
            decoder: schema.hash() & 0xffff_ffff,
        });
    }
    Ok(())
}

/// Checks that every frame has the schema's channel count and that the block fits a packet.
pub(crate) fn check_block(schema: &StreamSchema, frames: &[Frame]) -> Result<u16, CodecError> {
    if frames.is_empty() {
        return Err(CodecError::EmptyBlock);
    }
    let count = u16::try_from(frames.len()).map_err(|_| CodecError::BlockTooLarge(frames.len()))?;
    let channels = schema.channels.len();
    if let Some((i, f)) = frames
        .iter()
        .enumerate()
        .find(|(_, f)| f.values.len() != channels)
    {
        return Err(CodecError::ChannelCount {
            frame: i,
            expected: channels,
            found: f.values.len(),
        });
    }
    Ok(count)
}

/// A zeroed buffer for `n` frames of `channels` values, with room past the end for
/// [`DecodedBlock::into_frames`] to copy every frame's inline values whole.
pub(crate) fn row_buffer(n: usize, channels: usize) -> Vec<f64> {
    vec![0.0; n * channels + INLINE_VALUES]
}

/// How a decoder lays a block's values out: row-major for frames, or column-major for tables
/// (no frames built).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    Rows,
    Columns,
}

impl Layout {
    /// Where column `c` of `n` frames of `channels` values starts, and its stride.
    pub(crate) fn column(self, c: usize, n: usize, channels: usize) -> (usize, usize) {
        match self {
            Layout::Rows => (c, channels),
            Layout::Columns => (c * n, 1),
        }
    }
}

/// A decoded block: timestamps, and the values in the layout asked for.
pub(crate) struct DecodedBlock {
    pub(crate) times: Vec<i64>,
    pub(crate) values: Vec<f64>,
}

impl DecodedBlock {
    /// The frames of a row-major block (its buffer from [`row_buffer`]), each built once.
    pub(crate) fn into_frames(self, channels: usize) -> Vec<Frame> {
        let rows = &self.values;
        self.times
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                let start = i * channels;
                // A fixed-size copy of the inline capacity (values past the row are not part
                // of the frame) is a few vector moves; a copy of the row's length is a call.
                match rows.get(start..start + INLINE_VALUES) {
                    Some(inline) if channels <= INLINE_VALUES => Frame {
                        timestamp_ns: t,
                        values: FrameValues::from_buf_and_len(
                            inline.try_into().expect("a slice of the inline length"),
                            channels,
                        ),
                    },
                    _ => Frame::from_slice(t, &rows[start..start + channels]),
                }
            })
            .collect()
    }

    /// The timestamps and the channels of a column-major block.
    pub(crate) fn into_columns(self, channels: usize) -> (Vec<i64>, Vec<Vec<f64>>) {
        let n = self.times.len();
        let columns = (0..channels)
            .map(|c| self.values[c * n..(c + 1) * n].to_vec())
            .collect();
        (self.times, columns)
    }
}

/// Per-channel prediction with adaptive rANS coding; exact for every `f64` bit pattern.
#[derive(Debug, Default, Clone, Copy)]
pub struct LosslessCodec;

impl Codec for LosslessCodec {
    fn id(&self) -> CodecId {
        CodecId::Lossless
    }

    fn encode(&self, schema: &StreamSchema, frames: &[Frame]) -> Result<Packet, CodecError> {
        let frame_count = check_block(schema, frames)?;
        let first = frames[0].timestamp_ns;
        let channels = schema.channels.len();
        let mut descriptors = Vec::with_capacity(2 * channels + 2);
        let mut encoder = ResidualEncoder::for_residuals(frames.len() * (channels + 1));

        let times: Vec<i64> = frames.iter().map(|f| f.timestamp_ns).collect();
        encode_timestamps(&mut descriptors, &mut encoder, &times, schema);
        let columns = Columns::of(frames, channels);
        let mut carried = ResidualContext::default();
        for_each_value_column(
            schema,
            |ch| columns.column(ch),
            |repr, ints, neighbour| {
                encode_column(
                    &mut descriptors,
                    &mut encoder,
                    ints,
                    repr,
                    neighbour,
                    &mut carried,
                )
            },
        );

        let mut payload = Vec::with_capacity(descriptors.len() + 16 + frames.len() * channels);
        put_uvarint(&mut payload, channels as u64 + 1);
        payload.extend_from_slice(&descriptors);
        payload.extend_from_slice(&encoder.finish());
        Ok(Packet {
            header: PacketHeader::for_block(
                CodecId::Lossless,
                VERSION,
                0,
                schema,
                frame_count,
                first,
            ),
            payload,
        })
    }

    fn decode(&self, schema: &StreamSchema, packet: &Packet) -> Result<Vec<Frame>, CodecError> {
        Ok(decode_lossless(schema, packet, Layout::Rows)?.into_frames(schema.channels.len()))
    }
}

/// A block's values column by column, read from the frames in one pass over the rows:
/// gathering each column from every frame in turn touched every frame once per channel (a
/// lidar scan's 360 values: 7 % of the bounded encoder's time).
pub(crate) struct Columns {
    values: Vec<f64>,
    rows: usize,
}

impl Columns {
    /// `frames` must have at least `channels` values each (`check_block`).
    pub(crate) fn of(frames: &[Frame], channels: usize) -> Self {
        let rows = frames.len();
        let mut values = vec![0.0; rows * channels];
        for (i, frame) in frames.iter().enumerate() {
            for (c, &v) in frame.values[..channels].iter().enumerate() {
                values[c * rows + i] = v;
            }
        }
        Columns { values, rows }
    }

    pub(crate) fn column(&self, channel: usize) -> &[f64] {
        &self.values[channel * self.rows..(channel + 1) * self.rows]
    }
}

pub(crate) fn decode_lossless(
    schema: &StreamSchema,
    packet: &Packet,
    layout: Layout,
) -> Result<DecodedBlock, CodecError> {
    let mut reader = column_payload(packet, CodecId::Lossless, VERSION, schema)?;
    let n = usize::from(packet.header.frame_count);
    let channels = schema.channels.len();
    let time_head = read_timestamp_head(&mut reader, schema)?;
    let heads = (0..channels)
        .map(|_| read_column_head(&mut reader))
        .collect::<Result<Vec<_>, _>>()?;
    let mut decoder = ResidualDecoder::new(reader.take(reader.remaining())?)?;
    let times = decode_timestamps(
        &mut decoder,
        n,
        &time_head,
        packet.header.first_timestamp_ns,
        schema,
    )?;
    let mut values = row_buffer(n, channels);
    let mut previous: Option<Vec<i64>> = None;
    let mut carried = ResidualContext::default();
    for (ch, head) in heads.iter().enumerate() {
        let lsb = match head.repr {
            Representation::LsbCounts => schema.lsb(ch).ok_or(CodecError::Corrupt(
                "ADC-step column for a channel without one",
            ))?,
            _ => 1.0,
        };
        let ints = decode_value_column(&mut decoder, n, head, previous.as_deref(), &mut carried)?;
        let (start, stride) = layout.column(ch, n, channels);
        head.repr
            .fill_column(&ints, lsb, schema.sample_type, &mut values, start, stride)?;
        previous = Some(ints);
    }
    Ok(DecodedBlock { times, values })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SampleType;
    use crate::frame::tests::imu_schema;
    use proptest::prelude::*;

    fn imu_block(n: usize, seed: u64) -> Vec<Frame> {
        crate::synthetic::imu_frames(n, seed, 5.0)
    }

    fn assert_round_trip(schema: &StreamSchema, frames: &[Frame]) -> Packet {
        let packet = LosslessCodec.encode(schema, frames).unwrap();
        let bytes = packet.to_bytes();
        let parsed = Packet::from_bytes(&bytes).unwrap();
        let decoded = LosslessCodec.decode(schema, &parsed).unwrap();
        assert_eq!(decoded.len(), frames.len());
        for (a, b) in frames.iter().zip(&decoded) {
            assert!(a.bit_eq(b), "{a:?} != {b:?}");
        }
        packet
    }

    #[test]
    fn neighbouring_lidar_beams_predict_each_other() {
        let (schema, frames) = crate::synthetic::lidar_scans(32, 400);
        let packet = assert_round_trip(&schema, &frames);
        let mut neighbour_predicted = 0;
        for_each_value_column(
            &schema,
            |c| frames.iter().map(|f| f.values[c]).collect::<Vec<f64>>(),
            |_, ints, neighbour| {
                if let Prediction::NeighbourMedian = plan_column(ints, neighbour).prediction {
                    neighbour_predicted += 1;
                }
            },
        );
        assert!(
            neighbour_predicted >= 24,
            "{neighbour_predicted} of 31 beams"
        );
        // Each beam alone, predicted only from its own past.
        let alone =
            crate::frame::tests::payload_of_each_channel_alone(&LosslessCodec, &schema, &frames);
        assert!(
            packet.payload.len() * 10 < alone * 9,
            "{} bytes with neighbours, {alone} alone",
            packet.payload.len()
        );
    }

    /// The packet of `lidar_scans(16, 120)` that this version wrote decodes bit-exactly (a
    /// change of the format shows here first); those of the versions before, which coded top
    /// mantissa bits apart, are refused by their version.
    #[test]
    fn packets_of_this_version_decode_and_earlier_ones_are_refused() {
        let (schema, frames) = crate::synthetic::lidar_scans(16, 120);
        let packet = Packet::from_bytes(include_bytes!("../testdata/lidar_lossless_v8.bin"))
            .expect("a packet");
        assert_eq!(packet.header.codec_version, VERSION);
        let decoded = LosslessCodec.decode(&schema, &packet).unwrap();
        assert_eq!(decoded.len(), frames.len());
        assert!(frames.iter().zip(&decoded).all(|(a, b)| a.bit_eq(b)));
        crate::frame::tests::assert_refused_by_version(
            &LosslessCodec,
            CodecId::Lossless,
            &schema,
            &[
                (include_bytes!("../testdata/lidar_lossless_v5.bin"), 5),
                (include_bytes!("../testdata/lidar_lossless_v6.bin"), 6),
            ],
        );
    }

    #[test]
    fn lidar_no_returns_are_taken_out_of_prediction() {
        let (schema, clean) = crate::synthetic::lidar_scans(32, 400);
        let (frames, holes) = crate::synthetic::with_no_returns(&clean, 0.02, 4, 100..140);
        let packet = assert_round_trip(&schema, &frames);
        let mut with_holes = 0;
        for_each_value_column(
            &schema,
            |c| frames.iter().map(|f| f.values[c]).collect::<Vec<f64>>(),
            |_, ints, neighbour| {
                with_holes += plan_column(ints, neighbour).holes.is_some() as usize
            },
        );
        assert_eq!(with_holes, 32);
        // Predicted through, a no-return costs two jumps of a few metres in millimetres
        // (over 24 bits); taken out, a few bits for its run and the run after it.
        let clean_bytes = LosslessCodec.encode(&schema, &clean).unwrap().payload.len();
        let extra_bits = (packet.payload.len() - clean_bytes) * 8;
        assert!(
            extra_bits < holes * 12,
            "{extra_bits} bits for {holes} no-returns"
        );
    }

    #[test]
    fn independent_channels_keep_their_own_predictors() {
        let schema = imu_schema();
        let frames = imu_block(1000, 5);
        for_each_value_column(
            &schema,
            |c| frames.iter().map(|f| f.values[c]).collect::<Vec<f64>>(),
            |_, ints, neighbour| {
                assert!(matches!(
                    plan_column(ints, neighbour).prediction,
                    Prediction::Own(_)
                ));
            },
        );
    }

    #[test]
    fn the_first_channel_cannot_be_predicted_from_a_neighbour() {
        let schema = imu_schema();
        let frames: Vec<Frame> = (0..100)
            .map(|i| Frame::new(i * 5_000_000, vec![0.0; 6]))
            .collect();
        let mut packet = LosslessCodec.encode(&schema, &frames).unwrap();
        // Column count, the regular timestamps' descriptor, then channel 0's: constant,
        // so all-zero and without parameters.
        assert_eq!(packet.payload[2] & ALL_ZERO_BIT, ALL_ZERO_BIT);
        packet.payload[2] = packet.payload[2] & !0b111 | NEIGHBOUR_TAG;
        assert_eq!(
            LosslessCodec.decode(&schema, &packet),
            Err(CodecError::Corrupt(
                "the first channel predicted from the one before"
            ))
        );
    }

    #[test]
    fn quantised_imu_round_trips_and_compresses() {
        let schema = imu_schema();
        let frames = imu_block(200, 1);
        let packet = assert_round_trip(&schema, &frames);
        let raw = frames.len() * (8 + schema.raw_value_bytes());
        let ratio = raw as f64 / packet.len() as f64;
        assert!(ratio > 2.5, "ratio {ratio:.2} on a quantised IMU block");
    }

    #[test]
    fn an_adc_step_missing_from_the_schema_is_found_in_the_data() {
        let mut schema = imu_schema();
        let frames = imu_block(300, 5);
        let with_lsb = assert_round_trip(&schema, &frames).len();
        schema.lsb = vec![None; 6];
        let detected = assert_round_trip(&schema, &frames).len();
        // Only the six 8-byte quanta in the column heads should differ.
        assert!(
            detected <= with_lsb + 6 * 8 + 8,
            "{detected} vs {with_lsb} bytes"
        );
    }

    #[test]
    fn regular_timestamps_cost_almost_nothing() {
        let schema = imu_schema();
        let frames: Vec<Frame> = (0..200)
            .map(|i| Frame::new(i * 5_000_000, vec![0.0; 6]))
            .collect();
        let packet = assert_round_trip(&schema, &frames);
        assert!(
            packet.payload.len() < 24,
            "{} payload bytes",
            packet.payload.len()
        );
    }

    #[test]
    fn jittery_microsecond_timestamps_cost_their_jitter_not_their_nanoseconds() {
        // A logger stamping a 200 Hz sensor with a microsecond clock, +-20 us of jitter.
        let schema = imu_schema();
        let mut state = 7u64;
        let frames: Vec<Frame> = (0..1000i64)
            .map(|i| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                let jitter_us = (state >> 33) as i64 % 41 - 20;
                Frame::new(
                    1_700_000_000_000_000 + i * 5_000_000 + jitter_us * 1000,
                    vec![0.0; 6],
                )
            })
            .collect();
        let packet = assert_round_trip(&schema, &frames);
        // Uniform jitter over 41 microseconds holds 5.4 bits, its difference (what a
        // predictor from the previous stamps sees) 6; the nanosecond digits would add ten.
        let bits = packet.payload.len() as f64 * 8.0 / frames.len() as f64;
        assert!(bits < 8.0, "{bits:.2} bits per timestamp");
    }

    #[test]
    fn timestamps_at_the_ends_of_the_clock_round_trip() {
        let schema = imu_schema();
        for times in [
            vec![i64::MIN, i64::MAX, 0, -1, 1],
            vec![i64::MAX, i64::MIN + 3000, 3000],
            vec![5, 5, 5],
            vec![-4_000_000_000, 6_000_000_000],
        ] {
            let frames: Vec<Frame> = times.iter().map(|&t| Frame::new(t, vec![1.0; 6])).collect();
            assert_round_trip(&schema, &frames);
        }
    }

    #[test]
    fn special_floats_round_trip_bit_exactly() {
        let mut schema = imu_schema();
        schema.lsb = vec![None; 6];
        schema.sample_type = SampleType::F64;
        let specials = [
            f64::NAN,
            -f64::NAN,
            f64::from_bits(0x7ff0_0000_0000_0001),
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            0.0,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::MIN,
            1e-310,
        ];
        let frames: Vec<Frame> = specials
            .iter()
            .enumerate()
            .map(|(i, &x)| Frame::new(i as i64, vec![x, -x, x * 0.5, 1.0, x, 2.0]))
            .collect();
        assert_round_trip(&schema, &frames);
        schema.sample_type = SampleType::F32;
        assert_round_trip(&schema, &frames);
    }

    #[test]
    fn integer_streams_round_trip_at_the_extremes() {
        let mut schema = imu_schema();
        schema.sample_type = SampleType::I64;
        schema.lsb = vec![None; 6];
        let big = (1i64 << 53) as f64;
        let frames: Vec<Frame> = (0..50)
            .map(|i| Frame::new(i64::MIN + i, vec![big, -big, i as f64, 0.0, -1.0, 1.5]))
            .collect();
        assert_round_trip(&schema, &frames);
    }

    #[test]
    fn wrong_schema_and_corrupt_payloads_are_errors_not_panics() {
        let schema = imu_schema();
        let packet = LosslessCodec.encode(&schema, &imu_block(40, 2)).unwrap();
        let mut other = schema.clone();
        other.rate_hz = 100.0;
        assert!(matches!(
            LosslessCodec.decode(&other, &packet),
            Err(CodecError::SchemaMismatch { .. })
        ));
        for cut in 0..packet.payload.len() {
            let mut truncated = packet.clone();
            truncated.payload.truncate(cut);
            let _ = LosslessCodec.decode(&schema, &truncated);
        }
        for i in 0..packet.payload.len() {
            let mut flipped = packet.clone();
            flipped.payload[i] ^= 0x5a;
            let _ = LosslessCodec.decode(&schema, &flipped);
        }
    }

    #[test]
    fn ragged_frames_are_rejected() {
        let schema = imu_schema();
        let mut frames = imu_block(5, 3);
        frames[3].values.pop();
        assert_eq!(
            LosslessCodec.encode(&schema, &frames),
            Err(CodecError::ChannelCount {
                frame: 3,
                expected: 6,
                found: 5
            })
        );
        assert_eq!(
            LosslessCodec.encode(&schema, &[]),
            Err(CodecError::EmptyBlock)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bits_round_trip(
            bits in proptest::collection::vec(any::<u64>(), 1..120),
            times in proptest::collection::vec(any::<i64>(), 1..120),
            f32_stream in any::<bool>(),
        ) {
            let mut schema = imu_schema();
            schema.sample_type = if f32_stream { SampleType::F32 } else { SampleType::F64 };
            let n = bits.len().min(times.len()) / 6 + 1;
            let frames: Vec<Frame> = (0..n)
                .map(|i| Frame::new(
                    times[i % times.len()],
                    (0..6).map(|c| f64::from_bits(bits[(i * 6 + c) % bits.len()])).collect(),
                ))
                .collect();
            let packet = LosslessCodec.encode(&schema, &frames).unwrap();
            let decoded = LosslessCodec.decode(&schema, &Packet::from_bytes(&packet.to_bytes()).unwrap()).unwrap();
            for (a, b) in frames.iter().zip(&decoded) {
                prop_assert!(a.bit_eq(b));
            }
        }

        /// Millimetre ranges with runs of zeros (no returns) of any length: holes where
        /// they are taken out, bit-exact either way.
        #[test]
        fn columns_with_zeros_round_trip(
            ranges in proptest::collection::vec(1i64..8000, 6..600),
            zeros in proptest::collection::vec((0usize..600, 1usize..40), 0..30),
        ) {
            let (schema, _) = crate::synthetic::lidar_scans(6, 1);
            let mut ranges = ranges;
            let len = ranges.len();
            for (start, run) in zeros {
                for r in ranges.iter_mut().skip(start % len).take(run) {
                    *r = 0;
                }
            }
            let frames: Vec<Frame> = ranges
                .chunks_exact(6)
                .enumerate()
                .map(|(i, chunk)| Frame::new(
                    i as i64 * 100_000_000,
                    chunk.iter().map(|&mm| crate::quantize_to_lsb(mm as f64 * 0.001, 0.001, SampleType::F32)).collect(),
                ))
                .collect();
            for frame_codec in [&LosslessCodec as &dyn Codec, &crate::BoundedCodec::new(crate::ErrorBound::Absolute(0.004))] {
                let packet = frame_codec.encode(&schema, &frames).unwrap();
                let decoded = frame_codec.decode(&schema, &Packet::from_bytes(&packet.to_bytes()).unwrap()).unwrap();
                prop_assert_eq!(decoded.len(), frames.len());
                for (a, b) in frames.iter().zip(&decoded) {
                    for (x, y) in a.values.iter().zip(b.values.iter()) {
                        if frame_codec.id() == CodecId::Lossless {
                            prop_assert_eq!(x.to_bits(), y.to_bits());
                        } else {
                            prop_assert!((x - y).abs() <= 0.004, "{} -> {}", x, y);
                        }
                    }
                }
            }
        }
    }
}
