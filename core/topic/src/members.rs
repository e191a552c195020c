//! The subscribers of one filter (or the members of one shared group).

use std::cell::Cell;
use std::collections::HashMap;
use std::hash::Hash;

use ahash::RandomState;

use crate::trie::Payload;

/// Past this many members, a hash map from subscriber to position is kept so that removing one
/// of 100k subscribers of a filter is O(1) instead of a scan.
const INDEX_ABOVE: usize = 16;
/// The position map is dropped again below this many, so churn around one size cannot thrash.
const UNINDEX_BELOW: usize = INDEX_ABOVE / 2;

/// The subscribers of one filter with their per-subscription values.
///
/// One member is held inline with its round-robin state: a filter with one subscriber, a
/// device's own command topic, is most of a million-device index, and every byte here is in
/// each of its trie nodes (24 bytes for a session key and its options, where a small vec
/// and a box of rare fields took 40). Two or more live in a boxed [`Set`], a contiguous vec
/// so matching iterates plain memory.
pub struct Members<S, V>(Repr<S, V>);

enum Repr<S, V> {
    Empty,
    /// The round state of a one-member set packed into one word (see [`pack`]).
    One(S, V, Cell<u32>),
    Many(Box<Set<S, V>>),
}

/// Two or more members.
struct Set<S, V> {
    entries: Vec<(S, V)>,
    // Boxed on purpose: an inline `HashMap` with its hasher is 64 bytes in every set, while
    // almost no set ever has enough members to need one.
    #[allow(clippy::box_collection)]
    positions: Option<Box<HashMap<S, u32, RandomState>>>,
    /// Next entry [`Members::pick_next`] serves. Entries before it have been served in this
    /// round. A `Cell` so a PUBLISH can start a group's round while walking the index by `&`
    /// (each core owns its indexes, so they need `Send`, not `Sync`).
    cursor: Cell<u32>,
    /// Picks [`Members::pick_weighted`] has served the entry at `cursor` in this round.
    spent: Cell<u32>,
}

/// A one-member round: served (cursor past the member) or the picks it has had in a row.
/// The two never coexist: a weighted pick that finishes the member's turn resets the count,
/// and a set uses [`Members::pick_next`] or [`Members::pick_weighted`], not both.
const SERVED: u32 = u32::MAX;

fn pack(cursor: u32, spent: u32) -> u32 {
    if cursor > 0 {
        SERVED
    } else {
        spent.min(SERVED - 1)
    }
}

fn unpack(turn: u32) -> (u32, u32) {
    if turn == SERVED {
        (1, 0)
    } else {
        (0, turn)
    }
}

impl<S, V> Default for Members<S, V> {
    fn default() -> Self {
        Self(Repr::Empty)
    }
}

impl<S: Copy + Eq + Hash, V> Payload for Members<S, V> {
    fn is_empty(&self) -> bool {
        matches!(self.0, Repr::Empty)
    }
}

impl<S: Copy + Eq + Hash, V> Set<S, V> {
    fn position(&self, sub: S) -> Option<usize> {
        match &self.positions {
            Some(positions) => positions.get(&sub).map(|&at| at as usize),
            None => self.entries.iter().position(|(s, _)| *s == sub),
        }
    }

    fn push(&mut self, sub: S, value: V) {
        self.entries.push((sub, value));
        let at = self.entries.len() - 1;
        match &mut self.positions {
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
                self.positions = Some(Box::new(positions));
            }
            None => {}
        }
    }

    /// Removes the entry at `at`, keeping the round-robin round intact: a member already
    /// served this round is swapped with the last served one before removal, so no unserved
    /// member is skipped and none is served twice.
    fn remove_at(&mut self, at: usize) -> V {
        let cursor = self.cursor.get() as usize;
        let at = if at < cursor {
            self.swap(at, cursor - 1);
            cursor - 1
        } else {
            at
        };
        // The removed entry, if served, was the last served: the round goes on from it.
        self.cursor.set(cursor.min(at) as u32);
        // Entries move below: the weighted round restarts its count at the cursor.
        self.spent.set(0);
        // Moves the last (unserved, or the removed one itself) entry into `at`.
        let last = self.entries.len() - 1;
        self.swap(at, last);
        let (removed, value) = self.entries.swap_remove(last);
        if let Some(positions) = &mut self.positions {
            positions.remove(&removed);
            if self.entries.len() < UNINDEX_BELOW {
                self.positions = None;
            }
        }
        value
    }

    fn swap(&mut self, a: usize, b: usize) {
        if a == b {
            return;
        }
        self.entries.swap(a, b);
        if let Some(positions) = &mut self.positions {
            positions.insert(self.entries[a].0, a as u32);
            positions.insert(self.entries[b].0, b as u32);
        }
    }
}

