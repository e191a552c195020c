//! Session handoff between connections (and cores) of one client id: one session per client
//! id [MQTT-3.1.4-3], no message lost while it moves.
//!
//! The registry is authoritative: every CONNECT gets a fresh session key (its core in the high
//! bits, a per-core generation below) and claiming the client id returns the previous owner's
//! key, so the owners form one chain `k0 -> k1 -> k2` in claim order, each key taken over by
//! exactly its successor. Anything that names a key that is not current any more (a takeover
//! of a session that ended, a forward or an acknowledgement for a finished move) finds nothing
//! and is ignored.
//!
//! Three windows are closed here:
//!
//! - **A takeover that arrives before the previous CONNECT finished.** Between its claim and
//!   its `install_session` a key is `Incoming` on its core; a takeover request for it is parked
//!   there and answered right after the install (that connection gets CONNACK and then
//!   DISCONNECT 0x8E, as if the two CONNECTs had come one after the other).
//! - **Packets the old connection sent before the successor's CONNECT.** A client that sends
//!   PUBACK and DISCONNECT and reconnects at once must not find the message redelivered or its
//!   will published. A takeover of a live connection therefore drains it first
//!   (`Conn::drain_for_takeover`: shut down for reading, the buffered packets handled) and
//!   takes the session when that connection has closed (`drained`), at most `DRAIN_LIMIT`
//!   later.
//! - **Messages routed while the session moves.** The old core keeps the session's entries in
//!   its local index as a `Stub` that forwards every delivery to the new key (`Forward`); the
//!   new core holds forwards that arrive before the install and applies them after it. After
//!   the install the new core tells the old one (`MoveAck`) and has every other core do the
//!   same after applying what it queued before (`MoveBarrier`): the new owner's interest was
//!   pushed before those, so once the old core has every acknowledgement, no core routes a
//!   message for this session to the old core only, and the stub goes (`MoveDone`). Until
//!   then a message can reach the session twice (directly and through the stub); the new
//!   core remembers what it gave the session during that window and drops the second copy.
//!   Takeovers of the new key wait for `MoveDone`, so at most one move per client id is open.
//!
//! **Across nodes** (`cluster/clientids.rs`) the same windows are closed with what the nodes
//! share. The first two as above: the holder's take joins its registry chain and drains the
//! old connection. For the third, the old node keeps a remote stub: its filters stay indexed
//! (so the old node stays interested for every other node) and every delivery that reaches
//! it crosses to the new node ([`STUB_HOLD`], 2 s, then it goes), which holds those that
//! arrive before the install and applies them after it. Nodes learn the new node's interest
//! meanwhile, so one message can arrive twice: directly and through the stub. Messages have
//! no identity across nodes, so the new node pairs the two by content (topic, payload, QoS):
//! during [`STUB_HOLD`] plus one second after the install ([`Twins`]) a copy that arrives by one
//! path and matches a copy that came by the other is dropped, once. Every message that
//! reaches the new node directly in that window was also routed to the stub (the old node
//! stays interested), so pairing by content drops exactly the second copies, even of equal
//! messages. The guarantee (nothing lost, QoS 2 once) holds when routes converge and a
//! message crosses a link within those windows; a link down for longer can lose what was
//! sent to the stub too late, or deliver a second copy after the window (QoS 1 allows it).
//! No Local holds in the window too: a message the client itself publishes on the new node
//! reaches the stub as well, whose copy no longer knows its publisher; the copy No Local kept
//! from the session on the new node counts as the direct one, so the stub's is its twin and
//! is dropped.

use super::ToDeliver;
use crate::mesh::cluster::{ToCluster, STUB_HOLD};
use crate::mesh::{core_of, MeshMsg, TakeoverReq};
use crate::shard::{Shard, State};
use futures_channel::oneshot;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uringmq_session::{Delivery, Message, Session};

/// A live delivery that went through a stub.
pub(crate) struct Forwarded {
    msg: Arc<Message>,
    delivery: Delivery,
    group: Option<Arc<str>>,
}

