//! The embedder's authentication hook and the hook threads under stress, over real sockets:
//! the hook sees every CONNECT (anonymous ones too); a hook that never returns refuses its
//! client after `hook_timeout_ms` and does not hang `Broker::stop`; a flood of wrong passwords
//! from one address does not delay a correct login from another; the per-address cap answers
//! the excess with the right code.

use crate::support::*;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uringmq::Hooks;
use uringmq_auth::{AuthDecision, Authenticator, ClientInfo, DenyReason, PasswordFile, Scheme};

fn login(proto: Protocol, id: &str, user: Option<&str>, password: Option<&str>) -> Connect {
    let mut c = connect_packet(proto, id);
    c.username = user.map(Into::into);
    c.password = password.map(|p| bytes::Bytes::copy_from_slice(p.as_bytes()));
    c
}

fn start(hook: impl Authenticator, f: impl FnOnce(&mut Config)) -> Broker {
    let mut c = config();
    c.auth_failure_delay_ms = 0;
    f(&mut c);
    let hooks = Hooks {
        authenticator: Some(Arc::new(hook)),
        ..Hooks::default()
    };
    Broker::builder(c)
        .hooks(hooks)
        .start()
        .expect("broker starts")
}

/// The README's "only alice" hook, recording the user names it was shown. Blocking, as a
/// Python hook is.
struct OnlyAlice(Arc<Mutex<Vec<Option<String>>>>);

impl Authenticator for OnlyAlice {
    fn authenticate(&self, c: &ClientInfo<'_>, password: Option<&[u8]>) -> AuthDecision {
        self.0.lock().unwrap().push(c.username.map(str::to_owned));
        if c.username == Some("alice") && password == Some(b"secret") {
            AuthDecision::Allow
        } else {
            AuthDecision::Deny(DenyReason::BadCredentials)
        }
    }

    fn is_blocking(&self) -> bool {
        true
    }
}

#[test]
fn the_authentication_hook_sees_anonymous_clients_too() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    // Loopback only: the anonymous policy alone would let anonymous clients in.
    let b = start(OnlyAlice(seen.clone()), |_| {});
    for (proto, code) in [
        (Protocol::V5, ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        (Protocol::V3_1_1, ReasonCode::BAD_USER_NAME_OR_PASSWORD),
    ] {
        let (mut c, ack) = Client::connect_with(b.local_addr(), login(proto, "anon", None, None));
        assert_eq!(ack.reason_code, code, "{proto:?}: anonymous is refused");
        assert!(c.closed().0);
    }
    let (_c, ack) = Client::connect_with(
        b.local_addr(),
        login(Protocol::V5, "a", Some("alice"), Some("secret")),
    );
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![None, None, Some("alice".to_owned())],
        "the hook saw every CONNECT"
    );
}

/// A hook that never returns (until the test ends).
struct Stuck(Arc<AtomicBool>);

impl Authenticator for Stuck {
    fn authenticate(&self, _: &ClientInfo<'_>, _: Option<&[u8]>) -> AuthDecision {
        while !self.0.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(10));
        }
        AuthDecision::Allow
    }

    fn is_blocking(&self) -> bool {
        true
    }
}

/// Runs `f` on a thread and waits at most `limit` for it: a regression fails, never hangs.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("did not finish within {limit:?}"))
}

#[test]
fn a_hook_that_never_returns_refuses_after_the_timeout_and_stop_returns() {
    let release = Arc::new(AtomicBool::new(false));
    let mut b = start(Stuck(release.clone()), |c| {
        c.hook_timeout_ms = 300;
        c.hook_threads = 2;
    });
    let addr = b.local_addr();
    // More clients than threads: each stuck thread is replaced, so every one is answered.
    let cases = [
        (Protocol::V5, ReasonCode::SERVER_UNAVAILABLE),
        (Protocol::V3_1_1, ReasonCode::SERVER_UNAVAILABLE),
        (Protocol::V5, ReasonCode::SERVER_UNAVAILABLE),
    ];
    for (i, (proto, code)) in cases.into_iter().enumerate() {
        let started = Instant::now();
        let ack = within(Duration::from_secs(10), move || {
            let mut c = Client::raw(addr, proto);
            c.send(&Packet::Connect(Box::new(login(
                proto,
                &format!("s{i}"),
                None,
                None,
            ))));
            c.recv()
        });
        match ack {
            Some(Packet::ConnAck(a)) => assert_eq!(a.reason_code, code, "case {i}"),
            other => panic!("case {i}: expected CONNACK, got {other:?}"),
        }
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "after the timeout"
        );
    }
    assert_eq!(b.stats().hook_timeouts, 3);
    // A client still waiting on a stuck hook when the broker stops.
    let mut waiting = Client::raw(addr, Protocol::V5);
    waiting.send(&Packet::Connect(Box::new(login(
        Protocol::V5,
        "w",
        None,
        None,
    ))));
    std::thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    b = within(Duration::from_secs(10), move || {
        b.stop();
        b
    });
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stop() took {:?}",
        started.elapsed()
    );
    assert!(waiting.closed().0, "the waiting client is closed");
    release.store(true, Ordering::Release);
    drop(b);
}

