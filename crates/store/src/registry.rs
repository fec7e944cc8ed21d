//! The actor registry: (namespace, name, key) → actor id, durable across restarts.
//!
//! It also indexes the VMs' preview tokens (token → actor, see [`crate::preview`]); an actor's
//! rows there go with it.
//!
//! Each address has a *generation*: destroying an actor deletes its row but remembers the
//! address's last generation (table `generations`), so that the next `getOrCreate` of the same
//! address gets generation + 1 and with it a new actor id and a fresh VM, while clients that
//! still hold the old id get "not found".
//!
//! The registry also enforces the server's cap on live actors, exactly: the count is kept next
//! to the connection and checked in the creating transaction.

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
    /// The connection and the number of live actors (rows of `actors`), kept together.
    connection: Mutex<(rusqlite::Connection, u64)>,
}

/// What [`Registry::get_or_create`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    Existing(ActorRecord),
    Created(ActorRecord),
    /// Creating would exceed the cap on live actors (`limit`).
    Full {
        limit: u64,
    },
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS actors (
    namespace   TEXT NOT NULL,
    name        TEXT NOT NULL,
    key         TEXT NOT NULL,
    actor_id    TEXT NOT NULL UNIQUE,
    generation  INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL,
    PRIMARY KEY (namespace, name, key)
);
CREATE TABLE IF NOT EXISTS generations (
    namespace   TEXT NOT NULL,
    name        TEXT NOT NULL,
    key         TEXT NOT NULL,
    last        INTEGER NOT NULL,
    PRIMARY KEY (namespace, name, key)
);
";

impl Registry {
    pub fn open(path: &Path) -> Result<Registry> {
        let connection = open(path)?;
        connection.execute_batch(SCHEMA).context("creating the registry schema")?;
        connection.execute_batch(crate::preview::REGISTRY_SCHEMA).context("creating the registry schema")?;
        connection.execute_batch(crate::cron::REGISTRY_SCHEMA).context("creating the registry schema")?;
        let live: u64 =
            connection.query_row("SELECT COUNT(*) FROM actors", [], |r| r.get(0)).context("counting actors")?;
        Ok(Registry { connection: Mutex::new((connection, live)) })
    }

    /// Every live actor, oldest first.
    pub fn live(&self) -> Result<Vec<ActorRecord>> {
        let guard = self.connection.lock().unwrap();
        let connection = &guard.0;
        let mut statement = connection
            .prepare(
                "SELECT actor_id, namespace, name, key, generation, created_ms FROM actors
                 ORDER BY created_ms, actor_id",
            )
            .context("listing actors")?;
        let rows = statement.query_map([], row_to_record).context("listing actors")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().context("listing actors")
    }

    /// The live actor at an address, if any.
    pub fn find(&self, namespace: &str, name: &str, key: &str) -> Result<Option<ActorRecord>> {
        let guard = self.connection.lock().unwrap();
        guard
            .0
            .query_row(
                "SELECT actor_id, namespace, name, key, generation, created_ms FROM actors
                 WHERE namespace = ?1 AND name = ?2 AND key = ?3",
                params![namespace, name, key],
                row_to_record,
            )
            .optional()
            .context("looking up an actor")
    }

