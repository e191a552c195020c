//! The filter trie shared by [`crate::SubscriptionIndex`] and [`crate::SharedIndex`]: nodes
//! of filter levels, literal children in a [`Children`] map, and separate slots for `+` (a
//! child node) and `#` (always a leaf, so just a payload). Matching a topic visits only the
//! nodes that can match it: per level one literal lookup, the `+` child and the `#` payload.
//!
//! Path compression: a literal node holds a run of levels (`7/cmd`) when every level of the
//! run but the last has nothing but the next one: no subscribers, no `+` or `#`, one child.
//! A million devices subscribing to `devices/<id>/cmd` then cost one node each below
//! `devices` instead of two, in every index (#20: ~110 bytes per subscription and index).
//! A node is found among its siblings by its first level; its other levels are compared
//! whole against the topic's next ones. Inserting splits a run where a filter leaves it;
//! removing joins a node left with one child and nothing else back into a run. The root and
//! `+` nodes hold exactly their one level.

use ahash::RandomState;

use crate::children::{Children, Level};
use crate::levels::split_level;
use crate::small_str::SmallStr;

/// What a filter ends in: the subscribers of that filter.
pub(crate) trait Payload: Default {
    fn is_empty(&self) -> bool;
}

pub(crate) struct Node<P> {
    /// One level, or a run of literal levels joined by `/` (the node's subscribers, children
    /// and wildcard slots are those of the run's last level); inline when short.
    level: SmallStr,
    /// What only inner nodes have, boxed: most nodes of a big index are leaves (a device's
    /// own filter), which then pay 8 bytes for it instead of 40.
    branches: Option<Box<Branches<P>>>,
    /// Subscribers of the filter that ends at this node.
    here: P,
}

/// The literal children and wildcard slots of an inner node.
struct Branches<P> {
    children: Children<Node<P>>,
    plus: Option<Box<Node<P>>>,
    hash: Option<Box<P>>,
}

impl<P> Default for Branches<P> {
    fn default() -> Self {
        Self {
            children: Children::default(),
            plus: None,
            hash: None,
        }
    }
}

impl<P> Branches<P> {
    fn is_empty(&self) -> bool {
        self.plus.is_none() && self.hash.is_none() && self.children.is_empty()
    }
}

impl<P> Level for Node<P> {
    /// The first level of the run.
    #[inline]
    fn key(&self) -> &str {
        split_level(&self.level).0
    }

    #[inline]
    fn has_key(&self, level: &str) -> bool {
        let run = self.level.as_bytes();
        run.starts_with(level.as_bytes()) && (run.len() == level.len() || run[level.len()] == b'/')
    }
}

impl<P: Payload> Node<P> {
    fn new(level: &str) -> Self {
        Self {
            level: level.into(),
            branches: None,
            here: P::default(),
        }
    }

    /// The node's children and wildcard slots, created on first use.
    fn branches_mut(&mut self) -> &mut Branches<P> {
        self.branches.get_or_insert_with(Box::default)
    }

    /// Gives the branches' box back once nothing is left in it.
    fn tidy(&mut self) {
        if self.branches.as_deref().is_some_and(Branches::is_empty) {
            self.branches = None;
        }
    }

    /// Nothing subscribes here or below: the parent may drop this node.
    fn is_prunable(&self) -> bool {
        self.here.is_empty() && self.branches.is_none()
    }

    /// Cuts the run after its first `at` bytes (a level boundary): the rest of the run,
    /// with everything this node held, becomes its only child.
    fn split(&mut self, at: usize) {
        let rest = Node {
            level: self.level[at + 1..].into(),
            branches: self.branches.take(),
            here: std::mem::take(&mut self.here),
        };
        self.level = self.level[..at].into();
        self.branches = Some(Box::new(Branches {
            children: Children::Few(vec![rest]),
            plus: None,
            hash: None,
        }));
    }

    /// A literal node left with one child and nothing else takes that child in: one run.
    fn join_only_child(&mut self) {
        let Some(branches) = self.branches.as_deref_mut() else {
            return;
        };
        if !(self.here.is_empty() && branches.plus.is_none() && branches.hash.is_none()) {
            return;
        }
        if let Some(only) = branches.children.take_only() {
            self.level = SmallStr::from(&*format!("{}/{}", &*self.level, &*only.level));
            self.branches = only.branches;
            self.here = only.here;
        }
    }
}

/// Bytes of one node with payload `P`.
pub(crate) const fn node_size<P>() -> usize {
    std::mem::size_of::<Node<P>>()
}

