//! JWT authentication over real sockets: a token in the CONNECT password (no user name needed)
//! lets a client in under the token's user name and limits it to its ACL claim; expired,
//! forged and mismatched tokens are refused with the code of the client's version; RS256 from
//! a PEM key file and ES256 from a key pair made now; keys per listener; SIGHUP (reload)
//! re-reads the key files.

use crate::support::streams::*;
use crate::support::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::path::PathBuf;
use uringmq::Transport;

const RSA_PRIVATE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/auth/jwt_rs256_private.pem"
);
const RSA_PUBLIC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/auth/jwt_rs256_public.pem"
);

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

/// A token for `sub`, valid for ten minutes, with `extra` claims.
fn claims(sub: &str, extra: Value) -> Value {
    let mut c = json!({"sub": sub, "exp": now() + 600});
    if let (Value::Object(c), Value::Object(extra)) = (&mut c, extra) {
        c.extend(extra);
    }
    c
}

fn with_token(proto: Protocol, id: &str, user: Option<&str>, token: &str) -> Connect {
    let mut c = connect_packet(proto, id);
    c.username = user.map(Into::into);
    c.password = Some(bytes::Bytes::copy_from_slice(token.as_bytes()));
    c
}

fn connack(b: &Broker, c: Connect) -> ReasonCode {
    Client::connect_with(b.local_addr(), c).1.reason_code
}

fn secret_file(tag: &str, secret: &[u8]) -> PathBuf {
    let path = scratch_dir(tag).join("secret");
    std::fs::write(&path, secret).unwrap();
    path
}

#[test]
fn a_token_lets_its_client_publish_and_subscribe_only_where_its_claim_allows() {
    let secret = secret_file("jwt-acl", b"hs-secret\n");
    let b = broker_with(|c| {
        c.jwt_secret_file = Some(secret.clone());
        c.jwt_acl_claim = Some("acl".into());
        c.auth_failure_delay_ms = 0;
    });
    let acl =
        json!({"acl": {"pub": ["devices/%c/up", "users/%u/#"], "sub": ["devices/%c/down/#"]}});
    let token = hs256(&claims("owner", acl), b"hs-secret");
    let spy = b.subscribe("#", QoS::AtLeastOnce).unwrap();
    for proto in [Protocol::V5, Protocol::V3_1_1] {
        let id = format!("dev{}", proto as u8);
        // v5: no user name in CONNECT, the token names the user ("owner"). 3.1.1 allows a
        // password only with a user name [MQTT-3.1.2-22].
        let user = (!proto.is_v5()).then_some("owner");
        let (mut c, ack) =
            Client::connect_with(b.local_addr(), with_token(proto, &id, user, &token));
        assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "{proto:?}");
        c.publish(
            &format!("devices/{id}/up"),
            b"mine",
            QoS::AtLeastOnce,
            false,
        );
        c.publish("users/owner/x", b"by user name", QoS::AtLeastOnce, false);
        let denied = publish("devices/other/up", b"theirs", QoS::AtLeastOnce, false);
        let code = c.publish_with(denied);
        if proto.is_v5() {
            assert_eq!(code, ReasonCode::NOT_AUTHORIZED);
        }
        for topic in [format!("devices/{id}/up"), "users/owner/x".to_owned()] {
            let d = spy
                .recv_timeout(Some(WAIT))
                .expect("allowed publish delivered");
            assert_eq!(d.topic, topic);
        }
        let opts = SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            ..Default::default()
        };
        let down = format!("devices/{id}/down/#");
        let codes = c.subscribe_with(&[(&down, opts), ("#", opts)], Default::default());
        assert!(!codes[0].is_error(), "{codes:?}");
        assert!(codes[1].is_error(), "{codes:?}");
    }
    assert!(
        spy.try_recv().is_none(),
        "the denied publishes went nowhere"
    );
}

#[test]
fn expired_forged_and_mismatched_tokens_are_refused() {
    let secret = secret_file("jwt-refused", b"hs-secret");
    let b = broker_with(|c| {
        c.jwt_secret_file = Some(secret.clone());
        c.auth_failure_delay_ms = 0;
    });
    let expired = hs256(&json!({"sub": "a", "exp": now() - 3600}), b"hs-secret");
    let forged = hs256(&claims("a", json!({})), b"guess");
    let future = hs256(&claims("a", json!({"nbf": now() + 3600})), b"hs-secret");
    let valid = hs256(&claims("a", json!({})), b"hs-secret");
    let bad = ReasonCode::BAD_USER_NAME_OR_PASSWORD; // v5 0x86; v3.1.1 return code 4
    for proto in [Protocol::V5, Protocol::V3_1_1] {
        let user = (!proto.is_v5()).then_some("a");
        for (i, token) in [&expired, &forged, &future].into_iter().enumerate() {
            let code = connack(&b, with_token(proto, &format!("r{i}"), user, token));
            assert_eq!(code, bad, "{proto:?} token {i}");
        }
        // The CONNECT user name must be the token's.
        let code = connack(&b, with_token(proto, "m", Some("mallory"), &valid));
        assert_eq!(code, bad, "{proto:?}");
        assert_eq!(
            connack(&b, with_token(proto, "ok", Some("a"), &valid)),
            ReasonCode::SUCCESS
        );
        // JWT keys configured: a named client without a token is refused.
        let plain = with_token(proto, "p", Some("a"), "password");
        assert_eq!(connack(&b, plain), bad);
    }
    // Anonymous clients are still the anonymous policy's (loopback: allowed).
    let anon = connect_packet(Protocol::V5, "anon");
    assert_eq!(connack(&b, anon), ReasonCode::SUCCESS);
}

