//! A core's sessions in a dense slab: the session key names its slot, so a lookup is an index
//! and a compare (no hashing), and the slots cost 40 bytes per session in chunks of
//! [`CHUNK`], where a hash map kept 1.14-2.3 slots of 41 bytes per session.
//!
//! **Keys.** A session key is `(core << 48) | (generation << 24) | slot` (the core in the high
//! bits, [`crate::mesh::core_of`]; bit 47 stays free for [`crate::mesh::LEAVING`]). The slot
//! stores the whole key it was given out with, and a lookup compares it: a key whose session
//! ended (its slot free, or given out again) finds nothing. The generation is a per-core
//! counter over `1..2^23` (never 0, so no key is 0, which a connection reads as "no
//! session"), advanced for every key: a key can only come back after 2^23 - 1 = 8,388,607
//! further keys were made on its core, whichever slots they took. What holds a key beyond its
//! session holds it for seconds at most (a stub that forwards after a move, `STUB_HOLD` 2 s;
//! a mesh message in flight; a takeover waiting for a drain; the epoll key of a compact parked
//! connection, removed with it), so a repeat would need millions of CONNECTs per second on one
//! core. The one long holder, a timer (a delayed will, an expiry: up to the session's
//! expiry), is checked against the session it finds (`Shard::fire_timers` acts only on that
//! session's own due times), so a timer that found a later session with its key would only
//! make it look at its own timers early. The registry and the durable store hold only keys of
//! live sessions (a key is released when its session ends).
//!
//! **Slots.** A key is reserved when it is made ([`Slab::reserve`]: the CONNECT's claim, before
//! its session exists) and filled by the install; a reservation that never gets its session
//! (an import that lost its claim) is given back with [`Slab::forget`]. Free slots are reused
//! lowest first, so live sessions gather in the first chunks, and a trailing chunk that a
//! burst left empty is freed (one empty chunk stays, so churn at a chunk's edge does not
//! allocate and free it each time): memory a burst of connections took goes back. A core holds
//! at most 2^24 = 16,777,216 sessions (reserved or live); beyond that a CONNECT is refused
//! (server unavailable), which memory makes unreachable in practice (~8 GB of sessions).

use super::Entry;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Bits of the slot in a key.
const SLOT_BITS: u32 = 24;
// The figure `crate::mesh::FULL` gives users.
const _: () = assert!(1 << SLOT_BITS == 16_777_216);
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;
/// Generations run over `1..GENERATIONS` (bits 24..46 of a key).
const GENERATIONS: u64 = 1 << 23;
/// Slots per chunk (40 KiB).
const CHUNK: usize = 1024;

/// One session's place: the key it was given out with (0: free) and, once installed, its
/// session.
struct Slot {
    key: u64,
    entry: Option<Entry>,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 40);

/// The key of a session recovered from the store: the `i`-th of core `core` (recovery gives
/// them out before the core runs; [`Slab::reserve_recovered`] reserves them there).
pub(crate) fn recovered_key(core: u16, i: usize) -> u64 {
    key_of(core, 1, i as u64)
}

fn key_of(core: u16, generation: u64, slot: u64) -> u64 {
    (u64::from(core) << 48) | (generation << SLOT_BITS) | slot
}

/// A core's sessions by key.
pub(crate) struct Slab {
    core: u16,
    chunks: Vec<Box<[Slot]>>,
    /// Slots in use (reserved or live) per chunk.
    used: Vec<u32>,
    /// The free slots of the chunks there are, lowest first.
    free: BinaryHeap<Reverse<u32>>,
    /// The generation of the next key.
    generation: u64,
}

impl Slab {
    pub(super) fn new(core: u16) -> Self {
        Slab {
            core,
            chunks: Vec::new(),
            used: Vec::new(),
            free: BinaryHeap::new(),
            generation: 1,
        }
    }

