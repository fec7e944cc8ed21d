//! The seccomp policy every process of a VM runs under.
//!
//! Init installs it on itself (with `no_new_privs`) once the root filesystem is built and before
//! it serves the first request (see [`crate::init`]), so init, every command and every
//! descendant carry it; a filter can only be added to, never removed.
//!
//! The policy is a **deny list** on top of everything else a VM already is (its own user, PID,
//! mount, network and IPC namespaces; commands run as an unprivileged user with no capabilities
//! and an empty bounding set): it takes away kernel interfaces an unprivileged process could
//! still reach, and which either are shared with the host (keys, time, the kernel log), let a VM
//! create kernel objects the host budgets per user (namespaces), or are where most recent kernel
//! privilege escalations were found (io_uring, bpf, perf, userfaultfd, nested user namespaces).
//! An allow list like Firecracker's (its VMM's filters allow about 40 syscalls) does not fit:
//! a VM runs arbitrary programs.
//!
//! | System calls | Answer | Why | Docker default | flatpak / bubblewrap | Codex sandbox |
//! |---|---|---|---|---|---|
//! | `keyctl`, `add_key`, `request_key` | `EPERM` | Kernel keyrings are not namespaced: keys of one VM user were readable from another VM and a VM could fill the per-user key quota | denied | denied | allowed |
//! | `clone`/`unshare` with `CLONE_NEWUSER` | `EPERM` | A nested user namespace gives a process every capability over new namespaces: the way to mount, netlink and most namespace-creation exhaustion. Allowed with [`Policy::allow_nested_userns`] | denied (without `CAP_SYS_ADMIN`) | denied | allowed |
//! | `clone3` | `ENOSYS` | Its flags live in memory a filter cannot read; `ENOSYS` makes glibc (and Rust, Go, libuv) fall back to `clone`, whose flags are filtered. Allowed with nested user namespaces | `ENOSYS` | `ENOSYS` | allowed |
//! | `setns` | `EPERM` | Without nested namespaces there is nothing to enter (every VM namespace needs capabilities commands lack). Allowed with nested user namespaces | denied | denied | allowed |
//! | `mount`, `umount2`, `pivot_root`, `chroot` | `EPERM` | Need capabilities commands lack; denied so that only nested namespaces (when allowed) reach mount code | denied | denied | allowed |
//! | `fsopen`, `fsconfig`, `fsmount`, `fspick`, `move_mount`, `open_tree`, `open_tree_attr`, `mount_setattr` | `ENOSYS` | The new mount API: more mount-code surface, even with nested namespaces; `ENOSYS` makes util-linux fall back to `mount(2)` | denied (without `CAP_SYS_ADMIN`) | `ENOSYS` | allowed |
//! | `io_uring_setup`, `io_uring_enter`, `io_uring_register` | `ENOSYS` | A large source of kernel exploits (Google disables it in production, ChromeOS and Android); its operations bypass seccomp. `ENOSYS` is "kernel without io_uring": libuv, tokio and liburing users fall back to epoll/threads | denied | allowed | denied |
//! | `bpf` | `EPERM` | Verifier bugs; unprivileged BPF is off on most hosts anyway | denied | allowed | allowed |
//! | `perf_event_open` | `EPERM` | Frequent source of CVEs; leaks host-wide hardware events | denied | denied | allowed |
//! | `userfaultfd` | `EPERM` | Lets an exploit stall the kernel mid-copy to win races; no program a VM runs needs it (CRIU and QEMU post-copy do) | denied | allowed | allowed |
//! | `kexec_load`, `kexec_file_load`, `init_module`, `finit_module`, `delete_module` | `EPERM` | The host kernel is not the VM's | denied | allowed | allowed |
//! | `open_by_handle_at` | `EPERM` | Opens any inode of a file system by handle (the "shocker" container escape) | denied | allowed | allowed |
//! | `name_to_handle_at` | `ENOSYS` | Its handles are only useful to `open_by_handle_at`; tools that ask for a mount id fall back | allowed | allowed | allowed |
//! | `reboot` | `EPERM` | Would end the VM's PID namespace from inside; the host stops VMs | denied | allowed | allowed |
//! | `syslog` | `EPERM` | The kernel log is the host's | denied | denied | allowed |
//! | `settimeofday`, `clock_settime` | `EPERM` | The clock is the host's | denied | allowed | allowed |
//! | `adjtimex`, `clock_adjtime` | `EPERM` | Without `CAP_SYS_TIME` they only read the host clock's NTP state (`ntp_gettime`), which no VM program needs; not worth the surface | allowed | allowed | allowed |
//! | `acct`, `swapon`, `swapoff`, `quotactl`, `quotactl_fd`, `lookup_dcookie` | `EPERM` | Host-wide administration | denied | `acct`, `quotactl` denied | allowed |
//! | `fanotify_init` | `EPERM` | Unprivileged fanotify is new surface and another per-user budget; inotify remains | denied | allowed | allowed |
//! | `move_pages`, `migrate_pages`, `mbind`, `set_mempolicy`, `set_mempolicy_home_node`, `get_mempolicy` | `EPERM` | NUMA placement: no use on a VM's shared cores, a history of refcount bugs, and `move_pages`/`migrate_pages` act on other processes | denied | denied | allowed |
//! | `personality` other than `PER_LINUX`, `PER_LINUX32`, `UNAME26` and the query `0xffffffff` | `EPERM` | `READ_IMPLIES_EXEC`, `MMAP_PAGE_ZERO` and `ADDR_NO_RANDOMIZE` weaken exploit mitigations | same allow list | same | allowed |
//! | `ioctl` `TIOCSTI`, `TIOCLINUX` | `EPERM` | Typing into a terminal's input queue (CVE-2017-5226, CVE-2023-28100) | allowed | denied | allowed |
//! | x86: `iopl`, `ioperm`, `modify_ldt`, `uselib`, `_sysctl`, `ustat`, `sysfs` | `EPERM` | Port I/O, 16-bit segments and obsolete interfaces | denied but `modify_ldt` | `modify_ldt`, `uselib` denied | allowed |
//! | x86-64: every x32-ABI system call (number with bit 30 set) | `ENOSYS` | The x32 table has its own numbers for the calls above; no VM program is x32 | same rules, translated by libseccomp | same rules | not covered |
//! | x86-64: every 32-bit (`int 0x80`) system call | process killed | seccompiler's architecture check; the i386 table would need its own copy of every rule, and a VM runs the host's 64-bit userland | same rules, translated by libseccomp | same rules | killed |
//!
//! **`ptrace` stays allowed**, as in Docker since Linux 4.8: the PID namespace confines it to
//! the VM's own processes; the usual checks refuse init (in privileged mode it runs as another
//! user; in rootless mode it holds capabilities its children lack), commands are all the same
//! user without capabilities; since Linux 4.8 the kernel re-runs seccomp after a tracer changed
//! a system call, so tracing cannot get around this filter; and `strace`/`gdb` are everyday tools
//! for a coding agent. (Codex denies it; flatpak only outside development mode.)
//! `process_vm_readv`/`writev`, `kcmp` and `pidfd_getfd` follow `ptrace`'s rules and stay too.
//!
//! Errnos: `EPERM` where the operation exists but is refused (what the kernel itself answers
//! without the capability), `ENOSYS` where callers are known to fall back to an older interface
//! when the new one is missing.
//!
//! The filter is built for the architecture agentvm was compiled for (x86-64 or aarch64, through
//! seccompiler's [`TargetArch`]); on any other, building it fails and the VM does not start.
//! seccompiler compiles one match action per filter, so the policy becomes one filter per
//! answer; the kernel runs all of them and the filters never disagree (each system call is
//! denied by at most one). Calls a filter always allows are served from the kernel's per-filter
//! action cache (Linux 5.11+) without running it.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

