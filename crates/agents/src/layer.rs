//! The shared software layer: `<data>/software`, which every VM of the server sees read-only at
//! [`VM_MOUNT`].
//!
//! ```text
//! <data>/software/agents/<id>/node_modules/...    an installed agent (npm install --prefix)
//! <data>/software/agents/<id>/agentvm-agent.json  its marker: the id and the pinned versions
//! <data>/software/.staging/                       installs in progress (renamed into agents/)
//! <data>/software.lock                            held by an install (outside the layer)
//! ```
//!
//! An agent counts as installed only when its marker names exactly the versions its entry pins.
//! The marker is written into the staging directory last and arrives with the rename, so a
//! marker never describes an incomplete install.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::spec::AgentSpec;

/// Where every VM sees the software layer (read-only): an agent's files are
/// `/opt/agentvm/agents/<id>/node_modules/...`.
pub const VM_MOUNT: &str = "/opt/agentvm";

/// The marker's file name, in the agent's directory.
pub const MARKER: &str = "agentvm-agent.json";

/// The software layer of one data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoftwareLayer {
    dir: PathBuf,
}

/// What the marker records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    pub id: String,
    /// Package name → exact version.
    pub packages: BTreeMap<String, String>,
}

impl SoftwareLayer {
    /// The layer of the data directory `data_dir` (`<data>/software`).
    pub fn of_data_dir(data_dir: &Path) -> SoftwareLayer {
        SoftwareLayer { dir: data_dir.join("software") }
    }

    /// The layer whose host directory is `dir` (what `VmHost::software_dir` returns).
    pub fn at(dir: impl Into<PathBuf>) -> SoftwareLayer {
        SoftwareLayer { dir: dir.into() }
    }

    /// The layer's host directory, bound at [`VM_MOUNT`] in VMs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<layer>/agents/<id>`.
    pub fn agent_dir(&self, id: &str) -> PathBuf {
        self.dir.join("agents").join(id)
    }

    /// Where installs are assembled before they are renamed into place.
    pub fn staging_dir(&self) -> PathBuf {
        self.dir.join(".staging")
    }

    /// The lock an install holds, next to the layer (VMs do not see it).
    pub fn lock_path(&self) -> PathBuf {
        self.dir.with_extension("lock")
    }

    /// The marker of the installed `id`, if there is a readable one.
    pub fn marker(&self, id: &str) -> Option<Marker> {
        let text = std::fs::read(self.agent_dir(id).join(MARKER)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Whether `agent` is installed here at exactly its pinned versions.
    pub fn is_installed(&self, agent: &AgentSpec) -> bool {
        self.marker(agent.id).is_some_and(|m| m.id == agent.id && m.packages == agent.pins())
    }

    /// `Ok` when `agent` is installed; otherwise the error a session reports, which names the
    /// command to run.
    pub fn require(&self, agent: &AgentSpec) -> Result<(), NotInstalled> {
        if self.is_installed(agent) {
            Ok(())
        } else {
            Err(NotInstalled { id: agent.id.to_string() })
        }
    }
}

/// A session asked for an agent the software layer does not hold (at its pinned versions).
/// VMs never download agents, so the message says how the operator installs it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("agent `{id}` is not installed: run `agentvm agents install {id}`")]
pub struct NotInstalled {
    pub id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::PI;

    #[test]
    fn installed_means_a_marker_with_exactly_the_pinned_versions() {
        let data = tempfile::tempdir().unwrap();
        let layer = SoftwareLayer::of_data_dir(data.path());
        assert!(!layer.is_installed(&PI));
        let error = layer.require(&PI).unwrap_err();
        assert_eq!(error.to_string(), "agent `pi` is not installed: run `agentvm agents install pi`");

        let dir = layer.agent_dir("pi");
        std::fs::create_dir_all(&dir).unwrap();
        let write = |marker: &Marker| std::fs::write(dir.join(MARKER), serde_json::to_vec(marker).unwrap()).unwrap();
        let mut marker = Marker { id: "pi".into(), packages: PI.pins() };
        write(&marker);
        assert!(layer.is_installed(&PI));
        assert!(layer.require(&PI).is_ok());

        marker.packages.insert("pi-acp".into(), "0.0.34".into());
        write(&marker);
        assert!(!layer.is_installed(&PI), "another version of a package is not this install");
        std::fs::write(dir.join(MARKER), b"{ half").unwrap();
        assert!(!layer.is_installed(&PI));
        assert_eq!(layer.lock_path(), data.path().join("software.lock"));
    }
}