    fn slot(&self, key: u64) -> Option<&Slot> {
        let i = (key & SLOT_MASK) as usize;
        let s = self.chunks.get(i / CHUNK)?.get(i % CHUNK)?;
        (s.key == key).then_some(s)
    }

    fn slot_mut(&mut self, key: u64) -> Option<&mut Slot> {
        let i = (key & SLOT_MASK) as usize;
        let s = self.chunks.get_mut(i / CHUNK)?.get_mut(i % CHUNK)?;
        (s.key == key).then_some(s)
    }

    #[inline]
    pub(crate) fn get(&self, key: u64) -> Option<&Entry> {
        self.slot(key)?.entry.as_ref()
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, key: u64) -> Option<&mut Entry> {
        self.slot_mut(key)?.entry.as_mut()
    }

    /// A new key, its slot reserved for its session; None when the core holds the most
    /// sessions it can (module doc).
    pub(crate) fn reserve(&mut self) -> Option<u64> {
        if self.free.is_empty() {
            self.grow()?;
        }
        let Reverse(i) = self.free.pop()?;
        let key = key_of(self.core, self.generation, u64::from(i));
        self.generation = if self.generation + 1 == GENERATIONS {
            1
        } else {
            self.generation + 1
        };
        self.take_slot(i as usize, key);
        Some(key)
    }

    /// Reserves the keys of `n` recovered sessions ([`recovered_key`]), on a core that has
    /// no session yet; the next key has generation 2.
    pub(super) fn reserve_recovered(&mut self, n: usize) {
        while self.chunks.len() * CHUNK < n {
            if self.grow().is_none() {
                return;
            }
        }
        // More than a core can hold: the rest find no slot (`Sessions::insert` logs them).
        let n = n.min(self.chunks.len() * CHUNK);
        // The lowest `n` slots leave the free heap (it holds exactly the others after).
        let rest: Vec<_> = self.free.drain().filter(|r| r.0 as usize >= n).collect();
        self.free = rest.into();
        for i in 0..n {
            self.take_slot(i, recovered_key(self.core, i));
        }
        self.generation = 2;
    }

    fn take_slot(&mut self, i: usize, key: u64) {
        self.chunks[i / CHUNK][i % CHUNK].key = key;
        self.used[i / CHUNK] += 1;
    }

    /// A new chunk, its slots free; None when the slots would not fit a key.
    fn grow(&mut self) -> Option<()> {
        let first = self.chunks.len() * CHUNK;
        if first + CHUNK > 1 << SLOT_BITS {
            return None;
        }
        let chunk = (0..CHUNK).map(|_| Slot {
            key: 0,
            entry: None,
        });
        self.chunks.push(chunk.collect());
        self.used.push(0);
        self.free
            .extend((first..first + CHUNK).map(|i| Reverse(i as u32)));
        Some(())
    }

    /// Fills the slot reserved for `key`; false (and `e` dropped) if `key` holds no
    /// reservation.
    pub(crate) fn insert(&mut self, key: u64, e: Entry) -> bool {
        match self.slot_mut(key) {
            Some(s) => {
                s.entry = Some(e);
                true
            }
            None => false,
        }
    }

    /// Takes session `key` out and frees its slot.
    pub(crate) fn remove(&mut self, key: u64) -> Option<Entry> {
        let e = self.slot_mut(key)?.entry.take()?;
        self.release(key);
        Some(e)
    }

    /// Gives back the slot of a key that never got its session.
    pub(crate) fn forget(&mut self, key: u64) {
        if self.slot(key).is_some_and(|s| s.entry.is_none()) {
            self.release(key);
        }
    }

    fn release(&mut self, key: u64) {
        let i = (key & SLOT_MASK) as usize;
        self.chunks[i / CHUNK][i % CHUNK].key = 0;
        self.used[i / CHUNK] -= 1;
        self.free.push(Reverse(i as u32));
        self.trim();
    }

