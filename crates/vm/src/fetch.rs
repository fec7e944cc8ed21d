//! `vmFetch`: one HTTP/1.1 request to a server listening inside the VM, answered in full.
//!
//! The connection is made inside the VM's network namespace by its init ([`Vm::connect`]), so
//! the VM is never exposed on the host. The request is sent with `Connection: close` and the
//! whole answer is read, within limits:
//!
//! - the response body is at most [`FETCH_MAX_BODY_BYTES`] (32 MiB): a larger one is an error
//!   (never a truncated body), detected from `Content-Length` before reading it when given;
//! - the whole exchange (connect, send, headers, body) takes at most [`FETCH_TIMEOUT`] (30 s);
//! - the response's header block is at most 64 KiB and 128 fields.
//!
//! Response header names are lower-case, and several fields of one name are joined with `", "`
//! into one value (`Set-Cookie` too, as the reference's `Record<string, string>` does; a client
//! that needs cookies one by one should use a preview URL, which passes fields unchanged).
//!
//! Why our own small client rather than hyper's: the actor core (`agentvm-actors`), which runs
//! `vmFetch`, depends on this crate and must stay free of HTTP crates (its
//! `tests/transport_neutral.rs`); the parsing itself is `httparse`'s (the parser hyper uses),
//! and what is left here is the request line and the three ways a body ends (`Content-Length`,
//! chunked, end of connection). The streaming proxy of preview URLs lives in the server, with
//! hyper.

use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{FetchProblem, Result, VmError};
use crate::Vm;

/// Longest a [`Vm::fetch`] may take, from connecting to the last byte of the body.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body [`Vm::fetch`] accepts.
pub const FETCH_MAX_BODY_BYTES: usize = 32 << 20;
/// Largest response header block.
const MAX_HEAD_BYTES: usize = 64 << 10;
/// Most response header fields.
const MAX_HEADERS: usize = 128;
/// Request headers the client decides (the framing of a connection used once).
const FRAMING_HEADERS: &[&str] = &["connection", "content-length", "transfer-encoding", "keep-alive", "upgrade", "te"];

/// An HTTP request to a server in the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// `GET`, `POST`... (any token; sent as given).
    pub method: String,
    /// Path and query, starting with `/`.
    pub path_and_query: String,
    /// Request header fields; `Host` defaults to `localhost:<port>`. Framing fields
    /// (`Content-Length`, `Transfer-Encoding`, `Connection`...) are set by the client.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResponse {
    pub status: u16,
    /// The reason phrase the server sent (`OK`), possibly empty.
    pub status_text: String,
    /// Lower-case names; several fields of one name joined with `", "`.
    pub headers: BTreeMap<String, String>,
    pub body: Bytes,
}

impl FetchRequest {
    /// Checks that the request can be sent (method, path, header names and values), as
    /// [`Vm::fetch`] does first: callers can refuse a bad request before booting a VM.
    pub fn validate(&self) -> Result<()> {
        request_head(0, self).map(drop)
    }
}

impl Vm {
    /// Sends `request` to the server listening on `port` of the VM's loopback and reads its
    /// whole answer (see the module's limits). Fails with [`VmError::PortClosed`] when nothing
    /// listens there, [`VmError::InvalidArgument`] for a request that cannot be sent, and
    /// [`VmError::Fetch`] for a timeout, a body over the limit, a broken connection or an answer
    /// that is not HTTP.
    pub async fn fetch(&self, port: u16, request: FetchRequest) -> Result<FetchResponse> {
        let head = request_head(port, &request)?;
        let work = async {
            let mut stream = self.connect(port).await?;
            exchange(&mut stream, port, &head, &request).await
        };
        match tokio::time::timeout(FETCH_TIMEOUT, work).await {
            Ok(result) => result,
            Err(_) => Err(VmError::Fetch { port, problem: FetchProblem::TimedOut(FETCH_TIMEOUT) }),
        }
    }
}

