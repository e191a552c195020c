//! Durable state wiring (#15): what a shard writes to its store (`crate::store`) when its
//! durable state changes, how the shards are rebuilt from what the store recovered, and,
//! under `persistence_sync = "always"`, the barrier that holds every byte a client could
//! read (PUBACK, PUBREC, SUBACK, CONNACK, deliveries) until the records it depends on are
//! durable, on this shard and on every shard the message was routed to.
//!
//! What is written, and by whom:
//! - sessions that outlive their connection (expiry > 0, not in-process): the shard that
//!   serves one writes it. Its first record in a log is an image (`Record::Session { fresh }`
//!   plus its subscriptions, messages and QoS 2 ids); later records change it. A session that
//!   moves (takeover on another shard) is imaged again there; the store orders a client id's
//!   versions across logs by stamp, so the stale copy in the old log loses.
//! - QoS 1/2 messages for such sessions: queued, put in flight (packet id), PUBREL sent, done.
//! - inbound QoS 2 packet ids (received, released).
//! - retained messages: the shard `store::retained_owner(topic)` writes every topic's records,
//!   so one log orders them; the publishing shard waits for that shard under `always`.
//!
//! The cross-shard half of `always`: a shard that flushes a mesh batch carrying something that
//! writes records on the receiver (a PUBLISH, a forwarded delivery, a retained message)
//! appends `DurableReq { seq }`; the receiver answers `Durable { seq }` once everything it
//! pushed before handling the request is durable. A connection's writer captures, after
//! flushing the mesh, its shard's store position and the sequence asked of every other shard,
//! and writes only once all of them are confirmed. The wait is shared by everything the writer
//! flushes at once (group commit per turn on every shard).

use super::{Entry, Shard, Sink};
use crate::conn::{CloseReason, Conn};
use crate::mesh::cluster::ToCluster;
use crate::mesh::{MeshMsg, PersistMsg};
use crate::store::{
    self, MsgState, Record, Recovered, RecoveredSession, SessionMeta, ShardStore, StoreConfig,
    StoreError, StoredMsg, SyncPolicy,
};
use crate::PersistenceSync;
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};
use tracing::{info, warn};
use uringmq_codec::{Packet, QoS};
use uringmq_session::{Message, OutEntry, OutState};

/// Figures an embedder (and the tests) can read: what recovery found, and the stores' work.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PersistenceStats {
    /// Sessions recovered at start.
    pub recovered_sessions: u64,
    /// Queued and in-flight messages recovered at start.
    pub recovered_messages: u64,
    /// Retained messages recovered at start.
    pub recovered_retained: u64,
    /// Torn or corrupt store file tails skipped at start (each logged with file and offset).
    pub corrupt: u64,
    /// Milliseconds recovery took.
    pub recovery_ms: u64,
    /// Records written by all shards.
    pub records: u64,
    /// Syncs (`fdatasync`) by all shards.
    pub syncs: u64,
    /// Failed writes or syncs (a full disk): new persistent state is refused meanwhile.
    pub write_errors: u64,
    /// Requests refused because the store could not write (PUBLISH 0x97, SUBSCRIBE 0x97,
    /// CONNECT of a persistent session 0x97; 3.x: the connection is closed or 0x80).
    pub refused: u64,
}

/// What `Broker::start` recovered, taken by each core as it starts.
pub(crate) struct Boot {
    slots: Mutex<Vec<Option<CoreBoot>>>,
    /// What every core's replicas start with; dropped once every core has it.
    replicas: Mutex<Option<Arc<Replicas>>>,
    always: bool,
    report: store::RecoveryReport,
    /// Recovered bridge sessions (`crate::bridge::store_key`), taken by the core that starts
    /// the bridge: they are placed on that core, not on their home core.
    bridges: Mutex<Vec<RecoveredSession>>,
    /// Per core: records, syncs, write errors (copied from the store by its core), refusals.
    pub(crate) counters: Vec<[AtomicU64; 4]>,
}

struct Replicas {
    /// Every recovered ordinary filter and a core that serves a subscriber to it: every
    /// core's interest replica starts with all of them, so no core routes before it knows.
    interest: Vec<(Arc<str>, u16)>,
    /// Shared groups: (group filter, core, members there).
    shared: Vec<(Arc<str>, u16, u32)>,
    retained: Vec<Arc<Message>>,
}

struct CoreBoot {
    store: ShardStore,
    sessions: Vec<(u64, RecoveredSession)>,
}

