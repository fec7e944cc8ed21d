//! The VM's event stream: sequenced events, each subscriber reading its own bounded queue.
//!
//! **Numbering and publishing.** [`EventLog::push`] numbers an event (from 0, gap-free) and
//! records when it happened. A plain log ([`EventLog::new`]) publishes it at once. A *durable*
//! log ([`EventLog::durable`]) holds it until its persister — the one reader that sees events
//! before anyone else — has written it to disk ([`EventLog::take_unpersisted`], then
//! [`EventLog::persisted`]); only then is it published. So no subscriber ever sees a number
//! that a crash could lose and hand out again.
//!
//! **Queues, not a shared window.** Publishing copies a pointer to the event (never its bytes)
//! into the queue of every subscriber whose filter wants it, so a subscriber's queue only holds
//! what it will send, and a slow subscriber never costs another one anything.
//!
//! **Back-pressure, like a pipe.** Output producers (the pumps reading a process's or shell's
//! pipes) call [`EventLog::reserve`] before reading more: it waits while the persister is
//! [`Retention::backlog_bytes`] behind, or while a subscriber's queue is full
//! ([`Retention::queue_bytes`]). So a reader that is slow but reading throttles the process to
//! its pace and loses nothing, as a pipe would. A subscriber whose queue stays full for
//! [`Retention::stall_grace`] is *detached*: producers stop waiting for it, and events that do
//! not fit its queue are dropped for it alone and replaced by one [`Gap`] in its queue, in
//! order — it learns exactly which sequence numbers it missed ([`Item::Skipped`]) and can read
//! them from the durable log. It is attached again once it has read half its queue.
//!
//! **Memory.** Per VM: the unpersisted backlog, the retained tail ([`Retention::bytes`], for
//! [`EventLog::replay`] and subscribers that start from an older number) and each subscriber's
//! queue (at most twice [`Retention::queue_bytes`], plus payload-free events), where queued
//! events are shared, not copied.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::Notify;
// tokio's clock (the same as std's, except that tests can pause it).
use tokio::time::Instant;

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
    /// The VM's network policy refused a connection (emitted by the host's egress proxy):
    /// where to, and why.
    NetworkDenied { host: String, port: u16, reason: String },
    /// Something an agent session did (a `session/update` notification, as JSON text), after it
    /// was written to the session's transcript.
    #[serde(rename_all = "camelCase")]
    SessionEvent { session_id: String, event: Arc<str> },
    /// An agent asks permission (`{permissionId, description, params}` as JSON text); answered
    /// with `respondPermission`.
    #[serde(rename_all = "camelCase")]
    PermissionRequest { session_id: String, request: Arc<str> },
    /// A session's agent exited, hung or wrote garbage: why, with its stderr tail.
    #[serde(rename_all = "camelCase")]
    AgentCrashed { session_id: String, message: String },
    /// A cron job's run started, completed or failed (`{type, jobId, time, ...}` as JSON text).
    CronEvent { event: Arc<str> },
}

/// Bytes an event is counted for besides its payload.
const EVENT_OVERHEAD: usize = 64;

impl VmEvent {
    /// Approximate memory an event holds, for queue and retention accounting.
    pub fn weight(&self) -> usize {
        EVENT_OVERHEAD + self.payload_len()
    }

    /// Length of the event's bytes (output), 0 for events without.
    pub fn payload_len(&self) -> usize {
        match self {
            VmEvent::ProcessOutput { data, .. } | VmEvent::ShellData { data, .. } => data.len(),
            VmEvent::ProcessExit { .. }
            | VmEvent::ShellExit { .. }
            | VmEvent::VmBooted
            | VmEvent::VmShutdown { .. }
            | VmEvent::NetworkDenied { .. }
            | VmEvent::AgentCrashed { .. } => 0,
            VmEvent::SessionEvent { event: json, .. }
            | VmEvent::PermissionRequest { request: json, .. }
            | VmEvent::CronEvent { event: json } => json.len(),
        }
    }

    /// What the event is about, for reporting a gap.
    fn scope(&self) -> GapScope {
        match self {
            VmEvent::ProcessOutput { pid, .. } | VmEvent::ProcessExit { pid, .. } => GapScope::Process(*pid),
            VmEvent::ShellData { shell_id, .. } | VmEvent::ShellExit { shell_id, .. } => {
                GapScope::Shell(shell_id.clone())
            }
            VmEvent::VmBooted
            | VmEvent::VmShutdown { .. }
            | VmEvent::NetworkDenied { .. }
            | VmEvent::SessionEvent { .. }
            | VmEvent::PermissionRequest { .. }
            | VmEvent::AgentCrashed { .. }
            | VmEvent::CronEvent { .. } => GapScope::Vm,
        }
    }
}

