//! A connection's task: waiting for readability, reading into a buffer allocated only while
//! there is something to read, and ending the connection.

use super::dispatch::handle_buffered;
use super::{Conn, Flag, Parking, READ_CHUNK, UNPAID_READ};
use crate::conn::CloseReason;
use crate::net::millis;
use crate::shard::add;
use bytes::BytesMut;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, OwnedReadHalf};
use monoio::net::TcpStream;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Instant;
use tracing::{debug, info};

/// A parked connection became readable (or was shut down): gives it a task again.
pub(crate) fn unpark(conn: Rc<Conn>) {
    if !conn.parked() || !conn.attach() {
        return;
    }
    conn.set_parked(false);
    if let Some(rd) = conn.rd.take() {
        monoio::spawn(serve(conn, rd, true));
    }
}

/// The task of one connection: waits for readability, handles what arrived, until the
/// connection ends (then closes it) or parks (then ends, see `hibernate.rs`). Only the wait
/// is in this future, which every connection that is not parked holds; reading and handling
/// are in a boxed future that lives while there is something to read.
pub(super) async fn serve(conn: Rc<Conn>, mut rd: OwnedReadHalf<TcpStream>, mut ready: bool) {
    // Kept across readiness waits: on epoll a wait on a socket that is still readable returns
    // at once, without going back to the runtime.
    let mut budget = crate::conn::fairness::ReadBudget::default();
    let reason = loop {
        if !ready {
            match wait_readable(&conn, &rd).await {
                Wait::Ready => {}
                Wait::Failed(e) => break CloseReason::Io(e.to_string()),
                Wait::Park => match conn.park(rd) {
                    Ok(()) => return,
                    Err(back) => {
                        rd = back;
                        continue;
                    }
                },
            }
        }
        ready = false;
        if let Some(reason) = Box::pin(read_ready(&conn, &mut rd, &mut budget)).await {
            break reason;
        }
    };
    closed(&conn, reason);
}

enum Wait {
    Ready,
    Failed(std::io::Error),
    Park,
}

/// Waits until the socket is readable, or until the sweep asks the connection to park.
/// Dropping the readiness wait for a park is safe: it consumes no bytes.
async fn wait_readable(conn: &Conn, rd: &OwnedReadHalf<TcpStream>) -> Wait {
    // SAFETY: `readable` takes `&self`; the read half is used by this task only and no read
    // is in flight.
    let stream = unsafe { &*rd.0.get() };
    // Boxed: the task's future then stays in a smaller size class than `Session` (a 256-byte
    // class), so the tasks that hibernating connections free leave whole pages free, not holes
    // between live sessions (BENCHMARKS.md, idle memory per connection).
    let mut ready = Box::pin(stream.readable(false));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = ready.as_mut().poll(cx) {
            conn.park_waker.take();
            return Poll::Ready(match r {
                Ok(()) => Wait::Ready,
                Err(e) => Wait::Failed(e),
            });
        }
        if conn.parking.get() == Parking::Requested {
            conn.park_waker.take();
            return Poll::Ready(Wait::Park);
        }
        conn.park_waker.set(Some(cx.waker().clone()));
        Poll::Pending
    })
    .await
}

/// After the connection's last read: the will, the session, the log line.
pub(super) fn closed(conn: &Rc<Conn>, reason: CloseReason) {
    let core = &conn.core;
    let peer = conn.peer();
    let reason = conn.final_reason(reason);
    if let CloseReason::Protocol(..) = reason {
        add(&core.stats().protocol_errors, 1);
    }
    // The writer sends what is queued (e.g. a DISCONNECT) and exits.
    conn.close_with(&reason);
    let client_id = conn.client_id.get().cloned();
    if let Some(key) = conn.session() {
        conn.clear_session();
        core.stats().connections.fetch_sub(1, Ordering::Relaxed);
        core.connection_closed(key, &reason);
        // A takeover waited for this connection's last packets (`Conn::drain_for_takeover`).
        core.drained(key);
    }
    match client_id {
        Some(id) => info!(
            client_id = %id,
            listener = %conn.listener,
            peer = peer.map(tracing::field::display),
            core = core.id,
            protocol = ?conn.protocol.get(),
            reason = %reason,
            "client disconnected"
        ),
        None => debug!(?peer, reason = %reason, "connection closed before CONNECT"),
    }
    core.unregister_conn(conn.id);
    core.shared.connections.fetch_sub(1, Ordering::Relaxed);
    // The listener slot and the task count go last: the stop waits for them.
    drop(conn.held.take());
}

