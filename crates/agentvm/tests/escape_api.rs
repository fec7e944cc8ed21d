//! Escape battery, area `api`: a web page the user visits must not be able to drive the VMs of
//! an `agentvm serve` on the same machine (cross-origin requests, bodies a browser sends
//! without a preflight, DNS rebinding, WebSockets), while programs (which send no `Origin`) and
//! origins the operator allows keep working. Requests are sent byte for byte as a browser sends
//! them; the last tests run a real headless Chromium.
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::server::TestServer;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const EVIL: &str = "https://evil.example";
const APP: &str = "http://localhost:3000";

/// A response as it came off the wire.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn cors_headers(&self) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.starts_with("access-control-")).map(|(n, _)| n.as_str()).collect()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, String::from_utf8_lossy(&self.body)))
    }
}

fn authority(server: &TestServer) -> &str {
    server.url.strip_prefix("http://").unwrap()
}

fn action_path(name: &str, key: &str) -> String {
    format!("/gateway/vm/action/{name}?rvt-namespace=default&rvt-method=getOrCreate&rvt-key={key}")
}

/// Sends one HTTP/1.1 request with exactly these headers, in order and duplicates kept, adding
/// `Host` (unless given), `Content-Length` and `Connection: close`.
async fn send(server: &TestServer, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {}\r\n", authority(server)));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()));
    let mut stream = tokio::net::TcpStream::connect(authority(server)).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw)).await.expect("no reply").unwrap();
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> Reply {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("no end of head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked")) {
        body = unchunk(&body);
    }
    Reply { status, headers, body }
}

fn unchunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[line_end + 2..line_end + 2 + size]);
        data = &data[line_end + 4 + size..];
    }
}

/// What Chrome sends with a `fetch` from a page on `origin` to another site.
fn browser<'a>(origin: &'a str, mode: &'a str, content_type: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        (
            "User-Agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/136.0 Safari/537.36",
        ),
        ("Content-Type", content_type),
        ("Accept", "*/*"),
        ("Origin", origin),
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Mode", mode),
        ("Sec-Fetch-Dest", "empty"),
        ("Referer", "https://evil.example/"),
        ("Accept-Language", "en-US,en;q=0.9"),
    ]
}

/// Asserts a refusal by the browser boundary: status, `request.<code>`, a message containing
/// `needle`, and no CORS header that would let the page read anything.
fn assert_refused(reply: &Reply, status: u16, code: &str, needle: &str) {
    let body = reply.json();
    assert_eq!(
        (reply.status, body["group"].as_str(), body["code"].as_str()),
        (status, Some("request"), Some(code)),
        "{body}"
    );
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(needle), "message {message:?} should mention {needle:?}");
    if status == 415 {
        // Refused inside the CORS layer (an allowed page may read why): no grant without an
        // allowed Origin.
        let granted = ["access-control-allow-origin", "access-control-allow-credentials"];
        assert!(granted.iter().all(|h| reply.header(h).is_none()), "{:?}", reply.headers);
    } else {
        assert!(reply.cors_headers().is_empty(), "a refusal must carry no CORS headers: {:?}", reply.headers);
    }
}

/// A program's `exec` (no Origin, JSON body): the way the Node and Rust clients and curl call.
async fn program_exec(server: &TestServer, key: &str, command: &str) -> String {
    let url = format!("{}{}", server.url, action_path("exec", key));
    let response = reqwest::Client::new().post(url).json(&json!({"args": [command]})).send().await.unwrap();
    assert_eq!(response.status(), 200, "a program's exec must work");
    let body: Value = response.json().await.unwrap();
    body["output"]["stdout"].as_str().unwrap().to_string()
}

/// Whether the VM `key` exists, asked as a program. An attack that got as far as an action
/// would have created it (the attacks use `getOrCreate`).
async fn vm_exists(server: &TestServer, key: &str) -> bool {
    let url = format!("{}/actors?namespace=default&name=vm&key={key}", server.url);
    let body: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    !body["actors"].as_array().unwrap().is_empty()
}

