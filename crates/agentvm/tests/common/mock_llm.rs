//! Scripted mock LLMs for end-to-end tests of real coding agents, with no network: a real HTTP
//! server on `127.0.0.1:<random port>` speaking either OpenAI Chat Completions (for pi) or
//! Anthropic Messages (for Claude Code), exactly as `acp-agents.md` §3.5 and §3.6 describe.
//!
//! How a reply is chosen. An agent calls the model once per step of its loop, always sending the
//! whole conversation. When the **last** message is a tool result, the agent is reporting back
//! after a tool call: the mock answers with text and ends the model's turn. Otherwise the last
//! message is a new user prompt: the mock answers with the next [`Reply`] queued by
//! [`MockLlm::push_reply`], or when none is queued with text plus one call of the shell tool running
//! [`MockLlm::set_command`] (default `echo hi > out.txt`). Requests that offer no tools (Claude
//! Code's title call) get plain text. Streaming requests (`"stream": true`) get SSE, the others a
//! JSON message. Every request is recorded (method, path, query, headers, body) for assertions.
//!
//! Each SSE answer is sent as one complete body: the agents parse it as a stream either way, and
//! the test stays deterministic.
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{json, Value};

/// The command of the default tool call: pi's `bash` tool and Claude Code's `Bash` tool run it in
/// the session's cwd.
pub const DEFAULT_COMMAND: &str = "echo hi > out.txt";
/// The text the mock says after a tool result.
pub const AFTER_TOOL_TEXT: &str = "Done: the command ran.";
/// The model id the OpenAI mock lists (use it in pi's `models.json`).
pub const OPENAI_MODEL: &str = "mock-model";

/// Which API the mock speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `POST /v1/chat/completions`, `GET /v1/models`.
    OpenAi,
    /// `POST /v1/messages` (Claude Code adds `?beta=true`), `POST /v1/messages/count_tokens`, `GET /v1/models`.
    Anthropic,
}

/// The answer to a user prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `text`, then one call of the shell tool with `command`; the model's turn stops for the tool.
    ToolCall { text: String, command: String },
    /// `text`, then the end of the turn.
    Text(String),
    /// The texts of every user message of the conversation so far, joined by " | ", then the end of
    /// the turn: proves that the agent sent the earlier turns (e.g. after `session/load`).
    EchoUserMessages,
}

/// One recorded HTTP request.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON; `Null` when empty, a `String` when it is not JSON.
    pub body: Value,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

struct Shared {
    flavor: Flavor,
    command: Mutex<String>,
    replies: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Recorded>>,
    /// Numbers message and tool-call ids, so that every answer has fresh ones.
    counter: Mutex<u64>,
}

/// A running mock; the server stops when this is dropped.
pub struct MockLlm {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockLlm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Poisoning only means another test thread panicked; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl MockLlm {
    pub async fn openai() -> Self {
        Self::start(Flavor::OpenAi).await
    }

    pub async fn anthropic() -> Self {
        Self::start(Flavor::Anthropic).await
    }

