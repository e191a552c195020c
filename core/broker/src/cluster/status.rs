//! What the cluster thread knows, for [`crate::Broker::cluster_status`]. Written by the cluster thread, read by whoever asks; a mutex is
//! fine here, off every core's path.

use super::membership::Members;
use std::sync::Mutex;

/// A node as registered in etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// Its name.
    pub name: String,
    /// `host:port` of its node-to-node links.
    pub addr: String,
    /// When it started (seconds since the Unix epoch).
    pub started: u64,
}

/// This node's view of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterStatus {
    /// This node's name.
    pub name: String,
    /// Whether this node's key is in etcd now (its etcd session is up).
    pub registered: bool,
    /// The registered nodes, this one included, by name.
    pub nodes: Vec<NodeStatus>,
}

impl ClusterStatus {
    /// The names of the registered nodes.
    pub fn node_names(&self) -> Vec<&str> {
        self.nodes.iter().map(|n| n.name.as_str()).collect()
    }
}

/// The shared status, updated by the cluster thread's tasks.
#[derive(Default)]
pub struct StatusBoard(Mutex<ClusterStatus>);

impl StatusBoard {
    /// A board for node `name`.
    pub fn new(name: &str) -> Self {
        StatusBoard(Mutex::new(ClusterStatus {
            name: name.to_owned(),
            ..Default::default()
        }))
    }

    fn with<R>(&self, f: impl FnOnce(&mut ClusterStatus) -> R) -> R {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s)
    }

    /// A copy of the status.
    pub fn snapshot(&self) -> ClusterStatus {
        self.with(|s| s.clone())
    }

    /// Whether this node's key is in etcd.
    pub fn set_registered(&self, on: bool) {
        self.with(|s| s.registered = on);
    }

    /// The members seen in etcd.
    pub fn set_members(&self, members: &Members) {
        self.with(|s| {
            s.nodes = members
                .iter()
                .map(|(name, r)| NodeStatus {
                    name: name.clone(),
                    addr: r.addr.clone(),
                    started: r.started,
                })
                .collect();
        });
    }
}
