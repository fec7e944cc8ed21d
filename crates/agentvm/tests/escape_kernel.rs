//! Escape battery: the kernel surface of a VM. Every process of a VM runs under agentvm's
//! seccomp policy, with no capability and an empty bounding set, within resource and namespace
//! limits set by its init, on sized tmpfs; and booting never follows links the VM planted in its
//! own files (SECURITY.md). Each test is one attempt from inside a VM, asserting the refusal and,
//! where it matters, that the VM itself, another VM and the host keep working.
//!
//! System calls are attempted through Python's ctypes. Where the kernel itself would refuse too,
//! the arguments are chosen so that it would answer differently (`EFAULT`, `EBADF`, success...),
//! so each assertion shows that the filter answered.
mod common;

use std::os::unix::fs::{lchown, symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use agentvm_sandbox::cgroup::CgroupLimits;
use agentvm_sandbox::config::{Confinement, TmpfsSize};
use agentvm_vm::{ExecOptions, ExecResult, SpawnOptions, Vm, VmOptions};
use bytes::Bytes;
use common::*;

/// Python that calls `syscall(2)` directly: `call(nr, *args)` returns `ok` or the errno's name.
/// Integer arguments are passed as C longs, `bytes` as pointers to their contents.
const PRELUDE: &str = r#"
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    return "ok" if r != -1 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
"#;

/// Runs a Python script in the VM (fed on stdin, so no quoting).
async fn python(vm: &Vm, script: &str) -> ExecResult {
    let options = ExecOptions { stdin: Some(Bytes::from(format!("{PRELUDE}{script}"))), ..Default::default() };
    vm.exec("python3 -", options).await.expect("exec")
}

/// Attempts each system call (number, Python argument list) and returns the answers in order.
async fn answers(vm: &Vm, calls: &[(i64, &str)]) -> Vec<String> {
    let script: String = calls.iter().map(|(nr, args)| format!("print(call({nr}, {args}))\n")).collect();
    let r = python(vm, &script).await;
    assert_eq!(r.exit_code, 0, "{r:?}");
    r.stdout.lines().map(str::to_string).collect()
}

/// The VM still runs commands.
async fn assert_alive(vm: &Vm) {
    assert_eq!(sh(vm, "echo alive").await, "alive\n");
}

fn confinement(edit: impl FnOnce(&mut Confinement)) -> VmOptions {
    let mut c = Confinement::default();
    edit(&mut c);
    VmOptions { confinement: Some(c), ..Default::default() }
}

// ---------------------------------------------------------------------------------------------
// Kernel keys

#[tokio::test]
async fn escape_keyctl_denied() {
    let h = host();
    let vm = h.vm("k-keyctl").await;
    // KEYCTL_GET_KEYRING_ID of the user keyring (the kernel answers with an id), and
    // KEYCTL_JOIN_SESSION_KEYRING "_uid.1000" (another VM's user keyring, in the original attack).
    let got = answers(&vm, &[(libc::SYS_keyctl, "0, -4, 1"), (libc::SYS_keyctl, "1, b'_uid.1000'")]).await;
    assert_eq!(got, ["EPERM", "EPERM"]);
    assert_alive(&vm).await;
}

#[tokio::test]
async fn escape_add_key_and_request_key_denied() {
    let h = host();
    let vm = h.vm("k-addkey").await;
    // Null pointers: the kernel would answer EFAULT.
    let got = answers(&vm, &[(libc::SYS_add_key, "0, 0, 0, 0, -3"), (libc::SYS_request_key, "0, 0, 0, -3")]).await;
    assert_eq!(got, ["EPERM", "EPERM"]);
    // With real arguments too: a key with a secret in the session keyring.
    let got = answers(&vm, &[(libc::SYS_add_key, "b'user', b'secret', b'hunter2', 7, -3")]).await;
    assert_eq!(got, ["EPERM"]);
}

#[tokio::test]
async fn escape_keyring_of_another_vm_unreadable() {
    let h = host();
    let (attacker, victim) = (h.vm("k-attacker").await, h.vm("k-victim").await);
    // The victim cannot even store a key, and the attacker sees no key of anyone.
    assert_eq!(answers(&victim, &[(libc::SYS_add_key, "b'user', b'token', b'secret', 6, -4")]).await, ["EPERM"]);
    let keys = sh(&attacker, "cat /proc/keys").await;
    assert_eq!(keys, "", "the attacker sees keys: {keys}");
    // Joining and reading the victim's user keyring by name (KEYCTL_JOIN_SESSION_KEYRING, then
    // KEYCTL_READ of the session keyring): refused.
    let got = answers(&attacker, &[(libc::SYS_keyctl, "1, b'_uid.1000'"), (libc::SYS_keyctl, "11, -3, 0, 0")]).await;
    assert_eq!(got, ["EPERM", "EPERM"]);
    assert_alive(&victim).await;
}

// ---------------------------------------------------------------------------------------------
// Namespaces

#[tokio::test]
async fn escape_unshare_user_namespace_denied() {
    let h = host();
    let vm = h.vm("k-unshare").await;
    // The kernel would allow this (unprivileged user namespaces are on here).
    assert_eq!(answers(&vm, &[(libc::SYS_unshare, &libc::CLONE_NEWUSER.to_string())]).await, ["EPERM"]);
    let r = run(&vm, "unshare -U true").await;
    assert_ne!(r.exit_code, 0, "{r:?}");
    assert!(r.stderr.contains("Operation not permitted"), "{r:?}");
    let r = run(&vm, "unshare -r id").await;
    assert_ne!(r.exit_code, 0, "{r:?}");
    // And the VM's own limit says the same: no namespace of any kind may be made inside.
    assert_eq!(sh(&vm, "cat /proc/sys/user/max_user_namespaces /proc/sys/user/max_uts_namespaces").await, "0\n0\n");
    assert_alive(&vm).await;
}

#[tokio::test]
async fn escape_clone_newuser_denied() {
    let h = host();
    let vm = h.vm("k-clone").await;
    // clone(CLONE_NEWUSER | SIGCHLD) like fork: a child would print a second line.
    let flags = libc::CLONE_NEWUSER | libc::SIGCHLD;
    let got = answers(&vm, &[(libc::SYS_clone, &format!("{flags}, 0, 0, 0, 0"))]).await;
    assert_eq!(got, ["EPERM"]);
}

#[tokio::test]
async fn escape_clone3_is_enosys_and_programs_fall_back() {
    let h = host();
    let vm = h.vm("k-clone3").await;
    // A null clone_args would be EINVAL from the kernel.
    assert_eq!(answers(&vm, &[(libc::SYS_clone3, "0, 0")]).await, ["ENOSYS"]);
    // glibc's pthread_create and posix_spawn try clone3 first and fall back to clone.
    let out = sh(
        &vm,
        "python3 -c 'import threading, subprocess; t = threading.Thread(target=print, args=(\"thread\",)); t.start(); t.join(); print(subprocess.run([\"echo\", \"spawned\"], capture_output=True, text=True).stdout, end=\"\")'; node -e 'require(\"child_process\").execFileSync(\"true\"); new (require(\"worker_threads\").Worker)(\"console.log(1+1)\", {eval: true})'",
    )
    .await;
    assert_eq!(out, "thread\nspawned\n2\n");
}

#[tokio::test]
async fn escape_setns_denied() {
    let h = host();
    let vm = h.vm("k-setns").await;
    // A bad descriptor would be EBADF from the kernel.
    let got =
        answers(&vm, &[(libc::SYS_setns, "-1, 0"), (libc::SYS_setns, &format!("-1, {}", libc::CLONE_NEWUSER))]).await;
    assert_eq!(got, ["EPERM", "EPERM"]);
}

#[tokio::test]
async fn escape_nested_namespaces_are_bounded_when_allowed() {
    let h = host();
    let nested = h.vm_with("k-nested", confinement(|c| c.allow_nested_userns = true)).await;
    // With the switch on, a user namespace works, and inside it the VM's limit (64 UTS
    // namespaces per VM user) stops a flood: held namespaces, ENOSPC at the limit.
    let r = python(
        &nested,
        &format!(
            "assert libc.unshare({newuser}) == 0, ctypes.get_errno()\n\
             held = []\n\
             while len(held) < 10000:\n\
             \x20   if libc.unshare({newuts}) != 0:\n\
             \x20       print(len(held), errno.errorcode[ctypes.get_errno()]); break\n\
             \x20   held.append(os.open('/proc/self/ns/uts', os.O_RDONLY))\n",
            newuser = libc::CLONE_NEWUSER,
            newuts = libc::CLONE_NEWUTS
        ),
    )
    .await;
    assert_eq!(r.stdout, "64 ENOSPC\n", "{r:?}");
    assert_eq!(sh(&nested, "unshare -U id -u").await, "65534\n");
    // The host and new VMs still get namespaces.
    let host_unshare = std::process::Command::new("unshare").args(["-u", "true"]).status().unwrap();
    assert!(host_unshare.success());
    assert_alive(&h.vm("k-nested-bystander").await).await;
}

// ---------------------------------------------------------------------------------------------
// Kernel attack surface

#[tokio::test]
async fn escape_io_uring_denied() {
    let h = host();
    let vm = h.vm("k-uring").await;
    // The kernel would answer EFAULT and EBADF; ENOSYS makes libraries fall back.
    let got = answers(
        &vm,
        &[
            (libc::SYS_io_uring_setup, "1, 0"),
            (libc::SYS_io_uring_enter, "-1, 0, 0, 0, 0, 0"),
            (libc::SYS_io_uring_register, "-1, 0, 0, 0"),
        ],
    )
    .await;
    assert_eq!(got, ["ENOSYS", "ENOSYS", "ENOSYS"]);
    // Node's libuv probes io_uring at start and uses its thread pool instead.
    assert_eq!(
        sh(&vm, "node -e 'require(\"fs\").readFile(\"/etc/hostname\", \"utf8\", (e, d) => console.log(d.trim()))'")
            .await,
        "k-uring\n"
    );
}

#[tokio::test]
async fn escape_bpf_denied() {
    let h = host();
    let vm = h.vm("k-bpf").await;
    // BPF_PROG_LOAD with no attributes, and BPF_MAP_CREATE.
    assert_eq!(answers(&vm, &[(libc::SYS_bpf, "5, 0, 0"), (libc::SYS_bpf, "0, 0, 0")]).await, ["EPERM", "EPERM"]);
}

#[tokio::test]
async fn escape_perf_event_open_denied() {
    let h = host();
    let vm = h.vm("k-perf").await;
    // A null attribute pointer would be EFAULT from the kernel.
    assert_eq!(answers(&vm, &[(libc::SYS_perf_event_open, "0, 0, -1, -1, 0")]).await, ["EPERM"]);
}

#[tokio::test]
async fn escape_kexec_denied() {
    let h = host();
    let vm = h.vm("k-kexec").await;
    // This kernel has no kexec: without the filter both would be ENOSYS.
    let got =
        answers(&vm, &[(libc::SYS_kexec_load, "0, 0, 0, 0"), (libc::SYS_kexec_file_load, "-1, -1, 0, 0, 0")]).await;
    assert_eq!(got, ["EPERM", "EPERM"]);
}

#[tokio::test]
async fn escape_module_loading_denied() {
    let h = host();
    let vm = h.vm("k-modules").await;
    let got = answers(
        &vm,
        &[
            (libc::SYS_init_module, "0, 0, b''"),
            (libc::SYS_finit_module, "-1, b'', 0"),
            (libc::SYS_delete_module, "b'overlay', 0"),
        ],
    )
    .await;
    assert_eq!(got, ["EPERM", "EPERM", "EPERM"]);
    assert!(Path::new("/sys/module/overlay").exists(), "the host's overlay module is still there");
}

#[tokio::test]
async fn escape_userfaultfd_denied() {
    let h = host();
    let vm = h.vm("k-uffd").await;
    // UFFD_USER_MODE_ONLY (1): the kernel would grant this one to anybody.
    assert_eq!(answers(&vm, &[(libc::SYS_userfaultfd, "1"), (libc::SYS_userfaultfd, "0")]).await, ["EPERM", "EPERM"]);
}

#[tokio::test]
async fn escape_open_by_handle_at_denied() {
    let h = host();
    let vm = h.vm("k-handles").await;
    // name_to_handle_at of / would succeed (or EOVERFLOW for a too small buffer) without the
    // filter; open_by_handle_at is the "shocker" escape.
    let got = answers(
        &vm,
        &[
            (
                libc::SYS_name_to_handle_at,
                "-100, b'/', ctypes.create_string_buffer(128), ctypes.create_string_buffer(8), 0",
            ),
            (libc::SYS_open_by_handle_at, "-100, ctypes.create_string_buffer(128), 0"),
        ],
    )
    .await;
    assert_eq!(got, ["ENOSYS", "EPERM"]);
}

#[tokio::test]
async fn escape_new_mount_api_denied() {
    let h = host();
    let vm = h.vm("k-mountapi").await;
    // open_tree without OPEN_TREE_CLONE would succeed; the others EPERM or EBADF.
    let got = answers(
        &vm,
        &[
            (libc::SYS_fsopen, "b'tmpfs', 0"),
            (libc::SYS_fspick, "-100, b'/', 0"),
            (libc::SYS_fsconfig, "-1, 0, 0, 0, 0"),
            (libc::SYS_fsmount, "-1, 0, 0"),
            (libc::SYS_open_tree, "-100, b'/', 0"),
            (libc::SYS_move_mount, "-1, b'', -1, b'', 0"),
            (libc::SYS_mount_setattr, "-1, b'', 0, 0, 0"),
            (467, "-100, b'/', 0, 0, 0"), // open_tree_attr
        ],
    )
    .await;
    assert!(got.iter().all(|a| a == "ENOSYS"), "{got:?}");
    assert_eq!(got.len(), 8);
}

#[tokio::test]
async fn escape_mount_denied() {
    let h = host();
    let vm = h.vm("k-mount").await;
    // Null paths would be EFAULT from the kernel (umount2, chroot look the path up first).
    let got = answers(
        &vm,
        &[
            (libc::SYS_mount, "0, 0, 0, 0, 0"),
            (libc::SYS_umount2, "0, 0"),
            (libc::SYS_chroot, "0"),
            (libc::SYS_pivot_root, "0, 0"),
        ],
    )
    .await;
    assert_eq!(got, ["EPERM", "EPERM", "EPERM", "EPERM"]);
    let r = run(&vm, "mkdir -p /tmp/m && mount -t tmpfs none /tmp/m").await;
    assert_ne!(r.exit_code, 0, "{r:?}");
}

#[tokio::test]
async fn escape_reboot_denied() {
    let h = host();
    let vm = h.vm("k-reboot").await;
    // LINUX_REBOOT_CMD_POWER_OFF with the right magic numbers.
    let got = answers(&vm, &[(libc::SYS_reboot, "0xfee1dead, 672274793, 0x4321FEDC, 0")]).await;
    assert_eq!(got, ["EPERM"]);
    assert_alive(&vm).await;
}

#[tokio::test]
async fn escape_syslog_denied() {
    let h = host();
    let vm = h.vm("k-syslog").await;
    // SYSLOG_ACTION_SIZE_BUFFER, SYSLOG_ACTION_READ_ALL.
    assert_eq!(
        answers(&vm, &[(libc::SYS_syslog, "10, 0, 0"), (libc::SYS_syslog, "3, 0, 0")]).await,
        ["EPERM", "EPERM"]
    );
    let r = run(&vm, "dmesg").await;
    assert_ne!(r.exit_code, 0, "{r:?}");
    assert_eq!(r.stdout, "");
}

#[tokio::test]
async fn escape_clock_setting_denied() {
    let h = host();
    let vm = h.vm("k-clock").await;
    // settimeofday(NULL, NULL) changes nothing and would succeed; the others would be EFAULT.
    let got = answers(
        &vm,
        &[(libc::SYS_settimeofday, "0, 0"), (libc::SYS_clock_settime, "0, 0"), (libc::SYS_clock_adjtime, "0, 0")],
    )
    .await;
    assert_eq!(got, ["EPERM", "EPERM", "EPERM"]);
    // Even reading the host clock's NTP state (modes 0: the kernel would answer).
    assert_eq!(answers(&vm, &[(libc::SYS_adjtimex, "ctypes.create_string_buffer(512)")]).await, ["EPERM"]);
    // Reading the time itself is untouched.
    assert_eq!(sh(&vm, "date +%Y | cut -c1-2").await, "20\n");
}

#[tokio::test]
async fn escape_host_administration_calls_denied() {
    let h = host();
    let vm = h.vm("k-admin").await;
    let mut calls = vec![
        (libc::SYS_acct, "b'/tmp/acct'"),
        (libc::SYS_swapon, "b'/tmp/swap', 0"),
        (libc::SYS_swapoff, "b'/tmp/swap'"),
        (libc::SYS_quotactl, "0, b'/', 0, 0"),
        (libc::SYS_quotactl_fd, "-1, 0, 0, 0"),
        (libc::SYS_lookup_dcookie, "0, 0, 0"),
    ];
    #[cfg(target_arch = "x86_64")]
    calls.extend([
        (libc::SYS_iopl, "3"),
        (libc::SYS_ioperm, "0, 1024, 1"),
        (libc::SYS_modify_ldt, "0, ctypes.create_string_buffer(16), 16"),
        (libc::SYS_uselib, "b'/lib/x'"),
        (libc::SYS_ustat, "0, ctypes.create_string_buffer(32)"),
        (libc::SYS_sysfs, "3"),
    ]);
    let got = answers(&vm, &calls).await;
    assert!(got.iter().all(|a| a == "EPERM"), "{got:?}");
    assert_eq!(got.len(), calls.len());
}

#[tokio::test]
async fn escape_fanotify_denied() {
    let h = host();
    let vm = h.vm("k-fanotify").await;
    // FAN_CLASS_NOTIF | FAN_REPORT_FID: the group an unprivileged user may create.
    assert_eq!(answers(&vm, &[(libc::SYS_fanotify_init, "0x200, 0")]).await, ["EPERM"]);
    assert_eq!(sh(&vm, "cat /proc/sys/user/max_fanotify_groups").await, "0\n");
    // inotify remains.
    assert_eq!(sh(&vm, "python3 -c 'import ctypes; print(ctypes.CDLL(None).inotify_init1(0) >= 0)'").await, "True\n");
}

#[tokio::test]
async fn escape_numa_policy_denied() {
    let h = host();
    let vm = h.vm("k-numa").await;
    // get_mempolicy(NULL...) and move_pages of zero pages would succeed.
    let got = answers(
        &vm,
        &[
            (libc::SYS_get_mempolicy, "0, 0, 0, 0, 0"),
            (libc::SYS_set_mempolicy, "0, 0, 0"),
            (libc::SYS_mbind, "0, 0, 0, 0, 0, 0"),
            (libc::SYS_move_pages, "0, 0, 0, 0, 0, 0"),
            (libc::SYS_migrate_pages, "1, 0, 0, 0"),
        ],
    )
    .await;
    assert_eq!(got, ["EPERM"; 5]);
}

#[tokio::test]
async fn escape_personality_flags_denied() {
    let h = host();
    let vm = h.vm("k-persona").await;
    // READ_IMPLIES_EXEC, MMAP_PAGE_ZERO, ADDR_NO_RANDOMIZE; the query and PER_LINUX still work.
    let got = answers(
        &vm,
        &[
            (libc::SYS_personality, "0x0400000"),
            (libc::SYS_personality, "0x0100000"),
            (libc::SYS_personality, "0x0040000"),
            (libc::SYS_personality, "0xffffffff"),
            (libc::SYS_personality, "0"),
        ],
    )
    .await;
    assert_eq!(got, ["EPERM", "EPERM", "EPERM", "ok", "ok"]);
    let r = run(&vm, "setarch -R true").await;
    assert_ne!(r.exit_code, 0, "ASLR could be turned off: {r:?}");
}

#[tokio::test]
async fn escape_tiocsti_denied() {
    let h = host();
    let vm = h.vm("k-tiocsti").await;
    // stdin is a pipe: the kernel would say ENOTTY.
    let got = answers(
        &vm,
        &[
            (libc::SYS_ioctl, &format!("0, {}, b'x'", libc::TIOCSTI)),
            (libc::SYS_ioctl, &format!("0, {}, b'x'", libc::TIOCLINUX)),
            (libc::SYS_ioctl, &format!("0, {}, ctypes.create_string_buffer(8)", libc::TIOCGWINSZ)),
        ],
    )
    .await;
    assert_eq!(got, ["EPERM", "EPERM", "ENOTTY"]);
}

#[cfg(target_arch = "x86_64")]
#[tokio::test]
async fn escape_i386_system_calls_kill_the_process() {
    let h = host();
    let vm = h.vm("k-i386").await;
    // `int 0x80` from 64-bit code enters the 32-bit system call table, whose numbers differ:
    // the classic way around a filter written for one table. mov eax, 20 (getpid); int 0x80; ret.
    let r = python(
        &vm,
        "import mmap\n\
         code = bytes([0xb8, 20, 0, 0, 0, 0xcd, 0x80, 0xc3])\n\
         buf = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n\
         buf.write(code)\n\
         f = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(buf)))\n\
         print('returned', f(), flush=True)\n",
    )
    .await;
    assert_eq!(r.exit_code, 128 + libc::SIGSYS, "{r:?}");
    assert_eq!(r.stdout, "");
    assert_alive(&vm).await;
}

// ---------------------------------------------------------------------------------------------
// Privileges

#[tokio::test]
async fn escape_ptrace_of_init_refused() {
    let h = host();
    let vm = h.vm("k-ptrace").await;
    // Tracing one's own child works (strace, gdb); init is out of reach.
    let r = python(
        &vm,
        "import signal, time\n\
         libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_long, ctypes.c_long]\n\
         def attach(pid):\n\
         \x20   ctypes.set_errno(0)\n\
         \x20   return 'ok' if libc.ptrace(16, pid, 0, 0) == 0 else errno.errorcode[ctypes.get_errno()]\n\
         child = os.fork()\n\
         if child == 0:\n\
         \x20   time.sleep(30); os._exit(0)\n\
         print('child', attach(child))\n\
         os.kill(child, signal.SIGKILL); os.waitpid(child, 0)\n\
         print('init', attach(1))\n",
    )
    .await;
    assert_eq!(r.stdout, "child ok\ninit EPERM\n", "{r:?}");
    let r = run(&vm, "strace -f -e trace=none true").await;
    assert_eq!(r.exit_code, 0, "strace no longer works: {r:?}");
    let r = run(&vm, "strace -p 1").await;
    assert_ne!(r.exit_code, 0, "{r:?}");
    assert_alive(&vm).await;
}

#[tokio::test]
async fn escape_setuid_programs_gain_nothing() {
    let h = host();
    let vm = h.vm("k-setuid").await;
    // su is set-user-id root on the host. With no_new_privs (and /usr nosuid, and host root not
    // mapped) it runs as the user: the dynamic loader is not in secure-execution mode, so it
    // tries an LD_PRELOAD path with a slash, which it ignores silently for a program that gained
    // privileges (ld.so(8)).
    assert!(std::fs::metadata("/usr/bin/su").unwrap().mode() & 0o4000 != 0);
    const PROBE: &str = "cannot be preloaded";
    let out = sh(
        &vm,
        &format!("grep NoNewPrivs /proc/self/status; LD_PRELOAD=/nonexistent/x.so /usr/bin/su --help 2>&1 >/dev/null | grep -c '{PROBE}'"),
    )
    .await;
    assert_eq!(out, "NoNewPrivs:\t1\n1\n");
    // The same probe on the host, as an unprivileged user: there su does gain root.
    let baseline = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--", "env", "LD_PRELOAD=/nonexistent/x.so"])
        .args(["/usr/bin/su", "--help"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&baseline.stderr).contains(PROBE), "the probe does not tell secure mode apart");
    let r = run(&vm, "su -c id root </dev/null").await;
    assert!(!r.stdout.contains("uid=0"), "{r:?}");
}

#[tokio::test]
async fn escape_capabilities_all_empty() {
    let h = host();
    let vm = h.vm("k-caps").await;
    let expected = "CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n\
                    CapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\n";
    let status = "grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/self/status";
    assert_eq!(sh(&vm, status).await, expected);
    // A spawned process and its grandchildren too.
    let mut sub = vm.subscribe(None);
    let pid = vm.spawn("sh", &["-c".into(), format!("sh -c \"{status}\"")], SpawnOptions::default()).await.unwrap();
    let (out, _, code) = collect_until_exit(&mut sub, pid, 10).await;
    assert_eq!((String::from_utf8_lossy(&out).as_ref(), code), (expected, 0));
    // Init keeps the capabilities it needs but can hand none on: its bounding set is empty.
    assert_eq!(sh(&vm, "grep CapBnd /proc/1/status").await, "CapBnd:\t0000000000000000\n");
}

#[tokio::test]
async fn escape_vm_limits_are_read_only_to_the_vm_user() {
    let h = host();
    let vm = h.vm("k-limits-ro").await;
    for file in
        ["/proc/sys/user/max_user_namespaces", "/proc/sys/user/max_inotify_instances", "/proc/sys/fs/mqueue/queues_max"]
    {
        let r = run(&vm, &format!("echo 100000 > {file}")).await;
        assert_ne!(r.exit_code, 0, "{file} is writable: {r:?}");
    }
    let r = run(&vm, "ulimit -Hn 4096").await;
    assert_ne!(r.exit_code, 0, "the open-files limit could be raised: {r:?}");
    let r = run(&vm, "ulimit -Hu 100000").await;
    assert_ne!(r.exit_code, 0, "the process limit could be raised: {r:?}");
}

// ---------------------------------------------------------------------------------------------
// Limits

#[tokio::test]
async fn escape_rlimits_hold() {
    let h = host();
    let vm = h.vm("k-rlimits").await;
    // open files, processes, POSIX message queue bytes, core dumps.
    assert_eq!(
        sh(&vm, "bash -c 'ulimit -n; ulimit -Hn; ulimit -u; ulimit -q; ulimit -c'").await,
        "1024\n1024\n512\n819200\n0\n"
    );
    let r = python(
        &vm,
        "fds = []\n\
         try:\n\
         \x20   while True: fds.append(os.open('/dev/null', os.O_RDONLY))\n\
         except OSError as e:\n\
         \x20   print(len(fds) + 3, errno.errorcode[e.errno])\n",
    )
    .await;
    assert_eq!(r.stdout, "1024 EMFILE\n", "{r:?}");
    assert_alive(&vm).await;
}

#[tokio::test]
async fn escape_filling_tmp_gets_enospc() {
    let h = host();
    // Default sizes: a quarter and an eighth of the 1 GiB memory limit.
    let vm = h.vm("k-tmp-defaults").await;
    assert_eq!(sh(&vm, "df -B1 --output=size /tmp /dev/shm | tail -n +2 | tr -d ' '").await, "268435456\n134217728\n");
    // Filling a small /tmp: bytes, then inodes.
    let small = TmpfsSize { bytes: 8 << 20, inodes: 256 };
    let vm = h.vm_with("k-tmp-full", confinement(|c| c.tmp = small)).await;
    let r = run(&vm, "head -c 16M /dev/zero > /tmp/fill").await;
    assert_ne!(r.exit_code, 0, "{r:?}");
    assert!(r.stderr.contains("No space left on device"), "{r:?}");
    assert_eq!(sh(&vm, "rm /tmp/fill; echo freed").await, "freed\n");
    let r = python(
        &vm,
        "n = 0\n\
         try:\n\
         \x20   while n < 100000: open('/tmp/f%d' % n, 'w').close(); n += 1\n\
         except OSError as e:\n\
         \x20   print(errno.errorcode[e.errno], n <= 256)\n",
    )
    .await;
    assert_eq!(r.stdout, "ENOSPC True\n", "{r:?}");
    // The VM keeps working, its disk too.
    assert_eq!(sh(&vm, "echo kept > /home/user/after && cat /home/user/after").await, "kept\n");
}

#[tokio::test]
async fn escape_filling_dev_shm_gets_enospc() {
    let h = host();
    let small = TmpfsSize { bytes: 4 << 20, inodes: 128 };
    let vm = h.vm_with("k-shm-full", confinement(|c| c.dev_shm = small)).await;
    let r = run(&vm, "head -c 8M /dev/zero > /dev/shm/fill").await;
    assert!(r.stderr.contains("No space left on device"), "{r:?}");
    // System V shared memory is capped at the same size.
    assert_eq!(sh(&vm, "cat /proc/sys/kernel/shmmax").await, format!("{}\n", 4 << 20));
    let r = python(
        &vm,
        "libc.shmget.restype = ctypes.c_int\n\
         print(libc.shmget(0, 8 << 20, 0o1600) == -1 and errno.errorcode[ctypes.get_errno()])\n",
    )
    .await;
    assert_eq!(r.stdout, "EINVAL\n", "{r:?}");
    assert_alive(&vm).await;
}

#[tokio::test]
async fn escape_oom_kills_commands_not_init() {
    let h = host();
    // 64 MiB of memory and a /tmp larger than that: memory that belongs to no process (a deleted
    // tmpfs file kept open) fills the VM. The OOM killer must pick a command, not init, whose
    // resident size is larger than the shell's and head's.
    let options = VmOptions {
        limits: CgroupLimits { memory_bytes: Some(64 << 20), ..agentvm_vm::DEFAULT_LIMITS },
        confinement: Some(Confinement { tmp: TmpfsSize { bytes: 1 << 30, inodes: 1024 }, ..Default::default() }),
        ..Default::default()
    };
    let vm = h.vm_with("k-oom", options).await;
    assert!(!vm.cgroup_dirs().is_empty(), "this test needs the memory cgroup (run as root)");
    assert_eq!(sh(&vm, "cat /proc/self/oom_score_adj /proc/1/oom_score_adj").await, "500\n0\n");
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        vm.exec("exec 3>/tmp/fill; rm /tmp/fill; head -c 1G /dev/zero >&3; echo head $?", ExecOptions::default()),
    )
    .await
    .expect("the filler was not stopped")
    .unwrap();
    // The OOM killer took the shell or head (the shell then reports head's death).
    assert!(r.exit_code == 137 || r.stdout == "head 137\n", "expected an OOM kill of a command: {r:?}");
    assert!(vm.is_running(), "init was killed");
    assert_eq!(sh(&vm, "echo alive; cat /proc/1/oom_score_adj").await, "alive\n0\n");
    // A command cannot put itself back below init.
    let r = run(&vm, "echo -1 > /proc/self/oom_score_adj").await;
    assert_ne!(r.exit_code, 0, "{r:?}");
}

