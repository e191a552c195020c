//! Recovery and the on-disk layout: reading every shard's log of the current generation,
//! merging them, dropping what expired, and writing the result as a new generation with one
//! log per shard of this run.
//!
//! The switch is crash-safe: the new generation is written and synced beside the old one,
//! then `CURRENT` is replaced (write, sync, rename, sync the directory), then the old
//! generation is deleted. A crash before the rename leaves the old generation current (the
//! half-written new one is deleted at the next start); after it, the new one is complete.

use super::format::{self, Bad, Clocks, HEADER_LEN, MAGIC, VERSION};
use super::shard::{segment_header, segment_path, DurableMarks, Opened, ShardStore};
use super::snapshot::Snapshot;
use super::state::{Entry, Live, State};
use super::{home_shard, retained_owner, SessionMeta, StoreConfig, StoredMsg};
use bytes::Bytes;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tracing::{info, warn};
use uringmq_codec::ByteStr;
use uringmq_session::{Message, SubOptions};

/// A torn or corrupt part of a segment that recovery skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The segment file.
    pub file: PathBuf,
    /// Where the first bad record starts.
    pub offset: u64,
    /// Bytes from there to the end of the file (none of them was applied).
    pub bytes: u64,
    /// What was wrong.
    pub reason: String,
}

/// What recovery read, skipped and kept, and how long it took.
#[derive(Clone, Debug, Default)]
pub struct RecoveryReport {
    /// Segment files read.
    pub files: usize,
    /// Records applied.
    pub records: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Torn or corrupt tails skipped.
    pub skipped: Vec<Skipped>,
    /// Sessions recovered (after expiry).
    pub sessions: usize,
    /// Queued and in-flight messages recovered (after expiry).
    pub messages: usize,
    /// Retained messages recovered (after expiry).
    pub retained: usize,
    /// Sessions dropped because they had expired.
    pub expired_sessions: usize,
    /// Messages (queued and retained) dropped because they had expired.
    pub expired_messages: usize,
    /// Records naming a session their log did not hold (ignored).
    pub orphans: u64,
    /// Reading, merging and writing the new generation.
    pub elapsed: Duration,
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} sessions, {} messages, {} retained from {} records in {} files ({} bytes) in \
             {:?}; expired {} sessions, {} messages; {} corrupt or torn tails skipped",
            self.sessions,
            self.messages,
            self.retained,
            self.records,
            self.files,
            self.bytes,
            self.elapsed,
            self.expired_sessions,
            self.expired_messages,
            self.skipped.len()
        )
    }
}

/// One recovered session.
#[derive(Clone, Debug)]
pub struct RecoveredSession {
    /// The shard whose log holds it now ([`super::home_shard`]).
    pub shard: usize,
    /// Its fields (an offline session has `expires_at`).
    pub meta: SessionMeta,
    /// Its subscriptions.
    pub subs: Vec<(ByteStr, SubOptions)>,
    /// Its in-flight and queued messages, in the order they were queued.
    pub messages: Vec<StoredMsg>,
    /// Inbound QoS 2 packet ids awaiting PUBREL.
    pub qos2_in: Vec<u16>,
}

/// Everything recovered at start.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The sessions.
    pub sessions: Vec<RecoveredSession>,
    /// The retained messages.
    pub retained: Vec<Arc<Message>>,
    /// What recovery did.
    pub report: RecoveryReport,
}

const CURRENT: &str = "CURRENT";

fn gen_name(n: u64) -> String {
    format!("gen-{n:08}")
}

/// `Store::open` with the wall-clock time expiry is judged at.
pub(crate) fn open(
    dir: &Path,
    shards: usize,
    cfg: &StoreConfig,
    now: SystemTime,
) -> io::Result<(Vec<ShardStore>, Recovered)> {
    let started = Instant::now();
    let shards = shards.max(1);
    fs::create_dir_all(dir)?;
    let lock = Arc::new(lock(dir)?);
    let clocks = Clocks {
        instant: Instant::now(),
        wall: now,
    };
    let current = read_current(dir)?;
    let mut report = RecoveryReport::default();
    let mut max_stamp = 0;
    let mut state = State::new(true);
    if let Some(g) = current {
        for (s, m, r) in read_logs(&shard_dirs(&dir.join(gen_name(g)))?, &clocks)? {
            max_stamp = max_stamp.max(m);
            state.merge(s);
            report.add(r);
        }
    }
    report.orphans = state.orphans;
    expire(&mut state, &clocks, &mut report);
    let recovered = recovered(&state, shards, report);
    let next = current.map_or(1, |g| g + 1);
    let clock = Arc::new(AtomicU64::new(max_stamp + 1));
    let marks = Arc::new(DurableMarks::new(shards));
    let gen_dir = dir.join(gen_name(next));
    let _ = fs::remove_dir_all(&gen_dir);
    fs::create_dir_all(&gen_dir)?;
    // One thread per shard: encoding and writing a million sessions is seconds of work.
    let opened: Vec<io::Result<Opened>> = std::thread::scope(|scope| {
        let handles: Vec<_> = split(state, shards)
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let (gen_dir, clock, marks) = (&gen_dir, &clock, &marks);
                scope.spawn(move || write_shard(gen_dir, i, s, cfg, clock, marks, &clocks))
            })
            .collect();
        handles.into_iter().map(join).collect()
    });
    let mut stores = Vec::with_capacity(shards);
    for o in opened {
        stores.push(ShardStore::new(o?, lock.clone()));
    }
    sync_dir(&gen_dir)?;
    switch_current(dir, next)?;
    remove_other_generations(dir, next);
    let mut recovered = recovered;
    recovered.report.elapsed = started.elapsed();
    info!("store: recovered {}", recovered.report);
    for s in &recovered.report.skipped {
        warn!(
            "store: skipped {} bytes of {} from offset {}: {}",
            s.bytes,
            s.file.display(),
            s.offset,
            s.reason
        );
    }
    Ok((stores, recovered))
}

