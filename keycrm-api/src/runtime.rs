//! The hand-written side of the client: configuration, the API key, and the hooks every
//! generated request goes through (authentication, quota pacing, retries, tracing).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use progenitor_client::{ClientHooks, ClientInfo, OperationInfo};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use tracing::Instrument;

use crate::Client;
use crate::clock::{Clock, TokioClock};
use crate::error::{Error, Result, reqwest_text, retry_after};
use crate::limiter::{ClientStats, Counters, Limiter};

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
/// Response header of a synthesised response that stands for a transport failure.
pub(crate) const FAILURE_HEADER: &str = "x-keycrm-rs-failure";
/// Response header of a synthesised failure: the error text, without the URL.
pub(crate) const FAILURE_MESSAGE_HEADER: &str = "x-keycrm-rs-failure-message";
/// Response header the runtime adds to an error response: the service's `message`.
pub(crate) const MESSAGE_HEADER: &str = "x-keycrm-rs-message";
/// The status of a synthesised failure response (never sent by a server we talk to).
pub(crate) const FAILURE_STATUS: u16 = 599;

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
/// key, the quota limiter, retry settings and counters.
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
}

struct Shared {
    auth: HeaderValue,
    user_agent: String,
    limiter: Limiter,
    counters: Counters,
    retry: RetryPolicy,
    correlation_ids: bool,
    sequence: AtomicU64,
    observers: std::sync::RwLock<Vec<RequestObserver>>,
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
            .finish_non_exhaustive()
    }
}

/// How failed requests are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    max_retries: u32,
    base_backoff: Duration,
    max_backoff: Duration,
}

impl RetryPolicy {
    pub(crate) fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// The backoff before retry number `retry` (0-based), with fresh jitter.
    pub(crate) fn backoff_for(&self, retry: u32) -> Duration {
        self.backoff(retry, seed_from_clock())
    }

    /// Exponential backoff with "equal jitter": half fixed, half random, capped.
    fn backoff(&self, retry: u32, seed: u64) -> Duration {
        let exp = self.base_backoff.saturating_mul(1u32 << retry.min(16));
        let capped = exp.min(self.max_backoff);
        let half = capped / 2;
        let jitter = half.mul_f64((splitmix(seed) >> 11) as f64 / (1u64 << 53) as f64);
        half + jitter
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Configures and builds a [`Client`].
///
/// ```
/// use std::time::Duration;
/// let client = keycrm_api::Client::builder()
///     .api_key("my-key")
///     .application("acme-warehouse")
///     .requests_per_minute(60)
///     .max_retries(3)
///     .timeout(Duration::from_secs(30))
///     .build()
///     .unwrap();
/// # let _ = client;
/// ```
#[derive(Clone)]
pub struct ClientBuilder {
    api_key: Option<ApiKey>,
    base_url: String,
    connect_timeout: Duration,
    timeout: Duration,
    application: Option<String>,
    requests_per_minute: u32,
    burst: u32,
    max_retries: u32,
    base_backoff: Duration,
    max_backoff: Duration,
    correlation_ids: bool,
    clock: Option<Arc<dyn Clock>>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("base_url", &self.base_url)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("application", &self.application)
            .field("requests_per_minute", &self.requests_per_minute)
            .field("burst", &self.burst)
            .field("max_retries", &self.max_retries)
            .field("base_backoff", &self.base_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("correlation_ids", &self.correlation_ids)
            .finish()
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            api_key: None,
            base_url: DEFAULT_BASE_URL.to_string(),
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            application: None,
            requests_per_minute: 60,
            burst: 1,
            max_retries: 3,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            correlation_ids: false,
            clock: None,
        }
    }
}

impl ClientBuilder {
    /// The API key from the KeyCRM account settings (required).
    pub fn api_key(mut self, key: impl Into<ApiKey>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The base URL (default [`DEFAULT_BASE_URL`]); a trailing slash is ignored.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// Time allowed to open a connection (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time allowed for one attempt, from sending to the end of the body (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Your application's name, appended to the user agent (`keycrm-rs/0.1.0 acme-warehouse`).
    pub fn application(mut self, name: impl Into<String>) -> Self {
        self.application = Some(name.into());
        self
    }

    /// The request quota to pace at (default 60 per minute, KeyCRM's limit per key; some
    /// accounts have 20). Requests are spaced evenly, one every `60 s / n`, across all clones
    /// and tasks of the client. `0` turns pacing off (a 429 still pauses every task).
    pub fn requests_per_minute(mut self, n: u32) -> Self {
        self.requests_per_minute = n;
        self
    }

    /// How many requests may go out at once before even spacing applies (default 1: none).
    pub fn burst(mut self, n: u32) -> Self {
        self.burst = n.max(1);
        self
    }

    /// How many times a retryable failure is retried (default 3, so at most 4 attempts).
    ///
    /// GET, PUT and DELETE retry 429, 5xx, timeouts and connection failures. POST retries
    /// only what certainly was not processed: 429 and a connection that could not be opened.
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// First and largest backoff between retries (default 500 ms and 30 s); the delay doubles
    /// per retry, with jitter. A `Retry-After` from the service takes precedence.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.base_backoff = base;
        self.max_backoff = max.max(base);
        self
    }

