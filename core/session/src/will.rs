//! The Will Message: when it goes out.
//!
//! It is published when the network connection closes without DISCONNECT 0x00 (v5: 0x04 asks
//! for it explicitly), after the Will Delay Interval or when the session ends, whichever comes
//! first [MQTT-3.1.3-9]; a new connection to the session before then cancels it [MQTT-3.1.3-10].

use crate::message::{Message, Origin};
use std::time::{Duration, Instant};
use uringmq_codec::{LastWill, PublishProperties};

/// A will waiting for its delay to pass.
#[derive(Clone, Debug)]
pub struct PendingWill {
    /// The will (boxed: see `Session::will`).
    pub will: Box<LastWill>,
    /// When it is published.
    pub due: Instant,
}

/// When a will is due after the connection closed at `closed_at`: the delay, capped by the
/// session expiry (the session ending publishes it). `session_expiry` of `u32::MAX` never ends.
pub fn due(closed_at: Instant, will_delay: u32, session_expiry: u32) -> Instant {
    let secs = if session_expiry == u32::MAX {
        will_delay
    } else {
        will_delay.min(session_expiry)
    };
    closed_at + Duration::from_secs(u64::from(secs))
}

/// The application message a will becomes.
pub fn to_message(will: &LastWill, origin: Option<Origin>, now: Instant) -> Message {
    let p = &will.properties;
    Message {
        topic: will.topic.clone(),
        payload: will.payload.clone(),
        qos: will.qos,
        retain: will.retain,
        properties: PublishProperties {
            payload_format_indicator: p.payload_format_indicator,
            message_expiry_interval: p.message_expiry_interval,
            topic_alias: None,
            response_topic: p.response_topic.clone(),
            correlation_data: p.correlation_data.clone(),
            user_properties: p.user_properties.clone(),
            subscription_identifiers: Default::default(),
            content_type: p.content_type.clone(),
        },
        origin,
        received_at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_is_capped_by_session_expiry() {
        let t = Instant::now();
        assert_eq!(due(t, 10, 3), t + Duration::from_secs(3));
        assert_eq!(due(t, 2, 30), t + Duration::from_secs(2));
        assert_eq!(due(t, 0, 30), t);
        assert_eq!(due(t, 5, u32::MAX), t + Duration::from_secs(5));
        assert_eq!(due(t, 5, 0), t, "a session that ends now publishes now");
    }
}
