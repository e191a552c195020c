//! Starting a broker ([`Broker::builder`]): listeners bound first, then one thread per core.

use super::broker::Broker;
use crate::api::{Hooks, StartError};
use crate::config::{Config, ConfigError, Driver};
use crate::mesh::{Mailbox, Registry};
use crate::net::Endpoint;
use crate::security::{HookPool, Security};
use crate::shard::{run_core, CoreStats, Shared};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};
use uringmq_auth::EnhancedAuthenticator;
use uringmq_session::Limits;

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
    /// A broker to start with `config`: add hooks or enhanced authenticators, then
    /// [`BrokerBuilder::start`].
    ///
    /// ```no_run
    /// let broker = uringmq::Broker::builder(uringmq::Config::default()).start()?;
    /// # Ok::<(), uringmq::StartError>(())
    /// ```
    pub fn builder(config: Config) -> BrokerBuilder {
        BrokerBuilder {
            config,
            hooks: Hooks::default(),
            enhanced: Vec::new(),
        }
    }
}

/// What a broker starts with ([`Broker::builder`]).
#[must_use = "a builder does nothing until `start`"]
pub struct BrokerBuilder {
    config: Config,
    hooks: Hooks,
    enhanced: Vec<Arc<dyn EnhancedAuthenticator>>,
}

/// The listening sockets of every core, bound before any thread starts.
struct Bound {
    /// Per core: each endpoint with that core's socket.
    per_core: Vec<Vec<(Arc<Endpoint>, std::net::TcpListener)>>,
    /// Each listener's name and bound address (port 0 resolved).
    listeners: Vec<(String, SocketAddr)>,
    endpoints: Vec<Arc<Endpoint>>,
}

impl BrokerBuilder {
    /// Authentication/authorisation and disconnect hooks.
    pub fn hooks(mut self, hooks: Hooks) -> Self {
        self.hooks = hooks;
        self
    }

    /// An MQTT 5 enhanced authentication method: a CONNECT with an Authentication Method one
    /// of these handles runs its AUTH exchange (e.g. SCRAM-SHA-256). May be called repeatedly.
    pub fn enhanced_auth(mut self, method: Arc<dyn EnhancedAuthenticator>) -> Self {
        self.enhanced.push(method);
        self
    }

    /// Starts the broker: binds every listener (a port conflict is [`StartError::Bind`] before
    /// any thread starts), then one thread per core.
    pub fn start(self) -> Result<Broker, StartError> {
        let BrokerBuilder {
            config,
            hooks,
            enhanced,
        } = self;
        config.validate()?;
        let cores = config.effective_cores().min(1024);
        let driver = pick_driver(config.driver);
        warn_about(&config, &hooks, !enhanced.is_empty());
        let security = Security::new(&config, &hooks, enhanced)?;
        let bound = bind_all(&config, cores)?;
        let shared = shared_state(config, &hooks, &security, cores)?;
        // Before the cores: a `metrics_listen` port conflict fails the start like a listener's.
        let ops = crate::ops::Ops::start(Arc::new(crate::ops::Context {
            shared: shared.clone(),
            endpoints: bound.endpoints.clone(),
            started: Instant::now(),
            stopping: Default::default(),
            cluster: Default::default(),
        }))?;
        let mut broker = Broker {
            shared,
            threads: Vec::with_capacity(cores),
            listeners: bound.listeners,
            endpoints: bound.endpoints,
            security,
            ops,
            cluster: None,
            running: true,
        };
        start_cores(&mut broker, bound.per_core, driver)?;
        // Once the cores serve: a node registers only when it can take clients and links.
        if let Some(c) = &broker.shared.config.cluster {
            let cores = crate::cluster::CoreLink {
                hub: broker.shared.cluster.clone().unwrap_or_default(),
                mailboxes: broker.shared.mailboxes.clone(),
                bridges: broker.shared.config.bridges.clone().into(),
                held: {
                    let shared = broker.shared.clone();
                    Arc::new(move |id: &str| shared.registry.owner(id).is_some())
                },
            };
            let sessions = session_wiring(&broker.shared);
            match crate::cluster::Cluster::start(c, broker.ops.metrics_addr(), cores, sessions) {
                Ok(c) => {
                    let _ = broker.ops.context().cluster.set(c.board());
                    broker.cluster = Some(c);
                }
                Err(e) => {
                    broker.stop();
                    return Err(e);
                }
            }
        }
        info!(
            addr = %broker.local_addr(),
            cores,
            driver = ?driver,
            "uringmq started"
        );
        Ok(broker)
    }
}

