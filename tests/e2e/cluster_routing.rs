//! Messages across a uringmq cluster (issue #19): real etcd, nodes in this process on loopback,
//! real MQTT clients on different nodes. Delivery at every QoS and both protocol versions, v5
//! properties and message expiry, retained messages on every node, a shared group with one
//! member per message cluster-wide, unsubscribing, no loops, and a link cut under QoS 1 load.
//!
//! A node learns another's subscriptions through its link (no causal order between nodes, as
//! between two brokers), so a test waits until the publishing node knows the routes
//! (`ClusterStatus::links[peer].routes`) before it publishes.

use crate::cluster::{
    behind_proxy, cluster_config, node_with, sees_all, status, wait_until, EVENTUALLY,
};
use crate::support::etcd::Etcd;
use crate::support::*;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Starts nodes `names` under `prefix` and waits until they all see and link each other.
pub(crate) fn nodes(etcd: &Etcd, prefix: &str, names: &[&str]) -> Vec<Broker> {
    let nodes: Vec<Broker> = names
        .iter()
        .map(|n| node_with(cluster_config(etcd, n, prefix)))
        .collect();
    wait_until("every node sees and links the others", EVENTUALLY, || {
        nodes.iter().all(|b| sees_all(b, names))
    });
    nodes
}

/// The routes (filters and shared groups) `b` knows `peer` has.
pub(crate) fn routes(b: &Broker, peer: &str) -> u64 {
    status(b).links.get(peer).map_or(0, |l| l.routes)
}

pub(crate) fn wait_routes(b: &Broker, peer: &str, n: u64) {
    wait_until(&format!("{peer}'s {n} route(s) known"), EVENTUALLY, || {
        routes(b, peer) == n
    });
}

fn client(b: &Broker, proto: Protocol, id: &str) -> Client {
    Client::connect(b.local_addr(), proto, id)
}

/// A v5 client on each node, subscribed to `filter` at QoS 1, named `tag` and its node's index.
fn one_per_node(n: &[Broker], tag: &str, filter: &str) -> Vec<Client> {
    n.iter()
        .enumerate()
        .map(|(i, node)| {
            let mut c = client(node, Protocol::V5, &format!("{tag}{i}"));
            c.subscribe(filter, QoS::AtLeastOnce);
            c
        })
        .collect()
}

#[test]
fn messages_cross_nodes_at_every_qos_in_both_versions() {
    let etcd = Etcd::start();
    let n = nodes(&etcd, "/qos", &["a", "b", "c"]);
    let mut subscribers = Vec::new();
    for (i, proto) in [Protocol::V3_1_1, Protocol::V5].into_iter().enumerate() {
        let filter = format!("x/{i}/#");
        let mut on_b = client(&n[1], proto, &format!("sb{i}"));
        let mut on_c = client(&n[2], proto, &format!("sc{i}"));
        on_b.subscribe(&filter, QoS::ExactlyOnce);
        on_c.subscribe(&filter, QoS::ExactlyOnce);
        wait_routes(&n[0], "b", i as u64 + 1);
        wait_routes(&n[0], "c", i as u64 + 1);
        let mut publisher = client(&n[0], proto, &format!("p{i}"));
        let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];
        for q in qos {
            publisher.publish(&format!("x/{i}/{}", q as u8), b"m", q, false);
        }
        for sub in [&mut on_b, &mut on_c] {
            for q in qos {
                let p = sub.recv_publish();
                assert_eq!(p.topic, format!("x/{i}/{}", q as u8).as_str());
                assert_eq!((p.qos, &p.payload[..]), (q, &b"m"[..]));
            }
            sub.expect_nothing();
        }
        // Kept: their filters stay routes while the next version's are added.
        subscribers.push((on_b, on_c));
    }
}

#[test]
fn v5_properties_and_the_expiry_left_cross() {
    let etcd = Etcd::start();
    let n = nodes(&etcd, "/props", &["a", "b"]);
    let mut sub = client(&n[1], Protocol::V5, "sub");
    sub.subscribe("p/#", QoS::AtLeastOnce);
    wait_routes(&n[0], "b", 1);
    let mut p = publish("p/1", b"{}", QoS::AtLeastOnce, false);
    p.properties = PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(100),
        response_topic: Some("reply/here".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"corr")),
        content_type: Some("application/json".into()),
        user_properties: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
        ..Default::default()
    };
    let sent = p.properties.clone();
    let mut publisher = client(&n[0], Protocol::V5, "pub");
    assert_eq!(publisher.publish_with(p), ReasonCode::SUCCESS);
    let got = sub.recv_publish();
    let expiry = got.properties.message_expiry_interval.expect("expiry kept");
    assert!((98..=100).contains(&expiry), "{expiry}");
    assert_eq!(
        got.properties,
        PublishProperties {
            message_expiry_interval: Some(expiry),
            ..sent
        }
    );
}

