//! [`Store`] for [`PostgresStore`]: each call one pooled connection, each write one transaction.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::codec::{
    CONFLICT_COLS, DB_NOW, INBOX_COLS, MAPPING_COLS, OUTBOX_COLS, count, json, kind_of, limit,
    row_audit, row_conflict, row_inbox, row_mapping, row_outbox, rows, ts,
};
use super::writes::{
    apply_op, complete_outbox_in, delete_mapping_in, enqueue_in, exec, forget_personal_in,
    log_audit_in, log_conflict_in, put_mapping_in, query, set_cursor_in,
};
use super::{PostgresStore, pg_error};
use crate::model::EntityKind;
use crate::store::{
    AuditEntry, ConflictRecord, InboxDedupe, InboxId, InboxItem, InboxStatus, Mapping,
    NewInboxItem, OutboxId, OutboxItem, PurgeReport, Store, StoreCounts, StoreError, SyncState,
    WriteBatch, retired_inbox_key,
};

/// Evaluates `body` (a `Result`) inside one transaction on a pooled connection and commits
/// it, or rolls it back when `body` fails. A `return` in `body` leaves the enclosing method
/// and drops the transaction, which rolls it back.
macro_rules! in_tx {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let mut conn = $store.conn().await?;
        let owned = conn.transaction().await.map_err(pg_error)?;
        let result: Result<_, StoreError> = {
            let $tx = &owned;
            $body
        };
        match result {
            Ok(out) => {
                owned.commit().await.map_err(pg_error)?;
                Ok::<_, StoreError>(out)
            }
            Err(e) => {
                // Roll back now rather than on drop, so that no lock outlives the call.
                let _ = owned.rollback().await;
                Err(e)
            }
        }
    }};
}

impl PostgresStore {
    /// Runs one read on a pooled connection.
    async fn read(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let c = self.conn().await?;
        let st = c.prepare_cached(sql).await.map_err(pg_error)?;
        c.query(&st, params).await.map_err(pg_error)
    }
}

impl Store for PostgresStore {
    async fn get_mapping(
        &self,
        kind: EntityKind,
        local_id: &str,
    ) -> Result<Option<Mapping>, StoreError> {
        let sql = format!("SELECT {MAPPING_COLS} FROM mappings WHERE kind = $1 AND local_id = $2");
        let found = self.read(&sql, &[&kind.as_str(), &local_id]).await?;
        found.first().map(row_mapping).transpose()
    }

    async fn get_mapping_by_remote(
        &self,
        kind: EntityKind,
        remote_id: i64,
    ) -> Result<Option<Mapping>, StoreError> {
        let sql = format!("SELECT {MAPPING_COLS} FROM mappings WHERE kind = $1 AND remote_id = $2");
        let found = self.read(&sql, &[&kind.as_str(), &remote_id]).await?;
        found.first().map(row_mapping).transpose()
    }

    async fn put_mapping(&self, m: &Mapping) -> Result<(), StoreError> {
        in_tx!(self, |tx| put_mapping_in(tx, m).await)
    }

    async fn delete_mapping(&self, kind: EntityKind, local_id: &str) -> Result<bool, StoreError> {
        in_tx!(self, |tx| delete_mapping_in(tx, kind, local_id).await)
    }

    async fn list_mappings(
        &self,
        kind: EntityKind,
        state: Option<SyncState>,
    ) -> Result<Vec<Mapping>, StoreError> {
        let found = match state {
            Some(state) => {
                let sql = format!(
                    "SELECT {MAPPING_COLS} FROM mappings WHERE kind = $1 AND state = $2 \
                     ORDER BY local_id"
                );
                self.read(&sql, &[&kind.as_str(), &state.as_str()]).await?
            }
            None => {
                let sql = format!(
                    "SELECT {MAPPING_COLS} FROM mappings WHERE kind = $1 ORDER BY local_id"
                );
                self.read(&sql, &[&kind.as_str()]).await?
            }
        };
        rows(&found, row_mapping)
    }

