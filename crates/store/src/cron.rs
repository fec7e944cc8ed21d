//! Cron jobs and their runs, kept in two places like preview tokens:
//!
//! - **the VM's own file** (`<data>/vms/<id>/vm.sqlite3`): the authority.
//!   - `cron_jobs (id, spec, created_ms, next_run_ms, last_run_ms, run_count)`: one row per
//!     job; `spec` is the job's definition as JSON text (its meaning is the actor core's);
//!     `next_run_ms` is `NULL` once a one-shot has run.
//!   - `cron_runs (run_id, job_id, scheduled_ms, started_ms, finished_ms, status, exit_code,
//!     stdout, stderr, session_id, error)`: one row per run, `status` `running`, `complete` or
//!     `error`. An exec's output (at most [`MAX_OUTPUT_BYTES`] per stream) and exit code, a
//!     session job's session id, and the reason of a failure are kept here. Each job keeps its
//!     last [`MAX_RUNS_PER_JOB`] runs, a VM its last [`MAX_RUNS_PER_VM`].
//! - **the registry**: `cron_due (actor_id, job_id, due_ms)`, an index of when each job of
//!   every VM is next due, so the server's one scheduler knows them all — sleeping VMs
//!   included — without opening every VM's file.
//!
//! The index may be *early* or name a job that is gone, never late or missing: a new job is
//! indexed before it is written to the VM's file, a cancelled one removed from the file first,
//! and a run moves the job's next time forwards in the file before the index. The scheduler
//! checks the VM's file before it runs anything and corrects the index.

use rusqlite::{params, Connection, OptionalExtension};

use crate::{Context, EventStore, Registry, Result};

/// Most bytes of each output stream a run keeps.
pub const MAX_OUTPUT_BYTES: usize = 64 << 10;
/// Most runs kept per job (the newest).
pub const MAX_RUNS_PER_JOB: u64 = 100;
/// Most runs kept per VM, all jobs together, cancelled ones included (the newest).
pub const MAX_RUNS_PER_VM: u64 = 1_000;

const VM_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cron_jobs (
    id           TEXT PRIMARY KEY,
    spec         TEXT NOT NULL,
    created_ms   INTEGER NOT NULL,
    next_run_ms  INTEGER,
    last_run_ms  INTEGER,
    run_count    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS cron_runs (
    run_id        INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id        TEXT NOT NULL,
    scheduled_ms  INTEGER NOT NULL,
    started_ms    INTEGER NOT NULL,
    finished_ms   INTEGER,
    status        TEXT NOT NULL,
    exit_code     INTEGER,
    stdout        TEXT,
    stderr        TEXT,
    session_id    TEXT,
    error         TEXT,
    duration_ms   INTEGER
);
CREATE INDEX IF NOT EXISTS cron_runs_by_job ON cron_runs (job_id, run_id);
";

/// The registry's index (created with the registry's other tables).
pub(crate) const REGISTRY_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cron_due (
    actor_id  TEXT NOT NULL,
    job_id    TEXT NOT NULL,
    due_ms    INTEGER NOT NULL,
    PRIMARY KEY (actor_id, job_id)
);
";

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronJob {
    pub id: String,
    /// The definition, JSON text.
    pub spec: String,
    pub created_ms: u64,
    /// When it runs next; `None`: never again (a one-shot that ran).
    pub next_run_ms: Option<u64>,
    pub last_run_ms: Option<u64>,
    pub run_count: u64,
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronRun {
    pub run_id: u64,
    pub job_id: String,
    /// When it was due (earlier than `started_ms` when it waited in a queue or was missed).
    pub scheduled_ms: u64,
    pub started_ms: u64,
    pub finished_ms: Option<u64>,
    pub end: RunEnd,
}

/// How a run ended (all `None` and `status = "running"` until it does).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunEnd {
    /// `running`, `complete` or `error`.
    pub status: String,
    pub exit_code: Option<i64>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub session_id: Option<String>,
    pub error: Option<String>,
    /// How long it ran (monotonic), when it ended.
    pub duration_ms: Option<u64>,
}

/// The start of a run: the job's next time moves on and its count grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunStart<'a> {
    pub job_id: &'a str,
    pub scheduled_ms: u64,
    pub started_ms: u64,
    pub next_run_ms: Option<u64>,
}

fn has_tables(connection: &Connection) -> Result<bool> {
    connection
        .query_row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'cron_jobs'", [], |_| Ok(()))
        .optional()
        .map(|found| found.is_some())
        .context("looking for the cron tables")
}

