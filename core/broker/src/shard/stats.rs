//! A core's counters: relaxed atomics written by that core only, summed by whoever takes a
//! snapshot (`ops/`), plus the per-thread tallies folded into them when a snapshot is taken.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Counters of one core (summed by [`crate::Broker::stats`]). Relaxed atomics: written by one
/// core, read rarely.
#[derive(Default)]
pub(crate) struct CoreStats {
    pub(crate) connections: AtomicU64,
    pub(crate) sessions: AtomicU64,
    pub(crate) subscriptions: AtomicU64,
    pub(crate) retained: AtomicU64,
    pub(crate) messages_in: AtomicU64,
    pub(crate) messages_out: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) dropped_qos0: AtomicU64,
    pub(crate) dropped_queue_full: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) protocol_errors: AtomicU64,
    pub(crate) auth_failures: AtomicU64,
    pub(crate) auth_busy: AtomicU64,
    pub(crate) hook_timeouts: AtomicU64,
    pub(crate) hibernating: AtomicU64,
    pub(crate) wills_denied: AtomicU64,
    pub(crate) publish_rate_limited: AtomicU64,
    pub(crate) connections_rate_limited: AtomicU64,
    // What `$SYS` and `/metrics` need beyond the above (see `ops/`).
    /// MQTT packets of every type received from clients (Mosquitto's `messages/received`).
    pub(crate) packets_in: AtomicU64,
    /// Packets other than PUBLISH written to clients, copied from the core's own tally
    /// (`ops::count_control_packet`) when a snapshot is taken.
    pub(crate) control_out: AtomicU64,
    /// Payload bytes of PUBLISH packets received (and injected).
    pub(crate) publish_bytes_in: AtomicU64,
    /// Payload bytes of PUBLISH packets sent.
    pub(crate) publish_bytes_out: AtomicU64,
    /// CONNECT packets received.
    pub(crate) connects: AtomicU64,
    /// Sockets accepted.
    pub(crate) sockets: AtomicU64,
    /// Persistent sessions ended by their expiry interval.
    pub(crate) sessions_expired: AtomicU64,
    /// Gauges this core computes when a snapshot is taken (`ops::refresh_core`).
    pub(crate) shared_subscriptions: AtomicU64,
    pub(crate) queued_messages: AtomicU64,
    pub(crate) queued_bytes: AtomicU64,
    pub(crate) inflight_messages: AtomicU64,
    pub(crate) retained_bytes: AtomicU64,
    /// CONNECT received to CONNACK queued, accepted connections only.
    pub(crate) connect_time: crate::shard::histogram::Histogram,
    /// How late the 100 ms sweep timer fired: how long the core ran other work before it
    /// got back to its event loop.
    pub(crate) timer_lag: crate::shard::histogram::Histogram,
    /// PUBLISH received (or routed here) to written into a subscriber's connection buffer;
    /// one delivery in `ops::DELIVERY_SAMPLE`.
    pub(crate) delivery_latency: crate::shard::histogram::Histogram,
    pub(crate) accept_failures: AtomicU64,
    pub(crate) detach_failures: AtomicU64,
}

/// Adds `n` to a counter.
#[inline]
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    if n != 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

thread_local! {
    /// Packets other than PUBLISH written by this core since it started. A thread-local
    /// because they are written through a free function with no access to the core; the
    /// core copies it into `CoreStats::control_out` when a snapshot is taken.
    static CONTROL_OUT: Cell<u64> = const { Cell::new(0) };
}

/// Counts one control packet (CONNACK, PUBACK, SUBACK, PINGRESP...) written on this core.
#[inline]
pub(crate) fn count_control_packet() {
    CONTROL_OUT.with(|c| c.set(c.get() + 1));
}

/// Control packets written by this core since it started (for `CoreStats::control_out`).
pub(crate) fn control_packets_written() -> u64 {
    CONTROL_OUT.with(Cell::get)
}

/// One delivery in this many has its latency recorded: the histogram needs a sample, and a
/// record (two atomic adds) on every one of a million deliveries a second would cost a
/// measurable share of a core.
pub(crate) const DELIVERY_SAMPLE: u32 = 64;
const _: () = assert!(DELIVERY_SAMPLE.is_power_of_two());

thread_local! {
    /// Deliveries written by this core, for [`DELIVERY_SAMPLE`].
    static DELIVERIES: Cell<u32> = const { Cell::new(0) };
}

/// A PUBLISH was written to a subscriber's buffer at `now`: records its latency through the
/// broker (since it was received) once per [`DELIVERY_SAMPLE`] deliveries.
#[inline]
pub(crate) fn sample_delivery(stats: &CoreStats, received_at: Instant, now: Instant) {
    let n = DELIVERIES.with(|c| {
        let n = c.get().wrapping_add(1);
        c.set(n);
        n
    });
    // A power of two: the mask is the remainder (and `is_multiple_of` is newer than 1.85).
    if n & (DELIVERY_SAMPLE - 1) == 0 {
        stats
            .delivery_latency
            .record(now.saturating_duration_since(received_at));
    }
}
