//! The client-id registry: which session (and so which core) owns a client identifier.
//!
//! Touched only on CONNECT and when a session ends, never per message, so a sharded mutex is
//! cheap enough. A session key is (core, generation, slot): the core in the high bits (see
//! [`core_of`]), below it a per-core counter and the session's slot on its core
//! (`shard/slab.rs`), new for every CONNECT. The registry is the
//! authority on which generation owns an id: [`Registry::claim`] hands each previous owner to
//! exactly one successor (see `shard/moves.rs`), and [`Registry::release`] removes the entry only
//! for the generation that still owns it.

use hashbrown::HashTable;
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

/// Why a core makes no more session keys: its slots (`shard/slab.rs`, the low 24 bits of a
/// key) are all taken. Here, beside the key's layout, so the mesh's import error can name it.
pub(crate) const FULL: &str = "this core holds the most sessions it can (16,777,216)";

/// The core a session key belongs to.
pub(crate) fn core_of(key: u64) -> u16 {
    (key >> 48) as u16
}

/// Client ids per chunk of a shard's dense list (1.5 KiB).
const CHUNK: usize = 64;
/// The bytes of one chunk (`sizes.rs`).
pub(crate) const REGISTRY_CHUNK: usize = CHUNK * std::mem::size_of::<(Arc<str>, u64)>();

/// One shard of the registry: its (client id, key) pairs densely, in chunks of [`CHUNK`], and
/// a hash table of their positions. A pair costs 24 bytes and a table slot 5 (1.14-2.3 slots
/// per pair): ~35 bytes per client id, where a map of the pairs cost 25 bytes per slot,
/// ~50 per client id. A removal moves the last pair into the hole.
#[derive(Default)]
struct Ids {
    index: HashTable<u32>,
    chunks: Vec<Vec<(Arc<str>, u64)>>,
    len: usize,
}

/// The pair at position `p` of a shard's chunks.
fn pair(chunks: &[Vec<(Arc<str>, u64)>], p: u32) -> &(Arc<str>, u64) {
    &chunks[p as usize / CHUNK][p as usize % CHUNK]
}

/// The hash of the client id at a position, for the table to grow or shrink by.
fn rehash<'a>(
    chunks: &'a [Vec<(Arc<str>, u64)>],
    hasher: &'a ahash::RandomState,
) -> impl Fn(&u32) -> u64 + 'a {
    move |&p| hasher.hash_one(&*pair(chunks, p).0)
}

impl Ids {
    fn at_mut(&mut self, p: u32) -> &mut (Arc<str>, u64) {
        &mut self.chunks[p as usize / CHUNK][p as usize % CHUNK]
    }

    /// The position of `id` (its hash `h`).
    fn find(&self, h: u64, id: &str) -> Option<u32> {
        let chunks = &self.chunks;
        self.index.find(h, |&p| &*pair(chunks, p).0 == id).copied()
    }

    fn push(&mut self, h: u64, id: &Arc<str>, key: u64, hasher: &ahash::RandomState) {
        let p = self.len;
        if p / CHUNK == self.chunks.len() {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        self.chunks[p / CHUNK].push((id.clone(), key));
        self.len += 1;
        (self.index).insert_unique(h, p as u32, rehash(&self.chunks, hasher));
    }

    /// Removes the pair at `p` (the hash of its id `h`): the last pair takes its place.
    fn remove(&mut self, h: u64, p: u32, hasher: &ahash::RandomState) {
        if let Ok(found) = self.index.find_entry(h, |&q| q == p) {
            found.remove();
        }
        let last = (self.len - 1) as u32;
        let Some(moved) = self.chunks[last as usize / CHUNK].pop() else {
            return;
        };
        self.len -= 1;
        if p != last {
            let hm = hasher.hash_one(&*moved.0);
            if let Some(q) = self.index.find_mut(hm, |&q| q == last) {
                *q = p;
            }
            *self.at_mut(p) = moved;
        }
        // The chunk the next pair goes to stays; emptied ones after it go.
        self.chunks.truncate(self.len / CHUNK + 1);
        // As `crate::table::shrink_table`: a burst's table goes once a quarter full.
        if self.index.capacity() > 64 && self.len * 4 < self.index.capacity() {
            (self.index).shrink_to(self.len * 2, rehash(&self.chunks, hasher));
        }
    }
}

/// Client id -> session key.
pub(crate) struct Registry {
    shards: Vec<Mutex<Ids>>,
    hasher: ahash::RandomState,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            shards: (0..SHARDS).map(|_| Mutex::new(Ids::default())).collect(),
            hasher: ahash::RandomState::new(),
        }
    }
}

impl Registry {
    /// The hash of `id` and its shard, locked. The shard is chosen by bits of the hash that
    /// the shard's table does not use for its buckets (the low ones) or tags (the top 7).
    fn shard(&self, id: &str) -> (u64, std::sync::MutexGuard<'_, Ids>) {
        let h = self.hasher.hash_one(id);
        let shard = &self.shards[(h >> 32) as usize % SHARDS];
        (h, shard.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Makes `key` the owner of `id`; returns the previous owner (to take over).
    pub(crate) fn claim(&self, id: &Arc<str>, key: u64) -> Option<u64> {
        let (h, mut ids) = self.shard(id);
        match ids.find(h, id) {
            Some(p) => Some(std::mem::replace(&mut ids.at_mut(p).1, key)),
            None => {
                ids.push(h, id, key, &self.hasher);
                None
            }
        }
    }

    /// Makes `key` the owner of `id` only if nobody owns it; returns whether it did (a
    /// session imported at run time never displaces one that is here).
    pub(crate) fn claim_vacant(&self, id: &Arc<str>, key: u64) -> bool {
        let (h, mut ids) = self.shard(id);
        if ids.find(h, id).is_some() {
            return false;
        }
        ids.push(h, id, key, &self.hasher);
        true
    }

    /// Forgets `id` if `key` still owns it (a newer connection may have claimed it).
    pub(crate) fn release(&self, id: &str, key: u64) {
        let (h, mut ids) = self.shard(id);
        if let Some(p) = ids.find(h, id).filter(|&p| pair(&ids.chunks, p).1 == key) {
            ids.remove(h, p, &self.hasher);
        }
    }

    /// The key that owns `id` (`Broker::disconnect` finds the client's core by it).
    pub(crate) fn owner(&self, id: &str) -> Option<u64> {
        let (h, ids) = self.shard(id);
        ids.find(h, id).map(|p| pair(&ids.chunks, p).1)
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
        let size = |r: &Registry| -> (usize, usize) {
            let ids = r.shards.iter().map(|m| m.lock().unwrap());
            ids.map(|i| (i.index.capacity(), i.chunks.len()))
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
        };
        let grown = size(&r);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(r.owner(id), Some(i as u64));
        }
        // A release moves the last pair of its shard into the hole: every other id stays.
        for (i, id) in ids.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
            r.release(id, i as u64);
        }
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(r.owner(id), (i % 2 == 1).then_some(i as u64));
        }
        for (i, id) in ids.iter().enumerate() {
            r.release(id, i as u64);
        }
        let left = size(&r);
        assert!(left.0 * 4 < grown.0, "{left:?} of {grown:?} slots kept");
        assert!(left.1 <= SHARDS, "{left:?} of {grown:?} chunks kept");
        assert_eq!(core_of((3 << 48) | 9), 3);
    }
}
