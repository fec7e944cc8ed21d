//! The lifecycle of an actor's VM: one explicit state machine, and the only place its phase
//! changes.
//!
//! ```text
//!              acquire (an action)          stop (idle, or server shutdown)
//!   Asleep ─────────▶ Booting ──booted──▶ Awake ─────────▶ Stopping ──stopped──▶ Asleep
//!     ▲                  │                  │
//!     └───boot failed────┘                  └──init died (crashed)──────────────▶ Asleep
//!
//!   Asleep | Awake ──destroy──▶ Destroying ──(VM stopped, data deleted)──▶ Destroyed
//! ```
//!
//! - **Asleep**: no VM process; the files are on disk. The next action boots it.
//! - **Booting**: one caller boots the VM; every other caller waits for it (concurrent first
//!   calls share one boot).
//! - **Awake**: the VM runs; actions use it.
//! - **Stopping**: the server stops the VM (it went idle, or the server shuts down); callers
//!   wait, then boot it again.
//! - **Destroying**: `destroy` began: the VM is being stopped and its data deleted. Every action
//!   is refused with `actor/destroying`, so none can boot a VM over a directory that is about
//!   to disappear. `destroy` itself first waits for a boot or a stop in progress to finish, so a
//!   VM being booted is always seen (and stopped) by it.
//! - **Destroyed**: gone for good; every action is refused with `actor/destroyed`.
//!
//! Work that moves the machine through a transient phase (a boot, a stop, a destroy) runs in
//! its own task, so a caller that goes away (a closed connection aborts its actions) never
//! leaves the machine stuck in `Booting`, `Stopping` or `Destroying`.
//!
//! The machine is generic over the VM handle ([`Machine`]) so that its rules are unit-tested
//! without booting VMs.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// What the state machine needs to know about a VM handle.
pub trait Machine: Clone + Send + Sync + 'static {
    /// `false` once the VM stopped or its init died.
    fn is_running(&self) -> bool;
}

impl Machine for agentvm_vm::Vm {
    fn is_running(&self) -> bool {
        agentvm_vm::Vm::is_running(self)
    }
}

/// The phase of an actor's VM (see the module documentation for the diagram).
#[derive(Clone)]
pub enum Phase<M> {
    Asleep,
    Booting,
    /// `announced`: `vmBooted` was broadcast (a quiet boot for file actions does not announce).
    Awake {
        vm: M,
        announced: bool,
    },
    Stopping,
    Destroying,
    Destroyed,
}

impl<M> Phase<M> {
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Asleep => "asleep",
            Phase::Booting => "booting",
            Phase::Awake { .. } => "awake",
            Phase::Stopping => "stopping",
            Phase::Destroying => "destroying",
            Phase::Destroyed => "destroyed",
        }
    }
}

/// A change of phase. [`apply`] is the one function that decides whether it is allowed.
enum Transition<M> {
    /// Asleep, or Awake with a VM that died → Booting: the caller boots the VM.
    BeginBoot,
    /// Booting → Awake.
    Booted { vm: M, announced: bool },
    /// Booting → Asleep: the boot failed; the next action tries again.
    BootFailed,
    /// Awake → Stopping: the server stops the VM (it is idle, or the server shuts down).
    BeginStop,
    /// Stopping → Asleep.
    Stopped,
    /// Awake with a VM that is no longer running → Asleep: its init died.
    Crashed,
    /// Asleep or Awake → Destroying.
    BeginDestroy,
    /// Destroying → Destroyed.
    Finished,
}

/// The transition table: the phase after `transition` from `from`, or `None` if it is not
/// allowed from there.
fn apply<M: Machine>(from: &Phase<M>, transition: Transition<M>) -> Option<Phase<M>> {
    use Phase as P;
    use Transition as T;
    match (from, transition) {
        (P::Asleep, T::BeginBoot) => Some(P::Booting),
        (P::Awake { vm, .. }, T::BeginBoot) if !vm.is_running() => Some(P::Booting),
        (P::Booting, T::Booted { vm, announced }) => Some(P::Awake { vm, announced }),
        (P::Booting, T::BootFailed) => Some(P::Asleep),
        (P::Awake { .. }, T::BeginStop) => Some(P::Stopping),
        (P::Stopping, T::Stopped) => Some(P::Asleep),
        (P::Awake { vm, .. }, T::Crashed) if !vm.is_running() => Some(P::Asleep),
        (P::Asleep | P::Awake { .. }, T::BeginDestroy) => Some(P::Destroying),
        (P::Destroying, T::Finished) => Some(P::Destroyed),
        _ => None,
    }
}

