//! Authenticating a CONNECT on its connection: the chain off the core where it may block,
//! pending-login caps, enhanced authentication start, and the refusal path.

use super::reauth::{send_auth, Exchange, Granted};
use crate::conn::{refuse, CloseReason, Conn};
use crate::security::{Admitted, HookError, Security};
use crate::shard::{add, Shard};
use bytes::Bytes;
use std::rc::Rc;
use std::sync::Arc;
use tracing::{info, warn};
use uringmq_auth::{
    AclFile, AuthStep, Authenticator, ClientInfo, DenyReason, EnhancedAuthenticator,
};
use uringmq_codec::{ByteStr, Connect, Protocol, ReasonCode};
use uringmq_session::Session;

/// The method a CONNECT asks for, when this broker offers it. The method and data are taken out
/// of the CONNECT so negotiation does not refuse it; an unknown method is left in place and
/// refused there with 0x8C Bad authentication method [MQTT-4.12.0-1].
pub(crate) struct Requested {
    method: ByteStr,
    data: Option<Bytes>,
    authenticator: Arc<dyn EnhancedAuthenticator>,
}

/// Takes the Authentication Method out of a v5 CONNECT if an enhanced authenticator handles it.
/// A second CONNECT during an exchange is a protocol error [MQTT-3.1.0-2].
pub(crate) fn take_method(
    core: &Shard,
    conn: &Conn,
    c: &mut Connect,
) -> Result<Option<Requested>, CloseReason> {
    let exchange = conn.exchange.take();
    let pending = matches!(exchange.as_deref(), Some(Exchange::Pending { .. }));
    conn.exchange.set(exchange);
    if pending {
        return Err(CloseReason::Protocol(
            ReasonCode::PROTOCOL_ERROR.0,
            "[MQTT-3.1.0-2] CONNECT during an authentication exchange".into(),
        ));
    }
    if !c.protocol.is_v5() {
        return Ok(None);
    }
    let Some(method) = c.properties.authentication_method.as_deref() else {
        return Ok(None);
    };
    let Some(authenticator) = core.shared.security.enhanced(method, &conn.listener) else {
        return Ok(None);
    };
    let method = c
        .properties
        .authentication_method
        .take()
        .unwrap_or_default();
    let data = c.properties.authentication_data.take();
    Ok(Some(Requested {
        method,
        data,
        authenticator,
    }))
}

/// Runs `f` on a hook thread when `blocking`, else here. `Err` when it gave no answer: the
/// hook threads are saturated, it outlived `hook_timeout_ms` (logged and counted), it
/// panicked, or the connection or broker is going away; the caller refuses.
pub(super) async fn off_core<T: Send + 'static>(
    core: &Shard,
    conn: &Conn,
    blocking: bool,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, HookError> {
    if !blocking {
        return Ok(f());
    }
    let answer = core
        .shared
        .hooks
        .run(f)?
        .answer(|| core.stopping.get() || conn.kill_reason().is_some())
        .await;
    if answer.as_ref().err() == Some(&HookError::TimedOut) {
        add(&core.stats().hook_timeouts, 1);
        warn!(peer = ?conn.peer(), listener = %conn.listener, timeout_ms = core.shared.config.hook_timeout_ms, "authentication check timed out (hook_timeout_ms); refusing the client");
    }
    answer
}

/// Counts an authentication in progress for `conn` when it will wait for a hook thread
/// (`blocking`); `Err` (CONNACK written) when its listener or address has too many already.
pub(super) async fn admit<'a>(
    core: &Rc<Shard>,
    conn: &Rc<Conn>,
    security: &'a Security,
    blocking: bool,
    (proto, client_id): (Protocol, &str),
) -> Result<Option<Admitted<'a>>, CloseReason> {
    if !blocking {
        return Ok(None);
    }
    match security
        .pending
        .admit(&conn.listener, conn.peer().map(|p| p.ip()))
    {
        Ok(admitted) => Ok(Some(admitted)),
        Err(full) => {
            let what = match full {
                crate::security::Full::Listener => "too many authentications in progress on its listener (max_pending_auth)",
                crate::security::Full::Address => "too many authentications in progress from its address (max_pending_auth_per_address)",
            };
            Err(busy(core, conn, proto, full.reason_code(), what, client_id).await)
        }
    }
}

