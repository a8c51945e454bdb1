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

mod batch;
mod inbox;
mod logline;
mod pull;
mod push;
mod quarantine;

pub use pull::FIRST_LINK_ACTION;
pub use quarantine::Quarantined;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures_util::Stream;
use keycrm_api::{Client, Paginate};
use serde::Serialize;
use tokio::sync::{Mutex, broadcast};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::canonical::{MappingError, Mappings, ORDER_STATUS_FIELD};
use crate::config::SyncConfig;
use crate::host::{Host, HostError};
use crate::model::{EntityKind, redact};
use crate::plan::{Conflict, ConflictReason, Policy, Resolution, Side};
use crate::store::{
    AuditEntry, ConflictRecord, KindCounts, Mapping, Store, StoreError, WriteBatch, WriteOp,
};

/// Catalogue and stock are reconciled in full passes, every this many runs (and on
/// [`SyncEngine::full_resync`]); orders and buyers incrementally on every run.
pub const FULL_PASS_EVERY: u64 = 12;

/// An error of the engine. Messages carry no customer data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// A KeyCRM call failed. The message is bounded (KeyCRM's own messages and validation
    /// lists are cut at 512 characters).
    #[error("KeyCRM: {}", redact::bounded(&.0.to_string()))]
    Api(#[from] keycrm_api::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The host failed.
    #[error(transparent)]
    Host(#[from] HostError),
    /// A record could not be mapped (an unmapped status, a missing field).
    #[error(transparent)]
    Mapping(#[from] MappingError),
    /// The engine was built without something it needs.
    #[error("sync engine configuration: {0}")]
    Config(String),
    /// A webhook body is not one KeyCRM sends.
    #[error(transparent)]
    Webhook(#[from] crate::webhook::WebhookError),
    /// A stock push was refused by the mass-zeroing guard.
    #[error("stock push refused: it would zero {zeroed} of {total} SKUs (limit {limit:.0} %)")]
    MassZeroing {
        /// SKUs the push would set to zero.
        zeroed: usize,
        /// SKUs in the push.
        total: usize,
        /// The configured limit, in percent.
        limit: f64,
    },
    /// An on-demand sync named a record the host does not have.
    #[error("the host has no {kind} with the given id")]
    NotFound {
        /// Kind of record.
        kind: EntityKind,
        /// The id asked for.
        local_id: String,
    },
    /// KeyCRM answered with something the engine cannot use (a record without its id, or
    /// another record than the one asked for).
    #[error("unusable KeyCRM answer to {operation}: {problem}")]
    Answer {
        /// The call answered (`GET /order/{id}`).
        operation: &'static str,
        /// What is wrong with the answer (never its values).
        problem: &'static str,
    },
}

/// What the engine publishes to subscribers, for the host to forward to its own clients.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SyncEvent {
    /// A KeyCRM change was applied to the host.
    Applied {
        /// Kind of record.
        kind: EntityKind,
        /// The host's id.
        local_id: String,
        /// KeyCRM's id, when it has one.
        remote_id: Option<i64>,
    },
    /// A local change was written to KeyCRM.
    Pushed {
        /// Kind of record.
        kind: EntityKind,
        /// The host's id.
        local_id: String,
        /// KeyCRM's id, when it has one.
        remote_id: Option<i64>,
    },
    /// A field changed on both sides; one value won and the other is in the conflict log.
    Conflict {
        /// Kind of record.
        kind: EntityKind,
        /// The host's id.
        local_id: String,
        /// The field.
        field: String,
        /// Which side's value was kept (`None`: neither, the base was kept).
        winner: Option<Side>,
    },
    /// Syncing a record failed; it will be retried (or is dead-lettered).
    Failed {
        /// Kind of record.
        kind: EntityKind,
        /// The host's id.
        local_id: String,
        /// What failed (no customer data).
        error: String,
        /// Whether retries are exhausted.
        dead: bool,
    },
    /// An inbound change (a webhook, a reconciliation pass) was held for review instead of
    /// applied: an alert for operators (the mass-zeroing guard).
    Held {
        /// Kind of record.
        kind: EntityKind,
        /// What was held (`webhook <inbox id>`, `stock pass`).
        source: String,
        /// Why (no customer data).
        reason: String,
    },
    /// An alert fired or resolved (the service layer's alert rules).
    Alert {
        /// The rule (`sync_errors`, `keycrm_unavailable`, ...).
        alert: String,
        /// `critical` or `warning`.
        severity: String,
        /// Whether it now fires (`false`: it resolved).
        firing: bool,
        /// What is wrong (no customer data).
        message: String,
    },
    /// A background job (a full resync started over HTTP) started, progressed or ended.
    Job {
        /// The job's id.
        id: String,
        /// `running`, `succeeded` or `failed`.
        state: String,
        /// Records applied, pushed, failed so far.
        processed: u64,
    },
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunReport {
    /// When the run started.
    pub started_at: Option<DateTime<Utc>>,
    /// How long it took, in milliseconds.
    pub elapsed_ms: u64,
    /// Local changes written to the outbox.
    pub collected: u64,
    /// Remote records examined by reconciliation and webhooks.
    pub pulled: u64,
    /// Remote changes applied to the host.
    pub applied: u64,
    /// Records written to KeyCRM.
    pub pushed: u64,
    /// Outbox items that needed no request (nothing changed).
    pub unchanged: u64,
    /// Conflicts logged.
    pub conflicts: u64,
    /// Records that failed (and will be retried or are dead-lettered).
    pub failed: u64,
    /// KeyCRM requests the run made.
    pub requests: u64,
    /// Whether catalogue and stock were reconciled in full.
    pub full_pass: bool,
    /// Remote records that could not be decoded and were set aside (see
    /// [`SyncStatus::quarantined`]).
    pub quarantined: u64,
}

impl RunReport {
    /// Adds another report's counts to this one.
    pub fn absorb(&mut self, other: &RunReport) {
        self.collected += other.collected;
        self.pulled += other.pulled;
        self.applied += other.applied;
        self.pushed += other.pushed;
        self.unchanged += other.unchanged;
        self.conflicts += other.conflicts;
        self.failed += other.failed;
        self.quarantined += other.quarantined;
    }
}

/// The engine's status: what is synced, pending and failing, and how KeyCRM behaves.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncStatus {
    /// Per kind: synced, pending, error, dead-lettered, outbox items.
    pub per_kind: BTreeMap<EntityKind, KindCounts>,
    /// Live outbox items.
    pub outbox_depth: u64,
    /// Dead-lettered outbox items.
    pub dead_letters: u64,
    /// Webhooks stored but not yet applied.
    pub inbox_backlog: u64,
    /// The last run, if any.
    pub last_run: Option<RunReport>,
    /// Runs since the engine started.
    pub runs: u64,
    /// KeyCRM traffic of this engine's client.
    pub keycrm: ApiHealth,
    /// Remote records set aside because they cannot be decoded (kind, remote id, JSON path,
    /// operation); the passes that met them stay incomplete until they decode again.
    pub quarantined: Vec<Quarantined>,
}

/// KeyCRM traffic as the engine saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ApiHealth {
    /// Requests sent (retries included).
    pub requests: u64,
    /// Calls that failed after retries.
    pub errors: u64,
    /// 429 answers received.
    pub rate_limited: u64,
    /// Mean latency of the engine's calls, in milliseconds.
    pub mean_latency_ms: f64,
}

/// The time the outbox is scheduled by (see [`SyncEngineBuilder::outbox_clock`]).
pub type OutboxClock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// A run's start or end, as told to run observers (the service layer's metrics and alerts).
#[derive(Debug, Clone, Copy)]
pub enum RunPhase<'a> {
    /// A run (periodic, full or one record) took the run lock and started.
    Started {
        /// Whether it is a full resync.
        full_resync: bool,
    },
    /// The run ended.
    Finished {
        /// What it did.
        report: &'a RunReport,
        /// Whether it ended without error.
        ok: bool,
    },
}

