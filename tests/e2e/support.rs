//! Shared helpers for the end-to-end tests: an in-process broker on port 0 with two cores, and
//! a small blocking MQTT client over `std::net::TcpStream` built on `uringmq-codec`, and a real
//! etcd for the cluster tests ([`etcd`]).

use bytes::{Bytes, BytesMut};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
pub use uringmq::{Broker, Config};
pub use uringmq_codec::*;

pub mod etcd;

/// How long a test waits for a packet that must arrive.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a test waits to be reasonably sure a packet does not arrive.
pub const QUIET: Duration = Duration::from_millis(300);

/// The test config: port 0, two cores, no pinning (tests run in parallel on a small machine).
pub fn config() -> Config {
    Config {
        port: 0,
        cores: 2,
        pin_cores: false,
        ..Config::default()
    }
}

/// Starts a broker with [`config`] changed by `f`.
pub fn broker_with(f: impl FnOnce(&mut Config)) -> Broker {
    let mut c = config();
    f(&mut c);
    if let Ok(filter) = std::env::var("URINGMQ_TEST_LOG") {
        uringmq::init_logging(&filter, uringmq::LogFormat::Text);
    }
    Broker::start(c).expect("broker starts")
}

/// Starts a broker with the test config.
pub fn broker() -> Broker {
    broker_with(|_| {})
}

/// A blocking MQTT client for tests.
pub struct Client {
    stream: TcpStream,
    buf: BytesMut,
    decoder: Decoder,
    /// Protocol of this client.
    pub proto: Protocol,
    next_pid: u16,
}

/// A CONNECT with defaults: clean start, keep-alive 60.
pub fn connect_packet(proto: Protocol, client_id: &str) -> Connect {
    Connect {
        protocol: proto,
        clean_start: true,
        keep_alive: 60,
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
        properties: Default::default(),
    }
}

/// A PUBLISH.
pub fn publish(topic: &str, payload: &[u8], qos: QoS, retain: bool) -> Publish {
    Publish {
        dup: false,
        qos,
        retain,
        topic: topic.into(),
        packet_id: 0,
        properties: Default::default(),
        payload: Bytes::copy_from_slice(payload),
    }
}

/// A TCP connection from `source` (another loopback address than the test's clients: a
/// second host, as far as the broker can tell).
pub fn connect_from(source: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&SocketAddr::from((source, 0)).into())?;
    s.connect(&to.into())?;
    let s = TcpStream::from(s);
    s.set_nodelay(true).ok();
    Ok(s)
}

impl Client {
    /// Opens a TCP connection without sending anything.
    pub fn raw(addr: SocketAddr, proto: Protocol) -> Client {
        Client::from_stream(TcpStream::connect(addr).expect("connect"), proto)
    }

    /// A client over an already connected stream, nothing sent yet.
    pub fn from_stream(stream: TcpStream, proto: Protocol) -> Client {
        stream.set_nodelay(true).ok();
        Client {
            stream,
            buf: BytesMut::new(),
            decoder: Decoder::with_protocol(proto, 268_435_460),
            proto,
            next_pid: 1,
        }
    }

    /// Connects with `c` and returns the client and the CONNACK.
    pub fn connect_with(addr: SocketAddr, c: Connect) -> (Client, ConnAck) {
        let mut client = Client::raw(addr, c.protocol);
        client.send(&Packet::Connect(Box::new(c)));
        match client.recv() {
            Some(Packet::ConnAck(a)) => (client, a),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Connects with a clean session and checks the CONNACK succeeded.
    pub fn connect(addr: SocketAddr, proto: Protocol, client_id: &str) -> Client {
        let (c, ack) = Client::connect_with(addr, connect_packet(proto, client_id));
        assert_eq!(
            ack.reason_code,
            ReasonCode::SUCCESS,
            "CONNACK of {client_id}"
        );
        c
    }

    /// The broker's address this client is connected to.
    pub fn addr(&self) -> SocketAddr {
        self.stream.peer_addr().expect("connected")
    }

    /// Sends a packet.
    pub fn send(&mut self, p: &Packet) {
        let mut out = BytesMut::new();
        encode(p, self.proto, &mut out).expect("encode");
        self.send_raw(&out);
    }

    /// The socket, for tests that write around the client (partial writes, timeouts).
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Sends raw bytes (for malformed-input tests). Errors are ignored: the broker may have
    /// closed the connection already.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// The next packet within `timeout`; None on timeout or when the connection is closed.
    pub fn recv_within(&mut self, timeout: Duration) -> Option<Packet> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(p)) => return Some(p),
                Ok(None) => {}
                Err(e) => panic!("broker sent a malformed packet: {e}"),
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok();
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }

    /// The next packet (waits up to [`WAIT`]).
    pub fn recv(&mut self) -> Option<Packet> {
        self.recv_within(WAIT)
    }

