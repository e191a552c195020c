//! One core (shard): a pinned thread with its own monoio runtime that owns its connections, its
//! sessions, its replicas of the interest index and the retained store, and its timers.
//!
//! All state lives in one `RefCell` borrowed only inside synchronous sections (never across
//! an `.await`), so there are no locks on the message path.

use crate::api::ClientSummary;
use crate::config::{Config, Driver};
use crate::connection::Conn;
use crate::handoff::{Incoming, Stub, TakeoverReq};
use crate::hooks::HookPool;
use crate::mesh::{ApiCmd, ApiSink, Mailbox, MeshMsg, Target};
use crate::registry::Registry;
use crate::retained::RetainedStore;
use crate::shared_sub::{group_filter, SharedSubs};
use bytes::BytesMut;
use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};
use uringmq_auth::{Authenticator, Authorizer};
use uringmq_codec::{Protocol, PublishHead, QoS, RetainHandling};
use uringmq_session::{
    will, ConnectLimits, Delivery, Message, Negotiated, Origin, Session, SubOptions,
};
use uringmq_topic::{SharedFilter, SubscriptionIndex};

/// Counters of one core (summed by [`crate::Broker::stats`]). Relaxed atomics: written by one
/// core, read rarely.
#[derive(Default)]
pub(crate) struct CoreStats {
    pub(crate) connections: AtomicU64,
    pub(crate) sessions: AtomicU64,
    pub(crate) subscriptions: AtomicU64,
    pub(crate) retained: AtomicU64,
    pub(crate) messages_in: AtomicU64,
    pub(crate) messages_out: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) dropped_qos0: AtomicU64,
    pub(crate) dropped_queue_full: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) protocol_errors: AtomicU64,
    pub(crate) auth_failures: AtomicU64,
    pub(crate) auth_busy: AtomicU64,
    pub(crate) hook_timeouts: AtomicU64,
    pub(crate) hibernating: AtomicU64,
    pub(crate) wills_denied: AtomicU64,
    pub(crate) publish_rate_limited: AtomicU64,
    pub(crate) connections_rate_limited: AtomicU64,
    // What `$SYS` and `/metrics` need beyond the above (see `ops/`).
    /// MQTT packets of every type received from clients (Mosquitto's `messages/received`).
    pub(crate) packets_in: AtomicU64,
    /// Packets other than PUBLISH written to clients, copied from the core's own tally
    /// (`ops::count_control_packet`) when a snapshot is taken.
    pub(crate) control_out: AtomicU64,
    /// Payload bytes of PUBLISH packets received (and injected).
    pub(crate) publish_bytes_in: AtomicU64,
    /// Payload bytes of PUBLISH packets sent.
    pub(crate) publish_bytes_out: AtomicU64,
    /// CONNECT packets received.
    pub(crate) connects: AtomicU64,
    /// Sockets accepted.
    pub(crate) sockets: AtomicU64,
    /// Persistent sessions ended by their expiry interval.
    pub(crate) sessions_expired: AtomicU64,
    /// Gauges this core computes when a snapshot is taken (`ops::refresh_core`).
    pub(crate) shared_subscriptions: AtomicU64,
    pub(crate) queued_messages: AtomicU64,
    pub(crate) queued_bytes: AtomicU64,
    pub(crate) inflight_messages: AtomicU64,
    pub(crate) retained_bytes: AtomicU64,
    /// CONNECT received to CONNACK queued, accepted connections only.
    pub(crate) connect_time: crate::ops::histogram::Histogram,
    /// How late the 100 ms sweep timer fired: how long the core ran other work before it
    /// got back to its event loop.
    pub(crate) timer_lag: crate::ops::histogram::Histogram,
    /// PUBLISH received (or routed here) to written into a subscriber's connection buffer;
    /// one delivery in `ops::DELIVERY_SAMPLE`.
    pub(crate) delivery_latency: crate::ops::histogram::Histogram,
    pub(crate) accept_failures: AtomicU64,
    pub(crate) detach_failures: AtomicU64,
}

/// Adds `n` to a counter.
#[inline]
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    if n != 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// What all cores share (read-only after start, except atomics, mailboxes and the registry).
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) limits: ConnectLimits,
    pub(crate) mailboxes: Vec<Mailbox>,
    pub(crate) registry: Registry,
    /// Publish-rate debts of client ids whose connection closed (`publish_debts.rs`).
    pub(crate) publish_debts: crate::publish_debts::PublishDebts,
    pub(crate) stats: Vec<CoreStats>,
    pub(crate) hooks: HookPool,
    pub(crate) authenticator: Option<Arc<dyn Authenticator>>,
    pub(crate) authorizer: Option<Arc<dyn Authorizer>>,
    /// Listener policies, files and enhanced authenticators behind the two above.
    pub(crate) security: Arc<crate::auth::Security>,
    /// Open client sockets, all cores (for `max_connections`).
    pub(crate) connections: AtomicUsize,
    /// Source of assigned client identifiers.
    pub(crate) next_assigned: AtomicU64,
    /// The embedder's disconnect hook (run on the hook threads).
    pub(crate) on_disconnect: Option<crate::api::DisconnectHook>,
    /// What the durable store recovered, taken by each core as it starts (`persist.rs`).
    pub(crate) boot: Option<crate::persist::Boot>,
}

