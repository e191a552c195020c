//! The cluster's shared session store on a real Redis and a real etcd (issue #19): a node
//! killed with -9 under QoS 1 load, whose persistent subscribers resume on other nodes with
//! every message their publisher had acknowledged, and whose clients' wills one survivor
//! publishes; and, without `session_store`, that what the README says is lost is lost.

use crate::cluster::{cluster_config, status, wait_until, ChildNode, TTL};
use crate::support::etcd::{free_port, Etcd};
use crate::support::redis::Redis;
use crate::support::*;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use uringmq::PersistenceSync;

/// Three nodes: `a` and `b` in this process, `c` in a child process to be killed.
struct Three {
    a: Broker,
    b: Broker,
    c: ChildNode,
    c_addr: SocketAddr,
    dirs: Vec<PathBuf>,
    _etcd: Etcd,
}

impl Drop for Three {
    fn drop(&mut self) {
        self.c.kill();
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn node_config(etcd: &Etcd, redis: Option<&Redis>, name: &str, prefix: &str) -> Config {
    let mut cluster = cluster_config(etcd, name, prefix);
    cluster.session_store = redis.map(|r| r.url(0));
    let mut c = crate::support::config();
    c.cluster = Some(cluster);
    c.persistence_dir = Some(scratch_dir(&format!("cluster-store-{name}")));
    c.persistence_sync = PersistenceSync::Always;
    c
}

fn three(redis: Option<&Redis>, prefix: &str) -> Three {
    let etcd = Etcd::start();
    let configs: Vec<Config> = ["a", "b", "c"]
        .iter()
        .map(|n| node_config(&etcd, redis, n, prefix))
        .collect();
    let dirs = configs
        .iter()
        .filter_map(|c| c.persistence_dir.clone())
        .collect();
    let a = Broker::builder(configs[0].clone())
        .start()
        .expect("a starts");
    let b = Broker::builder(configs[1].clone())
        .start()
        .expect("b starts");
    let mut c_config = configs[2].clone();
    c_config.port = free_port();
    let c_addr = SocketAddr::from(([127, 0, 0, 1], c_config.port));
    let c = ChildNode::spawn(&c_config);
    let mut three = Three {
        a,
        b,
        c,
        c_addr,
        dirs,
        _etcd: etcd,
    };
    // A child process starting its broker on a loaded machine may take a while.
    wait_until("a and b see c", WAIT * 6, || {
        three.c.exited()
            || [&three.a, &three.b]
                .iter()
                .all(|n| status(n).node_names() == ["a", "b", "c"])
    });
    assert!(!three.c.exited(), "node c ended by itself");
    three
}

/// A CONNECT that keeps the session: 3.1.1 clean session 0, v5 clean start 0 with an expiry.
fn persistent(proto: Protocol, id: &str) -> Connect {
    let mut c = connect_packet(proto, id);
    c.clean_start = false;
    if proto.is_v5() {
        c.properties.session_expiry_interval = Some(300);
    }
    c
}

/// `c` with a QoS 1 will to `wills/ID` delayed by `delay` seconds (v5).
fn with_will(mut c: Connect, delay: Option<u32>) -> Connect {
    c.will = Some(LastWill {
        topic: format!("wills/{}", c.client_id).as_str().into(),
        payload: bytes::Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: WillProperties {
            will_delay_interval: delay,
            ..Default::default()
        },
    });
    c
}

fn connected(addr: SocketAddr, c: Connect) -> Client {
    let (client, ack) = Client::connect_with(addr, c);
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    client
}

fn will_client(addr: SocketAddr, id: &str) -> Client {
    connected(addr, with_will(persistent(Protocol::V5, id), None))
}

fn watcher(addr: SocketAddr, id: &str) -> Client {
    let mut w = Client::connect(addr, Protocol::V5, id);
    w.subscribe("wills/#", QoS::AtLeastOnce);
    w
}

type Payloads = Arc<Mutex<HashSet<String>>>;

/// Publishes QoS 1 `load/N` on `addr` (8 in flight) until the connection dies; records every
/// payload acknowledged.
fn publisher(addr: SocketAddr, acked: Payloads) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut c = Client::connect(addr, Protocol::V5, "publisher");
        let mut open: Vec<(u16, String)> = Vec::new();
        for n in 0u32.. {
            if open.len() < 8 {
                let pid = (n % 60000 + 1) as u16;
                let payload = format!("m{n}");
                let mut m = publish("load/t", payload.as_bytes(), QoS::AtLeastOnce, false);
                m.packet_id = pid;
                c.send(&Packet::Publish(m));
                open.push((pid, payload));
                continue;
            }
            match c.recv_within(Duration::from_millis(500)) {
                Some(Packet::PubAck(a)) => {
                    if let Some(at) = open.iter().position(|(p, _)| *p == a.packet_id) {
                        acked.lock().unwrap().insert(open.remove(at).1);
                    }
                }
                Some(_) => {}
                None => return,
            }
        }
    })
}

