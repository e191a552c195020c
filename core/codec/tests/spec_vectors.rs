//! Byte-exact encodings: the specification's own examples (the CONNECT variable headers of
//! MQTT 3.1.1 section 3.1.2.10 and MQTT 5.0 section 3.1.2.12) and small packets derived by hand
//! from the packet layouts. Each vector is checked in both directions.

use bytes::BytesMut;
use uringmq_codec::*;

/// `packet` encodes to exactly `wire` for `proto`, and `wire` decodes back to `packet`.
fn both_ways(packet: Packet, proto: Protocol, wire: &[u8]) {
    let mut out = BytesMut::new();
    encode(&packet, proto, &mut out).unwrap();
    assert_eq!(&out[..], wire, "encoding {packet:?} for {proto:?}");
    assert_eq!(encoded_len(&packet, proto), Ok(wire.len()));
    let mut buf = BytesMut::from(wire);
    let decoded = Decoder::with_protocol(proto, u32::MAX)
        .decode(&mut buf)
        .unwrap();
    assert_eq!(decoded, Some(packet));
    assert!(buf.is_empty());
}

/// The CONNECT of the examples: clean start, will QoS 1 (no retain), user name and password,
/// keep alive 10, so the flags byte is 0xCE as in the specification's example.
fn example_connect(protocol: Protocol) -> Connect {
    let mut properties = ConnectProperties::default();
    if protocol.is_v5() {
        properties.session_expiry_interval = Some(10);
    }
    Connect {
        protocol,
        clean_start: true,
        keep_alive: 10,
        client_id: "c".into(),
        will: Some(LastWill {
            topic: "w".into(),
            payload: "p".into(),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: WillProperties::default(),
        }),
        username: Some("u".into()),
        password: Some("pw".into()),
        properties,
    }
}

#[test]
fn connect_v3_1_1_variable_header_example() {
    #[rustfmt::skip]
    let wire = [
        0x10, 26,
        // Variable header, as in 3.1.1 section 3.1.2.10: name, level 4, flags 0xCE, keep alive 10.
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xce, 0x00, 0x0a,
        0x00, 0x01, b'c',        // client identifier
        0x00, 0x01, b'w',        // will topic
        0x00, 0x01, b'p',        // will message
        0x00, 0x01, b'u',        // user name
        0x00, 0x02, b'p', b'w',  // password
    ];
    both_ways(
        Packet::Connect(Box::new(example_connect(Protocol::V3_1_1))),
        Protocol::V3_1_1,
        &wire,
    );
}

#[test]
fn connect_v5_variable_header_example() {
    #[rustfmt::skip]
    let wire = [
        0x10, 33,
        // As in 5.0 section 3.1.2.12: name, version 5, flags 0xCE, keep alive 10,
        // properties of length 5: Session Expiry Interval (0x11) = 10.
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0xce, 0x00, 0x0a,
        0x05, 0x11, 0x00, 0x00, 0x00, 0x0a,
        0x00, 0x01, b'c',        // client identifier
        0x00,                    // will properties: none
        0x00, 0x01, b'w',
        0x00, 0x01, b'p',
        0x00, 0x01, b'u',
        0x00, 0x02, b'p', b'w',
    ];
    both_ways(
        Packet::Connect(Box::new(example_connect(Protocol::V5))),
        Protocol::V5,
        &wire,
    );
}

#[test]
fn connect_v3_1_uses_mqisdp() {
    let c = Connect {
        protocol: Protocol::V3_1,
        clean_start: true,
        keep_alive: 60,
        client_id: "c".into(),
        will: None,
        username: None,
        password: None,
        properties: Default::default(),
    };
    #[rustfmt::skip]
    let wire = [0x10, 15, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0x02, 0, 60, 0, 1, b'c'];
    both_ways(Packet::Connect(Box::new(c)), Protocol::V3_1, &wire);
}

fn publish_qos1() -> Publish {
    Publish {
        qos: QoS::AtLeastOnce,
        topic: "a/b".into(),
        packet_id: 10,
        payload: "hi".into(),
        ..Default::default()
    }
}

#[test]
fn publish() {
    let wire = [0x32, 9, 0, 3, b'a', b'/', b'b', 0, 10, b'h', b'i'];
    both_ways(Packet::Publish(publish_qos1()), Protocol::V3_1_1, &wire);
    // 5.0 adds an empty property block after the packet identifier.
    let wire = [0x32, 10, 0, 3, b'a', b'/', b'b', 0, 10, 0, b'h', b'i'];
    both_ways(Packet::Publish(publish_qos1()), Protocol::V5, &wire);
    // QoS 0, retained, with a topic alias: no packet identifier.
    let mut p = Publish {
        retain: true,
        topic: "t".into(),
        ..Default::default()
    };
    p.properties.topic_alias = Some(1);
    both_ways(
        Packet::Publish(p),
        Protocol::V5,
        &[0x31, 7, 0, 1, b't', 3, 0x23, 0, 1],
    );
}