/// A check that gave no answer: the pool was saturated (0x89 Server busy) or the check timed
/// out or failed (0x88 Server unavailable). Either way the client is refused (fail closed).
async fn no_answer(
    core: &Rc<Shard>,
    conn: &Rc<Conn>,
    proto: Protocol,
    e: HookError,
    client_id: &str,
) -> CloseReason {
    match e {
        HookError::Busy => {
            let what = "the hook threads' queue is full";
            busy(core, conn, proto, ReasonCode::SERVER_BUSY, what, client_id).await
        }
        HookError::TimedOut | HookError::Failed => {
            refused(core, conn, proto, DenyReason::ServerUnavailable, client_id).await
        }
    }
}

/// A client refused for load, not for its credentials: counted as `auth_busy`, logged, and
/// answered after the failure delay like any refusal (a flooding client must not loop faster).
pub(super) async fn busy(
    core: &Rc<Shard>,
    conn: &Rc<Conn>,
    proto: Protocol,
    code: ReasonCode,
    what: &str,
    client_id: &str,
) -> CloseReason {
    add(&core.stats().auth_busy, 1);
    info!(client_id, peer = ?conn.peer(), listener = %conn.listener, "authentication refused: {what}");
    answer_refusal(core, conn, proto, code).await
}

/// Authenticates a CONNECT. `Ok(Some)` lets the client in (with what CONNACK must carry),
/// `Ok(None)` means an AUTH exchange is under way, `Err` means refused (CONNACK written).
pub(crate) async fn authenticate(
    core: &Rc<Shard>,
    conn: &Rc<Conn>,
    c: &mut Box<Connect>,
    client_id: &str,
    requested: Option<Requested>,
) -> Result<Option<Granted>, CloseReason> {
    let proto = c.protocol;
    if let Some(ex) = conn.exchange.take() {
        if let Exchange::Done(granted) = *ex {
            return Ok(Some(granted));
        }
    }
    let security = core.shared.security.clone();
    let identity = conn.transport.borrow().peer_identity();
    let cert_cn = identity.and_then(|i| i.common_name);
    if security
        .policy(&conn.listener)
        .is_some_and(|p| p.identity_as_username)
    {
        // Mosquitto's use_identity_as_username: the certificate is the credential; the CONNECT
        // user name and password are replaced, the password file is not consulted.
        return match cert_cn {
            Some(cn) => {
                c.username = Some(ByteStr::from(cn.as_str()));
                c.password = None;
                Ok(Some(Granted::default()))
            }
            None => Err(refused(core, conn, proto, DenyReason::BadCredentials, client_id).await),
        };
    }
    match requested {
        Some(req) => start_exchange(core, conn, c, client_id, cert_cn, req).await,
        None => check_credentials(core, conn, c, client_id, cert_cn).await,
    }
}

/// Starts the enhanced authentication `req` asks for: granted at once, refused, or an AUTH
/// exchange under way (`Ok(None)`, the CONNECT parked on the connection).
async fn start_exchange(
    core: &Rc<Shard>,
    conn: &Rc<Conn>,
    c: &mut Box<Connect>,
    client_id: &str,
    cert_cn: Option<String>,
    req: Requested,
) -> Result<Option<Granted>, CloseReason> {
    let proto = c.protocol;
    let security = core.shared.security.clone();
    let owned = Owned::new(conn, c, client_id, cert_cn);
    let auth = req.authenticator.clone();
    let data = req.data.clone();
    let blocking = auth.is_blocking();
    let _pending = admit(core, conn, &security, blocking, (proto, client_id)).await?;
    let answer = off_core(core, conn, blocking, {
        move || auth.start(&owned.info(), data.as_deref())
    })
    .await;
    let (step, state) = match answer {
        Ok(started) => started,
        Err(e) => return Err(no_answer(core, conn, proto, e, client_id).await),
    };
    match step {
        AuthStep::Continue(data) => {
            send_auth(
                conn,
                ReasonCode::CONTINUE_AUTHENTICATION,
                &req.method,
                Some(data),
            );
            conn.exchange.set(Some(Box::new(Exchange::Pending {
                connect: Some(c.clone()),
                method: req.method,
                state,
                authenticator: req.authenticator,
            })));
            Ok(None)
        }
        AuthStep::Success(data) => Ok(Some(Granted::new(req.method, data, req.authenticator))),
        AuthStep::Fail => {
            Err(refused(core, conn, proto, DenyReason::NotAuthorized, client_id).await)
        }
    }
}