    async fn enqueue(
        &self,
        kind: EntityKind,
        local_id: &str,
        payload: Value,
        now: DateTime<Utc>,
    ) -> Result<OutboxId, StoreError> {
        in_tx!(self, |tx| enqueue_in(tx, kind, local_id, &payload, now)
            .await)
    }

    /// Claims the due items: rows locked by another claim in progress are skipped, rows
    /// leased to another live instance too; the claimed rows are leased to this instance.
    async fn due_outbox(
        &self,
        now: DateTime<Utc>,
        n: usize,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let sql = format!(
            "WITH due AS (SELECT id FROM outbox WHERE NOT dead AND next_attempt_at <= $1 \
             AND (lease_owner IS NULL OR lease_owner = $2 OR lease_until <= {DB_NOW}) \
             ORDER BY created_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) \
             UPDATE outbox o SET lease_owner = $2, lease_until = {DB_NOW} + $4 FROM due \
             WHERE o.id = due.id RETURNING o.{}",
            OUTBOX_COLS.replace(", ", ", o.")
        );
        let claimed = in_tx!(self, |tx| {
            query(
                tx,
                &sql,
                &[
                    &ts(now),
                    &self.instance,
                    &limit(n.min(self.claim_limit)),
                    &self.lease_micros,
                ],
            )
            .await
        })?;
        let mut items = rows(&claimed, row_outbox)?;
        items.sort_by_key(|i| (i.created_at, i.id));
        Ok(items)
    }

    async fn complete_outbox(&self, id: OutboxId, revision: i64) -> Result<bool, StoreError> {
        in_tx!(self, |tx| complete_outbox_in(tx, id, revision).await)
    }

    async fn fail_outbox(
        &self,
        id: OutboxId,
        revision: i64,
        error: &str,
        next_attempt_at: DateTime<Utc>,
        dead: bool,
    ) -> Result<bool, StoreError> {
        let n = in_tx!(self, |tx| {
            exec(
                tx,
                "UPDATE outbox SET attempts = attempts + 1, last_error = $3, \
                     next_attempt_at = $4, dead = $5, lease_owner = NULL, lease_until = NULL \
                     WHERE id = $1 AND revision = $2 AND NOT dead",
                &[&id.0, &revision, &error, &ts(next_attempt_at), &dead],
            )
            .await
        })?;
        Ok(n > 0)
    }

    async fn dead_letters(&self, kind: Option<EntityKind>) -> Result<Vec<OutboxItem>, StoreError> {
        let found = match kind {
            Some(kind) => {
                let sql = format!(
                    "SELECT {OUTBOX_COLS} FROM outbox WHERE dead AND kind = $1 \
                     ORDER BY created_at, id"
                );
                self.read(&sql, &[&kind.as_str()]).await?
            }
            None => {
                let sql =
                    format!("SELECT {OUTBOX_COLS} FROM outbox WHERE dead ORDER BY created_at, id");
                self.read(&sql, &[]).await?
            }
        };
        rows(&found, row_outbox)
    }

    async fn retry_dead_letter(
        &self,
        id: OutboxId,
        now: DateTime<Utc>,
    ) -> Result<Option<OutboxId>, StoreError> {
        in_tx!(self, |tx| {
            let dead = query(
                tx,
                "SELECT kind, local_id FROM outbox WHERE id = $1 AND dead FOR UPDATE",
                &[&id.0],
            )
            .await?;
            let Some(row) = dead.first() else {
                return Ok(None);
            };
            let kind: String = row.try_get(0).map_err(pg_error)?;
            let local_id: String = row.try_get(1).map_err(pg_error)?;
            let live = query(
                tx,
                "SELECT id FROM outbox WHERE kind = $1 AND local_id = $2 AND NOT dead",
                &[&kind, &local_id],
            )
            .await?;
            match live.first() {
                Some(live) => {
                    exec(tx, "DELETE FROM outbox WHERE id = $1", &[&id.0]).await?;
                    Ok(Some(OutboxId(live.try_get(0).map_err(pg_error)?)))
                }
                None => {
                    exec(
                        tx,
                        "UPDATE outbox SET dead = FALSE, attempts = 0, next_attempt_at = $2, \
                         lease_owner = NULL, lease_until = NULL WHERE id = $1",
                        &[&id.0, &ts(now)],
                    )
                    .await?;
                    Ok(Some(id))
                }
            }
        })
    }

