//! # agentvm-actors
//!
//! The transport-neutral actor core: each (namespace, name, key) is an actor backed by one
//! agentvm VM. This crate knows nothing of HTTP or WebSockets; front ends sit on top of it (the
//! built-in server `agentvm-server` today, an engine host later) and only translate: requests
//! into [`Actors`] calls and [`actions::dispatch`], [`ActorError`]s into their own error shapes,
//! and [`events::to_wire`] payloads into their frames.
//!
//! Where to find things:
//!
//! - **Where an action is handled**: [`actions`], one file per family — `actions/processes.rs`,
//!   `actions/shells.rs`, `actions/files.rs`, `actions/events.rs`, `actions/lifecycle.rs`
//!   (the table in [`actions`] lists every action name). Each parses its arguments and runs
//!   them; [`actions::dispatch`] is the one entry point.
//! - **Where a lifecycle transition happens**: [`lifecycle`], the state machine (`Asleep`,
//!   `Booting`, `Awake`, `Stopping`, `Destroying`, `Destroyed`); its transition table `apply` is
//!   the only place a phase changes. The work done at each step (booting, stopping, destroying)
//!   is in [`actors`].
//! - **The actor directory**: [`actors`] — actors by address and by id, their ids, the
//!   registry (SQLite) that makes them survive restarts, idle sleep.
//! - **Presets**: [`preset`] — what a VM of each actor name gets (limits, environment, network
//!   policy), and what a client's `createWithInput` may change.
//! - **Creation caps**: [`limits`] (the rate; the VM count cap is the registry's).
//! - **Events**: [`events`] — their wire shapes and the durable per-VM event log.
//! - **Cron**: [`cron`] — jobs kept in each VM's file, one scheduler over every VM that wakes
//!   sleeping ones, the runs and their events.
//! - **Preview URLs**: [`preview`] — tokens that open one port of one VM, where they are kept
//!   and how a front end checks them.
//! - **Errors**: [`ActorError`], one variant per kind; the front end renders client-facing text.

pub mod actions;
pub mod actors;
pub mod cron;
pub mod error;
pub mod events;
pub mod lifecycle;
pub mod limits;
pub mod memory;
pub mod network;
mod pool;
pub mod portable;
pub use pool::MAX_POOL as MAX_WARM_POOL;
pub mod preset;
pub mod preview;
pub mod sessions;
pub mod user_network;

pub use actors::{Actor, Actors, Settings};
pub use error::ActorError;
pub use lifecycle::Refusal;
pub use preset::{ClientOptions, Preset, Presets};
