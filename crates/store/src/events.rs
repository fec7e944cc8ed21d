//! A VM's event log on disk: every event the VM's actor broadcast (process output, exits,
//! shell output, lifecycle), with its sequence number, bounded to the most recent
//! [`EVENT_RETENTION`] events and [`EVENT_RETENTION_BYTES`] of payload.

use std::path::Path;

use rusqlite::params;

use crate::{open, Context, Result};

/// Events kept per VM.
pub const EVENT_RETENTION: u64 = 10_000;
/// Payload bytes kept per VM (the oldest events beyond it are dropped first).
pub const EVENT_RETENTION_BYTES: u64 = 16 << 20;
/// Trim once this many events were added since the last trim.
const TRIM_EVERY: u64 = 256;

/// One stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: u64,
    pub name: String,
    /// The event's payload as JSON (bytes as `["$Uint8Array", base64]`).
    pub payload: serde_json::Value,
    pub created_ms: u64,
}

pub struct EventStore {
    connection: rusqlite::Connection,
    since_trim: u64,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq         INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    size        INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL
);
";

impl EventStore {
    pub fn open(path: &Path) -> Result<EventStore> {
        let connection = open(path)?;
        connection.execute_batch(SCHEMA).context("creating the event schema")?;
        Ok(EventStore { connection, since_trim: 0 })
    }

    /// The sequence number the next event gets (one past the last stored).
    pub fn next_seq(&self) -> Result<u64> {
        let last: Option<u64> = self
            .connection
            .query_row("SELECT MAX(seq) FROM events", [], |r| r.get(0))
            .context("reading the event log")?;
        Ok(last.map_or(0, |s| s + 1))
    }

    /// Appends events in one transaction; an event whose seq is already stored is ignored.
    pub fn append(&mut self, events: &[StoredEvent]) -> Result<()> {
        let tx = self.connection.transaction().context("writing events")?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO events (seq, name, payload, size, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .context("writing events")?;
            for event in events {
                let payload = event.payload.to_string();
                insert
                    .execute(params![event.seq, event.name, payload, payload.len() as u64, event.created_ms])
                    .context("writing events")?;
            }
        }
        tx.commit().context("writing events")?;
        self.since_trim += events.len() as u64;
        if self.since_trim >= TRIM_EVERY {
            self.trim()?;
        }
        Ok(())
    }

    /// Events with `seq > after` (all retained if `None`), oldest first, at most `limit`.
    pub fn read(&self, after: Option<u64>, limit: usize) -> Result<Vec<StoredEvent>> {
        let mut statement = self
            .connection
            .prepare_cached("SELECT seq, name, payload, created_ms FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")
            .context("reading events")?;
        let after = after.map_or(-1, |a| a.min(i64::MAX as u64) as i64);
        let rows = statement
            .query_map(params![after, limit as i64], |r| {
                let payload: String = r.get(2)?;
                Ok(StoredEvent {
                    seq: r.get(0)?,
                    name: r.get(1)?,
                    payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
                    created_ms: r.get(3)?,
                })
            })
            .context("reading events")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().context("reading events")
    }

    /// Drops the oldest events beyond the retention bounds.
    pub fn trim(&mut self) -> Result<()> {
        self.since_trim = 0;
        self.connection
            .execute("DELETE FROM events WHERE seq <= (SELECT MAX(seq) FROM events) - ?1", params![EVENT_RETENTION])
            .context("trimming events")?;
        self.connection
            .execute(
                "DELETE FROM events WHERE seq < (
                     SELECT COALESCE(MIN(seq), 0) FROM (
                         SELECT seq, SUM(size) OVER (ORDER BY seq DESC) AS newer FROM events
                     ) WHERE newer <= ?1
                 )",
                params![EVENT_RETENTION_BYTES],
            )
            .context("trimming events")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, size: usize) -> StoredEvent {
        StoredEvent {
            seq,
            name: "processOutput".into(),
            payload: serde_json::json!({"data": "x".repeat(size)}),
            created_ms: 7,
        }
    }

    #[test]
    fn append_read_from_a_cursor_and_resume_numbering() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.sqlite3");
        let mut store = EventStore::open(&path).unwrap();
        assert_eq!(store.next_seq().unwrap(), 0);
        store.append(&[event(0, 1), event(1, 1), event(2, 1)]).unwrap();
        store.append(&[event(2, 1)]).unwrap();
        let after_first: Vec<u64> = store.read(Some(0), 100).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(after_first, [1, 2]);
        assert_eq!(store.read(None, 2).unwrap().len(), 2);
        drop(store);
        let store = EventStore::open(&path).unwrap();
        assert_eq!(store.next_seq().unwrap(), 3);
    }

    #[test]
    fn retention_drops_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = EventStore::open(&dir.path().join("vm.sqlite3")).unwrap();
        let batch: Vec<StoredEvent> = (0..EVENT_RETENTION + 10).map(|s| event(s, 1)).collect();
        store.append(&batch).unwrap();
        store.trim().unwrap();
        let kept = store.read(None, usize::MAX >> 1).unwrap();
        assert_eq!(kept.len() as u64, EVENT_RETENTION);
        assert_eq!(kept[0].seq, 10);
        // Byte bound: a few huge events push out the older ones.
        let big: Vec<StoredEvent> = (0..6).map(|i| event(EVENT_RETENTION + 10 + i, 4 << 20)).collect();
        store.append(&big).unwrap();
        store.trim().unwrap();
        let kept = store.read(None, usize::MAX >> 1).unwrap();
        let bytes: usize = kept.iter().map(|e| e.payload.to_string().len()).sum();
        assert!(bytes as u64 <= EVENT_RETENTION_BYTES, "{bytes}");
        assert_eq!(kept.last().unwrap().seq, EVENT_RETENTION + 15);
    }
}
