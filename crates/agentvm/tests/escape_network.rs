//! Escape battery, area `network`: a VM whose preset has an egress allow-list tries to reach
//! what the list does not name — the server's API, a host service on loopback and on the host's
//! other addresses, cloud metadata — through the proxy (other spellings of loopback, request
//! smuggling, SOCKS5 with IPv6, a raw CONNECT) and around it. A trap server on all the host's
//! addresses counts every connection that got through: none may.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::http::Api;
use common::server::TestServer;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP server on `addr` answering `body` and counting connections.
async fn serve(addr: &str, body: &'static str) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let response =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    (port, count)
}

async fn run(api: &Api<'_>, command: &str) -> String {
    let r = api.ok("exec", json!([command])).await;
    format!("{}{}", r["stdout"].as_str().unwrap_or_default(), r["stderr"].as_str().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_list_vm_reaches_nothing_it_does_not_name() {
    let (allowed, allowed_count) = serve("127.0.0.1:0", "allowed").await;
    // The trap listens on every host address, loopback included.
    let (trap, trap_count) = serve("0.0.0.0:0", "TRAPPED").await;
    let mut config = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    write!(config, "[actors.vm.network]\nmode = \"allow\"\nallow = [\"127.0.0.1:{allowed}\"]\n").unwrap();
    let server = TestServer::start_with(&["--config", config.path().to_str().unwrap()]);
    let api = Api::new(&server, "escape-net");
    let api_port: u16 = server.url.rsplit(':').next().unwrap().parse().unwrap();
    let proxy = "http://127.0.0.1:3128";

    for (what, command) in [
        ("the API through the proxy", format!("curl -sS -m 5 -x {proxy} http://127.0.0.1:{api_port}/health")),
        ("the API by name", format!("curl -sS -m 5 -x {proxy} http://localhost:{api_port}/health")),
        ("IPv4-mapped loopback", format!("curl -sS -m 5 -x {proxy} 'http://[::ffff:127.0.0.1]:{trap}/'")),
        ("decimal loopback", format!("curl -sS -m 5 -x {proxy} http://2130706433:{trap}/")),
        ("short loopback", format!("curl -sS -m 5 -x {proxy} http://127.1:{trap}/")),
        ("0.0.0.0", format!("curl -sS -m 5 -x {proxy} http://0.0.0.0:{trap}/")),
        ("SOCKS5 IPv6 loopback", format!("curl -sS -m 5 -x socks5h://127.0.0.1:3128 'http://[::1]:{trap}/'")),
        ("SOCKS5 by name", format!("curl -sS -m 5 -x socks5h://127.0.0.1:3128 http://localhost:{trap}/")),
        ("CONNECT tunnel", format!("curl -sS -m 5 -p -x {proxy} http://127.0.0.1:{trap}/")),
        ("cloud metadata", format!("curl -sS -m 5 -x {proxy} http://169.254.169.254/latest/meta-data/")),
        ("the listed address on another port", format!("curl -sS -m 5 -x {proxy} http://127.0.0.1:{trap}/")),
        ("directly", format!("curl -sS -m 5 --noproxy '*' http://127.0.0.1:{trap}/")),
        ("the host's other addresses", format!(
            "for ip in $(getent ahostsv4 $(hostname) 2>/dev/null | cut -d' ' -f1) 10.0.2.2 192.0.2.2 172.17.0.1; do \
             curl -sS -m 2 --noproxy '*' http://$ip:{trap}/; done"
        )),
        // Request smuggling: the proxy must go where the request line says, never the Host header.
        ("a Host header pointing elsewhere", format!(
            "python3 -c \"import socket; s=socket.create_connection(('127.0.0.1', 3128)); \
             s.sendall(b'GET http://127.0.0.1:{allowed}/ HTTP/1.1\\r\\nHost: 127.0.0.1:{trap}\\r\\n\\r\\n'); \
             print(s.recv(4096).decode())\""
        )),
        ("a second request on the same connection", format!(
            "python3 -c \"import socket; s=socket.create_connection(('127.0.0.1', 3128)); \
             s.sendall(b'GET http://127.0.0.1:{allowed}/ HTTP/1.1\\r\\nHost: a\\r\\n\\r\\nGET http://127.0.0.1:{trap}/ HTTP/1.1\\r\\nHost: b\\r\\n\\r\\n'); \
             import time; time.sleep(0.5); print(s.recv(65536).decode())\""
        )),
    ] {
        let out = run(&api, &command).await;
        assert!(!out.contains("TRAPPED") && !out.contains("\"status\":\"ok\""), "{what}: {out}");
    }
    assert_eq!(trap_count.load(Ordering::SeqCst), 0, "something reached the trap server");
    assert!(
        allowed_count.load(Ordering::SeqCst) >= 1,
        "the smuggling checks never reached the allowed server (so they tested nothing)"
    );
    // Denials were recorded.
    let events = api.ok("getVmEvents", json!([{}])).await;
    assert!(events.as_array().unwrap().iter().any(|e| e["name"] == "networkDenied"), "{events}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_cannot_exhaust_the_servers_descriptors_through_its_proxy() {
    let (allowed, _) = serve("127.0.0.1:0", "allowed").await;
    let mut config = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    write!(config, "[actors.vm.network]\nmode = \"allow\"\nallow = [\"127.0.0.1:{allowed}\"]\n").unwrap();
    let server = TestServer::start_with(&["--config", config.path().to_str().unwrap()]);
    let api = Api::new(&server, "escape-net-fds");
    let fds = || std::fs::read_dir(format!("/proc/{}/fd", server.pid())).unwrap().count();
    run(&api, "true").await;
    let before = fds();
    // 600 idle connections to the proxy, held open: past its cap of 256, the rest are refused.
    let holder = "import socket, time\nheld = []\nfor i in range(600):\n    held.append(socket.create_connection(('127.0.0.1', 3128)))\n\
                  open('/tmp/holding', 'w').write(str(len(held)))\ntime.sleep(60)\n";
    let pid = api.ok("spawn", json!(["python3", ["-c", holder]])).await["pid"].clone();
    assert!(pid.is_i64(), "{pid}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while run(&api, "cat /tmp/holding 2>/dev/null").await != "600" {
        assert!(std::time::Instant::now() < deadline, "the VM could not open its connections");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let during = fds();
    assert!(during <= before + 300, "the server held {} more descriptors (before {before})", during - before);
    api.ok("killProcess", json!([pid])).await;
    // The proxy still serves once they are gone.
    let out = run(&api, &format!("curl -sS -m 10 http://127.0.0.1:{allowed}/")).await;
    assert_eq!(out, "allowed");
}
