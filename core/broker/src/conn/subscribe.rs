//! SUBSCRIBE and UNSUBSCRIBE of a connected client.

use crate::conn::{CloseReason, Conn};
use crate::routing::group_filter;
use crate::shard::{add, Shard};
use std::rc::Rc;
use uringmq_auth::Access;
use uringmq_codec::{Packet, QoS, ReasonCode, SubAck, Subscribe, UnsubAck, Unsubscribe};
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
        let proto = conn.protocol.get();
        let v5 = proto.is_v5();
        let cfg = self.config();
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
            let shared = match SharedFilter::parse(f) {
                Ok(x) => x.is_some(),
                Err(_) => {
                    codes.push(fail(ReasonCode::TOPIC_FILTER_INVALID));
                    continue;
                }
            };
            let plain = if shared { group_filter(f) } else { f };
            // A filter over `max_topic_length` is well formed but not allowed here: 0x8F.
            if validate_topic_filter(plain).is_err()
                || check_max_levels(plain, cfg.max_topic_levels).is_err()
                || f.len() > cfg.max_topic_length
            {
                codes.push(fail(ReasonCode::TOPIC_FILTER_INVALID));
                continue;
            }
            let allowed = match pre.as_ref().map(|v| v.get(i).copied().unwrap_or(false)) {
                Some(a) => a,
                None => {
                    let st = self.st.borrow();
                    st.sessions
                        .get(&key)
                        .is_some_and(|e| self.client_info_allows(conn, e, Access::Subscribe, f))
                }
            };
            if !allowed {
                codes.push(fail(ReasonCode::NOT_AUTHORIZED));
                continue;
            }
            let granted = QoS::from_u8((o.qos as u8).min(cfg.max_qos)).unwrap_or_default();
            let opts = SubOptions {
                qos: granted,
                no_local: o.no_local,
                retain_as_published: o.retain_as_published,
                retain_handling: o.retain_handling,
                id: sub.properties.subscription_identifier,
            };
            let limits = SubLimits {
                count: cfg.max_subscriptions_per_client,
                bytes: cfg.max_subscription_bytes_per_client,
            };
            let inserted = {
                let mut st = self.st.borrow_mut();
                match st.sessions.get_mut(&key) {
                    Some(e) => e.s.subs.insert(f, opts, limits),
                    None => return Ok(()),
                }
            };
            match inserted {
                Err(_) => codes.push(fail(ReasonCode::QUOTA_EXCEEDED)),
                Ok(new) => {
                    if new {
                        add(&self.stats().subscriptions, 1);
                    }
                    self.index_subscription(f, key, opts);
                    codes.push(ReasonCode(granted as u8));
                    use uringmq_codec::RetainHandling::*;
                    // Retained messages are not sent to shared subscriptions [MQTT-3.8.4-?,
                    // §4.8.2]; retain handling 1 only for a new subscription [MQTT-3.3.1-10].
                    let send = match o.retain_handling {
                        SendAtSubscribe => true,
                        SendIfNew => new,
                        DoNotSend => false,
                    };
                    if !shared && send {
                        retained.push((f.to_owned(), opts));
                    }
                }
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
