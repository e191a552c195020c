//! `uringmq cluster status`: the nodes registered in etcd, and from each node's `/metrics`
//! (the address it registered, if it serves one) its links and their state.
//!
//! ```text
//! uringmq cluster status [-c uringmq.toml] [--etcd http://127.0.0.1:2379] [--prefix /uringmq]
//! ```
//!
//! It reads etcd once (a prefix read, no watch, no lease) and asks every node once; it never
//! joins the cluster.

use super::membership::{Members, NodeRecord};
use crate::config::Config;
use clap::{Args, Subcommand};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

/// Inspect a uringmq cluster.
#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// List the nodes registered in etcd and each node's links.
    Status(StatusArgs),
}

/// Where the cluster is.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// A node's config file: its `[cluster]` table names etcd and the prefix.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// etcd client URL (repeatable; overrides the config's).
    #[arg(long)]
    etcd: Vec<String>,
    /// Key prefix of the cluster (overrides the config's; default /uringmq).
    #[arg(long)]
    prefix: Option<String>,
}

impl ClusterCmd {
    /// Runs the subcommand; prints to stdout, errors to stderr; returns the exit status.
    pub fn run(self) -> u8 {
        let ClusterCmd::Status(args) = self;
        match args
            .where_()
            .and_then(|(etcd, prefix)| status_report(&etcd, &prefix))
        {
            Ok(text) => {
                print!("{text}");
                0
            }
            Err(e) => {
                eprintln!("uringmq cluster status: {e}");
                1
            }
        }
    }
}

impl StatusArgs {
    /// The etcd URLs and the prefix: flags first, then the config file's, then the defaults.
    fn where_(&self) -> Result<(Vec<String>, String), String> {
        let from_file = match &self.config {
            Some(p) => Config::from_file(p).map_err(|e| e.to_string())?.cluster,
            None => None,
        };
        let etcd = match (&self.etcd, &from_file) {
            (e, _) if !e.is_empty() => e.clone(),
            (_, Some(c)) => c.etcd.clone(),
            _ => vec!["http://127.0.0.1:2379".to_owned()],
        };
        let prefix = self
            .prefix
            .clone()
            .or_else(|| from_file.map(|c| c.prefix))
            .unwrap_or_else(|| "/uringmq".to_owned());
        Ok((etcd, prefix))
    }
}

/// What `uringmq cluster status` prints: every node registered under `prefix` in `etcd`, with
/// its links as its `/metrics` reports them.
pub fn status_report(etcd: &[String], prefix: &str) -> Result<String, String> {
    let members = read_members(etcd, prefix)?;
    let mut out = format!("{} node(s) registered under {prefix}\n", members.len());
    for (name, rec) in &members {
        out += &format!(
            "node {name}  links at {}  version {}  started {}\n",
            rec.addr, rec.version, rec.started
        );
        out += &links_of(rec);
    }
    Ok(out)
}

/// Every node's record, read once from etcd on a runtime of this call's own.
fn read_members(etcd: &[String], prefix: &str) -> Result<Members, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let nodes = format!("{prefix}/nodes/");
    runtime.block_on(async {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5));
        let mut client = etcd_client::Client::connect(etcd, Some(options))
            .await
            .map_err(|e| format!("etcd {etcd:?}: {e}"))?;
        let resp = client
            .get(
                nodes.as_str(),
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await
            .map_err(|e| format!("etcd {etcd:?}: {e}"))?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                let key = String::from_utf8_lossy(kv.key());
                let name = key.strip_prefix(&nodes)?.to_owned();
                let rec = toml::from_str::<NodeRecord>(&String::from_utf8_lossy(kv.value()));
                Some((name, rec.ok()?))
            })
            .collect())
    })
}

/// The link lines of one node, from its `/metrics`.
fn links_of(rec: &NodeRecord) -> String {
    let Some(addr) = &rec.metrics else {
        return "  (no metrics_listen: links unknown)\n".to_owned();
    };
    match scrape(addr) {
        Ok(text) => link_lines(&text),
        Err(e) => format!("  (metrics at {addr} unreachable: {e})\n"),
    }
}

/// One sample of `metrics`: its labels (as written) and value, for each line of family `name`.
fn samples<'a>(metrics: &'a str, name: &str) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
    let prefix = format!("{name}{{");
    metrics.lines().filter_map(move |line| {
        let (labels, value) = line.strip_prefix(prefix.as_str())?.split_once("} ")?;
        Some((labels, value.trim()))
    })
}

/// The value of label `key` in `labels` (`a="x",b="y"`).
fn label<'a>(labels: &'a str, key: &str) -> &'a str {
    labels
        .split(',')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix("=\""))
        .map(|v| v.trim_end_matches('"'))
        .unwrap_or("?")
}

/// Each peer's routes, then each link with its state and what it carried, as lines.
fn link_lines(metrics: &str) -> String {
    let mut out = String::new();
    for (labels, value) in samples(metrics, "uringmq_cluster_routes") {
        out += &format!("  peer {:<20} routes {value}\n", label(labels, "peer"));
    }
    let count = |family: &str, labels: &str| {
        samples(metrics, family)
            .find(|(l, _)| *l == labels)
            .map_or("?", |(_, v)| v)
            .to_owned()
    };
    let mut links = 0;
    for (labels, value) in samples(metrics, "uringmq_cluster_link_up") {
        links += 1;
        let state = if value == "1" { "up" } else { "down" };
        out += &format!(
            "  link {:<8} {:<20} messages {} bytes {} resent {} dropped {}  {state}\n",
            label(labels, "direction"),
            label(labels, "peer"),
            count("uringmq_cluster_link_messages_total", labels),
            count("uringmq_cluster_link_bytes_total", labels),
            count("uringmq_cluster_link_resent_total", labels),
            count("uringmq_cluster_link_dropped_total", labels),
        );
    }
    if links == 0 {
        out += "  no links\n";
    }
    out
}

/// `GET /metrics` over plain HTTP/1.0 (the endpoint is tiny_http on a trusted network).
fn scrape(addr: &str) -> std::io::Result<String> {
    let sock = addr
        .parse()
        .map_err(|_| std::io::Error::other("not an address"))?;
    let mut s = std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_samples_become_lines() {
        let m = "# HELP x\nuringmq_cluster_link_up{direction=\"outbound\",peer=\"b\"} 1\n\
                 uringmq_cluster_link_up{direction=\"inbound\",peer=\"b\"} 0\nother 1\n\
                 uringmq_cluster_link_messages_total{direction=\"outbound\",peer=\"b\"} 42\n\
                 uringmq_cluster_routes{peer=\"b\"} 3\n";
        let text = link_lines(m);
        assert!(text.contains("outbound") && text.contains(" up"), "{text}");
        assert!(text.contains("inbound") && text.contains("down"), "{text}");
        assert!(text.contains("messages 42 bytes ?"), "{text}");
        assert!(text.contains("routes 3"), "{text}");
        assert_eq!(link_lines(""), "  no links\n");
    }
}
