//! The durable store (#15): each shard appends its sessions' changes to its own log, with no
//! lock shared between shards; recovery rebuilds sessions and retained messages from all logs.
//!
//! Owns: the record format (`format.rs`), the per-shard log writer with group commit
//! ([`ShardStore`]: records pushed during one event-loop turn go out in one write and share
//! one sync), the live state a log describes (`state.rs`, used both to recover and to write
//! snapshots), recovery and the on-disk layout (`recover.rs`), snapshots that keep a log near
//! the size of its live state (`snapshot.rs`), one session's image in bytes for shipping it to
//! another node (`image.rs`, the same records), and the file I/O backends (`io.rs`: io_uring,
//! or a writer thread on the epoll driver, which has no asynchronous file I/O).
//! It knows nothing of connections or the mesh: the shard pushes a [`Record`] at every
//! change of durable state and, under `SyncPolicy::Always`, holds the acknowledgement until
//! the record's [`Ticket`] is durable.
//!
//! Ordering across shards. Every record carries a stamp from one counter shared by all shards
//! of a process (`fetch_add` per record, seeded past the largest stamp on disk at start), so
//! a record pushed after another (in happens-before order, e.g. across a takeover's handoff)
//! has a larger stamp. A session's records can sit in several logs: when a session moves to
//! another shard, the new shard pushes an image of it (`Record::Session { fresh: true }`
//! followed by its subscriptions, messages and QoS 2 ids) and the old shard stops writing
//! about it (`Shard::persist_moved` forgets the client; it pushes no record, so the old log
//! keeps its older copy, which the new image outranks by stamp; `Record::SessionMoved` is
//! read, for logs that have it, but not written). Recovery applies each log in order and
//! keeps, per client id, the version with the highest stamp (a `SessionGone` counts, so an
//! ended session stays ended). Retained topics are each written by
//! one shard, [`retained_owner`], so one log holds all of a topic's records.
//!
//! `shared.rs` encodes single records and rebuilds one session from them, for a store shared
//! by the nodes of a cluster (`cluster/session_store.rs`).
//!
//! Layout: `DIR/CURRENT` names the generation in use, `DIR/gen-N/shard-I/seg-S.log` are the
//! segments. [`Store::open`] reads the current generation whatever its number of shards,
//! writes the recovered live state into a new generation for the shards of this run (each
//! session in the log of [`home_shard`]), switches `CURRENT` to it and deletes the old one.

mod format;
pub mod image;
mod io;
mod recover;
#[cfg(test)]
mod samples;
mod shard;
pub mod shared;
mod snapshot;
mod state;

pub use recover::{Recovered, RecoveredSession, RecoveryReport, Skipped};
pub use shard::{DurableMarks, ShardStore, StoreStats};

use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use uringmq_codec::{ByteStr, LastWill, Protocol};
use uringmq_session::{Delivery, Message, SubOptions};

/// Id of a queued message, unique across shards and restarts: the stamp of the
/// `Record::Queued` that stored it first.
pub type MsgId = u64;

/// When the log is synced to disk (`persistence_sync`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Every commit (every event-loop turn with records) is synced before its tickets are
    /// durable: nothing is acknowledged before it is on disk.
    Always,
    /// Synced when this long has passed since the last sync (and on close); a crash loses at
    /// most that window.
    Interval(Duration),
    /// Written, never synced by the broker (the OS decides); tickets are durable once written.
    Never,
}

/// Settings of the store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// When to sync.
    pub sync: SyncPolicy,
    /// A snapshot is written when a shard's log exceeds the larger of this and twice the
    /// last snapshot (its live state).
    pub compact_min_bytes: u64,
    /// At most this many snapshot bytes are written per commit, so a snapshot of a large
    /// state never stops the shard for long.
    pub snapshot_chunk_bytes: usize,
    /// Test hook: while above zero, each log write fails with ENOSPC and decrements it.
    #[doc(hidden)]
    pub fail_writes: Option<Arc<AtomicU32>>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            sync: SyncPolicy::Interval(Duration::from_millis(1000)),
            compact_min_bytes: 64 << 20,
            snapshot_chunk_bytes: 256 << 10,
            fail_writes: None,
        }
    }
}

