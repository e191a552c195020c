//! The native half of `uringmq.Broker`: settings parsed once, start/stop any number of times,
//! in-process publish and subscribe.
//!
//! Every call that may wait (start, stop, subscribe, even taking the lock) runs with the GIL
//! released: the broker's hook thread needs the GIL to run Python hooks, so waiting on the broker
//! while holding the GIL could deadlock, and other Python threads keep running meanwhile.

use crate::errors::{api_error, start_error};
use crate::exit::release_gil;
use crate::hooks::{disconnect_hook, Client, PyAuthenticator, PyAuthorizer};
use crate::message::injected;
use crate::settings::{build_config, config_to_dict};
use crate::stats::Stats;
use crate::subscription::NativeSubscription;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use uringmq::{ApiError, Broker, Config, Hooks, SubscribeOptions, Subscription};
use uringmq_codec::RetainHandling;

/// The native broker handle. `inner` is `None` while stopped.
#[pyclass(module = "uringmq._uringmq", name = "NativeBroker", frozen)]
pub struct NativeBroker {
    config: Config,
    hooks: Hooks,
    inner: Mutex<Option<Broker>>,
    /// The ports the listeners were bound to by the last start (port 0 resolved), kept after
    /// `stop()` so that `restart()` comes back on them.
    ports: Mutex<Vec<u16>>,
    /// In-process subscriptions, closed on stop so their readers see the end instead of waiting
    /// forever on a broker that is gone.
    subscriptions: Mutex<Vec<Weak<Subscription>>>,
}

impl NativeBroker {
    /// Starts with `config` unless running. Only called with the GIL released.
    fn start_with(&self, config: Config) -> Result<(), uringmq::StartError> {
        let mut slot = self.slot();
        if slot.as_ref().is_some_and(Broker::is_running) {
            return Ok(());
        }
        // A broker that died on its own is reaped before its replacement binds.
        if let Some(mut old) = slot.take() {
            old.stop();
        }
        let broker = Broker::builder(config).hooks(self.hooks.clone()).start()?;
        *lock(&self.ports) = broker
            .listener_addrs()
            .iter()
            .map(|(_, a)| a.port())
            .collect();
        *slot = Some(broker);
        Ok(())
    }

    /// Stops, joins, and closes the in-process subscriptions. Only called with the GIL released.
    fn stop_now(&self) {
        // Out of the lock first: a hook calling back into this broker must not wait on it.
        let taken = self.slot().take();
        if let Some(mut b) = taken {
            b.stop();
        }
        let subs = std::mem::take(&mut *lock(&self.subscriptions));
        for sub in subs.iter().filter_map(Weak::upgrade) {
            sub.close();
        }
    }

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

/// The subscription options from `qos` and a dict of the MQTT 5 options; unknown keys are
/// errors naming the key.
fn subscribe_options(qos: u8, d: Option<&Bound<'_, PyDict>>) -> PyResult<SubscribeOptions> {
    let mut o = SubscribeOptions {
        qos: crate::message::qos(qos)?,
        ..Default::default()
    };
    for (key, value) in d.into_iter().flat_map(|d| d.iter()) {
        match key.extract::<String>()?.as_str() {
            "no_local" => o.no_local = value.is_truthy()?,
            "retain_as_published" => o.retain_as_published = value.is_truthy()?,
            "retain_handling" => {
                o.retain_handling = match value.extract::<u8>()? {
                    0 => RetainHandling::SendAtSubscribe,
                    1 => RetainHandling::SendIfNew,
                    2 => RetainHandling::DoNotSend,
                    n => {
                        return Err(PyValueError::new_err(format!(
                            "invalid retain_handling {n}: must be 0, 1 or 2"
                        )))
                    }
                }
            }
            "subscription_identifier" => o.subscription_identifier = value.extract()?,
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown subscription option `{other}`"
                )))
            }
        }
    }
    Ok(o)
}

#[pymethods]
impl NativeBroker {
    /// Parses and validates the settings; nothing starts yet.
    #[new]
    #[pyo3(signature = (settings=None, config=None, authenticate=None, authorize=None, on_disconnect=None))]
    fn new(
        settings: Option<&Bound<'_, PyDict>>,
        config: Option<PathBuf>,
        authenticate: Option<Py<PyAny>>,
        authorize: Option<Py<PyAny>>,
        on_disconnect: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let config = build_config(config.as_deref(), settings)?;
        let hooks = Hooks {
            authenticator: authenticate.map(|f| Arc::new(PyAuthenticator(f)) as _),
            authorizer: authorize.map(|f| Arc::new(PyAuthorizer(f)) as _),
            on_disconnect: on_disconnect.map(disconnect_hook),
        };
        Ok(NativeBroker {
            config,
            hooks,
            inner: Mutex::new(None),
            ports: Mutex::new(Vec::new()),
            subscriptions: Mutex::new(Vec::new()),
        })
    }

