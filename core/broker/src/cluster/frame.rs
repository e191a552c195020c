//! The wire format of node-to-node links, versioned.
//!
//! A frame is a `u32` length (big-endian, counting what follows), a type byte, then the body.
//! Strings are a `u16` length and UTF-8; nonces and MACs are 32 bytes. The first frame of a
//! link is the accepting node's [`Frame::Hello`]: it starts with [`MAGIC`] and the format
//! [`VERSION`], so a node of another version (or something that is no uringmq node) is told
//! apart before anything else is read. This header layout and the Hello frame never change;
//! everything else may change with the version.
//!
//! After the handshake a link carries pings and routing frames (`router.rs`): the sender's
//! state (`Sync`, `Interest`, `SharedCount`, `SyncEnd`) and its messages (`Publish`,
//! `Retain`, each with a link sequence number), and back on the same connection `Pong` and
//! `Ack`; and the requests and answers about client ids (`clientids.rs`: `IdClaim`,
//! `IdClaimed`, `SessionTake`, `SessionGiven`, `Forward`, `IdForget`).
//!
//! Frames added within a version (`Forward`, `IdForget`) take type bytes of their own and
//! leave every other frame's layout as it was; a node of an older build of the same version
//! would refuse them (an unknown type ends the link), so a cluster runs one build.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Identifies a uringmq link in the Hello frame.
pub const MAGIC: [u8; 4] = *b"UMQL";
/// The version of this format.
pub const VERSION: u8 = 1;
/// The largest frame accepted before the peer is authenticated: a Hello or an Auth.
pub const MAX_HANDSHAKE_FRAME: usize = 256;
/// The largest frame accepted from an authenticated peer: the largest MQTT packet
/// (`max_packet_size` goes up to 268,435,460 bytes) with room for the frame's own fields.
pub const MAX_FRAME: usize = 268_435_460 + (1 << 16);

/// A random challenge or an HMAC-SHA-256.
pub type Bytes32 = [u8; 32];

