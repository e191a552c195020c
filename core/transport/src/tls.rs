//! TLS as a sans-I/O adapter: a rustls `ServerConnection` fed with socket bytes and drained
//! into plaintext, with no socket of its own, so it runs the same under io_uring and epoll.

use std::io::BufRead;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use rustls::{ServerConfig, ServerConnection};

use crate::error::TransportError;
use crate::identity::PeerIdentity;
use crate::transport::ReadOutcome;

/// The server side of one TLS connection.
pub struct TlsTransport {
    conn: ServerConnection,
}

impl std::fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTransport")
            .field("handshaking", &self.conn.is_handshaking())
            .finish_non_exhaustive()
    }
}

impl TlsTransport {
    /// Starts a server-side TLS session with `config` (normally from `TlsSettings::accept`).
    pub fn new(config: Arc<ServerConfig>) -> Result<Self, TransportError> {
        let mut conn = ServerConnection::new(config)?;
        // Every write is drained into the caller's buffer at once, and the broker bounds
        // its outbound bytes itself, so rustls' own 64 KiB limit would only truncate writes.
        conn.set_buffer_limit(None);
        Ok(TlsTransport { conn })
    }

    /// Feeds TLS records from the socket; decrypted application bytes are appended to
    /// `plain_out`. Handshake replies become available through [`Self::pending_raw`].
    ///
    /// Returns [`ReadOutcome::Closed`] once the peer sent `close_notify`; bytes after it are
    /// ignored. On error (bad handshake, bad certificate, corrupt record) rustls has queued an
    /// alert: send [`Self::pending_raw`] and close.
    pub fn read_raw(
        &mut self,
        raw: &[u8],
        plain_out: &mut BytesMut,
    ) -> Result<ReadOutcome, TransportError> {
        let mut input = raw;
        while !input.is_empty() {
            match self.conn.read_tls(&mut input) {
                // rustls reads nothing more once close_notify arrived.
                Ok(0) => return Ok(ReadOutcome::Closed),
                Ok(_) => {}
                Err(e) => return Err(TransportError::TlsIo(e)),
            }
            let state = self.conn.process_new_packets()?;
            // Drain after every record batch so rustls' plaintext buffer never fills up.
            self.drain_plaintext(plain_out)?;
            if state.peer_has_closed() {
                return Ok(ReadOutcome::Closed);
            }
        }
        Ok(ReadOutcome::Open)
    }

    /// Copies decrypted bytes out of rustls without zero-filling a buffer first.
    fn drain_plaintext(&mut self, plain_out: &mut BytesMut) -> Result<(), TransportError> {
        let mut reader = self.conn.reader();
        loop {
            let chunk = match reader.fill_buf() {
                Ok(chunk) => chunk,
                // No plaintext right now.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(TransportError::TlsIo(e)),
            };
            if chunk.is_empty() {
                // Clean close_notify with nothing left; the caller sees peer_has_closed.
                return Ok(());
            }
            let n = chunk.len();
            plain_out.extend_from_slice(chunk);
            reader.consume(n);
        }
    }

    /// Encrypts `plain` into TLS records appended to `raw_out`. Before the handshake completes
    /// the bytes are held by rustls and leave with the first records after it.
    pub fn write_plain(&mut self, plain: &[u8], raw_out: &mut BytesMut) {
        self.queue_plain(plain);
        self.pending_raw(raw_out);
    }

    /// Hands `plain` to rustls, which encrypts it into records that wait for
    /// [`Self::pending_raw`] (or, before the handshake completes, for its end).
    pub fn queue_plain(&mut self, plain: &[u8]) {
        if !plain.is_empty() {
            // With no buffer limit (see `new`) rustls takes every byte; an error would only
            // mean the connection is already closed for writing, when the bytes are moot.
            let _ = std::io::Write::write_all(&mut self.conn.writer(), plain);
        }
    }

    /// Appends every TLS record rustls wants to send (handshake messages, alerts, tickets,
    /// application data) to `raw_out`.
    pub fn pending_raw(&mut self, raw_out: &mut BytesMut) {
        let mut writer = raw_out.writer();
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut writer) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// True while rustls has records to send.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// True until the TLS handshake has completed.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Queues `close_notify` (sent by the next [`Self::pending_raw`]).
    pub fn close(&mut self) {
        self.conn.send_close_notify();
    }

    /// CN, subject and SANs of the verified client certificate, if the client sent one.
    pub fn peer_identity(&self) -> Option<PeerIdentity> {
        let leaf = self.conn.peer_certificates()?.first()?;
        PeerIdentity::from_der(leaf).ok()
    }

    /// The rustls connection, for logging the negotiated version, cipher suite or SNI name.
    pub fn connection(&self) -> &ServerConnection {
        &self.conn
    }
}