/// A function told when runs start and end (see [`SyncEngine::observe_runs`]).
pub type RunObserver = Arc<dyn Fn(RunPhase<'_>) + Send + Sync>;

/// Builds a [`SyncEngine`].
pub struct SyncEngineBuilder<S, H> {
    client: Option<Client>,
    store: Option<S>,
    host: Option<H>,
    config: SyncConfig,
    mappings: Option<Mappings>,
    policies: BTreeMap<EntityKind, Policy>,
    outbox_clock: Option<OutboxClock>,
    shutdown: Option<CancellationToken>,
}

impl<S: Store, H: Host> SyncEngineBuilder<S, H> {
    /// The token that shuts the engine down (default: a token of its own, cancelled by
    /// [`SyncEngine::shutdown`]). Give it the token the host's server shuts down with, so that
    /// event streams ([`SyncEngine::subscribe`], SSE, WebSocket) end and a graceful shutdown
    /// does not wait for connected clients.
    pub fn shutdown(mut self, token: CancellationToken) -> Self {
        self.shutdown = Some(token);
        self
    }

    /// The KeyCRM client (required). Its quota pacing and retries apply to every call.
    pub fn client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    /// The store (required): `SqliteStore` in production, `MemoryStore` in tests.
    pub fn store(mut self, store: S) -> Self {
        self.store = Some(store);
        self
    }

    /// The host (required).
    pub fn host(mut self, host: H) -> Self {
        self.host = Some(host);
        self
    }

    /// The operator configuration (batch size, retries, interval, dry run, mappings...).
    pub fn config(mut self, config: SyncConfig) -> Self {
        self.config = config;
        self
    }

    /// Status, payment method and warehouse mappings (default: built from the config).
    pub fn mappings(mut self, mappings: Mappings) -> Self {
        self.mappings = Some(mappings);
        self
    }

    /// The conflict policy of a kind (default: [`default_policy`]; for orders the status only
    /// moves forward, ranked by KeyCRM's status groups, read once from the account).
    pub fn policy(mut self, kind: EntityKind, policy: Policy) -> Self {
        self.policies.insert(kind, policy);
        self
    }

    /// The clock the outbox is scheduled by (default: the system's UTC time): which items are
    /// due, and when a failed item is tried again (30 s after its first failure, doubling,
    /// capped at 1 h). Only the outbox uses it; pull windows, cursors and logs keep real UTC time,
    /// which KeyCRM's `updated_at` values are compared with.
    ///
    /// Tests move it forward to retry failed items without waiting; a host may do the same
    /// for an operator's "retry now".
    pub fn outbox_clock(
        mut self,
        clock: impl Fn() -> DateTime<Utc> + Send + Sync + 'static,
    ) -> Self {
        self.outbox_clock = Some(Arc::new(clock));
        self
    }

    /// Builds the engine.
    pub fn build(self) -> Result<SyncEngine<S, H>, SyncError> {
        let client = self
            .client
            .ok_or_else(|| SyncError::Config("a KeyCRM client is required".into()))?;
        let store = self
            .store
            .ok_or_else(|| SyncError::Config("a store is required".into()))?;
        let host = self
            .host
            .ok_or_else(|| SyncError::Config("a host is required".into()))?;
        let mappings = self
            .mappings
            .unwrap_or_else(|| Mappings::from_config(&self.config));
        let (events, _) = broadcast::channel(4096);
        Ok(SyncEngine {
            inner: Arc::new(Inner {
                client,
                store,
                host,
                config: self.config,
                mappings,
                policies: std::sync::Mutex::new(self.policies),
                events,
                run_lock: Mutex::new(()),
                inbox_wake: tokio::sync::Notify::new(),
                last_run: std::sync::Mutex::new(None),
                runs: AtomicU64::new(0),
                calls: AtomicU64::new(0),
                call_errors: AtomicU64::new(0),
                latency_micros: AtomicU64::new(0),
                ranks_loaded: std::sync::atomic::AtomicBool::new(false),
                gathered: std::sync::Mutex::new(None),
                outbox_clock: self.outbox_clock.unwrap_or_else(|| Arc::new(Utc::now)),
                shutdown: self.shutdown.unwrap_or_default(),
                run_observers: std::sync::RwLock::new(Vec::new()),
            }),
        })
    }
}

/// The two-way sync engine. Cheap to clone; clones share everything.
pub struct SyncEngine<S, H> {
    inner: Arc<Inner<S, H>>,
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
    /// Starts building an engine.
    pub fn builder() -> SyncEngineBuilder<S, H> {
        SyncEngineBuilder {
            client: None,
            store: None,
            host: None,
            config: SyncConfig::default(),
            mappings: None,
            policies: BTreeMap::new(),
            outbox_clock: None,
            shutdown: None,
        }
    }

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
