//! SCRAM-SHA-256 (RFC 5802 with RFC 7677's hash) as an MQTT 5 enhanced authentication method.
//!
//! Why SCRAM: the password never crosses the wire (not even inside TLS), the server stores only
//! derived keys, and the client verifies the server too. The exchange over MQTT 5:
//!
//! ```text
//! CONNECT  method=SCRAM-SHA-256 data=client-first    ->  start()  -> Continue(server-first)
//! AUTH 0x18 data=client-final                        ->  step()   -> Success(server-final)
//! ```
//!
//! Limits: no channel binding (a client asking for it, `p=...`, is refused; `y` and `n` are
//! accepted), no authorisation identity other than none, and passwords are used as their UTF-8
//! bytes without SASLprep (RFC 4013) normalisation, so two differently normalised spellings of
//! a non-ASCII password are different passwords. When CONNECT carries a User Name, it must equal
//! the SCRAM user name. Unknown users get a plausible, stable salt and fail only at the proof,
//! so the exchange does not reveal which users exist (RFC 5802 section 9).

use std::collections::HashMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::hook::{AuthState, AuthStep, ClientInfo, EnhancedAuthenticator};

type HmacSha256 = Hmac<Sha256>;

/// The MQTT Authentication Method name.
pub const METHOD: &str = "SCRAM-SHA-256";

/// PBKDF2 iterations for new credentials: RFC 7677's minimum. The client pays this on every
/// connect; the server stores the derived keys and only computes HMACs.
pub const DEFAULT_ITERATIONS: u32 = 4096;

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn try_random<const N: usize>() -> Result<[u8; N], getrandom::Error> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf)?;
    Ok(buf)
}

/// For set-up paths only (keys, salts of new users, client nonces); exchanges use
/// [`try_random`] and fail instead.
fn random<const N: usize>() -> [u8; N] {
    try_random().expect("the operating system's random source failed")
}

