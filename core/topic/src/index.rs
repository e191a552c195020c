//! [`SubscriptionIndex`]: which subscribers' filters match a topic.
//!
//! The broker keeps two kinds: per core a *local* index (subscriber = a session on that core,
//! value = its subscription options), and on every core a replica of the *interest* index
//! (subscriber = a core id), changed only on a core's first-subscriber / last-subscriber edges,
//! which [`Insert::first_subscriber`] and [`Remove::last_subscriber`] report.

use std::hash::Hash;

use crate::levels::{check_max_levels, DEFAULT_MAX_LEVELS};
use crate::members::Members;
use crate::trie::FilterTrie;
use crate::{validate_topic_filter, TopicError};

/// Result of [`SubscriptionIndex::insert`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Insert<V> {
    /// The value this subscriber had for the filter: the subscription was replaced
    /// [MQTT-3.8.4-3], not added.
    pub replaced: Option<V>,
    /// The filter had no subscriber before: the caller announces interest (e.g. to other cores).
    pub first_subscriber: bool,
}

/// Result of [`SubscriptionIndex::remove`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Remove<V> {
    /// The removed value; `None` if the subscriber had no such subscription.
    pub removed: Option<V>,
    /// That was the filter's last subscriber: the caller withdraws interest.
    pub last_subscriber: bool,
}

/// Filters with their subscribers, indexed for matching topic names.
///
/// A trie over filter levels: matching costs one hash lookup per topic level plus the `+` and
/// `#` branches that exist, independent of the number of filters. Empty nodes are pruned on
/// removal, so unsubscribe churn does not grow memory.
pub struct SubscriptionIndex<S, V> {
    trie: FilterTrie<Members<S, V>>,
    len: usize,
    filter_count: usize,
    max_levels: usize,
}

impl<S: Copy + Eq + Hash, V> Default for SubscriptionIndex<S, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Copy + Eq + Hash, V> SubscriptionIndex<S, V> {
    /// An empty index accepting filters of up to [`DEFAULT_MAX_LEVELS`] levels.
    pub fn new() -> Self {
        Self::with_max_levels(DEFAULT_MAX_LEVELS)
    }

    /// An empty index accepting filters of up to `max_levels` levels (this bounds the
    /// recursion depth of every operation).
    pub fn with_max_levels(max_levels: usize) -> Self {
        Self {
            trie: FilterTrie::default(),
            len: 0,
            filter_count: 0,
            max_levels,
        }
    }

    /// Subscribes `sub` to `filter` with `value`, replacing an existing value.
    ///
    /// The filter is validated ([`validate_topic_filter`], level limit) so that an invalid one
    /// can never be stored; for `$share/` filters use [`crate::SharedIndex`].
    pub fn insert(&mut self, filter: &str, sub: S, value: V) -> Result<Insert<V>, TopicError> {
        validate_topic_filter(filter)?;
        check_max_levels(filter, self.max_levels)?;
        let members = self.trie.entry(filter);
        let first_subscriber = members.is_empty();
        let replaced = members.insert(sub, value);
        if replaced.is_none() {
            self.len += 1;
            self.filter_count += usize::from(first_subscriber);
        }
        Ok(Insert {
            replaced,
            first_subscriber,
        })
    }

    /// Unsubscribes `sub` from `filter`. Unknown filters (including invalid ones) and
    /// non-subscribers are not an error: UNSUBSCRIBE of something never subscribed is valid.
    pub fn remove(&mut self, filter: &str, sub: S) -> Remove<V> {
        let outcome = self
            .trie
            .update(filter, |members| (members.remove(sub), members.is_empty()));
        match outcome {
            Some((Some(removed), now_empty)) => {
                self.len -= 1;
                self.filter_count -= usize::from(now_empty);
                Remove {
                    removed: Some(removed),
                    last_subscriber: now_empty,
                }
            }
            _ => Remove {
                removed: None,
                last_subscriber: false,
            },
        }
    }

