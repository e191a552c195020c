//! A core's side of the cluster (`[cluster]` only; without it every entry point is one
//! `Option` check): what it tells the cluster thread (its interest, shared-group counts,
//! retained messages, messages for other nodes) and what it applies from there (other nodes'
//! interest and shared-group counts in its replicas, their messages delivered as a local
//! publish would be, never passed on to another node).
//!
//! Other nodes live in the same interest index and shared-group counts as the cores, under
//! ids with `NODE_BIT` set (`mesh/cluster.rs`): `route.rs` finds them in the one match it
//! does anyway.

use super::Shard;
use crate::mesh::cluster::{node_key, FromCluster, ToCluster};
use std::rc::Rc;
use std::sync::Arc;
use uringmq_session::Message;

/// Whether `msg` may leave this node: `$SYS/` topics are each node's own.
pub(super) fn crosses(msg: &Message) -> bool {
    !msg.topic.starts_with("$SYS/")
}

impl Shard {
    /// Whether this node is in a cluster.
    pub(super) fn clustered(&self) -> bool {
        self.shared.cluster.is_some()
    }

    /// Queues `m` for the cluster thread; pushed with the mesh outbox (`flush_mesh`), so it
    /// leaves in this core's order, once per loop turn. Nothing without `[cluster]`.
    pub(super) fn to_cluster(&self, m: ToCluster) {
        if !self.clustered() {
            return;
        }
        let mut out = self.cluster_out.borrow_mut();
        if out.is_empty() {
            self.outbox_ready.notify();
        }
        out.push(m);
    }

    /// Pushes what [`Shard::to_cluster`] queued this turn, as one batch.
    pub(super) fn flush_cluster(&self) {
        let Some(hub) = &self.shared.cluster else {
            return;
        };
        let batch = std::mem::take(&mut *self.cluster_out.borrow_mut());
        if !batch.is_empty() {
            hub.push(batch);
        }
    }

    /// Sends `msg` to node `node` (its subscribers, or one member of `group` there).
    pub(super) fn publish_to_node(&self, node: u16, msg: &Arc<Message>, group: Option<Arc<str>>) {
        self.to_cluster(ToCluster::Publish {
            core: self.id,
            node,
            msg: msg.clone(),
            group,
        });
    }

    /// Applies a message of the cluster thread.
    pub(super) fn from_cluster(self: &Rc<Self>, m: FromCluster) {
        match m {
            FromCluster::Interest { node, filter, add } => {
                let mut st = self.st.borrow_mut();
                st.routes.set_interest(&filter, node_key(node), add);
                if !add {
                    self.collect_soon();
                }
            }
            FromCluster::Shared {
                node,
                group,
                members,
            } => {
                let mut st = self.st.borrow_mut();
                st.routes.set_shared_count(&group, node_key(node), members);
            }
            FromCluster::Publish { msg, group } => match group {
                Some(group) => self.deliver_shared(&group, &msg, None, true),
                None => self.route_here(&msg),
            },
        }
    }
}
