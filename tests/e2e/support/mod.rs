//! Shared helpers for the end-to-end tests: an in-process broker on port 0 with two cores, the
//! packets tests send most, scratch directories, and the test client ([`client`]) with the TLS
//! and WebSocket streams it can run over ([`streams`]).

pub mod client;
pub mod etcd;
pub mod redis;
pub mod streams;

use bytes::Bytes;
pub use client::{Client, Stream};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
pub use uringmq::{Broker, Config};
pub use uringmq_codec::*;

/// How long a test waits for a packet that must arrive.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a test waits to be reasonably sure a packet does not arrive.
pub const QUIET: Duration = Duration::from_millis(300);

/// The test config: port 0, two cores, no pinning (tests run in parallel on a small machine).
pub fn config() -> Config {
    Config {
        port: 0,
        cores: 2,
        pin_cores: false,
        ..Config::default()
    }
}

/// Starts a broker with [`config`] changed by `f`.
pub fn broker_with(f: impl FnOnce(&mut Config)) -> Broker {
    let mut c = config();
    f(&mut c);
    if let Ok(filter) = std::env::var("URINGMQ_TEST_LOG") {
        uringmq::init_logging(&filter, uringmq::LogFormat::Text);
    }
    Broker::builder(c).start().expect("broker starts")
}

/// Starts a broker with the test config.
pub fn broker() -> Broker {
    broker_with(|_| {})
}

/// A CONNECT with defaults: clean start, keep-alive 60.
pub fn connect_packet(proto: Protocol, client_id: &str) -> Connect {
    Connect {
        protocol: proto,
        clean_start: true,
        keep_alive: 60,
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
        properties: Default::default(),
    }
}

/// A PUBLISH.
pub fn publish(topic: &str, payload: &[u8], qos: QoS, retain: bool) -> Publish {
    Publish {
        dup: false,
        qos,
        retain,
        topic: topic.into(),
        packet_id: 0,
        properties: Default::default(),
        payload: Bytes::copy_from_slice(payload),
    }
}

/// A TCP connection from `source` (another loopback address than the test's clients: a
/// second host, as far as the broker can tell).
pub fn connect_from(source: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&SocketAddr::from((source, 0)).into())?;
    s.connect(&to.into())?;
    let s = TcpStream::from(s);
    s.set_nodelay(true).ok();
    Ok(s)
}

/// A fresh scratch directory under the system temp dir, unique within this test process (all
/// tests share one process, so the pid alone does not separate them).
pub fn scratch_dir(tag: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("uringmq-{tag}-{}-{n}", std::process::id()));
    // Empty even if an earlier run with the same pid left it behind (a store would recover it).
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A CONNECT that keeps the session: 3.1.1 clean session 0, v5 clean start 0 with an expiry.
pub fn persistent(proto: Protocol, id: &str) -> Connect {
    let mut c = connect_packet(proto, id);
    c.clean_start = false;
    if proto.is_v5() {
        c.properties.session_expiry_interval = Some(3600);
    }
    c
}

/// Connects with [`persistent`]; returns the client and whether its session was present.
pub fn connect_persistent(addr: SocketAddr, proto: Protocol, id: &str) -> (Client, bool) {
    let (c, ack) = Client::connect_with(addr, persistent(proto, id));
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "CONNACK of {id}");
    (c, ack.session_present)
}
