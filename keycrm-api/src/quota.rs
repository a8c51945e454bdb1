//! A request quota shared by several processes that use one API key.
//!
//! KeyCRM counts its quota per API key, whatever the number of processes sending with it.
//! One [`Client`](crate::Client) (and its clones) paces itself; several processes (web
//! replicas, a pool of workers) need a quota they all book from. [`SharedQuota`] is that
//! seam: set one with [`ClientBuilder::shared_quota`](crate::ClientBuilder::shared_quota)
//! and every attempt of the client reserves its slot there, after its own limiter.
//!
//! The shared side keeps the schedule and reads **its own clock**: it answers "wait this
//! long before sending", so processes whose clocks disagree still agree on the schedule
//! (a PostgreSQL implementation reads `clock_timestamp()` in the same statement that books
//! the slot). A 429 seen by any process closes the shared gate
//! ([`SharedQuota::close_gate`]), and every later reservation waits for it.
//!
//! [`InProcessQuota`] implements it for the processes' common case in tests: several
//! separate clients in one process. A backend crate (for example a PostgreSQL store)
//! implements the same trait with one state row updated atomically.
//!
//! The futures are boxed, so `Arc<dyn SharedQuota>` works without any macro crate:
//!
//! ```
//! use std::time::Duration;
//! use keycrm_api::quota::{QuotaFuture, QuotaRequest, Reservation, SharedQuota};
//!
//! /// A quota that never makes anyone wait (for illustration only).
//! #[derive(Debug)]
//! struct Unlimited;
//!
//! impl SharedQuota for Unlimited {
//!     fn reserve(&self, _request: QuotaRequest) -> QuotaFuture<'_, Reservation> {
//!         Box::pin(async { Ok(Reservation::granted(Duration::ZERO)) })
//!     }
//!     fn close_gate(&self, _retry_after: Duration) -> QuotaFuture<'_, ()> {
//!         Box::pin(async { Ok(()) })
//!     }
//!     fn gate(&self) -> QuotaFuture<'_, Option<Duration>> {
//!         Box::pin(async { Ok(None) })
//!     }
//! }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::clock::Clock;
use crate::limiter::WaitPhase;

/// Why a [`SharedQuota`] could not answer (a database down, a lost connection). The client
/// turns it into [`Error::Quota`](crate::Error::Quota); nothing is sent then. Its text is
/// shown in that error, so it must not carry secrets (a connection string's password).
pub type QuotaError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The boxed future every [`SharedQuota`] method returns.
pub type QuotaFuture<'a, T> =
    Pin<Box<dyn Future<Output = std::result::Result<T, QuotaError>> + Send + 'a>>;

/// What a client asks of the shared quota for one attempt: its rate, and how long it may
/// wait at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuotaRequest {
    /// Time between two requests at the sustained rate (`60 s / requests_per_minute`, 1 %
    /// wider, as the client paces); zero when pacing is off (only the gate holds).
    pub interval: Duration,
    /// How many requests may leave at once before the interval applies (at least 1).
    pub burst: u32,
    /// The longest wait the caller accepts (its call's deadline); `None`: any. A slot that
    /// lies further out must not be booked: answer [`Reservation::refused`] instead.
    pub max_wait: Option<Duration>,
}

impl QuotaRequest {
    /// A request for `interval` between requests with `burst` at once (at least 1), no
    /// limit on the wait.
    pub fn new(interval: Duration, burst: u32) -> Self {
        Self {
            interval,
            burst: burst.max(1),
            max_wait: None,
        }
    }

    /// The same request, refused rather than booked beyond `max_wait`.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// The generic cell rate algorithm's step, the same for every implementation: given the
    /// shared state's theoretical arrival time `tat` and gate (both on the shared side's
    /// clock, `None` when unset) at `now`, the answer and the new `tat` to store (unchanged
    /// on a refusal).
    ///
    /// ```
    /// use std::time::Duration;
    /// use keycrm_api::quota::{QuotaRequest, Reservation};
    ///
    /// let second = Duration::from_secs(1);
    /// let request = QuotaRequest::new(second, 2);
    /// // A fresh state: the first two leave at once, the third a second later.
    /// let (first, tat) = request.step(None, None, Duration::ZERO);
    /// assert_eq!(first, Reservation::granted(Duration::ZERO));
    /// let (second_one, tat) = request.step(tat, None, Duration::ZERO);
    /// assert_eq!(second_one, Reservation::granted(Duration::ZERO));
    /// let (third, _) = request.step(tat, None, Duration::ZERO);
    /// assert_eq!(third, Reservation::granted(second));
    /// ```
    pub fn step(
        &self,
        tat: Option<Duration>,
        gate_until: Option<Duration>,
        now: Duration,
    ) -> (Reservation, Option<Duration>) {
        let gate = gate_until.filter(|g| *g > now);
        let earliest = gate.unwrap_or(now);
        let tolerance = self
            .interval
            .saturating_mul(self.burst.max(1).saturating_sub(1));
        let slot = tat
            .and_then(|t| t.checked_sub(tolerance))
            .map_or(earliest, |t| t.max(earliest));
        let wait = slot.saturating_sub(now);
        if self.max_wait.is_some_and(|max| wait > max) {
            let phase = if slot == earliest && gate.is_some() {
                WaitPhase::RateLimitGate
            } else {
                WaitPhase::Pacing
            };
            return (Reservation::refused(wait, phase), tat);
        }
        let next = tat
            .map_or(slot, |t| t.max(slot))
            .saturating_add(self.interval);
        (Reservation::granted(wait), Some(next))
    }
}

