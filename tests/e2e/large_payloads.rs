//! Large payloads are queued as the decoded PUBLISH's shared buffer and written with `writev`
//! (core/broker/src/out_queue.rs): every subscriber must still get every byte, in order, with
//! small and large messages interleaved, with the shared head and with per-subscriber heads
//! (subscription identifiers, topic aliases), on io_uring and on epoll, over several cores.

use crate::support::*;
use std::collections::HashMap;
use uringmq::Driver;

/// Sizes around the sharing threshold (16 KiB), a 64 KiB one, then near-maximum packets: more
/// bytes per subscriber than loopback socket buffers hold while the test reads elsewhere, so
/// the broker's `writev` calls return short counts, also inside segments.
fn sizes() -> Vec<usize> {
    let mut sizes = vec![10, 16_383, 16_384, 16_385, 65_536, 3, 1_000_003, 70_000, 5];
    sizes.extend((0..12).map(|i| 1_000_000 + 1000 * i + i));
    sizes
}

fn payload(i: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| {
            (k as u8)
                .wrapping_mul(7)
                .wrapping_add((i as u8).wrapping_mul(31))
        })
        .collect()
}

struct Sub {
    client: Client,
    /// Topic aliases the broker set up for this subscriber [MQTT-3.3.2-12].
    aliases: HashMap<u16, String>,
    /// The subscription identifier every delivery must carry [MQTT-3.3.4-3].
    sub_id: Option<u32>,
}

fn subscriber(b: &Broker, id: &str, proto: Protocol, qos: QoS, how: &str) -> Sub {
    let mut c = connect_packet(proto, id);
    if how == "alias" {
        c.properties.topic_alias_maximum = Some(4);
    }
    let (mut client, ack) = Client::connect_with(b.local_addr(), c);
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    let sub_id = (how == "sub-id").then_some(7);
    let props = SubscribeProperties {
        subscription_identifier: sub_id,
        ..Default::default()
    };
    let opts = SubscriptionOptions {
        qos,
        ..Default::default()
    };
    let codes = client.subscribe_with(&[("big/+", opts)], props);
    assert_eq!(codes, vec![ReasonCode(qos as u8)]);
    Sub {
        client,
        aliases: HashMap::new(),
        sub_id,
    }
}

/// The next PUBLISH, acknowledged; a PUBREL of an earlier QoS 2 delivery (which may come
/// after PUBLISH packets queued before it) is completed on the way.
fn next_publish(c: &mut Client) -> Publish {
    loop {
        match c.recv() {
            Some(Packet::PubRel(a)) => c.send(&Packet::PubComp(Ack::new(a.packet_id))),
            Some(Packet::Publish(p)) => {
                match p.qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => c.send(&Packet::PubAck(Ack::new(p.packet_id))),
                    QoS::ExactlyOnce => c.send(&Packet::PubRec(Ack::new(p.packet_id))),
                }
                return p;
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}

#[test]
fn large_payloads_reach_every_subscriber_intact_and_in_order_on_both_drivers() {
    for driver in [Driver::Auto, Driver::Epoll] {
        let mut b = broker_with(|c| {
            c.driver = driver;
            // Every subscriber reads only after everything is published: nothing may be dropped.
            c.max_outbound_bytes = 64 << 20;
        });
        let mut subs = vec![
            subscriber(&b, "v3-q0", Protocol::V3_1_1, QoS::AtMostOnce, ""),
            subscriber(&b, "v3-q1", Protocol::V3_1_1, QoS::AtLeastOnce, ""),
            subscriber(&b, "v5-q2", Protocol::V5, QoS::ExactlyOnce, ""),
            subscriber(&b, "v5-id", Protocol::V5, QoS::AtLeastOnce, "sub-id"),
            subscriber(&b, "v5-alias", Protocol::V5, QoS::AtMostOnce, "alias"),
            subscriber(&b, "v5-q0", Protocol::V5, QoS::AtMostOnce, ""),
        ];
        let mut publ = Client::connect(b.local_addr(), Protocol::V5, "pub");
        let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];
        for (i, &len) in sizes().iter().enumerate() {
            let topic = format!("big/{i}");
            publ.publish(&topic, &payload(i, len), qos[i % 3], false);
        }
        for s in &mut subs {
            for (i, &len) in sizes().iter().enumerate() {
                let p = next_publish(&mut s.client);
                let mut topic = p.topic.to_string();
                if let Some(alias) = p.properties.topic_alias {
                    if topic.is_empty() {
                        topic = s.aliases.get(&alias).expect("known alias").clone();
                    } else {
                        s.aliases.insert(alias, topic.clone());
                    }
                }
                assert_eq!(topic, format!("big/{i}"), "{driver:?}: order");
                assert!(
                    p.payload[..] == payload(i, len)[..],
                    "{driver:?}: payload {i}"
                );
                let ids = &p.properties.subscription_identifiers;
                assert_eq!(ids.first().copied(), s.sub_id, "{driver:?}: {ids:?}");
            }
        }
        let st = b.stats();
        assert_eq!(st.dropped_qos0, 0, "{driver:?}: {st:?}");
        b.stop();
    }
}

/// With default settings a payload just over 1 MiB (a firmware image, say) goes through, to
/// 3.1.1 and 5.0 subscribers at QoS 0 and 1, on both drivers. (The old default of 1 MiB
/// refused it: DISCONNECT 0x95.)
#[test]
fn a_payload_over_one_mebibyte_round_trips_with_default_settings() {
    for driver in [Driver::Auto, Driver::Epoll] {
        let mut b = broker_with(|c| c.driver = driver);
        let len = (1 << 20) + 4096;
        let mut subs = vec![
            subscriber(&b, "v3", Protocol::V3_1_1, QoS::AtLeastOnce, ""),
            subscriber(&b, "v5", Protocol::V5, QoS::AtMostOnce, ""),
        ];
        for (i, proto) in [Protocol::V3_1_1, Protocol::V5].into_iter().enumerate() {
            let mut publ = Client::connect(b.local_addr(), proto, &format!("fw-{i}"));
            let qos = [QoS::AtLeastOnce, QoS::AtMostOnce][i];
            publ.publish("big/fw", &payload(i, len), qos, false);
            for s in &mut subs {
                let p = next_publish(&mut s.client);
                assert!(p.payload[..] == payload(i, len)[..], "{driver:?} {proto:?}");
            }
        }
        b.stop();
    }
}
