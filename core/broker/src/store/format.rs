//! The on-disk form of a [`Record`]: framing, checksum, version and field encoding.
//!
//! A segment file is a header (`MAGIC`, then the format version byte) followed by frames:
//!
//! ```text
//! u32 LE  body length
//! u32 LE  crc32c of the body
//! body:   u8 format version | u8 kind | u64 LE stamp | fields of the kind
//! ```
//!
//! A reader stops at the first frame whose length runs past the end of the file or whose
//! checksum or fields do not match: everything from there on in that segment is a torn or
//! corrupt tail and is reported, never interpreted (a record is applied whole or not at all).
//! Fields: integers little-endian, strings and byte strings as `u32` length + bytes, optional
//! values as a 0/1 tag byte followed by the value.

use super::{MsgState, Record, SessionMeta, StoredMsg};
use bytes::{Buf, BufMut, Bytes};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use uringmq_codec::{
    ByteStr, LastWill, Protocol, PublishProperties, QoS, RetainHandling, UserProperties,
    WillProperties,
};
use uringmq_session::{Delivery, Message, SubOptions};

/// First bytes of every segment file.
pub(crate) const MAGIC: &[u8; 7] = b"UMQSTOR";
/// The format version written; a reader refuses frames of other versions.
pub(crate) const VERSION: u8 = 1;
/// Bytes of a segment header.
pub(crate) const HEADER_LEN: usize = MAGIC.len() + 1;
/// Bytes of a frame before its body.
pub(crate) const FRAME_HEAD: usize = 8;
/// A frame longer than this is taken for a corrupt length field (the broker's largest
/// message is 256 MiB; a session image is split into records).
pub(crate) const MAX_BODY: usize = 300 << 20;

/// Record kinds (the byte after the version).
mod kind {
    pub const SESSION: u8 = 1;
    pub const SESSION_FRESH: u8 = 2;
    pub const GONE: u8 = 3;
    pub const MOVED: u8 = 4;
    pub const SUB_ADD: u8 = 5;
    pub const SUB_REMOVE: u8 = 6;
    pub const QUEUED: u8 = 7;
    pub const MSG_STATE: u8 = 8;
    pub const MSG_DONE: u8 = 9;
    pub const QOS2_RECEIVED: u8 = 10;
    pub const QOS2_RELEASED: u8 = 11;
    pub const RETAIN_SET: u8 = 12;
    pub const RETAIN_CLEAR: u8 = 13;
    pub const SNAPSHOT_END: u8 = 14;
}

/// A decoded frame: the record's stamp and its content.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub stamp: u64,
    pub rec: Record,
}

/// Wall clock <-> `Instant` conversion, fixed at one moment (messages carry an `Instant`,
/// the disk needs the wall clock to survive a restart).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clocks {
    pub instant: Instant,
    pub wall: SystemTime,
}

impl Clocks {
    pub fn now() -> Self {
        Clocks {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// The wall-clock time of `at`.
    pub fn wall_of(&self, at: Instant) -> SystemTime {
        match at.checked_duration_since(self.instant) {
            Some(d) => self.wall + d,
            None => self.wall - self.instant.duration_since(at),
        }
    }

    /// The `Instant` of wall-clock time `at` (an `Instant` may lie before boot; one too far
    /// back to express is clamped to now, which only delays that message's expiry).
    pub fn instant_of(&self, at: SystemTime) -> Instant {
        match self.wall.duration_since(at) {
            Ok(ago) => self.instant.checked_sub(ago).unwrap_or(self.instant),
            Err(e) => self.instant + e.duration(),
        }
    }
}

/// Milliseconds since the Unix epoch (0 for earlier times).
pub(crate) fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Appends one framed record to `out`. `wall` converts message receive times.
pub(crate) fn encode(out: &mut Vec<u8>, stamp: u64, rec: &Record, clocks: &Clocks) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEAD]);
    out.put_u8(VERSION);
    out.put_u8(kind_of(rec));
    out.put_u64_le(stamp);
    encode_fields(out, rec, clocks);
    let body = &out[start + FRAME_HEAD..];
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let crc = crc32c::crc32c(body);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn kind_of(rec: &Record) -> u8 {
    match rec {
        Record::Session { fresh: false, .. } => kind::SESSION,
        Record::Session { fresh: true, .. } => kind::SESSION_FRESH,
        Record::SessionGone { .. } => kind::GONE,
        Record::SessionMoved { .. } => kind::MOVED,
        Record::SubAdd { .. } => kind::SUB_ADD,
        Record::SubRemove { .. } => kind::SUB_REMOVE,
        Record::Queued { .. } => kind::QUEUED,
        Record::MsgState { .. } => kind::MSG_STATE,
        Record::MsgDone { .. } => kind::MSG_DONE,
        Record::Qos2Received { .. } => kind::QOS2_RECEIVED,
        Record::Qos2Released { .. } => kind::QOS2_RELEASED,
        Record::RetainSet { .. } => kind::RETAIN_SET,
        Record::RetainClear { .. } => kind::RETAIN_CLEAR,
        Record::SnapshotEnd { .. } => kind::SNAPSHOT_END,
    }
}

