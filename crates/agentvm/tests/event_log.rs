//! The event pipeline under faults and load (issue 11): numbers survive `kill -9`, a stalled
//! connection is told what it missed and can replay it while others miss nothing, a shutdown
//! boots no VM and ends every log with `vmShutdown`, and sleeping VMs cost the server
//! (almost) nothing.
mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agentvm_client::{Client, SpawnOptions, StoredEvent, Value};
use common::server::TestServer;
use common::ws::*;
use futures_util::StreamExt;
use serde_json::json;

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn data_of(payload: &Value) -> Vec<u8> {
    match payload.get("data") {
        Some(Value::Bytes(bytes)) => bytes.to_vec(),
        other => panic!("no bytes in {other:?}"),
    }
}

/// Every retained event of `key`'s log, oldest first (paging with `since`).
async fn whole_log(client: &Client, key: &str) -> Vec<StoredEvent> {
    let vm = client.vm(key);
    let mut events: Vec<StoredEvent> = Vec::new();
    loop {
        let since = events.last().map(|e| e.seq);
        let page = vm.get_vm_events(since, Some(10_000)).await.unwrap();
        if page.is_empty() {
            return events;
        }
        events.extend(page);
    }
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// Acceptance 1: kill -9 while a process prints as fast as it can, five times. Every event a
/// client saw (live, or through getVmEvents with its number) is in the log afterwards, with the
/// same content, and new events get new numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_loses_no_event_a_client_saw_and_reuses_no_number() {
    const KEY: &str = "log-kill9";
    // Room for everything a round prints (the default keeps 64 MiB).
    let extra = ["--event-log-bytes", "1073741824"];
    let mut server = TestServer::start_with(&extra);
    let mut seen_before = BTreeMap::<u64, StoredEvent>::new();
    // The last number logged before the round: a VM that boots again numbers its processes
    // again, so the round's process may have the pid of an earlier round's.
    let mut before_round: Option<u64> = None;
    for round in 0..5 {
        let client = Client::new(server.url.clone());
        let vm = client.vm(KEY);
        let mut conn = vm.connect().await.unwrap();
        conn.subscribe("processOutput").await.unwrap();
        conn.subscribe("processExit").await.unwrap();
        // ~150 MB of distinct lines, as fast as `seq` writes them.
        let script = "seq 1 100000000 | head -c 150000000";
        let pid = vm.spawn("sh", &strings(&["-c", script]), SpawnOptions::default()).await.unwrap();

        // Live: the bytes of the process's output, in order.
        let live = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let reader = {
            let live = Arc::clone(&live);
            tokio::spawn(async move {
                while let Some(event) = conn.next_event().await {
                    if event.name == "processOutput" && event.payload.get("pid") == Some(&Value::from(pid)) {
                        live.lock().unwrap().extend(data_of(&event.payload));
                    }
                }
            })
        };
        // Through getVmEvents: numbered events.
        let polled = Arc::new(std::sync::Mutex::new(BTreeMap::<u64, StoredEvent>::new()));
        let poller = {
            let (polled, vm) = (Arc::clone(&polled), client.vm(KEY));
            tokio::spawn(async move {
                let mut since = None;
                while let Ok(page) = vm.get_vm_events(since, Some(200)).await {
                    if let Some(last) = page.last() {
                        since = Some(last.seq);
                    }
                    polled.lock().unwrap().extend(page.into_iter().map(|e| (e.seq, e)));
                }
            })
        };
        common::eventually(60, "the clients to see output live and numbered", || {
            let (live, polled) = (Arc::clone(&live), Arc::clone(&polled));
            async move { live.lock().unwrap().len() > (4 << 20) && polled.lock().unwrap().len() > 20 }
        })
        .await;

        let data = server.kill_hard();
        let _ = tokio::time::timeout(Duration::from_secs(10), reader).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), poller).await;
        server = TestServer::start_in(data, &extra);
        let client = Client::new(server.url.clone());
        let log = whole_log(&client, KEY).await;
        let by_seq: BTreeMap<u64, &StoredEvent> = log.iter().map(|e| (e.seq, e)).collect();

        let polled = polled.lock().unwrap().clone();
        for (seq, seen) in &polled {
            let stored = by_seq.get(seq).unwrap_or_else(|| panic!("round {round}: event {seq} was seen but is gone"));
            assert_eq!((&stored.name, &stored.data), (&seen.name, &seen.data), "round {round}: event {seq} changed");
        }
        let logged: Vec<u8> = log
            .iter()
            .filter(|e| before_round.is_none_or(|before| e.seq > before))
            .filter(|e| e.name == "processOutput" && e.data.get("pid") == Some(&Value::from(pid)))
            .flat_map(|e| data_of(&e.data))
            .collect();
        let live = live.lock().unwrap().clone();
        assert!(logged.len() >= live.len(), "round {round}: {} bytes seen live, {} logged", live.len(), logged.len());
        assert!(logged[..live.len()] == live[..], "round {round}: what was seen live is not what the log holds");
        // Everything seen in earlier rounds is still there too, unchanged.
        for (seq, seen) in &seen_before {
            let stored =
                by_seq.get(seq).unwrap_or_else(|| panic!("round {round}: event {seq} of an earlier round is gone"));
            assert_eq!((&stored.name, &stored.data), (&seen.name, &seen.data), "round {round}: event {seq} changed");
        }
        seen_before.extend(polled.clone());
        let seen_max = seen_before.keys().next_back().copied();

        // New events get new numbers: the VM boots again, announced after everything logged.
        let out = client.vm(KEY).exec("echo again", Default::default()).await.unwrap();
        assert_eq!(out.stdout, "again\n");
        let newer = client.vm(KEY).get_vm_events(log.last().map(|e| e.seq), None).await.unwrap();
        let booted = newer.iter().find(|e| e.name == "vmBooted").expect("vmBooted after the restart");
        assert!(booted.seq > seen_max.unwrap_or(0), "round {round}: vmBooted reused number {}", booted.seq);
        assert!(!polled.contains_key(&booted.seq));
        for pair in log.windows(2) {
            assert_eq!(pair[1].seq, pair[0].seq + 1, "round {round}: the log has a hole");
        }
        before_round = newer.last().or(log.last()).map(|e| e.seq);
    }
}

