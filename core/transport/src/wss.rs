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
        self.ws.write_mqtt(mqtt, &mut self.scratch);
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
