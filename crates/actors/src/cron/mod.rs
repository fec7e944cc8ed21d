//! Cron: scheduled work that survives restarts and wakes sleeping VMs.
//!
//! - [`job`]: what a job is (`scheduleCron`'s argument, checked; its stored form).
//! - [`schedule`]: when it runs (croner patterns, one-shot times, time zones).
//! - [`jobs`]: scheduling, listing, cancelling, and reading runs (the actions' work).
//! - [`scheduler`]: the server's one plan of every job of every VM, awake or asleep.
//! - [`run`]: what happens when a job is due (overlap, waking the VM, the action, `cronEvent`,
//!   the run's record; the missed-run policy).
//! - [`clock`]: the time cron runs on (a manual one in tests).
//!
//! Jobs live in each VM's SQLite file, with an index of when each is due in the registry
//! (`agentvm_store::cron`), so they outlive the VM's sleep and the server's restarts. A job
//! due on a sleeping VM wakes it (`vmBooted`), and a running job keeps it awake.
//!
//! `cronEvent {event: {type, jobId, time, runId, durationMs?, error?}}` is broadcast and kept
//! in the VM's event log: `cron:fire` when a run starts, then `cron:complete` or `cron:error`
//! (a command that exits non-zero, a session whose agent fails, a VM that cannot start).
//! Times are milliseconds since the Unix epoch. The run itself — an exec's exit code and
//! output, a session job's session id (its transcript is in `getSessionEvents`) — is read
//! with `listCronRuns`.

pub mod clock;
pub mod job;
pub mod jobs;
pub mod run;
pub mod schedule;
pub mod scheduler;

pub use clock::{Clock, ManualClock, SystemClock};
pub use scheduler::Scheduler;

/// Why a cron action was refused.
#[derive(Debug, thiserror::Error)]
pub enum CronError {
    /// The schedule is malformed, its time zone unknown, or a one-shot is in the past.
    #[error(transparent)]
    Schedule(#[from] schedule::ScheduleError),
    /// The VM has as many jobs as its preset allows.
    #[error("this VM has {active} cron jobs, the most its preset allows ({limit}): cancel one first")]
    TooManyJobs { limit: u64, active: u64 },
    /// The pattern runs more often than the preset allows.
    #[error("schedule {schedule:?} runs every {} s at times; this VM's preset allows at most one run every {} s", interval_ms / 1000, min_ms / 1000)]
    TooFrequent { schedule: String, interval_ms: u64, min_ms: u64 },
}

/// A preset's limits on cron (`[actors.NAME.cron]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CronLimits {
    /// Most jobs a VM has that will run again.
    pub max_jobs: u64,
    /// Shortest time between two runs of a pattern.
    pub min_interval_ms: u64,
}

/// Default [`CronLimits::max_jobs`].
pub const DEFAULT_MAX_JOBS: u64 = 100;
/// Default [`CronLimits::min_interval_ms`]: a minute, a five-field pattern's finest step.
pub const DEFAULT_MIN_INTERVAL_MS: u64 = 60_000;

impl Default for CronLimits {
    fn default() -> Self {
        CronLimits { max_jobs: DEFAULT_MAX_JOBS, min_interval_ms: DEFAULT_MIN_INTERVAL_MS }
    }
}
