//! Membership on etcd: this node's key under a lease kept alive, and a watch of every node's.
//!
//! The node puts `{prefix}/nodes/{name}` (its [`NodeRecord`]) under a lease of
//! `lease_ttl_secs` and renews it three times per TTL; a node that stops renewing (killed,
//! cut off) loses its key when the lease expires, and every watcher sees it go. A stopping node
//! revokes its lease, so the others see it leave at once. The view of the members is a
//! `watch` channel the link manager follows. Any failure of the etcd session (etcd restarted,
//! unreachable, the lease lost) ends the session: after a backoff the node connects again,
//! grants a new lease, puts its key again and reads the whole prefix before it watches from
//! that revision, so nothing between two sessions is missed. The last view is kept meanwhile:
//! an etcd outage does not cut the links between live nodes. A node the full read no longer
//! finds stays in the view for a while ([`DOUBT`]): an etcd that came back without its data
//! holds only the nodes that registered again so far, and the others, alive, follow within
//! their backoff; taking them for gone would drop their routes and the messages queued for
//! them. One that does not come back by then leaves the view.
//!
//! etcd is touched only here: never per message, never per CONNECT.

use super::status::StatusBoard;
use super::Backoff;
use crate::config::ClusterConfig;
use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, KeyValue, LeaseKeepAliveStream, LeaseKeeper,
    PutOptions, WatchOptions, WatchStream,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{interval, sleep, timeout, Instant, MissedTickBehavior};
use tracing::{info, warn};

/// HTTP/2 pings to etcd: at most one per this interval. etcd refuses client pings sooner than
/// its `--grpc-keepalive-min-time` (5 s by default) after the previous one: on the third such
/// ping between two of its own writes it sends GOAWAY `too_many_pings` and closes the
/// connection, ending the session. With 1 s pings a node whose lease renewals (its TTL / 3)
/// come more than ~4 s apart (`lease_ttl_secs` above ~10) lost its session every few seconds.
/// A dead etcd is noticed by the renewals anyway (no answer within the TTL).
const ETCD_PING_EVERY: Duration = Duration::from_secs(10);
/// How long a ping may go unanswered before the connection counts as dead.
const ETCD_PING_TIMEOUT: Duration = Duration::from_secs(5);

/// What a node registers about itself (the value of its key, as TOML).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// `host:port` of its node-to-node link listener.
    pub addr: String,
    /// When it started (seconds since the Unix epoch).
    pub started: u64,
    /// Its uringmq version.
    pub version: String,
    /// Its `/metrics` address, if it serves one (`uringmq cluster status` reads it).
    #[serde(default)]
    pub metrics: Option<String>,
}

/// Every registered node by name, this one included.
pub type Members = BTreeMap<String, NodeRecord>;

/// What the membership task needs.
pub struct Membership {
    /// The cluster settings.
    pub config: ClusterConfig,
    /// What this node registers.
    pub me: NodeRecord,
    /// The view, for the link manager.
    pub members: watch::Sender<Members>,
    /// Status for `cluster_status`.
    pub board: Arc<StatusBoard>,
}

/// How long beyond a lease TTL a node missing from a full read of the prefix stays in the
/// view: the longest wait between two attempts to reach etcd again (2 s, +20% jitter), with
/// a margin.
const DOUBT: Duration = Duration::from_secs(3);

/// An etcd session that ended: why.
type SessionError = Box<dyn std::error::Error + Send + Sync>;

/// A live etcd session: the client, this node's lease and its streams.
struct Session {
    client: Client,
    lease: i64,
    keeper: LeaseKeeper,
    alive: LeaseKeepAliveStream,
    watcher: WatchStream,
    /// Nodes of the last view that the full read did not find, and when they leave it.
    doubtful: BTreeMap<String, Instant>,
}

impl Membership {
    /// Runs etcd sessions until `stop` turns true; the last one revokes the lease.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            let started = Instant::now();
            // Connecting may wait for timeouts: a stop does not wait for them.
            let session = tokio::select! {
                r = self.register() => r,
                _ = stop.wait_for(|s| *s) => return,
            };
            let result = match session {
                Ok(session) => self.serve(session, &mut stop).await,
                Err(e) => Err(e),
            };
            self.board.set_registered(false);
            match result {
                Ok(()) => return,
                Err(e) => {
                    if started.elapsed() > Duration::from_secs(self.config.lease_ttl_secs) {
                        backoff.reset();
                    }
                    let wait = backoff.next();
                    warn!(error = %e, retry_in = ?wait, "cluster: etcd session lost");
                    tokio::select! {
                        _ = sleep(wait) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            }
        }
    }

