//! A parked connection in compact form: what an idle connection keeps once it is parked and
//! detached (see `hibernate.rs`), instead of its whole [`Conn`].
//!
//! A detached connection has no task, no runtime stream and an empty out queue: of its
//! 256-byte `Conn` only the descriptor, the listener slot, the keep-alive, the decoder's
//! state and the peer address still mean something. The sweep turns such a `Conn` into a
//! [`Parked`] record (48 bytes) that its session's sink holds (`Sink::Parked`); the connection
//! leaves the core's connection map and waits in the hibernation epoll set under its session
//! key (tagged, see `shard/conns.rs`). Everything else a `Conn` holds is either the same for
//! every idle connection or kept by the session: the client id, the protocol and the client's
//! Maximum Packet Size.
//!
//! The full `Conn` is built again, detached as it was, by [`Parked::revive`] whenever anything
//! needs the connection (`Shard::revive`): the socket is readable or hung up (the poller), a
//! delivery, a takeover, a kick, keep-alive expiry, the broker stopping, hibernation failing;
//! from there it attaches and wakes as any detached connection does. Only a plain-TCP connection
//! with nothing but its socket is compacted: a TLS or WebSocket adapter's state, an
//! authentication method kept for re-authentication, a publish limiter or a kill keep the
//! `Conn`.

use super::{Conn, Flag, Lifecycle, Parking};
use crate::net::peer::PackedPeer;
use crate::net::{millis, Slot};
use crate::shard::Shard;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;
use uringmq_codec::Decoder;
use uringmq_session::Session;

/// A parked, detached connection without its `Conn` (see the module doc).
pub(crate) struct Parked {
    /// The listener slot, which also names the listener.
    slot: Slot,
    /// What the decoder learnt from CONNECT (protocol level, bridge bit).
    decoder: Decoder,
    /// The socket: the duplicate a detached connection owns, in the hibernation epoll set
    /// (closed with the record if it is dropped without being revived).
    fd: OwnedFd,
    /// When a packet last arrived ([`millis`]).
    last_seen: u32,
    /// 1.5x keep-alive in milliseconds; 0: no keep-alive.
    grace_ms: u32,
    peer: PackedPeer,
}

// A parked connection's whole cost in user space besides its session: mimalloc's 48-byte
// class, against the 256 of a `Conn` (BENCHMARKS.md, idle memory per connection).
const _: () = assert!(std::mem::size_of::<Parked>() <= 48);

impl Parked {
    /// The listener the connection came through.
    pub(crate) fn listener(&self) -> &Arc<str> {
        self.slot.listener()
    }

    pub(crate) fn peer(&self) -> Option<SocketAddr> {
        self.peer.get()
    }

    /// Quiet for longer than 1.5x its keep-alive at `now_ms` ([`millis`]).
    pub(crate) fn keep_alive_expired(&self, now_ms: u32) -> bool {
        self.grace_ms != 0 && now_ms.wrapping_sub(self.last_seen) > self.grace_ms
    }

    /// Builds the connection of session `key` (`s`) again, as it was when it was compacted:
    /// detached, its descriptor in the epoll set (still under the session key until it parks
    /// again), connected. `id` is its new connection id.
    pub(crate) fn revive(self, core: Rc<Shard>, id: u64, key: u64, s: &Session) -> Rc<Conn> {
        let Parked {
            slot,
            decoder,
            fd,
            last_seen,
            grace_ms,
            peer,
        } = self;
        let listener = slot.listener().clone();
        let fd = fd.into_raw_fd();
        let conn = Rc::new_cyclic(|me| {
            let held = (slot, core.task_guard());
            Conn::blank(core, (me.clone(), held), (id, fd, peer), listener, decoder)
        });
        conn.parking.set(Parking::Detached);
        conn.flags.set(Flag::InEpoll, true);
        conn.lifecycle.set(Lifecycle::Connected);
        conn.session.set(key);
        let _ = conn.client_id.set(s.client_id.clone());
        conn.protocol.set(s.protocol);
        conn.max_out.set(s.client_max_packet());
        conn.last_seen.set(last_seen);
        conn.grace_ms.set(grace_ms);
        // Just woken: not detached again before it has been quiet for a while.
        conn.last_out.set(millis(Instant::now()));
        conn
    }
}

impl Conn {
    /// This connection as a compact record waiting under `epoll_key`, if it is detached, plain
    /// TCP, connected, and holds nothing but its socket (see the module doc); None leaves it
    /// unchanged. On success the `Conn` no longer owns the descriptor or the listener slot: the
    /// caller drops it.
    pub(crate) fn compact(&self, epoll_key: u64) -> Option<Box<Parked>> {
        if !self.compactable() {
            return None;
        }
        let h = self.core.hibernation()?;
        // Re-keyed (level-checked, re-armed): readiness from now on names the session.
        h.park(self.fd.get(), epoll_key, false).ok()?;
        let (slot, _guard) = self.held.take()?;
        let parked = Parked {
            slot,
            decoder: self.decoder.get(),
            // SAFETY: a detached connection owns its descriptor; the record takes it over.
            fd: unsafe { OwnedFd::from_raw_fd(self.fd.replace(-1)) },
            last_seen: self.last_seen.get(),
            grace_ms: self.grace_ms.get(),
            peer: self.peer,
        };
        // The record lasts as long as the connection stays idle.
        Some(crate::alloc::long_lived(|| Box::new(parked)))
    }

    /// Detached (no task, no writer, no stream, an empty out queue), connected and nothing
    /// that only a `Conn` can keep.
    fn compactable(&self) -> bool {
        let busy = [Flag::Writing, Flag::ReadHeld, Flag::Blocked];
        self.parking.get() == Parking::Detached
            && self.flags.get(Flag::InEpoll)
            && !busy.iter().any(|&f| self.flags.get(f))
            && self.lifecycle.get() == Lifecycle::Connected
            && !self.is_killed()
            && matches!(*self.transport.borrow(), uringmq_transport::Transport::Tcp)
            && self.out.borrow().is_empty()
            && !has(&self.exchange)
            && !has(&self.publish_limiter)
            && self.session().is_some()
    }

    /// Its connection id (its key in the core's connection map).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}

/// Whether an optional box in a `Cell` is there (taken and put back).
fn has<T>(cell: &std::cell::Cell<Option<Box<T>>>) -> bool {
    let v = cell.take();
    let some = v.is_some();
    cell.set(v);
    some
}
