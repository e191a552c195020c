//! The `[[bridge]]` tables: a connection to another broker and its `[[bridge.topic]]` entries,
//! with Mosquitto's meaning of `topic PATTERN DIRECTION QOS LOCAL_PREFIX REMOTE_PREFIX`, and
//! the prefix remapping both directions use.

use super::ConfigError;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use uringmq_codec::QoS;

/// MQTT version the bridge speaks to the remote broker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BridgeProtocol {
    /// MQTT 3.1.1 (Mosquitto's default `bridge_protocol_version`).
    #[default]
    #[serde(rename = "mqttv311")]
    V311,
    /// MQTT 5.0: no-local and retain-as-published on the remote subscriptions, properties
    /// pass through.
    #[serde(rename = "mqttv5")]
    V5,
}

/// Which way a `[[bridge.topic]]` entry carries messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Local messages are published to the remote (Mosquitto's default).
    #[default]
    Out,
    /// Remote messages are published locally.
    In,
    /// Both.
    Both,
}

impl Direction {
    /// Carries local messages to the remote.
    pub fn is_out(self) -> bool {
        matches!(self, Direction::Out | Direction::Both)
    }

    /// Carries remote messages here.
    pub fn is_in(self) -> bool {
        matches!(self, Direction::In | Direction::Both)
    }
}

/// One `[[bridge.topic]]`: local topics `local_prefix + T` and remote topics `remote_prefix + T`
/// for every `T` matching `pattern`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeTopic {
    /// Topic filter, without the prefixes.
    pub pattern: String,
    /// `out`, `in` or `both` (default `out`).
    #[serde(default)]
    pub direction: Direction,
    /// QoS of the subscriptions on both sides (0..=2, default 0).
    #[serde(default)]
    pub qos: u8,
    /// Prepended to the pattern on this broker (no wildcards).
    #[serde(default)]
    pub local_prefix: String,
    /// Prepended to the pattern on the remote broker (no wildcards).
    #[serde(default)]
    pub remote_prefix: String,
}

impl BridgeTopic {
    /// The filter on this broker.
    pub fn local_filter(&self) -> String {
        format!("{}{}", self.local_prefix, self.pattern)
    }

    /// The filter on the remote broker.
    pub fn remote_filter(&self) -> String {
        format!("{}{}", self.remote_prefix, self.pattern)
    }

    /// The QoS of the entry.
    pub fn qos(&self) -> QoS {
        QoS::from_u8(self.qos).unwrap_or(QoS::AtMostOnce)
    }

    /// The remote topic of local topic `topic`, if this entry carries it out.
    pub fn to_remote(&self, topic: &str) -> Option<String> {
        remap(
            topic,
            &self.local_prefix,
            &self.remote_prefix,
            &self.pattern,
        )
    }

    /// The local topic of remote topic `topic`, if this entry carries it in.
    pub fn to_local(&self, topic: &str) -> Option<String> {
        remap(
            topic,
            &self.remote_prefix,
            &self.local_prefix,
            &self.pattern,
        )
    }
}

/// `from_prefix + T` -> `to_prefix + T` when `T` matches `pattern`.
fn remap(topic: &str, from_prefix: &str, to_prefix: &str, pattern: &str) -> Option<String> {
    let rest = topic.strip_prefix(from_prefix)?;
    uringmq_topic::matches(pattern, rest).then(|| format!("{to_prefix}{rest}"))
}

/// `address = "host:port"` or a list of them (tried in turn).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Addresses {
    /// One address, or several separated by spaces (Mosquitto's `address` line).
    One(String),
    /// Several addresses.
    Many(Vec<String>),
}

impl Default for Addresses {
    fn default() -> Self {
        Addresses::Many(Vec::new())
    }
}

impl Addresses {
    /// Every address, in order.
    pub fn list(&self) -> Vec<String> {
        match self {
            Addresses::One(s) => s.split_whitespace().map(str::to_owned).collect(),
            Addresses::Many(v) => v.clone(),
        }
    }
}

