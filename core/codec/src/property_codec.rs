//! Wire format of MQTT 5.0 properties (section 2.2.2): decoding with validation of which
//! properties a packet may carry and of their values, and encoding through one field listing per
//! property struct (a visitor), so sizing and writing cannot disagree.

use crate::properties::id::*;
use crate::properties::*;
use crate::reader::Reader;
use crate::varint::{put_variable_int, variable_int_len, VARINT_MAX};
use crate::{ByteStr, DecodeError, EncodeError};
use bytes::{BufMut, Bytes, BytesMut};

/// Bit `n` set: property identifier `n` is defined by MQTT 5.0.
const KNOWN: u64 = {
    let ids = [
        PAYLOAD_FORMAT_INDICATOR,
        MESSAGE_EXPIRY_INTERVAL,
        CONTENT_TYPE,
        RESPONSE_TOPIC,
        CORRELATION_DATA,
        SUBSCRIPTION_IDENTIFIER,
        SESSION_EXPIRY_INTERVAL,
        ASSIGNED_CLIENT_IDENTIFIER,
        SERVER_KEEP_ALIVE,
        AUTHENTICATION_METHOD,
        AUTHENTICATION_DATA,
        REQUEST_PROBLEM_INFORMATION,
        WILL_DELAY_INTERVAL,
        REQUEST_RESPONSE_INFORMATION,
        RESPONSE_INFORMATION,
        SERVER_REFERENCE,
        REASON_STRING,
        RECEIVE_MAXIMUM,
        TOPIC_ALIAS_MAXIMUM,
        TOPIC_ALIAS,
        MAXIMUM_QOS,
        RETAIN_AVAILABLE,
        USER_PROPERTY,
        MAXIMUM_PACKET_SIZE,
        WILDCARD_SUBSCRIPTION_AVAILABLE,
        SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        SHARED_SUBSCRIPTION_AVAILABLE,
    ];
    let mut m = 0u64;
    let mut i = 0;
    while i < ids.len() {
        m |= 1 << ids[i];
        i += 1;
    }
    m
};

/// Receives each present property of a struct, in wire order.
pub(crate) trait PropVisitor {
    fn byte(&mut self, id: u8, v: u8);
    fn u16(&mut self, id: u8, v: u16);
    fn u32(&mut self, id: u8, v: u32);
    fn varint(&mut self, id: u8, v: u32);
    /// UTF-8 string or binary data: the same wire format.
    fn bin(&mut self, id: u8, v: &[u8]);
    fn pair(&mut self, id: u8, k: &[u8], v: &[u8]);
}

/// One properties struct: how to fill it from the wire and how to list it for encoding.
pub(crate) trait PropertySet: Default {
    /// Packet type named in [`DecodeError::PropertyNotAllowed`]; 0 for will properties.
    const PACKET: u8;
    /// Subscription Identifier may appear more than once (PUBLISH only).
    const MULTI_SUB_ID: bool = false;
    /// Reads the value of property `id` (known, not a duplicate) into `self`.
    fn apply(&mut self, id: u8, r: &mut Reader) -> Result<(), DecodeError>;
    /// Calls `v` for every present property.
    fn visit(&self, v: &mut impl PropVisitor);
}

/// Reads a property length and the properties it covers.
pub(crate) fn read_properties<P: PropertySet>(r: &mut Reader) -> Result<P, DecodeError> {
    let len = r.varint()? as usize;
    let mut props = P::default();
    if len == 0 {
        return Ok(props);
    }
    let outer_end = r.limit(len)?;
    let mut seen = 0u64;
    while !r.is_empty() {
        let id = r.varint()?;
        if id >= 64 || KNOWN & (1 << id) == 0 {
            return Err(DecodeError::UnknownProperty(id));
        }
        let id = id as u8;
        if id != USER_PROPERTY && !(P::MULTI_SUB_ID && id == SUBSCRIPTION_IDENTIFIER) {
            if seen & (1 << id) != 0 {
                return Err(DecodeError::DuplicateProperty(id));
            }
            seen |= 1 << id;
        }
        props.apply(id, r)?;
    }
    r.unlimit(outer_end);
    Ok(props)
}

/// Encoded size of a property block without its length prefix; checks field limits.
pub(crate) fn properties_len(p: &impl PropertySet) -> Result<usize, EncodeError> {
    let mut s = Sizer { len: 0, err: None };
    p.visit(&mut s);
    match s.err {
        Some(e) => Err(e),
        None if s.len > VARINT_MAX as usize => Err(EncodeError::PacketTooLarge(s.len)),
        None => Ok(s.len),
    }
}

