//! One client connection: the accept loop, a reader task (decode, CONNECT, packet handling)
//! and a writer task (flushes the connection's buffer, one write per wake-up).
//!
//! Idle connections hold no buffers: the reader waits for readability before it allocates a
//! read buffer and drops it again once every complete packet is handled, and the writer drops
//! its buffer when nothing is left to write. Timers never race a read: the keep-alive sweep
//! and takeovers shut the socket down, which ends the pending read.

use crate::core::{add, CloseReason, Core, LocalNotify, Sink, TaskGuard};
use crate::endpoint::{Endpoint, Slot};
use crate::out_queue::OutQueue;
use crate::router::write_packet;
use bytes::BytesMut;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::{TcpListener, TcpStream};
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};
use uringmq_auth::ClientInfo;
use uringmq_codec::{
    ByteStr, ConnAck, Connect, Decoder, Disconnect, DisconnectProperties, Packet, Protocol,
    ReasonCode,
};
use uringmq_session::{keepalive, negotiate, Session};

/// Bytes read at a time (more when a packet in progress needs more).
const READ_CHUNK: usize = 4096;
/// Largest write buffer an idle connection keeps.
const IDLE_WRITE_BUFFER: usize = 256;
/// Largest second buffer kept while a connection is busy.
const MAX_SPARE_WRITE_BUFFER: usize = 256 * 1024;

/// What the core knows about one connection (shared by its reader, writer and the core).
pub(crate) struct Conn {
    pub(crate) fd: RawFd,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) listener: Arc<str>,
    /// TLS / WebSocket adapter (`Transport::Tcp`, a unit variant, for plain TCP).
    pub(crate) transport: RefCell<uringmq_transport::Transport>,
    /// A v5 enhanced authentication exchange before CONNACK (none for most connections).
    pub(crate) exchange: RefCell<Option<Box<crate::auth::Exchange>>>,
    /// Bytes waiting for the writer (large payloads shared, not copied).
    pub(crate) out: RefCell<OutQueue>,
    /// Wakes the writer.
    pub(crate) wake: LocalNotify,
    /// A delivery was refused because `out` was over the limit: pump the session after flushing.
    pub(crate) blocked: Cell<bool>,
    /// The writer flushes what is left and exits.
    pub(crate) closing: Cell<bool>,
    /// The session while connected.
    pub(crate) session: Cell<Option<u64>>,
    pub(crate) client_id: RefCell<Option<Arc<str>>>,
    pub(crate) protocol: Cell<Protocol>,
    /// Set when the core closes the connection (keep-alive, takeover, stop): why and when.
    /// Boxed: most connections are never killed, and every idle one would carry the room.
    killed: RefCell<Option<Box<(CloseReason, Instant)>>>,
    pub(crate) last_seen: Cell<Instant>,
    /// 1.5x keep-alive, once connected.
    pub(crate) grace: Cell<Option<Duration>>,
    /// Until CONNECT is accepted.
    pub(crate) connect_deadline: Cell<Option<Instant>>,
}

impl Conn {
    fn new(
        fd: RawFd,
        peer: Option<SocketAddr>,
        listener: Arc<str>,
        transport: uringmq_transport::Transport,
        deadline: Instant,
    ) -> Self {
        Conn {
            fd,
            peer,
            listener,
            transport: RefCell::new(transport),
            exchange: RefCell::new(None),
            out: RefCell::new(OutQueue::default()),
            wake: LocalNotify::default(),
            blocked: Cell::new(false),
            closing: Cell::new(false),
            session: Cell::new(None),
            client_id: RefCell::new(None),
            protocol: Cell::new(Protocol::V3_1_1),
            killed: RefCell::new(None),
            last_seen: Cell::new(Instant::now()),
            grace: Cell::new(None),
            connect_deadline: Cell::new(Some(deadline)),
        }
    }

    /// Why the core closed the connection, if it did.
    pub(crate) fn kill_reason(&self) -> Option<CloseReason> {
        self.killed.borrow().as_ref().map(|k| k.0.clone())
    }

