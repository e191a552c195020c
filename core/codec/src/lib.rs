//! MQTT 3.1, 3.1.1 and 5.0 packet codec.
//!
//! Pure code: no I/O, no runtime. Decoding is incremental and zero-copy (topics and payloads are
//! slices of the read buffer); every malformed input is a typed [`DecodeError`] naming the rule of
//! the specification it breaks, never a panic.
//!
//! ```
//! use bytes::BytesMut;
//! use uringmq_codec::{encode, Decoder, Packet, Protocol, Publish, PublishHead, QoS};
//!
//! // Server side: the protocol is learnt from CONNECT; packets over 1 MiB are refused.
//! let mut decoder = Decoder::with_protocol(Protocol::V5, 1 << 20);
//! let mut read_buf = BytesMut::from(&[0x30, 0x07, 0x00, 0x01, b't', 0x00, b'h', b'i', b'!'][..]);
//! let Some(Packet::Publish(p)) = decoder.decode(&mut read_buf)? else { unreachable!() };
//! assert_eq!((&*p.topic, &p.payload[..]), ("t", &b"hi!"[..]));
//!
//! // Fan-out: encode the head once per (protocol, QoS), patch the packet id per subscriber.
//! let out_pub = Publish { qos: QoS::AtLeastOnce, ..p };
//! let head = PublishHead::encode(&out_pub, Protocol::V3_1_1)?;
//! let mut write_buf = BytesMut::new();
//! head.write(7, false, &mut write_buf);
//! write_buf.extend_from_slice(&out_pub.payload);
//! assert_eq!(&write_buf[..], &[0x32, 0x08, 0x00, 0x01, b't', 0x00, 0x07, b'h', b'i', b'!']);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

pub mod decode;
pub mod encode;
pub mod error;
pub mod limit;
pub mod packet;
pub mod properties;
mod property_codec;
pub mod publish_head;
mod reader;
pub mod reason;
pub mod string;
#[cfg(test)]
mod testing;
pub mod varint;

pub use decode::Decoder;
pub use encode::{encode, encoded_len};
pub use error::{DecodeError, EncodeError};
pub use limit::{encode_within, encoded_len_within};
pub use packet::*;
pub use properties::*;
pub use publish_head::PublishHead;
pub use reason::ReasonCode;
pub use string::ByteStr;
pub use varint::decode_variable_int;
