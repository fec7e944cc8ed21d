//! Interactive shells on a real PTY (the shells issue's acceptance lines).
mod common;

use std::time::Duration;

use agentvm_vm::{Item, ShellOptions, Subscription, Vm, VmError, VmEvent};
use common::*;

/// Reads one shell's terminal output from a subscription. `screen` is the text with escape
/// sequences removed; `raw` keeps them, for checks on what a full-screen program draws.
struct Terminal {
    id: String,
    events: Subscription,
    screen: String,
    raw: String,
    strip: Stripper,
    exit: Option<i32>,
}

/// Removes ANSI escape sequences and carriage returns from terminal output, across chunk
/// boundaries, leaving the text as lines.
#[derive(Default)]
enum Stripper {
    #[default]
    Text,
    Escape,
    Csi,
    Osc,
}

impl Stripper {
    fn feed(&mut self, input: &str, out: &mut String) {
        for c in input.chars() {
            *self = match (&*self, c) {
                (Stripper::Text, '\x1b') => Stripper::Escape,
                (Stripper::Text, '\r') => Stripper::Text,
                (Stripper::Text, c) => {
                    out.push(c);
                    Stripper::Text
                }
                (Stripper::Escape, '[') => Stripper::Csi,
                (Stripper::Escape, ']') => Stripper::Osc,
                (Stripper::Escape, _) => Stripper::Text,
                (Stripper::Csi, c) if ('\x40'..='\x7e').contains(&c) => Stripper::Text,
                (Stripper::Csi, _) => Stripper::Csi,
                (Stripper::Osc, '\x07') => Stripper::Text,
                (Stripper::Osc, _) => Stripper::Osc,
            };
        }
    }
}

impl Terminal {
    async fn open(vm: &Vm, options: ShellOptions) -> Terminal {
        let events = vm.subscribe(None);
        let id = vm.open_shell(options).await.expect("open shell");
        Terminal { id, events, screen: String::new(), raw: String::new(), strip: Stripper::Text, exit: None }
    }

    /// Waits until the text shown since the last call contains `needle`; returns that text.
    async fn expect(&mut self, needle: &str) -> String {
        self.expect_in(needle, false).await
    }

    /// Like `expect`, on the raw output with its escape sequences.
    async fn expect_raw(&mut self, needle: &str) -> String {
        self.expect_in(needle, true).await
    }

    async fn expect_in(&mut self, needle: &str, raw: bool) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let buffer = if raw { &mut self.raw } else { &mut self.screen };
            if let Some(at) = buffer.find(needle) {
                let seen = buffer[..at + needle.len()].to_string();
                buffer.drain(..at + needle.len());
                return seen;
            }
            match tokio::time::timeout_at(deadline, self.events.next()).await {
                Ok(Some(Item::Event(e))) => self.take(&e.event),
                Ok(other) => panic!("unexpected stream item {other:?}"),
                Err(_) => panic!(
                    "{:?} never appeared; terminal shows:\n{}",
                    needle,
                    if raw { &self.raw } else { &self.screen }
                ),
            }
        }
    }

    fn take(&mut self, event: &VmEvent) {
        match event {
            VmEvent::ShellData { shell_id, data } if *shell_id == self.id => {
                let text = String::from_utf8_lossy(data);
                self.raw.push_str(&text);
                self.strip.feed(&text, &mut self.screen);
            }
            VmEvent::ShellExit { shell_id, exit_code } if *shell_id == self.id => self.exit = Some(*exit_code),
            _ => {}
        }
    }

    async fn expect_exit(&mut self) -> i32 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while self.exit.is_none() {
            match tokio::time::timeout_at(deadline, self.events.next()).await {
                Ok(Some(Item::Event(e))) => self.take(&e.event),
                other => panic!("no shellExit: {other:?}"),
            }
        }
        self.exit.unwrap()
    }
}

#[tokio::test]
async fn a_shell_runs_commands_on_the_vms_own_terminal() {
    let h = host();
    let vm = h.vm("shell-basics").await;
    let mut t = Terminal::open(&vm, ShellOptions::default()).await;
    assert_eq!(t.id, "shell-1");
    vm.write_shell(&t.id, b"echo $((6*7))\n").await.unwrap();
    t.expect("\n42\n").await;
    vm.write_shell(&t.id, b"tty; echo $TERM; echo ${COLUMNS}x${LINES}; stty size\n").await.unwrap();
    let out = t.expect("24 80\n").await;
    assert!(out.contains("\n/dev/pts/0\n"), "{out}");
    assert!(out.contains("\nxterm-256color\n"), "{out}");
    assert!(out.contains("\n80x24\n"), "{out}");
    // It is an interactive login bash as the VM user, in the user's home.
    vm.write_shell(&t.id, b"echo $0 $- $(id -un) $PWD\n").await.unwrap();
    let out = t.expect("/home/user\n").await;
    assert!(out.contains("-bash") || out.contains("bash"), "{out}");
    assert!(out.contains("user /home/user"), "{out}");
    // The shell is an ordinary VM process.
    let all = vm.all_processes().await.unwrap();
    assert!(all.iter().any(|p| p.command.contains("bash") && p.ppid == 1), "{all:?}");
    // Its output is kept for a terminal that attaches later.
    let replay: Vec<u8> = vm.shell_output(&t.id, None).unwrap().iter().flat_map(|c| c.data.to_vec()).collect();
    assert!(String::from_utf8_lossy(&replay).contains("xterm-256color"));
    vm.close_shell(&t.id).await.unwrap();
}

