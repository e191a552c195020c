//! CONNECT: negotiation, authorisation, claiming the client id and installing the session.

use super::Conn;
use crate::conn::{write_packet, CloseReason};
use crate::shard::{add, Shard, Sink};
use std::num::NonZeroU32;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tracing::{debug, info, warn};
use uringmq_auth::{Access, ClientInfo};
use uringmq_codec::{encoded_len_within, ConnAck, Connect, Packet, Protocol, ReasonCode};
use uringmq_session::{keepalive, negotiate, Negotiated, Session};

/// What a blocking authoriser is asked about a packet: the topic of a PUBLISH (also the one
/// its topic alias stands for: the hook decides by topic, and an alias must not get past it)
/// or each filter of a SUBSCRIBE.
fn asked_topics(s: &Session, packet: &Packet) -> Option<(Access, Vec<String>)> {
    match packet {
        Packet::Publish(p) => Some((Access::Publish, vec![s.publish_topic(p)?.to_string()])),
        Packet::Subscribe(sub) => Some((
            Access::Subscribe,
            sub.filters.iter().map(|(f, _)| f.to_string()).collect(),
        )),
        _ => None,
    }
}

/// Asks a blocking authoriser on a hook thread (never on the core) about a PUBLISH topic or
/// each SUBSCRIBE filter.
pub(super) async fn pre_authorize(
    core: &Rc<Shard>,
    conn: &Rc<Conn>,
    key: u64,
    packet: &Packet,
) -> Option<Vec<bool>> {
    let authz = core
        .shared
        .authorizer
        .as_ref()
        .filter(|a| a.is_blocking())?
        .clone();
    let (access, topics, client_id, username, token_acl) = {
        let st = core.st.borrow();
        let e = st.sessions.get(key)?;
        let (access, topics) = asked_topics(&e.s, packet)?;
        (
            access,
            topics,
            e.s.client_id.to_string(),
            e.s.username().map(str::to_owned),
            e.token_acl.clone(),
        )
    };
    let listener = conn.listener.to_string();
    let peer = conn.peer();
    let submitted = core.shared.hooks.run(move || {
        let mut info = ClientInfo::new(&client_id, username.as_deref(), &listener);
        info.peer = peer;
        info.acl = token_acl.as_deref();
        topics
            .iter()
            .map(|t| authz.authorize(&info, access, t))
            .collect::<Vec<bool>>()
    });
    // No answer (hook threads saturated, a timeout, a panic, the broker stopping) denies:
    // a missing verdict is a refusal.
    let answer = match submitted {
        Ok(wait) => {
            wait.answer(|| core.stopping.get() || conn.kill_reason().is_some())
                .await
        }
        Err(e) => Err(e),
    };
    if answer.as_ref().err() == Some(&crate::security::HookError::TimedOut) {
        add(&core.stats().hook_timeouts, 1);
        warn!(peer = ?conn.peer(), listener = %conn.listener, "authorisation hook timed out (hook_timeout_ms); access denied");
    }
    Some(answer.unwrap_or_default())
}

/// Writes a refusing CONNACK (mapped to a 3.x return code by the encoder).
pub(crate) fn refuse(conn: &Conn, proto: Protocol, code: ReasonCode) {
    let ack = ConnAck {
        session_present: false,
        reason_code: code,
        properties: Default::default(),
    };
    let max = conn.max_out.get();
    Shard::write_out(conn, |out| {
        write_packet(out, &Packet::ConnAck(ack), proto, max)
    });
}

