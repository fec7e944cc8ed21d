//! A bounded log of recent output chunks with sequence numbers, kept per process and per shell
//! so that a client that attaches late can redraw recent output from a cursor.

use std::collections::VecDeque;

/// A chunk that knows its sequence number and size.
pub(crate) trait Chunk: Clone {
    fn seq(&self) -> u64;
    fn bytes(&self) -> usize;
}

/// The most recent chunks, at most `limit` bytes of them (oldest dropped first).
#[derive(Debug)]
pub(crate) struct ReplayLog<T> {
    chunks: VecDeque<T>,
    bytes: usize,
    limit: usize,
}

impl<T: Chunk> ReplayLog<T> {
    pub fn new(limit: usize) -> Self {
        ReplayLog { chunks: VecDeque::new(), bytes: 0, limit }
    }

    pub fn push(&mut self, chunk: T) {
        self.bytes += chunk.bytes();
        self.chunks.push_back(chunk);
        while self.bytes > self.limit {
            let Some(old) = self.chunks.pop_front() else { break };
            self.bytes -= old.bytes();
        }
    }

    /// Chunks with a sequence number above `after` (all retained ones if `None`).
    pub fn since(&self, after: Option<u64>) -> Vec<T> {
        self.chunks.iter().filter(|c| after.is_none_or(|a| c.seq() > a)).cloned().collect()
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
}
