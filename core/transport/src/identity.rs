//! Who a TLS client is, read from its certificate, for "username from certificate"
//! (Mosquitto's `use_identity_as_username` takes the CN; `use_subject_as_username` the subject).

use std::net::IpAddr;

use x509_parser::extensions::GeneralName;

/// The identity a verified client certificate carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The first Common Name of the subject, if the subject has one.
    pub common_name: Option<String>,
    /// The whole subject distinguished name in RFC 4514 form (attributes in certificate
    /// order, as x509-parser prints them, e.g. `CN=device-1, O=Acme`).
    pub subject: String,
    /// The subject alternative names, in certificate order.
    pub sans: Vec<SubjectAltName>,
}

/// One subject alternative name of a certificate (only the kinds useful as an identity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectAltName {
    /// `dNSName`.
    Dns(String),
    /// `rfc822Name` (an e-mail address).
    Email(String),
    /// `uniformResourceIdentifier` (e.g. a SPIFFE id).
    Uri(String),
    /// `iPAddress`.
    Ip(IpAddr),
}

/// Why a certificate's identity could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the certificate's identity: {0}")]
pub struct IdentityError(String);

impl PeerIdentity {
    /// Reads CN, subject and SANs from a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| IdentityError(e.to_string()))?;
        let subject = cert.subject();
        let common_name = subject
            .iter_common_name()
            .next()
            .and_then(|attr| attr.as_str().ok())
            .map(str::to_owned);
        let mut sans = Vec::new();
        let san_ext = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError(e.to_string()))?;
        if let Some(ext) = san_ext {
            for name in &ext.value.general_names {
                match name {
                    GeneralName::DNSName(s) => sans.push(SubjectAltName::Dns((*s).to_owned())),
                    GeneralName::RFC822Name(s) => sans.push(SubjectAltName::Email((*s).to_owned())),
                    GeneralName::URI(s) => sans.push(SubjectAltName::Uri((*s).to_owned())),
                    GeneralName::IPAddress(bytes) => {
                        if let Some(ip) = ip_from_bytes(bytes) {
                            sans.push(SubjectAltName::Ip(ip));
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(PeerIdentity {
            common_name,
            subject: subject.to_string(),
            sans,
        })
    }
}

/// An `iPAddress` SAN is 4 or 16 raw bytes; anything else is ignored rather than guessed at.
fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert_gen::TestPki;

    #[test]
    fn reads_cn_subject_and_every_san_kind() {
        let pki = TestPki::generate("device-42").unwrap();
        let id = PeerIdentity::from_der(pki.client_cert_der()).unwrap();
        assert_eq!(id.common_name.as_deref(), Some("device-42"));
        assert!(id.subject.contains("CN=device-42"), "{}", id.subject);
        assert_eq!(
            id.sans,
            vec![
                SubjectAltName::Dns("device-42.clients.test".into()),
                SubjectAltName::Email("device-42@clients.test".into()),
                SubjectAltName::Uri("spiffe://uringmq.test/device-42".into()),
                SubjectAltName::Ip("10.0.0.42".parse().unwrap()),
            ]
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(PeerIdentity::from_der(b"not a certificate").is_err());
        assert!(PeerIdentity::from_der(&[]).is_err());
    }

    #[test]
    fn odd_ip_lengths_are_ignored() {
        assert_eq!(ip_from_bytes(&[1, 2, 3]), None);
        assert_eq!(
            ip_from_bytes(&[127, 0, 0, 1]),
            Some("127.0.0.1".parse().unwrap())
        );
    }
}
