//! Authorising wills like a PUBLISH by their client: once at CONNECT, where a will the
//! client may not publish refuses the connection (CONNACK 0x87, 3.x return code 5, as
//! Mosquitto answers), and again when the will is published, because the ACL may have been
//! reloaded (SIGHUP, `Broker::reload`) since: a will no longer allowed is dropped, logged and
//! counted (`Stats::wills_denied`), as Mosquitto checks `MOSQ_ACL_WRITE` in
//! `context__send_will`. `$SYS/` is the broker's [§4.7.2]: a will there is denied like a
//! PUBLISH there (Mosquitto denies every write to `$SYS` in its ACL check). A client that
//! authenticated with a JWT carrying ACL rules is held to those rules for its will too.
//!
//! The second check is synchronous, so a will is routed in its place in the core's order
//! (before a takeover is answered, so before the successor's CONNACK and its first PUBLISH:
//! a retained "offline" will cannot overwrite the "online" its client publishes after
//! reconnecting). It re-reads what can change without the client (the ACL file, the token's
//! rules); a blocking hook (a Python callback) is asked only at CONNECT, as a call on a hook
//! thread here would reorder the will after what follows it, and its CONNECT answer stands.

use crate::conn::{CloseReason, Conn};
use crate::shard::{add, Entry, Shard, Sink};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;
use tracing::{info, warn};
use uringmq_auth::{Access, AclFile, Authorizer, ClientInfo};
use uringmq_codec::{Connect, LastWill, ReasonCode};
use uringmq_session::{Message, Origin};

/// The identity a will is published under: its client's, as it connected.
#[derive(Clone)]
pub(crate) struct WillAuthor {
    client_id: Arc<str>,
    username: Option<Arc<str>>,
    listener: Arc<str>,
    peer: Option<SocketAddr>,
    /// The ACL rules of the client's token, if it authenticated with one.
    acl: Option<Arc<AclFile>>,
}

impl WillAuthor {
    /// The client of a CONNECT on `conn`, with the token rules its authentication granted.
    pub(crate) fn connecting(
        conn: &Conn,
        client_id: &str,
        username: Option<&str>,
        acl: Option<Arc<AclFile>>,
    ) -> Self {
        WillAuthor {
            client_id: client_id.into(),
            username: username.map(Into::into),
            listener: conn.listener.clone(),
            peer: conn.peer(),
            acl,
        }
    }

    /// A client whose connection is gone with its node (`cluster/session_store.rs`): no
    /// peer address, and no token rules (they were never stored).
    pub(crate) fn offline(
        client_id: Arc<str>,
        username: Option<Arc<str>>,
        listener: Arc<str>,
    ) -> Self {
        WillAuthor {
            client_id,
            username,
            listener,
            peer: None,
            acl: None,
        }
    }

    fn info(&self) -> ClientInfo<'_> {
        let mut info = ClientInfo::new(&self.client_id, self.username.as_deref(), &self.listener);
        info.peer = self.peer;
        info.acl = self.acl.as_deref();
        info
    }
}

/// At CONNECT: a will is a PUBLISH by its client, authorised now (and again when it is
/// published); one it may not publish refuses the connection with 0x87 (3.x: 5). `acl`: the
/// rules of the client's token, if its authentication granted some.
pub(crate) async fn check_at_connect(
    core: &Shard,
    conn: &Conn,
    client_id: &str,
    c: &Connect,
    acl: Option<Arc<AclFile>>,
) -> Result<(), CloseReason> {
    let Some(w) = &c.will else {
        return Ok(());
    };
    let user = c.username.as_ref().map(|u| u.as_str());
    if allowed(core, WillAuthor::connecting(conn, client_id, user, acl), w).await {
        return Ok(());
    }
    add(&core.stats().wills_denied, 1);
    info!(client_id, peer = ?conn.peer(), topic = %w.topic, "CONNECT refused: will not authorised");
    crate::conn::refuse(conn, c.protocol, ReasonCode::NOT_AUTHORIZED);
    Err(CloseReason::Refused(ReasonCode::NOT_AUTHORIZED.0))
}

/// Whether `author` may publish its will `w` (at CONNECT): `$SYS/` never; else the
/// authoriser's answer, asked on a hook thread when it blocks (a hook that fails, times out
/// or finds the pool busy denies).
pub(crate) async fn allowed(core: &Shard, author: WillAuthor, w: &LastWill) -> bool {
    if Message::is_reserved_for_broker(&w.topic) {
        return false;
    }
    let Some(a) = core.shared.authorizer.clone() else {
        return true;
    };
    if !a.is_blocking() {
        return a.authorize(&author.info(), Access::Publish, &w.topic);
    }
    let topic = w.topic.to_string();
    let Ok(wait) = core
        .shared
        .hooks
        .run(move || a.authorize(&author.info(), Access::Publish, &topic))
    else {
        return false;
    };
    let answer = wait.answer(|| core.stopping.get()).await;
    if answer.as_ref().err() == Some(&crate::security::HookError::TimedOut) {
        add(&core.stats().hook_timeouts, 1);
        warn!(topic = %w.topic, "will authorisation timed out (hook_timeout_ms); refusing");
    }
    answer.unwrap_or(false)
}

/// Whether `author` may still publish `w` now (see the module doc): without calling a
/// blocking hook, whose CONNECT answer stands.
fn still_allowed(core: &Shard, author: &WillAuthor, w: &LastWill) -> bool {
    if Message::is_reserved_for_broker(&w.topic) {
        return false;
    }
    core.shared.authorizer.is_none()
        || core
            .shared
            .security
            .authorize_unless_blocking(&author.info(), Access::Publish, &w.topic, false)
            .unwrap_or(true)
}

impl Shard {
    /// Who session `e`'s will is published as: its client, through the listener it is (or
    /// was last) connected to.
    pub(crate) fn will_author(&self, e: &Entry) -> WillAuthor {
        let names = &self.shared.security;
        let (listener, peer) = match &e.sink {
            Sink::Conn(conn) => (conn.listener.clone(), conn.peer()),
            Sink::Parked(p) => (p.listener().clone(), p.peer()),
            Sink::Offline(l) => (names.listener_name(*l).into(), None),
            Sink::Api(_) | Sink::Bridge(_) => (
                names
                    .listener_name(crate::security::NO_LISTENER_INDEX)
                    .into(),
                None,
            ),
        };
        WillAuthor {
            client_id: e.s.client_id.clone(),
            username: e.s.username_shared(),
            listener,
            peer,
            acl: e.token_acl.clone(),
        }
    }

    /// Publishes a will (or a delayed will that came due) if its client may still publish it.
    pub(crate) fn publish_will(
        self: &Rc<Self>,
        w: Box<LastWill>,
        author: WillAuthor,
        origin: Option<Origin>,
        now: Instant,
    ) {
        if !still_allowed(self, &author, &w) {
            add(&self.stats().wills_denied, 1);
            info!(client_id = %author.client_id, topic = %w.topic, "will not authorised: dropped");
            return;
        }
        let msg = Arc::new(uringmq_session::will::to_message(&w, origin, now));
        add(&self.stats().messages_in, 1);
        add(&self.stats().publish_bytes_in, msg.payload.len() as u64);
        self.accept(&msg);
    }
}
