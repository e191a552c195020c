//! Fitting a packet to the peer's Maximum Packet Size.
//!
//! A server must not send a packet larger than the Maximum Packet Size its client announced
//! in CONNECT [MQTT-3.1.2-24] (CONNACK included: the limit is known before it is sent). The
//! Reason String and User Properties are the parts it must leave out rather than exceed that
//! size (CONNACK [MQTT-3.2.2-19] [MQTT-3.2.2-20], PUBACK..PUBCOMP [MQTT-3.4.2-2]
//! [MQTT-3.4.2-3] and their 3.5-3.7 twins, SUBACK [MQTT-3.9.2-1] [MQTT-3.9.2-2], UNSUBACK
//! [MQTT-3.11.2-1] [MQTT-3.11.2-2], DISCONNECT [MQTT-3.14.2-3] [MQTT-3.14.2-4], AUTH
//! [MQTT-3.15.2-2] [MQTT-3.15.2-3]). [`encode_within`] drops them when the whole packet
//! would not fit and refuses the packet if it still does not: the caller then discards it.

use crate::packet::{Ack, Auth, ConnAck, Disconnect, Packet, SubAck, UnsubAck};
use crate::properties::UserProperties;
use crate::{encode, encoded_len, ByteStr, EncodeError, Protocol};
use bytes::BytesMut;
use std::borrow::Cow;
use std::num::NonZeroU32;

/// Appends `packet` to `out` if it fits in `max` bytes (`None`: no limit), without its
/// Reason String and User Properties when only that makes it fit. On error nothing is written.
/// A PUBLISH is never altered (its user properties belong to the application message).
pub fn encode_within(
    packet: &Packet,
    proto: Protocol,
    max: Option<NonZeroU32>,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    encode(&*fit(packet, proto, max)?, proto, out)
}

/// Bytes [`encode_within`] would append (or its error): whether a packet can be sent at all.
pub fn encoded_len_within(
    packet: &Packet,
    proto: Protocol,
    max: Option<NonZeroU32>,
) -> Result<usize, EncodeError> {
    encoded_len(&*fit(packet, proto, max)?, proto)
}

/// `packet` as it can be sent within `max`: itself, or a copy without its optional
/// properties (only in that rare case is it cloned).
fn fit(
    packet: &Packet,
    proto: Protocol,
    max: Option<NonZeroU32>,
) -> Result<Cow<'_, Packet>, EncodeError> {
    let Some(max) = max else {
        return Ok(Cow::Borrowed(packet));
    };
    let over = |p: &Packet| -> Result<Option<usize>, EncodeError> {
        let len = encoded_len(p, proto)?;
        Ok((len > max.get() as usize).then_some(len))
    };
    let too_large = |len| EncodeError::ExceedsPeerMaximum {
        len,
        max: max.get(),
    };
    let Some(len) = over(packet)? else {
        return Ok(Cow::Borrowed(packet));
    };
    let mut stripped = packet.clone();
    if !strip_optional(&mut stripped) {
        return Err(too_large(len));
    }
    match over(&stripped)? {
        None => Ok(Cow::Owned(stripped)),
        Some(len) => Err(too_large(len)),
    }
}

