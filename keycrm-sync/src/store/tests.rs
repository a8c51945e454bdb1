//! One conformance suite run against every backend, plus SQLite-specific tests.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{Value, json};

use super::sqlite::test_support::migrate_steps;
use super::*;
use crate::model::{EntityKind, Fields, Snapshot};

// ---- helpers ----

/// A fixed instant `secs` seconds after 2025-01-01T00:00:00Z.
fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap() + Duration::seconds(secs)
}

fn snapshot() -> Snapshot {
    let mut fields = Fields::new();
    fields.insert("status_id".into(), json!(3));
    fields.insert("shipping.tracking_code".into(), json!("TTN-1"));
    fields.insert("lines.SKU-1.quantity".into(), json!(2.5));
    fields.insert("note".into(), Value::Null);
    Snapshot::new(fields, Some(t(10) + Duration::microseconds(123_456)))
}

fn full_mapping(kind: EntityKind, local_id: &str, remote_id: Option<i64>) -> Mapping {
    let base = snapshot();
    Mapping {
        kind,
        local_id: local_id.into(),
        remote_id,
        state: SyncState::Synced,
        last_sync_at: Some(t(20) + Duration::microseconds(7)),
        error: None,
        content_hash: Some(base.hash()),
        base: Some(base),
        remote_updated_at: Some(t(15)),
    }
}

fn conflict(at: DateTime<Utc>, kind: EntityKind, local_id: &str, field: &str) -> ConflictRecord {
    ConflictRecord {
        at,
        kind,
        local_id: local_id.into(),
        remote_id: Some(77),
        field: field.into(),
        base: Some(json!(1)),
        local: Some(json!({"v": 2})),
        remote: None,
        winner: "local".into(),
        reason: "owner: local".into(),
        local_updated_at: Some(t(1)),
        remote_updated_at: None,
    }
}

fn audit(at: DateTime<Utc>, local_id: &str, action: &str) -> AuditEntry {
    AuditEntry {
        at,
        kind: EntityKind::Order,
        local_id: local_id.into(),
        action: action.into(),
        detail: "d".into(),
    }
}

/// A database file under the temp dir with a unique name, removed (with its WAL files) on drop.
struct TempDb {
    path: PathBuf,
}

impl TempDb {
    fn new(name: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "keycrm-sync-store-{name}-{}-{nanos}-{n}.sqlite3",
            std::process::id()
        ));
        let db = Self { path };
        db.remove();
        db
    }

    fn remove(&self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(p));
        }
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        self.remove();
    }
}

// ---- the conformance suite ----

async fn mappings_round_trip(s: &impl Store) {
    assert_eq!(s.get_mapping(EntityKind::Order, "o-1").await.unwrap(), None);
    assert_eq!(
        s.get_mapping_by_remote(EntityKind::Order, 501)
            .await
            .unwrap(),
        None
    );

    let m = full_mapping(EntityKind::Order, "o-1", Some(501));
    s.put_mapping(&m).await.unwrap();
    assert_eq!(
        s.get_mapping(EntityKind::Order, "o-1").await.unwrap(),
        Some(m.clone())
    );
    assert_eq!(
        s.get_mapping_by_remote(EntityKind::Order, 501)
            .await
            .unwrap(),
        Some(m.clone())
    );
    // Kinds are separate namespaces.
    assert_eq!(s.get_mapping(EntityKind::Buyer, "o-1").await.unwrap(), None);
    assert_eq!(
        s.get_mapping_by_remote(EntityKind::Buyer, 501)
            .await
            .unwrap(),
        None
    );

    // Upsert by (kind, local_id): the row is replaced, including a new remote id.
    let mut changed = m.clone();
    changed.remote_id = Some(502);
    changed.state = SyncState::Error;
    changed.error = Some("HTTP 422".into());
    changed.base = None;
    changed.content_hash = None;
    changed.remote_updated_at = None;
    s.put_mapping(&changed).await.unwrap();
    assert_eq!(
        s.get_mapping(EntityKind::Order, "o-1").await.unwrap(),
        Some(changed.clone())
    );
    assert_eq!(
        s.get_mapping_by_remote(EntityKind::Order, 501)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.get_mapping_by_remote(EntityKind::Order, 502)
            .await
            .unwrap(),
        Some(changed.clone())
    );

    let pending = Mapping::new(EntityKind::Order, "o-0");
    s.put_mapping(&pending).await.unwrap();
    s.put_mapping(&full_mapping(EntityKind::Order, "o-2", Some(503)))
        .await
        .unwrap();
    s.put_mapping(&full_mapping(EntityKind::Buyer, "b-1", Some(501)))
        .await
        .unwrap();

    let all = s.list_mappings(EntityKind::Order, None).await.unwrap();
    let ids: Vec<&str> = all.iter().map(|m| m.local_id.as_str()).collect();
    assert_eq!(ids, ["o-0", "o-1", "o-2"]);
    assert_eq!(all[0], pending);
    let synced = s
        .list_mappings(EntityKind::Order, Some(SyncState::Synced))
        .await
        .unwrap();
    assert_eq!(
        synced
            .iter()
            .map(|m| m.local_id.as_str())
            .collect::<Vec<_>>(),
        ["o-2"]
    );
    let errors = s
        .list_mappings(EntityKind::Order, Some(SyncState::Error))
        .await
        .unwrap();
    assert_eq!(errors, vec![changed]);
    assert_eq!(
        s.list_mappings(EntityKind::Order, Some(SyncState::Pending))
            .await
            .unwrap(),
        vec![pending]
    );
    assert_eq!(
        s.list_mappings(EntityKind::Stock, None).await.unwrap(),
        vec![]
    );

    assert!(s.delete_mapping(EntityKind::Order, "o-1").await.unwrap());
    assert!(!s.delete_mapping(EntityKind::Order, "o-1").await.unwrap());
    assert_eq!(s.get_mapping(EntityKind::Order, "o-1").await.unwrap(), None);
    assert_eq!(
        s.get_mapping_by_remote(EntityKind::Order, 502)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.list_mappings(EntityKind::Order, None)
            .await
            .unwrap()
            .len(),
        2
    );
}

async fn mapping_remote_id_is_unique_per_kind(s: &impl Store) {
    let a = full_mapping(EntityKind::Product, "p-a", Some(9));
    s.put_mapping(&a).await.unwrap();
    // Re-putting the same record with its own remote id is fine.
    s.put_mapping(&a).await.unwrap();

    let b = full_mapping(EntityKind::Product, "p-b", Some(9));
    let err = s.put_mapping(&b).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::DuplicateRemoteId {
                kind: EntityKind::Product,
                remote_id: 9
            }
        ),
        "got {err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains('9') && !msg.contains("p-a") && !msg.contains("p-b"),
        "{msg}"
    );
    assert_eq!(
        s.get_mapping(EntityKind::Product, "p-b").await.unwrap(),
        None
    );
    assert_eq!(
        s.get_mapping_by_remote(EntityKind::Product, 9)
            .await
            .unwrap(),
        Some(a)
    );

    // The same remote id in another kind, and any number of unmapped records, are fine.
    s.put_mapping(&full_mapping(EntityKind::Offer, "p-b", Some(9)))
        .await
        .unwrap();
    s.put_mapping(&Mapping::new(EntityKind::Product, "p-c"))
        .await
        .unwrap();
    s.put_mapping(&Mapping::new(EntityKind::Product, "p-d"))
        .await
        .unwrap();
    assert_eq!(
        s.list_mappings(EntityKind::Product, None)
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        s.get_mapping_by_remote(EntityKind::Offer, 9)
            .await
            .unwrap()
            .unwrap()
            .local_id,
        "p-b"
    );
}

