//! The Prometheus text exposition (format 0.0.4) of a [`Snapshot`], built as metric families
//! of the `prometheus` crate's data model and written by its `TextEncoder`, so the format
//! (escaping, histogram buckets, `+Inf`) is a maintained crate's, not ours. The live counters
//! stay the cores' relaxed atomics; the families are built only when scraped.
//!
//! Why not `prometheus-client`: it writes only the OpenMetrics text, whose counter families
//! (`# TYPE x counter` with samples `x_total`) `promtool check metrics` of Prometheus 2.42
//! (Debian 12) rejects; Prometheus itself reads either.
//!
//! Names follow Prometheus conventions: `uringmq_` prefix, base units (`_bytes`, `_seconds`),
//! `_total` on counters, one `core` label per core and `listener` per listener.

use super::{Context, Snapshot};
use crate::api::Stats;
use crate::shard::histogram::{HistogramSnapshot, BOUNDS_US};
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{Encoder, TextEncoder};

/// A per-core figure: name, help, type, and how to read it from one core's counters.
type PerCore = (&'static str, &'static str, MetricType, fn(&Stats) -> u64);

const PER_CORE: [PerCore; 27] = {
    use MetricType::{COUNTER as C, GAUGE as G};
    [
        (
            "uringmq_connections",
            "Open client connections (CONNECT accepted).",
            G,
            |s| s.connections,
        ),
        (
            "uringmq_hibernating_connections",
            "Open connections hibernating (idle, no task).",
            G,
            |s| s.hibernating,
        ),
        (
            "uringmq_sessions",
            "Sessions, connected and offline persistent.",
            G,
            |s| s.sessions,
        ),
        (
            "uringmq_subscriptions",
            "Subscriptions, shared ones included.",
            G,
            |s| s.subscriptions,
        ),
        (
            "uringmq_shared_subscriptions",
            "Shared ($share) subscriptions.",
            G,
            |s| s.shared_subscriptions,
        ),
        (
            "uringmq_queued_messages",
            "Messages waiting in session queues.",
            G,
            |s| s.queued_messages,
        ),
        (
            "uringmq_queued_bytes",
            "Payload bytes waiting in session queues.",
            G,
            |s| s.queued_bytes,
        ),
        (
            "uringmq_inflight_messages",
            "QoS 1/2 messages sent and not yet acknowledged.",
            G,
            |s| s.inflight_messages,
        ),
        (
            "uringmq_packets_received_total",
            "MQTT packets of every type received.",
            C,
            |s| s.packets_in,
        ),
        (
            "uringmq_packets_sent_total",
            "MQTT packets of every type sent.",
            C,
            |s| s.packets_out,
        ),
        (
            "uringmq_publish_received_total",
            "PUBLISH packets received (and in-process publishes).",
            C,
            |s| s.messages_in,
        ),
        (
            "uringmq_publish_sent_total",
            "PUBLISH packets sent (and in-process deliveries).",
            C,
            |s| s.messages_out,
        ),
        (
            "uringmq_publish_received_bytes_total",
            "Payload bytes of the PUBLISH packets received.",
            C,
            |s| s.publish_bytes_in,
        ),
        (
            "uringmq_publish_sent_bytes_total",
            "Payload bytes of the PUBLISH packets sent.",
            C,
            |s| s.publish_bytes_out,
        ),
        (
            "uringmq_received_bytes_total",
            "Bytes read from client sockets.",
            C,
            |s| s.bytes_in,
        ),
        (
            "uringmq_sent_bytes_total",
            "Bytes written to client sockets.",
            C,
            |s| s.bytes_out,
        ),
        (
            "uringmq_accepted_sockets_total",
            "Sockets accepted on all listeners.",
            C,
            |s| s.sockets,
        ),
        (
            "uringmq_connects_total",
            "CONNECT packets received, accepted or not.",
            C,
            |s| s.connects,
        ),
        (
            "uringmq_protocol_errors_total",
            "Connections closed for a protocol violation.",
            C,
            |s| s.protocol_errors,
        ),
        (
            "uringmq_auth_failures_total",
            "CONNECTs refused by authentication.",
            C,
            |s| s.auth_failures,
        ),
        (
            "uringmq_auth_busy_total",
            "CONNECTs refused because too many authentications were in progress.",
            C,
            |s| s.auth_busy,
        ),
        (
            "uringmq_hook_timeouts_total",
            "Blocking checks (hooks, password hashes) that outlived hook_timeout_ms.",
            C,
            |s| s.hook_timeouts,
        ),
        (
            "uringmq_wills_denied_total",
            "Wills refused at CONNECT or dropped when due because their client may not publish them.",
            C,
            |s| s.wills_denied,
        ),
        (
            "uringmq_publish_rate_limited_total",
            "PUBLISH packets over their client's publish rate (held back, or v5 DISCONNECT 0x96).",
            C,
            |s| s.publish_rate_limited,
        ),
        (
            "uringmq_connections_rate_limited_total",
            "Sockets closed right after accept for their listener's connection rate.",
            C,
            |s| s.connections_rate_limited,
        ),
        (
            "uringmq_accept_failures_total",
            "Accepts that failed (at the descriptor limit the accept loop backs off).",
            C,
            |s| s.accept_failures,
        ),
        (
            "uringmq_detach_failures_total",
            "Idle connections that could not hibernate for want of a descriptor.",
            C,
            |s| s.detach_failures,
        ),
    ]
};

