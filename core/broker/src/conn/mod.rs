//! One client connection: the accept loop, the connection's task (waits for readability,
//! decodes, handles CONNECT and every later packet) and a writer task that exists only while
//! there is something to write (one write per wake-up).
//!
//! An idle connection is one small task waiting for readability and its [`Conn`]: no buffers
//! (the read buffer is allocated once the socket is readable and dropped once every complete
//! packet is handled), no writer (spawned by [`Conn::wake`] when bytes are queued, gone when
//! they are written). Timers never race a read: the keep-alive sweep and takeovers shut the
//! socket down, which ends the pending wait or read.
//!
//! Owns: the `Conn` (here), its life and kill (`lifecycle.rs`), waking and parking
//! (`park.rs`, `hibernate.rs`; `parked.rs`: a parked connection as a compact record),
//! accepting (`accept.rs`, with the accept limits in `limits.rs`), reading (`read.rs`, `fairness.rs`, `transport_io.rs` for TLS/WebSocket),
//! dispatching packets (`dispatch.rs`), CONNECT (`connect.rs`, `login.rs`, `will_auth.rs`),
//! AUTH (`reauth.rs`), the packets of a connected client (`packets.rs`, `subscribe.rs`),
//! writing (`writer.rs`) and why a connection ended (`close.rs`).
//!
//! The one import cycle of the crate is between this module and `shard` (see there): a
//! connection's task works on its shard (`Rc<Shard>`), which owns the connection (`Rc<Conn>`).

mod accept;
mod close;
mod connect;
mod dispatch;
pub(crate) mod fairness;
pub(crate) mod hibernate;
mod lifecycle;
pub(crate) mod limits;
mod login;
mod packets;
mod park;
mod parked;
mod read;
mod reauth;
mod subscribe;
pub(crate) mod transport_io;
pub(crate) mod will_auth;
mod writer;

pub(crate) use accept::accept_loop;
pub(crate) use close::CloseReason;
pub(crate) use connect::refuse;
pub(crate) use login::session_info;
pub(crate) use parked::Parked;
pub(crate) use read::unpark;
pub(crate) use reauth::Exchange;
pub(crate) use writer::write_packet;

use crate::net::Slot;
use crate::routing::OutQueue;
use crate::shard::{Shard, TaskGuard};
use monoio::io::{OwnedReadHalf, OwnedWriteHalf};
use monoio::net::TcpStream;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::os::fd::RawFd;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;
use uringmq_codec::{Decoder, Protocol};

/// Bytes read at a time (more when a packet in progress needs more).
pub(super) const READ_CHUNK: usize = 4096;
/// Most a read buffer grows ahead of the bytes received (see [`grow_for_read`]).
pub(super) const UNPAID_READ: usize = 64 * 1024;
/// Largest write buffer an idle connection keeps.
pub(super) const IDLE_WRITE_BUFFER: usize = 256;
/// Largest second buffer kept while a connection is busy.
pub(super) const MAX_SPARE_WRITE_BUFFER: usize = 256 * 1024;

/// What the core knows about one connection (shared by its task, its writer and the core).
pub(crate) struct Conn {
    core: Rc<Shard>,
    /// This connection, to hand to the writer it spawns.
    me: Weak<Conn>,
    /// The write half while no writer runs (`None` while one does, and after the last write).
    wr: Cell<Option<OwnedWriteHalf<TcpStream>>>,
    /// Four independent yes/no facts, one bit each (see [`Flag`]).
    flags: Flags,
    /// The read half while the connection is parked (see `hibernate.rs`).
    rd: Cell<Option<OwnedReadHalf<TcpStream>>>,
    /// The listener slot and the core's task count, held from accept to close whether a task
    /// runs or the connection is parked.
    held: Cell<Option<(Slot, TaskGuard)>>,
    /// Wakes the task's readiness wait when the sweep asks it to park.
    park_waker: Cell<Option<Waker>>,
    /// Whether the connection has a task, is asked to give it up, or is parked (see
    /// [`Parking`]).
    parking: Cell<Parking>,
    /// When the writer last finished ([`millis`]).
    last_out: Cell<u32>,
    /// Kept between reads: it learns the protocol level from CONNECT.
    decoder: Cell<Decoder>,
    id: u64,
    /// The socket (the number changes when the connection detaches).
    fd: Cell<RawFd>,
    /// The peer's address (see [`Conn::peer`]).
    peer: crate::net::peer::PackedPeer,
    pub(crate) listener: Arc<str>,
    /// TLS / WebSocket adapter (`Transport::Tcp`, a unit variant, for plain TCP).
    pub(crate) transport: RefCell<uringmq_transport::Transport>,
    /// A v5 enhanced authentication exchange before CONNACK (none for most connections).
    /// A `Cell` (taken and put back), not a `RefCell`: eight bytes less.
    pub(crate) exchange: Cell<Option<Box<crate::conn::Exchange>>>,
    /// Bytes waiting for the writer (large payloads shared, not copied).
    pub(crate) out: RefCell<OutQueue>,
    /// Connecting, connected, or closing (see [`Lifecycle`]).
    lifecycle: Cell<Lifecycle>,
    /// The session's key while connected (0: none; keys are never 0).
    session: Cell<u64>,
    /// Set once, when CONNECT is accepted.
    pub(crate) client_id: std::cell::OnceCell<Arc<str>>,
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
    /// The listener's publish limits, if it has any (see `limits.rs`); boxed, as most
    /// connections have none.
    pub(crate) publish_limiter: Cell<Option<Box<uringmq_session::PublishLimiter>>>,
}

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Lifecycle {
    /// Until CONNACK.
    Connecting,
    /// CONNACK sent: a session is installed on it.
    Connected,
    /// The writer flushes what is left and exits; `connected`: CONNACK had been sent.
    Closing { connected: bool },
}

