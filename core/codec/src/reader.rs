//! A bounds-checked cursor over one packet's body. Slices it hands out share the packet's
//! [`Bytes`] (a reference-count increment, no copy), so decoded topics and payloads point into
//! the connection's read buffer.

use crate::varint::decode_variable_int;
use crate::{ByteStr, DecodeError};
use bytes::{Buf, Bytes};

pub(crate) struct Reader {
    buf: Bytes,
    pos: usize,
    /// Reads stop here: the end of the packet, or of the property block being read.
    end: usize,
}

impl Reader {
    /// A reader over `buf` starting at `pos` (after the fixed header).
    pub(crate) fn new(buf: Bytes, pos: usize) -> Self {
        let end = buf.len();
        Reader {
            buf,
            pos: pos.min(end),
            end,
        }
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.pos == self.end
    }

    /// Errors unless the whole body has been consumed: packets without an open-ended payload
    /// must end exactly where their last field does.
    #[inline]
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.end);
        let end = end.ok_or(DecodeError::Truncated)?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    #[inline]
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    #[inline]
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    #[inline]
    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        match decode_variable_int(&self.buf[self.pos..self.end])? {
            Some((v, n)) => {
                self.pos += n;
                Ok(v)
            }
            None => Err(DecodeError::Truncated),
        }
    }

    /// `n` bytes as a shared slice.
    #[inline]
    pub(crate) fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let start = self.pos;
        self.take(n)?;
        Ok(self.buf.slice(start..self.pos))
    }

    /// Everything left, consuming the reader: the open-ended payload of PUBLISH. Taking the
    /// packet's `Bytes` instead of slicing it saves a reference-count round trip per packet.
    #[inline]
    pub(crate) fn into_rest(self) -> Bytes {
        let mut b = self.buf;
        b.truncate(self.end);
        b.advance(self.pos);
        b
    }

    /// Everything left, as a borrowed slice (reason code lists).
    #[inline]
    pub(crate) fn rest_slice(&mut self) -> &[u8] {
        let start = self.pos;
        self.pos = self.end;
        &self.buf[start..self.end]
    }

    /// Binary Data: two-byte length, then the bytes.
    #[inline]
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.u16()?;
        self.bytes(n.into())
    }

    /// UTF-8 Encoded String: well-formed [MQTT-1.5.4-1] and without U+0000 [MQTT-1.5.4-2].
    #[inline]
    pub(crate) fn string(&mut self) -> Result<ByteStr, DecodeError> {
        let raw = self.binary()?;
        if memchr::memchr(0, &raw).is_some() {
            return Err(DecodeError::NullCharacter);
        }
        ByteStr::from_utf8(raw).map_err(|_| DecodeError::InvalidUtf8)
    }

    /// UTF-8 String Pair (User Property).
    #[inline]
    pub(crate) fn pair(&mut self) -> Result<(ByteStr, ByteStr), DecodeError> {
        Ok((self.string()?, self.string()?))
    }

    /// Restricts reads to the next `n` bytes (a property block); returns the bound to pass to
    /// [`Reader::unlimit`] once the block is consumed. No slice is taken, so no refcount traffic.
    #[inline]
    pub(crate) fn limit(&mut self, n: usize) -> Result<usize, DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.end);
        let old = std::mem::replace(&mut self.end, end.ok_or(DecodeError::Truncated)?);
        Ok(old)
    }

    /// Lifts a bound set by [`Reader::limit`].
    #[inline]
    pub(crate) fn unlimit(&mut self, old_end: usize) {
        self.end = old_end;
    }
}
