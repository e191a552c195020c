//! Command line of `uringmq-load`.

use crate::wire::Version;
use clap::{Parser, ValueEnum};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

/// What traffic to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// `--conns` publishers, one subscriber, one topic.
    FanIn,
    /// One publisher, `--conns` subscribers, one topic.
    FanOut,
    /// `--conns` publisher/subscriber pairs, one topic per pair.
    Pairs,
    /// `--pubs` publishers into one `$share/g/...` group of `--conns` members.
    Shared,
    /// `--pubs` publishers, `--conns` subscribers on `+` and `#` filters (alternately).
    Wildcard,
    /// `--conns` concurrent clients connecting and disconnecting in a loop: CONNACKs per second.
    ConnectStorm,
    /// Open `--conns` connections with keep-alive and hold them: broker memory per connection.
    Idle,
}

/// What each connection of `idle` subscribes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IdleSub {
    /// Nothing: the connection only connects.
    None,
    /// A topic of its own, the shape of a device's command topic (`.../idle/<i>/cmd`, like
    /// `devices/<id>/cmd`): one filter per connection, which a cluster's nodes each learn
    /// (node-level interest).
    Own,
    /// A topic of its own ending in the connection's own level (`.../idle/<i>`). Cheaper for
    /// a broker with a node per level and a hash table per node with children (Mosquitto:
    /// ~755 B per connection less than `own` at 10,000), so both shapes are worth measuring.
    Leaf,
    /// One filter for every connection of a worker process (`.../idle`): one filter per
    /// process.
    Shared,
}

/// Which monoio driver the runtime threads use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Driver {
    /// epoll. The default: on this machine the load generator reached ~390k msgs/s fan-in
    /// against `--null-broker` with it, against 60-74k msgs/s and millisecond latencies with
    /// io_uring (same binary and run, see BENCHMARKS.md): io_uring would make the load
    /// generator the bottleneck.
    Epoll,
    /// monoio's FusionDriver: io_uring when the kernel allows it, else epoll.
    Auto,
}