/// One frame of a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// From the accepting node, first: who it is and its challenge.
    Hello {
        /// The sender's format version.
        version: u8,
        /// The accepting node's name.
        name: String,
        /// The challenge the dialing node must sign.
        nonce: Bytes32,
    },
    /// From the dialing node: who it is, its own challenge, and the accepting node's
    /// challenge signed with the cluster secret.
    Auth {
        /// The dialing node's name.
        name: String,
        /// The challenge the accepting node must sign.
        nonce: Bytes32,
        /// HMAC over both challenges and both names (`link_auth.rs`).
        mac: Bytes32,
    },
    /// From the accepting node: the dialing node's challenge, signed; the link is up.
    Welcome {
        /// HMAC over both challenges and both names, the other way round.
        mac: Bytes32,
    },
    /// Liveness probe from the dialing node, answered with [`Frame::Pong`].
    Ping,
    /// The answer to [`Frame::Ping`].
    Pong,

    // ---- routing (xroute): a node's interest and its messages, on the link it dialed ----
    /// First on a link that came up: the sender's incarnation (a new one starts its sequence
    /// numbers again), then its whole interest, closed by [`Frame::SyncEnd`].
    Sync {
        /// Random per start of the sending node.
        epoch: u64,
    },
    /// The interest sent since [`Frame::Sync`] is all the sender has.
    SyncEnd,
    /// The sender gained its first (`add`) or lost its last subscriber to `filter`.
    Interest {
        /// The filter.
        filter: String,
        /// Gained or lost.
        add: bool,
    },
    /// The sender now has `members` members of shared group `group` (`$share/g/filter`).
    SharedCount {
        /// The group.
        group: String,
        /// Its members on the sender (0: none left).
        members: u32,
    },
    /// A message for the receiver's subscribers (or one member of `group`): an MQTT 5
    /// PUBLISH as `uringmq-codec` encodes it, its Message Expiry the time left.
    Publish {
        /// The link sequence number (acknowledged by [`Frame::Ack`]).
        seq: u64,
        /// The publishing core (the receiver keeps one core per sending core).
        core: u16,
        /// A shared group to give it to one member of, instead of the subscribers.
        group: Option<String>,
        /// A group's message the sender got from another node and passes on because it had
        /// no member left: the receiver passes it on no further (no loops).
        again: bool,
        /// The PUBLISH packet.
        packet: Bytes,
    },
    /// A retained message set or cleared (empty payload) on the sender: stored, not
    /// delivered. `seq` 0: part of a link's start (every retained message the sender set
    /// last), not sequenced.
    Retain {
        /// The link sequence number, or 0.
        seq: u64,
        /// The PUBLISH packet.
        packet: Bytes,
    },
    /// From the receiver, on the same connection: everything up to `seq` reached its cores.
    Ack {
        /// The highest sequence number handed over, all before it too.
        seq: u64,
    },

    // ---- client ids and session takeover across nodes (`clientids.rs`) ----
    /// To the owner of `client_id`: the sender has a CONNECT for it; record the sender and
    /// name the node that had it (answered with [`Frame::IdClaimed`]).
    IdClaim {
        /// The sender's request number, echoed in the answer.
        req: u64,
        /// The client id.
        client_id: String,
    },
    /// The owner's answer to [`Frame::IdClaim`].
    IdClaimed {
        /// The request answered.
        req: u64,
        /// The node of the id's previous CONNECT, if the owner knew one.
        previous: Option<String>,
    },
    /// To the node of the id's previous CONNECT: take its session over for the sender
    /// (answered with [`Frame::SessionGiven`]).
    SessionTake {
        /// The sender's request number, echoed in the answer.
        req: u64,
        /// The client id.
        client_id: String,
        /// The new CONNECT starts clean: the session ends there instead of moving.
        clean_start: bool,
    },
    /// The answer to [`Frame::SessionTake`]: the session's image (`store::image`), or none.
    SessionGiven {
        /// The request answered.
        req: u64,
        /// The image, if a session moves.
        image: Option<Bytes>,
    },
    /// A delivery to `client_id`'s session that reached its stub on the node it left
    /// (sequenced like a message: resent after a reconnect).
    Forward {
        /// Sequence number on the link.
        seq: u64,
        /// The client id.
        client_id: String,
        /// The delivery's QoS (the subscription's grant applied).
        qos: u8,
        /// Its RETAIN flag.
        retain: bool,
        /// Its subscription identifiers.
        sub_ids: Vec<u32>,
        /// The message as an MQTT 5 PUBLISH (`carry.rs`).
        packet: Bytes,
    },
    /// To the owner of each of `client_ids`: the sender has no session of it any more (it
    /// ended there); the owner forgets its entry if it still names the sender (a newer
    /// CONNECT elsewhere keeps it). Not answered, written once.
    IdForget {
        /// The client ids, all owned by the receiver in the sender's view.
        client_ids: Vec<String>,
    },
}

/// A frame that cannot be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The length field is beyond what this side accepts now.
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(usize),
    /// An unknown type byte.
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// The body is shorter than its fields, or has bytes left over.
    #[error("malformed frame body")]
    Malformed,
    /// Not a uringmq link, or another version of it.
    #[error("not a uringmq link of version {VERSION} (magic or version differs: {0})")]
    Version(u8),
}

const HELLO: u8 = 1;
const AUTH: u8 = 2;
const WELCOME: u8 = 3;
const PING: u8 = 4;
const PONG: u8 = 5;
const SYNC: u8 = 16;
const SYNC_END: u8 = 17;
const INTEREST: u8 = 18;
const SHARED_COUNT: u8 = 19;
const PUBLISH: u8 = 20;
const RETAIN: u8 = 21;
const ACK: u8 = 22;
// Client ids and session takeover (`clientids.rs`).
const ID_CLAIM: u8 = 40;
const ID_CLAIMED: u8 = 41;
const SESSION_TAKE: u8 = 42;
const SESSION_GIVEN: u8 = 43;
const FORWARD: u8 = 44;
const ID_FORGET: u8 = 45;

