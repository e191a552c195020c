//! MQTT 5 features: topic aliases both ways, message expiry, receive maximum, maximum packet
//! size, no local, property pass-through, server keep alive, reason codes.

use crate::support::*;
use bytes::Bytes;
use std::time::Duration;

#[test]
fn properties_pass_through_untouched() {
    let b = broker();
    let mut s = Client::connect(b.local_addr(), Protocol::V5, "s");
    s.subscribe("pp/t", QoS::AtLeastOnce);
    let mut p = Client::connect(b.local_addr(), Protocol::V5, "p");
    let mut m = publish("pp/t", b"{}", QoS::AtLeastOnce, false);
    m.properties = PublishProperties {
        payload_format_indicator: Some(1),
        content_type: Some("application/json".into()),
        response_topic: Some("reply/here".into()),
        correlation_data: Some(Bytes::from_static(b"\x01\x02")),
        user_properties: vec![("k".into(), "v".into()), ("k".into(), "v2".into())],
        ..Default::default()
    };
    let sent = m.properties.clone();
    assert_eq!(p.publish_with(m), ReasonCode::SUCCESS);
    let got = s.recv_publish();
    assert_eq!(
        got.properties, sent,
        "[MQTT-3.3.2-17/18/20] [MQTT-3.3.2-15] passed unaltered"
    );
}

#[test]
fn inbound_topic_alias() {
    let b = broker_with(|c| c.topic_alias_maximum = 2);
    let mut s = Client::connect(b.local_addr(), Protocol::V5, "s");
    s.subscribe("alias/t", QoS::AtMostOnce);
    let mut p = Client::connect(b.local_addr(), Protocol::V5, "p");
    let mut m = publish("alias/t", b"1", QoS::AtMostOnce, false);
    m.properties.topic_alias = Some(1);
    p.send(&Packet::Publish(m.clone()));
    m.topic = ByteStr::new();
    m.payload = Bytes::from_static(b"2");
    p.send(&Packet::Publish(m.clone()));
    for want in [b"1", b"2"] {
        let got = s.recv_publish();
        assert_eq!(got.topic, "alias/t");
        assert_eq!(&got.payload[..], want);
    }
    m.properties.topic_alias = Some(3); // above the maximum
    p.send(&Packet::Publish(m));
    p.expect_disconnect(Some(ReasonCode::TOPIC_ALIAS_INVALID));
}

#[test]
fn unknown_inbound_alias_is_a_protocol_error() {
    let b = broker();
    let mut p = Client::connect(b.local_addr(), Protocol::V5, "p");
    let mut m = publish("", b"x", QoS::AtMostOnce, false);
    m.topic = ByteStr::new();
    m.properties.topic_alias = Some(1);
    p.send(&Packet::Publish(m));
    // §3.3.2.3.4: Protocol Error; 0x94 is only for alias 0 or above the maximum.
    p.expect_disconnect(Some(ReasonCode::PROTOCOL_ERROR));
}

#[test]
fn topic_alias_zero_is_invalid() {
    let b = broker();
    let mut p = Client::connect(b.local_addr(), Protocol::V5, "p");
    let mut m = publish("z/t", b"x", QoS::AtMostOnce, false);
    m.properties.topic_alias = Some(0);
    p.send(&Packet::Publish(m));
    p.expect_disconnect(Some(ReasonCode::TOPIC_ALIAS_INVALID));
}

#[test]
fn outbound_topic_aliases_when_the_client_allows() {
    let b = broker();
    let mut c = connect_packet(Protocol::V5, "s");
    c.properties.topic_alias_maximum = Some(4);
    let (mut s, _) = Client::connect_with(b.local_addr(), c);
    s.subscribe("long/topic/name", QoS::AtMostOnce);
    let mut p = Client::connect(b.local_addr(), Protocol::V5, "p");
    p.publish("long/topic/name", b"1", QoS::AtMostOnce, false);
    p.publish("long/topic/name", b"2", QoS::AtMostOnce, false);
    let first = s.recv_publish();
    assert_eq!(first.topic, "long/topic/name");
    let alias = first.properties.topic_alias.expect("alias set");
    let second = s.recv_publish();
    assert_eq!(second.topic, "", "the alias stands in for the topic");
    assert_eq!(second.properties.topic_alias, Some(alias));
    // A client without Topic Alias Maximum never gets one [MQTT-3.3.2-11].
    let mut plain = Client::connect(b.local_addr(), Protocol::V5, "plain");
    plain.subscribe("long/topic/name", QoS::AtMostOnce);
    p.publish("long/topic/name", b"3", QoS::AtMostOnce, false);
    assert_eq!(plain.recv_publish().properties.topic_alias, None);
}

