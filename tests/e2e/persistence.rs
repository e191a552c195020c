//! Durable state (`persistence_dir`, issue #15): what a client notices across a restart of the
//! broker on the same directory: its session (session present), subscriptions, queued and
//! in-flight QoS 1/2 messages (resent with DUP), inbound QoS 2 exchanges, retained messages;
//! and, with `persistence_sync = "always"`, that nothing acknowledged is lost when the broker
//! process is killed (`kill -9`) at a random moment. Both protocol versions; both drivers
//! (run again with `MONOIO_FORCE_LEGACY_DRIVER=1`).

use crate::support::*;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uringmq::PersistenceSync;

/// A directory removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        TempDir(scratch_dir(&format!("persist-{name}")))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A durable directory and its sync policy: every [`Durable::start`] runs a broker on the
/// state the previous one left.
struct Durable {
    dir: TempDir,
    sync: PersistenceSync,
}

impl Durable {
    fn new(name: &str, sync: PersistenceSync) -> Durable {
        Durable {
            dir: TempDir::new(name),
            sync,
        }
    }

    fn start(&self) -> Broker {
        broker_with(|c| {
            c.persistence_dir = Some(self.dir.path().to_owned());
            c.persistence_sync = self.sync;
        })
    }

    /// Stops `b` (a clean stop) and starts a broker again on the same directory.
    fn restart(&self, b: Broker) -> Broker {
        drop(b);
        self.start()
    }
}

/// Connects `id` again after a restart and checks its session came back.
fn resume(addr: SocketAddr, proto: Protocol, id: &str) -> Client {
    let (c, present) = connect_persistent(addr, proto, id);
    assert!(
        present,
        "{proto:?}: session of {id} present after the restart"
    );
    c
}

/// Gives `id` a persistent session subscribed to `filter`, and leaves.
fn subscribe_offline(addr: SocketAddr, proto: Protocol, id: &str, filter: &str, qos: QoS) {
    let (mut c, _) = connect_persistent(addr, proto, id);
    c.subscribe(filter, qos);
    c.disconnect();
}

/// The next packet must be the acknowledgement `kind` (PUBREC, PUBREL, PUBCOMP) of `pid`;
/// returns its reason code.
fn expect_ack(c: &mut Client, kind: &str, pid: u16) -> ReasonCode {
    let got = c.recv();
    let ack = match (&got, kind) {
        (Some(Packet::PubRec(a)), "PUBREC")
        | (Some(Packet::PubRel(a)), "PUBREL")
        | (Some(Packet::PubComp(a)), "PUBCOMP") => a,
        _ => panic!("expected {kind} {pid}, got {got:?}"),
    };
    assert_eq!(ack.packet_id, pid, "{kind}");
    ack.reason_code
}

const PROTOCOLS: [Protocol; 2] = [Protocol::V3_1_1, Protocol::V5];

/// The scenario, before the stop: `sub` is subscribed to `q/#` and offline, 100
/// QoS 1 messages wait for it, 50 topics are retained.
fn queue_and_retain(addr: SocketAddr, proto: Protocol) {
    subscribe_offline(addr, proto, "sub", "q/#", QoS::AtLeastOnce);
    let mut publ = Client::connect(addr, proto, "pub");
    for i in 0..100 {
        publ.publish("q/x", format!("m{i}").as_bytes(), QoS::AtLeastOnce, false);
    }
    for i in 0..50 {
        publ.publish(&format!("r/{i}"), b"kept", QoS::AtLeastOnce, true);
    }
    publ.disconnect();
}

/// After the start: `sub`'s session is present with its 100 messages in order, and a new
/// subscriber finds the 50 retained topics. Returns `sub`.
fn queued_and_retained_are_back(addr: SocketAddr, proto: Protocol) -> Client {
    let mut sub = resume(addr, proto, "sub");
    for i in 0..100 {
        let p = sub.recv_publish();
        assert_eq!(&p.payload[..], format!("m{i}").as_bytes(), "{proto:?}");
        assert_eq!(p.qos, QoS::AtLeastOnce);
    }
    let mut fresh = Client::connect(addr, proto, "fresh");
    fresh.subscribe("r/#", QoS::AtLeastOnce);
    let mut topics = HashSet::new();
    for _ in 0..50 {
        let p = fresh.recv_publish();
        assert!(p.retain, "{proto:?}: retained flag");
        topics.insert(p.topic.to_string());
    }
    assert_eq!(topics.len(), 50, "{proto:?}: every retained topic");
    fresh.expect_nothing();
    sub
}

