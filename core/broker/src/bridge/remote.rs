//! One connection to the remote broker: CONNECT (MQTT 3.1.1 with Mosquitto's bridge bit, or
//! 5), SUBSCRIBE for the `in` topics, then a reader (inbound PUBLISH published here, acks of
//! what we sent) and a writer (the link's queue, acks, PINGREQ) until either fails.
//!
//! QoS 1/2 messages stay in [`Outbox`] (which outlives connections) until the remote
//! acknowledges them: resent with DUP when the remote kept our session, sent again as new
//! messages when it did not.

use super::link::{BridgeStats, Link, Outgoing};
use super::wire::{WireRd, WireWr};
use super::{inbound, Bridge};
use crate::shard::Shard;
use crate::store::MsgState;
use bytes::BytesMut;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tracing::{debug, warn};
use uringmq_codec::{
    encode, Ack, ByteStr, Connect, ConnectProperties, Decoder, Packet, Protocol, Publish, QoS,
    ReasonCode, Subscribe, SubscriptionOptions,
};

/// How long CONNECT may wait for CONNACK (and the TLS handshake for its end).
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest packet accepted from the remote.
const MAX_PACKET: u32 = 268_435_455;

/// One message in flight to the remote.
pub(crate) struct InFlight {
    pub(crate) out: Outgoing,
    /// PUBREC received, PUBREL sent: only PUBCOMP is awaited.
    pub(crate) released: bool,
}

/// What the bridge keeps across connections (its side of the session on the remote):
/// messages in flight by packet id, and inbound QoS 2 ids received and not yet released.
#[derive(Default)]
pub(crate) struct Outbox {
    pub(crate) inflight: BTreeMap<u16, InFlight>,
    next_id: u16,
    /// Session state of the client [MQTT-4.1.0-1]: kept while the remote keeps the session,
    /// so a PUBLISH the remote sends again with DUP after it restarted (our PUBREC lost with
    /// it) is acknowledged, not published here twice.
    pub(crate) qos2_in: HashSet<u16>,
}

impl Outbox {
    fn next_id(&mut self) -> u16 {
        loop {
            self.next_id = self.next_id.wrapping_add(1).max(1);
            if !self.inflight.contains_key(&self.next_id) {
                return self.next_id;
            }
        }
    }
}

/// The state of one live connection shared by its reader and writer.
pub(crate) struct Live {
    pub(crate) protocol: Protocol,
    /// Control packets for the writer (acks, PUBREL, SUBSCRIBE).
    pub(crate) control: RefCell<BytesMut>,
    /// In-flight bound: ours, lowered by the remote's Receive Maximum.
    window: usize,
    /// The remote's Maximum Packet Size (v5).
    max_packet: u32,
    /// The remote's Maximum QoS (v5).
    max_qos: QoS,
    keepalive: Duration,
    /// Inbound messages denied here since the connection opened (logged once).
    pub(crate) denied: Cell<u64>,
}

impl Live {
    /// Queues a control packet and wakes the writer.
    pub(crate) fn send(&self, link: &Link, p: &Packet) {
        if encode(p, self.protocol, &mut self.control.borrow_mut()).is_ok() {
            link.ready.notify();
        }
    }
}

