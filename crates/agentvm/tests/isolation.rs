//! Isolation: a VM reaches nothing of the host or of other VMs beyond what its options allow
//! (acceptance 4 of the VM core issue). Every hole found becomes a test here.
mod common;

use std::time::Duration;

use agentvm_sandbox::cgroup::CgroupLimits;
use agentvm_vm::{ExecOptions, SpawnOptions, VmOptions};
use common::*;

#[tokio::test]
async fn ps_shows_only_the_vms_processes() {
    let h = host();
    let vm = h.vm("iso-ps").await;
    let pid = vm.spawn("sleep", &["77".into()], SpawnOptions::default()).await.unwrap();
    let out = sh(&vm, "ps ax -o pid=,args=").await;
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    // init, the sleep, the shell running ps, and ps itself.
    assert!(lines.len() <= 4, "{out}");
    assert!(lines[0].starts_with("1 agentvm vm-init"), "{out}");
    assert!(lines.iter().any(|l| *l == format!("{pid} sleep 77")), "{out}");
    let me = std::process::id().to_string();
    assert!(!out.contains("cargo") && !lines.iter().any(|l| l.split_whitespace().next() == Some(me.as_str())), "{out}");
}

#[tokio::test]
async fn runs_as_uid_1000_with_loopback_only() {
    let h = host();
    let vm = h.vm("iso-identity").await;
    assert_eq!(sh(&vm, "id").await, "uid=1000(user) gid=1000(user) groups=1000(user)\n");
    assert_eq!(sh(&vm, "whoami").await, "user\n");
    let interfaces = sh(&vm, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '").await;
    assert_eq!(interfaces, "lo\n");
    // Loopback works inside the VM.
    let out = sh(
        &vm,
        "python3 -c \"
import socket, threading
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)
port = s.getsockname()[1]
threading.Thread(target=lambda: s.accept()[0].sendall(b'pong')).start()
c = socket.create_connection(('127.0.0.1', port)); print(c.recv(4).decode())
\"",
    )
    .await;
    assert_eq!(out, "pong\n");
}

#[tokio::test]
async fn the_hosts_loopback_services_are_unreachable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let h = host();
    let vm = h.vm("iso-net").await;
    let r =
        run(&vm, &format!("python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)\""))
            .await;
    assert_ne!(r.exit_code, 0, "the VM reached a host service: {r:?}");
    assert!(r.stderr.contains("ConnectionRefused"), "{r:?}");
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "the host listener got a connection");
}

#[tokio::test]
async fn host_files_and_the_data_dir_are_unreachable() {
    let h = host();
    let marker = h.dir.path().join("host-secret-marker");
    std::fs::write(&marker, "secret").unwrap();
    let vm = h.vm("iso-files").await;
    // Nothing of the test's temp dir (which holds the data dir) exists in the VM.
    let found =
        sh(&vm, "find / -xdev \\( -name 'host-secret-marker' -o -name 'agentvm-test-*' \\) 2>/dev/null; true").await;
    assert_eq!(found, "");
    assert_ne!(run(&vm, &format!("cat {}", marker.display())).await.exit_code, 0);
    // The host's /root is not the VM's /root (which the VM user cannot even list).
    let host_root: Vec<String> =
        std::fs::read_dir("/root").unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(!host_root.is_empty());
    let r = run(&vm, "ls -A /root").await;
    assert_ne!(r.exit_code, 0, "{r:?}");
    assert!(r.stdout.is_empty());
    // No secrets from the host's /etc.
    for path in ["/etc/shadow", "/etc/gshadow", "/etc/ssh", "/etc/ssl/private", "/etc/sudoers"] {
        assert_ne!(run(&vm, &format!("test -e {path}")).await.exit_code, 0, "{path} exists in the VM");
    }
    // init's root and descriptors are out of the user's reach.
    assert_ne!(run(&vm, "ls /proc/1/root/").await.exit_code, 0);
    assert_ne!(run(&vm, "ls -l /proc/1/fd/").await.exit_code, 0);
    assert_ne!(run(&vm, "dmesg").await.exit_code, 0);
}

#[tokio::test]
async fn system_directories_are_read_only() {
    let h = host();
    let vm = h.vm("iso-readonly").await;
    for path in ["/usr/iso-test", "/usr/bin/iso-test", "/bin/iso-test", "/etc/iso-test", "/iso-test"] {
        let r = run(&vm, &format!("touch {path}")).await;
        assert_ne!(r.exit_code, 0, "wrote {path}");
    }
    assert!(!std::path::Path::new("/usr/iso-test").exists());
    let r = run(&vm, "grep ' /usr ' /proc/self/mounts").await;
    assert!(r.stdout.contains(" ro,"), "{}", r.stdout);
    // Writable places work.
    sh(&vm, "touch /home/user/ok /tmp/ok /var/tmp/ok").await;
}

