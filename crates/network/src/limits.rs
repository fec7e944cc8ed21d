//! What one proxy or forwarder may hold, with defaults sized for a VM's own traffic.

use std::time::Duration;

/// Limits of a [`crate::serve_proxy`] or [`crate::serve_forward`] listener. A VM is untrusted: it
/// must not make the server hold unbounded connections, buffers or waiting tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyLimits {
    /// Most client connections served at once (default 256). One past it is answered
    /// `503 Service Unavailable` (a SOCKS client reads that as a failed handshake) and closed at
    /// once, without reading from it.
    pub max_connections: usize,
    /// Time a client has to send its whole request head (HTTP) or handshake (SOCKS5), from the
    /// accept (default 10 s). Past it: `408 Request Timeout`, or the SOCKS connection is closed.
    /// (Not used by the forwarder, whose clients send nothing to us first.)
    pub head_timeout: Duration,
    /// Largest HTTP request head, request line and headers (default 64 KiB); past it:
    /// `431 Request Header Fields Too Large`. (Not used by the forwarder.)
    pub max_head_bytes: usize,
    /// Time to resolve the destination and connect to it, all addresses tried together
    /// (default 10 s).
    pub connect_timeout: Duration,
}

impl Default for ProxyLimits {
    fn default() -> Self {
        ProxyLimits {
            max_connections: 256,
            head_timeout: Duration::from_secs(10),
            max_head_bytes: 64 * 1024,
            connect_timeout: Duration::from_secs(10),
        }
    }
}