/// Why an actor refuses an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Destroying,
    Destroyed,
}

/// An actor's lifecycle: its phase and the waiters on it.
pub struct Lifecycle<M> {
    phase: Mutex<Phase<M>>,
    changed: Notify,
}

impl<M: Machine> Default for Lifecycle<M> {
    fn default() -> Self {
        Lifecycle { phase: Mutex::new(Phase::Asleep), changed: Notify::new() }
    }
}

/// What to do next, decided under the lock and carried out outside it.
enum Next<T> {
    Done(T),
    Wait,
    Boot,
}

impl<M: Machine> Lifecycle<M> {
    /// The current phase (a snapshot).
    pub fn phase(&self) -> Phase<M> {
        self.phase.lock().unwrap().clone()
    }

    /// Applies `transition` to `phase` (held locked by the caller) and wakes the waiters.
    /// Returns `false`, leaving the phase as it was, when the transition is not allowed.
    fn change(&self, phase: &mut Phase<M>, transition: Transition<M>) -> bool {
        match apply(phase, transition) {
            Some(next) => {
                *phase = next;
                self.changed.notify_waiters();
                true
            }
            None => false,
        }
    }

    /// Runs `decide` under the lock until it returns something other than [`Next::Wait`],
    /// waiting for the next change of phase in between.
    async fn until<T>(&self, mut decide: impl FnMut(&mut Phase<M>) -> Next<T>) -> Next<T> {
        loop {
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            // The guard is dropped before waiting.
            let next = decide(&mut self.phase.lock().unwrap());
            match next {
                Next::Wait => changed.await,
                other => return other,
            }
        }
    }

    /// Resolves once no boot or stop is in progress.
    pub async fn settled(&self) {
        self.until(|phase| match phase {
            Phase::Booting | Phase::Stopping => Next::Wait,
            _ => Next::Done(()),
        })
        .await;
    }

    /// The running VM for an action. Waits while the VM boots or stops; boots it (with `boot`,
    /// in its own task) when it sleeps; refuses once `destroy` began. `announce` runs once, under
    /// the lock, when the VM is first used by a caller that is not `quiet` (to broadcast
    /// `vmBooted` exactly once per boot).
    pub async fn acquire<E, F, Fut>(
        self: &Arc<Self>,
        quiet: bool,
        boot: F,
        announce: impl Fn(),
    ) -> Result<M, AcquireError<E>>
    where
        E: Send + 'static,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<M, E>> + Send + 'static,
    {
        loop {
            let next = self
                .until(|phase| match phase {
                    Phase::Awake { vm, announced } if vm.is_running() => {
                        if !quiet && !*announced {
                            *announced = true;
                            announce();
                        }
                        Next::Done(Ok(vm.clone()))
                    }
                    Phase::Booting | Phase::Stopping => Next::Wait,
                    Phase::Destroying => Next::Done(Err(AcquireError::Refused(Refusal::Destroying))),
                    Phase::Destroyed => Next::Done(Err(AcquireError::Refused(Refusal::Destroyed))),
                    Phase::Asleep | Phase::Awake { .. } => {
                        if self.change(phase, Transition::BeginBoot) {
                            Next::Boot
                        } else {
                            Next::Wait
                        }
                    }
                })
                .await;
            let Next::Done(result) = next else {
                // This caller boots. The boot runs to its end even if the caller goes away.
                let booting = boot();
                let lifecycle = Arc::clone(self);
                let task = tokio::spawn(async move {
                    let result = booting.await;
                    let mut phase = lifecycle.phase.lock().unwrap();
                    let transition = match &result {
                        Ok(vm) => Transition::Booted { vm: vm.clone(), announced: false },
                        Err(_) => Transition::BootFailed,
                    };
                    let applied = lifecycle.change(&mut phase, transition);
                    debug_assert!(applied, "only the booter leaves Booting");
                    result
                });
                match task.await {
                    // Loop: take the VM (and announce it) like any other caller.
                    Ok(Ok(_)) => continue,
                    Ok(Err(e)) => return Err(AcquireError::Boot(e)),
                    Err(join) => return Err(AcquireError::Panicked(join.to_string())),
                }
            };
            return result;
        }
    }

