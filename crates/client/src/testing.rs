//! A real `agentvm serve` for this crate's doctests and tests (not part of the client API).
//!
//! The binary is `$AGENTVM_BIN`, else the workspace's `target/debug/agentvm`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `agentvm serve` on a loopback port with its own data directory; stopped with
/// SIGTERM when dropped.
pub struct TestServer {
    url: String,
    child: Child,
    data: Option<tempfile::TempDir>,
}

/// Starts a server (random port, new data directory) and points `AGENTVM_URL` at it, so that
/// `Client::from_env()` finds it.
pub fn server() -> TestServer {
    let server = TestServer::start();
    std::env::set_var("AGENTVM_URL", server.url());
    server
}

fn binary() -> PathBuf {
    let path = std::env::var_os("AGENTVM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/debug/agentvm")));
    if !path.is_file() {
        panic!("build the agentvm binary first (cargo build -p agentvm): {} does not exist", path.display());
    }
    path
}

impl TestServer {
    /// Starts a server on a random port with a new data directory (leaves `AGENTVM_URL` alone).
    pub fn start() -> TestServer {
        TestServer::start_with(&[])
    }

    /// [`TestServer::start`] with extra `agentvm serve` arguments (e.g. `["--token", "t"]`).
    pub fn start_with(extra: &[&str]) -> TestServer {
        let data =
            tempfile::Builder::new().prefix("agentvm-test-client-").tempdir().expect("creating a data directory");
        TestServer::start_on("127.0.0.1:0", data, extra).unwrap_or_else(|(e, _)| panic!("{e}"))
    }

    /// Starts a server listening on `listen` with the data directory `data` (a restart when it
    /// held a server's data before). When the server does not come up (e.g. the port is taken),
    /// returns why, and the data directory for another try.
    pub fn start_on(
        listen: &str,
        data: tempfile::TempDir,
        extra: &[&str],
    ) -> Result<TestServer, (String, tempfile::TempDir)> {
        let spawned = Command::new(binary())
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(data.path().join("data"))
            .args(extra)
            .env("AGENTVM_LOG", "warn")
            .env_remove("AGENTVM_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => return Err((format!("starting agentvm serve: {e}"), data)),
        };
        let Some(stdout) = child.stdout.take() else { return Err(("no stdout of agentvm serve".into(), data)) };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Keeps reading after the line so the server never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("agentvm listening on ") {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or_default().to_owned());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => Ok(TestServer { url, child, data: Some(data) }),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                Err((format!("agentvm serve --listen {listen} did not start listening ({status})"), data))
            }
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server with SIGKILL (no cleanup) and hands back its data directory.
    pub fn kill(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.data.take().expect("data directory")
    }

    /// Stops the server with SIGTERM (its VMs stop cleanly), SIGKILL after 10 s.
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid (not yet reaped, so not reused).
            #[allow(unsafe_code, reason = "std has no way to send SIGTERM to a child")]
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}
