//! Time as an input. Every decision takes `now` from a [`Clock`], so tests can move time on
//! instead of sleeping through cooldowns.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// A clock that moves only when told to, for tests and the demo.
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// Starts at the current wall-clock time, so stored timestamps look real.
    pub fn starting_now() -> ManualClock {
        ManualClock(AtomicU64::new(SystemClock.now_ms()))
    }

    /// Starts at the given milliseconds since the epoch.
    pub fn at(ms: u64) -> ManualClock {
        ManualClock(AtomicU64::new(ms))
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}
