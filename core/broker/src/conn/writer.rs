//! Writing to a client: control packets through `write_packet` (Maximum Packet Size rules) and
//! the writer task, spawned when bytes are queued and gone when the queue is empty.

use super::{CloseReason, Conn, Flag, IDLE_WRITE_BUFFER, MAX_SPARE_WRITE_BUFFER};
use crate::net::millis;
use crate::routing::OutQueue;
use crate::shard::{add, TaskGuard};
use bytes::BytesMut;
use monoio::io::{AsyncWriteRent, OwnedWriteHalf};
use monoio::net::TcpStream;
use std::num::NonZeroU32;
use std::rc::Rc;
use std::time::Instant;
use tracing::debug;
use uringmq_codec::{encode_within, Packet, Protocol};

/// Appends an acknowledgement-type packet, without its Reason String and User Properties if
/// only that keeps it within the client's Maximum Packet Size `max` (else it is discarded).
pub(crate) fn write_packet(
    out: &mut BytesMut,
    packet: &Packet,
    proto: Protocol,
    max: Option<NonZeroU32>,
) {
    if let Err(e) = encode_within(packet, proto, max, out) {
        debug!("cannot send {}: {e}", packet.packet_type());
        return;
    }
    crate::shard::count_control_packet();
}

/// Flushes the connection's queue until it is empty: one write (a `writev` when large
/// payloads are shared) per round, so everything queued meanwhile goes out in one system call.
/// Then parks the write half in the `Conn` and ends (an idle connection has no writer), or,
/// once the connection is closing, finishes the stream and shuts it down for writing.
pub(super) async fn writer(conn: Rc<Conn>, mut wr: OwnedWriteHalf<TcpStream>, _guard: TaskGuard) {
    let core = conn.core.clone();
    // Double buffering: producers fill `conn.out` while the other buffer is being written.
    let mut spare: Option<BytesMut> = None;
    loop {
        if conn.out.borrow().is_empty() && !crate::conn::transport_io::wants_write(&conn) {
            if conn.closing() {
                break;
            }
            // Going idle: keep no buffer worth mentioning, and no task.
            if conn.out.borrow().capacity() > IDLE_WRITE_BUFFER {
                *conn.out.borrow_mut() = OutQueue::default();
            }
            conn.wr.set(Some(wr));
            conn.flags.set(Flag::Writing, false);
            conn.last_out.set(millis(Instant::now()));
            return;
        }
        let next = spare.take().unwrap_or_default();
        let flush = conn.out.borrow_mut().take(next);
        // The queue is empty now: a reader held for it may read while this is written.
        conn.release_reads();
        let flush = crate::conn::transport_io::wrap(&conn, flush);
        let n = flush.len();
        // Cross-core effects this client could observe through these bytes go first.
        core.flush_mesh();
        // `persistence_sync = "always"`: and what they acknowledge is durable, on every core.
        if let Some(p) = &core.persist {
            if let Err(e) = p.barrier().await {
                conn.kill(CloseReason::Io(e.to_string()));
                conn.out.borrow_mut().clear();
                break;
            }
        }
        // Boxed so that an idle writer's future holds no room for the write in flight.
        let (res, mut buf) = Box::pin(flush.write_to(&mut wr)).await;
        if let Err(e) = res {
            debug!(peer = ?conn.peer(), "write failed: {e}");
            conn.kill(CloseReason::Io(e.to_string()));
            conn.out.borrow_mut().clear();
            break;
        }
        add(&core.stats().bytes_out, n as u64);
        if buf.capacity() <= MAX_SPARE_WRITE_BUFFER {
            buf.clear();
            spare = Some(buf);
        }
        if conn.flags.replace(Flag::Blocked, false) {
            if let Some(key) = conn.session() {
                core.pump(key);
            }
        }
    }
    // Boxed: an idle writer's future must not hold room for the closing writes.
    Box::pin(async move {
        crate::conn::transport_io::finish(&conn, &mut wr).await;
        let _ = wr.shutdown().await;
    })
    .await;
}