/// A key of this core from its claim until its move is complete.
#[derive(Default)]
pub(crate) struct Incoming {
    /// `install_session` ran.
    installed: bool,
    /// Forwarded before the install, applied right after it in order.
    early: Vec<Forwarded>,
    /// The successor's takeover, answered once the install (and move) is complete.
    parked: Option<TakeoverReq>,
    /// Messages given to the session while forwards may still come, by address (held, so
    /// their addresses stay unique). The window is one mesh round trip, but under a flood
    /// that round trip waits behind the other cores' queues and thousands pass meanwhile:
    /// a lookup must not grow with them.
    seen: HashMap<usize, Arc<Message>>,
    /// A session from another node: the copies of its messages not paired yet.
    twins: Option<Box<Twins>>,
}

/// How long after its install a session from another node pairs copies ([`Twins`]).
const TWINS_HOLD: Duration = Duration::from_secs(1);

/// Copies of messages for a session that came from another node, by the path they came:
/// directly, or through the old node's stub. A copy that matches one of the other path is
/// the second copy of one message (module doc).
#[derive(Default)]
pub(crate) struct Twins {
    direct: Vec<Arc<Message>>,
    forwarded: Vec<Arc<Message>>,
}

fn same(a: &Message, b: &Message) -> bool {
    a.topic == b.topic && a.qos == b.qos && a.payload == b.payload
}

impl Twins {
    /// Records a copy that came by one path; false: it pairs with one of the other path
    /// (that one is forgotten, this one dropped).
    fn first(&mut self, msg: &Arc<Message>, forwarded: bool) -> bool {
        let (mine, other) = if forwarded {
            (&mut self.forwarded, &mut self.direct)
        } else {
            (&mut self.direct, &mut self.forwarded)
        };
        if let Some(at) = other.iter().position(|m| same(m, msg)) {
            other.swap_remove(at);
            return false;
        }
        mine.push(msg.clone());
        true
    }
}

impl Incoming {
    /// Holds forwarded deliveries until its install.
    fn holds_early(&self) -> bool {
        !self.early.is_empty()
    }

    /// Records `msg`; false if the session had it already.
    fn first_sight(&mut self, msg: &Arc<Message>) -> bool {
        if let Some(t) = &mut self.twins {
            return t.first(msg, false);
        }
        let at = Arc::as_ptr(msg) as usize;
        if self.seen.contains_key(&at) {
            return false;
        }
        self.seen.insert(at, msg.clone());
        true
    }
}

/// What a session that moved away leaves in its old core's indexes.
pub(crate) struct Stub {
    /// The key the session now has.
    to: u64,
    /// Acknowledgements still missing before the stub may go.
    acks_left: usize,
    /// Its filters (still indexed under the old key).
    filters: Vec<String>,
    /// The session went to another node: its client id (the cluster thread knows where).
    remote: Option<Arc<str>>,
}

/// The outcome of claiming a client id.
pub(crate) struct Claim {
    /// The new session key.
    pub(crate) key: u64,
    previous: Option<u64>,
    reply: Option<oneshot::Receiver<Option<Box<Session>>>>,
}

impl Claim {
    /// Whether no session owned the client id before (on any core of this node).
    pub(crate) fn is_new(&self) -> bool {
        self.previous.is_none()
    }

    /// Whether the session may live on another node of a cluster: no core of this node had
    /// the client id, or it was leaving for another node.
    pub(crate) fn may_be_elsewhere(&self) -> bool {
        self.previous.is_none_or(crate::mesh::leaves_node)
    }

    /// The previous owner's session (None if there was none, it ended, or clean start
    /// discarded it) and, when it comes from a stub, the stub's key.
    pub(crate) async fn session(self) -> (Option<Box<Session>>, Option<u64>) {
        let Some(rx) = self.reply else {
            return (None, None);
        };
        match rx.await {
            Ok(Some(s)) => (Some(s), self.previous),
            _ => (None, None),
        }
    }
}

