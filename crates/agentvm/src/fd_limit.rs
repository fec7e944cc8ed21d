//! The server's own descriptor limit.
//!
//! Every awake VM costs the server a few descriptors (its control socket, its event log) and
//! every running process three pipes, every shell a terminal, every client a socket: thousands
//! under load, far above the soft `RLIMIT_NOFILE` most systems start programs with (1024). The
//! hard limit is what the administrator allows, so the server raises its soft limit to it at
//! start, as servers commonly do (nginx's `worker_rlimit_nofile`, systemd's own services).
//! Its children keep theirs: each VM's init sets its own limits (the sandbox's `limits`).

use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};

/// The kernel's ceiling for `RLIMIT_NOFILE` when the hard limit is "unlimited" (a soft limit
/// cannot be infinite for descriptors).
const NR_OPEN: &str = "/proc/sys/fs/nr_open";

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and logs both. A failure is logged and
/// the server runs on with the limit it has.
pub fn raise() {
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!("reading the descriptor limit (RLIMIT_NOFILE): {e}");
            return;
        }
    };
    let target = if hard == RLIM_INFINITY { kernel_ceiling().unwrap_or(soft) } else { hard };
    if target <= soft {
        tracing::info!("descriptor limit (RLIMIT_NOFILE): {soft}, already the hard limit ({hard})");
        return;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
        Ok(()) => tracing::info!("descriptor limit (RLIMIT_NOFILE) raised from {soft} to {target} (hard limit {hard})"),
        Err(e) => tracing::warn!("raising the descriptor limit (RLIMIT_NOFILE) from {soft} to {target}: {e}"),
    }
}

fn kernel_ceiling() -> Option<u64> {
    std::fs::read_to_string(NR_OPEN).ok()?.trim().parse().ok()
}