impl Frame {
    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = begin_frame(out);
        match self {
            Frame::Hello {
                version,
                name,
                nonce,
            } => {
                out.put_u8(HELLO);
                out.put_slice(&MAGIC);
                out.put_u8(*version);
                put_str(out, name);
                out.put_slice(nonce);
            }
            Frame::Auth { name, nonce, mac } => {
                out.put_u8(AUTH);
                put_str(out, name);
                out.put_slice(nonce);
                out.put_slice(mac);
            }
            Frame::Welcome { mac } => {
                out.put_u8(WELCOME);
                out.put_slice(mac);
            }
            Frame::Ping => out.put_u8(PING),
            Frame::Pong => out.put_u8(PONG),
            routing => routing.encode_routing(out),
        }
        end_frame(out, start);
    }

    /// The body of a routing frame.
    fn encode_routing(&self, out: &mut BytesMut) {
        match self {
            Frame::Sync { epoch } => {
                out.put_u8(SYNC);
                out.put_u64(*epoch);
            }
            Frame::SyncEnd => out.put_u8(SYNC_END),
            Frame::Interest { filter, add } => {
                out.put_u8(INTEREST);
                out.put_u8(u8::from(*add));
                put_str(out, filter);
            }
            Frame::SharedCount { group, members } => {
                out.put_u8(SHARED_COUNT);
                out.put_u32(*members);
                put_str(out, group);
            }
            Frame::Publish {
                seq,
                core,
                group,
                again,
                packet,
            } => {
                put_publish_head(out, *seq, *core, group.as_deref(), *again);
                out.put_slice(packet);
            }
            Frame::Retain { seq, packet } => {
                out.put_u8(RETAIN);
                out.put_u64(*seq);
                out.put_slice(packet);
            }
            Frame::Ack { seq } => {
                out.put_u8(ACK);
                out.put_u64(*seq);
            }
            Frame::IdClaim { .. }
            | Frame::IdClaimed { .. }
            | Frame::SessionTake { .. }
            | Frame::SessionGiven { .. }
            | Frame::IdForget { .. } => encode_takeover(self, out),
            Frame::Forward {
                seq,
                client_id,
                qos,
                retain,
                sub_ids,
                packet,
            } => {
                let head = ForwardHead {
                    client_id,
                    qos: *qos,
                    retain: *retain,
                    sub_ids,
                };
                put_forward_head(out, *seq, &head);
                out.put_slice(packet);
            }
            _ => unreachable!("handshake frames are encoded by `encode`"),
        }
    }

    /// Decodes one frame's type byte and body (what follows the length).
    pub fn decode(mut b: &[u8]) -> Result<Frame, FrameError> {
        let frame = match take_u8(&mut b)? {
            HELLO => {
                let mut magic = [0; 4];
                take(&mut b, &mut magic)?;
                let version = take_u8(&mut b)?;
                if magic != MAGIC || version != VERSION {
                    return Err(FrameError::Version(version));
                }
                Frame::Hello {
                    version,
                    name: take_str(&mut b)?,
                    nonce: take32(&mut b)?,
                }
            }
            AUTH => Frame::Auth {
                name: take_str(&mut b)?,
                nonce: take32(&mut b)?,
                mac: take32(&mut b)?,
            },
            WELCOME => Frame::Welcome {
                mac: take32(&mut b)?,
            },
            PING => Frame::Ping,
            PONG => Frame::Pong,
            k @ (ID_CLAIM..=SESSION_GIVEN | ID_FORGET) => decode_takeover(k, &mut b)?,
            FORWARD => return decode_forward(b),
            other => return decode_routing(other, b),
        };
        if b.is_empty() {
            Ok(frame)
        } else {
            Err(FrameError::Malformed)
        }
    }
}

/// A routing frame's body (`kind` is its type byte).
fn decode_routing(kind: u8, mut b: &[u8]) -> Result<Frame, FrameError> {
    let frame = match kind {
        SYNC => Frame::Sync {
            epoch: take_u64(&mut b)?,
        },
        SYNC_END => Frame::SyncEnd,
        INTEREST => {
            let add = take_u8(&mut b)? != 0;
            Frame::Interest {
                add,
                filter: take_str(&mut b)?,
            }
        }
        SHARED_COUNT => {
            let members = take_u32(&mut b)?;
            Frame::SharedCount {
                members,
                group: take_str(&mut b)?,
            }
        }
        PUBLISH => {
            let seq = take_u64(&mut b)?;
            let core = take_u16(&mut b)?;
            let (group, again) = match take_u8(&mut b)? {
                0 => (None, false),
                flag => (Some(take_str(&mut b)?), flag == GROUP_AGAIN),
            };
            return Ok(Frame::Publish {
                seq,
                core,
                group,
                again,
                packet: Bytes::copy_from_slice(b),
            });
        }
        RETAIN => {
            let seq = take_u64(&mut b)?;
            return Ok(Frame::Retain {
                seq,
                packet: Bytes::copy_from_slice(b),
            });
        }
        ACK => Frame::Ack {
            seq: take_u64(&mut b)?,
        },
        other => return Err(FrameError::UnknownType(other)),
    };
    if b.is_empty() {
        Ok(frame)
    } else {
        Err(FrameError::Malformed)
    }
}

