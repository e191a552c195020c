//! A connection's life on its core: creation, kill and close, draining for a takeover.

use super::{Conn, Flags, Kill, Lifecycle, Parking};
use crate::conn::{write_packet, CloseReason};
use crate::net::{millis, Slot};
use crate::routing::OutQueue;
use crate::shard::{Shard, TaskGuard};
use monoio::io::{OwnedReadHalf, OwnedWriteHalf};
use monoio::net::TcpStream;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Instant;
use uringmq_codec::{
    ByteStr, Decoder, Disconnect, DisconnectProperties, Packet, Protocol, ReasonCode,
};

impl Conn {
    pub(super) fn new(
        core: Rc<Shard>,
        (me, wr, held): (Weak<Conn>, OwnedWriteHalf<TcpStream>, (Slot, TaskGuard)),
        (id, fd, peer): (u64, RawFd, Option<SocketAddr>),
        listener: Arc<str>,
        transport: uringmq_transport::Transport,
        deadline: Instant,
    ) -> Self {
        let decoder = Decoder::new(core.config().max_packet_size);
        let peer = crate::net::peer::PackedPeer::new(peer);
        let conn = Conn::blank(core, (me, held), (id, fd, peer), listener, decoder);
        conn.transport.replace(transport);
        conn.wr.set(Some(wr));
        conn.connect_by.set(millis(deadline));
        conn
    }

    /// A connection with no stream, task or session yet: what [`Conn::new`] and a compact
    /// parked connection's revival (`parked.rs`) fill in.
    pub(super) fn blank(
        core: Rc<Shard>,
        (me, held): (Weak<Conn>, (Slot, TaskGuard)),
        (id, fd, peer): (u64, RawFd, crate::net::peer::PackedPeer),
        listener: Arc<str>,
        decoder: Decoder,
    ) -> Self {
        Conn {
            core,
            me,
            wr: Cell::new(None),
            flags: Flags::default(),
            rd: Cell::new(None),
            held: Cell::new(Some(held)),
            park_waker: Cell::new(None),
            parking: Cell::new(Parking::Active),
            last_out: Cell::new(0),
            decoder: Cell::new(decoder),
            id,
            fd: Cell::new(fd),
            peer,
            listener,
            transport: RefCell::new(uringmq_transport::Transport::Tcp),
            exchange: Cell::new(None),
            out: RefCell::new(OutQueue::default()),
            lifecycle: Cell::new(Lifecycle::Connecting),
            session: Cell::new(0),
            client_id: std::cell::OnceCell::new(),
            protocol: Cell::new(Protocol::V3_1_1),
            max_out: Cell::new(None),
            killed: Cell::new(None),
            last_seen: Cell::new(millis(Instant::now())),
            grace_ms: Cell::new(0),
            connect_by: Cell::new(0),
            publish_limiter: Cell::new(None),
        }
    }

    /// Why the core closed the connection, if it did.
    pub(crate) fn kill_reason(&self) -> Option<CloseReason> {
        self.with_kill(|k| k.map(|k| k.reason.clone()))
    }

    /// Runs `f` on the kill record, if any. `f` must not touch `killed` itself (it is taken
    /// out of its cell meanwhile); every caller is a short synchronous closure.
    pub(super) fn with_kill<R>(&self, f: impl FnOnce(Option<&mut Kill>) -> R) -> R {
        let mut k = self.killed.take();
        let r = f(k.as_deref_mut());
        self.killed.set(k);
        r
    }

    pub(super) fn is_killed(&self) -> bool {
        self.with_kill(|k| k.is_some())
    }

    /// The core that owns the connection.
    pub(crate) fn core(&self) -> &Shard {
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
    pub(super) fn final_reason(&self, task: CloseReason) -> CloseReason {
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
        if self.is_killed() || self.closing() {
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

    /// The key of the connection's session, once CONNECT is accepted.
    pub(crate) fn session(&self) -> Option<u64> {
        Some(self.session.get()).filter(|&k| k != 0)
    }

    /// The session went away (taken over or ended) while the socket stays.
    pub(crate) fn clear_session(&self) {
        self.session.set(0);
    }

    /// CONNACK was sent (also while closing after that).
    pub(crate) fn connected(&self) -> bool {
        matches!(
            self.lifecycle.get(),
            Lifecycle::Connected | Lifecycle::Closing { connected: true }
        )
    }

    /// The writer flushes what is left and exits.
    pub(crate) fn closing(&self) -> bool {
        matches!(self.lifecycle.get(), Lifecycle::Closing { .. })
    }

    /// CONNACK is sent (a connection closing meanwhile stays closing).
    pub(super) fn set_connected(&self) {
        self.lifecycle.set(match self.lifecycle.get() {
            Lifecycle::Connecting => Lifecycle::Connected,
            Lifecycle::Closing { .. } => Lifecycle::Closing { connected: true },
            other => other,
        });
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
    pub(super) fn close_with(&self, reason: &CloseReason) {
        if self.connected() && self.protocol.get().is_v5() && !self.closing() {
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
        let connected = self.connected();
        self.lifecycle.set(Lifecycle::Closing { connected });
        self.wake();
    }
}

/// Puts back whichever half was taken (not reached: parked without a writer means both are
/// home).
#[cold]
pub(super) fn unreachable_halves(
    conn: &Conn,
    rd: Option<OwnedReadHalf<TcpStream>>,
    wr: Option<OwnedWriteHalf<TcpStream>>,
) {
    conn.rd.set(rd);
    conn.wr.set(wr);
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
