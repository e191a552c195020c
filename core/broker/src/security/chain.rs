//! `Security`: the listener policies, files and enhanced authenticators composed into one
//! authenticator and one authoriser (see the folder's doc for the order).

use super::anonymous::{ListenerAnonymous, ListenerPolicy};
use super::files::{read_files, Files, Outcome, Scope, NO_LISTENER, NO_LISTENER_INDEX};
use super::scram::FileScram;
use crate::api::{Hooks, ReloadReport, StartError};
use crate::config::{Config, ConfigError};
use crate::security::PendingAuth;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};
use uringmq_auth::scram::METHOD as SCRAM_METHOD;
use uringmq_auth::{
    Access, AclFile, AuthDecision, Authenticator, Authorizer, ClientInfo, DenyReason,
    EnhancedAuthenticator, JwtVerifier, ScramSha256,
};

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
    pub(crate) pending: PendingAuth,
}

impl Security {
    /// Reads the files and composes the checks; a bad file is a start error naming its key.
    pub(crate) fn new(
        config: &Config,
        hooks: &Hooks,
        enhanced: Vec<Arc<dyn EnhancedAuthenticator>>,
    ) -> Result<Arc<Security>, StartError> {
        let scopes = scopes(config);
        let mut outcome = Outcome::default();
        let files = read_files(&scopes, None, &mut outcome);
        if let Some((key, reason)) = outcome.failed.into_iter().next() {
            return Err(StartError::Config(ConfigError::Invalid { key, reason }));
        }
        let has_password = scopes.iter().any(|s| s.password.is_some());
        let listed = listener_policies(config);
        let mut policies = HashMap::new();
        for (name, bind, policy) in &listed {
            warn_about_policy(name, *bind, policy, &files);
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
    pub(crate) fn check(
        &self,
        client: &ClientInfo<'_>,
        password: Option<&[u8]>,
    ) -> Result<Grant, DenyReason> {
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

    pub(crate) fn policy(&self, listener: &str) -> Option<ListenerPolicy> {
        self.policies.0.get(listener).copied()
    }

    /// The enhanced authenticator for `method` on `listener`: the embedder's (on every
    /// listener) first, then SCRAM-SHA-256 from the config where that listener offers it.
    pub(crate) fn enhanced(
        &self,
        method: &str,
        listener: &str,
    ) -> Option<Arc<dyn EnhancedAuthenticator>> {
        let own = self.enhanced.iter().find(|a| a.method() == method);
        own.or_else(|| {
            let offered = method == SCRAM_METHOD && self.policy(listener).is_some_and(|p| p.scram);
            self.scram.as_ref().filter(|_| offered)
        })
        .cloned()
    }
}

/// What authenticating a CONNECT granted besides "come in": the user name and ACL rules of
/// a JWT.
#[derive(Default)]
pub(crate) struct Grant {
    pub(crate) username: Option<String>,
    pub(crate) acl: Option<Arc<AclFile>>,
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

/// The files to read: the global ones, then each listener's own (password file, ACL file,
/// JWT keys or claims of its own).
fn scopes(config: &Config) -> Vec<Scope> {
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
            listener: Some(crate::config::listener_name(l)),
            password: l.password_file.clone(),
            acl: l.acl_file.clone(),
            jwt,
        })
    }));
    scopes
}

/// Every listener's name, address and anonymous/identity/SCRAM policy, `default` first.
fn listener_policies(config: &Config) -> Vec<(String, IpAddr, ListenerPolicy)> {
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
            crate::config::listener_name(l),
            l.bind,
            ListenerPolicy {
                allow_anonymous: config.anonymous_allowed(Some(l)),
                identity_as_username: l.use_identity_as_username,
                scram: config.scram_enabled(Some(l)),
            },
        ));
    }
    listed
}

/// Start-up warnings for a listener policy that is legal but rarely what the user meant.
fn warn_about_policy(name: &str, bind: IpAddr, policy: &ListenerPolicy, files: &Files) {
    if policy.allow_anonymous && !bind.is_loopback() {
        warn!(listener = %name, %bind, "anonymous clients are allowed on a listener that is not on loopback");
    }
    if policy.scram && !files.password(name).is_some_and(|f| f.has_scram_entries()) {
        warn!(listener = %name, "scram_sha256 is on but the password file has no SCRAM-SHA-256 entries (add them with `uringmq passwd -H scram-sha-256`)");
    }
}