#[tokio::test]
async fn resizing_sets_the_size_and_signals_the_foreground_program() {
    let h = host();
    let vm = h.vm("shell-resize").await;
    let mut t = Terminal::open(&vm, ShellOptions { cols: Some(100), rows: Some(30), ..Default::default() }).await;
    vm.write_shell(&t.id, b"stty size\n").await.unwrap();
    t.expect("30 100\n").await;
    vm.resize_shell(&t.id, 120, 40).unwrap();
    vm.write_shell(&t.id, b"stty size\n").await.unwrap();
    t.expect("40 120\n").await;

    // A foreground program that waits for SIGWINCH and reports the size it then sees.
    let program = "python3 -c 'import os, signal, sys\n\
def winch(*_):\n    s = os.get_terminal_size(0); print(f\"got-winch-{s.lines}x{s.columns}\", flush=True); sys.exit(0)\n\
signal.signal(signal.SIGWINCH, winch); print(\"waiting-for-winch\", flush=True)\nwhile True: signal.pause()'\n";
    vm.write_shell(&t.id, program.as_bytes()).await.unwrap();
    t.expect("\nwaiting-for-winch").await;
    // Not a condition wait, and cannot be one: the text is on the terminal before Python's
    // `print` has returned, and a SIGWINCH handled inside it makes the handler's own `print` a
    // reentrant call (RuntimeError). Nothing outside the process shows when `print` returned.
    tokio::time::sleep(Duration::from_millis(200)).await;
    vm.resize_shell(&t.id, 90, 33).unwrap();
    t.expect("got-winch-33x90").await;
    assert!(matches!(vm.resize_shell(&t.id, 0, 10), Err(VmError::InvalidArgument(_))));
    vm.close_shell(&t.id).await.unwrap();
}

#[tokio::test]
async fn ctrl_c_kills_the_foreground_job_and_the_shell_survives() {
    let h = host();
    let vm = h.vm("shell-ctrl-c").await;
    let mut t = Terminal::open(&vm, ShellOptions::default()).await;
    vm.write_shell(&t.id, b"sleep 100\n").await.unwrap();
    eventually(10, "sleep running", || async {
        vm.all_processes().await.unwrap().iter().any(|p| p.command == "sleep")
    })
    .await;
    vm.write_shell(&t.id, b"\x03").await.unwrap();
    t.expect("^C").await;
    eventually(10, "sleep gone", || async { !vm.all_processes().await.unwrap().iter().any(|p| p.command == "sleep") })
        .await;
    vm.write_shell(&t.id, b"echo after-$((2+3))\n").await.unwrap();
    t.expect("after-5").await;
    vm.close_shell(&t.id).await.unwrap();
}

#[tokio::test]
async fn job_control_works_and_ctrl_d_ends_the_shell() {
    let h = host();
    let vm = h.vm("shell-jobs").await;
    let mut t = Terminal::open(&vm, ShellOptions::default()).await;
    vm.write_shell(&t.id, b"sleep 100 &\n").await.unwrap();
    vm.write_shell(&t.id, b"jobs\n").await.unwrap();
    t.expect("Running").await;
    t.expect("sleep 100 &").await;
    // A stopped job (Ctrl-Z) and `bg`/`fg` need job control.
    vm.write_shell(&t.id, b"sleep 200\n").await.unwrap();
    eventually(10, "sleep 200 running", || async {
        vm.all_processes().await.unwrap().iter().any(|p| p.args == ["200"])
    })
    .await;
    vm.write_shell(&t.id, b"\x1a").await.unwrap();
    t.expect("Stopped").await;
    vm.write_shell(&t.id, b"kill %1 %2; echo killed-jobs\n").await.unwrap();
    t.expect("\nkilled-jobs").await;
    vm.write_shell(&t.id, b"exit 0\n").await.ok();
    // Ctrl-D on an empty line in a fresh shell also ends it, with shellExit.
    let mut t2 = Terminal::open(&vm, ShellOptions::default()).await;
    vm.write_shell(&t2.id, b"echo ready\n").await.unwrap();
    t2.expect("\nready\n").await;
    // Ctrl-D means end of input only at an empty prompt: wait until the shell reads one.
    t2.expect("$ ").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    vm.write_shell(&t2.id, b"\x04").await.unwrap();
    assert_eq!(t2.expect_exit().await, 0);
    assert_eq!(vm.wait_shell(&t2.id).await.unwrap(), 0);
    // Writing to an ended shell is an error, not silence.
    let err = vm.write_shell(&t2.id, b"echo hi\n").await.unwrap_err();
    assert_eq!(err.to_string(), format!("Shell {} has exited", t2.id));
    assert!(vm.resize_shell(&t2.id, 10, 10).is_err());
}

