//! The client side of one session's ACP connection, served from the VM the agent runs in:
//!
//! - `fs/read_text_file`, `fs/write_text_file`: the VM's file actions (inside the VM, as its
//!   user, every path resolved inside the VM's root: the same escape-proof rules);
//! - `terminal/*`: VM processes (`sh -c` is not involved: the command runs as given, its stderr
//!   joined to its stdout), their output kept up to the agent's `outputByteLimit` (its tail);
//! - `session/request_permission`: recorded in the transcript, then broadcast as
//!   `permissionRequest`, and answered by `respondPermission` — or, per the preset, at once
//!   (`allow`/`reject`), and always rejected once the preset's timeout passes: it fails closed;
//! - `session/update`: recorded in the transcript, then broadcast as `sessionEvent`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use agentvm_vm::{AttachedHandle, EventLog, Vm, VmEvent, WeakVm};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;

use super::acp::schema::{
    CreateTerminalRequest, CreateTerminalResponse, KillTerminalRequest, KillTerminalResponse, PermissionOptionKind,
    ReadTextFileRequest, ReadTextFileResponse, ReleaseTerminalRequest, ReleaseTerminalResponse,
    RequestPermissionOutcome, RequestPermissionRequest, RequestPermissionResponse, SelectedPermissionOutcome,
    TerminalExitStatus, TerminalOutputRequest, TerminalOutputResponse, WaitForTerminalExitRequest,
    WaitForTerminalExitResponse, WriteTextFileRequest, WriteTextFileResponse,
};
use super::acp::{BoxFuture, ClientResult, ClientSide, UpdateNotification};
use super::transcript::Transcript;
use crate::preset::{PermissionMode, SessionPolicy};

/// Output a terminal keeps when the agent names no `outputByteLimit` (the reference's 1 MiB).
const DEFAULT_TERMINAL_OUTPUT: usize = 1 << 20;

/// A reply to a permission request, as `respondPermission` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Once,
    Always,
    Reject,
}

impl Reply {
    pub fn parse(text: &str) -> Option<Reply> {
        match text {
            "once" => Some(Reply::Once),
            "always" => Some(Reply::Always),
            "reject" => Some(Reply::Reject),
            _ => None,
        }
    }
}

/// The VM side of one session.
pub struct VmClient {
    pub session_id: String,
    vm: WeakVm,
    events: Arc<EventLog>,
    transcript: Transcript,
    policy: SessionPolicy,
    permissions: Mutex<HashMap<String, oneshot::Sender<Reply>>>,
    terminals: Mutex<HashMap<String, Arc<Terminal>>>,
    next_terminal: std::sync::atomic::AtomicU64,
    /// Set while the agent replays a loaded session: its updates are in the transcript already.
    replaying: std::sync::atomic::AtomicBool,
}

