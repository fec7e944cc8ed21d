//! Escape battery: host-wide resources. One VM tries to use up something the whole machine
//! shares — TCP buffer memory, the terminal pool, the disk and its inodes, the file table — and
//! must meet its own limit, with a clear error inside it, while a second VM and the host keep
//! working.
mod common;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use agentvm_sandbox::cgroup::CgroupLimits;
use agentvm_vm::terminal_budget::TerminalBudget;
use agentvm_vm::{ShellOptions, Vm, VmOptions, DEFAULT_LIMITS, DEFAULT_MAX_PTYS, DEFAULT_TCP_MEMORY_BYTES};
use common::{eventually, host, run, sh, TestHost};

// ---------------------------------------------------------------------------------------------
// helpers

/// The VM's directory in the v1 memory hierarchy (this project's hosts are hybrid v1/v2).
fn memory_cgroup(vm: &Vm) -> PathBuf {
    vm.cgroup_dirs()
        .into_iter()
        .find(|d| d.starts_with("/sys/fs/cgroup/memory"))
        .expect("the VM has a v1 memory cgroup")
}

fn read_u64(path: PathBuf) -> u64 {
    std::fs::read_to_string(&path).unwrap().trim().parse().unwrap()
}

/// Host-wide TCP buffer memory in bytes (`/proc/net/sockstat`: `TCP: ... mem <pages>`).
fn host_tcp_memory() -> u64 {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap();
    let line = sockstat.lines().find(|l| l.starts_with("TCP:")).unwrap();
    let pages: u64 = line.split_whitespace().skip_while(|w| *w != "mem").nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// `net.ipv4.tcp_mem`: low, pressure and high thresholds, in bytes.
fn host_tcp_thresholds() -> [u64; 3] {
    let values: Vec<u64> = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_mem")
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse::<u64>().unwrap() * 4096)
        .collect();
    [values[0], values[1], values[2]]
}

/// Starts `script` with python3 in the VM and waits until it prints a line starting with
/// `marker`; returns the pid and that line. The program keeps running (holding what it took).
async fn spawn_until(vm: &Vm, script: &str, marker: &str, secs: u64) -> (i32, String) {
    let pid = vm.spawn("python3", &["-c".into(), script.into()], Default::default()).await.unwrap();
    let mut found = String::new();
    eventually(secs, &format!("`{marker}` from the attack"), || {
        let out: Vec<u8> = vm.process_output(pid, None).unwrap().iter().flat_map(|c| c.data.to_vec()).collect();
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some(line) = text.lines().find(|l| l.starts_with(marker)) {
            found = line.to_string();
        }
        let done = !found.is_empty();
        async move { done }
    })
    .await;
    (pid, found)
}

/// `key=value` from a line like `FILLED sockets=300 queued=...`.
fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        .parse()
        .unwrap()
}

/// A loopback TCP round trip of 1 MiB inside `vm`.
async fn loopback_tcp_works(vm: &Vm) {
    let script = r#"
import socket, threading
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
data = b"y" * (1 << 20)
def serve():
    c, _ = srv.accept(); c.sendall(data); c.close()
threading.Thread(target=serve).start()
s = socket.create_connection(("127.0.0.1", srv.getsockname()[1])); s.settimeout(20)
got = b""
while True:
    chunk = s.recv(65536)
    if not chunk: break
    got += chunk
print("ok" if got == data else "short %d" % len(got))
"#;
    assert_eq!(sh(vm, &format!("python3 -c '{script}'")).await.trim(), "ok");
}

