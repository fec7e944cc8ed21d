//! Actors: each (namespace, name, key) is one actor, and each actor is one agentvm VM.
//!
//! The actor id is derived from the address (a hash), so the same key finds the same VM
//! directory, and with it the same files, after a server restart. A VM boots on the first action
//! that needs it; concurrent first calls share one boot. Every actor has one event stream that
//! outlives its VM's restarts, so connections keep listening across them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agentvm_vm::{EventLog, Retention, Subscription, Vm, VmHost, VmOptions};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::keys::{self, Key};

/// Length of actor ids (lowercase hex), like the engine's 30-character ids.
const ID_LEN: usize = 30;

pub struct Actor {
    pub id: String,
    pub namespace: String,
    pub name: String,
    pub key: Key,
    pub created_ms: u64,
    events: Arc<EventLog>,
    vm: tokio::sync::Mutex<Option<Vm>>,
}

impl Actor {
    /// The actor's running VM, booting it first if needed.
    pub async fn vm(&self, host: &VmHost) -> Result<Vm, ApiError> {
        let mut slot = self.vm.lock().await;
        if let Some(vm) = slot.as_ref().filter(|vm| vm.is_running()) {
            return Ok(vm.clone());
        }
        let options = VmOptions { events: Some(Arc::clone(&self.events)), ..VmOptions::default() };
        let vm = host.create_vm(&self.id, options).await?;
        tracing::info!(actor = %self.id, name = %self.name, key = %keys::to_rest(&self.key), "VM booted");
        *slot = Some(vm.clone());
        Ok(vm)
    }

    /// Reads the actor's events from now on.
    pub fn subscribe(&self) -> Subscription {
        self.events.subscribe(None)
    }

    /// Stops the actor's VM if it runs (its files stay).
    pub async fn stop(&self, grace: Duration) {
        let vm = self.vm.lock().await.take();
        if let Some(vm) = vm {
            vm.shutdown(grace).await;
        }
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

/// All actors this server knows.
#[derive(Default)]
pub struct Actors {
    by_id: Mutex<HashMap<String, Arc<Actor>>>,
}

impl Actors {
    /// The actor at this address; created when `create` is set. Returns it and whether it was new.
    pub fn resolve(
        &self,
        namespace: &str,
        name: &str,
        key: &[String],
        create: bool,
    ) -> Result<(Arc<Actor>, bool), ApiError> {
        let id = actor_id(namespace, name, key);
        let mut actors = self.by_id.lock().unwrap();
        if let Some(actor) = actors.get(&id) {
            return Ok((Arc::clone(actor), false));
        }
        if !create {
            return Err(ApiError::actor_not_found());
        }
        let actor = Arc::new(Actor {
            id: id.clone(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            key: key.to_vec(),
            created_ms: now_ms(),
            events: EventLog::new(Retention::default()),
            vm: tokio::sync::Mutex::new(None),
        });
        actors.insert(id, Arc::clone(&actor));
        Ok((actor, true))
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

    /// Forgets an actor (after its VM was stopped and its data removed).
    pub fn remove(&self, id: &str) -> Option<Arc<Actor>> {
        self.by_id.lock().unwrap().remove(id)
    }

    pub fn all(&self) -> Vec<Arc<Actor>> {
        self.by_id.lock().unwrap().values().cloned().collect()
    }
}

/// A stable id for an address: the same actor (and VM directory) after a restart.
pub fn actor_id(namespace: &str, name: &str, key: &[String]) -> String {
    let mut hasher = Sha256::new();
    for part in [namespace, name, &keys::to_rest(key)] {
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
        let a = actor_id("default", "vm", &["my-agent".into()]);
        assert_eq!(a.len(), ID_LEN);
        assert_eq!(a, actor_id("default", "vm", &["my-agent".into()]));
        assert_ne!(a, actor_id("default", "vm", &["my-agent2".into()]));
        assert_ne!(a, actor_id("other", "vm", &["my-agent".into()]));
        assert_ne!(actor_id("default", "vm", &["a".into(), "b".into()]), actor_id("default", "vm", &["a/b".into()]));
        assert!(agentvm_vm::validate_id(&a).is_ok());
    }

    #[test]
    fn get_does_not_create() {
        let actors = Actors::default();
        assert!(actors.resolve("default", "vm", &["k".into()], false).is_err());
        let (a, created) = actors.resolve("default", "vm", &["k".into()], true).unwrap();
        assert!(created);
        let (b, created) = actors.resolve("default", "vm", &["k".into()], false).unwrap();
        assert!(!created && Arc::ptr_eq(&a, &b));
        assert!(actors.by_id(&a.id).is_ok());
    }
}
