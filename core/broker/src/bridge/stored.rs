//! A bridge's queue in the durable store (`persistence_dir`): the bridge's local session is
//! written like a client's persistent session, in its core's log, and recovered to the core
//! that starts the bridge, so QoS 1/2 messages bound for a remote that is down survive a
//! restart of this broker (and, under `persistence_sync = "always"`, a crash: nothing a local
//! publisher got a PUBACK for is lost).
//!
//! The session is an ordinary store session under [`store_key`] (`install_session` writes its
//! image and subscriptions, as for a client). Its messages are not in the `Session` but in
//! the bridge's [`Link`] and in flight to the remote (`remote::Outbox`), so this file writes
//! them, under the same record types a client's messages use:
//! - `Queued` when a QoS 1/2 message enters the link's queue, inside the delivery that
//!   brought it: under `always` the publisher's acknowledgement waits for that record as it
//!   waits for any subscriber's (the mesh's `DurableReq`, or this core's store position);
//! - `MsgState { Sent, packet id }` when it goes in flight to the remote, `Released` at
//!   PUBREC; `MsgDone` at PUBACK / PUBCOMP, or when it is dropped on the way out;
//! - `Qos2Received` / `Qos2Released` for inbound QoS 2 ids (received once the message's
//!   deliveries are durable, as for a client), so a PUBLISH the remote resends with DUP after
//!   this broker restarted is not published twice;
//! - under `always` the bridge's writer, like a connection's, writes nothing before the
//!   records it depends on are durable (`Persist::barrier`): a packet id the remote holds
//!   after a crash is one the store knows, so a QoS 2 message is resent with DUP (or PUBREL)
//!   under its id, never as a new message; and an inbound message is acknowledged to the
//!   remote only once its local deliveries are durable.
//!
//! At start `Boot` sets recovered bridge sessions aside (no home core, no registry claim, no
//! interest); the core that starts the bridge takes its session ([`restore`]): queued
//! messages go back in the link's queue, in-flight ones and inbound QoS 2 ids in the outbox,
//! and they are written again behind the new image. A bridge removed at run time ends its
//! session (`SessionGone`); one that is not started again keeps its stored queue.

use super::link::{Link, Outgoing};
use super::remote::{InFlight, Outbox};
use crate::config::BridgeConfig;
use crate::shard::Shard;
use crate::store::{MsgState, Record, RecoveredSession, ShardStore, StoredMsg};
use std::rc::Rc;
use std::sync::Arc;
use uringmq_codec::QoS;
use uringmq_session::{Delivery, Message};

/// The client id of bridge `name`'s session in the store. U+0000 is in no client's id (MQTT
/// strings exclude it [MQTT-1.5.4-2]), so no client's session can take the key.
pub(crate) fn store_key(name: &str) -> String {
    format!("\u{0}bridge/{name}")
}

/// Whether a stored session's client id is a bridge's.
pub(crate) fn is_store_key(client_id: &str) -> bool {
    client_id.starts_with("\u{0}bridge/")
}

/// The bridge's end of its core's store.
pub(crate) struct StoredQueue {
    store: Rc<ShardStore>,
    key: Arc<str>,
}

impl StoredQueue {
    pub(crate) fn new(store: Rc<ShardStore>, key: Arc<str>) -> Self {
        StoredQueue { store, key }
    }

    /// Writes a QoS 1/2 message entering the queue; returns its id.
    pub(crate) fn queued(&self, msg: &Arc<Message>, qos: QoS, retain: bool) -> u64 {
        let m = StoredMsg {
            id: 0,
            msg: msg.clone(),
            delivery: Delivery {
                qos,
                retain,
                ..Delivery::default()
            },
            shared_group: None,
            packet_id: None,
            state: MsgState::Queued,
        };
        let client_id = self.key.clone();
        self.store.push(Record::Queued { client_id, msg: m }).stamp
    }

    /// Message `id` went in flight with `pid` (`Sent`), or got PUBREC (`Released`).
    pub(crate) fn state(&self, id: u64, pid: u16, state: MsgState) {
        if id != 0 {
            self.store.push(Record::MsgState {
                client_id: self.key.clone(),
                id,
                packet_id: Some(pid),
                state,
            });
        }
    }

    /// An inbound QoS 2 PUBLISH `pid` was published here (PUBREC follows): written once its
    /// deliveries are durable wherever they went, as a client's (`Persist::after_routed`).
    pub(crate) fn qos2_received(&self, shard: &Shard, pid: u16) {
        if let Some(p) = &shard.persist {
            let client_id = self.key.clone();
            p.after_routed(
                shard,
                Record::Qos2Received {
                    client_id,
                    packet_id: pid,
                },
            );
        }
    }

    /// Inbound QoS 2 id `pid` was released (PUBCOMP follows), or the remote forgot it.
    pub(crate) fn qos2_released(&self, pid: u16) {
        self.store.push(Record::Qos2Released {
            client_id: self.key.clone(),
            packet_id: pid,
        });
    }

    /// Message `id` is done: acknowledged by the remote, or dropped.
    pub(crate) fn done(&self, id: u64) {
        if id != 0 {
            self.store.push(Record::MsgDone {
                client_id: self.key.clone(),
                id,
            });
        }
    }
}

/// Puts a recovered bridge session's messages back (queued ones in `link`, in-flight ones in
/// the returned outbox) and writes them behind the session's new image. Messages whose topic
/// no `out` entry carries any more are dropped (the image leaves them out).
pub(crate) fn restore(link: &Link, cfg: &BridgeConfig, rs: Option<RecoveredSession>) -> Outbox {
    let mut outbox = Outbox::default();
    let (Some(rs), Some(stored)) = (rs, &link.stored) else {
        return outbox;
    };
    let mut queued = Vec::new();
    for mut m in rs.messages {
        if cfg.remote_topic(&m.msg.topic).is_none() || m.delivery.qos == QoS::AtMostOnce {
            continue;
        }
        let out = Outgoing {
            msg: m.msg.clone(),
            qos: m.delivery.qos,
            retain: m.delivery.retain,
            id: m.id,
        };
        match (m.state, m.packet_id) {
            (MsgState::Sent | MsgState::Released, Some(pid))
                if !outbox.inflight.contains_key(&pid) =>
            {
                let released = m.state == MsgState::Released;
                outbox.inflight.insert(pid, InFlight { out, released });
            }
            _ => {
                (m.state, m.packet_id) = (MsgState::Queued, None);
                queued.push(out);
            }
        }
        let client_id = stored.key.clone();
        stored.store.push(Record::Queued { client_id, msg: m });
    }
    for pid in rs.qos2_in {
        outbox.qos2_in.insert(pid);
        let client_id = stored.key.clone();
        stored.store.push(Record::Qos2Received {
            client_id,
            packet_id: pid,
        });
    }
    link.requeue_front(queued);
    link.inflight.set(outbox.inflight.len());
    link.update_gauge();
    outbox
}
