//! Rendezvous hashing over the live membership: which node owns a key (a client id's
//! directory entry, a configured bridge). Every node computes the same owner from its view
//! without talking, and a join or leave moves only the keys of the node that joined or left.

/// A 64-bit hash of `(node, id)` that every node computes alike (FNV-1a, then a finaliser
/// that spreads its low-entropy bits; not keyed, since all nodes must agree, and the keys
/// only choose which live node owns them).
fn weight(node: &str, id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes().chain([0xff]).chain(id.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64's finaliser.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The owner of `id` (a client id, a bridge name) among `members`; `None` without members.
pub(crate) fn owner_of<'a>(
    id: &str,
    members: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    members
        .into_iter()
        .max_by_key(|node| (weight(node, id), *node))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const NODES: [&str; 3] = ["a", "b", "c"];

    #[test]
    fn the_owner_is_stable_spread_and_moves_only_with_its_node() {
        let mut per_node = HashMap::new();
        for i in 0..3000 {
            let id = format!("client-{i}");
            let o = owner_of(&id, NODES).unwrap();
            *per_node.entry(o).or_insert(0) += 1;
            // Order of the view does not matter.
            assert_eq!(owner_of(&id, ["c", "a", "b"]), Some(o));
            // Without an unrelated node the owner stays; without the owner it moves.
            let others: Vec<&str> = NODES.iter().copied().filter(|n| *n != o).collect();
            let fewer: Vec<&str> = NODES.iter().copied().filter(|n| *n != others[0]).collect();
            assert_eq!(owner_of(&id, fewer), Some(o));
            assert_ne!(owner_of(&id, others.clone()), Some(o));
        }
        for n in NODES {
            assert!((800..1200).contains(&per_node[n]), "{per_node:?}");
        }
        assert_eq!(owner_of("x", []), None);
    }
}
