//! Event-log persistence: every actor's events are written to its VM's own SQLite log
//! (`<data>/vms/<id>/vm.sqlite3`) by the persister task *before* they are published (the
//! actor's [`EventLog`] is a durable one), in batched transactions; `getVmEvents` reads the
//! log back.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentvm_store::{EventRetention, EventStore, StoredEvent};
use agentvm_vm::EventLog;

use crate::actors::{blocking, now_ms};
use crate::error::ActorError;
use crate::events::wire;

/// Most events (and about the most payload bytes) written in one transaction.
const PERSIST_BATCH_EVENTS: usize = 1024;
const PERSIST_BATCH_BYTES: usize = 4 << 20;
/// Most payload bytes one `getVmEvents` call returns (at least one event).
pub(crate) const READ_MAX_BYTES: u64 = 16 << 20;
/// An awake VM's log is closed after this long without events (see [`EventFile`]).
const CLOSE_IDLE_AFTER: Duration = Duration::from_secs(2);

/// Logs closed for being idle, ever: the server gives the memory they held back to the system
/// when this moves (see `Actors::sleep_idle_vms`).
pub(crate) static IDLE_CLOSES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Waits between attempts when writing fails (a full disk), doubling up to the last.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// A VM's event log file, open only while needed: kept open while the VM is awake and busy,
/// closed when it sleeps and after [`CLOSE_IDLE_AFTER`] without events, so that sleeping and
/// idle actors hold no descriptor and no SQLite memory (a server may run many thousands; an
/// open connection costs ~130 KiB, mostly buffers of the log's 64 KiB page size). Used only
/// from blocking threads.
pub(crate) struct EventFile {
    path: PathBuf,
    retention: EventRetention,
    open: Mutex<Option<EventStore>>,
}

impl EventFile {
    pub(crate) fn new(path: PathBuf, retention: EventRetention) -> EventFile {
        EventFile { path, retention, open: Mutex::new(None) }
    }

    /// Opens the log, moving a damaged file aside (see [`agentvm_store::StoreError::is_damaged`])
    /// and starting a new one in its place. Blocking.
    pub(crate) fn open_store(&self) -> agentvm_store::Result<EventStore> {
        match EventStore::open(&self.path, self.retention) {
            Err(e) if e.is_damaged() => {
                let aside = self.path.with_extension(format!("sqlite3.damaged-{}", now_ms()));
                tracing::error!(
                    path = %self.path.display(), aside = %aside.display(),
                    "the event log is damaged (after a machine crash?): moved aside, starting a new one: {e}"
                );
                let _ = std::fs::rename(&self.path, &aside);
                for suffix in ["-journal", "-wal", "-shm"] {
                    let mut side = self.path.clone().into_os_string();
                    side.push(suffix);
                    let _ = std::fs::remove_file(side);
                }
                EventStore::open(&self.path, self.retention)
            }
            other => other,
        }
    }

    /// Runs `work` on the store, opening it if needed; closes it afterwards unless `keep_open`.
    pub(crate) fn with<T>(
        &self,
        keep_open: bool,
        work: impl FnOnce(&mut EventStore) -> agentvm_store::Result<T>,
    ) -> agentvm_store::Result<T> {
        let mut open = self.open.lock().unwrap();
        let mut store = match open.take() {
            Some(store) => store,
            None => self.open_store()?,
        };
        let result = work(&mut store);
        if keep_open {
            *open = Some(store);
        }
        result
    }

    /// Compacts and closes the log (its VM goes to sleep). Blocking.
    pub(crate) fn close(&self) {
        if let Err(e) = self.with(false, |store| store.compact()) {
            tracing::warn!(path = %self.path.display(), "compacting the event log: {e}");
        }
    }

    /// Closes the log without touching it (its files are about to be deleted, or it was idle).
    /// Blocking.
    pub(crate) fn forget(&self) {
        self.open.lock().unwrap().take();
    }

    /// Whether the log is open now.
    fn is_open(&self) -> bool {
        self.open.lock().unwrap().is_some()
    }
}

/// Writes the actor's events to its VM's log, in order and in batches, then publishes them,
/// for as long as the stream lasts, noting the newest in `newest`. `awake` says whether to keep the file open after a batch
/// (the VM is awake or booting). A failing write (a full disk) is retried until it succeeds:
/// meanwhile nothing more is published and producers wait (see `EventLog::reserve`).
pub(crate) async fn persist(
    log: Arc<EventLog>,
    file: Arc<EventFile>,
    awake: impl Fn() -> bool,
    newest: Arc<Mutex<Option<(String, u64)>>>,
) {
    loop {
        let next = log.take_unpersisted(PERSIST_BATCH_EVENTS, PERSIST_BATCH_BYTES);
        let batch = if file.is_open() {
            match tokio::time::timeout(CLOSE_IDLE_AFTER, next).await {
                Ok(batch) => batch,
                Err(_idle) => {
                    // Nothing lost: taking a batch only starts once one is there.
                    let idle = Arc::clone(&file);
                    let _ = tokio::task::spawn_blocking(move || idle.forget()).await;
                    IDLE_CLOSES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    continue;
                }
            }
        } else {
            next.await
        };
        let Some(batch) = batch else { break };
        let Some(last) = batch.last().map(|e| e.seq) else { continue };
        let stored: Arc<Vec<StoredEvent>> = Arc::new(batch.iter().map(|e| wire::to_stored(e)).collect());
        drop(batch);
        if let Some(event) = stored.last() {
            *newest.lock().unwrap() = Some((event.name.clone(), event.created_ms));
        }
        // A batch below the limits means the VM's output does not saturate the log: release its
        // page cache after the write (see `EventStore::release_memory`).
        let quiet = stored.len() < PERSIST_BATCH_EVENTS
            && stored.iter().map(|e| e.data.as_ref().map_or(0, |d| d.len())).sum::<usize>() < PERSIST_BATCH_BYTES / 4;
        let mut retry = RETRY_FIRST;
        loop {
            let (file, stored, keep_open) = (Arc::clone(&file), Arc::clone(&stored), awake());
            let written = tokio::task::spawn_blocking(move || {
                file.with(keep_open, |s| {
                    s.append(&stored)?;
                    if quiet && keep_open {
                        s.release_memory();
                    }
                    Ok(())
                })
            })
            .await;
            match written {
                Ok(Ok(())) => break,
                Ok(Err(e)) => tracing::error!("persisting events (retrying in {retry:?}): {e}"),
                Err(e) => tracing::error!("persisting events (retrying in {retry:?}): {e}"),
            }
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(RETRY_MAX);
        }
        log.persisted(last);
    }
}

/// Events with `seq > after` (at most `limit`, about [`READ_MAX_BYTES`]), from the durable log.
/// `awake`: keep the file open afterwards.
pub(crate) async fn read_after(
    file: &Arc<EventFile>,
    awake: bool,
    after: Option<u64>,
    limit: usize,
) -> Result<Vec<StoredEvent>, ActorError> {
    let file = Arc::clone(file);
    Ok(blocking(move || file.with(awake, |s| s.read(after, limit, READ_MAX_BYTES))).await??)
}
