//! SCRAM-SHA-256 over the password file's `SCRAM-SHA-256$` entries.

use super::files::Files;
use arc_swap::ArcSwap;
use std::sync::Arc;
use uringmq_auth::scram::METHOD as SCRAM_METHOD;
use uringmq_auth::{AuthState, AuthStep, ClientInfo, EnhancedAuthenticator, ScramSha256};

/// SCRAM-SHA-256 as the config file sets it up (`scram_sha256`): the users are the
/// `SCRAM-SHA-256$` entries of the password file in force on the client's listener, read at
/// each exchange, so SIGHUP reloads them with the file.
pub(super) struct FileScram {
    pub(super) files: Arc<ArcSwap<Files>>,
    /// The exchange logic; its own user table stays empty (its secret keys the fake salts
    /// of unknown users, stable across reloads).
    pub(super) server: ScramSha256,
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
