//! Sockets the server makes inside a VM's network namespace (by its init): connecting to a
//! server in the VM, and listening on the VM's loopback. The VM stays unreachable from the host.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use agentvm_vm::{ExecOptions, VmError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_connects_to_a_port_of_the_vm_and_listens_on_its_loopback() {
    let host = common::host();
    let vm = host.vm("sockets").await;

    // Nothing listens yet: a clear, typed refusal.
    match vm.connect(7000).await {
        Err(VmError::PortClosed { port: 7000 }) => {}
        other => panic!("expected PortClosed, got {:?}", other.map(|_| ())),
    }

    // A server inside the VM, on its loopback only.
    let server = "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                  s.bind(('127.0.0.1', 7000)); s.listen()\nc,_=s.accept(); c.sendall(b'hello from the vm'); c.close()";
    vm.spawn("python3", &["-c".into(), server.into()], Default::default()).await.expect("spawn");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut stream = loop {
        match vm.connect(7000).await {
            Ok(stream) => break stream,
            Err(VmError::PortClosed { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("connect: {e}"),
        }
    };
    let mut got = String::new();
    stream.read_to_string(&mut got).await.expect("read");
    assert_eq!(got, "hello from the vm");
    // The host's own 127.0.0.1:7000 is not the VM's.
    assert!(std::net::TcpStream::connect("127.0.0.1:7000").is_err());

    // A listener on the VM's loopback, accepted on the host.
    let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let listener = vm.listen(addr).await.expect("listen");
    match vm.listen(addr).await {
        Err(e @ VmError::Socket(_)) => assert!(e.to_string().starts_with("EADDRINUSE"), "{e}"),
        other => panic!("expected EADDRINUSE, got {:?}", other.map(|_| ())),
    }
    let client = "import socket\ns=socket.create_connection(('127.0.0.1', 8080)); s.sendall(b'ping')\n\
                  print(s.recv(100).decode())";
    let command = format!("python3 -c \"{client}\"");
    let run = vm.exec(&command, ExecOptions::default());
    let serve = async {
        let (mut conn, peer) = listener.accept().await.expect("accept");
        assert!(peer.ip().is_loopback());
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"ping");
        conn.write_all(b"pong from the host").await.expect("write");
    };
    let (result, ()) = tokio::join!(run, serve);
    let result = result.expect("exec");
    assert_eq!((result.exit_code, result.stdout.trim()), (0, "pong from the host"), "{result:?}");

    // Only loopback addresses are made.
    assert!(vm.listen("10.0.0.1:80".parse().unwrap()).await.is_err());
    vm.shutdown(Duration::from_secs(2)).await;
}
