//! Who connects, publishes where and subscribes to what, for one shard of a scenario.
//!
//! A `--procs N` run splits the scenario into N shards, one per worker process, each on its own
//! topic prefix: shards never exchange messages, so each process can account for its own
//! deliveries and the figures simply add up.

use crate::cli::{Args, IdleSub, Scenario};

/// One publishing connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PubSpec {
    /// Topic it publishes to.
    pub topic: String,
}

/// One subscribing connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubSpec {
    /// Filter it subscribes to.
    pub filter: String,
    /// Receiver group it reports deliveries into.
    pub group: usize,
}

/// A set of subscribers that together should receive each message of some publishers once: one
/// subscriber, or all members of a shared subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSpec {
    /// Publisher indices whose every message this group should get, sorted.
    pub expects: Vec<u32>,
}

/// The connections of one shard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Publishers.
    pub pubs: Vec<PubSpec>,
    /// Subscribers.
    pub subs: Vec<SubSpec>,
    /// Receiver groups.
    pub groups: Vec<GroupSpec>,
    /// Per publisher, the number of groups that expect its messages.
    pub fanout: Vec<u64>,
    /// Connections that only connect (idle holds them, connect storm cycles them).
    pub bare: u32,
}

/// Part `i` of `total` split into `n` nearly equal parts.
pub fn share(total: u32, i: u32, n: u32) -> u32 {
    total / n + u32::from(i < total % n)
}

impl Plan {
    /// The shard `shard` of `shards` for `args`; `run` makes topics unique to this run.
    pub fn new(args: &Args, run: &str, shard: u32, shards: u32) -> Plan {
        let p = format!("ul/{run}/{shard}");
        let part = |total: u32| share(total, shard, shards).max(1);
        let pubs_or = |dflt: u32| args.pubs.map_or(part(dflt), part);
        let subs_or = |dflt: u32| args.subs.map_or(part(dflt), part);
        let mut plan = Plan::default();
        match args.scenario {
            Scenario::FanIn => {
                let topic = format!("{p}/fanin");
                plan.publishers(pubs_or(args.conns), |_| topic.clone());
                plan.each_own_group(args.subs.map_or(1, part), |_| topic.clone());
            }
            Scenario::FanOut => {
                let topic = format!("{p}/fanout");
                plan.publishers(args.pubs.map_or(1, part), |_| topic.clone());
                plan.each_own_group(subs_or(args.conns), |_| topic.clone());
            }
            Scenario::Pairs => {
                let n = pubs_or(args.conns);
                plan.publishers(n, |i| format!("{p}/pair/{i}"));
                let subs = subs_or(args.conns);
                for s in 0..subs {
                    let i = s % n;
                    plan.groups.push(GroupSpec { expects: vec![i] });
                    plan.subs.push(SubSpec {
                        filter: format!("{p}/pair/{i}"),
                        group: plan.groups.len() - 1,
                    });
                }
            }
            Scenario::Shared => {
                let n = args.pubs.map_or(part(4), part);
                plan.publishers(n, |i| format!("{p}/shared/{i}"));
                plan.groups.push(GroupSpec {
                    expects: (0..n).collect(),
                });
                for _ in 0..subs_or(args.conns) {
                    plan.subs.push(SubSpec {
                        filter: format!("$share/ulg/{p}/shared/+"),
                        group: 0,
                    });
                }
            }
            Scenario::Wildcard => {
                let n = args.pubs.map_or(part(4), part);
                plan.publishers(n, |i| format!("{p}/wild/{i}/data"));
                plan.each_own_group(subs_or(args.conns), |s| {
                    if s % 2 == 0 {
                        format!("{p}/wild/+/data")
                    } else {
                        format!("{p}/wild/#")
                    }
                });
            }
            Scenario::ConnectStorm => plan.bare = part(args.conns),
            Scenario::Idle => {
                plan.idle(
                    &p,
                    args.idle_sub,
                    part(args.conns),
                    args.pubs.map_or(0, part),
                );
            }
        }
        plan.fanout = vec![0; plan.pubs.len()];
        for g in &plan.groups {
            for &i in &g.expects {
                plan.fanout[i as usize] += 1;
            }
        }
        plan
    }

    fn publishers(&mut self, n: u32, topic: impl Fn(u32) -> String) {
        self.pubs
            .extend((0..n).map(|i| PubSpec { topic: topic(i) }));
    }

