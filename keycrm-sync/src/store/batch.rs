//! Writes grouped into one transaction ([`Store::write_batch`]).

use chrono::{DateTime, Utc};
use serde_json::Value;

#[cfg(doc)]
use super::Store;
use super::{AuditEntry, ConflictRecord, Mapping, OutboxId};
use crate::model::EntityKind;

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
    pub(super) ops: Vec<WriteOp>,
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