async fn outbox_coalesces_per_record(s: &impl Store) {
    let id = s
        .enqueue(EntityKind::Order, "o-1", json!({"v": 1}), t(0))
        .await
        .unwrap();
    // Fail it once so attempts and next_attempt_at move away from their defaults.
    assert!(
        s.fail_outbox(id, 1, "HTTP 503", t(100), false)
            .await
            .unwrap()
    );
    let again = s
        .enqueue(EntityKind::Order, "o-1", json!({"v": 2}), t(5))
        .await
        .unwrap();
    assert_eq!(again, id);

    let due = s.due_outbox(t(5), 10).await.unwrap();
    assert_eq!(due.len(), 1);
    let item = &due[0];
    assert_eq!(item.id, id);
    assert_eq!(item.kind, EntityKind::Order);
    assert_eq!(item.local_id, "o-1");
    assert_eq!(item.payload, json!({"v": 2}));
    assert_eq!(item.revision, 2);
    assert_eq!(item.attempts, 0);
    assert_eq!(item.created_at, t(0));
    assert_eq!(item.next_attempt_at, t(5));
    assert_eq!(item.last_error.as_deref(), Some("HTTP 503"));
    assert!(!item.dead);

    // Another record, or the same local id of another kind, gets its own item.
    let other = s
        .enqueue(EntityKind::Order, "o-2", json!(3), t(6))
        .await
        .unwrap();
    let other_kind = s
        .enqueue(EntityKind::Buyer, "o-1", json!(4), t(6))
        .await
        .unwrap();
    assert!(other != id && other_kind != id && other != other_kind);
    assert_eq!(s.due_outbox(t(6), 10).await.unwrap().len(), 3);

    // A dead letter is not coalesced into: a new change gets a new item.
    assert!(
        s.fail_outbox(other, 1, "HTTP 400", t(6), true)
            .await
            .unwrap()
    );
    let fresh = s
        .enqueue(EntityKind::Order, "o-2", json!(5), t(7))
        .await
        .unwrap();
    assert_ne!(fresh, other);
    let dead = s.dead_letters(None).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].payload, json!(3));
    let due = s.due_outbox(t(7), 10).await.unwrap();
    assert_eq!(
        due.iter().map(|i| i.id).collect::<Vec<_>>(),
        [id, other_kind, fresh]
    );
}

async fn outbox_due_order_and_filter(s: &impl Store) {
    let a = s
        .enqueue(EntityKind::Stock, "s-a", json!("a"), t(30))
        .await
        .unwrap();
    let b = s
        .enqueue(EntityKind::Offer, "s-b", json!("b"), t(10))
        .await
        .unwrap();
    let c = s
        .enqueue(EntityKind::Order, "s-c", json!("c"), t(20))
        .await
        .unwrap();
    let d = s
        .enqueue(EntityKind::Order, "s-d", json!("d"), t(20))
        .await
        .unwrap();

    assert_eq!(s.due_outbox(t(9), 10).await.unwrap(), vec![]);
    let ids = |v: Vec<OutboxItem>| v.into_iter().map(|i| i.id).collect::<Vec<_>>();
    // Oldest first; equal times in insertion order.
    assert_eq!(ids(s.due_outbox(t(30), 10).await.unwrap()), [b, c, d, a]);
    assert_eq!(ids(s.due_outbox(t(25), 10).await.unwrap()), [b, c, d]);
    assert_eq!(ids(s.due_outbox(t(30), 2).await.unwrap()), [b, c]);
    assert_eq!(ids(s.due_outbox(t(30), 0).await.unwrap()), []);

    // A failed item waits for its next attempt time, then comes back in age order.
    assert!(s.fail_outbox(b, 1, "timeout", t(60), false).await.unwrap());
    assert_eq!(ids(s.due_outbox(t(59), 10).await.unwrap()), [c, d, a]);
    let due = s.due_outbox(t(60), 10).await.unwrap();
    assert_eq!(due[0].id, b);
    assert_eq!(due[0].attempts, 1);
    assert_eq!(due[0].next_attempt_at, t(60));
    assert_eq!(due.len(), 4);

    // Sub-second precision is kept to the microsecond.
    let fine = t(100) + Duration::microseconds(250);
    let e = s
        .enqueue(EntityKind::Buyer, "s-e", json!(null), fine)
        .await
        .unwrap();
    assert!(!ids(s.due_outbox(t(100), 10).await.unwrap()).contains(&e));
    let due = s.due_outbox(fine, 10).await.unwrap();
    assert_eq!(due.last().unwrap().id, e);
    assert_eq!(due.last().unwrap().created_at, fine);
    assert_eq!(due.last().unwrap().payload, Value::Null);
}

