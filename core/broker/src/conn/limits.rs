//! What keeps one source from taking a core's time: a client's publish rate
//! (`max_publish_rate`, `max_publish_bytes_rate`), a listener's connection rate
//! (`max_connection_rate`), the back-off of an accept loop that fails (out of descriptors), and
//! log lines that repeat at most once per [`LOG_INTERVAL_MS`] with a count.
//!
//! Every limit is a per-core or per-connection [`TokenBucket`] (pure, in `uringmq-session`),
//! read against the core's millisecond clock ([`millis`]): a PUBLISH is weighed against the
//! time of the read that brought it, so a message costs no clock read of its own.

use crate::conn::{CloseReason, Conn};
use crate::net::{millis, LogThrottle, SourceRates};
use crate::shard::{add, Shard};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::warn;
use uringmq_session::TokenBucket;

/// First back-off after a failed accept; doubled per failure in a row.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest back-off: bounds how late accepting resumes once descriptors are free again, and
/// how long a stopping core waits for its accept loop.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(200);

/// Per-connection accept errors retried at once in a row before the loop pauses anyway.
const UNPAUSED_FAILURES_MAX: u32 = 64;

/// Longest a v5 client is held back in a row before it is disconnected with 0x96: room for a
/// flush of a few seconds' worth (an offline buffer after a reconnect) and for any single
/// oversized message (the debt is capped at one burst: two seconds' worth); short enough
/// that a client that keeps sending too fast learns why.
const V5_HOLD_MAX_MS: u32 = 5_000;

/// Longest a slowed client waits between checks: bounds how late it notices a stop.
const RATE_WAIT_SLICE: u32 = 100;

/// The back-off of one accept loop. At the process's descriptor limit every accept fails
/// at once (the connection stays in the backlog), so retrying without a pause spins and
/// logs without end; with it the loop retries a few times a second and accepts again as
/// soon as a descriptor is free.
#[derive(Default)]
pub(crate) struct AcceptBackoff {
    delay: Duration,
    /// Failures in a row that did not pause.
    unpaused: u32,
    log: LogThrottle,
}

impl AcceptBackoff {
    /// An accept succeeded: the next failure starts from the shortest pause again.
    pub(crate) fn reset(&mut self) {
        self.delay = Duration::ZERO;
        self.unpaused = 0;
    }

    /// An accept failed: logs (throttled) and, when the process is out of a resource,
    /// pauses. Other errors (ECONNABORTED, EPROTO, EPERM from a firewall rule) concern only
    /// the connection that failed: the next one is accepted at once, unless such errors
    /// come [`UNPAUSED_FAILURES_MAX`] in a row (an error that would repeat for ever).
    pub(crate) async fn failed(&mut self, core: &Shard, listener: &str, e: &io::Error) {
        add(&core.stats().accept_failures, 1);
        self.unpaused += 1;
        let exhausted = out_of_resources(e) || self.unpaused > UNPAUSED_FAILURES_MAX;
        if let Some(n) = self.log.hit(millis(Instant::now())) {
            let then = if exhausted { "backing off" } else { "retrying" };
            warn!(
                core = core.id,
                listener,
                failures = n,
                "accept failed: {e} ({n} failures since the last report); {then}"
            );
        }
        if !exhausted {
            return;
        }
        self.unpaused = 0;
        self.delay = (self.delay * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
        monoio::time::sleep(self.delay).await;
    }
}

/// Whether an accept failed because the process or the system is out of descriptors or
/// memory: every retry fails the same way until something is freed.
fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// One core's share of a listener's `max_connection_rate` and
/// `max_connection_rate_per_source`.
pub(crate) struct ConnectionRate {
    bucket: Option<TokenBucket>,
    per_source: Option<SourceRates>,
    log: LogThrottle,
}

impl ConnectionRate {
    /// `rate` accepts a second over the listener and `per_source` from one source address
    /// (0: unlimited), split over `cores`.
    pub(crate) fn new(rate: u64, per_source: u64, cores: usize) -> Self {
        let now = millis(Instant::now());
        let share = cores as u64;
        ConnectionRate {
            bucket: (rate > 0).then(|| TokenBucket::new(rate, share, now)),
            per_source: (per_source > 0).then(|| SourceRates::new(per_source, share)),
            log: LogThrottle::default(),
        }
    }

