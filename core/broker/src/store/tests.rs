//! Tests of the store: format, round trips, corruption, snapshots, failures, recovery.

use super::samples::{message, meta, queued};
use super::*;
use super::{format, recover, shard};
use bytes::Bytes;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
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
    message(topic, Bytes::copy_from_slice(payload.as_bytes()), at)
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

/// Opens `dir` with one shard and spawns its store's task.
fn one_store(dir: &Path, c: &StoreConfig) -> Rc<ShardStore> {
    let (stores, _) = Store::open(dir, 1, c).expect("open");
    let s = Rc::new(stores.into_iter().next().expect("one shard"));
    monoio::spawn(s.clone().run());
    s
}

/// Closes the one store of `dir` and opens the directory again: what a restart recovers.
async fn reopen(s: Rc<ShardStore>, dir: &Path, c: &StoreConfig) -> Recovered {
    s.close().await;
    drop(s);
    Store::open(dir, 1, c).expect("reopen").1
}

/// A store on `dir` (`always`) whose log writes fail with ENOSPC while the returned count is
/// above zero (each failed write takes one off): a full disk. The config opens it again.
fn failing_store(
    dir: &Path,
    initially_failing: bool,
) -> (Rc<ShardStore>, Arc<AtomicU32>, StoreConfig) {
    let fail = Arc::new(AtomicU32::new(u32::from(initially_failing)));
    let c = StoreConfig {
        fail_writes: Some(fail.clone()),
        ..cfg(SyncPolicy::Always)
    };
    (one_store(dir, &c), fail, c)
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

/// One record of each kind, with every optional field set.
fn every_kind(clocks: &format::Clocks) -> Vec<Record> {
    let at = clocks.instant;
    let mut m = (*msg("t/x", "payload", at)).clone();
    m.properties = PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(60),
        response_topic: Some("resp".into()),
        correlation_data: Some(Bytes::from_static(b"\x00\x01")),
        user_properties: vec![("k".into(), "v".into())],
        content_type: Some("text/plain".into()),
        ..PublishProperties::default()
    };
    m.retain = true;
    let m = Arc::new(m);
    let mut me = meta("client");
    me.expires_at = Some(UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123));
    me.will_delay = 5;
    me.will = Some(Box::new(uringmq_codec::LastWill {
        topic: "will/t".into(),
        payload: Bytes::from_static(b"bye"),
        qos: QoS::ExactlyOnce,
        retain: true,
        properties: uringmq_codec::WillProperties {
            will_delay_interval: Some(5),
            payload_format_indicator: Some(0),
            message_expiry_interval: Some(9),
            content_type: Some("c".into()),
            response_topic: Some("r".into()),
            correlation_data: Some(Bytes::from_static(b"cd")),
            user_properties: vec![("a".into(), "b".into())],
        },
    }));
    let client: Arc<str> = "client".into();
    let mut q = queued("client", m.clone());
    if let Record::Queued { msg, .. } = &mut q {
        msg.id = 42;
        msg.packet_id = Some(3);
        msg.state = MsgState::Released;
        msg.shared_group = Some("g".into());
        msg.delivery.sub_ids = smallvec::smallvec![1, 2];
    }
    vec![
        Record::Session {
            meta: me.clone(),
            fresh: true,
        },
        Record::Session {
            meta: meta("client"),
            fresh: false,
        },
        sub("client", "a/#"),
        Record::SubRemove {
            client_id: client.clone(),
            filter: "a/#".into(),
        },
        q,
        Record::MsgState {
            client_id: client.clone(),
            id: 42,
            packet_id: None,
            state: MsgState::Queued,
        },
        Record::MsgDone {
            client_id: client.clone(),
            id: 42,
        },
        Record::Qos2Received {
            client_id: client.clone(),
            packet_id: 65535,
        },
        Record::Qos2Released {
            client_id: client.clone(),
            packet_id: 1,
        },
        Record::RetainSet { msg: m },
        Record::RetainClear {
            topic: "t/x".into(),
        },
        Record::SessionMoved {
            client_id: client.clone(),
        },
        Record::SessionGone { client_id: client },
        Record::SnapshotEnd { first_segment: 7 },
    ]
}

/// Clocks at a whole millisecond, so receive times survive the round trip exactly.
fn exact_clocks() -> format::Clocks {
    format::Clocks {
        instant: Instant::now(),
        wall: UNIX_EPOCH + std::time::Duration::from_millis(1_800_000_000_000),
    }
}

