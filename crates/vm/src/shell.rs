//! Interactive shells on a real PTY.
//!
//! Init opens the terminal in the VM's own devpts (so `tty` inside prints the VM's
//! `/dev/pts/N`), makes its slave the shell's controlling terminal, and hands the master to the
//! host, which keeps it: writes go to the terminal's input, resizes set the window size (the
//! kernel sends SIGWINCH to the foreground job), and everything the terminal shows becomes
//! `shellData` events and a bounded replay log. When the shell exits, its last output is
//! delivered, then `shellExit`, then the master is closed, which hangs the terminal up for
//! anything still attached to it, as when a terminal window closes.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::io::unix::AsyncFd;
use tokio::sync::{oneshot, watch};

use crate::error::{Result, VmError};
use crate::events::{EventLog, VmEvent};
use crate::replay_log::{Budget, Chunk, ReplayLog};

/// Default terminal size.
pub const DEFAULT_COLS: u16 = 80;
pub const DEFAULT_ROWS: u16 = 24;
/// Exited shells remembered (so late writes get "has exited" rather than "not found").
pub const EXITED_SHELL_RETENTION: usize = 256;
/// How long `closeShell` waits after SIGHUP before it kills what is left of the session.
pub const CLOSE_GRACE: Duration = Duration::from_millis(500);
/// After the shell exits, how long to wait for terminal output still in flight in the kernel.
const FINAL_OUTPUT_WAIT: Duration = Duration::from_millis(250);
const READ_CHUNK: usize = 64 * 1024;

/// Options of [`crate::Vm::open_shell`] (shared with the client).
pub use agentvm_types::ShellOptions;

/// A chunk of terminal output with the sequence number of its `shellData` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShellChunk {
    pub seq: u64,
    pub data: Bytes,
}

impl Chunk for ShellChunk {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn bytes(&self) -> usize {
        self.data.len()
    }
}

pub(crate) struct ShellRecord {
    pub id: String,
    pub pid: i32,
    /// The terminal's master; `None` once the shell exited and the terminal was hung up.
    master: Mutex<Option<Arc<AsyncFd<OwnedFd>>>>,
    /// Serializes writers so one write's bytes are never interleaved with another's.
    write_lock: tokio::sync::Mutex<()>,
    exit: watch::Sender<Option<i32>>,
    init_exit: Mutex<Option<oneshot::Sender<i32>>>,
    log: Mutex<ReplayLog<ShellChunk>>,
}

impl ShellRecord {
    pub fn exit_code(&self) -> Option<i32> {
        *self.exit.borrow()
    }

    pub fn report_exit(&self, code: i32) {
        if let Some(tx) = self.init_exit.lock().unwrap().take() {
            let _ = tx.send(code);
        }
    }

    pub fn abandon(&self) {
        self.init_exit.lock().unwrap().take();
    }

    pub async fn wait(&self) -> i32 {
        let mut rx = self.exit.subscribe();
        let code = *rx.wait_for(Option::is_some).await.expect("the record owns the sender");
        code.expect("waited for Some")
    }

    fn exited_error(&self) -> VmError {
        VmError::InvalidState(format!("Shell {} has exited", self.id))
    }

    fn master(&self) -> Result<Arc<AsyncFd<OwnedFd>>> {
        self.master.lock().unwrap().clone().ok_or_else(|| self.exited_error())
    }

    /// Writes all of `data` to the terminal's input.
    pub async fn write(&self, data: &[u8]) -> Result<()> {
        let _turn = self.write_lock.lock().await;
        let master = self.master()?;
        let mut written = 0;
        while written < data.len() {
            if self.exit_code().is_some() {
                return Err(self.exited_error());
            }
            let mut guard = tokio::select! {
                ready = master.writable() => ready.map_err(|e| VmError::io("terminal", e))?,
                _ = self.wait() => return Err(self.exited_error()),
            };
            match guard.try_io(|fd| {
                // SAFETY: writing from our buffer to the terminal master we own.
                let n = unsafe { libc::write(fd.as_raw_fd(), data[written..].as_ptr().cast(), data.len() - written) };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }) {
                Ok(Ok(n)) => written += n,
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Err(self.exited_error()),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(VmError::io(format!("writing to {}", self.id), e)),
                Err(_would_block) => {}
            }
        }
        Ok(())
    }

    pub fn resize(&self, cols: u16, rows: u16) -> Result<()> {
        if self.exit_code().is_some() {
            return Err(self.exited_error());
        }
        let master = self.master()?;
        let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ reads one winsize; the kernel signals the foreground job.
        let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        if r < 0 {
            return Err(VmError::io(format!("resizing {}", self.id), std::io::Error::last_os_error()));
        }
        Ok(())
    }

    pub fn output_since(&self, after: Option<u64>) -> Vec<ShellChunk> {
        self.log.lock().unwrap().since(after)
    }
}

/// The shells of one VM.
#[derive(Default)]
pub(crate) struct ShellTable {
    by_id: HashMap<String, Arc<ShellRecord>>,
    by_pid: HashMap<i32, Arc<ShellRecord>>,
    exited: VecDeque<Arc<ShellRecord>>,
    next: AtomicU64,
}

impl ShellTable {
    /// The next shell id: `shell-1`, `shell-2`... (ids are never reused within a VM's life).
    pub fn next_id(&self) -> String {
        format!("shell-{}", self.next.fetch_add(1, Ordering::Relaxed) + 1)
    }

