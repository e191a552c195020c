//! [`Session`]: everything the broker keeps about one client identifier, online or not.

use crate::connect::Negotiated;
use crate::inflight::Inflight;
use crate::qos2::InboundQos2;
use crate::queue::Queue;
use crate::rare::Rare;
use crate::subscriptions::Subscriptions;
use crate::topic_alias::{InboundAliases, OutboundAliases};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use uringmq_codec::Protocol;

/// The state of one MQTT session. `Send`, so a takeover can move it to another core.
///
/// Every session, idle ones included, is one allocation of this size: what an idle one does
/// not use is boxed on first use, here (`rare`) and in its parts (window, queue, inbound QoS
/// 2, subscriptions), so that it fits mimalloc's 80-byte class (BENCHMARKS.md, idle memory per
/// connection).
#[derive(Clone, Debug)]
pub struct Session {
    /// Client identifier.
    pub client_id: Arc<str>,
    /// Subscriptions.
    pub subs: Subscriptions,
    /// Outbound QoS 1/2 in flight.
    pub inflight: Inflight,
    /// Messages waiting to be sent.
    pub queue: Queue,
    /// User name, wills, expiry time, the alias maps, the client's Maximum Packet Size, inbound
    /// QoS 2 awaiting PUBREL: `None` while all are unset.
    pub(crate) rare: Option<Box<Rare>>,
    /// When the current (or last) connection's CONNECT was accepted, by the wall clock, in
    /// milliseconds since the Unix epoch (0 before), as the broker's API reports it. The wall
    /// clock rather than a millisecond counter, which wraps after 49.7 days; milliseconds
    /// rather than a `SystemTime`, half its size, finer than any user of it needs.
    connected_since_ms: u64,
    /// Session Expiry Interval (u32::MAX: never); DISCONNECT may change it.
    pub(crate) session_expiry: u32,
    /// The client's Topic Alias Maximum (0: we send no alias). Ours is the broker's
    /// (`Limits::topic_alias_maximum`, 0 in 3.x), passed with each PUBLISH.
    pub(crate) out_alias_max: u16,
    /// Protocol of the current (or last) connection.
    pub protocol: Protocol,
    /// Send reason strings (v5 Request Problem Information).
    pub problem_information: bool,
}

impl Session {
    /// Bytes of the box of rarely-set fields while a session has one (a user name, a will, an
    /// expiry time, an alias): the broker's memory accounting, `idle_path_sizes`.
    #[doc(hidden)]
    pub const RARE_SIZE: usize = std::mem::size_of::<Rare>();

    /// A new session for a connection.
    pub fn new(
        n: &Negotiated,
        protocol: Protocol,
        max_queued: usize,
        max_queued_bytes: usize,
    ) -> Self {
        let mut s = Session {
            client_id: n.client_id.as_str().into(),
            subs: Subscriptions::default(),
            inflight: Inflight::new(n.outbound_window),
            queue: Queue::new(max_queued, max_queued_bytes),
            rare: None,
            connected_since_ms: 0,
            session_expiry: 0,
            out_alias_max: 0,
            protocol,
            problem_information: true,
        };
        s.attach(n, protocol);
        s
    }

    /// Applies a (new) connection's negotiated parameters: a resumed session keeps its
    /// subscriptions, queue and in-flight messages; aliases start afresh [MQTT-3.3.2-7]; a
    /// pending will of the previous connection is cancelled [MQTT-3.1.3-10].
    pub fn attach(&mut self, n: &Negotiated, protocol: Protocol) {
        self.protocol = protocol;
        self.session_expiry = n.session_expiry;
        self.inflight.set_max(n.outbound_window);
        self.out_alias_max = if protocol.is_v5() {
            n.client_alias_max
        } else {
            0
        };
        self.problem_information = n.problem_information;
        if let Some(r) = self.rare.as_deref_mut() {
            r.in_aliases = InboundAliases::default();
            r.out_aliases = OutboundAliases::default();
            r.pending_will = None;
            r.expires_at = None;
        }
        self.set_will_delay(n.will_delay);
        self.set_client_max_packet(n.client_max_packet.and_then(NonZeroU32::new));
    }

    /// Whether the session outlives its connection.
    pub fn is_persistent(&self) -> bool {
        self.session_expiry != 0
    }

    /// Session Expiry Interval in seconds (u32::MAX: never), as CONNECT or DISCONNECT set it.
    pub fn session_expiry(&self) -> u32 {
        self.session_expiry
    }

    /// When the current (or last) connection's CONNECT was accepted (`UNIX_EPOCH` before), to
    /// the millisecond.
    pub fn connected_since(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.connected_since_ms)
    }

    /// Notes when the connection's CONNECT was accepted (the broker does, at CONNACK).
    pub fn set_connected_since(&mut self, at: SystemTime) {
        let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        self.connected_since_ms = u64::try_from(since.as_millis()).unwrap_or(u64::MAX);
    }

    /// Inbound QoS 2 packet ids received and not yet released (what the durable store keeps).
    pub fn qos2_in(&self) -> &InboundQos2 {
        static NONE: InboundQos2 = InboundQos2::new();
        self.rare.as_deref().map_or(&NONE, |r| &r.qos2_in)
    }

    /// Puts back the inbound QoS 2 ids of a session recovered from the durable store.
    pub fn restore_qos2_in(&mut self, ids: impl IntoIterator<Item = u16>) {
        for id in ids {
            self.receive_qos2_id(id);
        }
    }
}

// Every session, idle ones included, is one allocation of this size: keep it in mimalloc's
// 80-byte class (BENCHMARKS.md, idle memory per connection). 248 bytes before the outbound
// window and the queue were boxed on first use, 192 before the rarely-set fields were.
const _: () = assert!(std::mem::size_of::<Session>() <= 80);
// The rare part, when there is one, in the 80-byte class.
const _: () = assert!(std::mem::size_of::<Rare>() <= 80);
