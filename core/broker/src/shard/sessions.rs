//! Sessions of one core: the `Sessions` part of its state (the sessions by key, their keys and
//! their timers), taking one over, installing, ending, a connection closing, will delays and
//! session expiry.

use super::api_cmds::summary;
use super::slab::Slab;
use super::stats::add;
use super::{Entry, Shard, Sink};
use crate::conn::will_auth::WillAuthor;
use crate::conn::{CloseReason, Conn};
use crate::mesh::cluster::ToCluster;
use bytes::BytesMut;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};
use uringmq_codec::LastWill;
use uringmq_codec::QoS;
use uringmq_session::{will, Message, Origin, Session, SubOptions};

/// This core's sessions by key (in a slab that the key indexes, `slab.rs`, whose module doc
/// says how keys are made and why a stale key finds nothing), and the timers of its offline
/// sessions (will delays and expiries).
///
/// Timers are therefore not removed with their session but checked when they are due.
pub(crate) struct Sessions {
    slab: Slab,
    /// The last key made for a successor outside this node ([`Sessions::leaving_key`]).
    leaving: u64,
    /// (due, session key): will delays and session expiries (validated when popped).
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
}

impl Sessions {
    pub(super) fn new(core: u16) -> Self {
        Sessions {
            slab: Slab::new(core),
            leaving: 0,
            timers: BinaryHeap::new(),
        }
    }

    #[inline]
    pub(crate) fn get(&self, key: u64) -> Option<&Entry> {
        self.slab.get(key)
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, key: u64) -> Option<&mut Entry> {
        self.slab.get_mut(key)
    }

    #[inline]
    pub(crate) fn contains(&self, key: u64) -> bool {
        self.slab.get(key).is_some()
    }

    /// Installs session `key` in the slot its key reserved ([`Sessions::new_key`]).
    pub(crate) fn insert(&mut self, key: u64, e: Entry) {
        if !self.slab.insert(key, e) {
            // Not reached: every key is installed once, by whoever made it.
            warn!(
                key,
                "session installed under a key that has no slot; dropped"
            );
        }
    }

    pub(crate) fn remove(&mut self, key: u64) -> Option<Entry> {
        self.slab.remove(key)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.slab.iter().map(|(_, e)| e)
    }

    pub(crate) fn iter_keyed(&self) -> impl Iterator<Item = (u64, &Entry)> {
        self.slab.iter()
    }

    /// Takes every session out, at the end of the core (see `run.rs`).
    pub(super) fn take_all(&mut self) -> Vec<Entry> {
        self.slab.take_all()
    }

    /// A new session key, its slot reserved for the session (`slab.rs`): unique over all cores
    /// (the core in the high 16 bits). None when this core holds the most sessions it can.
    pub(super) fn new_key(&mut self) -> Option<u64> {
        self.slab.reserve()
    }

    /// A key that claims a client id for a successor outside this node
    /// ([`crate::mesh::LEAVING`] set): never a session here, so it takes no slot; unique
    /// among this core's keys of its kind for the core's life (a 47-bit counter).
    pub(super) fn leaving_key(&mut self, core: u16) -> u64 {
        self.leaving += 1;
        (u64::from(core) << 48) | crate::mesh::LEAVING | self.leaving
    }

    /// Gives back a key made by [`Sessions::new_key`] that will have no session.
    pub(super) fn forget_key(&mut self, key: u64) {
        self.slab.forget(key);
    }

    /// The recovered sessions took the keys [`super::slab::recovered_key`] `0..n`
    /// (see `persist.rs`).
    pub(super) fn reserve_keys(&mut self, n: usize) {
        self.slab.reserve_recovered(n);
    }

    /// Session `key` has something due at `at` (a delayed will, its expiry).
    pub(super) fn schedule(&mut self, at: Instant, key: u64) {
        self.timers.push(Reverse((at, key)));
    }

    /// The key of the next timer due by `now`, taken off the heap.
    fn pop_due(&mut self, now: Instant) -> Option<u64> {
        match self.timers.peek() {
            Some(Reverse((due, _))) if *due <= now => {}
            _ => return None,
        }
        self.timers.pop().map(|Reverse((_, key))| key)
    }
}

