//! [`Rare`]: the part of a [`crate::Session`] that most sessions never set, in one box made on
//! first use and given back once it is empty again.
//!
//! An idle device's session has no user name, no will, no pending will, no expiry time (it is
//! connected), no topic alias set, no Maximum Packet Size (3.x, and most v5 clients) and no
//! QoS 2 PUBLISH awaiting PUBREL: inline, these cost 80 bytes of every session; boxed, 8
//! (BENCHMARKS.md, idle memory per connection). Most are read on rare paths only (CONNECT,
//! close, timers, a PUBLISH with an alias or QoS 2); the Maximum Packet Size, on each delivery,
//! costs one pointer test when unset.

use crate::qos2::InboundQos2;
use crate::session::Session;
use crate::topic_alias::{AliasError, InboundAliases, OutboundAliases};
use crate::will::PendingWill;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;
use uringmq_codec::{ByteStr, LastWill};

/// What a session rarely has.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rare {
    /// User name of the current (or last) connection.
    pub(crate) username: Option<Arc<str>>,
    /// When an offline session ends.
    pub(crate) expires_at: Option<Instant>,
    /// Will of the current connection (boxed: ~200 bytes, and only it needs them).
    pub(crate) will: Option<Box<LastWill>>,
    /// A will waiting for its delay after the connection closed.
    pub(crate) pending_will: Option<Box<PendingWill>>,
    /// Inbound topic aliases (per connection).
    pub(crate) in_aliases: InboundAliases,
    /// Outbound topic aliases (per connection).
    pub(crate) out_aliases: OutboundAliases,
    /// Inbound QoS 2 awaiting PUBREL (keeps the box once a QoS 2 PUBLISH came).
    pub(crate) qos2_in: InboundQos2,
    /// Will Delay Interval of the current connection, in seconds.
    pub(crate) will_delay: Option<NonZeroU32>,
    /// The client's Maximum Packet Size (per connection; 0 is refused at CONNECT
    /// [MQTT-3.1.2-24]).
    pub(crate) client_max_packet: Option<NonZeroU32>,
}

impl Rare {
    /// Holds nothing: the box can go.
    pub(crate) fn is_empty(&self) -> bool {
        self.username.is_none()
            && self.expires_at.is_none()
            && self.will.is_none()
            && self.pending_will.is_none()
            && self.in_aliases.is_empty()
            && self.out_aliases.is_empty()
            && self.qos2_in.is_unused()
            && self.will_delay.is_none()
            && self.client_max_packet.is_none()
    }
}

/// The fields of [`Rare`], read and set through the session: the box is made when a field is
/// set and given back when the last one is cleared.
impl Session {
    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    fn rare(&self) -> Option<&Rare> {
        self.rare.as_deref()
    }

    /// Whether the session holds its box of rarely-set fields (tests of the box's life).
    #[cfg(test)]
    pub(crate) fn has_rare(&self) -> bool {
        self.rare.is_some()
    }

    /// Gives the box back once it holds nothing.
    fn tidy(&mut self) {
        if self.rare().is_some_and(Rare::is_empty) {
            self.rare = None;
        }
    }

    /// Sets one optional field: in a box made for it when it is `Some`; `None` clears it and
    /// gives the box back if nothing is left in it.
    fn set_rare<T>(&mut self, value: Option<T>, field: fn(&mut Rare) -> &mut Option<T>) {
        match value {
            Some(v) => *field(self.rare_mut()) = Some(v),
            None => {
                if let Some(r) = self.rare.as_deref_mut() {
                    *field(r) = None;
                    self.tidy();
                }
            }
        }
    }

    /// User name of the current (or last) connection.
    pub fn username(&self) -> Option<&str> {
        self.rare()?.username.as_deref()
    }

    /// The user name, shared (the will's author, a session image).
    pub fn username_shared(&self) -> Option<Arc<str>> {
        self.rare()?.username.clone()
    }

    /// Sets the user name of the connection.
    pub fn set_username(&mut self, username: Option<Arc<str>>) {
        self.set_rare(username, |r| &mut r.username);
    }

    /// Will of the current connection.
    pub fn will(&self) -> Option<&LastWill> {
        self.rare()?.will.as_deref()
    }

