//! A wake-up flag for one waiting task, safe to raise from any thread.
//!
//! A publisher's writer waits on it for room in its window: acknowledgements arrive on its own
//! reader (same thread), deliveries on subscribers that may run on other threads. Raising it
//! costs one atomic load unless the task is actually parked, so per-batch notifications are cheap
//! and a remote core is woken only on the waiting edge.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Mutex;
use std::task::{Poll, Waker};

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Signal {
    raised: AtomicBool,
    parked: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Signal {
    /// Raises the flag and wakes the waiter, if any.
    pub fn notify(&self) {
        self.raised.store(true, SeqCst);
        if self.parked.load(SeqCst) {
            self.parked.store(false, SeqCst);
            let w = self.waker.lock().ok().and_then(|mut g| g.take());
            if let Some(w) = w {
                w.wake();
            }
        }
    }

    /// Waits until the flag is raised (returns at once if it already is) and lowers it.
    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.raised.swap(false, SeqCst) {
                return Poll::Ready(());
            }
            if let Ok(mut g) = self.waker.lock() {
                *g = Some(cx.waker().clone());
            }
            self.parked.store(true, SeqCst);
            // Raised between the first check and parking: don't sleep through it.
            if self.raised.swap(false, SeqCst) {
                self.parked.store(false, SeqCst);
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn raised_before_wait_returns_at_once() {
        let s = Signal::default();
        s.notify();
        monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .build()
            .unwrap()
            .block_on(s.wait());
    }

    #[test]
    fn woken_from_another_thread() {
        let s = Arc::new(Signal::default());
        let s2 = s.clone();
        let t = std::thread::spawn(move || {
            // Keeps notifying until the waiter has parked and been woken at least once.
            for _ in 0..1000 {
                s2.notify();
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .build()
            .unwrap();
        rt.block_on(async {
            s.wait().await;
            s.wait().await;
        });
        t.join().unwrap();
    }
}
