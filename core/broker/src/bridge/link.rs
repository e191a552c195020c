//! The local side of a bridge: the sink of its session on the owning core (`Sink::Bridge`),
//! and the bridge's counters.
//!
//! Deliveries reach the bridge's session through the normal routing (the mesh brings other
//! cores' messages), and `deliver_to` hands them to [`Link::offer`], which only queues: the
//! remote is a subscriber like any other, so a slow or absent remote fills this bounded queue
//! (count and bytes; beyond, messages are dropped and counted) and never slows a local client.
//! With a durable store, QoS 1/2 messages are written as they are queued (`stored.rs`).

use super::stored::StoredQueue;
use crate::shard::LocalNotify;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use uringmq_codec::QoS;
use uringmq_session::{Delivery, Message};

/// A bridge's counters, read by `/metrics`, `$SYS` and `Broker::bridges` from other threads.
#[derive(Debug, Default)]
pub struct BridgeStats {
    /// 1 while connected to the remote.
    pub connected: AtomicU64,
    /// Messages waiting for the remote, in flight to it included.
    pub queued: AtomicU64,
    /// Messages published to the remote (QoS 1/2: acknowledged by it).
    pub sent: AtomicU64,
    /// Messages received from the remote and published here.
    pub received: AtomicU64,
    /// Messages dropped: the queue was full, QoS 0 while the remote was away, too large for
    /// the remote, or an inbound message the ACL denied.
    pub dropped: AtomicU64,
    /// Successful connections to the remote.
    pub connects: AtomicU64,
}

impl BridgeStats {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A message bound for the remote.
pub(crate) struct Outgoing {
    pub(crate) msg: Arc<Message>,
    /// min(message, bridge topic) QoS.
    pub(crate) qos: QoS,
    /// RETAIN as published (the bridge's session keeps it), or set for a retained message
    /// sent when the bridge connects.
    pub(crate) retain: bool,
    /// Its record in the durable store (0: not stored).
    pub(crate) id: u64,
}

/// The bridge session's sink: a bounded queue the bridge's task drains to the remote.
pub(crate) struct Link {
    queue: RefCell<VecDeque<Outgoing>>,
    bytes: Cell<usize>,
    max_messages: usize,
    max_bytes: usize,
    /// Set while the remote is connected: QoS 0 is not queued for an absent remote.
    pub(crate) connected: Cell<bool>,
    /// Messages in flight to the remote (kept by the bridge's task, for the gauge).
    pub(crate) inflight: Cell<usize>,
    /// Wakes the bridge's writer: a message queued, room in flight, an ack to send.
    pub(crate) ready: LocalNotify,
    pub(crate) stats: Arc<BridgeStats>,
    /// The queue's records, when the durable store is on.
    pub(crate) stored: Option<StoredQueue>,
}

impl Link {
    pub(crate) fn new(
        cfg: &crate::config::BridgeConfig,
        stats: Arc<BridgeStats>,
        stored: Option<StoredQueue>,
    ) -> Self {
        Link {
            queue: RefCell::new(VecDeque::new()),
            bytes: Cell::new(0),
            max_messages: cfg.max_queued_messages,
            max_bytes: cfg.max_queued_bytes,
            connected: Cell::new(false),
            inflight: Cell::new(0),
            ready: LocalNotify::default(),
            stats,
            stored,
        }
    }

    /// Queues one delivery for the remote, or drops it (counted) when the queue is full.
    pub(crate) fn offer(&self, msg: &Arc<Message>, d: &Delivery, now: Instant) {
        if msg.remaining_expiry(now).is_err() {
            return;
        }
        let full = self.queue.borrow().len() >= self.max_messages
            || self.bytes.get() + msg.cost() > self.max_bytes;
        if full || (d.qos == QoS::AtMostOnce && !self.connected.get()) {
            BridgeStats::bump(&self.stats.dropped);
            return;
        }
        let id = match &self.stored {
            Some(s) if d.qos != QoS::AtMostOnce => s.queued(msg, d.qos, d.retain),
            _ => 0,
        };
        self.push_back(Outgoing {
            msg: msg.clone(),
            qos: d.qos,
            retain: d.retain,
            id,
        });
        self.ready.notify();
    }

    fn push_back(&self, o: Outgoing) {
        self.bytes.set(self.bytes.get() + o.msg.cost());
        self.queue.borrow_mut().push_back(o);
        self.update_gauge();
    }

    /// Puts messages that were in flight back at the head, in order (a reconnection where
    /// the remote kept no session: they are sent again as new messages).
    pub(crate) fn requeue_front(&self, items: Vec<Outgoing>) {
        let mut q = self.queue.borrow_mut();
        for o in items.into_iter().rev() {
            self.bytes.set(self.bytes.get() + o.msg.cost());
            q.push_front(o);
        }
        drop(q);
        self.update_gauge();
    }

    /// The next message to send.
    pub(crate) fn pop(&self) -> Option<Outgoing> {
        let o = self.queue.borrow_mut().pop_front()?;
        self.bytes.set(self.bytes.get() - o.msg.cost());
        Some(o)
    }

    /// Message `id` is done (acknowledged, or dropped on the way out): its record ends.
    pub(crate) fn done(&self, id: u64) {
        if let Some(s) = &self.stored {
            s.done(id);
        }
    }

    /// Publishes the queued gauge: waiting plus in flight (set by the bridge's task).
    pub(crate) fn update_gauge(&self) {
        let n = self.queue.borrow().len() + self.inflight.get();
        self.stats.queued.store(n as u64, Ordering::Relaxed);
    }
}
