//! Actors: each (namespace, name, key) is one actor, and each actor is one agentvm VM.
//!
//! Actors are recorded in the registry (SQLite), so after a restart every actor is known again,
//! asleep, and wakes on demand with its files. An actor's VM:
//!
//! - **boots** on the first action that needs it (concurrent first calls share one boot) and
//!   broadcasts `vmBooted`. Filesystem actions on a sleeping actor boot the VM *quietly*
//!   (no event) and let it sleep again quietly; the first other action announces it.
//! - **sleeps** after [`Lifecycle::idle_timeout`] without actions when no spawned process runs, no
//!   shell is open and no action is in flight, broadcasting `vmShutdown {reason: "sleep"}` first.
//! - on an unexpected end (its init died) broadcasts `vmShutdown {reason: "error"}`; the next
//!   action boots it again.
//! - on `destroy` broadcasts `vmShutdown {reason: "destroy"}`, then its VM and all its data go.
//!
//! Every actor has one event stream that outlives its VM's boots, so connections stay open
//! across sleep and wake; a background task persists the stream to the VM's own SQLite log.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agentvm_store::{EventStore, Registry, StoredEvent};
use agentvm_vm::{EventLog, Item, Retention, Subscription, Vm, VmEvent, VmHost, VmOptions};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::events;
use agentvm_protocol::keys::{self, Key};

/// Length of actor ids (lowercase hex), like the engine's 30-character ids.
const ID_LEN: usize = 30;
/// A quiet boot (for file actions) sleeps again after at most this long without actions.
const QUIET_IDLE: Duration = Duration::from_secs(5);
/// How long processes get to stop when a VM sleeps or is destroyed.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Lifecycle settings.
#[derive(Debug, Clone, Copy)]
pub struct Lifecycle {
    pub idle_timeout: Duration,
}

/// All actors of a server.
pub struct Actors {
    host: VmHost,
    registry: Registry,
    vms_dir: PathBuf,
    lifecycle: Lifecycle,
    by_id: Mutex<HashMap<String, Arc<Actor>>>,
}

pub struct Actor {
    pub id: String,
    pub namespace: String,
    pub name: String,
    pub key: Key,
    pub created_ms: u64,
    host: VmHost,
    events: Arc<EventLog>,
    store: Arc<Mutex<EventStore>>,
    state: tokio::sync::Mutex<State>,
    /// Actions running now (a long `waitProcess` keeps the VM awake).
    in_flight: AtomicUsize,
    last_activity: Mutex<Instant>,
    /// Set while the server itself stops the VM, so that its end is not reported as an error.
    stopping: AtomicBool,
    lifecycle: Lifecycle,
}

enum State {
    Asleep,
    Awake { vm: Vm, announced: bool },
}

impl Actors {
    /// Opens the registry and knows every recorded actor again (all asleep).
    pub fn load(host: VmHost, data_dir: &std::path::Path, lifecycle: Lifecycle) -> Result<Arc<Actors>, ApiError> {
        let registry = Registry::open(&data_dir.join("registry.sqlite3")).map_err(store_error)?;
        let actors = Arc::new(Actors {
            host,
            registry,
            vms_dir: data_dir.join("vms"),
            lifecycle,
            by_id: Mutex::new(HashMap::new()),
        });
        for record in actors.registry.live().map_err(store_error)? {
            let actor = actors.instantiate(
                record.actor_id,
                record.namespace,
                record.name,
                keys::from_rest(&record.key),
                record.created_ms,
            )?;
            actors.by_id.lock().unwrap().insert(actor.id.clone(), actor);
        }
        Ok(actors)
    }

