//! A VM's way out of its network namespace, as plain tokio networking that knows nothing of VMs.
//!
//! - [`Policy`]: the allow-list (`api.example.com:443`, `*.example.org:*`, `10.1.2.3:5432`,
//!   `[fd00::1]:80`) and the rule for what a name may resolve to (no loopback, link-local/cloud
//!   metadata, multicast... by name: DNS rebinding), see [`policy`].
pub mod address;
pub mod policy;

pub use address::RestrictedKind;
pub use policy::{DenyReason, EntryProblem, Policy, PolicyError};
