//! The SQLite backend (bundled SQLite, no system library).

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::oneshot;

use super::{
    AuditEntry, ConflictRecord, InboxDedupe, InboxId, InboxItem, InboxStatus, Mapping,
    NewInboxItem, OutboxId, OutboxItem, PurgeReport, Store, StoreCounts, StoreError, SyncState,
    WriteBatch, WriteOp, is_personal_field, retired_inbox_key,
};
use crate::model::EntityKind;

/// One step of the schema: applied once, in order, in its own transaction.
struct Migration {
    /// The `PRAGMA user_version` the database has once this step is applied.
    version: i64,
    /// The SQL of the step.
    sql: &'static str,
}

/// The schema steps, oldest first. Append new steps; never edit a released one.
const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    sql: include_str!("migrations/0001_initial.sql"),
}];

/// The schema version this build writes (`PRAGMA user_version` of an up-to-date database).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How long a call waits for another process holding the database lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A [`Store`] in one SQLite file: the embedded default.
///
/// The database runs with `journal_mode=WAL`, `synchronous=FULL` (a committed call survives a
/// crash or power loss, so the engine may acknowledge a webhook right after
/// [`Store::inbox_insert`] returns), `foreign_keys=ON`, `secure_delete=ON` (deleted and purged
/// rows are overwritten with zeros, not left readable in free pages) and a 5 s busy timeout.
/// Each call is one transaction; [`Store::write_batch`] groups many writes in one.
///
/// The connection lives on a dedicated thread, fed by a channel: calls never block the async
/// runtime's threads, neither for an `fsync` (0.2-4 ms per commit) nor while waiting for
/// another process that holds the database lock (up to the busy timeout), and they work on
/// any executor. Calls run one at a time, in the order they were made. Clones share the
/// connection; when the last clone is dropped, the thread finishes the calls already made,
/// closes the database and is joined.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    worker: Arc<Worker>,
}

/// A call to run on the connection thread.
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// The connection thread and the channel that feeds it.
struct Worker {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("running", &self.jobs.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop once the calls already made are done.
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Backend("the SQLite connection thread has stopped".into())
}

/// An internal failure: SQL or a store-level error.
enum Fail {
    Sql(rusqlite::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Self {
        Fail::Sql(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

impl From<Fail> for StoreError {
    fn from(f: Fail) -> Self {
        match f {
            Fail::Store(e) => e,
            Fail::Sql(e) => sql_error(e),
        }
    }
}

/// Maps a rusqlite error; its messages name columns and constraints, never values.
fn sql_error(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => StoreError::Corrupt(e.to_string()),
        _ => StoreError::Backend(e.to_string()),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    ///
    /// Blocks briefly (file I/O, and the migrations on first use). Fails with
    /// [`StoreError::NewerSchema`] when the file was written by a newer version of this crate.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(sql_error)?;
        Self::init(conn, true)
    }

    /// A fresh database in memory (same schema and rules, nothing survives the store).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().map_err(sql_error)?;
        Self::init(conn, false)
    }

    fn init(mut conn: Connection, file: bool) -> Result<Self, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sql_error)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(sql_error)?;
        if file && !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "could not enable WAL journal mode (got {mode})"
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql_error)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sql_error)?;
        conn.pragma_update(None, "secure_delete", "ON")
            .map_err(sql_error)?;
        migrate(&mut conn, MIGRATIONS)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("keycrm-sqlite".into())
            .spawn(move || {
                let mut conn = conn;
                while let Ok(job) = queue.recv() {
                    // A panic in a call drops its reply (the caller gets an error) and rolls
                    // back its open transaction; the thread goes on serving the others.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut conn)));
                }
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the SQLite thread: {e}")))?;
        Ok(Self {
            worker: Arc::new(Worker {
                jobs: Some(jobs),
                thread: Some(thread),
            }),
        })
    }

    /// The schema version of the open database (equal to [`SCHEMA_VERSION`]).
    ///
    /// Waits for the connection thread: do not call it from a task of a single-threaded
    /// runtime that other work depends on (it is meant for start-up and diagnostics).
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.call_blocking(|c| Ok(user_version(c)?))
    }

