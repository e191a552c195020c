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

/// One PUBLISH to write: the message, how it is delivered, its packet id (0 for QoS 0) and
/// DUP flag, and the time its remaining expiry is computed at.
pub(crate) struct Outgoing<'a> {
    pub(crate) msg: &'a Message,
    pub(crate) delivery: &'a Delivery,
    pub(crate) pid: u16,
    pub(crate) dup: bool,
    pub(crate) now: Instant,
}

/// Encodes one PUBLISH for `s`'s connection into `out`.
///
/// With `heads`, subscribers without per-subscriber properties (subscription ids, topic
/// aliases) share one head per (version, QoS, RETAIN): encoded once, patched with the packet
/// id. Others are encoded individually. Either way a large payload is queued as the shared
/// `Bytes` of the decoded PUBLISH, not copied (see `out_queue.rs`).
pub(crate) fn write_publish(
    out: &mut OutQueue,
    s: &mut Session,
    o: &Outgoing<'_>,
    heads: Option<&mut Vec<(u8, PublishHead)>>,
) -> Written {
    let Ok(expiry) = o.msg.remaining_expiry(o.now) else {
        return Written::Expired;
    };
    let v5 = s.protocol.is_v5();
    let aliases = v5 && s.outbound_aliases();
    match heads {
        Some(heads) if !aliases && (!v5 || o.delivery.sub_ids.is_empty()) => {
            write_shared_head(out, s, o, expiry, heads)
        }
        _ => write_individual(out, s, o, expiry, aliases),
    }
}

/// The PUBLISH `o` as `s`'s protocol lays it out, with packet id `pid` and, with `with_ids`,
/// the delivery's subscription identifiers.
fn publish_packet(
    s: &Session,
    o: &Outgoing<'_>,
    expiry: Option<u32>,
    pid: u16,
    with_ids: bool,
) -> Publish {
    let d = o.delivery;
    Publish {
        dup: false,
        qos: d.qos,
        retain: d.retain,
        topic: o.msg.topic.clone(),
        packet_id: if d.qos == QoS::AtMostOnce { 0 } else { pid },
        properties: if s.protocol.is_v5() {
            let mut p = o.msg.properties.clone();
            p.topic_alias = None;
            p.message_expiry_interval = expiry;
            if with_ids {
                p.subscription_identifiers = d.sub_ids.clone();
            }
            p
        } else {
            PublishProperties::default()
        },
        payload: o.msg.payload.clone(),
    }
}

/// Writes `o` with the head shared by every subscriber of this (version, QoS, RETAIN),
/// encoding it on first use.
fn write_shared_head(
    out: &mut OutQueue,
    s: &Session,
    o: &Outgoing<'_>,
    expiry: Option<u32>,
    heads: &mut Vec<(u8, PublishHead)>,
) -> Written {
    let key = head_key(s.protocol.is_v5(), o.delivery.qos, o.delivery.retain);
    let at = match heads.iter().position(|(k, _)| *k == key) {
        Some(at) => at,
        None => match PublishHead::encode(&publish_packet(s, o, expiry, 1, false), s.protocol) {
            Ok(h) => {
                heads.push((key, h));
                heads.len() - 1
            }
            Err(_) => return Written::TooLarge,
        },
    };
    let head = &heads[at].1;
    if !fits(head.packet_len(), s.client_max_packet()) {
        return Written::TooLarge;
    }
    head.write(o.pid, o.dup, out.buf());
    out.push_payload(&o.msg.payload);
    Written::Sent
}

/// Writes `o` encoded for `s` alone (subscription identifiers, an outbound topic alias).
fn write_individual(
    out: &mut OutQueue,
    s: &mut Session,
    o: &Outgoing<'_>,
    expiry: Option<u32>,
    aliases: bool,
) -> Written {
    let proto = s.protocol;
    let mut p = publish_packet(s, o, expiry, o.pid, true);
    p.dup = o.dup && o.delivery.qos != QoS::AtMostOnce;
    let mut packet = Packet::Publish(p);
    let Ok(len) = encoded_len(&packet, proto) else {
        return Written::TooLarge;
    };
    if !fits(len, s.client_max_packet()) {
        return Written::TooLarge;
    }
    // An alias adds at most 3 bytes; only use one if that still fits.
    if aliases && fits(len + 3, s.client_max_packet()) {
        if let Packet::Publish(p) = &mut packet {
            if let Some((alias, known)) = s.outbound_alias(&p.topic) {
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
