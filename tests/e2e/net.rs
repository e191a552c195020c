//! The broker's network edge under pressure: publish and connection rate limits, dual-stack
//! binds, and a stop that does not wait for clients that do not read.

use crate::support::*;
use bytes::BytesMut;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};
use uringmq::config::{ListenerConfig, Transport};

/// Sends `n` QoS 0 PUBLISHes to `topic` in one write.
fn burst(c: &mut Client, topic: &str, n: usize) {
    let mut out = BytesMut::new();
    for i in 0..n {
        let p = publish(topic, format!("{i}").as_bytes(), QoS::AtMostOnce, false);
        encode(&Packet::Publish(p), c.proto, &mut out).expect("encode");
    }
    c.send_raw(&out);
}

/// A broker with `max_publish_rate = rate`, and a 3.1.1 client subscribed to `t`.
fn rate_limited_with_subscriber(rate: u64) -> (Broker, Client) {
    let b = broker_with(|c| c.max_publish_rate = rate);
    let mut sub = Client::connect(b.local_addr(), Protocol::V3_1_1, "sub");
    sub.subscribe("t", QoS::AtMostOnce);
    (b, sub)
}

/// Asserts that `got` messages since `start` are at most a burst plus `rate` a second.
fn assert_within_rate(got: usize, rate: u64, start: Instant) {
    let allowed = rate as f64 * (1.0 + start.elapsed().as_secs_f64()) + 2.0;
    assert!(
        (got as f64) <= allowed,
        "{got} messages forwarded in {:?}, the rate allows {allowed}",
        start.elapsed()
    );
}

/// How many PUBLISHes `sub` receives until `until`.
fn publishes_until(sub: &mut Client, until: Instant) -> usize {
    let mut got = 0;
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        if let Some(Packet::Publish(_)) = sub.recv_within(left) {
            got += 1;
        }
    }
    got
}

#[test]
fn a_v5_client_is_slowed_and_gets_0x96_only_when_its_excess_persists() {
    const RATE: u64 = 20;
    const FLUSHED: usize = 2 * RATE as usize;
    let (b, mut sub) = rate_limited_with_subscriber(RATE);
    // Two seconds' worth at once, as a device flushing its offline buffer after a reconnect:
    // slowed like a 3.x client, nothing lost, still connected.
    let mut flush = Client::connect(b.local_addr(), Protocol::V5, "flush");
    let start = Instant::now();
    burst(&mut flush, "t", FLUSHED);
    let mut got = publishes_until(&mut sub, start + Duration::from_millis(600));
    assert_within_rate(got, RATE, start);
    flush.ping();
    got += publishes_until(&mut sub, Instant::now() + Duration::from_millis(200));
    assert_eq!(got, FLUSHED, "all of the flush arrives");
    assert!(b.stats().publish_rate_limited >= 1, "{:?}", b.stats());
    // Far more than the rate for longer: held back over 5 s in a row, then DISCONNECT 0x96.
    let mut hasty = Client::connect(b.local_addr(), Protocol::V5, "hasty");
    burst(&mut hasty, "t", 8 * RATE as usize);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match hasty.recv_within(left) {
            Some(Packet::Disconnect(d)) => {
                assert_eq!(d.reason_code, ReasonCode::MESSAGE_RATE_TOO_HIGH);
                break;
            }
            Some(_) => {}
            None => panic!("no DISCONNECT 0x96 for a sustained excess"),
        }
    }
    flush.ping();
}

#[test]
fn a_v3_client_over_its_publish_rate_is_slowed_and_loses_nothing() {
    const RATE: u64 = 20;
    const SENT: usize = 60;
    let (b, mut sub) = rate_limited_with_subscriber(RATE);
    let mut publisher = Client::connect(b.local_addr(), Protocol::V3_1_1, "pub");
    let start = Instant::now();
    burst(&mut publisher, "t", SENT);
    // Checkpoint: what arrived in the first 600 ms is at most the burst plus the rate.
    let mut got = publishes_until(&mut sub, start + Duration::from_millis(600));
    assert_within_rate(got, RATE, start);
    // The rest follows at the rate, nothing lost, the publisher still connected.
    let deadline = Instant::now() + Duration::from_secs(10);
    while got < SENT && Instant::now() < deadline {
        if let Some(Packet::Publish(p)) = sub.recv_within(Duration::from_secs(1)) {
            assert_eq!(&p.payload[..], format!("{got}").as_bytes(), "in order");
            got += 1;
        }
    }
    assert_eq!(got, SENT);
    publisher.ping();
    assert!(b.stats().publish_rate_limited >= 1, "{:?}", b.stats());
}

