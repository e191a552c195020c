//! A uringmq cluster (issue #19): nodes register in etcd and link to each other.
//!
//! This module owns everything of the cluster and nothing of it runs without `[cluster]`.
//! With it, [`Cluster::start`] binds the node-to-node listener (a port conflict fails the
//! broker's start) and starts one thread, `uringmq-cluster`, with a tokio runtime of its own:
//! the etcd client (tonic, on tokio) and the links run there and never on a core.
//!
//! - `config/cluster.rs` (with the other settings): the `[cluster]` table.
//! - `membership.rs`: this node's key under an etcd lease, the watch of the others.
//! - `links.rs`, `frame.rs`, `link_auth.rs`: authenticated node-to-node links.
//! - `router.rs`: node-level interest and messages between nodes; `send_queue.rs`: a link's
//!   bounded queue with acknowledgements and resends; `carry.rs`: a message on a link. The
//!   cores' side is `shard/cluster.rs`, the queues between them `mesh/cluster.rs`.
//! - `session_store.rs`: the shared session store (Redis) and recovery from a node's death.
//! - `clientids.rs`: which node holds a client id's session, and moving it on a CONNECT;
//!   `takeover.rs` runs it on the thread.
//! - `bridges.rs`: which node runs each configured bridge.
//! - `status.rs`: what the thread knows, for [`crate::Broker::cluster_status`];
//!   `ops/cluster.rs` puts it in `/metrics`.
//! - `cli.rs`: `uringmq cluster status`.

mod bridges;
mod carry;
pub mod cli;
pub(crate) mod clientids;
mod frame;
mod link_auth;
mod links;
pub mod membership;
mod rendezvous;
mod router;
mod send_queue;
pub(crate) mod session_store;
pub mod status;
mod takeover;

pub(crate) use router::CoreLink;

use crate::api::StartError;
use crate::config::ClusterConfig;
use crate::config::ConfigError;
use membership::{Members, Membership, NodeRecord};
use status::{ClusterStatus, StatusBoard};
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// What the shared session store needs from the node (`session_store.rs`).
pub(crate) struct SessionWiring {
    /// The queue the cores push their records and loads to.
    pub feed: Arc<session_store::SessionFeed>,
    /// The way to a core's mailbox.
    pub post: session_store::Post,
    /// Cores of this node.
    pub shards: usize,
}

/// A running cluster thread. Dropping it stops it.
pub struct Cluster {
    board: Arc<StatusBoard>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

fn invalid((key, reason): (&'static str, String)) -> StartError {
    StartError::Config(ConfigError::Invalid { key, reason })
}

impl Cluster {
    /// Binds the link listener and starts the cluster thread; `metrics` is this node's
    /// `/metrics` address, registered for `uringmq cluster status`; `sessions`, with
    /// `session_store`, connects the cores to the shared session store.
    pub(crate) fn start(
        config: &ClusterConfig,
        metrics: Option<SocketAddr>,
        cores: CoreLink,
        sessions: Option<SessionWiring>,
    ) -> Result<Cluster, StartError> {
        config.validate().map_err(invalid)?;
        let secret = config.load_secret().map_err(invalid)?;
        let addr = SocketAddr::new(config.bind, config.port);
        let bind_err = |source| StartError::Bind { addr, source };
        let listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        let bound = listener.local_addr().map_err(bind_err)?;
        let me = NodeRecord {
            addr: config
                .advertise
                .clone()
                .unwrap_or_else(|| bound.to_string()),
            started: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            metrics: metrics.map(|m| m.to_string()),
        };
        let board = Arc::new(StatusBoard::new(&config.name));
        let (stop, stop_rx) = watch::channel(false);
        let (members, members_rx) = watch::channel(Members::new());
        let membership = Membership {
            config: config.clone(),
            me,
            members,
            board: board.clone(),
        };
        let bridges = bridges::Bridges {
            me: config.name.clone(),
            configured: cores.bridges.clone(),
            mailboxes: cores.mailboxes.clone(),
        };
        let router = Arc::new(router::Router::new(
            cores,
            board.clone(),
            &config.name,
            members_rx.clone(),
        ));
        let ctx = Arc::new(links::LinkCtx {
            name: config.name.clone(),
            secret,
            board: board.clone(),
            router: router.clone(),
        });
        let store = sessions.zip(config.session_store.clone()).map(|(w, url)| {
            session_store::SessionStore {
                url,
                prefix: config.prefix.clone(),
                node: config.name.clone(),
                lease_ttl: Duration::from_secs(config.lease_ttl_secs),
                shards: w.shards,
                feed: w.feed,
                post: w.post,
            }
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StartError::Runtime(format!("cluster runtime: {e}")))?;
        let thread = std::thread::Builder::new()
            .name("uringmq-cluster".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => return tracing::error!(error = %e, "cluster: listener"),
                    };
                    tokio::spawn(router.clone().serve_given());
                    tokio::spawn(router.clone().tick_takeovers());
                    tokio::spawn(router.run());
                    tokio::spawn(links::accept(ctx.clone(), listener));
                    if let Some(store) = store {
                        tokio::spawn(store.run(members_rx.clone()));
                    }
                    if !bridges.configured.is_empty() {
                        tokio::spawn(bridges.follow(members_rx.clone()));
                    }
                    tokio::spawn(links::manage(ctx, members_rx));
                    membership.run(stop_rx).await;
                });
            })
            .map_err(|e| StartError::Runtime(e.to_string()))?;
        Ok(Cluster {
            board,
            stop,
            thread: Some(thread),
        })
    }

    /// The status the cluster thread keeps (for `/metrics`).
    pub(crate) fn board(&self) -> Arc<StatusBoard> {
        self.board.clone()
    }

    /// This node's view of the cluster.
    pub fn status(&self) -> ClusterStatus {
        self.board.snapshot()
    }

    /// Leaves the cluster (the lease is revoked, so the others see it at once) and ends the
    /// thread; its links close with it. Idempotent.
    pub fn stop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Exponential backoff with jitter, for dialing etcd and peers again.
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// From `first`, doubling up to `max`.
    pub(crate) fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// The next wait: the current step with ±20% jitter (so that nodes cut off together do
    /// not all dial again in the same instant), then the step doubles.
    pub(crate) fn next(&mut self) -> Duration {
        let step = self.next;
        self.next = (step * 2).min(self.max);
        step.mul_f64(rand::Rng::random_range(&mut rand::rng(), 0.8..1.2))
    }

    /// Back to the first step (after a link or session that lasted).
    pub(crate) fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let waits: Vec<_> = (0..4).map(|_| b.next().as_millis()).collect();
        for (w, base) in waits.iter().zip([100, 200, 400, 400]) {
            assert!((base * 8 / 10..=base * 12 / 10).contains(w), "{waits:?}");
        }
        b.reset();
        assert!(b.next() <= Duration::from_millis(120));
    }
}