/// Takes `DIR/LOCK` (an exclusive `flock`, released when the last shard's store closes or is
/// dropped), so a second broker (or a restart in the same process before the first stopped)
/// cannot write the same logs.
///
/// A lock held by someone else is waited for up to [`LOCK_WAIT`]: a child process forked by
/// another thread of this process (an embedder or a test harness starting a program) holds a
/// copy of the descriptor, and with it the lock, until it execs, so a broker restarted at
/// that moment would otherwise be refused although the previous one has stopped.
fn lock(dir: &Path) -> io::Result<File> {
    use std::os::fd::AsRawFd;
    let f = File::create(dir.join("LOCK"))?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        // SAFETY: flock on a descriptor we own; no memory is passed.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(f);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) || Instant::now() >= deadline {
            return Err(io::Error::new(
                e.kind(),
                format!("{} is in use by another broker: {e}", dir.display()),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How long [`lock`] waits for a lock held elsewhere.
const LOCK_WAIT: Duration = Duration::from_secs(2);

fn read_current(dir: &Path) -> io::Result<Option<u64>> {
    match fs::read_to_string(dir.join(CURRENT)) {
        Ok(s) => s
            .trim()
            .strip_prefix("gen-")
            .and_then(|n| n.parse().ok())
            .map(Some)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: not a generation name: {s:?}",
                        dir.join(CURRENT).display()
                    ),
                )
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The `shard-*` directories of a generation (any number: the core count may have changed).
fn shard_dirs(gen: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = match fs::read_dir(gen) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_dir() && name_starts(p, "shard-"))
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    out.sort();
    Ok(out)
}

fn name_starts(p: &Path, prefix: &str) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(prefix))
}

fn join<T>(h: std::thread::ScopedJoinHandle<'_, io::Result<T>>) -> io::Result<T> {
    h.join()
        .unwrap_or_else(|_| Err(io::Error::other("store: a recovery thread panicked")))
}

/// Reads every log, one thread each: (state, largest stamp, what was read) per log.
fn read_logs(logs: &[PathBuf], clocks: &Clocks) -> io::Result<Vec<(State, u64, RecoveryReport)>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = logs
            .iter()
            .map(|log| {
                scope.spawn(move || {
                    let mut r = RecoveryReport::default();
                    read_log(log, clocks, &mut r).map(|(s, m)| (s, m, r))
                })
            })
            .collect();
        handles.into_iter().map(join).collect()
    })
}

impl RecoveryReport {
    /// Adds what one log's reading counted.
    fn add(&mut self, r: RecoveryReport) {
        self.files += r.files;
        self.records += r.records;
        self.bytes += r.bytes;
        self.skipped.extend(r.skipped);
    }
}

/// Applies one log's segments in order; returns its state and largest stamp.
fn read_log(dir: &Path, clocks: &Clocks, report: &mut RecoveryReport) -> io::Result<(State, u64)> {
    let mut segs: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| name_starts(p, "seg-"))
        .collect();
    segs.sort();
    let mut state = State::new(true);
    let mut max = 0;
    for seg in segs {
        let data = Bytes::from(fs::read(&seg)?);
        report.files += 1;
        report.bytes += data.len() as u64;
        max = max.max(read_segment(&seg, &data, clocks, &mut state, report));
    }
    Ok((state, max))
}

/// Applies the records of one segment up to its first bad one; returns the largest stamp.
pub(crate) fn read_segment(
    path: &Path,
    data: &Bytes,
    clocks: &Clocks,
    state: &mut State,
    report: &mut RecoveryReport,
) -> u64 {
    let mut skip = |offset: usize, reason: String| {
        report.skipped.push(Skipped {
            file: path.to_path_buf(),
            offset: offset as u64,
            bytes: (data.len() - offset) as u64,
            reason,
        })
    };
    if data.len() < HEADER_LEN || &data[..MAGIC.len()] != MAGIC {
        if !data.is_empty() {
            skip(0, "not a segment (bad header)".into());
        }
        return 0;
    }
    if data[MAGIC.len()] != VERSION {
        skip(0, format!("unknown segment version {}", data[MAGIC.len()]));
        return 0;
    }
    let mut off = HEADER_LEN;
    let mut max = 0;
    let mut records = 0;
    while off < data.len() {
        match format::decode(&data.slice(off..), clocks) {
            Ok((d, n)) => {
                max = max.max(d.stamp);
                state.apply(d.stamp, d.rec);
                records += 1;
                off += n;
            }
            Err(bad) => {
                skip(off, describe(bad));
                break;
            }
        }
    }
    report.records += records;
    max
}

