//! One core (shard): a pinned thread with its own monoio runtime that owns its connections, its
//! sessions, its replicas of the interest index and the retained store, and its timers.
//!
//! All state lives in one `RefCell` borrowed only inside synchronous sections (never across
//! an `.await`), so there are no locks on the message path.
//!
//! Owns: the `Shard` and its `State` (here), its life and stop (`run.rs`), its side of the mesh
//! (`inbox.rs`), routing and the interest index (`route.rs`), delivery to a session
//! (`deliver.rs`), sessions and their end (`sessions.rs`), session moves between cores
//! (`moves.rs`), in-process API commands (`api_cmds.rs`), the timer sweep (`timers.rs`), its
//! counters (`stats.rs`, `histogram.rs`) and what all cores share (`shared.rs`).
//!
//! The one import cycle of the crate is between this module and `conn` (and `bridge`, a
//! client connection of its own): a shard owns its connections (`Rc<Conn>` in its sessions'
//! sinks, `Rc<Link>` for a bridge) and a connection's task works on its shard (`Rc<Shard>`). Everything else these two use sits below them (`config`, `api`, `net`,
//! `security`, `mesh`, `routing`); `ops` and `embed` sit above.

mod api_cmds;
mod deliver;
pub(crate) mod histogram;
mod inbox;
pub(crate) mod moves;
mod notify;
pub(crate) mod persist;
mod route;
mod run;
mod sessions;
mod shared;
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
use crate::mesh::{ApiSink, MeshMsg, TakeoverReq};
use crate::routing::{RetainedStore, SharedSubs};
use crate::shard::moves::{Incoming, Stub};
use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::warn;
use uringmq_codec::PublishHead;
use uringmq_session::{Delivery, Session, SubOptions};
use uringmq_topic::SubscriptionIndex;

/// Where a session's deliveries go.
pub(crate) enum Sink {
    /// No connection: persistent session waiting for its client. Holds the index of the
    /// listener it last connected through (`Security::listener_index`), so queued deliveries
    /// are checked against that listener's ACL; two bytes inside the enum's padding, where a
    /// name would cost an allocation per session.
    Offline(u16),
    /// A client connection.
    Conn(Rc<Conn>),
    /// An in-process subscription.
    Api(Arc<ApiSink>),
    /// The local session of a bridge on this core (`crate::bridge`).
    Bridge(Rc<crate::bridge::Link>),
}

// The listener index of `Offline` fits beside the tag: a sink stays two words.
const _: () = assert!(std::mem::size_of::<Sink>() == 2 * std::mem::size_of::<usize>());

/// A session and where its messages go.
pub(crate) struct Entry {
    /// Boxed: a `Session` is several hundred bytes, and the session map's table (kept at up
    /// to twice the live entries, and retained by the allocator after each growth) would
    /// otherwise cost that per slot, not per session.
    pub(crate) s: Box<Session>,
    pub(crate) sink: Sink,
    /// The ACL rules of the token its current (or last) connection authenticated with (a
    /// JWT's ACL claim): they replace the ACL file for this session. Here rather than in the
    /// `Session`, which stays in its 256-byte allocation class.
    pub(crate) token_acl: Option<Arc<uringmq_auth::AclFile>>,
}

/// Everything a core owns, borrowed in short synchronous sections.
pub(crate) struct State {
    pub(crate) sessions: HashMap<u64, Entry, ahash::RandomState>,
    pub(crate) next_key: u64,
    /// This core's ordinary subscriptions: session key -> options.
    pub(crate) local: SubscriptionIndex<u64, SubOptions>,
    /// Replica: which cores have subscribers per filter.
    pub(crate) interest: SubscriptionIndex<u16, ()>,
    pub(crate) shared: SharedSubs,
    pub(crate) retained: RetainedStore,
    pub(crate) conns: HashMap<u64, Rc<Conn>, ahash::RandomState>,
    next_conn: u64,
    /// (due, session key): will delays and session expiries (validated when popped).
    pub(crate) timers: BinaryHeap<Reverse<(Instant, u64)>>,
    scratch_cores: Vec<bool>,
    scratch_matches: Vec<(u64, Delivery)>,
    /// PublishHead cache for the message being fanned out: (key, head).
    pub(crate) heads: Vec<(u8, PublishHead)>,
    /// Keys between their claim and the end of their move (see `moves.rs`).
    pub(crate) incoming: HashMap<u64, Incoming, ahash::RandomState>,
    /// Sessions that moved away and still forward (see `moves.rs`).
    pub(crate) stubs: HashMap<u64, Stub, ahash::RandomState>,
    /// Takeovers waiting for the old connection's last packets (see `moves.rs`).
    pub(crate) draining: HashMap<u64, TakeoverReq, ahash::RandomState>,
}

/// One core.
pub(crate) struct Shard {
    pub(crate) id: u16,
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
    pub(super) fn new(id: u16, shared: Arc<Shared>) -> Self {
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
            st: RefCell::new(State {
                sessions: HashMap::default(),
                next_key: 1,
                local: SubscriptionIndex::with_max_levels(levels),
                interest: SubscriptionIndex::with_max_levels(levels),
                shared: SharedSubs::new(levels),
                retained: RetainedStore::new(levels),
                conns: HashMap::default(),
                next_conn: 1,
                timers: BinaryHeap::new(),
                scratch_cores: vec![false; cores],
                scratch_matches: Vec::new(),
                heads: Vec::new(),
                incoming: HashMap::default(),
                stubs: HashMap::default(),
                draining: HashMap::default(),
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

    /// A new session key: unique over all cores (the core id is in the high bits).
    pub(crate) fn new_key(&self) -> u64 {
        let mut st = self.st.borrow_mut();
        let k = st.next_key;
        st.next_key += 1;
        (u64::from(self.id) << 48) | k
    }

    /// An id for a new connection (its key in `conns` and in the hibernation epoll set).
    pub(crate) fn new_conn_id(&self) -> u64 {
        let mut st = self.st.borrow_mut();
        st.next_conn += 1;
        st.next_conn
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
        self.st.borrow_mut().conns.remove(&id);
    }
}