#[tokio::test]
async fn escape_mqueue_exhaustion_stops_at_the_vm_limits() {
    let h = host();
    let (vm, other) = (h.vm("k-mq").await, h.vm("k-mq-other").await);
    assert_eq!(sh(&vm, "cat /proc/sys/fs/mqueue/queues_max").await, "64\n");
    // Default-sized queues stop at the bytes budget (RLIMIT_MSGQUEUE), tiny ones at queues_max.
    let r = python(
        &vm,
        "class Attr(ctypes.Structure):\n\
         \x20   _fields_ = [('flags', ctypes.c_long), ('maxmsg', ctypes.c_long), ('msgsize', ctypes.c_long), ('cur', ctypes.c_long), ('pad', ctypes.c_long * 4)]\n\
         def flood(prefix, attr):\n\
         \x20   n = 0\n\
         \x20   while n < 10000:\n\
         \x20       if libc.mq_open(('/%s%d' % (prefix, n)).encode(), os.O_CREAT | os.O_RDWR, 0o600, attr) < 0:\n\
         \x20           return n, errno.errorcode[ctypes.get_errno()]\n\
         \x20       n += 1\n\
         \x20   return n, 'no limit'\n\
         big, tiny = flood('big', None), flood('tiny', ctypes.byref(Attr(0, 1, 1, 0)))\n\
         print(big[1], big[0] < 16, tiny[1], big[0] + tiny[0])\n",
    )
    .await;
    assert_eq!(r.stdout, "EMFILE True ENOSPC 64\n", "{r:?}");
    // Another VM and the host still create queues.
    let r = python(&other, "print(libc.mq_open(b'/mine', os.O_CREAT | os.O_RDWR, 0o600, None) >= 0)\n").await;
    assert_eq!(r.stdout, "True\n", "{r:?}");
    let name = std::ffi::CString::new(format!("/agentvm-test-{}", std::process::id())).unwrap();
    // SAFETY: mq_open with a NUL-terminated name and default attributes; closed and removed below.
    let mq =
        unsafe { libc::mq_open(name.as_ptr(), libc::O_CREAT | libc::O_RDWR, 0o600, std::ptr::null::<libc::mq_attr>()) };
    assert!(mq >= 0, "the host cannot create a queue: {}", std::io::Error::last_os_error());
    // SAFETY: closing and unlinking the queue created above.
    unsafe {
        libc::mq_close(mq);
        libc::mq_unlink(name.as_ptr());
    }
}

