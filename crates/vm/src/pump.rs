//! The output pump of one process: reads its stdout and stderr pipes, delivers the output, and
//! publishes the exit only after all output the process wrote has been delivered.
//!
//! The pump always drains the pipes, whether or not anyone subscribes, so a process never
//! stalls on a full pipe. When init reports the exit, everything the process wrote is already in
//! the pipes; the pump reads until they are empty, then publishes the exit. Descendants that
//! inherited the pipes (a background job of a shell) may keep them open: their later output is
//! read and discarded until they close them, so they neither block nor die of SIGPIPE.
//!
//! **Bulk output without copies.** A stream whose pipe was found full (a read returned the
//! whole default 64 KiB) is *bulk*: it gets a [`BULK_PIPE_SIZE`] pipe (`F_SETPIPE_SZ`), so a
//! fast writer can run ahead of the reader, which takes it in large chunks (fewer, larger
//! events all the way to the clients); its reads go straight into a [`READ_BLOCK`]
//! ([`BytesMut`]) whose large reads become their events' bytes as they are (no copy). Other
//! reads are copied out of a small reused block, so a quiet process's few bytes never keep a
//! whole block alive in the replay logs.
//!
//! **Bulk output in large events.** A reader faster than its writer would take each write as
//! it comes (4 KiB events at a few GB/s are a million events a second through the log and the
//! sockets). So once a bulk stream has caught up with its writer (a short read), it rests for
//! [`REST`] before reading again, while the pipe fills: bulk output travels as events of up to
//! a block, at the cost of at most [`REST`] (a timer tick) of latency for a stream that once
//! filled its pipe. Other streams are read as soon as they are readable.

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::events::{EventLog, VmEvent};
use crate::process::{Kind, OutputChunk, ProcessRecord};
use crate::types::OutputStream;

/// Size of the block a bulk stream reads into: the most read at a time, so the largest output
/// event. Blocks this large come from glibc's heaps once it has raised its mmap threshold
/// (after the first such block is freed), where they fragment a little: 100 VMs that each
/// printed 3 MB and went to sleep left the server at ~41 MiB, against ~25 MiB with blocks kept
/// mapped (`M_MMAP_THRESHOLD` fixed), which costs a page fault per 4 KiB of output (~40% more
/// server CPU), and ~37 MiB with 120 KiB blocks (~15% more server CPU).
const READ_BLOCK: usize = 1 << 20;
/// A block with less room than this is replaced by a new one before reading.
const READ_MIN_ROOM: usize = 64 << 10;
/// A bulk stream's reads at least this large become their event's bytes without a copy. They
/// share the block with the reads before and after them (consecutive output, retained and
/// dropped together), so a block is pinned by at most the reads in it.
const SHARE_AT: usize = 64 << 10;
/// A pipe's default capacity: a read this large means the writer filled the pipe. Also the
/// size of the block of a stream that is not bulk (each of its reads is copied out, so the
/// block is reused).
const DEFAULT_PIPE_SIZE: usize = 64 << 10;
/// Capacity given to a pipe that a writer fills (the default `/proc/sys/fs/pipe-max-size`).
/// Pages are only allocated as output is buffered, so a quiet process costs nothing more.
const BULK_PIPE_SIZE: usize = 1 << 20;
/// How long a bulk stream that caught up with its writer waits before reading again (tokio's
/// timer rounds it up to its millisecond tick). A writer at pipe speed fills about
/// [`BULK_PIPE_SIZE`] in that time, read then in blocks.
const REST: Duration = Duration::from_micros(500);
/// Exit code reported when the VM ended before the process did (it was killed with the VM).
const KILLED_WITH_VM: i32 = 128 + libc::SIGKILL;

/// Called once a process's exit is published (to update the process table).
pub(crate) type OnExit = Box<dyn FnOnce(&Arc<ProcessRecord>) + Send>;

pub(crate) struct Pump {
    pub record: Arc<ProcessRecord>,
    pub events: Arc<EventLog>,
    pub stdout: pipe::Receiver,
    pub stderr: pipe::Receiver,
    pub init_exit: oneshot::Receiver<i32>,
    /// Called once the exit is published.
    pub on_exit: OnExit,
}

struct Stream {
    pipe: pipe::Receiver,
    kind: OutputStream,
    open: bool,
    /// Its pipe has been given [`BULK_PIPE_SIZE`] (or that was tried).
    grown: bool,
    /// Bytes the last read returned.
    last_read: usize,
    /// The block reads go into (see the module's doc).
    block: BytesMut,
    /// Not read before this instant (see [`REST`]).
    resting: Option<Instant>,
}

impl Stream {
    fn new(pipe: pipe::Receiver, kind: OutputStream) -> Stream {
        Stream { pipe, kind, open: true, grown: false, last_read: 0, block: BytesMut::new(), resting: None }
    }

    /// Whether to wait for the pipe's readiness now (open, and not resting).
    fn wants_read(&self) -> bool {
        self.open && self.resting.is_none()
    }

    /// After reading: a bulk stream whose last read was short caught up with its writer, and
    /// rests (see [`REST`]).
    fn rest_if_caught_up(&mut self) {
        if self.grown && self.open && self.last_read < DEFAULT_PIPE_SIZE {
            self.resting = Some(Instant::now() + REST);
        }
    }

