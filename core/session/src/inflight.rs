//! The outbound QoS 1/2 window: messages sent to the client and not yet acknowledged.
//!
//! Packet identifiers are allocated here; entries stay in send order so a reconnecting client
//! gets them again in that order with DUP set [MQTT-4.4.0-1], and a released QoS 2 message is
//! answered with PUBREL, not the PUBLISH again.

use crate::delivery::Delivery;
use crate::deque::LazyDeque;
use crate::message::Message;
use std::sync::Arc;

/// Where an outbound QoS 1/2 message is in its handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutState {
    /// QoS 1 sent, waiting for PUBACK.
    PubAck,
    /// QoS 2 sent, waiting for PUBREC.
    PubRec,
    /// PUBREL sent, waiting for PUBCOMP (the message itself is no longer resent).
    PubComp,
}

/// One unacknowledged outbound message.
#[derive(Clone, Debug)]
pub struct OutEntry {
    /// Its packet identifier.
    pub packet_id: u16,
    /// The message.
    pub msg: Arc<Message>,
    /// How it was delivered (QoS, RETAIN, subscription ids).
    pub delivery: Delivery,
    /// Handshake state.
    pub state: OutState,
    /// Set when the message came through a shared subscription: on session end it is offered to
    /// another member of the group.
    pub shared_group: Option<Arc<str>>,
}

/// An acknowledgement that matches no message in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// No message with that packet identifier is waiting for this acknowledgement.
    #[error("packet identifier {0} not found")]
    UnknownPacketId(u16),
}

/// The outbound window of one session.
#[derive(Clone, Debug)]
pub struct Inflight {
    entries: LazyDeque<OutEntry>,
    next_id: u16,
    max: u16,
}

impl Inflight {
    /// An empty window of at most `max` messages (the client's Receive Maximum, capped by the
    /// broker's `max_inflight`).
    pub fn new(max: u16) -> Self {
        Inflight {
            entries: LazyDeque::default(),
            next_id: 1,
            max: max.max(1),
        }
    }

    /// Changes the window size (a reconnect may announce another Receive Maximum). Messages
    /// already in flight stay.
    pub fn set_max(&mut self, max: u16) {
        self.max = max.max(1);
    }

    /// The window size.
    pub fn max(&self) -> u16 {
        self.max
    }

    /// Messages in flight.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Nothing in flight.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether another message may be sent now [MQTT-3.3.4-7]: a QoS 2 message counts until its
    /// PUBCOMP.
    pub fn has_room(&self) -> bool {
        self.entries.len() < usize::from(self.max)
    }

    fn in_use(&self, id: u16) -> bool {
        self.entries.iter().any(|e| e.packet_id == id)
    }

    /// Puts a message in flight and returns its new packet identifier, unused by any other
    /// message in flight [MQTT-2.2.1-3]. The caller checked [`Inflight::has_room`].
    pub fn push(
        &mut self,
        msg: Arc<Message>,
        delivery: Delivery,
        shared_group: Option<Arc<str>>,
    ) -> u16 {
        let mut id = self.next_id;
        while self.in_use(id) {
            id = id.checked_add(1).unwrap_or(1);
        }
        self.next_id = id.checked_add(1).unwrap_or(1);
        let state = match delivery.qos {
            uringmq_codec::QoS::ExactlyOnce => OutState::PubRec,
            _ => OutState::PubAck,
        };
        self.entries.push_back(OutEntry {
            packet_id: id,
            msg,
            delivery,
            state,
            shared_group,
        });
        id
    }

    fn position(&self, id: u16, state: OutState) -> Result<usize, AckError> {
        self.entries
            .iter()
            .position(|e| e.packet_id == id && e.state == state)
            .ok_or(AckError::UnknownPacketId(id))
    }

    /// PUBACK: the QoS 1 message is delivered and leaves the window.
    pub fn puback(&mut self, id: u16) -> Result<OutEntry, AckError> {
        let at = self.position(id, OutState::PubAck)?;
        Ok(self.entries.remove(at).expect("position is in range"))
    }

    /// PUBREC: the client has the QoS 2 message. With a failure reason code (v5, >= 0x80) the
    /// exchange ends here and the entry is removed; otherwise the caller sends PUBREL
    /// [MQTT-4.3.3-4]. Returns whether PUBREL is due. A repeated PUBREC (we already sent PUBREL)
    /// is answered with PUBREL again.
    pub fn pubrec(&mut self, id: u16, failed: bool) -> Result<bool, AckError> {
        if let Ok(at) = self.position(id, OutState::PubComp) {
            let _ = at;
            return Ok(!failed);
        }
        let at = self.position(id, OutState::PubRec)?;
        if failed {
            self.entries.remove(at);
            Ok(false)
        } else {
            if let Some(e) = self.entries.get_mut(at) {
                e.state = OutState::PubComp;
            }
            Ok(true)
        }
    }

