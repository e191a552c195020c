//! Inbound PUBLISH: acknowledgements, routing, the broker's limits, topic aliases, the QoS 2
//! receive quota and duplicates, `$SYS/` and the ACL.

use super::harness::{Closed, Pair, ORIGIN};
use crate::{AliasError, Violation};
use bytes::Bytes;
use std::time::Duration;
use uringmq_codec::{Ack, ByteStr, Packet, Protocol, QoS, ReasonCode};

#[test]
fn every_qos_is_acknowledged_and_routed_once() {
    for mut pair in [Pair::v5(), Pair::v3()] {
        pair.publish("a/b", QoS::AtMostOnce);
        assert_eq!(pair.recv(), None, "QoS 0 is not acknowledged");
        let one = pair.publish("a/b", QoS::AtLeastOnce);
        pair.expect_ack(Packet::PubAck, one, ReasonCode::SUCCESS);
        let two = pair.publish("a/b", QoS::ExactlyOnce);
        pair.expect_ack(Packet::PubRec, two, ReasonCode::SUCCESS);
        pair.send(Packet::PubRel(Ack::new(two)));
        pair.expect_ack(Packet::PubComp, two, ReasonCode::SUCCESS);
        let qos: Vec<_> = pair.routed.iter().map(|m| m.qos).collect();
        assert_eq!(qos, [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]);
        assert_eq!(pair.closed, None);
    }
}

#[test]
fn the_routed_message_is_the_publish_at_the_broker_clock() {
    let mut pair = Pair::v5();
    pair.advance(Duration::from_secs(5));
    let mut p = pair.publish_packet("t", QoS::AtLeastOnce);
    p.retain = true;
    p.payload = Bytes::from_static(b"payload");
    p.properties.message_expiry_interval = Some(30);
    p.properties.topic_alias = Some(1);
    pair.send(Packet::Publish(p));
    let m = &pair.routed[0];
    assert_eq!((m.topic.as_str(), &m.payload[..]), ("t", &b"payload"[..]));
    assert!(m.retain);
    assert_eq!(
        m.received_at, pair.now,
        "expiry counts from the broker's now"
    );
    assert_eq!(m.origin, Some(ORIGIN), "the publisher, for No Local");
    assert_eq!(m.properties.message_expiry_interval, Some(30));
    assert_eq!(
        m.properties.topic_alias, None,
        "an alias belongs to one connection"
    );
}

/// Moved from the end of the e2e test `v5::subscription_limits_and_max_qos`.
#[test]
fn qos_above_maximum_qos_ends_the_connection() {
    let mut pair = Pair::with_limits(Protocol::V5, |l| l.max_qos = 1);
    pair.publish("t", QoS::AtLeastOnce);
    pair.expect_ack(Packet::PubAck, 1, ReasonCode::SUCCESS);
    pair.publish("t", QoS::ExactlyOnce);
    let v = pair.expect_violation(ReasonCode::QOS_NOT_SUPPORTED);
    assert!(v.to_string().starts_with("[MQTT-3.2.2-11]"), "{v}");
    assert_eq!(pair.routed.len(), 1);
}

#[test]
fn retain_when_not_available_ends_the_connection() {
    let mut pair = Pair::with_limits(Protocol::V5, |l| l.retain_available = false);
    let mut p = pair.publish_packet("t", QoS::AtMostOnce);
    p.retain = true;
    pair.send(Packet::Publish(p));
    pair.expect_violation(ReasonCode::RETAIN_NOT_SUPPORTED);
    assert!(pair.routed.is_empty());
}

#[test]
fn a_subscription_identifier_from_the_client_is_a_protocol_error() {
    let mut pair = Pair::v5();
    let mut p = pair.publish_packet("t", QoS::AtMostOnce);
    p.properties.subscription_identifiers.push(3);
    pair.send(Packet::Publish(p));
    let v = pair.expect_violation(ReasonCode::PROTOCOL_ERROR);
    assert_eq!(*v, Violation::SubscriptionIdentifier);
}

/// An alias is set by a PUBLISH with a topic and stands in for it afterwards; one above our
/// Topic Alias Maximum is 0x94 [MQTT-3.3.2-9].
#[test]
fn inbound_aliases_are_set_used_and_bounded() {
    let mut pair = Pair::with_limits(Protocol::V5, |l| l.topic_alias_maximum = 2);
    let mut p = pair.publish_packet("alias/t", QoS::AtMostOnce);
    p.properties.topic_alias = Some(2);
    pair.send(Packet::Publish(p.clone()));
    p.topic = ByteStr::new();
    pair.send(Packet::Publish(p.clone()));
    let topics: Vec<_> = pair.routed.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(topics, ["alias/t", "alias/t"]);
    p.properties.topic_alias = Some(3);
    pair.send(Packet::Publish(p));
    let v = pair.expect_violation(ReasonCode::TOPIC_ALIAS_INVALID);
    assert_eq!(*v, Violation::TopicAlias(AliasError::OutOfRange(3)));
}