async fn outbox_complete_checks_revision(s: &impl Store) {
    let id = s
        .enqueue(EntityKind::Order, "o-1", json!(1), t(0))
        .await
        .unwrap();
    let sent = s.due_outbox(t(0), 1).await.unwrap().remove(0);
    assert_eq!(sent.revision, 1);
    // A newer change arrives while the request is in flight.
    assert_eq!(
        s.enqueue(EntityKind::Order, "o-1", json!(2), t(1))
            .await
            .unwrap(),
        id
    );
    assert!(!s.complete_outbox(id, sent.revision).await.unwrap());
    assert!(
        !s.fail_outbox(id, sent.revision, "late failure", t(99), true)
            .await
            .unwrap()
    );
    let due = s.due_outbox(t(1), 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(
        (due[0].payload.clone(), due[0].revision, due[0].attempts),
        (json!(2), 2, 0)
    );
    assert!(!due[0].dead);

    assert!(s.complete_outbox(id, 2).await.unwrap());
    assert_eq!(s.due_outbox(t(1000), 10).await.unwrap(), vec![]);
    assert!(!s.complete_outbox(id, 2).await.unwrap());
    assert!(!s.complete_outbox(OutboxId(9_999), 1).await.unwrap());

    // Ids are never reused after removal.
    let next = s
        .enqueue(EntityKind::Order, "o-1", json!(3), t(2))
        .await
        .unwrap();
    assert!(next > id, "{next} after {id}");
}

async fn outbox_dead_letters_and_retry(s: &impl Store) {
    let a = s
        .enqueue(EntityKind::Order, "o-a", json!("a"), t(0))
        .await
        .unwrap();
    let b = s
        .enqueue(EntityKind::Buyer, "b-b", json!("b"), t(1))
        .await
        .unwrap();
    assert!(s.fail_outbox(a, 1, "HTTP 500", t(10), false).await.unwrap());
    assert!(
        s.fail_outbox(a, 1, "HTTP 422: invalid", t(20), true)
            .await
            .unwrap()
    );
    assert!(s.fail_outbox(b, 1, "HTTP 400", t(20), true).await.unwrap());
    // A dead item takes no more failures and is never due.
    assert!(!s.fail_outbox(a, 1, "again", t(30), false).await.unwrap());
    assert!(!s.complete_outbox(a, 1).await.unwrap());
    assert_eq!(s.due_outbox(t(1_000), 10).await.unwrap(), vec![]);

    let dead = s.dead_letters(None).await.unwrap();
    assert_eq!(dead.iter().map(|i| i.id).collect::<Vec<_>>(), [a, b]);
    assert_eq!(dead[0].attempts, 2);
    assert_eq!(dead[0].last_error.as_deref(), Some("HTTP 422: invalid"));
    assert!(dead[0].dead);
    assert_eq!(
        s.dead_letters(Some(EntityKind::Buyer)).await.unwrap().len(),
        1
    );
    assert_eq!(
        s.dead_letters(Some(EntityKind::Buyer)).await.unwrap()[0].id,
        b
    );
    assert_eq!(
        s.dead_letters(Some(EntityKind::Stock)).await.unwrap(),
        vec![]
    );

    // Retry with no newer change: the item is live again, due now, attempts reset.
    assert_eq!(s.retry_dead_letter(a, t(50)).await.unwrap(), Some(a));
    let due = s.due_outbox(t(50), 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(
        (
            due[0].id,
            due[0].attempts,
            due[0].next_attempt_at,
            due[0].dead
        ),
        (a, 0, t(50), false)
    );
    assert_eq!(due[0].payload, json!("a"));
    assert_eq!(s.due_outbox(t(49), 10).await.unwrap(), vec![]);
    // Not a dead letter (any more): nothing to retry or discard.
    assert_eq!(s.retry_dead_letter(a, t(51)).await.unwrap(), None);
    assert!(!s.discard_dead_letter(a).await.unwrap());
    assert_eq!(
        s.retry_dead_letter(OutboxId(9_999), t(51)).await.unwrap(),
        None
    );

    // Retry when a newer change is queued: the newer item carries it, the dead letter goes.
    let newer = s
        .enqueue(EntityKind::Buyer, "b-b", json!("b2"), t(60))
        .await
        .unwrap();
    assert_ne!(newer, b);
    assert_eq!(s.retry_dead_letter(b, t(61)).await.unwrap(), Some(newer));
    assert_eq!(s.dead_letters(None).await.unwrap(), vec![]);
    let due = s.due_outbox(t(61), 10).await.unwrap();
    assert_eq!(
        due.iter()
            .map(|i| (i.id, i.payload.clone()))
            .collect::<Vec<_>>(),
        [(a, json!("a")), (newer, json!("b2"))]
    );

    // Discard drops a dead letter for good.
    assert!(
        s.fail_outbox(newer, 1, "HTTP 400", t(70), true)
            .await
            .unwrap()
    );
    assert!(s.discard_dead_letter(newer).await.unwrap());
    assert!(!s.discard_dead_letter(newer).await.unwrap());
    assert_eq!(s.dead_letters(None).await.unwrap(), vec![]);
    assert_eq!(s.due_outbox(t(1_000), 10).await.unwrap().len(), 1);
}

async fn inbox_dedupes_and_tracks_status(s: &impl Store) {
    let body = json!({"event": "order.change_order_status", "context": {"id": 1, "status_id": 3}});
    let first = s.inbox_insert(
        "order:1:3:2025-01-01T00:00:00Z",
        "order.change_order_status",
        body.clone(),
        t(5),
    );
    let first = first.await.unwrap().expect("first delivery is stored");
    // KeyCRM retries the delivery: the duplicate is recognised and nothing changes.
    let dup = s.inbox_insert(
        "order:1:3:2025-01-01T00:00:00Z",
        "order.change_order_status",
        json!("other"),
        t(6),
    );
    assert_eq!(dup.await.unwrap(), None);

    let second = s
        .inbox_insert("stock:abc", "stock.change", json!([1, 2]), t(2))
        .await
        .unwrap()
        .unwrap();
    let third = s
        .inbox_insert("stock:def", "stock.change", json!([3]), t(9))
        .await
        .unwrap()
        .unwrap();
    assert!(first != second && second != third);

    let pending = s.inbox_pending(10).await.unwrap();
    assert_eq!(
        pending.iter().map(|i| i.id).collect::<Vec<_>>(),
        [second, first, third]
    );
    let item = &pending[1];
    assert_eq!(item.dedupe_key, "order:1:3:2025-01-01T00:00:00Z");
    assert_eq!(item.event, "order.change_order_status");
    assert_eq!(item.payload, body);
    assert_eq!(item.received_at, t(5));
    assert_eq!(
        (item.status, item.processed_at, item.error.clone()),
        (InboxStatus::Pending, None, None)
    );
    assert_eq!(s.inbox_pending(2).await.unwrap().len(), 2);
    assert_eq!(s.inbox_pending(0).await.unwrap(), vec![]);

    assert!(
        s.inbox_mark(first, InboxStatus::Processed, None, t(10))
            .await
            .unwrap()
    );
    assert!(
        s.inbox_mark(second, InboxStatus::Failed, Some("unknown offer"), t(11))
            .await
            .unwrap()
    );
    assert!(
        !s.inbox_mark(InboxId(9_999), InboxStatus::Ignored, None, t(11))
            .await
            .unwrap()
    );
    let pending = s.inbox_pending(10).await.unwrap();
    assert_eq!(pending.iter().map(|i| i.id).collect::<Vec<_>>(), [third]);

    // A processed key still deduplicates.
    assert_eq!(
        s.inbox_insert("order:1:3:2025-01-01T00:00:00Z", "x", json!(1), t(12))
            .await
            .unwrap(),
        None
    );

    // Marking pending puts an item back in the queue, with no processed time.
    assert!(
        s.inbox_mark(second, InboxStatus::Pending, None, t(13))
            .await
            .unwrap()
    );
    let pending = s.inbox_pending(10).await.unwrap();
    assert_eq!(
        pending.iter().map(|i| i.id).collect::<Vec<_>>(),
        [second, third]
    );
    assert_eq!(
        (pending[0].processed_at, pending[0].error.clone()),
        (None, None)
    );

    assert!(
        s.inbox_mark(second, InboxStatus::Failed, Some("unknown offer"), t(14))
            .await
            .unwrap()
    );
    let counts = s.counts().await.unwrap();
    assert_eq!((counts.inbox_backlog, counts.inbox_failed), (1, 1));
}

async fn cursors_per_kind_and_name(s: &impl Store) {
    assert_eq!(
        s.get_cursor(EntityKind::Order, "updated").await.unwrap(),
        None
    );
    s.set_cursor(EntityKind::Order, "updated", "2025-01-01 00:00:00", t(1))
        .await
        .unwrap();
    s.set_cursor(EntityKind::Order, "created", "2024-12-31 00:00:00", t(1))
        .await
        .unwrap();
    s.set_cursor(EntityKind::Buyer, "updated", "b", t(1))
        .await
        .unwrap();
    assert_eq!(
        s.get_cursor(EntityKind::Order, "updated")
            .await
            .unwrap()
            .as_deref(),
        Some("2025-01-01 00:00:00")
    );
    assert_eq!(
        s.get_cursor(EntityKind::Order, "created")
            .await
            .unwrap()
            .as_deref(),
        Some("2024-12-31 00:00:00")
    );
    assert_eq!(
        s.get_cursor(EntityKind::Buyer, "updated")
            .await
            .unwrap()
            .as_deref(),
        Some("b")
    );
    assert_eq!(
        s.get_cursor(EntityKind::Buyer, "created").await.unwrap(),
        None
    );

    s.set_cursor(EntityKind::Order, "updated", "2025-01-02 00:00:00", t(2))
        .await
        .unwrap();
    assert_eq!(
        s.get_cursor(EntityKind::Order, "updated")
            .await
            .unwrap()
            .as_deref(),
        Some("2025-01-02 00:00:00")
    );
    assert_eq!(
        s.get_cursor(EntityKind::Buyer, "updated")
            .await
            .unwrap()
            .as_deref(),
        Some("b")
    );
}

async fn conflict_log_newest_first(s: &impl Store) {
    let mut first = conflict(t(10), EntityKind::Order, "o-1", "status_id");
    // JSON null and an absent value are different things and must stay so.
    first.base = Some(Value::Null);
    first.remote = None;
    first.remote_id = None;
    first.remote_updated_at = Some(t(9) + Duration::microseconds(1));
    let second = conflict(t(30), EntityKind::Buyer, "b-1", "email");
    let third = conflict(t(20), EntityKind::Order, "o-2", "shipping.tracking_code");
    let tie = conflict(t(30), EntityKind::Order, "o-3", "note");
    for c in [&first, &second, &third, &tie] {
        s.log_conflict(c).await.unwrap();
    }

    let all = s.list_conflicts(None, 10).await.unwrap();
    assert_eq!(
        all,
        vec![tie.clone(), second.clone(), third.clone(), first.clone()]
    );
    assert_eq!(all[3].base, Some(Value::Null));
    assert_eq!(all[3].remote, None);
    assert_eq!(
        s.list_conflicts(None, 2).await.unwrap(),
        vec![tie.clone(), second]
    );
    assert_eq!(
        s.list_conflicts(Some(EntityKind::Order), 10).await.unwrap(),
        vec![tie, third, first.clone()]
    );
    assert_eq!(
        s.list_conflicts(Some(EntityKind::Order), 10).await.unwrap()[2],
        first
    );
    assert_eq!(
        s.list_conflicts(Some(EntityKind::Stock), 10).await.unwrap(),
        vec![]
    );
}

async fn audit_log_newest_first(s: &impl Store) {
    let a = audit(t(1), "o-1", "pushed");
    let b = audit(t(3), "o-2", "applied");
    let c = audit(t(2), "o-3", "tombstoned");
    let d = audit(t(3), "o-4", "echo");
    for e in [&a, &b, &c, &d] {
        s.log_audit(e).await.unwrap();
    }
    assert_eq!(
        s.list_audit(10).await.unwrap(),
        vec![d.clone(), b.clone(), c, a]
    );
    assert_eq!(s.list_audit(2).await.unwrap(), vec![d, b]);
    assert_eq!(s.list_audit(0).await.unwrap(), vec![]);
}

async fn purge_keeps_pending_and_live_rows(s: &impl Store) {
    assert_eq!(DEFAULT_RETENTION, Duration::days(90));
    let now = t(200 * 86_400);
    let mark = now - DEFAULT_RETENTION;
    let old = mark - Duration::seconds(1);
    let recent = mark + Duration::seconds(1);

    let processed_old = s
        .inbox_insert("k1", "e", json!(1), old)
        .await
        .unwrap()
        .unwrap();
    let ignored_old = s
        .inbox_insert("k2", "e", json!(2), old)
        .await
        .unwrap()
        .unwrap();
    let failed_old = s
        .inbox_insert("k3", "e", json!(3), old)
        .await
        .unwrap()
        .unwrap();
    let pending_old = s
        .inbox_insert("k4", "e", json!(4), old)
        .await
        .unwrap()
        .unwrap();
    let processed_recent = s
        .inbox_insert("k5", "e", json!(5), old)
        .await
        .unwrap()
        .unwrap();
    let failed_recent = s
        .inbox_insert("k6", "e", json!(6), old)
        .await
        .unwrap()
        .unwrap();
    s.inbox_mark(processed_old, InboxStatus::Processed, None, old)
        .await
        .unwrap();
    s.inbox_mark(ignored_old, InboxStatus::Ignored, None, old)
        .await
        .unwrap();
    s.inbox_mark(failed_old, InboxStatus::Failed, Some("boom"), old)
        .await
        .unwrap();
    s.inbox_mark(processed_recent, InboxStatus::Processed, None, recent)
        .await
        .unwrap();
    s.inbox_mark(failed_recent, InboxStatus::Failed, Some("boom"), recent)
        .await
        .unwrap();

    s.log_conflict(&conflict(old, EntityKind::Order, "o-1", "f"))
        .await
        .unwrap();
    s.log_conflict(&conflict(mark, EntityKind::Order, "o-2", "f"))
        .await
        .unwrap();
    s.log_audit(&audit(old, "o-1", "pushed")).await.unwrap();
    s.log_audit(&audit(old, "o-2", "pushed")).await.unwrap();
    s.log_audit(&audit(recent, "o-3", "pushed")).await.unwrap();

    let item = s
        .enqueue(EntityKind::Order, "o-1", json!(1), old)
        .await
        .unwrap();
    let dead = s
        .enqueue(EntityKind::Order, "o-2", json!(2), old)
        .await
        .unwrap();
    s.fail_outbox(dead, 1, "HTTP 400", old, true).await.unwrap();
    let mut m = full_mapping(EntityKind::Order, "o-1", Some(1));
    m.last_sync_at = Some(old);
    s.put_mapping(&m).await.unwrap();
    s.set_cursor(EntityKind::Order, "updated", "x", old)
        .await
        .unwrap();

    let report = s.purge(mark).await.unwrap();
    assert_eq!(
        report,
        PurgeReport {
            inbox: 3,
            conflicts: 1,
            audit: 2
        }
    );

    assert_eq!(
        s.inbox_pending(10)
            .await
            .unwrap()
            .iter()
            .map(|i| i.id)
            .collect::<Vec<_>>(),
        [pending_old]
    );
    // The kept rows still deduplicate; a purged key is accepted again.
    assert_eq!(
        s.inbox_insert("k6", "e", json!(0), now).await.unwrap(),
        None
    );
    assert_eq!(
        s.inbox_insert("k4", "e", json!(0), now).await.unwrap(),
        None
    );
    assert_eq!(
        s.inbox_insert("k5", "e", json!(0), now).await.unwrap(),
        None
    );
    assert!(
        s.inbox_insert("k1", "e", json!(0), now)
            .await
            .unwrap()
            .is_some()
    );
    // A failed row is customer data too (a whole webhook body): gone after the period.
    assert!(
        s.inbox_insert("k3", "e", json!(0), now)
            .await
            .unwrap()
            .is_some()
    );
    let conflicts = s.list_conflicts(None, 10).await.unwrap();
    assert_eq!(
        conflicts
            .iter()
            .map(|c| c.local_id.as_str())
            .collect::<Vec<_>>(),
        ["o-2"]
    );
    assert_eq!(
        s.list_audit(10)
            .await
            .unwrap()
            .iter()
            .map(|a| a.local_id.as_str())
            .collect::<Vec<_>>(),
        ["o-3"]
    );
    assert_eq!(
        s.due_outbox(now, 10)
            .await
            .unwrap()
            .iter()
            .map(|i| i.id)
            .collect::<Vec<_>>(),
        [item]
    );
    assert_eq!(
        s.dead_letters(None)
            .await
            .unwrap()
            .iter()
            .map(|i| i.id)
            .collect::<Vec<_>>(),
        [dead]
    );
    assert_eq!(
        s.get_mapping(EntityKind::Order, "o-1").await.unwrap(),
        Some(m)
    );
    assert_eq!(
        s.get_cursor(EntityKind::Order, "updated")
            .await
            .unwrap()
            .as_deref(),
        Some("x")
    );

    // Purging again removes nothing more.
    assert_eq!(s.purge(mark).await.unwrap(), PurgeReport::default());
    let counts = s.counts().await.unwrap();
    assert_eq!((counts.inbox_backlog, counts.inbox_failed), (3, 1));
}

async fn purge_drops_failed_inbox_rows_after_retention(s: &impl Store) {
    let now = t(200 * 86_400);
    let mark = now - DEFAULT_RETENTION;
    let body = json!({"context": {"buyer": {"phone": "+380501112233"}}});
    let old = s
        .inbox_insert(
            "failed-old",
            "order.change_order_status",
            body.clone(),
            t(0),
        )
        .await
        .unwrap()
        .unwrap();
    s.inbox_mark(old, InboxStatus::Failed, Some("HTTP 500"), t(1))
        .await
        .unwrap();
    let fresh = s
        .inbox_insert("failed-fresh", "order.change_order_status", body, now)
        .await
        .unwrap()
        .unwrap();
    s.inbox_mark(fresh, InboxStatus::Failed, Some("HTTP 500"), now)
        .await
        .unwrap();
    assert_eq!(s.counts().await.unwrap().inbox_failed, 2);
    let report = s.purge(mark).await.unwrap();
    assert_eq!(report.inbox, 1);
    assert_eq!(s.counts().await.unwrap().inbox_failed, 1);
    // The purged row's key is free again; the recent one still deduplicates.
    assert!(
        s.inbox_insert("failed-old", "e", json!(0), now)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        s.inbox_insert("failed-fresh", "e", json!(0), now)
            .await
            .unwrap(),
        None
    );
}

fn personal_conflict(kind: EntityKind, local_id: &str, field: &str, value: &str) -> ConflictRecord {
    ConflictRecord {
        at: t(5),
        kind,
        local_id: local_id.into(),
        remote_id: Some(9),
        field: field.into(),
        base: Some(json!(format!("{value}-base"))),
        local: Some(json!(value)),
        remote: Some(json!(format!("{value}-remote"))),
        winner: "remote".into(),
        reason: "both changed; NewestWins".into(),
        local_updated_at: Some(t(3)),
        remote_updated_at: Some(t(4)),
    }
}

async fn conflict_of(
    s: &impl Store,
    kind: EntityKind,
    local_id: &str,
    field: &str,
) -> ConflictRecord {
    s.list_conflicts(Some(kind), 100)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.local_id == local_id && c.field == field)
        .unwrap()
}

fn blank(c: &ConflictRecord) -> ConflictRecord {
    ConflictRecord {
        base: None,
        local: None,
        remote: None,
        ..c.clone()
    }
}

async fn tombstoned_records_lose_personal_conflict_values(s: &impl Store) {
    let phone = personal_conflict(EntityKind::Order, "o-1", "buyer.phone", "+380501112233");
    let city = personal_conflict(EntityKind::Order, "o-1", "shipping.city", "Київ");
    let status = personal_conflict(EntityKind::Order, "o-1", "status_id", "3");
    let other = personal_conflict(EntityKind::Order, "o-2", "buyer.phone", "+380509998877");
    let buyer = personal_conflict(EntityKind::Buyer, "b-1", "full_name", "Олена Коваль");
    let offer = personal_conflict(EntityKind::Offer, "b-1", "price", "10");
    for c in [&phone, &city, &status, &other, &buyer, &offer] {
        s.log_conflict(c).await.unwrap();
    }

    assert_eq!(
        s.forget_personal_conflicts(EntityKind::Order, "o-1")
            .await
            .unwrap(),
        2
    );
    // Values gone, the rest of the entry (field, winner, reason, times) kept.
    assert_eq!(
        conflict_of(s, EntityKind::Order, "o-1", "buyer.phone").await,
        blank(&phone)
    );
    assert_eq!(
        conflict_of(s, EntityKind::Order, "o-1", "shipping.city").await,
        blank(&city)
    );
    // Not personal, or another record: untouched.
    assert_eq!(
        conflict_of(s, EntityKind::Order, "o-1", "status_id").await,
        status
    );
    assert_eq!(
        conflict_of(s, EntityKind::Order, "o-2", "buyer.phone").await,
        other
    );
    // Once is enough.
    assert_eq!(
        s.forget_personal_conflicts(EntityKind::Order, "o-1")
            .await
            .unwrap(),
        0
    );

    // Every field of a buyer is personal; through a batch like the engine's tombstones.
    let mut batch = WriteBatch::new();
    batch
        .delete_mapping(EntityKind::Buyer, "b-1")
        .forget_personal_conflicts(EntityKind::Buyer, "b-1");
    s.write_batch(batch).await.unwrap();
    assert_eq!(
        conflict_of(s, EntityKind::Buyer, "b-1", "full_name").await,
        blank(&buyer)
    );
    assert_eq!(
        conflict_of(s, EntityKind::Offer, "b-1", "price").await,
        offer
    );
    assert_eq!(s.list_conflicts(None, 100).await.unwrap().len(), 6);
}

async fn write_batch_applies_everything_in_order(s: &impl Store) {
    // An empty batch does nothing.
    s.write_batch(WriteBatch::new()).await.unwrap();
    assert_eq!(s.counts().await.unwrap(), StoreCounts::empty());

    let m1 = full_mapping(EntityKind::Order, "o-1", Some(501));
    let m2 = full_mapping(EntityKind::Order, "o-2", Some(502));
    let mut moved = m1.clone();
    moved.state = SyncState::Pending;
    let mut batch = WriteBatch::new();
    batch
        .put_mapping(m1.clone())
        .put_mapping(m2.clone())
        .put_mapping(moved.clone())
        .enqueue(EntityKind::Order, "o-1", json!(1), t(1))
        .enqueue(EntityKind::Order, "o-1", json!(2), t(2))
        .set_cursor(EntityKind::Order, "remote", "c1", t(3))
        .set_cursor(EntityKind::Order, "remote", "c2", t(4))
        .log_conflict(conflict(t(5), EntityKind::Order, "o-1", "status_id"))
        .log_audit(audit(t(6), "o-1", "applied"))
        .delete_mapping(EntityKind::Order, "o-2");
    assert_eq!(batch.len(), 10);
    s.write_batch(batch).await.unwrap();

    assert_eq!(
        s.get_mapping(EntityKind::Order, "o-1").await.unwrap(),
        Some(moved)
    );
    assert_eq!(s.get_mapping(EntityKind::Order, "o-2").await.unwrap(), None);
    let due = s.due_outbox(t(10), 10).await.unwrap();
    assert_eq!(due.len(), 1, "enqueue coalesces inside a batch too");
    assert_eq!((due[0].payload.clone(), due[0].revision), (json!(2), 2));
    assert_eq!(
        s.get_cursor(EntityKind::Order, "remote")
            .await
            .unwrap()
            .as_deref(),
        Some("c2")
    );
    assert_eq!(
        s.list_conflicts(None, 10).await.unwrap(),
        vec![conflict(t(5), EntityKind::Order, "o-1", "status_id")]
    );
    assert_eq!(
        s.list_audit(10).await.unwrap(),
        vec![audit(t(6), "o-1", "applied")]
    );

    // Completing: only the revision that was sent; a newer payload stays due.
    let o9 = s
        .enqueue(EntityKind::Offer, "x", json!(1), t(1))
        .await
        .unwrap();
    let mut batch = WriteBatch::new();
    batch
        .complete_outbox(due[0].id, 1)
        .complete_outbox(o9, 1)
        .log_audit(audit(t(7), "x", "pushed"));
    s.write_batch(batch).await.unwrap();
    let due = s.due_outbox(t(10), 10).await.unwrap();
    assert_eq!(
        due.iter().map(|i| i.local_id.as_str()).collect::<Vec<_>>(),
        ["o-1"],
        "revision 2 of o-1 stays; x is done"
    );

    // A remote id may move to another record within one batch (freed first, then taken).
    let mut freed = full_mapping(EntityKind::Order, "o-1", None);
    freed.state = SyncState::Error;
    let taker = full_mapping(EntityKind::Order, "o-3", Some(501));
    let mut batch = WriteBatch::new();
    batch.put_mapping(freed).put_mapping(taker.clone());
    s.write_batch(batch).await.unwrap();
    assert_eq!(
        s.get_mapping_by_remote(EntityKind::Order, 501)
            .await
            .unwrap(),
        Some(taker)
    );
}

async fn write_batch_is_all_or_nothing(s: &impl Store) {
    s.put_mapping(&full_mapping(EntityKind::Order, "o-1", Some(501)))
        .await
        .unwrap();
    let before = s.counts().await.unwrap();

    // The failing write comes last: the writes before it are rolled back.
    let mut batch = WriteBatch::new();
    batch
        .log_audit(audit(t(1), "o-2", "applied"))
        .enqueue(EntityKind::Order, "o-2", json!(1), t(1))
        .set_cursor(EntityKind::Order, "remote", "c1", t(1))
        .log_conflict(conflict(t(1), EntityKind::Order, "o-2", "f"))
        .put_mapping(full_mapping(EntityKind::Order, "o-3", Some(503)))
        .delete_mapping(EntityKind::Buyer, "b-0")
        .put_mapping(full_mapping(EntityKind::Order, "o-2", Some(501)));
    let err = s.write_batch(batch).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::DuplicateRemoteId {
                kind: EntityKind::Order,
                remote_id: 501
            }
        ),
        "{err:?}"
    );
    assert_eq!(s.counts().await.unwrap(), before);
    assert_eq!(s.list_audit(10).await.unwrap(), vec![]);
    assert_eq!(s.list_conflicts(None, 10).await.unwrap(), vec![]);
    assert_eq!(
        s.get_cursor(EntityKind::Order, "remote").await.unwrap(),
        None
    );
    assert_eq!(s.get_mapping(EntityKind::Order, "o-3").await.unwrap(), None);
    assert_eq!(
        s.get_mapping_by_remote(EntityKind::Order, 501)
            .await
            .unwrap()
            .map(|m| m.local_id),
        Some("o-1".to_string())
    );

    // Two records of one batch claiming one remote id fail the same way.
    let mut batch = WriteBatch::new();
    batch
        .put_mapping(full_mapping(EntityKind::Buyer, "b-1", Some(7)))
        .put_mapping(full_mapping(EntityKind::Buyer, "b-2", Some(7)));
    assert!(matches!(
        s.write_batch(batch).await.unwrap_err(),
        StoreError::DuplicateRemoteId { remote_id: 7, .. }
    ));
    assert_eq!(
        s.list_mappings(EntityKind::Buyer, None).await.unwrap(),
        vec![]
    );
}

