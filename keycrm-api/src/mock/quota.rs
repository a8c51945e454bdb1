//! The per-key request quota, counted in one of the ways KeyCRM might count it.
//!
//! KeyCRM runs on Laravel, whose throttle middleware counts hits in a fixed window that
//! opens with the first request and allows `limit` requests until it closes; beyond that it
//! answers 429 with `Retry-After` (seconds until the window closes). That is the default
//! model ([`Window::Fixed`]), because it is what Laravel does out of the box and what the
//! simulator always did. [`Window::Rolling`] and [`Window::TokenBucket`] model the other
//! two common schemes, so that clients can be checked against each. Every model can send
//! Laravel's `X-RateLimit-Limit` / `X-RateLimit-Remaining` headers (and `X-RateLimit-Reset`
//! on a 429), or leave them out ([`Quota::headers`]): whether KeyCRM sends them is likely,
//! not proven.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How requests are counted against a [`Quota`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Window {
    /// Laravel's throttle (the default): a window of `window` opens with the first request
    /// and allows `limit` requests; the next request after it closes opens a new one.
    #[default]
    Fixed,
    /// At most `limit` requests within any span of `window` (a sliding log).
    Rolling,
    /// A bucket of `limit` tokens, full at the start, refilled evenly at `limit` per
    /// `window`; each request takes one.
    TokenBucket,
}

/// How many requests the simulator accepts per time window (default: 60 per minute in a
/// fixed window with the Laravel headers, the limit KeyCRM documents per API key).
///
/// ```
/// use std::time::Duration;
/// use keycrm_api::mock::{Quota, Window};
///
/// assert_eq!(Quota::default(), Quota::per_minute(60));
/// assert_eq!(Quota::default().model(), Window::Fixed);
/// let fast = Quota::new(600, Duration::from_secs(1)); // for tests that must not wait
/// assert_eq!(fast.limit(), 600);
/// let silent = Quota::per_minute(60).with_model(Window::Rolling).headers(false);
/// assert!(!silent.sends_headers());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    limit: u32,
    window: Duration,
    model: Window,
    headers: bool,
}

impl Quota {
    /// `limit` requests per minute.
    pub const fn per_minute(limit: u32) -> Self {
        Self::new(limit, Duration::from_secs(60))
    }

    /// `limit` requests per `window`.
    pub const fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            model: Window::Fixed,
            headers: true,
        }
    }

    /// No limit at all.
    pub const fn unlimited() -> Self {
        Self::per_minute(u32::MAX)
    }

    /// The same quota counted with another model.
    pub const fn with_model(mut self, model: Window) -> Self {
        self.model = model;
        self
    }

    /// Whether answers carry `X-RateLimit-Limit` and `X-RateLimit-Remaining` (and a 429
    /// `X-RateLimit-Reset`); default on. `Retry-After` on a 429 is always sent.
    pub const fn headers(mut self, send: bool) -> Self {
        self.headers = send;
        self
    }

    /// Requests allowed per window.
    pub const fn limit(&self) -> u32 {
        self.limit
    }

    /// The window length.
    pub const fn window(&self) -> Duration {
        self.window
    }

    /// How requests are counted.
    pub const fn model(&self) -> Window {
        self.model
    }

    /// Whether the rate-limit headers are sent.
    pub const fn sends_headers(&self) -> bool {
        self.headers
    }
}

impl Default for Quota {
    fn default() -> Self {
        Self::per_minute(60)
    }
}

/// The verdict of [`QuotaCounter::hit`] on one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuotaAnswer {
    /// Whether the request may pass.
    pub allowed: bool,
    /// Requests left (what `X-RateLimit-Remaining` says); 0 on a refusal.
    pub remaining: u32,
    /// On a refusal, whole seconds until a request may pass again (`Retry-After`, ≥ 1).
    pub retry_after: Option<u64>,
    limit: u32,
    headers: bool,
}

