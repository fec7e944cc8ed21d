//! Actors: each (namespace, name, key) is one actor, and each actor is one agentvm VM.
//!
//! Actors are recorded in the registry (SQLite), so after a restart every actor is known again,
//! asleep, and wakes on demand with its files. What happens to an actor's VM — boot, sleep,
//! crash, destroy — is the state machine of [`crate::lifecycle`]; this module supplies the work
//! of each step:
//!
//! - **boot** on the first action that needs it, broadcasting `vmBooted`. Filesystem actions on
//!   a sleeping actor boot the VM *quietly* (no event) and let it sleep again quietly; the first
//!   other action announces it.
//! - **sleep** after [`Settings::idle_timeout`] without actions when no spawned process runs, no
//!   shell is open and no action is in flight, broadcasting `vmShutdown {reason: "sleep"}` first.
//! - on an unexpected end (its init died) broadcast `vmShutdown {reason: "error"}`; the next
//!   action boots it again.
//! - on `destroy` broadcast `vmShutdown {reason: "destroy"}`, stop the VM, then remove the
//!   registry row and all its data. Actions meanwhile are refused.
//!
//! Every actor has one event stream that outlives its VM's boots, so connections stay open
//! across sleep and wake; a background task persists the stream to the VM's own SQLite log
//! ([`crate::events`]).
//!
//! Blocking work (SQLite, creating and deleting directories) runs on tokio's blocking pool,
//! never on the runtime's threads, and no lock is held across it except the membership lock
//! below, which only orders creations against removals.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agentvm_store::{EventRetention, Registry, Resolved, StoredEvent};
use agentvm_vm::{EventLog, Filter, Retention, Subscription, Vm, VmEvent, VmHost, VmOptions};
use sha2::{Digest, Sha256};

use crate::error::ActorError;
use crate::events::store::{self as event_store, EventFile};
use crate::lifecycle::{AcquireError, Lifecycle, Phase, Refusal};
use crate::limits::RateLimiter;
use crate::preset::{ClientOptions, Preset, Presets};
use agentvm_protocol::keys::{self, Key};
use agentvm_protocol::Value;

/// Length of actor ids (lowercase hex), like the engine's 30-character ids.
pub(crate) const ID_LEN: usize = 30;
/// A quiet boot (for file actions) sleeps again after at most this long without actions.
const QUIET_IDLE: Duration = Duration::from_secs(5);
/// How long processes get to stop when a VM sleeps or is destroyed.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Most event bytes numbered but not yet written to the log before output producers wait.
pub const EVENT_BACKLOG_BYTES: usize = 8 << 20;
/// How long output producers wait for a connection whose queue is full before it is detached
/// (and later told what it missed with `streamError`).
pub const EVENT_STALL_GRACE: Duration = Duration::from_secs(1);
/// How long tokio keeps an idle blocking thread (its default), plus a margin.
const BLOCKING_THREADS_LINGER: Duration = Duration::from_secs(12);
/// Idle VMs put to sleep at once by the idle sweep.
const PARALLEL_SLEEPS: usize = 32;
/// How long stopping a VM waits for its last events to be written.
const FLUSH_WAIT: Duration = Duration::from_secs(10);

/// Server settings that shape every actor.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub idle_timeout: Duration,
    /// Most live actors (registered VMs, awake or asleep).
    pub max_vms: u64,
    /// New actors per second (token bucket; 0 = unlimited) and the bucket's size.
    pub creates_per_second: f64,
    pub create_burst: u32,
    /// Most output `exec` keeps per stream.
    pub exec_output_bytes: usize,
    /// How much history each VM's durable event log keeps.
    pub event_retention: EventRetention,
    /// A connection's event queue is full at this many bytes (see `agentvm_vm::EventLog`).
    pub event_queue_bytes: usize,
}

/// (namespace, name, key in its REST form).
type Address = (String, String, String);

/// All actors of a server.
pub struct Actors {
    host: VmHost,
    /// What a VM of each actor name gets (the operator's config file).
    presets: Arc<Presets>,
    registry: Arc<Registry>,
    vms_dir: PathBuf,
    settings: Settings,
    creations: RateLimiter,
    /// Every live actor, by id and by address. Only map operations happen under this lock.
    index: Mutex<Index>,
    /// Creating an actor (registry row + index entry) holds it shared; removing one holds it
    /// exclusively for the registry delete and the index removal, so that a creation never
    /// sees a registry row whose actor is being removed from the index, or the reverse.
    membership: tokio::sync::RwLock<()>,
    /// Set once the server shuts down: no VM boots any more.
    shutting_down: Arc<AtomicBool>,
    /// When each cron job of every actor is next due.
    cron: crate::cron::Scheduler,
    /// Bounds how many VMs the scheduler wakes at once.
    cron_wakes: tokio::sync::Semaphore,
    /// VMs booted ahead of time for presets with a `warm_pool` (see [`crate::pool`]).
    pools: crate::pool::Pools,
    /// Set when an engine places actors (see [`Placement`]): who decides that an idle VM
    /// sleeps, and who learns that a client destroyed an actor.
    placement: std::sync::OnceLock<Placement>,
}

