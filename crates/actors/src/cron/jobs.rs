//! The work behind the cron actions: scheduling (checked against the schedule's rules and the
//! preset's limits), listing, cancelling, and reading runs. None of them boots the VM: they
//! read and write its SQLite file (opened for the call if the VM sleeps).

use std::sync::Arc;

use agentvm_store::{CronJob, CronRun};
use serde_json::{json, Value};

use super::job::{Action, JobSpec};
use super::run::index;
use super::schedule::{format_ms, Schedule, ScheduleError};
use super::CronError;
use crate::actors::{blocking, Actor, Actors};
use crate::error::ActorError;

/// One-shot jobs that ran are listed for this long, then forgotten (their runs stay).
pub const FINISHED_ONE_SHOT_KEPT_MS: u64 = 7 * 86_400_000;

/// `scheduleCron`: adds (or replaces, for an id in use) a job; returns its id.
pub async fn schedule(
    actors: &Arc<Actors>,
    actor: &Arc<Actor>,
    id: Option<String>,
    spec: JobSpec,
) -> Result<String, ActorError> {
    let preset = actor.preset()?;
    let limits = preset.cron;
    let now = actors.cron().clock().now_ms();
    let (schedule, timezone) = (spec.schedule.clone(), spec.timezone.clone());
    // Searching a rare pattern's next times takes milliseconds: not on the runtime's threads.
    let next = blocking(move || first_run(&schedule, timezone.as_deref(), now, limits.min_interval_ms)).await??;
    if let Action::Session { agent_type, .. } = &spec.action {
        if let Some(allowed) = &preset.sessions.agents {
            if !allowed.contains(agent_type) {
                return Err(ActorError::InvalidArguments(format!(
                    "scheduleCron: agent `{agent_type}` is not allowed for `{}` VMs (allowed: {})",
                    preset.name,
                    allowed.join(", ")
                )));
            }
        }
        if actor.agents().get(agent_type).is_none() {
            return Err(ActorError::InvalidArguments(format!("scheduleCron: Unknown agent type: {agent_type}")));
        }
    }
    let id = id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let spec_text =
        serde_json::to_string(&spec).map_err(|e| ActorError::Internal(format!("encoding a cron job: {e}")))?;
    let _changing = actor.cron().changing.lock().await;
    let (file, awake, registry) = (Arc::clone(actor.event_file()), actor.is_awake(), Arc::clone(actors.registry()));
    let (actor_id, job_id, max_jobs) = (actor.id.clone(), id.clone(), limits.max_jobs);
    let forget_before = now.saturating_sub(FINISHED_ONE_SHOT_KEPT_MS);
    // One trip to a blocking thread, the VM's file open throughout.
    let put = blocking(move || {
        file.with(awake, |store| {
            let existing = store.cron_job(&job_id)?;
            let old_next = existing.as_ref().and_then(|j| j.next_run_ms);
            let job = CronJob {
                id: job_id.clone(),
                spec: spec_text,
                created_ms: existing.as_ref().map_or(now, |j| j.created_ms),
                next_run_ms: Some(next),
                last_run_ms: None,
                run_count: 0,
            };
            // Indexed before it is written (the index may name a job that is not there, never
            // miss one); no later than the job's old time if it replaces one, so nothing is late.
            registry.index_cron_job(&actor_id, &job_id, Some(old_next.map_or(next, |old| old.min(next))))?;
            let put = store.put_cron_job(&job, max_jobs, forget_before)?;
            // Refused: the index as it was; else the new time.
            registry.index_cron_job(&actor_id, &job_id, if put.is_ok() { Some(next) } else { old_next })?;
            Ok(put)
        })
    })
    .await??;
    if let Err(active) = put {
        return Err(CronError::TooManyJobs { limit: max_jobs, active }.into());
    }
    actors.cron().plan(&actor.id, &id, Some(next));
    Ok(id)
}

