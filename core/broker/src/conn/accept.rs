//! The accept loop of one listener on one core, and setting up an accepted connection.

use super::read::serve;
use super::Conn;
use crate::conn::CloseReason;
use crate::net::{Endpoint, Slot};
use crate::shard::{add, Shard, TaskGuard};
use monoio::io::Splitable;
use monoio::net::{TcpListener, TcpStream};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::debug;

/// Accepts connections on one listener of this core until the core stops.
pub(crate) async fn accept_loop(
    core: Rc<Shard>,
    listener: TcpListener,
    endpoint: Arc<Endpoint>,
    _guard: TaskGuard,
) {
    let name = endpoint.name.clone();
    let mut backoff = crate::conn::limits::AcceptBackoff::default();
    let mut rate = crate::conn::limits::ConnectionRate::new(
        endpoint.connection_rate,
        endpoint.connection_rate_per_source,
        core.shared.cores(),
    );
    loop {
        let accepted = listener.accept().await;
        if core.stopping.get() {
            break;
        }
        match accepted {
            Ok((stream, peer)) => {
                backoff.reset();
                add(&core.stats().sockets, 1);
                let peer = crate::net::listener::canonical_peer(peer);
                if !rate.admit(&core, &name, peer) {
                    continue;
                }
                let max = core.config().max_connections;
                let n = core.shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
                if max != 0 && n > max {
                    // Like Mosquitto: over `max_connections` the socket is closed at once.
                    core.shared.connections.fetch_sub(1, Ordering::Relaxed);
                    debug!(%peer, "max_connections reached: connection refused");
                    drop(stream);
                    continue;
                }
                let Some(slot) = endpoint.admit() else {
                    core.shared.connections.fetch_sub(1, Ordering::Relaxed);
                    debug!(%peer, listener = %name, "listener max_connections reached: refused");
                    continue;
                };
                let Some(transport) = crate::conn::transport_io::accept(&endpoint) else {
                    core.shared.connections.fetch_sub(1, Ordering::Relaxed);
                    continue;
                };
                let guard = core.task_guard();
                let limiter = endpoint.publish_limiter();
                let accepted = (name.clone(), transport, slot, limiter);
                connection(core.clone(), stream, peer, accepted, guard);
            }
            // Pauses only when out of descriptors or memory (limits.rs).
            Err(e) => backoff.failed(&core, &name, &e).await,
        }
    }
    debug!(core = core.id, listener = %name, "listener closed");
}

/// What the accept loop hands a new connection: its listener's name, transport adapter,
/// connection slot and publish limits.
type Accepted = (
    Arc<str>,
    uringmq_transport::Transport,
    Slot,
    Option<Box<uringmq_session::PublishLimiter>>,
);

/// Sets a new connection up and spawns its task. Not `async`: what is only needed here (the
/// stream, the listener, the peer address) must not take room in the task's future, which
/// every idle connection keeps for its lifetime.
pub(super) fn connection(
    core: Rc<Shard>,
    stream: TcpStream,
    peer: SocketAddr,
    (listener, transport, slot, limiter): Accepted,
    guard: TaskGuard,
) {
    // TCP_NODELAY comes from the listener (`listener.rs`).
    let fd = stream.as_raw_fd();
    let deadline =
        Instant::now() + Duration::from_secs(u64::from(core.config().connect_timeout_secs));
    let (rd, wr) = stream.into_split();
    let id = core.new_conn_id();
    let conn = Rc::new_cyclic(|me| {
        let me = (me.clone(), wr, (slot, guard));
        Conn::new(
            core.clone(),
            me,
            (id, fd, Some(peer)),
            listener,
            transport,
            deadline,
        )
    });
    conn.publish_limiter.set(limiter);
    core.register_conn(id, conn.clone());
    if core.stopping.get() {
        conn.kill(CloseReason::Shutdown);
    }
    // Read at once instead of waiting for readability first: CONNECT is usually there or on
    // its way, and on io_uring a read that finds nothing waits inside the kernel, so this saves
    // a readiness operation per connection (measurable in connection storms). The buffer this
    // holds until CONNECT is bounded by the connect timeout.
    monoio::spawn(serve(conn, rd, true));
}
