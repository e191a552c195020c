//! TLS listener settings: certificate, key and optional client-CA loaded from PEM files into
//! a rustls `ServerConfig` that can be swapped at run time (SIGHUP) without touching
//! connections that already exist.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::error::{TlsConfigError, TransportError};
use crate::tls::TlsTransport;

/// Whether and how clients authenticate with a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is requested.
    None,
    /// A certificate is requested and, if sent, must chain to the CA; clients may send none.
    Optional,
    /// A certificate chaining to the CA is required; the handshake fails without one.
    Required,
}

/// The files a TLS listener was configured with; kept so [`TlsSettings::reload`] can re-read them.
#[derive(Debug, Clone)]
struct TlsFiles {
    cert_file: PathBuf,
    key_file: PathBuf,
    ca_file: Option<PathBuf>,
    client_auth: ClientAuth,
}

/// A listener's TLS configuration, shared by all cores of that listener.
///
/// Each accepted connection takes the configuration current at accept time
/// ([`TlsSettings::accept`]); [`TlsSettings::reload`] swaps in a configuration built from the
/// files as they are now, so new connections get new certificates while existing ones keep the
/// one they started with. Reading the current configuration is a lock-free atomic load.
pub struct TlsSettings {
    files: TlsFiles,
    current: ArcSwap<ServerConfig>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl TlsSettings {
    /// Loads a certificate chain and private key (PEM; PKCS#8, PKCS#1 or SEC1 keys) and,
    /// when `ca_file` is given, a CA bundle to verify client certificates against.
    ///
    /// Client certificates: `ca_file` absent means none are requested; `ca_file` present
    /// with `require_client_cert = false` requests one and verifies it if sent (for
    /// certificate-or-password listeners); `require_client_cert = true` makes it mandatory
    /// and needs `ca_file`. TLS 1.2 and 1.3 are both offered.
    pub fn load(
        cert_file: impl AsRef<Path>,
        key_file: impl AsRef<Path>,
        ca_file: Option<&Path>,
        require_client_cert: bool,
    ) -> Result<Self, TlsConfigError> {
        let client_auth = match (ca_file, require_client_cert) {
            (None, true) => return Err(TlsConfigError::RequireCertWithoutCa),
            (None, false) => ClientAuth::None,
            (Some(_), false) => ClientAuth::Optional,
            (Some(_), true) => ClientAuth::Required,
        };
        let files = TlsFiles {
            cert_file: cert_file.as_ref().to_owned(),
            key_file: key_file.as_ref().to_owned(),
            ca_file: ca_file.map(Path::to_owned),
            client_auth,
        };
        let config = build_config(&files)?;
        Ok(TlsSettings {
            files,
            current: ArcSwap::from(config),
        })
    }

    /// Re-reads the files and, if they make a valid configuration, uses it for connections
    /// accepted from now on. On error the previous configuration stays in force.
    pub fn reload(&self) -> Result<(), TlsConfigError> {
        let config = build_config(&self.files)?;
        self.current.store(config);
        Ok(())
    }

    /// The configuration new connections get now.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// How clients authenticate on this listener.
    pub fn client_auth(&self) -> ClientAuth {
        self.files.client_auth
    }

    /// Starts the server side of TLS for one accepted connection, with the current certificates.
    pub fn accept(&self) -> Result<TlsTransport, TransportError> {
        TlsTransport::new(self.current())
    }
}

/// Builds a rustls server configuration from the files, with the `ring` provider.
fn build_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(&files.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|e| TlsConfigError::Pem {
        path: files.key_file.clone(),
        reason: e.to_string(),
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match (&files.ca_file, files.client_auth) {
        (Some(ca_file), ClientAuth::Optional | ClientAuth::Required) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca_file)? {
                roots.add(cert).map_err(|e| TlsConfigError::Pem {
                    path: ca_file.clone(),
                    reason: format!("not a usable CA certificate: {e}"),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if files.client_auth == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build()?)
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(builder.with_single_cert(certs, key)?))
}

/// Reads every certificate of a PEM file; an empty file is an error, not an empty chain.
pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let pem_error = |reason: String| TlsConfigError::Pem {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error("no certificate found".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert_gen::TestPki;
    use crate::test_support::{anonymous_pair, pki_files, server_settings, PumpError};

    #[test]
    fn require_client_cert_without_ca_is_a_config_error() {
        let files = pki_files("c");
        let err = TlsSettings::load(
            &files.paths.server_cert,
            &files.paths.server_key,
            None,
            true,
        )
        .unwrap_err();
        assert!(matches!(err, TlsConfigError::RequireCertWithoutCa));
    }

    #[test]
    fn missing_or_empty_files_name_the_file() {
        let files = pki_files("c");
        let missing = files.paths.server_cert.with_file_name("nope.pem");
        let err = TlsSettings::load(&missing, &files.paths.server_key, None, false).unwrap_err();
        assert!(err.to_string().contains("nope.pem"), "{err}");

        std::fs::write(&files.paths.client_cert, "").unwrap();
        let err = TlsSettings::load(
            &files.paths.client_cert,
            &files.paths.server_key,
            None,
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("no certificate"), "{err}");
    }

    #[test]
    fn key_that_does_not_match_the_certificate_is_refused() {
        let files = pki_files("c");
        let err = TlsSettings::load(
            &files.paths.server_cert,
            &files.paths.client_key,
            None,
            false,
        )
        .unwrap_err();
        assert!(matches!(err, TlsConfigError::Rustls(_)), "{err}");
    }

    #[test]
    fn client_auth_mode_follows_ca_and_require() {
        let files = pki_files("c");
        let (cert, key, ca) = (
            &files.paths.server_cert,
            &files.paths.server_key,
            Some(files.paths.ca_cert.as_path()),
        );
        let mode = |ca, require| {
            TlsSettings::load(cert, key, ca, require)
                .unwrap()
                .client_auth()
        };
        assert_eq!(mode(None, false), ClientAuth::None);
        assert_eq!(mode(ca, false), ClientAuth::Optional);
        assert_eq!(mode(ca, true), ClientAuth::Required);
    }

    #[test]
    fn reload_switches_certificates_for_new_connections_only() {
        let files = pki_files("c");
        let settings = server_settings(&files, ClientAuth::None);
        let old_ca = files.pki.ca_cert_pem.clone();
        let mut established = anonymous_pair(&old_ca, &settings);
        established.pump().unwrap();

        // Rotate: a new CA and server certificate replace the files, then SIGHUP.
        let rotated = TestPki::generate("c").unwrap();
        let dir = files.paths.ca_cert.parent().unwrap();
        rotated.write_to(dir).unwrap();
        settings.reload().unwrap();

        let mut fresh = anonymous_pair(&rotated.ca_cert_pem, &settings);
        fresh.pump().unwrap();
        let served = fresh.client.peer_certificates().unwrap();
        assert_eq!(served[0].as_ref(), rotated.server_cert_der());

        // A client that only knows the old CA now rejects the server...
        let mut stale = anonymous_pair(&old_ca, &settings);
        assert!(matches!(stale.pump(), Err(PumpError::Client(_))));

        // ...while the connection made before the reload carries on.
        established.client_send(b"\xc0\x00").unwrap();
        assert_eq!(&established.server_mqtt[..], b"\xc0\x00");
    }

    #[test]
    fn failed_reload_keeps_the_previous_certificates() {
        let files = pki_files("c");
        let settings = server_settings(&files, ClientAuth::None);
        let before = settings.current();
        std::fs::write(&files.paths.server_cert, "garbage").unwrap();
        assert!(settings.reload().is_err());
        assert!(Arc::ptr_eq(&before, &settings.current()));
        let mut pair = anonymous_pair(&files.pki.ca_cert_pem, &settings);
        pair.pump().unwrap();
    }
}