/// An event, its position in the VM's stream (from 0, gap-free) and when it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SequencedEvent {
    pub seq: u64,
    /// When the event happened, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    #[serde(flatten)]
    pub event: VmEvent,
}

/// How much of the stream a VM keeps in memory, and how long producers wait for readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Published events kept for replay from an older number. Default 8 MiB.
    pub bytes: usize,
    /// A subscriber's queue is full at this many bytes. Default 8 MiB.
    pub queue_bytes: usize,
    /// How long producers wait for a full queue before detaching its subscriber. Default 1 s.
    pub stall_grace: Duration,
    /// Durable logs: most bytes numbered but not yet persisted before producers wait.
    /// Default 8 MiB.
    pub backlog_bytes: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { bytes: 8 << 20, queue_bytes: 8 << 20, stall_grace: Duration::from_secs(1), backlog_bytes: 8 << 20 }
    }
}

/// Payload-free events (exits, lifecycle) still enter a full queue while it holds fewer than
/// this many entries: they are tiny, and the ones a client least wants to lose.
const MAX_QUEUE_ENTRIES: usize = 65_536;

/// What a gap was about: one process, one shell, or several things (or the VM itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GapScope {
    Process(i32),
    Shell(String),
    Vm,
}

/// Events a subscriber did not receive: `count` of the events it wanted, from sequence number
/// `first_seq` on (up to the next event it receives). They can be read from the durable log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub first_seq: u64,
    pub count: u64,
    pub scope: GapScope,
}

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Event(Arc<SequencedEvent>),
    /// Events this subscriber wanted were dropped here, in order, instead of being delivered.
    Skipped(Gap),
}

/// Which events a subscriber wants (all when it has none).
pub type Filter = Box<dyn Fn(&VmEvent) -> bool + Send + Sync>;

/// The sequenced event stream of one VM.
pub struct EventLog {
    state: Mutex<State>,
    /// Subscribers wait on it for new events.
    published: Notify,
    /// Producers wait on it for room.
    room: Notify,
    /// The persister waits on it for events to write.
    numbered: Notify,
    durable: bool,
    limits: Retention,
}

struct State {
    next_seq: u64,
    /// Numbered and not yet persisted (durable logs), oldest first.
    unpersisted: VecDeque<Arc<SequencedEvent>>,
    unpersisted_bytes: usize,
    /// How many of `unpersisted` the persister has taken.
    taken: usize,
    /// Published events kept for replay.
    tail: VecDeque<Arc<SequencedEvent>>,
    tail_bytes: usize,
    queues: Vec<Queue>,
    next_subscriber: u64,
    closed: bool,
    /// When recent events were numbered: `(when, seq)`, one mark per [`MARK_EVERY`] at most,
    /// for the last [`MARKS_KEPT`] (see [`EventLog::seq_since`]).
    marks: VecDeque<(Instant, u64)>,
}

/// Granularity of [`EventLog::seq_since`].
const MARK_EVERY: Duration = Duration::from_millis(10);
/// How far back [`EventLog::seq_since`] can look (at most 200 marks, about 5 KiB).
const MARKS_KEPT: Duration = Duration::from_secs(2);

struct Queue {
    id: u64,
    filter: Option<Filter>,
    /// Events before this number are not for this subscriber (it started later).
    from: u64,
    entries: VecDeque<Entry>,
    bytes: usize,
    /// Since when producers wait for this queue.
    full_since: Option<Instant>,
    detached: bool,
}

enum Entry {
    Event(Arc<SequencedEvent>),
    Skipped(Gap),
}

impl State {
    fn published_next(&self) -> u64 {
        self.next_seq - self.unpersisted.len() as u64
    }

    fn queue(&mut self, id: u64) -> Option<&mut Queue> {
        self.queues.iter_mut().find(|q| q.id == id)
    }
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog").field("next_seq", &self.next_seq()).finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl EventLog {
    /// A log that publishes every event as soon as it is pushed, numbering from 0.
    pub fn new(limits: Retention) -> Arc<EventLog> {
        Self::build(limits, 0, false)
    }

