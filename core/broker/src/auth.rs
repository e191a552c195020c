//! Who may connect and what they may touch, wired into the broker: the anonymous policy per
//! listener, the password file, the ACL file and the embedder's hooks composed into one
//! authenticator (the hook first, for every client, then the password file, then the anonymous
//! policy: see `Security::chain`) and one authoriser (the ACL file first, then the hook); certificate identities as user
//! names; MQTT 5 enhanced authentication (AUTH packets) through `EnhancedAuthenticator`s such
//! as SCRAM-SHA-256; and the refusal path (CONNACK code for the client's version, a short
//! delay against guessing, a counter).
//!
//! A `[[listener]]` may have its own password file and ACL file; each check looks up the files
//! of the client's listener (falling back per key to the global ones).
//!
//! Files are held behind an `ArcSwap`, so SIGHUP swaps in freshly read files without a lock
//! on the per-message path.

use crate::api::{Hooks, StartError};
use crate::config::{Config, ConfigError};
use crate::connection::{refuse, Conn};
use crate::core::{add, CloseReason, Core, Entry, Sink};
use crate::hooks::HookError;
use crate::pending::{Admitted, PendingAuth};
use crate::reload::ReloadReport;
use arc_swap::ArcSwap;
use bytes::Bytes;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};
use uringmq_auth::scram::METHOD as SCRAM_METHOD;
use uringmq_auth::{
    Access, AclFile, AuthDecision, AuthState, AuthStep, Authenticator, Authorizer, ClientInfo,
    DenyReason, EnhancedAuthenticator, JwtError, JwtSettings, JwtVerifier, PasswordFile,
    ScramSha256,
};
use uringmq_codec::ReasonCode;
use uringmq_codec::{Auth, AuthProperties, ByteStr, ConnAckProperties, Connect, Packet, Protocol};

/// Per-listener policy, looked up by listener name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ListenerPolicy {
    allow_anonymous: bool,
    identity_as_username: bool,
    /// SCRAM-SHA-256 from the password file is offered (`scram_sha256`).
    scram: bool,
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

/// The password file, ACL file and JWT keys of one scope: the global keys, or one listener's
/// own.
#[derive(Clone, Default)]
struct FileSet {
    password: Option<Arc<PasswordFile>>,
    acl: Option<Arc<AclFile>>,
    jwt: Option<Arc<JwtVerifier>>,
}

/// The files as last read. A listener that sets `password_file` or `acl_file` gets its own
/// for that key (Mosquitto's `per_listener_settings true`); for a key it leaves unset it uses
/// the global file.
#[derive(Default)]
struct Files {
    global: FileSet,
    /// Only listeners that set at least one of the keys; unset keys are `None` here.
    listeners: HashMap<String, FileSet>,
}

impl Files {
    /// The password file in force on `listener`.
    fn password(&self, listener: &str) -> Option<&Arc<PasswordFile>> {
        let own = self
            .listeners
            .get(listener)
            .and_then(|f| f.password.as_ref());
        own.or(self.global.password.as_ref())
    }

    /// The JWT verifier in force on `listener`.
    fn jwt(&self, listener: &str) -> Option<&Arc<JwtVerifier>> {
        let own = self.listeners.get(listener).and_then(|f| f.jwt.as_ref());
        own.or(self.global.jwt.as_ref())
    }

    /// The ACL in force on `listener`; `Err` when it is unknown: a client with no listener
    /// (an in-process subscription) while some listener has an ACL of its own.
    fn acl(&self, listener: &str) -> Result<Option<&Arc<AclFile>>, ()> {
        if listener == NO_LISTENER && self.listeners.values().any(|f| f.acl.is_some()) {
            return Err(());
        }
        let own = self.listeners.get(listener).and_then(|f| f.acl.as_ref());
        Ok(own.or(self.global.acl.as_ref()))
    }
}

/// `ClientInfo::listener` of a session with no listener (an in-process subscription).
const NO_LISTENER: &str = "";

/// The listener index of a session with no listener: out of range, so it names
/// [`NO_LISTENER`].
pub(crate) const NO_LISTENER_INDEX: u16 = u16::MAX;

/// Where one scope's files come from: the top-level keys (`listener: None`) or a
/// `[[listener]]` table that sets at least one of them.
struct Scope {
    listener: Option<String>,
    password: Option<PathBuf>,
    acl: Option<PathBuf>,
    /// JWT keys and claims, when this scope has settings of its own (and some key file).
    jwt: Option<JwtSettings>,
}

/// What reading the files did.
#[derive(Default)]
struct Outcome {
    /// `acl_file`, or `acl_file (listener lan)`, for each file read.
    read: Vec<String>,
    /// Each file that could not be read: its config key (for `ConfigError::Invalid`) and why,
    /// prefixed with its label.
    failed: Vec<(&'static str, String)>,
}

impl Scope {
    /// How reports name `key` of this scope.
    fn label(&self, key: &str) -> String {
        match &self.listener {
            None => key.to_owned(),
            Some(name) => format!("{key} (listener {name})"),
        }
    }