    fn submit(&self, job: Job) -> Result<(), StoreError> {
        self.worker
            .jobs
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())
    }

    /// Runs `f` on the connection thread and awaits its result without blocking the runtime.
    async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, Fail> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.submit(Box::new(move |c| {
            let _ = reply.send(f(c).map_err(StoreError::from));
        }))?;
        answer.await.map_err(|_| stopped())?
    }

    /// Runs `f` on the connection thread and blocks the calling thread until it is done.
    fn call_blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, Fail> + Send + 'static,
    {
        let (reply, answer) = mpsc::sync_channel(1);
        self.submit(Box::new(move |c| {
            let _ = reply.send(f(c).map_err(StoreError::from));
        }))?;
        answer.recv().map_err(|_| stopped())?
    }

    /// The thread the connection lives on (for tests).
    #[cfg(test)]
    pub(super) fn connection_thread(&self) -> std::thread::ThreadId {
        self.worker
            .thread
            .as_ref()
            .map(|t| t.thread().id())
            .expect("the thread runs while the store exists")
    }

    /// The value of a pragma on the store's connection (for tests).
    #[cfg(test)]
    pub(super) fn pragma_text(&self, name: &str) -> Result<String, StoreError> {
        let name = name.to_owned();
        self.call_blocking(move |c| {
            Ok(c.pragma_query_value(None, &name, |r| r.get::<_, rusqlite::types::Value>(0))?)
        })
        .map(|v| match v {
            rusqlite::types::Value::Integer(i) => i.to_string(),
            rusqlite::types::Value::Text(s) => s,
            other => format!("{other:?}"),
        })
    }
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// Applies the steps of `steps` the database lacks, each in its own immediate transaction
/// (re-checking the version under the write lock, so concurrent openers apply each step once).
fn migrate(conn: &mut Connection, steps: &[Migration]) -> Result<(), StoreError> {
    let supported = steps.last().map_or(0, |m| m.version);
    let found = user_version(conn).map_err(sql_error)?;
    if found > supported {
        return Err(StoreError::NewerSchema { found, supported });
    }
    if found == supported {
        return Ok(());
    }
    for step in steps {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_error)?;
        let current = user_version(&tx).map_err(sql_error)?;
        if current > supported {
            return Err(StoreError::NewerSchema {
                found: current,
                supported,
            });
        }
        if current >= step.version {
            continue;
        }
        if current != step.version - 1 {
            return Err(StoreError::Corrupt(format!(
                "schema version {current} cannot be migrated by step {}",
                step.version
            )));
        }
        tx.execute_batch(step.sql).map_err(|e| {
            StoreError::Backend(format!(
                "migration to schema version {} failed: {e}",
                step.version
            ))
        })?;
        tx.pragma_update(None, "user_version", step.version)
            .map_err(sql_error)?;
        tx.commit().map_err(sql_error)?;
    }
    Ok(())
}

// ---- encoding ----

fn ts(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn ts_opt(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(ts)
}

fn json(v: &Value) -> String {
    v.to_string()
}

fn json_opt(v: Option<&Value>) -> Option<String> {
    v.map(json)
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

// ---- decoding (errors name the column, never the value) ----

fn bad(idx: usize, msg: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, msg.into())
}

fn col_kind(r: &Row<'_>, idx: usize) -> rusqlite::Result<EntityKind> {
    let s: String = r.get(idx)?;
    EntityKind::parse(&s).ok_or_else(|| bad(idx, "unknown entity kind".into()))
}

fn col_ts(r: &Row<'_>, idx: usize) -> rusqlite::Result<DateTime<Utc>> {
    let micros: i64 = r.get(idx)?;
    DateTime::from_timestamp_micros(micros).ok_or_else(|| bad(idx, "timestamp out of range".into()))
}

fn col_ts_opt(r: &Row<'_>, idx: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    match r.get::<_, Option<i64>>(idx)? {
        None => Ok(None),
        Some(_) => col_ts(r, idx).map(Some),
    }
}

fn col_json<T: DeserializeOwned>(r: &Row<'_>, idx: usize) -> rusqlite::Result<T> {
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

fn col_json_opt<T: DeserializeOwned>(r: &Row<'_>, idx: usize) -> rusqlite::Result<Option<T>> {
    match r.get::<_, Option<String>>(idx)? {
        None => Ok(None),
        Some(_) => col_json(r, idx).map(Some),
    }
}

const MAPPING_COLS: &str =
    "kind, local_id, remote_id, state, last_sync_at, error, content_hash, base, remote_updated_at";

fn row_mapping(r: &Row<'_>) -> rusqlite::Result<Mapping> {
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
    })
}

