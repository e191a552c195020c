//! The literal children of a trie node, keyed by their level string.
//!
//! Most nodes have one or a handful of children (`device`, `temp`), where a linear scan over a
//! vec beats hashing; a node with many (`site/{n}` for thousands of sites) switches to a hash
//! table. The table holds the children boxed and looks them up by the level string each child
//! already owns, so a level is stored once, and the hasher lives once per index.
//!
//! Boxed, not inline, in the table: a table keeps up to twice as many slots as children, and
//! an empty slot of an inline table costs a whole node (~100 bytes) where a boxed one costs a
//! pointer. For a million devices subscribing to `devices/<id>/cmd` that was ~200 bytes per
//! subscription and index (BENCHMARKS.md, idle memory per connection).

use ahash::RandomState;
use hashbrown::HashTable;

/// A trie node that knows the level it is found by.
pub(crate) trait Level {
    /// The level this node is found by among its siblings.
    fn key(&self) -> &str;

    /// `self.key() == level`, for nodes that can answer it without finding their key.
    #[inline]
    fn has_key(&self, level: &str) -> bool {
        self.key() == level
    }
}

/// Above this many children a node hashes instead of scanning.
const SCAN_MAX: usize = 8;

pub(crate) enum Children<N> {
    Few(Vec<N>),
    Many(Box<HashTable<Box<N>>>),
}

impl<N> Default for Children<N> {
    fn default() -> Self {
        Self::Few(Vec::new())
    }
}

impl<N: Level> Children<N> {
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Self::Few(few) => few.is_empty(),
            Self::Many(many) => many.is_empty(),
        }
    }

    #[inline]
    pub(crate) fn get(&self, level: &str, hasher: &RandomState) -> Option<&N> {
        match self {
            Self::Few(few) => few.iter().find(|n| n.has_key(level)),
            Self::Many(many) => many
                .find(hasher.hash_one(level), |n| n.has_key(level))
                .map(|n| &**n),
        }
    }

    pub(crate) fn get_mut(&mut self, level: &str, hasher: &RandomState) -> Option<&mut N> {
        match self {
            Self::Few(few) => few.iter_mut().find(|n| n.has_key(level)),
            Self::Many(many) => many
                .find_mut(hasher.hash_one(level), |n| n.has_key(level))
                .map(|n| &mut **n),
        }
    }

    /// The child for `level`, created by `make` if absent.
    pub(crate) fn get_or_insert_with(
        &mut self,
        level: &str,
        hasher: &RandomState,
        make: impl FnOnce() -> N,
    ) -> &mut N {
        if let Self::Few(few) = self {
            if few.len() >= SCAN_MAX && !few.iter().any(|n| n.has_key(level)) {
                let mut many = HashTable::with_capacity(few.len() * 2);
                for node in few.drain(..) {
                    many.insert_unique(hasher.hash_one(node.key()), Box::new(node), |n| {
                        hasher.hash_one(n.key())
                    });
                }
                *self = Self::Many(Box::new(many));
            }
        }
        match self {
            Self::Few(few) => {
                let at = match few.iter().position(|n| n.has_key(level)) {
                    Some(at) => at,
                    None => {
                        // Exact growth: `Vec` would otherwise round one child up to four
                        // node-sized slots, and most nodes have exactly one child.
                        few.reserve_exact(1);
                        few.push(make());
                        few.len() - 1
                    }
                };
                &mut few[at]
            }
            Self::Many(many) => many
                .entry(
                    hasher.hash_one(level),
                    |n| n.has_key(level),
                    |n| hasher.hash_one(n.key()),
                )
                .or_insert_with(|| Box::new(make()))
                .into_mut(),
        }
    }

    /// The only child, taken out, if there is exactly one.
    pub(crate) fn take_only(&mut self) -> Option<N> {
        match self {
            Self::Few(few) if few.len() == 1 => {
                let only = few.pop();
                *few = Vec::new();
                only
            }
            _ => None,
        }
    }

    /// Removes and returns the child for `level`; a table that has shrunk well below the scan
    /// limit goes back to a vec so churn does not leave big tables behind.
    pub(crate) fn remove(&mut self, level: &str, hasher: &RandomState) -> Option<N> {
        match self {
            Self::Few(few) => {
                let at = few.iter().position(|n| n.has_key(level))?;
                let node = few.swap_remove(at);
                if few.is_empty() {
                    // Give the allocation back: empty leaves are the common case.
                    *few = Vec::new();
                }
                Some(node)
            }
            Self::Many(many) => {
                let node = many
                    .find_entry(hasher.hash_one(level), |n| n.has_key(level))
                    .ok()?
                    .remove()
                    .0;
                if many.len() < SCAN_MAX / 2 {
                    let few: Vec<N> = many.drain().map(|n| *n).collect();
                    *self = Self::Few(few);
                } else if many.len() * 4 < many.capacity() {
                    // Shrink only at a quarter full so churn around a size cannot thrash.
                    many.shrink_to(many.len() * 2, |n| hasher.hash_one(n.key()));
                }
                Some(*node)
            }
        }
    }

    pub(crate) fn iter(&self) -> Iter<'_, N> {
        match self {
            Self::Few(few) => Iter::Few(few.iter()),
            Self::Many(many) => Iter::Many(many.iter()),
        }
    }
}

/// Iterator over children in no particular order.
pub(crate) enum Iter<'a, N> {
    Few(std::slice::Iter<'a, N>),
    Many(hashbrown::hash_table::Iter<'a, Box<N>>),
}

impl<'a, N> Iterator for Iter<'a, N> {
    type Item = &'a N;

    #[inline]
    fn next(&mut self) -> Option<&'a N> {
        match self {
            Self::Few(it) => it.next(),
            Self::Many(it) => it.next().map(|n| &**n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Leaf(Box<str>);

    impl Level for Leaf {
        fn key(&self) -> &str {
            &self.0
        }
    }

    fn levels(children: &Children<Leaf>) -> Vec<String> {
        let mut v: Vec<String> = children.iter().map(|n| n.0.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn grows_into_a_table_and_shrinks_back() {
        let hasher = RandomState::new();
        let mut children = Children::default();
        for i in 0..100 {
            let level = i.to_string();
            children.get_or_insert_with(&level, &hasher, || Leaf(level.as_str().into()));
        }
        assert!(matches!(children, Children::Many(_)));
        for i in 0..100 {
            assert_eq!(
                children.get(&i.to_string(), &hasher).map(|n| &*n.0),
                Some(&*i.to_string())
            );
        }
        assert!(children.get("100", &hasher).is_none());
        for i in 0..98 {
            assert!(children.remove(&i.to_string(), &hasher).is_some());
        }
        assert!(matches!(children, Children::Few(_)));
        assert_eq!(levels(&children), ["98", "99"]);
        assert!(children.remove("0", &hasher).is_none());
        children.remove("98", &hasher);
        children.remove("99", &hasher);
        assert!(children.is_empty());
    }

    #[test]
    fn insert_is_idempotent() {
        let hasher = RandomState::new();
        let mut children = Children::default();
        children.get_or_insert_with("a", &hasher, || Leaf("a".into()));
        children.get_or_insert_with("a", &hasher, || Leaf("a".into()));
        assert_eq!(levels(&children), ["a"]);
        assert!(children.get_mut("a", &hasher).is_some());
    }
}
