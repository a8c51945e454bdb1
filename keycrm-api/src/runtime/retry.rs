//! Whether a failed attempt is sent again, and after how long: a small classifier
//! ([`RetryPolicy::classify`]) from what the attempt came to ([`Outcome`]) and the method,
//! apart from the runtime's loop, tested case by case.
//!
//! The rules: GET, PUT and DELETE (and HEAD, OPTIONS) retry 429, 5xx, timeouts, connection
//! failures and bodies that broke off. POST retries only what certainly was not processed:
//! a 429 (the quota refused it) and a connection that could not be opened (nothing was
//! sent). A 429 waits behind the gate it closed (its `Retry-After`), unless that is longer
//! than `max_retry_wait`, when it is final at once; a 5xx waits its `Retry-After` capped by
//! the largest backoff, or the backoff. Nothing is retried once the retries are spent or
//! the call's deadline ran out.

use std::time::Duration;

use reqwest::Method;

/// How failed requests are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    pub(super) max_retries: u32,
    pub(super) base_backoff: Duration,
    pub(super) max_backoff: Duration,
    pub(super) max_retry_wait: Duration,
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
    pub(super) fn server_hint(&self, hint: Duration) -> Duration {
        hint.min(self.max_backoff)
    }

    /// Exponential backoff with "equal jitter": half fixed, half random, capped.
    pub(super) fn backoff(&self, retry: u32, seed: u64) -> Duration {
        let exp = self.base_backoff.saturating_mul(1u32 << retry.min(16));
        let capped = exp.min(self.max_backoff);
        let half = capped / 2;
        let jitter = half.mul_f64((splitmix(seed) >> 11) as f64 / (1u64 << 53) as f64);
        half + jitter
    }
}

pub(super) fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// What one attempt came to, as far as retrying is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// An answer that is neither a 429 nor a 5xx (a success, a 4xx).
    Answered,
    /// 429, and how long the server asked to wait (`Retry-After`, `X-RateLimit-Reset`, or
    /// the backoff when it did not say).
    RateLimited {
        /// The wait asked for.
        wait: Duration,
    },
    /// 5xx, with its `Retry-After` if any.
    ServerError {
        /// The server's hint.
        retry_after: Option<Duration>,
    },
    /// No answer: the transport failed.
    Transport {
        /// The connection could not be opened (refused, DNS, TLS): nothing was sent.
        connect: bool,
        /// The attempt (or its connection) timed out.
        timeout: bool,
    },
    /// A final answer's body broke off while it was read.
    BodyBroke,
    /// The call's deadline ran out during the attempt.
    DeadlineExceeded,
}

/// What to do after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Hand the answer (or the error) over as it is.
    Final,
    /// Send again after `wait` (`None`: the policy's backoff; zero: at once, the gate
    /// already holds it).
    Retry {
        /// How long to wait first.
        wait: Option<Duration>,
    },
}

impl RetryPolicy {
    /// Whether an attempt of `method` that came to `outcome` is sent again;
    /// `retries_left` is false once the retries are spent (or the request cannot be
    /// cloned).
    pub(crate) fn classify(
        &self,
        method: &Method,
        retries_left: bool,
        outcome: Outcome,
    ) -> Verdict {
        let idempotent = is_idempotent(method);
        let retry = |wait| {
            if retries_left {
                Verdict::Retry { wait }
            } else {
                Verdict::Final
            }
        };
        match outcome {
            Outcome::Answered | Outcome::DeadlineExceeded => Verdict::Final,
            // Not processed: safe for every method, behind the gate it closed.
            Outcome::RateLimited { wait } if wait <= self.max_retry_wait => {
                retry(Some(Duration::ZERO))
            }
            Outcome::RateLimited { .. } => Verdict::Final,
            Outcome::ServerError { retry_after } if idempotent => {
                retry(retry_after.map(|hint| self.server_hint(hint)))
            }
            // A connection that could not be opened carried nothing: safe for POST too.
            Outcome::Transport { connect, timeout } if idempotent || (connect && !timeout) => {
                retry(None)
            }
            // The body broke off: an idempotent request may fetch it again.
            Outcome::BodyBroke if idempotent => retry(None),
            Outcome::ServerError { .. } | Outcome::Transport { .. } | Outcome::BodyBroke => {
                Verdict::Final
            }
        }
    }

    /// How long a 429 asking for `wait` closes the gate: at most `max_retry_wait`.
    pub(crate) fn gate_for(&self, wait: Duration) -> Duration {
        wait.min(self.max_retry_wait)
    }
}

pub(super) fn seed_from_clock() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    splitmix(nanos ^ u64::from(std::process::id()))
}