/// Subscribes to `filter` on `b` until a retained message arrives (it is on its way from
/// another node); returns its payload.
fn retained_on(b: &Broker, filter: &str) -> Option<bytes::Bytes> {
    let mut c = client(b, Protocol::V5, "look");
    c.subscribe(filter, QoS::AtMostOnce);
    let got = match c.recv_within(QUIET) {
        Some(Packet::Publish(p)) => Some(p.payload),
        _ => None,
    };
    c.disconnect();
    got
}

#[test]
fn retained_messages_are_set_and_cleared_on_every_node() {
    let etcd = Etcd::start();
    let n = nodes(&etcd, "/retain", &["a", "b", "c"]);
    let mut on_a = client(&n[0], Protocol::V5, "ra");
    on_a.publish("r/1", b"kept", QoS::AtLeastOnce, true);
    wait_until("c has a's retained message", EVENTUALLY, || {
        retained_on(&n[2], "r/#").is_some_and(|p| &p[..] == b"kept")
    });
    let mut on_b = client(&n[1], Protocol::V3_1_1, "rb");
    on_b.publish("r/1", b"", QoS::AtLeastOnce, true);
    for node in &n {
        wait_until("the clear reached every node", EVENTUALLY, || {
            retained_on(node, "r/#").is_none()
        });
    }

    // A node that joins later gets what the others retained.
    on_a.publish("r/2", b"before d", QoS::AtLeastOnce, true);
    wait_until("b has it", EVENTUALLY, || {
        retained_on(&n[1], "r/2").is_some()
    });
    let d = node_with(cluster_config(&etcd, "d", "/retain"));
    wait_until("d has the retained message set on a", EVENTUALLY, || {
        retained_on(&d, "r/#").is_some_and(|p| &p[..] == b"before d")
    });
}

#[test]
fn a_shared_group_gets_each_message_once_cluster_wide() {
    let etcd = Etcd::start();
    let n = nodes(&etcd, "/shared", &["a", "b", "c"]);
    let mut members = one_per_node(&n, "m", "$share/g/s/#");
    wait_routes(&n[0], "b", 1);
    wait_routes(&n[0], "c", 1);
    let mut publisher = client(&n[0], Protocol::V3_1_1, "pub");
    const N: usize = 30;
    for i in 0..N {
        publisher.publish(&format!("s/{i}"), b"x", QoS::AtLeastOnce, false);
    }
    let mut seen = HashSet::new();
    let mut per_member = Vec::new();
    for m in &mut members {
        let mut got = 0;
        while let Some(Packet::Publish(p)) = m.recv_within(QUIET * 2) {
            m.ack(&p);
            assert!(seen.insert(p.topic.to_string()), "{} twice", p.topic);
            got += 1;
        }
        per_member.push(got);
    }
    assert_eq!(seen.len(), N, "every message to one member: {per_member:?}");
    assert!(per_member.iter().all(|&g| g > 0), "{per_member:?}");
}

#[test]
fn unsubscribing_stops_crossing() {
    let etcd = Etcd::start();
    let n = nodes(&etcd, "/unsub", &["a", "b"]);
    let mut sub = client(&n[1], Protocol::V5, "sub");
    sub.subscribe("u/t", QoS::AtLeastOnce);
    wait_routes(&n[0], "b", 1);
    let mut publisher = client(&n[0], Protocol::V5, "pub");
    publisher.publish("u/t", b"1", QoS::AtLeastOnce, false);
    assert_eq!(&sub.recv_publish().payload[..], b"1");
    sub.unsubscribe(&["u/t"]);
    wait_routes(&n[0], "b", 0);
    let sent = |b: &Broker| status(b).links["b"].outbound.messages;
    let before = sent(&n[0]);
    publisher.publish("u/t", b"2", QoS::AtLeastOnce, false);
    sub.expect_nothing();
    assert_eq!(
        sent(&n[0]),
        before,
        "nothing crossed for a node without subscribers"
    );
}