impl Shard {
    /// Removes a session from this core for a takeover by `successor`: closes its connection,
    /// handles its will, and returns the session to move (None if unknown, or ended: by
    /// clean start, or because it was not persistent). A session moving to another core
    /// leaves a stub that forwards to `successor`; one that leaves the node
    /// ([`crate::mesh::leaves_node`]) leaves nothing: this node's store and indexes forget it.
    pub(crate) fn take_session(
        self: &Rc<Self>,
        key: u64,
        clean_start: bool,
        successor: u64,
    ) -> Option<Box<Session>> {
        let now = Instant::now();
        // A compact parked connection is closed like any other: its `Conn` first.
        self.revive(key);
        let mut e = self.st.borrow_mut().sessions.remove(key)?;
        let author = self.will_author(&e);
        if let Sink::Conn(conn) = std::mem::replace(&mut e.sink, Sink::Offline(0)) {
            // Before the answer: the successor takes the debt once it has it.
            crate::conn::limits::keep_publish_debt(self, &conn, &e.s.client_id);
            // Not drained (it was already closing, or the broker stops): its `closed()` will
            // find no session, so the disconnect hook is told here, with the reason it was
            // closing for if it had one.
            let reason = conn.kill_reason().unwrap_or(CloseReason::TakenOver);
            self.tell_disconnect(&conn, &e.s, &reason);
            conn.clear_session();
            conn.kill(CloseReason::TakenOver);
            self.stats().connections.fetch_sub(1, Ordering::Relaxed);
        }
        // The session ends here if the new connection starts clean, or if it was not kept
        // beyond its connection (v5 expiry 0, 3.x clean session: its state must not be
        // reused [MQTT-3.1.2-6], and Mosquitto answers session-present 0).
        let ends = clean_start || !e.s.is_persistent();
        // The old connection's will (or its pending delayed will) goes out only if the
        // session ends here: a will is due when its delay passes or its session ends,
        // whichever comes first [MQTT-3.1.3-9], and a new connection that goes on with the
        // session before then cancels it [MQTT-3.1.2-8]. That is Mosquitto's
        // 07-will-takeover matrix; Mosquitto differs only for a delayed will, which it drops
        // even when the session ends (tests/python/test_mqtt_interop.py marks it).
        let pending = e.s.take_pending_will().map(|p| p.will);
        let will = e.s.take_will().or(pending);
        if let Some(w) = will.filter(|_| ends) {
            self.publish_will(w, author, None, now);
        }
        let leaves = crate::mesh::leaves_node(successor);
        if ends || (leaves && !self.clustered()) {
            self.persist_gone(&e.s.client_id);
            for (filter, _) in e.s.subs.iter() {
                self.unindex_subscription(filter, key);
            }
        } else if leaves {
            self.persist_gone(&e.s.client_id);
            // To another node: what is routed here meanwhile goes after it.
            let filters = e.s.subs.iter().map(|(f, _)| f.to_owned()).collect();
            let to = e.s.client_id.clone();
            self.leave_remote_stub(key, to, filters);
        } else {
            self.persist_moved(&e.s.client_id);
            // Messages routed here while the session moves are forwarded, not lost.
            let filters = e.s.subs.iter().map(|(f, _)| f.to_owned()).collect();
            self.leave_stub(&mut self.st.borrow_mut(), key, successor, filters);
        }
        self.stats().sessions.fetch_sub(1, Ordering::Relaxed);
        self.stats()
            .subscriptions
            .fetch_sub(e.s.subs.len() as u64, Ordering::Relaxed);
        if ends {
            self.end_session_messages(&mut e.s, key);
            None
        } else {
            Some(e.s)
        }
    }

    /// A session ends: shared-group messages go to other members; everything else is dropped.
    fn end_session_messages(self: &Rc<Self>, s: &mut Session, key: u64) {
        let mut items = Vec::new();
        for e in s.inflight.drain() {
            if let Some(g) = e.shared_group {
                items.push((g, e.msg));
            }
        }
        for q in s.queue.drain() {
            if let Some(g) = q.shared_group {
                if q.delivery.qos != QoS::AtMostOnce {
                    items.push((g, q.msg));
                }
            }
        }
        self.redeliver_shared(items, key);
    }