    /// Reads this scope's files. A file that fails keeps `old`'s version (none at start).
    fn read(&self, old: Option<&FileSet>, outcome: &mut Outcome) -> FileSet {
        let old = old.cloned().unwrap_or_default();
        FileSet {
            password: self.read_one(
                "password_file",
                self.password.as_ref(),
                |p| PasswordFile::load(p),
                old.password,
                outcome,
            ),
            acl: self.read_one(
                "acl_file",
                self.acl.as_ref(),
                |p| AclFile::load(p),
                old.acl,
                outcome,
            ),
            jwt: self.read_jwt(old.jwt, outcome),
        }
    }

    /// Reads the scope's JWT key files (all of them, or none: a failure keeps `old`).
    fn read_jwt(
        &self,
        old: Option<Arc<JwtVerifier>>,
        outcome: &mut Outcome,
    ) -> Option<Arc<JwtVerifier>> {
        let settings = self.jwt.as_ref()?;
        match JwtVerifier::load(settings) {
            Ok(verifier) => {
                outcome.read.push(self.label("jwt keys"));
                Some(Arc::new(verifier))
            }
            Err(e) => {
                let (JwtError::Io { path, .. } | JwtError::Key { path, .. }) = &e;
                let which = [
                    &settings.secret_file,
                    &settings.public_key_file,
                    &settings.jwks_file,
                ]
                .iter()
                .position(|p| p.as_ref() == Some(path))
                .unwrap_or(0);
                const KEYS: [[&str; 3]; 2] = [
                    ["jwt_secret_file", "jwt_public_key_file", "jwt_jwks_file"],
                    [
                        "listener.jwt_secret_file",
                        "listener.jwt_public_key_file",
                        "listener.jwt_jwks_file",
                    ],
                ];
                let key = KEYS[usize::from(self.listener.is_some())][which];
                let why = format!("{}: {e}", self.label(KEYS[0][which]));
                outcome.failed.push((key, why));
                old
            }
        }
    }

