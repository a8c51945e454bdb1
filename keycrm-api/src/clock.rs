//! The client's source of time, replaceable so that tests can run waits instantly.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

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
}

/// The real clock, through `tokio::time`.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
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
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A clock that never waits: `sleep` advances its time at once. It records each sleep.
#[derive(Debug, Default)]
pub struct VirtualClock {
    state: Mutex<VirtualState>,
}

#[derive(Debug, Default)]
struct VirtualState {
    now: Duration,
    sleeps: Vec<Duration>,
}

impl VirtualClock {
    /// A virtual clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every sleep requested so far, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.state
            .lock()
            .expect("clock lock poisoned")
            .sleeps
            .clone()
    }

    /// Moves the clock forward without a sleep (time passing outside the client).
    pub fn advance(&self, by: Duration) {
        self.state.lock().expect("clock lock poisoned").now += by;
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Duration {
        self.state.lock().expect("clock lock poisoned").now
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        let mut state = self.state.lock().expect("clock lock poisoned");
        state.now += duration;
        state.sleeps.push(duration);
        Box::pin(std::future::ready(()))
    }
}
