//! # agentvm-client
//!
//! A typed async client for `agentvm serve`: VMs, processes, shells, files and events, spoken
//! over the same wire protocol as the `rivetkit` npm client (the BARE encoding by default;
//! CBOR and JSON with [`Client::with_encoding`]).
//!
//! * [`Client`]: the server's URL (`AGENTVM_URL`, default [`DEFAULT_URL`]), an optional token
//!   (`AGENTVM_TOKEN`) and the encoding; lists VMs.
//! * [`VmHandle`] (`client.vm("key")`): one VM, created on first use, and its actions, each a
//!   stateless HTTP request: `exec`, `spawn` and the process API, shells, files, the durable
//!   event log, `destroy`, or any action by name with [`VmHandle::action`].
//! * [`Connection`] (`vm.connect()`): a WebSocket for [`Event`]s (`processOutput`,
//!   `processExit`, `shellData`, `shellExit`, `vmBooted`, `vmShutdown`) and actions; it
//!   reconnects by itself and resubscribes.
//! * [`Error`]: [`Error::NoServer`] when nothing listens, [`Error::Api`] with the server's
//!   `group`/`code`/`message` (e.g. `Process not found: 42`), and transport errors.
//!
//! ## Quick start
//!
//! Start a server (`agentvm serve`), then:
//!
//! ```
//! use agentvm_client::{Client, ExecOptions};
//!
//! #[tokio::main]
//! async fn main() -> agentvm_client::Result<()> {
//! #   let _server = agentvm_client::testing::server();
//!     let client = Client::from_env(); // AGENTVM_URL, else http://127.0.0.1:6420
//!     let vm = client.vm("my-agent"); // one VM per key, booted on first use
//!
//!     let result = vm.exec("echo hello && whoami", ExecOptions::default()).await?;
//!     assert_eq!((result.exit_code, result.stdout.as_str()), (0, "hello\nuser\n"));
//!
//!     let options = ExecOptions { stdin: Some(b"from stdin".to_vec()), ..Default::default() };
//!     assert_eq!(vm.exec("cat", options).await?.stdout, "from stdin");
//!     Ok(())
//! }
//! ```
//!
//! Events need a [`Connection`] (see its docs for a full example):
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> agentvm_client::Result<()> {
//! # let _server = agentvm_client::testing::server();
//! # use agentvm_client::Client;
//! let vm = Client::from_env().vm("my-agent");
//! let mut conn = vm.connect().await?;
//! conn.subscribe("processExit").await?;
//! let pid = vm.spawn("sleep", &["0.1".into()], Default::default()).await?;
//! let event = conn.next_event().await.expect("connection open");
//! assert_eq!((event.name.as_str(), event.payload.get("pid").and_then(|p| p.as_i64())), ("processExit", Some(pid.into())));
//! # Ok(()) }
//! ```
//!
//! Without a server every call fails with [`Error::NoServer`], whose message says what to do:
//! `no server at http://127.0.0.1:6420 — start one with `agentvm serve``.

#![deny(unsafe_code)]

mod client;
mod connection;
mod error;
mod types;
mod vm;

// Test scaffolding, compiled only for this crate's tests and doctests (see the `testing` feature).
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing;

pub use agentvm_protocol::{Encoding, Value};
pub use client::{ActorInfo, Client, DEFAULT_URL};
pub use connection::{Connection, Event, RECONNECTED};
pub use error::{Error, Result};
pub use types::{
    CronJob, CronRun, DirEntry, DirEntryInfo, EntryKind, ExecOptions, ExecResult, FileStat, ProcessInfo,
    ProcessTreeNode, ShellOptions, SpawnOptions, SpawnedProcessInfo, StoredEvent,
};
pub use vm::VmHandle;
