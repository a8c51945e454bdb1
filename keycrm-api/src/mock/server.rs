//! The single wiremock responder: it routes every request by method and path, applies
//! faults, the API key check and the quota, runs the handler over the shared state, sends
//! the webhooks the change produced and records the request.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use wiremock::{Request, Respond, ResponseTemplate};

use super::faults::{Fault, FaultState};
use super::http::{ApiError, Ctx, Reply};
use super::quota::Throttle;
use super::routes::{self, Match};
use super::state::{Event, State};
use super::webhooks::Dispatcher;
use super::{KeyCrmMockBuilder, RecordedRequest, admin, seed};

/// Everything that changes while the simulator runs.
pub(crate) struct Inner {
    pub state: State,
    pub log: Vec<RecordedRequest>,
    pub throttle: Throttle,
    pub faults: FaultState,
    /// Receivers of order and lead events.
    pub trigger_hooks: Vec<String>,
    /// Receivers of the stock webhook.
    pub stock_hooks: Vec<String>,
}

impl Inner {
    /// Sends the webhooks queued by the last change to the registered receivers.
    pub fn flush_events(&mut self, hooks: &Dispatcher) {
        for event in std::mem::take(&mut self.state.events) {
            match event {
                Event::Trigger { event, context } => {
                    let payload = json!({ "event": event, "context": context });
                    for url in &self.trigger_hooks {
                        hooks.send(url, Some(event), payload.clone());
                    }
                }
                Event::Stock(rows) => {
                    for url in &self.stock_hooks {
                        hooks.send(url, None, Value::Array(rows.clone()));
                    }
                }
            }
        }
    }
}

/// State shared by the responder and the [`KeyCrmMock`](super::KeyCrmMock) handle.
pub(crate) struct Shared {
    pub inner: Mutex<Inner>,
    pub api_key: String,
    /// `http://127.0.0.1:PORT`.
    pub origin: String,
    pub hooks: Dispatcher,
    /// What the simulator was started with; [`Shared::reset`] goes back to it.
    pub config: KeyCrmMockBuilder,
    /// The ids of the builder's seed.
    pub seeded: Option<super::Seeded>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking handler must not take the whole simulator down with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Back to the state right after start (see [`KeyCrmMock::reset`](super::KeyCrmMock::reset)).
    pub fn reset(&self) {
        let config = &self.config;
        let mut inner = self.lock();
        let mut state = State::new(config.leads_enabled, config.clock.clone());
        if let Some(seed) = &config.seed {
            seed::seed(&mut state, seed);
        }
        inner.state = state;
        inner.log.clear();
        inner.throttle = Throttle::new(config.quota);
        inner.faults = config.initial_faults();
        inner.trigger_hooks = config.webhooks.clone();
        inner.stock_hooks = config.stock_webhooks.clone();
        self.hooks.clear();
    }
}

/// The wiremock responder.
pub(crate) struct Responder(pub Arc<Shared>);

/// A JSON answer.
pub(crate) fn json_response(status: u16, body: &Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(
        serde_json::to_vec(body).unwrap_or_default(),
        "application/json",
    )
}

/// An answer hyper refuses to encode (it carries both `Transfer-Encoding` and
/// `Content-Length`), so the server closes the connection without sending a byte: the
/// client sees the connection drop before any response.
fn dropped_connection() -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("transfer-encoding", "chunked")
        .insert_header("content-length", "2")
        .set_body_raw(b"{}".to_vec(), "application/json")
}

