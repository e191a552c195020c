//! The broker's network edge: dual-stack binds, and a stop that does not wait for clients
//! that do not read.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};
use uringmq_tests::*;

#[test]
fn binding_the_ipv6_any_address_serves_ipv4_clients_too() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: this machine has no IPv6 loopback");
        return;
    }
    let b = broker_with(|c| {
        c.bind = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        c.allow_anonymous = Some(true);
    });
    let port = b.local_addr().port();
    let mut v4 = Client::connect(SocketAddr::from(([127, 0, 0, 1], port)), Protocol::V5, "v4");
    let mut v6 = Client::connect(
        SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
        Protocol::V5,
        "v6",
    );
    v6.subscribe("dual", QoS::AtMostOnce);
    v4.publish("dual", b"both", QoS::AtMostOnce, false);
    assert_eq!(&v6.recv_publish().payload[..], b"both");
}

#[test]
fn stop_does_not_wait_for_a_client_that_does_not_read() {
    let mut b = broker_with(|c| c.max_outbound_bytes = 64 * 1024);
    // Subscribes, then never reads again.
    let mut stalled = Client::connect(b.local_addr(), Protocol::V5, "stalled");
    stalled.subscribe("firehose", QoS::AtMostOnce);
    let mut p = Client::connect(b.local_addr(), Protocol::V5, "p");
    let payload = vec![7u8; 64 * 1024];
    // Until the broker drops QoS 0 for it batch after batch: its socket is full and its
    // writer is stuck in a write.
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.stats().dropped_qos0 < 64 {
        assert!(
            Instant::now() < deadline,
            "the stalled reader never filled up"
        );
        for _ in 0..16 {
            p.send(&Packet::Publish(publish(
                "firehose",
                &payload,
                QoS::AtMostOnce,
                false,
            )));
        }
        p.ping();
    }
    let start = Instant::now();
    b.stop();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2), "stop took {took:?}");
    drop(stalled);
}
