//! The SOCKS5 side of the proxy (RFC 1928), the part clients use: no authentication, `CONNECT`
//! only, destinations as a domain name, IPv4 or IPv6 address.
//!
//! ```text
//! client: 05 n methods...          server: 05 00 (no auth) | 05 ff (none acceptable, close)
//! client: 05 cmd 00 atyp addr port server: 05 rep 00 atyp bnd.addr bnd.port
//! ```
//!
//! Reply codes: `00` connected (then the connection is a tunnel), `02` not allowed by the
//! ruleset (the policy refused), `03` network unreachable, `04` host unreachable (also: cannot
//! resolve, timed out), `05` connection refused, `07` command not supported (`BIND`,
//! `UDP ASSOCIATE`), `08` address type not supported. After any failure the connection is closed.
//! The handshake is read field by field, exactly, so nothing the client sends after it is lost.
//! A domain name is resolved by the server (`socks5h://` in curl's terms); with `socks5://` the
//! client resolves and sends an address, which the policy then sees as an IP literal.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use super::{tunnel, Proxy};
use crate::connect::ConnectError;

/// The protocol version, also the first byte a SOCKS5 client sends.
pub(super) const VERSION: u8 = 0x05;

const NO_AUTH: u8 = 0x00;
const NO_ACCEPTABLE_METHOD: u8 = 0xff;
const CMD_CONNECT: u8 = 0x01;
const ATYP_IPV4: u8 = 0x01;
const ATYP_DOMAIN: u8 = 0x03;
const ATYP_IPV6: u8 = 0x04;

/// RFC 1928 reply codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Reply {
    Succeeded = 0x00,
    NotAllowedByRuleset = 0x02,
    NetworkUnreachable = 0x03,
    HostUnreachable = 0x04,
    ConnectionRefused = 0x05,
    CommandNotSupported = 0x07,
    AddressTypeNotSupported = 0x08,
}

/// Serves one SOCKS5 client whose handshake must be complete by `deadline`.
pub(super) async fn serve(mut stream: TcpStream, proxy: &Proxy, deadline: Instant) -> io::Result<()> {
    let (host, port) = match timeout_at(deadline, handshake(&mut stream)).await {
        Err(_) => return Ok(()),
        Ok(result) => match result? {
            Some(destination) => destination,
            None => return Ok(()),
        },
    };
    match proxy.open(&host, port).await {
        Ok(mut upstream) => {
            let bound = upstream.local_addr()?;
            reply(&mut stream, Reply::Succeeded, bound).await?;
            tunnel::relay(&mut stream, &mut upstream, proxy).await
        }
        Err(error) => reply(&mut stream, reply_for(&error), unspecified()).await,
    }
}

/// Method negotiation and the request; `None` when the client was answered with a refusal
/// already (or sent something that is not SOCKS5) and the connection is to be closed.
async fn handshake(stream: &mut TcpStream) -> io::Result<Option<(String, u16)>> {
    let [version, count] = read_array::<2>(stream).await?;
    if version != VERSION {
        return Ok(None);
    }
    let mut methods = vec![0u8; usize::from(count)];
    stream.read_exact(&mut methods).await?;
    if !methods.contains(&NO_AUTH) {
        stream.write_all(&[VERSION, NO_ACCEPTABLE_METHOD]).await?;
        return Ok(None);
    }
    stream.write_all(&[VERSION, NO_AUTH]).await?;

    let [version, command, _reserved, atyp] = read_array::<4>(stream).await?;
    if version != VERSION {
        return Ok(None);
    }
    let host = match atyp {
        ATYP_IPV4 => Ipv4Addr::from(read_array::<4>(stream).await?).to_string(),
        ATYP_IPV6 => Ipv6Addr::from(read_array::<16>(stream).await?).to_string(),
        ATYP_DOMAIN => {
            let [len] = read_array::<1>(stream).await?;
            let mut name = vec![0u8; usize::from(len)];
            stream.read_exact(&mut name).await?;
            // Not UTF-8 is not a DNS name: the policy will match nothing, and says so.
            String::from_utf8_lossy(&name).into_owned()
        }
        _ => {
            reply(stream, Reply::AddressTypeNotSupported, unspecified()).await?;
            return Ok(None);
        }
    };
    let port = u16::from_be_bytes(read_array::<2>(stream).await?);
    if command != CMD_CONNECT {
        reply(stream, Reply::CommandNotSupported, unspecified()).await?;
        return Ok(None);
    }
    Ok(Some((host, port)))
}

fn reply_for(error: &ConnectError) -> Reply {
    match error {
        ConnectError::Denied(_) => Reply::NotAllowedByRuleset,
        ConnectError::Refused { .. } | ConnectError::Local { .. } => Reply::ConnectionRefused,
        ConnectError::Unreachable { source, .. } if source.kind() == io::ErrorKind::NetworkUnreachable => {
            Reply::NetworkUnreachable
        }
        ConnectError::Unreachable { .. }
        | ConnectError::Resolve { .. }
        | ConnectError::NoAddress(_)
        | ConnectError::TimedOut { .. } => Reply::HostUnreachable,
    }
}

async fn reply(stream: &mut TcpStream, code: Reply, bound: SocketAddr) -> io::Result<()> {
    let mut out = Vec::with_capacity(22);
    out.extend_from_slice(&[VERSION, code as u8, 0x00]);
    match bound.ip() {
        IpAddr::V4(v4) => {
            out.push(ATYP_IPV4);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(ATYP_IPV6);
            out.extend_from_slice(&v6.octets());
        }
    }
    out.extend_from_slice(&bound.port().to_be_bytes());
    stream.write_all(&out).await?;
    if code != Reply::Succeeded {
        stream.shutdown().await?;
    }
    Ok(())
}

fn unspecified() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
}

async fn read_array<const N: usize>(stream: &mut TcpStream) -> io::Result<[u8; N]> {
    let mut out = [0u8; N];
    stream.read_exact(&mut out).await?;
    Ok(out)
}
