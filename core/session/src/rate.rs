//! Token buckets for rate limits (a client's publish rate, a listener's connection rate).
//!
//! Pure: time is an argument, in the broker's wrapping millisecond clock (`u32`), so a bucket
//! costs no clock read of its own and is tested with explicit times. Tokens are counted in
//! millionths, so a rate split over cores (2.5 connections a second on each of four cores)
//! stays exact enough without floating point.

/// Millionths of a token per token.
const SCALE: i64 = 1_000_000;

/// Largest rate a bucket takes (tokens per second); larger ones are clamped. Keeps the scaled
/// arithmetic far from overflow (2^40 x 10^6 < 2^63).
pub const MAX_RATE: u64 = 1 << 40;

/// A token bucket: `rate` tokens a second, holding at most one second's worth (the burst).
///
/// A cost larger than the burst (a payload larger than a second's byte rate) is let through
/// once the bucket is full and leaves it in debt, so an oversized message is slowed, never
/// refused for ever. The debt is capped at one burst: a single 16 MiB message at 10 kB/s would
/// otherwise hold its client for half an hour, and the cap bounds any wait to two seconds'
/// worth of the rate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    /// Millionths of a token added per millisecond.
    per_ms: i64,
    /// Most millionths the bucket holds.
    capacity: i64,
    /// Millionths held now (negative: in debt).
    tokens: i64,
    /// When `tokens` was last brought up to date.
    last_ms: u32,
}

impl TokenBucket {
    /// A full bucket of `rate / share` tokens a second (a limit shared by `share` cores: each
    /// owns its part, no lock). Its burst is one second's worth, at least one token.
    pub fn new(rate: u64, share: u64, now_ms: u32) -> Self {
        let scaled = i64::try_from(rate.min(MAX_RATE)).unwrap_or(i64::MAX / SCALE) * SCALE
            / i64::try_from(share.max(1)).unwrap_or(i64::MAX);
        let capacity = scaled.max(SCALE);
        TokenBucket {
            per_ms: (scaled / 1000).max(1),
            capacity,
            tokens: capacity,
            last_ms: now_ms,
        }
    }

    /// Brings the bucket up to `now_ms`. Times are wrapping milliseconds: a time before the
    /// last one (out of order) adds nothing.
    fn refill(&mut self, now_ms: u32) {
        if (now_ms.wrapping_sub(self.last_ms) as i32) > 0 {
            self.tokens = self.tokens_at(now_ms);
            self.last_ms = now_ms;
        }
    }

    /// Millionths held at `now_ms`, without bringing the bucket up to date.
    fn tokens_at(&self, now_ms: u32) -> i64 {
        let elapsed = now_ms.wrapping_sub(self.last_ms);
        if elapsed as i32 <= 0 {
            return self.tokens;
        }
        let added = i64::from(elapsed).saturating_mul(self.per_ms);
        self.tokens.saturating_add(added).min(self.capacity)
    }

    /// Whether the bucket is full again at `now_ms` (then it remembers nothing worth keeping).
    pub fn is_full(&self, now_ms: u32) -> bool {
        self.tokens_at(now_ms) >= self.capacity
    }

    /// Whether `other` fills at the same rate (so its level may stand in for this one's).
    fn same_rate(&self, other: &TokenBucket) -> bool {
        self.per_ms == other.per_ms && self.capacity == other.capacity
    }

    /// Milliseconds until `cost` tokens may be taken (0: now). Takes nothing.
    pub fn wait_ms(&mut self, cost: u64, now_ms: u32) -> u32 {
        self.refill(now_ms);
        let need = self.need(cost);
        if self.tokens >= need {
            return 0;
        }
        let missing = need - self.tokens;
        u32::try_from(missing.saturating_add(self.per_ms - 1) / self.per_ms).unwrap_or(u32::MAX)
    }

    /// Takes `cost` tokens (after [`TokenBucket::wait_ms`] said 0), going into debt for a cost
    /// above the burst, at most one burst deep.
    pub fn take(&mut self, cost: u64) {
        self.tokens = self
            .tokens
            .saturating_sub(Self::scaled(cost))
            .max(-self.capacity);
    }

