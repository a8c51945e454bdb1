//! What the engine reports: its errors, events, run reports and status.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::canonical::MappingError;
use crate::host::HostError;
use crate::model::{EntityKind, redact};
use crate::plan::Side;
use crate::store::{KindCounts, StoreError};

use super::Quarantined;
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
    /// Whether any kind was read in a full pass: the catalogue or stock on their schedule
    /// ([`SyncConfig::catalogue_pass_interval_secs`](crate::config::SyncConfig::catalogue_pass_interval_secs),
    /// [`SyncConfig::stock_pass_interval_secs`](crate::config::SyncConfig::stock_pass_interval_secs)),
    /// or everything in a [`full_resync`](super::SyncEngine::full_resync).
    pub full_pass: bool,
    /// The kinds read in a full pass by this run, each with its outcome: only a complete
    /// pass turns absence into tombstones and is stored as the kind's last complete pass.
    pub full_passes: BTreeMap<EntityKind, PassOutcome>,
    /// Remote records that could not be decoded and were set aside (see
    /// [`SyncStatus::quarantined`]).
    pub quarantined: u64,
}

/// How a full pass of a kind ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PassOutcome {
    /// Every record was read, decoded and applied.
    Complete,
    /// A record could not be decoded or applied, or the pass was held for review (the
    /// mass-zeroing guard): no tombstones, and the kind's last complete pass stays where it
    /// was; the pass is tried again on the kind's schedule (or by a full resync).
    Incomplete,
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

/// The time the outbox is scheduled by (see [`SyncEngineBuilder::outbox_clock`](super::SyncEngineBuilder::outbox_clock)).
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

/// A function told when runs start and end (see [`SyncEngine::observe_runs`](super::SyncEngine::observe_runs)).
pub type RunObserver = Arc<dyn Fn(RunPhase<'_>) + Send + Sync>;
