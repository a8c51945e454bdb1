//! What the service shows and does: webhooks, the admin token, status, conflicts, dead
//! letters, sync actions, event streams, health, metrics and alerts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::Serialize;
use subtle::ConstantTimeEq;

use super::jobs::Jobs;
use super::{HttpError, HttpOptions, Service, Shared, Subscription, hub, micros};
use crate::alert::{Alert, AlertSnapshot, AlertState, AlertTransition};
use crate::engine::{RunPhase, RunReport, SyncEngine, SyncEvent, SyncStatus};
use crate::host::Host;
use crate::metrics::Metrics;
use crate::model::EntityKind;
use crate::store::{ConflictRecord, OutboxId, Store};
use crate::webhook::{WebhookReceiver, WebhookRequest};

/// A dead letter as the service shows it (no payload: it may hold customer data).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    /// The outbox id (for retry and discard).
    pub id: OutboxId,
    /// Kind of record.
    pub kind: EntityKind,
    /// The host's id.
    pub local_id: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last error.
    pub last_error: Option<String>,
    /// When the change was first queued.
    pub created_at: DateTime<Utc>,
}

/// Liveness and readiness (`GET /readyz`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Readiness {
    /// Whether the service is ready (the store answers; KeyCRM answered recently or nothing
    /// is pending).
    pub ready: bool,
    /// Whether the store answered.
    pub store: bool,
    /// Seconds since KeyCRM last answered successfully.
    pub keycrm_silent_secs: u64,
    /// Outbox items and webhooks waiting.
    pub pending: u64,
}

/// Everything `GET /sync/status` shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceStatus {
    /// The engine's status.
    #[serde(flatten)]
    pub engine: SyncStatus,
    /// Age of the oldest webhook waiting, in seconds.
    pub inbox_oldest_age_secs: Option<u64>,
    /// KeyCRM quota: requests that waited, and the total wait in seconds.
    pub quota: Quota,
    /// Alerts that fire.
    pub alerts: Vec<Alert>,
    /// The running full-resync job, if any.
    pub job: Option<String>,
    /// The id of the last event published.
    pub last_event_id: u64,
}

/// Quota use of the engine's client.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quota {
    /// Requests sent (retries included).
    pub requests: u64,
    /// Requests that waited for the quota.
    pub waits: u64,
    /// Seconds spent waiting.
    pub waited_secs: f64,
    /// 429 answers.
    pub rate_limited: u64,
}