const OUTBOX_COLS: &str = "id, kind, local_id, payload, revision, attempts, next_attempt_at, created_at, last_error, dead";

fn row_outbox(r: &Row<'_>) -> rusqlite::Result<OutboxItem> {
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

const INBOX_COLS: &str = "id, dedupe_key, event, payload, received_at, processed_at, status, error";

fn row_inbox(r: &Row<'_>) -> rusqlite::Result<InboxItem> {
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

const CONFLICT_COLS: &str = "at, kind, local_id, remote_id, field, base, local, remote, winner, reason, \
                             local_updated_at, remote_updated_at";

fn row_conflict(r: &Row<'_>) -> rusqlite::Result<ConflictRecord> {
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

fn row_audit(r: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        at: col_ts(r, 0)?,
        kind: col_kind(r, 1)?,
        local_id: r.get(2)?,
        action: r.get(3)?,
        detail: r.get(4)?,
    })
}

fn count_col(r: &Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    let n: i64 = r.get(idx)?;
    u64::try_from(n).map_err(|_| bad(idx, "negative count".into()))
}

fn collect<T>(rows: impl Iterator<Item = rusqlite::Result<T>>) -> Result<Vec<T>, Fail> {
    Ok(rows.collect::<rusqlite::Result<Vec<T>>>()?)
}

// ---- single writes, on a connection or inside a caller's transaction ----

/// Inserts or replaces a mapping; the caller provides the transaction.
fn put_mapping_in(c: &Connection, m: &Mapping) -> Result<(), Fail> {
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
    let base = m
        .base
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|_| StoreError::Backend("base snapshot could not be encoded".into()))?;
    c.prepare_cached(
        "INSERT INTO mappings (kind, local_id, remote_id, state, last_sync_at, error, content_hash, \
         base, remote_updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
         ON CONFLICT (kind, local_id) DO UPDATE SET remote_id = excluded.remote_id, \
         state = excluded.state, last_sync_at = excluded.last_sync_at, error = excluded.error, \
         content_hash = excluded.content_hash, base = excluded.base, \
         remote_updated_at = excluded.remote_updated_at",
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
    ])?;
    Ok(())
}

fn delete_mapping_in(c: &Connection, kind: EntityKind, local_id: &str) -> Result<bool, Fail> {
    let n = c
        .prepare_cached("DELETE FROM mappings WHERE kind = ?1 AND local_id = ?2")?
        .execute(params![kind.as_str(), local_id])?;
    Ok(n > 0)
}

fn enqueue_in(
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

fn complete_outbox_in(c: &Connection, id: OutboxId, revision: i64) -> Result<bool, Fail> {
    let n = c
        .prepare_cached("DELETE FROM outbox WHERE id = ?1 AND revision = ?2 AND dead = 0")?
        .execute(params![id.0, revision])?;
    Ok(n > 0)
}

fn set_cursor_in(
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

fn log_conflict_in(c: &Connection, r: &ConflictRecord) -> Result<(), Fail> {
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

fn log_audit_in(c: &Connection, e: &AuditEntry) -> Result<(), Fail> {
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
fn forget_personal_in(c: &Connection, kind: EntityKind, local_id: &str) -> Result<u64, Fail> {
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

#[cfg(test)]
pub(super) mod test_support {
    //! Access to the migration runner for the store tests.

    use super::*;

    /// Runs `migrate` with custom steps given as `(version, sql)`.
    pub(in crate::store) fn migrate_steps(
        conn: &mut Connection,
        steps: &[(i64, &'static str)],
    ) -> Result<(), StoreError> {
        let steps: Vec<Migration> = steps
            .iter()
            .map(|&(version, sql)| Migration { version, sql })
            .collect();
        migrate(conn, &steps)
    }

    /// The versions of the built-in steps, in order.
    pub(in crate::store) fn versions() -> Vec<i64> {
        MIGRATIONS.iter().map(|m| m.version).collect()
    }
}
