//! The bounded per-session queue: messages for an offline session, or beyond the in-flight
//! window / outbound byte limit of an online one.
//!
//! Bounded in count and in bytes (topic + payload). Drop policy when full: the *new* message is
//! dropped and counted, as Mosquitto does (`max_queued_messages`): what is queued stays in order.

use crate::delivery::Delivery;
use crate::message::Message;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// One queued delivery.
#[derive(Clone, Debug)]
pub struct Queued {
    /// The message.
    pub msg: Arc<Message>,
    /// How it goes out.
    pub delivery: Delivery,
    /// Set when it came through a shared subscription.
    pub shared_group: Option<Arc<str>>,
}

/// The queue was full: the message was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("session queue full: message dropped")]
pub struct QueueFull;

/// A bounded FIFO of deliveries.
#[derive(Clone, Debug)]
pub struct Queue {
    /// Made on the first message (or the first one dropped) and kept after: an idle session's
    /// queue is empty, and inline its deque and counters would cost 48 bytes of every
    /// `Session`, boxed 8 (BENCHMARKS.md, idle memory per connection).
    body: Option<Box<Body>>,
    /// The bounds as 32 bits (`Session` stays in its size class); larger ones are clamped to
    /// 4 G messages and 4 GiB, past what one session's queue can hold in practice.
    max_count: u32,
    max_bytes: u32,
}

/// The queued deliveries and what is counted of them.
#[derive(Clone, Debug, Default)]
struct Body {
    items: VecDeque<Queued>,
    bytes: usize,
    /// Counters taken (and reset) by the broker after each use: 32 bits are plenty.
    dropped: u32,
    expired: u32,
}

impl Queue {
    /// A queue of at most `max_count` messages and `max_bytes` bytes; 0 means unlimited.
    pub fn new(max_count: usize, max_bytes: usize) -> Self {
        Queue {
            body: None,
            max_count: u32::try_from(max_count).unwrap_or(u32::MAX),
            max_bytes: u32::try_from(max_bytes).unwrap_or(u32::MAX),
        }
    }

    fn body(&mut self) -> &mut Body {
        self.body.get_or_insert_with(Box::default)
    }

    /// Appends, or drops the message (counted) when a bound would be exceeded.
    pub fn push(&mut self, item: Queued) -> Result<(), QueueFull> {
        let cost = item.msg.cost();
        let (max_count, max_bytes) = (self.max_count as usize, self.max_bytes as usize);
        let b = self.body();
        let over_count = max_count != 0 && b.items.len() >= max_count;
        let over_bytes = max_bytes != 0 && b.bytes + cost > max_bytes;
        if over_count || over_bytes {
            b.dropped = b.dropped.saturating_add(1);
            return Err(QueueFull);
        }
        b.bytes += cost;
        b.items.push_back(item);
        Ok(())
    }

    /// Puts a message back at the front (it could not be sent after all). Not bounded: it was
    /// counted when first queued.
    pub fn push_front(&mut self, item: Queued) {
        let b = self.body();
        b.bytes += item.msg.cost();
        b.items.push_front(item);
    }

    /// The oldest message that has not expired at `now`; expired ones are discarded and
    /// counted [MQTT-3.3.2-5].
    pub fn pop(&mut self, now: Instant) -> Option<Queued> {
        let b = self.body.as_deref_mut()?;
        while let Some(item) = b.items.pop_front() {
            b.bytes -= item.msg.cost();
            if item.msg.remaining_expiry(now).is_ok() {
                return Some(item);
            }
            b.expired = b.expired.saturating_add(1);
        }
        None
    }

    /// The newest message, to note where it is stored (the broker's durable store).
    pub fn back_mut(&mut self) -> Option<&mut Queued> {
        self.body.as_deref_mut()?.items.back_mut()
    }

