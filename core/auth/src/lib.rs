//! Authentication and authorisation for uringmq: the hook traits the broker calls, a
//! Mosquitto-compatible password file and ACL file, and MQTT 5 enhanced authentication
//! (SCRAM-SHA-256).
//!
//! Pure: apart from reading (and, for `passwd`, atomically rewriting) files, nothing here does
//! I/O, spawns threads or knows about the runtime, so every rule is unit-tested in place.
#![warn(missing_docs)]

pub mod hook;
pub mod password_file;

pub use hook::{
    Access, AllowAll, AnonymousPolicy, AuthChain, AuthDecision, AuthState, AuthStep, Authenticator,
    Authorizer, AuthzChain, ChallengeTestAuthenticator, ClientInfo, DenyReason,
    EnhancedAuthenticator,
};
pub use password_file::{PasswordFile, PasswordFileError, Scheme, Verification};