#[test]
fn message_expiry_is_decremented_and_expired_messages_dropped() {
    let b = broker();
    let mut c = connect_packet(Protocol::V5, "s");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(60);
    let (mut s, _) = Client::connect_with(b.local_addr(), c.clone());
    s.subscribe("ex/t", QoS::AtLeastOnce);
    s.disconnect();
    let mut p = Client::connect(b.local_addr(), Protocol::V5, "p");
    let mut short = publish("ex/t", b"short", QoS::AtLeastOnce, false);
    short.properties.message_expiry_interval = Some(1);
    p.publish_with(short);
    let mut long = publish("ex/t", b"long", QoS::AtLeastOnce, false);
    long.properties.message_expiry_interval = Some(100);
    p.publish_with(long);
    std::thread::sleep(Duration::from_millis(2100));
    let (mut s, _) = Client::connect_with(b.local_addr(), c);
    let got = s.recv_publish();
    assert_eq!(
        &got.payload[..],
        b"long",
        "[MQTT-3.3.2-5] the expired one is gone"
    );
    let left = got.properties.message_expiry_interval.unwrap();
    assert!(left <= 98, "[MQTT-3.3.2-6] decremented: {left}");
    s.expect_nothing();
    assert!(b.stats().expired >= 1);
}

#[test]
fn receive_maximum_limits_unacknowledged_deliveries() {
    let b = broker();
    let mut c = connect_packet(Protocol::V5, "s");
    c.properties.receive_maximum = Some(2);
    let (mut s, _) = Client::connect_with(b.local_addr(), c);
    s.subscribe("rm/t", QoS::AtLeastOnce);
    let mut p = Client::connect(b.local_addr(), Protocol::V5, "p");
    for i in 0..5u8 {
        p.publish("rm/t", &[i], QoS::AtLeastOnce, false);
    }
    let a = s.recv_publish_noack();
    let bb = s.recv_publish_noack();
    s.expect_nothing(); // [MQTT-3.3.4-7]
    s.ack(&a);
    let c3 = s.recv_publish_noack();
    assert_eq!(c3.payload[0], 2);
    s.ack(&bb);
    s.ack(&c3);
    assert_eq!(s.recv_publish().payload[0], 3);
    assert_eq!(s.recv_publish().payload[0], 4);
}

#[test]
fn client_exceeding_our_receive_maximum_is_disconnected() {
    let b = broker_with(|c| c.max_inflight = 2);
    let (mut p, ack) = Client::connect_with(b.local_addr(), connect_packet(Protocol::V5, "p"));
    assert_eq!(ack.properties.receive_maximum, Some(2));
    for pid in 1..=3u16 {
        let mut m = publish("x", b"x", QoS::ExactlyOnce, false);
        m.packet_id = pid;
        p.send(&Packet::Publish(m));
    }
    p.expect_disconnect(Some(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED));
}

#[test]
fn never_send_more_than_the_client_maximum_packet_size() {
    let b = broker();
    let mut c = connect_packet(Protocol::V5, "s");
    c.properties.maximum_packet_size = Some(100);
    let (mut s, _) = Client::connect_with(b.local_addr(), c);
    s.subscribe("mp/t", QoS::AtLeastOnce);
    let mut p = Client::connect(b.local_addr(), Protocol::V5, "p");
    p.publish("mp/t", &[0u8; 200], QoS::AtLeastOnce, false);
    p.publish("mp/t", b"small", QoS::AtLeastOnce, false);
    assert_eq!(
        &s.recv_publish().payload[..],
        b"small",
        "[MQTT-3.1.2-25] the big one is discarded"
    );
}

#[test]
fn packets_over_our_maximum_are_refused() {
    let b = broker_with(|c| c.max_packet_size = 128);
    let (mut p, ack) = Client::connect_with(b.local_addr(), connect_packet(Protocol::V5, "p"));
    assert_eq!(ack.properties.maximum_packet_size, Some(128));
    p.send(&Packet::Publish(publish(
        "big",
        &[0u8; 300],
        QoS::AtMostOnce,
        false,
    )));
    p.expect_disconnect(Some(ReasonCode::PACKET_TOO_LARGE));
}

