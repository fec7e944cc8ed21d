//! A VM's durable state as something that can leave this host and come back elsewhere: what
//! it is made of, how to capture it while the VM runs, and how to give an actor the state
//! another host captured (see `docs/scale-out.md` for the design around it).
//!
//! An actor's durable state is two directories:
//! - **state**: `<data>/vms/<id>/` without its layers — the event log (`vm.sqlite3`, which also
//!   holds cron jobs and session transcripts) and the client's creation options;
//! - **upper**: the VM's writable layer (its files), wherever the host keeps it (a quota
//!   volume or `<data>/vms/<id>/upper`).
//!
//! [`Actor::capture`] copies them into a staging directory: the log through SQLite (every
//! committed event, consistent even while events are written), the files as a read-only
//! snapshot of the VM's volume taken at one instant (crash-consistent: what a power cut
//! would leave), or, where the host has no quota volumes, the live directory (consistent only
//! while the VM is stopped). [`Actors::restore`] makes an actor of state unpacked by the
//! caller (see `agentvm_snapshot`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use agentvm_vm::disk::LayersSnapshot;

use crate::actors::{blocking, Actor, Actors};
use crate::error::ActorError;

/// The event log's file name in the state directory.
const EVENT_LOG: &str = "vm.sqlite3";

/// A captured state, ready to be archived: `state` (a staging copy) and `upper` (a snapshot
/// or the live directory; kept until this is dropped).
pub struct Captured {
    pub state: PathBuf,
    layers: LayersSnapshot,
}

impl Captured {
    /// The VM's files to archive.
    pub fn upper(&self) -> &Path {
        self.layers.upper()
    }

    /// Whether the files are a point-in-time snapshot (rather than the live directory).
    pub fn is_point_in_time(&self) -> bool {
        self.layers.is_point_in_time()
    }
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> ActorError {
    move |source| ActorError::Io { context, source }
}

impl Actor {
    /// Copies the actor's durable state into `staging` (an empty directory), whether its VM
    /// runs or sleeps; `tag` names the files snapshot uniquely; files of the state directory
    /// named in `exclude` are left out (a front end's own bookkeeping). See the module's notes.
    pub async fn capture(
        self: &Arc<Self>,
        staging: &Path,
        tag: &str,
        exclude: &[&str],
    ) -> Result<Captured, ActorError> {
        let (actor, staging, tag) = (Arc::clone(self), staging.to_path_buf(), tag.to_string());
        let exclude: Vec<String> = exclude.iter().map(|s| s.to_string()).collect();
        blocking(move || actor.capture_blocking(&staging, &tag, &exclude)).await?
    }

    fn capture_blocking(&self, staging: &Path, tag: &str, exclude: &[String]) -> Result<Captured, ActorError> {
        let state = staging.join("state");
        std::fs::create_dir_all(&state).map_err(io(format!("creating {}", state.display())))?;
        // The files first: events written meanwhile are in the log's copy, never the reverse
        // (a log that names a file the copy lacks).
        let layers = self.host().snapshot_layers(&self.id, tag)?;
        self.event_file().with(false, |store| store.copy_to(&state.join(EVENT_LOG)))?;
        let entries = std::fs::read_dir(self.dir()).map_err(io(format!("reading {}", self.dir().display())))?;
        for entry in entries {
            let entry = entry.map_err(io(format!("reading {}", self.dir().display())))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            // The log (copied above, with its journal), the layers and the warm pool's marker.
            if name.starts_with(EVENT_LOG)
                || matches!(name, "upper" | "work" | "pooled")
                || exclude.iter().any(|e| e == name)
            {
                continue;
            }
            let kind = entry.file_type().map_err(io(format!("reading {}", entry.path().display())))?;
            if kind.is_file() {
                std::fs::copy(entry.path(), state.join(name))
                    .map_err(io(format!("copying {}", entry.path().display())))?;
            }
        }
        Ok(Captured { state, layers })
    }
}

/// Where a restored actor's two directories go before [`Actors::restore`]: `state` is
/// `<data>/vms/<id>` and `upper` the `upper` directory in its layers directory (made now).
pub struct RestoreTarget {
    pub state: PathBuf,
    pub upper: PathBuf,
}

impl Actors {
    /// Makes room for actor `id`'s state arriving from elsewhere: the directories to unpack it
    /// into (empty; an earlier copy of the same id is removed first). The address must have no
    /// actor here (destroy a stale one first).
    pub async fn prepare_restore(self: &Arc<Self>, id: &str) -> Result<RestoreTarget, ActorError> {
        if self.by_id(id).is_ok() {
            return Err(ActorError::Internal(format!("actor {id} still exists here: destroy it before restoring")));
        }
        let (host, id, state) = (self.host().clone(), id.to_string(), self.vms_dir().join(id));
        blocking(move || -> Result<RestoreTarget, ActorError> {
            host.remove_vm_data(&id)?;
            std::fs::create_dir_all(&state).map_err(io(format!("creating {}", state.display())))?;
            let layers = host.prepare_layers(&id)?;
            let upper = layers.join("upper");
            std::fs::create_dir_all(&upper).map_err(io(format!("creating {}", upper.display())))?;
            Ok(RestoreTarget { state, upper })
        })
        .await?
    }

    /// The actor at this address made of state unpacked into [`Actors::prepare_restore`]'s
    /// directories, under the id it had where it was captured. Its cron jobs are planned again.
    pub async fn restore(
        self: &Arc<Self>,
        namespace: &str,
        name: &str,
        key: &[String],
        id: &str,
        created_ms: u64,
    ) -> Result<Arc<Actor>, ActorError> {
        let actor = self.resolve_as(namespace, name, key, id, created_ms, None).await?;
        crate::cron::run::replan(self, &actor).await;
        Ok(actor)
    }

    /// The directory of actor `id`'s state (`<data>/vms/<id>`).
    pub fn state_dir(&self, id: &str) -> PathBuf {
        self.vms_dir().join(id)
    }
}
