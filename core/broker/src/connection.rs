//! One client connection: the accept loop, the connection's task (waits for readability,
//! decodes, handles CONNECT and every later packet) and a writer task that exists only while
//! there is something to write (one write per wake-up).
//!
//! An idle connection is one small task waiting for readability and its [`Conn`]: no buffers
//! (the read buffer is allocated once the socket is readable and dropped once every complete
//! packet is handled), no writer (spawned by [`Conn::wake`] when bytes are queued, gone when
//! they are written). Timers never race a read: the keep-alive sweep and takeovers shut the
//! socket down, which ends the pending wait or read.

use crate::config::Config;
use crate::core::{add, CloseReason, Core, Sink, TaskGuard};
use crate::endpoint::{Endpoint, Slot};
use crate::out_queue::OutQueue;
use crate::router::write_packet;
use crate::timers::millis;
use bytes::BytesMut;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::{TcpListener, TcpStream};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};
use uringmq_auth::ClientInfo;
use uringmq_codec::{
    encoded_len_within, ByteStr, ConnAck, Connect, Decoder, Disconnect, DisconnectProperties,
    Packet, Protocol, ReasonCode,
};
use uringmq_session::{keepalive, negotiate, Negotiated, Session};
use uringmq_topic::check_max_levels;

/// Bytes read at a time (more when a packet in progress needs more).
const READ_CHUNK: usize = 4096;
/// Most a read buffer grows ahead of the bytes received (see [`grow_for_read`]).
const UNPAID_READ: usize = 64 * 1024;
/// Largest write buffer an idle connection keeps.
const IDLE_WRITE_BUFFER: usize = 256;
/// Largest second buffer kept while a connection is busy.
const MAX_SPARE_WRITE_BUFFER: usize = 256 * 1024;

/// What the core knows about one connection (shared by its task, its writer and the core).
pub(crate) struct Conn {
    core: Rc<Core>,
    /// This connection, to hand to the writer it spawns.
    me: Weak<Conn>,
    /// The write half while no writer runs (`None` while one does, and after the last write).
    wr: Cell<Option<OwnedWriteHalf<TcpStream>>>,
    /// A writer task runs (or the connection has finished writing for good).
    writing: Cell<bool>,
    /// The read half while the connection is parked (see `hibernate.rs`).
    rd: Cell<Option<OwnedReadHalf<TcpStream>>>,
    /// The listener slot and the core's task count, held from accept to close whether a task
    /// runs or the connection is parked.
    held: Cell<Option<(Slot, TaskGuard)>>,
    /// Wakes the task's readiness wait when the sweep asks it to park.
    park_waker: Cell<Option<Waker>>,
    /// The sweep asked the task to park at its next wait.
    park_requested: Cell<bool>,
    /// The task stopped reading until the writer drains `out` (see [`Conn::reads_held`]); it
    /// waits on `park_waker`.
    read_held: Cell<bool>,
    /// Parked: no task; the core's epoll set wakes it.
    parked: Cell<bool>,
    /// The socket is in the core's epoll set (parked once before: re-arm, not add).
    in_epoll: Cell<bool>,
    /// Parked and quiet in both directions: the runtime's stream is dropped and `fd` (a
    /// duplicate of its descriptor) is owned by this `Conn`; see [`Conn::detach_if_quiet`].
    detached: Cell<bool>,
    /// When the writer last finished ([`millis`]).
    last_out: Cell<u32>,
    /// Kept between reads: it learns the protocol level from CONNECT.
    decoder: Cell<Decoder>,
    id: u64,
    /// The socket (the number changes when the connection detaches).
    fd: Cell<RawFd>,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) listener: Arc<str>,
    /// TLS / WebSocket adapter (`Transport::Tcp`, a unit variant, for plain TCP).
    pub(crate) transport: RefCell<uringmq_transport::Transport>,
    /// A v5 enhanced authentication exchange before CONNACK (none for most connections).
    pub(crate) exchange: RefCell<Option<Box<crate::auth::Exchange>>>,
    /// Bytes waiting for the writer (large payloads shared, not copied).
    pub(crate) out: RefCell<OutQueue>,
    /// A delivery was refused because `out` was over the limit: pump the session after flushing.
    pub(crate) blocked: Cell<bool>,
    /// The writer flushes what is left and exits.
    pub(crate) closing: Cell<bool>,
    /// The session's key while connected (0: none; keys are never 0).
    session: Cell<u64>,
    pub(crate) client_id: RefCell<Option<Arc<str>>>,
    pub(crate) protocol: Cell<Protocol>,
    /// The client's Maximum Packet Size from its CONNECT (none: the protocol's limit).
    pub(crate) max_out: Cell<Option<NonZeroU32>>,
    /// Set when the core closes the connection (keep-alive, takeover, stop).
    /// Boxed: most connections are never killed, and every idle one would carry the room.
    /// A `Cell` (read through [`Conn::with_kill`]), not a `RefCell`: eight bytes less.
    killed: Cell<Option<Box<Kill>>>,
    /// When a packet last arrived ([`millis`]: four bytes, not sixteen).
    pub(crate) last_seen: Cell<u32>,
    /// 1.5x keep-alive in milliseconds once connected; 0: no keep-alive.
    pub(crate) grace_ms: Cell<u32>,
    /// Until CONNECT is accepted: its deadline ([`millis`]; the sweep reads it only before).
    pub(crate) connect_by: Cell<u32>,
    connected: Cell<bool>,
    /// The listener's publish limits, if it has any (see `limits.rs`); boxed, as most
    /// connections have none.
    pub(crate) publish_limiter: Cell<Option<Box<uringmq_session::PublishLimiter>>>,
}

