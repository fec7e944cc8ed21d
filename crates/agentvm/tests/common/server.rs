//! A real `agentvm serve` process on a random loopback port, for integration tests.
#![allow(dead_code, reason = "each test binary uses only some of these helpers")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct TestServer {
    pub url: String,
    pub data: tempfile::TempDir,
    child: Child,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with(&[])
    }

    /// Starts the server with extra arguments; waits until it listens.
    pub fn start_with(extra: &[&str]) -> TestServer {
        Self::start_in(tempfile::Builder::new().prefix("agentvm-test-").tempdir().unwrap(), extra)
    }

    /// Starts a server on an existing data directory (a restart).
    pub fn start_in(data: tempfile::TempDir, extra: &[&str]) -> TestServer {
        Self::launch(Self::command(&data, extra), data)
    }

    /// Starts a server on `data` (a new or an existing data directory) with extra arguments
    /// and environment variables.
    pub fn start_in_env(data: tempfile::TempDir, extra: &[&str], env: &[(String, String)]) -> TestServer {
        let mut command = Self::command(&data, extra);
        command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        Self::launch(command, data)
    }

    /// Starts the server with its descriptor limit (`RLIMIT_NOFILE`) set to `soft` and `hard`
    /// before it runs (as `ulimit -n` would), with extra arguments; waits until it listens.
    pub fn start_with_nofile(soft: u64, hard: u64, extra: &[&str]) -> TestServer {
        use std::os::unix::process::CommandExt;
        let data = tempfile::Builder::new().prefix("agentvm-test-").tempdir().unwrap();
        let mut command = Self::command(&data, extra);
        // SAFETY: runs in the forked child before exec; setrlimit is a single system call,
        // async-signal-safe, and touches no memory of the parent.
        unsafe {
            command.pre_exec(move || {
                nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, soft, hard)
                    .map_err(std::io::Error::from)
            });
        }
        Self::launch(command, data)
    }

    fn command(data: &tempfile::TempDir, extra: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_agentvm"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path().join("data"))
            .args(extra)
            .env("AGENTVM_LOG", "warn")
            .stdout(Stdio::piped());
        command
    }

    fn launch(mut command: Command, data: tempfile::TempDir) -> TestServer {
        let mut child = command.spawn().expect("starting agentvm serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("agentvm listening on ") {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or_default().to_string());
                }
            }
        });
        let url = rx.recv_timeout(Duration::from_secs(30)).expect("server did not start listening");
        TestServer { url, data, child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server with SIGKILL (no cleanup at all) and hands back its data directory.
    pub fn kill_hard(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let data = tempfile::Builder::new().prefix("agentvm-test-").tempdir().unwrap();
        std::mem::replace(&mut self.data, data)
    }

    /// Stops the server with SIGTERM and hands back its data directory for a restart.
    pub fn stop_keep_data(mut self) -> tempfile::TempDir {
        self.stop();
        let data = tempfile::Builder::new().prefix("agentvm-test-").tempdir().unwrap();
        std::mem::replace(&mut self.data, data)
    }

    /// Stops the server with SIGTERM (graceful) and returns its exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        for _ in 0..200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.child.wait().unwrap()
    }
}

impl TestServer {
    /// Host pid of the server's VM launcher (`agentvm vm-launcher`), if it runs.
    pub fn launcher(&self) -> Option<i32> {
        self.children_with_cmdline(b"agentvm\0vm-launcher\0").into_iter().next()
    }

    /// Names of the cgroups the launcher waits in for the next VM (no VM's yet).
    pub fn launcher_cgroups(&self) -> Vec<String> {
        let Some(pid) = self.launcher() else { return Vec::new() };
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.rsplit('/').next())
            .filter(|name| name.starts_with("agentvm-"))
            .map(str::to_string)
            .collect()
    }

    /// Host pids of the server's VM inits: its children running `agentvm vm-init` (the server
    /// has other children too, such as its LXCFS daemon).
    pub fn vm_inits(&self) -> Vec<i32> {
        self.children_with_cmdline(b"agentvm\0vm-init\0")
    }

    fn children_with_cmdline(&self, prefix: &[u8]) -> Vec<i32> {
        let server_pid = self.pid() as i32;
        let mut inits = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
            let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if ppid == Some(server_pid) && cmdline.starts_with(prefix) {
                inits.push(pid);
            }
        }
        inits
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}
