//! The send queue of one link: encoded frames for a peer, in order, kept after they are
//! written until the peer acknowledges them, so that a link that breaks and comes back while
//! both nodes live loses nothing.
//!
//! Frames with a sequence number (messages and retained changes) count against a byte bound;
//! beyond it a new one is dropped and counted (the peer is a subscriber, never a brake on this
//! node's clients, as a bridge's queue is). Frames without one (the link's start, interest
//! changes) are state that a link that comes up sends again in full, so on a restart
//! ([`SendQueue::rewind`]) they are dropped and the new start goes first, then every
//! unacknowledged sequenced frame again (the receiver drops what it already had by number).
//! Requests and answers of a takeover (`clientids.rs`) are written once and never kept
//! ([`SendQueue::push_once`]): each has a deadline, so one lost with its link costs a wait,
//! and kept frames would pile up on a link that carries CONNECTs but no messages.

use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;

/// Frames are encoded into blocks of this many bytes, split off one by one: the frames of a
/// block share one allocation (freed with the last of them), where a buffer grown per frame
/// took several reallocations per message.
const BLOCK: usize = 64 << 10;

/// One encoded frame.
struct Queued {
    /// 0: not sequenced.
    seq: u64,
    frame: Bytes,
}

/// Counters of a send queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendStats {
    /// Sequenced frames queued.
    pub messages: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Sequenced frames written again after the link came back.
    pub resent: u64,
    /// Sequenced frames dropped: the queue was full, or a QoS 0 message while the link is down.
    pub dropped: u64,
}

/// The frames for one peer.
pub struct SendQueue {
    frames: VecDeque<Queued>,
    /// `frames[..written]` are on the wire.
    written: usize,
    /// Bytes of sequenced frames held.
    held: usize,
    max_bytes: usize,
    next_seq: u64,
    /// Frames written once, after `frames`, and never kept.
    once: Vec<Bytes>,
    pub stats: SendStats,
}

impl SendQueue {
    /// An empty queue holding at most `max_bytes` of sequenced frames.
    pub fn new(max_bytes: usize) -> Self {
        SendQueue {
            frames: VecDeque::new(),
            written: 0,
            held: 0,
            max_bytes,
            next_seq: 1,
            once: Vec::new(),
            stats: SendStats::default(),
        }
    }

    /// Queues a sequenced frame that `encode` appends to its buffer for the given number
    /// (returning `false` if it appended nothing). `false`: dropped (full) or not encoded.
    pub fn push_seq(
        &mut self,
        buf: &mut BytesMut,
        encode: impl FnOnce(u64, &mut BytesMut) -> bool,
    ) -> bool {
        if self.held >= self.max_bytes {
            self.stats.dropped += 1;
            return false;
        }
        buf.clear();
        if buf.capacity() < BLOCK / 16 {
            buf.reserve(BLOCK);
        }
        if !encode(self.next_seq, buf) {
            return false;
        }
        let frame = buf.split().freeze();
        self.held += frame.len();
        self.stats.messages += 1;
        self.stats.bytes += frame.len() as u64;
        self.frames.push_back(Queued {
            seq: self.next_seq,
            frame,
        });
        self.next_seq += 1;
        true
    }

    /// Counts a sequenced frame not queued at all (a QoS 0 message while the link is down).
    pub fn drop_one(&mut self) {
        self.stats.dropped += 1;
    }

    /// Queues a frame without a sequence number.
    pub fn push_state(&mut self, frame: Bytes) {
        self.frames.push_back(Queued { seq: 0, frame });
    }

    /// Queues a frame to be written once: not kept after it is written, dropped with the
    /// link if it goes down first.
    pub fn push_once(&mut self, frame: Bytes) {
        self.once.push(frame);
    }

    /// Whether frames wait to be written.
    pub fn has_unwritten(&self) -> bool {
        self.written < self.frames.len() || !self.once.is_empty()
    }

    /// Appends the frames not written yet to `out` and counts them as written.
    pub fn take_unwritten(&mut self, out: &mut BytesMut) {
        for q in self.frames.iter().skip(self.written) {
            out.extend_from_slice(&q.frame);
        }
        self.written = self.frames.len();
        for f in self.once.drain(..) {
            out.extend_from_slice(&f);
        }
    }

    /// The peer has everything up to `seq`: frames written before it go.
    pub fn ack(&mut self, seq: u64) {
        while self.written > 0 {
            match self.frames.front() {
                Some(q) if q.seq <= seq => {
                    if q.seq != 0 {
                        self.held -= q.frame.len();
                    }
                    self.frames.pop_front();
                    self.written -= 1;
                }
                _ => break,
            }
        }
    }

    /// The link (re)started: `start` goes first, then every sequenced frame not acknowledged,
    /// written or not; the old state frames are dropped (`start` restates them).
    pub fn rewind(&mut self, start: Vec<Bytes>) {
        let mut index = 0;
        let written = self.written;
        self.frames.retain(|q| {
            let keep = q.seq != 0;
            if keep && index < written {
                self.stats.resent += 1;
            }
            index += 1;
            keep
        });
        for frame in start.into_iter().rev() {
            self.frames.push_front(Queued { seq: 0, frame });
        }
        self.written = 0;
        self.once.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(q: &mut SendQueue, tag: u8) -> bool {
        q.push_seq(&mut BytesMut::new(), |seq, b| {
            b.extend_from_slice(&[tag, seq as u8]);
            true
        })
    }

    fn unwritten(q: &mut SendQueue) -> Vec<u8> {
        let mut out = BytesMut::new();
        q.take_unwritten(&mut out);
        out.to_vec()
    }

    #[test]
    fn unacknowledged_frames_are_written_again_after_the_start() {
        let mut q = SendQueue::new(1024);
        q.push_state(Bytes::from_static(b"S"));
        assert!(push(&mut q, b'a'));
        assert!(push(&mut q, b'b'));
        assert_eq!(unwritten(&mut q), b"Sa\x01b\x02");
        q.ack(1);
        assert!(push(&mut q, b'c'));
        q.rewind(vec![Bytes::from_static(b"N")]);
        assert_eq!(unwritten(&mut q), b"Nb\x02c\x03");
        assert_eq!(q.stats.resent, 1, "b was written, c was not");
        q.ack(3);
        assert!(!q.has_unwritten());
        assert!(q.frames.is_empty() && q.held == 0);
    }

    #[test]
    fn frames_pushed_once_are_written_once_and_not_kept() {
        let mut q = SendQueue::new(1024);
        assert!(push(&mut q, b'a'));
        q.push_once(Bytes::from_static(b"T"));
        assert_eq!(unwritten(&mut q), b"a\x01T");
        assert!(!q.has_unwritten());
        q.rewind(Vec::new());
        assert_eq!(unwritten(&mut q), b"a\x01", "written once, not again");
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let mut q = SendQueue::new(4);
        assert!(push(&mut q, 1));
        assert!(push(&mut q, 2));
        assert!(!push(&mut q, 3), "4 bytes held");
        assert_eq!(q.stats.dropped, 1);
        unwritten(&mut q);
        q.ack(1);
        assert!(push(&mut q, 4), "room again");
    }
}
