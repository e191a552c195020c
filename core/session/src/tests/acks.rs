//! Acknowledgements of the broker's own QoS 1/2 deliveries: PUBACK, PUBREC, PUBCOMP.

use super::harness::Pair;
use uringmq_codec::{Ack, Packet, QoS, ReasonCode};

#[test]
fn puback_frees_the_window_and_unknown_ones_are_ignored() {
    let mut pair = Pair::v5();
    let pid = pair.deliver(QoS::AtLeastOnce);
    assert_eq!(pair.session.inflight.len(), 1);
    pair.send(Packet::PubAck(Ack::new(pid)));
    assert!(pair.session.inflight.is_empty());
    // Again, or for an identifier never sent: ignored, as Mosquitto does.
    pair.send(Packet::PubAck(Ack::new(pid)));
    pair.send(Packet::PubComp(Ack::new(99)));
    assert_eq!((pair.recv(), pair.closed.clone()), (None, None));
}

/// PUBREC gets PUBREL, again if repeated; PUBCOMP ends the exchange [MQTT-4.3.3-4].
#[test]
fn qos2_delivery_handshake() {
    let mut pair = Pair::v5();
    let pid = pair.deliver(QoS::ExactlyOnce);
    // PUBACK is no acknowledgement of a QoS 2 message.
    pair.send(Packet::PubAck(Ack::new(pid)));
    assert_eq!(pair.session.inflight.len(), 1);
    pair.send(Packet::PubRec(Ack::new(pid)));
    pair.expect_ack(Packet::PubRel, pid, ReasonCode::SUCCESS);
    pair.send(Packet::PubRec(Ack::new(pid)));
    pair.expect_ack(Packet::PubRel, pid, ReasonCode::SUCCESS);
    pair.send(Packet::PubComp(Ack::new(pid)));
    assert!(pair.session.inflight.is_empty());
    assert_eq!(pair.recv(), None);
}

/// A PUBREC with an error code ends the exchange: no PUBREL, and room in the window.
#[test]
fn a_failed_pubrec_ends_the_exchange() {
    let mut pair = Pair::v5();
    let pid = pair.deliver(QoS::ExactlyOnce);
    let mut rec = Ack::new(pid);
    rec.reason_code = ReasonCode::QUOTA_EXCEEDED;
    pair.send(Packet::PubRec(rec));
    assert_eq!(pair.recv(), None);
    assert!(pair.session.inflight.is_empty());
}

/// PUBREC for an identifier not in flight: PUBREL 0x92 in v5, plain in 3.x.
#[test]
fn an_unknown_pubrec_gets_pubrel_packet_identifier_not_found() {
    let mut v5 = Pair::v5();
    v5.send(Packet::PubRec(Ack::new(4)));
    v5.expect_ack(Packet::PubRel, 4, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND);
    let mut v3 = Pair::v3();
    v3.send(Packet::PubRec(Ack::new(4)));
    v3.expect_ack(Packet::PubRel, 4, ReasonCode::SUCCESS);
}
