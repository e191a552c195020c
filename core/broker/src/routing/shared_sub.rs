//! `$share/{group}/{filter}` groups.
//!
//! Each core keeps its own members of each group (a `Members` round-robin set per
//! `$share/g/f` name: the receiving core looks its group up by name, it never matches it) and
//! a replica of how many members every core has, as a `uringmq_topic::SharedIndex` from core to
//! member count, indexed by filter. A PUBLISH that matches a group picks a core, weighted by its
//! member count, round-robin over all members (or at random, or preferring the local core, per
//! `shared_subscription_strategy`); that core then picks one of its members.

use crate::config::SharedStrategy;
use std::collections::HashMap;
use std::sync::Arc;
use uringmq_session::SubOptions;
use uringmq_topic::{Members, SharedFilter, SharedIndex};

/// A core's part of a group in the replica.
struct CoreShare {
    /// Members of the group on that core (never 0: a core without members is no entry).
    members: u32,
    /// The `$share/g/f` name, which a message sent to that core carries.
    group: Arc<str>,
}

/// Shared-subscription state of one core.
pub(crate) struct SharedSubs {
    /// This core's members per group (`$share/g/f` string).
    pub(crate) local: HashMap<Arc<str>, Members<u64, SubOptions>, ahash::RandomState>,
    /// Every core's member count per group.
    cores: SharedIndex<u16, CoreShare>,
    /// Position of the `random` strategy's sequence.
    random: u64,
}

impl SharedSubs {
    /// No groups; filters of up to `max_levels` levels (`max_topic_levels`).
    pub(crate) fn new(max_levels: usize) -> Self {
        Self {
            local: HashMap::default(),
            cores: SharedIndex::with_max_levels(max_levels),
            random: 0,
        }
    }

    /// Adds a local member; returns this core's new member count of the group.
    pub(crate) fn join(&mut self, group: &Arc<str>, key: u64, opts: SubOptions) -> u32 {
        let members = self.local.entry(group.clone()).or_default();
        members.insert(key, opts);
        members.len() as u32
    }

    /// Removes a local member; returns this core's new member count, or None if it was not one.
    pub(crate) fn leave(&mut self, group: &str, key: u64) -> Option<u32> {
        let members = self.local.get_mut(group)?;
        members.remove(key)?;
        let n = members.len() as u32;
        if n == 0 {
            self.local.remove(group);
        }
        Some(n)
    }

    /// Applies a core's member count of a group (from the mesh, or from this core itself).
    pub(crate) fn set_count(&mut self, group: &Arc<str>, core: u16, members: u32) {
        let Ok(Some(share)) = SharedFilter::parse(group) else {
            return;
        };
        if members == 0 {
            let _ = self.cores.remove(share.group, share.filter, core);
        } else {
            let entry = CoreShare {
                members,
                group: group.clone(),
            };
            let _ = self.cores.insert(share.group, share.filter, core, entry);
        }
    }

    /// For each group whose filter matches `topic`: the group and the core that gets the message.
    pub(crate) fn route(
        &mut self,
        topic: &str,
        me: u16,
        strategy: SharedStrategy,
        mut f: impl FnMut(Arc<str>, u16),
    ) {
        let random = &mut self.random;
        self.cores.for_each_group_match(topic, |_, _, cores| {
            if let Some((core, share)) = pick_core(cores, me, strategy, random) {
                f(share.group.clone(), core);
            }
        });
    }

    /// Another core of this node to send a group's message to when this core has no member
    /// any more.
    pub(crate) fn other_core(&self, group: &str, me: u16) -> Option<u16> {
        let share = SharedFilter::parse(group).ok()??;
        let cores = self.cores.members(share.group, share.filter)?;
        // Only this node's cores: a message another node sent never goes on to a third.
        let others = |core, s: &CoreShare| {
            if core == me || crate::mesh::cluster::node_of(core).is_some() {
                0
            } else {
                s.members
            }
        };
        cores.pick_weighted(others).map(|(core, _)| core)
    }
}

