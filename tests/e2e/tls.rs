//! TLS listeners over real sockets: TLS 1.2 and 1.3 carrying MQTT both ways, client
//! certificates required / optional / missing / from the wrong CA, a failed handshake ending
//! only its own socket, and certificate reload without dropping connections.

use crate::support::streams::*;
use crate::support::*;
use rustls::version::{TLS12, TLS13};
use uringmq::Transport;

fn tls_broker(pki: &Pki, f: impl FnOnce(&mut uringmq::ListenerConfig)) -> Broker {
    let mut l = tls_listener(pki, Transport::Tls);
    f(&mut l);
    broker_with(|c| c.listeners.push(l))
}

#[test]
fn tls12_and_tls13_carry_mqtt_both_ways() {
    let pki = pki("c");
    let b = tls_broker(&pki, |_| {});
    let addr = extra_addr(&b, 0);
    for (i, version) in [&TLS13, &TLS12].into_iter().enumerate() {
        for proto in [Protocol::V3_1_1, Protocol::V5] {
            let config = client_tls(&pki.paths.ca_cert, None, version);
            let mut sub = Client::from_stream(tls_connect(addr, config), proto);
            let id = format!("tls-sub-{i}-{}", proto as u8);
            let ack = sub.send_connect(connect_packet(proto, &id));
            assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
            assert_eq!(
                sub.stream().conn.protocol_version(),
                Some(version.version),
                "negotiated version"
            );
            let topic = format!("tls/{i}/{}", proto as u8);
            sub.subscribe(&topic, QoS::AtLeastOnce);

            // From a plain TCP client to the TLS subscriber, with a payload over one record.
            let mut publ = Client::connect(b.local_addr(), proto, &format!("{id}-pub"));
            let big = vec![0x5a; 40_000];
            publ.publish(&topic, &big, QoS::AtLeastOnce, false);
            let p = sub.recv_publish();
            assert_eq!(p.topic, topic.as_str());
            assert_eq!(&p.payload[..], &big[..]);

            // And from the TLS client back to a TCP subscriber.
            let mut tcp_sub = Client::connect(b.local_addr(), proto, &format!("{id}-tcp"));
            tcp_sub.subscribe("back/#", QoS::AtMostOnce);
            sub.send(&Packet::Publish(publish(
                "back/1",
                b"over tls",
                QoS::AtMostOnce,
                false,
            )));
            assert_eq!(&tcp_sub.recv_publish().payload[..], b"over tls");
        }
    }
}

#[test]
fn required_client_certificate_missing_fails_only_that_socket() {
    let pki = pki("device-1");
    let b = tls_broker(&pki, |l| {
        l.ca_file = Some(pki.paths.ca_cert.clone());
        l.require_certificate = true;
    });
    let addr = extra_addr(&b, 0);
    let mut anonymous = tls_connect(addr, client_tls(&pki.paths.ca_cert, None, &TLS13));
    // The server refuses after our Finished: the handshake or the first read fails.
    let failed = tls_handshake(&mut anonymous).is_err() || {
        let mut m = Client::from_stream(anonymous, Protocol::V5);
        m.send(&Packet::Connect(Box::new(connect_packet(
            Protocol::V5,
            "nocert",
        ))));
        m.recv().is_none()
    };
    assert!(failed, "a client without certificate must be refused");

    // The listener still serves clients with a certificate.
    let paths = &pki.paths;
    let config = client_tls(
        &paths.ca_cert,
        Some((&paths.client_cert, &paths.client_key)),
        &TLS13,
    );
    let mut ok = Client::from_stream(tls_connect(addr, config), Protocol::V5);
    let ack = ok.send_connect(connect_packet(Protocol::V5, "withcert"));
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
}

