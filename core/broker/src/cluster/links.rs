//! Node-to-node links: one long-lived TCP connection dialed by each node to every other
//! member, authenticated both ways with the cluster secret (`link_auth.rs`), kept alive with
//! pings, and dialed again with a backoff when it breaks.
//!
//! Each node dials every other member and sends on the connection it dialed; it accepts the
//! others' connections and receives on them. So a pair of nodes has two connections, one per
//! direction, and no tie-break is needed when two nodes dial each other at once. The link
//! manager follows the membership view: a member that joins gets a dialer, one that leaves
//! loses it. Every read and write has a deadline, so a peer that stops answering is detected
//! within [`SILENCE`] and its link dialed again.

use super::frame::{read_frame, Frame, MAX_FRAME, MAX_HANDSHAKE_FRAME, VERSION};
use super::link_auth::{nonce, sign, verify, Exchange, Role};
use super::membership::Members;
use super::router::Router;
use super::status::{Direction, StatusBoard};
use super::Backoff;
use bytes::BytesMut;
use std::collections::HashMap;
use std::io::{Error, ErrorKind};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{interval, sleep, timeout, MissedTickBehavior};
use tracing::{info, warn};

/// How often the dialing node pings an idle link.
const PING_EVERY: Duration = Duration::from_millis(500);
/// A link on which nothing arrived for this long is dead.
const SILENCE: Duration = Duration::from_secs(2);
/// The deadline of a connect and of the whole handshake.
const HANDSHAKE: Duration = Duration::from_secs(2);

/// What the link tasks share.
pub struct LinkCtx {
    /// This node's name.
    pub name: String,
    /// The cluster secret.
    pub secret: Vec<u8>,
    /// Status for `cluster_status`.
    pub board: Arc<StatusBoard>,
    /// What the links carry.
    pub router: Arc<Router>,
}

/// Follows the membership view: one dialer per other member, replaced when its address
/// changes, ended when it leaves.
pub async fn manage(ctx: Arc<LinkCtx>, mut members: watch::Receiver<Members>) {
    let mut dialers: HashMap<String, (String, JoinHandle<()>)> = HashMap::new();
    loop {
        {
            let view = members.borrow_and_update();
            dialers.retain(|peer, (addr, task)| {
                let keep = view.get(peer).is_some_and(|r| r.addr == *addr);
                if !keep {
                    task.abort();
                }
                if view.get(peer).is_none() {
                    // Gone from etcd (stopped, or its lease expired): its routes go too.
                    ctx.router.forget(peer);
                }
                keep
            });
            for (peer, rec) in view.iter().filter(|(n, _)| **n != ctx.name) {
                if !dialers.contains_key(peer) {
                    let task = tokio::spawn(dial(ctx.clone(), peer.clone(), rec.addr.clone()));
                    dialers.insert(peer.clone(), (rec.addr.clone(), task));
                }
            }
        }
        if members.changed().await.is_err() {
            break;
        }
    }
    for (_, (_, task)) in dialers {
        task.abort();
    }
}

/// Keeps the outbound link to `peer` at `addr` up, dialing again after a backoff.
async fn dial(ctx: Arc<LinkCtx>, peer: String, addr: String) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let mut up = None;
        let result = outbound(&ctx, &peer, &addr, &mut up).await;
        if let Some(generation) = up {
            ctx.board.set_down(&peer, Direction::Outbound, generation);
            backoff.reset();
        }
        let wait = backoff.next();
        if let Err(e) = result {
            if up.is_some() {
                warn!(peer = %peer, addr = %addr, error = %e, "cluster: link lost");
            } else {
                tracing::debug!(peer = %peer, addr = %addr, error = %e, retry_in = ?wait,
                    "cluster: cannot link");
            }
        }
        sleep(wait).await;
    }
}

