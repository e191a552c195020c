//! Configured bridges in a cluster: each `[[bridge]]` runs on one live node only, so that the
//! same bridge configured on every node forwards each message once, not once per node.
//!
//! The node that runs bridge `NAME` is its rendezvous owner over the live membership
//! ([`owner_of`]: all nodes agree without talking; bridges spread over the nodes). The bridge's
//! local session subscribes like any subscriber, so a message published on any node reaches
//! it through the cluster's routing and crosses the bridge once. Each time the membership
//! view changes (a node dies, leaves or joins), every node works its owners out again and
//! starts or stops its bridges on the cores that run them without a cluster (core
//! `i % cores` for the `i`-th `[[bridge]]`), through their mailboxes. A node that is not
//! registered (no view yet) runs none; an etcd outage keeps the last view, and the bridges.
//! Bridges added at run time (`Broker::add_bridge`) are that node's own and never moved.

use super::membership::Members;
use super::rendezvous::owner_of;
use crate::config::BridgeConfig;
use crate::mesh::{ApiCmd, Mailbox, MeshMsg};
use std::sync::Arc;
use tokio::sync::watch;
use tracing::{info, warn};

/// What the bridge follower needs.
pub(crate) struct Bridges {
    /// This node's name.
    pub me: String,
    /// The configured bridges, in config order.
    pub configured: Arc<[BridgeConfig]>,
    /// The cores' mailboxes.
    pub mailboxes: Arc<[Mailbox]>,
}

impl Bridges {
    /// Starts and stops this node's bridges as the membership view changes, until the
    /// cluster thread ends.
    pub(crate) async fn follow(self, mut members: watch::Receiver<Members>) {
        let mut running = vec![false; self.configured.len()];
        loop {
            let names: Vec<String> = members.borrow_and_update().keys().cloned().collect();
            for (i, b) in self.configured.iter().enumerate() {
                let mine = owner(&b.name, &names) == Some(self.me.as_str());
                if mine != running[i] {
                    running[i] = mine;
                    self.switch(i, b, mine);
                }
            }
            if members.changed().await.is_err() {
                return;
            }
        }
    }

    /// Starts (`on`) or stops the `i`-th bridge on its core.
    fn switch(&self, i: usize, b: &BridgeConfig, on: bool) {
        let core = &self.mailboxes[i % self.mailboxes.len()];
        let name = b.name.clone();
        if !on {
            info!(bridge = %name, "cluster: bridge now runs on another node");
            let (reply, _) = std::sync::mpsc::channel();
            core.push(MeshMsg::Api(ApiCmd::BridgeRemove(name, reply)));
            return;
        }
        info!(bridge = %name, "cluster: bridge runs on this node");
        let (reply, answer) = std::sync::mpsc::channel();
        core.push(MeshMsg::Api(ApiCmd::BridgeAdd(Box::new(b.clone()), reply)));
        // The core answers at once; waiting for it must not hold the cluster thread.
        tokio::task::spawn_blocking(move || {
            if let Ok(Err(e)) = answer.recv_timeout(std::time::Duration::from_secs(10)) {
                warn!(bridge = %name, "bridge not started: {e}");
            }
        });
    }
}

/// The node among `nodes` that runs bridge `bridge`.
fn owner<'a>(bridge: &str, nodes: &'a [String]) -> Option<&'a str> {
    owner_of(bridge, nodes.iter().map(String::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_node_agrees_and_only_the_dead_owners_bridges_move() {
        let all = names(&["a", "b", "c"]);
        let bridges: Vec<String> = (0..60).map(|i| format!("bridge-{i}")).collect();
        let owners: Vec<&str> = bridges.iter().map(|b| owner(b, &all).unwrap()).collect();
        // Spread over the nodes.
        for n in ["a", "b", "c"] {
            assert!(
                owners.iter().filter(|o| **o == n).count() >= 5,
                "{owners:?}"
            );
        }
        // Node b dies: its bridges move, the others stay where they are.
        let left = names(&["a", "c"]);
        for (b, before) in bridges.iter().zip(&owners) {
            let after = owner(b, &left).unwrap();
            if *before != "b" {
                assert_eq!(after, *before, "{b}");
            }
        }
        assert_eq!(owner("x", &[]), None);
    }
}