impl Shared {
    pub(crate) fn cores(&self) -> usize {
        self.mailboxes.len()
    }
}

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

/// Why a connection ended: decides the will and the log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// DISCONNECT from the client; `will` for v5 reason 0x04.
    Disconnect { will: bool },
    /// The client closed the socket without DISCONNECT.
    Eof,
    /// A socket error.
    Io(String),
    /// A protocol violation (reason code, rule).
    Protocol(u8, String),
    /// No packet within 1.5x keep-alive.
    KeepAlive,
    /// No CONNECT within `connect_timeout_secs`.
    ConnectTimeout,
    /// Another connection took the session over.
    TakenOver,
    /// The broker is stopping.
    Shutdown,
    /// CONNECT refused.
    Refused(u8),
    /// The embedding program asked (`Broker::disconnect`); `will`: publish the will.
    Kicked { will: bool },
    /// Over `max_publish_rate` / `max_publish_bytes_rate` for too long (v5: DISCONNECT 0x96).
    RateLimited,
}

impl CloseReason {
    /// A stable name for the embedder's disconnect hook.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            CloseReason::Disconnect { will: false } => "client_disconnected",
            CloseReason::Disconnect { will: true } => "client_disconnected_with_will",
            CloseReason::Eof => "connection_lost",
            CloseReason::Io(_) => "socket_error",
            CloseReason::Protocol(..) => "protocol_error",
            CloseReason::KeepAlive => "keep_alive_timeout",
            CloseReason::ConnectTimeout => "connect_timeout",
            CloseReason::TakenOver => "session_taken_over",
            CloseReason::Shutdown => "server_shutting_down",
            CloseReason::Refused(_) => "connect_refused",
            CloseReason::Kicked { .. } => "administrative_action",
            CloseReason::RateLimited => "message_rate_too_high",
        }
    }

    /// Whether the will is published [MQTT-3.1.2-8] [MQTT-3.14.4-3].
    pub(crate) fn publishes_will(&self) -> bool {
        !matches!(
            self,
            CloseReason::Disconnect { will: false }
                | CloseReason::Kicked { will: false }
                | CloseReason::Shutdown
                | CloseReason::Refused(_)
        )
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::Disconnect { will: false } => f.write_str("client disconnected"),
            CloseReason::Disconnect { will: true } => f.write_str("client disconnected with will"),
            CloseReason::Eof => f.write_str("connection closed by client"),
            CloseReason::Io(e) => write!(f, "socket error: {e}"),
            CloseReason::Protocol(code, why) => write!(f, "protocol error {code:#04x}: {why}"),
            CloseReason::KeepAlive => f.write_str("keep-alive timeout"),
            CloseReason::ConnectTimeout => f.write_str("no CONNECT in time"),
            CloseReason::TakenOver => f.write_str("session taken over"),
            CloseReason::Shutdown => f.write_str("broker shutting down"),
            CloseReason::Refused(code) => write!(f, "CONNECT refused ({code:#04x})"),
            CloseReason::Kicked { .. } => f.write_str("disconnected by the embedding program"),
            CloseReason::RateLimited => f.write_str("publish rate too high"),
        }
    }
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
    /// Keys between their claim and the end of their move (see `handoff.rs`).
    pub(crate) incoming: HashMap<u64, Incoming, ahash::RandomState>,
    /// Sessions that moved away and still forward (see `handoff.rs`).
    pub(crate) stubs: HashMap<u64, Stub, ahash::RandomState>,
    /// Takeovers waiting for the old connection's last packets (see `handoff.rs`).
    pub(crate) draining: HashMap<u64, TakeoverReq, ahash::RandomState>,
}

