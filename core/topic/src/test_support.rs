//! Random topics and filters over a tiny alphabet of levels, so that they collide often,
//! including `$` levels, empty levels and both wildcards.

use proptest::prelude::*;

fn level() -> impl Strategy<Value = &'static str> {
    // "ab" beside "a": a node found by its first level must not be taken for a longer one;
    // the long one makes runs longer than a trie node holds inline.
    prop::sample::select(&["a", "ab", "b", "", "$s", "abcdefghijklmnop"][..])
}

/// Joins levels; a lone empty level would be the empty string, which is no valid name or filter
/// [MQTT-4.7.3-1], so it becomes `/` (two empty levels).
fn join(levels: Vec<&str>) -> String {
    match levels.join("/") {
        empty if empty.is_empty() => "/".to_owned(),
        joined => joined,
    }
}

/// A valid topic name of 1 to 4 levels.
pub(crate) fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(level(), 1..5).prop_map(join)
}

/// A valid topic filter of 1 to 4 levels, some `+`, maybe ending in `#`.
pub(crate) fn filter() -> impl Strategy<Value = String> {
    let filter_level = prop_oneof![3 => level(), 1 => Just("+")];
    (prop::collection::vec(filter_level, 0..4), any::<bool>()).prop_map(|(mut levels, hash)| {
        if hash || levels.is_empty() {
            levels.push(if hash { "#" } else { "a" });
        }
        join(levels)
    })
}
