//! A VM's network policy, put in place at each boot from its preset ([`crate::preset::Network`]).
//!
//! A VM always has its own network namespace with only loopback; the policy decides what the
//! server joins to it, always from the host side and never by opening the VM up:
//!
//! - `mode = "none"`: nothing (the default).
//! - `mode = "allow"`: the server's egress proxy ([`agentvm_network::serve_proxy`], HTTP CONNECT,
//!   absolute-form HTTP and SOCKS5 on one port) listens on the VM's `127.0.0.1:3128` (and
//!   `[::1]:3128`), and every process gets the proxy variables ([`proxy_env`]). The proxy resolves
//!   names itself and lets through only the preset's allow-list; a refusal is a `networkDenied`
//!   event. Loopback destinations the list does not name (`127.0.0.1:3000`) are the VM's own:
//!   the proxy connects to them inside the VM. There is no route out of the namespace, so a program that ignores the variables
//!   reaches nothing.
//! - `mode = "open"`: outbound internet through slirp4netns ([`crate::user_network`]); the
//!   host's loopback stays unreachable.
//! - `forward`: each `{port, to}` listens on the VM's `127.0.0.1:port` (and `[::1]:port`) and
//!   joins every connection to the host address `to` (any mode; no proxy support needed).
//!
//! The listeners are made inside the VM by its init ([`agentvm_vm::Vm::listen`]) and served by
//! tasks of the server that end when the VM stops.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use agentvm_network::{serve_forward, serve_proxy, Denied, LocalConnect, Proxy, ProxyLimits};
use agentvm_vm::{EventLog, Vm, VmError, VmEvent};

use crate::error::ActorError;
use crate::preset::{Network, NetworkMode};

/// The port of the egress proxy on the VM's loopback (HTTP and SOCKS5 on one port), the
/// customary HTTP proxy port.
pub const PROXY_PORT: u16 = 3128;

/// Where a Node.js preload that routes `fetch` through the proxy lives inside VMs (see
/// `agentvm_sandbox::base`): Node before 22.21/24 ignores the proxy variables.
pub const NODE_PROXY_PRELOAD: &str = "/etc/agentvm/node-proxy.cjs";

/// The environment every process of a VM in `allow` mode starts with.
pub fn proxy_env() -> BTreeMap<String, String> {
    let http = format!("http://127.0.0.1:{PROXY_PORT}");
    let socks = format!("socks5h://127.0.0.1:{PROXY_PORT}");
    // Not `127.0.0.1`: an allow-list may name a host address such as `127.0.0.1:9000` (a model
    // server on the host); the proxy sends other loopback destinations back into the VM.
    let no_proxy = "localhost,::1".to_string();
    let mut env = BTreeMap::new();
    for (name, value) in [("HTTP_PROXY", &http), ("HTTPS_PROXY", &http), ("ALL_PROXY", &socks), ("NO_PROXY", &no_proxy)]
    {
        env.insert(name.to_string(), value.clone());
        env.insert(name.to_ascii_lowercase(), value.clone());
    }
    // Node.js 22.21+ and 24+ honour the variables for fetch and http(s) with this set; older
    // versions get the preload, which does the same for fetch.
    env.insert("NODE_USE_ENV_PROXY".into(), "1".into());
    env.insert("NODE_OPTIONS".into(), format!("--require={NODE_PROXY_PRELOAD}"));
    env
}

/// `/etc/resolv.conf` of a VM under `network` (`None`: no name server).
pub fn resolv_conf_for(network: &Network) -> Option<String> {
    (network.mode == NetworkMode::Open).then(|| crate::user_network::RESOLV_CONF.to_string())
}

/// The environment a preset's network policy adds to every process of the VM.
pub fn env_for(network: &Network) -> BTreeMap<String, String> {
    match network.mode {
        NetworkMode::Allow => proxy_env(),
        NetworkMode::None | NetworkMode::Open => BTreeMap::new(),
    }
}

/// Starts what `network` needs on a freshly booted `vm`: the proxy and the forwards. They
/// stop by themselves when the VM stops. `events` receives `networkDenied`.
pub async fn start(vm: &Vm, network: &Network, events: Arc<EventLog>) -> Result<(), ActorError> {
    if network.mode == NetworkMode::Allow {
        let on_denied = Arc::new(move |denied: Denied| {
            tracing::info!(host = %denied.host, port = denied.port, reason = %denied.reason, "network: denied");
            events.push(VmEvent::NetworkDenied { host: denied.host, port: denied.port, reason: denied.reason });
        });
        // Loopback destinations the allow-list does not name are the VM's own (a dev server it
        // runs), reached inside the VM as if the client had not used the proxy.
        let weak = vm.downgrade();
        let local: LocalConnect = Arc::new(move |port| {
            let weak = weak.clone();
            Box::pin(async move {
                let vm = weak.upgrade().ok_or_else(|| std::io::Error::other("the VM stopped"))?;
                vm.connect(port).await.map_err(|e| match e {
                    VmError::PortClosed { .. } => std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
                    other => std::io::Error::other(other.to_string()),
                })
            })
        });
        let proxy = Arc::new(Proxy::new(Arc::clone(&network.allow), on_denied).with_local(local));
        for listener in listen_loopback(vm, PROXY_PORT).await? {
            let proxy = Arc::clone(&proxy);
            spawn_until_stopped(vm, async move { serve_proxy(listener, proxy).await });
        }
    }
    if network.mode == NetworkMode::Open {
        crate::user_network::start(vm).await?;
    }
    for forward in &network.forward {
        for listener in listen_loopback(vm, forward.port).await? {
            let to = forward.to.clone();
            spawn_until_stopped(vm, async move { serve_forward(listener, to, ProxyLimits::default()).await });
        }
    }
    Ok(())
}

/// Listeners on `127.0.0.1:port` (required) and `[::1]:port` (where the VM has IPv6).
async fn listen_loopback(vm: &Vm, port: u16) -> Result<Vec<tokio::net::TcpListener>, ActorError> {
    let v4 = vm.listen(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
    let mut listeners = vec![v4];
    match vm.listen(SocketAddr::from((Ipv6Addr::LOCALHOST, port))).await {
        Ok(v6) => listeners.push(v6),
        Err(e) => tracing::debug!(vm = vm.id(), port, "no IPv6 loopback listener: {e}"),
    }
    Ok(listeners)
}

/// Runs `work` until the VM stops (holding no handle on the VM, so it can be dropped).
fn spawn_until_stopped(vm: &Vm, work: impl std::future::Future<Output = ()> + Send + 'static) {
    let stopped = vm.on_stop();
    tokio::spawn(async move {
        tokio::select! {
            () = work => {}
            () = stopped => {}
        }
    });
}
