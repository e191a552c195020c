//! What all cores share: read-only after start, except atomics, mailboxes and the registry.

use super::stats::CoreStats;
use crate::config::Config;
use crate::mesh::{Mailbox, Registry};
use crate::security::HookPool;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use uringmq_auth::{Authenticator, Authorizer};
use uringmq_session::Limits;

/// What all cores share (read-only after start, except atomics, mailboxes and the registry).
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) limits: Limits,
    /// Shared with the cluster thread, which hands other nodes' messages to the cores.
    pub(crate) mailboxes: Arc<[Mailbox]>,
    /// The queue to the cluster thread: `[cluster]` only.
    pub(crate) cluster: Option<Arc<crate::mesh::cluster::Hub>>,
    pub(crate) registry: Registry,
    /// Publish-rate debts of client ids whose connection closed (`net/publish_debts.rs`).
    pub(crate) publish_debts: crate::net::PublishDebts,
    pub(crate) stats: Vec<CoreStats>,
    pub(crate) hooks: HookPool,
    pub(crate) authenticator: Option<Arc<dyn Authenticator>>,
    pub(crate) authorizer: Option<Arc<dyn Authorizer>>,
    /// Listener policies, files and enhanced authenticators behind the two above.
    pub(crate) security: Arc<crate::security::Security>,
    /// Open client sockets, all cores (for `max_connections`).
    pub(crate) connections: AtomicUsize,
    /// Source of assigned client identifiers.
    pub(crate) next_assigned: AtomicU64,
    /// The embedder's disconnect hook (run on the hook threads).
    pub(crate) on_disconnect: Option<crate::api::DisconnectHook>,
    /// Every bridge's core and counters.
    pub(crate) bridges: crate::bridge::Registry,
    /// What the durable store recovered, taken by each core as it starts (`persist.rs`).
    pub(crate) boot: Option<crate::shard::persist::Boot>,
    /// The way to the cluster's shared session store, with `[cluster] session_store`
    /// (`shared_store.rs`).
    pub(crate) session_feed: Option<Arc<crate::cluster::session_store::SessionFeed>>,
    /// The cores' rounds at stop (`settle.rs`).
    pub(crate) settle: super::settle::Settle,
}

impl Shared {
    pub(crate) fn cores(&self) -> usize {
        self.mailboxes.len()
    }
}
