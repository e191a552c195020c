//! Sessions that cross the node's boundary at run time: a session's image
//! ([`RecoveredSession`], the durable store's type, shipped as `store::image` bytes) made from
//! a live session, and a session built from an image, to install on a core as recovery does
//! at start.
//!
//! Users: a takeover across nodes (the old node images the session it took, the new node
//! resumes it on a CONNECT through the ordinary claim, see `cluster/clientids.rs`), and a
//! session kept in a shared store (installed offline with [`Shard::import_offline`]).
//!
//! Message ids: an image's messages carry ids of the sender (or none); an imported session
//! gets ids of this node's store when it is imaged into it (`persist.rs`, a fresh image writes
//! every QoS 1/2 message without one), so ids of two nodes never mix in one session.
//! Listener indexes are the sender's: nodes of one cluster run the same listeners; an index
//! out of range denies per-listener ACL checks of queued deliveries, as a missing listener does.

use super::{Shard, Sink};
use crate::config::Config;
use crate::mesh::{core_of, ImportError, MeshMsg, TakeoverReq};
use crate::store::{MsgState, RecoveredSession, SessionMeta, StoredMsg};
use futures_channel::oneshot;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use uringmq_codec::{LastWill, QoS};
use uringmq_session::{will, Negotiated, OutEntry, OutState, Queued, Session, SubLimits};

/// The image of session `s`; `listener` is the index of its (last) connection's listener.
/// Every queued and in-flight message is in it, QoS 0 ones included (they move with the
/// session as between cores).
pub(crate) fn image_of(s: &Session, listener: u16) -> RecoveredSession {
    let meta = meta_of(s, listener);
    let inflight = s.inflight.iter().map(|o| StoredMsg {
        id: o.delivery.store_id,
        msg: o.msg.clone(),
        delivery: o.delivery.clone(),
        shared_group: o.shared_group.clone(),
        packet_id: Some(o.packet_id),
        state: if o.state == OutState::PubComp {
            MsgState::Released
        } else {
            MsgState::Sent
        },
    });
    let queued = s.queue.iter().map(|q| StoredMsg {
        id: q.delivery.store_id,
        msg: q.msg.clone(),
        delivery: q.delivery.clone(),
        shared_group: q.shared_group.clone(),
        packet_id: None,
        state: MsgState::Queued,
    });
    RecoveredSession {
        shard: 0,
        meta,
        subs: s.subs.iter().map(|(f, o)| (f.into(), *o)).collect(),
        messages: inflight.chain(queued).collect(),
        qos2_in: s.qos2_in().iter().collect(),
    }
}

/// The stored fields of session `s` (the store's `SessionMeta`), its pending will included.
pub(crate) fn meta_of(s: &Session, listener: u16) -> SessionMeta {
    let wall = |at: Instant| SystemTime::now() + at.saturating_duration_since(Instant::now());
    SessionMeta {
        client_id: s.client_id.clone(),
        protocol: s.protocol,
        username: s.username_shared(),
        listener,
        session_expiry: s.session_expiry(),
        expires_at: s.expires_at().map(wall),
        will: will_of(s),
        will_delay: s.will_delay(),
    }
}

/// The will `s` has: its connection's, or the one pending since its connection closed
/// (kept with the session, so that a restart or another node still publishes it when due).
fn will_of(s: &Session) -> Option<Box<LastWill>> {
    let pending = || s.pending_will().map(|p| p.will.clone());
    s.will().map(|w| Box::new(w.clone())).or_else(pending)
}

/// The offline session an image describes, as recovery builds it: its will pending (its
/// connection is gone), its expiry running, its messages in flight or queued where they were.
/// `keep_ids`: the image comes from this node's own store (recovery), so its message ids are
/// this store's; otherwise they are dropped.
pub(crate) fn session_of_image(
    rs: RecoveredSession,
    cfg: &Config,
    keep_ids: bool,
    now: Instant,
) -> Box<Session> {
    let meta = rs.meta;
    let mut n = Negotiated::in_process(meta.client_id.to_string(), cfg.max_inflight);
    n.session_expiry = meta.session_expiry;
    let (count, bytes) = (cfg.max_queued_messages, cfg.max_queued_bytes);
    let mut s = Box::new(Session::new(&n, meta.protocol, count, bytes));
    s.client_id = meta.client_id.clone();
    s.set_username(meta.username.clone());
    let wall = SystemTime::now();
    let instant_of = |t: SystemTime| now + t.duration_since(wall).unwrap_or_default();
    s.set_expires_at(
        meta.expires_at
            .filter(|_| meta.session_expiry != u32::MAX)
            .map(instant_of),
    );
    let due = meta.will_due(now);
    if let Some(w) = meta.will {
        s.set_pending_will(Some(will::PendingWill { will: w, due }));
    }
    let unlimited = SubLimits { count: 0, bytes: 0 };
    for (filter, opts) in &rs.subs {
        let _ = s.subs.insert(filter, *opts, unlimited);
    }
    for mut m in rs.messages {
        if !keep_ids {
            m.id = 0;
        }
        restore_message(&mut s, m);
    }
    s.restore_qos2_in(rs.qos2_in);
    s
}

