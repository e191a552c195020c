//! The shared session store (`[cluster] session_store = "redis://host:port/db"`): persistent
//! sessions kept in Redis so that another node can resume them, and the recovery of a dead
//! node's sessions. Runs on the cluster thread (the `redis` crate on its tokio runtime); the
//! cores reach it only through [`SessionFeed`] (lock-free queues and a `Notify`) and hear back
//! through the [`Post`] callback (their mailboxes).
//!
//! Writes. The durable store's record stream (`shard/persist.rs` pushes every record to its
//! log) is also handed here, one batch per core per event-loop turn, and every batch that
//! arrived meanwhile goes out as one Redis pipeline. Key layout (`{p}` is `cluster.prefix`):
//!
//! - `{p}/session/{client id}`, a hash: `meta` (the session's fields), `n` (the node serving
//!   it; absent while no node does), `s:{filter}`, `m:{id}` (a queued or in-flight message),
//!   `t:{id}` (its packet id and state), `q:{packet id}` (an inbound QoS 2 id). Each value is
//!   one record in the log's frame format; loading a session is one `HGETALL`
//!   (`store::shared::session_from` rebuilds it). An offline session's key expires with the
//!   session (`PEXPIREAT`), so Redis drops what no node will end.
//! - `{p}/node/{name}/sessions`, a set of the client ids node `name` wrote: all sessions of a
//!   node are one `SMEMBERS` (stale members are told apart by `n`).
//! - `{p}/node/{name}/wills`, a hash: client id -> the session fields (with the will) of each
//!   connection on node `name` that has a will but whose session ends with it (3.1.1 clean
//!   session, v5 expiry 0): written at CONNECT, deleted when the connection ends (the node
//!   then publishes or drops the will itself). Nothing is written for clients without a will.
//! - `{p}/dead/{name}/{started}`: taken (`SET NX`) by the survivor that recovers that node.
//!
//! Acknowledgements: under `persistence_sync = "always"` a core holds what a client could
//! read (PUBACK, PUBREC, SUBACK, CONNACK, deliveries) until its records are confirmed by Redis
//! too (a Redis outage holds them, writes are retried until Redis answers); under `interval`
//! and `never` the Redis writes are asynchronous, so a node's death can lose what it
//! acknowledged in the last moments (as a crash loses the unsynced log tail).
//!
//! Node death: when a node leaves the membership view and is still gone one lease TTL later,
//! the lowest-named live node takes `{p}/dead/...` and, for each session the dead node served,
//! clears `n`, starts the expiry clock of those that were connected, and publishes their
//! wills (on one of its cores, authorised like any will) when due, unless the client resumed
//! the session somewhere meanwhile: a connected session's will after its delay from now, an
//! offline session's pending (delayed) will when it was due on the dead node (the stored
//! session keeps a pending will until it is published). The wills of the node's connections
//! whose sessions ended with them (`{p}/node/{name}/wills`) go out at once.

use super::membership::Members;
use super::Backoff;
pub(crate) use crate::mesh::cluster::DeadWill;
use crate::store::shared::{decode_one, encode_one, session_from};
use crate::store::{Record, RecoveredSession, SessionMeta};
use bytes::Bytes;
use crossbeam_queue::SegQueue;
use futures_channel::oneshot;
use redis::aio::ConnectionManager;
use redis::{cmd, Pipeline, RedisError};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

/// One core's records of one event-loop turn, each with its stamp.
pub(crate) struct Batch {
    /// The core.
    pub shard: u16,
    /// The core's batch number (confirmed back in [`ToShard::Stored`]).
    pub seq: u64,
    /// The records, in the order pushed.
    pub records: Vec<(u64, Record)>,
}

/// A session loaded for a client that resumes it here.
pub(crate) type Loaded = RecoveredSession;

struct Load {
    client_id: Arc<str>,
    reply: oneshot::Sender<Option<Loaded>>,
}

