//! The embedding API: what the binary, the Python bindings and the end-to-end tests use to run a
//! broker in-process. CONTRACT: the Python bindings are written against these signatures; change
//! them only together with `python/src`.

use crate::config::ConfigError;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;
use uringmq_auth::{Authenticator, Authorizer};
use uringmq_codec::{Protocol, PublishProperties, QoS, RetainHandling};

/// Optional pluggable checks. A hook whose `is_blocking()` is true (a Python callback) is called on
/// a hook thread, never on a core.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Decides CONNECT for every client, anonymous ones (user name `None`) included, before
    /// the password file and the anonymous policy, as a Mosquitto auth plugin does; those
    /// decide only when it has no opinion (`decide` gives `None`).
    pub authenticator: Option<Arc<dyn Authenticator>>,
    /// Decides PUBLISH, SUBSCRIBE and delivery (after the ACL file, if any).
    pub authorizer: Option<Arc<dyn Authorizer>>,
    /// Told when a client's connection ends (after CONNACK); called on a hook thread, never on
    /// a core, and nobody waits for it. Notifications are queued in the order connections
    /// end, but with several hook threads two of them (say a client's `connection_lost` and,
    /// after it reconnected, its `session_taken_over`) may run concurrently or out of order.
    pub on_disconnect: Option<DisconnectHook>,
}

/// `on_disconnect(client, reason)`: `reason` is a stable name (`client_disconnected`,
/// `connection_lost`, `keep_alive_timeout`, `session_taken_over`, `protocol_error`,
/// `administrative_action`, `server_shutting_down`...).
pub type DisconnectHook = Arc<dyn Fn(ClientSummary, &'static str) + Send + Sync>;

/// A connected client, as listed by [`crate::Broker::clients`] and passed to
/// [`Hooks::on_disconnect`].
#[derive(Clone, Debug)]
pub struct ClientSummary {
    /// Client identifier (the assigned one if the client sent none).
    pub client_id: String,
    /// User name from CONNECT (or the certificate's CN with `use_identity_as_username`).
    pub username: Option<String>,
    /// Name of the listener the client came through.
    pub listener: String,
    /// The remote address.
    pub peer: Option<SocketAddr>,
    /// Protocol level of the connection.
    pub protocol: Protocol,
    /// When CONNECT was accepted (wall clock).
    pub connected_since: SystemTime,
}

/// Options of an in-process subscription: the MQTT 5 subscription options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Maximum QoS of the deliveries.
    pub qos: QoS,
    /// Do not deliver what this subscription publishes itself ([`crate::Subscription::publish`])
    /// [MQTT-3.8.3-3].
    pub no_local: bool,
    /// Keep the RETAIN flag of live messages [MQTT-3.3.1-12].
    pub retain_as_published: bool,
    /// Whether retained messages are sent when the subscription is made (`DoNotSend`: no;
    /// an in-process subscription is always new, so `SendIfNew` sends them).
    pub retain_handling: RetainHandling,
    /// Subscription identifier (1..=268,435,455) carried by every delivery [MQTT-3.8.2-1].
    pub subscription_identifier: Option<u32>,
}

/// Why a broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A bad setting.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be bound (address in use, permission...).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error (`kind() == AddrInUse` for a port conflict).
        source: std::io::Error,
    },
    /// A core's runtime could not be built (e.g. io_uring required but blocked).
    #[error("cannot start the runtime: {0}")]
    Runtime(String),
}

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The broker is stopped.
    #[error("the broker is not running")]
    NotRunning,
    /// Invalid topic name or filter.
    #[error("invalid topic: {0}")]
    InvalidTopic(String),
    /// The broker did not answer in time.
    #[error("the broker did not answer in time")]
    Timeout,
    /// An option out of range (its name and why).
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// The in-process publisher may not publish to this topic: a `$SYS/` topic, or the ACL
    /// file or the authorisation hook denied it (the topic and why).
    #[error("not authorised: {0}")]
    NotAuthorized(String),
    /// A session image that cannot be installed (`Broker::import_session`): not an image,
    /// or the client id has a session here already.
    #[error("session not imported: {0}")]
    Session(String),
}

/// The client id an in-process publish ([`crate::Broker::publish`],
/// [`crate::Subscription::publish`]) is authorised as, through the listener `default`, with
/// the user name of [`InjectedMessage::username`]. `$` makes it a name no MQTT client is
/// assigned, though a client may send it; an ACL `pattern` with `%c` sees this id.
pub const IN_PROCESS_CLIENT_ID: &str = "$inprocess";

/// The listener an in-process publish is authorised through (the top-level listener's name).
pub const IN_PROCESS_LISTENER: &str = "default";

