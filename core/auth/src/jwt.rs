//! JWT authentication: the CONNECT password carries a JSON Web Token (the user name is
//! optional), verified with a shared secret (HS256/384/512, `jwt_secret_file`), a PEM public
//! key (RSA: RS256/384/512 and PS256/384/512; EC: ES256/384, `jwt_public_key_file`) or a JWKS
//! document (`jwt_jwks_file`, keys picked by `kid`).
//!
//! What a token must satisfy: a valid signature with an algorithm of the configured key's family
//! (so an `HS256` token "signed" with a public key, or an `alg: none` token, is refused); an
//! `exp` claim in the future and any `nbf` in the past (with [`LEEWAY_SECS`] of clock skew);
//! a string user name in the claim `jwt_username_claim` (default `sub`), which becomes the
//! client's user name (a CONNECT user name, if sent, must equal it). With `jwt_acl_claim` set,
//! the claim `{"pub": [filters], "sub": [filters]}` is the client's ACL, with `%c`/`%u`
//! substituted and matched exactly as the ACL file's `pattern write`/`pattern read` lines are
//! (see [`crate::acl`]); a token without the claim is granted nothing.
//!
//! Pure: the key files are read by [`JwtVerifier::load`] only (at start and on reload).

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::acl::AclFile;
use crate::hook::{AuthDecision, Authenticator, ClientInfo, DenyReason};

/// Seconds of clock skew allowed between the token's issuer and the broker for `exp` and
/// `nbf` (jsonwebtoken's default of 60 s would accept a token a minute after it expired).
pub const LEEWAY_SECS: u64 = 5;

const HMAC: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
const RSA: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const EC: &[Algorithm] = &[Algorithm::ES256, Algorithm::ES384];

/// Where the keys come from and which claims to read: the `jwt_*` config keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JwtSettings {
    /// A file holding the HMAC secret (its bytes, without a trailing newline).
    pub secret_file: Option<PathBuf>,
    /// A PEM public key (RSA or EC, `-----BEGIN PUBLIC KEY-----` or `RSA PUBLIC KEY`).
    pub public_key_file: Option<PathBuf>,
    /// A JWKS document (`{"keys": [...]}`).
    pub jwks_file: Option<PathBuf>,
    /// The claim holding the user name (`sub` if empty).
    pub username_claim: String,
    /// The claim holding the client's ACL, if tokens carry one.
    pub acl_claim: Option<String>,
}

impl JwtSettings {
    /// Whether some key file is set (JWT authentication is on).
    pub fn enabled(&self) -> bool {
        self.secret_file.is_some() || self.public_key_file.is_some() || self.jwks_file.is_some()
    }
}

/// A key file that could not be used.
#[derive(Debug, Error)]
pub enum JwtError {
    /// Could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Read, but holds no usable key.
    #[error("{}: {reason}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// One verification key and the algorithms it may verify.
struct Key {
    kid: Option<String>,
    algorithms: &'static [Algorithm],
    key: DecodingKey,
}

/// Verifies tokens against the configured keys.
pub struct JwtVerifier {
    keys: Vec<Key>,
    username_claim: String,
    acl_claim: Option<String>,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("keys", &self.keys.len())
            .field("username_claim", &self.username_claim)
            .field("acl_claim", &self.acl_claim)
            .finish()
    }
}

/// What a valid token grants.
#[derive(Debug)]
pub struct TokenIdentity {
    /// The user name from the token's user name claim.
    pub username: String,
    /// The rules of the ACL claim (when `jwt_acl_claim` is set).
    pub acl: Option<AclFile>,
}

