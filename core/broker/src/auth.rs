//! Who may connect and what they may touch, wired into the broker: the anonymous policy per
//! listener, the password file, the ACL file and the embedder's hooks composed into one
//! authenticator and one authoriser (files first, then hooks); certificate identities as user
//! names; MQTT 5 enhanced authentication (AUTH packets) through `EnhancedAuthenticator`s such
//! as SCRAM-SHA-256; and the refusal path (CONNACK code for the client's version, a short
//! delay against guessing, a counter).
//!
//! Files are held behind an `ArcSwap`, so SIGHUP swaps in freshly read files without a lock
//! on the per-message path.

use crate::api::{Hooks, StartError};
use crate::config::{Config, ConfigError};
use crate::connection::{refuse, Conn};
use crate::core::{add, CloseReason, Core};
use crate::reload::ReloadReport;
use arc_swap::ArcSwap;
use bytes::Bytes;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};
use uringmq_auth::{
    Access, AclFile, AllowAll, AuthChain, AuthDecision, AuthState, AuthStep, Authenticator,
    Authorizer, AuthzChain, ClientInfo, DenyReason, EnhancedAuthenticator, PasswordFile,
};
use uringmq_codec::ReasonCode;
use uringmq_codec::{Auth, AuthProperties, ByteStr, ConnAckProperties, Connect, Packet, Protocol};
use uringmq_session::Session;

/// Per-listener policy, looked up by listener name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ListenerPolicy {
    allow_anonymous: bool,
    identity_as_username: bool,
}

/// Anonymous clients are decided per listener (Mosquitto's per-listener `allow_anonymous`);
/// clients with a user name are left to the next step.
struct ListenerAnonymous(HashMap<String, ListenerPolicy>);

impl Authenticator for ListenerAnonymous {
    fn authenticate(&self, client: &ClientInfo<'_>, password: Option<&[u8]>) -> AuthDecision {
        self.decide(client, password).unwrap_or(AuthDecision::Allow)
    }

    fn decide(&self, client: &ClientInfo<'_>, _: Option<&[u8]>) -> Option<AuthDecision> {
        if client.username.is_some() {
            return None;
        }
        let allowed = self
            .0
            .get(client.listener)
            .is_some_and(|p| p.allow_anonymous);
        // Mosquitto answers an anonymous client it refuses with "not authorised".
        Some(if allowed {
            AuthDecision::Allow
        } else {
            AuthDecision::Deny(DenyReason::NotAuthorized)
        })
    }
}

/// The files as last read.
struct Files {
    password: Option<Arc<PasswordFile>>,
    acl: Option<Arc<AclFile>>,
}

/// Everything the broker knows about authentication and authorisation.
pub(crate) struct Security {
    password_path: Option<PathBuf>,
    acl_path: Option<PathBuf>,
    hooks: Hooks,
    policies: Arc<ListenerAnonymous>,
    enhanced: Vec<Arc<dyn EnhancedAuthenticator>>,
    files: ArcSwap<Files>,
    /// Delay before a refusing CONNACK.
    pub(crate) failure_delay: Duration,
    /// Some step can refuse a client: without one, CONNECT skips authentication entirely.
    authenticates: bool,
}

fn load_files(
    password: Option<&PathBuf>,
    acl: Option<&PathBuf>,
) -> Result<Files, (&'static str, String)> {
    let password = password
        .map(|p| PasswordFile::load(p).map(Arc::new))
        .transpose()
        .map_err(|e| ("password_file", e.to_string()))?;
    let acl = acl
        .map(|p| AclFile::load(p).map(Arc::new))
        .transpose()
        .map_err(|e| ("acl_file", e.to_string()))?;
    Ok(Files { password, acl })
}

