//! Hook threads: blocking authentication/authorisation checks (Python callbacks, slow password
//! hashes) run here, never on a core. A core sends a job and awaits a oneshot whose waker is
//! woken from the hook thread (monoio's `sync` feature).
//!
//! Everything is bounded, so that a flood of checks or a hook that never returns holds up
//! nothing else:
//! - one thread per CPU (at least two) and a bounded queue: a check that finds the queue full
//!   fails at once, and the caller denies;
//! - a deadline per check (`hook_timeout_ms`): the caller stops waiting at the deadline and
//!   denies ([`Wait`]); a check still queued then is dropped unrun; a thread still inside it is
//!   *stuck*: it stops counting as capacity and a replacement is started, up to
//!   [`MAX_STUCK`] stuck threads. Past that the pool shrinks, and with no thread left every
//!   check fails at once instead of queueing behind threads that may never come back;
//! - [`HookPool::shutdown`] joins only the threads that finish within a short bound; a thread
//!   stuck in a hook is detached, never waited for.

use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

type Job = Box<dyn FnOnce() + Send>;

/// Checks waiting for a thread, per thread: at a few milliseconds per password hash, a full
/// queue is seconds of work, past any sensible hook timeout.
const QUEUE_PER_THREAD: usize = 1024;

/// Threads stuck past their deadline that are replaced by new ones. A hook that hangs for
/// every client would otherwise make the pool grow without end.
pub(crate) const MAX_STUCK: usize = 64;

/// How long `shutdown` waits for threads that are not stuck to finish their current check.
const JOIN_GRACE: Duration = Duration::from_millis(500);

/// Where one check stands; the caller and the thread race on it with compare-and-swap.
const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;
/// The caller gave up before a thread took it: never run.
const ABANDONED: u8 = 3;
/// The caller gave up while a thread ran it: that thread is stuck.
const OVERDUE: u8 = 4;

struct Task {
    job: Job,
    state: Arc<AtomicU8>,
    deadline: Instant,
}

/// What the pool shares with its threads.
struct Inner {
    rx: Receiver<Task>,
    /// Threads that take checks (started and not stuck).
    healthy: AtomicUsize,
    /// Threads inside a check whose caller gave up.
    stuck: AtomicUsize,
    /// How many healthy threads the pool keeps.
    target: usize,
    stopping: AtomicBool,
    /// Never sent on; disconnected by `shutdown`.
    stop: Receiver<()>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    spawned: AtomicUsize,
}

/// The pool of hook threads.
pub(crate) struct HookPool {
    tx: Sender<Task>,
    stop: Mutex<Option<Sender<()>>>,
    inner: Arc<Inner>,
    /// The per-check deadline.
    timeout: Duration,
}

/// Why a check gave no answer (the caller denies in every case).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HookError {
    /// The queue was full, the pool stopped, or every thread is stuck.
    Busy,
    /// No answer before the deadline.
    TimedOut,
    /// The hook panicked, the check was dropped (its deadline passed in the queue), or the
    /// caller went away.
    Failed,
}

/// A check submitted to the pool: await [`Wait::answer`].
pub(crate) struct Wait<T> {
    rx: Option<futures_channel::oneshot::Receiver<T>>,
    state: Arc<AtomicU8>,
    deadline: Instant,
    inner: Arc<Inner>,
}

