//! The allow-list: which `host:port` destinations a VM may reach, and what a name may resolve to.
//!
//! An entry is `HOST:PORT`:
//!
//! | HOST              | matches                                                              |
//! |-------------------|----------------------------------------------------------------------|
//! | `api.example.com` | that DNS name exactly (case-insensitive; a trailing dot is ignored) |
//! | `*.example.org`   | any subdomain at any depth (`a.example.org`, `a.b.example.org`), *not* `example.org` itself |
//! | `10.1.2.3`        | that IPv4 address, given as a literal                                |
//! | `[fd00::1]`       | that IPv6 address (brackets required); `[::ffff:a.b.c.d]` is `a.b.c.d` |
//!
//! PORT is `1..=65535`, or `*` for any port.
//!
//! A destination is checked twice. [`Policy::check`] matches what the client asked for (a name or
//! an IP literal) against the entries. Then, for a name, each address the server resolved it to is
//! checked by [`Policy::check_address`]: a name may not lead to a loopback, unspecified,
//! link-local (cloud metadata), multicast or broadcast address (DNS rebinding, SSRF; see
//! [`crate::address`]) unless that very IP is itself allowed for that port. IP-literal entries are
//! allowed exactly as listed, loopback included: `127.0.0.1:9000` is how an operator lets a VM
//! reach a service on the host.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::address::{canonical, restricted_kind, RestrictedKind};

/// A parsed allow-list (see the module documentation). The empty policy allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    host: HostPattern,
    port: PortPattern,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// A lower-case DNS name without trailing dot.
    Exact(String),
    /// `*.example.org` stored as `.example.org`: matches names ending with it (and longer than it).
    Subdomains(String),
    /// A canonical IP address (see [`canonical`]).
    Ip(IpAddr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortPattern {
    Any,
    Exact(u16),
}

/// A destination host as the policy sees it: a normalized DNS name or a canonical IP.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Name(String),
    Ip(IpAddr),
}

/// An allow-list entry that could not be parsed: which one, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{entry:?}: {problem}")]
pub struct PolicyError {
    /// The entry as written.
    pub entry: String,
    /// What is wrong with it.
    pub problem: EntryProblem,
}

/// What is wrong with an allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryProblem {
    /// Nothing before the port.
    #[error("the host is empty (HOST:PORT)")]
    EmptyHost,
    /// No `:PORT` at the end.
    #[error("a port is required (HOST:PORT)")]
    MissingPort,
    /// The port is not `1..=65535` or `*`.
    #[error("the port {0:?} is not a number from 1 to 65535 or `*`")]
    BadPort(String),
    /// An IPv6 address written without brackets (its colons are ambiguous with the port's).
    #[error("an IPv6 address must be in brackets, e.g. [::1]:443")]
    UnbracketedIpv6,
    /// `[...]` that does not hold an IPv6 address, or is not followed by `:PORT`.
    #[error("{0:?} is not a bracketed IPv6 address followed by :PORT")]
    BadIpv6(String),
    /// `*` alone, or a `*` anywhere but a leading `*.`.
    #[error("a wildcard may only be a leading `*.` followed by a domain (e.g. *.example.org); use network mode \"open\" to allow every host")]
    BadWildcard,
    /// Something that looks numeric but is not a dotted-quad IPv4 address (`127.1`, `1.2.3.256`).
    #[error("{0:?} is not a valid IPv4 address (write all four parts, e.g. 10.0.0.1)")]
    BadIpv4(String),
    /// Not a DNS name: characters outside `a-z 0-9 - _ .`, an empty label, a label over 63
    /// characters or starting/ending with `-`, or a name over 253 characters.
    #[error("{0:?} is not a valid DNS name")]
    BadName(String),
}