fn describe(bad: Bad) -> String {
    bad.to_string()
}

/// Drops expired sessions and messages and every tombstone; sets the expiry of sessions
/// that were connected when the broker stopped (their connection ended then).
pub(crate) fn expire(state: &mut State, clocks: &Clocks, report: &mut RecoveryReport) {
    let now = clocks.wall;
    state.sessions.retain(|_, e| {
        let Entry::Live(l) = e else { return false };
        let m = &mut l.meta;
        let alive = match m.expires_at {
            Some(t) => t > now,
            None => m.session_expiry != 0,
        };
        if !alive {
            report.expired_sessions += 1;
            return false;
        }
        if m.expires_at.is_none() && m.session_expiry != u32::MAX {
            m.expires_at = Some(now + Duration::from_secs(u64::from(m.session_expiry)));
        }
        let before = l.msgs.len();
        l.msgs
            .retain(|_, s| s.msg.remaining_expiry(clocks.instant).is_ok());
        report.expired_messages += before - l.msgs.len();
        true
    });
    state.retained.retain(|_, (_, m)| match m {
        Some(m) if m.remaining_expiry(clocks.instant).is_ok() => true,
        Some(_) => {
            report.expired_messages += 1;
            false
        }
        None => false,
    });
    state.tombstones = false;
}

fn recovered(state: &State, shards: usize, mut report: RecoveryReport) -> Recovered {
    let sessions: Vec<RecoveredSession> = state
        .sessions
        .values()
        .filter_map(|e| match e {
            Entry::Live(l) => Some(session_of(l, shards)),
            Entry::Gone(_) => None,
        })
        .collect();
    let retained: Vec<Arc<Message>> = state
        .retained
        .values()
        .filter_map(|(_, m)| m.clone())
        .collect();
    report.sessions = sessions.len();
    report.messages = sessions.iter().map(|s| s.messages.len()).sum();
    report.retained = retained.len();
    Recovered {
        sessions,
        retained,
        report,
    }
}

pub(crate) fn session_of(l: &Live, shards: usize) -> RecoveredSession {
    RecoveredSession {
        shard: home_shard(&l.meta.client_id, shards),
        meta: l.meta.clone(),
        subs: l.subs.iter().map(|(f, o)| (f.clone(), *o)).collect(),
        messages: l.msgs.values().cloned().collect(),
        qos2_in: l.qos2.iter().copied().collect(),
    }
}

/// Splits the merged state by home shard (sessions) and owner (retained topics).
fn split(state: State, shards: usize) -> Vec<State> {
    let mut out: Vec<State> = (0..shards).map(|_| State::new(false)).collect();
    for (id, e) in state.sessions {
        let i = home_shard(&id, shards);
        out[i].sessions.insert(id, e);
    }
    for (topic, e) in state.retained {
        let i = retained_owner(&topic, shards);
        out[i].retained.insert(topic, e);
    }
    out
}

/// Writes shard `i`'s state as the first segment of its new log (a complete snapshot).
fn write_shard(
    gen_dir: &Path,
    i: usize,
    state: State,
    cfg: &StoreConfig,
    clock: &Arc<AtomicU64>,
    marks: &Arc<DurableMarks>,
    clocks: &Clocks,
) -> io::Result<Opened> {
    let dir = gen_dir.join(format!("shard-{i:03}"));
    fs::create_dir_all(&dir)?;
    let mut buf = segment_header().to_vec();
    let mut snap = Snapshot::start(&state, 1);
    let all = StoreConfig {
        snapshot_chunk_bytes: usize::MAX,
        ..cfg.clone()
    };
    snap.step(&state, &mut buf, &all, clock, clocks);
    let mut file = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(segment_path(&dir, 1))?;
    file.write_all(&buf)?;
    file.sync_data()?;
    sync_dir(&dir)?;
    Ok(Opened {
        shard: u16::try_from(i).unwrap_or(u16::MAX),
        dir,
        cfg: cfg.clone(),
        clock: clock.clone(),
        marks: marks.clone(),
        state,
        seg: 1,
        seg_len: buf.len() as u64,
        file,
        snap_bytes: snap.bytes,
    })
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn switch_current(dir: &Path, gen: u64) -> io::Result<()> {
    let tmp = dir.join("CURRENT.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(format!("{}\n", gen_name(gen)).as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(CURRENT))?;
    sync_dir(dir)
}

fn remove_other_generations(dir: &Path, keep: u64) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let keep = gen_name(keep);
    for e in rd.filter_map(Result::ok) {
        let p = e.path();
        if name_starts(&p, "gen-") && p.file_name().and_then(|n| n.to_str()) != Some(&keep) {
            if let Err(err) = fs::remove_dir_all(&p) {
                warn!("store: cannot delete {}: {err}", p.display());
            }
        }
    }
}
