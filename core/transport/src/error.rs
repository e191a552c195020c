//! Errors of the transport adapters: one enum for a live connection, one for loading settings.
//!
//! Both say *why* in their `Display` text, because that text is the broker's log line for a
//! failed handshake or a rejected configuration.

use std::path::PathBuf;

/// Why a connection's transport failed. After any error the broker should call
/// `pending_raw` once, send what it yields (a TLS alert, an HTTP error response or a
/// WebSocket close frame) and then close the socket.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The TLS layer rejected the peer (handshake failure, bad certificate, bad record...).
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// rustls refused bytes at the record level (only on internal buffer overflow).
    #[error("TLS: {0}")]
    TlsIo(std::io::Error),
    /// The HTTP upgrade request was refused; `status` is the HTTP status sent back.
    #[error("WebSocket handshake refused with HTTP {status}: {reason}")]
    WsHandshake {
        /// HTTP status code written to the peer (400, 404, 426, 431).
        status: u16,
        /// What was wrong with the request.
        reason: &'static str,
    },
    /// The peer broke the WebSocket framing rules; `code` is the close code sent back.
    #[error("WebSocket protocol error (close code {code}): {reason}")]
    WsProtocol {
        /// RFC 6455 close status code written to the peer.
        code: u16,
        /// Which rule was broken.
        reason: &'static str,
    },
}

/// Why TLS settings could not be built from their files.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// A PEM file could not be read or holds no usable item.
    #[error("{path}: {reason}")]
    Pem {
        /// The file that failed.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// `require_client_cert` needs a CA bundle to verify client certificates against.
    #[error("require_client_cert needs a CA file to verify client certificates against")]
    RequireCertWithoutCa,
    /// The client-certificate verifier could not be built (e.g. the CA bundle holds no usable CA).
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// rustls rejected the certificate/key pair (e.g. the key does not match the certificate).
    #[error("certificate/key: {0}")]
    Rustls(#[from] rustls::Error),
}
