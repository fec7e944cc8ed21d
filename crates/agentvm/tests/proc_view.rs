//! Inside a VM, programs see the VM's limits: `nproc` counts the CPUs of its limit, `free` and
//! `/proc/meminfo` its memory limit, `/proc/uptime` the time since its own boot (the host's
//! LXCFS, bound over the VM's `/proc`, plus CPU pinning by init). Needs `lxcfs` installed
//! (`.ci/run` installs it): without it these tests fail, they never skip.
mod common;

use agentvm_sandbox::cgroup::CgroupLimits;
use agentvm_vm::{Vm, VmOptions, DEFAULT_LIMITS};
use common::*;

const MIB: u64 = 1 << 20;

fn options(memory_mib: u64, cpu_millicores: u64) -> VmOptions {
    VmOptions {
        limits: CgroupLimits {
            memory_bytes: Some(memory_mib * MIB),
            cpu_millicores: Some(cpu_millicores),
            ..DEFAULT_LIMITS
        },
        ..VmOptions::default()
    }
}

/// `MemTotal` of the VM's `/proc/meminfo`, in KiB.
async fn mem_total_kib(vm: &Vm) -> u64 {
    let line = sh(vm, "grep '^MemTotal:' /proc/meminfo").await;
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("MemTotal line {line:?}"))
}

/// The `total` column of `free -m`'s `Mem:` row.
async fn free_total_mib(vm: &Vm) -> u64 {
    let out = sh(vm, "free -m").await;
    let row = out.lines().find(|l| l.starts_with("Mem:")).unwrap_or_else(|| panic!("free -m printed {out:?}"));
    row.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("Mem: row {row:?}"))
}

fn host_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// The acceptance case: 512 MiB and 1 CPU set through the VM options.
#[tokio::test]
async fn nproc_and_free_show_the_vms_limits() {
    let t = host();
    let vm = t.vm_with("small", options(512, 1000)).await;
    assert_eq!(sh(&vm, "nproc").await, "1\n");
    let total = free_total_mib(&vm).await;
    assert!((500..=512).contains(&total), "free -m total {total} MiB, expected about 512");
    assert_eq!(mem_total_kib(&vm).await, 512 * 1024, "MemTotal");
    // LXCFS with its CFS view: the CPU files show one CPU too.
    assert_eq!(sh(&vm, "grep -c '^processor' /proc/cpuinfo").await, "1\n");
    assert_eq!(sh(&vm, "grep -c '^cpu[0-9]' /proc/stat").await, "1\n");
    // loadavg is the VM's own (LXCFS's per-cgroup averages): five fields, the fourth
    // running/total of the VM's tasks, not of the host's hundreds.
    let loadavg = sh(&vm, "cat /proc/loadavg").await;
    let fields: Vec<&str> = loadavg.split_whitespace().collect();
    assert_eq!(fields.len(), 5, "loadavg {loadavg:?}");
    let total_tasks: u64 = fields[3].split('/').nth(1).and_then(|v| v.parse().ok()).expect("tasks");
    assert!(total_tasks < 50, "loadavg counts {total_tasks} tasks: the host's, not the VM's ({loadavg:?})");
}

#[tokio::test]
async fn uptime_counts_from_the_vms_boot() {
    let t = host();
    let vm = t.vm("fresh").await;
    let uptime = sh(&vm, "cat /proc/uptime").await;
    let seconds: f64 = uptime.split_whitespace().next().and_then(|v| v.parse().ok()).expect("uptime");
    let host_seconds: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(seconds < 30.0, "a VM that just booted reports {seconds} s of uptime (host: {host_seconds} s)");
    assert!(host_seconds > seconds, "host {host_seconds} s, VM {seconds} s");
}