impl Conn {
    fn new(
        core: Rc<Core>,
        (me, wr, held): (Weak<Conn>, OwnedWriteHalf<TcpStream>, (Slot, TaskGuard)),
        (id, fd, peer): (u64, RawFd, Option<SocketAddr>),
        listener: Arc<str>,
        transport: uringmq_transport::Transport,
        deadline: Instant,
    ) -> Self {
        let decoder = Cell::new(Decoder::new(core.config().max_packet_size));
        Conn {
            core,
            me,
            wr: Cell::new(Some(wr)),
            writing: Cell::new(false),
            rd: Cell::new(None),
            held: Cell::new(Some(held)),
            park_waker: Cell::new(None),
            park_requested: Cell::new(false),
            read_held: Cell::new(false),
            parked: Cell::new(false),
            in_epoll: Cell::new(false),
            detached: Cell::new(false),
            last_out: Cell::new(0),
            decoder,
            id,
            fd: Cell::new(fd),
            peer,
            listener,
            transport: RefCell::new(transport),
            exchange: RefCell::new(None),
            out: RefCell::new(OutQueue::default()),
            blocked: Cell::new(false),
            closing: Cell::new(false),
            session: Cell::new(0),
            client_id: RefCell::new(None),
            protocol: Cell::new(Protocol::V3_1_1),
            max_out: Cell::new(None),
            killed: Cell::new(None),
            last_seen: Cell::new(millis(Instant::now())),
            grace_ms: Cell::new(0),
            connect_by: Cell::new(millis(deadline)),
            connected: Cell::new(false),
            publish_limiter: Cell::new(None),
        }
    }

    /// Why the core closed the connection, if it did.
    pub(crate) fn kill_reason(&self) -> Option<CloseReason> {
        self.with_kill(|k| k.map(|k| k.reason.clone()))
    }

    /// Runs `f` on the kill record, if any. `f` must not touch `killed` itself (it is taken
    /// out of its cell meanwhile); every caller is a short synchronous closure.
    fn with_kill<R>(&self, f: impl FnOnce(Option<&mut Kill>) -> R) -> R {
        let mut k = self.killed.take();
        let r = f(k.as_deref_mut());
        self.killed.set(k);
        r
    }

    fn is_killed(&self) -> bool {
        self.with_kill(|k| k.is_some())
    }

    /// The core that owns the connection.
    pub(crate) fn core(&self) -> &Core {
        &self.core
    }

    /// Why the task must stop handling packets now: killed, and not draining.
    pub(crate) fn stop_reason(&self) -> Option<CloseReason> {
        self.with_kill(|k| k.filter(|k| !k.drain).map(|k| k.reason.clone()))
    }

    /// When the core closed the connection (or began draining it), if it did.
    pub(crate) fn killed_at(&self) -> Option<Instant> {
        self.with_kill(|k| k.map(|k| k.at))
    }

    /// Draining for a takeover (see [`Conn::drain_for_takeover`]).
    pub(crate) fn draining(&self) -> bool {
        self.with_kill(|k| k.is_some_and(|k| k.drain))
    }

    /// The reason the connection ended, given what ended its task: the core's when it killed
    /// the connection, but a drained connection ends with what its client did last (its
    /// DISCONNECT, a protocol error), unless that was only the end of the drain.
    fn final_reason(&self, task: CloseReason) -> CloseReason {
        self.with_kill(|k| match k {
            None => task,
            Some(k) if k.drain && !matches!(task, CloseReason::Eof | CloseReason::Io(_)) => task,
            Some(k) => k.reason.clone(),
        })
    }

    /// Begins closing the connection for a takeover without losing what its client sent
    /// before the successor's CONNECT: the socket is shut down for reading, so the task reads
    /// what is already buffered (a PUBACK, a DISCONNECT that must cancel the will) and then
    /// meets end-of-file; the session is handed over once it has closed. The sweep ends a
    /// drain that goes on for longer than [`DRAIN_LIMIT`]. False when the connection is closing
    /// already: take the session at once.
    ///
    /// Mosquitto handles both sockets on one thread, in the order they became readable, so a
    /// client that disconnects and reconnects at once has its last packets seen first. Here
    /// the two connections may live on different cores (or the old one be hibernating), so
    /// the order is made explicit.
    pub(crate) fn drain_for_takeover(&self) -> bool {
        if self.is_killed() || self.closing.get() {
            return false;
        }
        self.killed.set(Some(Box::new(Kill {
            reason: CloseReason::TakenOver,
            at: Instant::now(),
            drain: true,
        })));
        // SAFETY: shutdown on the connection's own fd, still open (the task or `Conn` owns it).
        unsafe { libc::shutdown(self.fd.get(), libc::SHUT_RD) };
        // A draining connection is never held: a reader held for a full queue reads what is
        // left now, not when a slow client has taken the queue.
        self.release_reads();
        true
    }

    /// A drain that ran for too long (a client that keeps sending): stop handling packets.
    pub(crate) fn end_drain(&self) {
        self.with_kill(|k| k.map(|k| k.drain = false));
        self.close_with(&CloseReason::TakenOver);
        self.release_reads();
    }

    /// More is queued for this client than it takes: twice the delivery limit, so that only
    /// replies to its own packets (PUBACK, PINGRESP...) fill the rest. The task then stops
    /// reading until the writer has drained the queue, and TCP pushes back on the client, so a
    /// client that sends without ever reading cannot grow the broker's memory without bound.
    /// The slack above the delivery limit keeps a client that writes a burst before it reads
    /// from deadlocking with us. (Mosquitto keeps reading and lets the queue grow.) Never while
    /// draining for a takeover: the socket is shut down for reading, so what is left to read
    /// is bounded by the kernel's buffer, and the successor waits for it.
    fn reads_held(&self) -> bool {
        let queued = self.out.borrow().len() + crate::transport_io::pending_out(self);
        queued >= self.core.config().max_outbound_bytes.saturating_mul(2) && !self.draining()
    }

    /// Wakes a task that stopped reading for a full queue, to look again.
    fn release_reads(&self) {
        if self.read_held.replace(false) {
            if let Some(w) = self.park_waker.take() {
                w.wake();
            }
        }
    }