/// A single-waiter notification for tasks of one core.
#[derive(Default)]
pub(crate) struct LocalNotify {
    flag: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl LocalNotify {
    /// Wakes the waiter (or makes its next wait return at once).
    pub(crate) fn notify(&self) {
        self.flag.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Waits for a notification.
    pub(crate) async fn wait(&self) {
        poll_fn(|cx| {
            if self.flag.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// One core.
pub(crate) struct Core {
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
    pub(crate) hibernation: Option<crate::hibernate::Hibernation>,
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
    /// When the sweep last ran ([`crate::timers::millis`]): a late sweep tells busy readers
    /// that the core's timers are starved (see `fairness.rs`).
    pub(crate) last_tick: Cell<u32>,
    /// Publishes over their client's rate, logged once per interval (`limits.rs`).
    pub(crate) publish_rate_log: Cell<crate::limits::LogThrottle>,
    /// Detaching parked connections failed (out of descriptors): not retried before this
    /// ([`crate::timers::millis`]), and logged once per interval (see `hibernate.rs`).
    pub(crate) detach_paused_until: Cell<Option<u32>>,
    pub(crate) detach_log: Cell<crate::limits::LogThrottle>,
    /// This core's durable store, when `persistence_dir` is set (`persist.rs`).
    pub(crate) persist: Option<crate::persist::Persist>,
}

/// After Stop, how long connections may take to send their last bytes before their sockets
/// are shut down hard.
const STOP_GRACE: Duration = Duration::from_millis(250);
/// After that, the longest a core waits for its tasks (a hook that never answers, say).
const STOP_LIMIT: Duration = Duration::from_millis(500);

/// Counts a task for the stop procedure; decremented on drop.
pub(crate) struct TaskGuard(Rc<Core>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        let n = self.0.tasks.get() - 1;
        self.0.tasks.set(n);
        if n == 0 {
            self.0.tasks_done.notify();
        }
    }
}

impl Core {
    fn new(id: u16, shared: Arc<Shared>) -> Self {
        let cores = shared.cores();
        let levels = shared.config.max_topic_levels;
        let hibernation = if shared.config.hibernate_after_ms == 0 {
            None
        } else {
            crate::hibernate::Hibernation::new()
                .map_err(|e| warn!(core = id, "hibernation disabled: {e}"))
                .ok()
        };
        let mut core = Core {
            id,
            st: RefCell::new(State {
                sessions: HashMap::default(),
                next_key: 1,
                local: SubscriptionIndex::with_max_levels(levels),
                interest: SubscriptionIndex::with_max_levels(levels),
                shared: SharedSubs::default(),
                retained: RetainedStore::default(),
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
            last_tick: Cell::new(crate::timers::millis(Instant::now())),
            publish_rate_log: Cell::default(),
            detach_paused_until: Cell::new(None),
            detach_log: Cell::default(),
            persist: None,
        };
        core.persist = core.restore();
        core
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
    pub(crate) fn hibernation(&self) -> Option<&crate::hibernate::Hibernation> {
        if self.hibernation_off.get() {
            return None;
        }
        self.hibernation.as_ref()
    }

    pub(crate) fn unregister_conn(&self, id: u64) {
        self.st.borrow_mut().conns.remove(&id);
    }

    /// The core's main future: accept loops, timers, and the mesh until Stop.
    async fn run(
        self: Rc<Self>,
        listeners: Vec<(Arc<crate::endpoint::Endpoint>, std::net::TcpListener)>,
    ) {
        for (name, l) in listeners {
            use std::os::fd::AsRawFd;
            self.listener_fds.borrow_mut().push(l.as_raw_fd());
            match monoio::net::TcpListener::from_std(l) {
                Ok(l) => {
                    let guard = self.task_guard();
                    monoio::spawn(crate::connection::accept_loop(self.clone(), l, name, guard));
                }
                Err(e) => warn!(core = self.id, "cannot use listener: {e}"),
            }
        }
        monoio::spawn(crate::timers::run(self.clone()));
        monoio::spawn(flush_loop(self.clone()));
        if let Some(p) = &self.persist {
            monoio::spawn(p.store.clone().run());
        }
        if self.hibernation.is_some() {
            monoio::spawn(crate::hibernate::poller(self.clone()));
        }
        let mailbox = &self.shared.mailboxes[usize::from(self.id)];
        loop {
            mailbox.arm();
            self.drain_mesh();
            if self.stopping.get() {
                break;
            }
            mailbox.wait().await;
        }
        // Wait for every connection and listener task to finish. A writer blocked on a client
        // that does not read would hold its task for ever, and the sweep that shuts such
        // sockets down hard (`timers.rs`) has ended: so after a grace for the last bytes
        // (a v5 DISCONNECT) the core does it here, then waits a bounded time more.
        self.wait_tasks(STOP_GRACE).await;
        if self.tasks.get() > 0 {
            self.shut_down_hard();
            self.wait_tasks(STOP_LIMIT).await;
        }
        if let Some(p) = &self.persist {
            // Writes and syncs what is left: a clean stop loses nothing.
            p.store.close().await;
        }
        self.stop_signal.notify();
        self.finished.set(true);
        self.outbox_ready.notify();
        self.poller_stop.notify();
        // Let the timer, flush and poller tasks observe the stop and finish.
        monoio::time::sleep(Duration::from_millis(1)).await;
        // Drop every session and connection here, outside the borrow: in-process subscriptions
        // see their channel close, and no Rc cycle between the core and its connections keeps
        // their memory alive after the runtime is gone (a broker is restarted many times in one
        // process).
        let (sessions, conns) = {
            let mut st = self.st.borrow_mut();
            (
                std::mem::take(&mut st.sessions),
                std::mem::take(&mut st.conns),
            )
        };
        drop(sessions);
        drop(conns);
        debug!(core = self.id, "core stopped");
    }

    /// Waits until every connection and listener task has finished, or `limit` has passed.
    async fn wait_tasks(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.tasks.get() > 0 && Instant::now() < deadline {
            monoio::select! {
                _ = self.tasks_done.wait() => {}
                _ = monoio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    }

    /// Shuts every connection's socket down in both directions: a write blocked on a full
    /// socket fails at once, so its task ends.
    fn shut_down_hard(&self) {
        for c in self.st.borrow().conns.values() {
            if c.fd() >= 0 {
                // SAFETY: shutdown on the connection's own open descriptor.
                unsafe { libc::shutdown(c.fd(), libc::SHUT_RDWR) };
            }
        }
    }

    /// Applies everything other cores sent. Called before every routing decision and
    /// retained lookup (the causality rule, see ARCHITECTURE.md).
    ///
    /// Not re-entrant: a mesh message whose handling routes (an injected PUBLISH, a will)
    /// must not apply messages queued after it first, or they would overtake it
    /// [MQTT-4.6.0-6]; everything queued before it is already applied.
    pub(crate) fn drain_mesh(self: &Rc<Self>) {
        if self.draining.replace(true) {
            return;
        }
        // Reset even if a handler panics (the connection's catch_unwind keeps the core alive).
        struct Reset<'a>(&'a Cell<bool>);
        impl Drop for Reset<'_> {
            fn drop(&mut self) {
                self.0.set(false);
            }
        }
        let _reset = Reset(&self.draining);
        let mailbox = &self.shared.mailboxes[usize::from(self.id)];
        while let Some(msg) = mailbox.pop() {
            self.handle_mesh(msg);
        }
    }

    /// Queues `msg` for core `core`. Messages are batched per event-loop turn: the flush task,
    /// woken here, runs after the tasks already scheduled in this turn and pushes one
    /// `MeshMsg::Batch` per core (one queue operation and at most one wake-up each).
    ///
    /// Causality: the outbox is also flushed before anything lets a client (or the embedder)
    /// observe an effect of this core: before every socket write (SUBACK, PUBACK, CONNACK and
    /// deliveries go out only through the writer), before an in-process delivery or API
    /// reply, and before a takeover's answer. A client that saw SUBACK therefore finds this
    /// core's interest already queued on every other core (each queue is FIFO).
    pub(crate) fn send(&self, core: usize, msg: MeshMsg) {
        if let Some(p) = &self.persist {
            p.sending(core, &msg, self.draining.get());
        }
        let mut outbox = self.outbox.borrow_mut();
        if let Some(q) = outbox.get_mut(core) {
            if q.is_empty() {
                self.outbox_ready.notify();
            }
            q.push(msg);
        }
    }

    /// Pushes everything queued by [`Core::send`] (see there for when it must be called).
    pub(crate) fn flush_mesh(&self) {
        let mut outbox = self.outbox.borrow_mut();
        if let Some(p) = &self.persist {
            p.seal(self.id, &mut outbox);
        }
        for (c, q) in outbox.iter_mut().enumerate() {
            let msg = match q.len() {
                0 => continue,
                1 => q.pop(),
                _ => Some(MeshMsg::Batch(std::mem::take(q))),
            };
            if let Some(msg) = msg {
                self.shared.mailboxes[c].push(msg);
            }
        }
    }

    fn handle_mesh(self: &Rc<Self>, msg: MeshMsg) {
        match msg {
            MeshMsg::Batch(msgs) => {
                for m in msgs {
                    self.handle_mesh(m);
                }
            }
            MeshMsg::Publish { msg, target } => match target {
                Target::Subscribers => self.deliver_local(&msg),
                Target::Shared { group, exclude } => {
                    self.deliver_shared(&group, &msg, exclude, true)
                }
            },
            MeshMsg::Interest { filter, core, add } => {
                let mut st = self.st.borrow_mut();
                if add {
                    let _ = st.interest.insert(&filter, core, ());
                } else {
                    let _ = st.interest.remove(&filter, core);
                    self.collect_soon();
                }
            }
            MeshMsg::SharedInterest {
                group,
                core,
                members,
            } => {
                let cores = self.shared.cores();
                self.st.borrow_mut().shared.set_count(
                    &group,
                    group_filter(&group),
                    core,
                    members,
                    cores,
                );
            }
            MeshMsg::Retain(msg) => self.apply_retain(msg),
            MeshMsg::Takeover(req) => self.handle_takeover(req),
            MeshMsg::Forward {
                key,
                msg,
                delivery,
                group,
            } => {
                let mut st = self.st.borrow_mut();
                self.forwarded(&mut st, key, &msg, delivery, group, Instant::now());
            }
            MeshMsg::MoveAck { old } => self.move_acked(old),
            MeshMsg::MoveBarrier { old } => {
                self.send(
                    usize::from(crate::registry::core_of(old)),
                    MeshMsg::MoveAck { old },
                );
            }
            MeshMsg::MoveDone { key } => self.move_done(key),
            MeshMsg::Api(cmd) => self.handle_api(cmd),
            MeshMsg::Persist(m) => crate::persist::on_mesh(self, m),
            MeshMsg::Stop => self.stop(),
        }
    }

    fn stop(self: &Rc<Self>) {
        if self.stopping.replace(true) {
            return;
        }
        if let Some(p) = &self.persist {
            p.release();
        }
        for &fd in self.listener_fds.borrow().iter() {
            // SAFETY: shutting down a socket fd the accept loop owns; it stays open until the
            // loop drops it. On Linux this makes the pending accept fail, freeing the port.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
        let conns: Vec<Rc<Conn>> = self.st.borrow().conns.values().cloned().collect();
        for c in conns {
            c.kill(CloseReason::Shutdown);
        }
        self.stop_signal.notify();
    }

    // ---- interest (subscriptions as seen by other cores) ----

    /// Tells every core (this one directly) that this core gained/lost `filter`.
    fn broadcast_interest(&self, filter: &str, add: bool) {
        let filter: Arc<str> = filter.into();
        {
            let mut st = self.st.borrow_mut();
            if add {
                let _ = st.interest.insert(&filter, self.id, ());
            } else {
                let _ = st.interest.remove(&filter, self.id);
            }
        }
        for c in 0..self.shared.cores() {
            if c != usize::from(self.id) {
                self.send(
                    c,
                    MeshMsg::Interest {
                        filter: filter.clone(),
                        core: self.id,
                        add,
                    },
                );
            }
        }
    }

    fn broadcast_shared(&self, group: &Arc<str>, members: u32) {
        let cores = self.shared.cores();
        self.st
            .borrow_mut()
            .shared
            .set_count(group, group_filter(group), self.id, members, cores);
        for c in 0..self.shared.cores() {
            if c != usize::from(self.id) {
                self.send(
                    c,
                    MeshMsg::SharedInterest {
                        group: group.clone(),
                        core: self.id,
                        members,
                    },
                );
            }
        }
    }

    /// Adds `key`'s subscription to the indexes. Returns whether it is shared.
    pub(crate) fn index_subscription(&self, filter: &str, key: u64, opts: SubOptions) -> bool {
        if let Ok(Some(_)) = SharedFilter::parse(filter) {
            let group: Arc<str> = filter.into();
            let n = self.st.borrow_mut().shared.join(&group, key, opts);
            self.broadcast_shared(&group, n);
            return true;
        }
        let first = {
            let mut st = self.st.borrow_mut();
            match st.local.insert(filter, key, opts) {
                Ok(ins) => ins.first_subscriber,
                Err(_) => false,
            }
        };
        if first {
            self.broadcast_interest(filter, true);
        }
        false
    }

    /// Removes `key`'s subscription from the indexes.
    pub(crate) fn unindex_subscription(&self, filter: &str, key: u64) {
        if let Ok(Some(_)) = SharedFilter::parse(filter) {
            let left = self.st.borrow_mut().shared.leave(filter, key);
            if let Some(n) = left {
                self.broadcast_shared(&filter.into(), n);
            }
            return;
        }
        let last = self
            .st
            .borrow_mut()
            .local
            .remove(filter, key)
            .last_subscriber;
        if last {
            self.broadcast_interest(filter, false);
        }
        self.collect_soon();
    }

    /// Memory was freed on this core (index nodes of a filter that went): have the sweep ask
    /// mimalloc to return it for a few seconds, as after parking. Without it a client that
    /// held large filters left the memory with the process after it was gone.
    fn collect_soon(&self) {
        self.collect_sweeps.set(crate::hibernate::COLLECT_SWEEPS);
    }

    // ---- retained ----

    /// A PUBLISH with RETAIN from a client on this core: store and tell the other cores.
    ///
    /// `max_retained_messages` is checked against this core's replica: a new topic is refused
    /// when the replica holds `max` topics. Replicas apply every `Retain` unconditionally, so
    /// they converge on one store, but a replica sees other cores' new topics only when their
    /// `Retain` arrives: the store can exceed `max` by the new topics that other cores admitted
    /// while their `Retain` was still on its way here (one mesh hop, usually microseconds).
    /// With one core the limit is exact.
    pub(crate) fn retain(self: &Rc<Self>, msg: &Arc<Message>) {
        let max = self.config().max_retained_messages;
        if max != 0 && !msg.payload.is_empty() {
            let st = self.st.borrow();
            // The broker's own `$SYS` topics do not count (`RetainedStore::user_len`).
            if st.retained.user_len() >= max && !st.retained.contains(&msg.topic) {
                debug!(topic = %msg.topic, "retained store full: not retained");
                return;
            }
        }
        self.apply_retain(msg.clone());
        for c in 0..self.shared.cores() {
            if c != usize::from(self.id) {
                self.send(c, MeshMsg::Retain(msg.clone()));
            }
        }
    }

    pub(crate) fn apply_retain(&self, msg: Arc<Message>) {
        self.persist_retained(&msg);
        let mut st = self.st.borrow_mut();
        st.retained.set(msg);
        let n = st.retained.user_len() as u64;
        if self.id == 0 {
            self.stats().retained.store(n, Ordering::Relaxed);
            let bytes = st.retained.user_bytes() as u64;
            self.stats().retained_bytes.store(bytes, Ordering::Relaxed);
        }
    }

    // ---- routing ----

    /// Routes a message: once to every other core with subscribers, to the chosen core of each
    /// matching shared group, then to this core's own subscribers.
    pub(crate) fn route(self: &Rc<Self>, msg: &Arc<Message>) {
        self.drain_mesh();
        let me = usize::from(self.id);
        let strategy = self.config().shared_subscription_strategy;
        let mut shared_targets: smallvec::SmallVec<[(Arc<str>, u16); 2]> =
            smallvec::SmallVec::new();
        let local = {
            let mut guard = self.st.borrow_mut();
            let st = &mut *guard;
            st.scratch_cores.iter_mut().for_each(|c| *c = false);
            let marks = &mut st.scratch_cores;
            st.interest.for_each_matching_filter(&msg.topic, |members| {
                for (core, _) in members.iter() {
                    if let Some(m) = marks.get_mut(usize::from(core)) {
                        *m = true;
                    }
                }
            });
            st.shared.route(&msg.topic, self.id, strategy, |g, c| {
                shared_targets.push((g, c))
            });
            for (c, &marked) in st.scratch_cores.iter().enumerate() {
                if marked && c != me {
                    self.send(
                        c,
                        MeshMsg::Publish {
                            msg: msg.clone(),
                            target: Target::Subscribers,
                        },
                    );
                }
            }
            st.scratch_cores[me]
        };
        for (group, core) in shared_targets {
            if usize::from(core) == me {
                self.deliver_shared(&group, msg, None, true);
            } else {
                self.send(
                    usize::from(core),
                    MeshMsg::Publish {
                        msg: msg.clone(),
                        target: Target::Shared {
                            group,
                            exclude: None,
                        },
                    },
                );
            }
        }
        if local {
            self.deliver_local(msg);
        }
    }

    /// Delivers to this core's ordinary subscribers: one copy per session at the highest QoS
    /// of its matching subscriptions, with all their identifiers [MQTT-3.3.5-1].
    pub(crate) fn deliver_local(self: &Rc<Self>, msg: &Arc<Message>) {
        let now = Instant::now();
        let mut guard = self.st.borrow_mut();
        let st = &mut *guard;
        let mut matches = std::mem::take(&mut st.scratch_matches);
        matches.clear();
        let id = self.id;
        st.local.for_each_match(&msg.topic, |key, opts| {
            if let Some(d) = Delivery::live(
                msg,
                opts,
                Some(Origin {
                    core: id,
                    session: key,
                }),
            ) {
                matches.push((key, d));
            }
        });
        if matches.len() > 1 {
            matches.sort_unstable_by_key(|(k, _)| *k);
            let mut merged: Vec<(u64, Delivery)> = Vec::with_capacity(matches.len());
            for (k, d) in matches.drain(..) {
                match merged.last_mut() {
                    Some((lk, ld)) if *lk == k => ld.merge(d),
                    _ => merged.push((k, d)),
                }
            }
            matches = merged;
        }
        st.heads.clear();
        for (key, d) in matches.drain(..) {
            if st.first_sight(key, msg) {
                self.deliver_to(st, key, msg, d, None, now, true);
            }
        }
        st.scratch_matches = matches;
    }

    /// Delivers to one member of a shared group on this core (online members first). With
    /// `forward`, a group without members here goes to another core that has some.
    pub(crate) fn deliver_shared(
        self: &Rc<Self>,
        group: &Arc<str>,
        msg: &Arc<Message>,
        exclude: Option<u64>,
        forward: bool,
    ) {
        let now = Instant::now();
        let mut guard = self.st.borrow_mut();
        let st = &mut *guard;
        let picked = st.shared.local.get(group).and_then(|members| {
            let n = members.len();
            let mut fallback = None;
            for _ in 0..n {
                let (key, opts) = members.pick_next()?;
                if Some(key) == exclude {
                    continue;
                }
                let online = matches!(
                    st.sessions.get(&key).map(|e| &e.sink),
                    Some(Sink::Conn(_) | Sink::Api(_))
                );
                if online {
                    return Some((key, *opts));
                }
                fallback.get_or_insert((key, *opts));
            }
            fallback
        });
        match picked {
            Some((key, opts)) => {
                // A shared subscription never gets retained-as-published... it does: RAP applies.
                if !st.first_sight(key, msg) {
                    return;
                }
                if let Some(d) = Delivery::live(msg, &opts, None) {
                    self.deliver_to(st, key, msg, d, Some(group.clone()), now, false);
                }
            }
            None if forward => {
                if let Some(core) = st.shared.other_core(group, self.id) {
                    if core != self.id {
                        self.send(
                            usize::from(core),
                            MeshMsg::Publish {
                                msg: msg.clone(),
                                target: Target::Shared {
                                    group: group.clone(),
                                    exclude,
                                },
                            },
                        );
                    }
                }
            }
            None => {}
        }
    }

    /// Offers QoS 1/2 messages of a shared-group member that left to another member.
    pub(crate) fn redeliver_shared(
        self: &Rc<Self>,
        items: Vec<(Arc<str>, Arc<Message>)>,
        exclude: u64,
    ) {
        for (group, msg) in items {
            self.deliver_shared(&group, &msg, Some(exclude), true);
        }
    }

    // ---- sessions ----

    /// Removes a session from this core for a takeover by `successor`: closes its connection,
    /// handles its will, and returns the session to move (None if unknown, or ended: by
    /// clean start, or because it was not persistent). A moving session leaves a stub that
    /// forwards to `successor`.
    pub(crate) fn take_session(
        self: &Rc<Self>,
        key: u64,
        clean_start: bool,
        successor: u64,
    ) -> Option<Box<Session>> {
        let now = Instant::now();
        let mut e = self.st.borrow_mut().sessions.remove(&key)?;
        let author = self.will_author(&e);
        if let Sink::Conn(conn) = std::mem::replace(&mut e.sink, Sink::Offline(0)) {
            // Before the answer: the successor takes the debt once it has it.
            crate::limits::keep_publish_debt(self, &conn, &e.s.client_id);
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
        let will =
            e.s.will
                .take()
                .or_else(|| e.s.pending_will.take().map(|p| p.will));
        e.s.pending_will = None;
        if let Some(w) = will.filter(|_| ends) {
            self.publish_will(w, author, None, now);
        }
        if ends {
            self.persist_gone(&e.s.client_id);
            for (filter, _) in e.s.subs.iter() {
                self.unindex_subscription(filter, key);
            }
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
        let Some(mut e) = self.st.borrow_mut().sessions.remove(&key) else {
            return;
        };
        if !matches!(e.sink, Sink::Api(_)) {
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
        if !matches!(e.sink, Sink::Api(_)) {
            self.shared.registry.release(&e.s.client_id, key);
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
        if let Some(e) = self.st.borrow_mut().sessions.get_mut(&key) {
            e.token_acl = acl;
        }
    }

    /// The connection of session `key` closed.
    pub(crate) fn connection_closed(self: &Rc<Self>, key: u64, reason: &CloseReason) {
        let now = Instant::now();
        let (will, author, persistent, expiry, delay, client_id) = {
            let mut st = self.st.borrow_mut();
            let Some(e) = st.sessions.get_mut(&key) else {
                return;
            };
            let author = self.will_author(e);
            e.sink = match &e.sink {
                Sink::Conn(conn) => {
                    crate::limits::keep_publish_debt(self, conn, &e.s.client_id);
                    self.tell_disconnect(conn, &e.s, reason);
                    Sink::Offline(self.shared.security.listener_index(&conn.listener))
                }
                Sink::Offline(l) => Sink::Offline(*l),
                Sink::Api(_) => Sink::Offline(crate::auth::NO_LISTENER_INDEX),
            };
            if *reason == CloseReason::TakenOver {
                // Drained for a takeover, which takes the session right after and decides
                // about the will (`take_session`).
                return;
            }
            let will =
                e.s.will
                    .take()
                    .filter(|_| reason.publishes_will() && !self.stopping.get());
            (
                will,
                author,
                e.s.is_persistent(),
                e.s.session_expiry,
                e.s.will_delay,
                e.s.client_id.clone(),
            )
        };
        if !persistent {
            if let Some(w) = will {
                let origin = Some(Origin {
                    core: self.id,
                    session: key,
                });
                self.publish_will(w, author, origin, now);
            }
            self.end_session(key);
            return;
        }
        if self.stopping.get() {
            self.persist_closed(key);
            return;
        }
        let mut st = self.st.borrow_mut();
        let mut redeliver = Vec::new();
        let mut due_times = Vec::new();
        if let Some(e) = st.sessions.get_mut(&key) {
            if let Some(w) = will {
                let due = will::due(now, delay, expiry);
                e.s.pending_will = Some(Box::new(will::PendingWill { will: w, due }));
                due_times.push(due);
            }
            if expiry != u32::MAX {
                let at = now + Duration::from_secs(u64::from(expiry));
                e.s.expires_at = Some(at);
                due_times.push(at);
            }
            // Shared-group messages of a member that left go to another member.
            for o in e.s.inflight.extract(|o| {
                o.shared_group.is_some() && o.state != uringmq_session::OutState::PubComp
            }) {
                if let Some(g) = o.shared_group {
                    redeliver.push((g, o.msg));
                }
            }
            for q in e.s.queue.extract(|q| q.shared_group.is_some()) {
                if let Some(g) = q.shared_group {
                    redeliver.push((g, q.msg));
                }
            }
        }
        for at in due_times {
            st.timers.push(Reverse((at, key)));
        }
        drop(st);
        self.persist_closed(key);
        self.redeliver_shared(redeliver, key);
        debug!(client_id = %client_id, "session kept offline");
        // Fire at once if the will is due now.
        self.fire_timers(now);
    }

    /// Runs due timers: delayed wills and session expiry.
    pub(crate) fn fire_timers(self: &Rc<Self>, now: Instant) {
        loop {
            let key = {
                let mut st = self.st.borrow_mut();
                match st.timers.peek() {
                    Some(Reverse((due, _))) if *due <= now => {}
                    _ => return,
                }
                let Some(Reverse((_, key))) = st.timers.pop() else {
                    return;
                };
                key
            };
            let (will, author, expired) = {
                let mut st = self.st.borrow_mut();
                let Some(e) = st.sessions.get_mut(&key) else {
                    continue;
                };
                if !matches!(e.sink, Sink::Offline(_)) {
                    continue;
                }
                let will = match &e.s.pending_will {
                    Some(p) if p.due <= now => e.s.pending_will.take().map(|p| p.will),
                    _ => None,
                };
                let author = will.is_some().then(|| self.will_author(e));
                (will, author, e.s.expires_at.is_some_and(|at| at <= now))
            };
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
            }
        }
    }

    // ---- in-process API ----

    fn handle_api(self: &Rc<Self>, cmd: ApiCmd) {
        match cmd {
            ApiCmd::Publish(msg, applied) => {
                add(&self.stats().messages_in, 1);
                add(&self.stats().publish_bytes_in, msg.payload.len() as u64);
                if msg.retain {
                    self.retain(&msg);
                }
                self.route(&msg);
                if let Some(applied) = applied {
                    // Every core's replica hears of it before the caller goes on (FIFO).
                    self.flush_mesh();
                    let _ = applied.send(());
                }
            }
            ApiCmd::Subscribe {
                filter,
                opts,
                sink,
                reply,
            } => {
                let key = self.new_key();
                let n = Negotiated::in_process(format!("$api-{key:x}"), u16::MAX);
                let mut s = Session::new(&n, Protocol::V5, 0, 0, 0);
                let _ = s.subs.insert(&filter, opts, Default::default());
                self.install_session(key, Box::new(s), Sink::Api(sink));
                let shared = matches!(SharedFilter::parse(&filter), Ok(Some(_)));
                // The subscription is always new, so "send if new" sends too [MQTT-3.3.1-10].
                if !shared && opts.retain_handling != RetainHandling::DoNotSend {
                    self.send_retained(key, &filter, &opts);
                }
                // The caller may publish next: our interest must be on its way first.
                self.flush_mesh();
                let _ = reply.send(Ok(key));
            }
            ApiCmd::Unsubscribe { session } => self.end_session(session),
            ApiCmd::Clients(reply) => {
                let _ = reply.send(self.client_summaries());
            }
            ApiCmd::Kick {
                session,
                with_will,
                reply,
            } => {
                let conn = match self.st.borrow().sessions.get(&session).map(|e| &e.sink) {
                    Some(Sink::Conn(c)) => Some(c.clone()),
                    _ => None,
                };
                if let Some(c) = &conn {
                    c.kill(CloseReason::Kicked { will: with_will });
                }
                let _ = reply.send(conn.is_some());
            }
            ApiCmd::Sys(msgs) => self.publish_sys(msgs),
            ApiCmd::Snapshot(reply) => {
                self.refresh_gauges();
                let _ = reply.send(self.id);
            }
        }
    }

    /// This core's connected clients (sessions with a live connection).
    fn client_summaries(&self) -> Vec<ClientSummary> {
        let st = self.st.borrow();
        st.sessions
            .values()
            .filter_map(|e| match &e.sink {
                Sink::Conn(c) => Some(summary(c, &e.s)),
                _ => None,
            })
            .collect()
    }

    /// Hands a closed connection to the embedder's disconnect hook, on a hook thread.
    fn tell_disconnect(&self, conn: &Conn, s: &Session, reason: &CloseReason) {
        if let Some(hook) = self.shared.on_disconnect.clone() {
            let (client, why) = (summary(conn, s), reason.name());
            if !self.shared.hooks.notify(move || hook(client, why)) {
                debug!("disconnect hook not called: the hook threads are busy or stopped");
            }
        }
    }

    /// Sends the retained messages matching `filter` to session `key` (after SUBACK).
    pub(crate) fn send_retained(self: &Rc<Self>, key: u64, filter: &str, opts: &SubOptions) {
        self.drain_mesh();
        let now = Instant::now();
        let mut msgs = Vec::new();
        self.st
            .borrow()
            .retained
            .for_each_match(filter, |m| msgs.push(m.clone()));
        let mut guard = self.st.borrow_mut();
        let st = &mut *guard;
        for m in msgs {
            let d = Delivery::retained(&m, opts);
            self.deliver_to(st, key, &m, d, None, now, false);
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

/// Flushes the core's outbox once per event-loop turn in which something was queued.
async fn flush_loop(core: Rc<Core>) {
    while !core.finished.get() {
        core.outbox_ready.wait().await;
        core.flush_mesh();
    }
}

/// Builds and runs one core on the current thread until it stops.
pub(crate) fn run_core(
    id: u16,
    shared: Arc<Shared>,
    listeners: Vec<(Arc<crate::endpoint::Endpoint>, std::net::TcpListener)>,
    driver: Driver,
    pin: Option<usize>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    if let Some(cpu) = pin {
        if let Err(e) = monoio::utils::bind_to_cpu_set([cpu]) {
            debug!(core = id, "cannot pin to cpu {cpu}: {e:?}");
        }
    }
    macro_rules! go {
        ($driver:ty) => {{
            match monoio::RuntimeBuilder::<$driver>::new()
                .with_entries(1024)
                .uring_builder(crate::uring::builder(driver))
                .enable_timer()
                .build()
            {
                Ok(mut rt) => {
                    let _ = ready.send(Ok(()));
                    let core = Rc::new(Core::new(id, shared));
                    rt.block_on(core.clone().run(listeners));
                    drop(core);
                }
                Err(e) => {
                    let _ = ready.send(Err(format!("core {id}: {e}")));
                }
            }
        }};
    }
    match driver {
        Driver::Epoll => go!(monoio::LegacyDriver),
        Driver::IoUring => go!(monoio::IoUringDriver),
        Driver::Auto => go!(monoio::FusionDriver),
    }
    info!(core = id, "core thread exiting");
}

/// What `Broker::clients` and the disconnect hook tell about one connection.
fn summary(c: &Conn, s: &Session) -> ClientSummary {
    ClientSummary {
        client_id: s.client_id.to_string(),
        username: s.username.as_deref().map(str::to_owned),
        listener: c.listener.to_string(),
        peer: c.peer,
        protocol: c.protocol.get(),
        connected_since: s.connected_since,
    }
}
