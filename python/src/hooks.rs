//! Python callables as the broker's authentication and authorisation hooks.
//!
//! The broker calls a hook whose `is_blocking()` is true on a hook thread, never on a core, so a
//! callback waiting for the GIL stalls no connection. The thread attaches with `try_attach`: during
//! interpreter shutdown it cannot, and the hook then denies. A callback that raises denies too
//! (fail closed) and logs the traceback on the `uringmq` logger. A callback that outlives
//! `hook_timeout_ms` denies too (the broker stops waiting and logs a warning); its thread is
//! left to finish and never joined, so `Broker.stop()` returns whatever the callback does.
//! `on_disconnect` is told about every closed connection, on a hook thread too, under the same
//! bounds, and nobody waits for it.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::UNIX_EPOCH;
use uringmq::{ClientSummary, DisconnectHook};
use uringmq_auth::{
    Access, AuthDecision, Authenticator, Authorizer, ClientInfo as RustClientInfo, DenyReason,
};

/// Who is connecting or accessing a topic, as passed to `authenticate` and `authorize` hooks.
#[pyclass(module = "uringmq._uringmq", name = "ClientInfo", frozen, get_all)]
pub struct ClientInfo {
    /// Client identifier (the assigned one if the client sent none).
    client_id: String,
    /// User name from CONNECT, if any.
    username: Option<String>,
    /// `(host, port)` of the remote end; None for in-process clients.
    peer: Option<(String, u16)>,
    /// Name of the listener the client came through.
    listener: String,
    /// Common Name of a verified TLS client certificate, if any.
    cert_common_name: Option<String>,
}

#[pymethods]
impl ClientInfo {
    fn __repr__(&self) -> String {
        format!(
            "ClientInfo(client_id={:?}, username={:?}, peer={:?}, listener={:?})",
            self.client_id, self.username, self.peer, self.listener
        )
    }
}

impl From<&RustClientInfo<'_>> for ClientInfo {
    fn from(c: &RustClientInfo<'_>) -> Self {
        ClientInfo {
            client_id: c.client_id.to_owned(),
            username: c.username.map(str::to_owned),
            peer: c.peer.map(|a| (a.ip().to_string(), a.port())),
            listener: c.listener.to_owned(),
            cert_common_name: c.cert_common_name.map(str::to_owned),
        }
    }
}

/// Hook threads inside a Python callback now (see [`crate::exit::wait_for_hooks`]).
static IN_CALLBACK: AtomicUsize = AtomicUsize::new(0);

/// Whether some hook thread is inside a Python callback.
pub fn callbacks_running() -> bool {
    IN_CALLBACK.load(Ordering::Acquire) > 0
}

/// Counts one callback in progress for as long as it lives.
struct InCallback;

impl InCallback {
    fn enter() -> Self {
        IN_CALLBACK.fetch_add(1, Ordering::AcqRel);
        InCallback
    }
}

impl Drop for InCallback {
    fn drop(&mut self) {
        IN_CALLBACK.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `authenticate(client: ClientInfo, password: bytes | None) -> bool | str`.
pub struct PyAuthenticator(pub Py<PyAny>);

/// `authorize(client: ClientInfo, access: str, topic: str) -> bool`, `access` being `"publish"`
/// or `"subscribe"` (topic is then a filter). The broker never asks a blocking hook about
/// deliveries (`"receive"`): that would cost a GIL round trip per message on a core.
pub struct PyAuthorizer(pub Py<PyAny>);

impl Authenticator for PyAuthenticator {
    fn authenticate(&self, client: &RustClientInfo<'_>, password: Option<&[u8]>) -> AuthDecision {
        let _counted = InCallback::enter();
        // Interpreter gone (shutdown): nobody can decide, tell the client to come back later.
        Python::try_attach(|py| {
            let password = password.map(|p| PyBytes::new(py, p));
            match self
                .0
                .call1(py, (ClientInfo::from(client), password))
                .and_then(|v| decision(v.bind(py)))
            {
                Ok(d) => d,
                Err(e) => {
                    log_hook_error(py, "authenticate", &e);
                    // A broken hook is not a client that should retry: "not authorised".
                    AuthDecision::Deny(DenyReason::NotAuthorized)
                }
            }
        })
        .unwrap_or(AuthDecision::Deny(DenyReason::ServerUnavailable))
    }

    fn is_blocking(&self) -> bool {
        true
    }
}

/// True allows; False denies with "bad user name or password"; a string names the deny reason.
fn decision(v: &Bound<'_, PyAny>) -> PyResult<AuthDecision> {
    if let Ok(s) = v.cast::<PyString>() {
        let reason = match s.to_cow()?.as_ref() {
            "bad_credentials" => DenyReason::BadCredentials,
            "not_authorized" => DenyReason::NotAuthorized,
            "banned" => DenyReason::Banned,
            "bad_authentication_method" => DenyReason::BadAuthenticationMethod,
            "server_unavailable" => DenyReason::ServerUnavailable,
            other => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "authenticate returned unknown deny reason {other:?}"
                )))
            }
        };
        return Ok(AuthDecision::Deny(reason));
    }
    Ok(if v.is_truthy()? {
        AuthDecision::Allow
    } else {
        AuthDecision::Deny(DenyReason::BadCredentials)
    })
}

