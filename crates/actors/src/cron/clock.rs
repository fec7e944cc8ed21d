//! The time cron runs on. The server uses the system clock; tests start the server with a
//! manual clock (`agentvm serve --manual-clock START`) that stands still until it is moved, so
//! that "every minute" is tested without waiting a minute.
//!
//! Only cron reads this clock: when a job is due, the `time` of its events, whether a one-shot
//! is in the past. Durations (`durationMs`) are measured with the monotonic clock, and
//! everything else in the server (preview expiry, idle sleep) keeps the system clock.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// A source of wall-clock time, in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;

    /// Resolves once the clock may have reached `at_ms` (or jumped): callers check again.
    fn wait_until(&self, at_ms: u64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The system's clock.
pub struct SystemClock;

/// Longest single wait on the system clock: a wall clock that jumps (NTP, a suspended
/// machine) is noticed within this long.
const SYSTEM_WAIT_MAX: Duration = Duration::from_secs(30);

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        crate::actors::now_ms()
    }

    fn wait_until(&self, at_ms: u64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let wait = Duration::from_millis(at_ms.saturating_sub(self.now_ms())).min(SYSTEM_WAIT_MAX);
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock that stands still until [`ManualClock::set`] moves it (tests).
pub struct ManualClock {
    now: AtomicU64,
    moved: Notify,
}

impl ManualClock {
    pub fn new(start_ms: u64) -> ManualClock {
        ManualClock { now: AtomicU64::new(start_ms), moved: Notify::new() }
    }

    /// Sets the time (forwards or backwards) and wakes whoever waits on the clock.
    pub fn set(&self, now_ms: u64) {
        self.now.store(now_ms, Ordering::SeqCst);
        self.moved.notify_waiters();
    }

    /// Moves the clock forwards by `by_ms`; returns the new time.
    pub fn advance(&self, by_ms: u64) -> u64 {
        let now = self.now.fetch_add(by_ms, Ordering::SeqCst).saturating_add(by_ms);
        self.moved.notify_waiters();
        now
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }

    fn wait_until(&self, at_ms: u64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let moved = self.moved.notified();
            let mut moved = std::pin::pin!(moved);
            moved.as_mut().enable();
            if self.now_ms() < at_ms {
                moved.await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_manual_clock_wakes_its_waiters_when_moved() {
        let clock = Arc::new(ManualClock::new(1_000));
        let waiter = {
            let clock = Arc::clone(&clock);
            tokio::spawn(async move {
                while clock.now_ms() < 5_000 {
                    clock.wait_until(5_000).await;
                }
                clock.now_ms()
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert_eq!(clock.advance(1_000), 2_000);
        clock.set(5_000);
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap(), 5_000);
        // Already reached: no wait at all.
        tokio::time::timeout(Duration::from_secs(1), clock.wait_until(10)).await.unwrap();
    }
}
