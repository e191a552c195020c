//! Interpreter exit: Python threads that come back from a GIL-released wait after exit began park
//! for good instead of taking the GIL again.
//!
//! A daemon thread that takes the GIL while the interpreter finalises is ended by CPython with
//! `pthread_exit`, whose forced unwind through pyo3's panic trap aborts the process ("FATAL:
//! exception not rethrown"). Threads blocked in `Subscription.get()` wake exactly then: the exit
//! handler stops every broker, which closes their subscriptions. So the exit handler calls
//! `interpreter_exiting()` first, and from then on every thread but the exiting one that returns
//! from `release_gil` parks instead of returning to Python. Daemon threads are abandoned at exit
//! anyway; non-daemon threads were joined before exit handlers run.

use pyo3::prelude::*;
use std::sync::OnceLock;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// The thread running the interpreter's exit handlers, once they started.
static EXITING_THREAD: OnceLock<ThreadId> = OnceLock::new();

/// Marks the start of interpreter exit (called by `uringmq.broker`'s `atexit` handler, on the
/// thread that runs it). Only the first call counts.
#[pyfunction]
pub fn interpreter_exiting() {
    let _ = EXITING_THREAD.set(std::thread::current().id());
}

/// `py.detach(f)`, except that once the interpreter is exiting a thread other than the exiting one
/// never takes the GIL again (see the module docs).
pub fn release_gil<T, F>(py: Python<'_>, f: F) -> T
where
    F: Send + FnOnce() -> T,
    T: Send,
{
    py.detach(|| {
        let result = f();
        if EXITING_THREAD
            .get()
            .is_some_and(|id| *id != std::thread::current().id())
        {
            loop {
                std::thread::park();
            }
        }
        result
    })
}

/// Waits, with the GIL released, until no hook thread is inside a Python callback, for at most
/// `timeout` seconds; true if none is. The same forced unwind hits a hook thread that is still
/// in a callback (e.g. in `time.sleep`) when the interpreter finalises, and `stop()` does not
/// wait for such threads (a hook past `hook_timeout_ms` is abandoned), so the exit handler
/// gives them this bounded chance to return first.
#[pyfunction]
pub fn wait_for_hooks(py: Python<'_>, timeout: f64) -> bool {
    let deadline = Instant::now() + Duration::from_secs_f64(timeout.clamp(0.0, 60.0));
    py.detach(|| {
        while crate::hooks::callbacks_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        !crate::hooks::callbacks_running()
    })
}
