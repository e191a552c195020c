//! Authentication and authorisation over real sockets: a password file made by
//! mosquitto_passwd, refusals with the right CONNACK code per version (and a counter), the
//! anonymous policy per listener, the ACL matrix (users x topics x read/write, `%c`/`%u`
//! patterns) in v3.1.1 and v5 including retained messages and wills, password and ACL files per
//! listener (and their reload), ACL checks of messages queued for an offline session against
//! the listener it last used, the certificate CN as user name, and MQTT 5 enhanced
//! authentication with SCRAM-SHA-256 (embedded, and from the config file with the password
//! file's SCRAM entries) including re-authentication.

use crate::support::streams::*;
use crate::support::*;
use std::path::PathBuf;
use std::sync::Arc;
use uringmq::{Hooks, Transport};
use uringmq_auth::{ScramClient, ScramSha256};

/// Made by mosquitto_passwd 2.0.11 (see its README): alice/"correct horse",
/// bob/"b0b:with:colons", carol ($6$)/"carol-pw", dave/"ünïcødé pässwörd".
const MOSQUITTO_PASSWD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/auth/mosquitto_passwd_2.0.11.txt"
);

fn login(proto: Protocol, id: &str, user: Option<&str>, password: Option<&str>) -> Connect {
    let mut c = connect_packet(proto, id);
    c.username = user.map(Into::into);
    c.password = password.map(|p| bytes::Bytes::copy_from_slice(p.as_bytes()));
    c
}

fn write_file(tag: &str, text: &str) -> (PathBuf, PathBuf) {
    let dir = scratch_dir(tag);
    let path = dir.join(tag);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn a_mosquitto_passwd_file_is_accepted_as_is() {
    let b = broker_with(|c| {
        c.password_file = Some(MOSQUITTO_PASSWD.into());
        c.allow_anonymous = Some(false);
        c.auth_failure_delay_ms = 0;
    });
    let users = [
        ("alice", "correct horse"),
        ("bob", "b0b:with:colons"),
        ("carol", "carol-pw"),
        ("dave", "ünïcødé pässwörd"),
    ];
    for proto in [Protocol::V3_1_1, Protocol::V5] {
        for (user, pw) in users {
            let (_c, ack) = Client::connect_with(
                b.local_addr(),
                login(
                    proto,
                    &format!("{user}-{}", proto as u8),
                    Some(user),
                    Some(pw),
                ),
            );
            assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "{user}");
        }
    }
}

#[test]
fn failed_authentication_uses_the_code_of_the_clients_version_and_is_counted() {
    let b = broker_with(|c| {
        c.password_file = Some(MOSQUITTO_PASSWD.into());
        c.allow_anonymous = Some(false);
        c.auth_failure_delay_ms = 50;
    });
    let cases = [
        // (protocol, user, password, expected code as decoded for that version)
        (
            Protocol::V5,
            Some("alice"),
            Some("wrong"),
            ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        ),
        (
            Protocol::V5,
            Some("nobody"),
            Some("x"),
            ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        ),
        (Protocol::V5, None, None, ReasonCode::NOT_AUTHORIZED),
        // 3.1.1: return code 4 (bad user name or password) and 5 (not authorised).
        (
            Protocol::V3_1_1,
            Some("alice"),
            Some("wrong"),
            ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        ),
        (Protocol::V3_1_1, None, None, ReasonCode::NOT_AUTHORIZED),
    ];
    for (i, (proto, user, pw, code)) in cases.into_iter().enumerate() {
        let (mut c, ack) =
            Client::connect_with(b.local_addr(), login(proto, &format!("f{i}"), user, pw));
        assert_eq!(ack.reason_code, code, "case {i}");
        assert!(c.closed().0, "refused connections are closed");
    }
    assert_eq!(b.stats().auth_failures, 5);
}

#[test]
fn anonymous_policy_is_per_listener() {
    let b = broker_with(|c| {
        c.allow_anonymous = Some(false);
        c.auth_failure_delay_ms = 0;
        let mut open = listener(Transport::Tcp);
        open.allow_anonymous = Some(true);
        c.listeners.push(open);
    });
    let (_c, ack) = Client::connect_with(b.local_addr(), connect_packet(Protocol::V5, "anon"));
    assert_eq!(ack.reason_code, ReasonCode::NOT_AUTHORIZED);
    let (_c, ack) = Client::connect_with(extra_addr(&b, 0), connect_packet(Protocol::V5, "anon"));
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
}

const ACL: &str = "\
# anonymous clients
topic read public/#

user alice
topic readwrite alice/#
topic read shared/#
topic write shared/alice
topic deny alice/secret

user bob
topic read shared/#
topic read alice/#
topic write shared/bob

pattern readwrite devices/%c/#
pattern read users/%u/inbox
";

