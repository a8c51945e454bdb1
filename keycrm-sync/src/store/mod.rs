//! The engine's durable state behind one trait: id mappings, the outbox of local changes, the
//! inbox of received webhooks, pull cursors, and the conflict and audit logs.
//!
//! Two backends ship here:
//!
//! - [`SqliteStore`]: the embedded default (bundled SQLite, WAL, `synchronous=FULL`), one file per
//!   engine. A committed write survives a crash, so the engine may acknowledge a webhook or report a
//!   local change as accepted as soon as the store call returns. The connection lives on its own
//!   thread: no call blocks the async runtime.
//! - [`MemoryStore`]: everything in memory, for tests and dry runs.
//!
//! The [`Store`] trait is asynchronous so that a pooled backend (PostgreSQL for hosts running
//! several instances) can implement it without changing callers. The store never reads the clock:
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
//! so a change made while a request was in flight is never lost.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{EntityKind, Snapshot};

mod memory;
mod sqlite;
#[cfg(test)]
mod tests;

pub use memory::MemoryStore;
pub use sqlite::{SCHEMA_VERSION, SqliteStore};

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

/// Where a mapped record stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// Both sides agree with the base snapshot.
    Synced,
    /// A change is waiting to be sent or applied.
    Pending,
    /// The last attempt failed; see [`Mapping::error`].
    Error,
}

impl SyncState {
    /// Every state.
    pub const ALL: [SyncState; 3] = [SyncState::Synced, SyncState::Pending, SyncState::Error];

    /// The stable name used in storage (`synced`, `pending`, `error`).
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::Synced => "synced",
            SyncState::Pending => "pending",
            SyncState::Error => "error",
        }
    }

    /// Parses [`SyncState::as_str`] back.
    pub fn parse(s: &str) -> Option<Self> {
        SyncState::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for SyncState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The link between a host record and its KeyCRM counterpart, with what was last agreed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mapping {
    /// The entity kind.
    pub kind: EntityKind,
    /// The host's id of the record.
    pub local_id: String,
    /// The KeyCRM id, once known. Unique per kind.
    pub remote_id: Option<i64>,
    /// Where the record stands.
    pub state: SyncState,
    /// When the record was last brought into agreement.
    pub last_sync_at: Option<DateTime<Utc>>,
    /// The last error, when `state` is [`SyncState::Error`].
    pub error: Option<String>,
    /// The [`content_hash`](crate::model::content_hash) of the base snapshot.
    pub content_hash: Option<String>,
    /// The last state written or seen on both sides (for echo suppression and three-way merges).
    pub base: Option<Snapshot>,
    /// KeyCRM's `updated_at` of the record when last seen.
    pub remote_updated_at: Option<DateTime<Utc>>,
}

impl Mapping {
    /// A new pending mapping of `local_id` with nothing else known yet.
    pub fn new(kind: EntityKind, local_id: impl Into<String>) -> Self {
        Self {
            kind,
            local_id: local_id.into(),
            remote_id: None,
            state: SyncState::Pending,
            last_sync_at: None,
            error: None,
            content_hash: None,
            base: None,
            remote_updated_at: None,
        }
    }
}

/// The id of an outbox item. Ids are never reused, even after the item is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OutboxId(pub i64);

impl fmt::Display for OutboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The id of an inbox item. Ids are never reused, even after the item is purged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InboxId(pub i64);

impl fmt::Display for InboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A local change waiting to be sent to KeyCRM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboxItem {
    /// The item's id.
    pub id: OutboxId,
    /// The entity kind.
    pub kind: EntityKind,
    /// The host's id of the changed record.
    pub local_id: String,
    /// What to send (the engine's own format).
    pub payload: Value,
    /// Starts at 1 and grows each time a newer payload replaces this one (see the
    /// [module docs](self)). Pass it back to [`Store::complete_outbox`] and [`Store::fail_outbox`].
    pub revision: i64,
    /// Failed attempts of the current payload.
    pub attempts: u32,
    /// Not to be sent before this time.
    pub next_attempt_at: DateTime<Utc>,
    /// When the first change of this item was enqueued.
    pub created_at: DateTime<Utc>,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// Dead-lettered: no longer retried until [`Store::retry_dead_letter`].
    pub dead: bool,
}

/// What became of a received webhook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InboxStatus {
    /// Stored, not processed yet.
    Pending,
    /// Applied.
    Processed,
    /// Processing failed; kept for inspection for the retention period, then purged like
    /// processed rows (its body is customer data).
    Failed,
    /// Nothing to do (an echo of our own write, an uninteresting event).
    Ignored,
}