#[tokio::test]
async fn a_vm_with_two_cpus_sees_two() {
    let t = host();
    let vm = t.vm_with("two", options(1024, 2000)).await;
    let expected = host_cpus().min(2);
    assert_eq!(sh(&vm, "nproc").await, format!("{expected}\n"));
    assert_eq!(sh(&vm, "grep -c '^processor' /proc/cpuinfo").await, format!("{expected}\n"));
    assert_eq!(mem_total_kib(&vm).await, 1024 * 1024);
}

#[tokio::test]
async fn each_vm_sees_its_own_limits() {
    let t = host();
    let small = t.vm_with("a", options(256, 1000)).await;
    let large = t.vm_with("b", options(768, 2000)).await;
    assert_eq!(mem_total_kib(&small).await, 256 * 1024);
    assert_eq!(mem_total_kib(&large).await, 768 * 1024);
    assert_eq!(sh(&small, "nproc").await, "1\n");
    assert_eq!(sh(&large, "nproc").await, format!("{}\n", host_cpus().min(2)));
    // Files actions and processes started later see the same view.
    assert_eq!(mem_total_kib(&small).await, 256 * 1024);
}

/// The host's LXCFS mount lives under its data directory while it runs and is gone after.
#[tokio::test]
async fn the_lxcfs_mount_ends_with_its_host() {
    let t = host();
    let mountpoint = t.dir.path().join("data/lxcfs");
    let mounted = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(mountpoint.to_str().unwrap()))
    };
    assert!(mounted(), "lxcfs is not mounted at {}", mountpoint.display());
    let vm = t.vm("one").await;
    assert_eq!(mem_total_kib(&vm).await, 1024 * 1024);
    drop(vm);
    let TestHost { host, dir } = t;
    drop(host);
    assert!(!mounted(), "lxcfs still mounted at {} after its host ended", mountpoint.display());
    drop(dir);
}

/// Live `lxcfs` processes serving `mountpoint` (zombies excluded).
fn lxcfs_daemons_on(mountpoint: &std::path::Path) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).filter(|a| !a.is_empty()).collect();
        let serves = args.first().is_some_and(|a| a.ends_with(b"lxcfs"))
            && args.last().is_some_and(|a| *a == mountpoint.as_os_str().as_encoded_bytes());
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')));
        if serves && !zombie {
            found.push(pid);
        }
    }
    found
}

fn mounts_at(mountpoint: &std::path::Path) -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4) == mountpoint.to_str())
        .count()
}

/// A SIGKILLed server cannot stop its lxcfs: the daemon and its FUSE mount stay. The next server
/// on the same data directory stops that daemon, unmounts, and starts its own; a SIGTERM'd
/// server leaves nothing.
#[tokio::test]
async fn the_next_server_recovers_a_killed_servers_lxcfs() {
    let server = server::TestServer::start();
    let mountpoint = server.data.path().join("data/lxcfs");
    let first = lxcfs_daemons_on(&mountpoint);
    assert_eq!(first.len(), 1, "the server runs one lxcfs on {}", mountpoint.display());
    let data = server.kill_hard();
    assert_eq!(lxcfs_daemons_on(&mountpoint), first, "lxcfs outlives a SIGKILLed server");
    assert_eq!(mounts_at(&mountpoint), 1);

    let mut server = server::TestServer::start_in(data, &[]);
    let second = lxcfs_daemons_on(&mountpoint);
    assert_eq!(second.len(), 1, "exactly one lxcfs after the restart: {second:?}");
    assert_ne!(second, first, "the old daemon was replaced");
    assert_eq!(mounts_at(&mountpoint), 1, "the old mount was unmounted");
    let meminfo = std::fs::read_to_string(mountpoint.join("proc/meminfo")).expect("the new mount answers");
    assert!(meminfo.starts_with("MemTotal:"), "{meminfo}");

    server.stop();
    assert_eq!(lxcfs_daemons_on(&mountpoint), Vec::<u32>::new(), "lxcfs outlives a stopped server");
    assert_eq!(mounts_at(&mountpoint), 0, "lxcfs is still mounted after its server stopped");
}
