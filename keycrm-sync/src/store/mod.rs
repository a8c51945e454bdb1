//! The engine's durable state behind one trait: id mappings, the outbox of local changes, the
//! inbox of received webhooks, pull cursors, and the conflict and audit logs.
//!
//! Three backends ship here:
//!
//! - [`SqliteStore`]: the embedded default (bundled SQLite, WAL, `synchronous=FULL`), one file per
//!   engine. A committed write survives a crash, so the engine may acknowledge a webhook or report a
//!   local change as accepted as soon as the store call returns. The connection lives on its own
//!   thread: no call blocks the async runtime. One engine per file: a second store opening a file
//!   in use fails with [`StoreError::InUse`].
//! - `PostgresStore` (feature `postgres`): one database shared by several engine instances;
//!   outbox items and inbox rows are claimed with `FOR UPDATE SKIP LOCKED` and leased to one
//!   instance at a time.
//! - [`MemoryStore`]: everything in memory, for tests and dry runs.
//!
//! Every backend passes the same conformance suite (`store::conformance`, public with the
//! feature `conformance`). The [`Store`] trait is asynchronous so that a pooled backend can
//! implement it without changing callers. The store never reads the clock:
//! every method where time matters takes `now` from the caller, which keeps tests deterministic.
//!
//! Timestamps are kept with microsecond precision by every backend (finer parts are truncated).
//!
//! # Grouped writes
//!
//! [`Store::write_batch`] applies a [`WriteBatch`] (mappings, outbox, cursors, conflict and audit
//! entries) in one transaction. The engine gathers the writes of a page of a reconciliation pass
//! into one batch: one commit, and on SQLite one `fsync`, per page instead of per record.
//!
//! # Retention
//!
//! [`Store::purge`] removes processed, ignored and failed webhooks, conflicts and audit entries
//! older than the retention period; [`Store::forget_personal_conflicts`] drops a tombstoned
//! record's personal values (see [`is_personal_field`]) from the conflict log at once. SQLite
//! runs with `secure_delete`, so removed rows do not linger in free pages of the file.
//!
//! # Outbox protocol
//!
//! A local change is written with [`Store::enqueue`] before any request is made. There is at most
//! one live (not dead-lettered) item per record: enqueueing again replaces the payload of the live
//! item and bumps its [`OutboxItem::revision`]. A worker takes [`Store::due_outbox`] items, sends
//! them, then calls [`Store::complete_outbox`] or [`Store::fail_outbox`] with the revision it sent;
//! when a newer payload arrived meanwhile, the call changes nothing and the newer payload stays due,

use std::future::Future;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::model::EntityKind;

mod batch;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod encode;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod sqlite;
#[cfg(test)]
mod tests;
mod types;

pub use batch::{WriteBatch, WriteOp};
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::{
    DEFAULT_CLAIM_LIMIT, DEFAULT_LEASE, POSTGRES_SCHEMA_VERSION, PostgresQuota, PostgresStore,
    PostgresStoreBuilder,
};
pub use sqlite::{SCHEMA_VERSION, SqliteStore};
pub use types::{
    AuditEntry, ConflictRecord, InboxDedupe, InboxId, InboxItem, InboxStatus, KindCounts, Mapping,
    NewInboxItem, OutboxId, OutboxItem, PurgeReport, StoreCounts, SyncState,
};

/// How long logs (processed, ignored and failed inbox rows, conflicts, audit entries) are kept
/// by default: 90 days.
pub const DEFAULT_RETENTION: chrono::Duration = chrono::Duration::days(90);

/// Errors of a [`Store`]. Messages never contain payloads or other customer data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed (I/O, locking, SQL).
    #[error("store backend error: {0}")]
    Backend(String),
    /// Stored data could not be read back (bad JSON, unknown enum value, bad timestamp).
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    /// [`Store::put_mapping`] was given a remote id already mapped to another local record.
    #[error("remote id {remote_id} of kind {kind} is already mapped to another local record")]
    DuplicateRemoteId {
        /// The entity kind.
        kind: EntityKind,
        /// The KeyCRM id that is already taken.
        remote_id: i64,
    },
    /// The SQLite file is already open in another store (this process or another one): one
    /// engine per file, so that no outbox item is sent twice. Stop the other engine, or use
    /// the PostgreSQL store to run several instances.
    #[error("the SQLite store {path} is already in use by another engine (lock file held)")]
    InUse {
        /// The database file.
        path: String,
    },
    /// The database was written by a newer version of this crate; it is not opened so that
    /// nothing this version does not understand gets damaged.
    #[error(
        "store schema version {found} is newer than the supported version {supported}; \
         upgrade keycrm-sync"
    )]
    NewerSchema {
        /// The schema version found in the database.
        found: i64,
        /// The newest schema version this build knows.
        supported: i64,
    },
}

