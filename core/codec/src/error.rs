//! Decode and encode errors.
//!
//! Every decode error names the rule of the specification the input breaks: the conformance id
//! (`[MQTT-x.y.z-n]`, MQTT 5.0 numbering unless the message says 3.1.1) where the specification
//! gives one, else the section (`§x.y.z`). [`DecodeError::reason_code`] tells the broker which
//! reason code to put in the DISCONNECT (or CONNACK) it sends before closing the connection.

use crate::ReasonCode;

/// Why bytes from the network are not a valid MQTT packet. The connection must be closed
/// [MQTT-4.13.1-1]; the broker may first send DISCONNECT/CONNACK with [`DecodeError::reason_code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A Variable Byte Integer (such as the remaining length) has a continuation bit on its 4th byte.
    #[error("[§1.5.5] variable byte integer longer than 4 bytes")]
    VarIntTooLong,
    /// A Variable Byte Integer is not encoded in the minimum number of bytes.
    #[error("[MQTT-1.5.5-1] variable byte integer not in the minimum number of bytes")]
    VarIntNotMinimal,
    /// The whole packet (fixed header included) exceeds our Maximum Packet Size. Detected from the
    /// fixed header alone, before the body is buffered.
    #[error("[§3.2.2.3.6] packet of {size} bytes exceeds the maximum packet size {max}")]
    PacketTooLarge {
        /// Size of the whole packet in bytes.
        size: u32,
        /// The configured maximum.
        max: u32,
    },
    /// Packet type 0 is reserved; 15 (AUTH) only exists in MQTT 5.0.
    #[error("[§2.1.2] reserved or unsupported packet type {0}")]
    InvalidPacketType(u8),
    /// Fixed-header flag bits differ from the values the specification fixes for this type.
    #[error(
        "[MQTT-2.1.3-1] invalid fixed header flags {flags:#06b} for packet type {packet_type}"
    )]
    InvalidFlags {
        /// Packet type from the fixed header.
        packet_type: u8,
        /// The low four bits of the first byte.
        flags: u8,
    },
    /// The remaining length ends before a field that must be present.
    #[error("[§2.1.4] remaining length too short: packet truncated")]
    Truncated,
    /// Bytes left over after the last field of a packet that has no open-ended payload.
    #[error("[§2.1.4] remaining length longer than the packet's content")]
    TrailingBytes,
    /// A UTF-8 Encoded String is not well-formed UTF-8 (includes surrogates).
    #[error("[MQTT-1.5.4-1] string is not well-formed UTF-8")]
    InvalidUtf8,
    /// A UTF-8 Encoded String contains the null character.
    #[error("[MQTT-1.5.4-2] string contains U+0000")]
    NullCharacter,
    /// A property identifier the specification does not define.
    #[error("[§2.2.2.2] unknown property identifier {0:#04x}")]
    UnknownProperty(u32),
    /// A property other than User Property (or Subscription Identifier on PUBLISH) appears twice.
    #[error("[§2.2.2.2] property {0:#04x} included more than once")]
    DuplicateProperty(u8),
    /// A defined property that is not allowed on this packet.
    #[error("[§2.2.2.2] property {property:#04x} is not allowed on packet type {packet_type}")]
    PropertyNotAllowed {
        /// Property identifier.
        property: u8,
        /// Packet type (CONNECT = 1 ...); 0 stands for the will properties.
        packet_type: u8,
    },
    /// A property value outside its allowed range: a boolean or payload format indicator above 1,
    /// Maximum QoS above 1, or zero for Receive Maximum / Maximum Packet Size / Subscription
    /// Identifier.
    #[error("[§2.2.2.2] property {property:#04x} has invalid value {value}")]
    InvalidPropertyValue {
        /// Property identifier.
        property: u8,
        /// The value received.
        value: u32,
    },
    /// Topic Alias 0 is not permitted.
    #[error("[MQTT-3.3.2-8] topic alias 0")]
    ZeroTopicAlias,
    /// QoS 3 in a PUBLISH fixed header.
    #[error("[MQTT-3.3.1-4] PUBLISH with QoS 3")]
    InvalidQoS,
    /// DUP set on a QoS 0 PUBLISH.
    #[error("[MQTT-3.3.1-2] DUP flag set on a QoS 0 PUBLISH")]
    DupWithQoS0,
    /// Packet identifier 0 where a non-zero one is required.
    #[error("[MQTT-2.2.1-3] packet identifier 0")]
    ZeroPacketId,
    /// A topic name contains `+` or `#`.
    #[error("[MQTT-3.3.2-2] wildcard character in topic name")]
    WildcardInTopic,
    /// An empty topic name (without a topic alias in MQTT 5.0) or an empty topic filter.
    #[error("[MQTT-4.7.3-1] zero-length topic name or filter")]
    EmptyTopic,
    /// SUBSCRIBE without any topic filter.
    #[error("[MQTT-3.8.3-2] SUBSCRIBE with no topic filter (3.1.1: [MQTT-3.8.3-3])")]
    EmptySubscribe,
    /// UNSUBSCRIBE without any topic filter.
    #[error("[MQTT-3.10.3-2] UNSUBSCRIBE with no topic filter")]
    EmptyUnsubscribe,
    /// Reserved bits 6-7 of the subscription options are set (3.1.1: bits 2-7).
    #[error("[MQTT-3.8.3-5] reserved bits set in subscription options {0:#04x}")]
    SubscriptionOptionsReserved(u8),
    /// Subscription options request QoS 3.
    #[error("[§3.8.3.1] subscription requests QoS 3 (3.1.1: [MQTT-3-8.3-4])")]
    SubscriptionQoS,
    /// Retain Handling 3.
    #[error("[§3.8.3.1] retain handling 3")]
    RetainHandling,
    /// No Local on a shared subscription.
    #[error("[MQTT-3.8.3-4] no local set on a shared subscription")]
    NoLocalOnShared,
    /// CONNECT protocol name is neither "MQTT" nor "MQIsdp".
    #[error("[MQTT-3.1.2-1] unknown protocol name")]
    InvalidProtocolName,
    /// CONNECT protocol level we do not support (or that does not match the protocol name).
    /// The broker answers CONNACK 0x01 (3.1.1) / 0x84 (5.0) [MQTT-3.1.2-2].
    #[error("[MQTT-3.1.2-2] unsupported protocol level {0}")]
    UnsupportedProtocolLevel(u8),
    /// The reserved bit 0 of the CONNECT flags is set.
    #[error("[MQTT-3.1.2-3] reserved CONNECT flag set")]
    ReservedConnectFlag,
    /// Will QoS or Will Retain set without the Will Flag.
    #[error("[MQTT-3.1.2-11] [MQTT-3.1.2-13] will QoS/retain set without will flag (3.1.1: [MQTT-3.1.2-13] [MQTT-3.1.2-15])")]
    WillFlags,
    /// Will QoS 3.
    #[error("[MQTT-3.1.2-12] will QoS 3 (3.1.1: [MQTT-3.1.2-14])")]
    WillQoS,
    /// MQTT 3.1/3.1.1: Password Flag without User Name Flag.
    #[error("[MQTT-3.1.2-22] password flag set without user name flag")]
    PasswordWithoutUsername,
    /// CONNECT carries Authentication Data without an Authentication Method.
    #[error("[§3.1.2.11.10] authentication data without authentication method")]
    AuthDataWithoutMethod,
    /// CONNACK acknowledge flags bits 7-1 are reserved.
    #[error("[MQTT-3.2.2-1] reserved CONNACK flags set")]
    ConnAckFlags,
    /// MQTT 3.x CONNACK return code 6-255 (reserved; 3.1.1 section 3.2.2.3).
    #[error("[§3.2.2.3] reserved CONNACK return code {0}")]
    InvalidConnAckCode(u8),
    /// MQTT 3.1.1 SUBACK return code other than 0x00, 0x01, 0x02, 0x80.
    #[error("[MQTT-3.9.3-2] invalid SUBACK return code {0:#04x}")]
    InvalidSubAckCode(u8),
}