fn row_to_job(r: &rusqlite::Row<'_>) -> rusqlite::Result<CronJob> {
    Ok(CronJob {
        id: r.get(0)?,
        spec: r.get(1)?,
        created_ms: r.get(2)?,
        next_run_ms: r.get(3)?,
        last_run_ms: r.get(4)?,
        run_count: r.get(5)?,
    })
}

const JOB_COLUMNS: &str = "id, spec, created_ms, next_run_ms, last_run_ms, run_count";
const RUN_COLUMNS: &str = "run_id, job_id, scheduled_ms, started_ms, finished_ms, status, exit_code, stdout, stderr, \
     session_id, error, duration_ms";

fn row_to_run(r: &rusqlite::Row<'_>) -> rusqlite::Result<CronRun> {
    let (started, finished): (u64, Option<u64>) = (r.get(3)?, r.get(4)?);
    Ok(CronRun {
        run_id: r.get(0)?,
        job_id: r.get(1)?,
        scheduled_ms: r.get(2)?,
        started_ms: started,
        finished_ms: finished,
        end: RunEnd {
            status: r.get(5)?,
            exit_code: r.get(6)?,
            stdout: r.get(7)?,
            stderr: r.get(8)?,
            session_id: r.get(9)?,
            error: r.get(10)?,
            duration_ms: r.get(11)?,
        },
    })
}

/// `text` cut to at most `max` bytes on a character boundary.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The VM file's side. Each call is one transaction.
impl EventStore {
    /// Adds a job, or replaces the one with the same id (its counts are kept). Refused with
    /// `Ok(Err(active))` when the VM already has `max_active` jobs that will run again (one-shots
    /// that ran do not count); one-shots that ran before `forget_before_ms` are forgotten.
    pub fn put_cron_job(
        &mut self,
        job: &CronJob,
        max_active: u64,
        forget_before_ms: u64,
    ) -> Result<std::result::Result<(), u64>> {
        let tx = self.connection_mut().transaction().context("adding a cron job")?;
        tx.execute_batch(VM_SCHEMA).context("creating the cron tables")?;
        tx.execute("DELETE FROM cron_jobs WHERE next_run_ms IS NULL AND last_run_ms < ?1", params![forget_before_ms])
            .context("forgetting finished one-shot jobs")?;
        let active: u64 = tx
            .query_row(
                "SELECT COUNT(*) FROM cron_jobs WHERE next_run_ms IS NOT NULL AND id != ?1",
                params![job.id],
                |r| r.get(0),
            )
            .context("counting cron jobs")?;
        if active >= max_active {
            return Ok(Err(active));
        }
        tx.execute(
            "INSERT INTO cron_jobs (id, spec, created_ms, next_run_ms, last_run_ms, run_count) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (id) DO UPDATE SET spec = excluded.spec, next_run_ms = excluded.next_run_ms",
            params![job.id, job.spec, job.created_ms, job.next_run_ms, job.last_run_ms, job.run_count],
        )
        .context("adding a cron job")?;
        tx.commit().context("adding a cron job")?;
        Ok(Ok(()))
    }

    /// Every job, by creation.
    pub fn cron_jobs(&mut self) -> Result<Vec<CronJob>> {
        let connection = self.connection_mut();
        if !has_tables(connection)? {
            return Ok(Vec::new());
        }
        let mut statement = connection
            .prepare(&format!("SELECT {JOB_COLUMNS} FROM cron_jobs ORDER BY created_ms, id"))
            .context("listing cron jobs")?;
        let jobs = statement.query_map([], row_to_job).context("listing cron jobs")?;
        jobs.collect::<rusqlite::Result<_>>().context("listing cron jobs")
    }

    pub fn cron_job(&mut self, id: &str) -> Result<Option<CronJob>> {
        let connection = self.connection_mut();
        if !has_tables(connection)? {
            return Ok(None);
        }
        connection
            .query_row(&format!("SELECT {JOB_COLUMNS} FROM cron_jobs WHERE id = ?1"), params![id], row_to_job)
            .optional()
            .context("reading a cron job")
    }

    /// Deletes a job (its runs stay); `false` if there was none.
    pub fn remove_cron_job(&mut self, id: &str) -> Result<bool> {
        let connection = self.connection_mut();
        if !has_tables(connection)? {
            return Ok(false);
        }
        let deleted =
            connection.execute("DELETE FROM cron_jobs WHERE id = ?1", params![id]).context("cancelling a cron job")?;
        Ok(deleted > 0)
    }

    /// Sets when a job runs next (without a run: a skipped one).
    pub fn set_cron_next(&mut self, id: &str, next_run_ms: Option<u64>) -> Result<()> {
        let connection = self.connection_mut();
        if !has_tables(connection)? {
            return Ok(());
        }
        connection
            .execute("UPDATE cron_jobs SET next_run_ms = ?2 WHERE id = ?1", params![id, next_run_ms])
            .map(drop)
            .context("moving a cron job on")
    }