/// `uringmq-load`: MQTT 3.1.1/5.0 load generator for uringmq, Mosquitto, rumqttd or any broker.
///
/// Open loop by default (`--rate` messages per second in total, spread over the publishers);
/// closed loop with `--max` (each publisher keeps at most `--inflight` messages not yet received
/// by every subscriber that should get them).
#[derive(Parser, Clone, Debug)]
#[command(name = "uringmq-load", version)]
pub struct Args {
    /// Traffic pattern.
    #[arg(long, short = 's', value_enum, default_value = "pairs")]
    pub scenario: Scenario,
    /// Broker address (loopback only: benchmarks never leave this machine).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Broker port.
    #[arg(long, short = 'p', default_value_t = 1883)]
    pub port: u16,
    /// Subscribers connect to this port instead of `--port` (publishers on one broker,
    /// subscribers on another: the path through a bridge, or across the nodes of a cluster).
    #[arg(long)]
    pub sub_port: Option<u16>,
    /// The nodes of a cluster, as ports on `--host`: a range `18850-18904` or a list
    /// `1883,1884`. Worker process `i` connects its subscribers and idle connections to port
    /// `i % n` and its publishers to port `(i + 1) % n`, so every message crosses between
    /// nodes. Replaces `--port` and `--sub-port`.
    #[arg(long, value_parser = parse_ports, conflicts_with = "sub_port")]
    pub ports: Option<Ports>,
    /// MQTT version: 3 (3.1.1) or 5.
    #[arg(long, default_value = "5", value_parser = parse_version)]
    pub mqtt: Version,
    /// The scenario's main connection count (see each scenario).
    #[arg(long, short = 'c', default_value_t = 10)]
    pub conns: u32,
    /// Publishers for shared and wildcard (default 4); overrides the scenario's count elsewhere.
    /// In `idle`: a trickle (paced by `--rate`) of that many publishers (at least one per
    /// process), each to one of the idle connections, which subscribes to its topic.
    #[arg(long)]
    pub pubs: Option<u32>,
    /// Subscribers; overrides the scenario's count.
    #[arg(long)]
    pub subs: Option<u32>,
    /// QoS of publications and subscriptions.
    #[arg(long, short = 'q', default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Payload bytes (at least the 24-byte stamp).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(24..=16_777_216))]
    pub payload: u64,
    /// Open loop: total messages per second over all publishers.
    #[arg(long, short = 'r', default_value_t = 10_000)]
    pub rate: u64,
    /// Closed loop: publish as fast as the in-flight window allows (ignores --rate).
    #[arg(long)]
    pub max: bool,
    /// Closed-loop window per publisher: messages sent but not yet received everywhere.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub inflight: u32,
    /// Most unacknowledged QoS 1/2 publications per publisher (default: the broker's Receive
    /// Maximum in 5.0, 65,535 in 3.1.1, which has no flow control: Mosquitto, for one, stalls
    /// 3.1.1 QoS 2 publishers that exceed its max_inflight_messages).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_unacked: Option<u16>,
    /// How long to publish (or hold, or storm): 10, 10s, 500ms, 2m.
    #[arg(long, short = 'd', default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Once every connection and subscription is set up, wait this long before publishing
    /// (a cluster tells the other nodes about a subscription after its SUBACK).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub settle: Duration,
    /// After publishing stops, how long to wait for the last deliveries and acknowledgements.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Keep-alive in seconds sent in CONNECT (0 disables); PINGREQ goes out at half of it.
    #[arg(long, default_value_t = 30)]
    pub keepalive: u16,
    /// `idle`: what each connection subscribes to (one filter each, or none). `own` by
    /// default: #20's idle figure is per connection with one subscription, the shape of a
    /// fleet where each device listens on its own command topic.
    #[arg(long, value_enum, default_value = "own")]
    pub idle_sub: IdleSub,
    /// Sessions that outlive their connection (3.1.1 clean session 0, v5 clean start 0 with a
    /// session expiry of one hour): what a broker's durable store writes (`persistence_dir`,
    /// Mosquitto's `persistence true`).
    #[arg(long)]
    pub persistent: bool,
    /// Time allowed for TCP connect + CONNACK (+ SUBACK).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Connection set-ups in flight per thread (keep the total under the broker's listen backlog:
    /// SYNs past it are retried after a second and show as 1 s connect latencies).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub connect_window: u32,
    /// I/O driver of the runtime threads.
    #[arg(long, value_enum, default_value = "epoll")]
    pub driver: Driver,
    /// Runtime threads per process (default: the CPUs this process may run on).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Worker processes; the scenario is split into that many independent shards, each on its
    /// own topics, and their figures are added up. Needed past ~19,000 connections here.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub procs: u32,
    /// Source addresses, bound before connect with IP_BIND_ADDRESS_NO_PORT: a count N
    /// (127.0.0.2 onwards) or a range like 127.0.0.2-127.0.0.81. Default: kernel's choice.
    #[arg(long, value_parser = parse_sources)]
    pub sources: Option<Sources>,
    /// Broker process to sample (RSS, CPU) from /proc; a list `1,2,3` (the nodes of a
    /// cluster) is sampled as one broker: RSS and CPU added up.
    #[arg(long, value_delimiter = ',')]
    pub broker_pid: Vec<u32>,
    /// Name of the broker, carried into the JSON.
    #[arg(long, default_value = "broker")]
    pub label: String,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Exit non-zero on any loss at QoS > 0, any duplicate at QoS 2, routing errors or
    /// failed connections (other than in idle/connect-storm, where failures are the result).
    #[arg(long)]
    pub strict: bool,
    /// Print no table.
    #[arg(long)]
    pub quiet: bool,
    /// Instead of generating load, serve a "null broker" on 127.0.0.1:--port for --duration: it
    /// forwards every PUBLISH to every subscriber without matching, to measure the load
    /// generator's own ceiling (run fan-in against it).
    #[arg(long)]
    pub null_broker: bool,
    /// Internal: the run identifier shared by the worker processes of one run.
    #[arg(long, hide = true)]
    pub run: Option<String>,
    /// Internal: run as worker `i/n` of a `--procs` run (speaks the worker protocol on stdio).
    #[arg(long, hide = true, value_parser = parse_worker)]
    pub worker: Option<(u32, u32)>,
}

impl Args {
    /// Messages per second per publisher in open loop, `None` in closed loop.
    pub fn rate_per_publisher(&self, total_pubs: u64) -> Option<f64> {
        (!self.max).then(|| self.rate as f64 / total_pubs.max(1) as f64)
    }
}

/// Loopback source addresses to spread connections over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sources(pub Vec<Ipv4Addr>);

/// Broker ports of a cluster (`--ports`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ports(pub Vec<u16>);

/// `a-b` (inclusive) or `a,b,c`; no port 0.
pub fn parse_ports(s: &str) -> Result<Ports, String> {
    let port = |p: &str| -> Result<u16, String> {
        match p.trim().parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("bad port {p:?} in --ports {s:?}")),
            Ok(v) => Ok(v),
        }
    };
    let ports: Vec<u16> = match s.split_once('-') {
        Some((a, b)) => (port(a)?..=port(b)?).collect(),
        None => s.split(',').map(port).collect::<Result<_, _>>()?,
    };
    if ports.is_empty() {
        return Err(format!("empty port range {s:?}"));
    }
    Ok(Ports(ports))
}

/// `3`, `3.1.1`, `4` -> 3.1.1; `5` -> 5.0.
pub fn parse_version(s: &str) -> Result<Version, String> {
    match s {
        "3" | "3.1.1" | "4" | "311" => Ok(Version::V311),
        "5" | "5.0" => Ok(Version::V5),
        _ => Err(format!(
            "unsupported MQTT version {s:?}: use 3 (3.1.1) or 5"
        )),
    }
}