/// A segment holding `recs` (stamps 1..) and the offset where each record starts.
fn segment(recs: &[Record], clocks: &format::Clocks) -> (Vec<u8>, Vec<usize>) {
    let mut buf = shard::segment_header().to_vec();
    let mut starts = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        starts.push(buf.len());
        format::encode(&mut buf, i as u64 + 1, r, clocks);
    }
    (buf, starts)
}

/// Decodes a segment's records as far as they are good: (stamp, Debug text) each, and the
/// offset of the first bad one.
fn read_back(data: &[u8], clocks: &format::Clocks) -> (Vec<(u64, String)>, Option<usize>) {
    let data = Bytes::copy_from_slice(data);
    let mut out = Vec::new();
    let mut off = format::HEADER_LEN;
    while off < data.len() {
        match format::decode(&data.slice(off..), clocks) {
            Ok((d, n)) => {
                out.push((d.stamp, format!("{:?}", d.rec)));
                off += n;
            }
            Err(_) => return (out, Some(off)),
        }
    }
    (out, None)
}

#[test]
fn every_record_kind_round_trips_through_the_format() {
    let clocks = exact_clocks();
    let recs = every_kind(&clocks);
    let (buf, _) = segment(&recs, &clocks);
    let (back, bad_at) = read_back(&buf, &clocks);
    assert_eq!(bad_at, None);
    let want: Vec<(u64, String)> = recs
        .iter()
        .enumerate()
        .map(|(i, r)| (i as u64 + 1, format!("{r:?}")))
        .collect();
    assert_eq!(back, want);
}

#[test]
fn a_torn_last_record_is_skipped_at_every_cut() {
    let clocks = exact_clocks();
    let recs = every_kind(&clocks);
    let (buf, starts) = segment(&recs, &clocks);
    let (full, _) = read_back(&buf, &clocks);
    // Cut inside each of the last three records (the queued message, a long one, included).
    for k in [recs.len() - 3, recs.len() - 2, recs.len() - 1] {
        let end = starts.get(k + 1).copied().unwrap_or(buf.len());
        for cut in starts[k]..end {
            let (back, bad_at) = read_back(&buf[..cut], &clocks);
            assert_eq!(back, full[..k], "cut at {cut}");
            let torn = (cut > starts[k]).then_some(starts[k]);
            assert_eq!(bad_at, torn, "cut at {cut}");
        }
    }
}

#[test]
fn a_flipped_bit_never_yields_a_wrong_record() {
    let clocks = exact_clocks();
    let recs = every_kind(&clocks);
    let (buf, starts) = segment(&recs, &clocks);
    let (full, _) = read_back(&buf, &clocks);
    // Every bit of the queued-message record (in the middle) and of the last record.
    for k in [4, recs.len() - 1] {
        let end = starts.get(k + 1).copied().unwrap_or(buf.len());
        for byte in starts[k]..end {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                let (back, bad_at) = read_back(&bad, &clocks);
                assert_eq!(back, full[..k], "flip of bit {bit} of byte {byte}");
                assert_eq!(bad_at, Some(starts[k]), "flip at {byte}");
            }
        }
    }
}

