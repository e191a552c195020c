//! What one configured listener is at run time: its name, its wire protocol (TCP, TLS, WebSocket,
//! WebSocket over TLS) with the TLS certificates and WebSocket settings every core shares, and
//! its own connection limit.
//!
//! Built once at start from `[[listener]]` tables (and the top-level `bind`/`port`, which is the
//! plain-TCP listener named `default`); every core serves every endpoint on its own
//! `SO_REUSEPORT` socket.

use crate::config::{listener_name, Config, ListenerConfig, Transport as Wire};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use uringmq_transport::{TlsConfigError, TlsSettings, Transport, TransportError, WsConfig};

/// The per-connection adapter a listener needs.
pub(crate) enum Kind {
    /// Plain MQTT over TCP: no adapter at all.
    Tcp,
    /// MQTT over TLS.
    Tls(TlsSettings),
    /// MQTT over WebSocket.
    Ws(Arc<WsConfig>),
    /// MQTT over WebSocket over TLS.
    Wss(TlsSettings, Arc<WsConfig>),
}

/// One listener, shared by all cores.
pub(crate) struct Endpoint {
    /// Used in logs and given to auth hooks as `ClientInfo::listener`.
    pub(crate) name: Arc<str>,
    pub(crate) kind: Kind,
    /// This listener's own connection limit (0 = only the global one).
    max_connections: usize,
    /// Open connections on this listener, all cores.
    open: AtomicUsize,
    /// Each client's publish limits: messages and bytes a second (0 = unlimited).
    publish_rates: (u64, u64),
    /// New connections a second over all cores (0 = unlimited).
    pub(crate) connection_rate: u64,
    /// New connections a second from one source address over all cores (0 = unlimited).
    pub(crate) connection_rate_per_source: u64,
}

/// Why an endpoint could not be built from its table.
#[derive(Debug, thiserror::Error)]
#[error("listener {name}: {source}")]
pub(crate) struct EndpointError {
    name: String,
    source: TlsConfigError,
}

/// Holds one slot of a listener's connection limit; frees it when dropped.
pub(crate) struct Slot(Arc<Endpoint>);

