//! Quota pacing shared by every clone of a client: a GCRA limiter plus a gate that a 429 closes.
//!
//! Time comes from the client's [`Clock`], so tests drive it with a paused or virtual clock.

use std::collections::VecDeque;
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
    pub(crate) shared_waits: AtomicU64,
    pub(crate) shared_waited_micros: AtomicU64,
}

/// How the client paces its requests (see [`ClientBuilder::pacing`](crate::ClientBuilder::pacing)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PacingMode {
    /// The default. When answers carry `X-RateLimit-Limit` and `X-RateLimit-Remaining`,
    /// the client trusts them: it spends the remaining budget at once (never more requests
    /// out than the budget left), spreads the last tenth of it until the budget's expected
    /// renewal, and once it is spent waits until a full window (60 s) has passed since the
    /// answer to the request `limit` places back, which no fixed window, rolling window or
    /// token bucket of that limit refuses. Without those headers it paces evenly like
    /// [`Even`](Self::Even), never sends more than `requests_per_minute` within 60 s of
    /// its own answers, and adapts the burst to 429s: halved on each 429, one back per
    /// minute without one, up to the configured burst (additive increase, multiplicative
    /// decrease: a server that punishes bursts is left alone quickly, and probed again
    /// slowly).
    #[default]
    Adaptive,
    /// Exactly the pacing of earlier versions: requests evenly spaced at
    /// `requests_per_minute` with the configured burst, whatever the server says; a 429
    /// still closes the gate for every task.
    Even,
}

/// The rate-limit budget the server last reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimitBudget {
    /// `X-RateLimit-Limit`: requests allowed per window.
    pub limit: u32,
    /// `X-RateLimit-Remaining` of the latest answer.
    pub remaining: u32,
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
    /// The pacing mode in force.
    pub mode: PacingMode,
    /// The budget the server last reported, when its answers carry the headers.
    pub budget: Option<RateLimitBudget>,
    /// The burst allowed now when pacing evenly (after the adjustments to 429s).
    pub burst: u32,
    /// Whether a [`SharedQuota`](crate::quota::SharedQuota) paces this client too.
    pub shared_quota: bool,
    /// Attempts that waited for their slot of the shared quota (also counted in `waits`).
    pub shared_waits: u64,
    /// Total time spent waiting for the shared quota (also counted in `waited`).
    pub shared_waited: Duration,
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
            shared_waits: self.shared_waits.load(Ordering::Relaxed),
            shared_waited: Duration::from_micros(self.shared_waited_micros.load(Ordering::Relaxed)),
            ..ClientStats::default()
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
/// In [`PacingMode::Adaptive`], once answers report a budget, the limiter spends it
/// instead (see [`PacingMode`]); every request then carries a sequence number, and the
/// runtime reports its answer with [`Limiter::observe`] (or, dropped, through
/// [`Ticket`]'s drop).
///
/// Every clock sum saturates, and the state behind the lock is plain data updated without
/// panicking, so a poisoned lock (a panic elsewhere while it was held) is used as is.
#[derive(Debug)]
pub(crate) struct Limiter {
    clock: Arc<dyn Clock>,
    mode: PacingMode,
    /// Time between two requests at the sustained rate; `None` when pacing is off.
    interval: Option<Duration>,
    /// The configured rate (the window's limit assumed without headers).
    per_minute: u32,
    /// The configured burst (at least 1).
    burst: u32,
    state: Mutex<State>,
    /// Wakes the tasks waiting for a slot when their reservations are void (a gate closed,
    /// or the budget became known).
    gate_closed: Notify,
    /// Wakes the tasks waiting on the budget or the log when an answer arrives.
    progress: Notify,
}

/// Pacing is this much slower than the nominal rate (see [`Limiter::new`]).
const PACING_MARGIN: f64 = 1.01;

/// The window a rate-limit budget is assumed to renew over: Laravel's throttle counts per
/// minute unless configured otherwise, and KeyCRM documents a limit per minute.
const WINDOW: Duration = Duration::from_secs(60);

/// The log of recent requests keeps at most this many entries.
const LOG_CAP: u32 = 4096;

/// While spending a reported budget, at most this many requests are out at once: a budget
/// spent behind the client's back (another process on the same key) then costs at most
/// this many 429s before the gate closes.
pub(crate) const MAX_IN_FLIGHT: u32 = 16;

