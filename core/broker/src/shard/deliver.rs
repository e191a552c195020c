//! Delivery to one session: ACL check, in-flight window, session queue, outbound byte limit,
//! and the writes into its connection's out queue.

use crate::api;
use crate::conn::Conn;
use crate::conn::{session_info, write_packet};
use crate::mesh::ApiSink;
use crate::routing::{write_publish, Outgoing, Written};
use crate::security::NO_LISTENER;
use crate::shard::{add, Entry, Shard, Sink, State};
use std::sync::Arc;
use std::time::Instant;
use uringmq_auth::{Access, Authorizer};
use uringmq_codec::{Ack, Packet, PublishHead, QoS};
use uringmq_session::{Delivery, Message, OutState, Queued};

/// One message for one session ([`Shard::deliver_to`]).
pub(crate) struct ToDeliver<'a> {
    pub(crate) msg: &'a Arc<Message>,
    pub(crate) delivery: Delivery,
    /// The shared group it was picked for, if any (for redelivery to another member).
    pub(crate) group: Option<Arc<str>>,
    pub(crate) now: Instant,
    /// Use the core's encode-once head cache (only while fanning out the message it holds).
    pub(crate) cache_heads: bool,
}

impl ToDeliver<'_> {
    fn outgoing(&self, pid: u16, dup: bool) -> Outgoing<'_> {
        Outgoing {
            msg: self.msg,
            delivery: &self.delivery,
            pid,
            dup,
            now: self.now,
        }
    }

    fn queued(self) -> Queued {
        Queued {
            msg: self.msg.clone(),
            delivery: self.delivery,
            shared_group: self.group,
        }
    }
}

impl Shard {
    fn count_written(&self, w: Written, msg: &Message, now: Instant) {
        match w {
            Written::Sent => {
                add(&self.stats().messages_out, 1);
                add(&self.stats().publish_bytes_out, msg.payload.len() as u64);
                crate::shard::sample_delivery(self.stats(), msg.received_at, now);
            }
            Written::Expired => add(&self.stats().expired, 1),
            Written::TooLarge => {}
        }
    }

    /// Delivers one message to session `key`: written now, queued, or dropped (counted).
    pub(crate) fn deliver_to(&self, st: &mut State, key: u64, item: ToDeliver<'_>) {
        if !st.sessions.contains(key) {
            // A session that moved to another key (and maybe core) forwards.
            self.forward_from_stub(st, key, item);
            return;
        }
        let State {
            sessions,
            routes,
            conns,
            ..
        } = st;
        let Some(e) = sessions.get_mut(key) else {
            return;
        };
        if let Sink::Parked(_) = e.sink {
            // A delivery wakes a compact parked connection: its `Conn` again, then as usual.
            self.revive_entry(e, key, conns);
        }
        // ACL `read` on every delivery to a client, retained messages and wills included.
        if !matches!(e.sink, Sink::Api(_) | Sink::Bridge(_))
            && !self.may_receive(e, &item.msg.topic)
        {
            return;
        }
        match &e.sink {
            Sink::Api(sink) => self.deliver_in_process(sink, &item),
            Sink::Bridge(link) => link.offer(item.msg, &item.delivery, item.now),
            Sink::Conn(conn) => {
                let conn = conn.clone();
                let heads = if item.cache_heads {
                    Some(routes.heads())
                } else {
                    None
                };
                self.deliver_to_conn(&conn, e, item, heads);
            }
            // Only if the connection could not be revived (the core is being dropped).
            Sink::Offline(_) | Sink::Parked(_) => {
                let queued =
                    item.delivery.qos != QoS::AtMostOnce || self.config().queue_qos0_messages;
                if queued && enqueue(&mut e.s, self.stats(), item.queued()) {
                    self.persist_queued(e);
                }
            }
        }
    }

