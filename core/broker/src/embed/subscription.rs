//! [`Subscription`]: an in-process session's deliveries, for the embedder.

use super::broker::inject;
use crate::api::{ApiError, Delivery, InjectedMessage};
use crate::mesh::{ApiCmd, EventFd, MeshMsg};
use crate::shard::Shared;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use uringmq_session::Origin;

/// Why [`Subscription::recv_timeout`] returned without a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// Nothing arrived in time.
    #[error("timed out")]
    Timeout,
    /// The subscription was closed or the broker stopped.
    #[error("subscription closed")]
    Closed,
}

/// An in-process subscription. Dropping it unsubscribes.
pub struct Subscription {
    pub(super) shared: Arc<Shared>,
    pub(super) key: u64,
    pub(super) rx: crossbeam_channel::Receiver<Delivery>,
    pub(super) event: Arc<EventFd>,
    pub(super) closed: std::sync::atomic::AtomicBool,
}

impl Subscription {
    /// Waits for the next delivery (`None`: forever).
    pub fn recv_timeout(&self, timeout: Option<Duration>) -> Result<Delivery, RecvError> {
        let r = match timeout {
            Some(t) => self.rx.recv_timeout(t).map_err(|e| match e {
                crossbeam_channel::RecvTimeoutError::Timeout => RecvError::Timeout,
                crossbeam_channel::RecvTimeoutError::Disconnected => RecvError::Closed,
            }),
            None => self.rx.recv().map_err(|_| RecvError::Closed),
        };
        if r.is_err() && self.closed.load(Ordering::Relaxed) {
            return Err(RecvError::Closed);
        }
        r
    }

    /// The next delivery, if one is waiting.
    pub fn try_recv(&self) -> Option<Delivery> {
        self.rx.try_recv().ok()
    }

    /// An eventfd that is readable while deliveries may be waiting (for asyncio
    /// `loop.add_reader`); drain with [`Subscription::try_recv`], call
    /// [`Subscription::clear_ready`], then drain again.
    pub fn event_fd(&self) -> RawFd {
        self.event.0
    }

    /// Resets the eventfd's readiness.
    pub fn clear_ready(&self) {
        let mut v: u64 = 0;
        // SAFETY: reading 8 bytes into a valid u64 from our non-blocking eventfd.
        unsafe { libc::read(self.event.0, (&mut v as *mut u64).cast(), 8) };
    }

    /// Publishes in-process as this subscription's session: a subscription with `no_local`
    /// does not receive it [MQTT-3.8.3-3]. Authorised as [`Broker::publish`] is.
    pub fn publish(&self, msg: InjectedMessage) -> Result<(), ApiError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(ApiError::NotRunning);
        }
        let origin = Origin {
            core: crate::mesh::core_of(self.key),
            session: self.key,
        };
        inject(&self.shared, msg, Some(origin))
    }

    /// Unsubscribes (idempotent); Drop does too.
    pub fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.shared.mailboxes[usize::from(crate::mesh::core_of(self.key))]
                .push(MeshMsg::Api(ApiCmd::Unsubscribe { session: self.key }));
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.close();
    }
}
