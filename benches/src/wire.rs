//! The few MQTT packets a load-generating client sends and reads, encoded straight into the
//! connection's send buffer.
//!
//! Deliberately independent of `uringmq-codec`: a shared codec would hide a codec bug from the
//! very benchmark meant to exercise the broker (both ends would agree on the same mistake). The
//! codec's `Decoder` cross-checks these encodings in the tests instead.

use thiserror::Error;

/// MQTT protocol version spoken by the load generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

impl Version {
    fn level(self) -> u8 {
        match self {
            Version::V311 => 4,
            Version::V5 => 5,
        }
    }
}

/// A frame or packet the client cannot accept.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    /// Remaining length over four bytes [MQTT-1.5.5-1] (varint of at most 4 bytes).
    #[error("malformed remaining length: more than four bytes [MQTT-1.5.5-1]")]
    BadLength,
    /// A packet shorter than its fixed parts.
    #[error("truncated {0} packet")]
    Truncated(&'static str),
    /// A packet type a server must not send to a client.
    #[error("unexpected packet type {0} from the server")]
    Unexpected(u8),
    /// QoS 3 in a PUBLISH [MQTT-3.3.1-4].
    #[error("PUBLISH with QoS 3 [MQTT-3.3.1-4]")]
    BadQos,
    /// A property of unknown identifier (cannot be skipped safely) [MQTT-2.2.2-2].
    #[error("unknown property identifier {0:#04x} [MQTT-2.2.2-2]")]
    BadProperty(u8),
}

/// Packet type numbers used here.
pub mod kind {
    #![allow(missing_docs)]
    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const PUBACK: u8 = 4;
    pub const PUBREC: u8 = 5;
    pub const PUBREL: u8 = 6;
    pub const PUBCOMP: u8 = 7;
    pub const SUBACK: u8 = 9;
    pub const PINGRESP: u8 = 13;
    pub const DISCONNECT: u8 = 14;
}

/// Appends a variable byte integer (MQTT 1.5.5).
pub fn put_varint(out: &mut Vec<u8>, mut v: usize) {
    loop {
        let mut b = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            b |= 0x80;
        }
        out.push(b);
        if v == 0 {
            return;
        }
    }
}

/// Reads a variable byte integer: `Ok(None)` if more bytes are needed, else (value, bytes used).
pub fn get_varint(buf: &[u8]) -> Result<Option<(usize, usize)>, WireError> {
    let mut v = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        v |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((v, i + 1)));
        }
    }
    Err(WireError::BadLength)
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// Appends a CONNECT with no will and no credentials: clean start, or with `persistent` a
/// session that outlives the connection (v5: Session Expiry Interval 3600).
pub fn connect(out: &mut Vec<u8>, v: Version, client_id: &str, keep_alive: u16, persistent: bool) {
    let props = match (v == Version::V5, persistent) {
        (false, _) => 0,
        (true, false) => 1,
        (true, true) => 6,
    };
    let len = 10 + props + 2 + client_id.len();
    out.push(0x10);
    put_varint(out, len);
    put_str(out, b"MQTT");
    out.push(v.level());
    out.push(if persistent { 0 } else { 0x02 }); // clean session / clean start
    out.extend_from_slice(&keep_alive.to_be_bytes());
    if v == Version::V5 {
        if persistent {
            out.extend_from_slice(&[5, 0x11, 0, 0, 0x0e, 0x10]); // Session Expiry 3600
        } else {
            out.push(0); // no properties
        }
    }
    put_str(out, client_id.as_bytes());
}

/// Appends a SUBSCRIBE of one filter at `qos` (flags 0b0010 are mandatory [MQTT-3.8.1-1]).
pub fn subscribe(out: &mut Vec<u8>, v: Version, packet_id: u16, filter: &str, qos: u8) {
    let props = if v == Version::V5 { 1 } else { 0 };
    out.push(0x82);
    put_varint(out, 2 + props + 2 + filter.len() + 1);
    out.extend_from_slice(&packet_id.to_be_bytes());
    if v == Version::V5 {
        out.push(0);
    }
    put_str(out, filter.as_bytes());
    out.push(qos & 3);
}

/// The invariant head of every PUBLISH a publisher sends: fixed header and topic, which depend
/// only on topic, QoS and payload size. The packet identifier (QoS > 0), the empty property
/// list (5.0) and the payload follow.
pub fn publish_head(v: Version, topic: &str, qos: u8, payload_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + topic.len());
    let id = if qos > 0 { 2 } else { 0 };
    let props = if v == Version::V5 { 1 } else { 0 };
    out.push(0x30 | (qos << 1));
    put_varint(&mut out, 2 + topic.len() + id + props + payload_len);
    put_str(&mut out, topic.as_bytes());
    out
}

