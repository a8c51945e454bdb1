//! [`ClientBuilder`]: the client's configuration, checked when it is built, and the checks
//! of the base URL (TLS unless loopback, no credentials, nothing shown that may be secret).

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use reqwest::header::HeaderValue;

use super::retry::{RetryPolicy, seed_from_clock};
use super::{
    ApiKey, BodyLimits, DEFAULT_BASE_URL, DEFAULT_MAX_ERROR_BODY_BYTES, DEFAULT_MAX_RESPONSE_BYTES,
    Runtime, Shared,
};
use crate::Client;
use crate::clock::{Clock, TokioClock};
use crate::error::{Error, Result};
use crate::limiter::{Counters, Limiter, PacingMode};
use crate::quota::SharedQuota;

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
    /// accounts have 20). In [`PacingMode::Even`] requests are spaced evenly, one every
    /// `60 s / n`, across all clones and tasks of the client; in [`PacingMode::Adaptive`]
    /// the server's budget decides when its answers report one, and otherwise a learnt
    /// burst of up to `n` goes at once, never more than `n` within a minute but for one
    /// probe at a time that learns how the server counts (see [`PacingMode::Adaptive`]).
    /// `0` turns pacing off altogether, headers or not (a 429
    /// still pauses every task).
    pub fn requests_per_minute(mut self, n: u32) -> Self {
        self.requests_per_minute = n;
        self
    }

    /// How many requests may go out at once before even spacing applies (default 1: none).
    /// In [`PacingMode::Adaptive`] without rate-limit headers this is the floor of the
    /// burst the client learns: it starts at `requests_per_minute`, 429s halve it down to
    /// this, and each minute without one gives one back (see [`PacingMode::Adaptive`]).
    pub fn burst(mut self, n: u32) -> Self {
        self.burst = n.max(1);
        self
    }

    /// How requests are paced (default [`PacingMode::Adaptive`]): from the server's
    /// `X-RateLimit-Limit` / `X-RateLimit-Remaining` when its answers carry them, with a
    /// burst learnt from 429s otherwise; [`PacingMode::Even`] always paces evenly at the
    /// configured burst. See [`PacingMode`].
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
    /// Its [`wall_time`](Clock::wall_time) is also the client's
    /// [`wall_time`](Client::wall_time) (the system's time without a clock given here).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// A quota shared with other clients that use the same API key, in this process or in
    /// others (see [`SharedQuota`]; [`InProcessQuota`](crate::quota::InProcessQuota) for
    /// clients of one process). Default: none.
    ///
    /// It comes **on top of** the client's own limiter, which keeps working as without
    /// it (its pacing mode, its burst, its 429 gate for every clone), except that without
    /// rate-limit headers it keeps the configured burst instead of probing for a larger
    /// one, as other clients spend the same key: each attempt first
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
        let clock_given = self.clock.is_some();
        let mut limiter = Limiter::new(
            self.requests_per_minute,
            self.burst,
            self.pacing,
            self.clock.unwrap_or_else(|| Arc::new(TokioClock::new())),
        );
        if self.shared_quota.is_some() {
            limiter = limiter.without_probing();
        }
        let runtime = Runtime {
            deadline: self.deadline,
            shared: Arc::new(Shared {
                auth: key.header()?,
                user_agent,
                limiter,
                clock_given,
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

/// Checks that `url` is an absolute http(s) URL without credentials, query or fragment,
/// that it uses TLS unless the host is loopback or `allow_insecure` is set, and removes
/// trailing slashes. Error messages show the URL without credentials, query or fragment.
pub(super) fn normalize_base_url(url: &str, allow_insecure: bool) -> Result<String> {
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
pub(super) fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url.trim()) {
        Ok(parsed) => describe_url(&parsed),
        Err(_) if url.contains('@') || url.contains('?') => "[unparsable URL]".to_string(),
        Err(_) => url.to_string(),
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
}
