//! The service layer: what a host mounts to operate the engine over HTTP.
//!
//! [`Service`] holds the framework-free pieces (feature `service`): status, sync actions,
//! full-resync jobs, dead letters, conflicts, health, Prometheus text, the numbered event
//! stream with replay, alerts, and the dashboard page. With feature `axum`, [`router`] mounts
//! them as routes (see its docs for the table); any other framework calls the same methods
//! (the `hyper_host` example does it with plain hyper).
//!
//! Errors are JSON `{"error": "<code>", "message": "..."}` with the status of
//! [`HttpError::from_sync`], the HTTP classification of [`SyncError`](crate::SyncError) a host may reuse.

mod error;
mod hub;
mod jobs;
#[cfg(feature = "axum")]
mod routes;
mod service;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keycrm_api::clock::{Clock, TokioClock};

use crate::alert::{AlertRules, AlertState, Notifier};
use crate::config::Secret;
use crate::engine::SyncEngine;
use crate::metrics::Metrics;
use crate::webhook::{ReceiverSettings, WebhookReceiver};

pub use error::HttpError;
pub use hub::{NumberedEvent, StreamItem, Subscription};
pub use jobs::{JobInfo, JobState};
#[cfg(feature = "axum")]
pub use routes::{router, router_with};
pub use service::{DeadLetter, Quota, Readiness, ServiceStatus};

/// The dashboard page: HTML, CSS and JavaScript in one file, no external resources.
pub const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// How the service layer is set up.
#[derive(Clone)]
pub struct HttpOptions {
    /// The bearer token of the management routes (`Authorization: Bearer <token>`). An empty
    /// token refuses every management request.
    pub admin_token: Secret,
    /// Whether `GET /metrics` is served without the token (default `false`).
    pub public_metrics: bool,
    /// Events kept for clients resuming with `Last-Event-ID` (default 1024).
    pub replay_buffer: usize,
    /// Events a client may fall behind before it is told it lagged and dropped (default 256).
    pub client_buffer: usize,
    /// Alert thresholds.
    pub alert_rules: AlertRules,
    /// How often alerts are evaluated in the background (default 15 s; `None`: only when
    /// [`Service::evaluate_alerts`] is called).
    pub alert_interval: Option<Duration>,
    /// Where alerts go besides events, `tracing` and metrics.
    pub notifiers: Vec<Arc<dyn Notifier>>,
    /// The clock of alert rules and KeyCRM reachability (default: tokio's).
    pub clock: Arc<dyn Clock>,
    /// Conflicts listed by `GET /sync/conflicts` at most (default 100).
    pub conflict_limit: usize,
    /// How `POST /webhooks/keycrm` checks deliveries (default: from the engine's configuration,
    /// the `?token=` being its `webhook_secret`).
    pub webhook: Option<ReceiverSettings>,
}

impl std::fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpOptions")
            .field("admin_token", &self.admin_token)
            .field("public_metrics", &self.public_metrics)
            .field("replay_buffer", &self.replay_buffer)
            .field("client_buffer", &self.client_buffer)
            .field("alert_rules", &self.alert_rules)
            .field("alert_interval", &self.alert_interval)
            .field("notifiers", &self.notifiers.len())
            .finish_non_exhaustive()
    }
}

impl HttpOptions {
    /// Options with the admin token and defaults otherwise.
    pub fn new(admin_token: impl Into<String>) -> Self {
        Self {
            admin_token: Secret::new(admin_token.into()),
            public_metrics: false,
            replay_buffer: 1024,
            client_buffer: 256,
            alert_rules: AlertRules::default(),
            alert_interval: Some(Duration::from_secs(15)),
            notifiers: Vec::new(),
            clock: Arc::new(TokioClock::new()),
            conflict_limit: 100,
            webhook: None,
        }
    }

    /// Adds a notifier (e.g. [`crate::alert::WebhookNotifier`]).
    pub fn notifier(mut self, notifier: impl Notifier) -> Self {
        self.notifiers.push(Arc::new(notifier));
        self
    }
}

struct Shared<S, H> {
    engine: SyncEngine<S, H>,
    options: HttpOptions,
    hub: hub::Hub,
    metrics: Metrics,
    receiver: WebhookReceiver,
    alerts: Mutex<AlertState>,
    alert_eval: tokio::sync::Mutex<()>,
    jobs: Mutex<jobs::Jobs>,
    /// Clock time (µs) of the last successful KeyCRM answer.
    keycrm_ok_at: AtomicU64,
    /// Clock time (µs) the current run started at, `u64::MAX` when none runs.
    run_started_at: AtomicU64,
}

/// The framework-free service over an engine. Cheap to clone.
pub struct Service<S, H> {
    shared: Arc<Shared<S, H>>,
}

impl<S, H> Clone for Service<S, H> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<S, H> std::fmt::Debug for Service<S, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX - 1)) as u64
}

/// The content type of [`Service::metrics_text`].
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
