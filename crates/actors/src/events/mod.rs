//! Events: what an actor tells its clients (`processOutput`, `shellExit`, `vmBooted`...).
//!
//! - [`wire`]: each event's name and payload as clients receive them, and their JSON form in
//!   the durable log.
//! - `store`: the durable log itself (the persister task, and reading it back for
//!   `getVmEvents`).
//!
//! Pushing events happens where they arise: the VM pushes process and shell events into the
//! actor's stream, and [`crate::actors`] pushes `vmBooted` / `vmShutdown` on lifecycle steps.

pub(crate) mod store;
pub mod wire;

pub use wire::{from_json, to_json, to_wire};
