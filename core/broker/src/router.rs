//! The message path on one core: inbound packets of a connected client (PUBLISH and its acks,
//! SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT) and outbound delivery to sessions (in-flight
//! window, session queue, outbound byte limit, encode-once heads).

use crate::api;
use crate::connection::Conn;
use crate::core::{add, CloseReason, Core, Entry, Sink, State};
use crate::out_queue::{OutQueue, SHARE_THRESHOLD};
use crate::shared_sub::group_filter;
use bytes::BytesMut;
use std::num::NonZeroU32;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;
use tracing::debug;
use uringmq_auth::Access;
use uringmq_codec::{
    encode, encode_within, encoded_len, Ack, ByteStr, Disconnect, Packet, Protocol, Publish,
    PublishHead, PublishProperties, QoS, ReasonCode, SubAck, Subscribe, UnsubAck, Unsubscribe,
};
use uringmq_session::delivery::fits;
use uringmq_session::{
    flow, AliasError, Delivery, Message, Origin, OutState, Queued, Session, SubLimits, SubOptions,
};
use uringmq_topic::{check_max_levels, validate_topic_filter, SharedFilter};

/// Outcome of writing one PUBLISH to a connection buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Written {
    Sent,
    /// Larger than the client's Maximum Packet Size: discarded [MQTT-3.1.2-25].
    TooLarge,
    /// Message expiry passed [MQTT-3.3.2-5].
    Expired,
}

/// Cache key of a PublishHead: (v5, QoS, RETAIN). 3.1 and 3.1.1 PUBLISH are laid out alike.
fn head_key(v5: bool, qos: QoS, retain: bool) -> u8 {
    (u8::from(v5) << 3) | ((qos as u8) << 1) | u8::from(retain)
}

/// Encodes one PUBLISH for `s`'s connection into `out`.
///
/// With `heads`, subscribers without per-subscriber properties (subscription ids, topic
/// aliases) share one head per (version, QoS, RETAIN): encoded once, patched with the packet
/// id. Others are encoded individually. Either way a large payload is queued as the shared
/// `Bytes` of the decoded PUBLISH, not copied (see `out_queue.rs`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_publish(
    out: &mut OutQueue,
    s: &mut Session,
    msg: &Message,
    d: &Delivery,
    pid: u16,
    dup: bool,
    now: Instant,
    heads: Option<&mut Vec<(u8, PublishHead)>>,
) -> Written {
    let Ok(expiry) = msg.remaining_expiry(now) else {
        return Written::Expired;
    };
    let proto = s.protocol;
    let v5 = proto.is_v5();
    let build = |pid: u16, with_ids: bool| Publish {
        dup: false,
        qos: d.qos,
        retain: d.retain,
        topic: msg.topic.clone(),
        packet_id: if d.qos == QoS::AtMostOnce { 0 } else { pid },
        properties: if v5 {
            let mut p = msg.properties.clone();
            p.topic_alias = None;
            p.message_expiry_interval = expiry;
            if with_ids {
                p.subscription_identifiers = d.sub_ids.clone();
            }
            p
        } else {
            PublishProperties::default()
        },
        payload: msg.payload.clone(),
    };
    let aliases = v5 && s.out_aliases.enabled();
    if let Some(heads) = heads {
        if !aliases && (!v5 || d.sub_ids.is_empty()) {
            let key = head_key(v5, d.qos, d.retain);
            let at = match heads.iter().position(|(k, _)| *k == key) {
                Some(at) => at,
                None => match PublishHead::encode(&build(1, false), proto) {
                    Ok(h) => {
                        heads.push((key, h));
                        heads.len() - 1
                    }
                    Err(_) => return Written::TooLarge,
                },
            };
            let head = &heads[at].1;
            if !fits(head.packet_len(), s.client_max_packet) {
                return Written::TooLarge;
            }
            head.write(pid, dup, out.buf());
            out.push_payload(&msg.payload);
            return Written::Sent;
        }
    }
    let mut p = build(pid, true);
    p.dup = dup && d.qos != QoS::AtMostOnce;
    let mut packet = Packet::Publish(p);
    let Ok(len) = encoded_len(&packet, proto) else {
        return Written::TooLarge;
    };
    if !fits(len, s.client_max_packet) {
        return Written::TooLarge;
    }
    // An alias adds at most 3 bytes; only use one if that still fits.
    if aliases && fits(len + 3, s.client_max_packet) {
        if let Packet::Publish(p) = &mut packet {
            if let Some((alias, known)) = s.out_aliases.alias_for(&p.topic) {
                p.properties.topic_alias = Some(alias);
                if known {
                    p.topic = ByteStr::new();
                }
            }
        }
    }
    let Packet::Publish(p) = &packet else {
        return Written::TooLarge;
    };
    if p.payload.len() < SHARE_THRESHOLD {
        return match encode(&packet, proto, out.buf()) {
            Ok(()) => Written::Sent,
            Err(_) => Written::TooLarge,
        };
    }
    // This subscriber's own head, then the shared payload.
    match PublishHead::encode(p, proto) {
        Ok(head) => {
            head.write(p.packet_id, p.dup, out.buf());
            out.push_payload(&p.payload);
            Written::Sent
        }
        Err(_) => Written::TooLarge,
    }
}

