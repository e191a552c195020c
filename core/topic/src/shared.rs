//! [`SharedIndex`]: shared subscriptions (`$share/{group}/{filter}`, MQTT 5 section 4.8.2),
//! kept apart from ordinary ones because a match yields one *group* to pick one member from,
//! not every subscriber.
//!
//! How the broker uses it across cores: each core keeps its own sessions' memberships (a
//! [`Members`] per group, looked up by name: the core a message is sent to never matches it),
//! and every core keeps a replica of a coarse `SharedIndex<CoreId, count>` whose value is the
//! number of members that core has in the group (updated whenever the count changes; a core
//! with none is removed). A PUBLISH is matched against the coarse replica; for each matching
//! group the publishing core picks one core with [`Members::pick_weighted`], weighted by the
//! counts, sends the message there once, and that core picks the member with
//! [`Members::pick_next`]. Each message therefore goes to exactly one member per group
//! (section 4.8.2) without any cross-core lock.

use std::hash::Hash;

use crate::levels::{check_max_levels, DEFAULT_MAX_LEVELS};
use crate::members::Members;
use crate::shared_filter::validate_share_name;
use crate::trie::{FilterTrie, Payload};
use crate::{validate_topic_filter, Insert, Remove, TopicError};

/// The groups subscribed with one filter; a filter rarely has more than a few groups.
struct Groups<S, V> {
    /// The filter, kept once here so that matches can report it without rebuilding it.
    filter: Box<str>,
    groups: Vec<(Box<str>, Members<S, V>)>,
}

impl<S, V> Default for Groups<S, V> {
    fn default() -> Self {
        Self {
            filter: Box::default(),
            groups: Vec::new(),
        }
    }
}

impl<S, V> Payload for Groups<S, V> {
    fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

impl<S, V> Groups<S, V> {
    fn group(&self, group: &str) -> Option<&Members<S, V>> {
        self.groups
            .iter()
            .find(|(name, _)| &**name == group)
            .map(|(_, members)| members)
    }
}

/// Shared-subscription groups keyed by (ShareName, filter), indexed for matching topic names.
pub struct SharedIndex<S, V> {
    trie: FilterTrie<Groups<S, V>>,
    len: usize,
    group_count: usize,
    max_levels: usize,
}

impl<S: Copy + Eq + Hash, V> Default for SharedIndex<S, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Copy + Eq + Hash, V> SharedIndex<S, V> {
    /// An empty index accepting filters of up to [`DEFAULT_MAX_LEVELS`] levels.
    pub fn new() -> Self {
        Self::with_max_levels(DEFAULT_MAX_LEVELS)
    }

    /// An empty index accepting filters of up to `max_levels` levels.
    pub fn with_max_levels(max_levels: usize) -> Self {
        Self {
            trie: FilterTrie::default(),
            len: 0,
            group_count: 0,
            max_levels,
        }
    }

    /// Adds `sub` to `group` for `filter` (the parts of a [`crate::SharedFilter`]), replacing
    /// its value if already a member. `first_subscriber` means the group just came into being.
    pub fn insert(
        &mut self,
        group: &str,
        filter: &str,
        sub: S,
        value: V,
    ) -> Result<Insert<V>, TopicError> {
        validate_share_name(group)?;
        validate_topic_filter(filter)?;
        check_max_levels(filter, self.max_levels)?;
        let groups = self.trie.entry(filter);
        if groups.filter.is_empty() {
            groups.filter = filter.into();
        }
        let at = match groups.groups.iter().position(|(name, _)| &**name == group) {
            Some(at) => at,
            None => {
                groups.groups.push((group.into(), Members::default()));
                groups.groups.len() - 1
            }
        };
        let members = &mut groups.groups[at].1;
        let first_subscriber = members.is_empty();
        let replaced = members.insert(sub, value);
        if replaced.is_none() {
            self.len += 1;
            self.group_count += usize::from(first_subscriber);
        }
        Ok(Insert {
            replaced,
            first_subscriber,
        })
    }