#[test]
fn no_local() {
    let b = broker();
    let mut c = Client::connect(b.local_addr(), Protocol::V5, "c");
    let o = SubscriptionOptions {
        qos: QoS::AtMostOnce,
        no_local: true,
        ..Default::default()
    };
    c.subscribe_with(&[("nl/t", o)], Default::default());
    c.publish("nl/t", b"mine", QoS::AtMostOnce, false);
    c.expect_nothing();
    let mut other = Client::connect(b.local_addr(), Protocol::V5, "o");
    other.publish("nl/t", b"theirs", QoS::AtMostOnce, false);
    assert_eq!(&c.recv_publish().payload[..], b"theirs");
}

#[test]
fn server_keep_alive_overrides_a_too_long_request() {
    let b = broker_with(|c| c.max_keepalive = 30);
    let mut c = connect_packet(Protocol::V5, "k");
    c.keep_alive = 600;
    let (_c, ack) = Client::connect_with(b.local_addr(), c);
    assert_eq!(ack.properties.server_keep_alive, Some(30));
}

#[test]
fn sys_topics_cannot_be_published_by_clients() {
    // Without the broker's own $SYS topics, which `$SYS/#` would get.
    let b = broker_with(|c| c.sys_interval_secs = 0);
    let mut s = Client::connect(b.local_addr(), Protocol::V5, "s");
    s.subscribe("$SYS/#", QoS::AtMostOnce);
    let mut p = Client::connect(b.local_addr(), Protocol::V5, "p");
    assert_eq!(
        p.publish_with(publish("$SYS/fake", b"x", QoS::AtLeastOnce, false)),
        ReasonCode::NOT_AUTHORIZED
    );
    s.expect_nothing();
}

#[test]
fn session_expiry_in_disconnect_after_zero_is_a_protocol_error() {
    let b = broker();
    let mut p = Client::connect(b.local_addr(), Protocol::V5, "p");
    let d = Disconnect {
        reason_code: ReasonCode::SUCCESS,
        properties: DisconnectProperties {
            session_expiry_interval: Some(10),
            ..Default::default()
        },
    };
    p.send(&Packet::Disconnect(d));
    p.expect_disconnect(Some(ReasonCode::PROTOCOL_ERROR));
}

#[test]
fn subscription_limits_and_max_qos() {
    let b = broker_with(|c| {
        c.max_subscriptions_per_client = 2;
        c.max_qos = 1;
        c.max_topic_levels = 3;
    });
    let (mut s, ack) = Client::connect_with(b.local_addr(), connect_packet(Protocol::V5, "s"));
    assert_eq!(ack.properties.maximum_qos, Some(1));
    let o = SubscriptionOptions {
        qos: QoS::ExactlyOnce,
        ..Default::default()
    };
    let codes = s.subscribe_with(
        &[("a", o), ("b", o), ("c", o), ("a/b/c/d", o), ("a/#/b", o)],
        Default::default(),
    );
    assert_eq!(
        codes,
        vec![
            ReasonCode::GRANTED_QOS_1,
            ReasonCode::GRANTED_QOS_1,
            ReasonCode::QUOTA_EXCEEDED,
            ReasonCode::TOPIC_FILTER_INVALID,
            ReasonCode::TOPIC_FILTER_INVALID
        ]
    );
    let (mut v3, _) = Client::connect_with(b.local_addr(), connect_packet(Protocol::V3_1_1, "v3"));
    let codes = v3.subscribe_with(&[("x/#/y", o)], Default::default());
    assert_eq!(codes, vec![ReasonCode(0x80)]);
    // A PUBLISH above Maximum QoS is a protocol error [MQTT-3.2.2-11].
    let mut m = publish("a", b"x", QoS::ExactlyOnce, false);
    m.packet_id = 1;
    s.send(&Packet::Publish(m));
    s.expect_disconnect(Some(ReasonCode::QOS_NOT_SUPPORTED));
}