#[tokio::test]
async fn escape_inotify_instances_stop_at_the_vm_limit() {
    let h = host();
    let (vm, other) = (h.vm("k-inotify").await, h.vm("k-inotify-other").await);
    let r = python(
        &vm,
        "held = []\n\
         while len(held) < 10000:\n\
         \x20   fd = libc.inotify_init1(0)\n\
         \x20   if fd < 0: break\n\
         \x20   held.append(fd)\n\
         print(len(held) <= 128, errno.errorcode[ctypes.get_errno()])\n",
    )
    .await;
    assert_eq!(r.stdout, "True EMFILE\n", "{r:?}");
    assert_eq!(
        sh(&vm, "cat /proc/sys/user/max_inotify_instances /proc/sys/user/max_inotify_watches").await,
        "128\n65536\n"
    );
    // The other VM and the host's root still get instances.
    assert_eq!(
        sh(&other, "python3 -c 'import ctypes; print(ctypes.CDLL(None).inotify_init1(0) >= 0)'").await,
        "True\n"
    );
    // SAFETY: inotify_init1 returns a new descriptor or -1; closed right away.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    assert!(fd >= 0, "the host's root cannot create an inotify instance: {}", std::io::Error::last_os_error());
    // SAFETY: closing the descriptor just opened.
    unsafe { libc::close(fd) };
}