/// One `[[bridge]]` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// Unique name (logs, metrics, `$SYS/broker/connection/<name>/state`).
    pub name: String,
    /// `host:port` of the remote broker; several are tried in turn.
    pub address: Addresses,
    /// `mqttv311` (default) or `mqttv5`.
    #[serde(default)]
    pub protocol: BridgeProtocol,
    /// Client id on the remote (default: the bridge's name). Also the client id its inbound
    /// messages are authorised as here.
    #[serde(default)]
    pub client_id: Option<String>,
    /// User name on the remote.
    #[serde(default)]
    pub username: Option<String>,
    /// Password on the remote.
    #[serde(default)]
    pub password: Option<String>,
    /// Keep-alive towards the remote (default 60 s, as Mosquitto's `keepalive_interval`).
    #[serde(default = "default_keepalive")]
    pub keepalive_secs: u16,
    /// Start a new session on the remote at each connection (default false, as Mosquitto's
    /// `cleansession`): with false, unacknowledged messages are resent with DUP.
    #[serde(default)]
    pub clean_start: bool,
    /// MQTT 3.1.1 only: connect with protocol level `0x84` so a Mosquitto (or uringmq) remote
    /// knows a bridge and neither sends its messages back nor clears RETAIN (default true).
    #[serde(default = "yes")]
    pub try_private: bool,
    /// CA certificates (PEM) that sign the remote's certificate; setting it turns TLS on.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM), with `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Client private key (PEM), with `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Name the remote's certificate must carry (default: the host of the address).
    #[serde(default)]
    pub server_name: Option<String>,
    /// Messages waiting for the remote, at most (then new ones are dropped and counted).
    #[serde(default = "default_queue_messages")]
    pub max_queued_messages: usize,
    /// Payload and topic bytes waiting for the remote, at most.
    #[serde(default = "default_queue_bytes")]
    pub max_queued_bytes: usize,
    /// QoS 1/2 messages sent to the remote and not yet acknowledged, at most (the remote's
    /// Receive Maximum lowers it). Default 20, Mosquitto's `max_inflight_messages`: MQTT
    /// 3.1.1 has no flow control, and a Mosquitto remote drops the incoming QoS 2 messages
    /// past its limit without PUBREC, which would hold them until the next connection.
    #[serde(default = "default_inflight")]
    pub max_inflight: u16,
    /// First reconnect delay; it doubles after each failure, with jitter.
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay.
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_ms: u64,
    /// The topics carried.
    #[serde(default, rename = "topic")]
    pub topics: Vec<BridgeTopic>,
}

fn default_keepalive() -> u16 {
    60
}
fn yes() -> bool {
    true
}
fn default_queue_messages() -> usize {
    100_000
}
fn default_queue_bytes() -> usize {
    64 << 20
}
fn default_inflight() -> u16 {
    20
}
fn default_reconnect_min() -> u64 {
    500
}
fn default_reconnect_max() -> u64 {
    30_000
}

impl BridgeConfig {
    /// A bridge to `address` with the defaults and no topics.
    pub fn new(name: &str, address: &str) -> Self {
        BridgeConfig {
            name: name.to_owned(),
            address: Addresses::One(address.to_owned()),
            protocol: BridgeProtocol::default(),
            client_id: None,
            username: None,
            password: None,
            keepalive_secs: default_keepalive(),
            clean_start: false,
            try_private: true,
            ca_file: None,
            cert_file: None,
            key_file: None,
            server_name: None,
            max_queued_messages: default_queue_messages(),
            max_queued_bytes: default_queue_bytes(),
            max_inflight: default_inflight(),
            reconnect_min_ms: default_reconnect_min(),
            reconnect_max_ms: default_reconnect_max(),
            topics: Vec::new(),
        }
    }

    /// The client id used on the remote.
    pub fn client_id(&self) -> &str {
        self.client_id.as_deref().unwrap_or(&self.name)
    }

    /// Whether the connection uses TLS.
    pub fn tls(&self) -> bool {
        self.ca_file.is_some()
    }

    /// The first `out` entry that carries local topic `topic`, and its remote topic.
    pub fn remote_topic(&self, topic: &str) -> Option<(&BridgeTopic, String)> {
        self.topics
            .iter()
            .filter(|t| t.direction.is_out())
            .find_map(|t| t.to_remote(topic).map(|r| (t, r)))
    }

