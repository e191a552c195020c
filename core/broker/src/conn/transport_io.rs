//! The socket side of TLS, WebSocket and WSS connections: the connection's reader and writer
//! tasks call in here only when the connection's [`Transport`] is not plain TCP, so the plain
//! TCP path keeps reading straight into the MQTT buffer and writing straight from it.
//!
//! Reading: socket bytes go into a raw buffer, the adapter turns them into MQTT bytes appended
//! to the connection's MQTT buffer, and whatever the adapter must answer (TLS handshake records,
//! the WebSocket upgrade response, pongs) wakes the writer. Writing: the MQTT bytes queued for
//! the connection are wrapped (TLS records, one binary frame per flush) right before the write,
//! behind the adapter's own pending bytes.

use crate::conn::{CloseReason, Conn};
use crate::routing::Flush;
use bytes::BytesMut;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf};
use monoio::net::TcpStream;
use tracing::{debug, warn};
use uringmq_transport::{ReadOutcome, Transport};

/// Raw bytes read at a time: one full TLS record (16 KiB plus overhead).
const RAW_CHUNK: usize = 16 * 1024 + 512;

/// What one read through the adapter gave.
pub(crate) struct RawRead {
    /// Socket bytes read (for the byte counters).
    pub(crate) raw: usize,
    /// The read filled the raw buffer: more may be waiting, read again without polling.
    pub(crate) filled: bool,
    /// The peer ended the transport cleanly (TLS `close_notify`, WebSocket close): handle the
    /// MQTT bytes already decoded, then treat it as end-of-file (the will is published).
    pub(crate) closed: bool,
}

/// Reads once from the socket and feeds the adapter; MQTT bytes are appended to `mqtt`.
///
/// A transport error (failed handshake, bad certificate, broken framing) is logged with its
/// reason and ends this connection only; the adapter's answer (alert, HTTP error, close frame)
/// is left for the writer to send.
pub(crate) async fn read(
    conn: &Conn,
    rd: &mut OwnedReadHalf<TcpStream>,
    mqtt: &mut BytesMut,
) -> Result<RawRead, CloseReason> {
    let raw = BytesMut::with_capacity(RAW_CHUNK);
    let (res, slice) = rd.read(raw.slice_mut(0..)).await;
    let raw = slice.into_inner();
    let n = match res {
        Ok(0) => return Err(CloseReason::Eof),
        Ok(n) => n,
        Err(e) => return Err(CloseReason::Io(e.to_string())),
    };
    let mut t = conn.transport.borrow_mut();
    let handshaking = t.is_handshaking();
    let outcome = t.read_raw(&raw[..n], mqtt);
    let reply = t.wants_write();
    let name = t.name();
    drop(t);
    if reply {
        conn.wake();
    }
    match outcome {
        Ok(outcome) => Ok(RawRead {
            raw: n,
            filled: n == RAW_CHUNK,
            closed: outcome == ReadOutcome::Closed,
        }),
        Err(e) => {
            let stage = if handshaking { "handshake" } else { "stream" };
            warn!(peer = ?conn.peer(), listener = %conn.listener, "{name} {stage} failed: {e}");
            Err(CloseReason::Io(format!("{name} {stage} failed: {e}")))
        }
    }
}

/// True when the adapter has bytes of its own to send (handshake answers, pongs, alerts).
pub(crate) fn wants_write(conn: &Conn) -> bool {
    conn.transport.borrow().wants_write()
}

/// Bytes the adapter holds for the client besides the MQTT out queue (WebSocket pongs).
pub(crate) fn pending_out(conn: &Conn) -> usize {
    conn.transport.borrow().pending_len()
}

/// Turns the MQTT bytes of one flush into the bytes to write: unchanged for plain TCP (shared
/// payloads stay shared), otherwise the adapter's pending bytes followed by the wrapped MQTT
/// bytes, gathered into one buffer by the wrapping (encryption, framing) itself.
pub(crate) fn wrap(conn: &Conn, mqtt: Flush) -> Flush {
    let mut t = conn.transport.borrow_mut();
    if t.is_passthrough() {
        return mqtt;
    }
    // Record or frame headers add a few bytes per 16 KiB.
    let len = mqtt.len();
    let mut raw = BytesMut::with_capacity(len + len / 256 + 64);
    t.pending_raw(&mut raw);
    t.write_mqtt_parts(&mqtt.parts(), &mut raw);
    Flush::Flat(raw)
}

/// Ends the adapter gracefully (WebSocket close frame, TLS `close_notify`) before the socket
/// is shut down. Nothing to do for plain TCP.
pub(crate) async fn finish(conn: &Conn, wr: &mut OwnedWriteHalf<TcpStream>) {
    let raw = {
        let mut t = conn.transport.borrow_mut();
        if t.is_passthrough() {
            return;
        }
        t.close();
        let mut raw = BytesMut::new();
        t.pending_raw(&mut raw);
        raw
    };
    if !raw.is_empty() {
        let (res, _) = wr.write_all(raw).await;
        if let Err(e) = res {
            debug!(peer = ?conn.peer(), "closing the transport: {e}");
        }
    }
}

/// The adapter for a newly accepted socket, or `None` (logged) if it cannot be made.
pub(crate) fn accept(endpoint: &crate::net::Endpoint) -> Option<Transport> {
    match endpoint.transport() {
        Ok(t) => Some(t),
        Err(e) => {
            warn!(listener = %endpoint.name, "cannot start the transport: {e}");
            None
        }
    }
}
