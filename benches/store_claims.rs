//! Outbox claims per second and inbox inserts per second, PostgreSQL and SQLite side by side.
//!
//! ```sh
//! cargo bench --bench store_claims          # 2,000 items per measure
//! cargo bench --bench store_claims -- 500   # 500 items
//! ```
//!
//! A claim is one `due_outbox` call of up to 100 items followed by `complete_outbox` of each
//! (on PostgreSQL, `due_outbox` leases the rows with `FOR UPDATE SKIP LOCKED`); an insert is
//! one `inbox_insert` (one durable commit). SQLite runs on a file under the system's temporary
//! directory (WAL, `synchronous=FULL`); PostgreSQL in a fresh schema of the database at
//! `KEYCRM_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`), dropped
//! afterwards. PostgreSQL commits are durable too (`synchronous_commit` as the server has it).

use std::time::Instant;

use chrono::Utc;
use keycrm::sync::model::EntityKind;
use keycrm::sync::store::{PostgresStore, SqliteStore, Store, WriteBatch};
use serde_json::json;

/// Items per second of `n` items done in `secs`.
fn rate(n: usize, secs: f64) -> f64 {
    n as f64 / secs.max(f64::EPSILON)
}

async fn claims_per_second(store: &impl Store, n: usize) -> f64 {
    let now = Utc::now();
    let mut batch = WriteBatch::new();
    for i in 0..n {
        batch.enqueue(EntityKind::Order, format!("o-{i}"), json!({"n": i}), now);
    }
    store.write_batch(batch).await.expect("enqueue");
    let started = Instant::now();
    let mut done = 0;
    loop {
        let claimed = store.due_outbox(now, 100).await.expect("claim");
        if claimed.is_empty() {
            break;
        }
        for item in claimed {
            assert!(
                store
                    .complete_outbox(item.id, item.revision)
                    .await
                    .expect("complete")
            );
            done += 1;
        }
    }
    assert_eq!(done, n);
    rate(n, started.elapsed().as_secs_f64())
}

async fn inserts_per_second(store: &impl Store, n: usize) -> f64 {
    let now = Utc::now();
    let started = Instant::now();
    for i in 0..n {
        let id = store
            .inbox_insert(
                &format!("order:{i}"),
                "order.change_order_status",
                json!({"id": i}),
                now,
            )
            .await
            .expect("insert");
        assert!(id.is_some());
    }
    rate(n, started.elapsed().as_secs_f64())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000);
    let url = std::env::var("KEYCRM_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());

    let dir = std::env::temp_dir().join(format!("keycrm-store-claims-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let sqlite = SqliteStore::open(dir.join("store.db")).expect("SQLite store");
    let sqlite_claims = claims_per_second(&sqlite, n).await;
    let sqlite_inserts = inserts_per_second(&sqlite, n).await;
    drop(sqlite);
    let _ = std::fs::remove_dir_all(&dir);

    let schema = format!("kc_bench_{}", std::process::id());
    let pg = PostgresStore::builder(&url)
        .schema(&schema)
        .connect()
        .await
        .expect("PostgreSQL at KEYCRM_TEST_DATABASE_URL");
    let pg_claims = claims_per_second(&pg, n).await;
    let pg_inserts = inserts_per_second(&pg, n).await;
    pg.pool()
        .get()
        .await
        .expect("a connection")
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .expect("drop the bench schema");

    println!("{n} items per measure");
    println!("{:<28} {:>12} {:>12}", "", "SQLite", "PostgreSQL");
    println!(
        "{:<28} {:>12.0} {:>12.0}",
        "outbox claims/s", sqlite_claims, pg_claims
    );
    println!(
        "{:<28} {:>12.0} {:>12.0}",
        "inbox inserts/s", sqlite_inserts, pg_inserts
    );
}
