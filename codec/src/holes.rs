//! Holes: the samples of a units column that read exactly 0 units where the rest of the
//! column lies far from 0, such as a lidar beam's "no return" (a dropout, or nothing within
//! range), which many scanners report as a range of 0. Predicted through, each hole costs
//! two large residuals (into the hole and back out); taken out of prediction, a run of holes
//! costs its length and the length of the run after it. Layout in `codec/FORMAT.md`.

use std::borrow::Cow;

use crate::CodecError;
use crate::column::residual_bits;
use crate::entropy::{ResidualContext, ResidualDecoder, ResidualEncoder, unzigzag, zigzag};

/// The rough cost of one run of holes and the present run after it: two run lengths.
const RUN_BITS: u64 = 12;

/// Where a column's holes are: the lengths of its alternating runs, present samples first
/// (that first run may be empty; every later run holds at least one sample), and each
/// sample's presence, which the copies in and out of the compacted column read without a
/// branch (a lidar's runs are short: a call or a guessed branch per run cost more).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holes {
    runs: Vec<usize>,
    present: usize,
    is_present: Vec<bool>,
}

impl Holes {
    /// The holes of `ints`, where they look cheaper taken out of prediction than predicted
    /// through: judged with previous-value prediction at quantisation steps of `step`
    /// units, which prices the jumps into and out of a hole (the part holes change; away
    /// from holes the two cost the same, and only the runs are visited).
    pub(crate) fn worth_taking_out(ints: &[i64], step: i64) -> Option<Holes> {
        let first_hole = first_zero(ints)?;
        let holes = Holes::of_from(ints, first_hole);
        if holes.present == 0 {
            return None;
        }
        let per_step = 1.0 / step as f64;
        // Truncated: `round` is a call where the baseline x86-64 has no instruction for it.
        let steps = |r: i64| residual_bits((r as f64 * per_step) as i64);
        let (mut through, mut around) = (0, 0);
        let mut start = 0;
        for (k, &len) in holes.runs.iter().enumerate() {
            let end = start + len;
            if k % 2 == 1 {
                let before = if start > 0 { ints[start - 1] } else { 0 };
                // Into the hole, along it, and out of it, against the present values either
                // side of it (the history's 0 before the first); the runs cost a few bits.
                through += steps(before.wrapping_neg()) + (len as u64 - 1) * steps(0);
                if let Some(&after) = ints.get(end) {
                    through += steps(after);
                    around += steps(after.wrapping_sub(before));
                }
                around += RUN_BITS;
            }
            start = end;
        }
        (around < through).then_some(holes)
    }

    /// The runs of `ints`' zeros and of the values between them.
    #[cfg(test)]
    pub(crate) fn of(ints: &[i64]) -> Holes {
        Holes::of_from(
            ints,
            ints.iter().position(|&x| x == 0).unwrap_or(ints.len()),
        )
    }

    /// [`Holes::of`], `first_hole` the position of the first zero (or the length). The runs
    /// are read from 64-sample masks of the zeros: a run ends where a sample's mask bit
    /// differs from the one before, and only those bits are visited. (With a pass storing
    /// each sample's run length, [`Holes::worth_taking_out`] took 4.9 % of the 20 s flock
    /// lidar CSV's bounded encode at four sigma; with the masks, 2.9 %.)
    fn of_from(ints: &[i64], first_hole: usize) -> Holes {
        let is_present: Vec<bool> = ints.iter().map(|&x| x != 0).collect();
        // Each chunk's changes, then the runs in one allocation of the size they count.
        // The samples before `first_hole` are present, so the first change is at
        // `first_hole` itself, the first run's end, already counted: start as if after a
        // hole.
        let mut hole_before = true;
        let changes: Vec<u64> = is_present[first_hole..]
            .chunks(64)
            .map(|chunk| {
                let holes = absent_mask(chunk);
                // Past a short last chunk only a change at the column's end can show: it
                // ends the last run, as the push after the loop would.
                let changes = holes ^ (holes << 1 | u64::from(hole_before));
                hole_before = holes >> (chunk.len() - 1) & 1 == 1;
                changes
            })
            .collect();
        let count: u32 = changes.iter().map(|c| c.count_ones()).sum();
        let mut runs = Vec::with_capacity(count as usize + 2);
        runs.push(first_hole);
        let mut run_start = first_hole;
        for (k, mut changes) in changes.into_iter().enumerate() {
            while changes != 0 {
                let at = first_hole + 64 * k + changes.trailing_zeros() as usize;
                runs.push(at - run_start);
                run_start = at;
                changes &= changes - 1;
            }
        }
        if run_start < ints.len() {
            runs.push(ints.len() - run_start);
        }
        let present = runs.iter().step_by(2).sum();
        Holes {
            runs,
            present,
            is_present,
        }
    }

