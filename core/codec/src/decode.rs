//! Incremental, zero-copy decoding: one packet at a time out of a connection's read buffer.

use crate::packet::*;
use crate::property_codec::read_properties;
use crate::reader::Reader;
use crate::varint::decode_variable_int;
use crate::{ByteStr, DecodeError, ReasonCode};
use bytes::BytesMut;

/// Decodes packets from a byte stream. Holds the protocol version of the connection, which
/// changes how every packet after CONNECT is laid out.
#[derive(Clone, Debug)]
pub struct Decoder {
    protocol: Option<Protocol>,
    max_packet_size: u32,
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
        }
    }

    /// Client side (or a server that already knows): the protocol is fixed up front.
    pub fn with_protocol(protocol: Protocol, max_packet_size: u32) -> Self {
        Decoder {
            protocol: Some(protocol),
            max_packet_size,
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
    /// buffer, not copies. On error the connection must be closed; `buf` is left as it was.
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
            3 => Packet::Publish(publish(&mut r, h.byte0, proto)?),
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
        let protocol = match (&name[..], level) {
            (b"MQTT", 4) => Protocol::V3_1_1,
            (b"MQTT", 5) => Protocol::V5,
            (b"MQIsdp", 3) => Protocol::V3_1,
            // Like Mosquitto: a known name with another level is an unsupported version, which
            // the broker answers with CONNACK 0x01 / 0x84 [MQTT-3.1.2-2].
            (b"MQTT" | b"MQIsdp", l) => return Err(DecodeError::UnsupportedProtocolLevel(l)),
            _ => return Err(DecodeError::InvalidProtocolName),
        };
        self.protocol = Some(protocol);
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
        let properties = if protocol.is_v5() {
            read_properties(r)?
        } else {
            Default::default()
        };
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
    } else {
        (ReasonCode::from_v3_connack(code), Default::default())
    };
    r.finish()?;
    Ok(ConnAck {
        session_present,
        reason_code,
        properties,
    })
}

fn publish(r: &mut Reader, byte0: u8, proto: Protocol) -> Result<Publish, DecodeError> {
    // fixed_header() rejected QoS 3.
    let qos = QoS::from_u8((byte0 >> 1) & 3).ok_or(DecodeError::InvalidQoS)?;
    let topic = r.string()?;
    let packet_id = if qos == QoS::AtMostOnce {
        0
    } else {
        packet_id(r)?
    };
    let properties: crate::PublishProperties = if proto.is_v5() {
        read_properties(r)?
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
        payload: r.rest(),
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
    let codes = r.rest();
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
    let reason_codes = r.rest().iter().map(|&c| ReasonCode(c)).collect();
    Ok(UnsubAck {
        packet_id,
        properties,
        reason_codes,
    })
}
