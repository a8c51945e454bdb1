//! The in-memory backend.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{
    AuditEntry, ConflictRecord, InboxDedupe, InboxId, InboxItem, InboxStatus, Mapping,
    NewInboxItem, OutboxId, OutboxItem, PurgeReport, Store, StoreCounts, StoreError, SyncState,
    WriteBatch, WriteOp, is_personal_field, retired_inbox_key, truncate_micros,
};
use crate::model::EntityKind;

/// A [`Store`] kept in memory, for tests and dry runs. Nothing survives the process.
///
/// Clones share the same state. It follows the same rules as [`SqliteStore`](super::SqliteStore),
/// including microsecond timestamps and never-reused ids.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    mappings: BTreeMap<(EntityKind, String), Mapping>,
    outbox: BTreeMap<i64, OutboxItem>,
    last_outbox_id: i64,
    inbox: BTreeMap<i64, InboxItem>,
    inbox_keys: BTreeMap<String, i64>,
    last_inbox_id: i64,
    cursors: BTreeMap<(EntityKind, String), (String, DateTime<Utc>)>,
    conflicts: Vec<(i64, ConflictRecord)>,
    last_conflict_id: i64,
    audit: Vec<(i64, AuditEntry)>,
    last_audit_id: i64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        // A panic while holding the lock may have left a half-applied change behind: refuse.
        self.state
            .lock()
            .map_err(|_| StoreError::Backend("memory store lock poisoned".into()))
    }
}

impl State {
    /// The mapping holding `remote_id` for another local record than `local_id`, if any.
    fn remote_taken(&self, kind: EntityKind, remote_id: i64, local_id: &str) -> bool {
        self.mappings
            .values()
            .any(|m| m.kind == kind && m.remote_id == Some(remote_id) && m.local_id != local_id)
    }

    fn put_mapping(&mut self, mapping: Mapping) -> Result<(), StoreError> {
        if let Some(remote_id) = mapping.remote_id
            && self.remote_taken(mapping.kind, remote_id, &mapping.local_id)
        {
            return Err(StoreError::DuplicateRemoteId {
                kind: mapping.kind,
                remote_id,
            });
        }
        let mut stored = mapping;
        stored.last_sync_at = micros_opt(stored.last_sync_at);
        stored.remote_updated_at = micros_opt(stored.remote_updated_at);
        self.mappings
            .insert((stored.kind, stored.local_id.clone()), stored);
        Ok(())
    }

