//! The executor's clock: wall time for timestamps and the context object,
//! and sleeping for Wait states and retry delays.
//!
//! [`TokioClock`] follows tokio's timer, so a runtime started with paused
//! time (`tokio::time::pause`, `#[tokio::test(start_paused = true)]`) makes
//! every wait take no real time while keeping the order of timers and
//! timeouts exactly as in real time.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Where the executor gets the time and waits. [`TokioClock`] is the one
/// firebreak runs on, in real or tokio-paused time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time: event timestamps, `EnteredTime`, the execution's
    /// start, and how long a Wait or timeout has left.
    fn now(&self) -> DateTime<Utc>;
    /// Waits: Wait states and retry delays.
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>>;
    /// Resolves when a deadline (TimeoutSeconds) passes. The same as
    /// `sleep` for a real clock; a clock that skips waits must not fire
    /// deadlines at once, so it can override this.
    fn deadline(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        self.sleep(d)
    }
}

/// Wall time anchored when the clock is made, advanced by tokio's timer.
#[derive(Debug, Clone)]
pub struct TokioClock {
    wall: DateTime<Utc>,
    instant: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that starts at the current wall time.
    pub fn new() -> TokioClock {
        TokioClock::starting_at(Utc::now())
    }

    /// A clock whose `now()` starts at `wall` (for reproducible tests).
    pub fn starting_at(wall: DateTime<Utc>) -> TokioClock {
        TokioClock {
            wall,
            instant: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = self.instant.elapsed();
        // A paused clock can be advanced past any date (a Wait of 10^13
        // seconds): the time saturates instead of overflowing.
        chrono::Duration::from_std(elapsed)
            .ok()
            .and_then(|d| self.wall.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(tokio::time::sleep(d))
    }
}
