//! The client-id directory of a cluster stays bounded (issue #19): each client id's owner node
//! records the node of its latest CONNECT and forgets it when that session ends there, so a
//! fleet of clean-session clients with ever new ids leaves nothing behind; a persistent
//! session keeps its entry and moves across nodes; a CONNECT elsewhere that races the end of
//! the session keeps its own, newer entry; a node that joins takes over some ids and their old
//! owners drop them. What an operator sees is
//! `uringmq_cluster_client_ids` in each node's `/metrics`. 3 nodes on a real etcd, both
//! protocol versions; run on both drivers (`MONOIO_FORCE_LEGACY_DRIVER=1`).

use crate::cluster::{cluster_config, sees_all, wait_until, EVENTUALLY};
use crate::ops::{get, metric};
use crate::support::etcd::Etcd;
use crate::support::*;
use std::sync::{Arc, Barrier};

const PROTOCOLS: [Protocol; 2] = [Protocol::V3_1_1, Protocol::V5];

/// Nodes `a`, `b`, `c` with a metrics endpoint each, linked.
fn nodes(etcd: &Etcd, prefix: &str) -> Vec<Broker> {
    let names = ["a", "b", "c"];
    let nodes: Vec<Broker> = names.iter().map(|n| node(etcd, prefix, n)).collect();
    wait_until("every node sees and links the others", EVENTUALLY, || {
        nodes.iter().all(|b| sees_all(b, &names))
    });
    nodes
}