/// Why a token was refused (for the log; the client only sees "bad user name or password").
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum TokenRejected {
    /// `exp` is in the past.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid (nbf)")]
    NotYetValid,
    /// The header's algorithm is not one the configured keys verify.
    #[error("token algorithm not accepted")]
    WrongAlgorithm,
    /// The signature does not verify with any configured key.
    #[error("token signature does not verify")]
    BadSignature,
    /// A required claim is absent or of the wrong type.
    #[error("token claim `{0}` missing or not a string")]
    MissingClaim(String),
    /// The ACL claim is not `{"pub": [...], "sub": [...]}` of valid filters.
    #[error("token ACL claim is malformed: {0}")]
    BadAclClaim(String),
    /// The CONNECT user name differs from the token's.
    #[error("CONNECT user name differs from the token's")]
    UserMismatch,
    /// Not a decodable token.
    #[error("malformed token: {0}")]
    Malformed(String),
}

impl JwtVerifier {
    /// Reads the key files of `settings`. At least one must be set.
    pub fn load(settings: &JwtSettings) -> Result<Self, JwtError> {
        let mut keys = Vec::new();
        if let Some(path) = &settings.secret_file {
            let secret = read(path)?;
            let secret = secret.trim_ascii_end();
            if secret.is_empty() {
                return Err(key_error(path, "the secret is empty"));
            }
            keys.push(Key {
                kid: None,
                algorithms: HMAC,
                key: DecodingKey::from_secret(secret),
            });
        }
        if let Some(path) = &settings.public_key_file {
            keys.push(pem_key(path, &read(path)?)?);
        }
        if let Some(path) = &settings.jwks_file {
            keys.extend(jwks_keys(path, &read(path)?)?);
        }
        Ok(Self::with_keys(keys, settings))
    }

    fn with_keys(keys: Vec<Key>, settings: &JwtSettings) -> Self {
        let username_claim = match settings.username_claim.as_str() {
            "" => "sub".to_owned(),
            claim => claim.to_owned(),
        };
        JwtVerifier {
            keys,
            username_claim,
            acl_claim: settings.acl_claim.clone(),
        }
    }

    /// Verifies `token` for `client` (whose user name, if any, must match the token's).
    pub fn verify(
        &self,
        client: &ClientInfo<'_>,
        token: &str,
    ) -> Result<TokenIdentity, TokenRejected> {
        let claims = self.verified_claims(token)?;
        let username = match claims.get(&self.username_claim) {
            Some(Value::String(u)) if !u.is_empty() => u.clone(),
            _ => return Err(TokenRejected::MissingClaim(self.username_claim.clone())),
        };
        if client.username.is_some_and(|u| u != username) {
            return Err(TokenRejected::UserMismatch);
        }
        let acl = match &self.acl_claim {
            None => None,
            Some(claim) => Some(acl_of(claims.get(claim))?),
        };
        Ok(TokenIdentity { username, acl })
    }

    /// The claims of a token whose signature, `exp` and `nbf` check out with some key.
    fn verified_claims(&self, token: &str) -> Result<Map<String, Value>, TokenRejected> {
        let header = decode_header(token).map_err(|e| TokenRejected::Malformed(e.to_string()))?;
        let candidates: Vec<&Key> = self
            .keys
            .iter()
            .filter(|k| k.algorithms.contains(&header.alg))
            .filter(|k| header.kid.is_none() || k.kid.is_none() || k.kid == header.kid)
            .collect();
        if candidates.is_empty() {
            return Err(TokenRejected::WrongAlgorithm);
        }
        let mut last = TokenRejected::BadSignature;
        for key in candidates {
            let mut validation = Validation::new(header.alg);
            validation.leeway = LEEWAY_SECS;
            validation.validate_nbf = true;
            // No audience is configured: a token's `aud` is not checked.
            validation.validate_aud = false;
            match decode::<Map<String, Value>>(token, &key.key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => last = rejection(e.kind()),
            }
            if last != TokenRejected::BadSignature {
                // The signature verified; the claims are what is wrong.
                break;
            }
        }
        Err(last)
    }
}

fn rejection(kind: &jsonwebtoken::errors::ErrorKind) -> TokenRejected {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::ExpiredSignature => TokenRejected::Expired,
        K::ImmatureSignature => TokenRejected::NotYetValid,
        K::InvalidAlgorithm | K::MissingAlgorithm => TokenRejected::WrongAlgorithm,
        K::MissingRequiredClaim(c) => TokenRejected::MissingClaim(c.clone()),
        K::InvalidSignature | K::Crypto(_) | K::InvalidKeyFormat | K::InvalidEcdsaKey => {
            TokenRejected::BadSignature
        }
        other => TokenRejected::Malformed(format!("{other:?}")),
    }
}

