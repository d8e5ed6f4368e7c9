//! One client connection on its own thread: bytes between the socket and the session, with
//! every wait bounded by the session's deadline.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_core::{Server, Session};
use tracing::{debug, info};

use crate::admission::Ticket;
use crate::body;
use crate::tls::Tls;

/// Reads wake at least this often, so a connection notices a shutdown while it waits; so do
/// writes, so that the send deadline is checked (`[TIME-5]`).
pub(crate) const TICK: Duration = Duration::from_millis(250);
/// Socket reads go into a buffer of this size (a connection's main memory cost).
const READ_BUF: usize = 64 * 1024;

/// Serves one connection until it closes; over TLS if `tls` is given (PROTOCOL.md § 18). The
/// ticket's drop frees its place.
pub(crate) fn serve(
    server: &Arc<Server>,
    stream: Arc<TcpStream>,
    peer: SocketAddr,
    tls: Option<&Arc<rustls::ServerConfig>>,
    _ticket: Ticket,
) {
    let mut session = Session::new(server.clone(), peer, Instant::now());
    let span = session.span().clone();
    let _entered = span.enter();
    let tls = match tls.map(|config| Tls::new(config.clone())).transpose() {
        Ok(tls) => tls,
        Err(e) => return debug!(error = %e, "TLS connection could not be set up"),
    };
    let mut link = Link { sock: &stream, tls };
    match run(server, &mut link, &mut session) {
        Ok(Ending::ServerClosed) => {
            if let Some(tls) = &mut link.tls {
                tls.close(&stream);
            }
            linger_close(&stream, server.settings.linger);
        }
        Ok(Ending::PeerClosed) => {}
        Err(e) if e.kind() == ErrorKind::InvalidData && link.tls.as_ref().is_some_and(Tls::is_handshaking) => {
            info!(error = %e, "TLS handshake failed");
        }
        Err(e) => debug!(error = %e, "connection dropped"),
    }
}

/// The connection's byte stream: the socket itself, or TLS over it.
struct Link<'a> {
    sock: &'a TcpStream,
    tls: Option<Tls>,
}

impl Link<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.tls {
            Some(tls) => tls.read(self.sock, buf),
            None => (&*self.sock).read(buf),
        }
    }

    /// One write; `more`: a body follows (see [`send`]).
    fn send(&mut self, bytes: &[u8], more: bool) -> io::Result<usize> {
        match &mut self.tls {
            Some(tls) => tls.write(self.sock, bytes),
            None => send(self.sock, bytes, more),
        }
    }

    fn send_body(&mut self, body: &mut ferry_core::Body) -> io::Result<u64> {
        match &mut self.tls {
            Some(tls) => tls.send_body(self.sock, body),
            None => body::send_some(self.sock, body),
        }
    }

    /// Sends what TLS holds back, before the connection waits for input.
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.tls {
            Some(tls) => tls.flush(self.sock),
            None => Ok(()),
        }
    }
}

enum Ending {
    /// The session ended the connection (BYE, a fatal error, the drain).
    ServerClosed,
    /// The client closed its side.
    PeerClosed,
}

/// Sets the options every connection needs on the listening socket, once: Linux gives accepted
/// sockets the listener's TCP_NODELAY and SO_SNDTIMEO, which saves two system calls per
/// connection. Replies are written whole, so Nagle's algorithm would only delay them.
/// SO_SNDTIMEO applies to each call, and any partial progress restarts it: it only wakes the
/// thread, while the session's send deadline decides when a slow reader is dropped
/// (`[TIME-5]`). SO_RCVTIMEO wakes the threads waiting in accept every tick
/// (`crate::acceptors`); connections set their own.
///
/// A connection the kernel queued before this call inherits nothing: call it before anyone can
/// connect ([`crate::spawn`] does; `ferryd` does before it says where it listens).
///
/// # Errors
/// The options cannot be set.
pub fn prepare_listener(listener: &TcpListener) -> io::Result<()> {
    use rustix::net::sockopt::{set_socket_timeout, set_tcp_nodelay, Timeout};
    set_tcp_nodelay(listener, true)?;
    set_socket_timeout(listener, Timeout::Send, Some(TICK))?;
    set_socket_timeout(listener, Timeout::Recv, Some(TICK))?;
    Ok(())
}

thread_local! {
    /// The read buffer of this thread's connections: threads are reused from one connection to
    /// the next ([`crate::workers`]), and so is this, instead of a fresh zeroed 64 KiB each.
    static READ: std::cell::RefCell<Box<[u8]>> = std::cell::RefCell::new(vec![0u8; READ_BUF].into_boxed_slice());
}

fn run(server: &Server, link: &mut Link<'_>, session: &mut Session) -> io::Result<Ending> {
    READ.with(|buf| run_with(server, link, session, &mut buf.borrow_mut()))
}

