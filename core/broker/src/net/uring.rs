//! How each core's io_uring is set up.
//!
//! By default the kernel tells a task that it has io_uring completion work with a signal-like
//! notification that interrupts it wherever it runs (an IPI when it runs on another CPU). In a
//! thread-per-core broker that is a cost on both sides of every loopback packet: the CPU that
//! delivers a client's bytes sends the IPI, and the core it lands on is pulled into the kernel
//! at once to retry its read, where it spins on the socket lock that the delivering CPU still
//! holds. A connection storm profile showed it: 6 % of the core's time in
//! `__pv_queued_spin_lock_slowpath` under io_uring task work, task work run from signal
//! delivery, and 64 us of broker CPU per CONNACK against 46 us on the epoll driver
//! (BENCHMARKS.md, connect storm).
//!
//! `IORING_SETUP_COOP_TASKRUN` (Linux 5.19) drops the interruption: the work waits for the
//! core's next system call, and a busy core makes one every loop turn (monoio enters the ring
//! after each batch of tasks); an idle core waiting in `io_uring_enter` is still woken. The
//! stronger `DEFER_TASKRUN` is not used: it runs completions only when the ring is entered to
//! wait, and monoio's busy loop submits without waiting, so completions would lag until its
//! run queue is empty.

use crate::config::Driver;
use std::sync::OnceLock;

/// The ring settings every core uses: cooperative task running where the kernel has it, the
/// kernel's defaults elsewhere (an older kernel refuses unknown setup flags, and that must not
/// turn into a silent fall back to epoll).
///
/// The probe ring is opened only where io_uring is used: under `Driver::Epoll` it may be
/// forbidden by policy.
pub(crate) fn builder(driver: Driver) -> io_uring::Builder {
    static COOP: OnceLock<bool> = OnceLock::new();
    let coop = driver != Driver::Epoll
        && *COOP.get_or_init(|| {
            io_uring::IoUring::<io_uring::squeue::Entry>::builder()
                .setup_coop_taskrun()
                .build(8)
                .is_ok()
        });
    let mut b = io_uring::IoUring::builder();
    if coop {
        b.setup_coop_taskrun();
    }
    b
}