/// Records (and acknowledges) a PUBLISH; whether `p` was one.
fn take(c: &mut Client, got: &Payloads, p: &Packet) -> bool {
    let Packet::Publish(p) = p else { return false };
    got.lock()
        .unwrap()
        .insert(String::from_utf8_lossy(&p.payload).into_owned());
    if p.qos != QoS::AtMostOnce {
        c.send(&Packet::PubAck(Ack::new(p.packet_id)));
    }
    true
}

/// Receives (and acknowledges) every PUBLISH until `limit` passes without a packet.
fn drain(c: &mut Client, got: &Payloads, limit: Duration) {
    while let Some(p) = c.recv_within(limit) {
        take(c, got, &p);
    }
}

/// A persistent subscriber on `addr` that consumes until its connection dies (a PINGREQ
/// without an answer).
fn subscriber(addr: SocketAddr, proto: Protocol, id: String, got: Payloads) -> JoinHandle<()> {
    let (mut c, _) = Client::connect_with(addr, persistent(proto, &id));
    c.subscribe("load/#", QoS::AtLeastOnce);
    std::thread::spawn(move || loop {
        drain(&mut c, &got, Duration::from_millis(200));
        c.send(&Packet::PingReq);
        let answered = loop {
            match c.recv_within(Duration::from_millis(500)) {
                Some(Packet::PingResp) => break true,
                Some(p) => {
                    take(&mut c, &got, &p);
                }
                None => break false,
            }
        };
        if !answered {
            return;
        }
    })
}