fn encode_fields(out: &mut Vec<u8>, rec: &Record, clocks: &Clocks) {
    match rec {
        Record::Session { meta, .. } => put_meta(out, meta),
        Record::SessionGone { client_id } | Record::SessionMoved { client_id } => {
            put_str(out, client_id)
        }
        Record::SubAdd {
            client_id,
            filter,
            opts,
        } => {
            put_str(out, client_id);
            put_str(out, filter);
            put_sub_options(out, opts);
        }
        Record::SubRemove { client_id, filter } => {
            put_str(out, client_id);
            put_str(out, filter);
        }
        Record::Queued { client_id, msg } => {
            put_str(out, client_id);
            put_stored(out, msg, clocks);
        }
        Record::MsgState {
            client_id,
            id,
            packet_id,
            state,
        } => {
            put_str(out, client_id);
            out.put_u64_le(*id);
            put_opt_u16(out, *packet_id);
            out.put_u8(*state as u8);
        }
        Record::MsgDone { client_id, id } => {
            put_str(out, client_id);
            out.put_u64_le(*id);
        }
        Record::Qos2Received {
            client_id,
            packet_id,
        }
        | Record::Qos2Released {
            client_id,
            packet_id,
        } => {
            put_str(out, client_id);
            out.put_u16_le(*packet_id);
        }
        Record::RetainSet { msg } => put_message(out, msg, clocks),
        Record::RetainClear { topic } => put_str(out, topic),
        Record::SnapshotEnd { first_segment } => out.put_u64_le(*first_segment),
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.put_u32_le(u32::try_from(b.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(b);
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            out.put_u8(1);
            put_str(out, s);
        }
        None => out.put_u8(0),
    }
}

fn put_opt_bytes(out: &mut Vec<u8>, b: Option<&Bytes>) {
    match b {
        Some(b) => {
            out.put_u8(1);
            put_bytes(out, b);
        }
        None => out.put_u8(0),
    }
}

fn put_opt_u32(out: &mut Vec<u8>, v: Option<u32>) {
    match v {
        Some(v) => {
            out.put_u8(1);
            out.put_u32_le(v);
        }
        None => out.put_u8(0),
    }
}

fn put_opt_u16(out: &mut Vec<u8>, v: Option<u16>) {
    match v {
        Some(v) => {
            out.put_u8(1);
            out.put_u16_le(v);
        }
        None => out.put_u8(0),
    }
}

fn put_opt_u8(out: &mut Vec<u8>, v: Option<u8>) {
    match v {
        Some(v) => {
            out.put_u8(1);
            out.put_u8(v);
        }
        None => out.put_u8(0),
    }
}

fn put_user_props(out: &mut Vec<u8>, props: &UserProperties) {
    out.put_u32_le(u32::try_from(props.len()).unwrap_or(u32::MAX));
    for (k, v) in props {
        put_str(out, k);
        put_str(out, v);
    }
}

fn put_meta(out: &mut Vec<u8>, m: &SessionMeta) {
    put_str(out, &m.client_id);
    out.put_u8(m.protocol as u8);
    put_opt_str(out, m.username.as_deref());
    out.put_u16_le(m.listener);
    out.put_u32_le(m.session_expiry);
    match m.expires_at {
        Some(t) => {
            out.put_u8(1);
            out.put_u64_le(millis(t));
        }
        None => out.put_u8(0),
    }
    out.put_u32_le(m.will_delay);
    match &m.will {
        Some(w) => {
            out.put_u8(1);
            put_will(out, w);
        }
        None => out.put_u8(0),
    }
}

fn put_will(out: &mut Vec<u8>, w: &LastWill) {
    put_str(out, &w.topic);
    put_bytes(out, &w.payload);
    out.put_u8(w.qos as u8);
    out.put_u8(u8::from(w.retain));
    let p = &w.properties;
    put_opt_u32(out, p.will_delay_interval);
    put_opt_u8(out, p.payload_format_indicator);
    put_opt_u32(out, p.message_expiry_interval);
    put_opt_str(out, p.content_type.as_deref());
    put_opt_str(out, p.response_topic.as_deref());
    put_opt_bytes(out, p.correlation_data.as_ref());
    put_user_props(out, &p.user_properties);
}

fn put_sub_options(out: &mut Vec<u8>, o: &SubOptions) {
    out.put_u8(o.qos as u8);
    out.put_u8(u8::from(o.no_local));
    out.put_u8(u8::from(o.retain_as_published));
    out.put_u8(o.retain_handling as u8);
    put_opt_u32(out, o.id);
}

/// A message: topic, payload, QoS, RETAIN, receive time, v5 properties (no topic alias and
/// no subscription identifiers: those belong to one hop).
fn put_message(out: &mut Vec<u8>, m: &Message, clocks: &Clocks) {
    put_str(out, &m.topic);
    put_bytes(out, &m.payload);
    out.put_u8(m.qos as u8);
    out.put_u8(u8::from(m.retain));
    out.put_u64_le(millis(clocks.wall_of(m.received_at)));
    let p = &m.properties;
    put_opt_u8(out, p.payload_format_indicator);
    put_opt_u32(out, p.message_expiry_interval);
    put_opt_str(out, p.response_topic.as_deref());
    put_opt_bytes(out, p.correlation_data.as_ref());
    put_user_props(out, &p.user_properties);
    put_opt_str(out, p.content_type.as_deref());
}

fn put_stored(out: &mut Vec<u8>, s: &StoredMsg, clocks: &Clocks) {
    out.put_u64_le(s.id);
    put_opt_u16(out, s.packet_id);
    out.put_u8(s.state as u8);
    out.put_u8(s.delivery.qos as u8);
    out.put_u8(u8::from(s.delivery.retain));
    out.put_u32_le(u32::try_from(s.delivery.sub_ids.len()).unwrap_or(u32::MAX));
    for id in &s.delivery.sub_ids {
        out.put_u32_le(*id);
    }
    put_opt_str(out, s.shared_group.as_deref());
    put_message(out, &s.msg, clocks);
}

/// Why a frame was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bad {
    /// The file ends inside the frame (a write cut short).
    Torn,
    /// The length field is impossible.
    Length,
    /// The checksum does not match.
    Checksum,
    /// A version this build does not read.
    Version(u8),
    /// The checksum matched but the fields did not parse.
    Fields,
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bad::Torn => f.write_str("torn record (file ends inside it)"),
            Bad::Length => f.write_str("impossible record length"),
            Bad::Checksum => f.write_str("checksum mismatch"),
            Bad::Version(v) => write!(f, "unknown record version {v}"),
            Bad::Fields => f.write_str("malformed record fields"),
        }
    }
}

