//! The ACP client connection (`agentvm_actors::sessions::acp`) against the scripted test agent
//! (tests/fixtures/acp-test-agent.mjs) running inside a real VM as an attached process: the
//! handshake, a whole turn with its updates and the agent's requests (permission, a file written
//! with the VM's file API, a terminal run as a VM process), the reject and cancel paths, and the
//! typed failures of an agent that crashes, writes garbage or hangs in the handshake.
//!
//! The [`ClientSide`] here is a test one: it records every call, answers permission requests
//! with the option of a chosen kind, and runs terminals to completion with `exec`.

mod common;

use common::acp_agent::HELLO_TRACE;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentvm_actors::sessions::acp::schema::{
    self, CreateTerminalRequest, CreateTerminalResponse, KillTerminalRequest, KillTerminalResponse,
    ReadTextFileRequest, ReadTextFileResponse, ReleaseTerminalRequest, ReleaseTerminalResponse,
    RequestPermissionOutcome, RequestPermissionRequest, RequestPermissionResponse, SelectedPermissionOutcome,
    StopReason, TerminalExitStatus, TerminalOutputRequest, TerminalOutputResponse, WaitForTerminalExitRequest,
    WaitForTerminalExitResponse, WriteTextFileRequest, WriteTextFileResponse,
};
use agentvm_actors::sessions::acp::{
    AcpError, AgentConnection, BoxFuture, ClientResult, ClientSide, Timeouts, UpdateNotification,
};
use agentvm_vm::{ExecOptions, Vm};
use serde_json::{json, Value};

const AGENT: &[u8] = include_bytes!("fixtures/acp-test-agent.mjs");
const AGENT_PATH: &str = "/home/user/acp-test-agent.mjs";
const HOME: &str = "/home/user";
/// The longest a test waits for the agent to end.
const STEP: Duration = Duration::from_secs(30);

// ---- A recording client side that serves the agent from the VM. --------------------------------

struct Recorder {
    vm: Vm,
    /// `update:<kind>` for each `session/update`, the method for each request of the agent.
    trace: Mutex<Vec<String>>,
    /// Every update's raw params, in order.
    updates: Mutex<Vec<Value>>,
    /// The kind of the option selected for permission requests (`allow_once`, `reject_once`…).
    permission_kind: Mutex<&'static str>,
    permission_ids: Mutex<Vec<String>>,
    terminals: Mutex<HashMap<String, agentvm_vm::ExecResult>>,
}

impl Recorder {
    fn new(vm: &Vm) -> Arc<Self> {
        Arc::new(Self {
            vm: vm.clone(),
            trace: Mutex::default(),
            updates: Mutex::default(),
            permission_kind: Mutex::new("allow_once"),
            permission_ids: Mutex::default(),
            terminals: Mutex::default(),
        })
    }

    fn record(&self, entry: &str) {
        self.trace.lock().unwrap().push(entry.to_string());
    }

    fn take_trace(&self) -> Vec<String> {
        std::mem::take(&mut *self.trace.lock().unwrap())
    }

    /// The concatenated text of the `agent_message_chunk`s received so far.
    fn agent_text(&self) -> String {
        let updates = self.updates.lock().unwrap();
        let chunks = updates.iter().filter(|p| p["update"]["sessionUpdate"] == "agent_message_chunk");
        chunks.filter_map(|p| p["update"]["content"]["text"].as_str()).collect()
    }

    fn terminal(&self, id: &str) -> ClientResult<agentvm_vm::ExecResult> {
        let terminals = self.terminals.lock().unwrap();
        terminals
            .get(id)
            .cloned()
            .ok_or_else(|| schema::Error::invalid_params().data(json!(format!("no terminal {id}"))))
    }
}

fn vm_error(e: agentvm_vm::VmError) -> schema::Error {
    schema::Error::internal_error().data(json!(e.to_string()))
}

fn exit_status(result: &agentvm_vm::ExecResult) -> TerminalExitStatus {
    TerminalExitStatus::new().exit_code(u32::try_from(result.exit_code).ok())
}

fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