/// CONNECT: negotiation, the will's settings, authentication, the will's authorisation,
/// the session (new, or taken over from wherever it lives), then CONNACK.
pub(super) async fn on_connect(
    core: &Rc<Shard>,
    conn: &Rc<Conn>,
    mut c: Box<Connect>,
) -> Result<(), CloseReason> {
    let started = Instant::now();
    let proto = c.protocol;
    conn.protocol.set(proto);
    // CONNACK is the first packet the client's limit applies to [MQTT-3.1.2-24].
    let max_out = c.properties.maximum_packet_size.and_then(NonZeroU32::new);
    conn.max_out.set(max_out);
    let requested = super::login::take_method(core, conn, &mut c)?;
    // Refuses a will the broker cannot honour, too.
    let n = negotiated(core, conn, &c)?;
    // Authentication (certificate, enhanced AUTH exchange, password file, anonymous policy,
    // hooks): on a hook thread where blocking; refusals are delayed and counted there.
    let mut granted =
        match super::login::authenticate(core, conn, &mut c, &n.client_id, requested).await? {
            Some(granted) => granted,
            // Waiting for the client's AUTH packet.
            None => return Ok(()),
        };
    // This connection's grants replace the previous connection's (a resumed session).
    let token_acl = granted.token_acl();
    let acl = token_acl.clone();
    crate::conn::will_auth::check_at_connect(core, conn, &n.client_id, &c, acl).await?;
    let mut claimed = claim_session(core, conn, &n, &c).await?;
    let properties = if proto.is_v5() {
        let mut p = n.connack_properties(&core.shared.limits);
        conn.exchange.set(granted.apply(&mut p));
        p
    } else {
        Default::default()
    };
    let ack = Packet::ConnAck(ConnAck {
        session_present: claimed.present,
        reason_code: ReasonCode::SUCCESS,
        properties,
    });
    // A CONNACK larger than the client's Maximum Packet Size even without its optional
    // properties cannot be sent [MQTT-3.1.2-24]: the connection ends (as in Mosquitto,
    // whose CONNECT fails when send__connack does), rather than wait for nothing.
    let unfit = encoded_len_within(&ack, proto, conn.max_out.get()).is_err();
    if core.stopping.get() || conn.is_killed() || unfit {
        return Err(closed_while_connecting(
            core, conn, claimed, token_acl, unfit,
        ));
    }
    claimed.s.set_will(c.will.take().map(Box::new));
    crate::conn::limits::inherit_publish_debt(core, conn, &claimed.id);
    conn.send_packet(&ack);
    install_connected(core, conn, &n, claimed, token_acl);
    core.stats().connect_time.record(started.elapsed());
    Ok(())
}

/// The negotiated CONNECT, or its refusal (CONNACK sent).
fn negotiated(core: &Shard, conn: &Conn, c: &Connect) -> Result<Negotiated, CloseReason> {
    let shared = &core.shared;
    let negotiated = negotiate(c, &shared.limits, || {
        let n = shared.next_assigned.fetch_add(1, Ordering::Relaxed);
        format!("uringmq-{:x}-{n:x}", std::process::id())
    });
    negotiated.map_err(|r| {
        debug!(peer = ?conn.peer(), "CONNECT refused: {r}");
        refuse(conn, c.protocol, r.reason);
        CloseReason::Refused(r.reason.0)
    })
}

/// A CONNECT's session: the client id claimed, and the previous session if it goes on.
struct Claimed {
    id: Arc<str>,
    key: u64,
    s: Box<Session>,
    present: bool,
    /// The key the session moved from (a takeover), for `after_install`.
    moved_from: Option<u64>,
    /// The session came from another node (`Shard::after_remote_install`).
    fetched: bool,
}

