//! The HTTP side of the proxy: `CONNECT host:port` tunnels, and absolute-form requests
//! (`GET http://host[:port]/path HTTP/1.1`, what curl and Python send for a plain `http://` URL
//! through `HTTP_PROXY`).
//!
//! One request per client connection. The request head is read (bounded in size and time) and
//! parsed with `httparse`; the target with the `http` crate's URI parser. Then:
//!
//! - `CONNECT`: after the gate, `200 Connection Established`, and the connection becomes a tunnel.
//! - absolute-form: after the gate, the request goes to the origin in origin-form (`GET /path`),
//!   with `Host` set from the URL, the hop-by-hop headers dropped (`Proxy-*`, `Connection`,
//!   `Keep-Alive`, `TE`, `Trailer`, `Upgrade` and those the `Connection` header names) and
//!   `Connection: close` added; the body and the response then stream through unchanged, and the
//!   origin's close ends the exchange. A client's next request needs a new connection (clients do
//!   that on their own after `Connection: close`).
//!
//! Refusals and failures are short `text/plain` answers with `Connection: close`: `403` (denied,
//! with the reason also in `X-Agentvm-Denied`), `502` (cannot connect), `504` (connect timed out),
//! `400`, `408`, `431`.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use super::{tunnel, Proxy};
use crate::connect::ConnectError;

/// The answer to a connection past the cap (see [`crate::ProxyLimits::max_connections`]).
pub(super) const SERVICE_UNAVAILABLE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 46\r\nConnection: close\r\n\r\n\
this VM's proxy has too many connections open\n";

/// Most headers a request head may have.
const MAX_HEADERS: usize = 128;

/// Headers that concern one connection, not the request: never passed to the origin.
const HOP_BY_HOP: &[&str] =
    &["connection", "keep-alive", "te", "trailer", "upgrade", "proxy-connection", "proxy-authorization"];

/// A parsed request head, owned.
struct Head {
    method: String,
    target: String,
    /// The minor version: `HTTP/1.0` or `HTTP/1.1`.
    version: u8,
    headers: Vec<(String, Vec<u8>)>,
}

/// What reading a request head gave.
enum HeadRead {
    /// The head, and whatever the client sent after it (the start of a body, or of the tunnel).
    Complete(Head, Vec<u8>),
    Closed,
    TooLarge,
    Invalid(httparse::Error),
}

/// Serves one HTTP client whose head must arrive by `deadline`.
pub(super) async fn serve(mut stream: TcpStream, proxy: &Proxy, deadline: Instant) -> io::Result<()> {
    let max = proxy.limits().max_head_bytes;
    let (head, rest) = match timeout_at(deadline, read_head(&mut stream, max)).await {
        Err(_) => return respond_head_timeout(&mut stream).await,
        Ok(read) => match read? {
            HeadRead::Complete(head, rest) => (head, rest),
            HeadRead::Closed => return Ok(()),
            HeadRead::TooLarge => {
                let body = format!("the request head is larger than {max} bytes\n");
                return respond(&mut stream, "431 Request Header Fields Too Large", &[], &body).await;
            }
            HeadRead::Invalid(error) => {
                let body = format!("this is not an HTTP/1 request: {error}\n");
                return respond(&mut stream, "400 Bad Request", &[], &body).await;
            }
        },
    };
    if head.method.eq_ignore_ascii_case("CONNECT") {
        serve_connect(stream, proxy, &head, rest).await
    } else {
        serve_forward(stream, proxy, &head, rest).await
    }
}

async fn serve_connect(mut stream: TcpStream, proxy: &Proxy, head: &Head, rest: Vec<u8>) -> io::Result<()> {
    let authority = match head.target.parse::<http::uri::Authority>() {
        Ok(authority) if authority.port_u16().is_some() => authority,
        _ => {
            let body = format!("CONNECT needs host:port, not {:?}\n", head.target);
            return respond(&mut stream, "400 Bad Request", &[], &body).await;
        }
    };
    let port = authority.port_u16().unwrap_or_default();
    let mut upstream = match proxy.open(authority.host(), port).await {
        Ok(upstream) => upstream,
        Err(error) => return respond_connect_error(&mut stream, &error).await,
    };
    stream.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n").await?;
    upstream.write_all(&rest).await?;
    proxy.count_relayed(rest.len() as u64, 0);
    tunnel::relay(&mut stream, &mut upstream, proxy).await
}

async fn serve_forward(mut stream: TcpStream, proxy: &Proxy, head: &Head, rest: Vec<u8>) -> io::Result<()> {
    let uri = match head.target.parse::<http::Uri>() {
        Ok(uri) => uri,
        Err(error) => {
            let body = format!("bad request target {:?}: {error}\n", head.target);
            return respond(&mut stream, "400 Bad Request", &[], &body).await;
        }
    };
    let (authority, scheme) = match (uri.authority(), uri.scheme_str()) {
        (Some(authority), Some(scheme)) if scheme.eq_ignore_ascii_case("http") => (authority, scheme),
        (Some(_), Some(scheme)) if scheme.eq_ignore_ascii_case("https") => {
            let body = "this proxy forwards plain http:// URLs; for https:// use CONNECT (HTTPS_PROXY does)\n";
            return respond(&mut stream, "400 Bad Request", &[], body).await;
        }
        _ => {
            let body = format!(
                "this is a proxy: ask for an absolute http:// URL (GET http://host/path) or CONNECT host:port, \
                 not {:?}\n",
                head.target
            );
            return respond(&mut stream, "400 Bad Request", &[], &body).await;
        }
    };
    tracing::trace!(scheme, "proxy: forwarding a request");
    let port = authority.port_u16().unwrap_or(80);
    let mut upstream = match proxy.open(authority.host(), port).await {
        Ok(upstream) => upstream,
        Err(error) => return respond_connect_error(&mut stream, &error).await,
    };
    let host_header = match authority.port() {
        Some(port) => format!("{}:{}", authority.host(), port.as_str()),
        None => authority.host().to_owned(),
    };
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let request = origin_head(head, path, &host_header);
    upstream.write_all(&request).await?;
    upstream.write_all(&rest).await?;
    proxy.count_relayed((request.len() + rest.len()) as u64, 0);
    tunnel::relay(&mut stream, &mut upstream, proxy).await
}

