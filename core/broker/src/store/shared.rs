//! Records as the values of a shared session store (the cluster's Redis,
//! `cluster/session_store.rs`): one record encoded alone, in the log's frame format so one
//! decoder reads both, and one session rebuilt from the records kept for it.
//!
//! A shared store keeps, per session, the latest record of each part (its fields, each
//! subscription, each message and its state, each inbound QoS 2 id) rather than a log, so
//! rebuilding applies the session record first and the others in stamp order; expiry is
//! judged as at recovery.

use super::format::{self, Clocks};
use super::recover::{expire, session_of, RecoveryReport};
use super::state::{Entry, State};
use super::{Record, RecoveredSession};
use bytes::Bytes;
use std::time::SystemTime;

/// One record as a self-contained frame (length, checksum, version, kind, stamp, fields).
pub fn encode_one(stamp: u64, rec: &Record) -> Vec<u8> {
    let mut out = Vec::new();
    format::encode(&mut out, stamp, rec, &Clocks::now());
    out
}

/// One frame of [`encode_one`] decoded: its stamp and record.
pub fn decode_one(frame: &[u8]) -> Result<(u64, Record), String> {
    let (d, _) = format::decode(&Bytes::copy_from_slice(frame), &Clocks::now())
        .map_err(|bad| bad.to_string())?;
    Ok((d.stamp, d.rec))
}

/// A session rebuilt from its parts' frames (in any order), as of `now`: `None` without a
/// session record or when it has expired; an error when a frame is corrupt.
pub fn session_from(
    frames: impl IntoIterator<Item = Bytes>,
    shards: usize,
    now: SystemTime,
) -> Result<Option<RecoveredSession>, String> {
    let clocks = Clocks {
        instant: std::time::Instant::now(),
        wall: now,
    };
    let mut recs = Vec::new();
    for f in frames {
        let (d, _) = format::decode(&f, &clocks).map_err(|bad| bad.to_string())?;
        recs.push(d);
    }
    // The session's fields first (as a fresh start), then its parts in the order written.
    recs.sort_by_key(|d| (!matches!(d.rec, Record::Session { .. }), d.stamp));
    let mut state = State::new(false);
    for d in recs {
        let rec = match d.rec {
            Record::Session { meta, .. } => Record::Session { meta, fresh: true },
            rec => rec,
        };
        state.apply(d.stamp, rec);
    }
    expire(&mut state, &clocks, &mut RecoveryReport::default());
    Ok(state.sessions.values().find_map(|e| match e {
        Entry::Live(l) => Some(session_of(l, shards)),
        Entry::Gone(_) => None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MsgState, SessionMeta, StoredMsg};
    use std::sync::Arc;
    use uringmq_codec::Protocol;
    use uringmq_session::{Delivery, Message, SubOptions};

    fn meta(expires_at: Option<SystemTime>) -> SessionMeta {
        SessionMeta {
            client_id: "c".into(),
            protocol: Protocol::V5,
            username: None,
            listener: 0,
            session_expiry: 60,
            expires_at,
            will: None,
            will_delay: 0,
        }
    }

    fn queued(id: u64) -> Record {
        let msg = Arc::new(Message {
            topic: "t".into(),
            payload: Bytes::from_static(b"x"),
            qos: uringmq_codec::QoS::AtLeastOnce,
            retain: false,
            properties: Default::default(),
            origin: None,
            received_at: std::time::Instant::now(),
        });
        Record::Queued {
            client_id: "c".into(),
            msg: StoredMsg {
                id,
                msg,
                delivery: Delivery::default(),
                shared_group: None,
                packet_id: None,
                state: MsgState::Queued,
            },
        }
    }

    #[test]
    fn parts_in_any_order_rebuild_the_session() {
        let now = SystemTime::now();
        let frames: Vec<Bytes> = [
            (9, queued(7)),
            (
                8,
                Record::MsgState {
                    client_id: "c".into(),
                    id: 7,
                    packet_id: Some(3),
                    state: MsgState::Sent,
                },
            ),
            (
                5,
                Record::SubAdd {
                    client_id: "c".into(),
                    filter: "a/#".into(),
                    opts: SubOptions::default(),
                },
            ),
            (
                2,
                Record::Session {
                    meta: meta(None),
                    fresh: false,
                },
            ),
        ]
        .iter()
        .map(|(s, r)| Bytes::from(encode_one(*s, r)))
        .collect();
        let s = session_from(frames, 1, now).unwrap().unwrap();
        assert_eq!(s.subs.len(), 1);
        // The state record is older than the message's (a fresh image restated it): ignored.
        assert_eq!(s.messages.len(), 1);
        assert_eq!(s.messages[0].state, MsgState::Queued);
        assert!(s.meta.expires_at.is_some(), "connected at its node's death");
    }

    #[test]
    fn an_expired_or_headless_session_is_none() {
        let past = SystemTime::now() - std::time::Duration::from_secs(5);
        let gone = Record::Session {
            meta: meta(Some(past)),
            fresh: true,
        };
        let frames = [Bytes::from(encode_one(1, &gone))];
        assert!(session_from(frames, 1, SystemTime::now())
            .unwrap()
            .is_none());
        let frames = [Bytes::from(encode_one(1, &queued(1)))];
        assert!(session_from(frames, 1, SystemTime::now())
            .unwrap()
            .is_none());
        assert!(session_from([Bytes::from_static(b"junk")], 1, SystemTime::now()).is_err());
    }
}
