//! `$share/{ShareName}/{filter}`: the MQTT 5 shared-subscription syntax (section 4.8.2).

use crate::levels::split_level;
use crate::name::check_string;
use crate::{validate_topic_filter, TopicError};

/// The first level that marks a shared subscription.
pub const SHARE_PREFIX_LEVEL: &str = "$share";

/// A parsed shared-subscription filter, borrowing from the SUBSCRIBE packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedFilter<'a> {
    /// The ShareName: members of one group with one filter share its messages.
    pub group: &'a str,
    /// The topic filter messages are matched against (without the `$share/{group}/` prefix).
    pub filter: &'a str,
}

impl<'a> SharedFilter<'a> {
    /// Parses a SUBSCRIBE filter. `Ok(None)` when its first level is not exactly `$share`
    /// (so `$shared/x` and `$SYS/#` are ordinary filters); otherwise checks that a ShareName of at
    /// least one character follows [MQTT-4.8.2-1], that it has no `+` or `#` [MQTT-4.8.2-2], and
    /// that a `/` and a valid topic filter follow it [MQTT-4.8.2-2].
    ///
    /// MQTT 3.1.1 has no shared subscriptions: on a 3.1.1 connection the broker may treat
    /// `$share/...` as an ordinary filter (as Mosquitto does) instead of calling this.
    pub fn parse(subscription: &'a str) -> Result<Option<Self>, TopicError> {
        check_string(subscription)?;
        let (first, rest) = split_level(subscription);
        if first != SHARE_PREFIX_LEVEL {
            return Ok(None);
        }
        let rest = rest.ok_or(TopicError::MissingShareName)?;
        let (group, filter) = split_level(rest);
        validate_share_name(group)?;
        let filter = match filter {
            None | Some("") => return Err(TopicError::MissingSharedFilter),
            Some(filter) => filter,
        };
        validate_topic_filter(filter)?;
        Ok(Some(Self { group, filter }))
    }
}

/// ShareName rules: at least one character [MQTT-4.8.2-1]; no `/`, `+` or `#` [MQTT-4.8.2-2].
pub(crate) fn validate_share_name(group: &str) -> Result<(), TopicError> {
    if group.is_empty() {
        return Err(TopicError::MissingShareName);
    }
    if memchr::memchr3(b'/', b'+', b'#', group.as_bytes()).is_some() {
        return Err(TopicError::InvalidShareName);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Option<(&str, &str)>, TopicError> {
        SharedFilter::parse(s).map(|o| o.map(|f| (f.group, f.filter)))
    }

    #[test]
    fn parses_group_and_filter() {
        assert_eq!(parse("$share/g/a/b"), Ok(Some(("g", "a/b"))));
        assert_eq!(parse("$share/g/#"), Ok(Some(("g", "#"))));
        assert_eq!(parse("$share/g/+/x"), Ok(Some(("g", "+/x"))));
        assert_eq!(parse("$share/g//"), Ok(Some(("g", "/"))));
        assert_eq!(parse("$share/g/$SYS/#"), Ok(Some(("g", "$SYS/#"))));
    }

    #[test]
    fn ordinary_filters_are_not_shared() {
        for filter in [
            "a/b",
            "#",
            "$SYS/#",
            "$shared/g/a",
            "$SHARE/g/a",
            "share/g/a",
        ] {
            assert_eq!(parse(filter), Ok(None), "{filter:?}");
        }
    }

    #[test]
    fn share_name_must_be_present() {
        for filter in ["$share", "$share/", "$share//a"] {
            let err = parse(filter).unwrap_err();
            assert_eq!(err, TopicError::MissingShareName, "{filter:?}");
            assert!(err.to_string().contains("[MQTT-4.8.2-1]"));
        }
    }

    #[test]
    fn share_name_must_not_hold_wildcards() {
        for filter in ["$share/+/a", "$share/g#/a", "$share/a+b/x"] {
            let err = parse(filter).unwrap_err();
            assert_eq!(err, TopicError::InvalidShareName, "{filter:?}");
            assert!(err.to_string().contains("[MQTT-4.8.2-2]"));
        }
    }

    #[test]
    fn share_name_must_be_followed_by_a_filter() {
        for filter in ["$share/g", "$share/g/"] {
            let err = parse(filter).unwrap_err();
            assert_eq!(err, TopicError::MissingSharedFilter, "{filter:?}");
            assert!(err.to_string().contains("[MQTT-4.8.2-2]"));
        }
    }

    #[test]
    fn inner_filter_is_validated() {
        assert_eq!(
            parse("$share/g/a/#/b"),
            Err(TopicError::MultiLevelWildcardNotLast)
        );
        assert_eq!(
            parse("$share/g/a+"),
            Err(TopicError::SingleLevelWildcardNotWholeLevel)
        );
        assert_eq!(parse("$share/g/\0"), Err(TopicError::NullCharacter));
    }

    #[test]
    fn share_name_rules_apply_directly() {
        assert_eq!(validate_share_name("g"), Ok(()));
        assert_eq!(validate_share_name(""), Err(TopicError::MissingShareName));
        assert_eq!(
            validate_share_name("a/b"),
            Err(TopicError::InvalidShareName)
        );
    }
}
