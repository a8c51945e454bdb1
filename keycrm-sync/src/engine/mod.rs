//! The sync engine: runs the outbound, inbound and reconciliation flows against a [`Store`],
//! a [`Host`] and a KeyCRM [`Client`].
//!
//! One run ([`SyncEngine::run_once`]) does, in order:
//!
//! 1. **collect**: asks the host which records changed since its cursor and writes each to
//!    the durable outbox (nothing is sent before it is stored);
//! 2. **pull**: reconciles KeyCRM's changes: orders and buyers by `updated_between` from the
//!    cursor minus the overlap (orders also by `created_between`), the catalogue and stock
//!    in full passes every [`FULL_PASS_EVERY`] runs; each remote record is planned against the
//!    base snapshot and applied to the host; cursors advance only after the pass is applied.
//!    Pages are read as raw JSON and decoded record by record: a record of an unknown shape is
//!    quarantined ([`SyncStatus::quarantined`], the audit log) and the rest of its page applied,
//!    but the pass is then incomplete (no cursor move, no tombstones). Records that already
//!    existed on both sides meet as a *first link* (audited once as [`FIRST_LINK_ACTION`]),
//!    their differences decided by the configured source of truth
//!    ([`SyncConfig::first_contact`]), not logged as conflicts;
//! 3. **inbox**: applies received webhooks (committed first by the
//!    [`WebhookReceiver`](crate::webhook::WebhookReceiver); see the `inbox` module: a worker
//!    also applies them as they arrive);
//! 4. **push**: sends due outbox items with as few requests as KeyCRM allows: unchanged
//!    records cost nothing, orders are created idempotently (bulk import with read-back by
//!    `source_uuid` for several), products imported 100 at a time, prices in one bulk
//!    `PUT /offers`, stock in one `PUT /offers/stocks` per warehouse. When KeyCRM refuses
//!    some rows of a batch (a 422 naming `stocks.3.sku`), those rows are dead-lettered with
//!    its message and the rest is sent again in the same run; one warehouse's failure never
//!    skips another. Before a create is sent, the body being created is noted as the record's
//!    base, so that a record created by a run that stopped before its bookkeeping is linked
//!    against what was sent, and a local edit made in between is not lost.
//!
//! Every applied change, push, conflict and failure is published to [`SyncEngine::subscribe`].

pub(crate) mod batch;
mod builder;
pub(crate) mod inbox;
mod logline;
pub(crate) mod pull;
pub(crate) mod push;
pub(crate) mod quarantine;
mod report;

pub use builder::SyncEngineBuilder;
pub use pull::FIRST_LINK_ACTION;
pub use quarantine::Quarantined;
pub use report::{
    ApiHealth, OutboxClock, RunObserver, RunPhase, RunReport, SyncError, SyncEvent, SyncStatus,
};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures_util::Stream;
use keycrm_api::{Client, Paginate};
use tokio::sync::{Mutex, broadcast};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::canonical::{Mappings, ORDER_STATUS_FIELD};
use crate::config::SyncConfig;
use crate::host::Host;
use crate::model::{EntityKind, redact};
use crate::plan::{Conflict, ConflictReason, Policy, Resolution, Side};
use crate::store::{AuditEntry, ConflictRecord, Mapping, Store, WriteBatch, WriteOp};

/// Catalogue and stock are reconciled in full passes, every this many runs (and on
/// [`SyncEngine::full_resync`]); orders and buyers incrementally on every run.
pub const FULL_PASS_EVERY: u64 = 12;

/// The two-way sync engine. Cheap to clone; clones share everything.
pub struct SyncEngine<S, H> {
    pub(crate) inner: Arc<Inner<S, H>>,
}

impl<S, H> Clone for SyncEngine<S, H> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