/// What is left of `path` (the levels after `level`) once a node found by `level` is passed:
/// its run's further levels must be the next levels of `path`. `None`: they are not; `Some(None)`:
/// `path` ends with the run.
#[inline]
fn past<'p>(run: &str, level: &str, after: Option<&'p str>) -> Option<Option<&'p str>> {
    let Some(more) = run.get(level.len() + 1..) else {
        // A run of one level: the common case, nothing more to compare.
        return Some(after);
    };
    let left = after?.strip_prefix(more)?;
    if left.is_empty() {
        Some(None)
    } else {
        left.strip_prefix('/').map(Some)
    }
}

/// The run of literal levels `path` starts with (up to a `+` or a last `#`), for a new node;
/// `path` is part of a valid filter, so its first level is literal.
fn literal_run(path: &str) -> &str {
    let mut end = 0;
    let mut rest = Some(path);
    while let Some(p) = rest {
        let (level, after) = split_level(p);
        if level == "+" || (level == "#" && after.is_none()) {
            break;
        }
        end = path.len() - p.len() + level.len();
        rest = after;
    }
    &path[..end]
}

/// How many bytes of `run` (whole levels) `path` starts with, and what of `path` follows
/// them. The first level is equal already (the node was found by it).
fn common_levels<'p>(run: &str, path: &'p str) -> (usize, Option<&'p str>) {
    let (mut matched, mut start) = (0, 0);
    let mut rest = Some(path);
    for level in run.split('/') {
        let Some(p) = rest else { break };
        let (first, after) = split_level(p);
        if first != level {
            break;
        }
        matched = start + level.len();
        start = matched + 1;
        rest = after;
    }
    (matched, rest)
}

pub(crate) struct FilterTrie<P> {
    root: Node<P>,
    hasher: RandomState,
}

impl<P: Payload> Default for FilterTrie<P> {
    fn default() -> Self {
        Self {
            root: Node::new(""),
            hasher: RandomState::new(),
        }
    }
}

impl<P: Payload> FilterTrie<P> {
    /// The payload of `filter`, creating its path. The caller has validated the filter and
    /// bounded its levels (which bounds every recursion below by the trie depth).
    pub(crate) fn entry(&mut self, filter: &str) -> &mut P {
        let Self { root, hasher } = self;
        let mut node = root;
        let mut rest = Some(filter);
        while let Some(path) = rest {
            let (level, after) = split_level(path);
            let branches = node.branches_mut();
            (node, rest) = match level {
                "#" if after.is_none() => return branches.hash.get_or_insert_with(Box::default),
                "+" => (
                    &mut **branches
                        .plus
                        .get_or_insert_with(|| Box::new(Node::new("+"))),
                    after,
                ),
                _ => {
                    let child = branches
                        .children
                        .get_or_insert_with(level, hasher, || Node::new(literal_run(path)));
                    let (matched, left) = common_levels(&child.level, path);
                    if matched < child.level.len() {
                        child.split(matched);
                    }
                    (child, left)
                }
            };
        }
        &mut node.here
    }

    /// The payload of `filter` if anything subscribes to it.
    pub(crate) fn get(&self, filter: &str) -> Option<&P> {
        let mut node = &self.root;
        let mut rest = Some(filter);
        while let Some(path) = rest {
            let (level, after) = split_level(path);
            let branches = node.branches.as_deref()?;
            (node, rest) = match level {
                "#" if after.is_none() => return branches.hash.as_deref(),
                "+" => (branches.plus.as_deref()?, after),
                _ => {
                    let child = branches.children.get(level, &self.hasher)?;
                    (child, past(&child.level, level, after)?)
                }
            };
        }
        Some(&node.here).filter(|p| !p.is_empty())
    }

    /// Applies `change` to the payload of an existing `filter`, then drops every node that no
    /// longer leads to a subscriber (and joins runs again), so subscribe/unsubscribe churn
    /// leaves no garbage behind. `None` if the filter has no node.
    pub(crate) fn update<R>(
        &mut self,
        filter: &str,
        change: impl FnOnce(&mut P) -> R,
    ) -> Option<R> {
        let Self { root, hasher } = self;
        update_node(root, Some(filter), hasher, change)
    }