/// Appends what follows [`publish_head`] before the payload.
pub fn publish_mid(out: &mut Vec<u8>, v: Version, qos: u8, packet_id: u16) {
    if qos > 0 {
        out.extend_from_slice(&packet_id.to_be_bytes());
    }
    if v == Version::V5 {
        out.push(0);
    }
}

/// Appends PUBACK, PUBREC, PUBREL or PUBCOMP with success (the short form: MQTT 5.0 allows
/// omitting reason code 0x00 and the properties when the remaining length is 2).
pub fn ack(out: &mut Vec<u8>, kind: u8, packet_id: u16) {
    // PUBREL's flags must be 0b0010 [MQTT-3.6.1-1].
    let flags = if kind == kind::PUBREL { 0x02 } else { 0 };
    out.extend_from_slice(&[(kind << 4) | flags, 2]);
    out.extend_from_slice(&packet_id.to_be_bytes());
}

/// Appends PINGREQ.
pub fn pingreq(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0xC0, 0]);
}

/// Appends DISCONNECT (normal disconnection; the two-byte form is valid in both versions).
pub fn disconnect(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0xE0, 0]);
}

/// One whole frame in a read buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Packet type (high nibble of the first byte).
    pub kind: u8,
    /// Flags (low nibble).
    pub flags: u8,
    /// Variable header and payload.
    pub body: &'a [u8],
}

/// Splits the next whole frame off `buf`: `Ok(None)` if it is not complete yet, else the frame
/// and the bytes it used.
pub fn next_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, WireError> {
    let Some(&b0) = buf.first() else {
        return Ok(None);
    };
    let Some((len, n)) = get_varint(&buf[1..])? else {
        return Ok(None);
    };
    let total = 1 + n + len;
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some((
        Frame {
            kind: b0 >> 4,
            flags: b0 & 0x0f,
            body: &buf[1 + n..total],
        },
        total,
    )))
}

/// Bytes needed for the frame starting at `buf`, once its length is readable.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    let (len, n) = get_varint(buf.get(1..)?).ok()??;
    Some(1 + n + len)
}

/// What a subscriber needs of a received PUBLISH.
#[derive(Debug, PartialEq, Eq)]
pub struct PublishView<'a> {
    /// Delivered QoS.
    pub qos: u8,
    /// 0 for QoS 0.
    pub packet_id: u16,
    /// The application message.
    pub payload: &'a [u8],
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]))
}

/// Reads a PUBLISH body.
pub fn publish(v: Version, flags: u8, body: &[u8]) -> Result<PublishView<'_>, WireError> {
    let qos = (flags >> 1) & 3;
    if qos == 3 {
        return Err(WireError::BadQos);
    }
    let short = WireError::Truncated("PUBLISH");
    let topic_len = usize::from(u16_at(body, 0).ok_or(WireError::Truncated("PUBLISH"))?);
    let mut i = 2 + topic_len;
    let mut packet_id = 0;
    if qos > 0 {
        packet_id = u16_at(body, i).ok_or(WireError::Truncated("PUBLISH"))?;
        i += 2;
    }
    if v == Version::V5 {
        let (plen, n) = get_varint(body.get(i..).ok_or(WireError::Truncated("PUBLISH"))?)?
            .ok_or(WireError::Truncated("PUBLISH"))?;
        i += n + plen;
    }
    let payload = body.get(i..).ok_or(short)?;
    Ok(PublishView {
        qos,
        packet_id,
        payload,
    })
}

/// Packet identifier and reason code of PUBACK/PUBREC/PUBREL/PUBCOMP (reason 0 when omitted,
/// as MQTT 5.0 section 3.4.2.1 allows, and always in 3.1.1).
pub fn ack_fields(body: &[u8]) -> Result<(u16, u8), WireError> {
    let id = u16_at(body, 0).ok_or(WireError::Truncated("acknowledgement"))?;
    Ok((id, body.get(2).copied().unwrap_or(0)))
}

/// What the client needs from CONNACK.
#[derive(Debug, PartialEq, Eq)]
pub struct ConnAckView {
    /// Return code (3.1.1) or reason code (5.0); 0 is success.
    pub code: u8,
    /// Receive Maximum from the server (5.0); 65,535 when absent (MQTT 5.0 section 3.2.2.3.3).
    pub receive_maximum: u16,
}

