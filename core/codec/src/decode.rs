//! Incremental, zero-copy decoding: one packet at a time out of a connection's read buffer.

use crate::packet::*;
use crate::property_codec::read_properties;
use crate::reader::Reader;
use crate::varint::decode_variable_int;
use crate::{ByteStr, DecodeError, ReasonCode};
use bytes::BytesMut;

/// Decodes packets from a byte stream. Holds the protocol version of the connection, which
/// changes how every packet after CONNECT is laid out.
#[derive(Clone, Copy, Debug)]
pub struct Decoder {
    protocol: Option<Protocol>,
    max_packet_size: u32,
    /// The CONNECT had bit 7 of its protocol level set: a Mosquitto-style bridge.
    bridge: bool,
}

/// What the fixed header says, once it is complete.
struct FixedHeader {
    byte0: u8,
    /// Bytes of fixed header (type byte + remaining length).
    len: usize,
    /// Bytes of the whole packet.
    total: usize,
}

impl Decoder {
    /// Server side: the protocol is learnt from the CONNECT packet. `max_packet_size` bounds the
    /// whole packet (fixed header included), as MQTT 5.0's Maximum Packet Size does.
    pub fn new(max_packet_size: u32) -> Self {
        Decoder {
            protocol: None,
            max_packet_size,
            bridge: false,
        }
    }

    /// Client side (or a server that already knows): the protocol is fixed up front.
    pub fn with_protocol(protocol: Protocol, max_packet_size: u32) -> Self {
        Decoder {
            protocol: Some(protocol),
            max_packet_size,
            bridge: false,
        }
    }

    /// The protocol in use, once known.
    pub fn protocol(&self) -> Option<Protocol> {
        self.protocol
    }

    /// Sets the protocol (e.g. a client after sending its CONNECT).
    pub fn set_protocol(&mut self, p: Protocol) {
        self.protocol = Some(p);
    }

    /// Whether the CONNECT came from a bridge: Mosquitto's bridges (`try_private`) set bit 7
    /// of the protocol level (`0x84`), which Mosquitto accepts and remembers as `is_bridge`.
    pub fn is_bridge(&self) -> bool {
        self.bridge
    }

    /// The largest packet accepted, in bytes.
    pub fn max_packet_size(&self) -> u32 {
        self.max_packet_size
    }

    /// Changes the largest packet accepted.
    pub fn set_max_packet_size(&mut self, max: u32) {
        self.max_packet_size = max;
    }