    fn read_one<T, E: std::fmt::Display>(
        &self,
        key: &'static str,
        path: Option<&PathBuf>,
        load: impl FnOnce(&PathBuf) -> Result<T, E>,
        old: Option<Arc<T>>,
        outcome: &mut Outcome,
    ) -> Option<Arc<T>> {
        let path = path?;
        match load(path) {
            Ok(file) => {
                outcome.read.push(self.label(key));
                Some(Arc::new(file))
            }
            Err(e) => {
                let config_key = match (key, self.listener.is_some()) {
                    ("password_file", true) => "listener.password_file",
                    ("acl_file", true) => "listener.acl_file",
                    (key, _) => key,
                };
                let why = format!("{}: {e}", self.label(key));
                outcome.failed.push((config_key, why));
                old
            }
        }
    }
}

/// Reads every scope's files (`scopes[0]` is the global one), keeping `old`'s version of each
/// file that fails.
fn read_files(scopes: &[Scope], old: Option<&Files>, outcome: &mut Outcome) -> Files {
    let mut files = Files::default();
    for scope in scopes {
        match &scope.listener {
            None => files.global = scope.read(old.map(|o| &o.global), outcome),
            Some(name) => {
                let set = scope.read(old.and_then(|o| o.listeners.get(name)), outcome);
                files.listeners.insert(name.clone(), set);
            }
        }
    }
    files
}

/// Everything the broker knows about authentication and authorisation.
pub(crate) struct Security {
    /// Where the files come from: the global keys first, then each listener with its own.
    scopes: Vec<Scope>,
    hooks: Hooks,
    policies: Arc<ListenerAnonymous>,
    enhanced: Vec<Arc<dyn EnhancedAuthenticator>>,
    /// SCRAM-SHA-256 over the password files, when some listener offers it.
    scram: Option<Arc<dyn EnhancedAuthenticator>>,
    /// Shared with `scram`, which reads the password files too.
    files: Arc<ArcSwap<Files>>,
    /// Delay before a refusing CONNACK.
    pub(crate) failure_delay: Duration,
    /// Some step can refuse a client: without one, CONNECT skips authentication entirely.
    authenticates: bool,
    /// Some scope has a password file (fixed at start: reloads never add or remove one).
    has_password: bool,
    /// Listener names in configuration order (`default` first), so an offline session keeps
    /// its listener as an index into this list.
    names: Vec<Arc<str>>,
    /// Authentications in progress per listener and per address, and their caps.
    pending: PendingAuth,
}

impl Security {
    /// Reads the files and composes the checks; a bad file is a start error naming its key.
    pub(crate) fn new(
        config: &Config,
        hooks: &Hooks,
        enhanced: Vec<Arc<dyn EnhancedAuthenticator>>,
    ) -> Result<Arc<Security>, StartError> {
        let global_jwt = config.jwt_settings(None);
        let mut scopes = vec![Scope {
            listener: None,
            password: config.password_file.clone(),
            acl: config.acl_file.clone(),
            jwt: global_jwt.enabled().then_some(global_jwt),
        }];
        scopes.extend(config.listeners.iter().filter_map(|l| {
            // Its own JWT settings: its own keys, or the global keys with other claims.
            let own_claims = l.jwt_username_claim.is_some() || l.jwt_acl_claim.is_some();
            let jwt = Some(config.jwt_settings(Some(l)))
                .filter(|s| s.enabled() && (l.has_own_jwt_keys() || own_claims));
            (l.password_file.is_some() || l.acl_file.is_some() || jwt.is_some()).then(|| Scope {
                listener: Some(crate::endpoint::listener_name(l)),
                password: l.password_file.clone(),
                acl: l.acl_file.clone(),
                jwt,
            })
        }));
        let mut outcome = Outcome::default();
        let files = read_files(&scopes, None, &mut outcome);
        if let Some((key, reason)) = outcome.failed.into_iter().next() {
            return Err(StartError::Config(ConfigError::Invalid { key, reason }));
        }
        let has_password = scopes.iter().any(|s| s.password.is_some());
        let mut policies = HashMap::new();
        let mut listed = vec![(
            "default".to_owned(),
            config.bind,
            ListenerPolicy {
                allow_anonymous: config.anonymous_allowed(None),
                identity_as_username: false,
                scram: config.scram_enabled(None),
            },
        )];
        for l in &config.listeners {
            listed.push((
                crate::endpoint::listener_name(l),
                l.bind,
                ListenerPolicy {
                    allow_anonymous: config.anonymous_allowed(Some(l)),
                    identity_as_username: l.use_identity_as_username,
                    scram: config.scram_enabled(Some(l)),
                },
            ));
        }
        for (name, bind, policy) in &listed {
            if policy.allow_anonymous && !bind.is_loopback() {
                warn!(listener = %name, %bind, "anonymous clients are allowed on a listener that is not on loopback");
            }
            if policy.scram && !files.password(name).is_some_and(|f| f.has_scram_entries()) {
                warn!(listener = %name, "scram_sha256 is on but the password file has no SCRAM-SHA-256 entries (add them with `uringmq passwd -H scram-sha-256`)");
            }
            policies.insert(name.clone(), *policy);
        }
        let names: Vec<Arc<str>> = listed
            .iter()
            .map(|(name, ..)| Arc::from(name.as_str()))
            .collect();
        let pending = PendingAuth::new(
            names.iter().map(|n| &**n),
            config.max_pending_auth,
            config.max_pending_auth_per_address,
        );
        let files = Arc::new(ArcSwap::from_pointee(files));
        let scram = listed.iter().any(|(_, _, p)| p.scram).then(|| {
            Arc::new(FileScram {
                files: files.clone(),
                server: ScramSha256::new(),
            }) as Arc<dyn EnhancedAuthenticator>
        });
        let refuses_someone = policies
            .values()
            .any(|p| !p.allow_anonymous || p.identity_as_username)
            || scopes.iter().any(|s| s.jwt.is_some());
        Ok(Arc::new(Security {
            scopes,
            authenticates: refuses_someone || has_password || hooks.authenticator.is_some(),
            has_password,
            names,
            pending,
            hooks: hooks.clone(),
            policies: Arc::new(ListenerAnonymous(policies)),
            enhanced,
            scram,
            files,
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
        let token_acls = |s: &Scope| s.jwt.as_ref().is_some_and(|j| j.acl_claim.is_some());
        let any = self.scopes.iter().any(|s| s.acl.is_some() || token_acls(s))
            || self.hooks.authorizer.is_some();
        any.then(|| Arc::new(Authz(self.clone())) as Arc<dyn Authorizer>)
    }

    /// Re-reads the files; each file that fails keeps its previous version in force.
    pub(crate) fn reload(&self, report: &mut ReloadReport) {
        let mut outcome = Outcome::default();
        let files = read_files(&self.scopes, Some(&self.files.load()), &mut outcome);
        self.files.store(Arc::new(files));
        report.reloaded.extend(outcome.read);
        report
            .errors
            .extend(outcome.failed.into_iter().map(|(_, why)| why));
    }

    /// Decides a CONNECT, in Mosquitto 2's order. The embedder's hook comes first and sees
    /// EVERY client, anonymous ones with user name `None`, as a Mosquitto auth plugin does
    /// ("If an auth_plugin is used as well as password_file, the auth_plugin check will be
    /// made first", mosquitto.conf(5)). Its answer is final, whatever `allow_anonymous` says:
    /// Mosquitto's `mosquitto_unpwd_check` returns a plugin's success or refusal as is, and
    /// applies `allow_anonymous` only when every plugin deferred. A hook with no opinion
    /// (`decide` gives `None`) leaves the client to the password file (named users it lists),
    /// then to the JWT keys (a token-shaped password), then to the anonymous policy (clients
    /// without a user name); a named client nobody knows is refused. With none of hook,
    /// password file and JWT keys on the listener, any user name is accepted (as Mosquitto
    /// does).
    fn check(&self, client: &ClientInfo<'_>, password: Option<&[u8]>) -> Result<Grant, DenyReason> {
        let verdict = |d: AuthDecision| match d {
            AuthDecision::Allow => Ok(Grant::default()),
            AuthDecision::Deny(why) => Err(why),
        };
        let hook = self.hooks.authenticator.as_ref();
        if let Some(d) = hook.and_then(|h| h.decide(client, password)) {
            return verdict(d);
        }
        let files = self.files.load();
        let file = files.password(client.listener);
        if let Some(d) = file.and_then(|f| f.decide(client, password)) {
            return verdict(d);
        }
        let jwt = files.jwt(client.listener);
        if let Some(grant) = jwt.and_then(|j| token_grant(j, client, password)) {
            return grant;
        }
        if let Some(d) = self.policies.decide(client, password) {
            return verdict(d);
        }
        match (hook, file, jwt) {
            (None, None, None) => Ok(Grant::default()),
            _ => Err(DenyReason::BadCredentials),
        }
    }

    /// The index of listener `name` (the first of that name: files and policies are looked
    /// up by name, so listeners sharing one are alike), or [`NO_LISTENER_INDEX`].
    pub(crate) fn listener_index(&self, name: &str) -> u16 {
        self.names
            .iter()
            .position(|n| **n == *name)
            .and_then(|i| u16::try_from(i).ok())
            .unwrap_or(NO_LISTENER_INDEX)
    }

    /// The name of the listener at `index` ([`NO_LISTENER`] when out of range, which every
    /// per-listener ACL check then denies).
    pub(crate) fn listener_name(&self, index: u16) -> &str {
        self.names
            .get(usize::from(index))
            .map_or(NO_LISTENER, |n| n)
    }

    fn policy(&self, listener: &str) -> Option<ListenerPolicy> {
        self.policies.0.get(listener).copied()
    }

    /// The enhanced authenticator for `method` on `listener`: the embedder's (on every
    /// listener) first, then SCRAM-SHA-256 from the config where that listener offers it.
    fn enhanced(&self, method: &str, listener: &str) -> Option<Arc<dyn EnhancedAuthenticator>> {
        let own = self.enhanced.iter().find(|a| a.method() == method);
        own.or_else(|| {
            let offered = method == SCRAM_METHOD && self.policy(listener).is_some_and(|p| p.scram);
            self.scram.as_ref().filter(|_| offered)
        })
        .cloned()
    }
}

/// SCRAM-SHA-256 as the config file sets it up (`scram_sha256`): the users are the
/// `SCRAM-SHA-256$` entries of the password file in force on the client's listener, read at
/// each exchange, so SIGHUP reloads them with the file.
struct FileScram {
    files: Arc<ArcSwap<Files>>,
    /// The exchange logic; its own user table stays empty (its secret keys the fake salts
    /// of unknown users, stable across reloads).
    server: ScramSha256,
}

impl EnhancedAuthenticator for FileScram {
    fn method(&self) -> &str {
        SCRAM_METHOD
    }

    fn start(&self, client: &ClientInfo<'_>, data: Option<&[u8]>) -> (AuthStep, AuthState) {
        // ACL rules and hooks know a client by the CONNECT User Name, so it is required here
        // (and the SCRAM exchange checks it names the SCRAM user): an authenticated client
        // must not fall under the anonymous rules.
        if client.username.is_none() {
            return (AuthStep::Fail, AuthState::none());
        }
        let files = self.files.load();
        let file = files.password(client.listener);
        let users = |user: &str| file.and_then(|f| f.scram_credentials(user).cloned());
        self.server.start_with(&users, client, data)
    }

    fn step(&self, state: &mut AuthState, data: Option<&[u8]>) -> AuthStep {
        self.server.step(state, data)
    }
}

/// What authenticating a CONNECT granted besides "come in": the user name and ACL rules of
/// a JWT.
#[derive(Default)]
pub(crate) struct Grant {
    username: Option<String>,
    acl: Option<Arc<AclFile>>,
}

/// The decision of the JWT keys: none for a password that is not a token.
fn token_grant(
    jwt: &JwtVerifier,
    client: &ClientInfo<'_>,
    password: Option<&[u8]>,
) -> Option<Result<Grant, DenyReason>> {
    let token = password.filter(|p| uringmq_auth::jwt::looks_like_token(p))?;
    let token = std::str::from_utf8(token).ok()?;
    Some(match jwt.verify(client, token) {
        Ok(id) => Ok(Grant {
            username: Some(id.username),
            acl: id.acl.map(Arc::new),
        }),
        Err(why) => {
            info!(client_id = client.client_id, peer = ?client.peer, listener = client.listener, "JWT refused: {why}");
            Err(DenyReason::BadCredentials)
        }
    })
}

/// The composed authenticator (see [`Security::check`]).
struct Authn(Arc<Security>);

impl Authenticator for Authn {
    fn authenticate(&self, client: &ClientInfo<'_>, password: Option<&[u8]>) -> AuthDecision {
        match self.0.check(client, password) {
            Ok(_) => AuthDecision::Allow,
            Err(why) => AuthDecision::Deny(why),
        }
    }

    fn is_blocking(&self) -> bool {
        // Fixed at start: whether a password file is configured does not change on reload.
        self.0.has_password
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
        self.0
            .authorize_unless_blocking(client, access, topic, true)
            .unwrap_or(false)
    }

    fn is_blocking(&self) -> bool {
        self.0
            .hooks
            .authorizer
            .as_ref()
            .is_some_and(|h| h.is_blocking())
    }
}

impl Security {
    /// The composed decision (ACL file or token rules first, then the hook). With
    /// `ask_blocking` false a blocking hook is not called: `None` when only it could decide.
    pub(crate) fn authorize_unless_blocking(
        &self,
        client: &ClientInfo<'_>,
        access: Access,
        topic: &str,
        ask_blocking: bool,
    ) -> Option<bool> {
        let files = self.files.load();
        // The rules of the client's token replace the ACL file for it. Else a client with no
        // listener (an in-process subscription) cannot be matched to a listener's ACL: denied
        // once some listener has an ACL of its own. (An offline persistent session is checked
        // against the listener it last connected through.)
        let acl = match client.acl {
            Some(rules) => Some(rules),
            None => match files.acl(client.listener) {
                Ok(file) => file.map(|f| &**f),
                Err(()) => return Some(false),
            },
        };
        let hook = self.hooks.authorizer.as_ref();
        // Deliveries are checked on the core, per message: a blocking hook (a Python callback)
        // is not asked about them, only the ACL is.
        let hook = hook.filter(|h| access != Access::Receive || !h.is_blocking());
        // The ACL, when one applies, always has an opinion; the hook decides otherwise (no
        // opinion: denied). Neither: nothing to check.
        match (acl, hook) {
            (Some(acl), _) => Some(acl.check(client, access, topic)),
            (None, Some(h)) if h.is_blocking() && !ask_blocking => None,
            (None, Some(h)) => Some(h.decide(client, access, topic).unwrap_or(false)),
            (None, None) => Some(true),
        }
    }
}

/// The outcome of a successful authentication: of an enhanced exchange, the Authentication
/// Method and the server's final data for CONNACK and the authenticator that
/// re-authentication will use; of a JWT, its ACL rules.
#[derive(Default)]
pub(crate) struct Granted {
    exchange: Option<(ByteStr, Option<Bytes>, Arc<dyn EnhancedAuthenticator>)>,
    /// The ACL rules of the client's token, kept with its session.
    acl: Option<Arc<AclFile>>,
}

impl Granted {
    fn new(method: ByteStr, data: Option<Vec<u8>>, auth: Arc<dyn EnhancedAuthenticator>) -> Self {
        Granted {
            exchange: Some((method, data.map(Bytes::from), auth)),
            acl: None,
        }
    }

    /// The ACL rules the session keeps (`Entry::token_acl`).
    pub(crate) fn token_acl(&mut self) -> Option<Arc<AclFile>> {
        self.acl.take()
    }

    /// Puts the method and the server's final data into CONNACK [MQTT-4.12.0-5], and returns
    /// what the connection keeps for re-authentication (none without enhanced auth).
    pub(crate) fn apply(self, props: &mut ConnAckProperties) -> Option<Box<Exchange>> {
        let (method, data, authenticator) = self.exchange?;
        props.authentication_method = Some(method.clone());
        props.authentication_data = data;
        Some(Box::new(Exchange::Established {
            method,
            authenticator,
        }))
    }
}

/// Where a connection's enhanced authentication stands (none for most connections).
pub(crate) enum Exchange {
    /// The server sent AUTH 0x18 and waits for the client's AUTH: before CONNACK (with the
    /// parked CONNECT), or during a re-authentication (`connect` is `None`).
    Pending {
        connect: Option<Box<Connect>>,
        method: ByteStr,
        state: AuthState,
        authenticator: Arc<dyn EnhancedAuthenticator>,
    },
    /// The exchange succeeded; CONNECT is being completed.
    Done(Granted),
    /// Connected with enhanced authentication: the client may re-authenticate with the same
    /// method [MQTT-4.12.1-1].
    Established {
        method: ByteStr,
        authenticator: Arc<dyn EnhancedAuthenticator>,
    },
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
async fn off_core<T: Send + 'static>(
    core: &Core,
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
        warn!(peer = ?conn.peer, listener = %conn.listener, timeout_ms = core.shared.config.hook_timeout_ms, "authentication check timed out (hook_timeout_ms); refusing the client");
    }
    answer
}

/// Counts an authentication in progress for `conn` when it will wait for a hook thread
/// (`blocking`); `Err` (CONNACK written) when its listener or address has too many already.
async fn admit<'a>(
    core: &Rc<Core>,
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
        .admit(&conn.listener, conn.peer.map(|p| p.ip()))
    {
        Ok(admitted) => Ok(Some(admitted)),
        Err(full) => {
            let what = match full {
                crate::pending::Full::Listener => "too many authentications in progress on its listener (max_pending_auth)",
                crate::pending::Full::Address => "too many authentications in progress from its address (max_pending_auth_per_address)",
            };
            Err(busy(core, conn, proto, full.reason_code(), what, client_id).await)
        }
    }
}

/// A check that gave no answer: the pool was saturated (0x89 Server busy) or the check timed
/// out or failed (0x88 Server unavailable). Either way the client is refused (fail closed).
async fn no_answer(
    core: &Rc<Core>,
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
async fn busy(
    core: &Rc<Core>,
    conn: &Rc<Conn>,
    proto: Protocol,
    code: ReasonCode,
    what: &str,
    client_id: &str,
) -> CloseReason {
    add(&core.stats().auth_busy, 1);
    info!(client_id, peer = ?conn.peer, listener = %conn.listener, "authentication refused: {what}");
    answer_refusal(core, conn, proto, code).await
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
        let _pending = admit(core, conn, &security, blocking, (proto, client_id)).await?;
        let answer = off_core(core, conn, blocking, {
            move || auth.start(&owned.info(), data.as_deref())
        })
        .await;
        let (step, state) = match answer {
            Ok(started) => started,
            Err(e) => return Err(no_answer(core, conn, proto, e, client_id).await),
        };
        return match step {
            AuthStep::Continue(data) => {
                send_auth(
                    conn,
                    ReasonCode::CONTINUE_AUTHENTICATION,
                    &req.method,
                    Some(data),
                );
                *conn.exchange.borrow_mut() = Some(Box::new(Exchange::Pending {
                    connect: Some(c.clone()),
                    method: req.method,
                    state,
                    authenticator: req.authenticator,
                }));
                Ok(None)
            }
            AuthStep::Success(data) => Ok(Some(Granted::new(req.method, data, req.authenticator))),
            AuthStep::Fail => {
                Err(refused(core, conn, proto, DenyReason::NotAuthorized, client_id).await)
            }
        };
    }
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

/// The identity of session `e` on `listener` for an authorisation check, with the ACL rules
/// of its token, if any.
pub(crate) fn session_info<'a>(e: &'a Entry, listener: &'a str) -> ClientInfo<'a> {
    let mut info = ClientInfo::new(&e.s.client_id, e.s.username.as_deref(), listener);
    info.acl = e.token_acl.as_deref();
    info
}

/// Handles an AUTH packet: the next step of the exchange before CONNACK, or a
/// re-authentication (0x19, then its steps) after it [MQTT-4.12.1-1]. `Ok(Some(connect))`
/// means the exchange before CONNACK succeeded and the CONNECT can be completed.
pub(crate) async fn on_auth(
    core: &Rc<Core>,
    conn: &Rc<Conn>,
    a: Auth,
) -> Result<Option<Box<Connect>>, CloseReason> {
    let protocol = |why: &str| CloseReason::Protocol(ReasonCode::PROTOCOL_ERROR.0, why.into());
    let same_method = |m: &ByteStr| a.properties.authentication_method.as_deref() == Some(m);
    let data = a.properties.authentication_data.clone();
    let ex = conn.exchange.borrow_mut().take();
    let (connect, method, authenticator, step, state) = match ex.map(|b| *b) {
        Some(Exchange::Pending {
            connect,
            method,
            mut state,
            authenticator,
        }) => {
            if a.reason_code != ReasonCode::CONTINUE_AUTHENTICATION {
                return Err(protocol(
                    "[MQTT-4.12.0-3] AUTH answering the server's AUTH must continue the exchange (0x18)",
                ));
            }
            if !same_method(&method) {
                return Err(protocol(
                    "[MQTT-4.12.0-5] AUTH must carry the authentication method of CONNECT",
                ));
            }
            let auth = authenticator.clone();
            let answer = off_core(core, conn, authenticator.is_blocking(), move || {
                let step = auth.step(&mut state, data.as_deref());
                (step, state)
            })
            .await;
            let (step, state) = answer.unwrap_or((AuthStep::Fail, AuthState::none()));
            (connect, method, authenticator, step, state)
        }
        Some(Exchange::Established {
            method,
            authenticator,
        }) => {
            if a.reason_code != ReasonCode::RE_AUTHENTICATE {
                return Err(protocol(
                    "[MQTT-4.12.1-1] AUTH after CONNACK must start a re-authentication (0x19)",
                ));
            }
            if !same_method(&method) {
                return Err(protocol(
                    "[MQTT-4.12.1-1] re-authentication must use the authentication method of CONNECT",
                ));
            }
            // The exchange starts over, as for CONNECT, with the session's identity.
            let owned = Owned::connected(core, conn);
            let auth = authenticator.clone();
            let answer = off_core(core, conn, authenticator.is_blocking(), move || {
                auth.start(&owned.info(), data.as_deref())
            })
            .await;
            let (step, state) = answer.unwrap_or((AuthStep::Fail, AuthState::none()));
            (None, method, authenticator, step, state)
        }
        _ => {
            return Err(protocol(
                "[MQTT-4.12.0-7] AUTH on a connection that did not authenticate with an authentication method",
            ))
        }
    };
    match step {
        AuthStep::Continue(data) => {
            send_auth(
                conn,
                ReasonCode::CONTINUE_AUTHENTICATION,
                &method,
                Some(data),
            );
            *conn.exchange.borrow_mut() = Some(Box::new(Exchange::Pending {
                connect,
                method,
                state,
                authenticator,
            }));
            Ok(None)
        }
        AuthStep::Success(data) => match connect {
            Some(connect) => {
                let granted = Granted::new(method, data, authenticator);
                *conn.exchange.borrow_mut() = Some(Box::new(Exchange::Done(granted)));
                Ok(Some(connect))
            }
            None => {
                // Re-authenticated: AUTH 0x00 Success, and the client may do it again.
                send_auth(conn, ReasonCode::SUCCESS, &method, data);
                *conn.exchange.borrow_mut() = Some(Box::new(Exchange::Established {
                    method,
                    authenticator,
                }));
                Ok(None)
            }
        },
        AuthStep::Fail => match connect {
            Some(connect) => {
                let id = connect.client_id.to_string();
                Err(refused(core, conn, Protocol::V5, DenyReason::NotAuthorized, &id).await)
            }
            None => Err(reauth_failed(core, conn).await),
        },
    }
}

/// A failed re-authentication: counted, logged, delayed like a refused CONNECT, then the
/// connection ends with DISCONNECT 0x87 Not authorized [MQTT-4.12.1-2].
async fn reauth_failed(core: &Rc<Core>, conn: &Rc<Conn>) -> CloseReason {
    add(&core.stats().auth_failures, 1);
    let client_id = conn.client_id.borrow().clone();
    info!(client_id = ?client_id.as_deref(), peer = ?conn.peer, listener = %conn.listener, "re-authentication failed");
    let delay = core.shared.security.failure_delay;
    if !delay.is_zero() {
        monoio::time::sleep(delay).await;
    }
    CloseReason::Protocol(
        ReasonCode::NOT_AUTHORIZED.0,
        "[MQTT-4.12.1-2] re-authentication failed".into(),
    )
}

/// AUTH with a reason code, the method and the server's data [MQTT-4.12.0-5].
fn send_auth(conn: &Conn, reason_code: ReasonCode, method: &ByteStr, data: Option<Vec<u8>>) {
    let auth = Auth {
        reason_code,
        properties: AuthProperties {
            authentication_method: Some(method.clone()),
            authentication_data: data.map(Bytes::from),
            ..Default::default()
        },
    };
    conn.send_packet(&Packet::Auth(auth));
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
    answer_refusal(core, conn, proto, ReasonCode(why.reason_code())).await
}

/// The refusing CONNACK, after the failure delay.
async fn answer_refusal(
    core: &Rc<Core>,
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

    /// The identity of a connected client, from its session.
    fn connected(core: &Core, conn: &Conn) -> Self {
        let st = core.st.borrow();
        let session = conn.session().and_then(|key| st.sessions.get(&key));
        Owned {
            client_id: session
                .map(|e| e.s.client_id.to_string())
                .unwrap_or_default(),
            username: session.and_then(|e| e.s.username.as_deref().map(str::to_owned)),
            listener: conn.listener.to_string(),
            peer: conn.peer,
            cert_cn: conn
                .transport
                .borrow()
                .peer_identity()
                .and_then(|i| i.common_name),
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
    /// Whether session `e` may receive a message on `topic` (ACL `read` of the listener its
    /// client is connected to), checked for every delivery, retained messages and wills
    /// included. Always true without an authoriser.
    pub(crate) fn may_receive(&self, e: &Entry, topic: &str) -> bool {
        match &self.shared.authorizer {
            None => true,
            Some(a) => {
                let listener = match &e.sink {
                    Sink::Conn(conn) => &*conn.listener,
                    // Offline: the listener it last connected through, as Mosquitto keeps a
                    // disconnected client's listener for its per-listener settings.
                    Sink::Offline(l) => self.shared.security.listener_name(*l),
                    Sink::Api(_) => NO_LISTENER,
                };
                a.authorize(&session_info(e, listener), Access::Receive, topic)
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
    fn a_missing_jwt_key_file_is_a_start_error_naming_its_key() {
        for (toml, key) in [
            (
                "jwt_public_key_file = \"/nonexistent/k.pem\"\n",
                "`jwt_public_key_file`",
            ),
            (
                "[[listener]]\nname = \"l\"\nport = 0\njwt_jwks_file = \"/nonexistent/jwks\"\n",
                "`listener.jwt_jwks_file`",
            ),
        ] {
            let config = Config::from_toml_str(toml).unwrap();
            let err = Security::new(&config, &Hooks::default(), Vec::new())
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains(key) && err.contains("/nonexistent/"), "{err}");
        }
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

    /// A scratch directory with these files in it.
    fn files(tag: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("uringmq-auth-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        dir
    }

    fn listener_with(name: &str, password: Option<PathBuf>, acl: Option<PathBuf>) -> String {
        let key = |k: &str, p: Option<PathBuf>| {
            p.map(|p| format!("{k} = {:?}\n", p.display().to_string()))
                .unwrap_or_default()
        };
        format!(
            "[[listener]]\nname = \"{name}\"\nport = 0\n{}{}",
            key("password_file", password),
            key("acl_file", acl)
        )
    }

    #[test]
    fn listeners_with_files_of_their_own_use_them_per_key() {
        let dir = files(
            "per-listener",
            &[
                ("acl-a", "user alice\ntopic readwrite a/#\n"),
                ("acl-g", "user alice\ntopic read g/#\n"),
            ],
        );
        let s = security(&format!(
            "acl_file = {:?}\n{}{}",
            dir.join("acl-g").display().to_string(),
            listener_with("a", None, Some(dir.join("acl-a"))),
            listener_with("b", None, None),
        ));
        let z = s.authorizer().unwrap();
        let alice = |listener| ClientInfo::new("c", Some("alice"), listener);
        // Listener a: its own ACL only.
        assert!(z.authorize(&alice("a"), Access::Publish, "a/1"));
        assert!(!z.authorize(&alice("a"), Access::Receive, "g/1"));
        // Listener b and the default one: the global ACL.
        for l in ["b", "default"] {
            assert!(!z.authorize(&alice(l), Access::Publish, "a/1"), "{l}");
            assert!(z.authorize(&alice(l), Access::Receive, "g/1"), "{l}");
        }
        // No listener (an in-process subscription): unknown ACL, denied.
        assert!(!z.authorize(&alice(NO_LISTENER), Access::Receive, "g/1"));
        // Offline sessions keep their listener as an index.
        for l in ["default", "a", "b"] {
            assert_eq!(s.listener_name(s.listener_index(l)), l);
        }
        assert_eq!(s.listener_index("gone"), NO_LISTENER_INDEX);
        assert_eq!(s.listener_name(NO_LISTENER_INDEX), NO_LISTENER);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_listener_password_file_replaces_the_global_one_on_that_listener_only() {
        let dir = files("per-listener-pw", &[]);
        let (a, b) = (dir.join("passwd-a"), dir.join("passwd-b"));
        for (path, user) in [(&a, "alice"), (&b, "bob")] {
            let mut f = PasswordFile::default();
            f.set(user, b"pw", uringmq_auth::Scheme::Pbkdf2Sha512)
                .unwrap();
            f.save_to(path).unwrap();
        }
        let s = security(&format!(
            "auth_failure_delay_ms = 0\n{}{}",
            listener_with("a", Some(a), None),
            listener_with("b", Some(b.clone()), None),
        ));
        let authn = s.authenticator().unwrap();
        assert!(authn.is_blocking(), "password hashes run off the cores");
        let login = |user, listener| {
            authn.authenticate(&ClientInfo::new("c", Some(user), listener), Some(b"pw"))
        };
        assert_eq!(login("alice", "a"), AuthDecision::Allow);
        assert_eq!(login("bob", "b"), AuthDecision::Allow);
        let refused = AuthDecision::Deny(DenyReason::BadCredentials);
        assert_eq!(login("alice", "b"), refused);
        assert_eq!(login("bob", "a"), refused);
        // No global password file: the default listener lets any named user in.
        assert_eq!(login("carol", "default"), AuthDecision::Allow);

        // A bad file on reload keeps the previous one and names the listener.
        std::fs::write(&b, "bob:not-a-hash\n").unwrap();
        let mut report = ReloadReport::default();
        s.reload(&mut report);
        assert_eq!(
            report.reloaded,
            vec!["password_file (listener a)".to_owned()]
        );
        assert_eq!(report.errors.len(), 1, "{report:?}");
        assert!(
            report.errors[0].starts_with("password_file (listener b)"),
            "{report:?}"
        );
        assert_eq!(login("bob", "b"), AuthDecision::Allow, "previous file kept");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The whole SCRAM-SHA-256 exchange against `a`; true if it succeeds and the client
    /// verifies the server.
    fn scram_login(a: &dyn EnhancedAuthenticator, info: &ClientInfo<'_>, pw: &[u8]) -> bool {
        let mut client = uringmq_auth::ScramClient::new("sam", pw);
        let (step, mut state) = a.start(info, Some(&client.client_first()));
        let AuthStep::Continue(server_first) = step else {
            return false;
        };
        let Ok(fin) = client.client_final(&server_first) else {
            return false;
        };
        match a.step(&mut state, Some(&fin)) {
            AuthStep::Success(Some(v)) => client.verify_server_final(&v).is_ok(),
            _ => false,
        }
    }

    #[test]
    fn scram_from_the_password_file_is_offered_per_listener_and_reloaded() {
        let dir = files("scram", &[]);
        let passwd = dir.join("passwd");
        let mut f = PasswordFile::default();
        f.set("sam", b"pencil", uringmq_auth::Scheme::ScramSha256)
            .unwrap();
        f.save_to(&passwd).unwrap();
        let s = security(&format!(
            "password_file = {:?}\n[[listener]]\nname = \"s\"\nport = 0\nscram_sha256 = true\n",
            passwd.display().to_string()
        ));
        assert!(s.enhanced(SCRAM_METHOD, "default").is_none(), "not offered");
        assert!(s.enhanced("OTHER", "s").is_none());
        let a = s.enhanced(SCRAM_METHOD, "s").expect("offered on s");
        let sam = ClientInfo::new("c", Some("sam"), "s");
        assert!(scram_login(&*a, &sam, b"pencil"));
        assert!(!scram_login(&*a, &sam, b"wrong"));
        // The User Name is required (ACLs are keyed by it) and must name the SCRAM user.
        assert!(!scram_login(
            &*a,
            &ClientInfo::new("c", None, "s"),
            b"pencil"
        ));
        assert!(!scram_login(
            &*a,
            &ClientInfo::new("c", Some("bob"), "s"),
            b"pencil"
        ));
        // The entry also checks a plain CONNECT password.
        let plain = s.authenticator().unwrap();
        assert_eq!(
            plain.authenticate(&sam, Some(b"pencil")),
            AuthDecision::Allow
        );

        // SIGHUP: the new file's keys apply to the next exchange.
        f.set("sam", b"crayon", uringmq_auth::Scheme::ScramSha256)
            .unwrap();
        f.save_to(&passwd).unwrap();
        s.reload(&mut ReloadReport::default());
        assert!(!scram_login(&*a, &sam, b"pencil"));
        assert!(scram_login(&*a, &sam, b"crayon"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_listener_file_is_a_start_error_naming_the_key_and_listener() {
        let config =
            Config::from_toml_str(&listener_with("lan", None, Some("/nonexistent/acl".into())))
                .unwrap();
        let err = Security::new(&config, &Hooks::default(), Vec::new())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("listener.acl_file")
                && err.contains("lan")
                && err.contains("/nonexistent/acl"),
            "{err}"
        );
    }
}