/// The TCP attack: `sockets` loopback connections whose sender fills its queue (non-blocking
/// sends of 64 KiB until EAGAIN) and whose receiver never reads. Prints
/// `FILLED sockets=N queued=BYTES stalled=N` and then holds everything until killed.
fn tcp_fill_script(sockets: usize) -> String {
    format!(
        r#"
import socket, time
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1024)
port = srv.getsockname()[1]
held, queued, stalled = [], 0, 0
buf = b"x" * 65536
for i in range({sockets}):
    c = socket.create_connection(("127.0.0.1", port)); a, _ = srv.accept()
    c.setblocking(False); held.append((c, a))
    while True:
        try:
            queued += c.send(buf)
        except BlockingIOError:
            stalled += 1; break
print("FILLED sockets=%d queued=%d stalled=%d" % (len(held), queued, stalled), flush=True)
time.sleep(600)
"#
    )
}

/// Blocks allocated by the file at `path` on the host, in bytes.
fn allocated_bytes(path: PathBuf) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

fn quota_host() -> TestHost {
    let h = host();
    assert!(h.host.disk_quota_active(), "the test host must have disk quotas (root, mkfs.btrfs installed)");
    h
}

fn with_disk(bytes: u64) -> VmOptions {
    VmOptions { disk_bytes: Some(bytes), ..VmOptions::default() }
}

// ---------------------------------------------------------------------------------------------
// TCP buffer memory

#[tokio::test]
async fn escape_tcp_buffers_stop_at_the_vm_limit_and_spare_the_host() {
    let h = host();
    let attacker = h.vm("tcp-attacker").await;
    let bystander = h.vm("tcp-bystander").await;
    let before = host_tcp_memory();
    // 300 connections with full queues: ~1.1 GiB of TCP memory without a limit (2.2 GiB with
    // enough sockets, which is what reset the host's downloads).
    let (pid, line) = spawn_until(&attacker, &tcp_fill_script(300), "FILLED", 60).await;
    assert_eq!(field(&line, "sockets"), 300, "{line}");
    assert_eq!(field(&line, "stalled"), 300, "every sender must stall at the limit: {line}");
    let queued = field(&line, "queued");
    // The limit, plus at most one forced segment per socket (see the cgroup module).
    assert!(queued < DEFAULT_TCP_MEMORY_BYTES + 300 * 80 * 1024, "queued {queued} bytes: {line}");
    let cgroup = memory_cgroup(&attacker);
    let charged = read_u64(cgroup.join("memory.kmem.tcp.max_usage_in_bytes"));
    assert!(charged >= DEFAULT_TCP_MEMORY_BYTES * 9 / 10, "the VM never reached its limit: {charged}");
    // The host: far below the kernel's pressure threshold.
    let now = host_tcp_memory();
    let [low, pressure, _] = host_tcp_thresholds();
    eprintln!("attack: {line}; charged to the VM {charged} B; host TCP memory {before} -> {now} B (tcp_mem low {low})");
    assert!(now < before + 200 * 1024 * 1024, "host TCP memory grew from {before} to {now}");
    assert!(now < low / 2 && now < pressure / 2, "host TCP memory {now} near tcp_mem {low}/{pressure}");
    // Another VM still moves data over loopback TCP at full size while the attack holds.
    loopback_tcp_works(&bystander).await;
    attacker.kill_process(pid).unwrap();
    assert_eq!(attacker.wait_process(pid).await.unwrap(), 137);
}

#[tokio::test]
async fn escape_tcp_accounting_is_on_before_the_first_socket() {
    // v1 only charges sockets created after the limit is written: the limit must be in place
    // when the VM starts, and a VM's very first socket must already be charged.
    let h = host();
    let vm = h.vm("tcp-first").await;
    let cgroup = memory_cgroup(&vm);
    assert_eq!(read_u64(cgroup.join("memory.kmem.tcp.limit_in_bytes")), DEFAULT_TCP_MEMORY_BYTES);
    let (pid, _) = spawn_until(&vm, &tcp_fill_script(1), "FILLED", 30).await;
    assert!(read_u64(cgroup.join("memory.kmem.tcp.usage_in_bytes")) > 64 * 1024, "the VM's socket is not charged");
    vm.kill_process(pid).unwrap();
    vm.wait_process(pid).await.unwrap();
}