    /// Gives the pipe [`BULK_PIPE_SIZE`] once its writer filled it. Failing (a kernel limit) is
    /// harmless: the pipe keeps its size.
    fn grow_if_full(&mut self, read: usize) {
        if !self.grown && read >= DEFAULT_PIPE_SIZE {
            self.grown = true;
            self.block = BytesMut::new();
            let size = BULK_PIPE_SIZE as libc::c_int;
            let _ = nix::fcntl::fcntl(self.pipe.as_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(size));
        }
    }
}

impl Pump {
    pub async fn run(self) {
        let Pump { record, events, stdout, stderr, mut init_exit, on_exit } = self;
        let mut streams = [Stream::new(stdout, OutputStream::Stdout), Stream::new(stderr, OutputStream::Stderr)];
        // Checked after every chunk: a writer as fast as the reader never leaves the pipe empty,
        // so "read until it would block" must also stop when the event stream is full.
        let has_room = || record.kind == Kind::Exec || events.has_room();
        let deliver = |stream: OutputStream, data: Bytes| match record.kind {
            Kind::Spawned => {
                let seq = events.push(VmEvent::ProcessOutput { pid: record.pid, stream, data: data.clone() });
                record.log_output(OutputChunk { seq, stream, data });
            }
            Kind::Exec => record.capture(stream, &data),
        };

        // Until init reports the exit: read whatever arrives, as long as the event stream has
        // room (see `EventLog::reserve`): a reader that is slow holds the process back, as a
        // pipe would. An exec's output goes to its own bounded capture instead.
        let mut room = record.kind == Kind::Exec;
        let code = loop {
            let [out, err] = &mut streams;
            let rest = out.resting.into_iter().chain(err.resting).min();
            tokio::select! {
                () = events.reserve(), if !room => room = true,
                () = tokio::time::sleep_until(rest.unwrap_or_else(Instant::now)), if rest.is_some() => {
                    out.resting = None;
                    err.resting = None;
                }
                ready = out.pipe.readable(), if out.wants_read() && room => {
                    if ready.is_err() { out.open = false; } else { read_available(out, &deliver, &has_room, false); }
                    out.rest_if_caught_up();
                    room = record.kind == Kind::Exec;
                }
                ready = err.pipe.readable(), if err.wants_read() && room => {
                    if ready.is_err() { err.open = false; } else { read_available(err, &deliver, &has_room, false); }
                    err.rest_if_caught_up();
                    room = record.kind == Kind::Exec;
                }
                code = &mut init_exit => break code.unwrap_or(KILLED_WITH_VM),
            }
        };
        // The process is gone: what it wrote is in the pipes (at most their capacity). Deliver
        // all of it, then the exit.
        for stream in &mut streams {
            read_available(stream, &deliver, &|| true, true);
        }
        // The event first: whoever waits for the exit (a stop announcing `vmShutdown`) then
        // knows the event is already in the stream.
        if record.kind == Kind::Spawned {
            events.push(VmEvent::ProcessExit { pid: record.pid, exit_code: code });
        }
        record.publish_exit(code);
        on_exit(&record);
        drop(record);

        // Discard output of descendants that kept the pipes open, until they close them.
        for stream in &mut streams {
            while stream.open {
                if stream.pipe.readable().await.is_err() {
                    break;
                }
                read_available(stream, &|_, _| {}, &|| true, false);
            }
        }
    }
}

/// Reads from `stream` until it would block or `more` says to stop, delivering each chunk;
/// marks it closed at end of file or on an error.
///
/// `drain` is for after the process exited: it asks the kernel directly (a non-blocking
/// `read(2)`) until the pipe is empty, because tokio's `try_read` answers `WouldBlock` from
/// cached readiness without looking.
fn read_available(stream: &mut Stream, deliver: &dyn Fn(OutputStream, Bytes), more: &dyn Fn() -> bool, drain: bool) {
    use std::os::fd::AsRawFd;
    if !stream.open {
        return;
    }
    loop {
        let buffer = &mut stream.block;
        buffer.clear();
        if buffer.capacity() < READ_MIN_ROOM {
            // The rest of the block is shared by events, or this is the first read: a new one.
            *buffer = BytesMut::with_capacity(if stream.grown { READ_BLOCK } else { DEFAULT_PIPE_SIZE });
        }
        let result = if drain {
            let room = buffer.spare_capacity_mut();
            // SAFETY: `read(2)` writes at most `room.len()` bytes into the block's spare
            // capacity, which we own; the descriptor is the pipe's own.
            let n = unsafe { libc::read(stream.pipe.as_raw_fd(), room.as_mut_ptr().cast(), room.len()) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                let n = n as usize;
                // SAFETY: the kernel initialized the first `n` bytes of the spare capacity.
                unsafe { buffer.set_len(n) };
                Ok(n)
            }
        } else {
            stream.pipe.try_read_buf(buffer)
        };
        match result {
            Ok(0) => {
                stream.open = false;
                return;
            }
            Ok(n) => {
                stream.last_read = n;
                let data = if stream.grown && n >= SHARE_AT {
                    stream.block.split().freeze()
                } else {
                    Bytes::copy_from_slice(&stream.block)
                };
                stream.grow_if_full(n);
                deliver(stream.kind, data);
                if !more() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                stream.open = false;
                return;
            }
        }
    }
}