async fn counts_summarise_the_store(s: &impl Store) {
    let empty = s.counts().await.unwrap();
    assert_eq!(empty, StoreCounts::empty());
    assert_eq!(empty.per_kind.len(), EntityKind::ALL.len());
    assert!(empty.per_kind.values().all(|k| *k == KindCounts::default()));

    s.put_mapping(&full_mapping(EntityKind::Order, "o-1", Some(1)))
        .await
        .unwrap();
    s.put_mapping(&full_mapping(EntityKind::Order, "o-2", Some(2)))
        .await
        .unwrap();
    s.put_mapping(&Mapping::new(EntityKind::Order, "o-3"))
        .await
        .unwrap();
    let mut err = Mapping::new(EntityKind::Buyer, "b-1");
    err.state = SyncState::Error;
    err.error = Some("HTTP 422".into());
    s.put_mapping(&err).await.unwrap();

    s.enqueue(EntityKind::Order, "o-3", json!(1), t(0))
        .await
        .unwrap();
    s.enqueue(EntityKind::Order, "o-3", json!(2), t(1))
        .await
        .unwrap(); // coalesced
    s.enqueue(EntityKind::Order, "o-4", json!(1), t(0))
        .await
        .unwrap();
    let dead = s
        .enqueue(EntityKind::Buyer, "b-1", json!(1), t(0))
        .await
        .unwrap();
    s.fail_outbox(dead, 1, "HTTP 422", t(0), true)
        .await
        .unwrap();
    s.enqueue(EntityKind::Stock, "s-1", json!(1), t(0))
        .await
        .unwrap();

    let a = s
        .inbox_insert("a", "e", json!(1), t(0))
        .await
        .unwrap()
        .unwrap();
    s.inbox_insert("b", "e", json!(1), t(0))
        .await
        .unwrap()
        .unwrap();
    s.inbox_insert("b", "e", json!(1), t(0)).await.unwrap(); // duplicate
    let c = s
        .inbox_insert("c", "e", json!(1), t(0))
        .await
        .unwrap()
        .unwrap();
    let d = s
        .inbox_insert("d", "e", json!(1), t(0))
        .await
        .unwrap()
        .unwrap();
    s.inbox_mark(a, InboxStatus::Processed, None, t(1))
        .await
        .unwrap();
    s.inbox_mark(c, InboxStatus::Failed, Some("x"), t(1))
        .await
        .unwrap();
    s.inbox_mark(d, InboxStatus::Ignored, None, t(1))
        .await
        .unwrap();

    let counts = s.counts().await.unwrap();
    let order = KindCounts {
        synced: 2,
        pending: 1,
        error: 0,
        dead_lettered: 0,
        outbox: 2,
    };
    let buyer = KindCounts {
        synced: 0,
        pending: 0,
        error: 1,
        dead_lettered: 1,
        outbox: 0,
    };
    let stock = KindCounts {
        outbox: 1,
        ..KindCounts::default()
    };
    assert_eq!(counts.per_kind[&EntityKind::Order], order);
    assert_eq!(counts.per_kind[&EntityKind::Buyer], buyer);
    assert_eq!(counts.per_kind[&EntityKind::Stock], stock);
    assert_eq!(counts.per_kind[&EntityKind::Product], KindCounts::default());
    assert_eq!(counts.per_kind[&EntityKind::Offer], KindCounts::default());
    assert_eq!(counts.outbox_depth, 3);
    assert_eq!(counts.dead_letters, 1);
    assert_eq!(counts.inbox_backlog, 1);
    assert_eq!(counts.inbox_failed, 1);
}

