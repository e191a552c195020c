//! The retained messages of one core (its replica of the store, see ARCHITECTURE.md): the
//! topic-level trie is `uringmq_topic::RetainedStore` (a wildcard SUBSCRIBE visits only the
//! branches its filter can match), holding `Arc<Message>` so a replica costs trie nodes, not
//! payload copies. This adds what the broker counts: the messages and payload bytes of user
//! topics, because `$SYS/...` is the broker's own and counts against neither the stats nor
//! `max_retained_messages`.

use std::sync::Arc;
use tracing::debug;
use uringmq_session::Message;

/// Retained messages by topic, with the user counts.
pub(crate) struct RetainedStore {
    trie: uringmq_topic::RetainedStore<Arc<Message>>,
    /// Messages and payload bytes of topics other than the broker's own `$SYS/...`.
    user_len: usize,
    user_bytes: usize,
}

/// Whether `topic` is one of the broker's own (`ops/sys_topics.rs`).
fn is_sys(topic: &str) -> bool {
    topic.starts_with("$SYS/")
}

impl RetainedStore {
    /// An empty store for topics of up to `max_levels` levels (`max_topic_levels`).
    pub(crate) fn new(max_levels: usize) -> Self {
        Self {
            trie: uringmq_topic::RetainedStore::with_max_levels(max_levels),
            user_len: 0,
            user_bytes: 0,
        }
    }

    /// Stores (non-empty payload) or deletes (empty payload) the retained message of its topic
    /// [MQTT-3.3.1-5] [MQTT-3.3.1-6].
    pub(crate) fn set(&mut self, msg: Arc<Message>) {
        let user = !is_sys(&msg.topic);
        let topic = msg.topic.clone();
        let added = (!msg.payload.is_empty()).then_some(msg.payload.len());
        let old = match added {
            None => self.trie.remove(&topic),
            Some(_) => match self.trie.insert(&topic, msg) {
                Ok(old) => old,
                // The broker checked the topic before; a topic the store refuses is not kept.
                Err(err) => {
                    debug!(%topic, %err, "not retained");
                    return;
                }
            },
        };
        if user {
            let old_bytes = old.as_ref().map_or(0, |m| m.payload.len());
            self.user_bytes = self.user_bytes + added.unwrap_or(0) - old_bytes;
            self.user_len =
                self.user_len + usize::from(added.is_some()) - usize::from(old.is_some());
        }
    }

    /// Number of retained messages, `$SYS` included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.trie.len()
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
        self.trie.get(topic).is_some()
    }

    /// Calls `f` for every retained message matching `filter`. Wildcards at the first level
    /// do not match topics starting with `$` [MQTT-4.7.2-1].
    pub(crate) fn for_each_match(&self, filter: &str, mut f: impl FnMut(&Arc<Message>)) {
        self.trie.for_each_match(filter, |_, m| f(m));
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
        let mut s = RetainedStore::new(8);
        s.set(m("a/b", b"1"));
        s.set(m("a/b", b"2"));
        s.set(m("a", b"x"));
        s.set(m("a/c/d", b"y"));
        s.set(m("$SYS/x", b"z"));
        assert_eq!(s.len(), 4);
        assert_eq!(matching(&s, "a/#"), ["a", "a/b", "a/c/d"]);
        assert_eq!(matching(&s, "#"), ["a", "a/b", "a/c/d"], "no $ topics");
        assert_eq!(matching(&s, "$SYS/#"), ["$SYS/x"]);
        s.set(m("a/b", b""));
        assert_eq!(s.len(), 3);
        assert!(!s.contains("a/b") && s.contains("a"));
        s.set(m("a/c/d", b""));
        s.set(m("nothing/here", b""));
        assert_eq!(s.len(), 2);
        assert_eq!((s.user_len(), s.user_bytes()), (1, 1), "only `a` = x");
        s.set(m("$SYS/x", b"zz"));
        s.set(m("a", b"xyz"));
        assert_eq!((s.len(), s.user_len(), s.user_bytes()), (2, 1, 3));
        s.set(m("$SYS/x", b""));
        assert_eq!((s.len(), s.user_len()), (1, 1));
    }

    #[test]
    fn a_topic_over_the_level_limit_is_not_kept() {
        let mut s = RetainedStore::new(2);
        s.set(m("a/b/c", b"deep"));
        assert_eq!((s.len(), s.user_len(), s.user_bytes()), (0, 0, 0));
    }
}
