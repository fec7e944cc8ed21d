//! Nothing a VM made survives it on the host: processes, mounts, cgroups, network namespaces
//! (acceptance 7 of the VM core issue, per VM; `scripts/check-leftovers` checks after the suite).
mod common;

use std::path::Path;
use std::time::Duration;

use agentvm_vm::{SpawnOptions, Vm};
use common::*;

/// Host pids of processes in the VM's pid namespace, and its pid and net namespace ids.
fn vm_footprint(vm: &Vm) -> (String, String) {
    let ns = |kind: &str| {
        std::fs::read_link(format!("/proc/{}/ns/{kind}", vm.host_pid())).unwrap().to_string_lossy().into_owned()
    };
    (ns("pid"), ns("net"))
}

/// Host processes whose pid or net namespace is `ns`.
fn processes_in(ns: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        for kind in ["pid", "net"] {
            if std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).is_ok_and(|l| l.to_string_lossy() == ns) {
                found.push(pid);
            }
        }
    }
    found
}

async fn busy_vm(h: &TestHost, id: &str) -> Vm {
    let vm = h.vm(id).await;
    vm.spawn("sh", &["-c".into(), "sleep 100 & sleep 101 & wait".into()], SpawnOptions::default()).await.unwrap();
    vm.spawn("sleep", &["300".into()], SpawnOptions::default()).await.unwrap();
    eventually(10, "processes started", || async { vm.all_processes().await.unwrap().len() >= 4 }).await;
    vm
}

fn assert_gone(pid_ns: &str, net_ns: &str, cgroups: &[std::path::PathBuf], data: &Path) {
    assert_eq!(processes_in(pid_ns), Vec::<u32>::new(), "processes of the VM remain");
    assert_eq!(processes_in(net_ns), Vec::<u32>::new(), "the VM's network namespace is still in use");
    for dir in cgroups {
        assert!(!dir.exists(), "cgroup {} remains", dir.display());
    }
    // The host's own VM disk (`<data>/disk`, see agentvm_vm::disk) and LXCFS (`<data>/lxcfs`)
    // stay mounted while the host lives; nothing of the VM may be mounted on the host.
    let host_mounts = [format!(" {}/data/disk ", data.display()), format!(" {}/data/lxcfs ", data.display())];
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let leftover: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(&*data.to_string_lossy()) && !host_mounts.iter().any(|m| l.contains(m.as_str())))
        .collect();
    assert!(leftover.is_empty(), "a mount under the data dir remains on the host: {leftover:?}");
}

#[tokio::test]
async fn shutdown_leaves_nothing_behind() {
    let h = host();
    let vm = busy_vm(&h, "cleanup-shutdown").await;
    let (pid_ns, net_ns) = vm_footprint(&vm);
    let cgroups = vm.cgroup_dirs();
    assert!(!processes_in(&pid_ns).is_empty());
    vm.shutdown(Duration::from_millis(500)).await;
    assert!(!vm.is_running());
    assert_gone(&pid_ns, &net_ns, &cgroups, h.dir.path());
}

#[tokio::test]
async fn dropping_the_last_handle_leaves_nothing_behind() {
    let h = host();
    let vm = busy_vm(&h, "cleanup-drop").await;
    let (pid_ns, net_ns) = vm_footprint(&vm);
    let cgroups = vm.cgroup_dirs();
    drop(vm);
    assert_gone(&pid_ns, &net_ns, &cgroups, h.dir.path());
}

#[tokio::test]
async fn calls_after_shutdown_fail_clearly() {
    let h = host();
    let vm = h.vm("cleanup-after").await;
    vm.shutdown(Duration::ZERO).await;
    let err = vm.exec("true", Default::default()).await.unwrap_err();
    assert_eq!(err.to_string(), "VM cleanup-after is not running");
    assert!(vm.all_processes().await.is_err());
}

/// Runs inside a child process (see the next test): creates a VM, prints its footprint, waits.
#[tokio::test]
#[ignore = "a helper: when_the_host_process_is_killed_its_vms_die_with_it runs it in a child process"]
async fn helper_vm_owner_process() {
    let data = std::env::var("AGENTVM_TEST_OWNER_DATA").expect("AGENTVM_TEST_OWNER_DATA: the data directory");
    let host = agentvm_vm::VmHost::new(agentvm_vm::HostConfig::new(data, env!("CARGO_BIN_EXE_agentvm"))).unwrap();
    let vm = host.create_vm("orphan", Default::default()).await.unwrap();
    vm.spawn("sleep", &["300".into()], SpawnOptions::default()).await.unwrap();
    let (pid_ns, net_ns) = vm_footprint(&vm);
    println!(
        "FOOTPRINT {pid_ns} {net_ns} {}",
        vm.cgroup_dirs().iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(",")
    );
    tokio::time::sleep(Duration::from_secs(300)).await;
}

#[tokio::test]
async fn when_the_host_process_is_killed_its_vms_die_with_it() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "helper_vm_owner_process", "--nocapture"])
        .env("AGENTVM_TEST_OWNER_DATA", dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let footprint =
        lines.find_map(|l| l.ok()?.strip_prefix("FOOTPRINT ").map(str::to_string)).expect("helper printed its VM");
    let parts: Vec<&str> = footprint.split(' ').collect();
    let (pid_ns, net_ns) = (parts[0], parts[1]);
    assert!(!processes_in(pid_ns).is_empty());
    child.kill().unwrap(); // SIGKILL: no destructor runs in the owner.
    child.wait().unwrap();
    eventually(10, "the VM's processes to die with their host", || async { processes_in(pid_ns).is_empty() }).await;
    assert_eq!(processes_in(net_ns), Vec::<u32>::new());
    // Its cgroups are orphaned (no destructor ran); the next host on this machine sweeps them.
    // Its VM disk stays mounted: the next host on the same data directory takes it over (and
    // unmounts it when dropped).
    let cgroups: Vec<&str> = parts.get(2).map(|c| c.split(',').filter(|s| !s.is_empty()).collect()).unwrap_or_default();
    let _next =
        agentvm_vm::VmHost::new(agentvm_vm::HostConfig::new(dir.path(), env!("CARGO_BIN_EXE_agentvm"))).unwrap();
    for cg in cgroups {
        assert!(!Path::new(cg).exists(), "stale cgroup {cg} was not swept");
    }
}