/// The socket is readable: reads and handles packets until every complete packet is handled
/// and nothing more is waiting (`None`: go back to waiting, holding no buffer), or the
/// connection ends (its reason). A packet split over reads is completed here.
async fn read_ready(
    conn: &Rc<Conn>,
    rd: &mut OwnedReadHalf<TcpStream>,
    budget: &mut crate::conn::fairness::ReadBudget,
) -> Option<CloseReason> {
    let core = &conn.core;
    let mut buf = BytesMut::new();
    loop {
        if let Some(r) = conn.stop_reason() {
            return Some(r);
        }
        if conn.reads_held() {
            hold_reads(conn).await;
            continue;
        }
        budget.spend(core).await;
        match read_some(conn, rd, &mut buf).await {
            Ok((filled, peer_closed)) => {
                if let Err(r) = handle_buffered(core, conn, &mut buf).await {
                    return Some(r);
                }
                if peer_closed {
                    return Some(CloseReason::Eof);
                }
                if buf.is_empty() && !filled {
                    return None;
                }
            }
            Err(r) => return Some(r),
        }
    }
}

/// Waits until the writer has drained the queue below the hold mark, or the core stops the
/// connection.
async fn hold_reads(conn: &Conn) {
    std::future::poll_fn(|cx| {
        if !conn.reads_held() || conn.stop_reason().is_some() {
            conn.flags.set(Flag::ReadHeld, false);
            return Poll::Ready(());
        }
        conn.park_waker.set(Some(cx.waker().clone()));
        conn.flags.set(Flag::ReadHeld, true);
        Poll::Pending
    })
    .await
}

/// One read into `buf`: (the read filled the buffer, so more may be waiting; the peer
/// closed the TLS/WebSocket stream).
async fn read_some(
    conn: &Conn,
    rd: &mut OwnedReadHalf<TcpStream>,
    buf: &mut BytesMut,
) -> Result<(bool, bool), CloseReason> {
    let (raw, filled, closed) = if conn.transport.borrow().is_passthrough() {
        grow_for_read(buf, conn.decoder.get().needed(buf));
        let len = buf.len();
        let (res, slice) = rd.read(std::mem::take(buf).slice_mut(len..)).await;
        *buf = slice.into_inner();
        match res {
            Ok(0) => return Err(CloseReason::Eof),
            Ok(n) => (n, buf.len() == buf.capacity(), false),
            Err(e) => return Err(CloseReason::Io(e.to_string())),
        }
    } else {
        let r = crate::conn::transport_io::read(conn, rd, buf).await?;
        (r.raw, r.filled, r.closed)
    };
    add(&conn.core.stats().bytes_in, raw as u64);
    conn.last_seen.set(millis(Instant::now()));
    Ok((filled, closed))
}

/// Makes room in `buf` for the next read, `needed` being what the packet in progress lacks.
/// Up to [`UNPAID_READ`] it reserves all of it (one read can take a whole small packet);
/// beyond, the buffer grows with the bytes that actually came (doubling, capped at the
/// packet's end), so a fixed header that announces 16 MiB and sends nothing more pins
/// 64 KiB, not 16 MiB, and memory stays proportional to what a client sent.
pub(super) fn grow_for_read(buf: &mut BytesMut, needed: usize) {
    let step = if needed <= UNPAID_READ {
        needed.max(READ_CHUNK)
    } else {
        needed.min(buf.len().max(UNPAID_READ))
    };
    if buf.capacity() - buf.len() >= step {
        return;
    }
    if buf.is_empty() {
        buf.reserve(step);
        return;
    }
    // Reallocate exactly: `reserve` would double the capacity past the packet's end.
    let mut grown = BytesMut::with_capacity(buf.len() + step);
    grown.extend_from_slice(buf);
    *buf = grown;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `total` bytes of one packet the way `read_some` does, each read filling what
    /// `grow_for_read` made room for; returns the largest capacity seen per length reached.
    fn read_packet(total: usize) -> Vec<(usize, usize)> {
        let mut buf = BytesMut::new();
        let mut seen = Vec::new();
        while buf.len() < total {
            let needed = total - buf.len();
            grow_for_read(&mut buf, needed);
            let n = (buf.capacity() - buf.len()).min(total - buf.len());
            buf.extend_from_slice(&vec![0u8; n]);
            seen.push((buf.len(), buf.capacity()));
        }
        seen
    }

    #[test]
    fn an_announced_large_packet_grows_the_buffer_with_the_bytes_received() {
        let total = 16 << 20;
        let seen = read_packet(total);
        // Before anything arrives only UNPAID_READ is reserved, not 16 MiB.
        assert_eq!(seen[0].1, UNPAID_READ);
        for w in seen.windows(2) {
            let (len, _) = w[0];
            let (_, cap) = w[1];
            assert!(cap <= 2 * len.max(UNPAID_READ), "{cap} after {len} bytes");
        }
        // Never past the packet's end.
        assert_eq!(seen.last().unwrap(), &(total, total));
    }

    #[test]
    fn a_small_packet_is_read_in_one_go() {
        assert_eq!(read_packet(10_000), vec![(10_000, 10_000)]);
        assert_eq!(read_packet(100)[0].1, READ_CHUNK);
    }
}
