//! Running a due job: checking it against the VM's file, applying its overlap rule, waking the
//! VM, running the action, and telling everyone (`cronEvent`) and the run's record.
//!
//! A job that comes due while its previous run is still going: with `overlap = "allow"` both
//! run, with `"skip"` the new one does not run, with `"queue"` it starts when the running one
//! ends (at most [`MAX_QUEUED`] wait; further ones are skipped; and at most [`MAX_RUNNING`]
//! runs of one job go at once whatever the rule). A running job holds an
//! activity mark on its actor, so the VM stays awake until the run ends.
//!
//! **Missed runs.** A job is run once for all the times it was due while it could not run (the
//! server was down, or busy waking many VMs): when the scheduler sees it due, it runs it once
//! and plans the next time after *now*. The same holds for one-shots whose time passed while
//! the server was down: they run once, at start.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use agentvm_store::{CronJob, RunEnd, RunStart};
use agentvm_vm::{ExecOptions, VmEvent};
use serde_json::json;

use super::job::{Action, JobSpec, Overlap};
use super::schedule::Schedule;
use crate::actors::{blocking, Actor, Actors};
use crate::error::ActorError;

/// Most runs of one job waiting for the running one (`overlap = "queue"`).
pub const MAX_QUEUED: usize = 16;
/// Most runs of one job going at once (`overlap = "allow"`): a job that hangs every time does
/// not pile up runs without end; further ones are skipped.
pub const MAX_RUNNING: usize = 16;
/// Most VMs woken at once by the scheduler (many jobs due at the same minute on sleeping VMs
/// boot a few at a time rather than all together).
pub const PARALLEL_WAKES: usize = 16;

/// What runs now on one actor: per job, its running runs and the due times of queued ones.
#[derive(Default)]
pub struct ActorCron {
    jobs: Mutex<HashMap<String, JobState>>,
    /// Orders changes to the actor's jobs (schedule, cancel, the start of a run) so that the
    /// VM's file, the registry's index and the plan agree.
    pub(crate) changing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct JobState {
    running: Vec<u64>,
    queued: VecDeque<u64>,
}

impl ActorCron {
    /// Whether a run of `job_id` is going.
    pub fn is_running(&self, job_id: &str) -> bool {
        self.running(job_id) > 0
    }

    /// How many runs of `job_id` are going.
    pub fn running(&self, job_id: &str) -> usize {
        self.jobs.lock().unwrap().get(job_id).map_or(0, |s| s.running.len())
    }

    /// The runs going now (a stored run that says `running` but is not among them ended with
    /// the server that ran it).
    pub fn live_runs(&self) -> std::collections::HashSet<u64> {
        self.jobs.lock().unwrap().values().flat_map(|s| s.running.iter().copied()).collect()
    }

