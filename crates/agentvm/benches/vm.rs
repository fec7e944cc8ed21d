//! VM benchmark: `cargo bench -p agentvm --bench vm` (release build).
//!
//! Measures, on the library path (no server in between):
//! - cold: create a VM + its first `exec("echo hello")` (p50, p95), each on a fresh VM id;
//! - warm: `exec("echo hello")` on a running VM (p50, p95);
//! - memory added per idle VM: `MemAvailable` before and after starting a batch of idle VMs,
//!   divided by their number, and the average private memory (PSS) of one VM's init.
//!
//! Prints a Markdown report with the machine it ran on. The machine is shared and noisy:
//! compare figures from one run, not across runs. Iterations: `AGENTVM_BENCH_ITERS` (default
//! 100 cold, 5x that warm), idle batch `AGENTVM_BENCH_IDLE` (default 50).

use std::time::{Duration, Instant};

use agentvm_vm::{ExecOptions, HostConfig, Vm, VmHost, VmOptions};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn meminfo_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap()
}

fn pss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Pss:")?.trim().strip_suffix("kB")?.trim().parse().ok()))
        .unwrap_or(0)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1).map(|s| s.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem_gib = meminfo_kib("MemTotal:") as f64 / (1024.0 * 1024.0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!("{cpu}, {cores} cores, {mem_gib:.0} GiB, Linux {}, load average {}", kernel.trim(), load.join(" "))
}

async fn echo(vm: &Vm) {
    let r = vm.exec("echo hello", ExecOptions::default()).await.unwrap();
    assert_eq!(r.stdout, "hello\n");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let iterations = env_usize("AGENTVM_BENCH_ITERS", 100);
    let idle_count = env_usize("AGENTVM_BENCH_IDLE", 50);
    let dir = tempfile::Builder::new().prefix("agentvm-bench-").tempdir().unwrap();
    let host = VmHost::new(HostConfig::new(dir.path().join("data"), env!("CARGO_BIN_EXE_agentvm"))).unwrap();

    // Warm-up: page in the binaries and the kernel paths.
    for i in 0..5 {
        let vm = host.create_vm(&format!("warmup-{i}"), VmOptions::default()).await.unwrap();
        echo(&vm).await;
    }

    let mut cold = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let started = Instant::now();
        let vm = host.create_vm(&format!("cold-{i}"), VmOptions::default()).await.unwrap();
        echo(&vm).await;
        cold.push(started.elapsed());
        drop(vm);
    }
    cold.sort();

    let vm = host.create_vm("warm", VmOptions::default()).await.unwrap();
    let mut warm = Vec::with_capacity(iterations * 5);
    for _ in 0..iterations * 5 {
        let started = Instant::now();
        echo(&vm).await;
        warm.push(started.elapsed());
    }
    warm.sort();
    drop(vm);

    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = meminfo_kib("MemAvailable:");
    let mut idle = Vec::with_capacity(idle_count);
    for i in 0..idle_count {
        let vm = host.create_vm(&format!("idle-{i}"), VmOptions::default()).await.unwrap();
        echo(&vm).await;
        idle.push(vm);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = meminfo_kib("MemAvailable:");
    let per_vm_kib = before.saturating_sub(after) as f64 / idle_count as f64;
    let pss_avg = idle.iter().map(|vm| pss_kib(vm.host_pid())).sum::<u64>() as f64 / idle_count as f64;
    drop(idle);

    println!("## VM core (library path)\n");
    println!("Machine: {}\n", machine());
    println!("| Measure | p50 | p95 | n |");
    println!("|---|---|---|---|");
    println!(
        "| create VM + first `exec(\"echo hello\")` | {} | {} | {} |",
        ms(percentile(&cold, 0.5)),
        ms(percentile(&cold, 0.95)),
        cold.len()
    );
    println!(
        "| warm `exec(\"echo hello\")` | {} | {} | {} |",
        ms(percentile(&warm, 0.5)),
        ms(percentile(&warm, 0.95)),
        warm.len()
    );
    println!();
    println!("| Memory per idle VM ({idle_count} VMs) | KiB |");
    println!("|---|---|");
    println!("| host `MemAvailable` drop / VM | {per_vm_kib:.0} |");
    println!("| PSS of one VM's init (average) | {pss_avg:.0} |");
}
