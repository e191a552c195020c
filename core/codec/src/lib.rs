//! MQTT 3.1, 3.1.1 and 5.0 packet codec.
//!
//! Pure code: no I/O, no runtime. Decoding is incremental and zero-copy (topics and payloads are
//! slices of the read buffer); every malformed input is a typed [`DecodeError`] naming the rule of
//! the specification it breaks, never a panic.
#![warn(missing_docs)]

pub mod decode;
pub mod encode;
pub mod error;
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
pub use packet::*;
pub use properties::*;
pub use publish_head::PublishHead;
pub use reason::ReasonCode;
pub use string::ByteStr;
pub use varint::decode_variable_int;
