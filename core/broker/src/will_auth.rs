//! Authorising wills like a PUBLISH by their client: once at CONNECT, where a will the
//! client may not publish refuses the connection (CONNACK 0x87, 3.x return code 5, as
//! Mosquitto answers), and again when the will is published, because the ACL may have been
//! reloaded (SIGHUP, `Broker::reload`) since: a will no longer allowed is dropped, logged and
//! counted (`Stats::wills_denied`), as Mosquitto checks `MOSQ_ACL_WRITE` in
//! `context__send_will`. `$SYS/` is the broker's [§4.7.2]: a will there is denied like a
//! PUBLISH there (Mosquitto denies every write to `$SYS` in its ACL check).

use crate::connection::Conn;
use crate::core::{add, CloseReason, Core, Entry, Sink};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;
use tracing::{info, warn};
use uringmq_auth::{Access, Authorizer, ClientInfo};
use uringmq_codec::{Connect, LastWill, ReasonCode};
use uringmq_session::{Message, Origin};

/// The identity a will is published under: its client's, as it connected.
#[derive(Clone)]
pub(crate) struct WillAuthor {
    client_id: Arc<str>,
    username: Option<Arc<str>>,
    listener: Arc<str>,
    peer: Option<SocketAddr>,
}

impl WillAuthor {
    /// The client of a CONNECT on `conn`.
    pub(crate) fn connecting(conn: &Conn, client_id: &str, username: Option<&str>) -> Self {
        WillAuthor {
            client_id: client_id.into(),
            username: username.map(Into::into),
            listener: conn.listener.clone(),
            peer: conn.peer,
        }
    }

    fn ask(&self, a: &dyn Authorizer, topic: &str) -> bool {
        let mut info = ClientInfo::new(&self.client_id, self.username.as_deref(), &self.listener);
        info.peer = self.peer;
        a.authorize(&info, Access::Publish, topic)
    }
}

/// At CONNECT: a will is a PUBLISH by its client, authorised now (and again when it is
/// published); one it may not publish refuses the connection with 0x87 (3.x: 5).
pub(crate) async fn check_at_connect(
    core: &Core,
    conn: &Conn,
    client_id: &str,
    c: &Connect,
) -> Result<(), CloseReason> {
    let Some(w) = &c.will else {
        return Ok(());
    };
    let user = c.username.as_ref().map(|u| u.as_str());
    if allowed(core, WillAuthor::connecting(conn, client_id, user), w).await {
        return Ok(());
    }
    add(&core.stats().wills_denied, 1);
    info!(client_id, peer = ?conn.peer, topic = %w.topic, "CONNECT refused: will not authorised");
    crate::connection::refuse(conn, c.protocol, ReasonCode::NOT_AUTHORIZED);
    Err(CloseReason::Refused(ReasonCode::NOT_AUTHORIZED.0))
}

/// Whether `author` may publish its will `w` now: `$SYS/` never; else the authoriser's
/// answer, asked on a hook thread when it blocks (a hook that fails denies).
async fn allowed(core: &Core, author: WillAuthor, w: &LastWill) -> bool {
    match decide_now(core, &author, w) {
        Some(ok) => ok,
        None => ask_hook(core, author, w).await,
    }
}

/// The decision when it needs no blocking authoriser, else `None`.
fn decide_now(core: &Core, author: &WillAuthor, w: &LastWill) -> Option<bool> {
    if Message::is_sys_topic(&w.topic) {
        return Some(false);
    }
    match &core.shared.authorizer {
        None => Some(true),
        Some(a) if a.is_blocking() => None,
        Some(a) => Some(author.ask(&**a, &w.topic)),
    }
}

/// Asks the blocking authoriser on a hook thread, never on the core.
async fn ask_hook(core: &Core, author: WillAuthor, w: &LastWill) -> bool {
    let Some(a) = core.shared.authorizer.clone() else {
        return true;
    };
    let topic = w.topic.to_string();
    // Fail closed: a busy pool, a timed-out or failed check, or a stopping broker deny.
    let Ok(wait) = core.shared.hooks.run(move || author.ask(&*a, &topic)) else {
        return false;
    };
    let answer = wait.answer(|| core.stopping.get()).await;
    if answer.as_ref().err() == Some(&crate::hooks::HookError::TimedOut) {
        add(&core.stats().hook_timeouts, 1);
        warn!(topic = %w.topic, "will authorisation timed out (hook_timeout_ms); dropping the will");
    }
    answer.unwrap_or(false)
}

impl Core {
    /// Who session `e`'s will is published as: its client, through the listener it is (or
    /// was last) connected to.
    pub(crate) fn will_author(&self, e: &Entry) -> WillAuthor {
        let names = &self.shared.security;
        let (listener, peer) = match &e.sink {
            Sink::Conn(conn) => (conn.listener.clone(), conn.peer),
            Sink::Offline(l) => (names.listener_name(*l).into(), None),
            Sink::Api(_) => (
                names.listener_name(crate::auth::NO_LISTENER_INDEX).into(),
                None,
            ),
        };
        WillAuthor {
            client_id: e.s.client_id.clone(),
            username: e.s.username.clone(),
            listener,
            peer,
        }
    }

    /// Publishes a will (or a delayed will that came due) if its client may still publish
    /// it. A blocking authoriser is asked on a hook thread, so the will then goes out a
    /// little later, from a task of its own.
    pub(crate) fn publish_will(
        self: &Rc<Self>,
        w: Box<LastWill>,
        author: WillAuthor,
        origin: Option<Origin>,
        now: Instant,
    ) {
        if let Some(ok) = decide_now(self, &author, &w) {
            self.publish_allowed_will(&w, &author, ok, origin, now);
            return;
        }
        let core = self.clone();
        monoio::spawn(async move {
            let ok = ask_hook(&core, author.clone(), &w).await;
            // A broker that began stopping meanwhile publishes no wills.
            if !core.stopping.get() {
                core.publish_allowed_will(&w, &author, ok, origin, now);
            }
        });
    }

    fn publish_allowed_will(
        self: &Rc<Self>,
        w: &LastWill,
        author: &WillAuthor,
        ok: bool,
        origin: Option<Origin>,
        now: Instant,
    ) {
        if !ok {
            add(&self.stats().wills_denied, 1);
            info!(client_id = %author.client_id, topic = %w.topic, "will not authorised: dropped");
            return;
        }
        let msg = Arc::new(uringmq_session::will::to_message(w, origin, now));
        add(&self.stats().messages_in, 1);
        if msg.retain {
            self.retain(&msg);
        }
        self.route(&msg);
    }
}