    /// Fails as the first failing mapping write of `batch` would, without changing anything:
    /// replays the batch's mapping writes on the remote ids they touch.
    fn check_mappings(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        // (kind, local_id) -> remote id as the batch leaves it so far (None: no remote id or
        // deleted).
        let mut changed: BTreeMap<(EntityKind, &str), Option<i64>> = BTreeMap::new();
        for op in batch.ops() {
            match op {
                WriteOp::PutMapping(m) => {
                    if let Some(remote_id) = m.remote_id {
                        let in_batch = changed.iter().any(|((k, l), r)| {
                            *k == m.kind && *l != m.local_id && *r == Some(remote_id)
                        });
                        let stored = self.mappings.values().any(|s| {
                            s.kind == m.kind
                                && s.remote_id == Some(remote_id)
                                && s.local_id != m.local_id
                                && !changed.contains_key(&(s.kind, s.local_id.as_str()))
                        });
                        if in_batch || stored {
                            return Err(StoreError::DuplicateRemoteId {
                                kind: m.kind,
                                remote_id,
                            });
                        }
                    }
                    changed.insert((m.kind, m.local_id.as_str()), m.remote_id);
                }
                WriteOp::DeleteMapping { kind, local_id } => {
                    changed.insert((*kind, local_id.as_str()), None);
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn enqueue(
        &mut self,
        kind: EntityKind,
        local_id: &str,
        payload: Value,
        now: DateTime<Utc>,
    ) -> OutboxId {
        let now = truncate_micros(now);
        if let Some(item) = self
            .outbox
            .values_mut()
            .find(|i| !i.dead && i.kind == kind && i.local_id == local_id)
        {
            item.payload = payload;
            item.revision += 1;
            item.attempts = 0;
            item.next_attempt_at = now;
            return item.id;
        }
        self.last_outbox_id += 1;
        let id = OutboxId(self.last_outbox_id);
        self.outbox.insert(
            id.0,
            OutboxItem {
                id,
                kind,
                local_id: local_id.to_owned(),
                payload,
                revision: 1,
                attempts: 0,
                next_attempt_at: now,
                created_at: now,
                last_error: None,
                dead: false,
            },
        );
        id
    }

    fn complete_outbox(&mut self, id: OutboxId, revision: i64) -> bool {
        match self.outbox.get(&id.0) {
            Some(item) if !item.dead && item.revision == revision => {
                self.outbox.remove(&id.0);
                true
            }
            _ => false,
        }
    }

    fn set_cursor(&mut self, kind: EntityKind, name: &str, value: &str, now: DateTime<Utc>) {
        self.cursors.insert(
            (kind, name.to_owned()),
            (value.to_owned(), truncate_micros(now)),
        );
    }

    fn log_conflict(&mut self, record: ConflictRecord) {
        let mut stored = record;
        stored.at = truncate_micros(stored.at);
        stored.local_updated_at = micros_opt(stored.local_updated_at);
        stored.remote_updated_at = micros_opt(stored.remote_updated_at);
        self.last_conflict_id += 1;
        let id = self.last_conflict_id;
        self.conflicts.push((id, stored));
    }

    fn log_audit(&mut self, entry: AuditEntry) {
        let mut stored = entry;
        stored.at = truncate_micros(stored.at);
        self.last_audit_id += 1;
        let id = self.last_audit_id;
        self.audit.push((id, stored));
    }

    fn forget_personal_conflicts(&mut self, kind: EntityKind, local_id: &str) -> u64 {
        let mut changed = 0;
        for (_, c) in &mut self.conflicts {
            if c.kind == kind
                && c.local_id == local_id
                && is_personal_field(kind, &c.field)
                && (c.base.is_some() || c.local.is_some() || c.remote.is_some())
            {
                c.base = None;
                c.local = None;
                c.remote = None;
                changed += 1;
            }
        }
        changed
    }
}

fn micros_opt(t: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    t.map(truncate_micros)
}

fn sorted_oldest_first(mut items: Vec<OutboxItem>) -> Vec<OutboxItem> {
    items.sort_by_key(|i| (i.created_at, i.id));
    items
}

impl Store for MemoryStore {
    async fn get_mapping(
        &self,
        kind: EntityKind,
        local_id: &str,
    ) -> Result<Option<Mapping>, StoreError> {
        Ok(self
            .lock()?
            .mappings
            .get(&(kind, local_id.to_owned()))
            .cloned())
    }

    async fn get_mapping_by_remote(
        &self,
        kind: EntityKind,
        remote_id: i64,
    ) -> Result<Option<Mapping>, StoreError> {
        let state = self.lock()?;
        Ok(state
            .mappings
            .values()
            .find(|m| m.kind == kind && m.remote_id == Some(remote_id))
            .cloned())
    }

    async fn put_mapping(&self, mapping: &Mapping) -> Result<(), StoreError> {
        self.lock()?.put_mapping(mapping.clone())
    }

    async fn delete_mapping(&self, kind: EntityKind, local_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .lock()?
            .mappings
            .remove(&(kind, local_id.to_owned()))
            .is_some())
    }

    async fn list_mappings(
        &self,
        kind: EntityKind,
        state: Option<SyncState>,
    ) -> Result<Vec<Mapping>, StoreError> {
        let guard = self.lock()?;
        Ok(guard
            .mappings
            .values()
            .filter(|m| m.kind == kind && state.is_none_or(|s| m.state == s))
            .cloned()
            .collect())
    }

    async fn enqueue(
        &self,
        kind: EntityKind,
        local_id: &str,
        payload: Value,
        now: DateTime<Utc>,
    ) -> Result<OutboxId, StoreError> {
        Ok(self.lock()?.enqueue(kind, local_id, payload, now))
    }

    async fn due_outbox(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let state = self.lock()?;
        let due = state
            .outbox
            .values()
            .filter(|i| !i.dead && i.next_attempt_at <= now)
            .cloned()
            .collect();
        let mut due = sorted_oldest_first(due);
        due.truncate(limit);
        Ok(due)
    }

    async fn complete_outbox(&self, id: OutboxId, revision: i64) -> Result<bool, StoreError> {
        Ok(self.lock()?.complete_outbox(id, revision))
    }

    async fn fail_outbox(
        &self,
        id: OutboxId,
        revision: i64,
        error: &str,
        next_attempt_at: DateTime<Utc>,
        dead: bool,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock()?;
        match state.outbox.get_mut(&id.0) {
            Some(item) if !item.dead && item.revision == revision => {
                item.attempts = item.attempts.saturating_add(1);
                item.last_error = Some(error.to_owned());
                item.next_attempt_at = truncate_micros(next_attempt_at);
                item.dead = dead;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn dead_letters(&self, kind: Option<EntityKind>) -> Result<Vec<OutboxItem>, StoreError> {
        let state = self.lock()?;
        let dead = state
            .outbox
            .values()
            .filter(|i| i.dead && kind.is_none_or(|k| i.kind == k))
            .cloned()
            .collect();
        Ok(sorted_oldest_first(dead))
    }

    async fn retry_dead_letter(
        &self,
        id: OutboxId,
        now: DateTime<Utc>,
    ) -> Result<Option<OutboxId>, StoreError> {
        let mut state = self.lock()?;
        let Some((kind, local_id)) = state
            .outbox
            .get(&id.0)
            .filter(|i| i.dead)
            .map(|i| (i.kind, i.local_id.clone()))
        else {
            return Ok(None);
        };
        let live = state
            .outbox
            .values()
            .find(|i| !i.dead && i.kind == kind && i.local_id == local_id)
            .map(|i| i.id);
        if let Some(live) = live {
            state.outbox.remove(&id.0);
            return Ok(Some(live));
        }
        let item = state.outbox.get_mut(&id.0).expect("checked above");
        item.dead = false;
        item.attempts = 0;
        item.next_attempt_at = truncate_micros(now);
        Ok(Some(id))
    }

    async fn discard_dead_letter(&self, id: OutboxId) -> Result<bool, StoreError> {
        let mut state = self.lock()?;
        if state.outbox.get(&id.0).is_some_and(|i| i.dead) {
            state.outbox.remove(&id.0);
            return Ok(true);
        }
        Ok(false)
    }

    async fn inbox_insert(
        &self,
        dedupe_key: &str,
        event: &str,
        payload: Value,
        now: DateTime<Utc>,
    ) -> Result<Option<InboxId>, StoreError> {
        let mut state = self.lock()?;
        if state.inbox_keys.contains_key(dedupe_key) {
            return Ok(None);
        }
        state.last_inbox_id += 1;
        let id = InboxId(state.last_inbox_id);
        state.inbox_keys.insert(dedupe_key.to_owned(), id.0);
        state.inbox.insert(
            id.0,
            InboxItem {
                id,
                dedupe_key: dedupe_key.to_owned(),
                event: event.to_owned(),
                payload,
                received_at: truncate_micros(now),
                processed_at: None,
                status: InboxStatus::Pending,
                error: None,
            },
        );
        Ok(Some(id))
    }

    async fn inbox_pending(&self, limit: usize) -> Result<Vec<InboxItem>, StoreError> {
        let state = self.lock()?;
        let mut pending: Vec<InboxItem> = state
            .inbox
            .values()
            .filter(|i| i.status == InboxStatus::Pending)
            .cloned()
            .collect();
        pending.sort_by_key(|i| (i.received_at, i.id));
        pending.truncate(limit);
        Ok(pending)
    }

    async fn inbox_mark(
        &self,
        id: InboxId,
        status: InboxStatus,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock()?;
        let Some(item) = state.inbox.get_mut(&id.0) else {
            return Ok(false);
        };
        item.status = status;
        item.error = error.map(str::to_owned);
        item.processed_at = (status != InboxStatus::Pending).then(|| truncate_micros(now));
        Ok(true)
    }

    async fn get_cursor(&self, kind: EntityKind, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .lock()?
            .cursors
            .get(&(kind, name.to_owned()))
            .map(|(v, _)| v.clone()))
    }

    async fn set_cursor(
        &self,
        kind: EntityKind,
        name: &str,
        value: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.lock()?.set_cursor(kind, name, value, now);
        Ok(())
    }

    async fn log_conflict(&self, record: &ConflictRecord) -> Result<(), StoreError> {
        self.lock()?.log_conflict(record.clone());
        Ok(())
    }

    async fn list_conflicts(
        &self,
        kind: Option<EntityKind>,
        limit: usize,
    ) -> Result<Vec<ConflictRecord>, StoreError> {
        let state = self.lock()?;
        let mut rows: Vec<&(i64, ConflictRecord)> = state
            .conflicts
            .iter()
            .filter(|(_, c)| kind.is_none_or(|k| c.kind == k))
            .collect();
        rows.sort_by_key(|(id, c)| Reverse((c.at, *id)));
        Ok(rows
            .into_iter()
            .take(limit)
            .map(|(_, c)| c.clone())
            .collect())
    }

    async fn log_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.lock()?.log_audit(entry.clone());
        Ok(())
    }

    async fn list_audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let state = self.lock()?;
        let mut rows: Vec<&(i64, AuditEntry)> = state.audit.iter().collect();
        rows.sort_by_key(|(id, a)| Reverse((a.at, *id)));
        Ok(rows
            .into_iter()
            .take(limit)
            .map(|(_, a)| a.clone())
            .collect())
    }

    async fn forget_personal_conflicts(
        &self,
        kind: EntityKind,
        local_id: &str,
    ) -> Result<u64, StoreError> {
        Ok(self.lock()?.forget_personal_conflicts(kind, local_id))
    }

    async fn write_batch(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut state = self.lock()?;
        // Only a mapping write can fail: check them all first, so that a failing batch
        // changes nothing.
        state.check_mappings(&batch)?;
        for op in batch.ops {
            match op {
                WriteOp::PutMapping(m) => state.put_mapping(m)?,
                WriteOp::DeleteMapping { kind, local_id } => {
                    state.mappings.remove(&(kind, local_id));
                }
                WriteOp::Enqueue {
                    kind,
                    local_id,
                    payload,
                    now,
                } => {
                    state.enqueue(kind, &local_id, payload, now);
                }
                WriteOp::CompleteOutbox { id, revision } => {
                    state.complete_outbox(id, revision);
                }
                WriteOp::SetCursor {
                    kind,
                    name,
                    value,
                    now,
                } => state.set_cursor(kind, &name, &value, now),
                WriteOp::LogConflict(record) => state.log_conflict(record),
                WriteOp::LogAudit(entry) => state.log_audit(entry),
                WriteOp::ForgetPersonalConflicts { kind, local_id } => {
                    state.forget_personal_conflicts(kind, &local_id);
                }
            }
        }
        Ok(())
    }

    async fn purge(&self, older_than: DateTime<Utc>) -> Result<PurgeReport, StoreError> {
        let older_than = truncate_micros(older_than);
        let mut state = self.lock()?;
        let State {
            inbox,
            inbox_keys,
            conflicts,
            audit,
            ..
        } = &mut *state;
        let expired: Vec<i64> = inbox
            .values()
            .filter(|i| {
                i.status != InboxStatus::Pending && i.processed_at.is_some_and(|t| t < older_than)
            })
            .map(|i| i.id.0)
            .collect();
        for id in &expired {
            if let Some(item) = inbox.remove(id) {
                inbox_keys.remove(&item.dedupe_key);
            }
        }
        let conflicts_before = conflicts.len();
        conflicts.retain(|(_, c)| c.at >= older_than);
        let audit_before = audit.len();
        audit.retain(|(_, a)| a.at >= older_than);
        Ok(PurgeReport {
            inbox: expired.len() as u64,
            conflicts: (conflicts_before - conflicts.len()) as u64,
            audit: (audit_before - audit.len()) as u64,
        })
    }

    async fn counts(&self) -> Result<StoreCounts, StoreError> {
        let state = self.lock()?;
        let mut counts = StoreCounts::empty();
        for m in state.mappings.values() {
            let k = counts.per_kind.entry(m.kind).or_default();
            match m.state {
                SyncState::Synced => k.synced += 1,
                SyncState::Pending => k.pending += 1,
                SyncState::Error => k.error += 1,
            }
        }
        for item in state.outbox.values() {
            let k = counts.per_kind.entry(item.kind).or_default();
            if item.dead {
                k.dead_lettered += 1;
                counts.dead_letters += 1;
            } else {
                k.outbox += 1;
                counts.outbox_depth += 1;
            }
        }
        for item in state.inbox.values() {
            match item.status {
                InboxStatus::Pending => counts.inbox_backlog += 1,
                InboxStatus::Failed => counts.inbox_failed += 1,
                InboxStatus::Processed | InboxStatus::Ignored => {}
            }
        }
        Ok(counts)
    }

    // ---- inbox: grouped intake ----

    async fn inbox_insert_batch(
        &self,
        items: &[NewInboxItem],
        now: DateTime<Utc>,
    ) -> Result<Vec<Option<InboxId>>, StoreError> {
        let mut state = self.lock()?;
        let now = truncate_micros(now);
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if let Some(&old) = state.inbox_keys.get(&item.dedupe_key) {
                let duplicate = match &item.dedupe {
                    InboxDedupe::Stored => true,
                    InboxDedupe::Latest { stream, since } => {
                        let newest = state
                            .inbox_keys
                            .range(stream.clone()..)
                            .take_while(|(k, _)| k.starts_with(stream.as_str()))
                            .map(|(_, id)| *id)
                            .max();
                        newest == Some(old)
                            && state
                                .inbox
                                .get(&old)
                                .is_some_and(|i| i.received_at >= *since)
                    }
                };
                if duplicate {
                    out.push(None);
                    continue;
                }
                let retired = retired_inbox_key(&item.dedupe_key, old);
                state.inbox_keys.remove(&item.dedupe_key);
                state.inbox_keys.insert(retired.clone(), old);
                if let Some(row) = state.inbox.get_mut(&old) {
                    row.dedupe_key = retired;
                }
            }
            state.last_inbox_id += 1;
            let id = InboxId(state.last_inbox_id);
            state.inbox_keys.insert(item.dedupe_key.clone(), id.0);
            state.inbox.insert(
                id.0,
                InboxItem {
                    id,
                    dedupe_key: item.dedupe_key.clone(),
                    event: item.event.clone(),
                    payload: item.payload.clone(),
                    received_at: now,
                    processed_at: None,
                    status: InboxStatus::Pending,
                    error: None,
                },
            );
            out.push(Some(id));
        }
        Ok(out)
    }
}
