//! The conformance suite on PostgreSQL (each test in its own schema), plus claims and leases.
//!
//! The database comes from `KEYCRM_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::model::EntityKind;
use crate::store::conformance::{Guarded, t};
use crate::store::{InboxStatus, Store};

/// The test database's connection string.
pub(crate) fn test_url() -> String {
    std::env::var("KEYCRM_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A schema of its own for one test, dropped (with its tables) when the guard goes.
pub(crate) struct TempSchema {
    pub(crate) name: String,
}

impl TempSchema {
    pub(crate) fn new(tag: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Self {
            name: format!("kc_{tag}_{}_{nanos}_{n}", std::process::id()),
        }
    }

    pub(crate) fn builder(&self) -> PostgresStoreBuilder {
        PostgresStore::builder(test_url()).schema(&self.name)
    }
}

impl Drop for TempSchema {
    fn drop(&mut self) {
        // Drop runs outside any runtime's async context: a thread with its own runtime.
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                if let Ok((client, conn)) = tokio_postgres::connect(&test_url(), NoTls).await {
                    let task = tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!(
                            "SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS {name} CASCADE"
                        ))
                        .await;
                    drop(client);
                    let _ = task.await;
                }
            });
        })
        .join();
    }
}

mod postgres_backend {
    crate::store_conformance_tests!(|| async {
        let guard = super::TempSchema::new("conf");
        let store = guard
            .builder()
            .connect()
            .await
            .expect("PostgreSQL at KEYCRM_TEST_DATABASE_URL");
        super::Guarded { store, guard }
    });
}

async fn two(schema: &TempSchema, lease: Duration) -> (PostgresStore, PostgresStore) {
    let a = schema
        .builder()
        .instance_id("a")
        .lease(lease)
        .connect()
        .await
        .unwrap();
    let b = schema
        .builder()
        .instance_id("b")
        .lease(lease)
        .connect()
        .await
        .unwrap();
    (a, b)
}

#[tokio::test]
async fn outbox_items_are_claimed_by_one_instance() {
    let schema = TempSchema::new("claim");
    let (a, b) = two(&schema, Duration::from_secs(600)).await;
    assert_eq!(a.schema_version().await.unwrap(), POSTGRES_SCHEMA_VERSION);
    for i in 0..10 {
        a.enqueue(EntityKind::Order, &format!("o-{i}"), json!(i), t(i))
            .await
            .unwrap();
    }
    let first = a.due_outbox(t(100), 4).await.unwrap();
    assert_eq!(first.len(), 4);
    let rest = b.due_outbox(t(100), 100).await.unwrap();
    assert_eq!(rest.len(), 6);
    let ids: BTreeSet<_> = first.iter().chain(&rest).map(|i| i.id).collect();
    assert_eq!(ids.len(), 10, "no item was handed out twice");
    // Oldest first within each claim; an instance gets its own leased items back.
    assert_eq!(first[0].local_id, "o-0");
    assert_eq!(a.due_outbox(t(100), 100).await.unwrap(), first);
    assert!(b.due_outbox(t(100), 100).await.unwrap().len() == 6);
    // A failure ends the lease: the other instance may retry the item once it is due.
    assert!(
        a.fail_outbox(first[0].id, first[0].revision, "HTTP 500", t(200), false)
            .await
            .unwrap()
    );
    assert!(b.due_outbox(t(150), 100).await.unwrap().len() == 6);
    let b_now = b.due_outbox(t(200), 100).await.unwrap();
    assert_eq!(b_now.len(), 7);
    assert!(b_now.iter().any(|i| i.id == first[0].id && i.attempts == 1));
    // Completing works whoever holds the lease; the rest of a's claim stays a's.
    assert!(
        a.complete_outbox(first[1].id, first[1].revision)
            .await
            .unwrap()
    );
    assert_eq!(a.due_outbox(t(200), 100).await.unwrap().len(), 2);
}

