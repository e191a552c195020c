//! Tests of the store: format, round trips, corruption, snapshots, failures, recovery.

use super::*;
use bytes::Bytes;
use std::path::Path;
use std::rc::Rc;
use std::time::{Instant, UNIX_EPOCH};
use uringmq_codec::{PublishProperties, QoS, RetainHandling};

/// Runs `f` on a monoio runtime of each driver (io_uring where the kernel allows it).
fn on_both_drivers<F, Fut>(f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("epoll runtime")
        .block_on(f());
    if monoio::utils::detect_uring() {
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
            .expect("io_uring runtime")
            .block_on(f());
    }
}

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "uringmq-store-{name}-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos() ^ rand_seed()
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn rand_seed() -> u128 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn msg(topic: &str, payload: &str, at: Instant) -> Arc<Message> {
    Arc::new(Message {
        topic: topic.into(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: PublishProperties::default(),
        origin: None,
        received_at: at,
    })
}

fn meta(id: &str) -> SessionMeta {
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

fn queued(id: &str, m: Arc<Message>) -> Record {
    Record::Queued {
        client_id: id.into(),
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

fn sub(id: &str, filter: &str) -> Record {
    Record::SubAdd {
        client_id: id.into(),
        filter: filter.into(),
        opts: SubOptions {
            qos: QoS::ExactlyOnce,
            no_local: true,
            retain_as_published: true,
            retain_handling: RetainHandling::DoNotSend,
            id: Some(7),
        },
    }
}

fn cfg(sync: SyncPolicy) -> StoreConfig {
    StoreConfig {
        sync,
        ..StoreConfig::default()
    }
}

/// Opens `dir` with `shards` shards, runs `f` with the stores (their tasks spawned), closes.
async fn with_stores<F>(dir: &Path, shards: usize, c: &StoreConfig, f: F) -> Recovered
where
    F: FnOnce(&[Rc<ShardStore>]),
{
    let (stores, rec) = Store::open(dir, shards, c).expect("open");
    let stores: Vec<Rc<ShardStore>> = stores.into_iter().map(Rc::new).collect();
    for s in &stores {
        monoio::spawn(s.clone().run());
    }
    f(&stores);
    for s in &stores {
        s.close().await;
    }
    rec
}

fn find<'a>(rec: &'a Recovered, id: &str) -> Option<&'a RecoveredSession> {
    rec.sessions.iter().find(|s| &*s.meta.client_id == id)
}

#[test]
fn a_session_its_messages_and_retained_survive_a_restart() {
    on_both_drivers(|| async {
        let dir = tmpdir("roundtrip");
        let c = cfg(SyncPolicy::Always);
        let now = Instant::now();
        with_stores(&dir, 2, &c, |s| {
            s[0].push(Record::Session {
                meta: meta("c1"),
                fresh: true,
            });
            s[0].push(sub("c1", "a/+"));
            let t = s[0].push(queued("c1", msg("a/b", "one", now)));
            s[0].push(queued("c1", msg("a/c", "two", now)));
            s[0].push(Record::MsgState {
                client_id: "c1".into(),
                id: t.stamp,
                packet_id: Some(5),
                state: MsgState::Sent,
            });
            s[0].push(Record::Qos2Received {
                client_id: "c1".into(),
                packet_id: 9,
            });
            s[1].push(Record::RetainSet {
                msg: msg("r/1", "kept", now),
            });
        })
        .await;
        let rec = with_stores(&dir, 1, &c, |_| {}).await;
        let s = find(&rec, "c1").expect("session recovered");
        assert_eq!(s.subs.len(), 1);
        assert_eq!(&*s.subs[0].0, "a/+");
        assert_eq!(s.subs[0].1.id, Some(7));
        let payloads: Vec<_> = s.messages.iter().map(|m| m.msg.payload.clone()).collect();
        assert_eq!(payloads, vec![Bytes::from("one"), Bytes::from("two")]);
        assert_eq!(s.messages[0].packet_id, Some(5));
        assert_eq!(s.messages[0].state, MsgState::Sent);
        assert_eq!(s.qos2_in, vec![9]);
        assert!(
            s.meta.expires_at.is_some(),
            "connected at stop: expiry starts"
        );
        assert_eq!(rec.retained.len(), 1);
        assert_eq!(rec.retained[0].payload, Bytes::from("kept"));
        let _ = std::fs::remove_dir_all(&dir);
    });
}