    /// Decodes one packet from the front of `buf`.
    ///
    /// `Ok(None)`: more bytes are needed (nothing is consumed). On success exactly one packet is
    /// consumed (`split_to` + `freeze`), so topics, strings and payloads are slices of the read
    /// buffer, not copies. On error the connection must be closed (see
    /// [`DecodeError::reason_code`] for what to tell the peer); the offending packet may or may
    /// not have been consumed from `buf`.
    ///
    /// A CONNECT sets the decoder's protocol as soon as its protocol name and level are read
    /// (even if a later field is malformed, so the broker can answer in the client's version).
    /// Before CONNECT, other packets are decoded with MQTT 3.1.1 framing.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        let Some(h) = self.fixed_header(buf)? else {
            return Ok(None);
        };
        if buf.len() < h.total {
            return Ok(None);
        }
        let frame = buf.split_to(h.total).freeze();
        let mut r = Reader::new(frame, h.len);
        let proto = self.protocol.unwrap_or(Protocol::V3_1_1);
        let packet = match h.byte0 >> 4 {
            1 => Packet::Connect(Box::new(self.connect(&mut r)?)),
            2 => Packet::ConnAck(connack(&mut r, proto)?),
            3 => Packet::Publish(publish(r, h.byte0, proto)?),
            4 => Packet::PubAck(ack(&mut r, proto)?),
            5 => Packet::PubRec(ack(&mut r, proto)?),
            6 => Packet::PubRel(ack(&mut r, proto)?),
            7 => Packet::PubComp(ack(&mut r, proto)?),
            8 => Packet::Subscribe(subscribe(&mut r, proto)?),
            9 => Packet::SubAck(suback(&mut r, proto)?),
            10 => Packet::Unsubscribe(unsubscribe(&mut r, proto)?),
            11 => Packet::UnsubAck(unsuback(&mut r, proto)?),
            12 => r.finish().map(|_| Packet::PingReq)?,
            13 => r.finish().map(|_| Packet::PingResp)?,
            14 => {
                let (reason_code, properties) = reason_and_properties(&mut r, proto)?;
                Packet::Disconnect(Disconnect {
                    reason_code,
                    properties,
                })
            }
            // fixed_header() admits 15 only for MQTT 5.0.
            _ => {
                let (reason_code, properties) = reason_and_properties(&mut r, proto)?;
                Packet::Auth(Auth {
                    reason_code,
                    properties,
                })
            }
        };
        Ok(Some(packet))
    }

    /// How many more bytes `buf` needs before [`Decoder::decode`] can make progress.
    ///
    /// Exact once the fixed header is complete; a lower bound (1, or 2 for an empty buffer)
    /// while it is not. 0 when `decode` would return a packet or an error right now, so after
    /// `decode` returned `Ok(None)` this is at least 1.
    pub fn needed(&self, buf: &[u8]) -> usize {
        match self.fixed_header(buf) {
            Err(_) => 0,
            Ok(None) => 2usize.saturating_sub(buf.len()).max(1),
            Ok(Some(h)) => h.total.saturating_sub(buf.len()),
        }
    }

    /// Parses and checks the fixed header: type, flags [MQTT-2.1.3-1], remaining length and the
    /// maximum packet size, all before the body is buffered.
    fn fixed_header(&self, buf: &[u8]) -> Result<Option<FixedHeader>, DecodeError> {
        let Some(&byte0) = buf.first() else {
            return Ok(None);
        };
        let (packet_type, flags) = (byte0 >> 4, byte0 & 0x0f);
        let expected_flags = match packet_type {
            3 => {
                let qos = (flags >> 1) & 3;
                if qos == 3 {
                    return Err(DecodeError::InvalidQoS);
                }
                if qos == 0 && flags & 0x08 != 0 {
                    return Err(DecodeError::DupWithQoS0);
                }
                flags
            }
            // MQTT 3.1 predates the fixed flags (its clients may set DUP on a resent SUBSCRIBE);
            // like Mosquitto, accept any flags there.
            6 | 8 | 10 if self.protocol == Some(Protocol::V3_1) => flags,
            6 | 8 | 10 => 0b0010,
            1 | 2 | 4 | 5 | 7 | 9 | 11..=14 => 0,
            15 if self.protocol == Some(Protocol::V5) => 0,
            _ => return Err(DecodeError::InvalidPacketType(packet_type)),
        };
        if flags != expected_flags {
            return Err(DecodeError::InvalidFlags { packet_type, flags });
        }
        let Some((remaining, n)) = decode_variable_int(&buf[1..])? else {
            return Ok(None);
        };
        let len = 1 + n;
        let total = len + remaining as usize;
        if total > self.max_packet_size as usize {
            return Err(DecodeError::PacketTooLarge {
                size: total as u32,
                max: self.max_packet_size,
            });
        }
        Ok(Some(FixedHeader { byte0, len, total }))
    }

    /// CONNECT (section 3.1). Its own protocol name and level decide the layout.
    fn connect(&mut self, r: &mut Reader) -> Result<Connect, DecodeError> {
        let name = r.binary()?;
        let level = r.u8()?;
        // Bit 7 marks a bridge (Mosquitto's `try_private`); the version is in the rest.
        let bridge = level & 0x80 != 0 && matches!(&name[..], b"MQTT" | b"MQIsdp");
        let protocol = match (&name[..], level & if bridge { 0x7f } else { 0xff }) {
            (b"MQTT", 4) => Protocol::V3_1_1,
            (b"MQTT", 5) => Protocol::V5,
            (b"MQIsdp", 3) => Protocol::V3_1,
            // Like Mosquitto: a known name with another level is an unsupported version, which
            // the broker answers with CONNACK 0x01 / 0x84 [MQTT-3.1.2-2].
            (b"MQTT" | b"MQIsdp", l) => return Err(DecodeError::UnsupportedProtocolLevel(l)),
            _ => return Err(DecodeError::InvalidProtocolName),
        };
        self.protocol = Some(protocol);
        self.bridge = bridge;
        let flags = r.u8()?;
        if flags & 0x01 != 0 {
            return Err(DecodeError::ReservedConnectFlag);
        }
        let will_flag = flags & 0x04 != 0;
        let will_qos = (flags >> 3) & 3;
        let will_retain = flags & 0x20 != 0;
        let has_password = flags & 0x40 != 0;
        let has_username = flags & 0x80 != 0;
        if !will_flag && (will_qos != 0 || will_retain) {
            return Err(DecodeError::WillFlags);
        }
        let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::WillQoS)?;
        // MQTT 5.0 allows a password without a user name; 3.x does not.
        if !protocol.is_v5() && has_password && !has_username {
            return Err(DecodeError::PasswordWithoutUsername);
        }
        let keep_alive = r.u16()?;
        let properties: crate::ConnectProperties = if protocol.is_v5() {
            read_properties(r)?
        } else {
            Default::default()
        };
        // "It is a Protocol Error to include Authentication Data if there is no Authentication
        // Method" (section 3.1.2.11.10).
        if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
            return Err(DecodeError::AuthDataWithoutMethod);
        }
        let client_id = r.string()?;
        let will = if will_flag {
            let properties = if protocol.is_v5() {
                read_properties(r)?
            } else {
                Default::default()
            };
            let topic = r.string()?;
            check_topic_name(&topic, false)?;
            let payload = r.binary()?;
            Some(LastWill {
                topic,
                payload,
                qos: will_qos,
                retain: will_retain,
                properties,
            })
        } else {
            None
        };
        let username = if has_username {
            Some(r.string()?)
        } else {
            None
        };
        let password = if has_password {
            Some(r.binary()?)
        } else {
            None
        };
        r.finish()?;
        Ok(Connect {
            protocol,
            clean_start: flags & 0x02 != 0,
            keep_alive,
            client_id,
            will,
            username,
            password,
            properties,
        })
    }
}

