//! Keep-alive: the grace period after which a silent client is disconnected, and the v5
//! Server Keep Alive override.

use std::time::Duration;

/// The keep-alive the connection runs with, and what CONNACK says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepAlive {
    /// Seconds in effect (0 = no keep-alive).
    pub secs: u16,
    /// v5 Server Keep Alive to send when it differs from the client's request [MQTT-3.2.2-21].
    pub server_override: Option<u16>,
}

/// Applies the broker's `max_keepalive` (0 = no limit) to the client's request. A v5 client
/// is told the value used; a 3.1.1 client cannot be, so its request is kept (as Mosquitto does).
pub fn negotiate(requested: u16, max: u16, v5: bool) -> KeepAlive {
    if !v5 || max == 0 || (requested != 0 && requested <= max) {
        return KeepAlive {
            secs: requested,
            server_override: None,
        };
    }
    // Over the limit, or 0 (= "no keep-alive") while the broker has one: use the limit.
    KeepAlive {
        secs: max,
        server_override: Some(max),
    }
}

/// Silence allowed before the connection is closed: one and a half times the keep-alive
/// [MQTT-3.1.2-24 (3.1.1: MQTT-3.1.2-24)]; `None` when keep-alive is off.
pub fn grace(secs: u16) -> Option<Duration> {
    (secs != 0).then(|| Duration::from_millis(u64::from(secs) * 1500))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_and_a_half_times() {
        assert_eq!(grace(0), None);
        assert_eq!(grace(10), Some(Duration::from_secs(15)));
        assert_eq!(grace(1), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn server_keep_alive_only_for_v5_over_the_limit() {
        assert_eq!(
            negotiate(30, 60, true),
            KeepAlive {
                secs: 30,
                server_override: None
            }
        );
        assert_eq!(
            negotiate(120, 60, true),
            KeepAlive {
                secs: 60,
                server_override: Some(60)
            }
        );
        assert_eq!(
            negotiate(0, 60, true),
            KeepAlive {
                secs: 60,
                server_override: Some(60)
            }
        );
        assert_eq!(
            negotiate(120, 60, false),
            KeepAlive {
                secs: 120,
                server_override: None
            }
        );
        assert_eq!(
            negotiate(0, 0, true),
            KeepAlive {
                secs: 0,
                server_override: None
            }
        );
    }
}
