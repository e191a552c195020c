//! Hash tables that give memory back: a leaf every owner of a per-connection hash map uses
//! (a core's connections in `shard`; its sessions' slab and the client-id registry in `mesh`
//! give theirs back in chunks).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

/// Gives back most of a per-connection table (sessions, connections, client ids) that a burst
/// of connections grew and left a quarter full: a hash map never shrinks by itself, so 20,000
/// connections that came and went left ~2.7 MB of empty slots behind. Only at a quarter, and
/// to half, so churn around one size does not grow and shrink it each time.
pub(crate) fn shrink_table<K: Eq + Hash, V, S: BuildHasher>(map: &mut HashMap<K, V, S>) {
    if map.capacity() > 64 && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}
