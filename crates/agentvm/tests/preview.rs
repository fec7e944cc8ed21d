//! `vmFetch` and signed preview URLs, end to end: a real server, real VMs, a dev server
//! (`python3 -m http.server`) and a WebSocket echo server inside them, reached from the host
//! with plain HTTP clients (reqwest, curl) and a WebSocket client, through both preview paths.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::http::Api;
use common::server::TestServer;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket echo server with Python's standard library only (RFC 6455: the handshake, and
/// frames of any length, masked from the client, unmasked back). A plain GET gets a 200 page,
/// so that `vmFetch` can tell when it listens.
const WS_ECHO: &str = r#"
import base64, hashlib, socket, struct, threading
def handle(c):
    data = b''
    while b'\r\n\r\n' not in data:
        more = c.recv(4096)
        if not more: return
        data += more
    head = data.split(b'\r\n\r\n')[0].decode()
    keys = [l.split(':', 1)[1].strip() for l in head.split('\r\n') if l.lower().startswith('sec-websocket-key:')]
    if not keys:
        c.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nws echo'); c.close(); return
    accept = base64.b64encode(hashlib.sha1((keys[0] + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').encode()).digest()).decode()
    c.sendall(('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
               'Sec-WebSocket-Accept: ' + accept + '\r\n\r\n').encode())
    f = c.makefile('rb')
    while True:
        h = f.read(2)
        if len(h) < 2: return
        op, n = h[0] & 15, h[1] & 127
        if n == 126: n = struct.unpack('>H', f.read(2))[0]
        elif n == 127: n = struct.unpack('>Q', f.read(8))[0]
        mask = f.read(4) if h[1] & 128 else b'\0\0\0\0'
        p = bytes(b ^ mask[i % 4] for i, b in enumerate(f.read(n)))
        if op == 8: c.sendall(b'\x88\x00'); c.close(); return
        if op == 9: op = 10
        size = bytes([len(p)]) if len(p) < 126 else (bytes([126]) + struct.pack('>H', len(p)) if len(p) < 65536 else bytes([127]) + struct.pack('>Q', len(p)))
        c.sendall(bytes([0x80 | op]) + size + p)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', 9000)); s.listen()
while True:
    c, _ = s.accept(); threading.Thread(target=handle, args=(c,), daemon=True).start()
"#;

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// `GET url`: status, body text, and its `Access-Control-Allow-Origin`.
async fn get(url: &str) -> (u16, String, Option<String>) {
    let response = http().get(url).send().await.expect("GET");
    let status = response.status().as_u16();
    let cors = response.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap().to_string());
    (status, response.text().await.unwrap(), cors)
}

/// `curl` on the host, as any user would.
fn curl(url: &str) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sS", "-f", "--noproxy", "*", "--max-time", "30", url])
        .output()
        .expect("running curl");
    assert!(out.status.success(), "curl {url}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The bytes of a `vmFetch` result's body (`["$Uint8Array", base64]` in json).
fn body_text(result: &Value) -> String {
    use base64::Engine;
    let encoded = result["body"][1].as_str().unwrap_or_else(|| panic!("no body in {result}"));
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(encoded).unwrap()).unwrap()
}

/// Starts `python3 -m http.server 8000` serving `/home/user/site` (with one file) and waits,
/// by polling `vmFetch`, until it answers; returns the directory listing.
async fn start_http_server(api: &Api<'_>) -> String {
    api.ok("mkdir", json!(["/home/user/site", {"recursive": true}])).await;
    api.ok("writeFile", json!(["/home/user/site/hello.txt", "hello from the VM\n"])).await;
    api.ok(
        "spawn",
        json!(["python3", ["-m", "http.server", "8000", "--bind", "127.0.0.1", "--directory", "/home/user/site"]]),
    )
    .await;
    wait_for_server(api, 8000).await
}

/// Polls `vmFetch(port, "/")` until the server answers 200; returns its body.
async fn wait_for_server(api: &Api<'_>, port: u16) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = api.call("vmFetch", json!([port, "/"])).await;
        if status == 200 && body["output"]["status"] == 200 {
            return body_text(&body["output"]);
        }
        // Until it listens: a clear 502 (nothing listens on the port).
        assert!(status == 502 && body["code"] == "port_closed", "unexpected answer while waiting: {status} {body}");
        assert!(tokio::time::Instant::now() < deadline, "the server on port {port} never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn actor_id(server: &TestServer, key: &str, token: Option<&str>) -> String {
    let mut request = http().get(format!("{}/actors?name=vm&key={key}", server.url));
    if let Some(token) = token {
        request = request.header("x-rivet-token", token);
    }
    let body: Value = request.send().await.unwrap().json().await.unwrap();
    body["actors"][0]["actor_id"].as_str().unwrap_or_else(|| panic!("no actor {key}: {body}")).to_string()
}

/// Polls `url` until it answers `status`.
async fn until_status(url: &str, status: u16, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if get(url).await.0 == status {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_fetch_and_both_preview_paths_reach_a_dev_server_in_the_vm() {
    let server = TestServer::start();
    let api = Api::new(&server, "preview");
    let listing = start_http_server(&api).await;
    assert!(listing.contains("hello.txt") && listing.contains("Directory listing"), "{listing}");

    // vmFetch: methods, headers, query, bodies.
    let file = api.ok("vmFetch", json!([8000, "/hello.txt?x=1", {"headers": {"X-Test": "1"}}])).await;
    assert_eq!((file["status"].as_i64(), file["statusText"].as_str()), (Some(200), Some("OK")));
    assert_eq!(body_text(&file), "hello from the VM\n");
    assert_eq!(file["headers"]["content-length"], "18", "lower-case header names: {file}");
    let missing = api.ok("vmFetch", json!([8000, "/nope"])).await;
    assert_eq!(missing["status"], 404);
    let posted = api.ok("vmFetch", json!([8000, "/", {"method": "post", "body": "x=1"}])).await;
    assert_eq!(posted["status"], 501, "http.server has no POST: {posted}");

    let created = api.ok("createSignedPreviewUrl", json!([8000])).await;
    let token = created["token"].as_str().unwrap().to_string();
    assert!(token.len() == 32 && token.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()), "{token}");
    assert_eq!(created["path"], format!("/request/fetch/{token}"));
    assert_eq!(created["port"], 8000);
    let expires_in = created["expiresAt"].as_i64().unwrap() - now_ms();
    assert!((3_590_000..=3_600_000).contains(&expires_in), "default lifetime 3600 s: {created}");

    // The stable path, with plain HTTP clients from the host.
    let url = format!("{}{}/", server.url, created["path"].as_str().unwrap());
    let (status, body, cors) = get(&url).await;
    assert_eq!((status, cors.as_deref()), (200, Some("*")));
    assert_eq!(body, listing, "the preview URL shows what vmFetch shows");
    assert_eq!(curl(&url), listing);
    assert_eq!(curl(&format!("{url}hello.txt?x=1")), "hello from the VM\n");
    assert_eq!(get(&format!("{}{}", server.url, created["path"].as_str().unwrap())).await.1, listing, "no slash");
    let preflight = http().request(reqwest::Method::OPTIONS, &url).send().await.unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(preflight.headers()["access-control-allow-methods"], "GET, POST, PUT, DELETE, OPTIONS");
    assert_eq!(preflight.headers()["access-control-allow-headers"], "*");
    let post = http().post(&url).body("x").send().await.unwrap();
    assert_eq!(post.status(), 501, "any method is passed through");

    // The gateway's raw request path, by actor id and by name (`handle.fetch`'s form).
    let id = actor_id(&server, "preview", None).await;
    let by_id = format!("{}/gateway/{id}/request/fetch/{token}/", server.url);
    assert_eq!(get(&by_id).await.1, listing);
    let by_name = format!(
        "{}/gateway/vm/request/fetch/{token}/hello.txt?rvt-namespace=default&rvt-method=get&rvt-key=preview",
        server.url
    );
    assert_eq!(get(&by_name).await.1, "hello from the VM\n");
    let (status, body, _) = get(&format!("{}/gateway/{id}/request/other", server.url)).await;
    assert_eq!(status, 404, "{body}");

    // Wrong tokens: another shape, an unknown one, one of another VM.
    let other = Api::new(&server, "preview-other");
    let foreign = other.ok("createSignedPreviewUrl", json!([8000])).await["token"].as_str().unwrap().to_string();
    for bad in ["nope", "abcdefghijklmnopqrstuvwxyz012345"] {
        let (status, body, cors) = get(&format!("{}/request/fetch/{bad}/", server.url)).await;
        assert_eq!((status, cors.as_deref()), (403, Some("*")), "{body}");
    }
    assert_eq!(get(&format!("{}/gateway/{id}/request/fetch/{foreign}/", server.url)).await.0, 403);

    // A port where nothing listens: 502, clearly.
    let closed = api.ok("createSignedPreviewUrl", json!([8001])).await;
    let (status, body, _) = get(&format!("{}{}/", server.url, closed["path"].as_str().unwrap())).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("nothing listens on port 8001"), "{body}");

    // Expired by hand: 403 at once; expiring again (or an unknown token) is a no-op.
    assert_eq!(api.ok("expireSignedPreviewUrl", json!([token])).await, json!(["$Undefined", 0]));
    assert_eq!(get(&url).await.0, 403);
    assert_eq!(get(&by_id).await.0, 403);
    api.ok("expireSignedPreviewUrl", json!([token])).await;
    api.ok("expireSignedPreviewUrl", json!(["unknown"])).await;

    // Expired by time: works, then 403 once its second is over.
    let short = api.ok("createSignedPreviewUrl", json!([8000, 1])).await;
    let short_url = format!("{}{}/", server.url, short["path"].as_str().unwrap());
    let expires_in = short["expiresAt"].as_i64().unwrap() - now_ms();
    assert!((0..=1000).contains(&expires_in), "{short}");
    until_status(&short_url, 403, "the 1 s preview URL expires").await;
    assert!(now_ms() >= short["expiresAt"].as_i64().unwrap(), "403 only after expiresAt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_are_refused_clearly_before_any_vm_boots() {
    let server = TestServer::start();
    let api = Api::new(&server, "preview-args");
    let cases = [
        ("createSignedPreviewUrl", json!([8000, 0]), "expiresInSeconds must be between 1 and 86400"),
        ("createSignedPreviewUrl", json!([8000, 100000]), "expiresInSeconds must be between 1 and 86400"),
        ("createSignedPreviewUrl", json!([0]), "createSignedPreviewUrl: port must be between 1 and 65535, got 0"),
        ("createSignedPreviewUrl", json!([70000]), "port must be between 1 and 65535, got 70000"),
        ("createSignedPreviewUrl", json!(["8000"]), "argument 1 (port) must be an integer, got string"),
        ("vmFetch", json!([0, "/"]), "vmFetch: port must be between 1 and 65535, got 0"),
        ("vmFetch", json!([8000, "index.html"]), "vmFetch: url must be a path starting with `/`"),
        ("vmFetch", json!([8000, "http://localhost:8000/"]), "url must be a path starting with `/`"),
        ("vmFetch", json!([8000, "/", {"headers": {"a": 1}}]), "vmFetch: headers.a must be a string, got number"),
        ("vmFetch", json!([8000, "/", {"method": "G T"}]), "vmFetch: invalid method"),
        ("vmFetch", json!([8000, "/", {"headers": {"a": "b\r\nc: d"}}]), "contains a line break"),
        ("expireSignedPreviewUrl", json!([]), "argument 1 (token) must be a string"),
    ];
    for (name, args, expected) in cases {
        let (status, body) = api.call(name, args.clone()).await;
        assert_eq!(status, 400, "{name}({args}): {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{name}({args}): {message:?} lacks {expected:?}");
    }
    // None of this booted the VM.
    assert_eq!(api.ok("getVmEvents", json!([])).await, json!([]), "argument errors boot nothing");
    // Nothing listens: vmFetch says so.
    let (status, body) = api.call("vmFetch", json!([8000, "/"])).await;
    assert_eq!((status, body["code"].as_str()), (502, Some("port_closed")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_server_in_the_vm_works_through_the_preview_url() {
    let server = TestServer::start_with(&["--idle-timeout", "1"]);
    let api = Api::new(&server, "preview-ws");
    // Started in the background by a shell, not by `spawn`: a running spawned process would
    // keep the VM awake by itself, and this test checks that an open tunnel does.
    api.ok("writeFile", json!(["/home/user/ws.py", WS_ECHO])).await;
    api.ok("exec", json!(["setsid python3 /home/user/ws.py </dev/null >/dev/null 2>&1 &"])).await;
    wait_for_server(&api, 9000).await;
    let path = api.ok("createSignedPreviewUrl", json!([9000])).await["path"].as_str().unwrap().to_string();
    let ws_url = format!("{}{path}/socket?x=1", server.url.replace("http://", "ws://"));
    let (mut socket, response) =
        tokio_tungstenite::connect_async(&ws_url).await.expect("WebSocket through the preview");
    assert_eq!(response.status(), 101);
    socket.send(Message::text("hello through the preview")).await.unwrap();
    let echoed = socket.next().await.expect("an answer").unwrap();
    assert_eq!(echoed, Message::text("hello through the preview"));
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    socket.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(socket.next().await.expect("an answer").unwrap(), Message::binary(big));

    // An open tunnel keeps the VM awake: three idle timeouts later it still echoes, and the
    // VM never went to sleep.
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        socket.send(Message::text("still there?")).await.unwrap();
        assert_eq!(socket.next().await.unwrap().unwrap(), Message::text("still there?"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let events = api.ok("getVmEvents", json!([])).await;
    assert!(!events.as_array().unwrap().iter().any(|e| e["name"] == "vmShutdown"), "slept with a tunnel: {events}");
    socket.close(None).await.unwrap();

    // The same path through the gateway's raw request form.
    let id = actor_id(&server, "preview-ws", None).await;
    let gateway = format!("{}/gateway/{id}{path}/", server.url.replace("http://", "ws://"));
    let (mut socket, _) = tokio_tungstenite::connect_async(&gateway).await.expect("WebSocket through the gateway");
    socket.send(Message::text("via the gateway")).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap(), Message::text("via the gateway"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unexpired_token_survives_a_restart_and_wakes_the_sleeping_vm() {
    let server = TestServer::start();
    let api = Api::new(&server, "preview-restart");
    let listing = start_http_server(&api).await;
    let lasting = api.ok("createSignedPreviewUrl", json!([8000])).await["path"].as_str().unwrap().to_string();
    let expired = api.ok("createSignedPreviewUrl", json!([8000])).await["path"].as_str().unwrap().to_string();
    api.ok("expireSignedPreviewUrl", json!([expired.rsplit('/').next().unwrap()])).await;
    let boots = |events: &Value| events.as_array().unwrap().iter().filter(|e| e["name"] == "vmBooted").count();
    let boots_before = boots(&api.ok("getVmEvents", json!([])).await);
    drop(api);
    let data = server.stop_keep_data();

    let server = TestServer::start_in(data, &[]);
    let api = Api::new(&server, "preview-restart");
    let url = format!("{}{lasting}/", server.url);
    assert_eq!(get(&format!("{}{expired}/", server.url)).await.0, 403, "expired stays expired");
    assert_eq!(get(&format!("{}/request/fetch/{}/", server.url, "x".repeat(32))).await.0, 403);
    // (Through the gateway the token is checked in the sleeping VM's own file.)
    let id = actor_id(&server, "preview-restart", None).await;
    let expired_token = expired.rsplit('/').next().unwrap();
    assert_eq!(get(&format!("{}/gateway/{id}/request/fetch/{expired_token}/", server.url)).await.0, 403);
    let events = api.ok("getVmEvents", json!([])).await;
    assert_eq!(boots(&events), boots_before, "refused tokens boot nothing: {events}");
    // The VM sleeps after the restart: the request wakes it (its dev server is not running yet).
    let (status, body, _) = get(&url).await;
    assert_eq!(status, 502, "the token is valid, the VM woke, nothing listens yet: {body}");
    let events = api.ok("getVmEvents", json!([])).await;
    assert_eq!(boots(&events), boots_before + 1, "the preview request woke the VM: {events}");
    // Its files are there; start the dev server again and the same URL shows it.
    api.ok(
        "spawn",
        json!(["python3", ["-m", "http.server", "8000", "--bind", "127.0.0.1", "--directory", "/home/user/site"]]),
    )
    .await;
    assert_eq!(wait_for_server(&api, 8000).await, listing);
    let (status, body, _) = get(&url).await;
    assert_eq!((status, body), (200, listing));

    // Destroying the VM removes its tokens.
    api.ok("destroy", json!([])).await;
    assert_eq!(get(&url).await.0, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_api_token_the_preview_token_alone_opens_the_preview_but_creates_nothing() {
    let server = TestServer::start_with(&["--token", "s3cret"]);
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-rivet-token", "s3cret".parse().unwrap());
    let authed = reqwest::Client::builder().default_headers(headers).no_proxy().build().unwrap();
    let api = Api { server: &server, name: "vm", key: "preview-auth", http: authed.clone() };
    let listing = start_http_server(&api).await;
    let path = api.ok("createSignedPreviewUrl", json!([8000])).await["path"].as_str().unwrap().to_string();
    let token = path.rsplit('/').next().unwrap().to_string();

    // No API token anywhere: the preview still opens, through either path.
    assert_eq!(Api::new(&server, "preview-auth").call("exec", json!(["true"])).await.0, 401, "the API needs it");
    assert_eq!(get(&format!("{}{path}/", server.url)).await, (200, listing.clone(), Some("*".into())));
    let id = actor_id(&server, "preview-auth", Some("s3cret")).await;
    assert_eq!(get(&format!("{}/gateway/{id}/request/fetch/{token}/", server.url)).await.1, listing);
    let by_name =
        "request/fetch/TOKEN/?rvt-namespace=default&rvt-method=getOrCreate&rvt-key=KEY".replace("TOKEN", &token);
    let existing = format!("{}/gateway/vm/{}", server.url, by_name.replace("KEY", "preview-auth"));
    assert_eq!(get(&existing).await.1, listing, "getOrCreate of an existing actor is a get");

    // ... but a getOrCreate of a new key without the API token creates nothing.
    let new = format!("{}/gateway/vm/{}", server.url, by_name.replace("KEY", "preview-auth-new"));
    let (status, body, _) = get(&new).await;
    assert_eq!(status, 403, "{body}");
    let listed: Value =
        authed.get(format!("{}/actors?name=vm", server.url)).send().await.unwrap().json().await.unwrap();
    let keys: Vec<&str> = listed["actors"].as_array().unwrap().iter().filter_map(|a| a["key"].as_str()).collect();
    assert_eq!(keys, ["preview-auth"], "no actor was created: {listed}");
    // The VM never sees the API token.
    let echo = "import http.server as h\nclass H(h.BaseHTTPRequestHandler):\n def do_GET(s):\n  b=str(sorted(k.lower() for k in s.headers.keys())).encode()\n  s.send_response(200); s.send_header('Content-Length', str(len(b))); s.end_headers(); s.wfile.write(b)\n def do_POST(s):\n  n=int(s.headers['Content-Length']); got=0\n  while got < n: got += len(s.rfile.read(min(65536, n - got)))\n  b=str(got).encode()\n  s.send_response(200); s.send_header('Content-Length', str(len(b))); s.end_headers(); s.wfile.write(b)\nh.HTTPServer(('127.0.0.1', 8002), H).serve_forever()";
    api.ok("spawn", json!(["python3", ["-c", echo]])).await;
    wait_for_server(&api, 8002).await;
    let seen = api.ok("createSignedPreviewUrl", json!([8002])).await["path"].as_str().unwrap().to_string();
    let request = http().get(format!("{}{seen}/", server.url)).header("x-rivet-token", "s3cret");
    let names = request.bearer_auth("s3cret").send().await.unwrap().text().await.unwrap();
    assert!(
        names.contains("'host'") && !names.contains("x-rivet-token") && !names.contains("authorization"),
        "{names}"
    );
    // Request bodies go through whole, past the API's own body limits.
    let upload = http().post(format!("{}{seen}/upload", server.url)).body(vec![7u8; 40 << 20]).send().await.unwrap();
    assert_eq!(upload.text().await.unwrap(), (40u64 << 20).to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preset_sets_the_preview_lifetimes() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agentvm.toml");
    std::fs::write(&config, "[actors.vm.preview]\ndefault_expires_in_seconds = 60\nmax_expires_in_seconds = 120\n")
        .unwrap();
    let server = TestServer::start_with(&["--config", config.to_str().unwrap()]);
    let api = Api::new(&server, "preview-preset");
    let created = api.ok("createSignedPreviewUrl", json!([8000])).await;
    let expires_in = created["expiresAt"].as_i64().unwrap() - now_ms();
    assert!((50_000..=60_000).contains(&expires_in), "the preset's default, 60 s: {created}");
    api.ok("createSignedPreviewUrl", json!([8000, 120])).await;
    let (status, body) = api.call("createSignedPreviewUrl", json!([8000, 121])).await;
    assert_eq!((status, body["message"].as_str()), (400, Some("expiresInSeconds must be between 1 and 120")));
}

/// The real rivetkit client (2.3.19, each encoding): `vmFetch`, `createSignedPreviewUrl`,
/// `handle.fetch("/fetch/<token>/…")` through the gateway's raw request path, and expiry
/// (clients/node/preview.mjs).
#[test]
fn the_rivetkit_client_fetches_and_opens_preview_urls() {
    let server = TestServer::start();
    let runs: Vec<_> = ["bare", "json", "cbor"]
        .into_iter()
        .map(|encoding| {
            let mut command = common::node::scenario(&server.url, encoding, &format!("node-{encoding}"), "preview");
            (encoding, std::thread::spawn(move || command.output().expect("running node")))
        })
        .collect();
    for (encoding, run) in runs {
        common::node::assert_done(encoding, &run.join().unwrap());
    }
}
