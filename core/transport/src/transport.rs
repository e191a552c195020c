//! The one type the broker holds per connection: plain TCP, TLS, WebSocket or WebSocket over
//! TLS, dispatched statically. Plain TCP is a unit variant, so it costs no allocation and
//! no state; the other variants are boxed so the enum stays two words for every connection.

use std::sync::Arc;

use bytes::BytesMut;

use crate::error::TransportError;
use crate::identity::PeerIdentity;
use crate::tls::TlsTransport;
use crate::tls_settings::TlsSettings;
use crate::ws::{WsConfig, WsTransport};
use crate::wss::WssTransport;

/// Whether the transport is still open after a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// More bytes may come.
    Open,
    /// The peer ended the transport cleanly (TLS `close_notify` or a WebSocket close frame):
    /// decode what `mqtt_in` holds, send [`Transport::pending_raw`] and close the socket,
    /// treating it like end-of-file (a will message is still published).
    Closed,
}

/// The byte transformation between one socket and the MQTT codec.
///
/// The broker's loop, per connection:
/// - on socket bytes: `read_raw(raw, &mut mqtt_in)`, then decode packets from `mqtt_in`;
///   if `wants_write()`, send `pending_raw` (handshake answers, pong, close);
/// - to send MQTT bytes: `write_mqtt(bytes, &mut raw_out)` and send `raw_out`;
/// - on `Err`: log it, send `pending_raw` once (alert, HTTP error or close frame), close;
/// - to end a connection: `close()`, send `pending_raw`, close the socket.
///
/// For [`Transport::Tcp`] `is_passthrough()` is true and the broker should skip the adapter
/// and read into / write from its MQTT buffers directly (`read_raw` still works, by copy).
#[derive(Debug)]
pub enum Transport {
    /// Plain TCP: bytes pass through unchanged.
    Tcp,
    /// MQTT over TLS.
    Tls(Box<TlsTransport>),
    /// MQTT over WebSocket.
    Ws(Box<WsTransport>),
    /// MQTT over WebSocket over TLS.
    Wss(Box<WssTransport>),
}

impl Transport {
    /// A TLS connection with the listener's current certificates.
    pub fn tls(settings: &TlsSettings) -> Result<Self, TransportError> {
        Ok(Transport::Tls(Box::new(settings.accept()?)))
    }

    /// A WebSocket connection waiting for its upgrade request.
    pub fn ws(config: Arc<WsConfig>) -> Self {
        Transport::Ws(Box::new(WsTransport::new(config)))
    }

    /// A WebSocket-over-TLS connection with the listener's current certificates.
    pub fn wss(settings: &TlsSettings, config: Arc<WsConfig>) -> Result<Self, TransportError> {
        Ok(Transport::Wss(Box::new(WssTransport::new(
            settings.accept()?,
            WsTransport::new(config),
        ))))
    }

    /// True for plain TCP, where socket bytes are MQTT bytes.
    pub fn is_passthrough(&self) -> bool {
        matches!(self, Transport::Tcp)
    }

