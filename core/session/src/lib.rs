//! The MQTT session state machine: pure and deterministic (time is an argument), no I/O.
//!
//! One concept per module. The broker (`uringmq`) owns the sockets and the cores; it keeps one
//! [`Session`] per client and drives these pieces with the packets it decodes and the clock it
//! reads, so every rule here is unit-tested without a runtime.
#![warn(missing_docs)]

pub mod connect;
pub mod delivery;
pub mod flow;
pub mod hasher;
pub mod inflight;
pub mod keepalive;
pub mod message;
pub mod qos2;
pub mod queue;
pub mod rate;
pub mod session;
pub mod subscriptions;
pub mod topic_alias;
pub mod will;

pub use connect::{negotiate, ConnectLimits, ConnectRefused, Negotiated};
pub use delivery::{Delivery, SubOptions};
pub use inflight::{AckError, Inflight, OutEntry, OutState};
pub use message::{Message, Origin};
pub use qos2::InboundQos2;
pub use queue::{Queue, QueueFull, Queued};
pub use rate::{PublishLimiter, TokenBucket};
pub use session::Session;
pub use subscriptions::{OverQuota, SubLimits, Subscriptions};
pub use topic_alias::{AliasError, InboundAliases, OutboundAliases};
pub use will::PendingWill;