async fn clones_share_state<S: Store + Clone>(s: &S) {
    let other = s.clone();
    other
        .set_cursor(EntityKind::Offer, "updated", "v", t(0))
        .await
        .unwrap();
    let id = other
        .enqueue(EntityKind::Offer, "x", json!(1), t(0))
        .await
        .unwrap();
    assert_eq!(
        s.get_cursor(EntityKind::Offer, "updated")
            .await
            .unwrap()
            .as_deref(),
        Some("v")
    );
    assert_eq!(s.due_outbox(t(0), 10).await.unwrap()[0].id, id);
    drop(other);
    assert_eq!(s.counts().await.unwrap().outbox_depth, 1);
}

async fn concurrent_tasks_coalesce(s: &(impl Store + Clone)) {
    let mut tasks = Vec::new();
    for i in 0..20 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.enqueue(EntityKind::Stock, &format!("sku-{}", i % 4), json!(i), t(i))
                .await
                .unwrap()
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4);
    let due = s.due_outbox(t(100), 100).await.unwrap();
    assert_eq!(due.len(), 4);
    assert_eq!(due.iter().map(|i| i.revision).sum::<i64>(), 20);
}

/// Runs every conformance test against each backend.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory_backend {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&super::MemoryStore::new()).await;
                }
            )*
        }

        mod sqlite_backend {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&super::SqliteStore::open_in_memory().unwrap()).await;
                }
            )*
        }

        mod sqlite_file_backend {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = super::TempDb::new(stringify!($name));
                    let store = super::SqliteStore::open(&db.path).unwrap();
                    super::$name(&store).await;
                    drop(store);
                }
            )*
        }
    };
}

