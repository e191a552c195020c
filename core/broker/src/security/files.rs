//! The password, JWT key and ACL files, global and per listener, read at start and on reload
//! (a file that fails keeps its previous version).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use uringmq_auth::{AclFile, JwtError, JwtSettings, JwtVerifier, PasswordFile};

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
pub(super) struct Files {
    global: FileSet,
    /// Only listeners that set at least one of the keys; unset keys are `None` here.
    listeners: HashMap<String, FileSet>,
}

impl Files {
    /// The password file in force on `listener`.
    pub(super) fn password(&self, listener: &str) -> Option<&Arc<PasswordFile>> {
        let own = self
            .listeners
            .get(listener)
            .and_then(|f| f.password.as_ref());
        own.or(self.global.password.as_ref())
    }

    /// The JWT verifier in force on `listener`.
    pub(super) fn jwt(&self, listener: &str) -> Option<&Arc<JwtVerifier>> {
        let own = self.listeners.get(listener).and_then(|f| f.jwt.as_ref());
        own.or(self.global.jwt.as_ref())
    }

    /// The ACL in force on `listener`; `Err` when it is unknown: a client with no listener
    /// (an in-process subscription) while some listener has an ACL of its own.
    pub(super) fn acl(&self, listener: &str) -> Result<Option<&Arc<AclFile>>, ()> {
        if listener == NO_LISTENER && self.listeners.values().any(|f| f.acl.is_some()) {
            return Err(());
        }
        let own = self.listeners.get(listener).and_then(|f| f.acl.as_ref());
        Ok(own.or(self.global.acl.as_ref()))
    }
}

/// `ClientInfo::listener` of a session with no listener (an in-process subscription).
pub(crate) const NO_LISTENER: &str = "";

/// The listener index of a session with no listener: out of range, so it names
/// [`NO_LISTENER`].
pub(crate) const NO_LISTENER_INDEX: u16 = u16::MAX;

/// Where one scope's files come from: the top-level keys (`listener: None`) or a
/// `[[listener]]` table that sets at least one of them.
pub(super) struct Scope {
    pub(super) listener: Option<String>,
    pub(super) password: Option<PathBuf>,
    pub(super) acl: Option<PathBuf>,
    /// JWT keys and claims, when this scope has settings of its own (and some key file).
    pub(super) jwt: Option<JwtSettings>,
}

/// What reading the files did.
#[derive(Default)]
pub(super) struct Outcome {
    /// `acl_file`, or `acl_file (listener lan)`, for each file read.
    pub(super) read: Vec<String>,
    /// Each file that could not be read: its config key (for `ConfigError::Invalid`) and why,
    /// prefixed with its label.
    pub(super) failed: Vec<(&'static str, String)>,
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
pub(super) fn read_files(scopes: &[Scope], old: Option<&Files>, outcome: &mut Outcome) -> Files {
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