impl<S: Store, H: Host> Service<S, H> {
    /// The service over `engine`. Starts, on the current tokio runtime, the task that numbers
    /// events and the alert loop; both end when the engine shuts down. Counts every request of
    /// the engine's client and every run in its metrics.
    pub fn new(engine: SyncEngine<S, H>, options: HttpOptions) -> Self {
        let shutdown = engine.shutdown_token();
        let now = micros(options.clock.now());
        let receiver = match &options.webhook {
            Some(settings) => engine.webhook_receiver_with(settings.clone()),
            None => engine.webhook_receiver(),
        };
        let shared = Arc::new(Shared {
            receiver,
            hub: hub::Hub::new(
                options.replay_buffer,
                options.client_buffer,
                shutdown.clone(),
            ),
            engine,
            options,
            metrics: Metrics::new(),
            alerts: Mutex::new(AlertState::default()),
            alert_eval: tokio::sync::Mutex::new(()),
            jobs: Mutex::new(Jobs::default()),
            keycrm_ok_at: AtomicU64::new(now),
            run_started_at: AtomicU64::new(u64::MAX),
        });
        let weak = Arc::downgrade(&shared);
        shared.engine.client().observe(move |record| {
            if let Some(shared) = weak.upgrade() {
                shared.metrics.record_request(record);
                if (1..500).contains(&record.status) && record.status != 429 {
                    shared
                        .keycrm_ok_at
                        .store(micros(shared.options.clock.now()), Ordering::Relaxed);
                }
            }
        });
        let weak = Arc::downgrade(&shared);
        shared.engine.observe_runs(move |phase| {
            if let Some(shared) = weak.upgrade() {
                shared.metrics.record_run(phase);
                let at = match phase {
                    RunPhase::Started { .. } => micros(shared.options.clock.now()),
                    RunPhase::Finished { .. } => u64::MAX,
                };
                shared.run_started_at.store(at, Ordering::Relaxed);
            }
        });
        let service = Self { shared };
        // Numbers the engine's events for the streams; counts them for metrics and jobs.
        let events = service.shared.engine.subscribe();
        let weak = Arc::downgrade(&service.shared);
        tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                let Some(shared) = weak.upgrade() else { return };
                Service { shared }.on_event(event);
            }
        });
        if let Some(every) = service.shared.options.alert_interval {
            let weak = Arc::downgrade(&service.shared);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    let Some(shared) = weak.upgrade() else { return };
                    Service { shared }.evaluate_alerts().await;
                }
            });
        }
        service
    }

    /// The engine.
    pub fn engine(&self) -> &SyncEngine<S, H> {
        &self.shared.engine
    }

    /// The options.
    pub fn options(&self) -> &HttpOptions {
        &self.shared.options
    }

    fn on_event(&self, event: SyncEvent) {
        self.shared.metrics.record_event(&event);
        self.shared.hub.push(event);
    }

    // ---- webhooks ----

    /// The webhook receiver behind `POST /webhooks/keycrm`.
    pub fn webhook_receiver(&self) -> &WebhookReceiver {
        &self.shared.receiver
    }

    /// `POST /webhooks/keycrm`: 200 `{"status": "stored"|"duplicate", "event": ..}` once the
    /// delivery is durable in the inbox (never waiting for a sync pass), or the receiver's
    /// rejection as JSON: 401 `unauthorized`/`bad_signature`, 413 `payload_too_large`,
    /// 415 `unsupported_media_type`, 400 `invalid_webhook`, 503 `unavailable`.
    pub async fn receive_webhook(
        &self,
        request: WebhookRequest<'_>,
    ) -> Result<serde_json::Value, HttpError> {
        match self.shared.receiver.receive(request).await {
            Ok(accepted) => Ok(serde_json::json!({
                "status": if accepted.duplicate() { "duplicate" } else { "stored" },
                "event": accepted.event,
            })),
            Err(rejection) => Err(HttpError::from_rejection(&rejection)),
        }
    }

    // ---- auth ----

    /// Checks an `Authorization` header value against the admin token (constant time):
    /// 401 `missing_token` without a bearer token, 401 `invalid_token` for a wrong one.
    pub fn authorize(&self, authorization: Option<&str>) -> Result<(), HttpError> {
        let token = authorization
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty());
        match token {
            None => Err(HttpError::new(
                401,
                "missing_token",
                "this route needs `Authorization: Bearer <admin token>`",
            )),
            Some(token) => self.check_token(token),
        }
    }

    /// Checks a token given another way (the `access_token` query parameter of event streams,
    /// which browsers cannot send headers with).
    pub fn check_token(&self, token: &str) -> Result<(), HttpError> {
        let expected = self.shared.options.admin_token.expose().as_bytes();
        if !expected.is_empty() && bool::from(expected.ct_eq(token.as_bytes())) {
            Ok(())
        } else {
            Err(HttpError::new(
                401,
                "invalid_token",
                "the admin token is wrong",
            ))
        }
    }

    // ---- status ----

    /// `GET /sync/status`.
    pub async fn status(&self) -> Result<ServiceStatus, HttpError> {
        let engine = self.shared.engine.status().await?;
        let oldest = self.oldest_webhook().await?;
        let stats = self.shared.engine.client().stats();
        Ok(ServiceStatus {
            engine,
            inbox_oldest_age_secs: oldest.map(|d| d.as_secs()),
            quota: Quota {
                requests: stats.requests,
                waits: stats.waits,
                waited_secs: stats.waited.as_secs_f64(),
                rate_limited: stats.rate_limited,
            },
            alerts: self.firing_alerts(),
            job: self.lock_jobs().running.clone(),
            last_event_id: self.shared.hub.last_id(),
        })
    }

    async fn oldest_webhook(&self) -> Result<Option<Duration>, HttpError> {
        let oldest = self.shared.engine.store().oldest_pending_inbox().await?;
        Ok(oldest.map(|received_at| {
            (self.shared.engine.now() - received_at)
                .to_std()
                .unwrap_or_default()
        }))
    }

    /// `GET /sync/conflicts`: the most recent conflicts, with both values and the winner.
    pub async fn conflicts(&self) -> Result<Vec<ConflictRecord>, HttpError> {
        Ok(self
            .shared
            .engine
            .store()
            .list_conflicts(None, self.shared.options.conflict_limit)
            .await?)
    }

    /// `GET /sync/dead-letters`.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, HttpError> {
        let items = self.shared.engine.store().dead_letters(None).await?;
        Ok(items
            .into_iter()
            .map(|i| DeadLetter {
                id: i.id,
                kind: i.kind,
                local_id: i.local_id,
                attempts: i.attempts,
                last_error: i.last_error,
                created_at: i.created_at,
            })
            .collect())
    }

    /// `POST /sync/dead-letters/{id}/retry`: queued again (the id of the live item), or 404.
    pub async fn retry_dead_letter(&self, id: i64) -> Result<OutboxId, HttpError> {
        self.shared
            .engine
            .store()
            .retry_dead_letter(OutboxId(id), self.shared.engine.outbox_now())
            .await?
            .ok_or_else(|| HttpError::new(404, "not_found", format!("no dead letter {id}")))
    }

    /// `DELETE /sync/dead-letters/{id}`: dropped, or 404.
    pub async fn discard_dead_letter(&self, id: i64) -> Result<(), HttpError> {
        if self
            .shared
            .engine
            .store()
            .discard_dead_letter(OutboxId(id))
            .await?
        {
            Ok(())
        } else {
            Err(HttpError::new(
                404,
                "not_found",
                format!("no dead letter {id}"),
            ))
        }
    }

    // ---- sync actions ----

    /// `POST /sync/{kind}/{local_id}` with `kind` one of `orders`, `buyers`, `products`,
    /// `offers`: syncs the record now (404 for an unknown kind or id).
    pub async fn sync_record(&self, kind: &str, local_id: &str) -> Result<RunReport, HttpError> {
        let engine = &self.shared.engine;
        let result = match kind {
            "orders" => engine.sync_order(local_id).await,
            "buyers" => engine.sync_buyer(local_id).await,
            "products" => engine.sync_product(local_id).await,
            "offers" => engine.sync_offer(local_id).await,
            other => {
                return Err(HttpError::new(
                    404,
                    "not_found",
                    format!("no record kind `{other}` (orders, buyers, products, offers)"),
                ));
            }
        };
        Ok(result?)
    }

    // ---- events ----

    /// A numbered event stream, from now on or resuming after `last_event_id`. It ends when
    /// the engine shuts down, or after telling a client that fell behind that it lagged.
    pub fn events(&self, last_event_id: Option<u64>) -> Subscription {
        self.shared.hub.subscribe(last_event_id)
    }

    // ---- health and metrics ----

    /// `GET /readyz`: `Ok` when ready, else the details with 503.
    pub async fn readiness(&self) -> Result<Readiness, (Readiness, HttpError)> {
        let silent = self.since_keycrm_success();
        let limit = self
            .shared
            .options
            .alert_rules
            .keycrm_silence
            .unwrap_or(Duration::from_secs(120));
        let counts = self.shared.engine.store().counts().await;
        let (store, pending) = match &counts {
            Ok(c) => (true, c.outbox_depth + c.inbox_backlog),
            Err(_) => (false, 0),
        };
        let readiness = Readiness {
            ready: store && (pending == 0 || silent <= limit),
            store,
            keycrm_silent_secs: silent.as_secs(),
            pending,
        };
        if readiness.ready {
            Ok(readiness)
        } else {
            let message = if store {
                "KeyCRM has not answered recently and work is pending"
            } else {
                "the store does not answer"
            };
            Err((readiness, HttpError::new(503, "not_ready", message)))
        }
    }

    /// `GET /metrics`: the Prometheus text exposition (content type
    /// [`METRICS_CONTENT_TYPE`](super::METRICS_CONTENT_TYPE)).
    pub async fn metrics_text(&self) -> Result<String, HttpError> {
        let status = self.shared.engine.status().await?;
        let oldest = self.oldest_webhook().await?;
        self.shared.metrics.update(
            &status,
            self.shared.engine.client().stats(),
            oldest.map_or(0.0, |d| d.as_secs_f64()),
        );
        Ok(self.shared.metrics.render())
    }

    /// The metrics (to register more, or to render them elsewhere).
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    // ---- alerts ----

    fn since_keycrm_success(&self) -> Duration {
        let now = micros(self.shared.options.clock.now());
        Duration::from_micros(now.saturating_sub(self.shared.keycrm_ok_at.load(Ordering::Relaxed)))
    }

    /// What the alert rules look at now.
    pub async fn alert_snapshot(&self) -> Result<AlertSnapshot, HttpError> {
        let counts = self.shared.engine.store().counts().await?;
        let now = micros(self.shared.options.clock.now());
        let run = self.shared.run_started_at.load(Ordering::Relaxed);
        Ok(AlertSnapshot {
            dead_letters: counts.dead_letters,
            pending_work: counts.outbox_depth + counts.inbox_backlog,
            since_keycrm_success: self.since_keycrm_success(),
            oldest_webhook: self.oldest_webhook().await?,
            current_run: (run != u64::MAX).then(|| Duration::from_micros(now.saturating_sub(run))),
        })
    }

    /// Evaluates the alert rules now; each transition goes to the event stream, `tracing`,
    /// the metrics and the notifiers. Returns the transitions.
    pub async fn evaluate_alerts(&self) -> Vec<AlertTransition> {
        let _one_at_a_time = self.shared.alert_eval.lock().await;
        let snapshot = match self.alert_snapshot().await {
            Ok(s) => s,
            Err(error) => {
                tracing::warn!(target: "keycrm_sync::alert", error = %error.message, "cannot evaluate alerts");
                return Vec::new();
            }
        };
        self.apply_snapshot(&snapshot).await
    }

    /// Evaluates the rules over a given snapshot (as [`Service::evaluate_alerts`] does).
    pub async fn apply_snapshot(&self, snapshot: &AlertSnapshot) -> Vec<AlertTransition> {
        let transitions = self
            .shared
            .alerts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .evaluate(&self.shared.options.alert_rules, snapshot);
        for t in &transitions {
            let name = t.alert.kind.as_str();
            if t.firing {
                tracing::warn!(target: "keycrm_sync::alert", alert = name, severity = t.alert.severity.as_str(), message = %t.alert.message, "alert firing");
            } else {
                tracing::info!(target: "keycrm_sync::alert", alert = name, "alert resolved");
            }
            self.shared.metrics.set_alert(t.alert.kind, t.firing);
            self.shared.engine.publish(SyncEvent::Alert {
                alert: name.into(),
                severity: t.alert.severity.as_str().into(),
                firing: t.firing,
                message: t.alert.message.clone(),
            });
            for notifier in &self.shared.options.notifiers {
                notifier.notify(t).await;
            }
        }
        transitions
    }

    /// The alerts that fire now.
    pub fn firing_alerts(&self) -> Vec<Alert> {
        self.shared
            .alerts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .firing()
    }
}
