//! The hand-written side of the client: configuration, the API key, and the hooks every
//! generated request goes through (authentication, quota pacing, retries, tracing).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use progenitor_client::{ClientHooks, ClientInfo, OperationInfo};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderName, HeaderValue};
use tracing::Instrument;

use crate::Client;
use crate::clock::Clock;
use crate::error::{Error, ErrorMeta, Failure, Result, retry_after};
use crate::limiter::{ClientStats, Counters, Limiter, Refusal, Signal, WaitPhase};
use crate::quota::{Reservation, SharedQuota};

mod answer;
mod builder;
mod retry;

use answer::{AnswerFailure, Stamp};
pub use builder::ClientBuilder;
pub(crate) use retry::RetryPolicy;
use retry::{Outcome, Verdict, splitmix};

/// The production base URL of the KeyCRM Open API.
pub const DEFAULT_BASE_URL: &str = "https://openapi.keycrm.app/v1";

/// Environment variable read by [`Client::from_env`] for the API key.
pub const ENV_API_KEY: &str = "KEYCRM_API_KEY";

/// Environment variable read by [`Client::from_env`] for an alternative base URL.
pub const ENV_BASE_URL: &str = "KEYCRM_BASE_URL";

/// The request header that carries a correlation id, when enabled.
pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// Response header the runtime adds: how many times the request was sent.
pub(crate) const ATTEMPTS_HEADER: &str = "x-keycrm-rs-attempts";
/// Response header the runtime adds: the operation id.
pub(crate) const OPERATION_HEADER: &str = "x-keycrm-rs-operation";
/// Response header the runtime adds to a final 429: the wait it read, in milliseconds.
pub(crate) const RETRY_AFTER_MS_HEADER: &str = "x-keycrm-rs-retry-after-ms";
/// Response header the runtime adds to an error response: the service's `message`.
pub(crate) const MESSAGE_HEADER: &str = "x-keycrm-rs-message";

/// Default limit of a successful answer's body (32 MiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 32 * 1024 * 1024;
/// Default limit of an error answer's body (64 KiB).
pub const DEFAULT_MAX_ERROR_BODY_BYTES: u64 = 64 * 1024;

/// A KeyCRM API key. Its `Debug` and `Display` never show the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Arc<str>);

impl ApiKey {
    /// Wraps a key; surrounding white space is removed.
    pub fn new(key: impl AsRef<str>) -> Self {
        Self(Arc::from(key.as_ref().trim()))
    }

    /// The key itself, for the rare caller that must pass it on.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn header(&self) -> Result<HeaderValue> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.0)).map_err(|_| {
            Error::config("the API key contains characters that cannot be sent in a header")
        })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<&str> for ApiKey {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl From<String> for ApiKey {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

/// State shared by a [`Client`] and all its clones (the generator's "inner type"): the
/// key, the quota limiter, retry settings and counters; plus this clone's call deadline.
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
    deadline: Duration,
}

struct Shared {
    auth: HeaderValue,
    user_agent: String,
    limiter: Limiter,
    /// Whether the limiter's clock was given to [`ClientBuilder::clock`]: only then is
    /// [`Client::wall_time`] its time rather than the system's.
    clock_given: bool,
    /// The quota shared with other clients on the same key, when one is set.
    shared_quota: Option<Arc<dyn SharedQuota>>,
    counters: Counters,
    retry: RetryPolicy,
    correlation_ids: bool,
    sequence: AtomicU64,
    observers: std::sync::RwLock<Vec<RequestObserver>>,
    timeout: Duration,
    limits: BodyLimits,
}

/// How many bytes of an answer's body are read at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BodyLimits {
    success: u64,
    error: u64,
}

/// One finished attempt of a KeyCRM request, as an observer sees it (no URL values, no bodies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestRecord {
    /// The operation id (`list_orders`).
    pub operation: &'static str,
    /// The HTTP status, or 0 when no answer came (a timeout, a reset).
    pub status: u16,
    /// How long the attempt took, quota wait excluded.
    pub elapsed: Duration,
    /// The attempt number, from 1.
    pub attempt: u32,
}

/// A function told of every attempt of every request of a client and its clones
/// (see [`Client::observe`]). It runs on the request's task: it must be quick.
pub type RequestObserver = Arc<dyn Fn(&RequestRecord) + Send + Sync>;