    /// Drops the queued runs of a cancelled job.
    pub fn cancel(&self, job_id: &str) {
        if let Some(state) = self.jobs.lock().unwrap().get_mut(job_id) {
            state.queued.clear();
        }
    }
}

/// A due entry of the scheduler: `job_id` of `actor_id`, due at `due_ms`.
pub(crate) async fn fire(actors: &Arc<Actors>, actor_id: &str, job_id: &str, due_ms: u64) {
    let registry = Arc::clone(actors.registry());
    let Ok(actor) = actors.by_id(actor_id) else {
        // The actor is gone: its index rows went with it, unless it was destroyed mid-way.
        let (a, j) = (actor_id.to_string(), job_id.to_string());
        let _ = blocking(move || registry.index_cron_job(&a, &j, None)).await;
        return;
    };
    if actor.check_usable().is_err() {
        return;
    }
    if let Err(e) = fire_on(actors, &actor, job_id, due_ms).await {
        // The VM's file could not be read or written (a full disk): try again in a minute.
        tracing::error!(actor = %actor.id, job = job_id, "cron: {e}");
        let retry = actors.cron().clock().now_ms().saturating_add(60_000);
        actors.cron().plan(&actor.id, job_id, Some(retry));
    }
}

async fn fire_on(actors: &Arc<Actors>, actor: &Arc<Actor>, job_id: &str, due_ms: u64) -> Result<(), ActorError> {
    let scheduler = actors.cron();
    let _changing = actor.cron().changing.lock().await;
    let Some(job) = read_job(actor, job_id).await? else {
        index(actors, actor, job_id, None).await?;
        return Ok(());
    };
    match job.next_run_ms {
        None => return index(actors, actor, job_id, None).await,
        // The index was early (a run moved the job on before the index followed): correct it.
        Some(next) if next > due_ms => {
            index(actors, actor, job_id, Some(next)).await?;
            scheduler.plan(&actor.id, job_id, Some(next));
            return Ok(());
        }
        Some(_) => {}
    }
    let now = scheduler.clock().now_ms();
    let spec: JobSpec = match serde_json::from_str(&job.spec) {
        Ok(spec) => spec,
        Err(e) => return Err(ActorError::Internal(format!("cron job {job_id} is stored damaged: {e}"))),
    };
    // Runs missed meanwhile are not repeated: the next time is after now (searched on a
    // blocking thread, see `schedule`).
    let (schedule, timezone) = (spec.schedule.clone(), spec.timezone.clone());
    let next =
        blocking(move || Schedule::parse(&schedule, timezone.as_deref()).ok().and_then(|s| s.next_after(now))).await?;
    let running = actor.cron().running(job_id);
    // Under an engine, a sleeping VM is not woken here: the engine may have placed it elsewhere.
    let asleep_under_engine = actors.placed_by_engine() && !actor.is_awake();
    let start_now = match spec.overlap {
        _ if asleep_under_engine => false,
        _ if running == 0 => true,
        Overlap::Allow => running < MAX_RUNNING,
        Overlap::Skip | Overlap::Queue => false,
    };
    if start_now {
        return start(actors, actor, job_id, spec, due_ms, Some(next)).await;
    }
    match spec.overlap {
        _ if asleep_under_engine => {
            tracing::info!(actor = %actor.id, job = job_id, "cron: the VM sleeps and the engine places VMs; this run is skipped")
        }
        Overlap::Queue => {
            let mut jobs = actor.cron().jobs.lock().unwrap();
            let state = jobs.entry(job_id.to_string()).or_default();
            if state.queued.len() < MAX_QUEUED {
                state.queued.push_back(due_ms);
            } else {
                tracing::warn!(actor = %actor.id, job = job_id, "cron: {MAX_QUEUED} runs already wait; this one is skipped");
            }
        }
        Overlap::Allow => {
            tracing::warn!(actor = %actor.id, job = job_id, "cron: {MAX_RUNNING} runs already go; this one is skipped")
        }
        Overlap::Skip => tracing::info!(actor = %actor.id, job = job_id, "cron: the previous run still goes; skipped"),
    }
    // Not run now: only the job's next time moves on.
    let (file, awake, id) = (Arc::clone(actor.event_file()), actor.is_awake(), job_id.to_string());
    blocking(move || file.with(awake, |s| s.set_cron_next(&id, next))).await??;
    index(actors, actor, job_id, next).await?;
    scheduler.plan(&actor.id, job_id, next);
    Ok(())
}

/// Starts a run: records it (moving the job's next time to `next`), re-plans the job, and runs
/// the action in its own task, followed by the runs queued behind it.
async fn start(
    actors: &Arc<Actors>,
    actor: &Arc<Actor>,
    job_id: &str,
    spec: JobSpec,
    due_ms: u64,
    next: Option<Option<u64>>,
) -> Result<(), ActorError> {
    let Some(run_id) = record_start(actors, actor, job_id, due_ms, next).await? else { return Ok(()) };
    // Counted as activity from now on: the VM does not sleep under a run.
    let activity = actor.activity();
    let (actors, actor, job_id) = (Arc::clone(actors), Arc::clone(actor), job_id.to_string());
    tokio::spawn(async move {
        let mut run_id = run_id;
        loop {
            run(&actors, &actor, &job_id, run_id, &spec).await;
            let queued = {
                let mut jobs = actor.cron().jobs.lock().unwrap();
                let state = jobs.entry(job_id.clone()).or_default();
                state.running.retain(|r| *r != run_id);
                let queued = state.queued.pop_front();
                if state.running.is_empty() && queued.is_none() {
                    jobs.remove(&job_id);
                }
                queued
            };
            let Some(due) = queued else { break };
            let _changing = actor.cron().changing.lock().await;
            // A job cancelled meanwhile has no row: nothing starts.
            match record_start(&actors, &actor, &job_id, due, None).await {
                Ok(Some(next_run)) => run_id = next_run,
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(actor = %actor.id, job = %job_id, "cron: starting a queued run: {e}");
                    break;
                }
            }
        }
        drop(activity);
    });
    Ok(())
}

