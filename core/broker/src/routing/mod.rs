//! What routing is built of, below the cores: the retained store (`retained.rs`), shared
//! subscription groups (`shared_sub.rs`), encoding a PUBLISH for a subscriber (`encode.rs`) and
//! the out queue it is encoded into (`out_queue.rs`). A core's routing decisions (interest
//! index, matching, delivery) are `Shard` methods in `shard/route.rs` and `shard/deliver.rs`.

mod encode;
mod out_queue;
mod retained;
mod shared_sub;

pub(crate) use encode::{write_publish, Outgoing, Written};
pub(crate) use out_queue::{Flush, OutQueue, SHARE_THRESHOLD};
pub(crate) use retained::RetainedStore;
pub(crate) use shared_sub::{group_filter, SharedSubs};