/// The store settings of `config`.
fn store_config(c: &crate::Config) -> StoreConfig {
    let sync = match c.persistence_sync {
        PersistenceSync::Always => SyncPolicy::Always,
        PersistenceSync::Interval => {
            SyncPolicy::Interval(Duration::from_millis(c.persistence_sync_interval_ms.max(1)))
        }
        PersistenceSync::Never => SyncPolicy::Never,
    };
    StoreConfig {
        sync,
        ..StoreConfig::default()
    }
}

impl Boot {
    /// Opens the store of `config.persistence_dir` (none: memory only) and places every
    /// recovered session on a core (its home shard), claiming its client id, so that a client
    /// connecting to any core finds it. Runs before the cores start.
    pub(crate) fn open(
        config: &crate::Config,
        cores: usize,
        registry: &crate::mesh::Registry,
    ) -> std::io::Result<Option<Boot>> {
        let Some(dir) = &config.persistence_dir else {
            return Ok(None);
        };
        let (stores, recovered) = store::Store::open(dir, cores, &store_config(config))?;
        let Recovered {
            sessions,
            retained,
            report,
        } = recovered;
        for s in &report.skipped {
            warn!(file = %s.file.display(), offset = s.offset, bytes = s.bytes,
                reason = %s.reason, "store: corrupt or torn records skipped");
        }
        info!(dir = %dir.display(), "store recovered: {report}");
        let mut per_core: Vec<Vec<(u64, RecoveredSession)>> =
            (0..cores).map(|_| Vec::new()).collect();
        let mut interest = HashSet::new();
        let mut shared: std::collections::HashMap<(Arc<str>, u16), u32> = Default::default();
        let (bridges, sessions): (Vec<_>, Vec<_>) =
            (sessions.into_iter()).partition(|rs| crate::bridge::is_store_key(&rs.meta.client_id));
        for rs in sessions {
            let core = rs.shard.min(cores - 1) as u16;
            let key = super::slab::recovered_key(core, per_core[usize::from(core)].len());
            let _ = registry.claim(&rs.meta.client_id, key);
            for (filter, _) in &rs.subs {
                let f: Arc<str> = Arc::from(&**filter);
                if matches!(uringmq_topic::SharedFilter::parse(&f), Ok(Some(_))) {
                    *shared.entry((f, core)).or_default() += 1;
                } else {
                    interest.insert((f, core));
                }
            }
            per_core[usize::from(core)].push((key, rs));
        }
        let slots = stores
            .into_iter()
            .zip(per_core)
            .map(|(store, sessions)| Some(CoreBoot { store, sessions }))
            .collect();
        Ok(Some(Boot {
            slots: Mutex::new(slots),
            replicas: Mutex::new(Some(Arc::new(Replicas {
                interest: interest.into_iter().collect(),
                shared: shared.into_iter().map(|((g, c), n)| (g, c, n)).collect(),
                retained,
            }))),
            always: config.persistence_sync == PersistenceSync::Always,
            report,
            bridges: Mutex::new(bridges),
            counters: (0..cores).map(|_| Default::default()).collect(),
        }))
    }

    /// The recovered session of the bridge whose store key is `key`, if any (once).
    pub(crate) fn take_bridge(&self, key: &str) -> Option<RecoveredSession> {
        let mut b = self.bridges.lock().ok()?;
        let i = b.iter().position(|rs| &*rs.meta.client_id == key)?;
        Some(b.swap_remove(i))
    }

    /// The figures of [`PersistenceStats`].
    pub(crate) fn stats(&self) -> PersistenceStats {
        let sum = |i: usize| -> u64 {
            self.counters
                .iter()
                .map(|c| c[i].load(Ordering::Relaxed))
                .sum()
        };
        PersistenceStats {
            recovered_sessions: self.report.sessions as u64,
            recovered_messages: self.report.messages as u64,
            recovered_retained: self.report.retained as u64,
            corrupt: self.report.skipped.len() as u64,
            recovery_ms: self.report.elapsed.as_millis() as u64,
            records: sum(0),
            syncs: sum(1),
            write_errors: sum(2),
            refused: sum(3),
        }
    }
}