    fn instantiate(
        &self,
        id: String,
        namespace: String,
        name: String,
        key: Key,
        created_ms: u64,
    ) -> Result<Arc<Actor>, ApiError> {
        let dir = self.vms_dir.join(&id);
        std::fs::create_dir_all(&dir).map_err(|e| ApiError::internal(format!("creating {}: {e}", dir.display())))?;
        let store = EventStore::open(&dir.join("vm.sqlite3")).map_err(store_error)?;
        let next_seq = store.next_seq().map_err(store_error)?;
        let events = EventLog::starting_at(Retention::default(), next_seq);
        let store = Arc::new(Mutex::new(store));
        tokio::spawn(persist(events.subscribe(Some(next_seq)), Arc::clone(&store)));
        Ok(Arc::new(Actor {
            id,
            namespace,
            name,
            key,
            created_ms,
            host: self.host.clone(),
            events,
            store,
            state: tokio::sync::Mutex::new(State::Asleep),
            in_flight: AtomicUsize::new(0),
            last_activity: Mutex::new(Instant::now()),
            stopping: AtomicBool::new(false),
            lifecycle: self.lifecycle,
        }))
    }

    /// The actor at this address; created when `create` is set. Returns it and whether it was new.
    pub fn resolve(
        &self,
        namespace: &str,
        name: &str,
        key: &[String],
        create: bool,
    ) -> Result<(Arc<Actor>, bool), ApiError> {
        let rest_key = keys::to_rest(key);
        if !create {
            let record = self.registry.find(namespace, name, &rest_key).map_err(store_error)?;
            return match record.and_then(|r| self.by_id.lock().unwrap().get(&r.actor_id).cloned()) {
                Some(actor) => Ok((actor, false)),
                None => Err(ApiError::actor_not_found()),
            };
        }
        let (record, created) = self
            .registry
            .get_or_create(namespace, name, &rest_key, now_ms(), |generation| {
                actor_id(namespace, name, key, generation)
            })
            .map_err(store_error)?;
        let mut by_id = self.by_id.lock().unwrap();
        if let Some(actor) = by_id.get(&record.actor_id) {
            return Ok((Arc::clone(actor), created));
        }
        let actor =
            self.instantiate(record.actor_id.clone(), namespace.into(), name.into(), key.to_vec(), record.created_ms)?;
        by_id.insert(record.actor_id, Arc::clone(&actor));
        Ok((actor, created))
    }

    pub fn by_id(&self, id: &str) -> Result<Arc<Actor>, ApiError> {
        self.by_id.lock().unwrap().get(id).cloned().ok_or_else(ApiError::actor_not_found)
    }

    /// Actors of `namespace`, optionally only those called `name`.
    pub fn list(&self, namespace: &str, name: Option<&str>) -> Vec<Arc<Actor>> {
        let mut list: Vec<Arc<Actor>> = self
            .by_id
            .lock()
            .unwrap()
            .values()
            .filter(|a| a.namespace == namespace && name.is_none_or(|n| a.name == n))
            .cloned()
            .collect();
        list.sort_by_key(|a| a.created_ms);
        list
    }

    pub fn all(&self) -> Vec<Arc<Actor>> {
        self.by_id.lock().unwrap().values().cloned().collect()
    }

    /// Destroys an actor: `vmShutdown {reason: "destroy"}`, its VM stopped, its registry row and
    /// all its data removed. A later `getOrCreate` of the same key gets a fresh VM (and id).
    pub async fn destroy(&self, actor: &Arc<Actor>) -> Result<(), ApiError> {
        actor.stop(Some("destroy")).await;
        self.registry.destroy(&actor.id).map_err(store_error)?;
        self.by_id.lock().unwrap().remove(&actor.id);
        actor.events.close();
        let (host, id) = (self.host.clone(), actor.id.clone());
        tokio::task::spawn_blocking(move || host.remove_vm_data(&id))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))??;
        Ok(())
    }

    /// Puts idle VMs to sleep; runs until the server stops.
    pub async fn sleep_idle_vms(self: Arc<Self>) {
        let period = (self.lifecycle.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        loop {
            tokio::time::sleep(period).await;
            for actor in self.all() {
                actor.sleep_if_idle().await;
            }
        }
    }
}

