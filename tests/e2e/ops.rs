//! Operations: the `$SYS/broker/...` topics, the metrics endpoint (`/metrics`, `/healthz`,
//! `/readyz`) and `Broker::stats`, all checked against traffic whose every count is known.

use crate::support::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Reads `$SYS` PUBLISHes until `want` holds for the latest values, or panics after 10 s.
fn sys_until(
    c: &mut Client,
    seen: &mut HashMap<String, String>,
    want: impl Fn(&HashMap<String, String>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !want(seen) {
        assert!(
            Instant::now() < deadline,
            "$SYS never matched; last values: {seen:#?}"
        );
        if let Some(Packet::Publish(p)) = c.recv_within(Duration::from_millis(200)) {
            let payload = String::from_utf8(p.payload.to_vec()).unwrap();
            seen.insert(p.topic.to_string(), payload);
        }
    }
}

fn is(seen: &HashMap<String, String>, topic: &str, value: &str) -> bool {
    seen.get(&format!("$SYS/broker/{topic}"))
        .map(String::as_str)
        == Some(value)
}

/// Known traffic: `pub` sends 3 QoS 1 messages of 10 bytes to `t/x` and one retained message;
/// `sub` (on `t/#`) gets the three. The `$SYS` topics carry the counts, and `#` gets none of them.
#[test]
fn sys_topics_report_known_traffic_and_wildcards_do_not_match_them() {
    let b = broker_with(|c| c.sys_interval_secs = 1);
    let addr = b.local_addr();
    let mut sub = Client::connect(addr, Protocol::V3_1_1, "sub");
    sub.subscribe("t/#", QoS::AtMostOnce);
    let mut all = Client::connect(addr, Protocol::V5, "all");
    all.subscribe("#", QoS::AtMostOnce);
    let mut publ = Client::connect(addr, Protocol::V5, "pub");
    for _ in 0..3 {
        publ.publish("t/x", b"0123456789", QoS::AtLeastOnce, false);
    }
    publ.publish("r/1", b"kept", QoS::AtLeastOnce, true);
    for _ in 0..3 {
        assert_eq!(&sub.recv_publish().payload[..], b"0123456789");
    }
    let mut watch = Client::connect(addr, Protocol::V3_1_1, "watch");
    watch.subscribe("$SYS/#", QoS::AtMostOnce);
    let mut seen = HashMap::new();
    let core_sum = |s: &HashMap<String, String>, name: &str| -> u64 {
        (0..2)
            .filter_map(|i| s.get(&format!("$SYS/broker/cores/{i}/{name}")))
            .map(|v| v.parse::<u64>().unwrap())
            .sum()
    };
    sys_until(&mut watch, &mut seen, |s| {
        // Per core too: the two cores' figures add up.
        core_sum(s, "clients/connected") == 4
            && core_sum(s, "publish/messages/received") == 4
            && is(s, "publish/messages/received", "4")
            && is(s, "clients/connected", "4")
            && is(s, "clients/total", "4")
            && is(s, "clients/disconnected", "0")
            && is(s, "retained messages/count", "1")
            && is(s, "subscriptions/count", "3")
            && is(s, "publish/bytes/received", "34")
            && is(s, "clients/maximum", "4")
    });
    assert_eq!(seen["$SYS/broker/version"], "uringmq version 0.1.0");
    assert!(seen["$SYS/broker/uptime"].ends_with(" seconds"));
    for name in ["messages", "publish", "bytes", "sockets", "connections"] {
        let dir = if matches!(name, "sockets" | "connections") {
            String::new()
        } else {
            "/received".into()
        };
        let v = &seen[&format!("$SYS/broker/load/{name}{dir}/1min")];
        assert!(v.parse::<f64>().is_ok() && v.contains('.'), "{name}: {v}");
    }
    // Retained: a late subscriber gets the current values at once.
    let mut late = Client::connect(addr, Protocol::V5, "late");
    late.subscribe("$SYS/broker/version", QoS::AtMostOnce);
    let p = late.recv_publish();
    assert!(p.retain, "$SYS topics are retained, as Mosquitto's");
    // `#` got the retained r/1 and the t/x messages, never a `$SYS` topic [MQTT-4.7.2-1].
    while let Some(Packet::Publish(p)) = all.recv_within(QUIET) {
        assert!(!p.topic.starts_with('$'), "# matched {}", p.topic);
    }
    assert_eq!(
        b.stats().retained,
        1,
        "$SYS topics are not users' retained messages"
    );
}

const ACL_WILDCARD_ONLY: &str = "topic read #\ntopic write #\n";
const ACL_WITH_SYS: &str = "topic read #\ntopic read $SYS/#\n";

/// `topic read #` does not grant `$SYS`; naming it does.
#[test]
fn sys_topics_obey_the_acl() {
    for (acl, allowed) in [(ACL_WILDCARD_ONLY, false), (ACL_WITH_SYS, true)] {
        let path = std::env::temp_dir().join(format!(
            "uringmq-sys-acl-{}-{}",
            std::process::id(),
            u8::from(allowed)
        ));
        std::fs::write(&path, acl).unwrap();
        let b = broker_with(|c| {
            c.sys_interval_secs = 1;
            c.acl_file = Some(path);
        });
        let mut c = Client::connect(b.local_addr(), Protocol::V5, "watcher");
        let codes = c.subscribe_with(&[("$SYS/#", Default::default())], Default::default());
        if allowed {
            assert_eq!(codes, [ReasonCode::SUCCESS]);
            assert!(c.recv_publish().topic.starts_with("$SYS/broker/"));
        } else {
            assert_eq!(codes, [ReasonCode::NOT_AUTHORIZED], "acl {acl:?}");
            // Nor through a filter the ACL grants.
            c.subscribe("#", QoS::AtMostOnce);
            c.expect_nothing();
        }
    }
}

/// One HTTP/1.1 GET; returns the status code and the body.
pub(crate) fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("metrics endpoint accepts");
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The sum over every sample of `name` (all labels) in a Prometheus text.
pub(crate) fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// Known traffic on a broker without `$SYS`: every counter that can be predicted is, and the
/// Prometheus text, `Broker::stats` and the endpoint agree.
#[test]
fn metrics_endpoint_and_stats_agree_on_known_traffic() {
    let b = broker_with(|c| {
        c.sys_interval_secs = 0;
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    });
    let http = b.metrics_addr().expect("metrics endpoint bound");
    assert_eq!(get(http, "/healthz").0, 200);
    assert_eq!(get(http, "/readyz"), (200, "ready\n".into()));
    assert_eq!(get(http, "/nothing").0, 404);

    let n = 5u64;
    let addr = b.local_addr();
    let mut sub = Client::connect(addr, Protocol::V5, "sub");
    sub.subscribe("k/#", QoS::AtLeastOnce);
    sub.subscribe("$share/g/k/#", QoS::AtMostOnce);
    let mut publ = Client::connect(addr, Protocol::V3_1_1, "pub");
    for _ in 0..n {
        publ.publish("k/1", b"12345678", QoS::AtLeastOnce, false);
    }
    publ.publish("k/kept", b"abc", QoS::AtMostOnce, true);
    // Each message reaches `sub` twice: its own filter and its shared group.
    for _ in 0..2 * (n + 1) {
        sub.recv_publish();
    }
    // The round trips order everything before them on each connection.
    sub.ping();
    publ.ping();

    let s = b.stats();
    let deliveries = 2 * (n + 1);
    // pub: CONNECT, n + 1 PUBLISH, PINGREQ; sub: CONNECT, 2 SUBSCRIBE, a PUBACK per QoS 1
    // delivery (the n on `k/#`; the group's copies are QoS 0), PINGREQ.
    assert_eq!(s.packets_in, (n + 3) + (4 + n));
    // pub: CONNACK, n PUBACK, PINGRESP; sub: CONNACK, 2 SUBACK, the deliveries, PINGRESP.
    assert_eq!(s.packets_out, (n + 2) + (4 + deliveries));
    let expected = [
        ("connections", s.connections, 2),
        ("sessions", s.sessions, 2),
        ("subscriptions", s.subscriptions, 2),
        ("shared_subscriptions", s.shared_subscriptions, 1),
        ("retained", s.retained, 1),
        ("retained_bytes", s.retained_bytes, 3),
        ("messages_in", s.messages_in, n + 1),
        ("messages_out", s.messages_out, deliveries),
        ("publish_bytes_in", s.publish_bytes_in, 8 * n + 3),
        ("publish_bytes_out", s.publish_bytes_out, 2 * (8 * n + 3)),
        ("connects", s.connects, 2),
        ("sockets", s.sockets, 2),
        ("queued_messages", s.queued_messages, 0),
        ("inflight_messages", s.inflight_messages, 0),
        ("dropped_qos0", s.dropped_qos0, 0),
    ];
    for (name, got, want) in expected {
        assert_eq!(got, want, "{name}");
    }

    let (status, text) = get(http, "/metrics");
    assert_eq!(status, 200);
    let embedded = b.metrics_text();
    let pairs = [
        ("uringmq_connections", s.connections),
        ("uringmq_sessions", s.sessions),
        ("uringmq_subscriptions", s.subscriptions),
        ("uringmq_shared_subscriptions", s.shared_subscriptions),
        ("uringmq_retained_messages", s.retained),
        ("uringmq_retained_bytes", s.retained_bytes),
        ("uringmq_publish_received_total", s.messages_in),
        ("uringmq_publish_sent_total", s.messages_out),
        ("uringmq_publish_received_bytes_total", s.publish_bytes_in),
        ("uringmq_publish_sent_bytes_total", s.publish_bytes_out),
        ("uringmq_packets_sent_total", s.packets_out),
        ("uringmq_connects_total", s.connects),
        ("uringmq_accepted_sockets_total", s.sockets),
        ("uringmq_listener_connections", 2),
        ("uringmq_connect_duration_seconds_count", 2),
        ("uringmq_dropped_messages_total", 0),
        ("uringmq_ready", 1),
    ];
    for (name, want) in pairs {
        assert_eq!(metric(&text, name), want as f64, "{name}");
        assert_eq!(
            metric(&embedded, name),
            want as f64,
            "{name} (metrics_text)"
        );
    }
    // The scrapes are HTTP, not MQTT: the MQTT counters did not move.
    assert_eq!(
        metric(&text, "uringmq_packets_received_total"),
        s.packets_in as f64
    );
    // Each core's sweep records its timer lag every 100 ms.
    let deadline = Instant::now() + WAIT;
    while metric(&b.metrics_text(), "uringmq_core_timer_lag_seconds_count") < 2.0 {
        assert!(Instant::now() < deadline, "no timer lag recorded");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(text.contains("uringmq_connections{core=\"1\"}"));
    assert!(text.contains("uringmq_dropped_messages_total{core=\"0\",reason=\"queue_full\"} 0"));
    assert!(text.contains("# TYPE uringmq_connect_duration_seconds histogram"));
}

/// The endpoint's port is taken while the broker runs (a second broker fails to start, naming
/// it) and free once it stopped.
#[test]
fn metrics_port_conflict_fails_the_start_and_stop_frees_it() {
    let mut b = broker_with(|c| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap()));
    let http = b.metrics_addr().unwrap();
    let mut clash = config();
    clash.metrics_listen = Some(http);
    let err = Broker::builder(clash).start().err().expect("port in use");
    assert!(err.to_string().contains(&http.to_string()), "{err}");
    b.stop();
    assert!(
        TcpStream::connect(http).is_err(),
        "stopped endpoint still accepts"
    );
}

/// The delivery latency histogram samples one delivery in 64, per core: 128 deliveries to one
/// subscriber are two observations, each no longer than the whole exchange took.
#[test]
fn delivery_latency_is_sampled_one_in_64() {
    let b = broker_with(|c| c.sys_interval_secs = 0);
    let mut sub = Client::connect(b.local_addr(), Protocol::V5, "sub");
    sub.subscribe("lat", QoS::AtMostOnce);
    let mut publ = Client::connect(b.local_addr(), Protocol::V5, "pub");
    let started = Instant::now();
    for _ in 0..128 {
        publ.publish("lat", b"x", QoS::AtMostOnce, false);
    }
    for _ in 0..128 {
        sub.recv_publish();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let text = b.metrics_text();
    assert_eq!(metric(&text, "uringmq_delivery_latency_seconds_count"), 2.0);
    let sum = metric(&text, "uringmq_delivery_latency_seconds_sum");
    assert!(sum > 0.0 && sum <= 2.0 * elapsed, "{sum} s of {elapsed} s");
}

/// `sys_interval_secs` far beyond any deadline: the first tick is published, the next
/// deadline does not overflow (the ops thread answers after it), and the broker stops at once.
#[test]
fn a_huge_sys_interval_publishes_once_and_stops_promptly() {
    let mut b = broker_with(|c| {
        c.sys_interval_secs = u64::MAX;
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    });
    // The first tick is retained (or live, if it comes after the SUBSCRIBE): one or the
    // other, whichever core the client is on (`shard/fresh.rs`).
    let mut c = Client::connect(b.local_addr(), Protocol::V5, "w");
    c.subscribe("$SYS/broker/version", QoS::AtMostOnce);
    let seen = match c.recv_within(WAIT) {
        Some(Packet::Publish(p)) => Some(p.topic.to_string()),
        _ => None,
    };
    assert_eq!(seen.as_deref(), Some("$SYS/broker/version"));
    // The ops thread lives on after its first tick.
    assert_eq!(get(b.metrics_addr().unwrap(), "/healthz").0, 200);
    let t = Instant::now();
    b.stop();
    assert!(t.elapsed() < WAIT, "stop took {:?}", t.elapsed());
}
