//! Sequence accounting for one (receiver group, publisher) pair: which sequence numbers arrived,
//! how many twice, how many out of order.
//!
//! Stored as sorted, disjoint half-open ranges, so an in-order stream costs one range whatever its
//! length, and a shared-subscription member seeing every other message still merges into one range
//! once the group's members have all reported into the same tracker.

/// Received sequence numbers of one publisher, as seen by one receiver group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeqTracker {
    /// Sorted, disjoint, non-adjacent `[start, end)` ranges.
    ranges: Vec<(u64, u64)>,
    received: u64,
    duplicates: u64,
    reordered: u64,
}

/// What one arrival was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// First time seen, after everything seen before.
    InOrder,
    /// First time seen, but a later sequence number arrived before it.
    Reordered,
    /// Seen before.
    Duplicate,
}

impl SeqTracker {
    /// Records one arrival.
    pub fn record(&mut self, seq: u64) -> Arrival {
        self.received += 1;
        // Fast path: the next number after the last range (the common in-order case).
        if let Some(last) = self.ranges.last_mut() {
            if seq == last.1 {
                last.1 += 1;
                return Arrival::InOrder;
            }
        }
        // First range whose end is >= seq: it may contain seq or be adjacent to it.
        let i = self.ranges.partition_point(|&(_, end)| end < seq);
        if let Some(&(start, end)) = self.ranges.get(i) {
            if start <= seq && seq < end {
                self.duplicates += 1;
                return Arrival::Duplicate;
            }
        }
        let arrival = if i < self.ranges.len() {
            Arrival::Reordered
        } else {
            Arrival::InOrder
        };
        if arrival == Arrival::Reordered {
            self.reordered += 1;
        }
        let joins_left = i < self.ranges.len() && self.ranges[i].1 == seq;
        let joins_right =
            |j: usize, ranges: &Vec<(u64, u64)>| j < ranges.len() && ranges[j].0 == seq + 1;
        if joins_left {
            self.ranges[i].1 = seq + 1;
            if joins_right(i + 1, &self.ranges) {
                self.ranges[i].1 = self.ranges[i + 1].1;
                self.ranges.remove(i + 1);
            }
        } else if joins_right(i, &self.ranges) {
            self.ranges[i].0 = seq;
        } else {
            self.ranges.insert(i, (seq, seq + 1));
        }
        arrival
    }

    /// Distinct sequence numbers received.
    pub fn distinct(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }

    /// All arrivals, duplicates included.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Arrivals of a number already seen.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// First arrivals that came after a higher number.
    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    /// Distinct numbers below `sent` (numbers at or above it were never published, which would be
    /// a broker inventing messages; they are not counted as delivered).
    pub fn distinct_below(&self, sent: u64) -> u64 {
        self.ranges
            .iter()
            .map(|&(s, e)| e.min(sent).saturating_sub(s))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream_is_one_range() {
        let mut t = SeqTracker::default();
        for s in 0..1000 {
            assert_eq!(t.record(s), Arrival::InOrder);
        }
        assert_eq!(t.ranges.len(), 1);
        assert_eq!((t.distinct(), t.duplicates(), t.reordered()), (1000, 0, 0));
    }

    #[test]
    fn gaps_count_as_missing_until_filled() {
        let mut t = SeqTracker::default();
        for s in [0, 1, 5, 6] {
            t.record(s);
        }
        assert_eq!(t.distinct(), 4);
        assert_eq!(t.ranges, vec![(0, 2), (5, 7)]);
        assert_eq!(t.record(3), Arrival::Reordered);
        assert_eq!(t.record(2), Arrival::Reordered);
        assert_eq!(t.record(4), Arrival::Reordered);
        assert_eq!(t.ranges, vec![(0, 7)]);
        assert_eq!(t.reordered(), 3);
    }

    #[test]
    fn duplicates_are_counted_once_each() {
        let mut t = SeqTracker::default();
        for s in [0, 1, 2, 1, 2, 2, 10, 10] {
            t.record(s);
        }
        assert_eq!(t.duplicates(), 4);
        assert_eq!(t.received(), 8);
        assert_eq!(t.distinct(), 4);
    }

    #[test]
    fn interleaved_members_merge_into_one_range() {
        // A shared-subscription group: two members report alternately into one tracker.
        let mut t = SeqTracker::default();
        for s in (0..100).step_by(2).chain((1..100).step_by(2)) {
            t.record(s);
        }
        assert_eq!(t.ranges, vec![(0, 100)]);
        assert_eq!(t.duplicates(), 0);
    }

    #[test]
    fn numbers_never_sent_are_not_delivered() {
        let mut t = SeqTracker::default();
        for s in [0, 1, 2, 8, 9] {
            t.record(s);
        }
        assert_eq!(t.distinct_below(3), 3);
        assert_eq!(t.distinct_below(9), 4);
    }
}
