//! Why a connection ended (`CloseReason`): decides the will, the log line and the name the
//! embedder's disconnect hook sees.

/// Why a connection ended: decides the will and the log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// DISCONNECT from the client; `will` for v5 reason 0x04.
    Disconnect { will: bool },
    /// The client closed the socket without DISCONNECT.
    Eof,
    /// A socket error.
    Io(String),
    /// A protocol violation (reason code, rule).
    Protocol(u8, String),
    /// No packet within 1.5x keep-alive.
    KeepAlive,
    /// No CONNECT within `connect_timeout_secs`.
    ConnectTimeout,
    /// Another connection took the session over.
    TakenOver,
    /// The broker is stopping.
    Shutdown,
    /// CONNECT refused.
    Refused(u8),
    /// The embedding program asked (`Broker::disconnect`); `will`: publish the will.
    Kicked { will: bool },
    /// Over `max_publish_rate` / `max_publish_bytes_rate` for too long (v5: DISCONNECT 0x96).
    RateLimited,
}

impl CloseReason {
    /// A stable name for the embedder's disconnect hook.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            CloseReason::Disconnect { will: false } => "client_disconnected",
            CloseReason::Disconnect { will: true } => "client_disconnected_with_will",
            CloseReason::Eof => "connection_lost",
            CloseReason::Io(_) => "socket_error",
            CloseReason::Protocol(..) => "protocol_error",
            CloseReason::KeepAlive => "keep_alive_timeout",
            CloseReason::ConnectTimeout => "connect_timeout",
            CloseReason::TakenOver => "session_taken_over",
            CloseReason::Shutdown => "server_shutting_down",
            CloseReason::Refused(_) => "connect_refused",
            CloseReason::Kicked { .. } => "administrative_action",
            CloseReason::RateLimited => "message_rate_too_high",
        }
    }

    /// Whether the will is published [MQTT-3.1.2-8] [MQTT-3.14.4-3].
    pub(crate) fn publishes_will(&self) -> bool {
        !matches!(
            self,
            CloseReason::Disconnect { will: false }
                | CloseReason::Kicked { will: false }
                | CloseReason::Shutdown
                | CloseReason::Refused(_)
        )
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::Disconnect { will: false } => f.write_str("client disconnected"),
            CloseReason::Disconnect { will: true } => f.write_str("client disconnected with will"),
            CloseReason::Eof => f.write_str("connection closed by client"),
            CloseReason::Io(e) => write!(f, "socket error: {e}"),
            CloseReason::Protocol(code, why) => write!(f, "protocol error {code:#04x}: {why}"),
            CloseReason::KeepAlive => f.write_str("keep-alive timeout"),
            CloseReason::ConnectTimeout => f.write_str("no CONNECT in time"),
            CloseReason::TakenOver => f.write_str("session taken over"),
            CloseReason::Shutdown => f.write_str("broker shutting down"),
            CloseReason::Refused(code) => write!(f, "CONNECT refused ({code:#04x})"),
            CloseReason::Kicked { .. } => f.write_str("disconnected by the embedding program"),
            CloseReason::RateLimited => f.write_str("publish rate too high"),
        }
    }
}