impl Authorizer for PyAuthorizer {
    fn authorize(&self, client: &RustClientInfo<'_>, access: Access, topic: &str) -> bool {
        let access = match access {
            Access::Publish => "publish",
            Access::Subscribe => "subscribe",
            Access::Receive => "receive",
        };
        let _counted = InCallback::enter();
        Python::try_attach(|py| {
            match self
                .0
                .call1(py, (ClientInfo::from(client), access, topic))
                .and_then(|v| v.bind(py).is_truthy())
            {
                Ok(allowed) => allowed,
                Err(e) => {
                    log_hook_error(py, "authorize", &e);
                    false
                }
            }
        })
        .unwrap_or(false)
    }

    fn is_blocking(&self) -> bool {
        true
    }
}

/// Logs the exception with its traceback on the `uringmq` logger (falls back to stderr).
pub fn log_hook_error(py: Python<'_>, hook: &str, err: &PyErr) {
    let logged = (|| -> PyResult<()> {
        let logger = py
            .import("logging")?
            .call_method1("getLogger", ("uringmq",))?;
        // The (type, value, traceback) triple, not the value alone: before Python 3.12 an
        // exception fetched from C carries its traceback beside it, not in `__traceback__`, so
        // `exc_info=value` logged no traceback there.
        let kwargs = PyDict::new(py);
        let exc_info = (err.get_type(py), err.value(py), err.traceback(py));
        kwargs.set_item("exc_info", exc_info)?;
        logger.call_method("error", ("%s hook raised", hook), Some(&kwargs))?;
        Ok(())
    })();
    if logged.is_err() {
        err.print(py);
    }
}

/// A connected client, as listed by `Broker.clients()` and passed to `on_disconnect`.
#[pyclass(module = "uringmq._uringmq", name = "Client", frozen, get_all)]
pub struct Client {
    /// Client identifier (the assigned one if the client sent none).
    client_id: String,
    /// User name from CONNECT, if any.
    username: Option<String>,
    /// Name of the listener the client came through.
    listener: String,
    /// `(host, port)` of the remote end.
    peer: Option<(String, u16)>,
    /// Protocol level: 3 (MQTT 3.1), 4 (3.1.1) or 5.
    protocol: u8,
    /// When CONNECT was accepted, in seconds since the epoch (like `time.time()`).
    connected_since: f64,
}

#[pymethods]
impl Client {
    fn __repr__(&self) -> String {
        format!(
            "Client(client_id={:?}, username={:?}, peer={:?}, listener={:?}, protocol={})",
            self.client_id, self.username, self.peer, self.listener, self.protocol
        )
    }
}

impl From<ClientSummary> for Client {
    fn from(c: ClientSummary) -> Self {
        Client {
            client_id: c.client_id,
            username: c.username,
            listener: c.listener,
            peer: c.peer.map(|a| (a.ip().to_string(), a.port())),
            protocol: c.protocol as u8,
            connected_since: c
                .connected_since
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        }
    }
}

/// `on_disconnect(client: Client, reason: str)` as the broker's disconnect hook. What it returns
/// is ignored; if it raises, the traceback goes to the `uringmq` logger.
pub fn disconnect_hook(f: Py<PyAny>) -> DisconnectHook {
    std::sync::Arc::new(move |client: ClientSummary, reason: &'static str| {
        // During interpreter shutdown nobody is left to tell.
        let _ = Python::try_attach(|py| {
            if let Err(e) = f.call1(py, (Client::from(client), reason)) {
                log_hook_error(py, "on_disconnect", &e);
            }
        });
    })
}