pub(super) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::PUT | Method::DELETE | Method::HEAD | Method::OPTIONS
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_wait: Duration::from_secs(120),
        }
    }

    const IDEMPOTENT: [Method; 3] = [Method::GET, Method::PUT, Method::DELETE];
    const EVERY: [Method; 4] = [Method::GET, Method::PUT, Method::DELETE, Method::POST];

    fn verdict(method: &Method, outcome: Outcome) -> Verdict {
        policy().classify(method, true, outcome)
    }

    const BACKOFF: Verdict = Verdict::Retry { wait: None };
    const AT_ONCE: Verdict = Verdict::Retry {
        wait: Some(Duration::ZERO),
    };

    #[test]
    fn a_429_is_retried_for_every_method_behind_its_gate() {
        for method in &EVERY {
            let wait = 5 * SECOND;
            assert_eq!(
                verdict(method, Outcome::RateLimited { wait }),
                AT_ONCE,
                "{method}"
            );
            assert_eq!(policy().gate_for(wait), wait);
        }
    }

    #[test]
    fn a_429_asking_for_more_than_max_retry_wait_is_final_and_its_gate_capped() {
        let wait = 121 * SECOND;
        for method in &EVERY {
            assert_eq!(
                verdict(method, Outcome::RateLimited { wait }),
                Verdict::Final
            );
        }
        assert_eq!(policy().gate_for(wait), 120 * SECOND);
        assert_eq!(
            verdict(&Method::GET, Outcome::RateLimited { wait: 120 * SECOND }),
            AT_ONCE,
            "exactly max_retry_wait is still waited out"
        );
    }

    #[test]
    fn a_5xx_without_retry_after_is_retried_after_the_backoff_for_idempotent_methods() {
        for method in &IDEMPOTENT {
            let outcome = Outcome::ServerError { retry_after: None };
            assert_eq!(verdict(method, outcome), BACKOFF, "{method}");
        }
    }

    #[test]
    fn a_5xx_with_retry_after_waits_it_capped_by_the_largest_backoff() {
        for method in &IDEMPOTENT {
            let hinted = Outcome::ServerError {
                retry_after: Some(3 * SECOND),
            };
            assert_eq!(
                verdict(method, hinted),
                Verdict::Retry {
                    wait: Some(3 * SECOND)
                }
            );
            let huge = Outcome::ServerError {
                retry_after: Some(Duration::MAX),
            };
            assert_eq!(
                verdict(method, huge),
                Verdict::Retry {
                    wait: Some(30 * SECOND)
                }
            );
        }
    }

    #[test]
    fn a_5xx_to_a_post_is_final_it_may_have_been_processed() {
        for retry_after in [None, Some(SECOND)] {
            let outcome = Outcome::ServerError { retry_after };
            assert_eq!(verdict(&Method::POST, outcome), Verdict::Final);
        }
    }

    #[test]
    fn a_timeout_is_retried_for_idempotent_methods_only() {
        let timeout = Outcome::Transport {
            connect: false,
            timeout: true,
        };
        for method in &IDEMPOTENT {
            assert_eq!(verdict(method, timeout), BACKOFF, "{method}");
        }
        assert_eq!(verdict(&Method::POST, timeout), Verdict::Final);
    }

    #[test]
    fn a_connection_refused_before_sending_is_retried_for_every_method() {
        let refused = Outcome::Transport {
            connect: true,
            timeout: false,
        };
        for method in &EVERY {
            assert_eq!(verdict(method, refused), BACKOFF, "{method}");
        }
    }

    #[test]
    fn a_connect_timeout_is_not_retried_for_a_post() {
        let connect_timeout = Outcome::Transport {
            connect: true,
            timeout: true,
        };
        assert_eq!(verdict(&Method::POST, connect_timeout), Verdict::Final);
        assert_eq!(verdict(&Method::GET, connect_timeout), BACKOFF);
    }

    #[test]
    fn a_connection_reset_after_sending_is_retried_for_idempotent_methods_only() {
        let reset = Outcome::Transport {
            connect: false,
            timeout: false,
        };
        for method in &IDEMPOTENT {
            assert_eq!(verdict(method, reset), BACKOFF, "{method}");
        }
        assert_eq!(verdict(&Method::POST, reset), Verdict::Final);
    }

    #[test]
    fn a_4xx_or_a_success_is_final() {
        for method in &EVERY {
            assert_eq!(
                verdict(method, Outcome::Answered),
                Verdict::Final,
                "{method}"
            );
        }
    }

    #[test]
    fn a_body_that_broke_off_is_fetched_again_by_idempotent_methods_only() {
        for method in &IDEMPOTENT {
            assert_eq!(verdict(method, Outcome::BodyBroke), BACKOFF, "{method}");
        }
        assert_eq!(verdict(&Method::POST, Outcome::BodyBroke), Verdict::Final);
    }

    #[test]
    fn nothing_is_retried_once_the_deadline_ran_out() {
        for method in &EVERY {
            assert_eq!(verdict(method, Outcome::DeadlineExceeded), Verdict::Final);
        }
    }

    #[test]
    fn nothing_is_retried_once_the_retries_are_spent() {
        let outcomes = [
            Outcome::RateLimited { wait: SECOND },
            Outcome::ServerError { retry_after: None },
            Outcome::Transport {
                connect: true,
                timeout: false,
            },
            Outcome::BodyBroke,
        ];
        for method in &EVERY {
            for outcome in outcomes {
                assert_eq!(
                    policy().classify(method, false, outcome),
                    Verdict::Final,
                    "{method} {outcome:?}"
                );
            }
        }
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
}
