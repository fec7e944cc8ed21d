//! Event-log persistence: every actor's event stream is written to its VM's own SQLite log
//! (`<data>/vms/<id>/vm.sqlite3`) by a background task, and `getVmEvents` reads it back
//! together with what is not persisted yet.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use agentvm_store::{EventStore, StoredEvent};
use agentvm_vm::{EventLog, Item, Subscription, VmEvent};

use crate::actors::{blocking, now_ms};
use crate::error::ActorError;
use crate::events::wire;

/// Most events (and payload bytes) written to SQLite in one transaction.
const PERSIST_BATCH_EVENTS: usize = 256;
const PERSIST_BATCH_BYTES: usize = 1 << 20;

/// A VM's event log file, open only while needed: kept open while the VM is awake, closed when
/// it sleeps, so that sleeping actors hold no descriptors (a server may know many thousands).
/// Used only from blocking threads.
pub(crate) struct EventFile {
    path: PathBuf,
    open: Mutex<Option<EventStore>>,
}

impl EventFile {
    pub(crate) fn new(path: PathBuf) -> EventFile {
        EventFile { path, open: Mutex::new(None) }
    }

    /// Runs `work` on the store, opening it if needed; closes it afterwards unless `keep_open`.
    fn with<T>(
        &self,
        keep_open: bool,
        work: impl FnOnce(&mut EventStore) -> agentvm_store::Result<T>,
    ) -> agentvm_store::Result<T> {
        let mut open = self.open.lock().unwrap();
        let store = match open.take() {
            Some(store) => store,
            None => EventStore::open(&self.path)?,
        };
        let mut store = store;
        let result = work(&mut store);
        if keep_open {
            *open = Some(store);
        }
        result
    }

    pub(crate) fn close(&self) {
        self.open.lock().unwrap().take();
    }
}

/// Writes the actor's events to its VM's log, in bounded batches, for as long as the stream
/// lasts. `awake` says whether to keep the file open after a batch (the VM is awake or booting).
pub(crate) async fn persist(mut events: Subscription, store: Arc<EventFile>, awake: impl Fn() -> bool) {
    while let Some(item) = events.next().await {
        let mut batch = Vec::new();
        let mut bytes = 0;
        let mut next = Some(item);
        while let Some(item) = next.take() {
            match item {
                Item::Event(event) => {
                    bytes += match &event.event {
                        VmEvent::ProcessOutput { data, .. } | VmEvent::ShellData { data, .. } => data.len(),
                        _ => 0,
                    };
                    batch.push(to_stored(&event.event, event.seq));
                }
                Item::Lagged { missed } => tracing::warn!(missed, "event log fell behind: events not persisted"),
            }
            if batch.len() < PERSIST_BATCH_EVENTS && bytes < PERSIST_BATCH_BYTES {
                next = events.poll_now().flatten();
            }
        }
        let keep_open = awake();
        let store = Arc::clone(&store);
        let written = tokio::task::spawn_blocking(move || store.with(keep_open, |s| s.append(&batch))).await;
        if let Ok(Err(e)) = written {
            tracing::error!("persisting events: {e}");
        }
    }
}

/// Events with `seq > after` (at most `limit`), from the durable log and then from what the
/// in-memory stream holds but is not persisted yet. `awake`: keep the file open afterwards.
pub(crate) async fn read_after(
    store: &Arc<EventFile>,
    events: &EventLog,
    awake: bool,
    after: Option<u64>,
    limit: usize,
) -> Result<Vec<StoredEvent>, ActorError> {
    // Nothing comes after the largest sequence number (and `after + 1` must not overflow).
    let Some(from) = after.map_or(Some(0), |a| a.checked_add(1)) else { return Ok(Vec::new()) };
    let store = Arc::clone(store);
    let mut stored = blocking(move || store.with(awake, |s| s.read(after, limit))).await??;
    if stored.len() < limit {
        let from = stored.last().map_or(from, |e| e.seq.saturating_add(1));
        for event in events.replay(from).into_iter().take(limit - stored.len()) {
            stored.push(to_stored(&event.event, event.seq));
        }
    }
    Ok(stored)
}

fn to_stored(event: &VmEvent, seq: u64) -> StoredEvent {
    let (name, payload) = wire::to_wire(event);
    StoredEvent { seq, name: name.to_string(), payload: wire::to_json(&payload), created_ms: now_ms() }
}
