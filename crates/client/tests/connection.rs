//! `Connection`: subscriptions, events, actions over the socket.

mod common;

use agentvm_client::{Error, ExecOptions, SpawnOptions, Value};
use common::{client, collect_until_exit, int, next_event, server, strings, wait_event};

#[tokio::test]
async fn subscribe_applies_before_it_returns() {
    // Each round subscribes on a new connection and at once spawns over HTTP: the first output
    // must arrive, which it only does if the server applied the subscription first.
    let server = server();
    let vm = client(&server).vm("barrier");
    for round in 0..10 {
        let mut conn = vm.connect().await.unwrap();
        conn.subscribe("processOutput").await.unwrap();
        conn.subscribe("processExit").await.unwrap();
        let pid = vm.spawn("echo", &strings(&[&round.to_string()]), SpawnOptions::default()).await.unwrap();
        let (stdout, _, code) = collect_until_exit(&mut conn, pid, 30).await;
        assert_eq!((String::from_utf8(stdout).unwrap(), code), (format!("{round}\n"), 0));
        conn.close().await;
    }
}

#[tokio::test]
async fn unsubscribe_stops_events() {
    let server = server();
    let vm = client(&server).vm("unsubscribe");
    let mut conn = vm.connect().await.unwrap();
    conn.subscribe("processOutput").await.unwrap();
    conn.subscribe("processExit").await.unwrap();
    let first = vm.spawn("echo", &strings(&["one"]), SpawnOptions::default()).await.unwrap();
    assert_eq!(collect_until_exit(&mut conn, first, 30).await.0, b"one\n");

    conn.unsubscribe("processOutput").await.unwrap();
    let second = vm.spawn("echo", &strings(&["two"]), SpawnOptions::default()).await.unwrap();
    // Only the exit comes: output of the second process is not sent any more.
    let event = next_event(&mut conn, 30).await;
    assert_eq!((event.name.as_str(), int(&event.payload, "pid")), ("processExit", Some(second.into())));
    conn.unsubscribe("never-subscribed").await.unwrap();
}

#[tokio::test]
async fn actions_over_the_socket_run_concurrently() {
    let server = server();
    let vm = client(&server).vm("concurrent");
    let conn = vm.connect().await.unwrap();
    let out = conn.action("spawn", vec![Value::from("sleep"), Value::Array(vec![Value::from("100")])]).await.unwrap();
    let pid = int(&out, "pid").unwrap();

    // A long waitProcess does not hold back later actions on the same socket.
    let waiting = conn.action("waitProcess", vec![Value::from(pid)]);
    let others = async {
        let out = conn.action("exec", vec![Value::from("echo meanwhile")]).await.unwrap();
        assert_eq!(out.get("stdout").and_then(Value::as_str), Some("meanwhile\n"));
        let err = conn.action("getProcess", vec![Value::from(999_999)]).await.unwrap_err();
        assert!(matches!(&err, Error::Api { message, .. } if message == "Process not found: 999999"), "{err:?}");
        conn.action("killProcess", vec![Value::from(pid)]).await.unwrap();
    };
    let (waited, ()) = tokio::join!(waiting, others);
    assert_eq!(waited.unwrap().as_i64(), Some(137));

    // Many at once, answers matched by id.
    let calls = (0..20).map(|i| conn.action("exec", vec![Value::from(format!("echo {i}"))]));
    let outs = futures_util::future::join_all(calls).await;
    for (i, out) in outs.into_iter().enumerate() {
        assert_eq!(out.unwrap().get("stdout").and_then(Value::as_str), Some(format!("{i}\n").as_str()));
    }
    conn.close().await;
}

#[tokio::test]
async fn lifecycle_events_and_actor_id() {
    let server = server();
    let client = client(&server);
    let vm = client.vm("lifecycle");
    let mut conn = vm.connect().await.unwrap();
    conn.subscribe("vmBooted").await.unwrap();
    conn.subscribe("vmShutdown").await.unwrap();
    vm.exec("true", ExecOptions::default()).await.unwrap();
    let booted = wait_event(&mut conn, "vmBooted", 30).await;
    assert_eq!(booted.payload, Value::Map(vec![]));
    let listed = client.list_vms().await.unwrap();
    assert_eq!(listed.iter().find(|v| v.key == "lifecycle").map(|v| v.actor_id.clone()), Some(conn.actor_id()));
    vm.destroy().await.unwrap();
    let shutdown = wait_event(&mut conn, "vmShutdown", 30).await;
    assert_eq!(shutdown.payload.get("reason").and_then(Value::as_str), Some("destroy"));
    assert!(format!("{conn:?}").contains(&conn.actor_id()));
    conn.close().await;
}

#[tokio::test]
async fn large_messages_both_ways() {
    // Bigger than tungstenite's default 16 MiB frame limit.
    let server = server();
    let vm = client(&server).vm("large");
    let content: Vec<u8> = (0..20 << 20).map(|i: u32| (i % 251) as u8).collect();
    let conn = vm.connect().await.unwrap();
    let args = vec![Value::from("/home/user/big"), Value::from(content.clone())];
    conn.action("writeFile", args).await.unwrap();
    let read = conn.action("readFile", vec![Value::from("/home/user/big")]).await.unwrap();
    assert!(read == Value::from(content), "readFile over the socket returned other bytes");
    conn.close().await;
}
