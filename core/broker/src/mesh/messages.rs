//! The mesh: one lock-free inbound queue per core, woken only on the empty-to-non-empty edge.
//!
//! A cross-core wake-up costs tens of microseconds, so a sender wakes the receiver only when
//! the receiver's `notified` flag was clear; the receiver clears it before it drains, and parks
//! only if nothing arrived since (see [`Mailbox::wait`]).

use crate::api::{ApiError, ClientSummary, Delivery};
use crossbeam_queue::SegQueue;
use futures_channel::oneshot;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use uringmq_session::{Message, Session, SubOptions};

/// Which subscribers of the receiving core a routed PUBLISH is for.
#[derive(Debug)]
pub(crate) enum Target {
    /// Every ordinary subscription that matches.
    Subscribers,
    /// One member of this shared group (`$share/{group}/{filter}`), chosen by the receiving core.
    Shared {
        /// The `$share/group/filter` string that identifies the group.
        group: Arc<str>,
        /// A session that must not get it (a member that left and whose message is redelivered).
        exclude: Option<u64>,
    },
}

/// An in-process subscription's delivery sink: a channel plus an eventfd for asyncio.
pub(crate) struct ApiSink {
    pub(crate) tx: crossbeam_channel::Sender<Delivery>,
    pub(crate) event: Arc<EventFd>,
}

/// An eventfd, closed when the last holder (the subscription or the core's sink) drops it.
pub(crate) struct EventFd(pub(crate) std::os::fd::RawFd);

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: the eventfd is owned by this value.
        unsafe { libc::close(self.0) };
    }
}

impl ApiSink {
    /// Queues a delivery and makes the eventfd readable.
    pub(crate) fn push(&self, d: Delivery) {
        if self.tx.send(d).is_ok() {
            let one: u64 = 1;
            // SAFETY: writing 8 bytes from a valid u64 to an eventfd we own (closed only after
            // both the sink and the subscription dropped it).
            unsafe { libc::write(self.event.0, (&one as *const u64).cast(), 8) };
        }
    }
}

/// A request to hand session `key` over to `successor` (the key of the new CONNECT).
pub(crate) struct TakeoverReq {
    pub(crate) key: u64,
    pub(crate) clean_start: bool,
    pub(crate) successor: u64,
    pub(crate) reply: oneshot::Sender<Option<Box<Session>>>,
}

/// Why a session image was not installed (`ApiCmd::Import`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ImportError {
    /// The client id has a session on this node already (connected, offline or arriving):
    /// that one is newer than any image of it.
    #[error("client id {0:?} has a session on this node already")]
    Claimed(Arc<str>),
    /// The core holds the most sessions it can.
    #[error("{}", super::FULL)]
    Full,
}

/// Where the answer to an `ApiCmd::Import` goes: a callback, so that both a blocked caller
/// (a channel) and a task on the cluster thread (a oneshot) can wait for it.
pub(crate) type ImportReply = Box<dyn FnOnce(Result<u64, ImportError>) + Send>;

/// The answer to [`ApiCmd::Export`]: the session's image in bytes, if it had one to give.
pub(crate) type ExportReply = Box<dyn FnOnce(Option<Vec<u8>>) + Send>;

/// In-process API commands (from [`crate::Broker`]).
pub(crate) enum ApiCmd {
    /// Create an in-process session subscribed to `filter`.
    Subscribe {
        filter: String,
        opts: SubOptions,
        sink: Arc<ApiSink>,
        reply: std::sync::mpsc::Sender<Result<u64, ApiError>>,
    },
    /// End an in-process session.
    Unsubscribe { session: u64 },
    /// List this core's connected clients.
    Clients(std::sync::mpsc::Sender<Vec<ClientSummary>>),
    /// Close the connection of session `session` (v5: DISCONNECT 0x98), publishing its will
    /// only `with_will`; answers whether it was connected here.
    Kick {
        session: u64,
        with_will: bool,
        reply: std::sync::mpsc::Sender<bool>,
    },
    /// Publish a message (enters like a client's PUBLISH on this core); the sender, if any, is
    /// told once the retained store has it and the other cores' replicas are on their way.
    Publish(Arc<Message>, Option<std::sync::mpsc::Sender<()>>),
    /// The broker's own `$SYS` messages (`ops/sys_topics.rs`): retained and routed like a
    /// PUBLISH, not counted as received.
    Sys(Vec<Arc<Message>>),
    /// Refresh the gauges this core computes on demand (queued messages...), then answer
    /// with the core's id (`ops::refresh`).
    Snapshot(crossbeam_channel::Sender<u16>),
    /// Start a bridge on this core (answers once its local session is in place).
    BridgeAdd(
        Box<crate::config::BridgeConfig>,
        std::sync::mpsc::Sender<Result<(), String>>,
    ),
    /// Stop the bridge of this name if it runs on this core; answers whether it did.
    BridgeRemove(String, std::sync::mpsc::Sender<bool>),
    /// Install a session image (from another node, or a shared store) as an offline session
    /// of this core (`shard/import.rs`); answers with its key. Send it to the core
    /// `store::home_shard(client_id, cores)`, where recovery would put it.
    Import(Box<crate::store::RecoveredSession>, ImportReply),
    /// Take client `id`'s session away from this node (`Shard::take_away`; `clean_start`:
    /// the successor starts clean, so the session ends here) and answer with its image in
    /// bytes (`store::image`), if it had one.
    Export {
        id: Arc<str>,
        clean_start: bool,
        reply: ExportReply,
    },
}

