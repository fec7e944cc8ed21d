//! `spawn`, stdin, wait, list/get, stop/kill (acceptance 2 of the VM core issue).
mod common;

use agentvm_vm::{SpawnOptions, VmError, VmEvent};
use common::*;

#[tokio::test]
async fn spawned_cat_echoes_stdin_then_exits_after_its_output() {
    let h = host();
    let vm = h.vm("spawn-cat").await;
    let mut events = vm.subscribe(None);
    let pid = vm.spawn("cat", &[], SpawnOptions::default()).await.unwrap();
    vm.write_process_stdin(pid, b"hello from stdin\n").await.unwrap();
    vm.close_process_stdin(pid).await.unwrap();
    let (out, err, code) = collect_until_exit(&mut events, pid, 10).await;
    assert_eq!(String::from_utf8(out).unwrap(), "hello from stdin\n");
    assert!(err.is_empty());
    assert_eq!(code, 0);
    assert_eq!(vm.wait_process(pid).await.unwrap(), 0);

    let info = vm.get_process(pid).unwrap();
    assert_eq!((info.command.as_str(), info.running, info.exit_code), ("cat", false, Some(0)));
    // The output stays replayable from the process's log.
    let replay = vm.process_output(pid, None).unwrap();
    assert_eq!(replay.iter().flat_map(|c| c.data.to_vec()).collect::<Vec<u8>>(), b"hello from stdin\n");
}

#[tokio::test]
async fn stop_gives_143_and_kill_gives_137() {
    let h = host();
    let vm = h.vm("spawn-signals").await;
    let args = ["1000".to_string()];
    let stopped = vm.spawn("sleep", &args, SpawnOptions::default()).await.unwrap();
    let killed = vm.spawn("sleep", &args, SpawnOptions::default()).await.unwrap();
    let listed: Vec<(i32, bool)> = vm.list_processes().iter().map(|p| (p.pid, p.running)).collect();
    assert_eq!(listed, [(stopped, true), (killed, true)]);

    vm.stop_process(stopped).unwrap();
    vm.kill_process(killed).unwrap();
    assert_eq!(vm.wait_process(stopped).await.unwrap(), 143);
    assert_eq!(vm.wait_process(killed).await.unwrap(), 137);
    let info = vm.get_process(killed).unwrap();
    assert_eq!((info.running, info.exit_code), (false, Some(137)));
    // Signalling an exited process is a no-op, not an error.
    vm.stop_process(stopped).unwrap();
    vm.kill_process(killed).unwrap();
    // Exited processes stay listed.
    assert_eq!(vm.list_processes().len(), 2);
}

#[tokio::test]
async fn unknown_pids_are_reported() {
    let h = host();
    let vm = h.vm("spawn-unknown").await;
    let expect_not_found = |r: Result<(), VmError>| match r {
        Err(e @ VmError::ProcessNotFound(4242)) => assert_eq!(e.to_string(), "Process not found: 4242"),
        other => panic!("{other:?}"),
    };
    expect_not_found(vm.stop_process(4242));
    expect_not_found(vm.kill_process(4242));
    expect_not_found(vm.get_process(4242).map(|_| ()));
    expect_not_found(vm.wait_process(4242).await.map(|_| ()));
    expect_not_found(vm.write_process_stdin(4242, b"x").await);
    expect_not_found(vm.close_process_stdin(4242).await);
    assert!(vm.list_processes().is_empty());
}

#[tokio::test]
async fn spawn_errors_are_clear_and_leave_nothing_behind() {
    let h = host();
    let vm = h.vm("spawn-errors").await;
    let err = vm.spawn("no-such-program", &[], SpawnOptions::default()).await.unwrap_err();
    assert_eq!(err.to_string(), "ENOENT: command not found: no-such-program");
    let err = vm.spawn("/etc/passwd", &[], SpawnOptions::default()).await.unwrap_err();
    assert!(err.to_string().starts_with("EACCES:"), "{err}");
    let err = vm.spawn("", &[], SpawnOptions::default()).await.unwrap_err();
    assert!(matches!(err, VmError::InvalidArgument(_)));
    assert!(vm.list_processes().is_empty());
}

