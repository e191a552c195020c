//! Starting a broker: listeners bound first, then one thread per core.

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
use uringmq_session::ConnectLimits;

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
            crate::net::endpoints(&config).map_err(|e| invalid("listener", e.to_string()))?;
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
        let boot = crate::shard::persist::Boot::open(&config, cores, &registry)
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