#[tokio::test]
async fn escape_tcp_limit_follows_the_vm_options() {
    let h = host();
    let limits = CgroupLimits { tcp_memory_bytes: Some(8 << 20), ..DEFAULT_LIMITS };
    let vm = h.vm_with("tcp-small", VmOptions { limits, ..VmOptions::default() }).await;
    assert_eq!(read_u64(memory_cgroup(&vm).join("memory.kmem.tcp.limit_in_bytes")), 8 << 20);
    let (pid, line) = spawn_until(&vm, &tcp_fill_script(100), "FILLED", 60).await;
    let queued = field(&line, "queued");
    assert!(queued < (8 << 20) + 100 * 80 * 1024, "queued {queued} bytes with an 8 MiB limit");
    vm.kill_process(pid).unwrap();
    vm.wait_process(pid).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Terminals

#[tokio::test]
async fn escape_terminals_a_vm_exhausting_its_own_gets_enospc_and_others_open_shells() {
    let h = host();
    let attacker = h.vm("pty-attacker").await;
    let bystander = h.vm("pty-bystander").await;
    let script = r#"
import os, time
held = []
try:
    while True: held.append(os.openpty())
except OSError as e:
    print("EXHAUSTED opened=%d errno=%d %s" % (len(held), e.errno, e.strerror), flush=True)
time.sleep(600)
"#;
    let (pid, line) = spawn_until(&attacker, script, "EXHAUSTED", 30).await;
    eprintln!("attack: {line}");
    // devpts `max=` counts from 0; the VM gets its share, no more, and ENOSPC at the limit.
    let opened = field(&line, "opened");
    assert!(opened <= u64::from(DEFAULT_MAX_PTYS) && opened >= u64::from(DEFAULT_MAX_PTYS) - 1, "{line}");
    assert!(line.contains(&format!("errno={}", libc::ENOSPC)) && line.contains("No space left on device"), "{line}");
    // A shell in the exhausted VM fails with an error, not a hang ...
    assert!(attacker.open_shell(ShellOptions::default()).await.is_err(), "the full VM opened a terminal");
    // ... while the other VM's terminals are untouched.
    let shell = bystander.open_shell(ShellOptions::default()).await.expect("openShell in another VM");
    bystander.write_shell(&shell, b"exit 7\n").await.unwrap();
    assert_eq!(bystander.wait_shell(&shell).await.unwrap(), 7);
    attacker.kill_process(pid).unwrap();
    attacker.wait_process(pid).await.unwrap();
}

#[tokio::test]
async fn escape_terminals_a_vm_asking_more_than_the_budget_does_not_boot() {
    let h = host();
    let budget = TerminalBudget::global();
    let greedy = VmOptions { max_ptys: budget.total() + 1, ..VmOptions::default() };
    let err = h.host.create_vm("pty-greedy", greedy).await.err().expect("a VM beyond the budget booted");
    let text = err.to_string();
    assert!(text.contains("terminal budget exhausted") && text.contains("max_ptys"), "{text}");
    // Nothing was left reserved or running, and other VMs still boot and open shells.
    let vm = h.vm("pty-after-greedy").await;
    let shell = vm.open_shell(ShellOptions::default()).await.unwrap();
    vm.close_shell(&shell).await.unwrap();
}

#[tokio::test]
async fn escape_terminals_the_budget_leaves_the_host_its_reserve_and_margin() {
    let read = |name: &str| -> u32 {
        std::fs::read_to_string(format!("/proc/sys/kernel/pty/{name}")).unwrap().trim().parse().unwrap()
    };
    let budget = TerminalBudget::global();
    assert_eq!(budget.total(), read("max") - read("reserve") - agentvm_vm::terminal_budget::HOST_MARGIN);
    // The VM's devpts is mounted with its share as `max=`.
    let h = host();
    let vm = h.vm("pty-share").await;
    let mounts = sh(&vm, "grep devpts /proc/mounts").await;
    assert!(mounts.contains(&format!("max={DEFAULT_MAX_PTYS}")), "{mounts}");
    assert!(budget.reserved() >= DEFAULT_MAX_PTYS, "a running VM holds no terminals in the budget");
}

#[tokio::test]
async fn escape_terminals_a_stopped_vm_returns_its_share() {
    let h = host();
    let budget = TerminalBudget::global();
    // A big share: only fits if what stopped VMs held came back.
    let big = budget.total() / 2;
    for round in 0..3 {
        let vm = h.vm_with(&format!("pty-big-{round}"), VmOptions { max_ptys: big, ..VmOptions::default() }).await;
        sh(&vm, "true").await;
        drop(vm);
    }
    // The last one is gone too: its share is free again.
    let vm = h.vm_with("pty-big-last", VmOptions { max_ptys: big, ..VmOptions::default() }).await;
    sh(&vm, "true").await;
}

// ---------------------------------------------------------------------------------------------
// Disk and inodes

#[tokio::test]
async fn escape_disk_writing_past_the_quota_gets_edquot() {
    let h = quota_host();
    let image = h.dir.path().join("data/disk.img");
    let attacker = h.vm_with("disk-attacker", with_disk(64 << 20)).await;
    let bystander = h.vm("disk-bystander").await;
    let image_before = allocated_bytes(image.clone());
    let r = run(&attacker, "dd if=/dev/zero of=/home/user/big bs=1M count=256 conv=fsync").await;
    assert_ne!(r.exit_code, 0, "256 MiB fitted in a 64 MiB quota");
    assert!(r.stderr.contains("Disk quota exceeded"), "{}", r.stderr);
    let written = sh(&attacker, "stat -c %s /home/user/big").await.trim().parse::<u64>().unwrap();
    assert!(written <= 64 << 20, "wrote {written} bytes");
    // The host's disk took at most the quota (plus filesystem metadata).
    let grown = allocated_bytes(image.clone()).saturating_sub(image_before);
    assert!(grown < (64 << 20) + (32 << 20), "the image grew by {grown} bytes");
    // The other VM writes as usual.
    sh(&bystander, "dd if=/dev/zero of=/home/user/ok bs=1M count=16 conv=fsync 2>/dev/null && echo done").await;
}

#[tokio::test]
async fn escape_disk_creating_inodes_past_the_quota_gets_edquot() {
    let h = quota_host();
    let host_inodes_before = host_entries(h.dir.path());
    let attacker = h.vm_with("inode-attacker", with_disk(4 << 20)).await;
    let script = r#"
import os
os.makedirs("/home/user/many", exist_ok=True)
n = 0
try:
    while n < 1000000:
        os.close(os.open("/home/user/many/%d" % n, os.O_CREAT | os.O_WRONLY)); n += 1
except OSError as e:
    print("STOPPED files=%d errno=%d %s" % (n, e.errno, e.strerror))
"#;
    let out = sh(&attacker, &format!("python3 -c '{script}'")).await;
    eprintln!("attack: {}", out.trim());
    assert!(out.starts_with("STOPPED"), "{out}");
    assert!(out.contains(&format!("errno={}", libc::EDQUOT)) && out.contains("Disk quota exceeded"), "{out}");
    let files = field(out.trim(), "files");
    assert!(files > 1000, "only {files} files before the quota");
    // None of those inodes came from the host's filesystem.
    // (Counted under the test's own directory, on the host's filesystem only: the machine's free
    // inode count moves with every other job running on it.)
    let host_inodes_after = host_entries(h.dir.path());
    assert!(host_inodes_after.saturating_sub(host_inodes_before) < 1000, "the host lost inodes");
    // A second VM still creates files.
    let other = h.vm("inode-bystander").await;
    sh(&other, "mkdir -p /home/user/d && for i in $(seq 100); do : > /home/user/d/$i; done").await;
}

#[tokio::test]
async fn escape_disk_quota_holds_across_reboots_and_follows_the_options() {
    let h = quota_host();
    let vm = h.vm_with("disk-reboot", with_disk(16 << 20)).await;
    let r = run(&vm, "dd if=/dev/zero of=/home/user/a bs=1M count=32 2>&1").await;
    assert!(r.stdout.contains("Disk quota exceeded"), "{}", r.stdout);
    drop(vm);
    // Same limit after a reboot: still full.
    let vm = h.vm_with("disk-reboot", with_disk(16 << 20)).await;
    let r = run(&vm, "dd if=/dev/zero of=/home/user/b bs=1M count=4 2>&1").await;
    assert!(r.stdout.contains("Disk quota exceeded"), "{}", r.stdout);
    drop(vm);
    // A larger quota in the options applies to the existing VM.
    let vm = h.vm_with("disk-reboot", with_disk(64 << 20)).await;
    sh(&vm, "dd if=/dev/zero of=/home/user/b bs=1M count=16 2>/dev/null").await;
}

#[tokio::test]
async fn escape_disk_space_a_vm_frees_goes_back_to_the_host() {
    let h = quota_host();
    let image = h.dir.path().join("data/disk.img");
    let vm = h.vm("disk-churn").await;
    let before = allocated_bytes(image.clone());
    sh(&vm, "dd if=/dev/urandom of=/home/user/f bs=1M count=48 conv=fsync 2>/dev/null").await;
    assert!(allocated_bytes(image.clone()) >= before + (40 << 20), "the data did not reach the image");
    sh(&vm, "rm /home/user/f && sync").await;
    // `discard`: freed blocks are punched out of the image when the transaction commits.
    eventually(20, "freed space returned to the host", || {
        let now = allocated_bytes(image.clone());
        async move { now < before + (16 << 20) }
    })
    .await;
}

#[tokio::test]
async fn escape_disk_volumes_are_separate_and_destroy_removes_them() {
    let h = quota_host();
    let vm = h.vm("disk-destroy").await;
    sh(&vm, "echo kept > /home/user/x").await;
    let layers = h.host.layers_dir("disk-destroy");
    assert!(layers.starts_with(h.dir.path().join("data/disk")), "{}", layers.display());
    assert_eq!(std::fs::metadata(&layers).unwrap().ino(), 256, "the VM's layers are not a volume of their own");
    vm.shutdown(Duration::from_secs(2)).await;
    drop(vm);
    h.host.remove_vm_data("disk-destroy").unwrap();
    assert!(!layers.exists() && !h.host.vm_dir("disk-destroy").exists());
    // A new VM with the same id starts empty.
    let vm = h.vm("disk-destroy").await;
    assert_ne!(run(&vm, "cat /home/user/x").await.exit_code, 0);
}

// ---------------------------------------------------------------------------------------------
// The file table

#[tokio::test]
async fn escape_file_table_many_processes_meet_their_limits() {
    let h = host();
    let attacker = h.vm("files-attacker").await;
    let bystander = h.vm("files-bystander").await;
    let file_max: u64 = std::fs::read_to_string("/proc/sys/fs/file-max").unwrap().trim().parse().unwrap();
    let allocated = || -> u64 {
        std::fs::read_to_string("/proc/sys/fs/file-nr").unwrap().split_whitespace().next().unwrap().parse().unwrap()
    };
    let before = allocated();
    // Fork as many children as the VM allows; each opens descriptors until EMFILE and holds them.
    let script = r#"
import os, time, errno
children, total, fork_error, open_errors = 0, 0, None, set()
r, w = os.pipe()
while children < 2000:
    try:
        pid = os.fork()
    except OSError as e:
        fork_error = e.errno; break
    if pid == 0:
        os.close(r); n = 0
        try:
            while True: os.open("/dev/null", os.O_RDONLY); n += 1
        except OSError as e:
            os.write(w, b"%d %d\n" % (n, e.errno))
        time.sleep(600); os._exit(0)
    children += 1
os.close(w)
f = os.fdopen(r)
for _ in range(children):
    n, err = f.readline().split(); total += int(n); open_errors.add(int(err))
print("HELD children=%d total=%d fork_errno=%s open_errnos=%s" % (children, total, fork_error, sorted(open_errors)), flush=True)
time.sleep(600)
"#;
    let (pid, line) = spawn_until(&attacker, script, "HELD", 120).await;
    eprintln!("attack: {line}; host file-nr {before} -> {} of {file_max}", allocated());
    let total = field(&line, "total");
    assert!(line.contains(&format!("fork_errno={}", libc::EAGAIN)), "forking did not stop at pids.max: {line}");
    assert!(line.contains(&format!("open_errnos=[{}]", libc::EMFILE)), "opening did not stop at EMFILE: {line}");
    // Bounded by RLIMIT_NOFILE x pids.max, far from the host's table.
    let nofile = 1024;
    assert!(total <= nofile * DEFAULT_LIMITS.pids.unwrap(), "{line}");
    let now = allocated();
    assert!(now < file_max / 2, "the host file table is at {now} of {file_max} (was {before})");
    // Others still open files: the host and a second VM.
    let _f = std::fs::File::open("/proc/self/status").expect("the host opens a file");
    sh(&bystander, "for i in $(seq 50); do exec 3</etc/hostname; done; cat /etc/hostname >/dev/null").await;
    // The children are in the attack's process group: they go with it.
    attacker.kill_process(pid).unwrap();
    attacker.wait_process(pid).await.unwrap();
}

#[tokio::test]
async fn escape_disk_a_stopped_host_leaves_no_mount_or_loop_device() {
    let h = quota_host();
    let image = h.dir.path().join("data/disk.img");
    let vm = h.vm("disk-host-stop").await;
    sh(&vm, "echo kept > /home/user/x").await;
    let backed_by_image = || {
        std::fs::read_dir("/sys/block").unwrap().flatten().any(|d| {
            std::fs::read_to_string(d.path().join("loop/backing_file"))
                .is_ok_and(|f| f.trim() == image.to_string_lossy())
        })
    };
    assert!(backed_by_image(), "the VM disk is not on a loop device");
    vm.shutdown(Duration::from_secs(2)).await;
    drop(vm);
    let TestHost { host, dir } = h;
    drop(host);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&*dir.path().to_string_lossy()), "the VM disk is still mounted");
    // Autoclear: the loop device goes once the filesystem is released. Other tests of this
    // binary run hosts side by side, and a host's LXCFS daemon works in a mount namespace of
    // its own, copied from this process's when it started: if that was while this disk was
    // mounted, the copy holds the filesystem until that daemon ends with its host.
    eventually(90, "the loop device detached", || {
        let gone = !backed_by_image();
        async move { gone }
    })
    .await;
    // The files are in the image: a new host on the same directory finds them.
    let host =
        agentvm_vm::VmHost::new(agentvm_vm::HostConfig::new(dir.path().join("data"), env!("CARGO_BIN_EXE_agentvm")))
            .unwrap();
    let vm = host.create_vm("disk-host-stop", VmOptions::default()).await.unwrap();
    assert_eq!(sh(&vm, "cat /home/user/x").await, "kept\n");
}

/// Entries under `dir` on `dir`'s own filesystem (a VM disk mounted below is not descended into).
fn host_entries(dir: &std::path::Path) -> usize {
    use std::os::unix::fs::MetadataExt;
    fn walk(path: &std::path::Path, dev: u64) -> usize {
        let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
        if meta.dev() != dev {
            return 0;
        }
        let mut n = 1;
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(path) {
                n += entries.flatten().map(|e| walk(&e.path(), dev)).sum::<usize>();
            }
        }
        n
    }
    let dev = std::fs::metadata(dir).unwrap().dev();
    walk(dir, dev)
}
