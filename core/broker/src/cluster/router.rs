//! Routing between nodes, on the cluster thread: what this node tells the others (its
//! interest, its shared-group counts, its messages for them, its retained changes) and what
//! it does with theirs (into every core's replicas; their messages to one core each).
//!
//! A node is to the cluster what a core is to the node. The cores' [`ToCluster`] messages
//! arrive through the [`Hub`]; a filter crosses to the other nodes only when this node's count
//! of cores with subscribers goes 0 <-> 1 (each core already tells only its own 0 <-> 1), and
//! a shared group's member count when it changes. Those are state: a link that comes up
//! starts with all of it (`Sync` .. `SyncEnd`) and the receiver replaces what it had from
//! that node by the difference, so nothing sent while a link was down matters. Messages and
//! retained changes are sequenced per link (`send_queue.rs`): written again after a restart
//! until acknowledged, dropped by number if the receiver had them, so a link that comes back
//! loses and duplicates nothing; a QoS 0 message for a node whose link is down is dropped
//! (counted), as a bridge drops QoS 0 while its remote is away.
//!
//! A joining node gets every retained message each node set last (the topics a node set and
//! nobody set or cleared after it, which every node keeps from its cores' `Retain`), so
//! retained messages of every node are visible on every node.
//!
//! A node's messages reach a receiving core chosen by the sending core (`core % cores`), so
//! one publisher's messages stay in one queue end to end and keep their order.
//!
//! The links also carry the requests and answers of a session takeover across nodes
//! (`takeover.rs`), which the router hands to its [`Takeovers`] and to the cores.

use super::carry::{decode_message, encode_message, Carry};
use super::frame::{ForwardHead, Frame};
use super::membership::Members;
use super::send_queue::SendQueue;
use super::status::{Direction, StatusBoard};
use super::takeover::{HeldHere, Start, Takeovers, Wire};
use crate::cluster::clientids::Reply;
use crate::mesh::cluster::{FromCluster, Hub, ToCluster, STUB_HOLD};
use crate::mesh::{ApiCmd, Mailbox, MeshMsg};
use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify};
use uringmq_codec::{ByteStr, QoS};
use uringmq_session::{Delivery, Message};

/// Bytes of sequenced frames a link holds for a peer (written or not, until acknowledged).
pub const MAX_QUEUED_BYTES: usize = 64 << 20;

/// The cores' side, for the cluster thread.
pub struct CoreLink {
    /// The cores' queue to this thread.
    pub hub: Arc<Hub>,
    /// The cores' mailboxes.
    pub mailboxes: Arc<[Mailbox]>,
    /// The configured bridges, which run on one node of the cluster (`bridges.rs`).
    pub bridges: Arc<[crate::config::BridgeConfig]>,
    /// Whether a core holds a client id (the registry), before its owner is told to forget it.
    pub held: Arc<HeldHere>,
}

/// Routing state of the cluster thread.
pub struct Router {
    cores: CoreLink,
    board: Arc<StatusBoard>,
    /// This node's incarnation: a peer that sees another one starts its numbering again.
    epoch: u64,
    /// This node's name.
    me: Arc<str>,
    /// The live members (for the owner of a client id).
    members: watch::Receiver<Members>,
    /// Sessions taken away on a core for another node, on their way back to this thread.
    given: mpsc::UnboundedSender<Given>,
    given_rx: Mutex<Option<mpsc::UnboundedReceiver<Given>>>,
    st: Mutex<State>,
}

/// A session a core took away for peer `peer`'s request `req`: its image, if any.
struct Given {
    peer: String,
    req: u64,
    image: Option<Vec<u8>>,
}

/// How often fetches are checked against their deadlines and the members.
const TICK: Duration = Duration::from_millis(100);

#[derive(Default)]
struct State {
    /// Every peer ever seen, by name: its id in the cores' indexes (never reused).
    ids: HashMap<String, u16>,
    peers: Peers,
    mine: Mine,
    buf: BytesMut,
    takeovers: Takeovers,
    /// Client ids whose session a core took away for a peer, with that peer and until when
    /// their stub may forward to it.
    moved: HashMap<Arc<str>, (u16, Instant)>,
}

/// The peers by id: looked up for every message sent or received, so not with SipHash.
type Peers = HashMap<u16, Peer, ahash::RandomState>;

/// The links as the takeovers see them: a frame to a peer whose link is up, written once.
struct Links<'a> {
    ids: &'a HashMap<String, u16>,
    peers: &'a mut Peers,
}

