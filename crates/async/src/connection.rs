//! One client connection as a task: the same loop as the blocking engine's, with awaits.

use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_core::digests::{Begun, HashJob};
use ferry_core::{Body, Server, Session};
use ferry_proto::Digest;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, Instrument};

use crate::body::{self, Pushed, Staged};
use crate::IpSlot;

/// Socket reads go into a buffer of this size, one per reactor thread ([`read_some`]).
const READ_BUF: usize = 64 * 1024;

/// A served connection and what it holds until it ends.
pub(crate) struct Conn {
    pub(crate) server: Arc<Server>,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) force: watch::Receiver<bool>,
    /// Files hashed at once, server-wide (`[SEC-3]`): `max_concurrent_hashes` permits, awaited on
    /// the reactor so that a GET waiting for one holds no blocking-pool thread.
    pub(crate) hashes: Arc<Semaphore>,
    /// Dropped when the connection ends: the drain waits for every clone.
    pub(crate) _drain: mpsc::Sender<()>,
    pub(crate) _permits: (OwnedSemaphorePermit, IpSlot, OwnedSemaphorePermit),
}

/// What [`Conn::between_replies`] leaves to the loop.
pub(crate) enum Next {
    /// Something was done: look at the session again.
    Again,
    End(Ending),
    /// Wait for input, or the session's deadline.
    Read,
}

/// Sleeps until `deadline`, or forever without one.
pub(crate) async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

pub(crate) enum Ending {
    ServerClosed,
    PeerClosed,
}