#[test]
fn a_killed_nodes_sessions_resume_elsewhere_and_its_wills_go_out() {
    let redis = Redis::start();
    let mut n = three(Some(&redis), "/store");
    let (a, b) = (n.a.local_addr(), n.b.local_addr());
    let mut on_a = watcher(a, "watch-a");
    let mut on_b = watcher(b, "watch-b");
    let _will = will_client(n.c_addr, "w");
    let protocols = [Protocol::V3_1_1, Protocol::V5];
    let got: Vec<Payloads> = protocols.iter().map(|_| Payloads::default()).collect();
    let subs: Vec<JoinHandle<()>> = protocols
        .iter()
        .zip(&got)
        .map(|(p, g)| subscriber(n.c_addr, *p, format!("sub-{}", *p as u8), g.clone()))
        .collect();
    let acked = Payloads::default();
    let publishing = publisher(n.c_addr, acked.clone());
    wait_until("200 messages acknowledged", WAIT * 4, || {
        acked.lock().unwrap().len() >= 200
    });

    // The sessions are in Redis, each one hash, listed under the node that serves them.
    assert_eq!(
        redis.command(&["HEXISTS", "/store/session/sub-5", "meta"]),
        ":1"
    );
    assert_eq!(
        redis.command(&["SISMEMBER", "/store/node/c/sessions", "w"]),
        ":1"
    );
    n.c.kill();
    publishing.join().unwrap();
    for s in subs {
        s.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    // Each subscriber resumes on another node at once: the CONNECT waits for c's lease.
    for ((proto, got), addr) in protocols.iter().zip(&got).zip([a, b]) {
        let id = format!("sub-{}", *proto as u8);
        let (mut c, ack) = Client::connect_with(addr, persistent(*proto, &id));
        assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
        assert!(ack.session_present, "{id}: its session resumed from Redis");
        drain(&mut c, got, QUIET * 2);
        let got = got.lock().unwrap();
        let lost: Vec<&String> = acked.iter().filter(|m| !got.contains(*m)).collect();
        assert!(
            lost.is_empty(),
            "{id}: {} of {} acknowledged messages lost, e.g. {:?}",
            lost.len(),
            acked.len(),
            &lost[..lost.len().min(5)]
        );
        // The session goes on here: a new message reaches it.
        let mut p = Client::connect(addr, Protocol::V5, &format!("late-{id}"));
        p.publish("load/t", b"after", QoS::AtLeastOnce, false);
        assert_eq!(c.recv_publish().payload.as_ref(), b"after");
    }
    // One survivor publishes c's client's will, once: each survivor's watcher gets it once.
    for w in [&mut on_a, &mut on_b] {
        let will = w.recv_within(WAIT * 2);
        assert!(
            matches!(&will, Some(Packet::Publish(p)) if p.topic.as_str() == "wills/w"),
            "{will:?}"
        );
    }
    on_a.expect_nothing();
    on_b.expect_nothing();
    // w's session is left for any node to resume, its expiry running.
    assert_eq!(redis.command(&["HEXISTS", "/store/session/w", "n"]), ":0");
    assert_ne!(redis.command(&["PTTL", "/store/session/w"]), ":-1");
    eprintln!("{} acknowledged messages survived the kill", acked.len());
}

#[test]
fn without_a_session_store_a_killed_nodes_sessions_and_wills_are_lost() {
    let mut n = three(None, "/nostore");
    let a = n.a.local_addr();
    let mut on_a = watcher(a, "watch-a");
    let _will = will_client(n.c_addr, "w");
    let (mut sub, _) = Client::connect_with(n.c_addr, persistent(Protocol::V5, "sub"));
    sub.subscribe("load/#", QoS::AtLeastOnce);
    n.c.kill();
    wait_until("a sees c gone", WAIT * 2, || {
        status(&n.a).node_names() == ["a", "b"]
    });
    let (_sub, ack) = Client::connect_with(a, persistent(Protocol::V5, "sub"));
    assert!(!ack.session_present, "the session died with its node");
    // A survivor would publish the will one lease TTL after c left.
    assert!(
        on_a.recv_within(Duration::from_secs(TTL) + QUIET).is_none(),
        "no will without a session store"
    );
}

/// The wills the shared store did not keep before: of a connection whose session ends with
/// it (3.1.1 clean session) and of an offline session whose delayed will was still pending on
/// the node that died. Each reaches each survivor's subscriber once, the delayed one not
/// before its delay.
#[test]
fn a_killed_nodes_clean_session_and_pending_delayed_wills_go_out_once() {
    const DELAY: Duration = Duration::from_secs(6);
    let redis = Redis::start();
    let mut n = three(Some(&redis), "/wills");
    let mut watchers = [
        watcher(n.a.local_addr(), "watch-a"),
        watcher(n.b.local_addr(), "watch-b"),
    ];
    let clean = connect_packet(Protocol::V3_1_1, "clean");
    let _clean = connected(n.c_addr, with_will(clean, None));
    let delayed = with_will(
        persistent(Protocol::V5, "delayed"),
        Some(DELAY.as_secs() as u32),
    );
    // Closed without DISCONNECT: its will waits out its delay on c.
    drop(connected(n.c_addr, delayed));
    let closed = std::time::Instant::now();
    wait_until("both wills are in the store", WAIT, || {
        redis.command(&["HEXISTS", "/wills/node/c/wills", "clean"]) == ":1"
            && redis.command(&["PTTL", "/wills/session/delayed"])[1..]
                .parse::<i64>()
                .is_ok_and(|ms| ms > 0)
    });
    n.c.kill();
    for w in &mut watchers {
        let mut got = Vec::new();
        while got.len() < 2 {
            match w.recv_within(DELAY + WAIT * 2) {
                Some(Packet::Publish(p)) => {
                    got.push(p.topic.to_string());
                    if p.topic.as_str() == "wills/delayed" {
                        assert!(closed.elapsed() >= DELAY, "published before its delay");
                    }
                    w.ack(&p);
                }
                other => panic!("wills so far {got:?}, then {other:?}"),
            }
        }
        got.sort();
        assert_eq!(got, ["wills/clean", "wills/delayed"]);
    }
    for w in &mut watchers {
        w.expect_nothing();
    }
    // Nothing of c is left behind.
    assert_eq!(redis.command(&["EXISTS", "/wills/node/c/wills"]), ":0");
}