/// The request line and header block, validated.
fn request_head(port: u16, request: &FetchRequest) -> Result<String> {
    let invalid = |what: String| VmError::InvalidArgument(format!("vmFetch: {what}"));
    if request.method.is_empty() || !request.method.bytes().all(is_token_byte) {
        return Err(invalid(format!("invalid method {:?}", request.method)));
    }
    let path = &request.path_and_query;
    if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(invalid(format!("the url must be a path starting with `/` without spaces, got {path:?}")));
    }
    let mut head = format!("{} {path} HTTP/1.1\r\n", request.method);
    let mut has_host = false;
    for (name, value) in &request.headers {
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(invalid(format!("invalid header name {name:?}")));
        }
        if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            return Err(invalid(format!("the value of header {name} contains a line break or NUL")));
        }
        let lower = name.to_ascii_lowercase();
        if FRAMING_HEADERS.contains(&lower.as_str()) {
            continue;
        }
        has_host |= lower == "host";
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !has_host {
        head.push_str(&format!("Host: localhost:{port}\r\n"));
    }
    let expects_body = !matches!(request.method.as_str(), "GET" | "HEAD" | "DELETE" | "OPTIONS" | "TRACE");
    if !request.body.is_empty() || expects_body {
        head.push_str(&format!("Content-Length: {}\r\n", request.body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    Ok(head)
}

/// `tchar` of RFC 9110.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

async fn exchange(stream: &mut TcpStream, port: u16, head: &str, request: &FetchRequest) -> Result<FetchResponse> {
    let broken = |e: io::Error| VmError::Fetch { port, problem: FetchProblem::Connection(e) };
    stream.write_all(head.as_bytes()).await.map_err(broken)?;
    stream.write_all(&request.body).await.map_err(broken)?;
    stream.flush().await.map_err(broken)?;
    let mut reader = Reader { stream, buffer: BytesMut::with_capacity(16 << 10), port };
    let (status, status_text, headers) = loop {
        let parsed = reader.head().await?;
        // `100 Continue` and other interim answers come before the real one.
        if !(100..200).contains(&parsed.0) || parsed.0 == 101 {
            break parsed;
        }
    };
    let no_body = request.method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status);
    let body = if no_body {
        Bytes::new()
    } else if headers.get("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked")) {
        reader.chunked().await?
    } else if let Some(length) = headers.get("content-length") {
        let length =
            length.trim().parse::<usize>().map_err(|_| reader.bad(format!("bad Content-Length {length:?}")))?;
        reader.exactly(length).await?
    } else {
        reader.until_closed().await?
    };
    Ok(FetchResponse { status, status_text, headers, body })
}

/// Reads the answer from the connection through a buffer.
struct Reader<'a> {
    stream: &'a mut TcpStream,
    buffer: BytesMut,
    port: u16,
}

