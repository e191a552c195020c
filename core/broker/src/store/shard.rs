//! [`ShardStore`]: one shard's log, owned by the shard (no lock shared with other shards).
//!
//! `push` only encodes the record into the turn's buffer and applies it to the live state;
//! the store's own task ([`ShardStore::run`], spawned once on the shard's runtime) wakes after
//! the tasks already scheduled in this event-loop turn, writes everything pushed since its
//! last write in one write, and syncs by policy: group commit, so the cost of a sync is shared
//! by every record of the turn and falls per record as load rises. While a write or sync is in
//! flight the shard goes on pushing into a fresh buffer; those records go out together next.

use super::format::{self, Clocks, HEADER_LEN, MAGIC, VERSION};
use super::io::Io;
use super::snapshot::Snapshot;
use super::state::State;
use super::{Record, StoreConfig, StoreError, SyncPolicy, Ticket};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fs::File;
use std::future::poll_fn;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How long a failing store waits before it tries again to write a snapshot (which also
/// tells it whether space came back when nothing else is written).
const RETRY: Duration = Duration::from_secs(1);
/// Failed ticket ranges remembered for `wait_durable` (older failures read as durable).
const FAILED_KEPT: usize = 256;

/// Counters of one shard's log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Records pushed.
    pub records: u64,
    /// Bytes written (records and snapshots).
    pub bytes: u64,
    /// Write system calls / operations (one per commit with data).
    pub writes: u64,
    /// Syncs (`fdatasync`).
    pub syncs: u64,
    /// Failed writes or syncs.
    pub write_errors: u64,
    /// Snapshots completed.
    pub snapshots: u64,
    /// Bytes in the log's segments now.
    pub log_bytes: u64,
}

/// Per shard, the highest stamp known durable: readable from any thread, so a shard can
/// learn that another shard's record is on disk (failed records are not told apart here;
/// their own shard's `wait_durable` reports them).
#[derive(Debug)]
pub struct DurableMarks(Box<[AtomicU64]>);

impl DurableMarks {
    pub(crate) fn new(shards: usize) -> Self {
        DurableMarks((0..shards).map(|_| AtomicU64::new(0)).collect())
    }

    /// Whether the record of `t` is durable (per the sync policy).
    pub fn is_durable(&self, t: Ticket) -> bool {
        self.0
            .get(usize::from(t.shard))
            .is_some_and(|m| m.load(Ordering::Acquire) >= t.stamp)
    }

    fn set(&self, shard: u16, stamp: u64) {
        if let Some(m) = self.0.get(usize::from(shard)) {
            m.fetch_max(stamp, Ordering::Release);
        }
    }
}

/// What `Store::open` hands a shard: its log, already holding its recovered state.
pub(crate) struct Opened {
    pub shard: u16,
    pub dir: PathBuf,
    pub cfg: StoreConfig,
    pub clock: Arc<AtomicU64>,
    pub marks: Arc<DurableMarks>,
    pub state: State,
    /// The open segment (written up to `seg_len`) and its number.
    pub seg: u64,
    pub seg_len: u64,
    pub file: File,
    /// Size of the recovered image written into it.
    pub snap_bytes: u64,
}

/// One shard's durable log. `Send`, so it is made before the shard's thread starts;
/// on the shard it lives in an `Rc` shared by the shard and the task of [`ShardStore::run`].
pub struct ShardStore {
    shard: u16,
    dir: PathBuf,
    cfg: StoreConfig,
    clock: Arc<AtomicU64>,
    marks: Arc<DurableMarks>,
    st: RefCell<Inner>,
    /// Set by `push` (and `close`), taken by the task.
    work: Cell<bool>,
    task: RefCell<Option<Waker>>,
    waiters: RefCell<Vec<Waker>>,
    closing: Cell<bool>,
    running: Cell<bool>,
    /// The directory's lock, shared by the shards' stores: each lets go of it in `close`,
    /// so the directory is free once every store closed, even if something (a task of a
    /// runtime that ended) still holds the store itself.
    lock: RefCell<Option<Arc<File>>>,
}

