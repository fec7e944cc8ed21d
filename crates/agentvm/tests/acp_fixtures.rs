//! The test fixtures of the ACP session work (issue 14), verified outside VMs:
//! - the scripted ACP test agent (tests/fixtures/acp-test-agent.mjs), driven by the small ACP
//!   client below over the child's stdio: the allow and reject paths, cancel, the failure
//!   directives, misbehaving handshakes, `session/load` after an agent restart;
//! - the scripted mock LLMs (tests/common/mock_llm.rs): their wire format, and the OpenAI one with
//!   the real **pi** agent (pi-acp 0.0.23 + pi 0.73.1, installed by tests/common/pi.rs with `npm ci`
//!   from tests/fixtures/pi into target/agents-cache/pi on first use; the test fails when npm cannot).
//!
//! The client is a test tool, not the product's ACP client: it answers the agent's requests itself
//! (files on the host, terminals as host processes run to completion) and keeps every message.
mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::mock_llm::{MockLlm, Reply, AFTER_TOOL_TEXT, OPENAI_MODEL};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const TEST_AGENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/acp-test-agent.mjs");
/// The longest a test waits for one message from an agent.
const STEP: Duration = Duration::from_secs(30);

// ---- A small ACP client over a child's stdio. ---------------------------------------------------

/// How the client answers `session/request_permission`.
#[derive(Clone, Copy)]
enum Permission {
    /// Selects the option of this kind (`allow_once`, `reject_once`…).
    Kind(&'static str),
    /// Sends `session/cancel`, then answers the request `cancelled`, as ACP requires.
    CancelTurn,
}

enum Next {
    Line(String),
    Eof,
    Quiet,
}

struct Acp {
    child: Child,
    pgid: nix::unistd::Pid,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
    next_id: u64,
    /// Every message from the agent, in order (cleared by `take`).
    received: Vec<Value>,
    permission: Permission,
    terminals: HashMap<String, std::process::Output>,
}

impl Drop for Acp {
    fn drop(&mut self) {
        // The agent and whatever it started (pi-acp runs pi) share our process group.
        let _ = nix::sys::signal::killpg(self.pgid, nix::sys::signal::Signal::SIGKILL);
    }
}

impl Acp {
    fn spawn(program: &Path, args: &[&str], env: &[(&str, String)], cwd: &Path) -> Self {
        let mut command = Command::new(program);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(cwd)
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        let pid = child.id().expect("agent pid");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf).await {
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self {
            pgid: nix::unistd::Pid::from_raw(pid as i32),
            stdin: child.stdin.take(),
            stdout: BufReader::new(child.stdout.take().expect("stdout")).lines(),
            child,
            stderr,
            next_id: 1,
            received: Vec::new(),
            permission: Permission::Kind("allow_once"),
            terminals: HashMap::new(),
        }
    }

