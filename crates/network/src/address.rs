//! Which IP addresses a destination given by *name* may not reach.
//!
//! A VM names hosts; the server resolves them. Whoever controls a name's DNS records controls what
//! it resolves to, so an allowed name (or any subdomain matched by `*.example.org`) could be made to
//! point at the host's own loopback services, at the cloud metadata endpoint `169.254.169.254`, or
//! at a multicast group (DNS rebinding, SSRF). Those addresses are never reached through a name;
//! an operator who really means one lists the IP itself (`127.0.0.1:9000`).
//!
//! Private ranges (`10/8`, `172.16/12`, `192.168/16`, `fc00::/7`) are *not* refused: reaching a
//! company API on the office network by name is the point of an allow-list.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`) are the IPv4 address they carry: the kernel
//! connects to that IPv4 address, so every check first [`canonical`]izes.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The kinds of address a name may not resolve to (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestrictedKind {
    /// `127.0.0.0/8`, `::1`: the host's own services.
    Loopback,
    /// `0.0.0.0/8`, `::`: on Linux, connecting to "this host" reaches loopback.
    Unspecified,
    /// `169.254.0.0/16` (including the cloud metadata endpoint), `fe80::/10`.
    LinkLocal,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
}

impl fmt::Display for RestrictedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RestrictedKind::Loopback => "a loopback address",
            RestrictedKind::Unspecified => "an unspecified (this-host) address",
            RestrictedKind::LinkLocal => "a link-local address (this includes cloud metadata)",
            RestrictedKind::Multicast => "a multicast address",
            RestrictedKind::Broadcast => "a broadcast address",
        })
    }
}

/// The address the kernel really connects to: an IPv4-mapped IPv6 address becomes its IPv4 address.
///
/// (Only the mapped form `::ffff:a.b.c.d`; the deprecated "IPv4-compatible" `::a.b.c.d` is not
/// converted, since that would also turn `::1` into `0.0.0.1`. Linux does not route the compatible
/// form to IPv4.)
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Which restricted kind `addr` is, if any (after [`canonical`]).
pub fn restricted_kind(addr: IpAddr) -> Option<RestrictedKind> {
    match canonical(addr) {
        IpAddr::V4(v4) => restricted_v4(v4),
        IpAddr::V6(v6) => restricted_v6(v6),
    }
}

fn restricted_v4(v4: Ipv4Addr) -> Option<RestrictedKind> {
    if v4.is_loopback() {
        Some(RestrictedKind::Loopback)
    } else if v4.octets()[0] == 0 {
        Some(RestrictedKind::Unspecified)
    } else if v4.is_link_local() {
        Some(RestrictedKind::LinkLocal)
    } else if v4.is_multicast() {
        Some(RestrictedKind::Multicast)
    } else if v4.is_broadcast() {
        Some(RestrictedKind::Broadcast)
    } else {
        None
    }
}

fn restricted_v6(v6: Ipv6Addr) -> Option<RestrictedKind> {
    if v6.is_loopback() {
        Some(RestrictedKind::Loopback)
    } else if v6.is_unspecified() {
        Some(RestrictedKind::Unspecified)
    } else if v6.segments()[0] & 0xffc0 == 0xfe80 {
        Some(RestrictedKind::LinkLocal)
    } else if v6.is_multicast() {
        Some(RestrictedKind::Multicast)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        let table: &[(&str, Option<RestrictedKind>)] = &[
            ("127.0.0.1", Some(RestrictedKind::Loopback)),
            ("127.255.0.9", Some(RestrictedKind::Loopback)),
            ("::1", Some(RestrictedKind::Loopback)),
            ("::ffff:127.0.0.1", Some(RestrictedKind::Loopback)),
            ("0.0.0.0", Some(RestrictedKind::Unspecified)),
            ("0.1.2.3", Some(RestrictedKind::Unspecified)),
            ("::", Some(RestrictedKind::Unspecified)),
            ("::ffff:0.0.0.0", Some(RestrictedKind::Unspecified)),
            ("169.254.169.254", Some(RestrictedKind::LinkLocal)),
            ("::ffff:169.254.169.254", Some(RestrictedKind::LinkLocal)),
            ("fe80::1", Some(RestrictedKind::LinkLocal)),
            ("febf::1", Some(RestrictedKind::LinkLocal)),
            ("224.0.0.1", Some(RestrictedKind::Multicast)),
            ("239.255.255.250", Some(RestrictedKind::Multicast)),
            ("ff02::1", Some(RestrictedKind::Multicast)),
            ("255.255.255.255", Some(RestrictedKind::Broadcast)),
            ("10.1.2.3", None),
            ("192.168.1.1", None),
            ("172.16.0.1", None),
            ("fd00::1", None),
            ("fec0::1", None),
            ("93.184.216.34", None),
            ("2606:2800:220:1::1", None),
            ("::ffff:10.0.0.1", None),
        ];
        for (addr, want) in table {
            let ip: IpAddr = addr.parse().expect("table address");
            assert_eq!(restricted_kind(ip), *want, "{addr}");
        }
    }

    #[test]
    fn canonical_unmaps_only_mapped_addresses() {
        let mapped: IpAddr = "::ffff:1.2.3.4".parse().expect("address");
        assert_eq!(canonical(mapped), IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)));
        let loopback: IpAddr = "::1".parse().expect("address");
        assert_eq!(canonical(loopback), loopback);
    }
}
