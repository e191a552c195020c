//! CONNECT, SUBSCRIBE and PUBLISH at every QoS, both protocol versions, across cores.

use crate::support::*;

const VERSIONS: [Protocol; 3] = [Protocol::V3_1, Protocol::V3_1_1, Protocol::V5];

#[test]
fn port_zero_is_resolved_and_stop_frees_it() {
    let mut b = broker();
    let addr = b.local_addr();
    assert_ne!(addr.port(), 0);
    assert!(b.is_running());
    let c = Client::connect(addr, Protocol::V3_1_1, "a");
    drop(c);
    b.stop();
    assert!(!b.is_running());
    b.stop();
    // The port is free again: a plain listener can take it.
    std::net::TcpListener::bind(addr).expect("port free after stop");
}

#[test]
fn a_taken_port_is_addr_in_use() {
    let b = broker();
    let err = Broker::builder(Config {
        port: b.local_addr().port(),
        ..config()
    })
    .start()
    .err()
    .expect("conflict");
    match err {
        uringmq::StartError::Bind { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse)
        }
        other => panic!("expected Bind, got {other}"),
    }
}

#[test]
fn pub_sub_every_qos_and_version() {
    let b = broker();
    for (i, &proto) in VERSIONS.iter().enumerate() {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let topic = format!("t/{i}/{}", qos as u8);
            let mut sub = Client::connect(b.local_addr(), proto, &format!("sub-{i}"));
            sub.subscribe(&topic, qos);
            let mut publ = Client::connect(b.local_addr(), proto, &format!("pub-{i}"));
            publ.publish(&topic, b"hello", qos, false);
            let p = sub.recv_publish();
            assert_eq!(p.topic, topic.as_str());
            assert_eq!(&p.payload[..], b"hello");
            assert_eq!(p.qos, qos);
            assert!(!p.retain);
            publ.disconnect();
            sub.disconnect();
        }
    }
}

#[test]
fn deliveries_cross_cores() {
    // Enough subscribers that both cores hold some (the kernel spreads them with SO_REUSEPORT).
    let b = broker();
    let mut subs: Vec<Client> = (0..12)
        .map(|i| {
            let mut c = Client::connect(b.local_addr(), Protocol::V5, &format!("s{i}"));
            c.subscribe("x/+", QoS::AtLeastOnce);
            c
        })
        .collect();
    let mut publishers: Vec<Client> = (0..6)
        .map(|i| Client::connect(b.local_addr(), Protocol::V3_1_1, &format!("p{i}")))
        .collect();
    for (i, p) in publishers.iter_mut().enumerate() {
        p.publish(
            &format!("x/{i}"),
            format!("m{i}").as_bytes(),
            QoS::AtLeastOnce,
            false,
        );
    }
    for s in &mut subs {
        let mut got: Vec<String> = (0..6)
            .map(|_| String::from_utf8(s.recv_publish().payload.to_vec()).unwrap())
            .collect();
        got.sort();
        assert_eq!(got, (0..6).map(|i| format!("m{i}")).collect::<Vec<_>>());
    }
    assert_eq!(b.stats().connections, 18);
}

#[test]
fn overlapping_subscriptions_get_one_copy_at_the_highest_qos() {
    let b = broker();
    let mut sub = Client::connect(b.local_addr(), Protocol::V5, "sub");
    let o = |qos| SubscriptionOptions {
        qos,
        ..Default::default()
    };
    let props = SubscribeProperties {
        subscription_identifier: Some(7),
        ..Default::default()
    };
    sub.subscribe_with(&[("a/+", o(QoS::AtMostOnce))], props);
    let props = SubscribeProperties {
        subscription_identifier: Some(9),
        ..Default::default()
    };
    sub.subscribe_with(&[("a/#", o(QoS::ExactlyOnce))], props);
    let mut publ = Client::connect(b.local_addr(), Protocol::V5, "pub");
    publ.publish("a/b", b"x", QoS::ExactlyOnce, false);
    let p = sub.recv_publish();
    assert_eq!(p.qos, QoS::ExactlyOnce);
    let mut ids = p.properties.subscription_identifiers.to_vec();
    ids.sort();
    assert_eq!(ids, vec![7, 9]);
    sub.expect_nothing();
}

#[test]
fn unsubscribe_stops_delivery() {
    let b = broker();
    let mut sub = Client::connect(b.local_addr(), Protocol::V5, "sub");
    sub.subscribe("u/t", QoS::AtMostOnce);
    assert_eq!(
        sub.unsubscribe(&["u/t", "never"]),
        vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]
    );
    let mut publ = Client::connect(b.local_addr(), Protocol::V5, "pub");
    publ.publish("u/t", b"x", QoS::AtLeastOnce, false);
    sub.expect_nothing();
}

#[test]
fn ping() {
    let b = broker();
    for proto in VERSIONS {
        let mut c = Client::connect(b.local_addr(), proto, "p");
        c.ping();
    }
}

#[test]
fn connections_gauge_follows_takeovers_and_disconnects() {
    let b = broker();
    let first = Client::connect(b.local_addr(), Protocol::V5, "g");
    let second = Client::connect(b.local_addr(), Protocol::V5, "g");
    let mut probe = Client::connect(b.local_addr(), Protocol::V5, "probe");
    probe.ping();
    drop(first);
    assert_eq!(b.stats().connections, 2);
    second.disconnect();
    for _ in 0..50 {
        if b.stats().connections == 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(b.stats().connections, 1);
}

#[test]
fn a_will_the_broker_cannot_honour_is_refused() {
    let b = broker_with(|c| c.max_qos = 1);
    let mut c = connect_packet(Protocol::V5, "w");
    c.will = Some(LastWill {
        topic: "w".into(),
        payload: Default::default(),
        qos: QoS::ExactlyOnce,
        retain: false,
        properties: Default::default(),
    });
    let (_c, ack) = Client::connect_with(b.local_addr(), c);
    assert_eq!(
        ack.reason_code,
        ReasonCode::QOS_NOT_SUPPORTED,
        "[MQTT-3.2.2-12]"
    );
}