/// An empty topic with an alias never set is a Protocol Error (§3.3.2.3.4), not 0x94. Moved
/// from the e2e test `v5::unknown_inbound_alias_is_a_protocol_error`.
#[test]
fn an_unknown_inbound_alias_is_a_protocol_error() {
    let mut pair = Pair::v5();
    let mut p = pair.publish_packet("", QoS::AtMostOnce);
    p.properties.topic_alias = Some(1);
    pair.send(Packet::Publish(p));
    let v = pair.expect_violation(ReasonCode::PROTOCOL_ERROR);
    assert_eq!(*v, Violation::TopicAlias(AliasError::Unknown(1)));
}

/// A new connection to the session starts without aliases [MQTT-3.3.2-7].
#[test]
fn aliases_do_not_outlive_the_connection() {
    let mut pair = Pair::v5();
    let mut p = pair.publish_packet("a", QoS::AtMostOnce);
    p.properties.topic_alias = Some(1);
    pair.send(Packet::Publish(p.clone()));
    let n = crate::negotiate(
        &super::harness::connect_packet(Protocol::V5),
        &pair.limits,
        String::new,
    )
    .unwrap();
    pair.session.attach(&n, Protocol::V5);
    p.topic = ByteStr::new();
    pair.send(Packet::Publish(p));
    pair.expect_violation(ReasonCode::PROTOCOL_ERROR);
}

#[test]
fn an_empty_topic_without_alias_is_a_protocol_error() {
    let mut pair = Pair::v5();
    pair.publish("", QoS::AtMostOnce);
    let v = pair.expect_violation(ReasonCode::PROTOCOL_ERROR);
    assert_eq!(*v, Violation::EmptyTopic);
}

#[test]
fn topics_over_the_broker_limits_are_invalid() {
    let mut pair = Pair::with_limits(Protocol::V5, |l| l.max_topic_levels = 2);
    pair.publish("a/b", QoS::AtMostOnce);
    pair.publish("a/b/c", QoS::AtMostOnce);
    pair.expect_violation(ReasonCode::TOPIC_NAME_INVALID);
    let mut pair = Pair::with_limits(Protocol::V3_1_1, |l| l.max_topic_length = 4);
    pair.publish("abcd", QoS::AtMostOnce);
    pair.publish("abcde", QoS::AtMostOnce);
    let v = pair.expect_violation(ReasonCode::TOPIC_NAME_INVALID);
    assert_eq!(*v, Violation::TopicTooLong(5));
    assert_eq!(pair.routed.len(), 1);
}

/// More QoS 2 messages awaiting PUBREL than our Receive Maximum: 0x93 [MQTT-3.3.4-9]; a
/// retransmission does not count twice, and PUBREL gives the room back. Moved from the e2e
/// test `v5::client_exceeding_our_receive_maximum_is_disconnected`.
#[test]
fn exceeding_our_receive_maximum_ends_the_connection() {
    let mut pair = Pair::with_limits(Protocol::V5, |l| l.max_inflight = 2);
    let first = pair.publish_packet("x", QoS::ExactlyOnce);
    pair.send(Packet::Publish(first.clone()));
    pair.publish("x", QoS::ExactlyOnce);
    let mut again = first.clone();
    again.dup = true;
    pair.send(Packet::Publish(again));
    pair.send(Packet::PubRel(Ack::new(first.packet_id)));
    pair.publish("x", QoS::ExactlyOnce);
    assert_eq!(
        pair.closed, None,
        "two awaiting PUBREL is within the maximum"
    );
    pair.publish("x", QoS::ExactlyOnce);
    let v = pair.expect_violation(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED);
    assert_eq!(*v, Violation::ReceiveMaximumExceeded);
}

/// A QoS 2 PUBLISH sent again before PUBREL is acknowledged again but routed once; after
/// PUBREL its identifier is a new message [MQTT-4.3.3-10]. Moved from the e2e test
/// `sessions::inbound_qos2_is_delivered_exactly_once`.
#[test]
fn inbound_qos2_is_routed_exactly_once() {
    let mut pair = Pair::v5();
    let mut p = pair.publish_packet("eo/t", QoS::ExactlyOnce);
    p.packet_id = 10;
    pair.send(Packet::Publish(p.clone()));
    pair.expect_ack(Packet::PubRec, 10, ReasonCode::SUCCESS);
    p.dup = true;
    pair.send(Packet::Publish(p.clone()));
    pair.expect_ack(Packet::PubRec, 10, ReasonCode::SUCCESS);
    assert_eq!(pair.routed.len(), 1, "the retransmission is not routed");
    pair.send(Packet::PubRel(Ack::new(10)));
    pair.expect_ack(Packet::PubComp, 10, ReasonCode::SUCCESS);
    p.dup = false;
    pair.send(Packet::Publish(p));
    assert_eq!(
        pair.routed.len(),
        2,
        "after PUBREL the identifier is a new message"
    );
}