conformance!(
    mappings_round_trip,
    mapping_remote_id_is_unique_per_kind,
    outbox_coalesces_per_record,
    outbox_due_order_and_filter,
    outbox_complete_checks_revision,
    outbox_dead_letters_and_retry,
    inbox_dedupes_and_tracks_status,
    cursors_per_kind_and_name,
    conflict_log_newest_first,
    audit_log_newest_first,
    purge_keeps_pending_and_live_rows,
    counts_summarise_the_store,
    clones_share_state,
    concurrent_tasks_coalesce,
    purge_drops_failed_inbox_rows_after_retention,
    tombstoned_records_lose_personal_conflict_values,
    write_batch_applies_everything_in_order,
    write_batch_is_all_or_nothing,
);

#[test]
fn write_batch_reads_its_own_mappings() {
    let a = full_mapping(EntityKind::Order, "o-1", Some(1));
    let mut batch = WriteBatch::new();
    assert!(batch.is_empty());
    assert_eq!(batch.mapping(EntityKind::Order, "o-1"), None);
    batch.put_mapping(a.clone());
    assert_eq!(batch.mapping(EntityKind::Order, "o-1"), Some(Some(&a)));
    assert_eq!(batch.mapping(EntityKind::Buyer, "o-1"), None);
    assert_eq!(batch.mapping_by_remote(EntityKind::Order, 1), Some(&a));
    assert_eq!(batch.mapping_by_remote(EntityKind::Order, 2), None);
    // A later write that moves the remote id away, or deletes the record, wins.
    let moved = full_mapping(EntityKind::Order, "o-1", Some(2));
    batch.put_mapping(moved.clone());
    assert_eq!(batch.mapping_by_remote(EntityKind::Order, 1), None);
    assert_eq!(batch.mapping_by_remote(EntityKind::Order, 2), Some(&moved));
    batch.delete_mapping(EntityKind::Order, "o-1");
    assert_eq!(batch.mapping(EntityKind::Order, "o-1"), Some(None));
    assert_eq!(batch.mapping_by_remote(EntityKind::Order, 2), None);
    let taken = batch.take();
    assert_eq!(taken.len(), 3);
    assert!(batch.is_empty());
    assert!(is_personal_field(EntityKind::Order, "buyer.email"));
    assert!(is_personal_field(EntityKind::Order, "shipping.address"));
    assert!(!is_personal_field(EntityKind::Order, "status_id"));
    assert!(is_personal_field(EntityKind::Buyer, "note"));
    assert!(!is_personal_field(EntityKind::Stock, "quantity"));
}