    /// The first `in` entry that carries remote topic `topic`, and its local topic.
    pub fn local_topic(&self, topic: &str) -> Option<(&BridgeTopic, String)> {
        self.topics
            .iter()
            .filter(|t| t.direction.is_in())
            .find_map(|t| t.to_local(topic).map(|l| (t, l)))
    }

    /// Checks one bridge; errors name the key (`bridge.address`...).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &'static str, reason: String| {
            Err(ConfigError::Invalid {
                key,
                reason: format!("bridge `{}`: {reason}", self.name),
            })
        };
        if self.name.is_empty() || self.name.contains(['/', '+', '#']) {
            return bad(
                "bridge.name",
                "must be non-empty, without `/`, `+`, `#`".into(),
            );
        }
        let addresses = self.address.list();
        if addresses.is_empty() {
            return bad("bridge.address", "needs at least one `host:port`".into());
        }
        for a in &addresses {
            if split_host_port(a).is_none() {
                return bad("bridge.address", format!("`{a}` is not `host:port`"));
            }
        }
        if self.client_id().is_empty() || self.client_id().len() > 65_535 {
            return bad("bridge.client_id", "must be 1 to 65535 bytes".into());
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return bad(
                "bridge.cert_file",
                "needs key_file (and the reverse)".into(),
            );
        }
        if self.cert_file.is_some() && self.ca_file.is_none() {
            return bad("bridge.ca_file", "TLS needs ca_file".into());
        }
        if self.password.is_some() && self.username.is_none() && !self.is_v5() {
            return bad(
                "bridge.password",
                "MQTT 3.1.1 needs a username with it".into(),
            );
        }
        if self.max_queued_messages == 0 || self.max_queued_bytes == 0 {
            return bad(
                "bridge.max_queued_messages",
                "bounds must be at least 1".into(),
            );
        }
        if self.max_inflight == 0 {
            return bad("bridge.max_inflight", "must be at least 1".into());
        }
        if self.reconnect_min_ms == 0 || self.reconnect_max_ms < self.reconnect_min_ms {
            return bad(
                "bridge.reconnect_min_ms",
                "must be at least 1 and at most reconnect_max_ms".into(),
            );
        }
        if self.topics.is_empty() {
            return bad("bridge.topic", "needs at least one [[bridge.topic]]".into());
        }
        self.topics.iter().try_for_each(|t| self.validate_topic(t))
    }

    fn validate_topic(&self, t: &BridgeTopic) -> Result<(), ConfigError> {
        let bad = |key: &'static str, reason: String| {
            Err(ConfigError::Invalid {
                key,
                reason: format!("bridge `{}`, topic `{}`: {reason}", self.name, t.pattern),
            })
        };
        if t.qos > 2 {
            return bad("bridge.topic.qos", "must be 0, 1 or 2".into());
        }
        for (key, prefix) in [
            ("bridge.topic.local_prefix", &t.local_prefix),
            ("bridge.topic.remote_prefix", &t.remote_prefix),
        ] {
            // As Mosquitto: a prefix is a plain topic start.
            if prefix.contains(['+', '#']) {
                return bad(key, "must not contain wildcards".into());
            }
        }
        for filter in [t.local_filter(), t.remote_filter()] {
            if let Err(e) = uringmq_topic::validate_topic_filter(&filter) {
                return bad("bridge.topic.pattern", format!("`{filter}`: {e}"));
            }
            if uringmq_topic::SharedFilter::parse(&filter)
                .ok()
                .flatten()
                .is_some()
            {
                return bad("bridge.topic.pattern", "must not be a shared filter".into());
            }
        }
        Ok(())
    }

    /// Whether the remote speaks MQTT 5.
    pub fn is_v5(&self) -> bool {
        self.protocol == BridgeProtocol::V5
    }
}

/// Checks every bridge and that names are unique.
pub(crate) fn validate_all(bridges: &[BridgeConfig]) -> Result<(), ConfigError> {
    for (i, b) in bridges.iter().enumerate() {
        b.validate()?;
        if bridges[..i].iter().any(|o| o.name == b.name) {
            return Err(ConfigError::Invalid {
                key: "bridge.name",
                reason: format!("two bridges are named `{}`", b.name),
            });
        }
    }
    Ok(())
}

