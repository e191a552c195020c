//! The traits the broker calls to authenticate a client and to authorise each topic access, and
//! small combinators over them.
//!
//! Everything here is object safe and `Send + Sync + 'static`, so the broker holds
//! `Arc<dyn Authenticator>` / `Arc<dyn Authorizer>` and the Python bindings plug their hooks into
//! the same slots. A hook that may block (a Python callback, a database) says so through
//! `is_blocking`, and the broker then calls it on a helper thread instead of a core: one core
//! waiting on the GIL would stall every connection it serves.

use std::any::Any;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::acl::AclFile;

/// Who is asking: what the broker knows about a connection when it calls a hook.
///
/// Borrowed, so the broker can build one per check without allocating.
#[derive(Clone, Copy, Debug)]
pub struct ClientInfo<'a> {
    /// The client identifier (the one the server assigned, if the client sent an empty one).
    pub client_id: &'a str,
    /// The user name from CONNECT, if any (or the certificate identity, when the listener is
    /// configured to use it as the user name, as Mosquitto's `use_identity_as_username` does).
    pub username: Option<&'a str>,
    /// The remote address; `None` for in-process clients.
    pub peer: Option<SocketAddr>,
    /// The name of the listener the client connected through, so hooks can apply per-listener
    /// policy.
    pub listener: &'a str,
    /// The Common Name of a verified TLS client certificate, if any.
    pub cert_common_name: Option<&'a str>,
    /// ACL rules granted by the client's credentials (the ACL claim of its JWT), if any: the
    /// broker checks them instead of the ACL file for this client.
    pub acl: Option<&'a AclFile>,
}

// By value, and the rules by identity (they are per connection).
impl PartialEq for ClientInfo<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.client_id == other.client_id
            && self.username == other.username
            && self.peer == other.peer
            && self.listener == other.listener
            && self.cert_common_name == other.cert_common_name
            && match (self.acl, other.acl) {
                (Some(a), Some(b)) => std::ptr::eq(a, b),
                (a, b) => a.is_none() && b.is_none(),
            }
    }
}

impl Eq for ClientInfo<'_> {}

impl<'a> ClientInfo<'a> {
    /// A client with only an id, a user name and a listener name: the common case in tests and
    /// for in-process sessions.
    pub fn new(client_id: &'a str, username: Option<&'a str>, listener: &'a str) -> Self {
        Self {
            client_id,
            username,
            peer: None,
            listener,
            cert_common_name: None,
            acl: None,
        }
    }
}

/// Why a connection is refused. Each maps to one CONNACK reason code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// Unknown user or wrong password: CONNACK 0x86 (v5) / 4 (v3.1.1).
    BadCredentials,
    /// Credentials may be fine but this client may not connect (e.g. anonymous clients are not
    /// allowed): CONNACK 0x87 (v5) / 5 (v3.1.1).
    NotAuthorized,
    /// The client is banned: CONNACK 0x8A (v5) / 5 (v3.1.1).
    Banned,
    /// The MQTT 5 authentication method is not supported: CONNACK 0x8C (v5) / 5 (v3.1.1).
    BadAuthenticationMethod,
    /// The hook could not decide (its backend is down): CONNACK 0x88 (v5) / 3 (v3.1.1).
    ServerUnavailable,
}

impl DenyReason {
    /// The MQTT 5.0 CONNACK reason code byte (MQTT 5.0 section 3.2.2.2). For an MQTT 3.1.1
    /// client, map it with `uringmq_codec::ReasonCode::to_v3_connack`.
    pub const fn reason_code(self) -> u8 {
        match self {
            DenyReason::BadCredentials => 0x86,
            DenyReason::NotAuthorized => 0x87,
            DenyReason::Banned => 0x8A,
            DenyReason::BadAuthenticationMethod => 0x8C,
            DenyReason::ServerUnavailable => 0x88,
        }
    }
}

/// The answer to "may this client connect?".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthDecision {
    /// Let the client in.
    Allow,
    /// Refuse the connection with this reason.
    Deny(DenyReason),
}

/// Decides whether a client may connect, from its identity and the password in CONNECT.
pub trait Authenticator: Send + Sync + 'static {
    /// The final decision for this client. `password` is the CONNECT password field as sent
    /// (binary data in MQTT 5; it may be present without a user name there).
    fn authenticate(&self, client: &ClientInfo<'_>, password: Option<&[u8]>) -> AuthDecision;

    /// The decision when this authenticator is one step of an [`AuthChain`]: `None` means "no
    /// opinion, ask the next step" (a password file does not know the user, a hook declines).
    /// The default always has an opinion.
    fn decide(&self, client: &ClientInfo<'_>, password: Option<&[u8]>) -> Option<AuthDecision> {
        Some(self.authenticate(client, password))
    }

    /// true if this may block (e.g. a Python callback) or burn milliseconds of CPU (a
    /// deliberately slow password hash): the broker then calls it on a helper thread, never on
    /// a core.
    fn is_blocking(&self) -> bool {
        false
    }
}

