//! Hibernation: connections idle past `hibernate_after_ms` park without a task (and detach
//! from the runtime's stream), and nothing a client can observe changes: they still receive,
//! publish, keep alive, time out with their will, get taken over, and close on stop. Each test
//! first waits until the broker reports the connections as hibernating, so it exercises the
//! parked (and detached) path, not the ordinary one.

use crate::support::*;
use std::time::{Duration, Instant};

/// Parks after 100 ms of silence; the sweep runs every 100 ms, and detaching takes one more.
fn hibernating_broker() -> Broker {
    broker_with(|c| c.hibernate_after_ms = 100)
}

/// Waits until at least `n` connections hibernate, plus a few sweeps so they also detach.
fn wait_hibernating(b: &Broker, n: u64) {
    let deadline = Instant::now() + WAIT;
    while b.stats().hibernating < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} connections hibernate",
            b.stats().hibernating
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(350));
}

/// A QoS 1 will.
fn will(topic: &str, payload: &'static [u8]) -> LastWill {
    LastWill {
        topic: topic.into(),
        payload: bytes::Bytes::from_static(payload),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    }
}

#[test]
fn idle_connections_hibernate_and_still_exchange_messages() {
    let b = hibernating_broker();
    for proto in [Protocol::V3_1_1, Protocol::V5] {
        let mut sub = Client::connect(b.local_addr(), proto, "sleeper-sub");
        sub.subscribe("h/t", QoS::AtLeastOnce);
        let mut publ = Client::connect(b.local_addr(), proto, "sleeper-pub");
        wait_hibernating(&b, 2);

        // A parked publisher wakes on its PUBLISH; a detached subscriber is written to.
        publ.publish("h/t", b"wake up", QoS::AtLeastOnce, false);
        let p = sub.recv_publish();
        assert_eq!(&p.payload[..], b"wake up");

        // Both fall asleep again and keep working, many times over.
        for i in 0..3u8 {
            wait_hibernating(&b, 2);
            publ.publish("h/t", &[i], QoS::ExactlyOnce, false);
            assert_eq!(&sub.recv_publish().payload[..], &[i]);
        }
        sub.disconnect();
        publ.disconnect();
    }
    assert_eq!(b.stats().hibernating, 0);
}

#[test]
fn a_hibernating_subscriber_receives_a_burst_in_order() {
    let b = hibernating_broker();
    let mut sub = Client::connect(b.local_addr(), Protocol::V5, "burst-sub");
    sub.subscribe("burst/#", QoS::AtMostOnce);
    let mut publ = Client::connect(b.local_addr(), Protocol::V5, "burst-pub");
    wait_hibernating(&b, 2);
    for i in 0..500u32 {
        publ.send(&Packet::Publish(publish(
            "burst/x",
            &i.to_be_bytes(),
            QoS::AtMostOnce,
            false,
        )));
    }
    for i in 0..500u32 {
        assert_eq!(&sub.recv_publish().payload[..], &i.to_be_bytes());
    }
}

#[test]
fn keep_alive_expires_while_hibernating_and_the_will_goes_out() {
    let b = hibernating_broker();
    let mut watcher = Client::connect(b.local_addr(), Protocol::V5, "watcher");
    watcher.subscribe("will/t", QoS::AtLeastOnce);
    let mut c = connect_packet(Protocol::V5, "silent");
    c.keep_alive = 1;
    c.will = Some(will("will/t", b"gone"));
    let (mut silent, _) = Client::connect_with(b.local_addr(), c);
    wait_hibernating(&b, 2);
    // 1.5 x 1 s without a packet: DISCONNECT 0x8D [MQTT-3.1.2-22], then the will.
    silent.expect_disconnect(Some(ReasonCode::KEEP_ALIVE_TIMEOUT));
    assert_eq!(&watcher.recv_publish().payload[..], b"gone");
}

#[test]
fn a_hibernating_client_keeps_alive_with_pings() {
    let b = hibernating_broker();
    let mut c = connect_packet(Protocol::V3_1_1, "pinger");
    c.keep_alive = 1;
    let (mut pinger, _) = Client::connect_with(b.local_addr(), c);
    // Each ping wakes it, each silence parks it again; 4 s is past 1.5 x keep-alive twice.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(600));
        // 600 ms of silence is past 100 ms and a sweep: it is parked when the ping arrives.
        assert_eq!(b.stats().hibernating, 1, "parked between pings");
        pinger.ping();
    }
    pinger.disconnect();
}

