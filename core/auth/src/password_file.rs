//! Mosquitto-compatible password files: one `username:hash` per line.
//!
//! Why Mosquitto's format: users migrating from Mosquitto keep their `password_file` and their
//! `mosquitto_passwd` habits. Hashes read here:
//!
//! - `$7$<iterations>$<base64 salt>$<base64 hash>`: PBKDF2-HMAC-SHA512 with a 64-byte output,
//!   what `mosquitto_passwd` 2.x writes by default (it uses 101 iterations and a 12-byte salt);
//! - `$6$<base64 salt>$<base64 hash>`: SHA-512 over the password followed by the salt, what
//!   Mosquitto 1.6 and earlier wrote (`mosquitto_passwd -H sha512` still does);
//! - `$argon2id$v=19$m=..,t=..,p=..$<salt>$<hash>`: an Argon2id PHC string, our default for new
//!   entries (Mosquitto 2.0 cannot read these; use [`Scheme::Pbkdf2Sha512`] for files Mosquitto
//!   must also read);
//! - `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`: SCRAM-SHA-256 stored keys
//!   (RFC 5803's form), what MQTT 5 enhanced authentication with SCRAM-SHA-256 needs (the
//!   server never sees the password there); such an entry also checks a plain CONNECT
//!   password. Mosquitto cannot read these either.
//!
//! Parsing is stricter than Mosquitto's, which skips or drops bad lines with a log message: any
//! malformed line is an error naming its line number, because a silently dropped user is a
//! confusing outage and a silently dropped duplicate is a confusing security hole. Comment lines
//! (`#` first) and blank lines are kept, so rewriting a file changes only the edited entries.
//!
//! Passwords and hashes never appear in `Debug` output or error messages.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::hook::{AuthDecision, Authenticator, ClientInfo, DenyReason};
use crate::path_prefix;
use crate::scram::ScramCredentials;

/// PBKDF2 iterations for new `$7$` entries (Mosquitto reads any count). Mosquitto writes 101,
/// cheap to brute-force. OWASP's 210,000 costs a broker ~0.1-0.2 s of CPU per CONNECT on this
/// project's machines, which a reconnect storm cannot afford; 20,000 costs about what our
/// argon2id default does (see `examples/auth_costs.rs`).
pub const PBKDF2_ITERATIONS: u32 = 20_000;

/// Salt length of `$6$` and `$7$` entries: Mosquitto 2.x refuses any other length.
const MOSQUITTO_SALT_LEN: usize = 12;

/// SHA-512 output length, the only hash length Mosquitto accepts.
const SHA512_LEN: usize = 64;

/// Standard base64 as OpenSSL's BIO writes it; reading also accepts missing padding.
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// How to hash a new or changed password.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Scheme {
    /// Argon2id with the `argon2` crate's defaults (19 MiB, 2 passes, 1 lane: OWASP's
    /// recommendation). Not readable by Mosquitto 2.0.
    #[default]
    Argon2id,
    /// Mosquitto 2.x's `$7$` PBKDF2-HMAC-SHA512, with [`PBKDF2_ITERATIONS`] iterations.
    Pbkdf2Sha512,
    /// SCRAM-SHA-256 stored keys (RFC 5803 form, [`crate::scram::DEFAULT_ITERATIONS`]), for
    /// MQTT 5 enhanced authentication; also verifies plain passwords.
    ScramSha256,
}

impl Scheme {
    /// The name `-H` takes: `argon2id`, or Mosquitto's `sha512-pbkdf2`.
    pub const fn name(self) -> &'static str {
        match self {
            Scheme::Argon2id => "argon2id",
            Scheme::Pbkdf2Sha512 => "sha512-pbkdf2",
            Scheme::ScramSha256 => "scram-sha-256",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown hash scheme name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown hash {0:?} (expected argon2id, sha512-pbkdf2 or scram-sha-256; we do not write Mosquitto's weak sha512)")]
pub struct UnknownScheme(pub String);

impl std::str::FromStr for Scheme {
    type Err = UnknownScheme;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "argon2id" => Ok(Scheme::Argon2id),
            "sha512-pbkdf2" | "pbkdf2" => Ok(Scheme::Pbkdf2Sha512),
            "scram-sha-256" | "scram-sha256" => Ok(Scheme::ScramSha256),
            other => Err(UnknownScheme(other.to_owned())),
        }
    }
}

/// The outcome of checking a password against the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verification {
    /// The user is listed and the password is right.
    Match,
    /// The user is listed and the password is wrong.
    Mismatch,
    /// The user is not listed.
    UnknownUser,
}

