//! [`Run`]: the level string of a filter-trie node, inline in the node when short.
//!
//! A device's own filter (`devices/<id>/cmd`) is one leaf node per index whose run is
//! `<id>/cmd`; as a `Box<str>` that was a second allocation of 8-24 bytes beside every node.
//! Runs of up to [`INLINE`] bytes live in the node's 16 bytes; longer ones are boxed twice
//! (a thin pointer keeps the node at 16 bytes for the run; they are rare in device fleets).

use std::ops::Deref;

/// Longest run kept inline.
const INLINE: usize = 15;

/// A node's run of levels (see [`crate::trie`]).
pub(crate) struct Run(Repr);

enum Repr {
    // The length's unused values (16..=255) let `Long` be told apart without a tag byte.
    Short([u8; INLINE], Len),
    #[allow(clippy::box_collection)]
    Long(Box<Box<str>>),
}

/// Length of an inline run: an enum, so that its unused values are a niche.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Len {
    L0,
    L1,
    L2,
    L3,
    L4,
    L5,
    L6,
    L7,
    L8,
    L9,
    L10,
    L11,
    L12,
    L13,
    L14,
    L15,
}

const LENS: [Len; INLINE + 1] = [
    Len::L0,
    Len::L1,
    Len::L2,
    Len::L3,
    Len::L4,
    Len::L5,
    Len::L6,
    Len::L7,
    Len::L8,
    Len::L9,
    Len::L10,
    Len::L11,
    Len::L12,
    Len::L13,
    Len::L14,
    Len::L15,
];

const _: () = assert!(std::mem::size_of::<Run>() == 16);

impl From<&str> for Run {
    fn from(run: &str) -> Self {
        match LENS.get(run.len()) {
            Some(&len) => {
                let mut bytes = [0; INLINE];
                bytes[..run.len()].copy_from_slice(run.as_bytes());
                Self(Repr::Short(bytes, len))
            }
            None => Self(Repr::Long(Box::new(run.into()))),
        }
    }
}

impl Deref for Run {
    type Target = str;

    #[inline]
    fn deref(&self) -> &str {
        match &self.0 {
            Repr::Short(bytes, len) => {
                let bytes = &bytes[..*len as usize];
                // SAFETY: `from` copied these bytes from a `&str` and cut at its length.
                unsafe { std::str::from_utf8_unchecked(bytes) }
            }
            Repr::Long(run) => run,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_runs_inline_and_long_ones_boxed() {
        for run in [
            "",
            "a",
            "123/cmd",
            "exactly-15-byte",
            "sixteen-bytes-xy",
            "ü/ß/€",
        ] {
            let r = Run::from(run);
            assert_eq!(&*r, run);
            assert_eq!(matches!(r.0, Repr::Short(..)), run.len() <= INLINE, "{run}");
        }
    }
}