impl Conn {
    pub(crate) async fn serve(mut self, stream: TcpStream, peer: SocketAddr) {
        let mut session = Session::new(self.server.clone(), peer, Instant::now());
        // Driven on the reactor: what may wait for the disk is handed back and run on the pool.
        session.defer_store_calls();
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
        let mut state = Some((session, None::<Body>));
        let mut staged = None::<Staged>;
        let mut blocked = false;
        let mut told_shutdown = false;
        loop {
            let (s, body) = state.as_mut().ok_or_else(|| io::Error::other("session lost"))?;
            if blocked {
                // `[TIME-5]`: a client that takes too little of what waits for it is dropped at
                // the session's send deadline; partial progress does not restart it.
                let deadline = staged
                    .as_ref()
                    .map(|st| st.deadline)
                    .or_else(|| s.send_deadline())
                    .unwrap_or_else(|| Instant::now() + self.server.settings.progress_timeout);
                tokio::time::timeout_at(deadline.into(), stream.writable())
                    .await
                    .map_err(|_| io::Error::new(ErrorKind::TimedOut, "client stopped reading"))??;
                blocked = self.push(stream, &mut state, &mut staged).await?;
                continue;
            }
            if !s.pending_output().is_empty() || body.is_some() || staged.is_some() {
                blocked = self.push(stream, &mut state, &mut staged).await?;
                continue;
            }
            if s.has_deferred() {
                blocked = self.hop(stream, &mut state, |s| s.run_deferred(Instant::now())).await?;
                continue;
            }
            match self.between_replies(s, &mut told_shutdown).await? {
                Next::Again => continue,
                Next::End(ending) => return Ok(ending),
                Next::Read => {}
            }
            let sleep = until(s.poll_timeout());
            tokio::select! {
                // Input first: bytes that arrived before a deadline must not lose to the timer
                // just because this task was polled late on a busy server.
                biased;
                r = stream.readable() => {
                    r?;
                    let stopping = *self.stop.borrow();
                    match read_into(stream, |input| {
                        // `[SHUT-5]`: bytes that arrive once a shutdown has begun are read as
                        // part of the drain.
                        if stopping && !told_shutdown {
                            told_shutdown = true;
                            s.begin_shutdown(Instant::now());
                        }
                        s.feed(input, Instant::now());
                    }) {
                        Ok(0) => {
                            s.handle_eof();
                            return Ok(Ending::PeerClosed);
                        }
                        Ok(_) => {}
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

    /// What a connection does once everything is sent, plain or TLS: runs a GET's hash, ends a
    /// closed session, passes a shutdown on, or goes on to read.
    pub(crate) async fn between_replies(&self, s: &mut Session, told_shutdown: &mut bool) -> io::Result<Next> {
        if let Some(job) = s.take_hash_job() {
            let digest = self.hash(job).await?;
            s.hash_done(digest, Instant::now());
            return Ok(Next::Again);
        }
        if s.is_closed() {
            return Ok(Next::End(Ending::ServerClosed));
        }
        if *self.stop.borrow() && !*told_shutdown {
            *told_shutdown = true;
            s.begin_shutdown(Instant::now());
            return Ok(Next::Again);
        }
        if !s.wants_input() {
            return Err(io::Error::other("session neither reads nor writes"));
        }
        Ok(Next::Read)
    }

    /// Runs a GET's hash (`[SEC-3]`): waits for a hash permit here, on the reactor, where a
    /// thousand waiting GETs cost a thousand small futures and no thread; then hashes on the
    /// blocking pool. The permit moves into the pool task, so it is held exactly as long as the
    /// hashing runs, even if this connection is closed meanwhile. The outer error is the
    /// engine's (the task failed), the inner one the hash's, for the session to answer.
    ///
    /// A hash of the same file already under way (another connection's, or the background
    /// indexer's) is awaited here too, instead of reading the file a second time.
    async fn hash(&self, job: HashJob) -> io::Result<io::Result<Digest>> {
        let mut job = job;
        let lead = loop {
            match job.begin() {
                Begun::Known(digest) => return Ok(Ok(digest)),
                Begun::Lead(lead) => break lead,
                Begun::Follow(follow) => match follow.done().await {
                    Ok(digest) => return Ok(Ok(digest)),
                    Err(again) => job = again,
                },
            }
        };
        let permit = self.hashes.clone().acquire_owned().await.map_err(io::Error::other)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            lead.run()
        })
        .await
        .map_err(io::Error::other)
    }

    /// Sends what the session has for the client: on the reactor when that cannot block (reply
    /// bytes, a small body the page cache holds), else on the pool. Returns whether the socket
    /// is full.
    async fn push(
        &self,
        stream: &TcpStream,
        state: &mut Option<(Session, Option<Body>)>,
        staged: &mut Option<Staged>,
    ) -> io::Result<bool> {
        let (s, body) = state.as_mut().ok_or_else(|| io::Error::other("session lost"))?;
        match body::push_inline(stream, s, body, staged, self.server.settings.progress_timeout)? {
            Pushed::Done => Ok(false),
            Pushed::Blocked => Ok(true),
            Pushed::NeedsPool => self.hop(stream, state, |_| {}).await,
        }
    }

    /// One trip to the blocking pool: run `work` on the session (store calls that may wait for
    /// the disk), then push out what it produced — reply bytes and GET body — until done or the
    /// socket is full. Returns whether the socket is full.
    async fn hop(
        &self,
        stream: &TcpStream,
        state: &mut Option<(Session, Option<Body>)>,
        work: impl FnOnce(&mut Session) + Send + 'static,
    ) -> io::Result<bool> {
        // A duplicate the pool thread owns: if this connection is dropped meanwhile, the
        // descriptor number cannot be reused under it.
        let fd = rustix::io::dup(stream)?;
        let (mut session, mut body) = state.take().ok_or_else(|| io::Error::other("session lost"))?;
        let (session, body, pushed) = tokio::task::spawn_blocking(move || {
            work(&mut session);
            let pushed = body::push(&fd, &mut session, &mut body);
            (session, body, pushed)
        })
        .await
        .map_err(io::Error::other)?;
        *state = Some((session, body));
        match pushed? {
            Pushed::Done | Pushed::NeedsPool => Ok(false),
            Pushed::Blocked => {
                // Clear tokio's cached readiness so that the next wait for writability is real —
                // then look at the socket itself: the client may have drained it between the
                // pool thread's EAGAIN and this clearing, and that edge is gone. Any drain after
                // this look raises a new edge, so no wakeup is lost.
                let _ = stream.try_io(Interest::WRITABLE, || Err::<(), _>(io::Error::from(ErrorKind::WouldBlock)));
                Ok(!writable_now(stream))
            }
        }
    }
}

thread_local! {
    /// Each reactor thread's read buffer: a connection holds no buffer while it waits, and what
    /// came is fed to its session straight from here.
    static READ: std::cell::RefCell<Box<[u8]>> = std::cell::RefCell::new(vec![0u8; READ_BUF].into_boxed_slice());
}

/// One non-blocking read, handed to `feed` if it brought bytes; returns how many (0 at EOF).
fn read_into(stream: &TcpStream, feed: impl FnOnce(&[u8])) -> io::Result<usize> {
    READ.with(|buf| {
        let mut buf = buf.borrow_mut();
        let n = stream.try_read(&mut buf)?;
        if n > 0 {
            feed(&buf[..n]);
        }
        Ok(n)
    })
}

/// Whether the socket can take more bytes right now (poll(2) with no wait).
fn writable_now(stream: &TcpStream) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(stream, PollFlags::OUT)];
    let zero = Timespec { tv_sec: 0, tv_nsec: 0 };
    matches!(poll(&mut fds, Some(&zero)), Ok(n) if n > 0) && fds[0].revents().contains(PollFlags::OUT)
}

/// Shuts the sending side and drains input until the client closes or `linger` passes
/// (`[ERR-9]`).
pub(crate) async fn linger_close(mut stream: TcpStream, linger: Duration) {
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
