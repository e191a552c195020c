//! The subscribers of one filter (or the members of one shared group).

use std::cell::{Cell, OnceCell};
use std::collections::HashMap;
use std::hash::Hash;

use ahash::RandomState;
use smallvec::SmallVec;

use crate::trie::Payload;

/// Past this many members, a hash map from subscriber to position is kept so that removing one
/// of 100k subscribers of a filter is O(1) instead of a scan.
const INDEX_ABOVE: usize = 16;
/// The position map is dropped again below this many, so churn around one size cannot thrash.
const UNINDEX_BELOW: usize = INDEX_ABOVE / 2;

/// The subscribers of one filter with their per-subscription values.
///
/// Stored as a contiguous vec (inline for a single subscriber, the common case in IoT
/// fan-in) so matching iterates plain memory. What only some sets need (a position map once
/// there are many, the round-robin cursor of a shared-subscription group) is boxed on first
/// use: a filter with one subscriber, a device's own command topic, is most of a million-device
/// index, and every byte here is in each of its trie nodes.
pub struct Members<S, V> {
    entries: SmallVec<[(S, V); 1]>,
    /// A `OnceCell` so a PUBLISH can start a group's round while walking the index by `&`
    /// (each core owns its indexes, so they need `Send`, not `Sync`).
    extra: OnceCell<Box<Extra<S>>>,
}

/// The rarely needed part of [`Members`].
struct Extra<S> {
    // Boxed on purpose: an inline `HashMap` with its hasher is 64 bytes in every group that
    // picks, while almost no set ever has enough members to need one.
    #[allow(clippy::box_collection)]
    positions: Option<Box<HashMap<S, u32, RandomState>>>,
    /// Next entry [`Members::pick_next`] serves. Entries before it have been served in this
    /// round.
    cursor: Cell<u32>,
    /// Picks [`Members::pick_weighted`] has served the entry at `cursor` in this round.
    spent: Cell<u32>,
}

impl<S> Default for Extra<S> {
    fn default() -> Self {
        Self {
            positions: None,
            cursor: Cell::new(0),
            spent: Cell::new(0),
        }
    }
}

/// The position map of `extra`, if there is one (a function of the field, so that the
/// entries can be read while it is borrowed).
fn positions_mut<S>(
    extra: &mut OnceCell<Box<Extra<S>>>,
) -> Option<&mut HashMap<S, u32, RandomState>> {
    extra.get_mut()?.positions.as_deref_mut()
}

impl<S, V> Default for Members<S, V> {
    fn default() -> Self {
        Self {
            entries: SmallVec::new(),
            extra: OnceCell::new(),
        }
    }
}

impl<S: Copy + Eq + Hash, V> Payload for Members<S, V> {
    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<S: Copy + Eq + Hash, V> Members<S, V> {
    /// Number of members.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No members (an index never exposes an empty set; a detached one may be).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every member with its value, in insertion order modulo removals.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (S, &V)> + '_ {
        self.entries.iter().map(|(s, v)| (*s, v))
    }

    fn positions(&self) -> Option<&HashMap<S, u32, RandomState>> {
        self.extra.get()?.positions.as_deref()
    }

    /// The round-robin state, created on first use.
    fn extra(&self) -> &Extra<S> {
        self.extra.get_or_init(Box::default)
    }

    fn cursor(&self) -> usize {
        self.extra.get().map_or(0, |e| e.cursor.get() as usize)
    }

    fn position(&self, sub: S) -> Option<usize> {
        match self.positions() {
            Some(positions) => positions.get(&sub).map(|&at| at as usize),
            None => self.entries.iter().position(|(s, _)| *s == sub),
        }
    }

    /// The value of `sub`, if it is a member.
    pub fn get(&self, sub: S) -> Option<&V> {
        self.position(sub).map(|at| &self.entries[at].1)
    }