/// A message published from the embedding program (no socket involved).
#[derive(Clone, Debug, Default)]
pub struct InjectedMessage {
    /// Topic name (no wildcards).
    pub topic: String,
    /// Payload, shared with every subscriber.
    pub payload: Bytes,
    /// QoS of the message (subscribers get the minimum of this and their subscription's QoS).
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// v5 properties passed to subscribers (content type, response topic, user properties...).
    pub properties: PublishProperties,
    /// The user name the publish is authorised as (the ACL file's rules for that user, and the
    /// hook's `ClientInfo::username`); `None`: anonymous, so the ACL file's anonymous and
    /// `pattern` rules apply. The client id is [`IN_PROCESS_CLIENT_ID`].
    pub username: Option<String>,
}

/// A message delivered to an in-process subscription.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Topic name.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS as delivered (minimum of message and subscription).
    pub qos: QoS,
    /// Retain flag as delivered (set for retained messages sent on subscribe).
    pub retain: bool,
    /// v5 properties of the message.
    pub properties: PublishProperties,
}

/// Broker counters, summed over cores.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Open client connections.
    pub connections: u64,
    /// Sessions (connected and offline persistent).
    pub sessions: u64,
    /// Subscriptions (ordinary and shared).
    pub subscriptions: u64,
    /// Retained messages (the broker's own `$SYS` topics not included).
    pub retained: u64,
    /// PUBLISH packets received from clients (and injected).
    pub messages_in: u64,
    /// PUBLISH packets sent to clients (and in-process subscribers).
    pub messages_out: u64,
    /// Bytes read from sockets.
    pub bytes_in: u64,
    /// Bytes written to sockets.
    pub bytes_out: u64,
    /// QoS 0 messages dropped because a connection's outbound buffer was full.
    pub dropped_qos0: u64,
    /// Messages dropped because a session queue was full.
    pub dropped_queue_full: u64,
    /// Messages dropped because their message expiry interval passed.
    pub expired: u64,
    /// Connections refused or closed for a protocol violation.
    pub protocol_errors: u64,
    /// CONNECTs refused by authentication.
    pub auth_failures: u64,
    /// CONNECTs refused because too many authentications were in progress on their listener
    /// or from their address, or the hook threads' queue was full.
    pub auth_busy: u64,
    /// Blocking checks (hooks, password hashes) that gave no answer within `hook_timeout_ms`.
    pub hook_timeouts: u64,
    /// Open connections hibernating: idle, parked in their core's epoll set without a task
    /// (`hibernate_after_ms`).
    pub hibernating: u64,
    /// Wills their client may not publish: refused at CONNECT (0x87), or dropped when due
    /// because the ACL was reloaded since.
    pub wills_denied: u64,
    /// PUBLISH packets over their client's `max_publish_rate`/`max_publish_bytes_rate`: held
    /// back (read again once the rate allows), counted once per PUBLISH; a v5 client held
    /// back for more than 5 s in a row is disconnected with 0x96.
    pub publish_rate_limited: u64,
    /// New connections closed right after accept for their listener's `max_connection_rate`
    /// or `max_connection_rate_per_source`.
    pub connections_rate_limited: u64,
    /// MQTT packets of every type received from clients (Mosquitto's `messages/received`).
    pub packets_in: u64,
    /// MQTT packets of every type sent (Mosquitto's `messages/sent`): `messages_out` plus
    /// every CONNACK, PUBACK, SUBACK, PINGRESP, DISCONNECT... written.
    pub packets_out: u64,
    /// Payload bytes of the PUBLISH packets counted in `messages_in`.
    pub publish_bytes_in: u64,
    /// Payload bytes of the PUBLISH packets counted in `messages_out`.
    pub publish_bytes_out: u64,
    /// CONNECT packets received (accepted or not).
    pub connects: u64,
    /// Sockets accepted on all listeners.
    pub sockets: u64,
    /// Persistent sessions ended because their expiry interval passed.
    pub sessions_expired: u64,
    /// Shared subscriptions (`$share/...`), also counted in `subscriptions`.
    pub shared_subscriptions: u64,
    /// Messages waiting in session queues (offline sessions, or beyond the in-flight window).
    pub queued_messages: u64,
    /// Payload bytes of `queued_messages`.
    pub queued_bytes: u64,
    /// QoS 1/2 messages sent and not yet acknowledged.
    pub inflight_messages: u64,
    /// Payload bytes of the retained messages.
    pub retained_bytes: u64,
    /// Accepts that failed (out of descriptors: the accept loop backs off, see `conn/limits.rs`).
    pub accept_failures: u64,
    /// Idle connections that could not be detached from their task for want of a descriptor
    /// (the core then stops trying for a second).
    pub detach_failures: u64,
}

/// What a reload did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// What was re-read successfully (`listener <name>` for certificates, `password_file`,
    /// `acl_file`, and `acl_file (listener <name>)` for a listener's own files).
    pub reloaded: Vec<String>,
    /// What failed, with why; the previous version of each stays in force.
    pub errors: Vec<String>,
}