/// Decodes the frame at the start of `buf`: the record and the bytes it took.
pub(crate) fn decode(buf: &Bytes, clocks: &Clocks) -> Result<(Decoded, usize), Bad> {
    if buf.len() < FRAME_HEAD {
        return Err(Bad::Torn);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if !(10..=MAX_BODY).contains(&len) {
        return Err(Bad::Length);
    }
    if buf.len() < FRAME_HEAD + len {
        return Err(Bad::Torn);
    }
    let body = buf.slice(FRAME_HEAD..FRAME_HEAD + len);
    if crc32c::crc32c(&body) != crc {
        return Err(Bad::Checksum);
    }
    if body[0] != VERSION {
        return Err(Bad::Version(body[0]));
    }
    let mut r = Reader(body.slice(2..));
    let stamp = r.u64()?;
    let rec = decode_fields(body[1], &mut r, clocks)?;
    if r.0.has_remaining() {
        return Err(Bad::Fields);
    }
    Ok((Decoded { stamp, rec }, FRAME_HEAD + len))
}

fn decode_fields(k: u8, r: &mut Reader, clocks: &Clocks) -> Result<Record, Bad> {
    Ok(match k {
        kind::SESSION | kind::SESSION_FRESH => Record::Session {
            meta: get_meta(r)?,
            fresh: k == kind::SESSION_FRESH,
        },
        kind::GONE => Record::SessionGone {
            client_id: r.arc_str()?,
        },
        kind::MOVED => Record::SessionMoved {
            client_id: r.arc_str()?,
        },
        kind::SUB_ADD => Record::SubAdd {
            client_id: r.arc_str()?,
            filter: r.string()?,
            opts: get_sub_options(r)?,
        },
        kind::SUB_REMOVE => Record::SubRemove {
            client_id: r.arc_str()?,
            filter: r.string()?,
        },
        kind::QUEUED => Record::Queued {
            client_id: r.arc_str()?,
            msg: get_stored(r, clocks)?,
        },
        kind::MSG_STATE => Record::MsgState {
            client_id: r.arc_str()?,
            id: r.u64()?,
            packet_id: r.opt_u16()?,
            state: msg_state(r.u8()?)?,
        },
        kind::MSG_DONE => Record::MsgDone {
            client_id: r.arc_str()?,
            id: r.u64()?,
        },
        kind::QOS2_RECEIVED | kind::QOS2_RELEASED => {
            let client_id = r.arc_str()?;
            let packet_id = r.u16()?;
            if k == kind::QOS2_RECEIVED {
                Record::Qos2Received {
                    client_id,
                    packet_id,
                }
            } else {
                Record::Qos2Released {
                    client_id,
                    packet_id,
                }
            }
        }
        kind::RETAIN_SET => Record::RetainSet {
            msg: Arc::new(get_message(r, clocks)?),
        },
        kind::RETAIN_CLEAR => Record::RetainClear { topic: r.string()? },
        kind::SNAPSHOT_END => Record::SnapshotEnd {
            first_segment: r.u64()?,
        },
        _ => return Err(Bad::Fields),
    })
}

fn msg_state(v: u8) -> Result<MsgState, Bad> {
    match v {
        0 => Ok(MsgState::Queued),
        1 => Ok(MsgState::Sent),
        2 => Ok(MsgState::Released),
        _ => Err(Bad::Fields),
    }
}

fn qos(v: u8) -> Result<QoS, Bad> {
    QoS::from_u8(v).ok_or(Bad::Fields)
}

fn bool_(v: u8) -> Result<bool, Bad> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(Bad::Fields),
    }
}

