//! One core (shard): a pinned thread with its own monoio runtime that owns its connections, its
//! sessions, its replicas of the interest index and the retained store, and its timers.
//!
//! All state lives in one `RefCell<State>` borrowed only inside synchronous sections (never
//! across an `.await`), so there are no locks on the message path. `State` is four owned parts
//! with private fields, each defined beside the code that keeps its invariants: `Sessions`
//! (`sessions.rs`), `Routes` (`route.rs`), `Moves` (`moves.rs`) and `Conns` (`conns.rs`).
//!
//! Owns: the `Shard` and its `State` (here), its life and stop (`run.rs`, and the last
//! exchange with the other cores before the store closes, `settle.rs`), its side of the mesh
//! (`inbox.rs`), routing, the indexes and the retained replica (`route.rs`), retained
//! messages racing a new subscription on another core (`fresh.rs`), delivery to a
//! session (`deliver.rs`), sessions, their keys, timers and end (`sessions.rs`), session moves
//! between cores (`moves.rs`), sessions imaged for or imported from another node
//! (`import.rs`), its side of the cluster (`cluster.rs`), its connections (`conns.rs`),
//! in-process API commands (`api_cmds.rs`), the timer sweep (`timers.rs`), its counters
//! (`stats.rs`, `histogram.rs`) and what all cores share (`shared.rs`).
//!
//! The one import cycle of the crate is between this module and `conn` (and `bridge`, a
//! client connection of its own): a shard owns its connections (`Rc<Conn>` in its sessions'
//! sinks, `Rc<Link>` for a bridge) and a connection's task works on its shard (`Rc<Shard>`). Everything else these two use sits below them (`config`, `api`, `net`,
//! `security`, `mesh`, `routing`); `ops` and `embed` sit above.

mod api_cmds;
mod cluster;
mod conns;
mod deliver;
mod fresh;
pub(crate) mod histogram;
pub(crate) mod import;
mod inbox;
pub(crate) mod moves;
mod notify;
pub(crate) mod persist;
mod route;
mod run;
mod sessions;
mod settle;
mod slab;
pub(crate) use crate::mesh::FULL;
mod shared;
pub(crate) mod shared_store;
mod stats;
pub(crate) mod timers;

pub(crate) use deliver::ToDeliver;
pub(crate) use notify::LocalNotify;
pub(crate) use run::run_core;
pub(crate) use shared::Shared;
pub(crate) use stats::{
    add, control_packets_written, count_control_packet, sample_delivery, CoreStats,
};

use crate::config::Config;
use crate::conn::Conn;
use crate::mesh::{ApiSink, MeshMsg};
use conns::Conns;
use moves::Moves;
use route::Routes;
use sessions::Sessions;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::warn;
use uringmq_session::Session;

/// Where a session's deliveries go.
pub(crate) enum Sink {
    /// No connection: persistent session waiting for its client. Holds the index of the
    /// listener it last connected through (`Security::listener_index`), so queued deliveries
    /// are checked against that listener's ACL; two bytes inside the enum's padding, where a
    /// name would cost an allocation per session.
    Offline(u16),
    /// A client connection.
    Conn(Rc<Conn>),
    /// A client connection parked and detached, as a compact record instead of its `Conn`
    /// (`conn/parked.rs`); built again by [`Shard::revive`] when anything needs it.
    Parked(Box<crate::conn::Parked>),
    /// An in-process subscription.
    Api(Arc<ApiSink>),
    /// The local session of a bridge on this core (`crate::bridge`).
    Bridge(Rc<crate::bridge::Link>),
}

// The listener index of `Offline` fits beside the tag: a sink stays two words.
const _: () = assert!(std::mem::size_of::<Sink>() == 2 * std::mem::size_of::<usize>());

