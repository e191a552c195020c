//! The filter trie shared by [`crate::SubscriptionIndex`] and [`crate::SharedIndex`]: one node
//! per filter level, literal children in a [`Children`] map, and separate slots for `+` (a
//! child node) and `#` (always a leaf, so just a payload). Matching a topic visits only the
//! nodes that can match it: per level one literal lookup, the `+` child and the `#` payload.

use ahash::RandomState;

use crate::children::{Children, Level};
use crate::levels::split_level;

/// What a filter ends in: the subscribers of that filter.
pub(crate) trait Payload: Default {
    fn is_empty(&self) -> bool;
}

/// One step of a filter walk.
enum Step<'a> {
    Literal(&'a str),
    Plus,
    /// Only ever the last step.
    Hash,
}

/// A filter's levels as steps. `#` counts as a wildcard only as the whole last level and `+`
/// only as a whole level; elsewhere they are literal levels no valid topic name can match.
fn steps(filter: &str) -> impl Iterator<Item = Step<'_>> {
    let mut levels = filter.split('/').peekable();
    std::iter::from_fn(move || {
        let level = levels.next()?;
        Some(match level {
            "+" => Step::Plus,
            "#" if levels.peek().is_none() => Step::Hash,
            literal => Step::Literal(literal),
        })
    })
}

pub(crate) struct Node<P> {
    level: Box<str>,
    children: Children<Node<P>>,
    plus: Option<Box<Node<P>>>,
    hash: Option<Box<P>>,
    /// Subscribers of the filter that ends at this node.
    here: P,
}

impl<P> Level for Node<P> {
    #[inline]
    fn level(&self) -> &str {
        &self.level
    }
}

impl<P: Payload> Node<P> {
    fn new(level: &str) -> Self {
        Self {
            level: level.into(),
            children: Children::default(),
            plus: None,
            hash: None,
            here: P::default(),
        }
    }

    /// Nothing subscribes here or below: the parent may drop this node.
    fn is_prunable(&self) -> bool {
        self.here.is_empty()
            && self.hash.is_none()
            && self.plus.is_none()
            && self.children.is_empty()
    }
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
        for step in steps(filter) {
            node = match step {
                Step::Hash => return node.hash.get_or_insert_with(Box::default),
                Step::Plus => node.plus.get_or_insert_with(|| Box::new(Node::new("+"))),
                Step::Literal(level) => node
                    .children
                    .get_or_insert_with(level, hasher, || Node::new(level)),
            };
        }
        &mut node.here
    }

    /// The payload of `filter` if anything subscribes to it.
    pub(crate) fn get(&self, filter: &str) -> Option<&P> {
        let mut node = &self.root;
        for step in steps(filter) {
            node = match step {
                Step::Hash => return node.hash.as_deref(),
                Step::Plus => node.plus.as_deref()?,
                Step::Literal(level) => node.children.get(level, &self.hasher)?,
            };
        }
        Some(&node.here).filter(|p| !p.is_empty())
    }

    /// Applies `change` to the payload of an existing `filter`, then drops every node that no
    /// longer leads to a subscriber, so subscribe/unsubscribe churn leaves no garbage behind.
    /// `None` if the filter has no node.
    pub(crate) fn update<R>(
        &mut self,
        filter: &str,
        change: impl FnOnce(&mut P) -> R,
    ) -> Option<R> {
        let Self { root, hasher } = self;
        update_node(root, &mut steps(filter), hasher, change)
    }

    /// Calls `f` with the payload of every filter that matches `topic`, once per filter.
    /// [MQTT-4.7.2-1]: a topic starting with `$` skips the root's `+` and `#`.
    #[inline]
    pub(crate) fn for_each_match(&self, topic: &str, mut f: impl FnMut(&P)) {
        let root = &self.root;
        let (level, rest) = split_level(topic);
        if !topic.starts_with('$') {
            if let Some(hash) = &root.hash {
                f(hash);
            }
            if let Some(plus) = &root.plus {
                self.visit(plus, rest, &mut f);
            }
        }
        if let Some(child) = root.children.get(level, &self.hasher) {
            self.visit(child, rest, &mut f);
        }
    }

    /// `node` matched the topic's levels so far; `rest` is what is left of the topic.
    fn visit<F: FnMut(&P)>(&self, node: &Node<P>, rest: Option<&str>, f: &mut F) {
        // `x/#` matches `x` itself and everything below it [MQTT-4.7.1-2].
        if let Some(hash) = &node.hash {
            f(hash);
        }
        let Some(rest) = rest else {
            f(&node.here);
            return;
        };
        let (level, rest) = split_level(rest);
        if let Some(plus) = &node.plus {
            self.visit(plus, rest, f);
        }
        if let Some(child) = node.children.get(level, &self.hasher) {
            self.visit(child, rest, f);
        }
    }

    /// The root has no children or wildcard slots left (tests check pruning with it).
    #[cfg(test)]
    pub(crate) fn root_is_bare(&self) -> bool {
        self.root.is_prunable()
    }

    /// Every filter that has subscribers, with its payload, in no particular order.
    pub(crate) fn iter(&self) -> Iter<'_, P> {
        Iter {
            stack: vec![(&self.root, None)],
            pending: Vec::new(),
        }
    }
}

fn update_node<'f, P: Payload, R>(
    node: &mut Node<P>,
    steps: &mut impl Iterator<Item = Step<'f>>,
    hasher: &RandomState,
    change: impl FnOnce(&mut P) -> R,
) -> Option<R> {
    match steps.next() {
        None => Some(change(&mut node.here)),
        Some(Step::Hash) => {
            let payload = node.hash.as_deref_mut()?;
            let result = change(payload);
            if payload.is_empty() {
                node.hash = None;
            }
            Some(result)
        }
        Some(Step::Plus) => {
            let plus = node.plus.as_deref_mut()?;
            let result = update_node(plus, steps, hasher, change)?;
            if plus.is_prunable() {
                node.plus = None;
            }
            Some(result)
        }
        Some(Step::Literal(level)) => {
            let child = node.children.get_mut(level, hasher)?;
            let result = update_node(child, steps, hasher, change)?;
            if child.is_prunable() {
                node.children.remove(level, hasher);
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
            if let Some(hash) = &node.hash {
                self.pending.push((join(path, "#"), hash));
            }
            if let Some(plus) = &node.plus {
                self.stack.push((plus, Some(join(path, "+"))));
            }
            for child in node.children.iter() {
                self.stack.push((child, Some(join(path, &child.level))));
            }
            if let Some(path) = path {
                if !node.here.is_empty() {
                    self.pending.push((path.to_owned(), &node.here));
                }
            }
        }
    }
}