    /// Send a generated `X-Correlation-ID` with each request (the same id on its retries); it
    /// appears on errors and in traces (default off).
    pub fn correlation_ids(mut self, enabled: bool) -> Self {
        self.correlation_ids = enabled;
        self
    }

    /// The clock for quota pacing and retry backoff (default: `tokio::time`). Tests pass a
    /// [`VirtualClock`](crate::clock::VirtualClock) to run waits instantly and inspect them.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Validates the configuration and builds the client.
    pub fn build(self) -> Result<Client> {
        let key = self
            .api_key
            .filter(|k| !k.expose().is_empty())
            .ok_or_else(|| {
                Error::config("an API key is required; set it with `api_key(..)` or KEYCRM_API_KEY")
            })?;
        let base_url = normalize_base_url(&self.base_url)?;
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(Error::config("timeouts must be greater than zero"));
        }
        if self.base_backoff.is_zero() {
            return Err(Error::config("the base backoff must be greater than zero"));
        }
        let mut user_agent = format!("keycrm-rs/{}", env!("CARGO_PKG_VERSION"));
        if let Some(app) = self
            .application
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            user_agent.push(' ');
            user_agent.push_str(app);
        }
        HeaderValue::from_str(&user_agent).map_err(|_| {
            Error::config("the application name contains characters not allowed in a header")
        })?;
        let http = reqwest::Client::builder()
            .user_agent(user_agent.clone())
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout)
            .build()
            .map_err(|e| {
                Error::config(format!("cannot build the HTTP client: {}", e.without_url()))
            })?;
        let runtime = Runtime {
            shared: Arc::new(Shared {
                auth: key.header()?,
                user_agent,
                limiter: Limiter::new(
                    self.requests_per_minute,
                    self.burst,
                    self.clock.unwrap_or_else(|| Arc::new(TokioClock::new())),
                ),
                counters: Counters::default(),
                retry: RetryPolicy {
                    max_retries: self.max_retries,
                    base_backoff: self.base_backoff,
                    max_backoff: self.max_backoff,
                },
                correlation_ids: self.correlation_ids,
                sequence: AtomicU64::new(seed_from_clock()),
                observers: std::sync::RwLock::new(Vec::new()),
            }),
        };
        Ok(Client::new_with_client(&base_url, http, runtime))
    }
}

fn seed_from_clock() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    splitmix(nanos ^ u64::from(std::process::id()))
}

/// Checks that `url` is an absolute http(s) URL and removes trailing slashes.
fn normalize_base_url(url: &str) -> Result<String> {
    let trimmed = url.trim().trim_end_matches('/');
    let parsed = reqwest::Url::parse(trimmed)
        .map_err(|e| Error::config(format!("the base URL `{trimmed}` is not a valid URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(Error::config(format!(
            "the base URL `{trimmed}` must be an http(s) URL with a host"
        )));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(Error::config(format!(
            "the base URL `{trimmed}` must not carry a query or fragment"
        )));
    }
    Ok(trimmed.to_string())
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

    /// The user agent this client sends.
    pub fn user_agent(&self) -> &str {
        &self.inner().shared.user_agent
    }

    /// Counters of this client and all its clones: requests, retries, quota waits, 429s.
    pub fn stats(&self) -> ClientStats {
        self.inner().shared.counters.snapshot()
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

    fn next_correlation_id(&self) -> String {
        let n = self.inner().shared.sequence.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}", splitmix(n))
    }
}

