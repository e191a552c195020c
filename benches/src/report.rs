//! The figures users compare brokers by, derived from the merged results, as a table and JSON.

use crate::cli::{Args, Scenario};
use crate::procfs::{self, KernelSample, ProcSample};
use crate::run::Phases;
use crate::stats::{Delivery, LatencySummary, WorkerResult};
use crate::wire::Version;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::io;
use std::time::Duration;

/// Samples the broker process(es) and the kernel at the moments of a run.
#[derive(Debug, Default)]
pub struct BrokerProbe {
    /// The broker's processes (the nodes of a cluster are one broker).
    pids: Vec<u32>,
    /// Let the broker settle before the after-connect memory reading (idle hold).
    settle: Duration,
    /// Before any connection.
    pub before: Option<ProcSample>,
    /// Every connection open.
    pub ready: Option<ProcSample>,
    /// Publishing started.
    pub start: Option<ProcSample>,
    /// Publishing stopped.
    pub end: Option<ProcSample>,
    /// The kernel before any connection.
    pub kernel_before: Option<KernelSample>,
    /// The kernel with every connection open.
    pub kernel_ready: Option<KernelSample>,
    /// The kernel when publishing stopped.
    pub kernel_end: Option<KernelSample>,
}

impl BrokerProbe {
    /// A probe of `pids` (none: records no broker figures); takes the "before" readings now.
    pub fn new(pids: &[u32], settle: Duration) -> Self {
        BrokerProbe {
            pids: pids.to_vec(),
            settle,
            before: procfs::sample_all(pids),
            kernel_before: procfs::kernel_sample().ok(),
            ..Default::default()
        }
    }

    fn take(&self) -> Option<ProcSample> {
        procfs::sample_all(&self.pids)
    }
}

impl Phases for BrokerProbe {
    fn ready(&mut self) -> io::Result<()> {
        if !self.pids.is_empty() {
            std::thread::sleep(self.settle);
        }
        self.ready = self.take();
        self.kernel_ready = procfs::kernel_sample().ok();
        Ok(())
    }
    fn started(&mut self) {
        self.start = self.take();
    }
    fn stopped(&mut self) {
        self.end = self.take();
        self.kernel_end = procfs::kernel_sample().ok();
    }
}

/// Broker process figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BrokerFigures {
    /// Process id sampled (the first, with several).
    pub pid: u32,
    /// Processes sampled and added up (the nodes of a cluster).
    #[serde(default)]
    pub processes: u32,
    /// RSS before the load generator connected, KiB.
    pub rss_before_kb: u64,
    /// RSS with every connection open, KiB.
    pub rss_ready_kb: u64,
    /// RSS when publishing stopped, KiB.
    pub rss_end_kb: u64,
    /// CPU while publishing, percent of one core.
    pub cpu_pct: f64,
    /// Broker memory per connection, bytes: (RSS - RSS before) / connections opened, with
    /// RSS at the end of the hold for `idle` (the steady state of connections held idle: a
    /// broker may shed memory of idle connections, as uringmq's hibernation does), else
    /// with every connection open.
    pub mem_per_conn_bytes: f64,
    /// The same with RSS right after every connection opened (and `--settle`).
    #[serde(default)]
    pub mem_per_conn_ready_bytes: f64,
}

/// What the connections cost the kernel, and the machine, on top of every process: both ends
/// of each connection (loopback) and whatever else ran meanwhile.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KernelFigures {
    /// Before any connection.
    pub before: KernelSample,
    /// At the moment the broker's memory per connection is taken (see [`BrokerFigures`]).
    pub held: KernelSample,
    /// Slab and TCP buffer growth per connection, bytes.
    pub per_conn_bytes: f64,
    /// Growth of the machine's used memory (every process and the kernel) per connection.
    pub machine_per_conn_bytes: f64,
}

