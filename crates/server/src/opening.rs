//! A connection's opening window: what makes "subscribe first, then act" lossless.
//!
//! The documented pattern is `const conn = handle.connect(); conn.on("processOutput", …);
//! await handle.spawn(…)`. With the real client, `connect()` returns at once, the subscription
//! frames leave only once the WebSocket is open (tens of milliseconds later), and the `spawn`
//! goes out over HTTP immediately, and may even reach the server before the WebSocket upgrade
//! request does. A short command can be over before its subscription exists.
//!
//! So, for its first [`WINDOW`], a connection keeps the events it did not forward (their names
//! were not subscribed yet), starting with those of the [`LOOKBACK`] before its upgrade request
//! arrived (read back from the durable log, since an HTTP action may overtake the upgrade). When
//! a subscription arrives, the kept events of that name are delivered first, in order, then the
//! live ones: each exactly once, since an event is either forwarded when the connection reads
//! it or kept, never both. What is kept is bounded ([`KEPT_BYTES`]); if kept events had to be
//! dropped, the subscription that would have received them gets a `streamError` saying how
//! many, from which sequence number, instead. After the window, nothing is kept and a
//! subscription delivers events from then on.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use agentvm_actors::events;
use agentvm_protocol::Value;
use agentvm_store::StoredEvent;
use agentvm_vm::{Gap, GapScope, SequencedEvent};
use tokio::time::Instant;

/// How long before its upgrade request arrived a connection's window reaches back.
pub const LOOKBACK: Duration = Duration::from_secs(1);
/// How long after its upgrade request a connection keeps unsubscribed events.
pub const WINDOW: Duration = Duration::from_secs(3);
/// Most event bytes one connection keeps in its window.
pub const KEPT_BYTES: usize = 8 << 20;
/// Most events read back from the log for the lookback.
pub const LOOKBACK_EVENTS: usize = 2000;

/// An event kept for a subscription that may still come.
enum Kept {
    Live(Arc<SequencedEvent>),
    Logged(StoredEvent),
}

impl Kept {
    fn seq(&self) -> u64 {
        match self {
            Kept::Live(event) => event.seq,
            Kept::Logged(event) => event.seq,
        }
    }

    fn name(&self) -> &str {
        match self {
            Kept::Live(event) => events::name(&event.event),
            Kept::Logged(event) => &event.name,
        }
    }

    fn weight(&self) -> usize {
        64 + match self {
            Kept::Live(event) => event.event.payload_len(),
            Kept::Logged(event) => event.fields.len() + event.data.as_ref().map_or(0, |d| d.len()),
        }
    }

    fn into_wire(self) -> (String, Value) {
        match self {
            Kept::Live(event) => {
                let (name, payload) = events::to_wire(&event.event);
                (name.to_string(), payload)
            }
            Kept::Logged(event) => {
                let payload = events::stored_payload(&event);
                (event.name, payload)
            }
        }
    }
}

/// The events a connection keeps during its window.
pub struct Opening {
    kept: VecDeque<Kept>,
    bytes: usize,
    /// Kept events dropped for room, by name: (first sequence number, count).
    dropped: HashMap<String, (u64, u64)>,
    until: Instant,
    open: bool,
}

impl Opening {
    /// A window for a connection whose upgrade request arrived at `requested_at`, starting
    /// with `logged`: the events of the lookback, read back from the log (oldest first).
    pub fn new(requested_at: Instant, logged: Vec<StoredEvent>) -> Opening {
        let mut opening = Opening {
            kept: VecDeque::new(),
            bytes: 0,
            dropped: HashMap::new(),
            until: requested_at + WINDOW,
            open: true,
        };
        for event in logged {
            opening.keep(Kept::Logged(event));
        }
        opening
    }

    /// Whether the window is still open (unsubscribed events are kept).
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// When the window closes (`None` once closed).
    pub fn closes_at(&self) -> Option<Instant> {
        self.open.then_some(self.until)
    }

    /// The window is over: forget what was kept.
    pub fn close(&mut self) {
        self.open = false;
        self.kept.clear();
        self.dropped.clear();
        self.bytes = 0;
    }

    /// Keeps a live event whose name is not subscribed (yet).
    pub fn hold(&mut self, event: Arc<SequencedEvent>) {
        if self.open {
            self.keep(Kept::Live(event));
        }
    }

    fn keep(&mut self, event: Kept) {
        self.bytes += event.weight();
        self.kept.push_back(event);
        while self.bytes > KEPT_BYTES {
            let Some(oldest) = self.kept.pop_front() else { break };
            self.bytes -= oldest.weight();
            let entry = self.dropped.entry(oldest.name().to_string()).or_insert((oldest.seq(), 0));
            entry.1 += 1;
        }
    }

    /// What the names just subscribed to should receive now: for each name whose kept events
    /// were partly dropped, a `streamError`; then the kept events of those names, in order.
    pub fn release(&mut self, names: &HashSet<String>) -> Vec<(String, Value)> {
        let mut frames = Vec::new();
        for name in names {
            if let Some((first_seq, count)) = self.dropped.remove(name) {
                let (error, payload) = events::gap_to_wire(&Gap { first_seq, count, scope: GapScope::Vm });
                frames.push((error.to_string(), payload));
            }
        }
        let kept = std::mem::take(&mut self.kept);
        for event in kept {
            if names.contains(event.name()) {
                self.bytes -= event.weight();
                frames.push(event.into_wire());
            } else {
                self.kept.push_back(event);
            }
        }
        frames
    }
}