    async fn start(flavor: Flavor) -> Self {
        let shared = Arc::new(Shared {
            flavor,
            command: Mutex::new(DEFAULT_COMMAND.to_string()),
            replies: Mutex::new(VecDeque::new()),
            requests: Mutex::new(Vec::new()),
            counter: Mutex::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the mock LLM");
        let addr = listener.local_addr().expect("mock LLM address");
        let app = axum::Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("mock LLM server stopped: {e}");
            }
        });
        Self { addr, shared, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:<port>`; OpenAI clients want `<url>/v1` as their base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    /// The model calls so far (`POST /v1/chat/completions` or `POST /v1/messages`).
    pub fn model_calls(&self) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.method == "POST" && is_model_call(&r.path)).collect()
    }

    /// The command of the default tool call, for prompts with no queued reply.
    pub fn set_command(&self, command: &str) {
        *lock(&self.shared.command) = command.to_string();
    }

    /// Queues the answer to a coming user prompt (first in, first out).
    pub fn push_reply(&self, reply: Reply) {
        lock(&self.shared.replies).push_back(reply);
    }
}

fn is_model_call(path: &str) -> bool {
    path == "/v1/chat/completions" || path == "/v1/messages"
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
    };
    lock(&shared.requests).push(Recorded {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        headers: headers
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body: body.clone(),
    });
    match (method.as_str(), uri.path()) {
        ("GET", "/v1/models") => json_response(models(shared.flavor)),
        ("POST", "/v1/messages/count_tokens") if shared.flavor == Flavor::Anthropic => {
            json_response(json!({"input_tokens": 10}))
        }
        ("POST", path) if is_model_call(path) => answer(&shared, &body),
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Body::from(format!("the mock LLM has no {method} {}", uri.path())))
            .unwrap_or_default(),
    }
}

fn models(flavor: Flavor) -> Value {
    match flavor {
        Flavor::OpenAi => json!({"object": "list", "data": [{"id": OPENAI_MODEL, "object": "model"}]}),
        Flavor::Anthropic => json!({
            "data": [{"type": "model", "id": "claude-mock", "display_name": "Mock", "created_at": "2025-01-01T00:00:00Z"}],
            "has_more": false, "first_id": "claude-mock", "last_id": "claude-mock"
        }),
    }
}

/// What one model call answers, before it is put in the API's format.
enum Answer {
    Text(String),
    ToolCall { text: String, command: String },
}

fn answer(shared: &Shared, body: &Value) -> Response {
    let flavor = shared.flavor;
    let messages = body["messages"].as_array().map(Vec::as_slice).unwrap_or_default();
    let has_tools = body["tools"].as_array().is_some_and(|t| !t.is_empty());
    let answer = if !has_tools {
        Answer::Text("Mock title".to_string())
    } else if messages.last().is_some_and(|m| is_tool_result(flavor, m)) {
        Answer::Text(AFTER_TOOL_TEXT.to_string())
    } else {
        let queued = lock(&shared.replies).pop_front();
        match queued {
            Some(Reply::Text(text)) => Answer::Text(text),
            Some(Reply::ToolCall { text, command }) => Answer::ToolCall { text, command },
            Some(Reply::EchoUserMessages) => Answer::Text(user_texts(flavor, messages).join(" | ")),
            None => {
                Answer::ToolCall { text: "I'll create the file.".to_string(), command: lock(&shared.command).clone() }
            }
        }
    };
    let n = {
        let mut counter = lock(&shared.counter);
        *counter += 1;
        *counter
    };
    let model = body["model"].as_str().unwrap_or(OPENAI_MODEL);
    let stream = body["stream"].as_bool().unwrap_or(false);
    match (flavor, stream) {
        (Flavor::OpenAi, true) => {
            let usage = body["stream_options"]["include_usage"].as_bool().unwrap_or(false);
            sse_response(openai_stream(&answer, model, n, usage))
        }
        (Flavor::OpenAi, false) => json_response(openai_message(&answer, model, n)),
        (Flavor::Anthropic, true) => sse_response(anthropic_stream(&answer, model, n)),
        (Flavor::Anthropic, false) => json_response(anthropic_message(&answer, model, n)),
    }
}

/// OpenAI: a `role: "tool"` message. Anthropic: a user message with a `tool_result` block.
fn is_tool_result(flavor: Flavor, message: &Value) -> bool {
    match flavor {
        Flavor::OpenAi => message["role"] == "tool",
        Flavor::Anthropic => {
            message["role"] == "user"
                && message["content"].as_array().is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_result"))
        }
    }
}

/// The text of each user message (content as a string or as text parts), in order.
fn user_texts(flavor: Flavor, messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m["role"] == "user" && !is_tool_result(flavor, m))
        .filter_map(|m| match &m["content"] {
            Value::String(s) => Some(s.clone()),
            Value::Array(parts) => {
                let texts: Vec<&str> =
                    parts.iter().filter(|p| p["type"] == "text").filter_map(|p| p["text"].as_str()).collect();
                (!texts.is_empty()).then(|| texts.join(" "))
            }
            _ => None,
        })
        .collect()
}

fn json_response(value: Value) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(value.to_string()))
        .unwrap_or_default()
}

fn sse_response(events: String) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from(events))
        .unwrap_or_default()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn tool_input(command: &str) -> String {
    json!({ "command": command }).to_string()
}

/// §3.5: `data: <chat.completion.chunk>` events, then `data: [DONE]`.
fn openai_stream(answer: &Answer, model: &str, n: u64, include_usage: bool) -> String {
    let chunk = |choices: Value| json!({"id": format!("chatcmpl-{n}"), "object": "chat.completion.chunk", "created": unix_now(), "model": model, "choices": choices});
    let (text, tool) = match answer {
        Answer::Text(text) => (text, None),
        Answer::ToolCall { text, command } => (text, Some(command)),
    };
    let mut chunks =
        vec![chunk(json!([{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": null}]))];
    if let Some(command) = tool {
        let call = json!({"index": 0, "id": format!("call_{n}"), "type": "function", "function": {"name": "bash", "arguments": ""}});
        chunks.push(chunk(json!([{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": null}])));
        let args = json!({"index": 0, "function": {"arguments": tool_input(command)}});
        chunks.push(chunk(json!([{"index": 0, "delta": {"tool_calls": [args]}, "finish_reason": null}])));
    }
    let finish = if tool.is_some() { "tool_calls" } else { "stop" };
    chunks.push(chunk(json!([{"index": 0, "delta": {}, "finish_reason": finish}])));
    if include_usage {
        let mut usage = chunk(json!([]));
        usage["usage"] = json!({"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30});
        chunks.push(usage);
    }
    let mut out: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
    out.push_str("data: [DONE]\n\n");
    out
}

fn openai_message(answer: &Answer, model: &str, n: u64) -> Value {
    let (message, finish) = match answer {
        Answer::Text(text) => (json!({"role": "assistant", "content": text}), "stop"),
        Answer::ToolCall { text, command } => (
            json!({"role": "assistant", "content": text, "tool_calls": [
                {"id": format!("call_{n}"), "type": "function", "function": {"name": "bash", "arguments": tool_input(command)}}
            ]}),
            "tool_calls",
        ),
    };
    json!({
        "id": format!("chatcmpl-{n}"), "object": "chat.completion", "created": unix_now(), "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}
    })
}

/// §3.6: `event: <type>` + `data: <json>` pairs: message_start, a text block, maybe a `Bash`
/// tool_use block, message_delta with the stop reason, message_stop.
fn anthropic_stream(answer: &Answer, model: &str, n: u64) -> String {
    let (text, tool) = match answer {
        Answer::Text(text) => (text, None),
        Answer::ToolCall { text, command } => (text, Some(command)),
    };
    let mut events = vec![
        json!({"type": "message_start", "message": {"id": format!("msg_{n}"), "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 10, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
        json!({"type": "content_block_stop", "index": 0}),
    ];
    if let Some(command) = tool {
        events.extend([
            json!({"type": "content_block_start", "index": 1,
                "content_block": {"type": "tool_use", "id": format!("toolu_{n}"), "name": "Bash", "input": {}}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": tool_input(command)}}),
            json!({"type": "content_block_stop", "index": 1}),
        ]);
    }
    let stop = if tool.is_some() { "tool_use" } else { "end_turn" };
    events.push(json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": 20}}));
    events.push(json!({"type": "message_stop"}));
    events.iter().map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap_or_default())).collect()
}

fn anthropic_message(answer: &Answer, model: &str, n: u64) -> Value {
    let (content, stop) = match answer {
        Answer::Text(text) => (json!([{"type": "text", "text": text}]), "end_turn"),
        Answer::ToolCall { text, command } => (
            json!([{"type": "text", "text": text},
                   {"type": "tool_use", "id": format!("toolu_{n}"), "name": "Bash", "input": {"command": command}}]),
            "tool_use",
        ),
    };
    json!({
        "id": format!("msg_{n}"), "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": stop, "stop_sequence": null, "usage": {"input_tokens": 10, "output_tokens": 20}
    })
}