    fn test_agent(home: &Path, handshake: Option<&str>) -> Self {
        let mut env = vec![("HOME", home.display().to_string())];
        env.extend(handshake.map(|h| ("ACP_TEST_AGENT_HANDSHAKE", h.to_string())));
        Self::spawn(Path::new("node"), &[TEST_AGENT], &env, home)
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    async fn send(&mut self, message: Value) {
        let line = format!("{message}\n");
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(line.as_bytes()).await.expect("writing to the agent");
    }

    async fn notify(&mut self, method: &str, params: Value) {
        self.send(json!({"jsonrpc": "2.0", "method": method, "params": params})).await;
    }

    async fn start(&mut self, method: &str, params: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})).await;
        id
    }

    async fn next_line(&mut self, wait: Duration) -> Next {
        match tokio::time::timeout(wait, self.stdout.next_line()).await {
            Err(_) => Next::Quiet,
            Ok(Ok(Some(line))) => Next::Line(line),
            Ok(Ok(None) | Err(_)) => Next::Eof,
        }
    }

    async fn next_message(&mut self) -> Value {
        loop {
            match self.next_line(STEP).await {
                Next::Line(line) if line.trim().is_empty() => continue,
                Next::Line(line) => {
                    return serde_json::from_str(&line).unwrap_or_else(|e| {
                        panic!("not JSON from the agent ({e}): {line:?}\nstderr:\n{}", self.stderr())
                    })
                }
                Next::Eof => panic!("the agent closed its stdout; stderr:\n{}", self.stderr()),
                Next::Quiet => panic!("no message from the agent in {STEP:?}; stderr:\n{}", self.stderr()),
            }
        }
    }

    /// Sends a request and serves the agent until its answer arrives.
    async fn call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        let id = self.start(method, params).await;
        self.answer_of(id).await
    }

    async fn answer_of(&mut self, id: u64) -> Result<Value, Value> {
        loop {
            let message = self.next_message().await;
            self.received.push(message.clone());
            if message.get("method").is_some() {
                if message.get("id").is_some() {
                    self.serve(&message).await;
                }
            } else if message["id"] == id {
                return match message.get("error") {
                    Some(error) => Err(error.clone()),
                    None => Ok(message["result"].clone()),
                };
            } else {
                panic!("an answer to a request we did not send: {message}");
            }
        }
    }

    /// Answers one request of the agent.
    async fn serve(&mut self, request: &Value) {
        let p = &request["params"];
        let text = |key: &str| p[key].as_str().unwrap_or_default().to_string();
        let result: Result<Value, String> = match request["method"].as_str().unwrap_or_default() {
            "session/request_permission" => match self.permission {
                Permission::Kind(kind) => {
                    let options = p["options"].as_array().cloned().unwrap_or_default();
                    let option = options.iter().find(|o| o["kind"] == kind).expect("an option of that kind");
                    Ok(json!({"outcome": {"outcome": "selected", "optionId": option["optionId"]}}))
                }
                Permission::CancelTurn => {
                    self.notify("session/cancel", json!({"sessionId": p["sessionId"]})).await;
                    Ok(json!({"outcome": {"outcome": "cancelled"}}))
                }
            },
            "fs/write_text_file" => {
                std::fs::write(text("path"), text("content")).map(|()| Value::Null).map_err(|e| e.to_string())
            }
            "fs/read_text_file" => {
                std::fs::read_to_string(text("path")).map(|c| json!({"content": c})).map_err(|e| e.to_string())
            }
            "terminal/create" => {
                let args: Vec<String> = serde_json::from_value(p["args"].clone()).unwrap_or_default();
                let output = Command::new(text("command")).args(args).current_dir(text("cwd")).output().await;
                output.map_err(|e| e.to_string()).map(|output| {
                    let id = format!("term-{}", self.terminals.len() + 1);
                    self.terminals.insert(id.clone(), output);
                    json!({"terminalId": id})
                })
            }
            method @ ("terminal/wait_for_exit" | "terminal/output" | "terminal/release") => {
                let id = text("terminalId");
                match self.terminals.get(&id) {
                    None => Err(format!("no terminal {id}")),
                    Some(out) => {
                        let exit = json!({"exitCode": out.status.code(), "signal": null});
                        Ok(match method {
                            "terminal/wait_for_exit" => exit,
                            "terminal/output" => {
                                let output = String::from_utf8_lossy(&out.stdout).into_owned();
                                json!({"output": output, "truncated": false, "exitStatus": exit})
                            }
                            _ => {
                                self.terminals.remove(&id);
                                Value::Null
                            }
                        })
                    }
                }
            }
            other => Err(format!("Method not found: {other}")),
        };
        let answer = match result {
            Ok(result) => json!({"jsonrpc": "2.0", "id": request["id"], "result": result}),
            Err(message) => {
                json!({"jsonrpc": "2.0", "id": request["id"], "error": {"code": -32603, "message": message}})
            }
        };
        self.send(answer).await;
    }

    async fn initialize(&mut self) -> Value {
        let capabilities = json!({"fs": {"readTextFile": true, "writeTextFile": true}, "terminal": true});
        let params = json!({"protocolVersion": 1, "clientCapabilities": capabilities, "clientInfo": {"name": "acp-fixtures-test", "version": "0"}});
        self.call("initialize", params).await.expect("initialize")
    }

    async fn new_session(&mut self, cwd: &Path) -> (String, Value) {
        let result = self.call("session/new", json!({"cwd": cwd, "mcpServers": []})).await.expect("session/new");
        (result["sessionId"].as_str().expect("a sessionId").to_string(), result)
    }

    async fn prompt(&mut self, session: &str, text: &str) -> Result<Value, Value> {
        self.call("session/prompt", json!({"sessionId": session, "prompt": [{"type": "text", "text": text}]})).await
    }

    /// The messages received since the last `take`, as a trace: `update:<kind>` for a
    /// `session/update`, the method for a request of the agent; answers are left out.
    fn take(&mut self) -> (Vec<String>, Vec<Value>) {
        let messages = std::mem::take(&mut self.received);
        let trace = messages
            .iter()
            .filter_map(|m| match m["method"].as_str() {
                Some("session/update") => Some(format!("update:{}", m["params"]["update"]["sessionUpdate"].as_str()?)),
                Some(method) => Some(method.to_string()),
                None => None,
            })
            .collect();
        (trace, messages)
    }

    /// Closes the agent's stdin and waits for it to exit.
    async fn close(mut self) -> ExitStatus {
        self.stdin = None;
        self.exit_status().await
    }

    async fn exit_status(&mut self) -> ExitStatus {
        tokio::time::timeout(STEP, self.child.wait()).await.expect("the agent exits").expect("wait")
    }
}

