//! Receive Maximum, both ways.
//!
//! Outbound: the client's Receive Maximum (65535 when absent [§3.1.2.11.3]) capped by the
//! broker's `max_inflight` sizes the in-flight window. Inbound: the broker announces its own
//! and a client that has more unacknowledged QoS 1/2 PUBLISH packets outstanding breaks
//! [MQTT-3.3.4-9] (DISCONNECT 0x93).

/// The outbound window for a client.
pub fn outbound_window(client_receive_maximum: Option<u16>, max_inflight: u16) -> u16 {
    client_receive_maximum
        .unwrap_or(u16::MAX)
        .min(max_inflight)
        .max(1)
}

/// Whether one more inbound QoS 1/2 PUBLISH, with `outstanding` already unacknowledged by the
/// broker, exceeds the Receive Maximum `announced`.
pub fn inbound_exceeded(outstanding: usize, announced: u16) -> bool {
    outstanding >= usize::from(announced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_the_smaller_of_client_and_broker() {
        assert_eq!(outbound_window(None, 64), 64);
        assert_eq!(outbound_window(Some(5), 64), 5);
        assert_eq!(outbound_window(Some(500), 64), 64);
    }

    #[test]
    fn inbound_quota() {
        assert!(!inbound_exceeded(0, 1));
        assert!(inbound_exceeded(1, 1));
    }
}