impl Shared {
    fn tell_observers(&self, record: RequestRecord) {
        let observers = self
            .observers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for observer in observers.iter() {
            observer(&record);
        }
    }
}

impl Runtime {
    pub(crate) fn retry_policy(&self) -> RetryPolicy {
        self.shared.retry
    }

    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        self.shared.limiter.clock()
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("api_key", &"[redacted]")
            .field("user_agent", &self.shared.user_agent)
            .field("retry", &self.shared.retry)
            .field("correlation_ids", &self.shared.correlation_ids)
            .field("deadline", &self.deadline)
            .field("limits", &self.shared.limits)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Starts configuring a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Builds a client from `KEYCRM_API_KEY` and, if set, `KEYCRM_BASE_URL`, with default
    /// settings otherwise.
    ///
    /// A missing or empty key is an [`Error::Config`], not a panic.
    pub fn from_env() -> Result<Client> {
        let key = std::env::var(ENV_API_KEY)
            .ok()
            .filter(|k| !k.trim().is_empty())
            .ok_or_else(|| {
                Error::config(format!(
                    "{ENV_API_KEY} is not set; export your KeyCRM API key"
                ))
            })?;
        let mut builder = Client::builder().api_key(key);
        if let Ok(url) = std::env::var(ENV_BASE_URL)
            && !url.trim().is_empty()
        {
            builder = builder.base_url(url);
        }
        builder.build()
    }

    /// The current wall-clock time as this client sees it: the
    /// [`wall_time`](Clock::wall_time) of the clock given to [`ClientBuilder::clock`], or the
    /// system's time when none was given.
    ///
    /// Code built on a client (the sync engine's pull windows and cursors) takes its time
    /// from here, so that a test can share one [`VirtualClock`](crate::clock::VirtualClock)
    /// between the client and a simulated KeyCRM and move both forward without waiting.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// use keycrm_api::Client;
    /// use keycrm_api::clock::{Clock, VirtualClock};
    ///
    /// let clock = Arc::new(VirtualClock::new());
    /// let client = Client::builder()
    ///     .api_key("key")
    ///     .clock(clock.clone())
    ///     .build()
    ///     .unwrap();
    /// let before = client.wall_time();
    /// clock.advance(Duration::from_secs(300));
    /// assert_eq!(
    ///     client.wall_time().duration_since(before).unwrap(),
    ///     Duration::from_secs(300)
    /// );
    /// ```
    pub fn wall_time(&self) -> std::time::SystemTime {
        let shared = &self.inner().shared;
        if shared.clock_given {
            shared.limiter.clock().wall_time()
        } else {
            std::time::SystemTime::now()
        }
    }

    /// The user agent this client sends.
    pub fn user_agent(&self) -> &str {
        &self.inner().shared.user_agent
    }

    /// Counters of this client and all its clones: requests, retries, quota waits, 429s.
    ///
    /// They also say which [`PacingMode`](crate::PacingMode) is in force, the rate-limit budget the server
    /// last reported, the burst allowed now, and what was learnt of how the server counts
    /// (a [`QuotaModel`](crate::QuotaModel)).
    pub fn stats(&self) -> ClientStats {
        let shared = &self.inner().shared;
        let mut stats = shared.counters.snapshot();
        shared.limiter.report(&mut stats);
        stats.shared_quota = shared.shared_quota.is_some();
        stats
    }

    /// Adds an observer told of every attempt of every request of this client and all its
    /// clones (operation, status, latency): how metrics exporters count requests.
    pub fn observe(&self, observer: impl Fn(&RequestRecord) + Send + Sync + 'static) {
        self.inner()
            .shared
            .observers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Arc::new(observer));
    }
    /// A clone of this client whose calls each have `deadline` in all (see
    /// [`ClientBuilder::deadline`]); it shares the quota, the 429 gate and the counters
    /// with this client.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # let client = keycrm_api::Client::builder().api_key("k").build().unwrap();
    /// let quick = client.with_deadline(Duration::from_secs(5));
    /// assert_eq!(quick.deadline(), Duration::from_secs(5));
    /// ```
    pub fn with_deadline(&self, deadline: Duration) -> Client {
        let runtime = Runtime {
            shared: self.inner().shared.clone(),
            deadline,
        };
        Client::new_with_client(self.baseurl(), self.client().clone(), runtime)
    }

    /// The deadline of each call made through this client.
    pub fn deadline(&self) -> Duration {
        self.inner().deadline
    }

    fn next_correlation_id(&self) -> String {
        let n = self.inner().shared.sequence.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}", splitmix(n))
    }
}