/// The VM the attack aimed at was never created, and another VM still works for a program.
async fn assert_untouched(server: &TestServer, victim: &str) {
    assert!(!vm_exists(server, victim).await, "the attack reached VM {victim}");
    assert_eq!(program_exec(server, "bystander", "echo still-here").await, "still-here\n");
}

#[tokio::test]
async fn escape_cross_origin_text_plain_post() {
    // The issue's repro: a page's fetch() with a text/plain body needs no preflight.
    let server = TestServer::start();
    let body = br#"{"args":["touch /home/user/pwned"]}"#;
    let reply = send(
        &server,
        "POST",
        &action_path("exec", "victim"),
        &browser(EVIL, "no-cors", "text/plain;charset=UTF-8"),
        body,
    )
    .await;
    assert_refused(&reply, 403, "origin_not_allowed", "web origin https://evil.example are refused");
    assert!(reply.json()["message"].as_str().unwrap().contains("--allow-origin https://evil.example"));
    assert_eq!(reply.header("vary"), Some("origin"));
    assert_untouched(&server, "victim").await;
}

#[tokio::test]
async fn escape_cross_origin_form_post() {
    // An HTML <form method=post> auto-submitted by the page.
    let server = TestServer::start();
    let mut headers = browser(EVIL, "navigate", "application/x-www-form-urlencoded");
    headers.push(("Sec-Fetch-Dest", "document"));
    let reply =
        send(&server, "POST", &action_path("exec", "victim"), &headers, b"args=touch+%2Fhome%2Fuser%2Fpwned").await;
    assert_refused(&reply, 403, "origin_not_allowed", "evil.example");
    assert_untouched(&server, "victim").await;
}

#[tokio::test]
async fn escape_text_plain_post_without_origin() {
    // Should a browser ever omit Origin, a text/plain body is still refused.
    let server = TestServer::start();
    let reply = send(
        &server,
        "POST",
        &action_path("exec", "victim"),
        &[("Content-Type", "text/plain")],
        br#"{"args":["touch /home/user/pwned"]}"#,
    )
    .await;
    assert_refused(&reply, 415, "unsupported_media_type", "application/json");
    assert!(reply.json()["message"].as_str().unwrap().contains("x-rivet-encoding"));
    assert_untouched(&server, "victim").await;
}

