//! [`RetainedStore`]: the last retained message per topic name, looked up by (wildcard)
//! filter when a client subscribes.
//!
//! A trie of topic levels. A wildcard lookup walks only matching branches: `+` visits the
//! children of one node, `#` one subtree, literals one child each, so `site/7/+/temp` over 100k
//! retained topics touches a few hundred nodes, not 100k (EMQX #6014 is the scan to avoid).

use ahash::RandomState;

use crate::children::{Children, Level};
use crate::levels::{check_max_levels, split_level, DEFAULT_MAX_LEVELS};
use crate::{validate_topic_name, TopicError};

struct Node<V> {
    level: Box<str>,
    children: Children<Node<V>>,
    /// The retained message of the topic ending here, with that topic (kept whole so that a
    /// lookup reports it without rebuilding it from levels).
    retained: Option<(Box<str>, V)>,
}

impl<V> Level for Node<V> {
    #[inline]
    fn key(&self) -> &str {
        &self.level
    }
}

impl<V> Node<V> {
    fn new(level: &str) -> Self {
        Self {
            level: level.into(),
            children: Children::default(),
            retained: None,
        }
    }

    fn is_prunable(&self) -> bool {
        self.retained.is_none() && self.children.is_empty()
    }

    /// Reports this node's message and every one below it.
    fn for_each_in_subtree(&self, f: &mut impl FnMut(&str, &V)) {
        if let Some((topic, value)) = &self.retained {
            f(topic, value);
        }
        for child in self.children.iter() {
            child.for_each_in_subtree(f);
        }
    }
}

/// Retained messages by topic name.
pub struct RetainedStore<V> {
    root: Node<V>,
    hasher: RandomState,
    len: usize,
    max_levels: usize,
}

impl<V> Default for RetainedStore<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> RetainedStore<V> {
    /// An empty store accepting topics of up to [`DEFAULT_MAX_LEVELS`] levels.
    pub fn new() -> Self {
        Self::with_max_levels(DEFAULT_MAX_LEVELS)
    }

    /// An empty store accepting topics of up to `max_levels` levels (this bounds the
    /// recursion depth of lookups and removal).
    pub fn with_max_levels(max_levels: usize) -> Self {
        Self {
            root: Node::new(""),
            hasher: RandomState::new(),
            len: 0,
            max_levels,
        }
    }

    /// Stores `value` as the retained message of `topic` (a valid topic name), returning the
    /// one it replaces [MQTT-3.3.1-5]. Removal on an empty payload [MQTT-3.3.1-6] is the
    /// caller's call to [`RetainedStore::remove`].
    pub fn insert(&mut self, topic: &str, value: V) -> Result<Option<V>, TopicError> {
        validate_topic_name(topic)?;
        check_max_levels(topic, self.max_levels)?;
        let Self { root, hasher, .. } = self;
        let mut node = root;
        for level in topic.split('/') {
            node = node
                .children
                .get_or_insert_with(level, hasher, || Node::new(level));
        }
        match &mut node.retained {
            Some((_, old)) => Ok(Some(std::mem::replace(old, value))),
            empty => {
                *empty = Some((topic.into(), value));
                self.len += 1;
                Ok(None)
            }
        }
    }

    /// Removes the retained message of `topic` and every trie node left without purpose.
    pub fn remove(&mut self, topic: &str) -> Option<V> {
        let removed = remove_from(&mut self.root, topic, &self.hasher)?;
        self.len -= 1;
        Some(removed)
    }

