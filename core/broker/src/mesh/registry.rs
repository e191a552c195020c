//! The client-id registry: which session (and so which core) owns a client identifier.
//!
//! Touched only on CONNECT and when a session ends, never per message, so a sharded mutex is
//! cheap enough. A session key is (core, generation, slot): the core in the high bits (see
//! [`core_of`]), below it a per-core counter and the session's slot on its core
//! (`shard/slab.rs`), new for every CONNECT. The registry is the
//! authority on which generation owns an id: [`Registry::claim`] hands each previous owner to
//! exactly one successor (see `shard/moves.rs`), and [`Registry::release`] removes the entry only
//! for the generation that still owns it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const SHARDS: usize = 16;

/// Set in a key that claims a client id for a successor outside this node (a CONNECT on
/// another node, an export): its session leaves the node instead of moving to a core.
/// Per-core generations never reach it.
pub(crate) const LEAVING: u64 = 1 << 47;

/// Whether `key` claims for a successor outside this node (see [`LEAVING`]).
pub(crate) fn leaves_node(key: u64) -> bool {
    key & LEAVING != 0
}

/// The core a session key belongs to.
pub(crate) fn core_of(key: u64) -> u16 {
    (key >> 48) as u16
}

/// Client id -> session key.
pub(crate) struct Registry {
    shards: Vec<Mutex<HashMap<Arc<str>, u64, ahash::RandomState>>>,
    hasher: ahash::RandomState,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
            hasher: ahash::RandomState::new(),
        }
    }
}

impl Registry {
    fn shard(&self, id: &str) -> &Mutex<HashMap<Arc<str>, u64, ahash::RandomState>> {
        &self.shards[(self.hasher.hash_one(id) as usize) % SHARDS]
    }

    /// Makes `key` the owner of `id`; returns the previous owner (to take over).
    pub(crate) fn claim(&self, id: &Arc<str>, key: u64) -> Option<u64> {
        let mut map = self.shard(id).lock().unwrap_or_else(|e| e.into_inner());
        map.insert(id.clone(), key)
    }

    /// Makes `key` the owner of `id` only if nobody owns it; returns whether it did (a
    /// session imported at run time never displaces one that is here).
    pub(crate) fn claim_vacant(&self, id: &Arc<str>, key: u64) -> bool {
        let mut map = self.shard(id).lock().unwrap_or_else(|e| e.into_inner());
        match map.entry(id.clone()) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(key);
                true
            }
        }
    }

    /// Forgets `id` if `key` still owns it (a newer connection may have claimed it).
    pub(crate) fn release(&self, id: &str, key: u64) {
        let mut map = self.shard(id).lock().unwrap_or_else(|e| e.into_inner());
        if map.get(id) == Some(&key) {
            map.remove(id);
            crate::table::shrink_table(&mut map);
        }
    }

    /// The key that owns `id` (`Broker::disconnect` finds the client's core by it).
    pub(crate) fn owner(&self, id: &str) -> Option<u64> {
        self.shard(id)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_returns_the_previous_owner_and_release_checks_it() {
        let r = Registry::default();
        let id: Arc<str> = "c".into();
        assert_eq!(r.claim(&id, 1), None);
        assert_eq!(r.claim(&id, (1 << 48) | 2), Some(1));
        r.release("c", 1);
        assert_eq!(r.owner("c"), Some((1 << 48) | 2));
        assert!(!r.claim_vacant(&id, 5));
        r.release("c", (1 << 48) | 2);
        assert_eq!(r.owner("c"), None);
        assert!(r.claim_vacant(&id, 5));
        r.release("c", 5);
        // A burst's table is given back once it is a quarter full.
        let ids: Vec<Arc<str>> = (0..4000).map(|i| i.to_string().into()).collect();
        for (i, id) in ids.iter().enumerate() {
            r.claim(id, i as u64);
        }
        let grown: usize = r.shards.iter().map(|m| m.lock().unwrap().capacity()).sum();
        for (i, id) in ids.iter().enumerate() {
            r.release(id, i as u64);
        }
        let left: usize = r.shards.iter().map(|m| m.lock().unwrap().capacity()).sum();
        assert!(left * 4 < grown, "{left} of {grown} slots kept");
        assert_eq!(core_of((3 << 48) | 9), 3);
    }
}
