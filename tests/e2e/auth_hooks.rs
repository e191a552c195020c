//! The embedder's authentication hook over real sockets: it sees every CONNECT, anonymous
//! ones too.

use std::sync::{Arc, Mutex};
use uringmq::Hooks;
use uringmq_auth::{AuthDecision, Authenticator, ClientInfo, DenyReason};
use uringmq_tests::*;

fn login(proto: Protocol, id: &str, user: Option<&str>, password: Option<&str>) -> Connect {
    let mut c = connect_packet(proto, id);
    c.username = user.map(Into::into);
    c.password = password.map(|p| bytes::Bytes::copy_from_slice(p.as_bytes()));
    c
}

fn start(hook: impl Authenticator, f: impl FnOnce(&mut Config)) -> Broker {
    let mut c = config();
    c.auth_failure_delay_ms = 0;
    f(&mut c);
    let hooks = Hooks {
        authenticator: Some(Arc::new(hook)),
        ..Hooks::default()
    };
    Broker::start_with_hooks(c, hooks).expect("broker starts")
}

/// The README's "only alice" hook, recording the user names it was shown. Blocking, as a
/// Python hook is.
struct OnlyAlice(Arc<Mutex<Vec<Option<String>>>>);

impl Authenticator for OnlyAlice {
    fn authenticate(&self, c: &ClientInfo<'_>, password: Option<&[u8]>) -> AuthDecision {
        self.0.lock().unwrap().push(c.username.map(str::to_owned));
        if c.username == Some("alice") && password == Some(b"secret") {
            AuthDecision::Allow
        } else {
            AuthDecision::Deny(DenyReason::BadCredentials)
        }
    }

    fn is_blocking(&self) -> bool {
        true
    }
}

#[test]
fn the_authentication_hook_sees_anonymous_clients_too() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    // Loopback only: the anonymous policy alone would let anonymous clients in.
    let b = start(OnlyAlice(seen.clone()), |_| {});
    for (proto, code) in [
        (Protocol::V5, ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        (Protocol::V3_1_1, ReasonCode::BAD_USER_NAME_OR_PASSWORD),
    ] {
        let (mut c, ack) = Client::connect_with(b.local_addr(), login(proto, "anon", None, None));
        assert_eq!(ack.reason_code, code, "{proto:?}: anonymous is refused");
        assert!(c.closed().0);
    }
    let (_c, ack) = Client::connect_with(
        b.local_addr(),
        login(Protocol::V5, "a", Some("alice"), Some("secret")),
    );
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![None, None, Some("alice".to_owned())],
        "the hook saw every CONNECT"
    );
}
