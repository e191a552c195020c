//! The durable store's engine against redb doing the same writes with the same durability
//! (#15): records/s and syncs/s with group commit, and recovery time for many sessions.
//!
//! `cargo bench -p uringmq --bench store` (about 40 s; `-- 1m` adds the 1M-session
//! recovery, `-- recovery` runs only the recovery part). Files go to `$STORE_BENCH_DIR` (default: the system temp directory), which
//! must be on the disk being measured (not a tmpfs).

use bytes::Bytes;
use redb::{ReadableDatabase, ReadableTable};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uringmq::store;
use uringmq::store::{Record, ShardStore, Store, StoreConfig, SyncPolicy};
use uringmq_codec::QoS;
use uringmq_session::SubOptions;

/// The store tests' record builders (`crate::store` above is what they build on).
#[path = "../src/store/samples.rs"]
mod samples;
use samples::{meta, queued};

/// A queued message of the benchmark: its payload shared, not copied.
fn message(payload: &Bytes) -> Arc<uringmq_session::Message> {
    samples::message("bench/topic/1", payload.clone(), Instant::now())
}

/// The broker's allocator, so the figures are the broker's.
#[global_allocator]
static GLOBAL: uringmq::Allocator = uringmq::Allocator;

const RUN: Duration = Duration::from_secs(2);
const PAYLOAD: usize = 100;