impl Security {
    /// Reads the files and composes the checks; a bad file is a start error naming its key.
    pub(crate) fn new(
        config: &Config,
        hooks: &Hooks,
        enhanced: Vec<Arc<dyn EnhancedAuthenticator>>,
    ) -> Result<Arc<Security>, StartError> {
        let files = load_files(config.password_file.as_ref(), config.acl_file.as_ref())
            .map_err(|(key, reason)| StartError::Config(ConfigError::Invalid { key, reason }))?;
        let mut policies = HashMap::new();
        let mut listed = vec![(
            "default".to_owned(),
            config.bind,
            ListenerPolicy {
                allow_anonymous: config.anonymous_allowed(None),
                identity_as_username: false,
            },
        )];
        for l in &config.listeners {
            listed.push((
                crate::endpoint::listener_name(l),
                l.bind,
                ListenerPolicy {
                    allow_anonymous: config.anonymous_allowed(Some(l)),
                    identity_as_username: l.use_identity_as_username,
                },
            ));
        }
        for (name, bind, policy) in listed {
            if policy.allow_anonymous && !bind.is_loopback() {
                warn!(listener = %name, %bind, "anonymous clients are allowed on a listener that is not on loopback");
            }
            policies.insert(name, policy);
        }
        let refuses_someone = policies
            .values()
            .any(|p| !p.allow_anonymous || p.identity_as_username);
        Ok(Arc::new(Security {
            password_path: config.password_file.clone(),
            acl_path: config.acl_file.clone(),
            authenticates: refuses_someone
                || files.password.is_some()
                || hooks.authenticator.is_some(),
            hooks: hooks.clone(),
            policies: Arc::new(ListenerAnonymous(policies)),
            enhanced,
            files: ArcSwap::from_pointee(files),
            failure_delay: Duration::from_millis(config.auth_failure_delay_ms),
        }))
    }

    /// The authenticator the cores call on CONNECT, or `None` when every client is let in.
    pub(crate) fn authenticator(self: &Arc<Self>) -> Option<Arc<dyn Authenticator>> {
        self.authenticates
            .then(|| Arc::new(Authn(self.clone())) as Arc<dyn Authenticator>)
    }

    /// The authoriser the cores call on PUBLISH, SUBSCRIBE and delivery, or `None` when every
    /// access is allowed.
    pub(crate) fn authorizer(self: &Arc<Self>) -> Option<Arc<dyn Authorizer>> {
        let any = self.files.load().acl.is_some() || self.hooks.authorizer.is_some();
        any.then(|| Arc::new(Authz(self.clone())) as Arc<dyn Authorizer>)
    }

    /// Re-reads the files; on error the previous ones stay in force.
    pub(crate) fn reload(&self, report: &mut ReloadReport) {
        if self.password_path.is_none() && self.acl_path.is_none() {
            return;
        }
        match load_files(self.password_path.as_ref(), self.acl_path.as_ref()) {
            Ok(files) => {
                self.files.store(Arc::new(files));
                if self.password_path.is_some() {
                    report.reloaded.push("password_file".into());
                }
                if self.acl_path.is_some() {
                    report.reloaded.push("acl_file".into());
                }
            }
            Err((key, reason)) => report.errors.push(format!("{key}: {reason}")),
        }
    }

    fn chain(&self) -> AuthChain {
        let mut steps: Vec<Arc<dyn Authenticator>> = vec![self.policies.clone()];
        if let Some(p) = &self.files.load().password {
            steps.push(p.clone());
        }
        if let Some(h) = &self.hooks.authenticator {
            steps.push(h.clone());
        }
        if steps.len() == 1 {
            // No password file and no hook: any user name is accepted (as Mosquitto does).
            steps.push(Arc::new(AllowAll));
        }
        AuthChain::new(steps)
    }

    fn policy(&self, listener: &str) -> Option<ListenerPolicy> {
        self.policies.0.get(listener).copied()
    }

    fn enhanced(&self, method: &str) -> Option<Arc<dyn EnhancedAuthenticator>> {
        self.enhanced.iter().find(|a| a.method() == method).cloned()
    }
}

/// The composed authenticator: per-listener anonymous policy, password file, hook.
struct Authn(Arc<Security>);

impl Authenticator for Authn {
    fn authenticate(&self, client: &ClientInfo<'_>, password: Option<&[u8]>) -> AuthDecision {
        self.0.chain().authenticate(client, password)
    }

    fn is_blocking(&self) -> bool {
        // Fixed at start: whether a password file is configured does not change on reload.
        self.0.password_path.is_some()
            || self
                .0
                .hooks
                .authenticator
                .as_ref()
                .is_some_and(|h| h.is_blocking())
    }
}

