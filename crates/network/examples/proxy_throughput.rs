//! What the egress proxy costs, on host loopback: bulk throughput of a CONNECT tunnel against a
//! direct connection, and the latency a small HTTP request gains by going through the proxy.
//!
//! ```text
//! cargo run --release -p agentvm-network --example proxy_throughput [MiB] [requests]
//! ```
//!
//! Defaults: 1024 MiB streamed each way, 2000 requests each way. Prints one line per figure.
//! Everything runs in this process on 127.0.0.1 (a sink server, an HTTP server, the proxy), on a
//! two-worker tokio runtime, so client, proxy and servers share the machine's cores: the figures
//! compare paths, they are not the network's capacity.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentvm_network::{serve_proxy, Policy, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CHUNK: usize = 256 * 1024;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mib: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1024);
    let requests: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2000);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run(mib, requests))
}

async fn run(mib: u64, requests: usize) -> Result<(), Box<dyn std::error::Error>> {
    let sink = spawn_sink().await?;
    let http = spawn_http().await?;
    let policy = Policy::parse(&[format!("127.0.0.1:{}", sink.port()), format!("127.0.0.1:{}", http.port())])?;
    let proxy = Arc::new(Proxy::new(Arc::new(policy), Arc::new(|_| {})));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let proxy_addr = listener.local_addr()?;
    let proxy_task = tokio::spawn(serve_proxy(listener, proxy));

    let bytes = mib * 1024 * 1024;
    // One warm-up pass each, then the measured one.
    stream_direct(sink, bytes / 16).await?;
    let direct = stream_direct(sink, bytes).await?;
    stream_tunnel(proxy_addr, sink, bytes / 16).await?;
    let tunnel = stream_tunnel(proxy_addr, sink, bytes).await?;
    let rate = |d: Duration| bytes as f64 / 1e6 / d.as_secs_f64();
    println!("throughput direct loopback: {mib} MiB in {:.2} s = {:.0} MB/s", direct.as_secs_f64(), rate(direct));
    println!(
        "throughput CONNECT tunnel:  {mib} MiB in {:.2} s = {:.0} MB/s ({:.0}% of direct)",
        tunnel.as_secs_f64(),
        rate(tunnel),
        100.0 * rate(tunnel) / rate(direct)
    );

    let direct = latencies(requests, || get_direct(http)).await?;
    let proxied = latencies(requests, || get_proxied(proxy_addr, http)).await?;
    let (d50, p50) = (percentile(&direct, 50), percentile(&proxied, 50));
    println!(
        "latency small GET, new connection each, n={requests}: direct p50 {} us p99 {} us; through the proxy p50 {} us \
         p99 {} us; added p50 {} us",
        d50.as_micros(),
        percentile(&direct, 99).as_micros(),
        p50.as_micros(),
        percentile(&proxied, 99).as_micros(),
        p50.as_micros().saturating_sub(d50.as_micros())
    );
    proxy_task.abort();
    Ok(())
}

/// A server that reads each connection to its end, then answers the byte count (8 bytes, BE).
async fn spawn_sink() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; CHUNK];
                let mut total = 0u64;
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => total += n as u64,
                        Err(_) => return,
                    }
                }
                let _ = stream.write_all(&total.to_be_bytes()).await;
            });
        }
    });
    Ok(addr)
}

/// An HTTP server answering every request `200 ok` with `Connection: close`.
async fn spawn_http() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").await;
            });
        }
    });
    Ok(addr)
}

/// Streams `bytes` over `stream`, half-closes, and waits for the sink's count.
async fn stream_through(mut stream: TcpStream, bytes: u64) -> Result<Duration, Box<dyn std::error::Error>> {
    let chunk = vec![0x5au8; CHUNK];
    let start = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        stream.write_all(&chunk[..n]).await?;
        left -= n as u64;
    }
    stream.shutdown().await?;
    let mut count = [0u8; 8];
    stream.read_exact(&mut count).await?;
    let elapsed = start.elapsed();
    if u64::from_be_bytes(count) != bytes {
        return Err(format!("the sink counted {} bytes of {bytes}", u64::from_be_bytes(count)).into());
    }
    Ok(elapsed)
}

async fn stream_direct(sink: SocketAddr, bytes: u64) -> Result<Duration, Box<dyn std::error::Error>> {
    stream_through(TcpStream::connect(sink).await?, bytes).await
}

async fn stream_tunnel(
    proxy: SocketAddr,
    sink: SocketAddr,
    bytes: u64,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let mut stream = TcpStream::connect(proxy).await?;
    stream.write_all(format!("CONNECT {sink} HTTP/1.1\r\nHost: {sink}\r\n\r\n").as_bytes()).await?;
    let mut established = [0u8; 39];
    stream.read_exact(&mut established).await?;
    if !established.starts_with(b"HTTP/1.1 200 ") {
        return Err(format!("CONNECT failed: {}", String::from_utf8_lossy(&established)).into());
    }
    stream_through(stream, bytes).await
}

/// One request on a new connection; returns once the whole response has arrived.
async fn request(target: SocketAddr, head: String) -> Result<(), Box<dyn std::error::Error>> {
    let mut stream = TcpStream::connect(target).await?;
    stream.write_all(head.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    if !response.starts_with(b"HTTP/1.1 200 ") || !response.ends_with(b"ok") {
        return Err(format!("unexpected response: {}", String::from_utf8_lossy(&response)).into());
    }
    Ok(())
}

async fn get_direct(http: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    request(http, format!("GET /small HTTP/1.1\r\nHost: {http}\r\n\r\n")).await
}

async fn get_proxied(proxy: SocketAddr, http: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    request(proxy, format!("GET http://{http}/small HTTP/1.1\r\nHost: {http}\r\n\r\n")).await
}

async fn latencies<F, Fut>(n: usize, mut one: F) -> Result<Vec<Duration>, Box<dyn std::error::Error>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), Box<dyn std::error::Error>>>,
{
    let mut out = Vec::with_capacity(n);
    for _ in 0..n / 10 {
        one().await?;
    }
    for _ in 0..n {
        let start = Instant::now();
        one().await?;
        out.push(start.elapsed());
    }
    out.sort();
    Ok(out)
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted.get((sorted.len() * p / 100).min(sorted.len().saturating_sub(1))).copied().unwrap_or_default()
}
