//! Encoding packets for a given protocol version. Sizes are computed first (checking every
//! length limit, so a packet is either written whole or not at all), then bytes are written
//! into space reserved once.
//!
//! For MQTT 3.x, properties and 5.0-only fields are dropped: CONNACK codes go through
//! [`ReasonCode::to_v3_connack`], SUBACK codes become 0x00-0x02 or 0x80, UNSUBACK has no payload,
//! DISCONNECT is `e0 00`, and AUTH cannot be encoded.

use crate::packet::*;
use crate::property_codec::{properties_len, write_properties, PropertySet};
use crate::varint::{put_variable_int, variable_int_len, VARINT_MAX};
use crate::{EncodeError, ReasonCode};
use bytes::{BufMut, BytesMut};

/// Sizes worked out before writing.
#[derive(Clone, Copy, Default)]
pub(crate) struct Plan {
    /// Remaining length of the fixed header.
    pub(crate) remaining: usize,
    /// Length of the packet's property block (5.0), without its length prefix.
    props: usize,
    /// Length of the will property block (CONNECT, 5.0).
    will_props: usize,
    /// For the acks, DISCONNECT and AUTH in 5.0: what follows the fixed part.
    tail: Tail,
}

/// The optional end of 5.0 acks, DISCONNECT and AUTH: omitted when it says "success, nothing
/// else", which is what Mosquitto sends too.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Tail {
    #[default]
    None,
    ReasonOnly,
    ReasonAndProperties,
}

impl Plan {
    /// Bytes of the whole packet.
    pub(crate) fn total(&self) -> usize {
        1 + variable_int_len(self.remaining) + self.remaining
    }
}

/// Appends the encoding of `packet` for `protocol` to `out`. On error nothing is written.
/// A CONNECT is encoded for the protocol it names itself.
pub fn encode(packet: &Packet, protocol: Protocol, out: &mut BytesMut) -> Result<(), EncodeError> {
    let plan = plan(packet, protocol)?;
    out.reserve(plan.total());
    write(packet, protocol, &plan, out);
    Ok(())
}

/// Bytes [`encode`] would append (the whole packet, fixed header included): compare with the
/// peer's Maximum Packet Size before sending.
pub fn encoded_len(packet: &Packet, protocol: Protocol) -> Result<usize, EncodeError> {
    plan(packet, protocol).map(|p| p.total())
}

/// A string or binary field: two-byte length prefix, at most 65,535 bytes (section 1.5.4/1.5.6).
fn field(v: &[u8]) -> Result<usize, EncodeError> {
    if v.len() > usize::from(u16::MAX) {
        return Err(EncodeError::FieldTooLong(v.len()));
    }
    Ok(2 + v.len())
}

fn put_field(out: &mut BytesMut, v: &[u8]) {
    out.put_u16(v.len() as u16);
    out.put_slice(v);
}

/// A property block with its length prefix: (bytes on the wire, bytes of the properties).
fn props_block(p: &impl PropertySet, proto: Protocol) -> Result<(usize, usize), EncodeError> {
    if !proto.is_v5() {
        return Ok((0, 0));
    }
    let len = properties_len(p)?;
    Ok((variable_int_len(len) + len, len))
}

fn nonzero_id(id: u16) -> Result<(), EncodeError> {
    if id == 0 {
        return Err(EncodeError::ZeroPacketId);
    }
    Ok(())
}

/// Plans the optional "reason code, then properties" end of a 5.0 ack, DISCONNECT or AUTH.
fn tail_plan(
    code: ReasonCode,
    p: &impl PropertySet,
    proto: Protocol,
    fixed: usize,
) -> Result<Plan, EncodeError> {
    let (block, props) = props_block(p, proto)?;
    let (remaining, tail) = match () {
        _ if !proto.is_v5() => (fixed, Tail::None),
        _ if props > 0 => (fixed + 1 + block, Tail::ReasonAndProperties),
        _ if code != ReasonCode::SUCCESS => (fixed + 1, Tail::ReasonOnly),
        _ => (fixed, Tail::None),
    };
    Ok(Plan {
        remaining,
        props,
        tail,
        ..Plan::default()
    })
}

