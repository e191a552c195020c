//! [`Limits`]: the broker's side of every rule, from its configuration. Announced to the client
//! in CONNACK and enforced on each packet after it; passed to the session as an argument, so
//! one value per broker serves every session.

/// The broker's limits (from its config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest keep-alive accepted (0 = no limit).
    pub max_keepalive: u16,
    /// Upper bound of the Session Expiry Interval, at CONNECT and at DISCONNECT (u32::MAX =
    /// never expire).
    pub max_session_expiry: u32,
    /// Our Receive Maximum [MQTT-3.3.4-9] and the cap of the outbound window.
    pub max_inflight: u16,
    /// Largest packet we accept.
    pub max_packet_size: u32,
    /// Our Topic Alias Maximum.
    pub topic_alias_maximum: u16,
    /// Highest QoS we grant and accept [MQTT-3.2.2-11].
    pub max_qos: u8,
    /// Retained messages supported [MQTT-3.2.2-14].
    pub retain_available: bool,
    /// Use outbound topic aliases when the client allows them.
    pub outbound_topic_aliases: bool,
    /// Most levels a topic name (PUBLISH, will) may have.
    pub max_topic_levels: usize,
    /// Longest topic name (PUBLISH, will) in bytes.
    pub max_topic_length: usize,
}

#[cfg(test)]
impl Limits {
    /// The broker's default limits.
    pub(crate) fn for_tests() -> Limits {
        Limits {
            max_keepalive: 65535,
            max_session_expiry: u32::MAX,
            max_inflight: 64,
            max_packet_size: 16 << 20,
            topic_alias_maximum: 64,
            max_qos: 2,
            retain_available: true,
            outbound_topic_aliases: true,
            max_topic_levels: 128,
            max_topic_length: 4096,
        }
    }
}
