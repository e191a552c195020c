//! The core's side of the mesh: draining its inbound queue (never re-entrant, see
//! ARCHITECTURE.md), the per-destination outbox flushed once per loop turn, and applying each
//! message.

use super::{Shard, ToDeliver};
use crate::mesh::{MeshMsg, Target};
use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

impl Shard {
    /// Applies everything other cores sent. Called before every routing decision and
    /// retained lookup (the causality rule, see ARCHITECTURE.md).
    ///
    /// Not re-entrant: a mesh message whose handling routes (an injected PUBLISH, a will)
    /// must not apply messages queued after it first, or they would overtake it
    /// [MQTT-4.6.0-6]; everything queued before it is already applied.
    pub(crate) fn drain_mesh(self: &Rc<Self>) {
        if self.draining.replace(true) {
            return;
        }
        // Reset even if a handler panics (the connection's catch_unwind keeps the core alive).
        struct Reset<'a>(&'a Cell<bool>);
        impl Drop for Reset<'_> {
            fn drop(&mut self) {
                self.0.set(false);
            }
        }
        let _reset = Reset(&self.draining);
        let mailbox = &self.shared.mailboxes[usize::from(self.id)];
        while let Some(msg) = mailbox.pop() {
            self.handle_mesh(msg);
        }
    }

    /// Queues `msg` for core `core`. Messages are batched per event-loop turn: the flush task,
    /// woken here, runs after the tasks already scheduled in this turn and pushes one
    /// `MeshMsg::Batch` per core (one queue operation and at most one wake-up each).
    ///
    /// Causality: the outbox is also flushed before anything lets a client (or the embedder)
    /// observe an effect of this core: before every socket write (SUBACK, PUBACK, CONNACK and
    /// deliveries go out only through the writer), before an in-process delivery or API
    /// reply, and before a takeover's answer. A client that saw SUBACK therefore finds this
    /// core's interest already queued on every other core (each queue is FIFO).
    pub(crate) fn send(&self, core: usize, msg: MeshMsg) {
        if let Some(p) = &self.persist {
            p.sending(core, &msg, self.draining.get());
        }
        let mut outbox = self.outbox.borrow_mut();
        if let Some(q) = outbox.get_mut(core) {
            if q.is_empty() {
                self.outbox_ready.notify();
            }
            q.push(msg);
        }
    }

    /// Queues `msg()` for every core but this one (a broadcast of a change this core has
    /// applied to its own replica already).
    pub(crate) fn send_to_others(&self, msg: impl Fn() -> MeshMsg) {
        for c in 0..self.shared.cores() {
            if c != usize::from(self.id) {
                self.send(c, msg());
            }
        }
    }

    /// Pushes everything queued by [`Shard::send`] (see there for when it must be called).
    pub(crate) fn flush_mesh(&self) {
        let mut outbox = self.outbox.borrow_mut();
        if let Some(p) = &self.persist {
            p.seal(self.id, &mut outbox);
        }
        for (c, q) in outbox.iter_mut().enumerate() {
            let msg = match q.len() {
                0 => continue,
                1 => q.pop(),
                _ => Some(MeshMsg::Batch(std::mem::take(q))),
            };
            if let Some(msg) = msg {
                self.shared.mailboxes[c].push(msg);
                if self.stopping.get() {
                    self.shared.settle.count_send();
                }
            }
        }
        drop(outbox);
        self.flush_cluster();
    }

    fn handle_mesh(self: &Rc<Self>, msg: MeshMsg) {
        match msg {
            MeshMsg::Batch(msgs) => {
                for m in msgs {
                    self.handle_mesh(m);
                }
            }
            MeshMsg::Publish { msg, target } => match target {
                Target::Subscribers => {
                    self.routed_here(&msg);
                    self.deliver_local(&msg)
                }
                Target::Shared { group, exclude } => {
                    self.deliver_shared(&group, &msg, exclude, true)
                }
            },
            MeshMsg::Interest { filter, core, add } => {
                self.st.borrow_mut().routes.set_interest(&filter, core, add);
                if add {
                    let me = self.id;
                    self.send(usize::from(core), MeshMsg::InterestAck { core: me });
                } else {
                    self.collect_soon();
                }
            }
            MeshMsg::InterestAck { core } => self.interest_acked(core),
            MeshMsg::SharedInterest {
                group,
                core,
                members,
            } => {
                self.st
                    .borrow_mut()
                    .routes
                    .set_shared_count(&group, core, members);
            }
            MeshMsg::Retain { msg, from } => {
                self.apply_retain(msg.clone());
                self.retained_from(from, &msg);
            }
            MeshMsg::Takeover(req) => self.handle_takeover(req),
            MeshMsg::Forward {
                key,
                msg,
                delivery,
                group,
            } => {
                let item = ToDeliver {
                    msg: &msg,
                    delivery,
                    group,
                    now: Instant::now(),
                    cache_heads: false,
                };
                self.forwarded(&mut self.st.borrow_mut(), key, item);
            }
            MeshMsg::MoveAck { old } => self.move_acked(old),
            MeshMsg::MoveBarrier { old } => {
                self.send(
                    usize::from(crate::mesh::core_of(old)),
                    MeshMsg::MoveAck { old },
                );
            }
            MeshMsg::MoveDone { key } => self.move_done(key),
            MeshMsg::Api(cmd) => self.handle_api(cmd),
            MeshMsg::Cluster(m) => self.from_cluster(m),
            MeshMsg::Persist(m) => super::persist::on_mesh(self, m),
            MeshMsg::Stop => self.stop(),
        }
    }
}
