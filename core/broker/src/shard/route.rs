//! Routing on one core: the `Routes` part of its state (the local index, the interest and
//! shared-group replicas, the retained replica), the interest index kept in step with the
//! other cores, retained messages, matching a PUBLISH to cores and to local sessions,
//! shared-group picks.

use super::sessions::Sessions;
use super::ToDeliver;
use super::{Shard, Sink};
use crate::mesh::cluster::{node_of, ToCluster};
use crate::mesh::{MeshMsg, Target};
use crate::routing::{RetainedStore, SharedSubs};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tracing::debug;
use uringmq_codec::PublishHead;
use uringmq_session::{Delivery, Message, Origin, SubOptions};
use uringmq_topic::{SharedFilter, SubscriptionIndex};

/// What a core routes with: its own sessions' subscriptions, its replicas of what every core
/// subscribes to and of the retained store, and the scratch space of one fan-out.
///
/// The replicas change only through [`Routes::set_interest`], [`Routes::set_shared_count`]
/// and retained updates, applied in the order the mesh delivers them (see `inbox.rs`).
pub(crate) struct Routes {
    /// This core's ordinary subscriptions: session key -> options.
    local: SubscriptionIndex<u64, SubOptions>,
    /// Replica: which other cores (and nodes) have subscribers per filter. Not this core's
    /// own filters: they are in `local`, which a PUBLISH is matched against anyway, and a
    /// second copy of each would cost a trie path per subscription (a whole index on a
    /// one-core broker, #20).
    interest: SubscriptionIndex<u16, ()>,
    /// This core's id, which `interest` leaves out.
    me: u16,
    /// This core's shared-group members and the replica of every core's member counts.
    shared: SharedSubs,
    retained: RetainedStore,
    /// Per core: has a subscriber of the message being routed.
    scratch_cores: Vec<bool>,
    scratch_matches: Vec<(u64, Delivery)>,
    /// PublishHead cache for the message being fanned out: (key, head).
    heads: Vec<(u8, PublishHead)>,
}

impl Routes {
    /// Empty, for core `me` of `cores` cores and filters of up to `levels` levels.
    pub(super) fn new(levels: usize, me: u16, cores: usize) -> Self {
        Routes {
            local: SubscriptionIndex::with_max_levels(levels),
            interest: SubscriptionIndex::with_max_levels(levels),
            me,
            shared: SharedSubs::new(levels),
            retained: RetainedStore::new(levels),
            scratch_cores: vec![false; cores],
            scratch_matches: Vec::new(),
            heads: Vec::new(),
        }
    }

    /// Core `core` gained (`add`) or lost its last subscriber of `filter`; this core's own
    /// interest is its local index (recovery hands every core's interest to every core).
    pub(super) fn set_interest(&mut self, filter: &str, core: u16, add: bool) {
        if core == self.me {
            return;
        }
        if add {
            // As long-lived as the subscription (`alloc::long_lived`).
            let _ = crate::alloc::long_lived(|| self.interest.insert(filter, core, ()));
        } else {
            let _ = self.interest.remove(filter, core);
        }
    }

    /// See [`SharedSubs::other_node`].
    pub(super) fn shared_other_node(&self, group: &str) -> Option<u16> {
        self.shared.other_node(group)
    }

    /// Core `core` has `members` members of shared group `group`.
    pub(super) fn set_shared_count(&mut self, group: &Arc<str>, core: u16, members: u32) {
        self.shared.set_count(group, core, members);
    }

    /// Indexes a recovered session's subscription, before the core runs: the replicas come
    /// whole from the store, so nothing is broadcast (see `persist.rs`).
    pub(super) fn restore_subscription(&mut self, filter: &str, key: u64, opts: SubOptions) {
        if matches!(SharedFilter::parse(filter), Ok(Some(_))) {
            self.shared.join(&Arc::from(filter), key, opts);
        } else {
            let _ = self.local.insert(filter, key, opts);
        }
    }

    pub(super) fn set_retained(&mut self, msg: Arc<Message>) {
        self.retained.set(msg);
    }

    /// The users' retained topics (the broker's `$SYS` ones not counted).
    pub(super) fn retained_user_len(&self) -> usize {
        self.retained.user_len()
    }

    /// This core's members of shared groups, over all groups.
    pub(crate) fn shared_members(&self) -> usize {
        self.shared.local.values().map(|m| m.len()).sum()
    }

    /// The encode-once head cache of the message being fanned out (`ToDeliver::cache_heads`).
    #[inline]
    pub(super) fn heads(&mut self) -> &mut Vec<(u8, PublishHead)> {
        &mut self.heads
    }
}