impl KernelFigures {
    fn new(before: KernelSample, held: KernelSample, conns: u64) -> Self {
        let grown = |a: u64, b: u64, unit: f64| (b as f64 - a as f64) * unit;
        let kernel = grown(before.slab_kb, held.slab_kb, 1024.0)
            + grown(before.tcp_mem_pages, held.tcp_mem_pages, 4096.0);
        let machine = grown(before.used_kb, held.used_kb, 1024.0);
        let per = |b: f64| if conns > 0 { b / conns as f64 } else { 0.0 };
        KernelFigures {
            before,
            held,
            per_conn_bytes: per(kernel),
            machine_per_conn_bytes: per(machine),
        }
    }
}

/// The report of one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Broker name (`--label`).
    pub label: String,
    /// Scenario name.
    pub scenario: String,
    /// "3.1.1" or "5.0".
    pub mqtt: String,
    /// QoS.
    pub qos: u8,
    /// Payload bytes.
    pub payload: u64,
    /// Open-loop target rate (msgs/s), or `None` for closed loop.
    pub target_rate: Option<u64>,
    /// Closed-loop window per publisher.
    pub inflight: Option<u32>,
    /// Publishers.
    pub pubs: u64,
    /// Subscribers.
    pub subs: u64,
    /// Connections planned.
    pub conns: u64,
    /// Worker processes.
    pub procs: u32,
    /// Runtime threads in all processes.
    pub threads: u32,
    /// Publishing window, seconds.
    pub duration_s: f64,
    /// PUBLISH sent per second.
    pub msgs_in_per_s: f64,
    /// PUBLISH received per second, by all subscribers.
    pub msgs_out_per_s: f64,
    /// PUBLISH sent.
    pub published: u64,
    /// PUBLISH received.
    pub received: u64,
    /// QoS 1/2 publications acknowledged (PUBACK, PUBCOMP) with success.
    pub acked: u64,
    /// QoS 1/2 publications never acknowledged by the end of the drain.
    pub unacked: u64,
    /// Publish-to-receive latency, microseconds.
    pub latency_us: LatencySummary,
    /// TCP connect to CONNACK, microseconds.
    pub connect_latency_us: LatencySummary,
    /// Successful CONNACKs.
    pub connects_ok: u64,
    /// Failed connection attempts.
    pub connects_failed: u64,
    /// CONNACKs per second (connect storm: while storming; else while opening connections).
    pub connects_per_s: f64,
    /// Sequence-number accounting.
    pub delivery: Delivery,
    /// Malformed or unexpected packets from the broker.
    pub protocol_errors: u64,
    /// Connections the broker closed on its own.
    pub dropped: u64,
    /// Received payloads without our stamp.
    pub foreign: u64,
    /// Broker process figures (`--broker-pid`).
    pub broker: Option<BrokerFigures>,
    /// Kernel and machine memory figures.
    #[serde(default)]
    pub kernel: Option<KernelFigures>,
    /// Load generator CPU while publishing, percent of one core, all processes.
    pub loadgen_cpu_pct: f64,
    /// What `--strict` fails on.
    pub problems: Vec<String>,
}

