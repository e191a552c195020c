//! Subscriptions younger than one mesh round, and the retained messages racing them.
//!
//! A retained PUBLISH on core A and a SUBSCRIBE to a matching filter on core B at the same
//! moment could give the subscriber nothing: A routed before B's `Interest` reached it (no
//! live copy), and B answered its retained lookup before A's `Retain` reached it (no retained
//! copy). Mosquitto, on one thread, always gives one of the two; so do we:
//!
//! - every core acknowledges each `Interest` add (`InterestAck`), and a core counts the adds
//!   it sent and the acknowledgements each other core returned (all queues are FIFO, so
//!   counts suffice);
//! - a core sends a message's `Retain` only after routing it (`Shard::accept`): whatever
//!   `Interest` it had applied before that routing is acknowledged before the `Retain`;
//! - after its retained lookup, B keeps a subscription (session, filter, options) as *fresh*
//!   while some core has not acknowledged every add B had sent by then. A `Retain` from a
//!   core C that arrives for a fresh subscription while C's acknowledgement is outstanding
//!   was routed by C without B's interest: no live copy comes from C, so B delivers the
//!   retained one, unless the message reached B live anyway (through another filter that C
//!   knew of): live retained messages are remembered while anything is fresh.
//!
//! The window is one mesh round trip; outside it nothing is kept and a `Retain` costs one
//! emptiness check.

use super::{Shard, ToDeliver};
use std::sync::Arc;
use std::time::Instant;
use uringmq_session::{Delivery, Message, SubOptions};

/// A subscription made while some of this core's interest was unacknowledged.
struct Fresh {
    key: u64,
    filter: Arc<str>,
    opts: SubOptions,
    /// Interest adds this core had sent when the subscription was looked up: fresh for core
    /// `c` while `acked[c]` is below it.
    upto: u64,
}

/// This core's side of the race between a retained PUBLISH and a SUBSCRIBE on two cores.
pub(crate) struct FreshSubs {
    /// Interest adds this core sent (each to every other core).
    sent: u64,
    /// Per core: the adds it acknowledged.
    acked: Vec<u64>,
    subs: Vec<Fresh>,
    /// Retained messages that reached this core live while `subs` was not empty (held, so
    /// their addresses stay unique).
    live: Vec<Arc<Message>>,
}

impl FreshSubs {
    pub(super) fn new(cores: usize) -> Self {
        FreshSubs {
            sent: 0,
            acked: vec![0; cores],
            subs: Vec::new(),
            live: Vec::new(),
        }
    }

    /// Whether some other core has not acknowledged every add sent so far.
    fn unacknowledged(&self, me: u16) -> bool {
        let me = usize::from(me);
        self.acked
            .iter()
            .enumerate()
            .any(|(c, &a)| c != me && a < self.sent)
    }

    /// Forgets what every core has acknowledged.
    fn expire(&mut self, me: u16) {
        let me = usize::from(me);
        let acked = &self.acked;
        self.subs.retain(|f| {
            acked
                .iter()
                .enumerate()
                .any(|(c, &a)| c != me && a < f.upto)
        });
        if self.subs.is_empty() {
            self.live.clear();
        }
    }
}

impl Shard {
    /// An `Interest` add went to every other core.
    pub(super) fn interest_sent(&self) {
        self.fresh.borrow_mut().sent += 1;
    }

    /// Core `core` acknowledged one more of this core's interest adds.
    pub(super) fn interest_acked(&self, core: u16) {
        let mut fresh = self.fresh.borrow_mut();
        if let Some(a) = fresh.acked.get_mut(usize::from(core)) {
            *a += 1;
        }
        if !fresh.subs.is_empty() {
            fresh.expire(self.id);
        }
    }

    /// Session `key` just looked up the retained messages of `filter`: keep the subscription
    /// while this core's interest may still be unknown to another core.
    pub(super) fn looked_up(&self, key: u64, filter: &str, opts: &SubOptions) {
        let mut fresh = self.fresh.borrow_mut();
        if fresh.unacknowledged(self.id) {
            let upto = fresh.sent;
            fresh.subs.push(Fresh {
                key,
                filter: filter.into(),
                opts: *opts,
                upto,
            });
        }
    }

    /// A message routed here by another core: remembered if retained and anything is fresh.
    pub(super) fn routed_here(&self, msg: &Arc<Message>) {
        if msg.retain {
            let mut fresh = self.fresh.borrow_mut();
            if !fresh.subs.is_empty() {
                fresh.live.push(msg.clone());
            }
        }
    }

    /// Core `from` retained `msg` (applied here already): deliver it to the fresh
    /// subscriptions it was not routed to (see the module doc).
    pub(super) fn retained_from(self: &std::rc::Rc<Self>, from: u16, msg: &Arc<Message>) {
        let targets: Vec<(u64, Arc<str>, SubOptions)> = {
            let fresh = self.fresh.borrow();
            if fresh.subs.is_empty()
                || msg.payload.is_empty()
                || fresh.live.iter().any(|m| Arc::ptr_eq(m, msg))
            {
                return;
            }
            // From another node (`FROM_NODE`): routed by none of this node's cores, so the
            // acknowledgements say nothing of it (races across nodes are not handled here).
            let Some(&acked) = fresh.acked.get(usize::from(from)) else {
                return;
            };
            fresh
                .subs
                .iter()
                .filter(|f| acked < f.upto && uringmq_topic::matches(&f.filter, &msg.topic))
                .map(|f| (f.key, f.filter.clone(), f.opts))
                .collect()
        };
        let now = Instant::now();
        let mut st = self.st.borrow_mut();
        for (key, filter, opts) in targets {
            // Unsubscribed (or gone) within the window: nothing is owed.
            let subscribed = st
                .sessions
                .get(key)
                .is_some_and(|e| e.s.subs.get(&filter).is_some());
            if !subscribed {
                continue;
            }
            self.deliver_to(
                &mut st,
                key,
                ToDeliver {
                    msg,
                    delivery: Delivery::retained(msg, &opts),
                    group: None,
                    now,
                    cache_heads: false,
                },
            );
        }
    }
}