/// Switches of the policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// Allow user namespaces (and with them `clone3`, `setns`, `mount`, `umount2`,
    /// `pivot_root`, `chroot`) for nested containers; see [`crate::config::Confinement`].
    pub allow_nested_userns: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("no seccomp policy for the {0} architecture (agentvm supports x86_64 and aarch64)")]
    UnsupportedArch(&'static str),
    #[error("building the seccomp filter: {0}")]
    Build(#[from] seccompiler::BackendError),
    #[error("installing the seccomp filter: {0}")]
    Install(#[from] seccompiler::Error),
}

/// The BPF programs of the policy, ready to install.
#[derive(Debug, Clone)]
pub struct Filters {
    programs: Vec<BpfProgram>,
}

impl Filters {
    /// Total BPF instructions (at most 4096 per program).
    pub fn instructions(&self) -> usize {
        self.programs.iter().map(Vec::len).sum()
    }

    /// Installs every program on the calling thread, after setting `no_new_privs` (which
    /// children inherit, and which an unprivileged process needs to install a filter). Init is
    /// single-threaded, so no thread synchronisation is needed.
    pub fn install(&self) -> Result<(), SeccompError> {
        for program in &self.programs {
            seccompiler::apply_filter(program)?;
        }
        Ok(())
    }
}

/// How a denied call fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Answer {
    Eperm,
    Enosys,
}

impl Answer {
    fn errno(self) -> u32 {
        match self {
            Answer::Eperm => libc::EPERM as u32,
            Answer::Enosys => libc::ENOSYS as u32,
        }
    }
}

/// When a listed call is denied.
#[derive(Debug, Clone, Copy)]
enum When {
    Always,
    /// Argument `arg` has every bit of `flags` set.
    FlagsSet {
        arg: u8,
        flags: u64,
    },
    /// The 32-bit argument `arg` is none of these values.
    NoneOf {
        arg: u8,
        values: &'static [u64],
    },
    /// The 32-bit argument `arg` equals `value` (an ioctl request).
    Equals {
        arg: u8,
        value: u64,
    },
}

/// One line of the policy.
struct Denial {
    nr: i64,
    answer: Answer,
    when: When,
}

/// `open_tree_attr` (Linux 6.15): the libc crate has no constant yet. Since Linux 5.1 new system
/// calls get the same number on every architecture.
const SYS_OPEN_TREE_ATTR: i64 = 467;

/// `personality` values programs legitimately set: `PER_LINUX`, `PER_LINUX32`, `UNAME26`,
/// `PER_LINUX32 | UNAME26`, and `0xffffffff`, which only queries.
const SAFE_PERSONALITIES: &[u64] = &[0x0, 0x8, 0x0002_0000, 0x0002_0008, 0xffff_ffff];

/// The policy's lines for these switches (see the table in the module documentation).
fn denials(policy: Policy) -> Vec<Denial> {
    use Answer::{Enosys, Eperm};
    let always = |nr: i64, answer: Answer| Denial { nr, answer, when: When::Always };
    let mut list = Vec::new();
    let eperm_always: &[i64] = &[
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_open_by_handle_at,
        libc::SYS_reboot,
        libc::SYS_syslog,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_adjtimex,
        libc::SYS_acct,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_quotactl,
        libc::SYS_quotactl_fd,
        libc::SYS_lookup_dcookie,
        libc::SYS_fanotify_init,
        libc::SYS_move_pages,
        libc::SYS_migrate_pages,
        libc::SYS_mbind,
        libc::SYS_set_mempolicy,
        libc::SYS_set_mempolicy_home_node,
        libc::SYS_get_mempolicy,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_iopl,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_ioperm,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_modify_ldt,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_uselib,
        #[cfg(target_arch = "x86_64")]
        libc::SYS__sysctl,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_ustat,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_sysfs,
    ];
    list.extend(eperm_always.iter().map(|&nr| always(nr, Eperm)));
    let enosys_always: &[i64] = &[
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_name_to_handle_at,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        SYS_OPEN_TREE_ATTR,
        libc::SYS_mount_setattr,
    ];
    list.extend(enosys_always.iter().map(|&nr| always(nr, Enosys)));
    list.push(Denial {
        nr: libc::SYS_personality,
        answer: Eperm,
        when: When::NoneOf { arg: 0, values: SAFE_PERSONALITIES },
    });
    for request in [libc::TIOCSTI, libc::TIOCLINUX] {
        #[allow(clippy::unnecessary_cast, reason = "`libc::Ioctl` is `c_ulong` with glibc but `c_int` with musl")]
        let value = request as u64;
        list.push(Denial { nr: libc::SYS_ioctl, answer: Eperm, when: When::Equals { arg: 1, value } });
    }
    if !policy.allow_nested_userns {
        let newuser = When::FlagsSet { arg: 0, flags: libc::CLONE_NEWUSER as u64 };
        list.push(Denial { nr: libc::SYS_clone, answer: Eperm, when: newuser });
        list.push(Denial { nr: libc::SYS_unshare, answer: Eperm, when: newuser });
        list.push(always(libc::SYS_clone3, Enosys));
        for nr in [libc::SYS_setns, libc::SYS_mount, libc::SYS_umount2, libc::SYS_pivot_root, libc::SYS_chroot] {
            list.push(always(nr, Eperm));
        }
    }
    list
}

/// The architecture the filter is built for: the one agentvm was compiled for.
fn target_arch() -> Result<TargetArch, SeccompError> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(TargetArch::x86_64),
        "aarch64" => Ok(TargetArch::aarch64),
        other => Err(SeccompError::UnsupportedArch(other)),
    }
}

