//! What the cluster thread knows, for [`crate::Broker::cluster_status`], `/metrics` and
//! `uringmq cluster status`. Written by the cluster thread, read by whoever asks; a mutex is
//! fine here, off every core's path.

use super::membership::Members;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

/// A node as registered in etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// Its name.
    pub name: String,
    /// `host:port` of its node-to-node links.
    pub addr: String,
    /// When it started (seconds since the Unix epoch).
    pub started: u64,
}

/// One direction of the link with a peer: the connection this node dialed (outbound) or the
/// one the peer dialed (inbound).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkStatus {
    /// Whether the link is up (authenticated and alive).
    pub up: bool,
    /// How many times it came up.
    pub connects: u64,
    /// When it last came up or went down.
    pub since: Option<SystemTime>,
    /// Frames sent on it.
    pub frames_out: u64,
    /// Frames received on it.
    pub frames_in: u64,
    /// Messages (PUBLISH and retained changes) queued to send (outbound) or received
    /// (inbound, duplicates of a resend not counted).
    pub messages: u64,
    /// Their bytes, frames included.
    pub bytes: u64,
    /// Outbound: messages written again after the link came back.
    pub resent: u64,
    /// Outbound: messages dropped (the send queue was full, or QoS 0 while the link was down).
    pub dropped: u64,
}

/// The links with one peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerLinks {
    /// The connection this node dials.
    pub outbound: LinkStatus,
    /// The connection the peer dials.
    pub inbound: LinkStatus,
    /// Filters and shared groups the peer has subscribers for (its routes, as this node knows
    /// them).
    pub routes: u64,
}

/// This node's view of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterStatus {
    /// This node's name.
    pub name: String,
    /// Whether this node's key is in etcd now (its etcd session is up).
    pub registered: bool,
    /// etcd sessions this node started: more than one means it lost its session (etcd
    /// restarted or unreachable) and registered again.
    pub sessions: u64,
    /// The registered nodes, this one included, by name.
    pub nodes: Vec<NodeStatus>,
    /// The links with every other node seen, by peer name.
    pub links: BTreeMap<String, PeerLinks>,
    /// Link handshakes refused (bad secret, another version, a name clash).
    pub link_auth_failures: u64,
    /// Client ids in this node's directory: those it owns whose latest CONNECT it recorded
    /// and whose session has not ended (`clientids.rs`).
    pub client_ids: u64,
}

impl ClusterStatus {
    /// Whether both directions of the link with `peer` are up.
    pub fn link_up(&self, peer: &str) -> bool {
        self.links
            .get(peer)
            .is_some_and(|l| l.outbound.up && l.inbound.up)
    }

    /// The names of the registered nodes.
    pub fn node_names(&self) -> Vec<&str> {
        self.nodes.iter().map(|n| n.name.as_str()).collect()
    }
}

/// Which direction of a link.
#[derive(Clone, Copy, Debug)]
pub enum Direction {
    /// Dialed by this node.
    Outbound,
    /// Dialed by the peer.
    Inbound,
}

/// The shared status, updated by the cluster thread's tasks.
#[derive(Default)]
pub struct StatusBoard(Mutex<ClusterStatus>);

impl StatusBoard {
    /// A board for node `name`.
    pub fn new(name: &str) -> Self {
        StatusBoard(Mutex::new(ClusterStatus {
            name: name.to_owned(),
            ..Default::default()
        }))
    }

