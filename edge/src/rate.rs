//! Rate control: which rung of the quality ladder each stream is encoded at.
//!
//! The coordinator allocates a rate and a rung per stream from the operating points the node
//! reports; the node measures those points on its recent frames (in its own block size, so
//! packet overheads count) and corrects the rung when the rate it actually delivers over the
//! last two seconds strays from the target: a rung coarser when it overshoots, a rung finer
//! when there is room for it, never coarser than the quality floor.

use std::collections::VecDeque;

use lydlr_bus::messages::{RdPointMessage, StreamAllocation};
use lydlr_codec::{CodecError, Frame, QualityLadder, RdPoint};

/// Window over which the delivered rate is measured.
pub(crate) const WINDOW_NS: i64 = 2_000_000_000;
/// How often operating points are measured, and on how much recent data.
const MEASURE_EVERY_NS: i64 = 2_000_000_000;
/// At most one rung change per this much stream time.
const SETTLE_NS: i64 = 250_000_000;
/// Overshoot tolerated before stepping to a coarser rung.
const OVERSHOOT: f64 = 1.03;

pub(crate) struct RateControl {
    allocation: Option<StreamAllocation>,
    level: u8,
    top_level: u8,
    sent: VecDeque<(i64, usize)>,
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

    /// The rung to encode at now: lossless while a script's boost lasts.
    pub fn level(&self) -> u8 {
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

    /// Takes a new allocation: its rung, within the floor.
    pub fn allocate(&mut self, allocation: StreamAllocation) {
        self.level = allocation
            .level
            .min(allocation.quality_floor)
            .min(self.top_level);
        self.allocation = Some(allocation);
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
            .get_or_insert(now_ns + MEASURE_EVERY_NS);
        if now_ns < due || self.history.len() < 2 {
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
        let bytes: usize = self.sent.iter().map(|(_, b)| b).sum();
        bytes as f64 * 8.0 / (WINDOW_NS as f64 * 1e-9)
    }

    /// Records a sent packet and corrects the rung if the delivered rate strays.
    pub fn sent(&mut self, end_ns: i64, bytes: usize) {
        self.sent.push_back((end_ns, bytes));
        let full = self
            .sent
            .front()
            .is_some_and(|(t, _)| end_ns - t >= WINDOW_NS * 9 / 10);
        while self
            .sent
            .front()
            .is_some_and(|(t, _)| end_ns - t >= WINDOW_NS)
        {
            self.sent.pop_front();
        }
        if full
            && !self.boosted
            && end_ns.saturating_sub(self.last_change_ns) >= WINDOW_NS
            && let Some(predicted) = self.points.iter().find(|p| p.level == self.level)
            && predicted.bits_per_second > 0.0
        {
            let observed = (self.delivered_bps() / predicted.bits_per_second).clamp(0.5, 2.0);
            self.calibration = 0.8 * self.calibration + 0.2 * observed;
        }
        let Some(allocation) = &self.allocation else {
            return;
        };
        if !full || end_ns.saturating_sub(self.last_change_ns) < SETTLE_NS {
            return;
        }
        let ceiling = allocation.quality_floor.min(self.top_level);
        let rate = self.delivered_bps();
        let target = allocation.target_bps;
        if rate > target * OVERSHOOT && self.level < ceiling {
            self.level += 1;
            self.last_change_ns = end_ns;
        } else if self.level > 0 && rate < target * 0.85 {
            let finer = self.level - 1;
            let predicted = self
                .points
                .iter()
                .find(|p| p.level == finer)
                .map(|p| p.bits_per_second);
            // Only step finer when the measured points say it fits, scaled by how far the
            // delivered rate is from the current rung's prediction.
            let current = self
                .points
                .iter()
                .find(|p| p.level == self.level)
                .map(|p| p.bits_per_second);
            if let (Some(finer_bps), Some(current_bps)) = (predicted, current)
                && current_bps > 0.0
                && finer_bps * rate / current_bps <= target
            {
                self.level = finer;
                self.last_change_ns = end_ns;
            }
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

    #[test]
    fn room_steps_finer_only_when_the_points_say_it_fits() {
        let ladder = QualityLadder::standard();
        let mut rc = RateControl::new(&ladder);
        rc.points = vec![
            RdPointMessage {
                level: 0,
                bits_per_second: 30_000.0,
                distortion: 0.0,
            },
            RdPointMessage {
                level: 1,
                bits_per_second: 10_000.0,
                distortion: 0.3,
            },
        ];
        rc.allocate(allocation(12_000.0, 1, 5));
        for i in 0..100 {
            rc.sent(i * 100_000_000, 100); // 8 kbit/s delivered at level 1
        }
        assert_eq!(rc.level(), 1, "level 0 would need about 24 kbit/s");
        rc.allocate(allocation(40_000.0, 1, 5));
        for i in 100..200 {
            rc.sent(i * 100_000_000, 100);
        }
        assert_eq!(rc.level(), 0);
    }
}
