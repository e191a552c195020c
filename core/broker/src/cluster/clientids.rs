//! The client-id registry across nodes, without etcd per CONNECT: which node holds the
//! session of a client id, and the exchange that moves it to the node a client connects to.
//!
//! **Owner.** Each client id has an owner node, chosen by rendezvous hashing over the live
//! members ([`owner_of`]: the member with the highest hash of (node, id)), so every node
//! computes the same owner from its membership view, and a join or leave moves only the ids
//! whose owner joined or left. The owner keeps a [`Directory`]: for each id it owns, the node
//! of its latest CONNECT.
//!
//! **A CONNECT on node B** whose id has no session on B (its local claim found no
//! predecessor, or the predecessor's session had left B) runs a [`Fetch`]:
//! 1. it asks the id's owner O to record B and name the previous node (`IdClaim` /
//!    `IdClaimed`); when B is the owner this is a call on B's own directory, no hop;
//! 2. if that is another node A, it asks A for the session (`SessionTake` / `SessionGiven`):
//!    A takes the session over as a core would for a local successor (the old connection
//!    drained and closed with 0x8E on v5, its will published only if the session ends), and
//!    answers with its image (`store::image`: the durable store's records, one format), or
//!    none when there is none or clean start ended it;
//! 3. B installs the image and answers CONNACK with session present.
//!
//! Races. The owner orders the CONNECTs of one id: two nodes that connect it at once are
//! recorded one after the other, so the second asks the first, whose own CONNECT is still
//! waiting for the session: there the request joins the local chain of claims
//! (`shard/moves.rs`), is parked until that install and then answered, so the first
//! connection gets CONNACK and then DISCONNECT 0x8E, and one session remains, on the second.
//! On the node that gives a session away the request claims the id like a local CONNECT
//! (a key of its own, see `Shard::take_away` in `shard/import.rs`), so a CONNECT of that id on that node
//! in the meantime is ordered before or after it, never beside it; one that finds the
//! session gone asks the owner as well, and follows it to where it went.
//!
//! **Membership changes never wedge a CONNECT**: every hop has a deadline
//! ([`OWNER_WAIT`], [`TAKE_WAIT`]) and a hop to a node that leaves the view ends at once.
//! The CONNECT then goes on with what it has: no answer from the owner or the holder means
//! a new session (session present 0). This is what is lost when ownership moves: the new
//! owner of an id (after the old one died or a node joined) has no record of it until its
//! next CONNECT, so that CONNECT starts a new session, and the old one stays offline on its
//! node until it expires (or, with `session_store`, is resumed from there). A dead holder's
//! sessions are gone with it unless `session_store` keeps them.

use super::rendezvous::owner_of;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a CONNECT waits for the id's owner to answer.
pub(crate) const OWNER_WAIT: Duration = Duration::from_secs(2);
/// How long a CONNECT waits for the session's node to hand it over (the old connection's
/// drain, up to 500 ms, plus a round trip and the image).
pub(crate) const TAKE_WAIT: Duration = Duration::from_secs(3);

/// On the owner node: client id -> the node of its latest CONNECT. Kept by the cluster thread
/// alone (the cores reach it through their queue to that thread), touched once per CONNECT
/// that does not find its session on its node.
#[derive(Default)]
pub(crate) struct Directory {
    map: HashMap<Arc<str>, Arc<str>, ahash::RandomState>,
}

impl Directory {
    /// Records that `node` now has `id`; returns the node that had it before.
    pub(crate) fn claim(&mut self, id: &str, node: &Arc<str>) -> Option<Arc<str>> {
        self.map.insert(Arc::from(id), node.clone())
    }
}

/// What a [`Fetch`] asks for next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Send `IdClaim` for the id to this node (its owner), and wait until the deadline.
    AskOwner(Arc<str>),
    /// Send `SessionTake` to this node (the previous holder), and wait until the deadline.
    AskHolder(Arc<str>),
    /// Done: the session was elsewhere and this is its image (`None`: start a new one).
    Done(Option<bytes::Bytes>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Waiting {
    Owner(Arc<str>),
    Holder(Arc<str>),
    Finished,
}

/// One CONNECT's search for its session across the cluster, as a state machine: the cluster
/// thread feeds it answers, deadlines and membership changes and does what [`Step`] says.
#[derive(Debug)]
pub(crate) struct Fetch {
    me: Arc<str>,
    waiting: Waiting,
    deadline: Instant,
}

impl Fetch {
    /// Starts a fetch on node `me` for `id`; `members` is the live view. When `me` owns the
    /// id, its own `directory` answers at once.
    pub(crate) fn start<'a>(
        me: &Arc<str>,
        id: &str,
        members: impl IntoIterator<Item = &'a str>,
        directory: &mut Directory,
        now: Instant,
    ) -> (Fetch, Step) {
        let mut f = Fetch {
            me: me.clone(),
            waiting: Waiting::Finished,
            deadline: now,
        };
        let owner = owner_of(id, members).map(Arc::<str>::from);
        let step = match owner {
            Some(o) if o != *me => {
                f.wait(Waiting::Owner(o.clone()), now + OWNER_WAIT);
                Step::AskOwner(o)
            }
            // This node owns the id (or knows no members yet: it decides alone).
            _ => f.claimed(directory.claim(id, me), now),
        };
        (f, step)
    }

    fn wait(&mut self, w: Waiting, deadline: Instant) {
        self.waiting = w;
        self.deadline = deadline;
    }

    /// The node it would ask cannot be reached (no link): it ends without a session.
    pub(crate) fn give_up(&mut self) -> Step {
        self.finish(None)
    }

    fn finish(&mut self, image: Option<bytes::Bytes>) -> Step {
        self.waiting = Waiting::Finished;
        Step::Done(image)
    }

    /// The owner recorded this node and named the previous one.
    pub(crate) fn claimed(&mut self, previous: Option<Arc<str>>, now: Instant) -> Step {
        match previous {
            Some(node) if node != self.me => {
                self.wait(Waiting::Holder(node.clone()), now + TAKE_WAIT);
                Step::AskHolder(node)
            }
            // Nowhere else: the session, if any, is on this node and the local claim
            // handled it.
            _ => self.finish(None),
        }
    }

    /// An answer from `from`: the owner's `IdClaimed` (`previous`) or the holder's
    /// `SessionGiven` (`image`). Answers from a node it does not wait for are ignored.
    pub(crate) fn answer(&mut self, from: &str, reply: Reply, now: Instant) -> Option<Step> {
        match (&self.waiting, reply) {
            (Waiting::Owner(o), Reply::Claimed(previous)) if **o == *from => {
                Some(self.claimed(previous, now))
            }
            (Waiting::Holder(h), Reply::Given(image)) if **h == *from => Some(self.finish(image)),
            _ => None,
        }
    }

    /// Time passed: past the deadline, or with the awaited node gone from `members`, the
    /// fetch ends without a session (bounded: a membership change never wedges a CONNECT).
    pub(crate) fn check<'a>(
        &mut self,
        now: Instant,
        mut members: impl Iterator<Item = &'a str>,
    ) -> Option<Step> {
        let node = match &self.waiting {
            Waiting::Owner(n) | Waiting::Holder(n) => n.clone(),
            Waiting::Finished => return None,
        };
        if now >= self.deadline || !members.any(|m| *m == *node) {
            return Some(self.finish(None));
        }
        None
    }
}

