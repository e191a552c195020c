//! Broker settings: one struct shared by the config file, the command line and the Python bindings.
//!
//! Every key has a default, so an empty file is a valid config (the fixture case: loopback only,
//! anonymous allowed). Unknown keys are errors that name the key.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

/// Which io driver the cores use. Decided once for all cores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Driver {
    /// io_uring when the kernel allows it, else epoll. `MONOIO_FORCE_LEGACY_DRIVER=1` forces epoll.
    #[default]
    Auto,
    /// io_uring only; starting fails where it is blocked.
    IoUring,
    /// epoll (monoio's legacy driver).
    Epoll,
}

/// How a `$share` group picks the member that gets a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SharedStrategy {
    /// Each member in turn, across all cores.
    #[default]
    RoundRobin,
    /// A member chosen at random.
    Random,
    /// Prefer a member on the publisher's core, round-robin there; other cores only if none.
    Local,
}

/// How the binary writes its log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (for log shippers): `timestamp`, `level`, `fields`.
    Json,
}

/// When the durable store is synced to disk (`persistence_sync`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PersistenceSync {
    /// Nothing is acknowledged (PUBACK, PUBREC, SUBACK, CONNACK of a persistent session)
    /// before what it depends on is synced, on every core involved. One sync per core per
    /// event-loop turn, shared by everything the turn produced.
    Always,
    /// Synced every `persistence_sync_interval_ms`: a crash loses at most that window; a clean
    /// stop loses nothing.
    #[default]
    Interval,
    /// Written, never synced by the broker (the OS decides); a clean stop still syncs.
    Never,
}

/// Transport of a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Plain MQTT over TCP.
    #[default]
    Tcp,
    /// MQTT over TLS (rustls).
    Tls,
    /// MQTT over WebSocket.
    Ws,
    /// MQTT over WebSocket over TLS.
    Wss,
}

/// An extra listener (`[[listener]]` tables). The top-level `bind`/`port` is the default listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Name used in logs and by auth rules; defaults to `transport:port`.
    #[serde(default)]
    pub name: Option<String>,
    /// Address to bind (`localhost` is 127.0.0.1).
    #[serde(default = "default_bind", deserialize_with = "de_bind")]
    pub bind: IpAddr,
    /// Port (0 picks a free one).
    pub port: u16,
    /// Transport.
    #[serde(default)]
    pub transport: Transport,
    /// Connection limit of this listener (0 = only the global limit).
    #[serde(default)]
    pub max_connections: usize,
    /// WebSocket path (ws/wss only).
    #[serde(default = "default_ws_path")]
    pub ws_path: String,
    /// PEM certificate chain (tls/wss).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key (tls/wss).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// PEM CA bundle for client certificates (tls/wss).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Require a client certificate signed by `ca_file`.
    #[serde(default)]
    pub require_certificate: bool,
    /// Take the username from the client certificate's CN.
    #[serde(default)]
    pub use_identity_as_username: bool,
    /// Overrides the global `allow_anonymous` for this listener.
    #[serde(default)]
    pub allow_anonymous: Option<bool>,
    /// This listener's own password file, instead of the global `password_file`. Like
    /// Mosquitto's `per_listener_settings true`, a listener that sets it checks its clients
    /// against this file only; unlike Mosquitto the switch is per key and per listener, so a
    /// listener that leaves it unset keeps the global file.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// This listener's own ACL file, instead of the global `acl_file` (per key, as
    /// `password_file`).
    #[serde(default)]
    pub acl_file: Option<PathBuf>,
    /// Overrides the global `scram_sha256` for this listener.
    #[serde(default)]
    pub scram_sha256: Option<bool>,
    /// Overrides the global `max_publish_rate` for this listener's clients.
    #[serde(default)]
    pub max_publish_rate: Option<u64>,
    /// Overrides the global `max_publish_bytes_rate` for this listener's clients.
    #[serde(default)]
    pub max_publish_bytes_rate: Option<u64>,
    /// Overrides the global `max_connection_rate` for this listener.
    #[serde(default)]
    pub max_connection_rate: Option<u64>,
    /// Overrides the global `max_connection_rate_per_source` for this listener.
    #[serde(default)]
    pub max_connection_rate_per_source: Option<u64>,
    /// This listener's own JWT secret (HS256/384/512); a listener that sets any `jwt_*_file`
    /// key verifies tokens with its own keys only (per listener, as `password_file`).
    #[serde(default)]
    pub jwt_secret_file: Option<PathBuf>,
    /// This listener's own PEM public key for JWTs (RS*/PS*/ES*).
    #[serde(default)]
    pub jwt_public_key_file: Option<PathBuf>,
    /// This listener's own JWKS file.
    #[serde(default)]
    pub jwt_jwks_file: Option<PathBuf>,
    /// Overrides the global `jwt_username_claim` for this listener.
    #[serde(default)]
    pub jwt_username_claim: Option<String>,
    /// Overrides the global `jwt_acl_claim` for this listener.
    #[serde(default)]
    pub jwt_acl_claim: Option<String>,
}