    /// Makes sure a writer flushes `out` (and finishes, once closing): spawns one unless it
    /// runs. It runs after the tasks already scheduled in this event-loop turn, so what they
    /// queue goes out in the same write.
    pub(crate) fn wake(&self) {
        if self.writing.replace(true) {
            return;
        }
        if !self.attach() {
            return;
        }
        if let (Some(conn), Some(wr)) = (self.me.upgrade(), self.wr.take()) {
            let guard = self.core.task_guard();
            monoio::spawn(writer(conn, wr, guard));
        }
    }

    /// Asks the connection's task to park at its readiness wait (see `hibernate.rs`).
    pub(crate) fn request_park(&self) {
        if self.parked.get() || self.park_requested.replace(true) {
            return;
        }
        if let Some(w) = self.park_waker.take() {
            w.wake();
        }
    }

    /// The socket's descriptor (for a hard shutdown).
    pub(crate) fn fd(&self) -> RawFd {
        self.fd.get()
    }

    /// Parked, and nothing written or read for `quiet_ms`: drops the runtime's stream (its
    /// two halves, their shared descriptor state: ~160 bytes) and keeps a duplicate of the
    /// descriptor instead, re-registered in the epoll set. Called by the sweep only, so a
    /// connection that is written to often is not detached and attached for every write.
    /// True when it detached; an error when the duplicate could not be made (out of
    /// descriptors: the sweep backs off, see `hibernate::detach_failed`).
    pub(crate) fn detach_if_quiet(&self, now_ms: u32, quiet_ms: u32) -> std::io::Result<bool> {
        if !self.parked.get()
            || self.detached.get()
            || self.writing.get()
            || now_ms.wrapping_sub(self.last_out.get()) < quiet_ms
        {
            return Ok(false);
        }
        let Some(h) = self.core.hibernation() else {
            return Ok(false);
        };
        // Both halves are home while parked and no writer runs; take neither otherwise.
        let (rd, wr) = match (self.rd.take(), self.wr.take()) {
            (Some(rd), Some(wr)) => (rd, wr),
            (rd, wr) => {
                unreachable_halves(self, rd, wr);
                return Ok(false);
            }
        };
        // Reunited, not dropped as halves: dropping the write half shuts the socket down.
        let stream = match rd.reunite(wr) {
            Ok(stream) => stream,
            Err(e) => {
                unreachable_halves(self, Some(e.0), Some(e.1));
                return Ok(false);
            }
        };
        let old = self.fd.get();
        // SAFETY: plain system call on the connection's open descriptor.
        let new = unsafe { libc::fcntl(old, libc::F_DUPFD_CLOEXEC, 0) };
        if new < 0 {
            let e = std::io::Error::last_os_error();
            let (rd, wr) = stream.into_split();
            self.rd.set(Some(rd));
            self.wr.set(Some(wr));
            return Err(e);
        }
        // The old number leaves the epoll set before it is closed: a closed number whose file
        // stays open (through the duplicate) would stay registered, unreachable.
        h.forget(old);
        // The runtime closes `old`; the socket stays open through `new`.
        drop(stream);
        self.fd.set(new);
        self.detached.set(true);
        self.in_epoll.set(false);
        if h.park(new, self.id, true).is_ok() {
            self.in_epoll.set(true);
        } else if let Some(conn) = self.me.upgrade() {
            // Cannot wait in the set: wake up now instead of never.
            unpark(conn);
        }
        Ok(true)
    }

