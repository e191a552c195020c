//! [`Broker`]: start, embed and stop a uringmq broker in-process.

use crate::api::{
    ApiError, ClientSummary, Delivery, Hooks, InjectedMessage, StartError, Stats, SubscribeOptions,
    IN_PROCESS_CLIENT_ID, IN_PROCESS_LISTENER,
};
use crate::auth::Security;
use crate::config::{Config, ConfigError, Driver, LogFormat};
use crate::core::{run_core, CoreStats, Shared};
use crate::endpoint::Endpoint;
use crate::hooks::HookPool;
use crate::mesh::{ApiCmd, ApiSink, EventFd, Mailbox, MeshMsg};
use crate::registry::Registry;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{info, warn};
use uringmq_auth::{Access, ClientInfo, EnhancedAuthenticator};
use uringmq_codec::QoS;
use uringmq_session::{ConnectLimits, Message, Origin, SubOptions};
use uringmq_topic::{validate_topic_filter, validate_topic_name, SharedFilter};

/// A running broker. Dropping it stops it.
pub struct Broker {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    listeners: Vec<(String, SocketAddr)>,
    /// The listeners' run-time settings (certificates reloaded on SIGHUP).
    pub(crate) endpoints: Vec<Arc<Endpoint>>,
    /// Password file and ACL (re-read on SIGHUP).
    pub(crate) security: Arc<Security>,
    /// `$SYS`, the metrics endpoint and the snapshot they read (`ops/`).
    ops: crate::ops::Ops,
    running: bool,
}

/// How long an API call waits for a core to answer.
const API_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether io_uring is used, decided once for all cores.
fn pick_driver(d: Driver) -> Driver {
    match d {
        Driver::Auto => {
            let forced = std::env::var("MONOIO_FORCE_LEGACY_DRIVER")
                .is_ok_and(|v| !v.is_empty() && v != "0");
            if forced || !monoio::utils::detect_uring() {
                Driver::Epoll
            } else {
                Driver::IoUring
            }
        }
        other => other,
    }
}

fn invalid(key: &'static str, reason: impl Into<String>) -> StartError {
    StartError::Config(ConfigError::Invalid {
        key,
        reason: reason.into(),
    })
}

impl Broker {
    /// Starts a broker: binds every listener (a port conflict is [`StartError::Bind`] before any
    /// thread starts), then one thread per core.
    pub fn start(config: Config) -> Result<Broker, StartError> {
        Self::start_with_hooks(config, Hooks::default())
    }

    /// Starts a broker with authentication/authorisation hooks.
    pub fn start_with_hooks(config: Config, hooks: Hooks) -> Result<Broker, StartError> {
        Self::start_with_auth(config, hooks, Vec::new())
    }

