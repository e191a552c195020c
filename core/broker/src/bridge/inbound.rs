//! What arrives from the remote: authorised like a client's PUBLISH (as the bridge's client
//! id through the listener `default`; a blocking hook is asked on a hook thread, and no
//! answer denies), remapped to the local topic and published here with the bridge's session
//! as origin, so that session's No Local keeps it from going back out.

use super::link::BridgeStats;
use super::remote::{ack_code, Live, Outbox};
use super::Bridge;
use crate::shard::{add, Shard};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;
use tracing::warn;
use uringmq_auth::{Access, ClientInfo};
use uringmq_codec::{Ack, Packet, Publish, QoS};
use uringmq_session::{Message, Origin};

/// Handles one inbound PUBLISH: publishes it here (once, for QoS 2) and acknowledges it.
pub(crate) async fn publish(
    shard: &Rc<Shard>,
    b: &Bridge,
    live: &Live,
    outbox: &RefCell<Outbox>,
    p: Publish,
) {
    let (pid, qos) = (p.packet_id, p.qos);
    let duplicate = qos == QoS::ExactlyOnce && outbox.borrow().qos2_in.contains(&pid);
    let ok = duplicate || forward(shard, b, live, p).await;
    let mut ack = Ack::new(pid);
    ack.reason_code = ack_code(live, ok);
    match qos {
        QoS::AtMostOnce => {}
        QoS::AtLeastOnce => live.send(&b.link, &Packet::PubAck(ack)),
        QoS::ExactlyOnce => {
            if ok && outbox.borrow_mut().qos2_in.insert(pid) {
                if let Some(s) = &b.link.stored {
                    s.qos2_received(shard, pid);
                }
            }
            live.send(&b.link, &Packet::PubRec(ack));
        }
    }
}

/// Publishes `p` here if an `in` entry carries it and the ACL allows; false when denied.
async fn forward(shard: &Rc<Shard>, b: &Bridge, live: &Live, p: Publish) -> bool {
    let Some((_, topic)) = b.cfg.local_topic(&p.topic) else {
        // Not ours (a remote that ignores our filters): acknowledged, not published.
        return true;
    };
    if !authorised(shard, b, &topic).await {
        BridgeStats::bump(&b.link.stats.dropped);
        if live.denied.replace(live.denied.get() + 1) == 0 {
            warn!(bridge = %b.cfg.name, topic, "bridge: inbound message denied by the ACL (logged once per connection)");
        }
        return false;
    }
    let mut properties = p.properties;
    properties.topic_alias = None;
    properties.subscription_identifiers.clear();
    let msg = Arc::new(Message {
        topic: topic.into(),
        payload: p.payload,
        qos: p.qos,
        retain: p.retain,
        properties,
        origin: Some(Origin {
            core: shard.id,
            session: b.key,
        }),
        received_at: Instant::now(),
    });
    add(&shard.stats().messages_in, 1);
    add(&shard.stats().publish_bytes_in, msg.payload.len() as u64);
    BridgeStats::bump(&b.link.stats.received);
    shard.accept(&msg);
    true
}

/// The authoriser chain's answer for the bridge publishing `topic` here. `$SYS/` is the
/// broker's own [§4.7.2] (but for bridge states, see `Message::is_reserved_for_broker`).
async fn authorised(shard: &Rc<Shard>, b: &Bridge, topic: &str) -> bool {
    if Message::is_reserved_for_broker(topic) {
        return false;
    }
    let Some(a) = shard.shared.authorizer.clone() else {
        return true;
    };
    let client_id = b.cfg.client_id().to_owned();
    if !a.is_blocking() {
        let who = ClientInfo::new(&client_id, None, crate::api::IN_PROCESS_LISTENER);
        return a.authorize(&who, Access::Publish, topic);
    }
    let topic = topic.to_owned();
    let job = move || {
        let who = ClientInfo::new(&client_id, None, crate::api::IN_PROCESS_LISTENER);
        a.authorize(&who, Access::Publish, &topic)
    };
    match shard.shared.hooks.run(job) {
        Ok(wait) => wait.answer(|| shard.stopping.get()).await.unwrap_or(false),
        Err(_) => false,
    }
}
