//! Wire format of MQTT 5.0 properties (section 2.2.2): decoding with validation of which
//! properties a packet may carry and of their values, and encoding through one field listing per
//! property struct (a visitor), so sizing and writing cannot disagree.

use crate::properties::id::*;
use crate::properties::*;
use crate::reader::Reader;
use crate::varint::{put_variable_int, variable_int_len, VARINT_MAX};
use crate::{DecodeError, EncodeError};
use bytes::{BufMut, BytesMut};

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

// ---- decoding helpers: value checks of section 2.2.2.2 and 3.x ----

/// Response Topic: a topic name, so no wildcards [MQTT-3.3.2-14] (as Mosquitto checks).
fn response_topic(r: &mut Reader) -> Result<crate::ByteStr, DecodeError> {
    let t = r.string()?;
    if memchr::memchr2(b'+', b'#', t.as_bytes()).is_some() {
        return Err(DecodeError::WildcardInTopic);
    }
    Ok(t)
}

fn not_allowed<P: PropertySet>(id: u8) -> DecodeError {
    DecodeError::PropertyNotAllowed {
        property: id,
        packet_type: P::PACKET,
    }
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

/// Receive Maximum: "It is a Protocol Error to include the Receive Maximum value of 0".
fn nonzero_u16(id: u8, r: &mut Reader) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::InvalidPropertyValue {
            property: id,
            value: 0,
        }),
        v => Ok(v),
    }
}

/// Maximum Packet Size: "It is a Protocol Error to include ... the value 0".
fn nonzero_u32(id: u8, r: &mut Reader) -> Result<u32, DecodeError> {
    match r.u32()? {
        0 => Err(DecodeError::InvalidPropertyValue {
            property: id,
            value: 0,
        }),
        v => Ok(v),
    }
}

/// Subscription Identifier: 1 to 268,435,455; 0 is a Protocol Error (section 3.3.2.3.8).
fn subscription_id(r: &mut Reader) -> Result<u32, DecodeError> {
    match r.varint()? {
        0 => Err(DecodeError::InvalidPropertyValue {
            property: SUBSCRIPTION_IDENTIFIER,
            value: 0,
        }),
        v => Ok(v),
    }
}

impl PropertySet for ConnectProperties {
    const PACKET: u8 = 1;
    fn apply(&mut self, id: u8, r: &mut Reader) -> Result<(), DecodeError> {
        match id {
            SESSION_EXPIRY_INTERVAL => self.session_expiry_interval = Some(r.u32()?),
            RECEIVE_MAXIMUM => self.receive_maximum = Some(nonzero_u16(id, r)?),
            MAXIMUM_PACKET_SIZE => self.maximum_packet_size = Some(nonzero_u32(id, r)?),
            TOPIC_ALIAS_MAXIMUM => self.topic_alias_maximum = Some(r.u16()?),
            REQUEST_RESPONSE_INFORMATION => self.request_response_information = Some(flag(id, r)?),
            REQUEST_PROBLEM_INFORMATION => self.request_problem_information = Some(flag(id, r)?),
            USER_PROPERTY => self.user_properties.push(r.pair()?),
            AUTHENTICATION_METHOD => self.authentication_method = Some(r.string()?),
            AUTHENTICATION_DATA => self.authentication_data = Some(r.binary()?),
            _ => return Err(not_allowed::<Self>(id)),
        }
        Ok(())
    }
    fn visit(&self, v: &mut impl PropVisitor) {
        if let Some(x) = self.session_expiry_interval {
            v.u32(SESSION_EXPIRY_INTERVAL, x);
        }
        if let Some(x) = self.receive_maximum {
            v.u16(RECEIVE_MAXIMUM, x);
        }
        if let Some(x) = self.maximum_packet_size {
            v.u32(MAXIMUM_PACKET_SIZE, x);
        }
        if let Some(x) = self.topic_alias_maximum {
            v.u16(TOPIC_ALIAS_MAXIMUM, x);
        }
        if let Some(x) = self.request_response_information {
            v.byte(REQUEST_RESPONSE_INFORMATION, x.into());
        }
        if let Some(x) = self.request_problem_information {
            v.byte(REQUEST_PROBLEM_INFORMATION, x.into());
        }
        visit_user(v, &self.user_properties);
        if let Some(x) = &self.authentication_method {
            v.bin(AUTHENTICATION_METHOD, x.as_bytes());
        }
        if let Some(x) = &self.authentication_data {
            v.bin(AUTHENTICATION_DATA, x);
        }
    }
}

