//! The backend-agnostic store conformance suite: every [`Store`] backend must pass it.
//!
//! Public behind the feature `conformance`, so that a backend outside this crate runs the same
//! checks as [`MemoryStore`](super::MemoryStore), [`SqliteStore`](super::SqliteStore) and the
//! PostgreSQL store. Each check is an `async fn` taking a **fresh, empty** store;
//! [`store_conformance_tests!`](crate::store_conformance_tests) turns all of them into
//! `#[test]` functions:
//!
//! ```ignore
//! mod my_backend {
//!     keycrm_sync::store_conformance_tests!(|| async { MyStore::connect_fresh().await });
//! }
//! ```
//!
//! The factory returns a [`Subject`]: any `Store + Clone`, or a [`Guarded`] store that keeps a
//! resource (a temporary file, a schema) alive until the check is done. The checks panic on the
//! first difference, like `assert!`.

use std::future::Future;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{Value, json};

use super::{AuditEntry, ConflictRecord, Mapping, Store, SyncState};
use crate::model::{EntityKind, Fields, Snapshot};

mod inbox;
mod logs;
mod mappings;
mod outbox;

pub use inbox::*;
pub use logs::*;
pub use mappings::*;
pub use outbox::*;

/// What a conformance factory returns: a fresh store, possibly with a guard kept alive while
/// the check runs.
pub trait Subject {
    /// The store under test.
    type Store: Store + Clone;
    /// The store under test.
    fn store(&self) -> &Self::Store;
}

impl<S: Store + Clone> Subject for S {
    type Store = S;
    fn store(&self) -> &S {
        self
    }
}

/// A store and a guard (a temporary file, a schema to drop) that lives as long as the store
/// is tested.
#[derive(Debug)]
pub struct Guarded<S, G> {
    /// The store under test.
    pub store: S,
    /// Dropped after the check.
    pub guard: G,
}

impl<S: Store + Clone, G> Subject for Guarded<S, G> {
    type Store = S;
    fn store(&self) -> &S {
        &self.store
    }
}

/// Runs a check on a fresh single-threaded runtime with I/O and time enabled (what the
/// generated tests use).
pub fn block_on<F: Future>(check: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime for the conformance check")
        .block_on(check)
}

/// Generates one `#[test]` per conformance check, each on a fresh store made by the factory
/// (`|| async { .. }` returning a [`Subject`](crate::store::conformance::Subject)).
/// Needs the feature `conformance` outside this crate.
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::store_conformance_tests!(@each [$make]
            mappings_round_trip,
            mapping_in_flight_note_round_trips,
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
            inbox_batch_dedupes_by_rule,
        );
    };
    (@each [$make:expr] $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                $crate::store::conformance::block_on(async {
                    let subject = ($make)().await;
                    $crate::store::conformance::$check(
                        $crate::store::conformance::Subject::store(&subject),
                    )
                    .await;
                });
            }
        )*
    };
}

// ---- fixtures ----

/// A fixed instant `secs` seconds after 2025-01-01T00:00:00Z.
pub fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap() + Duration::seconds(secs)
}

/// A base snapshot with a nested field, a decimal line quantity and a null.
pub fn snapshot() -> Snapshot {
    let mut fields = Fields::new();
    fields.insert("status_id".into(), json!(3));
    fields.insert("shipping.tracking_code".into(), json!("TTN-1"));
    fields.insert("lines.SKU-1.quantity".into(), json!(2.5));
    fields.insert("note".into(), Value::Null);
    Snapshot::new(fields, Some(t(10) + Duration::microseconds(123_456)))
}

/// A synced mapping with every field set.
pub fn full_mapping(kind: EntityKind, local_id: &str, remote_id: Option<i64>) -> Mapping {
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
        in_flight: None,
    }
}

/// A conflict-log entry of `field` of a record.
pub fn conflict(
    at: DateTime<Utc>,
    kind: EntityKind,
    local_id: &str,
    field: &str,
) -> ConflictRecord {
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

/// An audit entry of an order.
pub fn audit(at: DateTime<Utc>, local_id: &str, action: &str) -> AuditEntry {
    AuditEntry {
        at,
        kind: EntityKind::Order,
        local_id: local_id.into(),
        action: action.into(),
        detail: "d".into(),
    }
}