impl ClientSide for Recorder {
    fn read_text_file(&self, request: ReadTextFileRequest) -> BoxFuture<'_, ClientResult<ReadTextFileResponse>> {
        Box::pin(async move {
            self.record("fs/read_text_file");
            let content = self.vm.read_file(&request.path.to_string_lossy()).await.map_err(vm_error)?;
            Ok(ReadTextFileResponse::new(String::from_utf8_lossy(&content)))
        })
    }

    fn write_text_file(&self, request: WriteTextFileRequest) -> BoxFuture<'_, ClientResult<WriteTextFileResponse>> {
        Box::pin(async move {
            self.record("fs/write_text_file");
            let path = request.path.to_string_lossy();
            self.vm.write_file(&path, request.content.as_bytes()).await.map_err(vm_error)?;
            Ok(WriteTextFileResponse::new())
        })
    }

    fn create_terminal(&self, request: CreateTerminalRequest) -> BoxFuture<'_, ClientResult<CreateTerminalResponse>> {
        Box::pin(async move {
            self.record("terminal/create");
            let command: Vec<String> =
                std::iter::once(&request.command).chain(&request.args).map(|w| quote(w)).collect();
            let cwd = request.cwd.map(|c| c.to_string_lossy().into_owned());
            let options = ExecOptions { cwd, ..ExecOptions::default() };
            let result = self.vm.exec(&command.join(" "), options).await.map_err(vm_error)?;
            let mut terminals = self.terminals.lock().unwrap();
            let id = format!("term-{}", terminals.len() + 1);
            terminals.insert(id.clone(), result);
            Ok(CreateTerminalResponse::new(id))
        })
    }

    fn terminal_output(&self, request: TerminalOutputRequest) -> BoxFuture<'_, ClientResult<TerminalOutputResponse>> {
        Box::pin(async move {
            self.record("terminal/output");
            let result = self.terminal(&request.terminal_id.0)?;
            Ok(TerminalOutputResponse::new(result.stdout.clone(), false).exit_status(exit_status(&result)))
        })
    }

    fn wait_for_terminal_exit(
        &self,
        request: WaitForTerminalExitRequest,
    ) -> BoxFuture<'_, ClientResult<WaitForTerminalExitResponse>> {
        Box::pin(async move {
            self.record("terminal/wait_for_exit");
            Ok(WaitForTerminalExitResponse::new(exit_status(&self.terminal(&request.terminal_id.0)?)))
        })
    }

    fn kill_terminal(&self, _request: KillTerminalRequest) -> BoxFuture<'_, ClientResult<KillTerminalResponse>> {
        Box::pin(async move {
            self.record("terminal/kill");
            Ok(KillTerminalResponse::new())
        })
    }

    fn release_terminal(
        &self,
        request: ReleaseTerminalRequest,
    ) -> BoxFuture<'_, ClientResult<ReleaseTerminalResponse>> {
        Box::pin(async move {
            self.record("terminal/release");
            self.terminals.lock().unwrap().remove(&*request.terminal_id.0);
            Ok(ReleaseTerminalResponse::new())
        })
    }

    fn request_permission(
        &self,
        id: String,
        request: RequestPermissionRequest,
    ) -> BoxFuture<'_, ClientResult<RequestPermissionResponse>> {
        Box::pin(async move {
            self.record("session/request_permission");
            self.permission_ids.lock().unwrap().push(id);
            let kind = *self.permission_kind.lock().unwrap();
            let option = request.options.iter().find(|o| serde_json::to_value(o.kind).ok() == Some(json!(kind)));
            let option = option.ok_or_else(|| schema::Error::invalid_params().data(json!("no option of that kind")))?;
            let selected = SelectedPermissionOutcome::new(option.option_id.clone());
            Ok(RequestPermissionResponse::new(RequestPermissionOutcome::Selected(selected)))
        })
    }

    fn session_update(&self, update: UpdateNotification) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let kind = update.params["update"]["sessionUpdate"].as_str().unwrap_or("?").to_string();
            assert!(update.notification.is_some(), "the schema parses every update of the test agent: {update:?}");
            self.record(&format!("update:{kind}"));
            self.updates.lock().unwrap().push(update.params);
        })
    }
}

// ---- Helpers. -----------------------------------------------------------------------------------

