//! Where an idle connection's memory goes: embeds a one-core broker behind a counting global
//! allocator (over `uringmq::Allocator`, like the binary), opens N MQTT connections from this process
//! (CONNECT, CONNACK, then idle) and prints the live heap, the allocations by size (named by
//! the idle path's types, `uringmq::idle_path_sizes`), what mimalloc's size classes round them
//! up to, and the RSS growth per connection. Where RSS above the live heap sits: mimalloc's
//! pages by block size (`mi_heap_visit_blocks`: pages, live blocks, blocks the pages hold, so
//! how full they are) and RSS by kind of mapping (`/proc/self/smaps`). `--settle=MS`: how long
//! the connections idle before the figures are taken (2,500 ms); `--close`: then close them and
//! show what is left 5 s later.
//!
//! ```sh
//! cargo run --release -p uringmq --example idle_heap -- 4000 [--v5] [--sub] [--awake] [--settle=MS] [--close]
//! ```
//!
//! The harness's figure (`uringmq-load -s idle`) is RSS per connection of the real binary; this
//! one explains it. Client sockets live in this process too (two descriptors per connection), so
//! N stays under half the per-process file limit.

use bytes::BytesMut;
use std::alloc::{GlobalAlloc, Layout};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use uringmq_codec::{
    encode, Connect, Decoder, Packet, Protocol, QoS, Subscribe, SubscriptionOptions,
};

/// Sizes are counted in classes of 16 bytes up to this, the rest (hash and trie tables) in one
/// bucket.
const CLASSES: usize = 256;

struct Counting;

static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static LIVE_COUNT: AtomicI64 = AtomicI64::new(0);
/// Live heap rounded up to mimalloc's size classes (`mi_good_size`).
static LIVE_ROUNDED: AtomicI64 = AtomicI64::new(0);
static BY_SIZE: [AtomicI64; CLASSES + 1] = [const { AtomicI64::new(0) }; CLASSES + 1];
static BYTES_BY_SIZE: [AtomicI64; CLASSES + 1] = [const { AtomicI64::new(0) }; CLASSES + 1];

fn class(size: usize) -> usize {
    (size.div_ceil(16)).min(CLASSES)
}