#[tokio::test]
async fn an_expired_lease_is_taken_over() {
    let schema = TempSchema::new("lease");
    // A zero lease has run out as soon as it is taken: the work of an instance that stopped
    // is free for the others at once.
    let (a, b) = two(&schema, Duration::ZERO).await;
    a.enqueue(EntityKind::Stock, "sku-1", json!(1), t(0))
        .await
        .unwrap();
    assert_eq!(a.due_outbox(t(1), 10).await.unwrap().len(), 1);
    assert_eq!(b.due_outbox(t(1), 10).await.unwrap().len(), 1);
    a.inbox_insert("k1", "order.change", json!({"id": 1}), t(0))
        .await
        .unwrap();
    assert_eq!(a.inbox_pending(10).await.unwrap().len(), 1);
    assert_eq!(b.inbox_pending(10).await.unwrap().len(), 1);
    // With a long lease the second instance gets nothing while the first holds the work.
    let (c, d) = two(&schema, Duration::from_secs(600)).await;
    let claimed = c.due_outbox(t(1), 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(d.due_outbox(t(1), 10).await.unwrap().is_empty());
    assert_eq!(c.inbox_pending(10).await.unwrap().len(), 1);
    assert!(d.inbox_pending(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn looking_at_the_oldest_pending_row_claims_nothing() {
    let schema = TempSchema::new("peek");
    let (a, b) = two(&schema, Duration::from_secs(600)).await;
    assert_eq!(a.oldest_pending_inbox().await.unwrap(), None);
    for i in [3, 1, 2] {
        a.inbox_insert(&format!("k{i}"), "order.change", json!({"id": i}), t(i))
            .await
            .unwrap();
    }
    // A status page on one instance looks; the other instance still gets every row.
    assert_eq!(a.oldest_pending_inbox().await.unwrap(), Some(t(1)));
    assert_eq!(b.inbox_pending(100).await.unwrap().len(), 3);
    // Claimed rows are still pending: they still count as the oldest waiting.
    assert_eq!(a.oldest_pending_inbox().await.unwrap(), Some(t(1)));
}

#[tokio::test]
async fn inbox_rows_are_claimed_and_released_by_marking() {
    let schema = TempSchema::new("inbox");
    let (a, b) = two(&schema, Duration::from_secs(600)).await;
    for i in 0..6 {
        a.inbox_insert(&format!("k{i}"), "order.change", json!({"id": i}), t(i))
            .await
            .unwrap();
    }
    let mine = a.inbox_pending(2).await.unwrap();
    let theirs = b.inbox_pending(100).await.unwrap();
    assert_eq!((mine.len(), theirs.len()), (2, 4));
    assert_eq!(mine[0].dedupe_key, "k0");
    // Putting a row back in the queue ends its lease.
    assert!(
        a.inbox_mark(mine[0].id, InboxStatus::Pending, None, t(10))
            .await
            .unwrap()
    );
    assert!(
        a.inbox_mark(mine[1].id, InboxStatus::Processed, None, t(10))
            .await
            .unwrap()
    );
    let again = b.inbox_pending(100).await.unwrap();
    assert_eq!(again.len(), 5);
    assert!(again.iter().any(|i| i.id == mine[0].id));
    assert_eq!(a.counts().await.unwrap().inbox_backlog, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_hand_out_each_item_once() {
    let schema = TempSchema::new("race");
    let seed = schema.builder().connect().await.unwrap();
    let mut batch = crate::store::WriteBatch::new();
    for i in 0..300 {
        batch.enqueue(EntityKind::Order, format!("o-{i}"), json!(i), t(0));
    }
    seed.write_batch(batch).await.unwrap();
    let mut workers = Vec::new();
    for w in 0..3 {
        let store = schema
            .builder()
            .instance_id(format!("w{w}"))
            .claim_limit(7)
            .connect()
            .await
            .unwrap();
        workers.push(tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                let claimed = store.due_outbox(t(1), usize::MAX).await.unwrap();
                if claimed.is_empty() {
                    return done;
                }
                for item in claimed {
                    assert!(store.complete_outbox(item.id, item.revision).await.unwrap());
                    done.push(item.id);
                }
            }
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    assert_eq!(all.len(), 300);
    assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), 300);
    assert_eq!(seed.counts().await.unwrap().outbox_depth, 0);
}

#[tokio::test]
async fn migrations_run_once_and_newer_schemas_are_refused() {
    let schema = TempSchema::new("migrate");
    // Instances starting together migrate once.
    let (a, b) = tokio::join!(schema.builder().connect(), schema.builder().connect());
    let (a, _b) = (a.unwrap(), b.unwrap());
    let c = a.conn().await.unwrap();
    let steps: i64 = c
        .query_one("SELECT count(*) FROM keycrm_schema_version", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(steps, POSTGRES_SCHEMA_VERSION);
    c.execute(
        "INSERT INTO keycrm_schema_version (version) VALUES (999)",
        &[],
    )
    .await
    .unwrap();
    let err = schema.builder().connect().await.unwrap_err();
    assert!(
        matches!(err, StoreError::NewerSchema { found: 999, supported } if supported == POSTGRES_SCHEMA_VERSION),
        "{err:?}"
    );
    let bad = PostgresStore::builder(test_url())
        .schema("x; DROP TABLE y")
        .connect()
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("schema name"), "{bad}");
}

#[tokio::test]
async fn the_quota_row_paces_every_instance_and_a_429_holds_them_all() {
    use keycrm_api::quota::{QuotaRequest, Reservation, SharedQuota};
    let schema = TempSchema::new("quota");
    let (a, b) = two(&schema, Duration::from_secs(600)).await;
    let (qa, qb) = (a.quota("key-1"), b.quota("key-1"));
    assert!(!format!("{qa:?}").contains("key-1"), "the key is not shown");
    let second = Duration::from_secs(1);
    let request = QuotaRequest::new(second, 1);
    assert_eq!(
        qa.reserve(request).await.unwrap(),
        Reservation::granted(Duration::ZERO)
    );
    // The other instance's next slot is one interval later (less the time that passed).
    let Reservation::Granted { wait } = qb.reserve(request).await.unwrap() else {
        panic!("refused");
    };
    assert!(
        wait > Duration::from_millis(500) && wait <= second,
        "{wait:?}"
    );
    // Another key has its own schedule.
    assert_eq!(
        a.quota("key-2").reserve(request).await.unwrap(),
        Reservation::granted(Duration::ZERO)
    );
    // A slot beyond the caller's limit is refused, not booked.
    let impatient = request.max_wait(Duration::from_millis(100));
    assert!(matches!(
        qa.reserve(impatient).await.unwrap(),
        Reservation::Refused { .. }
    ));
    // A 429 seen by one instance closes the gate for the other.
    assert_eq!(qb.gate().await.unwrap(), None);
    qa.close_gate(Duration::from_secs(30)).await.unwrap();
    let gate = qb.gate().await.unwrap().expect("closed");
    assert!(
        gate > Duration::from_secs(29) && gate <= Duration::from_secs(30),
        "{gate:?}"
    );
    let Reservation::Granted { wait } = qb.reserve(request).await.unwrap() else {
        panic!("refused");
    };
    assert!(
        wait > Duration::from_secs(29),
        "{wait:?} after a gate of {gate:?}"
    );
    // A shorter gate does not reopen it earlier.
    qb.close_gate(Duration::from_secs(1)).await.unwrap();
    assert!(qa.gate().await.unwrap().unwrap() > Duration::from_secs(28));
}
