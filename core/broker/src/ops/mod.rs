//! Operations: what an operator watches. Owns the `$SYS/broker/...` topics (`sys_topics.rs`),
//! the Prometheus text (`metrics.rs`), the HTTP endpoint with `/metrics`, `/healthz` and
//! `/readyz` (`http.rs`) and the `uringmq-ops` thread that runs them. The counters and
//! histograms it reads are the cores' own (`shard/stats.rs`, `shard/histogram.rs`).
//!
//! Nothing here runs on a core. Cores only bump their own relaxed counters (`CoreStats`) and,
//! when a snapshot is taken, answer one mesh message (`ApiCmd::Snapshot`) after refreshing the
//! gauges that are cheaper to compute on demand than to keep (queued messages, shared
//! subscriptions): a walk over the core's sessions, once per scrape or `$SYS` tick, instead of
//! bookkeeping on every delivery. The reader then sums the cores' atomics.

mod cluster;
mod http;
mod metrics;
mod sys_topics;

use crate::api::{StartError, Stats};
use crate::mesh::{ApiCmd, MeshMsg};
use crate::net::Endpoint;
use crate::shard::histogram::HistogramSnapshot;
use crate::shard::{CoreStats, Shard, Shared};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use uringmq_session::Message;

/// How long a snapshot waits for the cores: a core that does not answer within this is not
/// ready (`/readyz`), and its gauges are reported as last refreshed.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(1);

impl Shard {
    /// Refreshes the gauges computed on demand (answering `ApiCmd::Snapshot`).
    pub(crate) fn refresh_gauges(&self) {
        let stats = self.stats();
        let set = |a: &std::sync::atomic::AtomicU64, v: usize| a.store(v as u64, Ordering::Relaxed);
        set(
            &stats.control_out,
            crate::shard::control_packets_written() as usize,
        );
        let st = self.st.borrow();
        let (mut queued, mut bytes, mut inflight) = (0, 0, 0);
        for e in st.sessions.iter() {
            queued += e.s.queue.len();
            bytes += e.s.queue.bytes();
            inflight += e.s.inflight.len();
        }
        set(&stats.queued_messages, queued);
        set(&stats.queued_bytes, bytes);
        set(&stats.inflight_messages, inflight);
        set(&stats.shared_subscriptions, st.routes.shared_members());
    }

    /// The broker's own `$SYS` messages: retained (outside `max_retained_messages`, which is
    /// for users' topics) and routed like any PUBLISH, so every core's subscribers get them and
    /// the ACL is asked on each delivery. Not counted as received: the broker sent them.
    pub(crate) fn publish_sys(self: &Rc<Self>, msgs: Vec<Arc<Message>>) {
        for msg in msgs {
            self.apply_retain(msg.clone());
            self.route(&msg);
            // After routing, as `Shard::accept` does (`shard/fresh.rs`).
            self.broadcast_retain(&msg);
        }
    }
}

/// All cores' counters at one moment.
pub(crate) struct Snapshot {
    /// One entry per core.
    pub(crate) cores: Vec<Stats>,
    pub(crate) connect_time: Vec<HistogramSnapshot>,
    pub(crate) timer_lag: Vec<HistogramSnapshot>,
    pub(crate) delivery_latency: Vec<HistogramSnapshot>,
    /// Whether every core answered the refresh in time.
    pub(crate) all_answered: bool,
    /// Every bridge's state (`crate::bridge`).
    pub(crate) bridges: Vec<crate::bridge::BridgeState>,
}

impl Snapshot {
    /// The cores' counters summed.
    pub(crate) fn total(&self) -> Stats {
        let mut t = Stats::default();
        for c in &self.cores {
            t.add(c);
        }
        t
    }
}

/// Asks every core to refresh its on-demand gauges; true when all answered in time.
pub(crate) fn refresh(shared: &Shared) -> bool {
    let (tx, rx) = crossbeam_channel::unbounded();
    for mb in shared.mailboxes.iter() {
        mb.push(MeshMsg::Api(ApiCmd::Snapshot(tx.clone())));
    }
    let deadline = Instant::now() + SNAPSHOT_TIMEOUT;
    (0..shared.cores()).all(|_| rx.recv_deadline(deadline).is_ok())
}