/// Whether a connection has a task (see `hibernate.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Parking {
    /// Its task runs (reading, or waiting for readability).
    Active,
    /// The sweep asked the task to park at its next readiness wait.
    Requested,
    /// No task; the core's epoll set wakes it.
    Parked,
    /// Parked and quiet in both directions: the runtime's stream is dropped and `fd` (a
    /// duplicate of its descriptor) is owned by this `Conn`; see [`Conn::detach_if_quiet`].
    Detached,
}

/// The yes/no facts a connection keeps beside [`Lifecycle`] and [`Parking`]. Each changes on
/// its own (a parked connection may have a writer, a held reader may be in the epoll set from
/// an earlier park), so they are bits, not states.
#[derive(Clone, Copy)]
#[repr(u8)]
pub(super) enum Flag {
    /// A writer task runs (or the connection has finished writing for good).
    Writing = 1,
    /// The task stopped reading until the writer drains `out` (see [`Conn::reads_held`]); it
    /// waits on `park_waker`.
    ReadHeld = 2,
    /// The socket is in the core's epoll set (parked once before: re-arm, not add).
    InEpoll = 4,
    /// A delivery was refused because `out` was over the limit: pump the session after
    /// flushing.
    Blocked = 8,
}

/// The [`Flag`]s of a connection in one byte.
#[derive(Default)]
pub(super) struct Flags(Cell<u8>);

impl Flags {
    #[inline]
    pub(super) fn get(&self, f: Flag) -> bool {
        self.0.get() & f as u8 != 0
    }

    #[inline]
    pub(super) fn set(&self, f: Flag, on: bool) {
        let bits = self.0.get();
        self.0.set(if on {
            bits | f as u8
        } else {
            bits & !(f as u8)
        });
    }

    /// Sets `f` to `on`; returns what it was.
    #[inline]
    pub(super) fn replace(&self, f: Flag, on: bool) -> bool {
        let was = self.get(f);
        self.set(f, on);
        was
    }
}

/// Why and when the core closed a connection.
pub(super) struct Kill {
    reason: CloseReason,
    at: Instant,
    /// Closing for a takeover: the task still handles what its client had sent.
    drain: bool,
}

impl Conn {
    /// The client's address (none for an in-process connection).
    pub(crate) fn peer(&self) -> Option<SocketAddr> {
        self.peer.get()
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // -1: a compact record took the descriptor over (`parked.rs`).
        if self.parking.get() == Parking::Detached && self.fd.get() >= 0 {
            // SAFETY: a detached connection owns its descriptor, and nothing else uses it.
            unsafe { libc::close(self.fd.get()) };
        }
    }
}

// Every connection is one allocation of this (plus the `Rc` counts): keep it in mimalloc's
// 256-byte class (BENCHMARKS.md, idle memory per connection). 240 since the out queue is
// boxed on first use and the peer address packed (296 before, in the 320-byte class; the
// four bool flags in one byte, `Flags`, freed padding only): it must not grow back.
const _: () = assert!(std::mem::size_of::<Conn>() <= 240);
// Boxed until used, dropped when the connection detaches.
const _: () = assert!(std::mem::size_of::<OutQueue>() == 8);
