//! The client side of TLS, for connections the broker opens itself (bridges): settings loaded
//! from PEM files once, and a sans-I/O session like the server's [`crate::TlsTransport`].

use std::path::Path;
use std::sync::Arc;

use bytes::BytesMut;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use crate::error::{TlsConfigError, TransportError};
use crate::tls::{pending_records, queue_plaintext, read_records};
use crate::tls_settings::read_certs;

/// Verification and identity of outgoing TLS connections: the CA certificates that sign the
/// server's certificate, and optionally a client certificate and key.
#[derive(Clone)]
pub struct TlsClientSettings {
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for TlsClientSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClientSettings").finish_non_exhaustive()
    }
}

impl TlsClientSettings {
    /// Loads the CA file and the optional certificate/key pair (errors name the file).
    pub fn load(ca_file: &Path, identity: Option<(&Path, &Path)>) -> Result<Self, TlsConfigError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for cert in read_certs(ca_file)? {
            roots.add(cert).map_err(|e| TlsConfigError::Pem {
                path: ca_file.to_owned(),
                reason: format!("not a usable CA certificate: {e}"),
            })?;
        }
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert_file, key_file)) => {
                let key =
                    PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsConfigError::Pem {
                        path: key_file.to_owned(),
                        reason: e.to_string(),
                    })?;
                builder.with_client_auth_cert(read_certs(cert_file)?, key)?
            }
        };
        Ok(TlsClientSettings {
            config: Arc::new(config),
        })
    }

    /// Starts a session with a server whose certificate must name `server_name` (a DNS
    /// name or an IP address).
    pub fn connect(&self, server_name: &str) -> Result<TlsClient, TransportError> {
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| TransportError::TlsIo(std::io::Error::other(e)))?;
        let mut conn = ClientConnection::new(self.config.clone(), name)?;
        // The caller drains every write at once and bounds its own queue.
        conn.set_buffer_limit(None);
        Ok(TlsClient { conn })
    }
}

/// The client side of one TLS connection.
pub struct TlsClient {
    conn: ClientConnection,
}

impl TlsClient {
    /// Feeds records from the socket; decrypted bytes are appended to `plain_out`. Returns
    /// true once the server sent `close_notify`.
    pub fn read_raw(
        &mut self,
        raw: &[u8],
        plain_out: &mut BytesMut,
    ) -> Result<bool, TransportError> {
        read_records(&mut self.conn, raw, plain_out)
    }

    /// Encrypts `plain` and appends every pending record to `raw_out`.
    pub fn write_plain(&mut self, plain: &[u8], raw_out: &mut BytesMut) {
        queue_plaintext(&mut self.conn, plain);
        self.pending_raw(raw_out);
    }

    /// Appends every record rustls wants to send to `raw_out`.
    pub fn pending_raw(&mut self, raw_out: &mut BytesMut) {
        pending_records(&mut self.conn, raw_out);
    }

    /// True while rustls has records to send.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// True until the handshake has completed.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }
}