    /// Gives a detached connection a runtime stream again (its halves in `rd` and `wr`).
    /// False when that failed: the descriptor is gone and the connection is closed.
    fn attach(&self) -> bool {
        if !self.detached.replace(false) {
            return true;
        }
        let fd = self.fd.get();
        // SAFETY: a detached connection owns `fd`; the stream takes it over.
        let std_stream =
            unsafe { <std::net::TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        match TcpStream::from_std(std_stream) {
            Ok(stream) => {
                let (rd, wr) = stream.into_split();
                self.rd.set(Some(rd));
                self.wr.set(Some(wr));
                true
            }
            Err(e) => {
                // `from_std` closed the descriptor on failure.
                self.fd.set(-1);
                warn!(peer = ?self.peer, "cannot resume a hibernated connection: {e}");
                if let Some(conn) = self.me.upgrade() {
                    self.killed.set(Some(Box::new(Kill {
                        reason: CloseReason::Io(e.to_string()),
                        at: Instant::now(),
                        drain: false,
                    })));
                    self.set_parked(false);
                    // Not here: the caller may be in the middle of routing.
                    monoio::spawn(async move { closed(&conn, CloseReason::Io(e.to_string())) });
                }
                false
            }
        }
    }

    /// Marks the connection parked or not, keeping `stats().hibernating` in step.
    fn set_parked(&self, parked: bool) {
        if self.parked.replace(parked) != parked {
            let gauge = &self.core.stats().hibernating;
            if parked {
                gauge.fetch_add(1, Ordering::Relaxed);
            } else {
                gauge.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Whether the sweep may ask this connection to park.
    pub(crate) fn may_park(&self) -> bool {
        !self.parked.get() && !self.park_requested.get() && self.connected()
    }

    /// Registers the socket with the core's epoll set and keeps the read half; gives it back
    /// when the connection cannot park (closing, hibernation unavailable, epoll error).
    fn park(&self, rd: OwnedReadHalf<TcpStream>) -> Result<(), OwnedReadHalf<TcpStream>> {
        self.park_requested.set(false);
        let Some(h) = self.core.hibernation() else {
            return Err(rd);
        };
        if self.closing.get() || self.is_killed() {
            return Err(rd);
        }
        match h.park(self.fd.get(), self.id, !self.in_epoll.get()) {
            Ok(()) => {
                self.in_epoll.set(true);
                self.set_parked(true);
                self.rd.set(Some(rd));
                Ok(())
            }
            Err(e) => {
                debug!(peer = ?self.peer, "cannot park connection: {e}");
                Err(rd)
            }
        }
    }

    /// The key of the connection's session, once CONNECT is accepted.
    pub(crate) fn session(&self) -> Option<u64> {
        Some(self.session.get()).filter(|&k| k != 0)
    }

    /// The session went away (taken over or ended) while the socket stays.
    pub(crate) fn clear_session(&self) {
        self.session.set(0);
    }

    pub(crate) fn connected(&self) -> bool {
        self.connected.get()
    }

    /// Ends the connection: a v5 client gets DISCONNECT with the reason code [MQTT-4.13.1-1],
    /// the writer flushes and exits, and the pending read ends (socket shut down for reading).
    /// A draining connection stops reading only when the broker stops; any other reason (a
    /// failed write) just ends its writing.
    pub(crate) fn kill(&self, reason: CloseReason) {
        let ends_drain = self.with_kill(|k| {
            k.map(|k| {
                let ends = k.drain && matches!(reason, CloseReason::Shutdown);
                if ends {
                    k.drain = false;
                    k.reason = CloseReason::Shutdown;
                }
                ends
            })
        });
        if ends_drain == Some(false) {
            return;
        }
        if ends_drain == Some(true) {
            self.close_with(&reason);
            self.release_reads();
            return;
        }
        self.close_with(&reason);
        self.killed.set(Some(Box::new(Kill {
            reason,
            at: Instant::now(),
            drain: false,
        })));
        // SAFETY: shutdown on the connection's own fd, still open (the reader and writer own it).
        unsafe { libc::shutdown(self.fd.get(), libc::SHUT_RD) };
        self.release_reads();
    }

    /// Queues a packet for the client, within its Maximum Packet Size (see
    /// [`write_packet`]), and wakes the writer.
    pub(crate) fn send_packet(&self, packet: &Packet) {
        let (proto, max) = (self.protocol.get(), self.max_out.get());
        write_packet(self.out.borrow_mut().buf(), packet, proto, max);
        self.wake();
    }

    /// Queues the server's DISCONNECT (v5, after CONNECT) and tells the writer to finish.
    fn close_with(&self, reason: &CloseReason) {
        if self.connected() && self.protocol.get().is_v5() && !self.closing.get() {
            let (code, why) = match reason {
                CloseReason::KeepAlive => (ReasonCode::KEEP_ALIVE_TIMEOUT, None),
                CloseReason::TakenOver => (ReasonCode::SESSION_TAKEN_OVER, None),
                CloseReason::RateLimited => (ReasonCode::MESSAGE_RATE_TOO_HIGH, None),
                CloseReason::Shutdown => (ReasonCode::SERVER_SHUTTING_DOWN, None),
                CloseReason::Kicked { .. } => (ReasonCode::ADMINISTRATIVE_ACTION, None),
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
                    self.max_out.get(),
                );
            }
        }
        self.closing.set(true);
        self.wake();
    }
}

/// Why and when the core closed a connection.
struct Kill {
    reason: CloseReason,
    at: Instant,
    /// Closing for a takeover: the task still handles what its client had sent.
    drain: bool,
}

/// Puts back whichever half was taken (not reached: parked without a writer means both are
/// home).
#[cold]
fn unreachable_halves(
    conn: &Conn,
    rd: Option<OwnedReadHalf<TcpStream>>,
    wr: Option<OwnedWriteHalf<TcpStream>>,
) {
    conn.rd.set(rd);
    conn.wr.set(wr);
}

impl Drop for Conn {
    fn drop(&mut self) {
        if self.detached.get() {
            // SAFETY: a detached connection owns its descriptor, and nothing else uses it.
            unsafe { libc::close(self.fd.get()) };
        }
    }
}

// Every connection is one allocation of this (plus the `Rc` counts): keep it in mimalloc's
// 320-byte class (BENCHMARKS.md, idle memory per connection).
const _: () = assert!(std::mem::size_of::<Conn>() <= 304);

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
    let mut backoff = crate::limits::AcceptBackoff::default();
    let mut rate = crate::limits::ConnectionRate::new(
        endpoint.connection_rate,
        endpoint.connection_rate_per_source,
        core.shared.cores(),
    );
    loop {
        let accepted = listener.accept().await;
        if core.stopping.get() {
            break;
        }
        match accepted {
            Ok((stream, peer)) => {
                backoff.reset();
                add(&core.stats().sockets, 1);
                let peer = crate::listener::canonical_peer(peer);
                if !rate.admit(&core, &name, peer) {
                    continue;
                }
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
                let limiter = endpoint.publish_limiter();
                let accepted = (name.clone(), transport, slot, limiter);
                connection(core.clone(), stream, peer, accepted, guard);
            }
            // Pauses only when out of descriptors or memory (limits.rs).
            Err(e) => backoff.failed(&core, &name, &e).await,
        }
    }
    debug!(core = core.id, listener = %name, "listener closed");
}

/// What the accept loop hands a new connection: its listener's name, transport adapter,
/// connection slot and publish limits.
type Accepted = (
    Arc<str>,
    uringmq_transport::Transport,
    Slot,
    Option<Box<uringmq_session::PublishLimiter>>,
);

/// Sets a new connection up and spawns its task. Not `async`: what is only needed here (the
/// stream, the listener, the peer address) must not take room in the task's future, which
/// every idle connection keeps for its lifetime.
fn connection(
    core: Rc<Core>,
    stream: TcpStream,
    peer: SocketAddr,
    (listener, transport, slot, limiter): Accepted,
    guard: TaskGuard,
) {
    // TCP_NODELAY comes from the listener (`listener.rs`).
    let fd = stream.as_raw_fd();
    let deadline =
        Instant::now() + Duration::from_secs(u64::from(core.config().connect_timeout_secs));
    let (rd, wr) = stream.into_split();
    let id = core.new_conn_id();
    let conn = Rc::new_cyclic(|me| {
        let me = (me.clone(), wr, (slot, guard));
        Conn::new(
            core.clone(),
            me,
            (id, fd, Some(peer)),
            listener,
            transport,
            deadline,
        )
    });
    conn.publish_limiter.set(limiter);
    core.register_conn(id, conn.clone());
    if core.stopping.get() {
        conn.kill(CloseReason::Shutdown);
    }
    // Read at once instead of waiting for readability first: CONNECT is usually there or on
    // its way, and on io_uring a read that finds nothing waits inside the kernel, so this saves
    // a readiness operation per connection (measurable in connection storms). The buffer this
    // holds until CONNECT is bounded by the connect timeout.
    monoio::spawn(serve(conn, rd, true));
}

/// A parked connection became readable (or was shut down): gives it a task again.
pub(crate) fn unpark(conn: Rc<Conn>) {
    if !conn.parked.get() || !conn.attach() {
        return;
    }
    conn.set_parked(false);
    if let Some(rd) = conn.rd.take() {
        monoio::spawn(serve(conn, rd, true));
    }
}

/// The task of one connection: waits for readability, handles what arrived, until the
/// connection ends (then closes it) or parks (then ends, see `hibernate.rs`). Only the wait
/// is in this future, which every connection that is not parked holds; reading and handling
/// are in a boxed future that lives while there is something to read.
async fn serve(conn: Rc<Conn>, mut rd: OwnedReadHalf<TcpStream>, mut ready: bool) {
    // Kept across readiness waits: on epoll a wait on a socket that is still readable returns
    // at once, without going back to the runtime.
    let mut budget = crate::fairness::ReadBudget::default();
    let reason = loop {
        if !ready {
            match wait_readable(&conn, &rd).await {
                Wait::Ready => {}
                Wait::Failed(e) => break CloseReason::Io(e.to_string()),
                Wait::Park => match conn.park(rd) {
                    Ok(()) => return,
                    Err(back) => {
                        rd = back;
                        continue;
                    }
                },
            }
        }
        ready = false;
        if let Some(reason) = Box::pin(read_ready(&conn, &mut rd, &mut budget)).await {
            break reason;
        }
    };
    closed(&conn, reason);
}

enum Wait {
    Ready,
    Failed(std::io::Error),
    Park,
}

/// Waits until the socket is readable, or until the sweep asks the connection to park.
/// Dropping the readiness wait for a park is safe: it consumes no bytes.
async fn wait_readable(conn: &Conn, rd: &OwnedReadHalf<TcpStream>) -> Wait {
    // SAFETY: `readable` takes `&self`; the read half is used by this task only and no read
    // is in flight.
    let stream = unsafe { &*rd.0.get() };
    // Boxed: the task's future then stays in a smaller size class than `Session` (a 256-byte
    // class), so the tasks that hibernating connections free leave whole pages free, not holes
    // between live sessions (BENCHMARKS.md, idle memory per connection).
    let mut ready = Box::pin(stream.readable(false));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = ready.as_mut().poll(cx) {
            conn.park_waker.take();
            return Poll::Ready(match r {
                Ok(()) => Wait::Ready,
                Err(e) => Wait::Failed(e),
            });
        }
        if conn.park_requested.get() {
            conn.park_waker.take();
            return Poll::Ready(Wait::Park);
        }
        conn.park_waker.set(Some(cx.waker().clone()));
        Poll::Pending
    })
    .await
}