/// The new-user scenario: a persistent subscriber with 100 queued QoS 1 messages and
/// 50 retained topics; after a clean stop and a start on the same directory the session is
/// present, the subscription still matches new messages, all 100 queued messages arrive in
/// order and all 50 retained messages are there.
#[test]
fn restart_keeps_session_subscription_queue_and_retained() {
    for proto in PROTOCOLS {
        let d = Durable::new("restart", PersistenceSync::Interval);
        let b = d.start();
        queue_and_retain(b.local_addr(), proto);
        let b = d.restart(b);
        let mut sub = queued_and_retained_are_back(b.local_addr(), proto);
        // The subscription itself survived: a new message is delivered.
        let mut publ = Client::connect(b.local_addr(), proto, "pub");
        publ.publish("q/y", b"after", QoS::AtLeastOnce, false);
        assert_eq!(&sub.recv_publish().payload[..], b"after", "{proto:?}");
    }
}

/// The directory is free as soon as `stop()` returns: a broker started right after on the
/// same directory gets it, every time, whatever its connections were doing (a persistent
/// client with a message on its way to a session on another core).
#[test]
fn stop_then_start_on_the_same_directory_in_a_loop() {
    let d = Durable::new("relock", PersistenceSync::Interval);
    let mut b = d.start();
    subscribe_offline(b.local_addr(), Protocol::V5, "c", "l/#", QoS::AtLeastOnce);
    for i in 0..30 {
        let mut p = Client::connect(b.local_addr(), Protocol::V5, "p");
        p.publish("l/x", format!("{i}").as_bytes(), QoS::AtLeastOnce, false);
        drop(b);
        b = d.start();
    }
    let mut c = resume(b.local_addr(), Protocol::V5, "c");
    for i in 0..30 {
        assert_eq!(c.recv_publish().payload, format!("{i}").as_bytes());
    }
}

/// Messages sent to the subscriber and not acknowledged before the stop are sent again after
/// the restart with DUP set and their packet identifiers [MQTT-4.4.0-1]; a QoS 2 message whose
/// PUBREC was received gets PUBREL, not the PUBLISH again.
#[test]
fn restart_resends_inflight_with_dup() {
    for proto in PROTOCOLS {
        let d = Durable::new("inflight", PersistenceSync::Always);
        let b = d.start();
        let (mut sub, _) = connect_persistent(b.local_addr(), proto, "sub");
        sub.subscribe("i/#", QoS::ExactlyOnce);
        let mut publ = Client::connect(b.local_addr(), proto, "pub");
        publ.publish("i/1", b"one", QoS::AtLeastOnce, false);
        publ.publish("i/2", b"two", QoS::ExactlyOnce, false);
        publ.publish("i/3", b"three", QoS::ExactlyOnce, false);
        let one = sub.recv_publish_noack();
        let two = sub.recv_publish_noack();
        let three = sub.recv_publish_noack();
        sub.send(&Packet::PubRec(Ack::new(three.packet_id)));
        expect_ack(&mut sub, "PUBREL", three.packet_id);
        sub.ping();

        let b = d.restart(b);
        let mut sub = resume(b.local_addr(), proto, "sub");
        for want in [&one, &two] {
            let p = sub.recv_publish_noack();
            assert!(p.dup, "{proto:?}: resent with DUP");
            assert_eq!(p.packet_id, want.packet_id, "{proto:?}");
            assert_eq!(p.payload, want.payload, "{proto:?}");
            assert_eq!(p.qos, want.qos, "{proto:?}");
        }
        expect_ack(&mut sub, "PUBREL", three.packet_id);
        sub.expect_nothing();
    }
}

