//! Quota pacing shared by every clone of a client: a GCRA limiter plus a gate that a 429 closes.
//!
//! Time comes from the client's [`Clock`], so tests drive it with a paused or virtual clock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[non_exhaustive]
pub enum PacingMode {
    /// The default. When answers carry `X-RateLimit-Limit` and `X-RateLimit-Remaining`,
    /// the client trusts them: it spends the remaining budget at once (never more requests
    /// out than the budget left, at most 16 at a time). Once it is spent, if the budget
    /// was seen coming back steadily within a minute of finding it fresh (which no fixed
    /// or rolling window does, and a token bucket does), it sends at the bucket's refill
    /// rate, `limit` per 60 s (1 % slower), counted from the latest answer; otherwise it
    /// waits until a full window (60 s) has passed since the answer to the request
    /// `limit` places back, which no fixed window, rolling window or token bucket of that
    /// limit refuses. A 429 makes it forget the refill rate.
    ///
    /// Without those headers it learns the burst the server allows, as TCP learns its
    /// window (additive increase, multiplicative decrease). It starts optimistic, with a
    /// burst of `requests_per_minute` (a fresh window of the configured rate), and paces
    /// evenly beyond the burst. Each 429 halves the burst (never below the configured
    /// [`burst`](crate::ClientBuilder::burst), the floor), and closes the gate for every
    /// task, also those already waiting for a slot; each minute without a 429 gives one
    /// back, up to `requests_per_minute` (or the configured burst, if larger). While the
    /// burst in force exceeds the configured one, one request at a time is on the wire, so
    /// a server that counts less than that (a smaller limit, a shorter window, another
    /// process on the key) answers at most one 429 before the gate holds everyone.
    ///
    /// It also learns how the server counts ([`QuotaModel`], in
    /// [`ClientStats::quota_model`]), from one probe. Requests within the log of its own
    /// answers (never more than `requests_per_minute` within 60 s of them, 1 % more) go as
    /// paced: no server counting the configured rate in any window of a minute (fixed,
    /// rolling, or a token bucket) refuses those. Once a window's worth is out and more
    /// requests wait, while the model is unknown, one request goes beyond the log: a
    /// *probe*, alone on the wire, and no sooner than a bucket of `requests_per_minute`
    /// tokens refilling one per `60 s / requests_per_minute` (1 % slower), counted over all
    /// requests, allows it (so a token bucket of the configured rate that started full
    /// never refuses one). Its answer decides:
    ///
    /// - A 429 whose `Retry-After` is short (at most twice the token interval, or 2 s if
    ///   that is longer), and shorter than any 60-s window of the configured rate would
    ///   ask for (the window that refused it holds the `requests_per_minute` requests
    ///   before it, so it closes no sooner than 60 s after the earliest of them was sent):
    ///   the server refills continuously, [`QuotaModel::TokenBucket`]. From then on the
    ///   client paces as such a bucket: `requests_per_minute` tokens, one back per token
    ///   interval (1 % slower; a `Retry-After` of more than a second and more than that
    ///   interval sets the interval instead), empty when the gate opens; the log no longer
    ///   holds it back and requests overlap freely. The burst no longer grows or halves. A
    ///   later 429 proves the model wrong: it becomes [`QuotaModel::Window`].
    /// - Any other 429 (also one without `Retry-After`): [`QuotaModel::Window`]. The client
    ///   never probes again and paces as before; that 429 does not halve the burst (the
    ///   probe was beyond it), and the burst is free again when the gate opens, the log of
    ///   its own answers keeping it within the window.
    /// - A success: there is room beyond the configured rate (a bucket that refilled, a
    ///   fixed window that turned, a larger limit): [`QuotaModel::Lenient`], counting the
    ///   probes that passed. The client keeps probing on the same terms, one request beyond
    ///   the log at a time, within the bucket of the configured rate, which bounds it:
    ///   within any 60 s it sends fewer than twice `requests_per_minute`. The first refused
    ///   probe decides as above.
    ///
    /// Any 429 while the model is unknown decides the same way; before
    /// `requests_per_minute` requests were sent, no window of the configured rate could
    /// have refused it (the server counts less, or someone else spends the key), so it is
    /// [`QuotaModel::Window`] and halves the burst. So against a server of the configured
    /// rate alone on the key, a run sees at most one 429 in all: a fixed or rolling window
    /// refuses the first probe and nothing after it; a token bucket that started full
    /// refuses nothing, and one that did not refuses at most one request (a probe, which
    /// shows the bucket, or a request of the first window, which is then taken for a
    /// window). Even misled (another process on the key), a wrong bucket costs one more
    /// 429 and is a window from then on. The probe state is the limiter's, shared by every
    /// clone of the client. A client on a [`SharedQuota`](crate::quota::SharedQuota) does
    /// not probe at all: it keeps the configured burst and the log, as others spend the
    /// same key.
    #[default]
    Adaptive,
    /// Exactly the pacing of earlier versions: requests evenly spaced at
    /// `requests_per_minute` with the configured burst, whatever the server says; a 429
    /// still closes the gate for every task.
    Even,
}

/// What an adaptive client learnt about how the server counts its quota, when answers
/// carry no rate-limit headers (see [`PacingMode::Adaptive`] for the probe that decides).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum QuotaModel {
    /// Nothing learnt yet: no request went beyond a window's worth, or the client does
    /// not probe ([`PacingMode::Even`], a [`SharedQuota`](crate::quota::SharedQuota),
    /// pacing off, or answers report the budget).
    #[default]
    Unknown,
    /// Probes beyond the configured rate passed and none was refused yet: the server let
    /// more than `requests_per_minute` through within a window of the client's answers.
    /// The client keeps probing, one request beyond the window at a time, within a bucket
    /// of the configured rate.
    Lenient {
        /// Probes that passed.
        passed: u64,
    },
    /// A probe was refused with a short `Retry-After`: the server refills continuously.
    /// The client paces as a bucket of `requests_per_minute` tokens, one back per `refill`.
    TokenBucket {
        /// The interval the client counts a token back in (1 % slower than the server's).
        refill: Duration,
    },
    /// A probe was refused with a long `Retry-After` (a fixed or rolling window), or a 429
    /// came in a way no bucket of the configured rate explains: the client never probes
    /// again and keeps within `requests_per_minute` per minute of its own answers.
    Window,
}

