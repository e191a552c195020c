//! Figures collected by one thread or one worker process, and their merge.
//!
//! Everything here adds up: threads merge into a process result, worker processes print theirs
//! as JSON and the parent merges those, so a run split over many processes reports one set of
//! figures. Histograms travel as (value, count) pairs, which merge exactly.

use hdrhistogram::Histogram;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Highest latency recorded: one minute, in nanoseconds (larger values are clamped).
const MAX_NS: u64 = 60_000_000_000;

/// A latency histogram in nanoseconds, 3 significant digits.
#[derive(Clone, Debug)]
pub struct Hist(pub Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        // Constant bounds that hdrhistogram accepts (low >= 1, high >= 2 * low, sigfig <= 5).
        Hist(Histogram::new_with_bounds(1, MAX_NS, 3).expect("valid constant histogram bounds"))
    }
}

impl Hist {
    /// Records one value, clamped into range.
    pub fn record(&mut self, ns: u64) {
        let _ = self.0.record(ns.clamp(1, MAX_NS));
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Hist) {
        let _ = self.0.add(&other.0);
    }

    /// Number of values recorded.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Summary in microseconds.
    pub fn summary_us(&self) -> LatencySummary {
        let us = |ns: u64| ns as f64 / 1000.0;
        let h = &self.0;
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: h.len(),
            p50: us(h.value_at_quantile(0.50)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

impl Serialize for Hist {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let pairs: Vec<(u64, u64)> = self
            .0
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        pairs.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Hist {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pairs = Vec::<(u64, u64)>::deserialize(d)?;
        let mut h = Hist::default();
        for (v, n) in pairs {
            let _ = h.0.record_n(v.clamp(1, MAX_NS), n);
        }
        Ok(h)
    }
}

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// Event counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// PUBLISH packets sent.
    pub published: u64,
    /// PUBACK/PUBCOMP received for them.
    pub acked: u64,
    /// PUBACK/PUBREC with a failure reason code (5.0).
    pub rejected: u64,
    /// PUBLISH packets received by subscribers (duplicates included).
    pub received: u64,
    /// Received payloads without our stamp.
    pub foreign: u64,
    /// Bytes written to sockets.
    pub bytes_out: u64,
    /// Bytes read from sockets.
    pub bytes_in: u64,
    /// CONNECTs answered by a successful CONNACK.
    pub connects_ok: u64,
    /// Connections that failed to open (TCP, CONNACK refusal, SUBACK failure, timeout).
    pub connects_failed: u64,
    /// Malformed or unexpected packets from the broker.
    pub protocol_errors: u64,
    /// Connections the broker closed before we disconnected.
    pub dropped: u64,
}

impl Counters {
    /// Adds `o` into `self`.
    pub fn merge(&mut self, o: &Counters) {
        self.published += o.published;
        self.acked += o.acked;
        self.rejected += o.rejected;
        self.received += o.received;
        self.foreign += o.foreign;
        self.bytes_out += o.bytes_out;
        self.bytes_in += o.bytes_in;
        self.connects_ok += o.connects_ok;
        self.connects_failed += o.connects_failed;
        self.protocol_errors += o.protocol_errors;
        self.dropped += o.dropped;
    }
}

/// End-to-end delivery accounting from the sequence numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Deliveries expected: each published message times the receiver groups that should get it.
    pub expected: u64,
    /// Distinct deliveries.
    pub distinct: u64,
    /// Expected but never delivered.
    pub lost: u64,
    /// Delivered more than once to the same receiver group.
    pub duplicates: u64,
    /// Delivered after a later message of the same publisher.
    pub reordered: u64,
    /// Delivered to a group that should not have received them (routing error).
    pub unexpected: u64,
}

impl Delivery {
    /// Adds `o` into `self`.
    pub fn merge(&mut self, o: &Delivery) {
        self.expected += o.expected;
        self.distinct += o.distinct;
        self.lost += o.lost;
        self.duplicates += o.duplicates;
        self.reordered += o.reordered;
        self.unexpected += o.unexpected;
    }
}

/// Everything one worker process measured. Times are `CLOCK_MONOTONIC` nanoseconds, which all
/// processes of the machine share.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkerResult {
    /// Event counts.
    pub counters: Counters,
    /// Delivery accounting.
    pub delivery: Delivery,
    /// Publish-to-receive latency.
    pub latency: Hist,
    /// TCP connect to CONNACK latency.
    pub connect_latency: Hist,
    /// When connection setup began.
    pub setup_start_ns: u64,
    /// When every connection was open (and subscribed).
    pub setup_end_ns: u64,
    /// When publishing began.
    pub run_start_ns: u64,
    /// When publishing stopped.
    pub run_end_ns: u64,
    /// Last message received.
    pub last_rx_ns: u64,
    /// CPU ticks this process used between run start and end.
    pub cpu_ticks: u64,
    /// Publishing connections planned.
    pub pubs: u64,
    /// Subscribing connections planned.
    pub subs: u64,
    /// Connections planned in all.
    pub planned: u64,
    /// Worker processes merged into this result.
    pub procs: u32,
    /// Runtime threads, summed over processes.
    pub threads: u32,
}

