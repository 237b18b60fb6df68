//! Adaptive rANS coding of integer residuals.
//!
//! A residual `r` is zigzag-mapped to `z`, split into a bucket `b` (the bit length of `z`) and
//! `b - 1` mantissa bits below the implicit leading one. The bucket is coded relative to the
//! bit length `k` of the running mean of recent `z` (as LOCO-I estimates its Golomb
//! parameter): one of 32 bucket symbols (bucket 0, 29 distances `b - k`, and an escape on
//! either side followed by the bucket in 7 raw bits), together with the top mantissa bit
//! where the bucket has one, so one of 64 symbols, from an adaptive distribution of its own
//! for every `k`. The rest of the mantissa is uniform and goes around the coder.
//!
//! The top bit is in the symbol rather than coded after it (as up to codec 1 version 7 and
//! codec 2 version 8, from a probability per bucket): one rANS step and one model update a
//! residual instead of two of each, the bench's decoders 12-20 % faster and its lossless
//! encoders 10-16 %, for -0.3 % to +0.9 % bytes (the bench's streams and the CSVs').
//!
//! Beside a channel it is predicted from (a lidar's next beam), a residual's model also
//! knows how far that channel moved at the sample, its *activity*: an edge sweeping across
//! the beams shows there. The expected bucket is then the mean of the running mean's and
//! the activity's, and the distribution one of three for it, by whether the activity's
//! bucket is below, at or above the running mean's ([`ResidualContext::beside`]).
//!
//! Distributions adapt with every symbol, as a counting estimator at first (so a short block
//! learns in a few symbols), then at a fixed rate (so a long block keeps tracking). An update
//! moves the whole cumulative table towards the one of the symbol just seen, 64 lanes at
//! once, so it vectorises; finding a symbol is counting the table entries at or below a
//! slot, which vectorises too: no branch on a coded decision, one multiply per symbol. All
//! arithmetic is integer, so encoder and decoder stay in lockstep on every machine, and
//! models start afresh in every packet, so packets decode independently.
//!
//! The coder is 32-bit rANS with 16-bit renormalisation (one word at most per symbol,
//! branch-free). rANS decodes in the reverse order of encoding: the encoder records each
//! symbol's interval as it models and codes them backwards when it finishes.

use crate::CodecError;
use crate::divisor::Divisor;

/// Probabilities are in units of `2^-SCALE_BITS`.
const SCALE_BITS: u32 = 15;
const SCALE: u32 = 1 << SCALE_BITS;
const SLOT_MASK: u32 = SCALE - 1;
/// rANS state lower bound: the state stays in `[STATE_LOW, 2^32)`, moving 16 bits at a time.
const STATE_LOW: u32 = 1 << 16;
/// Slowest adaptation step, 1/limit: long enough a memory to estimate rare symbols, short
/// enough to follow a stream that changes.
const ADAPT_LIMIT: usize = 256;
/// The running mean halves its history every this many symbols.
const MEAN_WINDOW: u32 = 32;

/// Bucket symbols: `ZERO` for bucket 0 (`z = 0`), `b - k + ORIGIN` for distances `b - k` in
/// `2 - ORIGIN..=SYMBOLS - 2 - ORIGIN`, and escapes for nonzero buckets beyond, below and
/// above. Zero has a symbol of its own because a column of mostly repeated values with rare
/// large steps (a magnetometer updating at a lower rate) has a high mean and many zeros.
const DISTANCES: usize = 32;
const ORIGIN: i32 = 20;
const ZERO: usize = 0;
const ESCAPE_BELOW: usize = 1;
const ESCAPE_ABOVE: usize = DISTANCES - 1;
/// A coded symbol is a bucket symbol and the bit below the leading one together:
/// `distance << 1 | top`, `top` 0 where there is no such bit in the symbol (buckets 0 and 1,
/// and escapes, whose mantissa goes raw whole).
const SYMBOLS: usize = 2 * DISTANCES;
/// Bits of an escaped bucket (0 to 64).
const ESCAPE_BITS: u32 = 7;
/// Every symbol keeps at least this frequency, so that any can be coded.
const FREQUENCY_FLOOR: i32 = 1;

/// `RECIPROCAL[d] = 2^16 / d`, capped to fit an `i16`: the adaptation divides by
/// multiplying (encoder and decoder only need the same arithmetic, not true division).
const RECIPROCAL: [i16; ADAPT_LIMIT + 1] = {
    let mut table = [0i16; ADAPT_LIMIT + 1];
    let mut d = 1;
    while d <= ADAPT_LIMIT {
        let r = (1 << 16) / d as i32;
        table[d] = if r > i16::MAX as i32 {
            i16::MAX
        } else {
            r as i16
        };
        d += 1;
    }
    table
};

/// How many symbols a model has seen, counted up to where its adaptation rate, `1 / (seen +
/// 2)` but at least `1 / LIMIT`, stops changing: one byte, and the rate one lookup without
/// a bound to check.
#[derive(Clone, Copy)]
struct Seen<const LIMIT: usize>(u8);

impl<const LIMIT: usize> Seen<LIMIT> {
    const RATES: [i16; 256] = {
        let mut rates = [0i16; 256];
        let mut seen = 0;
        while seen < 256 {
            let d = if seen + 2 < LIMIT { seen + 2 } else { LIMIT };
            rates[seen] = RECIPROCAL[d];
            seen += 1;
        }
        rates
    };

    const fn new(seen: u8) -> Self {
        Self(seen)
    }

    #[inline(always)]
    fn rate(self) -> i16 {
        Self::RATES[usize::from(self.0)]
    }

    #[inline(always)]
    fn count(&mut self) {
        self.0 += u8::from(usize::from(self.0) + 2 < LIMIT);
    }
}

/// An adaptive distribution over the symbols (bucket and top bit), as its cumulative table:
/// `starts[s]` is where symbol `s`'s interval begins (`starts[0] = 0`, the last ends at
/// `SCALE`). Aligned to a cache line, so that the table is two lines and none of the search's
/// and the update's 32-byte loads and stores straddles two (packed at 130 bytes, most did).
/// Measured in `lydlr bench codec`, alternated with the packed build: decoding 3-5 % faster
/// (the lidar's bounded decode 198-203 MB/s -> 207-213), encoding 4-7 % with [`TARGETS`]
/// aligned as well; same bytes. Kept in [`Models`].
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct AdaptiveDistances {
    starts: [i16; SYMBOLS],
    seen: Seen<ADAPT_LIMIT>,
}

/// `TARGETS[s]`: the cumulative table of symbol `s` alone, every other symbol at the floor.
/// A table moved towards it by a fraction keeps every symbol at the floor or above (the
/// update is monotone in both the table and the target). Aligned as the tables it updates.
static TARGETS: CacheLines<[[i16; SYMBOLS]; SYMBOLS]> = CacheLines({
    let mut targets = [[0i16; SYMBOLS]; SYMBOLS];
    let mut s = 0;
    while s < SYMBOLS {
        let mut i = 0;
        while i < SYMBOLS {
            let floor = i as i32 * FREQUENCY_FLOOR;
            targets[s][i] = if i > s {
                (floor + SCALE as i32 - SYMBOLS as i32 * FREQUENCY_FLOOR) as i16
            } else {
                floor as i16
            };
            i += 1;
        }
        s += 1;
    }
    targets
});

