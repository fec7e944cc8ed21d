//! `agentvm serve` over plain HTTP: manager routes, stateless actions, and every class of bad
//! input getting a clear error (the server keeps serving).
mod common;

use common::server::TestServer;
use serde_json::{json, Value};

const GATEWAY_QUERY: &str = "rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=default&rvt-crash-policy=sleep";

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn action(server: &TestServer, key: &str, name: &str, body: &str) -> (u16, Value) {
    let url = format!("{}/gateway/vm/action/{name}?{GATEWAY_QUERY}&rvt-key={key}", server.url);
    let response = client().post(url).header("x-rivet-encoding", "json").body(body.to_string()).send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")))
}

#[tokio::test]
async fn metadata_and_health() {
    let server = TestServer::start();
    let body: Value =
        client().get(format!("{}/metadata?namespace=default", server.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["runtime"], "rivetkit");
    assert!(body.get("clientEndpoint").is_none(), "must not redirect clients");
    let health: Value = client().get(format!("{}/health", server.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
}

#[tokio::test]
async fn plain_curl_style_exec() {
    let server = TestServer::start();
    // The README's example, without any client library: what `curl -H 'x-rivet-encoding: json'
    // -d '...'` sends (curl's -d labels the body as a form; the encoding header decides).
    let url = format!("{}/gateway/vm/action/exec?rvt-method=getOrCreate&rvt-key=demo", server.url);
    let response = client()
        .post(&url)
        .header("x-rivet-encoding", "json")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"args":["echo hi"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"output": {"exitCode": 0, "stdout": "hi\n", "stderr": ""}}));
    // `Content-Type: application/json` alone works too; a body labelled as nothing or as text
    // is refused (a browser would send it to any site without asking).
    let json_type = client().post(&url).json(&json!({"args": ["echo typed"]})).send().await.unwrap();
    assert_eq!(json_type.status(), 200);
    let untyped = client().post(&url).body(r#"{"args":["echo hi"]}"#).send().await.unwrap();
    assert_eq!(untyped.status(), 415);
    let body: Value = untyped.json().await.unwrap();
    assert_eq!(body["code"], "unsupported_media_type");
}

#[tokio::test]
async fn rest_actors_and_the_id_gateway() {
    let server = TestServer::start();
    let put = |body: Value| client().put(format!("{}/actors?namespace=default", server.url)).json(&body).send();
    let first: Value =
        put(json!({"name": "vm", "key": "rest-key", "runner_name_selector": "default", "crash_policy": "sleep"}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(first["created"], true);
    let id = first["actor"]["actor_id"].as_str().unwrap().to_string();
    assert_eq!(first["actor"]["key"], "rest-key");
    let again: Value = put(json!({"name": "vm", "key": "rest-key"})).await.unwrap().json().await.unwrap();
    assert_eq!((again["created"].clone(), again["actor"]["actor_id"].clone()), (json!(false), json!(id)));

    // Pre-2.3 clients call actions through /gateway/{actorId}.
    let response = client()
        .post(format!("{}/gateway/{id}/action/exec", server.url))
        .header("x-rivet-encoding", "json")
        .body(r#"{"args":["echo via-id"]}"#)
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["output"]["stdout"], "via-id\n");
    // The same VM through the query gateway.
    let (status, body) = action(&server, "rest-key", "exec", r#"{"args":["echo same"]}"#).await;
    assert_eq!((status, body["output"]["stdout"].as_str()), (200, Some("same\n")));

    let found: Value = client()
        .get(format!("{}/actors?namespace=default&name=vm&key=rest-key", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found["actors"][0]["actor_id"], json!(id));
    let by_id: Value =
        client().get(format!("{}/actors?actor_ids={id}", server.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(by_id["actors"].as_array().unwrap().len(), 1);
    let created = client()
        .post(format!("{}/actors", server.url))
        .json(&json!({"name": "vm", "key": "rest-key"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 409);
    let deleted = client().delete(format!("{}/actors/{id}", server.url)).send().await.unwrap();
    assert_eq!(deleted.status(), 200);
    let gone = client()
        .post(format!("{}/gateway/{id}/action/exec", server.url))
        .header("x-rivet-encoding", "json")
        .body(r#"{"args":["true"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    let body: Value = gone.json().await.unwrap();
    assert_eq!((body["group"].as_str(), body["code"].as_str()), (Some("actor"), Some("not_found")));
}

#[tokio::test]
async fn get_of_a_missing_actor_is_not_found_at_once() {
    let server = TestServer::start();
    let url = format!("{}/gateway/vm/action/exec?rvt-namespace=default&rvt-method=get&rvt-key=nobody", server.url);
    let response = client().post(url).json(&json!({"args": ["true"]})).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["x-rivet-error"], "actor.not_found");
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_the_server_keeps_serving() {
    let server = TestServer::start_with(&["--max-body-bytes", "65536"]);
    let cases: Vec<(&str, &str, u16, &str, &str)> = vec![
        ("nosuch", r#"{"args":[]}"#, 404, "actor", "action_not_found"),
        ("exec", r#"{"args":[42]}"#, 400, "action", "invalid_arguments"),
        ("exec", r#"{"args":[]}"#, 400, "action", "invalid_arguments"),
        ("exec", r#"{"args":["true", {"timeout": -5}]}"#, 400, "action", "invalid_arguments"),
        ("exec", r#"{"args":["true", {"env": {"A": [1]}}]}"#, 400, "action", "invalid_arguments"),
        ("exec", r#"{"args":["true", "not options"]}"#, 400, "action", "invalid_arguments"),
        ("exec", r#"{"args": "not an array"}"#, 400, "message", "malformed"),
        ("exec", r#"{not json"#, 400, "message", "malformed"),
        ("exec", r#"{"args":[["$Nope", 1]]}"#, 400, "message", "malformed"),
        ("spawn", r#"{"args":["sleep", "1"]}"#, 400, "action", "invalid_arguments"),
        ("getProcess", r#"{"args":["x"]}"#, 400, "action", "invalid_arguments"),
        ("getProcess", r#"{"args":[99999999999]}"#, 400, "action", "invalid_arguments"),
        ("getProcess", r#"{"args":[4242]}"#, 404, "vm", "process_not_found"),
        ("writeShell", r#"{"args":["shell-9", "x"]}"#, 404, "vm", "shell_not_found"),
        ("resizeShell", r#"{"args":["shell-9", -1, 10]}"#, 400, "action", "invalid_arguments"),
        ("spawn", r#"{"args":["no-such-program"]}"#, 400, "vm", "spawn_failed"),
    ];
    for (name, body, status, group, code) in cases {
        let (got_status, got) = action(&server, "bad-input", name, body).await;
        assert_eq!(
            (got_status, got["group"].as_str(), got["code"].as_str()),
            (status, Some(group), Some(code)),
            "{name} {body}: {got}"
        );
        assert!(got["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (_, got) = action(&server, "bad-input", "getProcess", r#"{"args":[4242]}"#).await;
    assert_eq!(got["message"], "Process not found: 4242");

    let url = format!("{}/gateway/vm/action/exec?{GATEWAY_QUERY}&rvt-key=bad-input", server.url);
    let response = client().post(&url).header("x-rivet-encoding", "yaml").body("{}").send().await.unwrap();
    assert_eq!(response.status(), 400);
    let response = client().post(&url).header("x-rivet-encoding", "bare").body(vec![0x04]).send().await.unwrap();
    assert_eq!(response.status(), 400, "truncated bare body");
    let response = client().post(&url).header("x-rivet-encoding", "bare").body(vec![9, 0, 0]).send().await.unwrap();
    assert_eq!(response.status(), 400, "unsupported version");
    let response = client().post(&url).header("x-rivet-encoding", "cbor").body(vec![0xff, 0xff]).send().await.unwrap();
    assert_eq!(response.status(), 400, "garbage cbor");
    let big = format!(r#"{{"args":["{}"]}}"#, "x".repeat(100_000));
    let response = client().post(&url).header("x-rivet-encoding", "json").body(big).send().await.unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "incoming_too_long");
    let response = client()
        .post(format!("{}/gateway/vm/action/exec?rvt-method=fetch", server.url))
        .header("x-rivet-encoding", "json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = client().get(format!("{}/nowhere", server.url)).send().await.unwrap();
    assert_eq!(response.status(), 404);

    // Still serving.
    let (status, body) = action(&server, "bad-input", "exec", r#"{"args":["echo ok"]}"#).await;
    assert_eq!((status, body["output"]["stdout"].as_str()), (200, Some("ok\n")));
}

#[tokio::test]
async fn a_token_is_required_when_set_and_for_non_loopback_addresses() {
    let server = TestServer::start_with(&["--token", "s3cret"]);
    let url = format!("{}/gateway/vm/action/exec?{GATEWAY_QUERY}&rvt-key=tok", server.url);
    let denied =
        client().post(&url).header("x-rivet-encoding", "json").body(r#"{"args":["true"]}"#).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    let ok = client()
        .post(&url)
        .header("x-rivet-encoding", "json")
        .header("x-rivet-token", "s3cret")
        .body(r#"{"args":["echo t"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let ok = client()
        .post(format!("{url}&rvt-token=s3cret"))
        .header("x-rivet-encoding", "json")
        .body(r#"{"args":["true"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let wrong = client()
        .post(&url)
        .header("x-rivet-encoding", "json")
        .header("x-rivet-token", "s3cre7")
        .body(r#"{"args":["true"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agentvm"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(server.data.path().join("other"))
        .env_remove("AGENTVM_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("without a token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn sigterm_stops_every_vm() {
    let mut server = TestServer::start();
    for key in ["graceful-a", "graceful-b"] {
        let (status, _) = action(&server, key, "spawn", r#"{"args":["sleep", ["1000"]]}"#).await;
        assert_eq!(status, 200);
    }
    let inits = server.vm_inits();
    assert_eq!(inits.len(), 2, "{inits:?}");
    let status = server.stop();
    assert!(status.success(), "{status:?}");
    for pid in inits {
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "VM init {pid} outlived the server");
    }
}
