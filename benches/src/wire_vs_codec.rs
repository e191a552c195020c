//! Cross-checks the load generator's hand-written MQTT encoding against `uringmq-codec`, in both
//! directions. They are written independently on purpose (see `wire`), so agreement here is
//! evidence that both follow the specification rather than the same mistake.

use crate::wire::{self, kind, Version};
use bytes::{Bytes, BytesMut};
use uringmq_codec::{
    encode, Ack, ConnAck, ConnAckProperties, Decoder, Packet, Protocol, Publish, QoS, ReasonCode,
    SubAck,
};

fn proto(v: Version) -> Protocol {
    match v {
        Version::V311 => Protocol::V3_1_1,
        Version::V5 => Protocol::V5,
    }
}

fn decode_one(v: Version, bytes: &[u8]) -> Packet {
    let mut buf = BytesMut::from(bytes);
    let p = Decoder::with_protocol(proto(v), 1 << 20)
        .decode(&mut buf)
        .expect("codec accepts our bytes")
        .expect("whole packet");
    assert!(buf.is_empty(), "codec consumed the whole packet");
    p
}

#[test]
fn connect_decodes_with_the_codec() {
    for v in [Version::V311, Version::V5] {
        let mut out = Vec::new();
        wire::connect(&mut out, v, "ul-1-0-p3", 30, false);
        let mut buf = BytesMut::from(&out[..]);
        match Decoder::new(1 << 20).decode(&mut buf).unwrap().unwrap() {
            Packet::Connect(c) => {
                assert_eq!(c.protocol, proto(v));
                assert!(c.clean_start);
                assert_eq!(c.keep_alive, 30);
                assert_eq!(c.client_id, "ul-1-0-p3");
                assert!(c.will.is_none() && c.username.is_none());
            }
            other => panic!("not a CONNECT: {other:?}"),
        }
    }
    for v in [Version::V311, Version::V5] {
        let mut out = Vec::new();
        wire::connect(&mut out, v, "ul-1-0-s1", 30, true);
        let mut buf = BytesMut::from(&out[..]);
        match Decoder::new(1 << 20).decode(&mut buf).unwrap().unwrap() {
            Packet::Connect(c) => {
                assert!(!c.clean_start);
                let expiry = c.properties.session_expiry_interval;
                assert_eq!(expiry, (v == Version::V5).then_some(3600));
            }
            other => panic!("not a CONNECT: {other:?}"),
        }
    }
}

#[test]
fn subscribe_publish_and_acks_decode_with_the_codec() {
    for v in [Version::V311, Version::V5] {
        let mut out = Vec::new();
        wire::subscribe(&mut out, v, 1, "$share/g/a/+", 2);
        match decode_one(v, &out) {
            Packet::Subscribe(s) => {
                assert_eq!(s.packet_id, 1);
                assert_eq!(s.filters.len(), 1);
                assert_eq!(s.filters[0].0, "$share/g/a/+");
                assert_eq!(s.filters[0].1.qos, QoS::ExactlyOnce);
            }
            other => panic!("not a SUBSCRIBE: {other:?}"),
        }
        for qos in 0..3u8 {
            let mut out = wire::publish_head(v, "ul/x/0/pair/1", qos, 30);
            wire::publish_mid(&mut out, v, qos, 77);
            out.extend_from_slice(&[7u8; 30]);
            match decode_one(v, &out) {
                Packet::Publish(p) => {
                    assert_eq!(p.qos as u8, qos);
                    assert_eq!(p.topic, "ul/x/0/pair/1");
                    assert_eq!(p.packet_id, if qos > 0 { 77 } else { 0 });
                    assert_eq!(&p.payload[..], &[7u8; 30]);
                }
                other => panic!("not a PUBLISH: {other:?}"),
            }
        }
        for k in [kind::PUBACK, kind::PUBREC, kind::PUBREL, kind::PUBCOMP] {
            let mut out = Vec::new();
            wire::ack(&mut out, k, 513);
            let p = decode_one(v, &out);
            assert_eq!(p.packet_type(), k);
        }
        let mut out = Vec::new();
        wire::pingreq(&mut out);
        wire::disconnect(&mut out);
        assert_eq!(decode_one(v, &out[..2]), Packet::PingReq);
        assert!(matches!(decode_one(v, &out[2..]), Packet::Disconnect(_)));
    }
}

fn encoded(p: &Packet, v: Version) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode(p, proto(v), &mut out).expect("codec encodes");
    out.to_vec()
}

#[test]
fn codec_server_packets_parse_with_wire() {
    let connack = Packet::ConnAck(ConnAck {
        session_present: false,
        reason_code: ReasonCode::SUCCESS,
        properties: ConnAckProperties {
            receive_maximum: Some(20),
            topic_alias_maximum: Some(10),
            ..Default::default()
        },
    });
    let bytes = encoded(&connack, Version::V5);
    let (f, used) = wire::next_frame(&bytes).unwrap().unwrap();
    assert_eq!((f.kind, used), (kind::CONNACK, bytes.len()));
    assert_eq!(
        wire::connack(Version::V5, f.body).unwrap(),
        wire::ConnAckView {
            code: 0,
            receive_maximum: 20
        }
    );

    for v in [Version::V311, Version::V5] {
        let suback = Packet::SubAck(SubAck {
            packet_id: 1,
            reason_codes: vec![ReasonCode(1)],
            ..Default::default()
        });
        let bytes = encoded(&suback, v);
        let (f, _) = wire::next_frame(&bytes).unwrap().unwrap();
        assert_eq!(wire::suback(v, f.body).unwrap(), (1, vec![1]));

        let publish = Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            topic: "t/1".into(),
            packet_id: 9,
            payload: Bytes::from_static(b"payload"),
            ..Default::default()
        });
        let bytes = encoded(&publish, v);
        let (f, _) = wire::next_frame(&bytes).unwrap().unwrap();
        let p = wire::publish(v, f.flags, f.body).unwrap();
        assert_eq!((p.qos, p.packet_id, p.payload), (1, 9, &b"payload"[..]));

        let pubrec = Packet::PubRec(Ack::new(300));
        let bytes = encoded(&pubrec, v);
        let (f, _) = wire::next_frame(&bytes).unwrap().unwrap();
        assert_eq!(
            (f.kind, wire::ack_fields(f.body).unwrap()),
            (kind::PUBREC, (300, 0))
        );
    }
}
