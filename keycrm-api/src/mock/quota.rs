//! The per-key request quota, counted the way Laravel's throttle middleware counts it: a
//! fixed window that opens with the first request and allows `limit` requests until it
//! closes; beyond that, 429 with `Retry-After` (seconds until the window closes).

use std::time::{Duration, Instant};

/// How many requests the simulator accepts per time window (default: 60 per minute, the
/// limit KeyCRM documents per API key).
///
/// ```
/// use std::time::Duration;
/// use keycrm_api::mock::Quota;
///
/// assert_eq!(Quota::default(), Quota::per_minute(60));
/// let fast = Quota::new(600, Duration::from_secs(1)); // for tests that must not wait
/// assert_eq!(fast.limit(), 600);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    limit: u32,
    window: Duration,
}

impl Quota {
    /// `limit` requests per minute.
    pub const fn per_minute(limit: u32) -> Self {
        Self {
            limit,
            window: Duration::from_secs(60),
        }
    }

    /// `limit` requests per `window`.
    pub const fn new(limit: u32, window: Duration) -> Self {
        Self { limit, window }
    }

    /// No limit at all.
    pub const fn unlimited() -> Self {
        Self::per_minute(u32::MAX)
    }

    /// Requests allowed per window.
    pub const fn limit(&self) -> u32 {
        self.limit
    }

    /// The window length.
    pub const fn window(&self) -> Duration {
        self.window
    }
}

impl Default for Quota {
    fn default() -> Self {
        Self::per_minute(60)
    }
}

/// The counter behind a [`Quota`].
#[derive(Debug)]
pub(crate) struct Throttle {
    pub quota: Quota,
    opened: Option<Instant>,
    hits: u32,
    /// How many requests were refused with 429.
    pub rejected: u64,
}

impl Throttle {
    pub fn new(quota: Quota) -> Self {
        Self {
            quota,
            opened: None,
            hits: 0,
            rejected: 0,
        }
    }

    /// Counts a request: `Ok(remaining)` when it may pass, `Err(retry_after_seconds)`
    /// when the quota is used up.
    pub fn hit(&mut self, now: Instant) -> Result<u32, u64> {
        let expired = self
            .opened
            .is_none_or(|opened| now.duration_since(opened) >= self.quota.window);
        if expired {
            self.opened = Some(now);
            self.hits = 0;
        }
        if self.hits >= self.quota.limit {
            self.rejected += 1;
            let opened = self.opened.unwrap_or(now);
            let left = self.quota.window.saturating_sub(now.duration_since(opened));
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            return Err(secs.max(1));
        }
        self.hits += 1;
        Ok(self.quota.limit - self.hits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_window_refuses_the_request_after_the_limit() {
        let mut t = Throttle::new(Quota::new(2, Duration::from_secs(60)));
        let start = Instant::now();
        assert_eq!(t.hit(start), Ok(1));
        assert_eq!(t.hit(start), Ok(0));
        assert_eq!(t.hit(start + Duration::from_millis(500)), Err(60));
        assert_eq!(t.hit(start + Duration::from_secs(59)), Err(1));
        assert_eq!(t.rejected, 2);
        assert_eq!(
            t.hit(start + Duration::from_secs(60)),
            Ok(1),
            "a new window"
        );
    }
}
