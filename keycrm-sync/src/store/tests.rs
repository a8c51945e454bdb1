//! The conformance suite run against every backend of this crate, plus SQLite-specific tests.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::json;

use super::conformance::{Guarded, audit, conflict, full_mapping, t};
use super::sqlite::test_support::migrate_steps;
use super::*;
use crate::model::EntityKind;

mod memory_backend {
    crate::store_conformance_tests!(|| async { crate::store::MemoryStore::new() });
}

mod sqlite_backend {
    crate::store_conformance_tests!(|| async {
        crate::store::SqliteStore::open_in_memory().expect("an in-memory SQLite store")
    });
}

mod sqlite_file_backend {
    crate::store_conformance_tests!(|| async {
        let guard = super::TempDb::new("conformance");
        let store = crate::store::SqliteStore::open(&guard.path).expect("a SQLite file store");
        super::Guarded { store, guard }
    });
}

/// A database file under the temp dir with a unique name, removed (with its WAL files) on drop.
pub(super) struct TempDb {
    pub(super) path: PathBuf,
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
        for suffix in ["", "-wal", "-shm", "-journal", "-lock"] {
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

/// One engine per SQLite file: a second store on a file in use is refused with a typed error
/// (and changes nothing); once the first store and all its clones are gone, the file opens.
#[tokio::test]
async fn sqlite_second_store_on_a_file_in_use_is_refused() {
    let db = TempDb::new("single-writer");
    let first = SqliteStore::open(&db.path).unwrap();
    first
        .enqueue(EntityKind::Order, "o-1", json!(1), t(0))
        .await
        .unwrap();
    let clone = first.clone();
    let err = SqliteStore::open(&db.path).unwrap_err();
    assert!(
        matches!(&err, StoreError::InUse { path } if *path == db.path.display().to_string()),
        "{err:?}"
    );
    assert!(err.to_string().contains("already in use"), "{err}");
    drop(first);
    // A clone still holds the file.
    assert!(matches!(
        SqliteStore::open(&db.path),
        Err(StoreError::InUse { .. })
    ));
    drop(clone);
    let again = SqliteStore::open(&db.path).unwrap();
    assert_eq!(again.counts().await.unwrap().outbox_depth, 1);
    // In-memory stores have no file to share: any number of them open.
    let _a = SqliteStore::open_in_memory().unwrap();
    let _b = SqliteStore::open_in_memory().unwrap();
}

#[tokio::test]
async fn sqlite_version_1_files_gain_an_empty_in_flight_note() {
    let db = TempDb::new("in-flight");
    {
        let mut raw = rusqlite::Connection::open(&db.path).unwrap();
        migrate_steps(
            &mut raw,
            &[(1, include_str!("migrations/0001_initial.sql"))],
        )
        .unwrap();
        raw.execute(
            "INSERT INTO mappings (kind, local_id, remote_id, state) VALUES ('order', 'o-1', 7, 'synced')",
            [],
        )
        .unwrap();
    }
    let s = SqliteStore::open(&db.path).unwrap();
    assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
    let m = s
        .get_mapping(EntityKind::Order, "o-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((m.remote_id, m.in_flight), (Some(7), None));
}

/// The echo rule: where KeyCRM holds the noted value, the note is the base, so a host edit
/// stamped in the same second as KeyCRM's copy is a plain local change; where KeyCRM holds
/// something else, the old base stays and the normal conflict rules decide.
#[test]
fn the_effective_base_takes_noted_values_that_keycrm_holds() {
    use crate::model::{Fields, Snapshot};
    use crate::plan::{PlanInput, Policy, Side, plan};

    fn fields(pairs: &[(&str, serde_json::Value)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }
    let mut m = Mapping::new(EntityKind::Order, "o-1");
    m.base = Some(Snapshot::new(
        fields(&[
            ("comment", json!("old")),
            ("status", json!("new")),
            ("tracking", json!("T-1")),
        ]),
        Some(t(0)),
    ));
    let remote = Snapshot::new(
        fields(&[("comment", json!("X")), ("status", json!("Z"))]),
        Some(t(5)),
    );
    // Without a note the base is the stored one.
    assert_eq!(m.effective_base(&remote.fields), m.base.clone());
    m.in_flight = Some(fields(&[
        ("comment", json!("X")),
        ("status", json!("approved")),
        ("tracking", Value::Null),
    ]));
    let base = m.effective_base(&remote.fields).unwrap();
    assert_eq!(
        base.fields,
        fields(&[("comment", json!("X")), ("status", json!("new"))]),
        "comment and the removed tracking came back as noted; status did not"
    );
    assert_eq!(base.updated_at, Some(t(0)));

    // The host edits both, in the same second as KeyCRM's copy.
    let local = Snapshot::new(
        fields(&[("comment", json!("Y")), ("status", json!("packing"))]),
        Some(t(5)),
    );
    let policy = Policy::default();
    let planned = plan(&PlanInput {
        kind: EntityKind::Order,
        base: Some(&base),
        local: Some(&local),
        remote: Some(&remote),
        policy: &policy,
    });
    assert_eq!(planned.merged.get("comment"), Some(&json!("Y")));
    assert!(planned.conflict("comment").is_none(), "{planned:?}");
    // status: KeyCRM's Z is its own change against the old base; the tie goes to KeyCRM.
    let status = planned.conflict("status").expect("a both-changed conflict");
    assert_eq!(status.winner, Some(Side::Remote));
    assert_eq!(planned.merged.get("status"), Some(&json!("Z")));

    // No base: nothing to correct.
    m.base = None;
    assert_eq!(m.effective_base(&remote.fields), None);
}
