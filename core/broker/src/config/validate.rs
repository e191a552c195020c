//! Checks across keys, and the effective values of keys a listener may override.

use super::listener::{ListenerConfig, Transport};
use super::load::ConfigError;
use super::Config;

impl Config {
    /// Checks ranges and consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_packet_size < 64 || self.max_packet_size > 268_435_460 {
            return bad("max_packet_size", "must be between 64 and 268435460 bytes");
        }
        if self.max_inflight == 0 {
            return bad("max_inflight", "must be at least 1");
        }
        if self.max_qos > 2 {
            return bad("max_qos", "must be 0, 1 or 2");
        }
        if self.max_topic_levels == 0 {
            return bad("max_topic_levels", "must be at least 1");
        }
        if self.max_topic_length == 0 || self.max_topic_length > 65_535 {
            return bad("max_topic_length", "must be between 1 and 65535 bytes");
        }
        if self.max_outbound_bytes < 1024 {
            return bad("max_outbound_bytes", "must be at least 1024");
        }
        if self.connect_timeout_secs == 0 {
            return bad("connect_timeout_secs", "must be at least 1");
        }
        let claims = std::iter::once(Some(&self.jwt_username_claim))
            .chain(self.listeners.iter().map(|l| l.jwt_username_claim.as_ref()));
        if claims.flatten().any(|c| c.is_empty()) {
            return bad("jwt_username_claim", "must not be empty");
        }
        if self.hook_timeout_ms == 0 {
            return bad("hook_timeout_ms", "must be at least 1");
        }
        if self.persistence_sync_interval_ms == 0 {
            return bad("persistence_sync_interval_ms", "must be at least 1");
        }
        if self.log_level.trim().is_empty() {
            return bad("log_level", "must not be empty");
        }
        if self.scram_sha256 && self.password_file.is_none() {
            return bad(
                "scram_sha256",
                "needs a password_file with SCRAM-SHA-256 entries (uringmq passwd -H scram-sha-256)",
            );
        }
        if let Some(c) = &self.cluster {
            c.validate()
                .map_err(|(key, reason)| ConfigError::Invalid { key, reason })?;
            if c.session_store.is_some() && self.persistence_dir.is_none() {
                return bad(
                    "cluster.session_store",
                    "needs persistence_dir: the shared store is fed from the node's own log's \
                     records (cluster/session_store.rs)",
                );
            }
        }
        for l in &self.listeners {
            self.validate_listener(l)?;
        }
        super::bridge::validate_all(&self.bridges)
    }

    /// Checks one `[[listener]]` table against itself and the rest of the config.
    fn validate_listener(&self, l: &ListenerConfig) -> Result<(), ConfigError> {
        if self.scram_enabled(Some(l)) && l.password_file.is_none() && self.password_file.is_none()
        {
            return bad(
                "listener.scram_sha256",
                format!(
                    "listener `{}` offers SCRAM-SHA-256 but has no password_file (its own or \
                     the global one) to hold the SCRAM-SHA-256 entries",
                    crate::config::listener_name(l)
                ),
            );
        }
        if matches!(l.transport, Transport::Tls | Transport::Wss)
            && (l.cert_file.is_none() || l.key_file.is_none())
        {
            return bad(
                "listener",
                "tls and wss listeners need cert_file and key_file",
            );
        }
        if l.require_certificate && l.ca_file.is_none() {
            return bad("listener", "require_certificate needs ca_file");
        }
        if matches!(l.transport, Transport::Ws | Transport::Wss) && !l.ws_path.starts_with('/') {
            return bad("listener", "ws_path must start with '/'");
        }
        // Auth settings are looked up by listener name: a listener with files of its own
        // must not share its name with another (two unnamed listeners on port 0 would).
        let name = crate::config::listener_name(l);
        let same_name = std::iter::once("default".to_owned())
            .chain(self.listeners.iter().map(crate::config::listener_name))
            .filter(|n| *n == name)
            .count();
        let own_files = l.password_file.is_some() || l.acl_file.is_some();
        if (own_files || l.has_own_jwt_keys()) && same_name > 1 {
            return bad(
                "listener.name",
                format!(
                    "listener `{name}` has its own password_file/acl_file/jwt keys, so its \
                     name must be unique: give each [[listener]] a distinct `name`"
                ),
            );
        }
        Ok(())
    }

    /// The number of cores to run: `cores`, or one per available CPU.
    pub fn effective_cores(&self) -> usize {
        if self.cores > 0 {
            self.cores
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }

    /// Whether SCRAM-SHA-256 enhanced authentication is offered on `listener` (`None`: the
    /// default listener): its own `scram_sha256`, else the global one.
    pub fn scram_enabled(&self, listener: Option<&ListenerConfig>) -> bool {
        listener
            .and_then(|l| l.scram_sha256)
            .unwrap_or(self.scram_sha256)
    }

    /// A listener's publish limits (messages, bytes a second; 0 = unlimited): its own keys,
    /// else the global ones (`None`: the default listener).
    pub fn publish_rates(&self, listener: Option<&ListenerConfig>) -> (u64, u64) {
        (
            listener
                .and_then(|l| l.max_publish_rate)
                .unwrap_or(self.max_publish_rate),
            listener
                .and_then(|l| l.max_publish_bytes_rate)
                .unwrap_or(self.max_publish_bytes_rate),
        )
    }

    /// A listener's connection rate (accepts a second; 0 = unlimited): its own, else the
    /// global one (`None`: the default listener).
    pub fn connection_rate(&self, listener: Option<&ListenerConfig>) -> u64 {
        listener
            .and_then(|l| l.max_connection_rate)
            .unwrap_or(self.max_connection_rate)
    }

    /// A listener's connection rate per source address (0 = unlimited): its own, else the
    /// global one (`None`: the default listener).
    pub fn connection_rate_per_source(&self, listener: Option<&ListenerConfig>) -> u64 {
        listener
            .and_then(|l| l.max_connection_rate_per_source)
            .unwrap_or(self.max_connection_rate_per_source)
    }

    /// The JWT settings in force on `listener` (`None`: the default listener): its own keys
    /// and claims if it sets keys, else the global ones (claims overridable per listener).
    pub fn jwt_settings(&self, listener: Option<&ListenerConfig>) -> uringmq_auth::JwtSettings {
        let own = listener.filter(|l| l.has_own_jwt_keys());
        let username_claim = listener.and_then(|l| l.jwt_username_claim.clone());
        let acl_claim = listener.and_then(|l| l.jwt_acl_claim.clone());
        uringmq_auth::JwtSettings {
            secret_file: own
                .map_or(&self.jwt_secret_file, |l| &l.jwt_secret_file)
                .clone(),
            public_key_file: own
                .map_or(&self.jwt_public_key_file, |l| &l.jwt_public_key_file)
                .clone(),
            jwks_file: own
                .map_or(&self.jwt_jwks_file, |l| &l.jwt_jwks_file)
                .clone(),
            username_claim: username_claim.unwrap_or_else(|| self.jwt_username_claim.clone()),
            acl_claim: acl_claim.or_else(|| self.jwt_acl_claim.clone()),
        }
    }

    /// Whether anonymous clients are allowed on a listener bound to `addr` (secure default:
    /// only while everything is on loopback).
    pub fn anonymous_allowed(&self, listener: Option<&ListenerConfig>) -> bool {
        if let Some(v) = listener.and_then(|l| l.allow_anonymous) {
            return v;
        }
        if let Some(v) = self.allow_anonymous {
            return v;
        }
        self.bind.is_loopback() && self.listeners.iter().all(|l| l.bind.is_loopback())
    }
}

fn bad(key: &'static str, reason: impl Into<String>) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid {
        key,
        reason: reason.into(),
    })
}