/// A password file with one PBKDF2 entry (20,000 rounds: a deliberately slow hash).
fn slow_password_file(tag: &str) -> std::path::PathBuf {
    let dir = scratch_dir(tag);
    let path = dir.join("passwd");
    let mut f = PasswordFile::default();
    f.set("alice", b"right", Scheme::Pbkdf2Sha512).unwrap();
    f.save_to(&path).unwrap();
    path
}

fn encoded(c: Connect) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    encode(&Packet::Connect(Box::new(c)), Protocol::V3_1_1, &mut out).unwrap();
    out.to_vec()
}

/// `sockets` connections from 127.0.0.2, each sending a wrong password, reading its refusal
/// and starting over, until `stop`. Returns the v3 return codes it got.
fn flood(to: SocketAddr, sockets: usize, stop: Arc<AtomicBool>) -> Vec<u8> {
    let connect = encoded(login(Protocol::V3_1_1, "", Some("alice"), Some("wrong")));
    let mut codes = Vec::new();
    while !stop.load(Ordering::Acquire) {
        let Ok(mut open) = (0..sockets)
            .map(|_| connect_from([127, 0, 0, 2], to))
            .collect::<std::io::Result<Vec<_>>>()
        else {
            break; // The broker is gone (the test failed).
        };
        for s in &mut open {
            let _ = s.write_all(&connect);
        }
        for s in &mut open {
            s.set_read_timeout(Some(Duration::from_secs(20))).ok();
            let mut ack = [0u8; 4];
            if s.read_exact(&mut ack).is_ok() {
                codes.push(ack[3]);
            }
        }
    }
    codes
}

#[test]
fn a_flood_of_wrong_passwords_does_not_delay_a_correct_login() {
    let passwd = slow_password_file("flood");
    let mut c = config();
    // The default failure delay: refused flood clients wait before they try again, as they
    // would against a real deployment (and do not spin the shared CPUs of the test machine).
    c.password_file = Some(passwd.clone());
    c.max_pending_auth_per_address = 8;
    let b = Broker::builder(c).start().expect("broker");
    let addr = b.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let flooders: Vec<_> = (0..8)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || flood(addr, 60, stop))
        })
        .collect();
    // Let the flood fill the queue.
    std::thread::sleep(Duration::from_millis(500));
    let mut slowest = Duration::ZERO;
    for i in 0..3 {
        let started = Instant::now();
        let (_c, ack) = Client::connect_with(
            addr,
            login(
                Protocol::V5,
                &format!("ok{i}"),
                Some("alice"),
                Some("right"),
            ),
        );
        assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
        slowest = slowest.max(started.elapsed());
    }
    stop.store(true, Ordering::Release);
    let codes: Vec<u8> = flooders
        .into_iter()
        .flat_map(|f| f.join().unwrap())
        .collect();
    // Generous: each login waits behind at most 8 flood hashes, not hundreds (without the
    // cap it is not even answered within the 5 s hook timeout).
    assert!(
        slowest < Duration::from_secs(4),
        "a correct login took {slowest:?}"
    );
    // The flood was refused: wrong password (4) or, past the cap, server unavailable (3).
    assert!(codes.contains(&4), "{codes:?}");
    assert!(
        codes.contains(&3),
        "the per-address cap answered the excess"
    );
    assert!(codes.iter().all(|&c| c == 3 || c == 4), "{codes:?}");
    assert!(b.stats().auth_busy > 0);
    let _ = std::fs::remove_dir_all(passwd.parent().unwrap());
}

#[test]
fn the_per_address_cap_answers_v5_with_connection_rate_exceeded() {
    let release = Arc::new(AtomicBool::new(false));
    let b = start(Stuck(release.clone()), |c| {
        c.max_pending_auth_per_address = 1;
        c.hook_timeout_ms = 5000;
    });
    // The first CONNECT occupies the address's one slot.
    let mut first = Client::raw(b.local_addr(), Protocol::V5);
    first.send(&Packet::Connect(Box::new(login(
        Protocol::V5,
        "first",
        None,
        None,
    ))));
    std::thread::sleep(Duration::from_millis(100));
    let (_c, ack) = Client::connect_with(b.local_addr(), login(Protocol::V5, "second", None, None));
    assert_eq!(ack.reason_code, ReasonCode::CONNECTION_RATE_EXCEEDED);
    let (_c, ack) =
        Client::connect_with(b.local_addr(), login(Protocol::V3_1_1, "third", None, None));
    assert_eq!(ack.reason_code, ReasonCode::SERVER_UNAVAILABLE, "v3: 3");
    assert_eq!(b.stats().auth_busy, 2);
    release.store(true, Ordering::Release);
    assert!(
        matches!(first.recv(), Some(Packet::ConnAck(a)) if a.reason_code == ReasonCode::SUCCESS)
    );
}
