//! Authentication and authorisation for uringmq: the hook traits the broker calls, a
//! Mosquitto-compatible password file and ACL file, JWT verification, and MQTT 5 enhanced
//! authentication (SCRAM-SHA-256).
//!
//! Pure: apart from reading (and, for `passwd`, atomically rewriting) files, nothing here does
//! I/O, spawns threads or knows about the runtime, so every rule is unit-tested in place.
#![warn(missing_docs)]

pub mod acl;
pub mod hook;
pub mod jwt;
pub mod passwd;
pub mod password_file;
pub mod scram;

pub use acl::{AclError, AclFile};
pub use hook::{
    Access, AllowAll, AnonymousPolicy, AuthChain, AuthDecision, AuthState, AuthStep, Authenticator,
    Authorizer, AuthzChain, ChallengeTestAuthenticator, ClientInfo, DenyReason,
    EnhancedAuthenticator,
};
pub use jwt::{JwtError, JwtSettings, JwtVerifier, TokenIdentity, TokenRejected};
pub use passwd::{PasswdArgs, PasswdError, PasswdOutcome};
pub use password_file::{PasswordFile, PasswordFileError, Scheme, UnknownScheme, Verification};
pub use scram::{ScramClient, ScramCredentials, ScramSha256};

/// `"<path>: "` for error messages about a line of a file, or nothing for text that came from
/// no file.
pub(crate) fn path_prefix(path: Option<&std::path::Path>) -> String {
    path.map(|p| format!("{}: ", p.display()))
        .unwrap_or_default()
}
