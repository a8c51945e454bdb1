//! The PostgreSQL backend (feature `postgres`): one database shared by several engine
//! instances.
//!
//! Driver: `tokio-postgres` with a `deadpool-postgres` pool. Both are plain async libraries
//! without procedural macros or compile-time query checking, so they build quickly, and the
//! pool hands out connections whose prepared statements are cached.
//!
//! Work is claimed, never done twice: [`Store::due_outbox`] and [`Store::inbox_pending`] pick
//! their rows with `FOR UPDATE SKIP LOCKED` and put a lease on them (this store's instance id and
//! an expiry in the database's clock). Other instances skip leased rows until the lease runs out,
//! so the work of an instance that dies is taken over after [`PostgresStoreBuilder::lease`].
//! Completing, failing or marking a row ends its lease.
//!
//! One request quota per API key across instances: [`PostgresQuota`] (from
//! [`PostgresStore::quota`]) implements [`keycrm_api::SharedQuota`] with one row per key.

use std::fmt;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

#[cfg(doc)]
use super::Store;
use super::StoreError;

pub use quota::PostgresQuota;

mod codec;
mod quota;
mod store;
#[cfg(test)]
mod tests;
mod writes;

/// One step of the schema, applied once, in order (the missing steps in one transaction).
struct Migration {
    version: i64,
    sql: &'static str,
}

/// The schema steps, oldest first. Append new steps; never edit a released one.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: include_str!("migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        sql: include_str!("migrations/0002_quota.sql"),
    },
    Migration {
        version: 3,
        sql: include_str!("migrations/0003_in_flight.sql"),
    },
];

/// The schema version this build writes (the newest row of `keycrm_schema_version`).
pub const POSTGRES_SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The default lease of a claimed outbox item or inbox row.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(300);

/// The default number of outbox items one [`Store::due_outbox`] call claims.
pub const DEFAULT_CLAIM_LIMIT: usize = 500;

/// A [`Store`](super::Store) in a PostgreSQL schema, shared by every engine instance that
/// connects to it.
///
/// Each instance has its own id (random unless set with
/// [`PostgresStoreBuilder::instance_id`]); rows it claims are leased to it. Clones share the
/// pool and the instance id. Tables live in one schema (default `public`), created and
/// migrated on [`PostgresStoreBuilder::connect`]; concurrent starters migrate once (an advisory
/// lock serialises them).
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    instance: String,
    lease_micros: i64,
    claim_limit: usize,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The connection string may hold a password: not shown.
        f.debug_struct("PostgresStore")
            .field("instance", &self.instance)
            .field("lease_micros", &self.lease_micros)
            .field("claim_limit", &self.claim_limit)
            .finish_non_exhaustive()
    }
}

/// Builds a [`PostgresStore`].
pub struct PostgresStoreBuilder {
    url: String,
    schema: String,
    instance: Option<String>,
    lease: Duration,
    claim_limit: usize,
    pool_size: usize,
}

impl fmt::Debug for PostgresStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStoreBuilder")
            .field("schema", &self.schema)
            .field("instance", &self.instance)
            .field("lease", &self.lease)
            .field("claim_limit", &self.claim_limit)
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

impl PostgresStoreBuilder {
    /// The schema holding the tables (created if missing). Default `public`.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// This instance's id, written into the leases it takes. Default: random. Two live
    /// instances must not share an id.
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance = Some(id.into());
        self
    }

    /// How long a claimed row stays with this instance before another may take it over.
    /// Default [`DEFAULT_LEASE`]; choose it longer than one push of the claimed items takes.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// At most this many outbox items are claimed by one [`Store::due_outbox`](super::Store::due_outbox)
    /// call, so that the outbox is spread over the instances. Default [`DEFAULT_CLAIM_LIMIT`].
    pub fn claim_limit(mut self, limit: usize) -> Self {
        self.claim_limit = limit.max(1);
        self
    }

    /// The largest number of pooled connections. Default 8.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// Connects (without TLS: for a database on the same host or a private network), creates
    /// the schema when missing and brings it up to date. Fails with
    /// [`StoreError::NewerSchema`] when a newer version of this crate wrote the schema.
    pub async fn connect(self) -> Result<PostgresStore, StoreError> {
        let mut config: tokio_postgres::Config = self
            .url
            .parse()
            .map_err(|e: tokio_postgres::Error| StoreError::Backend(e.to_string()))?;
        if !valid_schema_name(&self.schema) {
            return Err(StoreError::Backend(
                "the schema name must be letters, digits and underscores".into(),
            ));
        }
        config.options(format!("-c search_path={}", self.schema));
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(self.pool_size)
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot build the pool: {e}")))?;
        migrate(&pool, &self.schema).await?;
        let instance = self.instance.unwrap_or_else(random_instance_id);
        Ok(PostgresStore {
            pool,
            instance,
            lease_micros: i64::try_from(self.lease.as_micros()).unwrap_or(i64::MAX),
            claim_limit: self.claim_limit,
        })
    }
}

