//! Topic levels: counting them, bounding them, and splitting off the first one.

use crate::TopicError;

/// Default bound on topic levels, as Mosquitto's `TOPIC_HIERARCHY_LIMIT` (200).
///
/// The spec sets no limit, but every trie walk here (matching, pruning, dropping) recurses once
/// per level, so without a bound a 64 KiB topic of slashes would be a 65536-deep recursion
/// (Mosquitto 1.6.6 fixed a stack overflow caused by exactly that input).
pub const DEFAULT_MAX_LEVELS: usize = 200;

/// Number of levels in a topic name or filter: one more than the number of `/`.
/// `"/"` has two (empty) levels, `"a"` has one.
pub fn level_count(topic: &str) -> usize {
    memchr::memchr_iter(b'/', topic.as_bytes()).count() + 1
}

/// Refuses topics with more than `max` levels; the broker applies it to PUBLISH topic names and
/// SUBSCRIBE filters alike.
pub fn check_max_levels(topic: &str, max: usize) -> Result<(), TopicError> {
    let levels = level_count(topic);
    if levels > max {
        return Err(TopicError::TooManyLevels { levels, max });
    }
    Ok(())
}

/// Splits `"a/b/c"` into `("a", Some("b/c"))` and `"c"` into `("c", None)`; the walks use it so
/// they never allocate a level list.
#[inline]
pub(crate) fn split_level(topic: &str) -> (&str, Option<&str>) {
    match topic.split_once('/') {
        Some((level, rest)) => (level, Some(rest)),
        None => (topic, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_levels_including_empty_ones() {
        assert_eq!(level_count("a"), 1);
        assert_eq!(level_count("/"), 2);
        assert_eq!(level_count("a/b/c"), 3);
        assert_eq!(level_count("a//"), 3);
    }

    #[test]
    fn bounds_levels() {
        assert_eq!(check_max_levels("a/b", 2), Ok(()));
        assert_eq!(
            check_max_levels("a/b/c", 2),
            Err(TopicError::TooManyLevels { levels: 3, max: 2 })
        );
    }

    #[test]
    fn splits_first_level() {
        assert_eq!(split_level("a/b/c"), ("a", Some("b/c")));
        assert_eq!(split_level("c"), ("c", None));
        assert_eq!(split_level("/"), ("", Some("")));
    }
}