    /// Removes a session that ended (expired, or non-persistent and disconnected).
    pub(crate) fn end_session(self: &Rc<Self>, key: u64) {
        let Some(mut e) = self.st.borrow_mut().sessions.remove(key) else {
            return;
        };
        if !matches!(e.sink, Sink::Api(_) | Sink::Bridge(_)) {
            self.persist_gone(&e.s.client_id);
        }
        for (filter, _) in e.s.subs.iter() {
            self.unindex_subscription(filter, key);
        }
        self.stats().sessions.fetch_sub(1, Ordering::Relaxed);
        self.stats()
            .subscriptions
            .fetch_sub(e.s.subs.len() as u64, Ordering::Relaxed);
        self.end_session_messages(&mut e.s, key);
        if !matches!(e.sink, Sink::Api(_) | Sink::Bridge(_)) {
            self.shared.registry.release(&e.s.client_id, key);
            // Its owner in the cluster forgets this node for it (`cluster/clientids.rs`).
            self.to_cluster(ToCluster::Ended(e.s.client_id.clone()));
        }
    }

    /// Installs a session for a newly accepted CONNECT and indexes its subscriptions.
    pub(crate) fn install_session(self: &Rc<Self>, key: u64, s: Box<Session>, sink: Sink) {
        let subs: Vec<(String, SubOptions)> =
            s.subs.iter().map(|(f, o)| (f.to_owned(), *o)).collect();
        self.stats().sessions.fetch_add(1, Ordering::Relaxed);
        self.stats()
            .subscriptions
            .fetch_add(subs.len() as u64, Ordering::Relaxed);
        let entry = Entry {
            s,
            sink,
            token_acl: None,
        };
        self.st.borrow_mut().sessions.insert(key, entry);
        self.persist_installed(key);
        for (filter, opts) in subs {
            self.index_subscription(&filter, key, opts);
        }
    }

    /// Keeps what authenticating session `key`'s connection granted (see `Entry::token_acl`).
    pub(crate) fn set_token_acl(&self, key: u64, acl: Option<Arc<uringmq_auth::AclFile>>) {
        if let Some(e) = self.st.borrow_mut().sessions.get_mut(key) {
            e.token_acl = acl;
        }
    }

    /// The connection of session `key` closed.
    pub(crate) fn connection_closed(self: &Rc<Self>, key: u64, reason: &CloseReason) {
        let now = Instant::now();
        let Some(mut c) = self.detach_session(key, reason) else {
            return;
        };
        if !c.persistent {
            if let Some(w) = c.will {
                let origin = Some(Origin {
                    core: self.id,
                    session: key,
                });
                self.publish_will(w, c.author, origin, now);
            }
            self.end_session(key);
            return;
        }
        if self.stopping.get() {
            self.persist_closed(key);
            return;
        }
        let redeliver = self.keep_offline(key, &mut c, now);
        self.persist_closed(key);
        self.redeliver_shared(redeliver, key);
        debug!(client_id = %c.client_id, "session kept offline");
        // Fire at once if the will is due now.
        self.fire_timers(now);
    }

    /// Turns session `key`'s sink offline and takes its will (if `reason` publishes it); None
    /// when there is no such session or a takeover decides about the will (`take_session`).
    fn detach_session(&self, key: u64, reason: &CloseReason) -> Option<Closed> {
        let mut st = self.st.borrow_mut();
        let e = st.sessions.get_mut(key)?;
        let author = self.will_author(e);
        e.sink = match &e.sink {
            Sink::Conn(conn) => {
                crate::conn::limits::keep_publish_debt(self, conn, &e.s.client_id);
                self.tell_disconnect(conn, &e.s, reason);
                Sink::Offline(self.shared.security.listener_index(&conn.listener))
            }
            Sink::Offline(l) => Sink::Offline(*l),
            // Not reached: only a live connection closes (its task calls this).
            Sink::Parked(p) => Sink::Offline(self.shared.security.listener_index(p.listener())),
            Sink::Api(_) | Sink::Bridge(_) => Sink::Offline(crate::security::NO_LISTENER_INDEX),
        };
        if *reason == CloseReason::TakenOver {
            // Drained for a takeover, which takes the session right after and decides
            // about the will (`take_session`).
            return None;
        }
        let will =
            e.s.take_will()
                .filter(|_| reason.publishes_will() && !self.stopping.get());
        Some(Closed {
            will,
            author,
            persistent: e.s.is_persistent(),
            expiry: e.s.session_expiry(),
            delay: e.s.will_delay(),
            client_id: e.s.client_id.clone(),
        })
    }

