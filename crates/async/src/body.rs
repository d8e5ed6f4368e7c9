//! Output that may touch the disk, done on the blocking pool without ever blocking on the
//! client: the reply bytes are written and the GET body sent with sendfile(2) through a
//! duplicate of the non-blocking socket, until done or until the socket is full. The reactor
//! then waits for writability and calls again. No pool thread ever waits for a slow client, so
//! a thousand stalled downloads cannot starve the pool that everyone's input goes through.

use std::io::{self, ErrorKind};
use std::os::fd::OwnedFd;

use ferry_core::{Body, Session};

/// What a push left undone.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Everything was sent.
    Done,
    /// The socket is full: wait for writability, then push again.
    Blocked,
}

/// Writes the session's pending output, then sends `body` (taking a new one from the session
/// when it is done), until everything is out or the socket is full.
///
/// # Errors
/// The socket failed.
pub(crate) fn push(fd: &OwnedFd, session: &mut Session, body: &mut Option<Body>) -> io::Result<Pushed> {
    loop {
        if body.is_none() {
            *body = session.take_body();
        }
        // A GET's head goes out with its body: MSG_MORE holds it until sendfile adds the data.
        let flags = if body.is_some() { rustix::net::SendFlags::MORE } else { rustix::net::SendFlags::empty() };
        while !session.pending_output().is_empty() {
            match rustix::net::send(fd, session.pending_output(), flags) {
                Ok(n) => session.consume_output(n, std::time::Instant::now()),
                Err(rustix::io::Errno::AGAIN) => return Ok(Pushed::Blocked),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let Some(b) = body else { return Ok(Pushed::Done) };
        match send_chunk(fd, b) {
            Ok(n) => {
                session.body_sent(n, std::time::Instant::now());
                if b.len == 0 {
                    // Input pipelined behind the GET may have produced more: loop.
                    *body = None;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Pushed::Blocked),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// One non-blocking send of the next part of `body`; advances it.
#[cfg(target_os = "linux")]
fn send_chunk(fd: &OwnedFd, body: &mut Body) -> io::Result<u64> {
    let want = body.len.min(4 << 20) as usize;
    let mut offset = body.offset;
    match rustix::fs::sendfile(fd, &body.file, Some(&mut offset), want) {
        Ok(0) => Err(io::Error::new(ErrorKind::UnexpectedEof, "file shorter than announced")),
        Ok(n) => {
            body.offset += n as u64;
            body.len -= n as u64;
            Ok(n as u64)
        }
        Err(e) => Err(e.into()),
    }
}

/// One non-blocking write of the next part of `body` through a buffer; advances it.
#[cfg(all(unix, not(target_os = "linux")))]
fn send_chunk(fd: &OwnedFd, body: &mut Body) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; body.len.min(256 * 1024) as usize];
    let n = body.file.read_at(&mut buf, body.offset)?;
    if n == 0 {
        return Err(io::Error::new(ErrorKind::UnexpectedEof, "file shorter than announced"));
    }
    let k = rustix::io::write(fd, &buf[..n])?;
    body.offset += k as u64;
    body.len -= k as u64;
    Ok(k as u64)
}