    pub fn get(&self, id: &str) -> Option<Arc<ShellRecord>> {
        self.by_id.get(id).cloned()
    }

    pub fn by_pid(&self, pid: i32) -> Option<Arc<ShellRecord>> {
        self.by_pid.get(&pid).cloned()
    }

    pub fn all(&self) -> Vec<Arc<ShellRecord>> {
        self.by_id.values().cloned().collect()
    }

    /// Ids of shells that are still running.
    pub fn open_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> =
            self.by_id.values().filter(|s| s.exit_code().is_none()).map(|s| s.id.clone()).collect();
        ids.sort();
        ids
    }

    fn insert(&mut self, record: Arc<ShellRecord>) {
        self.by_pid.insert(record.pid, Arc::clone(&record));
        self.by_id.insert(record.id.clone(), record);
    }

    fn retire(&mut self, record: &Arc<ShellRecord>) {
        if self.by_pid.get(&record.pid).is_some_and(|r| Arc::ptr_eq(r, record)) {
            self.by_pid.remove(&record.pid);
        }
        self.exited.push_back(Arc::clone(record));
        while self.exited.len() > EXITED_SHELL_RETENTION {
            let old = self.exited.pop_front().expect("non-empty");
            self.by_id.remove(&old.id);
        }
    }
}

/// Registers a shell whose process init just started and starts its output pump.
pub(crate) fn start(
    table: &Arc<Mutex<ShellTable>>,
    events: &Arc<EventLog>,
    id: String,
    pid: i32,
    master: OwnedFd,
    log_limit: usize,
    budget: &Arc<Budget>,
) -> std::io::Result<Arc<ShellRecord>> {
    nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))?;
    // SAFETY: the AsyncFd owns the OwnedFd, which stays open and unchanged until dropped.
    let master = Arc::new(unsafe { AsyncFd::register(master) }.map_err(std::io::Error::from)?);
    let (exit_tx, init_exit) = oneshot::channel();
    let record = Arc::new(ShellRecord {
        id,
        pid,
        master: Mutex::new(Some(master)),
        write_lock: tokio::sync::Mutex::new(()),
        exit: watch::Sender::new(None),
        init_exit: Mutex::new(Some(exit_tx)),
        log: Mutex::new(ReplayLog::with_budget(log_limit, Arc::clone(budget))),
    });
    table.lock().unwrap().insert(Arc::clone(&record));
    tokio::spawn(pump(Arc::clone(&record), Arc::clone(events), Arc::clone(table), init_exit));
    Ok(record)
}

/// Reads the terminal until the shell exits, then its last output, then publishes the exit.
async fn pump(
    record: Arc<ShellRecord>,
    events: Arc<EventLog>,
    table: Arc<Mutex<ShellTable>>,
    mut init_exit: oneshot::Receiver<i32>,
) {
    let master = record.master().expect("a new shell has its terminal");
    let mut buffer = vec![0u8; READ_CHUNK];
    let deliver = |data: &[u8]| {
        let data = Bytes::copy_from_slice(data);
        let seq = events.push(VmEvent::ShellData { shell_id: record.id.clone(), data: data.clone() });
        record.log.lock().unwrap().push(ShellChunk { seq, data });
    };
    let mut open = true;
    // Room for more output in the event stream (see `EventLog::reserve`): a reader that is slow
    // holds the terminal back, as a slow terminal would.
    let mut room = false;
    let code = loop {
        tokio::select! {
            () = events.reserve(), if open && !room => room = true,
            ready = master.readable(), if open && room => match ready {
                Ok(mut guard) => match guard.try_io(|fd| read(fd.as_raw_fd(), &mut buffer)) {
                    Ok(Ok(0)) | Ok(Err(_)) => open = false,
                    Ok(Ok(n)) => {
                        deliver(&buffer[..n]);
                        room = false;
                    }
                    Err(_would_block) => {}
                },
                Err(_) => open = false,
            },
            code = &mut init_exit => break code.unwrap_or(128 + libc::SIGKILL),
        }
    };
    // The shell is gone. Its last output may still be on its way through the terminal: read
    // until the terminal reports that no writer is left (EIO), or until output stops arriving.
    while open {
        match tokio::time::timeout(FINAL_OUTPUT_WAIT, master.readable()).await {
            Ok(Ok(mut guard)) => match guard.try_io(|fd| read(fd.as_raw_fd(), &mut buffer)) {
                Ok(Ok(0)) | Ok(Err(_)) => open = false,
                Ok(Ok(n)) => deliver(&buffer[..n]),
                Err(_would_block) => {}
            },
            _ => break,
        }
    }
    // The event first: whoever waits for the exit then knows it is already in the stream.
    events.push(VmEvent::ShellExit { shell_id: record.id.clone(), exit_code: code });
    record.exit.send_replace(Some(code));
    table.lock().unwrap().retire(&record);
    // Hang the terminal up (as when a terminal window closes): whatever still has it open gets
    // SIGHUP. The record stays for late callers, who get "has exited".
    record.master.lock().unwrap().take();
    drop(master);
}

fn read(fd: i32, buffer: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: reading into our own buffer.
    let n = unsafe { libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len()) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Checks a terminal size from a client.
pub(crate) fn validate_size(cols: u16, rows: u16) -> Result<()> {
    if cols == 0 || rows == 0 {
        return Err(VmError::InvalidArgument(format!("terminal size must be at least 1x1, got {cols}x{rows}")));
    }
    Ok(())
}