/// What a front end whose engine places actors must hear of (see [`Actors::placed_by`]).
pub struct Placement {
    /// Called with an idle actor instead of stopping its VM (at every check while it stays
    /// idle); the VM sleeps when whoever placed it calls [`Actor::stop`].
    pub idle: ActorHook,
    /// Called once a client's `destroy` action destroyed an actor here.
    pub destroyed: ActorHook,
}

/// A front end's function called with an actor (see [`Placement`]).
pub type ActorHook = Arc<dyn Fn(&Arc<Actor>) + Send + Sync>;

#[derive(Default)]
struct Index {
    by_id: HashMap<String, Arc<Actor>>,
    by_address: HashMap<Address, Arc<Actor>>,
}

impl Index {
    fn insert(&mut self, actor: &Arc<Actor>) {
        self.by_id.insert(actor.id.clone(), Arc::clone(actor));
        self.by_address.insert(actor.address(), Arc::clone(actor));
    }

    fn remove(&mut self, actor: &Arc<Actor>) {
        if self.by_id.get(&actor.id).is_some_and(|a| Arc::ptr_eq(a, actor)) {
            self.by_id.remove(&actor.id);
        }
        let address = actor.address();
        if self.by_address.get(&address).is_some_and(|a| Arc::ptr_eq(a, actor)) {
            self.by_address.remove(&address);
        }
    }
}

pub struct Actor {
    pub id: String,
    pub namespace: String,
    pub name: String,
    pub key: Key,
    pub created_ms: u64,
    /// What its VM gets; `None` when the server's config no longer defines the actor's name
    /// (its data stays readable, its VM does not boot).
    preset: Option<Arc<Preset>>,
    /// The agents its sessions can run (the server's registry).
    agents: Arc<agentvm_agents::Registry>,
    /// The VM's directory (`<data>/vms/<id>`): event log, client options.
    dir: PathBuf,
    host: VmHost,
    events: Arc<EventLog>,
    store: Arc<EventFile>,
    lifecycle: Arc<Lifecycle<Vm>>,
    /// Its agent sessions (live while the VM runs).
    sessions: crate::sessions::Sessions,
    /// Its cron jobs' runs in progress.
    cron: crate::cron::run::ActorCron,
    /// Its newest event (kept by the persister).
    last_event: Arc<Mutex<LastEvent>>,
    /// When its running VM booted.
    booted_ms: Mutex<Option<u64>>,
    /// The task writing events to the store; awaited by `destroy` before it deletes the files.
    persister: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Actions running now (a long `waitProcess` keeps the VM awake).
    in_flight: AtomicUsize,
    /// A running VM taken from the warm pool, until the first boot takes it (see [`crate::pool`]).
    adopted: Mutex<Option<Vm>>,
    last_activity: Mutex<Instant>,
    settings: Settings,
    shutting_down: Arc<AtomicBool>,
}

/// Runs blocking work on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, ActorError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| ActorError::Internal(format!("a blocking task failed: {e}")))
}

impl Actors {
    /// Opens the registry and knows every recorded actor again (all asleep), and plans their
    /// cron jobs on `clock` (see [`Actors::run_cron`]). Blocking: call it from a blocking
    /// context.
    pub fn load(
        host: VmHost,
        data_dir: &Path,
        settings: Settings,
        presets: Arc<Presets>,
        clock: Arc<dyn crate::cron::Clock>,
    ) -> Result<Arc<Actors>, ActorError> {
        let registry = Registry::open(&data_dir.join("registry.sqlite3"))?;
        let due = registry.cron_due()?;
        let actors = Arc::new(Actors {
            host,
            presets,
            registry: Arc::new(registry),
            vms_dir: data_dir.join("vms"),
            settings,
            creations: RateLimiter::new(settings.creates_per_second, settings.create_burst),
            index: Mutex::new(Index::default()),
            membership: tokio::sync::RwLock::new(()),
            shutting_down: Arc::default(),
            cron: crate::cron::Scheduler::new(clock),
            cron_wakes: tokio::sync::Semaphore::new(crate::cron::run::PARALLEL_WAKES),
            pools: crate::pool::Pools::default(),
            placement: std::sync::OnceLock::new(),
        });
        for (actor_id, job_id, due_ms) in due {
            actors.cron.plan(&actor_id, &job_id, Some(due_ms));
        }
        let live = actors.registry.live()?;
        // VMs an earlier server booted for its warm pools and no key took.
        for id in crate::pool::leftovers(&actors.vms_dir) {
            if !live.iter().any(|r| r.actor_id == id) {
                if let Err(e) = actors.host.remove_vm_data(&id) {
                    tracing::warn!("removing an unused pooled VM of an earlier run: {e}");
                }
            }
        }
        let mut loaded = Vec::new();
        for record in live {
            let dir = actors.vms_dir.join(&record.actor_id);
            let (next_seq, last_event) = prepare_files(&dir, settings.event_retention)?;
            let address = (record.namespace, record.name, record.key);
            let actor = actors.instantiate(record.actor_id, address, record.created_ms, dir, next_seq, None);
            *actor.last_event.lock().unwrap() = last_event;
            loaded.push(actor);
        }
        let mut index = actors.index.lock().unwrap();
        for actor in &loaded {
            index.insert(actor);
        }
        drop(index);
        for actor in loaded {
            // Needs a runtime: `load` runs in `spawn_blocking`, which has one.
            actor.start_persisting();
        }
        Ok(actors)
    }

