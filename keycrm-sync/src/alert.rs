//! Alerts: rules evaluated over the engine's state, each firing once per episode and
//! resolving once, told to the event stream, `tracing`, the metrics and [`Notifier`]s.
//!
//! | alert | severity | default rule |
//! |---|---|---|
//! | [`AlertKind::SyncErrors`] | critical | any dead letter |
//! | [`AlertKind::KeycrmUnavailable`] | critical | no successful KeyCRM request for 2 min while work is pending |
//! | [`AlertKind::ProcessingTimeExceeded`] | warning | the oldest pending webhook is older than 5 min, or a run lasts longer than 10 min |
//! | [`AlertKind::ErrorQueueOverflow`] | critical | more than 100 dead letters |
//!
//! [`AlertState::evaluate`] is pure (a [`AlertSnapshot`] in, transitions out), so rules are
//! tested without servers; [`crate::http::Service`] feeds it from the engine on a clock.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::Serialize;

/// The alerts there are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Critical sync errors: records dead-lettered.
    SyncErrors,
    /// KeyCRM has not answered successfully for too long while work is pending.
    KeycrmUnavailable,
    /// A webhook waits, or a run lasts, too long.
    ProcessingTimeExceeded,
    /// Too many dead letters.
    ErrorQueueOverflow,
}

impl AlertKind {
    /// Every alert.
    pub const ALL: [AlertKind; 4] = [
        AlertKind::SyncErrors,
        AlertKind::KeycrmUnavailable,
        AlertKind::ProcessingTimeExceeded,
        AlertKind::ErrorQueueOverflow,
    ];

    /// Its name (`sync_errors`).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::SyncErrors => "sync_errors",
            AlertKind::KeycrmUnavailable => "keycrm_unavailable",
            AlertKind::ProcessingTimeExceeded => "processing_time_exceeded",
            AlertKind::ErrorQueueOverflow => "error_queue_overflow",
        }
    }

    /// Its severity.
    pub fn severity(self) -> Severity {
        match self {
            AlertKind::ProcessingTimeExceeded => Severity::Warning,
            _ => Severity::Critical,
        }
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How bad an alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Needs attention soon.
    Warning,
    /// Needs attention now.
    Critical,
}

impl Severity {
    /// `warning` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// The thresholds of the rules; `None` turns a rule off.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertRules {
    /// [`AlertKind::SyncErrors`] fires at this many dead letters (default 1).
    pub dead_letters_critical: Option<u64>,
    /// [`AlertKind::KeycrmUnavailable`]: no successful KeyCRM request for this long while work
    /// is pending (default 2 min).
    pub keycrm_silence: Option<Duration>,
    /// [`AlertKind::ProcessingTimeExceeded`]: the oldest pending webhook is older (default 5 min).
    pub webhook_age: Option<Duration>,
    /// [`AlertKind::ProcessingTimeExceeded`]: a run lasts longer (default 10 min).
    pub run_time: Option<Duration>,
    /// [`AlertKind::ErrorQueueOverflow`] fires above this many dead letters (default 100).
    pub dead_letters_overflow: Option<u64>,
}

impl Default for AlertRules {
    fn default() -> Self {
        Self {
            dead_letters_critical: Some(1),
            keycrm_silence: Some(Duration::from_secs(120)),
            webhook_age: Some(Duration::from_secs(300)),
            run_time: Some(Duration::from_secs(600)),
            dead_letters_overflow: Some(100),
        }
    }
}

/// What the rules look at, taken at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AlertSnapshot {
    /// Dead-lettered outbox items.
    pub dead_letters: u64,
    /// Outbox items and webhooks waiting.
    pub pending_work: u64,
    /// Time since the last successful KeyCRM request (or since monitoring started).
    pub since_keycrm_success: Duration,
    /// Age of the oldest webhook not yet applied.
    pub oldest_webhook: Option<Duration>,
    /// How long the current run has lasted, when one runs.
    pub current_run: Option<Duration>,
}

/// An alert that fires.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alert {
    /// Which.
    pub kind: AlertKind,
    /// How bad.
    pub severity: Severity,
    /// What is wrong (counts and durations, no customer data).
    pub message: String,
}