/// What the runtime does after one attempt that neither succeeded nor failed for good.
struct Retry {
    /// Wait at least this long (`None`: the computed backoff).
    hint: Option<Duration>,
    /// The error to report should the request not be sendable again.
    fallback: Error,
}

/// `X-RateLimit-Limit` and `X-RateLimit-Remaining`, when an answer carries both.
fn rate_limit_budget(headers: &reqwest::header::HeaderMap) -> Option<(u32, u32)> {
    let read = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<u32>().ok();
    Some((read("x-ratelimit-limit")?, read("x-ratelimit-remaining")?))
}

/// The wait until a 429's `X-RateLimit-Reset` (Unix seconds), read when it has no
/// `Retry-After`.
fn rate_limit_reset(
    headers: &reqwest::header::HeaderMap,
    now: std::time::SystemTime,
) -> Option<Duration> {
    let secs = headers
        .get("x-ratelimit-reset")?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()?;
    let at = std::time::UNIX_EPOCH.checked_add(Duration::from_secs(secs))?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `/v1/order/123/payment/7` -> `/v1/order/{id}/payment/{id}`: bounded cardinality, no data.
fn path_template(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
                "{id}"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

impl ClientHooks<Runtime> for Client {
    async fn pre<E>(
        &self,
        request: &mut reqwest::Request,
        _info: &OperationInfo,
    ) -> std::result::Result<(), progenitor_client::Error<E>> {
        let correlation = self
            .inner()
            .shared
            .correlation_ids
            .then(|| self.next_correlation_id());
        let headers = request.headers_mut();
        headers.insert(AUTHORIZATION, self.inner().shared.auth.clone());
        headers
            .entry(ACCEPT)
            .or_insert(HeaderValue::from_static("application/json"));
        if let Some(id) = correlation
            && let Ok(value) = HeaderValue::from_str(&id)
        {
            headers.insert(HeaderName::from_static(CORRELATION_HEADER), value);
        }
        Ok(())
    }

    /// Runs one call: quota pacing, the 429 gate, attempts, backoff, the deadline, and the
    /// body read with its limit. A failure without an answer to show (transport, timeout,
    /// deadline, body limit) returns as a `reqwest::Error` that carries the finished
    /// [`Error`], which `Error::from` takes out again: no invented status, no fake response.
    async fn exec(
        &self,
        request: reqwest::Request,
        info: &OperationInfo,
    ) -> reqwest::Result<reqwest::Response> {
        match self.run(request, info).await {
            Ok(response) => Ok(response),
            Err(error) => Err(Failure::into_reqwest(error).await),
        }
    }
}

impl Client {
    async fn run(
        &self,
        mut request: reqwest::Request,
        info: &OperationInfo,
    ) -> Result<reqwest::Response> {
        let runtime = self.inner();
        let shared = &*runtime.shared;
        let counters = &shared.counters;
        let clock = shared.limiter.clock();
        let policy = shared.retry;
        let method = request.method().clone();
        let template = path_template(request.url().path());
        let correlation = request
            .headers()
            .get(CORRELATION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let stamp = Stamp {
            operation: info.operation_id,
            correlation: correlation.as_deref(),
        };
        let meta = |attempts: u32| {
            ErrorMeta::new(correlation.clone(), attempts).with_operation(info.operation_id)
        };
        let deadline = runtime.deadline;
        let deadline_at = clock.now().checked_add(deadline);
        let past_deadline = |phase: WaitPhase, attempts: u32| Error::DeadlineExceeded {
            deadline,
            phase,
            meta: meta(attempts),
        };
        let mut attempt: u32 = 0;
        loop {
            let ticket = match shared.limiter.acquire(deadline_at).await {
                Ok(ticket) => ticket,
                Err(Refusal::Deadline(phase)) => return Err(past_deadline(phase, attempt)),
            };
            let mut waited = ticket.waited;
            if let Some(quota) = &shared.shared_quota {
                match self.reserve_shared(&**quota, deadline_at).await {
                    Ok(wait) => {
                        if !wait.is_zero() {
                            counters.shared_waits.fetch_add(1, Ordering::Relaxed);
                            counters.shared_waited_micros.fetch_add(
                                u64::try_from(wait.as_micros()).unwrap_or(u64::MAX),
                                Ordering::Relaxed,
                            );
                        }
                        waited = waited.saturating_add(wait);
                    }
                    Err(SharedRefusal::Deadline(phase)) => {
                        return Err(past_deadline(phase, attempt));
                    }
                    Err(SharedRefusal::Failed(message)) => {
                        return Err(Error::Quota {
                            message,
                            meta: meta(attempt),
                        });
                    }
                }
            }
            if !waited.is_zero() {
                counters.waits.fetch_add(1, Ordering::Relaxed);
                counters.waited_micros.fetch_add(
                    u64::try_from(waited.as_micros()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
            }
            attempt += 1;
            let spare = if attempt <= policy.max_retries {
                request.try_clone()
            } else {
                None
            };
            let can_retry = spare.is_some();
            // The attempt may not outlast the call's deadline.
            let remaining = deadline_at.map(|d| d.saturating_sub(clock.now()));
            let cut_by_deadline = remaining.is_some_and(|r| r < shared.timeout);
            if cut_by_deadline {
                match remaining {
                    Some(r) if !r.is_zero() => *request.timeout_mut() = Some(r),
                    _ => return Err(past_deadline(WaitPhase::Pacing, attempt - 1)),
                }
            }

            let span = tracing::info_span!(
                "keycrm.request",
                operation = info.operation_id,
                method = %method,
                path = %template,
                attempt,
                status = tracing::field::Empty,
                elapsed_ms = tracing::field::Empty,
                correlation_id = correlation.as_deref().unwrap_or(""),
            );
            let started = std::time::Instant::now();
            counters.requests.fetch_add(1, Ordering::Relaxed);
            let result = self
                .client()
                .execute(request)
                .instrument(span.clone())
                .await;
            span.record("elapsed_ms", started.elapsed().as_secs_f64() * 1e3);
            shared.tell_observers(RequestRecord {
                operation: info.operation_id,
                status: result.as_ref().map_or(0, |r| r.status().as_u16()),
                elapsed: started.elapsed(),
                attempt,
            });
            let attempt_error = |e: &reqwest::Error| {
                counters.transport_errors.fetch_add(1, Ordering::Relaxed);
                if e.is_timeout() && cut_by_deadline {
                    past_deadline(WaitPhase::Request, attempt)
                } else {
                    Error::from_reqwest_attempt(e, meta(attempt))
                }
            };

            let retry = match result {
                Err(e) => {
                    // Answered (or lost) now, as far as the quota can tell.
                    drop(ticket);
                    span.record("status", 0u16);
                    span.in_scope(|| tracing::debug!(target: "keycrm", "request failed"));
                    let error = attempt_error(&e);
                    let outcome = if matches!(error, Error::DeadlineExceeded { .. }) {
                        Outcome::DeadlineExceeded
                    } else {
                        Outcome::Transport {
                            connect: e.is_connect(),
                            timeout: e.is_timeout(),
                        }
                    };
                    match policy.classify(&method, can_retry, outcome) {
                        Verdict::Final => return Err(error),
                        Verdict::Retry { wait } => Retry {
                            hint: wait,
                            fallback: error,
                        },
                    }
                }
                Ok(response) => {
                    let status = response.status();
                    ticket.observe(Signal {
                        budget: rate_limit_budget(response.headers()),
                        rate_limited: status == StatusCode::TOO_MANY_REQUESTS,
                        success: status.is_success(),
                        retry_after: retry_after(response.headers(), clock.wall_time()),
                    });
                    span.record("status", status.as_u16());
                    span.in_scope(|| tracing::debug!(target: "keycrm", "request finished"));
                    let mut final_wait = None;
                    let outcome = if status == StatusCode::TOO_MANY_REQUESTS {
                        counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                        let wait = retry_after(response.headers(), clock.wall_time())
                            .or_else(|| rate_limit_reset(response.headers(), clock.wall_time()))
                            .unwrap_or_else(|| {
                                policy.backoff(
                                    attempt - 1,
                                    shared.sequence.fetch_add(1, Ordering::Relaxed),
                                )
                            });
                        self.close_gates(policy.gate_for(wait)).await;
                        final_wait = Some(wait);
                        Outcome::RateLimited { wait }
                    } else if status.is_server_error() {
                        counters.server_errors.fetch_add(1, Ordering::Relaxed);
                        Outcome::ServerError {
                            retry_after: retry_after(response.headers(), clock.wall_time()),
                        }
                    } else {
                        Outcome::Answered
                    };
                    match policy.classify(&method, can_retry, outcome) {
                        Verdict::Retry { wait } => Retry {
                            hint: wait,
                            fallback: Error::from_status(
                                status.as_u16(),
                                None,
                                final_wait,
                                meta(attempt),
                            ),
                        },
                        Verdict::Final => {
                            match self.answer(response, attempt, stamp, final_wait).await {
                                Ok(answer) => return Ok(answer),
                                Err(AnswerFailure::Final(error)) => return Err(error),
                                Err(AnswerFailure::Read(e)) => {
                                    let error = attempt_error(&e);
                                    if final_wait.is_some() {
                                        // A final 429 stays final.
                                        return Err(error);
                                    }
                                    let outcome = if matches!(error, Error::DeadlineExceeded { .. })
                                    {
                                        Outcome::DeadlineExceeded
                                    } else {
                                        Outcome::BodyBroke
                                    };
                                    match policy.classify(&method, can_retry, outcome) {
                                        Verdict::Final => return Err(error),
                                        Verdict::Retry { wait } => Retry {
                                            hint: wait,
                                            fallback: error,
                                        },
                                    }
                                }
                            }
                        }
                    }
                }
            };

            let Some(again) = spare else {
                return Err(retry.fallback);
            };
            counters.retries.fetch_add(1, Ordering::Relaxed);
            let delay = retry.hint.unwrap_or_else(|| {
                policy.backoff(attempt - 1, shared.sequence.fetch_add(1, Ordering::Relaxed))
            });
            if !delay.is_zero() {
                if deadline_at.is_some_and(|d| clock.now().saturating_add(delay) > d) {
                    return Err(past_deadline(WaitPhase::Backoff, attempt));
                }
                clock.sleep(delay).await;
            }
            request = again;
        }
    }

    /// Closes the gate of this client and, when there is one, the shared quota's for `gate`
    /// (a 429 was answered).
    async fn close_gates(&self, gate: Duration) {
        let shared = &self.inner().shared;
        let clock = shared.limiter.clock();
        shared.limiter.close_gate(clock.now().saturating_add(gate));
        if let Some(quota) = &shared.shared_quota
            && let Err(e) = quota.close_gate(gate).await
        {
            // The local gate holds this client; the others will see their own 429s.
            tracing::warn!(target: "keycrm", error = %e, "the shared quota's gate could not be closed");
        }
    }

    /// Books this attempt's slot from the shared quota and waits for it; books again when
    /// a gate closed while it waited. Returns the time waited.
    async fn reserve_shared(
        &self,
        quota: &dyn SharedQuota,
        deadline_at: Option<Duration>,
    ) -> std::result::Result<Duration, SharedRefusal> {
        let shared = &self.inner().shared;
        let clock = shared.limiter.clock();
        let started = clock.now();
        loop {
            let mut request = shared.limiter.shared_request();
            if let Some(deadline) = deadline_at {
                request = request.max_wait(deadline.saturating_sub(clock.now()));
            }
            match quota.reserve(request).await.map_err(failed)? {
                Reservation::Granted { wait } if wait.is_zero() => {
                    return Ok(clock.now().saturating_sub(started));
                }
                Reservation::Granted { wait } => {
                    clock.sleep(wait).await;
                    if quota.gate().await.map_err(failed)?.is_none() {
                        return Ok(clock.now().saturating_sub(started));
                    }
                }
                Reservation::Refused { phase, .. } => return Err(SharedRefusal::Deadline(phase)),
            }
        }
    }
}

/// Why the shared quota let no attempt out.
enum SharedRefusal {
    /// The slot lies beyond the call's deadline.
    Deadline(WaitPhase),
    /// The shared quota failed; its message.
    Failed(String),
}

fn failed(e: crate::quota::QuotaError) -> SharedRefusal {
    SharedRefusal::Failed(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_templates_hide_ids() {
        assert_eq!(
            path_template("/v1/order/123/payment/7"),
            "/v1/order/{id}/payment/{id}"
        );
        assert_eq!(path_template("/v1/offers/stocks"), "/v1/offers/stocks");
    }
}