fn count(ptr: *mut u8, size: usize, sign: i64) {
    if ptr.is_null() {
        return;
    }
    LIVE_BYTES.fetch_add(sign * size as i64, Ordering::Relaxed);
    LIVE_COUNT.fetch_add(sign, Ordering::Relaxed);
    // SAFETY: a pure function of the size.
    let rounded = unsafe { libmimalloc_sys::mi_good_size(size) };
    LIVE_ROUNDED.fetch_add(sign * rounded as i64, Ordering::Relaxed);
    BY_SIZE[class(size)].fetch_add(sign, Ordering::Relaxed);
    BYTES_BY_SIZE[class(size)].fetch_add(sign * size as i64, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to mimalloc unchanged; only counters are updated beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { uringmq::Allocator.alloc(l) };
        count(p, l.size(), 1);
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { uringmq::Allocator.alloc_zeroed(l) };
        count(p, l.size(), 1);
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        count(p, l.size(), -1);
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { uringmq::Allocator.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        count(p, l.size(), -1);
        // SAFETY: forwarded with the caller's arguments.
        let q = unsafe { uringmq::Allocator.realloc(p, l, new) };
        if q.is_null() {
            count(p, l.size(), 1);
        } else {
            count(q, new, 1);
        }
        q
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn rss() -> i64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// One mimalloc page (blocks of one size) as `mi_heap_visit_blocks` shows it.
#[derive(Clone, Copy, Default)]
struct Page {
    block: usize,
    used: usize,
    capacity: usize,
}

/// Room for the pages of a snapshot, reserved once before the first: the visitor must not
/// allocate (it runs inside mimalloc, on pages it may be walking), and a buffer allocated per
/// snapshot would count as live heap.
const MAX_PAGES: usize = 1 << 16;

/// mimalloc's size classes (bins) at most.
const BINS: usize = 80;

/// Per block size: (block size, [pages, of them empty, blocks used, blocks the pages hold]).
type Blocks = [(usize, [usize; 4]); BINS];

struct Visit<'a> {
    pages: &'a mut Vec<Page>,
}

unsafe extern "C" {
    fn mi_subproc_main() -> *mut std::ffi::c_void;
    fn mi_subproc_visit_heaps(
        subproc: *mut std::ffi::c_void,
        visitor: unsafe extern "C" fn(
            *mut libmimalloc_sys::mi_heap_t,
            *mut std::ffi::c_void,
        ) -> bool,
        arg: *mut std::ffi::c_void,
    ) -> bool;
}

/// Walks one heap's pages into the `Visit` behind `arg`.
unsafe extern "C" fn visit_heap(
    heap: *mut libmimalloc_sys::mi_heap_t,
    arg: *mut std::ffi::c_void,
) -> bool {
    // SAFETY: the visitor only writes into the reserved vector behind `arg`.
    unsafe { libmimalloc_sys::mi_heap_visit_blocks(heap, false, Some(visit_page), arg) }
}

unsafe extern "C" fn visit_page(
    _heap: *const libmimalloc_sys::mi_heap_t,
    area: *const libmimalloc_sys::mi_heap_area_t,
    _block: *mut std::ffi::c_void,
    _size: usize,
    arg: *mut std::ffi::c_void,
) -> bool {
    // SAFETY: mimalloc passes a valid area and our `Visit`.
    let (area, v) = unsafe { (&*area, &mut *(arg as *mut Visit<'_>)) };
    if v.pages.len() < v.pages.capacity() {
        let full = area.full_block_size.max(1);
        v.pages.push(Page {
            block: area.full_block_size,
            used: area.used,
            capacity: area.committed / full,
        });
    }
    true
}

/// Every page of every mimalloc heap (the main one and the broker's long-lived one, all
/// threads' pages) by block size. The core is idle when this runs, so its pages do not change
/// under the walk.
fn pages(buf: &mut Vec<Page>) -> Blocks {
    buf.clear();
    let mut v = Visit { pages: buf };
    // SAFETY: the visitors only write into the reserved vector.
    unsafe {
        mi_subproc_visit_heaps(
            mi_subproc_main(),
            visit_heap,
            &mut v as *mut Visit<'_> as *mut std::ffi::c_void,
        )
    };
    let mut out: Blocks = [(0, [0; 4]); BINS];
    for p in buf.iter() {
        let Some(e) = out.iter_mut().find(|(b, e)| *b == p.block || e[0] == 0) else {
            continue;
        };
        e.0 = p.block;
        e.1[0] += 1;
        e.1[1] += usize::from(p.used == 0);
        e.1[2] += p.used;
        e.1[3] += p.capacity;
    }
    out
}

/// RSS by mapping kind from /proc/self/smaps: mimalloc's arenas (the big anonymous
/// reservations), other anonymous memory, the rest (files, stacks, io_uring rings).
fn rss_by_mapping() -> [i64; 3] {
    let s = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let mut out = [0i64; 3];
    let mut kind = 2;
    for l in s.lines() {
        let mut f = l.split_whitespace();
        let first = f.next().unwrap_or("");
        if let Some((a, b)) = first
            .split_once('-')
            .filter(|(a, _)| a.len() >= 8 && a.chars().all(|c| c.is_ascii_hexdigit()))
        {
            let size =
                u64::from_str_radix(b, 16).unwrap_or(0) - u64::from_str_radix(a, 16).unwrap_or(0);
            let name = l.split_whitespace().nth(5);
            kind = match name {
                None if size >= 64 << 20 => 0,
                None => 1,
                _ => 2,
            };
        } else if first == "Rss:" {
            out[kind] += f.next().and_then(|v| v.parse::<i64>().ok()).unwrap_or(0) * 1024;
        }
    }
    out
}

struct Snapshot {
    blocks: Blocks,
    maps: [i64; 3],
    bytes: i64,
    rounded: i64,
    count: i64,
    rss: i64,
    by_size: Vec<i64>,
    bytes_by_size: Vec<i64>,
}

/// The counters first, then what reading /proc and mimalloc's pages shows.
fn snapshot(buf: &mut Vec<Page>) -> Snapshot {
    Snapshot {
        bytes: LIVE_BYTES.load(Ordering::Relaxed),
        rounded: LIVE_ROUNDED.load(Ordering::Relaxed),
        count: LIVE_COUNT.load(Ordering::Relaxed),
        rss: rss(),
        by_size: BY_SIZE.iter().map(|a| a.load(Ordering::Relaxed)).collect(),
        bytes_by_size: BYTES_BY_SIZE
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect(),
        maps: rss_by_mapping(),
        blocks: pages(buf),
    }
}

fn encoded(packet: &Packet, proto: Protocol) -> BytesMut {
    let mut out = BytesMut::new();
    encode(packet, proto, &mut out).expect("encode");
    out
}

fn connect_packet(i: usize, proto: Protocol) -> BytesMut {
    let connect = Connect {
        protocol: proto,
        clean_start: true,
        keep_alive: 60,
        client_id: format!("idle-{i:06}").as_str().into(),
        will: None,
        username: None,
        password: None,
        properties: Default::default(),
    };
    encoded(&Packet::Connect(Box::new(connect)), proto)
}

fn subscribe_packet(i: usize, proto: Protocol) -> BytesMut {
    let filter = format!("idle/{i}/cmd");
    let options = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        ..Default::default()
    };
    let subscribe = Subscribe {
        packet_id: 1,
        properties: Default::default(),
        filters: vec![(filter.as_str().into(), options)],
    };
    encoded(&Packet::Subscribe(subscribe), proto)
}

/// Reads until one whole packet has arrived.
fn recv(s: &mut TcpStream, proto: Protocol) -> Packet {
    let mut decoder = Decoder::with_protocol(proto, 1 << 20);
    let mut buf = BytesMut::new();
    loop {
        if let Some(p) = decoder.decode(&mut buf).expect("a valid packet") {
            return p;
        }
        let mut chunk = [0u8; 256];
        let n = s.read(&mut chunk).expect("read");
        assert!(n > 0, "broker closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(4000);
    let v5 = args.iter().any(|a| a == "--v5");
    let sub = args.iter().any(|a| a == "--sub");
    // Without hibernation: what an idle connection costs while it keeps its task and stream.
    let awake = args.iter().any(|a| a == "--awake");
    // Then close them all and show what is left 5 s later.
    let close = args.iter().any(|a| a == "--close");
    // How long the connections stay idle before the figures are taken (ms).
    let settle: u64 = args
        .iter()
        .find_map(|a| a.strip_prefix("--settle=")?.parse().ok())
        .unwrap_or(2500);

    let config = uringmq::Config {
        port: 0,
        cores: 1,
        hibernate_after_ms: if awake { 0 } else { 1000 },
        ..Default::default()
    };
    let broker = uringmq::Broker::builder(config)
        .start()
        .expect("broker starts");
    let addr = broker.local_addr();

    // Warm up: the first connections grow the core's maps and the allocator's pages.
    let mut pages_buf = Vec::with_capacity(MAX_PAGES);
    let mut warm = Vec::new();
    for i in 0..64 {
        warm.push(open(addr, 1_000_000 + i, v5, sub));
    }
    std::thread::sleep(Duration::from_millis(2500));
    let before = snapshot(&mut pages_buf);
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        conns.push(open(addr, i, v5, sub));
    }
    // Past `hibernate_after_ms` (1 s) and a sweep: idle connections have parked.
    std::thread::sleep(Duration::from_millis(settle));
    let after = snapshot(&mut pages_buf);
    report(n, v5, sub, &before, &after);
    drop(conns);
    if close {
        // What a burst leaves behind once it closed (scripts/burst-return.sh's question).
        std::thread::sleep(Duration::from_millis(5000));
        let closed = snapshot(&mut pages_buf);
        report_closed(n, &before, &closed);
    }
    drop(warm);
    drop(broker);
}

/// Prints the per-connection figures: totals, then each size class with the idle path's types
/// of that size.
fn report(n: usize, v5: bool, sub: bool, before: &Snapshot, after: &Snapshot) {
    let per = |a: i64, b: i64| (b - a) as f64 / n as f64;
    println!(
        "{n} idle connections (MQTT {}{}), one core, per connection:",
        if v5 { "5.0" } else { "3.1.1" },
        if sub { ", one subscription each" } else { "" }
    );
    println!(
        "  live heap {:.0} B ({:.0} B in mimalloc's size classes), {:.2} allocations; RSS {:.0} B",
        per(before.bytes, after.bytes),
        per(before.rounded, after.rounded),
        per(before.count, after.count),
        per(before.rss, after.rss),
    );
    report_pages(n, before, after);
    let mut sizes = uringmq::idle_path_sizes();
    // The client ids of `connect_packet`: "idle-" and six digits behind the `Arc`'s counts.
    sizes.push(("Arc<str> client id", 16 + 11));
    println!("  allocations per connection by requested size (count, bytes):");
    for c in 0..=CLASSES {
        let d = per(before.by_size[c], after.by_size[c]);
        let bytes = per(before.bytes_by_size[c], after.bytes_by_size[c]);
        if d.abs() < 0.05 && bytes.abs() < 2.0 {
            continue;
        }
        let (range, names) = if c == CLASSES {
            (
                format!("> {}", CLASSES * 16),
                "hash and trie tables".to_owned(),
            )
        } else {
            let names: Vec<&str> = sizes
                .iter()
                .filter(|(name, size)| !name.contains("slot") && class(*size) == c)
                .map(|(name, _)| *name)
                .collect();
            let range = format!("{:>4}..{:<4}", (c.max(1) - 1) * 16 + 1, c * 16);
            (range, names.join(", "))
        };
        println!("    {range} B: {d:>5.2} x, {bytes:>6.1} B  {names}");
    }
    println!("  sizes of the idle path's types (bytes asked of the allocator, or per table slot):");
    for (name, size) in &sizes {
        println!("    {size:>4} B  {name}");
    }
}

fn by_block(blocks: &Blocks) -> std::collections::BTreeMap<usize, [usize; 4]> {
    blocks.iter().filter(|(_, e)| e[0] > 0).copied().collect()
}

/// What the closed connections left behind (against the snapshot before they connected).
fn report_closed(n: usize, before: &Snapshot, closed: &Snapshot) {
    let per = |a: i64, b: i64| (b - a) as f64 / n as f64;
    println!(
        "5 s after they closed, left per connection: live heap {:.0} B, {:.2} allocations; RSS {:.0} B",
        per(before.bytes, closed.bytes),
        per(before.count, closed.count),
        per(before.rss, closed.rss),
    );
    report_pages(n, before, closed);
}

/// Where RSS above the live heap is: mimalloc's pages by block size (growth over the run,
/// per connection: live blocks, blocks the pages hold, and how full those pages are at the
/// end) and RSS by kind of mapping.
fn report_pages(n: usize, before: &Snapshot, after: &Snapshot) {
    let (b, a) = (by_block(&before.blocks), by_block(&after.blocks));
    println!("  mimalloc pages by block size (growth per connection; fill at the end):");
    let (mut live, mut held) = (0i64, 0i64);
    for (block, e) in &a {
        let z = b.get(block).copied().unwrap_or_default();
        let d = |i: usize| e[i] as i64 - z[i] as i64;
        let (l, h) = (d(2) * *block as i64, d(3) * *block as i64);
        live += l;
        held += h;
        if (h - l).abs() < 2 * n as i64 && l.abs() < 2 * n as i64 {
            continue;
        }
        println!(
            "    {block:>6} B: pages {:>3} -> {:>3} ({} empty), live {:>6.1} B, held {:>6.1} B, fill {:>3.0} %",
            z[0],
            e[0],
            e[1],
            l as f64 / n as f64,
            h as f64 / n as f64,
            100.0 * e[2] as f64 / e[3].max(1) as f64,
        );
    }
    let per = |x: i64| x as f64 / n as f64;
    println!(
        "    all: live {:.0} B, held in pages {:.0} B (slack {:.0} B)",
        per(live),
        per(held),
        per(held - live)
    );
    let m = |i: usize| per(after.maps[i] - before.maps[i]);
    println!(
        "  RSS growth by mapping: mimalloc arenas {:.0} B, other anonymous {:.0} B, the rest {:.0} B",
        m(0),
        m(1),
        m(2)
    );
}

fn open(addr: std::net::SocketAddr, i: usize, v5: bool, sub: bool) -> TcpStream {
    let proto = if v5 { Protocol::V5 } else { Protocol::V3_1_1 };
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(&connect_packet(i, proto)).expect("CONNECT");
    assert!(matches!(recv(&mut s, proto), Packet::ConnAck(_)), "CONNACK");
    if sub {
        s.write_all(&subscribe_packet(i, proto)).expect("SUBSCRIBE");
        assert!(matches!(recv(&mut s, proto), Packet::SubAck(_)), "SUBACK");
    }
    s
}
