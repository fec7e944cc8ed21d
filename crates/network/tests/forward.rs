//! The port forwarder: a client with no proxy support reaches a fixed host address.

mod common;

use std::time::Duration;

use agentvm_network::{serve_forward, ProxyLimits};
use common::{closed_port, curl, Echo, Origin, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn start_forward(to: String, limits: ProxyLimits) -> (std::net::SocketAddr, Running) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind forward");
    let addr = listener.local_addr().expect("forward address");
    (addr, Running(tokio::spawn(serve_forward(listener, to, limits))))
}

#[tokio::test]
async fn a_plain_client_reaches_the_forwarded_address() {
    let origin = Origin::start().await;
    let (addr, _task) = start_forward(origin.addr.to_string(), ProxyLimits::default()).await;
    let (code, out, err) = curl(&[&format!("http://{addr}/through-forward")]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "origin: GET /through-forward\n");
    // A name is resolved at each connection.
    let (addr, _task) = start_forward(format!("localhost:{}", origin.port()), ProxyLimits::default()).await;
    let (code, out, err) = curl(&[&format!("http://{addr}/by-name")]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "origin: GET /by-name\n");
}

#[tokio::test]
async fn a_failed_connect_closes_the_client() {
    let (addr, _task) = start_forward(format!("127.0.0.1:{}", closed_port().await), ProxyLimits::default()).await;
    let mut client = TcpStream::connect(addr).await.expect("connect forward");
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut got)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?} {got:?}");
}

#[tokio::test]
async fn the_connection_cap_holds() {
    let echo = Echo::start().await;
    let limits = ProxyLimits { max_connections: 1, ..ProxyLimits::default() };
    let (addr, _task) = start_forward(echo.addr.to_string(), limits).await;
    let mut first = TcpStream::connect(addr).await.expect("connect");
    first.write_all(b"one").await.expect("write");
    let mut got = [0u8; 3];
    first.read_exact(&mut got).await.expect("echo");
    assert_eq!(&got, b"one");
    // The only place is taken: the next connection is closed at once, with nothing read.
    let mut second = TcpStream::connect(addr).await.expect("connect");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), second.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0))), "{read:?}");
    // The first still works.
    first.write_all(b"two").await.expect("write");
    first.read_exact(&mut got).await.expect("echo");
    assert_eq!(&got, b"two");
}
