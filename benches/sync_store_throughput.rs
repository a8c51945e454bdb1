//! Records applied per second in a first sync of orders from KeyCRM into an empty host, with
//! the engine's state in SQLite on disk (WAL, `synchronous=FULL`), against the simulator with
//! pacing off. What it measures is the engine and its store, not KeyCRM's quota.
//!
//! ```sh
//! cargo bench --bench sync_store_throughput            # 2,000 orders, 3 rounds
//! cargo bench --bench sync_store_throughput -- 500 1   # 500 orders, 1 round
//! ```
//!
//! Each round starts from a fresh simulator, host and database file (under the system's
//! temporary directory), runs one `run_once` and divides the orders that reached the host by
//! the run's wall time. The median round is printed last.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use keycrm::api::mock::{KeyCrmMock, Quota, SeedConfig};
use keycrm::sync::SyncEngine;
use keycrm::sync::canonical::Mappings;
use keycrm::sync::config::{Secret, SyncConfig};
use keycrm::sync::host::MemoryHost;
use keycrm::sync::store::SqliteStore;

fn config() -> SyncConfig {
    SyncConfig {
        api_key: Secret::new("bench"),
        source_id: Some(1),
        status_ids: BTreeMap::from([
            ("new".to_string(), 1),
            ("approved".to_string(), 2),
            ("packing".to_string(), 3),
            ("shipped".to_string(), 4),
            ("completed".to_string(), 5),
            ("canceled".to_string(), 6),
        ]),
        payment_method_ids: BTreeMap::from([
            ("cod".to_string(), 1),
            ("invoice".to_string(), 2),
            ("card".to_string(), 3),
            ("apple_pay".to_string(), 4),
            ("cash".to_string(), 5),
        ]),
        warehouse_ids: BTreeMap::from([("main".to_string(), 1), ("lviv".to_string(), 2)]),
        ..SyncConfig::default()
    }
}

/// A database path that does not exist yet; its files are removed by [`remove_db`].
fn db_path(round: usize) -> PathBuf {
    std::env::temp_dir().join(format!(
        "keycrm-bench-store-{}-{round}.sqlite3",
        std::process::id()
    ))
}

fn remove_db(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

struct Round {
    orders: usize,
    applied: u64,
    secs: f64,
    requests: u64,
}

async fn round(n: usize, index: usize) -> Round {
    let mock = KeyCrmMock::builder()
        .quota(Quota::unlimited())
        .start()
        .await;
    mock.seed(SeedConfig {
        buyers: 200,
        companies: 0,
        products: 10,
        orders: n,
        cards: 0,
        calls: 0,
        transactions: 0,
        ..SeedConfig::default()
    });
    // Pacing off: no request waits for a quota slot.
    let client = mock
        .client_builder()
        .requests_per_minute(0)
        .build()
        .expect("a client");
    let config = config();
    let host = MemoryHost::new(Mappings::from_config(&config));
    let path = db_path(index);
    remove_db(&path);
    let store = SqliteStore::open(&path).expect("a store");
    let engine = SyncEngine::builder()
        .client(client)
        .store(store)
        .host(host.clone())
        .config(config)
        .build()
        .expect("an engine");

    let started = Instant::now();
    let report = engine.run_once().await.expect("the first sync");
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(report.failed, 0, "{report:?}");
    let orders = host.orders().len();
    assert_eq!(orders, n, "every KeyCRM order reached the host");
    drop(engine);
    remove_db(&path);
    Round {
        orders,
        applied: report.applied,
        secs,
        requests: report.requests,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut numbers = std::env::args().skip(1).filter_map(|a| a.parse().ok());
    let n: usize = numbers.next().unwrap_or(2_000);
    let rounds: usize = numbers.next().unwrap_or(3).max(1);

    println!(
        "first sync of {n} KeyCRM orders into an empty host, SQLite store on disk, \
         simulator with pacing off"
    );
    let mut rates = Vec::new();
    for i in 0..rounds {
        let r = round(n, i).await;
        let rate = r.orders as f64 / r.secs;
        println!(
            "round {}: {} orders ({} records applied, {} requests) in {:.2} s = {:.0} orders/s",
            i + 1,
            r.orders,
            r.applied,
            r.requests,
            r.secs,
            rate
        );
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "median: {:.0} records (orders) applied per second",
        rates[rates.len() / 2]
    );
}
