//! Hibernation of idle connections: a connection that has sent nothing for a while gives up
//! its task and its pending readiness wait, and waits in the core's own epoll set instead.
//!
//! An idle connection otherwise costs a task (its future and header, ~250 bytes) and a
//! readiness operation in the runtime for as long as it is open, which is most of what a
//! million mostly-idle IoT connections would cost. Parked, it costs one `epoll` registration
//! in the kernel and nothing in user space but its `Conn` and session. EMQX hibernates idle
//! connection processes for the same reason; Mosquitto has no per-connection task at all.
//!
//! The timer sweep asks a connection quiet for `hibernate_after_ms` to park
//! ([`crate::conn::Conn::request_park`]). Its task, waiting for readability, sees the
//! request, registers the socket here (`EPOLLIN | EPOLLRDHUP | EPOLLONESHOT`, keyed by the
//! connection id) and ends. The core's one poller task waits for this epoll set to be
//! readable (through monoio, so it works on both drivers), collects the ready connections and
//! respawns their tasks. Registration is level-checked by the kernel, so bytes that arrived
//! between the last read and the registration wake the connection at once; every way a
//! connection is closed (keep-alive, takeover, stop) shuts its socket down, which makes it
//! readable, so a parked connection is woken to close like any other.

use crate::shard::Shard;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use tracing::warn;

/// Ready connections taken from the kernel per `epoll_wait`.
const BATCH: usize = 256;

/// A core's epoll set of parked connections.
pub(crate) struct Hibernation {
    epfd: OwnedFd,
}

impl Hibernation {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: plain system call; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        Ok(Hibernation {
            epfd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Waits (one-shot) for `fd` to become readable or hung up; `first` adds it to the set,
    /// later parks re-arm it.
    pub(crate) fn park(&self, fd: RawFd, conn_id: u64, first: bool) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32,
            u64: conn_id,
        };
        let op = if first {
            libc::EPOLL_CTL_ADD
        } else {
            libc::EPOLL_CTL_MOD
        };
        // SAFETY: both descriptors are open; `ev` is a valid event.
        if unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), op, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Removes `fd` from the set (before the number is closed).
    pub(crate) fn forget(&self, fd: RawFd) {
        // SAFETY: both descriptors are open; a null event is allowed for DEL.
        unsafe {
            libc::epoll_ctl(
                self.epfd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        };
    }

    /// Connection ids that became ready, without waiting.
    fn ready(&self, out: &mut Vec<u64>) -> usize {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; BATCH];
        // SAFETY: `events` has room for BATCH entries; timeout 0 never blocks.
        let n = unsafe {
            libc::epoll_wait(self.epfd.as_raw_fd(), events.as_mut_ptr(), BATCH as i32, 0)
        };
        if n <= 0 {
            return 0;
        }
        let n = n as usize;
        out.extend(events[..n].iter().map(|e| e.u64));
        n
    }
}

/// After a failed detach (out of descriptors), how long the sweep leaves parked connections
/// attached. At the process's descriptor limit every duplicate fails, and trying each parked
/// connection on every sweep cost ~52,000 failed `fcntl` calls a second (12-15 % of a CPU).
const DETACH_BACKOFF_MS: u32 = 1000;

/// Whether the sweep may try to detach parked connections now (not backing off).
pub(crate) fn may_detach(core: &Shard, now_ms: u32) -> bool {
    match core.detach_paused_until.get() {
        Some(until) if (now_ms.wrapping_sub(until) as i32) < 0 => false,
        Some(_) => {
            core.detach_paused_until.set(None);
            true
        }
        None => true,
    }
}

/// A detach failed: no more tries for [`DETACH_BACKOFF_MS`]; logged once per interval with a
/// count. The connection stays parked, attached, and works as before.
pub(crate) fn detach_failed(core: &Shard, now_ms: u32, e: &io::Error) {
    crate::shard::add(&core.stats().detach_failures, 1);
    core.detach_paused_until
        .set(Some(now_ms.wrapping_add(DETACH_BACKOFF_MS)));
    let mut log = core.detach_log.get();
    if let Some(n) = log.hit(now_ms) {
        warn!(
            core = core.id,
            failures = n,
            "cannot detach parked connections: {e} ({n} failures since the last report); \
             retrying in {DETACH_BACKOFF_MS} ms"
        );
    }
    core.detach_log.set(log);
}

/// Sweeps after parking during which the core asks mimalloc to collect.
pub(crate) const COLLECT_SWEEPS: u8 = 25;

/// Returns what parked and detached connections freed (their tasks and streams) to the
/// system. mimalloc purges free pages only when the thread that freed them calls into it,
/// after a delay (1 s in v3), and a core whose connections all went quiet hardly allocates;
/// so the sweep calls this for a few seconds after connections park. Harmless when the
/// process's allocator is another one: mimalloc's heap is then empty.
pub(crate) fn collect_memory() {
    // SAFETY: no preconditions; collects this thread's heap.
    unsafe { libmimalloc_sys::mi_collect(false) }
    crate::alloc::collect_long_lived();
}

/// The core's poller: waits until parked connections are ready and wakes them. Runs until the
/// core is finished (it holds no task guard: parked connections hold their own).
pub(crate) async fn poller(core: Rc<Shard>) {
    let Some(epfd) = core.hibernation.as_ref().map(|h| h.epfd.as_raw_fd()) else {
        return;
    };
    // Ends when the core finishes (`poller_stop`), not by a flag: it is waiting on the set.
    // monoio waits for readiness only on its own socket types; `UdpSocket` does nothing with
    // the descriptor but register it with the driver and poll it (io_uring POLL_ADD or epoll),
    // which is all an epoll descriptor needs. It is a duplicate, closed with the socket.
    // SAFETY: plain system call; the result is checked.
    let dup = unsafe { libc::fcntl(epfd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        warn!(
            core = core.id,
            "hibernation disabled: {}",
            io::Error::last_os_error()
        );
        return off(&core);
    }
    // SAFETY: `dup` is a new descriptor owned by nothing else.
    let std_sock = unsafe { std::net::UdpSocket::from_raw_fd(dup) };
    let waiter = match monoio::net::udp::UdpSocket::from_std(std_sock) {
        Ok(w) => w,
        Err(e) => {
            warn!(core = core.id, "hibernation disabled: {e}");
            return off(&core);
        }
    };
    let Some(h) = core.hibernation.as_ref() else {
        return;
    };
    let mut ids = Vec::with_capacity(BATCH);
    loop {
        // Dropping the readiness wait when the core finishes is safe: it consumes nothing.
        let ready = monoio::select! {
            r = waiter.readable(false) => r,
            _ = core.poller_stop.wait() => return,
        };
        if let Err(e) = ready {
            warn!(core = core.id, "hibernation poller stopped: {e}");
            return off(&core);
        }
        while h.ready(&mut ids) == BATCH {}
        for id in ids.drain(..) {
            if let Some(conn) = core.conn_for_event(id) {
                crate::conn::unpark(conn);
            }
        }
    }
}

/// Without a poller nothing may stay parked: no more parking, and every parked connection
/// gets its task back.
fn off(core: &Rc<Shard>) {
    core.hibernation_off.set(true);
    core.revive_all();
    let conns: Vec<_> = core.st.borrow().conns.all();
    for conn in conns {
        crate::conn::unpark(conn);
    }
}
