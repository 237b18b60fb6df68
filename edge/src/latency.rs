//! A log-linear latency histogram: 1/32-octave buckets from 1 ns, exact count and max.

const SUB_BUCKETS: u32 = 32;

/// Records durations in nanoseconds; quantiles within about 2% of the true value.
#[derive(Debug, Clone, Default)]
pub struct LatencyHistogram {
    counts: Vec<u64>,
    total: u64,
    max_ns: u64,
}

fn bucket(ns: u64) -> usize {
    let ns = ns.max(1);
    let octave = 63 - ns.leading_zeros();
    let sub = if octave >= 5 {
        ((ns >> (octave - 5)) & u64::from(SUB_BUCKETS - 1)) as u32
    } else {
        ((ns << (5 - octave)) & u64::from(SUB_BUCKETS - 1)) as u32
    };
    (octave * SUB_BUCKETS + sub) as usize
}

fn bucket_upper_ns(index: usize) -> f64 {
    let octave = index as u32 / SUB_BUCKETS;
    let sub = index as u32 % SUB_BUCKETS;
    2f64.powi(octave as i32) * (1.0 + f64::from(sub + 1) / f64::from(SUB_BUCKETS))
}

impl LatencyHistogram {
    pub fn record(&mut self, ns: u64) {
        let b = bucket(ns);
        if self.counts.len() <= b {
            self.counts.resize(b + 1, 0);
        }
        self.counts[b] += 1;
        self.total += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max_us(&self) -> f64 {
        self.max_ns as f64 / 1e3
    }

    /// The `q` quantile (0..=1) in microseconds; 0 when empty.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_upper_ns(i).min(self.max_ns as f64) / 1e3;
            }
        }
        self.max_us()
    }

    pub fn merge(&mut self, other: &LatencyHistogram) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max_ns = self.max_ns.max(other.max_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_a_few_percent() {
        let mut h = LatencyHistogram::default();
        for ns in 1..=100_000u64 {
            h.record(ns * 10);
        }
        for (q, exact_us) in [(0.5, 500.0), (0.99, 990.0), (0.999, 999.0)] {
            let got = h.quantile_us(q);
            assert!(
                (got - exact_us).abs() / exact_us < 0.04,
                "q{q}: {got} vs {exact_us}"
            );
        }
        assert_eq!(h.max_us(), 1000.0);
        assert_eq!(LatencyHistogram::default().quantile_us(0.99), 0.0);
    }

    #[test]
    fn merging_adds_counts() {
        let mut a = LatencyHistogram::default();
        let mut b = LatencyHistogram::default();
        a.record(1_000);
        b.record(1_000_000);
        a.merge(&b);
        assert_eq!(a.count(), 2);
        assert!(a.quantile_us(1.0) > 900.0);
    }
}
