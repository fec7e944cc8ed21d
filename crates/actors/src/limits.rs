//! Server-wide caps that protect the host from clients creating VMs without bound: a cap on the
//! number of VMs (enforced by the registry, exactly, see `agentvm_store::Registry`) and a token
//! bucket on how fast new VMs are created (here).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Default [`crate::Settings::max_vms`]: a sleeping VM costs the server no descriptor and at
/// most the in-memory tail of its event stream (64 KiB), so 10,000 fit in well under 1 GiB;
/// running VMs are bounded by the machine (each has its own memory cgroup).
pub const DEFAULT_MAX_VMS: u64 = 10_000;
/// Default [`crate::Settings::creates_per_second`]: well above what one client creating VMs
/// one after the other reaches here (~7 ms per create + first exec, ~140/s), so benchmarks and
/// tests never meet it, but a runaway loop of many clients does.
pub const DEFAULT_CREATES_PER_SECOND: f64 = 200.0;
/// Default [`crate::Settings::create_burst`]: VMs that may be created at once after a quiet
/// period.
pub const DEFAULT_CREATE_BURST: u32 = 1000;

/// A token bucket: `burst` tokens, refilled at `per_second`. `per_second == 0` means unlimited.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    state: Mutex<Bucket>,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl RateLimiter {
    pub fn new(per_second: f64, burst: u32) -> RateLimiter {
        let burst = f64::from(burst.max(1));
        RateLimiter { per_second, burst, state: Mutex::new(Bucket { tokens: burst, refilled: Instant::now() }) }
    }

    /// Takes a token, or says how long until one is available.
    pub fn try_take(&self) -> Result<(), Duration> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let mut bucket = self.state.lock().unwrap();
        let now = Instant::now();
        let earned = now.duration_since(bucket.refilled).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + earned).min(self.burst);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let limiter = RateLimiter::new(10.0, 3);
        for _ in 0..3 {
            assert!(limiter.try_take().is_ok());
        }
        let wait = limiter.try_take().unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100), "{wait:?}");
        std::thread::sleep(wait + Duration::from_millis(5));
        assert!(limiter.try_take().is_ok());
        assert!(RateLimiter::new(0.0, 1).try_take().is_ok(), "0 is unlimited");
    }
}