    /// Whether the broker closed the connection (within [`WAIT`]); packets received before
    /// the close are returned too.
    pub fn closed(&mut self) -> (bool, Vec<Packet>) {
        let deadline = Instant::now() + WAIT;
        let mut got = Vec::new();
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(p)) => {
                    got.push(p);
                    continue;
                }
                Ok(None) => {}
                Err(_) => return (true, got),
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return (false, got);
            };
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok();
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => return (true, got),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return (false, got)
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return (true, got),
            }
        }
    }

    /// Asserts the connection is closed, optionally after a v5 DISCONNECT with `code`.
    pub fn expect_disconnect(&mut self, code: Option<ReasonCode>) {
        let (closed, got) = self.closed();
        assert!(closed, "connection still open; got {got:?}");
        if let Some(code) = code {
            let d = got.iter().find_map(|p| match p {
                Packet::Disconnect(d) => Some(d.reason_code),
                _ => None,
            });
            assert_eq!(d, Some(code), "DISCONNECT reason; got {got:?}");
        }
    }

    fn pid(&mut self) -> u16 {
        let id = self.next_pid;
        self.next_pid = self.next_pid.checked_add(1).unwrap_or(1);
        id
    }

    /// Subscribes with options and returns the SUBACK reason codes.
    pub fn subscribe_with(
        &mut self,
        filters: &[(&str, SubscriptionOptions)],
        props: SubscribeProperties,
    ) -> Vec<ReasonCode> {
        let packet_id = self.pid();
        self.send(&Packet::Subscribe(Subscribe {
            packet_id,
            properties: props,
            filters: filters
                .iter()
                .map(|(f, o)| (ByteStr::from(*f), *o))
                .collect(),
        }));
        match self.recv() {
            Some(Packet::SubAck(a)) => {
                assert_eq!(a.packet_id, packet_id);
                a.reason_codes
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Subscribes to one filter and asserts the granted QoS.
    pub fn subscribe(&mut self, filter: &str, qos: QoS) {
        let codes = self.subscribe_with(
            &[(
                filter,
                SubscriptionOptions {
                    qos,
                    ..Default::default()
                },
            )],
            Default::default(),
        );
        assert_eq!(codes, vec![ReasonCode(qos as u8)], "SUBACK for {filter}");
    }

    /// Unsubscribes; returns the UNSUBACK reason codes (empty for 3.x).
    pub fn unsubscribe(&mut self, filters: &[&str]) -> Vec<ReasonCode> {
        let packet_id = self.pid();
        self.send(&Packet::Unsubscribe(Unsubscribe {
            packet_id,
            properties: Default::default(),
            filters: filters.iter().map(|f| ByteStr::from(*f)).collect(),
        }));
        match self.recv() {
            Some(Packet::UnsubAck(a)) => a.reason_codes,
            other => panic!("expected UNSUBACK, got {other:?}"),
        }
    }

    /// Publishes and completes the QoS handshake; returns the ack reason code (SUCCESS for 0).
    pub fn publish_with(&mut self, mut p: Publish) -> ReasonCode {
        if p.qos != QoS::AtMostOnce {
            p.packet_id = self.pid();
        }
        let pid = p.packet_id;
        let qos = p.qos;
        self.send(&Packet::Publish(p));
        match qos {
            QoS::AtMostOnce => ReasonCode::SUCCESS,
            QoS::AtLeastOnce => match self.recv() {
                Some(Packet::PubAck(a)) if a.packet_id == pid => a.reason_code,
                other => panic!("expected PUBACK {pid}, got {other:?}"),
            },
            QoS::ExactlyOnce => {
                let code = match self.recv() {
                    Some(Packet::PubRec(a)) if a.packet_id == pid => a.reason_code,
                    other => panic!("expected PUBREC {pid}, got {other:?}"),
                };
                if code.is_error() {
                    return code;
                }
                self.send(&Packet::PubRel(Ack::new(pid)));
                match self.recv() {
                    Some(Packet::PubComp(a)) if a.packet_id == pid => a.reason_code,
                    other => panic!("expected PUBCOMP {pid}, got {other:?}"),
                }
            }
        }
    }

    /// Publishes a plain message.
    pub fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
        let code = self.publish_with(publish(topic, payload, qos, retain));
        assert_eq!(code, ReasonCode::SUCCESS, "ack of publish to {topic}");
    }

    /// Receives a PUBLISH without acknowledging it.
    pub fn recv_publish_noack(&mut self) -> Publish {
        match self.recv() {
            Some(Packet::Publish(p)) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Receives a PUBLISH and completes its QoS handshake.
    pub fn recv_publish(&mut self) -> Publish {
        let p = self.recv_publish_noack();
        self.ack(&p);
        p
    }

    /// Acknowledges a received PUBLISH (PUBACK, or PUBREC/PUBREL/PUBCOMP).
    pub fn ack(&mut self, p: &Publish) {
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send(&Packet::PubAck(Ack::new(p.packet_id))),
            QoS::ExactlyOnce => {
                self.send(&Packet::PubRec(Ack::new(p.packet_id)));
                match self.recv() {
                    Some(Packet::PubRel(a)) if a.packet_id == p.packet_id => {}
                    other => panic!("expected PUBREL {}, got {other:?}", p.packet_id),
                }
                self.send(&Packet::PubComp(Ack::new(p.packet_id)));
            }
        }
    }

    /// Asserts nothing arrives for [`QUIET`].
    pub fn expect_nothing(&mut self) {
        if let Some(p) = self.recv_within(QUIET) {
            panic!("expected nothing, got {p:?}");
        }
    }

    /// PINGREQ/PINGRESP round trip: everything the broker sent before is now in our buffer.
    pub fn ping(&mut self) {
        self.send(&Packet::PingReq);
        match self.recv() {
            Some(Packet::PingResp) => {}
            other => panic!("expected PINGRESP, got {other:?}"),
        }
    }

    /// Sends DISCONNECT (normal) and closes.
    pub fn disconnect(mut self) {
        self.send(&Packet::Disconnect(Disconnect::default()));
        // Wait until the broker has handled it (it closes the connection), so that what a test
        // does next cannot overtake the DISCONNECT and reach the still-open connection.
        let (closed, got) = self.closed();
        assert!(closed, "broker did not close after DISCONNECT; got {got:?}");
    }
}