/// The kind of topic access being checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// The client publishes to a topic name (ACL `write`).
    Publish,
    /// The client subscribes with a topic filter (ACL `read`, checked filter against filter).
    Subscribe,
    /// A message on a topic name is about to be delivered to the client, including retained
    /// messages and wills (ACL `read`).
    Receive,
}

/// Decides whether a client may publish to, subscribe to, or receive from a topic.
pub trait Authorizer: Send + Sync + 'static {
    /// true if `client` may perform `access` on `topic_or_filter` (a topic name for
    /// [`Access::Publish`] and [`Access::Receive`], a topic filter for [`Access::Subscribe`]).
    fn authorize(&self, client: &ClientInfo<'_>, access: Access, topic_or_filter: &str) -> bool;

    /// The decision when this authoriser is one step of an [`AuthzChain`]: `None` means "no
    /// opinion, ask the next step". The default always has an opinion.
    fn decide(
        &self,
        client: &ClientInfo<'_>,
        access: Access,
        topic_or_filter: &str,
    ) -> Option<bool> {
        Some(self.authorize(client, access, topic_or_filter))
    }

    /// true if this may block (e.g. a Python callback): the broker then calls it on a helper
    /// thread, never on a core.
    fn is_blocking(&self) -> bool {
        false
    }
}

/// Lets every client connect and allows every access: the broker's behaviour when no security
/// is configured (like Mosquitto 1.x's default; Mosquitto 2.x only allows it on localhost).
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

impl Authenticator for AllowAll {
    fn authenticate(&self, _: &ClientInfo<'_>, _: Option<&[u8]>) -> AuthDecision {
        AuthDecision::Allow
    }
}

impl Authorizer for AllowAll {
    fn authorize(&self, _: &ClientInfo<'_>, _: Access, _: &str) -> bool {
        true
    }
}

/// Decides for clients without a user name only, like Mosquitto's `allow_anonymous`, and has no
/// opinion about the others: put it first in an [`AuthChain`].
#[derive(Clone, Copy, Debug)]
pub struct AnonymousPolicy {
    /// Whether clients that send no user name may connect.
    pub allow_anonymous: bool,
}

impl Authenticator for AnonymousPolicy {
    fn authenticate(&self, client: &ClientInfo<'_>, password: Option<&[u8]>) -> AuthDecision {
        // Standing alone, a named client gets through: this policy only restricts anonymity.
        self.decide(client, password).unwrap_or(AuthDecision::Allow)
    }

    fn decide(&self, client: &ClientInfo<'_>, _: Option<&[u8]>) -> Option<AuthDecision> {
        match (client.username, self.allow_anonymous) {
            (Some(_), _) => None,
            (None, true) => Some(AuthDecision::Allow),
            // Mosquitto answers an anonymous client with "not authorised" (v3.1.1 code 5).
            (None, false) => Some(AuthDecision::Deny(DenyReason::NotAuthorized)),
        }
    }
}

/// Asks each authenticator in turn; the first with an opinion decides. If none has one, the
/// client is refused with `fallback` (by default [`DenyReason::BadCredentials`], which is what
/// Mosquitto answers for a user missing from its password file).
///
/// A typical chain: `AnonymousPolicy`, then a password file, then a Python hook for the users the
/// file does not list.
#[derive(Clone)]
pub struct AuthChain {
    steps: Vec<Arc<dyn Authenticator>>,
    fallback: DenyReason,
}

impl AuthChain {
    /// A chain of these steps, tried in order.
    pub fn new(steps: Vec<Arc<dyn Authenticator>>) -> Self {
        Self {
            steps,
            fallback: DenyReason::BadCredentials,
        }
    }

    /// Appends a step.
    pub fn then(mut self, step: Arc<dyn Authenticator>) -> Self {
        self.steps.push(step);
        self
    }

    /// The reason given when no step has an opinion.
    pub fn with_fallback(mut self, fallback: DenyReason) -> Self {
        self.fallback = fallback;
        self
    }
}

impl fmt::Debug for AuthChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthChain")
            .field("steps", &self.steps.len())
            .field("fallback", &self.fallback)
            .finish()
    }
}