/// A value aligned to a cache line.
#[repr(align(64))]
struct CacheLines<T>(T);

/// Roughly how often a residual lands `d` buckets from the expected one (relative weights).
const fn typical_share(d: i32) -> i32 {
    match d {
        0 => 256,
        1 => 192,
        2 => 48,
        3 => 8,
        -1 => 160,
        -2 => 96,
        -3 => 48,
        -4 => 24,
        -5 => 12,
        -6 => 6,
        _ => 2,
    }
}

/// About how many symbols a fresh distribution's prior weighs.
const PRIOR_WEIGHT: u8 = 12;

/// The fresh distribution for expected bucket `k`: most residuals land within a bucket or
/// two of the expected one, more below than above (a Laplacian's magnitude is spread towards
/// zero), few far away, none below bucket 0.
const PRIORS: [AdaptiveDistances; 65] = {
    let mut priors = [AdaptiveDistances {
        starts: [0; SYMBOLS],
        seen: Seen::new(0),
    }; 65];
    let mut k = 0;
    while k < 65 {
        let mut weights = [0i32; SYMBOLS];
        let mut total = 0;
        let mut s = 0;
        while s < SYMBOLS {
            let distance = s >> 1;
            // The bucket of a distance symbol (meaningless for zero and the escapes).
            let bucket = k as i32 + distance as i32 - ORIGIN;
            let weight = match distance {
                ZERO => typical_share(-(k as i32)),
                ESCAPE_BELOW if k >= ORIGIN as usize => 2,
                ESCAPE_ABOVE if k + ESCAPE_ABOVE <= 64 + ORIGIN as usize => 2,
                ESCAPE_BELOW | ESCAPE_ABOVE => 0,
                _ if bucket >= 1 && bucket <= 64 => typical_share(distance as i32 - ORIGIN),
                _ => 0,
            };
            // A bucket's two halves by its top bit start equally likely (a prior skewed
            // towards 0, as a Laplacian's density falls across a bucket, cost the bench's
            // 10-frame packets 1.0 % of the IMU's bits and 1.3 % of the lidar's); a symbol
            // without a top bit takes the whole.
            let has_top = distance != ZERO && !is_escape(distance) && bucket >= 2;
            let w = match (has_top, s & 1) {
                (true, _) => weight,
                (false, 0) => 2 * weight,
                (false, _) => 0,
            };
            weights[s] = w;
            total += w;
            s += 1;
        }
        let spare = SCALE as i32 - SYMBOLS as i32 * FREQUENCY_FLOOR;
        let mut acc = 0;
        s = 0;
        while s < SYMBOLS {
            priors[k].starts[s] = (s as i32 * FREQUENCY_FLOOR + acc * spare / total) as i16;
            acc += weights[s];
            s += 1;
        }
        priors[k].seen = Seen::new(PRIOR_WEIGHT - 2);
        k += 1;
    }
    priors
};

impl AdaptiveDistances {
    #[inline(always)]
    fn interval(&self, symbol: usize) -> (u32, u32) {
        let start = self.starts[symbol] as u32;
        let end = if symbol + 1 < SYMBOLS {
            self.starts[symbol + 1] as u32
        } else {
            SCALE
        };
        (start, end - start)
    }