/// Sizes of a PUBLISH; `check_id` is off for [`crate::publish_head::PublishHead`], whose packet
/// identifier is patched in later.
pub(crate) fn publish_plan(
    p: &Publish,
    proto: Protocol,
    check_id: bool,
) -> Result<Plan, EncodeError> {
    if check_id && p.qos != QoS::AtMostOnce {
        nonzero_id(p.packet_id)?;
    }
    let (block, props) = props_block(&p.properties, proto)?;
    let id = if p.qos == QoS::AtMostOnce { 0 } else { 2 };
    let remaining = field(p.topic.as_bytes())? + id + block + p.payload.len();
    Ok(Plan {
        remaining,
        props,
        ..Plan::default()
    })
}

fn plan(packet: &Packet, proto: Protocol) -> Result<Plan, EncodeError> {
    let plan = match packet {
        Packet::Connect(c) => {
            let v5 = c.protocol.is_v5();
            if !v5 && c.password.is_some() && c.username.is_none() {
                return Err(EncodeError::PasswordWithoutUsername);
            }
            let (block, props) = props_block(&c.properties, c.protocol)?;
            let name = protocol_name(c.protocol).len();
            let mut remaining = 2 + name + 1 + 1 + 2 + block + field(c.client_id.as_bytes())?;
            let mut will_props = 0;
            if let Some(w) = &c.will {
                let (wblock, wprops) = props_block(&w.properties, c.protocol)?;
                will_props = wprops;
                remaining += wblock + field(w.topic.as_bytes())? + field(&w.payload)?;
            }
            if let Some(u) = &c.username {
                remaining += field(u.as_bytes())?;
            }
            if let Some(pw) = &c.password {
                remaining += field(pw)?;
            }
            Plan {
                remaining,
                props,
                will_props,
                ..Plan::default()
            }
        }
        Packet::ConnAck(c) => {
            let (block, props) = props_block(&c.properties, proto)?;
            Plan {
                remaining: 2 + block,
                props,
                ..Plan::default()
            }
        }
        Packet::Publish(p) => publish_plan(p, proto, true)?,
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            nonzero_id(a.packet_id)?;
            tail_plan(a.reason_code, &a.properties, proto, 2)?
        }
        Packet::Subscribe(s) => {
            nonzero_id(s.packet_id)?;
            if s.filters.is_empty() {
                return Err(EncodeError::NoFilters);
            }
            let (block, props) = props_block(&s.properties, proto)?;
            let mut remaining = 2 + block;
            for (f, _) in &s.filters {
                remaining += field(f.as_bytes())? + 1;
            }
            Plan {
                remaining,
                props,
                ..Plan::default()
            }
        }
        Packet::SubAck(s) => {
            nonzero_id(s.packet_id)?;
            let (block, props) = props_block(&s.properties, proto)?;
            Plan {
                remaining: 2 + block + s.reason_codes.len(),
                props,
                ..Plan::default()
            }
        }
        Packet::Unsubscribe(u) => {
            nonzero_id(u.packet_id)?;
            if u.filters.is_empty() {
                return Err(EncodeError::NoFilters);
            }
            let (block, props) = props_block(&u.properties, proto)?;
            let mut remaining = 2 + block;
            for f in &u.filters {
                remaining += field(f.as_bytes())?;
            }
            Plan {
                remaining,
                props,
                ..Plan::default()
            }
        }
        Packet::UnsubAck(u) => {
            nonzero_id(u.packet_id)?;
            if proto.is_v5() {
                let (block, props) = props_block(&u.properties, proto)?;
                Plan {
                    remaining: 2 + block + u.reason_codes.len(),
                    props,
                    ..Plan::default()
                }
            } else {
                Plan {
                    remaining: 2,
                    ..Plan::default()
                }
            }
        }
        Packet::PingReq | Packet::PingResp => Plan::default(),
        Packet::Disconnect(d) => tail_plan(d.reason_code, &d.properties, proto, 0)?,
        Packet::Auth(a) => {
            if !proto.is_v5() {
                return Err(EncodeError::NotInProtocol(15));
            }
            tail_plan(a.reason_code, &a.properties, proto, 0)?
        }
    };
    if plan.remaining > VARINT_MAX as usize {
        return Err(EncodeError::PacketTooLarge(plan.remaining));
    }
    Ok(plan)
}

