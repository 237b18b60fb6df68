//! Rate control: which rung of the quality ladder each stream is encoded at.
//!
//! The coordinator allocates a rate and a rung per stream from the operating points the node
//! reports; the node measures those points on its recent frames (in its own block size, so
//! packet overheads count) and corrects the rung when the rate it actually delivers over the
//! last two seconds strays from the target, never coarser than the quality floor.
//!
//! A target usually falls between two rungs, so blocks alternate: a credit counts the bits
//! the target allows minus the bits sent, and while it is positive the next block goes one
//! rung finer than the base rung. When even the finer blocks leave bits unspent for long
//! (the credit reaches its cap) the base rung steps finer; when even the base blocks spend
//! too much (the debt reaches its cap) it steps coarser.

use std::collections::VecDeque;

use lydlr_bus::messages::{RdPointMessage, StreamAllocation};
use lydlr_codec::{CodecError, Frame, QualityLadder, RdPoint};

/// Window over which the delivered rate is measured.
pub(crate) const WINDOW_NS: i64 = 2_000_000_000;
/// How often operating points are measured, and on how much recent data.
const MEASURE_EVERY_NS: i64 = 2_000_000_000;
/// The first measurement comes sooner: until a node reports its points the allocator can
/// only share the budget out equally.
const FIRST_MEASURE_NS: i64 = 500_000_000;
/// Points measured on fewer frames than this mislead more than they inform (a slow stream
/// waits for them: 2 s of a 10 Hz lidar).
const MIN_MEASURE_FRAMES: usize = 20;
/// At most one rung change per this much stream time.
const SETTLE_NS: i64 = 250_000_000;
/// Credit and debt caps, in seconds of the target rate: above one block's swing between
/// two rungs, so that alternation alone never moves the base rung.
const CREDIT_S: f64 = 0.25;
/// Off the target by this factor over a whole window, the base rung moves without waiting
/// for the credit.
const FAR: f64 = 1.15;

pub(crate) struct RateControl {
    allocation: Option<StreamAllocation>,
    level: u8,
    top_level: u8,
    /// Packets of the last window: end, bytes, and the bits its rung's point predicted.
    sent: VecDeque<(i64, usize, f64)>,
    credit_bits: f64,
    last_sent_ns: Option<i64>,
    history: VecDeque<Frame>,
    next_measure_ns: Option<i64>,
    last_change_ns: i64,
    points: Vec<RdPointMessage>,
    /// New points not yet reported.
    pub fresh: bool,
    /// A script asked for lossless until this time (stream clock).
    boost_until: i64,
    boosted: bool,
    /// Delivered over predicted rate at the rung in use (moving average): the measured
    /// points are scaled by it when reported, so the allocator plans with real rates.
    calibration: f64,
}

impl RateControl {
    pub fn new(ladder: &QualityLadder) -> Self {
        Self {
            allocation: None,
            level: 0,
            top_level: ladder.rungs.iter().map(|r| r.level).max().unwrap_or(0),
            sent: VecDeque::new(),
            credit_bits: 0.0,
            last_sent_ns: None,
            history: VecDeque::new(),
            next_measure_ns: None,
            last_change_ns: i64::MIN,
            points: Vec::new(),
            fresh: false,
            boost_until: i64::MIN,
            boosted: false,
            calibration: 1.0,
        }
    }

    /// The rung to encode the next block at: lossless while a script's boost lasts, one
    /// finer than the base rung while the target has bits to spare.
    pub fn level(&self) -> u8 {
        if self.boosted {
            0
        } else if self.allocation.is_some() && self.credit_bits > 0.0 && self.level > 0 {
            self.level - 1
        } else {
            self.level
        }
    }

    /// The rung the controller settled on; blocks go at it or one finer.
    pub fn base_level(&self) -> u8 {
        if self.boosted { 0 } else { self.level }
    }

    /// Lossless until `until_ns` (an event worth keeping exactly).
    pub fn boost(&mut self, until_ns: i64) {
        self.boost_until = self.boost_until.max(until_ns);
    }

