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
use crate::mesh::ImportError;
use crate::store::{MsgState, RecoveredSession, StoredMsg};
use std::rc::Rc;
use std::time::{Instant, SystemTime};
use uringmq_codec::QoS;
use uringmq_session::{will, Negotiated, OutEntry, OutState, Queued, Session, SubLimits};

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
    let mut s = Box::new(Session::new(&n, meta.protocol, count, bytes, 0));
    s.client_id = meta.client_id.clone();
    s.username = meta.username.clone();
    let wall = SystemTime::now();
    let instant_of = |t: SystemTime| now + t.duration_since(wall).unwrap_or_default();
    s.expires_at = meta
        .expires_at
        .filter(|_| meta.session_expiry != u32::MAX)
        .map(instant_of);
    if let Some(w) = meta.will {
        let due = will::due(now, meta.will_delay, meta.session_expiry);
        s.pending_will = Some(Box::new(will::PendingWill { will: w, due }));
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
        let key = self.new_key();
        if !self.shared.registry.claim_vacant(&id, key) {
            return Err(ImportError::Claimed(id));
        }
        let s = session_of_image(rs, self.config(), false, Instant::now());
        let due = [s.pending_will.as_ref().map(|p| p.due), s.expires_at];
        self.install_session(key, s, Sink::Offline(listener));
        let mut st = self.st.borrow_mut();
        for at in due.into_iter().flatten() {
            st.sessions.schedule(at, key);
        }
        Ok(key)
    }
}