impl QuotaAnswer {
    /// The headers the answer carries: `X-RateLimit-Limit` and `X-RateLimit-Remaining`
    /// when the quota sends them, `Retry-After` on a refusal, and then also
    /// `X-RateLimit-Reset` (Unix seconds, from `wall_now`) when headers are on.
    pub fn headers(&self, wall_now: SystemTime) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.headers {
            out.push(("x-ratelimit-limit", self.limit.to_string()));
            out.push(("x-ratelimit-remaining", self.remaining.to_string()));
        }
        if let Some(secs) = self.retry_after {
            out.push(("retry-after", secs.to_string()));
            if self.headers {
                let reset = wall_now
                    .checked_add(Duration::from_secs(secs))
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs());
                out.push(("x-ratelimit-reset", reset.to_string()));
            }
        }
        out
    }
}

/// The counter behind a [`Quota`], on a time the caller gives (any clock's "time since
/// start"), so that a test or bench can drive it with a paused or virtual clock.
///
/// ```
/// use std::time::Duration;
/// use keycrm_api::mock::{Quota, QuotaCounter, Window};
///
/// let mut bucket = QuotaCounter::new(Quota::per_minute(2).with_model(Window::TokenBucket));
/// assert!(bucket.hit(Duration::ZERO).allowed);
/// assert!(bucket.hit(Duration::ZERO).allowed);
/// assert_eq!(bucket.hit(Duration::ZERO).retry_after, Some(30));
/// assert!(bucket.hit(Duration::from_secs(30)).allowed, "one token back after 30 s");
/// ```
#[derive(Clone, Debug)]
pub struct QuotaCounter {
    quota: Quota,
    /// Fixed: when the current window opened, and the hits in it.
    opened: Option<Duration>,
    hits: u32,
    /// Rolling: the times of the hits still inside the window.
    log: VecDeque<Duration>,
    /// Token bucket: tokens left as of `refilled_at`.
    tokens: f64,
    refilled_at: Duration,
    rejected: u64,
}

/// Whole seconds in `d`, rounded up, at least 1.
fn ceil_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

impl QuotaCounter {
    /// A counter with a fresh window (a full bucket).
    pub fn new(quota: Quota) -> Self {
        Self {
            quota,
            opened: None,
            hits: 0,
            log: VecDeque::new(),
            tokens: f64::from(quota.limit),
            refilled_at: Duration::ZERO,
            rejected: 0,
        }
    }

    /// The quota counted.
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// How many requests were refused so far.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Counts a request arriving at `now` (times must not go backwards).
    pub fn hit(&mut self, now: Duration) -> QuotaAnswer {
        let limit = self.quota.limit;
        let window = self.quota.window;
        let verdict = match self.quota.model {
            Window::Fixed => {
                let expired = self
                    .opened
                    .is_none_or(|opened| now.saturating_sub(opened) >= window);
                if expired {
                    self.opened = Some(now);
                    self.hits = 0;
                }
                if self.hits >= limit {
                    let opened = self.opened.unwrap_or(now);
                    Err(window.saturating_sub(now.saturating_sub(opened)))
                } else {
                    self.hits += 1;
                    Ok(limit - self.hits)
                }
            }
            Window::Rolling => {
                while self
                    .log
                    .front()
                    .is_some_and(|t| now.saturating_sub(*t) >= window)
                {
                    self.log.pop_front();
                }
                let used = u32::try_from(self.log.len()).unwrap_or(u32::MAX);
                if used >= limit {
                    let oldest = self.log.front().copied().unwrap_or(now);
                    Err((oldest + window).saturating_sub(now))
                } else {
                    self.log.push_back(now);
                    Ok(limit - used - 1)
                }
            }
            Window::TokenBucket => {
                let rate = f64::from(limit) / window.as_secs_f64().max(1e-9);
                let elapsed = now.saturating_sub(self.refilled_at).as_secs_f64();
                self.tokens = (self.tokens + elapsed * rate).min(f64::from(limit));
                self.refilled_at = now;
                if self.tokens >= 1.0 {
                    self.tokens -= 1.0;
                    Ok(self.tokens.floor() as u32)
                } else {
                    Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
                }
            }
        };
        match verdict {
            Ok(remaining) => QuotaAnswer {
                allowed: true,
                remaining,
                retry_after: None,
                limit,
                headers: self.quota.headers,
            },
            Err(left) => {
                self.rejected += 1;
                QuotaAnswer {
                    allowed: false,
                    remaining: 0,
                    retry_after: Some(ceil_secs(left)),
                    limit,
                    headers: self.quota.headers,
                }
            }
        }
    }
}

