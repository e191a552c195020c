//! The cluster thread's side of a session takeover across nodes: it runs each CONNECT's
//! [`Fetch`] (`clientids.rs`, the design), answers other nodes' requests as the owner of a
//! client id (its [`Directory`]) or as the node that holds the session (taken away on a
//! core, `Shard::take_away`), and ends fetches past their deadline.
//!
//! Requests and answers are written once on the links ([`SendQueue::push_once`]): a link
//! that goes down loses them and the fetch ends at its deadline, with a new session for the
//! client, as when the node it waits for leaves.
//!
//! It also keeps the directory small: the ids whose session ended on this node are
//! collected over one batch of the cores' messages and their owners told to forget this
//! node for them (`IdForget`, one frame per owner and batch), and after a membership change
//! the directory keeps only the ids this node still owns (`clientids.rs` says when an entry
//! goes and why that order is safe).
//!
//! [`SendQueue::push_once`]: super::send_queue::SendQueue::push_once

use super::clientids::{Directory, Fetch, Reply, Step};
use super::frame::Frame;
use super::rendezvous::owner_of;
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
    /// Ids whose session ended on this node in the batch being applied.
    ended: Vec<Arc<str>>,
}

/// Bytes of client ids in one `IdForget` frame before another one starts.
const FORGET_FRAME_BYTES: usize = 64 << 10;

/// Whether a core of this node holds (or is claiming) a client id: its registry.
pub(crate) type HeldHere = dyn Fn(&str) -> bool + Send + Sync;

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

    /// Peer `from` has no session of these ids any more (this node is their owner).
    pub(crate) fn forget(&mut self, from: &str, client_ids: &[String]) {
        for id in client_ids {
            self.directory.forget(id, from);
        }
    }

    /// The session of `id` ended on this node; its owner hears of it in [`Self::send_forgets`].
    pub(crate) fn ended(&mut self, id: Arc<str>) {
        self.ended.push(id);
    }

    /// Tells the owners of the ids whose session ended here to forget this node (`me`) for
    /// them, leaving out each id a core of this node holds again (`held`). Checked now, just
    /// before the frames are queued: a CONNECT that claims the id later sends its `IdClaim`
    /// after them on the same link, so the owner sees both in the node's order.
    pub(crate) fn send_forgets<'a>(
        &mut self,
        me: &Arc<str>,
        members: impl Iterator<Item = &'a str> + Clone,
        held: &dyn Fn(&str) -> bool,
        wire: &mut dyn Wire,
    ) {
        let mut per_owner: HashMap<&str, Vec<String>> = HashMap::new();
        for id in std::mem::take(&mut self.ended) {
            if held(&id) {
                continue;
            }
            match owner_of(&id, members.clone()) {
                Some(owner) if owner != &**me => {
                    per_owner.entry(owner).or_default().push(id.to_string())
                }
                // Its own directory (or no view yet: it decided alone, see `Fetch::start`).
                _ => {
                    self.directory.forget(&id, me);
                }
            }
        }
        for (owner, ids) in per_owner {
            for client_ids in frames_of(ids) {
                // A link that is down loses it: see `clientids.rs` for what stays then.
                wire.send(owner, &Frame::IdForget { client_ids });
            }
        }
    }

    /// After a membership change: the directory keeps only the ids `me` still owns.
    pub(crate) fn keep_owned<'a>(
        &mut self,
        me: &str,
        members: impl Iterator<Item = &'a str> + Clone,
    ) -> usize {
        self.directory.keep_owned(me, members)
    }

    /// The client ids this node's directory holds.
    pub(crate) fn directory_len(&self) -> usize {
        self.directory.len()
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

/// `ids` cut into the lists of `IdForget` frames of about [`FORGET_FRAME_BYTES`] each.
fn frames_of(ids: Vec<String>) -> Vec<Vec<String>> {
    let mut frames = vec![Vec::new()];
    let mut bytes = 0;
    for id in ids {
        bytes += id.len() + 2;
        frames.last_mut().expect("one at least").push(id);
        if bytes >= FORGET_FRAME_BYTES {
            frames.push(Vec::new());
            bytes = 0;
        }
    }
    frames.retain(|f| !f.is_empty());
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: [&str; 3] = ["a", "b", "c"];

    /// Every link up; what was sent, in order.
    #[derive(Default)]
    struct Sent(Vec<(String, Frame)>);

    impl Wire for Sent {
        fn send(&mut self, peer: &str, f: &Frame) -> bool {
            self.0.push((peer.to_owned(), f.clone()));
            true
        }
    }

    fn owned_by(node: &str, n: usize) -> Vec<String> {
        (0..)
            .map(|i| format!("id-{i}"))
            .filter(|id| owner_of(id, NODES) == Some(node))
            .take(n)
            .collect()
    }

    #[test]
    fn ended_sessions_are_forgotten_by_their_owners_unless_held_again() {
        let (me, mut t, mut wire) = (Arc::<str>::from("a"), Takeovers::default(), Sent::default());
        let (on_b, on_c, mine) = (owned_by("b", 3), owned_by("c", 1), owned_by("a", 2));
        // This node owns `mine` and recorded its own CONNECTs of them.
        for id in &mine {
            t.claim(id, "a");
        }
        let held = on_b[2].clone();
        for id in on_b.iter().chain(&on_c).chain(&mine) {
            t.ended(id.as_str().into());
        }
        t.send_forgets(&me, NODES.into_iter(), &|id| id == held, &mut wire);
        assert_eq!(t.directory_len(), 0, "its own directory forgot at once");
        let mut sent = wire.0;
        sent.sort_by(|x, y| x.0.cmp(&y.0));
        let forget = |ids: &[String]| Frame::IdForget {
            client_ids: ids.to_vec(),
        };
        assert_eq!(
            sent,
            [
                ("b".to_owned(), forget(&on_b[..2])),
                ("c".to_owned(), forget(&on_c))
            ],
            "one frame per owner, without the id a core holds again"
        );
        // Nothing left for the next batch.
        let mut wire = Sent::default();
        t.send_forgets(&me, NODES.into_iter(), &|_| false, &mut wire);
        assert!(wire.0.is_empty());
    }

    #[test]
    fn a_long_list_of_ids_is_cut_into_frames() {
        let ids: Vec<String> = (0..20_000).map(|i| format!("client-{i:08}")).collect();
        let frames = frames_of(ids.clone());
        assert!(frames.len() > 1, "{}", frames.len());
        assert!(frames
            .iter()
            .all(|f| f.len() * 17 <= FORGET_FRAME_BYTES + 17));
        assert_eq!(frames.concat(), ids);
        assert!(frames_of(Vec::new()).is_empty());
    }
}
