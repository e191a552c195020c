//! Topic routing micro-benchmarks of the structures the broker runs: `SubscriptionIndex`
//! matching with 1k / 100k / 1M filters (exact-only and a wildcard mix of IoT shapes),
//! subscribe/unsubscribe churn, retained wildcard lookups and set/delete churn over 100k
//! retained topics (`RetainedStore`, each core's replica), and shared-group routing over 10k
//! groups (`SharedIndex<core, member count>`, the replica a publishing core picks a core from).
//!
//! Throughput for index matching is one PUBLISH topic matched per element (lookups/s); the
//! mean number of subscribers each lookup reports is printed at setup. Retained lookups count
//! one element per retained message found (matched topics/s).
//!
//! Quick run: `cargo bench -p uringmq-bench --bench topic -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use uringmq_topic::{RetainedStore, SharedIndex, SubscriptionIndex};

const DEVICES_PER_SITE: usize = 1000;
const SIZES: [(usize, &str); 3] = [(1_000, "1k"), (100_000, "100k"), (1_000_000, "1M")];

/// Deterministic xorshift so runs are comparable without a rand dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn device_topic(site: usize, device: usize) -> String {
    format!("site/{site}/device/{device}/temp")
}

/// Filter number `i`: one per (site, device), exact only or a mix where 10% are wildcards in
/// the shapes dashboards and rules engines use.
fn filter(i: usize, mix: bool) -> String {
    let (site, device) = (i / DEVICES_PER_SITE, i % DEVICES_PER_SITE);
    if !mix {
        return device_topic(site, device);
    }
    match i % 100 {
        0..=89 => device_topic(site, device),
        90..=93 => format!("site/{site}/device/{device}/+"),
        94..=95 => format!("site/{site}/device/+/temp"),
        96..=97 => format!("site/+/device/{device}/temp"),
        _ => format!("site/{site}/#"),
    }
}

fn build_index(n: usize, mix: bool) -> SubscriptionIndex<u32, u8> {
    let started = Instant::now();
    let mut index = SubscriptionIndex::new();
    for i in 0..n {
        let inserted = index.insert(&filter(i, mix), i as u32, 1);
        assert!(inserted.is_ok());
    }
    eprintln!(
        "setup: {n} filters (mix={mix}) -> {} distinct in {:.2?}",
        index.filter_count(),
        started.elapsed()
    );
    index
}

/// 4096 PUBLISH topics of existing devices, in random order.
fn publish_topics(n: usize) -> Vec<String> {
    let sites = n.div_ceil(DEVICES_PER_SITE);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    (0..4096)
        .map(|_| device_topic(rng.below(sites), rng.below(DEVICES_PER_SITE.min(n))))
        .collect()
}

fn bench_index_match(c: &mut Criterion) {
    let mut group = c.benchmark_group("index_match");
    group.throughput(Throughput::Elements(1));
    for mix in [false, true] {
        let shape = if mix { "wildcard_mix" } else { "exact" };
        for (n, label) in SIZES {
            let index = build_index(n, mix);
            let topics = publish_topics(n);
            let hits: usize = topics
                .iter()
                .map(|t| {
                    let mut k = 0;
                    index.for_each_match(t, |_, _| k += 1);
                    k
                })
                .sum();
            eprintln!(
                "  {shape}/{label}: {:.1} subscribers per lookup",
                hits as f64 / 4096.0
            );
            let mut next = 0usize;
            group.bench_function(BenchmarkId::new(shape, label), |b| {
                b.iter(|| {
                    let topic = &topics[next & 4095];
                    next = next.wrapping_add(1);
                    let mut sum = 0u32;
                    index.for_each_match(black_box(topic), |s, v| sum ^= s + u32::from(*v));
                    sum
                })
            });
        }
    }
    group.finish();
}

