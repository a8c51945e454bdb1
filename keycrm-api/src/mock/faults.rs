//! Faults injected on demand: error answers, latency, dropped connections and lost
//! responses.

use std::collections::VecDeque;
use std::time::Duration;

use super::seed::SplitMix64;

/// What the next request gets instead of a normal answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// An error answer with this status, without touching the state.
    Status(u16),
    /// The connection is closed without an answer, without touching the state.
    Drop,
}

/// The faults that are armed.
#[derive(Debug)]
pub(crate) struct FaultState {
    fail_next: VecDeque<u16>,
    share: Option<(f64, u16, SplitMix64)>,
    drop_next: u32,
    /// Extra delay on every answer.
    pub latency: Duration,
    /// How many of the next successful creates have their answer delayed.
    pub lose_creates: u32,
    /// A seeded share of successful creates whose answer is delayed.
    lose_share: Option<(f64, SplitMix64)>,
    /// How long a lost answer is held back.
    pub lost_delay: Duration,
    /// How many faults were served (error answers, drops and lost answers).
    pub served: u64,
}

impl FaultState {
    pub fn new(lost_delay: Duration) -> Self {
        Self {
            fail_next: VecDeque::new(),
            share: None,
            drop_next: 0,
            latency: Duration::ZERO,
            lose_creates: 0,
            lose_share: None,
            lost_delay,
            served: 0,
        }
    }

    pub fn fail_next(&mut self, n: usize, status: u16) {
        self.fail_next.extend(std::iter::repeat_n(status, n));
    }

    pub fn fail_share(&mut self, share: f64, status: u16, seed: u64) {
        self.share = Some((share.clamp(0.0, 1.0), status, SplitMix64::new(seed)));
    }

    pub fn lose_share(&mut self, share: f64, seed: u64) {
        self.lose_share = Some((share.clamp(0.0, 1.0), SplitMix64::new(seed)));
    }

    /// Whether the answer to this successful create is lost: the counted ones first, then
    /// the seeded share.
    pub fn lose_this_create(&mut self) -> bool {
        if self.lose_creates > 0 {
            self.lose_creates -= 1;
            return true;
        }
        match &mut self.lose_share {
            Some((share, rng)) => rng.next_f64() < *share,
            None => false,
        }
    }

    pub fn drop_next(&mut self, n: u32) {
        self.drop_next += n;
    }

    /// Disarms everything (the lost-answer delay setting stays).
    pub fn clear(&mut self) {
        let lost_delay = self.lost_delay;
        let served = self.served;
        *self = Self::new(lost_delay);
        self.served = served;
    }

    /// The fault for the request being handled, if any: dropped connections first, then
    /// the queued failures, then the seeded share.
    pub fn next(&mut self) -> Option<Fault> {
        let fault = if self.drop_next > 0 {
            self.drop_next -= 1;
            Some(Fault::Drop)
        } else if let Some(status) = self.fail_next.pop_front() {
            Some(Fault::Status(status))
        } else if let Some((share, status, rng)) = &mut self.share {
            (rng.next_f64() < *share).then_some(Fault::Status(*status))
        } else {
            None
        };
        if fault.is_some() {
            self.served += 1;
        }
        fault
    }
}