impl HookPool {
    /// Starts `threads` hook threads (0: none, for a broker with no blocking check) whose
    /// checks time out after `timeout`.
    pub(crate) fn new(threads: usize, timeout: Duration) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(threads.max(1) * QUEUE_PER_THREAD);
        let (stop_tx, stop) = crossbeam_channel::bounded(0);
        let inner = Arc::new(Inner {
            rx,
            stop,
            healthy: AtomicUsize::new(0),
            stuck: AtomicUsize::new(0),
            target: threads,
            stopping: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            spawned: AtomicUsize::new(0),
        });
        for _ in 0..threads {
            if spawn(&inner) {
                inner.healthy.fetch_add(1, Ordering::AcqRel);
            }
        }
        HookPool {
            tx,
            stop: Mutex::new(Some(stop_tx)),
            inner,
            timeout,
        }
    }

    /// The number of hook threads for this machine: one per CPU, at least two (one slow hook
    /// must not serialise every other check).
    pub(crate) fn threads_for_machine() -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .max(2)
    }

    /// Submits `f`; `Err(Busy)` at once when no thread can take it soon.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<Wait<T>, HookError> {
        if self.inner.stopping.load(Ordering::Acquire)
            || self.inner.healthy.load(Ordering::Acquire) == 0
        {
            return Err(HookError::Busy);
        }
        let (tx, rx) = futures_channel::oneshot::channel();
        let state = Arc::new(AtomicU8::new(QUEUED));
        let deadline = Instant::now() + self.timeout;
        let done = state.clone();
        let task = Task {
            job: Box::new(move || {
                let answer = f();
                // Marked done before the caller can see the answer, so it never takes this
                // thread for a stuck one.
                let on_time = done
                    .compare_exchange(RUNNING, DONE, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                if on_time {
                    let _ = tx.send(answer);
                }
            }),
            state: state.clone(),
            deadline,
        };
        match self.tx.try_send(task) {
            Ok(()) => Ok(Wait {
                rx: Some(rx),
                state,
                deadline,
                inner: self.inner.clone(),
            }),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(HookError::Busy),
        }
    }

    /// Runs `f` on a hook thread with nobody waiting for its result (the disconnect hook),
    /// under the same bounds as a check: dropped when the queue is full or the pool stopped
    /// (returns false), and a thread still inside it at the deadline counts as stuck. Called
    /// on a core: a small task of the core holds the deadline.
    pub(crate) fn notify(&self, f: impl FnOnce() + Send + 'static) -> bool {
        match self.run(f) {
            Ok(wait) => {
                monoio::spawn(async move {
                    let _ = wait.answer(|| false).await;
                });
                true
            }
            Err(_) => false,
        }
    }

    /// Stops taking checks, drops the queued ones (their callers deny), joins the threads that
    /// finish within [`JOIN_GRACE`] and detaches the others (stuck in a hook). Bounded in time
    /// whatever a hook does. Idempotent.
    pub(crate) fn shutdown(&self) {
        self.inner.stopping.store(true, Ordering::Release);
        lock(&self.stop).take();
        while self.inner.rx.try_recv().is_ok() {}
        let threads = std::mem::take(&mut *lock(&self.inner.threads));
        let deadline = Instant::now() + JOIN_GRACE;
        for t in threads {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if t.is_finished() {
                let _ = t.join();
            }
            // Else dropped: detached. It exits when its hook returns (it sees `stopping`).
        }
    }
}

impl Drop for HookPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts one hook thread; false if the OS refused.
fn spawn(inner: &Arc<Inner>) -> bool {
    let n = inner.spawned.fetch_add(1, Ordering::Relaxed);
    let worker = inner.clone();
    let started = std::thread::Builder::new()
        .name(format!("uringmq-hook-{n}"))
        .spawn(move || worker_loop(&worker));
    match started {
        Ok(handle) => {
            let mut threads = lock(&inner.threads);
            // Finished threads (replaced after being stuck) are reaped here, so the list
            // stays as long as the live threads.
            threads.retain(|t| !t.is_finished());
            threads.push(handle);
            true
        }
        Err(e) => {
            tracing::warn!("cannot start a hook thread: {e}");
            false
        }
    }
}

fn worker_loop(inner: &Inner) {
    while !inner.stopping.load(Ordering::Acquire) {
        let task = crossbeam_channel::select! {
            recv(inner.rx) -> task => task,
            // `shutdown` drops the sender: every idle thread wakes and exits.
            recv(inner.stop) -> _ => return,
        };
        let Ok(task) = task else {
            return;
        };
        if Instant::now() >= task.deadline
            || task
                .state
                .compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            // The caller gave up already: dropping the job cancels its oneshot.
            continue;
        }
        // A panicking hook must not kill the thread: the waiting core sees a dropped
        // oneshot and refuses the request.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(task.job));
        let finished =
            task.state
                .compare_exchange(RUNNING, DONE, Ordering::AcqRel, Ordering::Acquire);
        if finished == Err(OVERDUE) && !rejoin(inner) {
            // This thread was stuck and a replacement took its place.
            return;
        }
    }
}

/// A stuck thread got out of its hook: it takes checks again if the pool is short of healthy
/// threads (none was started for it), else it exits.
fn rejoin(inner: &Inner) -> bool {
    inner.stuck.fetch_sub(1, Ordering::AcqRel);
    inner
        .healthy
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
            (h < inner.target).then_some(h + 1)
        })
        .is_ok()
}

impl<T> Wait<T> {
    /// The answer, or why there is none. Ends at the deadline, or early when `stop()` says
    /// the caller is going away (checked every 50 ms), so nothing waits on a hook forever.
    pub(crate) async fn answer(mut self, stop: impl Fn() -> bool) -> Result<T, HookError> {
        let Some(mut rx) = self.rx.take() else {
            return Err(HookError::Failed);
        };
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(HookError::TimedOut);
            }
            if stop() {
                return Err(HookError::Failed);
            }
            monoio::select! {
                r = &mut rx => return r.map_err(|_| HookError::Failed),
                _ = monoio::time::sleep(left.min(Duration::from_millis(50))) => {}
            }
        }
    }
}

