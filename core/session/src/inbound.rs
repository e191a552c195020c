//! The packets of a connected client that the session answers: PUBLISH and the four
//! acknowledgements, and DISCONNECT. Each handler takes the broker's [`Limits`] (and the time,
//! where it matters) as arguments and returns what to send and what to route, or the
//! [`Violation`] that ends the connection. The broker writes the reply, routes the message and
//! closes on a violation; it holds no rule of its own.
//!
//! Where the specification leaves room, the broker behaves as Mosquitto does: an unknown PUBACK
//! or PUBCOMP is ignored, and a PUBLISH the client may not make is acknowledged normally in 3.x
//! (there is no way to say no) and with 0x87 in v5.

use crate::flow;
use crate::limits::Limits;
use crate::message::{Message, Origin};
use crate::session::Session;
use crate::violation::Violation;
use crate::AckError;
use std::sync::Arc;
use std::time::Instant;
use uringmq_codec::{Ack, ByteStr, Disconnect, Packet, Publish, QoS, ReasonCode};
use uringmq_topic::check_max_levels;

/// What becomes of an inbound PUBLISH that breaks no rule.
#[derive(Debug)]
pub struct Received {
    /// PUBACK or PUBREC to send; none for QoS 0.
    pub ack: Option<Packet>,
    /// What to route.
    pub route: Route,
}

/// Whether an inbound PUBLISH is routed.
#[derive(Debug)]
pub enum Route {
    /// Route it (and store it first if RETAIN is set): made in the `Arc` every core and
    /// subscriber shares, its one allocation.
    Message(Arc<Message>),
    /// A retransmitted QoS 2 PUBLISH whose message was routed already [MQTT-4.3.3-10].
    Duplicate,
    /// The client may not publish there (`$SYS/`, or the authoriser said no): dropped.
    Denied,
}