/// The ACL claim as ACL file rules: each `pub` filter a `pattern write` line, each `sub`
/// filter a `pattern read` line, so matching and `%c`/`%u` handling are the ACL file's.
fn acl_of(claim: Option<&Value>) -> Result<AclFile, TokenRejected> {
    let bad = |why: &str| TokenRejected::BadAclClaim(why.to_owned());
    let Some(claim) = claim else {
        // No rules in the token: it grants nothing (an empty ACL denies every access).
        return Ok(AclFile::default());
    };
    let Value::Object(lists) = claim else {
        return Err(bad("not an object"));
    };
    let mut text = String::new();
    for (key, value) in lists {
        let perm = match key.as_str() {
            "pub" => "write",
            "sub" => "read",
            _ => return Err(bad("keys must be `pub` and `sub`")),
        };
        let Value::Array(filters) = value else {
            return Err(bad("`pub` and `sub` must be lists"));
        };
        for filter in filters {
            let Value::String(f) = filter else {
                return Err(bad("filters must be strings"));
            };
            // One rule per line: a line break would smuggle in a rule of another kind.
            if f.is_empty() || f.contains(['\n', '\r', '\0']) {
                return Err(bad("a filter is empty or holds a line break"));
            }
            text.push_str(&format!("pattern {perm} {f}\n"));
        }
    }
    AclFile::parse(&text).map_err(|e| TokenRejected::BadAclClaim(e.to_string()))
}

fn read(path: &Path) -> Result<Vec<u8>, JwtError> {
    fs::read(path).map_err(|source| JwtError::Io {
        path: path.to_owned(),
        source,
    })
}

fn key_error(path: &Path, reason: impl Into<String>) -> JwtError {
    JwtError::Key {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// A PEM public key: RSA, else EC.
fn pem_key(path: &Path, pem: &[u8]) -> Result<Key, JwtError> {
    let (key, algorithms) = match DecodingKey::from_rsa_pem(pem) {
        Ok(key) => (key, RSA),
        Err(_) => match DecodingKey::from_ec_pem(pem) {
            Ok(key) => (key, EC),
            Err(e) => return Err(key_error(path, format!("not an RSA or EC public key: {e}"))),
        },
    };
    Ok(Key {
        kid: None,
        algorithms,
        key,
    })
}

/// Every key of a JWKS document, with its `kid`.
fn jwks_keys(path: &Path, json: &[u8]) -> Result<Vec<Key>, JwtError> {
    let set: JwkSet =
        serde_json::from_slice(json).map_err(|e| key_error(path, format!("not a JWKS: {e}")))?;
    let mut keys = Vec::with_capacity(set.keys.len());
    for jwk in &set.keys {
        let algorithms = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => RSA,
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                &[Algorithm::ES256][..]
            }
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P384 => {
                &[Algorithm::ES384][..]
            }
            AlgorithmParameters::OctetKey(_) => HMAC,
            _ => {
                return Err(key_error(
                    path,
                    "unsupported key type (use RSA, P-256, P-384 or oct)",
                ))
            }
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| key_error(path, e.to_string()))?;
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            algorithms,
            key,
        });
    }
    if keys.is_empty() {
        return Err(key_error(path, "the JWKS has no keys"));
    }
    Ok(keys)
}

/// Whether a CONNECT password looks like a compact JWS (three base64url parts), so that a
/// plain password is left to the other authentication steps.
pub fn looks_like_token(password: &[u8]) -> bool {
    let parts = password.split(|&b| b == b'.').count();
    parts == 3
        && password
            .iter()
            .all(|&b| b == b'.' || b == b'-' || b == b'_' || b.is_ascii_alphanumeric())
}

