//! WebSocket over TLS: the TLS adapter's plaintext is the WebSocket adapter's raw stream.

use bytes::BytesMut;

use crate::error::TransportError;
use crate::identity::PeerIdentity;
use crate::tls::TlsTransport;
use crate::transport::ReadOutcome;
use crate::ws::WsTransport;

/// Above this capacity the scratch buffer is dropped after use, so an idle connection does
/// not keep the memory of its largest read.
const SCRATCH_KEEP: usize = 16 << 10;

/// The server side of one `wss://` connection.
#[derive(Debug)]
pub struct WssTransport {
    tls: TlsTransport,
    ws: WsTransport,
    /// Plaintext between the layers; empty between calls.
    scratch: BytesMut,
}

impl WssTransport {
    /// Stacks a WebSocket session on a TLS session.
    pub fn new(tls: TlsTransport, ws: WsTransport) -> Self {
        WssTransport {
            tls,
            ws,
            scratch: BytesMut::new(),
        }
    }

    /// Decrypts `raw`, then unframes it into `mqtt_in`. See the two layers' `read_raw`.
    pub fn read_raw(
        &mut self,
        raw: &[u8],
        mqtt_in: &mut BytesMut,
    ) -> Result<ReadOutcome, TransportError> {
        let tls_outcome = self.tls.read_raw(raw, &mut self.scratch);
        // Plaintext that arrived before a TLS error or close_notify still counts.
        let ws_outcome = self.ws.read_raw(&self.scratch, mqtt_in);
        self.release_scratch();
        // Encrypt what the WebSocket layer wants to say (101, pong, close) right away.
        self.flush_ws();
        match (tls_outcome?, ws_outcome?) {
            (ReadOutcome::Open, ReadOutcome::Open) => Ok(ReadOutcome::Open),
            _ => Ok(ReadOutcome::Closed),
        }
    }

    /// Frames `mqtt` into a binary frame and encrypts it into `raw_out`.
    pub fn write_mqtt(&mut self, mqtt: &[u8], raw_out: &mut BytesMut) {
        self.write_mqtt_parts(&[mqtt], raw_out);
    }

    /// Like [`Self::write_mqtt`], the frame's payload being `parts` in order.
    pub fn write_mqtt_parts(&mut self, parts: &[&[u8]], raw_out: &mut BytesMut) {
        self.ws.write_mqtt_parts(parts, &mut self.scratch);
        self.tls.write_plain(&self.scratch, raw_out);
        self.release_scratch();
    }

    /// Moves both layers' own bytes, encrypted, to `raw_out`.
    pub fn pending_raw(&mut self, raw_out: &mut BytesMut) {
        self.flush_ws();
        self.tls.pending_raw(raw_out);
    }

    /// True while either layer has bytes of its own to send.
    pub fn wants_write(&self) -> bool {
        self.ws.wants_write() || self.tls.wants_write()
    }

    /// How many bytes the WebSocket layer's answers (pongs, close) hold.
    pub fn pending_len(&self) -> usize {
        self.ws.pending_len()
    }

    /// True until both the TLS handshake and the WebSocket upgrade are done.
    pub fn is_handshaking(&self) -> bool {
        self.tls.is_handshaking() || self.ws.is_handshaking()
    }

    /// True once the WebSocket layer queued its close.
    pub fn is_closed(&self) -> bool {
        self.ws.is_closed()
    }

    /// Queues a WebSocket close (1000) followed by TLS `close_notify`.
    pub fn close(&mut self) {
        self.ws.close();
        self.flush_ws();
        self.tls.close();
    }

    /// The client certificate's identity, if one was presented.
    pub fn peer_identity(&self) -> Option<PeerIdentity> {
        self.tls.peer_identity()
    }

    /// The TLS layer, for logging the negotiated version or SNI name.
    pub fn tls(&self) -> &TlsTransport {
        &self.tls
    }

    /// Hands the WebSocket layer's pending bytes to TLS as plaintext (kept inside rustls
    /// until `pending_raw` or the next write drains them).
    fn flush_ws(&mut self) {
        if self.ws.wants_write() {
            self.ws.pending_raw(&mut self.scratch);
            self.tls.queue_plain(&self.scratch);
            self.release_scratch();
        }
    }