/// The shared quota's answer to [`SharedQuota::reserve`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reservation {
    /// A slot is booked: send after waiting `wait`.
    Granted {
        /// How long to wait before sending.
        wait: Duration,
    },
    /// The next slot lies beyond the request's `max_wait`; nothing was booked.
    Refused {
        /// How long the caller would have had to wait.
        wait: Duration,
        /// What it would have waited for: pacing, or the gate a 429 closed.
        phase: WaitPhase,
    },
}

impl Reservation {
    /// A booked slot, `wait` from now.
    pub fn granted(wait: Duration) -> Self {
        Reservation::Granted { wait }
    }

    /// No slot within the caller's limit: it would have waited `wait` for `phase`.
    pub fn refused(wait: Duration, phase: WaitPhase) -> Self {
        Reservation::Refused { wait, phase }
    }
}

/// A request quota shared by several clients, possibly in several processes, that use one
/// API key (see the [module docs](self)).
///
/// A client with a shared quota calls, for each attempt, [`reserve`](Self::reserve) after
/// its own limiter let the attempt out, sleeps the answered wait, and, when it slept, asks
/// [`gate`](Self::gate) whether a 429 elsewhere closed the gate meanwhile (then it books
/// again). On a 429 it calls [`close_gate`](Self::close_gate) with the wait it read.
///
/// Implementations compute every time on their own clock, never on the caller's, and keep
/// the state of the generic cell rate algorithm (a theoretical arrival time) plus a gate;
/// [`QuotaRequest::step`] is that algorithm, for implementations to reuse.
pub trait SharedQuota: Send + Sync + fmt::Debug {
    /// Books the next request slot at the request's rate, after the gate if it is closed,
    /// and answers how long to wait before sending; or, when that wait exceeds the
    /// request's `max_wait`, refuses without booking.
    fn reserve(&self, request: QuotaRequest) -> QuotaFuture<'_, Reservation>;

    /// A 429 was answered: closes the gate for every user of the quota until
    /// `retry_after` from now (on the shared side's clock), unless it already stays closed
    /// longer. Reservations booked later start after the gate (the theoretical arrival
    /// time moves to the gate's end if it is earlier); slots booked before are left as
    /// they are: their holders give up those that fall inside the gate, since they find
    /// it closed when they wake.
    fn close_gate(&self, retry_after: Duration) -> QuotaFuture<'_, ()>;

    /// How long the gate stays closed from now, or `None` when it is open.
    fn gate(&self) -> QuotaFuture<'_, Option<Duration>>;
}

/// A [`SharedQuota`] in this process: the generic cell rate algorithm over a mutex, on a
/// [`Clock`]. Separate clients (not clones) built with the same `Arc<InProcessQuota>` never
/// exceed its rate together, and a 429 seen by one holds them all.
///
/// ```
/// use std::sync::Arc;
/// use keycrm_api::Client;
/// use keycrm_api::clock::TokioClock;
/// use keycrm_api::quota::InProcessQuota;
///
/// let quota = Arc::new(InProcessQuota::new(Arc::new(TokioClock::new())));
/// let web = Client::builder().api_key("k").shared_quota(quota.clone()).build().unwrap();
/// let worker = Client::builder().api_key("k").shared_quota(quota).build().unwrap();
/// # let _ = (web, worker);
/// ```
pub struct InProcessQuota {
    clock: Arc<dyn Clock>,
    state: Mutex<GcraState>,
}

#[derive(Clone, Copy, Debug, Default)]
struct GcraState {
    tat: Option<Duration>,
    gate_until: Option<Duration>,
}

impl InProcessQuota {
    /// An open quota on `clock` (the clients' clock in tests, so a paused or virtual clock
    /// drives it).
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            state: Mutex::new(GcraState::default()),
        }
    }

    /// The state is plain data updated without panicking: a poisoned lock is used as is.
    fn state(&self) -> MutexGuard<'_, GcraState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn reserve_now(&self, request: QuotaRequest) -> Reservation {
        let mut state = self.state();
        let now = self.clock.now();
        let (answer, tat) = request.step(state.tat, state.gate_until, now);
        state.tat = tat;
        answer
    }

    fn close_gate_now(&self, retry_after: Duration) {
        let mut state = self.state();
        let until = self.clock.now().saturating_add(retry_after);
        if state.gate_until.is_some_and(|g| g >= until) {
            return;
        }
        state.gate_until = Some(until);
        // Later slots start after the gate. Slots booked before stay booked: those inside
        // the gate are given up by their holders, who find it closed when they wake.
        state.tat = Some(state.tat.map_or(until, |t| t.max(until)));
    }

    fn gate_now(&self) -> Option<Duration> {
        let state = self.state();
        let now = self.clock.now();
        state
            .gate_until
            .filter(|g| *g > now)
            .map(|g| g.saturating_sub(now))
    }
}