    /// Adds `sub` or replaces its value (a re-SUBSCRIBE replaces the options [MQTT-3.8.4-3]),
    /// returning the old value. A new member is appended, so it is served in the current
    /// round-robin round.
    pub fn insert(&mut self, sub: S, value: V) -> Option<V> {
        if let Some(at) = self.position(sub) {
            return Some(std::mem::replace(&mut self.entries[at].1, value));
        }
        self.entries.push((sub, value));
        let at = self.entries.len() - 1;
        match positions_mut(&mut self.extra) {
            Some(positions) => {
                positions.insert(sub, at as u32);
            }
            None if self.entries.len() > INDEX_ABOVE => {
                let positions = self
                    .entries
                    .iter()
                    .enumerate()
                    .map(|(at, (s, _))| (*s, at as u32))
                    .collect();
                self.extra();
                if let Some(extra) = self.extra.get_mut() {
                    extra.positions = Some(Box::new(positions));
                }
            }
            None => {}
        }
        None
    }

    /// Removes `sub`, returning its value. O(1) with the position map.
    ///
    /// Keeps the round-robin round intact: a member already served this round is swapped with
    /// the last served one before removal, so no unserved member is skipped and none is served
    /// twice.
    pub fn remove(&mut self, sub: S) -> Option<V> {
        let at = self.position(sub)?;
        let cursor = self.cursor();
        let at = if at < cursor {
            self.swap(at, cursor - 1);
            cursor - 1
        } else {
            at
        };
        if let Some(extra) = self.extra.get_mut() {
            // The removed entry, if served, was the last served: the round goes on from it.
            extra.cursor.set(cursor.min(at) as u32);
            // Entries move below: the weighted round restarts its count at the cursor.
            extra.spent.set(0);
        }
        // Moves the last (unserved, or the removed one itself) entry into `at`.
        let last = self.entries.len() - 1;
        self.swap(at, last);
        let (removed, value) = self.entries.pop()?;
        let few = self.entries.len() < UNINDEX_BELOW;
        if let Some(extra) = self.extra.get_mut() {
            if let Some(positions) = &mut extra.positions {
                positions.remove(&removed);
                if few {
                    extra.positions = None;
                }
            }
        }
        if self.entries.is_empty() {
            // Nothing is left to serve: the set takes no more than a new one.
            *self = Self::default();
        }
        Some(value)
    }

    fn swap(&mut self, a: usize, b: usize) {
        if a == b {
            return;
        }
        self.entries.swap(a, b);
        if let Some(positions) = positions_mut(&mut self.extra) {
            positions.insert(self.entries[a].0, a as u32);
            positions.insert(self.entries[b].0, b as u32);
        }
    }

    /// Round-robin: the next member to receive a shared-subscription message. Each member is
    /// served once per round, also across joins (served later in the round) and leaves.
    pub fn pick_next(&self) -> Option<(S, &V)> {
        if self.entries.is_empty() {
            return None;
        }
        let mut at = self.cursor();
        if at >= self.entries.len() {
            at = 0;
        }
        self.extra().cursor.set(at as u32 + 1);
        let (sub, value) = &self.entries[at];
        Some((*sub, value))
    }

    /// Weighted round-robin: serves each member `weight(member, value)` times in a row per
    /// round; a member of weight 0 is skipped. For a group's cores weighted by their member
    /// counts, so that every member of the group, whichever core it is on, gets its turn
    /// equally. None when all weights are 0. A set uses this or [`Members::pick_next`], not both.
    pub fn pick_weighted(&self, weight: impl Fn(S, &V) -> u32) -> Option<(S, &V)> {
        let n = self.entries.len();
        let extra = self.extra();
        let (mut at, mut spent) = (extra.cursor.get() as usize, extra.spent.get());
        // One pass over every entry finds a member with weight left, if there is one.
        for _ in 0..=n {
            if at >= n {
                (at, spent) = (0, 0);
            }
            let (sub, value) = self.entries.get(at)?;
            let w = weight(*sub, value);
            if spent < w {
                let done = spent + 1 >= w;
                extra.cursor.set(at as u32 + u32::from(done));
                extra.spent.set(if done { 0 } else { spent + 1 });
                return Some((*sub, value));
            }
            (at, spent) = (at + 1, 0);
        }
        None
    }

    /// The member at place `n` (modulo the total weight) of a weighted round, with no state: a
    /// random `n` gives a random pick weighted like [`Members::pick_weighted`].
    pub fn pick_weighted_at(&self, n: u64, weight: impl Fn(S, &V) -> u32) -> Option<(S, &V)> {
        let total: u64 = self.iter().map(|(s, v)| u64::from(weight(s, v))).sum();
        let mut n = n.checked_rem(total)?;
        for (sub, value) in self.iter() {
            let w = u64::from(weight(sub, value));
            if n < w {
                return Some((sub, value));
            }
            n -= w;
        }
        None
    }
}