/// The rate-limit budget the server last reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RateLimitBudget {
    /// `X-RateLimit-Limit`: requests allowed per window.
    pub limit: u32,
    /// `X-RateLimit-Remaining` of the latest answer.
    pub remaining: u32,
}

/// A snapshot of a client's counters (see [`crate::Client::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
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
    /// The burst allowed now when pacing without a budget (in [`PacingMode::Adaptive`],
    /// learnt from 429s; in [`PacingMode::Even`], the configured one).
    pub burst: u32,
    /// How the server counts the quota, as learnt without headers (see [`QuotaModel`]).
    pub quota_model: QuotaModel,
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
    /// The configured burst (at least 1): the floor of the adaptive burst.
    burst: u32,
    /// The largest adaptive burst, where it starts without headers (see [`PacingMode`]).
    ceiling: u32,
    /// Adaptive without headers: whether it probes beyond the window to learn the
    /// server's [`QuotaModel`] (not on a shared quota).
    probes: bool,
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
    /// The budget was seen to come back steadily, as a token bucket refills (see
    /// [`Limiter::learn_refill`]): once spent, it is spent again at the refill rate.
    refills: bool,
    /// When the request that found the budget fresh (`limit - 1` left) was sent: no fixed
    /// or rolling window gives anything back within a window of it.
    fresh_since: Option<Duration>,
    /// Adaptive without headers: a 429 was answered and the runtime has yet to close its
    /// gate; nobody leaves meanwhile (see [`Limiter::close_gate`]).
    held: bool,
    /// How the server counts, as learnt from probes (see [`PacingMode::Adaptive`]).
    model: QuotaModel,
    /// The probe on the wire, by sequence number.
    probe_seq: Option<u64>,
    /// Theoretical arrival time of a bucket of `per_minute` tokens at the configured rate,
    /// counted over every request sent: a probe leaves no sooner than it allows.
    probe_tat: Option<Duration>,
    /// The 429 that made the model [`QuotaModel::Window`] was a probe's: the gate it
    /// closes leaves the burst free (see [`Limiter::close_gate`]).
    free_after_gate: bool,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// When it was sent.
    sent: Duration,
    /// When it was answered (or, while `done` is false, sent).
    at: Duration,
    done: bool,
    /// Answered 429: the server did not count it.
    refused: bool,
}

#[derive(Clone, Copy, Debug)]
struct Budget {
    limit: u32,
    remaining: u32,
    /// The sequence number of the request whose answer reported it.
    seq: u64,
    /// When that answer arrived.
    at: Duration,
}