/// Writes the property length `len` (from [`properties_len`]) and the properties.
pub(crate) fn write_properties(p: &impl PropertySet, len: usize, out: &mut BytesMut) {
    put_variable_int(out, len);
    p.visit(&mut Writer(out));
}

struct Sizer {
    len: usize,
    err: Option<EncodeError>,
}

impl PropVisitor for Sizer {
    fn byte(&mut self, _: u8, _: u8) {
        self.len += 2;
    }
    fn u16(&mut self, _: u8, _: u16) {
        self.len += 3;
    }
    fn u32(&mut self, _: u8, _: u32) {
        self.len += 5;
    }
    fn varint(&mut self, _: u8, v: u32) {
        if v > VARINT_MAX {
            self.err = Some(EncodeError::VarIntTooLarge(v));
        }
        self.len += 1 + variable_int_len(v as usize);
    }
    fn bin(&mut self, _: u8, v: &[u8]) {
        if v.len() > usize::from(u16::MAX) {
            self.err = Some(EncodeError::FieldTooLong(v.len()));
        }
        self.len += 3 + v.len();
    }
    fn pair(&mut self, id: u8, k: &[u8], v: &[u8]) {
        self.bin(id, k);
        self.bin(id, v);
        self.len -= 1;
    }
}

struct Writer<'a>(&'a mut BytesMut);

impl Writer<'_> {
    fn raw_bin(&mut self, v: &[u8]) {
        self.0.put_u16(v.len() as u16);
        self.0.put_slice(v);
    }
}

impl PropVisitor for Writer<'_> {
    fn byte(&mut self, id: u8, v: u8) {
        self.0.put_slice(&[id, v]);
    }
    fn u16(&mut self, id: u8, v: u16) {
        self.0.put_u8(id);
        self.0.put_u16(v);
    }
    fn u32(&mut self, id: u8, v: u32) {
        self.0.put_u8(id);
        self.0.put_u32(v);
    }
    fn varint(&mut self, id: u8, v: u32) {
        self.0.put_u8(id);
        put_variable_int(self.0, v as usize);
    }
    fn bin(&mut self, id: u8, v: &[u8]) {
        self.0.put_u8(id);
        self.raw_bin(v);
    }
    fn pair(&mut self, id: u8, k: &[u8], v: &[u8]) {
        self.0.put_u8(id);
        self.raw_bin(k);
        self.raw_bin(v);
    }
}

// ---- one declaration per properties struct serves decoding and encoding ----

