//! Waking, holding reads, parking and detaching a connection (see `hibernate.rs`).

use super::lifecycle::unreachable_halves;
use super::read::{closed, unpark};
use super::writer::writer;
use super::{Conn, Flag, Kill, Parking};
use crate::conn::CloseReason;
use monoio::io::{OwnedReadHalf, Splitable};
use monoio::net::TcpStream;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tracing::{debug, warn};

impl Conn {
    /// More is queued for this client than it takes: twice the delivery limit, so that only
    /// replies to its own packets (PUBACK, PINGRESP...) fill the rest. The task then stops
    /// reading until the writer has drained the queue, and TCP pushes back on the client, so a
    /// client that sends without ever reading cannot grow the broker's memory without bound.
    /// The slack above the delivery limit keeps a client that writes a burst before it reads
    /// from deadlocking with us. (Mosquitto keeps reading and lets the queue grow.) Never while
    /// draining for a takeover: the socket is shut down for reading, so what is left to read
    /// is bounded by the kernel's buffer, and the successor waits for it.
    pub(super) fn reads_held(&self) -> bool {
        let queued = self.out.borrow().len() + crate::conn::transport_io::pending_out(self);
        queued >= self.core.config().max_outbound_bytes.saturating_mul(2) && !self.draining()
    }

    /// Wakes a task that stopped reading for a full queue, to look again.
    pub(super) fn release_reads(&self) {
        if self.flags.replace(Flag::ReadHeld, false) {
            if let Some(w) = self.park_waker.take() {
                w.wake();
            }
        }
    }

    /// A delivery found `out` over the limit: the writer pumps the session once it has
    /// flushed (see `writer.rs`).
    pub(crate) fn set_blocked(&self) {
        self.flags.set(Flag::Blocked, true);
    }

    /// Makes sure a writer flushes `out` (and finishes, once closing): spawns one unless it
    /// runs. It runs after the tasks already scheduled in this event-loop turn, so what they
    /// queue goes out in the same write.
    pub(crate) fn wake(&self) {
        if self.flags.replace(Flag::Writing, true) {
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
        if self.parking.get() != Parking::Active {
            return;
        }
        self.parking.set(Parking::Requested);
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
        if self.parking.get() != Parking::Parked
            || self.flags.get(Flag::Writing)
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
        // Nothing is queued (no writer runs): the queue's box and buffer go too.
        self.out.borrow_mut().release();
        self.fd.set(new);
        self.parking.set(Parking::Detached);
        self.flags.set(Flag::InEpoll, false);
        if h.park(new, self.id, true).is_ok() {
            self.flags.set(Flag::InEpoll, true);
        } else if let Some(conn) = self.me.upgrade() {
            // Cannot wait in the set: wake up now instead of never.
            unpark(conn);
        }
        Ok(true)
    }

    /// Gives a detached connection a runtime stream again (its halves in `rd` and `wr`).
    /// False when that failed: the descriptor is gone and the connection is closed.
    pub(super) fn attach(&self) -> bool {
        if self.parking.get() != Parking::Detached {
            return true;
        }
        self.parking.set(Parking::Parked);
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
                warn!(peer = ?self.peer(), "cannot resume a hibernated connection: {e}");
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

    /// Parked or detached: no task.
    pub(super) fn parked(&self) -> bool {
        matches!(self.parking.get(), Parking::Parked | Parking::Detached)
    }

    /// Marks the connection parked or not, keeping `stats().hibernating` in step.
    pub(super) fn set_parked(&self, parked: bool) {
        let was = self.parked();
        self.parking.set(if parked {
            Parking::Parked
        } else {
            Parking::Active
        });
        if was != parked {
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
        self.parking.get() == Parking::Active && self.connected()
    }

    /// Registers the socket with the core's epoll set and keeps the read half; gives it back
    /// when the connection cannot park (closing, hibernation unavailable, epoll error).
    pub(super) fn park(
        &self,
        rd: OwnedReadHalf<TcpStream>,
    ) -> Result<(), OwnedReadHalf<TcpStream>> {
        if self.parking.get() == Parking::Requested {
            self.parking.set(Parking::Active);
        }
        let Some(h) = self.core.hibernation() else {
            return Err(rd);
        };
        if self.closing() || self.is_killed() {
            return Err(rd);
        }
        match h.park(self.fd.get(), self.id, !self.flags.get(Flag::InEpoll)) {
            Ok(()) => {
                self.flags.set(Flag::InEpoll, true);
                self.set_parked(true);
                self.rd.set(Some(rd));
                Ok(())
            }
            Err(e) => {
                debug!(peer = ?self.peer(), "cannot park connection: {e}");
                Err(rd)
            }
        }
    }
}
