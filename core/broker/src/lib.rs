//! uringmq: a thread-per-core MQTT 3.1, 3.1.1 and 5.0 broker on monoio.
//!
//! See ARCHITECTURE.md at the repository root for the shards, the cross-core mesh and the path of a
//! PUBLISH. [`Broker`] is the embedding API shared by the binary and the Python bindings.
#![warn(missing_docs)]

pub mod api;
mod auth;
mod broker;
pub mod cli;
pub mod config;
mod connection;
mod core;
mod endpoint;
mod fairness;
mod handoff;
mod hibernate;
mod hooks;
mod limits;
mod listener;
mod mesh;
mod ops;
mod out_queue;
mod pending;
#[path = "shard/persist.rs"]
mod persist;
mod publish_debts;
mod registry;
mod reload;
mod retained;
mod router;
mod shared_sub;
mod source_rates;
pub mod store;
mod timers;
mod transport_io;
mod uring;
mod will_auth;

pub use api::*;
pub use broker::{init_logging, init_logging_background, Broker, RecvError, Subscription};
pub use config::*;
pub use persist::PersistenceStats;
pub use reload::ReloadReport;
