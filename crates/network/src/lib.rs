//! A VM's way out of its network namespace, as plain tokio networking that knows nothing of VMs.
//!
//! A VM has its own network namespace with only loopback. Whoever embeds this crate makes a
//! listening socket *inside* that namespace (on the VM's `127.0.0.1`) and hands it over as a
//! [`tokio::net::TcpListener`]; this crate accepts on it from the host's side and connects out
//! from the host. Nothing in the VM ever gets a route out: every byte passes through here.
//!
//! - [`Policy`] ([`policy`]): the allow-list (`api.example.com:443`, `*.example.org:*`,
//!   `10.1.2.3:5432`, `[fd00::1]:80`) and the rule for what a *name* may resolve to: never a
//!   loopback, unspecified, link-local (cloud metadata), multicast or broadcast address unless
//!   that IP is itself listed ([`address`]: DNS rebinding, SSRF).
//! - [`serve_proxy`] ([`proxy`]): an HTTP proxy (`CONNECT` tunnels for https, absolute-form
//!   requests for plain http) and a SOCKS5 proxy on the same port, told apart by the first byte.
//!   Every destination is matched against the policy, resolved by the server, its addresses
//!   checked, then connected to. A refusal is a clear answer (`403` with the reason, SOCKS reply
//!   `02`) plus one call of the `on_denied` callback; there is no fallback.
//! - [`serve_forward`] ([`forward`]): every connection accepted is joined to one fixed
//!   `host:port` chosen by the operator (`network.forward`), for clients with no proxy support.
//!
//! Both serve functions run until their future is dropped: spawn them, and abort the task to stop
//! the listener and every connection it started. What one listener may hold is bounded by
//! [`ProxyLimits`] (connections at once, time and size of a request head, connect timeout).
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use agentvm_network::{serve_proxy, Policy, Proxy};
//!
//! let policy = Arc::new(Policy::parse(&["api.example.com:443", "*.pypi.org:443"])?);
//! let proxy = Arc::new(Proxy::new(policy, Arc::new(|denied| eprintln!("denied: {}", denied.reason))));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3128").await?;
//! let task = tokio::spawn(serve_proxy(listener, proxy));
//! // ... later, when the VM stops:
//! task.abort();
//! # Ok(()) }
//! ```

mod accept;
pub mod address;
mod connect;
pub mod forward;
mod limits;
pub mod policy;
pub mod proxy;

pub use address::RestrictedKind;
pub use connect::ConnectError;
pub use forward::serve_forward;
pub use limits::ProxyLimits;
pub use policy::{DenyReason, EntryProblem, Policy, PolicyError};
pub use proxy::{serve_proxy, Denied, LocalConnect, OnDenied, Proxy, ProxyStats};
