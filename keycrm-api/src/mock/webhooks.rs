//! Webhook delivery as KeyCRM does it: a JSON `POST` without signature, retried when the
//! receiver does not answer exactly 200. Deliveries go out one at a time, in the order the
//! changes happened, from a task on the runtime that started the simulator.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, watch};

/// One webhook the simulator sent (or tried to send).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct WebhookDelivery {
    /// The receiver URL.
    pub url: String,
    /// The event name (`order.change_order_status`, `order.change_payment_status`,
    /// `lead.change_lead_status`); `None` for a stock webhook.
    pub event: Option<String>,
    /// The JSON body that was posted.
    pub payload: Value,
    /// The answer to each attempt: the HTTP status, or `None` when the receiver could not
    /// be reached.
    pub attempts: Vec<Option<u16>>,
    /// Whether an attempt was answered with 200.
    pub delivered: bool,
}

/// How deliveries are retried.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RetryPolicy {
    /// Attempts per delivery, the first included.
    pub attempts: u32,
    /// Pause between attempts.
    pub delay: Duration,
}

struct Job {
    url: String,
    event: Option<String>,
    payload: Value,
}

/// The queue of deliveries and its worker.
pub(crate) struct Dispatcher {
    tx: mpsc::UnboundedSender<Job>,
    pending: Arc<watch::Sender<usize>>,
    log: Arc<Mutex<Vec<WebhookDelivery>>>,
}

impl Dispatcher {
    /// Starts the worker on the current tokio runtime.
    pub fn start(policy: RetryPolicy) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let pending = Arc::new(watch::Sender::new(0usize));
        let log = Arc::new(Mutex::new(Vec::new()));
        let worker_pending = Arc::clone(&pending);
        let worker_log = Arc::clone(&log);
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default();
            while let Some(job) = rx.recv().await {
                let delivery = deliver(&http, job, policy).await;
                worker_log
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(delivery);
                worker_pending.send_modify(|n| *n = n.saturating_sub(1));
            }
        });
        Self { tx, pending, log }
    }

    /// Queues a delivery.
    pub fn send(&self, url: &str, event: Option<&str>, payload: Value) {
        self.pending.send_modify(|n| *n += 1);
        let job = Job {
            url: url.to_string(),
            event: event.map(str::to_string),
            payload,
        };
        if self.tx.send(job).is_err() {
            // The worker is gone with its runtime; nothing will be delivered.
            self.pending.send_modify(|n| *n = n.saturating_sub(1));
        }
    }

    /// Waits until every queued delivery has finished (delivered or given up), at most
    /// `limit`; `false` when the limit passed first.
    pub async fn wait(&self, limit: Duration) -> bool {
        let mut rx = self.pending.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|n| *n == 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Every delivery so far.
    pub fn log(&self) -> Vec<WebhookDelivery> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Forgets the deliveries so far.
    pub fn clear(&self) {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

async fn deliver(http: &reqwest::Client, job: Job, policy: RetryPolicy) -> WebhookDelivery {
    let mut attempts = Vec::new();
    let mut delivered = false;
    for attempt in 0..policy.attempts.max(1) {
        if attempt > 0 {
            tokio::time::sleep(policy.delay).await;
        }
        let status = http
            .post(&job.url)
            .json(&job.payload)
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16());
        attempts.push(status);
        if status == Some(200) {
            delivered = true;
            break;
        }
    }
    WebhookDelivery {
        url: job.url,
        event: job.event,
        payload: job.payload,
        attempts,
        delivered,
    }
}
