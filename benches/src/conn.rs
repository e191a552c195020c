//! One MQTT client connection of the load generator: handshake, then a reader task and a writer
//! task sharing a send buffer.
//!
//! The reader never races a timer (dropping an in-flight io_uring read can lose bytes); it parses
//! every whole frame of one read, records what it must, queues replies (PUBACK, PUBREC, PUBCOMP,
//! PUBREL) and wakes the writer once. The writer owns the socket's write side and sends everything
//! queued since its last turn, plus the publications that fall due, in one write: batching writes
//! per loop turn is what keeps the load generator off the critical path.

use crate::clock::mono_ns;
use crate::run::{Ctx, Phase};
use crate::signal::Signal;
use crate::stamp::Stamp;
use crate::stats::WorkerResult;
use crate::wire::{self, kind, Version};
use crate::{net, readbuf::ReadBuf};
use monoio::io::{AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// Thread-local figures, shared by the thread's tasks.
pub type Stats = Rc<RefCell<WorkerResult>>;

/// Most messages a publisher adds to one write.
const MAX_BATCH: u64 = 4096;

/// How long the writer of a connection that does not publish sleeps when it has no PINGREQ
/// due: it is woken for anything else (replies to send, the stop). Polling a million idle
/// connections every 50 ms, as publishers poll, would take the load generator's whole CPU.
const QUIET_SLEEP: Duration = Duration::from_secs(3600);

/// The writers' wake-ups of one runtime thread: raised when the run stops, so that every
/// connection sends its DISCONNECT.
pub type Wakers = Rc<RefCell<Vec<Arc<Signal>>>>;

/// What a connection does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Publisher `i` of the plan.
    Pub(u32),
    /// Subscriber `i` of the plan.
    Sub(u32),
    /// Connects and holds (idle) or cycles (connect storm).
    Bare(u32),
}

