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
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ServerConfig;

use crate::tls::{Refusal, Step};

/// Refused connections kept lingering at once; beyond this they are closed at once.
const MAX_LINGERING: usize = 1024;
/// How often lingering sockets are polled.
const POLL: Duration = Duration::from_millis(20);

#[derive(Clone)]
pub(crate) struct Closer {
    tx: SyncSender<Lingering>,
    linger: Duration,
}

/// A refused connection on its way out.
struct Lingering {
    sock: TcpStream,
    /// On a TLS listener: the handshake that must come before `BUSY`.
    tls: Option<Refusal>,
    until: Instant,
}

impl Closer {
    pub(crate) fn start(linger: Duration) -> Self {
        let (tx, rx) = sync_channel(MAX_LINGERING);
        let _ = std::thread::Builder::new().name("ferry-closer".into()).spawn(move || run(&rx));
        Self { tx, linger }
    }

    /// Writes `reply` without blocking, then closes the connection lingeringly. On a TLS
    /// listener (`tls`), the reply is sent inside TLS once the handshake is done, and the
    /// handshake is bounded by the same linger time.
    pub(crate) fn refuse(&self, mut stream: TcpStream, reply: &[u8], tls: Option<&Arc<ServerConfig>>) {
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let tls = match tls {
            Some(config) => match Refusal::new(config.clone(), reply) {
                Ok(refusal) => Some(refusal),
                Err(_) => return,
            },
            None => {
                let _ = stream.write(reply);
                let _ = stream.shutdown(Shutdown::Write);
                None
            }
        };
        let entry = Lingering { sock: stream, tls, until: Instant::now() + self.linger };
        if let Err(TrySendError::Full(s)) = self.tx.try_send(entry) {
            drop(s);
        }
    }
}

fn run(rx: &Receiver<Lingering>) {
    let mut lingering: Vec<Lingering> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let incoming = if lingering.is_empty() { rx.recv().ok() } else { rx.recv_timeout(POLL).ok() };
        if let Some(s) = incoming {
            lingering.push(s);
        } else if lingering.is_empty() {
            return; // The sender is gone: the server stopped.
        }
        let now = Instant::now();
        lingering.retain_mut(|l| {
            if now >= l.until {
                return false;
            }
            if let Some(refusal) = &mut l.tls {
                match refusal.step(&l.sock) {
                    Step::Pending => return true,
                    Step::Done => {
                        l.tls = None;
                        let _ = l.sock.shutdown(Shutdown::Write);
                    }
                }
            }
            loop {
                match l.sock.read(&mut buf) {
                    Ok(0) => return false,
                    Ok(_) => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                    Err(_) => return false,
                }
            }
        });
    }
}
