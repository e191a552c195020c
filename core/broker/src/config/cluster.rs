//! `[cluster]`: this node's place in a uringmq cluster (issue #19, run by `cluster/`). Parsed
//! with the rest of the config file and checked with it, so that a bad cluster key names
//! itself before anything starts.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

/// The `[cluster]` table. Absent: the broker is a single node and nothing of the cluster runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster (letters, digits, `-`, `_`, `.`; at most 64).
    pub name: String,
    /// etcd client URLs (`http://host:port`), tried in turn.
    #[serde(default = "default_etcd")]
    pub etcd: Vec<String>,
    /// Key prefix of this cluster in etcd: nodes register under `{prefix}/nodes/{name}`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Address the node-to-node links listen on (`localhost` is 127.0.0.1).
    #[serde(default = "default_bind", deserialize_with = "de_bind")]
    pub bind: IpAddr,
    /// Port of the node-to-node links (0 picks a free one; the bound port is advertised).
    #[serde(default)]
    pub port: u16,
    /// `host:port` the other nodes dial to reach this one (default: `bind` and the bound
    /// port; needed when `bind` is an unspecified address such as 0.0.0.0, or behind NAT).
    #[serde(default)]
    pub advertise: Option<String>,
    /// Seconds the node's etcd lease lives without a keep-alive: a node that stops (or dies)
    /// is gone for every other node within this time. etcd's own minimum is about 2.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl_secs: u64,
    /// The shared secret that authenticates node-to-node links (HMAC-SHA-256 challenge both
    /// ways; at least 16 bytes). Prefer `secret_file`, which keeps it out of the config.
    #[serde(default)]
    pub secret: Option<String>,
    /// A file holding the shared secret (surrounding white space ignored).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Where persistent sessions are kept for other nodes to resume (`redis://host:port/db`):
    /// every record of the node's durable store (so `persistence_dir` is needed too) is also
    /// written there, and a client whose node died resumes its session on any other node
    /// (`cluster/session_store.rs`). Without it a dead node's sessions are lost with it.
    #[serde(default)]
    pub session_store: Option<String>,
}

fn default_etcd() -> Vec<String> {
    vec!["http://127.0.0.1:2379".to_owned()]
}

fn default_prefix() -> String {
    "/uringmq".to_owned()
}

fn default_bind() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