#[tokio::test]
async fn stdin_writes_after_close_or_exit() {
    let h = host();
    let vm = h.vm("spawn-stdin-rules").await;
    let pid = vm.spawn("cat", &[], SpawnOptions::default()).await.unwrap();
    vm.close_process_stdin(pid).await.unwrap();
    vm.close_process_stdin(pid).await.unwrap();
    assert_eq!(vm.wait_process(pid).await.unwrap(), 0);
    // After exit, writes are dropped (as in the reference product).
    vm.write_process_stdin(pid, b"late").await.unwrap();

    let pid = vm.spawn("sleep", &["5".into()], SpawnOptions::default()).await.unwrap();
    vm.close_process_stdin(pid).await.unwrap();
    let err = vm.write_process_stdin(pid, b"x").await.unwrap_err();
    assert_eq!(err.to_string(), format!("stdin of process {pid} is closed"));
    vm.kill_process(pid).unwrap();
}

#[tokio::test]
async fn a_long_wait_does_not_block_other_calls() {
    let h = host();
    let vm = h.vm("spawn-concurrency").await;
    let pid = vm.spawn("cat", &[], SpawnOptions::default()).await.unwrap();
    let waiter = tokio::spawn({
        let vm = vm.clone();
        async move { vm.wait_process(pid).await }
    });
    let long_exec = tokio::spawn({
        let vm = vm.clone();
        async move { vm.exec("sleep 2; echo slow", Default::default()).await }
    });
    // While both wait, the same VM answers other calls at once.
    let quick = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        assert_eq!(sh(&vm, "echo quick").await, "quick\n");
        vm.write_process_stdin(pid, b"x\n").await.unwrap();
        vm.all_processes().await.unwrap()
    })
    .await
    .expect("calls were blocked by a pending wait");
    assert!(quick.iter().any(|p| p.pid == pid));
    vm.close_process_stdin(pid).await.unwrap();
    assert_eq!(waiter.await.unwrap().unwrap(), 0);
    assert_eq!(long_exec.await.unwrap().unwrap().stdout, "slow\n");
}

#[tokio::test]
async fn spawn_uses_env_and_cwd_and_reports_stderr() {
    let h = host();
    let vm = h.vm("spawn-env").await;
    let mut events = vm.subscribe(None);
    let mut options = SpawnOptions { cwd: Some("/tmp".into()), ..Default::default() };
    options.env.insert("WHO".into(), "world".into());
    let args: Vec<String> = ["-c", "echo hello $WHO; pwd; echo to-err >&2; exit 5"].map(String::from).to_vec();
    let pid = vm.spawn("sh", &args, options).await.unwrap();
    let (out, err, code) = collect_until_exit(&mut events, pid, 10).await;
    assert_eq!(String::from_utf8(out).unwrap(), "hello world\n/tmp\n");
    assert_eq!(String::from_utf8(err).unwrap(), "to-err\n");
    assert_eq!(code, 5);
}

#[tokio::test]
async fn pids_are_the_vms_own() {
    let h = host();
    let vm = h.vm("spawn-pids").await;
    let pid = vm.spawn("sleep", &["100".into()], SpawnOptions::default()).await.unwrap();
    let seen = sh(&vm, "pgrep -x sleep").await;
    assert_eq!(seen.trim(), pid.to_string());
    assert!(pid < 100, "VM pids start low, got {pid}");
    vm.kill_process(pid).unwrap();
    let mut events = vm.subscribe(Some(0));
    loop {
        if let VmEvent::ProcessExit { pid: p, exit_code } = next_event(&mut events, 10).await {
            if p == pid {
                assert_eq!(exit_code, 137);
                break;
            }
        }
    }
}