impl InboxStatus {
    /// Every status.
    pub const ALL: [InboxStatus; 4] = [
        InboxStatus::Pending,
        InboxStatus::Processed,
        InboxStatus::Failed,
        InboxStatus::Ignored,
    ];

    /// The stable name used in storage (`pending`, `processed`, `failed`, `ignored`).
    pub fn as_str(self) -> &'static str {
        match self {
            InboxStatus::Pending => "pending",
            InboxStatus::Processed => "processed",
            InboxStatus::Failed => "failed",
            InboxStatus::Ignored => "ignored",
        }
    }

    /// Parses [`InboxStatus::as_str`] back.
    pub fn parse(s: &str) -> Option<Self> {
        InboxStatus::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for InboxStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A received webhook, stored before it is acknowledged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InboxItem {
    /// The item's id.
    pub id: InboxId,
    /// The deduplication key (KeyCRM sends no event id and retries deliveries).
    pub dedupe_key: String,
    /// The event name.
    pub event: String,
    /// The delivered body.
    pub payload: Value,
    /// When it was received.
    pub received_at: DateTime<Utc>,
    /// When it was last marked with a status other than pending.
    pub processed_at: Option<DateTime<Utc>>,
    /// What became of it.
    pub status: InboxStatus,
    /// The processing error, if any.
    pub error: Option<String>,
}

/// One overwritten field value, so that no value is ever lost silently.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConflictRecord {
    /// When the conflict was resolved.
    pub at: DateTime<Utc>,
    /// The entity kind.
    pub kind: EntityKind,
    /// The host's id of the record.
    pub local_id: String,
    /// The KeyCRM id of the record, if known.
    pub remote_id: Option<i64>,
    /// The canonical field name.
    pub field: String,
    /// The base value (`None`: the field was absent).
    pub base: Option<Value>,
    /// The local value (`None`: the field was absent).
    pub local: Option<Value>,
    /// The remote value (`None`: the field was absent).
    pub remote: Option<Value>,
    /// The side whose value was kept: `"local"` or `"remote"`.
    pub winner: String,
    /// Why that side won (policy, owner, timestamps).
    pub reason: String,
    /// When the local side changed the record.
    pub local_updated_at: Option<DateTime<Utc>>,
    /// When the remote side changed the record.
    pub remote_updated_at: Option<DateTime<Utc>>,
}

/// One entry of the audit log (what the engine did and why).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The entity kind.
    pub kind: EntityKind,
    /// The host's id of the record.
    pub local_id: String,
    /// What was done (`pushed`, `applied`, `tombstoned`, ...).
    pub action: String,
    /// Details for operators.
    pub detail: String,
}

/// How many rows [`Store::purge`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeReport {
    /// Processed, ignored or failed inbox rows.
    pub inbox: u64,
    /// Conflict log entries.
    pub conflicts: u64,
    /// Audit log entries.
    pub audit: u64,
}

/// Counts of one entity kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindCounts {
    /// Mappings in [`SyncState::Synced`].
    pub synced: u64,
    /// Mappings in [`SyncState::Pending`].
    pub pending: u64,
    /// Mappings in [`SyncState::Error`].
    pub error: u64,
    /// Dead-lettered outbox items.
    pub dead_lettered: u64,
    /// Live (not dead-lettered) outbox items.
    pub outbox: u64,
}