/// The composed authoriser: ACL file first, then the hook.
struct Authz(Arc<Security>);

impl Authorizer for Authz {
    fn authorize(&self, client: &ClientInfo<'_>, access: Access, topic: &str) -> bool {
        let files = self.0.files.load();
        let hook = self.0.hooks.authorizer.as_ref();
        // Deliveries are checked on the core, per message: a blocking hook (a Python callback)
        // is not asked about them, only the ACL file is.
        let hook = hook.filter(|h| access != Access::Receive || !h.is_blocking());
        let mut steps: Vec<Arc<dyn Authorizer>> = Vec::with_capacity(2);
        if let Some(acl) = &files.acl {
            steps.push(acl.clone());
        }
        if let Some(h) = hook {
            steps.push(h.clone());
        }
        match steps.len() {
            // Only a blocking hook is configured and this is a delivery: nothing to check.
            0 => true,
            _ => AuthzChain::new(steps).authorize(client, access, topic),
        }
    }

    fn is_blocking(&self) -> bool {
        self.0
            .hooks
            .authorizer
            .as_ref()
            .is_some_and(|h| h.is_blocking())
    }
}

/// The Authentication Method and Data of a finished enhanced exchange, for CONNACK.
#[derive(Debug, Default)]
pub(crate) struct Granted(Option<(ByteStr, Option<Bytes>)>);

impl Granted {
    /// Puts the method and the server's final data into CONNACK [MQTT-3.2.2-? §3.2.2.3.17].
    pub(crate) fn apply(self, props: &mut ConnAckProperties) {
        if let Some((method, data)) = self.0 {
            props.authentication_method = Some(method);
            props.authentication_data = data;
        }
    }
}