/// Appends an acknowledgement-type packet, without its Reason String and User Properties if
/// only that keeps it within the client's Maximum Packet Size `max` (else it is discarded).
pub(crate) fn write_packet(
    out: &mut BytesMut,
    packet: &Packet,
    proto: Protocol,
    max: Option<NonZeroU32>,
) {
    if let Err(e) = encode_within(packet, proto, max, out) {
        debug!("cannot send {}: {e}", packet.packet_type());
        return;
    }
    crate::ops::count_control_packet();
}

fn ack(pid: u16, code: ReasonCode) -> Ack {
    let mut a = Ack::new(pid);
    a.reason_code = code;
    a
}

impl Core {
    fn count_written(&self, w: Written, msg: &Message, now: Instant) {
        match w {
            Written::Sent => {
                add(&self.stats().messages_out, 1);
                add(&self.stats().publish_bytes_out, msg.payload.len() as u64);
                crate::ops::sample_delivery(self.stats(), msg.received_at, now);
            }
            Written::Expired => add(&self.stats().expired, 1),
            Written::TooLarge => {}
        }
    }

    /// Delivers one message to session `key`: written now, queued, or dropped (counted).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn deliver_to(
        &self,
        st: &mut State,
        key: u64,
        msg: &Arc<Message>,
        d: Delivery,
        group: Option<Arc<str>>,
        now: Instant,
        cache: bool,
    ) {
        if !st.sessions.contains_key(&key) {
            // A session that moved to another key (and maybe core) forwards.
            self.forward_from_stub(st, key, msg, d, group, now);
            return;
        }
        let State {
            sessions, heads, ..
        } = st;
        let Some(e) = sessions.get_mut(&key) else {
            return;
        };
        // ACL `read` on every delivery to a client, retained messages and wills included.
        if !matches!(e.sink, Sink::Api(_)) && !self.may_receive(e, &msg.topic) {
            return;
        }
        let stats = self.stats();
        match &e.sink {
            Sink::Api(sink) => {
                // The embedder observes this at once: flush first (see `Core::send`).
                self.flush_mesh();
                if msg.remaining_expiry(now).is_err() {
                    add(&stats.expired, 1);
                    return;
                }
                let mut properties = msg.properties.clone();
                properties.subscription_identifiers = d.sub_ids.clone();
                sink.push(api::Delivery {
                    topic: msg.topic.to_string(),
                    payload: msg.payload.clone(),
                    qos: d.qos,
                    retain: d.retain,
                    properties,
                });
                add(&stats.messages_out, 1);
                add(&stats.publish_bytes_out, msg.payload.len() as u64);
            }
            Sink::Conn(conn) => {
                let conn = conn.clone();
                let mut out = conn.out.borrow_mut();
                let over = out.len() >= self.config().max_outbound_bytes;
                let heads = if cache { Some(heads) } else { None };
                if d.qos == QoS::AtMostOnce {
                    if over {
                        // A reader that does not keep up loses QoS 0, never slows others.
                        add(&stats.dropped_qos0, 1);
                        conn.blocked.set(true);
                        return;
                    }
                    let w = write_publish(&mut out, &mut e.s, msg, &d, 0, false, now, heads);
                    self.count_written(w, msg, now);
                } else if !over && e.s.queue.is_empty() && e.s.inflight.has_room() {
                    let pid = e.s.inflight.push(msg.clone(), d.clone(), group);
                    let w = write_publish(&mut out, &mut e.s, msg, &d, pid, false, now, heads);
                    if w != Written::Sent {
                        e.s.inflight.remove(pid);
                    } else {
                        self.persist_sent(e);
                    }
                    self.count_written(w, msg, now);
                } else {
                    if over {
                        conn.blocked.set(true);
                    }
                    let q = Queued {
                        msg: msg.clone(),
                        delivery: d,
                        shared_group: group,
                    };
                    if enqueue(&mut e.s, stats, q) {
                        self.persist_queued(e);
                    }
                }
                drop(out);
                conn.wake();
            }
            Sink::Offline(_) => {
                if d.qos != QoS::AtMostOnce || self.config().queue_qos0_messages {
                    let q = Queued {
                        msg: msg.clone(),
                        delivery: d,
                        shared_group: group,
                    };
                    if enqueue(&mut e.s, stats, q) {
                        self.persist_queued(e);
                    }
                }
            }
        }
    }

    /// Moves queued messages into the window / write buffer as far as limits allow.
    pub(crate) fn pump_in(&self, st: &mut State, key: u64, now: Instant) {
        let Some(e) = st.sessions.get_mut(&key) else {
            return;
        };
        let Sink::Conn(conn) = &e.sink else { return };
        let conn = conn.clone();
        let max_out = self.config().max_outbound_bytes;
        let mut out = conn.out.borrow_mut();
        loop {
            if out.len() >= max_out {
                conn.blocked.set(true);
                break;
            }
            match e.s.queue.front_qos() {
                None => break,
                Some(q) if q != QoS::AtMostOnce && !e.s.inflight.has_room() => break,
                _ => {}
            }
            let Some(item) = e.s.queue.pop(now) else {
                break;
            };
            let w = if item.delivery.qos == QoS::AtMostOnce {
                write_publish(
                    &mut out,
                    &mut e.s,
                    &item.msg,
                    &item.delivery,
                    0,
                    false,
                    now,
                    None,
                )
            } else {
                let pid =
                    e.s.inflight
                        .push(item.msg.clone(), item.delivery.clone(), item.shared_group);
                let w = write_publish(
                    &mut out,
                    &mut e.s,
                    &item.msg,
                    &item.delivery,
                    pid,
                    false,
                    now,
                    None,
                );
                if w != Written::Sent {
                    if let Some(o) = e.s.inflight.remove(pid) {
                        self.persist_done(&e.s.client_id, o.delivery.store_id);
                    }
                } else {
                    self.persist_sent(e);
                }
                w
            };
            self.count_written(w, &item.msg, now);
        }
        add(&self.stats().expired, e.s.queue.take_expired());
        drop(out);
        conn.wake();
    }

    /// After CONNACK of a resumed session: resend what is in flight, DUP set [MQTT-4.4.0-1],
    /// PUBREL for released QoS 2, then the queue.
    pub(crate) fn resume_delivery(&self, key: u64) {
        let now = Instant::now();
        let mut guard = self.st.borrow_mut();
        let st = &mut *guard;
        if let Some(e) = st.sessions.get_mut(&key) {
            if let Sink::Conn(conn) = &e.sink {
                let conn = conn.clone();
                let mut out = conn.out.borrow_mut();
                let entries: Vec<_> = e.s.inflight.iter().cloned().collect();
                for o in entries {
                    if o.state == OutState::PubComp {
                        write_packet(
                            out.buf(),
                            &Packet::PubRel(Ack::new(o.packet_id)),
                            e.s.protocol,
                            e.s.client_max_packet,
                        );
                        continue;
                    }
                    let w = write_publish(
                        &mut out,
                        &mut e.s,
                        &o.msg,
                        &o.delivery,
                        o.packet_id,
                        true,
                        now,
                        None,
                    );
                    if w != Written::Sent {
                        e.s.inflight.remove(o.packet_id);
                        self.persist_done(&e.s.client_id, o.delivery.store_id);
                    }
                }
            }
        }
        self.pump_in(st, key, now);
    }

    fn client_info_allows(&self, conn: &Conn, e: &Entry, access: Access, topic: &str) -> bool {
        match &self.shared.authorizer {
            None => true,
            // Blocking authorisers are asked on a hook thread before the packet gets here.
            Some(a) if a.is_blocking() => true,
            Some(a) => {
                let mut info = crate::auth::session_info(e, &conn.listener);
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

    fn with_session<T: Default>(&self, key: u64, f: impl FnOnce(&mut Session) -> T) -> T {
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
            // `$SYS/` is the broker's [§4.7.2]: clients may not publish there.
            let allowed = !Message::is_sys_topic(&topic)
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

    fn on_subscribe(
        self: &Rc<Self>,
        conn: &Rc<Conn>,
        key: u64,
        sub: Subscribe,
        pre: Option<Vec<bool>>,
    ) -> Result<(), CloseReason> {
        let proto = conn.protocol.get();
        let v5 = proto.is_v5();
        let cfg = self.config();
        let fail = |code: ReasonCode| {
            if v5 {
                code
            } else {
                ReasonCode::V3_SUBACK_FAILURE
            }
        };
        let mut codes = Vec::with_capacity(sub.filters.len());
        let mut retained = Vec::new();
        for (i, (filter, o)) in sub.filters.iter().enumerate() {
            let f = filter.as_str();
            let shared = match SharedFilter::parse(f) {
                Ok(x) => x.is_some(),
                Err(_) => {
                    codes.push(fail(ReasonCode::TOPIC_FILTER_INVALID));
                    continue;
                }
            };
            let plain = if shared { group_filter(f) } else { f };
            // A filter over `max_topic_length` is well formed but not allowed here: 0x8F.
            if validate_topic_filter(plain).is_err()
                || check_max_levels(plain, cfg.max_topic_levels).is_err()
                || f.len() > cfg.max_topic_length
            {
                codes.push(fail(ReasonCode::TOPIC_FILTER_INVALID));
                continue;
            }
            let allowed = match pre.as_ref().map(|v| v.get(i).copied().unwrap_or(false)) {
                Some(a) => a,
                None => {
                    let st = self.st.borrow();
                    st.sessions
                        .get(&key)
                        .is_some_and(|e| self.client_info_allows(conn, e, Access::Subscribe, f))
                }
            };
            if !allowed {
                codes.push(fail(ReasonCode::NOT_AUTHORIZED));
                continue;
            }
            let granted = QoS::from_u8((o.qos as u8).min(cfg.max_qos)).unwrap_or_default();
            let opts = SubOptions {
                qos: granted,
                no_local: o.no_local,
                retain_as_published: o.retain_as_published,
                retain_handling: o.retain_handling,
                id: sub.properties.subscription_identifier,
            };
            let limits = SubLimits {
                count: cfg.max_subscriptions_per_client,
                bytes: cfg.max_subscription_bytes_per_client,
            };
            let inserted = {
                let mut st = self.st.borrow_mut();
                match st.sessions.get_mut(&key) {
                    Some(e) => e.s.subs.insert(f, opts, limits),
                    None => return Ok(()),
                }
            };
            match inserted {
                Err(_) => codes.push(fail(ReasonCode::QUOTA_EXCEEDED)),
                Ok(new) => {
                    if new {
                        add(&self.stats().subscriptions, 1);
                    }
                    self.index_subscription(f, key, opts);
                    codes.push(ReasonCode(granted as u8));
                    use uringmq_codec::RetainHandling::*;
                    // Retained messages are not sent to shared subscriptions [MQTT-3.8.4-?,
                    // §4.8.2]; retain handling 1 only for a new subscription [MQTT-3.3.1-10].
                    let send = match o.retain_handling {
                        SendAtSubscribe => true,
                        SendIfNew => new,
                        DoNotSend => false,
                    };
                    if !shared && send {
                        retained.push((f.to_owned(), opts));
                    }
                }
            }
        }
        let suback = SubAck {
            packet_id: sub.packet_id,
            properties: Default::default(),
            reason_codes: codes,
        };
        conn.send_packet(&Packet::SubAck(suback));
        for (f, opts) in retained {
            self.send_retained(key, &f, &opts);
        }
        Ok(())
    }

    fn on_unsubscribe(
        self: &Rc<Self>,
        conn: &Rc<Conn>,
        key: u64,
        u: Unsubscribe,
    ) -> Result<(), CloseReason> {
        let mut codes = Vec::with_capacity(u.filters.len());
        for f in &u.filters {
            let removed = self.with_session(key, |s| s.subs.remove(f).is_some());
            if removed {
                self.unindex_subscription(f, key);
                self.stats()
                    .subscriptions
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                codes.push(ReasonCode::SUCCESS);
            } else {
                codes.push(ReasonCode::NO_SUBSCRIPTION_EXISTED);
            }
        }
        let unsuback = UnsubAck {
            packet_id: u.packet_id,
            properties: Default::default(),
            reason_codes: codes,
        };
        conn.send_packet(&Packet::UnsubAck(unsuback));
        Ok(())
    }
}

/// Queues a message in its session (offline, or held back by flow control or a full outbound
/// buffer); a full queue drops it, and the drop is counted.
/// Returns whether it was queued.
fn enqueue(
    session: &mut uringmq_session::Session,
    stats: &crate::core::CoreStats,
    q: Queued,
) -> bool {
    if session.queue.push(q).is_err() {
        add(&stats.dropped_queue_full, session.queue.take_dropped());
        return false;
    }
    true
}
