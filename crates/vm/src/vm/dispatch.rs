//! Requests to init and init's messages matched back to them: each request waits in the
//! pending table under its id until the reader task hands init's answer (a started process, a
//! failure, a process listing) to its caller, or init goes away and every waiter fails.

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use agentvm_sandbox::protocol::{Event, Request, SpawnError};

use crate::control::Outgoing;
use crate::error::{Result, VmError};
use crate::process::{Kind, OutputLimits, ProcessRecord};
use crate::pump::Pump;
use crate::shell;

use super::{Pending, Shared, Vm};

impl Vm {
    /// Records a request that awaits init's answer. Refused once init is gone: the check and
    /// the insertion happen under the lock [`Shared::init_gone`] takes to fail everything.
    pub(super) fn register(&self, pending: Pending) -> Result<u64> {
        let shared = &self.inner.shared;
        let mut table = shared.pending.lock().unwrap();
        if !shared.alive.load(Ordering::Acquire) {
            return Err(self.stopped_error());
        }
        let id = shared.next_request.fetch_add(1, Ordering::Relaxed);
        table.insert(id, pending);
        Ok(id)
    }

    pub(super) fn send(&self, request: Request, fds: Vec<OwnedFd>, id: u64) -> Result<()> {
        if self.inner.outgoing.send(Outgoing { request, fds }).is_err() {
            self.inner.shared.pending.lock().unwrap().remove(&id);
            return Err(self.stopped_error());
        }
        Ok(())
    }
}

impl Shared {
    /// Handles one event from init (runs on the reader task).
    pub(super) fn handle(self: &Arc<Self>, event: Event, fds: Vec<OwnedFd>) {
        match event {
            Event::Ready => self.answer_ready(Ok(())),
            Event::SetupFailed { message } => self.answer_ready(Err(message)),
            Event::Spawned { id, pid, start_time_ms } => {
                let pending = self.pending.lock().unwrap().remove(&id);
                let (kind, launch, stdin, stdout, stderr, capture_limit, keep_tail, reply) = match pending {
                    Some(Pending::Spawn { kind, launch, stdin, stdout, stderr, capture_limit, keep_tail, reply }) => {
                        (kind, launch, stdin, stdout, stderr, capture_limit, keep_tail, reply)
                    }
                    Some(Pending::Shell { shell_id, reply }) => {
                        let Some(master) = fds.into_iter().next() else {
                            let _ = reply.send(Err(VmError::SpawnFailed(SpawnError::NoTerminal)));
                            return;
                        };
                        let started = shell::start(
                            &self.shells,
                            &self.events,
                            shell_id,
                            pid,
                            master,
                            self.process_log_bytes,
                            &self.replay_budget,
                        )
                        .map_err(|e| VmError::io("watching the terminal", e));
                        let _ = reply.send(started);
                        return;
                    }
                    _ => return,
                };
                let limits = OutputLimits {
                    replay_bytes: self.process_log_bytes,
                    capture_bytes: capture_limit,
                    budget: Arc::clone(&self.replay_budget),
                };
                let (record, init_exit) = ProcessRecord::new(pid, start_time_ms, launch, kind, stdin, &limits);
                if keep_tail {
                    record.keep_capture_tail();
                }
                self.processes.lock().unwrap().insert(Arc::clone(&record));
                let table = Arc::clone(self);
                tokio::spawn(
                    Pump {
                        record: Arc::clone(&record),
                        events: Arc::clone(&self.events),
                        stdout,
                        stderr,
                        init_exit,
                        on_exit: Box::new(move |record| {
                            // No descriptor outlives the process: its stdin closes now.
                            record.release_stdin();
                            let mut processes = table.processes.lock().unwrap();
                            match record.kind {
                                Kind::Spawned => processes.retire(record),
                                Kind::Exec => processes.remove(record),
                            }
                        }),
                    }
                    .run(),
                );
                if reply.send(Ok(Arc::clone(&record))).is_err() && kind == Kind::Exec {
                    // Nobody waits for this command any more.
                    if let Some(outgoing) = self.outgoing.get() {
                        let _ = outgoing.send(Outgoing {
                            request: Request::Signal { pid, signal: libc::SIGKILL },
                            fds: Vec::new(),
                        });
                    }
                }
            }
            Event::SpawnFailed { id, error } => match self.pending.lock().unwrap().remove(&id) {
                Some(Pending::Spawn { reply, .. }) => {
                    let _ = reply.send(Err(VmError::SpawnFailed(error)));
                }
                Some(Pending::Shell { reply, .. }) => {
                    let _ = reply.send(Err(VmError::SpawnFailed(error)));
                }
                _ => {}
            },
            Event::Exited { pid, code } => {
                if let Some(record) = self.processes.lock().unwrap().get(pid) {
                    record.report_exit(code);
                } else if let Some(shell) = self.shells.lock().unwrap().by_pid(pid) {
                    shell.report_exit(code);
                }
            }
            Event::Socket { id, result } => {
                if let Some(Pending::Socket { reply }) = self.pending.lock().unwrap().remove(&id) {
                    let answer = match (result, fds.into_iter().next()) {
                        (Ok(()), Some(socket)) => Ok(socket),
                        (Ok(()), None) => {
                            Err(VmError::io("making a socket in the VM", std::io::Error::other("init sent no socket")))
                        }
                        (Err(error), _) => Err(VmError::Socket(error)),
                    };
                    let _ = reply.send(answer);
                }
            }
            Event::Processes { id, entries, last } => {
                let mut pending = self.pending.lock().unwrap();
                if let Some(Pending::List { entries: collected, .. }) = pending.get_mut(&id) {
                    collected.extend(entries);
                }
                if last {
                    if let Some(Pending::List { entries, reply }) = pending.remove(&id) {
                        let _ = reply.send(entries);
                    }
                }
            }
        }
    }

    fn answer_ready(&self, result: Result<(), String>) {
        if let Some(tx) = self.ready.lock().unwrap().take() {
            let _ = tx.send(result);
        }
    }

    /// The control socket closed: init and every process of the VM are gone.
    pub(super) fn init_gone(&self) {
        {
            let mut pending = self.pending.lock().unwrap();
            self.alive.store(false, Ordering::Release);
            pending.clear();
        }
        self.stopped.send_replace(true);
        self.ready.lock().unwrap().take();
        for record in self.processes.lock().unwrap().all() {
            record.abandon();
        }
        for shell in self.shells.lock().unwrap().all() {
            shell.abandon();
        }
    }
}
