//! Shared test helpers: temp dirs, a test PKI on disk, and a rustls client wired to a server
//! [`Transport`] in memory.

use std::io::{Read, Write};
use std::sync::Arc;

use bytes::BytesMut;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use crate::cert_gen::{CertPaths, TestPki};
use crate::transport::{ReadOutcome, Transport};
use crate::{ClientAuth, TlsSettings, TransportError};

pub(crate) fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("uringmq-transport-{name}-"))
        .tempdir()
        .unwrap()
}

/// A generated PKI written into its own temp dir (removed on drop).
pub(crate) struct PkiFiles {
    pub(crate) pki: TestPki,
    pub(crate) paths: CertPaths,
    pub(crate) _dir: tempfile::TempDir,
}

pub(crate) fn pki_files(client_cn: &str) -> PkiFiles {
    let dir = temp_dir("pki");
    let pki = TestPki::generate(client_cn).unwrap();
    let paths = pki.write_to(dir.path()).unwrap();
    PkiFiles {
        pki,
        paths,
        _dir: dir,
    }
}

/// A client config trusting `ca_pem`, optionally presenting a certificate, limited to
/// `versions`.
pub(crate) fn client_config(
    ca_pem: &str,
    client_cert: Option<(&str, &str)>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
    let config = match client_cert {
        None => builder.with_no_client_auth(),
        Some((cert_pem, key_pem)) => {
            let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    Arc::new(config)
}

/// Which side gave up during [`Pair::pump`].
#[derive(Debug)]
pub(crate) enum PumpError {
    Server(TransportError),
    Client(rustls::Error),
}

/// A rustls client and a server-side [`Transport`] joined by in-memory byte moves.
pub(crate) struct Pair {
    pub(crate) client: ClientConnection,
    pub(crate) server: Transport,
    /// What the server adapter produced for the MQTT codec.
    pub(crate) server_mqtt: BytesMut,
    /// Plaintext the client received.
    pub(crate) client_plain: Vec<u8>,
    /// Last outcome of the server's `read_raw`.
    pub(crate) server_outcome: ReadOutcome,
}

impl Pair {
    pub(crate) fn new(config: Arc<ClientConfig>, server: Transport) -> Self {
        let name = ServerName::try_from("localhost").unwrap();
        Pair {
            client: ClientConnection::new(config, name).unwrap(),
            server,
            server_mqtt: BytesMut::new(),
            client_plain: Vec::new(),
            server_outcome: ReadOutcome::Open,
        }
    }

    /// Moves bytes both ways until neither side has anything to send.
    pub(crate) fn pump(&mut self) -> Result<(), PumpError> {
        loop {
            let mut to_server = Vec::new();
            while self.client.wants_write() {
                self.client.write_tls(&mut to_server).unwrap();
            }
            let mut server_result = Ok(());
            if !to_server.is_empty() {
                match self.server.read_raw(&to_server, &mut self.server_mqtt) {
                    Ok(outcome) => self.server_outcome = outcome,
                    Err(e) => server_result = Err(PumpError::Server(e)),
                }
            }
            let mut to_client = BytesMut::new();
            self.server.pending_raw(&mut to_client);
            let client_result = self.deliver_to_client(&to_client);
            // The server's own failure is the news; the client then only reports its alert.
            server_result?;
            client_result?;
            if to_server.is_empty() && to_client.is_empty() {
                return Ok(());
            }
        }
    }

    /// Feeds server bytes (e.g. from `write_mqtt`) to the client and reads its plaintext.
    pub(crate) fn deliver_to_client(&mut self, mut bytes: &[u8]) -> Result<(), PumpError> {
        while !bytes.is_empty() {
            if self.client.read_tls(&mut bytes).unwrap() == 0 {
                break;
            }
            self.client
                .process_new_packets()
                .map_err(PumpError::Client)?;
            let mut buf = [0u8; 4096];
            loop {
                match self.client.reader().read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => self.client_plain.extend_from_slice(&buf[..n]),
                    Err(_) => break,
                }
            }
        }
        Ok(())
    }

    /// Client sends `plain`; pumps it through.
    pub(crate) fn client_send(&mut self, plain: &[u8]) -> Result<(), PumpError> {
        self.client.writer().write_all(plain).unwrap();
        self.pump()
    }

    /// Server sends `mqtt` via `write_mqtt`; the client receives it.
    pub(crate) fn server_send(&mut self, mqtt: &[u8]) -> Result<(), PumpError> {
        let mut raw = BytesMut::new();
        self.server.write_mqtt(mqtt, &mut raw);
        self.deliver_to_client(&raw)
    }
}

/// Server settings from a test PKI; `ClientAuth::None` loads no CA.
pub(crate) fn server_settings(files: &PkiFiles, client_auth: ClientAuth) -> TlsSettings {
    let ca = (client_auth != ClientAuth::None).then_some(files.paths.ca_cert.as_path());
    let require = client_auth == ClientAuth::Required;
    TlsSettings::load(
        &files.paths.server_cert,
        &files.paths.server_key,
        ca,
        require,
    )
    .unwrap()
}

/// A TLS 1.3 client without a certificate, trusting `ca_pem`, facing a new TLS connection.
pub(crate) fn anonymous_pair(ca_pem: &str, settings: &TlsSettings) -> Pair {
    Pair::new(
        client_config(ca_pem, None, &[&rustls::version::TLS13]),
        Transport::tls(settings).unwrap(),
    )
}