    /// Starts a broker with hooks and MQTT 5 enhanced authentication methods (CONNECT with an
    /// Authentication Method one of them handles runs its AUTH exchange, e.g. SCRAM-SHA-256).
    pub fn start_with_auth(
        config: Config,
        hooks: Hooks,
        enhanced: Vec<Arc<dyn EnhancedAuthenticator>>,
    ) -> Result<Broker, StartError> {
        config.validate()?;
        let cores = config.effective_cores().min(1024);
        let driver = pick_driver(config.driver);
        warn_about(&config, &hooks, !enhanced.is_empty());
        let security = Security::new(&config, &hooks, enhanced)?;
        let (authenticator, authorizer) = (security.authenticator(), security.authorizer());

        // Listeners: the default one plus `[[listener]]` tables; certificates load here.
        let endpoints =
            crate::endpoint::endpoints(&config).map_err(|e| invalid("listener", e.to_string()))?;
        let addrs = std::iter::once(SocketAddr::new(config.bind, config.port)).chain(
            config
                .listeners
                .iter()
                .map(|l| SocketAddr::new(l.bind, l.port)),
        );
        let mut per_core: Vec<Vec<(Arc<Endpoint>, std::net::TcpListener)>> =
            (0..cores).map(|_| Vec::new()).collect();
        let mut listeners = Vec::new();
        for (endpoint, addr) in endpoints.iter().zip(addrs) {
            let socks = crate::listener::bind(addr, cores)
                .map_err(|source| StartError::Bind { addr, source })?;
            let bound = socks[0]
                .local_addr()
                .map_err(|source| StartError::Bind { addr, source })?;
            listeners.push((endpoint.name.to_string(), bound));
            for (i, s) in socks.into_iter().enumerate() {
                per_core[i].push((endpoint.clone(), s));
            }
        }

        let blocking = authenticator.as_ref().is_some_and(|a| a.is_blocking())
            || authorizer.as_ref().is_some_and(|a| a.is_blocking())
            || hooks.on_disconnect.is_some();
        let limits = ConnectLimits {
            max_keepalive: config.max_keepalive,
            max_session_expiry: config.max_session_expiry_secs,
            max_inflight: config.max_inflight,
            max_packet_size: config.max_packet_size,
            topic_alias_maximum: config.topic_alias_maximum,
            max_qos: config.max_qos,
            retain_available: config.retain_available,
            outbound_topic_aliases: config.outbound_topic_aliases,
        };
        // Recovered sessions are placed (and their client ids claimed) before any core runs.
        let registry = Registry::default();
        let boot = crate::persist::Boot::open(&config, cores, &registry)
            .map_err(|e| invalid("persistence_dir", e.to_string()))?;
        let shared = Arc::new(Shared {
            limits,
            mailboxes: (0..cores).map(|_| Mailbox::default()).collect(),
            registry,
            boot,
            publish_debts: Default::default(),
            stats: (0..cores).map(|_| CoreStats::default()).collect(),
            hooks: HookPool::new(
                match (blocking, config.hook_threads) {
                    (false, _) => 0,
                    (true, 0) => HookPool::threads_for_machine(),
                    (true, n) => n,
                },
                Duration::from_millis(config.hook_timeout_ms),
            ),
            authenticator,
            authorizer,
            security: security.clone(),
            connections: AtomicUsize::new(0),
            next_assigned: AtomicU64::new(1),
            on_disconnect: hooks.on_disconnect.clone(),
            config,
        });

        // Before the cores: a `metrics_listen` port conflict fails the start like a listener's.
        let ops = crate::ops::Ops::start(Arc::new(crate::ops::Context {
            shared: shared.clone(),
            endpoints: endpoints.clone(),
            started: Instant::now(),
            stopping: Default::default(),
        }))?;
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let mut threads = Vec::with_capacity(cores);
        let mut broker = Broker {
            shared: shared.clone(),
            threads: Vec::new(),
            listeners,
            endpoints,
            security,
            ops,
            running: true,
        };
        for (i, ls) in per_core.into_iter().enumerate() {
            let (tx, rx) = std::sync::mpsc::channel();
            let shared = shared.clone();
            let pin = shared.config.pin_cores.then_some(i % cpus);
            let t = std::thread::Builder::new()
                .name(format!("uringmq-core-{i}"))
                .spawn(move || run_core(i as u16, shared, ls, driver, pin, tx))
                .map_err(|e| StartError::Runtime(e.to_string()))?;
            threads.push(t);
            broker.threads = std::mem::take(&mut threads);
            let ready = rx
                .recv()
                .unwrap_or_else(|_| Err(format!("core {i} died while starting")));
            threads = std::mem::take(&mut broker.threads);
            if let Err(e) = ready {
                broker.threads = threads;
                broker.stop();
                return Err(StartError::Runtime(e));
            }
        }
        broker.threads = threads;
        info!(
            addr = %broker.local_addr(),
            cores,
            driver = ?driver,
            "uringmq started"
        );
        Ok(broker)
    }

