//! The MQTT control packets, as plain data.

use crate::properties::*;
use crate::{ByteStr, ReasonCode};
use bytes::Bytes;

/// Protocol level from CONNECT: 3 = MQTT 3.1 ("MQIsdp"), 4 = MQTT 3.1.1, 5 = MQTT 5.0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Protocol {
    /// MQTT 3.1, protocol name "MQIsdp".
    V3_1 = 3,
    /// MQTT 3.1.1, protocol name "MQTT".
    V3_1_1 = 4,
    /// MQTT 5.0, protocol name "MQTT".
    V5 = 5,
}

impl Protocol {
    /// Whether this version carries properties and reason codes.
    pub const fn is_v5(self) -> bool {
        matches!(self, Protocol::V5)
    }
}

/// Quality of service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(u8)]
pub enum QoS {
    /// At most once.
    #[default]
    AtMostOnce = 0,
    /// At least once.
    AtLeastOnce = 1,
    /// Exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// From the two wire bits; 3 is malformed [MQTT-3.3.1-4].
    pub const fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// Retain handling option of a subscription (MQTT 5.0 section 3.8.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum RetainHandling {
    /// Send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// Send retained messages only if the subscription did not exist.
    SendIfNew = 1,
    /// Do not send retained messages.
    DoNotSend = 2,
}

/// The options byte of one SUBSCRIBE entry. For MQTT 3.x only `qos` is meaningful; the others
/// keep their defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[allow(missing_docs)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: RetainHandling,
}

/// A will message, from the CONNECT payload.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct LastWill {
    pub topic: ByteStr,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub properties: WillProperties,
}

/// CONNECT.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Connect {
    pub protocol: Protocol,
    /// "Clean session" in 3.1.1, "clean start" in 5.0.
    pub clean_start: bool,
    pub keep_alive: u16,
    pub client_id: ByteStr,
    pub will: Option<LastWill>,
    pub username: Option<ByteStr>,
    pub password: Option<Bytes>,
    pub properties: ConnectProperties,
}

/// CONNACK. For MQTT 3.x the reason code is encoded with [`ReasonCode::to_v3_connack`] and decoded
/// with [`ReasonCode::from_v3_connack`].
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct ConnAck {
    pub session_present: bool,
    pub reason_code: ReasonCode,
    pub properties: ConnAckProperties,
}

/// PUBLISH. `topic` and `payload` are slices of the read buffer after decoding.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// May be empty in MQTT 5.0 when a topic alias is used.
    pub topic: ByteStr,
    /// 0 for QoS 0 (no packet identifier on the wire); non-zero otherwise [MQTT-2.2.1-3].
    pub packet_id: u16,
    pub properties: PublishProperties,
    pub payload: Bytes,
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP: the variant of [`Packet`] says which.
/// In MQTT 3.x the reason code is always SUCCESS and there are no properties.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct Ack {
    pub packet_id: u16,
    pub reason_code: ReasonCode,
    pub properties: AckProperties,
}

impl Ack {
    /// A successful acknowledgement with no properties.
    pub fn new(packet_id: u16) -> Self {
        Ack {
            packet_id,
            reason_code: ReasonCode::SUCCESS,
            properties: AckProperties::default(),
        }
    }
}

/// SUBSCRIBE. Never empty [MQTT-3.8.3-3].
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct Subscribe {
    pub packet_id: u16,
    pub properties: SubscribeProperties,
    pub filters: Vec<(ByteStr, SubscriptionOptions)>,
}

/// SUBACK: one reason code per filter, in order [MQTT-3.9.3-1].
/// In MQTT 3.x the codes are 0x00/0x01/0x02 or 0x80.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct SubAck {
    pub packet_id: u16,
    pub properties: AckProperties,
    pub reason_codes: Vec<ReasonCode>,
}

/// UNSUBSCRIBE. Never empty [MQTT-3.10.3-2].
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct Unsubscribe {
    pub packet_id: u16,
    pub properties: UnsubscribeProperties,
    pub filters: Vec<ByteStr>,
}

/// UNSUBACK. `reason_codes` is empty for MQTT 3.x (the packet has no payload there).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct UnsubAck {
    pub packet_id: u16,
    pub properties: AckProperties,
    pub reason_codes: Vec<ReasonCode>,
}

/// DISCONNECT. MQTT 3.x has no reason code or properties (encoded as two bytes `e0 00`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct Disconnect {
    pub reason_code: ReasonCode,
    pub properties: DisconnectProperties,
}

/// AUTH (MQTT 5.0 only).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct Auth {
    pub reason_code: ReasonCode,
    pub properties: AuthProperties,
}

/// Any MQTT control packet.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(Ack),
    PubRec(Ack),
    PubRel(Ack),
    PubComp(Ack),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

impl Packet {
    /// The packet type number of the fixed header (1 = CONNECT ... 15 = AUTH).
    pub fn packet_type(&self) -> u8 {
        match self {
            Packet::Connect(_) => 1,
            Packet::ConnAck(_) => 2,
            Packet::Publish(_) => 3,
            Packet::PubAck(_) => 4,
            Packet::PubRec(_) => 5,
            Packet::PubRel(_) => 6,
            Packet::PubComp(_) => 7,
            Packet::Subscribe(_) => 8,
            Packet::SubAck(_) => 9,
            Packet::Unsubscribe(_) => 10,
            Packet::UnsubAck(_) => 11,
            Packet::PingReq => 12,
            Packet::PingResp => 13,
            Packet::Disconnect(_) => 14,
            Packet::Auth(_) => 15,
        }
    }
}
