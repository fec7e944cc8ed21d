//! Reconnection: the server is killed (SIGKILL) and started again on the same port and data
//! directory; the connection reconnects by itself, resubscribes and reports the gap.

mod common;

use std::time::Duration;

use agentvm_client::testing::TestServer;
use agentvm_client::{Client, Error, Event, SpawnOptions, Value, RECONNECTED};
use common::{collect_until_exit, next_event, strings};

/// Starts a server on `address` with the data directory `data`, retrying while the port is
/// still taken (it was just released by the killed server).
fn restart(address: &str, mut data: tempfile::TempDir, extra: &[&str]) -> TestServer {
    for _ in 0..100 {
        match TestServer::start_on(address, data, extra) {
            Ok(server) => return server,
            Err((_, back)) => data = back,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("could not start a server on {address} again");
}

#[tokio::test]
async fn reconnects_resubscribes_and_reports_the_gap() {
    let server = TestServer::start();
    let address = server.address().to_owned();
    let client = Client::new(server.url());
    let vm = client.vm("durable");
    let mut conn = vm.connect().await.unwrap();
    let actor_id = conn.actor_id();
    conn.subscribe("processOutput").await.unwrap();
    conn.subscribe("processExit").await.unwrap();
    let pid = vm.spawn("echo", &strings(&["before"]), SpawnOptions::default()).await.unwrap();
    assert_eq!(collect_until_exit(&mut conn, pid, 30).await.0, b"before\n");

    // An action in flight when the socket drops fails with Closed: it is not retried.
    let sleeper = vm.spawn("sleep", &strings(&["100"]), SpawnOptions::default()).await.unwrap();
    let in_flight = conn.action("waitProcess", vec![Value::from(sleeper)]);
    let kill = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        tokio::task::spawn_blocking(move || server.kill()).await.unwrap()
    };
    let (waited, data) = tokio::join!(in_flight, kill);
    assert!(matches!(waited, Err(Error::Closed)), "{waited:?}");

    // An action called while the server is down waits for the next socket.
    let queued = conn.action("exec", vec![Value::from("echo queued")]);
    let start_again = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let address = address.clone();
        tokio::task::spawn_blocking(move || restart(&address, data, &[])).await.unwrap()
    };
    let (queued, _server) = tokio::join!(queued, start_again);
    assert_eq!(queued.unwrap().get("stdout").and_then(Value::as_str), Some("queued\n"));

    // The gap is reported, on the same actor (its id derives from the key).
    let event = next_event(&mut conn, 30).await;
    assert_eq!(event.name, RECONNECTED);
    assert_eq!(event.payload.get("actorId").and_then(Value::as_str), Some(actor_id.as_str()));
    assert!(event.payload.get("connectionId").and_then(Value::as_str).is_some_and(|id| !id.is_empty()));
    assert_eq!(conn.actor_id(), actor_id);

    // The new server never saw our subscriptions: they were sent again.
    let pid = vm.spawn("echo", &strings(&["after"]), SpawnOptions::default()).await.unwrap();
    assert_eq!(collect_until_exit(&mut conn, pid, 30).await.0, b"after\n");
    // What happened before the restart is in the durable log.
    let events = vm.get_vm_events(None, None).await.unwrap();
    assert!(events.iter().any(|e| e.data.get("data") == Some(&Value::Bytes(b"before\n".to_vec().into()))));
    conn.close().await;
}

#[tokio::test]
async fn a_refused_reconnect_closes_for_good() {
    let server = TestServer::start_with(&["--token", "first"]);
    let address = server.address().to_owned();
    let vm = Client::new(server.url()).with_token("first").vm("refused");
    let mut conn = vm.connect().await.unwrap();
    conn.subscribe("processExit").await.unwrap();

    // The server comes back with another token: the old one is refused, which is final.
    let data = tokio::task::spawn_blocking(move || server.kill()).await.unwrap();
    let _server = tokio::task::spawn_blocking(move || restart(&address, data, &["--token", "second"])).await.unwrap();
    let ended: Option<Event> = tokio::time::timeout(Duration::from_secs(30), conn.next_event()).await.unwrap();
    assert_eq!(ended, None);
    assert!(matches!(conn.action("exec", vec![Value::from("true")]).await, Err(Error::Closed)));
    assert!(matches!(conn.subscribe("processOutput").await, Err(Error::Closed)));
    conn.close().await;
}
