//! The `uringmq` binary as a process, for what only a process shows: its behaviour at its own
//! descriptor limit (its log and counters), and SIGTERM. MQTT is spoken with hand-made frames: a few
//! bytes of CONNECT, SUBSCRIBE, PUBLISH and PINGREQ.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A broker process on a free port, one core, its log collected line by line.
struct Proc {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Starts the binary with `config` (TOML); `nofile` lowers its descriptor limit (in the
    /// child only, between fork and exec).
    fn start(config: &str, nofile: Option<u64>) -> Proc {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "uringmq-process-{}-{}.toml",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, config).expect("config written");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_uringmq"));
        cmd.arg("--config")
            .arg(&path)
            .args(["--port", "0", "--cores", "1", "--log-level", "info"])
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(n) = nofile {
            let limit = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: setrlimit is async-signal-safe; it lowers the child's own limit only.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("broker binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("listening") {
                    let _ = tx.send(listening_addr(&line));
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(10))
            .ok()
            .flatten()
            .expect("the broker logs its address");
        let _ = std::fs::remove_file(&path);
        Proc { child, addr, log }
    }

    /// Log lines from index `from` on.
    fn log_since(&self, from: usize) -> Vec<String> {
        self.log.lock().unwrap()[from..].to_vec()
    }

    fn log_len(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Sends SIGTERM and waits (bounded) for the exit; how long it took, and whether it
    /// exited with success.
    fn terminate(&mut self) -> (Duration, bool) {
        let start = Instant::now();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        while start.elapsed() < Duration::from_secs(15) {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (start.elapsed(), status.success());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        (start.elapsed(), false)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `addr=HOST:PORT` of the broker's "listening" line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let at = line.find("addr=")? + 5;
    line[at..].split_whitespace().next()?.parse().ok()
}

/// A frame: fixed header byte, remaining length, body.
fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![first];
    let mut len = body.len();
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        v.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
    v.extend_from_slice(body);
    v
}

fn string(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

/// An MQTT 3.1.1 CONNECT, clean session, keep-alive 60 s.
fn connect_frame(id: &str) -> Vec<u8> {
    let mut body = string("MQTT");
    body.extend_from_slice(&[4, 2, 0, 60]);
    body.extend_from_slice(&string(id));
    frame(0x10, &body)
}

/// Reads exactly `want` within `timeout`; false on timeout or close.
fn read_exact_within(s: &mut TcpStream, want: &[u8], timeout: Duration) -> bool {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).is_ok() && got == want
}

/// Connects and sends CONNECT; the stream when CONNACK 0 arrives within `timeout`, else the
/// stream in an `Err`.
fn mqtt_connect(addr: SocketAddr, id: &str, timeout: Duration) -> Result<TcpStream, TcpStream> {
    let mut s = TcpStream::connect(addr).expect("TCP connect");
    s.write_all(&connect_frame(id)).expect("CONNECT written");
    if read_exact_within(&mut s, &[0x20, 2, 0, 0], timeout) {
        Ok(s)
    } else {
        Err(s)
    }
}

#[test]
fn sigterm_does_not_wait_for_a_client_that_does_not_read() {
    let mut b = Proc::start("max_outbound_bytes = 65536\n", None);
    let wait = Duration::from_secs(5);
    let mut stalled = mqtt_connect(b.addr, "stalled", wait).expect("CONNACK");
    let mut sub = vec![0, 1];
    sub.extend_from_slice(&string("firehose"));
    sub.push(0);
    stalled.write_all(&frame(0x82, &sub)).unwrap();
    assert!(read_exact_within(&mut stalled, &[0x90, 3, 0, 1, 0], wait));
    // 32 MB for a reader that reads no more: far beyond the socket buffers between them (a
    // receive window does not grow while nothing is read; the send buffer stops at tcp_wmem).
    let mut p = mqtt_connect(b.addr, "p", wait).expect("CONNACK");
    let mut body = string("firehose");
    body.extend_from_slice(&vec![7u8; 64 * 1024]);
    let publish = frame(0x30, &body);
    for _ in 0..512 {
        p.write_all(&publish).unwrap();
    }
    // The broker answers PINGREQ after routing everything sent before it.
    p.write_all(&[0xC0, 0]).unwrap();
    assert!(read_exact_within(
        &mut p,
        &[0xD0, 0],
        Duration::from_secs(20)
    ));
    let (took, ok) = b.terminate();
    assert!(ok, "exit status after SIGTERM");
    // 250 + 500 ms by design; 4 s leaves room for a loaded machine, and fails against 5 s.
    assert!(took < Duration::from_secs(4), "SIGTERM took {took:?}");
}

#[test]
fn at_its_descriptor_limit_the_broker_neither_spins_nor_floods_its_log_and_recovers() {
    const NOFILE: u64 = 200;
    let mut b = Proc::start("hibernate_after_ms = 100\n", Some(NOFILE));
    // Fill up: the first client left without CONNACK waits in the backlog, and every accept
    // of it fails for want of a descriptor.
    let mut conns = Vec::new();
    let mut pending = None;
    for i in 0..NOFILE {
        match mqtt_connect(b.addr, &format!("c{i}"), Duration::from_millis(500)) {
            Ok(s) => conns.push(s),
            Err(s) => {
                pending = Some(s);
                break;
            }
        }
    }
    let at_cap = Instant::now();
    let pending = pending.expect("the broker reached its descriptor limit");
    assert!(conns.len() > 100, "only {} connections", conns.len());
    // The idle connections park (100 ms) and then fail to detach (no descriptor for the
    // duplicate); a first report of each failure is logged before the window.
    std::thread::sleep(Duration::from_millis(500));
    let from = b.log_len();
    std::thread::sleep(Duration::from_millis(1500));
    let window = b.log_since(from);
    let count = |what: &str| window.iter().filter(|l| l.contains(what)).count();
    assert!(
        count("accept failed") <= 1,
        "accept failures logged {} times in 1.5 s",
        count("accept failed")
    );
    assert!(count("cannot detach") <= 1, "{window:?}");
    // Descriptors free up: new clients get in again.
    drop(pending);
    conns.truncate(conns.len() - 10);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut n = 0;
    while mqtt_connect(b.addr, &format!("late{n}"), Duration::from_secs(1)).is_err() {
        assert!(
            Instant::now() < deadline,
            "no client admitted after freeing descriptors"
        );
        n += 1;
    }
    // How often it tried while at the cap, from the counters it logs when stopping. Without
    // the back-offs: ~50,000 failed detaches a second (each sweep tries every parked
    // connection), and an accept every 50 ms. With them: one detach try a second, and
    // accepts backing off to one per 200 ms.
    let from = b.log_len();
    let secs = at_cap.elapsed().as_secs_f64();
    assert!(b.terminate().1, "exit status after SIGTERM");
    let counter = |name: &str| stopping_counter(&b.log_since(from), name) as f64 / secs;
    assert!(
        counter("accept_failures") <= 10.0,
        "{} accepts/s",
        counter("accept_failures")
    );
    assert!(
        counter("detach_failures") <= 3.0,
        "{} detaches/s",
        counter("detach_failures")
    );
}

/// The counter `name` of the broker's "stopping" line (`stats = Stats { name: N, .. }`).
fn stopping_counter(log: &[String], name: &str) -> u64 {
    let line = log
        .iter()
        .find(|l| l.contains("stopping"))
        .expect("the broker logs its counters when stopping");
    let at = line
        .find(&format!("{name}: "))
        .expect("counter in the line")
        + name.len()
        + 2;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a number")
}