    /// A short name for log lines and metrics labels.
    pub fn name(&self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls(_) => "tls",
            Transport::Ws(_) => "ws",
            Transport::Wss(_) => "wss",
        }
    }

    /// Feeds bytes read from the socket; the MQTT bytes they carry are appended to `mqtt_in`.
    pub fn read_raw(
        &mut self,
        raw: &[u8],
        mqtt_in: &mut BytesMut,
    ) -> Result<ReadOutcome, TransportError> {
        match self {
            Transport::Tcp => {
                mqtt_in.extend_from_slice(raw);
                Ok(ReadOutcome::Open)
            }
            Transport::Tls(t) => t.read_raw(raw, mqtt_in),
            Transport::Ws(t) => t.read_raw(raw, mqtt_in),
            Transport::Wss(t) => t.read_raw(raw, mqtt_in),
        }
    }

    /// Wraps MQTT bytes (TLS records, one WebSocket binary frame per call) into `raw_out`.
    pub fn write_mqtt(&mut self, mqtt: &[u8], raw_out: &mut BytesMut) {
        self.write_mqtt_parts(&[mqtt], raw_out);
    }

    /// Like [`Self::write_mqtt`] for MQTT bytes held in several buffers, in order (the broker
    /// shares large payloads instead of copying them into one buffer): still one WebSocket
    /// frame per call, and the wrapping copy is the only one.
    pub fn write_mqtt_parts(&mut self, parts: &[&[u8]], raw_out: &mut BytesMut) {
        match self {
            Transport::Tcp => parts.iter().for_each(|p| raw_out.extend_from_slice(p)),
            Transport::Tls(t) => {
                parts.iter().for_each(|p| t.queue_plain(p));
                t.pending_raw(raw_out);
            }
            Transport::Ws(t) => t.write_mqtt_parts(parts, raw_out),
            Transport::Wss(t) => t.write_mqtt_parts(parts, raw_out),
        }
    }

    /// Appends the bytes the transport itself must send: TLS handshake records and alerts,
    /// the WebSocket upgrade answer, pongs and close frames.
    pub fn pending_raw(&mut self, raw_out: &mut BytesMut) {
        match self {
            Transport::Tcp => {}
            Transport::Tls(t) => t.pending_raw(raw_out),
            Transport::Ws(t) => t.pending_raw(raw_out),
            Transport::Wss(t) => t.pending_raw(raw_out),
        }
    }

    /// True when [`Self::pending_raw`] has something to send.
    pub fn wants_write(&self) -> bool {
        match self {
            Transport::Tcp => false,
            Transport::Tls(t) => t.wants_write(),
            Transport::Ws(t) => t.wants_write(),
            Transport::Wss(t) => t.wants_write(),
        }
    }

    /// Bytes of its own the transport holds for a peer that does not read: WebSocket pongs,
    /// which a client can make the broker queue by sending pings. TLS counts nothing here:
    /// its own records (handshake, alerts) are few and rustls does not tell their size.
    pub fn pending_len(&self) -> usize {
        match self {
            Transport::Tcp | Transport::Tls(_) => 0,
            Transport::Ws(t) => t.pending_len(),
            Transport::Wss(t) => t.pending_len(),
        }
    }

    /// True until the TLS handshake and/or the WebSocket upgrade have completed; the
    /// broker's CONNECT timeout should cover this time too.
    pub fn is_handshaking(&self) -> bool {
        match self {
            Transport::Tcp => false,
            Transport::Tls(t) => t.is_handshaking(),
            Transport::Ws(t) => t.is_handshaking(),
            Transport::Wss(t) => t.is_handshaking(),
        }
    }

    /// Queues a graceful end (WebSocket close 1000, TLS `close_notify`), sent by the next
    /// [`Self::pending_raw`]. MQTT bytes written afterwards are dropped by WebSocket layers.
    pub fn close(&mut self) {
        match self {
            Transport::Tcp => {}
            Transport::Tls(t) => t.close(),
            Transport::Ws(t) => t.close(),
            Transport::Wss(t) => t.close(),
        }
    }

    /// CN, subject and SANs of the verified client certificate (TLS and WSS only), for
    /// "username from certificate".
    pub fn peer_identity(&self) -> Option<PeerIdentity> {
        match self {
            Transport::Tls(t) => t.peer_identity(),
            Transport::Wss(t) => t.peer_identity(),
            Transport::Tcp | Transport::Ws(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_per_connection_enum_is_two_words() {
        // Plain TCP connections pay only this; TLS/WS state lives behind the box.
        assert_eq!(
            std::mem::size_of::<Transport>(),
            2 * std::mem::size_of::<usize>()
        );
    }

    #[test]
    fn tcp_passes_bytes_through_unchanged() {
        let mut tcp = Transport::Tcp;
        assert!(tcp.is_passthrough());
        assert!(!tcp.is_handshaking());
        let mut mqtt = BytesMut::new();
        assert_eq!(
            tcp.read_raw(b"\xc0\x00", &mut mqtt).unwrap(),
            ReadOutcome::Open
        );
        assert_eq!(&mqtt[..], b"\xc0\x00");
        let mut raw = BytesMut::new();
        tcp.write_mqtt(b"\xd0\x00", &mut raw);
        tcp.close();
        tcp.pending_raw(&mut raw);
        assert_eq!(&raw[..], b"\xd0\x00");
        assert!(!tcp.wants_write());
        assert_eq!(tcp.peer_identity(), None);
    }

    #[test]
    fn ws_variant_dispatches_to_the_websocket_adapter() {
        let mut ws = Transport::ws(Arc::new(WsConfig::default()));
        assert_eq!(ws.name(), "ws");
        assert!(ws.is_handshaking() && !ws.is_passthrough());
        let mut mqtt = BytesMut::new();
        ws.read_raw(crate::ws::tests::REQUEST, &mut mqtt).unwrap();
        assert!(ws.wants_write());
        let mut raw = BytesMut::new();
        ws.pending_raw(&mut raw);
        assert!(raw.starts_with(b"HTTP/1.1 101 "));
    }
}
