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

use crate::model::EntityKind;
use crate::store::{
    AuditEntry, ConflictRecord, InboxDedupe, InboxId, InboxItem, InboxStatus, Mapping,
    NewInboxItem, OutboxId, OutboxItem, PurgeReport, Store, StoreCounts, StoreError, SyncState,
    WriteBatch, WriteOp, is_personal_field, retired_inbox_key,
};

/// One step of the schema: applied once, in order, in its own transaction.
struct Migration {
    /// The `PRAGMA user_version` the database has once this step is applied.
    version: i64,
    /// The SQL of the step.
    sql: &'static str,
}

/// The schema steps, oldest first. Append new steps; never edit a released one.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: include_str!("../migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        sql: include_str!("../migrations/0002_in_flight.sql"),
    },
];

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
    /// The file's single-writer lock, released after the thread has closed the database.
    lock: Option<std::fs::File>,
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
    ///
    /// One store per file: the file's lock (`<path>-lock`, an advisory lock the OS releases
    /// when the process ends) is held while the store or a clone of it exists. Fails with
    /// [`StoreError::InUse`] when another store, in this process or another, holds it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let lock = lock_file(path)?;
        let conn = Connection::open(path).map_err(sql_error)?;
        let mut store = Self::init(conn, true)?;
        if let Some(worker) = Arc::get_mut(&mut store.worker) {
            worker.lock = Some(lock);
        }
        Ok(store)
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
                lock: None,
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

/// Takes the single-writer lock of the database at `path` (the file `<path>-lock`).
fn lock_file(path: &Path) -> Result<std::fs::File, StoreError> {
    use fs4::fs_std::FileExt;
    let mut name = path.as_os_str().to_owned();
    name.push("-lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&name)
        .map_err(|e| StoreError::Backend(format!("cannot open the store's lock file: {e}")))?;
    match file.try_lock_exclusive() {
        Ok(true) => Ok(file),
        Ok(false) => Err(StoreError::InUse {
            path: path.display().to_string(),
        }),
        Err(e) => Err(StoreError::Backend(format!(
            "cannot lock the store's lock file: {e}"
        ))),
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

mod codec;
mod store;
mod writes;

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