fn de_bind<'de, D: serde::Deserializer<'de>>(d: D) -> Result<IpAddr, D::Error> {
    super::parse_bind(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn default_lease_ttl() -> u64 {
    5
}

/// The shortest secret accepted: 128 bits of a random secret.
const MIN_SECRET: usize = 16;

impl ClusterConfig {
    /// A loopback node `name` of the cluster registered in `etcd`, with every other key at its
    /// default (no secret: set one before starting).
    pub fn new(name: &str, etcd: Vec<String>) -> Self {
        ClusterConfig {
            name: name.to_owned(),
            etcd,
            prefix: default_prefix(),
            bind: default_bind(),
            port: 0,
            advertise: None,
            lease_ttl_secs: default_lease_ttl(),
            secret: None,
            secret_file: None,
            session_store: None,
        }
    }

    /// Checks every key; the error names it (`cluster.name`...).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let bad = |key, reason: &str| Err((key, reason.to_owned()));
        let name_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if self.name.is_empty() || self.name.len() > 64 || !self.name.chars().all(name_ok) {
            return bad(
                "cluster.name",
                "must be 1 to 64 letters, digits, `-`, `_` or `.`",
            );
        }
        if self.etcd.is_empty() {
            return bad("cluster.etcd", "needs at least one etcd URL");
        }
        if let Some(u) = self.etcd.iter().find(|u| !valid_url(u, "http://")) {
            return Err((
                "cluster.etcd",
                format!("{u:?} is not an http://host:port URL (https is not supported yet)"),
            ));
        }
        if !self.prefix.starts_with('/') || self.prefix.ends_with('/') {
            return bad("cluster.prefix", "must start with `/` and not end with one");
        }
        if !(2..=3600).contains(&self.lease_ttl_secs) {
            return bad("cluster.lease_ttl_secs", "must be between 2 and 3600");
        }
        if self.advertise.is_none() && self.bind.is_unspecified() {
            return bad(
                "cluster.advertise",
                "is needed when `cluster.bind` is an unspecified address: other nodes dial it",
            );
        }
        if let Some(a) = self.advertise.as_deref().filter(|a| !valid_host_port(a)) {
            return Err(("cluster.advertise", format!("{a:?} is not host:port")));
        }
        self.validate_secret()?;
        match self.session_store.as_deref() {
            Some(s) if !valid_url(s, "redis://") => Err((
                "cluster.session_store",
                format!("{s:?} is not a redis://host:port[/db] URL"),
            )),
            _ => Ok(()),
        }
    }

    fn validate_secret(&self) -> Result<(), (&'static str, String)> {
        match (&self.secret, &self.secret_file) {
            (Some(_), Some(_)) => Err((
                "cluster.secret",
                "set `secret` or `secret_file`, not both".into(),
            )),
            (None, None) => Err((
                "cluster.secret",
                "node-to-node links are authenticated: set `secret_file` (or `secret`)".into(),
            )),
            (Some(s), None) if s.trim().len() < MIN_SECRET => Err((
                "cluster.secret",
                format!("must be at least {MIN_SECRET} bytes"),
            )),
            _ => Ok(()),
        }
    }

    /// The shared secret: `secret`, or the content of `secret_file` (trimmed).
    pub fn load_secret(&self) -> Result<Vec<u8>, (&'static str, String)> {
        let text = match (&self.secret, &self.secret_file) {
            (Some(s), _) => s.clone(),
            (None, Some(p)) => std::fs::read_to_string(p)
                .map_err(|e| ("cluster.secret_file", format!("{}: {e}", p.display())))?,
            (None, None) => return Err(("cluster.secret", "not set".into())),
        };
        let secret = text.trim().as_bytes().to_vec();
        if secret.len() < MIN_SECRET {
            return Err((
                "cluster.secret_file",
                format!("the secret must be at least {MIN_SECRET} bytes"),
            ));
        }
        Ok(secret)
    }

    /// The etcd key of node `name`.
    pub fn node_key(&self, name: &str) -> String {
        format!("{}/nodes/{name}", self.prefix)
    }

    /// The etcd key prefix under which every node registers.
    pub fn nodes_prefix(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }
}

/// `scheme` followed by a non-empty `host:port` and an optional path.
fn valid_url(u: &str, scheme: &str) -> bool {
    u.strip_prefix(scheme)
        .map(|rest| rest.split('/').next().unwrap_or(""))
        .is_some_and(valid_host_port)
}

/// `host:port` with a non-empty host and a numeric port (`[::1]:7000` for IPv6).
fn valid_host_port(s: &str) -> bool {
    s.rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClusterConfig, String> {
        let c: ClusterConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate().map_err(|(k, r)| format!("{k}: {r}"))?;
        Ok(c)
    }

    #[test]
    fn defaults_need_only_a_name_and_a_secret() {
        let c = parse("name = \"a\"\nsecret = \"0123456789abcdef\"").unwrap();
        assert_eq!(c.etcd, ["http://127.0.0.1:2379"]);
        assert_eq!(c.prefix, "/uringmq");
        assert_eq!(c.lease_ttl_secs, 5);
        assert_eq!(c.node_key("a"), "/uringmq/nodes/a");
    }

    #[test]
    fn bad_keys_are_named() {
        let s = "secret = \"0123456789abcdef\"\n";
        for (text, key) in [
            ("name = \"a b\"", "cluster.name"),
            ("name = \"a\"\netcd = []", "cluster.etcd"),
            ("name = \"a\"\netcd = [\"127.0.0.1:2379\"]", "cluster.etcd"),
            ("name = \"a\"\nprefix = \"x\"", "cluster.prefix"),
            ("name = \"a\"\nlease_ttl_secs = 1", "cluster.lease_ttl_secs"),
            ("name = \"a\"\nbind = \"0.0.0.0\"", "cluster.advertise"),
            ("name = \"a\"\nadvertise = \"h\"", "cluster.advertise"),
            (
                "name = \"a\"\nsession_store = \"x\"",
                "cluster.session_store",
            ),
        ] {
            let e = parse(&format!("{s}{text}")).unwrap_err();
            assert!(e.starts_with(key), "{text}: {e}");
        }
        let e = parse("name = \"a\"").unwrap_err();
        assert!(e.starts_with("cluster.secret"), "{e}");
        let e = parse("name = \"a\"\nsecret = \"short\"").unwrap_err();
        assert!(e.starts_with("cluster.secret"), "{e}");
        assert!(parse("name = \"a\"\nsurprise = 1").is_err());
    }

    #[test]
    fn the_example_config_documents_every_key() {
        let text = include_str!("../../../../uringmq.example.toml");
        let (_, table) = text
            .split_once("# [cluster]\n")
            .expect("a [cluster] section");
        let keys: Vec<&str> = table
            .lines()
            .filter_map(|l| l.strip_prefix("# ")?.split_once(" = "))
            .map(|(k, _)| k)
            .collect();
        let every = ClusterConfig {
            advertise: Some("h:1".into()),
            secret: Some("s".into()),
            secret_file: Some("f".into()),
            session_store: Some("redis://h:1".into()),
            ..ClusterConfig::new("a", default_etcd())
        };
        for line in toml::to_string(&every).unwrap().lines() {
            if let Some((key, _)) = line.split_once(" = ") {
                assert!(keys.contains(&key), "cluster.{key} is not documented");
            }
        }
    }

    #[test]
    fn a_secret_file_is_read_and_trimmed() {
        let p = std::env::temp_dir().join(format!("uringmq-secret-{}", std::process::id()));
        std::fs::write(&p, "  0123456789abcdef0\n").unwrap();
        let mut c = ClusterConfig::new("a", default_etcd());
        c.secret_file = Some(p.clone());
        c.validate().unwrap();
        assert_eq!(c.load_secret().unwrap(), b"0123456789abcdef0");
        std::fs::write(&p, "short\n").unwrap();
        assert!(c.load_secret().is_err());
        std::fs::remove_file(&p).unwrap();
    }
}
