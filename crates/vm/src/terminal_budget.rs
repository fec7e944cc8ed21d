//! The server-wide terminal budget: every running VM is guaranteed its terminals, and the host
//! keeps room for its own.
//!
//! The kernel has one pool of pseudo-terminals for the whole machine: `kernel.pty.max` (4096
//! here), of which `kernel.pty.reserve` (1024) can only be taken by the host's initial devpts.
//! Every other devpts instance, that is every VM's, draws from the remaining `max - reserve`
//! (3072), and the count includes terminals of every other non-initial instance on the host
//! (containers, other servers). Each VM's devpts is mounted with `max=` its
//! [`VmOptions::max_ptys`](crate::VmOptions::max_ptys), which bounds what the VM itself can
//! open, but nothing stops the sum of all VMs' `max=` from exceeding the shared pool: 12 VMs
//! opening 256 terminals each would leave none for a 13th VM's `openShell`.
//!
//! So a VM *reserves* its `max_ptys` from this budget when it boots and returns them when it
//! stops. The budget is `max - reserve - HOST_MARGIN`, read from `/proc/sys/kernel/pty/` when
//! the first VM boots; [`HOST_MARGIN`] is left for non-initial devpts instances that are not
//! ours. When a boot would overdraw the budget it fails with
//! [`VmError::ResourceExhausted`], saying how many
//! terminals running VMs hold, instead of some other VM's `openShell` failing later. A VM that
//! opens all of its own terminals gets `ENOSPC` from the kernel inside the VM, at its own limit.
//!
//! The budget is per server process: two servers on one machine do not see each other's
//! reservations (each still leaves the host its margin and the initial instance its reserve).
//!
//! **Raising the pool.** The kernel's default pool fits only ~350 running VMs with their default
//! 8 terminals each. A terminal costs nothing until it is opened, so before sizing the budget
//! the server raises `kernel.pty.max` to [`WANTED_PTY_MAX`] (enough for 16,000 such VMs) where
//! it may (real root) and logs it; where it may not, it logs once how many VMs the pool allows
//! and the `sysctl` that would allow more ([`raise_host_pool`]).

use std::sync::{Mutex, OnceLock};

use crate::error::{Result, VmError};

/// Terminals of the non-initial pool kept for devpts instances that are not agentvm's.
pub const HOST_MARGIN: u32 = 256;

/// What the server raises `kernel.pty.max` to where it may (see the module documentation):
/// `kernel.pty.reserve` and the host margin come on top of 16,000 VMs × 8 terminals.
pub const WANTED_PTY_MAX: u32 = 131_072;

/// The kernel's own ceiling for `kernel.pty.max` (`NR_UNIX98_PTY_MAX`).
const KERNEL_PTY_CEILING: u32 = 1 << 20;

/// Raises the host's terminal pool to [`WANTED_PTY_MAX`] when it is smaller and this process
/// may change it; otherwise says once what it allows and how to raise it. Runs (once) before
/// the budget is sized; a server calls it at start so the log says it early. Blocking.
pub fn raise_host_pool() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Some(max) = read_pty_setting("max") else { return };
        if max >= WANTED_PTY_MAX {
            return;
        }
        let wanted = WANTED_PTY_MAX.min(KERNEL_PTY_CEILING);
        match std::fs::write("/proc/sys/kernel/pty/max", wanted.to_string()) {
            Ok(()) => tracing::info!(
                from = max,
                to = wanted,
                "raised kernel.pty.max so that many VMs can have their terminals (a terminal costs nothing until opened)"
            ),
            Err(e) => {
                let budget = budget_for(Some(max), read_pty_setting("reserve"));
                tracing::warn!(
                    "the host's terminal pool allows VMs {budget} terminals in all (about {} running VMs with the                      default {} each) and this server may not raise it ({e}); to allow more, run as root:                      sysctl -w kernel.pty.max={wanted}",
                    budget / crate::types::DEFAULT_MAX_PTYS,
                    crate::types::DEFAULT_MAX_PTYS,
                );
            }
        }
    });
}

/// The kernel's defaults, used where `/proc/sys/kernel/pty` cannot be read.
const KERNEL_DEFAULT_MAX: u32 = 4096;
const KERNEL_DEFAULT_RESERVE: u32 = 1024;

