//! One worker process: the runtime threads, the phases of a run and the merge of their figures.
//!
//! Phases: set-up (open every connection and subscription), run (publish for `--duration`),
//! drain (stop publishing, wait for the last deliveries and acknowledgements up to `--drain`),
//! stop (DISCONNECT everything). Threads are pinned one per allowed CPU, each with its own monoio
//! runtime (io_uring where available, else epoll) and its share of the connections.

use crate::cli::{Args, Driver, Scenario};
use crate::clock::mono_ns;
use crate::conn::{self, Role};
use crate::group::GroupTracker;
use crate::scenario::Plan;
use crate::signal::Signal;
use crate::stats::WorkerResult;
use crate::{net, procfs};
use std::cell::{Cell, RefCell};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    /// Opening connections.
    Setup = 0,
    /// Publishing.
    Run = 1,
    /// Waiting for the last deliveries.
    Drain = 2,
    /// Disconnecting.
    Stop = 3,
}

/// Shared figures of one publisher, updated from any thread.
#[derive(Debug, Default)]
pub struct PubState {
    /// Messages published so far.
    pub sent: AtomicU64,
    /// Deliveries of its messages counted by subscribers (all groups).
    pub delivered: AtomicU64,
    /// QoS > 0 exchanges completed (successfully or not).
    pub acked: AtomicU64,
    /// Wakes its writer.
    pub signal: Arc<Signal>,
}

/// Everything the threads of one worker process share.
#[derive(Debug)]
pub struct Ctx {
    /// Command line.
    pub args: Args,
    /// This shard's connections.
    pub plan: Plan,
    /// Run identifier (in client ids and topics).
    pub run: String,
    /// Shard index.
    pub shard: u32,
    /// Shards in the run.
    pub shards: u32,
    /// Broker address.
    pub target: SocketAddr,
    /// Subscribers' broker address (`--sub-port`, else `target`).
    pub sub_target: SocketAddr,
    /// Idle and connect-storm connections' broker address.
    pub bare_target: SocketAddr,
    /// Per publisher.
    pub pubs: Vec<PubState>,
    /// Per receiver group.
    pub groups: Vec<Mutex<GroupTracker>>,
    /// Messages per second per publisher, open loop.
    pub rate_per_pub: Option<f64>,
    /// `--max`.
    pub closed_loop: bool,
    /// When publishing began.
    pub run_start_ns: AtomicU64,
    phase: AtomicU8,
    ready: AtomicUsize,
}

impl Ctx {
    fn new(args: &Args, run: &str, shard: u32, shards: u32) -> Ctx {
        let plan = Plan::new(args, run, shard, shards);
        let shard_rate = args.rate as f64 / f64::from(shards);
        let (port, sub_port, bare_port) = match &args.ports {
            // This worker's node, and the next one for its publishers.
            Some(p) => {
                let at = |i: u32| p.0[i as usize % p.0.len()];
                (at(shard + 1), at(shard), at(shard))
            }
            None => (args.port, args.sub_port.unwrap_or(args.port), args.port),
        };
        Ctx {
            rate_per_pub: (!args.max).then(|| shard_rate / plan.pubs.len().max(1) as f64),
            closed_loop: args.max,
            pubs: plan.pubs.iter().map(|_| PubState::default()).collect(),
            groups: plan
                .groups
                .iter()
                .map(|g| Mutex::new(GroupTracker::new(g.expects.clone())))
                .collect(),
            target: SocketAddr::new(args.host, port),
            sub_target: SocketAddr::new(args.host, sub_port),
            bare_target: SocketAddr::new(args.host, bare_port),
            args: args.clone(),
            plan,
            run: run.to_string(),
            shard,
            shards,
            run_start_ns: AtomicU64::new(0),
            phase: AtomicU8::new(Phase::Setup as u8),
            ready: AtomicUsize::new(0),
        }
    }

    /// Current phase.
    pub fn phase(&self) -> Phase {
        match self.phase.load(SeqCst) {
            0 => Phase::Setup,
            1 => Phase::Run,
            2 => Phase::Drain,
            _ => Phase::Stop,
        }
    }

    fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, SeqCst);
    }

    /// Source address for a connection: spread round-robin over `--sources`.
    pub fn source_for(&self, role: Role) -> Option<Ipv4Addr> {
        let sources = &self.args.sources.as_ref()?.0;
        let (p, s) = (self.plan.pubs.len() as u64, self.plan.subs.len() as u64);
        let idx = match role {
            Role::Pub(i) => u64::from(i),
            Role::Sub(i) => p + u64::from(i),
            Role::Bare(i) => p + s + u64::from(i),
        };
        let global = idx * u64::from(self.shards) + u64::from(self.shard);
        sources
            .get((global % sources.len() as u64) as usize)
            .copied()
    }

    fn roles(&self) -> impl Iterator<Item = Role> + '_ {
        let n = |len: usize| 0..len as u32;
        n(self.plan.pubs.len())
            .map(Role::Pub)
            .chain(n(self.plan.subs.len()).map(Role::Sub))
            .chain((0..self.plan.bare).map(Role::Bare))
    }

    /// Every expected delivery and acknowledgement arrived.
    fn drained(&self) -> bool {
        self.pubs.iter().zip(&self.plan.fanout).all(|(p, &f)| {
            let sent = p.sent.load(SeqCst);
            p.delivered.load(SeqCst) >= sent * f
                && (self.args.qos == 0 || p.acked.load(SeqCst) >= sent)
        })
    }
}

/// Moments of a run at which the caller acts: the single-process run samples the broker, a worker
/// process reports to its parent and waits for the start signal.
pub trait Phases {
    /// Every connection is open; returns when publishing may start.
    fn ready(&mut self) -> io::Result<()>;
    /// Publishing started.
    fn started(&mut self);
    /// Publishing stopped.
    fn stopped(&mut self);
}

/// CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect();
        if cpus.is_empty() {
            vec![0]
        } else {
            cpus
        }
    }
}

/// Runs shard `shard` of `shards` in this process.
pub fn run_shard(
    args: &Args,
    run: &str,
    shard: u32,
    shards: u32,
    hooks: &mut dyn Phases,
) -> io::Result<WorkerResult> {
    let ctx = Arc::new(Ctx::new(args, run, shard, shards));
    let limit = net::raise_nofile();
    let conns = ctx.plan.connections();
    if conns + 32 > limit {
        return Err(io::Error::other(format!(
            "{conns} connections in one process exceed its open-file limit of {limit}: add --procs"
        )));
    }
    let cpus = allowed_cpus();
    let nthreads = args.threads.unwrap_or(cpus.len()).max(1);
    let setup_start = mono_ns();
    let mut handles = Vec::with_capacity(nthreads);
    for t in 0..nthreads {
        let ctx = ctx.clone();
        let cpu = cpus[t % cpus.len()];
        handles.push(
            std::thread::Builder::new()
                .name(format!("load-{t}"))
                .spawn(move || thread_main(ctx, t, nthreads, cpu))?,
        );
    }
    while ctx.ready.load(SeqCst) < nthreads {
        if handles.iter().any(|h| h.is_finished()) {
            return Err(io::Error::other(
                "a runtime thread failed to start (see above)",
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let setup_end = mono_ns();
    std::thread::sleep(args.settle);
    hooks.ready()?;
    let me_before = procfs::sample(None).ok();
    ctx.run_start_ns.store(mono_ns(), SeqCst);
    ctx.set_phase(Phase::Run);
    for p in &ctx.pubs {
        p.signal.notify();
    }
    hooks.started();
    std::thread::sleep(args.duration);
    let run_end = mono_ns();
    let me_after = procfs::sample(None).ok();
    ctx.set_phase(Phase::Drain);
    hooks.stopped();
    let deadline = std::time::Instant::now() + args.drain;
    while !ctx.drained() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    ctx.set_phase(Phase::Stop);
    let mut total = WorkerResult::default();
    for h in handles {
        match h.join() {
            Ok(r) => total.merge(&r),
            Err(_) => return Err(io::Error::other("a runtime thread panicked")),
        }
    }
    for g in &ctx.groups {
        let g = g.lock().unwrap_or_else(|p| p.into_inner());
        total
            .delivery
            .merge(&g.delivery(|p| ctx.pubs[p as usize].sent.load(SeqCst)));
    }
    total.setup_start_ns = setup_start;
    total.setup_end_ns = setup_end;
    total.run_start_ns = ctx.run_start_ns.load(SeqCst);
    total.run_end_ns = run_end;
    total.cpu_ticks = match (me_before, me_after) {
        (Some(a), Some(b)) => b.cpu_ticks.saturating_sub(a.cpu_ticks),
        _ => 0,
    };
    total.procs = 1;
    total.pubs = ctx.plan.pubs.len() as u64;
    total.subs = ctx.plan.subs.len() as u64;
    total.planned = conns;
    Ok(total)
}

fn thread_main(ctx: Arc<Ctx>, t: usize, n: usize, cpu: usize) -> WorkerResult {
    let _ = monoio::utils::bind_to_cpu_set([cpu]);
    let built = match ctx.args.driver {
        Driver::Epoll => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .map(|mut rt| rt.block_on(thread_body(ctx.clone(), t, n))),
        Driver::Auto => monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .with_entries(4096)
            .enable_timer()
            .build()
            .map(|mut rt| rt.block_on(thread_body(ctx.clone(), t, n))),
    };
    built.unwrap_or_else(|e| {
        eprintln!("uringmq-load: cannot build runtime: {e}");
        WorkerResult::default()
    })
}

async fn wait_phase(ctx: &Ctx, p: Phase) {
    while ctx.phase() < p {
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn thread_body(ctx: Arc<Ctx>, t: usize, n: usize) -> WorkerResult {
    let stats = Rc::new(RefCell::new(WorkerResult {
        threads: 1,
        ..WorkerResult::default()
    }));
    let live = Rc::new(Cell::new(0usize));
    let wakers = conn::Wakers::default();
    let mine: Vec<Role> = ctx
        .roles()
        .enumerate()
        .filter(|(i, _)| i % n == t)
        .map(|(_, r)| r)
        .collect();
    let storm = ctx.args.scenario == Scenario::ConnectStorm;
    if !storm {
        for chunk in mine.chunks(ctx.args.connect_window as usize) {
            let hs: Vec<_> = chunk
                .iter()
                .map(|&r| {
                    let (ctx, stats, live) = (ctx.clone(), stats.clone(), live.clone());
                    monoio::spawn(conn::open(ctx, r, stats, live, wakers.clone()))
                })
                .collect();
            for h in hs {
                h.await;
            }
        }
    }
    ctx.ready.fetch_add(1, SeqCst);
    wait_phase(&ctx, Phase::Run).await;
    if storm {
        let hs: Vec<_> = mine
            .iter()
            .map(|&r| {
                let (ctx, stats) = (ctx.clone(), stats.clone());
                monoio::spawn(async move {
                    let mut k = 0;
                    while ctx.phase() == Phase::Run {
                        conn::storm_once(&ctx, r, k, &stats).await;
                        k += 1;
                    }
                })
            })
            .collect();
        for h in hs {
            h.await;
        }
    }
    wait_phase(&ctx, Phase::Stop).await;
    for w in wakers.borrow().iter() {
        w.notify();
    }
    // Give every connection time to send DISCONNECT and see the broker close it.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while live.get() > 0 && std::time::Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    stats.take()
}