impl DecodeError {
    /// The reason code for the DISCONNECT (or CONNACK, for errors in CONNECT) the broker sends
    /// before closing: Malformed Packet unless the specification calls the violation a Protocol
    /// Error or names a more specific code.
    pub fn reason_code(&self) -> ReasonCode {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            UnsupportedProtocolLevel(_) | InvalidProtocolName => {
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
            }
            ZeroTopicAlias => ReasonCode::TOPIC_ALIAS_INVALID,
            WildcardInTopic => ReasonCode::TOPIC_NAME_INVALID,
            // An identifier not valid for the packet type is a Malformed Packet, not a Protocol
            // Error [§2.2.2.2]; it falls through to MALFORMED_PACKET below.
            DuplicateProperty(_)
            | InvalidPropertyValue { .. }
            | ZeroPacketId
            | EmptyTopic
            | EmptySubscribe
            | EmptyUnsubscribe
            | RetainHandling
            | NoLocalOnShared
            | PasswordWithoutUsername
            | AuthDataWithoutMethod
            | InvalidPacketType(_) => ReasonCode::PROTOCOL_ERROR,
            _ => ReasonCode::MALFORMED_PACKET,
        }
    }
}

/// Why a packet cannot be encoded: it would be malformed on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The remaining length would exceed 268,435,455 (the largest Variable Byte Integer).
    #[error("[§1.5.5] remaining length {0} exceeds 268435455")]
    PacketTooLarge(usize),
    /// A string or binary field longer than 65,535 bytes.
    #[error("[§1.5.4] string or binary field of {0} bytes exceeds 65535")]
    FieldTooLong(usize),
    /// A Variable Byte Integer value (e.g. a Subscription Identifier) above 268,435,455.
    #[error("[§1.5.5] variable byte integer {0} exceeds 268435455")]
    VarIntTooLarge(u32),
    /// The packet type does not exist in the target protocol (AUTH in MQTT 3.x).
    #[error("[§2.1.2] packet type {0} does not exist in MQTT 3.x")]
    NotInProtocol(u8),
    /// Packet identifier 0 on a packet that requires one.
    #[error("[MQTT-2.2.1-3] packet identifier 0")]
    ZeroPacketId,
    /// SUBSCRIBE or UNSUBSCRIBE without topic filters.
    #[error("[MQTT-3.8.3-2] [MQTT-3.10.3-2] SUBSCRIBE/UNSUBSCRIBE without topic filters")]
    NoFilters,
    /// MQTT 3.1/3.1.1 CONNECT with a password but no user name.
    #[error("[MQTT-3.1.2-22] password without user name")]
    PasswordWithoutUsername,
    /// Larger than the peer's Maximum Packet Size even without its optional properties.
    #[error("[MQTT-3.1.2-24] packet of {len} bytes exceeds the peer's Maximum Packet Size {max}")]
    ExceedsPeerMaximum {
        /// Bytes of the packet, stripped.
        len: usize,
        /// The peer's Maximum Packet Size.
        max: u32,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_distinguish_what_the_broker_answers() {
        assert_eq!(
            DecodeError::PacketTooLarge { size: 10, max: 5 }.reason_code(),
            ReasonCode::PACKET_TOO_LARGE
        );
        assert_eq!(
            DecodeError::UnsupportedProtocolLevel(7).reason_code(),
            ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
        );
        assert_eq!(
            DecodeError::DuplicateProperty(1).reason_code(),
            ReasonCode::PROTOCOL_ERROR
        );
        assert_eq!(
            DecodeError::InvalidUtf8.reason_code(),
            ReasonCode::MALFORMED_PACKET
        );
        assert_eq!(
            DecodeError::PropertyNotAllowed {
                property: 0x11,
                packet_type: 3
            }
            .reason_code(),
            ReasonCode::MALFORMED_PACKET
        );
    }

    #[test]
    fn messages_name_the_rule() {
        assert!(DecodeError::NullCharacter
            .to_string()
            .starts_with("[MQTT-1.5.4-2]"));
        assert!(DecodeError::InvalidQoS
            .to_string()
            .contains("[MQTT-3.3.1-4]"));
    }
}