    /// How many samples are not holes.
    pub(crate) fn present(&self) -> usize {
        self.present
    }

    /// The samples of `column` that are not holes.
    pub(crate) fn compact<T: Copy>(&self, column: &[T]) -> Vec<T> {
        let mut present = column.to_vec();
        self.compact_in_place(&mut present);
        present
    }

    /// Keeps the samples of `column` that are not holes, in place (no allocation: a lidar
    /// block's short columns spent a tenth of their time in the allocator).
    pub(crate) fn compact_in_place<T: Copy>(&self, column: &mut Vec<T>) {
        let mut to = 0;
        for (from, &keep) in self.is_present.iter().enumerate() {
            column[to] = column[from];
            to += usize::from(keep);
        }
        column.truncate(self.present);
    }

    /// The samples of `column` that are holes.
    pub(crate) fn holes_of<'a, T>(&'a self, column: &'a [T]) -> impl Iterator<Item = &'a T> + 'a {
        column
            .iter()
            .zip(&self.is_present)
            .filter_map(|(x, &present)| (!present).then_some(x))
    }

    /// The whole column from its present samples, holes 0: one pass forward into a new
    /// column (growing the old one in place and filling it from the end took twice as long).
    pub(crate) fn expand(&self, present: &[i64]) -> Vec<i64> {
        let Some(last) = present.len().checked_sub(1) else {
            return vec![0; self.is_present.len()];
        };
        let mut from = 0;
        self.is_present
            .iter()
            .map(|&keep| {
                // Loaded whether kept or not, and masked: a choice between the load and 0
                // was a branch on each sample. Within `present` wherever `keep` is (the
                // present samples count the keeps), and clamped to it where not.
                let x = present[from.min(last)] & -i64::from(keep);
                from += usize::from(keep);
                x
            })
            .collect()
    }

    /// What a column with these holes sees of the channel before it, at each of its present
    /// samples: the neighbour's value there, or where the neighbour has a hole of its own,
    /// its last value before (a range that was not measured is best guessed as the last one
    /// that was; 0 before any). Made in place from the neighbour.
    pub(crate) fn neighbour_at_present(&self, mut neighbour: Vec<i64>) -> Vec<i64> {
        let (mut held, mut to) = (0, 0);
        for (from, &keep) in self.is_present.iter().enumerate() {
            let x = neighbour[from];
            held = if x != 0 { x } else { held };
            neighbour[to] = held;
            to += usize::from(keep);
        }
        neighbour.truncate(self.present);
        neighbour
    }

    /// Codes the runs: the first present run's length, then each hole run's and each later
    /// present run's less one, each kind in a context of its own, until the column is full.
    pub(crate) fn encode(&self, encoder: &mut ResidualEncoder) {
        let mut contexts = [ResidualContext::default(), ResidualContext::default()];
        for (k, &len) in self.runs.iter().enumerate() {
            let coded = if k == 0 { len } else { len - 1 };
            encoder.encode(&mut contexts[k % 2], unzigzag(coded as u64));
        }
    }

    /// Decodes the runs of a column of `n` samples, as [`Holes::encode`] codes them.
    pub(crate) fn decode(decoder: &mut ResidualDecoder, n: usize) -> Result<Holes, CodecError> {
        // As the column decoders do: compiled for the CPU's instructions, the coder's position
        // in a local copy (a lidar block's runs had taken 8 % of its decoding).
        let (runs, present) = crate::entropy::with_cpu_features(
            #[inline(always)]
            || {
                let mut local = *decoder;
                let mut contexts = [ResidualContext::default(), ResidualContext::default()];
                let (mut runs, mut covered, mut present) = (Vec::with_capacity(32), 0usize, 0);
                while covered < n || runs.is_empty() {
                    let k = runs.len();
                    let coded = zigzag(local.decode(&mut contexts[k % 2])?);
                    let len = usize::try_from(coded)
                        .ok()
                        .and_then(|c| c.checked_add(usize::from(k > 0)))
                        .filter(|&len| len <= n - covered)
                        .ok_or(CodecError::Corrupt("a run of holes past the column's end"))?;
                    if k % 2 == 0 {
                        present += len;
                    }
                    runs.push(len);
                    covered += len;
                }
                *decoder = local;
                Ok::<_, CodecError>((runs, present))
            },
        )?;
        if present == 0 {
            return Err(CodecError::Corrupt("a column of nothing but holes"));
        }
        let mut is_present = Vec::with_capacity(n);
        for (k, &len) in runs.iter().enumerate() {
            is_present.resize(is_present.len() + len, k % 2 == 0);
        }
        Ok(Holes {
            runs,
            present,
            is_present,
        })
    }
}