    /// Takes `cost` tokens if they are there now.
    pub fn try_take(&mut self, cost: u64, now_ms: u32) -> bool {
        let ok = self.wait_ms(cost, now_ms) == 0;
        if ok {
            self.take(cost);
        }
        ok
    }

    /// What must be in the bucket before `cost` may be taken: the cost, or a full bucket for
    /// a cost above the burst.
    fn need(&self, cost: u64) -> i64 {
        Self::scaled(cost).min(self.capacity)
    }

    fn scaled(cost: u64) -> i64 {
        i64::try_from(cost)
            .unwrap_or(i64::MAX)
            .saturating_mul(SCALE)
    }
}

/// A client's publish limits: messages a second and bytes a second, either or both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishLimiter {
    messages: Option<TokenBucket>,
    bytes: Option<TokenBucket>,
    /// Since when the client has been held back without a PUBLISH passing at once.
    held_since: Option<u32>,
}

impl PublishLimiter {
    /// Limits of `messages` and `bytes` a second (0: that one is unlimited); `None` when both
    /// are unlimited.
    pub fn new(messages: u64, bytes: u64, now_ms: u32) -> Option<Self> {
        let bucket = |rate| (rate > 0).then(|| TokenBucket::new(rate, 1, now_ms));
        let l = PublishLimiter {
            messages: bucket(messages),
            bytes: bucket(bytes),
            held_since: None,
        };
        (l.messages.is_some() || l.bytes.is_some()).then_some(l)
    }

    /// Milliseconds until a message of `size` bytes may pass (0: it passed, and was counted).
    pub fn admit(&mut self, size: u64, now_ms: u32) -> u32 {
        let wait_m = self.messages.as_mut().map_or(0, |b| b.wait_ms(1, now_ms));
        let wait_b = self.bytes.as_mut().map_or(0, |b| b.wait_ms(size, now_ms));
        let wait = wait_m.max(wait_b);
        if wait == 0 {
            if let Some(b) = &mut self.messages {
                b.take(1);
            }
            if let Some(b) = &mut self.bytes {
                b.take(size);
            }
        }
        wait
    }

    /// A PUBLISH must wait `wait` ms from `now_ms`: starts a hold unless one is running, and
    /// returns how long the client will have been held back in a row once the wait is over
    /// (what tells a sustained excess from a burst).
    pub fn hold(&mut self, wait: u32, now_ms: u32) -> u32 {
        let since = *self.held_since.get_or_insert(now_ms);
        now_ms.wrapping_sub(since).saturating_add(wait)
    }

    /// A PUBLISH passed without waiting: the client is within its rate, the hold is over.
    pub fn release(&mut self) {
        self.held_since = None;
    }

    /// Whether every bucket is full at `now_ms`: a new connection's limiter is no different.
    pub fn is_full(&self, now_ms: u32) -> bool {
        let full = |b: &Option<TokenBucket>| b.as_ref().is_none_or(|b| b.is_full(now_ms));
        full(&self.messages) && full(&self.bytes)
    }