/// Why a destination is refused. `Display` is the message a client sees in the proxy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyReason {
    /// No entry of the allow-list matches `host:port`.
    NotAllowed {
        /// The destination host as the client gave it.
        host: String,
        /// The destination port.
        port: u16,
    },
    /// `host` is allowed, but resolved to an address a name may not lead to.
    RestrictedAddress {
        /// The destination name as the client gave it.
        host: String,
        /// The destination port.
        port: u16,
        /// The address it resolved to.
        addr: IpAddr,
        /// Why that address is off limits for a name.
        kind: RestrictedKind,
    },
}

impl DenyReason {
    /// The destination host as the client gave it.
    pub fn host(&self) -> &str {
        match self {
            DenyReason::NotAllowed { host, .. } | DenyReason::RestrictedAddress { host, .. } => host,
        }
    }

    /// The destination port.
    pub fn port(&self) -> u16 {
        match self {
            DenyReason::NotAllowed { port, .. } | DenyReason::RestrictedAddress { port, .. } => *port,
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::NotAllowed { host, port } => {
                write!(f, "{}:{port} is not in this VM's network allow-list", HostDisplay(host))
            }
            DenyReason::RestrictedAddress { host, port, addr, kind } => write!(
                f,
                "{}:{port} resolves to {addr}, {kind}, which a name may not lead to \
                 (allow the address itself to reach it)",
                HostDisplay(host)
            ),
        }
    }
}

impl std::error::Error for DenyReason {}

/// Prints an IPv6 literal host in brackets, so `host:port` stays unambiguous.
struct HostDisplay<'a>(&'a str);

impl fmt::Display for HostDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.contains(':') && !self.0.starts_with('[') {
            write!(f, "[{}]", self.0)
        } else {
            f.write_str(self.0)
        }
    }
}

impl Policy {
    /// Parses allow-list entries (see the module documentation); the first bad entry is the error.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Policy, PolicyError> {
        let rules = entries
            .iter()
            .map(|entry| {
                let entry = entry.as_ref();
                parse_rule(entry).map_err(|problem| PolicyError { entry: entry.to_owned(), problem })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy { rules })
    }

    /// Whether the policy allows nothing.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether `host:port`, as a client asked for it, matches an entry. `host` is a DNS name or an
    /// IP literal (an IPv6 one with or without brackets). A name that is not a valid DNS name
    /// matches nothing.
    pub fn check(&self, host: &str, port: u16) -> Result<(), DenyReason> {
        let matched = parse_destination(host).is_some_and(|dest| self.matches(&dest, port));
        if matched {
            Ok(())
        } else {
            Err(DenyReason::NotAllowed { host: host.to_owned(), port })
        }
    }

    /// Whether the server may connect to `addr`, one of the addresses `host` resolved to, for a
    /// destination that passed [`Policy::check`]. An IP-literal `host` is its own address and
    /// always passes; a name may not lead to a restricted address unless that IP is itself allowed
    /// for `port`.
    pub fn check_address(&self, host: &str, port: u16, addr: IpAddr) -> Result<(), DenyReason> {
        if let Some(Host::Ip(_)) = parse_destination(host) {
            return Ok(());
        }
        let addr = canonical(addr);
        match restricted_kind(addr) {
            Some(kind) if !self.matches(&Host::Ip(addr), port) => {
                Err(DenyReason::RestrictedAddress { host: host.to_owned(), port, addr, kind })
            }
            _ => Ok(()),
        }
    }

    fn matches(&self, dest: &Host, port: u16) -> bool {
        self.rules.iter().any(|rule| rule.matches(dest, port))
    }
}

impl Rule {
    fn matches(&self, dest: &Host, port: u16) -> bool {
        let port_ok = match self.port {
            PortPattern::Any => true,
            PortPattern::Exact(p) => p == port,
        };
        let host_ok = match (&self.host, dest) {
            (HostPattern::Exact(name), Host::Name(dest)) => name == dest,
            (HostPattern::Subdomains(suffix), Host::Name(dest)) => {
                dest.len() > suffix.len() && dest.ends_with(suffix.as_str())
            }
            (HostPattern::Ip(ip), Host::Ip(dest)) => ip == dest,
            _ => false,
        };
        port_ok && host_ok
    }
}