    /// The default listener's bound address (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.listeners[0].1
    }

    /// Every listener's name and bound address.
    pub fn listener_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.listeners.clone()
    }

    /// What the durable store recovered at start and has written since (None without
    /// `persistence_dir`). The store's counters are refreshed every 100 ms.
    pub fn persistence_stats(&self) -> Option<crate::PersistenceStats> {
        self.shared.boot.as_ref().map(|b| b.stats())
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Whether the broker runs.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Publishes a message in-process (no socket); it enters core 0 like a client's PUBLISH.
    ///
    /// It is authorised like a client's PUBLISH (every path that publishes is): a `$SYS/`
    /// topic is refused, then the ACL file and the authorisation hook decide for the client
    /// [`crate::IN_PROCESS_CLIENT_ID`] on the listener `default` with the user name
    /// [`InjectedMessage::username`] (`None`: the ACL file's anonymous and `pattern` rules
    /// apply). The check runs on the calling thread, so a blocking hook (Python) is called
    /// here, never on a core. A denied publish is [`ApiError::NotAuthorized`]. With no ACL
    /// file and no hook everything is allowed. Deliveries to clients are checked against
    /// each subscriber's `read` rules as usual.
    pub fn publish(&self, msg: InjectedMessage) -> Result<(), ApiError> {
        if !self.running {
            return Err(ApiError::NotRunning);
        }
        inject(&self.shared, msg, None)
    }

    /// Subscribes in-process; returns once the subscription is effective on every core (a
    /// message published afterwards by any client reaches it).
    pub fn subscribe(&self, filter: &str, qos: QoS) -> Result<Subscription, ApiError> {
        self.subscribe_with(
            filter,
            SubscribeOptions {
                qos,
                ..Default::default()
            },
        )
    }

    /// The connected clients of every core (after CONNACK; in no particular order).
    pub fn clients(&self) -> Result<Vec<ClientSummary>, ApiError> {
        if !self.running {
            return Err(ApiError::NotRunning);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        for mb in &self.shared.mailboxes {
            mb.push(MeshMsg::Api(ApiCmd::Clients(tx.clone())));
        }
        let deadline = Instant::now() + API_TIMEOUT;
        let mut all = Vec::new();
        for _ in 0..self.shared.cores() {
            let left = deadline.saturating_duration_since(Instant::now());
            all.extend(rx.recv_timeout(left).map_err(|_| ApiError::Timeout)?);
        }
        Ok(all)
    }

    /// Closes the connection of client `client_id`, as Mosquitto's
    /// `mosquitto_kick_client_by_clientid(id, with_will)` does: a v5 client gets DISCONNECT
    /// 0x98 (administrative action); its will is published only with `with_will` (Mosquitto's
    /// dynamic-security plugin kicks with `false`: an administrator's kick is not the
    /// abnormal loss a will announces), else it is discarded. A persistent session stays.
    /// Returns whether the client was connected.
    pub fn disconnect(&self, client_id: &str, with_will: bool) -> Result<bool, ApiError> {
        if !self.running {
            return Err(ApiError::NotRunning);
        }
        let Some(session) = self.shared.registry.owner(client_id) else {
            return Ok(false);
        };
        let (reply, rx) = std::sync::mpsc::channel();
        let core = usize::from(crate::registry::core_of(session));
        self.shared.mailboxes[core].push(MeshMsg::Api(ApiCmd::Kick {
            session,
            with_will,
            reply,
        }));
        rx.recv_timeout(API_TIMEOUT).map_err(|_| ApiError::Timeout)
    }

    /// Subscribes in-process with MQTT 5 subscription options; returns once the subscription
    /// is effective on every core.
    pub fn subscribe_with(
        &self,
        filter: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, ApiError> {
        if !self.running {
            return Err(ApiError::NotRunning);
        }
        let opts = sub_options(&options)?;
        match SharedFilter::parse(filter) {
            Ok(Some(_)) => {}
            Ok(None) => {
                validate_topic_filter(filter).map_err(|e| ApiError::InvalidTopic(e.to_string()))?
            }
            Err(e) => return Err(ApiError::InvalidTopic(e.to_string())),
        }
        // SAFETY: plain eventfd creation; the fd is owned by the ApiSink.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(ApiError::NotRunning);
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let event = Arc::new(EventFd(fd));
        let sink = Arc::new(ApiSink {
            tx,
            event: event.clone(),
        });
        let (reply_tx, reply_rx) = std::sync::mpsc::channel();
        self.shared.mailboxes[0].push(MeshMsg::Api(ApiCmd::Subscribe {
            filter: filter.to_owned(),
            opts,
            sink: sink.clone(),
            reply: reply_tx,
        }));
        let key = match reply_rx.recv_timeout(API_TIMEOUT) {
            Ok(r) => r?,
            Err(_) => return Err(ApiError::Timeout),
        };
        drop(sink);
        Ok(Subscription {
            shared: self.shared.clone(),
            key,
            rx,
            event,
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Counters summed over cores (the gauges computed on demand are refreshed first).
    pub fn stats(&self) -> Stats {
        self.snapshot().total()
    }

    fn snapshot(&self) -> crate::ops::Snapshot {
        crate::ops::snapshot(&self.shared, self.running)
    }

    /// The metrics in the Prometheus text format (what `GET /metrics` on `metrics_listen`
    /// serves), for embedders who serve their own endpoint.
    pub fn metrics_text(&self) -> String {
        self.ops.context().metrics_text()
    }

    /// The bound address of `metrics_listen` (port 0 resolved), if set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.ops.metrics_addr()
    }

    /// Stops the broker: closes the listeners (the port is free on return) and every
    /// connection (v5 clients get DISCONNECT 0x8B; no wills are published), and joins every
    /// thread but a hook thread stuck in a hook (detached: `stop` never waits for a hook, see
    /// `hooks.rs`). Idempotent.
    pub fn stop(&mut self) {
        if !self.running && self.threads.is_empty() {
            return;
        }
        self.running = false;
        self.ops.stop();
        for mb in &self.shared.mailboxes {
            mb.push(MeshMsg::Stop);
        }
        // Before joining the cores: queued checks are dropped (their connections end), and a
        // thread stuck in a hook is detached, so stop() returns whatever a hook does.
        self.shared.hooks.shutdown();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        info!("uringmq stopped");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Routes an injected message from core 0, as the in-process session `origin` if any; a
/// retained one is in every core's retained replica (or on its way ahead of anything the caller
/// does next) when this returns.
fn inject(shared: &Shared, msg: InjectedMessage, origin: Option<Origin>) -> Result<(), ApiError> {
    validate_topic_name(&msg.topic).map_err(|e| ApiError::InvalidTopic(e.to_string()))?;
    authorise(shared, &msg)?;
    let mut properties = msg.properties;
    properties.topic_alias = None;
    properties.subscription_identifiers.clear();
    let m = Message {
        topic: msg.topic.into(),
        payload: msg.payload,
        qos: msg.qos,
        retain: msg.retain,
        properties,
        origin,
        received_at: Instant::now(),
    };
    if !m.retain {
        shared.mailboxes[0].push(MeshMsg::Api(ApiCmd::Publish(Arc::new(m), None)));
        return Ok(());
    }
    // A retained message is stored before publish() returns, so a client that subscribes
    // afterwards, on any core, gets it (as after a client's PUBLISH was acknowledged); the
    // causality rule then holds because every mailbox is FIFO. Only retained messages pay
    // this round trip.
    let (applied, rx) = std::sync::mpsc::channel();
    shared.mailboxes[0].push(MeshMsg::Api(ApiCmd::Publish(Arc::new(m), Some(applied))));
    rx.recv_timeout(API_TIMEOUT).map_err(|_| ApiError::Timeout)
}

/// Authorises an in-process publish like a client's PUBLISH, on the caller's thread (never a
/// core's, so a blocking hook may run here): `$SYS/` is the broker's [§4.7.2] (Mosquitto
/// denies every write there), then the authoriser chain (ACL file, then the hook) decides
/// for [`IN_PROCESS_CLIENT_ID`] on [`IN_PROCESS_LISTENER`].
fn authorise(shared: &Shared, msg: &InjectedMessage) -> Result<(), ApiError> {
    let denied = |why: &str| Err(ApiError::NotAuthorized(format!("{}: {why}", msg.topic)));
    if Message::is_sys_topic(&msg.topic) {
        return denied("`$SYS/` topics are reserved to the broker");
    }
    let Some(a) = &shared.authorizer else {
        return Ok(());
    };
    let who = ClientInfo::new(
        IN_PROCESS_CLIENT_ID,
        msg.username.as_deref(),
        IN_PROCESS_LISTENER,
    );
    if a.authorize(&who, Access::Publish, &msg.topic) {
        Ok(())
    } else {
        denied("denied by the ACL file or the authorisation hook")
    }
}

/// The session options of an in-process subscription, checked as a SUBSCRIBE's would be.
fn sub_options(o: &SubscribeOptions) -> Result<SubOptions, ApiError> {
    if o.subscription_identifier == Some(0) || o.subscription_identifier > Some(268_435_455) {
        return Err(ApiError::InvalidOption(
            "subscription_identifier must be 1..268435455 [MQTT-3.8.2-1]".into(),
        ));
    }
    Ok(SubOptions {
        qos: o.qos,
        no_local: o.no_local,
        retain_as_published: o.retain_as_published,
        retain_handling: o.retain_handling,
        id: o.subscription_identifier,
    })
}

/// Start-up warnings for settings that are legal but rarely what the user meant.
fn warn_about(config: &Config, hooks: &Hooks, has_enhanced: bool) {
    let has_auth = hooks.authenticator.is_some() || config.password_file.is_some() || has_enhanced;
    let refused = std::iter::once(None)
        .chain(config.listeners.iter().map(Some))
        .filter(|l| !config.anonymous_allowed(*l))
        .filter(|l| {
            !has_auth && l.is_none_or(|l| l.password_file.is_none() && !l.use_identity_as_username)
        })
        .map(|l| l.map_or("default", |l| l.name.as_deref().unwrap_or("(unnamed)")))
        .collect::<Vec<_>>();
    if !refused.is_empty() {
        warn!(
            listeners = ?refused,
            "anonymous clients are refused (a listener is not on loopback) and no way to \
             authenticate is configured, so every client will be refused: set a password_file, \
             an authenticate hook, or allow_anonymous = true"
        );
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if config.cores > cpus {
        warn!(
            cores = config.cores,
            cpus, "more cores than CPUs: cores will share CPUs and wait on each other"
        );
    }
}

/// Why [`Subscription::recv_timeout`] returned without a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// Nothing arrived in time.
    #[error("timed out")]
    Timeout,
    /// The subscription was closed or the broker stopped.
    #[error("subscription closed")]
    Closed,
}

/// An in-process subscription. Dropping it unsubscribes.
pub struct Subscription {
    shared: Arc<Shared>,
    key: u64,
    rx: crossbeam_channel::Receiver<Delivery>,
    event: Arc<EventFd>,
    closed: std::sync::atomic::AtomicBool,
}

impl Subscription {
    /// Waits for the next delivery (`None`: forever).
    pub fn recv_timeout(&self, timeout: Option<Duration>) -> Result<Delivery, RecvError> {
        let r = match timeout {
            Some(t) => self.rx.recv_timeout(t).map_err(|e| match e {
                crossbeam_channel::RecvTimeoutError::Timeout => RecvError::Timeout,
                crossbeam_channel::RecvTimeoutError::Disconnected => RecvError::Closed,
            }),
            None => self.rx.recv().map_err(|_| RecvError::Closed),
        };
        if r.is_err() && self.closed.load(Ordering::Relaxed) {
            return Err(RecvError::Closed);
        }
        r
    }

    /// The next delivery, if one is waiting.
    pub fn try_recv(&self) -> Option<Delivery> {
        self.rx.try_recv().ok()
    }

    /// An eventfd that is readable while deliveries may be waiting (for asyncio
    /// `loop.add_reader`); drain with [`Subscription::try_recv`], call
    /// [`Subscription::clear_ready`], then drain again.
    pub fn event_fd(&self) -> RawFd {
        self.event.0
    }

    /// Resets the eventfd's readiness.
    pub fn clear_ready(&self) {
        let mut v: u64 = 0;
        // SAFETY: reading 8 bytes into a valid u64 from our non-blocking eventfd.
        unsafe { libc::read(self.event.0, (&mut v as *mut u64).cast(), 8) };
    }

    /// Publishes in-process as this subscription's session: a subscription with `no_local`
    /// does not receive it [MQTT-3.8.3-3]. Authorised as [`Broker::publish`] is.
    pub fn publish(&self, msg: InjectedMessage) -> Result<(), ApiError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(ApiError::NotRunning);
        }
        let origin = Origin {
            core: crate::registry::core_of(self.key),
            session: self.key,
        };
        inject(&self.shared, msg, Some(origin))
    }

    /// Unsubscribes (idempotent); Drop does too.
    pub fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.shared.mailboxes[usize::from(crate::registry::core_of(self.key))]
                .push(MeshMsg::Api(ApiCmd::Unsubscribe { session: self.key }));
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.close();
    }
}

/// Installs a `tracing` fmt subscriber with this filter (`info`, `uringmq=debug`...) and line
/// format (`log_format`). Only the first call in a process has an effect.
pub fn init_logging(filter: &str, format: LogFormat) {
    install_logging(filter, format, std::io::stdout);
}

/// Like [`init_logging`], but a background thread writes the lines, batched: a core only
/// formats a line into a queue, instead of one `write` system call per connect and per
/// disconnect (a connect storm spent its time there). Nothing is dropped: a core waits when
/// 128k lines are queued. Keep the guard until exit; dropping it writes what is queued.
pub fn init_logging_background(
    filter: &str,
    format: LogFormat,
) -> tracing_appender::non_blocking::WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("uringmq-log")
        .finish(std::io::BufWriter::new(std::io::stdout()));
    install_logging(filter, format, writer);
    guard
}

fn install_logging<W>(filter: &str, format: LogFormat, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        // The metrics endpoint stops by shutting its socket down; tiny_http's accept thread then
        // logs an ERROR that is no error. It logs nothing else of use (`ops/http.rs` logs).
        .add_directive("tiny_http=off".parse().expect("a valid directive"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stdout().is_terminal())
            .try_init(),
        // One object per line; the event's fields at the top level, where log shippers look.
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