/// Proof of a pushed record: the shard that holds it and its stamp. Ask
/// [`ShardStore::wait_durable`] (or, from another shard, [`DurableMarks::is_durable`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket {
    /// The shard whose log holds the record.
    pub shard: u16,
    /// The record's stamp (for `Record::Queued` with id 0: the new message's [`MsgId`]).
    pub stamp: u64,
}

/// Why a record is not durable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The write or sync failed for want of space (ENOSPC, EDQUOT, EFBIG).
    #[error("store: disk full")]
    Full,
    /// Another I/O error (its text).
    #[error("store: I/O error: {0}")]
    Io(String),
    /// The store was closed before the record was written.
    #[error("store: closed")]
    Closed,
}

impl StoreError {
    fn from_io(e: &std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => StoreError::Full,
            _ => StoreError::Io(e.to_string()),
        }
    }
}

/// A session's own fields, as the last CONNECT (or the last disconnect) left them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionMeta {
    /// Client identifier.
    pub client_id: Arc<str>,
    /// Protocol of the last connection.
    pub protocol: Protocol,
    /// User name of the last connection.
    pub username: Option<Arc<str>>,
    /// Index of the listener of the last connection (its ACL applies to queued deliveries).
    pub listener: u16,
    /// Session Expiry Interval in seconds (`u32::MAX`: never).
    pub session_expiry: u32,
    /// When the offline session ends, by the wall clock; `None` while connected. A session
    /// recovered with `None` was connected when the broker stopped: `Store::open` sets it to
    /// the start time plus the interval.
    pub expires_at: Option<SystemTime>,
    /// Will of the current connection.
    pub will: Option<Box<LastWill>>,
    /// Will Delay Interval of the current connection, in seconds.
    pub will_delay: u32,
}

impl SessionMeta {
    /// When the will in this meta is due, as an `Instant` against `now`: its delay counts
    /// from when the connection closed, which an offline session's expiry tells (it started
    /// then), or from `now` for a session whose connection was open (the node that served it
    /// stopped or died under it).
    pub fn will_due(&self, now: std::time::Instant) -> std::time::Instant {
        let closed = match self.expires_at.filter(|_| self.session_expiry != u32::MAX) {
            Some(at) => {
                let closed = at - Duration::from_secs(u64::from(self.session_expiry));
                let ago = SystemTime::now().duration_since(closed).unwrap_or_default();
                now.checked_sub(ago).unwrap_or(now)
            }
            None => now,
        };
        uringmq_session::will::due(closed, self.will_delay, self.session_expiry)
    }
}

/// Where a stored outbound message is in its exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MsgState {
    /// Waiting in the session's queue (no packet id).
    Queued = 0,
    /// PUBLISH sent with `packet_id`, PUBACK / PUBREC awaited: resent with DUP.
    Sent = 1,
    /// QoS 2: PUBREC received, PUBREL sent, PUBCOMP awaited: PUBREL is resent.
    Released = 2,
}

/// A message queued or in flight for one session.
#[derive(Clone, Debug)]
pub struct StoredMsg {
    /// Its id. Push 0 for a new message: the store assigns the record's stamp (returned in
    /// the ticket); an image of a moving session pushes the ids it has.
    pub id: MsgId,
    /// The message (on recovery: `origin` none, `received_at` from the stored wall clock).
    pub msg: Arc<Message>,
    /// How it goes to this subscriber.
    pub delivery: Delivery,
    /// The shared subscription group it came through.
    pub shared_group: Option<Arc<str>>,
    /// Packet identifier once in flight.
    pub packet_id: Option<u16>,
    /// Where its exchange is.
    pub state: MsgState,
}

