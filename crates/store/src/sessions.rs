//! Agent sessions' durable records and transcripts, in the VM's own file
//! (`<data>/vms/<id>/vm.sqlite3`, next to its event log), so they live and die with the VM's
//! data and can be read while the VM sleeps, without booting it:
//!
//! - `sessions (session_id, agent_type, agent_session_id, cwd, capabilities, agent_info,
//!   created_ms, closed_ms)`: one row per session. `session_id` is agentvm's id (what clients
//!   use), `agent_session_id` the agent's own (what `session/load` needs after a restart).
//! - `session_events (session_id, seq, event, created_ms)`: every event of a session — each
//!   `session/update`, permission request and answer, prompt and result — numbered from 0 per
//!   session, gap-free. An event is written here *before* anyone is told of it, so a number a
//!   client saw is never lost or reused.
//!
//! Unlike the VM's event log, transcripts are not trimmed by retention: they are the agent's
//! conversation. They go when the session is destroyed or the VM is. They are bounded all the
//! same, since an agent (or a program posing as one inside the VM) decides how much it sends and
//! the file is on the host's disk, outside the VM's quota: a session keeps at most
//! [`MAX_SESSION_EVENTS`] events and [`MAX_SESSION_BYTES`], all of a VM's sessions together
//! [`MAX_VM_BYTES`]. Past a limit nothing more is written for that session except one last
//! event, `{"method": "agentvm/transcript_full"}`, so a reader knows the rest was not kept.

use rusqlite::{params, Connection, OptionalExtension};

use crate::{Context, EventStore, Result};

/// Most events one session's transcript keeps.
pub const MAX_SESSION_EVENTS: u64 = 100_000;
/// Most bytes (of event JSON) one session's transcript keeps.
pub const MAX_SESSION_BYTES: u64 = 256 << 20;
/// Most bytes all the transcripts of one VM keep.
pub const MAX_VM_BYTES: u64 = 1 << 30;

/// The event that ends a transcript that reached a limit.
pub const TRANSCRIPT_FULL: &str = r#"{"method":"agentvm/transcript_full"}"#;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    session_id        TEXT PRIMARY KEY,
    agent_type        TEXT NOT NULL,
    agent_session_id  TEXT,
    cwd               TEXT NOT NULL,
    capabilities      TEXT NOT NULL DEFAULT '{}',
    agent_info        TEXT NOT NULL DEFAULT '{}',
    env               TEXT NOT NULL DEFAULT '{}',
    created_ms        INTEGER NOT NULL,
    closed_ms         INTEGER,
    event_count       INTEGER NOT NULL DEFAULT 0,
    event_bytes       INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS session_events (
    session_id  TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    event       TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
";

/// A session's durable record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub session_id: String,
    pub agent_type: String,
    /// The agent's own id for the session (from `session/new`), once known.
    pub agent_session_id: Option<String>,
    pub cwd: String,
    /// The agent's capabilities and info from `initialize`, as JSON text.
    pub capabilities: String,
    pub agent_info: String,
    /// The environment the agent was started with (JSON object), to start it again the same
    /// way when the session is resumed.
    pub env: String,
    pub created_ms: u64,
    /// When `closeSession` ended it; `None` while it is open (or was open when the VM stopped).
    pub closed_ms: Option<u64>,
}

/// One event of a session's transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEvent {
    pub seq: u64,
    /// The event as JSON text (a JSON-RPC message or agentvm's record of one).
    pub event: String,
    pub created_ms: u64,
}

fn ensure_schema(connection: &Connection) -> Result<()> {
    connection.execute_batch(SCHEMA).context("creating the session tables")
}

fn has_tables(connection: &Connection) -> Result<bool> {
    connection
        .query_row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sessions'", [], |_| Ok(()))
        .optional()
        .context("looking for the session tables")
        .map(|found| found.is_some())
}

/// The number the next event of `session_id` gets (its events are numbered from 0, gap-free).
fn next_event_seq(connection: &Connection, session_id: &str) -> Result<u64> {
    connection
        .query_row(
            "SELECT COALESCE(MAX(seq) + 1, 0) FROM session_events WHERE session_id = ?1",
            params![session_id],
            |r| r.get(0),
        )
        .context("numbering session events")
}

fn row_to_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        session_id: r.get(0)?,
        agent_type: r.get(1)?,
        agent_session_id: r.get(2)?,
        cwd: r.get(3)?,
        capabilities: r.get(4)?,
        agent_info: r.get(5)?,
        env: r.get(6)?,
        created_ms: r.get(7)?,
        closed_ms: r.get(8)?,
    })
}

const RECORD_COLUMNS: &str =
    "session_id, agent_type, agent_session_id, cwd, capabilities, agent_info, env, created_ms, closed_ms";

