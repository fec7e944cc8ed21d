//! The three encodings (bare, the default; json; cbor) for HTTP actions, connection actions,
//! events and errors, with bytes that are not UTF-8.

mod common;

use agentvm_client::{Encoding, ExecOptions, SpawnOptions, Value};
use common::{collect_until_exit, int, server, strings};

async fn round_trip(encoding: Encoding) {
    let server = server();
    let client = common::client(&server).with_encoding(encoding);
    let vm = client.vm(&format!("enc-{encoding}"));

    // HTTP: exec with bytes in, a string out.
    let options = ExecOptions { stdin: Some(b"caf\xc3\xa9".to_vec()), ..Default::default() };
    let r = vm.exec("cat; echo; echo err >&2", options).await.unwrap();
    assert_eq!((r.exit_code, r.stdout.as_str(), r.stderr.as_str()), (0, "café\n", "err\n"));

    // Bytes both ways, every byte value.
    let content: Vec<u8> = (0..=255u8).collect();
    vm.write_file("/home/user/all-bytes", &content).await.unwrap();
    assert_eq!(vm.read_file("/home/user/all-bytes").await.unwrap(), content);

    // Events over a connection in this encoding: raw bytes of the output.
    let mut conn = vm.connect().await.unwrap();
    assert!(!conn.actor_id().is_empty());
    conn.subscribe("processOutput").await.unwrap();
    conn.subscribe("processExit").await.unwrap();
    let pid = vm
        .spawn("sh", &strings(&["-c", "cat /home/user/all-bytes; printf '\\377' >&2; exit 4"]), SpawnOptions::default())
        .await
        .unwrap();
    let (stdout, stderr, code) = collect_until_exit(&mut conn, pid, 30).await;
    assert_eq!((stdout, stderr, code), (content.clone(), vec![0xff], 4));

    // Actions over the connection: results, bytes and errors.
    let out = conn.action("exec", vec![Value::from("echo socket")]).await.unwrap();
    assert_eq!(out.get("stdout").and_then(Value::as_str), Some("socket\n"));
    let out = conn.action("readFile", vec![Value::from("/home/user/all-bytes")]).await.unwrap();
    assert_eq!(out, Value::from(content.clone()));
    let out =
        conn.action("writeFile", vec![Value::from("/home/user/b"), Value::Bytes(vec![0, 0xff].into())]).await.unwrap();
    assert!(out.is_nullish(), "{out:?}");
    assert_eq!(vm.read_file("/home/user/b").await.unwrap(), [0, 0xff]);
    let err = conn.action("getProcess", vec![Value::from(999_999)]).await.unwrap_err();
    assert_eq!(err.to_string(), "Process not found: 999999");
    assert_eq!(err.api_code().as_deref(), Some("vm.process_not_found"));
    let err = conn.action("readFile", vec![Value::from("/nope")]).await.unwrap_err();
    match err {
        agentvm_client::Error::Api { metadata, .. } => {
            assert_eq!(metadata.as_ref().and_then(|m| m.get("code")).and_then(Value::as_str), Some("ENOENT"))
        }
        other => panic!("{other:?}"),
    }

    // The event log keeps the bytes.
    let events = vm.get_vm_events(None, None).await.unwrap();
    let logged: Vec<u8> = events
        .iter()
        .filter(|e| e.name == "processOutput" && int(&e.data, "pid") == Some(pid.into()))
        .filter(|e| e.data.get("stream").and_then(Value::as_str) == Some("stdout"))
        .flat_map(|e| match e.data.get("data") {
            Some(Value::Bytes(b)) => b.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(logged, content);
    conn.close().await;
}

#[tokio::test]
async fn bare() {
    round_trip(Encoding::Bare).await;
}

#[tokio::test]
async fn json() {
    round_trip(Encoding::Json).await;
}

#[tokio::test]
async fn cbor() {
    round_trip(Encoding::Cbor).await;
}