/// An enhanced exchange on a connection that has not been accepted yet.
pub(crate) enum Exchange {
    /// The server sent AUTH 0x18 and waits for the client's AUTH.
    Pending {
        connect: Box<Connect>,
        method: ByteStr,
        state: AuthState,
        authenticator: Arc<dyn EnhancedAuthenticator>,
    },
    /// The exchange succeeded; CONNECT is being completed.
    Done(Granted),
}

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
    core: &Core,
    conn: &Conn,
    c: &mut Connect,
) -> Result<Option<Requested>, CloseReason> {
    if matches!(
        conn.exchange.borrow().as_deref(),
        Some(Exchange::Pending { .. })
    ) {
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
    let Some(authenticator) = core.shared.security.enhanced(method) else {
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

/// Runs `f` on a hook thread when `blocking`, else here; a hook that panicked refuses.
async fn off_core<T: Send + 'static>(
    core: &Core,
    blocking: bool,
    fallback: T,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    if blocking {
        core.shared.hooks.run(f).await.unwrap_or(fallback)
    } else {
        f()
    }
}

/// Authenticates a CONNECT. `Ok(Some)` lets the client in (with what CONNACK must carry),
/// `Ok(None)` means an AUTH exchange is under way, `Err` means refused (CONNACK written).
pub(crate) async fn authenticate(
    core: &Rc<Core>,
    conn: &Rc<Conn>,
    c: &mut Box<Connect>,
    client_id: &str,
    requested: Option<Requested>,
) -> Result<Option<Granted>, CloseReason> {
    let proto = c.protocol;
    if let Some(ex) = conn.exchange.borrow_mut().take() {
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
    if let Some(req) = requested {
        let owned = Owned::new(conn, c, client_id, cert_cn);
        let auth = req.authenticator.clone();
        let data = req.data.clone();
        let blocking = auth.is_blocking();
        let (step, state) = off_core(core, blocking, (AuthStep::Fail, AuthState::none()), {
            move || auth.start(&owned.info(), data.as_deref())
        })
        .await;
        return match step {
            AuthStep::Continue(data) => {
                send_auth(conn, &req.method, data);
                *conn.exchange.borrow_mut() = Some(Box::new(Exchange::Pending {
                    connect: c.clone(),
                    method: req.method,
                    state,
                    authenticator: req.authenticator,
                }));
                Ok(None)
            }
            AuthStep::Success(data) => Ok(Some(Granted(Some((req.method, data.map(Bytes::from)))))),
            AuthStep::Fail => {
                Err(refused(core, conn, proto, DenyReason::NotAuthorized, client_id).await)
            }
        };
    }
    let Some(auth) = core.shared.authenticator.clone() else {
        return Ok(Some(Granted::default()));
    };
    let owned = Owned::new(conn, c, client_id, cert_cn);
    let password = c.password.clone();
    let blocking = auth.is_blocking();
    let decision = off_core(
        core,
        blocking,
        AuthDecision::Deny(DenyReason::ServerUnavailable),
        move || auth.authenticate(&owned.info(), password.as_deref()),
    )
    .await;
    match decision {
        AuthDecision::Allow => Ok(Some(Granted::default())),
        AuthDecision::Deny(why) => Err(refused(core, conn, proto, why, client_id).await),
    }
}

/// Handles an AUTH packet before CONNACK: the next step of the exchange. `Ok(Some(connect))`
/// means it succeeded and the CONNECT can be completed.
pub(crate) async fn on_auth(
    core: &Rc<Core>,
    conn: &Rc<Conn>,
    a: Auth,
) -> Result<Option<Box<Connect>>, CloseReason> {
    let protocol = |why: &str| CloseReason::Protocol(ReasonCode::PROTOCOL_ERROR.0, why.into());
    let ex = conn.exchange.borrow_mut().take();
    let Some(Exchange::Pending {
        connect,
        method,
        mut state,
        authenticator,
    }) = ex.map(|b| *b)
    else {
        return Err(protocol(
            "[MQTT-4.12.0-1] AUTH without an authentication exchange",
        ));
    };
    if a.reason_code != ReasonCode::CONTINUE_AUTHENTICATION {
        return Err(protocol(
            "[MQTT-4.12.0-2] AUTH before CONNACK must continue the exchange (0x18)",
        ));
    }
    if a.properties.authentication_method.as_deref() != Some(method.as_str()) {
        return Err(protocol(
            "[MQTT-4.12.0-5] AUTH must carry the authentication method of CONNECT",
        ));
    }
    let data = a.properties.authentication_data;
    let auth = authenticator.clone();
    let (step, state) = off_core(
        core,
        authenticator.is_blocking(),
        (AuthStep::Fail, AuthState::none()),
        move || {
            let step = auth.step(&mut state, data.as_deref());
            (step, state)
        },
    )
    .await;
    match step {
        AuthStep::Continue(data) => {
            send_auth(conn, &method, data);
            *conn.exchange.borrow_mut() = Some(Box::new(Exchange::Pending {
                connect,
                method,
                state,
                authenticator,
            }));
            Ok(None)
        }
        AuthStep::Success(data) => {
            let granted = Granted(Some((method, data.map(Bytes::from))));
            *conn.exchange.borrow_mut() = Some(Box::new(Exchange::Done(granted)));
            Ok(Some(connect))
        }
        AuthStep::Fail => {
            let id = connect.client_id.to_string();
            Err(refused(core, conn, Protocol::V5, DenyReason::NotAuthorized, &id).await)
        }
    }
}

/// AUTH 0x18 Continue authentication with the method and the server's data.
fn send_auth(conn: &Conn, method: &ByteStr, data: Vec<u8>) {
    let auth = Auth {
        reason_code: ReasonCode::CONTINUE_AUTHENTICATION,
        properties: AuthProperties {
            authentication_method: Some(method.clone()),
            authentication_data: Some(Bytes::from(data)),
            ..Default::default()
        },
    };
    Core::write_out(conn, |out| {
        crate::router::write_packet(out, &Packet::Auth(auth), Protocol::V5)
    });
}

/// A refused client: counted, logged without credentials, delayed against guessing, then
/// answered with the CONNACK code of its protocol version (the encoder maps v5 codes to 3.x).
async fn refused(
    core: &Rc<Core>,
    conn: &Rc<Conn>,
    proto: Protocol,
    why: DenyReason,
    client_id: &str,
) -> CloseReason {
    add(&core.stats().auth_failures, 1);
    info!(client_id, peer = ?conn.peer, listener = %conn.listener, "authentication failed: {why:?}");
    let delay = core.shared.security.failure_delay;
    if !delay.is_zero() {
        monoio::time::sleep(delay).await;
    }
    let code = ReasonCode(why.reason_code());
    refuse(conn, proto, code);
    CloseReason::Refused(code.0)
}

/// What a hook thread needs to build a `ClientInfo` (owned, to cross threads).
struct Owned {
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
            peer: conn.peer,
            cert_cn,
        }
    }

    fn info(&self) -> ClientInfo<'_> {
        let mut info = ClientInfo::new(&self.client_id, self.username.as_deref(), &self.listener);
        info.peer = self.peer;
        info.cert_common_name = self.cert_cn.as_deref();
        info
    }
}

