//! Session takeover under contention: one session per client id [MQTT-3.1.4-3], even when many
//! connections with the same id race on both cores, and no QoS 1 message of a persistent
//! session is lost while the session moves between cores.

use crate::support::*;
use bytes::Bytes;
use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};

fn persistent(id: &str) -> Connect {
    let mut c = connect_packet(Protocol::V5, id);
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(300);
    c
}

/// Disconnects with session expiry 0, ending the session, and waits for the close.
fn end_session(mut c: Client) {
    let mut d = Disconnect::default();
    d.properties.session_expiry_interval = Some(0);
    c.send(&Packet::Disconnect(d));
    assert!(c.closed().0);
}

#[test]
fn concurrent_connects_with_one_id_leave_exactly_one_session() {
    let b = broker();
    let addr = b.local_addr();
    for round in 0..3 {
        const N: usize = 24;
        let id = format!("storm-{round}");
        let start = Arc::new(Barrier::new(N));
        let threads: Vec<_> = (0..N)
            .map(|i| {
                let (start, id) = (start.clone(), id.clone());
                std::thread::spawn(move || {
                    start.wait();
                    // Half persistent, half clean start: both kinds of takeover race.
                    let c = if i % 2 == 0 {
                        persistent(&id)
                    } else {
                        connect_packet(Protocol::V5, &id)
                    };
                    let mut client = Client::raw(addr, Protocol::V5);
                    client.send(&Packet::Connect(Box::new(c)));
                    client
                })
            })
            .collect();
        let mut clients: Vec<Client> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        // Every connection either is the owner or gets closed (after CONNACK and DISCONNECT
        // 0x8E when it was the owner for a moment).
        let mut open = Vec::new();
        for (i, c) in clients.iter_mut().enumerate() {
            let (closed, got) = c.closed();
            if !closed {
                open.push(i);
            }
            for p in &got {
                match p {
                    Packet::ConnAck(a) => assert_eq!(a.reason_code, ReasonCode::SUCCESS),
                    Packet::Disconnect(d) => {
                        assert_eq!(d.reason_code, ReasonCode::SESSION_TAKEN_OVER)
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        assert_eq!(open.len(), 1, "exactly one live connection for {id}");
        let mut owner = clients.swap_remove(open[0]);
        // The survivor works: it receives what it subscribes to.
        owner.subscribe("storm/t", QoS::AtLeastOnce);
        let mut p = Client::connect(addr, Protocol::V5, "storm-publisher");
        p.publish("storm/t", b"x", QoS::AtLeastOnce, false);
        assert_eq!(&owner.recv_publish().payload[..], b"x");
        p.disconnect();
        owner.unsubscribe(&["storm/t"]);
        // One session for this id; the publisher's (clean) one is gone or going.
        let mut sessions = b.stats().sessions;
        for _ in 0..50 {
            if sessions == 1 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            sessions = b.stats().sessions;
        }
        assert_eq!(sessions, 1, "one session left");
        // End the session so the next round counts from zero.
        end_session(owner);
    }
}

#[test]
fn qos1_messages_survive_repeated_takeovers() {
    let b = broker();
    let addr = b.local_addr();
    let (mut s, _) = Client::connect_with(addr, persistent("mover"));
    s.subscribe("mv/t", QoS::AtLeastOnce);
    const M: u32 = 400;
    let publisher = std::thread::spawn(move || {
        let mut p = Client::connect(addr, Protocol::V5, "mv-pub");
        for i in 0..M {
            p.publish("mv/t", &i.to_be_bytes(), QoS::AtLeastOnce, false);
        }
        p.disconnect();
    });
    let mut got = BTreeSet::new();
    let record = |p: &Packet, got: &mut BTreeSet<u32>| {
        if let Packet::Publish(m) = p {
            got.insert(u32::from_be_bytes(m.payload[..4].try_into().unwrap()));
        }
    };
    // Take the session over again and again (the kernel spreads the connections over both
    // cores) while the publisher runs; ack what arrives in between.
    for _ in 0..60 {
        let (mut next, ack) = Client::connect_with(addr, persistent("mover"));
        assert!(ack.session_present);
        let (_, rest) = s.closed();
        for p in &rest {
            record(p, &mut got);
        }
        for _ in 0..3 {
            match next.recv_within(std::time::Duration::from_millis(2)) {
                Some(Packet::Publish(m)) => {
                    next.ack(&m);
                    record(&Packet::Publish(m), &mut got);
                }
                Some(other) => panic!("unexpected {other:?}"),
                None => break,
            }
        }
        s = next;
    }
    publisher.join().unwrap();
    while got.len() < M as usize {
        match s.recv() {
            Some(Packet::Publish(m)) => {
                s.ack(&m);
                record(&Packet::Publish(m), &mut got);
            }
            other => {
                let missing: Vec<u32> = (0..M).filter(|i| !got.contains(i)).collect();
                panic!(
                    "lost {} messages (e.g. {:?}); then {other:?}",
                    missing.len(),
                    &missing[..missing.len().min(10)]
                );
            }
        }
    }
}

/// Sends `packets` in one write and, without waiting for anything, connects again with
/// `again`: the successor's CONNECT races the old connection's last packets.
fn send_and_reconnect(old: &mut Client, packets: &[Packet], again: Connect) -> (Client, ConnAck) {
    let mut out = bytes::BytesMut::new();
    for p in packets {
        encode(p, old.proto, &mut out).expect("encode");
    }
    old.send_raw(&out);
    Client::connect_with(old.addr(), again)
}

/// Runs `n` rounds on one broker whose connections hibernate after `hibernate_after_ms` (0:
/// never).
fn rounds(hibernate_after_ms: u64, n: usize, round: impl Fn(&Broker, usize)) {
    let b = broker_with(|c| c.hibernate_after_ms = hibernate_after_ms);
    for i in 0..n {
        round(&b, i);
    }
}

/// Waits until `n` connections of `b` hibernate.
fn until_hibernating(b: &Broker, n: u64) {
    let deadline = std::time::Instant::now() + WAIT;
    while b.stats().hibernating < n {
        assert!(
            std::time::Instant::now() < deadline,
            "no connection hibernates"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A PUBACK sent just before the client reconnects is applied to the session first, so the
/// acknowledged message is not redelivered; the same for a connection that stays open.
fn ack_then_reconnect(b: &Broker, i: usize, disconnect: bool, parked: bool) {
    let addr = b.local_addr();
    let id = format!("ack-{i}-{disconnect}-{parked}");
    let topic = format!("ack/{i}");
    let (mut s, _) = Client::connect_with(addr, persistent(&id));
    s.subscribe(&topic, QoS::AtLeastOnce);
    let mut p = Client::connect(addr, Protocol::V5, &format!("{id}-pub"));
    p.publish(&topic, b"once", QoS::AtLeastOnce, false);
    let m = s.recv_publish_noack();
    if parked {
        until_hibernating(b, 2);
    }
    let mut last = vec![Packet::PubAck(Ack::new(m.packet_id))];
    if disconnect {
        last.push(Packet::Disconnect(Disconnect::default()));
    }
    let (mut again, ack) = send_and_reconnect(&mut s, &last, persistent(&id));
    assert!(ack.session_present);
    if !disconnect {
        s.expect_disconnect(Some(ReasonCode::SESSION_TAKEN_OVER));
    }
    // Anything still owed to the session would be resent right after CONNACK; a ping is
    // answered after it.
    again.send(&Packet::PingReq);
    match again.recv() {
        Some(Packet::PingResp) => {}
        other => panic!("round {i}: the acknowledged message came again: {other:?}"),
    }
    p.disconnect();
    end_session(again);
}

#[test]
fn a_puback_just_before_a_reconnect_is_not_lost() {
    rounds(0, 30, |b, i| ack_then_reconnect(b, i, true, false));
}

#[test]
fn a_puback_just_before_a_takeover_of_an_open_connection_is_not_lost() {
    rounds(0, 30, |b, i| ack_then_reconnect(b, i, false, false));
}

#[test]
fn a_puback_to_a_hibernating_connection_just_before_a_reconnect_is_not_lost() {
    rounds(50, 8, |b, i| ack_then_reconnect(b, i, true, true));
}

/// [MQTT-3.14.4-3]: a normal DISCONNECT deletes the will, even when the client reconnects
/// (clean start, which would publish a will at once) before the broker has read it.
#[test]
fn a_disconnect_just_before_a_clean_reconnect_cancels_the_will() {
    let b = broker();
    let addr = b.local_addr();
    let mut watcher = Client::connect(addr, Protocol::V5, "will-watcher");
    watcher.subscribe("gone/#", QoS::AtMostOnce);
    for i in 0..30 {
        let id = format!("willful-{i}");
        let mut c = connect_packet(Protocol::V5, &id);
        c.will = Some(LastWill {
            topic: format!("gone/{i}").as_str().into(),
            payload: Bytes::from_static(b"dead"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Default::default(),
        });
        let (mut old, _) = Client::connect_with(addr, c);
        let (again, _) = send_and_reconnect(
            &mut old,
            &[Packet::Disconnect(Disconnect::default())],
            connect_packet(Protocol::V5, &id),
        );
        again.disconnect();
    }
    watcher.expect_nothing();
}

/// An old connection that never stops sending does not hold its successor up: the drain
/// before the takeover is bounded, then the old connection is closed.
/// (On the epoll driver this once hung: the flooding reader never returned to the runtime, and
/// when it did, the sweep that enforces the drain limit never ran; see `fairness.rs`.)
#[test]
fn a_takeover_of_a_connection_that_keeps_sending_completes() {
    // One core: the flooding connection and its successor share it. An outbound limit far
    // above what the test queues, so that the broker never stops reading from the flooder for
    // a full queue (`slow.rs` tests that): only the read budget keeps the core free.
    let b = broker_with(|c| {
        c.cores = 1;
        c.max_outbound_bytes = 1 << 30;
    });
    let addr = b.local_addr();
    let (mut old, _) = Client::connect_with(addr, persistent("chatty"));
    // The flooder reads its PINGRESPs as fast as they come.
    let mut replies = old.stream().try_clone().unwrap();
    let drain = std::thread::spawn(move || {
        let mut sink = vec![0u8; 64 * 1024];
        while matches!(std::io::Read::read(&mut replies, &mut sink), Ok(n) if n > 0) {}
    });
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut old = old;
            let mut ping = bytes::BytesMut::new();
            // 256 KiB a write: faster than the broker handles 2-byte packets, so the socket
            // is always readable.
            for _ in 0..128 * 1024 {
                encode(&Packet::PingReq, Protocol::V5, &mut ping).expect("encode");
            }
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                old.send_raw(&ping);
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    let (mut new, ack) = Client::connect_with(addr, persistent("chatty"));
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    assert!(ack.session_present);
    new.ping();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flood.join().unwrap();
    // The broker closed the old connection: the reader sees the end.
    drain.join().unwrap();
}