    fn with<R>(&self, f: impl FnOnce(&mut ClusterStatus) -> R) -> R {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s)
    }

    /// A copy of the status.
    pub fn snapshot(&self) -> ClusterStatus {
        self.with(|s| s.clone())
    }

    /// Whether this node's key is in etcd (`true`: a session started).
    pub fn set_registered(&self, on: bool) {
        self.with(|s| {
            s.registered = on;
            s.sessions += u64::from(on);
        });
    }

    /// The members seen in etcd; links of peers outside the view are forgotten, but for a link
    /// the peer dialed that still serves: a peer may dial this node before this node's watch
    /// shows it (a node that joins dials everyone at once), and its link is not reset to
    /// "never connected" while it serves; it goes when that link goes down.
    pub fn set_members(&self, members: &Members) {
        self.with(|s| {
            s.nodes = members
                .iter()
                .map(|(name, r)| NodeStatus {
                    name: name.clone(),
                    addr: r.addr.clone(),
                    started: r.started,
                })
                .collect();
            s.links.retain(|peer, l| {
                if members.contains_key(peer) {
                    return true;
                }
                // No dialer runs for a peer outside the view (`links::manage` ends it).
                l.outbound.up = false;
                l.inbound.up
            });
        });
    }

    /// Updates one direction of the link with `peer`.
    pub fn link(&self, peer: &str, dir: Direction, f: impl FnOnce(&mut LinkStatus)) {
        self.with(|s| {
            let links = s.links.entry(peer.to_owned()).or_default();
            f(match dir {
                Direction::Outbound => &mut links.outbound,
                Direction::Inbound => &mut links.inbound,
            })
        });
    }

    /// The number of filters `peer` has subscribers for, and an update of the inbound link
    /// from it, in one step.
    pub fn received(&self, peer: &str, routes: u64, f: impl FnOnce(&mut LinkStatus)) {
        self.with(|s| {
            let links = s.links.entry(peer.to_owned()).or_default();
            links.routes = routes;
            f(&mut links.inbound);
        });
    }

    /// Marks one direction up; returns the connection's generation for [`Self::set_down`].
    pub fn set_up(&self, peer: &str, dir: Direction) -> u64 {
        let mut generation = 0;
        self.link(peer, dir, |l| {
            l.connects += 1;
            l.up = true;
            l.since = Some(SystemTime::now());
            generation = l.connects;
        });
        generation
    }

    /// Marks one direction down, unless a newer connection came up meanwhile (a peer that
    /// dials again may do so before its old connection's end is noticed here) or the peer
    /// left (its entry went with it, or goes now that nothing of it is up).
    pub fn set_down(&self, peer: &str, dir: Direction, generation: u64) {
        self.with(|s| {
            let Some(links) = s.links.get_mut(peer) else {
                return;
            };
            let l = match dir {
                Direction::Outbound => &mut links.outbound,
                Direction::Inbound => &mut links.inbound,
            };
            if l.connects == generation {
                l.up = false;
                l.since = Some(SystemTime::now());
            }
            if !links.inbound.up && !s.nodes.iter().any(|n| n.name == peer) {
                s.links.remove(peer);
            }
        });
    }

    /// The size of this node's client-id directory.
    pub fn set_client_ids(&self, n: u64) {
        self.with(|s| s.client_ids = n);
    }

    /// Counts a refused handshake.
    pub fn auth_failed(&self) {
        self.with(|s| s.link_auth_failures += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::membership::NodeRecord;

    fn members(names: &[&str]) -> Members {
        names
            .iter()
            .map(|n| {
                let r = NodeRecord {
                    addr: format!("{n}:1"),
                    started: 0,
                    version: String::new(),
                    metrics: None,
                };
                (n.to_string(), r)
            })
            .collect()
    }

    #[test]
    fn a_peer_that_dials_before_its_key_is_seen_stays_up() {
        let board = StatusBoard::new("a");
        board.set_members(&members(&["a"]));
        let generation = board.set_up("late", Direction::Inbound);
        board.set_members(&members(&["a", "b"]));
        let s = board.snapshot();
        assert!(s.links["late"].inbound.up, "{s:?}");
        assert_eq!(s.links["late"].inbound.connects, 1);
        // It leaves: its entry goes with its link.
        board.set_down("late", Direction::Inbound, generation);
        assert!(!board.snapshot().links.contains_key("late"));
    }

    #[test]
    fn a_member_keeps_its_links_down_and_sessions_count() {
        let board = StatusBoard::new("a");
        board.set_members(&members(&["a", "b"]));
        let generation = board.set_up("b", Direction::Outbound);
        board.set_down("b", Direction::Outbound, generation);
        assert!(!board.snapshot().links["b"].outbound.up);
        // b leaves the view: its dialer ends, so nothing of it is shown up.
        board.set_up("b", Direction::Outbound);
        board.set_members(&members(&["a"]));
        assert!(!board.snapshot().links.contains_key("b"));
        board.set_registered(true);
        board.set_registered(false);
        board.set_registered(true);
        assert_eq!(board.snapshot().sessions, 2);
    }
}
