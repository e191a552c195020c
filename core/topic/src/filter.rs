//! Topic filters: what a SUBSCRIBE asks for, with `+` and `#` wildcards.

use crate::name::check_string;
use crate::TopicError;

/// Checks a SUBSCRIBE topic filter: non-empty [MQTT-4.7.3-1], at most 65535 bytes
/// [MQTT-4.7.3-3], no U+0000 [MQTT-4.7.3-2], `#` only as the whole last level [MQTT-4.7.1-2],
/// `+` only as a whole level [MQTT-4.7.1-3]. Empty levels (`a//b`, `/`) are valid.
///
/// `$share/...` is an ordinary filter here; use [`crate::SharedFilter::parse`] first on MQTT 5
/// connections, where the first level `$share` introduces a shared subscription.
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    check_string(filter)?;
    if memchr::memchr2(b'+', b'#', filter.as_bytes()).is_none() {
        return Ok(());
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::MultiLevelWildcardNotLast);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::SingleLevelWildcardNotWholeLevel);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_filters() {
        for filter in [
            "a",
            "#",
            "+",
            "/",
            "a/#",
            "a/+",
            "+/+",
            "+/#",
            "/#",
            "a//b",
            "//",
            "$SYS/#",
            "+/a/#",
            "sport/tennis/+",
            "a/+/b/+/c/#",
        ] {
            assert_eq!(validate_topic_filter(filter), Ok(()), "{filter:?}");
        }
    }

    #[test]
    fn refuses_misplaced_multi_level_wildcard() {
        for filter in ["a/#/b", "#/a", "a#", "a/b#", "#a", "##", "a/#/#"] {
            let err = validate_topic_filter(filter).unwrap_err();
            assert_eq!(err, TopicError::MultiLevelWildcardNotLast, "{filter:?}");
            assert!(err.to_string().contains("[MQTT-4.7.1-2]"));
        }
    }

    #[test]
    fn refuses_partial_level_single_wildcard() {
        for filter in ["a+", "+a", "a/b+/c", "++", "sport+"] {
            let err = validate_topic_filter(filter).unwrap_err();
            assert_eq!(
                err,
                TopicError::SingleLevelWildcardNotWholeLevel,
                "{filter:?}"
            );
            assert!(err.to_string().contains("[MQTT-4.7.1-3]"));
        }
    }

    #[test]
    fn refuses_empty_null_and_long() {
        assert_eq!(validate_topic_filter(""), Err(TopicError::Empty));
        assert_eq!(
            validate_topic_filter("a/\0"),
            Err(TopicError::NullCharacter)
        );
        assert_eq!(
            validate_topic_filter(&"+/".repeat(40_000)),
            Err(TopicError::TooLong { len: 80_000 })
        );
    }
}