/// Puts one message back where it was: in flight (with its packet id and state) or queued.
fn restore_message(s: &mut Session, m: StoredMsg) {
    let mut delivery = m.delivery;
    delivery.store_id = m.id;
    let state = match (m.state, delivery.qos) {
        (MsgState::Queued, _) => None,
        (MsgState::Released, _) => Some(OutState::PubComp),
        (MsgState::Sent, QoS::ExactlyOnce) => Some(OutState::PubRec),
        (MsgState::Sent, _) => Some(OutState::PubAck),
    };
    match (state, m.packet_id) {
        (Some(state), Some(packet_id)) => s.inflight.restore(OutEntry {
            packet_id,
            msg: m.msg,
            delivery,
            state,
            shared_group: m.shared_group,
        }),
        _ => {
            let _ = s.queue.push(Queued {
                msg: m.msg,
                delivery,
                shared_group: m.shared_group,
            });
        }
    }
}

impl Shard {
    /// Installs an image as an offline session of this core at run time, as recovery does
    /// at start: its client id claimed, its filters indexed (the other cores learn them
    /// through the mesh, like a SUBSCRIBE's), its will and expiry timed, imaged into this
    /// core's store. A client that connects to any core then takes it over as usual.
    /// Refused when the id has a session on this node already (it is newer).
    pub(crate) fn import_offline(
        self: &Rc<Self>,
        rs: RecoveredSession,
    ) -> Result<u64, ImportError> {
        let id = rs.meta.client_id.clone();
        let listener = rs.meta.listener;
        let key = self.new_key().ok_or(ImportError::Full)?;
        if !self.shared.registry.claim_vacant(&id, key) {
            self.forget_key(key);
            return Err(ImportError::Claimed(id));
        }
        let s = session_of_image(rs, self.config(), false, Instant::now());
        let due = [s.pending_will().map(|p| p.due), s.expires_at()];
        self.install_session(key, s, Sink::Offline(listener));
        let mut st = self.st.borrow_mut();
        for at in due.into_iter().flatten() {
            st.sessions.schedule(at, key);
        }
        Ok(key)
    }

    /// Takes client `id`'s session away from this node for a successor elsewhere (a CONNECT
    /// on another node, an export). The successor claims the id here with a key of its own
    /// ([`crate::mesh::LEAVING`] set), as a CONNECT on this node would, so it is ordered with this node's
    /// CONNECTs of the id: one that came before has its install first; one that comes after
    /// finds the session gone. The old connection is drained and closed as for any takeover
    /// (v5: DISCONNECT 0x8E), its will published only if `clean_start` ends the session.
    /// Answers with the session's image (none: no session, or it ended). Its listener is not
    /// in the image (another node's indexes differ): until its client connects there, an
    /// ACL per listener denies its queued deliveries (fail closed).
    pub(crate) fn take_away(
        self: &Rc<Self>,
        id: &Arc<str>,
        clean_start: bool,
    ) -> oneshot::Receiver<Option<RecoveredSession>> {
        let (tx, rx) = oneshot::channel();
        let key = self.st.borrow_mut().sessions.leaving_key(self.id);
        let Some(previous) = self.shared.registry.claim(id, key) else {
            self.shared.registry.release(id, key);
            let _ = tx.send(None);
            return rx;
        };
        let (reply, taken) = oneshot::channel();
        let req = TakeoverReq {
            key: previous,
            clean_start,
            successor: key,
            reply,
        };
        if core_of(previous) == self.id {
            self.handle_takeover(req);
        } else {
            self.send(usize::from(core_of(previous)), MeshMsg::Takeover(req));
            self.flush_mesh();
        }
        let (core, id) = (self.clone(), id.clone());
        monoio::spawn(async move {
            let s = taken.await.ok().flatten();
            // Nothing of it stays here; a CONNECT of the id that claimed after this key
            // found the session gone.
            core.shared.registry.release(&id, key);
            let image = s.map(|s| image_of(&s, crate::security::NO_LISTENER_INDEX));
            let _ = tx.send(image);
        });
        rx
    }
}