impl Wire for Links<'_> {
    fn send(&mut self, peer: &str, f: &Frame) -> bool {
        let Some(p) = self.ids.get(peer).and_then(|id| self.peers.get_mut(id)) else {
            return false;
        };
        if !p.up {
            return false;
        }
        p.out.push_once(encoded(f));
        p.wake.notify_one();
        true
    }
}

impl State {
    fn links(&mut self) -> (Links<'_>, &mut Takeovers) {
        let links = Links {
            ids: &self.ids,
            peers: &mut self.peers,
        };
        (links, &mut self.takeovers)
    }
}

/// What this node has.
#[derive(Default)]
struct Mine {
    /// Filter -> cores with subscribers.
    interest: HashMap<Arc<str>, u32>,
    /// Group -> members per core.
    shared: HashMap<Arc<str>, HashMap<u16, u32>>,
    /// Retained messages set here that nobody set or cleared since.
    retained: HashMap<ByteStr, Arc<Message>>,
}

struct Peer {
    name: String,
    out: SendQueue,
    /// The link this node dialed is up.
    up: bool,
    /// Wakes the link's writer.
    wake: Arc<Notify>,
    inbound: Inbound,
}

/// What a peer told this node.
#[derive(Default)]
struct Inbound {
    /// The inbound connection now served (an older one stops).
    generation: u64,
    epoch: u64,
    /// Highest sequence number handed to the cores.
    last_seq: u64,
    interest: HashSet<Arc<str>>,
    shared: HashMap<Arc<str>, u32>,
    /// Between `Sync` and `SyncEnd`: the state being restated.
    sync: Option<Restated>,
    messages: u64,
    bytes: u64,
}

/// A peer's interest and shared-group counts as it restates them after `Sync`.
type Restated = (HashSet<Arc<str>>, HashMap<Arc<str>, u32>);

/// Messages for the cores, pushed together per core.
pub struct ToCores(Vec<Vec<MeshMsg>>);

impl ToCores {
    fn all(&mut self, m: impl Fn() -> MeshMsg) {
        for q in &mut self.0 {
            q.push(m());
        }
    }
}

