//! Stopping a VM: a graceful shutdown through init, and the teardown that kills init (and with
//! it every process), reaps it and removes the cgroups when the last handle goes.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use agentvm_sandbox::cgroup::VmCgroup;
use agentvm_sandbox::launch::InitProcess;
use agentvm_sandbox::protocol::Request;

use crate::control::Outgoing;

use super::{Vm, VmInner};

impl Vm {
    /// Stops the VM: SIGTERM to every process, up to `grace` for them to exit, then SIGKILL to
    /// what is left; removes its cgroups. Files stay. Idempotent.
    pub async fn shutdown(&self, grace: Duration) {
        if self.is_running() {
            let grace_ms = grace.as_millis().min(u64::MAX as u128) as u64;
            let _ = self.inner.outgoing.send(Outgoing { request: Request::Shutdown { grace_ms }, fds: Vec::new() });
            let inner = Arc::clone(&self.inner);
            let waited = tokio::task::spawn_blocking(move || inner.init.wait_blocking());
            let _ = tokio::time::timeout(grace + Duration::from_secs(1), waited).await;
        }
        let inner = Arc::clone(&self.inner);
        let _ = tokio::task::spawn_blocking(move || inner.teardown()).await;
        // Every process and shell ended with init: wait until their pumps have published the
        // exits, so that whoever announces the stop (`vmShutdown`) does so after them.
        let _ = tokio::time::timeout(EXITS_WAIT, self.exits_published()).await;
    }

    /// Resolves once every spawned process and every shell has published its exit (after the
    /// VM stopped, they all do, with 137 for those killed with it).
    pub async fn exits_published(&self) {
        let processes = self.inner.shared.processes.lock().unwrap().spawned();
        for record in processes {
            record.wait().await;
        }
        let shells = self.inner.shared.shells.lock().unwrap().all();
        for record in shells {
            record.wait().await;
        }
    }
}

/// How long a stop waits for the exits of processes killed with the VM to be published (their
/// pumps drain what is left in the pipes first).
const EXITS_WAIT: Duration = Duration::from_secs(5);

impl VmInner {
    pub(super) fn teardown(&self) {
        if self.torn_down.swap(true, Ordering::AcqRel) {
            return;
        }
        {
            let mut pending = self.shared.pending.lock().unwrap();
            self.shared.alive.store(false, Ordering::Release);
            pending.clear();
        }
        teardown(&self.init, self.cgroup.as_ref());
        self.shared.stopped.send_replace(true);
        if self.shared.owns_events {
            self.shared.events.close();
        }
    }
}

impl Drop for VmInner {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Kills init (and with it every process of the VM), reaps it and removes the cgroups.
pub(super) fn teardown(init: &InitProcess, cgroup: Option<&VmCgroup>) {
    init.kill();
    if let Err(e) = init.wait_blocking() {
        tracing::warn!("reaping a VM's init: {e}");
    }
    if let Some(cgroup) = cgroup {
        if let Err(e) = cgroup.remove() {
            tracing::warn!("removing a VM's cgroups: {e}");
        }
    }
}