/// An alert started or stopped firing.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AlertTransition {
    /// The alert (its message when it fired, or what it says now for a resolution).
    pub alert: Alert,
    /// `true`: it fires now; `false`: it resolved.
    pub firing: bool,
}

/// Which alerts fire; [`AlertState::evaluate`] moves it.
#[derive(Clone, Debug, Default)]
pub struct AlertState {
    firing: BTreeMap<AlertKind, Alert>,
}

impl AlertState {
    /// Applies the rules to a snapshot: an alert whose condition starts to hold fires (once,
    /// however long it holds), one whose condition stops holding resolves (once).
    pub fn evaluate(
        &mut self,
        rules: &AlertRules,
        snapshot: &AlertSnapshot,
    ) -> Vec<AlertTransition> {
        let mut out = Vec::new();
        for kind in AlertKind::ALL {
            let condition = condition(kind, rules, snapshot);
            match (condition, self.firing.contains_key(&kind)) {
                (Some(message), false) => {
                    let alert = Alert {
                        kind,
                        severity: kind.severity(),
                        message,
                    };
                    self.firing.insert(kind, alert.clone());
                    out.push(AlertTransition {
                        alert,
                        firing: true,
                    });
                }
                (None, true) => {
                    let mut alert = self.firing.remove(&kind).expect("firing");
                    alert.message = format!("resolved: {}", alert.message);
                    out.push(AlertTransition {
                        alert,
                        firing: false,
                    });
                }
                _ => {}
            }
        }
        out
    }

    /// The alerts that fire now.
    pub fn firing(&self) -> Vec<Alert> {
        self.firing.values().cloned().collect()
    }
}

fn condition(kind: AlertKind, rules: &AlertRules, s: &AlertSnapshot) -> Option<String> {
    match kind {
        AlertKind::SyncErrors => rules
            .dead_letters_critical
            .filter(|&limit| s.dead_letters >= limit.max(1))
            .map(|_| format!("{} record(s) dead-lettered", s.dead_letters)),
        AlertKind::KeycrmUnavailable => rules
            .keycrm_silence
            .filter(|&limit| s.pending_work > 0 && s.since_keycrm_success > limit)
            .map(|_| {
                format!(
                    "no successful KeyCRM request for {} s with {} item(s) pending",
                    s.since_keycrm_success.as_secs(),
                    s.pending_work
                )
            }),
        AlertKind::ProcessingTimeExceeded => {
            let webhook = rules
                .webhook_age
                .zip(s.oldest_webhook)
                .filter(|(limit, age)| age > limit)
                .map(|(_, age)| format!("oldest pending webhook waits {} s", age.as_secs()));
            let run = rules
                .run_time
                .zip(s.current_run)
                .filter(|(limit, age)| age > limit)
                .map(|(_, age)| format!("the current run lasts {} s", age.as_secs()));
            match (webhook, run) {
                (Some(a), Some(b)) => Some(format!("{a}; {b}")),
                (a, b) => a.or(b),
            }
        }
        AlertKind::ErrorQueueOverflow => rules
            .dead_letters_overflow
            .filter(|&limit| s.dead_letters > limit)
            .map(|limit| format!("{} dead letters (limit {limit})", s.dead_letters)),
    }
}

/// A boxed future a [`Notifier`] returns.
pub type NotifyFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Somewhere alerts are sent (a chat, a pager). Called once per transition; failures are the
/// notifier's to log (they never stop the evaluation).
pub trait Notifier: Send + Sync + 'static {
    /// Tells of one transition.
    fn notify<'a>(&'a self, transition: &'a AlertTransition) -> NotifyFuture<'a>;
}

/// The built-in notifier: POSTs each transition as JSON
/// (`{"alert": "sync_errors", "severity": "critical", "firing": true, "message": "..."}`) to a URL.
#[derive(Clone)]
pub struct WebhookNotifier {
    url: String,
    http: reqwest::Client,
}

impl fmt::Debug for WebhookNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a token: never shown.
        f.debug_struct("WebhookNotifier")
            .field("url", &"[redacted]")
            .finish()
    }
}

