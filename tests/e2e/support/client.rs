//! The test client: a small blocking MQTT client built on `uringmq-codec`, over TCP or over any
//! [`Stream`] (TLS and WebSocket in [`super::streams`]), so every test speaks MQTT one way.

use super::{connect_packet, publish, QUIET, WAIT};
use bytes::BytesMut;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use uringmq_codec::*;

/// A byte stream a [`Client`] speaks MQTT over.
pub trait Stream: Read + Write {
    /// Sets the read timeout of the socket under any layers.
    fn set_timeout(&mut self, t: Duration);
}

impl Stream for TcpStream {
    fn set_timeout(&mut self, t: Duration) {
        self.set_read_timeout(Some(t)).ok();
    }
}

/// A blocking MQTT client for tests, over TCP unless told otherwise.
pub struct Client<S = TcpStream> {
    stream: S,
    buf: BytesMut,
    decoder: Decoder,
    /// Protocol of this client.
    pub proto: Protocol,
    next_pid: u16,
}

/// What one read from the stream brought.
enum Fill {
    Bytes,
    TimedOut,
    Closed,
}

impl Client {
    /// Opens a TCP connection without sending anything.
    pub fn raw(addr: SocketAddr, proto: Protocol) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).ok();
        Client::from_stream(stream, proto)
    }

    /// Connects with `c` and returns the client and the CONNACK.
    pub fn connect_with(addr: SocketAddr, c: Connect) -> (Client, ConnAck) {
        let mut client = Client::raw(addr, c.protocol);
        let ack = client.send_connect(c);
        (client, ack)
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
}

impl<S: Stream> Client<S> {
    /// A client over an already connected stream, nothing sent yet.
    pub fn from_stream(stream: S, proto: Protocol) -> Self {
        Client {
            stream,
            buf: BytesMut::new(),
            decoder: Decoder::with_protocol(proto, 268_435_460),
            proto,
            next_pid: 1,
        }
    }

    /// Sends CONNECT and returns the CONNACK (panics on anything else).
    pub fn send_connect(&mut self, c: Connect) -> ConnAck {
        self.send(&Packet::Connect(Box::new(c)));
        match self.recv() {
            Some(Packet::ConnAck(a)) => a,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// The stream, for tests that write around the client (partial writes, timeouts, frames).
    pub fn stream(&mut self) -> &mut S {
        &mut self.stream
    }

    /// The encoded bytes of `p` for this client's protocol.
    pub fn bytes(&self, p: &Packet) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode(p, self.proto, &mut out).expect("encode");
        out.to_vec()
    }

    /// Sends a packet in one write.
    pub fn send(&mut self, p: &Packet) {
        let bytes = self.bytes(p);
        self.send_raw(&bytes);
    }

    /// Sends raw bytes (for malformed-input tests). Errors are ignored: the broker may have
    /// closed the connection already.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
        let _ = self.stream.flush();
    }

    /// Reads what the stream has into the buffer, waiting until `deadline` at most.
    fn read_more(&mut self, deadline: Instant) -> Fill {
        loop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Fill::TimedOut;
            };
            self.stream.set_timeout(left.max(Duration::from_millis(1)));
            let mut chunk = [0u8; 8192];
            return match self.stream.read(&mut chunk) {
                Ok(0) => Fill::Closed,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    Fill::Bytes
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    Fill::TimedOut
                }
                Err(_) => Fill::Closed,
            };
        }
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
            match self.read_more(deadline) {
                Fill::Bytes => {}
                Fill::TimedOut | Fill::Closed => return None,
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
            match self.read_more(deadline) {
                Fill::Bytes => {}
                Fill::TimedOut => return (false, got),
                Fill::Closed => return (true, got),
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