/// Acceptance 2: a connection stops reading while `yes` runs. Server memory stays bounded; it
/// gets `streamError` with the skipped count and, replaying from `resumeFrom`, has every event
/// in order; a second connection on the same VM misses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_connection_is_told_what_it_missed_and_another_misses_nothing() {
    const KEY: &str = "log-stall";
    const TOTAL: usize = 400_000_000;
    let server = TestServer::start_with(&["--event-log-bytes", "1073741824"]);
    let client = Client::new(server.url.clone());
    let vm = client.vm(KEY);
    vm.exec("true", Default::default()).await.unwrap();
    let baseline = rss(server.pid());

    // The stalled one: json, subscribed, then never read until the process is done. An action
    // on each connection after subscribing: its answer means the subscriptions are in place.
    let mut stalled = Conn::open(&server, KEY, &["processOutput", "processExit"]).await;
    stalled.call("exec", json!(["true"])).await;
    let mut second = vm.connect().await.unwrap();
    second.subscribe("processOutput").await.unwrap();
    second.subscribe("processExit").await.unwrap();
    second.action("exec", vec![Value::from("true")]).await.unwrap();

    let peak = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling, pid) = (Arc::clone(&peak), Arc::clone(&sampling), server.pid());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let script = format!("yes abcdefghijklmnopqrstuvwxyz | head -c {TOTAL}");
    let pid = vm.spawn("sh", &strings(&["-c", &script]), SpawnOptions::default()).await.unwrap();
    let pattern = b"abcdefghijklmnopqrstuvwxyz\n";
    let check = |bytes: &[u8], offset: usize| {
        for (i, b) in bytes.iter().enumerate() {
            assert_eq!(*b, pattern[(offset + i) % pattern.len()], "byte {} is wrong", offset + i);
        }
    };

    // The second connection reads everything, in order, then the exit.
    let mut received = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let event = tokio::time::timeout_at(deadline, second.next_event()).await.expect("second connection").unwrap();
        match event.name.as_str() {
            "processOutput" => {
                let data = data_of(&event.payload);
                check(&data, received);
                received += data.len();
            }
            "processExit" => break,
            other => panic!("the second connection got {other}: {:?}", event.payload),
        }
    }
    assert_eq!(received, TOTAL, "the second connection missed output");
    sampling.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    let grew = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    eprintln!("server RSS grew by at most {} MiB while one connection stalled", grew >> 20);
    assert!(grew < 96 << 20, "server memory grew by {} MiB", grew >> 20);

    // The stalled one reads now: what fitted its queue, one streamError, then the rest.
    let mut before = 0usize;
    let mut gap: Option<serde_json::Value> = None;
    let mut after_gap: Vec<u8> = Vec::new();
    let mut first_after: Option<serde_json::Value> = None;
    loop {
        let frame = next_json(&mut stalled.ws).await;
        if frame["body"]["tag"] != "Event" {
            continue;
        }
        let name = frame["body"]["val"]["name"].as_str().unwrap().to_string();
        let payload = frame["body"]["val"]["args"][0].clone();
        match name.as_str() {
            "streamError" => {
                assert!(gap.is_none(), "one gap expected, got another: {payload}");
                gap = Some(payload);
            }
            "processOutput" => {
                let b64 = payload["data"][1].as_str().unwrap();
                let data = base64_decode(b64);
                if gap.is_none() {
                    check(&data, before);
                    before += data.len();
                } else {
                    first_after.get_or_insert(payload.clone());
                    after_gap.extend(data);
                }
            }
            "processExit" => {
                first_after.get_or_insert(payload.clone());
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    let gap = gap.expect("the stalled connection got no streamError");
    assert_eq!(gap["code"], "event_stream_lagged");
    assert_eq!((gap["scope"].as_str(), gap["id"].as_i64()), (Some("process"), Some(i64::from(pid))), "{gap}");
    let skipped = gap["skipped"].as_u64().unwrap();
    let resume_from = gap["resumeFrom"].as_u64().unwrap();
    assert!(skipped > 0);

    // Replay the gap from the log: exactly `skipped` of the subscribed events, from resumeFrom.
    let mut replayed: Vec<StoredEvent> = Vec::new();
    let mut since = resume_from.checked_sub(1);
    while (replayed.len() as u64) < skipped {
        let page = vm.get_vm_events(since, Some(10_000)).await.unwrap();
        assert!(!page.is_empty(), "the log ended before the gap was filled");
        since = page.last().map(|e| e.seq);
        replayed.extend(page.into_iter().filter(|e| e.name == "processOutput" || e.name == "processExit"));
    }
    replayed.truncate(skipped as usize);
    assert_eq!(replayed[0].seq, resume_from);
    let mut offset = before;
    for event in &replayed {
        assert_eq!(event.name, "processOutput", "the gap is output only (the exit came after it)");
        let data = data_of(&event.data);
        check(&data, offset);
        offset += data.len();
    }
    check(&after_gap, offset);
    assert_eq!(offset + after_gap.len(), TOTAL, "live + replayed + live again is the whole output");
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).unwrap()
}

/// Acceptance 4: SIGTERM while WebSockets keep sending actions: no VM boots after the signal,
/// actions get `shutting_down`, and every VM's log ends with its `vmShutdown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_boots_nothing_and_every_log_ends_with_vm_shutdown() {
    let server = TestServer::start();
    let keys: Vec<String> = (0..8).map(|i| format!("log-term-{i}")).collect();
    let client = Client::new(server.url.clone());
    // Half the VMs awake; the other half exist (a connection creates its actor) but sleep.
    for key in &keys[..4] {
        client.vm(key).exec("true", Default::default()).await.unwrap();
    }
    // A process that ignores SIGTERM: stopping its VM takes the 2 s grace, so the shutdown lasts
    // long enough to try actions while it runs.
    let stubborn = strings(&["-c", "trap '' TERM; sleep 1000"]);
    client.vm(&keys[0]).spawn("sh", &stubborn, SpawnOptions::default()).await.unwrap();
    // Busy connections to the awake VMs, and idle ones to the sleeping VMs (a connection does
    // not boot its VM).
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU64::new(0));
    let booted_after = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for key in &keys[..4] {
        let socket = connect(&server, key, &[]).await;
        let (stop, refused) = (Arc::clone(&stop), Arc::clone(&refused));
        senders.push(tokio::spawn(async move {
            let mut conn = Conn::from_socket(socket);
            while !stop.load(Ordering::Relaxed) {
                // The socket ends when the server exits.
                match conn.call_unless_closed("exec", json!(["true"])).await {
                    None => return,
                    Some(Err(error)) if error["code"] == "shutting_down" => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(_) => {}
                }
            }
        }));
    }
    let sleepers = futures_util::future::join_all(keys[4..].iter().map(|k| connect(&server, k, &[]))).await;

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.pid() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    // The server has taken the signal in once actions are refused (it handles it a moment
    // after it was sent).
    common::eventually(10, "actions to be refused with shutting_down", || {
        let refused = Arc::clone(&refused);
        async move { refused.load(Ordering::Relaxed) > 0 }
    })
    .await;
    let signalled_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    // Actions on still-open sockets to sleeping VMs, during the shutdown.
    for socket in sleepers {
        let (refused, booted_after) = (Arc::clone(&refused), Arc::clone(&booted_after));
        senders.push(tokio::spawn(async move {
            let mut conn = Conn::from_socket(socket);
            for _ in 0..20 {
                match conn.call_unless_closed("exec", json!(["true"])).await {
                    None => return,
                    Some(Ok(_)) => booted_after.fetch_add(1, Ordering::Relaxed),
                    Some(Err(error)) if error["code"] == "shutting_down" => refused.fetch_add(1, Ordering::Relaxed),
                    Some(Err(error)) => panic!("unexpected error {error}"),
                };
            }
        }));
    }
    let mut server = server;
    let status = tokio::task::spawn_blocking(move || {
        let status = server.stop();
        (server, status)
    });
    let (server, status) = status.await.unwrap();
    assert!(status.success(), "the server exited with {status}");
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        let _ = tokio::time::timeout(Duration::from_secs(10), sender).await;
    }
    assert_eq!(booted_after.load(Ordering::Relaxed), 0, "a sleeping VM ran an action after SIGTERM");
    assert!(refused.load(Ordering::Relaxed) > 0, "no action was refused with shutting_down");

    let data = server.stop_keep_data();
    let server = TestServer::start_in(data, &[]);
    let client = Client::new(server.url.clone());
    for (i, key) in keys.iter().enumerate() {
        let log = whole_log(&client, key).await;
        for event in log.iter().filter(|e| e.name == "vmBooted") {
            assert!(event.created_at <= signalled_ms, "{key}: a VM booted after the signal: {event:?}");
        }
        if i < 4 {
            let last = log.last().unwrap_or_else(|| panic!("{key}: empty log"));
            assert_eq!(last.name, "vmShutdown", "{key}: the log ends with {last:?}");
        } else {
            assert!(log.iter().all(|e| e.name != "vmBooted"), "{key} booted: {log:?}");
        }
    }
}

