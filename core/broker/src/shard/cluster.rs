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
use crate::cluster::clientids::{OWNER_WAIT, TAKE_WAIT};
use crate::mesh::cluster::{node_key, FromCluster, ToCluster};
use futures_channel::oneshot;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uringmq_session::{Message, Session};

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
            again: false,
        });
    }

    /// A CONNECT of `id` found no session on this node: the cluster thread takes it over from
    /// the node that has it (`cluster/clientids.rs`; with `clean_start` it ends there, its
    /// will published there) and this CONNECT waits for the answer without holding the core
    /// (other connections go on). `None`: no cluster, no session elsewhere, or no answer in
    /// time (a new session). The session's will was cancelled where it was taken: the client
    /// is back [MQTT-3.1.2-8].
    pub(crate) async fn fetch_session(
        self: &Rc<Self>,
        id: &Arc<str>,
        clean_start: bool,
    ) -> Option<Box<Session>> {
        if !self.clustered() {
            return None;
        }
        let (reply, answer) = oneshot::channel();
        self.to_cluster(ToCluster::Fetch {
            id: id.clone(),
            clean_start,
            reply,
        });
        // The cluster thread answers by its own deadlines; this bound only guards a thread
        // that stopped answering.
        let limit = OWNER_WAIT + TAKE_WAIT + Duration::from_secs(1);
        let rs = monoio::time::timeout(limit, answer).await.ok()?.ok()??;
        let now = Instant::now();
        // Its messages get this node's store ids when it is imaged here (`import.rs`).
        Some(super::import::session_of_image(
            *rs,
            self.config(),
            false,
            now,
        ))
    }

    /// A message for one member of `group` from another node: to a member here, or, if this
    /// node has none left (they left after the sender picked this node), passed on once to
    /// another node that has one, rather than dropped.
    fn shared_from_node(self: &Rc<Self>, group: Arc<str>, msg: Arc<Message>, again: bool) {
        let elsewhere = if again {
            None
        } else {
            self.st.borrow().routes.shared_other_node(&group)
        };
        match elsewhere {
            Some(node) => self.to_cluster(ToCluster::Publish {
                core: self.id,
                node,
                msg,
                group: Some(group),
                again: true,
            }),
            None => self.deliver_shared(&group, &msg, None, true),
        }
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
            FromCluster::Publish { msg, group, again } => match group {
                Some(group) => self.shared_from_node(group, msg, again),
                None => self.route_here(&msg),
            },
            FromCluster::Forward {
                client_id,
                msg,
                delivery,
            } => {
                let item = super::ToDeliver {
                    msg: &msg,
                    delivery,
                    group: None,
                    now: Instant::now(),
                    cache_heads: false,
                };
                self.forwarded_from_node(&client_id, item);
            }
        }
    }
}
