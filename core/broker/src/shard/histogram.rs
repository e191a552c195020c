//! A latency histogram written by one core without locks: one relaxed atomic per bucket, summed
//! over cores only when someone reads it (a scrape), so recording costs a bucket search over
//! a few constants and one uncontended atomic add.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, microseconds: 50 us (a connect with no waiting) to 5 s (an
/// authentication hook at its limit); slower observations land in `+Inf` only.
pub(crate) const BOUNDS_US: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000,
];

/// Observations per bucket (not cumulative; the last one is `+Inf`) and their sum.
#[derive(Default)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    /// Nanoseconds: many observations (a delivery on one core) are below a microsecond.
    sum_ns: AtomicU64,
}

/// A histogram's values at one moment, cumulative as Prometheus wants them.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct HistogramSnapshot {
    /// Observations at or below each bound of [`BOUNDS_US`].
    pub(crate) cumulative: Vec<u64>,
    /// All observations.
    pub(crate) count: u64,
    /// Their sum in seconds.
    pub(crate) sum_secs: f64,
}

impl Histogram {
    /// Records one observation (called only by the owning core).
    #[inline]
    pub(crate) fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = BOUNDS_US.partition_point(|&b| b * 1000 < ns);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Adds this histogram's counts to `into` (a sum over cores).
    pub(crate) fn add_to(&self, into: &mut HistogramSnapshot) {
        if into.cumulative.is_empty() {
            into.cumulative = vec![0; BOUNDS_US.len()];
        }
        let mut running = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            running += b.load(Ordering::Relaxed);
            if let Some(c) = into.cumulative.get_mut(i) {
                *c += running;
            }
        }
        into.count += running;
        into.sum_secs += self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
    }

    /// This histogram alone.
    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        let mut s = HistogramSnapshot::default();
        self.add_to(&mut s);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_bounds_inclusive() {
        let h = Histogram::default();
        h.record(Duration::from_micros(50));
        h.record(Duration::from_micros(51));
        h.record(Duration::from_secs(10));
        let s = h.snapshot();
        assert_eq!(s.cumulative[0], 1, "50 us is within the 50 us bucket");
        assert_eq!(s.cumulative[1], 2);
        assert_eq!(*s.cumulative.last().unwrap(), 2, "10 s is only in +Inf");
        assert_eq!(s.count, 3);
        assert!((s.sum_secs - 10.000101).abs() < 1e-9);
        let mut sum = HistogramSnapshot::default();
        h.add_to(&mut sum);
        h.add_to(&mut sum);
        assert_eq!(sum.count, 6);
        assert_eq!(sum.cumulative[1], 4);
    }
}