impl Reader<'_> {
    fn bad(&self, what: String) -> VmError {
        VmError::Fetch { port: self.port, problem: FetchProblem::NotHttp(what) }
    }

    fn too_large(&self) -> VmError {
        VmError::Fetch { port: self.port, problem: FetchProblem::TooLarge(FETCH_MAX_BODY_BYTES) }
    }

    /// Reads more into the buffer; `false` at the end of the connection.
    async fn fill(&mut self) -> Result<bool> {
        self.buffer.reserve(16 << 10);
        let n = self
            .stream
            .read_buf(&mut self.buffer)
            .await
            .map_err(|e| VmError::Fetch { port: self.port, problem: FetchProblem::Connection(e) })?;
        Ok(n > 0)
    }

    async fn fill_or_fail(&mut self, what: &str) -> Result<()> {
        if self.fill().await? {
            Ok(())
        } else {
            Err(self.bad(format!("the connection ended {what}")))
        }
    }

    /// The status line and header fields.
    async fn head(&mut self) -> Result<(u16, String, BTreeMap<String, String>)> {
        loop {
            let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut fields);
            match response.parse(&self.buffer) {
                Ok(httparse::Status::Complete(used)) => {
                    let status = response.code.unwrap_or(0);
                    let reason = response.reason.unwrap_or("").to_string();
                    let mut headers: BTreeMap<String, String> = BTreeMap::new();
                    for field in response.headers.iter() {
                        let value = String::from_utf8_lossy(field.value).trim().to_string();
                        headers
                            .entry(field.name.to_ascii_lowercase())
                            .and_modify(|v| {
                                v.push_str(", ");
                                v.push_str(&value);
                            })
                            .or_insert(value);
                    }
                    self.buffer.advance(used);
                    return Ok((status, reason, headers));
                }
                Ok(httparse::Status::Partial) if self.buffer.len() < MAX_HEAD_BYTES => {
                    self.fill_or_fail("before the response's headers").await?;
                }
                Ok(httparse::Status::Partial) => {
                    return Err(self.bad(format!("the header block is larger than {} KiB", MAX_HEAD_BYTES >> 10)))
                }
                Err(e) => return Err(self.bad(e.to_string())),
            }
        }
    }

    /// A body of `length` bytes.
    async fn exactly(&mut self, length: usize) -> Result<Bytes> {
        if length > FETCH_MAX_BODY_BYTES {
            return Err(self.too_large());
        }
        while self.buffer.len() < length {
            self.fill_or_fail("before the end of the body (Content-Length)").await?;
        }
        Ok(self.buffer.split_to(length).freeze())
    }

    /// A body that ends with the connection.
    async fn until_closed(&mut self) -> Result<Bytes> {
        loop {
            if self.buffer.len() > FETCH_MAX_BODY_BYTES {
                return Err(self.too_large());
            }
            if !self.fill().await? {
                return Ok(std::mem::take(&mut self.buffer).freeze());
            }
        }
    }

    /// A chunked body (trailer fields, if any, are not read: the connection is closed after).
    async fn chunked(&mut self) -> Result<Bytes> {
        let mut body = BytesMut::new();
        loop {
            let (used, size) = loop {
                match httparse::parse_chunk_size(&self.buffer) {
                    Ok(httparse::Status::Complete(found)) => break found,
                    Ok(httparse::Status::Partial) if self.buffer.len() < MAX_HEAD_BYTES => {
                        self.fill_or_fail("inside a chunked body").await?;
                    }
                    _ => return Err(self.bad("invalid chunk size".into())),
                }
            };
            self.buffer.advance(used);
            if size == 0 {
                return Ok(body.freeze());
            }
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            if size > FETCH_MAX_BODY_BYTES - body.len() {
                return Err(self.too_large());
            }
            // The chunk and the line break after it.
            while self.buffer.len() < size + 2 {
                self.fill_or_fail("inside a chunk").await?;
            }
            body.extend_from_slice(&self.buffer[..size]);
            if &self.buffer[size..size + 2] != b"\r\n" {
                return Err(self.bad("a chunk does not end with a line break".into()));
            }
            self.buffer.advance(size + 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> FetchRequest {
        FetchRequest {
            method: method.into(),
            path_and_query: path.into(),
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            body: Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    #[test]
    fn the_head_sets_host_and_framing_and_refuses_what_cannot_be_sent() {
        let head = request_head(8000, &request("GET", "/a?b=1", &[("Accept", "*/*"), ("Connection", "x")], ""));
        assert_eq!(
            head.unwrap(),
            "GET /a?b=1 HTTP/1.1\r\nAccept: */*\r\nHost: localhost:8000\r\nConnection: close\r\n\r\n"
        );
        let head = request_head(1, &request("POST", "/", &[("host", "example"), ("Content-Length", "99")], "hi"));
        assert_eq!(head.unwrap(), "POST / HTTP/1.1\r\nhost: example\r\nContent-Length: 2\r\nConnection: close\r\n\r\n");
        for bad in [
            request("GET", "a", &[], ""),
            request("GET", "/a b", &[], ""),
            request("G T", "/", &[], ""),
            request("GET", "/", &[("a:b", "c")], ""),
            request("GET", "/", &[("a", "c\r\nx: y")], ""),
        ] {
            assert!(matches!(request_head(1, &bad), Err(VmError::InvalidArgument(_))), "{bad:?}");
        }
    }

    /// Answers one connection of a loopback listener with `answer`, returning what it was sent.
    async fn serve_once(answer: &'static [u8]) -> (u16, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut received = vec![0u8; 4096];
            let n = socket.read(&mut received).await.unwrap();
            received.truncate(n);
            socket.write_all(answer).await.unwrap();
            received
        });
        (port, task)
    }

    async fn fetch_from(answer: &'static [u8], method: &str) -> Result<FetchResponse> {
        let (port, server) = serve_once(answer).await;
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let request = request(method, "/", &[], "");
        let head = request_head(port, &request)?;
        let result = exchange(&mut stream, port, &head, &request).await;
        drop(stream);
        server.await.unwrap();
        result
    }

    #[tokio::test]
    async fn bodies_end_by_length_by_chunks_or_with_the_connection() {
        let r =
            fetch_from(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nA: 1\r\na: 2\r\n\r\nhelloEXTRA", "GET").await.unwrap();
        assert_eq!((r.status, r.status_text.as_str(), &r.body[..]), (200, "OK", &b"hello"[..]));
        assert_eq!(r.headers.get("a").map(String::as_str), Some("1, 2"), "fields of one name joined");
        let chunked = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        let r = fetch_from(chunked, "GET").await.unwrap();
        assert_eq!((r.status, &r.body[..]), (201, &b"abcde"[..]));
        let r = fetch_from(b"HTTP/1.0 200 OK\r\n\r\nuntil the end", "GET").await.unwrap();
        assert_eq!(&r.body[..], b"until the end");
        let r = fetch_from(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", "GET").await.unwrap();
        assert_eq!((r.status, r.body.len()), (204, 0), "interim answers skipped");
        let r = fetch_from(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", "HEAD").await.unwrap();
        assert_eq!(r.body.len(), 0, "HEAD has no body");
    }

    #[tokio::test]
    async fn too_large_truncated_and_garbage_answers_are_errors() {
        let r = fetch_from(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n", "GET").await;
        assert!(matches!(r, Err(VmError::Fetch { problem: FetchProblem::TooLarge(_), .. })), "{r:?}");
        assert!(r.unwrap_err().to_string().contains("32 MiB"));
        let r = fetch_from(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "GET").await;
        assert!(matches!(r, Err(VmError::Fetch { problem: FetchProblem::NotHttp(_), .. })), "{r:?}");
        let r = fetch_from(b"SSH-2.0-OpenSSH\r\n\r\n", "GET").await;
        assert!(matches!(r, Err(VmError::Fetch { problem: FetchProblem::NotHttp(_), .. })), "{r:?}");
        let r = fetch_from(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "GET").await;
        assert!(matches!(r, Err(VmError::Fetch { problem: FetchProblem::NotHttp(_), .. })), "{r:?}");
    }
}