/// Encodes CONNECT; for MQTT 3.1.1 with `try_private`, sets bit 7 of the protocol level
/// (`0x84`), Mosquitto's bridge marker.
pub(crate) fn connect_packet(b: &Bridge) -> BytesMut {
    let cfg = &b.cfg;
    let protocol = protocol(cfg);
    let connect = Connect {
        protocol,
        clean_start: cfg.clean_start,
        keep_alive: cfg.keepalive_secs,
        client_id: ByteStr::from(cfg.client_id()),
        will: None,
        username: cfg.username.as_deref().map(ByteStr::from),
        password: cfg.password.clone().map(bytes::Bytes::from),
        properties: ConnectProperties {
            // The session outlives connections like a Mosquitto bridge's: keep it a day.
            session_expiry_interval: (!cfg.clean_start).then_some(86_400),
            receive_maximum: Some(u16::MAX),
            ..Default::default()
        },
    };
    let mut buf = BytesMut::new();
    // A CONNECT built from validated settings always encodes.
    let _ = encode(&Packet::Connect(Box::new(connect)), protocol, &mut buf);
    if protocol == Protocol::V3_1_1 && cfg.try_private {
        // Fixed header byte, remaining length (1..4 bytes), "MQTT" with its length, level.
        let len_bytes = buf[1..].iter().take_while(|b| **b & 0x80 != 0).count() + 1;
        buf[1 + len_bytes + 6] |= 0x80;
    }
    buf
}

pub(crate) fn protocol(cfg: &super::BridgeConfig) -> Protocol {
    if cfg.is_v5() {
        Protocol::V5
    } else {
        Protocol::V3_1_1
    }
}

/// Waits for CONNACK; returns the live state and whether the remote kept our session.
pub(crate) async fn await_connack(
    b: &Bridge,
    rd: &mut WireRd,
    buf: &mut BytesMut,
    decoder: &mut Decoder,
) -> Result<(Live, bool), String> {
    let ack = loop {
        if let Some(p) = decoder.decode(buf).map_err(|e| e.to_string())? {
            match p {
                Packet::ConnAck(a) => break a,
                p => return Err(format!("expected CONNACK, got packet {}", p.packet_type())),
            }
        }
        rd.read(buf).await.map_err(|e| e.to_string())?;
    };
    if ack.reason_code.is_error() {
        return Err(format!("refused: {:?}", ack.reason_code));
    }
    let cfg = &b.cfg;
    let props = &ack.properties;
    let window = props
        .receive_maximum
        .map_or(cfg.max_inflight, |r| r.min(cfg.max_inflight));
    let keepalive = props.server_keep_alive.unwrap_or(cfg.keepalive_secs);
    let live = Live {
        protocol: protocol(cfg),
        control: RefCell::new(BytesMut::new()),
        window: usize::from(window),
        max_packet: props.maximum_packet_size.unwrap_or(MAX_PACKET),
        max_qos: props
            .maximum_qos
            .and_then(QoS::from_u8)
            .unwrap_or(QoS::ExactlyOnce),
        keepalive: Duration::from_secs(u64::from(keepalive)),
        denied: Cell::new(0),
    };
    Ok((live, ack.session_present))
}

/// After CONNACK: resend what is in flight (DUP, or PUBREL) when the remote kept the
/// session, else put it back in the queue; then SUBSCRIBE to the `in` topics. Returns
/// whether it subscribed (the bridge counts as connected once SUBACK came).
pub(crate) fn resume(b: &Bridge, live: &Live, outbox: &mut Outbox, session_present: bool) -> bool {
    if !session_present {
        for pid in std::mem::take(&mut outbox.qos2_in) {
            if let Some(s) = &b.link.stored {
                s.qos2_released(pid);
            }
        }
        let items = std::mem::take(&mut outbox.inflight);
        b.link
            .requeue_front(items.into_values().map(|f| f.out).collect());
    } else {
        let mut buf = live.control.borrow_mut();
        for (&pid, f) in &outbox.inflight {
            if f.released {
                let _ = encode(&Packet::PubRel(Ack::new(pid)), live.protocol, &mut buf);
            } else {
                encode_publish(b, live, &f.out, pid, true, &mut buf);
            }
        }
    }
    let filters: Vec<_> = b
        .cfg
        .topics
        .iter()
        .filter(|t| t.direction.is_in())
        .map(|t| {
            let opts = SubscriptionOptions {
                qos: t.qos(),
                // MQTT 5: what we publish there does not come back [MQTT-3.8.3-3], and
                // RETAIN stays as published [MQTT-3.3.1-12].
                no_local: true,
                retain_as_published: true,
                ..Default::default()
            };
            (ByteStr::from(t.remote_filter()), opts)
        })
        .collect();
    if !filters.is_empty() {
        let sub = Subscribe {
            // An id no message in flight uses; SUBACK frees it at once.
            packet_id: outbox.next_id(),
            properties: Default::default(),
            filters,
        };
        live.send(&b.link, &Packet::Subscribe(sub));
        return true;
    }
    false
}