/// Clears the Reason String and User Properties of `p`; false if it has none to clear.
fn strip_optional(p: &mut Packet) -> bool {
    let (reason, users): (&mut Option<ByteStr>, &mut UserProperties) = match p {
        Packet::PubAck(Ack { properties: a, .. })
        | Packet::PubRec(Ack { properties: a, .. })
        | Packet::PubRel(Ack { properties: a, .. })
        | Packet::PubComp(Ack { properties: a, .. })
        | Packet::SubAck(SubAck { properties: a, .. })
        | Packet::UnsubAck(UnsubAck { properties: a, .. }) => {
            (&mut a.reason_string, &mut a.user_properties)
        }
        Packet::ConnAck(ConnAck { properties: c, .. }) => {
            (&mut c.reason_string, &mut c.user_properties)
        }
        Packet::Disconnect(Disconnect { properties: d, .. }) => {
            (&mut d.reason_string, &mut d.user_properties)
        }
        Packet::Auth(Auth { properties: a, .. }) => (&mut a.reason_string, &mut a.user_properties),
        _ => return false,
    };
    let had = reason.is_some() || !users.is_empty();
    *reason = None;
    users.clear();
    had
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Decoder, ReasonCode};

    fn max(n: u32) -> Option<NonZeroU32> {
        NonZeroU32::new(n)
    }

    fn users() -> UserProperties {
        vec![("k".into(), "v".repeat(40).as_str().into())]
    }

    fn disconnect() -> Packet {
        let mut d = Disconnect {
            reason_code: ReasonCode::PROTOCOL_ERROR,
            ..Default::default()
        };
        d.properties.reason_string = Some("[MQTT-3.3.2-1] empty topic name without alias".into());
        d.properties.user_properties = users();
        Packet::Disconnect(d)
    }

    fn decode_v5(bytes: &mut BytesMut) -> Packet {
        let mut d = Decoder::with_protocol(Protocol::V5, 1 << 20);
        d.decode(bytes).unwrap().unwrap()
    }

    #[test]
    fn a_packet_that_fits_is_sent_whole() {
        let p = disconnect();
        let mut out = BytesMut::new();
        encode_within(&p, Protocol::V5, max(1000), &mut out).unwrap();
        assert_eq!(decode_v5(&mut out), p);
        let mut out = BytesMut::new();
        encode_within(&p, Protocol::V5, None, &mut out).unwrap();
        assert_eq!(decode_v5(&mut out), p);
    }

    #[test]
    fn reason_string_and_user_properties_go_when_too_large() {
        let mut out = BytesMut::new();
        encode_within(&disconnect(), Protocol::V5, max(20), &mut out).unwrap();
        assert!(out.len() <= 20, "{} bytes", out.len());
        let Packet::Disconnect(d) = decode_v5(&mut out) else {
            panic!("not a DISCONNECT");
        };
        assert_eq!(d.reason_code, ReasonCode::PROTOCOL_ERROR);
        assert_eq!(d.properties, Default::default());
    }

    #[test]
    fn every_ack_type_is_stripped() {
        let mut ack = Ack::new(7);
        ack.reason_code = ReasonCode::NOT_AUTHORIZED;
        ack.properties.reason_string = Some("no".repeat(30).as_str().into());
        ack.properties.user_properties = users();
        let suback = SubAck {
            packet_id: 7,
            properties: ack.properties.clone(),
            reason_codes: vec![ReasonCode::NOT_AUTHORIZED],
        };
        let mut connack = ConnAck {
            reason_code: ReasonCode::NOT_AUTHORIZED,
            ..Default::default()
        };
        connack.properties.reason_string = ack.properties.reason_string.clone();
        for p in [
            Packet::PubAck(ack.clone()),
            Packet::PubRec(ack.clone()),
            Packet::PubRel(ack.clone()),
            Packet::PubComp(ack.clone()),
            Packet::SubAck(suback),
            Packet::ConnAck(connack),
        ] {
            let mut out = BytesMut::new();
            encode_within(&p, Protocol::V5, max(16), &mut out).unwrap();
            assert!(out.len() <= 16, "{p:?}: {} bytes", out.len());
        }
    }

    #[test]
    fn encoded_len_within_says_what_encode_within_writes() {
        let mut out = BytesMut::new();
        encode_within(&disconnect(), Protocol::V5, max(20), &mut out).unwrap();
        let len = encoded_len_within(&disconnect(), Protocol::V5, max(20)).unwrap();
        assert_eq!(len, out.len());
        assert!(encoded_len_within(&disconnect(), Protocol::V5, max(2)).is_err());
    }

    #[test]
    fn a_packet_too_large_even_stripped_is_refused_and_not_written() {
        let mut out = BytesMut::new();
        let err = encode_within(&disconnect(), Protocol::V5, max(2), &mut out).unwrap_err();
        assert_eq!(err, EncodeError::ExceedsPeerMaximum { len: 3, max: 2 });
        assert!(out.is_empty());
        let suback = Packet::SubAck(SubAck {
            packet_id: 1,
            properties: Default::default(),
            reason_codes: vec![ReasonCode::SUCCESS; 40],
        });
        assert!(encode_within(&suback, Protocol::V5, max(20), &mut out).is_err());
        assert!(out.is_empty());
    }
}