/// Whether a canonical field of `kind` holds personal data that must not outlive its record:
/// every field of a buyer, and the buyer and shipping fields of an order (`buyer.*`,
/// `shipping.*`: names, phones, e-mails, addresses, tracking codes).
pub fn is_personal_field(kind: EntityKind, field: &str) -> bool {
    match kind {
        EntityKind::Buyer => true,
        EntityKind::Order => field.starts_with("buyer.") || field.starts_with("shipping."),
        EntityKind::Product | EntityKind::Offer | EntityKind::Stock => false,
    }
}

/// The engine's durable state. Every method is one atomic operation: it either happens
/// completely (and, for durable backends, survives a crash once it returns) or not at all.
///
/// Methods return `impl Future + Send` so the trait suits both a backend on its own thread
/// (SQLite) and pooled ones (PostgreSQL). The store never reads the clock; callers pass `now`.
pub trait Store: Send + Sync + 'static {
    // ---- id mapping ----

    /// The mapping of a host record.
    fn get_mapping(
        &self,
        kind: EntityKind,
        local_id: &str,
    ) -> impl Future<Output = Result<Option<Mapping>, StoreError>> + Send;

    /// The mapping of a KeyCRM record.
    fn get_mapping_by_remote(
        &self,
        kind: EntityKind,
        remote_id: i64,
    ) -> impl Future<Output = Result<Option<Mapping>, StoreError>> + Send;

    /// Inserts or replaces the mapping of `(mapping.kind, mapping.local_id)`.
    ///
    /// Fails with [`StoreError::DuplicateRemoteId`] (and changes nothing) when the remote id is
    /// already mapped to another local record of the same kind.
    fn put_mapping(&self, mapping: &Mapping)
    -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes the mapping of a host record; returns whether it existed.
    fn delete_mapping(
        &self,
        kind: EntityKind,
        local_id: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The mappings of a kind, optionally only those in `state`, ordered by local id.
    fn list_mappings(
        &self,
        kind: EntityKind,
        state: Option<SyncState>,
    ) -> impl Future<Output = Result<Vec<Mapping>, StoreError>> + Send;

    // ---- outbox ----

    /// Stores a local change to send. If a live item for `(kind, local_id)` exists, its payload
    /// is replaced instead (same id and `created_at`, revision + 1, attempts reset to 0, due at
    /// `now`); otherwise a new item due at `now` is added. Returns the item's id.
    fn enqueue(
        &self,
        kind: EntityKind,
        local_id: &str,
        payload: Value,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<OutboxId, StoreError>> + Send;

    /// Up to `limit` live items with `next_attempt_at <= now`, oldest (`created_at`) first.
    fn due_outbox(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<OutboxItem>, StoreError>> + Send;

    /// Removes a sent item. Returns `false` (and keeps the item) when it is gone or dead, or
    /// when its revision is no longer `revision` because a newer payload replaced the one sent.
    fn complete_outbox(
        &self,
        id: OutboxId,
        revision: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records a failed attempt: attempts + 1, the error, the next attempt time, and whether the
    /// item is now dead-lettered. Returns `false` (and changes nothing) when the item is gone or
    /// dead, or when a newer payload (another revision) replaced the one that failed.
    fn fail_outbox(
        &self,
        id: OutboxId,
        revision: i64,
        error: &str,
        next_attempt_at: DateTime<Utc>,
        dead: bool,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Dead-lettered items, optionally of one kind, oldest first.
    fn dead_letters(
        &self,
        kind: Option<EntityKind>,
    ) -> impl Future<Output = Result<Vec<OutboxItem>, StoreError>> + Send;

    /// Puts a dead letter back in the queue (attempts reset to 0, due at `now`) and returns its
    /// id. When a newer live item for the same record exists, that item already carries the
    /// latest change: the dead letter is dropped and the live item's id returned. `None` when
    /// `id` is not a dead letter.
    fn retry_dead_letter(
        &self,
        id: OutboxId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<OutboxId>, StoreError>> + Send;

    /// Drops a dead letter for good; returns whether it existed.
    fn discard_dead_letter(
        &self,
        id: OutboxId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    // ---- inbox ----

    /// Stores a received webhook as pending. Returns `None` when `dedupe_key` is already stored
    /// (a duplicate delivery; nothing is changed).
    fn inbox_insert(
        &self,
        dedupe_key: &str,
        event: &str,
        payload: Value,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<InboxId>, StoreError>> + Send;

    /// Up to `limit` pending items, oldest first.
    fn inbox_pending(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<InboxItem>, StoreError>> + Send;

    /// When the oldest pending item was received, without claiming it: for status pages and
    /// alerts, which only look. A store that claims in [`Store::inbox_pending`] (PostgreSQL's
    /// leases) must override this; the default reads through `inbox_pending(1)`, which is a
    /// plain read for single-writer stores.
    fn oldest_pending_inbox(
        &self,
    ) -> impl Future<Output = Result<Option<DateTime<Utc>>, StoreError>> + Send {
        async move {
            Ok(self
                .inbox_pending(1)
                .await?
                .into_iter()
                .next()
                .map(|item| item.received_at))
        }
    }

    /// Sets an item's status and error. `processed_at` becomes `now`, or empty when the status
    /// is [`InboxStatus::Pending`] (which puts the item back in the queue). Returns whether the
    /// item exists.
    fn inbox_mark(
        &self,
        id: InboxId,
        status: InboxStatus,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    // ---- cursors ----

    /// A named cursor of a kind (e.g. the `updated_between` high-water mark).
    fn get_cursor(
        &self,
        kind: EntityKind,
        name: &str,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// Sets a named cursor of a kind; call it only after the page it covers is durably applied.
    fn set_cursor(
        &self,
        kind: EntityKind,
        name: &str,
        value: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    // ---- conflict and audit log ----

    /// Appends to the conflict log.
    fn log_conflict(
        &self,
        record: &ConflictRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Up to `limit` conflicts, optionally of one kind, newest first (ties: last logged first).
    fn list_conflicts(
        &self,
        kind: Option<EntityKind>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ConflictRecord>, StoreError>> + Send;

    /// Appends to the audit log.
    fn log_audit(&self, entry: &AuditEntry) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Up to `limit` audit entries, newest first (ties: last logged first).
    fn list_audit(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<AuditEntry>, StoreError>> + Send;

    /// Drops the values (base, local, remote) of the conflict-log entries of a record for its
    /// personal fields (see [`is_personal_field`]), keeping the rest of each entry (field
    /// name, winner, reason, times). Called when the record is tombstoned, so that its
    /// customer data does not outlive it. Returns how many entries were changed.
    fn forget_personal_conflicts(
        &self,
        kind: EntityKind,
        local_id: &str,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    // ---- grouped writes ----

    /// Applies every write of `batch`, in order, in one transaction: either all of them
    /// happen (and, for durable backends, survive a crash once this returns) or none does.
    /// Fails like the single-write method would (e.g. [`StoreError::DuplicateRemoteId`]),
    /// and then nothing of the batch is applied. An empty batch does nothing.
    fn write_batch(&self, batch: WriteBatch)
    -> impl Future<Output = Result<(), StoreError>> + Send;

    // ---- retention and status ----

    /// Deletes processed, ignored and failed inbox rows processed before `older_than` (whole
    /// webhook bodies are customer data), and conflict and audit entries from before it.
    /// Pending inbox rows, outbox items, mappings and cursors are never purged. A purged inbox
    /// row no longer deduplicates its key.
    fn purge(
        &self,
        older_than: DateTime<Utc>,
    ) -> impl Future<Output = Result<PurgeReport, StoreError>> + Send;

    /// Counts for status reports.
    fn counts(&self) -> impl Future<Output = Result<StoreCounts, StoreError>> + Send;

    // ---- inbox: grouped intake (the webhook receiver) ----

    /// Stores received webhooks as pending in **one** atomic, durable commit (one `fsync` for
    /// the whole group), deduplicating each by its [`NewInboxItem::dedupe`] rule, in order:
    /// an item may be a duplicate of an earlier item of the same call. Returns, per item and in
    /// input order, the new id or `None` for a duplicate. Nothing is stored when it fails.
    fn inbox_insert_batch(
        &self,
        items: &[NewInboxItem],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<Option<InboxId>>, StoreError>> + Send;
}

/// The retired form of an inbox key whose row was superseded by a new row with the same key
/// (see [`InboxDedupe::Latest`]).
pub(crate) fn retired_inbox_key(key: &str, id: i64) -> String {
    format!("{key}#{id}")
}

/// Truncates a timestamp to whole microseconds, the precision every backend keeps.
pub(crate) fn truncate_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}
