//! [`Pair`]: one client and the broker's side of its session, in memory, in the spirit of
//! quinn-proto's `Pair`. The client model builds packets (packet identifiers included) and
//! sends them; the pair hands each to the [`Session`] the way the broker's packet dispatch
//! does, with the time an explicit field, and keeps what a user would notice: the packets the
//! client receives, the messages the broker routes, and how the connection ends.

use crate::{
    negotiate, ConnectRefused, Delivery, Limits, Message, Origin, Received, Route, Session,
    Violation,
};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uringmq_codec::{Ack, Connect, Packet, Protocol, Publish, PublishProperties, QoS, ReasonCode};

/// The session's key for No Local, as a broker core would set it.
pub(crate) const ORIGIN: Origin = Origin {
    core: 0,
    session: 1,
};

/// How the broker ended the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Closed {
    /// A rule broken: DISCONNECT with its reason code (v5), then close.
    Violation(Violation),
    /// The client's DISCONNECT; `will`: the will is published.
    Disconnect { will: bool },
}

/// A connected client and its session.
pub(crate) struct Pair {
    pub(crate) session: Session,
    pub(crate) limits: Limits,
    /// The broker's clock.
    pub(crate) now: Instant,
    /// Messages the broker routed, oldest first.
    pub(crate) routed: Vec<Arc<Message>>,
    /// Set once the broker has closed the connection.
    pub(crate) closed: Option<Closed>,
    /// The ACL: whether the client may publish on a topic.
    pub(crate) acl: fn(&str) -> bool,
    /// How often the ACL was asked.
    pub(crate) acl_asked: usize,
    /// Packets the broker sent the client, oldest first.
    inbox: VecDeque<Packet>,
    /// The client's next packet identifier.
    next_pid: u16,
}

/// A CONNECT as most tests send it: clean, no will, keep-alive 60.
pub(crate) fn connect_packet(protocol: Protocol) -> Connect {
    Connect {
        protocol,
        clean_start: true,
        keep_alive: 60,
        client_id: "client".into(),
        will: None,
        username: None,
        password: None,
        properties: Default::default(),
    }
}

impl Pair {
    /// Connects a client whose CONNECT is `c`, against the broker's `limits`.
    pub(crate) fn connect(c: &Connect, limits: Limits) -> Result<Pair, ConnectRefused> {
        let n = negotiate(c, &limits, || "assigned".into())?;
        let session = Session::new(&n, c.protocol, 100, 1 << 20);
        Ok(Pair {
            session,
            limits,
            now: Instant::now(),
            routed: Vec::new(),
            closed: None,
            acl: |_| true,
            acl_asked: 0,
            inbox: VecDeque::new(),
            next_pid: 1,
        })
    }

    /// A client of `protocol` under the broker's limits as `edit` leaves the defaults.
    pub(crate) fn with_limits(protocol: Protocol, edit: impl FnOnce(&mut Limits)) -> Pair {
        let mut limits = Limits::for_tests();
        edit(&mut limits);
        Pair::connect(&connect_packet(protocol), limits).expect("CONNECT accepted")
    }

    /// A v5 client under the broker's default limits.
    pub(crate) fn v5() -> Pair {
        Pair::with_limits(Protocol::V5, |_| {})
    }

    /// A 3.1.1 client under the broker's default limits.
    pub(crate) fn v3() -> Pair {
        Pair::with_limits(Protocol::V3_1_1, |_| {})
    }

    /// The client sends `packet`, and the broker handles it as its dispatch does.
    pub(crate) fn send(&mut self, packet: Packet) {
        assert_eq!(self.closed, None, "the broker closed the connection");
        let s = &mut self.session;
        let handled = match packet {
            Packet::Publish(p) => self.on_publish(p),
            Packet::PubAck(a) => {
                let _ = s.handle_puback(&a);
                Ok(())
            }
            Packet::PubRec(a) => {
                self.inbox.extend(s.handle_pubrec(&a));
                Ok(())
            }
            Packet::PubRel(a) => {
                self.inbox.push_back(s.handle_pubrel(&a));
                Ok(())
            }
            Packet::PubComp(a) => {
                let _ = s.handle_pubcomp(&a);
                Ok(())
            }
            Packet::Disconnect(d) => s
                .handle_disconnect(&d, &self.limits)
                .map(|will| self.closed = Some(Closed::Disconnect { will })),
            other => panic!("not a packet the session rules: {other:?}"),
        };
        if let Err(v) = handled {
            self.closed = Some(Closed::Violation(v));
        }
    }

    fn on_publish(&mut self, p: Publish) -> Result<(), Violation> {
        let (acl, asked) = (self.acl, &mut self.acl_asked);
        let authorize = |_: &Session, topic: &str| {
            *asked += 1;
            acl(topic)
        };
        let Received { ack, route } =
            self.session
                .handle_publish(p, ORIGIN, &self.limits, self.now, authorize)?;
        if let Route::Message(m) = route {
            self.routed.push(m);
        }
        self.inbox.extend(ack);
        Ok(())
    }

    /// A PUBLISH from the client, with its next packet identifier (QoS 1/2).
    pub(crate) fn publish_packet(&mut self, topic: &str, qos: QoS) -> Publish {
        let packet_id = if qos == QoS::AtMostOnce {
            0
        } else {
            let id = self.next_pid;
            self.next_pid = self.next_pid.checked_add(1).unwrap_or(1);
            id
        };
        Publish {
            dup: false,
            qos,
            retain: false,
            topic: topic.into(),
            packet_id,
            properties: PublishProperties::default(),
            payload: Bytes::from_static(b"x"),
        }
    }

    /// The client publishes on `topic`; returns the packet identifier used.
    pub(crate) fn publish(&mut self, topic: &str, qos: QoS) -> u16 {
        let p = self.publish_packet(topic, qos);
        let pid = p.packet_id;
        self.send(Packet::Publish(p));
        pid
    }

    /// The next packet the client received.
    pub(crate) fn recv(&mut self) -> Option<Packet> {
        self.inbox.pop_front()
    }

    /// The next packet must be this acknowledgement (`PubAck`, `PubRec`...) of `pid` with `code`.
    pub(crate) fn expect_ack(&mut self, kind: fn(Ack) -> Packet, pid: u16, code: ReasonCode) {
        let mut want = Ack::new(pid);
        want.reason_code = code;
        assert_eq!(self.recv(), Some(kind(want)));
    }

    /// The broker must have closed the connection for a broken rule with reason `code`.
    pub(crate) fn expect_violation(&self, code: ReasonCode) -> &Violation {
        match &self.closed {
            Some(Closed::Violation(v)) if v.reason_code() == code => v,
            other => panic!("expected a violation with {code:?}, got {other:?}"),
        }
    }

    /// Lets time pass on the broker's clock.
    pub(crate) fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// The broker sends the client a message at `qos` (1 or 2): it is in flight until
    /// acknowledged. Returns its packet identifier.
    pub(crate) fn deliver(&mut self, qos: QoS) -> u16 {
        assert!(self.session.inflight.has_room(), "the window is full");
        let msg = Arc::new(Message {
            topic: "out".into(),
            payload: Bytes::new(),
            qos,
            retain: false,
            properties: PublishProperties::default(),
            origin: None,
            received_at: self.now,
        });
        let d = Delivery {
            qos,
            ..Default::default()
        };
        self.session.inflight.push(msg, d, None)
    }
}
