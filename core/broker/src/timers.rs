//! The per-core timer sweep: connect timeout, keep-alive (1.5x, then disconnect), hard close of
//! connections that do not go away, delayed wills and session expiry.
//!
//! A sweep never touches a socket read: it shuts the socket down, and the reader's pending
//! read ends with end-of-file, which runs the normal disconnect path.

use crate::connection::Conn;
use crate::core::{CloseReason, Core};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Sweep period: bounds how late a keep-alive or will delay fires.
const TICK: Duration = Duration::from_millis(100);
/// A killed connection whose peer does not read its last bytes is closed hard after this.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// Runs until the core stops.
pub(crate) async fn run(core: Rc<Core>) {
    while !core.stopping.get() {
        monoio::select! {
            _ = monoio::time::sleep(TICK) => {}
            _ = core.stop_signal.wait() => {}
        }
        let now = Instant::now();
        sweep(&core, now);
        core.fire_timers(now);
    }
}

fn sweep(core: &Rc<Core>, now: Instant) {
    let conns: Vec<Rc<Conn>> = core.st.borrow().conns.values().cloned().collect();
    for c in conns {
        if let Some(at) = c.killed_at() {
            if now.saturating_duration_since(at) > KILL_GRACE {
                // SAFETY: shutdown on the connection's own open fd.
                unsafe { libc::shutdown(c.fd, libc::SHUT_RDWR) };
            }
            continue;
        }
        if let Some(deadline) = c.connect_deadline.get() {
            if now >= deadline {
                c.kill(CloseReason::ConnectTimeout);
            }
            continue;
        }
        if let Some(grace) = c.grace.get() {
            if now.saturating_duration_since(c.last_seen.get()) > grace {
                c.kill(CloseReason::KeepAlive);
            }
        }
    }
}
