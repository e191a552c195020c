//! Persistent sessions, takeover (also across cores), retransmission with DUP, queue bounds.

use crate::support::*;

fn persistent(proto: Protocol, id: &str) -> Connect {
    let mut c = connect_packet(proto, id);
    c.clean_start = false;
    if proto.is_v5() {
        c.properties.session_expiry_interval = Some(300);
    }
    c
}

#[test]
fn offline_messages_are_queued_and_delivered_on_reconnect() {
    let b = broker();
    for proto in [Protocol::V3_1_1, Protocol::V5] {
        let id = format!("persist-{}", proto as u8);
        let (mut s, ack) = Client::connect_with(b.local_addr(), persistent(proto, &id));
        assert!(!ack.session_present);
        s.subscribe("q/t", QoS::AtLeastOnce);
        s.disconnect();
        let mut p = Client::connect(b.local_addr(), proto, "publisher");
        for i in 0..3u8 {
            p.publish("q/t", &[i], QoS::AtLeastOnce, false);
        }
        p.publish("q/t", b"qos0 not queued", QoS::AtMostOnce, false);
        p.ping();
        let (mut s, ack) = Client::connect_with(b.local_addr(), persistent(proto, &id));
        assert!(ack.session_present, "[MQTT-3.2.2-2] session present");
        for i in 0..3u8 {
            let m = s.recv_publish();
            assert_eq!(&m.payload[..], &[i]);
        }
        s.expect_nothing();
    }
}

#[test]
fn clean_start_discards_the_session() {
    let b = broker();
    let (mut s, _) = Client::connect_with(b.local_addr(), persistent(Protocol::V3_1_1, "c1"));
    s.subscribe("cs/t", QoS::AtLeastOnce);
    s.disconnect();
    let (mut s, ack) = Client::connect_with(b.local_addr(), connect_packet(Protocol::V3_1_1, "c1"));
    assert!(!ack.session_present, "[MQTT-3.2.2-1]");
    let mut p = Client::connect(b.local_addr(), Protocol::V3_1_1, "p");
    p.publish("cs/t", b"x", QoS::AtLeastOnce, false);
    s.expect_nothing();
}

#[test]
fn unacknowledged_messages_are_resent_with_dup_on_reconnect() {
    let b = broker();
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let id = format!("dup-{}", qos as u8);
        let (mut s, _) = Client::connect_with(b.local_addr(), persistent(Protocol::V5, &id));
        s.subscribe("d/t", qos);
        let mut p = Client::connect(b.local_addr(), Protocol::V5, "p");
        p.publish("d/t", b"once", qos, false);
        let first = s.recv_publish_noack();
        assert!(!first.dup);
        drop(s); // no ack, no DISCONNECT
        let (mut s, ack) = Client::connect_with(b.local_addr(), persistent(Protocol::V5, &id));
        assert!(ack.session_present);
        let again = s.recv_publish_noack();
        assert!(again.dup, "[MQTT-4.4.0-1] DUP on redelivery");
        assert_eq!(again.packet_id, first.packet_id);
        s.ack(&again);
        s.expect_nothing();
        s.unsubscribe(&["d/t"]);
        s.disconnect();
    }
}

#[test]
fn released_qos2_is_resent_as_pubrel() {
    let b = broker();
    let (mut s, _) = Client::connect_with(b.local_addr(), persistent(Protocol::V3_1_1, "rel"));
    s.subscribe("r/t", QoS::ExactlyOnce);
    let mut p = Client::connect(b.local_addr(), Protocol::V3_1_1, "p");
    p.publish("r/t", b"x", QoS::ExactlyOnce, false);
    let m = s.recv_publish_noack();
    s.send(&Packet::PubRec(Ack::new(m.packet_id)));
    assert!(matches!(s.recv(), Some(Packet::PubRel(a)) if a.packet_id == m.packet_id));
    drop(s);
    let (mut s, _) = Client::connect_with(b.local_addr(), persistent(Protocol::V3_1_1, "rel"));
    match s.recv() {
        Some(Packet::PubRel(a)) => assert_eq!(a.packet_id, m.packet_id),
        other => panic!("expected PUBREL again, got {other:?}"),
    }
    s.send(&Packet::PubComp(Ack::new(m.packet_id)));
    s.expect_nothing();
}

#[test]
fn takeover_disconnects_the_first_connection_on_any_core() {
    let b = broker();
    // Several rounds: with two cores, some takeovers cross cores.
    for round in 0..8 {
        let (mut first, _) = Client::connect_with(b.local_addr(), persistent(Protocol::V5, "same"));
        if round == 0 {
            first.subscribe("to/t", QoS::AtLeastOnce);
        }
        let (mut second, ack) =
            Client::connect_with(b.local_addr(), persistent(Protocol::V5, "same"));
        assert!(ack.session_present, "round {round}");
        first.expect_disconnect(Some(ReasonCode::SESSION_TAKEN_OVER));
        let mut p = Client::connect(b.local_addr(), Protocol::V5, "p");
        p.publish("to/t", b"after", QoS::AtLeastOnce, false);
        let m = second.recv_publish();
        assert_eq!(
            &m.payload[..],
            b"after",
            "subscriptions moved with the session"
        );
        second.disconnect();
    }
}