#[test]
fn a_client_that_reconnects_keeps_its_publish_debt() {
    const RATE: u64 = 20;
    let (b, mut sub) = rate_limited_with_subscriber(RATE);
    let start = Instant::now();
    // A burst's worth, then a clean close (the broker has read all of it).
    let mut first = Client::connect(b.local_addr(), Protocol::V3_1_1, "again");
    burst(&mut first, "t", RATE as usize);
    first.disconnect();
    // The next connection with the id starts with the empty bucket, not a new burst.
    let mut second = Client::connect(b.local_addr(), Protocol::V3_1_1, "again");
    burst(&mut second, "t", RATE as usize);
    let got = publishes_until(&mut sub, start + Duration::from_millis(600));
    assert_within_rate(got, RATE, start);
}

#[test]
fn a_takeover_inherits_the_publish_debt() {
    const RATE: u64 = 20;
    let (b, mut sub) = rate_limited_with_subscriber(RATE);
    let start = Instant::now();
    // Twice the burst: half of it waits, unread, in debt.
    let mut first = Client::connect(b.local_addr(), Protocol::V3_1_1, "twin");
    burst(&mut first, "t", 2 * RATE as usize);
    // A second connection with the id takes the first over, and sends a burst's worth.
    let mut second = Client::connect(b.local_addr(), Protocol::V3_1_1, "twin");
    burst(&mut second, "t", RATE as usize);
    let got = publishes_until(&mut sub, start + Duration::from_millis(600));
    assert_within_rate(got, RATE, start);
    drop(first);
}

#[test]
fn the_byte_rate_limits_too() {
    let b = broker_with(|c| c.max_publish_bytes_rate = 10_000);
    let mut hasty = Client::connect(b.local_addr(), Protocol::V5, "bytes");
    let payload = vec![0u8; 4000];
    for _ in 0..5 {
        hasty.send(&Packet::Publish(publish(
            "t",
            &payload,
            QoS::AtMostOnce,
            false,
        )));
    }
    // Twice the burst: held back about a second, not disconnected.
    hasty.ping();
    assert!(b.stats().publish_rate_limited >= 1, "{:?}", b.stats());
}

#[test]
fn the_byte_rate_counts_properties_too() {
    const RATE: u64 = 10_000;
    const SENT: usize = 20;
    let b = broker_with(|c| c.max_publish_bytes_rate = RATE);
    let mut sub = Client::connect(b.local_addr(), Protocol::V5, "props-sub");
    sub.subscribe("t", QoS::AtMostOnce);
    let mut hasty = Client::connect(b.local_addr(), Protocol::V5, "props");
    // One byte of payload, 4 kB of user properties that every subscriber gets too.
    let mut out = BytesMut::new();
    for _ in 0..SENT {
        let mut p = publish("t", b"x", QoS::AtMostOnce, false);
        p.properties.user_properties = vec![("k".into(), "v".repeat(4000).as_str().into())];
        encode(&Packet::Publish(p), Protocol::V5, &mut out).expect("encode");
    }
    let start = Instant::now();
    hasty.send_raw(&out);
    let got = publishes_until(&mut sub, start + Duration::from_millis(600));
    let allowed = (RATE as f64 * (1.0 + start.elapsed().as_secs_f64())) / 4000.0 + 1.0;
    assert!(
        (got as f64) <= allowed,
        "{got} messages of 4 kB forwarded in {:?}, the byte rate allows {allowed:.1}",
        start.elapsed()
    );
}

/// Whether a CONNECT on a new connection is answered with CONNACK.
fn try_connect(addr: SocketAddr, id: &str) -> bool {
    let mut c = Client::raw(addr, Protocol::V5);
    c.send(&Packet::Connect(Box::new(connect_packet(Protocol::V5, id))));
    matches!(c.recv(), Some(Packet::ConnAck(a)) if a.reason_code == ReasonCode::SUCCESS)
}

#[test]
fn connections_over_the_listener_rate_are_refused_while_others_succeed() {
    const RATE: u64 = 4;
    const TRIED: usize = 12;
    let b = broker_with(|c| c.max_connection_rate = RATE);
    let start = Instant::now();
    let admitted = (0..TRIED)
        .filter(|i| try_connect(b.local_addr(), &format!("c{i}")))
        .count();
    // Each of the two cores owns half the rate, with a burst of its share.
    let allowed = RATE as f64 * (1.0 + start.elapsed().as_secs_f64());
    assert!(admitted >= 1, "the first connections are within the rate");
    assert!(
        admitted as f64 <= allowed,
        "{admitted} of {TRIED} admitted in {:?}",
        start.elapsed()
    );
    assert_eq!(
        b.stats().connections_rate_limited,
        (TRIED - admitted) as u64
    );
    // Once the rate allows again, a new client gets in.
    let deadline = Instant::now() + WAIT;
    let mut n = 0;
    while !try_connect(b.local_addr(), &format!("later{n}")) {
        assert!(Instant::now() < deadline, "no connection admitted again");
        std::thread::sleep(Duration::from_millis(100));
        n += 1;
    }
}

