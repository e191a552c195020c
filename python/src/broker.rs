//! The native half of `uringmq.Broker`: settings parsed once, start/stop any number of times,
//! in-process publish and subscribe.
//!
//! Every call that may wait (start, stop, subscribe, even taking the lock) runs with the GIL
//! released: the broker's hook thread needs the GIL to run Python hooks, so waiting on the broker
//! while holding the GIL could deadlock, and other Python threads keep running meanwhile.

use crate::errors::{api_error, start_error};
use crate::exit::release_gil;
use crate::hooks::{PyAuthenticator, PyAuthorizer};
use crate::message::properties_from_dict;
use crate::settings::{build_config, config_to_dict};
use crate::stats::Stats;
use crate::subscription::NativeSubscription;
use bytes::Bytes;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use uringmq::{ApiError, Broker, Config, Hooks, InjectedMessage, Subscription};
use uringmq_codec::QoS;

/// The native broker handle. `inner` is `None` while stopped.
#[pyclass(module = "uringmq._uringmq", name = "NativeBroker", frozen)]
pub struct NativeBroker {
    config: Config,
    hooks: Hooks,
    inner: Mutex<Option<Broker>>,
    /// In-process subscriptions, closed on stop so their readers see the end instead of waiting
    /// forever on a broker that is gone.
    subscriptions: Mutex<Vec<Weak<Subscription>>>,
}

impl NativeBroker {
    /// The running broker slot. Only called with the GIL released (see the module docs).
    fn slot(&self) -> MutexGuard<'_, Option<Broker>> {
        lock(&self.inner)
    }

    /// Runs `f` on the running broker with the GIL released.
    fn with_running<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&Broker) -> Result<T, ApiError> + Send,
    ) -> PyResult<T> {
        release_gil(py, || match self.slot().as_ref() {
            Some(b) => f(b),
            None => Err(ApiError::NotRunning),
        })
        .map_err(api_error)
    }
}

/// Locks ignoring poison: a panic elsewhere leaves the data behind these locks consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn qos(v: u8) -> PyResult<QoS> {
    QoS::from_u8(v)
        .ok_or_else(|| PyValueError::new_err(format!("invalid qos {v}: must be 0, 1 or 2")))
}

#[pymethods]
impl NativeBroker {
    /// Parses and validates the settings; nothing starts yet.
    #[new]
    #[pyo3(signature = (settings=None, config=None, authenticate=None, authorize=None))]
    fn new(
        settings: Option<&Bound<'_, PyDict>>,
        config: Option<PathBuf>,
        authenticate: Option<Py<PyAny>>,
        authorize: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let config = build_config(config.as_deref(), settings)?;
        let hooks = Hooks {
            authenticator: authenticate.map(|f| Arc::new(PyAuthenticator(f)) as _),
            authorizer: authorize.map(|f| Arc::new(PyAuthorizer(f)) as _),
        };
        Ok(NativeBroker {
            config,
            hooks,
            inner: Mutex::new(None),
            subscriptions: Mutex::new(Vec::new()),
        })
    }

