//! How bridges show in `/metrics` and `$SYS` (the ops thread reads [`BridgeState`]s).

use super::BridgeState;

/// A metric of every bridge: name, help, counter (else gauge), value.
pub(crate) type BridgeMetric = (&'static str, &'static str, bool, fn(&BridgeState) -> u64);

/// The per-bridge metric families, labelled `bridge="<name>"`.
pub(crate) const METRICS: [BridgeMetric; 5] = [
    (
        "uringmq_bridge_connected",
        "1 while the bridge is connected to its remote broker (and subscribed there).",
        false,
        |b| u64::from(b.connected),
    ),
    (
        "uringmq_bridge_queued_messages",
        "Messages waiting for the remote broker, in flight included.",
        false,
        |b| b.queued,
    ),
    (
        "uringmq_bridge_sent_messages_total",
        "Messages published to the remote broker (QoS 1/2: acknowledged by it).",
        true,
        |b| b.sent,
    ),
    (
        "uringmq_bridge_received_messages_total",
        "Messages received from the remote broker and published here.",
        true,
        |b| b.received,
    ),
    (
        "uringmq_bridge_dropped_messages_total",
        "Messages dropped by the bridge: queue full, QoS 0 while disconnected, too large for the remote, or inbound and denied by the ACL.",
        true,
        |b| b.dropped,
    ),
];

/// `$SYS/broker/connection/<name>/state` (Mosquitto's: 1 connected, 0 not) and uringmq's
/// `$SYS/broker/bridges/<name>/{queued,sent,received,dropped}`.
pub(crate) fn sys_values(bridges: &[BridgeState], values: &mut Vec<(String, String)>) {
    for b in bridges {
        let state = u8::from(b.connected).to_string();
        values.push((format!("$SYS/broker/connection/{}/state", b.name), state));
        for (what, v) in [
            ("queued", b.queued),
            ("sent", b.sent),
            ("received", b.received),
            ("dropped", b.dropped),
        ] {
            values.push((
                format!("$SYS/broker/bridges/{}/{what}", b.name),
                v.to_string(),
            ));
        }
    }
}