    pub fn target_bps(&self) -> f64 {
        self.allocation.as_ref().map_or(0.0, |a| a.target_bps)
    }

    /// The measured points, rates scaled by how the delivered rate compares with them.
    pub fn points(&self) -> Vec<RdPointMessage> {
        self.points
            .iter()
            .map(|p| RdPointMessage {
                bits_per_second: p.bits_per_second * self.calibration,
                ..*p
            })
            .collect()
    }

    /// Takes a new allocation. The allocator repeats its choice of rung every period; only a
    /// new choice (or floor) moves the base rung, so the controller's corrections stand.
    pub fn allocate(&mut self, allocation: StreamAllocation) {
        let ceiling = allocation.quality_floor.min(self.top_level);
        let new_choice = self.allocation.as_ref().is_none_or(|a| {
            a.level != allocation.level || a.quality_floor != allocation.quality_floor
        });
        // A coarser neighbouring rung is the controller's business (the allocator's choice
        // flips between neighbours while its measured points settle); a jump, or a finer
        // rung (quality the budget now affords), is a new situation.
        let jump = allocation.level.abs_diff(self.level) >= 2 || self.allocation.is_none();
        let finer = allocation.level < self.level;
        self.level = if new_choice && (jump || finer) {
            self.credit_bits = 0.0;
            self.rung_for(allocation.target_bps, allocation.level)
                .min(ceiling)
        } else {
            self.level.min(ceiling)
        };
        self.allocation = Some(allocation);
    }

    /// The base rung for a new target: the finest whose calibrated point fits it, never
    /// coarser than the allocator's `chosen` rung. The allocator hands the budget its chosen
    /// points leave over to the lossy streams, which can reach past the next finer rung;
    /// alternating with that one alone would leave the rest unspent until the credit filled
    /// (measured: a 2 s window 7 % short after a budget drop).
    fn rung_for(&self, target_bps: f64, chosen: u8) -> u8 {
        self.points
            .iter()
            .filter(|p| p.bits_per_second * self.calibration <= target_bps)
            .map(|p| p.level)
            .min()
            .map_or(chosen, |finest| finest.min(chosen))
    }

    /// Advances the stream clock: a script's boost lasts until its time has passed.
    pub fn observe(&mut self, timestamp_ns: i64) {
        self.boosted = timestamp_ns < self.boost_until;
    }

    /// Keeps the frames of an encoded block, the last [`WINDOW_NS`] of them, for measuring
    /// operating points (taking the block's own frames: no copy per frame).
    pub fn keep(&mut self, frames: Vec<Frame>) {
        let Some(newest) = frames.last().map(|f| f.timestamp_ns) else {
            return;
        };
        self.history.extend(frames);
        while self
            .history
            .front()
            .is_some_and(|f| newest.saturating_sub(f.timestamp_ns) > WINDOW_NS)
        {
            self.history.pop_front();
        }
    }

    /// The frames kept for measuring, oldest first.
    pub fn recent(&mut self) -> &[Frame] {
        self.history.make_contiguous()
    }

    /// Measures the ladder on the recent frames when it is time, with `measure`.
    pub fn measure_if_due(
        &mut self,
        now_ns: i64,
        measure: impl FnOnce(&[Frame]) -> Result<Vec<RdPoint>, CodecError>,
    ) {
        let due = *self
            .next_measure_ns
            .get_or_insert(now_ns + FIRST_MEASURE_NS);
        if now_ns < due || self.history.len() < MIN_MEASURE_FRAMES {
            return;
        }
        self.next_measure_ns = Some(now_ns + MEASURE_EVERY_NS);
        if let Ok(points) = measure(self.history.make_contiguous()) {
            self.points = points
                .into_iter()
                .map(|p| RdPointMessage {
                    level: p.level,
                    bits_per_second: p.bits_per_second,
                    distortion: p.distortion,
                })
                .collect();
            self.fresh = true;
        }
    }