/// Whether a CONNECT from source address `from` is answered with CONNACK (a refused socket
/// is closed at once).
fn try_connect_from(from: [u8; 4], addr: SocketAddr, id: &str) -> bool {
    let stream = connect_from(from, addr).expect("connect from the source address");
    let mut c = Client::from_stream(stream, Protocol::V5);
    c.send(&Packet::Connect(Box::new(connect_packet(Protocol::V5, id))));
    matches!(c.recv(), Some(Packet::ConnAck(a)) if a.reason_code == ReasonCode::SUCCESS)
}

#[test]
fn a_source_that_floods_does_not_lock_other_sources_out() {
    let b = broker_with(|c| {
        c.max_connection_rate = 10;
        c.max_connection_rate_per_source = 2;
    });
    let flooder = [127, 0, 0, 1];
    let admitted = (0..60)
        .filter(|i| try_connect_from(flooder, b.local_addr(), &format!("flood{i}")))
        .count();
    assert!(admitted < 60, "the flood is limited");
    // The flood spent its own rate, not the listener's: another host still gets in.
    let other = [127, 0, 0, 2];
    assert!(
        try_connect_from(other, b.local_addr(), "innocent"),
        "a client from another address was refused after {admitted} flood connections"
    );
    assert!(b.stats().connections_rate_limited >= 60 - admitted as u64);
}

#[test]
fn a_per_listener_rate_overrides_the_global_one() {
    let b = broker_with(|c| {
        c.max_connection_rate = 1;
        let mut l = ListenerConfig::new(Transport::Tcp, 0);
        l.max_connection_rate = Some(0);
        c.listeners.push(l);
    });
    let free = b.listener_addrs()[1].1;
    assert!((0..10).all(|i| try_connect(free, &format!("f{i}"))));
    assert_eq!(b.stats().connections_rate_limited, 0);
    // The default listener keeps the global rate: a burst of one per core.
    let admitted = (0..6)
        .filter(|i| try_connect(b.local_addr(), &format!("d{i}")))
        .count();
    assert!(
        admitted < 6,
        "the global rate applies to the default listener"
    );
    assert!(b.stats().connections_rate_limited > 0);
}

#[test]
fn binding_the_ipv6_any_address_serves_ipv4_clients_too() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: this machine has no IPv6 loopback");
        return;
    }
    let b = broker_with(|c| {
        c.bind = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        c.allow_anonymous = Some(true);
    });
    let port = b.local_addr().port();
    let mut v4 = Client::connect(SocketAddr::from(([127, 0, 0, 1], port)), Protocol::V5, "v4");
    let mut v6 = Client::connect(
        SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
        Protocol::V5,
        "v6",
    );
    v6.subscribe("dual", QoS::AtMostOnce);
    v4.publish("dual", b"both", QoS::AtMostOnce, false);
    assert_eq!(&v6.recv_publish().payload[..], b"both");
}

#[test]
fn stop_does_not_wait_for_a_client_that_does_not_read() {
    let mut b = broker_with(|c| c.max_outbound_bytes = 64 * 1024);
    // Subscribes, then never reads again.
    let mut stalled = Client::connect(b.local_addr(), Protocol::V5, "stalled");
    stalled.subscribe("firehose", QoS::AtMostOnce);
    let mut p = Client::connect(b.local_addr(), Protocol::V5, "p");
    let payload = vec![7u8; 64 * 1024];
    // Until the broker drops QoS 0 for it batch after batch: its socket is full and its
    // writer is stuck in a write.
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.stats().dropped_qos0 < 64 {
        assert!(
            Instant::now() < deadline,
            "the stalled reader never filled up"
        );
        for _ in 0..16 {
            p.send(&Packet::Publish(publish(
                "firehose",
                &payload,
                QoS::AtMostOnce,
                false,
            )));
        }
        p.ping();
    }
    let start = Instant::now();
    b.stop();
    let took = start.elapsed();
    // Bounded by the design at 250 + 500 ms plus joins; 4 s leaves room for a loaded machine
    // and still fails against the old 5 s.
    assert!(took < Duration::from_secs(4), "stop took {took:?}");
    drop(stalled);
}