impl Authenticator for AuthChain {
    fn authenticate(&self, client: &ClientInfo<'_>, password: Option<&[u8]>) -> AuthDecision {
        self.decide(client, password)
            .unwrap_or(AuthDecision::Deny(self.fallback))
    }

    fn decide(&self, client: &ClientInfo<'_>, password: Option<&[u8]>) -> Option<AuthDecision> {
        self.steps.iter().find_map(|s| s.decide(client, password))
    }

    fn is_blocking(&self) -> bool {
        self.steps.iter().any(|s| s.is_blocking())
    }
}

/// Asks each authoriser in turn; the first with an opinion decides; if none has one, access is
/// denied (deny by default once any authorisation is configured, as Mosquitto does with an ACL).
#[derive(Clone)]
pub struct AuthzChain {
    steps: Vec<Arc<dyn Authorizer>>,
}

impl AuthzChain {
    /// A chain of these steps, tried in order.
    pub fn new(steps: Vec<Arc<dyn Authorizer>>) -> Self {
        Self { steps }
    }

    /// Appends a step.
    pub fn then(mut self, step: Arc<dyn Authorizer>) -> Self {
        self.steps.push(step);
        self
    }
}

impl fmt::Debug for AuthzChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthzChain")
            .field("steps", &self.steps.len())
            .finish()
    }
}

impl Authorizer for AuthzChain {
    fn authorize(&self, client: &ClientInfo<'_>, access: Access, topic: &str) -> bool {
        self.decide(client, access, topic).unwrap_or(false)
    }

    fn decide(&self, client: &ClientInfo<'_>, access: Access, topic: &str) -> Option<bool> {
        self.steps
            .iter()
            .find_map(|s| s.decide(client, access, topic))
    }

    fn is_blocking(&self) -> bool {
        self.steps.iter().any(|s| s.is_blocking())
    }
}

// Shared and boxed hooks are hooks themselves, so `Arc<dyn Authenticator>` can be passed where a
// generic `A: Authenticator` is expected (and chains can nest).
macro_rules! forward_pointer {
    ($($ptr:ident),*) => {$(
        impl<T: Authenticator + ?Sized> Authenticator for $ptr<T> {
            fn authenticate(&self, c: &ClientInfo<'_>, p: Option<&[u8]>) -> AuthDecision {
                (**self).authenticate(c, p)
            }
            fn decide(&self, c: &ClientInfo<'_>, p: Option<&[u8]>) -> Option<AuthDecision> {
                (**self).decide(c, p)
            }
            fn is_blocking(&self) -> bool {
                (**self).is_blocking()
            }
        }

        impl<T: Authorizer + ?Sized> Authorizer for $ptr<T> {
            fn authorize(&self, c: &ClientInfo<'_>, a: Access, t: &str) -> bool {
                (**self).authorize(c, a, t)
            }
            fn decide(&self, c: &ClientInfo<'_>, a: Access, t: &str) -> Option<bool> {
                (**self).decide(c, a, t)
            }
            fn is_blocking(&self) -> bool {
                (**self).is_blocking()
            }
        }
    )*};
}

forward_pointer!(Arc, Box);

/// One step of an MQTT 5 enhanced authentication exchange (MQTT 5.0 section 4.12).
#[derive(Clone, PartialEq, Eq)]
pub enum AuthStep {
    /// Send AUTH with reason 0x18 (Continue authentication) and this Authentication Data, then
    /// wait for the client's next AUTH.
    Continue(Vec<u8>),
    /// Authentication succeeded: send CONNACK (or, on re-authentication, AUTH 0x00) carrying
    /// this Authentication Data, if any.
    Success(Option<Vec<u8>>),
    /// Authentication failed: answer CONNACK 0x87 (Not authorized), or on re-authentication
    /// DISCONNECT 0x87 and close the connection [MQTT-4.12.1-2].
    Fail,
}

// Authentication data may be secret (a token, a proof): Debug shows only sizes.
impl fmt::Debug for AuthStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthStep::Continue(d) => write!(f, "Continue({} bytes)", d.len()),
            AuthStep::Success(d) => write!(f, "Success({:?} bytes)", d.as_ref().map(Vec::len)),
            AuthStep::Fail => f.write_str("Fail"),
        }
    }
}

/// The state an enhanced authenticator keeps between AUTH packets of one exchange. The broker
/// stores it with the connection and hands it back; only the authenticator looks inside.
pub struct AuthState(Box<dyn Any + Send>);

impl AuthState {
    /// Wraps an authenticator's own state.
    pub fn new<T: Any + Send>(state: T) -> Self {
        Self(Box::new(state))
    }

    /// No state (a one-step method).
    pub fn none() -> Self {
        Self::new(())
    }