impl Slot {
    /// The listener's name (a compact parked connection keeps no name of its own).
    pub(crate) fn listener(&self) -> &Arc<str> {
        &self.0.name
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Endpoint {
    /// The plain-TCP listener of the top-level `bind`/`port` keys.
    pub(crate) fn default_tcp() -> Self {
        Endpoint {
            name: "default".into(),
            kind: Kind::Tcp,
            max_connections: 0,
            open: AtomicUsize::new(0),
            publish_rates: (0, 0),
            connection_rate: 0,
            connection_rate_per_source: 0,
        }
    }

    /// Builds a `[[listener]]` table, loading its certificates (a bad file is an error before
    /// any thread starts).
    pub(crate) fn from_config(l: &ListenerConfig) -> Result<Self, EndpointError> {
        let name = listener_name(l);
        let tls = || {
            let error = |source| EndpointError {
                name: name.clone(),
                source,
            };
            // Config::validate already refuses tls/wss without both files.
            let (Some(cert), Some(key)) = (&l.cert_file, &l.key_file) else {
                return Err(error(TlsConfigError::Pem {
                    path: Default::default(),
                    reason: "tls and wss listeners need cert_file and key_file".into(),
                }));
            };
            TlsSettings::load(cert, key, l.ca_file.as_deref(), l.require_certificate).map_err(error)
        };
        let ws = || {
            Arc::new(WsConfig {
                path: Some(l.ws_path.clone()),
                ..WsConfig::default()
            })
        };
        let kind = match l.transport {
            Wire::Tcp => Kind::Tcp,
            Wire::Tls => Kind::Tls(tls()?),
            Wire::Ws => Kind::Ws(ws()),
            Wire::Wss => Kind::Wss(tls()?, ws()),
        };
        Ok(Endpoint {
            name: name.into(),
            kind,
            max_connections: l.max_connections,
            open: AtomicUsize::new(0),
            publish_rates: (0, 0),
            connection_rate: 0,
            connection_rate_per_source: 0,
        })
    }

    /// Sets the rate limits in force on this listener: its own keys, else the global ones.
    fn with_rates(mut self, config: &Config, l: Option<&ListenerConfig>) -> Self {
        self.publish_rates = config.publish_rates(l);
        self.connection_rate = config.connection_rate(l);
        self.connection_rate_per_source = config.connection_rate_per_source(l);
        self
    }

    /// A new client's publish limits (`None`: unlimited, the default).
    pub(crate) fn publish_limiter(&self) -> Option<Box<uringmq_session::PublishLimiter>> {
        let (messages, bytes) = self.publish_rates;
        if messages == 0 && bytes == 0 {
            return None;
        }
        let now = crate::net::millis(std::time::Instant::now());
        uringmq_session::PublishLimiter::new(messages, bytes, now).map(Box::new)
    }

    /// Open connections on this listener, all cores (for `/metrics`).
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Takes one connection slot, or `None` when this listener is full.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<Slot> {
        let n = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        let slot = Slot(self.clone());
        (self.max_connections == 0 || n <= self.max_connections).then_some(slot)
    }

    /// A fresh adapter for one accepted socket, with the certificates current now.
    pub(crate) fn transport(&self) -> Result<Transport, TransportError> {
        match &self.kind {
            Kind::Tcp => Ok(Transport::Tcp),
            Kind::Tls(tls) => Transport::tls(tls),
            Kind::Ws(ws) => Ok(Transport::ws(ws.clone())),
            Kind::Wss(tls, ws) => Transport::wss(tls, ws.clone()),
        }
    }

    /// Re-reads the certificate files (SIGHUP). Connections already open keep theirs; on error
    /// the previous certificates stay in force. `None` for listeners without TLS.
    pub(crate) fn reload_tls(&self) -> Option<Result<(), TlsConfigError>> {
        match &self.kind {
            Kind::Tls(tls) | Kind::Wss(tls, _) => Some(tls.reload()),
            Kind::Tcp | Kind::Ws(_) => None,
        }
    }
}

/// Every endpoint of a config, the default TCP listener first.
pub(crate) fn endpoints(config: &Config) -> Result<Vec<Arc<Endpoint>>, EndpointError> {
    let mut all = vec![Arc::new(Endpoint::default_tcp().with_rates(config, None))];
    for l in &config.listeners {
        all.push(Arc::new(
            Endpoint::from_config(l)?.with_rates(config, Some(l)),
        ));
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(transport: Wire, port: u16) -> ListenerConfig {
        ListenerConfig {
            max_connections: 2,
            ..ListenerConfig::new(transport, port)
        }
    }

    #[test]
    fn names_default_to_transport_and_port() {
        assert_eq!(listener_name(&table(Wire::Ws, 9001)), "ws:9001");
        let mut l = table(Wire::Tcp, 1884);
        l.name = Some("lan".into());
        assert_eq!(listener_name(&l), "lan");
    }

    #[test]
    fn per_listener_limit_frees_slots_on_drop() {
        let e = Arc::new(Endpoint::from_config(&table(Wire::Tcp, 1)).unwrap());
        let a = e.admit().unwrap();
        let _b = e.admit().unwrap();
        assert!(e.admit().is_none(), "third connection over a limit of 2");
        drop(a);
        assert!(e.admit().is_some());
    }

    #[test]
    fn ws_endpoint_uses_the_configured_path() {
        let mut l = table(Wire::Ws, 9001);
        l.ws_path = "/ws".into();
        let e = Endpoint::from_config(&l).unwrap();
        match &e.kind {
            Kind::Ws(ws) => assert_eq!(ws.path.as_deref(), Some("/ws")),
            _ => panic!("expected a ws endpoint"),
        }
        assert_eq!(e.transport().unwrap().name(), "ws");
        assert!(e.reload_tls().is_none());
    }

    #[test]
    fn missing_certificate_names_the_listener() {
        let mut l = table(Wire::Tls, 8883);
        l.cert_file = Some("/nonexistent/server.pem".into());
        l.key_file = Some("/nonexistent/server.key".into());
        let err = Endpoint::from_config(&l).err().unwrap().to_string();
        assert!(
            err.contains("tls:8883") && err.contains("server.pem"),
            "{err}"
        );
    }
}
