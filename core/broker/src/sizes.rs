//! The memory of idle connections: the sizes of what one holds, as the allocator is asked for
//! them (the `idle_heap` probe, `examples/idle_heap.rs`, names its allocations by these, and
//! BENCHMARKS.md, "Idle memory per connection", reports them; the size assertions stay beside
//! each type).

use crate::conn::{Conn, Parked};
use crate::shard::Entry;
use std::mem::size_of;
use std::rc::Rc;
use uringmq_session::Session;

/// Reference counts in front of an `Rc` or `Arc` allocation.
const COUNTS: usize = 2 * size_of::<usize>();

/// (what, bytes asked of the allocator) for each fixed-size allocation of an idle connection,
/// and (what, bytes per slot) for its slots in the core's and the registry's hash tables (a
/// table keeps between 1.14 and 2.3 slots per entry). The client id is an `Arc<str>`: the
/// counts and its bytes.
#[doc(hidden)]
pub fn idle_path_sizes() -> Vec<(&'static str, usize)> {
    vec![
        ("Box<Parked> (a parked connection)", size_of::<Parked>()),
        ("Rc<Conn> (a connection awake)", COUNTS + size_of::<Conn>()),
        ("Box<Session>", size_of::<Session>()),
        (
            "session map slot (u64, Entry)",
            size_of::<(u64, Entry)>() + 1,
        ),
        (
            "connection map slot (u64, Rc<Conn>), awake only",
            size_of::<(u64, Rc<Conn>)>() + 1,
        ),
        (
            "registry slot (Arc<str>, u64)",
            size_of::<(std::sync::Arc<str>, u64)>() + 1,
        ),
    ]
}
