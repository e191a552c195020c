//! A single-waiter notification between tasks of one core.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// A single-waiter notification for tasks of one core.
#[derive(Default)]
pub(crate) struct LocalNotify {
    flag: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl LocalNotify {
    /// Wakes the waiter (or makes its next wait return at once).
    pub(crate) fn notify(&self) {
        self.flag.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Waits for a notification.
    pub(crate) async fn wait(&self) {
        poll_fn(|cx| {
            if self.flag.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}
