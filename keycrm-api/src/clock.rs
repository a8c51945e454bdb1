//! The client's source of time, replaceable so that tests can run waits instantly.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

/// A boxed sleep future.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Monotonic time and sleeping, as the client's quota pacing and retries see them.
///
/// The default, [`TokioClock`], follows `tokio::time` (so a paused tokio clock works too);
/// [`VirtualClock`] makes every wait instant and only advances its own counter, for tests
/// that assert how long the client *would* have waited.
pub trait Clock: fmt::Debug + Send + Sync + 'static {
    /// Time elapsed since some fixed origin of this clock.
    fn now(&self) -> Duration;

    /// Waits for `duration`.
    fn sleep(&self, duration: Duration) -> Sleep;

    /// The wall-clock time on this clock, used to read a `Retry-After` given as an HTTP
    /// date. The default is the system time; the clocks of this module derive it from their
    /// own time, so that a paused or virtual clock reads dates consistently.
    fn wall_time(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// `base + elapsed`, or `base` when the sum leaves the range of `SystemTime`.
fn wall_after(base: SystemTime, elapsed: Duration) -> SystemTime {
    base.checked_add(elapsed).unwrap_or(base)
}

/// The real clock, through `tokio::time`.
///
/// Its [`wall_time`](Clock::wall_time) is the system time at creation plus the `tokio::time`
/// elapsed since then, so under a paused tokio clock dates advance with the paused time.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: tokio::time::Instant,
    wall_origin: SystemTime,
}

impl TokioClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
            wall_origin: SystemTime::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        // `tokio::time::sleep` saturates at its own far-future limit, so no duration panics.
        Box::pin(tokio::time::sleep(duration))
    }

    fn wall_time(&self) -> SystemTime {
        wall_after(self.wall_origin, self.now())
    }
}

/// A clock that never waits: `sleep` advances its time at once. It records each sleep.
///
/// Its [`wall_time`](Clock::wall_time) is the system time at creation plus its own time.
/// Sums saturate, so no duration makes it panic.
#[derive(Debug)]
pub struct VirtualClock {
    state: Mutex<VirtualState>,
    wall_origin: SystemTime,
}

#[derive(Debug, Default)]
struct VirtualState {
    now: Duration,
    sleeps: Vec<Duration>,
}

impl Default for VirtualClock {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            wall_origin: SystemTime::now(),
        }
    }
}

impl VirtualClock {
    /// A virtual clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every sleep requested so far, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.state().sleeps.clone()
    }

    /// Moves the clock forward without a sleep (time passing outside the client).
    pub fn advance(&self, by: Duration) {
        let mut state = self.state();
        state.now = state.now.saturating_add(by);
    }

    /// The state; a panic elsewhere while it was held leaves plain data behind, so a
    /// poisoned lock is used as is.
    fn state(&self) -> MutexGuard<'_, VirtualState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Duration {
        self.state().now
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        let mut state = self.state();
        state.now = state.now.saturating_add(duration);
        state.sleeps.push(duration);
        Box::pin(std::future::ready(()))
    }

    fn wall_time(&self) -> SystemTime {
        wall_after(self.wall_origin, self.now())
    }
}
