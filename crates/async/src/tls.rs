//! Connections on a TLS listener (PROTOCOL.md § 18): the same session loop as a plain
//! connection's, over tokio-rustls.
//!
//! The TLS handshake runs under the session's handshake deadline. Replies and bodies go through
//! rustls, so a body is read from the file — on the reactor when the page cache holds it
//! (`RWF_NOWAIT`), else on the blocking pool — and encrypted, a chunk at a time, instead of
//! going out with sendfile. A connection that waits holds rustls's state and a read buffer:
//! more than a plain connection's, all bounded.

use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ferry_core::{Body, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, Instrument};

use crate::connection::{linger_close, until, Conn, Ending, Next};

/// Decrypted input is read into a buffer of this size, one per connection (a TLS record's
/// plaintext is at most 16 KiB).
const READ_BUF: usize = 16 * 1024;
/// A GET body is read from its file and encrypted this much at a time.
const BODY_CHUNK: usize = 64 * 1024;

impl Conn {
    /// Serves a connection accepted on a TLS listener.
    pub(crate) async fn serve_tls(mut self, stream: TcpStream, peer: SocketAddr, acceptor: TlsAcceptor) {
        let session = Session::new(self.server.clone(), peer, Instant::now());
        let span = session.span().clone();
        async move {
            // The handshake deadline covers the TLS handshake (§ 18.6).
            let deadline =
                session.poll_timeout().unwrap_or_else(|| Instant::now() + self.server.settings.handshake_timeout);
            let mut tls = match tokio::time::timeout_at(deadline.into(), acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return info!(error = %e, "TLS handshake failed"),
                Err(_) => return info!("TLS handshake not done within the handshake deadline: closed"),
            };
            let mut force = self.force.clone();
            let result = tokio::select! {
                r = self.run_tls(&mut tls, session) => r,
                _ = force.wait_for(|f| *f) => {
                    info!("grace period over: closed");
                    return;
                }
            };
            match result {
                Ok(Ending::ServerClosed) => {
                    // `[TLS-9]`: close_notify, then the lingering close of the TCP connection.
                    let linger = self.server.settings.linger;
                    let _ = tokio::time::timeout(linger, tls.shutdown()).await;
                    linger_close(tls.into_inner().0, linger).await;
                }
                Ok(Ending::PeerClosed) => {}
                Err(e) => debug!(error = %e, "connection dropped"),
            }
        }
        .instrument(span)
        .await;
    }

    async fn run_tls(&mut self, tls: &mut TlsStream<TcpStream>, session: Session) -> io::Result<Ending> {
        let mut state = Some(session);
        let mut told_shutdown = false;
        let mut buf = vec![0u8; READ_BUF];
        let progress = self.server.settings.progress_timeout;
        loop {
            let s = state.as_mut().ok_or_else(|| io::Error::other("session lost"))?;
            if !s.pending_output().is_empty() {
                let deadline = s.send_deadline().unwrap_or_else(|| Instant::now() + progress);
                let n = within(deadline, tls.write(s.pending_output())).await?;
                s.consume_output(n, Instant::now());
                continue;
            }
            if let Some(body) = s.take_body() {
                let body = send_body(tls, s, body, progress).await?;
                debug_assert!(body.len == 0);
                continue;
            }
            let deadline = s.send_deadline().unwrap_or_else(|| Instant::now() + progress);
            within(deadline, tls.flush()).await?;
            if s.has_deferred() {
                let mut owned = state.take().ok_or_else(|| io::Error::other("session lost"))?;
                let back = tokio::task::spawn_blocking(move || {
                    owned.run_deferred(Instant::now());
                    owned
                })
                .await
                .map_err(io::Error::other)?;
                state = Some(back);
                continue;
            }
            match self.between_replies(s, &mut told_shutdown).await? {
                Next::Again => continue,
                Next::End(ending) => return Ok(ending),
                Next::Read => {}
            }
            let sleep = until(s.poll_timeout());
            tokio::select! {
                biased;
                r = tls.read(&mut buf) => match r {
                    Ok(0) => {
                        s.handle_eof();
                        return Ok(Ending::PeerClosed);
                    }
                    Ok(n) => {
                        // `[SHUT-5]`, as on a plain connection.
                        if *self.stop.borrow() && !told_shutdown {
                            told_shutdown = true;
                            s.begin_shutdown(Instant::now());
                        }
                        s.feed(&buf[..n], Instant::now());
                    }
                    Err(e) => {
                        s.handle_eof();
                        return Err(e);
                    }
                },
                () = sleep => s.handle_timeout(Instant::now()),
                _ = self.stop.changed(), if !told_shutdown => {}
            }
        }
    }
}

/// Runs `io` until `deadline` (`[TIME-5]`: a client that takes too little is dropped).
async fn within<T>(deadline: Instant, io: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout_at(deadline.into(), io)
        .await
        .map_err(|_| io::Error::new(ErrorKind::TimedOut, "client stopped reading"))?
}

/// Reads `body` from its file and sends it through TLS, reporting progress to the session.
async fn send_body(
    tls: &mut TlsStream<TcpStream>,
    session: &mut Session,
    mut body: Body,
    progress: Duration,
) -> io::Result<Body> {
    let mut chunk = Vec::with_capacity(BODY_CHUNK.min(body.len as usize));
    while body.len > 0 {
        let want = body.len.min(BODY_CHUNK as u64) as usize;
        chunk.resize(want, 0);
        let read = match crate::body::read_cached_at(&body, &mut chunk) {
            Some(n) => n,
            None => {
                // Not in the page cache (or failed): the pool reads it, blocking there.
                let (b, c, r) = tokio::task::spawn_blocking(move || {
                    use std::os::unix::fs::FileExt;
                    let r = body.file.read_at(&mut chunk, body.offset);
                    (body, chunk, r)
                })
                .await
                .map_err(io::Error::other)?;
                body = b;
                chunk = c;
                r?
            }
        };
        if read == 0 {
            return Err(io::Error::new(ErrorKind::UnexpectedEof, "file shorter than announced"));
        }
        let deadline = session.send_deadline().unwrap_or_else(|| Instant::now() + progress);
        within(deadline, tls.write_all(&chunk[..read])).await?;
        body.offset += read as u64;
        body.len -= read as u64;
        session.body_sent(read as u64, Instant::now());
    }
    Ok(body)
}

/// Turns a TLS client away with `reply` (`BUSY`) inside TLS, after the handshake, all within
/// `linger`; then closes lingeringly.
pub(crate) async fn refuse(stream: TcpStream, acceptor: TlsAcceptor, reply: &[u8], linger: Duration) {
    let refused = tokio::time::timeout(linger, async {
        let mut tls = acceptor.accept(stream).await.ok()?;
        tls.write_all(reply).await.ok()?;
        tls.shutdown().await.ok()?;
        Some(tls.into_inner().0)
    })
    .await;
    if let Ok(Some(stream)) = refused {
        linger_close(stream, linger).await;
    }
}
