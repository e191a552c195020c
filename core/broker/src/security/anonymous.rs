//! The anonymous policy per listener.

use std::collections::HashMap;
use uringmq_auth::{AuthDecision, Authenticator, ClientInfo, DenyReason};

/// Per-listener policy, looked up by listener name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ListenerPolicy {
    pub(super) allow_anonymous: bool,
    pub(crate) identity_as_username: bool,
    /// SCRAM-SHA-256 from the password file is offered (`scram_sha256`).
    pub(super) scram: bool,
}

/// Anonymous clients are decided per listener (Mosquitto's per-listener `allow_anonymous`);
/// clients with a user name are left to the next step.
pub(super) struct ListenerAnonymous(pub(super) HashMap<String, ListenerPolicy>);

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