    fn release_scratch(&mut self) {
        self.scratch.clear();
        if self.scratch.capacity() > SCRATCH_KEEP {
            self.scratch = BytesMut::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::version::TLS13;
    use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

    use crate::test_support::{client_config, pki_files, Pair, PumpError};
    use crate::ws::tests::{client_frame, server_frames, REQUEST};
    use crate::{ReadOutcome, TlsSettings, Transport, TransportError, WsConfig};

    fn wss_pair(require_cert: bool, with_cert: bool) -> Pair {
        let files = pki_files("ws-client");
        let ca = Some(files.paths.ca_cert.as_path());
        let settings = TlsSettings::load(
            &files.paths.server_cert,
            &files.paths.server_key,
            ca,
            require_cert,
        )
        .unwrap();
        let pki = &files.pki;
        let cert = with_cert.then_some((pki.client_cert_pem.as_str(), pki.client_key_pem.as_str()));
        let config = client_config(&pki.ca_cert_pem, cert, &[&TLS13]);
        let server = Transport::wss(&settings, Arc::new(WsConfig::default())).unwrap();
        Pair::new(config, server)
    }

    #[test]
    fn upgrade_and_frames_travel_inside_tls() {
        let mut pair = wss_pair(false, false);
        pair.pump().unwrap();
        assert!(
            pair.server.is_handshaking(),
            "TLS done, upgrade still pending"
        );
        pair.client_send(REQUEST).unwrap();
        assert!(!pair.server.is_handshaking());
        assert!(pair
            .client_plain
            .starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
        pair.client_plain.clear();

        let mut frames = client_frame(OpCode::Data(Data::Binary), true, b"\x10\x00");
        frames.extend(client_frame(OpCode::Control(Control::Ping), true, b"z"));
        pair.client_send(&frames).unwrap();
        assert_eq!(&pair.server_mqtt[..], b"\x10\x00");
        pair.server_send(b"\x20\x02\x00\x00").unwrap();
        assert_eq!(
            server_frames(&pair.client_plain),
            vec![
                (OpCode::Control(Control::Pong), true, b"z".to_vec()),
                (
                    OpCode::Data(Data::Binary),
                    true,
                    b"\x20\x02\x00\x00".to_vec()
                ),
            ]
        );
    }

    #[test]
    fn client_certificate_identity_is_visible_through_wss() {
        let mut pair = wss_pair(true, true);
        pair.pump().unwrap();
        let id = pair.server.peer_identity().unwrap();
        assert_eq!(id.common_name.as_deref(), Some("ws-client"));
    }

    #[test]
    fn websocket_error_close_frame_is_encrypted_to_the_client() {
        let mut pair = wss_pair(false, false);
        pair.client_send(REQUEST).unwrap();
        pair.client_plain.clear();
        let text = client_frame(OpCode::Data(Data::Text), true, b"hello");
        match pair.client_send(&text) {
            Err(PumpError::Server(TransportError::WsProtocol { code: 1003, .. })) => {}
            other => panic!("expected close 1003, got {other:?}"),
        }
        let frames = server_frames(&pair.client_plain);
        assert_eq!(frames[0].0, OpCode::Control(Control::Close));
        assert_eq!(frames[0].2[..2], 1003u16.to_be_bytes());
    }

    #[test]
    fn server_close_sends_ws_close_then_close_notify() {
        let mut pair = wss_pair(false, false);
        pair.client_send(REQUEST).unwrap();
        pair.client_plain.clear();
        pair.server.close();
        pair.pump().unwrap();
        let frames = server_frames(&pair.client_plain);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].2[..2], 1000u16.to_be_bytes());
        assert!(pair.client.process_new_packets().unwrap().peer_has_closed());
    }

    #[test]
    fn client_ws_close_reads_as_closed() {
        let mut pair = wss_pair(false, false);
        pair.client_send(REQUEST).unwrap();
        let close = client_frame(OpCode::Control(Control::Close), true, b"\x03\xe8");
        pair.client_send(&close).unwrap();
        assert_eq!(pair.server_outcome, ReadOutcome::Closed);
    }
}
