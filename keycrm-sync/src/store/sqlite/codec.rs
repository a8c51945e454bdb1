//! Encoding values for SQLite and decoding rows (errors name the column, never the value).

use super::*;

pub(super) use crate::store::encode::{json, json_column, json_opt, limit, ts, ts_opt};

// ---- decoding (errors name the column, never the value) ----

pub(super) fn bad(idx: usize, msg: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, msg.into())
}

pub(super) fn col_kind(r: &Row<'_>, idx: usize) -> rusqlite::Result<EntityKind> {
    let s: String = r.get(idx)?;
    EntityKind::parse(&s).ok_or_else(|| bad(idx, "unknown entity kind".into()))
}

pub(super) fn col_ts(r: &Row<'_>, idx: usize) -> rusqlite::Result<DateTime<Utc>> {
    let micros: i64 = r.get(idx)?;
    DateTime::from_timestamp_micros(micros).ok_or_else(|| bad(idx, "timestamp out of range".into()))
}

pub(super) fn col_ts_opt(r: &Row<'_>, idx: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    match r.get::<_, Option<i64>>(idx)? {
        None => Ok(None),
        Some(_) => col_ts(r, idx).map(Some),
    }
}

pub(super) fn col_json<T: DeserializeOwned>(r: &Row<'_>, idx: usize) -> rusqlite::Result<T> {
    let s: String = r.get(idx)?;
    // serde_json's messages may quote the input: report only its category and position.
    serde_json::from_str(&s).map_err(|e| {
        bad(
            idx,
            format!(
                "invalid JSON ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ),
        )
    })
}

pub(super) fn col_json_opt<T: DeserializeOwned>(
    r: &Row<'_>,
    idx: usize,
) -> rusqlite::Result<Option<T>> {
    match r.get::<_, Option<String>>(idx)? {
        None => Ok(None),
        Some(_) => col_json(r, idx).map(Some),
    }
}

pub(super) const MAPPING_COLS: &str = "kind, local_id, remote_id, state, last_sync_at, error, content_hash, base, remote_updated_at, \
     in_flight";

pub(super) fn row_mapping(r: &Row<'_>) -> rusqlite::Result<Mapping> {
    let state: String = r.get(3)?;
    Ok(Mapping {
        kind: col_kind(r, 0)?,
        local_id: r.get(1)?,
        remote_id: r.get(2)?,
        state: SyncState::parse(&state).ok_or_else(|| bad(3, "unknown sync state".into()))?,
        last_sync_at: col_ts_opt(r, 4)?,
        error: r.get(5)?,
        content_hash: r.get(6)?,
        base: col_json_opt(r, 7)?,
        remote_updated_at: col_ts_opt(r, 8)?,
        in_flight: col_json_opt(r, 9)?,
    })
}

pub(super) const OUTBOX_COLS: &str = "id, kind, local_id, payload, revision, attempts, next_attempt_at, created_at, last_error, dead";

pub(super) fn row_outbox(r: &Row<'_>) -> rusqlite::Result<OutboxItem> {
    Ok(OutboxItem {
        id: OutboxId(r.get(0)?),
        kind: col_kind(r, 1)?,
        local_id: r.get(2)?,
        payload: col_json(r, 3)?,
        revision: r.get(4)?,
        attempts: r.get(5)?,
        next_attempt_at: col_ts(r, 6)?,
        created_at: col_ts(r, 7)?,
        last_error: r.get(8)?,
        dead: r.get(9)?,
    })
}

pub(super) const INBOX_COLS: &str =
    "id, dedupe_key, event, payload, received_at, processed_at, status, error";

pub(super) fn row_inbox(r: &Row<'_>) -> rusqlite::Result<InboxItem> {
    let status: String = r.get(6)?;
    Ok(InboxItem {
        id: InboxId(r.get(0)?),
        dedupe_key: r.get(1)?,
        event: r.get(2)?,
        payload: col_json(r, 3)?,
        received_at: col_ts(r, 4)?,
        processed_at: col_ts_opt(r, 5)?,
        status: InboxStatus::parse(&status).ok_or_else(|| bad(6, "unknown inbox status".into()))?,
        error: r.get(7)?,
    })
}

pub(super) const CONFLICT_COLS: &str = "at, kind, local_id, remote_id, field, base, local, remote, winner, reason, \
                             local_updated_at, remote_updated_at";

pub(super) fn row_conflict(r: &Row<'_>) -> rusqlite::Result<ConflictRecord> {
    Ok(ConflictRecord {
        at: col_ts(r, 0)?,
        kind: col_kind(r, 1)?,
        local_id: r.get(2)?,
        remote_id: r.get(3)?,
        field: r.get(4)?,
        base: col_json_opt(r, 5)?,
        local: col_json_opt(r, 6)?,
        remote: col_json_opt(r, 7)?,
        winner: r.get(8)?,
        reason: r.get(9)?,
        local_updated_at: col_ts_opt(r, 10)?,
        remote_updated_at: col_ts_opt(r, 11)?,
    })
}

pub(super) fn row_audit(r: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        at: col_ts(r, 0)?,
        kind: col_kind(r, 1)?,
        local_id: r.get(2)?,
        action: r.get(3)?,
        detail: r.get(4)?,
    })
}

pub(super) fn count_col(r: &Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    let n: i64 = r.get(idx)?;
    u64::try_from(n).map_err(|_| bad(idx, "negative count".into()))
}

pub(super) fn collect<T>(rows: impl Iterator<Item = rusqlite::Result<T>>) -> Result<Vec<T>, Fail> {
    Ok(rows.collect::<rusqlite::Result<Vec<T>>>()?)
}
