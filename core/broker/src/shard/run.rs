//! A core's life: building its runtime, spawning its listener, timer and flush tasks, and the
//! stop procedure (grace period, hard shutdown, bounded wait for its tasks).

use super::shared::Shared;
use super::{Shard, STOP_GRACE, STOP_LIMIT};
use crate::config::Driver;
use crate::conn::{CloseReason, Conn};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

impl Shard {
    /// The core's main future: accept loops, timers, and the mesh until Stop.
    pub(super) async fn run(
        self: Rc<Self>,
        listeners: Vec<(Arc<crate::net::Endpoint>, std::net::TcpListener)>,
    ) {
        self.spawn_tasks(listeners);
        let mailbox = &self.shared.mailboxes[usize::from(self.id)];
        loop {
            mailbox.arm();
            self.drain_mesh();
            if self.stopping.get() {
                break;
            }
            mailbox.wait().await;
        }
        self.finish().await;
    }

    /// Starts the core's tasks: an accept loop per listener, the timers, the mesh flush, the
    /// bridges, the store's writer and the hibernation poller.
    fn spawn_tasks(
        self: &Rc<Self>,
        listeners: Vec<(Arc<crate::net::Endpoint>, std::net::TcpListener)>,
    ) {
        for (name, l) in listeners {
            use std::os::fd::AsRawFd;
            self.listener_fds.borrow_mut().push(l.as_raw_fd());
            match monoio::net::TcpListener::from_std(l) {
                Ok(l) => {
                    let guard = self.task_guard();
                    monoio::spawn(crate::conn::accept_loop(self.clone(), l, name, guard));
                }
                Err(e) => warn!(core = self.id, "cannot use listener: {e}"),
            }
        }
        monoio::spawn(crate::shard::timers::run(self.clone()));
        monoio::spawn(flush_loop(self.clone()));
        crate::bridge::start_configured(self);
        if let Some(p) = &self.persist {
            monoio::spawn(p.store.clone().run());
            if let Some(s) = &p.sharing {
                monoio::spawn(s.clone().run());
            }
        }
        if self.hibernation.is_some() {
            monoio::spawn(crate::conn::hibernate::poller(self.clone()));
        }
    }

    /// After Stop: waits for the connections, settles with the other cores, closes the
    /// store, ends the other tasks and drops what the core still holds.
    async fn finish(self: &Rc<Self>) {
        // Wait for every connection and listener task to finish. A writer blocked on a client
        // that does not read would hold its task for ever, and the sweep that shuts such
        // sockets down hard (`timers.rs`) has ended: so after a grace for the last bytes
        // (a v5 DISCONNECT) the core does it here, then waits a bounded time more.
        self.wait_tasks(STOP_GRACE).await;
        if self.tasks.get() > 0 {
            self.shut_down_hard();
            self.wait_tasks(STOP_LIMIT).await;
        }
        // What the other cores still send (their clients' last messages) is handled before
        // the store closes (`settle.rs`).
        self.settle().await;
        if let Some(p) = &self.persist {
            // Writes and syncs what is left: a clean stop loses nothing.
            p.store.close().await;
        }
        self.stop_signal.notify();
        self.finished.set(true);
        self.outbox_ready.notify();
        self.poller_stop.notify();
        // Let the timer, flush and poller tasks observe the stop and finish.
        monoio::time::sleep(Duration::from_millis(1)).await;
        // Drop every session and connection here, outside the borrow: in-process subscriptions
        // see their channel close, and no Rc cycle between the core and its connections keeps
        // their memory alive after the runtime is gone (a broker is restarted many times in one
        // process).
        let (sessions, conns) = {
            let mut st = self.st.borrow_mut();
            (st.sessions.take_all(), st.conns.take_all())
        };
        drop(sessions);
        drop(conns);
        debug!(core = self.id, "core stopped");
    }

    /// Waits until every connection and listener task has finished, or `limit` has passed.
    /// Meanwhile the mailbox is still drained: a connection here may wait for another core
    /// (a takeover's answer, a barrier's confirmation), and another core's messages for
    /// sessions here are not to wait for the rounds.
    async fn wait_tasks(self: &Rc<Self>, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mailbox = &self.shared.mailboxes[usize::from(self.id)];
        loop {
            mailbox.arm();
            self.drain_mesh();
            if self.tasks.get() == 0 || Instant::now() >= deadline {
                return;
            }
            monoio::select! {
                _ = self.tasks_done.wait() => {}
                _ = mailbox.wait() => {}
                _ = monoio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    }

    /// Shuts every connection's socket down in both directions: a write blocked on a full
    /// socket fails at once, so its task ends.
    fn shut_down_hard(&self) {
        for c in self.st.borrow().conns.iter() {
            if c.fd() >= 0 {
                // SAFETY: shutdown on the connection's own open descriptor.
                unsafe { libc::shutdown(c.fd(), libc::SHUT_RDWR) };
            }
        }
    }

    pub(super) fn stop(self: &Rc<Self>) {
        if self.stopping.replace(true) {
            return;
        }
        if let Some(p) = &self.persist {
            p.release();
        }
        for &fd in self.listener_fds.borrow().iter() {
            // SAFETY: shutting down a socket fd the accept loop owns; it stays open until the
            // loop drops it. On Linux this makes the pending accept fail, freeing the port.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
        // Compact parked connections close like the others: their `Conn`s first.
        self.revive_all();
        let conns: Vec<Rc<Conn>> = self.st.borrow().conns.all();
        for c in conns {
            c.kill(CloseReason::Shutdown);
        }
        crate::bridge::stop_all();
        self.stop_signal.notify();
    }

    // ---- interest (subscriptions as seen by other cores) ----
}

/// Flushes the core's outbox once per event-loop turn in which something was queued.
async fn flush_loop(core: Rc<Shard>) {
    while !core.finished.get() {
        core.outbox_ready.wait().await;
        core.flush_mesh();
    }
}

/// Builds and runs one core on the current thread until it stops.
pub(crate) fn run_core(
    id: u16,
    shared: Arc<Shared>,
    listeners: Vec<(Arc<crate::net::Endpoint>, std::net::TcpListener)>,
    driver: Driver,
    pin: Option<usize>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    if let Some(cpu) = pin {
        if let Err(e) = monoio::utils::bind_to_cpu_set([cpu]) {
            debug!(core = id, "cannot pin to cpu {cpu}: {e:?}");
        }
    }
    macro_rules! go {
        ($driver:ty) => {{
            match monoio::RuntimeBuilder::<$driver>::new()
                .with_entries(1024)
                .uring_builder(crate::net::uring::builder(driver))
                .enable_timer()
                .build()
            {
                Ok(mut rt) => {
                    let _ = ready.send(Ok(()));
                    let core = Rc::new_cyclic(|me| Shard::new(id, shared, me.clone()));
                    rt.block_on(core.clone().run(listeners));
                    drop(core);
                }
                Err(e) => {
                    let _ = ready.send(Err(format!("core {id}: {e}")));
                }
            }
        }};
    }
    match driver {
        Driver::Epoll => go!(monoio::LegacyDriver),
        Driver::IoUring => go!(monoio::IoUringDriver),
        Driver::Auto => go!(monoio::FusionDriver),
    }
    info!(core = id, "core thread exiting");
}