pub(crate) struct Inner<S, H> {
    pub(crate) client: Client,
    pub(crate) store: S,
    pub(crate) host: H,
    pub(crate) config: SyncConfig,
    pub(crate) mappings: Mappings,
    policies: std::sync::Mutex<BTreeMap<EntityKind, Policy>>,
    events: broadcast::Sender<SyncEvent>,
    run_lock: Mutex<()>,
    /// Woken by each new inbox row (see the `inbox` module).
    inbox_wake: tokio::sync::Notify,
    last_run: std::sync::Mutex<Option<RunReport>>,
    runs: AtomicU64,
    calls: AtomicU64,
    call_errors: AtomicU64,
    latency_micros: AtomicU64,
    ranks_loaded: std::sync::atomic::AtomicBool,
    /// Store writes gathered while a page is applied, written as one batch at its end (see
    /// [`SyncEngine::gathering`]). Only the task holding `run_lock` uses it.
    gathered: std::sync::Mutex<Option<WriteBatch>>,
    /// What the current run has read of KeyCRM's catalogue by SKU (emptied as each run
    /// starts; see [`crate::entity::offer::CatalogueRead`]).
    pub(crate) catalogue: std::sync::Mutex<crate::entity::offer::CatalogueRead>,
    outbox_clock: OutboxClock,
    shutdown: CancellationToken,
    run_observers: std::sync::RwLock<Vec<RunObserver>>,
}

/// Ends a gathering of store writes: [`SyncEngine::commit_gathered`] writes them; when the
/// gathering future is dropped before (cancelled), they are dropped too, as after a crash (the
/// records are pulled and linked again), and later writes go straight to the store.
pub(crate) struct Gathering<'a> {
    slot: &'a std::sync::Mutex<Option<WriteBatch>>,
}