fn get_meta(r: &mut Reader) -> Result<SessionMeta, Bad> {
    let client_id = r.arc_str()?;
    let protocol = match r.u8()? {
        3 => Protocol::V3_1,
        4 => Protocol::V3_1_1,
        5 => Protocol::V5,
        _ => return Err(Bad::Fields),
    };
    let username = r.opt(|r| r.arc_str())?;
    let listener = r.u16()?;
    let session_expiry = r.u32()?;
    let expires_at = r.opt(|r| r.u64().map(from_millis))?;
    let will_delay = r.u32()?;
    let will = r.opt(|r| get_will(r).map(Box::new))?;
    Ok(SessionMeta {
        client_id,
        protocol,
        username,
        listener,
        session_expiry,
        expires_at,
        will,
        will_delay,
    })
}

fn get_will(r: &mut Reader) -> Result<LastWill, Bad> {
    let topic = r.string()?;
    let payload = r.bytes()?;
    let qos = qos(r.u8()?)?;
    let retain = bool_(r.u8()?)?;
    let properties = WillProperties {
        will_delay_interval: r.opt_u32()?,
        payload_format_indicator: r.opt(|r| r.u8())?,
        message_expiry_interval: r.opt_u32()?,
        content_type: r.opt(|r| r.string())?,
        response_topic: r.opt(|r| r.string())?,
        correlation_data: r.opt(|r| r.bytes())?,
        user_properties: get_user_props(r)?,
    };
    Ok(LastWill {
        topic,
        payload,
        qos,
        retain,
        properties,
    })
}