#[test]
fn subscribe() {
    let v3 = Subscribe {
        packet_id: 1,
        properties: Default::default(),
        filters: vec![(
            "a/#".into(),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
        )],
    };
    both_ways(
        Packet::Subscribe(v3),
        Protocol::V3_1_1,
        &[0x82, 8, 0, 1, 0, 3, b'a', b'/', b'#', 0x01],
    );
    // Options: QoS 1 | No Local (bit 2) | Retain As Published (bit 3) | Retain Handling 2 (bits 4-5).
    let opts = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: true,
        retain_as_published: true,
        retain_handling: RetainHandling::DoNotSend,
    };
    let v5 = Subscribe {
        packet_id: 1,
        properties: Default::default(),
        filters: vec![("a/#".into(), opts)],
    };
    both_ways(
        Packet::Subscribe(v5),
        Protocol::V5,
        &[0x82, 9, 0, 1, 0, 0, 3, b'a', b'/', b'#', 0x2d],
    );
}

#[test]
fn acknowledgements() {
    for proto in [Protocol::V3_1_1, Protocol::V5] {
        both_ways(Packet::PubAck(Ack::new(10)), proto, &[0x40, 2, 0, 10]);
        both_ways(Packet::PubRel(Ack::new(10)), proto, &[0x62, 2, 0, 10]);
        both_ways(Packet::PingReq, proto, &[0xc0, 0]);
        both_ways(Packet::PingResp, proto, &[0xd0, 0]);
        both_ways(Packet::Disconnect(Disconnect::default()), proto, &[0xe0, 0]);
    }
    let no_subscribers = Ack {
        reason_code: ReasonCode::NO_MATCHING_SUBSCRIBERS,
        ..Ack::new(10)
    };
    both_ways(
        Packet::PubAck(no_subscribers),
        Protocol::V5,
        &[0x40, 3, 0, 10, 0x10],
    );
    let with_will = Disconnect {
        reason_code: ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
        ..Default::default()
    };
    both_ways(
        Packet::Disconnect(with_will),
        Protocol::V5,
        &[0xe0, 1, 0x04],
    );
    both_ways(
        Packet::UnsubAck(UnsubAck {
            packet_id: 1,
            ..Default::default()
        }),
        Protocol::V3_1_1,
        &[0xb0, 2, 0, 1],
    );
}

#[test]
fn connack() {
    let ok = ConnAck {
        session_present: true,
        ..Default::default()
    };
    both_ways(
        Packet::ConnAck(ok.clone()),
        Protocol::V3_1_1,
        &[0x20, 2, 1, 0],
    );
    both_ways(Packet::ConnAck(ok), Protocol::V5, &[0x20, 3, 1, 0, 0]);
    let bad = ConnAck {
        reason_code: ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        ..Default::default()
    };
    both_ways(
        Packet::ConnAck(bad.clone()),
        Protocol::V5,
        &[0x20, 3, 0, 0x84, 0],
    );
    // 3.1.1 return code 1: unacceptable protocol version.
    both_ways(Packet::ConnAck(bad), Protocol::V3_1_1, &[0x20, 2, 0, 1]);
}

/// What MQTT 3.x cannot say is mapped or dropped on encode.
#[test]
fn v3_downgrades() {
    let mut out = BytesMut::new();
    let refused = ConnAck {
        reason_code: ReasonCode::BANNED,
        ..Default::default()
    };
    encode(&Packet::ConnAck(refused), Protocol::V3_1_1, &mut out).unwrap();
    assert_eq!(&out[..], &[0x20, 2, 0, 5]); // not authorized
    out.clear();
    let codes = [0, 1, 2, 0x80, 0x97].map(ReasonCode).to_vec();
    let suback = SubAck {
        packet_id: 1,
        reason_codes: codes,
        ..Default::default()
    };
    encode(&Packet::SubAck(suback), Protocol::V3_1_1, &mut out).unwrap();
    assert_eq!(&out[..], &[0x90, 7, 0, 1, 0, 1, 2, 0x80, 0x80]);
    out.clear();
    let unsuback = UnsubAck {
        packet_id: 1,
        reason_codes: vec![ReasonCode::SUCCESS],
        ..Default::default()
    };
    encode(&Packet::UnsubAck(unsuback), Protocol::V3_1_1, &mut out).unwrap();
    assert_eq!(&out[..], &[0xb0, 2, 0, 1]);
    out.clear();
    let mut d = Disconnect {
        reason_code: ReasonCode::SERVER_SHUTTING_DOWN,
        ..Default::default()
    };
    d.properties.reason_string = Some("bye".into());
    encode(&Packet::Disconnect(d), Protocol::V3_1_1, &mut out).unwrap();
    assert_eq!(&out[..], &[0xe0, 0]);
}

#[test]
fn publish_head_shares_one_encoding() {
    let p = publish_qos1();
    let head = PublishHead::encode(&p, Protocol::V3_1_1).unwrap();
    let mut out = BytesMut::new();
    head.write(0x0102, true, &mut out);
    assert_eq!(&out[..], &[0x3a, 9, 0, 3, b'a', b'/', b'b', 1, 2]);
    assert_eq!(head.packet_len(), 11);
}