    async fn discard_dead_letter(&self, id: OutboxId) -> Result<bool, StoreError> {
        let n = in_tx!(self, |tx| exec(
            tx,
            "DELETE FROM outbox WHERE id = $1 AND dead",
            &[&id.0]
        )
        .await)?;
        Ok(n > 0)
    }

    async fn inbox_insert(
        &self,
        dedupe_key: &str,
        event: &str,
        payload: Value,
        now: DateTime<Utc>,
    ) -> Result<Option<InboxId>, StoreError> {
        let inserted = in_tx!(self, |tx| {
            query(
                tx,
                "INSERT INTO inbox (dedupe_key, event, payload, received_at, status) \
                     VALUES ($1, $2, $3, $4, 'pending') ON CONFLICT (dedupe_key) DO NOTHING \
                     RETURNING id",
                &[&dedupe_key, &event, &json(&payload), &ts(now)],
            )
            .await
        })?;
        match inserted.first() {
            Some(row) => Ok(Some(InboxId(row.try_get(0).map_err(pg_error)?))),
            None => Ok(None),
        }
    }

    /// Claims pending rows like [`Store::due_outbox`] claims outbox items.
    async fn inbox_pending(&self, n: usize) -> Result<Vec<InboxItem>, StoreError> {
        let sql = format!(
            "WITH due AS (SELECT id FROM inbox WHERE status = 'pending' \
             AND (lease_owner IS NULL OR lease_owner = $1 OR lease_until <= {DB_NOW}) \
             ORDER BY received_at, id LIMIT $2 FOR UPDATE SKIP LOCKED) \
             UPDATE inbox i SET lease_owner = $1, lease_until = {DB_NOW} + $3 FROM due \
             WHERE i.id = due.id RETURNING i.{}",
            INBOX_COLS.replace(", ", ", i.")
        );
        let claimed = in_tx!(self, |tx| query(
            tx,
            &sql,
            &[&self.instance, &limit(n), &self.lease_micros]
        )
        .await)?;
        let mut items = rows(&claimed, row_inbox)?;
        items.sort_by_key(|i| (i.received_at, i.id));
        Ok(items)
    }

    /// A plain read: looking at the oldest pending row must not lease it away from the
    /// instance that will process it.
    async fn oldest_pending_inbox(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let found = self
            .read(
                "SELECT min(received_at) FROM inbox WHERE status = 'pending'",
                &[],
            )
            .await?;
        let micros: Option<i64> = found.first().and_then(|row| row.get(0));
        Ok(micros.and_then(DateTime::from_timestamp_micros))
    }

    async fn inbox_mark(
        &self,
        id: InboxId,
        status: InboxStatus,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let processed_at = (status != InboxStatus::Pending).then(|| ts(now));
        let n = in_tx!(self, |tx| {
            exec(
                tx,
                "UPDATE inbox SET status = $2, error = $3, processed_at = $4, \
                     lease_owner = NULL, lease_until = NULL WHERE id = $1",
                &[&id.0, &status.as_str(), &error, &processed_at],
            )
            .await
        })?;
        Ok(n > 0)
    }

    async fn get_cursor(&self, kind: EntityKind, name: &str) -> Result<Option<String>, StoreError> {
        let found = self
            .read(
                "SELECT value FROM cursors WHERE kind = $1 AND name = $2",
                &[&kind.as_str(), &name],
            )
            .await?;
        found
            .first()
            .map(|r| r.try_get(0).map_err(pg_error))
            .transpose()
    }

