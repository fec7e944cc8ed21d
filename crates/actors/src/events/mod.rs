//! Events: what an actor tells its clients (`processOutput`, `shellExit`, `vmBooted`...).
//!
//! - [`wire`]: each event's name and payload as clients receive them, `streamError` for a
//!   connection that missed events, and their form in the durable log.
//! - `store`: the durable log itself: the persister task, which writes every event before it is
//!   published (see `agentvm_vm::EventLog`), and reading it back for `getVmEvents`.
//!
//! Pushing events happens where they arise: the VM pushes process and shell events into the
//! actor's stream, and [`crate::actors`] pushes `vmBooted` / `vmShutdown` on lifecycle steps.

pub(crate) mod store;
pub mod wire;

pub use wire::{gap_to_wire, name, stored_payload, to_stored, to_wire, STREAM_ERROR};