/// What is wrong with one line of a password file.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LineError {
    /// No `:` between user name and hash.
    #[error("expected `username:hash`, found no ':'")]
    MissingColon,
    /// Nothing before the `:`.
    #[error("empty user name")]
    EmptyUsername,
    /// The user appears twice.
    #[error("user {user:?} is listed again (first on line {first_line})")]
    Duplicate {
        /// The repeated user name.
        user: String,
        /// Where it first appeared.
        first_line: usize,
    },
    /// The hash field cannot be used.
    #[error("unusable password hash for user {user:?}: {why}")]
    BadHash {
        /// Whose entry it is (the hash itself is never shown).
        user: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// Errors reading, changing or writing a password file.
#[derive(Debug, Error)]
pub enum PasswordFileError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A line is malformed.
    #[error("{}line {line}: {kind}", path_prefix(path.as_deref()))]
    Parse {
        /// The file, when the text came from one.
        path: Option<PathBuf>,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        kind: LineError,
    },
    /// A user name that cannot be stored in the format.
    #[error("invalid user name: {0}")]
    InvalidUsername(&'static str),
    /// The file has no path to save to.
    #[error("this password file has no path; use save_to")]
    NoPath,
    /// The random source or the hasher failed.
    #[error("hashing failed: {0}")]
    Hashing(String),
}

/// A parsed, verifiable password hash. Its `Debug` never shows the salt or hash.
#[derive(Clone)]
enum StoredHash {
    /// `$6$`: SHA-512(password || salt).
    Sha512 {
        salt: Vec<u8>,
        digest: [u8; SHA512_LEN],
    },
    /// `$7$`: PBKDF2-HMAC-SHA512(password, salt, iterations), 64 bytes.
    Pbkdf2Sha512 {
        iterations: u32,
        salt: Vec<u8>,
        digest: [u8; SHA512_LEN],
    },
    /// `$argon2id$...`: a PHC string, validated at parse time.
    Argon2id(String),
    /// `SCRAM-SHA-256$...`: SCRAM stored keys.
    Scram(ScramCredentials),
}

impl StoredHash {
    fn parse(text: &str) -> Result<Self, &'static str> {
        if text.starts_with("$argon2id$") {
            let phc = PasswordHash::new(text).map_err(|_| "malformed argon2id PHC string")?;
            if phc.hash.is_none() || phc.salt.is_none() {
                return Err("argon2id PHC string has no salt or hash");
            }
            return Ok(StoredHash::Argon2id(text.to_owned()));
        }
        if text.starts_with("SCRAM-SHA-256$") {
            return ScramCredentials::parse(text).map(StoredHash::Scram);
        }
        let mut fields = text.split('$');
        if fields.next() != Some("") {
            return Err("not a hash (plain-text passwords are not accepted; hash the file with `uringmq passwd`)");
        }
        let scheme = fields.next().ok_or("missing scheme")?;
        let iterations = match scheme {
            "6" => None,
            "7" => {
                let it = fields.next().ok_or("missing iteration count")?;
                match it.parse::<u32>() {
                    Ok(n) if n >= 1 => Some(n),
                    _ => return Err("iteration count is not a positive integer"),
                }
            }
            _ => return Err("unknown scheme (expected $6$, $7$, $argon2id$ or SCRAM-SHA-256$)"),
        };
        let salt = B64
            .decode(fields.next().ok_or("missing salt")?)
            .map_err(|_| "salt is not base64")?;
        // Mosquitto 2.x only accepts 12-byte salts; older generators used other lengths, which
        // verify just as well, so we only refuse an empty one.
        if salt.is_empty() {
            return Err("empty salt");
        }
        let digest: [u8; SHA512_LEN] = B64
            .decode(fields.next().ok_or("missing hash")?)
            .map_err(|_| "hash is not base64")?
            .try_into()
            .map_err(|_| "hash is not 64 bytes")?;
        if fields.next().is_some() {
            return Err("unexpected '$' field after the hash");
        }
        Ok(match iterations {
            None => StoredHash::Sha512 { salt, digest },
            Some(iterations) => StoredHash::Pbkdf2Sha512 {
                iterations,
                salt,
                digest,
            },
        })
    }

    fn new(password: &[u8], scheme: Scheme) -> Result<(Self, String), PasswordFileError> {
        match scheme {
            Scheme::Argon2id => {
                let salt_bytes: [u8; 16] = random_bytes()?;
                let salt = SaltString::encode_b64(&salt_bytes)
                    .map_err(|e| PasswordFileError::Hashing(e.to_string()))?;
                let phc = Argon2::default()
                    .hash_password(password, &salt)
                    .map_err(|e| PasswordFileError::Hashing(e.to_string()))?
                    .to_string();
                Ok((StoredHash::Argon2id(phc.clone()), phc))
            }
            Scheme::Pbkdf2Sha512 => {
                let salt: [u8; MOSQUITTO_SALT_LEN] = random_bytes()?;
                let mut digest = [0u8; SHA512_LEN];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, &salt, PBKDF2_ITERATIONS, &mut digest);
                let text = format!(
                    "$7${}${}${}",
                    PBKDF2_ITERATIONS,
                    B64.encode(salt),
                    B64.encode(digest)
                );
                let hash = StoredHash::Pbkdf2Sha512 {
                    iterations: PBKDF2_ITERATIONS,
                    salt: salt.to_vec(),
                    digest,
                };
                Ok((hash, text))
            }
            Scheme::ScramSha256 => {
                let salt: [u8; 16] = random_bytes()?;
                let c = ScramCredentials::from_password(
                    password,
                    &salt,
                    crate::scram::DEFAULT_ITERATIONS,
                );
                let text = c.encode();
                Ok((StoredHash::Scram(c), text))
            }
        }
    }

    fn verify(&self, password: &[u8]) -> bool {
        match self {
            StoredHash::Sha512 { salt, digest } => {
                let mut h = Sha512::new();
                h.update(password);
                h.update(salt);
                bool::from(h.finalize().as_slice().ct_eq(digest))
            }
            StoredHash::Pbkdf2Sha512 {
                iterations,
                salt,
                digest,
            } => {
                let mut out = [0u8; SHA512_LEN];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut out);
                bool::from(out.ct_eq(digest))
            }
            // The argon2 crate compares in constant time.
            StoredHash::Argon2id(phc) => PasswordHash::new(phc)
                .map(|h| Argon2::default().verify_password(password, &h).is_ok())
                .unwrap_or(false),
            StoredHash::Scram(c) => c.verify_password(password),
        }
    }

    /// A hash of the same scheme and cost as `self` that no password matches: verifying
    /// against it takes as long as verifying against `self`.
    fn dummy_like(&self) -> Self {
        match self {
            StoredHash::Sha512 { salt, .. } => StoredHash::Sha512 {
                salt: salt.clone(),
                digest: [0; SHA512_LEN],
            },
            StoredHash::Pbkdf2Sha512 {
                iterations, salt, ..
            } => StoredHash::Pbkdf2Sha512 {
                iterations: *iterations,
                salt: salt.clone(),
                digest: [0; SHA512_LEN],
            },
            // Same parameters (m, t, p), salt and output length; an all-zero hash ('A' is a
            // zero sextet in base64, so the field keeps its length and decodes).
            StoredHash::Argon2id(phc) => {
                let (params, hash) = phc.rsplit_once('$').unwrap_or((phc, ""));
                StoredHash::Argon2id(format!("{params}${}", "A".repeat(hash.len())))
            }
            StoredHash::Scram(c) => StoredHash::Scram(c.dummy_like()),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            StoredHash::Sha512 { .. } => "sha512",
            StoredHash::Pbkdf2Sha512 { .. } => "sha512-pbkdf2",
            StoredHash::Argon2id(_) => "argon2id",
            StoredHash::Scram(_) => "scram-sha-256",
        }
    }
}

