//! A session image in bytes, to ship a session to another node (a takeover across the
//! cluster, a session kept in a shared store): exactly what recovery reads from a log.
//!
//! An image is a segment header (`format.rs`: magic and format version) followed by the
//! records that restate one session ([`State::image`]: `Session { fresh }`, its
//! subscriptions, its queued and in-flight messages with their packet ids and states, its
//! inbound QoS 2 ids), each framed and checksummed as in a segment. Decoding applies them to
//! an empty [`State`], as recovery does. So there is one format, versioned with the store's:
//! a node of another format version refuses the image instead of misreading it.
//!
//! Message ids inside an image only order its messages: they are numbered from 1 in queue
//! order (in flight first, then queued), whatever ids the sender's store gave them, and the
//! receiver gives them ids of its own store (`shard/import.rs`).

use super::format::{self, Clocks, HEADER_LEN, MAGIC, VERSION};
use super::shard::segment_header;
use super::state::{Entry, Live, State};
use super::RecoveredSession;
use bytes::Bytes;

/// Why bytes are not a session image.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// Not a store segment, or one of another format version.
    #[error("not a session image of store format version {VERSION}")]
    Version,
    /// A record is torn, corrupt or malformed.
    #[error("corrupt session image: {0}")]
    Corrupt(String),
    /// The records do not describe exactly one live session.
    #[error("a session image holds one session, this one holds {0}")]
    Sessions(usize),
}

/// Encodes `s` (its `shard` is not part of the image).
pub fn encode(s: &RecoveredSession) -> Vec<u8> {
    let live = Live {
        meta: s.meta.clone(),
        subs: s.subs.iter().cloned().collect(),
        msgs: s
            .messages
            .iter()
            .zip(1u64..)
            .map(|(m, id)| {
                let mut m = m.clone();
                m.id = id;
                (id, m)
            })
            .collect(),
        qos2: s.qos2_in.iter().copied().collect(),
        last: 0,
    };
    let clocks = Clocks::now();
    let mut out = segment_header().to_vec();
    for (rec, stamp) in State::image(&live).iter().zip(1u64..) {
        format::encode(&mut out, stamp, rec, &clocks);
    }
    out
}

