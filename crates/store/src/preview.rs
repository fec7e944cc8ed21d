//! Preview tokens (signed preview URLs), kept in two places:
//!
//! - **the VM's own file** (`<data>/vms/<id>/vm.sqlite3`, next to its event log), table
//!   `preview_tokens (token, port, created_ms, expires_ms)`: the authority. A token is valid
//!   while its row exists and `expires_ms > now`; it lives and dies with the VM's data
//!   (a destroyed VM's file is deleted), and survives restarts.
//! - **the registry** (`<data>/registry.sqlite3`), table `preview_tokens (token, actor_id,
//!   expires_ms)`: an index, so that the stable path `/request/fetch/<token>/…` finds the VM
//!   from the token alone without opening every VM's file. Its rows go when the token is
//!   expired by hand and when the actor is destroyed ([`crate::Registry::destroy`]).
//!
//! Writing the VM's file first and deleting from it first means the index can only ever hold
//! *more* than the authority, never less: a stale index row leads to a VM whose file says no.
//! Expired rows are deleted lazily, when they are looked up and when a token is added.

use rusqlite::{params, Connection, OptionalExtension};

use crate::{Context, EventStore, Registry, Result};

/// One valid token of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreviewToken {
    /// The VM port the token opens.
    pub port: u16,
    pub created_ms: u64,
    /// When it stops working, in milliseconds since the Unix epoch.
    pub expires_ms: u64,
}

const VM_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS preview_tokens (
    token       TEXT PRIMARY KEY,
    port        INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL,
    expires_ms  INTEGER NOT NULL
);
";