struct Terminal {
    handle: AttachedHandle,
    output: Mutex<(Vec<u8>, bool)>,
    limit: usize,
    reader: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl VmClient {
    pub fn new(
        session_id: String,
        vm: &Vm,
        events: Arc<EventLog>,
        transcript: Transcript,
        policy: SessionPolicy,
    ) -> VmClient {
        VmClient {
            session_id,
            vm: vm.downgrade(),
            events,
            transcript,
            policy,
            permissions: Mutex::new(HashMap::new()),
            terminals: Mutex::new(HashMap::new()),
            next_terminal: std::sync::atomic::AtomicU64::new(1),
            replaying: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// While set, `session/update`s are neither recorded nor broadcast (a `session/load` replay).
    pub fn set_replaying(&self, replaying: bool) {
        self.replaying.store(replaying, std::sync::atomic::Ordering::SeqCst);
    }

    /// Answers the pending permission request `permission_id`; `false` when none is pending.
    pub fn respond(&self, permission_id: &str, reply: Reply) -> bool {
        match self.permissions.lock().unwrap().remove(permission_id) {
            Some(waiter) => waiter.send(reply).is_ok(),
            None => false,
        }
    }

    /// The permission requests waiting for an answer.
    pub fn pending_permissions(&self) -> Vec<String> {
        self.permissions.lock().unwrap().keys().cloned().collect()
    }

    /// Ends every terminal (the session is closing).
    pub fn end_terminals(&self) {
        for (_, terminal) in self.terminals.lock().unwrap().drain() {
            terminal.handle.signal(libc::SIGKILL);
        }
    }

    fn vm(&self) -> ClientResult<Vm> {
        self.vm.upgrade().ok_or_else(|| internal("the VM stopped"))
    }

    fn terminal(&self, id: &str) -> ClientResult<Arc<Terminal>> {
        self.terminals.lock().unwrap().get(id).cloned().ok_or_else(|| {
            agent_client_protocol_schema::v1::Error::invalid_params().data(json!(format!("no terminal {id}")))
        })
    }

    /// Records `event` in the transcript, then tells subscribers.
    async fn record(&self, event: Value, broadcast: impl FnOnce(Arc<str>) -> VmEvent) {
        let text: Arc<str> = event.to_string().into();
        if let Err(e) = self.transcript.append(&self.session_id, text.to_string()).await {
            tracing::error!(session = %self.session_id, "writing the transcript: {e}");
        }
        self.events.push(broadcast(text));
    }
}

fn internal(message: &str) -> agent_client_protocol_schema::v1::Error {
    agent_client_protocol_schema::v1::Error::internal_error().data(json!(message))
}

fn vm_error(e: agentvm_vm::VmError) -> agent_client_protocol_schema::v1::Error {
    let error = if e.errno() == Some(agentvm_vm::Errno::ENOENT) {
        agent_client_protocol_schema::v1::Error::resource_not_found(None)
    } else {
        agent_client_protocol_schema::v1::Error::internal_error()
    };
    error.data(json!(e.to_string()))
}

/// The option of `request` of the kind a reply stands for (option ids differ per agent).
fn option_for(request: &RequestPermissionRequest, reply: Reply) -> Option<String> {
    let wanted: &[PermissionOptionKind] = match reply {
        Reply::Once => &[PermissionOptionKind::AllowOnce, PermissionOptionKind::AllowAlways],
        Reply::Always => &[PermissionOptionKind::AllowAlways, PermissionOptionKind::AllowOnce],
        Reply::Reject => &[PermissionOptionKind::RejectOnce, PermissionOptionKind::RejectAlways],
    };
    wanted.iter().find_map(|kind| request.options.iter().find(|o| o.kind == *kind)).map(|o| o.option_id.to_string())
}

fn outcome(request: &RequestPermissionRequest, reply: Reply) -> RequestPermissionResponse {
    match option_for(request, reply) {
        Some(id) => {
            RequestPermissionResponse::new(RequestPermissionOutcome::Selected(SelectedPermissionOutcome::new(id)))
        }
        // No option of that kind: a rejection is still a rejection.
        None => RequestPermissionResponse::new(RequestPermissionOutcome::Cancelled),
    }
}

impl ClientSide for VmClient {
    fn read_text_file(&self, request: ReadTextFileRequest) -> BoxFuture<'_, ClientResult<ReadTextFileResponse>> {
        Box::pin(async move {
            let path = request.path.to_string_lossy().into_owned();
            let bytes = self.vm()?.read_file(&path).await.map_err(vm_error)?;
            let text = String::from_utf8_lossy(&bytes);
            let start = request.line.map_or(0, |l| l.saturating_sub(1) as usize);
            let content: String = match request.limit {
                None if start == 0 => text.into_owned(),
                limit => {
                    text.split_inclusive('\n').skip(start).take(limit.map_or(usize::MAX, |l| l as usize)).collect()
                }
            };
            Ok(ReadTextFileResponse::new(content))
        })
    }

    fn write_text_file(&self, request: WriteTextFileRequest) -> BoxFuture<'_, ClientResult<WriteTextFileResponse>> {
        Box::pin(async move {
            let path = request.path.to_string_lossy().into_owned();
            self.vm()?.write_file(&path, request.content.as_bytes()).await.map_err(vm_error)?;
            Ok(WriteTextFileResponse::new())
        })
    }

    fn create_terminal(&self, request: CreateTerminalRequest) -> BoxFuture<'_, ClientResult<CreateTerminalResponse>> {
        Box::pin(async move {
            let vm = self.vm()?;
            // stderr joined to stdout, as a terminal shows them; the command itself runs as given.
            let mut argv = vec!["/bin/sh".to_string(), "-c".into(), "exec \"$0\" \"$@\" 2>&1".into(), request.command];
            argv.extend(request.args);
            let env: BTreeMap<String, String> = request.env.into_iter().map(|v| (v.name, v.value)).collect();
            let cwd = request.cwd.map(|c| c.to_string_lossy().into_owned());
            let process = vm.spawn_attached(argv, &env, cwd.as_deref()).await.map_err(vm_error)?;
            let limit = request.output_byte_limit.map_or(DEFAULT_TERMINAL_OUTPUT, |l| l as usize);
            let terminal = Arc::new(Terminal {
                handle: process.handle,
                output: Mutex::default(),
                limit,
                reader: Mutex::new(None),
            });
            let reading = Arc::clone(&terminal);
            let mut stdout = process.stdout;
            drop(process.stdin);
            let reader = tokio::spawn(async move {
                let mut buffer = vec![0u8; 16 << 10];
                while let Ok(n) = stdout.read(&mut buffer).await {
                    if n == 0 {
                        break;
                    }
                    let mut output = reading.output.lock().unwrap();
                    output.0.extend_from_slice(&buffer[..n]);
                    if output.0.len() > reading.limit {
                        let excess = output.0.len() - reading.limit;
                        output.0.drain(..excess);
                        output.1 = true;
                    }
                }
            });
            *terminal.reader.lock().unwrap() = Some(reader);
            let id = format!("term-{}", self.next_terminal.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            self.terminals.lock().unwrap().insert(id.clone(), terminal);
            Ok(CreateTerminalResponse::new(id))
        })
    }

    fn terminal_output(&self, request: TerminalOutputRequest) -> BoxFuture<'_, ClientResult<TerminalOutputResponse>> {
        Box::pin(async move {
            let terminal = self.terminal(&request.terminal_id.to_string())?;
            if terminal.handle.exit_code().is_some() {
                // Exited: let the reader finish the output first.
                let reader = terminal.reader.lock().unwrap().take();
                if let Some(reader) = reader {
                    let _ = reader.await;
                }
            }
            let (output, truncated) = terminal.output.lock().unwrap().clone();
            let response = TerminalOutputResponse::new(String::from_utf8_lossy(&output).into_owned(), truncated);
            Ok(match terminal.handle.exit_code() {
                Some(code) => response.exit_status(exit_status(code)),
                None => response,
            })
        })
    }