    /// The symbol whose interval holds `slot`, searched in AVX2 where `avx2` says the CPU
    /// has it ([`avx2_allowed`], asked once per section: the answer is an atomic load,
    /// which the compiler would otherwise repeat for every symbol).
    #[inline(always)]
    fn find(&self, slot: u32, avx2: bool) -> usize {
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            #[allow(unsafe_code)]
            // SAFETY: `avx2` is `avx2_allowed()`, which checked the CPU for both features
            // `find_avx2` enables.
            return unsafe { self.find_avx2(slot) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = avx2;
        self.find_portable(slot)
    }

    /// [`AdaptiveDistances::find`] on any CPU.
    #[inline(always)]
    fn find_portable(&self, slot: u32) -> usize {
        let slot = slot as i16;
        // The starts ascend, so the symbol is the count of those at or below the slot, less
        // one (starts[0] = 0 always counts). Counting vectorises; a search would branch.
        let mut below = 0i16;
        for &s in &self.starts {
            below += i16::from(s <= slot);
        }
        // At least starts[0] counts: the mask only tells the compiler the index is in range.
        (below as usize).wrapping_sub(1) & (SYMBOLS - 1)
    }

    /// [`AdaptiveDistances::find`] in AVX2: as the compiler vectorises the count, but without
    /// putting the quarters' comparisons back in order (lane-crossing permutations on the
    /// decoder's critical path), which a count does not need. Inlined into the AVX2
    /// compilation of [`with_cpu_features`]: 8 % off the decoder's time a residual (measured
    /// on 32-symbol tables).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,popcnt")]
    #[inline]
    fn find_avx2(&self, slot: u32) -> usize {
        use std::arch::x86_64::{
            __m256i, _mm256_cmpgt_epi16, _mm256_loadu_si256, _mm256_movemask_epi8,
            _mm256_packs_epi16, _mm256_set1_epi16,
        };
        let quarters = self.starts.as_ptr().cast::<__m256i>();
        #[allow(unsafe_code)]
        // SAFETY: `starts` holds 64 i16, four unaligned 256-bit loads.
        let [a, b, c, d] = unsafe { [0, 1, 2, 3].map(|i| _mm256_loadu_si256(quarters.add(i))) };
        let slot = _mm256_set1_epi16(slot as i16);
        let low = _mm256_packs_epi16(_mm256_cmpgt_epi16(a, slot), _mm256_cmpgt_epi16(b, slot));
        let high = _mm256_packs_epi16(_mm256_cmpgt_epi16(c, slot), _mm256_cmpgt_epi16(d, slot));
        let above = ((_mm256_movemask_epi8(low) as u32).count_ones()
            + (_mm256_movemask_epi8(high) as u32).count_ones()) as usize;
        // starts[0] = 0 is never above: the mask only tells the compiler the index is in range.
        (SYMBOLS - 1 - above) & (SYMBOLS - 1)
    }

    #[inline(always)]
    fn update(&mut self, symbol: usize) {
        let rate = self.seen.rate();
        // A copy: read through a reference, the table might overlap the starts, and the
        // compiler checks that on every update.
        let target = TARGETS.0[symbol];
        for (s, t) in self.starts.iter_mut().zip(target) {
            let step = ((i32::from(t.wrapping_sub(*s)) * i32::from(rate)) >> 16) as i16;
            *s = s.wrapping_add(step);
        }
        self.seen.count();
    }
}

/// A context's distributions, in a vector taken from this thread's spares and given back to
/// them: a type aligned to a cache line is allocated through `posix_memalign`, and one
/// allocation per context made 10-frame packets 17-24 % slower to encode.
#[derive(Default, Clone)]
struct Models(Vec<AdaptiveDistances>);

/// How many spare vectors a thread keeps, and the longest it keeps (a column's contexts make
/// a few distributions alone, a few dozen beside a channel).
const SPARES_KEPT: usize = 64;
const SPARE_CAPACITY_KEPT: usize = 128;

thread_local! {
    static SPARE_MODELS: std::cell::RefCell<Vec<Vec<AdaptiveDistances>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl Models {
    /// Adds a distribution starting as `prior`: its index.
    #[inline(always)]
    fn push(&mut self, prior: AdaptiveDistances) -> usize {
        if self.0.capacity() == 0 {
            self.0 = SPARE_MODELS.with_borrow_mut(Vec::pop).unwrap_or_default();
        }
        self.0.push(prior);
        self.0.len() - 1
    }

    #[inline(always)]
    fn get(&mut self, index: usize) -> &mut AdaptiveDistances {
        &mut self.0[index]
    }
}

impl Drop for Models {
    fn drop(&mut self) {
        let mut spare = std::mem::take(&mut self.0);
        if (1..=SPARE_CAPACITY_KEPT).contains(&spare.capacity()) {
            spare.clear();
            // A thread being torn down has no spares to keep: the vector is freed.
            let _ = SPARE_MODELS.try_with(|spares| {
                let mut spares = spares.borrow_mut();
                if spares.len() < SPARES_KEPT {
                    spares.push(spare);
                }
            });
        }
    }
}

/// Distance distributions beside a channel: three per expected bucket, by how the activity
/// compares with the running mean ([`ResidualContext::beside`]).
const BESIDE_CLASSES: u32 = 3;
const BESIDE_KEYS: usize = 65 * BESIDE_CLASSES as usize;

/// The distance distributions beside a channel, made on first use of their key
/// `BESIDE_CLASSES k + class` (a column visits a few dozen): `index[key]` is one past the
/// model's in `models`.
#[derive(Clone)]
struct BesideModels {
    index: [u16; BESIDE_KEYS],
    models: Models,
    /// The last `z` coded beside, not yet in the running mean: a symbol's model is chosen
    /// from the mean of those before the one just coded, so that the choice does not wait
    /// on it (it cost 0.1 % of the lidar's bits).
    pending: u64,
}

/// Whether a residual is coded alone or beside a channel.
const ALONE: bool = true;
const BESIDE: bool = false;

/// The model chosen for the next residual beside a channel, a residual ahead: the choice
/// waits on the running mean, which waits on the residual before, and made before that one
/// is decoded it overlaps the decoding. The encoder and the decoder run the same steps
/// ([`ResidualEncoder::encode_beside`], [`ResidualDecoder::decode_beside`]).
#[derive(Clone, Copy)]
pub(crate) struct ChosenAhead(ModelChoice);

/// Which distribution codes a residual: its expected bucket `k` (what its bucket is coded
/// relative to) and `key`: alone `k` too, beside a channel the model's place in
/// [`BesideModels`]`::models`.
#[derive(Clone, Copy)]
struct ModelChoice {
    k: u32,
    key: u32,
}

/// Adaptive state for one column's residuals.
#[derive(Clone)]
pub(crate) struct ResidualContext {
    /// Running sum and count of recent `z`; their ratio's bit length is the expected bucket.
    sum: u64,
    count: u32,
    /// Distance distributions are made on first use of their expected bucket (a column
    /// visits a few): `model_of[k]` is one past the index in `models`, 0 for none yet.
    model_of: [u8; 65],
    models: Models,
    /// The expected bucket of the last symbol and its model's index in `models`.
    last: (u32, usize),
    /// The distributions beside a channel, from the first residual coded beside one.
    beside: Option<Box<BesideModels>>,
}

impl Default for ResidualContext {
    fn default() -> Self {
        Self {
            sum: 0,
            count: 0,
            model_of: [0; 65],
            models: Models::default(),
            last: (u32::MAX, 0),
            beside: None,
        }
    }
}

/// The bit length of `sum / count` (integer division; `count` at least 1), without
/// dividing and without a branch: with `m` the difference of the two bit lengths (0 where
/// the sum's is shorter), the quotient has `m` or `m + 1` bits, and `m + 1` exactly when
/// `sum >> m >= count`.
#[inline(always)]
pub(crate) fn bucket_of_quotient(sum: u64, count: u64) -> u32 {
    quotient_bits(sum, count, bucket_of(sum).saturating_sub(bucket_of(count)))
}

/// [`bucket_of_quotient`] from `m`, the difference of the bit lengths.
#[inline(always)]
fn quotient_bits(sum: u64, count: u64, m: u32) -> u32 {
    m + u32::from(sum >> m >= count)
}

impl ResidualContext {
    /// [`bucket_of_quotient`] of the running sum and count (0 for none), with a branch
    /// where the mean is below 1 (which the processor predicts: it seldom changes) and then
    /// one operation fewer on the decoder's critical path: the sum's bit length is then at
    /// least the count's.
    #[inline]
    fn expected_bucket(&self) -> u32 {
        let count = u64::from(self.count);
        if count == 0 || self.sum < count {
            return 0;
        }
        quotient_bits(self.sum, count, bucket_of(self.sum) - bucket_of(count))
    }

    /// A residual of a column coded alone: its running mean's bucket.
    #[inline(always)]
    fn alone(&self) -> ModelChoice {
        let k = self.expected_bucket();
        ModelChoice { k, key: k }
    }

    /// A residual beside a channel whose activity at the sample
    /// ([`crate::column::activity`]) has bit length `activity`: the expected bucket is the
    /// mean of the running mean's and the activity's, and the model one of three by whether
    /// the activity's bucket is below, at or above the running mean's (a running mean
    /// without the residual just coded, see [`BesideModels`]). The bench's lidar (4,000
    /// scans): 2.1 % fewer bits lossless and 3.1 % at one sigma in 1,000-scan packets, 1.6 %
    /// lossless in 10-scan ones. Tried in a model of the coder on a flocking robot's lidar:
    /// a model per class without the mean splits what a 10-scan packet learns and loses
    /// there; the mean without the classes gains half.
    #[inline(always)]
    fn beside(&mut self, activity: u32) -> ModelChoice {
        let own = self.expected_bucket();
        let class = (own as i32 - activity as i32).clamp(-1, 1) + 1;
        let k = (own + activity) / 2;
        let key = (k * BESIDE_CLASSES) as usize + class as usize;
        let table = self.beside_models();
        let index = match table.index[key] {
            0 => {
                let index = table.models.push(PRIORS[k as usize]);
                // At most one model per key: the count fits.
                table.index[key] = index as u16 + 1;
                index
            }
            i => usize::from(i) - 1,
        };
        ModelChoice {
            k,
            key: index as u32,
        }
    }

    /// The model of a column's first residual beside a channel, of an activity of bit
    /// length `activity`.
    #[inline(always)]
    pub(crate) fn choose_beside(&mut self, activity: u32) -> ChosenAhead {
        ChosenAhead(self.beside(activity))
    }

    /// The model for this residual beside a channel, `chosen` ahead; the residual before it
    /// enters the running mean, and the next one's model is chosen (its activity's bit
    /// length `next_activity`).
    #[inline(always)]
    fn advance_beside(&mut self, chosen: &mut ChosenAhead, next_activity: u32) -> ModelChoice {
        let before = self.beside_models().pending;
        self.observe(before);
        let ChosenAhead(choice) = std::mem::replace(chosen, self.choose_beside(next_activity));
        choice
    }

    /// The distribution for expected bucket `k` alone. The expected bucket seldom changes
    /// from one symbol to the next, and a branch on that (which the processor predicts)
    /// lets the symbol search start before the running mean's bucket is known; a table
    /// lookup would wait for it.
    #[inline(always)]
    fn distances(&mut self, k: u32) -> &mut AdaptiveDistances {
        if k != self.last.0 {
            let index = match self.model_of[k as usize] {
                0 => self.start_model(k),
                i => usize::from(i) - 1,
            };
            self.last = (k, index);
        }
        self.models.get(self.last.1)
    }

    #[cold]
    fn start_model(&mut self, k: u32) -> usize {
        let index = self.models.push(PRIORS[k as usize]);
        self.model_of[k as usize] = index as u8 + 1;
        index
    }

    /// The distribution beside a channel that [`ResidualContext::beside`] chose.
    #[inline(always)]
    fn distances_beside(&mut self, index: u32) -> &mut AdaptiveDistances {
        self.beside_models().models.get(index as usize)
    }

    #[inline(always)]
    fn beside_models(&mut self) -> &mut BesideModels {
        self.beside.get_or_insert_with(|| {
            Box::new(BesideModels {
                index: [0; BESIDE_KEYS],
                models: Models::default(),
                pending: 0,
            })
        })
    }

    #[inline]
    fn observe(&mut self, z: u64) {
        self.sum = self.sum.saturating_add(z);
        self.count += 1;
        if self.count >= MEAN_WINDOW {
            self.sum /= 2;
            self.count /= 2;
        }
    }
}

/// Whether bucket symbol `distance` (below [`DISTANCES`]) is an escape: one bit test.
#[inline(always)]
const fn is_escape(distance: usize) -> bool {
    const ESCAPES: u32 = 1 << ESCAPE_BELOW | 1 << ESCAPE_ABOVE;
    ESCAPES >> (distance & (DISTANCES - 1)) & 1 == 1
}

/// Whether the symbol of a residual in `bucket` carries the bit below the leading one (an
/// escape's does not), and how many bits of it go raw.
#[inline(always)]
fn top_and_rest(bucket: u32, escape: bool) -> (bool, u32) {
    let top_coded = bucket >= 2 && !escape;
    (top_coded, bucket.saturating_sub(1) - u32::from(top_coded))
}

pub(crate) fn zigzag(r: i64) -> u64 {
    ((r << 1) ^ (r >> 63)) as u64
}

pub(crate) fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

#[inline]
pub(crate) fn bucket_of(z: u64) -> u32 {
    64 - z.leading_zeros()
}

/// Uniform bits go around the rANS coder, packed LSB-first into 64-bit words: they cost
/// exactly their width either way, and shifting is far cheaper than coding.
#[derive(Default)]
struct RawBitWriter {
    words: Vec<u64>,
    current: u64,
    filled: u32,
}

impl RawBitWriter {
    /// Appends the low `count` bits of `value` (`count` below 64; none costs nothing, and
    /// takes no branch).
    #[inline(always)]
    fn put(&mut self, value: u64, count: u32) {
        debug_assert!(count < 64);
        let value = value & ((1 << count) - 1);
        self.current |= value << self.filled;
        let room = 64 - self.filled;
        if count >= room {
            self.words.push(self.current);
            self.current = if room == 64 { 0 } else { value >> room };
            self.filled = count - room;
        } else {
            self.filled += count;
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.filled > 0 {
            self.words.push(self.current);
        }
        let used = self.words.len() * 8
            - if self.filled > 0 {
                (64 - self.filled as usize) / 8
            } else {
                0
            };
        let mut bytes: Vec<u8> = self.words.iter().flat_map(|w| w.to_le_bytes()).collect();
        bytes.truncate(used);
        bytes
    }
}

#[derive(Clone, Copy)]
struct RawBitReader<'a> {
    /// Ends where the raw bits end, and may begin before them (a section's coded bytes),
    /// so that the reads near their end still load whole words.
    bytes: &'a [u8],
    /// Next bit to read.
    position: usize,
}

impl RawBitReader<'_> {
    /// The next `count` bits (up to 63).
    #[inline]
    fn get(&mut self, count: u32) -> Result<u64, CodecError> {
        let end = self.position + count as usize;
        if end > self.bytes.len() * 8 {
            return Err(CodecError::Corrupt("raw bits run past the payload"));
        }
        let first = self.position / 8;
        let shift = self.position % 8;
        self.position = end;
        // Up to 57 bits starting mid-byte fit the 8 bytes from the first (the common case:
        // one 64-bit load); up to 63 span at most 9.
        if count <= 57 {
            let word = |at: usize| {
                let window = self.bytes.get(at..at + 8)?;
                Some(u64::from_le_bytes(window.try_into().ok()?))
            };
            if let Some(word) = word(first) {
                return Ok((word >> shift) & ((1 << count) - 1));
            }
            // Within 8 bytes of the end, the last 8 bytes hold the bits (the read ends
            // within them), past the bytes skipped at their start: all 8 for an empty read
            // at the very end.
            if let Some(last) = self.bytes.len().checked_sub(8)
                && let Some(word) = word(last)
            {
                let skipped = (8 * (first - last) + shift) as u32;
                return Ok(word.checked_shr(skipped).unwrap_or(0) & ((1 << count) - 1));
            }
        }
        let wide = match self.bytes.get(first..first + 16) {
            Some(window) => u128::from_le_bytes(window.try_into().unwrap_or([0; 16])),
            None => self.end_from(first),
        } >> shift;
        Ok((wide as u64) & ((1 << count) - 1))
    }

    /// The bytes from `first` (at most the length) to the end, little-endian: the last 16
    /// shifted down, where there are 16. Reached by reads of more than 57 bits within 16
    /// bytes of the end, and by any read near the end of a section under 8 bytes. (Copied
    /// into a window of zeros instead, the end's reads took a quarter of the decode of a
    /// 200-frame battery packet.) Out of line: the decoders' loops keep their registers.
    #[cold]
    #[inline(never)]
    fn end_from(&self, first: usize) -> u128 {
        let len = self.bytes.len();
        match len
            .checked_sub(16)
            .and_then(|start| self.bytes.get(start..))
        {
            Some(last) => {
                let last = u128::from_le_bytes(*last.first_chunk().unwrap_or(&[0; 16]));
                // `first` is past the last 16 bytes' start: `first + 16 - len` bytes past.
                let skipped = (first + 16).saturating_sub(len) as u32;
                last.checked_shr(8 * skipped).unwrap_or(0)
            }
            None => self
                .bytes
                .get(first..)
                .unwrap_or_default()
                .iter()
                .rev()
                .fold(0, |wide, &b| wide << 8 | u128::from(b)),
        }
    }
}

pub(crate) struct ResidualEncoder {
    /// Every coded symbol's interval, `start | frequency << 16`, in coding order.
    intervals: Vec<u32>,
    raw: RawBitWriter,
}

impl ResidualEncoder {
    pub(crate) fn new() -> Self {
        Self::for_residuals(0)
    }