fn per_sec(n: u64, from_ns: u64, to_ns: u64) -> f64 {
    let secs = to_ns.saturating_sub(from_ns) as f64 / 1e9;
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

impl Report {
    /// Derives the report.
    pub fn new(args: &Args, r: &WorkerResult, probe: &BrokerProbe) -> Report {
        let c = &r.counters;
        let scenario = scenario_name(args.scenario);
        let run_ns = r.run_end_ns.saturating_sub(r.run_start_ns);
        let rx_end = r.last_rx_ns.max(r.run_end_ns);
        let connects_per_s = match args.scenario {
            Scenario::ConnectStorm => per_sec(c.connects_ok, r.run_start_ns, r.run_end_ns),
            _ => per_sec(c.connects_ok, r.setup_start_ns, r.setup_end_ns),
        };
        let held_at_end = args.scenario == Scenario::Idle && probe.end.is_some();
        let broker = broker_figures(probe, held_at_end, c.connects_ok);
        let kernel = match (probe.kernel_before, probe.kernel_ready, probe.kernel_end) {
            (Some(b), _, Some(e)) if held_at_end => Some(KernelFigures::new(b, e, c.connects_ok)),
            (Some(b), Some(r), _) => Some(KernelFigures::new(b, r, c.connects_ok)),
            _ => None,
        };
        let mut rep = Report {
            label: args.label.clone(),
            scenario,
            mqtt: match args.mqtt {
                Version::V311 => "3.1.1".into(),
                Version::V5 => "5.0".into(),
            },
            qos: args.qos,
            payload: args.payload,
            target_rate: (!args.max).then_some(args.rate),
            inflight: args.max.then_some(args.inflight),
            pubs: r.pubs,
            subs: r.subs,
            conns: r.planned,
            procs: r.procs,
            threads: r.threads,
            duration_s: run_ns as f64 / 1e9,
            msgs_in_per_s: per_sec(c.published, r.run_start_ns, r.run_end_ns),
            msgs_out_per_s: per_sec(c.received, r.run_start_ns, rx_end),
            published: c.published,
            received: c.received,
            acked: c.acked,
            unacked: if args.qos > 0 {
                c.published.saturating_sub(c.acked + c.rejected)
            } else {
                0
            },
            latency_us: r.latency.summary_us(),
            connect_latency_us: r.connect_latency.summary_us(),
            connects_ok: c.connects_ok,
            connects_failed: c.connects_failed,
            connects_per_s,
            delivery: r.delivery.clone(),
            protocol_errors: c.protocol_errors,
            dropped: c.dropped,
            foreign: c.foreign,
            broker,
            kernel,
            loadgen_cpu_pct: if run_ns > 0 {
                100.0 * (r.cpu_ticks as f64 / procfs::ticks_per_sec() as f64)
                    / (run_ns as f64 / 1e9)
            } else {
                0.0
            },
            problems: Vec::new(),
        };
        rep.problems = rep.find_problems(args.scenario);
        rep
    }

    /// What `--strict` rejects: loss at QoS > 0 and duplicates at QoS 2 (forbidden by the delivery
    /// guarantees of MQTT 4.3.2/4.3.3), routing errors, protocol errors, failed connections.
    fn find_problems(&self, scenario: Scenario) -> Vec<String> {
        let d = &self.delivery;
        let mut p = Vec::new();
        if self.qos > 0 && d.lost > 0 {
            p.push(format!("{} messages lost at QoS {}", d.lost, self.qos));
        }
        if self.unacked > 0 {
            p.push(format!(
                "{} publications never acknowledged by the broker",
                self.unacked
            ));
        }
        if self.qos == 2 && d.duplicates > 0 {
            p.push(format!("{} duplicates at QoS 2", d.duplicates));
        }
        if d.unexpected > 0 {
            p.push(format!(
                "{} deliveries to subscribers that should not get them",
                d.unexpected
            ));
        }
        if self.protocol_errors > 0 {
            p.push(format!("{} protocol errors", self.protocol_errors));
        }
        if self.foreign > 0 {
            p.push(format!("{} payloads without our stamp", self.foreign));
        }
        let bare = matches!(scenario, Scenario::Idle | Scenario::ConnectStorm);
        if !bare && self.connects_failed > 0 {
            p.push(format!("{} connections failed", self.connects_failed));
        }
        if !bare && self.dropped > 0 {
            p.push(format!(
                "{} connections dropped by the broker",
                self.dropped
            ));
        }
        p
    }

    /// Human-readable table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let bare = matches!(self.scenario.as_str(), "idle" | "connect-storm");
        let mode = match (self.target_rate, self.inflight) {
            _ if bare && self.pubs == 0 => "no publishing".to_string(),
            (Some(r), _) => format!("open loop {r} msg/s"),
            (_, Some(w)) => format!("closed loop, window {w}"),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "{} | {} | MQTT {} QoS {} | {} B | {} | {} pubs, {} subs, {} conns | {} procs x threads {}",
            self.label, self.scenario, self.mqtt, self.qos, self.payload, mode, self.pubs, self.subs, self.conns, self.procs, self.threads
        );
        let l = &self.latency_us;
        let rows: Vec<(&str, String)> = vec![
            ("duration", format!("{:.2} s", self.duration_s)),
            ("msgs/s in", format!("{:.0}", self.msgs_in_per_s)),
            ("msgs/s out", format!("{:.0}", self.msgs_out_per_s)),
            (
                "acked",
                format!(
                    "{} (unacknowledged at the end: {})",
                    self.acked, self.unacked
                ),
            ),
            (
                "latency us",
                format!(
                    "p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  (n={})",
                    l.p50, l.p99, l.p999, l.max, l.count
                ),
            ),
            (
                "connects",
                format!(
                    "{} ok, {} failed, {:.0}/s, CONNACK p50 {:.1} us p99 {:.1} us",
                    self.connects_ok,
                    self.connects_failed,
                    self.connects_per_s,
                    self.connect_latency_us.p50,
                    self.connect_latency_us.p99
                ),
            ),
            (
                "delivery",
                format!(
                    "expected {} got {} lost {} dup {} reordered {} misrouted {}",
                    self.delivery.expected,
                    self.delivery.distinct,
                    self.delivery.lost,
                    self.delivery.duplicates,
                    self.delivery.reordered,
                    self.delivery.unexpected
                ),
            ),
            (
                "errors",
                format!(
                    "protocol {} dropped {} foreign {}",
                    self.protocol_errors, self.dropped, self.foreign
                ),
            ),
            (
                "loadgen cpu",
                format!("{:.0}% of one core", self.loadgen_cpu_pct),
            ),
        ];
        for (k, v) in rows {
            let _ = writeln!(s, "  {k:<12} {v}");
        }
        if let Some(b) = &self.broker {
            let _ = writeln!(
                s,
                "  {:<12} pid {} ({} processes) cpu {:.0}%  rss {} -> {} -> {} KiB  mem/conn {:.0} B \
                 (after connecting {:.0} B)",
                "broker",
                b.pid,
                b.processes,
                b.cpu_pct,
                b.rss_before_kb,
                b.rss_ready_kb,
                b.rss_end_kb,
                b.mem_per_conn_bytes,
                b.mem_per_conn_ready_bytes
            );
        }
        if let Some(k) = &self.kernel {
            let _ = writeln!(
                s,
                "  {:<12} slab {} -> {} KiB, tcp buffers {} -> {} pages: {:.0} B/conn; \
                 machine {:.0} B/conn",
                "kernel",
                k.before.slab_kb,
                k.held.slab_kb,
                k.before.tcp_mem_pages,
                k.held.tcp_mem_pages,
                k.per_conn_bytes,
                k.machine_per_conn_bytes
            );
        }
        for p in &self.problems {
            let _ = writeln!(s, "  PROBLEM      {p}");
        }
        s
    }
}