impl<T> Drop for Wait<T> {
    /// The caller gave up (timed out, or its task ended): a queued check is not run; a thread
    /// inside it is stuck and is replaced.
    fn drop(&mut self) {
        let give_up = |from, to| {
            self.state
                .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        };
        if give_up(QUEUED, ABANDONED) || !give_up(RUNNING, OVERDUE) {
            return;
        }
        let inner = &self.inner;
        let stuck = inner.stuck.fetch_add(1, Ordering::AcqRel) + 1;
        inner.healthy.fetch_sub(1, Ordering::AcqRel);
        if stuck <= MAX_STUCK && !inner.stopping.load(Ordering::Acquire) && spawn(inner) {
            inner.healthy.fetch_add(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn answers_and_times_out_and_replaces_a_stuck_thread() {
        // Checks get a deadline no overloaded machine misses; the one that must time out
        // gets a short one once a thread runs it (taken after its deadline, it would be
        // dropped unrun instead of making the thread stuck).
        let pool = HookPool::new(1, Duration::from_secs(60));
        let ok = block_on(pool.run(|| 7).unwrap().answer(|| false));
        assert_eq!(ok, Ok(7));

        let (release, hold) = crossbeam_channel::bounded::<()>(0);
        let mut stuck = pool.run(move || hold.recv().is_ok()).unwrap();
        until_running(&stuck);
        stuck.deadline = Instant::now() + Duration::from_millis(100);
        let started = Instant::now();
        assert_eq!(block_on(stuck.answer(|| false)), Err(HookError::TimedOut));
        assert!(started.elapsed() < Duration::from_secs(5));
        // The stuck thread no longer counts; a replacement answers.
        assert_eq!(pool.inner.stuck.load(Ordering::Acquire), 1);
        assert_eq!(block_on(pool.run(|| 8).unwrap().answer(|| false)), Ok(8));

        // Out of the hook, it exits (the pool has its one healthy thread).
        drop(release);
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool.inner.stuck.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(pool.inner.stuck.load(Ordering::Acquire), 0);
        assert_eq!(pool.inner.healthy.load(Ordering::Acquire), 1);
    }

    #[test]
    fn a_full_pool_fails_fast_and_shutdown_detaches_stuck_threads() {
        let pool = HookPool::new(1, Duration::from_secs(60));
        let (_release, hold) = crossbeam_channel::bounded::<()>(0);
        // One running check that never ends, then a full queue.
        let first = pool.run(move || hold.recv().is_ok()).unwrap();
        while first.state.load(Ordering::Acquire) != RUNNING {
            std::thread::yield_now();
        }
        let queued: Vec<_> = (0..QUEUE_PER_THREAD)
            .map(|_| pool.run(|| true).expect("room in the queue"))
            .collect();
        assert_eq!(pool.run(|| true).err(), Some(HookError::Busy));
        // The caller going away ends the wait at once.
        assert_eq!(block_on(first.answer(|| true)), Err(HookError::Failed));
        drop(queued);

        let started = Instant::now();
        pool.shutdown();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "shutdown is bounded"
        );
        assert_eq!(pool.run(|| true).err(), Some(HookError::Busy));
    }

    /// Waits (bounded) until a thread runs the check of `wait`.
    fn until_running<T>(wait: &Wait<T>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while wait.state.load(Ordering::Acquire) != RUNNING {
            assert!(Instant::now() < deadline, "no hook thread took the check");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn with_every_thread_stuck_checks_fail_at_once_until_one_comes_back() {
        // A deadline no scheduling delay reaches: a check a new thread took late would be
        // dropped unrun instead of making that thread stuck. The caller gives up by dropping
        // its wait, as `answer` does at the deadline.
        let pool = HookPool::new(1, Duration::from_secs(3600));
        let (release, hold) = crossbeam_channel::bounded::<()>(0);
        for _ in 0..=MAX_STUCK {
            let hold = hold.clone();
            let wait = pool.run(move || hold.recv().is_ok()).unwrap();
            until_running(&wait);
            drop(wait);
        }
        // MAX_STUCK replacements were started; the one more stuck thread was not replaced.
        assert_eq!(pool.inner.stuck.load(Ordering::Acquire), MAX_STUCK + 1);
        assert_eq!(
            pool.run(|| true).err(),
            Some(HookError::Busy),
            "no queueing"
        );
        // The hooks return: one thread takes checks again, the others exit.
        drop(release);
        // A returning thread leaves `stuck` before it rejoins `healthy`: wait for both.
        let settled = || {
            let stuck = pool.inner.stuck.load(Ordering::Acquire);
            (stuck, pool.inner.healthy.load(Ordering::Acquire))
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while settled() != (0, 1) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(settled(), (0, 1), "(stuck, healthy)");
        let answer = pool.run(|| 5).unwrap();
        assert_eq!(block_on(answer.answer(|| false)), Ok(5));
    }

    #[test]
    fn a_panicking_hook_fails_its_check_only() {
        let pool = HookPool::new(1, Duration::from_secs(5));
        let r = block_on(
            pool.run(|| -> u8 { panic!("hook") })
                .unwrap()
                .answer(|| false),
        );
        assert_eq!(r, Err(HookError::Failed));
        assert_eq!(block_on(pool.run(|| 1).unwrap().answer(|| false)), Ok(1));
    }
}
