//! Encoding values for PostgreSQL and decoding rows (errors name the column, never the value).
//!
//! The encodings are the SQLite store's: BIGINT microseconds, JSON as TEXT, enum names.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use tokio_postgres::Row;
use tokio_postgres::types::FromSql;

use super::pg_error;
use crate::model::EntityKind;
use crate::store::{
    AuditEntry, ConflictRecord, InboxId, InboxItem, InboxStatus, Mapping, OutboxId, OutboxItem,
    StoreError, SyncState,
};

/// The database's clock in microseconds (leases are measured in it, so that instances with
/// skewed clocks agree).
pub(super) const DB_NOW: &str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)";

pub(super) use crate::store::encode::{json, json_column, json_opt, limit, ts, ts_opt};

fn corrupt(column: &str, what: &str) -> StoreError {
    StoreError::Corrupt(format!("column {column}: {what}"))
}

fn get<'a, T: FromSql<'a>>(r: &'a Row, column: &str) -> Result<T, StoreError> {
    r.try_get(column).map_err(pg_error)
}

fn col_kind(r: &Row, column: &str) -> Result<EntityKind, StoreError> {
    let s: String = get(r, column)?;
    EntityKind::parse(&s).ok_or_else(|| corrupt(column, "unknown entity kind"))
}

fn col_ts(r: &Row, column: &str) -> Result<DateTime<Utc>, StoreError> {
    let micros: i64 = get(r, column)?;
    DateTime::from_timestamp_micros(micros).ok_or_else(|| corrupt(column, "timestamp out of range"))
}

fn col_ts_opt(r: &Row, column: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    match get::<Option<i64>>(r, column)? {
        None => Ok(None),
        Some(_) => col_ts(r, column).map(Some),
    }
}

fn col_json<T: DeserializeOwned>(r: &Row, column: &str) -> Result<T, StoreError> {
    let s: String = get(r, column)?;
    // serde_json's messages may quote the input: report only its category and position.
    serde_json::from_str(&s).map_err(|e| {
        corrupt(
            column,
            &format!(
                "invalid JSON ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ),
        )
    })
}

fn col_json_opt<T: DeserializeOwned>(r: &Row, column: &str) -> Result<Option<T>, StoreError> {
    match get::<Option<String>>(r, column)? {
        None => Ok(None),
        Some(_) => col_json(r, column).map(Some),
    }
}

pub(super) const MAPPING_COLS: &str = "kind, local_id, remote_id, state, last_sync_at, error, content_hash, base, remote_updated_at, \
     in_flight";

pub(super) fn row_mapping(r: &Row) -> Result<Mapping, StoreError> {
    let state: String = get(r, "state")?;
    Ok(Mapping {
        kind: col_kind(r, "kind")?,
        local_id: get(r, "local_id")?,
        remote_id: get(r, "remote_id")?,
        state: SyncState::parse(&state).ok_or_else(|| corrupt("state", "unknown sync state"))?,
        last_sync_at: col_ts_opt(r, "last_sync_at")?,
        error: get(r, "error")?,
        content_hash: get(r, "content_hash")?,
        base: col_json_opt(r, "base")?,
        remote_updated_at: col_ts_opt(r, "remote_updated_at")?,
        in_flight: col_json_opt(r, "in_flight")?,
    })
}

pub(super) const OUTBOX_COLS: &str = "id, kind, local_id, payload, revision, attempts, next_attempt_at, created_at, last_error, dead";

pub(super) fn row_outbox(r: &Row) -> Result<OutboxItem, StoreError> {
    let attempts: i32 = get(r, "attempts")?;
    Ok(OutboxItem {
        id: OutboxId(get(r, "id")?),
        kind: col_kind(r, "kind")?,
        local_id: get(r, "local_id")?,
        payload: col_json(r, "payload")?,
        revision: get(r, "revision")?,
        attempts: u32::try_from(attempts).map_err(|_| corrupt("attempts", "negative"))?,
        next_attempt_at: col_ts(r, "next_attempt_at")?,
        created_at: col_ts(r, "created_at")?,
        last_error: get(r, "last_error")?,
        dead: get(r, "dead")?,
    })
}

pub(super) const INBOX_COLS: &str =
    "id, dedupe_key, event, payload, received_at, processed_at, status, error";

pub(super) fn row_inbox(r: &Row) -> Result<InboxItem, StoreError> {
    let status: String = get(r, "status")?;
    Ok(InboxItem {
        id: InboxId(get(r, "id")?),
        dedupe_key: get(r, "dedupe_key")?,
        event: get(r, "event")?,
        payload: col_json(r, "payload")?,
        received_at: col_ts(r, "received_at")?,
        processed_at: col_ts_opt(r, "processed_at")?,
        status: InboxStatus::parse(&status)
            .ok_or_else(|| corrupt("status", "unknown inbox status"))?,
        error: get(r, "error")?,
    })
}

pub(super) const CONFLICT_COLS: &str = "at, kind, local_id, remote_id, field, base, local, remote, \
                                        winner, reason, local_updated_at, remote_updated_at";

pub(super) fn row_conflict(r: &Row) -> Result<ConflictRecord, StoreError> {
    Ok(ConflictRecord {
        at: col_ts(r, "at")?,
        kind: col_kind(r, "kind")?,
        local_id: get(r, "local_id")?,
        remote_id: get(r, "remote_id")?,
        field: get(r, "field")?,
        base: col_json_opt(r, "base")?,
        local: col_json_opt(r, "local")?,
        remote: col_json_opt(r, "remote")?,
        winner: get(r, "winner")?,
        reason: get(r, "reason")?,
        local_updated_at: col_ts_opt(r, "local_updated_at")?,
        remote_updated_at: col_ts_opt(r, "remote_updated_at")?,
    })
}

pub(super) fn row_audit(r: &Row) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        at: col_ts(r, "at")?,
        kind: col_kind(r, "kind")?,
        local_id: get(r, "local_id")?,
        action: get(r, "action")?,
        detail: get(r, "detail")?,
    })
}

pub(super) fn count(r: &Row, column: &str) -> Result<u64, StoreError> {
    let n: i64 = get(r, column)?;
    u64::try_from(n).map_err(|_| corrupt(column, "negative count"))
}

pub(super) fn kind_of(r: &Row, column: &str) -> Result<EntityKind, StoreError> {
    col_kind(r, column)
}

pub(super) fn rows<T>(
    rows: &[Row],
    f: impl Fn(&Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    rows.iter().map(f).collect()
}
