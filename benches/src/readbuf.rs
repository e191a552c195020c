//! A growable read buffer that frames are parsed out of in place.
//!
//! Idle connections start tiny (a pending read pins its buffer, see design notes); a buffer that
//! a read filled doubles, up to a cap, so busy subscribers read large batches per syscall.

use monoio::buf::{IoBufMut, SliceMut};
use monoio::io::AsyncReadRent;
use std::io;

/// Largest buffer a connection grows to.
const MAX_CAP: usize = 1 << 20;

/// See the module documentation.
#[derive(Debug)]
pub struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
}

impl ReadBuf {
    /// An empty buffer of `cap` bytes.
    pub fn new(cap: usize) -> Self {
        ReadBuf {
            buf: Vec::with_capacity(cap),
            start: 0,
        }
    }

    /// Unparsed bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Marks `n` bytes as parsed.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Makes room for the next read: moves unparsed bytes to the front, and doubles the buffer
    /// if it is still full, or if `need` (a known frame length) does not fit.
    fn make_room(&mut self, need: usize) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let cap = self.buf.capacity();
        if self.buf.len() == cap || need > cap {
            let want = need.max(cap * 2).max(64);
            let target = if need > MAX_CAP {
                need
            } else {
                want.min(MAX_CAP).max(self.buf.len() + 1)
            };
            self.buf.reserve_exact(target - self.buf.len());
        }
    }

    /// Reads once from `r` after the unparsed bytes; 0 means end of stream.
    pub async fn fill<R: AsyncReadRent>(&mut self, r: &mut R) -> io::Result<usize> {
        let need = crate::wire::frame_len(self.data()).unwrap_or(0);
        self.make_room(need);
        let buf = std::mem::take(&mut self.buf);
        let len = buf.len();
        let (res, slice): (io::Result<usize>, SliceMut<Vec<u8>>) =
            r.read(buf.slice_mut(len..)).await;
        self.buf = slice.into_inner();
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consume_all_resets() {
        let mut b = ReadBuf::new(8);
        b.buf.extend_from_slice(b"abcdef");
        b.consume(2);
        assert_eq!(b.data(), b"cdef");
        b.consume(10);
        assert!(b.data().is_empty());
        assert_eq!(b.start, 0);
    }

    #[test]
    fn room_compacts_then_grows() {
        let mut b = ReadBuf::new(8);
        b.buf.extend_from_slice(b"abcdefgh");
        b.consume(6);
        b.make_room(0);
        assert_eq!(b.data(), b"gh");
        assert!(b.buf.capacity() >= 8);
        b.buf.extend_from_slice(&[0; 6]);
        let before = b.buf.capacity();
        b.make_room(0);
        assert!(b.buf.capacity() > before);
    }

    #[test]
    fn grows_to_fit_a_known_large_frame() {
        let mut b = ReadBuf::new(16);
        b.make_room(3 << 20);
        assert!(b.buf.capacity() >= 3 << 20);
    }
}
