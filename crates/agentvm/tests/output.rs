//! Output volume and back-pressure (acceptance 6 of the VM core issue).
mod common;

use std::time::{Duration, Instant};

use agentvm_vm::{SpawnOptions, VmEvent};
use common::*;

/// `seq 1 LAST` is a little over 100 MB (100,488,897 bytes) of ordered, checkable text.
const LAST: u64 = 12_400_000;

fn check_sequence(bytes: &[u8]) {
    assert!(bytes.len() > 100_000_000, "only {} bytes", bytes.len());
    let mut expected = 1u64;
    for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let n: u64 = std::str::from_utf8(line).unwrap().parse().unwrap();
        assert_eq!(n, expected, "out of order or missing output");
        expected += 1;
    }
    assert_eq!(expected, LAST + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_megabytes_of_output_arrive_complete_and_in_order() {
    let h = host();
    // exec keeps 4 MiB per stream by default; this VM keeps all of the 100 MB.
    let options = agentvm_vm::VmOptions { exec_output_bytes: 128 << 20, ..Default::default() };
    let vm = h.vm_with("output-100mb", options).await;
    let mut events = vm.subscribe(None);
    let pid = vm.spawn("seq", &["1".into(), LAST.to_string()], SpawnOptions::default()).await.unwrap();
    let (out, err, code) = collect_until_exit(&mut events, pid, 120).await;
    assert_eq!(code, 0);
    assert!(err.is_empty());
    check_sequence(&out);

    // The same through exec's captured stdout.
    let r = vm.exec(&format!("seq 1 {LAST}"), Default::default()).await.unwrap();
    assert_eq!(r.exit_code, 0);
    check_sequence(r.stdout.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_output_stalls_no_other_vm_and_stays_bounded() {
    let h = host();
    let noisy = h.vm("output-noisy").await;
    let quiet = h.vm("output-quiet").await;
    // Nobody subscribes to the noisy VM's events.
    let pid = noisy.spawn("yes", &["spam".into()], SpawnOptions::default()).await.unwrap();
    let started = Instant::now();
    for i in 0..20 {
        let r = tokio::time::timeout(Duration::from_secs(10), quiet.exec(&format!("echo {i}"), Default::default()))
            .await
            .expect("the quiet VM stalled")
            .unwrap();
        assert_eq!(r.stdout, format!("{i}\n"));
    }
    eprintln!("20 execs in the quiet VM took {:?} while the noisy VM streamed", started.elapsed());
    // The noisy process was never blocked: it produced far more than any buffer holds...
    eventually(10, "the noisy process to produce over 100 events", || async { noisy.events().next_seq() > 100 }).await;
    let seq_now = noisy.events().next_seq();
    assert!(seq_now > 100, "the noisy process produced only {seq_now} events");
    // ...while memory stayed bounded by the documented retention.
    let retained: usize = noisy
        .events()
        .replay(0)
        .iter()
        .map(|e| match &e.event {
            VmEvent::ProcessOutput { data, .. } => data.len(),
            _ => 0,
        })
        .sum();
    assert!(retained <= agentvm_vm::Retention::default().bytes, "{retained} bytes retained");
    let per_process: usize = noisy.process_output(pid, None).unwrap().iter().map(|c| c.data.len()).sum();
    assert!(per_process <= 1 << 20, "{per_process} bytes in the process log");
    assert!(noisy.get_process(pid).unwrap().running);
    noisy.kill_process(pid).unwrap();
    assert_eq!(noisy.wait_process(pid).await.unwrap(), 137);
}

#[tokio::test]
async fn a_late_subscriber_replays_from_a_cursor() {
    let h = host();
    let vm = h.vm("output-replay").await;
    let first = vm.events().next_seq();
    let pid = vm.spawn("sh", &["-c".into(), "echo one; echo two".into()], SpawnOptions::default()).await.unwrap();
    assert_eq!(vm.wait_process(pid).await.unwrap(), 0);
    // Connect only now, from the cursor taken before the spawn.
    let mut late = vm.subscribe(Some(first));
    let (out, _, code) = collect_until_exit(&mut late, pid, 10).await;
    assert_eq!((String::from_utf8(out).unwrap().as_str(), code), ("one\ntwo\n", 0));
    // The per-process log answers "everything after chunk N".
    let chunks = vm.process_output(pid, None).unwrap();
    let after_first = vm.process_output(pid, Some(chunks[0].seq)).unwrap();
    assert_eq!(after_first.len(), chunks.len() - 1);
}
