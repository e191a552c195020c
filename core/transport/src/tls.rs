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
        Ok(if read_records(&mut self.conn, raw, plain_out)? {
            ReadOutcome::Closed
        } else {
            ReadOutcome::Open
        })
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
        queue_plaintext(&mut self.conn, plain);
    }

    /// Appends every TLS record rustls wants to send (handshake messages, alerts, tickets,
    /// application data) to `raw_out`.
    pub fn pending_raw(&mut self, raw_out: &mut BytesMut) {
        pending_records(&mut self.conn, raw_out);
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

/// Feeds TLS records from the socket to rustls and appends the decrypted bytes to
/// `plain_out` (server and client sides). True once the peer sent `close_notify`: bytes after
/// it are ignored.
pub(crate) fn read_records<D>(
    conn: &mut rustls::ConnectionCommon<D>,
    raw: &[u8],
    plain_out: &mut BytesMut,
) -> Result<bool, TransportError> {
    let mut input = raw;
    while !input.is_empty() {
        match conn.read_tls(&mut input) {
            // rustls reads nothing more once close_notify arrived.
            Ok(0) => return Ok(true),
            Ok(_) => {}
            Err(e) => return Err(TransportError::TlsIo(e)),
        }
        let state = conn.process_new_packets()?;
        // Drain after every record batch so rustls' plaintext buffer never fills up.
        drain_plaintext(conn, plain_out)?;
        if state.peer_has_closed() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Hands `plain` to rustls to encrypt (server and client sides). Both sides run with no
/// buffer limit, so rustls takes every byte; an error would only mean the connection is
/// already closed for writing, when the bytes are moot.
pub(crate) fn queue_plaintext<D>(conn: &mut rustls::ConnectionCommon<D>, plain: &[u8]) {
    if !plain.is_empty() {
        let _ = std::io::Write::write_all(&mut conn.writer(), plain);
    }
}

/// Copies decrypted bytes out of rustls without zero-filling a buffer first (server and
/// client sides).
fn drain_plaintext<D>(
    conn: &mut rustls::ConnectionCommon<D>,
    plain_out: &mut BytesMut,
) -> Result<(), TransportError> {
    let mut reader = conn.reader();
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

/// Appends every TLS record rustls wants to send to `raw_out` (server and client sides).
pub(crate) fn pending_records<D>(conn: &mut rustls::ConnectionCommon<D>, raw_out: &mut BytesMut) {
    let mut writer = raw_out.writer();
    while conn.wants_write() {
        match conn.write_tls(&mut writer) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use rustls::version::{TLS12, TLS13};

    use super::*;
    use crate::test_support::{
        anonymous_pair, client_config, pki_files, server_settings, Pair, PkiFiles, PumpError,
    };
    use crate::{ClientAuth, Transport};

    fn client_with_cert(files: &PkiFiles) -> Arc<rustls::ClientConfig> {
        let pki = &files.pki;
        client_config(
            &pki.ca_cert_pem,
            Some((&pki.client_cert_pem, &pki.client_key_pem)),
            &[&TLS13],
        )
    }

    fn server_error(result: Result<(), PumpError>) -> String {
        match result {
            Err(PumpError::Server(e)) => e.to_string(),
            other => panic!("expected a server-side error, got {other:?}"),
        }
    }

    #[test]
    fn tls13_and_tls12_carry_mqtt_bytes_both_ways() {
        let files = pki_files("device-42");
        let settings = server_settings(&files, ClientAuth::None);
        for version in [&TLS13, &TLS12] {
            let config = client_config(&files.pki.ca_cert_pem, None, &[version]);
            let mut pair = Pair::new(config, Transport::tls(&settings).unwrap());
            assert!(pair.server.is_handshaking());
            pair.pump().unwrap();
            assert!(!pair.server.is_handshaking());
            let Transport::Tls(tls) = &pair.server else {
                unreachable!()
            };
            assert_eq!(tls.connection().protocol_version(), Some(version.version));

            pair.client_send(b"\x10\x0c\x00\x04MQTT\x05\x02\x00\x3c\x00")
                .unwrap();
            assert_eq!(
                &pair.server_mqtt[..],
                b"\x10\x0c\x00\x04MQTT\x05\x02\x00\x3c\x00"
            );
            pair.server_send(b"\x20\x03\x00\x00\x00").unwrap();
            assert_eq!(pair.client_plain, b"\x20\x03\x00\x00\x00");
            assert_eq!(pair.server.peer_identity(), None);
        }
    }

    #[test]
    fn one_write_larger_than_rustls_default_buffer_arrives_whole() {
        let files = pki_files("c");
        let settings = server_settings(&files, ClientAuth::None);
        let mut pair = anonymous_pair(&files.pki.ca_cert_pem, &settings);
        pair.pump().unwrap();
        let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        pair.server_send(&big).unwrap();
        assert_eq!(pair.client_plain, big);
    }

    #[test]
    fn required_client_cert_gives_cn_and_sans() {
        let files = pki_files("device-42");
        let settings = server_settings(&files, ClientAuth::Required);
        let mut pair = Pair::new(client_with_cert(&files), Transport::tls(&settings).unwrap());
        pair.pump().unwrap();
        let id = pair.server.peer_identity().unwrap();
        assert_eq!(id.common_name.as_deref(), Some("device-42"));
        assert_eq!(id.sans.len(), 4);
    }

    #[test]
    fn required_client_cert_missing_fails_the_handshake_with_a_reason() {
        let files = pki_files("c");
        let settings = server_settings(&files, ClientAuth::Required);
        let mut pair = anonymous_pair(&files.pki.ca_cert_pem, &settings);
        let message = server_error(pair.pump());
        assert!(message.contains("no certificates"), "{message}");
        assert!(pair.server_mqtt.is_empty());
    }

    #[test]
    fn optional_client_cert_may_be_absent_or_present() {
        let files = pki_files("device-7");
        let settings = server_settings(&files, ClientAuth::Optional);
        let anonymous = client_config(&files.pki.ca_cert_pem, None, &[&TLS13]);
        let mut pair = Pair::new(anonymous, Transport::tls(&settings).unwrap());
        pair.pump().unwrap();
        assert_eq!(pair.server.peer_identity(), None);

        let mut pair = Pair::new(client_with_cert(&files), Transport::tls(&settings).unwrap());
        pair.pump().unwrap();
        let id = pair.server.peer_identity().unwrap();
        assert_eq!(id.common_name.as_deref(), Some("device-7"));
    }

    #[test]
    fn client_cert_from_another_ca_is_rejected() {
        let files = pki_files("c");
        let other = pki_files("intruder");
        let settings = server_settings(&files, ClientAuth::Optional);
        // Trusts the right server CA but presents a certificate the server's CA never signed.
        let config = client_config(
            &files.pki.ca_cert_pem,
            Some((&other.pki.client_cert_pem, &other.pki.client_key_pem)),
            &[&TLS13],
        );
        let mut pair = Pair::new(config, Transport::tls(&settings).unwrap());
        // Both test CAs share a name, so webpki finds the wrong "issuer" and the signature
        // check is what fails; either way it is an invalid-certificate error.
        let message = server_error(pair.pump());
        assert!(message.contains("invalid peer certificate"), "{message}");
    }

    #[test]
    fn client_trusting_another_ca_rejects_the_server() {
        let files = pki_files("c");
        let other = pki_files("c");
        let settings = server_settings(&files, ClientAuth::None);
        let config = client_config(&other.pki.ca_cert_pem, None, &[&TLS13]);
        let mut pair = Pair::new(config, Transport::tls(&settings).unwrap());
        match pair.pump() {
            Err(PumpError::Client(e)) => {
                assert!(matches!(e, rustls::Error::InvalidCertificate(_)), "{e}")
            }
            other => panic!("the client should refuse the server: {other:?}"),
        }
        // The client's alert reaches the server as an error, not as MQTT bytes.
        let mut alert = Vec::new();
        while pair.client.wants_write() {
            pair.client.write_tls(&mut alert).unwrap();
        }
        let result = pair.server.read_raw(&alert, &mut pair.server_mqtt);
        assert!(matches!(result, Err(TransportError::Tls(_))), "{result:?}");
    }

    #[test]
    fn close_notify_is_a_clean_close() {
        let files = pki_files("c");
        let settings = server_settings(&files, ClientAuth::None);
        let mut pair = anonymous_pair(&files.pki.ca_cert_pem, &settings);
        pair.pump().unwrap();
        assert_eq!(pair.server_outcome, ReadOutcome::Open);
        pair.client.writer().write_all(b"\xe0\x00").unwrap();
        pair.client.send_close_notify();
        pair.pump().unwrap();
        assert_eq!(pair.server_outcome, ReadOutcome::Closed);
        // Bytes sent before close_notify are still delivered.
        assert_eq!(&pair.server_mqtt[..], b"\xe0\x00");
    }

    #[test]
    fn server_close_sends_close_notify() {
        let files = pki_files("c");
        let settings = server_settings(&files, ClientAuth::None);
        let mut pair = anonymous_pair(&files.pki.ca_cert_pem, &settings);
        pair.pump().unwrap();
        pair.server.close();
        pair.pump().unwrap();
        let state = pair.client.process_new_packets().unwrap();
        assert!(state.peer_has_closed());
    }

    #[test]
    fn garbage_and_byte_at_a_time_input_never_panic() {
        let files = pki_files("c");
        let settings = server_settings(&files, ClientAuth::None);
        let mut server = Transport::tls(&settings).unwrap();
        let mut mqtt = BytesMut::new();
        let result = server.read_raw(b"GET / HTTP/1.1\r\n\r\n", &mut mqtt);
        assert!(result.is_err());
        let mut out = BytesMut::new();
        server.pending_raw(&mut out);
        assert!(!out.is_empty(), "an alert should be queued");

        // A real handshake fed one byte at a time still completes.
        let mut pair = anonymous_pair(&files.pki.ca_cert_pem, &settings);
        for _ in 0..10 {
            let mut to_server = Vec::new();
            while pair.client.wants_write() {
                pair.client.write_tls(&mut to_server).unwrap();
            }
            for byte in &to_server {
                pair.server
                    .read_raw(std::slice::from_ref(byte), &mut pair.server_mqtt)
                    .unwrap();
            }
            let mut to_client = BytesMut::new();
            pair.server.pending_raw(&mut to_client);
            pair.deliver_to_client(&to_client).unwrap();
        }
        assert!(!pair.server.is_handshaking());
        assert!(!pair.client.is_handshaking());
    }

    use std::io::Write;
}