/// Dials, authenticates and then pings the link until it fails; `up` gets the link's
/// generation once it is up.
async fn outbound(
    ctx: &LinkCtx,
    peer: &str,
    addr: &str,
    up: &mut Option<u64>,
) -> std::io::Result<()> {
    let mut stream = timeout(HANDSHAKE, TcpStream::connect(addr))
        .await
        .map_err(|_| Error::new(ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    timeout(HANDSHAKE, handshake_dialer(ctx, peer, &mut stream))
        .await
        .map_err(|_| Error::new(ErrorKind::TimedOut, "handshake timed out"))??;
    *up = Some(ctx.board.set_up(peer, Direction::Outbound));
    info!(peer = %peer, addr = %addr, "cluster: link up");
    let (id, wake) = ctx.router.link_up(peer);
    let (rd, wr) = stream.into_split();
    // The reader is one future for the link's life: a frame read is never cut in two by a
    // timer or a write.
    let result = tokio::select! {
        r = read_acks(ctx, peer, id, rd) => r,
        r = write_frames(ctx, peer, id, wr, &wake) => r,
    };
    ctx.router.link_down(id);
    result
}

/// The dialing side's reader: Pongs and the peer's acknowledgements.
async fn read_acks(
    ctx: &LinkCtx,
    peer: &str,
    id: u16,
    mut rd: tokio::net::tcp::OwnedReadHalf,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let frame = next_frame(&mut rd, &mut buf).await?;
        ctx.board
            .link(peer, Direction::Outbound, |l| l.frames_in += 1);
        match frame {
            Frame::Pong => {}
            Frame::Ack { seq } => ctx.router.acked(id, seq),
            other => return Err(unexpected(&other)),
        }
    }
}

/// The dialing side's writer: what the router queued for the peer, as it comes (everything
/// queued meanwhile in one write), and a ping every [`PING_EVERY`].
async fn write_frames(
    ctx: &LinkCtx,
    peer: &str,
    id: u16,
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    wake: &tokio::sync::Notify,
) -> std::io::Result<()> {
    let mut ping = interval(PING_EVERY);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut out = BytesMut::new();
    loop {
        out.clear();
        tokio::select! {
            _ = ping.tick() => Frame::Ping.encode(&mut out),
            _ = wake.notified() => ctx.router.take_out(id, &mut out),
        }
        if out.is_empty() {
            continue;
        }
        timeout(SILENCE, wr.write_all(&out))
            .await
            .map_err(|_| silent())??;
        ctx.board
            .link(peer, Direction::Outbound, |l| l.frames_out += 1);
    }
}

/// The dialing side of the handshake: read Hello, send Auth, check Welcome.
async fn handshake_dialer(ctx: &LinkCtx, peer: &str, s: &mut TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let Frame::Hello {
        name,
        nonce: theirs,
        ..
    } = read_frame(s, &mut buf, MAX_HANDSHAKE_FRAME).await?
    else {
        return Err(Error::new(ErrorKind::InvalidData, "expected Hello"));
    };
    if name != peer {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("the node at this address is {name:?}, not {peer:?}"),
        ));
    }
    let mine = nonce();
    let x = Exchange {
        acceptor_nonce: &theirs,
        dialer_nonce: &mine,
        dialer: &ctx.name,
        acceptor: peer,
    };
    let auth = Frame::Auth {
        name: ctx.name.clone(),
        nonce: mine,
        mac: sign(&ctx.secret, Role::Dialer, &x),
    };
    send(s, &auth).await?;
    match read_frame(s, &mut buf, MAX_HANDSHAKE_FRAME).await? {
        Frame::Welcome { mac } if verify(&ctx.secret, Role::Acceptor, &x, &mac) => Ok(()),
        _ => Err(Error::new(
            ErrorKind::PermissionDenied,
            "the peer does not hold the cluster secret",
        )),
    }
}

