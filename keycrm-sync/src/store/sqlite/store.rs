//! [`Store`] for [`SqliteStore`]: each call one job on the connection thread.

use super::codec::*;
use super::writes::*;
use super::*;

impl Store for SqliteStore {
    async fn get_mapping(
        &self,
        kind: EntityKind,
        local_id: &str,
    ) -> Result<Option<Mapping>, StoreError> {
        let local_id = local_id.to_owned();
        self.call(move |c| {
            let sql =
                format!("SELECT {MAPPING_COLS} FROM mappings WHERE kind = ?1 AND local_id = ?2");
            Ok(c.prepare_cached(&sql)?
                .query_row(params![kind.as_str(), local_id], row_mapping)
                .optional()?)
        })
        .await
    }

    async fn get_mapping_by_remote(
        &self,
        kind: EntityKind,
        remote_id: i64,
    ) -> Result<Option<Mapping>, StoreError> {
        self.call(move |c| {
            let sql =
                format!("SELECT {MAPPING_COLS} FROM mappings WHERE kind = ?1 AND remote_id = ?2");
            Ok(c.prepare_cached(&sql)?
                .query_row(params![kind.as_str(), remote_id], row_mapping)
                .optional()?)
        })
        .await
    }

    async fn put_mapping(&self, m: &Mapping) -> Result<(), StoreError> {
        let m = m.clone();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            put_mapping_in(&tx, &m)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn delete_mapping(&self, kind: EntityKind, local_id: &str) -> Result<bool, StoreError> {
        let local_id = local_id.to_owned();
        self.call(move |c| delete_mapping_in(c, kind, &local_id))
            .await
    }

    async fn list_mappings(
        &self,
        kind: EntityKind,
        state: Option<SyncState>,
    ) -> Result<Vec<Mapping>, StoreError> {
        self.call(move |c| match state {
            Some(state) => {
                let sql = format!(
                    "SELECT {MAPPING_COLS} FROM mappings WHERE kind = ?1 AND state = ?2 ORDER BY local_id"
                );
                let mut stmt = c.prepare_cached(&sql)?;
                collect(stmt.query_map(params![kind.as_str(), state.as_str()], row_mapping)?)
            }
            None => {
                let sql =
                    format!("SELECT {MAPPING_COLS} FROM mappings WHERE kind = ?1 ORDER BY local_id");
                let mut stmt = c.prepare_cached(&sql)?;
                collect(stmt.query_map(params![kind.as_str()], row_mapping)?)
            }
        })
        .await
    }

    async fn enqueue(
        &self,
        kind: EntityKind,
        local_id: &str,
        payload: Value,
        now: DateTime<Utc>,
    ) -> Result<OutboxId, StoreError> {
        let local_id = local_id.to_owned();
        self.call(move |c| enqueue_in(c, kind, &local_id, &payload, now))
            .await
    }

    async fn due_outbox(
        &self,
        now: DateTime<Utc>,
        n: usize,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        self.call(move |c| {
            let sql = format!(
                "SELECT {OUTBOX_COLS} FROM outbox WHERE dead = 0 AND next_attempt_at <= ?1 \
                 ORDER BY created_at, id LIMIT ?2"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            collect(stmt.query_map(params![ts(now), limit(n)], row_outbox)?)
        })
        .await
    }

    async fn complete_outbox(&self, id: OutboxId, revision: i64) -> Result<bool, StoreError> {
        self.call(move |c| complete_outbox_in(c, id, revision))
            .await
    }

    async fn fail_outbox(
        &self,
        id: OutboxId,
        revision: i64,
        error: &str,
        next_attempt_at: DateTime<Utc>,
        dead: bool,
    ) -> Result<bool, StoreError> {
        let error = error.to_owned();
        self.call(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = ?3, next_attempt_at = ?4, \
                     dead = ?5 WHERE id = ?1 AND revision = ?2 AND dead = 0",
                )?
                .execute(params![id.0, revision, error, ts(next_attempt_at), dead])?;
            Ok(n > 0)
        })
        .await
    }