/// What an adaptive request without a budget does next.
enum Go {
    /// Leave now; `probe`: beyond the window, to learn the server's model.
    Now { probe: bool },
    /// Wait until this clock time, then look again.
    Until(Duration),
    /// Wait for an answer (at most until this clock time), then look again.
    Answer(Option<Duration>),
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
    /// The answer's `Retry-After`, when it had one.
    pub(crate) retry_after: Option<Duration>,
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
        let ceiling = if mode == PacingMode::Adaptive && interval.is_some() {
            burst.max(per_minute)
        } else {
            burst
        };
        Self {
            clock,
            mode,
            interval,
            per_minute,
            burst,
            ceiling,
            probes: mode == PacingMode::Adaptive && interval.is_some(),
            state: Mutex::new(State {
                tat: None,
                gate_until: None,
                epoch: 0,
                burst: ceiling,
                burst_changed: Duration::ZERO,
                sent: 0,
                log: VecDeque::new(),
                budget: None,
                last_send: None,
                probe: false,
                in_flight: 0,
                refills: false,
                fresh_since: None,
                held: false,
                model: QuotaModel::Unknown,
                probe_seq: None,
                probe_tat: None,
                free_after_gate: false,
            }),
            gate_closed: Notify::new(),
            progress: Notify::new(),
        }
    }

    /// Keeps the configured burst instead of probing for a larger one, and never probes
    /// beyond the window (a shared quota paces this client: other clients spend the same
    /// key).
    pub(crate) fn without_probing(mut self) -> Self {
        self.ceiling = self.burst;
        self.probes = false;
        self.state().burst = self.burst;
        self
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
        stats.quota_model = state.model;
    }

    /// What this limiter asks of a shared quota for one attempt: its interval (zero when
    /// pacing is off) and the burst in force.
    pub(crate) fn shared_request(&self) -> crate::quota::QuotaRequest {
        crate::quota::QuotaRequest::new(self.interval.unwrap_or(Duration::ZERO), self.state().burst)
    }

    fn adaptive(&self) -> bool {
        self.mode == PacingMode::Adaptive && self.interval.is_some()
    }

    /// The interval of even pacing in force: the configured one, or a learnt bucket's.
    fn pace(&self, state: &State) -> Option<Duration> {
        match state.model {
            QuotaModel::TokenBucket { refill } if self.interval.is_some() => Some(refill),
            _ => self.interval,
        }
    }

    /// Whether the next request may go beyond the window as a probe, model permitting
    /// (see [`PacingMode::Adaptive`]).
    fn may_probe(&self, state: &State) -> bool {
        self.probes
            && state.budget.is_none()
            && matches!(
                state.model,
                QuotaModel::Unknown | QuotaModel::Lenient { .. }
            )
    }

    /// When a bucket of `per_minute` tokens at the configured rate, counted over every
    /// request sent, lets the next one out.
    fn probe_slot(&self, state: &State, now: Duration) -> Duration {
        match (state.probe_tat, self.interval) {
            (Some(tat), Some(interval)) => {
                let tolerance = interval.saturating_mul(self.per_minute.saturating_sub(1));
                tat.checked_sub(tolerance).map_or(now, |t| t.max(now))
            }
            _ => now,
        }
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
            if let Some(interval) = self.pace(&state) {
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
        // own answers (but for one probe at a time while the model is unknown, and not at
        // all once it is a bucket), and one request at a time on the wire while probing a
        // burst beyond the configured one.
        if self.adaptive() {
            loop {
                let progress = self.progress.notified();
                let wait = {
                    let mut state = self.state();
                    if state.epoch != epoch {
                        return Ok(None);
                    }
                    let now = self.clock.now();
                    let bucket = matches!(state.model, QuotaModel::TokenBucket { .. });
                    let probing = state.budget.is_none() && state.burst > self.burst && !bucket;
                    let slot = if state.held || (probing && state.in_flight > 0) {
                        LogSlot::Pending
                    } else if bucket && state.budget.is_none() {
                        LogSlot::Free
                    } else {
                        self.log_slot(&state, state.sent, self.per_minute)
                    };
                    let go = match slot {
                        LogSlot::Free => Go::Now { probe: false },
                        LogSlot::At(at) if at <= now => Go::Now { probe: false },
                        LogSlot::At(at) if self.may_probe(&state) => {
                            if state.in_flight > 0 {
                                // A probe goes alone: after the answers, or the log's slot.
                                Go::Answer(Some(at))
                            } else {
                                let probe_at = self.probe_slot(&state, now);
                                if probe_at <= now {
                                    Go::Now { probe: true }
                                } else {
                                    Go::Until(probe_at.min(at))
                                }
                            }
                        }
                        LogSlot::At(at) => Go::Until(at),
                        LogSlot::Pending => Go::Answer(None),
                    };
                    match go {
                        Go::Now { probe } => {
                            let seq = self.send(&mut state, now);
                            if probe {
                                state.probe_seq = Some(seq);
                            }
                            return Ok(Some(seq));
                        }
                        Go::Until(at) => {
                            if deadline.is_some_and(|d| at > d) {
                                return Err(Refusal::Deadline(WaitPhase::Pacing));
                            }
                            Some(at - now)
                        }
                        Go::Answer(at) => match (at, deadline) {
                            (_, Some(d)) if d <= now => {
                                return Err(Refusal::Deadline(WaitPhase::Pacing));
                            }
                            (Some(at), d) => Some(d.map_or(at, |d| d.min(at)) - now),
                            (None, _) => None,
                        },
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
            let since = i64::try_from(since).unwrap_or(i64::MAX);
            let refill = refill_interval(budget.limit);
            let refilled = if state.refills {
                tokens(now.saturating_sub(budget.at), refill)
            } else {
                0
            };
            let left = (i64::from(budget.remaining) + refilled).min(i64::from(budget.limit));
            let available = left - since;
            let slot = if state.in_flight >= MAX_IN_FLIGHT {
                // Bounded concurrency: wait for an answer.
                None
            } else if available > 0 || state.probe {
                Some(earliest)
            } else if state.refills {
                // A bucket: the next token, counted from the answer that reported the budget.
                let needed = since - i64::from(budget.remaining) + 1;
                if needed > i64::from(budget.limit) {
                    // More out than a full bucket holds: wait for their answers.
                    None
                } else {
                    let needed = u32::try_from(needed.max(1)).unwrap_or(u32::MAX);
                    Some(earliest.max(budget.at.saturating_add(refill.saturating_mul(needed))))
                }
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
        if let Some(interval) = self.interval
            && self.probes
        {
            let tat = state.probe_tat.map_or(now, |t| t.max(now));
            state.probe_tat = Some(tat.saturating_add(interval));
        }
        if self.mode == PacingMode::Adaptive {
            state.log.push_back(Entry {
                sent: now,
                at: now,
                done: false,
                refused: false,
            });
            // Without a budget, a 429 is judged by the request `per_minute` places before
            // it, and a few may have left since (see [`Limiter::classify`]).
            let keep = state
                .budget
                .map_or(self.per_minute.saturating_add(MAX_IN_FLIGHT), |b| {
                    b.limit.max(self.per_minute)
                })
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
            let mut sent_at = None;
            if seq >= base
                && let Some(entry) = state.log.get_mut((seq - base) as usize)
            {
                if !entry.done {
                    sent_at = Some(entry.at);
                }
                entry.at = now;
                entry.done = true;
                entry.refused = signal.rate_limited;
            }
            if self.adaptive() {
                if let Some((limit, remaining)) = signal.budget {
                    if state.budget.is_none() {
                        // From now on the budget decides: even-pacing reservations are void.
                        state.epoch = state.epoch.wrapping_add(1);
                        state.tat = None;
                        void = true;
                    }
                    if signal.rate_limited {
                        // Whatever was learnt about refills, the server says otherwise.
                        state.refills = false;
                    } else {
                        if let Some(prev) = state.budget {
                            Self::learn_refill(&mut state, prev, seq, remaining, now);
                        }
                        if remaining.saturating_add(1) >= limit {
                            state.fresh_since = sent_at.or(Some(now));
                        }
                    }
                    if state.budget.is_none_or(|b| seq >= b.seq) {
                        state.budget = Some(Budget {
                            limit,
                            remaining,
                            seq,
                            at: now,
                        });
                    }
                } else if state.budget.is_none() {
                    let probe = state.probe_seq == Some(seq);
                    if probe {
                        state.probe_seq = None;
                    }
                    if signal.rate_limited {
                        state.held = true;
                        self.learn_from_429(&mut state, seq, probe, signal.retry_after, now);
                    } else if signal.success {
                        if probe {
                            state.model = match state.model {
                                QuotaModel::Lenient { passed } => QuotaModel::Lenient {
                                    passed: passed.saturating_add(1),
                                },
                                _ => QuotaModel::Lenient { passed: 1 },
                            };
                        }
                        let bucket = matches!(state.model, QuotaModel::TokenBucket { .. });
                        if !bucket
                            && state.burst < self.ceiling
                            && now.saturating_sub(state.burst_changed) >= WINDOW
                        {
                            state.burst += 1;
                            state.burst_changed = now;
                        }
                    }
                }
            }
        }
        if void {
            self.gate_closed.notify_waiters();
        }
        self.progress.notify_waiters();
    }

    /// Takes note of a 429 without a budget on request `seq` (`probe`: it went beyond the
    /// window), answered at `now` with `retry_after`: learns the model while it is unknown,
    /// and halves the burst unless the model says the burst was not at fault.
    fn learn_from_429(
        &self,
        state: &mut State,
        seq: u64,
        probe: bool,
        retry_after: Option<Duration>,
        now: Duration,
    ) {
        let halve = |state: &mut State| {
            state.burst = (state.burst / 2).max(self.burst);
            state.burst_changed = now;
        };
        let learnt = match state.model {
            QuotaModel::Unknown | QuotaModel::Lenient { .. } if self.probes => {
                self.classify(state, seq, retry_after, now)
            }
            QuotaModel::TokenBucket { .. } => QuotaModel::Window,
            _ => {
                // A window (or no probing): as ever, the burst was too much.
                halve(state);
                return;
            }
        };
        match learnt {
            QuotaModel::TokenBucket { .. } => {
                // A bucket of the configured rate, empty now.
                state.burst = self.per_minute.max(1);
                state.burst_changed = now;
            }
            _ if probe => state.free_after_gate = true,
            _ => {
                if matches!(state.model, QuotaModel::TokenBucket { .. }) {
                    // Back from a bucket's burst to the window's.
                    state.burst = self.ceiling;
                }
                halve(state);
            }
        }
        state.model = learnt;
    }

    /// What a 429 on request `seq`, answered at `now` with `retry_after`, says of the
    /// server: a token bucket when the wait is short (at most twice the token interval, or
    /// 2 s) and shorter than any 60-s window of the configured rate could ask for; a window
    /// otherwise.
    ///
    /// A window of `per_minute` that refuses a request holds `per_minute` requests (ours,
    /// when we are alone on the key), the earliest of which, request `seq - per_minute`,
    /// was sent at `s`: a fixed window opened no sooner, a rolling one frees its first slot
    /// no sooner than `s + 60 s`, so either asks to wait at least `60 s - (now - s)`.
    /// Before `per_minute` requests, no such window refuses at all.
    fn classify(
        &self,
        state: &State,
        seq: u64,
        retry_after: Option<Duration>,
        now: Duration,
    ) -> QuotaModel {
        let (Some(wait), Some(interval)) = (retry_after, self.interval) else {
            return QuotaModel::Window;
        };
        let base = state.sent - state.log.len() as u64;
        let earliest = seq
            .checked_sub(u64::from(self.per_minute))
            .filter(|&back| back >= base)
            .and_then(|back| state.log.get((back - base) as usize))
            .map(|entry| entry.sent);
        let Some(earliest) = earliest else {
            return QuotaModel::Window;
        };
        let token = WINDOW / self.per_minute.max(1);
        let short = wait <= token.saturating_mul(2).max(Duration::from_secs(2));
        let window_floor = WINDOW.saturating_sub(now.saturating_sub(earliest));
        if !short || wait >= window_floor {
            return QuotaModel::Window;
        }
        // `Retry-After` counts whole seconds: one second says only that a token is near;
        // more than that and more than the interval says the bucket refills slower.
        let refill = if wait > Duration::from_secs(1) && wait > token {
            wait.mul_f64(PACING_MARGIN)
        } else {
            interval
        };
        QuotaModel::TokenBucket { refill }
    }

    /// Learns whether the budget refills steadily, from request `seq`'s answer (`remaining`
    /// left, at `now`) and the budget reported before it (`prev`).
    ///
    /// Between the two answers the server counted the requests answered meanwhile (not
    /// 429s) plus request `seq`; requests still on the wire may not have arrived yet, so
    /// they are assumed uncounted. Whatever comes back beyond that was given back. Within a
    /// window of a request that found the budget fresh, neither a fixed window (it opened
    /// with that request) nor a rolling one (nothing older is in it) gives anything back,
    /// so budget coming back then is a bucket refilling, if it is no more than a bucket of
    /// `limit` per 60 s refills in that time (a larger jump is a shorter window renewing).
    fn learn_refill(state: &mut State, prev: Budget, seq: u64, remaining: u32, now: Duration) {
        if seq <= prev.seq || state.refills {
            return;
        }
        let Some(fresh) = state.fresh_since else {
            return;
        };
        if now.saturating_sub(fresh) >= WINDOW {
            return;
        }
        let base = state.sent - state.log.len() as u64;
        if prev.seq < base {
            return;
        }
        let between = (prev.seq + 1 - base) as usize..(seq - base) as usize;
        let answered = state
            .log
            .range(between)
            .filter(|e| e.done && !e.refused)
            .count();
        let counted = i64::try_from(answered).unwrap_or(i64::MAX) + 1;
        let gain = i64::from(remaining) - (i64::from(prev.remaining) - counted);
        let elapsed = now.saturating_sub(prev.at);
        let plausible = tokens(elapsed, refill_interval(prev.limit)) + 1;
        if gain > 0 && gain <= plausible {
            state.refills = true;
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
        let Some(interval) = self.pace(state) else {
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
    /// a slot book again after the gate, and even spacing restarts at the gate: in
    /// [`PacingMode::Even`] with the configured burst free at once; in
    /// [`PacingMode::Adaptive`] without headers with no burst free (a token bucket gives
    /// back only what it refilled meanwhile), which idle time restores; but after a
    /// probe's 429 that showed a window, with the burst free (the probe went beyond the
    /// burst, which the log of our own answers keeps within the window).
    pub(crate) fn close_gate(&self, until: Duration) {
        {
            let mut state = self.state();
            let held = std::mem::take(&mut state.held);
            let free = std::mem::take(&mut state.free_after_gate);
            if state.gate_until.is_some_and(|g| g >= until) {
                drop(state);
                if held {
                    self.progress.notify_waiters();
                }
                return;
            }
            state.gate_until = Some(until);
            state.epoch = state.epoch.wrapping_add(1);
            state.probe = state.budget.is_some();
            if let Some(interval) = self.pace(&state) {
                let spent = if self.adaptive() && state.budget.is_none() && !free {
                    interval.saturating_mul(state.burst.saturating_sub(1))
                } else {
                    Duration::ZERO
                };
                state.tat = Some(until.saturating_add(spent));
            }
        }
        self.gate_closed.notify_waiters();
        self.progress.notify_waiters();
    }
}

/// How often a bucket of `limit` per window gives one back (1 % slower, as pacing is).
fn refill_interval(limit: u32) -> Duration {
    (WINDOW / limit.max(1)).mul_f64(PACING_MARGIN)
}

/// Whole intervals in `elapsed`.
fn tokens(elapsed: Duration, interval: Duration) -> i64 {
    let n = elapsed.as_nanos() / interval.as_nanos().max(1);
    i64::try_from(n).unwrap_or(i64::MAX)
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

    /// Even pacing: the mechanics of the schedule and the gate, without the adaptive burst.
    fn even(per_minute: u32, burst: u32) -> Limiter {
        Limiter::new(
            per_minute,
            burst,
            PacingMode::Even,
            Arc::new(TokioClock::new()),
        )
    }

    /// `n` tasks that each acquire one slot and return when they got it (ms since `start`).
    fn spawn_acquires(
        limiter: &Arc<Limiter>,
        n: usize,
        start: Instant,
    ) -> Vec<tokio::task::JoinHandle<u128>> {
        (0..n)
            .map(|_| {
                let l = limiter.clone();
                tokio::spawn(async move {
                    l.acquire_wait(None).await.unwrap();
                    start.elapsed().as_millis()
                })
            })
            .collect()
    }

    /// The tasks' times, sorted.
    async fn times(handles: Vec<tokio::task::JoinHandle<u128>>) -> Vec<u128> {
        let mut at = Vec::new();
        for h in handles {
            at.push(h.await.unwrap());
        }
        at.sort_unstable();
        at
    }

    #[tokio::test(start_paused = true)]
    async fn requests_are_spaced_evenly_without_an_initial_burst() {
        let limiter = even(60, 1);
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
        let limiter = even(60, 3);
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
        let limiter = Arc::new(even(120, 1));
        let start = Instant::now();
        let handles = spawn_acquires(&limiter, 8, start);
        let at = times(handles).await;
        assert_eq!(at, vec![0, 505, 1010, 1515, 2020, 2525, 3030, 3535]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_gate_holds_every_task() {
        let limiter = even(0, 1);
        let start = Instant::now();
        limiter.close_gate(limiter.clock().now() + Duration::from_secs(2));
        limiter.acquire_wait(None).await.unwrap();
        assert_eq!(start.elapsed().as_millis(), 2000);
        limiter.acquire_wait(None).await.unwrap();
        assert_eq!(start.elapsed().as_millis(), 2000, "the gate opens for good");
    }

    #[tokio::test(start_paused = true)]
    async fn pacing_resumes_after_the_gate() {
        let limiter = even(60, 1);
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
        let limiter = Arc::new(even(60, 1));
        let start = Instant::now();
        let handles = spawn_acquires(&limiter, 4, start);
        // Let the four book 0, 1010, 2020 and 3030 ms, then close the gate at 500 ms.
        tokio::time::sleep(Duration::from_millis(500)).await;
        limiter.close_gate(limiter.clock().now() + Duration::from_secs(7));
        let at = times(handles).await;
        assert_eq!(
            at,
            vec![0, 7500, 8510, 9520],
            "nobody leaves before the gate"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_beyond_the_deadline_is_refused_without_booking_it() {
        let limiter = even(60, 1);
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
        let limiter = even(60, 1);
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
        let limiter = Arc::new(even(60, 1));
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
            retry_after: None,
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
            retry_after: None,
        });
        for remaining in [1, 0] {
            let t = limiter.acquire(None).await.unwrap();
            t.observe(Signal {
                budget: Some((3, remaining)),
                rate_limited: false,
                success: true,
                retry_after: None,
            });
        }
        // The budget is spent at once; nothing came back, so the fourth waits a window
        // after the answer to the first.
        let fourth = limiter.acquire_wait(None).await.unwrap();
        assert_eq!(start.elapsed().as_millis(), 60_600, "waited {fourth:?}");
    }

    /// Sends one request now and answers it with `remaining` of `limit` (or a 429).
    async fn answered(limiter: &Limiter, limit: u32, remaining: u32, rate_limited: bool) {
        let ticket = limiter.acquire(None).await.unwrap();
        ticket.observe(Signal {
            budget: Some((limit, remaining)),
            rate_limited,
            success: !rate_limited,
            retry_after: None,
        });
    }

    #[tokio::test(start_paused = true)]
    async fn a_budget_that_comes_back_steadily_is_spent_again_at_the_refill_rate() {
        let limiter = limiter(60, 1);
        let start = Instant::now();
        for remaining in (1..60).rev() {
            answered(&limiter, 60, remaining, false).await;
        }
        assert!(!limiter.state().refills);
        // Two seconds later one request finds two left: a bucket gave two back.
        tokio::time::sleep(Duration::from_secs(2)).await;
        answered(&limiter, 60, 2, false).await;
        assert!(limiter.state().refills);
        for remaining in [1, 0] {
            answered(&limiter, 60, remaining, false).await;
        }
        assert_eq!(start.elapsed(), Duration::from_secs(2), "spent at once");
        let waited = limiter.acquire_wait(None).await.unwrap();
        assert_eq!(
            waited,
            Duration::from_millis(1010),
            "the next token, 60 s / 60 later (1 % slower)"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_renewing_at_once_is_no_bucket_and_a_429_forgets_the_rate() {
        let window = limiter(60, 1);
        for remaining in (30..60).rev() {
            answered(&window, 60, remaining, false).await;
        }
        // A shorter window renews: 30 back at once is more than a bucket refills in 1 s.
        tokio::time::sleep(Duration::from_secs(1)).await;
        answered(&window, 60, 59, false).await;
        assert!(!window.state().refills);
        for remaining in (0..59).rev() {
            answered(&window, 60, remaining, false).await;
        }
        let waited = window.acquire_wait(None).await.unwrap();
        assert!(
            waited >= Duration::from_secs(60),
            "a window after the answer the 61st places back: {waited:?}"
        );

        // A bucket learnt, then a 429: the rate is forgotten.
        let bucket = limiter(60, 1);
        answered(&bucket, 60, 59, false).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        answered(&bucket, 60, 59, false).await;
        assert!(bucket.state().refills);
        answered(&bucket, 60, 0, true).await;
        assert!(!bucket.state().refills);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_still_on_the_wire_are_not_taken_for_a_refill() {
        let limiter = limiter(60, 1);
        answered(&limiter, 60, 59, false).await;
        // Two out at once; the second is answered first and the server may not have
        // counted the first yet: 58 left is no refill.
        let first = limiter.acquire(None).await.unwrap();
        let second = limiter.acquire(None).await.unwrap();
        second.observe(Signal {
            budget: Some((60, 58)),
            rate_limited: false,
            success: true,
            retry_after: None,
        });
        assert!(!limiter.state().refills);
        first.observe(Signal {
            budget: Some((60, 57)),
            rate_limited: false,
            success: true,
            retry_after: None,
        });
        assert!(!limiter.state().refills);
    }

    /// Sends one request now and answers it without headers: a success, or a 429 that
    /// closes the gate until now (as the runtime does with its `Retry-After`).
    async fn answered_without_headers(limiter: &Limiter, rate_limited: bool) {
        let ticket = limiter.acquire(None).await.unwrap();
        ticket.observe(Signal {
            budget: None,
            rate_limited,
            success: !rate_limited,
            retry_after: None,
        });
        if rate_limited {
            limiter.close_gate(limiter.clock().now());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn without_headers_429s_halve_the_burst_down_to_the_configured_one() {
        let limiter = limiter(60, 8);
        let mut stats = ClientStats::default();
        limiter.report(&mut stats);
        assert_eq!(
            stats.burst, 60,
            "optimistic: a window of the configured rate"
        );
        let mut halved = Vec::new();
        for _ in 0..4 {
            answered_without_headers(&limiter, true).await;
            limiter.report(&mut stats);
            halved.push(stats.burst);
        }
        assert_eq!(
            halved,
            vec![30, 15, 8, 8],
            "never below the configured burst"
        );
        tokio::time::sleep(Duration::from_secs(61)).await;
        answered_without_headers(&limiter, false).await;
        limiter.report(&mut stats);
        assert_eq!(
            (stats.burst, stats.mode, stats.budget),
            (9, PacingMode::Adaptive, None),
            "one back per clean window"
        );
        // A clean answer within the same window gives nothing back.
        answered_without_headers(&limiter, false).await;
        limiter.report(&mut stats);
        assert_eq!(stats.burst, 9);
    }

    #[tokio::test(start_paused = true)]
    async fn without_headers_the_burst_grows_back_to_the_rate_and_no_further() {
        let limiter = limiter(3, 1);
        let mut stats = ClientStats::default();
        answered_without_headers(&limiter, true).await;
        limiter.report(&mut stats);
        assert_eq!(stats.burst, 1);
        let mut grown = Vec::new();
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_secs(61)).await;
            answered_without_headers(&limiter, false).await;
            limiter.report(&mut stats);
            grown.push(stats.burst);
        }
        assert_eq!(grown, vec![2, 3, 3, 3], "capped at requests_per_minute");
    }

    #[tokio::test(start_paused = true)]
    async fn without_headers_a_window_goes_at_once_then_a_window_after_its_answers() {
        let limiter = limiter(60, 1);
        let start = Instant::now();
        for _ in 0..60 {
            answered_without_headers(&limiter, false).await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "a window's worth at once");
        // The 61st goes beyond the window: the probe, when a bucket of the rate allows it.
        // A window refuses it.
        let probe = limiter.acquire(None).await.unwrap();
        assert_eq!(probe.waited, Duration::from_millis(1010));
        probe.observe(refusal(59));
        limiter.close_gate(limiter.clock().now() + Duration::from_secs(59));
        limiter.acquire_wait(None).await.unwrap();
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(60_600),
            "never more than the rate within a window (1 % wider) of its own answers"
        );
        // Even mode with the same settings paces from the first request.
        let even = even(60, 1);
        even.acquire_wait(None).await.unwrap();
        assert_eq!(
            even.acquire_wait(None).await.unwrap(),
            Duration::from_millis(1010)
        );
    }

    /// A 429 without headers asking to wait `secs`.
    fn refusal(secs: u64) -> Signal {
        Signal {
            budget: None,
            rate_limited: true,
            success: false,
            retry_after: Some(Duration::from_secs(secs)),
        }
    }

    /// A success without headers.
    fn success() -> Signal {
        Signal {
            success: true,
            ..Signal::default()
        }
    }

    /// A limiter of 60/min, burst 1, that sent a window's worth at once (all answered):
    /// the next request is a probe.
    async fn window_spent() -> Limiter {
        let limiter = limiter(60, 1);
        for _ in 0..60 {
            answered_without_headers(&limiter, false).await;
        }
        limiter
    }

    fn model(limiter: &Limiter) -> (QuotaModel, u32) {
        let mut stats = ClientStats::default();
        limiter.report(&mut stats);
        (stats.quota_model, stats.burst)
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_refused_with_a_short_retry_after_learns_a_bucket_and_paces_as_one() {
        let limiter = window_spent().await;
        let start = Instant::now();
        assert_eq!(model(&limiter), (QuotaModel::Unknown, 60));
        let probe = limiter.acquire(None).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(1010));
        probe.observe(refusal(1));
        let bucket = QuotaModel::TokenBucket {
            refill: Duration::from_millis(1010),
        };
        assert_eq!(
            model(&limiter),
            (bucket, 60),
            "the probe was beyond the burst"
        );
        limiter.close_gate(limiter.clock().now() + Duration::from_secs(1));
        // Empty when the gate opens, a token back every 1.01 s; the log holds nothing back,
        // and requests overlap.
        let mut at = Vec::new();
        let mut out = Vec::new();
        for _ in 0..4 {
            out.push(limiter.acquire(None).await.unwrap());
            at.push(start.elapsed().as_millis());
        }
        assert_eq!(at, vec![2010, 3020, 4030, 5040]);
        for ticket in out {
            ticket.observe(success());
        }
        // Idle for a minute: a full bucket of 60 at once, then the refill rate.
        tokio::time::sleep(Duration::from_secs(61)).await;
        let idle = Instant::now();
        for _ in 0..60 {
            answered_without_headers(&limiter, false).await;
        }
        assert_eq!(idle.elapsed(), Duration::ZERO);
        assert_eq!(
            limiter.acquire_wait(None).await.unwrap(),
            Duration::from_millis(1010)
        );
        // A bucket's burst neither grows nor halves on clean minutes; a later 429 proves
        // the model wrong: a window, and the burst halves.
        assert_eq!(model(&limiter), (bucket, 60));
        answered_without_headers(&limiter, true).await;
        assert_eq!(model(&limiter), (QuotaModel::Window, 30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_bucket_asking_for_more_than_the_interval_sets_the_refill() {
        let limiter = window_spent().await;
        limiter.acquire(None).await.unwrap().observe(refusal(2));
        assert_eq!(
            model(&limiter).0,
            QuotaModel::TokenBucket {
                refill: Duration::from_millis(2020)
            }
        );
        // Too long for a bucket of the rate (more than twice its interval, 2 s): a window.
        let limiter = window_spent().await;
        limiter.acquire(None).await.unwrap().observe(refusal(5));
        assert_eq!(model(&limiter), (QuotaModel::Window, 60));
        // No Retry-After: nothing says it is a bucket.
        let limiter = window_spent().await;
        limiter.acquire(None).await.unwrap().observe(Signal {
            retry_after: None,
            ..refusal(1)
        });
        assert_eq!(model(&limiter).0, QuotaModel::Window);
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_retry_after_that_a_window_could_give_is_no_bucket() {
        // The 60 requests are spread over 58.5 s: a window that opened with the first
        // closes 1.5 s after the probe, and may well say "2".
        let spread = limiter(60, 1);
        for _ in 0..60 {
            answered_without_headers(&spread, false).await;
            tokio::time::sleep(Duration::from_millis(991)).await;
        }
        let probe = spread.acquire(None).await.unwrap();
        assert!(
            probe.waited.is_zero(),
            "the bucket of the rate allows it at once"
        );
        probe.observe(refusal(2));
        assert_eq!(model(&spread).0, QuotaModel::Window);
        // Before a window's worth was sent, no window of the rate refuses: a 429 then says
        // the server counts less, whatever its Retry-After; the burst halves.
        let early = limiter(60, 1);
        early.acquire(None).await.unwrap().observe(refusal(1));
        assert_eq!(model(&early), (QuotaModel::Window, 30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_refused_with_a_long_retry_after_learns_a_window_for_good() {
        let limiter = window_spent().await;
        let start = Instant::now();
        let probe = limiter.acquire(None).await.unwrap();
        probe.observe(refusal(59));
        assert_eq!(
            model(&limiter),
            (QuotaModel::Window, 60),
            "the probe's 429 does not halve the burst"
        );
        limiter.close_gate(limiter.clock().now() + Duration::from_secs(59));
        // The gate opens at 60.01 s; the log then lets 59 out at 60.6 s (a window after
        // the first answers), the 60th at 61.61 s (a window after the probe's answer)...
        let mut at = Vec::new();
        for _ in 0..60 {
            let ticket = limiter.acquire(None).await.unwrap();
            at.push(start.elapsed().as_millis());
            ticket.observe(success());
        }
        assert!(at[..59].iter().all(|&t| t == 60_600), "{at:?}");
        assert_eq!(at[59], 61_610);
        // ...and the next waits for the log: no probe ever again.
        limiter.acquire(None).await.unwrap();
        assert_eq!(start.elapsed().as_millis(), 121_200);
        assert_eq!(model(&limiter).0, QuotaModel::Window);
    }

    #[tokio::test(start_paused = true)]
    async fn probes_that_pass_go_one_at_a_time_within_a_bucket_of_the_rate() {
        let limiter = Arc::new(window_spent().await);
        let start = Instant::now();
        let first = limiter.acquire(None).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(1010));
        // While the probe is on the wire, nobody else goes beyond the window.
        let handles = spawn_acquires(&limiter, 1, start);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!handles[0].is_finished(), "one probe at a time");
        first.observe(success());
        assert_eq!(times(handles).await, vec![6010], "at once after the answer");
        // That one was answered without a word (dropped): nothing learnt from it.
        assert_eq!(model(&limiter).0, QuotaModel::Lenient { passed: 1 });
        // Within a bucket of 60 tokens at the rate, over all 62 requests so far: it refilled
        // while the probe was out, three more are due at once, the next at 6.06 s, then one
        // per 1.01 s.
        let mut at = Vec::new();
        for _ in 0..5 {
            let ticket = limiter.acquire(None).await.unwrap();
            at.push(start.elapsed().as_millis());
            ticket.observe(success());
        }
        assert_eq!(at, vec![6010, 6010, 6010, 6060, 7070]);
        assert_eq!(model(&limiter).0, QuotaModel::Lenient { passed: 6 });
    }

    #[tokio::test(start_paused = true)]
    async fn even_mode_and_a_shared_quota_never_probe() {
        let even = even(60, 60);
        for _ in 0..60 {
            answered_without_headers(&even, false).await;
        }
        assert_eq!(
            even.acquire_wait(None).await.unwrap(),
            Duration::from_millis(1010)
        );
        let shared = limiter(60, 60).without_probing();
        for _ in 0..60 {
            answered_without_headers(&shared, false).await;
        }
        assert_eq!(
            shared.acquire_wait(None).await.unwrap(),
            Duration::from_millis(60_600),
            "the log holds it: no probe"
        );
        for l in [&even, &shared] {
            assert_eq!(model(l).0, QuotaModel::Unknown);
        }
    }

    #[test]
    fn stats_serialize_with_the_mode_and_the_model() {
        let stats = ClientStats {
            quota_model: QuotaModel::TokenBucket {
                refill: Duration::from_millis(1010),
            },
            ..ClientStats::default()
        };
        let json = serde_json::to_value(stats).unwrap();
        assert_eq!(json["mode"], "Adaptive");
        assert_eq!(
            json["quota_model"],
            serde_json::json!({"kind": "token_bucket", "refill": {"secs": 1, "nanos": 10_000_000}})
        );
        let lenient = serde_json::to_value(QuotaModel::Lenient { passed: 3 }).unwrap();
        assert_eq!(lenient, serde_json::json!({"kind": "lenient", "passed": 3}));
        assert_eq!(
            serde_json::to_value(QuotaModel::Window).unwrap(),
            serde_json::json!({"kind": "window"})
        );
    }

    #[tokio::test(start_paused = true)]
    async fn while_probing_one_request_at_a_time_is_on_the_wire() {
        let probing = limiter(60, 1);
        let first = probing.acquire(None).await.unwrap();
        let held = tokio::time::timeout(Duration::from_secs(5), probing.acquire(None)).await;
        assert!(held.is_err(), "the second waits for the first's answer");
        first.observe(Signal {
            budget: None,
            rate_limited: false,
            success: true,
            retry_after: None,
        });
        let next = tokio::time::timeout(Duration::from_millis(1), probing.acquire(None)).await;
        assert!(next.is_ok(), "an answer lets the next one out at once");

        // At the configured burst there is no probing: requests overlap as before.
        let floor = limiter(60, 4);
        for _ in 0..4 {
            answered_without_headers(&floor, true).await;
        }
        let mut stats = ClientStats::default();
        floor.report(&mut stats);
        assert_eq!(stats.burst, 4);
        // Idle long enough for the whole burst to be free again.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let _a = floor.acquire(None).await.unwrap();
        let b = tokio::time::timeout(Duration::from_millis(1), floor.acquire(None)).await;
        assert!(
            b.is_ok(),
            "two on the wire at once within the configured burst"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_headers_a_429_holds_every_task_also_those_waiting() {
        let limiter = Arc::new(limiter(60, 1));
        let start = Instant::now();
        let first = limiter.acquire(None).await.unwrap();
        let handles = spawn_acquires(&limiter, 4, start);
        // The four wait for the first's answer; it is a 429 with a 7-s gate.
        tokio::time::sleep(Duration::from_millis(500)).await;
        first.observe(Signal {
            budget: None,
            rate_limited: true,
            success: false,
            retry_after: None,
        });
        // Until the runtime closes the gate, the 429 alone holds them.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert!(handles.iter().all(|h| !h.is_finished()), "held by the 429");
        limiter.close_gate(limiter.clock().now() + Duration::from_secs(7));
        let at = times(handles).await;
        assert_eq!(
            at,
            vec![8500, 9510, 10_520, 11_530],
            "nobody leaves before the gate; after it, even pacing: no burst is free"
        );
        let mut stats = ClientStats::default();
        limiter.report(&mut stats);
        assert_eq!(stats.burst, 30);
    }

    #[tokio::test(start_paused = true)]
    async fn even_mode_keeps_the_configured_burst_and_does_not_probe() {
        let limiter = even(60, 8);
        let mut stats = ClientStats::default();
        limiter.report(&mut stats);
        assert_eq!((stats.burst, stats.mode), (8, PacingMode::Even));
        answered_without_headers(&limiter, true).await;
        limiter.report(&mut stats);
        assert_eq!(stats.burst, 8, "429s do not change even pacing");
    }

    #[tokio::test(start_paused = true)]
    async fn a_limiter_without_probing_keeps_the_configured_burst() {
        let limiter = limiter(60, 2).without_probing();
        let mut stats = ClientStats::default();
        limiter.report(&mut stats);
        assert_eq!(stats.burst, 2);
        answered_without_headers(&limiter, true).await;
        tokio::time::sleep(Duration::from_secs(61)).await;
        answered_without_headers(&limiter, false).await;
        limiter.report(&mut stats);
        assert_eq!(stats.burst, 2, "never above the configured burst");
    }
}