    /// When the core closed the connection, if it did.
    pub(crate) fn killed_at(&self) -> Option<Instant> {
        self.killed.borrow().as_ref().map(|k| k.1)
    }

    fn connected(&self) -> bool {
        self.connect_deadline.get().is_none()
    }

    /// Ends the connection: a v5 client gets DISCONNECT with the reason code [MQTT-4.13.1-1],
    /// the writer flushes and exits, and the pending read ends (socket shut down for reading).
    pub(crate) fn kill(&self, reason: CloseReason) {
        if self.killed.borrow().is_some() {
            return;
        }
        self.close_with(&reason);
        *self.killed.borrow_mut() = Some(Box::new((reason, Instant::now())));
        // SAFETY: shutdown on the connection's own fd, still open (the reader and writer own it).
        unsafe { libc::shutdown(self.fd, libc::SHUT_RD) };
    }

    /// Queues the server's DISCONNECT (v5, after CONNECT) and tells the writer to finish.
    fn close_with(&self, reason: &CloseReason) {
        if self.connected() && self.protocol.get().is_v5() && !self.closing.get() {
            let (code, why) = match reason {
                CloseReason::KeepAlive => (ReasonCode::KEEP_ALIVE_TIMEOUT, None),
                CloseReason::TakenOver => (ReasonCode::SESSION_TAKEN_OVER, None),
                CloseReason::Shutdown => (ReasonCode::SERVER_SHUTTING_DOWN, None),
                CloseReason::Protocol(code, why) => (ReasonCode(*code), Some(why.as_str())),
                _ => (ReasonCode::NORMAL_DISCONNECTION, None),
            };
            if code != ReasonCode::NORMAL_DISCONNECTION || why.is_some() {
                let d = Disconnect {
                    reason_code: code,
                    properties: DisconnectProperties {
                        reason_string: why.map(|w| ByteStr::from(truncate(w, 200))),
                        ..Default::default()
                    },
                };
                write_packet(
                    self.out.borrow_mut().buf(),
                    &Packet::Disconnect(d),
                    Protocol::V5,
                );
            }
        }
        self.closing.set(true);
        self.wake.notify();
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Accepts connections on one listener of this core until the core stops.
pub(crate) async fn accept_loop(
    core: Rc<Core>,
    listener: TcpListener,
    endpoint: Arc<Endpoint>,
    _guard: TaskGuard,
) {
    let name = endpoint.name.clone();
    loop {
        let accepted = listener.accept().await;
        if core.stopping.get() {
            break;
        }
        match accepted {
            Ok((stream, peer)) => {
                let max = core.config().max_connections;
                let n = core.shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
                if max != 0 && n > max {
                    // Like Mosquitto: over `max_connections` the socket is closed at once.
                    core.shared.connections.fetch_sub(1, Ordering::Relaxed);
                    debug!(%peer, "max_connections reached: connection refused");
                    drop(stream);
                    continue;
                }
                let Some(slot) = endpoint.admit() else {
                    core.shared.connections.fetch_sub(1, Ordering::Relaxed);
                    debug!(%peer, listener = %name, "listener max_connections reached: refused");
                    continue;
                };
                let Some(transport) = crate::transport_io::accept(&endpoint) else {
                    core.shared.connections.fetch_sub(1, Ordering::Relaxed);
                    continue;
                };
                let guard = core.task_guard();
                let accepted = (name.clone(), transport, slot);
                connection(core.clone(), stream, peer, accepted, guard);
            }
            Err(e) => {
                warn!(core = core.id, listener = %name, "accept failed: {e}");
                // Out of file descriptors and the like: back off instead of spinning.
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    debug!(core = core.id, listener = %name, "listener closed");
}

/// Sets a new connection up and spawns its reader and writer tasks. Not `async`: what is
/// only needed here (the stream, the listener, the peer address) must not take room in the
/// reader's future, which every idle connection keeps for its lifetime.
fn connection(
    core: Rc<Core>,
    stream: TcpStream,
    peer: SocketAddr,
    (listener, transport, slot): (Arc<str>, uringmq_transport::Transport, Slot),
    guard: TaskGuard,
) {
    let _ = stream.set_nodelay(true);
    let fd = stream.as_raw_fd();
    let deadline =
        Instant::now() + Duration::from_secs(u64::from(core.config().connect_timeout_secs));
    let conn = Rc::new(Conn::new(fd, Some(peer), listener, transport, deadline));
    let conn_id = core.register_conn(conn.clone());
    if core.stopping.get() {
        conn.kill(CloseReason::Shutdown);
    }
    let (rd, wr) = stream.into_split();
    monoio::spawn(writer(core.clone(), conn.clone(), wr, core.task_guard()));
    monoio::spawn(serve(core, conn, conn_id, rd, (slot, guard)));
}

/// The reader task of one connection: reads until the connection ends, then closes it.
async fn serve(
    core: Rc<Core>,
    conn: Rc<Conn>,
    conn_id: u64,
    rd: OwnedReadHalf<TcpStream>,
    _held: (Slot, TaskGuard),
) {
    let reason = read_loop(&core, &conn, rd).await;
    let peer = conn.peer;
    let reason = conn.kill_reason().unwrap_or(reason);
    if let CloseReason::Protocol(..) = reason {
        add(&core.stats().protocol_errors, 1);
    }
    // The writer sends what is queued (e.g. a DISCONNECT) and exits.
    conn.close_with(&reason);
    let client_id = conn.client_id.borrow().clone();
    if let Some(key) = conn.session.take() {
        core.stats().connections.fetch_sub(1, Ordering::Relaxed);
        core.connection_closed(key, &reason);
    }
    match client_id {
        Some(id) => {
            info!(client_id = %id, ?peer, core = core.id, reason = %reason, "client disconnected")
        }
        None => debug!(?peer, reason = %reason, "connection closed before CONNECT"),
    }
    core.unregister_conn(conn_id);
    core.shared.connections.fetch_sub(1, Ordering::Relaxed);
}

async fn read_loop(
    core: &Rc<Core>,
    conn: &Rc<Conn>,
    mut rd: OwnedReadHalf<TcpStream>,
) -> CloseReason {
    let mut buf = BytesMut::new();
    let mut decoder = Decoder::new(core.config().max_packet_size);
    let mut filled = false;
    loop {
        if buf.is_empty() && !filled {
            // Idle: hold no buffer while waiting.
            buf = BytesMut::new();
            // SAFETY: `readable` takes `&self`; the read half is used by this task only and no
            // read is in flight.
            let ready = unsafe { &*rd.0.get() }.readable(false).await;
            if let Err(e) = ready {
                return CloseReason::Io(e.to_string());
            }
        }
        if let Some(r) = conn.kill_reason() {
            return r;
        }
        let mut peer_closed = false;
        if conn.transport.borrow().is_passthrough() {
            buf.reserve(decoder.needed(&buf).max(READ_CHUNK));
            let len = buf.len();
            // Boxed, like the TLS/WebSocket read below: the reader's future, which every idle
            // connection holds, then only has room for the small readiness wait.
            let (res, slice) = Box::pin(rd.read(buf.slice_mut(len..))).await;
            buf = slice.into_inner();
            match res {
                Ok(0) => return CloseReason::Eof,
                Ok(n) => {
                    filled = buf.len() == buf.capacity();
                    add(&core.stats().bytes_in, n as u64);
                    conn.last_seen.set(Instant::now());
                }
                Err(e) => return CloseReason::Io(e.to_string()),
            }
        } else {
            match Box::pin(crate::transport_io::read(conn, &mut rd, &mut buf)).await {
                Ok(r) => {
                    (filled, peer_closed) = (r.filled, r.closed);
                    add(&core.stats().bytes_in, r.raw as u64);
                    conn.last_seen.set(Instant::now());
                }
                Err(reason) => return reason,
            }
        }
        loop {
            if let Some(r) = conn.kill_reason() {
                return r;
            }
            match decoder.decode(&mut buf) {
                Ok(None) => break,
                Ok(Some(packet)) => match handle(core, conn, packet) {
                    Ok(None) => {}
                    Ok(Some(slow)) => {
                        if let Err(r) = slow.await {
                            return r;
                        }
                    }
                    Err(r) => return r,
                },
                Err(e) => {
                    let code = e.reason_code();
                    if !conn.connected() {
                        // A malformed CONNECT: v5 may get CONNACK with the reason [MQTT-3.1.4-1];
                        // 3.1.1 gets CONNACK 0x01 only for an unsupported level [MQTT-3.1.2-2].
                        match decoder.protocol() {
                            Some(p)
                                if p.is_v5()
                                    || code == ReasonCode::UNSUPPORTED_PROTOCOL_VERSION =>
                            {
                                refuse(conn, p, code)
                            }
                            None if code == ReasonCode::UNSUPPORTED_PROTOCOL_VERSION => {
                                refuse(conn, Protocol::V3_1_1, code)
                            }
                            _ => {}
                        }
                    }
                    return CloseReason::Protocol(code.0, e.to_string());
                }
            }
        }
        if peer_closed {
            return CloseReason::Eof;
        }
    }
}

/// A future that handles one packet which needs to wait (CONNECT, a blocking authoriser).
type Slow<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), CloseReason>> + 'a>>;

/// Handles one decoded packet: at once when it needs no waiting (every packet of a
/// connected client without a blocking authoriser), else returns the boxed future that
/// does. Keeping the packet and the waiting out of the reader's own future keeps that
/// future, which every idle connection holds, small.
fn handle<'a>(
    core: &'a Rc<Core>,
    conn: &'a Rc<Conn>,
    packet: Packet,
) -> Result<Option<Slow<'a>>, CloseReason> {
    let Some(key) = conn.session.get() else {
        if conn.connected() {
            return Err(CloseReason::TakenOver);
        }
        return match packet {
            Packet::Connect(c) => Ok(Some(Box::pin(on_connect(core, conn, c)))),
            // v5 enhanced authentication: the client's next step before CONNACK.
            Packet::Auth(a) => Ok(Some(Box::pin(async move {
                match crate::auth::on_auth(core, conn, a).await? {
                    Some(c) => Box::pin(on_connect(core, conn, c)).await,
                    None => Ok(()),
                }
            }))),
            other => Err(CloseReason::Protocol(
                ReasonCode::PROTOCOL_ERROR.0,
                format!(
                    "[MQTT-3.1.0-1] first packet must be CONNECT, got type {}",
                    other.packet_type()
                ),
            )),
        };
    };
    debug!(client_id = ?conn.client_id.borrow().as_deref(), packet = ?packet_name(&packet), "packet in");
    let packet = match packet {
        // v5 re-authentication [MQTT-4.12.1-1]: the authenticator may have to run off the core.
        Packet::Auth(a) => {
            return Ok(Some(Box::pin(async move {
                crate::auth::on_auth(core, conn, a).await.map(|_| ())
            })))
        }
        other => other,
    };
    if core
        .shared
        .authorizer
        .as_ref()
        .is_some_and(|a| a.is_blocking())
    {
        return Ok(Some(Box::pin(async move {
            let pre = pre_authorize(core, conn, key, &packet).await;
            handle_now(core, conn, key, packet, pre)
        })));
    }
    handle_now(core, conn, key, packet, None).map(|()| None)
}

/// Runs the session and router on one packet of a connected client.
fn handle_now(
    core: &Rc<Core>,
    conn: &Rc<Conn>,
    key: u64,
    packet: Packet,
    pre: Option<Vec<bool>>,
) -> Result<(), CloseReason> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        core.handle_packet(conn, key, packet, pre)
    })) {
        Ok(r) => r,
        // A bug must end this connection, not the core.
        Err(_) => Err(CloseReason::Protocol(
            ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR.0,
            "internal error while handling a packet".into(),
        )),
    }
}