impl WebhookNotifier {
    /// A notifier POSTing to `url` with a 10 s timeout.
    pub fn new(url: impl Into<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self {
            url: url.into(),
            http,
        }
    }
}

impl Notifier for WebhookNotifier {
    fn notify<'a>(&'a self, transition: &'a AlertTransition) -> NotifyFuture<'a> {
        Box::pin(async move {
            let body = serde_json::json!({
                "alert": transition.alert.kind.as_str(),
                "severity": transition.alert.severity.as_str(),
                "firing": transition.firing,
                "message": transition.alert.message,
            });
            match self.http.post(&self.url).json(&body).send().await {
                Ok(response) if response.status().is_success() => {}
                Ok(response) => tracing::warn!(
                    target: "keycrm_sync::alert",
                    status = response.status().as_u16(),
                    "the alert webhook refused a notification"
                ),
                Err(error) => tracing::warn!(
                    target: "keycrm_sync::alert",
                    error = %error.without_url(),
                    "cannot deliver an alert notification"
                ),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> AlertSnapshot {
        AlertSnapshot::default()
    }

    #[test]
    fn each_rule_fires_once_per_episode_and_resolves_once() {
        let rules = AlertRules::default();
        let mut state = AlertState::default();
        assert!(state.evaluate(&rules, &snapshot()).is_empty());
        let bad = AlertSnapshot {
            dead_letters: 101,
            pending_work: 3,
            since_keycrm_success: Duration::from_secs(121),
            oldest_webhook: Some(Duration::from_secs(301)),
            current_run: None,
        };
        let fired = state.evaluate(&rules, &bad);
        let kinds: Vec<_> = fired.iter().map(|t| (t.alert.kind, t.firing)).collect();
        assert_eq!(
            kinds,
            vec![
                (AlertKind::SyncErrors, true),
                (AlertKind::KeycrmUnavailable, true),
                (AlertKind::ProcessingTimeExceeded, true),
                (AlertKind::ErrorQueueOverflow, true),
            ]
        );
        assert!(state.evaluate(&rules, &bad).is_empty(), "once per episode");
        assert_eq!(state.firing().len(), 4);
        let resolved = state.evaluate(&rules, &snapshot());
        assert_eq!(resolved.len(), 4);
        assert!(resolved.iter().all(|t| !t.firing));
        assert!(
            state.evaluate(&rules, &snapshot()).is_empty(),
            "resolves once"
        );
    }

    #[test]
    fn thresholds_are_strict_and_configurable() {
        let mut state = AlertState::default();
        let rules = AlertRules::default();
        let at_limits = AlertSnapshot {
            dead_letters: 100,
            pending_work: 1,
            since_keycrm_success: Duration::from_secs(120),
            oldest_webhook: Some(Duration::from_secs(300)),
            current_run: Some(Duration::from_secs(600)),
        };
        let fired = state.evaluate(&rules, &at_limits);
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert_eq!(fired[0].alert.kind, AlertKind::SyncErrors);
        // Silence without pending work is no outage.
        let mut state = AlertState::default();
        let idle = AlertSnapshot {
            since_keycrm_success: Duration::from_secs(3600),
            ..snapshot()
        };
        assert!(state.evaluate(&rules, &idle).is_empty());
        // A long run alone fires processing time; rules can be turned off.
        let long_run = AlertSnapshot {
            current_run: Some(Duration::from_secs(601)),
            ..snapshot()
        };
        assert_eq!(
            state.evaluate(&rules, &long_run)[0].alert.kind,
            AlertKind::ProcessingTimeExceeded
        );
        let mut state = AlertState::default();
        let off = AlertRules {
            run_time: None,
            ..AlertRules::default()
        };
        assert!(state.evaluate(&off, &long_run).is_empty());
        let strict = AlertRules {
            dead_letters_overflow: Some(2),
            ..AlertRules::default()
        };
        let three = AlertSnapshot {
            dead_letters: 3,
            ..snapshot()
        };
        let kinds: Vec<_> = state
            .evaluate(&strict, &three)
            .into_iter()
            .map(|t| t.alert.kind)
            .collect();
        assert_eq!(
            kinds,
            vec![AlertKind::SyncErrors, AlertKind::ErrorQueueOverflow]
        );
    }
}