/// What to do after one attempt.
enum Outcome {
    Done,
    /// Retry after at least this long (`None`: the computed backoff).
    Retry(Option<Duration>),
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::PUT | Method::DELETE | Method::HEAD | Method::OPTIONS
    )
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

    async fn exec(
        &self,
        request: reqwest::Request,
        info: &OperationInfo,
    ) -> reqwest::Result<reqwest::Response> {
        let shared = &self.inner().shared;
        let counters = &shared.counters;
        let method = request.method().clone();
        let idempotent = is_idempotent(&method);
        let template = path_template(request.url().path());
        let correlation = request
            .headers()
            .get(CORRELATION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut pending = Some(request);
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let waited = shared.limiter.acquire().await;
            if !waited.is_zero() {
                counters.waits.fetch_add(1, Ordering::Relaxed);
                counters
                    .waited_micros
                    .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
            }
            let current = pending.take().expect("a request for every attempt");
            let can_retry = attempt <= shared.retry.max_retries;
            let spare = if can_retry { current.try_clone() } else { None };

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
                .execute(current)
                .instrument(span.clone())
                .await;
            let elapsed = started.elapsed();
            span.record("elapsed_ms", elapsed.as_secs_f64() * 1e3);

            let outcome = match &result {
                Ok(response) => {
                    let status = response.status();
                    span.record("status", status.as_u16());
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                        // Not processed: safe to retry for every method, after the gate.
                        let wait = retry_after(response.headers()).unwrap_or_else(|| {
                            shared.retry.backoff(
                                attempt - 1,
                                shared.sequence.fetch_add(1, Ordering::Relaxed),
                            )
                        });
                        shared
                            .limiter
                            .close_gate(shared.limiter.clock().now() + wait);
                        Outcome::Retry(Some(Duration::ZERO))
                    } else if status.is_server_error() {
                        counters.server_errors.fetch_add(1, Ordering::Relaxed);
                        if idempotent {
                            Outcome::Retry(retry_after(response.headers()))
                        } else {
                            Outcome::Done
                        }
                    } else {
                        Outcome::Done
                    }
                }
                Err(e) => {
                    counters.transport_errors.fetch_add(1, Ordering::Relaxed);
                    span.record("status", 0u16);
                    // A connection that could not be opened carried nothing: safe for POST too.
                    if idempotent || (e.is_connect() && !e.is_timeout()) {
                        Outcome::Retry(None)
                    } else {
                        Outcome::Done
                    }
                }
            };
            span.in_scope(|| tracing::debug!(target: "keycrm", "request finished"));
            {
                let observers = shared
                    .observers
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if !observers.is_empty() {
                    let record = RequestRecord {
                        operation: info.operation_id,
                        status: result.as_ref().map_or(0, |r| r.status().as_u16()),
                        elapsed,
                        attempt,
                    };
                    for observer in observers.iter() {
                        observer(&record);
                    }
                }
            }

            match (outcome, spare) {
                (Outcome::Retry(hint), Some(again)) if can_retry => {
                    counters.retries.fetch_add(1, Ordering::Relaxed);
                    let delay = hint.unwrap_or_else(|| {
                        shared
                            .retry
                            .backoff(attempt - 1, shared.sequence.fetch_add(1, Ordering::Relaxed))
                    });
                    if !delay.is_zero() {
                        shared.limiter.clock().sleep(delay).await;
                    }
                    pending = Some(again);
                }
                _ => return Ok(finish(result, attempt, correlation.as_deref()).await),
            }
        }
    }
}

/// Prepares the final response for `Error::from`, which cannot read bodies or see the
/// request: stamps the attempt count and correlation id on it; makes an error body that is
/// not a JSON object (an HTML proxy page, an empty 404) into `{}` so that the status still
/// maps to its error, copying the service's `message` into a header for statuses the
/// description does not declare; and turns a transport failure into a synthesised response
/// (the hooks can only return `reqwest::Error`, which cannot carry the attempt count).
async fn finish(
    result: reqwest::Result<reqwest::Response>,
    attempts: u32,
    correlation: Option<&str>,
) -> reqwest::Response {
    let mut response = match result {
        Ok(response)
            if response.status().is_client_error() || response.status().is_server_error() =>
        {
            let status = response.status();
            let headers = response.headers().clone();
            match response.bytes().await {
                Ok(body) => rebuild_error_response(status, headers, &body),
                Err(e) => failure_response(&e),
            }
        }
        Ok(response) => response,
        Err(e) => failure_response(&e),
    };
    let headers = response.headers_mut();
    headers.insert(HeaderName::from_static(ATTEMPTS_HEADER), attempts.into());
    if let Some(value) = correlation.and_then(|c| HeaderValue::from_str(c).ok()) {
        headers.insert(HeaderName::from_static(CORRELATION_HEADER), value);
    }
    response
}

