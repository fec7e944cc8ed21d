//! Web origins and host names, in the canonical forms the browser boundary
//! ([`crate::exposure`]) compares.
//!
//! An **origin** is what a browser writes in the `Origin` header: `scheme://host[:port]`, in
//! lowercase, without the scheme's default port, and without path, query or user info. Both the
//! origins an operator allows (`--allow-origin`) and the ones requests carry are brought to that
//! form, so "is this origin allowed" is plain equality: no prefix or suffix matching that
//! `http://localhost:3000.evil.example` could slip through.
//!
//! A **host** is what a request names in its `Host` header (`localhost:6420`, `[::1]`,
//! `agentvm.example.com`); [`AllowedHost`] is a name the operator accepts there (`--allow-host`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use axum::http::uri::Authority;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error(
        "`*` is not accepted as an allowed origin: it would let every web page drive your VMs (and browsers \
         never send the rivetkit client's credentialed requests to `*`); list each origin, e.g. \
         --allow-origin http://localhost:3000"
    )]
    Wildcard,
    #[error(
        "`null` is not accepted as an allowed origin: sandboxed frames, file: pages and redirects all send \
         it, so any web site can produce it"
    )]
    Null,
    #[error(
        "{0:?} is not an origin: expected scheme://host[:port], e.g. http://localhost:3000 (no path, query or user)"
    )]
    Malformed(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a host name: expected a DNS name or an IP address without scheme or port, \
     e.g. --allow-host agentvm.example.com"
)]
pub struct HostError(String);

/// A web origin in canonical form (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin(String);

impl Origin {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The origin of a page served by this server over plain HTTP under `host`: what a
    /// same-origin request from such a page carries.
    pub fn http(host: &RequestHost) -> Origin {
        Origin::canonical("http", &host.host, host.port)
    }

    fn canonical(scheme: &str, host: &str, port: Option<u16>) -> Origin {
        let default_port = match scheme {
            "http" | "ws" => Some(80),
            "https" | "wss" => Some(443),
            _ => None,
        };
        match port {
            Some(port) if Some(port) != default_port => Origin(format!("{scheme}://{host}:{port}")),
            _ => Origin(format!("{scheme}://{host}")),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Origin {
    type Err = OriginError;

    /// Parses `scheme://host[:port]` (one trailing `/` is tolerated, as people paste URLs).
    /// Any scheme is accepted, so a browser extension's `chrome-extension://<id>` can be allowed.
    fn from_str(text: &str) -> Result<Origin, OriginError> {
        let trimmed = text.trim();
        match trimmed {
            "*" => return Err(OriginError::Wildcard),
            "null" => return Err(OriginError::Null),
            _ => {}
        }
        let malformed = || OriginError::Malformed(text.to_string());
        let (scheme, rest) = trimmed.split_once("://").ok_or_else(malformed)?;
        let scheme = scheme.to_ascii_lowercase();
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_lowercase())
            && scheme.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if !scheme_ok || rest.is_empty() || rest.ends_with(':') || rest.contains(['/', '?', '#', '@', '\\', '*']) {
            return Err(malformed());
        }
        let (host, port) = host_and_port(rest).ok_or_else(malformed)?;
        Ok(Origin::canonical(&scheme, &host, port))
    }
}

/// Splits `host[:port]` (an IPv6 host in brackets) into the lowercased host and the port; `None`
/// unless the host is non-empty and the port, if any, a number up to 65535.
fn host_and_port(text: &str) -> Option<(String, Option<u16>)> {
    let authority = Authority::from_str(text).ok()?;
    let host = authority.host();
    // `Authority` checks the characters but not the port's range or digits, so read it here.
    let port = match text.get(host.len()..)? {
        "" => None,
        tail => {
            let digits = tail.strip_prefix(':')?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some(digits.parse::<u16>().ok()?)
        }
    };
    (!host.is_empty()).then(|| (host.to_ascii_lowercase(), port))
}

/// The host a request names in its `Host` header: the host in lowercase (an IPv6 address in
/// brackets, as in the header) and the port if one was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHost {
    host: String,
    port: Option<u16>,
}

impl RequestHost {
    /// `None` for a value that is not `host[:port]` (user info, paths and empty hosts included).
    pub fn parse(value: &str) -> Option<RequestHost> {
        if value.is_empty() || value.ends_with(':') || value.contains(['@', '/', '?', '#', '\\']) {
            return None;
        }
        let (host, port) = host_and_port(value)?;
        Some(RequestHost { host, port })
    }

    /// The host without its port, as the request wrote it (lowercased).
    pub fn name(&self) -> &str {
        &self.host
    }