    /// Creates the actor at an address (a new generation after a destroy), with the id
    /// `make_id(generation)`, unless `max_live` actors already exist. Returns the existing live
    /// actor if there is one.
    pub fn get_or_create(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
        created_ms: u64,
        max_live: u64,
        make_id: impl FnOnce(u64) -> String,
    ) -> Result<Resolved> {
        let mut guard = self.connection.lock().unwrap();
        let (connection, live) = &mut *guard;
        let tx = connection.transaction().context("creating an actor")?;
        let existing: Option<(String, u64, u64)> = tx
            .query_row(
                "SELECT actor_id, generation, created_ms FROM actors WHERE namespace = ?1 AND name = ?2 AND key = ?3",
                params![namespace, name, key],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
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
        let resolved = match existing {
            Some((actor_id, generation, created_ms)) => Resolved::Existing(record(actor_id, generation, created_ms)),
            None if *live >= max_live => Resolved::Full { limit: max_live },
            None => {
                let previous: Option<u64> = tx
                    .query_row(
                        "SELECT last FROM generations WHERE namespace = ?1 AND name = ?2 AND key = ?3",
                        params![namespace, name, key],
                        |r| r.get(0),
                    )
                    .optional()
                    .context("creating an actor")?;
                let generation = previous.map_or(0, |g| g + 1);
                let actor_id = make_id(generation);
                tx.execute(
                    "INSERT INTO actors (namespace, name, key, actor_id, generation, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![namespace, name, key, actor_id, generation, created_ms],
                )
                .context("creating an actor")?;
                Resolved::Created(record(actor_id, generation, created_ms))
            }
        };
        tx.commit().context("creating an actor")?;
        if matches!(resolved, Resolved::Created(_)) {
            *live += 1;
        }
        Ok(resolved)
    }

    /// Deletes an actor's row, remembering its address's generation for the next creation.
    pub fn destroy(&self, actor_id: &str) -> Result<bool> {
        let mut guard = self.connection.lock().unwrap();
        let (connection, live) = &mut *guard;
        let tx = connection.transaction().context("destroying an actor")?;
        tx.execute(
            "INSERT OR REPLACE INTO generations (namespace, name, key, last)
             SELECT namespace, name, key, generation FROM actors WHERE actor_id = ?1",
            params![actor_id],
        )
        .context("destroying an actor")?;
        let deleted =
            tx.execute("DELETE FROM actors WHERE actor_id = ?1", params![actor_id]).context("destroying an actor")?;
        tx.execute("DELETE FROM preview_tokens WHERE actor_id = ?1", params![actor_id])
            .context("destroying an actor's preview tokens")?;
        tx.execute("DELETE FROM cron_due WHERE actor_id = ?1", params![actor_id])
            .context("destroying an actor's cron jobs")?;
        tx.commit().context("destroying an actor")?;
        if deleted > 0 {
            *live = live.saturating_sub(1);
        }
        Ok(deleted > 0)
    }

    /// Runs `work` on the connection (for the registry's other tables, [`crate::preview`]).
    pub(crate) fn with_connection<T>(&self, work: impl FnOnce(&mut rusqlite::Connection) -> Result<T>) -> Result<T> {
        work(&mut self.connection.lock().unwrap().0)
    }

    /// Number of actor rows (for diagnostics and tests).
    pub fn row_count(&self) -> Result<u64> {
        let guard = self.connection.lock().unwrap();
        guard.0.query_row("SELECT COUNT(*) FROM actors", [], |r| r.get(0)).context("counting actors")
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
        let create = |at: u64| registry.get_or_create("default", "vm", "k", at, 10, |g| format!("id-{g}")).unwrap();
        let Resolved::Created(a) = create(1) else { panic!("not created") };
        assert_eq!((a.actor_id.as_str(), a.generation), ("id-0", 0));
        assert_eq!(create(2), Resolved::Existing(a.clone()));
        assert_eq!(registry.find("default", "vm", "k").unwrap(), Some(a.clone()));
        assert!(registry.destroy("id-0").unwrap());
        assert!(!registry.destroy("id-0").unwrap());
        assert_eq!(registry.find("default", "vm", "k").unwrap(), None);
        assert_eq!(registry.row_count().unwrap(), 0, "the row is gone");
        let Resolved::Created(fresh) = create(3) else { panic!("not created") };
        assert_eq!((fresh.actor_id.as_str(), fresh.generation), ("id-1", 1));
        drop(registry);
        let reopened = Registry::open(&path).unwrap();
        assert_eq!(reopened.live().unwrap(), vec![fresh]);
    }

    #[test]
    fn the_cap_on_live_actors_is_exact_and_counts_restarts_and_destroys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.sqlite3");
        let registry = Registry::open(&path).unwrap();
        let create = |registry: &Registry, key: &str| {
            registry.get_or_create("default", "vm", key, 1, 2, |g| format!("{key}-{g}")).unwrap()
        };
        assert!(matches!(create(&registry, "a"), Resolved::Created(_)));
        assert!(matches!(create(&registry, "b"), Resolved::Created(_)));
        assert_eq!(create(&registry, "c"), Resolved::Full { limit: 2 });
        assert!(matches!(create(&registry, "a"), Resolved::Existing(_)), "existing actors are still found");
        drop(registry);
        let registry = Registry::open(&path).unwrap();
        assert_eq!(create(&registry, "c"), Resolved::Full { limit: 2 }, "the count survives a restart");
        assert!(registry.destroy("a-0").unwrap());
        assert!(matches!(create(&registry, "c"), Resolved::Created(_)));
    }
}