/// The concatenated text of the `agent_message_chunk`s among `messages`.
fn agent_text(messages: &[Value]) -> String {
    updates(messages, "agent_message_chunk").filter_map(|u| u["content"]["text"].as_str()).collect()
}

fn updates<'a>(messages: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    messages
        .iter()
        .filter(|m| m["method"] == "session/update")
        .map(|m| &m["params"]["update"])
        .filter(move |u| u["sessionUpdate"] == kind)
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("agentvm-acp-").tempdir().expect("temp dir")
}

// ---- The scripted test agent. -----------------------------------------------------------------

#[tokio::test]
async fn test_agent_hello_allowed_once_writes_a_file_and_runs_a_terminal() {
    let home = temp_dir();
    let mut acp = Acp::test_agent(home.path(), None);
    let init = acp.initialize().await;
    assert_eq!(init["protocolVersion"], 1);
    assert_eq!(init["agentCapabilities"]["loadSession"], true);
    assert_eq!(init["agentInfo"]["name"], "acp-test-agent");

    let (session, created) = acp.new_session(home.path()).await;
    assert_eq!(created["modes"]["currentModeId"], "default");
    assert_eq!(created["modes"]["availableModes"].as_array().map(Vec::len), Some(2));
    let categories: Vec<&Value> =
        created["configOptions"].as_array().expect("configOptions").iter().map(|o| &o["category"]).collect();
    assert_eq!(categories, [&json!("model"), &json!("thought_level")]);
    acp.take();

    let result = acp.prompt(&session, "hello").await.expect("prompt");
    assert_eq!(result["stopReason"], "end_turn");
    let (trace, messages) = acp.take();
    let expected = common::acp_agent::HELLO_TRACE;
    assert_eq!(trace, expected);
    let permission = messages.iter().find(|m| m["method"] == "session/request_permission").expect("permission");
    let kinds: Vec<&Value> =
        permission["params"]["options"].as_array().expect("options").iter().map(|o| &o["kind"]).collect();
    assert_eq!(kinds, [&json!("allow_once"), &json!("allow_always"), &json!("reject_once"), &json!("reject_always")]);
    assert_eq!(updates(&messages, "tool_call").next().expect("tool call")["kind"], "edit");
    let statuses: Vec<&Value> = updates(&messages, "tool_call_update").map(|u| &u["status"]).collect();
    assert_eq!(statuses, [&json!("in_progress"), &json!("completed")]);
    assert!(agent_text(&messages).ends_with("The terminal said: done (exit code 0)."), "{}", agent_text(&messages));
    let dir = home.path();
    assert_eq!(std::fs::read_to_string(dir.join("from-agent.txt")).unwrap(), "written by acp-test-agent\n");
    assert_eq!(std::fs::read_to_string(dir.join("from-terminal.txt")).unwrap(), "term-ok\n");

    // The prompt's `write:<path>` directive, and `read:<path>`.
    let target = dir.join("elsewhere.txt");
    let result = acp.prompt(&session, &format!("hello write:{}", target.display())).await.expect("prompt");
    assert_eq!(result["stopReason"], "end_turn");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "written by acp-test-agent\n");
    acp.take();
    std::fs::write(dir.join("note.txt"), "a note").unwrap();
    let result = acp.prompt(&session, &format!("read:{}", dir.join("note.txt").display())).await.expect("prompt");
    assert_eq!(result["stopReason"], "end_turn");
    let (trace, messages) = acp.take();
    assert_eq!(trace, ["fs/read_text_file", "update:agent_message_chunk"]);
    assert!(agent_text(&messages).ends_with(": a note"), "{}", agent_text(&messages));
    acp.prompt(&session, "read:/nonexistent/file").await.expect("prompt");
    let (_, messages) = acp.take();
    assert!(
        agent_text(&messages).starts_with("read failed: fs/read_text_file: No such file"),
        "{}",
        agent_text(&messages)
    );

    // Modes, config options, unknown methods, unknown sessions.
    assert_eq!(acp.call("session/set_mode", json!({"sessionId": session, "modeId": "plan"})).await, Ok(json!({})));
    let (trace, messages) = acp.take();
    assert_eq!(trace, ["update:current_mode_update"]);
    assert_eq!(updates(&messages, "current_mode_update").next().unwrap()["currentModeId"], "plan");
    let set = json!({"sessionId": session, "configId": "model", "value": "mock-smart"});
    let options = acp.call("session/set_config_option", set).await.expect("set_config_option");
    assert_eq!(options["configOptions"][0]["currentValue"], "mock-smart");
    let bad = acp.call("session/set_mode", json!({"sessionId": session, "modeId": "nope"})).await.unwrap_err();
    assert_eq!(bad["code"], -32602);
    let unknown = acp.call("session/fork", json!({"sessionId": session})).await.unwrap_err();
    assert_eq!(unknown["code"], -32601);
    let missing = acp.prompt("sess-unknown", "hello").await.unwrap_err();
    assert_eq!(missing["code"], -32002);

    assert!(acp.close().await.success());
}

