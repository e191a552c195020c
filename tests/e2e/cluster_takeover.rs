//! Session takeover across the live nodes of a cluster (issue #19): a client whose session
//! lives on one node connects to another. What the client notices is what it notices when it
//! reconnects to another core of one broker: session present, its subscriptions kept, its
//! queued and unacknowledged QoS 1/2 messages delivered; the old connection closed (v5:
//! DISCONNECT 0x8E Session taken over); a clean start ends the session where it was (its
//! will published there); two CONNECTs of one id on two nodes at once leave one connection
//! and one session; and a move under load loses nothing (QoS 2: nothing twice). 3 nodes on a
//! real etcd, both protocol versions; run on both drivers (`MONOIO_FORCE_LEGACY_DRIVER=1`).

use crate::cluster::wait_until;
use crate::cluster_routing::{nodes, routes, wait_routes};
use crate::support::etcd::Etcd;
use crate::support::*;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

const PROTOCOLS: [Protocol; 2] = [Protocol::V3_1_1, Protocol::V5];

/// Receives `n` PUBLISH packets (acknowledged); their payloads.
fn payloads(c: &mut Client, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| String::from_utf8_lossy(&c.recv_publish().payload).into_owned())
        .collect()
}

fn numbered(tag: &str, n: usize) -> Vec<String> {
    (0..n).map(|k| format!("{tag}{k}")).collect()
}

/// Whether any of `nodes` has `id` connected.
fn connected_on(nodes: &[Broker], id: &str) -> usize {
    nodes
        .iter()
        .flat_map(|b| b.clients().expect("clients"))
        .filter(|c| c.client_id == id)
        .count()
}

/// The old connection of a session taken over: closed, after DISCONNECT 0x8E on v5.
fn expect_taken_over(old: &mut Client) {
    let code = old.proto.is_v5().then_some(ReasonCode::SESSION_TAKEN_OVER);
    old.expect_disconnect(code);
}

#[test]
fn a_connected_session_moves_to_another_node_in_both_versions() {
    let etcd = Etcd::start();
    let n = nodes(&etcd, "/xmove", &["a", "b", "c"]);
    let mut publ = Client::connect(n[2].local_addr(), Protocol::V5, "pub");
    for (i, proto) in PROTOCOLS.into_iter().enumerate() {
        let id = format!("mover{i}");
        let (mut old, _) = connect_persistent(n[0].local_addr(), proto, &id);
        old.subscribe(&format!("m/{i}/#"), QoS::AtLeastOnce);
        wait_routes(&n[2], "a", 1);
        for m in numbered("q", 5) {
            publ.publish(&format!("m/{i}/x"), m.as_bytes(), QoS::AtLeastOnce, false);
        }
        // Received on a and never acknowledged: it moves in flight.
        let first = old.recv_publish_noack();
        assert_eq!(&first.payload[..], b"q0");

        let (mut new, present) = connect_persistent(n[1].local_addr(), proto, &id);
        assert!(present, "{proto:?}: the session came from a");
        expect_taken_over(&mut old);
        assert_eq!(payloads(&mut new, 5), numbered("q", 5), "{proto:?}");
        // Its subscription moved with it: a new message from c reaches it on b.
        wait_routes(&n[2], "b", i as u64 + 1);
        publ.publish(&format!("m/{i}/x"), b"after", QoS::AtLeastOnce, false);
        assert_eq!(payloads(&mut new, 1), ["after"], "{proto:?}");
        new.expect_nothing();
        assert_eq!(connected_on(&n, &id), 1);
        wait_routes(&n[2], "a", 0);
    }
}

#[test]
fn an_offline_session_moves_with_its_queue_and_back() {
    let etcd = Etcd::start();
    let n = nodes(&etcd, "/xoffline", &["a", "b", "c"]);
    let mut publ = Client::connect(n[2].local_addr(), Protocol::V5, "pub");
    for (i, proto) in PROTOCOLS.into_iter().enumerate() {
        let id = format!("away{i}");
        let topic = format!("o/{i}");
        let (mut c, _) = connect_persistent(n[0].local_addr(), proto, &id);
        c.subscribe(&topic, QoS::AtLeastOnce);
        c.disconnect();
        wait_routes(&n[2], "a", 1);
        for m in numbered("q", 10) {
            publ.publish(&topic, m.as_bytes(), QoS::AtLeastOnce, false);
        }
        let (mut c, present) = connect_persistent(n[1].local_addr(), proto, &id);
        assert!(present, "{proto:?}");
        assert_eq!(payloads(&mut c, 10), numbered("q", 10), "{proto:?}");
        c.expect_nothing();
        c.disconnect();
        // And back to a, where it started.
        wait_routes(&n[2], "b", 1);
        publ.publish(&topic, b"back", QoS::AtLeastOnce, false);
        let (mut c, present) = connect_persistent(n[0].local_addr(), proto, &id);
        assert!(present, "{proto:?}");
        assert_eq!(payloads(&mut c, 1), ["back"], "{proto:?}");
        // Ended here: the next iteration starts with no route of it anywhere.
        drop(c);
        let mut clean = Client::connect(n[0].local_addr(), proto, &id);
        clean.ping();
        clean.disconnect();
        wait_routes(&n[2], "a", 0);
    }
}

