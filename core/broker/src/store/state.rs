//! The live state that records describe, rebuilt by applying them in log order.
//!
//! One type serves two purposes: recovery applies every record of one log to a `State`
//! (keeping tombstones, so that logs can be merged by stamp afterwards), and each running
//! shard keeps a `State` of what its own log holds (without tombstones), from which a
//! snapshot is written when the log has grown well past the live state.

use super::{Record, SessionMeta, StoredMsg};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use uringmq_codec::ByteStr;
use uringmq_session::{Message, SubOptions};

type Map<K, V> = HashMap<K, V, ahash::RandomState>;

/// One session as its records leave it.
#[derive(Clone, Debug)]
pub(crate) struct Live {
    pub meta: SessionMeta,
    pub subs: Map<ByteStr, SubOptions>,
    /// Queued and in-flight messages by id (ids grow in queueing order).
    pub msgs: BTreeMap<u64, StoredMsg>,
    pub qos2: BTreeSet<u16>,
    /// Stamp of the latest record of this session in this log.
    pub last: u64,
}

/// A client id in one log: its session, or (recovery only) the stamp it ended at.
#[derive(Clone, Debug)]
pub(crate) enum Entry {
    Live(Box<Live>),
    Gone(u64),
}

impl Entry {
    /// The stamp that orders this entry against the same client id in other logs.
    pub fn stamp(&self) -> u64 {
        match self {
            Entry::Live(l) => l.last,
            Entry::Gone(s) => *s,
        }
    }
}

/// A retained topic: its stamp and message (`None`: cleared, recovery only).
pub(crate) type RetainedEntry = (u64, Option<Arc<Message>>);

/// The state of one log.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub sessions: Map<Arc<str>, Entry>,
    pub retained: Map<ByteStr, RetainedEntry>,
    /// Keep `Gone` entries and cleared topics (recovery merges logs by stamp).
    pub tombstones: bool,
    /// Records naming a session this log does not hold (counted, ignored).
    pub orphans: u64,
}

impl State {
    /// An empty state; `tombstones` for recovery.
    pub fn new(tombstones: bool) -> Self {
        State {
            tombstones,
            ..State::default()
        }
    }

    /// The live session of `client`, if any.
    fn live(&mut self, client: &str, stamp: u64) -> Option<&mut Live> {
        match self.sessions.get_mut(client) {
            Some(Entry::Live(l)) => {
                l.last = l.last.max(stamp);
                Some(l)
            }
            _ => {
                self.orphans += 1;
                None
            }
        }
    }

    /// Applies one record with its stamp.
    pub fn apply(&mut self, stamp: u64, rec: Record) {
        match rec {
            Record::Session { meta, fresh } => self.session(stamp, meta, fresh),
            Record::SessionGone { client_id } => {
                if self.tombstones {
                    self.sessions.insert(client_id, Entry::Gone(stamp));
                } else {
                    self.sessions.remove(&client_id);
                }
            }
            Record::SessionMoved { client_id } => {
                self.sessions.remove(&client_id);
            }
            Record::RetainSet { msg } => {
                self.retained.insert(msg.topic.clone(), (stamp, Some(msg)));
            }
            Record::RetainClear { topic } => {
                if self.tombstones {
                    self.retained.insert(topic, (stamp, None));
                } else {
                    self.retained.remove(&topic);
                }
            }
            Record::SnapshotEnd { .. } => {}
            rec => self.session_part(stamp, rec),
        }
    }

    fn session(&mut self, stamp: u64, meta: SessionMeta, fresh: bool) {
        if let (false, Some(Entry::Live(l))) = (fresh, self.sessions.get_mut(&meta.client_id)) {
            l.meta = meta;
            l.last = l.last.max(stamp);
            return;
        }
        let live = Live {
            meta,
            subs: Map::default(),
            msgs: BTreeMap::new(),
            qos2: BTreeSet::new(),
            last: stamp,
        };
        self.sessions
            .insert(live.meta.client_id.clone(), Entry::Live(Box::new(live)));
    }

    /// A record about a part of one session (subscriptions, messages, QoS 2 ids).
    fn session_part(&mut self, stamp: u64, rec: Record) {
        match rec {
            Record::SubAdd {
                client_id,
                filter,
                opts,
            } => {
                if let Some(l) = self.live(&client_id, stamp) {
                    l.subs.insert(filter, opts);
                }
            }
            Record::SubRemove { client_id, filter } => {
                if let Some(l) = self.live(&client_id, stamp) {
                    l.subs.remove(&filter);
                }
            }
            Record::Queued { client_id, msg } => {
                if let Some(l) = self.live(&client_id, stamp) {
                    l.msgs.insert(msg.id, msg);
                }
            }
            Record::MsgState {
                client_id,
                id,
                packet_id,
                state,
            } => {
                if let Some(m) = self
                    .live(&client_id, stamp)
                    .and_then(|l| l.msgs.get_mut(&id))
                {
                    m.packet_id = packet_id;
                    m.state = state;
                }
            }
            Record::MsgDone { client_id, id } => {
                if let Some(l) = self.live(&client_id, stamp) {
                    l.msgs.remove(&id);
                }
            }
            Record::Qos2Received {
                client_id,
                packet_id,
            } => {
                if let Some(l) = self.live(&client_id, stamp) {
                    l.qos2.insert(packet_id);
                }
            }
            Record::Qos2Released {
                client_id,
                packet_id,
            } => {
                if let Some(l) = self.live(&client_id, stamp) {
                    l.qos2.remove(&packet_id);
                }
            }
            _ => {}
        }
    }

    /// Merges another log's state into this one: per client id and per retained topic the
    /// entry with the higher stamp wins (a session's records after a takeover carry higher
    /// stamps than any record of it in the log it left).
    pub fn merge(&mut self, other: State) {
        for (id, e) in other.sessions {
            match self.sessions.get(&id) {
                Some(mine) if mine.stamp() >= e.stamp() => {}
                _ => {
                    self.sessions.insert(id, e);
                }
            }
        }
        for (topic, e) in other.retained {
            match self.retained.get(&topic) {
                Some(mine) if mine.0 >= e.0 => {}
                _ => {
                    self.retained.insert(topic, e);
                }
            }
        }
        self.orphans += other.orphans;
    }

    /// The records that restate one session (a fresh session record first), all with the
    /// session's latest stamp.
    pub fn image(live: &Live) -> Vec<Record> {
        let client_id = &live.meta.client_id;
        let mut out = Vec::with_capacity(1 + live.subs.len() + live.msgs.len() + live.qos2.len());
        out.push(Record::Session {
            meta: live.meta.clone(),
            fresh: true,
        });
        out.extend(live.subs.iter().map(|(f, o)| Record::SubAdd {
            client_id: client_id.clone(),
            filter: f.clone(),
            opts: *o,
        }));
        out.extend(live.msgs.values().map(|m| Record::Queued {
            client_id: client_id.clone(),
            msg: m.clone(),
        }));
        out.extend(live.qos2.iter().map(|p| Record::Qos2Received {
            client_id: client_id.clone(),
            packet_id: *p,
        }));
        out
    }
}