#[tokio::test]
async fn test_agent_reject_fails_the_tool_and_ends_the_turn() {
    let home = temp_dir();
    let mut acp = Acp::test_agent(home.path(), None);
    acp.initialize().await;
    let (session, _) = acp.new_session(home.path()).await;
    acp.take();
    for kind in ["reject_once", "reject_always"] {
        acp.permission = Permission::Kind(kind);
        let result = acp.prompt(&session, "hello").await.expect("prompt");
        assert_eq!(result["stopReason"], "end_turn");
        let (trace, messages) = acp.take();
        assert_eq!(trace[5..], ["session/request_permission", "update:tool_call_update", "update:agent_message_chunk"]);
        assert_eq!(updates(&messages, "tool_call_update").next().unwrap()["status"], "failed");
        assert!(agent_text(&messages).ends_with("permission rejected"));
    }
    assert!(!home.path().join("from-agent.txt").exists());
    assert!(!home.path().join("from-terminal.txt").exists());

    // allow_always: the session asks no more.
    acp.permission = Permission::Kind("allow_always");
    acp.prompt(&session, "hello").await.expect("prompt");
    acp.take();
    acp.permission = Permission::Kind("reject_once");
    let result = acp.prompt(&session, "hello").await.expect("prompt");
    assert_eq!(result["stopReason"], "end_turn");
    let (trace, _) = acp.take();
    assert!(!trace.iter().any(|t| t == "session/request_permission"), "{trace:?}");
    assert!(home.path().join("from-agent.txt").exists());
}

#[tokio::test]
async fn test_agent_cancel_ends_the_turn_cancelled() {
    let home = temp_dir();
    let mut acp = Acp::test_agent(home.path(), None);
    acp.initialize().await;
    let (session, _) = acp.new_session(home.path()).await;
    acp.take();

    // Cancel while the agent waits for a permission answer.
    acp.permission = Permission::CancelTurn;
    let result = acp.prompt(&session, "hello").await.expect("prompt");
    assert_eq!(result["stopReason"], "cancelled");
    let (trace, _) = acp.take();
    assert!(!trace.iter().any(|t| t == "fs/write_text_file"), "{trace:?}");

    // Cancel a slow turn after its first chunk.
    let id =
        acp.start("session/prompt", json!({"sessionId": session, "prompt": [{"type": "text", "text": "slow"}]})).await;
    let first = acp.next_message().await;
    assert_eq!(first["params"]["update"]["sessionUpdate"], "agent_message_chunk");
    acp.notify("session/cancel", json!({"sessionId": session})).await;
    let result = acp.answer_of(id).await.expect("prompt");
    assert_eq!(result["stopReason"], "cancelled");
    let (trace, _) = acp.take();
    assert!(trace.len() < 24, "the turn went on after the cancel: {trace:?}");
}