/// A topic name: non-empty [MQTT-4.7.3-1] unless a topic alias stands in (5.0), and free of
/// wildcards [MQTT-3.3.2-2].
fn check_topic_name(topic: &ByteStr, has_alias: bool) -> Result<(), DecodeError> {
    if topic.is_empty() && !has_alias {
        return Err(DecodeError::EmptyTopic);
    }
    if memchr::memchr2(b'+', b'#', topic.as_bytes()).is_some() {
        return Err(DecodeError::WildcardInTopic);
    }
    Ok(())
}

/// A packet identifier that must be non-zero [MQTT-2.2.1-3]. Acknowledgements carry the
/// identifier of such a packet, so 0 is rejected there too (as Mosquitto does).
fn packet_id(r: &mut Reader) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::ZeroPacketId),
        id => Ok(id),
    }
}

fn connack(r: &mut Reader, proto: Protocol) -> Result<ConnAck, DecodeError> {
    let flags = r.u8()?;
    let code = r.u8()?;
    let session_present = match proto {
        // MQTT 3.1 has no session present flag: the byte is reserved and unused.
        Protocol::V3_1 => false,
        _ if flags & 0xfe != 0 => return Err(DecodeError::ConnAckFlags),
        _ => flags & 1 != 0,
    };
    let (reason_code, properties) = if proto.is_v5() {
        (ReasonCode(code), read_properties(r)?)
    } else if code <= 5 {
        (ReasonCode::from_v3_connack(code), Default::default())
    } else {
        return Err(DecodeError::InvalidConnAckCode(code));
    };
    r.finish()?;
    Ok(ConnAck {
        session_present,
        reason_code,
        properties,
    })
}