/// Refreshes (when `live`) and reads every core's counters.
pub(crate) fn snapshot(shared: &Shared, live: bool) -> Snapshot {
    let all_answered = live && refresh(shared);
    Snapshot {
        cores: shared.stats.iter().map(read_core).collect(),
        connect_time: histograms(shared, |c| &c.connect_time),
        timer_lag: histograms(shared, |c| &c.timer_lag),
        delivery_latency: histograms(shared, |c| &c.delivery_latency),
        all_answered,
        bridges: shared.bridges.states(),
    }
}

/// One histogram of every core.
fn histograms(
    shared: &Shared,
    h: fn(&CoreStats) -> &crate::shard::histogram::Histogram,
) -> Vec<HistogramSnapshot> {
    shared.stats.iter().map(|c| h(c).snapshot()).collect()
}

/// Names every counter that `Stats` and `CoreStats` share, once: reading a core and summing
/// two `Stats` cannot miss one.
macro_rules! shared_counters {
    ($($f:ident),* $(,)?) => {
        fn read_core(c: &CoreStats) -> Stats {
            let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            Stats {
                $($f: g(&c.$f),)*
                packets_out: g(&c.control_out) + g(&c.messages_out),
            }
        }

        impl Stats {
            fn add(&mut self, o: &Stats) {
                $(self.$f += o.$f;)*
                self.packets_out += o.packets_out;
            }
        }
    };
}

shared_counters!(
    connections,
    sessions,
    subscriptions,
    retained,
    messages_in,
    messages_out,
    bytes_in,
    bytes_out,
    dropped_qos0,
    dropped_queue_full,
    expired,
    protocol_errors,
    auth_failures,
    auth_busy,
    hook_timeouts,
    hibernating,
    wills_denied,
    publish_rate_limited,
    connections_rate_limited,
    accept_failures,
    detach_failures,
    packets_in,
    publish_bytes_in,
    publish_bytes_out,
    connects,
    sockets,
    sessions_expired,
    shared_subscriptions,
    queued_messages,
    queued_bytes,
    inflight_messages,
    retained_bytes,
);

/// What the ops thread and the HTTP handlers read.
pub(crate) struct Context {
    pub(crate) shared: Arc<Shared>,
    pub(crate) endpoints: Vec<Arc<Endpoint>>,
    pub(crate) started: Instant,
    pub(crate) stopping: AtomicBool,
    /// The cluster thread's status, once it runs (`[cluster]`): its families in `/metrics`.
    pub(crate) cluster: std::sync::OnceLock<Arc<crate::cluster::status::StatusBoard>>,
}

impl Context {
    /// The Prometheus text of a fresh snapshot.
    pub(crate) fn metrics_text(&self) -> String {
        let live = !self.stopping.load(Ordering::Relaxed);
        metrics::render(self, &snapshot(&self.shared, live))
    }
}

/// The `uringmq-ops` thread: `$SYS` every `sys_interval_secs`, HTTP requests in between.
pub(crate) struct Ops {
    ctx: Arc<Context>,
    server: Option<Arc<tiny_http::Server>>,
    /// The endpoint's listening socket, shut down on stop (`http::close`).
    listener: Option<std::net::TcpListener>,
    metrics_addr: Option<SocketAddr>,
    thread: Option<JoinHandle<()>>,
    /// Dropped to wake the thread when there is no server to unblock (a thread unpark would
    /// not do: the channel waits of `refresh` consume it).
    wake: Option<crossbeam_channel::Sender<()>>,
}

