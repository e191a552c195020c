//! uringmq: a thread-per-core MQTT 3.1, 3.1.1 and 5.0 broker on monoio.
//!
//! See ARCHITECTURE.md at the repository root for the shards, the cross-core mesh and the path of a
//! PUBLISH, and for a map of the folders below. [`Broker`] is the embedding API shared by the
//! binary and the Python bindings.
#![warn(missing_docs)]

mod alloc;
pub mod api;
mod bridge;
pub mod cli;
mod cluster;
pub mod config;
mod conn;
mod embed;
mod mesh;
mod net;
mod ops;
mod routing;
mod security;
mod shard;
mod sizes;
pub mod store;
mod table;

pub use alloc::Allocator;
pub use api::*;
pub use bridge::BridgeState;
pub use cluster::cli::{status_report as cluster_status_report, ClusterCmd};
pub use cluster::status::{ClusterStatus, LinkStatus, NodeStatus, PeerLinks};
pub use config::*;
pub use embed::{
    init_logging, init_logging_background, Broker, BrokerBuilder, RecvError, Subscription,
};
pub use shard::persist::PersistenceStats;
pub use sizes::idle_path_sizes;