fn publish(mut r: Reader, byte0: u8, proto: Protocol) -> Result<Publish, DecodeError> {
    // fixed_header() rejected QoS 3.
    let qos = QoS::from_u8((byte0 >> 1) & 3).ok_or(DecodeError::InvalidQoS)?;
    let topic = r.string()?;
    let packet_id = if qos == QoS::AtMostOnce {
        0
    } else {
        packet_id(&mut r)?
    };
    let properties: crate::PublishProperties = if proto.is_v5() {
        read_properties(&mut r)?
    } else {
        Default::default()
    };
    check_topic_name(&topic, properties.topic_alias.is_some())?;
    Ok(Publish {
        dup: byte0 & 0x08 != 0,
        qos,
        retain: byte0 & 0x01 != 0,
        topic,
        packet_id,
        properties,
        payload: r.into_rest(),
    })
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP. In 5.0 the reason code and properties may be omitted
/// (remaining length 2 means Success, 3 means no properties).
fn ack(r: &mut Reader, proto: Protocol) -> Result<Ack, DecodeError> {
    let packet_id = packet_id(r)?;
    let (reason_code, properties) = reason_and_properties(r, proto)?;
    Ok(Ack {
        packet_id,
        reason_code,
        properties,
    })
}

/// The optional "reason code, then optional properties" tail shared by the 5.0 acks,
/// DISCONNECT and AUTH; nothing at all in 3.x.
fn reason_and_properties<P: crate::property_codec::PropertySet>(
    r: &mut Reader,
    proto: Protocol,
) -> Result<(ReasonCode, P), DecodeError> {
    let mut code = ReasonCode::SUCCESS;
    let mut props = P::default();
    if proto.is_v5() && !r.is_empty() {
        code = ReasonCode(r.u8()?);
        if !r.is_empty() {
            props = read_properties(r)?;
        }
    }
    r.finish()?;
    Ok((code, props))
}

fn subscribe(r: &mut Reader, proto: Protocol) -> Result<Subscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = if proto.is_v5() {
        read_properties(r)?
    } else {
        Default::default()
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        if filter.is_empty() {
            return Err(DecodeError::EmptyTopic);
        }
        let opts = subscription_options(r.u8()?, proto)?;
        // [MQTT-3.8.3-4]: No Local on a shared subscription is a Protocol Error.
        if opts.no_local && filter.starts_with("$share/") {
            return Err(DecodeError::NoLocalOnShared);
        }
        filters.push((filter, opts));
    }
    if filters.is_empty() {
        return Err(DecodeError::EmptySubscribe);
    }
    Ok(Subscribe {
        packet_id,
        properties,
        filters,
    })
}

/// The options byte of a SUBSCRIBE entry (5.0 section 3.8.3.1; 3.1.1: QoS only).
fn subscription_options(b: u8, proto: Protocol) -> Result<SubscriptionOptions, DecodeError> {
    let reserved = if proto.is_v5() { 0xc0 } else { 0xfc };
    if b & reserved != 0 {
        return Err(DecodeError::SubscriptionOptionsReserved(b));
    }
    let qos = QoS::from_u8(b & 3).ok_or(DecodeError::SubscriptionQoS)?;
    let retain_handling = match (b >> 4) & 3 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return Err(DecodeError::RetainHandling),
    };
    Ok(SubscriptionOptions {
        qos,
        no_local: b & 0x04 != 0,
        retain_as_published: b & 0x08 != 0,
        retain_handling,
    })
}

fn suback(r: &mut Reader, proto: Protocol) -> Result<SubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = if proto.is_v5() {
        read_properties(r)?
    } else {
        Default::default()
    };
    let codes = r.rest_slice();
    // One code per filter of a SUBSCRIBE, which has at least one.
    if codes.is_empty() {
        return Err(DecodeError::Truncated);
    }
    if !proto.is_v5() {
        if let Some(&bad) = codes.iter().find(|&&c| !matches!(c, 0 | 1 | 2 | 0x80)) {
            return Err(DecodeError::InvalidSubAckCode(bad));
        }
    }
    Ok(SubAck {
        packet_id,
        properties,
        reason_codes: codes.iter().map(|&c| ReasonCode(c)).collect(),
    })
}

fn unsubscribe(r: &mut Reader, proto: Protocol) -> Result<Unsubscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = if proto.is_v5() {
        read_properties(r)?
    } else {
        Default::default()
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        if filter.is_empty() {
            return Err(DecodeError::EmptyTopic);
        }
        filters.push(filter);
    }
    if filters.is_empty() {
        return Err(DecodeError::EmptyUnsubscribe);
    }
    Ok(Unsubscribe {
        packet_id,
        properties,
        filters,
    })
}

