//! The `$SYS/broker/...` topics: Mosquitto's names, payloads and meanings (its `sys_tree.c`),
//! so dashboards and `mosquitto_sub -t '$SYS/#' -v` written for Mosquitto work unchanged, plus
//! what only uringmq has under `$SYS/broker/cores/N/...` and drops by reason.
//!
//! As Mosquitto does: every topic is retained, a value is published only when it changed since
//! the last tick (so a retained topic always holds the current value), the uptime every tick,
//! the version once; load averages are exponentially decaying per-minute rates over 1, 5 and
//! 15 minutes, starting at 0, formatted with two decimals.
//!
//! Where the figures differ from Mosquitto's, it is because the broker differs:
//! `clients/total` counts sessions, connected or not (Mosquitto's contexts by client id);
//! `messages/stored` (and its alias `store/messages/count`) counts retained messages plus the
//! messages held for sessions, queued and in flight, one per session that holds it (Mosquitto
//! stores a message once, however many sessions reference it); `store/messages/bytes` is the
//! payload bytes of retained and queued messages; there is no `heap/...` (Mosquitto has it
//! only when built with memory tracking).

use super::Snapshot;
use crate::api::Stats;
use std::collections::HashMap;
use std::time::Instant;

/// Reads one counter from the summed stats.
type Counter = fn(&Stats) -> u64;

/// Each load topic (`$SYS/broker/load/<name>/<window>`) and the counter it is the rate of.
const LOADS: [(&str, Counter); 9] = [
    ("messages/received", |s| s.packets_in),
    ("messages/sent", |s| s.packets_out),
    ("publish/dropped", dropped),
    ("publish/received", |s| s.messages_in),
    ("publish/sent", |s| s.messages_out),
    ("bytes/received", |s| s.bytes_in),
    ("bytes/sent", |s| s.bytes_out),
    ("sockets", |s| s.sockets),
    ("connections", |s| s.connects),
];

/// The averaging windows, seconds, and their topic suffixes.
const WINDOWS: [(f64, &str); 3] = [(60.0, "1min"), (300.0, "5min"), (900.0, "15min")];

fn dropped(s: &Stats) -> u64 {
    s.dropped_qos0 + s.dropped_queue_full + s.expired
}

/// State kept between ticks.
pub(crate) struct SysTree {
    started: Instant,
    /// The payload last published per topic.
    last: HashMap<String, String>,
    /// Load averages, `[counter][window]`.
    loads: [[f64; 3]; LOADS.len()],
    /// The counters at the previous tick, and when.
    prev: Option<(Instant, [u64; LOADS.len()])>,
    /// Most sessions seen at a tick (`clients/maximum`).
    max_clients: u64,
}

impl SysTree {
    pub(crate) fn new(started: Instant) -> Self {
        SysTree {
            started,
            last: HashMap::new(),
            loads: [[0.0; 3]; LOADS.len()],
            prev: None,
            max_clients: 0,
        }
    }

    /// The topics to publish now, with their payloads.
    pub(crate) fn tick(&mut self, snap: &Snapshot, now: Instant) -> Vec<(String, String)> {
        let t = snap.total();
        let mut out = Vec::new();
        if self.prev.is_none() {
            let version = format!("uringmq version {}", env!("CARGO_PKG_VERSION"));
            out.push(("$SYS/broker/version".to_owned(), version));
        }
        let uptime = now.saturating_duration_since(self.started).as_secs();
        out.push(("$SYS/broker/uptime".to_owned(), format!("{uptime} seconds")));
        let mut values = broker_values(&t, &mut self.max_clients);
        self.update_loads(&t, now, &mut values);
        for (i, c) in snap.cores.iter().enumerate() {
            core_values(i, c, &mut values);
        }
        crate::bridge::sys_values(&snap.bridges, &mut values);
        for (topic, payload) in values {
            if self.last.get(&topic) != Some(&payload) {
                self.last.insert(topic.clone(), payload.clone());
                out.push((topic, payload));
            }
        }
        out
    }

    fn update_loads(&mut self, t: &Stats, now: Instant, values: &mut Vec<(String, String)>) {
        let current = LOADS.map(|(_, f)| f(t));
        if let Some((at, prev)) = self.prev {
            let dt = now.saturating_duration_since(at).as_secs_f64();
            if dt > 0.0 {
                for (i, load) in self.loads.iter_mut().enumerate() {
                    let per_minute = current[i].saturating_sub(prev[i]) as f64 * 60.0 / dt;
                    for (w, (secs, _)) in WINDOWS.iter().enumerate() {
                        let decay = (-dt / secs).exp();
                        load[w] = per_minute + decay * (load[w] - per_minute);
                    }
                }
            }
        }
        self.prev = Some((now, current));
        for (i, (name, _)) in LOADS.iter().enumerate() {
            for (w, (_, suffix)) in WINDOWS.iter().enumerate() {
                let topic = format!("$SYS/broker/load/{name}/{suffix}");
                values.push((topic, format!("{:.2}", self.loads[i][w])));
            }
        }
    }
}