impl Router {
    /// A router for this node (`me`) and its cores; `members` is the live view.
    pub fn new(
        cores: CoreLink,
        board: Arc<StatusBoard>,
        me: &str,
        members: watch::Receiver<Members>,
    ) -> Self {
        let (given, given_rx) = mpsc::unbounded_channel();
        Router {
            cores,
            board,
            epoch: rand::random::<u64>() | 1,
            me: me.into(),
            members,
            given,
            given_rx: Mutex::new(Some(given_rx)),
            st: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the cores' messages until the runtime ends.
    pub async fn run(self: Arc<Self>) {
        loop {
            self.cores.hub.wait().await;
            self.drain();
        }
    }

    /// Applies everything the cores queued, then wakes the writers with something to write.
    fn drain(&self) {
        let now = Instant::now();
        let mut guard = self.lock();
        let st = &mut *guard;
        self.cores.hub.drain(|m| match m {
            ToCluster::Interest { filter, add } => st.my_interest(filter, add),
            ToCluster::Shared {
                core,
                group,
                members,
            } => st.my_shared(core, group, members),
            ToCluster::Publish {
                core,
                node,
                msg,
                group,
                again,
            } => st.publish(
                node,
                &msg,
                Carry::Publish {
                    core,
                    group: group.as_deref(),
                    again,
                },
                now,
            ),
            ToCluster::Retain(msg) => st.retain(&msg, now),
            ToCluster::Forward {
                client_id,
                msg,
                delivery,
            } => st.forward(&client_id, &msg, &delivery, now),
            ToCluster::Fetch {
                id,
                clean_start,
                reply,
            } => {
                let start = Start {
                    me: &self.me,
                    id,
                    clean_start,
                    reply,
                    now,
                };
                let view = self.members.borrow();
                let (mut links, takeovers) = st.links();
                takeovers.start(start, view.keys().map(String::as_str), &mut links);
            }
            ToCluster::Ended(id) => st.takeovers.ended(id),
        });
        {
            let view = self.members.borrow();
            let (mut links, takeovers) = st.links();
            let members = view.keys().map(String::as_str);
            takeovers.send_forgets(&self.me, members, &*self.cores.held, &mut links);
        }
        for p in st.peers.values() {
            if p.out.has_unwritten() {
                p.wake.notify_one();
            }
            self.show_sent(p);
        }
    }

    /// Copies a peer's send counters to the status.
    fn show_sent(&self, p: &Peer) {
        let s = p.out.stats;
        self.board.link(&p.name, Direction::Outbound, |l| {
            l.messages = s.messages;
            l.bytes = s.bytes;
            l.resent = s.resent;
            l.dropped = s.dropped;
        });
    }

    /// The link to `peer` came up: it starts with this node's state, then everything not
    /// acknowledged. Returns the peer's id and its writer's wake-up.
    pub fn link_up(&self, peer: &str) -> (u16, Arc<Notify>) {
        let mut guard = self.lock();
        let st = &mut *guard;
        let id = st.peer(peer);
        let start = st.start_frames(self.epoch);
        let p = st.peers.get_mut(&id).expect("just added");
        p.out.rewind(start);
        p.up = true;
        p.wake.notify_one();
        self.show_sent(p);
        (id, p.wake.clone())
    }

    /// The link to peer `id` went down.
    pub fn link_down(&self, id: u16) {
        if let Some(p) = self.lock().peers.get_mut(&id) {
            p.up = false;
        }
    }

    /// Appends what the link to peer `id` has to write to `out`.
    pub fn take_out(&self, id: u16, out: &mut BytesMut) {
        if let Some(p) = self.lock().peers.get_mut(&id) {
            p.out.take_unwritten(out);
        }
    }

    /// Peer `id` acknowledged everything up to `seq`.
    pub fn acked(&self, id: u16, seq: u64) {
        if let Some(p) = self.lock().peers.get_mut(&id) {
            p.out.ack(seq);
        }
    }

    /// An inbound connection from `peer` is authenticated: returns the peer's id and the
    /// connection's generation (an older connection of that peer stops).
    pub fn inbound_up(&self, peer: &str) -> (u16, u64) {
        let mut st = self.lock();
        let id = st.peer(peer);
        let p = st.peers.get_mut(&id).expect("just added");
        p.inbound.generation += 1;
        (id, p.inbound.generation)
    }

    /// Whether inbound connection `generation` of peer `id` is still the one served.
    pub fn inbound_current(&self, id: u16, generation: u64) -> bool {
        self.lock()
            .peers
            .get(&id)
            .is_some_and(|p| p.inbound.generation == generation)
    }

    /// An empty batch for the cores.
    pub fn to_cores(&self) -> ToCores {
        ToCores(
            (0..self.cores.mailboxes.len())
                .map(|_| Vec::new())
                .collect(),
        )
    }

    /// Pushes a batch to the cores.
    pub fn flush(&self, batch: &mut ToCores) {
        for (core, q) in batch.0.iter_mut().enumerate() {
            match q.len() {
                0 => {}
                1 => self.cores.mailboxes[core].push(q.pop().expect("one")),
                _ => self.cores.mailboxes[core].push(MeshMsg::Batch(std::mem::take(q))),
            }
        }
    }

    /// Applies a routing frame from peer `id`; returns the highest sequence number handed
    /// over so far. An `Err`: a frame that has no place on an inbound link.
    pub fn receive(&self, id: u16, frame: Frame, out: &mut ToCores) -> Result<u64, Frame> {
        let now = Instant::now();
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(p) = st.peers.get_mut(&id) else {
            return Ok(0);
        };
        let frame = match frame {
            Frame::IdClaim { .. }
            | Frame::IdClaimed { .. }
            | Frame::SessionTake { .. }
            | Frame::SessionGiven { .. }
            | Frame::IdForget { .. } => {
                let (from, last) = (p.name.clone(), p.inbound.last_seq);
                self.takeover_frame(st, &from, frame, now);
                return Ok(last);
            }
            other => other,
        };
        let cores = out.0.len();
        match frame {
            Frame::Sync { epoch } => p.inbound.sync_begin(epoch),
            Frame::SyncEnd => p.inbound.sync_end(id, out),
            Frame::Interest { filter, add } => p.inbound.interest(id, filter.into(), add, out),
            Frame::SharedCount { group, members } => {
                p.inbound.shared(id, group.into(), members, out)
            }
            Frame::Publish {
                seq,
                core,
                group,
                again,
                packet,
            } => {
                if let Some(msg) = p.inbound.message(seq, packet, now) {
                    let group = group.map(Arc::from);
                    let to = usize::from(core) % cores;
                    let m = FromCluster::Publish { msg, group, again };
                    out.0[to].push(MeshMsg::Cluster(m));
                }
            }
            Frame::Forward {
                seq,
                client_id,
                qos,
                retain,
                sub_ids,
                packet,
            } => {
                if let Some(msg) = p.inbound.message(seq, packet, now) {
                    let delivery = Delivery {
                        qos: QoS::from_u8(qos).unwrap_or(QoS::AtMostOnce),
                        retain,
                        sub_ids: sub_ids.into_iter().collect(),
                        store_id: 0,
                    };
                    // The core where recovery would put it finds the session's core.
                    let to = crate::store::home_shard(&client_id, cores);
                    out.0[to].push(MeshMsg::Cluster(FromCluster::Forward {
                        client_id: client_id.into(),
                        msg,
                        delivery,
                    }));
                }
            }
            Frame::Retain { seq, packet } => {
                if let Some(msg) = p.inbound.message(seq, packet, now) {
                    // Set or cleared elsewhere since: no longer this node's to restate.
                    st.mine.retained.remove(&msg.topic);
                    out.all(|| MeshMsg::Retain {
                        msg: msg.clone(),
                        from: crate::mesh::FROM_NODE,
                    });
                }
            }
            other => return Err(other),
        }
        Ok(st.peers.get(&id).map_or(0, |p| p.inbound.last_seq))
    }

    /// Copies what peer `id`'s inbound link brought (its routes, messages, bytes, and the
    /// `frames` read since the last call) to the status: once per batch read, not per frame.
    pub fn show_received(&self, id: u16, frames: u64) {
        let st = self.lock();
        let Some(p) = st.peers.get(&id) else {
            return;
        };
        let routes = (p.inbound.interest.len() + p.inbound.shared.len()) as u64;
        self.board.received(&p.name, routes, |l| {
            l.frames_in += frames;
            l.messages = p.inbound.messages;
            l.bytes = p.inbound.bytes;
        });
    }

    /// A takeover frame from peer `from`: a request to this node as an id's owner or as the
    /// node that holds a session, or an answer to one of this node's fetches.
    fn takeover_frame(&self, st: &mut State, from: &str, frame: Frame, now: Instant) {
        if let Frame::SessionTake {
            req,
            client_id,
            clean_start,
        } = frame
        {
            let id: Arc<str> = client_id.into();
            if let Some(peer) = st.ids.get(from).copied() {
                // Its stub forwards to that node for a while (`shard/moves.rs`).
                st.moved.insert(id.clone(), (peer, now + STUB_HOLD * 2));
            }
            return self.take_away(from, req, id, clean_start);
        }
        let (mut links, takeovers) = st.links();
        match frame {
            Frame::IdClaim { req, client_id } => {
                let previous = takeovers.claim(&client_id, from).map(|n| n.to_string());
                links.send(from, &Frame::IdClaimed { req, previous });
            }
            Frame::IdClaimed { req, previous } => {
                let reply = Reply::Claimed(previous.map(Arc::from));
                takeovers.answer(from, req, reply, now, &mut links);
            }
            Frame::SessionGiven { req, image } => {
                takeovers.answer(from, req, Reply::Given(image), now, &mut links);
            }
            Frame::IdForget { client_ids } => takeovers.forget(from, &client_ids),
            _ => {}
        }
    }

    /// Peer `peer` asks for `id`'s session: a core takes it away (from any core of this
    /// node: the registry leads to it) and the image goes back through [`Router::serve_given`].
    fn take_away(&self, peer: &str, req: u64, id: Arc<str>, clean_start: bool) {
        let core = crate::store::home_shard(&id, self.cores.mailboxes.len());
        let (given, peer) = (self.given.clone(), peer.to_owned());
        let reply = Box::new(move |image| {
            let _ = given.send(Given { peer, req, image });
        });
        self.cores.mailboxes[core].push(MeshMsg::Api(ApiCmd::Export {
            id,
            clean_start,
            reply,
        }));
    }

    /// Sends the sessions the cores took away to the peers that asked (run once).
    pub async fn serve_given(self: Arc<Self>) {
        let Some(mut rx) = self.given_rx.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        while let Some(g) = rx.recv().await {
            let image = g.image.map(Bytes::from);
            let mut st = self.lock();
            let (mut links, _) = st.links();
            // A peer whose link is down lost its CONNECT's wait: it ends by its deadline.
            links.send(&g.peer, &Frame::SessionGiven { req: g.req, image });
        }
    }

    /// Ends this node's fetches past their deadline or waiting for a node that left; after a
    /// membership change, drops the directory's ids this node no longer owns; shows the
    /// directory's size.
    pub async fn tick_takeovers(self: Arc<Self>) {
        let mut every = tokio::time::interval(TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut changes = self.members.clone();
        loop {
            every.tick().await;
            let mut st = self.lock();
            let changed = changes.has_changed().unwrap_or(false);
            let view = changes.borrow_and_update();
            let now = Instant::now();
            st.moved.retain(|_, (_, until)| *until > now);
            let members = view.keys().map(String::as_str);
            if changed {
                let gone = st.takeovers.keep_owned(&self.me, members.clone());
                if gone > 0 {
                    tracing::info!(gone, "cluster: client ids owned elsewhere now dropped");
                }
            }
            let (mut links, takeovers) = st.links();
            takeovers.tick(now, members, &mut links);
            self.board.set_client_ids(takeovers.directory_len() as u64);
        }
    }

    /// `peer` left the cluster: its interest and groups leave every core, its queue goes.
    pub fn forget(&self, peer: &str) {
        let mut batch = self.to_cores();
        {
            let mut st = self.lock();
            let Some(id) = st.ids.get(peer).copied() else {
                return;
            };
            let Some(p) = st.peers.remove(&id) else {
                return;
            };
            for filter in p.inbound.interest {
                batch.all(|| {
                    cluster_msg(FromCluster::Interest {
                        node: id,
                        filter: filter.clone(),
                        add: false,
                    })
                });
            }
            for group in p.inbound.shared.into_keys() {
                batch.all(|| {
                    cluster_msg(FromCluster::Shared {
                        node: id,
                        group: group.clone(),
                        members: 0,
                    })
                });
            }
        }
        self.flush(&mut batch);
    }
}

fn cluster_msg(m: FromCluster) -> MeshMsg {
    MeshMsg::Cluster(m)
}

fn encoded(f: &Frame) -> Bytes {
    let mut b = BytesMut::new();
    f.encode(&mut b);
    b.freeze()
}

impl State {
    /// The id of `peer`, added if new.
    fn peer(&mut self, name: &str) -> u16 {
        let next = self.ids.len() as u16;
        let id = *self.ids.entry(name.to_owned()).or_insert(next);
        self.peers.entry(id).or_insert_with(|| Peer {
            name: name.to_owned(),
            out: SendQueue::new(MAX_QUEUED_BYTES),
            up: false,
            wake: Arc::default(),
            inbound: Inbound::default(),
        });
        id
    }

    /// Queues a state frame for every peer whose link is up (the others get it in their
    /// link's start).
    fn tell_linked(&mut self, f: &Frame) {
        let bytes = encoded(f);
        for p in self.peers.values_mut().filter(|p| p.up) {
            p.out.push_state(bytes.clone());
        }
    }

    fn my_interest(&mut self, filter: Arc<str>, add: bool) {
        let cores = self.mine.interest.entry(filter.clone()).or_default();
        let before = *cores;
        *cores = if add {
            before + 1
        } else {
            before.saturating_sub(1)
        };
        let now = *cores;
        if now == 0 {
            self.mine.interest.remove(&filter);
        }
        if (before == 0) != (now == 0) {
            self.tell_linked(&Frame::Interest {
                filter: filter.to_string(),
                add,
            });
        }
    }

    fn my_shared(&mut self, core: u16, group: Arc<str>, members: u32) {
        let per_core = self.mine.shared.entry(group.clone()).or_default();
        let before: u32 = per_core.values().sum();
        if members == 0 {
            per_core.remove(&core);
        } else {
            per_core.insert(core, members);
        }
        let now: u32 = per_core.values().sum();
        if now == 0 {
            self.mine.shared.remove(&group);
        }
        if before != now {
            self.tell_linked(&Frame::SharedCount {
                group: group.to_string(),
                members: now,
            });
        }
    }

    fn publish(&mut self, node: u16, msg: &Message, carry: Carry<'_>, now: Instant) {
        let Some(p) = self.peers.get_mut(&node) else {
            return;
        };
        if !p.up && msg.qos == QoS::AtMostOnce {
            p.out.drop_one();
            return;
        }
        p.out.push_seq(&mut self.buf, |seq, b| {
            encode_message(b, seq, carry, msg, now)
        });
    }

    /// A delivery from the stub of `client_id`'s session: to the node it moved to (dropped
    /// when it is not known, or the stub outlived the time it may forward).
    fn forward(&mut self, client_id: &str, msg: &Message, delivery: &Delivery, now: Instant) {
        let Some((node, _)) = self.moved.get(client_id).copied() else {
            return;
        };
        let Some(p) = self.peers.get_mut(&node) else {
            return;
        };
        let head = ForwardHead {
            client_id,
            qos: delivery.qos as u8,
            retain: delivery.retain,
            sub_ids: &delivery.sub_ids,
        };
        p.out.push_seq(&mut self.buf, |seq, b| {
            encode_message(b, seq, Carry::Forward(head), msg, now)
        });
    }

    fn retain(&mut self, msg: &Arc<Message>, now: Instant) {
        if msg.payload.is_empty() {
            self.mine.retained.remove(&msg.topic);
        } else {
            self.mine.retained.insert(msg.topic.clone(), msg.clone());
        }
        for p in self.peers.values_mut() {
            p.out.push_seq(&mut self.buf, |seq, b| {
                encode_message(b, seq, Carry::Retain, msg, now)
            });
        }
    }

    /// What a link starts with: this node's epoch, interest and groups, and the retained
    /// messages it set last.
    fn start_frames(&mut self, epoch: u64) -> Vec<Bytes> {
        let mut frames = vec![encoded(&Frame::Sync { epoch })];
        for filter in self.mine.interest.keys() {
            frames.push(encoded(&Frame::Interest {
                filter: filter.to_string(),
                add: true,
            }));
        }
        for (group, per_core) in &self.mine.shared {
            frames.push(encoded(&Frame::SharedCount {
                group: group.to_string(),
                members: per_core.values().sum(),
            }));
        }
        frames.push(encoded(&Frame::SyncEnd));
        let now = Instant::now();
        for msg in self.mine.retained.values() {
            self.buf.clear();
            if encode_message(&mut self.buf, 0, Carry::Retain, msg, now) {
                frames.push(self.buf.split().freeze());
            }
        }
        frames
    }
}

impl Inbound {
    fn sync_begin(&mut self, epoch: u64) {
        if epoch != self.epoch {
            // Another incarnation of the peer: its numbering starts again.
            self.epoch = epoch;
            self.last_seq = 0;
        }
        self.sync = Some(Default::default());
    }

    /// The peer restated its state: the cores get the difference.
    fn sync_end(&mut self, node: u16, out: &mut ToCores) {
        let Some((interest, shared)) = self.sync.take() else {
            return;
        };
        let gone: Vec<_> = self.interest.difference(&interest).cloned().collect();
        for filter in gone {
            self.interest(node, filter, false, out);
        }
        for filter in interest {
            self.interest(node, filter, true, out);
        }
        let left: Vec<_> = self
            .shared
            .keys()
            .filter(|g| !shared.contains_key(*g))
            .cloned()
            .collect();
        for group in left {
            self.shared(node, group, 0, out);
        }
        for (group, members) in shared {
            self.shared(node, group, members, out);
        }
    }

    fn interest(&mut self, node: u16, filter: Arc<str>, add: bool, out: &mut ToCores) {
        if let Some((set, _)) = &mut self.sync {
            if add {
                set.insert(filter);
            } else {
                set.remove(&filter);
            }
            return;
        }
        let changed = if add {
            self.interest.insert(filter.clone())
        } else {
            self.interest.remove(&filter)
        };
        if changed {
            out.all(|| {
                cluster_msg(FromCluster::Interest {
                    node,
                    filter: filter.clone(),
                    add,
                })
            });
        }
    }

    fn shared(&mut self, node: u16, group: Arc<str>, members: u32, out: &mut ToCores) {
        if let Some((_, counts)) = &mut self.sync {
            counts.insert(group, members);
            return;
        }
        let before = if members == 0 {
            self.shared.remove(&group)
        } else {
            self.shared.insert(group.clone(), members)
        };
        if before.unwrap_or(0) != members {
            out.all(|| {
                cluster_msg(FromCluster::Shared {
                    node,
                    group: group.clone(),
                    members,
                })
            });
        }
    }

    /// A sequenced frame's message, unless already handed over (`seq` 0: never a duplicate).
    fn message(&mut self, seq: u64, packet: Bytes, now: Instant) -> Option<Arc<Message>> {
        if seq != 0 {
            if seq <= self.last_seq {
                return None;
            }
            self.last_seq = seq;
        }
        self.messages += 1;
        self.bytes += packet.len() as u64;
        decode_message(packet, now).map(Arc::new)
    }
}
