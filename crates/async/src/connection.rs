//! One client connection as a task: the same loop as the blocking engine's, with awaits.

use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_core::{Server, Session};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tracing::{debug, info, Instrument};

use crate::body;
use crate::IpSlot;

/// Socket reads go into a buffer of this size, taken only once the socket is readable.
const READ_BUF: usize = 64 * 1024;

/// A served connection and what it holds until it ends.
pub(crate) struct Conn {
    pub(crate) server: Arc<Server>,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) force: watch::Receiver<bool>,
    /// Dropped when the connection ends: the drain waits for every clone.
    pub(crate) _drain: mpsc::Sender<()>,
    pub(crate) _permits: (OwnedSemaphorePermit, IpSlot, OwnedSemaphorePermit),
}

enum Ending {
    ServerClosed,
    PeerClosed,
}

impl Conn {
    pub(crate) async fn serve(mut self, stream: TcpStream, peer: SocketAddr) {
        let session = Session::new(self.server.clone(), peer, Instant::now());
        let span = session.span().clone();
        async move {
            let mut force = self.force.clone();
            let result = tokio::select! {
                r = self.run(&stream, session) => r,
                _ = force.wait_for(|f| *f) => {
                    info!("grace period over: closed");
                    return;
                }
            };
            match result {
                Ok(Ending::ServerClosed) => linger_close(stream, self.server.settings.linger).await,
                Ok(Ending::PeerClosed) => {}
                Err(e) => debug!(error = %e, "connection dropped"),
            }
        }
        .instrument(span)
        .await;
    }

    async fn run(&mut self, stream: &TcpStream, session: Session) -> io::Result<Ending> {
        stream.set_nodelay(true)?;
        let write_timeout = self.server.settings.write_timeout;
        let mut session = Some(session);
        let mut told_shutdown = false;
        loop {
            let s = session.as_mut().ok_or_else(|| io::Error::other("session lost"))?;
            write_pending(stream, s, write_timeout).await?;
            if let Some(b) = s.take_body() {
                // The blocking pool owns the transfer: sendfile may read the disk.
                let taken = session.take().ok_or_else(|| io::Error::other("session lost"))?;
                session = Some(body::send(stream, b, taken, write_timeout).await?);
                continue;
            }
            if s.is_closed() {
                return Ok(Ending::ServerClosed);
            }
            if *self.stop.borrow() && !told_shutdown {
                told_shutdown = true;
                s.begin_shutdown();
                continue;
            }
            if !s.wants_input() {
                return Err(io::Error::other("session neither reads nor writes"));
            }
            let deadline = s.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = stream.readable() => {
                    r?;
                    let mut buf = vec![0u8; READ_BUF];
                    match stream.try_read(&mut buf) {
                        Ok(0) => {
                            s.handle_eof();
                            return Ok(Ending::PeerClosed);
                        }
                        Ok(n) => {
                            buf.truncate(n);
                            let mut taken = session.take().ok_or_else(|| io::Error::other("session lost"))?;
                            // Input may make the session write to disk: off the reactor.
                            let back = tokio::task::spawn_blocking(move || {
                                taken.feed(&buf, Instant::now());
                                taken
                            })
                            .await
                            .map_err(io::Error::other)?;
                            session = Some(back);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(e) => {
                            s.handle_eof();
                            return Err(e);
                        }
                    }
                }
                () = sleep => s.handle_timeout(Instant::now()),
                _ = self.stop.changed(), if !told_shutdown => {}
            }
        }
    }
}

/// Writes everything the session has to say, each write bounded (`[TIME-5]`).
async fn write_pending(stream: &TcpStream, session: &mut Session, limit: Duration) -> io::Result<()> {
    while !session.pending_output().is_empty() {
        let n = tokio::time::timeout(limit, async {
            loop {
                stream.writable().await?;
                match stream.try_write(session.pending_output()) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        })
        .await
        .map_err(|_| io::Error::new(ErrorKind::TimedOut, "client stopped reading"))??;
        session.consume_output(n);
    }
    Ok(())
}

/// Shuts the sending side and drains input until the client closes or `linger` passes
/// (`[ERR-9]`).
async fn linger_close(mut stream: TcpStream, linger: Duration) {
    let _ = stream.shutdown().await;
    let _ = tokio::time::timeout(linger, async {
        let mut buf = [0u8; 4096];
        loop {
            let _ = stream.readable().await;
            match stream.try_read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    })
    .await;
}

/// Turns a connection away with `reply` (`BUSY`), then closes it lingeringly.
pub(crate) async fn refuse(mut stream: TcpStream, reply: &[u8], linger: Duration) {
    let _ = tokio::time::timeout(linger, stream.write_all(reply)).await;
    linger_close(stream, linger).await;
}
