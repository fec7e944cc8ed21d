//! A VM's event log on disk: every event the VM's actor broadcast (process output, exits,
//! shell output, lifecycle), with its sequence number, the time it happened, its small fields
//! as JSON text and its bytes (output) as a BLOB.
//!
//! **Numbering.** The log is the authority on sequence numbers: the next number is kept in
//! `event_log_state` and advanced in the same transaction as the events, so a number once
//! committed is never handed out again, even after every event was trimmed. The server
//! broadcasts an event only after the transaction holding it committed (see
//! `agentvm_actors::events`), so no client ever sees a number the log could lose.
//!
//! **Durability.** A rollback journal (`journal_mode = TRUNCATE`) with `synchronous = OFF`: a
//! commit is in the operating system's page cache (the database file) when `append` returns, so
//! it survives the server being killed (`kill -9`, a panic, the OOM killer); a transaction the
//! kill interrupted is rolled back from its journal (`vm.sqlite3-journal`) at the next open.
//! Only a machine crash (power loss, kernel panic) can lose what the kernel had not written back
//! yet (by default up to ~30 s, `vm.dirty_expire_centisecs`), and may leave the file damaged:
//! [`EventStore::open`] then says so with [`crate::StoreError::is_damaged`], and the caller
//! moves the file aside (with its journal). Why not `synchronous = NORMAL`: it syncs at every
//! commit, which bounds sustained output by the disk (measured here: 734 MB/s disk, ~300 MB/s
//! log), for a guarantee (surviving power loss) that an output log does not need more than the
//! VM's files do.
//!
//! **Why a rollback journal, not WAL.** The log is almost only appended to: new rows go to
//! pages past the file's end or to pages of the free list, which a rollback journal does not
//! copy (their old content is not needed to undo), so output bytes are written once, into the
//! database. WAL writes them twice (into the WAL, then again into the database at each
//! checkpoint, reading them back for it) and checksums them: measured with 1 MiB events in
//! transactions of 4 (`examples/append_rate.rs`' shape), ~1,050 MB/s and 0.8 s of CPU per GiB
//! with WAL, ~2,850 MB/s and 0.4 s with the journal. The log has one connection (no reader
//! runs beside the writer), so WAL's concurrency is not needed; and the journal needs no `-shm`
//! file, so an open log holds one descriptor between commits instead of three.
//!
//! **Retention.** At most [`Retention::events`] events and [`Retention::bytes`] of payload are
//! kept; the oldest go first, in the transaction that went over. The newest event is always
//! kept. Freed pages are returned to the file system when the log is closed
//! ([`EventStore::compact`]), so a sleeping VM's log is about its retention in size.
//!
//! **Layout.** 64 KiB pages (an output chunk is a short chain of pages rather than a long one
//! of small pages), incremental auto-vacuum. A log written by an older server in WAL mode is
//! switched to the journal when it is opened (its WAL is checkpointed into it first).

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use crate::{Context, Result};

/// How much of its history a VM keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Most events kept. Default 100,000.
    pub events: u64,
    /// Most payload bytes kept (output bytes plus the fields' JSON). Default 64 MiB.
    pub bytes: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { events: 100_000, bytes: 64 << 20 }
    }
}

/// Gives a VM's connection a small lookaside allocator (8 KiB) instead of SQLite's default
/// 120 KiB, which SQLite touches in full when the connection opens: with a connection open for
/// every awake VM, that default was most of the server's memory per VM. The lookaside only
/// speeds up small allocations; a VM's log makes few.
fn small_lookaside(connection: &Connection) {
    const SLOT_BYTES: i32 = 256;
    const SLOTS: i32 = 32;
    // SAFETY: `handle` is this open connection's; SQLITE_DBCONFIG_LOOKASIDE takes a buffer
    // (null: SQLite allocates it), a slot size and a slot count, and may be called while no
    // lookaside memory is in use, as here, right after the open.
    unsafe {
        rusqlite::ffi::sqlite3_db_config(
            connection.handle(),
            rusqlite::ffi::SQLITE_DBCONFIG_LOOKASIDE,
            std::ptr::null_mut::<std::ffi::c_void>(),
            SLOT_BYTES,
            SLOTS,
        );
    }
}