/// What the cores hand the cluster thread: batches of records and loads. Lock-free; the
/// thread wakes on the `Notify`.
#[derive(Default)]
pub(crate) struct SessionFeed {
    batches: SegQueue<Batch>,
    loads: SegQueue<Load>,
    wake: Notify,
}

impl SessionFeed {
    /// Hands over one core's batch.
    pub(crate) fn push(&self, b: Batch) {
        self.batches.push(b);
        self.wake.notify_one();
    }

    /// Asks for `client_id`'s session; the answer is `None` when Redis has none to resume
    /// here (none, expired, or served by a live node) or could not be read.
    pub(crate) fn load(&self, client_id: Arc<str>) -> oneshot::Receiver<Option<Loaded>> {
        let (reply, rx) = oneshot::channel();
        self.loads.push(Load { client_id, reply });
        self.wake.notify_one();
        rx
    }
}

/// What the cluster thread tells the cores.
#[derive(Debug)]
pub(crate) enum ToShard {
    /// Redis holds core `shard`'s batches up to `seq`.
    Stored { shard: u16, seq: u64 },
    /// Publish this will now.
    Will(Box<DeadWill>),
}

/// Delivers a [`ToShard`] to the right core (set up by `embed`, which knows the mailboxes).
pub(crate) type Post = Arc<dyn Fn(ToShard) + Send + Sync>;

/// The session store's side of the cluster thread.
pub(crate) struct SessionStore {
    pub url: String,
    pub prefix: String,
    pub node: String,
    pub lease_ttl: Duration,
    pub shards: usize,
    pub feed: Arc<SessionFeed>,
    pub post: Post,
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Whether a failed command may succeed when sent again (the connection, not the command).
fn transient(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_connection_refusal()
}

impl SessionStore {
    fn session_key(&self, client_id: &str) -> String {
        format!("{}/session/{client_id}", self.prefix)
    }

    fn node_key(&self, node: &str) -> String {
        format!("{}/node/{node}/sessions", self.prefix)
    }

    fn wills_key(&self, node: &str) -> String {
        format!("{}/node/{node}/wills", self.prefix)
    }

    /// Connects (retrying until Redis answers), then serves the feed and watches for dead
    /// nodes until the cluster thread ends.
    pub(crate) async fn run(self, members: watch::Receiver<Members>) {
        let this = Arc::new(self);
        let mut conn = this.connect().await;
        // Wills of an earlier run's connections, if it stopped and started again before a
        // survivor recovered it: none of them is connected to this run.
        let stale = cmd("DEL")
            .arg(this.wills_key(&this.node))
            .query_async::<()>(&mut conn)
            .await;
        if let Err(e) = stale {
            warn!(error = %e, "cluster: cannot clear this node's stored wills");
        }
        tokio::spawn(this.clone().deaths(conn.clone(), members.clone()));
        loop {
            this.feed.wake.notified().await;
            while let Some(l) = this.feed.loads.pop() {
                let (this, conn, members) = (this.clone(), conn.clone(), members.clone());
                tokio::spawn(async move {
                    let s = this.load(conn, &l.client_id, &members).await;
                    let _ = l.reply.send(s);
                });
            }
            let mut batches = Vec::new();
            while let Some(b) = this.feed.batches.pop() {
                batches.push(b);
            }
            if !batches.is_empty() {
                this.write(&mut conn, batches).await;
            }
        }
    }