impl Actor {
    /// The actor's running VM, booting it if needed and announcing it (`vmBooted`) unless `quiet`.
    pub async fn vm(self: &Arc<Self>, quiet: bool) -> Result<Vm, ApiError> {
        let mut state = self.state.lock().await;
        if let State::Awake { vm, announced } = &mut *state {
            if vm.is_running() {
                if !quiet && !*announced {
                    *announced = true;
                    self.events.push(VmEvent::VmBooted);
                }
                return Ok(vm.clone());
            }
        }
        let options = VmOptions {
            // The key names the machine: `user@my-agent:~$` rather than a hash.
            hostname: Some(agentvm_vm::hostname_for(&self.key.join("-"))),
            events: Some(Arc::clone(&self.events)),
            ..VmOptions::default()
        };
        let vm = self.host.create_vm(&self.id, options).await?;
        tracing::info!(actor = %self.id, name = %self.name, key = %keys::to_rest(&self.key), quiet, "VM booted");
        if !quiet {
            self.events.push(VmEvent::VmBooted);
        }
        tokio::spawn(watch_for_crash(Arc::downgrade(self), vm.clone()));
        *state = State::Awake { vm: vm.clone(), announced: !quiet };
        Ok(vm)
    }

    /// Marks an action as running until the guard is dropped.
    pub fn activity(self: &Arc<Self>) -> ActivityGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        *self.last_activity.lock().unwrap() = Instant::now();
        ActivityGuard { actor: Arc::clone(self) }
    }

    /// Reads the actor's events from now on.
    pub fn subscribe(&self) -> Subscription {
        self.events.subscribe(None)
    }

    /// Events with `seq > after`, from the VM's durable log and what is not yet persisted.
    pub async fn events_after(&self, after: Option<u64>, limit: usize) -> Result<Vec<StoredEvent>, ApiError> {
        let store = Arc::clone(&self.store);
        let mut stored = tokio::task::spawn_blocking(move || store.lock().unwrap().read(after, limit))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(store_error)?;
        if stored.len() < limit {
            let from = stored.last().map(|e| e.seq + 1).or(after.map(|a| a + 1)).unwrap_or(0);
            for event in self.events.replay(from).into_iter().take(limit - stored.len()) {
                stored.push(to_stored(&event.event, event.seq));
            }
        }
        Ok(stored)
    }

    /// Stops the VM if it runs, broadcasting `vmShutdown` with `reason` if it had been
    /// announced (always for `destroy`). Files stay.
    pub async fn stop(&self, reason: Option<&str>) {
        let mut state = self.state.lock().await;
        let previous = std::mem::replace(&mut *state, State::Asleep);
        self.stopping.store(true, Ordering::Release);
        let announce = match (&previous, reason) {
            (_, Some("destroy")) => true,
            (State::Awake { announced, .. }, Some(_)) => *announced,
            _ => false,
        };
        if let (true, Some(reason)) = (announce, reason) {
            self.events.push(VmEvent::VmShutdown { reason: reason.to_string() });
        }
        if let State::Awake { vm, .. } = previous {
            vm.shutdown(STOP_GRACE).await;
        }
        self.stopping.store(false, Ordering::Release);
    }

    /// Sleeps the VM if it is awake and idle.
    async fn sleep_if_idle(&self) {
        let idle_for = self.last_activity.lock().unwrap().elapsed();
        let (busy, announced) = {
            let Ok(state) = self.state.try_lock() else { return };
            match &*state {
                State::Awake { vm, announced } => (vm.has_activity(), *announced),
                State::Asleep => return,
            }
        };
        let timeout = if announced { self.lifecycle.idle_timeout } else { self.lifecycle.idle_timeout.min(QUIET_IDLE) };
        if busy || self.in_flight.load(Ordering::Acquire) > 0 || idle_for < timeout {
            return;
        }
        tracing::info!(actor = %self.id, "VM idle: sleeping");
        self.stop(Some("sleep")).await;
    }

    /// The actor as the REST API describes it.
    pub fn record(&self) -> serde_json::Value {
        json!({
            "actor_id": self.id,
            "name": self.name,
            "key": keys::to_rest(&self.key),
            "namespace_id": self.namespace,
            "datacenter": "default",
            "runner_name_selector": "default",
            "crash_policy": "sleep",
            "create_ts": self.created_ms,
            "start_ts": self.created_ms,
            "pending_allocation_ts": null,
            "connectable_ts": self.created_ms,
            "sleep_ts": null,
            "reschedule_ts": null,
            "destroy_ts": null,
        })
    }
}

