//! Bridges (`[[bridge]]`): connections from this broker to other brokers that carry topics
//! out, in or both ways, configured like Mosquitto's `connection`/`address`/`topic` lines.
//!
//! A bridge is owned by one core (bridge `i` of the config on core `i % cores`; one added at
//! run time on the next core in turn). In a cluster a configured bridge runs on one node only,
//! started there by the cluster thread (`cluster/bridges.rs`). It has two sides on that core:
//! - **local**: a session (`Sink::Bridge`, see `link.rs`) subscribed to the `out` filters
//!   with the local prefix, No Local and Retain As Published. Deliveries reach it through the
//!   normal routing, so the remote is an ordinary subscriber: a bounded queue, never a brake
//!   on local clients. Inbound messages are published with that session as origin, so they
//!   do not go back out over the bridge. With `persistence_dir` the session and its QoS 1/2
//!   queue are written to the core's log like a client's persistent session and recovered
//!   to the bridge's core at start (`stored.rs`).
//! - **remote**: a client connection (`remote.rs`, `wire.rs` for TCP/TLS) that tries the
//!   addresses in turn, reconnects with exponential backoff and jitter, publishes the queue
//!   with the prefixes remapped, keeps QoS 1/2 in flight until the remote acknowledges, and
//!   subscribes to the `in` filters (`inbound.rs`: authorised like a PUBLISH, then routed).
//!
//! Loops: MQTT 5 remotes get No Local on our subscriptions; MQTT 3.1.1 remotes get
//! Mosquitto's bridge bit (protocol level `0x84`, `try_private`), which tells a Mosquitto or
//! uringmq remote not to send our own messages back.
//!
//! The bridges running on a core are in that core's thread-local list: only the core's
//! thread starts, stops and looks them up. Their counters are shared through [`Registry`].

mod inbound;
mod link;
mod remote;
mod report;
mod stored;
mod wire;

pub use link::BridgeStats;
pub(crate) use link::Link;
pub(crate) use report::{sys_values, METRICS};
pub(crate) use stored::is_store_key;

use crate::config::bridge::split_host_port;
use crate::config::{BridgeConfig, BridgeTopic};
use crate::shard::{LocalNotify, Shard, Sink};
use bytes::BytesMut;
use remote::{Outbox, HANDSHAKE_TIMEOUT};
use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stored::StoredQueue;
use tracing::{info, warn};
use uringmq_codec::{Decoder, Protocol, RetainHandling};
use uringmq_session::{Negotiated, Session, SubOptions};
use uringmq_transport::TlsClientSettings;

/// One running bridge.
pub(crate) struct Bridge {
    pub(crate) cfg: Arc<BridgeConfig>,
    pub(crate) link: Rc<Link>,
    /// The local session's key.
    pub(crate) key: u64,
    tls: Option<TlsClientSettings>,
    stop: LocalNotify,
    stopped: Cell<bool>,
}

thread_local! {
    /// The bridges of the core running on this thread.
    static RUNNING: RefCell<Vec<Rc<Bridge>>> = const { RefCell::new(Vec::new()) };
}

/// A bridge's state, as [`crate::Broker::bridges`] reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BridgeState {
    /// The bridge's name.
    pub name: String,
    /// Connected to the remote now.
    pub connected: bool,
    /// Messages waiting for the remote (in flight included).
    pub queued: u64,
    /// Messages published to the remote (QoS 1/2: acknowledged).
    pub sent: u64,
    /// Messages received from the remote and published here.
    pub received: u64,
    /// Messages dropped (queue full, QoS 0 while away, denied inbound).
    pub dropped: u64,
}

/// Every bridge's name, core and counters (touched when bridges come and go, and by
/// snapshots; never per message).
#[derive(Default)]
pub(crate) struct Registry {
    entries: Mutex<Vec<(String, u16, Arc<BridgeStats>)>>,
    /// Bridges ever added: the next one goes to core `added % cores`.
    added: std::sync::atomic::AtomicUsize,
}

impl Registry {
    fn insert(&self, name: &str, shard: u16) -> Option<Arc<BridgeStats>> {
        let mut e = self.entries.lock().ok()?;
        if e.iter().any(|(n, ..)| n == name) {
            return None;
        }
        let stats = Arc::new(BridgeStats::default());
        e.push((name.to_owned(), shard, stats.clone()));
        Some(stats)
    }

    fn remove(&self, name: &str) {
        if let Ok(mut e) = self.entries.lock() {
            e.retain(|(n, ..)| n != name);
        }
    }

    /// The core running bridge `name`.
    pub(crate) fn core_of(&self, name: &str) -> Option<u16> {
        let e = self.entries.lock().ok()?;
        e.iter().find(|(n, ..)| n == name).map(|(_, c, _)| *c)
    }

    /// The core for the next bridge added at run time.
    pub(crate) fn next_core(&self, cores: usize) -> u16 {
        (self.added.fetch_add(1, Ordering::Relaxed) % cores.max(1)) as u16
    }