#[test]
fn rs256_and_es256_tokens_verify_against_pem_public_keys() {
    let rsa = broker_with(|c| c.jwt_public_key_file = Some(RSA_PUBLIC.into()));
    let signer = EncodingKey::from_rsa_pem(&std::fs::read(RSA_PRIVATE).unwrap()).unwrap();
    let token = encode(
        &Header::new(Algorithm::RS256),
        &claims("r", json!({})),
        &signer,
    )
    .unwrap();
    assert_eq!(
        connack(&rsa, with_token(Protocol::V5, "r", None, &token)),
        ReasonCode::SUCCESS
    );
    // An HS256 token keyed with the public key's text (algorithm confusion).
    let public = std::fs::read(RSA_PUBLIC).unwrap();
    let confused = hs256(&claims("r", json!({})), &public);
    assert_eq!(
        connack(&rsa, with_token(Protocol::V5, "c", None, &confused)),
        ReasonCode::BAD_USER_NAME_OR_PASSWORD
    );

    let pair = rcgen::KeyPair::generate().unwrap();
    let path = scratch_dir("jwt-es256").join("public.pem");
    std::fs::write(&path, pair.public_key_pem()).unwrap();
    let ec = broker_with(|c| c.jwt_public_key_file = Some(path.clone()));
    let signer = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
    let token = encode(
        &Header::new(Algorithm::ES256),
        &claims("e", json!({})),
        &signer,
    )
    .unwrap();
    assert_eq!(
        connack(&ec, with_token(Protocol::V5, "e", None, &token)),
        ReasonCode::SUCCESS
    );
}

#[test]
fn listeners_may_have_their_own_keys_and_reload_re_reads_them() {
    let global = secret_file("jwt-global", b"global-secret");
    let own = secret_file("jwt-own", b"own-secret");
    let b = broker_with(|c| {
        c.jwt_secret_file = Some(global.clone());
        c.auth_failure_delay_ms = 0;
        let mut l = listener(Transport::Tcp);
        l.name = Some("devices".into());
        l.jwt_secret_file = Some(own.clone());
        c.listeners.push(l);
    });
    let on = |addr, token: &str| {
        Client::connect_with(addr, with_token(Protocol::V5, "x", None, token))
            .1
            .reason_code
    };
    let global_token = hs256(&claims("g", json!({})), b"global-secret");
    let own_token = hs256(&claims("o", json!({})), b"own-secret");
    let (default, devices) = (b.local_addr(), extra_addr(&b, 0));
    let bad = ReasonCode::BAD_USER_NAME_OR_PASSWORD;
    assert_eq!(on(default, &global_token), ReasonCode::SUCCESS);
    assert_eq!(on(default, &own_token), bad);
    assert_eq!(on(devices, &own_token), ReasonCode::SUCCESS);
    assert_eq!(on(devices, &global_token), bad);

    // SIGHUP: the new secret applies to the next CONNECT; a bad file keeps the old one.
    std::fs::write(&own, b"rotated-secret").unwrap();
    let report = b.reload();
    assert!(report.errors.is_empty(), "{report:?}");
    let rotated = hs256(&claims("o", json!({})), b"rotated-secret");
    assert_eq!(on(devices, &rotated), ReasonCode::SUCCESS);
    assert_eq!(on(devices, &own_token), bad);
    std::fs::write(&own, b"\n").unwrap();
    let report = b.reload();
    assert_eq!(report.errors.len(), 1, "{report:?}");
    assert!(report.errors[0].contains("listener devices"), "{report:?}");
    assert_eq!(
        on(devices, &rotated),
        ReasonCode::SUCCESS,
        "previous key kept"
    );
}

/// A will is a PUBLISH by its client: a client whose token rules do not allow the will's
/// topic is refused at CONNECT, and one whose will they allow has it delivered.
#[test]
fn a_will_obeys_the_rules_of_its_clients_token() {
    let secret = secret_file("jwt-will", b"hs-secret\n");
    let b = broker_with(|c| {
        c.jwt_secret_file = Some(secret.clone());
        c.jwt_acl_claim = Some("acl".into());
        c.auth_failure_delay_ms = 0;
    });
    let acl = json!({"acl": {"pub": ["devices/%c/status"], "sub": []}});
    let token = hs256(&claims("owner", acl), b"hs-secret");
    let spy = b.subscribe("#", QoS::AtLeastOnce).unwrap();
    let with_will = |proto: Protocol, id: &str, topic: &str| {
        let user = (!proto.is_v5()).then_some("owner");
        let mut c = with_token(proto, id, user, &token);
        c.will = Some(LastWill {
            topic: topic.into(),
            payload: bytes::Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Default::default(),
        });
        c
    };
    for proto in [Protocol::V5, Protocol::V3_1_1] {
        let id = format!("w{}", proto as u8);
        let refused = connack(&b, with_will(proto, &id, "secret/pwned"));
        assert_eq!(refused, ReasonCode::NOT_AUTHORIZED, "{proto:?}");
        let own = format!("devices/{id}/status");
        let (c, ack) = Client::connect_with(b.local_addr(), with_will(proto, &id, &own));
        assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "{proto:?}");
        drop(c);
        let d = spy.recv_timeout(Some(WAIT)).expect("the allowed will");
        assert_eq!(d.topic, own);
    }
    assert!(spy.try_recv().is_none(), "the refused wills went nowhere");
    assert_eq!(b.stats().retained, 2);
}