    /// PUBCOMP: the QoS 2 exchange is complete.
    pub fn pubcomp(&mut self, id: u16) -> Result<OutEntry, AckError> {
        let at = self.position(id, OutState::PubComp)?;
        Ok(self.entries.remove(at).expect("position is in range"))
    }

    /// The newest entry, to note where it is stored (the broker's durable store).
    pub fn back_mut(&mut self) -> Option<&mut OutEntry> {
        self.entries.back_mut()
    }

    /// Puts back an entry as it was (a session recovered from the durable store): its packet
    /// id and state are kept, and new ids are allocated after it.
    pub fn restore(&mut self, entry: OutEntry) {
        self.next_id = entry.packet_id.checked_add(1).unwrap_or(1);
        self.entries.push_back(entry);
    }

    /// Removes a message that could not be sent after all (too large for the client, expired).
    pub fn remove(&mut self, id: u16) -> Option<OutEntry> {
        let at = self.entries.iter().position(|e| e.packet_id == id)?;
        self.entries.remove(at)
    }

    /// Removes and returns the entries `pred` selects (shared-subscription messages that go to
    /// another member when this one leaves), keeping the others in order.
    pub fn extract(&mut self, pred: impl FnMut(&OutEntry) -> bool) -> Vec<OutEntry> {
        self.entries.split_off_where(pred)
    }

    /// Everything in flight, oldest first: what a resumed session resends (PUBLISH with DUP for
    /// `PubAck`/`PubRec`, PUBREL for `PubComp`) [MQTT-4.4.0-1].
    pub fn iter(&self) -> impl Iterator<Item = &OutEntry> {
        self.entries.iter()
    }

    /// Everything in flight, oldest first, to note where each is stored (a session imaged
    /// into the broker's durable store after it moved there from another node).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut OutEntry> {
        self.entries.iter_mut()
    }

    /// Empties the window, returning its entries (a session that ends hands shared-group
    /// messages to another member).
    pub fn drain(&mut self) -> impl Iterator<Item = OutEntry> + '_ {
        self.entries.drain()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Instant;
    use uringmq_codec::{PublishProperties, QoS};

    fn msg() -> Arc<Message> {
        Arc::new(Message {
            topic: "t".into(),
            payload: Bytes::new(),
            qos: QoS::ExactlyOnce,
            retain: false,
            properties: PublishProperties::default(),
            origin: None,
            received_at: Instant::now(),
        })
    }

    fn d(qos: QoS) -> Delivery {
        Delivery {
            qos,
            ..Default::default()
        }
    }

    #[test]
    fn window_fills_and_drains_with_acks() {
        let mut w = Inflight::new(2);
        let a = w.push(msg(), d(QoS::AtLeastOnce), None);
        let b = w.push(msg(), d(QoS::ExactlyOnce), None);
        assert_ne!(a, b);
        assert!(!w.has_room());
        assert_eq!(w.puback(a).unwrap().packet_id, a);
        assert_eq!(w.puback(a).unwrap_err(), AckError::UnknownPacketId(a));
        // PUBACK for a QoS 2 message is not a valid acknowledgement.
        assert!(w.puback(b).is_err());
        assert!(w.pubcomp(b).is_err());
        assert_eq!(w.pubrec(b, false), Ok(true));
        assert_eq!(
            w.pubrec(b, false),
            Ok(true),
            "repeated PUBREC gets PUBREL again"
        );
        assert_eq!(w.iter().next().unwrap().state, OutState::PubComp);
        assert!(w.pubcomp(b).is_ok());
        assert!(w.is_empty());
    }

    #[test]
    fn remove_and_extract_keep_order() {
        let mut w = Inflight::new(8);
        let a = w.push(msg(), d(QoS::AtLeastOnce), Some("g".into()));
        let b = w.push(msg(), d(QoS::AtLeastOnce), None);
        let c = w.push(msg(), d(QoS::AtLeastOnce), None);
        let shared = w.extract(|e| e.shared_group.is_some());
        assert_eq!(shared.len(), 1);
        assert_eq!(shared[0].packet_id, a);
        assert!(w.remove(c).is_some());
        assert_eq!(w.iter().map(|e| e.packet_id).collect::<Vec<_>>(), vec![b]);
    }

    #[test]
    fn failed_pubrec_ends_the_exchange() {
        let mut w = Inflight::new(4);
        let a = w.push(msg(), d(QoS::ExactlyOnce), None);
        assert_eq!(w.pubrec(a, true), Ok(false));
        assert!(w.is_empty());
    }

    #[test]
    fn packet_ids_are_never_zero_and_skip_ids_in_use() {
        let mut w = Inflight::new(u16::MAX);
        let first = w.push(msg(), d(QoS::AtLeastOnce), None);
        for _ in 0..(u16::MAX - 2) {
            let id = w.push(msg(), d(QoS::AtLeastOnce), None);
            w.puback(id).unwrap();
        }
        // Wrapped around: 0 is skipped and `first` (still in flight) is not reused.
        let id = w.push(msg(), d(QoS::AtLeastOnce), None);
        assert_ne!(id, 0);
        assert_ne!(id, first);
    }
}