impl Shard {
    /// Tells every other core (and node) that this core gained/lost `filter`.
    fn broadcast_interest(&self, filter: &str, add: bool) {
        let filter: Arc<str> = filter.into();
        if add && self.shared.cores() > 1 {
            self.interest_sent();
        }
        self.send_to_others(|| MeshMsg::Interest {
            filter: filter.clone(),
            core: self.id,
            add,
        });
        self.to_cluster(ToCluster::Interest { filter, add });
    }

    fn broadcast_shared(&self, group: &Arc<str>, members: u32) {
        self.st
            .borrow_mut()
            .routes
            .set_shared_count(group, self.id, members);
        self.send_to_others(|| MeshMsg::SharedInterest {
            group: group.clone(),
            core: self.id,
            members,
        });
        self.to_cluster(ToCluster::Shared {
            core: self.id,
            group: group.clone(),
            members,
        });
    }

    /// Adds `key`'s subscription to the indexes. Returns whether it is shared.
    pub(crate) fn index_subscription(&self, filter: &str, key: u64, opts: SubOptions) -> bool {
        if let Ok(Some(_)) = SharedFilter::parse(filter) {
            let group: Arc<str> = filter.into();
            let n = self.st.borrow_mut().routes.shared.join(&group, key, opts);
            self.broadcast_shared(&group, n);
            return true;
        }
        let first = {
            let mut st = self.st.borrow_mut();
            // The node and its level strings last as long as the subscription.
            match crate::alloc::long_lived(|| st.routes.local.insert(filter, key, opts)) {
                Ok(ins) => ins.first_subscriber,
                Err(_) => false,
            }
        };
        if first {
            self.broadcast_interest(filter, true);
        }
        false
    }

    /// Removes `key`'s subscription from the indexes.
    pub(crate) fn unindex_subscription(&self, filter: &str, key: u64) {
        if let Ok(Some(_)) = SharedFilter::parse(filter) {
            let left = self.st.borrow_mut().routes.shared.leave(filter, key);
            if let Some(n) = left {
                self.broadcast_shared(&filter.into(), n);
            }
            return;
        }
        let last = self
            .st
            .borrow_mut()
            .routes
            .local
            .remove(filter, key)
            .last_subscriber;
        if last {
            self.broadcast_interest(filter, false);
        }
        self.collect_soon();
    }

    /// Memory was freed on this core (index nodes of a filter that went): have the sweep ask
    /// mimalloc to return it for a few seconds, as after parking. Without it a client that
    /// held large filters left the memory with the process after it was gone.
    pub(super) fn collect_soon(&self) {
        self.collect_sweeps
            .set(crate::conn::hibernate::COLLECT_SWEEPS);
    }

    // ---- retained ----

    /// A new message on this core (a client's PUBLISH, a will, a bridge, the in-process API):
    /// stored if it is retained, routed, and only then its `Retain` sent to the other cores,
    /// so that a core which sees the `Retain` before its acknowledgement of interest knows
    /// the message was not routed to it (`fresh.rs`).
    pub(crate) fn accept(self: &Rc<Self>, msg: &Arc<Message>) {
        let stored = msg.retain && self.retain(msg);
        self.route(msg);
        if stored {
            self.broadcast_retain(msg);
        }
    }

    /// Sends `Retain` for `msg` (stored here already) to every other core, and to the other
    /// nodes of a cluster.
    pub(crate) fn broadcast_retain(&self, msg: &Arc<Message>) {
        let from = self.id;
        self.send_to_others(|| MeshMsg::Retain {
            msg: msg.clone(),
            from,
        });
        if super::cluster::crosses(msg) {
            self.to_cluster(ToCluster::Retain(msg.clone()));
        }
    }

    /// Stores a retained message of this core in its replica; false if refused (the store is
    /// full). The other cores hear of it from [`Shard::accept`].
    ///
    /// `max_retained_messages` is checked against this core's replica: a new topic is refused
    /// when the replica holds `max` topics. Replicas apply every `Retain` unconditionally, so
    /// they converge on one store, but a replica sees other cores' new topics only when their
    /// `Retain` arrives: the store can exceed `max` by the new topics that other cores admitted
    /// while their `Retain` was still on its way here (one mesh hop, usually microseconds).
    /// With one core the limit is exact.
    fn retain(self: &Rc<Self>, msg: &Arc<Message>) -> bool {
        let max = self.config().max_retained_messages;
        if max != 0 && !msg.payload.is_empty() {
            let st = self.st.borrow();
            let retained = &st.routes.retained;
            // The broker's own `$SYS` topics do not count (`RetainedStore::user_len`).
            if retained.user_len() >= max && !retained.contains(&msg.topic) {
                debug!(topic = %msg.topic, "retained store full: not retained");
                return false;
            }
        }
        self.apply_retain(msg.clone());
        true
    }

