//! How the engine uses its store: a page of a reconciliation pass is one transaction, and a
//! tombstoned record's personal values leave the conflict log.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use keycrm_api::mock::KeyCrmMock;
use keycrm_sync::SyncEngine;
use keycrm_sync::host::MemoryHost;
use keycrm_sync::model::EntityKind;
use keycrm_sync::store::{
    AuditEntry, ConflictRecord, InboxId, InboxItem, InboxStatus, Mapping, MemoryStore, OutboxId,
    OutboxItem, PurgeReport, SqliteStore, Store, StoreCounts, StoreError, SyncState, WriteBatch,
    WriteOp,
};
use serde_json::{Value, json};

mod support;
use support::{config, seed, simulator, unpaced_client};

/// What a [`Counting`] store saw.
#[derive(Default, Debug)]
struct Counts {
    /// Calls that write in a transaction of their own (single writes and batches alike).
    transactions: AtomicU64,
    /// Mappings written by `put_mapping` alone.
    single_mapping_writes: AtomicU64,
    /// Mappings written inside batches.
    batched_mapping_writes: AtomicU64,
    /// The most mapping writes one batch carried.
    largest_batch: AtomicU64,
}

/// A store that counts write transactions, around another store.
#[derive(Clone)]
struct Counting<S> {
    inner: S,
    counts: Arc<Counts>,
}

impl<S> Counting<S> {
    fn tx(&self) {
        self.counts.transactions.fetch_add(1, Ordering::Relaxed);
    }
}

impl<S: Store + Clone> Store for Counting<S> {
    async fn get_mapping(
        &self,
        kind: EntityKind,
        local_id: &str,
    ) -> Result<Option<Mapping>, StoreError> {
        self.inner.get_mapping(kind, local_id).await
    }
    async fn get_mapping_by_remote(
        &self,
        kind: EntityKind,
        remote_id: i64,
    ) -> Result<Option<Mapping>, StoreError> {
        self.inner.get_mapping_by_remote(kind, remote_id).await
    }
    async fn put_mapping(&self, mapping: &Mapping) -> Result<(), StoreError> {
        self.tx();
        self.counts
            .single_mapping_writes
            .fetch_add(1, Ordering::Relaxed);
        self.inner.put_mapping(mapping).await
    }
    async fn delete_mapping(&self, kind: EntityKind, local_id: &str) -> Result<bool, StoreError> {
        self.tx();
        self.inner.delete_mapping(kind, local_id).await
    }
    async fn list_mappings(
        &self,
        kind: EntityKind,
        state: Option<SyncState>,
    ) -> Result<Vec<Mapping>, StoreError> {
        self.inner.list_mappings(kind, state).await
    }
    async fn enqueue(
        &self,
        kind: EntityKind,
        local_id: &str,
        payload: Value,
        now: DateTime<Utc>,
    ) -> Result<OutboxId, StoreError> {
        self.tx();
        self.inner.enqueue(kind, local_id, payload, now).await
    }
    async fn due_outbox(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        self.inner.due_outbox(now, limit).await
    }
    async fn complete_outbox(&self, id: OutboxId, revision: i64) -> Result<bool, StoreError> {
        self.tx();
        self.inner.complete_outbox(id, revision).await
    }
    async fn fail_outbox(
        &self,
        id: OutboxId,
        revision: i64,
        error: &str,
        next_attempt_at: DateTime<Utc>,
        dead: bool,
    ) -> Result<bool, StoreError> {
        self.tx();
        self.inner
            .fail_outbox(id, revision, error, next_attempt_at, dead)
            .await
    }
    async fn dead_letters(&self, kind: Option<EntityKind>) -> Result<Vec<OutboxItem>, StoreError> {
        self.inner.dead_letters(kind).await
    }
    async fn retry_dead_letter(
        &self,
        id: OutboxId,
        now: DateTime<Utc>,
    ) -> Result<Option<OutboxId>, StoreError> {
        self.tx();
        self.inner.retry_dead_letter(id, now).await
    }
    async fn discard_dead_letter(&self, id: OutboxId) -> Result<bool, StoreError> {
        self.tx();
        self.inner.discard_dead_letter(id).await
    }
    async fn inbox_insert(
        &self,
        dedupe_key: &str,
        event: &str,
        payload: Value,
        now: DateTime<Utc>,
    ) -> Result<Option<InboxId>, StoreError> {
        self.tx();
        self.inner
            .inbox_insert(dedupe_key, event, payload, now)
            .await
    }
    async fn inbox_insert_batch(
        &self,
        items: &[keycrm_sync::store::NewInboxItem],
        now: DateTime<Utc>,
    ) -> Result<Vec<Option<InboxId>>, StoreError> {
        self.tx();
        self.inner.inbox_insert_batch(items, now).await
    }
    async fn inbox_pending(&self, limit: usize) -> Result<Vec<InboxItem>, StoreError> {
        self.inner.inbox_pending(limit).await
    }
    async fn inbox_mark(
        &self,
        id: InboxId,
        status: InboxStatus,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.tx();
        self.inner.inbox_mark(id, status, error, now).await
    }
    async fn get_cursor(&self, kind: EntityKind, name: &str) -> Result<Option<String>, StoreError> {
        self.inner.get_cursor(kind, name).await
    }
    async fn set_cursor(
        &self,
        kind: EntityKind,
        name: &str,
        value: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.tx();
        self.inner.set_cursor(kind, name, value, now).await
    }
    async fn log_conflict(&self, record: &ConflictRecord) -> Result<(), StoreError> {
        self.tx();
        self.inner.log_conflict(record).await
    }
    async fn list_conflicts(
        &self,
        kind: Option<EntityKind>,
        limit: usize,
    ) -> Result<Vec<ConflictRecord>, StoreError> {
        self.inner.list_conflicts(kind, limit).await
    }
    async fn log_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.tx();
        self.inner.log_audit(entry).await
    }
    async fn list_audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.inner.list_audit(limit).await
    }
    async fn forget_personal_conflicts(
        &self,
        kind: EntityKind,
        local_id: &str,
    ) -> Result<u64, StoreError> {
        self.tx();
        self.inner.forget_personal_conflicts(kind, local_id).await
    }
    async fn write_batch(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.tx();
        let mappings = batch
            .ops()
            .iter()
            .filter(|op| matches!(op, WriteOp::PutMapping(_)))
            .count() as u64;
        self.counts
            .batched_mapping_writes
            .fetch_add(mappings, Ordering::Relaxed);
        self.counts
            .largest_batch
            .fetch_max(mappings, Ordering::Relaxed);
        self.inner.write_batch(batch).await
    }
    async fn purge(&self, older_than: DateTime<Utc>) -> Result<PurgeReport, StoreError> {
        self.tx();
        self.inner.purge(older_than).await
    }
    async fn counts(&self) -> Result<StoreCounts, StoreError> {
        self.inner.counts().await
    }
}