/// The segment files of `dir`'s current generation.
fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for gen in std::fs::read_dir(dir).unwrap().flatten() {
        if !gen.path().is_dir() {
            continue;
        }
        for shard in std::fs::read_dir(gen.path()).unwrap().flatten() {
            for seg in std::fs::read_dir(shard.path()).unwrap().flatten() {
                out.push(seg.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_truncated_store_file_is_reported_and_the_rest_recovered() {
    on_both_drivers(|| async {
        let dir = tmpdir("truncated");
        let c = cfg(SyncPolicy::Always);
        let now = Instant::now();
        // A store whose only segment holds the open's image, then two pushed records.
        with_stores(&dir, 1, &c, |s| {
            s[0].push(Record::Session {
                meta: meta("c1"),
                fresh: true,
            });
            s[0].push(sub("c1", "x/#"));
        })
        .await;
        with_stores(&dir, 1, &c, |s| {
            s[0].push(queued("c1", msg("x/1", "lost-tail", now)));
        })
        .await;
        let segs = segments(&dir);
        assert_eq!(segs.len(), 1);
        let len = std::fs::metadata(&segs[0]).unwrap().len();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&segs[0])
            .unwrap();
        f.set_len(len - 3).unwrap();
        drop(f);
        let rec = with_stores(&dir, 1, &c, |_| {}).await;
        assert_eq!(rec.report.skipped.len(), 1, "{:?}", rec.report);
        let sk = &rec.report.skipped[0];
        assert_eq!(sk.file, segs[0]);
        assert!(sk.offset > 0 && sk.offset < len, "{sk:?}");
        let s = find(&rec, "c1").expect("session before the tail survives");
        assert_eq!(s.subs.len(), 1);
        assert!(s.messages.is_empty(), "the torn message is not recovered");
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn a_turn_of_records_is_one_write_and_one_sync() {
    on_both_drivers(|| async {
        let dir = tmpdir("group");
        let s = one_store(&dir, &cfg(SyncPolicy::Always));
        let now = Instant::now();
        s.push(Record::Session {
            meta: meta("c"),
            fresh: true,
        });
        let mut last = s.position();
        for i in 0..100 {
            last = s.push(queued("c", msg("t", &i.to_string(), now)));
        }
        s.wait_durable(last).await.expect("durable");
        assert!(s.is_durable(last) && s.marks().is_durable(last));
        let st = s.stats();
        assert_eq!((st.records, st.writes, st.syncs), (101, 1, 1), "{st:?}");
        s.close().await;
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn a_session_moved_between_shards_recovers_as_its_newest_shard_left_it() {
    on_both_drivers(|| async {
        let dir = tmpdir("moved");
        let c = cfg(SyncPolicy::Always);
        with_stores(&dir, 2, &c, |s| {
            s[0].push(Record::Session {
                meta: meta("c"),
                fresh: true,
            });
            s[0].push(sub("c", "old/#"));
            // The takeover: shard 1 pushes the session's image (its subscription changed),
            // and shard 0's SessionMoved is lost in the crash.
            s[1].push(Record::Session {
                meta: meta("c"),
                fresh: true,
            });
            s[1].push(sub("c", "new/#"));
        })
        .await;
        // Three shards now; the merged state has only the newest version.
        let rec = with_stores(&dir, 3, &c, |s| {
            let home = home_shard("c", 3);
            s[home].push(Record::SessionGone {
                client_id: "c".into(),
            });
        })
        .await;
        let s = find(&rec, "c").expect("session");
        let filters: Vec<&str> = s.subs.iter().map(|(f, _)| &**f).collect();
        assert_eq!(filters, vec!["new/#"]);
        assert_eq!(s.shard, home_shard("c", 3));
        let rec = with_stores(&dir, 1, &c, |_| {}).await;
        assert!(find(&rec, "c").is_none(), "an ended session stays ended");
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn recovery_works_across_changes_of_the_shard_count() {
    on_both_drivers(|| async {
        let dir = tmpdir("reshard");
        let c = cfg(SyncPolicy::Interval(std::time::Duration::from_millis(50)));
        let now = Instant::now();
        with_stores(&dir, 3, &c, |s| {
            for i in 0..60 {
                let id = format!("c{i}");
                s[i % 3].push(Record::Session {
                    meta: meta(&id),
                    fresh: true,
                });
                s[i % 3].push(sub(&id, &format!("t/{i}")));
            }
            for i in 0..20 {
                let topic = format!("r/{i}");
                s[retained_owner(&topic, 3)].push(Record::RetainSet {
                    msg: msg(&topic, "v", now),
                });
            }
        })
        .await;
        for shards in [2, 4, 1] {
            let rec = with_stores(&dir, shards, &c, |_| {}).await;
            assert_eq!(rec.sessions.len(), 60, "{shards} shards");
            assert_eq!(rec.retained.len(), 20, "{shards} shards");
            assert!(rec.sessions.iter().all(|s| s.subs.len() == 1));
            assert!(rec
                .sessions
                .iter()
                .all(|s| s.shard == home_shard(&s.meta.client_id, shards)));
        }
        let gens: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .collect();
        assert_eq!(gens.len(), 1, "old generations are deleted");
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn expired_sessions_and_messages_are_dropped_at_open() {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap()
        .block_on(async {
            let dir = tmpdir("expiry");
            let c = cfg(SyncPolicy::Always);
            let now = Instant::now();
            let wall = std::time::SystemTime::now();
            with_stores(&dir, 1, &c, |s| {
                let mut gone_soon = meta("short");
                gone_soon.session_expiry = 10;
                gone_soon.expires_at = Some(wall + std::time::Duration::from_secs(10));
                s[0].push(Record::Session {
                    meta: gone_soon,
                    fresh: true,
                });
                s[0].push(Record::Session {
                    meta: meta("long"),
                    fresh: true,
                });
                let mut m = (*msg("t", "expiring", now)).clone();
                m.properties.message_expiry_interval = Some(30);
                s[0].push(queued("long", Arc::new(m)));
                s[0].push(queued("long", msg("t", "kept", now)));
            })
            .await;
            // An hour later: "short" (10 s) and the 30 s message are gone.
            let later = wall + std::time::Duration::from_secs(3600);
            let (_, rec) = recover::open(&dir, 1, &c, later).unwrap();
            assert!(find(&rec, "short").is_none());
            let s = find(&rec, "long").expect("long session");
            assert_eq!(s.messages.len(), 1);
            assert_eq!(s.messages[0].msg.payload, Bytes::from("kept"));
            assert_eq!(rec.report.expired_sessions, 1);
            assert_eq!(rec.report.expired_messages, 1);
            let _ = std::fs::remove_dir_all(&dir);
        });
}

/// Lets the store's task run (its commits happen between the shard's turns).
async fn turns(n: usize) {
    for _ in 0..n {
        monoio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

#[test]
fn snapshots_keep_the_log_near_the_size_of_live_state() {
    on_both_drivers(|| async {
        let dir = tmpdir("compact");
        let c = StoreConfig {
            compact_min_bytes: 16 << 10,
            snapshot_chunk_bytes: 1024,
            ..cfg(SyncPolicy::Always)
        };
        let s = one_store(&dir, &c);
        let now = Instant::now();
        for i in 0..40 {
            let id = format!("c{i}");
            s.push(Record::Session {
                meta: meta(&id),
                fresh: true,
            });
            s.push(sub(&id, "keep/#"));
            s.push(queued(id.as_str(), msg("keep", "live", now)));
        }
        // Much more churn than live state: messages queued and done, over many turns.
        let payload = "x".repeat(200);
        for round in 0..300 {
            let id = format!("c{}", round % 40);
            let t = s.push(queued(id.as_str(), msg("churn", &payload, now)));
            s.push(Record::MsgDone {
                client_id: id.as_str().into(),
                id: t.stamp,
            });
            turns(1).await;
        }
        let last = s.position();
        s.wait_durable(last).await.unwrap();
        let st = s.stats();
        assert!(st.snapshots >= 2, "{st:?}");
        assert!(st.bytes > 100 << 10, "churn written: {st:?}");
        assert!(st.log_bytes < 48 << 10, "log near live state: {st:?}");
        s.close().await;
        drop(s);
        turns(20).await; // old segments are deleted off the shard's thread
        let on_disk: u64 = segments(&dir)
            .iter()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum();
        assert!(on_disk < 48 << 10, "{on_disk} bytes on disk");
        let (_, rec) = Store::open(&dir, 2, &c).unwrap();
        assert_eq!(rec.sessions.len(), 40);
        for sess in &rec.sessions {
            assert_eq!(sess.subs.len(), 1);
            let p: Vec<_> = sess
                .messages
                .iter()
                .map(|m| m.msg.payload.clone())
                .collect();
            assert_eq!(p, vec![Bytes::from("live")], "{}", sess.meta.client_id);
        }
        assert!(rec.report.skipped.is_empty(), "{:?}", rec.report.skipped);
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn a_full_disk_fails_the_turns_tickets_and_the_store_recovers_when_space_returns() {
    on_both_drivers(|| async {
        let dir = tmpdir("enospc");
        let (s, fail, c) = failing_store(&dir, false);
        let ok = s.push(Record::Session {
            meta: meta("c"),
            fresh: true,
        });
        s.wait_durable(ok).await.unwrap();
        fail.store(1, Ordering::Relaxed);
        let lost = s.push(sub("c", "during/full"));
        assert_eq!(s.wait_durable(lost).await, Err(StoreError::Full));
        assert!(
            s.failing(),
            "refuse new persistent state while the disk is full"
        );
        assert_eq!(s.stats().write_errors, 1);
        // Space is back: the next write succeeds and a snapshot restates the live state.
        let after = s.push(sub("c", "after/full"));
        s.wait_durable(after).await.unwrap();
        assert!(!s.failing());
        // The snapshot runs in the store's task: wait for it (bounded), not for a time.
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while s.stats().snapshots == 0 && Instant::now() < deadline {
            turns(5).await;
        }
        assert!(s.stats().snapshots >= 1, "{:?}", s.stats());
        let rec = reopen(s, &dir, &c).await;
        let sess = find(&rec, "c").unwrap();
        let mut f: Vec<&str> = sess.subs.iter().map(|(f, _)| &**f).collect();
        f.sort_unstable();
        // The failed record stays in the live state (the caller undoes what it refuses).
        assert_eq!(f, vec!["after/full", "during/full"]);
        assert!(rec.report.skipped.is_empty(), "{:?}", rec.report.skipped);
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn a_failing_store_retries_by_itself_when_nothing_is_pushed() {
    on_both_drivers(|| async {
        let dir = tmpdir("retry");
        let (s, _, c) = failing_store(&dir, true);
        let t = s.push(Record::Session {
            meta: meta("c"),
            fresh: true,
        });
        assert!(s.wait_durable(t).await.is_err());
        assert!(s.failing());
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while s.failing() && Instant::now() < deadline {
            turns(10).await;
        }
        assert!(!s.failing(), "the 1 s retry (a snapshot) succeeded");
        let rec = reopen(s, &dir, &c).await;
        assert!(find(&rec, "c").is_some());
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn a_directory_in_use_is_refused_until_its_stores_are_dropped() {
    let dir = tmpdir("lock");
    let c = cfg(SyncPolicy::Never);
    let (first, _) = Store::open(&dir, 2, &c).unwrap();
    let err = Store::open(&dir, 1, &c).err().expect("second open refused");
    assert!(err.to_string().contains("in use"), "{err}");
    drop(first);
    assert!(Store::open(&dir, 1, &c).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes `segs` as the segments of one shard's log in generation 1 of `dir`.
fn hand_made_log(dir: &Path, segs: &[Vec<Record>]) {
    let log = dir.join("gen-00000001").join("shard-000");
    std::fs::create_dir_all(&log).unwrap();
    std::fs::write(dir.join("CURRENT"), "gen-00000001\n").unwrap();
    let clocks = exact_clocks();
    let mut stamp = 0;
    for (i, recs) in segs.iter().enumerate() {
        let mut buf = shard::segment_header().to_vec();
        for r in recs {
            stamp += 1;
            format::encode(&mut buf, stamp, r, &clocks);
        }
        std::fs::write(shard::segment_path(&log, i as u64 + 1), buf).unwrap();
    }
}

fn fresh_session(id: &str) -> Record {
    Record::Session {
        meta: meta(id),
        fresh: true,
    }
}

#[test]
fn a_snapshot_cut_short_or_not_yet_cleaned_up_recovers_the_same_state() {
    let c = cfg(SyncPolicy::Never);
    let older = vec![
        fresh_session("x"),
        sub("x", "a"),
        fresh_session("y"),
        sub("y", "b"),
        fresh_session("z"),
        Record::SessionGone {
            client_id: "z".into(),
        },
    ];
    // A crash in the middle of a snapshot: x's image is written, y's not yet; a record
    // pushed meanwhile follows it.
    let partial = vec![fresh_session("x"), sub("x", "a"), sub("x", "c")];
    // A crash after the snapshot's end was synced, before the older segment was deleted.
    let complete = vec![
        fresh_session("x"),
        sub("x", "a"),
        fresh_session("y"),
        sub("y", "b"),
        Record::SnapshotEnd { first_segment: 2 },
        sub("y", "d"),
    ];
    for (case, newer, want_x, want_y) in [
        ("partial", partial, vec!["a", "c"], vec!["b"]),
        ("complete", complete, vec!["a"], vec!["b", "d"]),
    ] {
        let dir = tmpdir(case);
        hand_made_log(&dir, &[older.clone(), newer]);
        let (_, rec) = Store::open(&dir, 1, &c).unwrap();
        let filters = |id: &str| {
            let mut f: Vec<String> = find(&rec, id)
                .unwrap_or_else(|| panic!("{case}: {id} recovered"))
                .subs
                .iter()
                .map(|(f, _)| f.to_string())
                .collect();
            f.sort();
            f
        };
        assert_eq!(filters("x"), want_x, "{case}");
        assert_eq!(filters("y"), want_y, "{case}");
        assert!(find(&rec, "z").is_none(), "{case}");
        assert!(rec.report.skipped.is_empty(), "{case}");
        assert_eq!(rec.report.files, 2, "{case}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn interval_syncs_by_itself_and_never_does_not_sync() {
    on_both_drivers(|| async {
        for (sync, syncs) in [
            (
                SyncPolicy::Interval(std::time::Duration::from_millis(30)),
                1,
            ),
            (SyncPolicy::Never, 0),
        ] {
            let dir = tmpdir("policy");
            let s = one_store(&dir, &cfg(sync));
            let t = s.push(fresh_session("c"));
            // Nothing else is pushed: the interval's timer (or, for never, the write) makes
            // the record durable.
            s.wait_durable(t).await.unwrap();
            assert_eq!(s.stats().syncs, syncs, "{sync:?}");
            let rec = reopen(s, &dir, &cfg(sync)).await;
            assert!(
                find(&rec, "c").is_some(),
                "{sync:?}: a clean close keeps it"
            );
            let _ = std::fs::remove_dir_all(&dir);
        }
    });
}