    /// Every bridge's state, in the order they were added.
    pub(crate) fn states(&self) -> Vec<BridgeState> {
        let Ok(e) = self.entries.lock() else {
            return Vec::new();
        };
        e.iter()
            .map(|(name, _, s)| BridgeState {
                name: name.clone(),
                connected: s.connected.load(Ordering::Relaxed) != 0,
                queued: s.queued.load(Ordering::Relaxed),
                sent: s.sent.load(Ordering::Relaxed),
                received: s.received.load(Ordering::Relaxed),
                dropped: s.dropped.load(Ordering::Relaxed),
            })
            .collect()
    }
}

/// Starts a bridge added at run time (`ApiCmd::BridgeAdd`) on this core.
pub(crate) fn add(shard: &Rc<Shard>, cfg: BridgeConfig) -> Result<(), String> {
    start(shard, Arc::new(cfg))
}

/// Stops bridge `name` if it runs on this core (`ApiCmd::BridgeRemove`); its name is free
/// at once. Returns whether it ran here.
pub(crate) fn remove(shard: &Rc<Shard>, name: &str) -> bool {
    let found = RUNNING.with(|r| {
        let mut r = r.borrow_mut();
        let i = r.iter().position(|b| b.cfg.name == name)?;
        Some(r.remove(i))
    });
    if let Some(b) = &found {
        b.halt();
        shard.shared.bridges.remove(name);
    }
    found.is_some()
}

/// Starts the configured bridges that belong to `core`. In a cluster the cluster thread
/// starts each on the one node that runs it (`cluster/bridges.rs`).
pub(crate) fn start_configured(shard: &Rc<Shard>) {
    if shard.config().cluster.is_some() {
        return;
    }
    let cores = shard.shared.cores();
    let mine: Vec<_> = (shard.config().bridges.iter().enumerate())
        .filter(|(i, _)| i % cores == usize::from(shard.id))
        .map(|(_, b)| Arc::new(b.clone()))
        .collect();
    for cfg in mine {
        if let Err(e) = start(shard, cfg) {
            warn!(core = shard.id, "bridge not started: {e}");
        }
    }
}

/// Stops every bridge of this core (the core is stopping).
pub(crate) fn stop_all() {
    for b in RUNNING.with(|r| std::mem::take(&mut *r.borrow_mut())) {
        b.halt();
    }
}

/// Starts one bridge on `core`: its local session, then its connection task.
fn start(shard: &Rc<Shard>, cfg: Arc<BridgeConfig>) -> Result<(), String> {
    let tls = match &cfg.ca_file {
        None => None,
        Some(ca) => {
            let identity = cfg.cert_file.as_deref().zip(cfg.key_file.as_deref());
            Some(TlsClientSettings::load(ca, identity).map_err(|e| e.to_string())?)
        }
    };
    let stats = (shard.shared.bridges.insert(&cfg.name, shard.id))
        .ok_or_else(|| format!("a bridge named `{}` exists", cfg.name))?;
    let store_key = stored::store_key(&cfg.name);
    let mut n = Negotiated::in_process(store_key.clone(), u16::MAX);
    let queue = shard.persist.as_ref().map(|p| {
        // Written like a client's persistent session, for as long as the bridge exists.
        n.session_expiry = u32::MAX;
        StoredQueue::new(p.store.clone(), Arc::from(store_key.as_str()))
    });
    let link = Rc::new(Link::new(&cfg, stats, queue));
    let key = shard.new_key().ok_or(crate::shard::FULL)?;
    let mut s = Session::new(&n, Protocol::V5, 0, 0);
    for t in cfg.topics.iter().filter(|t| t.direction.is_out()) {
        let _ = s
            .subs
            .insert(&t.local_filter(), out_options(t), Default::default());
    }
    let recovered = (shard.shared.boot.as_ref()).and_then(|b| b.take_bridge(&store_key));
    shard.install_session(key, Box::new(s), Sink::Bridge(link.clone()));
    let outbox = stored::restore(&link, &cfg, recovered);
    // Our interest must be on its way before a caller publishes next.
    shard.flush_mesh();
    let b = Rc::new(Bridge {
        cfg,
        link,
        key,
        tls,
        stop: LocalNotify::default(),
        stopped: Cell::new(false),
    });
    RUNNING.with(|r| r.borrow_mut().push(b.clone()));
    monoio::spawn(run(shard.clone(), b, outbox));
    Ok(())
}

/// The local subscription of an `out` entry: No Local (what came in over the bridge stays
/// here) and Retain As Published (the remote gets RETAIN as published, as from Mosquitto).
fn out_options(t: &BridgeTopic) -> SubOptions {
    SubOptions {
        qos: t.qos(),
        no_local: true,
        retain_as_published: true,
        retain_handling: RetainHandling::SendAtSubscribe,
        id: None,
    }
}

impl Bridge {
    fn halt(&self) {
        self.stopped.set(true);
        self.stop.notify();
    }

    /// At each connection, as Mosquitto does: the retained messages of the `out` topics.
    fn send_retained(&self, shard: &Rc<Shard>) {
        for t in self.cfg.topics.iter().filter(|t| t.direction.is_out()) {
            shard.send_retained(self.key, &t.local_filter(), &out_options(t));
        }
    }
}

