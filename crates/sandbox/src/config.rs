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
///
/// Init does not open `base`, `upper` and `work` by path: in privileged mode it runs as an
/// unprivileged host uid that may not traverse the data directory. The launched child opens
/// them before it drops to init's ids and leaves them at [`crate::launch::LAYER_FDS`], in
/// [`RootfsSpec::LAYER_ORDER`] order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RootfsSpec {
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

impl RootfsSpec {
    /// Order of the layer descriptors attached to the configuration message.
    pub const LAYER_ORDER: [&'static str; 3] = ["base", "upper", "work"];
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
