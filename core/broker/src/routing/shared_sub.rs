//! `$share/{group}/{filter}` groups.
//!
//! Each core keeps its own members of each group (a `Members` round-robin set) and a replica of
//! how many members every core has. A PUBLISH that matches a group picks a core, weighted by its
//! member count, round-robin over all members (or at random, or preferring the local core, per
//! `shared_subscription_strategy`); that core then picks one of its members.

use crate::config::SharedStrategy;
use std::collections::HashMap;
use std::sync::Arc;
use uringmq_session::SubOptions;
use uringmq_topic::{Members, SubscriptionIndex};

/// What every core knows about one group.
struct Group {
    /// Member count per core.
    counts: Vec<u32>,
    /// Round-robin position of this (publishing) core over all members.
    cursor: u64,
    /// Id in `index`.
    id: u32,
}

/// Shared-subscription state of one core.
#[derive(Default)]
pub(crate) struct SharedSubs {
    /// This core's members per group (`$share/g/f` string).
    pub(crate) local: HashMap<Arc<str>, Members<u64, SubOptions>, ahash::RandomState>,
    groups: HashMap<Arc<str>, Group, ahash::RandomState>,
    /// Filter -> group ids, to match topics.
    index: SubscriptionIndex<u32, ()>,
    by_id: HashMap<u32, Arc<str>, ahash::RandomState>,
    next_id: u32,
}

impl SharedSubs {
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
    /// `filter` is the group's topic filter.
    pub(crate) fn set_count(
        &mut self,
        group: &Arc<str>,
        filter: &str,
        core: u16,
        members: u32,
        cores: usize,
    ) {
        if !self.groups.contains_key(group) {
            if members == 0 {
                return;
            }
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            if self.index.insert(filter, id, ()).is_err() {
                return;
            }
            self.by_id.insert(id, group.clone());
            self.groups.insert(
                group.clone(),
                Group {
                    counts: vec![0; cores],
                    cursor: 0,
                    id,
                },
            );
        }
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        if let Some(c) = g.counts.get_mut(usize::from(core)) {
            *c = members;
        }
        if g.counts.iter().all(|&c| c == 0) {
            let id = g.id;
            self.groups.remove(group);
            self.by_id.remove(&id);
            let _ = self.index.remove(filter, id);
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
        let mut ids: smallvec::SmallVec<[u32; 4]> = smallvec::SmallVec::new();
        self.index.for_each_match(topic, |id, _| ids.push(id));
        for id in ids {
            let Some(name) = self.by_id.get(&id) else {
                continue;
            };
            let Some(g) = self.groups.get_mut(name) else {
                continue;
            };
            if let Some(core) = pick_core(g, me, strategy) {
                f(name.clone(), core);
            }
        }
    }

    /// Another core to send a group's message to when this core has no member any more.
    pub(crate) fn other_core(&mut self, group: &str, me: u16) -> Option<u16> {
        let g = self.groups.get_mut(group)?;
        let at = usize::from(me);
        let saved = g.counts.get(at).copied()?;
        g.counts[at] = 0;
        let picked = pick_core(g, me, SharedStrategy::RoundRobin);
        g.counts[at] = saved;
        picked
    }
}

/// The group's filter: `$share/g/filter` -> `filter`.
pub(crate) fn group_filter(group: &str) -> &str {
    group.splitn(3, '/').nth(2).unwrap_or("")
}

fn pick_core(g: &mut Group, me: u16, strategy: SharedStrategy) -> Option<u16> {
    let total: u64 = g.counts.iter().map(|&c| u64::from(c)).sum();
    if total == 0 {
        return None;
    }
    if strategy == SharedStrategy::Local && g.counts.get(usize::from(me)).copied().unwrap_or(0) > 0
    {
        return Some(me);
    }
    g.cursor = g.cursor.wrapping_add(1);
    let mut n = match strategy {
        SharedStrategy::Random => {
            // xorshift of the cursor: cheap, good enough to spread load.
            let mut x = g.cursor.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            x ^= x >> 29;
            x % total
        }
        _ => g.cursor % total,
    };
    for (core, &c) in g.counts.iter().enumerate() {
        if n < u64::from(c) {
            return Some(core as u16);
        }
        n -= u64::from(c);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_is_weighted_by_members_per_core() {
        let mut s = SharedSubs::default();
        let g: Arc<str> = "$share/g/a/+".into();
        s.set_count(&g, group_filter(&g), 0, 1, 2);
        s.set_count(&g, group_filter(&g), 1, 2, 2);
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
        s.set_count(&g, group_filter(&g), 0, 0, 2);
        s.set_count(&g, group_filter(&g), 1, 0, 2);
        s.route("a/b", 0, SharedStrategy::RoundRobin, |_, _| none += 1);
        assert_eq!(none, 0, "a group without members is gone");
    }

    #[test]
    fn local_strategy_prefers_the_publishing_core() {
        let mut s = SharedSubs::default();
        let g: Arc<str> = "$share/g/t".into();
        s.set_count(&g, "t", 0, 1, 2);
        s.set_count(&g, "t", 1, 5, 2);
        for _ in 0..5 {
            s.route("t", 0, SharedStrategy::Local, |_, c| assert_eq!(c, 0));
        }
        assert_eq!(s.other_core(&g, 0), Some(1));
    }

    #[test]
    fn join_and_leave_count_local_members() {
        let mut s = SharedSubs::default();
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
