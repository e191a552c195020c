//! Variable Byte Integer (MQTT 5.0 section 1.5.5, 3.1.1 section 2.2.3): the remaining length,
//! property lengths and some property values.

use crate::DecodeError;
use bytes::BufMut;

/// The largest value a Variable Byte Integer can carry (four bytes).
pub const VARINT_MAX: u32 = 268_435_455;

/// Decodes a Variable Byte Integer from the start of `buf`.
///
/// `Ok(None)`: `buf` ends before the integer does. `Ok(Some((value, bytes_used)))` otherwise.
/// Rejects a fifth byte [§1.5.5] and non-minimal encodings such as `80 00` [MQTT-1.5.5-1].
#[inline]
pub fn decode_variable_int(buf: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for i in 0..4 {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            // A zero last byte after a continuation means the same value fits in fewer bytes.
            if i > 0 && b == 0 {
                return Err(DecodeError::VarIntNotMinimal);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    Err(DecodeError::VarIntTooLong)
}

/// Number of bytes `value` takes as a Variable Byte Integer (callers keep it <= [`VARINT_MAX`]).
#[inline]
pub const fn variable_int_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Appends `value` (<= [`VARINT_MAX`]) as a Variable Byte Integer.
#[inline]
pub fn put_variable_int(out: &mut impl BufMut, value: usize) {
    debug_assert!(value <= VARINT_MAX as usize);
    let mut v = value;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.put_u8(byte);
            return;
        }
        out.put_u8(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The boundaries of table 1.5.5 (MQTT 5.0) / 2.4 (3.1.1).
    const TABLE: &[(u32, &[u8])] = &[
        (0, &[0x00]),
        (127, &[0x7f]),
        (128, &[0x80, 0x01]),
        (16_383, &[0xff, 0x7f]),
        (16_384, &[0x80, 0x80, 0x01]),
        (2_097_151, &[0xff, 0xff, 0x7f]),
        (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
        (268_435_455, &[0xff, 0xff, 0xff, 0x7f]),
    ];

    #[test]
    fn spec_table_round_trips() {
        for &(value, wire) in TABLE {
            let mut out = Vec::new();
            put_variable_int(&mut out, value as usize);
            assert_eq!(out, wire, "encoding {value}");
            assert_eq!(variable_int_len(value as usize), wire.len());
            assert_eq!(decode_variable_int(wire), Ok(Some((value, wire.len()))));
            assert_eq!(decode_variable_int(&wire[..wire.len() - 1]), Ok(None));
        }
    }

    #[test]
    fn fifth_byte_is_malformed() {
        assert_eq!(
            decode_variable_int(&[0xff, 0xff, 0xff, 0xff, 0x7f]),
            Err(DecodeError::VarIntTooLong)
        );
    }

    #[test]
    fn non_minimal_is_malformed() {
        assert_eq!(
            decode_variable_int(&[0x80, 0x00]),
            Err(DecodeError::VarIntNotMinimal)
        );
        assert_eq!(
            decode_variable_int(&[0xff, 0x80, 0x00]),
            Err(DecodeError::VarIntNotMinimal)
        );
    }
}