/// Compiles the policy.
pub fn build(policy: Policy) -> Result<Filters, SeccompError> {
    let arch = target_arch()?;
    let mut by_answer: BTreeMap<Answer, BTreeMap<i64, Vec<SeccompRule>>> = BTreeMap::new();
    for denial in denials(policy) {
        let rules = by_answer.entry(denial.answer).or_default().entry(denial.nr).or_default();
        if let Some(rule) = rule_for(denial.when)? {
            rules.push(rule);
        }
    }
    let mut programs = Vec::new();
    for (answer, rules) in by_answer {
        let filter = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(answer.errno()), arch)?;
        programs.push(BpfProgram::try_from(filter)?);
    }
    if arch == TargetArch::x86_64 {
        programs.push(x32_guard());
    }
    Ok(Filters { programs })
}

/// The seccompiler rule for a condition; `None` for an unconditional denial (an empty rule list
/// matches every call).
fn rule_for(when: When) -> Result<Option<SeccompRule>, SeccompError> {
    let condition = |arg, len, op, value| SeccompCondition::new(arg, len, op, value);
    let rule = match when {
        When::Always => return Ok(None),
        When::FlagsSet { arg, flags } => {
            SeccompRule::new(vec![condition(arg, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(flags), flags)?])?
        }
        When::NoneOf { arg, values } => SeccompRule::new(
            values
                .iter()
                .map(|&v| condition(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, v))
                .collect::<Result<_, _>>()?,
        )?,
        When::Equals { arg, value } => {
            SeccompRule::new(vec![condition(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)?])?
        }
    };
    Ok(Some(rule))
}

