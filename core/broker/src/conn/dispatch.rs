//! Decoding what was read and handing each packet to its handler, synchronously where it can
//! be, boxed where it waits (CONNECT, AUTH, rate limits).

use super::connect::{on_connect, pre_authorize, refuse};
use super::Conn;
use crate::conn::CloseReason;
use crate::shard::{add, Shard};
use bytes::BytesMut;
use std::rc::Rc;
use tracing::debug;
use uringmq_codec::{Packet, Protocol, ReasonCode};
use uringmq_session::Violation;

/// Decodes and handles every complete packet in `buf`.
pub(super) async fn handle_buffered(
    core: &Rc<Shard>,
    conn: &Rc<Conn>,
    buf: &mut BytesMut,
) -> Result<(), CloseReason> {
    loop {
        if let Some(r) = conn.stop_reason() {
            return Err(r);
        }
        let mut decoder = conn.decoder.get();
        let before = buf.len();
        let decoded = decoder.decode(buf);
        conn.decoder.set(decoder);
        match decoded {
            Ok(None) => return Ok(()),
            Ok(Some(packet)) => {
                add(&core.stats().packets_in, 1);
                if let Packet::Publish(_) = &packet {
                    // Weighed by its wire length (what the decoder took from the buffer):
                    // properties, user properties included, are forwarded too.
                    let wire = before - buf.len();
                    crate::conn::limits::admit_publish(conn, wire as u64).await?;
                }
                if let Some(slow) = handle(core, conn, packet)? {
                    slow.await?;
                }
            }
            Err(e) => {
                let code = e.reason_code();
                if !conn.connected() {
                    // A malformed CONNECT: v5 may get CONNACK with the reason [MQTT-3.1.4-1];
                    // 3.1.1 gets CONNACK 0x01 only for an unsupported level [MQTT-3.1.2-2].
                    let protocol = conn.decoder.get().protocol();
                    match protocol {
                        Some(p)
                            if p.is_v5() || code == ReasonCode::UNSUPPORTED_PROTOCOL_VERSION =>
                        {
                            refuse(conn, p, code)
                        }
                        None if code == ReasonCode::UNSUPPORTED_PROTOCOL_VERSION => {
                            refuse(conn, Protocol::V3_1_1, code)
                        }
                        _ => {}
                    }
                }
                return Err(CloseReason::Protocol(code.0, e.to_string()));
            }
        }
    }
}

/// A future that handles one packet which needs to wait (CONNECT, a blocking authoriser).
type Slow<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), CloseReason>> + 'a>>;

/// Handles one decoded packet: at once when it needs no waiting (every packet of a
/// connected client without a blocking authoriser), else returns the boxed future that
/// does. Keeping the packet and the waiting out of the reader's own future keeps that
/// future, which every idle connection holds, small.
pub(super) fn handle<'a>(
    core: &'a Rc<Shard>,
    conn: &'a Rc<Conn>,
    packet: Packet,
) -> Result<Option<Slow<'a>>, CloseReason> {
    let Some(key) = conn.session() else {
        if conn.connected() {
            return Err(CloseReason::TakenOver);
        }
        return match packet {
            Packet::Connect(c) => {
                add(&core.stats().connects, 1);
                Ok(Some(Box::pin(on_connect(core, conn, c))))
            }
            // v5 enhanced authentication: the client's next step before CONNACK.
            Packet::Auth(a) => Ok(Some(Box::pin(async move {
                match super::reauth::on_auth(core, conn, a).await? {
                    Some(c) => Box::pin(on_connect(core, conn, c)).await,
                    None => Ok(()),
                }
            }))),
            other => Err(Violation::NotConnect(other.packet_type()).into()),
        };
    };
    debug!(client_id = ?conn.client_id.get().map(|c| &**c), packet = ?packet_name(&packet), "packet in");
    let packet = match packet {
        // v5 re-authentication [MQTT-4.12.1-1]: the authenticator may have to run off the core.
        Packet::Auth(a) => {
            return Ok(Some(Box::pin(async move {
                super::reauth::on_auth(core, conn, a).await.map(|_| ())
            })))
        }
        other => other,
    };
    if core
        .shared
        .authorizer
        .as_ref()
        .is_some_and(|a| a.is_blocking())
    {
        return Ok(Some(Box::pin(async move {
            let pre = pre_authorize(core, conn, key, &packet).await;
            handle_now(core, conn, key, packet, pre)
        })));
    }
    handle_now(core, conn, key, packet, None).map(|()| None)
}

/// Runs the session and router on one packet of a connected client.
fn handle_now(
    core: &Rc<Shard>,
    conn: &Rc<Conn>,
    key: u64,
    packet: Packet,
    pre: Option<Vec<bool>>,
) -> Result<(), CloseReason> {
    // The durable store's view of the packet (nothing without `persistence_dir`).
    let (before, refused) = core.persist_before(conn, key, &packet);
    if let Some(r) = refused {
        return r;
    }
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        core.handle_packet(conn, key, packet, pre)
    })) {
        Ok(r) => {
            core.persist_after(key, before);
            r
        }
        // A bug must end this connection, not the core.
        Err(_) => Err(CloseReason::Protocol(
            ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR.0,
            "internal error while handling a packet".into(),
        )),
    }
}

fn packet_name(p: &Packet) -> &'static str {
    match p {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect(_) => "DISCONNECT",
        Packet::Auth(_) => "AUTH",
    }
}