    /// Removes `sub` from `group` for `filter`; `last_subscriber` means the group is gone.
    pub fn remove(&mut self, group: &str, filter: &str, sub: S) -> Remove<V> {
        let outcome = self.trie.update(filter, |groups| {
            let at = groups
                .groups
                .iter()
                .position(|(name, _)| &**name == group)?;
            let members = &mut groups.groups[at].1;
            let removed = members.remove(sub)?;
            let now_empty = members.is_empty();
            if now_empty {
                groups.groups.swap_remove(at);
            }
            Some((removed, now_empty))
        });
        match outcome.flatten() {
            Some((removed, now_empty)) => {
                self.len -= 1;
                self.group_count -= usize::from(now_empty);
                Remove {
                    removed: Some(removed),
                    last_subscriber: now_empty,
                }
            }
            None => Remove {
                removed: None,
                last_subscriber: false,
            },
        }
    }

    /// Calls `f(group, filter, members)` for every group whose filter matches `topic`. Pick the
    /// receiving member inside `f` with [`Members::pick_next`].
    #[inline]
    pub fn for_each_group_match(&self, topic: &str, mut f: impl FnMut(&str, &str, &Members<S, V>)) {
        self.trie.for_each_match(topic, |groups| {
            for (group, members) in &groups.groups {
                f(group, &groups.filter, members);
            }
        });
    }

    /// Round-robin: the next member of (`group`, `filter`) to receive a message.
    pub fn pick_next(&self, group: &str, filter: &str) -> Option<(S, &V)> {
        self.members(group, filter)?.pick_next()
    }

    /// The members of (`group`, `filter`).
    pub fn members(&self, group: &str, filter: &str) -> Option<&Members<S, V>> {
        self.trie.get(filter)?.group(group)
    }

    /// The value of `sub`'s membership in (`group`, `filter`).
    pub fn get(&self, group: &str, filter: &str, sub: S) -> Option<&V> {
        self.members(group, filter)?.get(sub)
    }

    /// Number of memberships over all groups.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Number of non-empty (group, filter) groups.
    pub fn group_count(&self) -> usize {
        self.group_count
    }

