//! The output pump of one process: reads its stdout and stderr pipes, delivers the output, and
//! publishes the exit only after all output the process wrote has been delivered.
//!
//! The pump always drains the pipes, whether or not anyone subscribes, so a process never
//! stalls on a full pipe. When init reports the exit, everything the process wrote is already in
//! the pipes; the pump reads until they are empty, then publishes the exit. Descendants that
//! inherited the pipes (a background job of a shell) may keep them open: their later output is
//! read and discarded until they close them, so they neither block nor die of SIGPIPE.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use crate::events::{EventLog, VmEvent};
use crate::process::{Kind, OutputChunk, ProcessRecord};
use crate::types::OutputStream;

/// Bytes read from a pipe at a time.
const READ_CHUNK: usize = 64 * 1024;
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
}

impl Pump {
    pub async fn run(self) {
        let Pump { record, events, stdout, stderr, mut init_exit, on_exit } = self;
        let mut streams = [
            Stream { pipe: stdout, kind: OutputStream::Stdout, open: true },
            Stream { pipe: stderr, kind: OutputStream::Stderr, open: true },
        ];
        let mut buffer = vec![0u8; READ_CHUNK];
        // Checked after every chunk: a writer as fast as the reader never leaves the pipe empty,
        // so "read until it would block" must also stop when the event stream is full.
        let has_room = || record.kind == Kind::Exec || events.has_room();
        let deliver = |stream: OutputStream, data: &[u8]| match record.kind {
            Kind::Spawned => {
                let data = Bytes::copy_from_slice(data);
                let seq = events.push(VmEvent::ProcessOutput { pid: record.pid, stream, data: data.clone() });
                record.log_output(OutputChunk { seq, stream, data });
            }
            Kind::Exec => record.capture(stream, data),
        };

        // Until init reports the exit: read whatever arrives, as long as the event stream has
        // room (see `EventLog::reserve`): a reader that is slow holds the process back, as a
        // pipe would. An exec's output goes to its own bounded capture instead.
        let mut room = record.kind == Kind::Exec;
        let code = loop {
            let [out, err] = &mut streams;
            tokio::select! {
                () = events.reserve(), if !room => room = true,
                ready = out.pipe.readable(), if out.open && room => {
                    if ready.is_err() { out.open = false; } else { read_available(out, &mut buffer, &deliver, &has_room, false); }
                    room = record.kind == Kind::Exec;
                }
                ready = err.pipe.readable(), if err.open && room => {
                    if ready.is_err() { err.open = false; } else { read_available(err, &mut buffer, &deliver, &has_room, false); }
                    room = record.kind == Kind::Exec;
                }
                code = &mut init_exit => break code.unwrap_or(KILLED_WITH_VM),
            }
        };
        // The process is gone: what it wrote is in the pipes (at most their capacity). Deliver
        // all of it, then the exit.
        for stream in &mut streams {
            read_available(stream, &mut buffer, &deliver, &|| true, true);
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
                read_available(stream, &mut buffer, &|_, _| {}, &|| true, false);
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
fn read_available(
    stream: &mut Stream,
    buffer: &mut [u8],
    deliver: &dyn Fn(OutputStream, &[u8]),
    more: &dyn Fn() -> bool,
    drain: bool,
) {
    use std::os::fd::AsRawFd;
    if !stream.open {
        return;
    }
    loop {
        let result = if drain {
            // SAFETY: reading into our own buffer from a descriptor the pipe owns.
            let n =
                unsafe { libc::read(stream.pipe.as_raw_fd(), buffer.as_mut_ptr() as *mut libc::c_void, buffer.len()) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        } else {
            stream.pipe.try_read(buffer)
        };
        match result {
            Ok(0) => {
                stream.open = false;
                return;
            }
            Ok(n) => {
                deliver(stream.kind, &buffer[..n]);
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