/// Claims the client id and takes the session over from wherever it lives [MQTT-3.1.4-3]
/// (the registry orders CONNECTs with one id; see `shard/moves.rs`), or starts a new one.
/// Refused (server unavailable) when this core holds the most sessions it can.
async fn claim_session(
    core: &Rc<Shard>,
    conn: &Conn,
    n: &Negotiated,
    c: &Connect,
) -> Result<Claimed, CloseReason> {
    let cfg = &core.shared.config;
    let proto = c.protocol;
    let id: Arc<str> = n.client_id.as_str().into();
    let Some(claim) = core.claim_client_id(&id, n.clean_start) else {
        warn!(core = core.id, client_id = %id, "CONNECT refused: {}", crate::shard::FULL);
        refuse(conn, proto, ReasonCode::SERVER_UNAVAILABLE);
        return Err(CloseReason::Refused(ReasonCode::SERVER_UNAVAILABLE.0));
    };
    let key = claim.key;
    let unknown = claim.is_new();
    let elsewhere = claim.may_be_elsewhere();
    let (mut old, moved_from) = claim.session().await;
    let mut fetched = false;
    if elsewhere && old.is_none() {
        // Nothing here: another node of the cluster may have it (one `Option` check without).
        old = core.fetch_session(&id, n.clean_start).await;
        fetched = old.is_some();
    }
    if unknown && !n.clean_start && old.is_none() {
        old = core.resume_shared(&id).await;
    }
    let (mut s, present) = match old {
        Some(mut s) if !n.clean_start => {
            s.attach(n, proto);
            (s, true)
        }
        _ => {
            let (count, bytes) = (cfg.max_queued_messages, cfg.max_queued_bytes);
            (Box::new(Session::new(n, proto, count, bytes)), false)
        }
    };
    s.client_id = id.clone();
    s.set_username(c.username.as_ref().map(|u| Arc::from(u.as_str())));
    Ok(Claimed {
        id,
        key,
        s,
        present,
        moved_from,
        fetched,
    })
}

/// Closed while the CONNECT waited (or its CONNACK cannot fit): the session (this key owns
/// the id now) stays or ends as if the connection had closed right after CONNACK, without a
/// will. Returns why.
fn closed_while_connecting(
    core: &Rc<Shard>,
    conn: &Conn,
    claimed: Claimed,
    token_acl: Option<Arc<uringmq_auth::AclFile>>,
    unfit: bool,
) -> CloseReason {
    let reason = match conn.kill_reason() {
        Some(r) => r,
        None if unfit => CloseReason::Refused(ReasonCode::PACKET_TOO_LARGE.0),
        None => CloseReason::Shutdown,
    };
    let key = claimed.key;
    let listener = core.shared.security.listener_index(&conn.listener);
    core.install_session(key, claimed.s, Sink::Offline(listener));
    core.set_token_acl(key, token_acl);
    after_install(core, key, claimed.moved_from, claimed.fetched);
    core.connection_closed(key, &reason);
    reason
}

/// Completes the move of a session that came from another core or node.
fn after_install(core: &Rc<Shard>, key: u64, moved_from: Option<u64>, fetched: bool) {
    if fetched {
        core.after_remote_install(key);
    } else {
        core.after_install(key, moved_from);
    }
}

/// After CONNACK: the connection is connected and the session installed on it.
fn install_connected(
    core: &Rc<Shard>,
    conn: &Rc<Conn>,
    n: &Negotiated,
    mut claimed: Claimed,
    token_acl: Option<Arc<uringmq_auth::AclFile>>,
) {
    let key = claimed.key;
    conn.session.set(key);
    conn.set_connected();
    claimed.s.set_connected_since(std::time::SystemTime::now());
    let grace = keepalive::grace(n.keep_alive.secs).map_or(0, |g| g.as_millis().max(1));
    conn.grace_ms.set(u32::try_from(grace).unwrap_or(u32::MAX));
    // A connection accepts one CONNECT [MQTT-3.1.0-2]: set once.
    let _ = conn.client_id.set(claimed.id.clone());
    core.install_session(key, claimed.s, Sink::Conn(conn.clone()));
    core.set_token_acl(key, token_acl);
    if claimed.present {
        core.resume_delivery(key);
    }
    after_install(core, key, claimed.moved_from, claimed.fetched);
    core.stats().connections.fetch_add(1, Ordering::Relaxed);
    info!(
        client_id = %claimed.id,
        listener = %conn.listener,
        peer = conn.peer().map(tracing::field::display),
        core = core.id,
        protocol = ?conn.protocol.get(),
        clean_start = n.clean_start,
        session_present = claimed.present,
        keep_alive = n.keep_alive.secs,
        "client connected"
    );
}