#[tokio::test]
async fn escape_form_urlencoded_post_without_origin() {
    let server = TestServer::start();
    let reply = send(
        &server,
        "POST",
        &action_path("exec", "victim"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        br#"{"args":["touch /home/user/pwned"]}"#,
    )
    .await;
    assert_refused(&reply, 415, "unsupported_media_type", "application/x-www-form-urlencoded");
    assert_untouched(&server, "victim").await;
}

#[tokio::test]
async fn escape_multipart_post_without_origin() {
    let server = TestServer::start();
    let body = "--b\r\nContent-Disposition: form-data; name=\"args\"\r\n\r\n[\"id\"]\r\n--b--\r\n";
    let reply = send(
        &server,
        "POST",
        &action_path("exec", "victim"),
        &[("Content-Type", "multipart/form-data; boundary=b")],
        body.as_bytes(),
    )
    .await;
    assert_refused(&reply, 415, "unsupported_media_type", "multipart/form-data");
    assert_untouched(&server, "victim").await;
}

#[tokio::test]
async fn escape_post_without_content_type() {
    // fetch(url, {method: "POST", mode: "no-cors", body: blob}) with a type-less Blob.
    let server = TestServer::start();
    let reply =
        send(&server, "POST", &action_path("exec", "victim"), &[], br#"{"args":["touch /home/user/pwned"]}"#).await;
    assert_refused(&reply, 415, "unsupported_media_type", "no Content-Type");
    assert_untouched(&server, "victim").await;
}

#[tokio::test]
async fn escape_text_plain_dressed_as_json() {
    // Browsers read only the part before `;` (the essence): these are text/plain to them.
    let server = TestServer::start();
    for content_type in ["text/plain; charset=application/json", "text/plain;application/json", "text/plain+json"] {
        let reply = send(
            &server,
            "POST",
            &action_path("exec", "victim"),
            &[("Content-Type", content_type)],
            br#"{"args":["touch /home/user/pwned"]}"#,
        )
        .await;
        assert_refused(&reply, 415, "unsupported_media_type", "Content-Type");
    }
    assert_untouched(&server, "victim").await;
}

#[tokio::test]
async fn escape_rest_create_with_a_simple_body() {
    // PUT/POST /actors create VMs; a form or text body does not reach them.
    let server = TestServer::start();
    let body = br#"{"name":"vm","key":"victim"}"#;
    let put = send(&server, "PUT", "/actors?namespace=default", &[("Content-Type", "text/plain")], body).await;
    assert_refused(&put, 415, "unsupported_media_type", "PUT");
    let post =
        send(&server, "POST", "/actors", &browser(EVIL, "no-cors", "application/x-www-form-urlencoded"), body).await;
    assert_refused(&post, 403, "origin_not_allowed", "evil.example");
    assert_untouched(&server, "victim").await;
}

#[tokio::test]
async fn escape_preflight_from_a_foreign_origin() {
    // What the browser asks before a JSON POST; the answer must not allow it.
    let server = TestServer::start();
    let reply = send(
        &server,
        "OPTIONS",
        &action_path("exec", "victim"),
        &[
            ("Accept", "*/*"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type,x-rivet-encoding"),
            ("Origin", EVIL),
            ("Sec-Fetch-Mode", "cors"),
            ("Sec-Fetch-Site", "cross-site"),
            ("Sec-Fetch-Dest", "empty"),
        ],
        b"",
    )
    .await;
    assert_refused(&reply, 403, "origin_not_allowed", "evil.example");
    assert_untouched(&server, "victim").await;
}

#[tokio::test]
async fn escape_private_network_preflight_from_a_foreign_origin() {
    // Chrome asks a loopback server for permission before a public page may call it.
    let server = TestServer::start();
    let reply = send(
        &server,
        "OPTIONS",
        "/metadata?namespace=default",
        &[
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Private-Network", "true"),
            ("Origin", EVIL),
            ("Sec-Fetch-Mode", "cors"),
            ("Sec-Fetch-Site", "cross-site"),
        ],
        b"",
    )
    .await;
    assert_refused(&reply, 403, "origin_not_allowed", "evil.example");
    assert_eq!(reply.header("access-control-allow-private-network"), None);
}

#[tokio::test]
async fn escape_dns_rebinding() {
    // evil.example re-resolves to 127.0.0.1: its page calls the server "same-origin".
    let server = TestServer::start();
    let port = authority(&server).rsplit(':').next().unwrap().to_string();
    let host = format!("evil.example:{port}");
    let origin = format!("http://evil.example:{port}");
    let json_action = [
        ("Host", host.as_str()),
        ("Origin", origin.as_str()),
        ("Content-Type", "application/json"),
        ("x-rivet-encoding", "json"),
        ("Sec-Fetch-Site", "same-origin"),
        ("Sec-Fetch-Mode", "cors"),
    ];
    let reply = send(&server, "POST", &action_path("exec", "victim"), &json_action, br#"{"args":["id"]}"#).await;
    assert_refused(&reply, 421, "host_not_allowed", "--allow-host evil.example");
    // A GET needs no Origin at all after rebinding (same-origin GETs carry none).
    let list = send(&server, "GET", "/actors?namespace=default&name=vm", &[("Host", host.as_str())], b"").await;
    assert_refused(&list, 421, "host_not_allowed", "evil.example");
    assert_untouched(&server, "victim").await;
}

#[tokio::test]
async fn escape_rebinding_with_lookalike_hosts() {
    let server = TestServer::start();
    for host in ["localhost.evil.example", "127.0.0.1.evil.example:6420", "localhost-evil.example", "0x7f000001"] {
        let reply = send(&server, "GET", "/actors?namespace=default", &[("Host", host)], b"").await;
        assert_refused(&reply, 421, "host_not_allowed", "--allow-host");
    }
    for host in ["evil.example@localhost", "localhost:6420/x", "localhost:notaport", ""] {
        let reply = send(&server, "GET", "/actors?namespace=default", &[("Host", host)], b"").await;
        assert_eq!(reply.status, 400, "Host {host:?}");
        assert!(reply.cors_headers().is_empty());
    }
    // The names that mean this machine keep working.
    for host in ["localhost", "LOCALHOST:6420", "inspector.localhost:1234", "127.0.0.1", "[::1]:6420"] {
        let reply = send(&server, "GET", "/health", &[("Host", host)], b"").await;
        assert_eq!(reply.status, 200, "Host {host:?}");
    }
}

#[tokio::test]
async fn escape_repeated_host_or_origin_headers() {
    // Two values where one is expected: another component might read the other one.
    let server = TestServer::start_with(&["--allow-origin", APP]);
    let here = authority(&server).to_string();
    let hosts = [("Host", here.as_str()), ("Host", "evil.example")];
    assert_eq!(send(&server, "GET", "/actors?namespace=default", &hosts, b"").await.status, 400);
    let origins = [("Origin", APP), ("Origin", EVIL), ("Content-Type", "application/json")];
    let reply = send(&server, "POST", &action_path("exec", "victim"), &origins, br#"{"args":["id"]}"#).await;
    assert_refused(&reply, 400, "invalid", "more than one Origin");
    assert_untouched(&server, "victim").await;
}

/// Opens a WebSocket to VM `key` with extra handshake headers; `Err(status)` if refused.
async fn websocket(server: &TestServer, key: &str, headers: &[(&'static str, &str)]) -> Result<(), u16> {
    let url = format!(
        "{}/gateway/vm/connect?rvt-namespace=default&rvt-method=getOrCreate&rvt-key={key}",
        server.url.replacen("http://", "ws://", 1)
    );
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", "rivet, rivet_encoding.json".parse().unwrap());
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((mut socket, _)) => {
            let mut conn = common::ws::Conn::from_socket({
                let first = common::ws::next_json(&mut socket).await;
                assert_eq!(first["body"]["tag"], "Init");
                socket
            });
            let out = conn.call("exec", json!(["echo via-socket"])).await;
            assert_eq!(out["stdout"], "via-socket\n");
            Ok(())
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(other) => panic!("websocket handshake failed unexpectedly: {other}"),
    }
}

#[tokio::test]
async fn escape_websocket_from_a_foreign_origin() {
    // Browsers apply no CORS to WebSockets: only the server's Origin check stands in the way.
    let server = TestServer::start_with(&["--allow-origin", APP]);
    assert_eq!(websocket(&server, "victim", &[("origin", EVIL)]).await, Err(403));
    assert_eq!(websocket(&server, "victim", &[("origin", "null")]).await, Err(403));
    assert_untouched(&server, "victim").await;
    // The allowed origin and programs (no Origin) connect.
    assert_eq!(websocket(&server, "friend", &[("origin", APP)]).await, Ok(()));
    assert_eq!(websocket(&server, "friend", &[]).await, Ok(()));
}

#[tokio::test]
async fn escape_websocket_with_a_foreign_host() {
    let server = TestServer::start();
    let port = authority(&server).rsplit(':').next().unwrap().to_string();
    let host = format!("evil.example:{port}");
    let origin = format!("http://evil.example:{port}");
    let refused = websocket(&server, "victim", &[("host", host.as_str()), ("origin", origin.as_str())]).await;
    assert_eq!(refused, Err(421));
    assert_untouched(&server, "victim").await;
}

#[tokio::test]
async fn escape_null_origin() {
    // Sandboxed iframes, file: pages and redirected requests say `Origin: null`.
    let server = TestServer::start_with(&["--allow-origin", APP]);
    let reply =
        send(&server, "POST", &action_path("exec", "victim"), &browser("null", "cors", "application/json"), b"{}")
            .await;
    assert_refused(&reply, 403, "origin_not_allowed", "\"null\"");
    assert_untouched(&server, "victim").await;
    let refused = start_failure(&["--allow-origin", "null"], &[]);
    assert!(refused.contains("`null` is not accepted"), "{refused}");
}

/// Runs `agentvm serve` expecting it to refuse its configuration; returns its stderr.
fn start_failure(args: &[&str], env: &[(&str, &str)]) -> String {
    let data = tempfile::Builder::new().prefix("agentvm-test-").tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_agentvm"));
    command.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(data.path().join("data")).args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    let out = command.stdout(Stdio::null()).output().unwrap();
    assert!(!out.status.success(), "the server started with {args:?} {env:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn escape_wildcard_origin_is_refused_at_startup() {
    // `*` would hand every web page the VMs (and browsers refuse it for credentialed requests).
    let refused = start_failure(&["--allow-origin", "*"], &[]);
    assert!(refused.contains("`*` is not accepted"), "{refused}");
    let refused = start_failure(&[], &[("AGENTVM_ALLOW_ORIGIN", "http://localhost:3000,*")]);
    assert!(refused.contains("`*` is not accepted"), "{refused}");
    let refused = start_failure(&["--allow-origin", "localhost:3000"], &[]);
    assert!(refused.contains("expected scheme://host[:port]"), "{refused}");
    let refused = start_failure(&["--allow-host", "*.example.com"], &[]);
    assert!(refused.contains("is not a host name"), "{refused}");
}

#[tokio::test]
async fn escape_lookalike_origins() {
    // Exact matching: no prefix, suffix, scheme or port slack.
    let server = TestServer::start_with(&["--allow-origin", APP]);
    for origin in [
        "http://localhost:3000.evil.example",
        "http://localhost:30001",
        "http://localhost:300",
        "https://localhost:3000",
        "http://localhost.evil.example:3000",
        "http://evil.example/http://localhost:3000",
        "http://localhost:3000@evil.example",
        "http://LOCALHOST:3000 evil",
    ] {
        let reply =
            send(&server, "POST", &action_path("exec", "victim"), &browser(origin, "cors", "application/json"), b"{}")
                .await;
        assert_refused(&reply, 403, "origin_not_allowed", "--allow-origin");
    }
    assert_untouched(&server, "victim").await;
}

#[tokio::test]
async fn escape_cross_origin_destroy() {
    let server = TestServer::start();
    assert_eq!(program_exec(&server, "keeper", "echo kept > /home/user/file").await, "");
    let url = format!("{}/actors?namespace=default&name=vm&key=keeper", server.url);
    let found: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    let id = found["actors"][0]["actor_id"].as_str().unwrap().to_string();
    let mut headers = browser(EVIL, "cors", "application/json");
    headers.retain(|(name, _)| *name != "Content-Type");
    let reply = send(&server, "DELETE", &format!("/actors/{id}"), &headers, b"").await;
    assert_refused(&reply, 403, "origin_not_allowed", "evil.example");
    assert_eq!(program_exec(&server, "keeper", "cat /home/user/file").await, "kept\n");
}

#[tokio::test]
async fn escape_cross_origin_read_of_the_vm_list() {
    let server = TestServer::start();
    program_exec(&server, "secret-project", "true").await;
    for path in ["/actors?namespace=default&name=vm", "/metadata?namespace=default", "/nowhere"] {
        let reply = send(&server, "GET", path, &browser(EVIL, "cors", "application/json"), b"").await;
        assert_refused(&reply, 403, "origin_not_allowed", "evil.example");
        assert!(!String::from_utf8_lossy(&reply.body).contains("secret-project"));
    }
}

#[tokio::test]
async fn escape_cross_site_request_without_origin() {
    // <img src> / <script src> / links: no Origin, but the browser marks them cross-site.
    let server = TestServer::start();
    program_exec(&server, "secret-project", "true").await;
    let headers = [("Sec-Fetch-Site", "cross-site"), ("Sec-Fetch-Mode", "no-cors"), ("Sec-Fetch-Dest", "script")];
    let reply = send(&server, "GET", "/actors?namespace=default&name=vm", &headers, b"").await;
    assert_refused(&reply, 403, "cross_site", "Sec-Fetch-Site");
    let same_site = [("Sec-Fetch-Site", "same-site"), ("Sec-Fetch-Mode", "no-cors")];
    assert_eq!(send(&server, "GET", "/actors?namespace=default", &same_site, b"").await.status, 403);
    // Typed into the address bar (Sec-Fetch-Site: none) is the user's own doing.
    let typed = [("Sec-Fetch-Site", "none"), ("Sec-Fetch-Mode", "navigate")];
    assert_eq!(send(&server, "GET", "/health", &typed, b"").await.status, 200);
}

#[tokio::test]
async fn escape_a_token_does_not_excuse_a_foreign_origin() {
    // A page that learnt the token is still not an allowed origin.
    let server = TestServer::start_with(&["--token", "s3cret"]);
    let mut headers = browser(EVIL, "cors", "application/json");
    headers.push(("x-rivet-token", "s3cret"));
    let reply = send(&server, "POST", &action_path("exec", "victim"), &headers, br#"{"args":["id"]}"#).await;
    assert_refused(&reply, 403, "origin_not_allowed", "evil.example");
    let program = [("Content-Type", "application/json"), ("x-rivet-token", "s3cret")];
    let ok = send(&server, "POST", &action_path("exec", "friend"), &program, br#"{"args":["echo ok"]}"#).await;
    assert_eq!((ok.status, ok.json()["output"]["stdout"].as_str()), (200, Some("ok\n")));
}

#[tokio::test]
async fn allowed_origin_with_a_browsers_exact_headers() {
    let server = TestServer::start_with(&["--allow-origin", APP, "--allow-origin", "http://127.0.0.1:4000"]);
    // The preflight Chrome sends before rivetkit's action POST.
    let preflight = send(
        &server,
        "OPTIONS",
        &action_path("exec", "friend"),
        &[
            ("Accept", "*/*"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type,x-rivet-encoding"),
            ("Access-Control-Request-Private-Network", "true"),
            ("Origin", APP),
            ("Sec-Fetch-Mode", "cors"),
            ("Sec-Fetch-Site", "same-site"),
            ("Sec-Fetch-Dest", "empty"),
        ],
        b"",
    )
    .await;
    assert_eq!(preflight.status, 200);
    assert_eq!(preflight.header("access-control-allow-origin"), Some(APP));
    assert_eq!(preflight.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(preflight.header("access-control-allow-private-network"), Some("true"));
    let methods = preflight.header("access-control-allow-methods").unwrap();
    assert!(["GET", "POST", "PUT", "DELETE"].iter().all(|m| methods.contains(m)), "{methods}");
    let allowed = preflight.header("access-control-allow-headers").unwrap();
    for header in ["content-type", "x-rivet-encoding", "x-rivet-conn-params", "x-rivet-token", "authorization"] {
        assert!(allowed.contains(header), "{header} missing from {allowed}");
    }
    assert!(preflight.header("vary").unwrap().contains("origin"));
    assert!(preflight.header("access-control-max-age").is_some());

    // The request itself, as rivetkit's browser client sends it.
    let mut headers = browser(APP, "cors", "application/json");
    headers.push(("x-rivet-encoding", "json"));
    let reply = send(&server, "POST", &action_path("exec", "friend"), &headers, br#"{"args":["echo allowed"]}"#).await;
    assert_eq!((reply.status, reply.json()["output"]["stdout"].as_str()), (200, Some("allowed\n")));
    assert_eq!(reply.header("access-control-allow-origin"), Some(APP));
    assert_eq!(reply.header("access-control-allow-credentials"), Some("true"));
    assert!(reply.header("access-control-expose-headers").unwrap().contains("x-rivet-actor"));
    assert!(reply.header("vary").unwrap().contains("origin"));
    // The second allowed origin too; a text/plain body is refused even there, readably.
    let second = browser("http://127.0.0.1:4000", "cors", "text/plain");
    let reply = send(&server, "POST", &action_path("exec", "friend"), &second, br#"{"args":["id"]}"#).await;
    assert_eq!(reply.status, 415);
    assert_eq!(reply.header("access-control-allow-origin"), Some("http://127.0.0.1:4000"));

    // A page the server itself serves (same origin: http://<Host>) needs no allow-list entry.
    let same = format!("http://{}", authority(&server));
    let reply = send(
        &server,
        "POST",
        &action_path("exec", "friend"),
        &[("Origin", same.as_str()), ("Content-Type", "application/json"), ("Sec-Fetch-Site", "same-origin")],
        br#"{"args":["echo same-origin"]}"#,
    )
    .await;
    assert_eq!((reply.status, reply.json()["output"]["stdout"].as_str()), (200, Some("same-origin\n")));
}

#[tokio::test]
async fn allowed_host_names() {
    // Behind a reverse proxy or a DNS name: --allow-host NAME, with any port.
    let server = TestServer::start_with(&["--allow-host", "agentvm.example.com"]);
    for host in ["agentvm.example.com", "AgentVM.example.com:8443"] {
        let reply = send(&server, "GET", "/health", &[("Host", host)], b"").await;
        assert_eq!(reply.status, 200, "{host}");
    }
    let reply = send(&server, "GET", "/health", &[("Host", "agentvm.example.com.evil.example")], b"").await;
    assert_refused(&reply, 421, "host_not_allowed", "agentvm.example.com.evil.example");
}

// --- Headless Chromium --------------------------------------------------------------------------

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Bundles tests/browser/page.mjs with the real rivetkit browser clients (2.3.19 and 2.2.1).
fn bundle_page(out: &Path) -> Vec<u8> {
    let clients = repo().join("clients/node");
    for version in ["v2.3.19", "v2.2.1"] {
        let dir = clients.join(version);
        assert!(
            dir.join("node_modules/rivetkit").is_dir(),
            "the rivetkit client is not installed in {}: run `npm install --ignore-scripts` there (scripts/test does)",
            dir.display()
        );
    }
    let bundle = out.join("page.js");
    let status = Command::new(clients.join("v2.3.19/node_modules/.bin/esbuild"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/page.mjs"))
        .args(["--bundle", "--format=esm", "--platform=browser", "--log-level=warning"])
        .arg(format!("--outfile={}", bundle.display()))
        .status()
        .expect("running esbuild");
    assert!(status.success(), "esbuild failed");
    std::fs::read(bundle).unwrap()
}

/// A loopback HTTP server for the test's web pages: `/` (the page), `/page.js` (the bundle) and
/// `POST /report` (results, handed to the test).
struct PageServer {
    origin: String,
    reports: tokio::sync::mpsc::UnboundedReceiver<Value>,
}

impl PageServer {
    fn start(script: Vec<u8>) -> PageServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let (tx, reports) = tokio::sync::mpsc::unbounded_channel();
        let script = std::sync::Arc::new(script);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let (tx, script) = (tx.clone(), std::sync::Arc::clone(&script));
                std::thread::spawn(move || serve_page(stream, &script, &tx));
            }
        });
        PageServer { origin, reports }
    }
}

fn serve_page(stream: std::net::TcpStream, script: &[u8], reports: &tokio::sync::mpsc::UnboundedSender<Value>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let path = request_line.split(' ').nth(1).unwrap_or("/");
    let (status, content_type, payload): (&str, &str, &[u8]) = if path == "/page.js" {
        ("200 OK", "text/javascript", script)
    } else if path == "/report" {
        if let Ok(report) = serde_json::from_slice(&body) {
            let _ = reports.send(report);
        }
        ("204 No Content", "text/plain", b"")
    } else if path.starts_with("/?") {
        ("200 OK", "text/html", b"<!doctype html><title>page</title><script type=\"module\" src=\"/page.js\"></script>")
    } else {
        ("404 Not Found", "text/plain", b"")
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    );
    let mut stream = stream;
    let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(payload));
}

/// A headless Chromium showing `url`, in its own process group (killed whole on drop). It
/// opens only its first URL, so each page gets its own browser.
struct Chromium {
    child: std::process::Child,
    _profile: tempfile::TempDir,
}

impl Chromium {
    fn open(url: &str) -> Chromium {
        let profile = tempfile::Builder::new().prefix("agentvm-chromium-").tempdir().unwrap();
        let child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromium is not installed: `apt-get install chromium` (.ci/run installs it)");
        Chromium { child, _profile: profile }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn escape_foreign_page_in_headless_chromium_while_an_allowed_page_works() {
    let out = tempfile::Builder::new().prefix("agentvm-page-").tempdir().unwrap();
    let script = bundle_page(out.path());
    let mut allowed = PageServer::start(script.clone());
    let mut foreign = PageServer::start(script);
    let server = TestServer::start_with(&["--allow-origin", &allowed.origin]);
    let page = |origin: &str, mode: &str, key: &str| format!("{origin}/?mode={mode}&key={key}&server={}", server.url);
    let _friendly_browser = Chromium::open(&page(&allowed.origin, "allowed", "friend"));
    let _hostile_browser = Chromium::open(&page(&foreign.origin, "foreign", "victim"));

    let limit = Duration::from_secs(60);
    let friendly = tokio::time::timeout(limit, allowed.reports.recv()).await.ok().flatten();
    let friendly = friendly.expect("the allowed page reported nothing");
    let hostile = tokio::time::timeout(limit, foreign.reports.recv()).await.ok().flatten();
    let hostile = hostile.expect("the foreign page reported nothing");

    // The allowed page: stateless actions in every encoding, connections of both client
    // versions, a raw WebSocket; and even it cannot send a text/plain body (but reads why).
    let ok = &friendly["results"];
    for encoding in ["json", "bare", "cbor"] {
        assert_eq!(ok[format!("rivetkit_2.2.1_exec_{encoding}")]["value"], format!("browser-{encoding}\n"), "{ok}");
    }
    for version in ["2.3.19", "2.2.1"] {
        assert_eq!(ok[format!("rivetkit_{version}_connection")]["value"], "over-websocket\n", "{ok}");
    }
    assert_eq!(ok["raw_websocket"]["value"], "Init", "{ok}");
    let text_plain = &ok["text_plain_from_allowed_page"]["value"];
    assert_eq!(
        (text_plain["status"].as_i64(), text_plain["body"]["code"].as_str()),
        (Some(415), Some("unsupported_media_type")),
        "{ok}"
    );

    // The foreign page: nothing worked. No-cors requests "succeed" with an opaque answer the
    // page cannot read; that they ran nothing is what the server-side check below shows.
    let results = hostile["results"].as_object().unwrap();
    assert_eq!(results.len(), 7, "{hostile}");
    for (attempt, result) in results {
        let opaque = result["value"] == "opaque";
        assert!(!result["ok"].as_bool().unwrap() || opaque, "{attempt} worked from a foreign page: {result}");
    }
    assert_untouched(&server, "victim").await;
}
