//! What the network tests share: a tiny origin HTTP server and an echo server on host loopback,
//! a proxy under test with its `on_denied` calls recorded, and real `curl` / `python3` clients.

#![allow(dead_code, reason = "each test binary uses part of these helpers")]

use std::net::SocketAddr;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentvm_network::{serve_proxy, Denied, Policy, Proxy, ProxyLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Aborts a spawned server task when dropped, so no test leaves one running.
pub struct Running(pub JoinHandle<()>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An HTTP/1 origin on 127.0.0.1: answers every request with `origin: METHOD TARGET` and
/// `Connection: close`, and keeps each request head it received.
pub struct Origin {
    pub addr: SocketAddr,
    pub heads: Arc<Mutex<Vec<String>>>,
    _task: Running,
}

impl Origin {
    pub async fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin address");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let _ = answer(stream, seen).await;
                });
            }
        });
        Origin { addr, heads, _task: Running(task) }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("heads").clone()
    }
}

async fn answer(mut stream: TcpStream, seen: Arc<Mutex<Vec<String>>>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let request_line = head.lines().next().unwrap_or_default().to_owned();
    seen.lock().expect("heads").push(head);
    let mut words = request_line.split(' ');
    let body = format!("origin: {} {}\n", words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// A TCP echo server on 127.0.0.1.
pub struct Echo {
    pub addr: SocketAddr,
    _task: Running,
}

impl Echo {
    pub async fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
        let addr = listener.local_addr().expect("echo address");
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else { return };
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                    let _ = write.shutdown().await;
                });
            }
        });
        Echo { addr, _task: Running(task) }
    }
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
pub async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("address").port()
}

/// The proxy under test, serving on 127.0.0.1, with every `on_denied` call recorded.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub proxy: Arc<Proxy>,
    pub denied: Arc<Mutex<Vec<Denied>>>,
    pub task: Running,
}

impl TestProxy {
    pub async fn start(allow: &[String]) -> TestProxy {
        TestProxy::with_limits(allow, ProxyLimits::default()).await
    }

    pub async fn with_limits(allow: &[String], limits: ProxyLimits) -> TestProxy {
        TestProxy::build(allow, |proxy| proxy.with_limits(limits)).await
    }

    /// A proxy configured by `configure` (limits, a local connector...).
    pub async fn build(allow: &[String], configure: impl FnOnce(Proxy) -> Proxy) -> TestProxy {
        let policy = Arc::new(Policy::parse(allow).expect("test policy"));
        let denied = Arc::new(Mutex::new(Vec::new()));
        let record = denied.clone();
        let on_denied = Arc::new(move |d: Denied| record.lock().expect("denied").push(d));
        let proxy = Arc::new(configure(Proxy::new(policy, on_denied)));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let task = Running(tokio::spawn(serve_proxy(listener, proxy.clone())));
        TestProxy { addr, proxy, denied, task }
    }

    pub fn denied(&self) -> Vec<Denied> {
        self.denied.lock().expect("denied").clone()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Runs a client program with no proxy variables of its own environment but `env`.
pub async fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(program);
    command.args(args).kill_on_drop(true);
    for var in ["http_proxy", "https_proxy", "all_proxy", "no_proxy"] {
        command.env_remove(var).env_remove(var.to_ascii_uppercase());
    }
    command.envs(env.iter().copied());
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} did not finish in 30 s"))
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    output
}

/// `curl -sS` with `args`: (exit code, stdout, stderr).
pub async fn curl(args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["-sS", "--max-time", "20"];
    all.extend_from_slice(args);
    let out = run("curl", &all, &[]).await;
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `condition` until it holds, failing the test after 10 s.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
