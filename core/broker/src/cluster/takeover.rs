//! The cluster thread's side of a session takeover across nodes: it runs each CONNECT's
//! [`Fetch`] (`clientids.rs`, the design), answers other nodes' requests as the owner of a
//! client id (its [`Directory`]) or as the node that holds the session (taken away on a
//! core, `Shard::take_away`), and ends fetches past their deadline.
//!
//! Requests and answers are written once on the links ([`SendQueue::push_once`]): a link
//! that goes down loses them and the fetch ends at its deadline, with a new session for the
//! client, as when the node it waits for leaves.
//!
//! [`SendQueue::push_once`]: super::send_queue::SendQueue::push_once

use super::clientids::{Directory, Fetch, Reply, Step};
use super::frame::Frame;
use crate::mesh::cluster::FetchReply;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tracing::warn;

/// Sends takeover frames to peers by name; `false`: no link to it is up.
pub(crate) trait Wire {
    fn send(&mut self, peer: &str, f: &Frame) -> bool;
}

/// A CONNECT of this node waiting for its session.
struct Pending {
    id: Arc<str>,
    clean_start: bool,
    fetch: Fetch,
    reply: FetchReply,
}

/// The takeovers of the cluster thread.
#[derive(Default)]
pub(crate) struct Takeovers {
    /// The client ids this node owns, with the node of their latest CONNECT.
    directory: Directory,
    /// This node's fetches by request number.
    pending: HashMap<u64, Pending>,
    next_req: u64,
}

/// What starts a fetch: a CONNECT of `id` on this node (`me`).
pub(crate) struct Start<'a> {
    pub me: &'a Arc<str>,
    pub id: Arc<str>,
    pub clean_start: bool,
    pub reply: FetchReply,
    pub now: Instant,
}

impl Takeovers {
    /// A CONNECT of this node found no session here: asks its owner (or this node's own
    /// directory), then the node that had it.
    pub(crate) fn start<'a>(
        &mut self,
        s: Start<'_>,
        members: impl IntoIterator<Item = &'a str>,
        wire: &mut dyn Wire,
    ) {
        let (fetch, step) = Fetch::start(s.me, &s.id, members, &mut self.directory, s.now);
        self.next_req += 1;
        let req = self.next_req;
        let pending = Pending {
            id: s.id,
            clean_start: s.clean_start,
            fetch,
            reply: s.reply,
        };
        self.pending.insert(req, pending);
        self.proceed(req, step, wire);
    }

    /// Does what a fetch's step says; a step whose node cannot be reached ends it.
    fn proceed(&mut self, req: u64, mut step: Step, wire: &mut dyn Wire) {
        loop {
            let Some(p) = self.pending.get_mut(&req) else {
                return;
            };
            let (node, frame) = match step {
                Step::AskOwner(node) => {
                    let client_id = p.id.to_string();
                    (node, Frame::IdClaim { req, client_id })
                }
                Step::AskHolder(node) => {
                    let (client_id, clean_start) = (p.id.to_string(), p.clean_start);
                    let f = Frame::SessionTake {
                        req,
                        client_id,
                        clean_start,
                    };
                    (node, f)
                }
                Step::Done(image) => return self.finish(req, image),
            };
            if wire.send(&node, &frame) {
                return;
            }
            step = p.fetch.give_up();
        }
    }

    /// Answers the CONNECT: the session's image decoded here (not on its core), if any.
    fn finish(&mut self, req: u64, image: Option<Bytes>) {
        let Some(p) = self.pending.remove(&req) else {
            return;
        };
        let session = image.and_then(|i| match crate::store::image::decode(i) {
            Ok(rs) => Some(Box::new(rs)),
            Err(e) => {
                warn!(client_id = %p.id, error = %e, "cluster: a session image that cannot be read: new session");
                None
            }
        });
        // A CONNECT that is gone (its connection closed) drops its receiver; nothing to do.
        let _ = p.reply.send(session);
    }

    /// Peer `from` has a CONNECT for `id` (this node is its owner): records it and returns
    /// the node of the previous CONNECT.
    pub(crate) fn claim(&mut self, id: &str, from: &str) -> Option<Arc<str>> {
        self.directory.claim(id, &Arc::from(from))
    }

    /// An answer from peer `from` to this node's request `req`.
    pub(crate) fn answer(
        &mut self,
        from: &str,
        req: u64,
        reply: Reply,
        now: Instant,
        wire: &mut dyn Wire,
    ) {
        let step = self
            .pending
            .get_mut(&req)
            .and_then(|p| p.fetch.answer(from, reply, now));
        if let Some(step) = step {
            self.proceed(req, step, wire);
        }
    }

    /// Ends the fetches past their deadline or waiting for a node that left.
    pub(crate) fn tick<'a>(
        &mut self,
        now: Instant,
        members: impl Iterator<Item = &'a str> + Clone,
        wire: &mut dyn Wire,
    ) {
        let ended: Vec<(u64, Step)> = self
            .pending
            .iter_mut()
            .filter_map(|(req, p)| Some((*req, p.fetch.check(now, members.clone())?)))
            .collect();
        for (req, step) in ended {
            self.proceed(req, step, wire);
        }
    }
}
