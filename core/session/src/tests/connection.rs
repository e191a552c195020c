//! The ends of a connection: the will's settings at CONNECT, and DISCONNECT.

use super::harness::{connect_packet, Closed, Pair};
use crate::Limits;
use uringmq_codec::{
    Disconnect, DisconnectProperties, LastWill, Packet, Protocol, QoS, ReasonCode,
};

fn disconnect(code: ReasonCode, expiry: Option<u32>) -> Packet {
    Packet::Disconnect(Disconnect {
        reason_code: code,
        properties: DisconnectProperties {
            session_expiry_interval: expiry,
            ..Default::default()
        },
    })
}

fn with_expiry(expiry: u32, limits: Limits) -> Pair {
    let mut c = connect_packet(Protocol::V5);
    c.properties.session_expiry_interval = Some(expiry);
    Pair::connect(&c, limits).unwrap()
}

/// Moved from the e2e test `v5::session_expiry_in_disconnect_after_zero_is_a_protocol_error`.
#[test]
fn session_expiry_in_disconnect_after_zero_is_a_protocol_error() {
    let mut pair = Pair::v5();
    pair.send(disconnect(ReasonCode::SUCCESS, Some(10)));
    pair.expect_violation(ReasonCode::PROTOCOL_ERROR);
    let mut pair = Pair::v5();
    pair.send(disconnect(ReasonCode::SUCCESS, Some(0)));
    assert_eq!(pair.closed, Some(Closed::Disconnect { will: false }));
}

/// DISCONNECT may change a non-zero expiry, within the broker's maximum.
#[test]
fn disconnect_changes_the_session_expiry_within_the_maximum() {
    let mut limits = Limits::for_tests();
    limits.max_session_expiry = 100;
    let mut pair = with_expiry(10, limits);
    pair.send(disconnect(ReasonCode::SUCCESS, Some(1000)));
    assert_eq!(pair.session.session_expiry(), 100);
    let mut pair = with_expiry(10, limits);
    pair.send(disconnect(ReasonCode::SUCCESS, Some(0)));
    assert!(!pair.session.is_persistent());
}

/// Reason 0x04 asks for the will [MQTT-3.14.4-3]; any other DISCONNECT deletes it.
#[test]
fn disconnect_with_will_message_publishes_the_will() {
    let mut pair = Pair::v5();
    pair.send(disconnect(ReasonCode::DISCONNECT_WITH_WILL_MESSAGE, None));
    assert_eq!(pair.closed, Some(Closed::Disconnect { will: true }));
    let mut pair = Pair::v3();
    pair.send(disconnect(ReasonCode::NORMAL_DISCONNECTION, None));
    assert_eq!(pair.closed, Some(Closed::Disconnect { will: false }));
}

fn will(qos: QoS, retain: bool, topic: &str) -> LastWill {
    LastWill {
        topic: topic.into(),
        payload: Default::default(),
        qos,
        retain,
        properties: Default::default(),
    }
}

/// A will the broker could not publish is refused at CONNECT: QoS above Maximum QoS
/// [MQTT-3.2.2-12], RETAIN without retain available [MQTT-3.2.2-13], a topic over the topic
/// limits (0x90). Moved from the e2e test `basic::a_will_the_broker_cannot_honour_is_refused`.
#[test]
fn a_will_the_broker_cannot_honour_is_refused() {
    let mut limits = Limits::for_tests();
    limits.max_qos = 1;
    limits.retain_available = false;
    limits.max_topic_length = 5;
    let refused = |w: LastWill| {
        let mut c = connect_packet(Protocol::V5);
        c.will = Some(w);
        Pair::connect(&c, limits).err().map(|r| r.reason)
    };
    assert_eq!(
        refused(will(QoS::ExactlyOnce, false, "w")),
        Some(ReasonCode::QOS_NOT_SUPPORTED)
    );
    assert_eq!(
        refused(will(QoS::AtMostOnce, true, "w")),
        Some(ReasonCode::RETAIN_NOT_SUPPORTED)
    );
    assert_eq!(
        refused(will(QoS::AtMostOnce, false, "toolong")),
        Some(ReasonCode::TOPIC_NAME_INVALID)
    );
    assert_eq!(refused(will(QoS::AtLeastOnce, false, "w")), None);
}

/// A new connection to the session cancels the previous connection's pending will
/// [MQTT-3.1.3-10] and drops its aliases (`publish::aliases_do_not_outlive_the_connection`);
/// the user name stays until the broker sets the new one, and the box these live in is given
/// back once all are cleared.
#[test]
fn a_new_connection_cancels_the_pending_will_and_gives_the_box_back() {
    let mut pair = Pair::v5();
    let mut p = pair.publish_packet("alias/t", QoS::AtMostOnce);
    p.properties.topic_alias = Some(1);
    pair.send(Packet::Publish(p));
    assert!(pair.session.has_rare(), "an alias set");
    let pending = crate::PendingWill {
        will: Box::new(will(QoS::AtMostOnce, false, "w")),
        due: pair.now,
    };
    pair.session.set_pending_will(Some(pending));
    pair.session.set_username(Some("dev".into()));

    let c = connect_packet(Protocol::V5);
    let n = crate::negotiate(&c, &pair.limits, || "assigned".into()).unwrap();
    pair.session.attach(&n, Protocol::V5);
    assert!(pair.session.pending_will().is_none());
    assert_eq!(pair.session.username(), Some("dev"));
    pair.session.set_username(None);
    assert!(
        !pair.session.has_rare(),
        "nothing left: the box is given back"
    );

    let mut c = connect_packet(Protocol::V5);
    c.properties.maximum_packet_size = Some(1000);
    let n = crate::negotiate(&c, &pair.limits, || "assigned".into()).unwrap();
    pair.session.attach(&n, Protocol::V5);
    assert_eq!(
        pair.session.client_max_packet().map(|m| m.get()),
        Some(1000)
    );
    let n = crate::negotiate(&connect_packet(Protocol::V5), &pair.limits, String::new).unwrap();
    pair.session.attach(&n, Protocol::V5);
    assert_eq!(pair.session.client_max_packet(), None);
    assert!(!pair.session.has_rare());
}

/// The will and its delay, the expiry time: each set and cleared, the box made and given back;
/// the connection time kept to the millisecond.
#[test]
fn rarely_set_fields_live_in_a_box_only_while_set() {
    let mut pair = Pair::v3();
    let s = &mut pair.session;
    assert!(
        !s.has_rare(),
        "an idle session without a user name has no box"
    );
    s.set_will(Some(Box::new(will(QoS::AtLeastOnce, false, "w"))));
    s.set_will_delay(5);
    assert_eq!(
        (s.will().map(|w| w.qos), s.will_delay()),
        (Some(QoS::AtLeastOnce), 5)
    );
    assert!(s.take_will().is_some() && s.will().is_none());
    assert!(s.has_rare(), "the delay is still set");
    s.set_will_delay(0);
    assert!(!s.has_rare());
    let at = pair.now + std::time::Duration::from_secs(10);
    s.set_expires_at(Some(at));
    assert_eq!(s.expires_at(), Some(at));
    s.set_expires_at(None);
    assert!(!s.has_rare());
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_765_000_000_123);
    s.set_connected_since(t + std::time::Duration::from_micros(456));
    assert_eq!(s.connected_since(), t);
}
