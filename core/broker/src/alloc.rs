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
//! Long-lived objects of idle connections go to a heap of their own ([`long_lived`]). An idle
//! connection's trie node is allocated while its connection's transient objects of the same
//! size class are live (the runtime's 96-byte stream, freed when the connection detaches), so
//! the nodes ended up one per page slot in two, pages half full for as long as the
//! subscriptions last. Code that makes such objects (a subscription's index node and level
//! strings, its record in the session, a parked connection's record) runs inside
//! [`long_lived`]: this thread's allocations then come from its own pages of a second mimalloc
//! heap, which hold nothing short-lived. Freeing needs nothing special (`mi_free` frees a
//! block of any heap, from any thread). The cost on every allocation is one thread-local read.
//!
//! The binary, the Python module, the e2e tests, the store benchmark and the probe install it
//! (`#[global_allocator]`), so all of them hold memory as the binary does. Where an application
//! embedding the broker installs another allocator, [`long_lived`] just runs its closure.

use libmimalloc_sys as mi;
use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::OnceLock;

/// mimalloc v3's thread-local view of a heap (not in `libmimalloc_sys`'s bindings).
#[repr(C)]
struct Theap {
    _opaque: [u8; 0],
}

unsafe extern "C" {
    fn mi_heap_theap(heap: *mut mi::mi_heap_t) -> *mut Theap;
    fn mi_theap_malloc(theap: *mut Theap, size: usize) -> *mut c_void;
    fn mi_theap_zalloc(theap: *mut Theap, size: usize) -> *mut c_void;
    fn mi_theap_realloc(theap: *mut Theap, p: *mut c_void, size: usize) -> *mut c_void;
}

thread_local! {
    /// This thread's theap of the long-lived heap while a [`long_lived`] scope is open.
    static SCOPE: Cell<*mut Theap> = const { Cell::new(ptr::null_mut()) };
}

/// The long-lived heap, created on first use; one for the process (each thread allocates
/// from its own pages of it).
static LONG_LIVED: AtomicPtr<mi::mi_heap_t> = AtomicPtr::new(ptr::null_mut());

/// Whether the global allocator is mimalloc (else a scope has nothing to steer).
static MIMALLOC: OnceLock<bool> = OnceLock::new();

fn long_lived_heap() -> *mut mi::mi_heap_t {
    let h = LONG_LIVED.load(Ordering::Acquire);
    if !h.is_null() {
        return h;
    }
    // SAFETY: creates a heap; it lives as long as the process.
    let new = unsafe { mi::mi_heap_new() };
    match LONG_LIVED.compare_exchange(ptr::null_mut(), new, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => new,
        Err(other) => {
            // SAFETY: `new` is ours and empty; another thread's heap won.
            unsafe { mi::mi_heap_delete(new) };
            other
        }
    }
}

/// Runs `f` with this thread's allocations coming from the long-lived heap (see the module
/// doc). For what stays as long as an idle connection does; short-lived allocations inside
/// are harmless (their blocks are reused by the next scope) but should be few.
pub(crate) fn long_lived<R>(f: impl FnOnce() -> R) -> R {
    let ours = *MIMALLOC.get_or_init(|| {
        let b = Box::new(0u64);
        // SAFETY: a lookup in mimalloc's page map; any address is allowed.
        unsafe { mi::mi_is_in_heap_region(&*b as *const u64 as *const c_void) }
    });
    if !ours {
        return f();
    }
    // SAFETY: the heap exists; its theap for this thread is created on first use.
    let theap = unsafe { mi_heap_theap(long_lived_heap()) };
    struct Restore(*mut Theap);
    impl Drop for Restore {
        fn drop(&mut self) {
            SCOPE.set(self.0);
        }
    }
    let _restore = Restore(SCOPE.replace(theap));
    f()
}

/// Lets mimalloc return what this thread freed in the long-lived heap (see
/// `conn::hibernate::collect_memory`).
pub(crate) fn collect_long_lived() {
    let h = LONG_LIVED.load(Ordering::Acquire);
    if !h.is_null() {
        // SAFETY: collects this thread's theap of a live heap.
        unsafe { mi::mi_heap_collect(h, false) }
    }
}

/// The alignment every mimalloc block has (a word).
const PLAIN_ALIGN: usize = std::mem::size_of::<usize>();

/// The broker's global allocator (see the module doc).
pub struct Allocator;

/// A block for `l`, zeroed or not: from the open [`long_lived`] scope's theap, else the
/// thread's default one; wider alignments than a word from the default one, aligned.
///
/// # Safety
/// As `GlobalAlloc::alloc`: `l` has a non-zero size.
#[inline]
unsafe fn block(l: Layout, zero: bool) -> *mut u8 {
    let (size, align) = (l.size(), l.align());
    // SAFETY: plain mimalloc calls with the caller's size and alignment.
    let p = unsafe {
        if align > PLAIN_ALIGN {
            if zero {
                mi::mi_zalloc_aligned(size, align)
            } else {
                mi::mi_malloc_aligned(size, align)
            }
        } else {
            let t = SCOPE.get();
            match (t.is_null(), zero) {
                (true, false) => mi::mi_malloc(size),
                (true, true) => mi::mi_zalloc(size),
                (false, false) => mi_theap_malloc(t, size),
                (false, true) => mi_theap_zalloc(t, size),
            }
        }
    };
    p as *mut u8
}

// SAFETY: every request goes to mimalloc, with the alignment it asks for unless mimalloc's
// blocks already have it (PLAIN_ALIGN), from this thread's theap of the main or the long-lived
// heap; mimalloc frees blocks of any heap with `mi_free`. Wider alignments always take the
// main heap (rare; the aligned theap calls are not all exported).
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller's layout.
        unsafe { block(l, false) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller's layout.
        unsafe { block(l, true) }
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
                let t = SCOPE.get();
                if t.is_null() {
                    mi::mi_realloc(p as *mut c_void, new) as *mut u8
                } else {
                    mi_theap_realloc(t, p as *mut c_void, new) as *mut u8
                }
            } else {
                mi::mi_realloc_aligned(p as *mut c_void, new, l.align()) as *mut u8
            }
        }
    }
}
