//! A listener's table (`[[listener]]`) and its name.

use super::{default_bind, default_ws_path};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

/// Transport of a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Plain MQTT over TCP.
    #[default]
    Tcp,
    /// MQTT over TLS (rustls).
    Tls,
    /// MQTT over WebSocket.
    Ws,
    /// MQTT over WebSocket over TLS.
    Wss,
}

/// An extra listener (`[[listener]]` tables). The top-level `bind`/`port` is the default listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Name used in logs and by auth rules; defaults to `transport:port`.
    #[serde(default)]
    pub name: Option<String>,
    /// Address to bind (`localhost` is 127.0.0.1).
    #[serde(default = "default_bind", deserialize_with = "de_bind")]
    pub bind: IpAddr,
    /// Port (0 picks a free one).
    pub port: u16,
    /// Transport.
    #[serde(default)]
    pub transport: Transport,
    /// Connection limit of this listener (0 = only the global limit).
    #[serde(default)]
    pub max_connections: usize,
    /// WebSocket path (ws/wss only).
    #[serde(default = "default_ws_path")]
    pub ws_path: String,
    /// PEM certificate chain (tls/wss).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key (tls/wss).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// PEM CA bundle for client certificates (tls/wss).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Require a client certificate signed by `ca_file`.
    #[serde(default)]
    pub require_certificate: bool,
    /// Take the username from the client certificate's CN.
    #[serde(default)]
    pub use_identity_as_username: bool,
    /// Overrides the global `allow_anonymous` for this listener.
    #[serde(default)]
    pub allow_anonymous: Option<bool>,
    /// This listener's own password file, instead of the global `password_file`. Like
    /// Mosquitto's `per_listener_settings true`, a listener that sets it checks its clients
    /// against this file only; unlike Mosquitto the switch is per key and per listener, so a
    /// listener that leaves it unset keeps the global file.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// This listener's own ACL file, instead of the global `acl_file` (per key, as
    /// `password_file`).
    #[serde(default)]
    pub acl_file: Option<PathBuf>,
    /// Overrides the global `scram_sha256` for this listener.
    #[serde(default)]
    pub scram_sha256: Option<bool>,
    /// Overrides the global `max_publish_rate` for this listener's clients.
    #[serde(default)]
    pub max_publish_rate: Option<u64>,
    /// Overrides the global `max_publish_bytes_rate` for this listener's clients.
    #[serde(default)]
    pub max_publish_bytes_rate: Option<u64>,
    /// Overrides the global `max_connection_rate` for this listener.
    #[serde(default)]
    pub max_connection_rate: Option<u64>,
    /// Overrides the global `max_connection_rate_per_source` for this listener.
    #[serde(default)]
    pub max_connection_rate_per_source: Option<u64>,
    /// This listener's own JWT secret (HS256/384/512); a listener that sets any `jwt_*_file`
    /// key verifies tokens with its own keys only (per listener, as `password_file`).
    #[serde(default)]
    pub jwt_secret_file: Option<PathBuf>,
    /// This listener's own PEM public key for JWTs (RS*/PS*/ES*).
    #[serde(default)]
    pub jwt_public_key_file: Option<PathBuf>,
    /// This listener's own JWKS file.
    #[serde(default)]
    pub jwt_jwks_file: Option<PathBuf>,
    /// Overrides the global `jwt_username_claim` for this listener.
    #[serde(default)]
    pub jwt_username_claim: Option<String>,
    /// Overrides the global `jwt_acl_claim` for this listener.
    #[serde(default)]
    pub jwt_acl_claim: Option<String>,
}

impl ListenerConfig {
    /// A loopback listener with every optional key at its default (path `/mqtt`, no TLS files,
    /// no limit of its own, the global anonymous policy).
    pub fn new(transport: Transport, port: u16) -> Self {
        ListenerConfig {
            name: None,
            bind: default_bind(),
            port,
            transport,
            max_connections: 0,
            ws_path: default_ws_path(),
            cert_file: None,
            key_file: None,
            ca_file: None,
            require_certificate: false,
            use_identity_as_username: false,
            allow_anonymous: None,
            password_file: None,
            acl_file: None,
            scram_sha256: None,
            max_publish_rate: None,
            max_publish_bytes_rate: None,
            max_connection_rate: None,
            max_connection_rate_per_source: None,
            jwt_secret_file: None,
            jwt_public_key_file: None,
            jwt_jwks_file: None,
            jwt_username_claim: None,
            jwt_acl_claim: None,
        }
    }

    /// Whether this listener has JWT keys of its own.
    pub fn has_own_jwt_keys(&self) -> bool {
        self.jwt_secret_file.is_some()
            || self.jwt_public_key_file.is_some()
            || self.jwt_jwks_file.is_some()
    }
}

/// An IP address, or `localhost` for 127.0.0.1: users write it as they would for Mosquitto's
/// `listener 1883 localhost`, and a name lookup for other host names would make the bound
/// address depend on the resolver at start (Mosquitto resolves them; we refuse them by name).
/// The `bind` keys and the binary's `--bind` flag.
pub fn parse_bind(s: &str) -> Result<IpAddr, String> {
    if s.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    s.parse().map_err(|_| {
        format!(
            "{s:?} is not an IP address (write an address such as 0.0.0.0 or ::1, or localhost)"
        )
    })
}

pub(super) fn de_bind<'de, D: serde::Deserializer<'de>>(d: D) -> Result<IpAddr, D::Error> {
    parse_bind(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

/// `name`, or `transport:port` (e.g. `tls:8883`).
pub(crate) fn listener_name(l: &ListenerConfig) -> String {
    l.name.clone().unwrap_or_else(|| {
        let t = match l.transport {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        };
        format!("{t}:{}", l.port)
    })
}