/// A call waiting for the database lock (held by another process) waits on the store's
/// connection thread: the runtime's only thread stays free for other tasks meanwhile.
#[test]
fn sqlite_calls_never_block_the_runtime_thread() {
    let db = TempDb::new("nonblocking");
    let store = SqliteStore::open(&db.path).unwrap();
    assert_ne!(store.connection_thread(), std::thread::current().id());

    // Another "process" takes the write lock and keeps it until told to let go.
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let path = db.path.clone();
    let holder = std::thread::spawn(move || {
        let mut raw = rusqlite::Connection::open(&path).unwrap();
        let tx = raw
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        tx.execute(
            "INSERT INTO cursors (kind, name, value, updated_at) VALUES ('order', 'other', 'x', 0)",
            [],
        )
        .unwrap();
        locked_tx.send(()).unwrap();
        release_rx.recv().unwrap();
        tx.commit().unwrap();
    });
    locked_rx.recv().unwrap();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        // A batch that must wait for the lock.
        let mut batch = WriteBatch::new();
        for i in 0..2_000 {
            batch.log_audit(audit(t(i), &format!("o-{i}"), "applied"));
        }
        let writer = {
            let store = store.clone();
            tokio::spawn(async move { store.write_batch(batch).await })
        };
        // Let the writer start. Were the call inline, it would hold this (only) thread in
        // SQLite's busy wait until the timeout and fail with "database is locked".
        tokio::task::yield_now().await;
        let other_task = tokio::spawn(async { 42 });
        assert_eq!(other_task.await.unwrap(), 42);
        assert!(!writer.is_finished(), "the lock is still held");
        release_tx.send(()).unwrap();
        writer
            .await
            .unwrap()
            .expect("written once the lock is free");
        assert_eq!(store.list_audit(5_000).await.unwrap().len(), 2_000);
        assert_eq!(
            store
                .get_cursor(EntityKind::Order, "other")
                .await
                .unwrap()
                .as_deref(),
            Some("x")
        );
    });
    holder.join().unwrap();
}

/// Retention leaves nothing personal in the database file: a purged failed webhook body is
/// neither a row nor a readable remnant in a free page (`secure_delete`).
#[tokio::test]
async fn sqlite_purged_bodies_leave_no_trace_in_the_file() {
    let db = TempDb::new("secure-delete");
    let store = SqliteStore::open(&db.path).unwrap();
    let phone = "+380671234987";
    for i in 0..20 {
        let id = store
            .inbox_insert(
                &format!("k{i}"),
                "order.change_order_status",
                json!({"context": {"buyer": {"phone": phone, "n": i}}}),
                t(0),
            )
            .await
            .unwrap()
            .unwrap();
        store
            .inbox_mark(id, InboxStatus::Failed, Some("HTTP 500"), t(1))
            .await
            .unwrap();
    }
    let report = store.purge(t(2)).await.unwrap();
    assert_eq!(report.inbox, 20);
    // Move everything from the WAL into the main file and empty the WAL.
    let raw = rusqlite::Connection::open(&db.path).unwrap();
    raw.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap();
    drop(raw);
    drop(store);
    let needle = phone.as_bytes();
    for suffix in ["", "-wal"] {
        let mut p = db.path.clone().into_os_string();
        p.push(suffix);
        let bytes = std::fs::read(PathBuf::from(p)).unwrap_or_default();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "the phone number is still in the database file{suffix}"
        );
    }
}

// ---- SQLite only ----

#[tokio::test]
async fn store_futures_are_send() {
    fn send<T: Send>(t: T) -> T {
        t
    }
    let s = SqliteStore::open_in_memory().unwrap();
    let id = send(s.enqueue(EntityKind::Order, "x", json!(1), t(0)))
        .await
        .unwrap();
    assert_eq!(id, OutboxId(1));
    let m = MemoryStore::new();
    assert_eq!(send(m.counts()).await.unwrap(), StoreCounts::empty());
}

#[tokio::test]
async fn sqlite_data_survives_reopen() {
    let db = TempDb::new("reopen");
    let mapping = full_mapping(EntityKind::Order, "o-1", Some(501));
    let (outbox_id, inbox_id) = {
        let s = SqliteStore::open(&db.path).unwrap();
        s.put_mapping(&mapping).await.unwrap();
        let id = s
            .enqueue(EntityKind::Order, "o-1", json!({"status_id": 3}), t(1))
            .await
            .unwrap();
        let gone = s
            .enqueue(EntityKind::Order, "o-9", json!(9), t(1))
            .await
            .unwrap();
        assert!(s.complete_outbox(gone, 1).await.unwrap());
        let inbox = s
            .inbox_insert("k", "order.change", json!({"id": 1}), t(2))
            .await
            .unwrap()
            .unwrap();
        s.set_cursor(EntityKind::Order, "updated", "c1", t(3))
            .await
            .unwrap();
        s.log_conflict(&conflict(t(4), EntityKind::Order, "o-1", "status_id"))
            .await
            .unwrap();
        s.log_audit(&audit(t(5), "o-1", "pushed")).await.unwrap();
        (id, inbox)
        // Dropped here: the connection closes.
    };
    assert!(db.path.exists());

    let s = SqliteStore::open(&db.path).unwrap();
    assert_eq!(
        s.get_mapping(EntityKind::Order, "o-1").await.unwrap(),
        Some(mapping)
    );
    let due = s.due_outbox(t(10), 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(
        (due[0].id, due[0].payload.clone()),
        (outbox_id, json!({"status_id": 3}))
    );
    let pending = s.inbox_pending(10).await.unwrap();
    assert_eq!((pending.len(), pending[0].id), (1, inbox_id));
    assert_eq!(
        s.inbox_insert("k", "order.change", json!({"id": 1}), t(6))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.get_cursor(EntityKind::Order, "updated")
            .await
            .unwrap()
            .as_deref(),
        Some("c1")
    );
    assert_eq!(
        s.list_conflicts(None, 10).await.unwrap(),
        vec![conflict(t(4), EntityKind::Order, "o-1", "status_id")]
    );
    assert_eq!(
        s.list_audit(10).await.unwrap(),
        vec![audit(t(5), "o-1", "pushed")]
    );
    // Ids keep growing across restarts, even past removed rows.
    let next = s
        .enqueue(EntityKind::Order, "o-2", json!(2), t(7))
        .await
        .unwrap();
    assert_eq!(next, OutboxId(outbox_id.0 + 2));
}

#[tokio::test]
async fn sqlite_migrations_are_idempotent() {
    let versions: Vec<i64> = super::sqlite::test_support::versions();
    assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());

    let db = TempDb::new("migrate");
    let s = SqliteStore::open(&db.path).unwrap();
    assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
    s.set_cursor(EntityKind::Stock, "full", "done", t(0))
        .await
        .unwrap();
    drop(s);
    // Reopening an up-to-date file runs no step again (a rerun would fail on CREATE TABLE).
    for _ in 0..2 {
        let s = SqliteStore::open(&db.path).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(
            s.get_cursor(EntityKind::Stock, "full")
                .await
                .unwrap()
                .as_deref(),
            Some("done")
        );
    }
    let raw = rusqlite::Connection::open(&db.path).unwrap();
    let version: i64 = raw
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let tables: Vec<String> = raw
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        tables,
        [
            "audit",
            "conflicts",
            "cursors",
            "inbox",
            "mappings",
            "outbox"
        ]
    );
    let indexes: i64 = raw
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(indexes, 10);
}

fn count(conn: &rusqlite::Connection, name: &str) -> i64 {
    conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE name = ?1",
        [name],
        |r| r.get(0),
    )
    .unwrap()
}