/// One core's end of the store.
pub(crate) struct Persist {
    pub(crate) store: Rc<ShardStore>,
    always: bool,
    /// Client ids whose session this core's log holds (imaged here, not gone or moved).
    stored: RefCell<HashSet<Arc<str>, ahash::RandomState>>,
    /// `always`: per other core, requests sent, confirmations received, and the highest
    /// request whose records failed there.
    asked: RefCell<Vec<u64>>,
    confirmed: RefCell<Vec<u64>>,
    failed: RefCell<Vec<u64>>,
    /// Per other core: the outbox holds something that writes records there.
    dirty: RefCell<Vec<bool>>,
    waiters: RefCell<Vec<Waker>>,
    /// Set at stop: barriers no longer wait (the stores' close syncs what is left).
    released: Cell<bool>,
    /// Something that writes records elsewhere was sent while handling mesh messages.
    relayed: Cell<bool>,
    /// Requests waiting for a pending install (see `on_mesh`).
    parked: RefCell<Vec<(u16, u64)>>,
    /// Records pushed only once other cores confirmed what they depend on (see
    /// `after_routed`), in order: each with the requests it waits for.
    deferred: RefCell<std::collections::VecDeque<(Vec<u64>, Record)>>,
    /// With the cluster's `session_store`: every record also goes there (`shared_store.rs`).
    pub(crate) sharing: Option<Rc<super::shared_store::Sharing>>,
    /// Client ids whose will alone the shared store holds (see `will_only`).
    wills: RefCell<HashSet<Arc<str>, ahash::RandomState>>,
}

impl Shard {
    /// Builds this core's `Persist` and restores its recovered sessions, every core's
    /// interest and shared-group counts, and the retained replica. Before the core runs.
    pub(crate) fn restore(&self) -> Option<Persist> {
        let boot = self.shared.boot.as_ref()?;
        // Both under the slots' lock: the core that takes the last slot drops the replicas'
        // source after every other core has its reference.
        let (mine, replicas) = {
            let mut slots = boot.slots.lock().ok()?;
            let mine = slots.get_mut(usize::from(self.id))?.take()?;
            let mut r = boot.replicas.lock().ok()?;
            let replicas = if slots.iter().all(Option::is_none) {
                r.take()?
            } else {
                r.clone()?
            };
            (mine, replicas)
        };
        let cores = self.shared.cores();
        let p = Persist {
            store: Rc::new(mine.store),
            always: boot.always,
            stored: Default::default(),
            asked: RefCell::new(vec![0; cores]),
            confirmed: RefCell::new(vec![0; cores]),
            failed: RefCell::new(vec![0; cores]),
            dirty: RefCell::new(vec![false; cores]),
            waiters: RefCell::new(Vec::new()),
            released: Cell::new(false),
            relayed: Cell::new(false),
            parked: RefCell::new(Vec::new()),
            deferred: Default::default(),
            wills: Default::default(),
            sharing: self
                .shared
                .session_feed
                .clone()
                .map(|feed| super::shared_store::Sharing::new(feed, self.id)),
        };
        {
            let mut st = self.st.borrow_mut();
            let routes = &mut st.routes;
            for (filter, core) in &replicas.interest {
                routes.set_interest(filter, *core, true);
            }
            for (group, core, n) in &replicas.shared {
                routes.set_shared_count(group, *core, *n);
            }
            for m in &replicas.retained {
                routes.set_retained(m.clone());
            }
            if self.id == 0 {
                let n = routes.retained_user_len() as u64;
                self.stats().retained.store(n, Ordering::Relaxed);
            }
            st.sessions.reserve_keys(mine.sessions.len());
        }
        self.announce_restored(&replicas);
        let now = Instant::now();
        for (key, rs) in mine.sessions {
            p.stored.borrow_mut().insert(rs.meta.client_id.clone());
            self.restore_session(key, rs, now);
        }
        Some(p)
    }

    /// Tells the other nodes (through the cluster thread, which restates it to every link)
    /// what this core's recovered sessions subscribe to, as a SUBSCRIBE does: else a
    /// restarted node's offline subscribers would get nothing from other nodes until they
    /// subscribed again. Recovered retained messages are not announced: every node stores
    /// the ones it hears of, so the others have them, and one replaced or cleared while this
    /// node was down would come back stale.
    fn announce_restored(&self, r: &Replicas) {
        for (filter, _) in r.interest.iter().filter(|(_, core)| *core == self.id) {
            self.to_cluster(ToCluster::Interest {
                filter: filter.clone(),
                add: true,
            });
        }
        for (group, _, members) in r.shared.iter().filter(|(_, core, _)| *core == self.id) {
            self.to_cluster(ToCluster::Shared {
                core: self.id,
                group: group.clone(),
                members: *members,
            });
        }
    }

    /// Installs one recovered session as an offline session of this core (before the core
    /// runs: every core's replicas already hold its filters).
    fn restore_session(&self, key: u64, rs: RecoveredSession, now: Instant) {
        let listener = rs.meta.listener;
        let s = super::import::session_of_image(rs, self.config(), true, now);
        let mut st = self.st.borrow_mut();
        for (filter, opts) in s.subs.iter() {
            st.routes.restore_subscription(filter, key, *opts);
        }
        let due = [s.pending_will().map(|p| p.due), s.expires_at()];
        for at in due.into_iter().flatten() {
            st.sessions.schedule(at, key);
        }
        self.stats().sessions.fetch_add(1, Ordering::Relaxed);
        super::add(&self.stats().subscriptions, s.subs.len() as u64);
        let entry = Entry {
            s,
            sink: Sink::Offline(listener),
            token_acl: None,
        };
        st.sessions.insert(key, entry);
    }
}

