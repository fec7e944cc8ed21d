//! The egress proxy: HTTP (CONNECT and absolute-form requests) and SOCKS5 on one port.
//!
//! The first byte a client sends tells the protocols apart: a SOCKS5 greeting starts with its
//! version, `0x05`, which no HTTP method does. So one listener, and one set of proxy variables
//! (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`), serves every client.
//!
//! Every destination goes through the same gate, `Proxy::open`: the [`Policy`] matches the
//! `host:port` the client asked for, the server resolves a name, each resolved address is checked
//! (no loopback or metadata by name), and the first allowed address that answers is connected to.
//! A refusal is answered with the reason (HTTP `403` with `X-Agentvm-Denied`, SOCKS reply `0x02`)
//! and reported once through `on_denied`; it never falls back to anything.

mod http;
mod socks5;
mod tunnel;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

use crate::accept::accept_loop;
use crate::connect::{connect, ConnectError};
use crate::limits::ProxyLimits;
use crate::policy::Policy;

/// A refused destination, as reported to [`Proxy`]'s `on_denied` callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The destination host as the client gave it.
    pub host: String,
    /// The destination port.
    pub port: u16,
    /// Why, in words (the same text the client is sent).
    pub reason: String,
}

/// What `on_denied` is: called once for each refused destination, from the connection's task.
pub type OnDenied = Arc<dyn Fn(Denied) + Send + Sync>;

/// Connects to a port of the *client's own* loopback (for a VM: inside its network namespace).
/// See [`Proxy::with_local`].
pub type LocalConnect = Arc<
    dyn Fn(u16) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<TcpStream>> + Send>>
        + Send
        + Sync,
>;

/// One VM's proxy: its policy, what to do with a refusal, its limits and its counters.
pub struct Proxy {
    policy: Arc<Policy>,
    on_denied: OnDenied,
    local: Option<LocalConnect>,
    limits: ProxyLimits,
    counters: Counters,
}

/// What a [`Proxy`] has done so far ([`Proxy::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Client connections served (accepted under the cap).
    pub connections: u64,
    /// Client connections turned away at the cap.
    pub rejected_over_cap: u64,
    /// Destinations refused by the policy (`on_denied` calls).
    pub denied: u64,
    /// Bytes relayed from clients to destinations (tunnels and forwarded requests, heads included).
    pub bytes_from_clients: u64,
    /// Bytes relayed from destinations to clients.
    pub bytes_to_clients: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    rejected_over_cap: AtomicU64,
    denied: AtomicU64,
    bytes_from_clients: AtomicU64,
    bytes_to_clients: AtomicU64,
}

impl Proxy {
    /// A proxy enforcing `policy` with the default [`ProxyLimits`].
    pub fn new(policy: Arc<Policy>, on_denied: OnDenied) -> Proxy {
        Proxy { policy, on_denied, local: None, limits: ProxyLimits::default(), counters: Counters::default() }
    }

    /// The same proxy, sending loopback destinations the policy does not list (`127.0.0.1:3000`,
    /// `localhost:3000`, `[::1]:3000`) to the client's own loopback through `local`, as if the
    /// client had connected directly. A client behind the proxy variables means its own machine
    /// by loopback (a dev server it started); only a loopback destination the operator listed
    /// means the host's.
    pub fn with_local(mut self, local: LocalConnect) -> Proxy {
        self.local = Some(local);
        self
    }

    /// The same proxy with other limits.
    pub fn with_limits(mut self, limits: ProxyLimits) -> Proxy {
        self.limits = limits;
        self
    }

    /// The policy it enforces.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Its limits.
    pub fn limits(&self) -> &ProxyLimits {
        &self.limits
    }

