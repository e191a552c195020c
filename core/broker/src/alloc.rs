//! The process's allocator: mimalloc, asked so that each object lands in its own size class.
//!
//! `mimalloc::MiMalloc` hands every request to `mi_malloc_aligned(size, align)`. mimalloc v3
//! serves that from the size's class only while the class's current page has a free block at
//! hand that happens to be aligned; when the page's free list has run out (its freed blocks
//! not yet collected, or a new page needed), it over-allocates `size + align - 1` from the
//! next class up instead of refilling the page, and that page is never refilled by aligned
//! requests again. Measured in the `idle_heap` probe (BENCHMARKS.md, "toward 500 B"): most
//! 192-byte `Session`s sat in 224-byte blocks and the 96-byte trie nodes in 112-byte blocks,
//! on pages a third full. Every mimalloc block is aligned to 8 bytes at least, so requests
//! that need no more go to the plain `mi_malloc` family, which keeps its class; wider
//! alignments still take the aligned calls.
//!
//! The binary, the benchmarks and the probe install it (`#[global_allocator]`), so their
//! figures are the broker's.

use libmimalloc_sys as mi;
use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// The alignment every mimalloc block has (a word).
const PLAIN_ALIGN: usize = std::mem::size_of::<usize>();

/// The broker's global allocator (see the module doc).
pub struct Allocator;

// SAFETY: every request goes to mimalloc, with the alignment it asks for unless mimalloc's
// blocks already have it (PLAIN_ALIGN); mimalloc frees blocks of either family with `mi_free`.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: plain mimalloc calls; the size and alignment are the caller's.
        unsafe {
            if l.align() <= PLAIN_ALIGN {
                mi::mi_malloc(l.size()) as *mut u8
            } else {
                mi::mi_malloc_aligned(l.size(), l.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe {
            if l.align() <= PLAIN_ALIGN {
                mi::mi_zalloc(l.size()) as *mut u8
            } else {
                mi::mi_zalloc_aligned(l.size(), l.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, _l: Layout) {
        // SAFETY: `p` came from this allocator, i.e. from mimalloc.
        unsafe { mi::mi_free(p as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: `p` came from this allocator with layout `l`.
        unsafe {
            if l.align() <= PLAIN_ALIGN {
                mi::mi_realloc(p as *mut c_void, new) as *mut u8
            } else {
                mi::mi_realloc_aligned(p as *mut c_void, new, l.align()) as *mut u8
            }
        }
    }
}