/// When a new job first runs: its schedule checked (a one-shot in the future, a pattern that runs
/// again and not more often than `min_interval_ms`).
fn first_run(schedule: &str, timezone: Option<&str>, now: u64, min_interval_ms: u64) -> Result<u64, CronError> {
    let parsed = Schedule::parse(schedule, timezone)?;
    if let Some(at) = parsed.once_at() {
        if at <= now {
            return Err(ScheduleError::Past { schedule: schedule.to_string(), now: format_ms(now) }.into());
        }
        return Ok(at);
    }
    if let Some(gap) = parsed.shortest_interval(now) {
        if gap < min_interval_ms {
            return Err(CronError::TooFrequent {
                schedule: schedule.to_string(),
                interval_ms: gap,
                min_ms: min_interval_ms,
            });
        }
    }
    parsed.next_after(now).ok_or_else(|| {
        ScheduleError::Invalid { schedule: schedule.to_string(), reason: "it never runs again".into() }.into()
    })
}

/// `cancelCronJob`: the job runs no more (a run in progress ends as it would, queued ones are
/// dropped). An unknown id is not an error.
pub async fn cancel(actors: &Arc<Actors>, actor: &Arc<Actor>, id: &str) -> Result<(), ActorError> {
    let _changing = actor.cron().changing.lock().await;
    let (file, awake, job) = (Arc::clone(actor.event_file()), actor.is_awake(), id.to_string());
    blocking(move || file.with(awake, |s| s.remove_cron_job(&job))).await??;
    index(actors, actor, id, None).await?;
    actors.cron().plan(&actor.id, id, None);
    actor.cron().cancel(id);
    Ok(())
}

/// `listCronJobs`: `{id, schedule, timezone, action, overlap, lastRun, nextRun, runCount,
/// running, createdAt}` per job, times in milliseconds since the Unix epoch (`null` when none).
pub async fn list(actor: &Arc<Actor>) -> Result<Value, ActorError> {
    // As in [`runs`]: a run that just started is seen running.
    let _changing = actor.cron().changing.lock().await;
    let (file, awake) = (Arc::clone(actor.event_file()), actor.is_awake());
    let jobs = blocking(move || file.with(awake, |s| s.cron_jobs())).await??;
    let list = jobs
        .into_iter()
        .filter_map(|job| {
            let spec: JobSpec = serde_json::from_str(&job.spec).ok()?;
            Some(json!({
                "id": job.id,
                "schedule": spec.schedule,
                "timezone": spec.timezone.as_deref().unwrap_or("UTC"),
                "action": spec.action,
                "overlap": spec.overlap.name(),
                "lastRun": job.last_run_ms,
                "nextRun": job.next_run_ms,
                "runCount": job.run_count,
                "running": actor.cron().is_running(&job.id),
                "createdAt": job.created_ms,
            }))
        })
        .collect();
    Ok(Value::Array(list))
}

/// `listCronRuns({jobId?, limit?})`: the newest runs first: `{runId, jobId, scheduledTime,
/// startedAt, finishedAt, durationMs, status, exitCode, stdout, stderr, sessionId, error}`.
/// A run recorded as running that no longer runs (the server stopped during it) says
/// `interrupted`.
pub async fn runs(actor: &Arc<Actor>, job_id: Option<String>, limit: u64) -> Result<Value, ActorError> {
    // Runs start under this lock (recorded, then marked live), and the live ones are noted
    // before the file is read: a run is called interrupted only if it was recorded as running
    // and was not live when the reading began (one that ends meanwhile was live).
    let _changing = actor.cron().changing.lock().await;
    let live = actor.cron().live_runs();
    let (file, awake) = (Arc::clone(actor.event_file()), actor.is_awake());
    let runs: Vec<CronRun> = blocking(move || file.with(awake, |s| s.cron_runs(job_id.as_deref(), limit))).await??;
    let list = runs
        .into_iter()
        .map(|run| {
            let status = if run.end.status == "running" && !live.contains(&run.run_id) {
                "interrupted".to_string()
            } else {
                run.end.status
            };
            json!({
                "runId": run.run_id,
                "jobId": run.job_id,
                "scheduledTime": run.scheduled_ms,
                "startedAt": run.started_ms,
                "finishedAt": run.finished_ms,
                "durationMs": run.end.duration_ms,
                "status": status,
                "exitCode": run.end.exit_code,
                "stdout": run.end.stdout,
                "stderr": run.end.stderr,
                "sessionId": run.end.session_id,
                "error": run.end.error,
            })
        })
        .collect();
    Ok(Value::Array(list))
}