    /// Starts an etcd session: connect, grant a lease, put this node's key under it, read
    /// every node's key and watch the prefix from there.
    async fn register(&self) -> Result<Session, SessionError> {
        let ttl = Duration::from_secs(self.config.lease_ttl_secs);
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(ttl)
            .with_keep_alive(ETCD_PING_EVERY, ETCD_PING_TIMEOUT);
        let mut client = Client::connect(&self.config.etcd, Some(options)).await?;
        let lease = client
            .lease_grant(self.config.lease_ttl_secs as i64, None)
            .await?
            .id();
        let key = self.config.node_key(&self.config.name);
        let value = toml::to_string(&self.me)?;
        client
            .put(
                key.as_str(),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await?;
        // Registered from here (its key is in etcd), before the view that links the others:
        // whoever sees the links up sees it registered.
        self.board.set_registered(true);
        let (keeper, alive) = client.lease_keep_alive(lease).await?;
        let prefix = self.config.nodes_prefix();
        let all = client
            .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await?;
        let revision = all.header().map_or(0, |h| h.revision());
        let doubtful = self.replace_view(all.kvs());
        let watch_from = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let watcher = client.watch(prefix.as_str(), Some(watch_from)).await?;
        info!(node = %self.config.name, lease, "cluster: registered in etcd");
        Ok(Session {
            client,
            lease,
            keeper,
            alive,
            watcher,
            doubtful,
        })
    }

    /// Keeps the lease alive and applies the watch until an error or `stop` (which revokes
    /// the lease).
    async fn serve(
        &self,
        mut s: Session,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), SessionError> {
        let ttl = Duration::from_secs(self.config.lease_ttl_secs);
        let mut tick = interval(ttl / 3);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    // No answer to the keep-alives for a whole TTL: the lease is gone.
                    if renewed.elapsed() > ttl {
                        return Err("no keep-alive answer within the lease TTL".into());
                    }
                    self.end_doubts(&mut s.doubtful);
                    s.keeper.keep_alive().await?;
                }
                answer = s.alive.message() => match answer? {
                    Some(a) if a.ttl() > 0 => renewed = Instant::now(),
                    _ => return Err("the lease expired".into()),
                },
                update = s.watcher.message() => {
                    let update = update?.ok_or("the watch ended")?;
                    if update.canceled() {
                        return Err(format!("watch canceled: {}", update.cancel_reason()).into());
                    }
                    for e in update.events() {
                        self.apply(e.event_type(), e.kv(), &mut s.doubtful);
                    }
                }
                _ = stop.wait_for(|s| *s) => {
                    // Leave at once for everyone rather than after the TTL.
                    let revoke = s.client.lease_revoke(s.lease);
                    let _ = timeout(Duration::from_secs(1), revoke).await;
                    return Ok(());
                }
            }
        }
    }

    /// Replaces the view with a full read of the prefix, logging who joined; returns the nodes
    /// of the old view it lacks, which stay in the view until their deadline.
    fn replace_view(&self, kvs: &[KeyValue]) -> BTreeMap<String, Instant> {
        let mut fresh: Members = kvs.iter().filter_map(|kv| self.parse(kv)).collect();
        let until = Instant::now() + Duration::from_secs(self.config.lease_ttl_secs) + DOUBT;
        let mut doubtful = BTreeMap::new();
        self.update(|view| {
            for (name, old) in view.iter() {
                if !fresh.contains_key(name) {
                    doubtful.insert(name.clone(), until);
                    fresh.insert(name.clone(), old.clone());
                }
            }
            for (name, rec) in &fresh {
                if view.get(name) != Some(rec) {
                    info!(node = %name, addr = %rec.addr, "cluster: node joined");
                }
            }
            let changed = *view != fresh;
            *view = fresh;
            changed
        });
        doubtful
    }

    /// Nodes in doubt past their deadline leave the view.
    fn end_doubts(&self, doubtful: &mut BTreeMap<String, Instant>) {
        let now = Instant::now();
        let gone: Vec<String> = (doubtful.iter())
            .filter(|(_, until)| **until <= now)
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            doubtful.remove(&name);
            self.update(|view| {
                let left = view.remove(&name).is_some();
                if left {
                    info!(node = %name, "cluster: node left (not registered again)");
                }
                left
            });
        }
    }

    /// Applies one watch event.
    fn apply(
        &self,
        kind: EventType,
        kv: Option<&KeyValue>,
        doubtful: &mut BTreeMap<String, Instant>,
    ) {
        let Some(kv) = kv else { return };
        match kind {
            EventType::Put => {
                let Some((name, rec)) = self.parse(kv) else {
                    return;
                };
                doubtful.remove(&name);
                self.update(|view| {
                    if view.get(&name) == Some(&rec) {
                        return false;
                    }
                    info!(node = %name, addr = %rec.addr, "cluster: node joined");
                    view.insert(name, rec);
                    true
                });
            }
            EventType::Delete => {
                let key = String::from_utf8_lossy(kv.key());
                let Some(name) = key.strip_prefix(&self.config.nodes_prefix()) else {
                    return;
                };
                doubtful.remove(name);
                self.update(|view| {
                    let gone = view.remove(name).is_some();
                    if gone {
                        info!(node = %name, "cluster: node left");
                    }
                    gone
                });
            }
        }
    }

    /// Changes the view with `f` (which says whether it changed it); the status follows.
    fn update(&self, f: impl FnOnce(&mut Members) -> bool) {
        if self.members.send_if_modified(f) {
            self.board.set_members(&self.members.borrow());
        }
    }

    /// A node's name and record from its key-value; a record that does not parse is logged
    /// and ignored (another version, or someone else's key under the prefix).
    fn parse(&self, kv: &KeyValue) -> Option<(String, NodeRecord)> {
        let key = String::from_utf8_lossy(kv.key());
        let name = key.strip_prefix(&self.config.nodes_prefix())?.to_owned();
        let text = String::from_utf8_lossy(kv.value());
        match toml::from_str::<NodeRecord>(&text) {
            Ok(rec) => Some((name, rec)),
            Err(e) => {
                warn!(key = %key, error = %e, "cluster: ignoring a node record that does not parse");
                None
            }
        }
    }
}