impl fmt::Debug for StoredHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(<redacted>)", self.kind())
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], PasswordFileError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| PasswordFileError::Hashing(e.to_string()))?;
    Ok(buf)
}

/// One user's entry, with the hash text as read so that saving does not rewrite it.
#[derive(Clone)]
struct Entry {
    user: String,
    encoded: String,
    hash: StoredHash,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `encoded` is the hash: never shown.
        f.debug_struct("Entry")
            .field("user", &self.user)
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

/// A line of the file: a user entry, or a comment/blank line kept verbatim.
#[derive(Clone, Debug)]
enum Line {
    Entry(Entry),
    Other(String),
}

/// A Mosquitto-compatible password file, loaded into memory.
///
/// As an [`Authenticator`], it allows a listed user with the right password, refuses a listed
/// user with a wrong or missing password ([`DenyReason::BadCredentials`]), and refuses an
/// unknown or anonymous client the same way; in an `AuthChain` it has no opinion about
/// anonymous clients and users it does not list, so a later step can decide for them.
#[derive(Clone, Default)]
pub struct PasswordFile {
    path: Option<PathBuf>,
    lines: Vec<Line>,
    /// User name -> index into `lines`.
    index: HashMap<String, usize>,
    /// Verified against when the user is unknown, so that an unknown user costs as much time
    /// as a wrong password and user names cannot be enumerated by timing. Shaped like the
    /// file's most common kind of entry; `None` while the file is empty.
    dummy: Option<StoredHash>,
}

impl fmt::Debug for PasswordFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordFile")
            .field("path", &self.path)
            .field("users", &self.index.len())
            .finish_non_exhaustive()
    }
}

