//! The reference matcher: one filter against one topic name, written for obviousness rather
//! than speed. The index and the retained store are tested against it.

/// Whether `topic` (a valid topic name) matches `filter` (a valid topic filter).
///
/// `+` matches exactly one level (including an empty one), `#` matches any number of trailing
/// levels including none, so `a/#` matches `a` [MQTT-4.7.1-2]. A filter whose first level is a
/// wildcard never matches a topic starting with `$` [MQTT-4.7.2-1].
///
/// A wildcard in a position the spec forbids (`a/#/b`, `a+`) is compared literally, which never
/// matches a valid topic name; the index and retained store behave the same way.
pub fn matches(filter: &str, topic: &str) -> bool {
    let first = filter.split('/').next().unwrap_or_default();
    if topic.starts_with('$') && (first == "+" || first == "#") {
        return false;
    }
    let mut filter_levels = filter.split('/').peekable();
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) if filter_levels.peek().is_none() => return true,
            (Some(f), Some(t)) => {
                if f != "+" && f != t {
                    return false;
                }
            }
            (None, None) => return true,
            (Some(_), None) | (None, Some(_)) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn literal_levels_match_exactly() {
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a/c"));
        assert!(!matches("a/b", "a"));
        assert!(!matches("a", "a/b"));
        assert!(!matches("a/b", "a/b/"));
        assert!(matches("/", "/"));
        assert!(!matches("a", "A"));
    }

    #[test]
    fn single_level_wildcard_matches_one_level() {
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+", "a"));
        assert!(!matches("+", "/a"));
        assert!(matches("+/+", "/a"));
        assert!(matches("/+", "/a"));
        assert!(matches("+/+", "/"));
    }

    #[test]
    fn multi_level_wildcard_matches_parent_and_descendants() {
        assert!(matches("sport/#", "sport"));
        assert!(matches("sport/#", "sport/"));
        assert!(matches("sport/#", "sport/tennis/player1"));
        assert!(!matches("sport/#", "sports"));
        assert!(matches("#", "a/b/c"));
        assert!(matches("#", "/"));
        assert!(matches("+/#", "a"));
        assert!(matches("a/+/#", "a/b"));
        assert!(!matches("a/+/#", "a"));
    }

    #[test]
    fn dollar_topics_are_not_matched_by_leading_wildcards() {
        // [MQTT-4.7.2-1]
        assert!(!matches("#", "$SYS/uptime"));
        assert!(!matches("+/uptime", "$SYS/uptime"));
        assert!(!matches("+", "$SYS"));
        assert!(matches("$SYS/#", "$SYS/uptime"));
        assert!(matches("$SYS/+", "$SYS/uptime"));
        assert!(matches("$SYS", "$SYS"));
        // Only the first level is special.
        assert!(matches("a/+", "a/$x"));
        assert!(matches("a/#", "a/$x/y"));
    }

    #[test]
    fn misplaced_wildcards_are_literal() {
        assert!(!matches("a/#/b", "a/x/b"));
        assert!(!matches("a+", "ab"));
    }
}