/// `host:port` split; `[v6]:port` accepted.
pub(crate) fn split_host_port(a: &str) -> Option<(&str, u16)> {
    let (host, port) = a.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = port.parse().ok().filter(|p| *p != 0)?;
    (!host.is_empty()).then_some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<BridgeConfig>, String> {
        #[derive(Deserialize)]
        struct Doc {
            bridge: Vec<BridgeConfig>,
        }
        let doc: Doc = toml::from_str(text).map_err(|e| e.to_string())?;
        validate_all(&doc.bridge).map_err(|e| e.to_string())?;
        Ok(doc.bridge)
    }

    #[test]
    fn prefixes_remap_like_mosquitto() {
        let t = BridgeTopic {
            pattern: "sensors/#".into(),
            direction: Direction::Both,
            qos: 1,
            local_prefix: "site1/".into(),
            remote_prefix: "cloud/site1/".into(),
        };
        assert_eq!(
            t.to_remote("site1/sensors/t").as_deref(),
            Some("cloud/site1/sensors/t")
        );
        assert_eq!(
            t.to_local("cloud/site1/sensors/t").as_deref(),
            Some("site1/sensors/t")
        );
        assert_eq!(t.to_remote("sensors/t"), None);
        assert_eq!(t.to_remote("site1/other"), None);
        assert_eq!(t.local_filter(), "site1/sensors/#");
        assert_eq!(t.remote_filter(), "cloud/site1/sensors/#");
    }

    #[test]
    fn a_table_parses_with_defaults() {
        let b = parse(
            r#"
            [[bridge]]
            name = "up"
            address = "127.0.0.1:1883 127.0.0.1:1884"
            [[bridge.topic]]
            pattern = "a/#"
            "#,
        )
        .unwrap();
        assert_eq!(b[0].address.list(), ["127.0.0.1:1883", "127.0.0.1:1884"]);
        assert_eq!(b[0].topics[0].direction, Direction::Out);
        assert_eq!(b[0].protocol, BridgeProtocol::V311);
        assert_eq!(b[0].client_id(), "up");
        assert!(b[0].try_private);
    }

    #[test]
    fn errors_name_the_key() {
        let base = "[[bridge]]\nname = \"b\"\naddress = [\"h:1\"]\n";
        let topic = "[[bridge.topic]]\npattern = \"a/#\"\n";
        let cases = [
            (format!("{base}{topic}qos = 3\n"), "bridge.topic.qos"),
            (
                format!("{base}{topic}local_prefix = \"x/+/\"\n"),
                "bridge.topic.local_prefix",
            ),
            (
                "[[bridge]]\nname = \"b\"\naddress = \"nope\"\n[[bridge.topic]]\npattern = \"a\"\n"
                    .into(),
                "bridge.address",
            ),
            (base.to_string(), "bridge.topic"),
            (
                format!("{base}cert_file = \"c\"\nca_file = \"a\"\n{topic}"),
                "bridge.cert_file",
            ),
            (format!("{base}{topic}{base}{topic}"), "bridge.name"),
            (
                format!("{base}{topic}pattern2 = 1\n"),
                "unknown field `pattern2`",
            ),
        ];
        for (text, key) in cases {
            let e = parse(&text).unwrap_err();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn the_example_config_documents_every_bridge_key() {
        let example: String = include_str!("../../../../uringmq.example.toml")
            .lines()
            .map(|l| l.trim_start_matches("# "))
            .collect::<Vec<_>>()
            .join("\n");
        let every = BridgeConfig {
            client_id: Some("c".into()),
            username: Some("u".into()),
            password: Some("p".into()),
            ca_file: Some("ca".into()),
            cert_file: Some("c".into()),
            key_file: Some("k".into()),
            server_name: Some("s".into()),
            topics: vec![BridgeTopic::default()],
            ..BridgeConfig::new("b", "h:1")
        };
        let text = toml::to_string(&every).unwrap();
        for line in text.lines() {
            if let Some((key, _)) = line.split_once(" = ") {
                assert!(
                    example.contains(&format!("\n{key} = ")),
                    "{key} is not documented"
                );
            }
        }
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("h:1883"), Some(("h", 1883)));
        assert_eq!(split_host_port("[::1]:8883"), Some(("::1", 8883)));
        assert_eq!(split_host_port("h"), None);
        assert_eq!(split_host_port("h:0"), None);
    }
}
