//! v5 topic aliases, both directions.
//!
//! Inbound: the client maps aliases 1..=our Topic Alias Maximum to topics. Outbound: we map
//! topics to aliases 1..=the client's Topic Alias Maximum, replacing the least recently used
//! one when all are taken, so repeated topics cost two bytes instead of the whole name.
//!
//! The maps are made on first use and the maxima are arguments: the session keeps the two
//! maxima inline (every v5 session has them) and the maps in its box of rarely-set state
//! (`Session::rare`), few clients ever using an alias.

use std::collections::HashMap;
use uringmq_codec::ByteStr;

/// A topic alias the client used wrongly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AliasError {
    /// Alias 0 or above the Topic Alias Maximum we announced [MQTT-3.3.2-9].
    #[error("[MQTT-3.3.2-9] topic alias {0} exceeds the topic alias maximum")]
    OutOfRange(u16),
    /// An empty topic with an alias that was never set [§3.3.2.3.4].
    #[error("[§3.3.2.3.4] topic alias {0} is not mapped to a topic")]
    Unknown(u16),
}

/// Aliases the client set for its PUBLISH packets.
#[derive(Clone, Debug, Default)]
pub struct InboundAliases {
    /// Index alias - 1; grown to the highest alias the client set (boxed: the box of rare
    /// state holding this stays one pointer smaller).
    #[allow(clippy::box_collection)]
    map: Option<Box<Vec<Option<ByteStr>>>>,
}

impl InboundAliases {
    /// Resolves a PUBLISH's topic, accepting aliases `1..=max` (the Topic Alias Maximum sent
    /// in CONNACK): a non-empty topic with an alias sets the alias; an empty one uses it.
    pub fn resolve(
        &mut self,
        topic: ByteStr,
        alias: Option<u16>,
        max: u16,
    ) -> Result<ByteStr, AliasError> {
        let Some(alias) = alias else {
            return Ok(topic);
        };
        if alias == 0 || alias > max {
            return Err(AliasError::OutOfRange(alias));
        }
        let at = usize::from(alias - 1);
        if topic.is_empty() {
            return self
                .map
                .as_ref()
                .and_then(|m| m.get(at).cloned().flatten())
                .ok_or(AliasError::Unknown(alias));
        }
        let map = self.map.get_or_insert_with(Box::default);
        if map.len() <= at {
            map.resize(at + 1, None);
        }
        map[at] = Some(topic.clone());
        Ok(topic)
    }

    /// No alias set.
    pub fn is_empty(&self) -> bool {
        self.map.is_none()
    }

    /// The topic a PUBLISH names, its own or the one its alias stands for, without setting
    /// anything; `None` where [`InboundAliases::resolve`] would find no topic.
    pub fn peek(&self, topic: &ByteStr, alias: Option<u16>) -> Option<ByteStr> {
        if !topic.is_empty() {
            return Some(topic.clone());
        }
        let at = usize::from(alias?.checked_sub(1)?);
        self.map.as_ref()?.get(at)?.clone()
    }
}

/// Aliases we assigned for PUBLISH packets to the client. The maps are boxed and made on first
/// use.
#[derive(Clone, Debug, Default)]
pub struct OutboundAliases {
    used: Option<Box<OutboundMaps>>,
}

#[derive(Clone, Debug, Default)]
struct OutboundMaps {
    by_topic: HashMap<ByteStr, (u16, u64), crate::hasher::Seeded>,
    by_alias: Vec<ByteStr>,
    tick: u64,
}

impl OutboundAliases {
    /// No alias assigned.
    pub fn is_empty(&self) -> bool {
        self.used.is_none()
    }

    /// The alias to send `topic` with, among aliases `1..=max` (the client's Topic Alias
    /// Maximum): `(alias, true)` if the client already knows it (send an empty topic),
    /// `(alias, false)` if this packet sets it (send the topic too). `None` when aliases are
    /// disabled (`max` 0).
    pub fn alias_for(&mut self, topic: &ByteStr, max: u16) -> Option<(u16, bool)> {
        if max == 0 {
            return None;
        }
        let m = self.used.get_or_insert_with(Box::default);
        m.tick += 1;
        if let Some((alias, used)) = m.by_topic.get_mut(topic) {
            *used = m.tick;
            return Some((*alias, true));
        }
        let alias = if m.by_alias.len() < usize::from(max) {
            m.by_alias.push(topic.clone());
            m.by_alias.len() as u16
        } else {
            // Replace the least recently used alias.
            let (old_topic, alias) = m
                .by_topic
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(t, (a, _))| (t.clone(), *a))?;
            m.by_topic.remove(&old_topic);
            m.by_alias[usize::from(alias - 1)] = topic.clone();
            alias
        };
        m.by_topic.insert(topic.clone(), (alias, m.tick));
        Some((alias, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_set_then_use() {
        let mut a = InboundAliases::default();
        assert_eq!(a.resolve("x/y".into(), Some(1), 2).unwrap(), "x/y");
        assert_eq!(a.resolve("".into(), Some(1), 2).unwrap(), "x/y");
        assert_eq!(
            a.resolve("".into(), Some(2), 2),
            Err(AliasError::Unknown(2))
        );
        assert_eq!(
            a.resolve("z".into(), Some(3), 2),
            Err(AliasError::OutOfRange(3))
        );
        assert_eq!(a.resolve("z".into(), None, 2).unwrap(), "z");
        assert_eq!(a.resolve("w".into(), Some(1), 2).unwrap(), "w");
        assert_eq!(a.resolve("".into(), Some(1), 2).unwrap(), "w");
    }

    #[test]
    fn peek_names_the_topic_without_setting_it() {
        let mut a = InboundAliases::default();
        assert_eq!(a.peek(&"x".into(), Some(1)), Some("x".into()));
        assert_eq!(a.peek(&"".into(), Some(1)), None, "peeking set nothing");
        a.resolve("x".into(), Some(1), 2).unwrap();
        assert_eq!(a.peek(&"".into(), Some(1)), Some("x".into()));
        assert_eq!(a.peek(&"".into(), Some(0)), None);
        assert_eq!(a.peek(&"".into(), None), None);
    }

    #[test]
    fn disabled_inbound_rejects_every_alias() {
        let mut a = InboundAliases::default();
        assert_eq!(
            a.resolve("x".into(), Some(1), 0),
            Err(AliasError::OutOfRange(1))
        );
    }

    #[test]
    fn outbound_assigns_reuses_and_evicts_least_recent() {
        let mut o = OutboundAliases::default();
        let (a, b, c): (ByteStr, ByteStr, ByteStr) = ("a".into(), "b".into(), "c".into());
        assert_eq!(o.alias_for(&a, 2), Some((1, false)));
        assert_eq!(o.alias_for(&b, 2), Some((2, false)));
        assert_eq!(o.alias_for(&a, 2), Some((1, true)));
        // b is least recently used: c takes alias 2.
        assert_eq!(o.alias_for(&c, 2), Some((2, false)));
        assert_eq!(o.alias_for(&c, 2), Some((2, true)));
        assert_eq!(
            o.alias_for(&b, 2),
            Some((1, false)),
            "a is now the least recently used"
        );
        assert_eq!(OutboundAliases::default().alias_for(&a, 0), None);
    }
}