fn run_with(server: &Server, link: &mut Link<'_>, session: &mut Session, buf: &mut [u8]) -> io::Result<Ending> {
    let mut told_shutdown = false;
    // Set by the first read, though the listener's is likely inherited: a connection that was
    // queued before the listener was prepared has none, and its reads would never time out.
    let mut read_timeout = None;
    loop {
        // A GET's head and its body leave together: the head is written with MSG_MORE, so that
        // the kernel holds it until the body's first bytes join it (one segment for a small file).
        let body = session.take_body();
        write_pending(link, session, body.is_some())?;
        if let Some(mut body) = body {
            while body.len > 0 {
                match link.send_body(&mut body) {
                    Ok(n) => session.body_sent(n, Instant::now()),
                    Err(e) if blocked(&e) => check_send_deadline(session)?,
                    Err(e) => return Err(e),
                }
            }
            // Input pipelined behind the GET may have produced more to send.
            continue;
        }
        if let Some(job) = session.take_hash_job() {
            // `[SEC-3]`: this thread is the connection's own, so it may wait for a permit, or for
            // a hash of the same file already under way.
            let digest = job.run_blocking(server.store.hash_limiter());
            session.hash_done(digest, Instant::now());
            continue;
        }
        // Over TLS, replies may still wait in its buffer: they go before anything else waits.
        flush(link, session, server.settings.progress_timeout)?;
        if session.is_closed() {
            return Ok(Ending::ServerClosed);
        }
        if server.is_shutting_down() && !told_shutdown {
            told_shutdown = true;
            session.begin_shutdown(Instant::now());
            continue;
        }
        if !session.wants_input() {
            // Nothing to send, nothing to read: the machine is stuck, which is a bug.
            return Err(io::Error::other("session neither reads nor writes"));
        }
        // Even past a deadline, read first: bytes that arrived in time must not lose to a timer
        // because this thread woke late on a busy machine.
        let now = Instant::now();
        let wait = session.poll_timeout().map_or(TICK, |deadline| deadline.saturating_duration_since(now).min(TICK));
        // Most waits are a whole tick: the socket option is set only when the wait changes.
        let wait = Some(wait.max(Duration::from_millis(1)));
        if read_timeout != wait {
            link.sock.set_read_timeout(wait)?;
            read_timeout = wait;
        }
        match link.read(buf) {
            Ok(0) => {
                session.handle_eof();
                return Ok(Ending::PeerClosed);
            }
            Ok(n) => {
                // `[SHUT-5]`: bytes that arrive once a shutdown has begun are read as part of
                // the drain — half a hello completed now gets SHUTTING_DOWN, not a server hello.
                if server.is_shutting_down() && !told_shutdown {
                    told_shutdown = true;
                    session.begin_shutdown(Instant::now());
                }
                session.feed(&buf[..n], Instant::now());
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                session.handle_timeout(Instant::now());
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                session.handle_eof();
                return Err(e);
            }
        }
    }
}

/// Writes everything the session has to say: a long reply is produced as it goes out, and
/// requests pipelined behind it are processed as room is made (`[RES-2]`). A client that takes
/// too little of it is dropped at the session's send deadline (`[TIME-5]`).
///
/// `more`: a body follows, so the last of it is sent with MSG_MORE (see [`send`]).
fn write_pending(link: &mut Link<'_>, session: &mut Session, more: bool) -> io::Result<()> {
    while !session.pending_output().is_empty() {
        match link.send(session.pending_output(), more) {
            Ok(0) => return Err(io::Error::new(ErrorKind::WriteZero, "socket closed")),
            Ok(n) => session.consume_output(n, Instant::now()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if blocked(&e) => check_send_deadline(session)?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One write; with `more`, flagged MSG_MORE: the kernel keeps the bytes back until the next
/// write or sendfile without the flag (at most 200 ms), so a reply head and the body that follows
/// it leave in one segment.
fn send(stream: &TcpStream, bytes: &[u8], more: bool) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    if more {
        return Ok(rustix::net::send(stream, bytes, rustix::net::SendFlags::MORE)?);
    }
    let _ = more;
    (&*stream).write(bytes)
}

/// Sends what the link holds back. A client that takes none of it is dropped at the session's
/// send deadline, or `progress_timeout` after this began if the session has handed everything
/// over (`[TIME-5]`).
fn flush(link: &mut Link<'_>, session: &Session, progress_timeout: Duration) -> io::Result<()> {
    let since = Instant::now();
    loop {
        match link.flush() {
            Ok(()) => return Ok(()),
            Err(e) if blocked(&e) => {
                if Instant::now() >= session.send_deadline().unwrap_or(since + progress_timeout) {
                    info!("client stopped reading: dropped");
                    return Err(io::Error::new(ErrorKind::TimedOut, "client stopped reading"));
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A write that timed out after [`TICK`] without any progress.
pub(crate) fn blocked(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Fails once the session's send deadline has passed (`[TIME-5]`); otherwise the write is
/// tried again.
fn check_send_deadline(session: &Session) -> io::Result<()> {
    if session.send_deadline().is_some_and(|d| Instant::now() >= d) {
        info!("client stopped reading: dropped");
        return Err(io::Error::new(ErrorKind::TimedOut, "client stopped reading"));
    }
    Ok(())
}

/// Shuts the sending side and drains input until the client closes or `linger` passes
/// (`[ERR-9]`), so that the last reply is not destroyed by a TCP reset.
fn linger_close(stream: &TcpStream, linger: Duration) {
    let _ = stream.shutdown(Shutdown::Write);
    let until = Instant::now() + linger;
    let mut buf = [0u8; 4096];
    loop {
        let now = Instant::now();
        if now >= until || stream.set_read_timeout(Some(until - now)).is_err() {
            return;
        }
        match (&*stream).read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The options set once on the listener are the accepted sockets' own: no connection sets
    /// them again.
    #[test]
    fn accepted_sockets_inherit_the_listeners_options() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        prepare_listener(&listener).unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(accepted.nodelay().unwrap(), "TCP_NODELAY");
        // The kernel keeps the timeout in clock ticks: 250 ms may read back as 252 ms.
        let timeout = accepted.write_timeout().unwrap().expect("SO_SNDTIMEO");
        assert!(timeout >= TICK && timeout < TICK + Duration::from_millis(20), "SO_SNDTIMEO {timeout:?}");
        // A connection's reads start from this, and set it again only when their wait differs.
        let timeout = accepted.read_timeout().unwrap().expect("SO_RCVTIMEO");
        assert!(timeout >= TICK && timeout < TICK + Duration::from_millis(20), "SO_RCVTIMEO {timeout:?}");
    }
}
