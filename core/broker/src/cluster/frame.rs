//! The wire format of node-to-node links, versioned.
//!
//! A frame is a `u32` length (big-endian, counting what follows), a type byte, then the body.
//! Strings are a `u16` length and UTF-8; nonces and MACs are 32 bytes. The first frame of a
//! link is the accepting node's [`Frame::Hello`]: it starts with [`MAGIC`] and the format
//! [`VERSION`], so a node of another version (or something that is no uringmq node) is told
//! apart before anything else is read. This header layout and the Hello frame never change;
//! everything else may change with the version.

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Identifies a uringmq link in the Hello frame.
pub const MAGIC: [u8; 4] = *b"UMQL";
/// The version of this format.
pub const VERSION: u8 = 1;
/// The largest frame accepted before the peer is authenticated: a Hello or an Auth.
pub const MAX_HANDSHAKE_FRAME: usize = 256;
/// The largest frame accepted from an authenticated peer.
pub const MAX_FRAME: usize = 1 << 20;

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

impl Frame {
    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_u32(0);
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
        }
        let len = u32::try_from(out.len() - start - 4).unwrap_or(u32::MAX);
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
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
            other => return Err(FrameError::UnknownType(other)),
        };
        if b.is_empty() {
            Ok(frame)
        } else {
            Err(FrameError::Malformed)
        }
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
    }
}
