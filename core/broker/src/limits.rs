//! What keeps a failing accept loop from taking a core's time: its back-off at the process's
//! descriptor limit, and log lines that repeat at most once per [`LOG_INTERVAL_MS`] with a
//! count.

use crate::core::Core;
use crate::timers::millis;
use std::io;
use std::time::{Duration, Instant};
use tracing::warn;

/// A repeated warning is logged at most once per this many milliseconds, with a count.
pub(crate) const LOG_INTERVAL_MS: u32 = 10_000;

/// First back-off after a failed accept; doubled per failure in a row.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest back-off: bounds how late accepting resumes once descriptors are free again, and
/// how long a stopping core waits for its accept loop.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(200);

/// Logs a repeated event once per [`LOG_INTERVAL_MS`]: the first at once, then one line
/// saying how often it happened since. `Copy`, so it lives in a `Cell`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LogThrottle {
    logged_at: Option<u32>,
    count: u64,
}

impl LogThrottle {
    /// Counts one event at `now_ms`; `Some(events since the last line, this one included)`
    /// when a line is due.
    pub(crate) fn hit(&mut self, now_ms: u32) -> Option<u64> {
        self.count += 1;
        if let Some(at) = self.logged_at {
            if now_ms.wrapping_sub(at) < LOG_INTERVAL_MS {
                return None;
            }
        }
        self.logged_at = Some(now_ms);
        Some(std::mem::take(&mut self.count))
    }
}

/// The back-off of one accept loop. At the process's descriptor limit every accept fails
/// at once (the connection stays in the backlog), so retrying without a pause spins and
/// logs without end; with it the loop retries a few times a second and accepts again as
/// soon as a descriptor is free.
#[derive(Default)]
pub(crate) struct AcceptBackoff {
    delay: Duration,
    log: LogThrottle,
}

impl AcceptBackoff {
    /// An accept succeeded: the next failure starts from the shortest pause again.
    pub(crate) fn reset(&mut self) {
        self.delay = Duration::ZERO;
    }

    /// An accept failed: logs (throttled) and pauses.
    pub(crate) async fn failed(&mut self, core: &Core, listener: &str, e: &io::Error) {
        if let Some(n) = self.log.hit(millis(Instant::now())) {
            warn!(
                core = core.id,
                listener,
                failures = n,
                "accept failed: {e} ({n} failures since the last report); backing off"
            );
        }
        self.delay = (self.delay * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
        monoio::time::sleep(self.delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_event_is_logged_once_per_interval_with_its_count() {
        let mut t = LogThrottle::default();
        assert_eq!(t.hit(5), Some(1));
        for ms in 6..1000 {
            assert_eq!(t.hit(ms), None);
        }
        assert_eq!(t.hit(5 + LOG_INTERVAL_MS), Some(995));
        assert_eq!(t.hit(6 + LOG_INTERVAL_MS), None);
    }
}
