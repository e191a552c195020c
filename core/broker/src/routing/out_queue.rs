//! The bytes queued for one connection's writer: small writes coalesced in one buffer, large
//! PUBLISH payloads kept as shared `Bytes` (the decoded PUBLISH's own buffer), so a fan-out
//! to many subscribers never copies a large payload per subscriber. The writer takes the
//! whole queue at once ([`OutQueue::take`]) and writes it with one `write` (nothing shared) or
//! `writev` ([`Gather`], which owns the segments and resumes correctly after partial writes).
//!
//! `monoio::io::AsyncWriteRentExt::write_vectored_all` is not used: in monoio 0.2.4 its
//! `IoVecMeta::consume` does not advance `iov_base` after a write that ends inside an iovec,
//! and its `read_iovec_len` ignores the consumed prefix, so a partial write would resend bytes
//! and read past the iovec array.

use bytes::{Bytes, BytesMut};
use monoio::buf::IoVecBuf;
use monoio::io::AsyncWriteRent;

/// Payloads at least this large are shared, smaller ones copied into the coalescing buffer.
/// Measured (BENCHMARKS.md, "Shared payloads"): sharing cost as much broker CPU per delivery
/// as copying at 8 KiB, 4 % less at 16 KiB and 38 % less at 64 KiB, and 2-10 % more at 2-4 KiB
/// (a memcpy of a few KiB is cheaper than the segment bookkeeping, an iovec entry and a
/// reference count that several cores bump).
pub(crate) const SHARE_THRESHOLD: usize = 16 * 1024;

/// Most iovecs one `writev` takes (`IOV_MAX` on Linux); more wait for the next call.
const MAX_IOVECS: usize = 1024;

/// Bytes waiting for a connection's writer, in order. Boxed on first use and kept while the
/// connection is attached (its writer reuses the buffer), dropped by [`OutQueue::release`]
/// when it detaches: an idle connection pays one pointer for it, not the 40 bytes inline.
#[derive(Default)]
pub(crate) struct OutQueue(Option<Box<Queued>>);

/// What an [`OutQueue`] holds once used.
#[derive(Default)]
struct Queued {
    /// Small writes after the last shared segment (all bytes, when nothing is shared).
    tail: BytesMut,
    /// Everything before `tail`: frozen runs of coalesced bytes and shared payloads. Boxed and
    /// absent unless a large payload is queued, so a connection pays one pointer for it.
    segs: Option<Box<Segments>>,
}

/// The ordered segments before the coalescing buffer, with their total length.
struct Segments {
    parts: Vec<Bytes>,
    len: usize,
}

impl OutQueue {
    /// Bytes queued: what the per-connection outbound limit is checked against.
    pub(crate) fn len(&self) -> usize {
        self.0
            .as_ref()
            .map_or(0, |q| q.tail.len() + q.segs.as_ref().map_or(0, |s| s.len))
    }

    /// True when nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Capacity of the coalescing buffer (the only allocation an empty queue may keep).
    pub(crate) fn capacity(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.tail.capacity())
    }

    fn queued(&mut self) -> &mut Queued {
        self.0.get_or_insert_with(Box::default)
    }

    /// The coalescing buffer: append small packets (acks, PUBLISH heads, small payloads).
    pub(crate) fn buf(&mut self) -> &mut BytesMut {
        &mut self.queued().tail
    }

    /// Appends a PUBLISH payload: shared when large, copied otherwise.
    pub(crate) fn push_payload(&mut self, payload: &Bytes) {
        let q = self.queued();
        if payload.len() < SHARE_THRESHOLD {
            q.tail.extend_from_slice(payload);
            return;
        }
        let segs = q.segs.get_or_insert_with(|| {
            Box::new(Segments {
                parts: Vec::new(),
                len: 0,
            })
        });
        if !q.tail.is_empty() {
            // The run so far keeps its place before the payload; the buffer's spare capacity
            // stays with `tail` for what follows.
            let run = q.tail.split().freeze();
            segs.len += run.len();
            segs.parts.push(run);
        }
        segs.len += payload.len();
        segs.parts.push(payload.clone());
    }

    /// Drops everything queued (the connection failed).
    pub(crate) fn clear(&mut self) {
        self.0 = None;
    }

    /// Gives the box and its buffer back when nothing is queued (the connection detaches).
    pub(crate) fn release(&mut self) {
        if self.is_empty() {
            self.0 = None;
        }
    }

    /// Takes everything queued for one flush, leaving `spare` (an empty buffer) to collect
    /// what is queued meanwhile.
    pub(crate) fn take(&mut self, spare: BytesMut) -> Flush {
        let q = self.queued();
        let tail = std::mem::replace(&mut q.tail, spare);
        match q.segs.take() {
            None => Flush::Flat(tail),
            Some(segs) => Flush::Vectored(Gather::new(segs.parts, tail)),
        }
    }
}