    /// An encoder with room for `count` residuals' symbols (one each), so that a block's
    /// coding does not grow and copy its record as it goes.
    pub(crate) fn for_residuals(count: usize) -> Self {
        Self {
            intervals: Vec::with_capacity(count),
            raw: RawBitWriter::default(),
        }
    }

    /// Whether nothing has been coded yet.
    pub(crate) fn is_empty(&self) -> bool {
        self.intervals.is_empty()
    }

    #[inline(always)]
    fn code(&mut self, (start, frequency): (u32, u32)) {
        self.intervals.push(start | frequency << 16);
    }

    #[inline(always)]
    pub(crate) fn encode(&mut self, ctx: &mut ResidualContext, residual: i64) {
        let choice = ctx.alone();
        self.encode_with::<ALONE>(ctx, residual, choice);
    }

    /// Codes `residual` beside a channel from the model `chosen` ahead
    /// ([`ChosenAhead`]), choosing the next one's (beside an activity of bit length
    /// `next_activity`).
    #[inline(always)]
    pub(crate) fn encode_beside(
        &mut self,
        ctx: &mut ResidualContext,
        chosen: &mut ChosenAhead,
        residual: i64,
        next_activity: u32,
    ) {
        let choice = ctx.advance_beside(chosen, next_activity);
        self.encode_with::<BESIDE>(ctx, residual, choice);
    }