/// Renders every family.
pub(crate) fn render(ctx: &Context, snap: &Snapshot) -> String {
    let mut families: Vec<MetricFamily> = PER_CORE
        .iter()
        .map(|(name, help, ty, f)| per_core(name, help, *ty, snap, *f))
        .collect();
    families.push(dropped(snap));
    families.push(expired_sessions(snap));
    families.extend(bridges(snap));
    families.extend(broker_wide(ctx, snap));
    families.push(histograms(
        "uringmq_connect_duration_seconds",
        "Time from CONNECT received to CONNACK queued, accepted connections (authentication included).",
        &snap.connect_time,
    ));
    families.push(histograms(
        "uringmq_delivery_latency_seconds",
        "Time from a PUBLISH received to its copy written into a subscriber's connection buffer, one delivery in 64 sampled.",
        &snap.delivery_latency,
    ));
    families.push(histograms(
        "uringmq_core_timer_lag_seconds",
        "How late each core's 100 ms sweep timer fired: how long the core ran other work before it got back to its event loop.",
        &snap.timer_lag,
    ));
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
        tracing::warn!("cannot encode the metrics: {e}");
    }
    String::from_utf8(out).unwrap_or_default()
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(k, v)| {
            let mut l = LabelPair::default();
            l.set_name((*k).to_owned());
            l.set_value((*v).to_owned());
            l
        })
        .collect()
}

fn sample(ty: MetricType, value: f64, label_pairs: &[(&str, &str)]) -> Metric {
    let mut m = Metric::default();
    m.set_label(labels(label_pairs));
    if ty == MetricType::COUNTER {
        let mut c = Counter::default();
        c.set_value(value);
        m.set_counter(c);
    } else {
        let mut g = Gauge::default();
        g.set_value(value);
        m.set_gauge(g);
    }
    m
}

fn family(name: &str, help: &str, ty: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_owned());
    f.set_help(help.to_owned());
    f.set_field_type(ty);
    f.set_metric(metrics);
    f
}

fn per_core(
    name: &str,
    help: &str,
    ty: MetricType,
    snap: &Snapshot,
    f: fn(&Stats) -> u64,
) -> MetricFamily {
    let metrics = snap
        .cores
        .iter()
        .enumerate()
        .map(|(i, c)| sample(ty, f(c) as f64, &[("core", &i.to_string())]))
        .collect();
    family(name, help, ty, metrics)
}