    /// Its counters so far.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.counters;
        ProxyStats {
            connections: c.connections.load(Ordering::Relaxed),
            rejected_over_cap: c.rejected_over_cap.load(Ordering::Relaxed),
            denied: c.denied.load(Ordering::Relaxed),
            bytes_from_clients: c.bytes_from_clients.load(Ordering::Relaxed),
            bytes_to_clients: c.bytes_to_clients.load(Ordering::Relaxed),
        }
    }

    /// The gate every destination passes: policy match, resolution, address check, connect.
    /// A refusal has been reported through `on_denied` when this returns
    /// [`ConnectError::Denied`].
    async fn open(&self, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
        let result = match (self.policy.check(host, port), &self.local) {
            (Ok(()), _) => connect(host, port, Some(&self.policy), self.limits.connect_timeout).await,
            (Err(_), Some(local)) if is_loopback_name(host) => {
                let limit = self.limits.connect_timeout;
                return match tokio::time::timeout(limit, local(port)).await {
                    Ok(connected) => connected.map_err(|source| ConnectError::Local { port, source }),
                    Err(_) => Err(ConnectError::TimedOut { host: host.to_owned(), port, timeout: limit }),
                };
            }
            (Err(reason), _) => Err(ConnectError::Denied(reason)),
        };
        match &result {
            Ok(_) => tracing::debug!(host, port, "proxy: connected"),
            Err(ConnectError::Denied(reason)) => {
                tracing::info!(host, port, %reason, "proxy: denied");
                self.counters.denied.fetch_add(1, Ordering::Relaxed);
                (self.on_denied)(Denied { host: host.to_owned(), port, reason: reason.to_string() });
            }
            Err(error) => tracing::debug!(host, port, %error, "proxy: cannot connect"),
        }
        result
    }

    fn count_relayed(&self, from_client: u64, to_client: u64) {
        self.counters.bytes_from_clients.fetch_add(from_client, Ordering::Relaxed);
        self.counters.bytes_to_clients.fetch_add(to_client, Ordering::Relaxed);
    }
}

/// `localhost`, `*.localhost`, `127.0.0.0/8`, `::1` (and their IPv4-mapped forms), and the
/// unspecified addresses `0.0.0.0` and `::`, which a connect on Linux also takes to mean "this
/// machine".
fn is_loopback_name(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host.ends_with(".localhost")
        || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| match ip {
            std::net::IpAddr::V4(v4) => v4.is_loopback() || v4.is_unspecified(),
            std::net::IpAddr::V6(v6) => {
                v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback() || v4.is_unspecified())
            }
        })
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy").field("policy", &self.policy).field("limits", &self.limits).finish_non_exhaustive()
    }
}

/// Serves the proxy on `listener` until the future is dropped (abort its task to stop it; every
/// connection it started stops with it). Needs a tokio runtime with IO and time enabled.
pub async fn serve_proxy(listener: TcpListener, proxy: Arc<Proxy>) {
    let max = proxy.limits.max_connections;
    let over_cap_proxy = proxy.clone();
    accept_loop(
        listener,
        max,
        http::SERVICE_UNAVAILABLE,
        move || {
            over_cap_proxy.counters.rejected_over_cap.fetch_add(1, Ordering::Relaxed);
        },
        |stream, peer| {
            let proxy = proxy.clone();
            proxy.counters.connections.fetch_add(1, Ordering::Relaxed);
            async move {
                if let Err(error) = serve_client(stream, &proxy).await {
                    tracing::debug!(%peer, %error, "proxy: client connection ended with an error");
                }
            }
        },
    )
    .await;
}

/// One client: tell SOCKS5 from HTTP by the first byte, then serve it.
async fn serve_client(mut stream: TcpStream, proxy: &Proxy) -> std::io::Result<()> {
    let deadline = tokio::time::Instant::now() + proxy.limits.head_timeout;
    let mut first = [0u8; 1];
    let peeked = match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Ok(peeked) => peeked?,
        Err(_) => return http::respond_head_timeout(&mut stream).await,
    };
    if peeked == 0 {
        return Ok(());
    }
    if first[0] == socks5::VERSION {
        socks5::serve(stream, proxy, deadline).await
    } else {
        http::serve(stream, proxy, deadline).await
    }
}