/// A filter refusing every x32-ABI system call with `ENOSYS`.
///
/// Written by hand because seccompiler matches exact system call numbers and cannot express "any
/// number with bit 30 set"; x32 calls carry the x86-64 audit architecture, so its own
/// architecture check lets them through, and the x32 table numbers some calls differently
/// (`kexec_load` is 528 there). Six instructions: load the architecture, skip unless x86-64, load
/// the number, refuse if it is at least `__X32_SYSCALL_BIT`, otherwise allow.
fn x32_guard() -> BpfProgram {
    use seccompiler::sock_filter;
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const OFFSET_NR: u32 = 0; // struct seccomp_data { int nr; __u32 arch; ... }
    const OFFSET_ARCH: u32 = 4;
    const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000; // EM_X86_64 | 64BIT | LE
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    let ins = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    vec![
        ins(LD_W_ABS, 0, 0, OFFSET_ARCH),
        ins(JEQ_K, 0, 3, AUDIT_ARCH_X86_64),
        ins(LD_W_ABS, 0, 0, OFFSET_NR),
        ins(JGE_K, 0, 1, X32_SYSCALL_BIT),
        ins(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        ins(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` in a forked child after installing the policy; returns the child's exit code.
    fn in_filtered_child(policy: Policy, f: impl FnOnce() -> i32) -> i32 {
        let filters = build(policy).unwrap();
        // SAFETY: the child only makes system calls and exits; the test harness's other threads
        // are not touched.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let code = if filters.install().is_ok() { f() } else { 99 };
                // SAFETY: leave the child without running the parent's destructors.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => match nix::sys::wait::waitpid(child, None).unwrap() {
                nix::sys::wait::WaitStatus::Exited(_, code) => code,
                other => panic!("child ended with {other:?}"),
            },
        }
    }

    fn errno_of(result: libc::c_long) -> i32 {
        if result == -1 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        } else {
            0
        }
    }

    #[test]
    fn builds_small_filters_for_both_switches() {
        for allow_nested_userns in [false, true] {
            let filters = build(Policy { allow_nested_userns }).unwrap();
            assert!(filters.instructions() < 1024, "{} instructions", filters.instructions());
        }
    }

    #[test]
    fn denies_with_the_documented_answers() {
        let code = in_filtered_child(Policy::default(), || {
            // SAFETY: raw system calls with harmless arguments; denied ones never reach the kernel.
            unsafe {
                let checks = [
                    (errno_of(libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0)), libc::EPERM),
                    (errno_of(libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER)), libc::EPERM),
                    (errno_of(libc::syscall(libc::SYS_clone3, 0, 0)), libc::ENOSYS),
                    (errno_of(libc::syscall(libc::SYS_io_uring_setup, 1, 0)), libc::ENOSYS),
                    (errno_of(libc::syscall(libc::SYS_personality, 0x0040_0000)), libc::EPERM),
                    (errno_of(libc::syscall(libc::SYS_personality, 0xffff_ffffu32)), 0),
                    (errno_of(libc::syscall(libc::SYS_getppid)), 0),
                    #[cfg(target_arch = "x86_64")]
                    (errno_of(libc::syscall(libc::SYS_keyctl | 0x4000_0000, 0, 0, 0, 0, 0)), libc::ENOSYS),
                ];
                checks.iter().position(|(got, want)| got != want).map_or(0, |i| 10 + i as i32)
            }
        });
        assert_eq!(code, 0, "check {} failed", code - 10);
    }

    #[test]
    fn nested_userns_switch_allows_unshare() {
        let code = in_filtered_child(Policy { allow_nested_userns: true }, || {
            // SAFETY: clone3 with a null argument fails with EFAULT/EINVAL in the kernel (not
            // ENOSYS from the filter) and creates nothing.
            let clone3 = errno_of(unsafe { libc::syscall(libc::SYS_clone3, 0, 0) });
            i32::from(clone3 == libc::ENOSYS)
        });
        assert_eq!(code, 0);
    }
}