    pub(crate) fn apply_retain(&self, msg: Arc<Message>) {
        self.persist_retained(&msg);
        let mut st = self.st.borrow_mut();
        let retained = &mut st.routes.retained;
        retained.set(msg);
        let n = retained.user_len() as u64;
        if self.id == 0 {
            self.stats().retained.store(n, Ordering::Relaxed);
            let bytes = retained.user_bytes() as u64;
            self.stats().retained_bytes.store(bytes, Ordering::Relaxed);
        }
    }

    // ---- routing ----

    /// Routes a message: once to every other core (and, in a cluster, every other node) with
    /// subscribers, to the chosen core or node of each matching shared group, then to this
    /// core's own subscribers (its local index; the interest replica does not hold them).
    pub(crate) fn route(self: &Rc<Self>, msg: &Arc<Message>) {
        let cross = self.clustered() && super::cluster::crosses(msg);
        self.route_with(msg, cross, true);
    }

    /// Routes a message another node sent: to this node's cores only (it never goes on to a
    /// third node, so there are no loops), and to no shared group (the sending node picked
    /// the group's node and sent it to that node on its own).
    pub(super) fn route_here(self: &Rc<Self>, msg: &Arc<Message>) {
        self.route_with(msg, false, false);
    }

    /// `cross`: to other nodes too; `groups`: to shared groups too.
    fn route_with(self: &Rc<Self>, msg: &Arc<Message>, cross: bool, groups: bool) {
        self.drain_mesh();
        let me = usize::from(self.id);
        let strategy = self.config().shared_subscription_strategy;
        let mut shared_targets: smallvec::SmallVec<[(Arc<str>, u16); 2]> =
            smallvec::SmallVec::new();
        let mut nodes: smallvec::SmallVec<[u16; 4]> = smallvec::SmallVec::new();
        let local = {
            let mut guard = self.st.borrow_mut();
            let st = &mut guard.routes;
            st.scratch_cores.iter_mut().for_each(|c| *c = false);
            let marks = &mut st.scratch_cores;
            st.interest.for_each_matching_filter(&msg.topic, |members| {
                for (core, _) in members.iter() {
                    if let Some(m) = marks.get_mut(usize::from(core)) {
                        *m = true;
                    } else if let Some(node) = node_of(core).filter(|_| cross) {
                        if !nodes.contains(&node) {
                            nodes.push(node);
                        }
                    }
                }
            });
            if groups {
                st.shared.route(&msg.topic, self.id, strategy, |g, c| {
                    shared_targets.push((g, c))
                });
            }
            for (c, &marked) in st.scratch_cores.iter().enumerate() {
                if marked && c != me {
                    self.send(
                        c,
                        MeshMsg::Publish {
                            msg: msg.clone(),
                            target: Target::Subscribers,
                        },
                    );
                }
            }
            !st.local.is_empty()
        };
        for node in nodes {
            self.publish_to_node(node, msg, None);
        }
        for (group, core) in shared_targets {
            if let Some(node) = node_of(core) {
                if cross {
                    self.publish_to_node(node, msg, Some(group));
                }
            } else if usize::from(core) == me {
                self.deliver_shared(&group, msg, None, true);
            } else {
                self.send(
                    usize::from(core),
                    MeshMsg::Publish {
                        msg: msg.clone(),
                        target: Target::Shared {
                            group,
                            exclude: None,
                        },
                    },
                );
            }
        }
        if local {
            self.deliver_local(msg);
        }
    }