/// Records the start of a run in the VM's file (the job's next time set to `next`, or left as
/// it is when `None`) and in the index and plan; the run's id, or `None` when the job is gone.
async fn record_start(
    actors: &Arc<Actors>,
    actor: &Arc<Actor>,
    job_id: &str,
    due_ms: u64,
    next: Option<Option<u64>>,
) -> Result<Option<u64>, ActorError> {
    let scheduler = actors.cron();
    let now = scheduler.clock().now_ms();
    let (file, awake, id) = (Arc::clone(actor.event_file()), actor.is_awake(), job_id.to_string());
    let started = blocking(move || {
        file.with(awake, |s| {
            let next_run_ms = match next {
                Some(next) => next,
                None => s.cron_job(&id)?.and_then(|j| j.next_run_ms),
            };
            let start = RunStart { job_id: &id, scheduled_ms: due_ms, started_ms: now, next_run_ms };
            Ok(s.start_cron_run(start)?.map(|run| (run, next_run_ms)))
        })
    })
    .await??;
    let Some((run_id, next_run_ms)) = started else { return Ok(None) };
    if next.is_some() {
        index(actors, actor, job_id, next_run_ms).await?;
        scheduler.plan(&actor.id, job_id, next_run_ms);
    }
    actor.cron().jobs.lock().unwrap().entry(job_id.to_string()).or_default().running.push(run_id);
    tracing::debug!(actor = %actor.id, job = job_id, run = run_id, due_ms, "cron: run started");
    Ok(Some(run_id))
}

/// Runs the action: `cron:fire`, then `cron:complete` or `cron:error`, and the run's record.
async fn run(actors: &Arc<Actors>, actor: &Arc<Actor>, job_id: &str, run_id: u64, spec: &JobSpec) {
    let clock = Arc::clone(actors.cron().clock());
    let fired = clock.now_ms();
    publish(actor, json!({"type": "cron:fire", "jobId": job_id, "time": fired, "runId": run_id}));
    let began = Instant::now();
    let mut end = execute(actors, actor, spec).await;
    let duration_ms = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
    end.duration_ms = Some(duration_ms);
    let time = clock.now_ms();
    if actor.check_usable().is_err() {
        // Destroyed under the run: its files are gone, and nobody is left to tell.
        return;
    }
    let file = Arc::clone(actor.event_file());
    let awake = actor.is_awake();
    let event = match &end.error {
        None => {
            json!({"type": "cron:complete", "jobId": job_id, "time": time, "durationMs": duration_ms, "runId": run_id})
        }
        Some(error) => {
            json!({"type": "cron:error", "jobId": job_id, "time": time, "durationMs": duration_ms, "error": error, "runId": run_id})
        }
    };
    // Recorded before it is announced: a client told of the end reads the run's outcome.
    let stored = blocking(move || file.with(awake, |s| s.finish_cron_run(run_id, time, end))).await;
    let failed = match stored {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(ActorError::from(e)),
        Err(e) => Some(e),
    };
    if let Some(e) = failed {
        tracing::error!(actor = %actor.id, job = job_id, "cron: recording the end of run {run_id}: {e}");
    }
    tracing::debug!(actor = %actor.id, job = job_id, run = run_id, "cron: run ended");
    publish(actor, event);
}