/// `10`, `10s`, `250ms`, `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, ""), |i| s.split_at(i));
    let v: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => v,
        "ms" => v / 1000.0,
        "m" => v * 60.0,
        _ => return Err(format!("bad duration unit in {s:?}: use ms, s or m")),
    };
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("duration {s:?} out of range (0 to 24 h)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A count `N` (127.0.0.2 ..) or a range `a.b.c.d-a.b.c.e`; loopback only.
pub fn parse_sources(s: &str) -> Result<Sources, String> {
    let (first, last) = if let Some((a, b)) = s.split_once('-') {
        let a: Ipv4Addr = a.parse().map_err(|e| format!("{a:?}: {e}"))?;
        let b: Ipv4Addr = b.parse().map_err(|e| format!("{b:?}: {e}"))?;
        (u32::from(a), u32::from(b))
    } else {
        let n: u32 = s
            .parse()
            .map_err(|_| format!("bad --sources {s:?}: a count or a range"))?;
        if n == 0 || n > 65_000 {
            return Err("--sources count must be 1..65000".into());
        }
        let first = u32::from(Ipv4Addr::new(127, 0, 0, 2));
        (first, first + n - 1)
    };
    if first > last {
        return Err(format!("empty source range {s:?}"));
    }
    let addrs: Vec<Ipv4Addr> = (first..=last).map(Ipv4Addr::from).collect();
    if let Some(a) = addrs.iter().find(|a| !a.is_loopback()) {
        return Err(format!("source {a} is not a loopback address"));
    }
    Ok(Sources(addrs))
}

/// `i/n` with `i < n`.
pub fn parse_worker(s: &str) -> Result<(u32, u32), String> {
    let (i, n) = s.split_once('/').ok_or("expected i/n")?;
    let (i, n): (u32, u32) = (
        i.parse().map_err(|_| "bad i")?,
        n.parse().map_err(|_| "bad n")?,
    );
    if i >= n {
        return Err(format!("worker index {i} out of 0..{n}"));
    }
    Ok((i, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("uringmq-load").chain(args.iter().copied()))
    }

    #[test]
    fn defaults() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.scenario, Scenario::Pairs);
        assert_eq!(a.mqtt, Version::V5);
        assert_eq!((a.qos, a.payload, a.procs), (0, 64, 1));
        assert_eq!(a.duration, Duration::from_secs(10));
        assert!(!a.max);
    }

    #[test]
    fn scenario_and_options() {
        let a = parse(&[
            "-s",
            "fan-in",
            "--mqtt",
            "3",
            "-q",
            "2",
            "--max",
            "--procs",
            "4",
            "--sources",
            "80",
            "-d",
            "500ms",
        ])
        .unwrap();
        assert_eq!(a.scenario, Scenario::FanIn);
        assert_eq!(a.mqtt, Version::V311);
        assert_eq!(a.qos, 2);
        assert!(a.max);
        assert_eq!(a.procs, 4);
        assert_eq!(a.sources.as_ref().map(|s| s.0.len()), Some(80));
        assert_eq!(
            a.sources.as_ref().and_then(|s| s.0.last().copied()),
            Some(Ipv4Addr::new(127, 0, 0, 81))
        );
        assert_eq!(a.duration, Duration::from_millis(500));
        assert_eq!(a.rate_per_publisher(10), None);
        assert_eq!(a.max_unacked, None);
        assert_eq!(
            parse(&["--max-unacked", "20"]).unwrap().max_unacked,
            Some(20)
        );
        assert!(parse(&["--max-unacked", "0"]).is_err());
    }

    #[test]
    fn rejects_bad_values() {
        assert!(parse(&["-q", "3"]).is_err());
        assert!(parse(&["--payload", "10"]).is_err());
        assert!(parse(&["--mqtt", "4.5"]).is_err());
        assert!(parse(&["-s", "nope"]).is_err());
        assert!(parse(&["--procs", "0"]).is_err());
        assert!(parse(&["--sources", "10.0.0.1-10.0.0.5"]).is_err());
        assert!(parse(&["-d", "3h"]).is_err());
    }

    #[test]
    fn source_ranges() {
        assert_eq!(parse_sources("127.0.0.2-127.0.0.3").unwrap().0.len(), 2);
        assert!(parse_sources("127.0.0.9-127.0.0.3").is_err());
        assert!(parse_sources("0").is_err());
    }

    #[test]
    fn open_loop_rate_is_spread() {
        let a = parse(&["-r", "1000"]).unwrap();
        assert_eq!(a.rate_per_publisher(4), Some(250.0));
    }

    #[test]
    fn port_lists() {
        assert_eq!(parse_ports("1883-1885").unwrap().0, vec![1883, 1884, 1885]);
        assert_eq!(parse_ports("1883,2000").unwrap().0, vec![1883, 2000]);
        assert!(parse_ports("1885-1883").is_err());
        assert!(parse_ports("0,1").is_err());
        assert!(parse(&["--ports", "1-3", "--sub-port", "5"]).is_err());
        assert_eq!(
            parse(&["--broker-pid", "7,9"]).unwrap().broker_pid,
            vec![7, 9]
        );
    }

    #[test]
    fn worker_index() {
        assert_eq!(parse_worker("1/3"), Ok((1, 3)));
        assert!(parse_worker("3/3").is_err());
    }
}
