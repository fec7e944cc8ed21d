//! The actor registry: (namespace, name, key) → actor id, durable across restarts.
//!
//! Each address has a *generation*: destroying an actor keeps its row (marked destroyed) so that
//! the next `getOrCreate` of the same address gets generation + 1 and with it a new actor id and
//! a fresh VM, while clients that still hold the old id get "not found".

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, OptionalExtension};

use crate::{open, Context, Result};

/// One live actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorRecord {
    pub actor_id: String,
    pub namespace: String,
    pub name: String,
    /// The key in its REST form (see the server's `keys` module).
    pub key: String,
    pub generation: u64,
    pub created_ms: u64,
}

pub struct Registry {
    connection: Mutex<rusqlite::Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS actors (
    namespace   TEXT NOT NULL,
    name        TEXT NOT NULL,
    key         TEXT NOT NULL,
    actor_id    TEXT NOT NULL UNIQUE,
    generation  INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL,
    destroyed   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (namespace, name, key)
);
";

impl Registry {
    pub fn open(path: &Path) -> Result<Registry> {
        let connection = open(path)?;
        connection.execute_batch(SCHEMA).context("creating the registry schema")?;
        Ok(Registry { connection: Mutex::new(connection) })
    }

    /// Every live actor, oldest first.
    pub fn live(&self) -> Result<Vec<ActorRecord>> {
        let connection = self.connection.lock().unwrap();
        let mut statement = connection
            .prepare(
                "SELECT actor_id, namespace, name, key, generation, created_ms FROM actors
                 WHERE destroyed = 0 ORDER BY created_ms, actor_id",
            )
            .context("listing actors")?;
        let rows = statement.query_map([], row_to_record).context("listing actors")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().context("listing actors")
    }

    /// The live actor at an address, if any.
    pub fn find(&self, namespace: &str, name: &str, key: &str) -> Result<Option<ActorRecord>> {
        let connection = self.connection.lock().unwrap();
        connection
            .query_row(
                "SELECT actor_id, namespace, name, key, generation, created_ms FROM actors
                 WHERE namespace = ?1 AND name = ?2 AND key = ?3 AND destroyed = 0",
                params![namespace, name, key],
                row_to_record,
            )
            .optional()
            .context("looking up an actor")
    }

    /// Creates the actor at an address (a new generation after a destroy), with the id
    /// `make_id(generation)`. Returns the existing live actor and `false` if there is one.
    pub fn get_or_create(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
        created_ms: u64,
        make_id: impl FnOnce(u64) -> String,
    ) -> Result<(ActorRecord, bool)> {
        let mut connection = self.connection.lock().unwrap();
        let tx = connection.transaction().context("creating an actor")?;
        let existing: Option<(String, u64, u64, bool)> = tx
            .query_row(
                "SELECT actor_id, generation, created_ms, destroyed FROM actors
                 WHERE namespace = ?1 AND name = ?2 AND key = ?3",
                params![namespace, name, key],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, i64>(3)? != 0)),
            )
            .optional()
            .context("creating an actor")?;
        let record = |actor_id: String, generation: u64, created_ms: u64| ActorRecord {
            actor_id,
            namespace: namespace.to_string(),
            name: name.to_string(),
            key: key.to_string(),
            generation,
            created_ms,
        };
        let (created, result) = match existing {
            Some((actor_id, generation, created_ms, false)) => (false, record(actor_id, generation, created_ms)),
            Some((_, generation, _, true)) => {
                let generation = generation + 1;
                let actor_id = make_id(generation);
                tx.execute(
                    "UPDATE actors SET actor_id = ?4, generation = ?5, created_ms = ?6, destroyed = 0
                     WHERE namespace = ?1 AND name = ?2 AND key = ?3",
                    params![namespace, name, key, actor_id, generation, created_ms],
                )
                .context("creating an actor")?;
                (true, record(actor_id, generation, created_ms))
            }
            None => {
                let actor_id = make_id(0);
                tx.execute(
                    "INSERT INTO actors (namespace, name, key, actor_id, generation, created_ms) VALUES (?1, ?2, ?3, ?4, 0, ?5)",
                    params![namespace, name, key, actor_id, created_ms],
                )
                .context("creating an actor")?;
                (true, record(actor_id, 0, created_ms))
            }
        };
        tx.commit().context("creating an actor")?;
        Ok((result, created))
    }

    /// Marks an actor destroyed (its generation is kept for the next creation).
    pub fn destroy(&self, actor_id: &str) -> Result<bool> {
        let connection = self.connection.lock().unwrap();
        let changed = connection
            .execute("UPDATE actors SET destroyed = 1 WHERE actor_id = ?1 AND destroyed = 0", params![actor_id])
            .context("destroying an actor")?;
        Ok(changed > 0)
    }
}

fn row_to_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<ActorRecord> {
    Ok(ActorRecord {
        actor_id: r.get(0)?,
        namespace: r.get(1)?,
        name: r.get(2)?,
        key: r.get(3)?,
        generation: r.get(4)?,
        created_ms: r.get(5)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_find_destroy_recreate_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.sqlite3");
        let registry = Registry::open(&path).unwrap();
        let (a, created) = registry.get_or_create("default", "vm", "k", 1, |g| format!("id-{g}")).unwrap();
        assert!(created);
        assert_eq!((a.actor_id.as_str(), a.generation), ("id-0", 0));
        let (again, created) = registry.get_or_create("default", "vm", "k", 2, |g| format!("id-{g}")).unwrap();
        assert!(!created);
        assert_eq!(again, a);
        assert_eq!(registry.find("default", "vm", "k").unwrap(), Some(a.clone()));
        assert!(registry.destroy("id-0").unwrap());
        assert!(!registry.destroy("id-0").unwrap());
        assert_eq!(registry.find("default", "vm", "k").unwrap(), None);
        let (fresh, created) = registry.get_or_create("default", "vm", "k", 3, |g| format!("id-{g}")).unwrap();
        assert!(created);
        assert_eq!((fresh.actor_id.as_str(), fresh.generation), ("id-1", 1));
        drop(registry);
        let reopened = Registry::open(&path).unwrap();
        assert_eq!(reopened.live().unwrap(), vec![fresh]);
    }
}