/// A summary of the store for status reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreCounts {
    /// Counts per kind; every kind is present, with zeros when it has no rows.
    pub per_kind: BTreeMap<EntityKind, KindCounts>,
    /// Live outbox items of every kind.
    pub outbox_depth: u64,
    /// Dead-lettered outbox items of every kind.
    pub dead_letters: u64,
    /// Inbox items waiting to be processed.
    pub inbox_backlog: u64,
    /// Inbox items whose processing failed.
    pub inbox_failed: u64,
}

impl StoreCounts {
    /// All-zero counts with every kind present.
    pub fn empty() -> Self {
        Self {
            per_kind: EntityKind::ALL
                .into_iter()
                .map(|k| (k, KindCounts::default()))
                .collect(),
            ..Self::default()
        }
    }
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

/// One write of a [`WriteBatch`]; each has the meaning of the [`Store`] method of the same
/// name.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum WriteOp {
    /// [`Store::put_mapping`].
    PutMapping(Mapping),
    /// [`Store::delete_mapping`].
    DeleteMapping {
        /// The entity kind.
        kind: EntityKind,
        /// The host's id of the record.
        local_id: String,
    },
    /// [`Store::enqueue`].
    Enqueue {
        /// The entity kind.
        kind: EntityKind,
        /// The host's id of the changed record.
        local_id: String,
        /// What to send.
        payload: Value,
        /// The time of the change.
        now: DateTime<Utc>,
    },
    /// [`Store::complete_outbox`] (which changes nothing when the revision no longer
    /// matches).
    CompleteOutbox {
        /// The item's id.
        id: OutboxId,
        /// The revision that was sent.
        revision: i64,
    },
    /// [`Store::set_cursor`].
    SetCursor {
        /// The entity kind.
        kind: EntityKind,
        /// The cursor's name.
        name: String,
        /// The cursor's value.
        value: String,
        /// The time of the change.
        now: DateTime<Utc>,
    },
    /// [`Store::log_conflict`].
    LogConflict(ConflictRecord),
    /// [`Store::log_audit`].
    LogAudit(AuditEntry),
    /// [`Store::forget_personal_conflicts`].
    ForgetPersonalConflicts {
        /// The entity kind.
        kind: EntityKind,
        /// The host's id of the record.
        local_id: String,
    },
}

