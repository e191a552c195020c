//! A session that moves between brokers (issue #19): installed at run time from an image (the
//! durable store's records), and taken over by a CONNECT on another node of a cluster. What
//! the client notices: session present, its subscriptions kept, its queued QoS 1/2 messages
//! delivered. Both protocol versions; both drivers (`MONOIO_FORCE_LEGACY_DRIVER=1`).

use crate::support::*;
use uringmq::store::{image, Store, StoreConfig};

const PROTOCOLS: [Protocol; 2] = [Protocol::V3_1_1, Protocol::V5];

/// The image of client `id`'s session as broker `dir`'s store holds it (the broker stopped).
fn image_from_store(dir: &std::path::Path, id: &str) -> Vec<u8> {
    let (stores, recovered) = Store::open(dir, 1, &StoreConfig::default()).expect("store");
    drop(stores);
    let s = recovered
        .sessions
        .iter()
        .find(|s| &*s.meta.client_id == id)
        .expect("the session is in the store");
    image::encode(s)
}

/// A session written by one broker's store is installed into another, running broker: the
/// client connects there and finds its session (present), its queued messages (in order) and
/// its subscription (a new message is delivered). A second import of the id, or bytes that
/// are no image, are refused.
#[test]
fn an_imported_session_resumes_with_its_queue_and_subscriptions() {
    for proto in PROTOCOLS {
        let dir = scratch_dir("import");
        let old = broker_with(|c| c.persistence_dir = Some(dir.clone()));
        let (mut sub, _) = connect_persistent(old.local_addr(), proto, "mover");
        sub.subscribe("q/#", QoS::AtLeastOnce);
        sub.disconnect();
        let mut publ = Client::connect(old.local_addr(), proto, "pub");
        for i in 0..20 {
            publ.publish("q/x", format!("m{i}").as_bytes(), QoS::AtLeastOnce, false);
        }
        publ.disconnect();
        drop(old);
        let img = image_from_store(&dir, "mover");

        let new = broker();
        new.import_session(&img).expect("imported");
        let again = new.import_session(&img).unwrap_err();
        assert!(matches!(again, uringmq::ApiError::Session(_)), "{again:?}");
        assert!(new.import_session(b"not an image").is_err());
        let (mut sub, present) = connect_persistent(new.local_addr(), proto, "mover");
        assert!(present, "{proto:?}: session present on the new broker");
        for i in 0..20 {
            let p = sub.recv_publish();
            assert_eq!(&p.payload[..], format!("m{i}").as_bytes(), "{proto:?}");
        }
        let mut publ = Client::connect(new.local_addr(), proto, "pub");
        publ.publish("q/y", b"after", QoS::AtLeastOnce, false);
        assert_eq!(&sub.recv_publish().payload[..], b"after", "{proto:?}");
        sub.expect_nothing();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A session taken away from a running broker while its client is connected, and installed
/// into another: the old connection is closed (v5: DISCONNECT 0x8E), its will is not
/// published (the session goes on), and on the new broker the client finds its session, the
/// messages it had not acknowledged (sent again with DUP, same packet ids) and its
/// subscription; the old broker keeps nothing of it.
#[test]
fn a_connected_session_exported_resumes_on_another_broker() {
    for proto in PROTOCOLS {
        let (old, new) = (broker(), broker());
        let mut c = persistent(proto, "mover");
        c.will = Some(LastWill {
            topic: "will/mover".into(),
            payload: bytes::Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Default::default(),
        });
        let (mut sub, _) = Client::connect_with(old.local_addr(), c);
        sub.subscribe("q/#", QoS::AtLeastOnce);
        let mut watcher = Client::connect(old.local_addr(), proto, "watcher");
        watcher.subscribe("will/#", QoS::AtLeastOnce);
        let mut publ = Client::connect(old.local_addr(), proto, "pub");
        for i in 0..5 {
            publ.publish("q/x", format!("m{i}").as_bytes(), QoS::AtLeastOnce, false);
        }
        let unacked: Vec<Publish> = (0..5).map(|_| sub.recv_publish_noack()).collect();

        let img = old.export_session("mover").unwrap().expect("a session");
        let code = proto.is_v5().then_some(ReasonCode::SESSION_TAKEN_OVER);
        sub.expect_disconnect(code);
        watcher.expect_nothing();
        assert_eq!(old.export_session("mover").unwrap(), None, "nothing left");
        new.import_session(&img).unwrap();

        let (mut sub, present) = connect_persistent(new.local_addr(), proto, "mover");
        assert!(present, "{proto:?}: session present on the new broker");
        for (i, before) in unacked.iter().enumerate() {
            let p = sub.recv_publish();
            assert_eq!(&p.payload[..], format!("m{i}").as_bytes(), "{proto:?}");
            assert!(p.dup, "{proto:?}: resent with DUP");
            assert_eq!(p.packet_id, before.packet_id, "{proto:?}");
        }
        let mut publ = Client::connect(new.local_addr(), proto, "pub");
        publ.publish("q/y", b"after", QoS::AtLeastOnce, false);
        assert_eq!(&sub.recv_publish().payload[..], b"after", "{proto:?}");
        sub.expect_nothing();
    }
}
