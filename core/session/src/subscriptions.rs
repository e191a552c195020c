//! A session's subscriptions (filter -> options), kept so that a persistent session can be
//! resumed, moved to another core, or removed from the indexes when it ends.

use crate::delivery::SubOptions;
use std::collections::HashMap;

/// The subscriptions of one session. Shared subscriptions are stored under their full
/// `$share/group/filter`.
#[derive(Clone, Debug, Default)]
pub struct Subscriptions {
    map: HashMap<String, SubOptions, crate::hasher::Seeded>,
}

/// Adding a subscription would exceed `max_subscriptions_per_client`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("subscription limit of {0} reached")]
pub struct TooMany(pub usize);

impl Subscriptions {
    /// Adds or replaces [MQTT-3.8.4-3] a subscription; returns whether it is new. `max` of 0 is
    /// unlimited.
    pub fn insert(&mut self, filter: &str, opts: SubOptions, max: usize) -> Result<bool, TooMany> {
        if let Some(old) = self.map.get_mut(filter) {
            *old = opts;
            return Ok(false);
        }
        if max != 0 && self.map.len() >= max {
            return Err(TooMany(max));
        }
        self.map.insert(filter.to_owned(), opts);
        Ok(true)
    }

    /// Removes a subscription; returns its options if it existed.
    pub fn remove(&mut self, filter: &str) -> Option<SubOptions> {
        self.map.remove(filter)
    }

    /// The options of `filter`.
    pub fn get(&self, filter: &str) -> Option<&SubOptions> {
        self.map.get(filter)
    }

    /// Number of subscriptions.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// No subscriptions.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every (filter, options).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &SubOptions)> {
        self.map.iter().map(|(f, o)| (f.as_str(), o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uringmq_codec::QoS;

    #[test]
    fn replace_does_not_count_against_the_limit() {
        let mut s = Subscriptions::default();
        assert_eq!(s.insert("a", SubOptions::default(), 1), Ok(true));
        let q1 = SubOptions {
            qos: QoS::AtLeastOnce,
            ..Default::default()
        };
        assert_eq!(s.insert("a", q1, 1), Ok(false));
        assert_eq!(s.get("a").unwrap().qos, QoS::AtLeastOnce);
        assert_eq!(s.insert("b", SubOptions::default(), 1), Err(TooMany(1)));
        assert!(s.remove("a").is_some());
        assert!(s.remove("a").is_none());
        assert!(s.is_empty());
    }
}