    /// If the VM is awake and `should_stop(vm, announced)` holds (checked under the lock, so no
    /// action slips in between), moves it to `Stopping`, runs `stop(vm, announced)` in its own
    /// task, then moves it to `Asleep`. Returns whether it stopped the VM.
    pub async fn stop_if<Fut>(
        self: &Arc<Self>,
        should_stop: impl FnOnce(&M, bool) -> bool,
        stop: impl FnOnce(M, bool) -> Fut,
    ) -> bool
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (vm, announced) = {
            let mut phase = self.phase.lock().unwrap();
            let Phase::Awake { vm, announced } = &*phase else { return false };
            let (vm, announced) = (vm.clone(), *announced);
            if !should_stop(&vm, announced) || !self.change(&mut phase, Transition::BeginStop) {
                return false;
            }
            (vm, announced)
        };
        let stopping = stop(vm, announced);
        let lifecycle = Arc::clone(self);
        let task = tokio::spawn(async move {
            stopping.await;
            let applied = lifecycle.change(&mut lifecycle.phase.lock().unwrap(), Transition::Stopped);
            debug_assert!(applied, "only the stopper leaves Stopping");
        });
        let _ = task.await;
        true
    }

    /// Destroys: waits for a boot or a stop in progress, moves to `Destroying`, runs
    /// `destroy(vm)` (with the VM if it was awake) in its own task, then moves to `Destroyed`
    /// whatever its outcome. A destroy that finds one in progress waits for it and succeeds.
    pub async fn destroy<E, F, Fut>(self: &Arc<Self>, destroy: F) -> Result<(), E>
    where
        E: Send + 'static,
        F: FnOnce(Option<M>) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        let claimed = self
            .until(|phase| match phase {
                Phase::Booting | Phase::Stopping | Phase::Destroying => Next::Wait,
                Phase::Destroyed => Next::Done(None),
                Phase::Asleep | Phase::Awake { .. } => {
                    let vm = match phase {
                        Phase::Awake { vm, .. } => Some(vm.clone()),
                        _ => None,
                    };
                    let applied = self.change(phase, Transition::BeginDestroy);
                    debug_assert!(applied);
                    // This call destroys, with the VM if it was awake.
                    Next::Done(Some(vm))
                }
            })
            .await;
        // `None`: already destroyed (by another call we waited for, or before).
        let Next::Done(Some(vm)) = claimed else { return Ok(()) };
        let destroying = destroy(vm);
        let lifecycle = Arc::clone(self);
        let task = tokio::spawn(async move {
            let result = destroying.await;
            let applied = lifecycle.change(&mut lifecycle.phase.lock().unwrap(), Transition::Finished);
            debug_assert!(applied, "only the destroyer leaves Destroying");
            result
        });
        match task.await {
            Ok(result) => result,
            Err(join) => panic!("destroying an actor panicked: {join}"),
        }
    }

    /// The VM ended without the server stopping it (its init died): `Awake` → `Asleep`, and
    /// `report` runs under the lock. Returns whether it applied (the phase had moved on, or the
    /// VM was already replaced, otherwise).
    pub fn crashed(&self, report: impl FnOnce()) -> bool {
        let mut phase = self.phase.lock().unwrap();
        let applied = self.change(&mut phase, Transition::Crashed);
        if applied {
            report();
        }
        applied
    }
}