/// Terminals available to VMs and how many running VMs hold.
#[derive(Debug)]
pub struct TerminalBudget {
    total: u32,
    state: Mutex<Reserved>,
}

#[derive(Debug, Default)]
struct Reserved {
    terminals: u32,
    vms: u32,
}

/// Terminals one running VM holds; returned to the budget when dropped.
#[derive(Debug)]
pub struct TerminalLease {
    budget: &'static TerminalBudget,
    terminals: u32,
}

impl TerminalBudget {
    /// A budget of `total` terminals.
    pub fn new(total: u32) -> TerminalBudget {
        TerminalBudget { total, state: Mutex::new(Reserved::default()) }
    }

    /// The budget of this process, sized from the kernel's settings on first use.
    pub fn global() -> &'static TerminalBudget {
        static GLOBAL: OnceLock<TerminalBudget> = OnceLock::new();
        GLOBAL.get_or_init(|| {
            raise_host_pool();
            TerminalBudget::new(budget_for(read_pty_setting("max"), read_pty_setting("reserve")))
        })
    }

    /// Terminals VMs may reserve in total.
    pub fn total(&self) -> u32 {
        self.total
    }

    /// Terminals currently reserved by running VMs.
    pub fn reserved(&self) -> u32 {
        self.lock().terminals
    }

    /// Reserves `terminals` for one VM, or says why not.
    pub fn reserve(&'static self, terminals: u32) -> Result<TerminalLease> {
        let mut state = self.lock();
        let free = self.total - state.terminals;
        if terminals > free {
            return Err(VmError::ResourceExhausted(format!(
                "terminal budget exhausted: this VM needs {terminals} terminals (its max_ptys) but only {free} of the \
                 server's {} are free ({} held by {} running VMs; the host's pool is kernel.pty.max minus \
                 kernel.pty.reserve minus {HOST_MARGIN} kept for the host). Stop a VM or give VMs fewer terminals",
                self.total, state.terminals, state.vms
            )));
        }
        state.terminals += terminals;
        state.vms += 1;
        Ok(TerminalLease { budget: self, terminals })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Reserved> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl TerminalLease {
    /// Terminals this lease holds.
    pub fn terminals(&self) -> u32 {
        self.terminals
    }
}

impl Drop for TerminalLease {
    fn drop(&mut self) {
        let mut state = self.budget.lock();
        state.terminals -= self.terminals;
        state.vms -= 1;
    }
}

/// `max - reserve - HOST_MARGIN`, never below zero.
fn budget_for(max: Option<u32>, reserve: Option<u32>) -> u32 {
    let max = max.unwrap_or(KERNEL_DEFAULT_MAX);
    let reserve = reserve.unwrap_or(KERNEL_DEFAULT_RESERVE);
    max.saturating_sub(reserve).saturating_sub(HOST_MARGIN)
}

/// `/proc/sys/kernel/pty/<name>`.
fn read_pty_setting(name: &str) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/sys/kernel/pty/{name}")).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_leaves_the_reserve_and_a_margin() {
        assert_eq!(budget_for(Some(4096), Some(1024)), 4096 - 1024 - HOST_MARGIN);
        assert_eq!(budget_for(None, None), KERNEL_DEFAULT_MAX - KERNEL_DEFAULT_RESERVE - HOST_MARGIN);
        assert_eq!(budget_for(Some(100), Some(1024)), 0);
    }

    #[test]
    fn reservations_are_refused_past_the_budget_and_returned_on_drop() {
        let budget: &'static TerminalBudget = Box::leak(Box::new(TerminalBudget::new(100)));
        let a = budget.reserve(60).unwrap();
        let err = budget.reserve(41).unwrap_err().to_string();
        assert!(err.contains("terminal budget exhausted") && err.contains("only 40 of the server's 100"), "{err}");
        let b = budget.reserve(40).unwrap();
        assert_eq!(budget.reserved(), 100);
        drop(a);
        assert_eq!(budget.reserved(), 40);
        drop(b);
        assert_eq!(budget.reserved(), 0);
        assert!(budget.reserve(100).is_ok());
    }
}