    /// The authenticator's own state, if it is of type `T`.
    pub fn downcast_mut<T: Any + Send>(&mut self) -> Option<&mut T> {
        self.0.downcast_mut()
    }
}

impl fmt::Debug for AuthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthState(..)")
    }
}

/// An MQTT 5 enhanced authentication method (CONNECT/AUTH with an Authentication Method
/// property, MQTT 5.0 section 4.12), such as SCRAM-SHA-256.
pub trait EnhancedAuthenticator: Send + Sync + 'static {
    /// The Authentication Method name this authenticator handles (e.g. `SCRAM-SHA-256`).
    fn method(&self) -> &str;

    /// Begins an exchange with the Authentication Data from CONNECT (or from an AUTH 0x19
    /// re-authentication). Returns the first step and the state to pass to [`Self::step`].
    fn start(&self, client: &ClientInfo<'_>, data: Option<&[u8]>) -> (AuthStep, AuthState);

    /// Continues an exchange with the Authentication Data of the client's next AUTH packet.
    fn step(&self, state: &mut AuthState, data: Option<&[u8]>) -> AuthStep;

    /// true if this may block: the broker then calls it on a helper thread, never on a core.
    fn is_blocking(&self) -> bool {
        false
    }
}

/// A trivial two-step challenge/response method, for testing the broker's AUTH packet flow:
/// the server answers the first AUTH data with the challenge `b"challenge"` (a `Continue`), and
/// succeeds if the client's next data equals the configured secret. CONNECT may carry no data,
/// empty data or `hello` to ask for the challenge, or the secret itself to finish in one step. Not for production: the secret
/// travels in clear.
#[derive(Clone)]
pub struct ChallengeTestAuthenticator {
    method: String,
    secret: Vec<u8>,
}

impl ChallengeTestAuthenticator {
    /// The challenge sent in the server's Continue step.
    pub const CHALLENGE: &'static [u8] = b"challenge";

    /// A method named `method` that accepts `secret`.
    pub fn new(method: impl Into<String>, secret: impl Into<Vec<u8>>) -> Self {
        Self {
            method: method.into(),
            secret: secret.into(),
        }
    }

    fn check(&self, data: Option<&[u8]>) -> AuthStep {
        use subtle::ConstantTimeEq;
        match data {
            Some(d) if bool::from(d.ct_eq(&self.secret)) => AuthStep::Success(None),
            _ => AuthStep::Fail,
        }
    }
}

impl fmt::Debug for ChallengeTestAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChallengeTestAuthenticator")
            .field("method", &self.method)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Where a [`ChallengeTestAuthenticator`] exchange stands.
#[derive(Debug, PartialEq, Eq)]
enum ChallengeState {
    AwaitingResponse,
    Done,
}

impl EnhancedAuthenticator for ChallengeTestAuthenticator {
    fn method(&self) -> &str {
        &self.method
    }

    fn start(&self, _: &ClientInfo<'_>, data: Option<&[u8]>) -> (AuthStep, AuthState) {
        match data {
            // Anything but nothing, empty data or `hello` is an attempt at the secret itself.
            Some(d) if !d.is_empty() && d != b"hello" => {
                (self.check(data), AuthState::new(ChallengeState::Done))
            }
            _ => (
                AuthStep::Continue(Self::CHALLENGE.to_vec()),
                AuthState::new(ChallengeState::AwaitingResponse),
            ),
        }
    }

    fn step(&self, state: &mut AuthState, data: Option<&[u8]>) -> AuthStep {
        match state.downcast_mut::<ChallengeState>() {
            Some(s) if *s == ChallengeState::AwaitingResponse => {
                *s = ChallengeState::Done;
                self.check(data)
            }
            // A step after the exchange ended (or with foreign state) is a protocol error on the
            // broker's side; fail closed.
            _ => AuthStep::Fail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Option<AuthDecision>, bool);
    impl Authenticator for Fixed {
        fn authenticate(&self, c: &ClientInfo<'_>, p: Option<&[u8]>) -> AuthDecision {
            self.decide(c, p)
                .unwrap_or(AuthDecision::Deny(DenyReason::ServerUnavailable))
        }
        fn decide(&self, _: &ClientInfo<'_>, _: Option<&[u8]>) -> Option<AuthDecision> {
            self.0
        }
        fn is_blocking(&self) -> bool {
            self.1
        }
    }

    struct TopicPrefix(&'static str);
    impl Authorizer for TopicPrefix {
        fn authorize(&self, c: &ClientInfo<'_>, a: Access, t: &str) -> bool {
            self.decide(c, a, t).unwrap_or(false)
        }
        fn decide(&self, _: &ClientInfo<'_>, _: Access, t: &str) -> Option<bool> {
            t.starts_with(self.0).then_some(true)
        }
    }

    const ANON: ClientInfo<'static> = ClientInfo {
        client_id: "c1",
        username: None,
        peer: None,
        listener: "tcp:1883",
        cert_common_name: None,
        acl: None,
    };

    fn named() -> ClientInfo<'static> {
        ClientInfo::new("c2", Some("bob"), "tcp:1883")
    }

