//! The VM's event stream: a bounded log of sequenced events that any number of subscribers read
//! at their own pace.
//!
//! Writers (output pumps, exit reports) append and never wait: a slow or stalled subscriber
//! cannot block a process, the VM, or any other VM. Each subscriber keeps its own cursor. The log
//! keeps the newest events up to [`Retention::bytes`]; while a live subscriber still needs older
//! events it keeps them, up to [`Retention::max_lag_bytes`]. A subscriber that falls behind even
//! that is told exactly how many events it missed ([`Item::Lagged`]) and continues with the
//! oldest retained one; it can fetch a process's recent output again from the per-process log
//! ([`crate::Vm::process_output`]). Every event carries a sequence number, so a client that
//! reconnects can resume from the last one it saw.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::Notify;

use crate::types::OutputStream;

/// Something that happened in a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum VmEvent {
    /// A chunk of a spawned process's stdout or stderr (raw bytes, not line-aligned).
    #[serde(rename_all = "camelCase")]
    ProcessOutput { pid: i32, stream: OutputStream, data: Bytes },
    /// A spawned process ended; sent after all of its output.
    #[serde(rename_all = "camelCase")]
    ProcessExit { pid: i32, exit_code: i32 },
    /// Output of an interactive shell's terminal (stdout and stderr merged, as displayed).
    #[serde(rename_all = "camelCase")]
    ShellData { shell_id: String, data: Bytes },
    /// A shell ended; sent after all of its output.
    #[serde(rename_all = "camelCase")]
    ShellExit { shell_id: String, exit_code: i32 },
    /// The VM finished booting (emitted by the host that boots it, not by the VM itself).
    VmBooted,
    /// The VM is stopping: `reason` is `sleep`, `destroy` or `error`.
    VmShutdown { reason: String },
}

impl VmEvent {
    /// Approximate memory an event holds, for retention accounting.
    fn weight(&self) -> usize {
        64 + match self {
            VmEvent::ProcessOutput { data, .. } | VmEvent::ShellData { data, .. } => data.len(),
            VmEvent::ProcessExit { .. }
            | VmEvent::ShellExit { .. }
            | VmEvent::VmBooted
            | VmEvent::VmShutdown { .. } => 0,
        }
    }
}

/// An event and its position in the VM's stream (starting at 0, gap-free).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SequencedEvent {
    pub seq: u64,
    #[serde(flatten)]
    pub event: VmEvent,
}

/// How much of the stream a VM keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Kept regardless of subscribers, for replay after a reconnect. Default 8 MiB.
    pub bytes: usize,
    /// Kept at most while a live subscriber lags. Default 64 MiB.
    pub max_lag_bytes: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { bytes: 8 << 20, max_lag_bytes: 64 << 20 }
    }
}

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Event(Arc<SequencedEvent>),
    /// `missed` events were dropped before this subscriber read them.
    Lagged {
        missed: u64,
    },
}

/// The bounded, sequenced event log of one VM.
pub struct EventLog {
    state: Mutex<State>,
    notify: Notify,
    retention: Retention,
}

struct State {
    events: VecDeque<Arc<SequencedEvent>>,
    bytes: usize,
    next_seq: u64,
    /// Next sequence number each live subscriber will read.
    cursors: Vec<Weak<AtomicU64>>,
    closed: bool,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog").field("next_seq", &self.next_seq()).finish_non_exhaustive()
    }
}

impl EventLog {
    pub fn new(retention: Retention) -> Arc<EventLog> {
        Self::starting_at(retention, 0)
    }

    /// A log whose first event gets sequence number `next_seq` (to continue a stream that was
    /// persisted before a restart).
    pub fn starting_at(retention: Retention, next_seq: u64) -> Arc<EventLog> {
        Arc::new(EventLog {
            state: Mutex::new(State {
                events: VecDeque::new(),
                bytes: 0,
                next_seq,
                cursors: Vec::new(),
                closed: false,
            }),
            notify: Notify::new(),
            retention,
        })
    }

    /// Appends an event and wakes subscribers. Never blocks on readers.
    pub fn push(&self, event: VmEvent) -> u64 {
        let seq = {
            let mut state = self.state.lock().unwrap();
            let seq = state.next_seq;
            state.next_seq += 1;
            state.bytes += event.weight();
            state.events.push_back(Arc::new(SequencedEvent { seq, event }));
            self.trim(&mut state);
            seq
        };
        self.notify.notify_waiters();
        seq
    }

    /// Ends the stream: subscribers get the remaining events, then `None`.
    pub fn close(&self) {
        self.state.lock().unwrap().closed = true;
        self.notify.notify_waiters();
    }

    /// Sequence number the next event will get.
    pub fn next_seq(&self) -> u64 {
        self.state.lock().unwrap().next_seq
    }