    /// A log whose events are published only once persisted (see the module doc), numbering
    /// from `next_seq` (to continue a stream persisted before).
    pub fn durable(limits: Retention, next_seq: u64) -> Arc<EventLog> {
        Self::build(limits, next_seq, true)
    }

    fn build(limits: Retention, next_seq: u64, durable: bool) -> Arc<EventLog> {
        Arc::new(EventLog {
            state: Mutex::new(State {
                next_seq,
                unpersisted: VecDeque::new(),
                unpersisted_bytes: 0,
                taken: 0,
                tail: VecDeque::new(),
                tail_bytes: 0,
                queues: Vec::new(),
                next_subscriber: 0,
                closed: false,
                marks: VecDeque::new(),
            }),
            published: Notify::new(),
            room: Notify::new(),
            numbered: Notify::new(),
            durable,
            limits,
        })
    }

    /// Numbers an event and publishes it (or hands it to the persister first). Never waits;
    /// producers of bulk output call [`EventLog::reserve`] before reading more. Once the log is
    /// closed, events are dropped.
    pub fn push(&self, event: VmEvent) -> u64 {
        let mut state = self.state.lock().unwrap();
        if state.closed {
            // The stream ended (its actor was destroyed): nothing comes after its last event.
            return state.next_seq;
        }
        let seq = state.next_seq;
        state.next_seq += 1;
        let now = Instant::now();
        if state.marks.back().is_none_or(|(at, _)| now.duration_since(*at) >= MARK_EVERY) {
            state.marks.push_back((now, seq));
            while state.marks.front().is_some_and(|(at, _)| now.duration_since(*at) > MARKS_KEPT) {
                state.marks.pop_front();
            }
        }
        let event = Arc::new(SequencedEvent { seq, at_ms: now_ms(), event });
        if self.durable {
            state.unpersisted_bytes += event.event.weight();
            state.unpersisted.push_back(event);
            drop(state);
            self.numbered.notify_waiters();
        } else {
            self.publish(&mut state, event);
            drop(state);
            self.published.notify_waiters();
        }
        seq
    }

    /// Waits until there is room for more output: the persister is not too far behind and no
    /// attached subscriber's queue is full (detaching the ones full for longer than the grace).
    pub async fn reserve(&self) {
        loop {
            let mut notified = pin!(self.room.notified());
            notified.as_mut().enable();
            let wait = {
                let mut state = self.state.lock().unwrap();
                self.blocked(&mut state)
            };
            match wait {
                Blocked::No => return,
                Blocked::Until(deadline) => {
                    let _ = tokio::time::timeout_at(deadline, notified).await;
                }
                Blocked::Indefinitely => notified.await,
            }
        }
    }

    /// Whether a producer may read more output now (what [`EventLog::reserve`] waits for).
    pub fn has_room(&self) -> bool {
        matches!(self.blocked(&mut self.state.lock().unwrap()), Blocked::No)
    }

    fn blocked(&self, state: &mut State) -> Blocked {
        if state.closed {
            return Blocked::No;
        }
        if self.durable && state.unpersisted_bytes >= self.limits.backlog_bytes {
            return Blocked::Indefinitely;
        }
        let now = Instant::now();
        let mut until = None;
        // Events not persisted yet will be published into the queues too.
        let coming = state.unpersisted_bytes;
        for queue in state.queues.iter_mut().filter(|q| !q.detached && q.bytes + coming >= self.limits.queue_bytes) {
            let deadline = *queue.full_since.get_or_insert(now) + self.limits.stall_grace;
            if now >= deadline {
                queue.detached = true;
                queue.full_since = None;
            } else {
                until = Some(until.map_or(deadline, |u: Instant| u.min(deadline)));
            }
        }
        until.map_or(Blocked::No, Blocked::Until)
    }