/// What the server stores for one user: never the password.
#[derive(Clone)]
pub struct ScramCredentials {
    salt: Vec<u8>,
    iterations: u32,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl ScramCredentials {
    /// Derives the stored keys from a password, salt and iteration count.
    pub fn from_password(password: &[u8], salt: &[u8], iterations: u32) -> Self {
        let salted = salted_password(password, salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        Self {
            salt: salt.to_vec(),
            iterations,
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// Credentials with the same salt and iteration count (so the same cost to check) that no
    /// password matches.
    pub(crate) fn dummy_like(&self) -> Self {
        Self {
            salt: self.salt.clone(),
            iterations: self.iterations,
            stored_key: [0; 32],
            server_key: [0; 32],
        }
    }

    /// Credentials with a fresh random 16-byte salt and [`DEFAULT_ITERATIONS`].
    ///
    /// # Panics
    /// If the operating system's random source fails.
    pub fn generate(password: &[u8]) -> Self {
        Self::from_password(password, &random::<16>(), DEFAULT_ITERATIONS)
    }
}

impl fmt::Debug for ScramCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredentials")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramCredentials {
    /// Whether `password` derives these keys: lets a password file entry stored for SCRAM also
    /// check a plain CONNECT password. Costs the PBKDF2 iterations.
    pub fn verify_password(&self, password: &[u8]) -> bool {
        let salted = salted_password(password, &self.salt, self.iterations);
        let stored: [u8; 32] = Sha256::digest(hmac(&salted, b"Client Key")).into();
        bool::from(stored.ct_eq(&self.stored_key))
    }

    /// The stored form `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64
    /// fields): RFC 5803's, which PostgreSQL also uses. It holds no password, but whoever
    /// reads it can impersonate the server to clients, so keep it as private as a hash.
    pub fn encode(&self) -> String {
        format!(
            "{METHOD}${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }

    /// Parses [`Self::encode`]'s form; the error says what is wrong, never the keys.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let rest = text
            .strip_prefix(METHOD)
            .and_then(|r| r.strip_prefix('$'))
            .ok_or("expected SCRAM-SHA-256$...")?;
        let (params, keys) = rest
            .split_once('$')
            .ok_or("expected <iterations>:<salt>$<StoredKey>:<ServerKey>")?;
        let (iterations, salt) = params
            .split_once(':')
            .ok_or("expected <iterations>:<salt>")?;
        let iterations = iterations
            .parse::<u32>()
            .ok()
            .filter(|&n| n >= 1)
            .ok_or("iteration count is not a positive integer")?;
        let salt = B64.decode(salt).map_err(|_| "salt is not base64")?;
        if salt.is_empty() {
            return Err("empty salt");
        }
        let (stored, server) = keys
            .split_once(':')
            .ok_or("expected <StoredKey>:<ServerKey>")?;
        let key = |k: &str| -> Result<[u8; 32], &'static str> {
            B64.decode(k)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or("keys must be 32 base64 bytes each")
        };
        Ok(Self {
            salt,
            iterations,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }
}

fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations.max(1), &mut out);
    out
}

/// The SCRAM-SHA-256 server: a user table and the exchange logic.
#[derive(Clone)]
pub struct ScramSha256 {
    users: HashMap<String, ScramCredentials>,
    /// Keys the fake salts of unknown users, so they are stable but unpredictable.
    secret: [u8; 32],
    /// Tests pin the server nonce to reproduce RFC 7677's example.
    fixed_nonce: Option<String>,
}

impl Default for ScramSha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ScramSha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramSha256")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

impl ScramSha256 {
    /// A server with no users.
    ///
    /// # Panics
    /// If the operating system's random source fails.
    pub fn new() -> Self {
        Self {
            users: HashMap::new(),
            secret: random(),
            fixed_nonce: None,
        }
    }

    /// Adds or replaces a user's credentials.
    pub fn add_user(&mut self, user: impl Into<String>, credentials: ScramCredentials) {
        self.users.insert(user.into(), credentials);
    }

    /// Adds or replaces a user from a password (random salt, default iterations).
    pub fn set_password(&mut self, user: impl Into<String>, password: &[u8]) {
        self.add_user(user, ScramCredentials::generate(password));
    }

    /// Removes a user; returns whether they existed.
    pub fn remove_user(&mut self, user: &str) -> bool {
        self.users.remove(user).is_some()
    }

    fn server_nonce(&self) -> Result<String, ScramError> {
        match &self.fixed_nonce {
            Some(n) => Ok(n.clone()),
            None => try_random::<18>()
                .map(|b| B64.encode(b))
                .map_err(|_| ScramError::Server("other-error".into())),
        }
    }

    /// Begins an exchange like [`EnhancedAuthenticator::start`], but looks users up with
    /// `users` instead of this server's own table: for credentials kept elsewhere (a password
    /// file that SIGHUP replaces). Unknown users still get this server's stable fake salt.
    pub fn start_with(
        &self,
        users: &dyn Fn(&str) -> Option<ScramCredentials>,
        client: &ClientInfo<'_>,
        data: Option<&[u8]>,
    ) -> (AuthStep, AuthState) {
        match self.first(users, client, data) {
            Ok((server_first, pending)) => (
                AuthStep::Continue(server_first.into_bytes()),
                AuthState::new(Exchange::AwaitingFinal(Box::new(pending))),
            ),
            Err(_) => (AuthStep::Fail, AuthState::new(Exchange::Done)),
        }
    }

    /// Credentials for `user`, or stable fake ones that no proof can satisfy.
    fn credentials(
        &self,
        users: &dyn Fn(&str) -> Option<ScramCredentials>,
        user: &str,
    ) -> (ScramCredentials, bool) {
        match users(user) {
            Some(c) => (c, true),
            None => {
                // Derived from the server secret: stable per user, unknown to the client.
                let key = hmac(&self.secret, user.as_bytes());
                let fake = ScramCredentials {
                    salt: key[..16].to_vec(),
                    iterations: DEFAULT_ITERATIONS,
                    stored_key: hmac(&key, b"Stored Key"),
                    server_key: hmac(&key, b"Server Key"),
                };
                (fake, false)
            }
        }
    }
}

/// Server state between the two messages.
struct Pending {
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    credentials: ScramCredentials,
    known_user: bool,
}

/// Where one exchange stands.
enum Exchange {
    AwaitingFinal(Box<Pending>),
    Done,
}

/// Why a SCRAM message was refused (for the client side, and for tests of the server side).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScramError {
    /// The message is not valid SCRAM syntax.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The server's nonce does not extend ours.
    #[error("server nonce does not start with the client nonce")]
    NonceMismatch,
    /// The server's signature is wrong: it does not know the password.
    #[error("server signature does not verify")]
    BadServerSignature,
    /// The server reported an error (`e=...`).
    #[error("server error: {0}")]
    Server(String),
}

/// The `key=value` attributes of a SCRAM message, in order.
fn attributes(msg: &str) -> Result<Vec<(char, &str)>, ScramError> {
    msg.split(',')
        .map(|part| {
            let mut chars = part.chars();
            match (chars.next(), chars.next()) {
                (Some(k), Some('=')) if k.is_ascii_alphabetic() => Ok((k, &part[2..])),
                _ => Err(ScramError::Malformed("expected key=value")),
            }
        })
        .collect()
}

/// Decodes a `saslname` (`=2C` is `,`, `=3D` is `=`).
fn decode_name(name: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let esc = rest.get(i..i + 3);
        match esc {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in user name")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

fn encode_name(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

fn valid_nonce(nonce: &str) -> bool {
    // printable ASCII except ',' (RFC 5802 section 7).
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Parses a client-first message: returns (gs2 header, client-first-bare, user, nonce).
fn parse_client_first(msg: &str) -> Result<(&str, &str, String, &str), ScramError> {
    let bad = ScramError::Malformed;
    let mut parts = msg.splitn(3, ',');
    let cbind = parts.next().ok_or(bad("missing gs2 header"))?;
    let authzid = parts.next().ok_or(bad("missing gs2 header"))?;
    let bare = parts.next().ok_or(bad("missing client-first-bare"))?;
    match cbind {
        "n" | "y" => {}
        _ if cbind.starts_with("p=") => return Err(bad("channel binding is not supported")),
        _ => return Err(bad("bad channel binding flag")),
    }
    if !authzid.is_empty() {
        return Err(bad("authorisation identities are not supported"));
    }
    let gs2_header = &msg[..cbind.len() + authzid.len() + 2];
    let attrs = attributes(bare)?;
    let (user, nonce) = match attrs.as_slice() {
        [('n', user), ('r', nonce), ..] => (decode_name(user)?, *nonce),
        [('m', _), ..] => return Err(bad("mandatory extensions are not supported")),
        _ => return Err(bad("expected n=...,r=...")),
    };
    if user.is_empty() || !valid_nonce(nonce) {
        return Err(bad("empty user name or invalid nonce"));
    }
    Ok((gs2_header, bare, user, nonce))
}

impl ScramSha256 {
    fn first(
        &self,
        users: &dyn Fn(&str) -> Option<ScramCredentials>,
        client: &ClientInfo<'_>,
        data: Option<&[u8]>,
    ) -> Result<(String, Pending), ScramError> {
        let msg = std::str::from_utf8(data.unwrap_or_default())
            .map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (gs2_header, bare, user, client_nonce) = parse_client_first(msg)?;
        let (credentials, mut known_user) = self.credentials(users, &user);
        // CONNECT's User Name, when present, must name the same user.
        if client.username.is_some_and(|u| u != user) {
            known_user = false;
        }
        let nonce = format!("{client_nonce}{}", self.server_nonce()?);
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&credentials.salt),
            credentials.iterations
        );
        let pending = Pending {
            gs2_header: gs2_header.to_owned(),
            client_first_bare: bare.to_owned(),
            server_first: server_first.clone(),
            nonce,
            credentials,
            known_user,
        };
        Ok((server_first, pending))
    }

    fn last(p: &Pending, data: Option<&[u8]>) -> Result<Vec<u8>, ScramError> {
        let bad = ScramError::Malformed;
        let msg = std::str::from_utf8(data.unwrap_or_default()).map_err(|_| bad("not UTF-8"))?;
        let (without_proof, proof) = msg.rsplit_once(",p=").ok_or(bad("missing proof"))?;
        let attrs = attributes(without_proof)?;
        let (cbind, nonce) = match attrs.as_slice() {
            [('c', c), ('r', r), ..] => (*c, *r),
            _ => return Err(bad("expected c=...,r=...")),
        };
        if B64.decode(cbind).ok().as_deref() != Some(p.gs2_header.as_bytes()) {
            return Err(bad("channel binding data does not match the gs2 header"));
        }
        if nonce != p.nonce {
            return Err(ScramError::NonceMismatch);
        }
        let proof: [u8; 32] = B64
            .decode(proof)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or(bad("proof is not 32 base64 bytes"))?;
        let auth_message = format!(
            "{},{},{}",
            p.client_first_bare, p.server_first, without_proof
        );
        let signature = hmac(&p.credentials.stored_key, auth_message.as_bytes());
        let mut client_key = proof;
        for (k, s) in client_key.iter_mut().zip(signature) {
            *k ^= s;
        }
        let stored: [u8; 32] = Sha256::digest(client_key).into();
        let proof_ok = bool::from(stored.ct_eq(&p.credentials.stored_key));
        if !(proof_ok && p.known_user) {
            return Err(ScramError::Server("invalid-proof".into()));
        }
        let server_signature = hmac(&p.credentials.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

impl EnhancedAuthenticator for ScramSha256 {
    fn method(&self) -> &str {
        METHOD
    }

    fn start(&self, client: &ClientInfo<'_>, data: Option<&[u8]>) -> (AuthStep, AuthState) {
        self.start_with(&|user| self.users.get(user).cloned(), client, data)
    }

    fn step(&self, state: &mut AuthState, data: Option<&[u8]>) -> AuthStep {
        let Some(exchange) = state.downcast_mut::<Exchange>() else {
            return AuthStep::Fail;
        };
        let Exchange::AwaitingFinal(pending) = std::mem::replace(exchange, Exchange::Done) else {
            return AuthStep::Fail;
        };
        match Self::last(&pending, data) {
            Ok(server_final) => AuthStep::Success(Some(server_final)),
            Err(_) => AuthStep::Fail,
        }
    }
}

/// The client side of SCRAM-SHA-256, for tests and the load generator.
pub struct ScramClient {
    password: Vec<u8>,
    client_first_bare: String,
    nonce: String,
    server_key: Option<[u8; 32]>,
    auth_message: Option<String>,
}

impl fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramClient").finish_non_exhaustive()
    }
}

impl ScramClient {
    /// A client for `user` with a random nonce.
    ///
    /// # Panics
    /// If the operating system's random source fails.
    pub fn new(user: &str, password: &[u8]) -> Self {
        Self::with_nonce(user, password, &B64.encode(random::<18>()))
    }

    /// A client with a given nonce (printable ASCII without ','), for reproducible tests.
    pub fn with_nonce(user: &str, password: &[u8], nonce: &str) -> Self {
        Self {
            password: password.to_vec(),
            client_first_bare: format!("n={},r={nonce}", encode_name(user)),
            nonce: nonce.to_owned(),
            server_key: None,
            auth_message: None,
        }
    }

    /// The Authentication Data for CONNECT.
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// The Authentication Data for the AUTH answering the server's first message.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        let bad = ScramError::Malformed;
        let server_first =
            std::str::from_utf8(server_first).map_err(|_| bad("server-first is not UTF-8"))?;
        let attrs = attributes(server_first)?;
        let (nonce, salt, iterations) = match attrs.as_slice() {
            [('r', r), ('s', s), ('i', i), ..] => (*r, *s, *i),
            [('e', e), ..] => return Err(ScramError::Server((*e).to_owned())),
            _ => return Err(bad("expected r=...,s=...,i=...")),
        };
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::NonceMismatch);
        }
        let salt = B64.decode(salt).map_err(|_| bad("salt is not base64"))?;
        let iterations: u32 = iterations
            .parse()
            .ok()
            .filter(|&n| n >= 1)
            .ok_or(bad("bad iteration count"))?;
        let salted = salted_password(&self.password, &salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let without_proof = format!("c={},r={nonce}", B64.encode("n,,"));
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let mut proof = client_key;
        for (p, s) in proof.iter_mut().zip(signature) {
            *p ^= s;
        }
        self.server_key = Some(hmac(&salted, b"Server Key"));
        self.auth_message = Some(auth_message);
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server's final message (from CONNACK's Authentication Data).
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let msg = std::str::from_utf8(server_final)
            .map_err(|_| ScramError::Malformed("server-final is not UTF-8"))?;
        if let Some(e) = msg.strip_prefix("e=") {
            return Err(ScramError::Server(e.to_owned()));
        }
        let sig = msg
            .strip_prefix("v=")
            .and_then(|v| B64.decode(v).ok())
            .ok_or(ScramError::Malformed("expected v=..."))?;
        let (Some(key), Some(auth)) = (&self.server_key, &self.auth_message) else {
            return Err(ScramError::Malformed("server-final before client-final"));
        };
        let expected = hmac(key, auth.as_bytes());
        if bool::from(expected.as_slice().ct_eq(&sig)) {
            Ok(())
        } else {
            Err(ScramError::BadServerSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677 section 3.
    const CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const SALT_B64: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_server() -> ScramSha256 {
        let mut s = ScramSha256::new();
        let salt = B64.decode(SALT_B64).unwrap();
        s.add_user(
            "user",
            ScramCredentials::from_password(b"pencil", &salt, 4096),
        );
        s.fixed_nonce = Some(SERVER_NONCE.into());
        s
    }

    fn anon() -> ClientInfo<'static> {
        ClientInfo::new("c", None, "test")
    }

    #[test]
    fn server_reproduces_rfc7677_example() {
        let s = rfc_server();
        assert_eq!(s.method(), "SCRAM-SHA-256");
        let (step, mut state) = s.start(&anon(), Some(CLIENT_FIRST.as_bytes()));
        assert_eq!(step, AuthStep::Continue(SERVER_FIRST.as_bytes().to_vec()));
        let step = s.step(&mut state, Some(CLIENT_FINAL.as_bytes()));
        assert_eq!(
            step,
            AuthStep::Success(Some(SERVER_FINAL.as_bytes().to_vec()))
        );
        // The exchange is over.
        assert_eq!(
            s.step(&mut state, Some(CLIENT_FINAL.as_bytes())),
            AuthStep::Fail
        );
    }

    #[test]
    fn client_reproduces_rfc7677_example() {
        let mut c = ScramClient::with_nonce("user", b"pencil", CLIENT_NONCE);
        assert_eq!(c.client_first(), CLIENT_FIRST.as_bytes());
        let fin = c.client_final(SERVER_FIRST.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(fin).unwrap(), CLIENT_FINAL);
        assert_eq!(c.verify_server_final(SERVER_FINAL.as_bytes()), Ok(()));
        let forged = format!("v={}", B64.encode([0u8; 32]));
        assert_eq!(
            c.verify_server_final(forged.as_bytes()),
            Err(ScramError::BadServerSignature)
        );
    }

    fn exchange(
        server: &ScramSha256,
        client_info: &ClientInfo<'_>,
        user: &str,
        pw: &[u8],
    ) -> AuthStep {
        let mut c = ScramClient::new(user, pw);
        let (step, mut state) = server.start(client_info, Some(&c.client_first()));
        let AuthStep::Continue(server_first) = step else {
            return step;
        };
        let fin = c.client_final(&server_first).unwrap();
        let step = server.step(&mut state, Some(&fin));
        if let AuthStep::Success(Some(server_final)) = &step {
            c.verify_server_final(server_final).unwrap();
        }
        step
    }

    #[test]
    fn round_trip_with_random_nonces_and_salts() {
        let mut s = ScramSha256::new();
        s.set_password("al,i=ce", "pässword".as_bytes());
        let ok = exchange(&s, &anon(), "al,i=ce", "pässword".as_bytes());
        assert!(matches!(ok, AuthStep::Success(Some(_))), "{ok:?}");
        assert_eq!(
            exchange(&s, &anon(), "al,i=ce", b"password"),
            AuthStep::Fail
        );
        // CONNECT's User Name must match the SCRAM user.
        let other = ClientInfo::new("c", Some("bob"), "test");
        assert_eq!(
            exchange(&s, &other, "al,i=ce", "pässword".as_bytes()),
            AuthStep::Fail
        );
        let same = ClientInfo::new("c", Some("al,i=ce"), "test");
        assert!(matches!(
            exchange(&s, &same, "al,i=ce", "pässword".as_bytes()),
            AuthStep::Success(_)
        ));
        assert!(s.remove_user("al,i=ce"));
        assert_eq!(
            exchange(&s, &anon(), "al,i=ce", "pässword".as_bytes()),
            AuthStep::Fail
        );
    }

    #[test]
    fn unknown_users_get_a_stable_salt_and_fail_at_the_proof() {
        let s = ScramSha256::new();
        let first = |nonce: &str| {
            let c = ScramClient::with_nonce("ghost", b"x", nonce);
            match s.start(&anon(), Some(&c.client_first())).0 {
                AuthStep::Continue(d) => String::from_utf8(d).unwrap(),
                other => panic!("{other:?}"),
            }
        };
        let salt = |msg: &str| msg.split(',').nth(1).unwrap().to_owned();
        assert_eq!(salt(&first("n1")), salt(&first("n2")));
        assert_eq!(exchange(&s, &anon(), "ghost", b"x"), AuthStep::Fail);
    }

    #[test]
    fn malformed_and_unsupported_messages_fail() {
        let s = rfc_server();
        for bad in [
            &b""[..],
            b"n,,",
            b"p=tls-unique,,n=user,r=abc",
            b"n,a=admin,n=user,r=abc",
            b"n,,m=ext,n=user,r=abc",
            b"n,,r=abc,n=user",
            b"n,,n=us=2Xer,r=abc",
            b"n,,n=user,r=a,b",
            b"x,,n=user,r=abc",
            b"n,,n=user,r=\xff",
        ] {
            assert_eq!(s.start(&anon(), Some(bad)).0, AuthStep::Fail, "{bad:?}");
        }
        assert_eq!(s.start(&anon(), None).0, AuthStep::Fail);

        let finals = [
            // wrong nonce
            CLIENT_FINAL.replace("k0,", "k1,"),
            // channel binding data not matching "n,,"
            CLIENT_FINAL.replace("c=biws", "c=eSws"),
            // truncated proof
            CLIENT_FINAL.replace("AndVQ=", ""),
            // no proof
            CLIENT_FINAL.split(",p=").next().unwrap().to_owned(),
        ];
        for fin in finals {
            let (_, mut state) = s.start(&anon(), Some(CLIENT_FIRST.as_bytes()));
            assert_eq!(
                s.step(&mut state, Some(fin.as_bytes())),
                AuthStep::Fail,
                "{fin}"
            );
        }
        // y (client supports binding, thinks server does not) is accepted with c=eSws.
        let y_first = CLIENT_FIRST.replacen("n,,", "y,,", 1);
        let (step, _) = s.start(&anon(), Some(y_first.as_bytes()));
        assert!(matches!(step, AuthStep::Continue(_)));
        assert!(!format!("{s:?} {:?}", s.users["user"]).contains("pencil"));
    }

    #[test]
    fn stored_form_round_trips_verifies_passwords_and_serves_external_users() {
        let salt = B64.decode(SALT_B64).unwrap();
        let c = ScramCredentials::from_password(b"pencil", &salt, 4096);
        let text = c.encode();
        assert!(
            text.starts_with("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"),
            "{text}"
        );
        let back = ScramCredentials::parse(&text).unwrap();
        assert_eq!(back.encode(), text);
        assert!(back.verify_password(b"pencil"));
        assert!(!back.verify_password(b"pencil2"));
        for bad in [
            "SCRAM-SHA-1$4096:c2FsdA==$a:b",
            "SCRAM-SHA-256$0:c2FsdA==$a:b",
            "SCRAM-SHA-256$4096:$a:b",
            "SCRAM-SHA-256$4096:c2FsdA==$YQ==:YQ==",
            "SCRAM-SHA-256$4096:c2FsdA==",
            "",
        ] {
            assert!(ScramCredentials::parse(bad).is_err(), "{bad}");
        }
        // start_with: users from elsewhere, the exchange as usual (RFC 7677's example).
        let mut s = ScramSha256::new();
        s.fixed_nonce = Some(SERVER_NONCE.into());
        let users = |u: &str| (u == "user").then(|| back.clone());
        let (step, mut state) = s.start_with(&users, &anon(), Some(CLIENT_FIRST.as_bytes()));
        assert_eq!(step, AuthStep::Continue(SERVER_FIRST.as_bytes().to_vec()));
        assert_eq!(
            s.step(&mut state, Some(CLIENT_FINAL.as_bytes())),
            AuthStep::Success(Some(SERVER_FINAL.as_bytes().to_vec()))
        );
    }

    #[test]
    fn saslname_escapes() {
        assert_eq!(encode_name("a,b=c"), "a=2Cb=3Dc");
        assert_eq!(decode_name("a=2Cb=3Dc").unwrap(), "a,b=c");
        assert!(decode_name("a=").is_err());
        assert!(decode_name("a=2").is_err());
    }
}