fn packet_name(p: &Packet) -> &'static str {
    match p {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect(_) => "DISCONNECT",
        Packet::Auth(_) => "AUTH",
    }
}

/// Asks a blocking authoriser on a hook thread (never on the core) about a PUBLISH topic or
/// each SUBSCRIBE filter.
async fn pre_authorize(
    core: &Rc<Core>,
    conn: &Rc<Conn>,
    key: u64,
    packet: &Packet,
) -> Option<Vec<bool>> {
    let authz = core
        .shared
        .authorizer
        .as_ref()
        .filter(|a| a.is_blocking())?
        .clone();
    let (access, topics): (_, Vec<String>) = match packet {
        Packet::Publish(p) if !p.topic.is_empty() => {
            (uringmq_auth::Access::Publish, vec![p.topic.to_string()])
        }
        Packet::Subscribe(s) => (
            uringmq_auth::Access::Subscribe,
            s.filters.iter().map(|(f, _)| f.to_string()).collect(),
        ),
        _ => return None,
    };
    let (client_id, username) = {
        let st = core.st.borrow();
        let e = st.sessions.get(&key)?;
        (
            e.s.client_id.to_string(),
            e.s.username.as_deref().map(str::to_owned),
        )
    };
    let listener = conn.listener.to_string();
    let peer = conn.peer;
    let rx = core.shared.hooks.run(move || {
        let mut info = ClientInfo::new(&client_id, username.as_deref(), &listener);
        info.peer = peer;
        topics
            .iter()
            .map(|t| authz.authorize(&info, access, t))
            .collect::<Vec<bool>>()
    });
    // A hook that panicked denies.
    Some(rx.await.unwrap_or_default())
}