fn visit_user(v: &mut impl PropVisitor, user: &UserProperties) {
    for (k, val) in user {
        v.pair(USER_PROPERTY, k.as_bytes(), val.as_bytes());
    }
}

impl PropertySet for WillProperties {
    const PACKET: u8 = 0;
    fn apply(&mut self, id: u8, r: &mut Reader) -> Result<(), DecodeError> {
        match id {
            WILL_DELAY_INTERVAL => self.will_delay_interval = Some(r.u32()?),
            PAYLOAD_FORMAT_INDICATOR => self.payload_format_indicator = Some(zero_or_one(id, r)?),
            MESSAGE_EXPIRY_INTERVAL => self.message_expiry_interval = Some(r.u32()?),
            CONTENT_TYPE => self.content_type = Some(r.string()?),
            RESPONSE_TOPIC => self.response_topic = Some(response_topic(r)?),
            CORRELATION_DATA => self.correlation_data = Some(r.binary()?),
            USER_PROPERTY => self.user_properties.push(r.pair()?),
            _ => return Err(not_allowed::<Self>(id)),
        }
        Ok(())
    }
    fn visit(&self, v: &mut impl PropVisitor) {
        if let Some(x) = self.will_delay_interval {
            v.u32(WILL_DELAY_INTERVAL, x);
        }
        if let Some(x) = self.payload_format_indicator {
            v.byte(PAYLOAD_FORMAT_INDICATOR, x);
        }
        if let Some(x) = self.message_expiry_interval {
            v.u32(MESSAGE_EXPIRY_INTERVAL, x);
        }
        if let Some(x) = &self.content_type {
            v.bin(CONTENT_TYPE, x.as_bytes());
        }
        if let Some(x) = &self.response_topic {
            v.bin(RESPONSE_TOPIC, x.as_bytes());
        }
        if let Some(x) = &self.correlation_data {
            v.bin(CORRELATION_DATA, x);
        }
        visit_user(v, &self.user_properties);
    }
}

