//! Encoding a PUBLISH for one subscriber into its out queue: encode-once heads per (version,
//! QoS, RETAIN), patched with the packet id; individual heads where per-subscriber properties
//! differ.

use crate::routing::{OutQueue, SHARE_THRESHOLD};
use std::time::Instant;
use uringmq_codec::{
    encode, encoded_len, ByteStr, Packet, Publish, PublishHead, PublishProperties, QoS,
};
use uringmq_session::delivery::fits;
use uringmq_session::{Delivery, Message, Session};

/// Outcome of writing one PUBLISH to a connection buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Written {
    Sent,
    /// Larger than the client's Maximum Packet Size: discarded [MQTT-3.1.2-25].
    TooLarge,
    /// Message expiry passed [MQTT-3.3.2-5].
    Expired,
}

/// Cache key of a PublishHead: (v5, QoS, RETAIN). 3.1 and 3.1.1 PUBLISH are laid out alike.
fn head_key(v5: bool, qos: QoS, retain: bool) -> u8 {
    (u8::from(v5) << 3) | ((qos as u8) << 1) | u8::from(retain)
}

/// Encodes one PUBLISH for `s`'s connection into `out`.
///
/// With `heads`, subscribers without per-subscriber properties (subscription ids, topic
/// aliases) share one head per (version, QoS, RETAIN): encoded once, patched with the packet
/// id. Others are encoded individually. Either way a large payload is queued as the shared
/// `Bytes` of the decoded PUBLISH, not copied (see `out_queue.rs`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_publish(
    out: &mut OutQueue,
    s: &mut Session,
    msg: &Message,
    d: &Delivery,
    pid: u16,
    dup: bool,
    now: Instant,
    heads: Option<&mut Vec<(u8, PublishHead)>>,
) -> Written {
    let Ok(expiry) = msg.remaining_expiry(now) else {
        return Written::Expired;
    };
    let proto = s.protocol;
    let v5 = proto.is_v5();
    let build = |pid: u16, with_ids: bool| Publish {
        dup: false,
        qos: d.qos,
        retain: d.retain,
        topic: msg.topic.clone(),
        packet_id: if d.qos == QoS::AtMostOnce { 0 } else { pid },
        properties: if v5 {
            let mut p = msg.properties.clone();
            p.topic_alias = None;
            p.message_expiry_interval = expiry;
            if with_ids {
                p.subscription_identifiers = d.sub_ids.clone();
            }
            p
        } else {
            PublishProperties::default()
        },
        payload: msg.payload.clone(),
    };
    let aliases = v5 && s.out_aliases.enabled();
    if let Some(heads) = heads {
        if !aliases && (!v5 || d.sub_ids.is_empty()) {
            let key = head_key(v5, d.qos, d.retain);
            let at = match heads.iter().position(|(k, _)| *k == key) {
                Some(at) => at,
                None => match PublishHead::encode(&build(1, false), proto) {
                    Ok(h) => {
                        heads.push((key, h));
                        heads.len() - 1
                    }
                    Err(_) => return Written::TooLarge,
                },
            };
            let head = &heads[at].1;
            if !fits(head.packet_len(), s.client_max_packet) {
                return Written::TooLarge;
            }
            head.write(pid, dup, out.buf());
            out.push_payload(&msg.payload);
            return Written::Sent;
        }
    }
    let mut p = build(pid, true);
    p.dup = dup && d.qos != QoS::AtMostOnce;
    let mut packet = Packet::Publish(p);
    let Ok(len) = encoded_len(&packet, proto) else {
        return Written::TooLarge;
    };
    if !fits(len, s.client_max_packet) {
        return Written::TooLarge;
    }
    // An alias adds at most 3 bytes; only use one if that still fits.
    if aliases && fits(len + 3, s.client_max_packet) {
        if let Packet::Publish(p) = &mut packet {
            if let Some((alias, known)) = s.out_aliases.alias_for(&p.topic) {
                p.properties.topic_alias = Some(alias);
                if known {
                    p.topic = ByteStr::new();
                }
            }
        }
    }
    let Packet::Publish(p) = &packet else {
        return Written::TooLarge;
    };
    if p.payload.len() < SHARE_THRESHOLD {
        return match encode(&packet, proto, out.buf()) {
            Ok(()) => Written::Sent,
            Err(_) => Written::TooLarge,
        };
    }
    // This subscriber's own head, then the shared payload.
    match PublishHead::encode(p, proto) {
        Ok(head) => {
            head.write(p.packet_id, p.dup, out.buf());
            out.push_payload(&p.payload);
            Written::Sent
        }
        Err(_) => Written::TooLarge,
    }
}
