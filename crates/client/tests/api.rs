//! Every `Client` and `VmHandle` method against a real `agentvm serve`, over HTTP (bare).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use agentvm_client::testing::TestServer;
use agentvm_client::{Client, Error, ExecOptions, ProcessTreeNode, ShellOptions, SpawnOptions, Value};
use common::{client, collect_until_exit, int, server, strings, wait_event};

#[tokio::test]
async fn health_list_vms_events_and_destroy() {
    let server = server();
    let client = client(&server);
    client.health().await.unwrap();
    assert_eq!(Client::new(format!("{}//", server.url())).url(), server.url());
    assert!(client.list_vms().await.unwrap().is_empty());

    // Keys with `/` and spaces survive the REST form; `,` separates components.
    let vm = client.vm("team/agent one");
    assert_eq!(vm.key(), "team/agent one");
    vm.exec("true", ExecOptions::default()).await.unwrap();
    client.vm("a,b").exec("true", ExecOptions::default()).await.unwrap();
    let mut vms = client.list_vms().await.unwrap();
    vms.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(vms.iter().map(|v| v.key.as_str()).collect::<Vec<_>>(), ["a,b", "team/agent one"]);
    assert!(vms.iter().all(|v| v.name == "vm" && !v.actor_id.is_empty() && v.create_ts > 1_600_000_000_000));
    let actor_id = vms[1].actor_id.clone();

    // The durable event log: vmBooted first, then what the VM did.
    let pid = vm.spawn("echo", &strings(&["logged"]), SpawnOptions::default()).await.unwrap();
    assert_eq!(vm.wait_process(pid).await.unwrap(), 0);
    // The exit is logged just after `waitProcess` learns of it: wait for it in the log.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let events = loop {
        let events = vm.get_vm_events(None, None).await.unwrap();
        if events.iter().any(|e| e.name == "processExit") || std::time::Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(events[0].name, "vmBooted");
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq), "{events:?}");
    assert!(events.iter().all(|e| e.created_at > 1_600_000_000_000));
    let output = events.iter().find(|e| e.name == "processOutput").expect("processOutput logged");
    assert_eq!(output.data.get("data"), Some(&Value::Bytes(b"logged\n".to_vec().into())));
    assert_eq!(int(&output.data, "pid"), Some(pid.into()));
    let exit = events.iter().find(|e| e.name == "processExit").expect("processExit logged");
    assert_eq!(int(&exit.data, "exitCode"), Some(0));
    let later = vm.get_vm_events(Some(events[0].seq), Some(1)).await.unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0], events[1]);
    let err = vm.get_vm_events(None, Some(0)).await.unwrap_err();
    assert_eq!(err.api_code().as_deref(), Some("action.invalid_arguments"), "{err}");

    // destroy: the VM and its data go; the same key later gets a new actor.
    vm.write_file("/home/user/f", b"x").await.unwrap();
    vm.destroy().await.unwrap();
    assert!(client.list_vms().await.unwrap().iter().all(|v| v.key != "team/agent one"));
    assert!(!vm.exists("/home/user/f").await.unwrap());
    let again = client.list_vms().await.unwrap();
    let recreated = again.iter().find(|v| v.key == "team/agent one").expect("recreated");
    assert_ne!(recreated.actor_id, actor_id);
}

#[tokio::test]
async fn exec_with_options() {
    let server = server();
    let vm = client(&server).vm("exec");
    let r = vm.exec("echo hello && whoami", ExecOptions::default()).await.unwrap();
    assert_eq!((r.exit_code, r.stdout.as_str(), r.stderr.as_str(), r.timed_out), (0, "hello\nuser\n", "", false));

    let options = ExecOptions {
        env: BTreeMap::from([("GREETING".to_string(), "hi there".to_string())]),
        cwd: Some("/tmp".into()),
        stdin: Some(b"from stdin".to_vec()),
        timeout: Some(Duration::from_secs(30)),
    };
    let r = vm.exec("echo \"$GREETING\"; pwd; cat", options).await.unwrap();
    assert_eq!(r.stdout, "hi there\n/tmp\nfrom stdin");

    let r = vm.exec("echo oops >&2; exit 7", ExecOptions::default()).await.unwrap();
    assert_eq!((r.exit_code, r.stdout.as_str(), r.stderr.as_str()), (7, "", "oops\n"));

    let options = ExecOptions { timeout: Some(Duration::from_millis(300)), ..Default::default() };
    let r = vm.exec("sleep 30", options).await.unwrap();
    assert_eq!((r.exit_code, r.timed_out), (137, true));
}