#[test]
fn two_nodes_subscribed_to_everything_make_no_loop() {
    let etcd = Etcd::start();
    let n = nodes(&etcd, "/loop", &["a", "b"]);
    let mut subs = one_per_node(&n, "all", "#");
    wait_routes(&n[0], "b", 1);
    wait_routes(&n[1], "a", 1);
    let mut publisher = client(&n[0], Protocol::V5, "pub");
    publisher.publish("loop/t", b"once", QoS::AtLeastOnce, false);
    for s in &mut subs {
        assert_eq!(&s.recv_publish().payload[..], b"once");
        s.expect_nothing();
    }
    assert_eq!(
        status(&n[0]).links["b"].inbound.messages,
        0,
        "nothing came back"
    );
    assert_eq!(status(&n[1]).links["a"].outbound.messages, 0);
}

#[test]
fn a_link_cut_under_qos1_load_loses_nothing() {
    let etcd = Etcd::start();
    // b's links are reached through a proxy the test cuts: a's messages to b cross it.
    let (b_config, proxy) = behind_proxy(&etcd, "b", "/cutload");
    // The subscriber's queue holds the whole burst a link restart may bring at once.
    let roomy = |cluster| {
        broker_with(|c| {
            c.cluster = Some(cluster);
            c.max_queued_messages = 10_000;
        })
    };
    let a = roomy(cluster_config(&etcd, "a", "/cutload"));
    let b = roomy(b_config);
    wait_until("a and b linked", EVENTUALLY, || {
        sees_all(&a, &["a", "b"]) && sees_all(&b, &["a", "b"])
    });
    let mut sub = client(&b, Protocol::V5, "sub");
    sub.subscribe("load/#", QoS::AtLeastOnce);
    wait_routes(&a, "b", 1);

    const N: usize = 2000;
    let addr = a.local_addr();
    let proxy = std::sync::Arc::new(proxy);
    let cutter = proxy.clone();
    // A quarter of the way the link goes dead (what a writes to it is lost) and, 100 messages
    // later, is cut: those 100 were written and never acknowledged, so they are resent.
    let publisher = std::thread::spawn(move || {
        let mut p = Client::connect(addr, Protocol::V5, "pub");
        for i in 0..N {
            if i == N / 4 {
                cutter.discard();
            } else if i == N / 4 + 100 {
                cutter.cut();
            }
            p.publish(&format!("load/{i}"), b"x", QoS::AtLeastOnce, false);
        }
    });
    let mut got = HashSet::new();
    let deadline = Instant::now() + WAIT * 4;
    while got.len() < N {
        assert!(
            Instant::now() < deadline,
            "{} of {N} arrived; a: {:?}; b: {:?}",
            got.len(),
            status(&a).links,
            status(&b).links
        );
        if let Some(Packet::Publish(p)) = sub.recv_within(Duration::from_secs(1)) {
            sub.ack(&p);
            got.insert(p.topic.to_string());
        }
    }
    publisher.join().unwrap();
    wait_until("a dialed b again", WAIT, || {
        status(&a).links["b"].outbound.connects >= 2
    });
    sub.expect_nothing();
    let s = status(&a);
    assert_eq!(s.links["b"].outbound.dropped, 0);
    assert!(s.links["b"].outbound.resent >= 100, "{s:?}");
    eprintln!(
        "{N} messages across a cut link, {} written again",
        s.links["b"].outbound.resent
    );
}

