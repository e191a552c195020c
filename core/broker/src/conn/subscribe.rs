//! SUBSCRIBE and UNSUBSCRIBE of a connected client.

use crate::conn::{CloseReason, Conn};
use crate::routing::group_filter;
use crate::shard::{add, Shard};
use std::rc::Rc;
use uringmq_auth::Access;
use uringmq_codec::{
    Packet, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, SubscriptionOptions, UnsubAck,
    Unsubscribe,
};
use uringmq_session::{SubLimits, SubOptions};
use uringmq_topic::{check_max_levels, validate_topic_filter, SharedFilter};

impl Shard {
    pub(super) fn on_subscribe(
        self: &Rc<Self>,
        conn: &Rc<Conn>,
        key: u64,
        sub: Subscribe,
        pre: Option<Vec<bool>>,
    ) -> Result<(), CloseReason> {
        let v5 = conn.protocol.get().is_v5();
        let fail = |code: ReasonCode| {
            if v5 {
                code
            } else {
                ReasonCode::V3_SUBACK_FAILURE
            }
        };
        let mut codes = Vec::with_capacity(sub.filters.len());
        let mut retained = Vec::new();
        for (i, (filter, o)) in sub.filters.iter().enumerate() {
            let f = filter.as_str();
            let pre = pre.as_ref().map(|v| v.get(i).copied().unwrap_or(false));
            let shared = match self.check_filter(conn, key, f, pre) {
                Ok(shared) => shared,
                Err(code) => {
                    codes.push(fail(code));
                    continue;
                }
            };
            let opts = self.granted(conn, o, sub.properties.subscription_identifier);
            let new = match self.add_subscription(key, f, opts) {
                None => return Ok(()),
                Some(Err(code)) => {
                    codes.push(fail(code));
                    continue;
                }
                Some(Ok(new)) => new,
            };
            codes.push(ReasonCode(opts.qos as u8));
            if wants_retained(shared, o.retain_handling, new) {
                retained.push((f.to_owned(), opts));
            }
        }
        let suback = SubAck {
            packet_id: sub.packet_id,
            properties: Default::default(),
            reason_codes: codes,
        };
        conn.send_packet(&Packet::SubAck(suback));
        for (f, opts) in retained {
            self.send_retained(key, &f, &opts);
        }
        Ok(())
    }

    /// The options a filter is subscribed with: the requested ones, QoS capped at
    /// `max_qos`, and subscription identifier `id`.
    fn granted(&self, conn: &Conn, o: &SubscriptionOptions, id: Option<u32>) -> SubOptions {
        let qos = QoS::from_u8((o.qos as u8).min(self.config().max_qos)).unwrap_or_default();
        // A bridge (CONNECT level | 0x80) on MQTT 3.x gets No Local and Retain As Published
        // on every filter, as Mosquitto's handle_subscribe gives it: its own messages do not
        // loop back, and RETAIN crosses the bridge.
        let bridge = !conn.protocol.get().is_v5() && conn.decoder.get().is_bridge();
        SubOptions {
            qos,
            no_local: o.no_local || bridge,
            retain_as_published: o.retain_as_published || bridge,
            retain_handling: o.retain_handling,
            id,
        }
    }

    /// Whether session `key` may subscribe to `f`: a valid filter within the limits, allowed
    /// by the ACL (`pre`: already decided off the core). Ok(whether it is a shared filter),
    /// or the reason code of the refusal.
    fn check_filter(
        &self,
        conn: &Conn,
        key: u64,
        f: &str,
        pre: Option<bool>,
    ) -> Result<bool, ReasonCode> {
        let cfg = self.config();
        let shared = match SharedFilter::parse(f) {
            Ok(x) => x.is_some(),
            Err(_) => return Err(ReasonCode::TOPIC_FILTER_INVALID),
        };
        let plain = if shared { group_filter(f) } else { f };
        // A filter over `max_topic_length` is well formed but not allowed here: 0x8F.
        if validate_topic_filter(plain).is_err()
            || check_max_levels(plain, cfg.max_topic_levels).is_err()
            || f.len() > cfg.max_topic_length
        {
            return Err(ReasonCode::TOPIC_FILTER_INVALID);
        }
        let allowed = match pre {
            Some(a) => a,
            None => {
                let st = self.st.borrow();
                st.sessions.get(key).is_some_and(|e| {
                    let acl = e.token_acl.as_deref();
                    self.allows(conn, &e.s, acl, Access::Subscribe, f)
                })
            }
        };
        if !allowed {
            return Err(ReasonCode::NOT_AUTHORIZED);
        }
        Ok(shared)
    }

    /// Adds `f` to session `key`'s filters (within the client's limits) and to the indexes.
    /// None: the session is gone; Ok(whether it is new); Err: over a limit.
    fn add_subscription(
        &self,
        key: u64,
        f: &str,
        opts: SubOptions,
    ) -> Option<Result<bool, ReasonCode>> {
        let cfg = self.config();
        let limits = SubLimits {
            count: cfg.max_subscriptions_per_client,
            bytes: cfg.max_subscription_bytes_per_client,
        };
        let inserted = {
            let mut st = self.st.borrow_mut();
            let subs = &mut st.sessions.get_mut(key)?.s.subs;
            // The session's record of the filter lasts as long as the subscription.
            crate::alloc::long_lived(|| subs.insert(f, opts, limits))
        };
        let Ok(new) = inserted else {
            return Some(Err(ReasonCode::QUOTA_EXCEEDED));
        };
        if new {
            add(&self.stats().subscriptions, 1);
        }
        self.index_subscription(f, key, opts);
        Some(Ok(new))
    }

    pub(super) fn on_unsubscribe(
        self: &Rc<Self>,
        conn: &Rc<Conn>,
        key: u64,
        u: Unsubscribe,
    ) -> Result<(), CloseReason> {
        let mut codes = Vec::with_capacity(u.filters.len());
        for f in &u.filters {
            let removed = self.with_session(key, |s| s.subs.remove(f).is_some());
            if removed {
                self.unindex_subscription(f, key);
                self.stats()
                    .subscriptions
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                codes.push(ReasonCode::SUCCESS);
            } else {
                codes.push(ReasonCode::NO_SUBSCRIPTION_EXISTED);
            }
        }
        let unsuback = UnsubAck {
            packet_id: u.packet_id,
            properties: Default::default(),
            reason_codes: codes,
        };
        conn.send_packet(&Packet::UnsubAck(unsuback));
        Ok(())
    }
}

/// Whether a granted subscription gets the retained messages: never a shared one [MQTT-3.8.4-?,
/// §4.8.2]; retain handling 1 only for a new subscription [MQTT-3.3.1-10].
fn wants_retained(shared: bool, handling: RetainHandling, new: bool) -> bool {
    use RetainHandling::*;
    let send = match handling {
        SendAtSubscribe => true,
        SendIfNew => new,
        DoNotSend => false,
    };
    !shared && send
}