    /// Delivers to this core's ordinary subscribers: one copy per session at the highest QoS
    /// of its matching subscriptions, with all their identifiers [MQTT-3.3.5-1].
    pub(crate) fn deliver_local(self: &Rc<Self>, msg: &Arc<Message>) {
        let mut guard = self.st.borrow_mut();
        let st = &mut *guard;
        let mut matches = std::mem::take(&mut st.routes.scratch_matches);
        matches.clear();
        let id = self.id;
        // The publisher's own session, if No Local kept it from a copy.
        let mut own = None;
        st.routes.local.for_each_match(&msg.topic, |key, opts| {
            match Delivery::live(
                msg,
                opts,
                Some(Origin {
                    core: id,
                    session: key,
                }),
            ) {
                Some(d) => matches.push((key, d)),
                None => own = Some(key),
            }
        });
        if let Some(key) = own.filter(|k| !matches.iter().any(|(m, _)| m == k)) {
            st.moves.kept_from_own(key, msg);
        }
        if matches.is_empty() {
            st.routes.scratch_matches = matches;
            return;
        }
        let now = Instant::now();
        if matches.len() > 1 {
            matches.sort_unstable_by_key(|(k, _)| *k);
            let mut merged: Vec<(u64, Delivery)> = Vec::with_capacity(matches.len());
            for (k, d) in matches.drain(..) {
                match merged.last_mut() {
                    Some((lk, ld)) if *lk == k => ld.merge(d),
                    _ => merged.push((k, d)),
                }
            }
            matches = merged;
        }
        st.routes.heads.clear();
        for (key, d) in matches.drain(..) {
            if st.moves.first_sight(key, msg) {
                self.deliver_to(
                    st,
                    key,
                    ToDeliver {
                        msg,
                        delivery: d,
                        group: None,
                        now,
                        cache_heads: true,
                    },
                );
            }
        }
        st.routes.scratch_matches = matches;
    }

    /// Delivers to one member of a shared group on this core (online members first). With
    /// `forward`, a group without members here goes to another core that has some.
    pub(crate) fn deliver_shared(
        self: &Rc<Self>,
        group: &Arc<str>,
        msg: &Arc<Message>,
        exclude: Option<u64>,
        forward: bool,
    ) {
        let now = Instant::now();
        let mut guard = self.st.borrow_mut();
        let st = &mut *guard;
        let picked = pick_member(&st.routes, &st.sessions, group, exclude);
        match picked {
            Some((key, opts)) => {
                // A shared subscription never gets retained-as-published... it does: RAP applies.
                if !st.moves.first_sight(key, msg) {
                    return;
                }
                if let Some(d) = Delivery::live(msg, &opts, None) {
                    self.deliver_to(
                        st,
                        key,
                        ToDeliver {
                            msg,
                            delivery: d,
                            group: Some(group.clone()),
                            now,
                            cache_heads: false,
                        },
                    );
                }
            }
            None if forward => {
                if let Some(core) = st.routes.shared.other_core(group, self.id) {
                    if core != self.id {
                        self.send(
                            usize::from(core),
                            MeshMsg::Publish {
                                msg: msg.clone(),
                                target: Target::Shared {
                                    group: group.clone(),
                                    exclude,
                                },
                            },
                        );
                    }
                }
            }
            None => {}
        }
    }

    /// Offers QoS 1/2 messages of a shared-group member that left to another member.
    pub(crate) fn redeliver_shared(
        self: &Rc<Self>,
        items: Vec<(Arc<str>, Arc<Message>)>,
        exclude: u64,
    ) {
        for (group, msg) in items {
            self.deliver_shared(&group, &msg, Some(exclude), true);
        }
    }

    // ---- sessions ----

    /// Sends the retained messages matching `filter` to session `key` (after SUBACK).
    pub(crate) fn send_retained(self: &Rc<Self>, key: u64, filter: &str, opts: &SubOptions) {
        self.drain_mesh();
        let now = Instant::now();
        let mut msgs = Vec::new();
        self.st
            .borrow()
            .routes
            .retained
            .for_each_match(filter, |m| msgs.push(m.clone()));
        self.looked_up(key, filter, opts);
        let mut guard = self.st.borrow_mut();
        let st = &mut *guard;
        for m in msgs {
            let d = Delivery::retained(&m, opts);
            self.deliver_to(
                st,
                key,
                ToDeliver {
                    msg: &m,
                    delivery: d,
                    group: None,
                    now,
                    cache_heads: false,
                },
            );
        }
    }
}

/// The member of `group` on this core to deliver to next (round-robin), online ones first;
/// never `exclude`.
fn pick_member(
    routes: &Routes,
    sessions: &Sessions,
    group: &str,
    exclude: Option<u64>,
) -> Option<(u64, SubOptions)> {
    let members = routes.shared.local.get(group)?;
    let mut fallback = None;
    for _ in 0..members.len() {
        let (key, opts) = members.pick_next()?;
        if Some(key) == exclude {
            continue;
        }
        let online = matches!(
            sessions.get(key).map(|e| &e.sink),
            Some(Sink::Conn(_) | Sink::Parked(_) | Sink::Api(_) | Sink::Bridge(_))
        );
        if online {
            return Some((key, *opts));
        }
        fallback.get_or_insert((key, *opts));
    }
    fallback
}
