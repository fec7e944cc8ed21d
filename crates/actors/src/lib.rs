//! # agentvm-actors
//!
//! The transport-neutral actor core: each (namespace, name, key) is an actor backed by one
//! agentvm VM. This crate knows nothing of HTTP or WebSockets; front ends sit on top of it (the
//! built-in server `agentvm-server` today, an engine host later).
//!
//! - **Where a lifecycle transition happens**: [`lifecycle`], the state machine (`Asleep`,
//!   `Booting`, `Awake`, `Stopping`, `Destroying`, `Destroyed`); its transition table `apply` is
//!   the only place a phase changes.
//! - **Creation caps**: [`limits`] (the rate; the VM count cap is the registry's).

pub mod lifecycle;
pub mod limits;

pub use lifecycle::Refusal;
