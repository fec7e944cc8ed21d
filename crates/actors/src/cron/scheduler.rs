//! The server's one scheduler: when each job of every VM — awake or asleep — is next due, in
//! memory, loaded at start from the registry's index (`agentvm_store::cron`). Its loop
//! (`Actors::run_cron`) waits on the cron clock for the soonest entry and hands due ones to
//! `cron::run::fire`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::clock::Clock;

/// `(actor_id, job_id)`.
pub type JobKey = (String, String);

/// Every planned run.
pub struct Scheduler {
    clock: Arc<dyn Clock>,
    plan: Mutex<Plan>,
    /// Wakes the loop when the plan changes.
    changed: Notify,
}

#[derive(Default)]
struct Plan {
    /// `(due_ms, actor_id, job_id)`, soonest first.
    queue: BTreeSet<(u64, String, String)>,
    due: HashMap<JobKey, u64>,
}

impl Scheduler {
    pub fn new(clock: Arc<dyn Clock>) -> Scheduler {
        Scheduler { clock, plan: Mutex::default(), changed: Notify::new() }
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Plans `job_id` of `actor_id` for `due_ms` (replacing its earlier plan); `None` unplans.
    pub fn plan(&self, actor_id: &str, job_id: &str, due_ms: Option<u64>) {
        let mut plan = self.plan.lock().unwrap();
        let key = (actor_id.to_string(), job_id.to_string());
        if let Some(old) = plan.due.remove(&key) {
            plan.queue.remove(&(old, key.0.clone(), key.1.clone()));
        }
        if let Some(due) = due_ms {
            plan.queue.insert((due, key.0.clone(), key.1.clone()));
            plan.due.insert(key, due);
        }
        drop(plan);
        self.changed.notify_one();
    }

    /// Forgets every job of an actor (it was destroyed).
    pub fn forget_actor(&self, actor_id: &str) {
        let mut plan = self.plan.lock().unwrap();
        let keys: Vec<JobKey> = plan.due.keys().filter(|(actor, _)| actor == actor_id).cloned().collect();
        for key in keys {
            if let Some(due) = plan.due.remove(&key) {
                plan.queue.remove(&(due, key.0, key.1));
            }
        }
    }

    /// When `job_id` of `actor_id` is planned.
    pub fn due(&self, actor_id: &str, job_id: &str) -> Option<u64> {
        self.plan.lock().unwrap().due.get(&(actor_id.to_string(), job_id.to_string())).copied()
    }

    /// Takes every entry due at `now_ms` (they leave the plan: whoever runs them plans the
    /// next time).
    pub fn take_due(&self, now_ms: u64) -> Vec<(JobKey, u64)> {
        let mut plan = self.plan.lock().unwrap();
        let mut taken = Vec::new();
        while let Some(first) = plan.queue.first().cloned() {
            if first.0 > now_ms {
                break;
            }
            plan.queue.remove(&first);
            let (due, actor, job) = first;
            plan.due.remove(&(actor.clone(), job.clone()));
            taken.push(((actor, job), due));
        }
        taken
    }

    /// Waits until the soonest entry may be due or the plan changes.
    pub async fn wait(&self) {
        let changed = self.changed.notified();
        let mut changed = std::pin::pin!(changed);
        changed.as_mut().enable();
        let soonest = self.plan.lock().unwrap().queue.first().map(|e| e.0);
        match soonest {
            Some(due) if due <= self.clock.now_ms() => {}
            Some(due) => {
                tokio::select! {
                    () = self.clock.wait_until(due) => {}
                    () = changed => {}
                }
            }
            None => changed.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cron::clock::ManualClock;
    use std::time::Duration;

    #[tokio::test]
    async fn entries_come_due_in_order_as_the_clock_moves() {
        let clock = Arc::new(ManualClock::new(0));
        let scheduler = Arc::new(Scheduler::new(clock.clone()));
        scheduler.plan("a", "late", Some(300));
        scheduler.plan("a", "soon", Some(100));
        scheduler.plan("b", "x", Some(200));
        scheduler.plan("a", "late", Some(250));
        assert_eq!(scheduler.due("a", "late"), Some(250));
        assert!(scheduler.take_due(99).is_empty());
        // The changes above left a wake-up for the loop: it looks once more, then waits.
        tokio::time::timeout(Duration::from_secs(1), scheduler.wait()).await.unwrap();
        let waiter = {
            let scheduler = Arc::clone(&scheduler);
            tokio::spawn(async move { scheduler.wait().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "nothing is due yet");
        clock.set(200);
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
        let due: Vec<_> = scheduler.take_due(200).into_iter().map(|((_, job), due)| (job, due)).collect();
        assert_eq!(due, [("soon".to_string(), 100), ("x".to_string(), 200)]);
        scheduler.forget_actor("a");
        assert!(scheduler.take_due(u64::MAX).is_empty());
        // A change of plan wakes a waiter.
        let waiter = {
            let scheduler = Arc::clone(&scheduler);
            tokio::spawn(async move { scheduler.wait().await })
        };
        tokio::task::yield_now().await;
        scheduler.plan("c", "y", Some(150));
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
    }
}
