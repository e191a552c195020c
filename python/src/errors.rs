//! Turns the broker's Rust errors into the Python exceptions a user expects: `ValueError` for a bad
//! setting (the message names the key), `OSError` with the real errno for a port in use, and one
//! exception of our own for a subscription whose broker went away.

use pyo3::create_exception;
use pyo3::exceptions::{
    PyException, PyOSError, PyPermissionError, PyRuntimeError, PyTimeoutError, PyValueError,
};
use pyo3::PyErr;
use uringmq::{ApiError, ConfigError, StartError};

create_exception!(
    _uringmq,
    SubscriptionClosed,
    PyException,
    "Raised when a subscription has no more messages and never will: it was closed, or its broker stopped."
);

/// A bad setting. `ConfigError`'s message always names the key; a file that cannot be read keeps
/// its errno so `FileNotFoundError` and friends work.
pub fn config_error(e: ConfigError) -> PyErr {
    match e {
        ConfigError::Io {
            ref path,
            ref source,
        } => os_error(source, &format!("{e}"), Some(path)),
        other => PyValueError::new_err(other.to_string()),
    }
}

/// Why `start()` failed.
pub fn start_error(e: StartError) -> PyErr {
    match e {
        StartError::Config(c) => config_error(c),
        StartError::Bind { ref source, .. } => os_error(source, &e.to_string(), None),
        StartError::Runtime(_) => PyRuntimeError::new_err(e.to_string()),
    }
}

/// Why an API call (`publish()`, `subscribe()`, `clients()`...) failed.
pub fn api_error(e: ApiError) -> PyErr {
    match e {
        ApiError::NotRunning => PyRuntimeError::new_err(e.to_string()),
        ApiError::InvalidTopic(_) | ApiError::InvalidOption(_) | ApiError::Session(_) => {
            PyValueError::new_err(e.to_string())
        }
        ApiError::Timeout => PyTimeoutError::new_err(e.to_string()),
        ApiError::NotAuthorized(_) => PyPermissionError::new_err(e.to_string()),
    }
}

/// `OSError(errno, message[, filename])`: Python picks the errno's subclass (`FileNotFoundError`
/// for ENOENT...), and `e.errno == errno.EADDRINUSE` works for a port conflict.
pub fn os_error(source: &std::io::Error, message: &str, path: Option<&std::path::Path>) -> PyErr {
    let errno = source.raw_os_error().unwrap_or(0);
    match path {
        Some(p) => PyOSError::new_err((errno, message.to_owned(), p.to_path_buf())),
        None => PyOSError::new_err((errno, message.to_owned())),
    }
}