/// A client announcing Maximum Packet Size 20 that breaks a rule gets its DISCONNECT without
/// the Reason String that would make it larger [MQTT-3.1.2-24] [MQTT-3.14.2-3]: at most 20
/// bytes, reason code kept.
#[test]
fn the_disconnect_fits_the_client_maximum_packet_size() {
    use std::io::Read;
    let b = broker();
    let mut c = connect_packet(Protocol::V5, "tiny");
    c.properties.maximum_packet_size = Some(20);
    let (mut p, ack) = Client::connect_with(b.local_addr(), c);
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    // An empty topic without an alias: DISCONNECT 0x82 with a reason string naming the rule.
    let mut m = publish("", b"x", QoS::AtMostOnce, false);
    m.topic = ByteStr::new();
    p.send(&Packet::Publish(m));
    let stream = p.stream();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    assert!(!bytes.is_empty() && bytes.len() <= 20, "{bytes:02x?}");
    let mut buf = bytes::BytesMut::from(&bytes[..]);
    let mut d = Decoder::with_protocol(Protocol::V5, 1 << 20);
    match d.decode(&mut buf) {
        Ok(Some(Packet::Disconnect(d))) => {
            assert_eq!(d.reason_code, ReasonCode::PROTOCOL_ERROR);
            assert_eq!(d.properties.reason_string, None);
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
}

/// A CONNACK that cannot fit the client's Maximum Packet Size even without optional
/// properties is not sent [MQTT-3.1.2-24], and the connection ends instead of waiting.
#[test]
fn a_connack_larger_than_the_client_maximum_ends_the_connection() {
    let b = broker();
    let mut c = connect_packet(Protocol::V5, "too-tiny");
    // Our CONNACK carries Topic Alias Maximum, Receive Maximum and Maximum Packet Size.
    c.properties.maximum_packet_size = Some(10);
    let mut p = Client::raw(b.local_addr(), Protocol::V5);
    p.send(&Packet::Connect(Box::new(c)));
    let (closed, got) = p.closed();
    assert!(closed && got.is_empty(), "{got:?}");
    // Others still connect.
    Client::connect(b.local_addr(), Protocol::V5, "normal").ping();
}

/// The bytes of one client's filters are bounded (`max_subscription_bytes_per_client`): past
/// the budget SUBACK says 0x97 (3.1.1: 0x80), unsubscribing gives the bytes back, and other
/// clients are not affected. A filter or PUBLISH topic over `max_topic_length` is refused.
#[test]
fn subscription_bytes_and_topic_length_are_bounded() {
    let b = broker_with(|c| {
        c.max_subscription_bytes_per_client = 3000;
        c.max_topic_length = 1500;
    });
    let filter = |i: usize| format!("big/{i}/{}", "x".repeat(990));
    let o = SubscriptionOptions::default();
    for proto in [Protocol::V3_1_1, Protocol::V5] {
        let over = if proto.is_v5() {
            ReasonCode::QUOTA_EXCEEDED
        } else {
            ReasonCode(0x80)
        };
        let mut c = Client::connect(b.local_addr(), proto, "greedy");
        let (f0, f1, f2, f3) = (filter(0), filter(1), filter(2), filter(3));
        let codes = c.subscribe_with(
            &[(&f0, o), (&f1, o), (&f2, o), (&f3, o)],
            Default::default(),
        );
        assert_eq!(codes[..3], [ReasonCode::SUCCESS; 3], "{proto:?}");
        assert_eq!(codes[3], over, "{proto:?}");
        // Another client subscribes as much as it likes within its own budget.
        let mut other = Client::connect(b.local_addr(), proto, "other");
        let codes = other.subscribe_with(&[(&f3, o)], Default::default());
        assert_eq!(codes, [ReasonCode::SUCCESS], "{proto:?}");
        // Unsubscribing gives the bytes back.
        c.unsubscribe(&[&f0]);
        let codes = c.subscribe_with(&[(&f3, o)], Default::default());
        assert_eq!(codes, [ReasonCode::SUCCESS], "{proto:?}");
        // Too long a filter: 0x8F (3.1.1: 0x80).
        let long = "y".repeat(1501);
        let codes = other.subscribe_with(&[(&long, o)], Default::default());
        let invalid = if proto.is_v5() {
            ReasonCode::TOPIC_FILTER_INVALID
        } else {
            ReasonCode(0x80)
        };
        assert_eq!(codes, [invalid], "{proto:?}");
        // The subscriptions work.
        other.publish(&f3, b"hi", QoS::AtMostOnce, false);
        assert_eq!(&c.recv_publish().payload[..], b"hi");
        assert_eq!(&other.recv_publish().payload[..], b"hi");
        // Too long a PUBLISH topic ends the connection (v5: DISCONNECT 0x90).
        other.send(&Packet::Publish(publish(
            &long,
            b"x",
            QoS::AtMostOnce,
            false,
        )));
        let code = proto.is_v5().then_some(ReasonCode::TOPIC_NAME_INVALID);
        other.expect_disconnect(code);
        c.disconnect();
    }
}