/// Accepts the other nodes' links until the runtime ends.
pub async fn accept(ctx: Arc<LinkCtx>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, from)) => {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    if let Err(e) = inbound(&ctx, stream).await {
                        tracing::debug!(%from, error = %e, "cluster: inbound link ended");
                    }
                });
            }
            Err(e) => {
                warn!(error = %e, "cluster: accept failed");
                sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Authenticates an inbound link, then answers its pings until it fails.
async fn inbound(ctx: &LinkCtx, mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let from = stream.peer_addr()?;
    let peer = match timeout(HANDSHAKE, handshake_acceptor(ctx, &mut stream)).await {
        Ok(Ok(peer)) => peer,
        Ok(Err(e)) => {
            ctx.board.auth_failed();
            warn!(%from, error = %e, "cluster: link refused");
            return Err(e);
        }
        Err(_) => return Err(Error::new(ErrorKind::TimedOut, "handshake timed out")),
    };
    let generation = ctx.board.set_up(&peer, Direction::Inbound);
    let result = serve_inbound(ctx, &peer, &mut stream).await;
    ctx.board.set_down(&peer, Direction::Inbound, generation);
    result
}

/// The accepting side: answers pings, hands the peer's frames to the router, and once
/// everything read so far is applied (the cores have it in their mailboxes) acknowledges
/// the highest sequence number. Per frame it only decodes and routes: the status and the
/// acknowledgement follow once per batch read, and a frame already in the read buffer is
/// taken without a deadline (a timer and three status updates per frame were a third of the
/// receiving thread's time under load).
async fn serve_inbound(ctx: &LinkCtx, peer: &str, stream: &mut TcpStream) -> std::io::Result<()> {
    let (id, generation) = ctx.router.inbound_up(peer);
    let (rd, mut wr) = stream.split();
    let mut rd = tokio::io::BufReader::with_capacity(64 << 10, rd);
    let mut buf = Vec::new();
    let mut out = BytesMut::new();
    let mut batch = ctx.router.to_cores();
    let mut acked = 0;
    let mut last = 0;
    let mut frames = 0;
    loop {
        let frame = if holds_frame(rd.buffer()) {
            read_frame(&mut rd, &mut buf, MAX_FRAME).await?
        } else {
            next_frame(&mut rd, &mut buf).await?
        };
        frames += 1;
        match frame {
            Frame::Ping => Frame::Pong.encode(&mut out),
            other => {
                last = ctx
                    .router
                    .receive(id, other, &mut batch)
                    .map_err(|f| unexpected(&f))?
            }
        }
        if holds_frame(rd.buffer()) {
            continue;
        }
        // No whole frame read yet: apply, acknowledge, answer.
        ctx.router.flush(&mut batch);
        ctx.router.show_received(id, std::mem::take(&mut frames));
        if !ctx.router.inbound_current(id, generation) {
            return Err(Error::new(ErrorKind::ConnectionAborted, "superseded"));
        }
        if last > acked {
            Frame::Ack { seq: last }.encode(&mut out);
            acked = last;
        }
        if !out.is_empty() {
            timeout(SILENCE, wr.write_all(&out))
                .await
                .map_err(|_| silent())??;
            out.clear();
            ctx.board
                .link(peer, Direction::Inbound, |l| l.frames_out += 1);
        }
    }
}

/// The accepting side of the handshake: send Hello, check Auth, send Welcome. Returns the
/// authenticated peer's name.
async fn handshake_acceptor(ctx: &LinkCtx, s: &mut TcpStream) -> std::io::Result<String> {
    let mine = nonce();
    let hello = Frame::Hello {
        version: VERSION,
        name: ctx.name.clone(),
        nonce: mine,
    };
    send(s, &hello).await?;
    let mut buf = Vec::new();
    let Frame::Auth { name, nonce, mac } = read_frame(s, &mut buf, MAX_HANDSHAKE_FRAME).await?
    else {
        return Err(Error::new(ErrorKind::InvalidData, "expected Auth"));
    };
    let x = Exchange {
        acceptor_nonce: &mine,
        dialer_nonce: &nonce,
        dialer: &name,
        acceptor: &ctx.name,
    };
    if !verify(&ctx.secret, Role::Dialer, &x, &mac) {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            format!("node {name:?} does not hold the cluster secret"),
        ));
    }
    if name == ctx.name {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("another node is also named {name:?}"),
        ));
    }
    send(
        s,
        &Frame::Welcome {
            mac: sign(&ctx.secret, Role::Acceptor, &x),
        },
    )
    .await?;
    Ok(name)
}

async fn send(s: &mut TcpStream, f: &Frame) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    f.encode(&mut out);
    s.write_all(&out).await
}

/// Whether `buf` starts with a whole frame.
fn holds_frame(buf: &[u8]) -> bool {
    buf.len() >= 4 && buf.len() - 4 >= u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize
}

/// The next frame of a live link; a link on which nothing arrived for [`SILENCE`] is dead.
async fn next_frame<R: tokio::io::AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Frame> {
    timeout(SILENCE, read_frame(rd, buf, MAX_FRAME))
        .await
        .map_err(|_| silent())?
}

fn silent() -> Error {
    Error::new(ErrorKind::TimedOut, "the peer went silent")
}

fn unexpected(f: &Frame) -> Error {
    Error::new(ErrorKind::InvalidData, format!("unexpected frame {f:?}"))
}
