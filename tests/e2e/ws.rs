//! WebSocket and WebSocket-over-TLS listeners over real sockets: the upgrade (path,
//! subprotocol), MQTT packets split across frames and messages, several packets in one frame,
//! refusals, and WSS.

use crate::support::streams::*;
use crate::support::*;
use std::net::TcpStream;
use uringmq::Transport;

fn ws_broker(path: &str) -> Broker {
    let mut l = listener(Transport::Ws);
    l.ws_path = path.into();
    broker_with(|c| c.listeners.push(l))
}

fn ws_client(b: &Broker, path: &str) -> Ws<TcpStream> {
    let tcp = TcpStream::connect(extra_addr(b, 0)).unwrap();
    let (ws, head) = Ws::upgrade(tcp, path, Some("mqtt"));
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-protocol: mqtt\r\n"),
        "the server picks the mqtt subprotocol [MQTT-6.0.0-4]: {head}"
    );
    ws
}

#[test]
fn mqtt_over_websocket_both_ways_on_the_configured_path() {
    let b = ws_broker("/custom");
    for proto in [Protocol::V3_1_1, Protocol::V5] {
        let mut m = Client::from_stream(ws_client(&b, "/custom"), proto);
        let id = format!("ws-{}", proto as u8);
        assert_eq!(
            m.send_connect(connect_packet(proto, &id)).reason_code,
            ReasonCode::SUCCESS
        );
        m.subscribe("ws/#", QoS::AtLeastOnce);
        let mut publ = Client::connect(b.local_addr(), proto, &format!("{id}-pub"));
        let big = vec![7u8; 100_000];
        publ.publish("ws/big", &big, QoS::AtLeastOnce, false);
        let p = m.recv_publish();
        assert_eq!(&p.payload[..], &big[..]);

        let mut tcp_sub = Client::connect(b.local_addr(), proto, &format!("{id}-sub"));
        tcp_sub.subscribe("from-ws", QoS::AtMostOnce);
        m.send(&Packet::Publish(publish(
            "from-ws",
            b"hi",
            QoS::AtMostOnce,
            false,
        )));
        assert_eq!(&tcp_sub.recv_publish().payload[..], b"hi");
    }
}

#[test]
fn packets_may_span_frames_and_frames_may_hold_several_packets() {
    let b = ws_broker("/mqtt");
    let mut m = Client::from_stream(ws_client(&b, "/mqtt"), Protocol::V5);
    // CONNECT in a fragmented message: first frame, then a continuation [MQTT-6.0.0-2].
    let connect = m.bytes(&Packet::Connect(Box::new(connect_packet(
        Protocol::V5,
        "split",
    ))));
    let (a, rest) = connect.split_at(5);
    m.stream().send_frame(2, false, a);
    m.stream().send_frame(0, true, rest);
    match m.recv() {
        Some(Packet::ConnAck(a)) => assert_eq!(a.reason_code, ReasonCode::SUCCESS),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    // SUBSCRIBE split over two separate binary messages, one byte then the rest.
    let subscribe = m.bytes(&Packet::Subscribe(Subscribe {
        packet_id: 9,
        properties: Default::default(),
        filters: vec![("s/#".into(), Default::default())],
    }));
    m.stream().send_frame(2, true, &subscribe[..1]);
    m.stream().send_frame(9, true, b"ping between the halves");
    m.stream().send_frame(2, true, &subscribe[1..]);
    assert!(matches!(m.recv(), Some(Packet::SubAck(a)) if a.packet_id == 9));
    // Two PUBLISH packets and a PINGREQ in one frame.
    let mut one = m.bytes(&Packet::Publish(publish(
        "s/1",
        b"one",
        QoS::AtMostOnce,
        false,
    )));
    one.extend(m.bytes(&Packet::Publish(publish(
        "s/2",
        b"two",
        QoS::AtMostOnce,
        false,
    ))));
    one.extend(m.bytes(&Packet::PingReq));
    m.stream().send_frame(2, true, &one);
    let mut got = Vec::new();
    for _ in 0..3 {
        match m.recv() {
            Some(Packet::Publish(p)) => got.push(p.payload.to_vec()),
            Some(Packet::PingResp) => got.push(b"pong".to_vec()),
            other => panic!("unexpected {other:?}"),
        }
    }
    got.sort();
    assert_eq!(
        got,
        vec![b"one".to_vec(), b"pong".to_vec(), b"two".to_vec()]
    );
}

#[test]
fn refusals_end_only_their_own_socket() {
    let b = ws_broker("/mqtt");
    let tcp = TcpStream::connect(extra_addr(&b, 0)).unwrap();
    let (_, head) = Ws::upgrade(tcp, "/elsewhere", Some("mqtt"));
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    let tcp = TcpStream::connect(extra_addr(&b, 0)).unwrap();
    let (_, head) = Ws::upgrade(tcp, "/mqtt", Some("chat"));
    assert!(
        head.starts_with("HTTP/1.1 400"),
        "no mqtt subprotocol [MQTT-6.0.0-3]: {head}"
    );

    // A text frame is refused with close code 1003 [MQTT-6.0.0-1].
    let mut ws = ws_client(&b, "/mqtt");
    ws.send_frame(1, true, b"\x10\x00");
    let mut m = Client::from_stream(ws, Protocol::V5);
    assert!(m.recv().is_none());
    assert_eq!(m.stream().close_code, Some(1003));

    // The listener carries on.
    let mut ok = Client::from_stream(ws_client(&b, "/mqtt"), Protocol::V3_1_1);
    let ack = ok.send_connect(connect_packet(Protocol::V3_1_1, "after"));
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
}

#[test]
fn client_close_frame_publishes_the_will() {
    let b = ws_broker("/mqtt");
    let mut watcher = Client::connect(b.local_addr(), Protocol::V5, "watcher");
    watcher.subscribe("will/ws", QoS::AtMostOnce);
    let mut m = Client::from_stream(ws_client(&b, "/mqtt"), Protocol::V5);
    let mut c = connect_packet(Protocol::V5, "dying");
    c.will = Some(LastWill {
        topic: "will/ws".into(),
        payload: bytes::Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
    });
    assert_eq!(m.send_connect(c).reason_code, ReasonCode::SUCCESS);
    // A WebSocket close without DISCONNECT is an unexpected end: the will goes out.
    m.stream().send_frame(8, true, &1000u16.to_be_bytes());
    assert_eq!(&watcher.recv_publish().payload[..], b"gone");
}

#[test]
fn websocket_over_tls() {
    let pki = pki("c");
    let l = tls_listener(&pki, Transport::Wss);
    let b = broker_with(|c| c.listeners.push(l));
    let config = client_tls(&pki.paths.ca_cert, None, &rustls::version::TLS13);
    let tls = tls_connect(extra_addr(&b, 0), config);
    let (ws, head) = Ws::upgrade(tls, "/mqtt", Some("mqtt"));
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut m = Client::from_stream(ws, Protocol::V5);
    assert_eq!(
        m.send_connect(connect_packet(Protocol::V5, "wss"))
            .reason_code,
        ReasonCode::SUCCESS
    );
    m.subscribe("wss/#", QoS::AtMostOnce);
    let mut publ = Client::connect(b.local_addr(), Protocol::V5, "wss-pub");
    publ.publish("wss/1", b"secure", QoS::AtMostOnce, false);
    assert_eq!(&m.recv_publish().payload[..], b"secure");
    // A large payload is queued shared (not in the write buffer): still one frame, encrypted.
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    publ.publish("wss/2", &big, QoS::AtMostOnce, false);
    assert_eq!(&m.recv_publish().payload[..], &big[..]);
}