    /// The retained message of exactly `topic`.
    pub fn get(&self, topic: &str) -> Option<&V> {
        let mut node = &self.root;
        for level in topic.split('/') {
            node = node.children.get(level, &self.hasher)?;
        }
        node.retained.as_ref().map(|(_, value)| value)
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No retained messages.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Calls `f(topic, value)` for every retained message whose topic matches `filter`, for
    /// the retained messages a SUBSCRIBE receives [MQTT-3.3.1-9]. A filter whose first level is
    /// a wildcard skips `$` topics [MQTT-4.7.2-1]. Wildcards in positions the spec forbids are
    /// literal levels, which match nothing.
    pub fn for_each_match(&self, filter: &str, mut f: impl FnMut(&str, &V)) {
        self.visit(&self.root, filter, true, &mut f);
    }

    /// `node` matched the filter's levels so far; `rest` is what is left of the filter.
    fn visit(&self, node: &Node<V>, rest: &str, at_root: bool, f: &mut impl FnMut(&str, &V)) {
        let (level, rest) = split_level(rest);
        // [MQTT-4.7.2-1]: at the root, wildcards do not descend into `$` levels.
        let visible = |child: &&Node<V>| !(at_root && child.level.starts_with('$'));
        match (level, rest) {
            ("#", None) => {
                // `x/#` matches `x` itself [MQTT-4.7.1-2]; the root holds no message.
                if let Some((topic, value)) = &node.retained {
                    f(topic, value);
                }
                for child in node.children.iter().filter(visible) {
                    child.for_each_in_subtree(f);
                }
            }
            ("+", _) => {
                for child in node.children.iter().filter(visible) {
                    self.visit_or_report(child, rest, f);
                }
            }
            (literal, _) => {
                if let Some(child) = node.children.get(literal, &self.hasher) {
                    self.visit_or_report(child, rest, f);
                }
            }
        }
    }

    #[inline]
    fn visit_or_report(&self, node: &Node<V>, rest: Option<&str>, f: &mut impl FnMut(&str, &V)) {
        match rest {
            Some(rest) => self.visit(node, rest, false, f),
            None => {
                if let Some((topic, value)) = &node.retained {
                    f(topic, value);
                }
            }
        }
    }

    /// Every retained message with its topic, in no particular order: for syncing a new core.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> + '_ {
        let mut stack = vec![&self.root];
        std::iter::from_fn(move || loop {
            let node = stack.pop()?;
            stack.extend(node.children.iter());
            if let Some((topic, value)) = &node.retained {
                return Some((&**topic, value));
            }
        })
    }
}

