//! A session's subscriptions (filter -> options), kept so that a persistent session can be
//! resumed, moved to another core, or removed from the indexes when it ends.

use crate::delivery::SubOptions;
use std::collections::HashMap;
use uringmq_topic::SmallStr;

/// The subscriptions of one session. Shared subscriptions are stored under their full
/// `$share/group/filter`.
///
/// Boxed, and absent until the first subscription: a publisher-only session then carries 8
/// bytes instead of a map and a byte count (`Session` stays in its size class). A session
/// with one subscription (a device and its command topic) keeps just that filter, in a
/// 32-byte box, the filter inside it when it has up to 15 bytes: a hash map for one entry
/// cost 233 bytes, a boxed filter string 16-32 more. Only SUBSCRIBE, UNSUBSCRIBE and session
/// moves look here; deliveries go through the indexes.
#[derive(Clone, Debug, Default)]
pub struct Subscriptions(Option<Box<Filters>>);

#[derive(Clone, Debug)]
enum Filters {
    One(SmallStr, SubOptions),
    Many(Box<Map>),
}

#[derive(Clone, Debug, Default)]
struct Map {
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
    /// Bytes of the box a session's subscriptions take while there is one (a filter of over
    /// 15 bytes aside): the broker's memory accounting, `idle_path_sizes`.
    #[doc(hidden)]
    pub const BOX_SIZE: usize = std::mem::size_of::<Filters>();

    /// Adds or replaces [MQTT-3.8.4-3] a subscription; returns whether it is new. A
    /// replacement never counts against the limits.
    pub fn insert(
        &mut self,
        filter: &str,
        opts: SubOptions,
        limits: SubLimits,
    ) -> Result<bool, OverQuota> {
        if let Some(old) = self.get_mut(filter) {
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
        let mut many = match self.0.take().map(|f| *f) {
            None => {
                self.0 = Some(Box::new(Filters::One(filter.into(), opts)));
                return Ok(true);
            }
            Some(Filters::One(first, first_opts)) => {
                let mut m = Box::<Map>::default();
                m.map.insert(first.to_string(), first_opts);
                m
            }
            Some(Filters::Many(m)) => m,
        };
        many.map.insert(filter.to_owned(), opts);
        many.bytes = bytes;
        self.0 = Some(Box::new(Filters::Many(many)));
        Ok(true)
    }

    fn get_mut(&mut self, filter: &str) -> Option<&mut SubOptions> {
        match self.0.as_deref_mut()? {
            Filters::One(f, o) => (**f == *filter).then_some(o),
            Filters::Many(m) => m.map.get_mut(filter),
        }
    }

    /// Removes a subscription; returns its options if it existed. The last one frees the map,
    /// and a map left with one filter goes back to holding just that one.
    pub fn remove(&mut self, filter: &str) -> Option<SubOptions> {
        let (removed, left) = match self.0.as_deref_mut()? {
            Filters::One(f, o) => ((**f == *filter).then_some(*o)?, 0),
            Filters::Many(m) => {
                let removed = m.map.remove(filter)?;
                m.bytes -= filter.len();
                (removed, m.map.len())
            }
        };
        if left <= 1 {
            self.0 = match self.0.take().map(|f| *f) {
                Some(Filters::Many(mut m)) => m
                    .map
                    .drain()
                    .next()
                    .map(|(f, o)| Box::new(Filters::One(f.as_str().into(), o))),
                _ => None,
            };
        }
        Some(removed)
    }

    /// Bytes of all filters.
    pub fn bytes(&self) -> usize {
        match self.0.as_deref() {
            None => 0,
            Some(Filters::One(f, _)) => f.len(),
            Some(Filters::Many(m)) => m.bytes,
        }
    }

    /// The options of `filter`.
    pub fn get(&self, filter: &str) -> Option<&SubOptions> {
        match self.0.as_deref()? {
            Filters::One(f, o) => (**f == *filter).then_some(o),
            Filters::Many(m) => m.map.get(filter),
        }
    }

    /// Number of subscriptions.
    pub fn len(&self) -> usize {
        match self.0.as_deref() {
            None => 0,
            Some(Filters::One(..)) => 1,
            Some(Filters::Many(m)) => m.map.len(),
        }
    }

    /// No subscriptions.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Every (filter, options).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &SubOptions)> {
        let (one, many) = match self.0.as_deref() {
            None => (None, None),
            Some(Filters::One(f, o)) => (Some((&**f, o)), None),
            Some(Filters::Many(m)) => (None, Some(&m.map)),
        };
        let many = many.into_iter().flatten().map(|(f, o)| (f.as_str(), o));
        one.into_iter().chain(many)
    }
}

// A session with one subscription pays this box (and a filter of over 15 bytes).
const _: () = assert!(std::mem::size_of::<Filters>() <= 32);

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
    fn one_filter_grows_into_a_map_and_back() {
        let mut s = Subscriptions::default();
        let l = limits(0, 0);
        assert_eq!(s.insert("a/b", SubOptions::default(), l), Ok(true));
        assert_eq!(s.insert("c", SubOptions::default(), l), Ok(true));
        assert_eq!((s.len(), s.bytes()), (2, 4));
        let mut all: Vec<&str> = s.iter().map(|(f, _)| f).collect();
        all.sort();
        assert_eq!(all, ["a/b", "c"]);
        assert!(s.remove("a/b").is_some());
        assert_eq!((s.len(), s.bytes()), (1, 1));
        assert!(matches!(s.0.as_deref(), Some(Filters::One(..))));
        assert_eq!(s.iter().map(|(f, _)| f).collect::<Vec<_>>(), ["c"]);
        assert!(s.remove("a/b").is_none());
        assert!(s.remove("c").is_some());
        assert!(s.is_empty() && s.0.is_none());
        // A filter too long to sit in the box beside its options.
        let long = "devices/0123456789abcdef/cmd";
        assert_eq!(s.insert(long, SubOptions::default(), l), Ok(true));
        assert_eq!(
            (s.len(), s.bytes(), s.get(long).is_some()),
            (1, long.len(), true)
        );
        assert_eq!(s.iter().map(|(f, _)| f).collect::<Vec<_>>(), [long]);
        assert!(s.remove(long).is_some() && s.is_empty());
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