    /// Records the start of a run: the job's next time, last run and count move on, and a run
    /// row is added (older runs beyond the limits are dropped). Returns the run's id, or `None`
    /// when the job is gone.
    pub fn start_cron_run(&mut self, start: RunStart<'_>) -> Result<Option<u64>> {
        let tx = self.connection_mut().transaction().context("starting a cron run")?;
        tx.execute_batch(VM_SCHEMA).context("creating the cron tables")?;
        let updated = tx
            .execute(
                "UPDATE cron_jobs SET next_run_ms = ?2, last_run_ms = ?3, run_count = run_count + 1 WHERE id = ?1",
                params![start.job_id, start.next_run_ms, start.started_ms],
            )
            .context("starting a cron run")?;
        if updated == 0 {
            return Ok(None);
        }
        tx.execute(
            "INSERT INTO cron_runs (job_id, scheduled_ms, started_ms, status) VALUES (?1, ?2, ?3, 'running')",
            params![start.job_id, start.scheduled_ms, start.started_ms],
        )
        .context("starting a cron run")?;
        let run_id = u64::try_from(tx.last_insert_rowid()).unwrap_or(0);
        tx.execute(
            "DELETE FROM cron_runs WHERE job_id = ?1 AND run_id NOT IN
                 (SELECT run_id FROM cron_runs WHERE job_id = ?1 ORDER BY run_id DESC LIMIT ?2)",
            params![start.job_id, MAX_RUNS_PER_JOB],
        )
        .context("dropping old cron runs")?;
        tx.execute(
            "DELETE FROM cron_runs WHERE run_id <= (SELECT run_id FROM cron_runs ORDER BY run_id DESC LIMIT 1 OFFSET ?1)",
            params![MAX_RUNS_PER_VM],
        )
        .context("dropping old cron runs")?;
        tx.commit().context("starting a cron run")?;
        Ok(Some(run_id))
    }

    /// Records how a run ended (outputs cut to [`MAX_OUTPUT_BYTES`]).
    pub fn finish_cron_run(&mut self, run_id: u64, finished_ms: u64, end: RunEnd) -> Result<()> {
        let connection = self.connection_mut();
        if !has_tables(connection)? {
            return Ok(());
        }
        let cut = |text: Option<String>| text.map(|t| truncate(t, MAX_OUTPUT_BYTES));
        connection
            .execute(
                "UPDATE cron_runs SET finished_ms = ?2, status = ?3, exit_code = ?4, stdout = ?5, stderr = ?6,
                     session_id = ?7, error = ?8, duration_ms = ?9 WHERE run_id = ?1",
                params![
                    run_id,
                    finished_ms,
                    end.status,
                    end.exit_code,
                    cut(end.stdout),
                    cut(end.stderr),
                    end.session_id,
                    end.error.map(|e| truncate(e, MAX_OUTPUT_BYTES)),
                    end.duration_ms,
                ],
            )
            .map(drop)
            .context("finishing a cron run")
    }

    /// The newest runs first (of one job, or of all), at most `limit`.
    pub fn cron_runs(&mut self, job_id: Option<&str>, limit: u64) -> Result<Vec<CronRun>> {
        let connection = self.connection_mut();
        if !has_tables(connection)? {
            return Ok(Vec::new());
        }
        let mut statement = connection
            .prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM cron_runs WHERE ?1 IS NULL OR job_id = ?1 ORDER BY run_id DESC LIMIT ?2"
            ))
            .context("listing cron runs")?;
        let runs = statement.query_map(params![job_id, limit], row_to_run).context("listing cron runs")?;
        runs.collect::<rusqlite::Result<_>>().context("listing cron runs")
    }
}

/// The registry's side: when each job of every VM is next due.
impl Registry {
    /// Records when `job_id` of `actor_id` is next due; `None` removes it.
    pub fn index_cron_job(&self, actor_id: &str, job_id: &str, due_ms: Option<u64>) -> Result<()> {
        self.with_connection(|connection| {
            match due_ms {
                Some(due) => connection.execute(
                    "INSERT OR REPLACE INTO cron_due (actor_id, job_id, due_ms) VALUES (?1, ?2, ?3)",
                    params![actor_id, job_id, due],
                ),
                None => connection
                    .execute("DELETE FROM cron_due WHERE actor_id = ?1 AND job_id = ?2", params![actor_id, job_id]),
            }
            .map(drop)
            .context("indexing a cron job")
        })
    }

