//! `exec`: run a shell command to completion (acceptance 1 of the VM core issue).
mod common;

use std::time::{Duration, Instant};

use agentvm_vm::{ExecOptions, VmError};
use bytes::Bytes;
use common::*;

#[tokio::test]
async fn exec_returns_output_and_exit_code() {
    let h = host();
    let vm = h.vm("exec-basics").await;
    let r = run(&vm, "echo hello && ls /home/user").await;
    assert_eq!((r.exit_code, r.stdout.as_str(), r.stderr.as_str(), r.timed_out), (0, "hello\n", "", false));

    assert_eq!(run(&vm, "exit 3").await.exit_code, 3);
    let r = run(&vm, "echo oops >&2; exit 1").await;
    assert_eq!((r.exit_code, r.stdout.as_str(), r.stderr.as_str()), (1, "", "oops\n"));
    assert_eq!(run(&vm, "kill -TERM $$").await.exit_code, 143, "signal deaths are 128+signal");
}

#[tokio::test]
async fn exec_feeds_stdin_then_closes_it() {
    let h = host();
    let vm = h.vm("exec-stdin").await;
    let r =
        vm.exec("cat", ExecOptions { stdin: Some(Bytes::from_static(b"abc")), ..Default::default() }).await.unwrap();
    assert_eq!((r.exit_code, r.stdout.as_str()), (0, "abc"));
    // Without stdin, the command reads end of file at once instead of hanging.
    assert_eq!(run(&vm, "cat; echo done").await.stdout, "done\n");
    // A large stdin the command never reads does not hang exec.
    let big = Bytes::from(vec![b'x'; 4 << 20]);
    let r = vm.exec("true", ExecOptions { stdin: Some(big), ..Default::default() }).await.unwrap();
    assert_eq!(r.exit_code, 0);
}

#[tokio::test]
async fn exec_past_its_timeout_is_killed_and_says_so() {
    let h = host();
    let vm = h.vm("exec-timeout").await;
    let started = Instant::now();
    let r = vm
        .exec(
            "echo started; sleep 30; echo never",
            ExecOptions { timeout: Some(Duration::from_millis(300)), ..Default::default() },
        )
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(r.timed_out);
    assert_eq!(r.exit_code, 137);
    assert_eq!(r.stdout, "started\n");
    // The whole group died: nothing of it is left in the VM.
    let left = sh(&vm, "ps -eo comm= | grep -c '^sleep$' || true").await;
    assert_eq!(left.trim(), "0");
    // A command that finishes in time is not marked.
    let r =
        vm.exec("true", ExecOptions { timeout: Some(Duration::from_secs(30)), ..Default::default() }).await.unwrap();
    assert!(!r.timed_out);
}

#[tokio::test]
async fn exec_uses_env_cwd_and_the_vm_defaults() {
    let h = host();
    let vm = h.vm("exec-env").await;
    let defaults = sh(&vm, "echo $HOME $USER $LANG $SHELL; pwd; echo $PATH").await;
    let lines: Vec<&str> = defaults.lines().collect();
    assert!(lines[0].starts_with("/home/user user C.UTF-8 /bin/"), "{defaults}");
    assert_eq!(lines[1], "/home/user");
    assert!(lines[2].contains("/usr/bin"));
    assert_eq!(sh(&vm, "hostname").await.trim(), "exec-env");
    assert_eq!(sh(&vm, "echo $HOSTNAME").await.trim(), "exec-env");

    let mut options = ExecOptions { cwd: Some("/tmp".into()), ..Default::default() };
    options.env.insert("GREETING".into(), "hi there".into());
    options.env.insert("HOME".into(), "/tmp".into());
    let r = vm.exec("pwd; echo $GREETING; echo $HOME", options).await.unwrap();
    assert_eq!(r.stdout, "/tmp\nhi there\n/tmp\n");
}

#[tokio::test]
async fn bad_exec_input_gets_clear_errors() {
    let h = host();
    let vm = h.vm("exec-errors").await;
    let err = vm.exec("pwd", ExecOptions { cwd: Some("/nonexistent".into()), ..Default::default() }).await.unwrap_err();
    assert!(matches!(&err, VmError::SpawnFailed(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with("ENOENT:") && text.contains("/nonexistent"), "{text}");
    let err = vm.exec("pwd", ExecOptions { cwd: Some("relative".into()), ..Default::default() }).await.unwrap_err();
    assert!(matches!(err, VmError::InvalidArgument(_)), "{err}");
    let mut options = ExecOptions::default();
    options.env.insert("A=B".into(), "x".into());
    assert!(matches!(vm.exec("true", options).await.unwrap_err(), VmError::InvalidArgument(_)));
    let err = vm.exec("echo a\0b", ExecOptions::default()).await.unwrap_err();
    assert!(err.to_string().starts_with("EINVAL"), "{err}");
    // The VM keeps serving after bad input.
    assert_eq!(sh(&vm, "echo still here").await, "still here\n");
    // A missing program inside the shell is the shell's ordinary 127.
    assert_eq!(run(&vm, "no-such-program").await.exit_code, 127);
}

#[tokio::test]
async fn real_programs_run_inside() {
    let h = host();
    let vm = h.vm("exec-programs").await;
    assert_eq!(sh(&vm, "python3 -c 'print(6*7)'").await, "42\n");
    assert_eq!(sh(&vm, "node -e 'console.log(6*7)'").await, "42\n");
    let out = sh(&vm, "cd /home/user && git init -q repo && cd repo && git config user.email a@b && git config user.name a && echo x > f && git add f && git commit -qm first && git log --format=%s").await;
    assert_eq!(out, "first\n");
    assert!(sh(&vm, "bash -c 'echo $BASH_VERSION'").await.starts_with('5'));
}