/// Messages of the durable store's `always` barrier (`shard/persist.rs`) and of the cluster's
/// shared session store (`shard/shared_store.rs`).
#[derive(Debug)]
pub(crate) enum PersistMsg {
    /// The shared session store holds this core's record batches up to `seq`.
    Stored { seq: u64 },
    /// Publish the will of a dead node's client.
    DeadWill(Box<super::cluster::DeadWill>),
    /// Answer `Durable { seq }` once what you pushed before this is durable.
    DurableReq { from: u16, seq: u64 },
    /// Everything core `from` pushed before handling request `seq` is durable (`ok`), or
    /// its write failed.
    Durable { from: u16, seq: u64, ok: bool },
}

/// The `from` of a `Retain` that another node set (passed on by the cluster thread): not a
/// core of this node.
pub(crate) const FROM_NODE: u16 = u16::MAX;

/// A message between cores.
pub(crate) enum MeshMsg {
    /// Deliver a message routed by another core.
    Publish { msg: Arc<Message>, target: Target },
    /// Core `core` gained its first (`add`) or lost its last subscriber to `filter`.
    Interest {
        filter: Arc<str>,
        core: u16,
        add: bool,
    },
    /// Core `core` applied one more `Interest` add of the receiver (`shard/fresh.rs`).
    InterestAck { core: u16 },
    /// Core `core` now has `members` members of shared group `group` (`$share/g/filter`).
    SharedInterest {
        group: Arc<str>,
        core: u16,
        members: u32,
    },
    /// A retained message was set (non-empty payload) or cleared (empty payload) by core
    /// `from`, which sends it only after routing the message (`shard/fresh.rs`), or by
    /// another node ([`FROM_NODE`]).
    Retain { msg: Arc<Message>, from: u16 },
    /// Another core got a CONNECT for a session that lives here: close its connection and send
    /// the session over (None if it does not exist any more or is discarded by clean start).
    Takeover(TakeoverReq),
    /// A live delivery for session `key` that reached the stub its session left behind on
    /// another core while moving (see `shard/moves.rs`).
    Forward {
        key: u64,
        msg: Arc<Message>,
        delivery: uringmq_session::Delivery,
        group: Option<Arc<str>>,
    },
    /// For the core of stub `old`: one core has applied everything it queued before (the new
    /// owner's interest included); the stub goes when every other core said so.
    MoveAck { old: u64 },
    /// Answer with `MoveAck { old }` to the stub's core, after applying everything before it.
    MoveBarrier { old: u64 },
    /// The stub forwarding to `key` is gone: no forwarded deliveries will follow.
    MoveDone { key: u64 },
    /// The `always` barrier of the durable store (`persist.rs`).
    Persist(PersistMsg),
    /// In-process API.
    Api(ApiCmd),
    /// From the cluster thread: another node's interest or message (`shard/cluster.rs`).
    Cluster(super::cluster::FromCluster),
    /// Stop: close listeners and connections (no wills), then end the core.
    Stop,
    /// Several messages from one core, in order (one loop turn's worth, see `Shard::send`).
    Batch(Vec<MeshMsg>),
}

/// One core's inbound queue.
#[derive(Default)]
pub(crate) struct Mailbox {
    queue: SegQueue<MeshMsg>,
    notified: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Mailbox {
    /// Sends `msg`; wakes the receiving core on the empty-to-non-empty edge only.
    pub(crate) fn push(&self, msg: MeshMsg) {
        self.queue.push(msg);
        if !self.notified.swap(true, Ordering::AcqRel) {
            if let Ok(w) = self.waker.lock() {
                if let Some(w) = w.as_ref() {
                    w.wake_by_ref();
                }
            }
        }
    }

    /// Wakes the owning core without a message: it looks again at what it waits for (the
    /// rounds at stop, `shard/settle.rs`).
    pub(crate) fn wake(&self) {
        self.notified.store(true, Ordering::SeqCst);
        if let Ok(w) = self.waker.lock() {
            if let Some(w) = w.as_ref() {
                w.wake_by_ref();
            }
        }
    }

    /// Takes one message (any thread of the owning core may drain).
    pub(crate) fn pop(&self) -> Option<MeshMsg> {
        self.queue.pop()
    }

    /// Clears the edge flag: call before draining.
    pub(crate) fn arm(&self) {
        self.notified.store(false, Ordering::SeqCst);
    }

    /// Waits until a message may have arrived since [`Mailbox::arm`].
    pub(crate) async fn wait(&self) {
        poll_fn(|cx| {
            if let Ok(mut w) = self.waker.lock() {
                match w.as_ref() {
                    Some(old) if old.will_wake(cx.waker()) => {}
                    _ => *w = Some(cx.waker().clone()),
                }
            }
            if self.notified.load(Ordering::SeqCst) || !self.queue.is_empty() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}