impl<S: Copy + Eq + Hash, V> Members<S, V> {
    /// Number of members.
    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::Empty => 0,
            Repr::One(..) => 1,
            Repr::Many(set) => set.entries.len(),
        }
    }

    /// No members (an index never exposes an empty set; a detached one may be).
    pub fn is_empty(&self) -> bool {
        matches!(self.0, Repr::Empty)
    }

    /// Every member with its value, in insertion order modulo removals.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (S, &V)> + '_ {
        match &self.0 {
            Repr::Empty => Iter::One(None),
            Repr::One(s, v, _) => Iter::One(Some((*s, v))),
            Repr::Many(set) => Iter::Many(set.entries.iter()),
        }
    }

    /// The member at `at` (`at < len`).
    fn entry(&self, at: usize) -> Option<(S, &V)> {
        match &self.0 {
            Repr::Empty => None,
            Repr::One(s, v, _) => (at == 0).then_some((*s, v)),
            Repr::Many(set) => set.entries.get(at).map(|(s, v)| (*s, v)),
        }
    }

    /// The round state: (cursor, spent).
    fn turn(&self) -> (u32, u32) {
        match &self.0 {
            Repr::Empty => (0, 0),
            Repr::One(_, _, turn) => unpack(turn.get()),
            Repr::Many(set) => (set.cursor.get(), set.spent.get()),
        }
    }

    fn set_turn(&self, cursor: u32, spent: u32) {
        match &self.0 {
            Repr::Empty => {}
            Repr::One(_, _, turn) => turn.set(pack(cursor, spent)),
            Repr::Many(set) => {
                set.cursor.set(cursor);
                set.spent.set(spent);
            }
        }
    }

    /// The value of `sub`, if it is a member.
    pub fn get(&self, sub: S) -> Option<&V> {
        match &self.0 {
            Repr::Empty => None,
            Repr::One(s, v, _) => (*s == sub).then_some(v),
            Repr::Many(set) => set.position(sub).map(|at| &set.entries[at].1),
        }
    }

    /// Adds `sub` or replaces its value (a re-SUBSCRIBE replaces the options [MQTT-3.8.4-3]),
    /// returning the old value. A new member is appended, so it is served in the current
    /// round-robin round.
    pub fn insert(&mut self, sub: S, value: V) -> Option<V> {
        match &mut self.0 {
            Repr::Empty => {
                self.0 = Repr::One(sub, value, Cell::new(0));
                return None;
            }
            Repr::One(s, v, _) if *s == sub => return Some(std::mem::replace(v, value)),
            Repr::Many(set) => {
                if let Some(at) = set.position(sub) {
                    return Some(std::mem::replace(&mut set.entries[at].1, value));
                }
                set.push(sub, value);
                return None;
            }
            Repr::One(..) => {}
        }
        if let Repr::One(first, first_value, turn) = std::mem::replace(&mut self.0, Repr::Empty) {
            let (cursor, spent) = unpack(turn.get());
            self.0 = Repr::Many(Box::new(Set {
                entries: vec![(first, first_value), (sub, value)],
                positions: None,
                cursor: Cell::new(cursor),
                spent: Cell::new(spent),
            }));
        }
        None
    }

    /// Removes `sub`, returning its value. O(1) with the position map. A set left with one
    /// member holds it inline again, with its round state.
    pub fn remove(&mut self, sub: S) -> Option<V> {
        match &mut self.0 {
            Repr::Empty => None,
            Repr::One(s, ..) => {
                if *s != sub {
                    return None;
                }
                match std::mem::replace(&mut self.0, Repr::Empty) {
                    Repr::One(_, value, _) => Some(value),
                    _ => None,
                }
            }
            Repr::Many(set) => {
                let at = set.position(sub)?;
                let value = set.remove_at(at);
                if set.entries.len() == 1 {
                    let turn = pack(set.cursor.get(), set.spent.get());
                    if let Some((s, v)) = set.entries.pop() {
                        self.0 = Repr::One(s, v, Cell::new(turn));
                    }
                }
                Some(value)
            }
        }
    }

    /// Round-robin: the next member to receive a shared-subscription message. Each member is
    /// served once per round, also across joins (served later in the round) and leaves.
    pub fn pick_next(&self) -> Option<(S, &V)> {
        let (mut at, spent) = self.turn();
        if at as usize >= self.len() {
            at = 0;
        }
        let picked = self.entry(at as usize)?;
        self.set_turn(at + 1, spent);
        Some(picked)
    }

    /// Weighted round-robin: serves each member `weight(member, value)` times in a row per
    /// round; a member of weight 0 is skipped. For a group's cores weighted by their member
    /// counts, so that every member of the group, whichever core it is on, gets its turn
    /// equally. None when all weights are 0. A set uses this or [`Members::pick_next`], not both.
    pub fn pick_weighted(&self, weight: impl Fn(S, &V) -> u32) -> Option<(S, &V)> {
        let n = self.len();
        let (at, mut spent) = self.turn();
        let mut at = at as usize;
        // One pass over every entry finds a member with weight left, if there is one.
        for _ in 0..=n {
            if at >= n {
                (at, spent) = (0, 0);
            }
            let (sub, value) = self.entry(at)?;
            let w = weight(sub, value);
            if spent < w {
                let done = spent + 1 >= w;
                self.set_turn(
                    at as u32 + u32::from(done),
                    if done { 0 } else { spent + 1 },
                );
                return Some((sub, value));
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

/// Iterator over the members of a set, see [`Members::iter`].
enum Iter<'a, S, V> {
    One(Option<(S, &'a V)>),
    Many(std::slice::Iter<'a, (S, V)>),
}

impl<'a, S: Copy, V> Iterator for Iter<'a, S, V> {
    type Item = (S, &'a V);

    #[inline]
    fn next(&mut self) -> Option<(S, &'a V)> {
        match self {
            Self::One(one) => one.take(),
            Self::Many(it) => it.next().map(|(s, v)| (*s, v)),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match self {
            Self::One(one) => usize::from(one.is_some()),
            Self::Many(it) => it.len(),
        };
        (n, Some(n))
    }
}

impl<S: Copy, V> ExactSizeIterator for Iter<'_, S, V> {}

impl<S: Copy + Eq + Hash + std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for Members<S, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    impl<S, V> Members<S, V> {
        fn has_positions(&self) -> bool {
            matches!(&self.0, Repr::Many(set) if set.positions.is_some())
        }
    }

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
        assert!(m.has_positions());
        for i in (0..1000u32).step_by(3) {
            assert_eq!(m.remove(i), Some(i * 10));
        }
        for i in 0..1000u32 {
            assert_eq!(m.get(i), (i % 3 != 0).then_some(&(i * 10)));
        }
        for i in 0..1000u32 {
            m.remove(i);
        }
        assert!(!m.has_positions());
        assert!(m.is_empty());
        assert!(matches!(m.0, Repr::Empty), "an emptied set keeps no box");
    }

    #[test]
    fn a_round_survives_growing_from_one_member_and_back() {
        let mut m = Members::default();
        m.insert(1u32, ());
        assert_eq!(m.pick_next().map(|(s, _)| s), Some(1));
        // 1 was served in this round: the joiner comes first, then a new round.
        m.insert(2, ());
        let picks: Vec<u32> = (0..3).map(|_| m.pick_next().unwrap().0).collect();
        assert_eq!(picks, [2, 1, 2]);
        // Both served in this round: 2 leaving keeps 1 served, so the joiner is next.
        m.remove(2);
        m.insert(3, ());
        let picks: Vec<u32> = (0..3).map(|_| m.pick_next().unwrap().0).collect();
        assert_eq!(picks, [3, 1, 3]);
        let mut w = Members::default();
        w.insert(0u16, 3u32);
        assert_eq!(w.pick_weighted(|_, c| *c).map(|(s, _)| s), Some(0));
        // Weight 3, one spent: two more for 0 before the joiner's turn.
        w.insert(1, 1);
        let picks: Vec<u16> = (0..4)
            .map(|_| w.pick_weighted(|_, c| *c).unwrap().0)
            .collect();
        assert_eq!(picks, [0, 0, 1, 0]);
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