/// The bytes of one flush.
pub(crate) enum Flush {
    /// Contiguous bytes: nothing shared, or wrapped by a transport (TLS, WebSocket).
    Flat(BytesMut),
    /// Shared segments followed by the coalescing buffer.
    Vectored(Gather),
}

impl Flush {
    /// Bytes to write.
    pub(crate) fn len(&self) -> usize {
        match self {
            Flush::Flat(b) => b.len(),
            Flush::Vectored(g) => g.remaining(),
        }
    }

    /// The bytes in order, as slices (for transports that wrap them).
    pub(crate) fn parts(&self) -> Vec<&[u8]> {
        match self {
            Flush::Flat(b) => vec![&b[..]],
            Flush::Vectored(g) => g
                .parts
                .iter()
                .map(|p| &p[..])
                .chain([&g.tail[..]])
                .collect(),
        }
    }

    /// Writes everything (retrying partial writes) and gives the coalescing buffer back for
    /// reuse.
    pub(crate) async fn write_to<W: AsyncWriteRent>(
        self,
        wr: &mut W,
    ) -> (std::io::Result<()>, BytesMut) {
        match self {
            Flush::Flat(b) => {
                let (res, b) = monoio::io::AsyncWriteRentExt::write_all(wr, b).await;
                (res.map(drop), b)
            }
            Flush::Vectored(mut g) => {
                while g.remaining() > 0 {
                    let (res, back) = wr.writev(g).await;
                    g = back;
                    match res {
                        Ok(0) => return (Err(std::io::ErrorKind::WriteZero.into()), g.tail),
                        Ok(n) => g.advance(n),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return (Err(e), g.tail),
                    }
                }
                (Ok(()), g.tail)
            }
        }
    }
}

/// Owns the segments of one vectored flush and the iovecs over them; `advance` moves past
/// what the kernel took, also to the middle of a segment.
pub(crate) struct Gather {
    parts: Vec<Bytes>,
    tail: BytesMut,
    /// One entry per non-empty part, then the tail if non-empty; they point into the heap
    /// data of `parts` and `tail`, which does not move while this value owns them.
    iov: Vec<libc::iovec>,
    /// First iovec not fully written.
    next: usize,
    remaining: usize,
}

impl Gather {
    fn new(parts: Vec<Bytes>, tail: BytesMut) -> Self {
        let iov: Vec<libc::iovec> = parts
            .iter()
            .map(|p| &p[..])
            .chain([&tail[..]])
            .filter(|s| !s.is_empty())
            .map(|s| libc::iovec {
                iov_base: s.as_ptr() as *mut libc::c_void,
                iov_len: s.len(),
            })
            .collect();
        let remaining = iov.iter().map(|v| v.iov_len).sum();
        Gather {
            parts,
            tail,
            iov,
            next: 0,
            remaining,
        }
    }

    fn remaining(&self) -> usize {
        self.remaining
    }