/// The ACL matrix: who may subscribe, publish and receive where, in 3.1.1 and 5.
#[test]
fn acl_matrix_v3_and_v5() {
    let (_dir, acl) = write_file("acl", ACL);
    let b = broker_with(|c| c.acl_file = Some(acl));
    for proto in [Protocol::V3_1_1, Protocol::V5] {
        let v = proto as u8;
        let denied_sub = if proto.is_v5() {
            ReasonCode::NOT_AUTHORIZED
        } else {
            ReasonCode::V3_SUBACK_FAILURE
        };
        let connect = |id: &str, user: Option<&str>| {
            let (c, ack) = Client::connect_with(b.local_addr(), login(proto, id, user, None));
            assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
            c
        };
        let mut alice = connect(&format!("a{v}"), Some("alice"));
        let mut bob = connect(&format!("b{v}"), Some("bob"));
        let mut anon = connect(&format!("n{v}"), None);
        let sub = |c: &mut Client, f: &str| {
            c.subscribe_with(&[(f, Default::default())], Default::default())[0]
        };
        // SUBSCRIBE, per filter: (client, filter, granted?)
        let ok = ReasonCode::SUCCESS;
        assert_eq!(sub(&mut alice, "alice/#"), ok);
        assert_eq!(sub(&mut alice, "shared/#"), ok);
        assert_eq!(sub(&mut alice, "bob/#"), denied_sub);
        assert_eq!(sub(&mut alice, "alice/secret"), denied_sub);
        assert_eq!(sub(&mut bob, "alice/+"), ok);
        assert_eq!(sub(&mut bob, "shared/#"), ok);
        assert_eq!(sub(&mut bob, "#"), denied_sub);
        assert_eq!(sub(&mut anon, "public/#"), ok);
        assert_eq!(sub(&mut anon, "shared/#"), denied_sub);
        // Patterns: %c is the client id, %u the user name.
        assert_eq!(sub(&mut bob, &format!("devices/b{v}/#")), ok);
        assert_eq!(sub(&mut bob, &format!("devices/a{v}/#")), denied_sub);
        assert_eq!(sub(&mut bob, "users/bob/inbox"), ok);
        assert_eq!(sub(&mut anon, "users/bob/inbox"), denied_sub);

        // PUBLISH: a denied QoS 1 PUBLISH gets PUBACK 0x87 in v5, a plain PUBACK in 3.1.1,
        // and is dropped either way.
        let denied_pub = if proto.is_v5() {
            ReasonCode::NOT_AUTHORIZED
        } else {
            ReasonCode::SUCCESS
        };
        let qos1 = |c: &mut Client, t: &str| {
            c.publish_with(publish(t, t.as_bytes(), QoS::AtLeastOnce, false))
        };
        // Publishers of their own, so their subscriptions do not interleave with the acks.
        let mut ap = connect(&format!("ap{v}"), Some("alice"));
        let mut bp = connect(&format!("bp{v}"), Some("bob"));
        let mut np = connect(&format!("np{v}"), None);
        assert_eq!(qos1(&mut bp, "alice/x"), denied_pub);
        assert_eq!(qos1(&mut ap, "alice/x"), ok);
        // bob receives alice/x (read on alice/#), alice her own.
        assert_eq!(bob.recv_publish().topic, "alice/x");
        assert_eq!(alice.recv_publish().topic, "alice/x");
        assert_eq!(qos1(&mut ap, "alice/secret"), denied_pub);
        assert_eq!(qos1(&mut bp, "shared/bob"), ok);
        assert_eq!(alice.recv_publish().topic, "shared/bob");
        assert_eq!(bob.recv_publish().topic, "shared/bob");
        assert_eq!(qos1(&mut ap, "shared/bob"), denied_pub);
        assert_eq!(qos1(&mut np, "public/x"), denied_pub);
        // %c: bp may write under its own client id only.
        assert_eq!(qos1(&mut bp, &format!("devices/b{v}/up")), denied_pub);
        assert_eq!(qos1(&mut bp, &format!("devices/bp{v}/up")), ok);
        alice.expect_nothing();
        bob.expect_nothing();
        anon.expect_nothing();
    }
}