/// Messages dropped, by core and reason.
fn dropped(snap: &Snapshot) -> MetricFamily {
    let mut metrics = Vec::new();
    for (i, c) in snap.cores.iter().enumerate() {
        let core = i.to_string();
        for (reason, v) in [
            ("outbound_full", c.dropped_qos0),
            ("queue_full", c.dropped_queue_full),
            ("expired", c.expired),
        ] {
            let pairs = [("core", core.as_str()), ("reason", reason)];
            metrics.push(sample(MetricType::COUNTER, v as f64, &pairs));
        }
    }
    family(
        "uringmq_dropped_messages_total",
        "Messages dropped: outbound_full (QoS 0 to a connection over max_outbound_bytes), queue_full (a session queue at its bound), expired (message expiry interval passed).",
        MetricType::COUNTER,
        metrics,
    )
}

/// Per-bridge figures, labelled with the bridge's name (`bridge::METRICS`). None without
/// bridges: the encoder refuses a family with no metric.
fn bridges(snap: &Snapshot) -> Vec<MetricFamily> {
    if snap.bridges.is_empty() {
        return Vec::new();
    }
    crate::bridge::METRICS
        .iter()
        .map(|(name, help, counter, f)| {
            let ty = if *counter {
                MetricType::COUNTER
            } else {
                MetricType::GAUGE
            };
            let metrics = (snap.bridges.iter())
                .map(|b| sample(ty, f(b) as f64, &[("bridge", &b.name)]))
                .collect();
            family(name, help, ty, metrics)
        })
        .collect()
}

fn expired_sessions(snap: &Snapshot) -> MetricFamily {
    per_core(
        "uringmq_sessions_expired_total",
        "Persistent sessions ended by their expiry interval.",
        MetricType::COUNTER,
        snap,
        |s| s.sessions_expired,
    )
}

/// Figures with no per-core meaning: retained messages (every core holds the same replica),
/// per-listener connections, uptime, build, readiness.
fn broker_wide(ctx: &Context, snap: &Snapshot) -> Vec<MetricFamily> {
    let t = snap.total();
    let g = MetricType::GAUGE;
    let one = |name: &str, help: &str, v: f64, pairs: &[(&str, &str)]| {
        family(name, help, g, vec![sample(g, v, pairs)])
    };
    let listeners = ctx
        .endpoints
        .iter()
        .map(|e| sample(g, e.open() as f64, &[("listener", &e.name)]))
        .collect();
    let uptime = ctx.started.elapsed().as_secs_f64();
    vec![
        one(
            "uringmq_retained_messages",
            "Retained messages ($SYS topics not included).",
            t.retained as f64,
            &[],
        ),
        one(
            "uringmq_retained_bytes",
            "Payload bytes of the retained messages.",
            t.retained_bytes as f64,
            &[],
        ),
        family(
            "uringmq_listener_connections",
            "Open sockets per listener.",
            g,
            listeners,
        ),
        one(
            "uringmq_uptime_seconds",
            "Seconds since the broker started.",
            uptime,
            &[],
        ),
        one(
            "uringmq_cores",
            "Cores (threads) running.",
            snap.cores.len() as f64,
            &[],
        ),
        one(
            "uringmq_ready",
            "1 when every core answered this scrape's snapshot in time.",
            f64::from(u8::from(snap.all_answered)),
            &[],
        ),
        one(
            "uringmq_build_info",
            "Always 1; the version is a label.",
            1.0,
            &[("version", env!("CARGO_PKG_VERSION"))],
        ),
    ]
}

fn histograms(name: &str, help: &str, per_core: &[HistogramSnapshot]) -> MetricFamily {
    let metrics = per_core
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let mut hist = Histogram::default();
            hist.set_sample_count(h.count);
            hist.set_sample_sum(h.sum_secs);
            let buckets = BOUNDS_US
                .iter()
                .zip(&h.cumulative)
                .map(|(us, n)| {
                    let mut b = Bucket::default();
                    b.set_upper_bound(*us as f64 / 1e6);
                    b.set_cumulative_count(*n);
                    b
                })
                .collect();
            hist.set_bucket(buckets);
            let mut m = Metric::default();
            m.set_label(labels(&[("core", &i.to_string())]));
            m.set_histogram(hist);
            m
        })
        .collect();
    family(name, help, MetricType::HISTOGRAM, metrics)
}
