//! [`Broker`]: the running broker's handle: addresses, in-process publish and subscribe,
//! clients, stats and stop.

use super::subscription::Subscription;
use crate::api::{
    ApiError, ClientSummary, InjectedMessage, Stats, SubscribeOptions, IN_PROCESS_CLIENT_ID,
    IN_PROCESS_LISTENER,
};
use crate::config::Config;
use crate::mesh::{ApiCmd, ApiSink, EventFd, MeshMsg};
use crate::net::Endpoint;
use crate::security::Security;
use crate::shard::Shared;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::info;
use uringmq_auth::{Access, ClientInfo};
use uringmq_codec::QoS;
use uringmq_session::{Message, Origin, SubOptions};
use uringmq_topic::{validate_topic_filter, validate_topic_name, SharedFilter};

/// A running broker. Dropping it stops it.
pub struct Broker {
    pub(super) shared: Arc<Shared>,
    pub(super) threads: Vec<JoinHandle<()>>,
    pub(super) listeners: Vec<(String, SocketAddr)>,
    /// The listeners' run-time settings (certificates reloaded on SIGHUP).
    pub(crate) endpoints: Vec<Arc<Endpoint>>,
    /// Password file and ACL (re-read on SIGHUP).
    pub(crate) security: Arc<Security>,
    /// `$SYS`, the metrics endpoint and the snapshot they read (`ops/`).
    pub(super) ops: crate::ops::Ops,
    /// The cluster thread, with `[cluster]` (`cluster/`).
    pub(super) cluster: Option<crate::cluster::Cluster>,
    pub(super) running: bool,
}

/// How long an API call waits for a core to answer.
pub(super) const API_TIMEOUT: Duration = Duration::from_secs(10);