/// Why a connection could not be opened.
#[derive(Debug, Error)]
pub enum OpenError {
    /// TCP or socket error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// No CONNACK/SUBACK within `--connect-timeout`.
    #[error("timed out waiting for CONNACK/SUBACK")]
    Timeout,
    /// CONNACK with a failure code.
    #[error("CONNACK refused the connection with code {0:#04x}")]
    Refused(u8),
    /// SUBACK with a failure code.
    #[error("SUBACK refused the subscription with code {0:#04x}")]
    SubRefused(u8),
    /// Broker closed the connection during the handshake.
    #[error("broker closed the connection during the handshake")]
    Closed,
    /// Malformed or unexpected packet.
    #[error("{0}")]
    Wire(#[from] wire::WireError),
}

/// State shared by a connection's reader and writer.
struct Shared {
    /// Replies queued by the reader for the writer.
    out: RefCell<Vec<u8>>,
    /// Wakes the writer (for a publisher, also raised by subscribers of other threads).
    signal: Arc<Signal>,
    /// Packet identifiers of QoS > 0 publications not yet completed, oldest first.
    unacked: RefCell<VecDeque<u16>>,
    /// The broker's Receive Maximum: the most unacknowledged QoS > 0 publications allowed
    /// [MQTT-3.3.4-7].
    receive_maximum: u16,
    /// Set by the reader when the socket closed.
    closed: Cell<bool>,
}

fn client_id(ctx: &Ctx, role: Role) -> String {
    let (c, i) = match role {
        Role::Pub(i) => ('p', i),
        Role::Sub(i) => ('s', i),
        Role::Bare(i) => ('b', i),
    };
    format!("ul{}-{}-{c}{i}", ctx.run, ctx.shard)
}

/// Reads until one whole frame is buffered; returns its (kind, flags, body) copy-free via `f`.
async fn read_frame<T>(
    r: &mut TcpStream,
    rb: &mut ReadBuf,
    f: impl Fn(wire::Frame<'_>) -> Result<T, OpenError>,
) -> Result<T, OpenError> {
    loop {
        if let Some((frame, used)) = wire::next_frame(rb.data())? {
            let v = f(frame);
            rb.consume(used);
            return v;
        }
        if rb.fill(r).await? == 0 {
            return Err(OpenError::Closed);
        }
    }
}

/// TCP connect, CONNECT/CONNACK and, for a subscriber or an idle connection with a filter,
/// SUBSCRIBE/SUBACK. Returns the stream, the bytes read past the handshake and the broker's
/// Receive Maximum.
async fn handshake(
    ctx: &Ctx,
    role: Role,
    id: &str,
    stats: &Stats,
) -> Result<(TcpStream, ReadBuf, u16), OpenError> {
    let t0 = mono_ns();
    let source = ctx.source_for(role);
    let target = match role {
        Role::Pub(_) => ctx.target,
        Role::Sub(_) => ctx.sub_target,
        Role::Bare(_) => ctx.bare_target,
    };
    let mut s = net::connect(target, source).await?;
    let v = ctx.args.mqtt;
    let mut out = Vec::with_capacity(64 + id.len());
    wire::connect(&mut out, v, id, ctx.args.keepalive, ctx.args.persistent);
    let (res, mut out) = s.write_all(out).await;
    res?;
    let mut rb = ReadBuf::new(64);
    let ack = read_frame(&mut s, &mut rb, |f| match f.kind {
        kind::CONNACK => Ok(wire::connack(v, f.body)?),
        k => Err(wire::WireError::Unexpected(k).into()),
    })
    .await?;
    if ack.code != 0 {
        return Err(OpenError::Refused(ack.code));
    }
    stats.borrow_mut().connect_latency.record(mono_ns() - t0);
    let filter = match role {
        Role::Sub(i) => Some(ctx.plan.subs[i as usize].filter.clone()),
        _ => None,
    };
    if let Some(filter) = filter {
        out.clear();
        wire::subscribe(&mut out, v, 1, &filter, ctx.args.qos);
        let (res, _) = s.write_all(out).await;
        res?;
        // Publications cannot arrive before SUBACK: the subscription does not exist until the
        // broker processed SUBSCRIBE, and it answers in order.
        let codes = read_frame(&mut s, &mut rb, |f| match f.kind {
            kind::SUBACK => Ok(wire::suback(v, f.body)?.1),
            k => Err(wire::WireError::Unexpected(k).into()),
        })
        .await?;
        if let Some(&bad) = codes.iter().find(|&&c| c >= 0x80) {
            return Err(OpenError::SubRefused(bad));
        }
    }
    let limit = ctx.args.max_unacked.unwrap_or(u16::MAX);
    Ok((s, rb, ack.receive_maximum.clamp(1, limit)))
}

/// Opens a connection and, on success, spawns its reader and writer. `live` counts readers
/// still running so the thread can wait for every connection to close; the writer's wake-up
/// joins `wakers`.
pub async fn open(
    ctx: Arc<Ctx>,
    role: Role,
    stats: Stats,
    live: Rc<Cell<usize>>,
    wakers: Wakers,
) -> bool {
    let id = client_id(&ctx, role);
    let res =
        monoio::time::timeout(ctx.args.connect_timeout, handshake(&ctx, role, &id, &stats)).await;
    let (stream, rb, receive_maximum) = match res {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return failed(&ctx, &stats, &id, &e),
        Err(_) => return failed(&ctx, &stats, &id, &OpenError::Timeout),
    };
    stats.borrow_mut().counters.connects_ok += 1;
    let signal = match role {
        Role::Pub(i) => ctx.pubs[i as usize].signal.clone(),
        _ => Arc::new(Signal::default()),
    };
    wakers.borrow_mut().push(signal.clone());
    let shared = Rc::new(Shared {
        out: RefCell::new(Vec::new()),
        signal,
        unacked: RefCell::new(VecDeque::new()),
        receive_maximum,
        closed: Cell::new(false),
    });
    let (r, w) = stream.into_split();
    live.set(live.get() + 1);
    monoio::spawn(reader(
        r,
        rb,
        role,
        shared.clone(),
        ctx.clone(),
        stats.clone(),
        live,
    ));
    monoio::spawn(writer(w, role, shared, ctx, stats));
    true
}

fn failed(ctx: &Ctx, stats: &Stats, id: &str, e: &OpenError) -> bool {
    let mut s = stats.borrow_mut();
    s.counters.connects_failed += 1;
    if s.counters.connects_failed <= 3 && !ctx.args.quiet {
        eprintln!("uringmq-load: connection {id} failed: {e}");
    }
    false
}

/// One connect-storm cycle: open, CONNECT/CONNACK, DISCONNECT, close.
pub async fn storm_once(ctx: &Ctx, role: Role, n: u64, stats: &Stats) {
    let id = format!("{}-{n}", client_id(ctx, role));
    let res =
        monoio::time::timeout(ctx.args.connect_timeout, handshake(ctx, role, &id, stats)).await;
    match res {
        Ok(Ok((mut s, _, _))) => {
            stats.borrow_mut().counters.connects_ok += 1;
            let mut out = Vec::with_capacity(2);
            wire::disconnect(&mut out);
            let _ = s.write_all(out).await;
        }
        Ok(Err(e)) => {
            failed(ctx, stats, &id, &e);
        }
        Err(_) => {
            failed(ctx, stats, &id, &OpenError::Timeout);
        }
    }
}

async fn reader(
    mut r: OwnedReadHalf<TcpStream>,
    mut rb: ReadBuf,
    role: Role,
    sh: Rc<Shared>,
    ctx: Arc<Ctx>,
    stats: Stats,
    live: Rc<Cell<usize>>,
) {
    let mut delivered: Vec<(u32, u64)> = Vec::new();
    loop {
        let ok = {
            let mut st = stats.borrow_mut();
            process(rb.data(), role, &sh, &ctx, &mut st, &mut delivered)
        };
        match ok {
            Ok(used) => rb.consume(used),
            Err(e) => {
                let mut st = stats.borrow_mut();
                st.counters.protocol_errors += 1;
                if st.counters.protocol_errors <= 3 && !ctx.args.quiet {
                    eprintln!("uringmq-load: protocol error from broker: {e}");
                }
                break;
            }
        }
        for (p, n) in delivered.drain(..) {
            let ps = &ctx.pubs[p as usize];
            ps.delivered.fetch_add(n, SeqCst);
            if ctx.closed_loop {
                ps.signal.notify();
            }
        }
        if !sh.out.borrow().is_empty() || matches!(role, Role::Pub(_)) {
            sh.signal.notify();
        }
        match rb.fill(&mut r).await {
            Ok(n) if n > 0 => stats.borrow_mut().counters.bytes_in += n as u64,
            _ => break,
        }
    }
    if ctx.phase() < Phase::Stop {
        stats.borrow_mut().counters.dropped += 1;
    }
    sh.closed.set(true);
    sh.signal.notify();
    live.set(live.get() - 1);
}

/// Handles every whole frame in `data`; returns the bytes used.
fn process(
    data: &[u8],
    role: Role,
    sh: &Shared,
    ctx: &Ctx,
    st: &mut WorkerResult,
    delivered: &mut Vec<(u32, u64)>,
) -> Result<usize, wire::WireError> {
    let v = ctx.args.mqtt;
    let mut used = 0;
    let now = mono_ns();
    let mut group = None;
    let mut out = sh.out.borrow_mut();
    while let Some((f, n)) = wire::next_frame(&data[used..])? {
        used += n;
        match (f.kind, role) {
            (kind::PUBLISH, Role::Sub(i)) => {
                let p = wire::publish(v, f.flags, f.body)?;
                st.counters.received += 1;
                st.last_rx_ns = now;
                match p.qos {
                    1 => wire::ack(&mut out, kind::PUBACK, p.packet_id),
                    2 => wire::ack(&mut out, kind::PUBREC, p.packet_id),
                    _ => {}
                }
                let Ok(stamp) = Stamp::read(p.payload) else {
                    st.counters.foreign += 1;
                    continue;
                };
                st.latency.record(now.saturating_sub(stamp.sent_ns));
                let g = group.get_or_insert_with(|| {
                    let gi = ctx.plan.subs[i as usize].group;
                    ctx.groups[gi].lock().unwrap_or_else(|p| p.into_inner())
                });
                g.record(stamp.publisher, stamp.seq);
                if (stamp.publisher as usize) < ctx.pubs.len() {
                    match delivered.iter_mut().find(|(p, _)| *p == stamp.publisher) {
                        Some((_, c)) => *c += 1,
                        None => delivered.push((stamp.publisher, 1)),
                    }
                }
            }
            (kind::PUBREL, Role::Sub(_)) => {
                let (id, _) = wire::ack_fields(f.body)?;
                wire::ack(&mut out, kind::PUBCOMP, id);
            }
            (kind::PUBACK | kind::PUBCOMP, Role::Pub(i)) => {
                let (id, reason) = wire::ack_fields(f.body)?;
                complete(sh, id);
                if reason >= 0x80 {
                    st.counters.rejected += 1;
                } else {
                    st.counters.acked += 1;
                }
                ctx.pubs[i as usize].acked.fetch_add(1, SeqCst);
            }
            (kind::PUBREC, Role::Pub(i)) => {
                let (id, reason) = wire::ack_fields(f.body)?;
                if reason >= 0x80 {
                    // A failed PUBREC ends the exchange: no PUBREL follows (MQTT 5.0 4.3.3).
                    complete(sh, id);
                    st.counters.rejected += 1;
                    ctx.pubs[i as usize].acked.fetch_add(1, SeqCst);
                } else {
                    wire::ack(&mut out, kind::PUBREL, id);
                }
            }
            (kind::PINGRESP, _) => {}
            (k, _) => return Err(wire::WireError::Unexpected(k)),
        }
    }
    Ok(used)
}

/// Releases a packet identifier (usually the oldest: brokers acknowledge in order).
fn complete(sh: &Shared, id: u16) {
    let mut q = sh.unacked.borrow_mut();
    if q.front() == Some(&id) {
        q.pop_front();
    } else if let Some(pos) = q.iter().position(|&x| x == id) {
        q.remove(pos);
    }
}

/// Publication schedule and encoding state of a publisher's writer.
struct Publisher {
    idx: u32,
    head: Vec<u8>,
    seq: u64,
    next_id: u16,
    /// Messages per nanosecond, open loop.
    rate: Option<f64>,
    fanout: u64,
}

impl Publisher {
    /// Appends the publications now due; returns how long until the next is due (open loop).
    fn fill(
        &mut self,
        buf: &mut Vec<u8>,
        sh: &Shared,
        ctx: &Ctx,
        st: &mut WorkerResult,
    ) -> Duration {
        let now = mono_ns();
        let start = ctx.run_start_ns.load(SeqCst);
        let ps = &ctx.pubs[self.idx as usize];
        let mut n = match self.rate {
            // Message k is due at start + k / rate: the first one at once.
            Some(r) => ((now.saturating_sub(start) as f64 * r) as u64 + 1).saturating_sub(self.seq),
            None => MAX_BATCH,
        };
        if ctx.closed_loop && self.fanout > 0 {
            let outstanding = (self.seq * self.fanout).saturating_sub(ps.delivered.load(SeqCst));
            n = n.min(
                u64::from(ctx.args.inflight).saturating_sub(outstanding.div_ceil(self.fanout)),
            );
        }
        let qos = ctx.args.qos;
        if qos > 0 {
            let limit = usize::from(sh.receive_maximum);
            n = n.min(limit.saturating_sub(sh.unacked.borrow().len()) as u64);
        }
        n = n.min(MAX_BATCH);
        let v: Version = ctx.args.mqtt;
        let payload = ctx.args.payload as usize;
        buf.reserve(n as usize * (self.head.len() + 3 + payload));
        let mut unacked = sh.unacked.borrow_mut();
        for _ in 0..n {
            buf.extend_from_slice(&self.head);
            let id = self.next_id;
            if qos > 0 {
                self.next_id = self.next_id.checked_add(1).unwrap_or(1);
                unacked.push_back(id);
            }
            wire::publish_mid(buf, v, qos, id);
            Stamp {
                publisher: self.idx,
                seq: self.seq,
                sent_ns: now,
            }
            .write(payload, buf);
            self.seq += 1;
        }
        ps.sent.store(self.seq, SeqCst);
        st.counters.published += n;
        match self.rate {
            Some(r) => {
                let next_at = start as f64 + self.seq as f64 / r;
                Duration::from_nanos((next_at - now as f64).max(1e6) as u64)
            }
            None => Duration::from_millis(50),
        }
    }
}

async fn writer(
    mut w: OwnedWriteHalf<TcpStream>,
    role: Role,
    sh: Rc<Shared>,
    ctx: Arc<Ctx>,
    stats: Stats,
) {
    let mut buf: Vec<u8> = Vec::new();
    let mut publisher = match role {
        Role::Pub(i) => Some(Publisher {
            idx: i,
            head: wire::publish_head(
                ctx.args.mqtt,
                &ctx.plan.pubs[i as usize].topic,
                ctx.args.qos,
                ctx.args.payload as usize,
            ),
            seq: 0,
            next_id: 1,
            rate: ctx.rate_per_pub.map(|r| r / 1e9),
            fanout: ctx.plan.fanout[i as usize],
        }),
        _ => None,
    };
    let ping_every = Duration::from_secs(u64::from(ctx.args.keepalive)) / 2;
    let mut last_write = std::time::Instant::now();
    loop {
        if sh.closed.get() {
            return;
        }
        let phase = ctx.phase();
        std::mem::swap(&mut buf, &mut sh.out.borrow_mut());
        let mut wait = if publisher.is_some() {
            Duration::from_millis(50)
        } else {
            QUIET_SLEEP
        };
        if phase >= Phase::Stop {
            wire::disconnect(&mut buf);
        } else if let (Some(p), Phase::Run) = (publisher.as_mut(), phase) {
            wait = p.fill(&mut buf, &sh, &ctx, &mut stats.borrow_mut());
        }
        if buf.is_empty() && !ping_every.is_zero() && last_write.elapsed() >= ping_every {
            wire::pingreq(&mut buf);
        }
        if !buf.is_empty() {
            let len = buf.len() as u64;
            let (res, b) = w.write_all(buf).await;
            buf = b;
            buf.clear();
            if res.is_err() || phase >= Phase::Stop {
                return;
            }
            stats.borrow_mut().counters.bytes_out += len;
            last_write = std::time::Instant::now();
            continue;
        }
        if !ping_every.is_zero() {
            wait = wait.min(
                ping_every
                    .saturating_sub(last_write.elapsed())
                    .max(Duration::from_millis(1)),
            );
        }
        let _ = monoio::time::timeout(wait, sh.signal.wait()).await;
    }
}
