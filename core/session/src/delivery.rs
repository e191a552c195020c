//! What one subscriber gets of one message: QoS, RETAIN flag and subscription identifiers,
//! merged over all of its matching subscriptions.

use crate::message::{Message, Origin};
use smallvec::SmallVec;
use uringmq_codec::{QoS, RetainHandling};

/// The options of one subscription, as granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SubOptions {
    /// Granted maximum QoS.
    pub qos: QoS,
    /// v5 No Local: never receive own publications [MQTT-3.8.3-3].
    pub no_local: bool,
    /// v5 Retain As Published: keep the RETAIN flag on forwarded messages [MQTT-3.3.1-12].
    pub retain_as_published: bool,
    /// v5 Retain Handling (used at SUBSCRIBE time only).
    pub retain_handling: RetainHandling,
    /// v5 Subscription Identifier.
    pub id: Option<u32>,
}

/// How one message goes out to one subscriber.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    /// min(message QoS, highest granted QoS of the matching subscriptions) [MQTT-3.3.5-1].
    pub qos: QoS,
    /// RETAIN flag on the wire.
    pub retain: bool,
    /// Identifiers of every matching subscription that has one [MQTT-3.3.4-3].
    pub sub_ids: SmallVec<[u32; 1]>,
    /// The id of this delivery's record in the broker's durable store (0: not stored), so
    /// the acknowledgement that ends it can name it.
    pub store_id: u64,
}

impl Delivery {
    /// The delivery through one matching subscription of a live (not retained-on-subscribe)
    /// message; `None` when No Local excludes it.
    pub fn live(msg: &Message, opts: &SubOptions, subscriber: Option<Origin>) -> Option<Delivery> {
        if opts.no_local && msg.origin.is_some() && msg.origin == subscriber {
            return None;
        }
        Some(Delivery {
            qos: msg.qos.min(opts.qos),
            // 3.1.1 clears RETAIN on forwarded live messages [MQTT-3.3.1-9]; v5 keeps it only
            // with Retain As Published [MQTT-3.3.1-12].
            retain: opts.retain_as_published && msg.retain,
            sub_ids: opts.id.into_iter().collect(),
            store_id: 0,
        })
    }

    /// The delivery of a retained message sent because of a SUBSCRIBE: RETAIN is always set
    /// [MQTT-3.3.1-9 (5.0)] / [MQTT-3.3.1-8 (3.1.1)].
    pub fn retained(msg: &Message, opts: &SubOptions) -> Delivery {
        Delivery {
            qos: msg.qos.min(opts.qos),
            retain: true,
            sub_ids: opts.id.into_iter().collect(),
            store_id: 0,
        }
    }

    /// Folds another matching subscription of the same session into this one: one copy at
    /// the highest QoS, with every subscription identifier [MQTT-3.3.4-3], RETAIN kept if any
    /// subscription keeps it.
    pub fn merge(&mut self, other: Delivery) {
        self.qos = self.qos.max(other.qos);
        self.retain |= other.retain;
        for id in other.sub_ids {
            if !self.sub_ids.contains(&id) {
                self.sub_ids.push(id);
            }
        }
    }
}

/// Whether a packet of `len` bytes may be sent to a client whose Maximum Packet Size is
/// `client_max`; if not, the message is discarded for that client [MQTT-3.1.2-25].
pub fn fits(len: usize, client_max: Option<std::num::NonZeroU32>) -> bool {
    client_max.is_none_or(|max| len <= max.get() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Instant;
    use uringmq_codec::PublishProperties;

    fn msg(qos: QoS, retain: bool, origin: Option<Origin>) -> Message {
        Message {
            topic: "t".into(),
            payload: Bytes::new(),
            qos,
            retain,
            properties: PublishProperties::default(),
            origin,
            received_at: Instant::now(),
        }
    }

    const ME: Origin = Origin {
        core: 0,
        session: 7,
    };

    #[test]
    fn qos_is_the_minimum_and_merge_takes_the_highest() {
        let m = msg(QoS::ExactlyOnce, false, None);
        let o0 = SubOptions {
            qos: QoS::AtMostOnce,
            id: Some(1),
            ..Default::default()
        };
        let o1 = SubOptions {
            qos: QoS::AtLeastOnce,
            id: Some(2),
            ..Default::default()
        };
        let mut d = Delivery::live(&m, &o0, Some(ME)).unwrap();
        assert_eq!(d.qos, QoS::AtMostOnce);
        d.merge(Delivery::live(&m, &o1, Some(ME)).unwrap());
        assert_eq!(d.qos, QoS::AtLeastOnce);
        assert_eq!(d.sub_ids.as_slice(), &[1, 2]);
    }

    #[test]
    fn no_local_excludes_only_own_messages() {
        let o = SubOptions {
            no_local: true,
            ..Default::default()
        };
        assert!(Delivery::live(&msg(QoS::AtMostOnce, false, Some(ME)), &o, Some(ME)).is_none());
        let other = Origin {
            core: 1,
            session: 7,
        };
        assert!(Delivery::live(&msg(QoS::AtMostOnce, false, Some(other)), &o, Some(ME)).is_some());
    }

    #[test]
    fn retain_flag_follows_retain_as_published() {
        let m = msg(QoS::AtMostOnce, true, None);
        let plain = SubOptions::default();
        let rap = SubOptions {
            retain_as_published: true,
            ..Default::default()
        };
        assert!(!Delivery::live(&m, &plain, None).unwrap().retain);
        assert!(Delivery::live(&m, &rap, None).unwrap().retain);
        assert!(Delivery::retained(&m, &plain).retain);
    }

    #[test]
    fn packet_size_limit() {
        assert!(fits(100, None));
        let max = std::num::NonZeroU32::new(100);
        assert!(fits(100, max));
        assert!(!fits(101, max));
    }
}