    /// A new actor; `events`: the event log of the pooled VM it takes (see [`crate::pool`]).
    fn instantiate(
        &self,
        id: String,
        address: Address,
        created_ms: u64,
        dir: PathBuf,
        next_seq: u64,
        events: Option<Arc<EventLog>>,
    ) -> Arc<Actor> {
        let (namespace, name, rest_key) = address;
        let preset = self.presets.get(&name).ok();
        Arc::new(Actor {
            id,
            namespace,
            name,
            key: keys::from_rest(&rest_key),
            created_ms,
            preset,
            agents: Arc::clone(self.presets.agents()),
            dir: dir.clone(),
            host: self.host.clone(),
            events: events.unwrap_or_else(|| self.new_event_log(next_seq)),
            store: Arc::new(EventFile::new(dir.join("vm.sqlite3"), self.settings.event_retention)),
            lifecycle: Arc::default(),
            sessions: crate::sessions::Sessions::default(),
            cron: crate::cron::run::ActorCron::default(),
            last_event: Arc::default(),
            booted_ms: Mutex::new(None),
            persister: Mutex::new(None),
            in_flight: AtomicUsize::new(0),
            adopted: Mutex::new(None),
            last_activity: Mutex::new(Instant::now()),
            settings: self.settings,
            shutting_down: Arc::clone(&self.shutting_down),
        })
    }

    /// The actor at this address; created when `create` is set (within the server's caps on
    /// VMs and on creation rate), with the client's `input` (`createWithInput`; checked against
    /// the name's preset whenever given, used only when the actor is created). Returns it and
    /// whether it was new.
    pub async fn resolve(
        &self,
        namespace: &str,
        name: &str,
        key: &[String],
        create: bool,
        input: Option<&Value>,
    ) -> Result<(Arc<Actor>, bool), ActorError> {
        self.resolve_inner(namespace, name, key, create, input, None).await
    }

    /// The actor at this address, created if missing with the id `id` and creation time an
    /// engine that places actors gave it (or the host its state comes from, see
    /// [`crate::portable`]) and the client's `input`; an existing actor is returned as is,
    /// whatever its id.
    pub async fn resolve_as(
        &self,
        namespace: &str,
        name: &str,
        key: &[String],
        id: &str,
        created_ms: u64,
        input: Option<&Value>,
    ) -> Result<Arc<Actor>, ActorError> {
        agentvm_vm::validate_id(id)?;
        Ok(self.resolve_inner(namespace, name, key, true, input, Some((id.to_string(), created_ms))).await?.0)
    }

    async fn resolve_inner(
        &self,
        namespace: &str,
        name: &str,
        key: &[String],
        create: bool,
        input: Option<&Value>,
        restored: Option<(String, u64)>,
    ) -> Result<(Arc<Actor>, bool), ActorError> {
        let preset = self.presets.get(name)?;
        let client = input.map(|input| ClientOptions::from_input(input, &preset)).transpose()?.unwrap_or_default();
        let address: Address = (namespace.to_string(), name.to_string(), keys::to_rest(key));
        if let Some(actor) = self.index.lock().unwrap().by_address.get(&address) {
            return Ok((Arc::clone(actor), false));
        }
        if !create {
            return Err(ActorError::NotFound);
        }
        // Under an engine, a VM exists where the engine started it (see `resolve_as`).
        if self.placement.get().is_some() && restored.is_none() {
            return Err(ActorError::PlacedByEngine { name: name.to_string(), key: keys::to_rest(key) });
        }
        let _creating = self.membership.read().await;
        if let Some(actor) = self.index.lock().unwrap().by_address.get(&address) {
            return Ok((Arc::clone(actor), false));
        }
        self.creations.try_take().map_err(|retry_after| ActorError::RateLimited { retry_after })?;
        // A VM of the preset's warm pool, unless the client asked for its own settings (or the
        // actor's state comes from elsewhere).
        let pooled = if input.is_none() && restored.is_none() { self.take_pooled(name) } else { None };
        let pooled_id = pooled.as_ref().map(|p| p.id.clone());
        let (registry, vms_dir, max_vms) = (Arc::clone(&self.registry), self.vms_dir.clone(), self.settings.max_vms);
        let retention = self.settings.event_retention;
        let (ns, n, k) = address.clone();
        let key = key.to_vec();
        let (forced_id, created_ms) = match restored {
            Some((id, created_ms)) => (Some(id), created_ms),
            None => (pooled_id.clone(), now_ms()),
        };
        let resolved = blocking(move || -> Result<_, ActorError> {
            let make_id = |generation| forced_id.clone().unwrap_or_else(|| actor_id(&ns, &n, &key, generation));
            let resolved = registry.get_or_create(&ns, &n, &k, created_ms, max_vms, make_id)?;
            let record = match &resolved {
                Resolved::Existing(record) | Resolved::Created(record) => record,
                Resolved::Full { limit } => return Ok((Resolved::Full { limit: *limit }, PathBuf::new(), 0)),
            };
            let dir = vms_dir.join(&record.actor_id);
            let (next_seq, _) = prepare_files(&dir, retention)?;
            if matches!(resolved, Resolved::Created(_)) {
                if pooled_id.as_ref() == Some(&record.actor_id) {
                    crate::pool::mark_taken(&dir)?;
                }
                client.save(&dir)?;
            }
            Ok((resolved, dir, next_seq))
        })
        .await?;
        let (resolved, dir, next_seq) = match resolved {
            Ok(resolved) => resolved,
            Err(e) => {
                if let Some(pooled) = pooled {
                    self.pools.give_back(name, pooled);
                }
                return Err(e);
            }
        };
        let (record, created) = match resolved {
            Resolved::Existing(record) => (record, false),
            Resolved::Created(record) => (record, true),
            Resolved::Full { limit } => {
                if let Some(pooled) = pooled {
                    self.pools.give_back(name, pooled);
                }
                return Err(ActorError::TooManyVms { limit });
            }
        };
        // The pooled VM is the new actor's only if the registry took its id.
        let (adopted, unused) = match pooled {
            Some(p) if created && p.id == record.actor_id => (Some(p), None),
            other => (None, other),
        };
        if let Some(pooled) = unused {
            self.pools.give_back(name, pooled);
        }
        let actor = {
            let mut index = self.index.lock().unwrap();
            if let Some(existing) = index.by_id.get(&record.actor_id) {
                // A concurrent resolve of the same address got there first.
                return Ok((Arc::clone(existing), created));
            }
            let events = adopted.as_ref().map(|p| Arc::clone(&p.events));
            let actor = self.instantiate(record.actor_id, address, record.created_ms, dir, next_seq, events);
            index.insert(&actor);
            actor
        };
        actor.start_persisting();
        if let Some(pooled) = adopted {
            *actor.adopted.lock().unwrap() = Some(pooled.vm);
            // Awake at once, as if this request had booted it (an idle pooled VM is not kept
            // running by an actor that nobody asked to boot).
            if let Err(e) = actor.vm(false).await {
                tracing::warn!(actor = %actor.id, "starting a VM taken from the warm pool: {e}");
            }
        }
        Ok((actor, created))
    }