/// Writes a refusing CONNACK (mapped to a 3.x return code by the encoder).
pub(crate) fn refuse(conn: &Conn, proto: Protocol, code: ReasonCode) {
    let ack = ConnAck {
        session_present: false,
        reason_code: code,
        properties: Default::default(),
    };
    Core::write_out(conn, |out| write_packet(out, &Packet::ConnAck(ack), proto));
}

async fn on_connect(
    core: &Rc<Core>,
    conn: &Rc<Conn>,
    mut c: Box<Connect>,
) -> Result<(), CloseReason> {
    let proto = c.protocol;
    conn.protocol.set(proto);
    let requested = crate::auth::take_method(core, conn, &mut c)?;
    let shared = core.shared.clone();
    let limits = shared.limits;
    let cfg = &shared.config;
    let negotiated = negotiate(&c, &limits, || {
        let n = shared.next_assigned.fetch_add(1, Ordering::Relaxed);
        format!("uringmq-{:x}-{n:x}", std::process::id())
    });
    let n = match negotiated {
        Ok(n) => n,
        Err(r) => {
            debug!(peer = ?conn.peer, "CONNECT refused: {r}");
            refuse(conn, proto, r.reason);
            return Err(CloseReason::Refused(r.reason.0));
        }
    };
    if let Some(w) = &c.will {
        // v5: a will the broker cannot honour is refused [MQTT-3.2.2-12] [MQTT-3.2.2-13].
        let code = if w.qos as u8 > cfg.max_qos {
            Some(ReasonCode::QOS_NOT_SUPPORTED)
        } else if w.retain && !cfg.retain_available {
            Some(ReasonCode::RETAIN_NOT_SUPPORTED)
        } else {
            None
        };
        if let Some(code) = code {
            refuse(conn, proto, code);
            return Err(CloseReason::Refused(code.0));
        }
    }
    // Authentication (certificate, enhanced AUTH exchange, password file, anonymous policy,
    // hooks): on a hook thread where blocking; refusals are delayed and counted there.
    let granted =
        match crate::auth::authenticate(core, conn, &mut c, &n.client_id, requested).await? {
            Some(granted) => granted,
            // Waiting for the client's AUTH packet.
            None => return Ok(()),
        };
    // Claim the client id; take the session over from wherever it lives [MQTT-3.1.4-3].
    // The registry orders CONNECTs with one id; see handoff.rs.
    let id: Arc<str> = n.client_id.as_str().into();
    let claim = core.claim_client_id(&id, n.clean_start);
    let key = claim.key;
    let (old, moved_from) = claim.session().await;
    let alias_in = limits.topic_alias_maximum;
    let (mut s, present) = match old {
        Some(mut s) if !n.clean_start => {
            s.attach(&n, proto, alias_in);
            (s, true)
        }
        _ => (
            Box::new(Session::new(
                &n,
                proto,
                cfg.max_queued_messages,
                cfg.max_queued_bytes,
                alias_in,
            )),
            false,
        ),
    };
    s.client_id = id.clone();
    s.username = c.username.as_ref().map(|u| Arc::from(u.as_str()));
    if core.stopping.get() || conn.killed.borrow().is_some() {
        // Closed while waiting: the session (this key owns the id now) stays or ends as if
        // the connection had closed right after CONNACK, without a will.
        let reason = conn.kill_reason().unwrap_or(CloseReason::Shutdown);
        let listener = core.shared.security.listener_index(&conn.listener);
        core.install_session(key, s, Sink::Offline(listener));
        core.after_install(key, moved_from);
        core.connection_closed(key, &reason);
        return Err(reason);
    }
    s.will = c.will.take().map(Box::new);
    let properties = if proto.is_v5() {
        let mut p = n.connack_properties(&limits);
        *conn.exchange.borrow_mut() = granted.apply(&mut p);
        p
    } else {
        Default::default()
    };
    let ack = ConnAck {
        session_present: present,
        reason_code: ReasonCode::SUCCESS,
        properties,
    };
    Core::write_out(conn, |out| write_packet(out, &Packet::ConnAck(ack), proto));
    conn.session.set(Some(key));
    conn.connect_deadline.set(None);
    conn.grace.set(keepalive::grace(n.keep_alive.secs));
    *conn.client_id.borrow_mut() = Some(id.clone());
    core.install_session(key, s, Sink::Conn(conn.clone()));
    if present {
        core.resume_delivery(key);
    }
    core.after_install(key, moved_from);
    core.stats().connections.fetch_add(1, Ordering::Relaxed);
    info!(
        client_id = %id,
        peer = ?conn.peer,
        core = core.id,
        protocol = ?proto,
        clean_start = n.clean_start,
        session_present = present,
        keep_alive = n.keep_alive.secs,
        "client connected"
    );
    Ok(())
}

