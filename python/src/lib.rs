//! `uringmq._uringmq`: the pyo3 glue over `uringmq`'s embedding API. No broker logic lives here;
//! the Python package `uringmq` wraps these types with context managers, iteration, asyncio and
//! a registry that stops every broker at interpreter exit.
#![warn(missing_docs)]

mod broker;
mod cluster_status;
mod errors;
mod exit;
mod hooks;
mod message;
mod settings;
mod stats;
mod subscription;

use pyo3::prelude::*;

/// The broker binary's allocator (mimalloc, each object in its own size class, the long-lived
/// heap; `uringmq::Allocator`), so a broker embedded in Python holds memory as the binary does.
/// Python's own objects keep Python's allocator.
#[global_allocator]
static GLOBAL: uringmq::Allocator = uringmq::Allocator;

/// Installs the broker's `tracing` log output with a filter such as `"info"` or
/// `"uringmq=debug"`, as `"text"` lines or `"json"` objects. Only the first call takes effect.
#[pyfunction]
#[pyo3(signature = (filter, format="text"))]
fn init_logging(filter: &str, format: &str) -> PyResult<()> {
    let format = match format {
        "text" => uringmq::LogFormat::Text,
        "json" => uringmq::LogFormat::Json,
        other => {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "invalid log format {other:?}: \"text\" or \"json\""
            )))
        }
    };
    uringmq::init_logging(filter, format);
    Ok(())
}

/// `uringmq passwd ARGS...`: the binary's own subcommand (same clap definition); returns the
/// exit status. Runs with the GIL released: it may prompt on the terminal.
#[pyfunction]
fn passwd(py: Python<'_>, args: Vec<String>) -> u8 {
    exit::release_gil(py, || uringmq::cli::passwd_main(args))
}

/// `uringmq cluster ARGS...`: the binary's own subcommand (same clap definition); returns the
/// exit status. Runs with the GIL released: it waits on etcd and the nodes.
#[pyfunction]
fn cluster(py: Python<'_>, args: Vec<String>) -> u8 {
    exit::release_gil(py, || uringmq::cli::cluster_main(args))
}

/// The native module.
#[pymodule]
fn _uringmq(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<broker::NativeBroker>()?;
    m.add_class::<subscription::NativeSubscription>()?;
    m.add_class::<message::Message>()?;
    m.add_class::<hooks::ClientInfo>()?;
    m.add_class::<hooks::Client>()?;
    m.add_class::<stats::Stats>()?;
    m.add(
        "SubscriptionClosed",
        m.py().get_type::<errors::SubscriptionClosed>(),
    )?;
    m.add_function(wrap_pyfunction!(init_logging, m)?)?;
    m.add_function(wrap_pyfunction!(passwd, m)?)?;
    m.add_function(wrap_pyfunction!(cluster, m)?)?;
    m.add_function(wrap_pyfunction!(exit::interpreter_exiting, m)?)?;
    m.add_function(wrap_pyfunction!(exit::wait_for_hooks, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
