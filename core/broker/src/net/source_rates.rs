//! One core's per-source-address connection buckets of one listener
//! (`max_connection_rate_per_source`), checked before the listener's own bucket so that one
//! host connecting in a loop spends its own rate, not everyone's.
//!
//! Owned by the listener's accept loop on the core: no lock, no sharing. A fixed table of
//! [`SLOTS`] entries, allocated only where the limit is set, so memory stays bounded whatever
//! the number of sources: a source is looked up in [`WAYS`] neighbouring slots (keyed hash, so
//! a client cannot choose its neighbours); a slot whose bucket is full again remembers nothing
//! and is reused. When all of a new source's slots hold sources still in debt (a flood from
//! over a thousand addresses at once), the new source is let through to the listener's bucket,
//! which still bounds the total: failing open here keeps an innocent client from sharing a
//! flooder's slot. An IPv6 source counts by its /64, which one host usually holds whole.

use std::net::{IpAddr, Ipv6Addr};
use uringmq_session::TokenBucket;

/// Entries per table.
const SLOTS: usize = 1024;
/// Neighbouring slots a source may use.
const WAYS: usize = 4;

/// Connection buckets by source address.
pub(crate) struct SourceRates {
    rate: u64,
    share: u64,
    slots: Box<[Option<(IpAddr, TokenBucket)>]>,
    hasher: ahash::RandomState,
}

impl SourceRates {
    /// `rate` accepts a second per source over the listener, split over `share` cores.
    pub(crate) fn new(rate: u64, share: u64) -> Self {
        SourceRates {
            rate,
            share,
            slots: (0..SLOTS).map(|_| None).collect(),
            hasher: ahash::RandomState::new(),
        }
    }

    /// Whether `source` may open one more connection at `now_ms`.
    pub(crate) fn admit(&mut self, source: IpAddr, now_ms: u32) -> bool {
        let source = host(source);
        let start = self.hasher.hash_one(source) as usize;
        let mut free = None;
        for i in 0..WAYS {
            let k = (start + i) % SLOTS;
            match &mut self.slots[k] {
                Some((a, bucket)) if *a == source => return bucket.try_take(1, now_ms),
                Some((_, bucket)) if !bucket.is_full(now_ms) => {}
                _ => {
                    free.get_or_insert(k);
                }
            }
        }
        let Some(k) = free else {
            return true;
        };
        let mut bucket = TokenBucket::new(self.rate, self.share, now_ms);
        let admitted = bucket.try_take(1, now_ms);
        self.slots[k] = Some((source, bucket));
        admitted
    }
}

/// The address a source is counted by: IPv4 whole, IPv6 by its /64.
fn host(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn one_source_over_its_rate_does_not_stop_another() {
        let mut r = SourceRates::new(2, 1);
        assert!(r.admit(v4(1), 0) && r.admit(v4(1), 0));
        assert!(!r.admit(v4(1), 0), "burst of two");
        assert!(r.admit(v4(2), 0), "another source has its own bucket");
        assert!(r.admit(v4(1), 500), "refilled at the rate");
    }

    #[test]
    fn an_ipv6_host_counts_by_its_64() {
        let mut r = SourceRates::new(1, 1);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(r.admit(a, 0));
        assert!(!r.admit(b, 0), "same /64");
        assert!(r.admit(other, 0));
    }

    #[test]
    fn the_table_stays_bounded_and_fails_open_when_full_of_debtors() {
        let mut r = SourceRates::new(1, 1);
        for i in 0..(4 * SLOTS) as u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            assert!(r.admit(ip, 0), "a new source passes once, tracked or not");
        }
        // Paid-off sources free their slots: a known one is tracked again afterwards.
        assert!(r.admit(v4(1), 5000));
        assert!(!r.admit(v4(1), 5000));
    }
}
