//! The memory of idle connections: the sizes of what one holds, as the allocator is asked for
//! them (the `idle_heap` probe, `examples/idle_heap.rs`, names its allocations by these, and
//! BENCHMARKS.md, "Idle memory per connection", reports them; the size assertions stay beside
//! each type).

use crate::conn::{Conn, Parked};
use crate::shard::Entry;
use std::mem::size_of;
use std::rc::Rc;
use uringmq_session::{Session, SubOptions, Subscriptions};
use uringmq_topic::SubscriptionIndex;

/// A trie node of a core's local index: a device's filter below its shared levels is one
/// leaf node (path compression; `uringmq_topic`'s trie), boxed in its parent's table; only
/// inner nodes add a box of children and wildcard slots.
const LOCAL_NODE: usize = SubscriptionIndex::<u64, SubOptions>::node_size();
/// A trie node of a core's interest replica (only other cores' filters are in it).
const INTEREST_NODE: usize = SubscriptionIndex::<u16, ()>::node_size();
// mimalloc's 48- and 40-byte classes; a device's subscription is one per index it is in.
const _: () = assert!(LOCAL_NODE <= 48 && INTEREST_NODE <= 40);
const _: () = assert!(Subscriptions::BOX_SIZE <= 32);

/// Reference counts in front of an `Rc` or `Arc` allocation.
const COUNTS: usize = 2 * size_of::<usize>();

/// (what, bytes asked of the allocator) for each fixed-size allocation of an idle connection
/// (the session's rare box only with a user name, a will, an expiry time, a Maximum Packet
/// Size or inbound QoS 2), and (what, bytes per slot) for its slot in the core's slab (one
/// per session, in chunks) and in the registry (a slot in chunks, and 1.14-2.3 slots of a
/// hash table of their positions). The client id is an `Arc<str>`: the counts and its bytes.
/// With a subscription (`devices/<id>/cmd`): its node in the local index (and in each other
/// core's interest replica), which holds its level string (`<id>/cmd`) inline up to 15 bytes,
/// and the session's record of it (a box, which holds the filter too when it has up to 15
/// bytes).
#[doc(hidden)]
pub fn idle_path_sizes() -> Vec<(&'static str, usize)> {
    vec![
        ("Box<Parked> (a parked connection)", size_of::<Parked>()),
        ("Rc<Conn> (a connection awake)", COUNTS + size_of::<Conn>()),
        ("Box<Session>", size_of::<Session>()),
        (
            "session's rare box (user name, will, expiry, ...)",
            Session::RARE_SIZE,
        ),
        (
            "session slab slot (key, Option<Entry>)",
            size_of::<(u64, Option<Entry>)>(),
        ),
        (
            "connection map slot (u64, Rc<Conn>), awake only",
            size_of::<(u64, Rc<Conn>)>() + 1,
        ),
        (
            "registry slot (Arc<str>, u64), in chunks",
            size_of::<(std::sync::Arc<str>, u64)>(),
        ),
        ("registry chunk (64 ids)", crate::mesh::REGISTRY_CHUNK),
        ("registry table slot (u32)", size_of::<u32>() + 1),
        ("local index node", LOCAL_NODE),
        ("interest index node (other cores)", INTEREST_NODE),
        ("session's subscription box", Subscriptions::BOX_SIZE),
        ("index table slot (Box<node>)", size_of::<usize>() + 1),
    ]
}