/// The broker's figures; memory per connection with the RSS at the end of the hold if
/// `held_at_end`, else with every connection open.
fn broker_figures(probe: &BrokerProbe, held_at_end: bool, conns: u64) -> Option<BrokerFigures> {
    let pid = *probe.pids.first()?;
    let rss = |s: &Option<ProcSample>| s.map_or(0, |s| s.rss_kb);
    let cpu_pct = match (&probe.start, &probe.end) {
        (Some(a), Some(b)) => procfs::cpu_percent(a, b),
        _ => 0.0,
    };
    // Signed: a broker that returned memory of earlier runs to the OS may shrink.
    let grown = |at: &Option<ProcSample>| (rss(at) as f64 - rss(&probe.before) as f64) * 1024.0;
    let per_conn = |bytes: f64| {
        if conns > 0 {
            bytes / conns as f64
        } else {
            0.0
        }
    };
    let held = if held_at_end {
        &probe.end
    } else {
        &probe.ready
    };
    Some(BrokerFigures {
        pid,
        processes: probe.pids.len() as u32,
        rss_before_kb: rss(&probe.before),
        rss_ready_kb: rss(&probe.ready),
        rss_end_kb: rss(&probe.end),
        cpu_pct,
        mem_per_conn_bytes: per_conn(grown(held)),
        mem_per_conn_ready_bytes: per_conn(grown(&probe.ready)),
    })
}

