//! Broker counters as a Python object with attributes (`stats().messages_in`) and `as_dict()`.

use pyo3::exceptions::PyAttributeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Broker counters, summed over cores, at the moment `stats()` was called.
#[pyclass(module = "uringmq._uringmq", name = "Stats", frozen)]
pub struct Stats(pub uringmq::Stats);

/// Names each counter once: the exhaustive pattern stops compiling when the broker adds one, so
/// the Python view cannot silently miss a counter.
macro_rules! counters {
    ($stats:expr; $($name:ident),* $(,)?) => {{
        let uringmq::Stats { $($name),* } = $stats;
        [$((stringify!($name), *$name)),*]
    }};
}

impl Stats {
    fn fields(&self) -> [(&'static str, u64); 33] {
        counters!(&self.0;
            connections, sessions, subscriptions, retained, messages_in, messages_out, bytes_in,
            bytes_out, dropped_qos0, dropped_queue_full, expired, protocol_errors, auth_failures,
            auth_busy, hook_timeouts, hibernating, wills_denied, publish_rate_limited,
            connections_rate_limited, packets_in, packets_out, publish_bytes_in,
            publish_bytes_out, connects, sockets, sessions_expired, shared_subscriptions,
            queued_messages, queued_bytes, inflight_messages, retained_bytes, accept_failures,
            detach_failures)
    }
}

#[pymethods]
impl Stats {
    fn __getattr__(&self, name: &str) -> PyResult<u64> {
        self.fields()
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
            .ok_or_else(|| PyAttributeError::new_err(format!("Stats has no counter {name:?}")))
    }

    fn __dir__(&self) -> Vec<&'static str> {
        self.fields().iter().map(|(k, _)| *k).collect()
    }

    /// The counters as a dict.
    fn as_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in self.fields() {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    fn __repr__(&self) -> String {
        let body: Vec<String> = self
            .fields()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("Stats({})", body.join(", "))
    }
}