#[tokio::test]
async fn test_agent_failure_directives() {
    let home = temp_dir();

    // crash: one chunk, then exit code 3.
    let mut acp = Acp::test_agent(home.path(), None);
    acp.initialize().await;
    let (session, _) = acp.new_session(home.path()).await;
    acp.start("session/prompt", json!({"sessionId": session, "prompt": [{"type": "text", "text": "crash"}]})).await;
    assert_eq!(acp.next_message().await["params"]["update"]["sessionUpdate"], "agent_message_chunk");
    assert!(matches!(acp.next_line(STEP).await, Next::Eof));
    assert_eq!(acp.exit_status().await.code(), Some(3));
    assert!(acp.stderr().contains("crashing mid-turn as asked"), "{}", acp.stderr());

    // garbage: one chunk, then a line that is not JSON.
    let mut acp = Acp::test_agent(home.path(), None);
    acp.initialize().await;
    let (session, _) = acp.new_session(home.path()).await;
    acp.start("session/prompt", json!({"sessionId": session, "prompt": [{"type": "text", "text": "garbage"}]})).await;
    assert_eq!(acp.next_message().await["params"]["update"]["sessionUpdate"], "agent_message_chunk");
    match acp.next_line(STEP).await {
        Next::Line(line) => assert!(serde_json::from_str::<Value>(&line).is_err(), "{line}"),
        _ => panic!("no garbage line"),
    }

    // hang: the prompt is never answered, even after a cancel; the agent still answers other calls.
    let mut acp = Acp::test_agent(home.path(), None);
    acp.initialize().await;
    let (session, _) = acp.new_session(home.path()).await;
    acp.start("session/prompt", json!({"sessionId": session, "prompt": [{"type": "text", "text": "hang"}]})).await;
    acp.notify("session/cancel", json!({"sessionId": session})).await;
    let id = acp.start("session/set_mode", json!({"sessionId": session, "modeId": "plan"})).await;
    loop {
        let message = acp.next_message().await;
        assert!(message.get("method").is_some() || message["id"] == id, "the hung prompt was answered: {message}");
        if message["id"] == id {
            break;
        }
    }
    assert!(matches!(acp.next_line(Duration::from_millis(300)).await, Next::Quiet));
    assert!(acp.stderr().contains("hanging mid-turn as asked"), "{}", acp.stderr());
}

#[tokio::test]
async fn test_agent_handshake_failures() {
    let home = temp_dir();
    let init = json!({"protocolVersion": 1, "clientCapabilities": {}});

    let mut acp = Acp::test_agent(home.path(), Some("crash"));
    acp.start("initialize", init.clone()).await;
    assert!(matches!(acp.next_line(STEP).await, Next::Eof));
    assert_eq!(acp.exit_status().await.code(), Some(2));
    assert!(acp.stderr().contains("crashing in initialize as asked"), "{}", acp.stderr());

    let mut acp = Acp::test_agent(home.path(), Some("garbage"));
    acp.start("initialize", init.clone()).await;
    match acp.next_line(STEP).await {
        Next::Line(line) => assert!(serde_json::from_str::<Value>(&line).is_err(), "{line}"),
        _ => panic!("no garbage line"),
    }

    let mut acp = Acp::test_agent(home.path(), Some("hang"));
    acp.start("initialize", init).await;
    // Wait until the agent has read the request (it logs it), then check that no answer follows.
    let deadline = Instant::now() + STEP;
    while !acp.stderr().contains("hanging in initialize") {
        assert!(Instant::now() < deadline, "the agent never read initialize: {}", acp.stderr());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(matches!(acp.next_line(Duration::from_millis(300)).await, Next::Quiet));
}

#[tokio::test]
async fn test_agent_session_load_replays_history_after_a_restart() {
    let home = temp_dir();
    let mut acp = Acp::test_agent(home.path(), None);
    acp.initialize().await;
    let (session, _) = acp.new_session(home.path()).await;
    acp.prompt(&session, "hello").await.expect("prompt 1");
    acp.prompt(&session, "hello again").await.expect("prompt 2");
    let (first_run, _) = acp.take();
    assert!(acp.close().await.success());

    let mut acp = Acp::test_agent(home.path(), None);
    acp.initialize().await;
    let unknown = acp.prompt(&session, "echo-history").await.unwrap_err();
    assert_eq!(unknown["code"], -32002, "a prompt before session/load must fail");
    acp.take();
    let loaded = acp.call("session/load", json!({"sessionId": session, "cwd": home.path(), "mcpServers": []})).await;
    let loaded = loaded.expect("session/load");
    assert_eq!(loaded["modes"]["currentModeId"], "default");
    let (replayed, messages) = acp.take();
    // The replay is the conversation: each prompt as a user_message_chunk, then the agent's updates.
    let updates_of_first_run: Vec<&String> = first_run.iter().filter(|t| t.starts_with("update:")).collect();
    let replayed_agent: Vec<&String> = replayed.iter().filter(|t| *t != "update:user_message_chunk").collect();
    assert_eq!(replayed_agent, updates_of_first_run);
    let prompts: Vec<&str> =
        updates(&messages, "user_message_chunk").filter_map(|u| u["content"]["text"].as_str()).collect();
    assert_eq!(prompts, ["hello", "hello again"]);

    let result = acp.prompt(&session, "echo-history").await.expect("prompt 3");
    assert_eq!(result["stopReason"], "end_turn");
    let (_, messages) = acp.take();
    assert_eq!(agent_text(&messages), r#"Earlier prompts: ["hello","hello again"]"#);
    let missing =
        acp.call("session/load", json!({"sessionId": "sess-nope", "cwd": home.path(), "mcpServers": []})).await;
    assert_eq!(missing.unwrap_err()["code"], -32002);
}

// ---- The mock LLMs' wire format. ----------------------------------------------------------------

async fn post(url: String, body: Value) -> (String, String) {
    let response = reqwest::Client::new().post(url).json(&body).send().await.expect("POST to the mock");
    assert!(response.status().is_success(), "{}", response.status());
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    (content_type, response.text().await.expect("body"))
}

/// The `data:` JSON payloads of an SSE body, with their `event:` names (empty when absent).
fn sse(body: &str) -> Vec<(String, String)> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|event| {
            let field = |name: &str| {
                event.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim_start().to_string()).unwrap_or_default()
            };
            (field("event:"), field("data:"))
        })
        .collect()
}