fn protocol_name(p: Protocol) -> &'static [u8] {
    match p {
        Protocol::V3_1 => b"MQIsdp",
        _ => b"MQTT",
    }
}

/// First byte of the fixed header: type and the flags the specification fixes [MQTT-2.1.3-1].
fn first_byte(packet: &Packet) -> u8 {
    let t = packet.packet_type() << 4;
    match packet {
        Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => t | 0b0010,
        Packet::Publish(p) => publish_byte0(p, p.dup),
        _ => t,
    }
}

/// PUBLISH fixed-header byte; DUP is never set for QoS 0 [MQTT-3.3.1-2].
pub(crate) fn publish_byte0(p: &Publish, dup: bool) -> u8 {
    let dup = dup && p.qos != QoS::AtMostOnce;
    0x30 | (u8::from(dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain)
}

/// Writes the PUBLISH up to (not including) the payload. Returns the offset of the packet
/// identifier from the start of what was written, if the QoS has one.
pub(crate) fn write_publish_head(
    p: &Publish,
    proto: Protocol,
    plan: &Plan,
    packet_id: u16,
    dup: bool,
    out: &mut BytesMut,
) -> Option<usize> {
    let start = out.len();
    out.put_u8(publish_byte0(p, dup));
    put_variable_int(out, plan.remaining);
    put_field(out, p.topic.as_bytes());
    let pid_offset = (p.qos != QoS::AtMostOnce).then(|| {
        let off = out.len() - start;
        out.put_u16(packet_id);
        off
    });
    if proto.is_v5() {
        write_properties(&p.properties, plan.props, out);
    }
    pid_offset
}

fn write_tail(code: ReasonCode, p: &impl PropertySet, plan: &Plan, out: &mut BytesMut) {
    match plan.tail {
        Tail::None => {}
        Tail::ReasonOnly => out.put_u8(code.0),
        Tail::ReasonAndProperties => {
            out.put_u8(code.0);
            write_properties(p, plan.props, out);
        }
    }
}

/// Writes `packet` as planned. Infallible: `plan` checked every limit.
fn write(packet: &Packet, proto: Protocol, plan: &Plan, out: &mut BytesMut) {
    if let Packet::Publish(p) = packet {
        write_publish_head(p, proto, plan, p.packet_id, p.dup, out);
        out.put_slice(&p.payload);
        return;
    }
    out.put_u8(first_byte(packet));
    put_variable_int(out, plan.remaining);
    let v5 = proto.is_v5();
    match packet {
        Packet::Connect(c) => write_connect(c, plan, out),
        Packet::ConnAck(c) => {
            // MQTT 3.1 has no session present flag.
            let sp = c.session_present && proto != Protocol::V3_1;
            out.put_u8(u8::from(sp));
            if v5 {
                out.put_u8(c.reason_code.0);
                write_properties(&c.properties, plan.props, out);
            } else {
                out.put_u8(c.reason_code.to_v3_connack());
            }
        }
        // Written by write_publish_head above.
        Packet::Publish(_) => {}
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            out.put_u16(a.packet_id);
            write_tail(a.reason_code, &a.properties, plan, out);
        }
        Packet::Subscribe(s) => {
            out.put_u16(s.packet_id);
            if v5 {
                write_properties(&s.properties, plan.props, out);
            }
            for (f, o) in &s.filters {
                put_field(out, f.as_bytes());
                let mut b = o.qos as u8;
                if v5 {
                    b |= u8::from(o.no_local) << 2
                        | u8::from(o.retain_as_published) << 3
                        | (o.retain_handling as u8) << 4;
                }
                out.put_u8(b);
            }
        }
        Packet::SubAck(s) => {
            out.put_u16(s.packet_id);
            if v5 {
                write_properties(&s.properties, plan.props, out);
                for c in &s.reason_codes {
                    out.put_u8(c.0);
                }
            } else {
                for c in &s.reason_codes {
                    // 3.1.1 return codes: the granted QoS, or 0x80 failure [MQTT-3.9.3-2].
                    out.put_u8(if c.0 <= 2 { c.0 } else { 0x80 });
                }
            }
        }
        Packet::Unsubscribe(u) => {
            out.put_u16(u.packet_id);
            if v5 {
                write_properties(&u.properties, plan.props, out);
            }
            for f in &u.filters {
                put_field(out, f.as_bytes());
            }
        }
        Packet::UnsubAck(u) => {
            out.put_u16(u.packet_id);
            if v5 {
                write_properties(&u.properties, plan.props, out);
                for c in &u.reason_codes {
                    out.put_u8(c.0);
                }
            }
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) => write_tail(d.reason_code, &d.properties, plan, out),
        Packet::Auth(a) => write_tail(a.reason_code, &a.properties, plan, out),
    }
}