    /// Takes over the level of `earlier`, the limiter of a previous connection with the same
    /// client id, for each bucket that has the same rate in both (a listener with other rates
    /// starts afresh): a reconnecting client keeps its debt.
    pub fn inherit(&mut self, earlier: &PublishLimiter) {
        let take = |mine: &mut Option<TokenBucket>, theirs: &Option<TokenBucket>| {
            if let (Some(m), Some(t)) = (mine.as_mut(), theirs) {
                if m.same_rate(t) {
                    *m = t.clone();
                }
            }
        };
        take(&mut self.messages, &earlier.messages);
        take(&mut self.bytes, &earlier.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_gives_its_burst_then_the_rate() {
        let mut b = TokenBucket::new(10, 1, 0);
        for _ in 0..10 {
            assert!(b.try_take(1, 0));
        }
        assert!(!b.try_take(1, 0), "burst is one second's worth");
        assert_eq!(b.wait_ms(1, 0), 100);
        assert!(!b.try_take(1, 99));
        assert!(b.try_take(1, 100));
        // A long pause refills to the burst, not beyond.
        for _ in 0..10 {
            assert!(b.try_take(1, 60_000));
        }
        assert!(!b.try_take(1, 60_000));
    }

    #[test]
    fn a_rate_shared_by_cores_is_split() {
        let mut b = TokenBucket::new(10, 4, 0);
        assert!(b.try_take(1, 0) && b.try_take(1, 0));
        assert!(!b.try_take(1, 0), "2.5 a second each: a burst of two");
        assert_eq!(b.wait_ms(1, 0), 200);
        assert!(b.try_take(1, 200));
        // A share below one token a second still lets one through at a time.
        let mut slow = TokenBucket::new(1, 4, 0);
        assert!(slow.try_take(1, 0));
        assert!(!slow.try_take(1, 3999));
        assert!(slow.try_take(1, 4000));
    }

    #[test]
    fn a_cost_above_the_burst_passes_when_full_and_leaves_debt() {
        let mut b = TokenBucket::new(1000, 1, 0);
        assert!(b.try_take(3000, 0));
        // The debt is capped at one burst: not 3 s, 2 s to be full again.
        assert_eq!(b.wait_ms(1, 0), 1001);
        assert!(!b.try_take(1, 1000));
        assert!(b.try_take(1, 1001));
        assert!(!b.is_full(1500) && b.is_full(2001));
    }

    #[test]
    fn a_hold_lasts_until_a_publish_passes_at_once() {
        let mut l = PublishLimiter::new(10, 0, 0).unwrap();
        assert_eq!(l.hold(100, 1000), 100);
        assert_eq!(l.hold(100, 1100), 200, "the same hold goes on");
        assert_eq!(l.hold(50, 4000), 3050);
        l.release();
        assert_eq!(l.hold(100, 5000), 100, "a new hold");
    }

    #[test]
    fn a_reconnection_inherits_the_level_of_the_same_rates_only() {
        let mut old = PublishLimiter::new(10, 1000, 0).unwrap();
        assert_eq!(old.admit(1000, 0), 0);
        assert!(!old.is_full(0) && old.is_full(1000));
        let mut new = PublishLimiter::new(10, 1000, 5).unwrap();
        new.inherit(&old);
        assert_eq!(new.admit(100, 5), 95, "the byte debt came along");
        let mut other = PublishLimiter::new(10, 2000, 5).unwrap();
        other.inherit(&old);
        assert_eq!(
            other.admit(100, 5),
            0,
            "other byte rate: its own full bucket"
        );
    }

    #[test]
    fn time_going_backwards_or_wrapping_is_safe() {
        let mut b = TokenBucket::new(10, 1, u32::MAX - 50);
        for _ in 0..10 {
            assert!(b.try_take(1, u32::MAX - 50));
        }
        assert!(!b.try_take(1, u32::MAX - 60), "earlier time adds nothing");
        // 100 ms later, across the wrap.
        assert!(b.try_take(1, 49));
    }

    #[test]
    fn huge_rates_do_not_overflow() {
        let mut b = TokenBucket::new(u64::MAX, 1, 0);
        assert!(b.try_take(u64::MAX, 0));
        assert!(b.wait_ms(u64::MAX, 1) > 0);
    }

    #[test]
    fn the_limiter_needs_both_buckets() {
        assert!(PublishLimiter::new(0, 0, 0).is_none());
        let mut l = PublishLimiter::new(100, 1000, 0).unwrap();
        assert_eq!(l.admit(600, 0), 0);
        // The message bucket has room; the byte bucket does not, and nothing is taken.
        assert_eq!(l.admit(600, 0), 200);
        assert_eq!(l.admit(400, 0), 0);
        let mut m = PublishLimiter::new(2, 0, 0).unwrap();
        assert_eq!(m.admit(1 << 30, 0), 0);
        assert_eq!(m.admit(1, 0), 0);
        assert_eq!(m.admit(1, 0), 500);
    }
}
