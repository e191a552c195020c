//! [`Message`]: one application message, decoded once and shared (`Arc`) by every core and
//! subscriber it reaches.

use bytes::Bytes;
use std::time::Instant;
use uringmq_codec::{ByteStr, PublishProperties, QoS};

/// Who published a message: used for the v5 No Local option [MQTT-3.8.3-3].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The core the publisher's session lives on.
    pub core: u16,
    /// The publisher's session key on that core.
    pub session: u64,
}

/// An application message as routed inside the broker.
///
/// `properties` never carries a topic alias or subscription identifiers: those belong to one
/// hop (one connection) and are added per subscriber at delivery.
#[derive(Clone, Debug)]
pub struct Message {
    /// Topic name (aliases already resolved).
    pub topic: ByteStr,
    /// Payload, shared: never copied after decoding.
    pub payload: Bytes,
    /// QoS as published.
    pub qos: QoS,
    /// RETAIN flag as published.
    pub retain: bool,
    /// v5 properties, passed through untouched except Message Expiry (decremented on delivery).
    pub properties: PublishProperties,
    /// The publisher, if a client session (none for wills of ended sessions and injected messages).
    pub origin: Option<Origin>,
    /// When the broker received it (start of the Message Expiry Interval).
    pub received_at: Instant,
}

/// The message's expiry interval has passed: it must not be delivered [MQTT-3.3.2-5].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expired;

impl Message {
    /// The Message Expiry Interval to send at `now`: the received value minus the time spent in
    /// the broker [MQTT-3.3.2-6]. `Ok(None)`: the message does not expire.
    pub fn remaining_expiry(&self, now: Instant) -> Result<Option<u32>, Expired> {
        let Some(interval) = self.properties.message_expiry_interval else {
            return Ok(None);
        };
        let waited = now.saturating_duration_since(self.received_at).as_secs();
        if waited >= u64::from(interval) {
            Err(Expired)
        } else {
            Ok(Some(interval - waited as u32))
        }
    }

    /// Bytes this message costs in a queue (what `max_queued_bytes` counts).
    pub fn cost(&self) -> usize {
        self.topic.len() + self.payload.len()
    }

    /// Whether the topic is reserved for the broker (`$SYS/...`).
    pub fn is_sys_topic(topic: &str) -> bool {
        topic == "$SYS" || topic.starts_with("$SYS/")
    }

    /// Whether clients may not publish to `topic`: `$SYS/` except a bridge's state topic
    /// `$SYS/broker/connection/+/state`, which Mosquitto lets clients write (its bridges
    /// publish their state there, and set it as their will).
    pub fn is_reserved_for_broker(topic: &str) -> bool {
        Self::is_sys_topic(topic)
            && !uringmq_topic::matches("$SYS/broker/connection/+/state", topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn msg(expiry: Option<u32>, at: Instant) -> Message {
        Message {
            topic: "a".into(),
            payload: Bytes::from_static(b"x"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: PublishProperties {
                message_expiry_interval: expiry,
                ..Default::default()
            },
            origin: None,
            received_at: at,
        }
    }

    #[test]
    fn expiry_is_decremented_by_time_in_the_broker() {
        let t0 = Instant::now();
        let m = msg(Some(10), t0);
        assert_eq!(m.remaining_expiry(t0), Ok(Some(10)));
        assert_eq!(m.remaining_expiry(t0 + Duration::from_secs(3)), Ok(Some(7)));
        assert_eq!(
            m.remaining_expiry(t0 + Duration::from_secs(10)),
            Err(Expired)
        );
        assert_eq!(
            msg(None, t0).remaining_expiry(t0 + Duration::from_secs(99)),
            Ok(None)
        );
    }

    #[test]
    fn sys_topics_are_reserved() {
        assert!(Message::is_sys_topic("$SYS/broker/uptime"));
        assert!(Message::is_sys_topic("$SYS"));
        assert!(!Message::is_sys_topic("$SYSTEM/x"));
        assert!(!Message::is_sys_topic("a/$SYS"));
        assert!(Message::is_reserved_for_broker("$SYS/broker/uptime"));
        assert!(!Message::is_reserved_for_broker(
            "$SYS/broker/connection/b/state"
        ));
        assert!(Message::is_reserved_for_broker(
            "$SYS/broker/connection/b/state/x"
        ));
    }
}