    /// No memberships at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every (group, filter) with its members, in no particular order: for syncing a new core.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &Members<S, V>)> + '_ {
        self.trie.iter().flat_map(|(_, groups)| {
            groups
                .groups
                .iter()
                .map(|(group, members)| (&**group, &*groups.filter, members))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use proptest::prelude::*;

    use super::*;
    use crate::matches;
    use crate::test_support::{filter, topic};

    fn join<V>(index: &mut SharedIndex<u32, V>, group: &str, filter: &str, sub: u32, value: V) {
        let inserted = index.insert(group, filter, sub, value);
        assert!(inserted.is_ok(), "{group:?} {filter:?}");
    }

    fn groups_matching(index: &SharedIndex<u32, ()>, topic: &str) -> Vec<(String, String, usize)> {
        let mut out = Vec::new();
        index.for_each_group_match(topic, |g, f, m| out.push((g.into(), f.into(), m.len())));
        out.sort();
        out
    }

    #[test]
    fn groups_are_matched_once_each() {
        let mut index = SharedIndex::new();
        join(&mut index, "g1", "a/+", 1, ());
        join(&mut index, "g1", "a/+", 2, ());
        join(&mut index, "g2", "a/+", 3, ());
        join(&mut index, "g1", "a/#", 4, ());
        join(&mut index, "g1", "b", 5, ());
        assert_eq!(
            groups_matching(&index, "a/x"),
            [
                ("g1".into(), "a/#".into(), 1),
                ("g1".into(), "a/+".into(), 2),
                ("g2".into(), "a/+".into(), 1),
            ]
        );
        assert_eq!((index.len(), index.group_count()), (5, 4));
    }

    #[test]
    fn dollar_rule_applies_to_the_inner_filter() {
        // [MQTT-4.7.2-1]: `$share/g/#` does not receive `$SYS/...`.
        let mut index = SharedIndex::new();
        join(&mut index, "g", "#", 1, ());
        join(&mut index, "g", "$SYS/#", 2, ());
        assert_eq!(
            groups_matching(&index, "$SYS/x"),
            [("g".into(), "$SYS/#".into(), 1)]
        );
    }

    #[test]
    fn picks_round_robin_inside_the_match() {
        let mut index = SharedIndex::new();
        for s in 0..3 {
            join(&mut index, "g", "t", s, s * 10);
        }
        let mut picks = Vec::new();
        for _ in 0..4 {
            index.for_each_group_match("t", |_, _, m| picks.push(m.pick_next().map(|(s, _)| s)));
        }
        assert_eq!(picks, [Some(0), Some(1), Some(2), Some(0)]);
        assert_eq!(index.pick_next("g", "t"), Some((1, &10)));
        assert_eq!(index.pick_next("g", "u"), None);
        assert_eq!(index.pick_next("h", "t"), None);
    }

    #[test]
    fn refuses_invalid_groups_and_filters() {
        let mut index = SharedIndex::<u32, ()>::new();
        assert_eq!(
            index.insert("", "a", 1, ()).unwrap_err(),
            TopicError::MissingShareName
        );
        assert_eq!(
            index.insert("g+", "a", 1, ()).unwrap_err(),
            TopicError::InvalidShareName
        );
        assert_eq!(
            index.insert("g", "a/#/b", 1, ()).unwrap_err(),
            TopicError::MultiLevelWildcardNotLast
        );
        assert!(index.is_empty());
        assert_eq!(index.iter().count(), 0);
    }

    #[test]
    fn last_member_leaving_removes_the_group() {
        let mut index = SharedIndex::new();
        join(&mut index, "g", "a/b", 1, 'x');
        let ins = index.insert("g", "a/b", 2, 'y').unwrap();
        assert!(!ins.first_subscriber);
        assert_eq!(index.remove("h", "a/b", 1).removed, None);
        assert_eq!(index.remove("g", "a/c", 1).removed, None);
        let rem = index.remove("g", "a/b", 1);
        assert_eq!((rem.removed, rem.last_subscriber), (Some('x'), false));
        let rem = index.remove("g", "a/b", 2);
        assert_eq!((rem.removed, rem.last_subscriber), (Some('y'), true));
        assert!(index.is_empty());
        assert!(index.trie.root_is_bare());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(&'static str, String, u8),
        Remove(&'static str, String, u8),
    }

    fn group() -> impl Strategy<Value = &'static str> {
        prop::sample::select(&["g", "h"][..])
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (group(), filter(), 0u8..3).prop_map(|(g, f, s)| Op::Insert(g, f, s)),
            (group(), filter(), 0u8..3).prop_map(|(g, f, s)| Op::Remove(g, f, s)),
        ]
    }

    proptest! {
        #[test]
        fn agrees_with_model_and_reference_matcher(
            ops in prop::collection::vec(op(), 1..150),
            topics in prop::collection::vec(topic(), 1..10),
        ) {
            let mut index = SharedIndex::new();
            let mut model: HashMap<(&str, String), HashSet<u8>> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(g, f, s) => {
                        let members = model.entry((g, f.clone())).or_default();
                        let first = members.is_empty();
                        let new = members.insert(s);
                        let got = index.insert(g, &f, u32::from(s), ()).unwrap();
                        prop_assert_eq!(got, Insert { replaced: (!new).then_some(()), first_subscriber: first });
                    }
                    Op::Remove(g, f, s) => {
                        let members = model.entry((g, f.clone())).or_default();
                        let had = members.remove(&s);
                        let last = had && members.is_empty();
                        if members.is_empty() {
                            model.remove(&(g, f.clone()));
                        }
                        let got = index.remove(g, &f, u32::from(s));
                        prop_assert_eq!(got, Remove { removed: had.then_some(()), last_subscriber: last });
                    }
                }
                prop_assert_eq!(index.group_count(), model.len());
                prop_assert_eq!(index.len(), model.values().map(HashSet::len).sum::<usize>());
            }
            for t in &topics {
                let mut want: Vec<(String, String, usize)> = model
                    .iter()
                    .filter(|((_, f), _)| matches(f, t))
                    .map(|((g, f), m)| (g.to_string(), f.clone(), m.len()))
                    .collect();
                want.sort();
                let mut got = Vec::new();
                index.for_each_group_match(t, |g, f, m| got.push((g.to_string(), f.to_string(), m.len())));
                got.sort();
                prop_assert_eq!(got, want, "topic {:?}", t);
            }
            let mut listed: Vec<(String, String)> =
                index.iter().map(|(g, f, _)| (g.to_string(), f.to_string())).collect();
            listed.sort();
            let mut want: Vec<(String, String)> =
                model.keys().map(|(g, f)| (g.to_string(), f.clone())).collect();
            want.sort();
            prop_assert_eq!(listed, want);
        }
    }
}