/// A column's holes where its descriptor says it has them, read from the residual section,
/// and how many of its `n` samples are coded (the ones that are not holes).
pub(crate) fn decode_if(
    flagged: bool,
    decoder: &mut ResidualDecoder,
    n: usize,
) -> Result<(Option<Holes>, usize), CodecError> {
    if !flagged {
        return Ok((None, n));
    }
    let holes = Holes::decode(decoder, n)?;
    let present = holes.present();
    Ok((Some(holes), present))
}

/// What a column with `holes` sees of the channel before it: [`Holes::neighbour_at_present`],
/// or without holes the neighbour as it is.
pub(crate) fn neighbour_seen<'a>(holes: Option<&Holes>, neighbour: &'a [i64]) -> Cow<'a, [i64]> {
    match holes {
        Some(holes) => Cow::Owned(holes.neighbour_at_present(neighbour.to_vec())),
        None => Cow::Borrowed(neighbour),
    }
}

/// A column's coded samples with its holes (if any) put back.
pub(crate) fn put_back(holes: Option<&Holes>, column: Vec<i64>) -> Vec<i64> {
    match holes {
        Some(holes) => holes.expand(&column),
        None => column,
    }
}

/// Bit `i` set where `present[i]` (of at most 64) is false: eight flags a multiplication,
/// which moves each byte's low bit into the top byte.
fn absent_mask(present: &[bool]) -> u64 {
    const GATHER: u64 = 0x0102_0408_1020_4080;
    let mut mask = 0;
    for (w, flags) in present.chunks(8).enumerate() {
        // Past the end, present: no bit.
        let mut bytes = [1u8; 8];
        for (byte, &flag) in bytes.iter_mut().zip(flags) {
            *byte = u8::from(flag);
        }
        let absent = u64::from_le_bytes(bytes) ^ 0x0101_0101_0101_0101;
        mask |= (absent.wrapping_mul(GATHER) >> 56) << (8 * w);
    }
    mask
}