/// Whether `e`'s state is written: a session that outlives its connection, not in-process.
/// A bridge's session is (its queue is written by `crate::bridge`, which holds it).
fn durable(e: &Entry) -> bool {
    e.s.is_persistent() && !matches!(e.sink, Sink::Api(_))
}

fn meta(e: &Entry, listener: u16) -> SessionMeta {
    super::import::meta_of(&e.s, listener)
}

fn stored_msg(
    msg: &Arc<Message>,
    d: &uringmq_session::Delivery,
    group: &Option<Arc<str>>,
    packet_id: Option<u16>,
    state: MsgState,
) -> StoredMsg {
    StoredMsg {
        id: d.store_id,
        msg: msg.clone(),
        delivery: d.clone(),
        shared_group: group.clone(),
        packet_id,
        state,
    }
}

fn out_state(o: &OutEntry) -> MsgState {
    if o.state == OutState::PubComp {
        MsgState::Released
    } else {
        MsgState::Sent
    }
}

/// What a packet's records need from the state before the packet is handled.
pub(crate) enum Before {
    Nothing,
    /// An acknowledgement ends or advances message `id` of the session.
    Ack {
        id: u64,
        done: bool,
    },
    /// A QoS 2 PUBLISH with this id, which was (or was not) already held.
    Qos2 {
        pid: u16,
        held: bool,
    },
    /// PUBREL of a held id.
    Released(u16),
    /// SUBSCRIBE / UNSUBSCRIBE of these filters.
    Filters(Vec<uringmq_codec::ByteStr>),
}

impl Persist {
    fn push(&self, rec: Record) -> store::Ticket {
        let Some(sharing) = &self.sharing else {
            return self.store.push(rec);
        };
        let mut copy = rec.clone();
        let t = self.store.push(rec);
        if let Record::Queued { msg, .. } = &mut copy {
            if msg.id == 0 {
                msg.id = t.stamp;
            }
        }
        sharing.record(t.stamp, copy);
        t
    }

    /// Writes `e`'s session: its image the first time this log holds it, else its fields.
    /// The image writes every QoS 1/2 message, giving one that has no id yet (it came from
    /// another node, or was queued while nothing was written) an id of this store.
    fn session(&self, e: &mut Entry, listener: u16) {
        let fresh = self.stored.borrow_mut().insert(e.s.client_id.clone());
        self.push(Record::Session {
            meta: meta(e, listener),
            fresh,
        });
        if !fresh {
            return;
        }
        let client_id = &e.s.client_id;
        for (filter, opts) in e.s.subs.iter() {
            self.push(Record::SubAdd {
                client_id: client_id.clone(),
                filter: filter.into(),
                opts: *opts,
            });
        }
        for o in e.s.inflight.iter_mut() {
            let (packet_id, state) = (Some(o.packet_id), out_state(o));
            let m = stored_msg(&o.msg, &o.delivery, &o.shared_group, packet_id, state);
            let t = self.push(Record::Queued {
                client_id: client_id.clone(),
                msg: m,
            });
            if o.delivery.store_id == 0 {
                o.delivery.store_id = t.stamp;
            }
        }
        for q in e.s.queue.iter_mut() {
            if q.delivery.qos == QoS::AtMostOnce {
                continue;
            }
            let m = stored_msg(&q.msg, &q.delivery, &q.shared_group, None, MsgState::Queued);
            let t = self.push(Record::Queued {
                client_id: client_id.clone(),
                msg: m,
            });
            if q.delivery.store_id == 0 {
                q.delivery.store_id = t.stamp;
            }
        }
        for packet_id in e.s.qos2_in().iter() {
            self.push(Record::Qos2Received {
                client_id: client_id.clone(),
                packet_id,
            });
        }
    }

    /// The session of `client_id` ended: gone from the store (if it was there), and its
    /// will from the shared store unless `keep_will`.
    fn gone(&self, client_id: &Arc<str>, keep_will: bool) {
        if self.stored.borrow_mut().remove(client_id) {
            self.push(Record::SessionGone {
                client_id: client_id.clone(),
            });
        } else if let Some(s) = self.sharing.as_ref() {
            if self.wills.borrow_mut().remove(client_id) && !keep_will {
                s.record(
                    0,
                    Record::SessionGone {
                        client_id: client_id.clone(),
                    },
                );
                // Out before a successor on another core writes the client's next will.
                s.flush();
            }
        }
    }

