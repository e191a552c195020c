//! Bad input: each violation ends only the offending connection, with the spec's reason code;
//! other clients are unaffected.

use crate::support::*;

fn bystander(b: &Broker) -> (Client, Client) {
    let mut s = Client::connect(b.local_addr(), Protocol::V5, "bystander-sub");
    s.subscribe("ok/t", QoS::AtLeastOnce);
    let p = Client::connect(b.local_addr(), Protocol::V3_1_1, "bystander-pub");
    (s, p)
}

fn still_fine(s: &mut Client, p: &mut Client) {
    p.publish("ok/t", b"still here", QoS::AtLeastOnce, false);
    assert_eq!(&s.recv_publish().payload[..], b"still here");
}

#[test]
fn first_packet_must_be_connect() {
    let b = broker();
    let (mut s, mut p) = bystander(&b);
    let mut c = Client::raw(b.local_addr(), Protocol::V3_1_1);
    c.send(&Packet::PingReq);
    c.expect_disconnect(None);
    still_fine(&mut s, &mut p);
}

#[test]
fn second_connect_is_a_protocol_error() {
    let b = broker();
    let mut c = Client::connect(b.local_addr(), Protocol::V5, "twice");
    c.send(&Packet::Connect(Box::new(connect_packet(
        Protocol::V5,
        "twice",
    ))));
    c.expect_disconnect(Some(ReasonCode::PROTOCOL_ERROR));
}

#[test]
fn garbage_and_bad_flags() {
    let b = broker();
    let (mut s, mut p) = bystander(&b);
    let cases: &[&[u8]] = &[
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], // bad type, overlong length
        &[0x82, 0x04, 0x00, 0x01, 0x00, 0x00], // SUBSCRIBE with empty filter
        &[0x30, 0x05, 0x00, 0x03, b'a', b'/', b'#'], // wildcard in a topic name
        &[0x3f, 0x03, 0x00, 0x01, b'a'],       // QoS 3
        &[0xc1, 0x00],                         // PINGREQ with reserved flags
    ];
    for bytes in cases {
        let mut c = Client::connect(b.local_addr(), Protocol::V5, "bad");
        c.send_raw(bytes);
        let (closed, got) = c.closed();
        assert!(closed, "closed after {bytes:02x?}");
        if let Some(Packet::Disconnect(d)) = got.last() {
            assert!(d.reason_code.is_error(), "{bytes:02x?}: {d:?}");
        }
    }
    still_fine(&mut s, &mut p);
    assert!(b.stats().protocol_errors >= cases.len() as u64);
}

#[test]
fn unsupported_protocol_level_gets_connack_0x01() {
    let b = broker();
    let mut c = Client::raw(b.local_addr(), Protocol::V3_1_1);
    // CONNECT "MQTT" level 9.
    c.send_raw(&[
        0x10, 0x0c, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x09, 0x02, 0x00, 0x3c, 0x00, 0x00,
    ]);
    let (closed, got) = c.closed();
    assert!(closed);
    match got.first() {
        Some(Packet::ConnAck(a)) => assert_eq!(a.reason_code.to_v3_connack(), 1, "[MQTT-3.1.2-2]"),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[test]
fn connect_timeout_closes_silent_sockets() {
    let b = broker_with(|c| c.connect_timeout_secs = 1);
    let mut c = Client::raw(b.local_addr(), Protocol::V3_1_1);
    c.expect_disconnect(None);
}

#[test]
fn max_connections() {
    let b = broker_with(|c| c.max_connections = 3);
    let _a: Vec<Client> = (0..3)
        .map(|i| Client::connect(b.local_addr(), Protocol::V3_1_1, &format!("c{i}")))
        .collect();
    let mut d = Client::raw(b.local_addr(), Protocol::V3_1_1);
    d.send(&Packet::Connect(Box::new(connect_packet(
        Protocol::V3_1_1,
        "over",
    ))));
    d.expect_disconnect(None);
}

#[test]
fn truncated_packet_then_close_is_harmless() {
    let b = broker();
    let (mut s, mut p) = bystander(&b);
    for _ in 0..10 {
        let mut c = Client::connect(b.local_addr(), Protocol::V3_1_1, "trunc");
        c.send_raw(&[0x30, 0x7f, 0x00]);
        drop(c);
    }
    still_fine(&mut s, &mut p);
}

#[test]
fn random_bytes_never_hurt_others() {
    let b = broker();
    let (mut s, mut p) = bystander(&b);
    let mut x: u64 = 0x1234_5678_9abc_def0;
    for round in 0..50 {
        let mut c = Client::raw(b.local_addr(), Protocol::V3_1_1);
        if round % 2 == 0 {
            c.send(&Packet::Connect(Box::new(connect_packet(
                Protocol::V5,
                &format!("r{round}"),
            ))));
        }
        let bytes: Vec<u8> = (0..64)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        c.send_raw(&bytes);
        drop(c);
    }
    still_fine(&mut s, &mut p);
}
