//! [`Violation`]: a packet from a connected client breaks a rule, and the connection must end.
//!
//! Like the codec's `DecodeError` (bytes that are no packet), each variant's Display starts with
//! the rule it breaks (`[MQTT-x.y.z-n]`, else the section `[§x.y.z]`, or the broker limit) and
//! [`Violation::reason_code`] says which reason code the broker's DISCONNECT carries (v5) before
//! it closes the connection [MQTT-4.13.1-1]; the Display is its Reason String and log line.

use crate::topic_alias::AliasError;
use uringmq_codec::ReasonCode;
use uringmq_topic::TopicError;

/// A rule the client broke; the broker closes the connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// A PUBLISH at a QoS above the Maximum QoS announced in CONNACK.
    #[error("[MQTT-3.2.2-11] QoS above Maximum QoS")]
    QosNotSupported,
    /// A PUBLISH with RETAIN set although CONNACK said retain is not available.
    #[error("[MQTT-3.2.2-14] retain not supported")]
    RetainNotSupported,
    /// A client sent a Subscription Identifier in a PUBLISH.
    #[error("[MQTT-3.3.4-6] subscription identifier in PUBLISH")]
    SubscriptionIdentifier,
    /// A topic alias out of range (0x94) or never set (Protocol Error).
    #[error(transparent)]
    TopicAlias(AliasError),
    /// An empty topic name and no topic alias.
    #[error("[MQTT-3.3.2-1] empty topic name without alias")]
    EmptyTopic,
    /// A topic name with more levels than `max_topic_levels`.
    #[error(transparent)]
    TopicLevels(TopicError),
    /// A topic name longer than `max_topic_length` (a broker limit, not a spec rule).
    #[error("topic of {0} bytes exceeds max_topic_length")]
    TopicTooLong(usize),
    /// More QoS 2 PUBLISH packets awaiting PUBREL than the Receive Maximum we announced.
    #[error("[MQTT-3.3.4-9] receive maximum exceeded")]
    ReceiveMaximumExceeded,
    /// DISCONNECT sets a Session Expiry Interval after CONNECT set 0.
    #[error("[MQTT-3.14.2-2] session expiry set in DISCONNECT after 0 in CONNECT")]
    SessionExpiryAfterZero,
    /// A CONNECT on a connection that has sent one.
    #[error("[MQTT-3.1.0-2] second CONNECT")]
    SecondConnect,
    /// AUTH on a connection that did not start enhanced authentication.
    #[error("[MQTT-4.12.0-7] AUTH without an authentication method")]
    AuthWithoutMethod,
    /// A packet type only the server sends (CONNACK, SUBACK, ...).
    #[error("[§2.1.2] packet type {0} is not sent by clients")]
    ServerPacket(u8),
    /// Anything but CONNECT (or AUTH continuing it) before CONNECT.
    #[error("[MQTT-3.1.0-1] first packet must be CONNECT, got type {0}")]
    NotConnect(u8),
}

impl Violation {
    /// The reason code of the DISCONNECT the broker sends (v5) before closing.
    pub fn reason_code(&self) -> ReasonCode {
        use Violation::*;
        match self {
            QosNotSupported => ReasonCode::QOS_NOT_SUPPORTED,
            RetainNotSupported => ReasonCode::RETAIN_NOT_SUPPORTED,
            // 0x94 is for alias 0 or above our maximum [MQTT-3.3.2-8] [MQTT-3.3.2-9]; an empty
            // topic with an alias never set is a Protocol Error (§3.3.2.3.4).
            TopicAlias(AliasError::OutOfRange(_)) => ReasonCode::TOPIC_ALIAS_INVALID,
            TopicLevels(_) | TopicTooLong(_) => ReasonCode::TOPIC_NAME_INVALID,
            ReceiveMaximumExceeded => ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
            SubscriptionIdentifier
            | TopicAlias(AliasError::Unknown(_))
            | EmptyTopic
            | SessionExpiryAfterZero
            | SecondConnect
            | AuthWithoutMethod
            | ServerPacket(_)
            | NotConnect(_) => ReasonCode::PROTOCOL_ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_rule_and_the_code_follows_the_spec() {
        let v = Violation::ReceiveMaximumExceeded;
        assert_eq!(v.to_string(), "[MQTT-3.3.4-9] receive maximum exceeded");
        assert_eq!(v.reason_code(), ReasonCode::RECEIVE_MAXIMUM_EXCEEDED);
        let out = Violation::TopicAlias(AliasError::OutOfRange(9));
        assert!(out.to_string().starts_with("[MQTT-3.3.2-9]"), "{out}");
        assert_eq!(out.reason_code(), ReasonCode::TOPIC_ALIAS_INVALID);
        let unknown = Violation::TopicAlias(AliasError::Unknown(1));
        assert_eq!(unknown.reason_code(), ReasonCode::PROTOCOL_ERROR);
    }
}