impl SharedSubs {
    /// The node to pass a group's message from another node on to when no core of this node
    /// has a member of `group` any more (the sender picked this node before it heard that
    /// its members left): another node with members, weighted by their counts.
    pub(crate) fn other_node(&self, group: &str) -> Option<u16> {
        use crate::mesh::cluster::node_of;
        let share = SharedFilter::parse(group).ok()??;
        let cores = self.cores.members(share.group, share.filter)?;
        if cores.iter().any(|(id, _)| node_of(id).is_none()) {
            return None;
        }
        let nodes = |id, s: &CoreShare| node_of(id).map_or(0, |_| s.members);
        cores.pick_weighted(nodes).and_then(|(id, _)| node_of(id))
    }
}

/// The group's filter: `$share/g/filter` -> `filter`.
pub(crate) fn group_filter(group: &str) -> &str {
    group.splitn(3, '/').nth(2).unwrap_or("")
}

/// Weighted by member count, so that every member of the group, whichever core it is on, gets
/// its turn equally.
fn pick_core<'a>(
    cores: &'a Members<u16, CoreShare>,
    me: u16,
    strategy: SharedStrategy,
    random: &mut u64,
) -> Option<(u16, &'a CoreShare)> {
    let count = |_, s: &CoreShare| s.members;
    match strategy {
        SharedStrategy::Local if cores.get(me).is_some() => cores.get(me).map(|s| (me, s)),
        SharedStrategy::Random => {
            // xorshift of a counter: cheap, good enough to spread load.
            *random = random.wrapping_add(1);
            let mut x = random.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            x ^= x >> 29;
            cores.pick_weighted_at(x, count)
        }
        _ => cores.pick_weighted(count),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_is_weighted_by_members_per_core() {
        let mut s = SharedSubs::new(8);
        let g: Arc<str> = "$share/g/a/+".into();
        s.set_count(&g, 0, 1);
        s.set_count(&g, 1, 2);
        let mut hits = [0; 2];
        for _ in 0..30 {
            s.route("a/b", 0, SharedStrategy::RoundRobin, |_, c| {
                hits[usize::from(c)] += 1
            });
        }
        assert_eq!(hits, [10, 20]);
        let mut none = 0;
        s.route("b", 0, SharedStrategy::RoundRobin, |_, _| none += 1);
        assert_eq!(none, 0);
        s.set_count(&g, 0, 0);
        s.set_count(&g, 1, 0);
        s.route("a/b", 0, SharedStrategy::RoundRobin, |_, _| none += 1);
        assert_eq!(none, 0, "a group without members is gone");
    }

    #[test]
    fn random_is_weighted_by_members_per_core() {
        let mut s = SharedSubs::new(8);
        let g: Arc<str> = "$share/g/t".into();
        s.set_count(&g, 0, 1);
        s.set_count(&g, 1, 3);
        let mut hits = [0; 2];
        for _ in 0..4000 {
            s.route("t", 0, SharedStrategy::Random, |group, c| {
                assert_eq!(group, g);
                hits[usize::from(c)] += 1
            });
        }
        assert!((800..1200).contains(&hits[0]), "{hits:?}");
    }

    #[test]
    fn local_strategy_prefers_the_publishing_core() {
        let mut s = SharedSubs::new(8);
        let g: Arc<str> = "$share/g/t".into();
        s.set_count(&g, 0, 1);
        s.set_count(&g, 1, 5);
        for _ in 0..5 {
            s.route("t", 0, SharedStrategy::Local, |_, c| assert_eq!(c, 0));
        }
        assert_eq!(s.other_core(&g, 0), Some(1));
        s.set_count(&g, 1, 0);
        assert_eq!(s.other_core(&g, 0), None);
    }

    #[test]
    fn join_and_leave_count_local_members() {
        let mut s = SharedSubs::new(8);
        let g: Arc<str> = "$share/g/t".into();
        assert_eq!(s.join(&g, 1, SubOptions::default()), 1);
        assert_eq!(s.join(&g, 2, SubOptions::default()), 2);
        assert_eq!(s.leave(&g, 1), Some(1));
        assert_eq!(s.leave(&g, 1), None);
        assert_eq!(s.leave(&g, 2), Some(0));
        assert!(s.local.is_empty());
        assert_eq!(group_filter("$share/g/a/b/#"), "a/b/#");
    }
}