impl<S: std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for Members<S, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.entries.iter().map(|(s, v)| (s, v)))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn insert_replace_remove() {
        let mut m = Members::default();
        assert_eq!(m.insert(1u32, "a"), None);
        assert_eq!(m.insert(1, "b"), Some("a"));
        assert_eq!(m.get(1), Some(&"b"));
        assert_eq!(m.len(), 1);
        assert_eq!(m.remove(2), None);
        assert_eq!(m.remove(1), Some("b"));
        assert!(m.is_empty());
        assert_eq!(m.pick_next(), None);
    }

    #[test]
    fn many_members_use_position_map_and_give_it_back() {
        let mut m = Members::default();
        for i in 0..1000u32 {
            m.insert(i, i * 10);
        }
        assert!(m.positions().is_some());
        for i in (0..1000u32).step_by(3) {
            assert_eq!(m.remove(i), Some(i * 10));
        }
        for i in 0..1000u32 {
            assert_eq!(m.get(i), (i % 3 != 0).then_some(&(i * 10)));
        }
        for i in 0..1000u32 {
            m.remove(i);
        }
        assert!(m.positions().is_none());
        assert!(m.is_empty());
        assert!(m.extra.get().is_none(), "an emptied set keeps no box");
    }

    #[test]
    fn round_robin_cycles() {
        let mut m = Members::default();
        for i in 0..3u32 {
            m.insert(i, ());
        }
        let picks: Vec<u32> = (0..6).map(|_| m.pick_next().unwrap().0).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn weighted_round_robin_serves_by_weight_and_skips_zero() {
        let mut m = Members::default();
        for (core, members) in [(0u16, 1u32), (1, 0), (2, 2)] {
            m.insert(core, members);
        }
        let count = |_, c: &u32| *c;
        let picks: Vec<u16> = (0..6).map(|_| m.pick_weighted(count).unwrap().0).collect();
        assert_eq!(picks, [0, 2, 2, 0, 2, 2]);
        let not_0 = |core, c: &u32| if core == 0 { 0 } else { *c };
        assert_eq!(m.pick_weighted(not_0).map(|(s, _)| s), Some(2));
        assert_eq!(m.pick_weighted(|_, _| 0), None);
        let at: Vec<u16> = (0..4)
            .map(|n| m.pick_weighted_at(n, count).unwrap().0)
            .collect();
        assert_eq!(at, [0, 2, 2, 0]);
        assert_eq!(m.pick_weighted_at(5, |_, _| 0), None);
        assert_eq!(Members::<u16, u32>::default().pick_weighted(count), None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8),
        Remove(u8),
        Pick,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..40).prop_map(Op::Insert),
            (0u8..40).prop_map(Op::Remove),
            Just(Op::Pick),
            Just(Op::Pick),
        ]
    }

    proptest! {
        /// Fairness under churn: within a round every member present is served exactly once;
        /// joiners are served later in the round; leavers are never served.
        #[test]
        fn round_robin_serves_each_member_once_per_round(ops in prop::collection::vec(op(), 1..400)) {
            let mut m = Members::default();
            let mut unserved: HashSet<u8> = HashSet::new();
            let mut all: HashSet<u8> = HashSet::new();
            for op in ops {
                match op {
                    Op::Insert(s) => {
                        let new = m.insert(s, u32::from(s)).is_none();
                        prop_assert_eq!(new, all.insert(s));
                        if new {
                            unserved.insert(s);
                        }
                    }
                    Op::Remove(s) => {
                        prop_assert_eq!(m.remove(s).is_some(), all.remove(&s));
                        unserved.remove(&s);
                    }
                    Op::Pick => {
                        if unserved.is_empty() {
                            unserved = all.clone();
                        }
                        match m.pick_next() {
                            None => prop_assert!(all.is_empty()),
                            Some((s, v)) => {
                                prop_assert_eq!(*v, u32::from(s));
                                prop_assert!(unserved.remove(&s), "{} served twice or absent", s);
                            }
                        }
                    }
                }
                prop_assert_eq!(m.len(), all.len());
                for &s in &all {
                    prop_assert_eq!(m.get(s), Some(&u32::from(s)));
                }
            }
        }
    }
}
