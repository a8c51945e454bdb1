//! Single writes, on a connection or inside a caller's transaction.

use super::codec::*;
use super::*;

/// Inserts or replaces a mapping; the caller provides the transaction.
pub(super) fn put_mapping_in(c: &Connection, m: &Mapping) -> Result<(), Fail> {
    if let Some(remote_id) = m.remote_id {
        let taken = c
            .prepare_cached(
                "SELECT 1 FROM mappings WHERE kind = ?1 AND remote_id = ?2 AND local_id <> ?3 LIMIT 1",
            )?
            .exists(params![m.kind.as_str(), remote_id, m.local_id])?;
        if taken {
            return Err(StoreError::DuplicateRemoteId {
                kind: m.kind,
                remote_id,
            }
            .into());
        }
    }
    let base = json_column(m.base.as_ref(), "base snapshot")?;
    let in_flight = json_column(m.in_flight.as_ref(), "in-flight note")?;
    c.prepare_cached(
        "INSERT INTO mappings (kind, local_id, remote_id, state, last_sync_at, error, content_hash, \
         base, remote_updated_at, in_flight) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
         ON CONFLICT (kind, local_id) DO UPDATE SET remote_id = excluded.remote_id, \
         state = excluded.state, last_sync_at = excluded.last_sync_at, error = excluded.error, \
         content_hash = excluded.content_hash, base = excluded.base, \
         remote_updated_at = excluded.remote_updated_at, in_flight = excluded.in_flight",
    )?
    .execute(params![
        m.kind.as_str(),
        m.local_id,
        m.remote_id,
        m.state.as_str(),
        ts_opt(m.last_sync_at),
        m.error,
        m.content_hash,
        base,
        ts_opt(m.remote_updated_at),
        in_flight,
    ])?;
    Ok(())
}

pub(super) fn delete_mapping_in(
    c: &Connection,
    kind: EntityKind,
    local_id: &str,
) -> Result<bool, Fail> {
    let n = c
        .prepare_cached("DELETE FROM mappings WHERE kind = ?1 AND local_id = ?2")?
        .execute(params![kind.as_str(), local_id])?;
    Ok(n > 0)
}

pub(super) fn enqueue_in(
    c: &Connection,
    kind: EntityKind,
    local_id: &str,
    payload: &Value,
    now: DateTime<Utc>,
) -> Result<OutboxId, Fail> {
    let id = c
        .prepare_cached(
            "INSERT INTO outbox (kind, local_id, payload, revision, attempts, next_attempt_at, \
             created_at, dead) VALUES (?1, ?2, ?3, 1, 0, ?4, ?4, 0) \
             ON CONFLICT (kind, local_id) WHERE dead = 0 DO UPDATE SET payload = excluded.payload, \
             revision = revision + 1, attempts = 0, next_attempt_at = excluded.next_attempt_at \
             RETURNING id",
        )?
        .query_row(
            params![kind.as_str(), local_id, json(payload), ts(now)],
            |r| r.get(0),
        )?;
    Ok(OutboxId(id))
}

pub(super) fn complete_outbox_in(
    c: &Connection,
    id: OutboxId,
    revision: i64,
) -> Result<bool, Fail> {
    let n = c
        .prepare_cached("DELETE FROM outbox WHERE id = ?1 AND revision = ?2 AND dead = 0")?
        .execute(params![id.0, revision])?;
    Ok(n > 0)
}

pub(super) fn set_cursor_in(
    c: &Connection,
    kind: EntityKind,
    name: &str,
    value: &str,
    now: DateTime<Utc>,
) -> Result<(), Fail> {
    c.prepare_cached(
        "INSERT INTO cursors (kind, name, value, updated_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (kind, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    )?
    .execute(params![kind.as_str(), name, value, ts(now)])?;
    Ok(())
}

pub(super) fn log_conflict_in(c: &Connection, r: &ConflictRecord) -> Result<(), Fail> {
    c.prepare_cached(
        "INSERT INTO conflicts (at, kind, local_id, remote_id, field, base, local, remote, winner, \
         reason, local_updated_at, remote_updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        ts(r.at),
        r.kind.as_str(),
        r.local_id,
        r.remote_id,
        r.field,
        json_opt(r.base.as_ref()),
        json_opt(r.local.as_ref()),
        json_opt(r.remote.as_ref()),
        r.winner,
        r.reason,
        ts_opt(r.local_updated_at),
        ts_opt(r.remote_updated_at),
    ])?;
    Ok(())
}

pub(super) fn log_audit_in(c: &Connection, e: &AuditEntry) -> Result<(), Fail> {
    c.prepare_cached(
        "INSERT INTO audit (at, kind, local_id, action, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        ts(e.at),
        e.kind.as_str(),
        e.local_id,
        e.action,
        e.detail
    ])?;
    Ok(())
}

/// Clears the values of a record's conflict entries for its personal fields; the caller
/// provides the transaction.
pub(super) fn forget_personal_in(
    c: &Connection,
    kind: EntityKind,
    local_id: &str,
) -> Result<u64, Fail> {
    let rows: Vec<(i64, String)> = {
        let mut stmt = c.prepare_cached(
            "SELECT id, field FROM conflicts WHERE kind = ?1 AND local_id = ?2 \
             AND (base IS NOT NULL OR local IS NOT NULL OR remote IS NOT NULL)",
        )?;
        collect(stmt.query_map(params![kind.as_str(), local_id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?)?
    };
    let mut changed = 0;
    let mut clear = c.prepare_cached(
        "UPDATE conflicts SET base = NULL, local = NULL, remote = NULL WHERE id = ?1",
    )?;
    for (id, field) in rows {
        if is_personal_field(kind, &field) {
            changed += clear.execute(params![id])? as u64;
        }
    }
    Ok(changed)
}
