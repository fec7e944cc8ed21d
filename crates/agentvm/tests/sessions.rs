//! Agent sessions through the server's actions, with the scripted ACP test agent running
//! inside the VM (declared as an operator agent in the config file): the prompt turn with its
//! permission request answered by `respondPermission`, the file and terminal requests served
//! from the VM, the durable transcript, a crashing agent.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::http::Api;
use common::server::TestServer;
use serde_json::{json, Value};

const AGENT: &str = include_str!("fixtures/acp-test-agent.mjs");

fn server(permissions: &str) -> (TestServer, tempfile::NamedTempFile) {
    let mut config = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    write!(
        config,
        "[actors.vm.sessions]\npermissions = \"{permissions}\"\npermission_timeout_seconds = 2\n\n\
         [agents.test]\ncommand = [\"node\", \"/home/user/acp-test-agent.mjs\"]\n"
    )
    .unwrap();
    let server = TestServer::start_with(&["--config", config.path().to_str().unwrap()]);
    (server, config)
}

async fn install_agent(api: &Api<'_>) {
    api.ok("writeFile", json!(["/home/user/acp-test-agent.mjs", AGENT])).await;
}

/// Polls `getSession` until a permission request is pending; its id.
async fn pending_permission(api: &Api<'_>, session: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = api.ok("getSession", json!([session])).await;
        if let Some(id) = info["pendingPermissions"].as_array().and_then(|p| p.first()).and_then(Value::as_str) {
            return id.to_string();
        }
        assert!(Instant::now() < deadline, "no permission request: {info}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `sendPrompt(session, text)` on its own task (it returns when the turn ends); the
/// status and body.
fn prompt_in_background(api: &Api<'_>, session: &str, text: &str) -> tokio::task::JoinHandle<(u16, Value)> {
    let (url, args) = (api.url("sendPrompt"), json!({"args": [session, text]}));
    tokio::spawn(async move {
        let response = reqwest::Client::new().post(url).json(&args).send().await.unwrap();
        (response.status().as_u16(), response.json::<Value>().await.unwrap())
    })
}

/// Polls the VM's event log until it holds `agentCrashed` for `session`.
async fn wait_for_agent_crashed(api: &Api<'_>, session: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = api.ok("getVmEvents", json!([{}])).await;
        let crashed = |e: &Value| e["name"] == "agentCrashed" && e["data"]["sessionId"] == session;
        if events.as_array().unwrap().iter().any(crashed) {
            return;
        }
        assert!(Instant::now() < deadline, "no agentCrashed: {events}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `agentvm agents install AGENT` into the server's data directory (from npm).
fn install_builtin(server: &TestServer, agent: &str) {
    let install = std::process::Command::new(env!("CARGO_BIN_EXE_agentvm"))
        .args(["agents", "install", agent, "--data-dir"])
        .arg(server.data.path().join("data"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&install.stderr);
    assert!(install.status.success(), "installing {agent} (is the npm registry reachable?): {stderr}");
}

fn update_kinds(events: &Value) -> Vec<String> {
    events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event"]["params"]["update"]["sessionUpdate"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_turn_with_a_permission_files_terminals_and_a_transcript() {
    let (server, _config) = server("ask");
    let api = Api::new(&server, "session-turn");
    install_agent(&api).await;

    let created = api.ok("createSession", json!(["test", {"cwd": "/home/user"}])).await;
    let session = created["sessionId"].as_str().unwrap().to_string();
    assert_eq!(created["agentType"], "test");
    assert_eq!(created["capabilities"]["loadSession"], true, "{created}");
    let listed = api.ok("listSessions", json!([])).await;
    assert_eq!(listed, json!([{"sessionId": session, "agentType": "test"}]));
    // The agent is an ordinary process of the VM.
    let processes = api.ok("allProcesses", json!([])).await;
    assert!(processes.as_array().unwrap().iter().any(|p| p["command"] == "node"), "{processes}");

    let prompt = prompt_in_background(&api, &session, "hello");
    let permission = pending_permission(&api, &session).await;
    let bad = api.call("respondPermission", json!([session, permission, "maybe"])).await;
    assert_eq!(bad.0, 400, "{bad:?}");
    api.ok("respondPermission", json!([session, permission, "once"])).await;
    let (status, result) = prompt.await.unwrap();
    assert_eq!(status, 200, "{result}");
    let result = &result["output"];
    assert_eq!(result["response"]["result"]["stopReason"], "end_turn", "{result}");
    assert!(result["text"].as_str().unwrap().contains("The terminal said: done"), "{result}");

    // The agent's file and terminal requests ran in the VM, as its user.
    let file = api
        .ok(
            "exec",
            json!(["cat /home/user/from-agent.txt /home/user/from-terminal.txt; stat -c %U /home/user/from-agent.txt"]),
        )
        .await;
    assert!(file["stdout"].as_str().unwrap().contains("term-ok"), "{file}");
    assert!(file["stdout"].as_str().unwrap().ends_with("user\n"), "{file}");

    // The transcript: durable, numbered, in order; the same through both reads.
    let events = api.ok("getSessionEvents", json!([session])).await;
    let seqs: Vec<u64> = events.as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    let kinds = update_kinds(&events);
    assert!(
        kinds.starts_with(&[
            "agent_message_chunk".into(),
            "agent_message_chunk".into(),
            "agent_message_chunk".into(),
            "plan".into(),
            "tool_call".into()
        ]),
        "{kinds:?}"
    );
    assert!(kinds.contains(&"tool_call_update".to_string()), "{kinds:?}");
    assert!(events.as_array().unwrap().iter().any(|e| e["event"]["method"] == "session/request_permission"));
    let sequenced = api.ok("getSequencedEvents", json!([session, {"since": 2}])).await;
    assert_eq!(sequenced.as_array().unwrap().len(), seqs.len() - 3);
    assert_eq!(sequenced[0]["sequenceNumber"], 3);
    assert_eq!(sequenced[0]["notification"], events[3]["event"]);

    // Modes and config options, as the agent announced them, kept current.
    assert_eq!(api.ok("getModes", json!([session])).await["currentModeId"], "default");
    api.ok("setMode", json!([session, "plan"])).await;
    assert_eq!(api.ok("getModes", json!([session])).await["currentModeId"], "plan");
    let options = api.ok("getConfigOptions", json!([session])).await;
    let model = options.as_array().unwrap().iter().find(|o| o["category"] == "model").cloned().unwrap();
    assert_eq!(
        model["allowedValues"],
        json!([{"id": "mock-fast", "label": "mock-fast"}, {"id": "mock-smart", "label": "mock-smart"}])
    );
    api.ok("setModel", json!([session, "mock-smart"])).await;
    api.ok("setThoughtLevel", json!([session, "high"])).await;
    let options = api.ok("getConfigOptions", json!([session])).await;
    let current: Vec<&Value> = options.as_array().unwrap().iter().map(|o| &o["currentValue"]).collect();
    assert_eq!(current, [&json!("mock-smart"), &json!("high")], "{options}");
    let raw = api.ok("rawSend", json!([session, "session/set_mode", {"modeId": "default"}])).await;
    assert_eq!(raw["jsonrpc"], "2.0", "{raw}");

    // Close: no longer live, still persisted; the agent is gone.
    api.ok("closeSession", json!([session])).await;
    assert_eq!(api.ok("listSessions", json!([])).await, json!([]));
    let (status, body) = api.call("sendPrompt", json!([session, "hello"])).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("closed")), "{body}");
    let persisted = api.ok("listPersistedSessions", json!([])).await;
    assert_eq!(persisted[0]["sessionId"], session.as_str());
    let after = api.ok("getSessionEvents", json!([session])).await;
    assert_eq!(after.as_array().unwrap()[..seqs.len()], events.as_array().unwrap()[..], "the transcript changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_permission_is_rejected_and_a_crash_is_reported() {
    let (server, _config) = server("ask");
    let api = Api::new(&server, "session-fail");
    install_agent(&api).await;
    let session = api.ok("createSession", json!(["test"])).await["sessionId"].as_str().unwrap().to_string();

    // Nobody answers: after the preset's 2 s the request is rejected, and the turn ends.
    let result = api.ok("sendPrompt", json!([session, "hello"])).await;
    assert_eq!(result["response"]["result"]["stopReason"], "end_turn", "{result}");
    assert!(result["text"].as_str().unwrap().contains("permission rejected"), "{result}");
    let (code, _) = (api.ok("exec", json!(["test -e /home/user/from-agent.txt; echo $?"])).await, ());
    assert_eq!(code["stdout"], "1\n", "the tool must not have run");

    // A crash mid-turn: an error on the prompt, agentCrashed, and the VM keeps working.
    let (status, body) = api.call("sendPrompt", json!([session, "crash"])).await;
    assert_eq!(status, 502, "{body}");
    assert!(body["message"].as_str().unwrap().contains("exited"), "{body}");
    wait_for_agent_crashed(&api, &session).await;
    assert_eq!(api.ok("exec", json!(["echo still-here"])).await["stdout"], "still-here\n");
    let other = api.ok("createSession", json!(["test"])).await["sessionId"].as_str().unwrap().to_string();
    assert_ne!(other, session);

    // Unknown agents and agents that are not installed are clear errors.
    let (status, body) = api.call("createSession", json!(["nope"])).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = api.call("createSession", json!(["claude"])).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("agentvm agents install claude"), "{body}");
}

/// Acceptance 1 through the real rivetkit client (2.3.19, every encoding).
#[test]
fn the_rivetkit_client_drives_a_session_with_its_events_and_permission() {
    let (server, _config) = server("ask");
    for encoding in ["bare", "json", "cbor"] {
        let key = format!("sessions-{encoding}");
        let output = common::node::scenario(&server.url, encoding, &key, "sessions").output().unwrap();
        common::node::assert_done(encoding, &output);
    }
}

/// Acceptance 2: the real pi agent (installed with `agentvm agents install pi`) in a VM, against
/// the scripted OpenAI-compatible mock on host loopback, reached through a preset `forward`: its
/// bash tool writes a file inside the VM, and the turn streams its updates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_pi_agent_runs_a_tool_in_the_vm_against_the_mock_llm() {
    let llm = common::mock_llm::MockLlm::openai().await;
    let mut config = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    write!(config, "[actors.vm.network]\nforward = [{{ port = 11434, to = \"127.0.0.1:{}\" }}]\n", llm.port()).unwrap();
    let path = config.path().to_str().unwrap().to_string();
    let args = ["--config", path.as_str(), "--idle-timeout", "1"];
    let server = TestServer::start_with(&args);
    install_builtin(&server, "pi");

    let api = Api::new(&server, "pi-session");
    // pi's provider config, in the VM, pointing at the forward.
    let staging = tempfile::tempdir().unwrap();
    common::pi::write_config(staging.path(), "http://127.0.0.1:11434/v1");
    for name in ["models.json", "settings.json"] {
        let content = std::fs::read_to_string(staging.path().join(name)).unwrap();
        api.ok("mkdir", json!(["/home/user/.pi-agent", {"recursive": true}])).await;
        api.ok("writeFile", json!([format!("/home/user/.pi-agent/{name}"), content])).await;
    }
    let created = api
        .ok(
            "createSession",
            json!(["pi", {"cwd": "/home/user", "env": {"PI_CODING_AGENT_DIR": "/home/user/.pi-agent"}}]),
        )
        .await;
    let session = created["sessionId"].as_str().unwrap().to_string();
    let result = api.ok("sendPrompt", json!([session, "Create out.txt containing hi"])).await;
    assert_eq!(result["response"]["result"]["stopReason"], "end_turn", "{result}");
    let out = api.ok("exec", json!(["cat /home/user/out.txt"])).await;
    assert_eq!(out["stdout"], "hi\n", "{out}");
    let kinds = update_kinds(&api.ok("getSessionEvents", json!([session])).await);
    assert!(
        kinds.contains(&"tool_call".to_string()) && kinds.contains(&"agent_message_chunk".to_string()),
        "{kinds:?}"
    );
    assert!(llm.model_calls().len() >= 2, "pi called the mock: {:?}", llm.model_calls().len());
    // pi runs inside the VM: its process is there.
    let processes = api.ok("allProcesses", json!([])).await;
    assert!(processes.as_array().unwrap().iter().any(|p| p["args"].to_string().contains("pi")), "{processes}");

    // Acceptance 5 with pi: the VM sleeps, the server restarts; the next prompt resumes the
    // session (pi restores it with session/load) and pi sends the earlier turn to the model.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.vm_inits().is_empty() {
        assert!(Instant::now() < deadline, "the VM never slept");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let server = TestServer::start_in(server.stop_keep_data(), &args);
    let api = Api::new(&server, "pi-session");
    assert!(!api.ok("getSessionEvents", json!([session])).await.as_array().unwrap().is_empty());
    llm.push_reply(common::mock_llm::Reply::EchoUserMessages);
    let again = api.ok("sendPrompt", json!([session, "What did I ask before?"])).await;
    assert!(again["text"].as_str().unwrap().contains("Create out.txt containing hi"), "{again}");
    api.ok("closeSession", json!([session])).await;
}

/// Acceptance 5 with the scripted agent: after the VM sleeps and after a server restart, the
/// transcript is readable without booting the VM, and a prompt resumes the same session (the
/// agent restores it with `session/load` and sees the earlier turn); the replay is not recorded
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_survives_sleep_and_restart_and_resumes_with_its_history() {
    let mut config = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    write!(
        config,
        "[actors.vm.sessions]\npermissions = \"allow\"\n\n[agents.test]\ncommand = [\"node\", \"/home/user/acp-test-agent.mjs\"]\n"
    )
    .unwrap();
    let path = config.path().to_str().unwrap().to_string();
    let args = ["--config", path.as_str(), "--idle-timeout", "1"];
    let server = TestServer::start_with(&args);
    let api = Api::new(&server, "session-resume");
    install_agent(&api).await;
    let session = api.ok("createSession", json!(["test"])).await["sessionId"].as_str().unwrap().to_string();
    let first = api.ok("sendPrompt", json!([session, "hello there"])).await;
    assert_eq!(first["response"]["result"]["stopReason"], "end_turn", "{first}");
    let transcript = api.ok("getSessionEvents", json!([session])).await;

    let asleep = |server: &TestServer| server.vm_inits().is_empty();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !asleep(&server) {
        assert!(Instant::now() < deadline, "the VM never slept");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(api.ok("getSessionEvents", json!([session])).await, transcript);
    assert_eq!(api.ok("listPersistedSessions", json!([])).await[0]["sessionId"], session.as_str());
    assert!(asleep(&server), "reading the transcript booted the VM");

    let data = server.stop_keep_data();
    let server = TestServer::start_in(data, &args);
    let api = Api::new(&server, "session-resume");
    assert_eq!(api.ok("getSessionEvents", json!([session])).await, transcript);
    assert!(asleep(&server), "reading the transcript booted the VM");

    // The next prompt resumes it: the agent remembers the first turn.
    let again = api.ok("sendPrompt", json!([session, "echo-history"])).await;
    assert!(again["text"].as_str().unwrap().contains("hello there"), "{again}");
    let after = api.ok("getSessionEvents", json!([session])).await;
    let before = transcript.as_array().unwrap();
    assert_eq!(&after.as_array().unwrap()[..before.len()], &before[..], "the transcript was rewritten");
    let replayed = after.as_array().unwrap().len() - before.len();
    assert!(replayed <= 4, "the session/load replay was recorded again: {replayed} new events");
    assert_eq!(api.ok("resumeSession", json!([session])).await, json!({"sessionId": session}));

    // A closed session stays readable but is not resumed.
    api.ok("closeSession", json!([session])).await;
    let (status, body) = api.call("sendPrompt", json!([session, "hello"])).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("closed")), "{body}");
    assert!(!api.ok("getSessionEvents", json!([session])).await.as_array().unwrap().is_empty());
}

/// Acceptance 6: killing the agent process mid-turn gives `agentCrashed` and an error on
/// sendPrompt; the VM and the other sessions keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_agent_mid_turn_fails_its_prompt_only() {
    let (server, _config) = server("allow");
    let api = Api::new(&server, "session-kill");
    install_agent(&api).await;
    let doomed = api.ok("createSession", json!(["test"])).await["sessionId"].as_str().unwrap().to_string();
    let other = api.ok("createSession", json!(["test"])).await["sessionId"].as_str().unwrap().to_string();
    let agents: Vec<i64> = api
        .ok("allProcesses", json!([]))
        .await
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["command"] == "node")
        .map(|p| p["pid"].as_i64().unwrap())
        .collect();
    assert_eq!(agents.len(), 2, "two agents run");

    let prompt = prompt_in_background(&api, &doomed, "slow");
    // Once the slow turn streams, kill its agent (the first one started).
    let deadline = Instant::now() + Duration::from_secs(20);
    while update_kinds(&api.ok("getSessionEvents", json!([doomed])).await).is_empty() {
        assert!(Instant::now() < deadline, "the slow turn never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    api.ok("killProcess", json!([agents[0]])).await;
    let (status, body) = prompt.await.unwrap();
    assert_eq!(status, 502, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("signal 9") || body["message"].as_str().unwrap().contains("137"),
        "{body}"
    );
    wait_for_agent_crashed(&api, &doomed).await;
    // The other session and the VM go on.
    let fine = api.ok("sendPrompt", json!([other, "hello"])).await;
    assert_eq!(fine["response"]["result"]["stopReason"], "end_turn", "{fine}");
    assert_eq!(api.ok("exec", json!(["echo ok"])).await["stdout"], "ok\n");
    let live = api.ok("listSessions", json!([])).await;
    assert_eq!(live.as_array().unwrap().len(), 1, "{live}");
}

/// Acceptance 3: the real Claude Code agent (claude-agent-acp on Node 22, both from npm) in a VM
/// against the scripted Anthropic mock through a preset forward: it asks permission for its
/// Bash tool; "reject" stops the tool, "once" lets it write the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_claude_agent_asks_permission_for_its_tool() {
    let llm = common::mock_llm::MockLlm::anthropic().await;
    llm.set_command("echo hi > /home/user/claude.txt");
    let mut config = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    write!(config, "[actors.vm.network]\nforward = [{{ port = 8765, to = \"127.0.0.1:{}\" }}]\n", llm.port()).unwrap();
    let server = TestServer::start_with(&["--config", config.path().to_str().unwrap()]);
    install_builtin(&server, "claude");

    let api = Api::new(&server, "claude-session");
    let env = json!({"ANTHROPIC_BASE_URL": "http://127.0.0.1:8765", "ANTHROPIC_API_KEY": "mock-key"});
    let session =
        api.ok("createSession", json!(["claude", {"env": env}])).await["sessionId"].as_str().unwrap().to_string();

    for (reply, expect_file) in [("reject", false), ("once", true)] {
        let prompt = prompt_in_background(&api, &session, "Create claude.txt");
        let permission = pending_permission(&api, &session).await;
        api.ok("respondPermission", json!([session, permission, reply])).await;
        let (status, result) = prompt.await.unwrap();
        assert_eq!(status, 200, "{reply}: {result}");
        let exists = api.ok("exec", json!(["test -e /home/user/claude.txt && echo yes || echo no"])).await;
        assert_eq!(exists["stdout"], if expect_file { "yes\n" } else { "no\n" }, "after {reply}: {result}");
    }
    let events = api.ok("getSessionEvents", json!([session])).await;
    assert!(
        events.as_array().unwrap().iter().filter(|e| e["event"]["method"] == "session/request_permission").count() >= 2
    );
    api.ok("closeSession", json!([session])).await;
}