    /// Hands a message to an in-process subscription.
    fn deliver_in_process(&self, sink: &ApiSink, item: &ToDeliver<'_>) {
        let (msg, d, stats) = (item.msg, &item.delivery, self.stats());
        // The embedder observes this at once: flush first (see `Shard::send`).
        self.flush_mesh();
        if msg.remaining_expiry(item.now).is_err() {
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

    /// Writes a message to a connected session, or queues it behind the in-flight window or a
    /// full outbound buffer (QoS 0 is dropped there instead).
    fn deliver_to_conn(
        &self,
        conn: &Conn,
        e: &mut Entry,
        item: ToDeliver<'_>,
        heads: Option<&mut Vec<(u8, PublishHead)>>,
    ) {
        let (msg, now, stats) = (item.msg, item.now, self.stats());
        let mut out = conn.out.borrow_mut();
        let over = out.len() >= self.config().max_outbound_bytes;
        if item.delivery.qos == QoS::AtMostOnce {
            if over {
                // A reader that does not keep up loses QoS 0, never slows others.
                add(&stats.dropped_qos0, 1);
                conn.set_blocked();
                return;
            }
            let w = write_publish(&mut out, &mut e.s, &item.outgoing(0, false), heads);
            self.count_written(w, msg, now);
        } else if !over && e.s.queue.is_empty() && e.s.inflight.has_room() {
            let ToDeliver {
                delivery, group, ..
            } = item;
            let pid = e.s.inflight.push(msg.clone(), delivery.clone(), group);
            let o = Outgoing {
                msg,
                delivery: &delivery,
                pid,
                dup: false,
                now,
            };
            let w = write_publish(&mut out, &mut e.s, &o, heads);
            if w != Written::Sent {
                e.s.inflight.remove(pid);
            } else {
                self.persist_sent(e);
            }
            self.count_written(w, msg, now);
        } else {
            if over {
                conn.set_blocked();
            }
            if enqueue(&mut e.s, stats, item.queued()) {
                self.persist_queued(e);
            }
        }
        drop(out);
        conn.wake();
    }

    /// Moves queued messages into the window / write buffer as far as limits allow.
    pub(crate) fn pump_in(&self, st: &mut State, key: u64, now: Instant) {
        let Some(e) = st.sessions.get_mut(key) else {
            return;
        };
        let Sink::Conn(conn) = &e.sink else { return };
        let conn = conn.clone();
        let max_out = self.config().max_outbound_bytes;
        let mut out = conn.out.borrow_mut();
        loop {
            if out.len() >= max_out {
                conn.set_blocked();
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
                let o = Outgoing {
                    msg: &item.msg,
                    delivery: &item.delivery,
                    pid: 0,
                    dup: false,
                    now,
                };
                write_publish(&mut out, &mut e.s, &o, None)
            } else {
                let pid =
                    e.s.inflight
                        .push(item.msg.clone(), item.delivery.clone(), item.shared_group);
                let o = Outgoing {
                    msg: &item.msg,
                    delivery: &item.delivery,
                    pid,
                    dup: false,
                    now,
                };
                let w = write_publish(&mut out, &mut e.s, &o, None);
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
        if let Some(e) = st.sessions.get_mut(key) {
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
                            e.s.client_max_packet(),
                        );
                        continue;
                    }
                    let again = Outgoing {
                        msg: &o.msg,
                        delivery: &o.delivery,
                        pid: o.packet_id,
                        dup: true,
                        now,
                    };
                    let w = write_publish(&mut out, &mut e.s, &again, None);
                    if w != Written::Sent {
                        e.s.inflight.remove(o.packet_id);
                        self.persist_done(&e.s.client_id, o.delivery.store_id);
                    }
                }
            }
        }
        self.pump_in(st, key, now);
    }

    /// Whether session `e` may receive a message on `topic` (ACL `read` of the listener its
    /// client is connected to), checked for every delivery, retained messages and wills
    /// included. Always true without an authoriser.
    pub(crate) fn may_receive(&self, e: &Entry, topic: &str) -> bool {
        match &self.shared.authorizer {
            None => true,
            Some(a) => {
                let listener = match &e.sink {
                    Sink::Conn(conn) => &*conn.listener,
                    Sink::Parked(p) => &**p.listener(),
                    // Offline: the listener it last connected through, as Mosquitto keeps a
                    // disconnected client's listener for its per-listener settings.
                    Sink::Offline(l) => self.shared.security.listener_name(*l),
                    Sink::Api(_) | Sink::Bridge(_) => NO_LISTENER,
                };
                a.authorize(
                    &session_info(&e.s, e.token_acl.as_deref(), listener),
                    Access::Receive,
                    topic,
                )
            }
        }
    }
}

/// Queues a message in its session (offline, or held back by flow control or a full outbound
/// buffer); a full queue drops it, and the drop is counted.
/// Returns whether it was queued.
fn enqueue(
    session: &mut uringmq_session::Session,
    stats: &crate::shard::CoreStats,
    q: Queued,
) -> bool {
    if session.queue.push(q).is_err() {
        add(&stats.dropped_queue_full, session.queue.take_dropped());
        return false;
    }
    true
}
