//! Sans-I/O transports: TLS and WebSocket framing between the socket and the MQTT codec.
//!
//! The broker moves raw socket bytes; these adapters turn them into MQTT bytes and back
//! without doing any I/O themselves, so they are unit-tested in memory and behave the same
//! under io_uring and epoll. [`Transport`] is the per-connection enum the broker holds.
//!
//! - TLS: rustls (ring provider), TLS 1.2 and 1.3, optional or required client certificates,
//!   certificates reloadable for new connections ([`TlsSettings`]).
//! - WebSocket: MQTT over WebSocket per MQTT 5.0 / 3.1.1 section 6 ([`WsConfig`]).
//! - WSS: the two stacked.
#![warn(missing_docs)]

#[cfg(any(test, feature = "cert-gen"))]
pub mod cert_gen;
mod error;
mod identity;
mod tls;
mod tls_client;
mod tls_settings;
mod transport;
mod ws;
mod ws_handshake;
mod wss;

#[cfg(test)]
mod test_support;

pub use error::{TlsConfigError, TransportError};
pub use identity::{IdentityError, PeerIdentity, SubjectAltName};
pub use tls::TlsTransport;
pub use tls_client::{TlsClient, TlsClientSettings};
pub use tls_settings::{ClientAuth, TlsSettings};
pub use transport::{ReadOutcome, Transport};
pub use ws::{WsConfig, WsTransport};
pub use wss::WssTransport;

/// The rustls server configuration type, re-exported for callers that log or inspect it.
pub use rustls::ServerConfig;