#[test]
fn a_clean_start_on_another_node_ends_the_session_there_with_its_will() {
    let etcd = Etcd::start();
    let n = nodes(&etcd, "/xclean", &["a", "b", "c"]);
    let mut watcher = Client::connect(n[2].local_addr(), Protocol::V5, "watch");
    watcher.subscribe("wills/#", QoS::AtLeastOnce);
    wait_routes(&n[0], "c", 1);
    for (i, proto) in PROTOCOLS.into_iter().enumerate() {
        let id = format!("clean{i}");
        let mut c = persistent(proto, &id);
        c.will = Some(LastWill {
            topic: format!("wills/{i}").as_str().into(),
            payload: bytes::Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Default::default(),
        });
        let (mut old, _) = Client::connect_with(n[0].local_addr(), c);
        old.subscribe("s/#", QoS::AtLeastOnce);

        let (new, ack) = Client::connect_with(n[1].local_addr(), connect_packet(proto, &id));
        assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
        assert!(!ack.session_present, "{proto:?}: clean start");
        expect_taken_over(&mut old);
        let will = watcher.recv_publish();
        assert_eq!(will.topic, format!("wills/{i}").as_str(), "{proto:?}");
        // The session ended on a: a persistent CONNECT there finds none.
        new.disconnect();
        let (_c, present) = connect_persistent(n[0].local_addr(), proto, &id);
        assert!(
            !present,
            "{proto:?}: the session ended with the clean start"
        );
    }
    watcher.expect_nothing();
}

#[test]
fn no_local_holds_for_what_the_client_publishes_while_its_session_moves() {
    let etcd = Etcd::start();
    let n = nodes(&etcd, "/xnolocal", &["a", "b", "c"]);
    // Another subscriber on a shows when a message has reached a (and the stub there).
    let mut watcher = Client::connect(n[0].local_addr(), Protocol::V5, "watcher");
    watcher.subscribe("nl/#", QoS::AtLeastOnce);
    let me = persistent(Protocol::V5, "self-talker");
    let (mut old, _) = Client::connect_with(n[0].local_addr(), me.clone());
    let no_local = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: true,
        ..Default::default()
    };
    old.subscribe_with(&[("nl/#", no_local)], Default::default());
    wait_routes(&n[1], "a", 1);
    let (mut new, ack) = Client::connect_with(n[1].local_addr(), me);
    assert!(ack.session_present);
    expect_taken_over(&mut old);
    // Within the move window: a's stub still gets what b routes to a, and forwards it.
    new.publish("nl/x", b"mine", QoS::AtMostOnce, false);
    assert_eq!(&watcher.recv_publish().payload[..], b"mine");
    let mut other = Client::connect(n[0].local_addr(), Protocol::V5, "other");
    other.publish("nl/x", b"theirs", QoS::AtLeastOnce, false);
    assert_eq!(
        payloads(&mut new, 1),
        ["theirs"],
        "its own message came back through the stub"
    );
    new.expect_nothing();
}

#[test]
fn two_connects_of_one_id_on_two_nodes_leave_one_connection_and_one_session() {
    let etcd = Etcd::start();
    let n = nodes(&etcd, "/xrace", &["a", "b", "c"]);
    let mut publ = Client::connect(n[2].local_addr(), Protocol::V5, "pub");
    for round in 0..6 {
        let id = format!("racer{round}");
        let topic = format!("race/{round}");
        // A session to take, offline on c.
        let (mut c, _) = connect_persistent(n[2].local_addr(), Protocol::V5, &id);
        c.subscribe(&topic, QoS::AtLeastOnce);
        c.disconnect();
        let before = ["a", "b"].map(|node| routes(&n[2], node));
        let go = Arc::new(Barrier::new(2));
        let racers: Vec<_> = [n[0].local_addr(), n[1].local_addr()]
            .into_iter()
            .map(|addr| {
                let (go, id) = (go.clone(), id.clone());
                std::thread::spawn(move || {
                    go.wait();
                    connect_persistent(addr, Protocol::V5, &id).0
                })
            })
            .collect();
        let mut racers: Vec<Client> = racers.into_iter().map(|t| t.join().unwrap()).collect();
        // One of them is taken over by the other: DISCONNECT 0x8E.
        let deadline = Instant::now() + WAIT;
        let loser = loop {
            assert!(
                Instant::now() < deadline,
                "round {round}: neither was taken over"
            );
            let lost = racers.iter_mut().position(|r| {
                matches!(r.recv_within(Duration::from_millis(20)),
                    Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::SESSION_TAKEN_OVER)
            });
            if let Some(l) = lost {
                break l;
            }
        };
        let mut winner = racers.remove(1 - loser);
        winner.ping();
        assert_eq!(connected_on(&n, &id), 1, "round {round}");
        // One session: the subscription reaches the winner, once.
        let (w, l) = (1 - loser, loser);
        wait_until("c knows the session's one route", WAIT, || {
            routes(&n[2], ["a", "b"][w]) == before[w] + 1
                && routes(&n[2], ["a", "b"][l]) == before[l]
        });
        publ.publish(&topic, b"once", QoS::AtLeastOnce, false);
        assert_eq!(payloads(&mut winner, 1), ["once"], "round {round}");
        winner.expect_nothing();
        winner.disconnect();
    }
}