#[tokio::test]
async fn vms_cannot_see_or_signal_each_other() {
    let h = host();
    let a = h.vm("iso-a").await;
    let b = h.vm("iso-b").await;
    sh(&a, "echo a-private > /home/user/a-secret").await;
    let a_sleep = a.spawn("sleep", &["1234".into()], SpawnOptions::default()).await.unwrap();

    assert_eq!(sh(&b, "find / -xdev -name a-secret 2>/dev/null; true").await, "");
    assert_ne!(run(&b, "cat /home/user/a-secret").await.exit_code, 0);
    assert!(!sh(&b, "ps ax -o args=").await.contains("sleep 1234"));
    // B kills every process it can: A's are not among them.
    let _ = run(&b, "kill -9 -1").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(a.get_process(a_sleep).unwrap().running, "a process of VM A died from VM B's kill");
    // Nor can a VM signal host processes by their host pid.
    let r = run(&b, &format!("kill -0 {}", std::process::id())).await;
    assert_ne!(r.exit_code, 0);
    a.kill_process(a_sleep).unwrap();
}

/// Limit tests must never run unbounded: without the cgroup they would hurt the host.
fn require_cgroup(vm: &agentvm_vm::Vm, controller: &str) {
    assert!(
        cgroup_file(vm, controller, "cgroup.procs").is_some(),
        "this test needs the {controller} cgroup controller (run the tests as root): refusing to run it unbounded"
    );
}

fn cgroup_file(vm: &agentvm_vm::Vm, controller: &str, file: &str) -> Option<String> {
    vm.cgroup_dirs()
        .iter()
        .find(|d| d.to_string_lossy().contains(&format!("/{controller}/")))
        .and_then(|d| std::fs::read_to_string(d.join(file)).ok())
}

#[tokio::test]
async fn a_fork_bomb_is_stopped_by_the_pids_limit() {
    let h = host();
    let limits = CgroupLimits { pids: Some(64), ..agentvm_vm::DEFAULT_LIMITS };
    let bomb = h.vm_with("iso-forkbomb", VmOptions { limits, ..Default::default() }).await;
    require_cgroup(&bomb, "pids");
    let bystander = h.vm("iso-bystander").await;
    let args: Vec<String> = ["-c", "f() { f | f & }; f; sleep 5"].map(String::from).to_vec();
    let pid = bomb.spawn("sh", &args, SpawnOptions::default()).await.unwrap();
    let limit_hits = || {
        let events = cgroup_file(&bomb, "pids", "pids.events").unwrap();
        events.split_whitespace().nth(1).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0)
    };
    eventually(10, "the fork bomb to hit the pids limit", || async { limit_hits() > 0 }).await;
    // Other VMs and the host keep working.
    let r = tokio::time::timeout(Duration::from_secs(10), bystander.exec("echo alive", ExecOptions::default()))
        .await
        .expect("the bystander VM stalled")
        .unwrap();
    assert_eq!(r.stdout, "alive\n");
    assert!(std::process::Command::new("true").status().unwrap().success());
    let events = cgroup_file(&bomb, "pids", "pids.events").unwrap();
    let hits: u64 = events.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(hits > 0, "the pids limit was never hit: {events}");
    let current: u64 = cgroup_file(&bomb, "pids", "pids.current").unwrap().trim().parse().unwrap();
    assert!(current <= 64, "{current} processes");
    bomb.kill_process(pid).unwrap();
    bomb.shutdown(Duration::ZERO).await;
}

#[tokio::test]
async fn a_memory_hog_is_stopped_by_the_memory_limit() {
    let h = host();
    let limits = CgroupLimits { memory_bytes: Some(96 << 20), ..agentvm_vm::DEFAULT_LIMITS };
    let hog = h.vm_with("iso-memhog", VmOptions { limits, ..Default::default() }).await;
    require_cgroup(&hog, "memory");
    let bystander = h.vm("iso-mem-bystander").await;
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        hog.exec("python3 -c \"a = []\nwhile True: a.append(b'x' * 10**6)\"", ExecOptions::default()),
    )
    .await
    .expect("the memory hog was not stopped")
    .unwrap();
    assert_eq!(r.exit_code, 137, "expected an OOM kill: {r:?}");
    assert_eq!(sh(&bystander, "echo alive").await, "alive\n");
    assert_eq!(sh(&hog, "echo recovered").await, "recovered\n", "the VM survives its hog");
}
