//! Quota pacing shared by every clone of a client: a GCRA limiter plus a gate that a 429 closes.
//!
//! Time comes from the client's [`Clock`], so tests drive it with a paused or virtual clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

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
///
/// A 429 closes a gate that holds every task: the ones that arrive later and the ones
/// already asleep for a slot, which wake up, give up their reservation and book a new slot
/// after the gate (see [`Limiter::close_gate`]).
///
/// Every clock sum saturates, and the state behind the lock is plain data updated without
/// panicking, so a poisoned lock (a panic elsewhere while it was held) is used as is.
#[derive(Debug)]
pub(crate) struct Limiter {
    clock: Arc<dyn Clock>,
    /// Time between two requests at the sustained rate; `None` when pacing is off.
    interval: Option<Duration>,
    /// How far ahead of the sustained schedule a request may go (`interval * (burst - 1)`).
    tolerance: Duration,
    state: Mutex<State>,
    /// Wakes the tasks waiting for a slot when the gate closes.
    gate_closed: Notify,
}

/// Pacing is this much slower than the nominal rate (see [`Limiter::new`]).
const PACING_MARGIN: f64 = 1.01;

#[derive(Debug)]
struct State {
    /// Theoretical arrival time of the next request (clock time).
    tat: Option<Duration>,
    /// Closed by a 429 until this clock time.
    gate_until: Option<Duration>,
    /// Counts gate closings; a reservation made under an older epoch is void.
    epoch: u64,
}

/// Why [`Limiter::acquire`] gave up instead of waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The slot lies beyond the caller's deadline; the phase says what it would have waited for.
    Deadline(WaitPhase),
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
        let tolerance = interval.map_or(Duration::ZERO, |i| {
            i.saturating_mul(burst.max(1).saturating_sub(1))
        });
        Self {
            clock,
            interval,
            tolerance,
            state: Mutex::new(State {
                tat: None,
                gate_until: None,
                epoch: 0,
            }),
            gate_closed: Notify::new(),
        }
    }

    /// The clock the limiter runs on.
    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for this request's slot and returns how long it waited; refuses at once when
    /// the slot lies beyond `deadline` (clock time), without booking it.
    pub(crate) async fn acquire(&self, deadline: Option<Duration>) -> Result<Duration, Refusal> {
        let started = self.clock.now();
        loop {
            // Registered before the state is read, so a gate closed after this point wakes us.
            let gate_closed = self.gate_closed.notified();
            let (now, slot, epoch) = {
                let mut state = self.state();
                let now = self.clock.now();
                let (slot, phase) = self.next_slot(&mut state, now);
                if deadline.is_some_and(|d| slot > d) {
                    return Err(Refusal::Deadline(phase));
                }
                if let Some(interval) = self.interval {
                    let tat = state.tat.map_or(slot, |t| t.max(slot));
                    state.tat = Some(tat.saturating_add(interval));
                }
                (now, slot, state.epoch)
            };
            if slot > now {
                let sleep = self.clock.sleep(slot - now);
                let gate_closed = std::pin::pin!(gate_closed);
                futures_util::future::select(sleep, gate_closed).await;
            }
            if self.state().epoch == epoch {
                return Ok(self.clock.now().saturating_sub(started));
            }
            // The gate closed while we waited: the reservation is void, book again.
        }
    }

    /// The earliest slot at `now` (not booked yet) and what it waits for.
    fn next_slot(&self, state: &mut State, now: Duration) -> (Duration, WaitPhase) {
        let mut earliest = now;
        let mut phase = WaitPhase::Pacing;
        if let Some(gate) = state.gate_until {
            if gate > now {
                earliest = gate;
                phase = WaitPhase::RateLimitGate;
            } else {
                state.gate_until = None;
            }
        }
        let Some(_) = self.interval else {
            return (earliest, phase);
        };
        let tat = state.tat.map_or(earliest, |t| t.max(earliest));
        // Allowed when tat - tolerance <= slot.
        let slot = tat
            .checked_sub(self.tolerance)
            .map_or(earliest, |t| t.max(earliest));
        if slot > earliest {
            phase = WaitPhase::Pacing;
        }
        (slot, phase)
    }

    /// Closes the gate for every task until `until` (a 429 was answered). Tasks waiting for
    /// a slot book again after the gate, and even spacing restarts at the gate.
    pub(crate) fn close_gate(&self, until: Duration) {
        {
            let mut state = self.state();
            if state.gate_until.is_some_and(|g| g >= until) {
                return;
            }
            state.gate_until = Some(until);
            state.epoch = state.epoch.wrapping_add(1);
            if self.interval.is_some() {
                state.tat = Some(until);
            }
        }
        self.gate_closed.notify_waiters();
    }
}