// ---------------------------------------------------------------------------------------------
// Boot: links planted in the VM's own files

/// A host directory that a VM must never touch, writable by anyone so that following a link
/// into it would succeed.
struct Victim {
    dir: tempfile::TempDir,
}

impl Victim {
    fn new() -> Victim {
        let dir = tempfile::Builder::new().prefix("agentvm-victim-").tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        for file in ["hostname", "hosts"] {
            std::fs::write(dir.path().join(file), "original\n").unwrap();
            std::fs::set_permissions(dir.path().join(file), std::fs::Permissions::from_mode(0o666)).unwrap();
        }
        for sub in ["tmp", "proc"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
            std::fs::set_permissions(dir.path().join(sub), std::fs::Permissions::from_mode(0o777)).unwrap();
            std::fs::write(dir.path().join(sub).join("marker"), "").unwrap();
        }
        Victim { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    #[track_caller]
    fn assert_untouched(&self) {
        for file in ["hostname", "hosts"] {
            assert_eq!(std::fs::read_to_string(self.path(file)).unwrap(), "original\n", "the host's {file} changed");
        }
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["hostname", "hosts", "proc", "tmp"], "something was created on the host");
        for sub in ["tmp", "proc"] {
            let inside: Vec<_> = std::fs::read_dir(self.path(sub)).unwrap().collect();
            assert_eq!(inside.len(), 1, "the host's {sub} directory changed");
        }
    }
}

/// Replaces `path` (a file, a directory or nothing) with a symbolic link to `target`, owned like
/// `owner_of`.
fn plant(path: &Path, target: &Path, owner_of: &Path) {
    if let Ok(meta) = path.symlink_metadata() {
        if meta.is_dir() {
            std::fs::remove_dir_all(path).unwrap();
        } else {
            std::fs::remove_file(path).unwrap();
        }
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    symlink(target, path).unwrap();
    let owner = std::fs::metadata(owner_of).unwrap();
    lchown(path, Some(owner.uid()), Some(owner.gid())).unwrap();
}

/// What a booted VM must look like after the planted links: agentvm's files are its own again,
/// mount points are real mounts, the home link was left alone.
async fn assert_boot_repaired(vm: &Vm, hostname: &str, victim: &Victim) {
    let cwd = ExecOptions { cwd: Some("/".into()), ..Default::default() };
    let r = vm
        .exec(
            &format!(
                "cat /etc/hostname; test -L /etc/hostname || echo file; grep -c '^127.0.1.1.{hostname}$' /etc/hosts; \
                 stat -f -c %T /tmp /proc; readlink /home/user; cat /proc/sys/user/max_user_namespaces"
            ),
            cwd,
        )
        .await
        .unwrap();
    let expected = format!("{hostname}\nfile\n1\ntmpfs\nproc\n{}\n0\n", victim.path("newhome").display());
    assert_eq!(r.stdout, expected, "{r:?}");
    victim.assert_untouched();
}

#[tokio::test]
async fn escape_boot_never_follows_planted_links() {
    // Privileged mode: the VM user cannot write /etc or /proc, but the VM's files are the VM's;
    // links are planted in its layer directly.
    let h = host();
    let victim = Victim::new();
    let vm = h.vm("k-planted").await;
    assert_alive(&vm).await;
    vm.shutdown(Duration::from_millis(200)).await;
    drop(vm);
    let upper = h.host.layers_dir("k-planted").join("upper");
    plant(&upper.join("etc/hostname"), &victim.path("hostname"), &upper);
    plant(&upper.join("etc/hosts"), &victim.path("hosts"), &upper);
    plant(&upper.join("home/user"), &victim.path("newhome"), &upper);
    plant(&upper.join("tmp"), &victim.path("tmp"), &upper);
    plant(&upper.join("proc"), &victim.path("proc"), &upper);
    let vm = h.vm("k-planted").await;
    assert_boot_repaired(&vm, "k-planted", &victim).await;
}

/// The rootless attack as reported: the VM user replaces `/etc/hostname`, `/etc/hosts` and its
/// home with links to host paths of the server's user, and reboots. Run as `nobody` by
/// [`escape_rootless_boot_never_follows_planted_links`].
#[tokio::test]
#[ignore = "a helper: escape_rootless_boot_never_follows_planted_links runs it as `nobody`"]
async fn inner_rootless_boot_attack() {
    assert!(
        std::env::var_os("AGENTVM_ROOTLESS_INNER").is_some(),
        "run by escape_rootless_boot_never_follows_planted_links"
    );
    assert_ne!(nix::unistd::geteuid().as_raw(), 0, "must run unprivileged");
    let dir = tempfile::tempdir().unwrap();
    let victim = Victim::new();
    let init = std::env::var("AGENTVM_TEST_INIT").unwrap();
    let host = agentvm_vm::VmHost::new(agentvm_vm::HostConfig::new(dir.path().join("data"), init)).unwrap();
    let vm = host.create_vm("rootless-plant", Default::default()).await.unwrap();
    // The same confinement as a privileged VM.
    assert_eq!(
        sh(&vm, "grep -E '^(CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; ulimit -n").await,
        "CapBnd:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\n1024\n"
    );
    let attack = format!(
        "ln -sfn {hostname} /etc/hostname && ln -sfn {hosts} /etc/hosts && rm -rf /home/user && ln -s {home} /home/user",
        hostname = victim.path("hostname").display(),
        hosts = victim.path("hosts").display(),
        home = victim.path("newhome").display()
    );
    let r = vm.exec(&attack, ExecOptions { cwd: Some("/".into()), ..Default::default() }).await.unwrap();
    assert_eq!(r.exit_code, 0, "{r:?}");
    vm.shutdown(Duration::from_millis(200)).await;
    drop(vm);
    // Mount points cannot be replaced while mounted; plant those between boots.
    let upper = host.layers_dir("rootless-plant").join("upper");
    plant(&upper.join("tmp"), &victim.path("tmp"), &upper);
    plant(&upper.join("proc"), &victim.path("proc"), &upper);
    let vm = host.create_vm("rootless-plant", Default::default()).await.unwrap();
    assert_boot_repaired(&vm, "rootless-plant", &victim).await;
    vm.shutdown(Duration::from_millis(200)).await;
    drop(vm);
    host.remove_vm_data("rootless-plant").unwrap();
    println!("ROOTLESS-PLANT-OK");
}

#[test]
fn escape_rootless_boot_never_follows_planted_links() {
    // As in rootless.rs: copies of the binaries in a directory `nobody` can traverse.
    let bin = tempfile::Builder::new().prefix("agentvm-rootless-").tempdir().unwrap();
    std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = bin.path().join("escape-kernel-tests");
    let init = bin.path().join("agentvm");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_agentvm"), &init).unwrap();
    assert!(nix::unistd::geteuid().is_root(), "this test switches to nobody and must start as root");
    let output = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&exe)
        .args(["--ignored", "--exact", "inner_rootless_boot_attack", "--nocapture"])
        .env("AGENTVM_TEST_INIT", &init)
        .env("AGENTVM_ROOTLESS_INNER", "1")
        .env("HOME", "/tmp")
        .env("TMPDIR", "/tmp")
        .output()
        .expect("running the rootless attack");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("ROOTLESS-PLANT-OK"),
        "rootless run failed:\n{stdout}\n{stderr}"
    );
}