    /// Keeps persistent session `key` offline: its will delayed, its expiry timed; returns the
    /// shared-group messages it held, for another member of each group.
    fn keep_offline(
        &self,
        key: u64,
        c: &mut Closed,
        now: Instant,
    ) -> Vec<(Arc<str>, Arc<Message>)> {
        let mut st = self.st.borrow_mut();
        let mut redeliver = Vec::new();
        let mut due_times = Vec::new();
        if let Some(e) = st.sessions.get_mut(key) {
            if let Some(w) = c.will.take() {
                let due = will::due(now, c.delay, c.expiry);
                e.s.set_pending_will(Some(will::PendingWill { will: w, due }));
                due_times.push(due);
            }
            if c.expiry != u32::MAX {
                let at = now + Duration::from_secs(u64::from(c.expiry));
                e.s.set_expires_at(Some(at));
                due_times.push(at);
            }
            // Shared-group messages of a member that left go to another member.
            for o in e.s.inflight.extract(|o| {
                o.shared_group.is_some() && o.state != uringmq_session::OutState::PubComp
            }) {
                self.persist_done(&e.s.client_id, o.delivery.store_id);
                if let Some(g) = o.shared_group {
                    redeliver.push((g, o.msg));
                }
            }
            for q in e.s.queue.extract(|q| q.shared_group.is_some()) {
                self.persist_done(&e.s.client_id, q.delivery.store_id);
                if let Some(g) = q.shared_group {
                    redeliver.push((g, q.msg));
                }
            }
        }
        for at in due_times {
            st.sessions.schedule(at, key);
        }
        redeliver
    }

    /// Runs due timers: delayed wills and session expiry.
    pub(crate) fn fire_timers(self: &Rc<Self>, now: Instant) {
        loop {
            let Some(key) = self.st.borrow_mut().sessions.pop_due(now) else {
                return;
            };
            let (will, author, expired) = {
                let mut st = self.st.borrow_mut();
                let Some(e) = st.sessions.get_mut(key) else {
                    continue;
                };
                if !matches!(e.sink, Sink::Offline(_)) {
                    continue;
                }
                let due = e.s.pending_will().is_some_and(|p| p.due <= now);
                let will = due.then(|| e.s.take_pending_will()).flatten();
                let will = will.map(|p| p.will);
                let author = will.is_some().then(|| self.will_author(e));
                (will, author, e.s.expires_at().is_some_and(|at| at <= now))
            };
            let published = will.is_some();
            if let (Some(w), Some(author)) = (will, author) {
                let origin = Some(Origin {
                    core: self.id,
                    session: key,
                });
                self.publish_will(w, author, origin, now);
            }
            if expired {
                add(&self.stats().sessions_expired, 1);
                self.end_session(key);
            } else if published {
                // The stored session loses its will: a restart (or, with `session_store`,
                // another node) must not publish it again.
                self.persist_installed(key);
            }
        }
    }

    // ---- in-process API ----

    /// Hands a closed connection to the embedder's disconnect hook, on a hook thread.
    fn tell_disconnect(&self, conn: &Conn, s: &Session, reason: &CloseReason) {
        if let Some(hook) = self.shared.on_disconnect.clone() {
            let (client, why) = (summary(&conn.listener, conn.peer(), s), reason.name());
            if !self.shared.hooks.notify(move || hook(client, why)) {
                debug!("disconnect hook not called: the hook threads are busy or stopped");
            }
        }
    }

    /// Writes everything queued for session `key` that the window and the outbound limit allow.
    pub(crate) fn pump(self: &Rc<Self>, key: u64) {
        let now = Instant::now();
        let mut guard = self.st.borrow_mut();
        let st = &mut *guard;
        self.pump_in(st, key, now);
    }

    /// Appends raw bytes (an ack) to the connection of the session.
    pub(crate) fn write_out(conn: &Conn, f: impl FnOnce(&mut BytesMut)) {
        f(conn.out.borrow_mut().buf());
        conn.wake();
    }
}

/// What a closed connection leaves its session to decide: the will and its timing.
struct Closed {
    will: Option<Box<LastWill>>,
    author: WillAuthor,
    persistent: bool,
    expiry: u32,
    delay: u32,
    client_id: Arc<str>,
}