impl Ops {
    /// Binds `metrics_listen` (an error names the address) and starts the thread if `$SYS` or
    /// the endpoint is on.
    pub(crate) fn start(ctx: Arc<Context>) -> Result<Ops, StartError> {
        let cfg = &ctx.shared.config;
        let (server, listener, metrics_addr) = match cfg.metrics_listen {
            Some(addr) => {
                let b = http::bind(addr)?;
                (Some(Arc::new(b.server)), Some(b.listener), Some(b.addr))
            }
            None => (None, None, None),
        };
        let interval = Duration::from_secs(cfg.sys_interval_secs);
        let (wake, woken) = crossbeam_channel::bounded(0);
        let mut ops = Ops {
            ctx: ctx.clone(),
            server: server.clone(),
            listener,
            metrics_addr,
            thread: None,
            wake: Some(wake),
        };
        if server.is_none() && interval.is_zero() {
            return Ok(ops);
        }
        let t = std::thread::Builder::new()
            .name("uringmq-ops".into())
            .spawn(move || run(&ctx, server.as_deref(), interval, &woken))
            .map_err(|e| StartError::Runtime(e.to_string()))?;
        ops.thread = Some(t);
        Ok(ops)
    }

    /// The bound address of `metrics_listen` (port 0 resolved).
    pub(crate) fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    pub(crate) fn context(&self) -> &Context {
        &self.ctx
    }

    /// Stops the thread (the endpoint's port is free on return).
    pub(crate) fn stop(&mut self) {
        self.ctx.stopping.store(true, Ordering::Relaxed);
        self.wake = None;
        if let Some(t) = self.thread.take() {
            if let Some(s) = &self.server {
                s.unblock();
            }
            let _ = t.join();
        }
        self.server = None;
        if let Some(l) = self.listener.take() {
            http::close(&l);
        }
    }
}

impl Drop for Ops {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The ops thread wakes at least this often (a huge `sys_interval_secs` must not overflow a
/// deadline).
const LONGEST_WAIT: Duration = Duration::from_secs(3600);

fn run(
    ctx: &Context,
    server: Option<&tiny_http::Server>,
    interval: Duration,
    woken: &crossbeam_channel::Receiver<()>,
) {
    let mut sys = (!interval.is_zero()).then(|| sys_topics::SysTree::new(ctx.started));
    let mut next = Instant::now();
    while !ctx.stopping.load(Ordering::Relaxed) {
        let now = Instant::now();
        if let Some(tree) = sys.as_mut().filter(|_| now >= next) {
            publish_sys(ctx, tree, now);
            // On the interval's grid; a tick missed (a long snapshot) is not caught up.
            let due = next.checked_add(interval).unwrap_or(now + LONGEST_WAIT);
            next = if due > now {
                due
            } else {
                now + interval.min(LONGEST_WAIT)
            };
        }
        let wait = match sys {
            Some(_) => next.saturating_duration_since(Instant::now()),
            None => LONGEST_WAIT,
        }
        .min(LONGEST_WAIT);
        match server {
            Some(s) => match s.recv_timeout(wait) {
                Ok(Some(req)) => http::serve(ctx, req),
                Ok(None) => {}
                Err(e) => tracing::debug!("metrics endpoint: {e}"),
            },
            None => {
                let _ = woken.recv_timeout(wait);
            }
        }
    }
}

/// One `$SYS` tick: snapshot, the topics that changed, one mesh message to core 0.
fn publish_sys(ctx: &Context, tree: &mut sys_topics::SysTree, now: Instant) {
    let snap = snapshot(&ctx.shared, true);
    let received_at = Instant::now();
    let msgs: Vec<Arc<Message>> = tree
        .tick(&snap, now)
        .into_iter()
        .map(|(topic, payload)| {
            Arc::new(Message {
                topic: topic.into(),
                payload: payload.into(),
                // Mosquitto's SYS_TREE_QOS; subscribers get at most their subscription's QoS.
                qos: uringmq_codec::QoS::ExactlyOnce,
                retain: true,
                properties: Default::default(),
                origin: None,
                received_at,
            })
        })
        .collect();
    if !msgs.is_empty() {
        ctx.shared.mailboxes[0].push(MeshMsg::Api(ApiCmd::Sys(msgs)));
    }
}