/// Encodes one outgoing message with packet id `pid` (0 for QoS 0).
fn encode_publish(b: &Bridge, live: &Live, o: &Outgoing, pid: u16, dup: bool, out: &mut BytesMut) {
    let Some((_, topic)) = b.cfg.remote_topic(&o.msg.topic) else {
        return;
    };
    let mut properties = if live.protocol.is_v5() {
        o.msg.properties.clone()
    } else {
        Default::default()
    };
    properties.topic_alias = None;
    properties.subscription_identifiers.clear();
    if let Ok(left) = o.msg.remaining_expiry(Instant::now()) {
        properties.message_expiry_interval = left.filter(|_| live.protocol.is_v5());
    }
    let p = Publish {
        dup,
        qos: o.qos,
        retain: o.retain,
        topic: ByteStr::from(topic),
        packet_id: pid,
        properties,
        payload: o.msg.payload.clone(),
    };
    let _ = encode(&Packet::Publish(p), live.protocol, out);
}

/// The writer: control packets first, then queued messages while the window has room;
/// PINGREQ when nothing was written for the keep-alive.
pub(crate) async fn writer(
    shard: &Rc<Shard>,
    b: &Bridge,
    live: &Live,
    outbox: &RefCell<Outbox>,
    wr: &mut WireWr,
) -> Result<(), String> {
    let mut last_write = Instant::now();
    loop {
        let mut buf = std::mem::take(&mut *live.control.borrow_mut());
        fill(b, live, &mut outbox.borrow_mut(), &mut buf);
        if buf.is_empty() && live.keepalive > Duration::ZERO {
            let idle = live.keepalive.saturating_sub(last_write.elapsed());
            if idle.is_zero() {
                let _ = encode(&Packet::PingReq, live.protocol, &mut buf);
            } else {
                let _ = monoio::time::timeout(idle, b.link.ready.wait()).await;
                continue;
            }
        } else if buf.is_empty() {
            b.link.ready.wait().await;
            continue;
        }
        // As a connection's writer: what this makes observable goes to the other cores
        // first, and under `persistence_sync = "always"` what it depends on is durable.
        shard.flush_mesh();
        if let Some(p) = &shard.persist {
            p.barrier().await.map_err(|e| e.to_string())?;
        }
        wr.write(buf).await.map_err(|e| e.to_string())?;
        last_write = Instant::now();
    }
}

/// Moves queued messages into `buf` while the window has room.
fn fill(b: &Bridge, live: &Live, outbox: &mut Outbox, buf: &mut BytesMut) {
    while outbox.inflight.len() < live.window {
        let Some(mut o) = b.link.pop() else { break };
        o.qos = o.qos.min(live.max_qos);
        if o.msg.cost() + 64 > live.max_packet as usize {
            BridgeStats::bump(&b.link.stats.dropped);
            b.link.done(o.id);
            continue;
        }
        if o.qos == QoS::AtMostOnce {
            encode_publish(b, live, &o, 0, false, buf);
            BridgeStats::bump(&b.link.stats.sent);
            b.link.done(o.id);
            continue;
        }
        let pid = outbox.next_id();
        encode_publish(b, live, &o, pid, false, buf);
        if let Some(s) = &b.link.stored {
            s.state(o.id, pid, MsgState::Sent);
        }
        outbox.inflight.insert(
            pid,
            InFlight {
                out: o,
                released: false,
            },
        );
    }
    b.link.inflight.set(outbox.inflight.len());
    b.link.update_gauge();
}