/// The bridge's task: connect, serve, back off, until stopped; then its session ends.
async fn run(shard: Rc<Shard>, b: Rc<Bridge>, outbox: Outbox) {
    let _guard = shard.task_guard();
    let addrs = b.cfg.address.list();
    let outbox = RefCell::new(outbox);
    let min = Duration::from_millis(b.cfg.reconnect_min_ms);
    let max = Duration::from_millis(b.cfg.reconnect_max_ms);
    let (mut delay, mut attempt) = (min, 0usize);
    while !b.stopped.get() && !shard.stopping.get() {
        let addr = &addrs[attempt % addrs.len()];
        let was_up = Cell::new(false);
        let result = monoio::select! {
            r = serve(&shard, &b, addr, &outbox, &was_up) => r,
            _ = b.stop.wait() => Ok(()),
        };
        b.link.connected.set(false);
        b.link.stats.connected.store(0, Ordering::Relaxed);
        let why = result.err().unwrap_or_else(|| "stopped".into());
        if was_up.get() {
            info!(bridge = %b.cfg.name, addr, "bridge disconnected: {why}");
            delay = min;
        } else {
            warn!(bridge = %b.cfg.name, addr, "bridge cannot connect: {why}");
            attempt += 1;
        }
        if b.stopped.get() || shard.stopping.get() {
            break;
        }
        let wait = jittered(delay, attempt);
        delay = (delay * 2).min(max);
        monoio::select! {
            _ = monoio::time::sleep(wait) => {},
            _ = b.stop.wait() => {},
        }
    }
    if !shard.stopping.get() {
        // Removed, not stopped with the broker: its stored queue goes with it.
        shard.persist_gone(&Arc::from(stored::store_key(&b.cfg.name)));
    }
    shard.end_session(b.key);
}

/// Between `d / 2` and `d`: reconnecting bridges (and clients) do not come back in step.
fn jittered(d: Duration, salt: usize) -> Duration {
    use std::hash::BuildHasher;
    let r = std::collections::hash_map::RandomState::new().hash_one(salt);
    let half = d / 2;
    half + Duration::from_nanos(r % (half.as_nanos() as u64).max(1))
}

/// One connection: connect, CONNECT/CONNACK, resume, then read and write until one fails.
async fn serve(
    shard: &Rc<Shard>,
    b: &Bridge,
    addr: &str,
    outbox: &RefCell<Outbox>,
    was_up: &Cell<bool>,
) -> Result<(), String> {
    let sa = resolve(addr).await?;
    let stream = monoio::time::timeout(HANDSHAKE_TIMEOUT, monoio::net::TcpStream::connect_addr(sa))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let tls = match &b.tls {
        None => None,
        Some(s) => Some(s.connect(server_name(b, addr)).map_err(|e| e.to_string())?),
    };
    let (mut rd, mut wr) = monoio::time::timeout(HANDSHAKE_TIMEOUT, wire::open(stream, tls))
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| format!("TLS: {e}"))?;
    wr.write(remote::connect_packet(b))
        .await
        .map_err(|e| e.to_string())?;
    let mut decoder = Decoder::with_protocol(remote::protocol(&b.cfg), u32::MAX >> 4);
    let mut buf = BytesMut::new();
    let connack = remote::await_connack(b, &mut rd, &mut buf, &mut decoder);
    let (live, present) = monoio::time::timeout(HANDSHAKE_TIMEOUT, connack)
        .await
        .map_err(|_| "no CONNACK".to_string())??;
    was_up.set(true);
    b.link.connected.set(true);
    BridgeStats::bump(&b.link.stats.connects);
    info!(bridge = %b.cfg.name, addr, session_present = present, "bridge connected");
    if !remote::resume(b, &live, &mut outbox.borrow_mut(), present) {
        b.link.stats.connected.store(1, Ordering::Relaxed);
    }
    b.send_retained(shard);
    monoio::select! {
        r = remote::reader(shard, b, &live, outbox, &mut rd, buf, decoder) => r,
        r = remote::writer(shard, b, &live, outbox, &mut wr) => r,
    }
}

/// The name the remote's certificate must carry.
fn server_name<'a>(b: &'a Bridge, addr: &'a str) -> &'a str {
    match &b.cfg.server_name {
        Some(n) => n,
        None => split_host_port(addr).map_or(addr, |(h, _)| h),
    }
}

/// `host:port` to an address; a host name is looked up on a thread of its own, since the
/// lookup blocks and a core must not.
async fn resolve(addr: &str) -> Result<SocketAddr, String> {
    let (host, port) = split_host_port(addr).ok_or("not host:port")?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let (tx, rx) = futures_channel::oneshot::channel();
    let query = (host.to_owned(), port);
    std::thread::Builder::new()
        .name("uringmq-resolve".into())
        .spawn(move || {
            let found = query.to_socket_addrs().ok().and_then(|mut a| a.next());
            let _ = tx.send(found);
        })
        .map_err(|e| e.to_string())?;
    rx.await
        .ok()
        .flatten()
        .ok_or_else(|| format!("cannot resolve `{host}`"))
}