/// A session and where its messages go.
pub(crate) struct Entry {
    /// Boxed: a `Session` is several hundred bytes, and an entry sits in a slot of the
    /// core's slab (`slab.rs`), which would otherwise cost that per slot, free ones too.
    pub(crate) s: Box<Session>,
    pub(crate) sink: Sink,
    /// The ACL rules of the token its current (or last) connection authenticated with (a
    /// JWT's ACL claim): they replace the ACL file for this session. Here rather than in the
    /// `Session`, which stays in its 80-byte allocation class.
    pub(crate) token_acl: Option<Arc<uringmq_auth::AclFile>>,
}

/// Everything a core owns, borrowed in short synchronous sections. Four parts, each with its
/// fields private to its module and its invariants kept by its own methods; a section that
/// needs two of them borrows both by field (`let State { sessions, routes, .. } = st`).
pub(crate) struct State {
    /// Sessions by key, the key generator and the offline sessions' timers (`sessions.rs`).
    pub(crate) sessions: Sessions,
    /// The local index, the interest and shared replicas, the retained replica (`route.rs`).
    pub(crate) routes: Routes,
    /// Sessions moving between connections and cores (`moves.rs`).
    pub(crate) moves: Moves,
    /// This core's connections by id (`conns.rs`).
    pub(crate) conns: Conns,
}

/// One core.
pub(crate) struct Shard {
    pub(crate) id: u16,
    /// The core itself, for what it builds that holds it (a revived connection, `conns.rs`).
    me: std::rc::Weak<Shard>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) st: RefCell<State>,
    pub(crate) stopping: Cell<bool>,
    /// Inside `drain_mesh`.
    draining: Cell<bool>,
    /// Live connection and listener tasks; the core ends when it reaches 0 after Stop.
    tasks: Cell<usize>,
    tasks_done: LocalNotify,
    /// Wakes the timer task on stop.
    pub(crate) stop_signal: LocalNotify,
    listener_fds: RefCell<Vec<std::os::fd::RawFd>>,
    /// Messages for each other core, pushed together by `flush_mesh` (see `send`).
    outbox: RefCell<Vec<Vec<MeshMsg>>>,
    /// Wakes the flush task.
    outbox_ready: LocalNotify,
    /// Messages for the cluster thread, pushed with the outbox (`cluster.rs`).
    cluster_out: RefCell<Vec<crate::mesh::cluster::ToCluster>>,
    /// Where idle connections park (`None`: disabled, or no epoll set could be made).
    pub(crate) hibernation: Option<crate::conn::hibernate::Hibernation>,
    /// The poller failed: nothing parks any more.
    pub(crate) hibernation_off: Cell<bool>,
    /// Every connection task is done: the flush task ends (and the hibernation poller, woken by
    /// `poller_stop`), so that nothing keeps the core (and its descriptors) alive after its
    /// runtime.
    pub(crate) finished: Cell<bool>,
    /// Wakes the hibernation poller when the core is finished.
    pub(crate) poller_stop: LocalNotify,
    /// Sweeps left in which to collect freed memory (see `hibernate::collect_memory`).
    pub(crate) collect_sweeps: Cell<u8>,
    /// When the sweep last ran ([`crate::net::millis`]): a late sweep tells busy readers
    /// that the core's timers are starved (see `conn/fairness.rs`).
    pub(crate) last_tick: Cell<u32>,
    /// Publishes over their client's rate, logged once per interval (`conn/limits.rs`).
    pub(crate) publish_rate_log: Cell<crate::net::LogThrottle>,
    /// Detaching parked connections failed (out of descriptors): not retried before this
    /// ([`crate::net::millis`]), and logged once per interval (see `conn/hibernate.rs`).
    pub(crate) detach_paused_until: Cell<Option<u32>>,
    pub(crate) detach_log: Cell<crate::net::LogThrottle>,
    /// This core's durable store, when `persistence_dir` is set (`persist.rs`).
    pub(crate) persist: Option<persist::Persist>,
    /// Subscriptions younger than a mesh round, racing retained messages (`fresh.rs`).
    fresh: RefCell<fresh::FreshSubs>,
}

/// After Stop, how long connections may take to send their last bytes before their sockets
/// are shut down hard.
pub(super) const STOP_GRACE: Duration = Duration::from_millis(250);
/// After that, the longest a core waits for its tasks (a hook that never answers, say).
pub(super) const STOP_LIMIT: Duration = Duration::from_millis(500);