    async fn dead_letters(&self, kind: Option<EntityKind>) -> Result<Vec<OutboxItem>, StoreError> {
        self.call(move |c| match kind {
            Some(kind) => {
                let sql = format!(
                    "SELECT {OUTBOX_COLS} FROM outbox WHERE dead = 1 AND kind = ?1 ORDER BY created_at, id"
                );
                let mut stmt = c.prepare_cached(&sql)?;
                collect(stmt.query_map(params![kind.as_str()], row_outbox)?)
            }
            None => {
                let sql = format!(
                    "SELECT {OUTBOX_COLS} FROM outbox WHERE dead = 1 ORDER BY created_at, id"
                );
                let mut stmt = c.prepare_cached(&sql)?;
                collect(stmt.query_map([], row_outbox)?)
            }
        })
        .await
    }

    async fn retry_dead_letter(
        &self,
        id: OutboxId,
        now: DateTime<Utc>,
    ) -> Result<Option<OutboxId>, StoreError> {
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some((kind, local_id)) = tx
                .prepare_cached("SELECT kind, local_id FROM outbox WHERE id = ?1 AND dead = 1")?
                .query_row(params![id.0], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .optional()?
            else {
                return Ok(None);
            };
            let live: Option<i64> = tx
                .prepare_cached(
                    "SELECT id FROM outbox WHERE kind = ?1 AND local_id = ?2 AND dead = 0",
                )?
                .query_row(params![kind, local_id], |r| r.get(0))
                .optional()?;
            let result = match live {
                Some(live) => {
                    tx.prepare_cached("DELETE FROM outbox WHERE id = ?1")?
                        .execute(params![id.0])?;
                    OutboxId(live)
                }
                None => {
                    tx.prepare_cached(
                        "UPDATE outbox SET dead = 0, attempts = 0, next_attempt_at = ?2 WHERE id = ?1",
                    )?
                    .execute(params![id.0, ts(now)])?;
                    id
                }
            };
            tx.commit()?;
            Ok(Some(result))
        })
        .await
    }

    async fn discard_dead_letter(&self, id: OutboxId) -> Result<bool, StoreError> {
        self.call(move |c| {
            let n = c
                .prepare_cached("DELETE FROM outbox WHERE id = ?1 AND dead = 1")?
                .execute(params![id.0])?;
            Ok(n > 0)
        })
        .await
    }

    async fn inbox_insert(
        &self,
        dedupe_key: &str,
        event: &str,
        payload: Value,
        now: DateTime<Utc>,
    ) -> Result<Option<InboxId>, StoreError> {
        let dedupe_key = dedupe_key.to_owned();
        let event = event.to_owned();
        self.call(move |c| {
            let n = c
                .prepare_cached(
                    "INSERT INTO inbox (dedupe_key, event, payload, received_at, status) \
                     VALUES (?1, ?2, ?3, ?4, 'pending') ON CONFLICT (dedupe_key) DO NOTHING",
                )?
                .execute(params![dedupe_key, event, json(&payload), ts(now)])?;
            Ok((n > 0).then(|| InboxId(c.last_insert_rowid())))
        })
        .await
    }

    async fn inbox_pending(&self, n: usize) -> Result<Vec<InboxItem>, StoreError> {
        self.call(move |c| {
            let sql = format!(
                "SELECT {INBOX_COLS} FROM inbox WHERE status = 'pending' ORDER BY received_at, id LIMIT ?1"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            collect(stmt.query_map(params![limit(n)], row_inbox)?)
        })
        .await
    }

    async fn inbox_mark(
        &self,
        id: InboxId,
        status: InboxStatus,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let processed_at = (status != InboxStatus::Pending).then(|| ts(now));
        let error = error.map(str::to_owned);
        self.call(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE inbox SET status = ?2, error = ?3, processed_at = ?4 WHERE id = ?1",
                )?
                .execute(params![id.0, status.as_str(), error, processed_at])?;
            Ok(n > 0)
        })
        .await
    }

    async fn get_cursor(&self, kind: EntityKind, name: &str) -> Result<Option<String>, StoreError> {
        let name = name.to_owned();
        self.call(move |c| {
            Ok(
                c.prepare_cached("SELECT value FROM cursors WHERE kind = ?1 AND name = ?2")?
                    .query_row(params![kind.as_str(), name], |r| r.get(0))
                    .optional()?,
            )
        })
        .await
    }

    async fn set_cursor(
        &self,
        kind: EntityKind,
        name: &str,
        value: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let name = name.to_owned();
        let value = value.to_owned();
        self.call(move |c| set_cursor_in(c, kind, &name, &value, now))
            .await
    }

    async fn log_conflict(&self, r: &ConflictRecord) -> Result<(), StoreError> {
        let r = r.clone();
        self.call(move |c| log_conflict_in(c, &r)).await
    }

    async fn list_conflicts(
        &self,
        kind: Option<EntityKind>,
        n: usize,
    ) -> Result<Vec<ConflictRecord>, StoreError> {
        self.call(move |c| match kind {
            Some(kind) => {
                let sql = format!(
                    "SELECT {CONFLICT_COLS} FROM conflicts WHERE kind = ?1 ORDER BY at DESC, id DESC LIMIT ?2"
                );
                let mut stmt = c.prepare_cached(&sql)?;
                collect(stmt.query_map(params![kind.as_str(), limit(n)], row_conflict)?)
            }
            None => {
                let sql = format!(
                    "SELECT {CONFLICT_COLS} FROM conflicts ORDER BY at DESC, id DESC LIMIT ?1"
                );
                let mut stmt = c.prepare_cached(&sql)?;
                collect(stmt.query_map(params![limit(n)], row_conflict)?)
            }
        })
        .await
    }

    async fn log_audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        let e = e.clone();
        self.call(move |c| log_audit_in(c, &e)).await
    }

    async fn list_audit(&self, n: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT at, kind, local_id, action, detail FROM audit ORDER BY at DESC, id DESC LIMIT ?1",
            )?;
            collect(stmt.query_map(params![limit(n)], row_audit)?)
        })
        .await
    }

    async fn forget_personal_conflicts(
        &self,
        kind: EntityKind,
        local_id: &str,
    ) -> Result<u64, StoreError> {
        let local_id = local_id.to_owned();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = forget_personal_in(&tx, kind, &local_id)?;
            tx.commit()?;
            Ok(n)
        })
        .await
    }

    async fn write_batch(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.call(move |c| {
            // One immediate transaction: one commit (one fsync) for the whole batch; any
            // failure drops the transaction, which rolls every write of the batch back.
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for op in batch.ops() {
                match op {
                    WriteOp::PutMapping(m) => put_mapping_in(&tx, m)?,
                    WriteOp::DeleteMapping { kind, local_id } => {
                        delete_mapping_in(&tx, *kind, local_id)?;
                    }
                    WriteOp::Enqueue {
                        kind,
                        local_id,
                        payload,
                        now,
                    } => {
                        enqueue_in(&tx, *kind, local_id, payload, *now)?;
                    }
                    WriteOp::CompleteOutbox { id, revision } => {
                        complete_outbox_in(&tx, *id, *revision)?;
                    }
                    WriteOp::SetCursor {
                        kind,
                        name,
                        value,
                        now,
                    } => set_cursor_in(&tx, *kind, name, value, *now)?,
                    WriteOp::LogConflict(r) => log_conflict_in(&tx, r)?,
                    WriteOp::LogAudit(e) => log_audit_in(&tx, e)?,
                    WriteOp::ForgetPersonalConflicts { kind, local_id } => {
                        forget_personal_in(&tx, *kind, local_id)?;
                    }
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn purge(&self, older_than: DateTime<Utc>) -> Result<PurgeReport, StoreError> {
        let mark = ts(older_than);
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let inbox = tx
                .prepare_cached(
                    "DELETE FROM inbox WHERE status IN ('processed', 'ignored', 'failed') \
                     AND processed_at < ?1",
                )?
                .execute(params![mark])?;
            let conflicts = tx
                .prepare_cached("DELETE FROM conflicts WHERE at < ?1")?
                .execute(params![mark])?;
            let audit = tx
                .prepare_cached("DELETE FROM audit WHERE at < ?1")?
                .execute(params![mark])?;
            tx.commit()?;
            Ok(PurgeReport {
                inbox: inbox as u64,
                conflicts: conflicts as u64,
                audit: audit as u64,
            })
        })
        .await
    }

    async fn counts(&self) -> Result<StoreCounts, StoreError> {
        self.call(|c| {
            // One read transaction, so the numbers are a consistent snapshot.
            let tx = c.transaction()?;
            let mut counts = StoreCounts::empty();
            {
                let mut stmt =
                    tx.prepare_cached("SELECT kind, state, COUNT(*) FROM mappings GROUP BY kind, state")?;
                let rows = stmt.query_map([], |r| Ok((col_kind(r, 0)?, r.get::<_, String>(1)?, count_col(r, 2)?)))?;
                for row in rows {
                    let (kind, state, n) = row?;
                    let k = counts.per_kind.entry(kind).or_default();
                    match SyncState::parse(&state) {
                        Some(SyncState::Synced) => k.synced += n,
                        Some(SyncState::Pending) => k.pending += n,
                        Some(SyncState::Error) => k.error += n,
                        None => return Err(StoreError::Corrupt("unknown sync state in mappings".into()).into()),
                    }
                }
            }
            {
                let mut stmt = tx.prepare_cached("SELECT kind, dead, COUNT(*) FROM outbox GROUP BY kind, dead")?;
                let rows = stmt.query_map([], |r| Ok((col_kind(r, 0)?, r.get::<_, bool>(1)?, count_col(r, 2)?)))?;
                for row in rows {
                    let (kind, dead, n) = row?;
                    let k = counts.per_kind.entry(kind).or_default();
                    if dead {
                        k.dead_lettered += n;
                        counts.dead_letters += n;
                    } else {
                        k.outbox += n;
                        counts.outbox_depth += n;
                    }
                }
            }
            {
                let mut stmt = tx.prepare_cached(
                    "SELECT status, COUNT(*) FROM inbox WHERE status IN ('pending', 'failed') GROUP BY status",
                )?;
                let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, count_col(r, 1)?)))?;
                for row in rows {
                    let (status, n) = row?;
                    if status == InboxStatus::Pending.as_str() {
                        counts.inbox_backlog = n;
                    } else {
                        counts.inbox_failed = n;
                    }
                }
            }
            tx.commit()?;
            Ok(counts)
        })
        .await
    }

    // ---- inbox: grouped intake ----

    async fn inbox_insert_batch(
        &self,
        items: &[NewInboxItem],
        now: DateTime<Utc>,
    ) -> Result<Vec<Option<InboxId>>, StoreError> {
        let items = items.to_vec();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut out = Vec::with_capacity(items.len());
            for item in &items {
                let existing: Option<i64> = tx
                    .prepare_cached("SELECT id FROM inbox WHERE dedupe_key = ?1")?
                    .query_row(params![item.dedupe_key], |r| r.get(0))
                    .optional()?;
                if let Some(old) = existing {
                    let duplicate = match &item.dedupe {
                        InboxDedupe::Stored => true,
                        InboxDedupe::Latest { stream, since } => {
                            let newest: Option<(i64, i64)> = tx
                                .prepare_cached(
                                    "SELECT id, received_at FROM inbox \
                                     WHERE dedupe_key >= ?1 AND dedupe_key < ?2 \
                                     ORDER BY id DESC LIMIT 1",
                                )?
                                .query_row(params![stream, format!("{stream}\u{10FFFF}")], |r| {
                                    Ok((r.get(0)?, r.get(1)?))
                                })
                                .optional()?;
                            newest.is_some_and(|(id, at)| id == old && at >= ts(*since))
                        }
                    };
                    if duplicate {
                        out.push(None);
                        continue;
                    }
                    tx.prepare_cached("UPDATE inbox SET dedupe_key = ?2 WHERE id = ?1")?
                        .execute(params![old, retired_inbox_key(&item.dedupe_key, old)])?;
                }
                tx.prepare_cached(
                    "INSERT INTO inbox (dedupe_key, event, payload, received_at, status) \
                     VALUES (?1, ?2, ?3, ?4, 'pending')",
                )?
                .execute(params![
                    item.dedupe_key,
                    item.event,
                    json(&item.payload),
                    ts(now)
                ])?;
                out.push(Some(InboxId(tx.last_insert_rowid())));
            }
            tx.commit()?;
            Ok(out)
        })
        .await
    }
}