/// Decodes an image made by [`encode`]; the session's `shard` is 0.
pub fn decode(image: Bytes) -> Result<RecoveredSession, ImageError> {
    if image.len() < HEADER_LEN || &image[..MAGIC.len()] != MAGIC || image[MAGIC.len()] != VERSION {
        return Err(ImageError::Version);
    }
    let clocks = Clocks::now();
    let mut state = State::new(false);
    let mut off = HEADER_LEN;
    while off < image.len() {
        let (d, n) = format::decode(&image.slice(off..), &clocks)
            .map_err(|bad| ImageError::Corrupt(bad.to_string()))?;
        state.apply(d.stamp, d.rec);
        off += n;
    }
    if state.orphans != 0 || state.sessions.len() != 1 {
        return Err(ImageError::Sessions(state.sessions.len()));
    }
    match state.sessions.into_values().next() {
        Some(Entry::Live(l)) => Ok(RecoveredSession {
            shard: 0,
            meta: l.meta,
            subs: l.subs.into_iter().collect(),
            messages: l.msgs.into_values().collect(),
            qos2_in: l.qos2.into_iter().collect(),
        }),
        _ => Err(ImageError::Sessions(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MsgState, SessionMeta, StoredMsg};
    use std::sync::Arc;
    use std::time::Instant;
    use uringmq_codec::{LastWill, Protocol, QoS};
    use uringmq_session::{Delivery, Message, SubOptions};

    fn msg(topic: &str, payload: &'static [u8], expiry: Option<u32>) -> Arc<Message> {
        let mut m = Message {
            topic: topic.into(),
            payload: Bytes::from_static(payload),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Default::default(),
            origin: None,
            received_at: Instant::now(),
        };
        m.properties.message_expiry_interval = expiry;
        m.properties.user_properties = vec![("k".into(), "v".into())];
        Arc::new(m)
    }

    fn stored(m: Arc<Message>, packet_id: Option<u16>, state: MsgState, qos: QoS) -> StoredMsg {
        StoredMsg {
            id: 0,
            msg: m,
            delivery: Delivery {
                qos,
                sub_ids: smallvec::smallvec![7, 9],
                ..Delivery::default()
            },
            shared_group: None,
            packet_id,
            state,
        }
    }

    fn session() -> RecoveredSession {
        let opts = SubOptions {
            qos: QoS::ExactlyOnce,
            no_local: true,
            retain_as_published: true,
            id: Some(7),
            ..SubOptions::default()
        };
        RecoveredSession {
            shard: 3,
            meta: SessionMeta {
                client_id: "dev-1".into(),
                protocol: Protocol::V5,
                username: Some("alice".into()),
                listener: 2,
                session_expiry: 3600,
                expires_at: None,
                will: Some(Box::new(LastWill {
                    topic: "w".into(),
                    payload: Bytes::from_static(b"bye"),
                    qos: QoS::AtLeastOnce,
                    retain: true,
                    properties: Default::default(),
                })),
                will_delay: 5,
            },
            subs: vec![("a/+".into(), opts), ("$share/g/b/#".into(), opts)],
            messages: vec![
                stored(
                    msg("a/1", b"one", None),
                    Some(4),
                    MsgState::Sent,
                    QoS::AtLeastOnce,
                ),
                stored(
                    msg("a/2", b"two", Some(60)),
                    Some(5),
                    MsgState::Released,
                    QoS::ExactlyOnce,
                ),
                stored(
                    msg("a/3", b"three", None),
                    None,
                    MsgState::Queued,
                    QoS::AtLeastOnce,
                ),
            ],
            qos2_in: vec![11, 12],
        }
    }

    #[test]
    fn an_image_round_trips_every_part_of_a_session() {
        let s = session();
        let back = decode(Bytes::from(encode(&s))).unwrap();
        assert_eq!(back.meta, s.meta);
        let mut subs = back.subs.clone();
        subs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut want = s.subs.clone();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(subs, want);
        assert_eq!(back.qos2_in, vec![11, 12]);
        let got: Vec<_> = back
            .messages
            .iter()
            .map(|m| {
                (
                    &m.msg.payload[..],
                    m.packet_id,
                    m.state,
                    m.delivery.qos,
                    m.id,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (&b"one"[..], Some(4), MsgState::Sent, QoS::AtLeastOnce, 1),
                (
                    &b"two"[..],
                    Some(5),
                    MsgState::Released,
                    QoS::ExactlyOnce,
                    2
                ),
                (&b"three"[..], None, MsgState::Queued, QoS::AtLeastOnce, 3),
            ]
        );
        let m = &back.messages[1];
        assert_eq!(&m.delivery.sub_ids[..], &[7, 9]);
        assert_eq!(
            m.msg.properties.user_properties,
            s.messages[1].msg.properties.user_properties
        );
        assert!(m.msg.remaining_expiry(Instant::now()).unwrap().unwrap() > 58);
    }

    #[test]
    fn a_damaged_or_foreign_image_is_refused() {
        let image = encode(&session());
        assert_eq!(
            decode(Bytes::from_static(b"UMQL")).err(),
            Some(ImageError::Version)
        );
        let mut other = image.clone();
        other[MAGIC.len()] = VERSION + 1;
        assert_eq!(decode(Bytes::from(other)).err(), Some(ImageError::Version));
        let mut flipped = image.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        assert!(matches!(
            decode(Bytes::from(flipped)),
            Err(ImageError::Corrupt(_))
        ));
        let torn = image[..image.len() - 3].to_vec();
        assert!(matches!(
            decode(Bytes::from(torn)),
            Err(ImageError::Corrupt(_))
        ));
        let header = image[..HEADER_LEN].to_vec();
        assert_eq!(
            decode(Bytes::from(header)).err(),
            Some(ImageError::Sessions(0))
        );
    }
}