    /// The rate delivered over the last window, bits per second.
    pub fn delivered_bps(&self) -> f64 {
        let bytes: usize = self.sent.iter().map(|(_, b, _)| b).sum();
        bytes as f64 * 8.0 / (WINDOW_NS as f64 * 1e-9)
    }

    /// Records a sent packet (coded at [`RateControl::level`]) and corrects the base rung
    /// when the alternation cannot meet the target.
    pub fn sent(&mut self, end_ns: i64, bytes: usize) {
        let coded_at = self.level();
        let span_s = self
            .last_sent_ns
            .map_or(0.0, |last| end_ns.saturating_sub(last).max(0) as f64 * 1e-9);
        self.last_sent_ns = Some(end_ns);
        let predicted = self
            .points
            .iter()
            .find(|p| p.level == coded_at)
            .map_or(0.0, |p| p.bits_per_second * span_s);
        self.sent.push_back((end_ns, bytes, predicted));
        let full = self
            .sent
            .front()
            .is_some_and(|(t, _, _)| end_ns - t >= WINDOW_NS * 9 / 10);
        while self
            .sent
            .front()
            .is_some_and(|(t, _, _)| end_ns - t >= WINDOW_NS)
        {
            self.sent.pop_front();
        }
        // Calibrate on the packets whose rung had a measured point (the first ones had none).
        let (predicted, delivered_bits) = self
            .sent
            .iter()
            .filter(|(_, _, p)| *p > 0.0)
            .fold((0.0, 0.0), |(p, d), (_, b, q)| (p + q, d + *b as f64 * 8.0));
        let all_predicted = self.sent.iter().all(|(_, _, p)| *p > 0.0);
        if full && all_predicted && !self.boosted && predicted > 0.0 {
            let observed = (delivered_bits / predicted).clamp(0.5, 2.0);
            self.calibration = 0.8 * self.calibration + 0.2 * observed;
        }
        let Some(allocation) = &self.allocation else {
            return;
        };
        let target = allocation.target_bps;
        let cap = target * CREDIT_S;
        self.credit_bits =
            (self.credit_bits + target * span_s - bytes as f64 * 8.0).clamp(-cap, cap);
        // No move before a whole window of packets: the first allocations share the budget
        // out blindly, before any point is measured.
        if !full || self.boosted || end_ns.saturating_sub(self.last_change_ns) < SETTLE_NS {
            return;
        }
        let ceiling = allocation.quality_floor.min(self.top_level);
        let rate = self.delivered_bps();
        // Far off the target over a whole window (a new allocation the points misjudged):
        // move at once. Otherwise the credit decides, which alternation alone never fills.
        let far_over = rate > target * FAR;
        let far_under = rate * FAR < target && self.finer_fits(rate, target);
        if (far_over || self.credit_bits <= -0.9 * cap) && self.level < ceiling {
            self.level += 1;
            self.credit_bits = 0.0;
            self.last_change_ns = end_ns;
        } else if (far_under || self.credit_bits >= 0.9 * cap) && self.level > 0 {
            self.level -= 1;
            self.credit_bits = 0.0;
            self.last_change_ns = end_ns;
        }
    }