fn rebuild_error_response(
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: &[u8],
) -> reqwest::Response {
    let parsed: Option<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|m| m.get("message"))
        .and_then(|m| m.as_str())
        .map(|m| m.chars().take(512).collect::<String>());
    let body = if parsed.is_some() {
        body.to_vec()
    } else {
        b"{}".to_vec()
    };
    let mut builder = http::Response::builder().status(status);
    for (name, value) in &headers {
        if name != reqwest::header::CONTENT_LENGTH && name != reqwest::header::CONTENT_TYPE {
            builder = builder.header(name, value);
        }
    }
    builder = builder.header(reqwest::header::CONTENT_TYPE, "application/json");
    if let Some(value) =
        message.and_then(|m| HeaderValue::from_bytes(m.replace(['\r', '\n'], " ").as_bytes()).ok())
    {
        builder = builder.header(MESSAGE_HEADER, value);
    }
    reqwest::Response::from(builder.body(body).expect("a valid rebuilt response"))
}

fn failure_response(e: &reqwest::Error) -> reqwest::Response {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "transport"
    };
    let message = reqwest_text(e);
    let message = HeaderValue::from_str(&message.replace(['\r', '\n'], " "))
        .unwrap_or_else(|_| HeaderValue::from_static("transport failure"));
    let response = http::Response::builder()
        .status(FAILURE_STATUS)
        .header(FAILURE_HEADER, kind)
        .header(FAILURE_MESSAGE_HEADER, message)
        .body(Vec::<u8>::new())
        .expect("a valid synthesised response");
    reqwest::Response::from(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_normalised_and_checked() {
        assert_eq!(
            normalize_base_url("https://openapi.keycrm.app/v1/").unwrap(),
            DEFAULT_BASE_URL
        );
        assert_eq!(
            normalize_base_url("http://127.0.0.1:8080//").unwrap(),
            "http://127.0.0.1:8080"
        );
        for bad in ["", "openapi.keycrm.app", "ftp://x/v1", "https://x/v1?a=1"] {
            assert!(
                matches!(normalize_base_url(bad), Err(Error::Config { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_empty_key_is_a_config_error() {
        let err = Client::builder().api_key("  ").build().unwrap_err();
        assert!(matches!(err, Error::Config { .. }));
        assert!(err.to_string().contains("API key is required"));
        assert!(matches!(
            Client::builder().build(),
            Err(Error::Config { .. })
        ));
        let zero = Client::builder()
            .api_key("k")
            .timeout(Duration::ZERO)
            .build();
        assert!(matches!(zero, Err(Error::Config { .. })));
    }

    #[test]
    fn the_key_never_shows() {
        let secret = "sk-very-secret-4242";
        let builder = Client::builder().api_key(secret).application("acme");
        assert!(!format!("{builder:?}").contains(secret));
        let client = builder.build().unwrap();
        assert!(!format!("{client:?}").contains(secret));
        assert!(!format!("{:?} {}", ApiKey::new(secret), ApiKey::new(secret)).contains(secret));
        assert_eq!(
            client.user_agent(),
            format!("keycrm-rs/{} acme", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let policy = RetryPolicy {
            max_retries: 3,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(4),
        };
        for seed in 0..50 {
            let d0 = policy.backoff(0, seed);
            assert!(
                d0 >= Duration::from_millis(250) && d0 <= Duration::from_millis(500),
                "{d0:?}"
            );
            let d2 = policy.backoff(2, seed);
            assert!(
                d2 >= Duration::from_secs(1) && d2 <= Duration::from_secs(2),
                "{d2:?}"
            );
            let d9 = policy.backoff(9, seed);
            assert!(
                d9 >= Duration::from_secs(2) && d9 <= Duration::from_secs(4),
                "{d9:?}"
            );
        }
        assert_ne!(policy.backoff(1, 1), policy.backoff(1, 2), "jitter varies");
    }

    #[test]
    fn path_templates_hide_ids() {
        assert_eq!(
            path_template("/v1/order/123/payment/7"),
            "/v1/order/{id}/payment/{id}"
        );
        assert_eq!(path_template("/v1/offers/stocks"), "/v1/offers/stocks");
    }
}