/// Checks the CONNECT's credentials against the chain (hook, password file, JWT, anonymous
/// policy), off the core where a check may block.
async fn check_credentials(
    core: &Rc<Shard>,
    conn: &Rc<Conn>,
    c: &mut Box<Connect>,
    client_id: &str,
    cert_cn: Option<String>,
) -> Result<Option<Granted>, CloseReason> {
    let proto = c.protocol;
    let security = core.shared.security.clone();
    let Some(auth) = core.shared.authenticator.as_ref() else {
        return Ok(Some(Granted::default()));
    };
    let owned = Owned::new(conn, c, client_id, cert_cn);
    let password = c.password.clone();
    let blocking = auth.is_blocking();
    let _pending = admit(core, conn, &security, blocking, (proto, client_id)).await?;
    let checker = security.clone();
    let decision = off_core(core, conn, blocking, move || {
        checker.check(&owned.info(), password.as_deref())
    })
    .await;
    match decision {
        Ok(Ok(grant)) => {
            if let Some(user) = grant.username {
                // A token names the user: ACL rules and hooks know the client by it.
                c.username = Some(ByteStr::from(user.as_str()));
            }
            Ok(Some(Granted {
                exchange: None,
                acl: grant.acl,
            }))
        }
        Ok(Err(why)) => Err(refused(core, conn, proto, why, client_id).await),
        Err(e) => Err(no_answer(core, conn, proto, e, client_id).await),
    }
}

/// The identity of session `s` on `listener` for an authorisation check, with the ACL rules
/// of its token (`acl`), if any.
pub(crate) fn session_info<'a>(
    s: &'a Session,
    acl: Option<&'a AclFile>,
    listener: &'a str,
) -> ClientInfo<'a> {
    let mut info = ClientInfo::new(&s.client_id, s.username(), listener);
    info.acl = acl;
    info
}

/// A refused client: counted, logged without credentials, delayed against guessing, then
/// answered with the CONNACK code of its protocol version (the encoder maps v5 codes to 3.x).
pub(super) async fn refused(
    core: &Rc<Shard>,
    conn: &Rc<Conn>,
    proto: Protocol,
    why: DenyReason,
    client_id: &str,
) -> CloseReason {
    add(&core.stats().auth_failures, 1);
    info!(client_id, peer = ?conn.peer(), listener = %conn.listener, "authentication failed: {why:?}");
    answer_refusal(core, conn, proto, ReasonCode(why.reason_code())).await
}

/// The refusing CONNACK, after the failure delay.
async fn answer_refusal(
    core: &Rc<Shard>,
    conn: &Rc<Conn>,
    proto: Protocol,
    code: ReasonCode,
) -> CloseReason {
    let delay = core.shared.security.failure_delay;
    if !delay.is_zero() {
        monoio::time::sleep(delay).await;
    }
    refuse(conn, proto, code);
    CloseReason::Refused(code.0)
}

/// What a hook thread needs to build a `ClientInfo` (owned, to cross threads).
pub(super) struct Owned {
    client_id: String,
    username: Option<String>,
    listener: String,
    peer: Option<std::net::SocketAddr>,
    cert_cn: Option<String>,
}

impl Owned {
    fn new(conn: &Conn, c: &Connect, client_id: &str, cert_cn: Option<String>) -> Self {
        Owned {
            client_id: client_id.to_owned(),
            username: c.username.as_ref().map(|u| u.to_string()),
            listener: conn.listener.to_string(),
            peer: conn.peer(),
            cert_cn,
        }
    }

    /// The identity of a connected client, from its session.
    pub(super) fn connected(core: &Shard, conn: &Conn) -> Self {
        let st = core.st.borrow();
        let session = conn.session().and_then(|key| st.sessions.get(key));
        Owned {
            client_id: session
                .map(|e| e.s.client_id.to_string())
                .unwrap_or_default(),
            username: session.and_then(|e| e.s.username().map(str::to_owned)),
            listener: conn.listener.to_string(),
            peer: conn.peer(),
            cert_cn: conn
                .transport
                .borrow()
                .peer_identity()
                .and_then(|i| i.common_name),
        }
    }

    pub(super) fn info(&self) -> ClientInfo<'_> {
        let mut info = ClientInfo::new(&self.client_id, self.username.as_deref(), &self.listener);
        info.peer = self.peer;
        info.cert_common_name = self.cert_cn.as_deref();
        info
    }
}