    /// A running VM from `name`'s warm pool, if it has one (dead ones are discarded).
    fn take_pooled(&self, name: &str) -> Option<crate::pool::Pooled> {
        while let Some(pooled) = self.pools.take(name) {
            if pooled.vm.is_running() {
                return Some(pooled);
            }
            let host = self.host.clone();
            tokio::spawn(async move {
                let id = pooled.id.clone();
                drop(pooled);
                let _ = blocking(move || host.remove_vm_data(&id)).await;
            });
        }
        None
    }

    /// An actor's event log, numbering from `next_seq`. Nothing is retained in memory for
    /// replay: `getVmEvents` reads the durable log.
    pub(crate) fn new_event_log(&self, next_seq: u64) -> Arc<EventLog> {
        let limits = Retention {
            bytes: 0,
            queue_bytes: self.settings.event_queue_bytes,
            stall_grace: EVENT_STALL_GRACE,
            backlog_bytes: EVENT_BACKLOG_BYTES,
        };
        EventLog::durable(limits, next_seq)
    }

    pub(crate) fn vms_dir(&self) -> &Path {
        &self.vms_dir
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    pub(crate) fn pools(&self) -> &crate::pool::Pools {
        &self.pools
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Keeps the warm pools of the presets that have one full, until the server shuts down.
    pub async fn run_pools(self: Arc<Self>) {
        crate::pool::refill_forever(Arc::downgrade(&self)).await
    }

    /// The host of every VM (its data directory's software layer answers `listAgents`).
    pub fn host(&self) -> &VmHost {
        &self.host
    }

    /// What a VM of each actor name gets.
    pub fn presets(&self) -> &Arc<Presets> {
        &self.presets
    }

    pub fn by_id(&self, id: &str) -> Result<Arc<Actor>, ActorError> {
        self.index.lock().unwrap().by_id.get(id).cloned().ok_or(ActorError::NotFound)
    }

    /// Actors of `namespace`, optionally only those called `name`.
    pub fn list(&self, namespace: &str, name: Option<&str>) -> Vec<Arc<Actor>> {
        let mut list: Vec<Arc<Actor>> = self
            .index
            .lock()
            .unwrap()
            .by_id
            .values()
            .filter(|a| a.namespace == namespace && name.is_none_or(|n| a.name == n))
            .cloned()
            .collect();
        list.sort_by_key(|a| a.created_ms);
        list
    }

    pub fn all(&self) -> Vec<Arc<Actor>> {
        self.index.lock().unwrap().by_id.values().cloned().collect()
    }

    /// The registry (the preview-token index of [`crate::preview`] and the cron index live
    /// in it).
    pub(crate) fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The plan of every cron job.
    pub fn cron(&self) -> &crate::cron::Scheduler {
        &self.cron
    }

    pub(crate) fn cron_wakes(&self) -> &tokio::sync::Semaphore {
        &self.cron_wakes
    }

    /// Runs cron jobs when they are due (waking their VMs); runs until the server stops. One
    /// loop for every VM: it waits on the cron clock for the soonest job and hands each due
    /// one to [`crate::cron::run`] in its own task.
    pub async fn run_cron(self: Arc<Self>) {
        loop {
            let now = self.cron.clock().now_ms();
            for ((actor_id, job_id), due_ms) in self.cron.take_due(now) {
                let actors = Arc::clone(&self);
                tokio::spawn(async move { crate::cron::run::fire(&actors, &actor_id, &job_id, due_ms).await });
            }
            self.cron.wait().await;
        }
    }

    /// Destroys an actor: `vmShutdown {reason: "destroy"}`, its VM stopped, its registry row and
    /// all its data removed. A later `getOrCreate` of the same key gets a fresh VM (and id).
    /// Runs to its end even if the caller goes away; a second call waits for the first.
    pub async fn destroy(self: &Arc<Self>, actor: &Arc<Actor>) -> Result<(), ActorError> {
        let (actors, target) = (Arc::clone(self), Arc::clone(actor));
        actor
            .lifecycle
            .destroy(move |vm| async move {
                // Stopped first, so that the exits of the processes it kills come before
                // `vmShutdown`, which is the last event the actor ever broadcasts.
                if let Some(vm) = vm {
                    vm.shutdown(STOP_GRACE).await;
                }
                target.events.push(VmEvent::VmShutdown { reason: "destroy".into() });
                tracing::info!(actor = %target.id, "destroying: VM stopped, removing its data");
                // From here on no VM of this actor runs, and none can boot (the phase is
                // `Destroying`): its files can go.
                {
                    let _removing = actors.membership.write().await;
                    let (registry, id) = (Arc::clone(&actors.registry), target.id.clone());
                    blocking(move || registry.destroy(&id)).await??;
                    actors.index.lock().unwrap().remove(&target);
                    actors.cron.forget_actor(&target.id);
                }
                target.events.close();
                let persister = target.persister.lock().unwrap().take();
                if let Some(persister) = persister {
                    let _ = persister.await;
                }
                let (host, id, store) = (actors.host.clone(), target.id.clone(), Arc::clone(&target.store));
                blocking(move || {
                    store.forget();
                    host.remove_vm_data(&id)
                })
                .await??;
                Ok(())
            })
            .await
    }

    /// From now on an engine places actors: an idle VM is not stopped by
    /// [`Actors::sleep_idle_vms`] but reported to `placement.idle`, and destroys by clients are
    /// reported to `placement.destroyed`. Set once.
    pub fn placed_by(&self, placement: Placement) {
        let _ = self.placement.set(placement);
    }

    /// Whether an engine places this host's actors.
    pub(crate) fn placed_by_engine(&self) -> bool {
        self.placement.get().is_some()
    }

    /// A client destroyed `actor` (its `destroy` action).
    pub(crate) fn destroyed_by_client(&self, actor: &Arc<Actor>) {
        if let Some(placement) = self.placement.get() {
            (placement.destroyed)(actor);
        }
    }

    /// Puts idle VMs to sleep; runs until the server stops.
    pub async fn sleep_idle_vms(self: Arc<Self>) {
        let period = (self.settings.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        // When VMs last went to sleep: memory is given back then, and once more after the
        // blocking threads that served them have ended (tokio keeps idle ones for 10 s).
        let mut trim_again_at: Option<Instant> = None;
        let idle_closes = || crate::events::store::IDLE_CLOSES.load(Ordering::Relaxed);
        let mut closes_seen = idle_closes();
        loop {
            tokio::time::sleep(period).await;
            // Stopping a VM takes a while (its processes get a grace period, its log is
            // flushed): stop the idle ones side by side, a bounded number at a time.
            let awake = self.all().into_iter().filter(|a| matches!(a.lifecycle.phase(), Phase::Awake { .. }));
            let mut slept = 0;
            let mut stops = tokio::task::JoinSet::new();
            for actor in awake {
                if stops.len() >= PARALLEL_SLEEPS {
                    slept += usize::from(stops.join_next().await.is_some_and(|r| r.unwrap_or(false)));
                }
                if let Some(placement) = self.placement.get() {
                    if actor.is_idle() {
                        (placement.idle)(&actor);
                    }
                    continue;
                }
                stops.spawn(async move { actor.sleep_if_idle().await });
            }
            while let Some(result) = stops.join_next().await {
                slept += usize::from(result.unwrap_or(false));
            }
            let again = trim_again_at.is_some_and(|at| Instant::now() >= at);
            // Idle awake VMs' logs closed meanwhile: what their connections held is free too.
            let closes = idle_closes();
            let closed = closes != closes_seen;
            closes_seen = closes;
            if slept > 0 || again || closed {
                // What the VMs' event streams and processes held is free now; give it back.
                let _ = blocking(crate::memory::release_free_memory).await;
                trim_again_at = (slept > 0).then(|| Instant::now() + BLOCKING_THREADS_LINGER);
            }
        }
    }

    /// The server shuts down: from now on no VM boots (actions that would need one fail with
    /// [`ActorError::ShuttingDown`]); every awake VM is stopped, its `vmShutdown` written to
    /// its log.
    pub async fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let mut stops = tokio::task::JoinSet::new();
        for actor in self.all() {
            stops.spawn(async move { actor.stop().await });
        }
        for pooled in self.pools.drain() {
            crate::pool::discard(self, pooled).await;
        }
        while stops.join_next().await.is_some() {}
    }
}

/// Creates an actor's directory and reads where its event numbering resumes, and its newest
/// event's name and time. Blocking.
fn prepare_files(dir: &Path, retention: EventRetention) -> Result<(u64, LastEvent), ActorError> {
    let database = dir.join("vm.sqlite3");
    if !database.exists() {
        std::fs::create_dir_all(dir)
            .map_err(|source| ActorError::Io { context: format!("creating {}", dir.display()), source })?;
        return Ok((0, None));
    }
    let store = EventFile::new(database, retention).open_store()?;
    Ok((store.next_seq(), store.last_event()?))
}

/// The name and time (ms since the epoch) of an actor's newest event.
pub type LastEvent = Option<(String, u64)>;

/// What an operator sees of an actor at a glance (the inspector's VM list).
#[derive(Debug, Clone, Default)]
pub struct Overview {
    /// "asleep", "awake"...
    pub phase: &'static str,
    /// When the running VM booted (ms since the epoch); `None` while asleep.
    pub booted_ms: Option<u64>,
    /// Memory, CPU time and processes from the VM's cgroups (awake, with cgroups).
    pub usage: Option<agentvm_vm::Usage>,
    pub last_event: LastEvent,
}

impl Actor {
    fn address(&self) -> Address {
        (self.namespace.clone(), self.name.clone(), keys::to_rest(&self.key))
    }

    /// Its agent sessions.
    pub fn sessions(&self) -> &crate::sessions::Sessions {
        &self.sessions
    }

    /// Its cron jobs' runs in progress.
    pub(crate) fn cron(&self) -> &crate::cron::run::ActorCron {
        &self.cron
    }

    /// What its VM gets; refused when the server's config no longer defines its name.
    pub(crate) fn preset(&self) -> Result<Arc<Preset>, ActorError> {
        self.preset.clone().ok_or_else(|| ActorError::UnknownActorName { name: self.name.clone(), known: Vec::new() })
    }

    /// The agents its sessions can run.
    pub(crate) fn agents(&self) -> &agentvm_agents::Registry {
        &self.agents
    }

    /// Broadcasts an event on the actor's stream (written to its log first).
    pub(crate) fn publish(&self, event: VmEvent) {
        self.events.push(event);
    }

    /// Ends a session: a live one's agent is stopped, and its record marked closed (`destroy`:
    /// deleted with its transcript). Refused when the session is neither live nor recorded.
    pub async fn close_session(&self, session_id: &str, destroy: bool) -> Result<(), ActorError> {
        let live = self.sessions.close(session_id).is_ok();
        let transcript = self.transcript();
        let persisted = transcript.record(session_id, self.is_awake()).await?;
        if !live && persisted.is_none() {
            return Err(ActorError::SessionNotFound(session_id.to_string()));
        }
        if destroy {
            transcript.delete(session_id, self.is_awake()).await?;
        } else if let Some(mut record) = persisted {
            record.closed_ms = Some(now_ms());
            transcript.put(record, self.is_awake()).await?;
        }
        Ok(())
    }

    /// Its sessions' durable records and transcripts (in the VM's own SQLite file).
    pub fn transcript(&self) -> crate::sessions::transcript::Transcript {
        crate::sessions::transcript::Transcript::new(Arc::clone(&self.store))
    }

    /// The live session `session_id`, resumed (its agent started again in the running VM, the
    /// conversation restored with `session/load`) when its agent is gone.
    pub async fn resume_session(&self, vm: &Vm, session_id: &str) -> Result<Arc<crate::sessions::Session>, ActorError> {
        let (preset, transcript) = self.session_parts()?;
        self.sessions.resume(self.session_context(vm, &preset, &transcript), session_id).await
    }

    /// Starts an agent session in `vm` (the actor's running VM).
    pub async fn create_session(
        &self,
        vm: &Vm,
        agent_type: &str,
        options: crate::sessions::CreateOptions,
    ) -> Result<serde_json::Value, ActorError> {
        let (preset, transcript) = self.session_parts()?;
        self.sessions.create(self.session_context(vm, &preset, &transcript), agent_type, options).await
    }

    /// The preset and transcript a session of this actor uses.
    fn session_parts(&self) -> Result<(Arc<Preset>, crate::sessions::transcript::Transcript), ActorError> {
        Ok((self.preset()?, self.transcript()))
    }

    fn session_context<'a>(
        &'a self,
        vm: &'a Vm,
        preset: &'a Preset,
        transcript: &'a crate::sessions::transcript::Transcript,
    ) -> crate::sessions::Context<'a> {
        crate::sessions::Context {
            vm,
            preset,
            events: &self.events,
            transcript,
            agents: &self.agents,
            software_dir: self.host.software_dir(),
        }
    }

