//! A session's subscriptions (filter -> options), kept so that a persistent session can be
//! resumed, moved to another core, or removed from the indexes when it ends.

use crate::delivery::SubOptions;
use std::collections::HashMap;

/// The subscriptions of one session. Shared subscriptions are stored under their full
/// `$share/group/filter`.
///
/// Boxed, and absent until the first subscription: a publisher-only session then carries 8
/// bytes instead of a map and a byte count (`Session` stays in its 256-byte class). Only
/// SUBSCRIBE, UNSUBSCRIBE and session moves look here; deliveries go through the indexes.
#[derive(Clone, Debug, Default)]
pub struct Subscriptions(Option<Box<Filters>>);

#[derive(Clone, Debug, Default)]
struct Filters {
    map: HashMap<String, SubOptions, crate::hasher::Seeded>,
    /// Bytes of all filters, for [`SubLimits::bytes`].
    bytes: usize,
}

/// How much one session may subscribe to (0: unlimited): `max_subscriptions_per_client` and
/// `max_subscription_bytes_per_client`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubLimits {
    /// Number of filters.
    pub count: usize,
    /// Bytes of all filters together. The broker keeps each filter in its core's index and
    /// (once per filter) in every core's interest index, so the count alone does not bound
    /// the memory a client's subscriptions take.
    pub bytes: usize,
}

/// Adding a subscription would exceed one of the [`SubLimits`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OverQuota {
    /// `max_subscriptions_per_client`.
    #[error("subscription limit of {0} reached")]
    Count(usize),
    /// `max_subscription_bytes_per_client`.
    #[error("subscriptions would take more than {0} bytes of filters")]
    Bytes(usize),
}

impl Subscriptions {
    /// Adds or replaces [MQTT-3.8.4-3] a subscription; returns whether it is new. A
    /// replacement never counts against the limits.
    pub fn insert(
        &mut self,
        filter: &str,
        opts: SubOptions,
        limits: SubLimits,
    ) -> Result<bool, OverQuota> {
        if let Some(old) = self.0.as_mut().and_then(|f| f.map.get_mut(filter)) {
            *old = opts;
            return Ok(false);
        }
        if limits.count != 0 && self.len() >= limits.count {
            return Err(OverQuota::Count(limits.count));
        }
        let bytes = self.bytes() + filter.len();
        if limits.bytes != 0 && bytes > limits.bytes {
            return Err(OverQuota::Bytes(limits.bytes));
        }
        let f = self.0.get_or_insert_with(Default::default);
        f.map.insert(filter.to_owned(), opts);
        f.bytes = bytes;
        Ok(true)
    }

    /// Removes a subscription; returns its options if it existed. The last one frees the map.
    pub fn remove(&mut self, filter: &str) -> Option<SubOptions> {
        let f = self.0.as_mut()?;
        let removed = f.map.remove(filter)?;
        f.bytes -= filter.len();
        if f.map.is_empty() {
            self.0 = None;
        }
        Some(removed)
    }

    /// Bytes of all filters.
    pub fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |f| f.bytes)
    }

    /// The options of `filter`.
    pub fn get(&self, filter: &str) -> Option<&SubOptions> {
        self.0.as_ref()?.map.get(filter)
    }

    /// Number of subscriptions.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |f| f.map.len())
    }

    /// No subscriptions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every (filter, options).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &SubOptions)> {
        let map = self.0.as_ref().map(|f| &f.map);
        map.into_iter().flatten().map(|(f, o)| (f.as_str(), o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uringmq_codec::QoS;

    fn limits(count: usize, bytes: usize) -> SubLimits {
        SubLimits { count, bytes }
    }

    #[test]
    fn replace_does_not_count_against_the_limit() {
        let mut s = Subscriptions::default();
        assert_eq!(s.insert("a", SubOptions::default(), limits(1, 0)), Ok(true));
        let q1 = SubOptions {
            qos: QoS::AtLeastOnce,
            ..Default::default()
        };
        assert_eq!(s.insert("a", q1, limits(1, 0)), Ok(false));
        assert_eq!(s.get("a").unwrap().qos, QoS::AtLeastOnce);
        assert_eq!(
            s.insert("b", SubOptions::default(), limits(1, 0)),
            Err(OverQuota::Count(1))
        );
        assert!(s.remove("a").is_some());
        assert!(s.remove("a").is_none());
        assert!(s.is_empty());
    }

    #[test]
    fn filter_bytes_are_bounded_and_given_back() {
        let mut s = Subscriptions::default();
        let l = limits(0, 10);
        assert_eq!(s.insert("abcd", SubOptions::default(), l), Ok(true));
        assert_eq!(s.insert("efghij", SubOptions::default(), l), Ok(true));
        assert_eq!(s.bytes(), 10);
        assert_eq!(
            s.insert("k", SubOptions::default(), l),
            Err(OverQuota::Bytes(10))
        );
        // Replacing an existing filter costs nothing.
        assert_eq!(s.insert("abcd", SubOptions::default(), l), Ok(false));
        assert!(s.remove("efghij").is_some());
        assert_eq!(s.bytes(), 4);
        assert_eq!(s.insert("k", SubOptions::default(), l), Ok(true));
    }
}
