//! The records the store keeps: mappings, outbox and inbox items, log entries and counts.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[cfg(doc)]
use super::Store;
use crate::model::{EntityKind, Fields, Snapshot};

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
    /// A write in flight: the fields the engine was about to make KeyCRM hold, noted before
    /// it sent an update and cleared once the update's bookkeeping is written. Left behind
    /// when the engine stopped in between; see [`Mapping::effective_base`].
    #[serde(default)]
    pub in_flight: Option<Fields>,
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
            in_flight: None,
        }
    }

    /// The base to plan KeyCRM's current record (`remote`) against.
    ///
    /// Without a note of a write in flight ([`Mapping::in_flight`]) it is [`Mapping::base`].
    /// With one, the engine stopped between an update and its bookkeeping: every field where
    /// KeyCRM holds exactly the noted value holds the engine's own write (an echo, not a
    /// KeyCRM change), so the noted value is that field's base and a host edit made since is a
    /// plain local change. Fields where KeyCRM differs from the note (the write never landed,
    /// or KeyCRM changed them since) keep the old base. A field without a value and one that
    /// is `null` are the same, as in the planner. `None` when there is no base.
    pub fn effective_base(&self, remote: &Fields) -> Option<Snapshot> {
        let mut base = self.base.clone()?;
        let Some(noted) = &self.in_flight else {
            return Some(base);
        };
        let value = |fields: &Fields, field: &str| -> Option<Value> {
            fields.get(field).filter(|v| !v.is_null()).cloned()
        };
        let fields: BTreeSet<String> = noted.keys().chain(base.fields.keys()).cloned().collect();
        for field in fields {
            let noted_value = value(noted, &field);
            if noted_value != value(remote, &field) {
                continue;
            }
            match noted_value {
                Some(v) => base.fields.insert(field, v),
                None => base.fields.remove(&field),
            };
        }
        Some(base)
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
    /// [module docs](super)). Pass it back to [`Store::complete_outbox`] and [`Store::fail_outbox`].
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
