//! Broker settings: one struct shared by the config file, the command line and the Python bindings.
//!
//! Every key has a default, so an empty file is a valid config (the fixture case: loopback only,
//! anonymous allowed). Unknown keys are errors that name the key. Owns the `Config` struct and
//! its defaults (here), listener tables (`listener.rs`), the `[cluster]` table (`cluster.rs`),
//! reading (`load.rs`) and the checks
//! across keys with the per-listener effective values (`validate.rs`). A leaf: it imports
//! nothing else of the crate.

pub(crate) mod bridge;
mod cluster;
mod listener;
mod load;
#[cfg(test)]
mod tests;
mod validate;

pub use bridge::{Addresses, BridgeConfig, BridgeProtocol, BridgeTopic, Direction};
pub use cluster::ClusterConfig;
pub use listener::*;
pub use load::ConfigError;

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

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
    /// Bridges to other brokers (`[[bridge]]`, see `bridge.rs` and `crate::bridge`).
    #[serde(rename = "bridge")]
    pub bridges: Vec<BridgeConfig>,

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
    /// announces (`conn/read.rs`); the payload is then shared, not copied, with every
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
    /// core's epoll set, costing no user-space memory but its state (see `conn/hibernate.rs`).
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
    /// `[cluster]`: this node's place in a cluster (`cluster/config.rs`); absent: one node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,

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

pub(super) fn default_bind() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

pub(super) fn default_ws_path() -> String {
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
            bridges: Vec::new(),
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
            cluster: None,
            persistence_dir: None,
            persistence_sync: PersistenceSync::Interval,
            persistence_sync_interval_ms: 1000,
        }
    }
}