/// An inbound QoS 2 exchange interrupted by a restart: the publisher's packet id is still
/// known, so its resent PUBLISH (DUP) is not routed again and its PUBREL completes it: the
/// subscriber gets the message exactly once.
#[test]
fn inbound_qos2_id_survives_restart() {
    for proto in PROTOCOLS {
        let d = Durable::new("qos2in", PersistenceSync::Always);
        let b = d.start();
        let (mut sub, _) = connect_persistent(b.local_addr(), proto, "sub");
        sub.subscribe("e/#", QoS::ExactlyOnce);
        let (mut publ, _) = connect_persistent(b.local_addr(), proto, "pub");
        let mut p = publish("e/1", b"once", QoS::ExactlyOnce, false);
        p.packet_id = 7;
        publ.send(&Packet::Publish(p.clone()));
        expect_ack(&mut publ, "PUBREC", 7);
        assert_eq!(&sub.recv_publish().payload[..], b"once");
        // The PUBCOMP is handled before the stop.
        sub.ping();

        let b = d.restart(b);
        let mut publ = resume(b.local_addr(), proto, "pub");
        let (mut sub, _) = connect_persistent(b.local_addr(), proto, "sub");
        p.dup = true;
        publ.send(&Packet::Publish(p));
        expect_ack(&mut publ, "PUBREC", 7);
        publ.send(&Packet::PubRel(Ack::new(7)));
        let code = expect_ack(&mut publ, "PUBCOMP", 7);
        assert_eq!(code, ReasonCode::SUCCESS, "{proto:?}: id known");
        sub.expect_nothing();
    }
}

/// A session ended before the stop (clean start over it; UNSUBSCRIBE) stays ended.
#[test]
fn ended_sessions_and_removed_subscriptions_stay_gone() {
    for proto in PROTOCOLS {
        let d = Durable::new("gone", PersistenceSync::Interval);
        let b = d.start();
        let (mut a, _) = connect_persistent(b.local_addr(), proto, "a");
        a.subscribe("g/1", QoS::AtLeastOnce);
        a.subscribe("g/2", QoS::AtLeastOnce);
        a.unsubscribe(&["g/1"]);
        a.disconnect();
        subscribe_offline(b.local_addr(), proto, "gone", "g/#", QoS::AtLeastOnce);
        // Clean start ends the stored session.
        Client::connect(b.local_addr(), proto, "gone").disconnect();

        let b = d.restart(b);
        let mut publ = Client::connect(b.local_addr(), proto, "pub");
        publ.publish("g/1", b"x", QoS::AtLeastOnce, false);
        publ.publish("g/2", b"y", QoS::AtLeastOnce, false);
        let mut a = resume(b.local_addr(), proto, "a");
        assert_eq!(&a.recv_publish().payload[..], b"y", "{proto:?}");
        a.expect_nothing();
        let (_gone, present) = connect_persistent(b.local_addr(), proto, "gone");
        assert!(
            !present,
            "{proto:?}: a session ended by clean start is not recovered"
        );
    }
}

/// Truncated and bit-flipped store files: the broker starts, reports the damage (counted in its
/// stats), keeps what is intact, and never delivers a wrong message.
#[test]
fn corrupt_store_files_are_reported_not_fatal() {
    for damage in ["truncate", "flip"] {
        let d = Durable::new(damage, PersistenceSync::Always);
        let b = d.start();
        subscribe_offline(
            b.local_addr(),
            Protocol::V3_1_1,
            "sub",
            "c/#",
            QoS::AtLeastOnce,
        );
        let mut publ = Client::connect(b.local_addr(), Protocol::V3_1_1, "pub");
        for i in 0..20 {
            publ.publish(
                "c/x",
                format!("payload-{i:04}").as_bytes(),
                QoS::AtLeastOnce,
                false,
            );
        }
        drop(b);
        damage_logs(d.dir.path(), damage);
        let b = d.start();
        let stats = b.persistence_stats().expect("persistence is on");
        assert!(stats.corrupt > 0, "{damage}: damage reported: {stats:?}");
        let (mut sub, _) = connect_persistent(b.local_addr(), Protocol::V3_1_1, "sub");
        while let Some(Packet::Publish(p)) = sub.recv_within(QUIET) {
            let s = std::str::from_utf8(&p.payload).expect("utf-8");
            assert!(
                s.starts_with("payload-") && s.len() == 12,
                "{damage}: no wrong message, got {s:?}"
            );
            sub.ack(&p);
        }
    }
}

