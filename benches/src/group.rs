//! Delivery accounting for one receiver group (one subscriber, or all members of a shared
//! subscription): a [`SeqTracker`] per publisher it should hear from.

use crate::seq::SeqTracker;
use crate::stats::Delivery;

/// See the module documentation.
#[derive(Clone, Debug, Default)]
pub struct GroupTracker {
    /// Publishers whose every message the group should receive, sorted.
    expects: Vec<u32>,
    /// Parallel to `expects`.
    trackers: Vec<SeqTracker>,
    /// Messages from a publisher not in `expects`.
    unexpected: u64,
}

impl GroupTracker {
    /// A group expecting the sorted publisher indices `expects`.
    pub fn new(expects: Vec<u32>) -> Self {
        let trackers = vec![SeqTracker::default(); expects.len()];
        GroupTracker {
            expects,
            trackers,
            unexpected: 0,
        }
    }

    /// Records the delivery of `seq` from `publisher`.
    pub fn record(&mut self, publisher: u32, seq: u64) {
        match self.expects.binary_search(&publisher) {
            Ok(i) => {
                self.trackers[i].record(seq);
            }
            Err(_) => self.unexpected += 1,
        }
    }

    /// Accounting against the number of messages each publisher sent.
    pub fn delivery(&self, sent: impl Fn(u32) -> u64) -> Delivery {
        let mut d = Delivery {
            unexpected: self.unexpected,
            ..Delivery::default()
        };
        for (&p, t) in self.expects.iter().zip(&self.trackers) {
            let sent = sent(p);
            let got = t.distinct_below(sent);
            d.expected += sent;
            d.distinct += got;
            d.lost += sent - got;
            d.duplicates += t.duplicates();
            d.reordered += t.reordered();
            // A sequence number never sent is a message the broker made up.
            d.unexpected += t.distinct() - got;
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_duplicates_and_strays() {
        let mut g = GroupTracker::new(vec![0, 2]);
        for s in [0, 1, 1, 3] {
            g.record(0, s);
        }
        for s in 0..5 {
            g.record(2, s);
        }
        g.record(1, 0); // publisher 1 is not for this group
        g.record(2, 99); // never sent
        let d = g.delivery(|p| if p == 0 { 4 } else { 5 });
        assert_eq!(d.expected, 9);
        assert_eq!(d.distinct, 8);
        assert_eq!(d.lost, 1); // seq 2 of publisher 0
        assert_eq!(d.duplicates, 1);
        assert_eq!(d.unexpected, 2);
    }
}