#[tokio::test]
async fn openai_mock_streams_a_tool_call_then_text() {
    let mock = MockLlm::openai().await;
    let base = format!("{}/v1", mock.url());
    let models: Value = reqwest::get(format!("{base}/models")).await.unwrap().json().await.unwrap();
    assert_eq!(models["data"][0]["id"], OPENAI_MODEL);

    let prompt = json!({"role": "user", "content": "make a file"});
    let tools = json!([{"type": "function", "function": {"name": "bash", "parameters": {}}}]);
    let turn1 = json!({"model": OPENAI_MODEL, "stream": true, "stream_options": {"include_usage": true}, "messages": [prompt], "tools": tools});
    let (content_type, body) = post(format!("{base}/chat/completions"), turn1).await;
    assert_eq!(content_type, "text/event-stream");
    let events = sse(&body);
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|(_, d)| serde_json::from_str(d).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["model"] == OPENAI_MODEL));
    assert_eq!(chunks[0]["choices"][0]["delta"]["content"], "I'll create the file.");
    assert_eq!(chunks[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"], "bash");
    let args = chunks[2]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str().unwrap();
    assert_eq!(serde_json::from_str::<Value>(args).unwrap(), json!({"command": "echo hi > out.txt"}));
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(chunks[4]["choices"], json!([]));
    assert_eq!(chunks[4]["usage"]["total_tokens"], 30);

    let call = json!({"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "bash", "arguments": args}}]});
    let result = json!({"role": "tool", "tool_call_id": "call_1", "content": "ok"});
    let turn2 = json!({"model": OPENAI_MODEL, "stream": true, "messages": [prompt, call, result], "tools": tools});
    let (_, body) = post(format!("{base}/chat/completions"), turn2).await;
    let events = sse(&body);
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|(_, d)| serde_json::from_str(d).unwrap()).collect();
    assert_eq!(chunks.len(), 2, "text, finish (no usage unless asked): {body}");
    assert_eq!(chunks[0]["choices"][0]["delta"]["content"], AFTER_TOOL_TEXT);
    assert_eq!(chunks[1]["choices"][0]["finish_reason"], "stop");

    // Scripted turns: a custom command, then an echo of the user messages; non-streaming JSON.
    mock.set_command("touch custom");
    mock.push_reply(Reply::EchoUserMessages);
    let later = json!([prompt, call, result, {"role": "assistant", "content": "done"}, {"role": "user", "content": [{"type": "text", "text": "and now?"}]}]);
    let (content_type, body) =
        post(format!("{base}/chat/completions"), json!({"model": "m", "messages": later, "tools": tools})).await;
    assert_eq!(content_type, "application/json");
    let message: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(message["choices"][0]["message"]["content"], "make a file | and now?");
    assert_eq!(message["choices"][0]["finish_reason"], "stop");
    let (_, body) =
        post(format!("{base}/chat/completions"), json!({"model": "m", "messages": [prompt], "tools": tools})).await;
    let message: Value = serde_json::from_str(&body).unwrap();
    let args = message["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"].as_str().unwrap();
    assert_eq!(serde_json::from_str::<Value>(args).unwrap(), json!({"command": "touch custom"}));

    let recorded = mock.requests();
    assert_eq!(recorded.len(), 5);
    assert_eq!((recorded[0].method.as_str(), recorded[0].path.as_str()), ("GET", "/v1/models"));
    assert_eq!(mock.model_calls().len(), 4);
    assert_eq!(mock.model_calls()[1].body["messages"][2]["role"], "tool");
}

#[tokio::test]
async fn anthropic_mock_streams_the_documented_event_sequence() {
    let mock = MockLlm::anthropic().await;
    let url = format!("{}/v1/messages?beta=true", mock.url());
    let prompt = json!({"role": "user", "content": [{"type": "text", "text": "make a file"}]});
    let tools = json!([{"name": "Bash", "input_schema": {}}]);
    let (content_type, body) =
        post(url.clone(), json!({"model": "claude-x", "stream": true, "messages": [prompt], "tools": tools})).await;
    assert_eq!(content_type, "text/event-stream");
    let events = sse(&body);
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let data: Vec<Value> = events.iter().map(|(_, d)| serde_json::from_str(d).unwrap()).collect();
    for ((name, _), d) in events.iter().zip(&data) {
        assert_eq!(d["type"], name.as_str(), "event name and data type agree");
    }
    assert_eq!(data[0]["message"]["model"], "claude-x");
    assert_eq!(data[2]["delta"], json!({"type": "text_delta", "text": "I'll create the file."}));
    assert_eq!(data[4]["content_block"]["type"], "tool_use");
    assert_eq!(data[4]["content_block"]["name"], "Bash");
    let partial = data[5]["delta"]["partial_json"].as_str().unwrap();
    assert_eq!(serde_json::from_str::<Value>(partial).unwrap(), json!({"command": "echo hi > out.txt"}));
    assert_eq!(data[7]["delta"]["stop_reason"], "tool_use");
    let tool_id = data[4]["content_block"]["id"].clone();

    let call = json!({"role": "assistant", "content": [{"type": "tool_use", "id": tool_id, "name": "Bash", "input": {"command": "echo hi > out.txt"}}]});
    let result = json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": "ok"}]});
    let (_, body) = post(
        url.clone(),
        json!({"model": "claude-x", "stream": true, "messages": [prompt, call, result], "tools": tools}),
    )
    .await;
    let events = sse(&body);
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let data: Vec<Value> = events.iter().map(|(_, d)| serde_json::from_str(d).unwrap()).collect();
    assert_eq!(data[2]["delta"]["text"], AFTER_TOOL_TEXT);
    assert_eq!(data[4]["delta"]["stop_reason"], "end_turn");

    // Non-streaming, and no tools offered (Claude Code's title call): a JSON text message.
    let (content_type, body) = post(url.clone(), json!({"model": "claude-x", "messages": [prompt]})).await;
    assert_eq!(content_type, "application/json");
    let message: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(message["type"], "message");
    assert_eq!(message["content"][0]["type"], "text");
    assert_eq!(message["stop_reason"], "end_turn");
    // Non-streaming with tools: text plus a tool_use block.
    let (_, body) = post(url.clone(), json!({"model": "claude-x", "messages": [prompt], "tools": tools})).await;
    let message: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(message["content"][1]["input"], json!({"command": "echo hi > out.txt"}));
    assert_eq!(message["stop_reason"], "tool_use");
    // An echo of the user messages (tool results are not user text).
    mock.push_reply(Reply::EchoUserMessages);
    let again = json!({"role": "user", "content": "and now?"});
    let (_, body) =
        post(url, json!({"model": "claude-x", "messages": [prompt, call, result, again], "tools": tools})).await;
    let message: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(message["content"][0]["text"], "make a file | and now?");

    let (_, body) = post(format!("{}/v1/messages/count_tokens", mock.url()), json!({"messages": [prompt]})).await;
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["input_tokens"], 10);
    let calls = mock.model_calls();
    assert_eq!(calls.len(), 5);
    assert_eq!(calls[0].query.as_deref(), Some("beta=true"));
}

// ---- The real pi agent against the OpenAI mock. -------------------------------------------------

fn pi(install: &Path, tmp: &Path, work: &Path) -> Acp {
    let bin = install.join("node_modules/.bin");
    let env = [
        ("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default())),
        ("HOME", tmp.join("home").display().to_string()),
        ("PI_CODING_AGENT_DIR", tmp.join("agent").display().to_string()),
        ("PI_OFFLINE", "1".to_string()),
    ];
    Acp::spawn(&bin.join("pi-acp"), &[], &env, work)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pi_runs_a_bash_tool_against_the_openai_mock_and_reloads_its_session() {
    let install = common::pi::install().await;
    let mock = MockLlm::openai().await;
    let tmp = temp_dir();
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(tmp.path().join("home")).unwrap();
    common::pi::write_config(&tmp.path().join("agent"), &format!("{}/v1", mock.url()));

    // Turn 1: text, one bash tool call that writes out.txt in the session cwd, text.
    let started = Instant::now();
    let mut acp = pi(&install, tmp.path(), &work);
    acp.initialize().await;
    let initialized = started.elapsed();
    let (session, created) = acp.new_session(&work).await;
    let ready = started.elapsed();
    eprintln!("pi: session/new answered {created}");
    acp.take();
    let first_prompt = "Please create out.txt";
    let result = acp.prompt(&session, first_prompt).await.expect("prompt");
    let turn = started.elapsed();
    assert_eq!(result["stopReason"], "end_turn", "{result}");
    assert_eq!(std::fs::read_to_string(work.join("out.txt")).expect("pi wrote out.txt"), "hi\n");
    let (trace, messages) = acp.take();
    eprintln!("pi: initialized in {initialized:?}, ready in {ready:?}, turn done at {turn:?}; updates: {trace:?}");
    let first = |kind: &str| trace.iter().position(|t| t == &format!("update:{kind}"));
    let (chunk, tool, update) = (first("agent_message_chunk"), first("tool_call"), first("tool_call_update"));
    assert!(chunk.is_some() && chunk < tool && tool < update, "chunk, tool_call, tool_call_update in order: {trace:?}");
    let statuses: Vec<&str> = updates(&messages, "tool_call_update").filter_map(|u| u["status"].as_str()).collect();
    assert_eq!(statuses.last(), Some(&"completed"), "{statuses:?}");
    let text = agent_text(&messages);
    assert!(text.contains("I'll create the file.") && text.ends_with(AFTER_TOOL_TEXT), "{text}");
    let calls = mock.model_calls();
    assert_eq!(calls.len(), 2, "two model calls: the prompt, then the tool result");
    assert!(calls.iter().all(|c| c.path == "/v1/chat/completions" && c.body["stream"] == true));
    assert_eq!(calls[1].body["messages"].as_array().and_then(|m| m.last()).map(|m| &m["role"]), Some(&json!("tool")));
    assert_eq!(calls[0].header("authorization"), Some("Bearer mock-key"));
    assert!(acp.close().await.success());

    // A fresh agent process: session/load replays the conversation, and the next turn sends it to
    // the model (the mock echoes the user messages it received).
    let started = Instant::now();
    let mut acp = pi(&install, tmp.path(), &work);
    acp.initialize().await;
    let loaded = acp.call("session/load", json!({"sessionId": session, "cwd": work, "mcpServers": []})).await;
    loaded.expect("session/load");
    let load = started.elapsed();
    let (replayed, _) = acp.take();
    assert!(replayed.contains(&"update:user_message_chunk".to_string()), "{replayed:?}");
    assert!(replayed.contains(&"update:tool_call".to_string()), "{replayed:?}");
    mock.push_reply(Reply::EchoUserMessages);
    let result = acp.prompt(&session, "What did I ask before?").await.expect("prompt after load");
    assert_eq!(result["stopReason"], "end_turn");
    let (_, messages) = acp.take();
    let text = agent_text(&messages);
    assert!(text.contains(first_prompt) && text.contains("What did I ask before?"), "{text}");
    eprintln!("pi: session/load in {load:?}; replayed: {replayed:?}; second turn done at {:?}", started.elapsed());
    let requests: Vec<String> = mock.requests().iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    eprintln!("pi: requests to the mock: {requests:?}");
    assert!(acp.close().await.success());
}