    /// A subscriber starting at `from` (an older sequence number replays retained events), or at
    /// the next new event when `from` is `None`.
    pub fn subscribe(self: &Arc<Self>, from: Option<u64>) -> Subscription {
        let mut state = self.state.lock().unwrap();
        let start = from.unwrap_or(state.next_seq).min(state.next_seq);
        let cursor = Arc::new(AtomicU64::new(start));
        state.cursors.push(Arc::downgrade(&cursor));
        Subscription { log: Arc::clone(self), cursor }
    }

    /// Events with `seq >= from` still retained.
    pub fn replay(&self, from: u64) -> Vec<Arc<SequencedEvent>> {
        let state = self.state.lock().unwrap();
        state.events.iter().filter(|e| e.seq >= from).cloned().collect()
    }

    fn trim(&self, state: &mut State) {
        if state.bytes <= self.retention.bytes {
            return;
        }
        state.cursors.retain(|c| c.strong_count() > 0);
        let slowest = state.cursors.iter().filter_map(Weak::upgrade).map(|c| c.load(Ordering::Acquire)).min();
        while state.bytes > self.retention.bytes {
            let Some(oldest) = state.events.front() else { break };
            let needed = slowest.is_some_and(|s| s <= oldest.seq);
            if needed && state.bytes <= self.retention.max_lag_bytes {
                break;
            }
            let weight = oldest.event.weight();
            state.events.pop_front();
            state.bytes -= weight;
        }
    }
}

/// One reader of a VM's event stream.
pub struct Subscription {
    log: Arc<EventLog>,
    cursor: Arc<AtomicU64>,
}

impl Subscription {
    /// The next event, a lag notice, or `None` once the VM's stream has ended and is drained.
    pub async fn next(&mut self) -> Option<Item> {
        let log = Arc::clone(&self.log);
        loop {
            let mut notified = pin!(log.notify.notified());
            notified.as_mut().enable();
            if let Some(result) = self.poll_now() {
                return result;
            }
            notified.await;
        }
    }

    /// Like [`Subscription::next`] without waiting: `Some(None)` at the end of the stream,
    /// `None` when nothing is available yet.
    pub fn poll_now(&mut self) -> Option<Option<Item>> {
        let state = self.log.state.lock().unwrap();
        let cursor = self.cursor.load(Ordering::Acquire);
        let first = state.events.front().map_or(state.next_seq, |e| e.seq);
        if cursor < first {
            self.cursor.store(first, Ordering::Release);
            return Some(Some(Item::Lagged { missed: first - cursor }));
        }
        if cursor < state.next_seq {
            let event = Arc::clone(&state.events[(cursor - first) as usize]);
            self.cursor.store(cursor + 1, Ordering::Release);
            return Some(Some(Item::Event(event)));
        }
        if state.closed {
            return Some(None);
        }
        None
    }

    /// Sequence number of the next event this subscriber will read.
    pub fn cursor(&self) -> u64 {
        self.cursor.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(n: usize) -> VmEvent {
        VmEvent::ProcessOutput { pid: 1, stream: OutputStream::Stdout, data: Bytes::from(vec![b'x'; n]) }
    }

    #[tokio::test]
    async fn subscribers_read_in_order_and_replay_from_a_cursor() {
        let log = EventLog::new(Retention::default());
        let mut live = log.subscribe(None);
        for i in 0..3 {
            log.push(VmEvent::ProcessExit { pid: i, exit_code: 0 });
        }
        for i in 0..3 {
            match live.next().await.unwrap() {
                Item::Event(e) => assert_eq!(e.seq, i as u64),
                other => panic!("{other:?}"),
            }
        }
        let mut late = log.subscribe(Some(1));
        assert!(matches!(late.next().await.unwrap(), Item::Event(e) if e.seq == 1));
        log.close();
        assert!(matches!(late.next().await.unwrap(), Item::Event(e) if e.seq == 2));
        assert_eq!(late.next().await, None);
    }

    #[tokio::test]
    async fn without_subscribers_only_the_retention_is_kept() {
        let log = EventLog::new(Retention { bytes: 10_000, max_lag_bytes: 100_000 });
        for _ in 0..100 {
            log.push(output(1000));
        }
        let kept = log.replay(0);
        assert!(kept.len() < 11, "kept {}", kept.len());
        assert_eq!(kept.last().unwrap().seq, 99);
        let mut late = log.subscribe(Some(0));
        assert_eq!(late.next().await, Some(Item::Lagged { missed: 100 - kept.len() as u64 }));
    }

    #[tokio::test]
    async fn a_lagging_subscriber_keeps_events_up_to_the_lag_bound() {
        let log = EventLog::new(Retention { bytes: 10_000, max_lag_bytes: 50_000 });
        let mut slow = log.subscribe(None);
        for _ in 0..40 {
            log.push(output(1000));
        }
        // 40 KiB is within the lag bound: nothing lost.
        for i in 0..40 {
            assert!(matches!(slow.next().await.unwrap(), Item::Event(e) if e.seq == i));
        }
        for _ in 0..100 {
            log.push(output(1000));
        }
        match slow.next().await.unwrap() {
            Item::Lagged { missed } => assert!(missed > 0 && missed < 100),
            other => panic!("{other:?}"),
        }
    }
}
