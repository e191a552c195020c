//! The per-core timer sweep: connect timeout, keep-alive (1.5x, then disconnect), hard close of
//! connections that do not go away, hibernation of quiet connections, delayed wills and
//! session expiry.
//!
//! A sweep never touches a socket read: it shuts the socket down, and the connection's pending
//! read (or readiness wait, or its parked registration) ends with end-of-file, which runs the
//! normal disconnect path.

use crate::conn::{CloseReason, Conn};
use crate::net::{millis, TICK};
use crate::shard::Shard;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A killed connection whose peer does not read its last bytes is closed hard after this.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// A connection draining for a takeover stops handling packets after this: the successor's
/// CONNACK waits for the drain, and a client that keeps sending must not hold it up.
pub(crate) const DRAIN_LIMIT: Duration = Duration::from_millis(500);

/// Runs until the core stops.
pub(crate) async fn run(core: Rc<Shard>) {
    while !core.stopping.get() {
        let due = Instant::now() + TICK;
        monoio::select! {
            _ = monoio::time::sleep(TICK) => {}
            _ = core.stop_signal.wait() => {}
        }
        let now = Instant::now();
        core.stats()
            .timer_lag
            .record(now.saturating_duration_since(due));
        core.last_tick.set(millis(now));
        sweep(&core, now);
        core.fire_timers(now);
        core.persist_tick();
    }
}

fn sweep(core: &Rc<Shard>, now: Instant) {
    let conns: Vec<Rc<Conn>> = core.st.borrow().conns.all();
    let park_after = (core.hibernation().is_some())
        .then(|| u32::try_from(core.config().hibernate_after_ms).unwrap_or(u32::MAX));
    let ms = millis(now);
    let mut may_detach = crate::conn::hibernate::may_detach(core, ms);
    for c in conns {
        if let Some(at) = c.killed_at() {
            if c.draining() {
                if now.saturating_duration_since(at) > DRAIN_LIMIT {
                    c.end_drain();
                }
                continue;
            }
            if now.saturating_duration_since(at) > KILL_GRACE {
                // SAFETY: shutdown on the connection's own open fd.
                unsafe { libc::shutdown(c.fd(), libc::SHUT_RDWR) };
            }
            continue;
        }
        if !c.connected() {
            if ms.wrapping_sub(c.connect_by.get()) as i32 >= 0 {
                c.kill(CloseReason::ConnectTimeout);
            }
            continue;
        }
        let quiet = ms.wrapping_sub(c.last_seen.get());
        let grace = c.grace_ms.get();
        if grace != 0 && quiet > grace {
            c.kill(CloseReason::KeepAlive);
            continue;
        }
        if let Some(after) = park_after.filter(|&after| quiet >= after) {
            if c.may_park() {
                c.request_park();
                core.collect_sweeps
                    .set(crate::conn::hibernate::COLLECT_SWEEPS);
            } else if may_detach {
                match c.detach_if_quiet(ms, after) {
                    Ok(true) => core
                        .collect_sweeps
                        .set(crate::conn::hibernate::COLLECT_SWEEPS),
                    Ok(false) => {}
                    Err(e) => {
                        may_detach = false;
                        crate::conn::hibernate::detach_failed(core, ms, &e);
                    }
                }
                // Detached (now or before) and holding nothing else: a compact record.
                core.compact_conn(c);
            }
        }
    }
    core.expire_parked(ms);
    let left = core.collect_sweeps.get();
    if left > 0 {
        core.collect_sweeps.set(left - 1);
        crate::conn::hibernate::collect_memory();
    }
}
