//! # agentvm-store
//!
//! agentvm's durable state, in embedded SQLite (WAL mode, `synchronous=NORMAL`: a committed
//! transaction survives the server being killed, since it is in the WAL file before the call
//! returns; only a machine crash can lose the last commits):
//!
//! - [`Registry`] (`<data>/registry.sqlite3`): which actors exist — namespace, name and key —
//!   and the id of each one's VM;
//! - [`EventStore`] (`<data>/vms/<id>/vm.sqlite3`): a VM's sequenced event log, bounded, read
//!   back from a cursor by clients that reconnect or by anyone after a restart (its own
//!   journal and durability trade-off, a rollback journal with `synchronous = OFF`, are
//!   explained in its module);
//! - [`preview`]: the VMs' preview tokens, in each VM's file with an index in the registry;
//! - [`sessions`]: agent sessions' records and transcripts, in each VM's file (readable while
//!   the VM sleeps);
//! - [`cron`]: the VMs' cron jobs and their runs, in each VM's file with an index of when each
//!   is due in the registry.

pub mod cron;
mod events;
pub mod preview;
mod registry;
pub mod sessions;

pub use cron::{CronJob, CronRun, RunEnd, RunStart};
pub use events::{EventStore, Retention as EventRetention, StoredEvent};
pub use preview::PreviewToken;
pub use registry::{ActorRecord, Registry, Resolved};
pub use sessions::{SessionEvent, SessionRecord};

#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct StoreError {
    pub context: String,
    #[source]
    pub source: rusqlite::Error,
}

impl StoreError {
    /// The file is not a database or is damaged (after a machine crash, or written over).
    pub fn is_damaged(&self) -> bool {
        matches!(
            self.source.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
        )
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

pub(crate) trait Context<T> {
    fn context(self, what: &str) -> Result<T>;
}

impl<T> Context<T> for rusqlite::Result<T> {
    fn context(self, what: &str) -> Result<T> {
        self.map_err(|source| StoreError { context: what.to_string(), source })
    }
}

/// Opens (creating) a database with agentvm's settings.
pub(crate) fn open(path: &std::path::Path) -> Result<rusqlite::Connection> {
    let what = format!("opening {}", path.display());
    let connection = rusqlite::Connection::open(path).context(&what)?;
    connection
        .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;")
        .context(&what)?;
    Ok(connection)
}