    /// With `session_store`, a connection whose session ends with it but has a will: the
    /// shared store keeps the will (and nothing else: the local log keeps nothing of such a
    /// session), so that a survivor publishes it if this node dies under the connection.
    fn will_only(&self, e: &Entry, listener: u16) {
        let Some(s) = self.sharing.as_ref().filter(|_| e.s.will().is_some()) else {
            return;
        };
        if !matches!(e.sink, Sink::Conn(_)) {
            return;
        }
        self.wills.borrow_mut().insert(e.s.client_id.clone());
        let meta = meta(e, listener);
        s.record(0, Record::Session { meta, fresh: true });
    }

    fn done(&self, client_id: &Arc<str>, id: u64) {
        if id != 0 {
            self.push(Record::MsgDone {
                client_id: client_id.clone(),
                id,
            });
        }
    }

    // ---- the `always` barrier ----

    /// Notes that `msg`, queued for core `to`, may write records there; `relaying`: sent
    /// while handling other cores' messages (their confirmations then wait for it).
    pub(crate) fn sending(&self, to: usize, msg: &MeshMsg, relaying: bool) {
        if self.always
            && matches!(
                msg,
                MeshMsg::Publish { .. } | MeshMsg::Forward { .. } | MeshMsg::Retain { .. }
            )
        {
            if let Some(d) = self.dirty.borrow_mut().get_mut(to) {
                *d = true;
            }
            if relaying {
                self.relayed.set(true);
            }
        }
    }

    /// Before the outbox is pushed: a confirmation request behind what writes records.
    pub(crate) fn seal(&self, me: u16, outbox: &mut [Vec<MeshMsg>]) {
        if !self.always {
            return;
        }
        let mut dirty = self.dirty.borrow_mut();
        let mut asked = self.asked.borrow_mut();
        for (c, q) in outbox.iter_mut().enumerate() {
            if std::mem::take(&mut dirty[c]) && !q.is_empty() {
                asked[c] += 1;
                q.push(MeshMsg::Persist(PersistMsg::DurableReq {
                    from: me,
                    seq: asked[c],
                }));
            }
        }
    }