#[test]
fn takeover_v3_closes_the_old_connection() {
    let b = broker();
    let _keep: Vec<Client> = (0..4)
        .map(|i| Client::connect(b.local_addr(), Protocol::V3_1_1, &format!("k{i}")))
        .collect();
    let mut first = Client::connect(b.local_addr(), Protocol::V3_1_1, "v3same");
    let _second = Client::connect(b.local_addr(), Protocol::V3_1_1, "v3same");
    first.expect_disconnect(None);
}

#[test]
fn offline_queue_is_bounded_and_drops_are_counted() {
    let b = broker_with(|c| c.max_queued_messages = 5);
    let (mut s, _) = Client::connect_with(b.local_addr(), persistent(Protocol::V3_1_1, "bounded"));
    s.subscribe("b/t", QoS::AtLeastOnce);
    s.disconnect();
    let mut p = Client::connect(b.local_addr(), Protocol::V3_1_1, "p");
    for i in 0..8u8 {
        p.publish("b/t", &[i], QoS::AtLeastOnce, false);
    }
    p.ping();
    let (mut s, _) = Client::connect_with(b.local_addr(), persistent(Protocol::V3_1_1, "bounded"));
    for i in 0..5u8 {
        assert_eq!(
            &s.recv_publish().payload[..],
            &[i],
            "oldest kept, newest dropped"
        );
    }
    // The drops are counted on the offline session's core, which may not be the publisher's:
    // read the counter only once the session has come back (its core processed every routed
    // message before it handed the session over).
    assert_eq!(b.stats().dropped_queue_full, 3);
    s.expect_nothing();
}

#[test]
fn offline_queue_bytes_bound() {
    let b = broker_with(|c| c.max_queued_bytes = 100);
    let (mut s, _) = Client::connect_with(b.local_addr(), persistent(Protocol::V5, "bytes"));
    s.subscribe("y", QoS::AtLeastOnce);
    s.disconnect();
    let mut p = Client::connect(b.local_addr(), Protocol::V5, "p");
    for _ in 0..4 {
        p.publish("y", &[0u8; 39], QoS::AtLeastOnce, false); // 40 bytes each with the topic
    }
    p.ping();
    let (mut s, _) = Client::connect_with(b.local_addr(), persistent(Protocol::V5, "bytes"));
    for _ in 0..2 {
        assert_eq!(
            s.recv_publish().payload.len(),
            39,
            "two messages fit in 100 bytes"
        );
    }
    // Counted on the offline session's core: read once the session came back (see above).
    assert_eq!(b.stats().dropped_queue_full, 2);
    s.expect_nothing();
}

#[test]
fn session_expiry_ends_the_session() {
    let b = broker();
    let mut c = connect_packet(Protocol::V5, "exp");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(1);
    let (mut s, _) = Client::connect_with(b.local_addr(), c.clone());
    s.subscribe("e/t", QoS::AtLeastOnce);
    s.disconnect();
    std::thread::sleep(std::time::Duration::from_millis(1600));
    let (_s, ack) = Client::connect_with(b.local_addr(), c);
    assert!(!ack.session_present, "expired after 1 s");
}

#[test]
fn empty_client_id_rules() {
    let b = broker();
    let (_, ack) = Client::connect_with(b.local_addr(), {
        let mut c = connect_packet(Protocol::V3_1_1, "");
        c.clean_start = false;
        c
    });
    assert_eq!(
        ack.reason_code.to_v3_connack(),
        2,
        "[MQTT-3.1.3-8] identifier rejected"
    );
    let (_c, ack) = Client::connect_with(b.local_addr(), connect_packet(Protocol::V3_1_1, ""));
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "[MQTT-3.1.3-6]");
    let (_c, ack) = Client::connect_with(b.local_addr(), connect_packet(Protocol::V5, ""));
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    let id = ack
        .properties
        .assigned_client_identifier
        .expect("[MQTT-3.2.2-16] assigned id");
    assert!(!id.is_empty());
}

/// A subscription is effective once SUBACKed, whichever core the publisher is on: a client
/// subscribes (persistent session), gets SUBACK and goes offline; only then a new client
/// publishes QoS 1 (on either core, the kernel spreads connections) and the subscriber,
/// back, must get it. Busy threads load the machine so that the cores lag behind each other.
#[test]
fn suback_then_publish_on_any_core_is_delivered() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let b = broker();
    let stop = Arc::new(AtomicBool::new(false));
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let mut missed = Vec::new();
    for i in 0..150 {
        let proto = [Protocol::V3_1_1, Protocol::V5][i % 2];
        let (id, topic) = (format!("fresh-sub-{i}"), format!("fresh/{i}"));
        let (mut s, _) = Client::connect_with(b.local_addr(), persistent(proto, &id));
        s.subscribe(&topic, QoS::AtLeastOnce);
        s.disconnect();
        let mut p = Client::connect(b.local_addr(), proto, &format!("fresh-pub-{i}"));
        p.publish(&topic, b"after suback", QoS::AtLeastOnce, false);
        p.disconnect();
        let (mut s, _) = Client::connect_with(b.local_addr(), persistent(proto, &id));
        match s.recv_within(QUIET) {
            Some(Packet::Publish(m)) => s.ack(&m),
            _ => missed.push(i),
        }
        s.disconnect();
    }
    stop.store(true, Ordering::Relaxed);
    busy.into_iter().for_each(|t| t.join().unwrap());
    assert!(missed.is_empty(), "not delivered after SUBACK: {missed:?}");
}
