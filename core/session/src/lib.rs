//! The MQTT session state machine: pure and deterministic (time is an argument), no I/O.
//!
//! One concept per module. The broker (`uringmq`) owns the sockets and the cores; it keeps one
//! [`Session`] per client and hands it the packets it decodes, the clock it reads and its
//! [`Limits`]: [`negotiate`] decides or refuses a CONNECT, and the handlers of [`inbound`]
//! (`Session::handle_publish`, `handle_puback` ... `handle_disconnect`) return the packet to
//! send and the message to route, or the [`Violation`] that ends the connection. So these
//! rules are unit-tested without a runtime: the `tests` module drives a session with a client
//! model and an explicit clock (`tests/harness.rs`).
#![warn(missing_docs)]

pub mod connect;
pub mod delivery;
mod deque;
pub mod flow;
pub mod hasher;
pub mod inbound;
pub mod inflight;
pub mod keepalive;
pub mod limits;
pub mod message;
pub mod qos2;
pub mod queue;
mod rare;
pub mod rate;
pub mod session;
pub mod subscriptions;
pub mod topic_alias;
pub mod violation;
pub mod will;

#[cfg(test)]
mod tests;

pub use connect::{negotiate, ConnectRefused, Negotiated};
pub use delivery::{Delivery, SubOptions};
pub use inbound::{Received, Route};
pub use inflight::{AckError, Inflight, OutEntry, OutState};
pub use limits::Limits;
pub use message::{Message, Origin};
pub use qos2::InboundQos2;
pub use queue::{Queue, QueueFull, Queued};
pub use rate::{PublishLimiter, TokenBucket};
pub use session::Session;
pub use subscriptions::{OverQuota, SubLimits, Subscriptions};
pub use topic_alias::{AliasError, InboundAliases, OutboundAliases};
pub use violation::Violation;
pub use will::PendingWill;