/// The position of the first 0 in `values`: eight at a time, without a branch on each.
fn first_zero(values: &[i64]) -> Option<usize> {
    let mut chunks = values.chunks_exact(8);
    for (k, chunk) in chunks.by_ref().enumerate() {
        if chunk.iter().fold(false, |any, &x| any | (x == 0)) {
            return chunk.iter().position(|&x| x == 0).map(|i| 8 * k + i);
        }
    }
    let tail = chunks.remainder();
    let tail_start = values.len() - tail.len();
    tail.iter().position(|&x| x == 0).map(|i| tail_start + i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn runs_alternate_from_a_present_run() {
        let ints = [0, 0, 5, 6, 0, 7, 0, 0];
        let holes = Holes::of(&ints);
        assert_eq!(holes.runs, vec![0, 2, 2, 1, 1, 2]);
        assert_eq!(holes.present(), 3);
        assert_eq!(holes.compact(&ints), vec![5, 6, 7]);
        assert_eq!(holes.expand(&[5, 6, 7]), ints);
        assert_eq!(
            holes.neighbour_at_present(vec![3, 0, 4, 0, 0, 9, 1, 0]),
            vec![4, 4, 9]
        );
    }

    #[test]
    fn a_lidar_beam_with_dropouts_takes_them_out_and_a_signal_through_zero_does_not() {
        let beam: Vec<i64> = (0..400)
            .map(|i| if i % 37 == 5 { 0 } else { 3000 + (i % 50) * 4 })
            .collect();
        assert!(Holes::worth_taking_out(&beam, 1).is_some());
        // A sine through zero: its zeros are on the way, not holes.
        let wave: Vec<i64> = (0..400)
            .map(|i| (1000.0 * (i as f64 / 10.0).sin()).round() as i64)
            .collect();
        assert!(wave.contains(&0));
        assert!(Holes::worth_taking_out(&wave, 1).is_none());
    }

    #[test]
    fn runs_past_the_column_are_corrupt() {
        let holes = Holes::of(&[1, 0, 0, 2]);
        let mut encoder = ResidualEncoder::new();
        holes.encode(&mut encoder);
        let bytes = encoder.finish();
        let mut decoder = ResidualDecoder::new(&bytes).unwrap();
        assert!(Holes::decode(&mut decoder, 2).is_err());
        let mut decoder = ResidualDecoder::new(&bytes).unwrap();
        assert_eq!(Holes::decode(&mut decoder, 4).unwrap(), holes);
    }

    proptest! {
        #[test]
        fn runs_round_trip(ints in proptest::collection::vec(0i64..3, 1..300)) {
            prop_assume!(ints.contains(&1) || ints.contains(&2));
            let holes = Holes::of(&ints);
            let mut encoder = ResidualEncoder::new();
            holes.encode(&mut encoder);
            encoder.encode(&mut ResidualContext::default(), 77);
            let bytes = encoder.finish();
            let mut decoder = ResidualDecoder::new(&bytes).unwrap();
            let decoded = Holes::decode(&mut decoder, ints.len()).unwrap();
            prop_assert_eq!(decoder.decode(&mut ResidualContext::default()).unwrap(), 77);
            prop_assert_eq!(&decoded, &holes);
            prop_assert_eq!(decoded.expand(&decoded.compact(&ints)), ints);
        }

        /// Runs of any length, across the 64-sample masks' edges, are the lengths of the
        /// column's groups of zeros and of non-zeros.
        #[test]
        fn runs_are_the_groups_of_zeros_and_values(
            lengths in proptest::collection::vec(1usize..150, 1..12),
            present_first in any::<bool>(),
        ) {
            let ints: Vec<i64> = lengths
                .iter()
                .enumerate()
                .flat_map(|(k, &len)| {
                    let present = (k % 2 == 0) == present_first;
                    std::iter::repeat_n(if present { 9 } else { 0 }, len)
                })
                .collect();
            let holes = Holes::of(&ints);
            let mut expected = if present_first { vec![] } else { vec![0] };
            expected.extend(&lengths);
            prop_assert_eq!(&holes.runs, &expected);
            prop_assert_eq!(holes.present(), ints.iter().filter(|&&x| x != 0).count());
            let is_present: Vec<bool> = ints.iter().map(|&x| x != 0).collect();
            prop_assert_eq!(&holes.is_present, &is_present);
        }
    }
}