    /// Calls `f` for every (subscriber, value) whose filter matches `topic` (a valid topic
    /// name). A subscriber with several matching filters is reported once per filter; the
    /// caller merges them (highest QoS, all subscription identifiers [MQTT-3.3.4-3]).
    /// Does not allocate.
    #[inline]
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(S, &V)) {
        self.trie.for_each_match(topic, |members| {
            for (sub, value) in members.iter() {
                f(sub, value);
            }
        });
    }

    /// Calls `f` once per matching filter with all its subscribers; the interest index uses
    /// this to collect target cores without visiting per-subscriber values.
    #[inline]
    pub fn for_each_matching_filter(&self, topic: &str, f: impl FnMut(&Members<S, V>)) {
        self.trie.for_each_match(topic, f);
    }

    /// The value of `sub`'s subscription to exactly `filter` (no wildcard matching).
    pub fn get(&self, filter: &str, sub: S) -> Option<&V> {
        self.trie.get(filter)?.get(sub)
    }

    /// All subscribers of exactly `filter`.
    pub fn subscribers(&self, filter: &str) -> Option<&Members<S, V>> {
        self.trie.get(filter)
    }

    /// Number of (filter, subscriber) subscriptions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Number of distinct filters with at least one subscriber.
    pub fn filter_count(&self) -> usize {
        self.filter_count
    }

    /// No subscriptions at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every filter with at least one subscriber, in no particular order: a core joining the
    /// interest mesh syncs from this.
    pub fn filters(&self) -> impl Iterator<Item = String> + '_ {
        self.trie.iter().map(|(filter, _)| filter)
    }

    /// Bytes of one trie node of this index (the broker's memory accounting, `idle_path_sizes`).
    #[doc(hidden)]
    pub const fn node_size() -> usize {
        crate::trie::node_size::<Members<S, V>>()
    }

    /// Every filter with its subscribers, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (String, &Members<S, V>)> + '_ {
        self.trie.iter()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use proptest::prelude::*;

    use super::*;
    use crate::matches;
    use crate::test_support::{filter, topic};

    fn subscribe<V>(index: &mut SubscriptionIndex<u32, V>, filter: &str, sub: u32, value: V) {
        let inserted = index.insert(filter, sub, value);
        assert!(inserted.is_ok(), "{filter:?}");
    }

    fn matched(index: &SubscriptionIndex<u32, String>, topic: &str) -> Vec<(u32, String)> {
        let mut out = Vec::new();
        index.for_each_match(topic, |s, v| out.push((s, v.clone())));
        out.sort();
        out
    }

    fn index_of(filters: &[&str]) -> SubscriptionIndex<u32, String> {
        let mut index = SubscriptionIndex::new();
        for (i, f) in filters.iter().enumerate() {
            subscribe(&mut index, f, i as u32, f.to_string());
        }
        index
    }

    fn hits(index: &SubscriptionIndex<u32, String>, topic: &str) -> Vec<String> {
        let mut filters: Vec<String> = matched(index, topic).into_iter().map(|(_, f)| f).collect();
        filters.sort();
        filters
    }

    #[test]
    fn matches_literals_and_wildcards() {
        let index = index_of(&["a/b", "a/+", "a/#", "#", "+/b", "+", "a/b/c", "/+", "a//b"]);
        let mut want = vec!["#", "+/b", "a/#", "a/+", "a/b"];
        want.sort();
        assert_eq!(hits(&index, "a/b"), want);
        assert_eq!(hits(&index, "a"), ["#", "+", "a/#"]);
        assert_eq!(hits(&index, "/x"), ["#", "/+"]);
        assert_eq!(hits(&index, "a//b"), ["#", "a/#", "a//b"]);
    }

    #[test]
    fn dollar_topics_skip_leading_wildcards() {
        // [MQTT-4.7.2-1]
        let index = index_of(&["#", "+/x", "+", "$SYS/#", "$SYS/x", "$SYS/+"]);
        assert_eq!(hits(&index, "$SYS/x"), ["$SYS/#", "$SYS/+", "$SYS/x"]);
        assert_eq!(hits(&index, "$SYS"), ["$SYS/#"]);
        assert_eq!(hits(&index, "a/x"), ["#", "+/x"]);
    }

    #[test]
    fn one_report_per_matching_filter() {
        let mut index = SubscriptionIndex::new();
        subscribe(&mut index, "a/+", 7u32, 1u8);
        subscribe(&mut index, "a/#", 7, 2);
        subscribe(&mut index, "a/#", 8, 3);
        let mut got = Vec::new();
        index.for_each_match("a/b", |s, v| got.push((s, *v)));
        got.sort();
        assert_eq!(got, [(7, 1), (7, 2), (8, 3)]);
        let mut filters = 0;
        index.for_each_matching_filter("a/b", |_| filters += 1);
        assert_eq!(filters, 2);
    }

    #[test]
    fn refuses_invalid_filters_without_storing_them() {
        let mut index = SubscriptionIndex::<u32, ()>::with_max_levels(3);
        assert_eq!(
            index.insert("a/#/b", 1, ()).unwrap_err(),
            TopicError::MultiLevelWildcardNotLast
        );
        assert_eq!(index.insert("", 1, ()).unwrap_err(), TopicError::Empty);
        assert_eq!(
            index.insert("a/b/c/d", 1, ()).unwrap_err(),
            TopicError::TooManyLevels { levels: 4, max: 3 }
        );
        assert!(index.is_empty());
        assert_eq!(index.filters().count(), 0);
        assert!(index.remove("a/#/b", 1).removed.is_none());
    }

    #[test]
    fn reports_first_and_last_subscriber_edges() {
        let mut index = SubscriptionIndex::new();
        let ins = index.insert("a/+", 1u32, 'x').unwrap();
        assert_eq!((ins.replaced, ins.first_subscriber), (None, true));
        let ins = index.insert("a/+", 2, 'y').unwrap();
        assert_eq!((ins.replaced, ins.first_subscriber), (None, false));
        let ins = index.insert("a/+", 1, 'z').unwrap();
        assert_eq!((ins.replaced, ins.first_subscriber), (Some('x'), false));
        assert_eq!((index.len(), index.filter_count()), (2, 1));
        let rem = index.remove("a/+", 1);
        assert_eq!((rem.removed, rem.last_subscriber), (Some('z'), false));
        let rem = index.remove("a/+", 1);
        assert_eq!((rem.removed, rem.last_subscriber), (None, false));
        let rem = index.remove("a/+", 2);
        assert_eq!((rem.removed, rem.last_subscriber), (Some('y'), true));
        assert!(index.is_empty());
        assert_eq!(index.filter_count(), 0);
    }

    #[test]
    fn remove_prunes_every_node() {
        let mut index = SubscriptionIndex::new();
        let filters = ["a/b/c", "a/+/c", "a/#", "#", "+", "x//y/#", "a/b"];
        for round in 0..3u32 {
            for f in filters {
                subscribe(&mut index, f, round, ());
            }
            for f in filters {
                assert!(index.remove(f, round).last_subscriber);
            }
            assert!(index.trie_is_bare());
        }
    }

    #[test]
    fn many_subscribers_of_one_filter() {
        let mut index = SubscriptionIndex::new();
        for s in 0..100_000u32 {
            subscribe(&mut index, "hot/topic", s, s);
        }
        assert_eq!(index.get("hot/topic", 4242), Some(&4242));
        assert_eq!(index.remove("hot/topic", 4242).removed, Some(4242));
        assert_eq!(index.get("hot/topic", 4242), None);
        let mut n = 0;
        index.for_each_match("hot/topic", |_, _| n += 1);
        assert_eq!(n, 99_999);
    }

    #[test]
    fn indexes_can_move_to_their_core_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<SubscriptionIndex<u32, u8>>();
        assert_send::<crate::SharedIndex<u32, u8>>();
        assert_send::<crate::RetainedStore<std::sync::Arc<[u8]>>>();
    }

    #[test]
    fn lists_filters() {
        let index = index_of(&["a/b", "a/+", "a/#", "#", "+", "/", "a", "$SYS/#"]);
        let mut got: Vec<String> = index.filters().collect();
        got.sort();
        let mut want = vec!["a/b", "a/+", "a/#", "#", "+", "/", "a", "$SYS/#"];
        want.sort();
        assert_eq!(got, want);
        assert_eq!(index.subscribers("a/#").map(Members::len), Some(1));
        assert!(index.subscribers("a/b/c").is_none());
        assert!(index.subscribers("a/b/").is_none());
    }

    impl<S: Copy + Eq + Hash, V> SubscriptionIndex<S, V> {
        /// No node left below the root.
        fn trie_is_bare(&self) -> bool {
            self.trie.iter().next().is_none() && self.trie.root_is_bare()
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(String, u8, u16),
        Remove(String, u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (filter(), 0u8..4, any::<u16>()).prop_map(|(f, s, v)| Op::Insert(f, s, v)),
            (filter(), 0u8..4).prop_map(|(f, s)| Op::Remove(f, s)),
        ]
    }

    proptest! {
        #[test]
        fn matching_agrees_with_reference(
            filters in prop::collection::vec((filter(), 0u32..3), 0..40),
            topics in prop::collection::vec(topic(), 1..20),
        ) {
            let mut index = SubscriptionIndex::new();
            for (f, s) in &filters {
                subscribe(&mut index, f, *s, f.clone());
            }
            let unique: HashSet<(u32, String)> =
                filters.iter().map(|(f, s)| (*s, f.clone())).collect();
            for t in &topics {
                let mut want: Vec<(u32, String)> =
                    unique.iter().filter(|(_, f)| matches(f, t)).cloned().collect();
                want.sort();
                prop_assert_eq!(matched(&index, t), want, "topic {:?}", t);
            }
        }

        #[test]
        fn insert_remove_agree_with_model(
            ops in prop::collection::vec(op(), 1..200),
            topics in prop::collection::vec(topic(), 1..8),
        ) {
            let mut index = SubscriptionIndex::new();
            let mut model: HashMap<String, HashMap<u8, u16>> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(f, s, v) => {
                        let subs = model.entry(f.clone()).or_default();
                        let first = subs.is_empty();
                        let old = subs.insert(s, v);
                        let got = index.insert(&f, s, v).unwrap();
                        prop_assert_eq!(got, Insert { replaced: old, first_subscriber: first });
                    }
                    Op::Remove(f, s) => {
                        let subs = model.entry(f.clone()).or_default();
                        let old = subs.remove(&s);
                        let last = old.is_some() && subs.is_empty();
                        if subs.is_empty() {
                            model.remove(&f);
                        }
                        let got = index.remove(&f, s);
                        prop_assert_eq!(got, Remove { removed: old, last_subscriber: last });
                    }
                }
                prop_assert_eq!(index.len(), model.values().map(HashMap::len).sum::<usize>());
                prop_assert_eq!(index.filter_count(), model.len());
                prop_assert!(index.trie.is_compact(), "a run left split");
            }
            // Matching after removals: runs split and joined again still match as filters do.
            for t in &topics {
                let mut want: Vec<(u8, u16)> = model
                    .iter()
                    .filter(|(f, _)| matches(f, t))
                    .flat_map(|(_, subs)| subs.iter().map(|(s, v)| (*s, *v)))
                    .collect();
                want.sort();
                let mut got = Vec::new();
                index.for_each_match(t, |s, v| got.push((s, *v)));
                got.sort();
                prop_assert_eq!(got, want, "topic {:?}", t);
            }
            let mut filters: Vec<String> = index.filters().collect();
            filters.sort();
            let mut want: Vec<String> = model.keys().cloned().collect();
            want.sort();
            prop_assert_eq!(filters, want);
            for (f, subs) in &model {
                for (s, v) in subs {
                    prop_assert_eq!(index.get(f, *s), Some(v));
                }
            }
            for (f, subs) in &model {
                for s in subs.keys() {
                    let _ = index.remove(f, *s);
                }
            }
            prop_assert!(index.trie_is_bare());
        }
    }
}