    /// Everything queued, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Queued> {
        self.body.iter().flat_map(|b| b.items.iter())
    }

    /// Everything queued, oldest first, to note where each is stored (see
    /// `Inflight::iter_mut`).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Queued> {
        self.body.iter_mut().flat_map(|b| b.items.iter_mut())
    }

    /// The oldest message's delivery QoS, if any.
    pub fn front_qos(&self) -> Option<uringmq_codec::QoS> {
        self.body.as_ref()?.items.front().map(|q| q.delivery.qos)
    }

    /// Queued messages.
    pub fn len(&self) -> usize {
        self.body.as_ref().map_or(0, |b| b.items.len())
    }

    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queued bytes.
    pub fn bytes(&self) -> usize {
        self.body.as_ref().map_or(0, |b| b.bytes)
    }

    /// Messages dropped because the queue was full, since the last call (the broker adds them
    /// to its counters).
    pub fn take_dropped(&mut self) -> u64 {
        let b = self.body.as_deref_mut();
        b.map_or(0, |b| u64::from(std::mem::take(&mut b.dropped)))
    }

    /// Messages discarded because they expired while queued, since the last call.
    pub fn take_expired(&mut self) -> u64 {
        let b = self.body.as_deref_mut();
        b.map_or(0, |b| u64::from(std::mem::take(&mut b.expired)))
    }

    /// Removes and returns the items `pred` selects, keeping the others in order.
    pub fn extract(&mut self, mut pred: impl FnMut(&Queued) -> bool) -> Vec<Queued> {
        let Some(b) = self.body.as_deref_mut() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for q in std::mem::take(&mut b.items) {
            if pred(&q) {
                b.bytes -= q.msg.cost();
                out.push(q);
            } else {
                b.items.push_back(q);
            }
        }
        out
    }

    /// Empties the queue (and gives its box back: the counters were taken after each use).
    pub fn drain(&mut self) -> impl Iterator<Item = Queued> {
        self.body
            .take()
            .into_iter()
            .flat_map(|b| b.items.into_iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Duration;
    use uringmq_codec::{PublishProperties, QoS};

    fn item(payload: &'static [u8], expiry: Option<u32>, at: Instant) -> Queued {
        Queued {
            msg: Arc::new(Message {
                topic: "t".into(),
                payload: Bytes::from_static(payload),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: PublishProperties {
                    message_expiry_interval: expiry,
                    ..Default::default()
                },
                origin: None,
                received_at: at,
            }),
            delivery: Delivery::default(),
            shared_group: None,
        }
    }

    #[test]
    fn count_bound_drops_new_messages_and_counts_them() {
        let now = Instant::now();
        let mut q = Queue::new(2, 0);
        q.push(item(b"1", None, now)).unwrap();
        q.push(item(b"2", None, now)).unwrap();
        assert_eq!(q.push(item(b"3", None, now)), Err(QueueFull));
        assert_eq!(q.take_dropped(), 1);
        assert_eq!(q.take_dropped(), 0);
        assert_eq!(&q.pop(now).unwrap().msg.payload[..], b"1");
        assert_eq!(&q.pop(now).unwrap().msg.payload[..], b"2");
        assert!(q.pop(now).is_none());
    }

    #[test]
    fn byte_bound_counts_topic_and_payload() {
        let now = Instant::now();
        let mut q = Queue::new(0, 6);
        q.push(item(b"1234", None, now)).unwrap(); // 1 + 4 bytes
        assert_eq!(q.push(item(b"12", None, now)), Err(QueueFull));
        q.push(item(b"", None, now)).unwrap();
        assert_eq!(q.bytes(), 6);
        q.pop(now);
        assert_eq!(q.bytes(), 1);
    }

    #[test]
    fn expired_messages_are_skipped_and_counted() {
        let t0 = Instant::now();
        let mut q = Queue::new(0, 0);
        q.push(item(b"old", Some(1), t0)).unwrap();
        q.push(item(b"new", None, t0)).unwrap();
        let later = t0 + Duration::from_secs(2);
        assert_eq!(&q.pop(later).unwrap().msg.payload[..], b"new");
        assert_eq!(q.take_expired(), 1);
    }
}