impl fmt::Debug for InProcessQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = *self.state();
        f.debug_struct("InProcessQuota")
            .field("clock", &self.clock)
            .field("tat", &state.tat)
            .field("gate_until", &state.gate_until)
            .finish()
    }
}

impl SharedQuota for InProcessQuota {
    fn reserve(&self, request: QuotaRequest) -> QuotaFuture<'_, Reservation> {
        let answer = self.reserve_now(request);
        Box::pin(async move { Ok(answer) })
    }

    fn close_gate(&self, retry_after: Duration) -> QuotaFuture<'_, ()> {
        self.close_gate_now(retry_after);
        Box::pin(async { Ok(()) })
    }

    fn gate(&self) -> QuotaFuture<'_, Option<Duration>> {
        let gate = self.gate_now();
        Box::pin(async move { Ok(gate) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::VirtualClock;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn granted(r: Reservation) -> Duration {
        match r {
            Reservation::Granted { wait } => wait,
            Reservation::Refused { .. } => panic!("refused: {r:?}"),
        }
    }

    #[tokio::test]
    async fn slots_follow_the_rate_after_the_burst() {
        let clock = Arc::new(VirtualClock::new());
        let quota = InProcessQuota::new(clock.clone());
        let request = QuotaRequest::new(secs(1), 2);
        let mut waits = Vec::new();
        for _ in 0..4 {
            waits.push(granted(quota.reserve(request).await.unwrap()));
        }
        assert_eq!(waits, vec![secs(0), secs(0), secs(1), secs(2)]);
        clock.advance(secs(10));
        assert_eq!(
            granted(quota.reserve(request).await.unwrap()),
            secs(0),
            "idle time restores the burst"
        );
    }

    #[tokio::test]
    async fn a_closed_gate_holds_every_reservation_booked_after_it() {
        let clock = Arc::new(VirtualClock::new());
        let quota = InProcessQuota::new(clock.clone());
        let request = QuotaRequest::new(secs(1), 1);
        granted(quota.reserve(request).await.unwrap());
        quota.close_gate(secs(5)).await.unwrap();
        assert_eq!(quota.gate().await.unwrap(), Some(secs(5)));
        // A shorter gate does not shorten a longer one.
        quota.close_gate(secs(2)).await.unwrap();
        assert_eq!(quota.gate().await.unwrap(), Some(secs(5)));
        assert_eq!(granted(quota.reserve(request).await.unwrap()), secs(5));
        assert_eq!(granted(quota.reserve(request).await.unwrap()), secs(6));
        clock.advance(secs(5));
        assert_eq!(quota.gate().await.unwrap(), None);
    }

    #[tokio::test]
    async fn slots_booked_beyond_a_short_gate_stay_booked() {
        let clock = Arc::new(VirtualClock::new());
        let quota = InProcessQuota::new(clock.clone());
        let request = QuotaRequest::new(secs(1), 1);
        for expected in [0, 1, 2] {
            assert_eq!(
                granted(quota.reserve(request).await.unwrap()),
                secs(expected)
            );
        }
        // The holder of the 1 s slot finds the gate closed and books again; the 2 s one
        // goes as booked, and the next slot is the fourth.
        quota.close_gate(Duration::from_millis(1500)).await.unwrap();
        assert_eq!(
            quota.gate().await.unwrap(),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(granted(quota.reserve(request).await.unwrap()), secs(3));
    }

    #[tokio::test]
    async fn a_slot_beyond_max_wait_is_refused_without_booking_it() {
        let clock = Arc::new(VirtualClock::new());
        let quota = InProcessQuota::new(clock.clone());
        let request = QuotaRequest::new(secs(1), 1);
        granted(quota.reserve(request).await.unwrap());
        let hurried = request.max_wait(Duration::from_millis(500));
        assert_eq!(
            quota.reserve(hurried).await.unwrap(),
            Reservation::refused(secs(1), WaitPhase::Pacing)
        );
        quota.close_gate(secs(9)).await.unwrap();
        assert_eq!(
            quota.reserve(hurried).await.unwrap(),
            Reservation::refused(secs(9), WaitPhase::RateLimitGate)
        );
        assert_eq!(
            granted(quota.reserve(request).await.unwrap()),
            secs(9),
            "the refusals booked nothing"
        );
    }

    #[tokio::test]
    async fn huge_waits_saturate() {
        let clock = Arc::new(VirtualClock::new());
        let quota = InProcessQuota::new(clock.clone());
        quota.close_gate(Duration::MAX).await.unwrap();
        let request = QuotaRequest::new(Duration::MAX, u32::MAX);
        assert_eq!(
            granted(quota.reserve(request).await.unwrap()),
            Duration::MAX
        );
        assert_eq!(
            granted(quota.reserve(request).await.unwrap()),
            Duration::MAX
        );
    }
}