    /// Durable logs: the next events to persist (at most `max_events` and about `max_bytes`),
    /// in order, once there are any; `None` once the log is closed and everything is persisted.
    pub async fn take_unpersisted(&self, max_events: usize, max_bytes: usize) -> Option<Vec<Arc<SequencedEvent>>> {
        loop {
            let mut notified = pin!(self.numbered.notified());
            notified.as_mut().enable();
            {
                let mut state = self.state.lock().unwrap();
                if state.taken < state.unpersisted.len() {
                    let mut batch = Vec::new();
                    let mut bytes = 0;
                    for event in state.unpersisted.iter().skip(state.taken) {
                        if batch.len() >= max_events || (bytes >= max_bytes && !batch.is_empty()) {
                            break;
                        }
                        bytes += event.event.weight();
                        batch.push(Arc::clone(event));
                    }
                    state.taken += batch.len();
                    return Some(batch);
                }
                if state.closed && state.unpersisted.is_empty() {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Durable logs: events up to `through` are on disk; publish them.
    pub fn persisted(&self, through: u64) {
        let mut state = self.state.lock().unwrap();
        while state.unpersisted.front().is_some_and(|e| e.seq <= through) {
            let Some(event) = state.unpersisted.pop_front() else { break };
            state.unpersisted_bytes -= event.event.weight();
            state.taken = state.taken.saturating_sub(1);
            self.publish(&mut state, event);
        }
        drop(state);
        self.published.notify_waiters();
        self.room.notify_waiters();
        self.numbered.notify_waiters();
    }

    /// Resolves once every event pushed so far is persisted (at once for a plain log).
    pub async fn flushed(&self) {
        loop {
            let mut notified = pin!(self.published.notified());
            notified.as_mut().enable();
            if self.state.lock().unwrap().unpersisted.is_empty() {
                return;
            }
            notified.await;
        }
    }

    /// Ends the stream: subscribers get their queued events, then `None`; the persister gets
    /// the remaining events, then `None`.
    pub fn close(&self) {
        self.state.lock().unwrap().closed = true;
        self.published.notify_waiters();
        self.room.notify_waiters();
        self.numbered.notify_waiters();
    }

    /// The first sequence number of the events numbered at or after `at` (or a few
    /// milliseconds before it: never later), looking back at most 2 s.
    pub fn seq_since(&self, at: Instant) -> u64 {
        let state = self.state.lock().unwrap();
        // The last mark at or before `at`: every event from it on was numbered after it.
        match state.marks.iter().rev().find(|(when, _)| *when <= at) {
            Some((_, seq)) => *seq,
            // Every mark is later (the events before the first one are older than `at`), or
            // there was no event lately.
            None => state.marks.front().map_or(state.next_seq, |(_, seq)| *seq),
        }
    }

    /// Sequence number the next event will get.
    pub fn next_seq(&self) -> u64 {
        self.state.lock().unwrap().next_seq
    }

    /// A subscriber to every event published from now on, or from `from` (replaying retained
    /// events; a [`Gap`] first if some were no longer retained).
    pub fn subscribe(self: &Arc<Self>, from: Option<u64>) -> Subscription {
        self.subscribe_filtered(from, None)
    }

    /// Like [`EventLog::subscribe`], receiving only the events `filter` accepts (checked when an
    /// event is published, before anything is queued).
    pub fn subscribe_filtered(self: &Arc<Self>, from: Option<u64>, filter: Option<Filter>) -> Subscription {
        let mut state = self.state.lock().unwrap();
        let published = state.published_next();
        let start = from.unwrap_or(published).min(published);
        let id = state.next_subscriber;
        state.next_subscriber += 1;
        let mut queue =
            Queue { id, filter, from: start, entries: VecDeque::new(), bytes: 0, full_since: None, detached: false };
        let first_retained = state.tail.front().map_or(published, |e| e.seq);
        if start < first_retained {
            let count = first_retained - start;
            queue.entries.push_back(Entry::Skipped(Gap { first_seq: start, count, scope: GapScope::Vm }));
        }
        for event in state.tail.iter().filter(|e| e.seq >= start) {
            if queue.filter.as_ref().is_none_or(|f| f(&event.event)) {
                queue.bytes += event.event.weight();
                queue.entries.push_back(Entry::Event(Arc::clone(event)));
            }
        }
        state.queues.push(queue);
        Subscription { log: Arc::clone(self), id, start }
    }

    /// Published events with `seq >= from` still retained.
    pub fn replay(&self, from: u64) -> Vec<Arc<SequencedEvent>> {
        let state = self.state.lock().unwrap();
        state.tail.iter().filter(|e| e.seq >= from).cloned().collect()
    }

    /// Makes an event visible: the retained tail, then every queue that wants it.
    fn publish(&self, state: &mut State, event: Arc<SequencedEvent>) {
        let weight = event.event.weight();
        for queue in state.queues.iter_mut().filter(|q| event.seq >= q.from) {
            if queue.filter.as_ref().is_none_or(|f| f(&event.event)) {
                self.enqueue(queue, &event, weight);
            }
        }
        if self.limits.bytes > 0 {
            state.tail_bytes += weight;
            state.tail.push_back(event);
            while state.tail_bytes > self.limits.bytes {
                let Some(oldest) = state.tail.pop_front() else { break };
                state.tail_bytes -= oldest.event.weight();
            }
        }
    }

    fn enqueue(&self, queue: &mut Queue, event: &Arc<SequencedEvent>, weight: usize) {
        // An attached queue may overshoot by what was in flight when producers saw it full (the
        // unpersisted backlog, a read): producers wait for it, so nothing is dropped for a
        // subscriber that is reading. A detached one gets no more than its queue.
        let bound = if queue.detached {
            self.limits.queue_bytes
        } else {
            2 * self.limits.queue_bytes + self.limits.backlog_bytes
        };
        let small = event.event.payload_len() == 0 && queue.entries.len() < MAX_QUEUE_ENTRIES;
        if queue.bytes + weight <= bound || small {
            queue.bytes += weight;
            queue.entries.push_back(Entry::Event(Arc::clone(event)));
            return;
        }
        let scope = event.event.scope();
        if let Some(Entry::Skipped(gap)) = queue.entries.back_mut() {
            gap.count += 1;
            if gap.scope != scope {
                gap.scope = GapScope::Vm;
            }
        } else {
            queue.entries.push_back(Entry::Skipped(Gap { first_seq: event.seq, count: 1, scope }));
        }
    }
}

enum Blocked {
    No,
    Until(Instant),
    Indefinitely,
}

/// One reader of a VM's event stream, with its own queue. Dropping it removes the queue.
pub struct Subscription {
    log: Arc<EventLog>,
    id: u64,
    start: u64,
}

impl Subscription {
    /// The next event, a gap, or `None` once the VM's stream has ended and is drained.
    pub async fn next(&mut self) -> Option<Item> {
        let log = Arc::clone(&self.log);
        loop {
            let mut notified = pin!(log.published.notified());
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
        let log = &self.log;
        let mut state = log.state.lock().unwrap();
        let ended = state.closed && state.unpersisted.is_empty();
        let queue = state.queue(self.id)?;
        let Some(entry) = queue.entries.pop_front() else {
            return ended.then_some(None);
        };
        match entry {
            Entry::Event(event) => {
                let was_full = queue.bytes >= log.limits.queue_bytes;
                queue.bytes -= event.event.weight();
                if queue.bytes < log.limits.queue_bytes {
                    queue.full_since = None;
                }
                // (Room is announced on every crossing below the bound; producers recheck it
                // with the unpersisted backlog counted.)
                if queue.detached && queue.bytes <= log.limits.queue_bytes / 2 {
                    queue.detached = false;
                }
                let room = was_full && queue.bytes < log.limits.queue_bytes;
                drop(state);
                if room {
                    log.room.notify_waiters();
                }
                Some(Some(Item::Event(event)))
            }
            Entry::Skipped(gap) => Some(Some(Item::Skipped(gap))),
        }
    }

    /// The first sequence number this subscriber can receive: events before it were published
    /// before it subscribed.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Bytes waiting in this subscriber's queue.
    pub fn queued_bytes(&self) -> usize {
        self.log.state.lock().unwrap().queues.iter().find(|q| q.id == self.id).map_or(0, |q| q.bytes)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut state = self.log.state.lock().unwrap();
        state.queues.retain(|q| q.id != self.id);
        drop(state);
        self.log.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(n: usize) -> VmEvent {
        VmEvent::ProcessOutput { pid: 1, stream: OutputStream::Stdout, data: Bytes::from(vec![b'x'; n]) }
    }

    fn seq_of(item: Option<Item>) -> u64 {
        match item {
            Some(Item::Event(e)) => e.seq,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn subscribers_read_in_order_and_replay_from_a_cursor() {
        let log = EventLog::new(Retention::default());
        let mut live = log.subscribe(None);
        for i in 0..3 {
            log.push(VmEvent::ProcessExit { pid: i, exit_code: 0 });
        }
        for i in 0..3 {
            assert_eq!(seq_of(live.next().await), i);
        }
        let mut late = log.subscribe(Some(1));
        assert_eq!(seq_of(late.next().await), 1);
        log.close();
        assert_eq!(seq_of(late.next().await), 2);
        assert_eq!(late.next().await, None);
    }

    #[tokio::test]
    async fn without_subscribers_only_the_retention_is_kept() {
        let limits = Retention { bytes: 10_000, ..Retention::default() };
        let log = EventLog::new(limits);
        for _ in 0..100 {
            log.push(output(1000));
        }
        let kept = log.replay(0);
        assert!(kept.len() < 11, "kept {}", kept.len());
        assert_eq!(kept.last().unwrap().seq, 99);
        let mut late = log.subscribe(Some(0));
        let expected = Gap { first_seq: 0, count: 100 - kept.len() as u64, scope: GapScope::Vm };
        assert_eq!(late.next().await, Some(Item::Skipped(expected)));
    }

    #[tokio::test]
    async fn a_durable_log_publishes_only_what_was_persisted() {
        let log = EventLog::durable(Retention::default(), 40);
        let mut live = log.subscribe(None);
        assert_eq!(log.push(VmEvent::VmBooted), 40);
        log.push(VmEvent::ProcessExit { pid: 1, exit_code: 0 });
        assert!(live.poll_now().is_none(), "nothing is visible before it is persisted");
        let batch = log.take_unpersisted(1, usize::MAX).await.unwrap();
        assert_eq!(batch.iter().map(|e| e.seq).collect::<Vec<_>>(), [40]);
        log.persisted(40);
        assert_eq!(seq_of(live.next().await), 40);
        assert!(live.poll_now().is_none());
        let batch = log.take_unpersisted(10, usize::MAX).await.unwrap();
        assert_eq!(batch[0].seq, 41);
        log.close();
        log.persisted(41);
        assert_eq!(seq_of(live.next().await), 41);
        assert_eq!(live.next().await, None);
        assert!(log.take_unpersisted(10, usize::MAX).await.is_none());
    }

    #[tokio::test]
    async fn filters_apply_before_queueing() {
        let log = EventLog::new(Retention::default());
        let exits_only: Filter = Box::new(|e| matches!(e, VmEvent::ProcessExit { .. }));
        let mut exits = log.subscribe_filtered(None, Some(exits_only));
        log.push(output(1000));
        log.push(VmEvent::ProcessExit { pid: 1, exit_code: 0 });
        assert_eq!(exits.queued_bytes(), EVENT_OVERHEAD);
        assert_eq!(seq_of(exits.next().await), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_holds_producers_then_a_stalled_one_is_skipped_with_a_gap() {
        let limits = Retention { bytes: 0, queue_bytes: 10_000, stall_grace: Duration::from_secs(1), backlog_bytes: 0 };
        let log = EventLog::new(limits);
        let mut stalled = log.subscribe(None);
        let mut other = log.subscribe(None);
        for _ in 0..10 {
            log.reserve().await;
            log.push(output(1000));
        }
        // Full: the producer waits for the grace, then the stalled subscriber is detached.
        let started = Instant::now();
        log.reserve().await;
        assert!(started.elapsed() >= Duration::from_secs(1));
        // `other` reads along and misses nothing.
        for i in 0..10 {
            assert_eq!(seq_of(other.next().await), i);
        }
        for _ in 0..20 {
            log.reserve().await;
            log.push(output(1000));
            while let Some(Some(Item::Event(_))) = other.poll_now() {}
        }
        for i in 0..10 {
            assert_eq!(seq_of(stalled.next().await), i);
        }
        match stalled.next().await {
            Some(Item::Skipped(gap)) => {
                assert_eq!(gap.scope, GapScope::Process(1));
                // It reads again: attached again, it receives what comes next.
                log.push(VmEvent::ProcessExit { pid: 1, exit_code: 0 });
                let next = seq_of(stalled.next().await);
                assert_eq!(gap.first_seq + gap.count, next, "the gap is exactly what was not delivered");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_throttles_producers_and_loses_nothing() {
        let limits = Retention { bytes: 0, queue_bytes: 4_000, stall_grace: Duration::from_secs(1), backlog_bytes: 0 };
        let log = EventLog::new(limits);
        let mut slow = log.subscribe(None);
        let producer = {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                for _ in 0..200 {
                    log.reserve().await;
                    log.push(output(1000));
                }
                log.close();
            })
        };
        let mut expected = 0;
        while let Some(item) = slow.next().await {
            assert_eq!(seq_of(Some(item)), expected);
            expected += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(expected, 200);
        producer.await.unwrap();
    }
}
