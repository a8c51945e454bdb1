//! [`PostgresQuota`]: one request quota per API key, shared by every instance through a row.

use std::fmt;
use std::time::Duration;

use deadpool_postgres::Pool;
use keycrm_api::quota::{QuotaError, QuotaFuture, QuotaRequest, Reservation, SharedQuota};
use sha2::{Digest, Sha256};

use super::codec::DB_NOW;
use super::{PostgresStore, pg_error};

/// A [`SharedQuota`] kept in the store's database: the generic cell rate algorithm's state
/// for one API key in one row, locked (`FOR UPDATE`) and updated in one transaction per
/// reservation, with every time read from the database's `clock_timestamp()`. Clients of
/// several instances built with [`ClientBuilder::shared_quota`](keycrm_api::ClientBuilder::shared_quota)
/// and the same key never exceed the quota together, and a 429 seen by one closes the gate
/// for all of them.
///
/// Make one with [`PostgresStore::quota`].
#[derive(Clone)]
pub struct PostgresQuota {
    pool: Pool,
    key_hash: String,
}

impl fmt::Debug for PostgresQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The hash only: the key itself is never kept.
        f.debug_struct("PostgresQuota")
            .field("key_hash", &self.key_hash)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// The quota of `api_key` shared through this store's database (the key is kept only as
    /// its SHA-256 hash).
    pub fn quota(&self, api_key: &str) -> PostgresQuota {
        let digest = Sha256::digest(api_key.as_bytes());
        let key_hash = digest.iter().map(|b| format!("{b:02x}")).collect();
        PostgresQuota {
            pool: self.pool.clone(),
            key_hash,
        }
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn duration(micros: i64) -> Duration {
    Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}

fn quota_error(e: crate::store::StoreError) -> QuotaError {
    Box::new(e)
}

/// The locked state row: `(tat, gate_until, now)`, all on the database's clock.
type State = (Option<Duration>, Option<Duration>, Duration);

impl PostgresQuota {
    /// Runs `f` on the locked state row inside one transaction; `f` answers the value and
    /// the `(tat, gate_until)` to store (`None`: unchanged).
    async fn with_row<T>(
        &self,
        f: impl FnOnce(State) -> (T, Option<(Option<Duration>, Option<Duration>)>),
    ) -> Result<T, QuotaError> {
        let mut c = self
            .pool
            .get()
            .await
            .map_err(|e| format!("no PostgreSQL connection for the quota: {e}"))?;
        let tx = c
            .transaction()
            .await
            .map_err(pg_error)
            .map_err(quota_error)?;
        tx.execute(
            "INSERT INTO quota (key_hash) VALUES ($1) ON CONFLICT (key_hash) DO NOTHING",
            &[&self.key_hash],
        )
        .await
        .map_err(pg_error)
        .map_err(quota_error)?;
        let row = tx
            .query_one(
                &format!(
                    "SELECT tat, gate_until, {DB_NOW} AS now FROM quota WHERE key_hash = $1 \
                     FOR UPDATE"
                ),
                &[&self.key_hash],
            )
            .await
            .map_err(pg_error)
            .map_err(quota_error)?;
        let tat: Option<i64> = row.try_get(0).map_err(pg_error).map_err(quota_error)?;
        let gate: Option<i64> = row.try_get(1).map_err(pg_error).map_err(quota_error)?;
        let now: i64 = row.try_get(2).map_err(pg_error).map_err(quota_error)?;
        let (out, update) = f((tat.map(duration), gate.map(duration), duration(now)));
        if let Some((tat, gate)) = update {
            tx.execute(
                "UPDATE quota SET tat = $2, gate_until = $3 WHERE key_hash = $1",
                &[&self.key_hash, &tat.map(micros), &gate.map(micros)],
            )
            .await
            .map_err(pg_error)
            .map_err(quota_error)?;
        }
        tx.commit().await.map_err(pg_error).map_err(quota_error)?;
        Ok(out)
    }
}

impl SharedQuota for PostgresQuota {
    fn reserve(&self, request: QuotaRequest) -> QuotaFuture<'_, Reservation> {
        Box::pin(self.with_row(move |(tat, gate, now)| {
            let (answer, next) = request.step(tat, gate, now);
            (answer, (next != tat).then_some((next, gate)))
        }))
    }

    fn close_gate(&self, retry_after: Duration) -> QuotaFuture<'_, ()> {
        Box::pin(self.with_row(move |(tat, gate, now)| {
            let until = now.saturating_add(retry_after);
            if gate.is_some_and(|g| g >= until) {
                return ((), None);
            }
            // Later slots start after the gate; slots booked before are given up by their
            // holders, who find the gate closed when they wake.
            let tat = Some(tat.map_or(until, |t| t.max(until)));
            ((), Some((tat, Some(until))))
        }))
    }

    fn gate(&self) -> QuotaFuture<'_, Option<Duration>> {
        Box::pin(self.with_row(|(_, gate, now)| {
            (
                gate.filter(|g| *g > now).map(|g| g.saturating_sub(now)),
                None,
            )
        }))
    }
}
