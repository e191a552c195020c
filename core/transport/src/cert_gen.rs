//! Test certificates made on the fly (rcgen): a CA, a server certificate for the loopback
//! names and a client certificate with a chosen CN. Nothing is checked in, so nothing expires.
//!
//! Available to this crate's tests and, with the `cert-gen` feature, to the end-to-end tests
//! that point paho-mqtt, mosquitto_pub or MQTT.js at a TLS listener.

use std::io;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// Why test certificates could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CertGenError {
    /// rcgen refused a parameter or failed to sign.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A file could not be written.
    #[error("writing certificates: {0}")]
    Io(#[from] io::Error),
}

/// A freshly generated CA with one server and one client certificate, all PEM encoded.
///
/// The server certificate is valid for `localhost`, `127.0.0.1` and `::1`. The client
/// certificate has the requested CN and one SAN of each kind: DNS `<cn>.clients.test`,
/// e-mail `<cn>@clients.test`, URI `spiffe://uringmq.test/<cn>` and IP `10.0.0.42`.
pub struct TestPki {
    /// The CA certificate (trust anchor for both sides).
    pub ca_cert_pem: String,
    /// The server certificate, signed by the CA.
    pub server_cert_pem: String,
    /// The server's PKCS#8 private key.
    pub server_key_pem: String,
    /// The client certificate, signed by the CA.
    pub client_cert_pem: String,
    /// The client's PKCS#8 private key.
    pub client_key_pem: String,
    ca_der: Vec<u8>,
    server_der: Vec<u8>,
    client_der: Vec<u8>,
}

/// Where [`TestPki::write_to`] put each file.
#[derive(Debug, Clone)]
pub struct CertPaths {
    /// `ca.pem`
    pub ca_cert: PathBuf,
    /// `server.pem`
    pub server_cert: PathBuf,
    /// `server.key`
    pub server_key: PathBuf,
    /// `client.pem`
    pub client_cert: PathBuf,
    /// `client.key`
    pub client_key: PathBuf,
}

impl TestPki {
    /// Generates a CA, a server certificate and a client certificate whose CN is `client_cn`.
    pub fn generate(client_cn: &str) -> Result<Self, CertGenError> {
        let mut ca_params = CertificateParams::default();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "uringmq test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

        let mut server_params = CertificateParams::new(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ])?;
        server_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate()?;
        let server = server_params.signed_by(&server_key, &ca)?;

        let mut client_params = CertificateParams::default();
        client_params
            .distinguished_name
            .push(DnType::CommonName, client_cn);
        client_params
            .distinguished_name
            .push(DnType::OrganizationName, "uringmq tests");
        client_params.subject_alt_names = vec![
            SanType::DnsName(format!("{client_cn}.clients.test").try_into()?),
            SanType::Rfc822Name(format!("{client_cn}@clients.test").try_into()?),
            SanType::URI(format!("spiffe://uringmq.test/{client_cn}").try_into()?),
            SanType::IpAddress([10, 0, 0, 42].into()),
        ];
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate()?;
        let client = client_params.signed_by(&client_key, &ca)?;

        Ok(TestPki {
            ca_cert_pem: ca.pem(),
            server_cert_pem: server.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_cert_pem: client.pem(),
            client_key_pem: client_key.serialize_pem(),
            ca_der: ca.der().to_vec(),
            server_der: server.der().to_vec(),
            client_der: client.der().to_vec(),
        })
    }

    /// The CA certificate, DER encoded.
    pub fn ca_cert_der(&self) -> &[u8] {
        &self.ca_der
    }

    /// The server certificate, DER encoded.
    pub fn server_cert_der(&self) -> &[u8] {
        &self.server_der
    }

    /// The client certificate, DER encoded.
    pub fn client_cert_der(&self) -> &[u8] {
        &self.client_der
    }

    /// Writes `ca.pem`, `server.pem`, `server.key`, `client.pem` and `client.key` into `dir`
    /// (which must exist), overwriting files of those names.
    pub fn write_to(&self, dir: &Path) -> Result<CertPaths, CertGenError> {
        let paths = CertPaths {
            ca_cert: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        };
        std::fs::write(&paths.ca_cert, &self.ca_cert_pem)?;
        std::fs::write(&paths.server_cert, &self.server_cert_pem)?;
        std::fs::write(&paths.server_key, &self.server_key_pem)?;
        std::fs::write(&paths.client_cert, &self.client_cert_pem)?;
        std::fs::write(&paths.client_key, &self.client_key_pem)?;
        Ok(paths)
    }
}

/// Generates a fresh PKI and writes it into `dir`: the one call an end-to-end test needs.
pub fn write_test_certs(dir: &Path, client_cn: &str) -> Result<CertPaths, CertGenError> {
    TestPki::generate(client_cn)?.write_to(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_five_pem_files() {
        let dir = crate::test_support::temp_dir("cert-gen");
        let paths = write_test_certs(dir.path(), "alice").unwrap();
        for (path, marker) in [
            (&paths.ca_cert, "BEGIN CERTIFICATE"),
            (&paths.server_cert, "BEGIN CERTIFICATE"),
            (&paths.client_cert, "BEGIN CERTIFICATE"),
            (&paths.server_key, "BEGIN PRIVATE KEY"),
            (&paths.client_key, "BEGIN PRIVATE KEY"),
        ] {
            let text = std::fs::read_to_string(path).unwrap();
            assert!(text.contains(marker), "{}: {text}", path.display());
        }
    }
}