/// After the connection's last read: the will, the session, the log line.
fn closed(conn: &Rc<Conn>, reason: CloseReason) {
    let core = &conn.core;
    let peer = conn.peer;
    let reason = conn.final_reason(reason);
    if let CloseReason::Protocol(..) = reason {
        add(&core.stats().protocol_errors, 1);
    }
    // The writer sends what is queued (e.g. a DISCONNECT) and exits.
    conn.close_with(&reason);
    let client_id = conn.client_id.borrow().clone();
    if let Some(key) = conn.session() {
        conn.clear_session();
        core.stats().connections.fetch_sub(1, Ordering::Relaxed);
        core.connection_closed(key, &reason);
        // A takeover waited for this connection's last packets (`Conn::drain_for_takeover`).
        core.drained(key);
    }
    match client_id {
        Some(id) => info!(
            client_id = %id,
            listener = %conn.listener,
            peer = peer.map(tracing::field::display),
            core = core.id,
            protocol = ?conn.protocol.get(),
            reason = %reason,
            "client disconnected"
        ),
        None => debug!(?peer, reason = %reason, "connection closed before CONNECT"),
    }
    core.unregister_conn(conn.id);
    core.shared.connections.fetch_sub(1, Ordering::Relaxed);
    // The listener slot and the task count go last: the stop waits for them.
    drop(conn.held.take());
}

/// The socket is readable: reads and handles packets until every complete packet is handled
/// and nothing more is waiting (`None`: go back to waiting, holding no buffer), or the
/// connection ends (its reason). A packet split over reads is completed here.
async fn read_ready(
    conn: &Rc<Conn>,
    rd: &mut OwnedReadHalf<TcpStream>,
    budget: &mut crate::fairness::ReadBudget,
) -> Option<CloseReason> {
    let core = &conn.core;
    let mut buf = BytesMut::new();
    loop {
        if let Some(r) = conn.stop_reason() {
            return Some(r);
        }
        if conn.reads_held() {
            hold_reads(conn).await;
            continue;
        }
        budget.spend(core).await;
        match read_some(conn, rd, &mut buf).await {
            Ok((filled, peer_closed)) => {
                if let Err(r) = handle_buffered(core, conn, &mut buf).await {
                    return Some(r);
                }
                if peer_closed {
                    return Some(CloseReason::Eof);
                }
                if buf.is_empty() && !filled {
                    return None;
                }
            }
            Err(r) => return Some(r),
        }
    }
}

/// Waits until the writer has drained the queue below the hold mark, or the core stops the
/// connection.
async fn hold_reads(conn: &Conn) {
    std::future::poll_fn(|cx| {
        if !conn.reads_held() || conn.stop_reason().is_some() {
            conn.read_held.set(false);
            return Poll::Ready(());
        }
        conn.park_waker.set(Some(cx.waker().clone()));
        conn.read_held.set(true);
        Poll::Pending
    })
    .await
}