/// The registry's index (created with the registry's other tables).
pub(crate) const REGISTRY_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS preview_tokens (
    token       TEXT PRIMARY KEY,
    actor_id    TEXT NOT NULL,
    expires_ms  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS preview_tokens_by_actor ON preview_tokens (actor_id);
";

/// The VM file's side. Each call is one transaction.
impl EventStore {
    /// Records a token of this VM (and drops the VM's expired ones).
    pub fn add_preview_token(&mut self, token: &str, entry: PreviewToken, now_ms: u64) -> Result<()> {
        let tx = self.connection_mut().transaction().context("adding a preview token")?;
        tx.execute_batch(VM_SCHEMA).context("creating the preview token table")?;
        tx.execute("DELETE FROM preview_tokens WHERE expires_ms <= ?1", params![now_ms])
            .context("dropping expired preview tokens")?;
        tx.execute(
            "INSERT OR REPLACE INTO preview_tokens (token, port, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4)",
            params![token, entry.port, entry.created_ms, entry.expires_ms],
        )
        .context("adding a preview token")?;
        tx.commit().context("adding a preview token")
    }

    /// The token if it is valid at `now_ms`; an expired one is deleted.
    pub fn preview_token(&mut self, token: &str, now_ms: u64) -> Result<Option<PreviewToken>> {
        let tx = self.connection_mut().transaction().context("checking a preview token")?;
        if !has_table(&tx)? {
            return Ok(None);
        }
        let found = tx
            .query_row(
                "SELECT port, created_ms, expires_ms FROM preview_tokens WHERE token = ?1",
                params![token],
                |r| Ok(PreviewToken { port: r.get(0)?, created_ms: r.get(1)?, expires_ms: r.get(2)? }),
            )
            .optional()
            .context("checking a preview token")?;
        let valid = found.filter(|t| t.expires_ms > now_ms);
        if found.is_some() && valid.is_none() {
            tx.execute("DELETE FROM preview_tokens WHERE token = ?1", params![token])
                .context("dropping an expired preview token")?;
        }
        tx.commit().context("checking a preview token")?;
        Ok(valid)
    }

    /// Deletes a token; `false` if the VM had none by that name.
    pub fn remove_preview_token(&mut self, token: &str) -> Result<bool> {
        let tx = self.connection_mut().transaction().context("expiring a preview token")?;
        if !has_table(&tx)? {
            return Ok(false);
        }
        let deleted = tx
            .execute("DELETE FROM preview_tokens WHERE token = ?1", params![token])
            .context("expiring a preview token")?;
        tx.commit().context("expiring a preview token")?;
        Ok(deleted > 0)
    }
}

/// Whether the VM's file has the table yet (it is created with the first token, so reading a
/// VM that never had one writes nothing).
fn has_table(connection: &Connection) -> Result<bool> {
    connection
        .query_row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'preview_tokens'", [], |_| Ok(()))
        .optional()
        .map(|found| found.is_some())
        .context("checking a preview token")
}

/// The registry's side: token → actor.
impl Registry {
    /// Indexes a token of `actor_id` (and drops expired index rows).
    pub fn index_preview_token(&self, token: &str, actor_id: &str, expires_ms: u64, now_ms: u64) -> Result<()> {
        self.with_connection(|connection| {
            let tx = connection.transaction().context("indexing a preview token")?;
            tx.execute("DELETE FROM preview_tokens WHERE expires_ms <= ?1", params![now_ms])
                .context("dropping expired preview tokens")?;
            tx.execute(
                "INSERT OR REPLACE INTO preview_tokens (token, actor_id, expires_ms) VALUES (?1, ?2, ?3)",
                params![token, actor_id, expires_ms],
            )
            .context("indexing a preview token")?;
            tx.commit().context("indexing a preview token")
        })
    }

    /// The actor a token belongs to, if the index has it unexpired at `now_ms`.
    pub fn preview_token_actor(&self, token: &str, now_ms: u64) -> Result<Option<String>> {
        self.with_connection(|connection| {
            connection
                .query_row(
                    "SELECT actor_id FROM preview_tokens WHERE token = ?1 AND expires_ms > ?2",
                    params![token, now_ms],
                    |r| r.get(0),
                )
                .optional()
                .context("looking up a preview token")
        })
    }

    /// Removes a token from the index.
    pub fn unindex_preview_token(&self, token: &str) -> Result<()> {
        self.with_connection(|connection| {
            connection
                .execute("DELETE FROM preview_tokens WHERE token = ?1", params![token])
                .map(drop)
                .context("removing a preview token")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventRetention;

    #[test]
    fn a_token_is_valid_until_it_expires_or_is_removed_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.sqlite3");
        let mut store = EventStore::open(&path, EventRetention::default()).unwrap();
        assert_eq!(store.preview_token("nope", 1).unwrap(), None, "no table yet: nothing");
        assert!(!store.remove_preview_token("nope").unwrap());
        let entry = PreviewToken { port: 8000, created_ms: 1, expires_ms: 100 };
        store.add_preview_token("a", entry, 1).unwrap();
        store.add_preview_token("b", PreviewToken { expires_ms: 50, ..entry }, 1).unwrap();
        assert_eq!(store.preview_token("a", 99).unwrap(), Some(entry));
        drop(store);
        let mut store = EventStore::open(&path, EventRetention::default()).unwrap();
        assert_eq!(store.preview_token("a", 99).unwrap(), Some(entry), "it survives reopening");
        assert_eq!(store.preview_token("b", 50).unwrap(), None, "expired at its expiry time");
        assert!(!store.remove_preview_token("b").unwrap(), "the expired row was deleted when looked up");
        assert!(store.remove_preview_token("a").unwrap());
        assert_eq!(store.preview_token("a", 2).unwrap(), None);
    }

    #[test]
    fn the_registry_index_finds_the_actor_until_expiry_removal_or_destroy() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(&dir.path().join("registry.sqlite3")).unwrap();
        let crate::Resolved::Created(actor) =
            registry.get_or_create("default", "vm", "k", 1, 10, |g| format!("id-{g}")).unwrap()
        else {
            panic!("not created")
        };
        registry.index_preview_token("t1", &actor.actor_id, 100, 1).unwrap();
        registry.index_preview_token("t2", &actor.actor_id, 100, 1).unwrap();
        registry.index_preview_token("t3", "other", 100, 1).unwrap();
        assert_eq!(registry.preview_token_actor("t1", 99).unwrap().as_deref(), Some("id-0"));
        assert_eq!(registry.preview_token_actor("t1", 100).unwrap(), None, "expired");
        registry.unindex_preview_token("t1").unwrap();
        assert_eq!(registry.preview_token_actor("t1", 2).unwrap(), None, "removed");
        assert!(registry.destroy("id-0").unwrap());
        assert_eq!(registry.preview_token_actor("t2", 2).unwrap(), None, "gone with its actor");
        assert_eq!(registry.preview_token_actor("t3", 2).unwrap().as_deref(), Some("other"), "others stay");
    }
}