fn base() -> PathBuf {
    std::env::var_os("STORE_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from)
}

fn fresh(name: &str) -> PathBuf {
    let d = base().join(format!("uringmq-store-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn runtime_block_on<F: std::future::Future<Output = ()>>(uring: bool, f: F) {
    if uring {
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
            .expect("io_uring runtime")
            .block_on(f);
    } else {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("epoll runtime")
            .block_on(f);
    }
}

/// `clients` tasks each push a queued message and wait until it is durable, in a loop, for
/// `RUN`: what a core does for that many QoS 1 publishers under `persistence_sync`.
fn log_writes(uring: bool, clients: usize, sync: SyncPolicy) {
    let dir = fresh("log");
    let cfg = StoreConfig {
        sync,
        compact_min_bytes: 256 << 20,
        ..StoreConfig::default()
    };
    runtime_block_on(uring, async move {
        let (stores, _) = Store::open(&dir, 1, &cfg).expect("open");
        let s: Rc<ShardStore> = Rc::new(stores.into_iter().next().expect("one shard"));
        monoio::spawn(s.clone().run());
        let client: Arc<str> = "bench".into();
        s.push(Record::Session {
            meta: meta("bench"),
            fresh: true,
        });
        let payload = Bytes::from(vec![b'x'; PAYLOAD]);
        let done = Rc::new(Cell::new(0u64));
        let end = Instant::now() + RUN;
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (s, client, payload, done) =
                (s.clone(), client.clone(), payload.clone(), done.clone());
            tasks.push(monoio::spawn(async move {
                while Instant::now() < end {
                    let t = s.push(queued(client.clone(), message(&payload)));
                    // Under `Never` a record is "durable" once written: a client waits for
                    // its turn's write.
                    if s.wait_durable(t).await.is_err() {
                        break;
                    }
                    done.set(done.get() + 1);
                }
            }));
        }
        for t in tasks {
            t.await;
        }
        let st = s.stats();
        s.close().await;
        let secs = RUN.as_secs_f64();
        println!(
            "log  {:<6} {:>4} clients {:<14} {:>9.0} records/s {:>7.0} syncs/s {:>7.1} records/sync",
            if uring { "uring" } else { "epoll" },
            clients,
            format!("{sync:?}"),
            done.get() as f64 / secs,
            st.syncs as f64 / secs,
            done.get() as f64 / (st.syncs.max(1)) as f64,
        );
        let _ = std::fs::remove_dir_all(&dir);
    });
}

const QUEUE: redb::TableDefinition<'_, u64, &[u8]> = redb::TableDefinition::new("queue");

/// redb doing the same: transactions of `batch` inserts of a record-sized value, each
/// commit durable (`Durability::Immediate`, an fsync), for `RUN`. A batch stands for what
/// group commit puts in one sync with that many clients.
fn redb_writes(batch: usize, durability: redb::Durability) {
    let dir = fresh("redb");
    std::fs::create_dir_all(&dir).expect("dir");
    let db = redb::Database::create(dir.join("db.redb")).expect("redb");
    let durable = matches!(durability, redb::Durability::Immediate);
    let value = vec![b'x'; PAYLOAD + 60];
    let end = Instant::now() + RUN;
    let (mut n, mut commits) = (0u64, 0u64);
    while Instant::now() < end {
        let mut tx = db.begin_write().expect("tx");
        tx.set_durability(durability).expect("durability");
        {
            let mut t = tx.open_table(QUEUE).expect("table");
            for _ in 0..batch {
                n += 1;
                t.insert(n, value.as_slice()).expect("insert");
            }
        }
        tx.commit().expect("commit");
        commits += 1;
    }
    let secs = RUN.as_secs_f64();
    println!(
        "redb              {batch:>4} per commit {:<10} {:>9.0} records/s {:>7.0} syncs/s",
        if durable { "Immediate" } else { "None" },
        n as f64 / secs,
        if durable { commits as f64 / secs } else { 0.0 },
    );
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes `n` sessions (one subscription each, a queued message every tenth) through the
/// store, then times `Store::open` reading them back.
fn log_recovery(n: usize) {
    let dir = fresh("recovery");
    let cfg = StoreConfig {
        sync: SyncPolicy::Never,
        compact_min_bytes: u64::MAX,
        ..StoreConfig::default()
    };
    let d = dir.clone();
    runtime_block_on(true, async move {
        let (stores, _) = Store::open(&d, 2, &cfg).expect("open");
        let stores: Vec<Rc<ShardStore>> = stores.into_iter().map(Rc::new).collect();
        for s in &stores {
            monoio::spawn(s.clone().run());
        }
        let payload = Bytes::from(vec![b'x'; PAYLOAD]);
        for i in 0..n {
            let id: Arc<str> = format!("client-{i:08}").into();
            let s = &stores[i % 2];
            s.push(Record::Session {
                meta: meta(&id),
                fresh: true,
            });
            s.push(Record::SubAdd {
                client_id: id.clone(),
                filter: format!("devices/{i}/cmd/#").into(),
                opts: SubOptions {
                    qos: QoS::AtLeastOnce,
                    ..SubOptions::default()
                },
            });
            if i % 10 == 0 {
                s.push(queued(id.clone(), message(&payload)));
            }
            if i % 10_000 == 0 {
                monoio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        for s in &stores {
            s.close().await;
        }
    });
    let bytes = dir_bytes(&dir);
    let t = Instant::now();
    let (stores, rec) = Store::open(&dir, 2, &StoreConfig::default()).expect("reopen");
    let took = t.elapsed();
    assert_eq!(rec.sessions.len(), n);
    println!(
        "log  recovery {n:>8} sessions: {:>7.2} s ({:.1} MB read; read {} records, merged, \
         rewrote {} logs)",
        took.as_secs_f64(),
        bytes as f64 / 1e6,
        rec.report.records,
        stores.len()
    );
    drop((stores, rec));
    let _ = std::fs::remove_dir_all(&dir);
}

const SESSIONS: redb::TableDefinition<'_, &str, &[u8]> = redb::TableDefinition::new("sessions");

/// redb: `n` session rows of the same size, then the time to open the database and load
/// every row into memory (what a broker needs at start).
fn redb_recovery(n: usize) {
    let dir = fresh("redb-recovery");
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("db.redb");
    {
        let db = redb::Database::create(&path).expect("redb");
        let value = vec![b's'; 80];
        let tx = db.begin_write().expect("tx");
        {
            let mut t = tx.open_table(SESSIONS).expect("table");
            for i in 0..n {
                t.insert(format!("client-{i:08}").as_str(), value.as_slice())
                    .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    let t = Instant::now();
    let db = redb::Database::open(&path).expect("open");
    let rx = db.begin_read().expect("read");
    let table = rx.open_table(SESSIONS).expect("table");
    let mut loaded = Vec::with_capacity(n);
    for row in table.iter().expect("iter") {
        let (k, v) = row.expect("row");
        loaded.push((k.value().to_owned(), v.value().to_vec()));
    }
    let took = t.elapsed();
    assert_eq!(loaded.len(), n);
    println!(
        "redb recovery {n:>8} sessions: {:>7.2} s ({:.1} MB; open + load every row)",
        took.as_secs_f64(),
        dir_bytes(&dir) as f64 / 1e6
    );
    drop((table, rx, db));
    let _ = std::fs::remove_dir_all(&dir);
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                dir_bytes(&p)
            } else {
                e.metadata().map_or(0, |m| m.len())
            }
        })
        .sum()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let million = args.iter().any(|a| a == "1m");
    let uring = monoio::utils::detect_uring();
    let writes = !args.iter().any(|a| a == "recovery");
    for clients in [1, 16, 256].into_iter().filter(|_| writes) {
        if uring {
            log_writes(true, clients, SyncPolicy::Always);
        }
        log_writes(false, clients, SyncPolicy::Always);
        redb_writes(clients, redb::Durability::Immediate);
    }
    if writes {
        // Without syncs: the CPU cost per record.
        log_writes(uring, 256, SyncPolicy::Never);
        redb_writes(256, redb::Durability::None);
    }
    let mut sizes = vec![100_000];
    if million {
        sizes.push(1_000_000);
    }
    for n in sizes {
        log_recovery(n);
        redb_recovery(n);
    }
}