    async fn connect(&self) -> ConnectionManager {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            let attempt = match redis::Client::open(self.url.as_str()) {
                Ok(client) => ConnectionManager::new(client).await,
                Err(e) => Err(e),
            };
            match attempt {
                Ok(c) => {
                    info!(url = %self.url, "cluster: session store connected");
                    return c;
                }
                Err(e) => {
                    let wait = backoff.next();
                    warn!(url = %self.url, error = %e, retry_in = ?wait,
                        "cluster: session store unreachable");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Writes the batches as one pipeline (again until Redis takes it), then confirms each
    /// core's last batch.
    async fn write(&self, conn: &mut ConnectionManager, batches: Vec<Batch>) {
        let mut pipe = redis::pipe();
        let mut last: HashMap<u16, u64> = HashMap::new();
        for b in &batches {
            for (stamp, rec) in &b.records {
                self.add(&mut pipe, *stamp, rec);
            }
            last.insert(b.shard, b.seq);
        }
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        loop {
            match pipe.query_async::<()>(conn).await {
                Ok(()) => break,
                Err(e) if transient(&e) => {
                    let wait = backoff.next();
                    warn!(error = %e, retry_in = ?wait, "cluster: session store write failed");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    // A command Redis refuses (a key of another type...) would be refused
                    // again: logged, not retried for ever.
                    warn!(error = %e, "cluster: session store refused a write");
                    break;
                }
            }
        }
        for (shard, seq) in last {
            (self.post)(ToShard::Stored { shard, seq });
        }
    }

    /// The commands of one record (see the module doc for the layout).
    fn add(&self, p: &mut Pipeline, stamp: u64, rec: &Record) {
        let frame = || encode_one(stamp, rec);
        match rec {
            // A session that ends with its connection: only its will is kept (`wills_key`).
            Record::Session { meta, .. } if meta.session_expiry == 0 => {
                p.cmd("HSET")
                    .arg(self.wills_key(&self.node))
                    .arg(&*meta.client_id)
                    .arg(frame())
                    .ignore();
            }
            Record::Session { meta, fresh } => {
                let key = self.session_key(&meta.client_id);
                if *fresh {
                    p.cmd("DEL").arg(&key).ignore();
                }
                p.cmd("HSET")
                    .arg(&key)
                    .arg("meta")
                    .arg(frame())
                    .arg("n")
                    .arg(&self.node)
                    .ignore();
                p.cmd("SADD")
                    .arg(self.node_key(&self.node))
                    .arg(&*meta.client_id)
                    .ignore();
                expire_with(p, &key, meta);
            }
            Record::SessionGone { client_id } => {
                p.cmd("DEL").arg(self.session_key(client_id)).ignore();
                p.cmd("HDEL")
                    .arg(self.wills_key(&self.node))
                    .arg(&**client_id)
                    .ignore();
                p.cmd("SREM")
                    .arg(self.node_key(&self.node))
                    .arg(&**client_id)
                    .ignore();
            }
            Record::SubAdd {
                client_id, filter, ..
            } => self.set(p, client_id, format!("s:{filter}"), frame()),
            Record::SubRemove { client_id, filter } => {
                self.del(p, client_id, &[format!("s:{filter}")])
            }
            Record::Queued { client_id, msg } => {
                self.set(p, client_id, format!("m:{}", msg.id), frame())
            }
            Record::MsgState { client_id, id, .. } => {
                self.set(p, client_id, format!("t:{id}"), frame())
            }
            Record::MsgDone { client_id, id } => {
                self.del(p, client_id, &[format!("m:{id}"), format!("t:{id}")])
            }
            Record::Qos2Received {
                client_id,
                packet_id,
            } => self.set(p, client_id, format!("q:{packet_id}"), frame()),
            Record::Qos2Released {
                client_id,
                packet_id,
            } => self.del(p, client_id, &[format!("q:{packet_id}")]),
            // Another core of this node images the session; retained messages are not
            // sessions.
            Record::SessionMoved { .. }
            | Record::RetainSet { .. }
            | Record::RetainClear { .. }
            | Record::SnapshotEnd { .. } => {}
        }
    }

    fn set(&self, p: &mut Pipeline, client_id: &str, field: String, value: Vec<u8>) {
        p.cmd("HSET")
            .arg(self.session_key(client_id))
            .arg(field)
            .arg(value)
            .ignore();
    }

    fn del(&self, p: &mut Pipeline, client_id: &str, fields: &[String]) {
        p.cmd("HDEL")
            .arg(self.session_key(client_id))
            .arg(fields)
            .ignore();
    }

    /// `client_id`'s session. One a live node other than this one serves is not loaded
    /// (moving a live session between nodes is a takeover); but a node killed a moment ago
    /// stays in the view until its lease expires, so the load waits that long for it to go.
    async fn load(
        &self,
        mut conn: ConnectionManager,
        client_id: &str,
        members: &watch::Receiver<Members>,
    ) -> Option<Loaded> {
        let key = self.session_key(client_id);
        let mut fields = read_hash(&mut conn, &key).await?;
        let owner = fields
            .iter()
            .find(|(f, _)| f == "n")
            .and_then(|(_, v)| String::from_utf8(v.clone()).ok());
        if let Some(owner) = owner.filter(|o| *o != self.node) {
            let mut view = members.clone();
            let gone = view.wait_for(|v| !v.contains_key(&owner));
            let limit = self.lease_ttl + Duration::from_secs(1);
            tokio::time::timeout(limit, gone).await.ok()?.ok()?;
            fields = read_hash(&mut conn, &key).await?;
        }
        let frames = fields
            .into_iter()
            .filter(|(f, _)| f != "n")
            .map(|(_, v)| Bytes::from(v));
        match session_from(frames, self.shards, SystemTime::now()) {
            Ok(s) => s,
            Err(e) => {
                warn!(client_id, error = %e, "cluster: a stored session does not decode");
                None
            }
        }
    }

    /// Follows the membership view; recovers every node that left and stays gone.
    async fn deaths(
        self: Arc<Self>,
        conn: ConnectionManager,
        mut members: watch::Receiver<Members>,
    ) {
        let mut known = members.borrow().clone();
        while members.changed().await.is_ok() {
            let now = members.borrow().clone();
            for (name, rec) in &known {
                if !now.contains_key(name) && *name != self.node {
                    let (this, conn, members) = (self.clone(), conn.clone(), members.clone());
                    let (name, started) = (name.clone(), rec.started);
                    tokio::spawn(
                        async move { this.after_death(conn, members, name, started).await },
                    );
                }
            }
            known = now;
        }
    }

    /// One lease TTL after `dead` left: if it is still gone and this node is the lowest-named
    /// live one, recovers its sessions (once per death cluster-wide: `SET NX`).
    async fn after_death(
        &self,
        mut conn: ConnectionManager,
        members: watch::Receiver<Members>,
        dead: String,
        started: u64,
    ) {
        // An etcd restarted without its data shows every node leaving for a moment.
        tokio::time::sleep(self.lease_ttl).await;
        {
            let view = members.borrow();
            if view.contains_key(&dead) || view.keys().next() != Some(&self.node) {
                return;
            }
        }
        let guard = format!("{}/dead/{dead}/{started}", self.prefix);
        let taken: Result<Option<String>, _> = cmd("SET")
            .arg(&guard)
            .arg(&self.node)
            .arg("NX")
            .arg("EX")
            .arg(86_400)
            .query_async(&mut conn)
            .await;
        match taken {
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(e) => return warn!(node = %dead, error = %e, "cluster: cannot recover a dead node"),
        }
        if let Err(e) = self.recover(&mut conn, &dead).await {
            warn!(node = %dead, error = %e, "cluster: recovering a dead node's sessions failed");
        }
    }

    async fn recover(&self, conn: &mut ConnectionManager, dead: &str) -> Result<(), RedisError> {
        let ids: Vec<String> = cmd("SMEMBERS")
            .arg(self.node_key(dead))
            .query_async(conn)
            .await?;
        let mut wills = 0;
        for id in &ids {
            wills += usize::from(self.release(conn, dead, id).await?);
        }
        wills += self.connection_wills(conn, dead).await?;
        cmd("DEL")
            .arg(self.node_key(dead))
            .arg(self.wills_key(dead))
            .query_async::<()>(conn)
            .await?;
        info!(node = %dead, sessions = ids.len(), wills, "cluster: recovered a dead node's sessions");
        Ok(())
    }

    /// Frees session `id` of node `dead` for any node to resume; a connected one's expiry
    /// starts now and its will is scheduled. Returns whether it had a will.
    async fn release(
        &self,
        conn: &mut ConnectionManager,
        dead: &str,
        id: &str,
    ) -> Result<bool, RedisError> {
        let key = self.session_key(id);
        let (owner, frame): (Option<String>, Option<Vec<u8>>) = cmd("HMGET")
            .arg(&key)
            .arg("n")
            .arg("meta")
            .query_async(conn)
            .await?;
        let (Some(frame), true) = (frame, owner.as_deref() == Some(dead)) else {
            return Ok(false);
        };
        let Ok((stamp, Record::Session { mut meta, .. })) = decode_one(&frame) else {
            warn!(client_id = id, "cluster: a stored session does not decode");
            return Ok(false);
        };
        // Connected: its connection ended with the node, and its will is due after its delay
        // from now; offline: its will was pending, due when it was on the dead node.
        let due = meta.will_due(std::time::Instant::now());
        let will = meta.will.take();
        if meta.expires_at.is_none() {
            meta.expires_at = (meta.session_expiry != u32::MAX)
                .then(|| SystemTime::now() + Duration::from_secs(u64::from(meta.session_expiry)));
        }
        let mut p = redis::pipe();
        let rec = Record::Session {
            meta: meta.clone(),
            fresh: false,
        };
        p.cmd("HSET")
            .arg(&key)
            .arg("meta")
            .arg(encode_one(stamp, &rec))
            .ignore();
        p.cmd("HDEL").arg(&key).arg("n").ignore();
        expire_with(&mut p, &key, &meta);
        p.query_async::<()>(conn).await?;
        let Some(will) = will else { return Ok(false) };
        let dead_will = dead_will(meta, will);
        let (post, mut conn) = (self.post.clone(), conn.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(due.into()).await;
            // A client that resumed its session before the will delay ended keeps its will
            // unsent [MQTT-3.1.3-9].
            let resumed: Result<bool, _> = cmd("HEXISTS")
                .arg(&key)
                .arg("n")
                .query_async(&mut conn)
                .await;
            if !resumed.unwrap_or(false) {
                post(ToShard::Will(Box::new(dead_will)));
            }
        });
        Ok(true)
    }
}

impl SessionStore {
    /// Publishes the wills of the dead node's connections whose sessions ended with them
    /// (`{p}/node/NAME/wills`; such a session has no expiry, so its will is due at once).
    async fn connection_wills(
        &self,
        conn: &mut ConnectionManager,
        dead: &str,
    ) -> Result<usize, RedisError> {
        let entries: Vec<(String, Vec<u8>)> = cmd("HGETALL")
            .arg(self.wills_key(dead))
            .query_async(conn)
            .await?;
        let mut wills = 0;
        for (id, frame) in entries {
            let Ok((_, Record::Session { mut meta, .. })) = decode_one(&frame) else {
                warn!(client_id = id, "cluster: a stored will does not decode");
                continue;
            };
            if let Some(will) = meta.will.take() {
                (self.post)(ToShard::Will(Box::new(dead_will(meta, will))));
                wills += 1;
            }
        }
        Ok(wills)
    }
}

/// The will of `meta`'s client, to publish as that client.
fn dead_will(meta: SessionMeta, will: Box<uringmq_codec::LastWill>) -> DeadWill {
    DeadWill {
        client_id: meta.client_id,
        username: meta.username,
        listener: meta.listener,
        will,
    }
}

/// Every field of hash `key` (none: logged).
async fn read_hash(conn: &mut ConnectionManager, key: &str) -> Option<Vec<(String, Vec<u8>)>> {
    match cmd("HGETALL").arg(key).query_async(conn).await {
        Ok(f) => Some(f),
        Err(e) => {
            warn!(key, error = %e, "cluster: cannot load a session from the store");
            None
        }
    }
}

/// An offline session's key expires with it; a connected one's does not.
fn expire_with(p: &mut Pipeline, key: &str, meta: &SessionMeta) {
    match meta.expires_at.filter(|_| meta.session_expiry != u32::MAX) {
        Some(t) => p.cmd("PEXPIREAT").arg(key).arg(millis(t)).ignore(),
        None => p.cmd("PERSIST").arg(key).ignore(),
    };
}
