//! Topic names: what a PUBLISH is sent to.

use crate::TopicError;

/// Longest topic name or filter: MQTT strings carry a 16-bit byte length.
pub const MAX_TOPIC_LEN: usize = 65_535;

/// Checks a PUBLISH topic name: non-empty [MQTT-4.7.3-1], at most 65535 bytes [MQTT-4.7.3-3],
/// no U+0000 [MQTT-4.7.3-2], no `+` or `#` [MQTT-4.7.1-1] [MQTT-3.3.2-2].
///
/// Names starting with `$` are valid here; whether a client may publish to `$SYS/...` is the
/// broker's policy, not a syntax rule.
pub fn validate_topic_name(topic: &str) -> Result<(), TopicError> {
    check_string(topic)?;
    if memchr::memchr2(b'+', b'#', topic.as_bytes()).is_some() {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Rules shared by topic names and filters (section 4.7.3).
pub(crate) fn check_string(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong { len: topic.len() });
    }
    if memchr::memchr(0, topic.as_bytes()).is_some() {
        return Err(TopicError::NullCharacter);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in [
            "a",
            "/",
            "//",
            "a/b/c",
            "$SYS/broker/uptime",
            " ",
            "é/ü",
            "a b/c",
        ] {
            assert_eq!(validate_topic_name(name), Ok(()), "{name:?}");
        }
    }

    #[test]
    fn refuses_empty_name() {
        let err = validate_topic_name("").unwrap_err();
        assert_eq!(err, TopicError::Empty);
        assert!(err.to_string().contains("[MQTT-4.7.3-1]"));
    }

    #[test]
    fn refuses_wildcards_anywhere() {
        for name in ["+", "#", "a/+", "a/#", "a+b", "sport#", "+/x"] {
            let err = validate_topic_name(name).unwrap_err();
            assert_eq!(err, TopicError::WildcardInName, "{name:?}");
            assert!(err.to_string().contains("[MQTT-4.7.1-1]"));
            assert!(err.to_string().contains("[MQTT-3.3.2-2]"));
        }
    }

    #[test]
    fn refuses_null_character() {
        let err = validate_topic_name("a/\0/b").unwrap_err();
        assert_eq!(err, TopicError::NullCharacter);
        assert!(err.to_string().contains("[MQTT-4.7.3-2]"));
    }

    #[test]
    fn length_limit_is_in_bytes() {
        assert_eq!(validate_topic_name(&"a".repeat(MAX_TOPIC_LEN)), Ok(()));
        let err = validate_topic_name(&"a".repeat(MAX_TOPIC_LEN + 1)).unwrap_err();
        assert_eq!(
            err,
            TopicError::TooLong {
                len: MAX_TOPIC_LEN + 1
            }
        );
        assert!(err.to_string().contains("[MQTT-4.7.3-3]"));
        // 2-byte characters: 32768 of them are 65536 bytes.
        assert!(validate_topic_name(&"é".repeat(32_768)).is_err());
    }
}
