//! Hook threads: blocking authentication/authorisation hooks (Python callbacks, slow password
//! hashes) run here, never on a core. A core sends a job and awaits a oneshot whose waker is
//! woken from the hook thread (monoio's `sync` feature).

use std::sync::Mutex;
use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() + Send>;

/// A small pool of hook threads.
pub(crate) struct HookPool {
    tx: Mutex<Option<crossbeam_channel::Sender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl HookPool {
    /// Starts `n` hook threads.
    pub(crate) fn new(n: usize) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let threads = (0..n)
            .map(|i| {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("uringmq-hook-{i}"))
                    .spawn(move || {
                        while let Ok(job) = rx.recv() {
                            // A panicking hook must not kill the pool: the waiting core sees a
                            // dropped oneshot and refuses the request.
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                        }
                    })
                    .expect("spawn hook thread")
            })
            .collect();
        HookPool {
            tx: Mutex::new(Some(tx)),
            threads: Mutex::new(threads),
        }
    }

    /// Runs `f` on a hook thread; the receiver yields its result (or is cancelled if the pool
    /// stopped or `f` panicked).
    pub(crate) fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> futures_channel::oneshot::Receiver<T> {
        let (tx, rx) = futures_channel::oneshot::channel();
        let jobs = self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(jobs) = jobs {
            let _ = jobs.send(Box::new(move || {
                let _ = tx.send(f());
            }));
        }
        rx
    }

    /// Runs `f` on a hook thread with nobody waiting for it (the disconnect hook): dropped if
    /// the pool is stopped.
    pub(crate) fn notify(&self, f: impl FnOnce() + Send + 'static) {
        let jobs = self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(jobs) = jobs {
            let _ = jobs.send(Box::new(f));
        }
    }

    /// Stops and joins the threads.
    pub(crate) fn shutdown(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for HookPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}
