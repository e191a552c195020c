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
//!
//! **What the directory keeps, and when it goes.** An entry (id -> node) stays while that
//! node has a session of the id: connected, or offline because it outlives its connection
//! (3.1.1 clean session 0, v5 expiry > 0), so that a CONNECT elsewhere finds it. It goes
//! - when the node has no session of the id any more: one that ended with its connection
//!   (3.1.1 clean session, v5 expiry 0, however the connection ended: DISCONNECT, a drop, a
//!   kick through the API), one whose expiry passed, or one an in-process removal ended. The
//!   core that ends it tells its cluster thread, which collects the ids over one batch of
//!   the cores' messages and sends each owner one `IdForget` (`takeover.rs`); the owner
//!   removes an entry only if it still names the sender, so a newer CONNECT elsewhere keeps
//!   its entry. The sender leaves out an id that a core of it claimed again meanwhile (its
//!   registry, read on the cluster thread just before the frame is queued); a CONNECT that
//!   claims it later sends its own `IdClaim` after that frame on the same link, so the owner
//!   applies both in the order they happened on the node and never forgets a newer claim.
//!   A session that moved to another node needs nothing: the entry names that node already.
//! - when ownership moves (a node joined or left): the owner drops the ids it no longer owns,
//!   which nobody asks it about again (their new owner starts without them, as said above).
//!
//! So an owner holds about one entry per session of its ids that is alive somewhere, and
//! `uringmq_cluster_client_ids` shows how many. What can stay longer: an `IdForget` written
//! on a link that goes down is lost like the other requests, and an entry that names a node
//! that died or restarted without its sessions outlives them; each goes when its id
//! connects again (the entry then names the new node) and that session ends, or when the
//! id's ownership moves.

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
/// that does not find its session on its node and once per session that ends.
#[derive(Default)]
pub(crate) struct Directory {
    map: HashMap<Arc<str>, Arc<str>, ahash::RandomState>,
}

impl Directory {
    /// Records that `node` now has `id`; returns the node that had it before.
    pub(crate) fn claim(&mut self, id: &str, node: &Arc<str>) -> Option<Arc<str>> {
        self.map.insert(Arc::from(id), node.clone())
    }

    /// `node` has no session of `id` any more: the entry goes if it still names `node` (a
    /// newer CONNECT elsewhere keeps it). Returns whether it went.
    pub(crate) fn forget(&mut self, id: &str, node: &str) -> bool {
        if self.map.get(id).is_none_or(|n| **n != *node) {
            return false;
        }
        self.map.remove(id);
        crate::table::shrink_table(&mut self.map);
        true
    }

    /// After a membership change: drops the ids `me` no longer owns among `members` (their
    /// new owner has no record of them, so nobody asks here again). Nothing when `me` is not
    /// in the view (an owner decides only from a view that has it).
    pub(crate) fn keep_owned<'a>(
        &mut self,
        me: &str,
        members: impl Iterator<Item = &'a str> + Clone,
    ) -> usize {
        if !members.clone().any(|m| m == me) {
            return 0;
        }
        let before = self.map.len();
        self.map
            .retain(|id, _| owner_of(id, members.clone()) == Some(me));
        crate::table::shrink_table(&mut self.map);
        before - self.map.len()
    }

    /// The ids recorded.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
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

    #[test]
    fn a_forget_takes_the_entry_only_from_the_node_it_names() {
        let mut d = Directory::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        d.claim("id", &a);
        // A CONNECT on b came first: a's late forget leaves b's entry.
        d.claim("id", &b);
        assert!(!d.forget("id", "a"));
        assert_eq!(d.len(), 1);
        assert_eq!(d.claim("id", &b), Some(b.clone()), "still names b");
        assert!(d.forget("id", "b"));
        assert_eq!(d.len(), 0);
        // Forgetting what is not there is nothing, and the next CONNECT finds no one.
        assert!(!d.forget("id", "b"));
        assert!(!d.forget("never", "a"));
        assert_eq!(d.claim("id", &a), None);
    }

    #[test]
    fn a_churn_of_ended_sessions_leaves_nothing_and_gives_memory_back() {
        let mut d = Directory::default();
        let a: Arc<str> = "a".into();
        let ids: Vec<String> = (0..5000).map(|i| format!("clean-{i}")).collect();
        for id in &ids {
            d.claim(id, &a);
        }
        let grown = d.map.capacity();
        for id in &ids {
            assert!(d.forget(id, "a"));
        }
        assert_eq!(d.len(), 0);
        assert!(
            d.map.capacity() * 4 < grown,
            "{} of {grown}",
            d.map.capacity()
        );
    }

    #[test]
    fn after_a_membership_change_the_owner_keeps_only_its_ids() {
        let mut d = Directory::default();
        let holder: Arc<str> = "c".into();
        let ids: Vec<String> = (0..300).map(|i| format!("id-{i}")).collect();
        let mine: Vec<&String> = ids
            .iter()
            .filter(|id| owner_of(id, ["a", "b"]) == Some("b"))
            .collect();
        for id in &mine {
            d.claim(id, &holder);
        }
        // Without a view that has this node, nothing is decided.
        assert_eq!(d.keep_owned("b", ["a", "c"].into_iter()), 0);
        assert_eq!(d.keep_owned("b", [].into_iter()), 0);
        // c joins: the ids c now owns go, the others stay.
        let now_c = mine
            .iter()
            .filter(|id| owner_of(id, NODES) == Some("c"))
            .count();
        assert!(now_c > 0 && now_c < mine.len(), "{now_c} of {}", mine.len());
        assert_eq!(d.keep_owned("b", NODES.into_iter()), now_c);
        assert_eq!(d.len(), mine.len() - now_c);
        for id in &mine {
            let kept = d.forget(id, "c");
            assert_eq!(kept, owner_of(id, NODES) == Some("b"), "{id}");
        }
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