/// An answer a [`Fetch`] waits for.
#[derive(Debug)]
pub(crate) enum Reply {
    /// The owner's: the node that had the id before (`IdClaimed`).
    Claimed(Option<Arc<str>>),
    /// The holder's: the session's image, if it had one to give (`SessionGiven`).
    Given(Option<bytes::Bytes>),
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: [&str; 3] = ["a", "b", "c"];

    #[test]
    fn the_directory_names_the_previous_node() {
        let mut d = Directory::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        assert_eq!(d.claim("id", &a), None);
        assert_eq!(d.claim("id", &b), Some(a.clone()));
        assert_eq!(d.claim("other", &b), None);
    }

    fn owned_by(node: &str) -> String {
        (0..)
            .map(|i| format!("id-{i}"))
            .find(|id| owner_of(id, NODES) == Some(node))
            .unwrap()
    }

    #[test]
    fn a_fetch_asks_the_owner_then_the_holder() {
        let (me, now, mut d) = (Arc::<str>::from("b"), Instant::now(), Directory::default());
        let id = owned_by("c");
        let (mut f, step) = Fetch::start(&me, &id, NODES, &mut d, now);
        assert_eq!(step, Step::AskOwner("c".into()));
        // An answer from another node is not the owner's.
        assert!(f
            .answer("a", Reply::Claimed(Some("a".into())), now)
            .is_none());
        let step = f.answer("c", Reply::Claimed(Some("a".into())), now);
        assert_eq!(step, Some(Step::AskHolder("a".into())));
        let image = bytes::Bytes::from_static(b"image");
        let step = f.answer("a", Reply::Given(Some(image.clone())), now);
        assert_eq!(step, Some(Step::Done(Some(image))));
        assert!(f.check(now + TAKE_WAIT * 2, NODES.into_iter()).is_none());
    }

    #[test]
    fn the_owner_answers_itself_and_a_session_here_needs_no_hop() {
        let (me, now, mut d) = (Arc::<str>::from("b"), Instant::now(), Directory::default());
        let id = owned_by("b");
        let (_, step) = Fetch::start(&me, &id, NODES, &mut d, now);
        assert_eq!(step, Step::Done(None));
        let (_, step) = Fetch::start(&me, &id, NODES, &mut d, now);
        assert_eq!(
            step,
            Step::Done(None),
            "the previous CONNECT was on this node"
        );
        let (mut f, step) = Fetch::start(&"a".into(), &id, NODES, &mut d, now);
        assert_eq!(step, Step::AskOwner("b".into()));
        // The owner's directory named b: a asks b.
        let prev = d.claim(&id, &"a".into());
        assert_eq!(
            f.answer("b", Reply::Claimed(prev), now),
            Some(Step::AskHolder("b".into()))
        );
    }

    #[test]
    fn a_deadline_or_a_node_leaving_ends_a_fetch_without_a_session() {
        let (me, now, mut d) = (Arc::<str>::from("b"), Instant::now(), Directory::default());
        let id = owned_by("c");
        let (mut f, _) = Fetch::start(&me, &id, NODES, &mut d, now);
        assert!(f.check(now, NODES.into_iter()).is_none());
        assert_eq!(
            f.check(now + OWNER_WAIT, NODES.into_iter()),
            Some(Step::Done(None))
        );
        let (mut f, _) = Fetch::start(&me, &id, NODES, &mut d, now);
        let _ = f.answer("c", Reply::Claimed(Some("a".into())), now);
        assert_eq!(f.check(now, ["b", "c"].into_iter()), Some(Step::Done(None)));
        // Finished: late answers change nothing.
        assert!(f.answer("a", Reply::Given(None), now).is_none());
    }
}
