//! Agent session benchmark: `cargo bench -p agentvm --bench sessions` (release build).
//!
//! One real `agentvm serve` on loopback with a config file declaring the scripted ACP test
//! agent (`tests/fixtures/acp-test-agent.mjs`, Node, no LLM) and, when installed in the data
//! directory (`AGENTVM_BENCH_PI=1` / `AGENTVM_BENCH_CLAUDE=1` install them with `agentvm agents
//! install`), the real pi agent against a scripted OpenAI-compatible mock and Claude Code against
//! a scripted Anthropic one, on host loopback (preset `forward`s). Measures:
//!
//! - **createSession → ready**: the action's duration (agent launched in the VM, `initialize`,
//!   `session/new`), p50 over `AGENTVM_BENCH_SESSIONS` sessions (default 10);
//! - **prompt → first message chunk**: from the prompt's transcript entry to the first
//!   `agent_message_chunk` (both timestamped when written), p50;
//! - **memory per live session**: the growth of the server's RSS and the agents' own RSS (their
//!   processes in the VM) with all the sessions open.
//!
//! The machine is shared and noisy: compare figures of one run.

#[path = "common/server.rs"]
mod server;
use server::start_server;
use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const AGENT: &str = include_str!("../tests/fixtures/acp-test-agent.mjs");

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn p50(mut all: Vec<Duration>) -> String {
    all.sort();
    format!("{:.1} ms", all[all.len() / 2].as_secs_f64() * 1000.0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").and_then(|v| v.split_whitespace().next()?.parse().ok()))
        .unwrap_or(0)
}

/// A scripted model on loopback: every request gets a short streamed answer, in the OpenAI
/// Chat Completions format (`anthropic = false`) or the Anthropic Messages one.
fn mock_llm(anthropic: bool) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                let _ = std::io::Read::read_exact(&mut reader, &mut body);
                let mut stream = stream;
                if anthropic {
                    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
                    let model = request["model"].clone();
                    let text = "Hello from the mock.";
                    let answer = if request["stream"] == true {
                        let events = [
                            (
                                "message_start",
                                json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 1, "output_tokens": 1}}}),
                            ),
                            (
                                "content_block_start",
                                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                            ),
                            (
                                "content_block_delta",
                                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
                            ),
                            ("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
                            (
                                "message_delta",
                                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 5}}),
                            ),
                            ("message_stop", json!({"type": "message_stop"})),
                        ];
                        let body: String = events.iter().map(|(e, d)| format!("event: {e}\ndata: {d}\n\n")).collect();
                        ("text/event-stream", body)
                    } else {
                        let body = json!({"id": "msg_x", "type": "message", "role": "assistant", "model": model,
                            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": null,
                            "usage": {"input_tokens": 1, "output_tokens": 5}});
                        ("application/json", body.to_string())
                    };
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                        answer.0,
                        answer.1.len(),
                        answer.1
                    );
                    return;
                }
                let chunk = |delta: Value, finish: Value| {
                    format!(
                        "data: {}\n\n",
                        json!({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "mock-model",
                               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
                    )
                };
                let sse = format!(
                    "{}{}data: [DONE]\n\n",
                    chunk(json!({"role": "assistant", "content": "Hello from the mock."}), Value::Null),
                    chunk(json!({}), json!("stop"))
                );
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{sse}",
                    sse.len()
                );
            });
        }
    });
    port
}

struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    async fn call(&self, name: &str, args: Value) -> Value {
        let url = format!("{}/gateway/vm/action/{name}?rvt-method=getOrCreate&rvt-key={}", self.base, self.key);
        let response = self.http.post(url).json(&json!({ "args": args })).send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(status.is_success(), "{name}: {status} {body}");
        body["output"].clone()
    }
}

