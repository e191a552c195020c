//! A connection's fair share of its core.
//!
//! On the epoll driver a read that finds data completes at once, without returning to the
//! runtime, so a client that always has more to send kept its task running for ever: the core's
//! other connections, its accept loop and its timers (keep-alive, the takeover drain limit)
//! waited. A reader therefore steps aside every [`READS_PER_TURN`] reads. Stepping aside with a
//! yield lets the other tasks and the I/O poll run, but monoio fires timers only once the run
//! queue is empty, which a few busy readers can keep from happening; so when the sweep is late
//! the reader sleeps for a millisecond instead, and the runtime parks and fires the timers.
//! On io_uring every read waits for its completion anyway; the budget costs a yield per turn.

use crate::net::{millis, TICK};
use crate::shard::Shard;
use std::task::Poll;
use std::time::{Duration, Instant};

/// Reads in a row before a reader lets the core's other tasks run.
pub(crate) const READS_PER_TURN: u8 = 16;

/// A sweep later than this means the core's timers are starved.
const SWEEP_LATE: Duration = Duration::from_millis(2 * TICK.as_millis() as u64);

/// Counts one reader's reads in a row.
#[derive(Default)]
pub(crate) struct ReadBudget {
    /// One byte: it lives in the future of every connection's task.
    reads: u8,
}

impl ReadBudget {
    /// Call before each read: steps aside once the turn's reads are spent.
    pub(crate) async fn spend(&mut self, core: &Shard) {
        self.reads += 1;
        if self.reads < READS_PER_TURN {
            return;
        }
        self.reads = 0;
        if timers_starved(core, Instant::now()) {
            monoio::time::sleep(Duration::from_millis(1)).await;
        } else {
            yield_now().await;
        }
    }
}

/// The sweep has not run for longer than it should have.
fn timers_starved(core: &Shard, now: Instant) -> bool {
    let late = millis(now).wrapping_sub(core.last_tick.get());
    u128::from(late) > SWEEP_LATE.as_millis()
}

/// Lets every other ready task of the core run once.
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if std::mem::replace(&mut yielded, true) {
            return Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}
