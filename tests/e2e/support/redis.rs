//! A real Redis for the cluster tests: Debian's `redis-server` (on the PATH, or
//! `REDIS_BIN`), started on a free loopback port with a working directory of its own and no
//! persistence, waited for until it answers `PING`, and killed (its directory removed) on drop.
//! [`Redis::command`] speaks RESP over a plain socket, so a test can look at what the broker
//! wrote without a client library.

use super::etcd::free_port;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running redis-server.
pub struct Redis {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

impl Redis {
    /// Starts redis-server and waits until it answers (panics after 10 s).
    pub fn start() -> Redis {
        let dir = super::scratch_dir("redis");
        let port = free_port();
        let log = dir.join("redis.log");
        let bin = std::env::var("REDIS_BIN").unwrap_or_else(|_| "redis-server".to_owned());
        let child = Command::new(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {bin} (Debian: redis-server): {e}"));
        let redis = Redis {
            child: Some(child),
            dir,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis.try_command(&["PING"]).as_deref() != Some("+PONG") {
            assert!(
                Instant::now() < deadline,
                "redis did not answer within 10 s; see {}",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
        redis
    }

    /// The URL of database `db` (`redis://127.0.0.1:PORT/db`).
    pub fn url(&self, db: u8) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }

    /// Sends one command (on database 0) and returns the first line of the answer (`+OK`,
    /// `:3`, `*2`...); panics when Redis does not answer.
    pub fn command(&self, args: &[&str]) -> String {
        self.try_command(args)
            .unwrap_or_else(|| panic!("redis did not answer {args:?}"))
    }

    fn try_command(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).ok()?;
        Some(line.trim_end().to_owned()).filter(|l| !l.is_empty())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