impl Drop for Gathering<'_> {
    fn drop(&mut self) {
        self.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

impl<S: Store, H: Host> SyncEngine<S, H> {
    /// The store the engine writes to.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// The host the engine applies to.
    pub fn host(&self) -> &H {
        &self.inner.host
    }

    /// The KeyCRM client.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// A stream of [`SyncEvent`]s from now on. It holds no borrow of the engine (keep it in
    /// another task, drop the engine) and ends, after the events published before, when the
    /// engine shuts down
    /// ([`SyncEngine::shutdown`] or the token given to [`SyncEngineBuilder::shutdown`]).
    ///
    /// Lag: events are buffered per subscriber up to 4096; a subscriber that falls further
    /// behind never slows the engine: it skips the oldest events it missed and goes on with
    /// the newest (the skip is logged at debug level). The HTTP layer's streams go further and
    /// tell a lagging client so, then drop it.
    pub fn subscribe(&self) -> impl Stream<Item = SyncEvent> + Send + use<S, H> {
        let rx = self.inner.events.subscribe();
        let shutdown = self.inner.shutdown.clone();
        futures_util::stream::unfold((rx, shutdown), |(mut rx, shutdown)| async move {
            loop {
                let received = tokio::select! {
                    biased;
                    // Shut down: what was published before still comes, then the end.
                    () = shutdown.cancelled() => match rx.try_recv() {
                        Ok(event) => Ok(event),
                        Err(broadcast::error::TryRecvError::Lagged(skipped)) => {
                            Err(broadcast::error::RecvError::Lagged(skipped))
                        }
                        Err(_) => return None,
                    },
                    received = rx.recv() => received,
                };
                match received {
                    Ok(event) => return Some((event, (rx, shutdown))),
                    Err(broadcast::error::RecvError::Lagged(skipped)) => {
                        tracing::debug!(target: "keycrm_sync", skipped, "a subscriber lagged");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }

    /// Shuts the engine down: event streams end, and [`SyncEngine::run`] returns when it was
    /// given the same token (see [`SyncEngine::shutdown_token`]).
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// The engine's shutdown token (cancelled by [`SyncEngine::shutdown`]).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// Adds a function told when each run starts and ends (metrics, alerts).
    pub fn observe_runs(&self, observer: impl Fn(RunPhase<'_>) + Send + Sync + 'static) {
        self.inner
            .run_observers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Arc::new(observer));
    }

    fn tell_runs(&self, phase: RunPhase<'_>) {
        let observers = self
            .inner
            .run_observers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for observer in observers.iter() {
            observer(phase);
        }
    }

    /// Runs until `shutdown` is cancelled: one run now, then one every
    /// `sync_interval_secs`; beside it the inbox worker applies webhooks as they arrive
    /// ([`SyncEngine::run_inbox_worker`]). A failed run is logged and the loop goes on.
    pub async fn run(&self, shutdown: CancellationToken) {
        let periodic = async {
            loop {
                if let Err(error) = self.run_once().await {
                    logline::warn(&error, "sync run failed");
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(self.inner.config.sync_interval()) => {}
                }
            }
        };
        tokio::join!(periodic, self.run_inbox_worker(shutdown.clone()));
    }

    /// One complete run (collect, pull, inbox, push). Runs never overlap.
    pub async fn run_once(&self) -> Result<RunReport, SyncError> {
        let run = self.inner.runs.fetch_add(1, Ordering::Relaxed);
        self.run_with(run.is_multiple_of(FULL_PASS_EVERY), false)
            .await
    }

    /// Re-syncs everything: every local record is queued again, every kind is reconciled in a
    /// full pass (records missing from a complete pass become tombstones), then all is pushed.
    pub async fn full_resync(&self) -> Result<RunReport, SyncError> {
        self.inner.runs.fetch_add(1, Ordering::Relaxed);
        self.run_with(true, true).await
    }

    async fn run_with(&self, full: bool, everything: bool) -> Result<RunReport, SyncError> {
        let _guard = self.inner.run_lock.lock().await;
        self.tell_runs(RunPhase::Started {
            full_resync: everything,
        });
        let started = Instant::now();
        let requests_before = self.inner.client.stats().requests;
        let mut report = RunReport {
            started_at: Some(now()),
            full_pass: full,
            ..RunReport::default()
        };
        let span = tracing::info_span!(
            target: "keycrm_sync",
            "keycrm_sync.run",
            full,
            everything,
            records = tracing::field::Empty,
            requests = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        // Each stage's future is large (every KeyCRM call it may make is a state of it):
        // boxed, they live on the heap and a run fits the 2 MiB stack of a test thread.
        self.forget_catalogue();
        let result = async {
            Box::pin(self.ensure_status_ranks()).await;
            Box::pin(self.collect(&mut report, everything)).await?;
            Box::pin(self.pull(&mut report, full, everything)).await?;
            Box::pin(self.process_inbox(&mut report)).await?;
            Box::pin(self.push(&mut report)).await?;
            let cutoff =
                now() - chrono::Duration::days(i64::from(self.inner.config.retention_days));
            self.inner.store.purge(cutoff).await?;
            Ok::<_, SyncError>(())
        }
        .instrument(span.clone())
        .await;
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        report.requests = self.inner.client.stats().requests - requests_before;
        record_run(&span, &report, result.is_ok());
        *self
            .inner
            .last_run
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(report.clone());
        self.tell_runs(RunPhase::Finished {
            report: &report,
            ok: result.is_ok(),
        });
        result.map(|()| report)
    }

    /// Syncs one order now, both ways: its local change (if any) is pushed and its KeyCRM
    /// state pulled.
    pub async fn sync_order(&self, local_id: &str) -> Result<RunReport, SyncError> {
        self.sync_one(EntityKind::Order, local_id).await
    }

    /// Syncs one buyer now (see [`SyncEngine::sync_order`]).
    pub async fn sync_buyer(&self, local_id: &str) -> Result<RunReport, SyncError> {
        self.sync_one(EntityKind::Buyer, local_id).await
    }

    /// Syncs one product now (see [`SyncEngine::sync_order`]).
    pub async fn sync_product(&self, local_id: &str) -> Result<RunReport, SyncError> {
        self.sync_one(EntityKind::Product, local_id).await
    }

    /// Syncs one offer now (see [`SyncEngine::sync_order`]).
    pub async fn sync_offer(&self, local_id: &str) -> Result<RunReport, SyncError> {
        self.sync_one(EntityKind::Offer, local_id).await
    }

    async fn sync_one(&self, kind: EntityKind, local_id: &str) -> Result<RunReport, SyncError> {
        let _guard = self.inner.run_lock.lock().await;
        let started = Instant::now();
        let requests_before = self.inner.client.stats().requests;
        let mut report = RunReport {
            started_at: Some(now()),
            ..RunReport::default()
        };
        // A record the host does not have is an error of the caller, not a deletion: nothing
        // is queued, pulled or audited for it.
        if self
            .inner
            .host
            .load(kind, local_id.to_string())
            .await?
            .is_none()
        {
            return Err(SyncError::NotFound {
                kind,
                local_id: local_id.to_string(),
            });
        }
        self.forget_catalogue();
        Box::pin(self.ensure_status_ranks()).await;
        if let Some(mapping) = self.inner.store.get_mapping(kind, local_id).await?
            && let Some(remote_id) = mapping.remote_id
        {
            Box::pin(self.pull_one(kind, remote_id, &mut report)).await?;
        }
        self.inner
            .store
            .enqueue(kind, local_id, serde_json::json!({}), now())
            .await?;
        report.collected += 1;
        Box::pin(self.push_only(&mut report, Some((kind, local_id)))).await?;
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        report.requests = self.inner.client.stats().requests - requests_before;
        Ok(report)
    }

    /// The engine's status.
    pub async fn status(&self) -> Result<SyncStatus, SyncError> {
        let counts = self.inner.store.counts().await?;
        let quarantined = self.quarantined_all().await?;
        let stats = self.inner.client.stats();
        let calls = self.inner.calls.load(Ordering::Relaxed);
        Ok(SyncStatus {
            per_kind: counts.per_kind,
            outbox_depth: counts.outbox_depth,
            dead_letters: counts.dead_letters,
            inbox_backlog: counts.inbox_backlog,
            last_run: self
                .inner
                .last_run
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
            runs: self.inner.runs.load(Ordering::Relaxed),
            keycrm: ApiHealth {
                requests: stats.requests,
                errors: self.inner.call_errors.load(Ordering::Relaxed),
                rate_limited: stats.rate_limited,
                mean_latency_ms: if calls == 0 {
                    0.0
                } else {
                    self.inner.latency_micros.load(Ordering::Relaxed) as f64 / calls as f64 / 1000.0
                },
            },
            quarantined,
        })
    }

    /// Loads order status ranks from KeyCRM's status groups once, unless a policy has its own.
    async fn ensure_status_ranks(&self) {
        if self.inner.ranks_loaded.load(Ordering::Relaxed) {
            return;
        }
        let has_ranks = self
            .inner
            .policies
            .lock()
            .expect("lock")
            .get(&EntityKind::Order)
            .is_some_and(|p| p.status_field.is_some());
        if !has_ranks {
            let statuses = self
                .call(self.inner.client.order_status_list().collect_all())
                .await;
            match statuses {
                Ok(statuses) => {
                    let ranks: Vec<(String, i64)> = statuses
                        .iter()
                        .filter_map(|s| Some((s.id?.to_string(), s.group_id?)))
                        .collect();
                    let mut policies = self
                        .inner
                        .policies
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    let policy = policies
                        .entry(EntityKind::Order)
                        .or_insert_with(|| Policy::new(Resolution::NewestWins));
                    *policy = policy.clone().with_status_ranks(ORDER_STATUS_FIELD, ranks);
                }
                Err(error) => {
                    logline::warn(
                        &error,
                        "cannot read order statuses; status moves are not ranked",
                    );
                    return;
                }
            }
        }
        self.inner.ranks_loaded.store(true, Ordering::Relaxed);
    }

    /// The outbox's time (see [`SyncEngineBuilder::outbox_clock`]).
    pub(crate) fn outbox_now(&self) -> DateTime<Utc> {
        (self.inner.outbox_clock)()
    }

    pub(crate) fn policy(&self, kind: EntityKind) -> Policy {
        self.inner
            .policies
            .lock()
            .expect("lock")
            .get(&kind)
            .cloned()
            .unwrap_or_else(|| default_policy(kind))
    }

    /// Runs a KeyCRM call, recording its latency and failure.
    pub(crate) async fn call<T, E>(
        &self,
        fut: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, SyncError>
    where
        keycrm_api::Error: From<E>,
    {
        let started = Instant::now();
        let result = fut.await.map_err(keycrm_api::Error::from);
        self.inner.calls.fetch_add(1, Ordering::Relaxed);
        self.inner
            .latency_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        if result.is_err() {
            self.inner.call_errors.fetch_add(1, Ordering::Relaxed);
        }
        Ok(result?)
    }

    pub(crate) fn publish(&self, event: SyncEvent) {
        let event = match event {
            SyncEvent::Failed {
                kind,
                local_id,
                error,
                dead,
            } => SyncEvent::Failed {
                kind,
                local_id,
                error: redact::bounded(&error),
                dead,
            },
            other => other,
        };
        let _ = self.inner.events.send(event);
    }

    pub(crate) async fn log_conflicts(
        &self,
        kind: EntityKind,
        local_id: &str,
        remote_id: Option<i64>,
        conflicts: &[Conflict],
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        for c in conflicts {
            let reason = match &c.reason {
                ConflictReason::BothChanged { resolution } => {
                    format!("both changed; {resolution:?}")
                }
                ConflictReason::Owner { owner } => format!("field owned by {}", owner.as_str()),
                ConflictReason::StatusBackwards { refused } => {
                    format!("status may not move backwards ({refused:?} refused)")
                }
            };
            self.write(WriteOp::LogConflict(ConflictRecord {
                at: now(),
                kind,
                local_id: local_id.to_string(),
                remote_id,
                field: c.field.clone(),
                base: c.base.clone(),
                local: c.local.clone(),
                remote: c.remote.clone(),
                winner: c.winner.map_or("none", Side::as_str).to_string(),
                reason,
                local_updated_at: c.local_updated_at,
                remote_updated_at: c.remote_updated_at,
            }))
            .await?;
            report.conflicts += 1;
            self.publish(SyncEvent::Conflict {
                kind,
                local_id: local_id.to_string(),
                field: c.field.clone(),
                winner: c.winner,
            });
        }
        Ok(())
    }

    pub(crate) async fn audit(
        &self,
        kind: EntityKind,
        local_id: &str,
        action: &str,
        detail: String,
    ) -> Result<(), SyncError> {
        self.write(WriteOp::LogAudit(AuditEntry {
            at: now(),
            kind,
            local_id: local_id.to_string(),
            action: action.to_string(),
            detail: redact::bounded(&detail),
        }))
        .await
    }

    /// Starts gathering the store writes of [`Self::write`] into one batch, so that a page of
    /// a pass costs one transaction (one `fsync` on SQLite) instead of one per write. Reads
    /// through [`Self::mapping`] and [`Self::mapping_by_remote`] see the gathered writes.
    pub(crate) fn gathering(&self) -> Gathering<'_> {
        *self.inner.gathered.lock().expect("lock") = Some(WriteBatch::new());
        Gathering {
            slot: &self.inner.gathered,
        }
    }

    /// Writes what was gathered since [`Self::gathering`] in one transaction, and stops
    /// gathering.
    pub(crate) async fn commit_gathered(&self, gathering: Gathering<'_>) -> Result<(), SyncError> {
        let batch = gathering.slot.lock().expect("lock").take();
        drop(gathering);
        if let Some(batch) = batch {
            self.inner.store.write_batch(batch).await?;
        }
        Ok(())
    }

    /// A store write: gathered while a page is applied, else written at once.
    pub(crate) async fn write(&self, op: WriteOp) -> Result<(), SyncError> {
        let op = {
            let mut gathered = self.inner.gathered.lock().expect("lock");
            match gathered.as_mut() {
                Some(batch) => {
                    batch.push(op);
                    return Ok(());
                }
                None => op,
            }
        };
        self.inner.store.write_batch(op.into()).await?;
        Ok(())
    }

    /// The mapping of a host record, as the gathered writes leave it.
    pub(crate) async fn mapping(
        &self,
        kind: EntityKind,
        local_id: &str,
    ) -> Result<Option<Mapping>, SyncError> {
        if let Some(gathered) = self
            .inner
            .gathered
            .lock()
            .expect("lock")
            .as_ref()
            .and_then(|b| b.mapping(kind, local_id))
        {
            return Ok(gathered.cloned());
        }
        Ok(self.inner.store.get_mapping(kind, local_id).await?)
    }

    /// The mapping of a KeyCRM record, as the gathered writes leave it.
    pub(crate) async fn mapping_by_remote(
        &self,
        kind: EntityKind,
        remote_id: i64,
    ) -> Result<Option<Mapping>, SyncError> {
        if let Some(gathered) = self
            .inner
            .gathered
            .lock()
            .expect("lock")
            .as_ref()
            .and_then(|b| b.mapping_by_remote(kind, remote_id))
        {
            return Ok(Some(gathered.clone()));
        }
        let stored = self
            .inner
            .store
            .get_mapping_by_remote(kind, remote_id)
            .await?;
        // A gathered write that moved the remote id away from the stored record, or deleted
        // it, hides it.
        Ok(stored.filter(|m| {
            self.inner
                .gathered
                .lock()
                .expect("lock")
                .as_ref()
                .and_then(|b| b.mapping(kind, &m.local_id))
                .is_none()
        }))
    }
}

/// The policy of a kind nobody configured: the host owns its catalogue (products, prices)
/// and stock levels (its warehouse counts them), so its values win when both sides differ;
/// for orders and buyers the newer change wins.
pub fn default_policy(kind: EntityKind) -> Policy {
    match kind {
        EntityKind::Stock | EntityKind::Offer | EntityKind::Product => {
            Policy::new(Resolution::LocalWins)
        }
        EntityKind::Order | EntityKind::Buyer => Policy::new(Resolution::NewestWins),
    }
}

/// Records a run's figures on its span: records pulled and pushed, KeyCRM requests, outcome.
fn record_run(span: &tracing::Span, report: &RunReport, ok: bool) {
    let records = report.pulled + report.pushed;
    let outcome = if !ok {
        "failed"
    } else if report.failed > 0 || report.quarantined > 0 {
        "partial"
    } else {
        "ok"
    };
    span.record("records", records);
    span.record("requests", report.requests);
    span.record("outcome", outcome);
    span.in_scope(|| {
        tracing::info!(
            target: "keycrm_sync",
            records,
            requests = report.requests,
            outcome,
            conflicts = report.conflicts,
            quarantined = report.quarantined,
            "run finished"
        );
    });
}

/// The current UTC time.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now()
}

/// Backoff before the next attempt of an outbox item that failed `attempts` times before:
/// 30 s doubling, capped at 1 h.
pub(crate) fn outbox_backoff(attempts: u32) -> chrono::Duration {
    let secs = 30u64.saturating_mul(1u64 << attempts.min(7)).min(3600);
    chrono::Duration::seconds(secs as i64)
}

/// The engine's futures can be spawned on a multi-threaded runtime (checked at compile time).
#[allow(dead_code)]
fn assert_futures_are_send<S: Store, H: Host>(e: &SyncEngine<S, H>) {
    fn is_send<T: Send>(_: &T) {}
    is_send(&e.run_once());
    is_send(&e.full_resync());
    is_send(&e.sync_order(""));
    is_send(&e.ingest_webhook(&serde_json::Value::Null));
    is_send(&e.apply_inbox());
    is_send(&e.run(CancellationToken::new()));
    is_send(&e.status());
}