/// Recursion depth is bounded by the trie depth (at most `max_levels`), however deep `rest` is.
fn remove_from<V>(node: &mut Node<V>, rest: &str, hasher: &RandomState) -> Option<V> {
    let (level, rest) = split_level(rest);
    let child = node.children.get_mut(level, hasher)?;
    let removed = match rest {
        Some(rest) => remove_from(child, rest, hasher)?,
        None => child.retained.take()?.1,
    };
    if child.is_prunable() {
        node.children.remove(level, hasher);
    }
    Some(removed)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::matches;
    use crate::test_support::{filter, topic};

    fn store(topics: &[&str]) -> RetainedStore<String> {
        let mut store = RetainedStore::new();
        for t in topics {
            assert_eq!(store.insert(t, t.to_string()), Ok(None));
        }
        store
    }

    fn hits(store: &RetainedStore<String>, filter: &str) -> Vec<String> {
        let mut out = Vec::new();
        store.for_each_match(filter, |t, v| {
            assert_eq!(t, v);
            out.push(t.to_string());
        });
        out.sort();
        out
    }

    #[test]
    fn wildcard_lookups() {
        let s = store(&["a", "a/b", "a/c", "a/b/c", "/", "/x", "b", "$SYS/x", "a//"]);
        assert_eq!(hits(&s, "a/+"), ["a/b", "a/c"]);
        assert_eq!(hits(&s, "a/#"), ["a", "a//", "a/b", "a/b/c", "a/c"]);
        assert_eq!(hits(&s, "+"), ["a", "b"]);
        assert_eq!(hits(&s, "+/+"), ["/", "/x", "a/b", "a/c"]);
        assert_eq!(
            hits(&s, "#"),
            ["/", "/x", "a", "a//", "a/b", "a/b/c", "a/c", "b"]
        );
        assert_eq!(hits(&s, "a/b"), ["a/b"]);
        assert_eq!(hits(&s, "a/+/c"), ["a/b/c"]);
        assert_eq!(hits(&s, "a/+/+"), ["a//", "a/b/c"]);
        assert!(hits(&s, "a/x/#").is_empty());
    }

    #[test]
    fn dollar_topics_only_for_explicit_first_level() {
        // [MQTT-4.7.2-1]
        let s = store(&["$SYS/x", "$SYS", "x/$y"]);
        assert!(hits(&s, "#").iter().all(|t| !t.starts_with('$')));
        assert!(hits(&s, "+/x").is_empty());
        assert_eq!(hits(&s, "$SYS/#"), ["$SYS", "$SYS/x"]);
        assert_eq!(hits(&s, "$SYS/+"), ["$SYS/x"]);
        assert_eq!(hits(&s, "x/+"), ["x/$y"]);
    }

    #[test]
    fn replace_get_remove_and_prune() {
        let mut s = RetainedStore::new();
        assert_eq!(s.insert("a/b", 1), Ok(None));
        assert_eq!(s.insert("a/b", 2), Ok(Some(1)));
        assert_eq!(s.insert("a", 3), Ok(None));
        assert_eq!(s.get("a/b"), Some(&2));
        assert_eq!(s.get("a/b/c"), None);
        assert_eq!(s.len(), 2);
        assert_eq!(s.remove("a/b/c"), None);
        assert_eq!(s.remove("a/b"), Some(2));
        assert_eq!(s.remove("a/b"), None);
        assert_eq!(s.remove("a"), Some(3));
        assert!(s.is_empty());
        assert!(s.root.is_prunable());
    }

    #[test]
    fn refuses_invalid_topics() {
        let mut s = RetainedStore::with_max_levels(2);
        assert_eq!(s.insert("a/+", ()), Err(TopicError::WildcardInName));
        assert_eq!(s.insert("", ()), Err(TopicError::Empty));
        assert_eq!(
            s.insert("a/b/c", ()),
            Err(TopicError::TooManyLevels { levels: 3, max: 2 })
        );
        assert!(s.is_empty());
        assert!(s.root.is_prunable());
    }

    #[test]
    fn hostile_inputs_do_not_recurse_deeply() {
        let mut s = store(&["a/b"]);
        let deep = "a/".repeat(30_000);
        assert!(hits(&s, &deep).is_empty());
        assert!(hits(&s, &format!("{deep}#")).is_empty());
        assert_eq!(s.remove(&deep), None);
        assert_eq!(s.get(&deep), None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(String, u16),
        Remove(String),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (topic(), any::<u16>()).prop_map(|(t, v)| Op::Insert(t, v)),
            topic().prop_map(Op::Remove),
        ]
    }

    proptest! {
        #[test]
        fn agrees_with_model_and_reference_matcher(
            ops in prop::collection::vec(op(), 1..120),
            filters in prop::collection::vec(filter(), 1..20),
        ) {
            let mut store = RetainedStore::new();
            let mut model: HashMap<String, u16> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(t, v) => {
                        prop_assert_eq!(store.insert(&t, v).unwrap(), model.insert(t, v));
                    }
                    Op::Remove(t) => prop_assert_eq!(store.remove(&t), model.remove(&t)),
                }
                prop_assert_eq!(store.len(), model.len());
            }
            for (t, v) in &model {
                prop_assert_eq!(store.get(t), Some(v));
            }
            for f in &filters {
                let mut want: Vec<(String, u16)> =
                    model.iter().filter(|(t, _)| matches(f, t)).map(|(t, v)| (t.clone(), *v)).collect();
                want.sort();
                let mut got = Vec::new();
                store.for_each_match(f, |t, v| got.push((t.to_string(), *v)));
                got.sort();
                prop_assert_eq!(got, want, "filter {:?}", f);
            }
            let mut listed: Vec<(String, u16)> = store.iter().map(|(t, v)| (t.to_string(), *v)).collect();
            listed.sort();
            let mut want: Vec<(String, u16)> = model.iter().map(|(t, v)| (t.clone(), *v)).collect();
            want.sort();
            prop_assert_eq!(listed, want);
            for t in model.keys() {
                store.remove(t);
            }
            prop_assert!(store.root.is_prunable());
        }
    }
}