fn find(tree: &[ProcessTreeNode], pid: i32) -> Option<&ProcessTreeNode> {
    tree.iter().find_map(|node| if node.info.pid == pid { Some(node) } else { find(&node.children, pid) })
}

#[tokio::test]
async fn process_api() {
    let server = server();
    let vm = client(&server).vm("processes");
    let mut conn = vm.connect().await.unwrap();
    conn.subscribe("processOutput").await.unwrap();
    conn.subscribe("processExit").await.unwrap();

    let options = SpawnOptions { env: BTreeMap::from([("X".into(), "1".into())]), cwd: Some("/tmp".into()) };
    let pid = vm.spawn("sh", &strings(&["-c", "echo $X; pwd; cat; echo done >&2"]), options).await.unwrap();
    vm.write_process_stdin(pid, b"abc\xff").await.unwrap();
    vm.close_process_stdin(pid).await.unwrap();
    let (stdout, stderr, code) = collect_until_exit(&mut conn, pid, 30).await;
    assert_eq!((stdout.as_slice(), stderr.as_slice(), code), (&b"1\n/tmp\nabc\xff"[..], &b"done\n"[..], 0));
    assert_eq!(vm.wait_process(pid).await.unwrap(), 0);

    let info = vm.get_process(pid).await.unwrap();
    assert_eq!((info.pid, info.command.as_str(), info.running, info.exit_code), (pid, "sh", false, Some(0)));
    assert_eq!(info.args, strings(&["-c", "echo $X; pwd; cat; echo done >&2"]));
    assert!(vm.list_processes().await.unwrap().contains(&info));

    let sleeper = vm.spawn("sleep", &strings(&["100"]), SpawnOptions::default()).await.unwrap();
    assert!(vm.get_process(sleeper).await.unwrap().running);
    let all = vm.all_processes().await.unwrap();
    let entry = all.iter().find(|p| p.pid == sleeper).expect("sleeper in allProcesses");
    assert_eq!((entry.driver.as_str(), entry.status.as_str(), entry.exit_code), ("native", "running", None));
    assert!(entry.start_time > 1_600_000_000_000 && entry.ppid > 0 && entry.pgid > 0 && entry.sid > 0, "{entry:?}");
    let tree = vm.process_tree().await.unwrap();
    assert_eq!(find(&tree, sleeper).expect("sleeper in processTree").info, *entry);

    vm.stop_process(sleeper).await.unwrap();
    assert_eq!(vm.wait_process(sleeper).await.unwrap(), 143);
    let killed = vm.spawn("sleep", &strings(&["100"]), SpawnOptions::default()).await.unwrap();
    vm.kill_process(killed).await.unwrap();
    assert_eq!(vm.wait_process(killed).await.unwrap(), 137);

    // Unknown pids: the server's error, whole.
    let err = vm.get_process(999_999).await.unwrap_err();
    match &err {
        Error::Api { group, code, message, metadata } => {
            assert_eq!((group.as_str(), code.as_str()), ("vm", "process_not_found"));
            assert_eq!(message, "Process not found: 999999");
            assert_eq!(*metadata, None);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.to_string(), "Process not found: 999999");
    assert_eq!(err.api_code().as_deref(), Some("vm.process_not_found"));
    for err in [
        vm.wait_process(999_999).await.unwrap_err(),
        vm.stop_process(999_999).await.unwrap_err(),
        vm.kill_process(999_999).await.unwrap_err(),
        vm.write_process_stdin(999_999, b"x").await.unwrap_err(),
        vm.close_process_stdin(999_999).await.unwrap_err(),
    ] {
        assert_eq!(err.to_string(), "Process not found: 999999");
    }
    let err = vm.spawn("/no/such/program", &[], SpawnOptions::default()).await.unwrap_err();
    assert!(matches!(err, Error::Api { .. }), "{err:?}");
}

#[tokio::test]
async fn shells() {
    let server = server();
    let vm = client(&server).vm("shells");
    let mut conn = vm.connect().await.unwrap();
    conn.subscribe("shellData").await.unwrap();
    conn.subscribe("shellExit").await.unwrap();

    let options = ShellOptions {
        command: Some("sh".into()),
        args: Some(vec![]),
        env: BTreeMap::from([("GREETING".into(), "hi".into())]),
        cwd: Some("/tmp".into()),
        cols: Some(100),
        rows: Some(30),
    };
    let shell = vm.open_shell(options).await.unwrap();
    assert!(shell.starts_with("shell-"), "{shell}");
    let mut screen = String::new();
    let read_until = async |conn: &mut agentvm_client::Connection, screen: &mut String, needle: &str| {
        while !screen.contains(needle) {
            let event = wait_event(conn, "shellData", 30).await;
            assert_eq!(event.payload.get("shellId").and_then(Value::as_str), Some(shell.as_str()));
            let Some(Value::Bytes(data)) = event.payload.get("data") else { panic!("{event:?}") };
            screen.push_str(&String::from_utf8_lossy(data));
        }
    };
    vm.write_shell(&shell, b"echo \"$GREETING-$(pwd)\"; stty size\n").await.unwrap();
    read_until(&mut conn, &mut screen, "hi-/tmp").await;
    read_until(&mut conn, &mut screen, "30 100").await;
    vm.resize_shell(&shell, 120, 40).await.unwrap();
    vm.write_shell(&shell, b"stty size\n").await.unwrap();
    read_until(&mut conn, &mut screen, "40 120").await;
    vm.write_shell(&shell, b"exit 5\n").await.unwrap();
    let exit = wait_event(&mut conn, "shellExit", 30).await;
    assert_eq!(exit.payload.get("shellId").and_then(Value::as_str), Some(shell.as_str()));
    assert_eq!(int(&exit.payload, "exitCode"), Some(5));
    assert_eq!(vm.wait_shell(&shell).await.unwrap(), 5);
    assert_eq!(vm.write_shell(&shell, b"x").await.unwrap_err().to_string(), format!("Shell {shell} has exited"));

    // close_shell hangs the terminal up: SIGHUP.
    let second = vm.open_shell(ShellOptions::default()).await.unwrap();
    assert_ne!(second, shell);
    // Close it once it runs (on a loaded machine bash can still be starting after the grace).
    vm.write_shell(&second, b"echo second-$((1+1))\n").await.unwrap();
    let mut second_screen = String::new();
    while !second_screen.contains("second-2") {
        let event = wait_event(&mut conn, "shellData", 30).await;
        if event.payload.get("shellId").and_then(Value::as_str) == Some(second.as_str()) {
            let Some(Value::Bytes(data)) = event.payload.get("data") else { panic!("{event:?}") };
            second_screen.push_str(&String::from_utf8_lossy(data));
        }
    }
    vm.close_shell(&second).await.unwrap();
    assert_eq!(vm.wait_shell(&second).await.unwrap(), 129);
    let err = vm.write_shell("shell-999", b"x").await.unwrap_err();
    assert_eq!(
        (err.to_string(), err.api_code()),
        ("Shell not found: shell-999".into(), Some("vm.shell_not_found".into()))
    );
}

#[tokio::test]
async fn files() {
    let server = server();
    let vm = client(&server).vm("files");
    let content: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    vm.mkdir("/home/user/d/e", true).await.unwrap();
    vm.mkdir("/home/user/d/e", true).await.unwrap(); // recursive: an existing directory is fine
    vm.write_file("/home/user/d/e/bin", &content).await.unwrap();
    assert_eq!(vm.read_file("/home/user/d/e/bin").await.unwrap(), content);
    vm.write_file("/home/user/d/top.txt", b"x").await.unwrap();
    vm.write_file("/home/user/empty", b"").await.unwrap();
    assert_eq!(vm.read_file("/home/user/empty").await.unwrap(), b"");

    assert!(vm.exists("/home/user/d/e/bin").await.unwrap());
    assert!(!vm.exists("/home/user/nope").await.unwrap());
    let mut names = vm.readdir("/home/user/d").await.unwrap();
    names.sort();
    assert_eq!(names, ["e", "top.txt"]);

    let mut all = vm.readdir_recursive("/home/user/d", None).await.unwrap();
    all.sort_by(|a, b| a.path.cmp(&b.path));
    let summary: Vec<_> = all.iter().map(|e| (e.path.as_str(), e.kind.as_str())).collect();
    assert_eq!(
        summary,
        [("/home/user/d/e", "directory"), ("/home/user/d/e/bin", "file"), ("/home/user/d/top.txt", "file")]
    );
    assert_eq!(all[1].size, 100_000);
    let shallow = vm.readdir_recursive("/home/user/d", Some(0)).await.unwrap();
    assert_eq!(shallow.len(), 2, "{shallow:?}");

    let stat = vm.stat("/home/user/d/e/bin").await.unwrap();
    assert_eq!((stat.size, stat.is_directory, stat.is_symbolic_link), (100_000, false, false));
    assert_eq!(stat.mode & 0o170000, 0o100000);
    assert_eq!((stat.uid, stat.gid), (1000, 1000));
    assert!(stat.mtime_ms > 1.6e12 && stat.nlink == 1 && stat.ino > 0, "{stat:?}");
    assert!(vm.stat("/home/user/d").await.unwrap().is_directory);
    vm.exec("ln -s d/top.txt /home/user/link", ExecOptions::default()).await.unwrap();
    assert!(vm.stat("/home/user/link").await.unwrap().is_symbolic_link);

    vm.move_path("/home/user/d/e/bin", "/home/user/moved").await.unwrap();
    assert!(!vm.exists("/home/user/d/e/bin").await.unwrap());
    assert_eq!(vm.read_file("/home/user/moved").await.unwrap(), content);

    let err = vm.delete_path("/home/user/d", false).await.unwrap_err();
    match &err {
        Error::Api { code, message, metadata, .. } => {
            assert_eq!(code, "fs_error");
            assert!(message.starts_with("ENOTEMPTY"), "{message}");
            assert_eq!(metadata.as_ref().and_then(|m| m.get("code")).and_then(Value::as_str), Some("ENOTEMPTY"));
        }
        other => panic!("{other:?}"),
    }
    vm.delete_path("/home/user/d", true).await.unwrap();
    vm.delete_path("/home/user/moved", false).await.unwrap();
    assert!(!vm.exists("/home/user/d").await.unwrap());

    let err = vm.read_file("/home/user/missing").await.unwrap_err();
    assert_eq!(err.to_string(), "ENOENT: no such file or directory, open '/home/user/missing'");
    let err = vm.mkdir("/home/user/x/y", false).await.unwrap_err();
    assert!(err.to_string().starts_with("ENOENT"), "{err}");
}

#[tokio::test]
async fn raw_actions_and_server_errors() {
    let server = server();
    let vm = client(&server).vm("raw");
    let out = vm.action("exec", vec![Value::from("echo hi")]).await.unwrap();
    assert_eq!(out.get("stdout").and_then(Value::as_str), Some("hi\n"));
    assert_eq!(int(&out, "exitCode"), Some(0));
    assert!(vm.action("listProcesses", vec![]).await.unwrap() == Value::Array(vec![]));

    let err = vm.action("nosuch", vec![]).await.unwrap_err();
    assert_eq!(err.api_code().as_deref(), Some("actor.action_not_found"));
    assert_eq!(err.to_string(), "Action `nosuch` was not found.");
    let err = vm.action("exec", vec![Value::from(1)]).await.unwrap_err();
    assert_eq!(err.api_code().as_deref(), Some("action.invalid_arguments"));
    assert_eq!(err.to_string(), "exec: argument 1 (command) must be a string, got number");
    // A name that needs escaping in the path reaches the server intact.
    let err = vm.action("a/b c", vec![]).await.unwrap_err();
    assert_eq!(err.to_string(), "Action `a/b c` was not found.");
}

#[tokio::test]
async fn no_server_and_bad_urls() {
    // A port nothing listens on: bound once, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let client = Client::new(&url);
    let vm = client.vm("x");
    let errors = [
        client.health().await.unwrap_err(),
        client.list_vms().await.unwrap_err(),
        vm.exec("true", ExecOptions::default()).await.unwrap_err(),
        vm.connect().await.unwrap_err(),
    ];
    for err in errors {
        assert!(matches!(&err, Error::NoServer { url: u, .. } if *u == url), "{err:?}");
        assert_eq!(err.to_string(), format!("no server at {url} — start one with `agentvm serve`"));
        assert!(std::error::Error::source(&err).is_some());
    }
    let err = Client::new("https://127.0.0.1:1").health().await.unwrap_err();
    assert!(matches!(&err, Error::Http(m) if m.contains("plain http://")), "{err:?}");
    // A wrong base path: the server's own 404 comes back as an API error.
    let server = server();
    let err = Client::new(format!("{}/nope", server.url())).vm("x").exec("true", ExecOptions::default()).await;
    assert!(matches!(err, Err(Error::Api { ref code, .. }) if code == "not_found"), "{err:?}");
}

#[tokio::test]
async fn token() {
    let server = TestServer::start_with(&["--token", "s3cret"]);
    let anonymous = Client::new(server.url());
    anonymous.health().await.unwrap(); // health needs no token
    for err in [
        anonymous.list_vms().await.unwrap_err(),
        anonymous.vm("t").exec("true", ExecOptions::default()).await.unwrap_err(),
        anonymous.vm("t").connect().await.unwrap_err(),
        anonymous.clone().with_token("wrong").vm("t").connect().await.unwrap_err(),
    ] {
        assert_eq!(err.api_code().as_deref(), Some("auth.unauthorized"), "{err:?}");
    }

    let client = Client::new(server.url()).with_token("s3cret");
    let vm = client.vm("t");
    assert_eq!(vm.exec("echo ok", ExecOptions::default()).await.unwrap().stdout, "ok\n");
    assert_eq!(client.list_vms().await.unwrap().len(), 1);
    let mut conn = vm.connect().await.unwrap();
    conn.subscribe("processExit").await.unwrap();
    let pid = vm.spawn("true", &[], SpawnOptions::default()).await.unwrap();
    let exit = wait_event(&mut conn, "processExit", 30).await;
    assert_eq!(int(&exit.payload, "pid"), Some(pid.into()));
}

#[tokio::test]
async fn cron_jobs_are_scheduled_listed_run_and_cancelled() {
    // Cron on a manual clock (2030-01-01T00:00:30Z), moved with POST /debug/clock.
    let server = TestServer::start_with(&["--manual-clock", "1893456030000"]);
    let client = client(&server);
    let vm = client.vm("cron-client");
    let job =
        serde_json::json!({"id": "tick", "schedule": "* * * * *", "action": {"type": "exec", "command": "echo tick"}});
    assert_eq!(vm.schedule_cron(job).await.unwrap(), "tick");
    let jobs = vm.list_cron_jobs().await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!((jobs[0].id.as_str(), jobs[0].next_run, jobs[0].run_count), ("tick", Some(1_893_456_060_000), 0));
    assert_eq!((jobs[0].overlap.as_str(), jobs[0].timezone.as_str()), ("allow", "UTC"));
    let moved = reqwest::Client::new()
        .post(format!("{}/debug/clock", server.url()))
        .json(&serde_json::json!({"now": 1_893_456_060_000u64}))
        .send()
        .await
        .unwrap();
    assert!(moved.status().is_success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let run = loop {
        let runs = vm.list_cron_runs(Some("tick"), Some(10)).await.unwrap();
        if let Some(run) = runs.into_iter().find(|r| r.status != "running") {
            break run;
        }
        assert!(std::time::Instant::now() < deadline, "the job did not run");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!((run.status.as_str(), run.exit_code, run.stdout.as_deref()), ("complete", Some(0), Some("tick\n")));
    assert_eq!(run.scheduled_time, 1_893_456_060_000);
    let refused = vm
        .schedule_cron(serde_json::json!({"schedule": "61 * * * *", "action": {"type": "exec", "command": "x"}}))
        .await;
    assert!(
        matches!(&refused, Err(Error::Api { group, code, .. }) if group == "cron" && code == "invalid_schedule"),
        "{refused:?}"
    );
    vm.cancel_cron_job("tick").await.unwrap();
    vm.cancel_cron_job("tick").await.unwrap();
    assert!(vm.list_cron_jobs().await.unwrap().is_empty());
}