/// The request head sent to the origin: origin-form target, `Host` from the URL, no hop-by-hop
/// headers, `Connection: close`.
fn origin_head(head: &Head, path: &str, host: &str) -> Vec<u8> {
    let named_by_connection: Vec<String> = head
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, value)| {
            String::from_utf8_lossy(value).split(',').map(|t| t.trim().to_ascii_lowercase()).collect::<Vec<_>>()
        })
        .collect();
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(format!("{} {path} HTTP/1.{}\r\nHost: {host}\r\n", head.method, head.version).as_bytes());
    for (name, value) in &head.headers {
        let lower = name.to_ascii_lowercase();
        if lower == "host" || HOP_BY_HOP.contains(&lower.as_str()) || named_by_connection.contains(&lower) {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out
}

/// Reads until a complete request head, at most `max` bytes of it.
async fn read_head(stream: &mut TcpStream, max: usize) -> io::Result<HeadRead> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(HeadRead::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf) {
            Ok(httparse::Status::Complete(len)) if len <= max => {
                let head = Head {
                    method: request.method.unwrap_or_default().to_owned(),
                    target: request.path.unwrap_or_default().to_owned(),
                    version: request.version.unwrap_or(1),
                    headers: request.headers.iter().map(|h| (h.name.to_owned(), h.value.to_vec())).collect(),
                };
                return Ok(HeadRead::Complete(head, buf.split_off(len)));
            }
            Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => return Ok(HeadRead::TooLarge),
            Ok(httparse::Status::Partial) if buf.len() >= max => return Ok(HeadRead::TooLarge),
            Ok(httparse::Status::Partial) => {}
            Err(error) => return Ok(HeadRead::Invalid(error)),
        }
    }
}

async fn respond_connect_error(stream: &mut TcpStream, error: &ConnectError) -> io::Result<()> {
    match error {
        ConnectError::Denied(reason) => {
            let reason = reason.to_string();
            let header = header_safe(&reason);
            respond(stream, "403 Forbidden", &[("X-Agentvm-Denied", &header)], &format!("{reason}\n")).await
        }
        ConnectError::TimedOut { .. } => respond(stream, "504 Gateway Timeout", &[], &format!("{error}\n")).await,
        _ => respond(stream, "502 Bad Gateway", &[], &format!("{error}\n")).await,
    }
}

/// Answers a client that did not send its head in time.
pub(super) async fn respond_head_timeout(stream: &mut TcpStream) -> io::Result<()> {
    respond(stream, "408 Request Timeout", &[], "the request head did not arrive in time\n").await
}

/// Sends a short plain-text answer and closes the connection.
async fn respond(stream: &mut TcpStream, status: &str, headers: &[(&str, &str)], body: &str) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await?;
    linger(stream).await;
    Ok(())
}

/// Reads (and drops) what the client still sends, briefly, before the socket is closed: closing
/// with unread bytes makes the kernel send a reset, which can destroy the answer before the client
/// has read it.
async fn linger(stream: &mut TcpStream) {
    let mut sink = [0u8; 8192];
    let mut budget: usize = 64 * 1024;
    let until = Instant::now() + std::time::Duration::from_secs(1);
    while budget > 0 {
        match timeout_at(until, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => budget = budget.saturating_sub(n),
            _ => return,
        }
    }
}

/// A header value from free text: control characters (CR, LF...) become spaces.
fn header_safe(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_unavailable_has_the_right_length() {
        let text = std::str::from_utf8(SERVICE_UNAVAILABLE).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.contains(&format!("Content-Length: {}", body.len())), "{head}");
    }

    #[test]
    fn origin_head_drops_hop_by_hop_headers_and_sets_host() {
        let head = Head {
            method: "POST".into(),
            target: "http://a.example:8080/p?q=1".into(),
            version: 1,
            headers: vec![
                ("Host".into(), b"wrong.example".to_vec()),
                ("Proxy-Connection".into(), b"Keep-Alive".to_vec()),
                ("Proxy-Authorization".into(), b"Basic eA==".to_vec()),
                ("Connection".into(), b"keep-alive, X-Secret".to_vec()),
                ("X-Secret".into(), b"1".to_vec()),
                ("Content-Length".into(), b"3".to_vec()),
                ("User-Agent".into(), b"t".to_vec()),
            ],
        };
        let out = String::from_utf8(origin_head(&head, "/p?q=1", "a.example:8080")).expect("utf-8");
        assert_eq!(
            out,
            "POST /p?q=1 HTTP/1.1\r\nHost: a.example:8080\r\nContent-Length: 3\r\nUser-Agent: t\r\n\
             Connection: close\r\n\r\n"
        );
    }

    #[test]
    fn header_values_carry_no_line_breaks() {
        assert_eq!(header_safe("a\r\nX-Evil: 1"), "a  X-Evil: 1");
    }
}
