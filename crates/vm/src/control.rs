//! Async I/O on a VM's control socket: one writer task and one reader task.
//!
//! Requests (with the descriptors they carry) go through a channel to the writer task, which
//! sends each message's fragments back to back and only then closes the host's copies of the
//! descriptors, so init's copies are the only ones left. The reader task reassembles events and
//! hands each to a handler; when the socket closes (init exited) it calls `on_close` once.
//! This module knows nothing about processes; [`crate::vm`] supplies the handler.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use agentvm_sandbox::protocol::{self, Event, Received, Request};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

/// A request and the descriptors to attach to it.
pub(crate) struct Outgoing {
    pub request: Request,
    pub fds: Vec<OwnedFd>,
}

/// Starts the writer and reader tasks on `socket` (which must be non-blocking).
pub(crate) fn start(
    socket: OwnedFd,
    mut handler: impl FnMut(Event, Vec<OwnedFd>) + Send + 'static,
    on_close: impl FnOnce() + Send + 'static,
) -> io::Result<mpsc::UnboundedSender<Outgoing>> {
    // SAFETY: the AsyncFd owns the OwnedFd, which stays open and unchanged until it is dropped.
    let socket = Arc::new(unsafe { AsyncFd::register(socket) }.map_err(io::Error::from)?);
    let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();

    let writer_socket = Arc::clone(&socket);
    tokio::spawn(async move {
        while let Some(Outgoing { request, fds }) = rx.recv().await {
            let Ok(datagrams) = protocol::encode(&request) else {
                tracing::error!("cannot encode a control request");
                continue;
            };
            let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
            for (i, datagram) in datagrams.iter().enumerate() {
                let attach: &[RawFd] = if i == 0 { &raw } else { &[] };
                if let Err(e) = send(&writer_socket, datagram, attach).await {
                    // Init is gone, or the channel is unusable: close it both ways so the reader
                    // (and init) see the end and every waiter fails cleanly.
                    tracing::debug!("control socket write failed: {e}");
                    let _ = nix::sys::socket::shutdown(
                        writer_socket.get_ref().as_raw_fd(),
                        nix::sys::socket::Shutdown::Both,
                    );
                    return;
                }
            }
            drop(fds);
        }
    });

    tokio::spawn(async move {
        let mut receiver = protocol::Receiver::new();
        loop {
            let Ok(mut guard) = socket.readable().await else { break };
            match guard.try_io(|fd| receiver.receive::<Event>(fd.get_ref().as_fd())) {
                Ok(Ok(Received::Message(event, fds))) => handler(event, fds),
                Ok(Ok(Received::Partial)) => {}
                Ok(Ok(Received::Closed)) => break,
                Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
                    tracing::error!("malformed message from a VM's init: {e}");
                }
                Ok(Err(_)) => break,
                Err(_would_block) => {}
            }
        }
        on_close();
    });
    Ok(tx)
}

async fn send(socket: &AsyncFd<OwnedFd>, datagram: &[u8], fds: &[RawFd]) -> io::Result<()> {
    loop {
        let mut guard = socket.writable().await?;
        match guard.try_io(|fd| protocol::send_datagram(fd.get_ref().as_fd(), datagram, fds).map_err(io::Error::from)) {
            Ok(result) => return result,
            Err(_would_block) => continue,
        }
    }
}
