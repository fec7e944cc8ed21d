//! The `agentvm` CLI against a real server: exec, ps, kill, cp, ls, cat, logs, vm ls/rm, errors,
//! and an interactive shell driven through tmux (a real pseudo-terminal).
mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::server::TestServer;

fn cli(server: &TestServer, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentvm"))
        .arg("--url")
        .arg(&server.url)
        .args(args)
        .env_remove("AGENTVM_URL")
        .output()
        .expect("running agentvm")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn exec_streams_output_and_returns_the_exit_code() {
    let server = TestServer::start();
    let ok = cli(&server, &["exec", "cli-exec", "--", "echo", "hello"]);
    assert_eq!((ok.status.code(), text(&ok.stdout).as_str()), (Some(0), "hello\n"));
    let failing = cli(&server, &["exec", "cli-exec", "--", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(failing.status.code(), Some(3));
    assert_eq!(text(&failing.stdout), "out\n");
    assert_eq!(text(&failing.stderr), "err\n");
    // -i forwards stdin; -e and -w set the environment and directory.
    let mut child = Command::new(env!("CARGO_BIN_EXE_agentvm"))
        .args([
            "--url",
            &server.url,
            "exec",
            "-i",
            "-e",
            "WHO=cli",
            "-w",
            "/tmp",
            "cli-exec",
            "--",
            "sh",
            "-c",
            "cat; echo $WHO; pwd",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"from stdin\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "from stdin\ncli\n/tmp\n");
    let missing = cli(&server, &["exec", "cli-exec", "--", "no-such-program"]);
    assert_eq!(missing.status.code(), Some(125));
    assert!(text(&missing.stderr).contains("command not found: no-such-program"), "{}", text(&missing.stderr));
}

#[test]
fn errors_say_what_to_do() {
    let server = TestServer::start();
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{unused}");
    let out = Command::new(env!("CARGO_BIN_EXE_agentvm"))
        .args(["--url", &url, "exec", "demo", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&format!("no server at {url}")) && stderr.contains("agentvm serve"), "{stderr}");
    let out = cli(&server, &["exec", "cli-errors"]);
    assert!(text(&out.stderr).contains("no command given"), "{}", text(&out.stderr));
    let out = cli(&server, &["cat", "cli-errors", "/home/user/none"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("ENOENT"), "{}", text(&out.stderr));
    let help = cli(&server, &["--help"]);
    assert!(text(&help.stdout).contains("agentvm exec demo -- echo hello"));
    let completions = cli(&server, &["completions", "bash"]);
    assert!(completions.status.success() && text(&completions.stdout).contains("agentvm"));
}

#[test]
fn ps_shows_a_spawned_sleep_under_its_parent_and_kill_ends_it() {
    let server = TestServer::start();
    let mut background = Command::new(env!("CARGO_BIN_EXE_agentvm"))
        .args(["--url", &server.url, "exec", "cli-ps", "--", "sh", "-c", "sleep 100 & wait"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let tree = loop {
        let out = text(&cli(&server, &["ps", "cli-ps"]).stdout);
        // The parent's own command line contains "sleep 100" too: wait for the child's line.
        if out.lines().any(|l| l.ends_with("└─ sleep 100")) || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let lines: Vec<&str> = tree.lines().collect();
    let parent = lines.iter().position(|l| l.ends_with("sh -c sleep 100 & wait")).unwrap_or_else(|| panic!("{tree}"));
    let child = lines.iter().position(|l| l.ends_with("└─ sleep 100")).unwrap_or_else(|| panic!("{tree}"));
    assert_eq!(child, parent + 1, "{tree}");
    let sleep_pid = lines[child].split_whitespace().next().unwrap();
    let killed = cli(&server, &["kill", "cli-ps", sleep_pid, "--signal", "KILL"]);
    assert!(killed.status.success(), "{}", text(&killed.stderr));
    let status = background.wait().unwrap();
    assert_eq!(status.code(), Some(0), "the shell's `wait` returns once its job is killed");
    let gone = cli(&server, &["kill", "cli-ps", "99999"]);
    assert_eq!(gone.status.code(), Some(1));
}

#[test]
fn cp_round_trips_a_binary_file_and_ls_cat_see_it() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let original: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let local = dir.path().join("blob.bin");
    std::fs::write(&local, &original).unwrap();
    let up = cli(&server, &["cp", local.to_str().unwrap(), "cli-cp:/home/user/"]);
    assert!(up.status.success(), "{}", text(&up.stderr));
    let back = dir.path().join("back.bin");
    let down = cli(&server, &["cp", "cli-cp:/home/user/blob.bin", back.to_str().unwrap()]);
    assert!(down.status.success(), "{}", text(&down.stderr));
    assert_eq!(std::fs::read(&back).unwrap(), original);
    let ls = cli(&server, &["ls", "-l", "cli-cp", "/home/user"]);
    assert!(text(&ls.stdout).contains("200000 blob.bin"), "{}", text(&ls.stdout));
    cli(&server, &["exec", "cli-cp", "--", "sh", "-c", "echo text > /home/user/t"]);
    assert_eq!(text(&cli(&server, &["cat", "cli-cp", "/home/user/t"]).stdout), "text\n");
}

#[test]
fn logs_show_process_output_of_a_later_exec() {
    let server = TestServer::start();
    // A booted VM: its log starts with `vmBooted`, which the follower prints once subscribed.
    assert!(cli(&server, &["exec", "cli-logs", "--", "true"]).status.success());
    let mut follow = Command::new(env!("CARGO_BIN_EXE_agentvm"))
        .args(["--url", &server.url, "logs", "-f", "cli-logs"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The follower subscribes before it prints history: once it has printed the boot, it is
    // listening.
    let first = rx.recv_timeout(Duration::from_secs(30)).expect("logs -f printed no history");
    assert!(first.contains("vmBooted"), "{first}");
    let exec = cli(&server, &["exec", "cli-logs", "--", "echo", "logged-line"]);
    assert!(exec.status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = vec![first];
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            let done = line.contains("processOutput") && line.contains("logged-line");
            seen.push(line);
            if done {
                break;
            }
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(seen.iter().any(|l| l.contains("processOutput") && l.contains("logged-line")), "{seen:?}");
    // Without -f: the history, as JSON lines.
    let history = text(&cli(&server, &["logs", "--json", "cli-logs"]).stdout);
    let output = history
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["name"] == "processOutput")
        .expect("processOutput in the history");
    assert_eq!(output["data"]["data"], "logged-line\n");
    assert!(output["seq"].is_u64());
}

#[test]
fn vm_ls_and_rm() {
    let server = TestServer::start();
    assert!(cli(&server, &["exec", "cli-vm", "--", "true"]).status.success());
    let listed = text(&cli(&server, &["vm", "ls"]).stdout);
    assert!(listed.lines().any(|l| l.starts_with("cli-vm ")), "{listed}");
    let rm = cli(&server, &["vm", "rm", "cli-vm"]);
    assert!(rm.status.success(), "{}", text(&rm.stderr));
    let listed = text(&cli(&server, &["vm", "ls", "--json"]).stdout);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&listed).unwrap(), serde_json::json!([]));
}

#[test]
fn inspect_prints_the_inspectors_address_of_a_vm() {
    let server = TestServer::start();
    assert!(cli(&server, &["exec", "cli-inspected", "--", "true"]).status.success());
    let all = cli(&server, &["inspect", "--no-open"]);
    assert_eq!(text(&all.stdout).trim(), format!("{}/", server.url));
    let one = cli(&server, &["inspect", "--no-open", "cli-inspected"]);
    let url = text(&one.stdout);
    let id = url.trim().rsplit('/').next().unwrap().to_string();
    assert_eq!(url.trim(), format!("{}/#/vm/{id}", server.url));
    assert_eq!(id.len(), 30, "{url}");
    let unknown = cli(&server, &["inspect", "--no-open", "nope"]);
    assert!(!unknown.status.success());
    assert!(text(&unknown.stderr).contains("no VM has the key \"nope\""), "{}", text(&unknown.stderr));
}

/// A private tmux server (its own socket), killed at the end.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").arg("-L").arg(&self.socket).args(args).output().expect("tmux");
        text(&out.stdout)
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "cli"])
    }

    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let screen = self.screen();
            if screen.contains(needle) {
                return screen;
            }
            assert!(Instant::now() < deadline, "{needle:?} never appeared:\n{screen}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

#[test]
fn an_interactive_shell_in_a_real_terminal() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (before, after) = (dir.path().join("before"), dir.path().join("after"));
    let script = format!(
        // `after` appears whole (renamed into place), so the test never reads it half written.
        "stty -g > {}; {} --url {} shell cli-shell; echo \"exit=$?\"; stty -g > {}.tmp && mv {}.tmp {}; sleep 600",
        before.display(),
        env!("CARGO_BIN_EXE_agentvm"),
        server.url,
        after.display(),
        after.display(),
        after.display()
    );
    let tmux = Tmux { socket: format!("agentvm-test-{}", std::process::id()) };
    tmux.run(&["new-session", "-d", "-s", "cli", "-x", "100", "-y", "30", "sh", "-c", &script]);
    // capture-pane trims trailing spaces: the prompt ends in "$".
    tmux.wait_for("user@cli-shell:~$");
    tmux.run(&["send-keys", "-t", "cli", "echo $((6*7))", "Enter"]);
    tmux.wait_for("\n42");
    tmux.run(&["send-keys", "-t", "cli", "stty size", "Enter"]);
    tmux.wait_for("30 100");
    tmux.run(&["resize-window", "-t", "cli", "-x", "120", "-y", "40"]);
    std::thread::sleep(Duration::from_millis(500));
    tmux.run(&["send-keys", "-t", "cli", "clear; stty size", "Enter"]);
    tmux.wait_for("40 120");
    // Ctrl-C reaches the VM, not the CLI.
    tmux.run(&["send-keys", "-t", "cli", "sleep 100", "Enter"]);
    std::thread::sleep(Duration::from_millis(500));
    tmux.run(&["send-keys", "-t", "cli", "C-c"]);
    tmux.run(&["send-keys", "-t", "cli", "echo still-$((1+1))", "Enter"]);
    tmux.wait_for("still-2");
    tmux.run(&["send-keys", "-t", "cli", "exit 5", "Enter"]);
    tmux.wait_for("exit=5");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !after.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        std::fs::read_to_string(&before).unwrap(),
        std::fs::read_to_string(&after).unwrap(),
        "terminal modes were not restored"
    );
}

/// The README's quickstart, as written (`agentvm serve`, then `agentvm exec demo -- echo hello`),
/// with only the environment pointing it at a free port and a temporary data directory.
#[test]
fn the_readme_quickstart_works() {
    use std::io::BufRead;
    let data = tempfile::Builder::new().prefix("agentvm-test-").tempdir().unwrap();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_agentvm"))
        .arg("serve")
        .env("AGENTVM_LISTEN", "127.0.0.1:0")
        .env("AGENTVM_DATA_DIR", data.path())
        .env("AGENTVM_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let line = std::io::BufReader::new(serve.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("agentvm listening on "))
        .expect("the server printed where it listens");
    let url = line.trim_start_matches("agentvm listening on ").split_whitespace().next().unwrap().to_string();
    let hello = Command::new(env!("CARGO_BIN_EXE_agentvm"))
        .args(["exec", "demo", "--", "echo", "hello"])
        .env("AGENTVM_URL", &url)
        .output()
        .unwrap();
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(serve.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let status = serve.wait().unwrap();
    assert_eq!((hello.status.code(), text(&hello.stdout).as_str()), (Some(0), "hello\n"), "{}", text(&hello.stderr));
    assert!(status.success());
}