impl PostgresStore {
    /// A builder for the database at `url` (a `postgres://` URL or a `key=value` string).
    pub fn builder(url: impl Into<String>) -> PostgresStoreBuilder {
        PostgresStoreBuilder {
            url: url.into(),
            schema: "public".into(),
            instance: None,
            lease: DEFAULT_LEASE,
            claim_limit: DEFAULT_CLAIM_LIMIT,
            pool_size: 8,
        }
    }

    /// Connects to `url` with the default settings (schema `public`, random instance id).
    pub async fn connect(url: impl Into<String>) -> Result<Self, StoreError> {
        Self::builder(url).connect().await
    }

    /// This instance's id (the owner written into its leases).
    pub fn instance_id(&self) -> &str {
        &self.instance
    }

    /// The schema version of the database (equal to [`POSTGRES_SCHEMA_VERSION`]).
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let c = self.conn().await?;
        let row = c
            .query_one("SELECT max(version) FROM keycrm_schema_version", &[])
            .await
            .map_err(pg_error)?;
        row.try_get::<_, Option<i64>>(0)
            .map_err(pg_error)
            .map(Option::unwrap_or_default)
    }

    /// The connection pool (for hosts that keep their own tables in the same database).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn conn(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Backend(format!("no PostgreSQL connection: {e}")))
    }
}

/// Schema names are put into SQL: only plain identifiers are accepted.
fn valid_schema_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// A random instance id: 16 hex digits from the standard library's seeded hasher, the
/// process id and the time.
fn random_instance_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", h.finish())
}

/// Maps a driver error; its messages name constraints and columns, never parameter values.
fn pg_error(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => {
            StoreError::Backend(format!("PostgreSQL {}: {}", db.code().code(), db.message()))
        }
        None => StoreError::Backend(format!("PostgreSQL: {e}")),
    }
}

/// Creates the schema and applies the steps it lacks. An advisory transaction lock keyed on
/// the schema name serialises instances starting together.
async fn migrate(pool: &Pool, schema: &str) -> Result<(), StoreError> {
    let mut c = pool
        .get()
        .await
        .map_err(|e| StoreError::Backend(format!("no PostgreSQL connection: {e}")))?;
    let tx = c.transaction().await.map_err(pg_error)?;
    match migrate_in(&tx, schema).await {
        Ok(()) => tx.commit().await.map_err(pg_error),
        Err(e) => {
            // Roll back now rather than on drop: the advisory lock is released at once.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

async fn migrate_in(
    tx: &deadpool_postgres::Transaction<'_>,
    schema: &str,
) -> Result<(), StoreError> {
    let supported = MIGRATIONS.last().map_or(0, |m| m.version);
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('keycrm-sync:' || $1, 0))",
        &[&schema],
    )
    .await
    .map_err(pg_error)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema}; \
         CREATE TABLE IF NOT EXISTS {schema}.keycrm_schema_version (\
             version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    ))
    .await
    .map_err(pg_error)?;
    let found: i64 = tx
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM keycrm_schema_version",
            &[],
        )
        .await
        .map_err(pg_error)?
        .try_get(0)
        .map_err(pg_error)?;
    if found > supported {
        return Err(StoreError::NewerSchema { found, supported });
    }
    for step in MIGRATIONS.iter().filter(|m| m.version > found) {
        tx.batch_execute(step.sql).await.map_err(|e| {
            StoreError::Backend(format!(
                "migration to schema version {} failed: {}",
                step.version,
                pg_error(e)
            ))
        })?;
        tx.execute(
            "INSERT INTO keycrm_schema_version (version) VALUES ($1)",
            &[&step.version],
        )
        .await
        .map_err(pg_error)?;
    }
    Ok(())
}
