//! Escape battery: kernel identity. Every VM has its own host uid/gid range and owns its user
//! namespace, so per-user kernel budgets and keys are never shared between VMs or with the host.
//! Each test is one attack from one VM, asserting that it stops inside that VM and that a second
//! VM and the host keep working.
mod common;

use std::os::unix::fs::MetadataExt;

use agentvm_vm::Vm;
use common::{host, run, sh};

/// Host uid of VM `vm`'s init and of a process of its user (uid 1000 inside).
fn host_uids(vm: &Vm) -> (u32, u32) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", vm.host_pid())).unwrap();
    let uid_of_init: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .unwrap();
    (uid_of_init, uid_of_init + 1000)
}

/// The first line of `/proc/self/uid_map` inside the VM: "0 <host start> 65536".
async fn uid_map(vm: &Vm) -> Vec<u64> {
    sh(vm, "cat /proc/self/uid_map").await.split_whitespace().map(|n| n.parse().unwrap()).collect()
}

#[tokio::test]
async fn escape_vms_do_not_share_host_uids() {
    let h = host();
    let (a, b) = (h.vm("ident-a").await, h.vm("ident-b").await);
    let (map_a, map_b) = (uid_map(&a).await, uid_map(&b).await);
    assert_eq!((map_a[0], map_a[2], map_b[0], map_b[2]), (0, 65536, 0, 65536));
    assert!(map_a[1].abs_diff(map_b[1]) >= 65536, "ranges overlap: {map_a:?} {map_b:?}");
    assert_ne!(host_uids(&a), host_uids(&b));
    assert!(host_uids(&a).0 >= 65536 && host_uids(&b).0 >= 65536, "a VM runs as a low host uid");
    // Files the VM user writes belong to that VM's own range on the host.
    sh(&a, "echo x > /home/user/mine").await;
    let file = h.host.layers_dir("ident-a").join("upper/home/user/mine");
    assert_eq!(std::fs::metadata(file).unwrap().uid() as u64, map_a[1] + 1000);
}

#[tokio::test]
async fn escape_user_namespace_is_owned_by_the_vm_not_the_server() {
    let h = host();
    let vm = h.vm("ident-owner").await;
    // NS_GET_OWNER_UID on the VM's user namespace: the VM's own root uid, never host root.
    let ns = std::fs::File::open(format!("/proc/{}/ns/user", vm.host_pid())).unwrap();
    let mut owner: libc::uid_t = u32::MAX;
    const NS_GET_OWNER_UID: libc::c_ulong = 0xb704;
    // SAFETY: the ioctl writes one uid_t into `owner`.
    let r = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&ns), NS_GET_OWNER_UID, &mut owner) };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    assert_eq!(owner, host_uids(&vm).0);
}

#[tokio::test]
async fn escape_the_shared_base_appears_owned_by_the_vms_root() {
    let h = host();
    let vm = h.vm("ident-base").await;
    // The base layer is idmapped per VM: /etc is root's inside every VM, not nobody's.
    assert_eq!(sh(&vm, "stat -c '%u %g' /etc /etc/passwd /home").await, "0 0\n0 0\n0 0\n");
    // ...and still read-only for the VM user.
    let r = run(&vm, "echo x >> /etc/passwd").await;
    assert_ne!(r.exit_code, 0);
}

/// Python one-liner run in a VM: opens inotify instances until the kernel refuses; prints the
/// count and the error.
const INOTIFY_FLOOD: &str = r#"python3 -c '
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
n = 0
while n < 100000:
    if libc.inotify_init1(0) < 0:
        print(n, os.strerror(ctypes.get_errno())); break
    n += 1
else:
    print(n, "no limit")
'"#;

#[tokio::test]
async fn escape_inotify_budget_is_per_vm() {
    let h = host();
    let (a, b) = (h.vm("inotify-a").await, h.vm("inotify-b").await);
    let flooded = sh(&a, &format!("{INOTIFY_FLOOD} & {INOTIFY_FLOOD}; wait")).await;
    assert!(flooded.contains("Too many open files"), "the flood was not stopped: {flooded}");
    // While those processes are gone again, hold the budget with a live flood and probe others.
    let holder = a
        .spawn("python3", &["-c".into(), "import ctypes,time\nl=ctypes.CDLL(None)\nfds=[l.inotify_init1(0) for _ in range(1000)]\nprint('held', flush=True)\ntime.sleep(60)".into()], Default::default())
        .await
        .unwrap();
    let output = |pid| {
        let chunks = a.process_output(pid, None).unwrap_or_default();
        String::from_utf8_lossy(&chunks.iter().flat_map(|c| c.data.to_vec()).collect::<Vec<u8>>()).into_owned()
    };
    common::eventually(10, "the flood to hold the budget", || async { output(holder).contains("held") }).await;
    let probe = run(&a, "python3 -c 'import ctypes; print(ctypes.CDLL(None).inotify_init1(0))'").await.stdout;
    assert_eq!(probe, "-1\n", "the attacker still got an instance; holder said {:?}", output(holder));
    assert_eq!(sh(&b, "python3 -c 'import ctypes; print(ctypes.CDLL(None).inotify_init1(0) >= 0)'").await, "True\n");
    // The host's root (this test process) is unaffected.
    // SAFETY: inotify_init1 returns a new descriptor or -1.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    assert!(fd >= 0, "host inotify_init1 failed: {}", std::io::Error::last_os_error());
    // SAFETY: closing the descriptor just opened.
    unsafe { libc::close(fd) };
    a.kill_process(holder).unwrap();
}