fn get_user_props(r: &mut Reader) -> Result<UserProperties, Bad> {
    let n = r.u32()? as usize;
    // Each pair takes at least 8 bytes: a count beyond that is corrupt, not an allocation.
    if n > r.0.remaining() / 8 {
        return Err(Bad::Fields);
    }
    (0..n).map(|_| Ok((r.string()?, r.string()?))).collect()
}

fn get_sub_options(r: &mut Reader) -> Result<SubOptions, Bad> {
    Ok(SubOptions {
        qos: qos(r.u8()?)?,
        no_local: bool_(r.u8()?)?,
        retain_as_published: bool_(r.u8()?)?,
        retain_handling: match r.u8()? {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(Bad::Fields),
        },
        id: r.opt_u32()?,
    })
}

fn get_message(r: &mut Reader, clocks: &Clocks) -> Result<Message, Bad> {
    let topic = r.string()?;
    let payload = r.bytes()?;
    let qos = qos(r.u8()?)?;
    let retain = bool_(r.u8()?)?;
    let received = from_millis(r.u64()?);
    let properties = PublishProperties {
        payload_format_indicator: r.opt(|r| r.u8())?,
        message_expiry_interval: r.opt_u32()?,
        response_topic: r.opt(|r| r.string())?,
        correlation_data: r.opt(|r| r.bytes())?,
        user_properties: get_user_props(r)?,
        content_type: r.opt(|r| r.string())?,
        ..PublishProperties::default()
    };
    Ok(Message {
        topic,
        payload,
        qos,
        retain,
        properties,
        origin: None,
        received_at: clocks.instant_of(received),
    })
}

fn get_stored(r: &mut Reader, clocks: &Clocks) -> Result<StoredMsg, Bad> {
    let id = r.u64()?;
    let packet_id = r.opt_u16()?;
    let state = msg_state(r.u8()?)?;
    let dqos = qos(r.u8()?)?;
    let dretain = bool_(r.u8()?)?;
    let n = r.u32()? as usize;
    if n > r.0.remaining() / 4 {
        return Err(Bad::Fields);
    }
    let sub_ids = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
    let shared_group = r.opt(|r| r.arc_str())?;
    let msg = Arc::new(get_message(r, clocks)?);
    Ok(StoredMsg {
        id,
        msg,
        delivery: Delivery {
            qos: dqos,
            retain: dretain,
            sub_ids,
            ..Delivery::default()
        },
        shared_group,
        packet_id,
        state,
    })
}

/// Reads fields from a record body; every read is bounds-checked.
struct Reader(Bytes);

impl Reader {
    fn need(&self, n: usize) -> Result<(), Bad> {
        if self.0.remaining() < n {
            Err(Bad::Fields)
        } else {
            Ok(())
        }
    }

    fn u8(&mut self) -> Result<u8, Bad> {
        self.need(1)?;
        Ok(self.0.get_u8())
    }

    fn u16(&mut self) -> Result<u16, Bad> {
        self.need(2)?;
        Ok(self.0.get_u16_le())
    }

    fn u32(&mut self) -> Result<u32, Bad> {
        self.need(4)?;
        Ok(self.0.get_u32_le())
    }

    fn u64(&mut self) -> Result<u64, Bad> {
        self.need(8)?;
        Ok(self.0.get_u64_le())
    }

    fn bytes(&mut self) -> Result<Bytes, Bad> {
        let n = self.u32()? as usize;
        self.need(n)?;
        Ok(self.0.split_to(n))
    }

    fn string(&mut self) -> Result<ByteStr, Bad> {
        ByteStr::from_utf8(self.bytes()?).map_err(|_| Bad::Fields)
    }

    fn arc_str(&mut self) -> Result<Arc<str>, Bad> {
        Ok(Arc::from(self.string()?.as_str()))
    }

    fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, Bad>) -> Result<Option<T>, Bad> {
        match self.u8()? {
            0 => Ok(None),
            1 => f(self).map(Some),
            _ => Err(Bad::Fields),
        }
    }

    fn opt_u32(&mut self) -> Result<Option<u32>, Bad> {
        self.opt(|r| r.u32())
    }

    fn opt_u16(&mut self) -> Result<Option<u16>, Bad> {
        self.opt(|r| r.u16())
    }
}
