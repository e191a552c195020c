//! A PUBLISH encoded once for many subscribers.
//!
//! The broker fans one message out to many subscribers. Everything before the payload depends
//! only on (protocol, QoS, retain, properties) plus the per-subscriber packet identifier and DUP
//! flag, so the head is encoded once per such group and the payload `Bytes` is shared; per
//! subscriber only the two packet-identifier bytes and the DUP bit are patched.

use crate::encode::{publish_plan, write_publish_head};
use crate::{EncodeError, Protocol, Publish};
use bytes::{Bytes, BytesMut};

/// Everything of a PUBLISH except the payload: fixed header (whose remaining length includes the
/// payload), topic, packet identifier placeholder and properties.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishHead {
    bytes: Bytes,
    /// Offset of the packet identifier within `bytes`; `None` for QoS 0.
    pid_offset: Option<usize>,
    payload_len: usize,
}

impl PublishHead {
    /// Encodes the head of `publish` for `protocol`. Its payload counts only for its length;
    /// its `packet_id` and `dup` are ignored (see [`PublishHead::write`]).
    pub fn encode(publish: &Publish, protocol: Protocol) -> Result<Self, EncodeError> {
        let plan = publish_plan(publish, protocol, false)?;
        let payload_len = publish.payload.len();
        let mut out = BytesMut::with_capacity(plan.total() - payload_len);
        let pid_offset = write_publish_head(publish, protocol, &plan, 0, false, &mut out);
        Ok(PublishHead {
            bytes: out.freeze(),
            pid_offset,
            payload_len,
        })
    }

    /// Length of the head in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: a head holds at least a fixed header and a topic length.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Head plus payload: the packet size to compare with the subscriber's Maximum Packet Size
    /// [MQTT-3.1.2-24].
    pub fn packet_len(&self) -> usize {
        self.bytes.len() + self.payload_len
    }

    /// The encoded head with a zero packet identifier and DUP clear.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Appends this head to `out` with `packet_id` and `dup` patched in; both are ignored for
    /// QoS 0 (no identifier on the wire, DUP must be 0 [MQTT-3.3.1-2]). The caller then sends
    /// the payload (appended, or as a separate vectored-write buffer). For QoS 1/2 `packet_id`
    /// must be non-zero [MQTT-2.2.1-3].
    #[inline]
    pub fn write(&self, packet_id: u16, dup: bool, out: &mut BytesMut) {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        if let Some(off) = self.pid_offset {
            debug_assert_ne!(
                packet_id, 0,
                "[MQTT-2.2.1-3] QoS > 0 needs a packet identifier"
            );
            out[start] |= u8::from(dup) << 3;
            out[start + off..start + off + 2].copy_from_slice(&packet_id.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::publish;
    use crate::{encode, Packet, QoS};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn head_plus_payload_is_the_full_encoding(
            p in publish(),
            v5 in any::<bool>(),
            pid in 1..=u16::MAX,
            dup in any::<bool>(),
        ) {
            let proto = if v5 { Protocol::V5 } else { Protocol::V3_1_1 };
            prop_assume!(v5 || !p.topic.is_empty());
            let head = PublishHead::encode(&p, proto).unwrap();
            let mut out = BytesMut::from(&b"previous bytes"[..]);
            head.write(pid, dup, &mut out);
            prop_assert_eq!(out.len() - 14, head.len());
            out.extend_from_slice(&p.payload);

            let qos0 = p.qos == QoS::AtMostOnce;
            let expected = Publish {
                packet_id: if qos0 { 0 } else { pid },
                dup: dup && !qos0,
                ..p.clone()
            };
            let mut full = BytesMut::new();
            encode(&Packet::Publish(expected), proto, &mut full).unwrap();
            prop_assert_eq!(&out[14..], &full[..]);
            prop_assert_eq!(head.packet_len(), full.len());
        }
    }
}
