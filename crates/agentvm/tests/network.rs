//! VM presets and the network (issue 13): a VM reaches nothing by default; a preset's egress
//! allow-list is enforced by the server's proxy (curl, python and node through the proxy
//! variables; refusals with 403 and `networkDenied`; no way around it); forwards; each preset
//! gets exactly its own policy; a client's `createWithInput` cannot change it (real rivetkit
//! client). Host test servers run on host loopback, standing in for an allowed API.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::http::Api;
use common::server::TestServer;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A tiny HTTP server on host loopback answering every request with `body`; counts connections.
struct HostServer {
    port: u16,
    connections: Arc<AtomicUsize>,
}

async fn host_server(body: &'static str) -> HostServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let response =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    HostServer { port, connections }
}

fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().prefix("agentvm-config-").suffix(".toml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

/// Runs `command` with `sh -c` in the VM; returns (exit code, stdout, stderr).
async fn sh(api: &Api<'_>, command: &str) -> (i64, String, String) {
    let r = api.ok("exec", json!([command])).await;
    (
        r["exitCode"].as_i64().unwrap(),
        r["stdout"].as_str().unwrap_or_default().to_string(),
        r["stderr"].as_str().unwrap_or_default().to_string(),
    )
}

/// What a VM prints for `command`, which must succeed.
async fn ok(api: &Api<'_>, command: &str) -> String {
    let (code, stdout, stderr) = sh(api, command).await;
    assert_eq!(code, 0, "`{command}` failed in {}: {stdout}{stderr}", api.name);
    stdout
}

/// `command` must fail in the VM.
async fn fails(api: &Api<'_>, command: &str) -> String {
    let (code, stdout, stderr) = sh(api, command).await;
    assert_ne!(code, 0, "`{command}` succeeded in {}: {stdout}", api.name);
    format!("{stdout}{stderr}")
}

fn server_port(server: &TestServer) -> u16 {
    server.url.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_vm_reaches_nothing_outside_itself() {
    let host = host_server("host-secret").await;
    let server = TestServer::start();
    let api = Api::new(&server, "default-net");
    let port = server_port(&server);
    // Host loopback, the server's own API, a public address, the cloud metadata address.
    for url in [
        format!("http://127.0.0.1:{}/", host.port),
        format!("http://127.0.0.1:{port}/health"),
        "http://1.1.1.1/".to_string(),
        "http://169.254.169.254/latest/meta-data/".to_string(),
    ] {
        let out = fails(&api, &format!("curl -sS -m 5 {url}")).await;
        assert!(!out.contains("host-secret") && !out.contains("agentvm"), "{url}: {out}");
    }
    let out = fails(
        &api,
        &format!("python3 -c \"import socket; socket.create_connection(('127.0.0.1', {}), timeout=5)\"", host.port),
    )
    .await;
    assert!(out.contains("ConnectionRefused") || out.contains("refused"), "{out}");
    // No proxy is announced, and nothing listens on the proxy's port.
    assert_eq!(ok(&api, "echo \"${HTTP_PROXY:-none}${http_proxy:-}${ALL_PROXY:-}\"").await, "none\n");
    fails(&api, "curl -sS -m 5 -x http://127.0.0.1:3128 http://example.com/").await;
    assert_eq!(host.connections.load(Ordering::SeqCst), 0, "something reached the host server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presets_enforce_their_own_allow_list_and_forwards() {
    let allowed = host_server("hello-from-the-allowed-api").await;
    let unlisted = host_server("must-not-be-reached").await;
    let forwarded = host_server("hello-from-the-forward").await;
    let config = config_file(&format!(
        r#"
[actors.vm]

[actors.coder]
[actors.coder.network]
mode = "allow"
allow = ["127.0.0.1:{allowed}", "*.example.org:443"]
forward = [{{ port = 8080, to = "127.0.0.1:{forwarded}" }}]

[actors.fwd.network]
forward = [{{ port = 8080, to = "127.0.0.1:{forwarded}" }}]
"#,
        allowed = allowed.port,
        forwarded = forwarded.port,
    ));
    let server = TestServer::start_with(&["--config", config.path().to_str().unwrap()]);
    let coder = Api::named(&server, "coder", "agent");
    let plain = Api::named(&server, "vm", "agent");
    let fwd = Api::named(&server, "fwd", "agent");
    let url = format!("http://127.0.0.1:{}/v1/models", allowed.port);

    // The proxy environment, in both cases.
    let env = ok(&coder, "echo $HTTP_PROXY $https_proxy $ALL_PROXY $no_proxy").await;
    assert_eq!(env, "http://127.0.0.1:3128 http://127.0.0.1:3128 socks5h://127.0.0.1:3128 localhost,::1\n");

    // curl, python and node reach the allowed API through the proxy variables.
    assert_eq!(ok(&coder, &format!("curl -sS -m 10 {url}")).await, "hello-from-the-allowed-api");
    assert_eq!(
        ok(&coder, &format!("curl -sS -m 10 --proxytunnel -x http://127.0.0.1:3128 {url}")).await,
        "hello-from-the-allowed-api",
        "CONNECT (how https goes through the proxy)"
    );
    assert_eq!(
        ok(&coder, &format!("curl -sS -m 10 -x socks5h://127.0.0.1:3128 {url}")).await,
        "hello-from-the-allowed-api",
        "SOCKS5"
    );
    let python = format!(
        "python3 -c \"import urllib.request; print(urllib.request.urlopen('{url}', timeout=10).read().decode())\""
    );
    assert_eq!(ok(&coder, &python).await, "hello-from-the-allowed-api\n");
    let node = format!("node -e \"fetch('{url}').then(r => r.text()).then(t => console.log(t))\"");
    assert_eq!(ok(&coder, &node).await, "hello-from-the-allowed-api\n");
    let node_https = "node -e \"fetch('https://api.not-listed.test/').then(r => console.log(r.status), e => { console.log(String(e.cause && e.cause.message)); process.exit(3) })\"";
    let (code, out, _) = sh(&coder, node_https).await;
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("403"), "node sees the proxy's refusal: {out}");
    let allowed_so_far = allowed.connections.load(Ordering::SeqCst);
    assert_eq!(allowed_so_far, 5);

    // A destination not on the list: the proxy's 403 with the reason, and a networkDenied event.
    let (code, out, _) = sh(&coder, "curl -sS -m 10 -o - -w '\\n%{http_code}' http://example.com/").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("\n403"), "{out}");
    assert!(out.contains("example.com:80") && out.contains("allow-list"), "the reason: {out}");
    fails(&coder, "curl -sS -m 10 https://evil.example.net/").await;
    fails(&coder, "curl -sS -m 10 -x socks5h://127.0.0.1:3128 http://evil.example.net/").await;
    let events = coder.ok("getVmEvents", json!([{}])).await;
    let denied: Vec<(String, i64)> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "networkDenied")
        .map(|e| (e["data"]["host"].as_str().unwrap().to_string(), e["data"]["port"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        denied,
        vec![
            ("api.not-listed.test".into(), 443),
            ("example.com".into(), 80),
            ("evil.example.net".into(), 443),
            ("evil.example.net".into(), 80)
        ],
        "{events}"
    );

    // Clients that ignore the variables get nowhere: there is no route out of the VM.
    fails(&coder, &format!("curl -sS -m 5 --noproxy '*' {url}")).await;
    fails(
        &coder,
        &format!(
            "env -u HTTP_PROXY -u http_proxy -u ALL_PROXY -u all_proxy curl -sS -m 5 http://127.0.0.1:{}/",
            unlisted.port
        ),
    )
    .await;
    fails(&coder, "python3 -c \"import socket; socket.create_connection(('1.1.1.1', 80), timeout=5)\"").await;
    // An unlisted loopback destination through the proxy is the VM's own loopback, not the host's.
    let out = fails(&coder, &format!("curl -sSf -m 5 http://127.0.0.1:{}/", unlisted.port)).await;
    assert!(out.contains("502"), "{out}");
    assert_eq!(unlisted.connections.load(Ordering::SeqCst), 0, "the host's unlisted server was reached");
    assert_eq!(allowed.connections.load(Ordering::SeqCst), allowed_so_far, "a bypass reached the allowed server");
    // ... so a dev server in the VM stays reachable with the proxy variables set.
    coder
        .ok("spawn", json!(["python3", ["-m", "http.server", "3000", "--bind", "127.0.0.1", "--directory", "/etc"]]))
        .await;
    let listing =
        ok(&coder, "for i in $(seq 100); do curl -sf -m 5 http://127.0.0.1:3000/ && break; sleep 0.1; done").await;
    assert!(listing.contains("hostname"), "{listing}");

    // Forwards: reachable on the VM's loopback with no proxy settings, in any mode.
    assert_eq!(ok(&fwd, "curl -sS -m 10 http://127.0.0.1:8080/").await, "hello-from-the-forward");
    assert_eq!(ok(&fwd, "echo ${HTTP_PROXY:-none}").await, "none\n");
    assert_eq!(
        ok(&coder, "env -u HTTP_PROXY -u http_proxy curl -sS -m 10 http://127.0.0.1:8080/").await,
        "hello-from-the-forward"
    );

    // The other preset of the same server keeps its own (empty) policy.
    assert_eq!(ok(&plain, "echo ${HTTP_PROXY:-none}").await, "none\n");
    fails(&plain, &format!("curl -sS -m 5 {url}")).await;
    fails(&plain, &format!("curl -sS -m 5 -x http://127.0.0.1:3128 {url}")).await;
    fails(&plain, "curl -sS -m 5 http://127.0.0.1:8080/").await;
    fails(&fwd, &format!("curl -sS -m 5 -x http://127.0.0.1:3128 {url}")).await;
    assert_eq!(allowed.connections.load(Ordering::SeqCst), allowed_so_far);
}

#[test]
fn bad_config_files_stop_the_server_with_the_line() {
    let config = config_file("[actors.vm.network]\nmode = \"allow\"\nallow = [\n  \"api.example.com\",\n]\n");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_agentvm"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", "/nonexistent/agentvm-test", "--config"])
        .arg(config.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("{}:4:", config.path().display())), "{stderr}");
    assert!(stderr.contains("port"), "{stderr}");
}

