//! The hand-written side of the client: configuration, the API key, and the hooks every
//! generated request goes through (authentication, quota pacing, retries, tracing).

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use progenitor_client::{ClientHooks, ClientInfo, OperationInfo};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use tracing::Instrument;

use crate::Client;
use crate::clock::{Clock, TokioClock};
use crate::error::{Error, ErrorMeta, Failure, Result, retry_after};
use crate::limiter::{ClientStats, Counters, Limiter, PacingMode, Refusal, Signal, WaitPhase};
use crate::quota::{Reservation, SharedQuota};

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

/// How failed requests are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    max_retries: u32,
    base_backoff: Duration,
    max_backoff: Duration,
    max_retry_wait: Duration,
}

impl RetryPolicy {
    pub(crate) fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// The backoff before retry number `retry` (0-based), with fresh jitter.
    pub(crate) fn backoff_for(&self, retry: u32) -> Duration {
        self.backoff(retry, seed_from_clock())
    }

    /// A server-given wait before retrying a 5xx, capped by the largest backoff.
    fn server_hint(&self, hint: Duration) -> Duration {
        hint.min(self.max_backoff)
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
///     .deadline(Duration::from_secs(300))
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
    pacing: PacingMode,
    max_retries: u32,
    base_backoff: Duration,
    max_backoff: Duration,
    max_retry_wait: Duration,
    deadline: Duration,
    max_response_bytes: u64,
    max_error_body_bytes: u64,
    allow_insecure_http: bool,
    correlation_ids: bool,
    clock: Option<Arc<dyn Clock>>,
    shared_quota: Option<Arc<dyn SharedQuota>>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("base_url", &redact_url(&self.base_url))
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("application", &self.application)
            .field("requests_per_minute", &self.requests_per_minute)
            .field("burst", &self.burst)
            .field("pacing", &self.pacing)
            .field("max_retries", &self.max_retries)
            .field("base_backoff", &self.base_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("max_retry_wait", &self.max_retry_wait)
            .field("deadline", &self.deadline)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("max_error_body_bytes", &self.max_error_body_bytes)
            .field("allow_insecure_http", &self.allow_insecure_http)
            .field("correlation_ids", &self.correlation_ids)
            .field("shared_quota", &self.shared_quota.is_some())
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
            pacing: PacingMode::Adaptive,
            max_retries: 3,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_wait: Duration::from_secs(120),
            deadline: Duration::from_secs(600),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_error_body_bytes: DEFAULT_MAX_ERROR_BODY_BYTES,
            allow_insecure_http: false,
            correlation_ids: false,
            clock: None,
            shared_quota: None,
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
    ///
    /// It must not carry credentials (`https://user:pass@...`), and it must use `https://`
    /// unless its host is loopback (`127.0.0.0/8`, `::1`, `localhost`, as the simulator is)
    /// or [`allow_insecure_http`](Self::allow_insecure_http) is set: the API key travels
    /// with every request.
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
    /// accounts have 20). Without rate-limit headers from the server (or in
    /// [`PacingMode::Even`]) requests are spaced evenly, one every `60 s / n`, across all
    /// clones and tasks of the client; with them, the server's budget decides (see
    /// [`PacingMode::Adaptive`]). `0` turns pacing off altogether, headers or not (a 429
    /// still pauses every task).
    pub fn requests_per_minute(mut self, n: u32) -> Self {
        self.requests_per_minute = n;
        self
    }

    /// How many requests may go out at once before even spacing applies (default 1: none).
    /// In [`PacingMode::Adaptive`] this is the largest burst: 429s halve it, and each
    /// minute without one gives one back.
    pub fn burst(mut self, n: u32) -> Self {
        self.burst = n.max(1);
        self
    }

    /// How requests are paced (default [`PacingMode::Adaptive`]): from the server's
    /// `X-RateLimit-Limit` / `X-RateLimit-Remaining` when its answers carry them, evenly
    /// otherwise; [`PacingMode::Even`] always paces evenly. See [`PacingMode`].
    pub fn pacing(mut self, mode: PacingMode) -> Self {
        self.pacing = mode;
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
    /// per retry, with jitter. A `Retry-After` on a 5xx takes precedence, capped by `max`.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.base_backoff = base;
        self.max_backoff = max.max(base);
        self
    }

    /// The longest `Retry-After` of a 429 that the client waits out (default 120 s). A longer
    /// one fails the call at once with [`Error::RateLimited`] carrying the wait; the quota
    /// gate of every task then stays closed for at most this long.
    pub fn max_retry_wait(mut self, wait: Duration) -> Self {
        self.max_retry_wait = wait;
        self
    }

    /// The time one call may take in all (default 10 min): quota waits, the 429 gate,
    /// every attempt and the backoff between them. When it runs out the call fails with
    /// [`Error::DeadlineExceeded`], which says what it was waiting for. A wait that would
    /// end after the deadline fails at once instead of being slept. Override it for some
    /// calls with [`Client::with_deadline`].
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The largest body of a successful answer the client reads (default 32 MiB). A larger
    /// one, declared by `Content-Length` or streamed, fails with [`Error::ResponseTooLarge`]
    /// once the limit is reached, without reading further.
    pub fn max_response_bytes(mut self, limit: u64) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// The largest body of an error answer (4xx, 5xx) the client reads (default 64 KiB);
    /// see [`max_response_bytes`](Self::max_response_bytes).
    pub fn max_error_body_bytes(mut self, limit: u64) -> Self {
        self.max_error_body_bytes = limit;
        self
    }

    /// Allows a plain `http://` base URL on a host that is not loopback (default off). The
    /// API key then travels unencrypted: only for a trusted network, such as a proxy that
    /// adds TLS.
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
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

    /// A quota shared with other clients that use the same API key, in this process or in
    /// others (see [`SharedQuota`]; [`InProcessQuota`](crate::quota::InProcessQuota) for
    /// clients of one process). Default: none.
    ///
    /// It comes **on top of** the client's own limiter, which keeps working as without
    /// it (its pacing mode, its burst, its 429 gate for every clone): each attempt first
    /// gets its slot from the client's limiter, then books one from the shared quota at
    /// the client's rate (`requests_per_minute`, 1 % wider, and the burst in force) and
    /// waits for it. Several processes configured with the same rate thus never exceed
    /// it together. A 429 closes the client's own gate and the shared one, so it holds
    /// every client on the quota; an attempt that waited for its shared slot asks again
    /// when a gate closed meanwhile. The call's deadline covers the shared wait; a
    /// failure of the shared quota fails the call with [`Error::Quota`] before sending.
    /// [`Client::stats`] counts the shared waits.
    pub fn shared_quota(mut self, quota: Arc<dyn SharedQuota>) -> Self {
        self.shared_quota = Some(quota);
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
        let base_url = normalize_base_url(&self.base_url, self.allow_insecure_http)?;
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(Error::config("timeouts must be greater than zero"));
        }
        if self.deadline.is_zero() {
            return Err(Error::config("the deadline must be greater than zero"));
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
            deadline: self.deadline,
            shared: Arc::new(Shared {
                auth: key.header()?,
                user_agent,
                limiter: Limiter::new(
                    self.requests_per_minute,
                    self.burst,
                    self.pacing,
                    self.clock.unwrap_or_else(|| Arc::new(TokioClock::new())),
                ),
                shared_quota: self.shared_quota,
                counters: Counters::default(),
                retry: RetryPolicy {
                    max_retries: self.max_retries,
                    base_backoff: self.base_backoff,
                    max_backoff: self.max_backoff,
                    max_retry_wait: self.max_retry_wait,
                },
                correlation_ids: self.correlation_ids,
                sequence: AtomicU64::new(seed_from_clock()),
                observers: std::sync::RwLock::new(Vec::new()),
                timeout: self.timeout,
                limits: BodyLimits {
                    success: self.max_response_bytes,
                    error: self.max_error_body_bytes,
                },
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

/// Checks that `url` is an absolute http(s) URL without credentials, query or fragment,
/// that it uses TLS unless the host is loopback or `allow_insecure` is set, and removes
/// trailing slashes. Error messages show the URL without credentials, query or fragment.
fn normalize_base_url(url: &str, allow_insecure: bool) -> Result<String> {
    let trimmed = url.trim().trim_end_matches('/');
    let parsed = reqwest::Url::parse(trimmed).map_err(|e| {
        Error::config(format!(
            "the base URL `{}` is not a valid URL: {e}",
            redact_url(trimmed)
        ))
    })?;
    let shown = describe_url(&parsed);
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(Error::config(format!(
            "the base URL `{shown}` must be an http(s) URL with a host"
        )));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Error::config(format!(
            "the base URL `{shown}` must not carry credentials (`user:password@`); \
             KeyCRM is authenticated with the API key"
        )));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(Error::config(format!(
            "the base URL `{shown}` must not carry a query or fragment"
        )));
    }
    if parsed.scheme() == "http" && !allow_insecure && !is_loopback(&parsed) {
        return Err(Error::config(format!(
            "the base URL `{shown}` uses http://, which would send the API key unencrypted; \
             use https://, or `allow_insecure_http(true)` for a trusted network"
        )));
    }
    Ok(trimmed.to_string())
}

/// Whether the URL's host is this machine: `localhost`, `127.0.0.0/8` or `::1`.
fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => {
            let name = bare.trim_end_matches('.');
            name.eq_ignore_ascii_case("localhost")
                || name
                    .rsplit_once('.')
                    .is_some_and(|(_, tld)| tld.eq_ignore_ascii_case("localhost"))
        }
    }
}

/// `scheme://host:port/path`: a URL without credentials, query or fragment.
fn describe_url(url: &reqwest::Url) -> String {
    let mut shown = format!("{}://", url.scheme());
    if let Some(host) = url.host_str() {
        shown.push_str(host);
    }
    if let Some(port) = url.port() {
        shown.push_str(&format!(":{port}"));
    }
    shown.push_str(url.path().trim_end_matches('/'));
    shown
}

/// A base URL as it may be shown: credentials, query and fragment removed.
fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url.trim()) {
        Ok(parsed) => describe_url(&parsed),
        Err(_) if url.contains('@') || url.contains('?') => "[unparsable URL]".to_string(),
        Err(_) => url.to_string(),
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

    /// The user agent this client sends.
    pub fn user_agent(&self) -> &str {
        &self.inner().shared.user_agent
    }

    /// Counters of this client and all its clones: requests, retries, quota waits, 429s.
    ///
    /// They also say which [`PacingMode`] is in force, the rate-limit budget the server
    /// last reported, and the burst allowed now.
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
        let idempotent = is_idempotent(&method);
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
                    // A connection that could not be opened carried nothing: safe for POST too.
                    let safe = idempotent || (e.is_connect() && !e.is_timeout());
                    if !safe || !can_retry || matches!(error, Error::DeadlineExceeded { .. }) {
                        return Err(error);
                    }
                    Retry {
                        hint: None,
                        fallback: error,
                    }
                }
                Ok(response) => {
                    let status = response.status();
                    ticket.observe(Signal {
                        budget: rate_limit_budget(response.headers()),
                        rate_limited: status == StatusCode::TOO_MANY_REQUESTS,
                        success: status.is_success(),
                    });
                    span.record("status", status.as_u16());
                    span.in_scope(|| tracing::debug!(target: "keycrm", "request finished"));
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                        // Not processed: safe to retry for every method, after the gate.
                        let wait = retry_after(response.headers(), clock.wall_time())
                            .or_else(|| rate_limit_reset(response.headers(), clock.wall_time()))
                            .unwrap_or_else(|| {
                                policy.backoff(
                                    attempt - 1,
                                    shared.sequence.fetch_add(1, Ordering::Relaxed),
                                )
                            });
                        let gate = wait.min(policy.max_retry_wait);
                        shared.limiter.close_gate(clock.now().saturating_add(gate));
                        if let Some(quota) = &shared.shared_quota
                            && let Err(e) = quota.close_gate(gate).await
                        {
                            // The local gate holds this client; the others will see
                            // their own 429s.
                            tracing::warn!(target: "keycrm", error = %e, "the shared quota's gate could not be closed");
                        }
                        if wait > policy.max_retry_wait || !can_retry {
                            return match self.answer(response, attempt, stamp, Some(wait)).await {
                                Ok(answer) => Ok(answer),
                                Err(AnswerFailure::Final(error)) => Err(error),
                                Err(AnswerFailure::Read(e)) => Err(attempt_error(&e)),
                            };
                        }
                        Retry {
                            hint: Some(Duration::ZERO),
                            fallback: Error::from_status(429, None, Some(wait), meta(attempt)),
                        }
                    } else if status.is_server_error() && idempotent && can_retry {
                        counters.server_errors.fetch_add(1, Ordering::Relaxed);
                        Retry {
                            hint: retry_after(response.headers(), clock.wall_time())
                                .map(|hint| policy.server_hint(hint)),
                            fallback: Error::from_status(
                                status.as_u16(),
                                None,
                                None,
                                meta(attempt),
                            ),
                        }
                    } else {
                        if status.is_server_error() {
                            counters.server_errors.fetch_add(1, Ordering::Relaxed);
                        }
                        match self.answer(response, attempt, stamp, None).await {
                            Ok(answer) => return Ok(answer),
                            Err(AnswerFailure::Final(error)) => return Err(error),
                            Err(AnswerFailure::Read(e)) => {
                                // The body broke off: a GET may fetch it again.
                                let error = attempt_error(&e);
                                if !idempotent
                                    || !can_retry
                                    || matches!(error, Error::DeadlineExceeded { .. })
                                {
                                    return Err(error);
                                }
                                Retry {
                                    hint: None,
                                    fallback: error,
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

    /// Reads a final answer's body within its limit and rebuilds the response around it,
    /// stamped for `Error::from`.
    async fn answer(
        &self,
        mut response: reqwest::Response,
        attempts: u32,
        stamp: Stamp<'_>,
        retry_after: Option<Duration>,
    ) -> std::result::Result<reqwest::Response, AnswerFailure> {
        let shared = &self.inner().shared;
        let status = response.status();
        let is_error = status.is_client_error() || status.is_server_error();
        let limit = if is_error {
            shared.limits.error
        } else {
            shared.limits.success
        };
        let meta = || {
            ErrorMeta::new(stamp.correlation.map(str::to_string), attempts)
                .with_operation(stamp.operation)
        };
        let body = match read_capped(&mut response, limit).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => {
                return Err(AnswerFailure::Final(Error::ResponseTooLarge {
                    status: status.as_u16(),
                    limit,
                    meta: meta(),
                }));
            }
            Err(BodyError::Read(e)) => return Err(AnswerFailure::Read(e)),
        };
        let mut rebuilt = http::Response::new(Bytes::new());
        *rebuilt.status_mut() = status;
        *rebuilt.version_mut() = response.version();
        *rebuilt.headers_mut() = std::mem::take(response.headers_mut());
        *rebuilt.body_mut() = if is_error {
            error_body(rebuilt.headers_mut(), body)
        } else {
            body
        };
        let headers = rebuilt.headers_mut();
        headers.remove(CONTENT_LENGTH);
        headers.insert(HeaderName::from_static(ATTEMPTS_HEADER), attempts.into());
        headers.insert(
            HeaderName::from_static(OPERATION_HEADER),
            HeaderValue::from_static(stamp.operation),
        );
        if let Some(value) = stamp
            .correlation
            .and_then(|c| HeaderValue::from_str(c).ok())
        {
            headers.insert(HeaderName::from_static(CORRELATION_HEADER), value);
        }
        if let Some(wait) = retry_after {
            let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            headers.insert(
                HeaderName::from_static(RETRY_AFTER_MS_HEADER),
                millis.into(),
            );
        }
        Ok(reqwest::Response::from(rebuilt))
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

/// What the runtime stamps on a final answer.
#[derive(Clone, Copy)]
struct Stamp<'a> {
    operation: &'static str,
    correlation: Option<&'a str>,
}

enum BodyError {
    TooLarge,
    Read(reqwest::Error),
}

/// Why a final answer could not be handed over.
enum AnswerFailure {
    /// For good (a body over its limit).
    Final(Error),
    /// The body broke off while it was read.
    Read(reqwest::Error),
}

/// Reads the body, refusing a declared `Content-Length` above `limit` before reading and
/// stopping as soon as the streamed bytes pass it: at most `limit` bytes are held.
async fn read_capped(
    response: &mut reqwest::Response,
    limit: u64,
) -> std::result::Result<Bytes, BodyError> {
    let declared = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge);
    }
    let reserve = declared.unwrap_or(0).min(limit).min(1 << 20);
    let mut body = BytesMut::with_capacity(usize::try_from(reserve).unwrap_or(0));
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
        let total = u64::try_from(body.len().saturating_add(chunk.len())).unwrap_or(u64::MAX);
        if total > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// An error answer's body as the generated code gets it: a body that is not a JSON object
/// (an HTML proxy page, an empty 404) becomes `{}` so that the status still maps to its
/// error, and the service's `message` is copied into a header for statuses the description
/// does not declare.
fn error_body(headers: &mut reqwest::header::HeaderMap, body: Bytes) -> Bytes {
    let parsed: Option<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_slice(&body).ok();
    let message = parsed
        .as_ref()
        .and_then(|m| m.get("message"))
        .and_then(|m| m.as_str())
        .map(|m| m.chars().take(512).collect::<String>());
    headers.insert(
        reqwest::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(value) =
        message.and_then(|m| HeaderValue::from_bytes(m.replace(['\r', '\n'], " ").as_bytes()).ok())
    {
        headers.insert(HeaderName::from_static(MESSAGE_HEADER), value);
    }
    if parsed.is_some() {
        body
    } else {
        Bytes::from_static(b"{}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_normalised_and_checked() {
        assert_eq!(
            normalize_base_url("https://openapi.keycrm.app/v1/", false).unwrap(),
            DEFAULT_BASE_URL
        );
        assert_eq!(
            normalize_base_url("http://127.0.0.1:8080//", false).unwrap(),
            "http://127.0.0.1:8080"
        );
        for bad in ["", "openapi.keycrm.app", "ftp://x/v1", "https://x/v1?a=1"] {
            assert!(
                matches!(normalize_base_url(bad, false), Err(Error::Config { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn credentials_in_the_base_url_are_refused_and_never_shown() {
        for url in [
            "https://admin:hunter2-secret@openapi.keycrm.app/v1",
            "https://hunter2-secret@openapi.keycrm.app/v1",
            "http://admin:hunter2-secret@127.0.0.1:8080",
        ] {
            let builder = Client::builder().api_key("k").base_url(url);
            assert!(!format!("{builder:?}").contains("hunter2"), "{builder:?}");
            let err = builder.build().unwrap_err();
            assert!(matches!(err, Error::Config { .. }), "{err:?}");
            let shown = format!("{err} {err:?}");
            assert!(shown.contains("credentials"), "{shown}");
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(!shown.contains("admin"), "{shown}");
        }
        // Not even an unparsable URL is echoed when it may hold credentials.
        let err = Client::builder()
            .api_key("k")
            .base_url("https://admin:hunter2 secret@[bad")
            .build()
            .unwrap_err();
        assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
    }

    #[test]
    fn plain_http_is_refused_unless_loopback_or_allowed() {
        for url in [
            "http://openapi.keycrm.app/v1",
            "http://10.0.0.5:8080",
            "http://128.0.0.1",
            "http://[2001:db8::1]:80",
            "http://localhost.example.com",
        ] {
            let err = normalize_base_url(url, false).unwrap_err();
            assert!(matches!(err, Error::Config { .. }), "{url}");
            assert!(err.to_string().contains("unencrypted"), "{err}");
            assert!(
                normalize_base_url(url, true).is_ok(),
                "{url} with the opt-in"
            );
        }
        for url in [
            "http://127.0.0.1:8080",
            "http://127.10.0.3",
            "http://[::1]:9000/v1",
            "http://localhost:3000",
            "http://LOCALHOST",
            "http://api.localhost",
            "https://openapi.keycrm.app/v1",
        ] {
            assert!(normalize_base_url(url, false).is_ok(), "{url}");
        }
        assert!(
            Client::builder()
                .api_key("k")
                .base_url("http://openapi.keycrm.app/v1")
                .build()
                .is_err()
        );
        assert!(
            Client::builder()
                .api_key("k")
                .base_url("http://openapi.keycrm.app/v1")
                .allow_insecure_http(true)
                .build()
                .is_ok()
        );
    }

    #[test]
    fn server_hints_on_5xx_are_capped_by_the_largest_backoff() {
        let policy = RetryPolicy {
            max_retries: 3,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_wait: Duration::from_secs(120),
        };
        assert_eq!(
            policy.server_hint(Duration::from_secs(3)),
            Duration::from_secs(3)
        );
        assert_eq!(policy.server_hint(Duration::MAX), Duration::from_secs(30));
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
            max_retry_wait: Duration::from_secs(120),
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