impl PropertySet for ConnAckProperties {
    const PACKET: u8 = 2;
    fn apply(&mut self, id: u8, r: &mut Reader) -> Result<(), DecodeError> {
        match id {
            SESSION_EXPIRY_INTERVAL => self.session_expiry_interval = Some(r.u32()?),
            RECEIVE_MAXIMUM => self.receive_maximum = Some(nonzero_u16(id, r)?),
            MAXIMUM_QOS => self.maximum_qos = Some(zero_or_one(id, r)?),
            RETAIN_AVAILABLE => self.retain_available = Some(flag(id, r)?),
            MAXIMUM_PACKET_SIZE => self.maximum_packet_size = Some(nonzero_u32(id, r)?),
            ASSIGNED_CLIENT_IDENTIFIER => self.assigned_client_identifier = Some(r.string()?),
            TOPIC_ALIAS_MAXIMUM => self.topic_alias_maximum = Some(r.u16()?),
            REASON_STRING => self.reason_string = Some(r.string()?),
            USER_PROPERTY => self.user_properties.push(r.pair()?),
            WILDCARD_SUBSCRIPTION_AVAILABLE => {
                self.wildcard_subscription_available = Some(flag(id, r)?)
            }
            SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                self.subscription_identifiers_available = Some(flag(id, r)?)
            }
            SHARED_SUBSCRIPTION_AVAILABLE => {
                self.shared_subscription_available = Some(flag(id, r)?)
            }
            SERVER_KEEP_ALIVE => self.server_keep_alive = Some(r.u16()?),
            RESPONSE_INFORMATION => self.response_information = Some(r.string()?),
            SERVER_REFERENCE => self.server_reference = Some(r.string()?),
            AUTHENTICATION_METHOD => self.authentication_method = Some(r.string()?),
            AUTHENTICATION_DATA => self.authentication_data = Some(r.binary()?),
            _ => return Err(not_allowed::<Self>(id)),
        }
        Ok(())
    }
    fn visit(&self, v: &mut impl PropVisitor) {
        if let Some(x) = self.session_expiry_interval {
            v.u32(SESSION_EXPIRY_INTERVAL, x);
        }
        if let Some(x) = self.receive_maximum {
            v.u16(RECEIVE_MAXIMUM, x);
        }
        if let Some(x) = self.maximum_qos {
            v.byte(MAXIMUM_QOS, x);
        }
        if let Some(x) = self.retain_available {
            v.byte(RETAIN_AVAILABLE, x.into());
        }
        if let Some(x) = self.maximum_packet_size {
            v.u32(MAXIMUM_PACKET_SIZE, x);
        }
        if let Some(x) = &self.assigned_client_identifier {
            v.bin(ASSIGNED_CLIENT_IDENTIFIER, x.as_bytes());
        }
        if let Some(x) = self.topic_alias_maximum {
            v.u16(TOPIC_ALIAS_MAXIMUM, x);
        }
        if let Some(x) = &self.reason_string {
            v.bin(REASON_STRING, x.as_bytes());
        }
        visit_user(v, &self.user_properties);
        if let Some(x) = self.wildcard_subscription_available {
            v.byte(WILDCARD_SUBSCRIPTION_AVAILABLE, x.into());
        }
        if let Some(x) = self.subscription_identifiers_available {
            v.byte(SUBSCRIPTION_IDENTIFIER_AVAILABLE, x.into());
        }
        if let Some(x) = self.shared_subscription_available {
            v.byte(SHARED_SUBSCRIPTION_AVAILABLE, x.into());
        }
        if let Some(x) = self.server_keep_alive {
            v.u16(SERVER_KEEP_ALIVE, x);
        }
        if let Some(x) = &self.response_information {
            v.bin(RESPONSE_INFORMATION, x.as_bytes());
        }
        if let Some(x) = &self.server_reference {
            v.bin(SERVER_REFERENCE, x.as_bytes());
        }
        if let Some(x) = &self.authentication_method {
            v.bin(AUTHENTICATION_METHOD, x.as_bytes());
        }
        if let Some(x) = &self.authentication_data {
            v.bin(AUTHENTICATION_DATA, x);
        }
    }
}

