//! Retained messages: store, replace, delete, wildcard delivery, retain handling, retain as
//! published, none for `$share` subscribers.

use crate::support::*;

fn opts(qos: QoS, rh: RetainHandling, rap: bool) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        retain_handling: rh,
        retain_as_published: rap,
        ..Default::default()
    }
}

#[test]
fn store_replace_delete_and_deliver_on_subscribe() {
    let b = broker();
    let mut p = Client::connect(b.local_addr(), Protocol::V3_1_1, "p");
    p.publish("r/a", b"1", QoS::AtLeastOnce, true);
    p.publish("r/a", b"2", QoS::AtLeastOnce, true);
    p.publish("r/b", b"b", QoS::AtMostOnce, true);
    p.publish("r/c", b"c", QoS::AtLeastOnce, true);
    p.publish("r/c", b"", QoS::AtLeastOnce, true); // delete
    p.ping();
    // New subscribers on both cores (several connections) all see the same store.
    for i in 0..4 {
        let mut s = Client::connect(b.local_addr(), Protocol::V3_1_1, &format!("s{i}"));
        s.subscribe("r/#", QoS::AtLeastOnce);
        let mut got: Vec<(String, Vec<u8>, bool)> = (0..2)
            .map(|_| s.recv_publish())
            .map(|m| (m.topic.to_string(), m.payload.to_vec(), m.retain))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("r/a".into(), b"2".to_vec(), true),
                ("r/b".into(), b"b".to_vec(), true)
            ]
        );
        s.expect_nothing();
    }
    assert_eq!(b.stats().retained, 2);
}

#[test]
fn live_messages_clear_retain_unless_retain_as_published() {
    let b = broker();
    let mut plain = Client::connect(b.local_addr(), Protocol::V5, "plain");
    plain.subscribe_with(
        &[(
            "l/t",
            opts(QoS::AtMostOnce, RetainHandling::SendAtSubscribe, false),
        )],
        Default::default(),
    );
    let mut rap = Client::connect(b.local_addr(), Protocol::V5, "rap");
    rap.subscribe_with(
        &[(
            "l/t",
            opts(QoS::AtMostOnce, RetainHandling::SendAtSubscribe, true),
        )],
        Default::default(),
    );
    let mut v3 = Client::connect(b.local_addr(), Protocol::V3_1_1, "v3");
    v3.subscribe("l/t", QoS::AtMostOnce);
    let mut p = Client::connect(b.local_addr(), Protocol::V5, "p");
    p.publish("l/t", b"x", QoS::AtMostOnce, true);
    assert!(!plain.recv_publish().retain, "[MQTT-3.3.1-12]");
    assert!(rap.recv_publish().retain, "[MQTT-3.3.1-13]");
    assert!(!v3.recv_publish().retain, "3.1.1 [MQTT-3.3.1-9]");
}

#[test]
fn retain_handling_options() {
    let b = broker();
    let mut p = Client::connect(b.local_addr(), Protocol::V5, "p");
    p.publish("h/t", b"kept", QoS::AtMostOnce, true);
    p.ping(); // stored before the SUBSCRIBEs below (QoS 0 has no ack)
    let mut s = Client::connect(b.local_addr(), Protocol::V5, "s");
    s.subscribe_with(
        &[(
            "h/t",
            opts(QoS::AtMostOnce, RetainHandling::DoNotSend, false),
        )],
        Default::default(),
    );
    s.expect_nothing();
    let mut s2 = Client::connect(b.local_addr(), Protocol::V5, "s2");
    let o = opts(QoS::AtMostOnce, RetainHandling::SendIfNew, false);
    s2.subscribe_with(&[("h/t", o)], Default::default());
    assert!(s2.recv_publish().retain);
    s2.subscribe_with(&[("h/t", o)], Default::default());
    s2.expect_nothing();
    // SendAtSubscribe sends again on a repeated SUBSCRIBE.
    let o = opts(QoS::AtMostOnce, RetainHandling::SendAtSubscribe, false);
    s2.subscribe_with(&[("h/t", o)], Default::default());
    assert!(s2.recv_publish().retain);
}

#[test]
fn no_retained_messages_for_shared_subscriptions() {
    let b = broker();
    let mut p = Client::connect(b.local_addr(), Protocol::V5, "p");
    p.publish("sh/t", b"kept", QoS::AtMostOnce, true);
    // A QoS 0 PUBLISH has no ack: without this round trip it could be handled after the
    // SUBSCRIBE below and reach the shared subscriber as a live message.
    p.ping();
    let mut s = Client::connect(b.local_addr(), Protocol::V5, "s");
    s.subscribe("$share/g/sh/t", QoS::AtMostOnce);
    s.expect_nothing();
}