    /// Calls `f` with the payload of every filter that matches `topic`, once per filter.
    /// [MQTT-4.7.2-1]: a topic starting with `$` skips the root's `+` and `#`.
    #[inline]
    pub(crate) fn for_each_match(&self, topic: &str, mut f: impl FnMut(&P)) {
        let Some(root) = self.root.branches.as_deref() else {
            return;
        };
        let (level, rest) = split_level(topic);
        if !topic.starts_with('$') {
            if let Some(hash) = &root.hash {
                f(hash);
            }
            if let Some(plus) = &root.plus {
                self.visit(plus, rest, &mut f);
            }
        }
        self.visit_child(root, level, rest, &mut f);
    }

    /// `node` matched the topic's levels so far; `rest` is what is left of the topic.
    fn visit<F: FnMut(&P)>(&self, node: &Node<P>, rest: Option<&str>, f: &mut F) {
        let Some(branches) = node.branches.as_deref() else {
            // A leaf: it matches only where the topic ends.
            if rest.is_none() {
                f(&node.here);
            }
            return;
        };
        // `x/#` matches `x` itself and everything below it [MQTT-4.7.1-2].
        if let Some(hash) = &branches.hash {
            f(hash);
        }
        let Some(rest) = rest else {
            f(&node.here);
            return;
        };
        let (level, rest) = split_level(rest);
        if let Some(plus) = &branches.plus {
            self.visit(plus, rest, f);
        }
        self.visit_child(branches, level, rest, f);
    }

    /// Visits the literal child of `branches` for the topic's next `level`, if its run
    /// matches.
    #[inline]
    fn visit_child<F: FnMut(&P)>(
        &self,
        branches: &Branches<P>,
        level: &str,
        rest: Option<&str>,
        f: &mut F,
    ) {
        if let Some(child) = branches.children.get(level, &self.hasher) {
            if let Some(rest) = past(&child.level, level, rest) {
                self.visit(child, rest, f);
            }
        }
    }

    /// The root has no children or wildcard slots left (tests check pruning with it).
    #[cfg(test)]
    pub(crate) fn root_is_bare(&self) -> bool {
        self.root.is_prunable()
    }

    /// Every node is as short as the filters need: no run could be joined further, and no
    /// node keeps an empty branches box (tests check that removal undoes what insertion did).
    #[cfg(test)]
    pub(crate) fn is_compact(&self) -> bool {
        fn compact<P: Payload>(node: &Node<P>, literal: bool) -> bool {
            let Some(b) = node.branches.as_deref() else {
                return true;
            };
            let joinable = literal
                && node.here.is_empty()
                && b.plus.is_none()
                && b.hash.is_none()
                && b.children.iter().count() == 1;
            !joinable
                && !b.is_empty()
                && b.children.iter().all(|c| compact(c, true))
                && b.plus.as_deref().is_none_or(|p| compact(p, false))
        }
        compact(&self.root, false)
    }

    /// Every filter that has subscribers, with its payload, in no particular order.
    pub(crate) fn iter(&self) -> Iter<'_, P> {
        Iter {
            stack: vec![(&self.root, None)],
            pending: Vec::new(),
        }
    }
}

fn update_node<P: Payload, R>(
    node: &mut Node<P>,
    rest: Option<&str>,
    hasher: &RandomState,
    change: impl FnOnce(&mut P) -> R,
) -> Option<R> {
    let Some(path) = rest else {
        return Some(change(&mut node.here));
    };
    let result = update_branch(node.branches.as_deref_mut()?, path, hasher, change);
    node.tidy();
    result
}

/// [`update_node`] below a node, along the first level of `path`.
fn update_branch<P: Payload, R>(
    branches: &mut Branches<P>,
    path: &str,
    hasher: &RandomState,
    change: impl FnOnce(&mut P) -> R,
) -> Option<R> {
    let (level, after) = split_level(path);
    match level {
        "#" if after.is_none() => {
            let payload = branches.hash.as_deref_mut()?;
            let result = change(payload);
            if payload.is_empty() {
                branches.hash = None;
            }
            Some(result)
        }
        "+" => {
            let plus = branches.plus.as_deref_mut()?;
            let result = update_node(plus, after, hasher, change)?;
            if plus.is_prunable() {
                branches.plus = None;
            }
            Some(result)
        }
        _ => {
            let child = branches.children.get_mut(level, hasher)?;
            let rest = past(&child.level, level, after)?;
            let result = update_node(child, rest, hasher, change)?;
            if child.is_prunable() {
                branches.children.remove(level, hasher);
            } else {
                child.join_only_child();
            }
            Some(result)
        }
    }
}