    /// Every indexed job: `(actor_id, job_id, due_ms)`, soonest first.
    pub fn cron_due(&self) -> Result<Vec<(String, String, u64)>> {
        self.with_connection(|connection| {
            let mut statement = connection
                .prepare("SELECT actor_id, job_id, due_ms FROM cron_due ORDER BY due_ms")
                .context("reading the cron index")?;
            let rows =
                statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).context("reading the cron index")?;
            rows.collect::<rusqlite::Result<_>>().context("reading the cron index")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventRetention;

    fn job(id: &str, next: Option<u64>) -> CronJob {
        CronJob { id: id.into(), spec: "{}".into(), created_ms: 1, next_run_ms: next, last_run_ms: None, run_count: 0 }
    }

    #[test]
    fn jobs_and_runs_survive_reopening_and_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.sqlite3");
        {
            let mut store = EventStore::open(&path, EventRetention::default()).unwrap();
            assert!(store.cron_jobs().unwrap().is_empty());
            assert_eq!(store.put_cron_job(&job("a", Some(100)), 2, 0).unwrap(), Ok(()));
            assert_eq!(store.put_cron_job(&job("b", Some(200)), 2, 0).unwrap(), Ok(()));
            // The limit counts the other active jobs; replacing one is not adding.
            assert_eq!(store.put_cron_job(&job("c", Some(300)), 2, 0).unwrap(), Err(2));
            assert_eq!(store.put_cron_job(&job("b", Some(250)), 2, 0).unwrap(), Ok(()));
            let start = RunStart { job_id: "a", scheduled_ms: 100, started_ms: 105, next_run_ms: Some(160) };
            let run = store.start_cron_run(start).unwrap().unwrap();
            let end = RunEnd {
                status: "complete".into(),
                exit_code: Some(0),
                stdout: Some("x".repeat(MAX_OUTPUT_BYTES + 10)),
                ..RunEnd::default()
            };
            store.finish_cron_run(run, 110, end).unwrap();
            assert_eq!(store.start_cron_run(RunStart { job_id: "gone", ..start }).unwrap(), None);
        }
        let mut store = EventStore::open(&path, EventRetention::default()).unwrap();
        let jobs = store.cron_jobs().unwrap();
        assert_eq!(
            jobs.iter().map(|j| (j.id.as_str(), j.next_run_ms, j.run_count)).collect::<Vec<_>>(),
            [("a", Some(160), 1), ("b", Some(250), 0)]
        );
        assert_eq!(jobs[0].last_run_ms, Some(105));
        let runs = store.cron_runs(Some("a"), 10).unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(
            (runs[0].end.status.as_str(), runs[0].end.exit_code, runs[0].finished_ms),
            ("complete", Some(0), Some(110))
        );
        assert_eq!(runs[0].end.stdout.as_ref().map(String::len), Some(MAX_OUTPUT_BYTES));
        for i in 0..MAX_RUNS_PER_JOB + 5 {
            store
                .start_cron_run(RunStart { job_id: "b", scheduled_ms: i, started_ms: i, next_run_ms: Some(i + 1) })
                .unwrap();
        }
        assert_eq!(store.cron_runs(Some("b"), 1_000).unwrap().len() as u64, MAX_RUNS_PER_JOB);
        assert_eq!(store.cron_runs(None, 1_000).unwrap().len() as u64, MAX_RUNS_PER_JOB + 1);
        // A one-shot that ran no longer counts, and is forgotten after a while.
        store.set_cron_next("b", None).unwrap();
        assert_eq!(store.put_cron_job(&job("c", Some(300)), 2, 0).unwrap(), Ok(()));
        assert_eq!(store.put_cron_job(&job("d", Some(300)), 3, 1_000).unwrap(), Ok(()));
        assert!(store.cron_job("b").unwrap().is_none(), "forgotten");
        assert!(store.remove_cron_job("a").unwrap());
        assert!(!store.remove_cron_job("a").unwrap());
    }

    #[test]
    fn the_registry_index_lists_due_jobs_soonest_first_until_destroy() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(&dir.path().join("registry.sqlite3")).unwrap();
        registry.index_cron_job("actor1", "late", Some(300)).unwrap();
        registry.index_cron_job("actor1", "soon", Some(100)).unwrap();
        registry.index_cron_job("actor2", "x", Some(200)).unwrap();
        registry.index_cron_job("actor1", "late", Some(250)).unwrap();
        let due = registry.cron_due().unwrap();
        assert_eq!(
            due.iter().map(|(_, j, d)| (j.as_str(), *d)).collect::<Vec<_>>(),
            [("soon", 100), ("x", 200), ("late", 250)]
        );
        registry.index_cron_job("actor2", "x", None).unwrap();
        registry.destroy("actor1").unwrap();
        assert!(registry.cron_due().unwrap().is_empty());
    }
}