/// Implements [`PropertySet`] for properties structs from one row per field,
/// `field: ID => kind`, listed in the order the encoder writes them. Decoding matches `ID` and
/// reads the value with `kind`; encoding hands the present field to the visitor. So a property is
/// added to a packet with one row, and its two directions cannot drift apart. Kinds:
/// - `user`: the User Property pairs (repeatable);
/// - `subscription_ids` / `subscription_id`: Subscription Identifiers, Variable Byte Integers
///   (a list in PUBLISH, an `Option` in SUBSCRIBE);
/// - otherwise a decoding function below, `fn(id, &mut Reader) -> Result<T, DecodeError>`, for
///   an `Option<T>` field, which is written in the wire form of `T` ([`Put`]).
macro_rules! property_sets {
    (@read user, $f:expr, $id:ident, $r:ident) => { $f.push($r.pair()?) };
    (@read subscription_ids, $f:expr, $id:ident, $r:ident) => {
        $f.push(subscription_id($id, $r)?)
    };
    (@read $kind:ident, $f:expr, $id:ident, $r:ident) => { $f = Some($kind($id, $r)?) };
    (@visit user, $f:expr, $id:ident, $v:ident) => {
        for (k, x) in &$f {
            $v.pair($id, k.as_bytes(), x.as_bytes());
        }
    };
    (@visit subscription_ids, $f:expr, $id:ident, $v:ident) => {
        for &x in &$f {
            $v.varint($id, x);
        }
    };
    (@visit subscription_id, $f:expr, $id:ident, $v:ident) => {
        if let Some(x) = $f {
            $v.varint($id, x);
        }
    };
    (@visit $kind:ident, $f:expr, $id:ident, $v:ident) => {
        if let Some(x) = &$f {
            x.put($id, $v);
        }
    };
    ($(
        $(#[doc = $doc:literal])*
        $ty:ident: packet $packet:literal $(, multi_sub_id $multi:literal)? {
            $($field:ident: $id:ident => $kind:ident,)+
        }
    )+) => {$(
        $(#[doc = $doc])*
        impl PropertySet for $ty {
            const PACKET: u8 = $packet;
            $(const MULTI_SUB_ID: bool = $multi;)?
            fn apply(&mut self, id: u8, r: &mut Reader) -> Result<(), DecodeError> {
                match id {
                    $($id => property_sets!(@read $kind, self.$field, $id, r),)+
                    _ => return Err(not_allowed::<Self>(id)),
                }
                Ok(())
            }
            fn visit(&self, v: &mut impl PropVisitor) {
                $(property_sets!(@visit $kind, self.$field, $id, v);)+
            }
        }
    )+};
}

property_sets! {
    ConnectProperties: packet 1 {
        session_expiry_interval: SESSION_EXPIRY_INTERVAL => four_byte_int,
        receive_maximum: RECEIVE_MAXIMUM => nonzero_u16,
        maximum_packet_size: MAXIMUM_PACKET_SIZE => nonzero_u32,
        topic_alias_maximum: TOPIC_ALIAS_MAXIMUM => two_byte_int,
        request_response_information: REQUEST_RESPONSE_INFORMATION => flag,
        request_problem_information: REQUEST_PROBLEM_INFORMATION => flag,
        user_properties: USER_PROPERTY => user,
        authentication_method: AUTHENTICATION_METHOD => utf8_string,
        authentication_data: AUTHENTICATION_DATA => binary_data,
    }

    /// Will properties are not a packet: 0 in a "not allowed" error.
    WillProperties: packet 0 {
        will_delay_interval: WILL_DELAY_INTERVAL => four_byte_int,
        payload_format_indicator: PAYLOAD_FORMAT_INDICATOR => zero_or_one,
        message_expiry_interval: MESSAGE_EXPIRY_INTERVAL => four_byte_int,
        content_type: CONTENT_TYPE => utf8_string,
        response_topic: RESPONSE_TOPIC => response_topic,
        correlation_data: CORRELATION_DATA => binary_data,
        user_properties: USER_PROPERTY => user,
    }

    ConnAckProperties: packet 2 {
        session_expiry_interval: SESSION_EXPIRY_INTERVAL => four_byte_int,
        receive_maximum: RECEIVE_MAXIMUM => nonzero_u16,
        maximum_qos: MAXIMUM_QOS => zero_or_one,
        retain_available: RETAIN_AVAILABLE => flag,
        maximum_packet_size: MAXIMUM_PACKET_SIZE => nonzero_u32,
        assigned_client_identifier: ASSIGNED_CLIENT_IDENTIFIER => utf8_string,
        topic_alias_maximum: TOPIC_ALIAS_MAXIMUM => two_byte_int,
        reason_string: REASON_STRING => utf8_string,
        user_properties: USER_PROPERTY => user,
        wildcard_subscription_available: WILDCARD_SUBSCRIPTION_AVAILABLE => flag,
        subscription_identifiers_available: SUBSCRIPTION_IDENTIFIER_AVAILABLE => flag,
        shared_subscription_available: SHARED_SUBSCRIPTION_AVAILABLE => flag,
        server_keep_alive: SERVER_KEEP_ALIVE => two_byte_int,
        response_information: RESPONSE_INFORMATION => utf8_string,
        server_reference: SERVER_REFERENCE => utf8_string,
        authentication_method: AUTHENTICATION_METHOD => utf8_string,
        authentication_data: AUTHENTICATION_DATA => binary_data,
    }

    PublishProperties: packet 3, multi_sub_id true {
        payload_format_indicator: PAYLOAD_FORMAT_INDICATOR => zero_or_one,
        message_expiry_interval: MESSAGE_EXPIRY_INTERVAL => four_byte_int,
        topic_alias: TOPIC_ALIAS => topic_alias,
        response_topic: RESPONSE_TOPIC => response_topic,
        correlation_data: CORRELATION_DATA => binary_data,
        user_properties: USER_PROPERTY => user,
        subscription_identifiers: SUBSCRIPTION_IDENTIFIER => subscription_ids,
        content_type: CONTENT_TYPE => utf8_string,
    }

    /// PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK share this set; the packet type in a
    /// "not allowed" error is reported as 4 (PUBACK).
    AckProperties: packet 4 {
        reason_string: REASON_STRING => utf8_string,
        user_properties: USER_PROPERTY => user,
    }

    SubscribeProperties: packet 8 {
        subscription_identifier: SUBSCRIPTION_IDENTIFIER => subscription_id,
        user_properties: USER_PROPERTY => user,
    }

    UnsubscribeProperties: packet 10 {
        user_properties: USER_PROPERTY => user,
    }

    DisconnectProperties: packet 14 {
        session_expiry_interval: SESSION_EXPIRY_INTERVAL => four_byte_int,
        reason_string: REASON_STRING => utf8_string,
        user_properties: USER_PROPERTY => user,
        server_reference: SERVER_REFERENCE => utf8_string,
    }

    AuthProperties: packet 15 {
        authentication_method: AUTHENTICATION_METHOD => utf8_string,
        authentication_data: AUTHENTICATION_DATA => binary_data,
        reason_string: REASON_STRING => utf8_string,
        user_properties: USER_PROPERTY => user,
    }
}

fn not_allowed<P: PropertySet>(id: u8) -> DecodeError {
    DecodeError::PropertyNotAllowed {
        property: id,
        packet_type: P::PACKET,
    }
}

/// How a single-valued property is handed to a [`PropVisitor`]: by its Rust type, which is what
/// the decoding function of its row returns (the Variable Byte Integer Subscription Identifier,
/// also a `u32`, has kinds of its own).
trait Put {
    fn put(&self, id: u8, v: &mut impl PropVisitor);
}

impl Put for u8 {
    fn put(&self, id: u8, v: &mut impl PropVisitor) {
        v.byte(id, *self);
    }
}

impl Put for bool {
    fn put(&self, id: u8, v: &mut impl PropVisitor) {
        v.byte(id, u8::from(*self));
    }
}

impl Put for u16 {
    fn put(&self, id: u8, v: &mut impl PropVisitor) {
        v.u16(id, *self);
    }
}

impl Put for u32 {
    fn put(&self, id: u8, v: &mut impl PropVisitor) {
        v.u32(id, *self);
    }
}

impl Put for ByteStr {
    fn put(&self, id: u8, v: &mut impl PropVisitor) {
        v.bin(id, self.as_bytes());
    }
}

impl Put for Bytes {
    fn put(&self, id: u8, v: &mut impl PropVisitor) {
        v.bin(id, self);
    }
}

// ---- decoding functions (the kinds above): value checks of section 2.2.2.2 and 3.x ----

fn four_byte_int(_: u8, r: &mut Reader) -> Result<u32, DecodeError> {
    r.u32()
}

fn two_byte_int(_: u8, r: &mut Reader) -> Result<u16, DecodeError> {
    r.u16()
}

fn utf8_string(_: u8, r: &mut Reader) -> Result<ByteStr, DecodeError> {
    r.string()
}

fn binary_data(_: u8, r: &mut Reader) -> Result<Bytes, DecodeError> {
    r.binary()
}

/// Response Topic: a topic name, so no wildcards [MQTT-3.3.2-14] (as Mosquitto checks).
fn response_topic(_: u8, r: &mut Reader) -> Result<ByteStr, DecodeError> {
    let t = r.string()?;
    if memchr::memchr2(b'+', b'#', t.as_bytes()).is_some() {
        return Err(DecodeError::WildcardInTopic);
    }
    Ok(t)
}

/// A Byte property that must be 0 or 1 (booleans, Payload Format Indicator, Maximum QoS).
fn zero_or_one(id: u8, r: &mut Reader) -> Result<u8, DecodeError> {
    match r.u8()? {
        v @ (0 | 1) => Ok(v),
        v => Err(DecodeError::InvalidPropertyValue {
            property: id,
            value: v.into(),
        }),
    }
}

fn flag(id: u8, r: &mut Reader) -> Result<bool, DecodeError> {
    Ok(zero_or_one(id, r)? == 1)
}

/// A value for which 0 is a Protocol Error.
fn nonzero<T: Into<u32> + Copy>(id: u8, v: T) -> Result<T, DecodeError> {
    match v.into() {
        0 => Err(DecodeError::InvalidPropertyValue {
            property: id,
            value: 0,
        }),
        _ => Ok(v),
    }
}

/// Receive Maximum: "It is a Protocol Error to include the Receive Maximum value of 0".
fn nonzero_u16(id: u8, r: &mut Reader) -> Result<u16, DecodeError> {
    nonzero(id, r.u16()?)
}

/// Maximum Packet Size: "It is a Protocol Error to include ... the value 0".
fn nonzero_u32(id: u8, r: &mut Reader) -> Result<u32, DecodeError> {
    nonzero(id, r.u32()?)
}

/// Subscription Identifier: 1 to 268,435,455; 0 is a Protocol Error (section 3.3.2.3.8).
fn subscription_id(id: u8, r: &mut Reader) -> Result<u32, DecodeError> {
    nonzero(id, r.varint()?)
}

/// Topic Alias: 0 is not permitted [MQTT-3.3.2-8].
fn topic_alias(_: u8, r: &mut Reader) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::ZeroTopicAlias),
        a => Ok(a),
    }
}