/// Sessions in the VM's file. Each call is one transaction.
impl EventStore {
    /// Records a new session (or replaces the record of one with the same id).
    pub fn put_session(&mut self, record: &SessionRecord) -> Result<()> {
        let tx = self.connection_mut().transaction().context("recording a session")?;
        ensure_schema(&tx)?;
        tx.execute(
            &format!(
                "INSERT INTO sessions ({RECORD_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (session_id) DO UPDATE SET agent_type = excluded.agent_type,
                   agent_session_id = excluded.agent_session_id, cwd = excluded.cwd,
                   capabilities = excluded.capabilities, agent_info = excluded.agent_info, env = excluded.env,
                   created_ms = excluded.created_ms, closed_ms = excluded.closed_ms"
            ),
            params![
                record.session_id,
                record.agent_type,
                record.agent_session_id,
                record.cwd,
                record.capabilities,
                record.agent_info,
                record.env,
                record.created_ms,
                record.closed_ms
            ],
        )
        .context("recording a session")?;
        tx.commit().context("recording a session")
    }

    /// Every session, oldest first.
    pub fn sessions(&mut self) -> Result<Vec<SessionRecord>> {
        let connection = self.connection_mut();
        if !has_tables(connection)? {
            return Ok(Vec::new());
        }
        let mut statement = connection
            .prepare(&format!("SELECT {RECORD_COLUMNS} FROM sessions ORDER BY created_ms, session_id"))
            .context("listing sessions")?;
        let rows = statement.query_map([], row_to_record).context("listing sessions")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().context("listing sessions")
    }

    /// One session's record.
    pub fn session(&mut self, session_id: &str) -> Result<Option<SessionRecord>> {
        let connection = self.connection_mut();
        if !has_tables(connection)? {
            return Ok(None);
        }
        connection
            .query_row(
                &format!("SELECT {RECORD_COLUMNS} FROM sessions WHERE session_id = ?1"),
                params![session_id],
                row_to_record,
            )
            .optional()
            .context("reading a session")
    }

