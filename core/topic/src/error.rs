//! Why a topic name, topic filter or shared-subscription filter was refused.

use thiserror::Error;

/// A topic name or filter broke an MQTT rule (or a broker limit). Each message names the
/// conformance statement it enforces so that logs and reason strings point at the spec.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TopicError {
    /// Topic names and filters are at least one character long.
    #[error("[MQTT-4.7.3-1] topic names and topic filters must be at least one character long")]
    Empty,
    /// Topic names and filters are UTF-8 strings with a 16-bit length prefix.
    #[error(
        "[MQTT-4.7.3-3] topic is {len} bytes; topics must not encode to more than 65535 bytes"
    )]
    TooLong {
        /// Length of the refused string in bytes.
        len: usize,
    },
    /// U+0000 is forbidden in topic names and filters.
    #[error(
        "[MQTT-4.7.3-2] topic names and topic filters must not include the null character U+0000"
    )]
    NullCharacter,
    /// A topic name (the PUBLISH side) carried `+` or `#`.
    #[error(
        "[MQTT-4.7.1-1] [MQTT-3.3.2-2] a topic name must not contain the wildcard characters '+' or '#'"
    )]
    WildcardInName,
    /// `#` appeared somewhere other than as the whole last level.
    #[error(
        "[MQTT-4.7.1-2] the multi-level wildcard '#' must be on its own or follow a '/', and be the last character of the filter"
    )]
    MultiLevelWildcardNotLast,
    /// `+` shared a level with other characters.
    #[error(
        "[MQTT-4.7.1-3] the single-level wildcard '+' must occupy an entire level of the filter"
    )]
    SingleLevelWildcardNotWholeLevel,
    /// More levels than the broker accepts. Not a spec rule: it bounds trie depth (and so the
    /// recursion of matching and dropping) against hostile `a/a/a/...` topics.
    #[error("topic has {levels} levels; this broker accepts at most {max}")]
    TooManyLevels {
        /// Levels in the refused topic.
        levels: usize,
        /// Configured limit.
        max: usize,
    },
    /// `$share/` with no ShareName, or no `/` after it.
    #[error(
        "[MQTT-4.8.2-1] a shared subscription's filter must start with \"$share/\" and a ShareName of at least one character"
    )]
    MissingShareName,
    /// ShareName containing `+` or `#`.
    #[error("[MQTT-4.8.2-2] the ShareName must not contain the characters '/', '+' or '#'")]
    InvalidShareName,
    /// ShareName not followed by `/` and a topic filter.
    #[error("[MQTT-4.8.2-2] the ShareName must be followed by a '/' and a topic filter")]
    MissingSharedFilter,
}