/// One change to durable state. Records of one session must be pushed on the shard that
/// serves it, `Session` first.
#[derive(Clone, Debug)]
pub enum Record {
    /// A session created or updated. `fresh`: this record starts the session's state in
    /// this log anew (a new session, a clean start, or the image of a session that moved
    /// here; the image's other records follow it); otherwise only the fields change.
    Session {
        /// The session's fields.
        meta: SessionMeta,
        /// Start the state anew.
        fresh: bool,
    },
    /// The session ended (expired, clean start, non-persistent reconnect).
    SessionGone {
        /// Client identifier.
        client_id: Arc<str>,
    },
    /// The session moved to another shard, which pushed its image: this log no longer holds
    /// it. Push it once the new shard's image is durable (under `Always`), or else the crash
    /// of that moment loses the session.
    SessionMoved {
        /// Client identifier.
        client_id: Arc<str>,
    },
    /// A subscription added or replaced.
    SubAdd {
        /// Client identifier.
        client_id: Arc<str>,
        /// Topic filter (shared ones with their `$share/group/` prefix).
        filter: ByteStr,
        /// Options, identifier included.
        opts: SubOptions,
    },
    /// A subscription removed.
    SubRemove {
        /// Client identifier.
        client_id: Arc<str>,
        /// Topic filter.
        filter: ByteStr,
    },
    /// A QoS 1/2 message queued (or sent at once) for the session.
    Queued {
        /// Client identifier.
        client_id: Arc<str>,
        /// The message (`id` 0 for a new one).
        msg: StoredMsg,
    },
    /// A message's packet id or state changed.
    MsgState {
        /// Client identifier.
        client_id: Arc<str>,
        /// The message.
        id: MsgId,
        /// Its packet identifier.
        packet_id: Option<u16>,
        /// Its new state.
        state: MsgState,
    },
    /// A message is done (acknowledged, expired or dropped).
    MsgDone {
        /// Client identifier.
        client_id: Arc<str>,
        /// The message.
        id: MsgId,
    },
    /// An inbound QoS 2 PUBLISH was received (PUBREC sent): its id awaits PUBREL.
    Qos2Received {
        /// Client identifier.
        client_id: Arc<str>,
        /// Packet identifier.
        packet_id: u16,
    },
    /// An inbound QoS 2 id was released (PUBCOMP sent).
    Qos2Released {
        /// Client identifier.
        client_id: Arc<str>,
        /// Packet identifier.
        packet_id: u16,
    },
    /// A retained message set (push on `retained_owner(topic)` only).
    RetainSet {
        /// The message (its topic is the key).
        msg: Arc<Message>,
    },
    /// A retained message cleared (push on `retained_owner(topic)` only).
    RetainClear {
        /// The topic.
        topic: ByteStr,
    },
    /// Written by the store: a snapshot that began in segment `first_segment` is complete,
    /// so older segments are no longer needed.
    #[doc(hidden)]
    SnapshotEnd {
        /// The snapshot's first segment.
        first_segment: u64,
    },
}

/// The shard whose log holds `client_id`'s recovered session (and which should serve it
/// until the client connects elsewhere).
pub fn home_shard(client_id: &str, shards: usize) -> usize {
    (crc32c::crc32c(client_id.as_bytes()) as usize) % shards.max(1)
}

/// The shard that writes the records of retained `topic`.
pub fn retained_owner(topic: &str, shards: usize) -> usize {
    (crc32c::crc32c_append(0x5245_5441, topic.as_bytes()) as usize) % shards.max(1)
}

/// Opening a store: reading, then rewriting, all shards' logs.
pub struct Store;

impl Store {
    /// Recovers the state in `dir` (created if missing) written by any number of shards,
    /// drops expired sessions and messages (at the wall clock's now), and opens one log per
    /// shard of this run, each already holding the recovered state it is home to. Runs on the
    /// caller's thread with blocking I/O: call it before the shards start.
    pub fn open(
        dir: &std::path::Path,
        shards: usize,
        cfg: &StoreConfig,
    ) -> std::io::Result<(Vec<ShardStore>, Recovered)> {
        recover::open(dir, shards, cfg, SystemTime::now())
    }
}

#[cfg(test)]
mod tests;