impl Session {
    /// An inbound PUBLISH: the broker's limits, the topic alias, the QoS 2 receive quota and
    /// duplicates, then `authorize` (the ACL, asked with the resolved topic; `$SYS/` is refused
    /// before it). `origin` is this session for No Local; `now` starts the message's expiry.
    pub fn handle_publish(
        &mut self,
        p: Publish,
        origin: Origin,
        limits: &Limits,
        now: Instant,
        authorize: impl FnOnce(&Session, &str) -> bool,
    ) -> Result<Received, Violation> {
        check_publish(&p, limits)?;
        let Publish {
            qos,
            retain,
            topic,
            packet_id: pid,
            mut properties,
            payload,
            ..
        } = p;
        // Our Topic Alias Maximum, as CONNACK announced it (3.x has no aliases).
        let alias_max = if self.protocol.is_v5() {
            limits.topic_alias_maximum
        } else {
            0
        };
        let topic = self
            .resolve_alias(topic, properties.topic_alias, alias_max)
            .map_err(Violation::TopicAlias)?;
        check_topic(&topic, limits)?;
        let fresh = qos != QoS::ExactlyOnce || self.receive_qos2(pid, limits)?;
        // `$SYS/` is the broker's [§4.7.2]: clients may not publish there (but for a bridge's
        // state topic, as Mosquitto).
        let allowed = !Message::is_reserved_for_broker(&topic) && authorize(self, &topic);
        let v5 = self.protocol.is_v5();
        if !allowed && qos == QoS::ExactlyOnce && v5 {
            // A PUBREC with an error code ends the exchange: no PUBREL follows.
            self.release_qos2_id(pid);
        }
        let code = if !allowed && v5 {
            ReasonCode::NOT_AUTHORIZED
        } else {
            ReasonCode::SUCCESS
        };
        let ack = match qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => Some(Packet::PubAck(ack(pid, code))),
            QoS::ExactlyOnce => Some(Packet::PubRec(ack(pid, code))),
        };
        let route = if !allowed {
            Route::Denied
        } else if !fresh {
            Route::Duplicate
        } else {
            // An alias belongs to this connection, never to the message.
            properties.topic_alias = None;
            Route::Message(Arc::new(Message {
                topic,
                payload,
                qos,
                retain,
                properties,
                origin: Some(origin),
                received_at: now,
            }))
        };
        Ok(Received { ack, route })
    }

    /// The topic `p` names, its own or its alias's, without handling it: what a blocking
    /// authoriser is asked about, off the core, before [`Session::handle_publish`]. `None` when
    /// it names none (`handle_publish` then finds the violation).
    pub fn publish_topic(&self, p: &Publish) -> Option<ByteStr> {
        self.peek_alias(&p.topic, p.properties.topic_alias)
    }

    /// A QoS 2 PUBLISH: true when it is new, false for a retransmission of one awaiting PUBREL
    /// (which does not count again against our Receive Maximum).
    fn receive_qos2(&mut self, pid: u16, limits: &Limits) -> Result<bool, Violation> {
        let held = self.qos2_in();
        if !held.contains(pid) && flow::inbound_exceeded(held.len(), limits.max_inflight) {
            return Err(Violation::ReceiveMaximumExceeded);
        }
        Ok(self.receive_qos2_id(pid))
    }

    /// PUBACK: the QoS 1 message leaves the window (the broker may send the next one). An
    /// unknown packet identifier is ignored, as Mosquitto does.
    pub fn handle_puback(&mut self, a: &Ack) -> Result<(), AckError> {
        self.inflight.puback(a.packet_id).map(drop)
    }

    /// PUBREC: the PUBREL to send, or none when the client failed the message (v5, code >=
    /// 0x80): the exchange ends there and the window has room again [MQTT-4.3.3-4]. An unknown
    /// packet identifier gets PUBREL 0x92 in v5 (3.x has no codes).
    pub fn handle_pubrec(&mut self, a: &Ack) -> Option<Packet> {
        let pid = a.packet_id;
        match self.inflight.pubrec(pid, a.reason_code.is_error()) {
            Ok(true) => Some(Packet::PubRel(Ack::new(pid))),
            Ok(false) => None,
            Err(AckError::UnknownPacketId(_)) => {
                Some(Packet::PubRel(ack(pid, self.not_found_code())))
            }
        }
    }

    /// PUBREL: the inbound QoS 2 identifier is released (it may be used again), and the
    /// PUBCOMP to send; 0x92 in v5 when the identifier was not awaiting PUBREL.
    pub fn handle_pubrel(&mut self, a: &Ack) -> Packet {
        let code = if self.release_qos2_id(a.packet_id) {
            ReasonCode::SUCCESS
        } else {
            self.not_found_code()
        };
        Packet::PubComp(ack(a.packet_id, code))
    }

    /// PUBCOMP: the outbound QoS 2 exchange is complete and the message leaves the window. An
    /// unknown packet identifier is ignored.
    pub fn handle_pubcomp(&mut self, a: &Ack) -> Result<(), AckError> {
        self.inflight.pubcomp(a.packet_id).map(drop)
    }

    /// DISCONNECT: a new Session Expiry Interval (capped by the broker's), unless CONNECT set 0
    /// [MQTT-3.14.2-2]. Returns whether the will is published (v5 reason 0x04 [MQTT-3.14.4-3]).
    pub fn handle_disconnect(
        &mut self,
        d: &Disconnect,
        limits: &Limits,
    ) -> Result<bool, Violation> {
        if let Some(x) = d.properties.session_expiry_interval {
            if self.session_expiry == 0 && x != 0 {
                return Err(Violation::SessionExpiryAfterZero);
            }
            self.session_expiry = x.min(limits.max_session_expiry);
        }
        Ok(d.reason_code == ReasonCode::DISCONNECT_WITH_WILL_MESSAGE)
    }

    /// The code of an acknowledgement for an unknown packet identifier.
    fn not_found_code(&self) -> ReasonCode {
        if self.protocol.is_v5() {
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        } else {
            ReasonCode::SUCCESS
        }
    }
}

/// The broker's limits on any PUBLISH, before its topic is resolved.
fn check_publish(p: &Publish, limits: &Limits) -> Result<(), Violation> {
    if p.qos as u8 > limits.max_qos {
        return Err(Violation::QosNotSupported);
    }
    if p.retain && !limits.retain_available {
        return Err(Violation::RetainNotSupported);
    }
    if !p.properties.subscription_identifiers.is_empty() {
        return Err(Violation::SubscriptionIdentifier);
    }
    Ok(())
}

/// The resolved topic name: present, and within the broker's limits.
fn check_topic(topic: &ByteStr, limits: &Limits) -> Result<(), Violation> {
    if topic.is_empty() {
        return Err(Violation::EmptyTopic);
    }
    check_max_levels(topic, limits.max_topic_levels).map_err(Violation::TopicLevels)?;
    if topic.len() > limits.max_topic_length {
        return Err(Violation::TopicTooLong(topic.len()));
    }
    Ok(())
}

fn ack(pid: u16, code: ReasonCode) -> Ack {
    let mut a = Ack::new(pid);
    a.reason_code = code;
    a
}