/// A node restarted on its `persistence_dir` tells the others what its recovered sessions
/// subscribe to: its offline persistent subscribers (both versions) get, on reconnect, the
/// QoS 1 messages published on another node after the restart.
#[test]
fn a_restarted_nodes_recovered_subscriptions_reach_the_other_nodes() {
    let etcd = Etcd::start();
    let dir = scratch_dir("cluster-recover-b");
    let start_b = || {
        broker_with(|c| {
            c.cluster = Some(cluster_config(&etcd, "b", "/recover"));
            c.persistence_dir = Some(dir.clone());
        })
    };
    let a = node_with(cluster_config(&etcd, "a", "/recover"));
    let b = start_b();
    wait_until("a and b linked", WAIT * 2, || {
        sees_all(&a, &["a", "b"]) && sees_all(&b, &["a", "b"])
    });
    let protocols = [Protocol::V3_1_1, Protocol::V5];
    for proto in protocols {
        let id = format!("kept{}", proto as u8);
        let (mut c, _) = connect_persistent(b.local_addr(), proto, &id);
        c.subscribe(&format!("kept/{}/#", proto as u8), QoS::AtLeastOnce);
        c.disconnect();
    }
    drop(b);
    let b = start_b();
    wait_until("a and b linked again", WAIT * 2, || {
        sees_all(&a, &["a", "b"]) && sees_all(&b, &["a", "b"])
    });
    wait_routes(&a, "b", 2);
    let mut publisher = client(&a, Protocol::V5, "p");
    for proto in protocols {
        for i in 0..5 {
            let topic = format!("kept/{}/{i}", proto as u8);
            publisher.publish(&topic, b"m", QoS::AtLeastOnce, false);
        }
    }
    for proto in protocols {
        let id = format!("kept{}", proto as u8);
        let (mut c, present) = connect_persistent(b.local_addr(), proto, &id);
        assert!(present, "{id}: its session was recovered");
        for i in 0..5 {
            let p = c.recv_publish();
            assert_eq!(p.topic, format!("kept/{}/{i}", proto as u8).as_str());
        }
        c.expect_nothing();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// etcd killed and started again on its data under QoS 1 traffic between nodes: the nodes
/// notice, keep their links and routes meanwhile, register again (new leases) once it is
/// back, and no node is taken for dead: every message reaches both subscribers.
#[test]
fn etcd_restarted_under_qos1_traffic_loses_nothing() {
    let mut etcd = Etcd::start();
    let n = nodes(&etcd, "/etcdload", &["a", "b", "c"]);
    let traffic = Traffic::start(&n);
    etcd.kill();
    traffic.through_etcd_outage(&n, || etcd.restart(false));
}

/// The same with an etcd that comes back empty, and node c unable to reach it until a and b
/// registered again: their full read does not find c, alive all along; it must not be taken
/// for gone (its routes and the messages for it would be dropped) before it is back.
#[test]
fn etcd_restarted_empty_under_qos1_traffic_takes_a_late_node_for_alive() {
    let mut etcd = Etcd::start();
    // c reaches etcd through a proxy that the test makes lose everything.
    let url = etcd.url();
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let proxy = crate::cluster::Proxy::start(([127, 0, 0, 1], port).into());
    let mut c = cluster_config(&etcd, "c", "/etcdlate");
    c.etcd = vec![format!("http://{}", proxy.addr)];
    let n = [
        node_with(cluster_config(&etcd, "a", "/etcdlate")),
        node_with(cluster_config(&etcd, "b", "/etcdlate")),
        node_with(c),
    ];
    wait_until("every node sees and links the others", WAIT * 2, || {
        n.iter().all(|b| sees_all(b, &["a", "b", "c"]))
    });
    let traffic = Traffic::start(&n);
    let counter = traffic.sent.clone();
    let sent = move || counter.load(std::sync::atomic::Ordering::SeqCst);
    etcd.kill();
    proxy.discard();
    traffic.through_etcd_outage(&n, || {
        etcd.restart(true);
        wait_until("a and b registered again", WAIT * 3, || {
            n[..2].iter().all(|b| status(b).registered)
        });
        let before = sent();
        wait_until("traffic flows while c is not registered", WAIT, || {
            sent() >= before + 200
        });
        assert!(!status(&n[2]).registered);
        proxy.cut();
    });
}

type Seen = std::sync::Arc<std::sync::Mutex<HashSet<String>>>;

/// QoS 1 from a publisher on node 0 to subscribers on nodes 1 and 2, until stopped.
struct Traffic {
    sent: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    on: std::sync::Arc<std::sync::atomic::AtomicBool>,
    reading: std::sync::Arc<std::sync::atomic::AtomicBool>,
    publisher: std::thread::JoinHandle<()>,
    readers: Vec<(Seen, std::thread::JoinHandle<()>)>,
}

impl Traffic {
    fn start(n: &[Broker]) -> Traffic {
        use std::sync::atomic::Ordering;
        let on = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let reading = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let readers = [&n[1], &n[2]]
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let mut sub = client(node, Protocol::V5, &format!("sub{i}"));
                sub.subscribe("load/#", QoS::AtLeastOnce);
                let (seen, reading) = (Seen::default(), reading.clone());
                let got = seen.clone();
                let reader = std::thread::spawn(move || loop {
                    match sub.recv_within(QUIET) {
                        Some(Packet::Publish(p)) => {
                            sub.ack(&p);
                            got.lock().unwrap().insert(p.topic.to_string());
                        }
                        None if !reading.load(Ordering::SeqCst) => return,
                        _ => {}
                    }
                });
                (seen, reader)
            })
            .collect();
        wait_routes(&n[0], "b", 1);
        wait_routes(&n[0], "c", 1);
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (addr, count, going) = (n[0].local_addr(), sent.clone(), on.clone());
        let publisher = std::thread::spawn(move || {
            let mut p = Client::connect(addr, Protocol::V5, "pub");
            while going.load(Ordering::SeqCst) {
                let i = count.load(Ordering::SeqCst);
                p.publish(&format!("load/{i}"), b"x", QoS::AtLeastOnce, false);
                count.store(i + 1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let t = Traffic {
            sent,
            on,
            reading,
            publisher,
            readers,
        };
        wait_until("traffic flows", WAIT, || t.sent() >= 100);
        t
    }

    /// Messages published and acknowledged so far.
    fn sent(&self) -> usize {
        self.sent.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// etcd is down: the nodes notice while traffic flows, `bring_back` brings it back,
    /// every node registers again and sees all three; then every message must have arrived.
    fn through_etcd_outage(self, n: &[Broker], bring_back: impl FnOnce()) {
        use std::sync::atomic::Ordering;
        wait_until("every node notices etcd is gone", WAIT * 2, || {
            n.iter().all(|b| !status(b).registered)
        });
        let during = self.sent();
        wait_until("traffic flows while etcd is down", WAIT, || {
            self.sent() >= during + 100
        });
        bring_back();
        let names = ["a", "b", "c"];
        let took = wait_until("every node registered again", WAIT * 3, || {
            n.iter()
                .all(|b| status(b).registered && sees_all(b, &names))
        });
        let after = self.sent();
        wait_until("traffic flows after", WAIT, || self.sent() >= after + 100);
        self.on.store(false, Ordering::SeqCst);
        self.publisher.join().unwrap();
        let total = self.sent.load(Ordering::SeqCst);
        wait_until("every message arrived", WAIT * 2, || {
            (self.readers.iter()).all(|(seen, _)| seen.lock().unwrap().len() >= total)
        });
        self.reading.store(false, Ordering::SeqCst);
        for (i, (seen, reader)) in self.readers.into_iter().enumerate() {
            reader.join().unwrap();
            assert_eq!(seen.lock().unwrap().len(), total, "subscriber {i}");
        }
        for b in n {
            let s = status(b);
            assert_eq!(s.node_names(), names);
            assert!(s.links.values().all(|l| l.outbound.dropped == 0), "{s:?}");
        }
        eprintln!("{total} messages, nodes registered again {took:?} after etcd came back");
    }
}

/// A node picked for a shared group's message whose members left meanwhile (the sender had
/// not heard yet) passes the message on to another node's member instead of dropping it.
/// Node a cannot hear of b's change: what b tells a crosses a proxy that loses it.
#[test]
fn a_shared_message_for_a_node_whose_members_left_reaches_another_member() {
    let etcd = Etcd::start();
    let (a_config, proxy) = behind_proxy(&etcd, "a", "/repick");
    let a = node_with(a_config);
    let (b, c) = (
        node_with(cluster_config(&etcd, "b", "/repick")),
        node_with(cluster_config(&etcd, "c", "/repick")),
    );
    let n = [a, b, c];
    wait_until("every node sees and links the others", WAIT * 2, || {
        n.iter().all(|x| sees_all(x, &["a", "b", "c"]))
    });
    let group = "$share/g/r/#";
    let mut leaving = client(&n[1], Protocol::V5, "leaving");
    leaving.subscribe(group, QoS::AtLeastOnce);
    wait_routes(&n[0], "b", 1);
    proxy.discard();
    leaving.unsubscribe(&[group]);
    let mut member = client(&n[2], Protocol::V3_1_1, "member");
    member.subscribe(group, QoS::AtLeastOnce);
    wait_routes(&n[1], "c", 1);
    wait_routes(&n[2], "b", 0);
    assert_eq!(routes(&n[0], "b"), 1, "a still thinks b has the member");
    let mut publisher = client(&n[0], Protocol::V5, "p");
    for i in 0..4 {
        publisher.publish(&format!("r/{i}"), b"m", QoS::AtLeastOnce, false);
    }
    for i in 0..4 {
        let p = member.recv_publish();
        assert_eq!(p.topic, format!("r/{i}").as_str());
    }
    member.expect_nothing();
    leaving.expect_nothing();
}