/// A simulator seeded with 20 buyers, 3 products and `orders` orders, and an engine on `store`.
async fn engine_on<S: Store + Clone>(
    store: S,
    orders: usize,
) -> (KeyCrmMock, MemoryHost, SyncEngine<S, MemoryHost>) {
    let mock = simulator().await;
    mock.seed(seed(3, 20, orders));
    let (host, engine) = support::engine_on(unpaced_client(&mock), store, config());
    (mock, host, engine)
}

/// A first sync of 120 KeyCRM orders (three pages of 50) writes their mappings, page by
/// page, in a few transactions instead of one (with an fsync each on SQLite) per record.
#[tokio::test]
async fn a_page_of_pulled_orders_is_one_store_transaction() {
    let counts = Arc::new(Counts::default());
    let store = Counting {
        inner: SqliteStore::open_in_memory().unwrap(),
        counts: counts.clone(),
    };
    let (_mock, host, engine) = engine_on(store, 120).await;
    let report = engine.run_once().await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(host.orders().len(), 120);
    let mapped = engine
        .store()
        .list_mappings(EntityKind::Order, None)
        .await
        .unwrap();
    assert_eq!(mapped.len(), 120);
    assert!(mapped.iter().all(|m| m.state == SyncState::Synced));

    assert_eq!(counts.single_mapping_writes.load(Ordering::Relaxed), 0);
    assert!(counts.batched_mapping_writes.load(Ordering::Relaxed) >= 120);
    assert_eq!(
        counts.largest_batch.load(Ordering::Relaxed),
        50,
        "a full page of orders in one batch"
    );
    let transactions = counts.transactions.load(Ordering::Relaxed);
    assert!(
        transactions < 40,
        "{transactions} write transactions for {} applied records",
        report.applied
    );
}

/// When KeyCRM no longer has an order, the tombstone also drops the buyer and shipping
/// values of its conflict-log entries (the entries themselves stay until retention).
#[tokio::test]
async fn tombstones_forget_personal_conflict_values() {
    let (mock, host, engine) = engine_on(MemoryStore::new(), 3).await;
    engine.run_once().await.unwrap();
    let order = host.orders().into_iter().next().expect("a pulled order");
    let local_id = order.local_id.clone();
    let store = engine.store();
    let remote_id = store
        .get_mapping(EntityKind::Order, &local_id)
        .await
        .unwrap()
        .and_then(|m| m.remote_id);
    let entry = |field: &str, value: &str| ConflictRecord {
        at: Utc::now(),
        kind: EntityKind::Order,
        local_id: local_id.clone(),
        remote_id,
        field: field.into(),
        base: Some(json!(format!("{value}-0"))),
        local: Some(json!(value)),
        remote: Some(json!(format!("{value}-1"))),
        winner: "remote".into(),
        reason: "both changed; NewestWins".into(),
        local_updated_at: None,
        remote_updated_at: None,
    };
    store
        .log_conflict(&entry("buyer.phone", "+380671112233"))
        .await
        .unwrap();
    store
        .log_conflict(&entry("shipping.address", "вул. Хрещатик, 1"))
        .await
        .unwrap();
    store
        .log_conflict(&entry("manager_comment", "ok"))
        .await
        .unwrap();

    // The account is emptied: a complete pass no longer sees the order.
    mock.reset();
    engine.full_resync().await.unwrap();
    assert!(host.order(&local_id).is_none(), "the order was tombstoned");
    assert_eq!(
        store
            .get_mapping(EntityKind::Order, &local_id)
            .await
            .unwrap(),
        None
    );
    let logged: Vec<ConflictRecord> = store
        .list_conflicts(Some(EntityKind::Order), 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.local_id == local_id)
        .collect();
    assert_eq!(logged.len(), 3);
    for c in &logged {
        let personal = c.field.starts_with("buyer.") || c.field.starts_with("shipping.");
        assert_eq!(
            (c.base.is_none(), c.local.is_none(), c.remote.is_none()),
            (personal, personal, personal),
            "{}",
            c.field
        );
        assert_eq!(c.winner, "remote");
    }
    let audit = store.list_audit(1000).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.local_id == local_id && a.action == "tombstone")
    );
}