#[test]
fn createwithinput_cannot_change_the_network_policy_through_the_rivetkit_client() {
    let config =
        config_file("[actors.vm]\n\n[actors.coder.network]\nmode = \"allow\"\nallow = [\"api.example.com:443\"]\n");
    let server = TestServer::start_with(&["--config", config.path().to_str().unwrap()]);
    let output = common::node::scenario(&server.url, "bare", "presets", "presets").output().unwrap();
    common::node::assert_done("presets", &output);
}

/// The host's first IPv4 address that is not loopback: what "the internet" looks like from a
/// VM in open mode in this offline test.
fn host_address() -> std::net::Ipv4Addr {
    nix::ifaddrs::getifaddrs()
        .unwrap()
        .filter_map(|i| i.address.and_then(|a| a.as_sockaddr_in().map(|s| s.ip())))
        .find(|ip| !ip.is_loopback())
        .expect("this test needs a non-loopback IPv4 address on the host (a test server listens there)")
}

/// slirp4netns processes the server started.
fn slirps_of(server: &TestServer) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some((comm, rest)) = stat.split_once(") ") else { continue };
        let ppid: u32 = rest.split(' ').nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        if comm.ends_with("(slirp4netns") && ppid == server.pid() {
            found.push(pid);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_mode_reaches_the_network_but_not_the_hosts_loopback() {
    let ip = host_address();
    let outside = {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let body = "hello-from-outside";
                let response =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let _ = stream.write_all(response.as_bytes()).await;
            }
        });
        port
    };
    let loopback_only = host_server("host-loopback-secret").await;
    let config = config_file("[actors.vm]\n\n[actors.web.network]\nmode = \"open\"\n");
    let server = TestServer::start_with(&["--config", config.path().to_str().unwrap()]);
    let port = server_port(&server);
    let web = Api::named(&server, "web", "open");
    let plain = Api::named(&server, "vm", "closed");

    assert_eq!(ok(&web, &format!("curl -sS -m 10 http://{ip}:{outside}/")).await, "hello-from-outside");
    assert!(ok(&web, "cat /etc/resolv.conf").await.contains("nameserver 10.0.2.3"));
    assert_eq!(ok(&web, "echo ${HTTP_PROXY:-none}").await, "none\n");
    // The host's loopback (through slirp's gateway address too) and the server's API stay out of reach.
    for url in [
        format!("http://10.0.2.2:{}/", loopback_only.port),
        format!("http://10.0.2.2:{port}/health"),
        format!("http://{ip}:{port}/health"),
        format!("http://127.0.0.1:{}/", loopback_only.port),
    ] {
        let out = fails(&web, &format!("curl -sS -m 5 {url}")).await;
        assert!(!out.contains("secret") && !out.contains("agentvm"), "{url}: {out}");
    }
    assert_eq!(loopback_only.connections.load(Ordering::SeqCst), 0);
    // The other preset stays closed.
    fails(&plain, &format!("curl -sS -m 5 http://{ip}:{outside}/")).await;
    assert!(ok(&plain, "cat /etc/resolv.conf").await.contains("no name server"));

    // The stack ends with its VM.
    assert_eq!(slirps_of(&server).len(), 1, "one slirp4netns for the one open VM");
    web.ok("destroy", json!([])).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !slirps_of(&server).is_empty() {
        assert!(std::time::Instant::now() < deadline, "slirp4netns outlived its VM");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[test]
fn open_mode_is_refused_beyond_loopback() {
    let config = config_file("[actors.web.network]\nmode = \"open\"\n");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_agentvm"))
        .args(["serve", "--listen", "0.0.0.0:0", "--token", "t", "--data-dir", "/nonexistent/agentvm-test", "--config"])
        .arg(config.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("network.mode") && stderr.contains("loopback"), "{stderr}");
}

/// The policy is put in place at every boot: after the VM slept and woke, and after a server
/// restart; the client's creation input stays with the VM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_and_the_input_come_back_after_sleep_and_restart() {
    let allowed = host_server("still-allowed").await;
    let config =
        config_file(&format!("[actors.coder.network]\nmode = \"allow\"\nallow = [\"127.0.0.1:{}\"]\n", allowed.port));
    let config_path = config.path().to_str().unwrap().to_string();
    let args = ["--config", config_path.as_str(), "--idle-timeout", "1"];
    let server = TestServer::start_with(&args);
    // Created with input (`{env: {A: "1"}}` as rivetkit 2.3 sends it in the URL).
    let create = format!(
        "{}/gateway/coder/action/exec?rvt-method=getOrCreate&rvt-key=sleepy&rvt-input=oWNlbnahYUFhMQ",
        server.url
    );
    let response = reqwest::Client::new().post(&create).json(&json!({"args": ["echo $A"]})).send().await.unwrap();
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["output"]["stdout"], "1\n");
    let coder = Api::named(&server, "coder", "sleepy");
    let url = format!("http://127.0.0.1:{}/", allowed.port);
    assert_eq!(ok(&coder, &format!("curl -sS -m 10 {url}")).await, "still-allowed");

    // Wait until it slept (no VM process left; actions would keep it awake), then wake it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !server.vm_inits().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the VM never slept");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The VM's processes end before its `vmShutdown` is logged: wait for that too (reading the
    // log does not wake the VM).
    loop {
        let events = coder.ok("getVmEvents", json!([{}])).await;
        if events.as_array().unwrap().iter().any(|e| e["name"] == "vmShutdown" && e["data"]["reason"] == "sleep") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no vmShutdown {{reason: sleep}} was logged: {events}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(ok(&coder, &format!("echo $A; curl -sS -m 10 {url}")).await, "1\nstill-allowed");

    // A restart on the same data directory and config.
    let data = server.stop_keep_data();
    let server = TestServer::start_in(data, &args);
    let coder = Api::named(&server, "coder", "sleepy");
    assert_eq!(ok(&coder, &format!("echo $A; curl -sS -m 10 {url}")).await, "1\nstill-allowed");
    assert!(fails(&coder, "curl -sSf -m 5 http://example.com/").await.contains("403"));
    assert_eq!(allowed.connections.load(Ordering::SeqCst), 3);
}
