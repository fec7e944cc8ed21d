//! Rootless mode: VMs work for an ordinary user where the kernel allows unprivileged user
//! namespaces (VM uid 1000 is that user; no cgroup limits; no root inside).
mod common;

use std::time::Duration;

use agentvm_vm::{HostConfig, SpawnOptions, VmHost};
use common::*;

/// The checks, run as an unprivileged user by the test below.
#[tokio::test]
#[ignore = "a helper: vms_work_for_an_unprivileged_user runs it as `nobody`"]
async fn inner_rootless_checks() {
    assert!(std::env::var_os("AGENTVM_ROOTLESS_INNER").is_some(), "run by vms_work_for_an_unprivileged_user");
    assert_ne!(nix::unistd::geteuid().as_raw(), 0, "must run unprivileged");
    let dir = tempfile::tempdir().unwrap();
    let init = std::env::var("AGENTVM_TEST_INIT").unwrap_or_else(|_| env!("CARGO_BIN_EXE_agentvm").into());
    let host = VmHost::new(HostConfig::new(dir.path().join("data"), init)).unwrap();
    let vm = host.create_vm("rootless", Default::default()).await.unwrap();
    assert_eq!(sh(&vm, "id -u; id -un; hostname").await, "1000\nuser\nrootless\n");
    assert_ne!(run(&vm, "touch /usr/x").await.exit_code, 0);
    // The data directory's software layer is bound read-only here too (by init, by path).
    assert_eq!(sh(&vm, "test -d /opt/agentvm/agents && echo dir").await, "dir\n");
    assert_ne!(run(&vm, "touch /opt/agentvm/x").await.exit_code, 0);
    // Rootless VMs see the host's /proc figures (LXCFS needs root) but are pinned to the CPUs of
    // their limit (the default: one), so nproc still counts the VM's CPUs.
    assert_eq!(sh(&vm, "nproc").await, "1\n");
    let host_mem = std::fs::read_to_string("/proc/meminfo").unwrap().lines().next().unwrap().to_string();
    assert_eq!(sh(&vm, "head -n 1 /proc/meminfo").await, format!("{host_mem}\n"));
    assert_eq!(sh(&vm, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '").await, "lo\n");
    sh(&vm, "echo kept > /home/user/f").await;
    // The filesystem API's helper runs in the VM through /proc/self/exe here too.
    vm.write_file("/home/user/api", b"\0bytes\xff").await.unwrap();
    assert_eq!(vm.read_file("/home/user/f").await.unwrap(), b"kept\n");
    assert_eq!(sh(&vm, "od -An -c /home/user/api | tr -s ' '").await, " \\0 b y t e s 377\n");
    let pid = vm.spawn("sleep", &["100".into()], SpawnOptions::default()).await.unwrap();
    vm.stop_process(pid).unwrap();
    assert_eq!(vm.wait_process(pid).await.unwrap(), 143);
    assert!(vm.cgroup_dirs().is_empty(), "an unprivileged user gets no cgroups here");
    vm.shutdown(Duration::from_millis(200)).await;
    drop(vm);
    let vm = host.create_vm("rootless", Default::default()).await.unwrap();
    assert_eq!(sh(&vm, "cat /home/user/f").await, "kept\n");
    drop(vm);
    host.remove_vm_data("rootless").unwrap();
    println!("ROOTLESS-OK");
}

#[test]
fn vms_work_for_an_unprivileged_user() {
    use std::os::unix::fs::PermissionsExt;
    // The checkout may sit in a directory `nobody` cannot traverse: run copies from one it can.
    let bin = tempfile::Builder::new().prefix("agentvm-rootless-").tempdir().unwrap();
    std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = bin.path().join("rootless-tests");
    let init = bin.path().join("agentvm");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_agentvm"), &init).unwrap();
    let mut command = if nix::unistd::geteuid().is_root() {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]).arg(&exe);
        c
    } else {
        std::process::Command::new(&exe)
    };
    let output = command
        .env("AGENTVM_TEST_INIT", &init)
        .args(["--ignored", "--exact", "inner_rootless_checks", "--nocapture"])
        .env("AGENTVM_ROOTLESS_INNER", "1")
        .env("HOME", "/tmp")
        .env("TMPDIR", "/tmp")
        .output()
        .expect("running the rootless checks");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && stdout.contains("ROOTLESS-OK"), "rootless run failed:\n{stdout}\n{stderr}");
}
