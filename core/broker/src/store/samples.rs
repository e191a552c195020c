//! Sample records for the store's tests (`store/tests.rs`) and its benchmark
//! (`benches/store.rs`, which includes this file with `#[path]`): one way to build a
//! session, a message and a queued message, so the benchmark writes what the tests check.
//! Paths go through `crate::store`, which the benchmark re-exports from `uringmq::store`.

use crate::store::{MsgState, Record, SessionMeta, StoredMsg};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Instant;
use uringmq_codec::{Protocol, PublishProperties, QoS};
use uringmq_session::{Delivery, Message};

/// A v5 session with an hour's expiry.
pub(crate) fn meta(id: &str) -> SessionMeta {
    SessionMeta {
        client_id: id.into(),
        protocol: Protocol::V5,
        username: Some("u".into()),
        listener: 1,
        session_expiry: 3600,
        expires_at: None,
        will: None,
        will_delay: 0,
    }
}

/// A QoS 1 message on `topic` received at `at`.
pub(crate) fn message(topic: &str, payload: Bytes, at: Instant) -> Arc<Message> {
    Arc::new(Message {
        topic: topic.into(),
        payload,
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: PublishProperties::default(),
        origin: None,
        received_at: at,
    })
}

/// `m` queued at QoS 1 for `client`.
pub(crate) fn queued(client: impl Into<Arc<str>>, m: Arc<Message>) -> Record {
    Record::Queued {
        client_id: client.into(),
        msg: StoredMsg {
            id: 0,
            msg: m,
            delivery: Delivery {
                qos: QoS::AtLeastOnce,
                ..Delivery::default()
            },
            shared_group: None,
            packet_id: None,
            state: MsgState::Queued,
        },
    }
}
