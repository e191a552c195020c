//! Snapshots: the live state of a log rewritten into a new segment, so that older segments
//! can be deleted and the log stays near the size of its live state.
//!
//! A snapshot starts a new segment and then, commit by commit, appends at most
//! `snapshot_chunk_bytes` of images (a session's records, a retained message) behind the
//! records the shard pushed in that turn, so a large state never stops the shard for long.
//! Each image is taken from the live state when it is written, so records pushed meanwhile
//! stay right: one pushed before its session's image is contained in the image, one pushed
//! after it follows it in the log. A session or topic gone by then is skipped. The last
//! chunk ends with `Record::SnapshotEnd { first_segment }`; once that is synced, segments
//! before `first_segment` are deleted, and recovery, finding the end, skips them too.

use super::format::{self, Clocks};
use super::state::{Entry, State};
use super::{Record, StoreConfig};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use uringmq_codec::ByteStr;

/// A snapshot being written.
#[derive(Debug)]
pub(crate) struct Snapshot {
    first_segment: u64,
    /// Sessions and retained topics of the state when the snapshot began, not written yet.
    clients: Vec<Arc<str>>,
    topics: Vec<ByteStr>,
    /// Bytes of images written so far.
    pub bytes: u64,
}

impl Snapshot {
    /// A snapshot of `state` whose first segment is `first_segment`.
    pub fn start(state: &State, first_segment: u64) -> Self {
        Snapshot {
            first_segment,
            clients: state.sessions.keys().cloned().collect(),
            topics: state.retained.keys().cloned().collect(),
            bytes: 0,
        }
    }

    /// Appends the next chunk of images to `out`; returns the first segment once the end
    /// record is appended too.
    pub fn step(
        &mut self,
        state: &State,
        out: &mut Vec<u8>,
        cfg: &StoreConfig,
        clock: &AtomicU64,
        clocks: &Clocks,
    ) -> Option<u64> {
        let start = out.len();
        let budget = cfg.snapshot_chunk_bytes.max(1);
        while out.len() - start < budget {
            if let Some(id) = self.clients.pop() {
                if let Some(Entry::Live(live)) = state.sessions.get(&id) {
                    for rec in State::image(live) {
                        format::encode(out, live.last, &rec, clocks);
                    }
                }
            } else if let Some(topic) = self.topics.pop() {
                if let Some((stamp, Some(msg))) = state.retained.get(&topic) {
                    let rec = Record::RetainSet { msg: msg.clone() };
                    format::encode(out, *stamp, &rec, clocks);
                }
            } else {
                self.bytes += (out.len() - start) as u64;
                let end = Record::SnapshotEnd {
                    first_segment: self.first_segment,
                };
                format::encode(out, clock.fetch_add(1, Ordering::Relaxed), &end, clocks);
                return Some(self.first_segment);
            }
        }
        self.bytes += (out.len() - start) as u64;
        None
    }
}
