//! The broker's network edge: dual-stack binds, and a stop that does not wait for clients
//! that do not read.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
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