impl PropertySet for PublishProperties {
    const PACKET: u8 = 3;
    const MULTI_SUB_ID: bool = true;
    fn apply(&mut self, id: u8, r: &mut Reader) -> Result<(), DecodeError> {
        match id {
            PAYLOAD_FORMAT_INDICATOR => self.payload_format_indicator = Some(zero_or_one(id, r)?),
            MESSAGE_EXPIRY_INTERVAL => self.message_expiry_interval = Some(r.u32()?),
            TOPIC_ALIAS => match r.u16()? {
                0 => return Err(DecodeError::ZeroTopicAlias),
                a => self.topic_alias = Some(a),
            },
            RESPONSE_TOPIC => self.response_topic = Some(response_topic(r)?),
            CORRELATION_DATA => self.correlation_data = Some(r.binary()?),
            USER_PROPERTY => self.user_properties.push(r.pair()?),
            SUBSCRIPTION_IDENTIFIER => self.subscription_identifiers.push(subscription_id(r)?),
            CONTENT_TYPE => self.content_type = Some(r.string()?),
            _ => return Err(not_allowed::<Self>(id)),
        }
        Ok(())
    }
    fn visit(&self, v: &mut impl PropVisitor) {
        if let Some(x) = self.payload_format_indicator {
            v.byte(PAYLOAD_FORMAT_INDICATOR, x);
        }
        if let Some(x) = self.message_expiry_interval {
            v.u32(MESSAGE_EXPIRY_INTERVAL, x);
        }
        if let Some(x) = self.topic_alias {
            v.u16(TOPIC_ALIAS, x);
        }
        if let Some(x) = &self.response_topic {
            v.bin(RESPONSE_TOPIC, x.as_bytes());
        }
        if let Some(x) = &self.correlation_data {
            v.bin(CORRELATION_DATA, x);
        }
        visit_user(v, &self.user_properties);
        for &x in &self.subscription_identifiers {
            v.varint(SUBSCRIPTION_IDENTIFIER, x);
        }
        if let Some(x) = &self.content_type {
            v.bin(CONTENT_TYPE, x.as_bytes());
        }
    }
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK share this set; the packet type in a
/// "not allowed" error is reported as 4 (PUBACK).
impl PropertySet for AckProperties {
    const PACKET: u8 = 4;
    fn apply(&mut self, id: u8, r: &mut Reader) -> Result<(), DecodeError> {
        match id {
            REASON_STRING => self.reason_string = Some(r.string()?),
            USER_PROPERTY => self.user_properties.push(r.pair()?),
            _ => return Err(not_allowed::<Self>(id)),
        }
        Ok(())
    }
    fn visit(&self, v: &mut impl PropVisitor) {
        if let Some(x) = &self.reason_string {
            v.bin(REASON_STRING, x.as_bytes());
        }
        visit_user(v, &self.user_properties);
    }
}

impl PropertySet for SubscribeProperties {
    const PACKET: u8 = 8;
    fn apply(&mut self, id: u8, r: &mut Reader) -> Result<(), DecodeError> {
        match id {
            SUBSCRIPTION_IDENTIFIER => self.subscription_identifier = Some(subscription_id(r)?),
            USER_PROPERTY => self.user_properties.push(r.pair()?),
            _ => return Err(not_allowed::<Self>(id)),
        }
        Ok(())
    }
    fn visit(&self, v: &mut impl PropVisitor) {
        if let Some(x) = self.subscription_identifier {
            v.varint(SUBSCRIPTION_IDENTIFIER, x);
        }
        visit_user(v, &self.user_properties);
    }
}

impl PropertySet for UnsubscribeProperties {
    const PACKET: u8 = 10;
    fn apply(&mut self, id: u8, r: &mut Reader) -> Result<(), DecodeError> {
        match id {
            USER_PROPERTY => self.user_properties.push(r.pair()?),
            _ => return Err(not_allowed::<Self>(id)),
        }
        Ok(())
    }
    fn visit(&self, v: &mut impl PropVisitor) {
        visit_user(v, &self.user_properties);
    }
}

impl PropertySet for DisconnectProperties {
    const PACKET: u8 = 14;
    fn apply(&mut self, id: u8, r: &mut Reader) -> Result<(), DecodeError> {
        match id {
            SESSION_EXPIRY_INTERVAL => self.session_expiry_interval = Some(r.u32()?),
            REASON_STRING => self.reason_string = Some(r.string()?),
            USER_PROPERTY => self.user_properties.push(r.pair()?),
            SERVER_REFERENCE => self.server_reference = Some(r.string()?),
            _ => return Err(not_allowed::<Self>(id)),
        }
        Ok(())
    }
    fn visit(&self, v: &mut impl PropVisitor) {
        if let Some(x) = self.session_expiry_interval {
            v.u32(SESSION_EXPIRY_INTERVAL, x);
        }
        if let Some(x) = &self.reason_string {
            v.bin(REASON_STRING, x.as_bytes());
        }
        visit_user(v, &self.user_properties);
        if let Some(x) = &self.server_reference {
            v.bin(SERVER_REFERENCE, x.as_bytes());
        }
    }
}

impl PropertySet for AuthProperties {
    const PACKET: u8 = 15;
    fn apply(&mut self, id: u8, r: &mut Reader) -> Result<(), DecodeError> {
        match id {
            AUTHENTICATION_METHOD => self.authentication_method = Some(r.string()?),
            AUTHENTICATION_DATA => self.authentication_data = Some(r.binary()?),
            REASON_STRING => self.reason_string = Some(r.string()?),
            USER_PROPERTY => self.user_properties.push(r.pair()?),
            _ => return Err(not_allowed::<Self>(id)),
        }
        Ok(())
    }
    fn visit(&self, v: &mut impl PropVisitor) {
        if let Some(x) = &self.authentication_method {
            v.bin(AUTHENTICATION_METHOD, x.as_bytes());
        }
        if let Some(x) = &self.authentication_data {
            v.bin(AUTHENTICATION_DATA, x);
        }
        if let Some(x) = &self.reason_string {
            v.bin(REASON_STRING, x.as_bytes());
        }
        visit_user(v, &self.user_properties);
    }
}