/// Truncates (`damage` "truncate") or flips a bit near the end of every log under `dir`: a
/// crash mid-write tears a log's tail; a bad disk flips its bits.
fn damage_logs(dir: &Path, damage: &str) {
    let mut files = Vec::new();
    collect_files(dir, &mut files);
    files.retain(|f| f.extension().is_some_and(|e| e == "log"));
    assert!(!files.is_empty(), "the store wrote its logs");
    for f in &files {
        let mut bytes = std::fs::read(f).expect("read store file");
        if bytes.len() < 8 {
            continue;
        }
        if damage == "truncate" {
            bytes.truncate(bytes.len() - 5);
        } else {
            let at = bytes.len() - 10;
            bytes[at] ^= 0x10;
        }
        std::fs::write(f, bytes).expect("write store file");
    }
}

/// A tmpfs of `bytes` mounted on a fresh directory (a real filesystem that fills up),
/// unmounted when dropped. None where this process may not mount (it is not root).
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(bytes: usize) -> Option<SmallFs> {
        use std::os::unix::ffi::OsStrExt;
        let dir = scratch_dir("smallfs");
        let target = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        let opts = std::ffi::CString::new(format!("size={bytes},mode=0700")).ok()?;
        // SAFETY: valid NUL-terminated strings that outlive the call.
        let r = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        if r != 0 {
            let _ = std::fs::remove_dir(&dir);
            return None;
        }
        Some(SmallFs(dir))
    }

    /// Writes a file until the filesystem is full; removing it gives the space back.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        let chunk = [0u8; 4096];
        while f.write(&chunk).is_ok_and(|n| n > 0) {}
        path
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        use std::os::unix::ffi::OsStrExt;
        if let Ok(target) = std::ffi::CString::new(self.0.as_os_str().as_bytes()) {
            // SAFETY: a valid NUL-terminated path.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Publishes `payload` at QoS 1 to `d/x`; returns the PUBACK's reason code.
fn publish_q1(c: &mut Client, payload: &str) -> ReasonCode {
    c.publish_with(publish("d/x", payload.as_bytes(), QoS::AtLeastOnce, false))
}

/// A full disk under `persistence_dir`, end to end: once the store's writes fail with ENOSPC,
/// QoS 1 PUBLISH is refused with 0x97 (Quota exceeded), while QoS 0 and clients without
/// durable state are served as before; when the space comes back the store recovers by
/// itself (its 1 s retry), QoS 1 is accepted again, and every acknowledged message reaches
/// the persistent subscriber, also after a restart. One
/// core: the refusal is per core, and a publisher on a core whose store writes nothing
/// would not see it. (A persistent SUBSCRIBE is refused by the same check, but not asserted:
/// while the disk is full a failed write is truncated, and the 1 s retry may succeed in the
/// pages that freed, so the store's refusing state comes and goes.) Needs root (mount);
/// skipped, with a note, elsewhere.
#[test]
fn a_full_disk_refuses_qos1_with_0x97_serves_the_rest_and_recovers() {
    let Some(fs) = SmallFs::mount(1 << 20) else {
        eprintln!("skipped: cannot mount a tmpfs here (not root)");
        return;
    };
    let data = fs.0.join("data");
    let b = broker_with(|c| {
        c.cores = 1;
        c.persistence_dir = Some(data.clone());
    });
    let addr = b.local_addr();
    subscribe_offline(addr, Protocol::V5, "sub", "d/#", QoS::AtLeastOnce);
    let mut live = Client::connect(addr, Protocol::V5, "live");
    live.subscribe("z/#", QoS::AtMostOnce);
    let (mut publ, _) = connect_persistent(addr, Protocol::V5, "pub");
    let payload = |i: usize| format!("{i:04}{}", "x".repeat(1000));
    let mut acked = Vec::new();
    let filler = fs.fill();
    // The first writes may still fit in pages the log already has, and the store learns of
    // a failed write a moment after it (on epoll, from its writer thread).
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in 0.. {
        match publish_q1(&mut publ, &payload(i)) {
            ReasonCode::SUCCESS => acked.push(payload(i)),
            code => {
                assert_eq!(code, ReasonCode::QUOTA_EXCEEDED, "refusal of message {i}");
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "QoS 1 refused once the disk is full"
        );
    }
    // QoS 0, and a client without durable state, are served.
    publ.publish("z/live", b"qos0", QoS::AtMostOnce, false);
    assert_eq!(&live.recv_publish().payload[..], b"qos0");
    Client::connect(addr, Protocol::V5, "other").subscribe("z/#", QoS::AtLeastOnce);

    std::fs::remove_file(filler).expect("space comes back");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = 1000;
    while publish_q1(&mut publ, &payload(i)) != ReasonCode::SUCCESS {
        assert!(Instant::now() < deadline, "the store did not recover");
        std::thread::sleep(Duration::from_millis(50));
        i += 1;
    }
    acked.push(payload(i));
    publ.disconnect();
    drop(b);
    let b = broker_with(|c| {
        c.cores = 1;
        c.persistence_dir = Some(data.clone());
    });
    let mut sub = resume(b.local_addr(), Protocol::V5, "sub");
    let got: Vec<String> = (0..acked.len())
        .map(|_| String::from_utf8_lossy(&sub.recv_publish().payload).into_owned())
        .collect();
    assert_eq!(got, acked, "every acknowledged message, none refused");
    sub.expect_nothing();
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

// ---- crash tests: kill -9 the broker process at random moments ----

/// The broker binary: `$URINGMQ_BIN`, else this package's build of the same `main.rs`.
fn broker_binary() -> PathBuf {
    match std::env::var_os("URINGMQ_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_BIN_EXE_uringmq-test-broker")),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A broker process on `dir`, reachable on `port`. Its
/// session queues are unbounded: a full queue drops new messages (as Mosquitto does), which is
/// not what this test looks for.
pub(crate) struct Process {
    child: std::process::Child,
    pub(crate) addr: SocketAddr,
}

impl Process {
    fn start_with(dir: &Path, port: u16, sync: &str) -> Process {
        Process::start_config(dir, port, sync, "")
    }

    /// With `tables` (TOML tables such as `[[bridge]]`) after the keys above.
    pub(crate) fn start_config(dir: &Path, port: u16, sync: &str, tables: &str) -> Process {
        let config = dir.join("broker.toml");
        let data = dir.join("data");
        std::fs::write(
            &config,
            format!(
                "port = {port}\ncores = 2\npin_cores = false\n\
                 persistence_dir = {data:?}\npersistence_sync = {sync:?}\n\
                 max_queued_messages = 0\nmax_queued_bytes = 0\n{tables}"
            ),
        )
        .expect("config");
        let spawn = || {
            std::process::Command::new(broker_binary())
                .arg("--config")
                .arg(&config)
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("start the broker binary")
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(20);
        // A killed broker's listening socket can outlive its process for a moment (io_uring
        // releases its files after the process is gone) and accept connections meanwhile:
        // a connect would then reach a socket nobody serves. Wait until the port is free.
        while std::net::TcpListener::bind(addr).is_err() {
            assert!(Instant::now() < deadline, "port {port} stays in use");
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut child = spawn();
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "broker did not listen on {addr}");
            // The port may still be held for a moment after the kill: start it again.
            if child.try_wait().ok().flatten().is_some() {
                std::thread::sleep(Duration::from_millis(50));
                child = spawn();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Process { child, addr }
    }

    /// SIGTERM, as `systemctl stop` sends: a clean stop, so the process must end normally. A
    /// broker that dies of the signal instead crashed: what it had not written yet is lost.
    pub(crate) fn terminate(mut self) {
        // SAFETY: signalling our own child process by its pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let status = self.child.wait().expect("wait for the broker process");
        assert!(
            status.success(),
            "SIGTERM must stop the broker cleanly; it ended with {status}"
        );
    }

    pub(crate) fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The scenario with the broker binary and SIGTERM (the default `interval` policy):
/// 100 queued QoS 1 messages, 50 retained topics and the session come back.
#[test]
fn sigterm_restart_of_the_binary_keeps_everything() {
    for proto in PROTOCOLS {
        let dir = TempDir::new("sigterm");
        let port = free_port();
        let broker = Process::start_with(dir.path(), port, "interval");
        queue_and_retain(broker.addr, proto);
        broker.terminate();
        let broker = Process::start_with(dir.path(), port, "interval");
        queued_and_retained_are_back(broker.addr, proto);
    }
}

/// A SIGTERM that comes while the broker is still starting (its port takes connections from
/// the moment it is bound, before the store is recovered) stops it cleanly once it has
/// started, like any SIGTERM: it must not kill the process, which would be a crash (what the
/// cores had not written is lost) where a clean stop was asked for.
#[test]
fn sigterm_while_starting_stops_cleanly() {
    let dir = TempDir::new("sigterm-start");
    let port = free_port();
    // A state to recover makes the start take a while.
    let broker = Process::start_with(dir.path(), port, "interval");
    queue_and_retain(broker.addr, Protocol::V5);
    broker.terminate();
    for _ in 0..5 {
        Process::start_with(dir.path(), port, "interval").terminate();
    }
}

/// Everything one client saw, shared with the test thread.
#[derive(Default)]
struct Seen {
    /// Payloads whose PUBACK / PUBREC the publisher received.
    acked: HashSet<String>,
    /// Payload -> times delivered to the application (QoS 2: PUBLISH with an id not held).
    got: HashMap<String, u32>,
    /// Payloads delivered again without DUP.
    repeats_without_dup: Vec<String>,
    /// Payloads the publisher sent again (DUP) after a crash: the broker may route such a
    /// retransmission as a new message, so its copies are not a broker's duplicate.
    resent: HashSet<String>,
}

/// A tiny pseudo-random source (no dependency): xorshift seeded from the clock.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9);
        Rng(t | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A publisher of `qos` messages that records every acknowledged payload, reconnecting
/// (persistent session) after each crash and completing what was open: unacknowledged
/// PUBLISH resent with DUP, PUBREL resent for QoS 2 messages already PUBRECed.
fn publisher(
    port_of: Arc<Mutex<SocketAddr>>,
    proto: Protocol,
    qos: QoS,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
) {
    let id = format!("pub-{}", qos as u8);
    let mut n = 0u32;
    // Sent, not yet acknowledged (pid -> payload); QoS 2 PUBRECed, not yet PUBCOMPed (pids).
    let mut open: Vec<(u16, String)> = Vec::new();
    let mut released: Vec<u16> = Vec::new();
    let mut pid = 0u16;
    while !stop.load(Ordering::Relaxed) {
        let Some((mut c, _)) = reconnect(&port_of, proto, &id) else {
            continue;
        };
        for (p, payload) in &open {
            seen.lock().unwrap().resent.insert(payload.clone());
            let mut m = publish("crash/t", payload.as_bytes(), qos, false);
            m.packet_id = *p;
            m.dup = true;
            c.send(&Packet::Publish(m));
        }
        for p in &released {
            c.send(&Packet::PubRel(Ack::new(*p)));
        }
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            if open.len() < 8 {
                pid = pid % 60000 + 1;
                let payload = format!("{}-{n}", qos as u8);
                n += 1;
                let mut m = publish("crash/t", payload.as_bytes(), qos, false);
                m.packet_id = pid;
                c.send(&Packet::Publish(m));
                open.push((pid, payload));
            }
            match c.recv_within(Duration::from_millis(if open.len() < 8 { 1 } else { 500 })) {
                Some(Packet::PubAck(a)) | Some(Packet::PubRec(a)) => {
                    if let Some(at) = open.iter().position(|(p, _)| *p == a.packet_id) {
                        let (p, payload) = open.remove(at);
                        seen.lock().unwrap().acked.insert(payload);
                        if qos == QoS::ExactlyOnce {
                            released.push(p);
                            c.send(&Packet::PubRel(Ack::new(p)));
                        }
                    }
                }
                Some(Packet::PubComp(a)) => released.retain(|p| *p != a.packet_id),
                Some(_) => {}
                None => {
                    if c.recv_within(Duration::from_millis(1)).is_none() && !alive(&mut c) {
                        break;
                    }
                }
            }
        }
    }
}

/// Connects `id` with its persistent session to the broker at `addr` (which may be down or
/// starting again): the client and whether its session was present, or None if it was not
/// up.
fn reconnect(addr: &Mutex<SocketAddr>, proto: Protocol, id: &str) -> Option<(Client, bool)> {
    let addr = *addr.lock().unwrap();
    let Ok(stream) = std::net::TcpStream::connect(addr) else {
        std::thread::sleep(Duration::from_millis(20));
        return None;
    };
    let mut c = Client::from_stream(stream, proto);
    c.send(&Packet::Connect(Box::new(persistent(proto, id))));
    match c.recv() {
        Some(Packet::ConnAck(a)) if a.reason_code == ReasonCode::SUCCESS => {
            Some((c, a.session_present))
        }
        _ => None,
    }
}

/// Whether the connection still answers a PINGREQ.
fn alive(c: &mut Client) -> bool {
    c.send(&Packet::PingReq);
    loop {
        match c.recv_within(Duration::from_millis(500)) {
            Some(Packet::PingResp) => return true,
            Some(_) => continue,
            None => return false,
        }
    }
}

/// A persistent subscriber to `crash/#` at `qos` (subscribed once, before any publisher
/// starts), consuming across crashes. QoS 2 is received the exactly-once way: a PUBLISH whose
/// packet id is held (PUBREC sent, PUBREL not yet received) is not delivered again.
fn subscriber(
    port_of: Arc<Mutex<SocketAddr>>,
    proto: Protocol,
    id: String,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
) {
    let mut held: HashSet<u16> = HashSet::new();
    while !stop.load(Ordering::Relaxed) {
        let Some((mut c, present)) = reconnect(&port_of, proto, &id) else {
            continue;
        };
        assert!(present, "{id}: session present after a crash");
        // A PINGREQ after a quiet moment; the connection is taken for dead when nothing at
        // all comes back for 500 ms. Everything that does come is handled: a PUBLISH read
        // while waiting for the PINGRESP must not be dropped unacknowledged, or the broker's
        // in-flight window fills with messages this client never acknowledges and stalls.
        let mut pinged: Option<Instant> = None;
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let got = c.recv_within(Duration::from_millis(200));
            if got.is_some() {
                pinged = None;
            }
            match got {
                Some(Packet::Publish(p)) => {
                    let payload = String::from_utf8_lossy(&p.payload).into_owned();
                    let fresh = p.qos != QoS::ExactlyOnce || held.insert(p.packet_id);
                    if fresh {
                        let mut s = seen.lock().unwrap();
                        let count = s.got.entry(payload.clone()).or_default();
                        *count += 1;
                        if *count > 1 && !p.dup {
                            s.repeats_without_dup.push(payload);
                        }
                    }
                    match p.qos {
                        QoS::AtLeastOnce => c.send(&Packet::PubAck(Ack::new(p.packet_id))),
                        QoS::ExactlyOnce => c.send(&Packet::PubRec(Ack::new(p.packet_id))),
                        QoS::AtMostOnce => {}
                    }
                }
                Some(Packet::PubRel(a)) => {
                    held.remove(&a.packet_id);
                    c.send(&Packet::PubComp(Ack::new(a.packet_id)));
                }
                Some(_) => {}
                None => match pinged {
                    None => {
                        c.send(&Packet::PingReq);
                        pinged = Some(Instant::now());
                    }
                    Some(at) if at.elapsed() > Duration::from_millis(500) => break,
                    Some(_) => {}
                },
            }
        }
    }
}

/// kill -9 at random moments while QoS 1 and QoS 2 publishers run and persistent subscribers
/// (3.1.1 and v5) consume: with `persistence_sync = "always"` every acknowledged message
/// reaches every subscriber, QoS 2 exactly once, QoS 1 duplicates only with DUP.
#[test]
fn kill_9_loses_nothing_acknowledged() {
    stops_under_load_lose_nothing_acknowledged("always", Process::kill9);
}

/// The same with SIGTERM (a clean stop) under the default `interval` policy, which promises
/// that a clean stop loses nothing: a core whose clients' messages are still on their way to
/// another core when the stop begins must not lose them there.
#[test]
fn sigterm_under_load_loses_nothing_acknowledged() {
    stops_under_load_lose_nothing_acknowledged("interval", Process::terminate);
}

/// Stops the broker process with `stop_broker` at random moments under load (see the tests above)
/// and checks what the subscribers got against what the publishers had acknowledged.
fn stops_under_load_lose_nothing_acknowledged(sync: &str, stop_broker: fn(Process)) {
    let dir = TempDir::new("crash");
    let port = free_port();
    let start = || Process::start_with(dir.path(), port, sync);
    let mut broker = start();
    let addr = Arc::new(Mutex::new(broker.addr));
    // The subscribers' sessions and subscriptions exist before anything is published.
    let subs: Vec<(String, Protocol, QoS)> = vec![
        ("sub-v3-q1".into(), Protocol::V3_1_1, QoS::AtLeastOnce),
        ("sub-v5-q2".into(), Protocol::V5, QoS::ExactlyOnce),
    ];
    for (id, proto, qos) in &subs {
        subscribe_offline(broker.addr, *proto, id, "crash/#", *qos);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    let mut sub_seen = Vec::new();
    for (id, proto, _) in subs.clone() {
        let seen = Arc::new(Mutex::new(Seen::default()));
        sub_seen.push((id.clone(), seen.clone()));
        let (a, s) = (addr.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            subscriber(a, proto, id, seen, s)
        }));
    }
    let mut pub_seen = Vec::new();
    for (proto, qos) in [
        (Protocol::V3_1_1, QoS::AtLeastOnce),
        (Protocol::V5, QoS::ExactlyOnce),
    ] {
        let seen = Arc::new(Mutex::new(Seen::default()));
        pub_seen.push((qos, seen.clone()));
        let (a, s) = (addr.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            publisher(a, proto, qos, seen, s)
        }));
    }
    let mut rng = Rng::new();
    let started = Instant::now();
    let mut stops = 0;
    while stops < 12 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100 + rng.below(400)));
        stop_broker(broker);
        stops += 1;
        broker = start();
    }
    // Let the publishers finish what is open, then stop them and let subscribers drain.
    std::thread::sleep(Duration::from_millis(500));
    let acked: Vec<(QoS, HashSet<String>)> = pub_seen
        .iter()
        .map(|(q, s)| (*q, s.lock().unwrap().acked.clone()))
        .collect();
    let total: usize = acked.iter().map(|(_, a)| a.len()).sum();
    assert!(
        total > 100,
        "publishers made progress ({total} acknowledged)"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let missing = |seen: &Seen| {
        acked
            .iter()
            .flat_map(|(_, a)| a.iter())
            .filter(|p| !seen.got.contains_key(*p))
            .count()
    };
    while Instant::now() < deadline
        && sub_seen
            .iter()
            .any(|(_, s)| missing(&s.lock().unwrap()) > 0)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    drop(broker);
    // Read once the publishers have stopped: one that reconnects to the last broker after the
    // moment `acked` was taken sends its open messages again, and their copies count too.
    let resent: HashSet<String> = pub_seen
        .iter()
        .flat_map(|(_, s)| s.lock().unwrap().resent.clone())
        .collect();
    for (id, seen) in &sub_seen {
        let seen = seen.lock().unwrap();
        let lost: Vec<&String> = acked
            .iter()
            .flat_map(|(_, a)| a.iter())
            .filter(|p| !seen.got.contains_key(*p))
            .take(10)
            .collect();
        assert!(
            lost.is_empty(),
            "{id}: acknowledged messages lost after {stops} stops: {} of {total}, e.g. {lost:?}",
            missing(&seen)
        );
        let bad: Vec<_> = seen
            .repeats_without_dup
            .iter()
            .filter(|p| !resent.contains(*p))
            .take(10)
            .collect();
        assert!(bad.is_empty(), "{id}: delivered again without DUP: {bad:?}");
        if id.ends_with("q2") {
            let (_, q2) = acked
                .iter()
                .find(|(q, _)| *q == QoS::ExactlyOnce)
                .expect("qos 2 publisher");
            let twice: Vec<_> = q2
                .iter()
                .filter(|p| seen.got[*p] > 1 && !resent.contains(*p))
                .take(10)
                .collect();
            assert!(twice.is_empty(), "{id}: QoS 2 delivered twice: {twice:?}");
        }
    }
}