impl Respond for Responder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let shared = &self.0;
        let method = request.method.as_str().to_string();
        let path = request.url.path().to_string();
        let query = request.url.query().map(str::to_string);
        if let Some(admin_path) = path.strip_prefix("/__mock") {
            return admin::handle(shared, &method, admin_path, request);
        }
        let mut inner = shared.lock();

        // Files are served under /files, outside the API (no key needed).
        if method == "GET"
            && let Some(name) = path.strip_prefix("/files/")
        {
            let file = inner.state.files.values().find(|f| f.file_name == name);
            return match file {
                Some(f) => ResponseTemplate::new(200).set_body_raw(f.content.clone(), &f.mime_type),
                None => json_response(404, &json!({ "message": "Not Found" })),
            };
        }

        let mut record = RecordedRequest {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            operation: None,
            status: None,
        };
        let api_path = path
            .strip_prefix("/v1")
            .filter(|p| p.is_empty() || p.starts_with('/'));
        let found = match api_path.map(|p| routes::find(&method, p)) {
            Some(Match::Found(route, params)) => Some((route, params)),
            Some(Match::WrongMethod(methods)) => {
                let message = format!(
                    "The {method} method is not supported for route {}. Supported methods: {}.",
                    path.trim_start_matches('/'),
                    methods.join(", ")
                );
                record.status = Some(405);
                inner.log.push(record);
                return json_response(405, &json!({ "message": message }));
            }
            Some(Match::Missing) | None => None,
        };
        let Some((route, params)) = found else {
            let message = format!(
                "The route {} could not be found.",
                path.trim_start_matches('/')
            );
            record.status = Some(404);
            inner.log.push(record);
            return json_response(404, &json!({ "message": message }));
        };
        record.operation = Some(route.operation);
        let latency = inner.faults.latency;

        // Faults happen in front of the application: nothing is applied or counted.
        match inner.faults.next() {
            Some(Fault::Drop) => {
                inner.log.push(record);
                return dropped_connection();
            }
            Some(Fault::Status(status)) => {
                record.status = Some(status);
                inner.log.push(record);
                let message = match status {
                    429 => "Too Many Attempts.",
                    502 => "Bad Gateway",
                    503 => "Service Unavailable",
                    _ => "Server Error",
                };
                let mut answer =
                    json_response(status, &json!({ "message": message })).set_delay(latency);
                if status == 429 {
                    answer = answer.insert_header("retry-after", "1");
                }
                return answer;
            }
            None => {}
        }

        let authorized = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|key| key.trim() == shared.api_key);
        if !authorized {
            record.status = Some(401);
            inner.log.push(record);
            return json_response(401, &json!({ "message": "Unauthenticated." }))
                .set_delay(latency);
        }

        let quota = inner.throttle.hit(Instant::now());
        let quota_headers = quota.headers(SystemTime::now());
        if !quota.allowed {
            record.status = Some(429);
            inner.log.push(record);
            let mut answer = json_response(429, &json!({ "message": "Too Many Attempts." }));
            for (name, value) in &quota_headers {
                answer = answer.insert_header(*name, value.as_str());
            }
            return answer.set_delay(latency);
        }

        let result = if route.operation.starts_with("pipeline_") && !inner.state.leads_enabled {
            Err(ApiError::bad_request("Leads are not enabled"))
        } else {
            let ctx = Ctx {
                params,
                query: request
                    .url
                    .query_pairs()
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect(),
                body: &request.body,
                content_type: request
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok()),
                url: format!("{}{}", shared.origin, path),
                origin: &shared.origin,
            };
            (route.handler)(&mut inner.state, &ctx)
        };
        inner.flush_events(&shared.hooks);

        let (reply, success) = match result {
            Ok(Reply { status, body }) => (Reply { status, body }, true),
            Err(ApiError { status, body }) => (Reply::json(status, body), false),
        };
        record.status = Some(reply.status);
        let mut delay = latency;
        if success && routes::is_create(route.operation) && inner.faults.lose_this_create() {
            // The lost-response case: the record exists, but the answer comes too late.
            inner.faults.served += 1;
            delay += inner.faults.lost_delay;
        }
        inner.log.push(record);
        drop(inner);

        let answer = match &reply.body {
            Some(body) => json_response(reply.status, body),
            None => ResponseTemplate::new(reply.status),
        };
        let mut answer = answer;
        for (name, value) in &quota_headers {
            answer = answer.insert_header(*name, value.as_str());
        }
        answer.set_delay(delay)
    }
}

/// How long [`KeyCrmMock::wait_for_webhooks`](super::KeyCrmMock::wait_for_webhooks) waits
/// at most.
pub(crate) const WEBHOOK_WAIT: Duration = Duration::from_secs(30);