/// A QoS 2 receiver as a client library keeps it across its connections: a PUBLISH whose
/// packet id it acknowledged with PUBREC and that was not released yet is the sender's resend,
/// not a new message.
#[derive(Default)]
struct Received {
    counts: HashMap<String, usize>,
    unreleased: HashSet<u16>,
}

impl Received {
    /// Handles the next packet from the broker (acknowledging it); false on a close.
    fn next(&mut self, c: &mut Client) -> bool {
        let p = c.recv_within(WAIT);
        self.take(c, p)
    }

    fn take(&mut self, c: &mut Client, p: Option<Packet>) -> bool {
        match p {
            Some(Packet::Publish(p)) => {
                let fresh = p.qos != QoS::ExactlyOnce || self.unreleased.insert(p.packet_id);
                if fresh {
                    let payload = String::from_utf8_lossy(&p.payload).into_owned();
                    *self.counts.entry(payload).or_default() += 1;
                }
                match p.qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => c.send(&Packet::PubAck(Ack::new(p.packet_id))),
                    QoS::ExactlyOnce => c.send(&Packet::PubRec(Ack::new(p.packet_id))),
                }
            }
            Some(Packet::PubRel(a)) => {
                self.unreleased.remove(&a.packet_id);
                c.send(&Packet::PubComp(Ack::new(a.packet_id)));
            }
            Some(Packet::Disconnect(_)) | None => return false,
            Some(_) => {}
        }
        true
    }
}

#[test]
fn a_move_under_load_loses_nothing_and_delivers_qos2_once() {
    let etcd = Etcd::start();
    let n = nodes(&etcd, "/xload", &["a", "b", "c"]);
    let (mut sub, _) = connect_persistent(n[0].local_addr(), Protocol::V5, "loaded");
    sub.subscribe("load/#", QoS::ExactlyOnce);
    wait_routes(&n[2], "a", 1);
    // c publishes QoS 1 and QoS 2 in turn until told to stop; what it got acknowledged counts.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let publisher = {
        let (addr, stop, acked) = (n[2].local_addr(), stop.clone(), acked.clone());
        std::thread::spawn(move || {
            let mut p = Client::connect(addr, Protocol::V5, "publisher");
            for k in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (qos, tag) = [(QoS::AtLeastOnce, "one"), (QoS::ExactlyOnce, "two")][k % 2];
                let payload = format!("{tag}{k}");
                p.publish("load/x", payload.as_bytes(), qos, false);
                acked.lock().unwrap().push(payload);
            }
        })
    };
    let mut got = Received::default();
    let read_until = |got: &mut Received, c: &mut Client, count: usize| {
        while got.counts.len() < count {
            assert!(got.next(c), "closed at {}", got.counts.len());
        }
    };
    read_until(&mut got, &mut sub, 300);
    let (mut moved, present) = connect_persistent(n[1].local_addr(), Protocol::V5, "loaded");
    assert!(present);
    // What the old connection had read before its close still counts.
    while got.next(&mut sub) {}
    let more = got.counts.len() + 300;
    read_until(&mut got, &mut moved, more);
    stop.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    while got.counts.len() < acked.len() {
        if !got.next(&mut moved) {
            break;
        }
    }
    let lost: Vec<&String> = acked
        .iter()
        .filter(|m| !got.counts.contains_key(*m))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged messages lost, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    let twice: Vec<_> = got
        .counts
        .iter()
        .filter(|(m, k)| m.starts_with("two") && **k > 1)
        .collect();
    assert!(
        twice.is_empty(),
        "QoS 2 messages delivered twice: {twice:?}"
    );
    eprintln!("{} messages across a move under load", acked.len());
}