/// Starts a frame in `out`; returns where, for [`end_frame`].
pub fn begin_frame(out: &mut BytesMut) -> usize {
    let start = out.len();
    out.put_u32(0);
    start
}

/// Writes the length of the frame begun at `start`.
pub fn end_frame(out: &mut BytesMut, start: usize) {
    let len = u32::try_from(out.len() - start - 4).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// A [`Frame::Publish`]'s group flag: a group follows.
const GROUP: u8 = 1;
/// A group follows, and the message is passed on (`again`).
const GROUP_AGAIN: u8 = 2;

/// The fields of a [`Frame::Publish`] before its packet (which follows to the frame's end).
pub fn put_publish_head(out: &mut BytesMut, seq: u64, core: u16, group: Option<&str>, again: bool) {
    out.put_u8(PUBLISH);
    out.put_u64(seq);
    out.put_u16(core);
    match group {
        None => out.put_u8(0),
        Some(g) => {
            out.put_u8(if again { GROUP_AGAIN } else { GROUP });
            put_str(out, g);
        }
    }
}

/// The fields of a [`Frame::Retain`] before its packet.
pub fn put_retain_head(out: &mut BytesMut, seq: u64) {
    out.put_u8(RETAIN);
    out.put_u64(seq);
}

/// The fields of a [`Frame::Forward`] before its packet.
pub struct ForwardHead<'a> {
    pub client_id: &'a str,
    pub qos: u8,
    pub retain: bool,
    pub sub_ids: &'a [u32],
}

/// Writes the fields of a [`Frame::Forward`] before its packet.
pub fn put_forward_head(out: &mut BytesMut, seq: u64, h: &ForwardHead<'_>) {
    out.put_u8(FORWARD);
    out.put_u64(seq);
    put_str(out, h.client_id);
    out.put_u8(h.qos);
    out.put_u8(u8::from(h.retain));
    out.put_u8(u8::try_from(h.sub_ids.len()).unwrap_or(u8::MAX));
    for id in h.sub_ids.iter().take(usize::from(u8::MAX)) {
        out.put_u32(*id);
    }
}

fn decode_forward(mut b: &[u8]) -> Result<Frame, FrameError> {
    let seq = take_u64(&mut b)?;
    let client_id = take_str(&mut b)?;
    let qos = take_u8(&mut b)?;
    let retain = take_u8(&mut b)? != 0;
    let n = take_u8(&mut b)?;
    let sub_ids = (0..n).map(|_| take_u32(&mut b)).collect::<Result<_, _>>()?;
    Ok(Frame::Forward {
        seq,
        client_id,
        qos,
        retain,
        sub_ids,
        packet: Bytes::copy_from_slice(b),
    })
}

/// Encodes the frames of `clientids.rs` (type byte and body).
fn encode_takeover(f: &Frame, out: &mut BytesMut) {
    match f {
        Frame::IdClaim { req, client_id } => {
            out.put_u8(ID_CLAIM);
            out.put_u64(*req);
            put_str(out, client_id);
        }
        Frame::IdClaimed { req, previous } => {
            out.put_u8(ID_CLAIMED);
            out.put_u64(*req);
            put_opt(out, previous.as_ref(), |out, p| put_str(out, p));
        }
        Frame::SessionTake {
            req,
            client_id,
            clean_start,
        } => {
            out.put_u8(SESSION_TAKE);
            out.put_u64(*req);
            put_str(out, client_id);
            out.put_u8(u8::from(*clean_start));
        }
        Frame::SessionGiven { req, image } => {
            out.put_u8(SESSION_GIVEN);
            out.put_u64(*req);
            put_opt(out, image.as_ref(), |out, i| {
                out.put_u32(u32::try_from(i.len()).unwrap_or(u32::MAX));
                out.put_slice(i);
            });
        }
        Frame::IdForget { client_ids } => {
            out.put_u8(ID_FORGET);
            out.put_u32(u32::try_from(client_ids.len()).unwrap_or(u32::MAX));
            for id in client_ids {
                put_str(out, id);
            }
        }
        _ => unreachable!("called for the frames of `clientids.rs` only"),
    }
}