    async fn set_cursor(
        &self,
        kind: EntityKind,
        name: &str,
        value: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| set_cursor_in(tx, kind, name, value, now).await)
    }

    async fn log_conflict(&self, r: &ConflictRecord) -> Result<(), StoreError> {
        in_tx!(self, |tx| log_conflict_in(tx, r).await)
    }

    async fn list_conflicts(
        &self,
        kind: Option<EntityKind>,
        n: usize,
    ) -> Result<Vec<ConflictRecord>, StoreError> {
        let found = match kind {
            Some(kind) => {
                let sql = format!(
                    "SELECT {CONFLICT_COLS} FROM conflicts WHERE kind = $1 \
                     ORDER BY at DESC, id DESC LIMIT $2"
                );
                self.read(&sql, &[&kind.as_str(), &limit(n)]).await?
            }
            None => {
                let sql = format!(
                    "SELECT {CONFLICT_COLS} FROM conflicts ORDER BY at DESC, id DESC LIMIT $1"
                );
                self.read(&sql, &[&limit(n)]).await?
            }
        };
        rows(&found, row_conflict)
    }

    async fn log_audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        in_tx!(self, |tx| log_audit_in(tx, e).await)
    }

    async fn list_audit(&self, n: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let found = self
            .read(
                "SELECT at, kind, local_id, action, detail FROM audit \
                 ORDER BY at DESC, id DESC LIMIT $1",
                &[&limit(n)],
            )
            .await?;
        rows(&found, row_audit)
    }

    async fn forget_personal_conflicts(
        &self,
        kind: EntityKind,
        local_id: &str,
    ) -> Result<u64, StoreError> {
        in_tx!(self, |tx| forget_personal_in(tx, kind, local_id).await)
    }

    async fn write_batch(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        // Any failure drops the transaction uncommitted: nothing of the batch is applied.
        in_tx!(self, |tx| {
            for op in batch.ops() {
                apply_op(tx, op).await?;
            }
            Ok(())
        })
    }

    async fn purge(&self, older_than: DateTime<Utc>) -> Result<PurgeReport, StoreError> {
        let mark = ts(older_than);
        in_tx!(self, |tx| {
            let inbox = exec(
                tx,
                "DELETE FROM inbox WHERE status IN ('processed', 'ignored', 'failed') \
                 AND processed_at < $1",
                &[&mark],
            )
            .await?;
            let conflicts = exec(tx, "DELETE FROM conflicts WHERE at < $1", &[&mark]).await?;
            let audit = exec(tx, "DELETE FROM audit WHERE at < $1", &[&mark]).await?;
            Ok(PurgeReport {
                inbox,
                conflicts,
                audit,
            })
        })
    }

    async fn counts(&self) -> Result<StoreCounts, StoreError> {
        // One repeatable-read snapshot would need its own transaction mode; the three
        // aggregates run in one transaction, which is consistent for a status report.
        in_tx!(self, |tx| {
            let mut counts = StoreCounts::empty();
            let mappings = query(
                tx,
                "SELECT kind, state, COUNT(*) AS n FROM mappings GROUP BY kind, state",
                &[],
            )
            .await?;
            for row in &mappings {
                let k = counts.per_kind.entry(kind_of(row, "kind")?).or_default();
                let state: String = row.try_get("state").map_err(pg_error)?;
                let n = count(row, "n")?;
                match SyncState::parse(&state) {
                    Some(SyncState::Synced) => k.synced += n,
                    Some(SyncState::Pending) => k.pending += n,
                    Some(SyncState::Error) => k.error += n,
                    None => {
                        return Err(StoreError::Corrupt("unknown sync state in mappings".into()));
                    }
                }
            }
            let outbox = query(
                tx,
                "SELECT kind, dead, COUNT(*) AS n FROM outbox GROUP BY kind, dead",
                &[],
            )
            .await?;
            for row in &outbox {
                let k = counts.per_kind.entry(kind_of(row, "kind")?).or_default();
                let dead: bool = row.try_get("dead").map_err(pg_error)?;
                let n = count(row, "n")?;
                if dead {
                    k.dead_lettered += n;
                    counts.dead_letters += n;
                } else {
                    k.outbox += n;
                    counts.outbox_depth += n;
                }
            }
            let inbox = query(
                tx,
                "SELECT status, COUNT(*) AS n FROM inbox WHERE status IN ('pending', 'failed') \
                 GROUP BY status",
                &[],
            )
            .await?;
            for row in &inbox {
                let status: String = row.try_get("status").map_err(pg_error)?;
                if status == InboxStatus::Pending.as_str() {
                    counts.inbox_backlog = count(row, "n")?;
                } else {
                    counts.inbox_failed = count(row, "n")?;
                }
            }
            Ok(counts)
        })
    }

    async fn inbox_insert_batch(
        &self,
        items: &[NewInboxItem],
        now: DateTime<Utc>,
    ) -> Result<Vec<Option<InboxId>>, StoreError> {
        in_tx!(self, |tx| {
            // Receivers on several instances may store the same deliveries at once: lock
            // every key (or stream) of the group, in one order so that groups cannot deadlock.
            let mut locks: Vec<&str> = items
                .iter()
                .map(|i| match &i.dedupe {
                    InboxDedupe::Stored => i.dedupe_key.as_str(),
                    InboxDedupe::Latest { stream, .. } => stream.as_str(),
                })
                .collect();
            locks.sort_unstable();
            locks.dedup();
            for key in locks {
                exec(
                    tx,
                    "SELECT pg_advisory_xact_lock(hashtextextended('keycrm-inbox:' || $1, 0))",
                    &[&key],
                )
                .await?;
            }
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let existing = query(
                    tx,
                    "SELECT id FROM inbox WHERE dedupe_key = $1",
                    &[&item.dedupe_key],
                )
                .await?;
                if let Some(row) = existing.first() {
                    let old: i64 = row.try_get(0).map_err(pg_error)?;
                    let duplicate = match &item.dedupe {
                        InboxDedupe::Stored => true,
                        InboxDedupe::Latest { stream, since } => {
                            let newest = query(
                                tx,
                                "SELECT id, received_at FROM inbox \
                                 WHERE left(dedupe_key, length($1)) = $1 \
                                 ORDER BY id DESC LIMIT 1",
                                &[stream],
                            )
                            .await?;
                            match newest.first() {
                                Some(row) => {
                                    let id: i64 = row.try_get(0).map_err(pg_error)?;
                                    let at: i64 = row.try_get(1).map_err(pg_error)?;
                                    id == old && at >= ts(*since)
                                }
                                None => false,
                            }
                        }
                    };
                    if duplicate {
                        out.push(None);
                        continue;
                    }
                    exec(
                        tx,
                        "UPDATE inbox SET dedupe_key = $2 WHERE id = $1",
                        &[&old, &retired_inbox_key(&item.dedupe_key, old)],
                    )
                    .await?;
                }
                let inserted = query(
                    tx,
                    "INSERT INTO inbox (dedupe_key, event, payload, received_at, status) \
                     VALUES ($1, $2, $3, $4, 'pending') RETURNING id",
                    &[
                        &item.dedupe_key,
                        &item.event,
                        &json(&item.payload),
                        &ts(now),
                    ],
                )
                .await?;
                let id: i64 = inserted
                    .first()
                    .ok_or_else(|| StoreError::Backend("insert returned no id".into()))?
                    .try_get(0)
                    .map_err(pg_error)?;
                out.push(Some(InboxId(id)));
            }
            Ok(out)
        })
    }
}
