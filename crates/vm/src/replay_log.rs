//! A bounded log of recent output chunks with sequence numbers, kept per process and per shell
//! so that a client that attaches late can redraw recent output from a cursor.
//!
//! Each log keeps at most its own limit (the newest chunks), and all the logs of one VM share a
//! [`Budget`], so that a VM with hundreds of processes cannot make the server hold hundreds of
//! MiB: once the budget is used up, a log makes room by dropping its own oldest chunks, and a
//! log with nothing to drop keeps no new chunk (the output is still delivered as events, only
//! not kept for replay).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Replay bytes all the processes and shells of one VM keep together.
pub const REPLAY_BYTES_PER_VM: usize = 16 << 20;

/// Bytes held by all the replay logs of one VM, and their cap.
#[derive(Debug)]
pub(crate) struct Budget {
    used: AtomicUsize,
    limit: usize,
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget { used: AtomicUsize::new(0), limit })
    }

    #[cfg(test)]
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// A chunk that knows its sequence number and size.
pub(crate) trait Chunk: Clone {
    fn seq(&self) -> u64;
    fn bytes(&self) -> usize;
}

/// The most recent chunks, at most `limit` bytes of them (oldest dropped first).
#[derive(Debug)]
pub(crate) struct ReplayLog<T: Chunk> {
    chunks: VecDeque<T>,
    bytes: usize,
    limit: usize,
    budget: Option<Arc<Budget>>,
}

impl<T: Chunk> ReplayLog<T> {
    /// A log that counts against no budget (for tests).
    #[cfg(test)]
    pub fn new(limit: usize) -> Self {
        ReplayLog { chunks: VecDeque::new(), bytes: 0, limit, budget: None }
    }

    /// A log that also counts against its VM's `budget`.
    pub fn with_budget(limit: usize, budget: Arc<Budget>) -> Self {
        ReplayLog { chunks: VecDeque::new(), bytes: 0, limit, budget: Some(budget) }
    }

    pub fn push(&mut self, chunk: T) {
        let size = chunk.bytes();
        self.bytes += size;
        if let Some(budget) = &self.budget {
            budget.used.fetch_add(size, Ordering::AcqRel);
        }
        self.chunks.push_back(chunk);
        self.evict();
    }

    /// Keeps at most `limit` bytes from now on (an exited process needs less).
    pub fn shrink(&mut self, limit: usize) {
        self.limit = self.limit.min(limit);
        self.evict();
    }

    /// Drops the oldest chunks while over this log's limit or while the VM's budget is over.
    fn evict(&mut self) {
        let over_budget =
            |b: &Option<Arc<Budget>>| b.as_ref().is_some_and(|b| b.used.load(Ordering::Acquire) > b.limit);
        while self.bytes > self.limit || over_budget(&self.budget) {
            let Some(old) = self.chunks.pop_front() else { break };
            self.bytes -= old.bytes();
            if let Some(budget) = &self.budget {
                budget.used.fetch_sub(old.bytes(), Ordering::AcqRel);
            }
        }
    }

    /// Chunks with a sequence number above `after` (all retained ones if `None`).
    pub fn since(&self, after: Option<u64>) -> Vec<T> {
        self.chunks.iter().filter(|c| after.is_none_or(|a| c.seq() > a)).cloned().collect()
    }
}

impl<T: Chunk> Drop for ReplayLog<T> {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct C(u64, usize);
    impl Chunk for C {
        fn seq(&self) -> u64 {
            self.0
        }
        fn bytes(&self) -> usize {
            self.1
        }
    }

    #[test]
    fn drops_oldest_beyond_its_limit_and_answers_from_a_cursor() {
        let mut log = ReplayLog::new(10);
        for seq in 0..5 {
            log.push(C(seq, 4));
        }
        assert_eq!(log.since(None), [C(3, 4), C(4, 4)]);
        assert_eq!(log.since(Some(3)), [C(4, 4)]);
    }

    #[test]
    fn logs_of_one_vm_share_a_budget() {
        let budget = Budget::new(10);
        let mut a = ReplayLog::with_budget(8, Arc::clone(&budget));
        let mut b = ReplayLog::with_budget(8, Arc::clone(&budget));
        for seq in 0..2 {
            a.push(C(seq, 4));
        }
        assert_eq!(budget.used(), 8);
        // b has nothing to drop: its chunk is not kept.
        b.push(C(10, 4));
        assert_eq!((b.since(None), budget.used()), (vec![], 8));
        // a makes room from its own oldest.
        a.push(C(2, 4));
        assert_eq!((a.since(None), budget.used()), (vec![C(1, 4), C(2, 4)], 8));
        a.shrink(4);
        assert_eq!((a.since(None), budget.used()), (vec![C(2, 4)], 4));
        b.push(C(11, 4));
        assert_eq!(budget.used(), 8);
        drop(a);
        drop(b);
        assert_eq!(budget.used(), 0);
    }
}