    #[inline(always)]
    fn encode_with<const MODEL_ALONE: bool>(
        &mut self,
        ctx: &mut ResidualContext,
        residual: i64,
        ModelChoice { k, key }: ModelChoice,
    ) {
        let z = zigzag(residual);
        let bucket = bucket_of(z);
        let distance = (bucket as i32 - k as i32 + ORIGIN)
            .clamp(ESCAPE_BELOW as i32, ESCAPE_ABOVE as i32) as usize;
        let distance = std::hint::select_unpredictable(bucket == 0, ZERO, distance);
        let escape = is_escape(distance);
        let (top_coded, rest_bits) = top_and_rest(bucket, escape);
        let top = top_coded & ((z >> rest_bits) & 1 == 1);
        let symbol = distance << 1 | usize::from(top);
        let model = if MODEL_ALONE {
            ctx.distances(key)
        } else {
            ctx.distances_beside(key)
        };
        self.code(model.interval(symbol));
        model.update(symbol);
        if escape {
            self.raw.put(u64::from(bucket), ESCAPE_BITS);
        }
        self.raw.put(z, rest_bits);
        if MODEL_ALONE {
            ctx.observe(z);
        } else {
            ctx.beside_models().pending = z;
        }
    }

    /// The coded bytes' count (varint), the coded bytes, then the raw bits.
    pub(crate) fn finish(self) -> Vec<u8> {
        // The final state takes 3 bytes when it is below 2^24, else 4. Starting higher than
        // the least state does not pay: the start's extra bits stay in the final state, and
        // nearby starts end alike (tried: of eight starts one above the other, either all
        // ended below 2^24 or none did, on 5,000 40-frame IMU sections).
        let (state, words) = self.code_backwards(STATE_LOW);
        let raw = self.raw.finish();
        let mut out = Vec::with_capacity(words.len() * 2 + raw.len() + 14);
        let state_bytes = if state < 1 << 24 { 3 } else { 4 };
        crate::varint::put_uvarint(&mut out, (words.len() * 2 + state_bytes) as u64);
        out.extend_from_slice(&state.to_be_bytes()[4 - state_bytes..]);
        out.extend(words.iter().rev().flat_map(|w| w.to_le_bytes()));
        out.extend_from_slice(&raw);
        out
    }

    /// Codes the recorded symbols, last first, from state `start`. Returns the final state
    /// and the words, in reverse reading order.
    fn code_backwards(&self, start: u32) -> (u32, Vec<u16>) {
        let mut state = start;
        // At most one word per symbol.
        let mut words = vec![0u16; self.intervals.len()];
        let mut written = 0;
        for (&interval, slot) in self.intervals.iter().rev().zip(0..) {
            let (start, frequency) = (interval & 0xFFFF, interval >> 16);
            // Renormalise so that coding keeps the state below 2^32. Branch-free: whether a
            // word is due is close to a coin flip. The slot is free: `written <= slot`.
            let due = u64::from(state) >= u64::from(frequency) << (32 - SCALE_BITS);
            words[written.min(slot)] = state as u16;
            written += usize::from(due);
            // The reciprocal does not wait on the state, and both quotients (renormalised or
            // not) are under way while the comparison decides: the chain from one symbol to
            // the next holds a multiplication, a selection and x' = x + start + q (M - f),
            // which is (x / f) M + x mod f + start.
            let divisor = Divisor::new(u64::from(frequency));
            let shifted = state >> 16;
            let (quotient_kept, quotient_shifted) =
                (divisor.quotient(state), divisor.quotient(shifted));
            let (x, quotient) = if due {
                (shifted, quotient_shifted)
            } else {
                (state, quotient_kept)
            };
            state = x + start + quotient * (SCALE - frequency);
        }
        words.truncate(written);
        (state, words)
    }
}

/// Runs `hot` compiled for the instructions the CPU has beyond x86-64's baseline: AVX2 with
/// BMI and LZCNT where it has them (a distribution's 64 entries are compared and moved in four
/// 256-bit registers instead of eight: with 32-entry tables, the bench's bounded decoders 8 %
/// faster, lossless IMU 3 %), else the population count alone (finding a symbol counts table
/// entries, and without the instruction the count takes a dozen instructions on the decoder's
/// critical path).
/// Results are the same either way: the arithmetic is integer, and no enabled feature fuses a
/// float multiply with an add. `hot` must be inlined (mark the closure `#[inline(always)]`)
/// to be compiled for the features.
#[inline(always)]
pub(crate) fn with_cpu_features<R>(hot: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if avx2_allowed() && has!("bmi1") && has!("bmi2") && has!("lzcnt") {
            #[target_feature(enable = "avx2,bmi1,bmi2,lzcnt,popcnt")]
            fn with_avx2<R>(hot: impl FnOnce() -> R) -> R {
                hot()
            }
            #[allow(unsafe_code)]
            // SAFETY: the CPU has just been checked for every feature enabled.
            return unsafe { with_avx2(hot) };
        }
        if allowed(WITH_POPCOUNT) && has!("popcnt") {
            #[target_feature(enable = "popcnt")]
            fn with_popcount<R>(hot: impl FnOnce() -> R) -> R {
                hot()
            }
            #[allow(unsafe_code)]
            // SAFETY: the CPU has just been checked for the feature.
            return unsafe { with_popcount(hot) };
        }
    }
    hot()
}

/// The compilations of [`with_cpu_features`], narrowest first.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const WITH_POPCOUNT: u8 = 1;
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const WITH_AVX2: u8 = 2;

#[cfg(test)]
thread_local! {
    /// The widest compilation [`with_cpu_features`] may run on this thread: tests narrow it
    /// to check that every compilation codes the same bytes and values.
    static WIDEST: std::cell::Cell<u8> = const { std::cell::Cell::new(WITH_AVX2) };
}

/// Whether code compiled for AVX2 and the population count may run: the CPU has both, and
/// (in tests) this thread's compilations reach that wide.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn avx2_allowed() -> bool {
    allowed(WITH_AVX2)
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("popcnt")
}