#[test]
fn a_hibernating_session_is_taken_over() {
    let b = hibernating_broker();
    let mut old = Client::connect(b.local_addr(), Protocol::V5, "twin");
    wait_hibernating(&b, 1);
    let mut new = Client::connect(b.local_addr(), Protocol::V5, "twin");
    old.expect_disconnect(Some(ReasonCode::SESSION_TAKEN_OVER));
    new.ping();
}

#[test]
fn stop_closes_hibernating_connections() {
    let mut b = hibernating_broker();
    let mut clients: Vec<Client> = (0..20)
        .map(|i| Client::connect(b.local_addr(), Protocol::V5, &format!("c{i}")))
        .collect();
    wait_hibernating(&b, 20);
    let started = Instant::now();
    b.stop();
    // Woken by the shutdown, not left for the 5 s stop deadline.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "stop took {:?}",
        started.elapsed()
    );
    for c in &mut clients {
        c.expect_disconnect(Some(ReasonCode::SERVER_SHUTTING_DOWN));
    }
}

#[test]
fn hibernation_off_keeps_every_connection_awake() {
    let b = broker_with(|c| c.hibernate_after_ms = 0);
    let mut c = Client::connect(b.local_addr(), Protocol::V5, "awake");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(b.stats().hibernating, 0);
    c.ping();
}

#[test]
fn a_hibernating_client_is_listed_and_kicked_with_its_will() {
    let b = hibernating_broker();
    let mut watcher = Client::connect(b.local_addr(), Protocol::V5, "kick-watcher");
    watcher.subscribe("kick/will", QoS::AtLeastOnce);
    let mut c = connect_packet(Protocol::V5, "kicked");
    c.will = Some(will("kick/will", b"kicked out"));
    let (mut kicked, _) = Client::connect_with(b.local_addr(), c);
    let _v3 = Client::connect(b.local_addr(), Protocol::V3_1_1, "asleep-v3");
    wait_hibernating(&b, 3);
    // Asleep, still listed as connected, with the listener, address and protocol it came with.
    let mut listed: Vec<_> = b.clients().unwrap();
    listed.sort_by(|x, y| x.client_id.cmp(&y.client_id));
    let seen: Vec<_> = listed
        .iter()
        .map(|c| (c.client_id.as_str(), c.protocol, c.listener.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("asleep-v3", Protocol::V3_1_1, "default"),
            ("kick-watcher", Protocol::V5, "default"),
            ("kicked", Protocol::V5, "default"),
        ]
    );
    assert!(listed
        .iter()
        .all(|c| c.peer.is_some_and(|p| p.ip().is_loopback())));
    // A kick wakes it: DISCONNECT 0x98, and the will it asked for.
    assert!(b.disconnect("kicked", true).unwrap());
    kicked.expect_disconnect(Some(ReasonCode::ADMINISTRATIVE_ACTION));
    assert_eq!(&watcher.recv_publish().payload[..], b"kicked out");
    assert_eq!(b.clients().unwrap().len(), 2);
}

#[test]
fn a_hibernating_session_is_taken_over_again_and_again_across_cores() {
    // Two cores: each new connection of the client id lands on either core and takes the
    // sleeping one over; the session (its subscription) follows it every time.
    let b = broker_with(|c| {
        c.hibernate_after_ms = 100;
        c.cores = 2;
    });
    let mut publ = Client::connect(b.local_addr(), Protocol::V5, "mover-pub");
    let mut old: Option<Client> = None;
    for round in 0..4u8 {
        let mut c = connect_packet(Protocol::V5, "mover");
        c.clean_start = round == 0;
        c.properties.session_expiry_interval = Some(60);
        let (mut sub, ack) = Client::connect_with(b.local_addr(), c);
        assert_eq!(ack.session_present, round > 0);
        if let Some(mut old) = old.take() {
            old.expect_disconnect(Some(ReasonCode::SESSION_TAKEN_OVER));
        } else {
            sub.subscribe("mover/t", QoS::AtLeastOnce);
        }
        wait_hibernating(&b, 2);
        publ.publish("mover/t", &[round], QoS::AtLeastOnce, false);
        assert_eq!(&sub.recv_publish().payload[..], &[round]);
        wait_hibernating(&b, 2);
        old = Some(sub);
    }
}
