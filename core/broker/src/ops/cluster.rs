//! The cluster's families in `/metrics` (built from the cluster thread's [`ClusterStatus`]
//! when scraped, `[cluster]` only): registration, nodes seen, the client-id directory's
//! size, and per link (`peer`, `direction`) its state, connects, frames, messages, bytes,
//! resends and drops, and per peer its routes. `uringmq cluster status` reads
//! `uringmq_cluster_link_up` from here.

use super::metrics::{family, sample};
use crate::cluster::status::{ClusterStatus, LinkStatus};
use prometheus::proto::{MetricFamily, MetricType};

/// A per-link figure: name, help, type, how to read it.
type PerLink = (
    &'static str,
    &'static str,
    MetricType,
    fn(&LinkStatus) -> u64,
);

const PER_LINK: [PerLink; 8] = {
    use MetricType::{COUNTER as C, GAUGE as G};
    [
        (
            "uringmq_cluster_link_up",
            "Whether the link with a peer is up (authenticated, answering), per direction.",
            G,
            |l| u64::from(l.up),
        ),
        (
            "uringmq_cluster_link_connects_total",
            "Times the link came up.",
            C,
            |l| l.connects,
        ),
        (
            "uringmq_cluster_link_frames_sent_total",
            "Frames sent on the link.",
            C,
            |l| l.frames_out,
        ),
        (
            "uringmq_cluster_link_frames_received_total",
            "Frames received on the link.",
            C,
            |l| l.frames_in,
        ),
        (
            "uringmq_cluster_link_messages_total",
            "Messages (PUBLISH, retained changes) queued to the peer (outbound) or received \
             from it (inbound).",
            C,
            |l| l.messages,
        ),
        (
            "uringmq_cluster_link_bytes_total",
            "Bytes of those messages, frames included.",
            C,
            |l| l.bytes,
        ),
        (
            "uringmq_cluster_link_resent_total",
            "Messages written again after the link came back (outbound).",
            C,
            |l| l.resent,
        ),
        (
            "uringmq_cluster_link_dropped_total",
            "Messages dropped: the link's queue was full, or QoS 0 while it was down (outbound).",
            C,
            |l| l.dropped,
        ),
    ]
};

/// Every cluster family of `s`.
pub(super) fn families(s: &ClusterStatus) -> Vec<MetricFamily> {
    use MetricType::{COUNTER, GAUGE};
    let mut out = vec![
        family(
            "uringmq_cluster_registered",
            "Whether this node's key is in etcd (its etcd session is up).",
            GAUGE,
            vec![sample(GAUGE, f64::from(u8::from(s.registered)), &[])],
        ),
        family(
            "uringmq_cluster_etcd_sessions_total",
            "etcd sessions this node started: more than one means it lost its session and \
             registered again.",
            COUNTER,
            vec![sample(COUNTER, s.sessions as f64, &[])],
        ),
        family(
            "uringmq_cluster_nodes",
            "Nodes registered in etcd, this one included, as this node sees them.",
            GAUGE,
            vec![sample(GAUGE, s.nodes.len() as f64, &[])],
        ),
        family(
            "uringmq_cluster_link_auth_failures_total",
            "Link handshakes refused (no cluster secret, another version, a name clash).",
            COUNTER,
            vec![sample(COUNTER, s.link_auth_failures as f64, &[])],
        ),
        family(
            "uringmq_cluster_client_ids",
            "Client ids this node owns and records the node of (their session lives there); \
             an entry goes when its session ends or ownership moves.",
            GAUGE,
            vec![sample(GAUGE, s.client_ids as f64, &[])],
        ),
    ];
    let routes = s
        .links
        .iter()
        .map(|(peer, l)| sample(GAUGE, l.routes as f64, &[("peer", peer.as_str())]))
        .collect();
    out.push(family(
        "uringmq_cluster_routes",
        "Filters and shared groups a peer has subscribers for, as this node knows them.",
        GAUGE,
        routes,
    ));
    for (name, help, ty, f) in PER_LINK {
        let mut samples = Vec::new();
        for (peer, links) in &s.links {
            for (dir, l) in [("outbound", &links.outbound), ("inbound", &links.inbound)] {
                let labels = [("peer", peer.as_str()), ("direction", dir)];
                samples.push(sample(ty, f(l) as f64, &labels));
            }
        }
        out.push(family(name, help, ty, samples));
    }
    out
}
