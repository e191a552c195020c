//! A connected client's packets (PUBLISH and its acks, PINGREQ, DISCONNECT) handled on its core.

use crate::conn::{CloseReason, Conn};
use crate::shard::{add, Entry, Shard};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;
use tracing::debug;
use uringmq_auth::Access;
use uringmq_codec::{Ack, Disconnect, Packet, Publish, QoS, ReasonCode};
use uringmq_session::{flow, AliasError, Message, Origin, Session};
use uringmq_topic::check_max_levels;

pub(super) fn ack(pid: u16, code: ReasonCode) -> Ack {
    let mut a = Ack::new(pid);
    a.reason_code = code;
    a
}

impl Shard {
    pub(super) fn client_info_allows(
        &self,
        conn: &Conn,
        e: &Entry,
        access: Access,
        topic: &str,
    ) -> bool {
        match &self.shared.authorizer {
            None => true,
            // Blocking authorisers are asked on a hook thread before the packet gets here.
            Some(a) if a.is_blocking() => true,
            Some(a) => {
                let mut info = crate::conn::session_info(e, &conn.listener);
                info.peer = conn.peer;
                a.authorize(&info, access, topic)
            }
        }
    }

    /// Handles one packet of a connected client. `pre` carries decisions of a blocking
    /// authoriser (one per PUBLISH topic or SUBSCRIBE filter), asked before on a hook thread.
    pub(crate) fn handle_packet(
        self: &Rc<Self>,
        conn: &Rc<Conn>,
        key: u64,
        packet: Packet,
        pre: Option<Vec<bool>>,
    ) -> Result<(), CloseReason> {
        let proto = conn.protocol.get();
        let v5 = proto.is_v5();
        match packet {
            Packet::Publish(p) => self.on_publish(
                conn,
                key,
                p,
                pre.map(|v| v.first().copied().unwrap_or(false)),
            ),
            Packet::PubAck(a) => {
                let ok = self.with_session(key, |s| s.inflight.puback(a.packet_id).is_ok());
                if !ok {
                    debug!(pid = a.packet_id, "PUBACK for unknown packet id ignored");
                }
                self.pump(key);
                Ok(())
            }
            Packet::PubRec(a) => {
                let r = self.with_session(key, |s| {
                    Some(s.inflight.pubrec(a.packet_id, a.reason_code.is_error()))
                });
                match r.unwrap_or(Ok(false)) {
                    Ok(true) => conn.send_packet(&Packet::PubRel(Ack::new(a.packet_id))),
                    Ok(false) => self.pump(key),
                    Err(_) => {
                        // [MQTT-4.3.3-?] v5: PUBREL 0x92 Packet Identifier not found.
                        let code = if v5 {
                            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
                        } else {
                            ReasonCode::SUCCESS
                        };
                        conn.send_packet(&Packet::PubRel(ack(a.packet_id, code)))
                    }
                }
                Ok(())
            }
            Packet::PubRel(a) => {
                let known = self.with_session(key, |s| s.qos2_in.release(a.packet_id));
                let code = if known || !v5 {
                    ReasonCode::SUCCESS
                } else {
                    ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
                };
                conn.send_packet(&Packet::PubComp(ack(a.packet_id, code)));
                Ok(())
            }
            Packet::PubComp(a) => {
                let _ = self.with_session(key, |s| s.inflight.pubcomp(a.packet_id).is_ok());
                self.pump(key);
                Ok(())
            }
            Packet::Subscribe(s) => self.on_subscribe(conn, key, s, pre),
            Packet::Unsubscribe(u) => self.on_unsubscribe(conn, key, u),
            Packet::PingReq => {
                conn.send_packet(&Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect(d) => self.on_disconnect(key, d),
            Packet::Connect(_) => Err(CloseReason::Protocol(
                ReasonCode::PROTOCOL_ERROR.0,
                "[MQTT-3.1.0-2] second CONNECT".into(),
            )),
            Packet::Auth(_) => Err(CloseReason::Protocol(
                ReasonCode::PROTOCOL_ERROR.0,
                "[MQTT-4.12.0-7] AUTH without an authentication method".into(),
            )),
            other => Err(CloseReason::Protocol(
                ReasonCode::PROTOCOL_ERROR.0,
                format!(
                    "[§2.1.2] packet type {} is not sent by clients",
                    other.packet_type()
                ),
            )),
        }
    }

    pub(super) fn with_session<T: Default>(
        &self,
        key: u64,
        f: impl FnOnce(&mut Session) -> T,
    ) -> T {
        let mut st = self.st.borrow_mut();
        st.sessions
            .get_mut(&key)
            .map(|e| f(&mut e.s))
            .unwrap_or_default()
    }

    fn on_disconnect(&self, key: u64, d: Disconnect) -> Result<(), CloseReason> {
        if let Some(x) = d.properties.session_expiry_interval {
            let max = self.config().max_session_expiry_secs;
            let bad = self.with_session(key, |s| {
                if s.session_expiry == 0 && x != 0 {
                    true
                } else {
                    s.session_expiry = x.min(max);
                    false
                }
            });
            if bad {
                return Err(CloseReason::Protocol(
                    ReasonCode::PROTOCOL_ERROR.0,
                    "[MQTT-3.14.2-2] session expiry set in DISCONNECT after 0 in CONNECT".into(),
                ));
            }
        }
        Err(CloseReason::Disconnect {
            will: d.reason_code == ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
        })
    }

    fn on_publish(
        self: &Rc<Self>,
        conn: &Rc<Conn>,
        key: u64,
        p: Publish,
        pre: Option<bool>,
    ) -> Result<(), CloseReason> {
        let proto = conn.protocol.get();
        let v5 = proto.is_v5();
        let cfg = self.config();
        add(&self.stats().messages_in, 1);
        add(&self.stats().publish_bytes_in, p.payload.len() as u64);
        let protocol =
            |code: ReasonCode, why: &str| Err(CloseReason::Protocol(code.0, why.to_owned()));
        if p.qos as u8 > cfg.max_qos {
            return protocol(
                ReasonCode::QOS_NOT_SUPPORTED,
                "[MQTT-3.2.2-11] QoS above Maximum QoS",
            );
        }
        if p.retain && !cfg.retain_available {
            return protocol(
                ReasonCode::RETAIN_NOT_SUPPORTED,
                "[MQTT-3.2.2-14] retain not supported",
            );
        }
        if !p.properties.subscription_identifiers.is_empty() {
            return protocol(
                ReasonCode::PROTOCOL_ERROR,
                "[MQTT-3.3.4-6] subscription identifier in PUBLISH",
            );
        }
        let pid = p.packet_id;
        // Topic alias, quota, duplicate check and authorisation, under one borrow.
        let checked = {
            let mut st = self.st.borrow_mut();
            let Some(e) = st.sessions.get_mut(&key) else {
                return Ok(());
            };
            let topic = match e.s.in_aliases.resolve(p.topic, p.properties.topic_alias) {
                Ok(t) => t,
                // 0x94 is for alias 0 or above our maximum [MQTT-3.3.2-8] [MQTT-3.3.2-9]; an
                // empty topic with an alias never set is a Protocol Error (§3.3.2.3.4).
                Err(err @ AliasError::OutOfRange(_)) => {
                    return protocol(ReasonCode::TOPIC_ALIAS_INVALID, &err.to_string())
                }
                Err(err @ AliasError::Unknown(_)) => {
                    return protocol(ReasonCode::PROTOCOL_ERROR, &err.to_string())
                }
            };
            if topic.is_empty() {
                return protocol(
                    ReasonCode::PROTOCOL_ERROR,
                    "[MQTT-3.3.2-1] empty topic name without alias",
                );
            }
            if let Err(err) = check_max_levels(&topic, cfg.max_topic_levels) {
                return protocol(ReasonCode::TOPIC_NAME_INVALID, &err.to_string());
            }
            if topic.len() > cfg.max_topic_length {
                let why = format!("topic of {} bytes exceeds max_topic_length", topic.len());
                return protocol(ReasonCode::TOPIC_NAME_INVALID, &why);
            }
            let mut fresh = true;
            if p.qos == QoS::ExactlyOnce {
                if !e.s.qos2_in.contains(pid)
                    && flow::inbound_exceeded(e.s.qos2_in.len(), cfg.max_inflight)
                {
                    return protocol(
                        ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                        "[MQTT-3.3.4-9] receive maximum exceeded",
                    );
                }
                fresh = e.s.qos2_in.receive(pid);
            }
            // `$SYS/` is the broker's [§4.7.2]: clients may not publish there (but for a
            // bridge's state topic, as Mosquitto).
            let allowed = !Message::is_reserved_for_broker(&topic)
                && pre.unwrap_or_else(|| self.client_info_allows(conn, e, Access::Publish, &topic));
            if !allowed && p.qos == QoS::ExactlyOnce && v5 {
                // A PUBREC with an error code ends the exchange: no PUBREL follows.
                e.s.qos2_in.release(pid);
            }
            (topic, fresh, allowed)
        };
        let (topic, fresh, allowed) = checked;
        if allowed && fresh {
            let mut properties = p.properties;
            properties.topic_alias = None;
            let msg = Arc::new(Message {
                topic,
                payload: p.payload,
                qos: p.qos,
                retain: p.retain,
                properties,
                origin: Some(Origin {
                    core: self.id,
                    session: key,
                }),
                received_at: Instant::now(),
            });
            if msg.retain {
                self.retain(&msg);
            }
            self.route(&msg);
        } else if !allowed {
            debug!(key, "PUBLISH not authorised: dropped");
        }
        // Mosquitto acknowledges a denied PUBLISH normally in 3.x (there is no way to say no)
        // and with 0x87 Not authorized in v5.
        let code = if !allowed && v5 {
            ReasonCode::NOT_AUTHORIZED
        } else {
            ReasonCode::SUCCESS
        };
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => conn.send_packet(&Packet::PubAck(ack(pid, code))),
            QoS::ExactlyOnce => conn.send_packet(&Packet::PubRec(ack(pid, code))),
        }
        Ok(())
    }
}
