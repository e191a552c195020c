//! The bridge's socket: plain TCP, or TLS through a rustls client session fed with the
//! socket's bytes (sans-I/O, so it runs the same under io_uring and epoll). Split in a
//! reading and a writing half so the bridge reads and writes at once.

use bytes::BytesMut;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use uringmq_transport::TlsClient;

const READ_CHUNK: usize = 16 * 1024;

/// The reading half.
pub(crate) struct WireRd {
    rd: OwnedReadHalf<TcpStream>,
    tls: Option<Rc<RefCell<TlsClient>>>,
    raw: BytesMut,
}

/// The writing half.
pub(crate) struct WireWr {
    wr: OwnedWriteHalf<TcpStream>,
    tls: Option<Rc<RefCell<TlsClient>>>,
}

/// Splits `stream`; with `tls`, runs the handshake first.
pub(crate) async fn open(
    mut stream: TcpStream,
    mut tls: Option<TlsClient>,
) -> io::Result<(WireRd, WireWr)> {
    if let Some(t) = tls.as_mut() {
        handshake(&mut stream, t).await?;
    }
    let tls = tls.map(|t| Rc::new(RefCell::new(t)));
    let (rd, wr) = stream.into_split();
    Ok((
        WireRd {
            rd,
            tls: tls.clone(),
            raw: BytesMut::new(),
        },
        WireWr { wr, tls },
    ))
}

async fn handshake(stream: &mut TcpStream, t: &mut TlsClient) -> io::Result<()> {
    let mut raw = BytesMut::new();
    while t.is_handshaking() {
        let mut out = BytesMut::new();
        t.pending_raw(&mut out);
        if !out.is_empty() {
            let (res, _) = stream.write_all(out).await;
            res?;
            continue;
        }
        read_raw(stream, &mut raw).await?;
        let mut plain = BytesMut::new();
        t.read_raw(&raw, &mut plain).map_err(io::Error::other)?;
        raw.clear();
    }
    let mut out = BytesMut::new();
    t.pending_raw(&mut out);
    if !out.is_empty() {
        let (res, _) = stream.write_all(out).await;
        res?;
    }
    Ok(())
}

/// One read of socket bytes appended to `buf`; end of file is an error.
async fn read_raw<R: AsyncReadRent>(rd: &mut R, buf: &mut BytesMut) -> io::Result<()> {
    buf.reserve(READ_CHUNK);
    let len = buf.len();
    let (res, slice) = rd.read(std::mem::take(buf).slice_mut(len..)).await;
    *buf = slice.into_inner();
    match res? {
        0 => Err(io::ErrorKind::UnexpectedEof.into()),
        _ => Ok(()),
    }
}

impl WireRd {
    /// Reads once; MQTT bytes are appended to `buf`. Returns whether the TLS session has
    /// records of its own to send (the writer must be woken).
    pub(crate) async fn read(&mut self, buf: &mut BytesMut) -> io::Result<bool> {
        let Some(tls) = &self.tls else {
            read_raw(&mut self.rd, buf).await?;
            return Ok(false);
        };
        read_raw(&mut self.rd, &mut self.raw).await?;
        let mut t = tls.borrow_mut();
        let closed = t.read_raw(&self.raw, buf).map_err(io::Error::other)?;
        self.raw.clear();
        if closed {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(t.wants_write())
    }
}

impl WireWr {
    /// Writes `mqtt` (may be empty: flushes what TLS has to send).
    pub(crate) async fn write(&mut self, mqtt: BytesMut) -> io::Result<()> {
        let raw = match &self.tls {
            None => mqtt,
            Some(t) => {
                let mut raw = BytesMut::new();
                t.borrow_mut().write_plain(&mqtt, &mut raw);
                raw
            }
        };
        if raw.is_empty() {
            return Ok(());
        }
        let (res, _) = self.wr.write_all(raw).await;
        res.map(drop)
    }
}