impl Core {
    /// Whether session `s` may receive a message on `topic` (ACL `read`), checked for every
    /// delivery, retained messages and wills included. Always true without an authoriser.
    pub(crate) fn may_receive(&self, s: &Session, topic: &str) -> bool {
        match &self.shared.authorizer {
            None => true,
            Some(a) => {
                let info = ClientInfo::new(&s.client_id, s.username.as_deref(), "");
                a.authorize(&info, Access::Receive, topic)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn security(toml: &str) -> Arc<Security> {
        let config = Config::from_toml_str(toml).unwrap();
        Security::new(&config, &Hooks::default(), Vec::new()).unwrap()
    }

    #[test]
    fn loopback_only_needs_no_authenticator() {
        let s = security("");
        assert!(s.authenticator().is_none());
        assert!(s.authorizer().is_none());
    }

    #[test]
    fn anonymous_is_decided_per_listener() {
        let s = security(
            "[[listener]]\nname = \"lan\"\nbind = \"0.0.0.0\"\nport = 1884\n\
             [[listener]]\nname = \"open\"\nbind = \"0.0.0.0\"\nport = 1885\nallow_anonymous = true\n",
        );
        let a = s
            .authenticator()
            .expect("a non-loopback listener refuses anonymous");
        let anon = |listener| a.authenticate(&ClientInfo::new("c", None, listener), None);
        assert_eq!(anon("lan"), AuthDecision::Deny(DenyReason::NotAuthorized));
        assert_eq!(
            anon("default"),
            AuthDecision::Deny(DenyReason::NotAuthorized)
        );
        assert_eq!(anon("open"), AuthDecision::Allow);
        // Without a password file any named client is let in, as Mosquitto does.
        let named = ClientInfo::new("c", Some("u"), "lan");
        assert_eq!(a.authenticate(&named, None), AuthDecision::Allow);
        assert!(!a.is_blocking());
    }

    #[test]
    fn a_missing_file_is_a_start_error_naming_the_key() {
        let config = Config {
            acl_file: Some("/nonexistent/acl".into()),
            ..Config::default()
        };
        let err = Security::new(&config, &Hooks::default(), Vec::new())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("acl_file"), "{err}");
    }

    #[test]
    fn reload_swaps_the_acl_and_keeps_it_on_error() {
        let dir = std::env::temp_dir().join(format!("uringmq-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let acl = dir.join("acl");
        std::fs::write(&acl, "topic read a/#\n").unwrap();
        let config = Config {
            acl_file: Some(acl.clone()),
            ..Config::default()
        };
        let s = Security::new(&config, &Hooks::default(), Vec::new()).unwrap();
        let z = s.authorizer().unwrap();
        let anon = ClientInfo::new("c", None, "default");
        assert!(z.authorize(&anon, Access::Receive, "a/1"));
        assert!(!z.authorize(&anon, Access::Receive, "b/1"));

        std::fs::write(&acl, "topic read b/#\n").unwrap();
        let mut report = ReloadReport::default();
        s.reload(&mut report);
        assert_eq!(report.reloaded, vec!["acl_file".to_owned()]);
        assert!(!z.authorize(&anon, Access::Receive, "a/1"));
        assert!(z.authorize(&anon, Access::Receive, "b/1"));

        std::fs::write(&acl, "bogus line\n").unwrap();
        let mut report = ReloadReport::default();
        s.reload(&mut report);
        assert_eq!(report.errors.len(), 1, "{report:?}");
        assert!(
            z.authorize(&anon, Access::Receive, "b/1"),
            "previous ACL kept"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