/// Reads a CONNACK body.
pub fn connack(v: Version, body: &[u8]) -> Result<ConnAckView, WireError> {
    let code = *body.get(1).ok_or(WireError::Truncated("CONNACK"))?;
    let mut receive_maximum = u16::MAX;
    if v == Version::V5 && body.len() > 2 {
        let (plen, n) = get_varint(&body[2..])?.ok_or(WireError::Truncated("CONNACK"))?;
        let props = body
            .get(2 + n..2 + n + plen)
            .ok_or(WireError::Truncated("CONNACK"))?;
        let mut i = 0;
        while i < props.len() {
            let id = props[i];
            i += 1;
            if id == 0x21 {
                receive_maximum = u16_at(props, i).ok_or(WireError::Truncated("CONNACK"))?;
            }
            i += property_len(id, &props[i..])?;
        }
    }
    Ok(ConnAckView {
        code,
        receive_maximum,
    })
}

/// Length of one property value (after its identifier), to skip it.
fn property_len(id: u8, rest: &[u8]) -> Result<usize, WireError> {
    let short = || WireError::Truncated("property");
    let str_len = |at: usize| {
        u16_at(rest, at)
            .map(|l| 2 + usize::from(l))
            .ok_or_else(short)
    };
    Ok(match id {
        0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
        0x13 | 0x21 | 0x22 | 0x23 => 2,
        0x02 | 0x11 | 0x18 | 0x27 => 4,
        0x0B => get_varint(rest)?.ok_or_else(short)?.1,
        0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => str_len(0)?,
        0x26 => {
            let k = str_len(0)?;
            k + str_len(k)?
        }
        other => return Err(WireError::BadProperty(other)),
    })
}

/// SUBACK return/reason codes of one SUBSCRIBE (packet identifier, codes).
pub fn suback(v: Version, body: &[u8]) -> Result<(u16, Vec<u8>), WireError> {
    let id = u16_at(body, 0).ok_or(WireError::Truncated("SUBACK"))?;
    let mut i = 2;
    if v == Version::V5 {
        let (plen, n) =
            get_varint(body.get(2..).unwrap_or(&[]))?.ok_or(WireError::Truncated("SUBACK"))?;
        i += n + plen;
    }
    Ok((
        id,
        body.get(i..)
            .ok_or(WireError::Truncated("SUBACK"))?
            .to_vec(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_boundaries() {
        for (v, bytes) in [
            (0usize, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (268_435_455, 4),
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), bytes);
            assert_eq!(get_varint(&out), Ok(Some((v, bytes))));
        }
        assert_eq!(
            get_varint(&[0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(WireError::BadLength)
        );
        assert_eq!(get_varint(&[0xff]), Ok(None));
    }

    #[test]
    fn publish_round_trip_both_versions() {
        for v in [Version::V311, Version::V5] {
            for qos in 0..3u8 {
                let mut out = publish_head(v, "a/b", qos, 5);
                publish_mid(&mut out, v, qos, 9);
                out.extend_from_slice(b"hello");
                let (f, used) = next_frame(&out).unwrap().unwrap();
                assert_eq!(used, out.len());
                let p = publish(v, f.flags, f.body).unwrap();
                assert_eq!(
                    p,
                    PublishView {
                        qos,
                        packet_id: if qos > 0 { 9 } else { 0 },
                        payload: b"hello"
                    }
                );
            }
        }
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let mut out = Vec::new();
        ack(&mut out, kind::PUBACK, 3);
        assert_eq!(next_frame(&out[..3]), Ok(None));
        assert_eq!(frame_len(&out[..2]), Some(4));
    }

    #[test]
    fn connack_reads_receive_maximum_past_other_properties() {
        // session present 0, success, properties: user property ("k","v"), receive maximum 20.
        let body = [0, 0, 10, 0x26, 0, 1, b'k', 0, 1, b'v', 0x21, 0, 20];
        assert_eq!(
            connack(Version::V5, &body),
            Ok(ConnAckView {
                code: 0,
                receive_maximum: 20
            })
        );
        assert_eq!(connack(Version::V311, &[0, 5]).unwrap().code, 5);
        assert_eq!(
            connack(Version::V5, &[0, 0, 2, 0x77, 0]),
            Err(WireError::BadProperty(0x77))
        );
    }

    #[test]
    fn suback_codes_after_properties() {
        assert_eq!(suback(Version::V5, &[0, 1, 0, 1]), Ok((1, vec![1])));
        assert_eq!(suback(Version::V311, &[0, 1, 0x80]), Ok((1, vec![0x80])));
    }

    #[test]
    fn truncated_publish_is_an_error_not_a_panic() {
        assert!(publish(Version::V5, 2, &[0, 5, b'a']).is_err());
        assert!(publish(Version::V311, 2, &[]).is_err());
        // QoS 1 needs a packet identifier after the topic.
        assert_eq!(
            publish(Version::V311, 2, &[0, 0]),
            Err(WireError::Truncated("PUBLISH"))
        );
        assert_eq!(publish(Version::V311, 6, &[0, 0]), Err(WireError::BadQos));
    }
}
