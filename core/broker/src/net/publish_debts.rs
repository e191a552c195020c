//! What a client id owes its publish rate after its connection is gone, so that a reconnect or
//! a takeover inherits the debt instead of starting with a full burst (`max_publish_rate`,
//! `max_publish_bytes_rate`; see `conn/limits.rs`).
//!
//! A reconnect lands on any core (the kernel spreads accepts over them), so this is one table
//! for all cores, sharded like the client-id registry and, like it, touched only when a
//! connection with publish limits closes and when one is accepted, never per message, and not
//! at all where no limit is set. An entry matters only until its buckets are full again (two
//! seconds at most, the debt being capped at one burst); full ones are dropped when a shard
//! reaches [`SHARD_MAX`]. Beyond that a new debt is not kept: memory stays bounded, and only
//! 16 x [`SHARD_MAX`] client ids in debt at once could slip through.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use uringmq_session::PublishLimiter;

const SHARDS: usize = 16;

/// Entries per shard before full ones are swept out.
const SHARD_MAX: usize = 4096;

type Shard = Mutex<HashMap<Arc<str>, Box<PublishLimiter>, ahash::RandomState>>;

/// Client id -> the publish limiter of its last connection, while not full.
pub(crate) struct PublishDebts {
    shards: Vec<Shard>,
    hasher: ahash::RandomState,
}

impl Default for PublishDebts {
    fn default() -> Self {
        PublishDebts {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
            hasher: ahash::RandomState::new(),
        }
    }
}

impl PublishDebts {
    fn shard(
        &self,
        id: &str,
    ) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Box<PublishLimiter>, ahash::RandomState>> {
        self.shards[(self.hasher.hash_one(id) as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the limiter of `id`'s closing connection, unless it is full at `now_ms`.
    pub(crate) fn keep(&self, id: &Arc<str>, limiter: Box<PublishLimiter>, now_ms: u32) {
        let mut map = self.shard(id);
        if limiter.is_full(now_ms) {
            map.remove(id);
            return;
        }
        if map.len() >= SHARD_MAX && !map.contains_key(id) {
            map.retain(|_, l| !l.is_full(now_ms));
            if map.len() >= SHARD_MAX {
                return;
            }
        }
        map.insert(id.clone(), limiter);
    }

    /// The debt `id` left, if any and not paid off by `now_ms`.
    pub(crate) fn take(&self, id: &str, now_ms: u32) -> Option<Box<PublishLimiter>> {
        self.shard(id).remove(id).filter(|l| !l.is_full(now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_debt_is_kept_until_paid_off_and_taken_once() {
        let d = PublishDebts::default();
        let id: Arc<str> = "c".into();
        let mut l = Box::new(PublishLimiter::new(10, 0, 0).unwrap());
        assert_eq!(l.admit(1, 0), 0);
        d.keep(&id, l.clone(), 0);
        assert!(d.take("c", 50).is_some());
        assert!(d.take("c", 50).is_none(), "taken once");
        d.keep(&id, l.clone(), 0);
        assert!(d.take("c", 100).is_none(), "full again after 100 ms");
        // A full limiter is not kept, and clears what was.
        d.keep(&id, l, 0);
        d.keep(&id, Box::new(PublishLimiter::new(10, 0, 0).unwrap()), 0);
        assert!(d.take("c", 0).is_none());
    }

    #[test]
    fn a_shard_stays_bounded() {
        let d = PublishDebts::default();
        let mut l = Box::new(PublishLimiter::new(1, 0, 0).unwrap());
        assert_eq!(l.admit(1, 0), 0);
        for i in 0..SHARDS * SHARD_MAX * 2 {
            d.keep(&Arc::from(format!("c{i}")), l.clone(), 0);
        }
        let held: usize = d.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(held <= SHARDS * SHARD_MAX, "{held}");
        // Entries paid off by now make room again.
        let mut late = Box::new(PublishLimiter::new(1, 0, 5000).unwrap());
        assert_eq!(late.admit(1, 5000), 0);
        for i in 0..SHARDS * 4 {
            d.keep(&Arc::from(format!("late{i}")), late.clone(), 5000);
        }
        assert!((0..SHARDS * 4).all(|i| d.take(&format!("late{i}"), 5000).is_some()));
    }
}
