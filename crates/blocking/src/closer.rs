//! Lingering closes for connections refused at the door (`[ERR-9]`), on one thread.
//!
//! A refused client may already have sent its hello; closing a socket with unread input makes TCP
//! send a reset that can destroy the `BUSY` reply before the client reads it. So the reply is
//! written, the sending side shut, and the socket read and drained until the client closes or
//! the linger time passes. One thread serves every refused connection, polling them in turn, and
//! at most [`MAX_LINGERING`] at once: a flood of refused clients costs neither threads nor
//! unbounded memory.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

/// Refused connections kept lingering at once; beyond this they are closed at once.
const MAX_LINGERING: usize = 1024;
/// How often lingering sockets are polled.
const POLL: Duration = Duration::from_millis(20);

pub(crate) struct Closer {
    tx: SyncSender<TcpStream>,
}

impl Closer {
    pub(crate) fn start(linger: Duration) -> Self {
        let (tx, rx) = sync_channel(MAX_LINGERING);
        let _ = std::thread::Builder::new().name("ferry-closer".into()).spawn(move || run(&rx, linger));
        Self { tx }
    }

    /// Writes `reply` without blocking, then closes the connection lingeringly.
    pub(crate) fn refuse(&self, mut stream: TcpStream, reply: &[u8]) {
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let _ = stream.write(reply);
        let _ = stream.shutdown(Shutdown::Write);
        if let Err(TrySendError::Full(s)) = self.tx.try_send(stream) {
            drop(s);
        }
    }
}

fn run(rx: &Receiver<TcpStream>, linger: Duration) {
    let mut lingering: Vec<(TcpStream, Instant)> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let incoming = if lingering.is_empty() { rx.recv().ok() } else { rx.recv_timeout(POLL).ok() };
        if let Some(s) = incoming {
            lingering.push((s, Instant::now() + linger));
        } else if lingering.is_empty() {
            return; // The sender is gone: the server stopped.
        }
        let now = Instant::now();
        lingering.retain_mut(|(s, until)| {
            if now >= *until {
                return false;
            }
            loop {
                match s.read(&mut buf) {
                    Ok(0) => return false,
                    Ok(_) => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                    Err(_) => return false,
                }
            }
        });
    }
}