struct Inner {
    buf: Vec<u8>,
    spare: Vec<u8>,
    /// Stamps of the records in `buf` (first, last).
    pending: Option<(u64, u64)>,
    last_pushed: u64,
    written: u64,
    durable: u64,
    unsynced: bool,
    /// A new segment exists whose directory entry is not synced yet.
    dir_unsynced: bool,
    failed: VecDeque<(u64, u64, StoreError)>,
    failing: bool,
    last_failure: Option<Instant>,
    logged_failure: Option<Instant>,
    state: State,
    seg: u64,
    seg_len: u64,
    /// A handle on the open segment, to cut a failed write's partial bytes off.
    seg_file: Option<File>,
    /// (number, bytes) of every segment of the log, the open one last.
    segs: Vec<(u64, u64)>,
    snap: Option<Snapshot>,
    need_snapshot: bool,
    snap_bytes: u64,
    last_sync: Instant,
    clocks: Clocks,
    stats: StoreStats,
}

/// One commit's work, taken from `Inner` before the I/O.
struct Plan {
    buf: Vec<u8>,
    pos: u64,
    range: Option<(u64, u64)>,
    new_file: Option<File>,
    snapshot_end: Option<u64>,
}

pub(crate) fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("seg-{n:016}.log"))
}

pub(crate) fn segment_header() -> [u8; HEADER_LEN] {
    let mut h = [0; HEADER_LEN];
    h[..MAGIC.len()].copy_from_slice(MAGIC);
    h[MAGIC.len()] = VERSION;
    h
}

impl ShardStore {
    pub(crate) fn new(o: Opened, lock: Arc<File>) -> Self {
        let seg_file = Some(o.file);
        let inner = Inner {
            buf: Vec::new(),
            spare: Vec::new(),
            pending: None,
            last_pushed: 0,
            written: 0,
            durable: 0,
            unsynced: false,
            dir_unsynced: false,
            failed: VecDeque::new(),
            failing: false,
            last_failure: None,
            logged_failure: None,
            state: o.state,
            seg: o.seg,
            seg_len: o.seg_len,
            seg_file,
            segs: vec![(o.seg, o.seg_len)],
            snap: None,
            need_snapshot: false,
            snap_bytes: o.snap_bytes,
            last_sync: Instant::now(),
            clocks: Clocks::now(),
            stats: StoreStats {
                log_bytes: o.seg_len,
                ..StoreStats::default()
            },
        };
        ShardStore {
            shard: o.shard,
            dir: o.dir,
            cfg: o.cfg,
            clock: o.clock,
            marks: o.marks,
            st: RefCell::new(inner),
            work: Cell::new(false),
            task: RefCell::new(None),
            waiters: RefCell::new(Vec::new()),
            closing: Cell::new(false),
            running: Cell::new(false),
            lock: RefCell::new(Some(lock)),
        }
    }

    /// This store's shard.
    pub fn shard(&self) -> u16 {
        self.shard
    }

    /// Buffers one record (no I/O) and returns its ticket. For `Record::Queued` with id 0,
    /// the new message's id is `ticket.stamp`.
    pub fn push(&self, mut rec: Record) -> Ticket {
        let stamp = self.clock.fetch_add(1, Ordering::Relaxed);
        if let Record::Queued { msg, .. } = &mut rec {
            if msg.id == 0 {
                msg.id = stamp;
            }
        }
        {
            let mut st = self.st.borrow_mut();
            let st = &mut *st;
            format::encode(&mut st.buf, stamp, &rec, &st.clocks);
            st.pending = Some((st.pending.map_or(stamp, |p| p.0), stamp));
            st.last_pushed = stamp;
            st.stats.records += 1;
            st.state.apply(stamp, rec);
        }
        self.wake_task();
        Ticket {
            shard: self.shard,
            stamp,
        }
    }

    /// The ticket of the last record pushed (stamp 0 when none was): once it is durable, so
    /// is everything pushed before it.
    pub fn position(&self) -> Ticket {
        Ticket {
            shard: self.shard,
            stamp: self.st.borrow().last_pushed,
        }
    }