impl Broker {
    /// The default listener's bound address (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.listeners[0].1
    }

    /// Every listener's name and bound address.
    pub fn listener_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.listeners.clone()
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// What the durable store recovered at start and has written since (None without
    /// `persistence_dir`). The store's counters are refreshed every 100 ms.
    pub fn persistence_stats(&self) -> Option<crate::PersistenceStats> {
        self.shared.boot.as_ref().map(|b| b.stats())
    }

    /// Whether the broker runs.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Publishes a message in-process (no socket); it enters core 0 like a client's PUBLISH.
    ///
    /// It is authorised like a client's PUBLISH (every path that publishes is): a `$SYS/`
    /// topic is refused, then the ACL file and the authorisation hook decide for the client
    /// [`crate::IN_PROCESS_CLIENT_ID`] on the listener `default` with the user name
    /// [`InjectedMessage::username`] (`None`: the ACL file's anonymous and `pattern` rules
    /// apply). The check runs on the calling thread, so a blocking hook (Python) is called
    /// here, never on a core. A denied publish is [`ApiError::NotAuthorized`]. With no ACL
    /// file and no hook everything is allowed. Deliveries to clients are checked against
    /// each subscriber's `read` rules as usual.
    pub fn publish(&self, msg: InjectedMessage) -> Result<(), ApiError> {
        if !self.running {
            return Err(ApiError::NotRunning);
        }
        inject(&self.shared, msg, None)
    }

    /// Subscribes in-process; returns once the subscription is effective on every core (a
    /// message published afterwards by any client reaches it).
    pub fn subscribe(&self, filter: &str, qos: QoS) -> Result<Subscription, ApiError> {
        self.subscribe_with(
            filter,
            SubscribeOptions {
                qos,
                ..Default::default()
            },
        )
    }

    /// The connected clients of every core (after CONNACK; in no particular order).
    pub fn clients(&self) -> Result<Vec<ClientSummary>, ApiError> {
        if !self.running {
            return Err(ApiError::NotRunning);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        for mb in self.shared.mailboxes.iter() {
            mb.push(MeshMsg::Api(ApiCmd::Clients(tx.clone())));
        }
        let deadline = Instant::now() + API_TIMEOUT;
        let mut all = Vec::new();
        for _ in 0..self.shared.cores() {
            let left = deadline.saturating_duration_since(Instant::now());
            all.extend(rx.recv_timeout(left).map_err(|_| ApiError::Timeout)?);
        }
        Ok(all)
    }

    /// Closes the connection of client `client_id`, as Mosquitto's
    /// `mosquitto_kick_client_by_clientid(id, with_will)` does: a v5 client gets DISCONNECT
    /// 0x98 (administrative action); its will is published only with `with_will` (Mosquitto's
    /// dynamic-security plugin kicks with `false`: an administrator's kick is not the
    /// abnormal loss a will announces), else it is discarded. A persistent session stays.
    /// Returns whether the client was connected.
    pub fn disconnect(&self, client_id: &str, with_will: bool) -> Result<bool, ApiError> {
        if !self.running {
            return Err(ApiError::NotRunning);
        }
        let Some(session) = self.shared.registry.owner(client_id) else {
            return Ok(false);
        };
        let (reply, rx) = std::sync::mpsc::channel();
        let core = usize::from(crate::mesh::core_of(session));
        self.shared.mailboxes[core].push(MeshMsg::Api(ApiCmd::Kick {
            session,
            with_will,
            reply,
        }));
        rx.recv_timeout(API_TIMEOUT).map_err(|_| ApiError::Timeout)
    }

    /// Installs a session image as an offline session, as the durable store's recovery does
    /// at start (its subscriptions, queued and in-flight QoS 1/2 messages with their packet
    /// ids, inbound QoS 2 ids, will and expiry); its client then resumes it by connecting
    /// with clean start 0. The image is the store's own records
    /// ([`crate::store::image::encode`] of a [`crate::store::RecoveredSession`]). Refused
    /// ([`ApiError::Session`]) when the bytes are no image of this version or the client id
    /// has a session here already.
    pub fn import_session(&self, image: &[u8]) -> Result<(), ApiError> {
        if !self.running {
            return Err(ApiError::NotRunning);
        }
        let rs = crate::store::image::decode(bytes::Bytes::copy_from_slice(image))
            .map_err(|e| ApiError::Session(e.to_string()))?;
        let core = crate::store::home_shard(&rs.meta.client_id, self.shared.cores());
        let (tx, rx) = std::sync::mpsc::channel();
        let reply: crate::mesh::ImportReply = Box::new(move |r| {
            let _ = tx.send(r);
        });
        self.shared.mailboxes[core].push(MeshMsg::Api(ApiCmd::Import(Box::new(rs), reply)));
        match rx.recv_timeout(API_TIMEOUT) {
            Ok(r) => r.map(|_| ()).map_err(|e| ApiError::Session(e.to_string())),
            Err(_) => Err(ApiError::Timeout),
        }
    }

    /// Takes client `client_id`'s session away from this broker and returns its image for
    /// [`Broker::import_session`] (on this or another broker), or `None` when it has no
    /// session. A connected client is treated as if it connected elsewhere: its connection
    /// is drained and closed (v5: DISCONNECT 0x8E Session taken over) and its will is not
    /// published (the session goes on); the session, its subscriptions and its queue leave
    /// this broker (and its store).
    pub fn export_session(&self, client_id: &str) -> Result<Option<Vec<u8>>, ApiError> {
        if !self.running {
            return Err(ApiError::NotRunning);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let core = crate::store::home_shard(client_id, self.shared.cores());
        let reply: crate::mesh::ExportReply = Box::new(move |image| {
            let _ = tx.send(image);
        });
        self.shared.mailboxes[core].push(MeshMsg::Api(ApiCmd::Export {
            id: client_id.into(),
            clean_start: false,
            reply,
        }));
        rx.recv_timeout(API_TIMEOUT).map_err(|_| ApiError::Timeout)
    }

    /// Subscribes in-process with MQTT 5 subscription options; returns once the subscription
    /// is effective on every core.
    pub fn subscribe_with(
        &self,
        filter: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, ApiError> {
        if !self.running {
            return Err(ApiError::NotRunning);
        }
        let opts = sub_options(&options)?;
        match SharedFilter::parse(filter) {
            Ok(Some(_)) => {}
            Ok(None) => {
                validate_topic_filter(filter).map_err(|e| ApiError::InvalidTopic(e.to_string()))?
            }
            Err(e) => return Err(ApiError::InvalidTopic(e.to_string())),
        }
        // SAFETY: plain eventfd creation; the fd is owned by the ApiSink.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(ApiError::NotRunning);
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let event = Arc::new(EventFd(fd));
        let sink = Arc::new(ApiSink {
            tx,
            event: event.clone(),
        });
        let (reply_tx, reply_rx) = std::sync::mpsc::channel();
        self.shared.mailboxes[0].push(MeshMsg::Api(ApiCmd::Subscribe {
            filter: filter.to_owned(),
            opts,
            sink: sink.clone(),
            reply: reply_tx,
        }));
        let key = match reply_rx.recv_timeout(API_TIMEOUT) {
            Ok(r) => r?,
            Err(_) => return Err(ApiError::Timeout),
        };
        drop(sink);
        Ok(Subscription {
            shared: self.shared.clone(),
            key,
            rx,
            event,
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Counters summed over cores (the gauges computed on demand are refreshed first).
    pub fn stats(&self) -> Stats {
        self.snapshot().total()
    }

    fn snapshot(&self) -> crate::ops::Snapshot {
        crate::ops::snapshot(&self.shared, self.running)
    }

    /// The metrics in the Prometheus text format (what `GET /metrics` on `metrics_listen`
    /// serves), for embedders who serve their own endpoint.
    pub fn metrics_text(&self) -> String {
        self.ops.context().metrics_text()
    }

    /// This node's view of its cluster (registered nodes, links), with `[cluster]`.
    pub fn cluster_status(&self) -> Option<crate::ClusterStatus> {
        self.cluster.as_ref().map(|c| c.status())
    }

    /// The bound address of `metrics_listen` (port 0 resolved), if set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.ops.metrics_addr()
    }

    /// Stops the broker: closes the listeners (the port is free on return) and every
    /// connection (v5 clients get DISCONNECT 0x8B; no wills are published), and joins every
    /// thread but a hook thread stuck in a hook (detached: `stop` never waits for a hook, see
    /// `security/hook_threads.rs`). Idempotent.
    pub fn stop(&mut self) {
        if !self.running && self.threads.is_empty() {
            return;
        }
        self.running = false;
        // Leave the cluster first: the others stop routing here before the clients go.
        if let Some(c) = &mut self.cluster {
            c.stop();
        }
        self.ops.stop();
        for mb in self.shared.mailboxes.iter() {
            mb.push(MeshMsg::Stop);
        }
        // Before joining the cores: queued checks are dropped (their connections end), and a
        // thread stuck in a hook is detached, so stop() returns whatever a hook does.
        self.shared.hooks.shutdown();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        info!("uringmq stopped");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Routes an injected message from core 0, as the in-process session `origin` if any; a
/// retained one is in every core's retained replica (or on its way ahead of anything the caller
/// does next) when this returns.
pub(super) fn inject(
    shared: &Shared,
    msg: InjectedMessage,
    origin: Option<Origin>,
) -> Result<(), ApiError> {
    validate_topic_name(&msg.topic).map_err(|e| ApiError::InvalidTopic(e.to_string()))?;
    authorise(shared, &msg)?;
    let mut properties = msg.properties;
    properties.topic_alias = None;
    properties.subscription_identifiers.clear();
    let m = Message {
        topic: msg.topic.into(),
        payload: msg.payload,
        qos: msg.qos,
        retain: msg.retain,
        properties,
        origin,
        received_at: Instant::now(),
    };
    if !m.retain {
        shared.mailboxes[0].push(MeshMsg::Api(ApiCmd::Publish(Arc::new(m), None)));
        return Ok(());
    }
    // A retained message is stored before publish() returns, so a client that subscribes
    // afterwards, on any core, gets it (as after a client's PUBLISH was acknowledged); the
    // causality rule then holds because every mailbox is FIFO. Only retained messages pay
    // this round trip.
    let (applied, rx) = std::sync::mpsc::channel();
    shared.mailboxes[0].push(MeshMsg::Api(ApiCmd::Publish(Arc::new(m), Some(applied))));
    rx.recv_timeout(API_TIMEOUT).map_err(|_| ApiError::Timeout)
}

/// Authorises an in-process publish like a client's PUBLISH, on the caller's thread (never a
/// core's, so a blocking hook may run here): `$SYS/` is the broker's [§4.7.2] (Mosquitto
/// denies every write there), then the authoriser chain (ACL file, then the hook) decides
/// for [`IN_PROCESS_CLIENT_ID`] on [`IN_PROCESS_LISTENER`].
fn authorise(shared: &Shared, msg: &InjectedMessage) -> Result<(), ApiError> {
    let denied = |why: &str| Err(ApiError::NotAuthorized(format!("{}: {why}", msg.topic)));
    if Message::is_sys_topic(&msg.topic) {
        return denied("`$SYS/` topics are reserved to the broker");
    }
    let Some(a) = &shared.authorizer else {
        return Ok(());
    };
    let who = ClientInfo::new(
        IN_PROCESS_CLIENT_ID,
        msg.username.as_deref(),
        IN_PROCESS_LISTENER,
    );
    if a.authorize(&who, Access::Publish, &msg.topic) {
        Ok(())
    } else {
        denied("denied by the ACL file or the authorisation hook")
    }
}

/// The session options of an in-process subscription, checked as a SUBSCRIBE's would be.
fn sub_options(o: &SubscribeOptions) -> Result<SubOptions, ApiError> {
    if o.subscription_identifier == Some(0) || o.subscription_identifier > Some(268_435_455) {
        return Err(ApiError::InvalidOption(
            "subscription_identifier must be 1..268435455 [MQTT-3.8.2-1]".into(),
        ));
    }
    Ok(SubOptions {
        qos: o.qos,
        no_local: o.no_local,
        retain_as_published: o.retain_as_published,
        retain_handling: o.retain_handling,
        id: o.subscription_identifier,
    })
}