#[derive(Debug)]
struct State {
    /// Theoretical arrival time of the next request (clock time).
    tat: Option<Duration>,
    /// Closed by a 429 until this clock time.
    gate_until: Option<Duration>,
    /// Counts gate closings; a reservation made under an older epoch is void.
    epoch: u64,
    /// The burst in force (adaptive: halved on 429s, grown back per clean window).
    burst: u32,
    /// When the burst last changed.
    burst_changed: Duration,
    /// Requests sent so far: the sequence number of the next one.
    sent: u64,
    /// The latest requests, oldest first, contiguous by sequence number.
    log: VecDeque<Entry>,
    /// The budget of the newest answer that reported one.
    budget: Option<Budget>,
    /// When the last request left in budget mode.
    last_send: Option<Duration>,
    /// After a 429's gate in budget mode, one request may probe the renewed budget.
    probe: bool,
    /// Requests sent and not answered yet.
    in_flight: u32,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// When it was answered (or, while `done` is false, sent).
    at: Duration,
    done: bool,
}

#[derive(Clone, Copy, Debug)]
struct Budget {
    limit: u32,
    remaining: u32,
    /// The sequence number of the request whose answer reported it.
    seq: u64,
}

/// What the log of our own requests allows for the next one.
enum LogSlot {
    Free,
    At(Duration),
    /// The request that decides is still on the wire.
    Pending,
}

/// Why [`Limiter::acquire`] gave up instead of waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The slot lies beyond the caller's deadline; the phase says what it would have waited for.
    Deadline(WaitPhase),
}

/// A request's place in the limiter: its sequence number and how long it waited. Dropped
/// without [`Limiter::observe`], it counts as answered at that moment.
#[derive(Debug)]
pub(crate) struct Ticket<'a> {
    limiter: &'a Limiter,
    seq: u64,
    /// How long the request waited for its slot.
    pub(crate) waited: Duration,
    open: bool,
}

impl Ticket<'_> {
    /// Reports the answer: the rate-limit headers when present, and whether it was a 429.
    pub(crate) fn observe(mut self, signal: Signal) {
        self.open = false;
        self.limiter.observe(self.seq, signal);
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.open {
            self.limiter.observe(self.seq, Signal::default());
        }
    }
}

/// What an answer said about the quota.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Signal {
    /// `X-RateLimit-Limit` and `X-RateLimit-Remaining`, when both were sent.
    pub(crate) budget: Option<(u32, u32)>,
    /// The answer was a 429.
    pub(crate) rate_limited: bool,
    /// The answer was a success (2xx).
    pub(crate) success: bool,
}

impl Limiter {
    /// A limiter for `per_minute` requests with a burst of `burst` (at least 1);
    /// `per_minute == 0` turns pacing off (the 429 gate still works, no budget is spent).
    ///
    /// Requests are spaced 1 % wider than `60 s / per_minute`: a server counting the same
    /// rate over a window of W sees W/100 of slack, enough to absorb network jitter.
    pub(crate) fn new(
        per_minute: u32,
        burst: u32,
        mode: PacingMode,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let interval =
            (per_minute > 0).then(|| (Duration::from_secs(60) / per_minute).mul_f64(PACING_MARGIN));
        let burst = burst.max(1);
        Self {
            clock,
            mode,
            interval,
            per_minute,
            burst,
            state: Mutex::new(State {
                tat: None,
                gate_until: None,
                epoch: 0,
                burst,
                burst_changed: Duration::ZERO,
                sent: 0,
                log: VecDeque::new(),
                budget: None,
                last_send: None,
                probe: false,
                in_flight: 0,
            }),
            gate_closed: Notify::new(),
            progress: Notify::new(),
        }
    }

    /// The clock the limiter runs on.
    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The mode, the budget last reported and the burst in force.
    pub(crate) fn report(&self, stats: &mut ClientStats) {
        let state = self.state();
        stats.mode = self.mode;
        stats.budget = state.budget.map(|b| RateLimitBudget {
            limit: b.limit,
            remaining: b.remaining,
        });
        stats.burst = state.burst;
    }

    /// What this limiter asks of a shared quota for one attempt: its interval (zero when
    /// pacing is off) and the burst in force.
    pub(crate) fn shared_request(&self) -> crate::quota::QuotaRequest {
        crate::quota::QuotaRequest::new(self.interval.unwrap_or(Duration::ZERO), self.state().burst)
    }

    fn adaptive(&self) -> bool {
        self.mode == PacingMode::Adaptive && self.interval.is_some()
    }