/// The `Moves` part of a core's state: its keys between their claim and the end of their
/// move, the stubs of sessions that moved away, and the takeovers waiting for a drain.
#[derive(Default)]
pub(crate) struct Moves {
    /// Keys between their claim and the end of their move.
    incoming: HashMap<u64, Incoming, ahash::RandomState>,
    /// Sessions that moved away and still forward.
    stubs: HashMap<u64, Stub, ahash::RandomState>,
    /// Takeovers waiting for the old connection's last packets.
    draining: HashMap<u64, TakeoverReq, ahash::RandomState>,
}

impl Moves {
    /// Some session whose install is pending holds forwarded deliveries (not written yet).
    pub(crate) fn holds_early(&self) -> bool {
        self.incoming.values().any(Incoming::holds_early)
    }

    /// No Local kept session `key` from its own `msg`. A session that came from another node
    /// counts it as a copy that came directly, so that the copy its old node's stub forwards
    /// (which no longer knows its publisher) pairs with it and is dropped.
    pub(crate) fn kept_from_own(&mut self, key: u64, msg: &Arc<Message>) {
        if self.incoming.is_empty() {
            return;
        }
        if let Some(twins) = self.incoming.get_mut(&key).and_then(|i| i.twins.as_mut()) {
            twins.first(msg, false);
        }
    }

    /// Whether a live delivery of `msg` to `key` is not a duplicate of one that came (or
    /// will come) through a stub.
    #[inline]
    pub(crate) fn first_sight(&mut self, key: u64, msg: &Arc<Message>) -> bool {
        if self.incoming.is_empty() {
            return true;
        }
        self.incoming
            .get_mut(&key)
            .is_none_or(|inc| inc.first_sight(msg))
    }
}

impl Shard {
    /// Claims `id` for a new CONNECT (synchronously: the new key is `Incoming` here before
    /// any other core can learn it) and asks the previous owner for the session. None when
    /// this core holds the most sessions it can (`slab.rs`).
    pub(crate) fn claim_client_id(
        self: &Rc<Self>,
        id: &Arc<str>,
        clean_start: bool,
    ) -> Option<Claim> {
        let key = self.new_key()?;
        self.st
            .borrow_mut()
            .moves
            .incoming
            .insert(key, Incoming::default());
        let previous = self.shared.registry.claim(id, key);
        let reply = previous.map(|k| {
            let (tx, rx) = oneshot::channel();
            let req = TakeoverReq {
                key: k,
                clean_start,
                successor: key,
                reply: tx,
            };
            if core_of(k) == self.id {
                self.handle_takeover(req);
            } else {
                self.send(usize::from(core_of(k)), MeshMsg::Takeover(req));
            }
            rx
        });
        Some(Claim {
            key,
            previous,
            reply,
        })
    }

    /// A takeover request for a key of this core: parked while that key's CONNECT or move is
    /// not complete, else answered now.
    pub(crate) fn handle_takeover(self: &Rc<Self>, req: TakeoverReq) {
        {
            let mut st = self.st.borrow_mut();
            // A session from another node that is only pairing copies moves on at once
            // (a takeover across nodes must not wait for the pairing window).
            let pairing = |inc: &Incoming| inc.installed && inc.twins.is_some();
            if let Some(inc) = st.moves.incoming.get_mut(&req.key).filter(|i| !pairing(i)) {
                // Only the successor in the registry's chain asks, once.
                inc.parked = Some(req);
                return;
            }
        }
        // A compact parked connection drains like any other: its `Conn` first.
        let live = self.revive(req.key);
        if live.is_some_and(|conn| conn.drain_for_takeover()) {
            self.st.borrow_mut().moves.draining.insert(req.key, req);
            return;
        }
        let s = self.take_session(req.key, req.clean_start, req.successor);
        // What the takeover queued (a will, interest changes) goes before the new CONNACK.
        self.flush_mesh();
        // A successor that is gone (its core stopped) loses the session with it.
        let _ = req.reply.send(s);
    }

    /// The connection of session `key` closed: answers a takeover that waited for its drain.
    pub(crate) fn drained(self: &Rc<Self>, key: u64) {
        let req = self.st.borrow_mut().moves.draining.remove(&key);
        if let Some(req) = req {
            self.handle_takeover(req);
        }
    }