fn write_connect(c: &Connect, plan: &Plan, out: &mut BytesMut) {
    let v5 = c.protocol.is_v5();
    put_field(out, protocol_name(c.protocol));
    out.put_u8(c.protocol as u8);
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(w) = &c.will {
        flags |= 0x04 | (w.qos as u8) << 3 | u8::from(w.retain) << 5;
    }
    flags |= u8::from(c.password.is_some()) << 6 | u8::from(c.username.is_some()) << 7;
    out.put_u8(flags);
    out.put_u16(c.keep_alive);
    if v5 {
        write_properties(&c.properties, plan.props, out);
    }
    put_field(out, c.client_id.as_bytes());
    if let Some(w) = &c.will {
        if v5 {
            write_properties(&w.properties, plan.will_props, out);
        }
        put_field(out, w.topic.as_bytes());
        put_field(out, &w.payload);
    }
    if let Some(u) = &c.username {
        put_field(out, u.as_bytes());
    }
    if let Some(pw) = &c.password {
        put_field(out, pw);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{packet, v3_case};
    use crate::{decode_variable_int, Decoder};
    use proptest::prelude::*;

    fn encoded(p: &Packet, proto: Protocol) -> BytesMut {
        let mut out = BytesMut::new();
        encode(p, proto, &mut out).expect("valid packet encodes");
        out
    }

    /// Encodes `input`, then checks that decoding gives `expected`: whole, and fed one byte at
    /// a time with `needed()` never over-asking (and exact once the fixed header is complete).
    fn check_round_trip(
        input: &Packet,
        expected: &Packet,
        proto: Protocol,
    ) -> Result<(), TestCaseError> {
        let bytes = encoded(input, proto);
        prop_assert_eq!(bytes.len(), encoded_len(input, proto).unwrap());

        let mut buf = bytes.clone();
        let mut d = Decoder::with_protocol(proto, u32::MAX);
        prop_assert_eq!(d.needed(&buf), 0);
        prop_assert_eq!(d.decode(&mut buf), Ok(Some(expected.clone())));
        prop_assert!(buf.is_empty());

        let header_len = 1 + decode_variable_int(&bytes[1..]).unwrap().unwrap().1;
        let mut d = Decoder::with_protocol(proto, u32::MAX);
        let mut partial = BytesMut::new();
        for (i, &b) in bytes.iter().enumerate() {
            let need = d.needed(&partial);
            prop_assert!(need >= 1 && partial.len() + need <= bytes.len());
            if partial.len() >= header_len {
                prop_assert_eq!(partial.len() + need, bytes.len());
            }
            partial.put_u8(b);
            let got = d.decode(&mut partial);
            if i + 1 < bytes.len() {
                prop_assert_eq!(got, Ok(None));
            } else {
                prop_assert_eq!(got, Ok(Some(expected.clone())));
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn v5_round_trip(p in packet()) {
            check_round_trip(&p, &p, Protocol::V5)?;
        }

        #[test]
        fn v3_1_1_round_trip(p in packet()) {
            if let Some((input, expected)) = v3_case(&p, Protocol::V3_1_1) {
                check_round_trip(&input, &expected, Protocol::V3_1_1)?;
            }
        }

        #[test]
        fn v3_1_round_trip(p in packet()) {
            if let Some((input, expected)) = v3_case(&p, Protocol::V3_1) {
                check_round_trip(&input, &expected, Protocol::V3_1)?;
            }
        }

        #[test]
        fn back_to_back_packets_decode_in_order(ps in proptest::collection::vec(packet(), 1..6)) {
            // Not CONNECT: it would switch the decoder's protocol mid-stream.
            let ps: Vec<Packet> = ps.into_iter().filter(|p| !matches!(p, Packet::Connect(_))).collect();
            let mut buf = BytesMut::new();
            for p in &ps {
                encode(p, Protocol::V5, &mut buf).unwrap();
            }
            let mut d = Decoder::with_protocol(Protocol::V5, u32::MAX);
            for p in &ps {
                prop_assert_eq!(d.decode(&mut buf), Ok(Some(p.clone())));
            }
            prop_assert_eq!(d.decode(&mut buf), Ok(None));
            prop_assert!(buf.is_empty());
        }
    }

    #[test]
    fn auth_does_not_exist_in_v3() {
        let p = Packet::Auth(Auth::default());
        let mut out = BytesMut::new();
        assert_eq!(
            encode(&p, Protocol::V3_1_1, &mut out),
            Err(EncodeError::NotInProtocol(15))
        );
        assert!(out.is_empty());
    }

    #[test]
    fn refuses_what_would_be_malformed() {
        let long = crate::ByteStr::from("x".repeat(65_536));
        let p = Packet::Publish(Publish {
            topic: long,
            ..Default::default()
        });
        assert_eq!(
            encoded_len(&p, Protocol::V5),
            Err(EncodeError::FieldTooLong(65_536))
        );
        let p = Packet::Publish(Publish {
            topic: "t".into(),
            qos: QoS::AtLeastOnce,
            packet_id: 0,
            ..Default::default()
        });
        assert_eq!(
            encoded_len(&p, Protocol::V5),
            Err(EncodeError::ZeroPacketId)
        );
        let p = Packet::Subscribe(Subscribe {
            packet_id: 1,
            ..Default::default()
        });
        assert_eq!(encoded_len(&p, Protocol::V5), Err(EncodeError::NoFilters));
        let p = Packet::Publish(Publish {
            topic: "t".into(),
            payload: vec![0; VARINT_MAX as usize].into(),
            ..Default::default()
        });
        assert!(matches!(
            encoded_len(&p, Protocol::V3_1_1),
            Err(EncodeError::PacketTooLarge(_))
        ));
        let mut props = crate::PublishProperties::default();
        props.subscription_identifiers.push(VARINT_MAX + 1);
        let p = Packet::Publish(Publish {
            topic: "t".into(),
            properties: props,
            ..Default::default()
        });
        assert_eq!(
            encoded_len(&p, Protocol::V5),
            Err(EncodeError::VarIntTooLarge(VARINT_MAX + 1))
        );
        let c = Connect {
            protocol: Protocol::V3_1_1,
            clean_start: true,
            keep_alive: 0,
            client_id: "c".into(),
            will: None,
            username: None,
            password: Some("pw".into()),
            properties: Default::default(),
        };
        let p = Packet::Connect(Box::new(c));
        assert_eq!(
            encoded_len(&p, Protocol::V3_1_1),
            Err(EncodeError::PasswordWithoutUsername)
        );
    }
}