impl PasswordFile {
    /// An empty file with no path (save it with [`Self::save_to`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads and parses the file at `path`; [`Self::save`] writes back to it.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, PasswordFileError> {
        let path = path.as_ref();
        let text = fs::read_to_string(path).map_err(|source| PasswordFileError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut file = Self::parse(&text).map_err(|e| match e {
            PasswordFileError::Parse { line, kind, .. } => PasswordFileError::Parse {
                path: Some(path.to_owned()),
                line,
                kind,
            },
            other => other,
        })?;
        file.path = Some(path.to_owned());
        Ok(file)
    }

    /// Parses the text of a password file.
    pub fn parse(text: &str) -> Result<Self, PasswordFileError> {
        let mut file = Self::new();
        let mut first_line: HashMap<String, usize> = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let err = |kind| PasswordFileError::Parse {
                path: None,
                line: line_no,
                kind,
            };
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                file.lines.push(Line::Other(raw.trim_end().to_owned()));
                continue;
            }
            let (user, hash_text) = trimmed
                .split_once(':')
                .ok_or(err(LineError::MissingColon))?;
            // Mosquitto trims blanks around both fields.
            let (user, hash_text) = (user.trim(), hash_text.trim());
            if user.is_empty() {
                return Err(err(LineError::EmptyUsername));
            }
            if let Some(&first) = first_line.get(user) {
                return Err(err(LineError::Duplicate {
                    user: user.to_owned(),
                    first_line: first,
                }));
            }
            let hash = StoredHash::parse(hash_text).map_err(|why| {
                err(LineError::BadHash {
                    user: user.to_owned(),
                    why,
                })
            })?;
            first_line.insert(user.to_owned(), line_no);
            file.index.insert(user.to_owned(), file.lines.len());
            file.lines.push(Line::Entry(Entry {
                user: user.to_owned(),
                encoded: hash_text.to_owned(),
                hash,
            }));
        }
        file.dummy = file.typical_dummy();
        Ok(file)
    }

    /// A dummy hash shaped like the first entry of the most common kind (scheme) in the file.
    fn typical_dummy(&self) -> Option<StoredHash> {
        let entries = || {
            self.lines.iter().filter_map(|l| match l {
                Line::Entry(e) => Some(&e.hash),
                Line::Other(_) => None,
            })
        };
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for h in entries() {
            *counts.entry(h.kind()).or_default() += 1;
        }
        let most = counts.into_iter().max_by_key(|&(kind, n)| (n, kind))?.0;
        entries()
            .find(|h| h.kind() == most)
            .map(StoredHash::dummy_like)
    }

    /// The file this was loaded from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Sets the path [`Self::save`] writes to.
    pub fn set_path(&mut self, path: impl Into<PathBuf>) {
        self.path = Some(path.into());
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no user is listed.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Whether `user` is listed.
    pub fn contains(&self, user: &str) -> bool {
        self.index.contains_key(user)
    }

    /// The listed users, in file order.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().filter_map(|l| match l {
            Line::Entry(e) => Some(e.user.as_str()),
            Line::Other(_) => None,
        })
    }

    fn entry(&self, user: &str) -> Option<&Entry> {
        match self.lines.get(*self.index.get(user)?) {
            Some(Line::Entry(e)) => Some(e),
            _ => None,
        }
    }

    /// Checks `password` for `user`. Slow on purpose (the hash is).
    pub fn verify(&self, user: &str, password: &[u8]) -> Verification {
        match self.entry(user) {
            None => Verification::UnknownUser,
            Some(e) if e.hash.verify(password) => Verification::Match,
            Some(_) => Verification::Mismatch,
        }
    }

    /// `user`'s SCRAM-SHA-256 stored keys, if their entry is of that scheme.
    pub fn scram_credentials(&self, user: &str) -> Option<&ScramCredentials> {
        match &self.entry(user)?.hash {
            StoredHash::Scram(c) => Some(c),
            _ => None,
        }
    }

    /// Whether some entry holds SCRAM-SHA-256 stored keys.
    pub fn has_scram_entries(&self) -> bool {
        self.lines.iter().any(|l| {
            matches!(
                l,
                Line::Entry(Entry {
                    hash: StoredHash::Scram(_),
                    ..
                })
            )
        })
    }

    /// Adds `user` or changes their password, hashing it with `scheme`. An existing entry keeps
    /// its place in the file.
    pub fn set(
        &mut self,
        user: &str,
        password: &[u8],
        scheme: Scheme,
    ) -> Result<(), PasswordFileError> {
        validate_username(user)?;
        let (hash, encoded) = StoredHash::new(password, scheme)?;
        let entry = Entry {
            user: user.to_owned(),
            encoded,
            hash,
        };
        match self.index.get(user) {
            Some(&i) => self.lines[i] = Line::Entry(entry),
            None => {
                self.index.insert(user.to_owned(), self.lines.len());
                self.lines.push(Line::Entry(entry));
            }
        }
        self.dummy = self.typical_dummy();
        Ok(())
    }

    /// Removes `user`; returns whether they were listed.
    pub fn delete(&mut self, user: &str) -> bool {
        let Some(i) = self.index.remove(user) else {
            return false;
        };
        self.lines.remove(i);
        for idx in self.index.values_mut() {
            if *idx > i {
                *idx -= 1;
            }
        }
        self.dummy = self.typical_dummy();
        true
    }

    /// The file's text: one line per entry or kept comment, each ending in `\n`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            match line {
                Line::Entry(e) => {
                    out.push_str(&e.user);
                    out.push(':');
                    out.push_str(&e.encoded);
                }
                Line::Other(text) => out.push_str(text),
            }
            out.push('\n');
        }
        out
    }

    /// Writes the file back to the path it was loaded from (or set with [`Self::set_path`]).
    pub fn save(&self) -> Result<(), PasswordFileError> {
        self.save_to(self.path.as_deref().ok_or(PasswordFileError::NoPath)?)
    }

    /// Writes the file to `path` atomically: a temporary file in the same directory is written,
    /// synced and renamed over `path`, so a reader (the broker reloading) never sees half a
    /// file. A new file is created readable by its owner only (Mosquitto 2.x warns about
    /// world-readable password files); an existing file keeps its permissions.
    pub fn save_to(&self, path: impl AsRef<Path>) -> Result<(), PasswordFileError> {
        let path = path.as_ref();
        write_atomically(path, self.render().as_bytes()).map_err(|source| PasswordFileError::Io {
            path: path.to_owned(),
            source,
        })
    }
}