fn unsuback(r: &mut Reader, proto: Protocol) -> Result<UnsubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    if !proto.is_v5() {
        r.finish()?;
        return Ok(UnsubAck {
            packet_id,
            ..Default::default()
        });
    }
    let properties = read_properties(r)?;
    let reason_codes = r.rest_slice().iter().map(|&c| ReasonCode(c)).collect();
    Ok(UnsubAck {
        packet_id,
        properties,
        reason_codes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DecodeError::*;
    use Protocol::*;

    /// Wraps `body` in a fixed header (remaining length < 128).
    fn frame(byte0: u8, body: &[u8]) -> Vec<u8> {
        assert!(body.len() < 128);
        let mut v = vec![byte0, body.len() as u8];
        v.extend_from_slice(body);
        v
    }

    fn decode_with(d: &mut Decoder, bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
        let mut buf = BytesMut::from(bytes);
        d.decode(&mut buf)
    }

    /// The error decoding `bytes` as a whole packet gives for `proto`.
    fn err(proto: Protocol, bytes: &[u8]) -> DecodeError {
        decode_with(&mut Decoder::with_protocol(proto, u32::MAX), bytes)
            .expect_err("must be rejected")
    }

    /// A CONNECT with the given name, level and flags, then `rest` (properties and payload).
    fn connect(name: &[u8], level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
        let mut body = vec![0, name.len() as u8];
        body.extend_from_slice(name);
        body.extend_from_slice(&[level, flags, 0, 10]);
        body.extend_from_slice(rest);
        frame(0x10, &body)
    }

    /// A v5 PUBLISH QoS 0 to "a" with the given property block contents.
    fn publish_v5(props: &[u8]) -> Vec<u8> {
        let mut body = vec![0, 1, b'a', props.len() as u8];
        body.extend_from_slice(props);
        frame(0x30, &body)
    }

    #[test]
    fn fixed_header_rules() {
        assert_eq!(
            err(V5, &[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]),
            VarIntTooLong
        );
        assert_eq!(err(V5, &[0xc0, 0x80, 0x00]), VarIntNotMinimal);
        assert_eq!(err(V5, &[0x00, 0x00]), InvalidPacketType(0));
        assert_eq!(err(V3_1_1, &[0xf0, 0x00]), InvalidPacketType(15));
        assert_eq!(
            err(V5, &[0xc1, 0x00]),
            InvalidFlags {
                packet_type: 12,
                flags: 1
            }
        );
        assert_eq!(
            err(V3_1_1, &frame(0x60, &[0, 1])),
            InvalidFlags {
                packet_type: 6,
                flags: 0
            }
        );
        let dup_subscribe = frame(0x8a, &[0, 1, 0, 1, b'a', 0]);
        assert_eq!(
            err(V3_1_1, &dup_subscribe),
            InvalidFlags {
                packet_type: 8,
                flags: 0x0a
            }
        );
        assert!(
            decode_with(&mut Decoder::with_protocol(V3_1, 100), &dup_subscribe)
                .unwrap()
                .is_some()
        );
        assert_eq!(err(V3_1_1, &[0x36, 0x00]), InvalidQoS);
        assert_eq!(err(V3_1_1, &frame(0x38, &[0, 1, b'a'])), DupWithQoS0);
    }

    #[test]
    fn too_large_is_detected_from_the_fixed_header_alone() {
        let mut d = Decoder::new(100);
        // Only two bytes buffered: the body of 200 bytes has not arrived.
        assert_eq!(
            decode_with(&mut d, &[0x30, 0xc8, 0x01]),
            Err(PacketTooLarge {
                size: 203,
                max: 100
            })
        );
        assert_eq!(d.needed(&[0x30, 0xc8, 0x01]), 0);
        assert_eq!(
            PacketTooLarge {
                size: 203,
                max: 100
            }
            .reason_code(),
            ReasonCode::PACKET_TOO_LARGE
        );
    }

    #[test]
    fn lengths_must_match_content() {
        assert_eq!(err(V3_1_1, &frame(0x40, &[0])), Truncated);
        assert_eq!(err(V3_1_1, &frame(0x40, &[0, 1, 0])), TrailingBytes);
        assert_eq!(err(V3_1_1, &frame(0xc0, &[0])), TrailingBytes);
        assert_eq!(err(V3_1_1, &frame(0xe0, &[0])), TrailingBytes);
        // A string claiming more bytes than the packet has.
        assert_eq!(err(V3_1_1, &frame(0x30, &[0, 9, b'a'])), Truncated);
        // A property block longer than the packet.
        assert_eq!(err(V5, &frame(0x30, &[0, 1, b'a', 9])), Truncated);
    }

    #[test]
    fn strings_are_checked() {
        assert_eq!(err(V3_1_1, &frame(0x30, &[0, 2, 0xc3, 0x28])), InvalidUtf8);
        // U+D800 encoded: a surrogate is ill-formed [MQTT-1.5.4-1].
        assert_eq!(
            err(V3_1_1, &frame(0x30, &[0, 3, 0xed, 0xa0, 0x80])),
            InvalidUtf8
        );
        assert_eq!(err(V3_1_1, &frame(0x30, &[0, 2, b'a', 0])), NullCharacter);
    }

    #[test]
    fn property_rules() {
        assert_eq!(err(V5, &publish_v5(&[0x05, 0])), UnknownProperty(5));
        assert_eq!(err(V5, &publish_v5(&[0x80, 0x01])), UnknownProperty(128));
        assert_eq!(
            err(V5, &publish_v5(&[0x01, 0, 0x01, 1])),
            DuplicateProperty(1)
        );
        assert_eq!(
            err(V5, &publish_v5(&[0x11, 0, 0, 0, 1])),
            PropertyNotAllowed {
                property: 0x11,
                packet_type: 3
            }
        );
        assert_eq!(
            err(V5, &publish_v5(&[0x01, 2])),
            InvalidPropertyValue {
                property: 1,
                value: 2
            }
        );
        assert_eq!(
            err(V5, &publish_v5(&[0x0b, 0])),
            InvalidPropertyValue {
                property: 0x0b,
                value: 0
            }
        );
        assert_eq!(err(V5, &publish_v5(&[0x23, 0, 0])), ZeroTopicAlias);
        assert_eq!(err(V5, &publish_v5(&[0x08, 0, 1, b'#'])), WildcardInTopic);
        // User Property and (on PUBLISH) Subscription Identifier may repeat.
        let ok = publish_v5(&[0x0b, 1, 0x0b, 2, 0x26, 0, 0, 0, 0, 0x26, 0, 0, 0, 0]);
        let Ok(Some(Packet::Publish(p))) = decode_with(&mut Decoder::with_protocol(V5, 1000), &ok)
        else {
            panic!("repeated user property / subscription identifier must decode");
        };
        assert_eq!(&p.properties.subscription_identifiers[..], &[1, 2]);
        assert_eq!(p.properties.user_properties.len(), 2);
        // ...but not on SUBSCRIBE, where 0 is also invalid.
        let sub = |props: &[u8]| {
            let mut body = vec![0, 1, props.len() as u8];
            body.extend_from_slice(props);
            body.extend_from_slice(&[0, 1, b'a', 0]);
            frame(0x82, &body)
        };
        assert_eq!(err(V5, &sub(&[0x0b, 1, 0x0b, 2])), DuplicateProperty(0x0b));
        assert_eq!(
            err(V5, &sub(&[0x0b, 0])),
            InvalidPropertyValue {
                property: 0x0b,
                value: 0
            }
        );
        // CONNECT: Receive Maximum 0, Maximum Packet Size 0, Request Problem Information 2.
        let c = |props: &[u8]| {
            let mut rest = vec![props.len() as u8];
            rest.extend_from_slice(props);
            rest.extend_from_slice(&[0, 1, b'c']);
            connect(b"MQTT", 5, 0x02, &rest)
        };
        assert_eq!(
            err(V5, &c(&[0x21, 0, 0])),
            InvalidPropertyValue {
                property: 0x21,
                value: 0
            }
        );
        assert_eq!(
            err(V5, &c(&[0x27, 0, 0, 0, 0])),
            InvalidPropertyValue {
                property: 0x27,
                value: 0
            }
        );
        assert_eq!(
            err(V5, &c(&[0x17, 2])),
            InvalidPropertyValue {
                property: 0x17,
                value: 2
            }
        );
        assert!(decode_with(&mut Decoder::new(1000), &c(&[0x21, 0, 1])).is_ok());
    }

    #[test]
    fn connack_maximum_qos_above_one_is_invalid() {
        let bytes = frame(0x20, &[0, 0, 2, 0x24, 2]);
        assert_eq!(
            err(V5, &bytes),
            InvalidPropertyValue {
                property: 0x24,
                value: 2
            }
        );
        assert_eq!(err(V3_1_1, &frame(0x20, &[2, 0])), ConnAckFlags);
        // Found by the fuzzer: a reserved 3.x code would not survive a re-encode.
        assert_eq!(
            err(V3_1_1, &frame(0x20, &[1, 0x3d])),
            InvalidConnAckCode(0x3d)
        );
    }

    #[test]
    fn publish_rules() {
        assert_eq!(err(V3_1_1, &frame(0x32, &[0, 1, b'a', 0, 0])), ZeroPacketId);
        assert_eq!(
            err(V3_1_1, &frame(0x30, &[0, 3, b'a', b'/', b'+'])),
            WildcardInTopic
        );
        assert_eq!(err(V3_1_1, &frame(0x30, &[0, 1, b'#'])), WildcardInTopic);
        assert_eq!(err(V3_1_1, &frame(0x30, &[0, 0])), EmptyTopic);
        assert_eq!(err(V5, &frame(0x30, &[0, 0, 0])), EmptyTopic);
        // 5.0: an empty topic is fine with a topic alias.
        let aliased = frame(0x30, &[0, 0, 3, 0x23, 0, 1]);
        assert!(decode_with(&mut Decoder::with_protocol(V5, 1000), &aliased)
            .unwrap()
            .is_some());
        assert_eq!(err(V3_1_1, &frame(0x40, &[0, 0])), ZeroPacketId);
    }

    #[test]
    fn subscribe_rules() {
        assert_eq!(err(V3_1_1, &frame(0x82, &[0, 1])), EmptySubscribe);
        assert_eq!(err(V3_1_1, &frame(0xa2, &[0, 1])), EmptyUnsubscribe);
        assert_eq!(err(V3_1_1, &frame(0x82, &[0, 1, 0, 0, 0])), EmptyTopic);
        assert_eq!(
            err(V3_1_1, &frame(0x82, &[0, 0, 0, 1, b'a', 0])),
            ZeroPacketId
        );
        assert_eq!(
            err(V3_1_1, &frame(0x82, &[0, 1, 0, 1, b'a', 0x04])),
            SubscriptionOptionsReserved(4)
        );
        assert_eq!(
            err(V5, &frame(0x82, &[0, 1, 0, 0, 1, b'a', 0x40])),
            SubscriptionOptionsReserved(0x40)
        );
        assert_eq!(
            err(V3_1_1, &frame(0x82, &[0, 1, 0, 1, b'a', 3])),
            SubscriptionQoS
        );
        assert_eq!(
            err(V5, &frame(0x82, &[0, 1, 0, 0, 1, b'a', 0x30])),
            RetainHandling
        );
        let mut shared = vec![0, 1, 0, 0, 10];
        shared.extend_from_slice(b"$share/g/t");
        shared.push(0x04);
        assert_eq!(err(V5, &frame(0x82, &shared)), NoLocalOnShared);
        assert_eq!(err(V3_1_1, &frame(0x90, &[0, 1, 3])), InvalidSubAckCode(3));
        assert_eq!(err(V3_1_1, &frame(0x90, &[0, 1])), Truncated);
    }

    #[test]
    fn a_bridge_connect_sets_bit_7_of_the_level() {
        let payload = [0, 1, b'c'];
        let mut d = Decoder::new(u32::MAX);
        let mut buf = BytesMut::from(&connect(b"MQTT", 0x84, 0x02, &payload)[..]);
        let Ok(Some(Packet::Connect(c))) = d.decode(&mut buf) else {
            panic!("a 0x84 CONNECT decodes");
        };
        assert_eq!((c.protocol, d.is_bridge()), (Protocol::V3_1_1, true));
        let mut plain = Decoder::new(u32::MAX);
        let mut buf = BytesMut::from(&connect(b"MQTT", 4, 0x02, &payload)[..]);
        assert!(plain.decode(&mut buf).is_ok() && !plain.is_bridge());
        assert_eq!(
            err(V3_1_1, &connect(b"MQTT", 0x86, 0, &payload)),
            UnsupportedProtocolLevel(6)
        );
    }

    #[test]
    fn connect_rules() {
        let payload = [0, 1, b'c'];
        assert_eq!(
            err(V3_1_1, &connect(b"MQTX", 4, 0, &payload)),
            InvalidProtocolName
        );
        assert_eq!(
            err(V3_1_1, &connect(b"MQTT", 6, 0, &payload)),
            UnsupportedProtocolLevel(6)
        );
        assert_eq!(
            err(V3_1_1, &connect(b"MQIsdp", 4, 0, &payload)),
            UnsupportedProtocolLevel(4)
        );
        assert_eq!(
            UnsupportedProtocolLevel(6).reason_code(),
            ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
        );
        assert_eq!(
            err(V3_1_1, &connect(b"MQTT", 4, 0x01, &payload)),
            ReservedConnectFlag
        );
        assert_eq!(err(V3_1_1, &connect(b"MQTT", 4, 0x08, &payload)), WillFlags);
        assert_eq!(err(V3_1_1, &connect(b"MQTT", 4, 0x20, &payload)), WillFlags);
        assert_eq!(err(V3_1_1, &connect(b"MQTT", 4, 0x1c, &payload)), WillQoS);
        assert_eq!(
            err(V3_1_1, &connect(b"MQTT", 4, 0x40, &[0, 1, b'c', 0, 0])),
            PasswordWithoutUsername
        );
        // 5.0 allows a password without a user name.
        let v5 = connect(b"MQTT", 5, 0x40, &[0, 0, 1, b'c', 0, 0]);
        assert!(decode_with(&mut Decoder::new(1000), &v5).unwrap().is_some());
        let v5_props = |props: &[u8]| {
            let mut rest = vec![props.len() as u8];
            rest.extend_from_slice(props);
            rest.extend_from_slice(&[0, 1, b'c']);
            connect(b"MQTT", 5, 0x02, &rest)
        };
        assert_eq!(err(V5, &v5_props(&[0x16, 0, 1, 7])), AuthDataWithoutMethod);
        assert!(decode_with(
            &mut Decoder::new(1000),
            &v5_props(&[0x15, 0, 1, b'm', 0x16, 0, 1, 7])
        )
        .is_ok());
        // A will topic follows the topic name rules.
        let will = connect(b"MQTT", 4, 0x04, &[0, 1, b'c', 0, 1, b'#', 0, 0]);
        assert_eq!(err(V3_1_1, &will), WildcardInTopic);
        assert_eq!(
            err(V3_1_1, &connect(b"MQTT", 4, 0, &[0, 1, b'c', 9])),
            TrailingBytes
        );
    }

    #[test]
    fn connect_sets_the_protocol_even_when_a_later_field_is_malformed() {
        let mut d = Decoder::new(1000);
        assert_eq!(decode_with(&mut d, &[0xc0, 0]), Ok(Some(Packet::PingReq)));
        assert_eq!(d.protocol(), None);
        assert_eq!(
            decode_with(&mut d, &connect(b"MQTT", 5, 0, &[1, 0x77])),
            Err(UnknownProperty(0x77))
        );
        assert_eq!(d.protocol(), Some(V5));
        let Ok(Some(Packet::Connect(c))) =
            decode_with(&mut d, &connect(b"MQIsdp", 3, 0, &[0, 1, b'c']))
        else {
            panic!("3.1 CONNECT must decode");
        };
        assert_eq!((c.protocol, d.protocol()), (V3_1, Some(V3_1)));
    }

    #[test]
    fn needed_counts_missing_bytes() {
        let d = Decoder::new(1000);
        assert_eq!(d.needed(&[]), 2);
        assert_eq!(d.needed(&[0x30]), 1);
        assert_eq!(d.needed(&[0x30, 0x80]), 1);
        assert_eq!(d.needed(&[0x30, 0x05, 0]), 4);
        assert_eq!(d.needed(&[0xc0, 0]), 0);
    }
}

#[cfg(test)]
mod arbitrary_input {
    use super::*;
    use crate::encode;
    use proptest::prelude::*;

    /// Decodes everything in `bytes`; every packet decoded must re-encode and decode to itself.
    fn decode_stream(mut d: Decoder, bytes: &[u8]) -> Result<(), TestCaseError> {
        let mut buf = BytesMut::from(bytes);
        loop {
            let proto = d.protocol().unwrap_or(Protocol::V3_1_1);
            match d.decode(&mut buf) {
                Ok(Some(p)) => {
                    let proto = match &p {
                        Packet::Connect(c) => c.protocol,
                        _ => proto,
                    };
                    let mut out = BytesMut::new();
                    prop_assert_eq!(encode(&p, proto, &mut out), Ok(()));
                    let mut again = Decoder::with_protocol(proto, u32::MAX);
                    prop_assert_eq!(again.decode(&mut out), Ok(Some(p)));
                }
                Ok(None) | Err(_) => return Ok(()),
            }
        }
    }

    /// First bytes of every packet type with valid flags, so bodies get exercised.
    fn first_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            (1u8..=15).prop_map(|t| t << 4),
            Just(0x62u8),
            Just(0x82),
            Just(0xa2),
            (0u8..6).prop_map(|f| 0x30 | f),
            (0u8..4).prop_map(|f| 0x3a | (f & 1) | ((f >> 1) << 2)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            decode_stream(Decoder::new(1 << 20), &bytes)?;
            decode_stream(Decoder::with_protocol(Protocol::V5, 1 << 20), &bytes)?;
        }

        #[test]
        fn framed_random_bodies_never_panic(
            b0 in first_byte(),
            body in proptest::collection::vec(any::<u8>(), 0..120),
        ) {
            let mut bytes = vec![b0, body.len() as u8];
            bytes.extend_from_slice(&body);
            decode_stream(Decoder::new(1 << 20), &bytes)?;
            decode_stream(Decoder::with_protocol(Protocol::V5, 1 << 20), &bytes)?;
        }
    }
}