    /// Frees trailing empty chunks but one (module doc).
    fn trim(&mut self) {
        let n = self.chunks.len();
        let empty = self.used.iter().rev().take_while(|&&u| u == 0).count();
        if empty < 2 {
            return;
        }
        let keep = n - empty + 1;
        self.chunks.truncate(keep);
        self.used.truncate(keep);
        let end = (keep * CHUNK) as u32;
        self.free.retain(|r| r.0 < end);
        if self.free.capacity() > 2 * self.free.len() + CHUNK {
            self.free.shrink_to_fit();
        }
        self.chunks.shrink_to_fit();
        self.used.shrink_to_fit();
    }

    /// Every session, with its key.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &Entry)> {
        let slots = self.chunks.iter().flat_map(|c| c.iter());
        slots.filter_map(|s| Some((s.key, s.entry.as_ref()?)))
    }

    /// Takes every session out (the end of the core).
    pub(super) fn take_all(&mut self) -> Vec<Entry> {
        let chunks = std::mem::take(&mut self.chunks);
        self.used.clear();
        self.free.clear();
        let slots = chunks.into_iter().flat_map(|c| c.into_vec());
        slots.filter_map(|s| s.entry).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        let n = uringmq_session::Negotiated::in_process("c".into(), 10);
        let s = uringmq_session::Session::new(&n, uringmq_codec::Protocol::V5, 0, 0);
        Entry {
            s: Box::new(s),
            sink: super::super::Sink::Offline(0),
            token_acl: None,
        }
    }

    #[test]
    fn a_stale_key_finds_nothing_and_slots_are_reused_lowest_first() {
        let mut slab = Slab::new(3);
        let a = slab.reserve().unwrap();
        assert_eq!(crate::mesh::core_of(a), 3);
        assert!(slab.get(a).is_none(), "reserved, not installed");
        assert!(slab.insert(a, entry()));
        let b = slab.reserve().unwrap();
        assert!(slab.insert(b, entry()));
        assert!(slab.remove(a).is_some());
        assert!(slab.get(a).is_none() && slab.remove(a).is_none());
        // Slot 0 again, with another generation: the old key still finds nothing.
        let c = slab.reserve().unwrap();
        assert_eq!(c & SLOT_MASK, a & SLOT_MASK);
        assert_ne!(c, a);
        assert!(!slab.insert(a, entry()));
        assert!(slab.insert(c, entry()));
        assert!(slab.get(a).is_none() && slab.get(c).is_some());
        assert_eq!(slab.iter().count(), 2);
        // A reservation given back is free again; forgetting a live session does nothing.
        let d = slab.reserve().unwrap();
        slab.forget(d);
        slab.forget(c);
        assert!(slab.get(c).is_some());
        assert_eq!(slab.reserve().unwrap() & SLOT_MASK, d & SLOT_MASK);
        assert!(!crate::mesh::leaves_node(c));
    }

    #[test]
    fn a_burst_gives_its_chunks_back_and_recovered_keys_are_reserved() {
        let mut slab = Slab::new(0);
        let keys: Vec<u64> = (0..5 * CHUNK).map(|_| slab.reserve().unwrap()).collect();
        assert!(keys.iter().all(|&k| k != 0));
        assert_eq!(slab.chunks.len(), 5);
        for &k in &keys[1..] {
            slab.forget(k);
        }
        // The first chunk holds the one left, and one empty chunk stays.
        assert_eq!(slab.chunks.len(), 2);
        assert_eq!(slab.free.len(), 2 * CHUNK - 1);
        let mut slab = Slab::new(1);
        slab.reserve_recovered(CHUNK + 1);
        assert!(slab.insert(recovered_key(1, CHUNK), entry()));
        assert!(!slab.insert(recovered_key(1, CHUNK + 1), entry()));
        let next = slab.reserve().unwrap();
        assert_eq!(next & SLOT_MASK, CHUNK as u64 + 1);
    }
}
