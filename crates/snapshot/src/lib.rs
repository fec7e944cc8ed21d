//! # agentvm-snapshot
//!
//! Snapshots of a VM's durable state in object storage, so that whichever host a distributed
//! engine picks can load it (see `docs/scale-out.md` for the design, and what a host crash can
//! lose).
//!
//! - [`SnapshotStore`] (`store`): where snapshots live — an S3 bucket (or any S3-compatible
//!   server) or a local directory, through the `object_store` crate — and their layout: per
//!   actor a `manifest.json` naming its newest snapshot, written last (the commit point), and
//!   the snapshot's parts.
//! - [`Manifest`] (`manifest`): what a snapshot is (whose, which sequence number, when, from
//!   which host, its parts and sizes).
//! - `archive`: a directory to one archive file and back, with everything a VM's files carry
//!   (owners, modes, extended attributes, overlayfs whiteouts, sparse files).

mod archive;
mod error;
mod manifest;
mod store;

pub use archive::{pack, unpack};
pub use error::SnapshotError;
pub use manifest::{Manifest, Part, SnapshotActor, FORMAT};
pub use store::SnapshotStore;