/// Runs a job's action in the actor's VM (woken if it sleeps): how it ended.
async fn execute(actors: &Arc<Actors>, actor: &Arc<Actor>, spec: &JobSpec) -> RunEnd {
    let failed = |error: String| RunEnd { status: "error".into(), error: Some(error), ..RunEnd::default() };
    let vm = {
        let _waking = actors.cron_wakes().acquire().await;
        match actor.vm(false).await {
            Ok(vm) => vm,
            Err(e) => return failed(format!("the VM could not be started: {e}")),
        }
    };
    match &spec.action {
        Action::Exec { command, args } => {
            let line = Action::command_line(command, args);
            match vm.exec(&line, ExecOptions::default()).await {
                Ok(result) => {
                    let error = (result.exit_code != 0).then(|| {
                        let tail: String =
                            result.stderr.trim_end().lines().last().unwrap_or("").chars().take(500).collect();
                        if tail.is_empty() {
                            format!("the command exited with code {}", result.exit_code)
                        } else {
                            format!("the command exited with code {}: {tail}", result.exit_code)
                        }
                    });
                    RunEnd {
                        status: if error.is_some() { "error" } else { "complete" }.into(),
                        exit_code: Some(i64::from(result.exit_code)),
                        stdout: Some(result.stdout),
                        stderr: Some(result.stderr),
                        error,
                        ..RunEnd::default()
                    }
                }
                Err(e) => failed(format!("the command could not run: {}", ActorError::from(e))),
            }
        }
        Action::Session { agent_type, prompt, cwd } => {
            let options = crate::sessions::CreateOptions { cwd: cwd.clone(), env: Default::default() };
            let created = match actor.create_session(&vm, agent_type, options).await {
                Ok(created) => created,
                Err(e) => return failed(format!("the session could not start: {e}")),
            };
            let session_id = created["sessionId"].as_str().unwrap_or_default().to_string();
            let prompted = match actor.sessions().get(&session_id) {
                Ok(session) => session.prompt(&actor.transcript(), prompt).await.map(drop),
                Err(e) => Err(e),
            };
            if let Err(e) = actor.close_session(&session_id, false).await {
                tracing::warn!(actor = %actor.id, session = %session_id, "cron: closing the session: {e}");
            }
            RunEnd {
                status: if prompted.is_ok() { "complete" } else { "error" }.into(),
                session_id: Some(session_id),
                error: prompted.err().map(|e| format!("the prompt failed: {e}")),
                ..RunEnd::default()
            }
        }
    }
}

fn publish(actor: &Actor, event: serde_json::Value) {
    actor.publish(VmEvent::CronEvent { event: event.to_string().into() });
}

/// The job's stored row (opening the VM's file if it sleeps).
pub(crate) async fn read_job(actor: &Arc<Actor>, job_id: &str) -> Result<Option<CronJob>, ActorError> {
    let (file, awake, id) = (Arc::clone(actor.event_file()), actor.is_awake(), job_id.to_string());
    Ok(blocking(move || file.with(awake, |s| s.cron_job(&id))).await??)
}

/// Indexes and plans again every job in the actor's file (its state came from another host).
pub(crate) async fn replan(actors: &Arc<Actors>, actor: &Arc<Actor>) {
    let (file, awake) = (Arc::clone(actor.event_file()), actor.is_awake());
    let jobs = match blocking(move || file.with(awake, |s| s.cron_jobs())).await {
        Ok(Ok(jobs)) => jobs,
        Ok(Err(e)) => return tracing::error!(actor = %actor.id, "cron: reading the jobs of a restored VM: {e}"),
        Err(e) => return tracing::error!(actor = %actor.id, "cron: {e}"),
    };
    for job in jobs {
        if let Err(e) = index(actors, actor, &job.id, job.next_run_ms).await {
            tracing::error!(actor = %actor.id, job = %job.id, "cron: indexing a restored job: {e}");
        }
        actors.cron().plan(&actor.id, &job.id, job.next_run_ms);
    }
}

/// Sets the registry's index of a job.
pub(crate) async fn index(
    actors: &Arc<Actors>,
    actor: &Actor,
    job_id: &str,
    due: Option<u64>,
) -> Result<(), ActorError> {
    let (registry, actor_id, id) = (Arc::clone(actors.registry()), actor.id.clone(), job_id.to_string());
    Ok(blocking(move || registry.index_cron_job(&actor_id, &id, due)).await??)
}