#[test]
fn client_certificate_from_another_ca_is_refused() {
    let pki = pki("c");
    let intruder = crate::support::streams::pki("intruder");
    let b = tls_broker(&pki, |l| l.ca_file = Some(pki.paths.ca_cert.clone()));
    let config = client_tls(
        &pki.paths.ca_cert,
        Some((&intruder.paths.client_cert, &intruder.paths.client_key)),
        &TLS12,
    );
    let mut s = tls_connect(extra_addr(&b, 0), config);
    assert!(tls_handshake(&mut s).is_err());
    // Optional client certificates: none at all is fine.
    let mut m = Client::from_stream(
        tls_connect(
            extra_addr(&b, 0),
            client_tls(&pki.paths.ca_cert, None, &TLS12),
        ),
        Protocol::V3_1_1,
    );
    let ack = m.send_connect(connect_packet(Protocol::V3_1_1, "no-cert-needed"));
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
}

#[test]
fn client_trusting_another_ca_refuses_the_server_and_the_broker_carries_on() {
    let pki = pki("c");
    let other = crate::support::streams::pki("c");
    let b = tls_broker(&pki, |_| {});
    let mut s = tls_connect(
        extra_addr(&b, 0),
        client_tls(&other.paths.ca_cert, None, &TLS13),
    );
    let err = tls_handshake(&mut s).expect_err("wrong CA");
    assert!(err.to_string().contains("certificate"), "{err}");
    drop(s);
    let mut m = Client::from_stream(
        tls_connect(
            extra_addr(&b, 0),
            client_tls(&pki.paths.ca_cert, None, &TLS13),
        ),
        Protocol::V5,
    );
    assert_eq!(
        m.send_connect(connect_packet(Protocol::V5, "after"))
            .reason_code,
        ReasonCode::SUCCESS
    );
}

#[test]
fn plain_mqtt_on_a_tls_port_is_dropped() {
    let pki = pki("c");
    let b = tls_broker(&pki, |_| {});
    let mut c = Client::raw(extra_addr(&b, 0), Protocol::V3_1_1);
    c.send(&Packet::Connect(Box::new(connect_packet(
        Protocol::V3_1_1,
        "plain",
    ))));
    // The broker answers with a TLS alert (not MQTT) and closes; no CONNACK comes back.
    let (closed, packets) = c.closed();
    assert!(closed);
    assert!(!packets.iter().any(|p| matches!(p, Packet::ConnAck(_))));
}

#[test]
fn reload_serves_new_certificates_and_keeps_open_connections() {
    let pki = pki("c");
    let b = tls_broker(&pki, |_| {});
    let addr = extra_addr(&b, 0);
    let old_ca = std::fs::read(&pki.paths.ca_cert).unwrap();
    let old_ca_path = pki.dir.join("old-ca.pem");
    std::fs::write(&old_ca_path, &old_ca).unwrap();
    let mut before = Client::from_stream(
        tls_connect(addr, client_tls(&old_ca_path, None, &TLS13)),
        Protocol::V5,
    );
    let ack = before.send_connect(connect_packet(Protocol::V5, "before"));
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    before.subscribe("r/#", QoS::AtMostOnce);

    // Rotate every file in place, then reload (what SIGHUP does).
    uringmq_transport::cert_gen::write_test_certs(&pki.dir, "c").unwrap();
    let report = b.reload();
    assert!(report.errors.is_empty(), "{:?}", report.errors);

    let mut fresh = tls_connect(addr, client_tls(&pki.paths.ca_cert, None, &TLS13));
    tls_handshake(&mut fresh).expect("new CA accepted after reload");
    let mut stale = tls_connect(addr, client_tls(&old_ca_path, None, &TLS13));
    assert!(tls_handshake(&mut stale).is_err(), "old CA no longer valid");

    // The connection made before the reload still works.
    let mut publ = Client::connect(b.local_addr(), Protocol::V5, "reload-pub");
    publ.publish("r/1", b"still here", QoS::AtMostOnce, false);
    assert_eq!(&before.recv_publish().payload[..], b"still here");
}
