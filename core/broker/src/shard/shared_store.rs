//! A core's end of the cluster's shared session store (`cluster/session_store.rs`, with
//! `[cluster] session_store`): the records this core pushes to its log are also collected per
//! event-loop turn and handed to the cluster thread in one batch; under
//! `persistence_sync = "always"` the barrier (`persist.rs`) also waits until Redis confirmed
//! them; a client resuming a session that no core of this node holds gets it from Redis; and
//! a dead node's will handed over by the cluster thread is published here.

use super::notify::LocalNotify;
use super::Shard;
use crate::cluster::session_store::{Batch, DeadWill, SessionFeed};
use crate::conn::will_auth::WillAuthor;
use crate::store::Record;
use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};
use tracing::warn;
use uringmq_session::Session;

/// How long a CONNECT waits for its session from the shared store beyond a lease TTL (the
/// load may wait that long for a killed node to leave); past it the client gets a new
/// session (and a warning is logged), as if Redis had none.
const LOAD_MARGIN: Duration = Duration::from_secs(2);

/// This core's records on their way to the shared store.
pub(crate) struct Sharing {
    feed: Arc<SessionFeed>,
    shard: u16,
    buf: RefCell<Vec<(u64, Record)>>,
    ready: LocalNotify,
    /// Batches handed over, and the last one Redis confirmed.
    sent: Cell<u64>,
    stored: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
    released: Cell<bool>,
}

impl Sharing {
    pub(crate) fn new(feed: Arc<SessionFeed>, shard: u16) -> Rc<Sharing> {
        Rc::new(Sharing {
            feed,
            shard,
            buf: RefCell::new(Vec::new()),
            ready: LocalNotify::default(),
            sent: Cell::new(0),
            stored: Cell::new(0),
            waiters: RefCell::new(Vec::new()),
            released: Cell::new(false),
        })
    }

    /// Collects one record (its stamp as the log got it); handed over at the end of the turn.
    pub(crate) fn record(&self, stamp: u64, rec: Record) {
        let mut buf = self.buf.borrow_mut();
        if buf.is_empty() {
            self.ready.notify();
        }
        buf.push((stamp, rec));
    }

    /// Hands what was collected over now (else at the end of the turn).
    pub(crate) fn flush(&self) {
        let records = std::mem::take(&mut *self.buf.borrow_mut());
        if records.is_empty() {
            return;
        }
        let seq = self.sent.get() + 1;
        self.sent.set(seq);
        self.feed.push(Batch {
            shard: self.shard,
            seq,
            records,
        });
    }

    /// The task that hands each turn's records over (spawn once on the core).
    pub(crate) async fn run(self: Rc<Self>) {
        while !self.released.get() {
            self.ready.wait().await;
            self.flush();
        }
    }

    /// Redis holds this core's batches up to `seq`.
    pub(crate) fn stored(&self, seq: u64) {
        self.stored.set(self.stored.get().max(seq));
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Waits until Redis holds everything collected so far (at once after `release`).
    pub(crate) async fn wait_stored(&self) {
        self.flush();
        let want = self.sent.get();
        poll_fn(|cx| {
            if self.released.get() || self.stored.get() >= want {
                return Poll::Ready(());
            }
            self.waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// The core stops: hands over what is left, and nothing waits any more.
    pub(crate) fn release(&self) {
        self.flush();
        self.released.set(true);
        self.ready.notify();
        self.stored(0);
    }
}

impl Shard {
    /// A CONNECT without clean start whose client id no core of this node held: its session
    /// from the shared store, if Redis has one that no live node serves (see
    /// `cluster/session_store.rs`). The client id is claimed by the CONNECT meanwhile, so a
    /// concurrent CONNECT with it takes over the result as usual.
    pub(crate) async fn resume_shared(self: &Rc<Self>, id: &Arc<str>) -> Option<Box<Session>> {
        let feed = self.shared.session_feed.as_ref()?;
        let ttl = self
            .config()
            .cluster
            .as_ref()
            .map_or(0, |c| c.lease_ttl_secs);
        let limit = Duration::from_secs(ttl) + LOAD_MARGIN;
        let loaded = monoio::time::timeout(limit, feed.load(id.clone())).await;
        let rs = match loaded {
            Ok(Ok(found)) => found?,
            Ok(Err(_)) => return None,
            Err(_) => {
                warn!(client_id = %id, "shared session store did not answer in time: new session");
                return None;
            }
        };
        let (username, listener) = (rs.meta.username.clone(), rs.meta.listener);
        let now = Instant::now();
        // Its messages get this node's store ids when it is imaged here (`import.rs`).
        let mut s = super::import::session_of_image(rs, self.config(), false, now);
        s.set_will(None);
        // Its node died under its last connection: a will without delay was due then and goes
        // out now; a delayed one is cancelled, as the session goes on [MQTT-3.1.3-9].
        if let Some(p) = s.take_pending_will().filter(|p| p.due <= now) {
            let listener = self.shared.security.listener_name(listener).into();
            let author = WillAuthor::offline(id.clone(), username, listener);
            self.publish_will(p.will, author, None, now);
        }
        Some(s)
    }

    /// Publishes the will of a client of a dead node, authorised as its client through the
    /// listener it was connected to (the ACL applies; a token's rules died with the node).
    pub(crate) fn publish_dead_will(self: &Rc<Self>, w: DeadWill) {
        let listener = self.shared.security.listener_name(w.listener);
        let author = WillAuthor::offline(w.client_id, w.username, listener.into());
        self.publish_will(w.will, author, None, Instant::now());
    }
}
