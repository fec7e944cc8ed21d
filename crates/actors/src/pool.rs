//! Warm pools: VMs booted ahead of time for a preset (`warm_pool = N` in its config table), so
//! that `getOrCreate` of a new key is answered by a VM that is already running.
//!
//! A pooled VM is an ordinary VM of its preset (its limits, environment, network policy,
//! cgroups, own uid range and own directory) that nobody has used: no client action ever
//! reached it. When a new key takes it, the key's actor gets its id, directory and running VM,
//! and the pool boots a fresh one in its place. A pooled VM is never given to a second key and
//! never returns to the pool, so it shares nothing with any other VM: what one key does in its
//! VM is never visible to the next key that takes one from the pool.
//!
//! What differs from a VM booted for the key: its host name is `agentvm` (not made from the key)
//! until its first sleep and wake, and a `createWithInput` with options is always booted for the
//! key (the pool's VMs have the preset's own settings). Pooled VMs do not count toward
//! `--max-vms`; at most [`MAX_POOL`] per preset are kept. Their directories carry a marker
//! file, and those of a server that stopped without cleaning up are removed at the next start.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use agentvm_vm::{EventLog, Vm, VmOptions};
use sha2::{Digest, Sha256};

use crate::actors::{blocking, Actors};
use crate::error::ActorError;
use crate::preset::{ClientOptions, Preset};

/// Most VMs one preset's pool keeps.
pub const MAX_POOL: usize = 64;

/// The file in a pooled VM's directory that says nobody has taken it yet.
const MARKER: &str = "pooled";

/// The host name of a pooled VM (it does not know its key yet).
const POOLED_HOSTNAME: &str = "agentvm";

/// Waits before booting again after a pooled VM failed to boot.
const RETRY: Duration = Duration::from_secs(5);

/// A running, unused VM of a preset.
pub(crate) struct Pooled {
    pub id: String,
    pub vm: Vm,
    /// The VM's event log: the actor that takes the VM takes it too.
    pub events: Arc<EventLog>,
}

/// Every preset's pool.
#[derive(Default)]
pub(crate) struct Pools {
    ready: Mutex<HashMap<String, VecDeque<Pooled>>>,
    /// Wakes the refill tasks when a VM was taken.
    taken: tokio::sync::Notify,
}

impl Pools {
    /// A ready VM of preset `name`, if its pool has one.
    pub fn take(&self, name: &str) -> Option<Pooled> {
        let taken = self.ready.lock().unwrap().get_mut(name)?.pop_front();
        if taken.is_some() {
            self.taken.notify_waiters();
        }
        taken
    }

    /// Puts back a VM that was taken but not used (its key was created concurrently).
    pub fn give_back(&self, name: &str, pooled: Pooled) {
        self.ready.lock().unwrap().entry(name.to_string()).or_default().push_front(pooled);
    }

    fn ready_count(&self, name: &str) -> usize {
        self.ready.lock().unwrap().get(name).map_or(0, VecDeque::len)
    }

    /// Every pooled VM, removed from the pools (the server shuts down).
    pub fn drain(&self) -> Vec<Pooled> {
        self.ready.lock().unwrap().drain().flat_map(|(_, vms)| vms).collect()
    }
}

/// Keeps every preset's pool full until the server shuts down (its task is then aborted).
pub(crate) async fn refill_forever(actors: Weak<Actors>) {
    loop {
        let Some(strong) = actors.upgrade() else { return };
        let wanted: Vec<Arc<Preset>> = strong.presets().iter().filter(|p| p.warm_pool > 0).map(Arc::clone).collect();
        if wanted.is_empty() || strong.is_shutting_down() {
            return;
        }
        let taken = strong.pools().taken.notified();
        tokio::pin!(taken);
        taken.as_mut().enable();
        let mut failed = false;
        for preset in &wanted {
            while strong.pools().ready_count(&preset.name) < preset.warm_pool.min(MAX_POOL) {
                if strong.is_shutting_down() {
                    return;
                }
                match boot_pooled(&strong, preset).await {
                    Ok(pooled) => strong.pools().give_back(&preset.name, pooled),
                    Err(e) => {
                        tracing::warn!(preset = %preset.name, "booting a VM for the warm pool: {e}");
                        failed = true;
                        break;
                    }
                }
            }
        }
        if failed {
            tokio::time::sleep(RETRY).await;
        } else {
            taken.await;
        }
    }
}

/// Boots one VM for `preset`'s pool under a new id.
async fn boot_pooled(actors: &Actors, preset: &Arc<Preset>) -> Result<Pooled, ActorError> {
    let id = new_id();
    let dir = actors.vms_dir().join(&id);
    let marker = dir.join(MARKER);
    blocking(move || {
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&marker, b""))
            .map_err(|source| ActorError::Io { context: format!("creating {}", dir.display()), source })
    })
    .await??;
    let events = actors.new_event_log(0);
    let mut options = VmOptions {
        hostname: Some(POOLED_HOSTNAME.into()),
        events: Some(Arc::clone(&events)),
        exec_output_bytes: actors.settings().exec_output_bytes,
        ..preset.vm_options(&ClientOptions::default())
    };
    options.env.extend(crate::network::env_for(&preset.network));
    options.resolv_conf = crate::network::resolv_conf_for(&preset.network);
    let booted = async {
        let vm = actors.host().create_vm(&id, options).await?;
        if let Err(e) = crate::network::start(&vm, &preset.network, Arc::clone(&events)).await {
            vm.shutdown(Duration::ZERO).await;
            return Err(e);
        }
        Ok(vm)
    }
    .await;
    match booted {
        Ok(vm) => Ok(Pooled { id, vm, events }),
        Err(e) => {
            discard_dir(actors, id).await;
            Err(e)
        }
    }
}

/// Stops a pooled VM nobody took and deletes its files.
pub(crate) async fn discard(actors: &Actors, pooled: Pooled) {
    pooled.vm.shutdown(Duration::ZERO).await;
    drop(pooled.vm);
    discard_dir(actors, pooled.id).await;
}

async fn discard_dir(actors: &Actors, id: String) {
    let host = actors.host().clone();
    let removed = blocking(move || host.remove_vm_data(&id)).await;
    if let Ok(Err(e)) = removed {
        tracing::warn!("removing a pooled VM's files: {e}");
    }
}

/// Marks a pooled VM's directory as taken (it is an actor's now). Blocking.
pub(crate) fn mark_taken(dir: &Path) -> Result<(), ActorError> {
    match std::fs::remove_file(dir.join(MARKER)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ActorError::Io { context: format!("taking {} from the pool", dir.display()), source }),
    }
}

/// Ids of VM directories that still carry the pool's marker: VMs of an earlier server's pool
/// that no key took. Blocking.
pub(crate) fn leftovers(vms_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(vms_dir) else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| e.path().join(MARKER).exists())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect()
}

/// A fresh id shaped like the actors' own (hex), unique however many servers share the host.
fn new_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut hasher = Sha256::new();
    hasher.update(b"agentvm warm pool\0");
    hasher.update(std::process::id().to_ne_bytes());
    hasher.update(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_ne_bytes());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    hasher.update(now.as_nanos().to_ne_bytes());
    let mut id: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    id.truncate(crate::actors::ID_LEN);
    id
}