fn parse_rule(entry: &str) -> Result<Rule, EntryProblem> {
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or_else(|| EntryProblem::BadIpv6(entry.to_owned()))?;
        let v6: Ipv6Addr = inside.parse().map_err(|_| EntryProblem::BadIpv6(entry.to_owned()))?;
        let port = match after.strip_prefix(':') {
            Some(port) => port,
            None if after.is_empty() => return Err(EntryProblem::MissingPort),
            None => return Err(EntryProblem::BadIpv6(entry.to_owned())),
        };
        (HostPattern::Ip(canonical(IpAddr::V6(v6))), port)
    } else {
        let (host, port) = entry.rsplit_once(':').ok_or(EntryProblem::MissingPort)?;
        if host.contains(':') {
            let ipv6_like = host.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
            return Err(if ipv6_like { EntryProblem::UnbracketedIpv6 } else { EntryProblem::BadName(host.to_owned()) });
        }
        (parse_host_pattern(host)?, port)
    };
    Ok(Rule { host, port: parse_port(port)? })
}

fn parse_port(port: &str) -> Result<PortPattern, EntryProblem> {
    if port == "*" {
        return Ok(PortPattern::Any);
    }
    // `u16::from_str` accepts a leading `+`; a port is digits only.
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EntryProblem::BadPort(port.to_owned()));
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(PortPattern::Exact(p)),
        _ => Err(EntryProblem::BadPort(port.to_owned())),
    }
}

fn parse_host_pattern(host: &str) -> Result<HostPattern, EntryProblem> {
    if host.is_empty() {
        return Err(EntryProblem::EmptyHost);
    }
    if let Some(domain) = host.strip_prefix("*.") {
        if domain.contains('*') {
            return Err(EntryProblem::BadWildcard);
        }
        return match parse_host(domain)? {
            Host::Name(name) => Ok(HostPattern::Subdomains(format!(".{name}"))),
            Host::Ip(_) => Err(EntryProblem::BadWildcard),
        };
    }
    if host.contains('*') {
        return Err(EntryProblem::BadWildcard);
    }
    Ok(match parse_host(host)? {
        Host::Name(name) => HostPattern::Exact(name),
        Host::Ip(ip) => HostPattern::Ip(ip),
    })
}

/// A destination as a client gave it; `None` if it is neither an IP literal nor a valid DNS name.
fn parse_destination(host: &str) -> Option<Host> {
    let unbracketed = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    if let Some(inside) = unbracketed {
        return inside.parse::<Ipv6Addr>().ok().map(|v6| Host::Ip(canonical(IpAddr::V6(v6))));
    }
    if let Ok(v6) = host.parse::<Ipv6Addr>() {
        return Some(Host::Ip(canonical(IpAddr::V6(v6))));
    }
    parse_host(host).ok()
}

/// An unbracketed host: a dotted-quad IPv4 address or a DNS name (normalized).
///
/// A name whose last label is all digits is taken for an attempted IPv4 address and refused unless
/// it is a proper dotted quad: resolvers accept `127.1` or `2130706433` as `127.0.0.1`, so such a
/// "name" must never be matched as text.
fn parse_host(host: &str) -> Result<Host, EntryProblem> {
    if let Ok(v4) = host.parse::<Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(v4)));
    }
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let bad = || EntryProblem::BadName(host.to_owned());
    if name.is_empty() || name.len() > 253 {
        return Err(bad());
    }
    for label in name.split('.') {
        let valid = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid {
            return Err(bad());
        }
    }
    let last = name.rsplit('.').next().unwrap_or_default();
    if last.bytes().all(|b| b.is_ascii_digit()) || last.starts_with("0x") && is_hex(&last[2..]) {
        return Err(EntryProblem::BadIpv4(host.to_owned()));
    }
    Ok(Host::Name(name))
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests;