    /// Whether `t`'s record is durable (per the sync policy).
    pub fn is_durable(&self, t: Ticket) -> bool {
        self.st.borrow().durable >= t.stamp
    }

    /// Waits until `t`'s record is durable, or its write or sync failed.
    pub async fn wait_durable(&self, t: Ticket) -> Result<(), StoreError> {
        poll_fn(|cx| {
            let st = self.st.borrow();
            if let Some((_, _, e)) = st
                .failed
                .iter()
                .find(|(lo, hi, _)| (*lo..=*hi).contains(&t.stamp))
            {
                return Poll::Ready(Err(e.clone()));
            }
            if st.durable >= t.stamp {
                return Poll::Ready(Ok(()));
            }
            if self.closing.get() && !self.running.get() {
                return Poll::Ready(Err(StoreError::Closed));
            }
            self.waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// The marks every shard's store updates (share them with other shards).
    pub fn marks(&self) -> Arc<DurableMarks> {
        self.marks.clone()
    }

    /// True from a failed write or sync (disk full, I/O error) until a write succeeds: refuse
    /// new persistent state meanwhile.
    pub fn failing(&self) -> bool {
        self.st.borrow().failing
    }

    /// The counters.
    pub fn stats(&self) -> StoreStats {
        self.st.borrow().stats
    }

    /// Writes what is buffered, syncs (unless the policy is `Never`) and ends the task of
    /// [`ShardStore::run`]; returns once it has (at once when it does not run), and lets go
    /// of the directory's lock.
    pub async fn close(&self) {
        self.closing.set(true);
        self.wake_task();
        poll_fn(|cx| {
            if !self.running.get() {
                return Poll::Ready(());
            }
            self.waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await;
        self.lock.borrow_mut().take();
    }

    fn wake_task(&self) {
        self.work.set(true);
        if let Some(w) = self.task.borrow_mut().take() {
            w.wake();
        }
    }

    fn wake_waiters(&self) {
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// The store's task: spawn it once on the shard's runtime (`monoio::spawn(store.run())`).
    /// It commits once per event-loop turn in which records were pushed and ends after
    /// `close`.
    pub fn run(self: Rc<Self>) -> impl std::future::Future<Output = ()> {
        // Running from the spawn on: a `close` before the task's first poll waits for it.
        self.running.set(true);
        self.run_loop()
    }

    async fn run_loop(self: Rc<Self>) {
        let io = {
            let st = self.st.borrow();
            let file = st.seg_file.as_ref().map(File::try_clone);
            let dir = File::open(&self.dir);
            match (file, dir) {
                (Some(Ok(f)), Ok(d)) => Io::start(usize::from(self.shard), f, d),
                (Some(Err(e)), _) | (_, Err(e)) => Err(e),
                (None, _) => Err(std::io::Error::other("no open segment")),
            }
        };
        let mut io = match io {
            Ok(io) => io,
            Err(e) => {
                warn!(shard = self.shard, "store: cannot start its writer: {e}");
                self.st.borrow_mut().failing = true;
                self.running.set(false);
                self.wake_waiters();
                return;
            }
        };
        loop {
            self.wait_work().await;
            let closing = self.closing.get();
            self.commit(&mut io).await;
            if closing && self.idle() {
                break;
            }
        }
        self.running.set(false);
        self.wake_waiters();
    }

    /// Nothing left to write or sync.
    fn idle(&self) -> bool {
        let st = self.st.borrow();
        st.pending.is_none() && (!st.unsynced || self.cfg.sync == SyncPolicy::Never || st.failing)
    }

    /// Waits for pushed records, a close, an interval sync that falls due, or a retry.
    async fn wait_work(&self) {
        let wait = poll_fn(|cx| {
            if self.work.replace(false) {
                return Poll::Ready(());
            }
            *self.task.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        });
        match self.deadline() {
            Some(d) => {
                let _ =
                    monoio::time::timeout(d.saturating_duration_since(Instant::now()), wait).await;
            }
            None => wait.await,
        }
    }

    /// When the task must run even if nothing is pushed.
    fn deadline(&self) -> Option<Instant> {
        let st = self.st.borrow();
        let sync = match self.cfg.sync {
            SyncPolicy::Interval(d) if st.unsynced => Some(st.last_sync + d),
            _ => None,
        };
        let retry = (st.failing && st.need_snapshot)
            .then(|| st.last_failure.map(|t| t + RETRY))
            .flatten();
        match (sync, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// One commit: write the turn's records (and a snapshot chunk), then sync by policy.
    async fn commit(&self, io: &mut Io) {
        let plan = self.plan();
        if let Some(file) = plan.new_file {
            if let Err(e) = io.switch(file) {
                self.failed_io(plan.range, &e);
                return;
            }
        }
        if !plan.buf.is_empty() {
            let (res, buf) = match self.injected_fault() {
                Some(e) => (Err(e), plan.buf),
                None => io.write(plan.buf, plan.pos).await,
            };
            if let Err(e) = res {
                self.failed_io(plan.range, &e);
                self.st.borrow_mut().spare = buf;
                return;
            }
            self.written(buf, plan.range);
        }
        if self.sync_due(plan.snapshot_end.is_some()) {
            self.sync(io).await;
        }
        if let Some(first) = plan.snapshot_end {
            self.snapshot_done(io, first);
        }
        let st = self.st.borrow();
        if st.snap.is_some() || (st.need_snapshot && !st.failing) {
            // A snapshot goes on (or starts) in the next commit even if nothing is pushed.
            self.work.set(true);
        }
    }

    fn injected_fault(&self) -> Option<std::io::Error> {
        let f = self.cfg.fail_writes.as_ref()?;
        f.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .ok()
            .map(|_| std::io::Error::from_raw_os_error(libc::ENOSPC))
    }

    /// Takes the turn's buffer, starts or continues a snapshot.
    fn plan(&self) -> Plan {
        let mut st = self.st.borrow_mut();
        let st = &mut *st;
        st.clocks = Clocks::now();
        let mut new_file = None;
        if st.snap.is_none() && self.snapshot_due(st) {
            match self.start_snapshot(st) {
                Ok(f) => new_file = f,
                Err(e) => st.failure(&e, None, self.shard),
            }
        }
        let mut buf = std::mem::take(&mut st.spare);
        buf.clear();
        if st.seg_len == 0 {
            buf.extend_from_slice(&segment_header());
        }
        buf.extend_from_slice(&st.buf);
        st.buf.clear();
        let range = st.pending.take();
        let snapshot_end = match st.snap.as_mut() {
            Some(s) => s.step(&st.state, &mut buf, &self.cfg, &self.clock, &st.clocks),
            None => None,
        };
        Plan {
            buf,
            pos: st.seg_len,
            range,
            new_file,
            snapshot_end,
        }
    }

    fn snapshot_due(&self, st: &Inner) -> bool {
        if st.failing {
            return st.need_snapshot && st.last_failure.is_none_or(|t| t.elapsed() >= RETRY);
        }
        let limit = self.cfg.compact_min_bytes.max(st.snap_bytes * 2);
        st.need_snapshot || st.stats.log_bytes > limit
    }

    /// Starts a snapshot in a new segment (or the open one when it holds nothing yet).
    fn start_snapshot(&self, st: &mut Inner) -> std::io::Result<Option<File>> {
        let mut new_file = None;
        if st.seg_len > HEADER_LEN as u64 {
            let n = st.seg + 1;
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(segment_path(&self.dir, n))?;
            st.seg_file = f.try_clone().ok();
            st.seg = n;
            st.seg_len = 0;
            st.segs.push((n, 0));
            st.dir_unsynced = true;
            new_file = Some(f);
        }
        st.need_snapshot = false;
        st.snap = Some(Snapshot::start(&st.state, st.seg));
        Ok(new_file)
    }

    fn written(&self, buf: Vec<u8>, range: Option<(u64, u64)>) {
        let mut st = self.st.borrow_mut();
        let n = buf.len() as u64;
        st.seg_len += n;
        if let Some(last) = st.segs.last_mut() {
            last.1 += n;
        }
        st.stats.log_bytes += n;
        st.stats.bytes += n;
        st.stats.writes += 1;
        st.unsynced = true;
        st.failing = false;
        if let Some((_, hi)) = range {
            st.written = hi;
        }
        st.spare = buf;
        if self.cfg.sync == SyncPolicy::Never {
            st.durable = st.written;
            let durable = st.durable;
            drop(st);
            self.marks.set(self.shard, durable);
            self.wake_waiters();
        }
    }

    fn sync_due(&self, snapshot_end: bool) -> bool {
        let st = self.st.borrow();
        if !st.unsynced || st.failing {
            return false;
        }
        snapshot_end
            || match self.cfg.sync {
                SyncPolicy::Always => true,
                SyncPolicy::Interval(d) => self.closing.get() || st.last_sync.elapsed() >= d,
                SyncPolicy::Never => false,
            }
    }

    async fn sync(&self, io: &Io) {
        let (upto, dir) = {
            let st = self.st.borrow();
            (st.written, st.dir_unsynced)
        };
        match io.sync(dir).await {
            Ok(()) => {
                let mut st = self.st.borrow_mut();
                st.stats.syncs += 1;
                st.last_sync = Instant::now();
                st.dir_unsynced &= !dir;
                // The task writes and syncs in turn: nothing was written during the sync.
                st.unsynced = false;
                st.durable = st.durable.max(upto);
                drop(st);
                self.marks.set(self.shard, upto);
                self.wake_waiters();
            }
            Err(e) => {
                // After a failed fdatasync the kernel may have dropped the dirty pages: what
                // was written since the last good sync is not known to be on disk.
                let lo = self.st.borrow().durable + 1;
                self.failed_io(Some((lo, upto)), &e);
            }
        }
    }

    /// A write or sync failed: its records' tickets fail, the state is rewritten by a
    /// snapshot once writes succeed again.
    fn failed_io(&self, range: Option<(u64, u64)>, e: &std::io::Error) {
        let mut st = self.st.borrow_mut();
        let good = st.seg_len;
        if let Some(f) = st.seg_file.as_ref() {
            // Cut off what a short write left, so later records follow the last good one.
            if f.set_len(good).is_err() {
                st.need_snapshot = true;
            }
        }
        st.snap = None;
        st.need_snapshot = true;
        st.failure(e, range, self.shard);
        drop(st);
        self.wake_waiters();
    }

    /// A snapshot's end is written (and synced, unless that failed): drop older segments.
    fn snapshot_done(&self, io: &Io, first: u64) {
        let mut st = self.st.borrow_mut();
        if st.failing || st.unsynced {
            return;
        }
        let bytes = st.snap.take().map_or(0, |s| s.bytes);
        st.snap_bytes = bytes;
        st.stats.snapshots += 1;
        let old: Vec<_> = st.segs.iter().filter(|s| s.0 < first).copied().collect();
        st.segs.retain(|s| s.0 >= first);
        st.stats.log_bytes = st.segs.iter().map(|s| s.1).sum();
        info!(
            shard = self.shard,
            snapshot_bytes = bytes,
            dropped_segments = old.len(),
            "store: snapshot written"
        );
        io.remove(old.iter().map(|s| segment_path(&self.dir, s.0)).collect());
    }
}

impl Inner {
    /// Records a failure; logs it (once per 10 s while it lasts).
    fn failure(&mut self, e: &std::io::Error, range: Option<(u64, u64)>, shard: u16) {
        let err = StoreError::from_io(e);
        self.failing = true;
        self.last_failure = Some(Instant::now());
        self.stats.write_errors += 1;
        if let Some((lo, hi)) = range {
            self.failed.push_back((lo, hi, err.clone()));
            if self.failed.len() > FAILED_KEPT {
                self.failed.pop_front();
            }
        }
        if self
            .logged_failure
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            self.logged_failure = Some(Instant::now());
            warn!(
                shard,
                errors = self.stats.write_errors,
                "store: write failed, new persistent state is refused until it succeeds: {err}"
            );
        }
    }
}
