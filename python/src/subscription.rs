//! An in-process subscription: blocking receive with the GIL released, a non-blocking poll, and
//! the eventfd the Python side hands to `loop.add_reader` for asyncio.

use crate::errors::{api_error, SubscriptionClosed};
use crate::exit::release_gil;
use crate::message::{injected, Message};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uringmq::{ApiError, RecvError, Subscription};

/// How long one GIL-released wait lasts before Python signal handlers (Ctrl-C) get a chance.
const SIGNAL_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// The native half of `uringmq.Subscription` (the Python class adds iteration and asyncio).
#[pyclass(module = "uringmq._uringmq", name = "NativeSubscription", frozen)]
pub struct NativeSubscription {
    inner: Arc<Subscription>,
    filter: String,
}

impl NativeSubscription {
    /// Wraps a subscription to `filter`.
    pub fn new(inner: Arc<Subscription>, filter: String) -> Self {
        Self { inner, filter }
    }
}

#[pymethods]
impl NativeSubscription {
    /// The topic filter.
    #[getter]
    fn filter(&self) -> &str {
        &self.filter
    }

    /// Waits up to `timeout` seconds (None: forever) for a message, without holding the GIL.
    /// Returns None on timeout; raises SubscriptionClosed once the subscription is closed and
    /// drained.
    #[pyo3(signature = (timeout=None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Message>> {
        let deadline = match timeout {
            Some(t) if !(t >= 0.0 && t.is_finite()) => {
                return Err(PyValueError::new_err(
                    "timeout must be a non-negative number of seconds",
                ))
            }
            Some(t) => Some(Instant::now() + Duration::from_secs_f64(t)),
            None => None,
        };
        loop {
            let slice = match deadline {
                Some(d) => d
                    .saturating_duration_since(Instant::now())
                    .min(SIGNAL_CHECK_INTERVAL),
                None => SIGNAL_CHECK_INTERVAL,
            };
            match release_gil(py, || self.inner.recv_timeout(Some(slice))) {
                Ok(d) => return Message::from_delivery(py, d).map(Some),
                Err(RecvError::Closed) => return Err(closed(&self.filter)),
                Err(RecvError::Timeout) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(None);
                    }
                    py.check_signals()?;
                }
            }
        }
    }

    /// A waiting message, or None. Raises SubscriptionClosed once closed and drained.
    fn poll(&self, py: Python<'_>) -> PyResult<Option<Message>> {
        if let Some(d) = self.inner.try_recv() {
            return Message::from_delivery(py, d).map(Some);
        }
        // A zero wait tells "empty" (Timeout) from "empty for good" (Closed).
        match self.inner.recv_timeout(Some(Duration::ZERO)) {
            Ok(d) => Message::from_delivery(py, d).map(Some),
            Err(RecvError::Timeout) => Ok(None),
            Err(RecvError::Closed) => Err(closed(&self.filter)),
        }
    }

    /// The eventfd that is readable while messages may be waiting (for `loop.add_reader`).
    fn event_fd(&self) -> i32 {
        self.inner.event_fd()
    }

    /// Resets the eventfd; call after `poll()` returned None, then poll once more.
    fn clear_ready(&self) {
        self.inner.clear_ready()
    }

    /// Publishes in-process as this subscription's session (`no_local` drops it for this
    /// subscription only).
    #[pyo3(signature = (topic, payload, qos=0, retain=false, properties=None, username=None))]
    fn publish(
        slf: &Bound<'_, Self>,
        topic: String,
        payload: &[u8],
        qos: u8,
        retain: bool,
        properties: Option<&Bound<'_, PyDict>>,
        username: Option<String>,
    ) -> PyResult<()> {
        let msg = injected(topic, payload, qos, retain, properties, username)?;
        let this = slf.get();
        release_gil(slf.py(), || this.inner.publish(msg)).map_err(|e| match e {
            ApiError::NotRunning => closed(&this.filter),
            other => api_error(other),
        })
    }

    /// Unsubscribes; messages already queued can still be read.
    fn close(&self, py: Python<'_>) {
        release_gil(py, || self.inner.close())
    }
}

fn closed(filter: &str) -> PyErr {
    SubscriptionClosed::new_err(format!("subscription to {filter:?} is closed"))
}
