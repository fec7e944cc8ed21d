//! Measures how fast a VM's event log takes output: appends 1 GiB of 64 KiB chunks in
//! transactions of 64 events (4 MiB, the persister's batch size), with the default retention,
//! then reads the retained events back by cursor; then 100,000 small events, appended and
//! replayed by cursor.
//!
//! `cargo run --release -p agentvm-store --example append_rate [DIR]` (DIR: where to put the
//! log, default a temporary directory; use the data directory's file system).

use agentvm_store::{EventRetention, EventStore, StoredEvent};

const TOTAL: u64 = 1 << 30;
const CHUNK: usize = 64 << 10;
const BATCH: u64 = 64;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = match std::env::args_os().nth(1) {
        Some(parent) => tempfile::tempdir_in(parent)?,
        None => tempfile::tempdir()?,
    };
    let mut store = EventStore::open(&dir.path().join("vm.sqlite3"), EventRetention::default())?;
    let chunk = bytes::Bytes::from(vec![b'y'; CHUNK]);
    let events = TOTAL / CHUNK as u64;
    let started = std::time::Instant::now();
    for first in (0..events).step_by(BATCH as usize) {
        let batch: Vec<StoredEvent> = (first..first + BATCH)
            .map(|seq| StoredEvent {
                seq,
                name: "processOutput".into(),
                fields: r#"{"pid":1,"stream":"stdout"}"#.into(),
                data: Some(chunk.clone()),
                created_ms: 0,
            })
            .collect();
        store.append(&batch)?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!("append: {:.0} MB/s, {:.0} events/s", TOTAL as f64 / secs / 1e6, events as f64 / secs);
    let started = std::time::Instant::now();
    let read = replay(&store)?;
    println!("read back {read} retained events by cursor in {:?}", started.elapsed());
    drop(store);

    // 100,000 small events (exits), the default count bound: appended, then replayed by cursor
    // in pages of 10,000 (what `getVmEvents` returns at most).
    let mut store = EventStore::open(&dir.path().join("small.sqlite3"), EventRetention::default())?;
    let started = std::time::Instant::now();
    for first in (0..100_000u64).step_by(1000) {
        let batch: Vec<StoredEvent> = (first..first + 1000)
            .map(|seq| StoredEvent {
                seq,
                name: "processExit".into(),
                fields: format!(r#"{{"pid":{seq},"exitCode":0}}"#),
                data: None,
                created_ms: 0,
            })
            .collect();
        store.append(&batch)?;
    }
    println!("append: 100,000 small events in {:?}", started.elapsed());
    let started = std::time::Instant::now();
    let read = replay(&store)?;
    println!("replay: {read} events by cursor (pages of 10,000) in {:?}", started.elapsed());
    Ok(())
}

/// Reads every retained event by cursor, in pages of 10,000 (what `getVmEvents` returns at
/// most); returns how many.
fn replay(store: &EventStore) -> Result<usize, agentvm_store::StoreError> {
    let (mut after, mut read) = (None, 0);
    loop {
        let page = store.read(after, 10_000, u64::MAX)?;
        let Some(last) = page.last() else { return Ok(read) };
        after = Some(last.seq);
        read += page.len();
    }
}
