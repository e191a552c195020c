//! The stamp every published payload starts with: who sent it, its sequence number and when.
//!
//! Subscribers read it back to measure latency (send time in the payload) and to count lost,
//! duplicated and reordered messages (sequence number per publisher). The rest of the payload is
//! zero padding up to the requested size.

use thiserror::Error;

/// Bytes taken by the stamp: the smallest payload the load generator can send.
pub const STAMP_LEN: usize = 24;

/// Marks our own payloads so that a stray message on a topic is counted, not misread.
const MAGIC: [u8; 4] = *b"ULD1";

/// The decoded stamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Publisher index within its worker process's shard.
    pub publisher: u32,
    /// 0, 1, 2 ... per publisher.
    pub seq: u64,
    /// `CLOCK_MONOTONIC` nanoseconds when the message was put into the send buffer.
    pub sent_ns: u64,
}

/// Why a payload is not one of ours.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum StampError {
    /// Shorter than [`STAMP_LEN`].
    #[error("payload of {0} bytes is shorter than the {STAMP_LEN}-byte stamp")]
    Short(usize),
    /// Does not start with the magic bytes.
    #[error("payload does not start with the load generator's magic bytes")]
    Foreign,
}

impl Stamp {
    /// Appends the stamp followed by zero padding, `payload_len` bytes in all
    /// (at least [`STAMP_LEN`]).
    pub fn write(&self, payload_len: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.publisher.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.sent_ns.to_be_bytes());
        out.resize(out.len() + payload_len.saturating_sub(STAMP_LEN), 0);
    }

    /// Reads the stamp at the start of a payload.
    pub fn read(payload: &[u8]) -> Result<Stamp, StampError> {
        if payload.len() < STAMP_LEN {
            return Err(StampError::Short(payload.len()));
        }
        if payload[..4] != MAGIC {
            return Err(StampError::Foreign);
        }
        let u32_at = |i: usize| {
            u32::from_be_bytes([payload[i], payload[i + 1], payload[i + 2], payload[i + 3]])
        };
        let u64_at = |i: usize| (u64::from(u32_at(i)) << 32) | u64::from(u32_at(i + 4));
        Ok(Stamp {
            publisher: u32_at(4),
            seq: u64_at(8),
            sent_ns: u64_at(16),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_padding() {
        let s = Stamp {
            publisher: 7,
            seq: u64::MAX - 3,
            sent_ns: 123_456_789_012,
        };
        let mut out = vec![0xAA];
        s.write(100, &mut out);
        assert_eq!(out.len(), 101);
        assert_eq!(Stamp::read(&out[1..]), Ok(s));
        assert!(out[1 + STAMP_LEN..].iter().all(|&b| b == 0));
    }

    #[test]
    fn never_shorter_than_the_stamp() {
        let mut out = Vec::new();
        Stamp {
            publisher: 1,
            seq: 2,
            sent_ns: 3,
        }
        .write(4, &mut out);
        assert_eq!(out.len(), STAMP_LEN);
    }

    #[test]
    fn rejects_short_and_foreign_payloads() {
        assert_eq!(Stamp::read(b"hello"), Err(StampError::Short(5)));
        assert_eq!(Stamp::read(&[0u8; 40]), Err(StampError::Foreign));
    }
}