/// Creates `n` sessions of `agent` and prompts each once; prints the figures.
async fn measure(api: &Api, server_pid: u32, agent: &str, options: Value, n: usize) {
    api.call("exec", json!(["true"])).await;
    let rss_before = rss_kib(server_pid);
    let (mut ready, mut first_chunk) = (Vec::new(), Vec::new());
    let mut sessions = Vec::new();
    for _ in 0..n {
        let started = Instant::now();
        let created = api.call("createSession", json!([agent, options])).await;
        ready.push(started.elapsed());
        let id = created["sessionId"].as_str().unwrap().to_string();
        api.call("sendPrompt", json!([id, "hi"])).await;
        let events = api.call("getSessionEvents", json!([id])).await;
        let events = events.as_array().unwrap();
        let prompt_at =
            events.iter().find(|e| e["event"]["method"] == "session/prompt").map(|e| e["createdAt"].as_u64().unwrap());
        let chunk_at = events
            .iter()
            .find(|e| e["event"]["params"]["update"]["sessionUpdate"] == "agent_message_chunk")
            .map(|e| e["createdAt"].as_u64().unwrap());
        if let (Some(p), Some(c)) = (prompt_at, chunk_at) {
            first_chunk.push(Duration::from_millis(c.saturating_sub(p)));
        }
        sessions.push(id);
    }
    let server_growth = rss_kib(server_pid).saturating_sub(rss_before);
    let agents = api.call("allProcesses", json!([])).await;
    let agent_pids: Vec<i64> = agents
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["exitTime"].is_null())
        .map(|p| p["pid"].as_i64().unwrap())
        .collect();
    let ps = api
        .call(
            "exec",
            json!([format!(
                "ps -o rss= -p {} | awk '{{s+=$1}} END {{print s}}'",
                agent_pids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
            )]),
        )
        .await;
    let agents_kib: u64 = ps["stdout"].as_str().unwrap_or("0").trim().parse().unwrap_or(0);
    println!(
        "{agent}: createSession -> ready p50 {}; prompt -> first chunk p50 {}; {n} live sessions: server RSS +{} KiB/session, VM processes {} KiB/session",
        p50(ready),
        if first_chunk.is_empty() { "n/a".into() } else { p50(first_chunk) },
        server_growth / n as u64,
        agents_kib / n as u64
    );
    for id in sessions {
        api.call("closeSession", json!([id])).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = env_usize("AGENTVM_BENCH_SESSIONS", 10);
    let llm = mock_llm(false);
    let claude_llm = mock_llm(true);
    let dir = tempfile::Builder::new().prefix("agentvm-bench-").tempdir().unwrap();
    let data = dir.path().join("data");
    let mut config = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    write!(
        config,
        "[actors.vm.network]\nforward = [{{ port = 11434, to = \"127.0.0.1:{llm}\" }}, {{ port = 8765, to = \"127.0.0.1:{claude_llm}\" }}]\n[actors.vm.sessions]\npermissions = \"allow\"\n\n\
         [agents.test]\ncommand = [\"node\", \"/home/user/acp-test-agent.mjs\"]\n"
    )
    .unwrap();
    let with_pi = std::env::var("AGENTVM_BENCH_PI").is_ok_and(|v| v == "1");
    let with_claude = std::env::var("AGENTVM_BENCH_CLAUDE").is_ok_and(|v| v == "1");
    for (agent, wanted) in [("pi", with_pi), ("claude", with_claude)] {
        if wanted {
            let status = std::process::Command::new(env!("CARGO_BIN_EXE_agentvm"))
                .args(["agents", "install", agent, "--data-dir"])
                .arg(&data)
                .status()
                .unwrap();
            assert!(status.success(), "installing {agent}");
        }
    }
    let config_path = config.path().to_str().unwrap().to_string();
    let (mut server, base) = start_server(&data, &["--config", config_path.as_str()]);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();

    println!("# {} CPUs; {n} sessions per agent", std::thread::available_parallelism().map_or(0, |n| n.get()));
    let test = Api { http: http.clone(), base: base.clone(), key: "bench-test".into() };
    test.call("writeFile", json!(["/home/user/acp-test-agent.mjs", AGENT])).await;
    measure(&test, server.id(), "test", json!({}), n).await;
    if with_claude {
        let claude = Api { http: http.clone(), base: base.clone(), key: "bench-claude".into() };
        let options = json!({"env": {"ANTHROPIC_BASE_URL": "http://127.0.0.1:8765", "ANTHROPIC_API_KEY": "mock-key"}});
        measure(&claude, server.id(), "claude", options, n.min(5)).await;
    }
    if with_pi {
        let pi = Api { http, base, key: "bench-pi".into() };
        let models = json!({"providers": {"mock": {"baseUrl": "http://127.0.0.1:11434/v1", "api": "openai-completions",
            "apiKey": "mock-key", "compat": {"supportsDeveloperRole": false, "supportsReasoningEffort": false},
            "models": [{"id": "mock-model"}]}}});
        let settings = json!({"defaultProvider": "mock", "defaultModel": "mock-model", "quietStartup": true});
        pi.call("mkdir", json!(["/home/user/.pi-agent", {"recursive": true}])).await;
        pi.call("writeFile", json!(["/home/user/.pi-agent/models.json", models.to_string()])).await;
        pi.call("writeFile", json!(["/home/user/.pi-agent/settings.json", settings.to_string()])).await;
        let options = json!({"env": {"PI_CODING_AGENT_DIR": "/home/user/.pi-agent"}});
        measure(&pi, server.id(), "pi", options, n.min(5)).await;
    }
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let _ = server.wait();
}
