//! The egress proxy driven by real clients (curl, python3's urllib, raw sockets) against real
//! servers on host loopback.

mod common;

use std::time::Duration;

use std::sync::{Arc, Mutex};

use agentvm_network::{Denied, LocalConnect, ProxyLimits};
use common::{closed_port, curl, run, wait_until, Echo, Origin, TestProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn allow(entries: &[String]) -> Vec<String> {
    entries.to_vec()
}

/// `-w` output appended after the body: the HTTP status (and the CONNECT status for `-p`).
const STATUS: &str = "\n%{http_code} %{http_connect}";

fn split_status(stdout: &str) -> (&str, &str) {
    stdout.rsplit_once('\n').unwrap_or(("", stdout))
}

#[tokio::test]
async fn http_absolute_form_reaches_an_allowed_origin() {
    let origin = Origin::start().await;
    let proxy = TestProxy::start(&allow(&[format!("127.0.0.1:{}", origin.port())])).await;
    let url = format!("http://127.0.0.1:{}/x?y=1", origin.port());
    let (code, out, err) =
        curl(&["-x", &proxy.url(), "-w", STATUS, "-H", "Proxy-Authorization: Basic eA==", &url]).await;
    assert_eq!(code, 0, "{err}");
    let (body, status) = split_status(&out);
    assert_eq!(status, "200 000");
    assert_eq!(body, "origin: GET /x?y=1\n");
    let heads = origin.heads();
    assert_eq!(heads.len(), 1);
    let head = heads[0].to_ascii_lowercase();
    assert!(head.contains(&format!("host: 127.0.0.1:{}\r\n", origin.port())), "{head}");
    assert!(head.contains("connection: close\r\n"), "{head}");
    assert!(!head.contains("proxy-"), "hop-by-hop headers reached the origin: {head}");
    assert!(proxy.denied().is_empty());
    // The response's bytes are counted when the exchange ends, just after curl has them.
    wait_until("the exchange is counted", || proxy.proxy.stats().bytes_to_clients > body.len() as u64).await;
}

#[tokio::test]
async fn http_absolute_form_to_a_denied_destination_is_403_with_the_reason() {
    let origin = Origin::start().await;
    let other = Origin::start().await;
    let proxy = TestProxy::start(&allow(&[format!("127.0.0.1:{}", origin.port())])).await;
    let url = format!("http://127.0.0.1:{}/secret", other.port());
    let (code, out, err) = curl(&["-i", "-x", &proxy.url(), &url]).await;
    assert_eq!(code, 0, "{err}");
    let reason = format!("127.0.0.1:{} is not in this VM's network allow-list", other.port());
    assert!(out.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{out}");
    assert!(out.contains(&format!("X-Agentvm-Denied: {reason}\r\n")), "{out}");
    assert!(out.ends_with(&format!("\r\n\r\n{reason}\n")), "{out}");
    assert_eq!(proxy.denied(), vec![Denied { host: "127.0.0.1".into(), port: other.port(), reason }]);
    assert!(other.heads().is_empty(), "the denied origin was reached");
}

#[tokio::test]
async fn a_name_is_denied_before_anything_is_resolved() {
    let proxy = TestProxy::start(&allow(&["api.example.com:443".into()])).await;
    let (code, out, err) = curl(&["-x", &proxy.url(), "-w", STATUS, "http://api.evil.com/"]).await;
    assert_eq!(code, 0, "{err}");
    let (body, status) = split_status(&out);
    assert_eq!(status, "403 000");
    assert_eq!(body, "api.evil.com:80 is not in this VM's network allow-list\n");
    assert_eq!(proxy.denied().len(), 1);
}

#[tokio::test]
async fn connect_tunnels_to_an_allowed_origin() {
    let origin = Origin::start().await;
    let proxy = TestProxy::start(&allow(&[format!("127.0.0.1:{}", origin.port())])).await;
    let url = format!("http://127.0.0.1:{}/tunnelled", origin.port());
    let (code, out, err) = curl(&["-p", "-x", &proxy.url(), "-w", STATUS, &url]).await;
    assert_eq!(code, 0, "{err}");
    let (body, status) = split_status(&out);
    assert_eq!(status, "200 200");
    assert_eq!(body, "origin: GET /tunnelled\n");
    assert!(proxy.denied().is_empty());
}

#[tokio::test]
async fn connect_to_a_denied_destination_is_403_and_one_denial() {
    let origin = Origin::start().await;
    let other = Origin::start().await;
    let proxy = TestProxy::start(&allow(&[format!("127.0.0.1:{}", origin.port())])).await;
    let url = format!("http://127.0.0.1:{}/", other.port());
    let (code, out, err) = curl(&["-p", "-x", &proxy.url(), "-w", STATUS, &url]).await;
    assert_ne!(code, 0, "curl went through a denied CONNECT: {out}");
    assert!(err.contains("403"), "{err}");
    assert_eq!(split_status(&out).1, "000 403");
    let denied = proxy.denied();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!((denied[0].host.as_str(), denied[0].port), ("127.0.0.1", other.port()));
    assert!(other.heads().is_empty());
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused_unless_the_ip_is_listed() {
    let origin = Origin::start().await;
    let port = origin.port();
    let url = format!("http://localhost:{port}/by-name");

    let proxy = TestProxy::start(&allow(&[format!("localhost:{port}")])).await;
    let (code, out, err) = curl(&["-x", &proxy.url(), "-w", STATUS, &url]).await;
    assert_eq!(code, 0, "{err}");
    let (body, status) = split_status(&out);
    assert_eq!(status, "403 000");
    assert!(body.starts_with(&format!("localhost:{port} resolves to ")), "{body}");
    assert!(body.contains("a loopback address"), "{body}");
    assert_eq!(proxy.denied().len(), 1);
    let (code, _, err) = curl(&["--proxy", &format!("socks5h://{}", proxy.addr), &url]).await;
    assert_ne!(code, 0, "socks5h reached loopback by name");
    assert!(err.contains("(2)") || err.contains("not allowed"), "{err}");
    assert_eq!(proxy.denied().len(), 2);
    assert!(origin.heads().is_empty());

    let proxy = TestProxy::start(&allow(&[format!("localhost:{port}"), format!("127.0.0.1:{port}")])).await;
    let (code, out, err) = curl(&["-x", &proxy.url(), "-w", STATUS, &url]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(split_status(&out), ("origin: GET /by-name\n", "200 000"));
    assert!(proxy.denied().is_empty());
}

#[tokio::test]
async fn socks5h_reaches_an_allowed_origin_and_is_refused_otherwise() {
    let origin = Origin::start().await;
    let other = Origin::start().await;
    let proxy = TestProxy::start(&allow(&[format!("127.0.0.1:{}", origin.port())])).await;
    let socks = format!("socks5h://{}", proxy.addr);
    let url = format!("http://127.0.0.1:{}/socks", origin.port());
    let (code, out, err) = curl(&["--proxy", &socks, "-w", STATUS, &url]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(split_status(&out), ("origin: GET /socks\n", "200 000"));

    let url = format!("http://127.0.0.1:{}/", other.port());
    let (code, _, err) = curl(&["--proxy", &socks, &url]).await;
    assert_ne!(code, 0, "a denied SOCKS destination was reached");
    assert!(err.contains("(2)") || err.contains("not allowed"), "{err}");
    let denied = proxy.denied();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0].port, other.port());
    assert!(other.heads().is_empty());
}

/// A raw SOCKS5 client: greeting, then one request; returns the reply bytes.
async fn socks_request(proxy: &TestProxy, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect proxy");
    stream.write_all(&[5, 1, 0]).await.expect("greeting");
    let mut method = [0u8; 2];
    stream.read_exact(&mut method).await.expect("method reply");
    assert_eq!(method, [5, 0]);
    stream.write_all(request).await.expect("request");
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply))
        .await
        .expect("the proxy closes after a failed request")
        .expect("read reply");
    reply
}

#[tokio::test]
async fn socks5_reply_codes() {
    let refused = closed_port().await;
    let proxy = TestProxy::start(&allow(&[format!("127.0.0.1:{refused}")])).await;
    let [hi, lo] = refused.to_be_bytes();
    // Allowed but nothing listens: 05 connection refused.
    let reply = socks_request(&proxy, &[5, 1, 0, 1, 127, 0, 0, 1, hi, lo]).await;
    assert_eq!(reply[..2], [5, 0x05]);
    // Not listed: 02 not allowed by ruleset.
    let reply = socks_request(
        &proxy,
        &[5, 1, 0, 3, 11, b'e', b'v', b'i', b'l', b'.', b'e', b'x', b'a', b'm', b'p', b'l', 0, 80],
    )
    .await;
    assert_eq!(reply[..2], [5, 0x02]);
    // BIND: 07 command not supported.
    let reply = socks_request(&proxy, &[5, 2, 0, 1, 127, 0, 0, 1, hi, lo]).await;
    assert_eq!(reply[..2], [5, 0x07]);
    // An unknown address type: 08.
    let reply = socks_request(&proxy, &[5, 1, 0, 9]).await;
    assert_eq!(reply[..2], [5, 0x08]);
    // IPv4-mapped IPv6 for a listed IPv4 address is that address (and still refused: nothing listens).
    let mut mapped = vec![5, 1, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1];
    mapped.extend_from_slice(&[hi, lo]);
    let reply = socks_request(&proxy, &mapped).await;
    assert_eq!(reply[..2], [5, 0x05]);
    assert_eq!(proxy.denied().len(), 1, "{:?}", proxy.denied());

    // No acceptable method: 05 ff, then closed.
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect proxy");
    stream.write_all(&[5, 1, 2]).await.expect("greeting");
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.expect("read");
    assert_eq!(reply, [5, 0xff]);
}

#[tokio::test]
async fn python_urllib_uses_http_proxy() {
    let origin = Origin::start().await;
    let other = Origin::start().await;
    let proxy = TestProxy::start(&allow(&[format!("127.0.0.1:{}", origin.port())])).await;
    let script = "import sys, urllib.request, urllib.error\n\
                  try:\n    r = urllib.request.urlopen(sys.argv[1], timeout=20)\n    print(r.status, r.read().decode(), end='')\n\
                  except urllib.error.HTTPError as e:\n    print(e.code, e.read().decode(), end='')\n";
    let env = [("HTTP_PROXY", proxy.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let url = format!("http://127.0.0.1:{}/py", origin.port());
    let out = run("python3", &["-c", script, &url], &env).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200 origin: GET /py\n");

    let url = format!("http://127.0.0.1:{}/py", other.port());
    let out = run("python3", &["-c", script, &url], &env).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("403 127.0.0.1:{} is not in this VM's network allow-list\n", other.port())
    );
    assert_eq!(proxy.denied().len(), 1);
    assert!(other.heads().is_empty());
}

#[tokio::test]
async fn a_tunnel_carries_bytes_both_ways_with_half_close() {
    let echo = Echo::start().await;
    let proxy = TestProxy::start(&allow(&[format!("127.0.0.1:{}", echo.addr.port())])).await;
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect proxy");
    // The first payload bytes arrive together with the CONNECT head: they must not be lost.
    let request = format!("CONNECT {} HTTP/1.1\r\nHost: {}\r\n\r\nearly ", echo.addr, echo.addr);
    stream.write_all(request.as_bytes()).await.expect("CONNECT");
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let (mut read, mut write) = stream.into_split();
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        write.write_all(&sent).await.expect("payload");
        write.shutdown().await.expect("half-close");
    });
    let mut got = Vec::new();
    read.read_to_end(&mut got).await.expect("read tunnel");
    writer.await.expect("writer");
    let established = b"HTTP/1.1 200 Connection Established\r\n\r\n";
    assert!(got.starts_with(established));
    let echoed = &got[established.len()..];
    assert_eq!(&echoed[..6], b"early ");
    assert!(echoed[6..] == payload[..], "the echo differs ({} bytes back)", echoed.len());
    wait_until("the tunnel's bytes are counted", || proxy.proxy.stats().bytes_to_clients == (6 + payload.len()) as u64)
        .await;
}