    /// The VM's host (its files live there).
    pub(crate) fn host(&self) -> &VmHost {
        &self.host
    }

    /// Its state directory (`<data>/vms/<id>`).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The VM's own SQLite file (its event log; its preview tokens, see [`crate::preview`]).
    pub(crate) fn event_file(&self) -> &Arc<EventFile> {
        &self.store
    }

    /// Whether the VM is awake (its SQLite file is kept open meanwhile).
    pub fn is_awake(&self) -> bool {
        matches!(self.lifecycle.phase(), Phase::Awake { .. })
    }

    /// The phase of the actor's VM ("asleep", "awake"...).
    pub fn phase(&self) -> &'static str {
        self.lifecycle.phase().name()
    }

    /// Its phase, boot time, resource use and newest event. Reads the VM's cgroup files when it
    /// is awake: call it from a blocking context.
    pub fn overview(&self) -> Overview {
        let phase = self.lifecycle.phase();
        let (usage, booted_ms) = match &phase {
            Phase::Awake { vm, .. } => (vm.usage(), *self.booted_ms.lock().unwrap()),
            _ => (None, None),
        };
        Overview { phase: phase.name(), booted_ms, usage, last_event: self.last_event.lock().unwrap().clone() }
    }

    /// Refuses actions once `destroy` began.
    pub fn check_usable(&self) -> Result<(), ActorError> {
        match self.lifecycle.phase() {
            Phase::Destroying => Err(self.refused(Refusal::Destroying)),
            Phase::Destroyed => Err(self.refused(Refusal::Destroyed)),
            _ => Ok(()),
        }
    }

    fn refused(&self, refusal: Refusal) -> ActorError {
        ActorError::Refused { refusal, actor_id: self.id.clone() }
    }

    /// The actor's running VM, booting it if needed and announcing it (`vmBooted`) unless `quiet`.
    pub async fn vm(self: &Arc<Self>, quiet: bool) -> Result<Vm, ActorError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(ActorError::ShuttingDown);
        }
        let actor = Arc::clone(self);
        let boot = move || Arc::clone(&actor).boot(quiet);
        let events = Arc::clone(&self.events);
        self.lifecycle
            .acquire(quiet, boot, || {
                events.push(VmEvent::VmBooted);
            })
            .await
            .map_err(|e| match e {
                AcquireError::Refused(refusal) => self.refused(refusal),
                AcquireError::Boot(e) => e,
                AcquireError::Panicked(message) => ActorError::Internal(format!("booting the VM panicked: {message}")),
            })
    }

    /// Boots the VM (the work of the `Booting` phase).
    async fn boot(self: Arc<Self>, quiet: bool) -> Result<Vm, ActorError> {
        // Checked again here, in the `Booting` phase: a caller that passed the check in `vm`
        // just before the shutdown began must not boot.
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(ActorError::ShuttingDown);
        }
        let Some(preset) = self.preset.clone() else {
            return Err(ActorError::UnknownActorName { name: self.name.clone(), known: Vec::new() });
        };
        // A VM from the warm pool, already running (see `Actors::resolve`).
        let adopted = self.adopted.lock().unwrap().take();
        if let Some(vm) = adopted.filter(Vm::is_running) {
            self.sessions.clear();
            tracing::info!(actor = %self.id, name = %self.name, key = %keys::to_rest(&self.key), "VM taken from the warm pool");
            *self.booted_ms.lock().unwrap() = Some(now_ms());
            tokio::spawn(watch_for_crash(Arc::downgrade(&self), vm.clone()));
            return Ok(vm);
        }
        let dir = self.dir.clone();
        let mut client = blocking(move || ClientOptions::load(&dir)).await??;
        let dropped = client.restrict_to(&preset);
        if !dropped.is_empty() {
            tracing::warn!(actor = %self.id, preset = %preset.name, ?dropped, "the preset no longer lets clients set these; ignored");
        }
        let mut options = VmOptions {
            // The key names the machine: `user@my-agent:~$` rather than a hash.
            hostname: Some(agentvm_vm::hostname_for(&self.key.join("-"))),
            events: Some(Arc::clone(&self.events)),
            exec_output_bytes: self.settings.exec_output_bytes,
            ..preset.vm_options(&client)
        };
        // The policy's variables last: neither the preset's nor the client's env replaces them.
        options.env.extend(crate::network::env_for(&preset.network));
        options.resolv_conf = crate::network::resolv_conf_for(&preset.network);
        let vm = self.host.create_vm(&self.id, options).await?;
        // Sessions of an earlier boot ended with it (their agents are gone).
        self.sessions.clear();
        if let Err(e) = crate::network::start(&vm, &preset.network, Arc::clone(&self.events)).await {
            vm.shutdown(Duration::ZERO).await;
            return Err(e);
        }
        tracing::info!(actor = %self.id, name = %self.name, key = %keys::to_rest(&self.key), quiet, "VM booted");
        *self.booted_ms.lock().unwrap() = Some(now_ms());
        tokio::spawn(watch_for_crash(Arc::downgrade(&self), vm.clone()));
        Ok(vm)
    }

    /// Marks an action as running until the guard is dropped.
    pub fn activity(self: &Arc<Self>) -> ActivityGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        *self.last_activity.lock().unwrap() = Instant::now();
        ActivityGuard { actor: Arc::clone(self) }
    }

    /// Reads the actor's events published from now on (those `filter` accepts), each reader
    /// with its own bounded queue (see `agentvm_vm::EventLog`).
    pub fn subscribe(&self, filter: Option<Filter>) -> Subscription {
        self.events.subscribe_filtered(None, filter)
    }

    /// The first sequence number of the events that happened at or after `at` (looking back
    /// at most 2 s; see `EventLog::seq_since`).
    pub fn seq_since(&self, at: tokio::time::Instant) -> u64 {
        self.events.seq_since(at)
    }

    /// Events with `seq > after` from the VM's durable log (every published event is in it).
    pub async fn events_after(&self, after: Option<u64>, limit: usize) -> Result<Vec<StoredEvent>, ActorError> {
        let awake = matches!(self.lifecycle.phase(), Phase::Awake { .. });
        event_store::read_after(&self.store, awake, after, limit).await
    }

    /// Stops the VM for a server shutdown (after a boot or a stop in progress ended),
    /// broadcasting `vmShutdown {reason: "sleep"}` if it had been announced. Files stay.
    pub async fn stop(self: &Arc<Self>) {
        self.lifecycle.settled().await;
        let events = Arc::clone(&self.events);
        let store = Arc::clone(&self.store);
        self.lifecycle.stop_if(|_, _| true, move |vm, announced| stop_vm(vm, announced, events, store)).await;
    }

    /// Whether the actor may have changed since `since`: an action since then, one running, or
    /// its VM awake with a process or shell running.
    pub fn active_since(&self, since: Instant) -> bool {
        if *self.last_activity.lock().unwrap() >= since || self.in_flight.load(Ordering::Acquire) > 0 {
            return true;
        }
        matches!(self.lifecycle.phase(), Phase::Awake { vm, .. } if vm.has_activity())
    }

    /// Whether the VM is awake and idle (as [`Actor::sleep_if_idle`] judges it), now.
    fn is_idle(&self) -> bool {
        let Phase::Awake { vm, announced } = self.lifecycle.phase() else { return false };
        let timeout = if announced { self.settings.idle_timeout } else { self.settings.idle_timeout.min(QUIET_IDLE) };
        self.last_activity.lock().unwrap().elapsed() >= timeout
            && self.in_flight.load(Ordering::Acquire) == 0
            && !vm.has_activity()
    }

    /// Sleeps the VM if it is awake and idle (checked under the lifecycle's lock, so that an
    /// action that starts meanwhile is either counted or waits for the stop and boots again).
    async fn sleep_if_idle(self: &Arc<Self>) -> bool {
        let idle_for = self.last_activity.lock().unwrap().elapsed();
        let idle_timeout = self.settings.idle_timeout;
        let in_flight = &self.in_flight;
        let is_idle = |vm: &Vm, announced: bool| {
            let timeout = if announced { idle_timeout } else { idle_timeout.min(QUIET_IDLE) };
            idle_for >= timeout && in_flight.load(Ordering::Acquire) == 0 && !vm.has_activity()
        };
        let (events, store) = (Arc::clone(&self.events), Arc::clone(&self.store));
        let slept = self.lifecycle.stop_if(is_idle, move |vm, announced| stop_vm(vm, announced, events, store)).await;
        if slept {
            tracing::info!(actor = %self.id, "VM idle: slept");
        }
        slept
    }

    fn start_persisting(self: &Arc<Self>) {
        let actor = Arc::downgrade(self);
        // The log file stays open while the VM is awake or booting (see `EventFile`).
        let awake = move || {
            actor.upgrade().is_some_and(|a| matches!(a.lifecycle.phase(), Phase::Awake { .. } | Phase::Booting))
        };
        let last = Arc::clone(&self.last_event);
        let task = tokio::spawn(event_store::persist(Arc::clone(&self.events), Arc::clone(&self.store), awake, last));
        *self.persister.lock().unwrap() = Some(task);
    }
}