/// Why [`Lifecycle::acquire`] gave no VM.
#[derive(Debug)]
pub enum AcquireError<E> {
    Refused(Refusal),
    Boot(E),
    Panicked(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    /// A VM stand-in whose "init" can die.
    #[derive(Clone)]
    struct Fake(Arc<AtomicBool>);
    impl Machine for Fake {
        fn is_running(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }
    }
    fn fake() -> Fake {
        Fake(Arc::new(AtomicBool::new(true)))
    }

    #[test]
    fn the_transition_table() {
        let (alive, dead) = (fake(), fake());
        dead.0.store(false, Ordering::SeqCst);
        let awake = |vm: &Fake| Phase::Awake { vm: vm.clone(), announced: false };
        let name = |p: Option<Phase<Fake>>| p.map(|p| p.name());
        assert_eq!(name(apply(&Phase::Asleep, Transition::BeginBoot)), Some("booting"));
        assert_eq!(name(apply(&awake(&dead), Transition::BeginBoot)), Some("booting"));
        assert_eq!(name(apply(&awake(&alive), Transition::BeginBoot)), None);
        assert_eq!(name(apply(&awake(&alive), Transition::Crashed)), None);
        assert_eq!(name(apply(&awake(&dead), Transition::Crashed)), Some("asleep"));
        for refused in [Phase::Booting, Phase::Stopping, Phase::Destroying, Phase::Destroyed] {
            assert_eq!(name(apply(&refused, Transition::BeginDestroy)), None, "destroy from {}", refused.name());
            assert_eq!(name(apply(&refused, Transition::BeginBoot)), None, "boot from {}", refused.name());
        }
        assert_eq!(name(apply(&Phase::Destroying, Transition::Finished)), Some("destroyed"));
        assert_eq!(name(apply(&Phase::Destroyed, Transition::Finished)), None);
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_boot_and_announce_once() {
        let lifecycle = Arc::new(Lifecycle::<Fake>::default());
        let boots = Arc::new(AtomicUsize::new(0));
        let announced = Arc::new(AtomicUsize::new(0));
        let calls = (0..20).map(|i| {
            let (lifecycle, boots, announced) = (Arc::clone(&lifecycle), Arc::clone(&boots), Arc::clone(&announced));
            tokio::spawn(async move {
                let boot = move || {
                    let boots = Arc::clone(&boots);
                    async move {
                        boots.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok::<_, ()>(fake())
                    }
                };
                lifecycle
                    .acquire(i % 2 == 0, boot, || {
                        announced.fetch_add(1, Ordering::SeqCst);
                    })
                    .await
                    .map(|_| ())
            })
        });
        for call in futures_util::future::join_all(calls).await {
            assert!(call.unwrap().is_ok());
        }
        assert_eq!(boots.load(Ordering::SeqCst), 1);
        assert_eq!(announced.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn destroy_waits_for_a_boot_and_then_refuses_every_action() {
        let lifecycle = Arc::new(Lifecycle::<Fake>::default());
        let vm = fake();
        let booted = vm.clone();
        let booting = {
            let lifecycle = Arc::clone(&lifecycle);
            tokio::spawn(async move {
                let boot = move || {
                    let booted = booted.clone();
                    async move {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, ()>(booted)
                    }
                };
                lifecycle.acquire(false, boot, || {}).await.map(|_| ())
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(lifecycle.phase().name(), "booting");
        let stopped = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stopped);
        let destroyed = lifecycle.destroy(move |vm: Option<Fake>| async move {
            // The VM booted meanwhile is handed to destroy, which stops it.
            let vm = vm.expect("destroy sees the booted VM");
            vm.0.store(false, Ordering::SeqCst);
            flag.store(true, Ordering::SeqCst);
            Ok::<_, ()>(())
        });
        destroyed.await.unwrap();
        assert!(booting.await.unwrap().is_ok());
        assert!(stopped.load(Ordering::SeqCst) && !vm.is_running());
        let refused = lifecycle.acquire(false, || async { Ok::<_, ()>(fake()) }, || {}).await;
        assert!(matches!(refused, Err(AcquireError::Refused(Refusal::Destroyed))));
        // A second destroy is a no-op that succeeds.
        let again = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&again);
        let second: Result<(), ()> = lifecycle
            .destroy(move |_| async move {
                flag.store(true, Ordering::SeqCst);
                Ok(())
            })
            .await;
        assert!(second.is_ok() && !again.load(Ordering::SeqCst), "destroyed twice");
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_does_not_leave_the_boot_stuck() {
        let lifecycle = Arc::new(Lifecycle::<Fake>::default());
        let caller = {
            let lifecycle = Arc::clone(&lifecycle);
            tokio::spawn(async move {
                let boot = || async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok::<_, ()>(fake())
                };
                let _ = lifecycle.acquire(false, boot, || {}).await;
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        caller.abort();
        let vm = tokio::time::timeout(
            Duration::from_secs(5),
            lifecycle.acquire(false, || async { Ok::<_, ()>(fake()) }, || {}),
        )
        .await
        .expect("the boot finished without its caller");
        assert!(vm.is_ok());
        assert_eq!(lifecycle.phase().name(), "awake");
    }

    #[tokio::test]
    async fn stop_is_checked_under_the_lock_and_a_crash_is_reported_once() {
        let lifecycle = Arc::new(Lifecycle::<Fake>::default());
        let vm = lifecycle.acquire(false, || async { Ok::<_, ()>(fake()) }, || {}).await.unwrap();
        assert!(!lifecycle.stop_if(|_, _| false, |_, _| async {}).await);
        assert_eq!(lifecycle.phase().name(), "awake");
        vm.0.store(false, Ordering::SeqCst);
        let mut reports = 0;
        assert!(lifecycle.crashed(|| reports += 1));
        assert!(!lifecycle.crashed(|| reports += 1));
        assert_eq!((reports, lifecycle.phase().name()), (1, "asleep"));
        lifecycle.acquire(false, || async { Ok::<_, ()>(fake()) }, || {}).await.unwrap();
        assert!(lifecycle.stop_if(|_, _| true, |vm, _| async move { vm.0.store(false, Ordering::SeqCst) }).await);
        assert_eq!(lifecycle.phase().name(), "asleep");
    }
}