/// Counts a task for the stop procedure; decremented on drop.
pub(crate) struct TaskGuard(Rc<Shard>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        let n = self.0.tasks.get() - 1;
        self.0.tasks.set(n);
        if n == 0 {
            self.0.tasks_done.notify();
        }
    }
}

impl Shard {
    pub(super) fn new(id: u16, shared: Arc<Shared>, me: std::rc::Weak<Shard>) -> Self {
        let cores = shared.cores();
        let levels = shared.config.max_topic_levels;
        let hibernation = if shared.config.hibernate_after_ms == 0 {
            None
        } else {
            crate::conn::hibernate::Hibernation::new()
                .map_err(|e| warn!(core = id, "hibernation disabled: {e}"))
                .ok()
        };
        let mut shard = Shard {
            id,
            me,
            st: RefCell::new(State {
                sessions: Sessions::new(id),
                routes: Routes::new(levels, id, cores),
                moves: Moves::default(),
                conns: Conns::new(),
            }),
            shared,
            stopping: Cell::new(false),
            draining: Cell::new(false),
            tasks: Cell::new(0),
            tasks_done: LocalNotify::default(),
            stop_signal: LocalNotify::default(),
            listener_fds: RefCell::new(Vec::new()),
            outbox: RefCell::new((0..cores).map(|_| Vec::new()).collect()),
            outbox_ready: LocalNotify::default(),
            cluster_out: RefCell::new(Vec::new()),
            hibernation,
            hibernation_off: Cell::new(false),
            finished: Cell::new(false),
            poller_stop: LocalNotify::default(),
            collect_sweeps: Cell::new(0),
            last_tick: Cell::new(crate::net::millis(Instant::now())),
            publish_rate_log: Cell::default(),
            detach_paused_until: Cell::new(None),
            detach_log: Cell::default(),
            persist: None,
            fresh: RefCell::new(fresh::FreshSubs::new(cores)),
        };
        shard.persist = shard.restore();
        shard
    }

    /// This core's counters.
    pub(crate) fn stats(&self) -> &CoreStats {
        &self.shared.stats[usize::from(self.id)]
    }

    pub(crate) fn config(&self) -> &Config {
        &self.shared.config
    }

    pub(crate) fn task_guard(self: &Rc<Self>) -> TaskGuard {
        self.tasks.set(self.tasks.get() + 1);
        TaskGuard(self.clone())
    }

    /// A new session key, its slot reserved for the session (`slab.rs`): unique over all
    /// cores (the core id is in the high bits). None when this core holds the most sessions
    /// it can (2^24).
    pub(crate) fn new_key(&self) -> Option<u64> {
        self.st.borrow_mut().sessions.new_key()
    }

    /// Gives back a key of [`Shard::new_key`] that will have no session.
    pub(crate) fn forget_key(&self, key: u64) {
        self.st.borrow_mut().sessions.forget_key(key);
    }

    /// An id for a new connection (its key in `conns` and in the hibernation epoll set).
    pub(crate) fn new_conn_id(&self) -> u64 {
        self.st.borrow_mut().conns.new_id()
    }

    pub(crate) fn register_conn(&self, id: u64, conn: Rc<Conn>) {
        self.st.borrow_mut().conns.insert(id, conn);
    }

    /// The epoll set idle connections park in, unless unavailable.
    pub(crate) fn hibernation(&self) -> Option<&crate::conn::hibernate::Hibernation> {
        if self.hibernation_off.get() {
            return None;
        }
        self.hibernation.as_ref()
    }

    pub(crate) fn unregister_conn(&self, id: u64) {
        self.st.borrow_mut().conns.remove(id);
        // What the connection freed goes back to the system within seconds, also on a core
        // that is quiet after a burst closed (see `hibernate::collect_memory`).
        self.collect_sweeps
            .set(crate::conn::hibernate::COLLECT_SWEEPS);
    }
}
