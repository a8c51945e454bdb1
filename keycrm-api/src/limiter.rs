//! Quota pacing shared by every clone of a client: a GCRA limiter plus a gate that a 429 closes.
//!
//! Time comes from the client's [`Clock`], so tests drive it with a paused or virtual clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::Clock;

/// Counters of the client's traffic and quota use, shared by all clones.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) waits: AtomicU64,
    pub(crate) waited_micros: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) server_errors: AtomicU64,
    pub(crate) transport_errors: AtomicU64,
}

/// A snapshot of a client's counters (see [`crate::Client::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Requests sent, retries included.
    pub requests: u64,
    /// Requests that were sent again after a retryable failure.
    pub retries: u64,
    /// Times a request had to wait for the quota (pacing or a closed gate).
    pub waits: u64,
    /// Total time spent waiting for the quota.
    pub waited: Duration,
    /// 429 answers received.
    pub rate_limited: u64,
    /// 5xx answers received.
    pub server_errors: u64,
    /// Timeouts and connection failures.
    pub transport_errors: u64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> ClientStats {
        ClientStats {
            requests: self.requests.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            waits: self.waits.load(Ordering::Relaxed),
            waited: Duration::from_micros(self.waited_micros.load(Ordering::Relaxed)),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            server_errors: self.server_errors.load(Ordering::Relaxed),
            transport_errors: self.transport_errors.load(Ordering::Relaxed),
        }
    }
}

/// Generic cell rate algorithm with reservations: each caller takes the next free slot and
/// sleeps until it, so concurrent tasks are served in order and evenly spaced.
#[derive(Debug)]
pub(crate) struct Limiter {
    clock: Arc<dyn Clock>,
    /// Time between two requests at the sustained rate; `None` when pacing is off.
    interval: Option<Duration>,
    /// How far ahead of the sustained schedule a request may go (`interval * (burst - 1)`).
    tolerance: Duration,
    state: Mutex<State>,
}

/// Pacing is this much slower than the nominal rate (see [`Limiter::new`]).
const PACING_MARGIN: f64 = 1.01;

#[derive(Debug)]
struct State {
    /// Theoretical arrival time of the next request (clock time).
    tat: Option<Duration>,
    /// Closed by a 429 until this clock time.
    gate_until: Option<Duration>,
}

impl Limiter {
    /// A limiter for `per_minute` requests with a burst of `burst` (at least 1);
    /// `per_minute == 0` turns pacing off (the 429 gate still works).
    ///
    /// Requests are spaced 1 % wider than `60 s / per_minute`: a server counting the same
    /// rate over a window of W sees W/100 of slack, enough to absorb network jitter.
    pub(crate) fn new(per_minute: u32, burst: u32, clock: Arc<dyn Clock>) -> Self {
        let interval =
            (per_minute > 0).then(|| (Duration::from_secs(60) / per_minute).mul_f64(PACING_MARGIN));
        let tolerance = interval.map_or(Duration::ZERO, |i| i * burst.max(1).saturating_sub(1));
        Self {
            clock,
            interval,
            tolerance,
            state: Mutex::new(State {
                tat: None,
                gate_until: None,
            }),
        }
    }

    /// The clock the limiter runs on.
    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Waits for this request's slot. Returns how long it waited.
    pub(crate) async fn acquire(&self) -> Duration {
        let (now, slot) = {
            let mut state = self.state.lock().expect("limiter lock poisoned");
            let now = self.clock.now();
            let mut earliest = now;
            if let Some(gate) = state.gate_until {
                if gate > earliest {
                    earliest = gate;
                } else {
                    state.gate_until = None;
                }
            }
            let slot = match self.interval {
                None => earliest,
                Some(interval) => {
                    let tat = state.tat.map_or(earliest, |t| t.max(earliest));
                    // Allowed when tat - tolerance <= slot.
                    let slot = tat
                        .checked_sub(self.tolerance)
                        .map_or(earliest, |t| t.max(earliest));
                    state.tat = Some(tat.max(slot) + interval);
                    slot
                }
            };
            (now, slot)
        };
        let wait = slot.saturating_sub(now);
        if !wait.is_zero() {
            self.clock.sleep(wait).await;
        }
        wait
    }

    /// Closes the gate for every task until `until` (a 429 was answered).
    pub(crate) fn close_gate(&self, until: Duration) {
        let mut state = self.state.lock().expect("limiter lock poisoned");
        state.gate_until = Some(state.gate_until.map_or(until, |g| g.max(until)));
        // Requests scheduled before the gate restart their even spacing after it.
        if let (Some(tat), Some(_)) = (state.tat, self.interval)
            && tat < until
        {
            state.tat = Some(until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::TokioClock;
    use tokio::time::Instant;

    fn limiter(per_minute: u32, burst: u32) -> Limiter {
        Limiter::new(per_minute, burst, Arc::new(TokioClock::new()))
    }

    #[tokio::test(start_paused = true)]
    async fn requests_are_spaced_evenly_without_an_initial_burst() {
        let limiter = limiter(60, 1);
        let start = Instant::now();
        let mut at = Vec::new();
        for _ in 0..5 {
            limiter.acquire().await;
            at.push(start.elapsed().as_millis());
        }
        assert_eq!(at, vec![0, 1010, 2020, 3030, 4040]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_allows_that_many_at_once_then_paces() {
        let limiter = limiter(60, 3);
        let start = Instant::now();
        let mut at = Vec::new();
        for _ in 0..5 {
            limiter.acquire().await;
            at.push(start.elapsed().as_millis());
        }
        assert_eq!(at, vec![0, 0, 0, 1010, 2020]);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_tasks_share_one_schedule() {
        let limiter = Arc::new(limiter(120, 1));
        let start = Instant::now();
        let mut handles = Vec::new();
        for _ in 0..8 {
            let l = limiter.clone();
            handles.push(tokio::spawn(async move {
                l.acquire().await;
                start.elapsed().as_millis()
            }));
        }
        let mut at = Vec::new();
        for h in handles {
            at.push(h.await.unwrap());
        }
        at.sort_unstable();
        assert_eq!(at, vec![0, 505, 1010, 1515, 2020, 2525, 3030, 3535]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_gate_holds_every_task() {
        let limiter = limiter(0, 1);
        let start = Instant::now();
        limiter.close_gate(limiter.clock().now() + Duration::from_secs(2));
        limiter.acquire().await;
        assert_eq!(start.elapsed().as_millis(), 2000);
        limiter.acquire().await;
        assert_eq!(start.elapsed().as_millis(), 2000, "the gate opens for good");
    }

    #[tokio::test(start_paused = true)]
    async fn pacing_resumes_after_the_gate() {
        let limiter = limiter(60, 1);
        let start = Instant::now();
        limiter.acquire().await;
        limiter.close_gate(limiter.clock().now() + Duration::from_secs(5));
        limiter.acquire().await;
        assert_eq!(start.elapsed().as_millis(), 5000);
        limiter.acquire().await;
        assert_eq!(start.elapsed().as_millis(), 6010);
    }
}