/// The reader: every packet from the remote, until the connection fails. Nothing for 1.5
/// times the keep-alive ends it (the writer pings every keep-alive).
pub(crate) async fn reader(
    shard: &Rc<Shard>,
    b: &Bridge,
    live: &Live,
    outbox: &RefCell<Outbox>,
    rd: &mut WireRd,
    mut buf: BytesMut,
    mut decoder: Decoder,
) -> Result<(), String> {
    let limit = live.keepalive + live.keepalive / 2;
    loop {
        while let Some(p) = decoder.decode(&mut buf).map_err(|e| e.to_string())? {
            handle(shard, b, live, outbox, p).await?;
        }
        // A read lost to the timeout does not matter: the connection is closed then.
        let read = rd.read(&mut buf);
        let tls_out = if limit.is_zero() {
            read.await
        } else {
            monoio::time::timeout(limit, read)
                .await
                .map_err(|_| "no answer from the remote within 1.5 keep-alives".to_string())?
        }
        .map_err(|e| e.to_string())?;
        if tls_out {
            b.link.ready.notify();
        }
    }
}

async fn handle(
    shard: &Rc<Shard>,
    b: &Bridge,
    live: &Live,
    outbox: &RefCell<Outbox>,
    p: Packet,
) -> Result<(), String> {
    match p {
        Packet::Publish(p) => inbound::publish(shard, b, live, outbox, p).await,
        Packet::PubRel(a) => {
            if outbox.borrow_mut().qos2_in.remove(&a.packet_id) {
                if let Some(s) = &b.link.stored {
                    s.qos2_released(a.packet_id);
                }
            }
            live.send(&b.link, &Packet::PubComp(Ack::new(a.packet_id)));
        }
        Packet::PubAck(a) | Packet::PubComp(a) => acked(b, &mut outbox.borrow_mut(), a.packet_id),
        Packet::PubRec(a) => {
            let mut o = outbox.borrow_mut();
            if a.reason_code.is_error() {
                acked(b, &mut o, a.packet_id);
            } else if let Some(f) = o.inflight.get_mut(&a.packet_id) {
                f.released = true;
                if let Some(s) = &b.link.stored {
                    s.state(f.out.id, a.packet_id, MsgState::Released);
                }
                live.send(&b.link, &Packet::PubRel(Ack::new(a.packet_id)));
            }
        }
        Packet::SubAck(s) => {
            if s.reason_codes.iter().any(|c| c.is_error()) {
                warn!(bridge = %b.cfg.name, codes = ?s.reason_codes, "bridge: the remote refused a subscription");
            }
            b.link.stats.connected.store(1, Ordering::Relaxed);
        }
        Packet::PingResp | Packet::UnsubAck(_) => {}
        Packet::Disconnect(d) => return Err(format!("DISCONNECT {:?}", d.reason_code)),
        p => return Err(format!("unexpected packet type {}", p.packet_type())),
    }
    Ok(())
}

/// The remote acknowledged `pid`: the message is delivered; room in the window.
fn acked(b: &Bridge, outbox: &mut Outbox, pid: u16) {
    if let Some(f) = outbox.inflight.remove(&pid) {
        b.link.done(f.out.id);
        BridgeStats::bump(&b.link.stats.sent);
        b.link.inflight.set(outbox.inflight.len());
        b.link.update_gauge();
        b.link.ready.notify();
    } else {
        debug!(bridge = %b.cfg.name, pid, "bridge: ack for an unknown packet id");
    }
}

/// `ReasonCode` as an ack's for an inbound message we did not publish.
pub(crate) fn ack_code(live: &Live, ok: bool) -> ReasonCode {
    if ok || !live.protocol.is_v5() {
        ReasonCode::SUCCESS
    } else {
        ReasonCode::NOT_AUTHORIZED
    }
}
