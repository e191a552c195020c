//! MQTT topic names, filters, the subscription index and the retained store.
//!
//! Pure data structures, no I/O: the broker keeps one [`SubscriptionIndex`] per core for its
//! own sessions, a replicated coarse `SubscriptionIndex<CoreId, _>` to pick target cores, a
//! [`SharedIndex`] for `$share/` groups and a [`RetainedStore`] per core.
#![warn(missing_docs)]

mod children;
mod error;
mod filter;
mod index;
mod levels;
mod matches;
mod members;
mod name;
mod retained;
mod shared;
mod shared_filter;
mod small_str;
#[cfg(test)]
mod test_support;
mod trie;

pub use error::TopicError;
pub use filter::validate_topic_filter;
pub use index::{Insert, Remove, SubscriptionIndex};
pub use levels::{check_max_levels, level_count, DEFAULT_MAX_LEVELS};
pub use matches::matches;
pub use members::Members;
pub use name::{validate_topic_name, MAX_TOPIC_LEN};
pub use retained::RetainedStore;
pub use shared::SharedIndex;
pub use shared_filter::{SharedFilter, SHARE_PREFIX_LEVEL};
pub use small_str::SmallStr;
