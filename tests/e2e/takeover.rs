//! Session takeover under contention: one session per client id [MQTT-3.1.4-3], even when many
//! connections with the same id race on both cores, and no QoS 1 message of a persistent
//! session is lost while the session moves between cores.

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use uringmq_tests::*;

fn persistent(id: &str) -> Connect {
    let mut c = connect_packet(Protocol::V5, id);
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(300);
    c
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
        let mut d = Disconnect::default();
        d.properties.session_expiry_interval = Some(0);
        owner.send(&Packet::Disconnect(d));
        assert!(owner.closed().0);
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
