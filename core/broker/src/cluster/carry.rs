//! A message on a link: an MQTT 5 PUBLISH as `uringmq-codec` encodes and decodes it, so every
//! v5 property crosses as it is, and the Message Expiry Interval is the time left when it
//! leaves (the receiving node counts from its arrival, as for a client's PUBLISH).

use super::frame::{
    begin_frame, end_frame, put_forward_head, put_publish_head, put_retain_head, ForwardHead,
};
use bytes::{Bytes, BytesMut};
use std::time::Instant;
use uringmq_codec::{encode, Decoder, Packet, Protocol, Publish, QoS};
use uringmq_session::Message;

/// What a frame carries a message for.
pub enum Carry<'a> {
    /// Subscribers (or one member of the group) of the receiving node.
    Publish {
        /// The publishing core.
        core: u16,
        /// A shared group.
        group: Option<&'a str>,
        /// Passed on by a node that got it from another (see `Frame::Publish`).
        again: bool,
    },
    /// The receiving node's retained store.
    Retain,
    /// One session that moved to the receiving node (from its stub here).
    Forward(ForwardHead<'a>),
}

/// Appends the frame carrying `msg` with sequence number `seq` to `out`. `false` (nothing
/// appended): the message expired, or it cannot be encoded (a property too long).
pub fn encode_message(
    out: &mut BytesMut,
    seq: u64,
    carry: Carry<'_>,
    msg: &Message,
    now: Instant,
) -> bool {
    let Ok(expiry) = msg.remaining_expiry(now) else {
        return false;
    };
    let mut properties = msg.properties.clone();
    properties.message_expiry_interval = expiry;
    let packet = Packet::Publish(Publish {
        dup: false,
        qos: msg.qos,
        retain: msg.retain,
        topic: msg.topic.clone(),
        // Only a placeholder: a link has its own sequence numbers.
        packet_id: if msg.qos == QoS::AtMostOnce { 0 } else { 1 },
        properties,
        payload: msg.payload.clone(),
    });
    let start = begin_frame(out);
    match carry {
        Carry::Publish { core, group, again } => put_publish_head(out, seq, core, group, again),
        Carry::Retain => put_retain_head(out, seq),
        Carry::Forward(head) => put_forward_head(out, seq, &head),
    }
    if encode(&packet, Protocol::V5, out).is_err() {
        out.truncate(start);
        return false;
    }
    end_frame(out, start);
    true
}

/// The message a frame's packet carries, as if it arrived now; `None` if it is no PUBLISH.
/// Taken by value: a packet nothing else holds becomes the decoder's buffer without a copy,
/// and the payload stays a slice of it.
pub fn decode_message(packet: Bytes, now: Instant) -> Option<Message> {
    let mut buf = BytesMut::from(packet);
    let mut decoder = Decoder::with_protocol(Protocol::V5, u32::MAX);
    let Ok(Some(Packet::Publish(p))) = decoder.decode(&mut buf) else {
        return None;
    };
    Some(Message {
        topic: p.topic,
        payload: p.payload,
        qos: p.qos,
        retain: p.retain,
        properties: p.properties,
        // No-local concerns the publisher's own session, which is on the sending node.
        origin: None,
        received_at: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::frame::Frame;
    use uringmq_codec::{ByteStr, PublishProperties};

    fn message(expiry: Option<u32>) -> Message {
        let mut properties = PublishProperties {
            message_expiry_interval: expiry,
            content_type: Some(ByteStr::from_static("text/plain")),
            correlation_data: Some(Bytes::from_static(b"c1")),
            ..Default::default()
        };
        properties
            .user_properties
            .push((ByteStr::from_static("k"), ByteStr::from_static("v")));
        Message {
            topic: ByteStr::from_static("a/b"),
            payload: Bytes::from_static(b"hello"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties,
            origin: None,
            received_at: Instant::now(),
        }
    }

    #[test]
    fn a_message_crosses_with_its_properties_and_the_expiry_left() {
        let m = message(Some(60));
        let mut out = BytesMut::new();
        let later = m.received_at + std::time::Duration::from_secs(10);
        let carry = Carry::Publish {
            core: 1,
            group: None,
            again: false,
        };
        assert!(encode_message(&mut out, 5, carry, &m, later));
        let Ok(Frame::Publish {
            seq, core, packet, ..
        }) = Frame::decode(&out[4..])
        else {
            panic!("not a Publish frame");
        };
        assert_eq!((seq, core), (5, 1));
        let back = decode_message(packet, later).unwrap();
        assert_eq!(back.topic, m.topic);
        assert_eq!(back.payload, m.payload);
        assert_eq!((back.qos, back.retain), (QoS::ExactlyOnce, true));
        assert_eq!(back.properties.message_expiry_interval, Some(50));
        assert_eq!(back.properties.content_type, m.properties.content_type);
        assert_eq!(
            back.properties.user_properties,
            m.properties.user_properties
        );
        assert_eq!(
            back.properties.correlation_data,
            m.properties.correlation_data
        );
    }

    #[test]
    fn an_expired_message_does_not_cross() {
        let m = message(Some(1));
        let mut out = BytesMut::new();
        let later = m.received_at + std::time::Duration::from_secs(2);
        assert!(!encode_message(&mut out, 1, Carry::Retain, &m, later));
        assert!(out.is_empty());
    }
}