    /// Binds the listeners and starts the cores. No-op while running.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        release_gil(py, || {
            let mut slot = self.slot();
            if slot.as_ref().is_some_and(Broker::is_running) {
                return Ok(());
            }
            // A broker that died on its own is reaped before its replacement binds.
            if let Some(mut old) = slot.take() {
                old.stop();
            }
            *slot = Some(Broker::start_with_hooks(
                self.config.clone(),
                self.hooks.clone(),
            )?);
            Ok(())
        })
        .map_err(start_error)
    }

    /// Stops and joins every thread; the port is free on return. Idempotent.
    fn stop(&self, py: Python<'_>) {
        release_gil(py, || {
            // Out of the lock first: a hook calling back into this broker must not wait on it.
            let taken = self.slot().take();
            if let Some(mut b) = taken {
                b.stop();
            }
            let subs = std::mem::take(&mut *lock(&self.subscriptions));
            for sub in subs.iter().filter_map(Weak::upgrade) {
                sub.close();
            }
        })
    }

    /// Whether the broker runs.
    #[getter]
    fn is_running(&self, py: Python<'_>) -> bool {
        release_gil(py, || self.slot().as_ref().is_some_and(Broker::is_running))
    }

    /// `(host, port)` of the default listener while running, else None.
    #[getter]
    fn local_addr(&self, py: Python<'_>) -> Option<(String, u16)> {
        release_gil(py, || self.slot().as_ref().map(|b| b.local_addr()))
            .map(|a| (a.ip().to_string(), a.port()))
    }

    /// `[(name, host, port)]` of every listener while running, else empty.
    #[getter]
    fn listener_addrs(&self, py: Python<'_>) -> Vec<(String, String, u16)> {
        release_gil(py, || {
            self.slot()
                .as_ref()
                .map(|b| b.listener_addrs())
                .unwrap_or_default()
        })
        .into_iter()
        .map(|(name, a)| (name, a.ip().to_string(), a.port()))
        .collect()
    }

    /// The effective settings (defaults filled in) as a dict.
    #[getter]
    fn settings<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        config_to_dict(py, &self.config)
    }

    /// The effective settings as a TOML document (what `uringmq --print-config` shows).
    #[getter]
    fn config_toml(&self) -> String {
        self.config.to_toml_string()
    }

    /// The configured (not bound) host and port.
    #[getter]
    fn configured_addr(&self) -> (String, u16) {
        (self.config.bind.to_string(), self.config.port)
    }

    /// Publishes in-process (no socket). `payload` is bytes.
    #[pyo3(signature = (topic, payload, qos=0, retain=false, properties=None))]
    fn publish(
        &self,
        py: Python<'_>,
        topic: String,
        payload: &[u8],
        qos: u8,
        retain: bool,
        properties: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let properties = match properties {
            Some(d) => properties_from_dict(d, payload)?,
            None => Default::default(),
        };
        let msg = InjectedMessage {
            topic,
            payload: Bytes::copy_from_slice(payload),
            qos: self::qos(qos)?,
            retain,
            properties,
        };
        self.with_running(py, move |b| b.publish(msg))
    }

    /// Subscribes in-process; returns once the subscription is effective.
    #[pyo3(signature = (filter, qos=2))]
    fn subscribe(&self, py: Python<'_>, filter: String, qos: u8) -> PyResult<NativeSubscription> {
        let qos = self::qos(qos)?;
        let sub = Arc::new(self.with_running(py, |b| b.subscribe(&filter, qos))?);
        release_gil(py, || {
            let mut subs = lock(&self.subscriptions);
            subs.retain(|w| w.strong_count() > 0);
            subs.push(Arc::downgrade(&sub));
        });
        Ok(NativeSubscription::new(sub, filter))
    }

    /// Counters summed over cores (all zero while stopped).
    fn stats(&self, py: Python<'_>) -> Stats {
        Stats(release_gil(py, || {
            self.slot().as_ref().map(Broker::stats).unwrap_or_default()
        }))
    }

    /// The metrics in the Prometheus text format (empty while stopped).
    fn metrics_text(&self, py: Python<'_>) -> String {
        release_gil(py, || {
            self.slot()
                .as_ref()
                .map(Broker::metrics_text)
                .unwrap_or_default()
        })
    }

    /// `(host, port)` of the `metrics_listen` endpoint while running, else None.
    #[getter]
    fn metrics_addr(&self, py: Python<'_>) -> Option<(String, u16)> {
        release_gil(py, || self.slot().as_ref().and_then(|b| b.metrics_addr()))
            .map(|a| (a.ip().to_string(), a.port()))
    }
}

impl Drop for NativeBroker {
    /// A broker garbage-collected while running is stopped with the GIL released (joining with the
    /// GIL held could deadlock against a hook thread). During interpreter shutdown attaching is
    /// impossible; the hook threads cannot attach either then, so joining cannot deadlock.
    fn drop(&mut self) {
        let mut taken = self
            .inner
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if taken.is_some() {
            Python::try_attach(|py| release_gil(py, || drop(taken.take())));
        }
        drop(taken);
    }
}