impl Authenticator for JwtVerifier {
    fn authenticate(&self, client: &ClientInfo<'_>, password: Option<&[u8]>) -> AuthDecision {
        self.decide(client, password)
            .unwrap_or(AuthDecision::Deny(DenyReason::BadCredentials))
    }

    /// No opinion without a token-shaped password; else the token decides.
    fn decide(&self, client: &ClientInfo<'_>, password: Option<&[u8]>) -> Option<AuthDecision> {
        let token = password.filter(|p| looks_like_token(p))?;
        let token = std::str::from_utf8(token).ok()?;
        Some(match self.verify(client, token) {
            Ok(_) => AuthDecision::Allow,
            Err(_) => AuthDecision::Deny(DenyReason::BadCredentials),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hook::Access;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const RSA_PRIVATE: &str = include_str!("../../../tests/fixtures/auth/jwt_rs256_private.pem");
    const RSA_PUBLIC: &str = include_str!("../../../tests/fixtures/auth/jwt_rs256_public.pem");

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn hs256(claims: &Value, secret: &[u8]) -> String {
        encode(
            &Header::default(),
            claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn files(tag: &str, files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let dir = tempfile::Builder::new().prefix(tag).tempdir().unwrap();
        for (name, bytes) in files {
            fs::write(dir.path().join(name), bytes).unwrap();
        }
        dir
    }

    fn secret_verifier(acl_claim: Option<&str>) -> (JwtVerifier, tempfile::TempDir) {
        let dir = files("jwt-hs", &[("secret", b"s3cret-key\n")]);
        let v = JwtVerifier::load(&JwtSettings {
            secret_file: Some(dir.path().join("secret")),
            acl_claim: acl_claim.map(str::to_owned),
            ..JwtSettings::default()
        })
        .unwrap();
        (v, dir)
    }

    const ANON: ClientInfo<'static> = ClientInfo {
        client_id: "dev1",
        username: None,
        peer: None,
        listener: "default",
        cert_common_name: None,
        acl: None,
    };

    #[test]
    fn hs256_checks_signature_exp_nbf_and_the_user_name_claim() {
        let (v, _dir) = secret_verifier(None);
        let ok = hs256(&json!({"sub": "alice", "exp": now() + 600}), b"s3cret-key");
        assert_eq!(v.verify(&ANON, &ok).unwrap().username, "alice");
        assert_eq!(
            v.decide(&ANON, Some(ok.as_bytes())),
            Some(AuthDecision::Allow)
        );
        let alice = ClientInfo::new("dev1", Some("alice"), "default");
        assert!(
            v.verify(&alice, &ok).is_ok(),
            "a matching CONNECT user name"
        );
        let bob = ClientInfo::new("dev1", Some("bob"), "default");
        assert_eq!(v.verify(&bob, &ok).err(), Some(TokenRejected::UserMismatch));

        let cases = [
            (
                json!({"sub": "a", "exp": now() - 600}),
                TokenRejected::Expired,
            ),
            (
                json!({"sub": "a", "exp": now() + 600, "nbf": now() + 600}),
                TokenRejected::NotYetValid,
            ),
            (
                json!({"sub": "a"}),
                TokenRejected::MissingClaim("exp".into()),
            ),
            (
                json!({"name": "a", "exp": now() + 600}),
                TokenRejected::MissingClaim("sub".into()),
            ),
            (
                json!({"sub": 7, "exp": now() + 600}),
                TokenRejected::MissingClaim("sub".into()),
            ),
        ];
        for (claims, why) in cases {
            let token = hs256(&claims, b"s3cret-key");
            assert_eq!(v.verify(&ANON, &token).err(), Some(why), "{claims}");
        }
        let forged = hs256(&json!({"sub": "a", "exp": now() + 600}), b"other-key");
        assert_eq!(
            v.verify(&ANON, &forged).err(),
            Some(TokenRejected::BadSignature)
        );
        assert_eq!(
            v.decide(&ANON, Some(forged.as_bytes())),
            Some(AuthDecision::Deny(DenyReason::BadCredentials))
        );
        // A plain password is left to the other steps.
        assert_eq!(v.decide(&ANON, Some(b"correct horse")), None);
        assert_eq!(v.decide(&ANON, None), None);
    }

    #[test]
    fn the_user_name_claim_is_configurable() {
        let dir = files("jwt-claim", &[("secret", b"k")]);
        let v = JwtVerifier::load(&JwtSettings {
            secret_file: Some(dir.path().join("secret")),
            username_claim: "preferred_username".into(),
            ..JwtSettings::default()
        })
        .unwrap();
        let claims = json!({"sub": "x", "preferred_username": "carol", "exp": now() + 60});
        assert_eq!(
            v.verify(&ANON, &hs256(&claims, b"k")).unwrap().username,
            "carol"
        );
    }

    #[test]
    fn rs256_from_a_pem_key_refuses_other_algorithms_and_keys() {
        let dir = files("jwt-rs", &[("pub.pem", RSA_PUBLIC.as_bytes())]);
        let v = JwtVerifier::load(&JwtSettings {
            public_key_file: Some(dir.path().join("pub.pem")),
            ..JwtSettings::default()
        })
        .unwrap();
        let claims = json!({"sub": "dev", "exp": now() + 600});
        let signer = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        let token = encode(&Header::new(Algorithm::RS256), &claims, &signer).unwrap();
        assert_eq!(v.verify(&ANON, &token).unwrap().username, "dev");
        // The classic confusion: HS256 keyed with the public key's text.
        let confused = hs256(&claims, RSA_PUBLIC.as_bytes());
        assert_eq!(
            v.verify(&ANON, &confused).err(),
            Some(TokenRejected::WrongAlgorithm)
        );
        // An ES256 token signed by another key.
        let other = rcgen::KeyPair::generate().unwrap();
        let es = EncodingKey::from_ec_pem(other.serialize_pem().as_bytes()).unwrap();
        let token = encode(&Header::new(Algorithm::ES256), &claims, &es).unwrap();
        assert_eq!(
            v.verify(&ANON, &token).err(),
            Some(TokenRejected::WrongAlgorithm)
        );
        // `alg: none` is no algorithm at all.
        let unsigned = format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(claims.to_string().as_bytes())
        );
        assert!(v.verify(&ANON, &unsigned).is_err());
    }

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn es256_from_a_pem_key_made_now() {
        let pair = rcgen::KeyPair::generate().unwrap();
        let dir = files("jwt-es", &[("pub.pem", pair.public_key_pem().as_bytes())]);
        let v = JwtVerifier::load(&JwtSettings {
            public_key_file: Some(dir.path().join("pub.pem")),
            ..JwtSettings::default()
        })
        .unwrap();
        let signer = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let claims = json!({"sub": "dev", "exp": now() + 600});
        let token = encode(&Header::new(Algorithm::ES256), &claims, &signer).unwrap();
        assert_eq!(v.verify(&ANON, &token).unwrap().username, "dev");
        let stranger = rcgen::KeyPair::generate().unwrap();
        let signer = EncodingKey::from_ec_pem(stranger.serialize_pem().as_bytes()).unwrap();
        let token = encode(&Header::new(Algorithm::ES256), &claims, &signer).unwrap();
        assert_eq!(
            v.verify(&ANON, &token).err(),
            Some(TokenRejected::BadSignature)
        );
    }

    #[test]
    fn jwks_keys_are_picked_by_kid() {
        let jwks = json!({"keys": [
            {"kty": "oct", "kid": "one", "k": b64(b"first-secret")},
            {"kty": "oct", "kid": "two", "k": b64(b"second-secret")},
        ]});
        let dir = files("jwt-jwks", &[("jwks.json", jwks.to_string().as_bytes())]);
        let v = JwtVerifier::load(&JwtSettings {
            jwks_file: Some(dir.path().join("jwks.json")),
            ..JwtSettings::default()
        })
        .unwrap();
        let claims = json!({"sub": "dev", "exp": now() + 600});
        let signed = |kid: &str, secret: &[u8]| {
            let h = Header {
                kid: Some(kid.to_owned()),
                ..Header::default()
            };
            encode(&h, &claims, &EncodingKey::from_secret(secret)).unwrap()
        };
        assert!(v.verify(&ANON, &signed("two", b"second-secret")).is_ok());
        assert_eq!(
            v.verify(&ANON, &signed("one", b"second-secret")).err(),
            Some(TokenRejected::BadSignature)
        );
        assert!(v.verify(&ANON, &signed("nope", b"first-secret")).is_err());
    }

    #[test]
    fn the_acl_claim_grants_with_client_id_and_user_substituted() {
        let (v, _dir) = secret_verifier(Some("acl"));
        let claims = json!({
            "sub": "alice", "exp": now() + 600,
            "acl": {"pub": ["devices/%c/up", "users/%u/#"], "sub": ["devices/%c/down/#"]},
        });
        let id = v.verify(&ANON, &hs256(&claims, b"s3cret-key")).unwrap();
        let acl = id.acl.expect("rules from the claim");
        let who = ClientInfo::new("dev1", Some("alice"), "default");
        let rows = [
            (Access::Publish, "devices/dev1/up", true),
            (Access::Publish, "devices/dev2/up", false),
            (Access::Publish, "users/alice/x", true),
            (Access::Publish, "users/bob/x", false),
            (Access::Subscribe, "devices/dev1/down/#", true),
            (Access::Subscribe, "devices/+/down/#", false),
            (Access::Receive, "devices/dev1/down/cmd", true),
            (Access::Publish, "devices/dev1/down/cmd", false),
            (Access::Receive, "devices/dev1/up", false),
        ];
        for (access, topic, allowed) in rows {
            assert_eq!(
                acl.check(&who, access, topic),
                allowed,
                "{access:?} {topic}"
            );
        }
        // No claim: nothing granted. A malformed one: refused.
        let bare = json!({"sub": "alice", "exp": now() + 600});
        let id = v.verify(&ANON, &hs256(&bare, b"s3cret-key")).unwrap();
        assert!(!id
            .acl
            .unwrap()
            .check(&who, Access::Publish, "devices/dev1/up"));
        for bad in [
            json!(["a"]),
            json!({"pub": "a/b"}),
            json!({"write": ["a"]}),
            json!({"pub": ["a\ntopic readwrite #"]}),
            json!({"pub": [1]}),
        ] {
            let claims = json!({"sub": "alice", "exp": now() + 600, "acl": bad});
            let err = v.verify(&ANON, &hs256(&claims, b"s3cret-key")).err();
            assert!(
                matches!(err, Some(TokenRejected::BadAclClaim(_))),
                "{err:?}"
            );
        }
    }

    #[test]
    fn key_files_that_cannot_be_used_are_errors_naming_the_file() {
        let dir = files(
            "jwt-bad",
            &[("empty", b"\n"), ("junk.pem", b"junk"), ("jwks", b"{}")],
        );
        let load = |s: JwtSettings| JwtVerifier::load(&s).unwrap_err().to_string();
        let p = |n: &str| Some(dir.path().join(n));
        for (settings, name) in [
            (
                JwtSettings {
                    secret_file: p("empty"),
                    ..JwtSettings::default()
                },
                "empty",
            ),
            (
                JwtSettings {
                    public_key_file: p("junk.pem"),
                    ..JwtSettings::default()
                },
                "junk.pem",
            ),
            (
                JwtSettings {
                    jwks_file: p("jwks"),
                    ..JwtSettings::default()
                },
                "jwks",
            ),
            (
                JwtSettings {
                    secret_file: p("missing"),
                    ..JwtSettings::default()
                },
                "missing",
            ),
        ] {
            let err = load(settings);
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn token_shape() {
        assert!(looks_like_token(b"eyJhbGciOi.eyJzdWIiOi.sig-_"));
        assert!(!looks_like_token(b"correct horse"));
        assert!(!looks_like_token(b"a.b"));
        assert!(!looks_like_token(b"a.b.c d"));
    }
}