/// PUBREL for an identifier not awaiting one: PUBCOMP 0x92 in v5, plain in 3.x.
#[test]
fn an_unknown_pubrel_gets_pubcomp_packet_identifier_not_found() {
    let mut v5 = Pair::v5();
    v5.send(Packet::PubRel(Ack::new(7)));
    v5.expect_ack(Packet::PubComp, 7, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND);
    let mut v3 = Pair::v3();
    v3.send(Packet::PubRel(Ack::new(7)));
    v3.expect_ack(Packet::PubComp, 7, ReasonCode::SUCCESS);
    assert_eq!((v5.closed, v3.closed), (None, None));
}

/// `$SYS/` is the broker's [§4.7.2]: a client's PUBLISH there is not routed; v5 says 0x87,
/// 3.x cannot say no. The ACL is not asked. A bridge's state topic is the exception. Moved from the e2e test
/// `v5::sys_topics_cannot_be_published_by_clients`.
#[test]
fn sys_topics_cannot_be_published_by_clients() {
    for (mut pair, code) in [
        (Pair::v5(), ReasonCode::NOT_AUTHORIZED),
        (Pair::v3(), ReasonCode::SUCCESS),
    ] {
        let pid = pair.publish("$SYS/fake", QoS::AtLeastOnce);
        pair.expect_ack(Packet::PubAck, pid, code);
        pair.publish("$SYS", QoS::AtMostOnce);
        assert!(pair.routed.is_empty());
        assert_eq!(pair.acl_asked, 0);
        pair.publish("$SYSTEM/x", QoS::AtMostOnce);
        assert_eq!(pair.routed.len(), 1, "only `$SYS` itself is reserved");
        // A bridge's state, which Mosquitto lets clients (bridges) write.
        pair.publish("$SYS/broker/connection/b/state", QoS::AtMostOnce);
        assert_eq!(pair.routed.len(), 2);
    }
}

/// A PUBLISH the ACL refuses is dropped. v5 answers 0x87, and a refused QoS 2 exchange ends
/// at PUBREC, so the same identifier is a new PUBLISH (asked again); 3.x acknowledges
/// normally (as Mosquitto) and keeps the identifier until PUBREL.
#[test]
fn a_publish_the_acl_refuses_is_dropped() {
    let mut v5 = Pair::v5();
    v5.acl = |topic| topic != "secret";
    let p = v5.publish_packet("secret", QoS::ExactlyOnce);
    v5.send(Packet::Publish(p.clone()));
    v5.expect_ack(Packet::PubRec, p.packet_id, ReasonCode::NOT_AUTHORIZED);
    v5.send(Packet::Publish(p.clone()));
    v5.expect_ack(Packet::PubRec, p.packet_id, ReasonCode::NOT_AUTHORIZED);
    assert_eq!(v5.acl_asked, 2);
    v5.send(Packet::PubRel(Ack::new(p.packet_id)));
    v5.expect_ack(
        Packet::PubComp,
        p.packet_id,
        ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
    );
    let mut v3 = Pair::v3();
    v3.acl = |topic| topic != "secret";
    let p = v3.publish_packet("secret", QoS::ExactlyOnce);
    v3.send(Packet::Publish(p.clone()));
    v3.expect_ack(Packet::PubRec, p.packet_id, ReasonCode::SUCCESS);
    v3.send(Packet::PubRel(Ack::new(p.packet_id)));
    v3.expect_ack(Packet::PubComp, p.packet_id, ReasonCode::SUCCESS);
    assert!(v5.routed.is_empty() && v3.routed.is_empty());
    assert_eq!((v5.closed, v3.closed), (None, None::<Closed>));
}

/// What a blocking authoriser is asked about before the PUBLISH is handled: the topic an alias
/// stands for, not an empty one.
#[test]
fn the_topic_of_a_publish_by_alias_is_known_before_it_is_handled() {
    let mut pair = Pair::v5();
    let mut p = pair.publish_packet("a/b", QoS::AtMostOnce);
    p.properties.topic_alias = Some(1);
    assert_eq!(pair.session.publish_topic(&p).as_deref(), Some("a/b"));
    pair.send(Packet::Publish(p.clone()));
    p.topic = ByteStr::new();
    assert_eq!(pair.session.publish_topic(&p).as_deref(), Some("a/b"));
    p.properties.topic_alias = Some(2);
    assert_eq!(pair.session.publish_topic(&p), None);
}