fn node(etcd: &Etcd, prefix: &str, name: &str) -> Broker {
    let cluster = cluster_config(etcd, name, prefix);
    broker_with(|c| {
        c.cluster = Some(cluster);
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
}

/// `uringmq_cluster_client_ids` of each node, scraped from its `/metrics`.
fn directories(nodes: &[Broker]) -> Vec<u64> {
    nodes
        .iter()
        .map(|b| {
            let (status, text) = get(b.metrics_addr().expect("metrics"), "/metrics");
            assert_eq!(status, 200);
            assert!(text.contains("uringmq_cluster_client_ids"), "{text}");
            metric(&text, "uringmq_cluster_client_ids") as u64
        })
        .collect()
}

fn wait_directories(nodes: &[Broker], what: &str, f: impl Fn(&[u64]) -> bool) {
    let mut last = Vec::new();
    wait_until(what, EVENTUALLY, || {
        last = directories(nodes);
        f(&last)
    });
}

#[test]
fn ended_sessions_leave_their_owners_directories() {
    let etcd = Etcd::start();
    let n = nodes(&etcd, "/xdir");
    for proto in PROTOCOLS {
        let ids: Vec<String> = (0..40).map(|i| format!("{proto:?}-clean-{i}")).collect();
        let clients: Vec<Client> = ids
            .iter()
            .map(|id| Client::connect(n[0].local_addr(), proto, id))
            .collect();
        // Every CONNECT is recorded by its id's owner, most of them on b and c.
        wait_directories(&n, "40 ids recorded", |d| d.iter().sum::<u64>() == 40);
        let d = directories(&n);
        assert!(d[1] > 0 && d[2] > 0, "{proto:?}: owners {d:?}");
        // Half say DISCONNECT, half just go: each session ends on a, and its owner forgets it.
        for (i, c) in clients.into_iter().enumerate() {
            if i % 2 == 0 {
                c.disconnect();
            } else {
                drop(c);
            }
        }
        wait_directories(&n, "every entry forgotten", |d| d.iter().all(|k| *k == 0));
    }
    // A v5 session that outlives its connection keeps its entry until it expires.
    let mut c = persistent(Protocol::V5, "expiring");
    c.properties.session_expiry_interval = Some(1);
    let (c, _) = Client::connect_with(n[1].local_addr(), c);
    wait_directories(&n, "its id recorded", |d| d.iter().sum::<u64>() == 1);
    c.disconnect();
    wait_directories(&n, "forgotten once it expired", |d| {
        d.iter().all(|k| *k == 0)
    });
}

#[test]
fn a_persistent_session_keeps_its_entry_and_moves_after_a_churn() {
    let etcd = Etcd::start();
    let n = nodes(&etcd, "/xkeep");
    let mut publ = Client::connect(n[2].local_addr(), Protocol::V5, "pub");
    wait_directories(&n, "the publisher recorded", |d| d.iter().sum::<u64>() == 1);
    for proto in PROTOCOLS {
        let id = format!("{proto:?}-keeper");
        let topic = format!("keep/{proto:?}");
        let (mut c, _) = connect_persistent(n[0].local_addr(), proto, &id);
        c.subscribe(&topic, QoS::AtLeastOnce);
        c.disconnect();
        // A churn of clean sessions on the same node after it.
        for i in 0..30 {
            Client::connect(n[0].local_addr(), proto, &format!("{proto:?}-churn-{i}")).disconnect();
        }
        wait_directories(&n, "only the publisher and the offline session", |d| {
            d.iter().sum::<u64>() == 2
        });
        crate::cluster_routing::wait_routes(&n[2], "a", 1);
        publ.publish(&topic, b"queued", QoS::AtLeastOnce, false);
        let (mut c, present) = connect_persistent(n[1].local_addr(), proto, &id);
        assert!(present, "{proto:?}: the session came from a");
        assert_eq!(&c.recv_publish().payload[..], b"queued", "{proto:?}");
        // Ended on b (clean start there): the next iteration starts from the publisher alone.
        drop(c);
        Client::connect(n[1].local_addr(), proto, &id).disconnect();
        wait_directories(&n, "the session's entry forgotten", |d| {
            d.iter().sum::<u64>() == 1
        });
        crate::cluster_routing::wait_routes(&n[2], "a", 0);
        crate::cluster_routing::wait_routes(&n[2], "b", 0);
    }
}

#[test]
fn a_connect_elsewhere_racing_the_end_of_a_session_keeps_its_entry() {
    let etcd = Etcd::start();
    let n = nodes(&etcd, "/xracefor");
    for round in 0..12 {
        let proto = PROTOCOLS[round % 2];
        let id = format!("racer-{round}");
        // A clean session on a ends (DISCONNECT) while the client connects, persistent, on b.
        let ended = Client::connect(n[0].local_addr(), proto, &id);
        let go = Arc::new(Barrier::new(2));
        let ending = {
            let go = go.clone();
            std::thread::spawn(move || {
                go.wait();
                ended.disconnect();
            })
        };
        let (addr, racer) = (n[1].local_addr(), id.clone());
        let connecting = std::thread::spawn(move || {
            go.wait();
            connect_persistent(addr, proto, &racer).0
        });
        ending.join().unwrap();
        let on_b = connecting.join().unwrap();
        on_b.disconnect();
        // The owner still names b, whatever came first: the session moves from there to c.
        let (c, present) = connect_persistent(n[2].local_addr(), proto, &id);
        assert!(present, "round {round}: the entry naming b was forgotten");
        drop(c);
        Client::connect(n[2].local_addr(), proto, &id).disconnect();
    }
    wait_directories(&n, "every entry forgotten", |d| d.iter().all(|k| *k == 0));
}

#[test]
fn a_node_that_joins_takes_ids_and_their_old_owners_drop_them() {
    let etcd = Etcd::start();
    let mut n = nodes(&etcd, "/xjoin");
    // Offline persistent sessions on a: their entries stay while they live.
    for i in 0..60 {
        connect_persistent(n[0].local_addr(), Protocol::V5, &format!("kept-{i}"))
            .0
            .disconnect();
    }
    wait_directories(&n, "60 ids recorded", |d| d.iter().sum::<u64>() == 60);
    n.push(node(&etcd, "/xjoin", "d"));
    wait_until("d linked with every node", EVENTUALLY, || {
        n.iter().all(|b| sees_all(b, &["a", "b", "c", "d"]))
    });
    // d owns some of the ids now and has no record of them (their next CONNECT starts a new
    // session, as documented); their old owners hold them no longer.
    wait_directories(&n, "the ids d owns dropped by the others", |d| {
        d[3] == 0 && d.iter().sum::<u64>() < 60
    });
    let left: u64 = directories(&n).iter().sum();
    assert!(left > 0, "the ids the others still own stay");
}