/// Acceptance 6: 100 VMs with busy histories go to sleep; the server's memory and descriptors
/// fall back to within the documented per-VM bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sleeping_vms_hold_no_descriptor_and_little_memory() {
    const VMS: usize = 100;
    /// README: a sleeping VM costs the server at most this much memory.
    const PER_VM: u64 = 64 << 10;
    let server = TestServer::start_with(&["--idle-timeout", "1"]);
    // Baseline: after one VM has lived and slept (the server's own warm-up: pools, caches), and
    // with no client connected (a client's pooled keep-alive connections are not the VMs').
    let warm = Client::new(server.url.clone());
    warm.vm("log-sleep-warm").exec("head -c 4000000 /dev/zero | wc -c", Default::default()).await.unwrap();
    drop(warm);
    let pid = server.pid();
    let vm_count = || server.vm_inits().len();
    common::eventually(30, "the warm-up VM to sleep", || async { vm_count() == 0 }).await;
    let (base_rss, base_fds) = (rss(pid), descriptors(pid));
    let client = Client::new(server.url.clone());

    let busy = futures_util::stream::iter(0..VMS)
        .map(|i| {
            let vm = client.vm(&format!("log-sleep-{i}"));
            async move {
                let conn = vm.connect().await.unwrap();
                conn.subscribe("processOutput").await.unwrap();
                let pid = vm
                    .spawn("sh", &strings(&["-c", "head -c 3000000 /dev/urandom; echo done"]), SpawnOptions::default())
                    .await
                    .unwrap();
                assert_eq!(vm.wait_process(pid).await.unwrap(), 0);
                conn.close().await;
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<()>>();
    tokio::time::timeout(Duration::from_secs(240), busy).await.expect("the busy VMs took too long");
    let busy_rss = rss(pid);
    drop(client);
    common::eventually(60, "every VM to sleep", || async { vm_count() == 0 }).await;
    let settled = tokio::time::timeout(Duration::from_secs(30), async {
        while descriptors(pid) > base_fds + 2 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    if settled.is_err() {
        let open: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .map(|e| std::fs::read_link(e.path()).map(|p| p.display().to_string()).unwrap_or_default())
            .collect();
        panic!("descriptors: {} at the baseline, {} now: {open:?}", base_fds, open.len());
    }
    // Plus what the allocator keeps whatever the VMs (README: up to 8 MiB): free memory in its
    // arenas it does not return.
    let bound = base_rss + VMS as u64 * PER_VM + (8 << 20);
    let fell_back = tokio::time::timeout(Duration::from_secs(45), async {
        while rss(pid) > bound {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        fell_back.is_ok(),
        "server RSS: baseline {} KiB, busy {} KiB, now {} KiB with {VMS} VMs asleep (bound {} KiB)",
        base_rss >> 10,
        busy_rss >> 10,
        rss(pid) >> 10,
        bound >> 10
    );
    eprintln!(
        "RSS: baseline {} MiB, busy {} MiB, {} VMs asleep {} MiB; descriptors {} -> {}",
        base_rss >> 20,
        busy_rss >> 20,
        VMS,
        rss(pid) >> 20,
        base_fds,
        descriptors(pid)
    );
}
