//! The queues between the cores and the cluster thread (`[cluster]` only).
//!
//! Cores never wait for the cluster thread, and it never touches a core's state:
//! - core -> cluster thread: each core collects its [`ToCluster`] messages during a loop turn
//!   (`Shard::to_cluster`) and pushes them as one batch into the [`Hub`]'s lock-free queue
//!   with its mesh outbox; the cluster thread is woken on the empty-to-non-empty edge only
//!   (a `tokio::sync::Notify`, which a foreign thread may signal). One queue for all cores
//!   keeps each core's batches in its order, so messages of one publisher (one core) leave in
//!   the order it published them.
//! - cluster thread -> core: [`FromCluster`] in the core's own `Mailbox`
//!   (`MeshMsg::Cluster`), applied in `shard/cluster.rs`.
//!
//! Other nodes sit in a core's interest index and shared-group counts beside the cores, as
//! ids with [`NODE_BIT`] set (`node_key`), so one match of a PUBLISH finds both the cores and
//! the nodes it goes to.

use crate::store::RecoveredSession;
use crossbeam_queue::SegQueue;
use futures_channel::oneshot;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use uringmq_codec::LastWill;
use uringmq_session::{Delivery, Message};

/// How long the stub of a session that moved to another node forwards what reaches it
/// (`shard/moves.rs`): enough for the new node's subscriptions to reach every node.
pub(crate) const STUB_HOLD: std::time::Duration = std::time::Duration::from_secs(2);

/// Set in an interest-index id that names another node (its node id below), not a core.
pub(crate) const NODE_BIT: u16 = 0x8000;

/// The interest-index id of node `node`.
pub(crate) fn node_key(node: u16) -> u16 {
    NODE_BIT | node
}

/// The node an interest-index id names, if it names one.
pub(crate) fn node_of(id: u16) -> Option<u16> {
    (id & NODE_BIT != 0).then_some(id & !NODE_BIT)
}

/// From a core to the cluster thread.
#[derive(Debug)]
pub(crate) enum ToCluster {
    /// The sending core gained its first (`add`) or lost its last subscriber to `filter`.
    Interest { filter: Arc<str>, add: bool },
    /// Core `core` now has `members` members of shared group `group` (`$share/g/filter`).
    Shared {
        core: u16,
        group: Arc<str>,
        members: u32,
    },
    /// Send `msg` to node `node`: to its subscribers, or to one member of `group` there.
    /// `core` is the publishing core (the receiving node keeps one core per sending core, so
    /// a publisher's order holds).
    Publish {
        core: u16,
        node: u16,
        msg: Arc<Message>,
        group: Option<Arc<str>>,
        /// A group's message from another node that this node passes on (it had no member
        /// left): the receiver passes it on no further.
        again: bool,
    },
    /// A retained message was set (non-empty payload) or cleared here: every node stores it.
    Retain(Arc<Message>),

    // ---- session takeover across nodes (`cluster/clientids.rs`) ----
    /// A CONNECT of `id` found no session on this node: take it over from the node that has
    /// it (with `clean_start` it ends there instead) and answer with its image, if one moves.
    Fetch {
        id: Arc<str>,
        clean_start: bool,
        reply: FetchReply,
    },
    /// A delivery that reached the stub of `client_id`'s session, which moved to another
    /// node: to that node.
    Forward {
        client_id: Arc<str>,
        msg: Arc<Message>,
        delivery: Delivery,
    },
    /// The session of this client id ended on this node (its owner forgets this node for it,
    /// unless a core claimed the id again meanwhile).
    Ended(Arc<str>),
}

/// The answer to [`ToCluster::Fetch`]: the session's image, if one moved here.
pub(crate) type FetchReply = oneshot::Sender<Option<Box<RecoveredSession>>>;

/// From the cluster thread to a core.
#[derive(Debug)]
pub(crate) enum FromCluster {
    /// Node `node` gained its first (`add`) or lost its last subscriber to `filter`.
    Interest {
        node: u16,
        filter: Arc<str>,
        add: bool,
    },
    /// Node `node` now has `members` members of shared group `group`.
    Shared {
        node: u16,
        group: Arc<str>,
        members: u32,
    },
    /// A message published on another node: deliver it here as a local publish would (to the
    /// cores with subscribers, or to one member of `group`), never to another node.
    Publish {
        msg: Arc<Message>,
        group: Option<Arc<str>>,
        /// Passed on by a node that got it from another: not to be passed on again.
        again: bool,
    },
    /// A delivery for `client_id`'s session, which moved here, from its stub on the node it
    /// left.
    Forward {
        client_id: Arc<str>,
        msg: Arc<Message>,
        delivery: Delivery,
    },
}

/// The cores' queue to the cluster thread.
#[derive(Default)]
pub(crate) struct Hub {
    queue: SegQueue<Vec<ToCluster>>,
    notified: AtomicBool,
    wake: tokio::sync::Notify,
}

impl Hub {
    /// Pushes one core's batch; wakes the cluster thread on the empty-to-non-empty edge.
    pub(crate) fn push(&self, batch: Vec<ToCluster>) {
        self.queue.push(batch);
        if !self.notified.swap(true, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }

    /// Takes everything queued (the cluster thread's side), in order.
    pub(crate) fn drain(&self, mut f: impl FnMut(ToCluster)) {
        self.notified.store(false, Ordering::SeqCst);
        while let Some(batch) = self.queue.pop() {
            batch.into_iter().for_each(&mut f);
        }
    }

    /// Waits until something may have been pushed since the last [`Hub::drain`].
    pub(crate) async fn wait(&self) {
        if self.notified.load(Ordering::SeqCst) || !self.queue.is_empty() {
            return;
        }
        // A push after the check leaves a permit in the Notify: nothing is missed.
        self.wake.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_do_not_collide_with_cores() {
        assert_eq!(node_of(node_key(3)), Some(3));
        assert_eq!(node_of(1023), None);
    }

    #[test]
    fn batches_come_out_in_order_and_wake_once() {
        let hub = Hub::default();
        let interest = |filter: &str| ToCluster::Interest {
            filter: filter.into(),
            add: true,
        };
        hub.push(vec![interest("a"), interest("b")]);
        hub.push(vec![interest("c")]);
        let mut seen = Vec::new();
        hub.drain(|m| {
            if let ToCluster::Interest { filter, .. } = m {
                seen.push(filter.to_string());
            }
        });
        assert_eq!(seen, ["a", "b", "c"]);
    }
}

/// A will of a dead node's client, to publish on a core: the cluster
/// thread's session store finds it (`cluster/session_store.rs`), a core publishes it
/// (`shard/shared_store.rs`).
#[derive(Debug)]
pub(crate) struct DeadWill {
    /// Its client.
    pub client_id: Arc<str>,
    /// The client's user name.
    pub username: Option<Arc<str>>,
    /// The listener (index) it was connected through, whose ACL applies.
    pub listener: u16,
    /// The will.
    pub will: Box<LastWill>,
}
