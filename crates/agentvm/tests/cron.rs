//! Cron through the server: jobs on sleeping VMs fire on time and wake them, survive a restart
//! (missed runs run once), follow their overlap rule, report failures, refuse bad schedules and
//! what the preset does not allow, and run agent sessions. Every test runs the server on a
//! manual clock (`--manual-clock`, moved with `POST /debug/clock`): no test waits a minute.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::http::Api;
use common::server::TestServer;
use common::ws::{next_json_within, Conn};
use serde_json::{json, Value};

/// 2030-01-01T00:00:00Z.
const T0: u64 = 1_893_456_000_000;
const MINUTE: u64 = 60_000;
const EVENTS: &[&str] = &["cronEvent", "vmBooted", "vmShutdown"];

fn start(extra: &[&str]) -> TestServer {
    let start = (T0 + 30_000).to_string();
    let mut args = vec!["--manual-clock", start.as_str()];
    args.extend_from_slice(extra);
    TestServer::start_with(&args)
}

/// Sets cron's clock.
async fn set_clock(server: &TestServer, now: u64) {
    let response = reqwest::Client::new()
        .post(format!("{}/debug/clock", server.url))
        .json(&json!({"now": now}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

/// Reads the connection's events until `done` holds for those read so far (`(name, payload)`,
/// in order); panics after `limit`.
async fn events_until(
    c: &mut Conn,
    limit: Duration,
    done: impl Fn(&[(String, Value)]) -> bool,
) -> Vec<(String, Value)> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut seen = Vec::new();
    let take = |frame: Value, seen: &mut Vec<(String, Value)>| {
        if frame["body"]["tag"] == "Event" {
            let val = &frame["body"]["val"];
            seen.push((val["name"].as_str().unwrap_or_default().to_string(), val["args"][0].clone()));
        }
    };
    for frame in c.take_backlog() {
        take(frame, &mut seen);
    }
    while !done(&seen) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next_json_within(&mut c.ws, left).await {
            Some(frame) => take(frame, &mut seen),
            None => panic!("timed out; events so far: {seen:?}"),
        }
    }
    seen
}

/// The cron events among `events`, as `(type, jobId)`.
fn cron_kinds(events: &[(String, Value)]) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|(name, _)| name == "cronEvent")
        .map(|(_, p)| {
            (p["event"]["type"].as_str().unwrap().to_string(), p["event"]["jobId"].as_str().unwrap().to_string())
        })
        .collect()
}

fn count(events: &[(String, Value)], kind: &str, job: &str) -> usize {
    cron_kinds(events).iter().filter(|(k, j)| k == kind && j == job).count()
}

fn job<'a>(jobs: &'a Value, id: &str) -> &'a Value {
    jobs.as_array().unwrap().iter().find(|j| j["id"] == id).unwrap_or_else(|| panic!("no job {id} in {jobs}"))
}