    #[test]
    fn anonymous_policy_decides_only_for_anonymous_clients() {
        let deny = AnonymousPolicy {
            allow_anonymous: false,
        };
        let allow = AnonymousPolicy {
            allow_anonymous: true,
        };
        assert_eq!(
            deny.authenticate(&ANON, None),
            AuthDecision::Deny(DenyReason::NotAuthorized)
        );
        assert_eq!(allow.authenticate(&ANON, None), AuthDecision::Allow);
        assert_eq!(deny.decide(&named(), Some(b"x")), None);
        assert_eq!(deny.authenticate(&named(), Some(b"x")), AuthDecision::Allow);
    }

    #[test]
    fn chain_takes_first_opinion_and_falls_back() {
        let chain = AuthChain::new(vec![
            Arc::new(AnonymousPolicy {
                allow_anonymous: false,
            }),
            Arc::new(Fixed(None, false)),
            Arc::new(Fixed(Some(AuthDecision::Allow), true)),
        ]);
        assert_eq!(
            chain.authenticate(&ANON, None),
            AuthDecision::Deny(DenyReason::NotAuthorized)
        );
        assert_eq!(chain.authenticate(&named(), None), AuthDecision::Allow);
        assert!(chain.is_blocking());

        let empty =
            AuthChain::new(vec![Arc::new(Fixed(None, false))]).with_fallback(DenyReason::Banned);
        assert_eq!(
            empty.authenticate(&named(), None),
            AuthDecision::Deny(DenyReason::Banned)
        );
        assert!(!empty.is_blocking());
        // Nested behind an Arc<dyn _>, the chain still defers.
        let shared: Arc<dyn Authenticator> = Arc::new(empty);
        assert_eq!(shared.decide(&named(), None), None);
    }

    #[test]
    fn authz_chain_denies_by_default() {
        let chain =
            AuthzChain::new(vec![Arc::new(TopicPrefix("a/"))]).then(Arc::new(TopicPrefix("b/")));
        assert!(chain.authorize(&ANON, Access::Publish, "a/x"));
        assert!(chain.authorize(&ANON, Access::Receive, "b/x"));
        assert!(!chain.authorize(&ANON, Access::Subscribe, "c/#"));
        let all: Box<dyn Authorizer> = Box::new(AllowAll);
        assert!(all.authorize(&ANON, Access::Subscribe, "#"));
    }

    #[test]
    fn deny_reasons_map_to_connack_codes() {
        assert_eq!(DenyReason::BadCredentials.reason_code(), 0x86);
        assert_eq!(DenyReason::NotAuthorized.reason_code(), 0x87);
        assert_eq!(DenyReason::Banned.reason_code(), 0x8A);
        assert_eq!(DenyReason::BadAuthenticationMethod.reason_code(), 0x8C);
        assert_eq!(DenyReason::ServerUnavailable.reason_code(), 0x88);
    }

    #[test]
    fn challenge_authenticator_round_trip() {
        let a = ChallengeTestAuthenticator::new("test", b"s3cret".to_vec());
        assert_eq!(a.method(), "test");
        let (step, mut state) = a.start(&ANON, None);
        assert_eq!(step, AuthStep::Continue(b"challenge".to_vec()));
        assert_eq!(a.step(&mut state, Some(b"s3cret")), AuthStep::Success(None));
        // The exchange is over: another step fails.
        assert_eq!(a.step(&mut state, Some(b"s3cret")), AuthStep::Fail);

        let (_, mut state) = a.start(&ANON, Some(b"hello"));
        assert_eq!(a.step(&mut state, Some(b"wrong")), AuthStep::Fail);
        // One step: the secret in CONNECT.
        assert_eq!(a.start(&ANON, Some(b"s3cret")).0, AuthStep::Success(None));
        assert_eq!(a.start(&ANON, Some(b"nope")).0, AuthStep::Fail);
        // Foreign state fails closed.
        assert_eq!(
            a.step(&mut AuthState::none(), Some(b"s3cret")),
            AuthStep::Fail
        );
        assert!(!format!("{a:?}").contains("s3cret"));
    }
}