    /// The address, when the host is an IP literal (`127.0.0.1`, `[::1]`).
    pub fn ip(&self) -> Option<IpAddr> {
        let bare = self.host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(&self.host);
        bare.parse().ok()
    }

    /// `localhost`, a name under `.localhost` (RFC 6761: always the loopback interface, which
    /// browsers resolve themselves) or a loopback address.
    pub fn is_loopback(&self) -> bool {
        self.host == "localhost" || self.host.ends_with(".localhost") || self.ip().is_some_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for RequestHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

/// A host name (or IP address) the operator accepts in `Host`, with any port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost(String);

impl AllowedHost {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, host: &RequestHost) -> bool {
        self.0 == host.host
    }
}

impl FromStr for AllowedHost {
    type Err = HostError;

    fn from_str(text: &str) -> Result<AllowedHost, HostError> {
        let name = text.trim().to_ascii_lowercase();
        let bare = name.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(&name);
        match bare.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => return Ok(AllowedHost(ip.to_string())),
            Ok(IpAddr::V6(ip)) => return Ok(AllowedHost(format!("[{ip}]"))),
            Err(_) => {}
        }
        let label_ok = |label: &str| {
            !label.is_empty()
                && label.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        };
        if name.split('.').all(label_ok) {
            Ok(AllowedHost(name))
        } else {
            Err(HostError(text.to_string()))
        }
    }
}

impl fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(text: &str) -> Result<String, OriginError> {
        text.parse::<Origin>().map(|o| o.0)
    }

    #[test]
    fn origins_are_canonical() {
        assert_eq!(origin("http://localhost:3000").unwrap(), "http://localhost:3000");
        assert_eq!(origin(" HTTP://LocalHost:3000/ ").unwrap(), "http://localhost:3000");
        assert_eq!(origin("http://example.com:80").unwrap(), "http://example.com");
        assert_eq!(origin("https://example.com:443").unwrap(), "https://example.com");
        assert_eq!(origin("https://example.com:80").unwrap(), "https://example.com:80");
        assert_eq!(origin("http://[::1]:8080").unwrap(), "http://[::1]:8080");
        assert_eq!(origin("chrome-extension://abcdef").unwrap(), "chrome-extension://abcdef");
    }

    #[test]
    fn wildcards_null_and_urls_are_refused() {
        assert_eq!(origin("*"), Err(OriginError::Wildcard));
        assert_eq!(origin("null"), Err(OriginError::Null));
        for bad in [
            "localhost:3000",
            "http://",
            "http://a/b",
            "http://a?x",
            "http://a#x",
            "http://user@a",
            "http://a:",
            "http://a:99999",
            "://a",
            "1http://a",
            "http://*.example.com",
        ] {
            assert!(matches!(origin(bad), Err(OriginError::Malformed(_))), "{bad}");
        }
    }

    #[test]
    fn request_hosts() {
        let host = RequestHost::parse("LocalHost:6420").unwrap();
        assert_eq!((host.name(), host.port, host.is_loopback()), ("localhost", Some(6420), true));
        assert!(RequestHost::parse("app.localhost").unwrap().is_loopback());
        assert!(RequestHost::parse("[::1]:1").unwrap().is_loopback());
        assert!(RequestHost::parse("127.0.0.9").unwrap().is_loopback());
        assert!(!RequestHost::parse("localhost.evil.example").unwrap().is_loopback());
        assert!(!RequestHost::parse("evil-localhost").unwrap().is_loopback());
        assert!(!RequestHost::parse("10.0.0.1:6420").unwrap().is_loopback());
        for bad in ["", "localhost@evil.example", "a/b", "a:", "a:x", "evil.example#@localhost"] {
            assert_eq!(RequestHost::parse(bad), None, "{bad}");
        }
        assert_eq!(Origin::http(&RequestHost::parse("localhost:6420").unwrap()).as_str(), "http://localhost:6420");
        assert_eq!(Origin::http(&RequestHost::parse("localhost:80").unwrap()).as_str(), "http://localhost");
    }

    #[test]
    fn allowed_hosts() {
        let host = |s: &str| s.parse::<AllowedHost>().map(|h| h.0);
        assert_eq!(host("AgentVM.example.com").unwrap(), "agentvm.example.com");
        assert_eq!(host("::1").unwrap(), "[::1]");
        assert_eq!(host("[::1]").unwrap(), "[::1]");
        for bad in ["", "*.example.com", "a:80", "http://a", "a..b", "a b"] {
            assert!(host(bad).is_err(), "{bad}");
        }
        let allowed: AllowedHost = "vm.example.com".parse().unwrap();
        assert!(allowed.matches(&RequestHost::parse("VM.example.com:8443").unwrap()));
        assert!(!allowed.matches(&RequestHost::parse("vm.example.com.evil.example").unwrap()));
    }
}