/// The scenario's command-line name, e.g. "fan-in".
fn scenario_name(s: Scenario) -> String {
    use clap::ValueEnum;
    s.to_possible_value()
        .map_or_else(|| format!("{s:?}"), |v| v.get_name().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(a: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("x").chain(a.iter().copied())).unwrap()
    }

    fn result(lost: u64, dup: u64) -> WorkerResult {
        let mut r = WorkerResult {
            run_start_ns: 1_000_000_000,
            run_end_ns: 3_000_000_000,
            ..Default::default()
        };
        r.counters.published = 2000;
        r.counters.acked = 2000;
        r.counters.received = 1000;
        r.counters.connects_ok = 4;
        r.delivery.lost = lost;
        r.delivery.duplicates = dup;
        r
    }

    #[test]
    fn rates_over_the_publishing_window() {
        let rep = Report::new(&args(&[]), &result(0, 0), &BrokerProbe::default());
        assert_eq!(rep.msgs_in_per_s, 1000.0);
        assert_eq!(rep.msgs_out_per_s, 500.0);
        assert_eq!(rep.scenario, "pairs");
        assert!(rep.problems.is_empty());
        assert!(rep.table().contains("msgs/s in"));
    }

    #[test]
    fn strict_problems_depend_on_qos() {
        assert!(
            Report::new(&args(&["-q", "0"]), &result(5, 5), &BrokerProbe::default())
                .problems
                .is_empty()
        );
        assert_eq!(
            Report::new(&args(&["-q", "1"]), &result(5, 5), &BrokerProbe::default())
                .problems
                .len(),
            1
        );
        assert_eq!(
            Report::new(&args(&["-q", "2"]), &result(5, 5), &BrokerProbe::default())
                .problems
                .len(),
            2
        );
    }

    #[test]
    fn unacknowledged_publications_are_a_problem_at_qos_1() {
        let mut r = result(0, 0);
        r.counters.acked = 1990;
        let rep = Report::new(&args(&["-q", "1"]), &r, &BrokerProbe::default());
        assert_eq!(rep.unacked, 10);
        assert_eq!(rep.problems.len(), 1);
        assert_eq!(
            Report::new(&args(&["-q", "0"]), &r, &BrokerProbe::default()).unacked,
            0
        );
    }

    #[test]
    fn memory_per_connection() {
        let probe = BrokerProbe {
            pids: vec![1],
            before: Some(ProcSample {
                rss_kb: 1000,
                ..Default::default()
            }),
            ready: Some(ProcSample {
                rss_kb: 1004,
                ..Default::default()
            }),
            end: Some(ProcSample {
                rss_kb: 1002,
                ..Default::default()
            }),
            ..Default::default()
        };
        // Idle hold: the end of the hold counts; the reading after connecting is kept too.
        let rep = Report::new(&args(&["-s", "idle"]), &result(0, 0), &probe);
        let b = rep.broker.unwrap();
        assert_eq!(b.mem_per_conn_bytes, 512.0);
        assert_eq!(b.mem_per_conn_ready_bytes, 1024.0);
        // Any other scenario: with every connection open.
        let rep = Report::new(&args(&["-s", "fan-in"]), &result(0, 0), &probe);
        assert_eq!(rep.broker.unwrap().mem_per_conn_bytes, 1024.0);
    }

    #[test]
    fn kernel_memory_per_connection() {
        let before = KernelSample {
            slab_kb: 100,
            tcp_mem_pages: 10,
            tcp_alloc: 0,
            used_kb: 1000,
        };
        let held = KernelSample {
            slab_kb: 104,
            tcp_mem_pages: 11,
            tcp_alloc: 8,
            used_kb: 1016,
        };
        let k = KernelFigures::new(before, held, 4);
        assert_eq!(k.per_conn_bytes, (4.0 * 1024.0 + 4096.0) / 4.0);
        assert_eq!(k.machine_per_conn_bytes, 4096.0);
    }

    #[test]
    fn json_round_trip() {
        let rep = Report::new(&args(&["--max"]), &result(0, 0), &BrokerProbe::default());
        let back: Report = serde_json::from_str(&serde_json::to_string(&rep).unwrap()).unwrap();
        assert_eq!(back, rep);
        assert_eq!(back.target_rate, None);
    }
}