#[tokio::test]
async fn escape_pipe_buffer_budget_is_per_vm() {
    let h = host();
    let (a, b) = (h.vm("pipes-a").await, h.vm("pipes-b").await);
    // pipe-user-pages-soft (16384 pages) is per user: 1200 full-size pipes exceed it, after which
    // the same user's new pipes shrink to one page. Three processes hold 400 each (a process may
    // hold 1024 descriptors).
    let hold = "python3 -c 'import os,time\np=[os.pipe() for _ in range(400)]\ntime.sleep(60)'";
    let holder =
        a.spawn("sh", &["-c".into(), format!("{hold} & {hold} & {hold} & wait")], Default::default()).await.unwrap();
    common::eventually(10, "the attacker to exhaust its own pipe budget", || async {
        run(&a, "python3 -c 'import os,fcntl; exit(0 if fcntl.fcntl(os.pipe()[0], 1032) < 65536 else 1)'")
            .await
            .exit_code
            == 0
    })
    .await;
    // F_GETPIPE_SZ (1032) in another VM: still the full 64 KiB.
    assert_eq!(sh(&b, "python3 -c 'import os,fcntl; print(fcntl.fcntl(os.pipe()[0], 1032))'").await, "65536\n");
    a.kill_process(holder).unwrap();
}

#[tokio::test]
async fn escape_message_queue_budget_is_per_vm() {
    let h = host();
    let (a, b) = (h.vm("mq-a").await, h.vm("mq-b").await);
    const MQ_FLOOD: &str = r#"python3 -c '
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
n = 0
while n < 10000:
    if libc.mq_open(("/q%d" % n).encode(), os.O_CREAT | os.O_RDWR, 0o600, None) < 0:
        print(n, os.strerror(ctypes.get_errno())); break
    n += 1
else:
    print(n, "no limit")
'"#;
    let flooded = sh(&a, MQ_FLOOD).await;
    assert!(!flooded.contains("no limit"), "no message queue limit: {flooded}");
    // The queues stay (they outlive processes); another VM can still create its own.
    let other = sh(&b, "python3 -c 'import ctypes,os; print(ctypes.CDLL(None).mq_open(b\"/mine\", os.O_CREAT|os.O_RDWR, 0o600, None) >= 0)'").await;
    assert_eq!(other, "True\n");
}

#[tokio::test]
async fn escape_files_of_an_old_shared_range_are_moved_into_the_vms_own() {
    // (Reuse of a destroyed VM's range is covered by the unit tests of `uid_ranges`.)
    // A directory written under another range (an older agentvm used 100000 for every VM) is
    // moved into the VM's own range at boot, and the VM user still owns its files.
    let h = host();
    let dir = h.host.vm_dir("legacy");
    std::fs::create_dir_all(dir.join("upper/home/user")).unwrap();
    std::fs::create_dir_all(dir.join("work")).unwrap();
    std::fs::write(dir.join("upper/home/user/old"), "kept\n").unwrap();
    for (path, id) in [
        ("upper", 100_000),
        ("work", 100_000),
        ("upper/home", 100_000),
        ("upper/home/user", 101_000),
        ("upper/home/user/old", 101_000),
    ] {
        std::os::unix::fs::chown(dir.join(path), Some(id), Some(id)).unwrap();
    }
    let vm = h.vm("legacy").await;
    assert_eq!(sh(&vm, "cat /home/user/old && stat -c %u /home/user/old && id -u").await, "kept\n1000\n1000\n");
    sh(&vm, "echo more >> /home/user/old").await;
}

/// Whether `needle` is anywhere in the writable memory of process `pid` (read as root).
fn in_writable_memory(pid: i32, needle: &[u8]) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else { continue };
        if !perms.starts_with("rw") {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else { continue };
        let (start, end) = (u64::from_str_radix(start, 16).unwrap(), u64::from_str_radix(end, 16).unwrap());
        let mut region = vec![0u8; (end - start) as usize];
        if mem.seek(SeekFrom::Start(start)).is_err() || mem.read_exact(&mut region).is_err() {
            continue;
        }
        if region.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
    }
    false
}

/// Every VM's init is a fork of the launcher, which holds nothing of the server: the server's
/// token is in no init's (nor the launcher's) environment, command line or memory, although
/// the server itself holds it.
#[tokio::test]
async fn escape_inits_inherit_nothing_of_the_server() {
    let token = "tok-3c1f9a7e-never-in-a-vm";
    let server = common::server::TestServer::start_with(&["--token", token]);
    let response = reqwest::Client::new()
        .post(format!("{}/gateway/vm/action/exec?rvt-method=getOrCreate&rvt-key=inherit", server.url))
        .header("x-rivet-token", token)
        .json(&serde_json::json!({"args": ["echo hi"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let inits = server.vm_inits();
    assert_eq!(inits.len(), 1, "one VM runs");
    let launcher = server.launcher().expect("the VM launcher runs");
    assert!(in_writable_memory(server.pid() as i32, token.as_bytes()), "the scan finds the server's own copy");
    for pid in [inits[0], launcher] {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let names: Vec<&[u8]> = environ
            .split(|&b| b == 0)
            .filter(|v| !v.is_empty())
            .map(|v| v.split(|&b| b == b'=').next().unwrap())
            .collect();
        assert_eq!(names, vec![&b"PATH"[..]], "process {pid} inherited more than PATH");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert!(!cmdline.windows(token.len()).any(|w| w == token.as_bytes()), "token in {pid}'s command line");
        assert!(!in_writable_memory(pid, token.as_bytes()), "the token is in the memory of process {pid}");
    }
    // PID 1 of the VM says what it is.
    assert!(std::fs::read(format!("/proc/{}/cmdline", inits[0])).unwrap().starts_with(b"agentvm\0vm-init\0"));
}