/// What a call was waiting for when its deadline ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WaitPhase {
    /// A paced slot of the request quota.
    Pacing,
    /// The gate a 429 closed for every task of the client.
    RateLimitGate,
    /// The backoff before a retry.
    Backoff,
    /// The answer to a request on the wire.
    Request,
}

impl std::fmt::Display for WaitPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WaitPhase::Pacing => "waiting for a paced quota slot",
            WaitPhase::RateLimitGate => "waiting for the rate-limit gate to open",
            WaitPhase::Backoff => "backing off before a retry",
            WaitPhase::Request => "waiting for KeyCRM to answer",
        })
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
            limiter.acquire(None).await.unwrap();
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
            limiter.acquire(None).await.unwrap();
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
                l.acquire(None).await.unwrap();
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
        limiter.acquire(None).await.unwrap();
        assert_eq!(start.elapsed().as_millis(), 2000);
        limiter.acquire(None).await.unwrap();
        assert_eq!(start.elapsed().as_millis(), 2000, "the gate opens for good");
    }

    #[tokio::test(start_paused = true)]
    async fn pacing_resumes_after_the_gate() {
        let limiter = limiter(60, 1);
        let start = Instant::now();
        limiter.acquire(None).await.unwrap();
        limiter.close_gate(limiter.clock().now() + Duration::from_secs(5));
        limiter.acquire(None).await.unwrap();
        assert_eq!(start.elapsed().as_millis(), 5000);
        limiter.acquire(None).await.unwrap();
        assert_eq!(start.elapsed().as_millis(), 6010);
    }

    #[tokio::test(start_paused = true)]
    async fn tasks_asleep_for_a_slot_rebook_after_a_gate_closes() {
        let limiter = Arc::new(limiter(60, 1));
        let start = Instant::now();
        let mut handles = Vec::new();
        for _ in 0..4 {
            let l = limiter.clone();
            handles.push(tokio::spawn(async move {
                l.acquire(None).await.unwrap();
                start.elapsed().as_millis()
            }));
        }
        // Let the four book 0, 1010, 2020 and 3030 ms, then close the gate at 500 ms.
        tokio::time::sleep(Duration::from_millis(500)).await;
        limiter.close_gate(limiter.clock().now() + Duration::from_secs(7));
        let mut at = Vec::new();
        for h in handles {
            at.push(h.await.unwrap());
        }
        at.sort_unstable();
        assert_eq!(
            at,
            vec![0, 7500, 8510, 9520],
            "nobody leaves before the gate"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_beyond_the_deadline_is_refused_without_booking_it() {
        let limiter = limiter(60, 1);
        let now = limiter.clock().now();
        limiter.acquire(Some(now)).await.unwrap();
        assert_eq!(
            limiter
                .acquire(Some(now + Duration::from_millis(900)))
                .await,
            Err(Refusal::Deadline(WaitPhase::Pacing))
        );
        limiter.close_gate(now + Duration::from_secs(5));
        assert_eq!(
            limiter.acquire(Some(now + Duration::from_secs(4))).await,
            Err(Refusal::Deadline(WaitPhase::RateLimitGate))
        );
        let waited = limiter.acquire(None).await.unwrap();
        assert_eq!(
            waited,
            Duration::from_secs(5),
            "the refusals booked nothing"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn huge_gates_saturate_instead_of_overflowing() {
        let limiter = limiter(60, 1);
        limiter.close_gate(Duration::MAX);
        assert_eq!(
            limiter.acquire(Some(Duration::from_secs(1))).await,
            Err(Refusal::Deadline(WaitPhase::RateLimitGate))
        );
        // Booking at the end of time saturates too.
        let booked = tokio::time::timeout(Duration::from_secs(1), limiter.acquire(None)).await;
        assert!(booked.is_err(), "still waiting for the gate");
        assert_eq!(limiter.state().tat, Some(Duration::MAX));
    }

    #[tokio::test(start_paused = true)]
    async fn a_poisoned_lock_does_not_take_the_limiter_down() {
        let limiter = Arc::new(limiter(60, 1));
        let poisoner = limiter.clone();
        let panicked = std::thread::spawn(move || {
            let _held = poisoner.state.lock().unwrap();
            panic!("a panic while the limiter lock is held");
        })
        .join();
        assert!(panicked.is_err());
        assert!(limiter.state.is_poisoned());
        let start = Instant::now();
        limiter.acquire(None).await.unwrap();
        limiter.close_gate(limiter.clock().now() + Duration::from_secs(2));
        limiter.acquire(None).await.unwrap();
        assert_eq!(start.elapsed().as_millis(), 2000);
    }
}