/// Keeps the actor's in-flight count while an action runs.
pub struct ActivityGuard {
    actor: Arc<Actor>,
}

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        *self.actor.last_activity.lock().unwrap() = Instant::now();
        self.actor.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Reports a VM that ended without the server stopping it (its init died).
async fn watch_for_crash(actor: Weak<Actor>, vm: Vm) {
    vm.stopped().await;
    let Some(actor) = actor.upgrade() else { return };
    if actor.stopping.load(Ordering::Acquire) {
        return;
    }
    let mut state = actor.state.lock().await;
    let ours = matches!(&*state, State::Awake { vm: current, .. } if !current.is_running());
    if ours && !actor.stopping.load(Ordering::Acquire) {
        tracing::warn!(actor = %actor.id, "VM ended unexpectedly");
        *state = State::Asleep;
        actor.events.push(VmEvent::VmShutdown { reason: "error".into() });
    }
}

/// Writes the actor's events to its VM's log, in batches, for as long as the stream lasts.
async fn persist(mut events: Subscription, store: Arc<Mutex<EventStore>>) {
    while let Some(item) = events.next().await {
        let mut batch = Vec::new();
        let mut next = Some(item);
        while let Some(item) = next.take() {
            match item {
                Item::Event(event) => batch.push(to_stored(&event.event, event.seq)),
                Item::Lagged { missed } => tracing::warn!(missed, "event log fell behind: events not persisted"),
            }
            if batch.len() < 256 {
                next = events.poll_now().flatten();
            }
        }
        let store = Arc::clone(&store);
        let written = tokio::task::spawn_blocking(move || store.lock().unwrap().append(&batch)).await;
        if let Ok(Err(e)) = written {
            tracing::error!("persisting events: {e}");
        }
    }
}

fn to_stored(event: &VmEvent, seq: u64) -> StoredEvent {
    let (name, payload) = events::to_wire(event);
    StoredEvent { seq, name: name.to_string(), payload: events::to_json(&payload), created_ms: now_ms() }
}

fn store_error(e: agentvm_store::StoreError) -> ApiError {
    ApiError::internal(format!("state store: {e}"))
}

/// A stable id for an address and generation: the same VM directory after a restart, a new one
/// after a destroy.
pub fn actor_id(namespace: &str, name: &str, key: &[String], generation: u64) -> String {
    let mut hasher = Sha256::new();
    for part in [namespace, name, &keys::to_rest(key), &generation.to_string()] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    let mut id: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    id.truncate(ID_LEN);
    id
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = actor_id("default", "vm", &["my-agent".into()], 0);
        assert_eq!(a.len(), ID_LEN);
        assert_eq!(a, actor_id("default", "vm", &["my-agent".into()], 0));
        assert_ne!(a, actor_id("default", "vm", &["my-agent".into()], 1));
        assert_ne!(a, actor_id("default", "vm", &["my-agent2".into()], 0));
        assert_ne!(a, actor_id("other", "vm", &["my-agent".into()], 0));
        assert_ne!(
            actor_id("default", "vm", &["a".into(), "b".into()], 0),
            actor_id("default", "vm", &["a/b".into()], 0)
        );
        assert!(agentvm_vm::validate_id(&a).is_ok());
    }
}