    /// `n` idle connections subscribed as `kind` says; the first `pubs` of them subscribe to
    /// the topic of a publisher of their own instead (the trickle), so each holds one filter.
    fn idle(&mut self, p: &str, kind: IdleSub, n: u32, pubs: u32) {
        let pubs = pubs.min(n);
        self.publishers(pubs, |k| format!("{p}/trickle/{k}"));
        for k in 0..pubs {
            self.groups.push(GroupSpec { expects: vec![k] });
            self.subs.push(SubSpec {
                filter: format!("{p}/trickle/{k}"),
                group: self.groups.len() - 1,
            });
        }
        if kind == IdleSub::None {
            self.bare = n - pubs;
            return;
        }
        // The idle subscribers expect nothing: one empty group for all of them.
        self.groups.push(GroupSpec { expects: vec![] });
        let group = self.groups.len() - 1;
        for s in pubs..n {
            let filter = match kind {
                IdleSub::Own => format!("{p}/idle/{s}/cmd"),
                IdleSub::Leaf => format!("{p}/idle/{s}"),
                _ => format!("{p}/idle"),
            };
            self.subs.push(SubSpec { filter, group });
        }
    }

    /// `n` subscribers, each its own group expecting every publisher.
    fn each_own_group(&mut self, n: u32, filter: impl Fn(u32) -> String) {
        let all: Vec<u32> = (0..self.pubs.len() as u32).collect();
        for s in 0..n {
            self.groups.push(GroupSpec {
                expects: all.clone(),
            });
            self.subs.push(SubSpec {
                filter: filter(s),
                group: self.groups.len() - 1,
            });
        }
    }

    /// Connections this shard opens.
    pub fn connections(&self) -> u64 {
        (self.pubs.len() + self.subs.len()) as u64 + u64::from(self.bare)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn plan(args: &[&str], shard: u32, shards: u32) -> Plan {
        let a = Args::try_parse_from(std::iter::once("x").chain(args.iter().copied())).unwrap();
        Plan::new(&a, "r", shard, shards)
    }

    #[test]
    fn split_is_exhaustive() {
        assert_eq!(
            (0..3).map(|i| share(10, i, 3)).collect::<Vec<_>>(),
            vec![4, 3, 3]
        );
    }

    #[test]
    fn fan_in_and_out_shapes() {
        let p = plan(&["-s", "fan-in", "-c", "5"], 0, 1);
        assert_eq!((p.pubs.len(), p.subs.len()), (5, 1));
        assert_eq!(p.fanout, vec![1; 5]);
        let p = plan(&["-s", "fan-out", "-c", "5"], 0, 1);
        assert_eq!((p.pubs.len(), p.subs.len()), (1, 5));
        assert_eq!(p.fanout, vec![5]);
        assert!(p.subs.iter().all(|s| s.filter == p.pubs[0].topic));
    }

    #[test]
    fn pairs_expect_only_their_partner() {
        let p = plan(&["-s", "pairs", "-c", "3"], 1, 2);
        assert_eq!(p.pubs.len(), 1);
        assert_eq!(p.pubs[0].topic, "ul/r/1/pair/0");
        assert_eq!(p.groups, vec![GroupSpec { expects: vec![0] }]);
    }

    #[test]
    fn shared_is_one_group() {
        let p = plan(&["-s", "shared", "-c", "6", "--pubs", "2"], 0, 1);
        assert_eq!(p.groups.len(), 1);
        assert_eq!(p.subs.len(), 6);
        assert!(p.subs[0].filter.starts_with("$share/ulg/"));
        assert_eq!(p.fanout, vec![1, 1]);
    }

    #[test]
    fn wildcard_filters_alternate_and_match_every_topic() {
        let p = plan(&["-s", "wildcard", "-c", "4"], 0, 1);
        assert!(p.subs[0].filter.ends_with("/+/data") && p.subs[1].filter.ends_with("/#"));
        assert_eq!(p.fanout, vec![4; 4]);
    }

    #[test]
    fn idle_splits_connections_over_shards() {
        let total: u64 = (0..4)
            .map(|i| plan(&["-s", "idle", "-c", "10"], i, 4).connections())
            .sum();
        assert_eq!(total, 10);
    }

    #[test]
    fn idle_subscriptions_and_trickle() {
        let p = plan(
            &["-s", "idle", "-c", "10", "--idle-sub", "own", "--pubs", "2"],
            0,
            1,
        );
        assert_eq!((p.pubs.len(), p.subs.len(), p.bare), (2, 10, 0));
        assert_eq!(p.subs[1].filter, p.pubs[1].topic);
        assert_eq!(p.subs[2].filter, "ul/r/0/idle/2/cmd");
        assert_eq!(p.fanout, vec![1, 1]);
        assert_eq!(p.connections(), 12);
        let p = plan(&["-s", "idle", "-c", "10", "--idle-sub", "leaf"], 0, 1);
        assert_eq!(p.subs[2].filter, "ul/r/0/idle/2");
        let p = plan(&["-s", "idle", "-c", "10", "--idle-sub", "shared"], 0, 1);
        assert!(p.pubs.is_empty() && p.subs.iter().all(|s| s.filter == "ul/r/0/idle"));
        let p = plan(
            &[
                "-s",
                "idle",
                "-c",
                "10",
                "--idle-sub",
                "none",
                "--pubs",
                "3",
            ],
            0,
            1,
        );
        assert_eq!((p.subs.len(), p.bare), (3, 7));
    }
}