impl ListenerConfig {
    /// A loopback listener with every optional key at its default (path `/mqtt`, no TLS files,
    /// no limit of its own, the global anonymous policy).
    pub fn new(transport: Transport, port: u16) -> Self {
        ListenerConfig {
            name: None,
            bind: default_bind(),
            port,
            transport,
            max_connections: 0,
            ws_path: default_ws_path(),
            cert_file: None,
            key_file: None,
            ca_file: None,
            require_certificate: false,
            use_identity_as_username: false,
            allow_anonymous: None,
            password_file: None,
            acl_file: None,
            scram_sha256: None,
            max_publish_rate: None,
            max_publish_bytes_rate: None,
            max_connection_rate: None,
            max_connection_rate_per_source: None,
            jwt_secret_file: None,
            jwt_public_key_file: None,
            jwt_jwks_file: None,
            jwt_username_claim: None,
            jwt_acl_claim: None,
        }
    }

    /// Whether this listener has JWT keys of its own.
    pub fn has_own_jwt_keys(&self) -> bool {
        self.jwt_secret_file.is_some()
            || self.jwt_public_key_file.is_some()
            || self.jwt_jwks_file.is_some()
    }
}

/// An IP address, or `localhost` for 127.0.0.1: users write it as they would for Mosquitto's
/// `listener 1883 localhost`, and a name lookup for other host names would make the bound
/// address depend on the resolver at start (Mosquitto resolves them; we refuse them by name).
/// The `bind` keys and the binary's `--bind` flag.
pub fn parse_bind(s: &str) -> Result<IpAddr, String> {
    if s.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    s.parse().map_err(|_| {
        format!(
            "{s:?} is not an IP address (write an address such as 0.0.0.0 or ::1, or localhost)"
        )
    })
}