    /// Waits for this request's slot and returns its ticket; refuses at once when the slot
    /// lies beyond `deadline` (clock time), without booking it.
    pub(crate) async fn acquire(&self, deadline: Option<Duration>) -> Result<Ticket<'_>, Refusal> {
        let started = self.clock.now();
        loop {
            let budgeted = self.adaptive() && self.state().budget.is_some();
            let booked = if budgeted {
                self.acquire_budget(deadline).await?
            } else {
                self.acquire_even(deadline).await?
            };
            if let Some(seq) = booked {
                return Ok(Ticket {
                    limiter: self,
                    seq,
                    waited: self.clock.now().saturating_sub(started),
                    open: true,
                });
            }
        }
    }

    /// Even pacing (GCRA). `Ok(Some(seq))`: sent; `Ok(None)`: the reservation is void,
    /// start over.
    async fn acquire_even(&self, deadline: Option<Duration>) -> Result<Option<u64>, Refusal> {
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
        if self.state().epoch != epoch {
            // The gate closed while we waited: the reservation is void, book again.
            return Ok(None);
        }
        // Adaptive without headers: never more than `per_minute` within a window of our
        // own answers.
        if self.adaptive() {
            loop {
                let progress = self.progress.notified();
                let wait = {
                    let mut state = self.state();
                    if state.epoch != epoch {
                        return Ok(None);
                    }
                    let now = self.clock.now();
                    match self.log_slot(&state, state.sent, self.per_minute) {
                        LogSlot::Free => return Ok(Some(self.send(&mut state, now))),
                        LogSlot::At(at) if at <= now => {
                            return Ok(Some(self.send(&mut state, now)));
                        }
                        LogSlot::At(at) => {
                            if deadline.is_some_and(|d| at > d) {
                                return Err(Refusal::Deadline(WaitPhase::Pacing));
                            }
                            Some(at - now)
                        }
                        LogSlot::Pending => None,
                    }
                };
                self.wait(wait, deadline, progress).await?;
            }
        }
        let mut state = self.state();
        let now = self.clock.now();
        Ok(Some(self.send(&mut state, now)))
    }

    /// Spends the reported budget. `Ok(Some(seq))`: sent; `Ok(None)`: look again.
    async fn acquire_budget(&self, deadline: Option<Duration>) -> Result<Option<u64>, Refusal> {
        let progress = self.progress.notified();
        let gate_closed = self.gate_closed.notified();
        let wait = {
            let mut state = self.state();
            let now = self.clock.now();
            let Some(budget) = state.budget else {
                return Ok(None);
            };
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
            let n = state.sent;
            let since = n.saturating_sub(budget.seq.saturating_add(1));
            let available = i64::from(budget.remaining) - i64::try_from(since).unwrap_or(i64::MAX);
            let slot = if state.in_flight >= MAX_IN_FLIGHT {
                // Bounded concurrency: wait for an answer.
                None
            } else if available > 0 {
                let low = i64::from((budget.limit / 10).max(1));
                if available <= low {
                    // The last tenth: spread it until the budget is expected to renew.
                    let beyond = n.saturating_add(available.unsigned_abs());
                    let renew = match self.log_slot(&state, beyond, budget.limit) {
                        LogSlot::At(at) => at,
                        _ => now.saturating_add(WINDOW),
                    };
                    let parts = u32::try_from(available + 1).unwrap_or(u32::MAX);
                    let spacing = renew.saturating_sub(now) / parts;
                    let paced = state.last_send.map_or(now, |l| l.saturating_add(spacing));
                    Some(earliest.max(paced))
                } else {
                    Some(earliest)
                }
            } else if state.probe {
                Some(earliest)
            } else {
                match self.log_slot(&state, n, budget.limit) {
                    LogSlot::At(at) => Some(earliest.max(at)),
                    LogSlot::Pending => None,
                    LogSlot::Free => {
                        // History shorter than the limit: someone else spent the budget.
                        // Probe at the sustained rate.
                        let interval = self.interval.unwrap_or(WINDOW / budget.limit.max(1));
                        let paced = state.last_send.map_or(now, |l| l.saturating_add(interval));
                        Some(earliest.max(paced))
                    }
                }
            };
            match slot {
                Some(slot) if slot <= now => {
                    state.probe = false;
                    return Ok(Some(self.send(&mut state, now)));
                }
                Some(slot) => {
                    if deadline.is_some_and(|d| slot > d) {
                        return Err(Refusal::Deadline(phase));
                    }
                    Some(slot - now)
                }
                None => None,
            }
        };
        let progress = std::pin::pin!(progress);
        let gate_closed = std::pin::pin!(gate_closed);
        let both = futures_util::future::select(progress, gate_closed);
        self.wait(wait, deadline, both).await?;
        Ok(None)
    }

    /// Sleeps for `wait` (until the deadline when `None`), or until `wake` completes.
    async fn wait(
        &self,
        wait: Option<Duration>,
        deadline: Option<Duration>,
        wake: impl std::future::Future<Output = impl Sized>,
    ) -> Result<(), Refusal> {
        let now = self.clock.now();
        let wait = match (wait, deadline) {
            (Some(w), _) => w,
            (None, Some(d)) if d <= now => return Err(Refusal::Deadline(WaitPhase::Pacing)),
            (None, Some(d)) => d - now,
            (None, None) => WINDOW,
        };
        let sleep = self.clock.sleep(wait);
        let wake = std::pin::pin!(wake);
        futures_util::future::select(sleep, wake).await;
        Ok(())
    }

    /// Records a request leaving now and returns its sequence number.
    fn send(&self, state: &mut State, now: Duration) -> u64 {
        let seq = state.sent;
        state.sent = state.sent.saturating_add(1);
        state.in_flight = state.in_flight.saturating_add(1);
        state.last_send = Some(now);
        if self.mode == PacingMode::Adaptive {
            state.log.push_back(Entry {
                at: now,
                done: false,
            });
            let keep = state
                .budget
                .map_or(self.per_minute, |b| b.limit.max(self.per_minute))
                .clamp(1, LOG_CAP);
            while state.log.len() > keep as usize {
                state.log.pop_front();
            }
        }
        seq
    }

    /// When request number `n` may leave so that no window of our own answers holds more
    /// than `limit` requests: a window after the answer to request `n - limit`.
    fn log_slot(&self, state: &State, n: u64, limit: u32) -> LogSlot {
        if limit == 0 || limit > LOG_CAP || n < u64::from(limit) {
            return LogSlot::Free;
        }
        let target = n - u64::from(limit);
        let base = state.sent - state.log.len() as u64;
        if target < base {
            return LogSlot::Free;
        }
        match state.log.get((target - base) as usize) {
            Some(entry) if entry.done => {
                LogSlot::At(entry.at.saturating_add(WINDOW.mul_f64(PACING_MARGIN)))
            }
            Some(_) => LogSlot::Pending,
            None => LogSlot::Free,
        }
    }

    /// Takes note of the answer to request `seq`.
    fn observe(&self, seq: u64, signal: Signal) {
        let mut void = false;
        {
            let mut state = self.state();
            let now = self.clock.now();
            state.in_flight = state.in_flight.saturating_sub(1);
            let base = state.sent - state.log.len() as u64;
            if seq >= base
                && let Some(entry) = state.log.get_mut((seq - base) as usize)
            {
                entry.at = now;
                entry.done = true;
            }
            if self.adaptive() {
                if let Some((limit, remaining)) = signal.budget {
                    if state.budget.is_none() {
                        // From now on the budget decides: even-pacing reservations are void.
                        state.epoch = state.epoch.wrapping_add(1);
                        state.tat = None;
                        void = true;
                    }
                    if state.budget.is_none_or(|b| seq >= b.seq) {
                        state.budget = Some(Budget {
                            limit,
                            remaining,
                            seq,
                        });
                    }
                } else if state.budget.is_none() {
                    if signal.rate_limited {
                        state.burst = (state.burst / 2).max(1);
                        state.burst_changed = now;
                    } else if signal.success
                        && state.burst < self.burst
                        && now.saturating_sub(state.burst_changed) >= WINDOW
                    {
                        state.burst += 1;
                        state.burst_changed = now;
                    }
                }
            }
        }
        if void {
            self.gate_closed.notify_waiters();
        }
        self.progress.notify_waiters();
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
        let Some(interval) = self.interval else {
            return (earliest, phase);
        };
        let tolerance = interval.saturating_mul(state.burst.max(1).saturating_sub(1));
        let tat = state.tat.map_or(earliest, |t| t.max(earliest));
        // Allowed when tat - tolerance <= slot.
        let slot = tat
            .checked_sub(tolerance)
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
            state.probe = state.budget.is_some();
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
impl Limiter {
    /// `acquire`, answered at once: how long the request waited.
    async fn acquire_wait(&self, deadline: Option<Duration>) -> Result<Duration, Refusal> {
        self.acquire(deadline).await.map(|ticket| ticket.waited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::TokioClock;
    use tokio::time::Instant;

    fn limiter(per_minute: u32, burst: u32) -> Limiter {
        Limiter::new(
            per_minute,
            burst,
            PacingMode::Adaptive,
            Arc::new(TokioClock::new()),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn requests_are_spaced_evenly_without_an_initial_burst() {
        let limiter = limiter(60, 1);
        let start = Instant::now();
        let mut at = Vec::new();
        for _ in 0..5 {
            limiter.acquire_wait(None).await.unwrap();
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
            limiter.acquire_wait(None).await.unwrap();
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
                l.acquire_wait(None).await.unwrap();
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
        limiter.acquire_wait(None).await.unwrap();
        assert_eq!(start.elapsed().as_millis(), 2000);
        limiter.acquire_wait(None).await.unwrap();
        assert_eq!(start.elapsed().as_millis(), 2000, "the gate opens for good");
    }

    #[tokio::test(start_paused = true)]
    async fn pacing_resumes_after_the_gate() {
        let limiter = limiter(60, 1);
        let start = Instant::now();
        limiter.acquire_wait(None).await.unwrap();
        limiter.close_gate(limiter.clock().now() + Duration::from_secs(5));
        limiter.acquire_wait(None).await.unwrap();
        assert_eq!(start.elapsed().as_millis(), 5000);
        limiter.acquire_wait(None).await.unwrap();
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
                l.acquire_wait(None).await.unwrap();
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
        limiter.acquire_wait(Some(now)).await.unwrap();
        assert_eq!(
            limiter
                .acquire_wait(Some(now + Duration::from_millis(900)))
                .await,
            Err(Refusal::Deadline(WaitPhase::Pacing))
        );
        limiter.close_gate(now + Duration::from_secs(5));
        assert_eq!(
            limiter
                .acquire_wait(Some(now + Duration::from_secs(4)))
                .await,
            Err(Refusal::Deadline(WaitPhase::RateLimitGate))
        );
        let waited = limiter.acquire_wait(None).await.unwrap();
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
            limiter.acquire_wait(Some(Duration::from_secs(1))).await,
            Err(Refusal::Deadline(WaitPhase::RateLimitGate))
        );
        // Booking at the end of time saturates too.
        let booked = tokio::time::timeout(Duration::from_secs(1), limiter.acquire_wait(None)).await;
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
        limiter.acquire_wait(None).await.unwrap();
        limiter.close_gate(limiter.clock().now() + Duration::from_secs(2));
        limiter.acquire_wait(None).await.unwrap();
        assert_eq!(start.elapsed().as_millis(), 2000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reported_budget_is_spent_at_once_with_bounded_concurrency() {
        let limiter = limiter(60, 1);
        let first = limiter.acquire(None).await.unwrap();
        first.observe(Signal {
            budget: Some((60, 59)),
            rate_limited: false,
            success: true,
        });
        let start = Instant::now();
        let mut out = Vec::new();
        for _ in 0..MAX_IN_FLIGHT {
            out.push(limiter.acquire(None).await.unwrap());
        }
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "no pacing within the budget"
        );
        let held = tokio::time::timeout(Duration::from_secs(5), limiter.acquire(None)).await;
        assert!(held.is_err(), "the 17th waits for an answer");
        drop(out.pop());
        let next = tokio::time::timeout(Duration::from_secs(5), limiter.acquire(None)).await;
        assert!(next.is_ok(), "an answer lets the next one out");
    }

    #[tokio::test(start_paused = true)]
    async fn a_spent_budget_waits_a_window_after_the_answer_that_spent_it() {
        let limiter = limiter(60, 1);
        let start = Instant::now();
        let first = limiter.acquire(None).await.unwrap();
        first.observe(Signal {
            budget: Some((3, 2)),
            rate_limited: false,
            success: true,
        });
        for remaining in [1, 0] {
            let t = limiter.acquire(None).await.unwrap();
            t.observe(Signal {
                budget: Some((3, remaining)),
                rate_limited: false,
                success: true,
            });
        }
        // The last third is spread until the expected renewal (60.6 s after the first
        // answer): the third request left at 30.3 s.
        let fourth = limiter.acquire_wait(None).await.unwrap();
        assert_eq!(start.elapsed().as_millis(), 60_600, "waited {fourth:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn without_headers_429s_halve_the_burst_and_clean_windows_restore_it() {
        let limiter = limiter(60, 8);
        let mut stats = ClientStats::default();
        for _ in 0..2 {
            let t = limiter.acquire(None).await.unwrap();
            t.observe(Signal {
                budget: None,
                rate_limited: true,
                success: false,
            });
        }
        limiter.report(&mut stats);
        assert_eq!(stats.burst, 2);
        tokio::time::sleep(Duration::from_secs(61)).await;
        let t = limiter.acquire(None).await.unwrap();
        t.observe(Signal {
            budget: None,
            rate_limited: false,
            success: true,
        });
        limiter.report(&mut stats);
        assert_eq!(
            (stats.burst, stats.mode, stats.budget),
            (3, PacingMode::Adaptive, None)
        );
    }
}