    fn confirmed(&self, from: u16, seq: u64, ok: bool) {
        let c = usize::from(from);
        if let Some(x) = self.confirmed.borrow_mut().get_mut(c) {
            *x = (*x).max(seq);
        }
        if !ok {
            if let Some(x) = self.failed.borrow_mut().get_mut(c) {
                *x = (*x).max(seq);
            }
        }
        self.push_deferred();
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Pushes the deferred records whose requests are all confirmed (dropped if one failed:
    /// what they vouch for is not durable).
    fn push_deferred(&self) {
        loop {
            let rec = {
                let confirmed = self.confirmed.borrow();
                let mut deferred = self.deferred.borrow_mut();
                match deferred.front() {
                    Some((need, _)) if covers(&confirmed, need) => deferred.pop_front(),
                    _ => None,
                }
            };
            let Some((need, rec)) = rec else { return };
            let failed = self.failed.borrow();
            let ok = !failed.iter().zip(&need).any(|(f, n)| *f != 0 && f <= n);
            drop(failed);
            if ok {
                self.push(rec);
            }
        }
    }

    /// Pushes `rec` once what this core routed so far is durable wherever it went: an
    /// inbound QoS 2 id must not be on disk without the deliveries of its message, or a
    /// retransmission after a crash would be taken for a duplicate and the message lost.
    pub(crate) fn after_routed(&self, core: &Shard, rec: Record) {
        if !self.always {
            self.push(rec);
            return;
        }
        core.flush_mesh();
        let need = self.asked.borrow().clone();
        if covers(&self.confirmed.borrow(), &need) && self.deferred.borrow().is_empty() {
            self.push(rec);
        } else {
            self.deferred.borrow_mut().push_back((need, rec));
        }
    }

    /// Waits until every other core confirmed the requests in `need`; false if one failed.
    async fn confirmed_up_to(&self, need: Vec<u64>) -> bool {
        let base = self.confirmed.borrow().clone();
        poll_fn(|cx| {
            if self.released.get() || covers(&self.confirmed.borrow(), &need) {
                return Poll::Ready(());
            }
            self.waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await;
        let failed = self.failed.borrow();
        !failed.iter().zip(&base).any(|(f, b)| f > b)
    }

    /// Waits until everything this core pushed so far, and everything the other cores
    /// pushed for what this core sent them so far, is durable. Err: a write failed, so
    /// what depends on it must not be acknowledged.
    pub(crate) async fn barrier(&self) -> Result<(), StoreError> {
        if !self.always || self.released.get() {
            return Ok(());
        }
        let need = self.asked.borrow().clone();
        if !self.confirmed_up_to(need).await {
            return Err(StoreError::Io(
                "a core the message was routed to failed".into(),
            ));
        }
        // After the confirmations: the deferred records they released are pushed by now.
        let durable = self.store.wait_durable(self.store.position()).await;
        if let Some(s) = &self.sharing {
            s.wait_stored().await;
        }
        durable
    }

    /// The broker stops: nothing waits for confirmations any more.
    pub(crate) fn release(&self) {
        self.released.set(true);
        if let Some(s) = &self.sharing {
            s.release();
        }
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }
}

/// Whether every request in `need` is confirmed.
fn covers(confirmed: &[u64], need: &[u64]) -> bool {
    confirmed.iter().zip(need).all(|(c, n)| c >= n)
}

/// Handles a barrier message from another core.
pub(crate) fn on_mesh(core: &Rc<Shard>, msg: PersistMsg) {
    let Some(p) = &core.persist else { return };
    match msg {
        PersistMsg::DurableReq { from, seq } => {
            // Deliveries held for a session whose install is pending are not written yet:
            // the answer waits for the install (`persist_installed_all`).
            let held = core.st.borrow().moves.holds_early();
            if held {
                p.parked.borrow_mut().push((from, seq));
            } else {
                answer(core, p, from, seq);
            }
        }
        PersistMsg::Durable { from, seq, ok } => p.confirmed(from, seq, ok),
        PersistMsg::Stored { seq } => {
            if let Some(s) = &p.sharing {
                s.stored(seq);
            }
        }
        PersistMsg::DeadWill(w) => core.publish_dead_will(*w),
    }
}

/// Answers request `seq` of core `from` once what this core pushed so far is durable and,
/// if handling mesh messages made it pass messages on (a stub's forward, a shared group
/// without members here), once the cores it passed them to confirmed them too.
fn answer(core: &Rc<Shard>, p: &Persist, from: u16, seq: u64) {
    let at = p.store.position();
    let need = p.relayed.replace(false).then(|| {
        core.flush_mesh();
        p.asked.borrow().clone()
    });
    let core = core.clone();
    monoio::spawn(async move {
        let Some(p) = &core.persist else { return };
        let mut ok = p.store.wait_durable(at).await.is_ok();
        if let Some(s) = &p.sharing {
            s.wait_stored().await;
        }
        if let Some(need) = need {
            ok &= p.confirmed_up_to(need).await;
        }
        let me = core.id;
        core.send(
            usize::from(from),
            MeshMsg::Persist(PersistMsg::Durable { from: me, seq, ok }),
        );
    });
}

impl Shard {
    /// A session was installed after its claim: answer the requests that waited for it.
    pub(crate) fn persist_unpark(self: &Rc<Self>) {
        let Some(p) = &self.persist else { return };
        let held = self.st.borrow().moves.holds_early();
        if held {
            return;
        }
        let parked = std::mem::take(&mut *p.parked.borrow_mut());
        for (from, seq) in parked {
            answer(self, p, from, seq);
        }
    }
}

// ---- the events (each a no-op without a store) ----

impl Shard {
    /// A session was installed on this core (CONNECT, takeover): written if it outlives its
    /// connection; a session that no longer does (expiry 0 now) is gone.
    pub(crate) fn persist_installed(&self, key: u64) {
        let Some(p) = &self.persist else { return };
        let mut st = self.st.borrow_mut();
        let Some(e) = st.sessions.get_mut(key) else {
            return;
        };
        if matches!(e.sink, Sink::Api(_)) {
            return;
        }
        let listener = self.listener_of(e);
        if durable(e) {
            p.session(e, listener);
        } else {
            p.gone(&e.s.client_id, false);
            p.will_only(e, listener);
        }
    }

    fn listener_of(&self, e: &Entry) -> u16 {
        match &e.sink {
            Sink::Offline(l) => *l,
            Sink::Conn(c) => self.shared.security.listener_index(&c.listener),
            Sink::Parked(p) => self.shared.security.listener_index(p.listener()),
            Sink::Api(_) | Sink::Bridge(_) => crate::security::NO_LISTENER_INDEX,
        }
    }

    /// A connection closed: its session is now offline (expiry clock running, no will
    /// connection), or gone.
    pub(crate) fn persist_closed(&self, key: u64) {
        self.persist_installed(key);
    }

    /// A session ended here (expired, clean start, not persistent).
    pub(crate) fn persist_gone(&self, client_id: &Arc<str>) {
        if let Some(p) = &self.persist {
            // A node that stops counts as dead for its connections' wills (their connections
            // close without DISCONNECT): the shared store keeps them for a survivor.
            p.gone(client_id, self.stopping.get());
        }
    }

    /// A session left this core for another (a takeover): the new core images it; this log's
    /// copy is older and loses at recovery.
    pub(crate) fn persist_moved(&self, client_id: &Arc<str>) {
        if let Some(p) = &self.persist {
            p.stored.borrow_mut().remove(client_id);
        }
    }

    /// The newest in-flight entry of `e` was just sent: write it (new, or out of the queue).
    pub(crate) fn persist_sent(&self, e: &mut Entry) {
        let Some(p) = &self.persist else { return };
        if !durable(e) {
            return;
        }
        let client_id = e.s.client_id.clone();
        let Some(o) = e.s.inflight.back_mut() else {
            return;
        };
        if o.delivery.qos == QoS::AtMostOnce {
            return;
        }
        if o.delivery.store_id == 0 {
            let m = stored_msg(
                &o.msg,
                &o.delivery,
                &o.shared_group,
                Some(o.packet_id),
                MsgState::Sent,
            );
            let t = p.push(Record::Queued { client_id, msg: m });
            o.delivery.store_id = t.stamp;
        } else {
            p.push(Record::MsgState {
                client_id,
                id: o.delivery.store_id,
                packet_id: Some(o.packet_id),
                state: MsgState::Sent,
            });
        }
    }

    /// The newest queued entry of `e` was just queued: write it.
    pub(crate) fn persist_queued(&self, e: &mut Entry) {
        let Some(p) = &self.persist else { return };
        if !durable(e) {
            return;
        }
        let client_id = e.s.client_id.clone();
        let Some(q) = e.s.queue.back_mut() else {
            return;
        };
        if q.delivery.qos == QoS::AtMostOnce || q.delivery.store_id != 0 {
            return;
        }
        let m = stored_msg(&q.msg, &q.delivery, &q.shared_group, None, MsgState::Queued);
        let t = p.push(Record::Queued { client_id, msg: m });
        q.delivery.store_id = t.stamp;
    }

    /// A stored message of `client_id` is done (acknowledged, dropped).
    pub(crate) fn persist_done(&self, client_id: &Arc<str>, id: u64) {
        if let Some(p) = &self.persist {
            p.done(client_id, id);
        }
    }

    /// A retained message was applied to this core's replica: the topic's owner writes it.
    pub(crate) fn persist_retained(&self, msg: &Arc<Message>) {
        let Some(p) = &self.persist else { return };
        if Message::is_sys_topic(&msg.topic)
            || store::retained_owner(&msg.topic, self.shared.cores()) != usize::from(self.id)
        {
            return;
        }
        if msg.payload.is_empty() {
            p.push(Record::RetainClear {
                topic: msg.topic.clone(),
            });
        } else {
            p.push(Record::RetainSet { msg: msg.clone() });
        }
    }

    /// Before a client's packet is handled: what its records need, or its refusal when the
    /// store cannot write (a full disk). `Some(result)`: handled here.
    pub(crate) fn persist_before(
        &self,
        conn: &Conn,
        key: u64,
        packet: &Packet,
    ) -> (Before, Option<Result<(), CloseReason>>) {
        let Some(p) = &self.persist else {
            return (Before::Nothing, None);
        };
        let st = self.st.borrow();
        let Some(e) = st.sessions.get(key) else {
            return (Before::Nothing, None);
        };
        if p.store.failing() {
            if let Some(r) = self.refuse_while_failing(conn, e, packet) {
                return (Before::Nothing, Some(r));
            }
        }
        if !durable(e) {
            return (Before::Nothing, None);
        }
        let find = |pid: u16, state: OutState| {
            e.s.inflight
                .iter()
                .find(|o| o.packet_id == pid && o.state == state)
                .map(|o| o.delivery.store_id)
                .filter(|id| *id != 0)
        };
        let before = match packet {
            Packet::PubAck(a) => {
                find(a.packet_id, OutState::PubAck).map(|id| Before::Ack { id, done: true })
            }
            Packet::PubRec(a) => find(a.packet_id, OutState::PubRec).map(|id| Before::Ack {
                id,
                done: a.reason_code.is_error(),
            }),
            Packet::PubComp(a) => {
                find(a.packet_id, OutState::PubComp).map(|id| Before::Ack { id, done: true })
            }
            Packet::Publish(m) if m.qos == QoS::ExactlyOnce => Some(Before::Qos2 {
                pid: m.packet_id,
                held: e.s.qos2_in().contains(m.packet_id),
            }),
            Packet::PubRel(a) if e.s.qos2_in().contains(a.packet_id) => {
                Some(Before::Released(a.packet_id))
            }
            Packet::Subscribe(s) => Some(Before::Filters(
                s.filters.iter().map(|(f, _)| f.clone()).collect(),
            )),
            Packet::Unsubscribe(u) => Some(Before::Filters(u.filters.clone())),
            _ => None,
        };
        (before.unwrap_or(Before::Nothing), None)
    }

    /// After the packet was handled: write what changed.
    pub(crate) fn persist_after(&self, key: u64, before: Before) {
        let Some(p) = &self.persist else { return };
        if matches!(before, Before::Nothing) {
            return;
        }
        let st = self.st.borrow();
        let Some(e) = st.sessions.get(key) else {
            return;
        };
        let client_id = e.s.client_id.clone();
        match before {
            Before::Nothing => {}
            Before::Ack { id, done: true } => p.done(&client_id, id),
            Before::Ack { id, done: false } => {
                let packet_id =
                    e.s.inflight
                        .iter()
                        .find(|o| o.delivery.store_id == id)
                        .map(|o| o.packet_id);
                p.push(Record::MsgState {
                    client_id,
                    id,
                    packet_id,
                    state: MsgState::Released,
                });
            }
            Before::Qos2 { pid, held } => {
                if !held && e.s.qos2_in().contains(pid) {
                    drop(st);
                    p.after_routed(
                        self,
                        Record::Qos2Received {
                            client_id,
                            packet_id: pid,
                        },
                    );
                }
            }
            Before::Released(packet_id) => {
                p.push(Record::Qos2Released {
                    client_id,
                    packet_id,
                });
            }
            Before::Filters(filters) => {
                for f in filters {
                    let rec = match e.s.subs.get(&f) {
                        Some(opts) => Record::SubAdd {
                            client_id: client_id.clone(),
                            filter: f,
                            opts: *opts,
                        },
                        None => Record::SubRemove {
                            client_id: client_id.clone(),
                            filter: f,
                        },
                    };
                    p.push(rec);
                }
            }
        }
    }
}

impl Shard {
    /// While the store cannot write (a full disk): a QoS 1/2 PUBLISH is refused (v5: PUBACK
    /// or PUBREC 0x97 Quota exceeded; 3.x has no refusal, so the connection is closed and
    /// the client sends it again later), and a persistent session's SUBSCRIBE gets 0x97
    /// (3.x: 0x80) for every filter. Counted, logged once per store failure by the store.
    fn refuse_while_failing(
        &self,
        conn: &Conn,
        e: &Entry,
        packet: &Packet,
    ) -> Option<Result<(), CloseReason>> {
        use uringmq_codec::{Ack, ReasonCode, SubAck};
        let v5 = conn.protocol.get().is_v5();
        let refused = match packet {
            Packet::Publish(m) if m.qos != QoS::AtMostOnce => {
                if !v5 {
                    Err(CloseReason::Protocol(
                        ReasonCode::QUOTA_EXCEEDED.0,
                        "the store cannot write: QoS 1/2 PUBLISH refused".into(),
                    ))
                } else {
                    let mut a = Ack::new(m.packet_id);
                    a.reason_code = ReasonCode::QUOTA_EXCEEDED;
                    conn.send_packet(&if m.qos == QoS::AtLeastOnce {
                        Packet::PubAck(a)
                    } else {
                        Packet::PubRec(a)
                    });
                    Ok(())
                }
            }
            Packet::Subscribe(s) if durable(e) => {
                let code = if v5 {
                    ReasonCode::QUOTA_EXCEEDED
                } else {
                    ReasonCode::V3_SUBACK_FAILURE
                };
                conn.send_packet(&Packet::SubAck(SubAck {
                    packet_id: s.packet_id,
                    properties: Default::default(),
                    reason_codes: vec![code; s.filters.len()],
                }));
                Ok(())
            }
            _ => return None,
        };
        if let Some(boot) = &self.shared.boot {
            super::add(&boot.counters[usize::from(self.id)][3], 1);
        }
        Some(refused)
    }

    /// Copies this core's store counters where [`PersistenceStats`] reads them (the sweep).
    pub(crate) fn persist_tick(&self) {
        let (Some(p), Some(boot)) = (&self.persist, &self.shared.boot) else {
            return;
        };
        let s = p.store.stats();
        let c = &boot.counters[usize::from(self.id)];
        c[0].store(s.records, Ordering::Relaxed);
        c[1].store(s.syncs, Ordering::Relaxed);
        c[2].store(s.write_errors, Ordering::Relaxed);
    }
}