/// Flushes the connection's queue whenever it has bytes: one write (a `writev` when large
/// payloads are shared) per wake-up, so everything queued during one event-loop turn goes out
/// in one system call.
async fn writer(
    core: Rc<Core>,
    conn: Rc<Conn>,
    mut wr: OwnedWriteHalf<TcpStream>,
    _guard: TaskGuard,
) {
    // Double buffering: producers fill `conn.out` while the other buffer is being written.
    let mut spare: Option<BytesMut> = None;
    loop {
        if conn.out.borrow().is_empty() && !crate::transport_io::wants_write(&conn) {
            if conn.closing.get() {
                break;
            }
            // Going idle: keep no buffer worth mentioning.
            spare = None;
            if conn.out.borrow().capacity() > IDLE_WRITE_BUFFER {
                *conn.out.borrow_mut() = OutQueue::default();
            }
            conn.wake.wait().await;
            continue;
        }
        let next = spare.take().unwrap_or_default();
        let flush = conn.out.borrow_mut().take(next);
        let flush = crate::transport_io::wrap(&conn, flush);
        let n = flush.len();
        // Cross-core effects this client could observe through these bytes go first.
        core.flush_mesh();
        // Boxed so that an idle writer's future holds no room for the write in flight.
        let (res, mut buf) = Box::pin(flush.write_to(&mut wr)).await;
        if let Err(e) = res {
            debug!(peer = ?conn.peer, "write failed: {e}");
            conn.kill(CloseReason::Io(e.to_string()));
            conn.out.borrow_mut().clear();
            break;
        }
        add(&core.stats().bytes_out, n as u64);
        if buf.capacity() <= MAX_SPARE_WRITE_BUFFER {
            buf.clear();
            spare = Some(buf);
        }
        if conn.blocked.replace(false) {
            if let Some(key) = conn.session.get() {
                core.pump(key);
            }
        }
    }
    // Boxed: an idle writer's future must not hold room for the closing writes.
    Box::pin(async move {
        crate::transport_io::finish(&conn, &mut wr).await;
        let _ = wr.shutdown().await;
    })
    .await;
}