#[test]
fn deliveries_retained_messages_and_wills_are_filtered_by_read_rules() {
    let (_dir, acl) = write_file(
        "acl",
        "user admin\ntopic readwrite #\n\nuser reader\ntopic read news/#\ntopic deny news/private\n",
    );
    let b = broker_with(|c| c.acl_file = Some(acl));
    let connect = |id: &str, user: &str| {
        let c = login(Protocol::V5, id, Some(user), None);
        let (c, ack) = Client::connect_with(b.local_addr(), c);
        assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
        c
    };
    let mut admin = connect("admin", "admin");
    // QoS 1: PUBACK comes after the broker stored the message and queued it for the other
    // core, so the SUBSCRIBE below (perhaps on the other core) finds it. A QoS 0 PUBLISH
    // has no answer to wait for and could be overtaken by that SUBSCRIBE.
    admin.publish("news/public", b"r1", QoS::AtLeastOnce, true);
    admin.publish("news/private", b"r2", QoS::AtLeastOnce, true);
    // The will of a client that dies on a denied topic.
    let mut dying = login(Protocol::V5, "dying", Some("admin"), None);
    dying.will = Some(LastWill {
        topic: "news/private".into(),
        payload: bytes::Bytes::from_static(b"will"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
    });
    let (dying, _) = Client::connect_with(b.local_addr(), dying);

    // news/# overlaps the denial: granted, and news/private is filtered on delivery.
    let mut reader = connect("reader", "reader");
    reader.subscribe("news/#", QoS::AtMostOnce);
    let retained = reader.recv_publish();
    assert_eq!(
        (retained.topic.as_str(), &retained.payload[..]),
        ("news/public", &b"r1"[..])
    );
    reader.expect_nothing();

    // A watcher allowed to read everything sees the will, so the will has been routed (and
    // queued for the reader's core) before the live messages below are published.
    let mut watcher = connect("watcher", "admin");
    watcher.subscribe("news/private", QoS::AtMostOnce);
    assert_eq!(&watcher.recv_publish().payload[..], b"r2", "retained");
    drop(dying);
    assert_eq!(&watcher.recv_publish().payload[..], b"will");
    admin.publish("news/private", b"live", QoS::AtMostOnce, false);
    admin.publish("news/public", b"live", QoS::AtMostOnce, false);
    let p = reader.recv_publish();
    assert_eq!(
        p.topic, "news/public",
        "neither the will nor the live denied message"
    );
    reader.expect_nothing();
}

/// The fixture's lines for these users only: a password file of its own per listener.
fn passwd_of(users: &[&str]) -> String {
    let all = std::fs::read_to_string(MOSQUITTO_PASSWD).unwrap();
    all.lines()
        .filter(|l| users.iter().any(|u| l.starts_with(&format!("{u}:"))))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Listener `a` has password file A (alice) and ACL A; listener `b` has password file B (bob)
/// and no ACL (none global either). Each listener's users are refused on the other, ACL A
/// binds on `a` only (SUBSCRIBE, PUBLISH and delivery), and SIGHUP re-reads both files.
#[test]
fn password_and_acl_files_per_listener() {
    let dir = scratch_dir("per-listener");
    let (passwd_a, passwd_b, acl_a) = (
        dir.join("passwd-a"),
        dir.join("passwd-b"),
        dir.join("acl-a"),
    );
    std::fs::write(&passwd_a, passwd_of(&["alice"])).unwrap();
    std::fs::write(&passwd_b, passwd_of(&["bob"])).unwrap();
    std::fs::write(
        &acl_a,
        "user alice\ntopic readwrite a/#\ntopic deny a/private\n",
    )
    .unwrap();
    let b = broker_with(|c| {
        c.allow_anonymous = Some(false);
        c.auth_failure_delay_ms = 0;
        let mut a = listener(Transport::Tcp);
        a.name = Some("a".into());
        a.password_file = Some(passwd_a.clone());
        a.acl_file = Some(acl_a.clone());
        let mut l = listener(Transport::Tcp);
        l.name = Some("b".into());
        l.password_file = Some(passwd_b.clone());
        c.listeners.extend([a, l]);
    });
    let (on_a, on_b) = (extra_addr(&b, 0), extra_addr(&b, 1));
    let alice = |id: &str| login(Protocol::V5, id, Some("alice"), Some("correct horse"));
    let bob = |id: &str| login(Protocol::V5, id, Some("bob"), Some("b0b:with:colons"));

    // A user of one listener's file is unknown to the other's.
    let (_c, ack) = Client::connect_with(on_b, alice("alice-on-b"));
    assert_eq!(ack.reason_code, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    let (_c, ack) = Client::connect_with(on_a, bob("bob-on-a"));
    assert_eq!(ack.reason_code, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    let (_c, ack) = Client::connect_with(on_a, connect_packet(Protocol::V5, "anon"));
    assert_eq!(ack.reason_code, ReasonCode::NOT_AUTHORIZED);

    let connect = |addr, c: Connect| {
        let (c, ack) = Client::connect_with(addr, c);
        assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
        c
    };
    // Subscribers, and publishers of their own so deliveries do not interleave with acks.
    let (mut a, mut ap) = (
        connect(on_a, alice("alice")),
        connect(on_a, alice("alice-p")),
    );
    let (mut bb, mut bp) = (connect(on_b, bob("bob")), connect(on_b, bob("bob-p")));
    let sub = |c: &mut Client, f: &str| {
        c.subscribe_with(&[(f, Default::default())], Default::default())[0]
    };
    let qos1 = |c: &mut Client, t: &str| c.publish_with(publish(t, b"x", QoS::AtLeastOnce, false));
    // ACL A on listener a.
    assert_eq!(sub(&mut a, "a/#"), ReasonCode::SUCCESS);
    assert_eq!(sub(&mut a, "secret/#"), ReasonCode::NOT_AUTHORIZED);
    assert_eq!(qos1(&mut ap, "secret/x"), ReasonCode::NOT_AUTHORIZED);
    // Not on listener b: bob may subscribe and publish anywhere.
    assert_eq!(sub(&mut bb, "#"), ReasonCode::SUCCESS);
    assert_eq!(qos1(&mut bp, "secret/x"), ReasonCode::SUCCESS);
    assert_eq!(bb.recv_publish().topic, "secret/x");
    // Deliveries are checked against the receiver's listener: a/x reaches both; a/private,
    // denied by ACL A, is filtered for alice's a/# and still reaches bob on b.
    assert_eq!(qos1(&mut ap, "a/x"), ReasonCode::SUCCESS);
    assert_eq!(a.recv_publish().topic, "a/x");
    assert_eq!(bb.recv_publish().topic, "a/x");
    assert_eq!(qos1(&mut bp, "a/private"), ReasonCode::SUCCESS);
    assert_eq!(bb.recv_publish().topic, "a/private");
    a.expect_nothing();
    bb.expect_nothing();

    // SIGHUP re-reads each listener's files; a broken file keeps the previous one.
    std::fs::write(&passwd_b, passwd_of(&["alice", "bob"])).unwrap();
    std::fs::write(&acl_a, "bogus line\n").unwrap();
    let report = b.reload();
    assert!(
        report
            .reloaded
            .contains(&"password_file (listener a)".to_owned())
            && report
                .reloaded
                .contains(&"password_file (listener b)".to_owned()),
        "{report:?}"
    );
    assert_eq!(report.errors.len(), 1, "{report:?}");
    assert!(
        report.errors[0].starts_with("acl_file (listener a)"),
        "{report:?}"
    );
    let (_c, ack) = Client::connect_with(on_b, alice("alice-on-b-2"));
    assert_eq!(
        ack.reason_code,
        ReasonCode::SUCCESS,
        "file B now lists alice"
    );
    assert_eq!(
        sub(&mut a, "secret/#"),
        ReasonCode::NOT_AUTHORIZED,
        "ACL A kept"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_listener_file_refuses_to_start_naming_the_key() {
    let mut c = config();
    let mut l = listener(Transport::Tcp);
    l.name = Some("lan".into());
    l.password_file = Some("/nonexistent/passwd".into());
    c.listeners.push(l);
    let err = Broker::builder(c)
        .start()
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("listener.password_file") && err.contains("lan"),
        "{err}"
    );
}

#[test]
fn certificate_common_name_is_the_user_name() {
    let pki = pki("device-7");
    let (_dir, acl) = write_file("acl", "user device-7\ntopic readwrite dev/7/#\n");
    let mut l = tls_listener(&pki, Transport::Tls);
    l.ca_file = Some(pki.paths.ca_cert.clone());
    l.use_identity_as_username = true;
    let b = broker_with(|c| {
        c.acl_file = Some(acl);
        c.auth_failure_delay_ms = 0;
        c.listeners.push(l);
    });
    let paths = &pki.paths;
    let config = client_tls(
        &paths.ca_cert,
        Some((&paths.client_cert, &paths.client_key)),
        &rustls::version::TLS13,
    );
    let mut m = Client::from_stream(tls_connect(extra_addr(&b, 0), config), Protocol::V5);
    // The CONNECT user name is replaced by the certificate's CN.
    let ack = m.send_connect(login(Protocol::V5, "cn", Some("someone-else"), Some("x")));
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    m.subscribe("dev/7/#", QoS::AtMostOnce);
    assert_eq!(
        m.subscribe_with(&[("dev/8/#", Default::default())], Default::default()),
        [ReasonCode::NOT_AUTHORIZED]
    );

    // Without a certificate there is no identity: refused like a bad user name or password.
    let anonymous = client_tls(&paths.ca_cert, None, &rustls::version::TLS13);
    let mut m = Client::from_stream(tls_connect(extra_addr(&b, 0), anonymous), Protocol::V3_1_1);
    let ack = m.send_connect(login(Protocol::V3_1_1, "nocert", Some("device-7"), None));
    assert_eq!(ack.reason_code, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
}

fn scram_broker() -> Broker {
    let mut scram = ScramSha256::new();
    scram.set_password("carol", b"pencil");
    let mut c = config();
    c.auth_failure_delay_ms = 0;
    Broker::builder(c)
        .enhanced_auth(Arc::new(scram))
        .start()
        .expect("broker")
}

fn scram_connect(id: &str, first: Vec<u8>) -> Connect {
    let mut c = connect_packet(Protocol::V5, id);
    c.properties.authentication_method = Some("SCRAM-SHA-256".into());
    c.properties.authentication_data = Some(first.into());
    c
}

fn auth_continue(data: Vec<u8>) -> Packet {
    Packet::Auth(Auth {
        reason_code: ReasonCode::CONTINUE_AUTHENTICATION,
        properties: AuthProperties {
            authentication_method: Some("SCRAM-SHA-256".into()),
            authentication_data: Some(data.into()),
            ..Default::default()
        },
    })
}

#[test]
fn scram_sha256_enhanced_authentication() {
    let b = scram_broker();
    let mut client = ScramClient::new("carol", b"pencil");
    let mut c = Client::raw(b.local_addr(), Protocol::V5);
    c.send(&Packet::Connect(Box::new(scram_connect(
        "scram",
        client.client_first(),
    ))));
    let server_first = match c.recv() {
        Some(Packet::Auth(a)) => {
            assert_eq!(a.reason_code, ReasonCode::CONTINUE_AUTHENTICATION);
            assert_eq!(
                a.properties.authentication_method.as_deref(),
                Some("SCRAM-SHA-256")
            );
            a.properties.authentication_data.unwrap()
        }
        other => panic!("expected AUTH 0x18, got {other:?}"),
    };
    let client_final = client.client_final(&server_first).unwrap();
    c.send(&auth_continue(client_final));
    match c.recv() {
        Some(Packet::ConnAck(a)) => {
            assert_eq!(a.reason_code, ReasonCode::SUCCESS);
            assert_eq!(
                a.properties.authentication_method.as_deref(),
                Some("SCRAM-SHA-256")
            );
            let server_final = a.properties.authentication_data.unwrap();
            client
                .verify_server_final(&server_final)
                .expect("the client verifies the server");
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
    c.subscribe("s/t", QoS::AtMostOnce);
    c.ping();
}

#[test]
fn scram_with_a_wrong_password_or_an_unknown_method_is_refused() {
    let b = scram_broker();
    let mut client = ScramClient::new("carol", b"wrong");
    let mut c = Client::raw(b.local_addr(), Protocol::V5);
    c.send(&Packet::Connect(Box::new(scram_connect(
        "bad",
        client.client_first(),
    ))));
    let Some(Packet::Auth(a)) = c.recv() else {
        panic!("expected AUTH")
    };
    let client_final = client
        .client_final(&a.properties.authentication_data.unwrap())
        .unwrap();
    c.send(&auth_continue(client_final));
    match c.recv() {
        Some(Packet::ConnAck(a)) => assert_eq!(a.reason_code, ReasonCode::NOT_AUTHORIZED),
        other => panic!("expected CONNACK 0x87, got {other:?}"),
    }
    assert!(c.closed().0);

    let mut unknown = connect_packet(Protocol::V5, "unknown");
    unknown.properties.authentication_method = Some("KERBEROS".into());
    let (_c, ack) = Client::connect_with(b.local_addr(), unknown);
    assert_eq!(ack.reason_code, ReasonCode::BAD_AUTHENTICATION_METHOD);
    assert_eq!(b.stats().auth_failures, 1);

    // AUTH before any exchange is a protocol error.
    let mut c = Client::raw(b.local_addr(), Protocol::V5);
    c.send(&auth_continue(b"x".to_vec()));
    assert!(c.closed().0);
}

/// A persistent session that is offline is checked against the ACL of the listener it last
/// connected through: what that ACL allows is queued, what it denies is not.
#[test]
fn messages_queued_offline_follow_the_acl_of_the_sessions_last_listener() {
    let (_dir, acl_a) = write_file(
        "acl-a",
        "user alice\ntopic readwrite a/#\ntopic deny a/private\n",
    );
    let b = broker_with(|c| {
        let mut a = listener(Transport::Tcp);
        a.name = Some("a".into());
        a.acl_file = Some(acl_a);
        c.listeners.push(a);
    });
    let on_a = extra_addr(&b, 0);
    let persistent = |clean_start| {
        let mut c = login(Protocol::V5, "alice", Some("alice"), None);
        c.clean_start = clean_start;
        c.properties.session_expiry_interval = Some(300);
        c
    };
    let (mut alice, ack) = Client::connect_with(on_a, persistent(true));
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    alice.subscribe("a/#", QoS::AtLeastOnce);
    alice.disconnect();

    // The publisher is on the default listener, which has no ACL.
    let mut publisher = Client::connect(b.local_addr(), Protocol::V5, "pub");
    for t in ["a/private", "a/x"] {
        publisher.publish(t, t.as_bytes(), QoS::AtLeastOnce, false);
    }
    let (mut alice, ack) = Client::connect_with(on_a, persistent(false));
    assert!(ack.session_present);
    assert_eq!(
        alice.recv_publish().topic,
        "a/x",
        "allowed by listener a's ACL"
    );
    alice.expect_nothing();
}

/// The client side of SCRAM-SHA-256 (RFC 5802, RFC 7677), written here from the RFC rather
/// than taken from uringmq-auth, so the broker's side is checked against another reading.
mod scram_client {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};

    fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
        m.update(data);
        m.finalize().into_bytes().to_vec()
    }

    pub struct Scram {
        password: Vec<u8>,
        bare: String,
        nonce: String,
        expected_server_signature: Option<Vec<u8>>,
    }

    impl Scram {
        pub fn new(user: &str, password: &str, nonce: &str) -> Self {
            Scram {
                password: password.as_bytes().to_vec(),
                bare: format!("n={user},r={nonce}"),
                nonce: nonce.to_owned(),
                expected_server_signature: None,
            }
        }

        /// client-first-message: no channel binding, no authzid.
        pub fn first(&self) -> Vec<u8> {
            format!("n,,{}", self.bare).into_bytes()
        }

        /// client-final-message for the server-first-message.
        pub fn last(&mut self, server_first: &[u8]) -> Vec<u8> {
            let server_first = std::str::from_utf8(server_first).unwrap();
            let field = |k: &str| {
                server_first
                    .split(',')
                    .find_map(|f| f.strip_prefix(k))
                    .unwrap_or_else(|| panic!("no {k} in {server_first}"))
            };
            let (nonce, salt, iterations) = (field("r="), field("s="), field("i="));
            assert!(nonce.starts_with(&self.nonce) && nonce.len() > self.nonce.len());
            let mut salted = [0u8; 32];
            pbkdf2::pbkdf2_hmac::<Sha256>(
                &self.password,
                &B64.decode(salt).unwrap(),
                iterations.parse().unwrap(),
                &mut salted,
            );
            let client_key = hmac(&salted, b"Client Key");
            let stored_key = Sha256::digest(&client_key);
            let without_proof = format!("c=biws,r={nonce}");
            let auth_message = format!("{},{server_first},{without_proof}", self.bare);
            let signature = hmac(&stored_key, auth_message.as_bytes());
            let proof: Vec<u8> = client_key
                .iter()
                .zip(&signature)
                .map(|(k, s)| k ^ s)
                .collect();
            let server_key = hmac(&salted, b"Server Key");
            self.expected_server_signature = Some(hmac(&server_key, auth_message.as_bytes()));
            format!("{without_proof},p={}", B64.encode(proof)).into_bytes()
        }

        /// Whether server-final-message proves the server knows our keys.
        pub fn server_verified(&self, server_final: &[u8]) -> bool {
            let v = std::str::from_utf8(server_final)
                .ok()
                .and_then(|m| m.strip_prefix("v="))
                .and_then(|v| B64.decode(v).ok());
            v.is_some() && v == self.expected_server_signature
        }
    }
}

use scram_client::Scram;

/// A broker configured from TOML text the way a bare-metal user would: a password file with
/// SCRAM-SHA-256 entries made by `uringmq passwd -H scram-sha-256`, `scram_sha256 = true`.
fn scram_config_broker() -> (Broker, PathBuf) {
    let dir = scratch_dir("scram-config");
    let passwd = dir.join("passwd");
    for (i, (user, pw)) in [("sam", "pencil"), ("tess", "crayon")]
        .into_iter()
        .enumerate()
    {
        let args = uringmq_auth::PasswdArgs {
            file: passwd.clone(),
            username: user.into(),
            create: i == 0,
            delete: false,
            batch_password: Some(pw.into()),
            scheme: uringmq_auth::Scheme::ScramSha256,
        };
        uringmq_auth::passwd::run(&args, &mut |_| unreachable!("batch mode")).unwrap();
    }
    let text = std::fs::read_to_string(&passwd).unwrap();
    assert!(!text.contains("pencil") && text.contains("sam:SCRAM-SHA-256$4096:"));
    let toml = format!(
        "port = 0\ncores = 2\npin_cores = false\nauth_failure_delay_ms = 0\n\
         allow_anonymous = false\npassword_file = {:?}\nscram_sha256 = true\n",
        passwd.display().to_string()
    );
    let config = Config::from_toml_str(&toml).expect("valid config");
    (Broker::builder(config).start().expect("broker"), dir)
}

fn auth_packet(code: ReasonCode, method: &str, data: Vec<u8>) -> Packet {
    Packet::Auth(Auth {
        reason_code: code,
        properties: AuthProperties {
            authentication_method: Some(method.into()),
            authentication_data: Some(data.into()),
            ..Default::default()
        },
    })
}

/// Answers the server's AUTH 0x18 (server-first) with client-final; returns the next packet.
fn scram_continue(c: &mut Client, scram: &mut Scram) -> Option<Packet> {
    let server_first = match c.recv() {
        Some(Packet::Auth(a)) if a.reason_code == ReasonCode::CONTINUE_AUTHENTICATION => {
            assert_eq!(
                a.properties.authentication_method.as_deref(),
                Some("SCRAM-SHA-256")
            );
            a.properties.authentication_data.expect("server-first")
        }
        other => panic!("expected AUTH 0x18, got {other:?}"),
    };
    let last = scram.last(&server_first);
    c.send(&auth_packet(
        ReasonCode::CONTINUE_AUTHENTICATION,
        "SCRAM-SHA-256",
        last,
    ));
    c.recv()
}

/// Connects `id` as `user` with SCRAM-SHA-256; returns the client and the CONNACK.
fn scram_login(b: &Broker, id: &str, user: &str, pw: &str) -> (Client, ConnAck) {
    let mut scram = Scram::new(user, pw, &format!("nonce-{id}"));
    let mut c = Client::raw(b.local_addr(), Protocol::V5);
    let mut connect = login(Protocol::V5, id, Some(user), None);
    connect.properties.authentication_method = Some("SCRAM-SHA-256".into());
    connect.properties.authentication_data = Some(scram.first().into());
    c.send(&Packet::Connect(Box::new(connect)));
    match scram_continue(&mut c, &mut scram) {
        Some(Packet::ConnAck(ack)) => {
            if ack.reason_code == ReasonCode::SUCCESS {
                let server_final = ack.properties.authentication_data.clone().unwrap();
                assert!(scram.server_verified(&server_final), "server proof");
            }
            (c, ack)
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// Starts a re-authentication (AUTH 0x19) and runs the exchange; returns the server's answer.
fn reauthenticate(c: &mut Client, user: &str, pw: &str, nonce: &str) -> (Scram, Option<Packet>) {
    let mut scram = Scram::new(user, pw, nonce);
    c.send(&auth_packet(
        ReasonCode::RE_AUTHENTICATE,
        "SCRAM-SHA-256",
        scram.first(),
    ));
    let answer = scram_continue(c, &mut scram);
    (scram, answer)
}

#[test]
fn scram_from_the_config_file_end_to_end() {
    let (b, dir) = scram_config_broker();
    let (mut c, ack) = scram_login(&b, "sam-1", "sam", "pencil");
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    assert_eq!(
        ack.properties.authentication_method.as_deref(),
        Some("SCRAM-SHA-256")
    );
    c.subscribe("s/t", QoS::AtMostOnce);

    // Wrong password, another user's password, no user name in CONNECT: refused with 0x87.
    for (id, user, pw) in [("bad-1", "sam", "crayon"), ("bad-2", "ghost", "pencil")] {
        let (mut bad, ack) = scram_login(&b, id, user, pw);
        assert_eq!(ack.reason_code, ReasonCode::NOT_AUTHORIZED, "{id}");
        assert!(bad.closed().0);
    }
    let mut anon = Client::raw(b.local_addr(), Protocol::V5);
    let mut connect = connect_packet(Protocol::V5, "no-user");
    connect.properties.authentication_method = Some("SCRAM-SHA-256".into());
    connect.properties.authentication_data = Some(Scram::new("sam", "pencil", "n").first().into());
    anon.send(&Packet::Connect(Box::new(connect)));
    match anon.recv() {
        Some(Packet::ConnAck(a)) => assert_eq!(a.reason_code, ReasonCode::NOT_AUTHORIZED),
        other => panic!("expected CONNACK 0x87, got {other:?}"),
    }
    assert_eq!(b.stats().auth_failures, 3);

    // The SCRAM entry also accepts the plain password in CONNECT.
    let (_plain, ack) = Client::connect_with(
        b.local_addr(),
        login(Protocol::V5, "plain", Some("tess"), Some("crayon")),
    );
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    c.ping();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reauthentication_succeeds_keeps_the_session_and_can_repeat() {
    let (b, dir) = scram_config_broker();
    let (mut c, ack) = scram_login(&b, "re", "sam", "pencil");
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    c.subscribe("r/#", QoS::AtLeastOnce);
    let mut publisher = Client::connect_with(
        b.local_addr(),
        login(Protocol::V5, "re-pub", Some("tess"), Some("crayon")),
    )
    .0;
    for round in 0..2 {
        let (scram, answer) = reauthenticate(&mut c, "sam", "pencil", &format!("re-{round}"));
        match answer {
            Some(Packet::Auth(a)) => {
                assert_eq!(a.reason_code, ReasonCode::SUCCESS, "AUTH 0x00");
                assert_eq!(
                    a.properties.authentication_method.as_deref(),
                    Some("SCRAM-SHA-256")
                );
                assert!(scram.server_verified(&a.properties.authentication_data.unwrap()));
            }
            other => panic!("expected AUTH 0x00, got {other:?}"),
        }
        // Same connection, same session.
        publisher.publish("r/x", b"after", QoS::AtLeastOnce, false);
        assert_eq!(&c.recv_publish().payload[..], b"after");
    }
    assert_eq!(b.stats().auth_failures, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn failed_reauthentication_ends_the_connection_with_0x87() {
    let (b, dir) = scram_config_broker();
    let (mut c, ack) = scram_login(&b, "re-bad", "sam", "pencil");
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    let (_, answer) = reauthenticate(&mut c, "sam", "wrong", "re-bad");
    match answer {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::NOT_AUTHORIZED),
        other => panic!("expected DISCONNECT 0x87, got {other:?}"),
    }
    assert!(c.closed().0, "closed after the failed re-authentication");
    assert_eq!(b.stats().auth_failures, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reauthentication_with_another_method_or_without_enhanced_auth_is_a_protocol_error() {
    let (b, dir) = scram_config_broker();
    let first = Scram::new("sam", "pencil", "x").first();
    // Another method than CONNECT's [MQTT-4.12.1-1].
    let (mut c, _) = scram_login(&b, "m1", "sam", "pencil");
    c.send(&auth_packet(
        ReasonCode::RE_AUTHENTICATE,
        "SCRAM-SHA-1",
        first.clone(),
    ));
    c.expect_disconnect(Some(ReasonCode::PROTOCOL_ERROR));
    // AUTH 0x18 after CONNACK without a re-authentication under way.
    let (mut c, _) = scram_login(&b, "m2", "sam", "pencil");
    c.send(&auth_packet(
        ReasonCode::CONTINUE_AUTHENTICATION,
        "SCRAM-SHA-256",
        first.clone(),
    ));
    c.expect_disconnect(Some(ReasonCode::PROTOCOL_ERROR));
    // A connection that did not use enhanced authentication [MQTT-4.12.0-7].
    let (mut c, ack) = Client::connect_with(
        b.local_addr(),
        login(Protocol::V5, "m3", Some("sam"), Some("pencil")),
    );
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    c.send(&auth_packet(
        ReasonCode::RE_AUTHENTICATE,
        "SCRAM-SHA-256",
        first,
    ));
    c.expect_disconnect(Some(ReasonCode::PROTOCOL_ERROR));
    let _ = std::fs::remove_dir_all(&dir);
}

fn will_on(mut c: Connect, topic: &str) -> Connect {
    c.will = Some(LastWill {
        topic: topic.into(),
        payload: bytes::Bytes::from_static(b"pwned"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Default::default(),
    });
    c
}

/// A will is a PUBLISH by its client: one the ACL does not let her publish, or one on
/// `$SYS/`, refuses the CONNECT with 0x87 (3.1.1: return code 5), as Mosquitto does; a will
/// she may publish is accepted.
#[test]
fn a_will_the_client_may_not_publish_refuses_the_connect() {
    let (_dir, acl) = write_file(
        "acl",
        "user alice\ntopic readwrite a/#\n\nuser admin\ntopic readwrite #\n",
    );
    let b = broker_with(|c| c.acl_file = Some(acl));
    let mut admin = Client::connect_with(
        b.local_addr(),
        login(Protocol::V5, "admin", Some("admin"), None),
    )
    .0;
    admin.subscribe("secret/#", QoS::AtLeastOnce);
    for proto in [Protocol::V3_1_1, Protocol::V5] {
        let v = proto as u8;
        for topic in ["secret/pwned", "$SYS/broker/uptime"] {
            let c = will_on(login(proto, &format!("al{v}"), Some("alice"), None), topic);
            let (mut c, ack) = Client::connect_with(b.local_addr(), c);
            assert_eq!(
                ack.reason_code,
                ReasonCode::NOT_AUTHORIZED,
                "{proto:?} {topic}"
            );
            assert!(c.closed().0, "refused connections are closed");
        }
        let c = will_on(
            login(proto, &format!("al{v}"), Some("alice"), None),
            "a/will",
        );
        let (c, ack) = Client::connect_with(b.local_addr(), c);
        assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
        drop(c);
    }
    admin.expect_nothing();
    // Nothing was retained under secret/ either.
    let mut late = Client::connect_with(
        b.local_addr(),
        login(Protocol::V5, "late", Some("admin"), None),
    )
    .0;
    late.subscribe("secret/#", QoS::AtLeastOnce);
    late.expect_nothing();
    assert_eq!(b.stats().wills_denied, 4);
}

/// `$SYS/` is reserved for wills as for PUBLISH even without any ACL.
#[test]
fn a_will_on_sys_is_refused_without_an_acl() {
    let b = broker();
    for proto in [Protocol::V3_1_1, Protocol::V5] {
        let c = will_on(connect_packet(proto, "sys-will"), "$SYS/broker/version");
        let (_c, ack) = Client::connect_with(b.local_addr(), c);
        assert_eq!(ack.reason_code, ReasonCode::NOT_AUTHORIZED, "{proto:?}");
    }
}

/// The ACL is asked again when the will is published: reloaded in between to deny it, the
/// will is neither delivered nor retained, and it is counted.
#[test]
fn a_will_denied_by_a_reloaded_acl_is_dropped() {
    let allow = "user alice\ntopic readwrite a/#\n\nuser admin\ntopic readwrite #\n";
    let (_dir, acl) = write_file("acl", allow);
    let b = broker_with(|c| c.acl_file = Some(acl.clone()));
    let mut admin = Client::connect_with(
        b.local_addr(),
        login(Protocol::V5, "admin", Some("admin"), None),
    )
    .0;
    admin.subscribe("a/#", QoS::AtLeastOnce);
    for (i, proto) in [Protocol::V3_1_1, Protocol::V5].into_iter().enumerate() {
        std::fs::write(&acl, allow).unwrap();
        assert!(b.reload().errors.is_empty());
        let c = will_on(login(proto, "alice", Some("alice"), None), "a/will");
        let (alice, ack) = Client::connect_with(b.local_addr(), c);
        assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "{proto:?}");
        std::fs::write(
            &acl,
            "user alice\ntopic readwrite b/#\n\nuser admin\ntopic readwrite #\n",
        )
        .unwrap();
        assert!(b.reload().errors.is_empty());
        drop(alice);
        admin.expect_nothing();
        wait_until(|| b.stats().wills_denied == i as u64 + 1);
    }
    let mut late = Client::connect_with(
        b.local_addr(),
        login(Protocol::V5, "late", Some("admin"), None),
    )
    .0;
    late.subscribe("a/#", QoS::AtLeastOnce);
    late.expect_nothing();
}

/// Waits (bounded) until `f` holds.
fn wait_until(f: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not reached"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A blocking authorisation hook (a Python callback, say): publishing is allowed under `w/`
/// until the test says otherwise.
struct WillHook {
    deny: std::sync::atomic::AtomicBool,
}

impl uringmq_auth::Authorizer for WillHook {
    fn authorize(
        &self,
        _: &uringmq_auth::ClientInfo<'_>,
        access: uringmq_auth::Access,
        topic: &str,
    ) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        match access {
            uringmq_auth::Access::Publish => topic.starts_with("w/") && !self.deny.load(SeqCst),
            _ => true,
        }
    }

    fn is_blocking(&self) -> bool {
        true
    }
}

/// With a blocking hook the will is asked about off the core at CONNECT: refused where the
/// hook says no, delivered where it said yes, even once the hook has changed its mind, since
/// asking it again at the close would route the will after what follows it (will_auth.rs).
#[test]
fn a_blocking_hook_decides_wills_at_connect() {
    let hook = Arc::new(WillHook {
        deny: std::sync::atomic::AtomicBool::new(false),
    });
    let hooks = Hooks {
        authorizer: Some(hook.clone()),
        ..Default::default()
    };
    let b = Broker::builder(config())
        .hooks(hooks)
        .start()
        .expect("broker");
    let mut watcher = Client::connect(b.local_addr(), Protocol::V5, "hook-watcher");
    watcher.subscribe("#", QoS::AtLeastOnce);
    for (i, proto) in [Protocol::V3_1_1, Protocol::V5].into_iter().enumerate() {
        let c = will_on(connect_packet(proto, "hooked"), "secret/x");
        let (_c, ack) = Client::connect_with(b.local_addr(), c);
        assert_eq!(ack.reason_code, ReasonCode::NOT_AUTHORIZED, "{proto:?}");
        assert_eq!(b.stats().wills_denied, i as u64 + 1);
        let c = will_on(connect_packet(proto, "hooked"), "w/ok");
        let (c, ack) = Client::connect_with(b.local_addr(), c);
        assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "{proto:?}");
        hook.deny.store(true, std::sync::atomic::Ordering::SeqCst);
        drop(c);
        assert_eq!(watcher.recv_publish().topic, "w/ok", "{proto:?}");
        watcher.expect_nothing();
        hook.deny.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}