/// One read into `buf`: (the read filled the buffer, so more may be waiting; the peer
/// closed the TLS/WebSocket stream).
async fn read_some(
    conn: &Conn,
    rd: &mut OwnedReadHalf<TcpStream>,
    buf: &mut BytesMut,
) -> Result<(bool, bool), CloseReason> {
    let (raw, filled, closed) = if conn.transport.borrow().is_passthrough() {
        grow_for_read(buf, conn.decoder.get().needed(buf));
        let len = buf.len();
        let (res, slice) = rd.read(std::mem::take(buf).slice_mut(len..)).await;
        *buf = slice.into_inner();
        match res {
            Ok(0) => return Err(CloseReason::Eof),
            Ok(n) => (n, buf.len() == buf.capacity(), false),
            Err(e) => return Err(CloseReason::Io(e.to_string())),
        }
    } else {
        let r = crate::transport_io::read(conn, rd, buf).await?;
        (r.raw, r.filled, r.closed)
    };
    add(&conn.core.stats().bytes_in, raw as u64);
    conn.last_seen.set(millis(Instant::now()));
    Ok((filled, closed))
}

/// Makes room in `buf` for the next read, `needed` being what the packet in progress lacks.
/// Up to [`UNPAID_READ`] it reserves all of it (one read can take a whole small packet);
/// beyond, the buffer grows with the bytes that actually came (doubling, capped at the
/// packet's end), so a fixed header that announces 16 MiB and sends nothing more pins
/// 64 KiB, not 16 MiB, and memory stays proportional to what a client sent.
fn grow_for_read(buf: &mut BytesMut, needed: usize) {
    let step = if needed <= UNPAID_READ {
        needed.max(READ_CHUNK)
    } else {
        needed.min(buf.len().max(UNPAID_READ))
    };
    if buf.capacity() - buf.len() >= step {
        return;
    }
    if buf.is_empty() {
        buf.reserve(step);
        return;
    }
    // Reallocate exactly: `reserve` would double the capacity past the packet's end.
    let mut grown = BytesMut::with_capacity(buf.len() + step);
    grown.extend_from_slice(buf);
    *buf = grown;
}