#[cfg(not(target_arch = "x86_64"))]
fn avx2_allowed() -> bool {
    false
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[inline(always)]
fn allowed(compilation: u8) -> bool {
    #[cfg(test)]
    return WIDEST.get() >= compilation;
    #[cfg(not(test))]
    {
        let _ = compilation;
        true
    }
}

/// rANS decoder over 16-bit words; reads past the end see zeros and mark the section corrupt.
#[derive(Clone, Copy)]
struct RansDecoder<'a> {
    bytes: &'a [u8],
    position: usize,
    state: u32,
}

impl<'a> RansDecoder<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        let mut decoder = Self {
            bytes,
            position: 0,
            state: 0,
        };
        // The state's bytes, big-endian: 3 of them when the section's length is odd.
        let state_bytes = 4 - bytes.len() % 2;
        for _ in 0..state_bytes {
            decoder.state =
                decoder.state << 8 | u32::from(bytes.get(decoder.position).copied().unwrap_or(0));
            decoder.position += 1;
        }
        decoder
    }

    #[inline(always)]
    fn next_word(&self) -> u32 {
        match self
            .bytes
            .get(self.position..)
            .and_then(<[u8]>::first_chunk::<2>)
        {
            Some(&w) => u32::from(u16::from_le_bytes(w)),
            None => 0,
        }
    }

    #[inline(always)]
    fn slot(&self) -> u32 {
        self.state & SLOT_MASK
    }

    /// Consumes the symbol with interval `(start, frequency)` that holds the current slot.
    #[inline(always)]
    fn advance(&mut self, (start, frequency): (u32, u32)) {
        let slot = self.slot();
        self.state = frequency * (self.state >> SCALE_BITS) + slot - start;
        self.renormalise();
    }

    /// Reads a word where the state fell below its range. Branch-free: whether a word is due
    /// is close to a coin flip.
    #[inline(always)]
    fn renormalise(&mut self) {
        let due = self.state < STATE_LOW;
        let word = self.next_word();
        self.state = std::hint::select_unpredictable(due, self.state << 16 | word, self.state);
        self.position += 2 * usize::from(due);
    }

    #[inline]
    fn overran(&self) -> bool {
        self.position > self.bytes.len()
    }
}

#[derive(Clone, Copy)]
pub(crate) struct ResidualDecoder<'a> {
    coder: RansDecoder<'a>,
    raw: RawBitReader<'a>,
    /// Whether symbols are searched in AVX2 ([`AdaptiveDistances::find`]).
    avx2: bool,
}

const CORRUPT: CodecError = CodecError::Corrupt("entropy-coded section does not decode");

