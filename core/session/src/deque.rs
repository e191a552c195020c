//! [`LazyDeque`]: a `VecDeque` boxed on first use, for a session's outbound window (the queue
//! boxes its deque with its counters, `queue.rs`). It is empty for most of an idle session's
//! life; inline, the deque costs 32 bytes of every `Session`, boxed 8 (BENCHMARKS.md, idle
//! memory per connection). Once used, the box stays, so a busy session does not allocate it
//! again for every message.

use std::collections::VecDeque;

/// A `VecDeque` that allocates nothing, not even its header, until the first push.
#[derive(Clone, Debug)]
// Boxed on purpose: the header inline is the 32 bytes per session this saves (see above).
#[allow(clippy::box_collection)]
pub(crate) struct LazyDeque<T>(Option<Box<VecDeque<T>>>);

impl<T> Default for LazyDeque<T> {
    fn default() -> Self {
        LazyDeque(None)
    }
}

impl<T> LazyDeque<T> {
    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |d| d.len())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter().flat_map(|d| d.iter())
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.0.iter_mut().flat_map(|d| d.iter_mut())
    }

    pub(crate) fn back_mut(&mut self) -> Option<&mut T> {
        self.0.as_mut()?.back_mut()
    }

    pub(crate) fn get_mut(&mut self, at: usize) -> Option<&mut T> {
        self.0.as_mut()?.get_mut(at)
    }

    pub(crate) fn remove(&mut self, at: usize) -> Option<T> {
        self.0.as_mut()?.remove(at)
    }

    pub(crate) fn push_back(&mut self, item: T) {
        self.0.get_or_insert_with(Box::default).push_back(item);
    }

    /// Takes every item out, oldest first (and the box with them).
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = T> {
        self.0.take().into_iter().flat_map(|d| d.into_iter())
    }

    /// Removes and returns the items `take` selects, keeping the others in order.
    pub(crate) fn split_off_where(&mut self, mut take: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut out = Vec::new();
        if let Some(d) = self.0.as_mut() {
            let mut keep = VecDeque::with_capacity(d.len());
            for item in d.drain(..) {
                if take(&item) {
                    out.push(item);
                } else {
                    keep.push_back(item);
                }
            }
            **d = keep;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_on_first_push_and_keeps_order() {
        let mut d = LazyDeque::default();
        assert!(d.is_empty() && d.0.is_none() && d.remove(0).is_none());
        d.push_back(1);
        d.push_back(2);
        d.push_back(3);
        assert_eq!(d.iter().copied().collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(d.split_off_where(|x| x % 2 == 1), [1, 3]);
        assert_eq!((d.len(), d.back_mut()), (1, Some(&mut 2)));
        assert_eq!(d.drain().collect::<Vec<_>>(), [2]);
        assert!(d.0.is_none());
    }
}