/// Decodes the body of a `clientids.rs` frame of type `kind` (its type byte is taken).
fn decode_takeover(kind: u8, b: &mut &[u8]) -> Result<Frame, FrameError> {
    Ok(match kind {
        ID_CLAIM => Frame::IdClaim {
            req: take_u64(b)?,
            client_id: take_str(b)?,
        },
        ID_CLAIMED => Frame::IdClaimed {
            req: take_u64(b)?,
            previous: take_opt(b, take_str)?,
        },
        SESSION_TAKE => Frame::SessionTake {
            req: take_u64(b)?,
            client_id: take_str(b)?,
            clean_start: take_u8(b)? != 0,
        },
        SESSION_GIVEN => Frame::SessionGiven {
            req: take_u64(b)?,
            image: take_opt(b, |b| {
                let n = take_u32(b)? as usize;
                let mut v = vec![0; n.min(b.len())];
                take(b, &mut v)?;
                if v.len() != n {
                    return Err(FrameError::Malformed);
                }
                Ok(Bytes::from(v))
            })?,
        },
        ID_FORGET => {
            let n = take_u32(b)? as usize;
            // Each id takes at least its 2-byte length: a count beyond that is malformed,
            // not an allocation.
            if n > b.len() / 2 {
                return Err(FrameError::Malformed);
            }
            let client_ids = (0..n).map(|_| take_str(b)).collect::<Result<_, _>>()?;
            Frame::IdForget { client_ids }
        }
        other => return Err(FrameError::UnknownType(other)),
    })
}

fn put_opt<T>(out: &mut BytesMut, v: Option<T>, put: impl FnOnce(&mut BytesMut, T)) {
    match v {
        Some(v) => {
            out.put_u8(1);
            put(out, v);
        }
        None => out.put_u8(0),
    }
}

fn take_opt<T>(
    b: &mut &[u8],
    get: impl FnOnce(&mut &[u8]) -> Result<T, FrameError>,
) -> Result<Option<T>, FrameError> {
    match take_u8(b)? {
        0 => Ok(None),
        1 => get(b).map(Some),
        _ => Err(FrameError::Malformed),
    }
}

/// Reads one frame of at most `max` bytes. End of stream and malformed frames are errors.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Frame> {
    let len = r.read_u32().await? as usize;
    if len > max {
        return Err(invalid(FrameError::TooLarge(len)));
    }
    buf.resize(len, 0);
    r.read_exact(buf).await?;
    Frame::decode(buf).map_err(invalid)
}

fn invalid(e: FrameError) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}

fn put_str(out: &mut BytesMut, s: &str) {
    let s = &s.as_bytes()[..s.len().min(usize::from(u16::MAX))];
    out.put_u16(s.len() as u16);
    out.put_slice(s);
}

fn take_u8(b: &mut &[u8]) -> Result<u8, FrameError> {
    if b.is_empty() {
        return Err(FrameError::Malformed);
    }
    Ok(b.get_u8())
}

fn take_u16(b: &mut &[u8]) -> Result<u16, FrameError> {
    let mut x = [0; 2];
    take(b, &mut x)?;
    Ok(u16::from_be_bytes(x))
}

fn take_u32(b: &mut &[u8]) -> Result<u32, FrameError> {
    let mut x = [0; 4];
    take(b, &mut x)?;
    Ok(u32::from_be_bytes(x))
}

fn take_u64(b: &mut &[u8]) -> Result<u64, FrameError> {
    let mut x = [0; 8];
    take(b, &mut x)?;
    Ok(u64::from_be_bytes(x))
}

fn take(b: &mut &[u8], into: &mut [u8]) -> Result<(), FrameError> {
    if b.len() < into.len() {
        return Err(FrameError::Malformed);
    }
    b.copy_to_slice(into);
    Ok(())
}

