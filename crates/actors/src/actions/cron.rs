//! Cron actions (the reference's, §2.6 of the API notes, plus `listCronRuns`):
//! `scheduleCron({id?, schedule, timezone?, action, overlap?})` → `{id}`, `listCronJobs()` →
//! `{id, schedule, timezone, action, overlap, lastRun, nextRun, runCount, running, createdAt}[]`,
//! `cancelCronJob(id)`, and `listCronRuns(jobId?, {limit?})` → the newest runs first, with an
//! exec's exit code and output or a session job's session id. None of them boots the VM; the
//! work is [`crate::cron::jobs`]'s.

use std::sync::Arc;

use agentvm_protocol::Value;

use super::args::Args;
use crate::actors::{Actor, Actors};
use crate::cron::job::{self, JobSpec};
use crate::cron::jobs;
use crate::error::ActorError;

/// The actions of this family.
pub const NAMES: &[&str] = &["scheduleCron", "listCronJobs", "cancelCronJob", "listCronRuns"];

/// Most runs one `listCronRuns` returns (and its default).
const MAX_RUNS_LISTED: u64 = 1_000;
const DEFAULT_RUNS_LISTED: u64 = 100;

/// A validated cron action.
pub(super) enum Call {
    Schedule { id: Option<String>, spec: JobSpec },
    List,
    Cancel { id: String },
    Runs { job_id: Option<String>, limit: u64 },
}

/// The call for `name`, or `None` when `name` is not a cron action.
pub(super) fn parse(name: &str, args: &Args<'_>) -> Result<Option<Call>, ActorError> {
    Ok(Some(match name {
        "scheduleCron" => {
            let value = args.json(0).unwrap_or(serde_json::Value::Null);
            let (id, spec) =
                job::parse(&value).map_err(|e| ActorError::InvalidArguments(format!("scheduleCron: {e}")))?;
            Call::Schedule { id, spec }
        }
        "listCronJobs" => Call::List,
        "cancelCronJob" => Call::Cancel { id: args.string(0, "id")? },
        "listCronRuns" => {
            let job_id = match args.json(0) {
                None => None,
                Some(serde_json::Value::String(id)) => Some(id),
                Some(_) => {
                    return Err(ActorError::InvalidArguments(
                        "listCronRuns: argument 1 (jobId) must be a string or null".into(),
                    ))
                }
            };
            let limit = match args.options(1)?.number("limit")? {
                None => DEFAULT_RUNS_LISTED,
                Some(n) if n >= 1.0 => (n as u64).min(MAX_RUNS_LISTED),
                Some(_) => {
                    return Err(ActorError::InvalidArguments("listCronRuns: option `limit` must be at least 1".into()))
                }
            };
            Call::Runs { job_id, limit }
        }
        _ => return Ok(None),
    }))
}

/// Runs a cron action.
pub(super) async fn run(actors: &Arc<Actors>, actor: &Arc<Actor>, call: Call) -> Result<Value, ActorError> {
    match call {
        Call::Schedule { id, spec } => {
            let id = jobs::schedule(actors, actor, id, spec).await?;
            Ok(Value::from(serde_json::json!({"id": id})))
        }
        Call::List => Ok(Value::from(jobs::list(actor).await?)),
        Call::Cancel { id } => {
            jobs::cancel(actors, actor, &id).await?;
            Ok(Value::Undefined)
        }
        Call::Runs { job_id, limit } => Ok(Value::from(jobs::runs(actor, job_id, limit).await?)),
    }
}