    fn wait_for_terminal_exit(
        &self,
        request: WaitForTerminalExitRequest,
    ) -> BoxFuture<'_, ClientResult<WaitForTerminalExitResponse>> {
        Box::pin(async move {
            let terminal = self.terminal(&request.terminal_id.to_string())?;
            let code = terminal.handle.wait().await;
            Ok(WaitForTerminalExitResponse::new(exit_status(code)))
        })
    }

    fn kill_terminal(&self, request: KillTerminalRequest) -> BoxFuture<'_, ClientResult<KillTerminalResponse>> {
        Box::pin(async move {
            self.terminal(&request.terminal_id.to_string())?.handle.signal(libc::SIGKILL);
            Ok(KillTerminalResponse::new())
        })
    }

    fn release_terminal(
        &self,
        request: ReleaseTerminalRequest,
    ) -> BoxFuture<'_, ClientResult<ReleaseTerminalResponse>> {
        Box::pin(async move {
            let id = request.terminal_id.to_string();
            if let Some(terminal) = self.terminals.lock().unwrap().remove(&id) {
                terminal.handle.signal(libc::SIGKILL);
            }
            Ok(ReleaseTerminalResponse::new())
        })
    }

    fn request_permission(
        &self,
        id: String,
        request: RequestPermissionRequest,
    ) -> BoxFuture<'_, ClientResult<RequestPermissionResponse>> {
        Box::pin(async move {
            let params = serde_json::to_value(&request).unwrap_or(Value::Null);
            let description = request.tool_call.fields.title.clone().unwrap_or_else(|| "permission requested".into());
            let reply = match self.policy.permissions {
                PermissionMode::Allow => Reply::Once,
                PermissionMode::Reject => Reply::Reject,
                PermissionMode::Ask => {
                    let (tx, rx) = oneshot::channel();
                    self.permissions.lock().unwrap().insert(id.clone(), tx);
                    let asked = json!({"permissionId": id, "description": description, "params": params});
                    let session_id = self.session_id.clone();
                    self.record(json!({"method": "session/request_permission", "params": asked.clone()}), |_| {
                        VmEvent::PermissionRequest { session_id, request: asked.to_string().into() }
                    })
                    .await;
                    let answered = tokio::time::timeout(self.policy.permission_timeout, rx).await;
                    self.permissions.lock().unwrap().remove(&id);
                    match answered {
                        Ok(Ok(reply)) => reply,
                        // No answer in time (or the session closed): rejected, never allowed.
                        _ => Reply::Reject,
                    }
                }
            };
            let response = outcome(&request, reply);
            let reply_text = match reply {
                Reply::Once => "once",
                Reply::Always => "always",
                Reply::Reject => "reject",
            };
            let session_id = self.session_id.clone();
            let answered =
                json!({"method": "permission/answered", "params": {"permissionId": id, "reply": reply_text}});
            self.record(answered, |event| VmEvent::SessionEvent { session_id, event }).await;
            Ok(response)
        })
    }

    fn session_update(&self, update: UpdateNotification) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if self.replaying.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            let session_id = self.session_id.clone();
            let event = json!({"jsonrpc": "2.0", "method": "session/update", "params": update.params});
            self.record(event, |event| VmEvent::SessionEvent { session_id, event }).await;
        })
    }
}

fn exit_status(code: i32) -> TerminalExitStatus {
    if code > 128 {
        TerminalExitStatus::new().signal(format!("{}", code - 128))
    } else {
        TerminalExitStatus::new().exit_code(code as u32)
    }
}
