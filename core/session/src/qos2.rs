//! Inbound QoS 2: packet identifiers received and not yet released by PUBREL.
//!
//! The broker routes a QoS 2 message when its PUBLISH first arrives and remembers the packet
//! identifier until PUBREL; a PUBLISH with an identifier still remembered is a duplicate and is
//! acknowledged again without being routed again: exactly once [MQTT-4.3.3-10].

use std::collections::HashSet;

/// Packet identifiers of inbound QoS 2 messages awaiting PUBREL.
#[derive(Clone, Debug, Default)]
pub struct InboundQos2 {
    /// Boxed and made on the first QoS 2 PUBLISH: most sessions never receive one (the box
    /// keeps this field one pointer wide in the session's box of rare state). Kept once made,
    /// as that box is, so a QoS 2 publisher does not allocate them again for each message.
    #[allow(clippy::box_collection)]
    ids: Option<Box<HashSet<u16, crate::hasher::Seeded>>>,
}

impl InboundQos2 {
    /// None received yet.
    pub const fn new() -> Self {
        InboundQos2 { ids: None }
    }

    /// Never received one: nothing allocated.
    pub(crate) fn is_unused(&self) -> bool {
        self.ids.is_none()
    }

    /// Records a QoS 2 PUBLISH. Returns true when it is new (route it), false for a
    /// retransmission of a message already routed.
    pub fn receive(&mut self, id: u16) -> bool {
        self.ids.get_or_insert_with(Box::default).insert(id)
    }

    /// PUBREL: forgets the identifier. Returns whether it was known (else PUBCOMP carries
    /// 0x92 Packet Identifier not found in v5).
    pub fn release(&mut self, id: u16) -> bool {
        self.ids.as_mut().is_some_and(|ids| ids.remove(&id))
    }

    /// Messages awaiting PUBREL: they count against the broker's Receive Maximum.
    pub fn len(&self) -> usize {
        self.ids.as_ref().map_or(0, |ids| ids.len())
    }

    /// None awaiting PUBREL.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The identifiers awaiting PUBREL (the broker's durable store writes them).
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.ids.iter().flat_map(|ids| ids.iter().copied())
    }

    /// Whether `id` awaits PUBREL.
    pub fn contains(&self, id: u16) -> bool {
        self.ids.as_ref().is_some_and(|ids| ids.contains(&id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_recognised_until_released() {
        let mut q = InboundQos2::default();
        assert!(q.receive(5));
        assert!(!q.receive(5), "a resent PUBLISH is not routed twice");
        assert!(q.release(5));
        assert!(!q.release(5));
        assert!(q.receive(5), "after PUBREL the identifier may be reused");
    }
}