#[tokio::test]
async fn stopping_the_proxy_ends_its_tunnels() {
    let echo = Echo::start().await;
    let proxy = TestProxy::start(&allow(&[format!("127.0.0.1:{}", echo.addr.port())])).await;
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect proxy");
    stream.write_all(format!("CONNECT {} HTTP/1.1\r\n\r\n", echo.addr).as_bytes()).await.expect("CONNECT");
    let mut established = [0u8; 39];
    stream.read_exact(&mut established).await.expect("200");
    stream.write_all(b"ping").await.expect("ping");
    let mut pong = [0u8; 4];
    stream.read_exact(&mut pong).await.expect("echo");
    assert_eq!(&pong, b"ping");
    proxy.task.0.abort();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the tunnel outlived its proxy");
}

#[tokio::test]
async fn the_connection_cap_holds() {
    let origin = Origin::start().await;
    let limits = ProxyLimits { max_connections: 2, ..ProxyLimits::default() };
    let proxy = TestProxy::with_limits(&allow(&[format!("127.0.0.1:{}", origin.port())]), limits).await;
    // Two clients that say nothing hold both places.
    let first = TcpStream::connect(proxy.addr).await.expect("connect");
    let _second = TcpStream::connect(proxy.addr).await.expect("connect");
    wait_until("both are accepted", || proxy.proxy.stats().connections == 2).await;
    // A third is answered 503 and closed at once.
    let mut third = TcpStream::connect(proxy.addr).await.expect("connect");
    let mut answer = String::new();
    third.read_to_string(&mut answer).await.expect("read 503");
    assert!(answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{answer}");
    assert_eq!(proxy.proxy.stats().rejected_over_cap, 1);
    let url = format!("http://127.0.0.1:{}/capped", origin.port());
    // (curl's request may reach the socket before it is closed; then the close is a reset
    // that can overtake the 503.)
    let (_, out, _) = curl(&["-x", &proxy.url(), "-w", STATUS, &url]).await;
    assert!(["503 000", "000 000"].contains(&split_status(&out).1), "{out}");
    // One leaves: a request is served again (once the server has seen it go).
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, out, _) = curl(&["-x", &proxy.url(), "-w", STATUS, &url]).await;
        if split_status(&out) == ("origin: GET /capped\n", "200 000") {
            break;
        }
        assert!(["503 000", "000 000"].contains(&split_status(&out).1), "{out}");
        assert!(tokio::time::Instant::now() < deadline, "the freed place was never reused");
    }
}