    /// Delivers, in order, what was forwarded to `key` before its install.
    fn apply_early(&self, st: &mut State, key: u64, inc: &mut Incoming, now: Instant) {
        for f in std::mem::take(&mut inc.early) {
            let item = ToDeliver {
                msg: &f.msg,
                delivery: f.delivery,
                group: f.group,
                now,
                cache_heads: false,
            };
            self.deliver_to(st, key, item);
        }
    }

    /// After `install_session` of `key` (whose session came from stub `from`, if any):
    /// applies early forwards, then completes the move or answers a parked takeover.
    pub(crate) fn after_install(self: &Rc<Self>, key: u64, from: Option<u64>) {
        let now = Instant::now();
        let parked = {
            let mut guard = self.st.borrow_mut();
            let st = &mut *guard;
            let Some(mut inc) = st.moves.incoming.remove(&key) else {
                return;
            };
            self.apply_early(st, key, &mut inc, now);
            match from {
                Some(old) if core_of(old) != self.id => {
                    // Wait for the old core to drop its stub; keep deduplicating until then.
                    inc.installed = true;
                    st.moves.incoming.insert(key, inc);
                    None
                }
                _ => inc.parked,
            }
        };
        // Its held deliveries are written now: barrier answers that waited may go.
        self.persist_unpark();
        match from {
            Some(old) if core_of(old) == self.id => self.drop_stub(old),
            Some(old) => {
                let home = core_of(old);
                for c in 0..self.shared.cores() {
                    if c == usize::from(home) {
                        self.send(c, MeshMsg::MoveAck { old });
                    } else if c != usize::from(self.id) {
                        self.send(c, MeshMsg::MoveBarrier { old });
                    }
                }
            }
            None => {}
        }
        if let Some(req) = parked {
            self.handle_takeover(req);
        }
    }

    /// Leaves a stub for session `key` that moves to `to` (its subscriptions stay indexed).
    pub(crate) fn leave_stub(&self, st: &mut State, key: u64, to: u64, filters: Vec<String>) {
        let acks_left = if core_of(to) == self.id {
            0
        } else {
            self.shared.cores() - 1
        };
        st.moves.stubs.insert(
            key,
            Stub {
                to,
                acks_left,
                filters,
                remote: None,
            },
        );
    }

    /// Leaves a stub for session `key` of client `id`, which moves to another node: it
    /// forwards there for [`STUB_HOLD`], then goes.
    pub(crate) fn leave_remote_stub(self: &Rc<Self>, key: u64, id: Arc<str>, filters: Vec<String>) {
        let stub = Stub {
            to: key,
            acks_left: 0,
            filters,
            remote: Some(id),
        };
        self.st.borrow_mut().moves.stubs.insert(key, stub);
        let core = self.clone();
        monoio::spawn(async move {
            monoio::time::sleep(STUB_HOLD).await;
            core.drop_stub(key);
        });
    }

    /// A live delivery matched the stub `key`: pass it on to where the session went.
    /// Returns false if `key` is no stub.
    pub(crate) fn forward_from_stub(&self, st: &mut State, key: u64, item: ToDeliver<'_>) -> bool {
        let Some(stub) = st.moves.stubs.get(&key) else {
            return false;
        };
        let to = stub.to;
        if let Some(client_id) = &stub.remote {
            let (client_id, msg) = (client_id.clone(), item.msg.clone());
            let delivery = item.delivery;
            self.to_cluster(ToCluster::Forward {
                client_id,
                msg,
                delivery,
            });
        } else if core_of(to) == self.id {
            self.forwarded(st, to, item);
        } else {
            self.send(
                usize::from(core_of(to)),
                MeshMsg::Forward {
                    key: to,
                    msg: item.msg.clone(),
                    delivery: item.delivery,
                    group: item.group,
                },
            );
        }
        true
    }