/// Mosquitto's broker-wide figures (and their aliases), plus uringmq's drops by reason and
/// hibernated connections.
fn broker_values(t: &Stats, max_clients: &mut u64) -> Vec<(String, String)> {
    *max_clients = (*max_clients).max(t.sessions);
    let stored = t.retained + t.queued_messages + t.inflight_messages;
    let disconnected = t.sessions.saturating_sub(t.connections);
    let figures: [(&str, u64); 32] = [
        ("clients/total", t.sessions),
        ("clients/maximum", *max_clients),
        ("clients/connected", t.connections),
        ("clients/active", t.connections),
        ("clients/disconnected", disconnected),
        ("clients/inactive", disconnected),
        ("clients/expired", t.sessions_expired),
        ("clients/hibernated", t.hibernating),
        ("messages/stored", stored),
        ("store/messages/count", stored),
        ("store/messages/bytes", t.retained_bytes + t.queued_bytes),
        ("subscriptions/count", t.subscriptions),
        ("shared_subscriptions/count", t.shared_subscriptions),
        ("retained messages/count", t.retained),
        ("messages/received", t.packets_in),
        ("messages/sent", t.packets_out),
        ("bytes/received", t.bytes_in),
        ("bytes/sent", t.bytes_out),
        ("publish/messages/received", t.messages_in),
        ("publish/messages/sent", t.messages_out),
        ("publish/messages/dropped", dropped(t)),
        ("publish/messages/dropped/outbound_full", t.dropped_qos0),
        ("publish/messages/dropped/queue_full", t.dropped_queue_full),
        ("publish/messages/dropped/expired", t.expired),
        ("publish/bytes/received", t.publish_bytes_in),
        ("publish/bytes/sent", t.publish_bytes_out),
        ("connections/socket/count", t.sockets),
        ("clients/refused/auth_busy", t.auth_busy),
        ("clients/refused/rate_limited", t.connections_rate_limited),
        ("publish/messages/rate_limited", t.publish_rate_limited),
        ("wills/denied", t.wills_denied),
        ("hooks/timeouts", t.hook_timeouts),
    ];
    figures
        .iter()
        .map(|(name, v)| (format!("$SYS/broker/{name}"), v.to_string()))
        .collect()
}

/// One core's own figures, under `$SYS/broker/cores/N/`.
fn core_values(i: usize, c: &Stats, values: &mut Vec<(String, String)>) {
    let figures: [(&str, u64); 11] = [
        ("clients/connected", c.connections),
        ("clients/hibernated", c.hibernating),
        ("clients/total", c.sessions),
        ("messages/received", c.packets_in),
        ("messages/sent", c.packets_out),
        ("publish/messages/received", c.messages_in),
        ("publish/messages/sent", c.messages_out),
        ("bytes/received", c.bytes_in),
        ("bytes/sent", c.bytes_out),
        ("subscriptions/count", c.subscriptions),
        (
            "store/messages/count",
            c.queued_messages + c.inflight_messages,
        ),
    ];
    for (name, v) in figures {
        values.push((format!("$SYS/broker/cores/{i}/{name}"), v.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn snap(cores: Vec<Stats>) -> Snapshot {
        Snapshot {
            cores,
            connect_time: Vec::new(),
            timer_lag: Vec::new(),
            delivery_latency: Vec::new(),
            all_answered: true,
            bridges: Vec::new(),
        }
    }

    #[test]
    fn publishes_changes_only_and_mosquitto_load_averages() {
        let start = Instant::now();
        let mut tree = SysTree::new(start);
        let core = Stats {
            messages_in: 0,
            ..Stats::default()
        };
        let first = tree.tick(&snap(vec![core.clone()]), start);
        let find = |v: &[(String, String)], t: &str| {
            v.iter().find(|(k, _)| k == t).map(|(_, p)| p.clone())
        };
        assert_eq!(
            find(&first, "$SYS/broker/version").unwrap(),
            "uringmq version 0.1.0"
        );
        assert_eq!(
            find(&first, "$SYS/broker/load/publish/received/1min").unwrap(),
            "0.00"
        );
        assert_eq!(
            find(&first, "$SYS/broker/cores/0/clients/connected").unwrap(),
            "0"
        );
        // 60 PUBLISH in 60 s: the per-minute rate is 60; the 1-minute average moves
        // (1 - e^-1) of the way there, as Mosquitto's calc_load does.
        let busy = Stats {
            messages_in: 60,
            ..Stats::default()
        };
        let next = tree.tick(&snap(vec![busy]), start + Duration::from_secs(60));
        assert_eq!(
            find(&next, "$SYS/broker/publish/messages/received").unwrap(),
            "60"
        );
        let want = 60.0 * (1.0 - (-1.0f64).exp());
        assert_eq!(
            find(&next, "$SYS/broker/load/publish/received/1min").unwrap(),
            format!("{want:.2}")
        );
        assert_eq!(find(&next, "$SYS/broker/uptime").unwrap(), "60 seconds");
        assert!(find(&next, "$SYS/broker/version").is_none(), "static: once");
        assert!(
            find(&next, "$SYS/broker/clients/connected").is_none(),
            "unchanged values are not published again"
        );
    }
}