    /// Whether one more connection may be accepted now; a refusal is counted and logged.
    /// The source's own rate comes first: a refused flood spends nothing of the listener's.
    pub(crate) fn admit(&mut self, core: &Shard, listener: &str, peer: SocketAddr) -> bool {
        if self.bucket.is_none() && self.per_source.is_none() {
            return true;
        }
        let now = millis(Instant::now());
        let source_ok = self
            .per_source
            .as_mut()
            .is_none_or(|s| s.admit(peer.ip(), now));
        let refused = if !source_ok {
            "max_connection_rate_per_source"
        } else if self.bucket.as_mut().is_some_and(|b| !b.try_take(1, now)) {
            "max_connection_rate"
        } else {
            return true;
        };
        add(&core.stats().connections_rate_limited, 1);
        if let Some(n) = self.log.hit(now) {
            warn!(
                core = core.id,
                listener,
                %peer,
                refused = n,
                "{refused} reached: {n} connections closed since the last report"
            );
        }
        false
    }
}

/// Waits until `conn` may publish `size` bytes under its publish limits. Over the rate the
/// connection is not read from until the rate allows, so TCP slows the client down (EMQX
/// pauses reading too); the packet waits here, decoded: nothing is lost. A 3.x client, which
/// has no code for it, is only slowed. A v5 client held back for more than
/// [`V5_HOLD_MAX_MS`] in a row (a sustained excess, not a burst such as an offline buffer
/// flushed after a reconnect) is disconnected with 0x96 (Message rate too high).
///
/// The limiter stays in `conn` while the packet waits, so a takeover meanwhile hands it on
/// (`keep_publish_debt`); the wait then ends with the connection's close reason.
pub(crate) async fn admit_publish(conn: &Conn, size: u64) -> Result<(), CloseReason> {
    let mut now = conn.last_seen.get();
    let mut first = true;
    loop {
        let Some(mut limiter) = conn.publish_limiter.take() else {
            // No limits; or handed on when the connection was taken over.
            return conn.stop_reason().map_or(Ok(()), Err);
        };
        let wait = limiter.admit(size, now);
        let held = match wait {
            0 if first => {
                limiter.release();
                0
            }
            0 => 0,
            _ => limiter.hold(wait, now),
        };
        conn.publish_limiter.set(Some(limiter));
        if wait == 0 {
            return Ok(());
        }
        if first {
            first = false;
            count_slowed(conn, now);
        }
        if held > V5_HOLD_MAX_MS && conn.protocol.get().is_v5() {
            return Err(CloseReason::RateLimited);
        }
        if let Some(r) = conn.stop_reason() {
            return Err(r);
        }
        monoio::time::sleep(Duration::from_millis(u64::from(wait.min(RATE_WAIT_SLICE)))).await;
        now = millis(Instant::now());
        // The client is not quiet: the broker is the one not reading (keep-alive).
        conn.last_seen.set(now);
    }
}

/// `conn` is closing or taken over: what it owes its publish rate stays with its client id,
/// for the next connection with that id (`net/publish_debts.rs`).
pub(crate) fn keep_publish_debt(core: &Shard, conn: &Conn, client_id: &Arc<str>) {
    if let Some(limiter) = conn.publish_limiter.take() {
        let now = millis(Instant::now());
        core.shared.publish_debts.keep(client_id, limiter, now);
    }
}

/// `conn`'s CONNECT for `client_id` is accepted (after any takeover was answered): it starts
/// with the debt of the id's previous connection, if that one left any.
pub(crate) fn inherit_publish_debt(core: &Shard, conn: &Conn, client_id: &str) {
    let Some(mut mine) = conn.publish_limiter.take() else {
        return;
    };
    if let Some(earlier) = core
        .shared
        .publish_debts
        .take(client_id, millis(Instant::now()))
    {
        mine.inherit(&earlier);
    }
    conn.publish_limiter.set(Some(mine));
}

/// Counts a PUBLISH over its client's rate, and logs it (throttled per core).
fn count_slowed(conn: &Conn, now: u32) {
    let core = conn.core();
    add(&core.stats().publish_rate_limited, 1);
    let mut log = core.publish_rate_log.get();
    if let Some(n) = log.hit(now) {
        warn!(
            core = core.id,
            client_id = ?conn.client_id.get().map(|c| &**c),
            over_rate = n,
            "max_publish_rate reached: {n} PUBLISH packets held back or refused since the last report"
        );
    }
    core.publish_rate_log.set(log);
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn only_running_out_of_resources_backs_the_accept_loop_off() {
        for code in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert!(out_of_resources(&io::Error::from_raw_os_error(code)));
        }
        for code in [libc::ECONNABORTED, libc::EPROTO, libc::EPERM] {
            assert!(!out_of_resources(&io::Error::from_raw_os_error(code)));
        }
        assert!(!out_of_resources(&io::Error::other("no errno")));
    }
}