fn de_bind<'de, D: serde::Deserializer<'de>>(d: D) -> Result<IpAddr, D::Error> {
    parse_bind(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

/// All broker settings. Field names are the config-file keys and the Python keyword arguments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the default listener. Loopback by default: nothing is exposed unless asked for.
    /// `localhost` is 127.0.0.1.
    #[serde(deserialize_with = "de_bind")]
    pub bind: IpAddr,
    /// Port of the default listener; 0 picks a free port (read it back from the running broker).
    pub port: u16,
    /// Number of cores (threads); 0 means one per available CPU.
    pub cores: usize,
    /// Pin each core's thread to one CPU.
    pub pin_cores: bool,
    /// io driver.
    pub driver: Driver,
    /// `tracing` filter for the binary (`info`, `debug`, `uringmq=debug`...).
    pub log_level: String,
    /// Extra listeners.
    #[serde(rename = "listener")]
    pub listeners: Vec<ListenerConfig>,

    /// Maximum simultaneous connections over all listeners (0 = unlimited).
    pub max_connections: usize,
    /// New connections a second each listener accepts (0 = unlimited); a `[[listener]]` may
    /// set its own. Each core owns an equal share (no lock); beyond it a new socket is closed
    /// right after accept, before reading its CONNECT.
    pub max_connection_rate: u64,
    /// New connections a second each listener accepts from one source address (an IPv6
    /// address counts by its /64), checked before `max_connection_rate` so that one host
    /// connecting in a loop cannot use up the listener's rate and lock everyone else out
    /// (0 = unlimited, the default: clients behind one NAT share an address). Split over the
    /// cores like `max_connection_rate`; a `[[listener]]` may set its own.
    pub max_connection_rate_per_source: u64,
    /// PUBLISH packets a second one client may send (0 = unlimited), with a burst of one
    /// second's worth. Beyond it a client is not read from until its rate allows, so TCP
    /// slows it down; a v5 client held back for more than 5 s in a row is then disconnected
    /// with 0x96 (Message rate too high).
    pub max_publish_rate: u64,
    /// Bytes a second one client may publish (0 = unlimited), counting whole PUBLISH packets
    /// as sent (header, topic, properties, payload); burst and excess as `max_publish_rate`;
    /// a single larger message passes on a full bucket.
    pub max_publish_bytes_rate: u64,
    /// Largest packet accepted from a client, bytes (announced in CONNACK as Maximum Packet Size).
    ///
    /// Default 16 MiB: room for real payloads such as firmware images (Mosquitto allows the
    /// protocol's 256 MiB), while what one client can make the broker hold stays bounded: the
    /// read buffer grows with the bytes that actually arrive, not with the size a header
    /// announces (`connection.rs`); the payload is then shared, not copied, with every
    /// subscriber; and what waits for a subscriber is bounded by `max_outbound_bytes` (one
    /// message past it at most) and `max_queued_bytes` (equal, so a message of the largest
    /// size can still be queued for an offline session).
    pub max_packet_size: u32,
    /// Receive Maximum announced to v5 clients and the outbound in-flight window per client
    /// (QoS 1 and 2 messages sent and not yet acknowledged).
    pub max_inflight: u16,
    /// Messages queued per session (offline, or beyond the in-flight window). 0 = unlimited.
    pub max_queued_messages: usize,
    /// Bytes of payload queued per session. 0 = unlimited.
    pub max_queued_bytes: usize,
    /// Queue QoS 0 messages for offline persistent sessions (Mosquitto's `queue_qos0_messages`).
    pub queue_qos0_messages: bool,
    /// Bytes that may wait in one connection's write buffer before QoS 0 messages to it are dropped
    /// and QoS 1/2 messages wait in the session queue instead: a reader that stops reading never
    /// slows anyone else.
    pub max_outbound_bytes: usize,
    /// Maximum number of levels in a topic name or filter.
    pub max_topic_levels: usize,
    /// Longest topic name or filter accepted, bytes (at most 65535, the protocol's limit).
    ///
    /// Default 4096: topic names in use are tens of bytes (AWS IoT allows 256), so this is
    /// far beyond any real one, while every byte of a filter is kept in the index of its core
    /// and in every core's interest index. Mosquitto has no such limit. A longer filter gets
    /// SUBACK 0x8F Topic Filter invalid (3.x: 0x80); a longer PUBLISH topic ends the
    /// connection (v5: DISCONNECT 0x90 Topic Name invalid), as too many levels do; a will
    /// topic refuses the CONNECT (v5: CONNACK 0x90).
    pub max_topic_length: usize,
    /// Maximum subscriptions per client (0 = unlimited).
    pub max_subscriptions_per_client: usize,
    /// Bytes all of one client's filters may take together (0 = unlimited). A filter that
    /// would go past it gets SUBACK 0x97 Quota exceeded (3.x: 0x80).
    ///
    /// Default 1 MiB: 10,000 filters (`max_subscriptions_per_client`) of 100 bytes each. The
    /// count alone let one client hold 1,000 filters of 60 KB (60 MB, several times that in
    /// index memory, replicated per core).
    pub max_subscription_bytes_per_client: usize,
    /// Seconds a new socket may take to send CONNECT before it is closed.
    pub connect_timeout_secs: u32,
    /// A connection that has sent nothing for this long gives up its task and waits in the
    /// core's epoll set, costing no user-space memory but its state (see `hibernate.rs`).
    /// 0 never hibernates.
    pub hibernate_after_ms: u64,
    /// Largest keep-alive accepted; a v5 client asking more is told Server Keep Alive.
    /// 0 = no limit. Mosquitto's `max_keepalive` default is 65535.
    pub max_keepalive: u16,
    /// Upper bound on a client's Session Expiry Interval, seconds (u32::MAX = never expire).
    pub max_session_expiry_secs: u32,
    /// Topic Alias Maximum announced to v5 clients (0 disables inbound aliases).
    pub topic_alias_maximum: u16,
    /// Use topic aliases towards v5 clients that allow them.
    pub outbound_topic_aliases: bool,
    /// Maximum QoS granted (0, 1 or 2).
    pub max_qos: u8,
    /// Whether retained messages are supported.
    pub retain_available: bool,
    /// Maximum number of retained messages (0 = unlimited).
    pub max_retained_messages: usize,
    /// `$share` balancing strategy.
    pub shared_subscription_strategy: SharedStrategy,

    /// Allow clients without a username. `None`: allowed while every listener is on loopback,
    /// refused once a non-loopback listener exists (secure default).
    pub allow_anonymous: Option<bool>,
    /// Mosquitto-format password file.
    pub password_file: Option<PathBuf>,
    /// Mosquitto-format ACL file.
    pub acl_file: Option<PathBuf>,
    /// Offer MQTT 5 enhanced authentication with SCRAM-SHA-256, checked against the
    /// `SCRAM-SHA-256$` entries of the password file in force on the client's listener (made
    /// by `uringmq passwd -H scram-sha-256`), so the password never crosses the wire.
    pub scram_sha256: bool,
    /// Milliseconds to wait before a refusing CONNACK after failed authentication, against
    /// password guessing (the connection waits; the core does not).
    pub auth_failure_delay_ms: u64,
    /// JWT authentication: a file holding the HMAC secret (HS256/384/512). The CONNECT
    /// password carries the token; see `uringmq_auth::jwt`.
    pub jwt_secret_file: Option<PathBuf>,
    /// JWT authentication: a PEM public key, RSA (RS256/384/512, PS256/384/512) or EC
    /// (ES256/384).
    pub jwt_public_key_file: Option<PathBuf>,
    /// JWT authentication: a JWKS document (`{"keys": [...]}`), keys picked by `kid`.
    pub jwt_jwks_file: Option<PathBuf>,
    /// The token claim that holds the user name.
    pub jwt_username_claim: String,
    /// The token claim that holds the client's ACL (`{"pub": [filters], "sub": [filters]}`,
    /// `%c`/`%u` substituted); unset: tokens carry no ACL and the `acl_file` applies.
    pub jwt_acl_claim: Option<String>,
    /// Threads that run blocking checks (password hashes, Python hooks); 0 = one per CPU,
    /// at least two.
    pub hook_threads: usize,
    /// Milliseconds a blocking check (a hook, a password hash) may take. Past it the client is
    /// refused (CONNACK 0x88 Server unavailable / v3 3; a PUBLISH or SUBSCRIBE is denied) and
    /// a warning is logged; the thread stuck in it is replaced.
    pub hook_timeout_ms: u64,
    /// Authentications in progress (waiting for or running on a hook thread) per listener;
    /// past it a CONNECT is refused with 0x89 Server busy (v3: 3 Server unavailable).
    /// 0 = unlimited.
    pub max_pending_auth: usize,
    /// Authentications in progress per client IP address; past it a CONNECT is refused with
    /// 0x9F Connection rate exceeded (v3: 3 Server unavailable), so one address flooding wrong
    /// passwords cannot fill the hook threads' queue for everyone. 0 = unlimited.
    pub max_pending_auth_per_address: usize,

    /// Seconds between `$SYS/broker/...` updates (Mosquitto's `sys_interval`); 0 turns them off.
    pub sys_interval_secs: u64,
    /// Address of the HTTP endpoint serving `/metrics` (Prometheus text), `/healthz` and
    /// `/readyz`, e.g. `127.0.0.1:9883` (port 0 picks a free one). Unset: no endpoint.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Log line format of the binary: `text` or `json`.
    pub log_format: LogFormat,

    /// Directory of the durable store (Mosquitto's `persistence_location` with `persistence
    /// true`): sessions, subscriptions, queued and in-flight QoS 1/2 messages, inbound QoS 2
    /// ids and retained messages survive a restart and a crash. Each core writes its own log
    /// there. Unset: memory only.
    pub persistence_dir: Option<PathBuf>,
    /// When the store is synced: `always`, `interval` or `never` (see [`PersistenceSync`]).
    pub persistence_sync: PersistenceSync,
    /// Milliseconds between syncs with `persistence_sync = "interval"`: what a crash can lose.
    pub persistence_sync_interval_ms: u64,
}

fn default_bind() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

fn default_ws_path() -> String {
    "/mqtt".to_owned()
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: default_bind(),
            port: 1883,
            cores: 0,
            pin_cores: true,
            driver: Driver::Auto,
            log_level: "info".to_owned(),
            listeners: Vec::new(),
            max_connections: 0,
            max_connection_rate: 0,
            max_connection_rate_per_source: 0,
            max_publish_rate: 0,
            max_publish_bytes_rate: 0,
            max_packet_size: 16 * 1024 * 1024,
            max_inflight: 64,
            max_queued_messages: 1000,
            max_queued_bytes: 16 * 1024 * 1024,
            queue_qos0_messages: false,
            max_outbound_bytes: 1024 * 1024,
            max_topic_levels: 128,
            max_topic_length: 4096,
            max_subscriptions_per_client: 10_000,
            max_subscription_bytes_per_client: 1024 * 1024,
            connect_timeout_secs: 10,
            hibernate_after_ms: 1000,
            max_keepalive: 65535,
            max_session_expiry_secs: u32::MAX,
            topic_alias_maximum: 64,
            outbound_topic_aliases: true,
            max_qos: 2,
            retain_available: true,
            max_retained_messages: 0,
            shared_subscription_strategy: SharedStrategy::RoundRobin,
            allow_anonymous: None,
            password_file: None,
            acl_file: None,
            scram_sha256: false,
            auth_failure_delay_ms: 500,
            jwt_secret_file: None,
            jwt_public_key_file: None,
            jwt_jwks_file: None,
            jwt_username_claim: "sub".to_owned(),
            jwt_acl_claim: None,
            hook_threads: 0,
            hook_timeout_ms: 5000,
            max_pending_auth: 1024,
            max_pending_auth_per_address: 64,
            sys_interval_secs: 10,
            metrics_listen: None,
            log_format: LogFormat::Text,
            persistence_dir: None,
            persistence_sync: PersistenceSync::Interval,
            persistence_sync_interval_ms: 1000,
        }
    }
}