/// Writes applied together by [`Store::write_batch`]: in order, in one transaction, all or
/// none. A reconciliation pass gathers a page's mapping, outbox, cursor, conflict and audit
/// writes in one batch, so that a page costs one commit (one `fsync` on SQLite) instead of one per write.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WriteBatch {
    ops: Vec<WriteOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a write.
    pub fn push(&mut self, op: WriteOp) -> &mut Self {
        self.ops.push(op);
        self
    }

    /// Appends [`WriteOp::PutMapping`].
    pub fn put_mapping(&mut self, mapping: Mapping) -> &mut Self {
        self.push(WriteOp::PutMapping(mapping))
    }

    /// Appends [`WriteOp::DeleteMapping`].
    pub fn delete_mapping(&mut self, kind: EntityKind, local_id: impl Into<String>) -> &mut Self {
        self.push(WriteOp::DeleteMapping {
            kind,
            local_id: local_id.into(),
        })
    }

    /// Appends [`WriteOp::Enqueue`].
    pub fn enqueue(
        &mut self,
        kind: EntityKind,
        local_id: impl Into<String>,
        payload: Value,
        now: DateTime<Utc>,
    ) -> &mut Self {
        self.push(WriteOp::Enqueue {
            kind,
            local_id: local_id.into(),
            payload,
            now,
        })
    }

    /// Appends [`WriteOp::CompleteOutbox`].
    pub fn complete_outbox(&mut self, id: OutboxId, revision: i64) -> &mut Self {
        self.push(WriteOp::CompleteOutbox { id, revision })
    }

    /// Appends [`WriteOp::SetCursor`].
    pub fn set_cursor(
        &mut self,
        kind: EntityKind,
        name: impl Into<String>,
        value: impl Into<String>,
        now: DateTime<Utc>,
    ) -> &mut Self {
        self.push(WriteOp::SetCursor {
            kind,
            name: name.into(),
            value: value.into(),
            now,
        })
    }

    /// Appends [`WriteOp::LogConflict`].
    pub fn log_conflict(&mut self, record: ConflictRecord) -> &mut Self {
        self.push(WriteOp::LogConflict(record))
    }

    /// Appends [`WriteOp::LogAudit`].
    pub fn log_audit(&mut self, entry: AuditEntry) -> &mut Self {
        self.push(WriteOp::LogAudit(entry))
    }

    /// Appends [`WriteOp::ForgetPersonalConflicts`].
    pub fn forget_personal_conflicts(
        &mut self,
        kind: EntityKind,
        local_id: impl Into<String>,
    ) -> &mut Self {
        self.push(WriteOp::ForgetPersonalConflicts {
            kind,
            local_id: local_id.into(),
        })
    }

    /// The writes, in order.
    pub fn ops(&self) -> &[WriteOp] {
        &self.ops
    }

    /// Takes the writes out, leaving the batch empty.
    pub fn take(&mut self) -> WriteBatch {
        std::mem::take(self)
    }

    /// How many writes the batch holds.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch holds no write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// What the batch does to the mapping of `(kind, local_id)`: `None` when it does not touch
    /// it, `Some(None)` when it deletes it, `Some(Some(m))` when it writes `m` (the last write
    /// counts). Lets a caller that gathers writes read its own.
    pub fn mapping(&self, kind: EntityKind, local_id: &str) -> Option<Option<&Mapping>> {
        self.ops.iter().rev().find_map(|op| match op {
            WriteOp::PutMapping(m) if m.kind == kind && m.local_id == local_id => Some(Some(m)),
            WriteOp::DeleteMapping {
                kind: k,
                local_id: l,
            } if *k == kind && l == local_id => Some(None),
            _ => None,
        })
    }

    /// The mapping the batch writes last for the KeyCRM record `(kind, remote_id)`, if any
    /// (and if no later write of the batch moves or deletes it).
    pub fn mapping_by_remote(&self, kind: EntityKind, remote_id: i64) -> Option<&Mapping> {
        self.ops.iter().rev().find_map(|op| match op {
            WriteOp::PutMapping(m) if m.kind == kind && m.remote_id == Some(remote_id) => self
                .mapping(kind, &m.local_id)
                .flatten()
                .filter(|last| last.remote_id == Some(remote_id)),
            _ => None,
        })
    }
}

impl From<WriteOp> for WriteBatch {
    fn from(op: WriteOp) -> Self {
        Self { ops: vec![op] }
    }
}

impl From<Vec<WriteOp>> for WriteBatch {
    fn from(ops: Vec<WriteOp>) -> Self {
        Self { ops }
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

/// How [`Store::inbox_insert_batch`] decides that a new inbox item is a duplicate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InboxDedupe {
    /// A duplicate while any row with the same key is stored (until it is purged). For events
    /// whose key names a change (event, record id, status, change times).
    Stored,
    /// A duplicate only when the newest row of `stream` (rows whose key starts with `stream`,
    /// by id) has the same key and was received at or after `since`. For absolute values that
    /// may legitimately come back (a stock level 118, then 117, then 118 again): a redelivery
    /// of the last delivery within the retry window is a duplicate, a returning value is not.
    ///
    /// When a key is stored again, the earlier row keeps its history under a retired key
    /// (`<key>#<id>`, still in the stream). The item's key must start with `stream`.
    Latest {
        /// The key prefix shared by every delivery about the same records.
        stream: String,
        /// The start of the redelivery window.
        since: DateTime<Utc>,
    },
}

/// A webhook to store with [`Store::inbox_insert_batch`].
#[derive(Clone, Debug, PartialEq)]
pub struct NewInboxItem {
    /// The deduplication key.
    pub dedupe_key: String,
    /// The event name.
    pub event: String,
    /// The delivered body.
    pub payload: Value,
    /// How duplicates are recognised.
    pub dedupe: InboxDedupe,
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