/// Binds every listener (the default one plus `[[listener]]` tables) once per core; TLS
/// certificates load here.
fn bind_all(config: &Config, cores: usize) -> Result<Bound, StartError> {
    let endpoints =
        crate::net::endpoints(config).map_err(|e| invalid("listener", e.to_string()))?;
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
        let socks = crate::net::listener::bind(addr, cores)
            .map_err(|source| StartError::Bind { addr, source })?;
        let bound = socks[0]
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        listeners.push((endpoint.name.to_string(), bound));
        for (i, s) in socks.into_iter().enumerate() {
            per_core[i].push((endpoint.clone(), s));
        }
    }
    Ok(Bound {
        per_core,
        listeners,
        endpoints,
    })
}

/// What every core shares: limits, mailboxes, registry, counters and the hook threads (only
/// where a hook may block), and what the durable store recovered: its sessions are placed
/// (their client ids claimed) before any core runs.
fn shared_state(
    config: Config,
    hooks: &Hooks,
    security: &Arc<Security>,
    cores: usize,
) -> Result<Arc<Shared>, StartError> {
    let registry = Registry::default();
    let boot = crate::shard::persist::Boot::open(&config, cores, &registry)
        .map_err(|e| invalid("persistence_dir", e.to_string()))?;
    let (authenticator, authorizer) = (security.authenticator(), security.authorizer());
    let blocking = authenticator.as_ref().is_some_and(|a| a.is_blocking())
        || authorizer.as_ref().is_some_and(|a| a.is_blocking())
        || hooks.on_disconnect.is_some();
    let limits = Limits {
        max_keepalive: config.max_keepalive,
        max_session_expiry: config.max_session_expiry_secs,
        max_inflight: config.max_inflight,
        max_packet_size: config.max_packet_size,
        topic_alias_maximum: config.topic_alias_maximum,
        max_qos: config.max_qos,
        retain_available: config.retain_available,
        outbound_topic_aliases: config.outbound_topic_aliases,
        max_topic_levels: config.max_topic_levels,
        max_topic_length: config.max_topic_length,
    };
    Ok(Arc::new(Shared {
        limits,
        mailboxes: (0..cores).map(|_| Mailbox::default()).collect(),
        cluster: config.cluster.as_ref().map(|_| Default::default()),
        registry,
        boot,
        session_feed: config
            .cluster
            .as_ref()
            .and_then(|c| c.session_store.as_ref())
            .map(|_| Arc::default()),
        publish_debts: Default::default(),
        settle: Default::default(),
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
        bridges: Default::default(),
        config,
    }))
}

/// What the cluster's shared session store needs from the cores (with `session_store`): the
/// feed they push to, and the way back into their mailboxes.
fn session_wiring(shared: &Arc<Shared>) -> Option<crate::cluster::SessionWiring> {
    use crate::cluster::session_store::ToShard;
    use crate::mesh::{MeshMsg, PersistMsg};
    let feed = shared.session_feed.clone()?;
    let cores = shared.cores();
    let to = shared.clone();
    let post = Arc::new(move |m: ToShard| {
        let (core, msg) = match m {
            ToShard::Stored { shard, seq } => (usize::from(shard), PersistMsg::Stored { seq }),
            ToShard::Will(w) => (
                crate::store::home_shard(&w.client_id, cores),
                PersistMsg::DeadWill(w),
            ),
        };
        if let Some(mailbox) = to.mailboxes.get(core) {
            mailbox.push(MeshMsg::Persist(msg));
        }
    });
    Some(crate::cluster::SessionWiring {
        feed,
        post,
        shards: cores,
    })
}

/// Starts one thread per core, each after the previous one is running; a core that fails to
/// start stops the ones already running.
fn start_cores(
    broker: &mut Broker,
    per_core: Vec<Vec<(Arc<Endpoint>, std::net::TcpListener)>>,
    driver: Driver,
) -> Result<(), StartError> {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    for (i, ls) in per_core.into_iter().enumerate() {
        let (tx, rx) = std::sync::mpsc::channel();
        let shared = broker.shared.clone();
        let pin = shared.config.pin_cores.then_some(i % cpus);
        let t = std::thread::Builder::new()
            .name(format!("uringmq-core-{i}"))
            .spawn(move || run_core(i as u16, shared, ls, driver, pin, tx))
            .map_err(|e| StartError::Runtime(e.to_string()))?;
        broker.threads.push(t);
        let ready = rx
            .recv()
            .unwrap_or_else(|_| Err(format!("core {i} died while starting")));
        if let Err(e) = ready {
            broker.stop();
            return Err(StartError::Runtime(e));
        }
    }
    Ok(())
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