/// The simulator's counter: a [`QuotaCounter`] on the real clock.
#[derive(Debug)]
pub(crate) struct Throttle {
    counter: QuotaCounter,
    origin: Instant,
    /// How many requests were refused with 429.
    pub rejected: u64,
}

impl Throttle {
    pub fn new(quota: Quota) -> Self {
        Self {
            counter: QuotaCounter::new(quota),
            origin: Instant::now(),
            rejected: 0,
        }
    }

    /// Counts a request at `now`.
    pub fn hit(&mut self, now: Instant) -> QuotaAnswer {
        let answer = self.counter.hit(now.saturating_duration_since(self.origin));
        if !answer.allowed {
            self.rejected += 1;
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_fixed_window_refuses_the_request_after_the_limit() {
        let mut t = Throttle::new(Quota::new(2, Duration::from_secs(60)));
        let start = Instant::now();
        assert_eq!(t.hit(start).remaining, 1);
        assert_eq!(t.hit(start).remaining, 0);
        assert_eq!(
            t.hit(start + Duration::from_millis(500)).retry_after,
            Some(60)
        );
        assert_eq!(t.hit(start + secs(59)).retry_after, Some(1));
        assert_eq!(t.rejected, 2);
        let fresh = t.hit(start + secs(60));
        assert!(fresh.allowed, "a new window");
        assert_eq!(fresh.remaining, 1);
    }

    #[test]
    fn a_rolling_window_frees_each_hit_a_window_after_it() {
        let mut c = QuotaCounter::new(Quota::per_minute(2).with_model(Window::Rolling));
        assert!(c.hit(secs(0)).allowed);
        assert!(c.hit(secs(30)).allowed);
        let refused = c.hit(secs(50));
        assert_eq!((refused.allowed, refused.retry_after), (false, Some(10)));
        let next = c.hit(secs(60));
        assert_eq!(
            (next.allowed, next.remaining),
            (true, 0),
            "the first hit expired"
        );
        assert_eq!(c.hit(secs(80)).retry_after, Some(10), "the 30 s hit holds");
        assert_eq!(c.rejected(), 2);
    }

    #[test]
    fn a_token_bucket_refills_evenly() {
        let mut c = QuotaCounter::new(Quota::per_minute(60).with_model(Window::TokenBucket));
        for i in 0..60 {
            assert_eq!(c.hit(Duration::ZERO).remaining, 59 - i);
        }
        assert_eq!(c.hit(Duration::from_millis(500)).retry_after, Some(1));
        assert!(c.hit(secs(1)).allowed);
        assert!(!c.hit(secs(1)).allowed);
        let later = c.hit(secs(11));
        assert_eq!((later.allowed, later.remaining), (true, 9));
    }

    #[test]
    fn headers_follow_the_quota() {
        let wall = UNIX_EPOCH + secs(1_000);
        let mut loud = QuotaCounter::new(Quota::per_minute(1));
        assert_eq!(
            loud.hit(secs(0)).headers(wall),
            vec![
                ("x-ratelimit-limit", "1".to_string()),
                ("x-ratelimit-remaining", "0".to_string())
            ]
        );
        assert_eq!(
            loud.hit(secs(15)).headers(wall),
            vec![
                ("x-ratelimit-limit", "1".to_string()),
                ("x-ratelimit-remaining", "0".to_string()),
                ("retry-after", "45".to_string()),
                ("x-ratelimit-reset", "1045".to_string()),
            ]
        );
        let mut quiet = QuotaCounter::new(Quota::per_minute(1).headers(false));
        assert!(quiet.hit(secs(0)).headers(wall).is_empty());
        assert_eq!(
            quiet.hit(secs(15)).headers(wall),
            vec![("retry-after", "45".to_string())]
        );
    }
}