fn take32(b: &mut &[u8]) -> Result<Bytes32, FrameError> {
    let mut out = [0; 32];
    take(b, &mut out)?;
    Ok(out)
}

fn take_str(b: &mut &[u8]) -> Result<String, FrameError> {
    if b.len() < 2 {
        return Err(FrameError::Malformed);
    }
    let len = usize::from(b.get_u16());
    let mut s = vec![0; len];
    take(b, &mut s)?;
    String::from_utf8(s).map_err(|_| FrameError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(f: Frame) {
        let mut out = BytesMut::new();
        f.encode(&mut out);
        let len = u32::from_be_bytes(out[..4].try_into().unwrap()) as usize;
        assert_eq!(len, out.len() - 4);
        assert_eq!(Frame::decode(&out[4..]), Ok(f));
    }

    #[test]
    fn every_frame_round_trips() {
        round_trip(Frame::Hello {
            version: VERSION,
            name: "node-a".into(),
            nonce: [7; 32],
        });
        round_trip(Frame::Auth {
            name: "b".into(),
            nonce: [1; 32],
            mac: [2; 32],
        });
        round_trip(Frame::Welcome { mac: [3; 32] });
        round_trip(Frame::Ping);
        round_trip(Frame::Pong);
        round_trip(Frame::Sync { epoch: u64::MAX });
        round_trip(Frame::SyncEnd);
        round_trip(Frame::Interest {
            filter: "a/+/#".into(),
            add: true,
        });
        round_trip(Frame::SharedCount {
            group: "$share/g/a".into(),
            members: 3,
        });
        let groups = [
            (None, false),
            (Some("$share/g/t".to_owned()), false),
            (Some("$share/g/t".to_owned()), true),
        ];
        for (group, again) in groups {
            round_trip(Frame::Publish {
                seq: 7,
                core: 2,
                group,
                again,
                packet: Bytes::from_static(b"\x30\x03\x00\x01t"),
            });
        }
        round_trip(Frame::Retain {
            seq: 0,
            packet: Bytes::from_static(b"xyz"),
        });
        round_trip(Frame::Ack { seq: 9 });
        round_trip(Frame::IdClaim {
            req: 9,
            client_id: "dev-1".into(),
        });
        round_trip(Frame::IdClaimed {
            req: 9,
            previous: Some("node-a".into()),
        });
        round_trip(Frame::IdClaimed {
            req: 10,
            previous: None,
        });
        round_trip(Frame::SessionTake {
            req: 11,
            client_id: "dev-1".into(),
            clean_start: true,
        });
        round_trip(Frame::SessionGiven {
            req: 11,
            image: Some(Bytes::from_static(b"UMQSTOR\x01...")),
        });
        round_trip(Frame::SessionGiven {
            req: 12,
            image: None,
        });
        round_trip(Frame::Forward {
            seq: 5,
            client_id: "dev-1".into(),
            qos: 1,
            retain: false,
            sub_ids: vec![7, 9],
            packet: Bytes::from_static(b"\x30\x03\x00\x01t"),
        });
        round_trip(Frame::IdForget {
            client_ids: vec!["dev-1".into(), String::new(), "dev-2".into()],
        });
        round_trip(Frame::IdForget { client_ids: vec![] });
    }

    #[test]
    fn another_version_or_garbage_is_refused() {
        let mut out = BytesMut::new();
        Frame::Hello {
            version: VERSION + 1,
            name: "a".into(),
            nonce: [0; 32],
        }
        .encode(&mut out);
        assert_eq!(
            Frame::decode(&out[4..]),
            Err(FrameError::Version(VERSION + 1))
        );
        assert_eq!(Frame::decode(&[99]), Err(FrameError::UnknownType(99)));
        assert_eq!(Frame::decode(&[WELCOME, 1, 2]), Err(FrameError::Malformed));
        assert_eq!(Frame::decode(&[PING, 0]), Err(FrameError::Malformed));
        assert_eq!(Frame::decode(&[]), Err(FrameError::Malformed));
        // A count of ids beyond what the body holds.
        let huge = [ID_FORGET, 0xff, 0xff, 0xff, 0xff, 0, 0];
        assert_eq!(Frame::decode(&huge), Err(FrameError::Malformed));
    }
}