    /// Binds the listeners and starts the cores. No-op while running.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        release_gil(py, || self.start_with(self.config.clone())).map_err(start_error)
    }

    /// Stops and joins every thread; the port is free on return. Idempotent.
    fn stop(&self, py: Python<'_>) {
        release_gil(py, || self.stop_now())
    }

    /// Stops, then starts again on the ports it had (port 0 stays the port it was given), so
    /// clients can reconnect to the same address, also after `stop()` (another process may
    /// have taken a port meanwhile: then `OSError` EADDRINUSE). Sessions and retained
    /// messages are not kept (they live in memory). Starts a never-started broker as `start()`
    /// does.
    fn restart(&self, py: Python<'_>) -> PyResult<()> {
        release_gil(py, || {
            let mut config = self.config.clone();
            let ports = lock(&self.ports).clone();
            if let Some((first, rest)) = ports.split_first() {
                config.port = *first;
                for (l, port) in config.listeners.iter_mut().zip(rest) {
                    l.port = *port;
                }
            }
            self.stop_now();
            self.start_with(config)
        })
        .map_err(start_error)
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

    /// Publishes in-process (no socket), authorised as client `$inprocess` with user
    /// `username` (the authorisation hook, if any, runs on this thread). `payload` is bytes.
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
        slf.get().with_running(slf.py(), move |b| b.publish(msg))
    }

    /// Subscribes in-process with MQTT 5 subscription options (`no_local`,
    /// `retain_as_published`, `retain_handling`, `subscription_identifier`, in a dict); returns
    /// once the subscription is effective.
    #[pyo3(signature = (filter, qos=2, options=None))]
    fn subscribe(
        &self,
        py: Python<'_>,
        filter: String,
        qos: u8,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<NativeSubscription> {
        let options = subscribe_options(qos, options)?;
        let sub = Arc::new(self.with_running(py, |b| b.subscribe_with(&filter, options))?);
        release_gil(py, || {
            let mut subs = lock(&self.subscriptions);
            subs.retain(|w| w.strong_count() > 0);
            subs.push(Arc::downgrade(&sub));
        });
        Ok(NativeSubscription::new(sub, filter))
    }

    /// The connected clients (empty while stopped).
    fn clients(&self, py: Python<'_>) -> PyResult<Vec<Client>> {
        let list = release_gil(py, || match self.slot().as_ref() {
            Some(b) => b.clients(),
            None => Ok(Vec::new()),
        })
        .map_err(api_error)?;
        Ok(list.into_iter().map(Client::from).collect())
    }

    /// Closes client `client_id`'s connection (v5: DISCONNECT 0x98), publishing its will only
    /// `with_will`; whether it was connected.
    #[pyo3(signature = (client_id, with_will=false))]
    fn disconnect(&self, py: Python<'_>, client_id: String, with_will: bool) -> PyResult<bool> {
        self.with_running(py, move |b| b.disconnect(&client_id, with_will))
    }

    /// Starts a bridge from a dict of `[[bridge]]` keys on the running broker.
    fn add_bridge(&self, py: Python<'_>, bridge: &Bound<'_, PyDict>) -> PyResult<()> {
        let cfg = crate::settings::bridge_config(bridge)?;
        self.with_running(py, move |b| b.add_bridge(cfg))
    }

    /// Stops bridge `name`; whether it existed.
    fn remove_bridge(&self, py: Python<'_>, name: String) -> PyResult<bool> {
        self.with_running(py, move |b| b.remove_bridge(&name))
    }

    /// Every bridge's state as a dict (`name`, `connected`, `queued`, `sent`, `received`,
    /// `dropped`); empty while stopped.
    fn bridges<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let states = release_gil(py, || {
            self.slot()
                .as_ref()
                .map(Broker::bridges)
                .unwrap_or_default()
        });
        states
            .into_iter()
            .map(|s| {
                let d = PyDict::new(py);
                d.set_item("name", s.name)?;
                d.set_item("connected", s.connected)?;
                d.set_item("queued", s.queued)?;
                d.set_item("sent", s.sent)?;
                d.set_item("received", s.received)?;
                d.set_item("dropped", s.dropped)?;
                Ok(d)
            })
            .collect()
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

    /// This node's view of its cluster as a dict (see `cluster_status.rs`); None while stopped or
    /// without `[cluster]`.
    fn cluster_status<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let status = release_gil(py, || self.slot().as_ref().and_then(Broker::cluster_status));
        status
            .map(|s| crate::cluster_status::status_dict(py, s))
            .transpose()
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