/// Page size of a new event log.
const PAGE_SIZE: u64 = 65536;

/// One stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: u64,
    /// The event's name (`processOutput`, `vmBooted`...).
    pub name: String,
    /// The event's fields other than its bytes, as a JSON object (`{"pid":3,"stream":"stdout"}`).
    pub fields: String,
    /// The event's bytes (output), if it has any.
    pub data: Option<bytes::Bytes>,
    /// When the event happened, in milliseconds since the Unix epoch.
    pub created_ms: u64,
}

impl StoredEvent {
    fn size(&self) -> u64 {
        (self.fields.len() + self.data.as_ref().map_or(0, |d| d.len())) as u64
    }
}

/// The open log of one VM.
pub struct EventStore {
    connection: Connection,
    retention: Retention,
    state: LogState,
}

/// What `event_log_state` holds.
#[derive(Debug, Clone, Copy, Default)]
struct LogState {
    next_seq: u64,
    count: u64,
    bytes: u64,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS event_log (
    seq         INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    fields      TEXT NOT NULL,
    data        BLOB,
    size        INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS event_log_state (
    id          INTEGER PRIMARY KEY CHECK (id = 0),
    next_seq    INTEGER NOT NULL,
    count       INTEGER NOT NULL,
    bytes       INTEGER NOT NULL
);
";

impl EventStore {
    /// Opens (creating) the log at `path`, moving events of the older layout (one JSON text
    /// per event, bytes in base64) into this one.
    pub fn open(path: &Path, retention: Retention) -> Result<EventStore> {
        let what = format!("opening the event log {}", path.display());
        let connection = Connection::open(path).context(&what)?;
        small_lookaside(&connection);
        // `synchronous = OFF` first: setting the journal mode writes a new file's header, which
        // would otherwise be synced four times (journal, directory, journal, database) on every
        // VM's first boot. Page size and auto-vacuum only take effect on a new, empty file.
        connection
            .execute_batch(&format!(
                "PRAGMA synchronous = OFF; PRAGMA page_size = {PAGE_SIZE}; PRAGMA auto_vacuum = INCREMENTAL;
                 PRAGMA journal_mode = TRUNCATE; PRAGMA busy_timeout = 5000;"
            ))
            .context(&what)?;
        // One transaction for the whole schema (each statement would otherwise be its own).
        connection.execute_batch(&format!("BEGIN; {SCHEMA} COMMIT;")).context("creating the event log's tables")?;
        let mut store = EventStore { connection, retention, state: LogState::default() };
        store.migrate_json_log()?;
        store.state = store.load_state()?;
        Ok(store)
    }

    /// The file's connection, for the other tables it holds (the VM's preview tokens,
    /// [`crate::preview`]).
    pub(crate) fn connection_mut(&mut self) -> &mut Connection {
        &mut self.connection
    }

    /// Frees the connection's page cache and compiled statements. Pages are 64 KiB, so even a
    /// quiet log keeps hundreds of KiB cached per VM; an idle VM's log then holds almost none,
    /// and its next write reads back from the operating system's cache the few pages it needs.
    pub fn release_memory(&mut self) {
        // On failure the cache simply stays: nothing is lost.
        let _ = self.connection.execute_batch("PRAGMA shrink_memory");
        // The compiled statements of the appends go too (they are compiled again when needed).
        self.connection.flush_prepared_statement_cache();
    }

    /// The sequence number the next event gets.
    pub fn next_seq(&self) -> u64 {
        self.state.next_seq
    }

    /// Events and payload bytes kept now.
    pub fn retained(&self) -> (u64, u64) {
        (self.state.count, self.state.bytes)
    }

    /// Appends events (in sequence order, each numbered at or after [`EventStore::next_seq`])
    /// in one transaction, and drops the oldest beyond the retention bounds in the same one.
    pub fn append(&mut self, events: &[StoredEvent]) -> Result<()> {
        let Some(last) = events.last() else { return Ok(()) };
        let mut state = self.state;
        let tx = self.connection.transaction().context("writing events")?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO event_log (seq, name, fields, data, size, created_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .context("writing events")?;
            // A number below `next_seq` is already taken (committed before): never rewrite it.
            for event in events.iter().filter(|e| e.seq >= self.state.next_seq) {
                let data: Option<&[u8]> = event.data.as_deref();
                insert
                    .execute(params![event.seq, event.name, event.fields, data, event.size(), event.created_ms])
                    .context("writing events")?;
                state.count += 1;
                state.bytes += event.size();
            }
        }
        state.next_seq = state.next_seq.max(last.seq.saturating_add(1));
        trim(&tx, self.retention, &mut state)?;
        tx.execute(
            "INSERT OR REPLACE INTO event_log_state (id, next_seq, count, bytes) VALUES (0, ?1, ?2, ?3)",
            params![state.next_seq, state.count, state.bytes],
        )
        .context("writing events")?;
        tx.commit().context("writing events")?;
        self.state = state;
        Ok(())
    }

    /// Events with `seq > after` (all retained if `None`), oldest first: at most `limit`, and
    /// no more than `max_bytes` of payload unless the first event alone is larger.
    /// The newest event's name and time, if the log has any.
    pub fn last_event(&self) -> Result<Option<(String, u64)>> {
        self.connection
            .query_row("SELECT name, created_ms FROM event_log ORDER BY seq DESC LIMIT 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .context("reading the newest event")
    }

    pub fn read(&self, after: Option<u64>, limit: usize, max_bytes: u64) -> Result<Vec<StoredEvent>> {
        let mut statement = self
            .connection
            .prepare_cached(
                "SELECT seq, name, fields, data, created_ms, size FROM event_log WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .context("reading events")?;
        let after = after.map_or(-1, |a| a.min(i64::MAX as u64) as i64);
        let limit = limit.min(i64::MAX as usize) as i64;
        let mut rows = statement.query(params![after, limit]).context("reading events")?;
        let mut events = Vec::new();
        let mut bytes = 0u64;
        while let Some(row) = rows.next().context("reading events")? {
            let size: u64 = row.get(5).context("reading events")?;
            if !events.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            let data: Option<Vec<u8>> = row.get(3).context("reading events")?;
            events.push(StoredEvent {
                seq: row.get(0).context("reading events")?,
                name: row.get(1).context("reading events")?,
                fields: row.get(2).context("reading events")?,
                data: data.map(bytes::Bytes::from),
                created_ms: row.get(4).context("reading events")?,
            });
        }
        Ok(events)
    }

    /// Returns freed pages to the file system: for a log about to be closed for a while (its
    /// VM sleeps).
    pub fn compact(&self) -> Result<()> {
        self.connection.execute_batch("PRAGMA incremental_vacuum;").context("compacting the event log")
    }

    /// Writes a consistent copy of the log (every committed event) to `dest`, a file that must
    /// not exist: a snapshot of the VM's history, taken while it keeps running.
    pub fn copy_to(&self, dest: &Path) -> Result<()> {
        let dest = dest
            .to_str()
            .ok_or_else(|| rusqlite::Error::InvalidPath(dest.to_path_buf()))
            .context("copying the event log")?;
        self.connection.execute("VACUUM INTO ?1", params![dest]).context("copying the event log")?;
        Ok(())
    }

    fn load_state(&self) -> Result<LogState> {
        let stored = self
            .connection
            .query_row("SELECT next_seq, count, bytes FROM event_log_state WHERE id = 0", [], |r| {
                Ok(LogState { next_seq: r.get(0)?, count: r.get(1)?, bytes: r.get(2)? })
            })
            .optional()
            .context("reading the event log's state")?;
        if let Some(state) = stored {
            return Ok(state);
        }
        // No state row yet: a new log, or one written before the row existed.
        self.connection
            .query_row("SELECT MAX(seq), COUNT(*), COALESCE(SUM(size), 0) FROM event_log", [], |r| {
                let last: Option<u64> = r.get(0)?;
                Ok(LogState { next_seq: last.map_or(0, |s| s + 1), count: r.get(1)?, bytes: r.get(2)? })
            })
            .context("reading the event log's state")
    }

    /// Moves the events of the first layout (table `events`: the payload as one JSON text,
    /// bytes as `["$Uint8Array", base64]`) into `event_log`, then drops the old table.
    fn migrate_json_log(&mut self) -> Result<()> {
        let exists: bool = self
            .connection
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events')",
                [],
                |r| r.get(0),
            )
            .context("reading the event log's tables")?;
        if !exists {
            return Ok(());
        }
        let tx = self.connection.transaction().context("converting the event log")?;
        {
            let mut select = tx
                .prepare("SELECT seq, name, payload, created_ms FROM events ORDER BY seq")
                .context("converting the event log")?;
            let mut insert = tx
                .prepare(
                    "INSERT OR IGNORE INTO event_log (seq, name, fields, data, size, created_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .context("converting the event log")?;
            let mut rows = select.query([]).context("converting the event log")?;
            while let Some(row) = rows.next().context("converting the event log")? {
                let payload: String = row.get(2).context("converting the event log")?;
                let (fields, data) = split_json_payload(&payload);
                let event = StoredEvent {
                    seq: row.get(0).context("converting the event log")?,
                    name: row.get(1).context("converting the event log")?,
                    fields,
                    data,
                    created_ms: row.get(3).context("converting the event log")?,
                };
                insert
                    .execute(params![
                        event.seq,
                        event.name,
                        event.fields,
                        event.data.as_deref(),
                        event.size(),
                        event.created_ms
                    ])
                    .context("converting the event log")?;
            }
        }
        tx.execute_batch("DROP TABLE events").context("converting the event log")?;
        tx.commit().context("converting the event log")
    }
}

/// Drops the oldest events until the log is within `retention` (keeping the newest).
fn trim(tx: &rusqlite::Transaction<'_>, retention: Retention, state: &mut LogState) -> Result<()> {
    if state.count <= retention.events.max(1) && state.bytes <= retention.bytes {
        return Ok(());
    }
    let newest = state.next_seq.saturating_sub(1);
    let mut select =
        tx.prepare_cached("SELECT seq, size FROM event_log WHERE seq < ?1 ORDER BY seq").context("trimming events")?;
    let mut rows = select.query(params![newest]).context("trimming events")?;
    let mut cut = None;
    while state.count > retention.events.max(1) || state.bytes > retention.bytes {
        let Some(row) = rows.next().context("trimming events")? else { break };
        let (seq, size): (u64, u64) = (row.get(0).context("trimming events")?, row.get(1).context("trimming events")?);
        cut = Some(seq);
        state.count -= 1;
        state.bytes = state.bytes.saturating_sub(size);
    }
    drop(rows);
    if let Some(cut) = cut {
        tx.execute("DELETE FROM event_log WHERE seq <= ?1", params![cut]).context("trimming events")?;
    }
    Ok(())
}

/// Splits a first-layout JSON payload into its fields and its bytes (`data`).
fn split_json_payload(payload: &str) -> (String, Option<bytes::Bytes>) {
    use base64::Engine;
    let Ok(serde_json::Value::Object(mut fields)) = serde_json::from_str::<serde_json::Value>(payload) else {
        return ("{}".to_string(), None);
    };
    let data = match fields.get("data") {
        Some(serde_json::Value::Array(tagged)) => match tagged.as_slice() {
            [serde_json::Value::String(tag), serde_json::Value::String(b64)] if tag == "$Uint8Array" => {
                base64::engine::general_purpose::STANDARD.decode(b64).ok().map(bytes::Bytes::from)
            }
            _ => None,
        },
        _ => None,
    };
    if data.is_some() {
        fields.remove("data");
    }
    (serde_json::Value::Object(fields).to_string(), data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, size: usize) -> StoredEvent {
        StoredEvent {
            seq,
            name: "processOutput".into(),
            fields: r#"{"pid":1,"stream":"stdout"}"#.into(),
            data: Some(bytes::Bytes::from(vec![b'x'; size])),
            created_ms: 7,
        }
    }

    const ALL: u64 = u64::MAX;

    #[test]
    fn append_read_from_a_cursor_and_resume_numbering() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.sqlite3");
        let mut store = EventStore::open(&path, Retention::default()).unwrap();
        assert_eq!(store.next_seq(), 0);
        store.append(&[event(0, 1), event(1, 1), event(2, 1)]).unwrap();
        let after_first: Vec<u64> = store.read(Some(0), 100, ALL).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(after_first, [1, 2]);
        assert_eq!(store.read(None, 2, ALL).unwrap().len(), 2);
        let read = store.read(Some(1), 1, ALL).unwrap();
        assert_eq!(read, [event(2, 1)]);
        drop(store);
        let store = EventStore::open(&path, Retention::default()).unwrap();
        assert_eq!(store.next_seq(), 3);
        assert_eq!(store.retained().0, 3);
    }

    #[test]
    fn reads_stop_at_the_byte_bound_but_return_at_least_one_event() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = EventStore::open(&dir.path().join("vm.sqlite3"), Retention::default()).unwrap();
        store.append(&(0..10).map(|s| event(s, 1000)).collect::<Vec<_>>()).unwrap();
        assert_eq!(store.read(None, 100, 3500).unwrap().len(), 3);
        assert_eq!(store.read(None, 100, 10).unwrap().len(), 1);
    }

    #[test]
    fn retention_drops_the_oldest_and_numbering_survives_an_empty_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.sqlite3");
        let retention = Retention { events: 100, bytes: 1 << 20 };
        let mut store = EventStore::open(&path, retention).unwrap();
        store.append(&(0..110).map(|s| event(s, 1)).collect::<Vec<_>>()).unwrap();
        let kept = store.read(None, usize::MAX, ALL).unwrap();
        assert_eq!(kept.len(), 100);
        assert_eq!(kept[0].seq, 10);
        // Byte bound: a few large events push out the older ones; the newest always stays.
        store.append(&(110..116).map(|s| event(s, 300_000)).collect::<Vec<_>>()).unwrap();
        let kept = store.read(None, usize::MAX, ALL).unwrap();
        let bytes: u64 = kept.iter().map(StoredEvent::size).sum();
        assert!(bytes <= retention.bytes, "{bytes}");
        assert_eq!(kept.last().unwrap().seq, 115);
        assert_eq!(store.retained(), (kept.len() as u64, bytes));
        store.append(&[event(116, 2 << 20)]).unwrap();
        assert_eq!(store.read(None, usize::MAX, ALL).unwrap().len(), 1);
        store.compact().unwrap();
        drop(store);
        assert_eq!(EventStore::open(&path, retention).unwrap().next_seq(), 117);
    }

    #[test]
    fn the_first_layout_is_converted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.sqlite3");
        {
            let old = Connection::open(&path).unwrap();
            old.execute_batch(
                r#"CREATE TABLE events (seq INTEGER PRIMARY KEY, name TEXT NOT NULL, payload TEXT NOT NULL,
                       size INTEGER NOT NULL, created_ms INTEGER NOT NULL);
                   INSERT INTO events VALUES (4, 'processOutput', '{"pid":3,"stream":"stderr","data":["$Uint8Array","AAH/"]}', 9, 11);
                   INSERT INTO events VALUES (5, 'processExit', '{"pid":3,"exitCode":0}', 9, 12);"#,
            )
            .unwrap();
        }
        let store = EventStore::open(&path, Retention::default()).unwrap();
        assert_eq!(store.next_seq(), 6);
        let events = store.read(None, 10, ALL).unwrap();
        assert_eq!(events[0].fields, r#"{"pid":3,"stream":"stderr"}"#);
        assert_eq!(events[0].data.as_deref(), Some(&[0u8, 1, 255][..]));
        assert_eq!((events[1].fields.as_str(), events[1].data.is_none()), (r#"{"pid":3,"exitCode":0}"#, true));
    }
}