/// Rejects user names the line format cannot carry back unchanged.
fn validate_username(user: &str) -> Result<(), PasswordFileError> {
    let why = if user.is_empty() {
        "empty"
    } else if user.contains(':') {
        // The same rule mosquitto_passwd enforces.
        "must not contain ':'"
    } else if user.contains(['\n', '\r', '\0']) {
        "must not contain line breaks or NUL [MQTT-1.5.4-2]"
    } else if user.trim() != user {
        "must not start or end with whitespace (it is trimmed when the file is read)"
    } else if user.starts_with('#') {
        "must not start with '#' (the line would read as a comment)"
    } else if user.len() > usize::from(u16::MAX) {
        "longer than 65,535 bytes, the most an MQTT string can hold"
    } else {
        return Ok(());
    };
    Err(PasswordFileError::InvalidUsername(why))
}

fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let suffix: [u8; 8] = random_bytes().map_err(|e| io::Error::other(e.to_string()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", u64::from_le_bytes(suffix)));
    let tmp = dir.join(tmp_name);

    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let mode = fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o600);
        options.mode(mode);
    }
    let result = (|| {
        let mut f = options.open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        // Make the rename durable; a directory that cannot be opened for sync is not an error.
        if let Ok(d) = fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

impl PasswordFile {
    /// [`Authenticator::decide`] with the hash check `verify` as a parameter, so a test can
    /// count the hashes an answer costs.
    fn decide_with(
        &self,
        client: &ClientInfo<'_>,
        password: Option<&[u8]>,
        verify: impl Fn(&StoredHash, &[u8]) -> bool,
    ) -> Option<AuthDecision> {
        let user = client.username?;
        let Some(entry) = self.entry(user) else {
            // Unknown user: spend the time a listed user's check would, then defer.
            if let (Some(dummy), Some(p)) = (&self.dummy, password) {
                std::hint::black_box(verify(dummy, p));
            }
            return None;
        };
        // A listed user without a password is refused, as Mosquitto does.
        let ok = password.is_some_and(|p| verify(&entry.hash, p));
        Some(if ok {
            AuthDecision::Allow
        } else {
            AuthDecision::Deny(DenyReason::BadCredentials)
        })
    }
}

impl Authenticator for PasswordFile {
    fn authenticate(&self, client: &ClientInfo<'_>, password: Option<&[u8]>) -> AuthDecision {
        self.decide(client, password)
            .unwrap_or(AuthDecision::Deny(DenyReason::BadCredentials))
    }

    fn decide(&self, client: &ClientInfo<'_>, password: Option<&[u8]>) -> Option<AuthDecision> {
        self.decide_with(client, password, StoredHash::verify)
    }

    /// Password hashes are slow on purpose (tens of milliseconds for argon2id or 20,000 PBKDF2
    /// rounds): keep them off the cores.
    fn is_blocking(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::process::Command;

    /// Made with mosquitto_passwd 2.0.11; see the README beside it.
    const MOSQUITTO_FILE: &str =
        include_str!("../../../tests/fixtures/auth/mosquitto_passwd_2.0.11.txt");

    fn client(user: Option<&str>) -> ClientInfo<'_> {
        ClientInfo::new("cid", user, "test")
    }

    #[test]
    fn verifies_checked_in_mosquitto_vectors() {
        let f = PasswordFile::parse(MOSQUITTO_FILE).unwrap();
        assert_eq!(f.len(), 4);
        let cases: [(&str, &str); 4] = [
            ("alice", "correct horse"),
            ("bob", "b0b:with:colons"),
            ("carol", "carol-pw"), // $6$
            ("dave", "ünïcødé pässwörd"),
        ];
        for (user, pw) in cases {
            assert_eq!(f.verify(user, pw.as_bytes()), Verification::Match, "{user}");
            assert_eq!(f.verify(user, b"wrong"), Verification::Mismatch, "{user}");
            // One byte off, and the empty password, fail too.
            let mut off = pw.as_bytes().to_vec();
            off.pop();
            assert_eq!(f.verify(user, &off), Verification::Mismatch, "{user}");
            assert_eq!(f.verify(user, b""), Verification::Mismatch, "{user}");
        }
        assert!(matches!(
            f.entry("carol").unwrap().hash,
            StoredHash::Sha512 { .. }
        ));
        assert!(matches!(
            f.entry("alice").unwrap().hash,
            StoredHash::Pbkdf2Sha512 {
                iterations: 101,
                ..
            }
        ));
        assert_eq!(
            f.verify("mallory", b"correct horse"),
            Verification::UnknownUser
        );
    }

    #[test]
    fn verifies_file_generated_now_by_mosquitto_passwd() {
        let bin = Path::new("/usr/bin/mosquitto_passwd");
        if !bin.exists() {
            println!("note: /usr/bin/mosquitto_passwd not installed; skipping the live check");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        let run = |args: &[&str]| {
            let st = Command::new(bin).args(args).status().unwrap();
            assert!(st.success(), "mosquitto_passwd {args:?}");
        };
        let p = path.to_str().unwrap();
        run(&["-c", "-b", p, "u1", "pass one"]);
        run(&["-H", "sha512", "-b", p, "u2", "pass two"]);
        let f = PasswordFile::load(&path).unwrap();
        assert_eq!(f.verify("u1", b"pass one"), Verification::Match);
        assert_eq!(f.verify("u2", b"pass two"), Verification::Match);
        assert_eq!(f.verify("u1", b"pass two"), Verification::Mismatch);
    }

    #[test]
    fn our_pbkdf2_entries_are_readable_by_mosquitto_format_rules() {
        // The text we write for $7$ has Mosquitto's shape: 12-byte salt, 64-byte hash.
        let mut f = PasswordFile::new();
        f.set("eve", b"pw", Scheme::Pbkdf2Sha512).unwrap();
        let text = f.render();
        let hash = text.trim_end().strip_prefix("eve:").unwrap();
        let parts: Vec<&str> = hash.split('$').collect();
        assert_eq!(parts[..3], ["", "7", "20000"]);
        assert_eq!(B64.decode(parts[3]).unwrap().len(), 12);
        assert_eq!(B64.decode(parts[4]).unwrap().len(), 64);
        let again = PasswordFile::parse(&text).unwrap();
        assert_eq!(again.verify("eve", b"pw"), Verification::Match);
        assert_eq!(again.verify("eve", b"pX"), Verification::Mismatch);
    }

    #[test]
    fn argon2id_entries_round_trip() {
        let mut f = PasswordFile::new();
        f.set("zed", b"hunter2", Scheme::Argon2id).unwrap();
        let text = f.render();
        assert!(text.starts_with("zed:$argon2id$v=19$"), "{text}");
        let f = PasswordFile::parse(&text).unwrap();
        assert_eq!(f.verify("zed", b"hunter2"), Verification::Match);
        assert_eq!(f.verify("zed", b"hunter3"), Verification::Mismatch);
        // A PHC string from the reference implementation's CLI, with parameters unlike ours:
        // `echo -n password | argon2 somesaltsomesalt -id -t 3 -m 12 -p 2`.
        let foreign = "x:$argon2id$v=19$m=4096,t=3,p=2$c29tZXNhbHRzb21lc2FsdA$\
                       GIDb0bjZv/zL6K6d9YzKPOpfCjQnH6oS30MB6t9rDtk\n";
        let f = PasswordFile::parse(foreign).unwrap();
        assert_eq!(f.verify("x", b"password"), Verification::Match);
        assert_eq!(f.verify("x", b"Password"), Verification::Mismatch);
    }

    #[test]
    fn scram_entries_round_trip_and_verify_plain_passwords() {
        let mut f = PasswordFile::new();
        f.set("sam", b"pencil", Scheme::Argon2id).unwrap();
        assert!(!f.has_scram_entries());
        f.set("sam", b"pencil", Scheme::ScramSha256).unwrap();
        f.set("other", b"x", Scheme::Pbkdf2Sha512).unwrap();
        let text = f.render();
        assert!(text.starts_with("sam:SCRAM-SHA-256$4096:"), "{text}");
        assert!(!text.contains("pencil"));
        let f = PasswordFile::parse(&text).unwrap();
        assert!(f.has_scram_entries());
        assert_eq!(f.verify("sam", b"pencil"), Verification::Match);
        assert_eq!(f.verify("sam", b"pencil!"), Verification::Mismatch);
        let c = f.scram_credentials("sam").expect("SCRAM keys");
        assert!(c.verify_password(b"pencil"));
        assert!(f.scram_credentials("other").is_none(), "not a SCRAM entry");
        assert!(f.scram_credentials("nobody").is_none());
        let bad = PasswordFile::parse("sam:SCRAM-SHA-256$4096:c2FsdA==$x\n").unwrap_err();
        assert!(bad.to_string().contains("StoredKey"), "{bad}");
    }

    #[test]
    fn malformed_lines_name_their_line_number() {
        let cases: [(&str, usize, &str); 9] = [
            ("a:$7$101$tG+JKHG0iElpo/LZ$Mx6N\nb\n", 1, "not 64 bytes"),
            ("# c\n\nnocolon\n", 3, "no ':'"),
            (":$6$abc$def\n", 1, "empty user name"),
            ("u:plaintext\n", 1, "plain-text"),
            ("u:$5$abc$def\n", 1, "unknown scheme"),
            ("u:$7$0$tG+JKHG0iElpo/LZ$x\n", 1, "positive integer"),
            ("u:$7$abc$tG+JKHG0iElpo/LZ$x\n", 1, "positive integer"),
            ("u:$argon2id$v=19$garbage\n", 1, "argon2id"),
            ("u:$6$!!!$x\n", 1, "salt is not base64"),
        ];
        for (text, line, needle) in cases {
            let e = PasswordFile::parse(text).unwrap_err();
            let msg = e.to_string();
            assert!(msg.starts_with(&format!("line {line}: ")), "{msg}");
            assert!(msg.contains(needle), "{msg} should mention {needle}");
        }
        let dup = format!("{}alice:$6$YWJj$x\n", MOSQUITTO_FILE);
        let msg = PasswordFile::parse(&dup).unwrap_err().to_string();
        assert!(
            msg.contains("line 5") && msg.contains("first on line 1"),
            "{msg}"
        );
    }

    #[test]
    fn load_errors_name_the_file_and_never_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        let secret_hash = "$7$101$tG+JKHG0iElpo/LZ$c2hvcnQ=";
        fs::write(&path, format!("# ok\nalice:{secret_hash}\n")).unwrap();
        let msg = PasswordFile::load(&path).unwrap_err().to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("line 2") && msg.contains("alice"), "{msg}");
        assert!(!msg.contains("c2hvcnQ"), "{msg}");
        let missing = PasswordFile::load(dir.path().join("nope")).unwrap_err();
        assert!(matches!(missing, PasswordFileError::Io { .. }));
    }

    #[test]
    fn debug_redacts_hashes() {
        let f = PasswordFile::parse(MOSQUITTO_FILE).unwrap();
        let dbg = format!("{f:?} {:?}", f.entry("alice").unwrap());
        assert!(!dbg.contains("tG+J") && !dbg.contains("Mx6N"), "{dbg}");
        assert!(dbg.contains("redacted"));
    }

    #[test]
    fn set_update_delete_and_atomic_save_keep_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        fs::write(&path, format!("# header\n{MOSQUITTO_FILE}")).unwrap();
        let mut f = PasswordFile::load(&path).unwrap();
        f.set("bob", b"new bob", Scheme::Pbkdf2Sha512).unwrap();
        assert!(f.delete("carol"));
        assert!(!f.delete("carol"));
        f.set("erin", b"erin pw", Scheme::Argon2id).unwrap();
        f.save().unwrap();

        let text = fs::read_to_string(&path).unwrap();
        let users: Vec<&str> = text.lines().map(|l| l.split(':').next().unwrap()).collect();
        assert_eq!(users, ["# header", "alice", "bob", "dave", "erin"]);
        // Untouched entries are byte-for-byte what mosquitto_passwd wrote.
        assert!(text.contains(MOSQUITTO_FILE.lines().next().unwrap()));

        let f = PasswordFile::load(&path).unwrap();
        assert_eq!(f.verify("bob", b"new bob"), Verification::Match);
        assert_eq!(f.verify("bob", b"b0b:with:colons"), Verification::Mismatch);
        assert_eq!(f.verify("carol", b"carol-pw"), Verification::UnknownUser);
        assert_eq!(f.verify("erin", b"erin pw"), Verification::Match);
        assert_eq!(
            f.verify("dave", "ünïcødé pässwörd".as_bytes()),
            Verification::Match
        );
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let new_path = dir.path().join("new");
            f.save_to(&new_path).unwrap();
            let mode = fs::metadata(&new_path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(
            PasswordFile::new().save(),
            Err(PasswordFileError::NoPath)
        ));
    }

    #[test]
    fn scheme_names_round_trip() {
        for scheme in [Scheme::Argon2id, Scheme::Pbkdf2Sha512, Scheme::ScramSha256] {
            assert_eq!(scheme.to_string().parse::<Scheme>(), Ok(scheme));
        }
        assert_eq!("pbkdf2".parse::<Scheme>(), Ok(Scheme::Pbkdf2Sha512));
        assert!("sha512".parse::<Scheme>().is_err());
    }

    #[test]
    fn rejects_user_names_the_format_cannot_hold() {
        let mut f = PasswordFile::new();
        for bad in ["", "a:b", "a\nb", " lead", "trail ", "#comment", "nul\0"] {
            assert!(
                matches!(
                    f.set(bad, b"x", Scheme::Pbkdf2Sha512),
                    Err(PasswordFileError::InvalidUsername(_))
                ),
                "{bad:?}"
            );
        }
        assert!(f.is_empty());
    }

    #[test]
    fn authenticator_decisions() {
        let f = PasswordFile::parse(MOSQUITTO_FILE).unwrap();
        let allow = AuthDecision::Allow;
        let bad = AuthDecision::Deny(DenyReason::BadCredentials);
        assert_eq!(
            f.authenticate(&client(Some("alice")), Some(b"correct horse")),
            allow
        );
        assert_eq!(f.authenticate(&client(Some("alice")), Some(b"nope")), bad);
        assert_eq!(f.authenticate(&client(Some("alice")), None), bad);
        assert_eq!(f.authenticate(&client(Some("mallory")), Some(b"x")), bad);
        assert_eq!(f.authenticate(&client(None), Some(b"correct horse")), bad);
        // In a chain, unknown and anonymous clients are left to the next step.
        assert_eq!(f.decide(&client(Some("mallory")), Some(b"x")), None);
        assert_eq!(f.decide(&client(None), None), None);
        assert_eq!(f.decide(&client(Some("alice")), Some(b"nope")), Some(bad));
        assert!(f.is_blocking());
    }

    #[test]
    fn an_unknown_user_is_checked_against_a_dummy_of_the_typical_entry() {
        let mut f = PasswordFile::new();
        assert!(f.dummy.is_none());
        f.set("a", b"pw", Scheme::Pbkdf2Sha512).unwrap();
        f.set("b", b"pw", Scheme::Argon2id).unwrap();
        f.set("c", b"pw", Scheme::Argon2id).unwrap();
        // The most common scheme, at the same cost as its entries.
        let Some(StoredHash::Argon2id(dummy)) = &f.dummy else {
            panic!("dummy is not argon2id: {:?}", f.dummy);
        };
        let Some(Line::Entry(b)) = f.lines.get(f.index["b"]) else {
            panic!("no entry for b");
        };
        let params = |phc: &str| phc.rsplitn(3, '$').nth(2).unwrap().to_owned();
        assert_eq!(params(dummy), params(&b.encoded), "same m, t, p");
        assert_eq!(dummy.len(), b.encoded.len());
        assert!(PasswordHash::new(dummy).is_ok(), "a valid PHC string");

        // `decide` is `decide_with` the real check: count the hashes through it.
        let hashes = Cell::new(0);
        let counted = |h: &StoredHash, p: &[u8]| {
            hashes.set(hashes.get() + 1);
            h.verify(p)
        };
        assert_eq!(
            f.decide_with(&client(Some("mallory")), Some(b"pw"), counted),
            None
        );
        assert_eq!(hashes.get(), 1, "the unknown user ran one hash");
        assert_eq!(
            f.decide_with(&client(Some("b")), Some(b"wrong"), counted),
            Some(AuthDecision::Deny(DenyReason::BadCredentials))
        );
        assert_eq!(hashes.get(), 2, "as a listed user does");

        // A Mosquitto file: PBKDF2 with the file's own iteration count.
        let m = PasswordFile::parse(MOSQUITTO_FILE).unwrap();
        assert!(matches!(
            m.dummy,
            Some(StoredHash::Pbkdf2Sha512 {
                iterations: 101,
                ..
            })
        ));
        for pw in [&b"pw"[..], b"correct horse"] {
            assert!(!m.dummy.as_ref().unwrap().verify(pw), "no password matches");
        }
    }
}
