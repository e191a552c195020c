//! The hasher of a session's maps: ahash with seeds drawn once per process.
//!
//! A session has several maps keyed by what the client chooses (filters, packet ids, topics),
//! so they must be seeded against hash flooding; but `ahash::RandomState` is 32 bytes in every
//! map, and a million idle sessions would carry that for nothing. `Seeded` is zero-sized and
//! reads the process's seeds.

use std::hash::BuildHasher;
use std::sync::OnceLock;

/// Zero-sized `BuildHasher` over process-wide random ahash seeds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Seeded;

impl BuildHasher for Seeded {
    type Hasher = ahash::AHasher;

    #[inline]
    fn build_hasher(&self) -> ahash::AHasher {
        static SEEDS: OnceLock<ahash::RandomState> = OnceLock::new();
        SEEDS.get_or_init(ahash::RandomState::new).build_hasher()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_sized_and_consistent() {
        assert_eq!(std::mem::size_of::<Seeded>(), 0);
        assert_eq!(Seeded.hash_one("a/b"), Seeded.hash_one("a/b"));
        assert_ne!(Seeded.hash_one("a/b"), Seeded.hash_one("a/c"));
    }
}