    /// Sets (or clears) the will of the current connection.
    pub fn set_will(&mut self, will: Option<Box<LastWill>>) {
        self.set_rare(will, |r| &mut r.will);
    }

    /// Takes the will of the current connection out (to publish it, or to drop it).
    pub fn take_will(&mut self) -> Option<Box<LastWill>> {
        let will = self.rare.as_deref_mut()?.will.take();
        self.tidy();
        will
    }

    /// Will Delay Interval of the current connection, in seconds.
    pub fn will_delay(&self) -> u32 {
        self.rare()
            .and_then(|r| r.will_delay)
            .map_or(0, NonZeroU32::get)
    }

    pub(crate) fn set_will_delay(&mut self, secs: u32) {
        self.set_rare(NonZeroU32::new(secs), |r| &mut r.will_delay);
    }

    /// A will waiting for its delay after the connection closed.
    pub fn pending_will(&self) -> Option<&PendingWill> {
        self.rare()?.pending_will.as_deref()
    }

    /// Sets (or cancels) the will waiting for its delay.
    pub fn set_pending_will(&mut self, pending: Option<PendingWill>) {
        self.set_rare(pending.map(Box::new), |r| &mut r.pending_will);
    }

    /// Takes the pending will out (it is due, or the session ends).
    pub fn take_pending_will(&mut self) -> Option<PendingWill> {
        let pending = self.rare.as_deref_mut()?.pending_will.take();
        self.tidy();
        pending.map(|p| *p)
    }

    /// When an offline session ends (None while connected or never).
    pub fn expires_at(&self) -> Option<Instant> {
        self.rare()?.expires_at
    }

    /// Sets (or clears) when the offline session ends.
    pub fn set_expires_at(&mut self, at: Option<Instant>) {
        self.set_rare(at, |r| &mut r.expires_at);
    }

    /// The client's Maximum Packet Size, if it set one.
    pub fn client_max_packet(&self) -> Option<NonZeroU32> {
        self.rare()?.client_max_packet
    }

    pub(crate) fn set_client_max_packet(&mut self, max: Option<NonZeroU32>) {
        self.set_rare(max, |r| &mut r.client_max_packet);
    }

    /// Notes an inbound QoS 2 PUBLISH (see [`InboundQos2::receive`]).
    pub(crate) fn receive_qos2_id(&mut self, id: u16) -> bool {
        self.rare_mut().qos2_in.receive(id)
    }

    /// PUBREL, or a refused QoS 2 PUBLISH (see [`InboundQos2::release`]).
    pub(crate) fn release_qos2_id(&mut self, id: u16) -> bool {
        let rare = self.rare.as_deref_mut();
        rare.is_some_and(|r| r.qos2_in.release(id))
    }

    /// Whether PUBLISH packets to the client may carry topic aliases (it announced a Topic
    /// Alias Maximum).
    pub fn outbound_aliases(&self) -> bool {
        self.out_alias_max > 0
    }

    /// The outbound alias to send `topic` with (see [`OutboundAliases::alias_for`]).
    pub fn outbound_alias(&mut self, topic: &ByteStr) -> Option<(u16, bool)> {
        let max = self.out_alias_max;
        if max == 0 {
            return None;
        }
        self.rare_mut().out_aliases.alias_for(topic, max)
    }

    /// Resolves an inbound PUBLISH's topic and alias, accepting aliases `1..=max` (see
    /// [`InboundAliases::resolve`]).
    pub(crate) fn resolve_alias(
        &mut self,
        topic: ByteStr,
        alias: Option<u16>,
        max: u16,
    ) -> Result<ByteStr, AliasError> {
        if alias.is_none() {
            return Ok(topic);
        }
        let resolved = self.rare_mut().in_aliases.resolve(topic, alias, max);
        if resolved.is_err() {
            self.tidy();
        }
        resolved
    }

    /// The topic an inbound PUBLISH names (see [`InboundAliases::peek`]).
    pub(crate) fn peek_alias(&self, topic: &ByteStr, alias: Option<u16>) -> Option<ByteStr> {
        match self.rare() {
            Some(r) => r.in_aliases.peek(topic, alias),
            None => InboundAliases::default().peek(topic, alias),
        }
    }
}
