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
