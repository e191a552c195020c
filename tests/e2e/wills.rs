//! Wills: abnormal close, keep-alive timeout, DISCONNECT 0x00 vs 0x04, will delay and session
//! expiry, cancellation by reconnect, and none on broker stop.

use crate::support::*;
use std::time::Duration;

fn with_will(proto: Protocol, id: &str, delay: Option<u32>) -> Connect {
    let mut c = connect_packet(proto, id);
    c.will = Some(LastWill {
        topic: "will/t".into(),
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

fn watcher(b: &Broker) -> Client {
    let mut w = Client::connect(b.local_addr(), Protocol::V5, "watcher");
    w.subscribe("will/t", QoS::AtLeastOnce);
    w
}

#[test]
fn will_on_abnormal_close_not_on_disconnect() {
    let b = broker();
    let mut w = watcher(&b);
    for proto in [Protocol::V3_1_1, Protocol::V5] {
        let (c, _) = Client::connect_with(b.local_addr(), with_will(proto, "dies", None));
        drop(c);
        assert_eq!(&w.recv_publish().payload[..], b"gone");
        let (c, _) = Client::connect_with(b.local_addr(), with_will(proto, "polite", None));
        c.disconnect();
        w.expect_nothing();
    }
}

#[test]
fn v5_disconnect_with_will_message_publishes_it() {
    let b = broker();
    let mut w = watcher(&b);
    let (mut c, _) = Client::connect_with(b.local_addr(), with_will(Protocol::V5, "x", None));
    c.send(&Packet::Disconnect(Disconnect {
        reason_code: ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
        ..Default::default()
    }));
    assert_eq!(&w.recv_publish().payload[..], b"gone");
}

#[test]
fn will_on_keep_alive_timeout() {
    let b = broker();
    let mut w = watcher(&b);
    let mut c = with_will(Protocol::V5, "silent", None);
    c.keep_alive = 1;
    let (mut c, _) = Client::connect_with(b.local_addr(), c);
    // 1.5 x keep-alive without a packet.
    assert_eq!(&w.recv_publish().payload[..], b"gone");
    c.expect_disconnect(Some(ReasonCode::KEEP_ALIVE_TIMEOUT));
}

#[test]
fn will_delay_is_cancelled_by_a_reconnect() {
    let b = broker();
    let mut w = watcher(&b);
    let mut c = with_will(Protocol::V5, "comeback", Some(2));
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(60);
    let (conn, _) = Client::connect_with(b.local_addr(), c.clone());
    drop(conn);
    std::thread::sleep(Duration::from_millis(300));
    let (_again, ack) = Client::connect_with(b.local_addr(), c);
    assert!(ack.session_present);
    w.expect_nothing();
    std::thread::sleep(Duration::from_millis(2200));
    w.expect_nothing();
}

#[test]
fn will_delay_then_published() {
    let b = broker();
    let mut w = watcher(&b);
    let mut c = with_will(Protocol::V5, "late", Some(1));
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(60);
    let (conn, _) = Client::connect_with(b.local_addr(), c);
    drop(conn);
    w.expect_nothing();
    assert_eq!(&w.recv_publish().payload[..], b"gone");
}

#[test]
fn session_end_publishes_a_delayed_will_early() {
    let b = broker();
    let mut w = watcher(&b);
    // Delay 30 s but the session ends after 1 s: the will goes out then [MQTT-3.1.3-9].
    let mut c = with_will(Protocol::V5, "short", Some(30));
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(1);
    let (conn, _) = Client::connect_with(b.local_addr(), c);
    drop(conn);
    assert_eq!(&w.recv_publish().payload[..], b"gone");
}

#[test]
fn no_will_on_broker_stop() {
    let mut b = broker();
    let sub = b.subscribe("will/t", QoS::AtLeastOnce).unwrap();
    let (mut c, _) =
        Client::connect_with(b.local_addr(), with_will(Protocol::V5, "stopping", None));
    b.stop();
    c.expect_disconnect(Some(ReasonCode::SERVER_SHUTTING_DOWN));
    assert!(sub.try_recv().is_none());
}

/// A takeover publishes the old connection's will only when the session ends with it, as
/// Mosquitto's `07-will-takeover` expects: (old clean, new clean) = (1, 1), (0, 1), (1, 0)
/// publish, (0, 0) does not, since a new connection for the client id goes on with the
/// session before the will delay (0) passed [MQTT-3.1.2-8]. "Clean" is clean session in
/// 3.1.1; clean start with session expiry 0 in 5.0 (else 60 s). A delayed will goes out when
/// the takeover ends the session, as the session's end makes it due [MQTT-3.1.3-9]
/// (Mosquitto drops it), and is cancelled when the session goes on.
#[test]
fn a_takeover_publishes_the_will_only_when_the_session_ends() {
    let b = broker();
    let mut w = watcher(&b);
    let cases = [
        (true, true, None),
        (false, true, None),
        (true, false, None),
        (false, false, None),
        (true, true, Some(5)),
        (false, true, Some(5)),
        (true, false, Some(5)),
        (false, false, Some(5)),
    ];
    for proto in [Protocol::V3_1_1, Protocol::V5] {
        for (clean_old, clean_new, delay) in cases {
            if delay.is_some() && !proto.is_v5() {
                continue;
            }
            let case =
                format!("{proto:?} old clean {clean_old} new clean {clean_new} delay {delay:?}");
            let id = format!("to-{}-{clean_old}-{clean_new}-{delay:?}", proto as u8);
            let session = |c: &mut Connect, clean: bool| {
                c.clean_start = clean;
                if proto.is_v5() {
                    c.properties.session_expiry_interval = Some(if clean { 0 } else { 60 });
                }
            };
            let mut c = with_will(proto, &id, delay);
            session(&mut c, clean_old);
            let (mut old, _) = Client::connect_with(b.local_addr(), c);
            old.publish("will/t", b"ready", QoS::AtLeastOnce, false);
            assert_eq!(&w.recv_publish().payload[..], b"ready", "{case}");
            let mut c = connect_packet(proto, &id);
            session(&mut c, clean_new);
            let (mut new, ack) = Client::connect_with(b.local_addr(), c);
            assert_eq!(ack.session_present, !clean_old && !clean_new, "{case}");
            drop(old);
            // The will, if any, is routed before the new CONNACK, so it comes first.
            new.publish("will/t", b"again", QoS::AtLeastOnce, false);
            let mut wills = 0;
            loop {
                let p = w.recv_publish();
                match &p.payload[..] {
                    b"again" => break,
                    b"gone" => wills += 1,
                    other => panic!("{case}: unexpected {other:?}"),
                }
            }
            let expected = clean_old || clean_new;
            assert_eq!(wills, usize::from(expected), "{case}");
            let mut end = Disconnect::default();
            if proto.is_v5() && !clean_new {
                end.properties.session_expiry_interval = Some(0);
            }
            new.send(&Packet::Disconnect(end));
            assert!(new.closed().0);
        }
    }
    // No cancelled delayed will comes later either.
    w.expect_nothing();
}
