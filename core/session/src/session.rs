//! [`Session`]: everything the broker keeps about one client identifier, online or not.

use crate::connect::Negotiated;
use crate::inflight::Inflight;
use crate::qos2::InboundQos2;
use crate::queue::Queue;
use crate::subscriptions::Subscriptions;
use crate::topic_alias::{InboundAliases, OutboundAliases};
use crate::will::PendingWill;
use std::sync::Arc;
use std::time::Instant;
use uringmq_codec::{LastWill, Protocol};

/// The state of one MQTT session. `Send`, so a takeover can move it to another core.
#[derive(Clone, Debug)]
pub struct Session {
    /// Client identifier.
    pub client_id: Arc<str>,
    /// User name of the current (or last) connection.
    pub username: Option<Arc<str>>,
    /// Protocol of the current (or last) connection.
    pub protocol: Protocol,
    /// Subscriptions.
    pub subs: Subscriptions,
    /// Outbound QoS 1/2 in flight.
    pub inflight: Inflight,
    /// Messages waiting to be sent.
    pub queue: Queue,
    /// Inbound QoS 2 awaiting PUBREL.
    pub(crate) qos2_in: InboundQos2,
    /// Session Expiry Interval (u32::MAX: never); DISCONNECT may change it.
    pub(crate) session_expiry: u32,
    /// Inbound topic aliases (per connection).
    pub(crate) in_aliases: InboundAliases,
    /// Outbound topic aliases (per connection).
    pub out_aliases: OutboundAliases,
    /// The client's Maximum Packet Size (per connection).
    /// (`NonZeroU32`: four bytes; 0 is refused at CONNECT [MQTT-3.1.2-24].)
    pub client_max_packet: Option<std::num::NonZeroU32>,
    /// Will of the current connection. Boxed, like the pending will: most clients have none,
    /// and every session, idle ones included, would otherwise carry its ~200 bytes.
    pub will: Option<Box<LastWill>>,
    /// Will Delay Interval of the current connection.
    will_delay: u32,
    /// A will waiting for its delay after the connection closed.
    /// Boxed: rare, and every session would carry the room.
    pub pending_will: Option<Box<PendingWill>>,
    /// When an offline session ends (None while connected or never).
    pub expires_at: Option<Instant>,
    /// Send reason strings (v5 Request Problem Information).
    pub problem_information: bool,
    /// When the current (or last) connection's CONNECT was accepted, by the wall clock, as
    /// the broker's API reports it; set by the broker at CONNACK (`UNIX_EPOCH` before).
    /// Here rather than derived from a millisecond counter, which wraps after 49.7 days.
    pub connected_since: std::time::SystemTime,
}

impl Session {
    /// A new session for a connection.
    pub fn new(
        n: &Negotiated,
        protocol: Protocol,
        max_queued: usize,
        max_queued_bytes: usize,
        alias_max_in: u16,
    ) -> Self {
        let mut s = Session {
            client_id: n.client_id.as_str().into(),
            username: None,
            protocol,
            subs: Subscriptions::default(),
            inflight: Inflight::new(n.outbound_window),
            queue: Queue::new(max_queued, max_queued_bytes),
            qos2_in: InboundQos2::default(),
            session_expiry: 0,
            in_aliases: InboundAliases::new(0),
            out_aliases: OutboundAliases::new(0),
            client_max_packet: None,
            will: None,
            will_delay: 0,
            pending_will: None,
            expires_at: None,
            problem_information: true,
            connected_since: std::time::UNIX_EPOCH,
        };
        s.attach(n, protocol, alias_max_in);
        s
    }

    /// Applies a (new) connection's negotiated parameters: a resumed session keeps its
    /// subscriptions, queue and in-flight messages; aliases start afresh [MQTT-3.3.2-7]; a
    /// pending will of the previous connection is cancelled [MQTT-3.1.3-10].
    pub fn attach(&mut self, n: &Negotiated, protocol: Protocol, alias_max_in: u16) {
        self.protocol = protocol;
        self.session_expiry = n.session_expiry;
        self.inflight.set_max(n.outbound_window);
        self.in_aliases = InboundAliases::new(if protocol.is_v5() { alias_max_in } else { 0 });
        self.out_aliases = OutboundAliases::new(if protocol.is_v5() {
            n.client_alias_max
        } else {
            0
        });
        self.client_max_packet = n.client_max_packet.and_then(std::num::NonZeroU32::new);
        self.will_delay = n.will_delay;
        self.pending_will = None;
        self.expires_at = None;
        self.problem_information = n.problem_information;
    }

    /// Whether the session outlives its connection.
    pub fn is_persistent(&self) -> bool {
        self.session_expiry != 0
    }

    /// Session Expiry Interval in seconds (u32::MAX: never), as CONNECT or DISCONNECT set it.
    pub fn session_expiry(&self) -> u32 {
        self.session_expiry
    }

    /// Will Delay Interval of the current connection, in seconds.
    pub fn will_delay(&self) -> u32 {
        self.will_delay
    }

    /// Inbound QoS 2 packet ids received and not yet released (what the durable store keeps).
    pub fn qos2_in(&self) -> &InboundQos2 {
        &self.qos2_in
    }

    /// Puts back the inbound QoS 2 ids of a session recovered from the durable store.
    pub fn restore_qos2_in(&mut self, ids: impl IntoIterator<Item = u16>) {
        for id in ids {
            self.qos2_in.receive(id);
        }
    }
}

// Every session, idle ones included, is one allocation of this size: keep it in mimalloc's
// 192-byte class (BENCHMARKS.md, idle memory per connection). 248 bytes before the outbound
// window and the queue were boxed on first use.
const _: () = assert!(std::mem::size_of::<Session>() <= 192);