/// Polls `check` on the VM's jobs until it holds.
async fn jobs_until(api: &Api<'_>, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let jobs = api.ok("listCronJobs", json!([])).await;
        if check(&jobs) {
            return jobs;
        }
        assert!(Instant::now() < deadline, "{what}: {jobs}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls until `job` has `n` ended runs; its runs, newest first.
async fn ended_runs(api: &Api<'_>, job: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let runs = api.ok("listCronRuns", json!([job])).await;
        let runs = runs.as_array().unwrap().clone();
        if runs.iter().filter(|r| r["status"] != "running").count() >= n {
            return runs;
        }
        assert!(Instant::now() < deadline, "{job}: fewer than {n} ended runs: {runs:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_on_a_sleeping_vm_fire_on_time_wake_it_and_report_their_runs() {
    let server = start(&["--idle-timeout", "1"]);
    let api = Api::new(&server, "cron-wake");
    let mut c = Conn::open(&server, "cron-wake", EVENTS).await;
    c.call("exec", json!(["mkdir -p /home/user/out"])).await;
    c.event("vmBooted", Duration::from_secs(20)).await;
    c.event("vmShutdown", Duration::from_secs(20)).await;

    // Scheduling does not wake the VM.
    let every = c
        .call(
            "scheduleCron",
            json!([{"id": "every-minute", "schedule": "* * * * *",
            "action": {"type": "exec", "command": "echo tick >> /home/user/out/ticks; echo tick"}}]),
        )
        .await;
    assert_eq!(every, json!({"id": "every-minute"}));
    let once = c
        .call(
            "scheduleCron",
            json!([{"schedule": "2030-01-01T00:02:30Z",
            "action": {"type": "exec", "command": "echo", "args": ["once", ">", "/home/user/out/once"]}}]),
        )
        .await;
    let once = once["id"].as_str().unwrap().to_string();
    assert_eq!(once.len(), 36, "a UUID: {once}");
    let jobs = api.ok("listCronJobs", json!([])).await;
    let e = job(&jobs, "every-minute");
    assert_eq!(
        (e["nextRun"].as_u64(), e["lastRun"].clone(), e["runCount"].as_u64()),
        (Some(T0 + MINUTE), Value::Null, Some(0))
    );
    assert_eq!(
        (e["overlap"].as_str(), e["running"].as_bool(), e["timezone"].as_str()),
        (Some("allow"), Some(false), Some("UTC"))
    );
    assert_eq!(e["action"], json!({"type": "exec", "command": "echo tick >> /home/user/out/ticks; echo tick"}));
    assert_eq!(job(&jobs, &once)["nextRun"].as_u64(), Some(T0 + 2 * MINUTE + 30_000));
    c.no_event("vmBooted", Duration::from_millis(300)).await;
    c.no_event("cronEvent", Duration::from_millis(100)).await;

    // 00:01:00: the every-minute job is due; it wakes the VM and runs.
    set_clock(&server, T0 + MINUTE).await;
    let events =
        events_until(&mut c, Duration::from_secs(30), |e| count(e, "cron:complete", "every-minute") == 1).await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    // Fired at its time, then the VM woke for it (the run's duration includes the boot).
    assert_eq!(names, ["cronEvent", "vmBooted", "cronEvent"], "{events:?}");
    let (fire, complete) = (&events[0].1["event"], &events[2].1["event"]);
    assert_eq!(
        (fire["type"].as_str(), fire["jobId"].as_str(), fire["time"].as_u64()),
        (Some("cron:fire"), Some("every-minute"), Some(T0 + MINUTE))
    );
    assert_eq!(complete["type"], "cron:complete");
    assert!(complete["durationMs"].is_u64(), "{complete}");
    assert_eq!(fire["runId"], complete["runId"]);
    let jobs = api.ok("listCronJobs", json!([])).await;
    let e = job(&jobs, "every-minute");
    assert_eq!(
        (e["lastRun"].as_u64(), e["nextRun"].as_u64(), e["runCount"].as_u64()),
        (Some(T0 + MINUTE), Some(T0 + 2 * MINUTE), Some(1))
    );
    let runs = api.ok("listCronRuns", json!(["every-minute"])).await;
    let run = &runs[0];
    assert_eq!(
        (run["status"].as_str(), run["exitCode"].as_i64(), run["stdout"].as_str()),
        (Some("complete"), Some(0), Some("tick\n")),
        "{runs}"
    );
    assert_eq!((run["scheduledTime"].as_u64(), run["startedAt"].as_u64()), (Some(T0 + MINUTE), Some(T0 + MINUTE)));
    assert_eq!(run["durationMs"], complete["durationMs"]);

    // It sleeps again; at 00:02:30 both jobs are due (the every-minute one since 00:02:00).
    c.event("vmShutdown", Duration::from_secs(20)).await;
    set_clock(&server, T0 + 2 * MINUTE + 30_000).await;
    let events = events_until(&mut c, Duration::from_secs(30), |e| {
        count(e, "cron:complete", "every-minute") == 1 && count(e, "cron:complete", &once) == 1
    })
    .await;
    assert_eq!(events.iter().filter(|(n, _)| n == "vmBooted").count(), 1, "{events:?}");
    assert_eq!(count(&events, "cron:fire", &once) + count(&events, "cron:fire", "every-minute"), 2);
    let jobs = api.ok("listCronJobs", json!([])).await;
    let o = job(&jobs, &once);
    assert_eq!(
        (o["lastRun"].as_u64(), o["nextRun"].clone(), o["runCount"].as_u64()),
        (Some(T0 + 2 * MINUTE + 30_000), Value::Null, Some(1))
    );
    assert_eq!(job(&jobs, "every-minute")["nextRun"].as_u64(), Some(T0 + 3 * MINUTE));
    assert_eq!(
        api.ok("exec", json!(["cat /home/user/out/once; wc -l < /home/user/out/ticks"])).await["stdout"],
        "once\n2\n"
    );
    // The events are in the VM's log.
    let logged = api.ok("getVmEvents", json!([])).await;
    let cron_logged = logged.as_array().unwrap().iter().filter(|e| e["name"] == "cronEvent").count();
    assert_eq!(cron_logged, 6, "{logged}");

    // Cancelled, it runs no more; cancelling an unknown id is not an error.
    c.call("cancelCronJob", json!(["every-minute"])).await;
    c.call("cancelCronJob", json!(["no-such-job"])).await;
    set_clock(&server, T0 + 10 * MINUTE).await;
    c.no_event("cronEvent", Duration::from_millis(500)).await;
    let jobs = api.ok("listCronJobs", json!([])).await;
    assert_eq!(jobs.as_array().unwrap().len(), 1, "{jobs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_survive_a_restart_and_missed_runs_run_once() {
    let server = start(&[]);
    let api = Api::new(&server, "cron-restart");
    api.ok(
        "scheduleCron",
        json!([{"id": "m", "schedule": "* * * * *", "action": {"type": "exec", "command": "echo m"}}]),
    )
    .await;
    api.ok(
        "scheduleCron",
        json!([{"id": "o", "schedule": "2030-01-01 00:03:30", "action": {"type": "exec", "command": "echo o"}}]),
    )
    .await;
    set_clock(&server, T0 + MINUTE).await;
    ended_runs(&api, "m", 1).await;
    drop(api);
    let data = server.stop_keep_data();

    // Down from 00:01:00 to 00:05:30: "m" missed 00:02 to 00:05, "o" its only time. Each runs
    // once at start; "m" then goes on from now.
    let restart = (T0 + 5 * MINUTE + 30_000).to_string();
    let server = TestServer::start_in(data, &["--manual-clock", &restart]);
    let api = Api::new(&server, "cron-restart");
    let m = ended_runs(&api, "m", 2).await;
    let o = ended_runs(&api, "o", 1).await;
    assert_eq!(m.len(), 2, "{m:?}");
    assert_eq!(
        (m[0]["scheduledTime"].as_u64(), m[0]["startedAt"].as_u64()),
        (Some(T0 + 2 * MINUTE), Some(T0 + 5 * MINUTE + 30_000))
    );
    assert_eq!(m[0]["stdout"], "m\n");
    assert_eq!(o[0]["scheduledTime"].as_u64(), Some(T0 + 3 * MINUTE + 30_000));
    let jobs = api.ok("listCronJobs", json!([])).await;
    let mj = job(&jobs, "m");
    assert_eq!((mj["runCount"].as_u64(), mj["nextRun"].as_u64()), (Some(2), Some(T0 + 6 * MINUTE)));
    assert_eq!((job(&jobs, "o")["runCount"].as_u64(), job(&jobs, "o")["nextRun"].clone()), (Some(1), Value::Null));
    // Nothing more until the clock moves; then the next minute runs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(api.ok("listCronRuns", json!(["m"])).await.as_array().unwrap().len(), 2);
    set_clock(&server, T0 + 6 * MINUTE).await;
    let m = ended_runs(&api, "m", 3).await;
    assert_eq!(m[0]["scheduledTime"].as_u64(), Some(T0 + 6 * MINUTE));
    let fires = |events: &Value| {
        events
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["name"] == "cronEvent" && e["data"]["event"]["type"] == "cron:fire")
            .count()
    };
    assert_eq!(fires(&api.ok("getVmEvents", json!([])).await), 4, "three of m, one of o");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_skip_skips_queue_waits_and_allow_runs_both() {
    let server = start(&["--idle-timeout", "1"]);
    let api = Api::new(&server, "cron-overlap");
    let mut c = Conn::open(&server, "cron-overlap", EVENTS).await;
    // Each run waits until its job's gate file exists.
    for overlap in ["allow", "skip", "queue"] {
        let command = format!("while [ ! -e /home/user/go-{overlap} ]; do sleep 0.05; done; echo {overlap}");
        api.ok(
            "scheduleCron",
            json!([{"id": overlap, "schedule": "* * * * *", "overlap": overlap,
            "action": {"type": "exec", "command": command}}]),
        )
        .await;
    }
    set_clock(&server, T0 + MINUTE).await;
    jobs_until(&api, "all three running", |jobs| {
        ["allow", "skip", "queue"].iter().all(|id| job(jobs, id)["running"] == true)
    })
    .await;
    // 00:02:00 while all three still run.
    set_clock(&server, T0 + 2 * MINUTE).await;
    let jobs = jobs_until(&api, "every job moved on to 00:03", |jobs| {
        ["allow", "skip", "queue"].iter().all(|id| job(jobs, id)["nextRun"].as_u64() == Some(T0 + 3 * MINUTE))
    })
    .await;
    let run_counts: Vec<u64> =
        ["allow", "skip", "queue"].iter().map(|id| job(&jobs, id)["runCount"].as_u64().unwrap()).collect();
    assert_eq!(run_counts, [2, 1, 1], "allow started a second run; skip and queue did not: {jobs}");
    let allow = api.ok("listCronRuns", json!(["allow"])).await;
    assert!(allow.as_array().unwrap().iter().all(|r| r["status"] == "running"), "both allow runs at once: {allow}");
    // Running jobs keep the VM awake well past its idle timeout.
    c.no_event("vmShutdown", Duration::from_secs(3)).await;

    for overlap in ["allow", "skip", "queue"] {
        api.ok("writeFile", json!([format!("/home/user/go-{overlap}"), ""])).await;
    }
    let events = events_until(&mut c, Duration::from_secs(30), |e| {
        count(e, "cron:complete", "allow") == 2
            && count(e, "cron:complete", "skip") == 1
            && count(e, "cron:complete", "queue") == 2
    })
    .await;
    // The queued run started after the first one ended.
    let queue: Vec<(String, String)> = cron_kinds(&events).into_iter().filter(|(_, j)| j == "queue").collect();
    let kinds: Vec<&str> = queue.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["cron:fire", "cron:complete", "cron:fire", "cron:complete"], "{events:?}");
    let queued = ended_runs(&api, "queue", 2).await;
    assert_eq!(queued[0]["scheduledTime"].as_u64(), Some(T0 + 2 * MINUTE));
    assert_eq!(ended_runs(&api, "skip", 1).await.len(), 1);
    let jobs = api.ok("listCronJobs", json!([])).await;
    let run_counts: Vec<u64> =
        ["allow", "skip", "queue"].iter().map(|id| job(&jobs, id)["runCount"].as_u64().unwrap()).collect();
    assert_eq!(run_counts, [2, 1, 2]);
    assert!(jobs.as_array().unwrap().iter().all(|j| j["running"] == false), "{jobs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_reported_and_bad_schedules_refused() {
    let mut config = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    write!(config, "[actors.vm]\n\n[actors.small.cron]\nmax_jobs = 2\nmin_interval_seconds = 300\n").unwrap();
    let server = start(&["--config", config.path().to_str().unwrap()]);
    let api = Api::new(&server, "cron-errors");
    let mut c = Conn::open(&server, "cron-errors", EVENTS).await;

    c.call(
        "scheduleCron",
        json!([{"id": "fails", "schedule": "* * * * *",
        "action": {"type": "exec", "command": "echo partial; echo 'disk on fire' >&2; exit 3"}}]),
    )
    .await;
    set_clock(&server, T0 + MINUTE).await;
    let events = events_until(&mut c, Duration::from_secs(30), |e| count(e, "cron:error", "fails") == 1).await;
    let error = &events.iter().rev().find(|(n, _)| n == "cronEvent").unwrap().1["event"];
    assert_eq!(error["type"], "cron:error");
    assert_eq!(error["error"], "the command exited with code 3: disk on fire", "{error}");
    assert!(error["durationMs"].is_u64() && error["time"].as_u64() == Some(T0 + MINUTE), "{error}");
    let run = &api.ok("listCronRuns", json!(["fails"])).await[0];
    assert_eq!((run["status"].as_str(), run["exitCode"].as_i64()), (Some("error"), Some(3)));
    assert_eq!((run["stdout"].as_str(), run["stderr"].as_str()), (Some("partial\n"), Some("disk on fire\n")));

    // Refused with the reason, and nothing is scheduled.
    let exec = json!({"type": "exec", "command": "true"});
    let refused = [
        (json!({"schedule": "61 * * * *", "action": exec}), 400, "invalid_schedule"),
        (json!({"schedule": "every day at noon", "action": exec}), 400, "invalid_schedule"),
        (json!({"schedule": "0 0 30 2 *", "action": exec}), 400, "invalid_schedule"),
        (json!({"schedule": "2029-12-31T23:59:59Z", "action": exec}), 400, "past_schedule"),
        (json!({"schedule": "2030-01-01T00:00:30Z", "action": exec}), 400, "past_schedule"),
        (json!({"schedule": "* * * * *", "timezone": "Mars/Olympus", "action": exec}), 400, "invalid_timezone"),
        (json!({"schedule": "* * * * *", "action": {"type": "callback"}}), 400, "invalid_arguments"),
        (
            json!({"schedule": "* * * * *", "action": {"type": "session", "agentType": "nope", "prompt": "x"}}),
            400,
            "invalid_arguments",
        ),
        (json!({"schedule": "* * * * *"}), 400, "invalid_arguments"),
    ];
    for (job, status, code) in refused {
        let (got, body) = api.call("scheduleCron", json!([job])).await;
        assert_eq!((got, body["code"].as_str()), (status, Some(code)), "{job}: {body}");
        assert!(!body["message"].as_str().unwrap_or_default().is_empty(), "{body}");
    }
    let (_, body) = api.call("scheduleCron", json!([{"schedule": "2029-12-31T23:59:59Z", "action": exec}])).await;
    assert!(body["message"].as_str().unwrap().contains("in the past"), "{body}");
    assert_eq!(api.ok("listCronJobs", json!([])).await.as_array().unwrap().len(), 1);

    // The preset's limits: at most 2 jobs, at most one run per 5 minutes.
    let small = Api::named(&server, "small", "cron-limits");
    let (status, body) = small.call("scheduleCron", json!([{"schedule": "* * * * *", "action": exec}])).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("too_frequent")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("300 s"), "{body}");
    small.ok("scheduleCron", json!([{"id": "a", "schedule": "*/5 * * * *", "action": exec}])).await;
    small.ok("scheduleCron", json!([{"id": "b", "schedule": "2030-06-01T00:00:00Z", "action": exec}])).await;
    let (status, body) =
        small.call("scheduleCron", json!([{"id": "c", "schedule": "0 3 * * *", "action": exec}])).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("too_many_jobs")), "{body}");
    // Replacing a job is not adding one; cancelling frees a place.
    small.ok("scheduleCron", json!([{"id": "a", "schedule": "0 * * * *", "action": exec}])).await;
    small.ok("cancelCronJob", json!(["b"])).await;
    small.ok("scheduleCron", json!([{"id": "c", "schedule": "0 3 * * *", "action": exec}])).await;
    let jobs = small.ok("listCronJobs", json!([])).await;
    assert_eq!(job(&jobs, "a")["schedule"], "0 * * * *");
    assert_eq!(jobs.as_array().unwrap().len(), 2);
}

const AGENT: &str = include_str!("fixtures/acp-test-agent.mjs");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_job_runs_the_agent_and_keeps_its_transcript() {
    let mut config = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    write!(
        config,
        "[actors.vm.sessions]\npermissions = \"allow\"\n\n[agents.test]\ncommand = [\"node\", \"/home/user/acp-test-agent.mjs\"]\n"
    )
    .unwrap();
    let server = start(&["--config", config.path().to_str().unwrap()]);
    let api = Api::new(&server, "cron-session");
    api.ok("writeFile", json!(["/home/user/acp-test-agent.mjs", AGENT])).await;
    api.ok(
        "scheduleCron",
        json!([{"id": "nightly", "schedule": "0 3 * * *",
        "action": {"type": "session", "agentType": "test", "prompt": "hello", "cwd": "/home/user"}}]),
    )
    .await;
    assert_eq!(
        job(&api.ok("listCronJobs", json!([])).await, "nightly")["nextRun"].as_u64(),
        Some(T0 + 3 * 60 * MINUTE)
    );
    set_clock(&server, T0 + 3 * 60 * MINUTE).await;
    let runs = ended_runs(&api, "nightly", 1).await;
    let run = &runs[0];
    assert_eq!(run["status"], "complete", "{run}");
    let session = run["sessionId"].as_str().expect("the run names its session").to_string();
    let transcript = api.ok("getSessionEvents", json!([session])).await;
    let updates: Vec<&str> = transcript
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event"]["params"]["update"]["sessionUpdate"].as_str())
        .collect();
    assert!(updates.contains(&"agent_message_chunk") && updates.contains(&"tool_call"), "{transcript}");
    // The agent's tool wrote its file (the permission was allowed by the preset).
    assert!(api.ok("exists", json!(["/home/user/from-agent.txt"])).await == true);
    // The session was closed after the prompt.
    let persisted = api.ok("listPersistedSessions", json!([])).await;
    assert!(persisted.as_array().unwrap().iter().any(|s| s["sessionId"] == session), "{persisted}");
    assert_eq!(api.ok("listSessions", json!([])).await, json!([]));
}

/// The real rivetkit client (2.3.19, each encoding, each against its own server since the
/// scenario moves the server's clock): scheduleCron, cronEvent on a connection, listCronJobs,
/// listCronRuns, cancelCronJob (clients/node/cron.mjs).
#[test]
fn the_rivetkit_client_schedules_receives_cron_events_and_cancels() {
    let runs: Vec<_> = ["bare", "json", "cbor"]
        .into_iter()
        .map(|encoding| {
            let server = start(&[]);
            let mut command = common::node::scenario(&server.url, encoding, &format!("node-{encoding}"), "cron");
            (encoding, server, std::thread::spawn(move || command.output().expect("running node")))
        })
        .collect();
    for (encoding, server, run) in runs {
        common::node::assert_done(encoding, &run.join().unwrap());
        drop(server);
    }
}