    /// A delivery forwarded by a stub to `key` on this core.
    pub(crate) fn forwarded(&self, st: &mut State, key: u64, item: ToDeliver<'_>) {
        if let Some(inc) = st.moves.incoming.get_mut(&key) {
            if !inc.first_sight(item.msg) {
                return;
            }
            if !inc.installed {
                inc.early.push(Forwarded {
                    msg: item.msg.clone(),
                    delivery: item.delivery,
                    group: item.group,
                });
                return;
            }
        }
        // Installed, or moved on again (then `deliver_to` finds its stub), or ended. The
        // head cache belongs to the fan-out that reached the stub, not to this session.
        let item = ToDeliver {
            cache_heads: false,
            ..item
        };
        self.deliver_to(st, key, item);
    }

    /// A delivery for client `id`'s session from its stub on another node: to the session's
    /// core (through the registry), paired against what reached it directly.
    pub(crate) fn forwarded_from_node(self: &Rc<Self>, id: &str, item: ToDeliver<'_>) {
        let Some(key) = self.shared.registry.owner(id) else {
            return;
        };
        if core_of(key) != self.id {
            let m = crate::mesh::cluster::FromCluster::Forward {
                client_id: id.into(),
                msg: item.msg.clone(),
                delivery: item.delivery,
            };
            self.send(usize::from(core_of(key)), MeshMsg::Cluster(m));
            return;
        }
        let mut guard = self.st.borrow_mut();
        let st = &mut *guard;
        if let Some(inc) = st.moves.incoming.get_mut(&key) {
            let twins = inc.twins.get_or_insert_with(Default::default);
            if !twins.first(item.msg, true) {
                return;
            }
            if !inc.installed {
                inc.early.push(Forwarded {
                    msg: item.msg.clone(),
                    delivery: item.delivery,
                    group: None,
                });
                return;
            }
        }
        self.deliver_to(st, key, item);
    }

    /// After `install_session` of `key`, whose session came from another node: applies the
    /// early forwards and pairs copies for a while (module doc).
    pub(crate) fn after_remote_install(self: &Rc<Self>, key: u64) {
        let now = Instant::now();
        let parked = {
            let mut guard = self.st.borrow_mut();
            let st = &mut *guard;
            let Some(mut inc) = st.moves.incoming.remove(&key) else {
                return;
            };
            self.apply_early(st, key, &mut inc, now);
            inc.installed = true;
            inc.twins.get_or_insert_with(Default::default);
            let parked = inc.parked.take();
            st.moves.incoming.insert(key, inc);
            parked
        };
        self.persist_unpark();
        if let Some(req) = parked {
            self.handle_takeover(req);
        }
        let core = self.clone();
        monoio::spawn(async move {
            monoio::time::sleep(STUB_HOLD + TWINS_HOLD).await;
            core.move_done(key);
        });
    }

    /// One core acknowledged the move away from stub `old`.
    pub(crate) fn move_acked(self: &Rc<Self>, old: u64) {
        let done = {
            let mut st = self.st.borrow_mut();
            match st.moves.stubs.get_mut(&old) {
                Some(stub) => {
                    stub.acks_left = stub.acks_left.saturating_sub(1);
                    stub.acks_left == 0
                }
                None => false,
            }
        };
        if done {
            self.drop_stub(old);
        }
    }

    /// Removes stub `old` from the indexes and tells the new owner no forwards will follow.
    fn drop_stub(self: &Rc<Self>, old: u64) {
        let Some(stub) = self.st.borrow_mut().moves.stubs.remove(&old) else {
            return;
        };
        for f in &stub.filters {
            self.unindex_subscription(f, old);
        }
        if stub.remote.is_none() && core_of(stub.to) != self.id {
            self.send(
                usize::from(core_of(stub.to)),
                MeshMsg::MoveDone { key: stub.to },
            );
        }
    }

    /// The stub that forwarded to `key` is gone: stop deduplicating, answer a parked takeover.
    pub(crate) fn move_done(self: &Rc<Self>, key: u64) {
        let parked = {
            let mut st = self.st.borrow_mut();
            let incoming = &mut st.moves.incoming;
            match incoming.get(&key) {
                Some(inc) if inc.installed => incoming.remove(&key).and_then(|i| i.parked),
                _ => None,
            }
        };
        if let Some(req) = parked {
            self.handle_takeover(req);
        }
    }
}