#[tokio::test]
async fn exit_code_of_the_shell_is_reported() {
    let h = host();
    let vm = h.vm("shell-exit").await;
    let mut t = Terminal::open(&vm, ShellOptions::default()).await;
    vm.write_shell(&t.id, b"exit 7\n").await.unwrap();
    assert_eq!(t.expect_exit().await, 7);
}

#[tokio::test]
async fn close_leaves_no_process_of_the_shell() {
    let h = host();
    let vm = h.vm("shell-close").await;
    let mut t = Terminal::open(&vm, ShellOptions::default()).await;
    // Children of several kinds: a foreground job's sibling in the background, a job that
    // ignores SIGHUP, and a grandchild.
    vm.write_shell(&t.id, b"sleep 301 & nohup sleep 302 >/dev/null 2>&1 & sh -c 'sleep 303 & wait' & echo started\n")
        .await
        .unwrap();
    t.expect("\nstarted").await;
    eventually(10, "three sleeps", || async {
        vm.all_processes().await.unwrap().iter().filter(|p| p.command == "sleep").count() == 3
    })
    .await;
    vm.close_shell(&t.id).await.unwrap();
    eventually(10, "nothing of the shell left", || async { vm.all_processes().await.unwrap().is_empty() }).await;
    assert!(vm.open_shells().is_empty());
    // Closing again is harmless; unknown ids are reported.
    vm.close_shell(&t.id).await.unwrap();
    let err = vm.close_shell("shell-99").await.unwrap_err();
    assert_eq!(err.to_string(), "Shell not found: shell-99");
    assert_eq!(vm.write_shell("nope", b"x").await.unwrap_err().to_string(), "Shell not found: nope");
}

#[tokio::test]
async fn several_shells_run_at_once() {
    let h = host();
    let vm = h.vm("shell-many").await;
    let mut a = Terminal::open(&vm, ShellOptions::default()).await;
    let mut b = Terminal::open(&vm, ShellOptions { command: Some("sh".into()), ..Default::default() }).await;
    assert_ne!(a.id, b.id);
    a.expect("$ ").await;
    b.expect("$ ").await;
    vm.write_shell(&a.id, b"tty\n").await.unwrap();
    vm.write_shell(&b.id, b"tty\n").await.unwrap();
    a.expect("tty\n/dev/pts/").await;
    b.expect("tty\n/dev/pts/").await;
    let na = a.expect("\n").await;
    let nb = b.expect("\n").await;
    assert_ne!(na, nb, "both shells got terminal {na}");
    assert_eq!(vm.open_shells().len(), 2);
    vm.close_shell(&a.id).await.unwrap();
    vm.close_shell(&b.id).await.unwrap();
}

#[tokio::test]
async fn a_full_screen_program_draws_and_quits() {
    let h = host();
    let vm = h.vm("shell-fullscreen").await;
    sh(&vm, "seq 1 500 > /home/user/numbers.txt").await;
    let mut t = Terminal::open(&vm, ShellOptions::default()).await;
    vm.write_shell(&t.id, b"less /home/user/numbers.txt; echo less-exited-$?\n").await.unwrap();
    // less switches to the alternate screen and draws the first page.
    let drawn = t.expect_raw("\x1b[?1049h").await;
    assert!(drawn.contains("less"), "{drawn:?}");
    t.expect_raw("23").await;
    vm.write_shell(&t.id, b"G").await.unwrap();
    t.expect_raw("500").await;
    vm.write_shell(&t.id, b"q").await.unwrap();
    t.expect_raw("\x1b[?1049l").await;
    t.expect("less-exited-0").await;
    vm.close_shell(&t.id).await.unwrap();
}

#[tokio::test]
async fn open_shell_errors_are_clear() {
    let h = host();
    let vm = h.vm("shell-errors").await;
    let err =
        vm.open_shell(ShellOptions { command: Some("no-such-shell".into()), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.to_string(), "ENOENT: command not found: no-such-shell");
    let err = vm.open_shell(ShellOptions { cols: Some(0), ..Default::default() }).await.unwrap_err();
    assert!(matches!(err, VmError::InvalidArgument(_)));
    let err = vm.open_shell(ShellOptions { cwd: Some("/missing".into()), ..Default::default() }).await.unwrap_err();
    assert!(err.to_string().starts_with("ENOENT"), "{err}");
    // A custom program with arguments.
    let mut t = Terminal::open(
        &vm,
        ShellOptions {
            command: Some("sh".into()),
            args: Some(vec!["-c".into(), "echo custom; exit 4".into()]),
            ..Default::default()
        },
    )
    .await;
    t.expect("custom").await;
    assert_eq!(t.expect_exit().await, 4);
}
