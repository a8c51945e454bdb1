//! Prometheus metrics of the engine, in the text exposition format (`GET /metrics`).
//!
//! Built on `prometheus-client` (the Prometheus project's own Rust client): every [`Metrics`]
//! has its own registry, so several engines (and parallel tests) never share a global
//! recorder.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `keycrm_requests_total` | counter | `operation`, `status` (`0`: no answer) |
//! | `keycrm_request_duration_seconds` | histogram | |
//! | `keycrm_rate_limited_total` | counter | |
//! | `keycrm_quota_waits_total`, `keycrm_quota_wait_seconds_total` | counter | |
//! | `keycrm_sync_outbox_depth`, `keycrm_sync_dead_letters` | gauge | |
//! | `keycrm_sync_inbox_backlog`, `keycrm_sync_inbox_oldest_age_seconds` | gauge | |
//! | `keycrm_sync_records` | gauge | `kind`, `state` (`synced`, `pending`, `error`) |
//! | `keycrm_sync_conflicts_total` | counter | `kind` |
//! | `keycrm_sync_events_total` | counter | `type` |
//! | `keycrm_sync_runs_total` | counter | `outcome` (`ok`, `error`) |
//! | `keycrm_sync_run_duration_seconds` | histogram | |
//! | `keycrm_sync_last_success_timestamp_seconds` | gauge | `kind` |
//! | `keycrm_sync_alerts_firing` | gauge | `alert` |

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use keycrm_api::{ClientStats, RequestRecord};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::alert::AlertKind;
use crate::engine::{RunPhase, SyncEvent, SyncStatus};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecordLabels {
    kind: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabel {
    alert: String,
}

/// The engine's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histogram,
    rate_limited: Counter,
    quota_waits: Counter,
    quota_wait_seconds: Counter<f64, AtomicU64>,
    outbox_depth: Gauge,
    dead_letters: Gauge,
    inbox_backlog: Gauge,
    inbox_oldest: Gauge<f64, AtomicU64>,
    records: Family<RecordLabels, Gauge>,
    conflicts: Family<KindLabel, Counter>,
    events: Family<TypeLabel, Counter>,
    runs: Family<OutcomeLabel, Counter>,
    run_duration: Histogram,
    last_success: Family<KindLabel, Gauge<f64, AtomicU64>>,
    alerts: Family<AlertLabel, Gauge>,
    seen: Mutex<ClientStats>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty metrics in a registry of their own.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "keycrm_requests",
            "KeyCRM request attempts by operation and HTTP status (0: no answer)",
            requests.clone(),
        );
        let latency = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        registry.register(
            "keycrm_request_duration_seconds",
            "Latency of KeyCRM request attempts",
            latency.clone(),
        );
        let rate_limited = Counter::default();
        registry.register(
            "keycrm_rate_limited",
            "429 answers from KeyCRM",
            rate_limited.clone(),
        );
        let quota_waits = Counter::default();
        registry.register(
            "keycrm_quota_waits",
            "Requests that waited for the quota",
            quota_waits.clone(),
        );
        let quota_wait_seconds = Counter::<f64, AtomicU64>::default();
        registry.register(
            "keycrm_quota_wait_seconds",
            "Time spent waiting for the quota",
            quota_wait_seconds.clone(),
        );
        let outbox_depth = Gauge::default();
        registry.register(
            "keycrm_sync_outbox_depth",
            "Local changes waiting to be sent",
            outbox_depth.clone(),
        );
        let dead_letters = Gauge::default();
        registry.register(
            "keycrm_sync_dead_letters",
            "Dead-lettered outbox items",
            dead_letters.clone(),
        );
        let inbox_backlog = Gauge::default();
        registry.register(
            "keycrm_sync_inbox_backlog",
            "Webhooks stored and not yet applied",
            inbox_backlog.clone(),
        );
        let inbox_oldest = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "keycrm_sync_inbox_oldest_age_seconds",
            "Age of the oldest webhook not yet applied",
            inbox_oldest.clone(),
        );
        let records = Family::<RecordLabels, Gauge>::default();
        registry.register(
            "keycrm_sync_records",
            "Mapped records by kind and state",
            records.clone(),
        );
        let conflicts = Family::<KindLabel, Counter>::default();
        registry.register(
            "keycrm_sync_conflicts",
            "Conflicts logged, by kind",
            conflicts.clone(),
        );
        let events = Family::<TypeLabel, Counter>::default();
        registry.register(
            "keycrm_sync_events",
            "Events published, by type",
            events.clone(),
        );
        let runs = Family::<OutcomeLabel, Counter>::default();
        registry.register("keycrm_sync_runs", "Sync runs by outcome", runs.clone());
        let run_duration = Histogram::new(exponential_buckets(0.01, 2.0, 16));
        registry.register(
            "keycrm_sync_run_duration_seconds",
            "Duration of sync runs",
            run_duration.clone(),
        );
        let last_success = Family::<KindLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "keycrm_sync_last_success_timestamp_seconds",
            "Unix time of the last record applied or pushed, by kind",
            last_success.clone(),
        );
        let alerts = Family::<AlertLabel, Gauge>::default();
        registry.register(
            "keycrm_sync_alerts_firing",
            "1 while an alert fires",
            alerts.clone(),
        );
        for kind in crate::model::EntityKind::ALL {
            conflicts
                .get_or_create(&KindLabel {
                    kind: kind.as_str().into(),
                })
                .inc_by(0);
        }
        for kind in AlertKind::ALL {
            alerts
                .get_or_create(&AlertLabel {
                    alert: kind.as_str().into(),
                })
                .set(0);
        }
        Self {
            registry,
            requests,
            latency,
            rate_limited,
            quota_waits,
            quota_wait_seconds,
            outbox_depth,
            dead_letters,
            inbox_backlog,
            inbox_oldest,
            records,
            conflicts,
            events,
            runs,
            run_duration,
            last_success,
            alerts,
            seen: Mutex::new(ClientStats::default()),
        }
    }

    /// Counts one KeyCRM request attempt (give this to [`keycrm_api::Client::observe`]).
    pub fn record_request(&self, record: &RequestRecord) {
        self.requests
            .get_or_create(&RequestLabels {
                operation: record.operation.to_string(),
                status: record.status.to_string(),
            })
            .inc();
        self.latency.observe(record.elapsed.as_secs_f64());
    }

    /// Counts a run's end (give this to [`crate::SyncEngine::observe_runs`]).
    pub fn record_run(&self, phase: RunPhase<'_>) {
        if let RunPhase::Finished { report, ok } = phase {
            self.runs
                .get_or_create(&OutcomeLabel {
                    outcome: if ok { "ok" } else { "error" }.into(),
                })
                .inc();
            self.run_duration.observe(report.elapsed_ms as f64 / 1000.0);
        }
    }

    /// Counts a published event.
    pub fn record_event(&self, event: &SyncEvent) {
        let (name, success) = match event {
            SyncEvent::Applied { kind, .. } => ("applied", Some(*kind)),
            SyncEvent::Pushed { kind, .. } => ("pushed", Some(*kind)),
            SyncEvent::Conflict { kind, .. } => {
                self.conflicts
                    .get_or_create(&KindLabel {
                        kind: kind.as_str().into(),
                    })
                    .inc();
                ("conflict", None)
            }
            SyncEvent::Failed { .. } => ("failed", None),
            SyncEvent::Held { .. } => ("held", None),
            SyncEvent::Alert { .. } => ("alert", None),
            SyncEvent::Job { .. } => ("job", None),
        };
        self.events
            .get_or_create(&TypeLabel {
                r#type: name.into(),
            })
            .inc();
        if let Some(kind) = success {
            let now = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
            self.last_success
                .get_or_create(&KindLabel {
                    kind: kind.as_str().into(),
                })
                .set(now);
        }
    }

    /// Sets whether an alert fires.
    pub fn set_alert(&self, kind: AlertKind, firing: bool) {
        self.alerts
            .get_or_create(&AlertLabel {
                alert: kind.as_str().into(),
            })
            .set(i64::from(firing));
    }

    /// Takes the engine's status and its client's counters (called before each scrape).
    pub fn update(&self, status: &SyncStatus, stats: ClientStats, oldest_webhook_secs: f64) {
        self.outbox_depth.set(status.outbox_depth as i64);
        self.dead_letters.set(status.dead_letters as i64);
        self.inbox_backlog.set(status.inbox_backlog as i64);
        self.inbox_oldest.set(oldest_webhook_secs);
        for (kind, counts) in &status.per_kind {
            for (state, n) in [
                ("synced", counts.synced),
                ("pending", counts.pending),
                ("error", counts.error),
            ] {
                self.records
                    .get_or_create(&RecordLabels {
                        kind: kind.as_str().into(),
                        state: state.into(),
                    })
                    .set(n as i64);
            }
        }
        // The client's counters only grow: add what is new since the last scrape.
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.rate_limited
            .inc_by(stats.rate_limited.saturating_sub(seen.rate_limited));
        self.quota_waits
            .inc_by(stats.waits.saturating_sub(seen.waits));
        self.quota_wait_seconds
            .inc_by(stats.waited.saturating_sub(seen.waited).as_secs_f64());
        *seen = stats;
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