#[tokio::test]
async fn sqlite_migration_steps_are_atomic() {
    let mut conn = rusqlite::Connection::open_in_memory().unwrap();
    let broken = [
        (1, "CREATE TABLE a (x INTEGER);"),
        (2, "CREATE TABLE b (x INTEGER); CREATE TABLE broken ("),
    ];
    let err = migrate_steps(&mut conn, &broken).unwrap_err();
    assert!(
        matches!(&err, StoreError::Backend(m) if m.contains("schema version 2")),
        "{err:?}"
    );
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 1);
    assert_eq!((count(&conn, "a"), count(&conn, "b")), (1, 0));

    let fixed = [
        (1, "CREATE TABLE a (x INTEGER);"),
        (2, "CREATE TABLE b (x INTEGER);"),
    ];
    migrate_steps(&mut conn, &fixed).unwrap();
    migrate_steps(&mut conn, &fixed).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 2);
    assert_eq!(count(&conn, "b"), 1);
}

#[tokio::test]
async fn sqlite_newer_schema_is_refused() {
    let db = TempDb::new("newer");
    drop(SqliteStore::open(&db.path).unwrap());
    {
        let raw = rusqlite::Connection::open(&db.path).unwrap();
        raw.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    let err = SqliteStore::open(&db.path).unwrap_err();
    match &err {
        StoreError::NewerSchema { found, supported } => {
            assert_eq!((*found, *supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    assert!(
        err.to_string().contains("newer than the supported version"),
        "{err}"
    );
    let raw = rusqlite::Connection::open(&db.path).unwrap();
    let version: i64 = raw
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION + 1, "the file is left untouched");
}

#[tokio::test]
async fn sqlite_runs_wal_with_full_sync() {
    let db = TempDb::new("pragmas");
    let s = SqliteStore::open(&db.path).unwrap();
    assert_eq!(s.pragma_text("journal_mode").unwrap(), "wal");
    assert_eq!(s.pragma_text("synchronous").unwrap(), "2", "FULL");
    assert_eq!(s.pragma_text("foreign_keys").unwrap(), "1");
    assert_eq!(s.pragma_text("busy_timeout").unwrap(), "5000");
    assert_eq!(
        s.pragma_text("secure_delete").unwrap(),
        "1",
        "secure_delete=ON"
    );
    // WAL is a property of the file: another connection sees it too.
    let raw = rusqlite::Connection::open(&db.path).unwrap();
    let mode: String = raw
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn sqlite_corrupt_rows_are_reported_without_data() {
    let db = TempDb::new("corrupt");
    let s = SqliteStore::open(&db.path).unwrap();
    {
        let raw = rusqlite::Connection::open(&db.path).unwrap();
        raw.execute(
            "INSERT INTO outbox (kind, local_id, payload, next_attempt_at, created_at) \
             VALUES ('order', 'o-1', '{\"phone\": \"+380501234567\"', 0, 0)",
            [],
        )
        .unwrap();
        raw.execute(
            "INSERT INTO mappings (kind, local_id, state) VALUES ('planet', 'secret-id', 'synced')",
            [],
        )
        .unwrap();
    }
    let err = s.due_outbox(t(0), 10).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(
        msg.contains("invalid JSON") && !msg.contains("380501234567"),
        "{msg}"
    );
    let err = s.counts().await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(
        msg.contains("unknown entity kind") && !msg.contains("planet"),
        "{msg}"
    );
}

// ---- inbox: grouped intake (webhook receiver) ----

fn new_item(key: &str, dedupe: InboxDedupe) -> NewInboxItem {
    NewInboxItem {
        dedupe_key: key.into(),
        event: "stock".into(),
        payload: json!([{"offer_id": 1, "in_stock": key.len()}]),
        dedupe,
    }
}

fn latest(since: DateTime<Utc>) -> InboxDedupe {
    InboxDedupe::Latest {
        stream: "stock:a:".into(),
        since,
    }
}

async fn inbox_batch_dedupes_by_rule(s: &impl Store) {
    // One call, several items: ids in input order, a duplicate inside the same group.
    let ids = s
        .inbox_insert_batch(
            &[
                new_item("order:1:2", InboxDedupe::Stored),
                new_item("order:1:3", InboxDedupe::Stored),
                new_item("order:1:2", InboxDedupe::Stored),
            ],
            t(0),
        )
        .await
        .unwrap();
    assert!(
        ids[0].is_some() && ids[1].is_some() && ids[2].is_none(),
        "{ids:?}"
    );
    assert!(ids[0] < ids[1]);
    assert_eq!(s.inbox_pending(10).await.unwrap().len(), 2);
    // `Stored` keys stay duplicates for as long as the row is kept.
    let again = s
        .inbox_insert_batch(&[new_item("order:1:2", InboxDedupe::Stored)], t(9_000))
        .await
        .unwrap();
    assert_eq!(again, vec![None]);

    // `Latest`: 118 -> 118 (redelivery) -> 117 -> 118 (the level came back) -> 118 (redelivery).
    let k118 = "stock:a:118";
    let k117 = "stock:a:117";
    let first = s
        .inbox_insert_batch(&[new_item(k118, latest(t(0)))], t(10))
        .await
        .unwrap();
    assert!(first[0].is_some());
    let redelivered = s
        .inbox_insert_batch(&[new_item(k118, latest(t(5)))], t(20))
        .await
        .unwrap();
    assert_eq!(redelivered, vec![None], "a redelivery within the window");
    let down = s
        .inbox_insert_batch(&[new_item(k117, latest(t(15)))], t(30))
        .await
        .unwrap();
    assert!(down[0].is_some());
    let back = s
        .inbox_insert_batch(&[new_item(k118, latest(t(25)))], t(40))
        .await
        .unwrap();
    assert!(back[0].is_some(), "a level that returns is new");
    assert!(back[0] > down[0]);
    let again = s
        .inbox_insert_batch(&[new_item(k118, latest(t(35)))], t(50))
        .await
        .unwrap();
    assert_eq!(again, vec![None]);
    // Outside the window the same last body is stored again.
    let late = s
        .inbox_insert_batch(&[new_item(k118, latest(t(45)))], t(90))
        .await
        .unwrap();
    assert!(late[0].is_some(), "received at 40, window from 45");
    // Every delivery is kept; the earlier rows under retired keys.
    let pending = s.inbox_pending(100).await.unwrap();
    let stock: Vec<&InboxItem> = pending
        .iter()
        .filter(|i| i.dedupe_key.starts_with("stock:"))
        .collect();
    assert_eq!(stock.len(), 4, "{stock:?}");
    assert_eq!(stock.iter().filter(|i| i.dedupe_key == k118).count(), 1);
    assert_eq!(stock.last().unwrap().dedupe_key, k118);
    assert!(stock[0].dedupe_key.starts_with("stock:a:118#"), "{stock:?}");
    // Another stream is independent of this one.
    let other = s
        .inbox_insert_batch(
            &[NewInboxItem {
                dedupe: InboxDedupe::Latest {
                    stream: "stock:b:".into(),
                    since: t(0),
                },
                ..new_item("stock:b:118", latest(t(0)))
            }],
            t(100),
        )
        .await
        .unwrap();
    assert!(other[0].is_some());
    let counts = s.counts().await.unwrap();
    assert_eq!(counts.inbox_backlog, 7);
}

mod inbox_batch {
    #[tokio::test]
    async fn memory() {
        super::inbox_batch_dedupes_by_rule(&super::MemoryStore::new()).await;
    }

    #[tokio::test]
    async fn sqlite() {
        super::inbox_batch_dedupes_by_rule(&super::SqliteStore::open_in_memory().unwrap()).await;
    }

    #[tokio::test]
    async fn sqlite_file() {
        let db = super::TempDb::new("inbox_batch");
        let store = super::SqliteStore::open(&db.path).unwrap();
        super::inbox_batch_dedupes_by_rule(&store).await;
        drop(store);
    }
}