/// Decodes and handles every complete packet in `buf`.
async fn handle_buffered(
    core: &Rc<Core>,
    conn: &Rc<Conn>,
    buf: &mut BytesMut,
) -> Result<(), CloseReason> {
    loop {
        if let Some(r) = conn.stop_reason() {
            return Err(r);
        }
        let mut decoder = conn.decoder.get();
        let before = buf.len();
        let decoded = decoder.decode(buf);
        conn.decoder.set(decoder);
        match decoded {
            Ok(None) => return Ok(()),
            Ok(Some(packet)) => {
                add(&core.stats().packets_in, 1);
                if let Packet::Publish(_) = &packet {
                    // Weighed by its wire length (what the decoder took from the buffer):
                    // properties, user properties included, are forwarded too.
                    let wire = before - buf.len();
                    crate::limits::admit_publish(conn, wire as u64).await?;
                }
                if let Some(slow) = handle(core, conn, packet)? {
                    slow.await?;
                }
            }
            Err(e) => {
                let code = e.reason_code();
                if !conn.connected() {
                    // A malformed CONNECT: v5 may get CONNACK with the reason [MQTT-3.1.4-1];
                    // 3.1.1 gets CONNACK 0x01 only for an unsupported level [MQTT-3.1.2-2].
                    let protocol = conn.decoder.get().protocol();
                    match protocol {
                        Some(p)
                            if p.is_v5() || code == ReasonCode::UNSUPPORTED_PROTOCOL_VERSION =>
                        {
                            refuse(conn, p, code)
                        }
                        None if code == ReasonCode::UNSUPPORTED_PROTOCOL_VERSION => {
                            refuse(conn, Protocol::V3_1_1, code)
                        }
                        _ => {}
                    }
                }
                return Err(CloseReason::Protocol(code.0, e.to_string()));
            }
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
    let Some(key) = conn.session() else {
        if conn.connected() {
            return Err(CloseReason::TakenOver);
        }
        return match packet {
            Packet::Connect(c) => {
                add(&core.stats().connects, 1);
                Ok(Some(Box::pin(on_connect(core, conn, c))))
            }
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
    // The durable store's view of the packet (nothing without `persistence_dir`).
    let (before, refused) = core.persist_before(conn, key, &packet);
    if let Some(r) = refused {
        return r;
    }
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        core.handle_packet(conn, key, packet, pre)
    })) {
        Ok(r) => {
            core.persist_after(key, before);
            r
        }
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
    let (client_id, username, token_acl) = {
        let st = core.st.borrow();
        let e = st.sessions.get(&key)?;
        (
            e.s.client_id.to_string(),
            e.s.username.as_deref().map(str::to_owned),
            e.token_acl.clone(),
        )
    };
    let listener = conn.listener.to_string();
    let peer = conn.peer;
    let submitted = core.shared.hooks.run(move || {
        let mut info = ClientInfo::new(&client_id, username.as_deref(), &listener);
        info.peer = peer;
        info.acl = token_acl.as_deref();
        topics
            .iter()
            .map(|t| authz.authorize(&info, access, t))
            .collect::<Vec<bool>>()
    });
    // No answer (hook threads saturated, a timeout, a panic, the broker stopping) denies:
    // a missing verdict is a refusal.
    let answer = match submitted {
        Ok(wait) => {
            wait.answer(|| core.stopping.get() || conn.kill_reason().is_some())
                .await
        }
        Err(e) => Err(e),
    };
    if answer.as_ref().err() == Some(&crate::hooks::HookError::TimedOut) {
        add(&core.stats().hook_timeouts, 1);
        warn!(peer = ?conn.peer, listener = %conn.listener, "authorisation hook timed out (hook_timeout_ms); access denied");
    }
    Some(answer.unwrap_or_default())
}

/// Writes a refusing CONNACK (mapped to a 3.x return code by the encoder).
pub(crate) fn refuse(conn: &Conn, proto: Protocol, code: ReasonCode) {
    let ack = ConnAck {
        session_present: false,
        reason_code: code,
        properties: Default::default(),
    };
    let max = conn.max_out.get();
    Core::write_out(conn, |out| {
        write_packet(out, &Packet::ConnAck(ack), proto, max)
    });
}

/// CONNECT: negotiation, the will's settings, authentication, the will's authorisation,
/// the session (new, or taken over from wherever it lives), then CONNACK.
async fn on_connect(
    core: &Rc<Core>,
    conn: &Rc<Conn>,
    mut c: Box<Connect>,
) -> Result<(), CloseReason> {
    let started = Instant::now();
    let proto = c.protocol;
    conn.protocol.set(proto);
    // CONNACK is the first packet the client's limit applies to [MQTT-3.1.2-24].
    let max_out = c.properties.maximum_packet_size.and_then(NonZeroU32::new);
    conn.max_out.set(max_out);
    let requested = crate::auth::take_method(core, conn, &mut c)?;
    let n = negotiated(core, conn, &c)?;
    check_will_settings(&core.shared.config, conn, &c)?;
    // Authentication (certificate, enhanced AUTH exchange, password file, anonymous policy,
    // hooks): on a hook thread where blocking; refusals are delayed and counted there.
    let mut granted =
        match crate::auth::authenticate(core, conn, &mut c, &n.client_id, requested).await? {
            Some(granted) => granted,
            // Waiting for the client's AUTH packet.
            None => return Ok(()),
        };
    // This connection's grants replace the previous connection's (a resumed session).
    let token_acl = granted.token_acl();
    let acl = token_acl.clone();
    crate::will_auth::check_at_connect(core, conn, &n.client_id, &c, acl).await?;
    let mut claimed = claim_session(core, &n, &c).await;
    let properties = if proto.is_v5() {
        let mut p = n.connack_properties(&core.shared.limits);
        *conn.exchange.borrow_mut() = granted.apply(&mut p);
        p
    } else {
        Default::default()
    };
    let ack = Packet::ConnAck(ConnAck {
        session_present: claimed.present,
        reason_code: ReasonCode::SUCCESS,
        properties,
    });
    // A CONNACK larger than the client's Maximum Packet Size even without its optional
    // properties cannot be sent [MQTT-3.1.2-24]: the connection ends (as in Mosquitto,
    // whose CONNECT fails when send__connack does), rather than wait for nothing.
    let unfit = encoded_len_within(&ack, proto, conn.max_out.get()).is_err();
    if core.stopping.get() || conn.is_killed() || unfit {
        return Err(closed_while_connecting(
            core, conn, claimed, token_acl, unfit,
        ));
    }
    claimed.s.will = c.will.take().map(Box::new);
    crate::limits::inherit_publish_debt(core, conn, &claimed.id);
    conn.send_packet(&ack);
    install_connected(core, conn, &n, claimed, token_acl);
    core.stats().connect_time.record(started.elapsed());
    Ok(())
}

/// The negotiated CONNECT, or its refusal (CONNACK sent).
fn negotiated(core: &Core, conn: &Conn, c: &Connect) -> Result<Negotiated, CloseReason> {
    let shared = &core.shared;
    let negotiated = negotiate(c, &shared.limits, || {
        let n = shared.next_assigned.fetch_add(1, Ordering::Relaxed);
        format!("uringmq-{:x}-{n:x}", std::process::id())
    });
    negotiated.map_err(|r| {
        debug!(peer = ?conn.peer, "CONNECT refused: {r}");
        refuse(conn, c.protocol, r.reason);
        CloseReason::Refused(r.reason.0)
    })
}

/// Refuses a will the broker cannot honour (v5 [MQTT-3.2.2-12] [MQTT-3.2.2-13]) or whose
/// topic it would refuse in a PUBLISH (CONNACK 0x90 [§3.2.2.2]).
fn check_will_settings(cfg: &Config, conn: &Conn, c: &Connect) -> Result<(), CloseReason> {
    let Some(w) = &c.will else {
        return Ok(());
    };
    let code = if w.qos as u8 > cfg.max_qos {
        ReasonCode::QOS_NOT_SUPPORTED
    } else if w.retain && !cfg.retain_available {
        ReasonCode::RETAIN_NOT_SUPPORTED
    } else if w.topic.len() > cfg.max_topic_length
        || check_max_levels(&w.topic, cfg.max_topic_levels).is_err()
    {
        ReasonCode::TOPIC_NAME_INVALID
    } else {
        return Ok(());
    };
    refuse(conn, c.protocol, code);
    Err(CloseReason::Refused(code.0))
}

/// A CONNECT's session: the client id claimed, and the previous session if it goes on.
struct Claimed {
    id: Arc<str>,
    key: u64,
    s: Box<Session>,
    present: bool,
    /// The key the session moved from (a takeover), for `after_install`.
    moved_from: Option<u64>,
}

/// Claims the client id and takes the session over from wherever it lives [MQTT-3.1.4-3]
/// (the registry orders CONNECTs with one id; see handoff.rs), or starts a new one.
async fn claim_session(core: &Rc<Core>, n: &Negotiated, c: &Connect) -> Claimed {
    let cfg = &core.shared.config;
    let proto = c.protocol;
    let id: Arc<str> = n.client_id.as_str().into();
    let claim = core.claim_client_id(&id, n.clean_start);
    let key = claim.key;
    let (old, moved_from) = claim.session().await;
    let alias_in = core.shared.limits.topic_alias_maximum;
    let (mut s, present) = match old {
        Some(mut s) if !n.clean_start => {
            s.attach(n, proto, alias_in);
            (s, true)
        }
        _ => {
            let (count, bytes) = (cfg.max_queued_messages, cfg.max_queued_bytes);
            (
                Box::new(Session::new(n, proto, count, bytes, alias_in)),
                false,
            )
        }
    };
    s.client_id = id.clone();
    s.username = c.username.as_ref().map(|u| Arc::from(u.as_str()));
    Claimed {
        id,
        key,
        s,
        present,
        moved_from,
    }
}

/// Closed while the CONNECT waited (or its CONNACK cannot fit): the session (this key owns
/// the id now) stays or ends as if the connection had closed right after CONNACK, without a
/// will. Returns why.
fn closed_while_connecting(
    core: &Rc<Core>,
    conn: &Conn,
    claimed: Claimed,
    token_acl: Option<Arc<uringmq_auth::AclFile>>,
    unfit: bool,
) -> CloseReason {
    let reason = match conn.kill_reason() {
        Some(r) => r,
        None if unfit => CloseReason::Refused(ReasonCode::PACKET_TOO_LARGE.0),
        None => CloseReason::Shutdown,
    };
    let key = claimed.key;
    let listener = core.shared.security.listener_index(&conn.listener);
    core.install_session(key, claimed.s, Sink::Offline(listener));
    core.set_token_acl(key, token_acl);
    core.after_install(key, claimed.moved_from);
    core.connection_closed(key, &reason);
    reason
}

/// After CONNACK: the connection is connected and the session installed on it.
fn install_connected(
    core: &Rc<Core>,
    conn: &Rc<Conn>,
    n: &Negotiated,
    mut claimed: Claimed,
    token_acl: Option<Arc<uringmq_auth::AclFile>>,
) {
    let key = claimed.key;
    conn.session.set(key);
    conn.connected.set(true);
    claimed.s.connected_since = std::time::SystemTime::now();
    let grace = keepalive::grace(n.keep_alive.secs).map_or(0, |g| g.as_millis().max(1));
    conn.grace_ms.set(u32::try_from(grace).unwrap_or(u32::MAX));
    *conn.client_id.borrow_mut() = Some(claimed.id.clone());
    core.install_session(key, claimed.s, Sink::Conn(conn.clone()));
    core.set_token_acl(key, token_acl);
    if claimed.present {
        core.resume_delivery(key);
    }
    core.after_install(key, claimed.moved_from);
    core.stats().connections.fetch_add(1, Ordering::Relaxed);
    info!(
        client_id = %claimed.id,
        listener = %conn.listener,
        peer = conn.peer.map(tracing::field::display),
        core = core.id,
        protocol = ?conn.protocol.get(),
        clean_start = n.clean_start,
        session_present = claimed.present,
        keep_alive = n.keep_alive.secs,
        "client connected"
    );
}

/// Flushes the connection's queue until it is empty: one write (a `writev` when large
/// payloads are shared) per round, so everything queued meanwhile goes out in one system call.
/// Then parks the write half in the `Conn` and ends (an idle connection has no writer), or,
/// once the connection is closing, finishes the stream and shuts it down for writing.
async fn writer(conn: Rc<Conn>, mut wr: OwnedWriteHalf<TcpStream>, _guard: TaskGuard) {
    let core = conn.core.clone();
    // Double buffering: producers fill `conn.out` while the other buffer is being written.
    let mut spare: Option<BytesMut> = None;
    loop {
        if conn.out.borrow().is_empty() && !crate::transport_io::wants_write(&conn) {
            if conn.closing.get() {
                break;
            }
            // Going idle: keep no buffer worth mentioning, and no task.
            if conn.out.borrow().capacity() > IDLE_WRITE_BUFFER {
                *conn.out.borrow_mut() = OutQueue::default();
            }
            conn.wr.set(Some(wr));
            conn.writing.set(false);
            conn.last_out.set(millis(Instant::now()));
            return;
        }
        let next = spare.take().unwrap_or_default();
        let flush = conn.out.borrow_mut().take(next);
        // The queue is empty now: a reader held for it may read while this is written.
        conn.release_reads();
        let flush = crate::transport_io::wrap(&conn, flush);
        let n = flush.len();
        // Cross-core effects this client could observe through these bytes go first.
        core.flush_mesh();
        // `persistence_sync = "always"`: and what they acknowledge is durable, on every core.
        if let Some(p) = &core.persist {
            if let Err(e) = p.barrier().await {
                conn.kill(CloseReason::Io(e.to_string()));
                conn.out.borrow_mut().clear();
                break;
            }
        }
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
            if let Some(key) = conn.session() {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `total` bytes of one packet the way `read_some` does, each read filling what
    /// `grow_for_read` made room for; returns the largest capacity seen per length reached.
    fn read_packet(total: usize) -> Vec<(usize, usize)> {
        let mut buf = BytesMut::new();
        let mut seen = Vec::new();
        while buf.len() < total {
            let needed = total - buf.len();
            grow_for_read(&mut buf, needed);
            let n = (buf.capacity() - buf.len()).min(total - buf.len());
            buf.extend_from_slice(&vec![0u8; n]);
            seen.push((buf.len(), buf.capacity()));
        }
        seen
    }

    #[test]
    fn an_announced_large_packet_grows_the_buffer_with_the_bytes_received() {
        let total = 16 << 20;
        let seen = read_packet(total);
        // Before anything arrives only UNPAID_READ is reserved, not 16 MiB.
        assert_eq!(seen[0].1, UNPAID_READ);
        for w in seen.windows(2) {
            let (len, _) = w[0];
            let (_, cap) = w[1];
            assert!(cap <= 2 * len.max(UNPAID_READ), "{cap} after {len} bytes");
        }
        // Never past the packet's end.
        assert_eq!(seen.last().unwrap(), &(total, total));
    }

    #[test]
    fn a_small_packet_is_read_in_one_go() {
        assert_eq!(read_packet(10_000), vec![(10_000, 10_000)]);
        assert_eq!(read_packet(100)[0].1, READ_CHUNK);
    }
}
