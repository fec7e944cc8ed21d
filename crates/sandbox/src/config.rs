//! What init needs to know to build a VM; sent by the host as the first control message.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The VM's identity and filesystem layout, from init's point of view.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitConfig {
    pub hostname: String,
    pub rootfs: RootfsSpec,
    /// The unprivileged account every command runs as (uid/gid inside the VM).
    pub user: UserSpec,
    /// `true` when init is root inside the VM (the host ran as root and mapped a uid range);
    /// `false` in rootless mode, where init is the user itself and holds its capabilities only
    /// as ambient capabilities, which it drops for every command it starts.
    pub init_is_root: bool,
}

/// Host paths that make up the root filesystem.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RootfsSpec {
    /// Empty directory where the root overlay is mounted before `pivot_root`.
    pub mountpoint: PathBuf,
    /// Read-only lower layer: the shared base tree (see [`crate::base`]).
    pub base: PathBuf,
    /// The VM's own writable layer: its durable state.
    pub upper: PathBuf,
    /// Overlayfs work directory, on the same filesystem as `upper`.
    pub work: PathBuf,
    /// Host directories bound read-only into the VM (`/usr`, and `/bin`, `/lib`... where they
    /// are real directories on the host).
    pub readonly_binds: Vec<Bind>,
    /// Most terminals the VM's own devpts instance may hand out.
    pub max_ptys: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bind {
    pub source: PathBuf,
    /// Absolute path inside the VM.
    pub target: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserSpec {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}
