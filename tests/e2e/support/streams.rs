//! The streams the edge tests run the test [`Client`](super::Client) over: TLS (a rustls
//! client, with generated certificates) and a hand-written WebSocket client whose frames the
//! tests control byte for byte (to split packets across frames or pack several into one).

use super::{scratch_dir, Broker, Stream, WAIT};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A scratch directory with generated certificates (nothing checked in, nothing expires).
pub struct Pki {
    pub dir: std::path::PathBuf,
    pub paths: uringmq_transport::cert_gen::CertPaths,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Generates a CA, a server certificate for localhost and a client certificate with `cn`.
pub fn pki(cn: &str) -> Pki {
    let dir = scratch_dir("pki");
    let paths = uringmq_transport::cert_gen::write_test_certs(&dir, cn).expect("certs");
    Pki { dir, paths }
}

/// A `[[listener]]` table on a free loopback port.
pub fn listener(transport: uringmq::Transport) -> uringmq::ListenerConfig {
    uringmq::ListenerConfig::new(transport, 0)
}

/// A TLS listener table using `pki`'s server certificate.
pub fn tls_listener(pki: &Pki, transport: uringmq::Transport) -> uringmq::ListenerConfig {
    uringmq::ListenerConfig {
        cert_file: Some(pki.paths.server_cert.clone()),
        key_file: Some(pki.paths.server_key.clone()),
        ..listener(transport)
    }
}

/// The bound address of the listener at `index` of `[[listener]]` (0 is the first table).
pub fn extra_addr(b: &Broker, index: usize) -> SocketAddr {
    b.listener_addrs()[index + 1].1
}

fn read_pem_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .expect("pem")
        .collect::<Result<Vec<_>, _>>()
        .expect("certs")
}

/// A rustls client configuration trusting `ca`, optionally presenting a client certificate.
pub fn client_tls(
    ca: &Path,
    client_cert: Option<(&Path, &Path)>,
    version: &'static rustls::SupportedProtocolVersion,
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in read_pem_certs(ca) {
        roots.add(c).expect("CA");
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .expect("versions")
        .with_root_certificates(roots);
    let config = match client_cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                read_pem_certs(cert),
                PrivateKeyDer::from_pem_file(key).expect("key"),
            )
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// A TLS stream to `addr`, not yet handshaken (the first read or write does it).
pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Opens TCP and starts TLS with server name `localhost`.
pub fn tls_connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> TlsStream {
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_nodelay(true).ok();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config, name).expect("client conn");
    rustls::StreamOwned::new(conn, tcp)
}

/// Drives a TLS handshake to its end; the error is the client's view of a failure.
pub fn tls_handshake(s: &mut TlsStream) -> io::Result<()> {
    s.sock.set_read_timeout(Some(WAIT)).ok();
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    // TLS 1.3: the server's verdict on our certificate arrives after our Finished.
    s.conn.complete_io(&mut s.sock)?;
    Ok(())
}

impl Stream for TlsStream {
    fn set_timeout(&mut self, t: Duration) {
        self.sock.set_read_timeout(Some(t)).ok();
    }
}

/// MQTT over WebSocket, client side: the upgrade, masked frames out, unmasked frames in.
pub struct Ws<S> {
    pub inner: S,
    /// Bytes of server frames not parsed yet.
    raw: Vec<u8>,
    /// Payload bytes parsed but not read yet.
    payload: Vec<u8>,
    /// The server's close frame code, once seen.
    pub close_code: Option<u16>,
}

impl<S: Stream> Ws<S> {
    /// Sends the upgrade request for `path` offering `protocols`, and returns the client and
    /// the response head (status line and headers) whatever the status.
    pub fn upgrade(mut inner: S, path: &str, protocols: Option<&str>) -> (Self, String) {
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n"
        );
        if let Some(p) = protocols {
            req.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
        }
        req.push_str("\r\n");
        inner.write_all(req.as_bytes()).expect("upgrade request");
        inner.flush().ok();
        inner.set_timeout(WAIT);
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match inner.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        let ws = Ws {
            inner,
            raw: Vec::new(),
            payload: Vec::new(),
            close_code: None,
        };
        (ws, String::from_utf8_lossy(&head).into_owned())
    }

    /// Writes one masked frame (`opcode` 0 continuation, 1 text, 2 binary, 8 close, 9 ping).
    pub fn send_frame(&mut self, opcode: u8, fin: bool, payload: &[u8]) {
        let mut f = vec![(u8::from(fin) << 7) | opcode];
        let len = payload.len();
        if len < 126 {
            f.push(0x80 | len as u8);
        } else if len <= 0xffff {
            f.push(0x80 | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let mask = [0x12, 0x34, 0x56, 0x78];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        let _ = self.inner.write_all(&f);
        let _ = self.inner.flush();
    }

    /// Parses complete server frames out of `raw`. Returns false when more bytes are needed.
    fn parse_frame(&mut self) -> bool {
        let r = &self.raw;
        if r.len() < 2 {
            return false;
        }
        assert_eq!(r[1] & 0x80, 0, "server frames are never masked");
        let (len, at) = match r[1] & 0x7f {
            126 if r.len() >= 4 => (u16::from_be_bytes([r[2], r[3]]) as usize, 4),
            127 if r.len() >= 10 => (
                u64::from_be_bytes(r[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => return false,
            n => (n as usize, 2),
        };
        if r.len() < at + len {
            return false;
        }
        let opcode = r[0] & 0x0f;
        let body: Vec<u8> = r[at..at + len].to_vec();
        self.raw.drain(..at + len);
        match opcode {
            0 | 2 => self.payload.extend_from_slice(&body),
            8 => {
                self.close_code = Some(if body.len() >= 2 {
                    u16::from_be_bytes([body[0], body[1]])
                } else {
                    1005
                })
            }
            9 | 10 => {}
            other => panic!("server sent opcode {other}"),
        }
        true
    }
}

impl<S: Stream> Read for Ws<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            while self.parse_frame() {}
            if !self.payload.is_empty() {
                let n = buf.len().min(self.payload.len());
                buf[..n].copy_from_slice(&self.payload[..n]);
                self.payload.drain(..n);
                return Ok(n);
            }
            if self.close_code.is_some() {
                return Ok(0);
            }
            let mut chunk = [0u8; 8192];
            let n = self.inner.read(&mut chunk)?;
            if n == 0 {
                return Ok(0);
            }
            self.raw.extend_from_slice(&chunk[..n]);
        }
    }
}

impl<S: Stream> Write for Ws<S> {
    /// One binary frame per write.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send_frame(2, true, buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<S: Stream> Stream for Ws<S> {
    fn set_timeout(&mut self, t: Duration) {
        self.inner.set_timeout(t);
    }
}