fn bench_index_churn(c: &mut Criterion) {
    let mut group = c.benchmark_group("index_churn");
    group.throughput(Throughput::Elements(1));
    let mut index = build_index(100_000, true);
    let extra: Vec<String> = (0..4096)
        .map(|i| format!("site/{}/device/{}/humidity", i % 97, i))
        .collect();
    let mut next = 0usize;
    group.bench_function("subscribe_unsubscribe/100k", |b| {
        b.iter(|| {
            let f = &extra[next & 4095];
            next = next.wrapping_add(1);
            let inserted = index.insert(black_box(f), 7, 1);
            let removed = index.remove(black_box(f), 7);
            (inserted.is_ok(), removed.last_subscriber)
        })
    });
    group.finish();
}

fn bench_retained(c: &mut Criterion) {
    let mut group = c.benchmark_group("retained_match_100k");
    let started = Instant::now();
    let mut store = RetainedStore::new();
    for i in 0..100_000 {
        let replaced = store.insert(&device_topic(i / DEVICES_PER_SITE, i % DEVICES_PER_SITE), i);
        assert_eq!(replaced, Ok(None));
    }
    eprintln!("setup: 100k retained topics in {:.2?}", started.elapsed());
    let cases = [
        ("exact", "site/42/device/420/temp"),
        ("site_plus", "site/42/device/+/temp"),
        ("plus_device", "site/+/device/420/temp"),
        ("site_hash", "site/42/#"),
        ("miss_plus", "site/42/device/+/pressure"),
    ];
    for (name, filter) in cases {
        let mut hits = 0u64;
        store.for_each_match(filter, |_, _| hits += 1);
        eprintln!("  {name} ({filter}): {hits} retained");
        group.throughput(Throughput::Elements(hits.max(1)));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut sum = 0usize;
                store.for_each_match(black_box(filter), |t, v| sum ^= t.len() + v);
                sum
            })
        });
    }
    // A retained message set and deleted again (an empty retained PUBLISH) on a new topic.
    let extra: Vec<String> = (0..4096)
        .map(|i| format!("site/{}/device/{}/humidity", i % 97, i))
        .collect();
    let mut next = 0usize;
    group.throughput(Throughput::Elements(1));
    group.bench_function("set_delete", |b| {
        b.iter(|| {
            let t = &extra[next & 4095];
            next = next.wrapping_add(1);
            let replaced = store.insert(black_box(t), next);
            (replaced.is_ok(), store.remove(black_box(t)))
        })
    });
    group.finish();
}

/// One PUBLISH matched against 10k shared groups (a tenth on `site/{s}/device/+/temp`, the
/// rest on one device each) whose members sit on two cores (1 and 2 members), picking the core
/// weighted by its member count, as `route` does on the publishing core.
fn bench_shared_route(c: &mut Criterion) {
    let mut groups: SharedIndex<u16, u32> = SharedIndex::new();
    for i in 0..10_000 {
        let filter = match i % 10 {
            0 => format!("site/{}/device/+/temp", i / 10 % 100),
            _ => device_topic(i / DEVICES_PER_SITE, i % DEVICES_PER_SITE),
        };
        for core in 0..2u16 {
            let joined = groups.insert(&format!("g{}", i % 3), &filter, core, 1 + u32::from(core));
            assert!(joined.is_ok());
        }
    }
    let topics = publish_topics(10_000);
    let mut group = c.benchmark_group("shared_route_10k");
    group.throughput(Throughput::Elements(1));
    let mut next = 0usize;
    group.bench_function("match_and_pick_core", |b| {
        b.iter(|| {
            let topic = &topics[next & 4095];
            next = next.wrapping_add(1);
            let mut sum = 0u32;
            groups.for_each_group_match(black_box(topic), |_, _, cores| {
                if let Some((core, members)) = cores.pick_weighted(|_, m| *m) {
                    sum ^= u32::from(core) + members;
                }
            });
            sum
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_index_match,
    bench_index_churn,
    bench_retained,
    bench_shared_route
);
criterion_main!(benches);