async fn vm_with_agent(host: &common::TestHost, id: &str) -> Vm {
    let vm = host.vm(id).await;
    vm.write_file(AGENT_PATH, AGENT).await.expect("writing the test agent into the VM");
    vm
}

async fn start(
    vm: &Vm,
    client: &Arc<Recorder>,
    env: &[(&str, &str)],
    timeouts: Timeouts,
) -> (Result<(AgentConnection, schema::InitializeResponse), AcpError>, agentvm_vm::AttachedHandle) {
    let env: BTreeMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let argv = vec!["node".to_string(), AGENT_PATH.to_string()];
    let process = vm.spawn_attached(argv, &env, Some(HOME)).await.expect("spawn_attached");
    let handle = process.handle.clone();
    let client: Arc<dyn ClientSide> = client.clone();
    (AgentConnection::start(process, client, timeouts).await, handle)
}

async fn started(vm: &Vm, client: &Arc<Recorder>) -> AgentConnection {
    let (connection, _) = start(vm, client, &[], Timeouts::default()).await;
    connection.expect("initialize").0
}

async fn exit_code(handle: &agentvm_vm::AttachedHandle) -> i32 {
    tokio::time::timeout(STEP, handle.wait()).await.expect("the agent ends")
}

// ---- Tests. -------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_streams_updates_and_serves_permission_files_and_terminals_in_the_vm() {
    let host = common::host();
    let vm = vm_with_agent(&host, "acp-hello").await;
    let client = Recorder::new(&vm);

    let begun = std::time::Instant::now();
    let (connection, handle) = start(&vm, &client, &[], Timeouts::default()).await;
    let (connection, init) = connection.expect("initialize");
    let initialized = begun.elapsed();
    assert_eq!(init.agent_info.as_ref().map(|i| i.name.as_str()), Some("acp-test-agent"));
    assert!(init.agent_capabilities.load_session);
    // The agent is an ordinary process of the VM.
    let all = vm.all_processes().await.expect("all_processes");
    assert!(all.iter().any(|p| p.pid == connection.pid() && p.command == "node"), "{all:?}");

    let created = connection.new_session(HOME, Vec::new()).await.expect("session/new");
    let session = created.session_id.0.to_string();
    let ready = begun.elapsed();
    assert_eq!(created.modes.as_ref().map(|m| m.current_mode_id.0.to_string()).as_deref(), Some("default"));

    let response = connection.prompt_text(&session, "hello").await.expect("session/prompt");
    assert_eq!(response.stop_reason, StopReason::EndTurn);
    eprintln!("acp: node test agent in a VM: initialized {initialized:?}, session ready {ready:?}, hello turn done {:?} after spawn", begun.elapsed());
    assert_eq!(client.take_trace(), HELLO_TRACE);
    assert!(client.agent_text().ends_with("The terminal said: done (exit code 0)."), "{}", client.agent_text());
    // The permission id is the request's JSON-RPC id, as text.
    let ids = client.permission_ids.lock().unwrap().clone();
    assert_eq!(ids.len(), 1);
    assert!(ids[0].parse::<u64>().is_ok(), "{ids:?}");
    assert_eq!(vm.read_file("/home/user/from-agent.txt").await.unwrap(), b"written by acp-test-agent\n");
    assert_eq!(vm.read_file("/home/user/from-terminal.txt").await.unwrap(), b"term-ok\n");

    // The other session methods, and raw requests.
    connection.set_mode(&session, "plan").await.expect("session/set_mode");
    assert_eq!(client.take_trace(), ["update:current_mode_update"]);
    let options = connection.set_config_option(&session, "model", "mock-smart".into()).await.expect("set_config");
    let model = options.config_options.iter().map(|o| serde_json::to_value(o).unwrap()).find(|o| o["id"] == "model");
    assert_eq!(model.expect("the model option")["currentValue"], "mock-smart");
    match connection.set_mode(&session, "nope").await {
        Err(AcpError::Agent { code: -32602, message, .. }) => assert!(message.contains("unknown mode"), "{message}"),
        other => panic!("expected an invalid-params error, got {other:?}"),
    }
    match connection.raw("session/nope", json!({})).await {
        Err(AcpError::Agent { code: -32601, .. }) => {}
        other => panic!("expected method not found, got {other:?}"),
    }
    let raw = connection.raw("session/set_mode", json!({"sessionId": session, "modeId": "default"})).await;
    assert_eq!(raw.expect("raw set_mode"), json!({}));
    assert_eq!(client.take_trace(), ["update:current_mode_update"]);
    // session/load replays the history as updates before it answers: the prompt, the turn's
    // updates (not its requests), the two mode changes.
    let loaded = connection.load_session(&session, HOME, Vec::new()).await.expect("session/load");
    assert_eq!(loaded.modes.map(|m| m.current_mode_id.0.to_string()).as_deref(), Some("default"));
    let turn = HELLO_TRACE.iter().filter(|t| t.starts_with("update:")).map(|t| t.to_string());
    let mode = || "update:current_mode_update".to_string();
    let history: Vec<String> =
        std::iter::once("update:user_message_chunk".to_string()).chain(turn).chain([mode(), mode()]).collect();
    assert_eq!(client.take_trace(), history);
    assert!(connection.close_reason().is_none());

    // Dropping the connection kills the agent.
    drop(connection);
    assert_eq!(exit_code(&handle).await, 128 + libc::SIGKILL);
    vm.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_permission_fails_the_tool_and_a_cancel_ends_the_turn() {
    let host = common::host();
    let vm = vm_with_agent(&host, "acp-reject").await;
    let client = Recorder::new(&vm);
    let connection = started(&vm, &client).await;
    let session = connection.new_session(HOME, Vec::new()).await.expect("session/new").session_id.0.to_string();

    *client.permission_kind.lock().unwrap() = "reject_once";
    let response = connection.prompt_text(&session, "hello write:/home/user/rejected.txt").await.expect("prompt");
    assert_eq!(response.stop_reason, StopReason::EndTurn);
    let trace = client.take_trace();
    assert_eq!(trace, [&HELLO_TRACE[..6], &["update:tool_call_update", "update:agent_message_chunk"]].concat());
    assert!(client.agent_text().ends_with("permission rejected"), "{}", client.agent_text());
    let status = client.updates.lock().unwrap().iter().rev().nth(1).map(|p| p["update"]["status"].clone());
    assert_eq!(status, Some(json!("failed")));
    assert!(vm.read_file("/home/user/rejected.txt").await.is_err(), "the rejected tool wrote nothing");

    // `session/cancel` while the agent streams: the turn ends `cancelled`.
    let connection = Arc::new(connection);
    let turn = tokio::spawn({
        let (connection, session) = (connection.clone(), session.clone());
        async move { connection.prompt_text(&session, "slow").await }
    });
    common::eventually(30, "the slow turn streams", || {
        let client = client.clone();
        async move { client.agent_text().contains("slow chunk 1.") }
    })
    .await;
    connection.cancel(&session).expect("session/cancel");
    let response = tokio::time::timeout(STEP, turn).await.expect("the turn ends").unwrap().expect("prompt");
    assert_eq!(response.stop_reason, StopReason::Cancelled);
    assert!(!client.agent_text().contains("slow chunk 25."), "{}", client.agent_text());
    vm.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_crashes_mid_turn_fails_the_call_with_its_exit_and_stderr() {
    let host = common::host();
    let vm = vm_with_agent(&host, "acp-crash").await;
    let client = Recorder::new(&vm);
    let connection = started(&vm, &client).await;
    let session = connection.new_session(HOME, Vec::new()).await.expect("session/new").session_id.0.to_string();

    let error = connection.prompt_text(&session, "crash").await.expect_err("the agent crashed");
    let AcpError::Exited { code, stderr_tail } = &error else { panic!("expected Exited, got {error:?}") };
    assert_eq!(*code, Some(3));
    assert!(stderr_tail.contains("crashing mid-turn as asked"), "{stderr_tail:?}");
    // The chunk it sent before crashing was delivered.
    assert_eq!(client.agent_text(), "About to crash.");
    assert_eq!(connection.closed().await, error);
    assert_eq!(connection.new_session(HOME, Vec::new()).await.expect_err("closed"), error);
    assert_eq!(connection.cancel(&session).expect_err("closed"), error);
    // The VM is unharmed.
    assert_eq!(common::sh(&vm, "echo alive").await, "alive\n");

    // An agent killed from outside while a turn waits: the prompt fails with the signal.
    let connection = Arc::new(started(&vm, &client).await);
    let session = connection.new_session(HOME, Vec::new()).await.expect("session/new").session_id.0.to_string();
    let turn = tokio::spawn({
        let (connection, session) = (connection.clone(), session.clone());
        async move { connection.prompt_text(&session, "hang").await }
    });
    common::eventually(30, "the agent hangs in the turn", || {
        let handle = connection.handle().clone();
        async move { handle.stderr_tail().contains("hanging mid-turn as asked") }
    })
    .await;
    connection.handle().signal(libc::SIGKILL);
    let error = tokio::time::timeout(STEP, turn).await.expect("the turn ends").unwrap().expect_err("killed");
    assert!(matches!(&error, AcpError::Exited { code: Some(137), .. }), "{error:?}");
    assert!(error.to_string().contains("killed by signal 9"), "{error}");
    assert_eq!(connection.closed().await, error);
    vm.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_writes_garbage_fails_the_call_and_is_killed() {
    let host = common::host();
    let vm = vm_with_agent(&host, "acp-garbage").await;
    let client = Recorder::new(&vm);
    let connection = started(&vm, &client).await;
    let session = connection.new_session(HOME, Vec::new()).await.expect("session/new").session_id.0.to_string();

    let error = connection.prompt_text(&session, "garbage").await.expect_err("garbage");
    let AcpError::Garbage { line, stderr_tail } = &error else { panic!("expected Garbage, got {error:?}") };
    assert_eq!(line, "this line is not JSON-RPC");
    assert!(stderr_tail.contains("[acp-test-agent] ready"), "{stderr_tail:?}");
    assert_eq!(connection.closed().await, error);
    assert_eq!(exit_code(connection.handle()).await, 128 + libc::SIGKILL);
    vm.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_handshake_is_a_typed_error_and_the_agent_is_killed() {
    let host = common::host();
    let vm = vm_with_agent(&host, "acp-handshake").await;
    let client = Recorder::new(&vm);
    // Only the hanging agent gets the short handshake timeout: under load, Node may take more
    // than a second to start, which must not turn a crash or garbage into a timeout.
    let quick = Timeouts { initialize: Duration::from_secs(1), ..Timeouts::default() };

    let started = tokio::time::Instant::now();
    let (result, handle) = start(&vm, &client, &[("ACP_TEST_AGENT_HANDSHAKE", "hang")], quick).await;
    assert_eq!(result.err(), Some(AcpError::TimedOut { method: "initialize".into() }));
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert_eq!(exit_code(&handle).await, 128 + libc::SIGKILL, "dropping the connection killed the agent");

    let (result, _) = start(&vm, &client, &[("ACP_TEST_AGENT_HANDSHAKE", "crash")], Timeouts::default()).await;
    match result.err() {
        Some(AcpError::Exited { code: Some(2), stderr_tail }) => {
            assert!(stderr_tail.contains("crashing in initialize"), "{stderr_tail:?}")
        }
        other => panic!("expected Exited with code 2, got {other:?}"),
    }

    let (result, handle) = start(&vm, &client, &[("ACP_TEST_AGENT_HANDSHAKE", "garbage")], Timeouts::default()).await;
    match result.err() {
        Some(AcpError::Garbage { line, .. }) => assert_eq!(line, "garbage instead of an initialize answer"),
        other => panic!("expected Garbage, got {other:?}"),
    }
    assert_eq!(exit_code(&handle).await, 128 + libc::SIGKILL);
    vm.shutdown(Duration::from_secs(2)).await;
}

/// A hand-scripted agent (`sh` in the VM) for what the test agent never does: requests with
/// string ids that we do not serve or that carry bad params, a notification we do not know, a
/// call left unanswered, another protocol version, a stdout closed by a live process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_edges_unknown_requests_bad_params_timeouts_and_versions() {
    let host = common::host();
    let vm = host.vm("acp-edges").await;
    let client = Recorder::new(&vm);
    let quick = Timeouts { other: Duration::from_secs(1), ..Timeouts::default() };
    let script = r#"
        read init
        echo '{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":1}}'
        echo '{"jsonrpc":"2.0","id":"ask-1","method":"elicitation/create","params":{}}'
        read answer; echo "$answer" > /tmp/answers
        echo '{"jsonrpc":"2.0","id":"ask-2","method":"fs/read_text_file","params":{"path":7}}'
        read answer; echo "$answer" >> /tmp/answers
        echo '{"jsonrpc":"2.0","method":"something/else","params":{}}'
        read ping; id=$(echo "$ping" | sed 's/.*"id":\([0-9]*\).*/\1/')
        echo "{\"jsonrpc\":\"2.0\",\"id\":$id,\"result\":\"pong\"}"
        read never; read cancel; echo "$cancel" >> /tmp/answers
        exec sleep 1000
    "#;
    let argv = vec!["sh".to_string(), "-c".to_string(), script.to_string()];
    let process = vm.spawn_attached(argv, &BTreeMap::new(), None).await.expect("spawn_attached");
    let recorder: Arc<dyn ClientSide> = client.clone();
    let (connection, _) = AgentConnection::start(process, recorder, quick).await.expect("initialize");
    let answers = || async {
        let text = vm.read_file("/tmp/answers").await.map(|b| String::from_utf8_lossy(&b).into_owned());
        text.unwrap_or_default().lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect::<Vec<Value>>()
    };
    // The agent's two requests are answered before ours go out (the script reads stdin in order).
    common::eventually(30, "the agent's requests are answered", || async { answers().await.len() == 2 }).await;
    assert_eq!(connection.raw("ping", json!({})).await, Ok(json!("pong")));
    assert_eq!(connection.raw("never", json!({})).await, Err(AcpError::TimedOut { method: "never".into() }));
    common::eventually(30, "the scripted agent recorded the cancel", || async { answers().await.len() == 3 }).await;
    let answers = answers().await;
    assert_eq!((&answers[0]["id"], &answers[0]["error"]["code"]), (&json!("ask-1"), &json!(-32601)), "{answers:?}");
    assert_eq!((&answers[1]["id"], &answers[1]["error"]["code"]), (&json!("ask-2"), &json!(-32602)), "{answers:?}");
    assert_eq!(answers[2]["method"], "$/cancel_request", "{answers:?}");
    assert_eq!(answers[2]["params"]["requestId"], 2, "{answers:?}");
    // A timed-out call fails alone; the connection stays up.
    assert_eq!(connection.close_reason(), None);
    assert!(client.take_trace().is_empty(), "unserved requests never reach the client side");
    drop(connection);

    let version = r#"read init; echo '{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":2}}'; exec sleep 1000"#;
    let argv = vec!["sh".to_string(), "-c".to_string(), version.to_string()];
    let process = vm.spawn_attached(argv, &BTreeMap::new(), None).await.expect("spawn_attached");
    let handle = process.handle.clone();
    let recorder: Arc<dyn ClientSide> = client.clone();
    let result = AgentConnection::start(process, recorder, quick).await;
    assert_eq!(result.err(), Some(AcpError::ProtocolVersion { version: "2".into() }));
    assert_eq!(exit_code(&handle).await, 128 + libc::SIGKILL);

    // The agent closes its stdout but lives on: the connection closes, and the agent is killed.
    let closes = "read init; exec >&-; echo closed-stdout >&2; exec sleep 1000";
    let argv = vec!["sh".to_string(), "-c".to_string(), closes.to_string()];
    let process = vm.spawn_attached(argv, &BTreeMap::new(), None).await.expect("spawn_attached");
    let handle = process.handle.clone();
    let recorder: Arc<dyn ClientSide> = client.clone();
    match AgentConnection::start(process, recorder, quick).await.err() {
        Some(AcpError::Exited { code: None, stderr_tail }) => assert_eq!(stderr_tail, "closed-stdout\n"),
        other => panic!("expected Exited without a code, got {other:?}"),
    }
    assert_eq!(exit_code(&handle).await, 128 + libc::SIGKILL);
    vm.shutdown(Duration::from_secs(2)).await;
}
