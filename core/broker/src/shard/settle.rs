//! The cores' last exchange at stop, before their stores close.
//!
//! Every core gets its Stop at about the same moment, but a core's mailbox goes on receiving
//! after it: another core may still be routing what its clients sent just before (a PUBLISH
//! for a session here, a retained message this core writes), and its client may already
//! hold the PUBACK. A core that stopped listening would drop those messages, and with them
//! what a clean stop promises to keep. So once its connections are done each core drains its
//! mailbox and flushes its outbox in rounds with the others, meeting after each round, until
//! a round in which no core sent anything: then every message sent during the stop has been
//! handled, and only then does a core close its store. Stop only: the counter below is not
//! touched while the broker serves.

use super::Shard;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::warn;

/// The longest a core waits for the others in the rounds: the slowest core starts them up to
/// `STOP_GRACE + STOP_LIMIT` after the fastest (its connections), and a core that panicked
/// never comes.
const SETTLE_LIMIT: Duration = Duration::from_secs(1);

/// What the cores share for the rounds (in [`super::Shared`]).
#[derive(Default)]
pub(crate) struct Settle {
    /// Mesh pushes between cores since the stop began.
    sent: AtomicU64,
    meet: Mutex<Meet>,
}

#[derive(Default)]
struct Meet {
    /// Rounds completed.
    rounds: u64,
    /// Cores that arrived at the end of the round under way.
    arrived: usize,
    /// `sent` when the last round completed.
    sent_then: Option<u64>,
    /// Whether nothing was sent during the last completed round.
    quiet: bool,
}

impl Settle {
    /// A core pushed to another core's mailbox while stopping.
    pub(crate) fn count_send(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// A core arrives at the end of the round under way; true for the last one, which
    /// completes it.
    fn arrive(&self, cores: usize) -> bool {
        let mut m = self.meet.lock().unwrap_or_else(|e| e.into_inner());
        m.arrived += 1;
        if m.arrived < cores {
            return false;
        }
        // Every core pushed what its round produced before arriving: `sent` is exact here.
        let sent = self.sent.load(Ordering::Relaxed);
        m.quiet = m.sent_then == Some(sent);
        m.sent_then = Some(sent);
        m.arrived = 0;
        m.rounds += 1;
        true
    }

    /// Whether round `round` is complete, and if so whether it was quiet.
    fn outcome(&self, round: u64) -> Option<bool> {
        let m = self.meet.lock().unwrap_or_else(|e| e.into_inner());
        // A core cannot complete a later round without this one's caller.
        (m.rounds > round).then_some(m.quiet)
    }
}

impl Shard {
    /// The rounds (see the module docs): returns once a round was quiet everywhere, or after
    /// [`SETTLE_LIMIT`] (logged).
    pub(super) async fn settle(self: &Rc<Self>) {
        let settle = &self.shared.settle;
        let mailbox = &self.shared.mailboxes[usize::from(self.id)];
        let deadline = Instant::now() + SETTLE_LIMIT;
        for round in 0.. {
            self.drain_mesh();
            self.flush_mesh();
            if settle.arrive(self.shared.cores()) {
                // Wake the others, which wait on their mailboxes.
                self.shared.mailboxes.iter().for_each(|m| m.wake());
            }
            loop {
                mailbox.arm();
                if let Some(quiet) = settle.outcome(round) {
                    if quiet {
                        return;
                    }
                    break;
                }
                // What arrives meanwhile is handled now (and what that sends is counted, so
                // it makes the round after this one not quiet).
                self.drain_mesh();
                self.flush_mesh();
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    warn!(
                        core = self.id,
                        "stop: the other cores did not settle in time"
                    );
                    return;
                }
                monoio::select! {
                    _ = mailbox.wait() => {}
                    _ = monoio::time::sleep(left) => {}
                }
            }
        }
    }
}