#[tokio::test]
async fn request_heads_are_bounded_in_size_and_time() {
    let limits =
        ProxyLimits { max_head_bytes: 1024, head_timeout: Duration::from_millis(300), ..ProxyLimits::default() };
    let proxy = TestProxy::with_limits(&[], limits).await;
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let big = format!("GET http://a.example/ HTTP/1.1\r\nX-Big: {}\r\n\r\n", "x".repeat(2000));
    stream.write_all(big.as_bytes()).await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");

    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream.write_all(b"GET http://a.example/ HTTP/1.1\r\n").await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");

    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream.write_all(b"GET /not-absolute HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(proxy.denied().is_empty());
}

#[tokio::test]
async fn an_unreachable_allowed_destination_is_502() {
    let port = closed_port().await;
    let proxy = TestProxy::start(&allow(&[format!("127.0.0.1:{port}")])).await;
    let url = format!("http://127.0.0.1:{port}/");
    let (code, out, err) = curl(&["-x", &proxy.url(), "-w", STATUS, &url]).await;
    assert_eq!(code, 0, "{err}");
    let (body, status) = split_status(&out);
    assert_eq!(status, "502 000");
    assert_eq!(body, format!("127.0.0.1:{port} refused the connection\n"));
    assert!(proxy.denied().is_empty());
}

#[tokio::test]
async fn with_local_unlisted_loopback_destinations_are_the_clients_own() {
    // The host's 127.0.0.1 stands in for the client's own loopback (a VM's, in the server).
    let own = Origin::start().await;
    let listed = Origin::start().await;
    let calls = Arc::new(Mutex::new(Vec::new()));
    let record = calls.clone();
    let local: LocalConnect = Arc::new(move |port| {
        record.lock().expect("calls").push(port);
        Box::pin(TcpStream::connect(("127.0.0.1", port)))
    });
    let proxy = TestProxy::build(&allow(&[format!("127.0.0.1:{}", listed.port())]), |p| p.with_local(local)).await;

    let url = format!("http://127.0.0.1:{}/own", own.port());
    let (code, out, err) = curl(&["-x", &proxy.url(), "-w", STATUS, &url]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(split_status(&out), ("origin: GET /own\n", "200 000"));
    let url = format!("http://localhost:{}/own-by-name", own.port());
    let (code, out, err) = curl(&["-p", "-x", &proxy.url(), "-w", STATUS, &url]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(split_status(&out), ("origin: GET /own-by-name\n", "200 200"));
    let url = format!("http://0.0.0.0:{}/own-unspecified", own.port());
    let (code, out, err) = curl(&["-x", &proxy.url(), "-w", STATUS, &url]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(split_status(&out), ("origin: GET /own-unspecified\n", "200 000"));
    assert_eq!(*calls.lock().expect("calls"), [own.port(), own.port(), own.port()]);

    // A listed loopback destination is the host's: the local connector is not asked.
    let url = format!("http://127.0.0.1:{}/listed", listed.port());
    let (_, out, _) = curl(&["-x", &proxy.url(), "-w", STATUS, &url]).await;
    assert_eq!(split_status(&out), ("origin: GET /listed\n", "200 000"));
    assert_eq!(calls.lock().expect("calls").len(), 3);

    // Nothing listening locally: 502, not a denial. Other destinations are still refused.
    let closed = closed_port().await;
    let (_, out, _) = curl(&["-x", &proxy.url(), "-w", STATUS, &format!("http://127.0.0.1:{closed}/")]).await;
    assert_eq!(split_status(&out).1, "502 000", "{out}");
    let (_, out, _) = curl(&["-x", &proxy.url(), "-w", STATUS, "http://api.evil.com/"]).await;
    assert_eq!(split_status(&out).1, "403 000", "{out}");
    assert_eq!(proxy.denied().len(), 1);
}