    /// Appends events to a session's transcript, numbered after its last; returns their
    /// numbers (none when the transcript is full: see the module's limits). Durable (committed)
    /// when it returns.
    pub fn append_session_events(&mut self, session_id: &str, events: &[(String, u64)]) -> Result<Vec<u64>> {
        let tx = self.connection_mut().transaction().context("appending session events")?;
        ensure_schema(&tx)?;
        let (count, bytes): (u64, u64) = tx
            .query_row(
                "SELECT event_count, event_bytes FROM sessions WHERE session_id = ?1",
                params![session_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .context("reading a transcript's size")?
            .unwrap_or((0, 0));
        let vm_bytes: u64 = tx
            .query_row("SELECT COALESCE(SUM(event_bytes), 0) FROM sessions", [], |r| r.get(0))
            .context("reading the transcripts' size")?;
        let adding: u64 = events.iter().map(|(e, _)| e.len() as u64).sum();
        let full = count >= MAX_SESSION_EVENTS
            || count + events.len() as u64 > MAX_SESSION_EVENTS - 1
            || bytes + adding > MAX_SESSION_BYTES
            || vm_bytes + adding > MAX_VM_BYTES;
        if full {
            if count < MAX_SESSION_EVENTS {
                // The last event it keeps says so.
                let next = next_event_seq(&tx, session_id)?;
                let now = events.first().map_or(0, |(_, at)| *at);
                tx.execute(
                    "INSERT INTO session_events (session_id, seq, event, created_ms) VALUES (?1, ?2, ?3, ?4)",
                    params![session_id, next, TRANSCRIPT_FULL, now],
                )
                .context("closing a full transcript")?;
                tx.execute(
                    "UPDATE sessions SET event_count = ?2 WHERE session_id = ?1",
                    params![session_id, MAX_SESSION_EVENTS],
                )
                .context("closing a full transcript")?;
            }
            tx.commit().context("appending session events")?;
            return Ok(Vec::new());
        }
        tx.execute(
            "UPDATE sessions SET event_count = event_count + ?2, event_bytes = event_bytes + ?3 WHERE session_id = ?1",
            params![session_id, events.len() as u64, adding],
        )
        .context("counting session events")?;
        let next = next_event_seq(&tx, session_id)?;
        let mut numbers = Vec::with_capacity(events.len());
        {
            let mut insert = tx
                .prepare("INSERT INTO session_events (session_id, seq, event, created_ms) VALUES (?1, ?2, ?3, ?4)")
                .context("appending session events")?;
            for (offset, (event, created_ms)) in events.iter().enumerate() {
                let seq = next + offset as u64;
                insert.execute(params![session_id, seq, event, created_ms]).context("appending session events")?;
                numbers.push(seq);
            }
        }
        tx.commit().context("appending session events")?;
        Ok(numbers)
    }

    /// A session's events with `seq > after` (all with `None`), at most `limit`, in order.
    pub fn session_events(&mut self, session_id: &str, after: Option<u64>, limit: usize) -> Result<Vec<SessionEvent>> {
        let connection = self.connection_mut();
        if !has_tables(connection)? {
            return Ok(Vec::new());
        }
        let from = after.map_or(0, |a| a.saturating_add(1));
        let mut statement = connection
            .prepare(
                "SELECT seq, event, created_ms FROM session_events WHERE session_id = ?1 AND seq >= ?2
                 ORDER BY seq LIMIT ?3",
            )
            .context("reading session events")?;
        let rows = statement
            .query_map(params![session_id, from, limit as i64], |r| {
                Ok(SessionEvent { seq: r.get(0)?, event: r.get(1)?, created_ms: r.get(2)? })
            })
            .context("reading session events")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().context("reading session events")
    }

    /// Deletes a session and its transcript.
    pub fn delete_session(&mut self, session_id: &str) -> Result<bool> {
        let tx = self.connection_mut().transaction().context("deleting a session")?;
        if !has_tables(&tx)? {
            return Ok(false);
        }
        tx.execute("DELETE FROM session_events WHERE session_id = ?1", params![session_id])
            .context("deleting a session's events")?;
        let deleted = tx
            .execute("DELETE FROM sessions WHERE session_id = ?1", params![session_id])
            .context("deleting a session")?;
        tx.commit().context("deleting a session")?;
        Ok(deleted > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventRetention;

    fn record(id: &str, created_ms: u64) -> SessionRecord {
        SessionRecord {
            session_id: id.into(),
            agent_type: "pi".into(),
            agent_session_id: None,
            cwd: "/home/user".into(),
            capabilities: "{}".into(),
            agent_info: "{}".into(),
            env: "{}".into(),
            created_ms,
            closed_ms: None,
        }
    }

    #[test]
    fn sessions_and_transcripts_survive_a_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.sqlite3");
        {
            let mut store = EventStore::open(&path, EventRetention::default()).unwrap();
            assert!(store.sessions().unwrap().is_empty(), "no tables yet: nothing, and no error");
            assert!(store.session_events("s1", None, 10).unwrap().is_empty());
            store.put_session(&record("s1", 10)).unwrap();
            store.put_session(&record("s2", 20)).unwrap();
            assert_eq!(
                store.append_session_events("s1", &[("{\"a\":1}".into(), 11), ("{\"a\":2}".into(), 12)]).unwrap(),
                vec![0, 1]
            );
            assert_eq!(store.append_session_events("s2", &[("{}".into(), 21)]).unwrap(), vec![0]);
            assert_eq!(store.append_session_events("s1", &[("{\"a\":3}".into(), 13)]).unwrap(), vec![2]);
            let mut updated = record("s1", 10);
            updated.agent_session_id = Some("agent-1".into());
            store.put_session(&updated).unwrap();
        }
        let mut store = EventStore::open(&path, EventRetention::default()).unwrap();
        let sessions = store.sessions().unwrap();
        assert_eq!(sessions.iter().map(|s| s.session_id.as_str()).collect::<Vec<_>>(), ["s1", "s2"]);
        assert_eq!(store.session("s1").unwrap().unwrap().agent_session_id.as_deref(), Some("agent-1"));
        let events = store.session_events("s1", None, 10).unwrap();
        assert_eq!(
            events.iter().map(|e| (e.seq, e.event.as_str())).collect::<Vec<_>>(),
            [(0, "{\"a\":1}"), (1, "{\"a\":2}"), (2, "{\"a\":3}")]
        );
        assert_eq!(store.session_events("s1", Some(0), 1).unwrap()[0].seq, 1);
        assert!(store.delete_session("s1").unwrap());
        assert!(store.session_events("s1", None, 10).unwrap().is_empty());
        assert_eq!(store.append_session_events("s1", &[("{}".into(), 1)]).unwrap(), vec![0]);
        assert!(!store.delete_session("nope").unwrap());
    }

    #[test]
    fn a_full_transcript_keeps_no_more_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = EventStore::open(&dir.path().join("vm.sqlite3"), EventRetention::default()).unwrap();
        store.put_session(&record("s", 1)).unwrap();
        let many: Vec<(String, u64)> = (0..MAX_SESSION_EVENTS - 2).map(|i| (format!("{{\"n\":{i}}}"), 1)).collect();
        assert_eq!(store.append_session_events("s", &many).unwrap().len(), many.len());
        assert_eq!(store.append_session_events("s", &[("{}".into(), 2)]).unwrap(), vec![MAX_SESSION_EVENTS - 2]);
        assert!(store.append_session_events("s", &[("{}".into(), 3)]).unwrap().is_empty());
        assert!(store.append_session_events("s", &[("{}".into(), 4)]).unwrap().is_empty());
        let tail = store.session_events("s", Some(MAX_SESSION_EVENTS - 3), 10).unwrap();
        assert_eq!(tail.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(), ["{}", TRANSCRIPT_FULL]);
        // Updating the record (closing it) does not reset its size.
        let mut closed = record("s", 1);
        closed.closed_ms = Some(9);
        store.put_session(&closed).unwrap();
        assert!(store.append_session_events("s", &[("{}".into(), 5)]).unwrap().is_empty());
    }
}