fn min_nonzero(a: u64, b: u64) -> u64 {
    match (a, b) {
        (0, x) | (x, 0) => x,
        (x, y) => x.min(y),
    }
}

impl WorkerResult {
    /// Adds `o` into `self`: sums for counts, earliest start and latest end for times.
    pub fn merge(&mut self, o: &WorkerResult) {
        self.counters.merge(&o.counters);
        self.delivery.merge(&o.delivery);
        self.latency.merge(&o.latency);
        self.connect_latency.merge(&o.connect_latency);
        self.setup_start_ns = min_nonzero(self.setup_start_ns, o.setup_start_ns);
        self.setup_end_ns = self.setup_end_ns.max(o.setup_end_ns);
        self.run_start_ns = min_nonzero(self.run_start_ns, o.run_start_ns);
        self.run_end_ns = self.run_end_ns.max(o.run_end_ns);
        self.last_rx_ns = self.last_rx_ns.max(o.last_rx_ns);
        self.cpu_ticks += o.cpu_ticks;
        self.pubs += o.pubs;
        self.subs += o.subs;
        self.planned += o.planned;
        self.procs += o.procs;
        self.threads += o.threads;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(values: &[u64], start: u64, end: u64) -> WorkerResult {
        let mut w = WorkerResult {
            run_start_ns: start,
            run_end_ns: end,
            procs: 1,
            threads: 2,
            ..Default::default()
        };
        for &v in values {
            w.latency.record(v);
            w.counters.received += 1;
        }
        w.delivery.lost = 1;
        w
    }

    #[test]
    fn merge_sums_counts_and_spans_times() {
        let mut a = worker(&[1_000, 2_000], 100, 500);
        let b = worker(&[3_000_000], 50, 400);
        a.merge(&b);
        assert_eq!(a.counters.received, 3);
        assert_eq!(a.delivery.lost, 2);
        assert_eq!((a.run_start_ns, a.run_end_ns), (50, 500));
        assert_eq!((a.procs, a.threads), (2, 4));
        assert_eq!(a.latency.len(), 3);
        assert!(a.latency.summary_us().max >= 2_999.0);
    }

    #[test]
    fn merge_into_empty_keeps_the_other_start() {
        let mut a = WorkerResult::default();
        a.merge(&worker(&[], 70, 90));
        assert_eq!(a.run_start_ns, 70);
    }

    #[test]
    fn json_round_trip_keeps_histogram_exact() {
        let w = worker(&[5, 5, 1_000, 123_456, 59_000_000_000], 1, 2);
        let json = serde_json::to_string(&w).unwrap();
        let back: WorkerResult = serde_json::from_str(&json).unwrap();
        assert_eq!(back.latency.len(), 5);
        assert_eq!(back.latency.summary_us(), w.latency.summary_us());
        assert_eq!(back.counters, w.counters);
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let mut h = Hist::default();
        h.record(0);
        h.record(u64::MAX);
        assert_eq!(h.len(), 2);
    }
}