impl<'a> ResidualDecoder<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Result<Self, CodecError> {
        let mut reader = crate::varint::Reader::new(bytes);
        let count = reader.uvarint()?;
        let coded_len = usize::try_from(count)
            .ok()
            .filter(|&n| n <= reader.remaining())
            .ok_or(CORRUPT)?;
        let coded = reader.take(coded_len)?;
        // The raw bits are the rest: read from the whole section, so that the loads near
        // their end have whole words before it.
        let raw_start = bytes.len() - reader.remaining();
        Ok(Self {
            coder: RansDecoder::new(coded),
            raw: RawBitReader {
                bytes,
                position: 8 * raw_start,
            },
            avx2: avx2_allowed(),
        })
    }

    #[inline(always)]
    pub(crate) fn decode(&mut self, ctx: &mut ResidualContext) -> Result<i64, CodecError> {
        let choice = ctx.alone();
        self.decode_with::<ALONE>(ctx, choice)
    }

    /// Decodes a residual coded beside a channel ([`ResidualEncoder::encode_beside`]) from
    /// the model `chosen` ahead, choosing the next one's before it decodes.
    #[inline(always)]
    pub(crate) fn decode_beside(
        &mut self,
        ctx: &mut ResidualContext,
        chosen: &mut ChosenAhead,
        next_activity: u32,
    ) -> Result<i64, CodecError> {
        let choice = ctx.advance_beside(chosen, next_activity);
        self.decode_with::<BESIDE>(ctx, choice)
    }

    #[inline(always)]
    fn decode_with<const MODEL_ALONE: bool>(
        &mut self,
        ctx: &mut ResidualContext,
        ModelChoice { k, key }: ModelChoice,
    ) -> Result<i64, CodecError> {
        let model = if MODEL_ALONE {
            ctx.distances(key)
        } else {
            ctx.distances_beside(key)
        };
        let symbol = model.find(self.coder.slot(), self.avx2);
        self.coder.advance(model.interval(symbol));
        model.update(symbol);
        let (distance, top) = (symbol >> 1, symbol & 1);
        let mut bucket = if distance == ZERO {
            0
        } else {
            (k as i32 + distance as i32 - ORIGIN) as u32
        };
        let escape = is_escape(distance);
        if escape {
            bucket = self.raw.get(ESCAPE_BITS)? as u32;
        }
        let (top_coded, rest_bits) = top_and_rest(bucket, escape);
        // A bucket beyond 64 bits or below zero (wrapped), or a top bit where the symbol has
        // none: only a corrupt packet gets here.
        if bucket > 64 || top > usize::from(top_coded) {
            return Err(CodecError::Corrupt("residual symbol outside its buckets"));
        }
        let rest = self.raw.get(rest_bits)?;
        let lead = if bucket == 0 { 0 } else { 1u64 << (bucket - 1) };
        let z = lead | (top as u64) << rest_bits | rest;
        if self.coder.overran() {
            return Err(CORRUPT);
        }
        if MODEL_ALONE {
            ctx.observe(z);
        } else {
            ctx.beside_models().pending = z;
        }
        Ok(unzigzag(z))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(residuals: &[i64]) -> usize {
        let mut enc = ResidualEncoder::new();
        let mut ctx = ResidualContext::default();
        for &r in residuals {
            enc.encode(&mut ctx, r);
        }
        let bytes = enc.finish();
        let mut dec = ResidualDecoder::new(&bytes).unwrap();
        let mut ctx = ResidualContext::default();
        for &r in residuals {
            assert_eq!(dec.decode(&mut ctx).unwrap(), r);
        }
        bytes.len()
    }

    /// Residuals whose size follows the activity beside them (an edge in the channel before
    /// and a jump here) code in fewer bits beside it than alone, and decode back, from a
    /// context carried in as a column inherits one.
    #[test]
    fn residuals_beside_their_activity_cost_less_and_decode_ahead() {
        let mut uniform = crate::synthetic::uniform_source(17);
        let activities: Vec<u32> = (0..3000)
            .map(|_| if uniform() < 0.8 { 2 } else { 14 })
            .collect();
        let residuals: Vec<i64> = activities
            .iter()
            .map(|&a| {
                let magnitude = (uniform() * f64::from(1u32 << (a - 1))) as i64;
                if uniform() < 0.5 {
                    magnitude
                } else {
                    -magnitude
                }
            })
            .collect();
        let mut carried = ResidualContext::default();
        let mut alone = ResidualEncoder::new();
        for &r in &residuals[..100] {
            alone.encode(&mut carried, r);
        }
        let next_activity = |t: usize| activities.get(t + 1).copied().unwrap_or(0);
        let coded = |beside: bool| {
            let mut encoder = ResidualEncoder::new();
            let mut ctx = carried.clone();
            let mut chosen = ctx.choose_beside(activities[0]);
            for (t, &r) in residuals.iter().enumerate() {
                match beside {
                    true => encoder.encode_beside(&mut ctx, &mut chosen, r, next_activity(t)),
                    false => encoder.encode(&mut ctx, r),
                }
            }
            encoder.finish()
        };
        let (beside, alone) = (coded(true), coded(false).len());
        assert!(
            beside.len() * 10 < alone * 9,
            "{} bytes beside, {alone} alone",
            beside.len()
        );
        let mut decoder = ResidualDecoder::new(&beside).unwrap();
        let mut ctx = carried;
        let mut chosen = ctx.choose_beside(activities[0]);
        for (t, &r) in residuals.iter().enumerate() {
            let decoded = decoder.decode_beside(&mut ctx, &mut chosen, next_activity(t));
            assert_eq!(decoded.unwrap(), r, "residual {t}");
        }
    }

    /// The decoders and the residual coding loop, compiled for AVX2, for the population
    /// count alone and for x86-64's baseline ([`with_cpu_features`]), code the same bytes and
    /// decode the same values: IMU frames with jittery timestamps (a palette of intervals)
    /// and lidar scans with no-returns (holes, columns coded beside the channel before),
    /// lossless and bounded.
    #[test]
    fn every_compilation_codes_the_same_bytes_and_values() {
        use crate::{BoundedCodec, Codec, ErrorBound, LosslessCodec, synthetic};
        let mut uniform = synthetic::uniform_source(5);
        let mut imu = synthetic::imu_frames(600, 11, 40.0);
        for frame in &mut imu {
            frame.timestamp_ns += (uniform() * 4.0) as i64 * 1000;
        }
        let (lidar_schema, scans) = synthetic::lidar_scans(48, 120);
        let (lidar, _) = synthetic::with_no_returns(&scans, 0.1, 4, 30..50);
        let bounded = BoundedCodec::new(ErrorBound::Sigma(1.0));
        let codecs: [&dyn Codec; 2] = [&LosslessCodec, &bounded];
        for (schema, frames) in [(synthetic::imu_schema(), imu), (lidar_schema, lidar)] {
            for codec in codecs {
                let coded = |widest: u8| {
                    WIDEST.set(widest);
                    let packet = codec.encode(&schema, &frames).unwrap();
                    let decoded = codec.decode(&schema, &packet).unwrap();
                    WIDEST.set(WITH_AVX2);
                    (packet.to_bytes(), decoded)
                };
                let (bytes, decoded) = coded(WITH_AVX2);
                for widest in [WITH_POPCOUNT, 0] {
                    let (narrow_bytes, narrow_decoded) = coded(widest);
                    assert!(narrow_bytes == bytes, "{}: bytes differ", schema.name);
                    assert!(
                        narrow_decoded
                            .iter()
                            .zip(&decoded)
                            .all(|(a, b)| a.bit_eq(b)),
                        "{}: values differ",
                        schema.name
                    );
                }
            }
        }
    }

    /// Every slot of every prior, and of models moved far from their priors, finds the
    /// symbol whose interval holds it, in the AVX2 search as in the portable one.
    #[test]
    fn every_slot_finds_the_symbol_whose_interval_holds_it() {
        let mut models: Vec<AdaptiveDistances> = PRIORS.to_vec();
        let mut uniform = crate::synthetic::uniform_source(5);
        for k in [0, 3, 20, 64] {
            let mut model = PRIORS[k];
            for _ in 0..2_000 {
                // Mostly one symbol, sometimes any: squeezes the others to the floor.
                let symbol = if uniform() < 0.9 {
                    5
                } else {
                    (uniform() * SYMBOLS as f64) as usize
                };
                model.update(symbol);
            }
            models.push(model);
        }
        for model in &models {
            for slot in 0..SCALE {
                let symbol = model.find_portable(slot);
                let (start, frequency) = model.interval(symbol);
                assert!(frequency >= FREQUENCY_FLOOR as u32);
                assert!((start..start + frequency).contains(&slot), "slot {slot}");
                #[cfg(target_arch = "x86_64")]
                if avx2_allowed() {
                    #[allow(unsafe_code)]
                    // SAFETY: `avx2_allowed` checked the CPU for both features.
                    let found = unsafe { model.find_avx2(slot) };
                    assert_eq!(found, symbol, "slot {slot}");
                }
            }
        }
    }

    /// Only a corrupt section can name a bucket beyond 64 bits (an escape carries 7 raw bits,
    /// up to 127): an error, not an overflowing shift.
    #[test]
    fn an_escaped_bucket_beyond_64_bits_is_corrupt_not_a_panic() {
        let mut encoder = ResidualEncoder::new();
        encoder.code(PRIORS[0].interval(ESCAPE_ABOVE << 1));
        encoder.raw.put(127, ESCAPE_BITS);
        let decoded = first_residual_of(encoder);
        assert!(
            matches!(decoded, Err(CodecError::Corrupt(_))),
            "{decoded:?}"
        );
    }

    /// The first residual that a fresh context decodes from what `encoder` coded.
    fn first_residual_of(encoder: ResidualEncoder) -> Result<i64, CodecError> {
        let bytes = encoder.finish();
        ResidualDecoder::new(&bytes)?.decode(&mut ResidualContext::default())
    }

    /// The encoder never puts a top bit in the symbol of a bucket without one (0 and 1) nor
    /// of an escape: in a packet such a symbol is corruption, not a value.
    #[test]
    fn a_top_bit_where_the_bucket_has_none_is_corrupt() {
        for distance in [ZERO, ORIGIN as usize + 1, ESCAPE_ABOVE] {
            let mut encoder = ResidualEncoder::new();
            // Expected bucket 0: distance ORIGIN + 1 is bucket 1; the escape names bucket 5.
            encoder.code(PRIORS[0].interval(distance << 1 | 1));
            if is_escape(distance) {
                encoder.raw.put(5, ESCAPE_BITS);
            }
            let decoded = first_residual_of(encoder);
            assert!(
                matches!(decoded, Err(CodecError::Corrupt(_))),
                "distance {distance}: {decoded:?}"
            );
            // The same symbol without its top bit decodes.
            let mut encoder = ResidualEncoder::new();
            encoder.code(PRIORS[0].interval(distance << 1));
            if is_escape(distance) {
                encoder.raw.put(5, ESCAPE_BITS);
                encoder.raw.put(0, 4);
            }
            assert!(first_residual_of(encoder).is_ok(), "distance {distance}");
        }
    }

    /// Raw reads of every width from every bit of payloads of every length up to 40 bytes
    /// (the ends of short ones take another way) give the bits one at a time would, and a
    /// read past the end is an error.
    #[test]
    fn raw_reads_give_the_bits_wherever_they_start() {
        let mut uniform = crate::synthetic::uniform_source(5);
        let bytes: Vec<u8> = (0..40).map(|_| (uniform() * 256.0) as u8).collect();
        let bit = |payload: &[u8], i: usize| u64::from(payload[i / 8] >> (i % 8) & 1);
        for len in 0..=bytes.len() {
            let payload = &bytes[..len];
            for position in 0..=len * 8 {
                for count in 0..64 {
                    let mut reader = RawBitReader {
                        bytes: payload,
                        position,
                    };
                    let read = reader.get(count);
                    if position + count as usize > len * 8 {
                        assert!(read.is_err(), "{len} bytes, {count} bits from {position}");
                        continue;
                    }
                    let expected = (0..count as usize)
                        .map(|j| bit(payload, position + j) << j)
                        .sum::<u64>();
                    assert_eq!(read, Ok(expected), "{len} bytes, {count} from {position}");
                }
            }
        }
    }

    /// A section cut short reads zero words past its end: decoding stops with an error
    /// instead of inventing residuals from nothing.
    #[test]
    fn a_truncated_section_is_corrupt() {
        let residuals: Vec<i64> = (0..2000).map(|i| (i * 7919 % 3) - 1).collect();
        let mut encoder = ResidualEncoder::new();
        let mut ctx = ResidualContext::default();
        for &r in &residuals {
            encoder.encode(&mut ctx, r);
        }
        let bytes = encoder.finish();
        let mut reader = crate::varint::Reader::new(&bytes);
        let coded = reader.uvarint().unwrap() as usize;
        let header = bytes.len() - reader.remaining();
        let kept = coded / 4 * 2;
        let mut cut = Vec::new();
        crate::varint::put_uvarint(&mut cut, kept as u64);
        cut.extend_from_slice(&bytes[header..header + kept]);
        cut.extend_from_slice(&bytes[header + coded..]);
        // Plenty of raw bits, so that only the coded words can run out.
        cut.resize(cut.len() + (32 << 10), 0);
        let mut decoder = ResidualDecoder::new(&cut).unwrap();
        let mut ctx = ResidualContext::default();
        let outcome: Result<Vec<i64>, CodecError> =
            residuals.iter().map(|_| decoder.decode(&mut ctx)).collect();
        assert!(
            matches!(outcome, Err(CodecError::Corrupt(_))),
            "{outcome:?}"
        );
    }

    #[test]
    fn extremes_round_trip() {
        round_trip(&[
            0,
            1,
            -1,
            2,
            -2,
            i64::MAX,
            i64::MIN,
            i64::MIN + 1,
            1 << 40,
            -(1 << 52),
        ]);
    }

    #[test]
    fn zigzag_is_a_bijection_on_edges() {
        for r in [0, 1, -1, i64::MAX, i64::MIN, 12345, -12345] {
            assert_eq!(unzigzag(zigzag(r)), r);
        }
    }

    #[test]
    fn small_residuals_cost_few_bits() {
        // Residuals uniform in -8..=8 carry about 4.1 bits of entropy each.
        let residuals: Vec<i64> = (0..4000).map(|i| ((i * 7919) % 17) as i64 - 8).collect();
        let bytes = round_trip(&residuals);
        let bits_per = bytes as f64 * 8.0 / residuals.len() as f64;
        assert!(bits_per < 4.6, "{bits_per} bits per residual");
    }

    proptest! {
        /// Any bytes decode to residuals or an error, never a panic, whatever the contexts
        /// have learned on the way.
        #[test]
        fn arbitrary_sections_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(mut decoder) = ResidualDecoder::new(&bytes) {
                let (mut a, mut b) = (ResidualContext::default(), ResidualContext::default());
                for i in 0..600 {
                    if decoder.decode(if i % 3 == 0 { &mut a } else { &mut b }).is_err() {
                        break;
                    }
                }
            }
        }

        #[test]
        fn residuals_of_every_magnitude_round_trip(residuals in proptest::collection::vec(any::<i64>().prop_map(|r| r >> (r as u64 % 64)), 0..500)) {
            round_trip(&residuals);
        }
    }

    /// Against a source whose entropy is known, rather than the histogram of a short column
    /// (which underestimates a wide distribution's entropy: by 9 % for 4000 samples of a
    /// Laplacian of scale 800), the coder comes within 2.5 % at every scale (measured: 1.1,
    /// 1.8, 0.9, 0.7 and 0.6 % at scales 0.3, 1, 5, 50 and 800; the adaptive models' estimation
    /// noise and the raw mantissa bits cost most where residuals are small).
    #[test]
    fn laplacian_residuals_cost_within_a_few_percent_of_their_entropy() {
        let mut uniform = crate::synthetic::uniform_source(99);
        for scale in [0.3f64, 1.0, 5.0, 50.0, 800.0] {
            // A continuous Laplacian rounded to integers: P(k) for |k| >= 1 is half the
            // mass of |x| in [|k| - 1/2, |k| + 1/2).
            let tail = |m: f64| (-m.max(0.0) / scale).exp();
            let probability = |k: i64| match k {
                0 => 1.0 - tail(0.5),
                _ => (tail(k.abs() as f64 - 0.5) - tail(k.abs() as f64 + 0.5)) / 2.0,
            };
            let entropy: f64 = (-40_000..=40_000)
                .map(probability)
                .filter(|&p| p > 0.0)
                .map(|p| -p * p.log2())
                .sum();
            let residuals: Vec<i64> = (0..40_000)
                .map(|_| {
                    let u = uniform() - 0.5;
                    let tail = (1.0 - 2.0 * u.abs()).max(f64::MIN_POSITIVE);
                    let magnitude = (-scale * tail.ln()).round() as i64;
                    if u < 0.0 { -magnitude } else { magnitude }
                })
                .collect();
            let bits = round_trip(&residuals) as f64 * 8.0 / residuals.len() as f64;
            // Mostly zeros (scale 0.3): 3.5 % over. A bucket's rarer half by its top bit
            // (z = 3 there, 0.5 % of residuals) is estimated at the distribution's 2^-15
            // resolution and 1/256 rate, where its width's steps round away; 2.1 % at most
            // elsewhere. (Coded apart from the bucket, top bits cost 1.1 % there, but two
            // rANS steps a residual.)
            let allowed = if scale < 1.0 { 1.04 } else { 1.025 };
            assert!(
                bits < entropy * allowed,
                "scale {scale}: {bits:.3} bits per residual, entropy {entropy:.3}"
            );
        }
    }

    /// A finished context's distributions go to the next context made on its thread, emptied
    /// (no allocation per context), and a copy's are its own.
    #[test]
    fn a_finished_contexts_distributions_serve_the_next_one() {
        let mut encoder = ResidualEncoder::new();
        let mut first = ResidualContext::default();
        for r in [5, -300, 70_000] {
            encoder.encode(&mut first, r);
        }
        assert_eq!(first.models.0.len(), 3);
        let vector = first.models.0.as_ptr();
        let copy = first.clone();
        assert_ne!(copy.models.0.as_ptr(), vector);
        drop(copy);
        drop(first);
        let spare = SPARE_MODELS.with_borrow(|spares| spares.last().map(|v| (v.as_ptr(), v.len())));
        assert_eq!(spare, Some((vector, 0)));
        // The spares are taken last given first.
        let mut second = ResidualContext::default();
        encoder.encode(&mut second, 5);
        assert_eq!(second.models.0.as_ptr(), vector);
        assert_eq!(second.models.0.len(), 1);
    }

    #[test]
    fn constant_zero_residuals_are_nearly_free() {
        let bytes = round_trip(&vec![0; 10_000]);
        assert!(bytes < 40, "{bytes} bytes for 10k zeros");
    }
}