/// A bad setting. The message always names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, unknown key, or a value of the wrong type.
    #[error("invalid config: {0}")]
    Parse(String),
    /// A value out of range or inconsistent with another.
    #[error("invalid value for `{key}`: {reason}")]
    Invalid {
        /// The offending key.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl Config {
    /// Parses and validates a TOML document.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a TOML file. Relative paths in it (password, ACL and
    /// certificate files) are relative to the file's folder, as Mosquitto's `include_dir` and
    /// nginx do, so a config works whatever the working directory; errors name the whole path.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Io {
            path: path.clone(),
            source,
        })?;
        let in_file = |e: ConfigError| match e {
            ConfigError::Parse(m) => ConfigError::Parse(format!("{}: {m}", path.display())),
            ConfigError::Invalid { key, reason } => ConfigError::Invalid {
                key,
                reason: format!("{reason} (in {})", path.display()),
            },
            other => other,
        };
        let mut config: Config =
            toml::from_str(&text).map_err(|e| in_file(ConfigError::Parse(e.to_string())))?;
        config.resolve_paths(path.parent().unwrap_or(Path::new("/")));
        config.validate().map_err(in_file)?;
        Ok(config)
    }

    /// Makes every relative file path absolute against `dir`.
    fn resolve_paths(&mut self, dir: &Path) {
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(p) = p.as_mut().filter(|p| p.is_relative()) {
                *p = dir.join(&*p);
            }
        };
        for p in [
            &mut self.password_file,
            &mut self.acl_file,
            &mut self.jwt_secret_file,
            &mut self.jwt_public_key_file,
            &mut self.jwt_jwks_file,
            &mut self.persistence_dir,
        ] {
            fix(p);
        }
        for l in &mut self.listeners {
            for p in [
                &mut l.cert_file,
                &mut l.key_file,
                &mut l.ca_file,
                &mut l.password_file,
                &mut l.acl_file,
                &mut l.jwt_secret_file,
                &mut l.jwt_public_key_file,
                &mut l.jwt_jwks_file,
            ] {
                fix(p);
            }
        }
    }

    /// The config as a TOML document (every key, with its value).
    pub fn to_toml_string(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks ranges and consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn bad(key: &'static str, reason: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                key,
                reason: reason.into(),
            })
        }
        if self.max_packet_size < 64 || self.max_packet_size > 268_435_460 {
            return bad("max_packet_size", "must be between 64 and 268435460 bytes");
        }
        if self.max_inflight == 0 {
            return bad("max_inflight", "must be at least 1");
        }
        if self.max_qos > 2 {
            return bad("max_qos", "must be 0, 1 or 2");
        }
        if self.max_topic_levels == 0 {
            return bad("max_topic_levels", "must be at least 1");
        }
        if self.max_topic_length == 0 || self.max_topic_length > 65_535 {
            return bad("max_topic_length", "must be between 1 and 65535 bytes");
        }
        if self.max_outbound_bytes < 1024 {
            return bad("max_outbound_bytes", "must be at least 1024");
        }
        if self.connect_timeout_secs == 0 {
            return bad("connect_timeout_secs", "must be at least 1");
        }
        let claims = std::iter::once(Some(&self.jwt_username_claim))
            .chain(self.listeners.iter().map(|l| l.jwt_username_claim.as_ref()));
        if claims.flatten().any(|c| c.is_empty()) {
            return bad("jwt_username_claim", "must not be empty");
        }
        if self.hook_timeout_ms == 0 {
            return bad("hook_timeout_ms", "must be at least 1");
        }
        if self.persistence_sync_interval_ms == 0 {
            return bad("persistence_sync_interval_ms", "must be at least 1");
        }
        if self.log_level.trim().is_empty() {
            return bad("log_level", "must not be empty");
        }
        if self.scram_sha256 && self.password_file.is_none() {
            return bad(
                "scram_sha256",
                "needs a password_file with SCRAM-SHA-256 entries (uringmq passwd -H scram-sha-256)",
            );
        }
        for l in &self.listeners {
            if self.scram_enabled(Some(l))
                && l.password_file.is_none()
                && self.password_file.is_none()
            {
                return bad(
                    "listener.scram_sha256",
                    format!(
                        "listener `{}` offers SCRAM-SHA-256 but has no password_file (its own or \
                         the global one) to hold the SCRAM-SHA-256 entries",
                        crate::endpoint::listener_name(l)
                    ),
                );
            }
            if matches!(l.transport, Transport::Tls | Transport::Wss)
                && (l.cert_file.is_none() || l.key_file.is_none())
            {
                return bad(
                    "listener",
                    "tls and wss listeners need cert_file and key_file",
                );
            }
            if l.require_certificate && l.ca_file.is_none() {
                return bad("listener", "require_certificate needs ca_file");
            }
            if matches!(l.transport, Transport::Ws | Transport::Wss) && !l.ws_path.starts_with('/')
            {
                return bad("listener", "ws_path must start with '/'");
            }
            // Auth settings are looked up by listener name: a listener with files of its own
            // must not share its name with another (two unnamed listeners on port 0 would).
            let name = crate::endpoint::listener_name(l);
            let same_name = std::iter::once("default".to_owned())
                .chain(self.listeners.iter().map(crate::endpoint::listener_name))
                .filter(|n| *n == name)
                .count();
            let own_files = l.password_file.is_some() || l.acl_file.is_some();
            if (own_files || l.has_own_jwt_keys()) && same_name > 1 {
                return bad(
                    "listener.name",
                    format!(
                        "listener `{name}` has its own password_file/acl_file/jwt keys, so its \
                         name must be unique: give each [[listener]] a distinct `name`"
                    ),
                );
            }
        }
        Ok(())
    }

    /// The number of cores to run: `cores`, or one per available CPU.
    pub fn effective_cores(&self) -> usize {
        if self.cores > 0 {
            self.cores
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }

    /// Whether SCRAM-SHA-256 enhanced authentication is offered on `listener` (`None`: the
    /// default listener): its own `scram_sha256`, else the global one.
    pub fn scram_enabled(&self, listener: Option<&ListenerConfig>) -> bool {
        listener
            .and_then(|l| l.scram_sha256)
            .unwrap_or(self.scram_sha256)
    }

    /// A listener's publish limits (messages, bytes a second; 0 = unlimited): its own keys,
    /// else the global ones (`None`: the default listener).
    pub fn publish_rates(&self, listener: Option<&ListenerConfig>) -> (u64, u64) {
        (
            listener
                .and_then(|l| l.max_publish_rate)
                .unwrap_or(self.max_publish_rate),
            listener
                .and_then(|l| l.max_publish_bytes_rate)
                .unwrap_or(self.max_publish_bytes_rate),
        )
    }

    /// A listener's connection rate (accepts a second; 0 = unlimited): its own, else the
    /// global one (`None`: the default listener).
    pub fn connection_rate(&self, listener: Option<&ListenerConfig>) -> u64 {
        listener
            .and_then(|l| l.max_connection_rate)
            .unwrap_or(self.max_connection_rate)
    }

    /// A listener's connection rate per source address (0 = unlimited): its own, else the
    /// global one (`None`: the default listener).
    pub fn connection_rate_per_source(&self, listener: Option<&ListenerConfig>) -> u64 {
        listener
            .and_then(|l| l.max_connection_rate_per_source)
            .unwrap_or(self.max_connection_rate_per_source)
    }

    /// The JWT settings in force on `listener` (`None`: the default listener): its own keys
    /// and claims if it sets keys, else the global ones (claims overridable per listener).
    pub fn jwt_settings(&self, listener: Option<&ListenerConfig>) -> uringmq_auth::JwtSettings {
        let own = listener.filter(|l| l.has_own_jwt_keys());
        let username_claim = listener.and_then(|l| l.jwt_username_claim.clone());
        let acl_claim = listener.and_then(|l| l.jwt_acl_claim.clone());
        uringmq_auth::JwtSettings {
            secret_file: own
                .map_or(&self.jwt_secret_file, |l| &l.jwt_secret_file)
                .clone(),
            public_key_file: own
                .map_or(&self.jwt_public_key_file, |l| &l.jwt_public_key_file)
                .clone(),
            jwks_file: own
                .map_or(&self.jwt_jwks_file, |l| &l.jwt_jwks_file)
                .clone(),
            username_claim: username_claim.unwrap_or_else(|| self.jwt_username_claim.clone()),
            acl_claim: acl_claim.or_else(|| self.jwt_acl_claim.clone()),
        }
    }

    /// Whether anonymous clients are allowed on a listener bound to `addr` (secure default:
    /// only while everything is on loopback).
    pub fn anonymous_allowed(&self, listener: Option<&ListenerConfig>) -> bool {
        if let Some(v) = listener.and_then(|l| l.allow_anonymous) {
            return v;
        }
        if let Some(v) = self.allow_anonymous {
            return v;
        }
        self.bind.is_loopback() && self.listeners.iter().all(|l| l.bind.is_loopback())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_takes_localhost_and_names_a_host_name() {
        let c = Config::from_toml_str(
            "bind = \"localhost\"\n[[listener]]\nbind = \"LOCALHOST\"\nport = 0\n",
        )
        .unwrap();
        assert_eq!(c.bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(c.listeners[0].bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
        let e = Config::from_toml_str("bind = \"broker.lan\"").unwrap_err();
        assert!(e.to_string().contains("not an IP address"), "{e}");
    }

    #[test]
    fn a_files_relative_paths_and_errors_name_its_folder() {
        let dir = std::env::temp_dir().join(format!("uringmq-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("b.toml");
        std::fs::write(&file, "acl_file = \"acl\"\npassword_file = \"/abs/p\"\njwt_secret_file = \"s\"\n[[listener]]\nport = 0\nname = \"l\"\ncert_file = \"tls/c.pem\"\njwt_jwks_file = \"j.json\"\n").unwrap();
        let c = Config::from_file(&file).unwrap();
        assert_eq!(c.jwt_secret_file, Some(dir.join("s")));
        assert_eq!(c.listeners[0].jwt_jwks_file, Some(dir.join("j.json")));
        assert_eq!(c.acl_file, Some(dir.join("acl")));
        assert_eq!(c.password_file, Some(PathBuf::from("/abs/p")));
        assert_eq!(c.listeners[0].cert_file, Some(dir.join("tls/c.pem")));
        std::fs::write(&file, "port = 1\n\n\n\nmax_inflihgt = 3\n").unwrap();
        let e = Config::from_file(&file).unwrap_err().to_string();
        assert!(
            e.contains(&file.display().to_string()) && e.contains("line 5"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_example_config_is_the_default_and_documents_every_key() {
        let text = include_str!("../../../uringmq.example.toml");
        assert_eq!(Config::from_toml_str(text).unwrap(), Config::default());
        let uncommented: String = text
            .lines()
            .map(|l| l.trim_start_matches("# "))
            .collect::<Vec<_>>()
            .join("\n");
        for line in Config::default().to_toml_string().lines() {
            if let Some((key, _)) = line.split_once(" = ") {
                let documented = uncommented.contains(&format!("{key} = "))
                    || uncommented.contains(&format!("[[{key}]]"));
                assert!(documented, "{key} is not documented");
            }
        }
        // Every key of a `[[listener]]` table too (each optional one set, so none is skipped).
        let every = ListenerConfig {
            name: Some("lan".into()),
            cert_file: Some("c".into()),
            key_file: Some("k".into()),
            ca_file: Some("ca".into()),
            allow_anonymous: Some(true),
            password_file: Some("p".into()),
            acl_file: Some("a".into()),
            scram_sha256: Some(true),
            max_publish_rate: Some(1),
            max_publish_bytes_rate: Some(1),
            max_connection_rate: Some(1),
            max_connection_rate_per_source: Some(1),
            jwt_secret_file: Some("s".into()),
            jwt_public_key_file: Some("k".into()),
            jwt_jwks_file: Some("j".into()),
            jwt_username_claim: Some("sub".into()),
            jwt_acl_claim: Some("acl".into()),
            ..ListenerConfig::new(Transport::Tcp, 1884)
        };
        for line in toml::to_string(&every).unwrap_or_default().lines() {
            if let Some((key, _)) = line.split_once(" = ") {
                let documented = uncommented.contains(&format!("\n{key} = "));
                assert!(documented, "listener key {key} is not documented");
            }
        }
    }

    #[test]
    fn empty_document_is_the_default() {
        assert_eq!(Config::from_toml_str("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml_str("max_inflihgt = 3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_inflihgt"), "{err}");
    }

    #[test]
    fn out_of_range_value_is_named() {
        let err = Config::from_toml_str("max_qos = 3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_qos"), "{err}");
    }

    #[test]
    fn round_trips_through_toml() {
        let mut c = Config {
            port: 0,
            ..Config::default()
        };
        c.listeners.push(ListenerConfig::new(Transport::Ws, 9001));
        assert_eq!(Config::from_toml_str(&c.to_toml_string()).unwrap(), c);
    }

    #[test]
    fn per_listener_files_need_a_unique_listener_name() {
        let table = |name: &str| {
            format!("[[listener]]\nname = \"{name}\"\nport = 0\nacl_file = \"/etc/acl\"\n")
        };
        let c = Config::from_toml_str(&(table("a") + &table("b"))).unwrap();
        assert_eq!(c.listeners[0].acl_file, Some(PathBuf::from("/etc/acl")));
        assert_eq!(c.listeners[1].password_file, None);
        for clash in [table("a") + &table("a"), table("default")] {
            let err = Config::from_toml_str(&clash).unwrap_err().to_string();
            assert!(err.contains("listener.name"), "{err}");
        }
        // Two unnamed listeners on port 0 are both `tcp:0`.
        let unnamed = "[[listener]]\nport = 0\n[[listener]]\nport = 0\npassword_file = \"p\"\n";
        assert!(Config::from_toml_str(unnamed).is_err());
    }

    #[test]
    fn scram_needs_a_password_file_in_force_on_its_listener() {
        let err = Config::from_toml_str("scram_sha256 = true").unwrap_err();
        assert!(err.to_string().contains("`scram_sha256`"), "{err}");
        let table = "[[listener]]\nname = \"s\"\nport = 0\nscram_sha256 = true\n";
        let err = Config::from_toml_str(table).unwrap_err().to_string();
        assert!(
            err.contains("listener.scram_sha256") && err.contains("`s`"),
            "{err}"
        );
        let own = format!("{table}password_file = \"/etc/p\"\n");
        let c = Config::from_toml_str(&own).unwrap();
        assert!(c.scram_enabled(Some(&c.listeners[0])) && !c.scram_enabled(None));
        // Global on, one listener opting out; the global file serves the others.
        let global = "password_file = \"/etc/p\"\nscram_sha256 = true\n\
                      [[listener]]\nport = 0\nscram_sha256 = false\n";
        let c = Config::from_toml_str(global).unwrap();
        assert!(c.scram_enabled(None) && !c.scram_enabled(Some(&c.listeners[0])));
    }

    #[test]
    fn listener_rates_override_the_global_ones() {
        let text = "max_publish_rate = 10\nmax_connection_rate = 5\n\
                    [[listener]]\nport = 0\nmax_publish_bytes_rate = 100\nmax_connection_rate = 0\n";
        let c = Config::from_toml_str(text).unwrap();
        assert_eq!(c.publish_rates(None), (10, 0));
        assert_eq!(c.publish_rates(Some(&c.listeners[0])), (10, 100));
        assert_eq!(c.connection_rate(None), 5);
        assert_eq!(c.connection_rate(Some(&c.listeners[0])), 0);
        assert_eq!(c.connection_rate_per_source(None), 0);
    }

    #[test]
    fn anonymous_defaults_follow_exposure() {
        let mut c = Config::default();
        assert!(c.anonymous_allowed(None));
        c.bind = "0.0.0.0".parse().unwrap();
        assert!(!c.anonymous_allowed(None));
        c.allow_anonymous = Some(true);
        assert!(c.anonymous_allowed(None));
    }
}
