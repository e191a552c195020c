//! The retained-message store (one replica per core): a trie over topic levels, so a wildcard
//! SUBSCRIBE visits only the branches its filter can match, never all retained topics.

use std::collections::HashMap;
use std::sync::Arc;
use uringmq_session::Message;

#[derive(Default)]
struct Node {
    children: HashMap<Box<str>, Node, ahash::RandomState>,
    msg: Option<Arc<Message>>,
}

/// Retained messages by topic.
#[derive(Default)]
pub(crate) struct RetainedStore {
    root: Node,
    len: usize,
    /// Messages and payload bytes of topics other than the broker's own `$SYS/...`: what
    /// users retained, counted in the stats and against `max_retained_messages`.
    user_len: usize,
    user_bytes: usize,
}

/// Whether `topic` is one of the broker's own (`ops/sys_topics.rs`).
fn is_sys(topic: &str) -> bool {
    topic.starts_with("$SYS/")
}

impl RetainedStore {
    /// Stores (non-empty payload) or deletes (empty payload) the retained message of its topic
    /// [MQTT-3.3.1-5] [MQTT-3.3.1-6].
    pub(crate) fn set(&mut self, msg: Arc<Message>) {
        let topic = msg.topic.clone();
        let user = !is_sys(&topic);
        let old = if msg.payload.is_empty() {
            let old = Self::remove(&mut self.root, topic.split('/'));
            if old.is_some() {
                self.len -= 1;
                self.user_len -= usize::from(user);
            }
            old
        } else {
            let mut node = &mut self.root;
            for level in topic.split('/') {
                node = node.children.entry(level.into()).or_default();
            }
            if node.msg.is_none() {
                self.len += 1;
                self.user_len += usize::from(user);
            }
            if user {
                self.user_bytes += msg.payload.len();
            }
            node.msg.replace(msg)
        };
        if let Some(old) = old {
            if user {
                self.user_bytes -= old.payload.len();
            }
        }
    }

    /// Removes the message of a topic; returns it.
    fn remove<'a>(
        node: &mut Node,
        mut levels: impl Iterator<Item = &'a str>,
    ) -> Option<Arc<Message>> {
        match levels.next() {
            None => node.msg.take(),
            Some(level) => {
                let child = node.children.get_mut(level)?;
                let removed = Self::remove(child, levels);
                if child.msg.is_none() && child.children.is_empty() {
                    node.children.remove(level);
                }
                removed
            }
        }
    }

    /// Number of retained messages, `$SYS` included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Number of retained messages on topics other than `$SYS/...`.
    pub(crate) fn user_len(&self) -> usize {
        self.user_len
    }

    /// Payload bytes of the retained messages on topics other than `$SYS/...`.
    pub(crate) fn user_bytes(&self) -> usize {
        self.user_bytes
    }

    /// Whether `topic` has a retained message.
    pub(crate) fn contains(&self, topic: &str) -> bool {
        let mut node = &self.root;
        for level in topic.split('/') {
            match node.children.get(level) {
                Some(n) => node = n,
                None => return false,
            }
        }
        node.msg.is_some()
    }

    /// Calls `f` for every retained message matching `filter`. Wildcards at the first level
    /// do not match topics starting with `$` [MQTT-4.7.2-1].
    pub(crate) fn for_each_match(&self, filter: &str, mut f: impl FnMut(&Arc<Message>)) {
        let levels: Vec<&str> = filter.split('/').collect();
        Self::walk(&self.root, &levels, true, &mut f);
    }

    fn walk(node: &Node, levels: &[&str], first: bool, f: &mut impl FnMut(&Arc<Message>)) {
        let Some((&level, rest)) = levels.split_first() else {
            if let Some(m) = &node.msg {
                f(m);
            }
            return;
        };
        match level {
            "#" => {
                // `a/#` also matches `a` itself.
                if let Some(m) = &node.msg {
                    if !first {
                        f(m);
                    }
                }
                for (name, child) in &node.children {
                    if first && name.starts_with('$') {
                        continue;
                    }
                    Self::all(child, f);
                }
            }
            "+" => {
                for (name, child) in &node.children {
                    if first && name.starts_with('$') {
                        continue;
                    }
                    Self::walk(child, rest, false, f);
                }
            }
            _ => {
                if let Some(child) = node.children.get(level) {
                    Self::walk(child, rest, false, f);
                }
            }
        }
    }

    fn all(node: &Node, f: &mut impl FnMut(&Arc<Message>)) {
        if let Some(m) = &node.msg {
            f(m);
        }
        for child in node.children.values() {
            Self::all(child, f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Instant;
    use uringmq_codec::{PublishProperties, QoS};

    fn m(topic: &str, payload: &'static [u8]) -> Arc<Message> {
        Arc::new(Message {
            topic: topic.into(),
            payload: Bytes::from_static(payload),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: PublishProperties::default(),
            origin: None,
            received_at: Instant::now(),
        })
    }

    fn matching(s: &RetainedStore, filter: &str) -> Vec<String> {
        let mut v = Vec::new();
        s.for_each_match(filter, |m| v.push(m.topic.to_string()));
        v.sort();
        v
    }

    #[test]
    fn set_replace_delete_and_match() {
        let mut s = RetainedStore::default();
        s.set(m("a/b", b"1"));
        s.set(m("a/b", b"2"));
        s.set(m("a", b"x"));
        s.set(m("a/c/d", b"y"));
        s.set(m("$SYS/x", b"z"));
        assert_eq!(s.len(), 4);
        assert_eq!(matching(&s, "a/#"), ["a", "a/b", "a/c/d"]);
        assert_eq!(matching(&s, "a/+"), ["a/b"]);
        assert_eq!(
            matching(&s, "#"),
            ["a", "a/b", "a/c/d"],
            "no $ topics for wildcards"
        );
        assert_eq!(matching(&s, "$SYS/#"), ["$SYS/x"]);
        assert_eq!(matching(&s, "+/+/d"), ["a/c/d"]);
        s.set(m("a/b", b""));
        assert_eq!(s.len(), 3);
        assert!(!s.contains("a/b"));
        s.set(m("a/c/d", b""));
        assert_eq!(matching(&s, "a/#"), ["a"]);
        s.set(m("nothing/here", b""));
        assert_eq!(s.len(), 2);
        assert_eq!((s.user_len(), s.user_bytes()), (1, 1), "only `a` = x");
        s.set(m("$SYS/x", b"zz"));
        s.set(m("a", b"xyz"));
        assert_eq!((s.len(), s.user_len(), s.user_bytes()), (2, 1, 3));
        s.set(m("$SYS/x", b""));
        assert_eq!((s.len(), s.user_len()), (1, 1));
    }
}