    /// Whether the next finer rung's point, scaled by how the delivered rate compares with
    /// the current rung's, fits the target.
    fn finer_fits(&self, rate: f64, target: f64) -> bool {
        let point = |level: u8| {
            self.points
                .iter()
                .find(|p| p.level == level)
                .map(|p| p.bits_per_second)
        };
        match (self.level.checked_sub(1).and_then(point), point(self.level)) {
            (Some(finer), Some(current)) if current > 0.0 => finer * rate / current <= target,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allocation(target_bps: f64, level: u8, floor: u8) -> StreamAllocation {
        StreamAllocation {
            stream: "imu".into(),
            target_bps,
            level,
            quality_floor: floor,
        }
    }

    #[test]
    fn overshoot_steps_coarser_but_never_past_the_floor() {
        let ladder = QualityLadder::standard();
        let mut rc = RateControl::new(&ladder);
        rc.allocate(allocation(8_000.0, 1, 2));
        assert_eq!(rc.level(), 1);
        // 250 bytes every 100 ms is 20 kbit/s, far over 8 kbit/s.
        for i in 0..100 {
            rc.sent(i * 100_000_000, 250);
        }
        assert_eq!(rc.level(), 2, "stopped at the floor");
        assert!((rc.delivered_bps() - 20_000.0).abs() < 1.0);
    }

    /// 100 ms blocks costing their rung's rate.
    fn run_blocks(rc: &mut RateControl, rates: &[(u8, f64)], from: i64, blocks: i64) {
        for i in from..from + blocks {
            let level = rc.level();
            let bps = rates.iter().find(|r| r.0 == level).map_or(0.0, |r| r.1);
            rc.sent(i * 100_000_000, (bps * 0.1 / 8.0) as usize);
        }
    }

    fn with_points(rates: &[(u8, f64)]) -> RateControl {
        let mut rc = RateControl::new(&QualityLadder::standard());
        rc.points = rates
            .iter()
            .map(|&(level, bits_per_second)| RdPointMessage {
                level,
                bits_per_second,
                distortion: f64::from(level),
            })
            .collect();
        rc
    }

    #[test]
    fn the_base_rung_steps_finer_only_when_it_fits() {
        let rates = [(0, 24_000.0), (1, 8_000.0)];
        let mut rc = with_points(&rates);
        rc.allocate(allocation(12_000.0, 1, 5));
        run_blocks(&mut rc, &rates, 0, 100);
        assert_eq!(rc.base_level(), 1, "level 0 alone would need 24 kbit/s");
        rc.allocate(allocation(40_000.0, 1, 5));
        run_blocks(&mut rc, &rates, 100, 100);
        assert_eq!(rc.base_level(), 0);
    }

    #[test]
    fn spare_budget_past_the_next_rung_takes_a_finer_base_at_once() {
        let rates = [(0, 30_000.0), (1, 10_000.0), (2, 6_000.0), (3, 3_000.0)];
        let mut rc = with_points(&rates);
        // The allocator chose rung 3 and handed this stream spare budget up to 12 kbit/s:
        // rung 1 fits it, rung 0 does not.
        rc.allocate(allocation(12_000.0, 3, 5));
        assert_eq!(rc.base_level(), 1);
        run_blocks(&mut rc, &rates, 0, 40);
        let delivered = rc.delivered_bps();
        assert!(
            (delivered - 12_000.0).abs() <= 0.05 * 12_000.0,
            "{delivered} bit/s"
        );
        // Without points the allocator's choice stands.
        let mut blind = RateControl::new(&QualityLadder::standard());
        blind.allocate(allocation(12_000.0, 3, 5));
        assert_eq!(blind.base_level(), 3);
    }

    #[test]
    fn alternating_rungs_meet_a_target_between_them() {
        let rates = [(0, 30_000.0), (1, 10_000.0), (2, 4_000.0)];
        let mut rc = with_points(&rates);
        rc.allocate(allocation(20_000.0, 1, 5));
        let mut finer = 0;
        for i in 0..200 {
            finer += usize::from(rc.level() == 0);
            run_blocks(&mut rc, &rates, i, 1);
            if i >= 50 {
                let delivered = rc.delivered_bps();
                assert!(
                    (delivered - 20_000.0).abs() <= 0.05 * 20_000.0,
                    "block {i}: {delivered} bit/s"
                );
            }
        }
        assert_eq!(rc.base_level(), 1);
        assert!(
            (90..=110).contains(&finer),
            "{finer} of 200 blocks at the finer rung"
        );
        // The allocator repeating its choice does not undo the controller.
        rc.allocate(allocation(20_000.0, 1, 5));
        assert_eq!(rc.base_level(), 1);
    }
}