/// Depth-first iterator over `(filter, payload)`; builds each filter string once.
pub(crate) struct Iter<'a, P> {
    /// Nodes still to expand, with their filter (`None` for the root).
    stack: Vec<(&'a Node<P>, Option<String>)>,
    pending: Vec<(String, &'a P)>,
}

fn join(parent: Option<&str>, level: &str) -> String {
    match parent {
        None => level.to_owned(),
        Some(parent) => format!("{parent}/{level}"),
    }
}

impl<'a, P: Payload> Iterator for Iter<'a, P> {
    type Item = (String, &'a P);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.pending.pop() {
                return Some(item);
            }
            let (node, path) = self.stack.pop()?;
            let path = path.as_deref();
            if let Some(branches) = node.branches.as_deref() {
                if let Some(hash) = &branches.hash {
                    self.pending.push((join(path, "#"), hash));
                }
                if let Some(plus) = &branches.plus {
                    self.stack.push((plus, Some(join(path, "+"))));
                }
                for child in branches.children.iter() {
                    self.stack.push((child, Some(join(path, &child.level))));
                }
            }
            if let Some(path) = path {
                if !node.here.is_empty() {
                    self.pending.push((path.to_owned(), &node.here));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Count(u32);

    impl Payload for Count {
        fn is_empty(&self) -> bool {
            self.0 == 0
        }
    }

    fn children(node: &Node<Count>) -> &Children<Node<Count>> {
        &node.branches.as_deref().unwrap().children
    }

    fn runs(trie: &FilterTrie<Count>, path: &[&str]) -> Vec<String> {
        let mut node = &trie.root;
        for level in path {
            node = children(node).get(level, &trie.hasher).unwrap();
        }
        let mut levels: Vec<String> = children(node).iter().map(|c| c.level.to_string()).collect();
        levels.sort();
        levels
    }

    #[test]
    fn devices_cost_one_node_each_until_a_filter_splits_the_run() {
        let mut trie = FilterTrie::<Count>::default();
        trie.entry("idle/1/cmd").0 += 1;
        assert_eq!(runs(&trie, &[]), ["idle/1/cmd"]);
        trie.entry("idle/2/cmd").0 += 1;
        assert_eq!(runs(&trie, &["idle"]), ["1/cmd", "2/cmd"]);
        trie.entry("idle/1/status").0 += 1;
        trie.entry("idle/1").0 += 1;
        assert_eq!(runs(&trie, &["idle"]), ["1", "2/cmd"]);
        assert_eq!(runs(&trie, &["idle", "1"]), ["cmd", "status"]);
        assert!(trie.get("idle/1").is_some() && trie.get("idle/2").is_none());
        let mut hits = 0;
        trie.for_each_match("idle/2/cmd", |c| hits += c.0);
        trie.for_each_match("idle/2/cm", |c| hits += c.0 * 10);
        trie.for_each_match("idle/2", |c| hits += c.0 * 100);
        assert_eq!(hits, 1);
        for filter in ["idle/1/status", "idle/1"] {
            trie.update(filter, |c| c.0 -= 1);
        }
        assert_eq!(runs(&trie, &["idle"]), ["1/cmd", "2/cmd"]);
        trie.update("idle/2/cmd", |c| c.0 -= 1);
        assert_eq!(runs(&trie, &[]), ["idle/1/cmd"]);
        assert!(trie.is_compact());
    }

    #[test]
    fn runs_and_their_edges() {
        assert_eq!(literal_run("a/b/c"), "a/b/c");
        assert_eq!(literal_run("a/+/c"), "a");
        assert_eq!(literal_run("a/b/#"), "a/b");
        assert_eq!(literal_run("a/#/b"), "a/#/b");
        assert_eq!(literal_run("a//"), "a//");
        assert_eq!(common_levels("7/cmd", "7/cmd"), (5, None));
        assert_eq!(common_levels("7/cmd", "7/cmd/x"), (5, Some("x")));
        assert_eq!(common_levels("7/cmd", "7/cm"), (1, Some("cm")));
        assert_eq!(common_levels("7/cmd", "7"), (1, None));
        assert_eq!(common_levels("7//x", "7//y"), (2, Some("y")));
        assert_eq!(past("7/cmd", "7", Some("cmd")), Some(None));
        assert_eq!(past("7/cmd", "7", Some("cmd/a")), Some(Some("a")));
        assert_eq!(past("7/cmd", "7", Some("cmdx")), None);
        assert_eq!(past("7/cmd", "7", None), None);
        assert_eq!(past("7/", "7", Some("")), Some(None));
        assert_eq!(past("7", "7", Some("a")), Some(Some("a")));
    }
}