#[test]
fn retained_qos_is_the_minimum() {
    let b = broker();
    let mut p = Client::connect(b.local_addr(), Protocol::V5, "p");
    p.publish("m/t", b"x", QoS::ExactlyOnce, true);
    let mut s = Client::connect(b.local_addr(), Protocol::V5, "s");
    s.subscribe("m/t", QoS::AtLeastOnce);
    assert_eq!(s.recv_publish().qos, QoS::AtLeastOnce);
}

#[test]
fn wildcards_do_not_match_dollar_topics() {
    // Without the broker's own $SYS topics, which `$SYS/#` would get first.
    let b = broker_with(|c| c.sys_interval_secs = 0);
    b.publish(uringmq::InjectedMessage {
        // Not `$SYS/`: an in-process publish there is refused like a client's.
        topic: "$app/x".into(),
        payload: "1".into(),
        retain: true,
        ..Default::default()
    })
    .unwrap();
    let mut s = Client::connect(b.local_addr(), Protocol::V5, "s");
    s.subscribe("#", QoS::AtMostOnce);
    s.expect_nothing();
    s.subscribe("$app/#", QoS::AtMostOnce);
    assert_eq!(s.recv_publish().topic, "$app/x");
}

/// A retained PUBLISH on one core racing a SUBSCRIBE to it on another: the subscriber gets it
/// exactly once, live or retained, as from a broker on one thread (Mosquitto). Without care it
/// can get neither: the publisher's core matched before the subscriber's interest reached it,
/// and the subscriber's core answered its retained lookup before the publisher's `Retain`
/// reached it.
///
/// Each round, a fresh publisher and subscriber (on the same core or not, as the kernel
/// spreads them) fire a burst of retained publishes to new topics and one SUBSCRIBE to all of
/// them at the same moment (long bursts: the cores' work on them must overlap in time, which
/// on a busy machine with two CPUs short ones seldom do). Then a QoS 1 marker from the publisher, sent after the SUBACK:
/// everything the subscriber is owed arrives before it (each pair of cores is FIFO).
#[test]
fn retained_publish_racing_a_subscribe_arrives_exactly_once() {
    const ROUNDS: usize = 40;
    const TOPICS: usize = 2000;
    let b = broker();
    let mut wrong = Vec::new();
    for round in 0..ROUNDS {
        let topic = |i: usize| format!("race/{round}/{i}");
        let marker = format!("race/{round}/end");
        let mut p = Client::connect(b.local_addr(), Protocol::V5, &format!("p{round}"));
        let mut s = Client::connect(b.local_addr(), Protocol::V5, &format!("s{round}"));
        let mut burst = Vec::new();
        for i in 0..TOPICS {
            let m = publish(&topic(i), b"kept", QoS::AtMostOnce, true);
            burst.extend(p.bytes(&Packet::Publish(m)));
        }
        let mut filters: Vec<String> = (0..TOPICS).map(topic).collect();
        filters.push(marker.clone());
        let subscribe = s.bytes(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            properties: Default::default(),
            filters: filters
                .iter()
                .map(|f| (ByteStr::from(f.as_str()), SubscriptionOptions::default()))
                .collect(),
        }));
        let start = std::sync::Barrier::new(2);
        std::thread::scope(|sc| {
            sc.spawn(|| {
                start.wait();
                p.send_raw(&burst);
                p.ping();
            });
            start.wait();
            s.send_raw(&subscribe);
            assert!(matches!(s.recv(), Some(Packet::SubAck(_))), "SUBACK");
        });
        p.publish(&marker, b"end", QoS::AtLeastOnce, false);
        let mut got = vec![0; TOPICS];
        loop {
            let m = s.recv_publish();
            if m.topic == marker.as_str() {
                break;
            }
            let i: usize = m.topic.rsplit('/').next().unwrap().parse().unwrap();
            got[i] += 1;
        }
        wrong.extend(
            got.iter()
                .enumerate()
                .filter(|(_, &n)| n != 1)
                .map(|(i, n)| format!("{} x{n}", topic(i))),
        );
    }
    assert!(
        wrong.is_empty(),
        "{} topics not delivered exactly once, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
}
