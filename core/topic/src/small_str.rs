//! [`SmallStr`]: an immutable string in 16 bytes, inline when short.
//!
//! For the strings that every subscription of a device fleet keeps: a trie node's run of
//! levels (a device's own filter `devices/<id>/cmd` is one leaf node per index whose run is
//! `<id>/cmd`) and the session's record of its filter. As a `Box<str>` each was a second
//! allocation of 8-24 bytes beside its owner. Up to [`INLINE`] bytes live in the 16 bytes a
//! `Box<str>` took; longer strings are boxed behind a thin pointer (two allocations: rare
//! in device fleets, and the owner stays small).

use std::ops::Deref;

/// Longest run kept inline.
const INLINE: usize = 15;

/// An immutable string, inline up to 15 bytes.
pub struct SmallStr(Repr);

enum Repr {
    // The length's unused values (16..=255) let `Long` be told apart without a tag byte.
    Short([u8; INLINE], Len),
    // A thin pointer (a `Box<str>` is two words): the enum stays 16 bytes.
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

const _: () = assert!(std::mem::size_of::<SmallStr>() == 16);

impl Clone for SmallStr {
    fn clone(&self) -> Self {
        Self::from(&**self)
    }
}

impl std::fmt::Debug for SmallStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

impl From<&str> for SmallStr {
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

impl Deref for SmallStr {
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
    fn short_strings_inline_and_long_ones_boxed() {
        for run in [
            "",
            "a",
            "123/cmd",
            "exactly-15-byte",
            "sixteen-bytes-xy",
            "ü/ß/€",
        ] {
            let r = SmallStr::from(run);
            assert_eq!(&*r, run);
            assert_eq!(matches!(r.0, Repr::Short(..)), run.len() <= INLINE, "{run}");
        }
    }
}
