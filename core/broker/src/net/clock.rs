//! The coarse clock a core's connections and sweeps share (milliseconds in four bytes), the
//! sweep period, and throttling of repeated log lines.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Sweep period: bounds how late a keep-alive or will delay fires.
pub(crate) const TICK: Duration = Duration::from_millis(100);

/// Milliseconds since the process's first call, wrapping at 2^32 (49 days): a connection's
/// timestamps in four bytes. Intervals are taken with `wrapping_sub`, exact below 24 days
/// (the longest keep-alive grace, 1.5 x 65,535 s, is 27 hours).
pub(crate) fn millis(now: Instant) -> u32 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    // Truncation is the wrap.
    now.saturating_duration_since(epoch).as_millis() as u32
}

/// A repeated warning is logged at most once per this many milliseconds, with a count.
pub(crate) const LOG_INTERVAL_MS: u32 = 10_000;

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
