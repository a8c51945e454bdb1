//! Writes inside a caller's transaction (single calls and [`WriteBatch`](crate::store::WriteBatch)
//! ops share them).

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use serde_json::Value;
use tokio_postgres::types::ToSql;

use super::codec::{json, json_column, json_opt, ts, ts_opt};
use super::pg_error;
use crate::model::EntityKind;
use crate::store::{
    AuditEntry, ConflictRecord, Mapping, OutboxId, StoreError, WriteOp, is_personal_field,
};

/// Runs a cached statement; returns the number of rows it changed.
pub(super) async fn exec(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, StoreError> {
    let st = tx.prepare_cached(sql).await.map_err(pg_error)?;
    tx.execute(&st, params).await.map_err(pg_error)
}

/// Runs a cached query.
pub(super) async fn query(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, StoreError> {
    let st = tx.prepare_cached(sql).await.map_err(pg_error)?;
    tx.query(&st, params).await.map_err(pg_error)
}

pub(super) async fn put_mapping_in(tx: &Transaction<'_>, m: &Mapping) -> Result<(), StoreError> {
    let kind = m.kind.as_str();
    if let Some(remote_id) = m.remote_id {
        let taken = query(
            tx,
            "SELECT 1 FROM mappings WHERE kind = $1 AND remote_id = $2 AND local_id <> $3 LIMIT 1",
            &[&kind, &remote_id, &m.local_id],
        )
        .await?;
        if !taken.is_empty() {
            return Err(StoreError::DuplicateRemoteId {
                kind: m.kind,
                remote_id,
            });
        }
    }
    let base = json_column(m.base.as_ref(), "base snapshot")?;
    let in_flight = json_column(m.in_flight.as_ref(), "in-flight note")?;
    exec(
        tx,
        "INSERT INTO mappings (kind, local_id, remote_id, state, last_sync_at, error, content_hash, \
         base, remote_updated_at, in_flight) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (kind, local_id) DO UPDATE SET remote_id = excluded.remote_id, \
         state = excluded.state, last_sync_at = excluded.last_sync_at, error = excluded.error, \
         content_hash = excluded.content_hash, base = excluded.base, \
         remote_updated_at = excluded.remote_updated_at, in_flight = excluded.in_flight",
        &[
            &kind,
            &m.local_id,
            &m.remote_id,
            &m.state.as_str(),
            &ts_opt(m.last_sync_at),
            &m.error,
            &m.content_hash,
            &base,
            &ts_opt(m.remote_updated_at),
            &in_flight,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn delete_mapping_in(
    tx: &Transaction<'_>,
    kind: EntityKind,
    local_id: &str,
) -> Result<bool, StoreError> {
    let n = exec(
        tx,
        "DELETE FROM mappings WHERE kind = $1 AND local_id = $2",
        &[&kind.as_str(), &local_id],
    )
    .await?;
    Ok(n > 0)
}

pub(super) async fn enqueue_in(
    tx: &Transaction<'_>,
    kind: EntityKind,
    local_id: &str,
    payload: &Value,
    now: DateTime<Utc>,
) -> Result<OutboxId, StoreError> {
    let rows = query(
        tx,
        "INSERT INTO outbox (kind, local_id, payload, revision, attempts, next_attempt_at, \
         created_at, dead) VALUES ($1, $2, $3, 1, 0, $4, $4, FALSE) \
         ON CONFLICT (kind, local_id) WHERE NOT dead DO UPDATE SET payload = excluded.payload, \
         revision = outbox.revision + 1, attempts = 0, next_attempt_at = excluded.next_attempt_at \
         RETURNING id",
        &[&kind.as_str(), &local_id, &json(payload), &ts(now)],
    )
    .await?;
    let row = rows
        .first()
        .ok_or_else(|| StoreError::Backend("enqueue returned no id".into()))?;
    Ok(OutboxId(row.try_get(0).map_err(pg_error)?))
}

pub(super) async fn complete_outbox_in(
    tx: &Transaction<'_>,
    id: OutboxId,
    revision: i64,
) -> Result<bool, StoreError> {
    let n = exec(
        tx,
        "DELETE FROM outbox WHERE id = $1 AND revision = $2 AND NOT dead",
        &[&id.0, &revision],
    )
    .await?;
    Ok(n > 0)
}

pub(super) async fn set_cursor_in(
    tx: &Transaction<'_>,
    kind: EntityKind,
    name: &str,
    value: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    exec(
        tx,
        "INSERT INTO cursors (kind, name, value, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (kind, name) DO UPDATE SET value = excluded.value, \
         updated_at = excluded.updated_at",
        &[&kind.as_str(), &name, &value, &ts(now)],
    )
    .await?;
    Ok(())
}

pub(super) async fn log_conflict_in(
    tx: &Transaction<'_>,
    r: &ConflictRecord,
) -> Result<(), StoreError> {
    exec(
        tx,
        "INSERT INTO conflicts (at, kind, local_id, remote_id, field, base, local, remote, winner, \
         reason, local_updated_at, remote_updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        &[
            &ts(r.at),
            &r.kind.as_str(),
            &r.local_id,
            &r.remote_id,
            &r.field,
            &json_opt(r.base.as_ref()),
            &json_opt(r.local.as_ref()),
            &json_opt(r.remote.as_ref()),
            &r.winner,
            &r.reason,
            &ts_opt(r.local_updated_at),
            &ts_opt(r.remote_updated_at),
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn log_audit_in(tx: &Transaction<'_>, e: &AuditEntry) -> Result<(), StoreError> {
    exec(
        tx,
        "INSERT INTO audit (at, kind, local_id, action, detail) VALUES ($1, $2, $3, $4, $5)",
        &[
            &ts(e.at),
            &e.kind.as_str(),
            &e.local_id,
            &e.action,
            &e.detail,
        ],
    )
    .await?;
    Ok(())
}

/// Clears the values of a record's conflict entries for its personal fields.
pub(super) async fn forget_personal_in(
    tx: &Transaction<'_>,
    kind: EntityKind,
    local_id: &str,
) -> Result<u64, StoreError> {
    let rows = query(
        tx,
        "SELECT id, field FROM conflicts WHERE kind = $1 AND local_id = $2 \
         AND (base IS NOT NULL OR local IS NOT NULL OR remote IS NOT NULL)",
        &[&kind.as_str(), &local_id],
    )
    .await?;
    let mut changed = 0;
    for row in rows {
        let id: i64 = row.try_get(0).map_err(pg_error)?;
        let field: String = row.try_get(1).map_err(pg_error)?;
        if is_personal_field(kind, &field) {
            changed += exec(
                tx,
                "UPDATE conflicts SET base = NULL, local = NULL, remote = NULL WHERE id = $1",
                &[&id],
            )
            .await?;
        }
    }
    Ok(changed)
}

/// Applies one op of a batch.
pub(super) async fn apply_op(tx: &Transaction<'_>, op: &WriteOp) -> Result<(), StoreError> {
    match op {
        WriteOp::PutMapping(m) => put_mapping_in(tx, m).await,
        WriteOp::DeleteMapping { kind, local_id } => {
            delete_mapping_in(tx, *kind, local_id).await.map(drop)
        }
        WriteOp::Enqueue {
            kind,
            local_id,
            payload,
            now,
        } => enqueue_in(tx, *kind, local_id, payload, *now)
            .await
            .map(drop),
        WriteOp::CompleteOutbox { id, revision } => {
            complete_outbox_in(tx, *id, *revision).await.map(drop)
        }
        WriteOp::SetCursor {
            kind,
            name,
            value,
            now,
        } => set_cursor_in(tx, *kind, name, value, *now).await,
        WriteOp::LogConflict(r) => log_conflict_in(tx, r).await,
        WriteOp::LogAudit(e) => log_audit_in(tx, e).await,
        WriteOp::ForgetPersonalConflicts { kind, local_id } => {
            forget_personal_in(tx, *kind, local_id).await.map(drop)
        }
    }
}