    /// Marks `n` more bytes written. `n` never exceeds what the last `writev` was offered.
    fn advance(&mut self, mut n: usize) {
        self.remaining -= n.min(self.remaining);
        while n > 0 {
            let Some(v) = self.iov.get_mut(self.next) else {
                return;
            };
            if n < v.iov_len {
                // SAFETY: `n < iov_len`, so the new base stays inside the same segment.
                v.iov_base = unsafe { v.iov_base.cast::<u8>().add(n) }.cast();
                v.iov_len -= n;
                return;
            }
            n -= v.iov_len;
            self.next += 1;
        }
    }
}

// SAFETY: the iovecs point into heap data owned by `parts` and `tail`, which neither moves nor
// changes while the runtime owns this value (it only reads through the pointers); the slice
// from `next` holds at most `MAX_IOVECS` valid entries.
unsafe impl IoVecBuf for Gather {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iov[self.next..].as_ptr()
    }

    fn read_iovec_len(&self) -> usize {
        (self.iov.len() - self.next).min(MAX_IOVECS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// What a `writev` of at most `limit` bytes would send, then advanced past it.
    fn write_some(g: &mut Gather, limit: usize) -> Vec<u8> {
        let mut sent = Vec::new();
        let ptr = g.read_iovec_ptr();
        for i in 0..g.read_iovec_len() {
            // SAFETY: `read_iovec_len` entries from `ptr` are valid iovecs into `g`'s buffers.
            let v = unsafe { *ptr.add(i) };
            let take = v.iov_len.min(limit - sent.len());
            // SAFETY: the iovec covers `iov_len` readable bytes.
            sent.extend_from_slice(unsafe {
                std::slice::from_raw_parts(v.iov_base.cast::<u8>(), take)
            });
            if sent.len() == limit {
                break;
            }
        }
        g.advance(sent.len());
        sent
    }

    fn drain(q: &mut OutQueue, limit: usize) -> Vec<u8> {
        match q.take(BytesMut::new()) {
            Flush::Flat(b) => b.to_vec(),
            Flush::Vectored(mut g) => {
                let mut all = Vec::new();
                while g.remaining() > 0 {
                    let before = g.remaining();
                    all.extend(write_some(&mut g, limit));
                    assert!(g.remaining() < before, "no progress");
                }
                all
            }
        }
    }

    fn payload(len: usize, seed: u8) -> Bytes {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    /// Small writes, shared payloads and more small writes, with the bytes expected in order.
    fn mixed() -> (OutQueue, Vec<u8>) {
        let mut q = OutQueue::default();
        let mut want = Vec::new();
        for (i, len) in [10, SHARE_THRESHOLD, 5000, 100, SHARE_THRESHOLD - 1, 70_000]
            .into_iter()
            .enumerate()
        {
            let head = [0x30, i as u8, 0xAA];
            q.buf().extend_from_slice(&head);
            want.extend_from_slice(&head);
            let p = payload(len, i as u8);
            q.push_payload(&p);
            want.extend_from_slice(&p);
        }
        q.buf().extend_from_slice(b"tail");
        want.extend_from_slice(b"tail");
        (q, want)
    }

    #[test]
    fn small_payloads_are_copied_large_ones_shared() {
        let mut q = OutQueue::default();
        q.buf().extend_from_slice(b"head");
        q.push_payload(&payload(SHARE_THRESHOLD - 1, 1));
        assert!(q.0.as_ref().is_none_or(|q| q.segs.is_none()));
        let big = payload(SHARE_THRESHOLD, 2);
        q.push_payload(&big);
        let segs = q.0.as_ref().and_then(|q| q.segs.as_ref()).expect("shared");
        // The coalesced run, then the payload itself (same memory, not a copy).
        assert_eq!(segs.parts.len(), 2);
        assert_eq!(segs.parts[1].as_ptr(), big.as_ptr());
        assert_eq!(q.len(), 4 + SHARE_THRESHOLD - 1 + SHARE_THRESHOLD);
    }

    #[test]
    fn order_is_kept_whole_and_across_partial_writes() {
        for limit in [1, 2, 3, 7, 100, 4096, 16_383, 16_384, 65_536, usize::MAX] {
            let (mut q, want) = mixed();
            assert_eq!(q.len(), want.len());
            let got = drain(&mut q, limit.min(want.len()));
            assert_eq!(got, want, "write limit {limit}");
            assert!(q.is_empty());
        }
    }

    #[test]
    fn writes_ending_on_segment_boundaries() {
        let mut q = OutQueue::default();
        let (la, lb) = (SHARE_THRESHOLD + 3000, SHARE_THRESHOLD + 4000);
        let (a, b) = (payload(la, 1), payload(lb, 2));
        q.push_payload(&a);
        q.push_payload(&b);
        let Flush::Vectored(mut g) = q.take(BytesMut::new()) else {
            panic!("shared payloads make a vectored flush");
        };
        assert_eq!(write_some(&mut g, la), a[..]);
        assert_eq!(write_some(&mut g, 1000), b[..1000]);
        assert_eq!(write_some(&mut g, lb - 1000), b[1000..]);
        assert_eq!(g.remaining(), 0);
    }

    #[test]
    fn at_most_iov_max_entries_per_write() {
        let mut q = OutQueue::default();
        let mut want = Vec::new();
        for i in 0..1500 {
            q.buf().extend_from_slice(&[i as u8]);
            want.push(i as u8);
            let p = payload(SHARE_THRESHOLD, i as u8);
            q.push_payload(&p);
            want.extend_from_slice(&p);
        }
        let Flush::Vectored(mut g) = q.take(BytesMut::new()) else {
            panic!("shared payloads make a vectored flush");
        };
        assert_eq!(g.read_iovec_len(), MAX_IOVECS);
        let mut got = Vec::new();
        while g.remaining() > 0 {
            got.extend(write_some(&mut g, usize::MAX));
        }
        assert_eq!(got, want);
    }

    #[test]
    fn length_counts_shared_bytes_for_the_outbound_limit() {
        let (q, want) = mixed();
        assert_eq!(q.len(), want.len());
        let mut q = q;
        let flush = q.take(BytesMut::with_capacity(64));
        assert_eq!(flush.len(), want.len());
        assert_eq!(flush.parts().concat(), want);
        // What is queued during the flush counts alone.
        assert!(q.is_empty());
        q.buf().extend_from_slice(b"ack");
        assert_eq!(q.len(), 3);
        assert!(q.capacity() >= 64);
        q.push_payload(&payload(SHARE_THRESHOLD, 9));
        q.clear();
        assert!(q.is_empty());
        assert!(q.0.as_ref().is_none_or(|q| q.segs.is_none()));
    }

    #[test]
    fn empty_queue_flushes_flat() {
        let mut q = OutQueue::default();
        assert!(matches!(q.take(BytesMut::new()), Flush::Flat(b) if b.is_empty()));
    }

    #[test]
    fn partial_socket_writes_deliver_every_byte_in_order() {
        // A real socket with a small send buffer: writev returns short counts.
        monoio::start::<monoio::LegacyDriver, _>(async {
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            let reader = monoio::spawn(async move {
                let (mut s, _) = listener.accept().await.expect("accept");
                let mut got = Vec::new();
                loop {
                    let (res, buf) = monoio::io::AsyncReadRent::read(&mut s, vec![0; 3000]).await;
                    match res.expect("read") {
                        0 => return got,
                        n => got.extend_from_slice(&buf[..n]),
                    }
                }
            });
            let mut s = monoio::net::TcpStream::connect(addr)
                .await
                .expect("connect");
            // SAFETY: the fd belongs to `s`, which outlives this borrow.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(s.as_raw_fd()) };
            socket2::SockRef::from(&fd)
                .set_send_buffer_size(4096)
                .expect("sndbuf");
            let (mut q, want) = mixed();
            let (res, _) = q.take(BytesMut::new()).write_to(&mut s).await;
            res.expect("write");
            drop(s);
            assert_eq!(reader.await, want);
        });
    }
}