/// The work of the `Stopping` phase: stop the VM, then `vmShutdown` if the VM was announced,
/// wait for its last events to be written, and release its event file (a sleeping actor holds
/// no descriptor).
async fn stop_vm(vm: Vm, announced: bool, events: Arc<EventLog>, store: Arc<EventFile>) {
    // Stopped first: the exits of the processes the stop ends come before `vmShutdown`.
    vm.shutdown(STOP_GRACE).await;
    drop(vm);
    if announced {
        events.push(VmEvent::VmShutdown { reason: "sleep".into() });
    }
    if tokio::time::timeout(FLUSH_WAIT, events.flushed()).await.is_err() {
        tracing::error!("stopping a VM: its last events were not written within {FLUSH_WAIT:?}");
    }
    let _ = tokio::task::spawn_blocking(move || store.close()).await;
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
    // The exits of the processes that died with it come before `vmShutdown {reason: "error"}`.
    let _ = tokio::time::timeout(STOP_GRACE, vm.exits_published()).await;
    let Some(actor) = actor.upgrade() else { return };
    let events = Arc::clone(&actor.events);
    if actor.lifecycle.crashed(|| {
        events.push(VmEvent::VmShutdown { reason: "error".into() });
    }) {
        tracing::warn!(actor = %actor.id, "VM ended unexpectedly");
    }
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

pub(crate) fn now_ms() -> u64 {
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
