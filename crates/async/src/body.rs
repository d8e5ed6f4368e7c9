//! Sending replies and GET bodies, never blocking on the client, and on the reactor only when
//! that cannot block on the disk either.
//!
//! [`push_inline`] runs on the reactor: it writes reply bytes, and a small body the page cache
//! holds (read with `RWF_NOWAIT`, which fails rather than wait for the disk), in one `writev`
//! with the head before it: one segment, no pool trip. Anything else — a large body, a file
//! not cached — it leaves to [`push`], which runs on the blocking pool and sends the body with
//! sendfile(2) through a duplicate of the non-blocking socket. Both stop when the socket is
//! full; the reactor then waits for writability and calls again. No pool thread ever waits for
//! a slow client, so a thousand stalled downloads cannot starve the pool.

use std::io::{self, ErrorKind, IoSlice};
use std::os::fd::OwnedFd;
use std::time::Instant;

use ferry_core::{Body, Session};
use tokio::net::TcpStream;

/// Bodies up to this size are read into memory on the reactor when the page cache holds them,
/// and leave with their reply head in one `writev`; larger ones are sent with sendfile(2) from
/// the pool. One reactor thread's buffer ([`FILE`]); also the most a reactor thread copies per
/// call.
pub(crate) const INLINE_BODY_MAX: usize = 64 * 1024;

/// What a push left undone.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Everything was sent.
    Done,
    /// The socket is full: wait for writability, then push again.
    Blocked,
    /// What is left must be sent from the pool: [`push`].
    NeedsPool,
}

thread_local! {
    /// Each reactor thread's buffer for small bodies.
    static FILE: std::cell::RefCell<Box<[u8]>> = std::cell::RefCell::new(vec![0u8; INLINE_BODY_MAX].into_boxed_slice());
}

/// On the reactor: writes the session's pending output, and `body` if it is small and cached,
/// until everything is out, the socket is full, or the rest needs the pool.
///
/// # Errors
/// The socket failed.
pub(crate) fn push_inline(stream: &TcpStream, session: &mut Session, body: &mut Option<Body>) -> io::Result<Pushed> {
    loop {
        if body.is_none() {
            *body = session.take_body();
        }
        let written = match body {
            None if session.pending_output().is_empty() => return Ok(Pushed::Done),
            None => stream.try_write(session.pending_output()).map(|n| (n, 0)),
            Some(b) if b.len as usize <= INLINE_BODY_MAX => {
                let head = session.pending_output();
                let sent = FILE.with(|buf| {
                    let mut buf = buf.borrow_mut();
                    let Some(n) = read_cached(b, &mut buf[..b.len as usize]) else { return Ok(None) };
                    stream.try_write_vectored(&[IoSlice::new(head), IoSlice::new(&buf[..n])]).map(Some)
                });
                match sent {
                    Ok(None) => return Ok(Pushed::NeedsPool),
                    Ok(Some(n)) => Ok((n.min(head.len()), n.saturating_sub(head.len()))),
                    Err(e) => Err(e),
                }
            }
            Some(_) => return Ok(Pushed::NeedsPool),
        };
        match written {
            Ok((head, data)) => {
                let now = Instant::now();
                if head > 0 {
                    session.consume_output(head, now);
                }
                if let Some(b) = body.as_mut().filter(|_| data > 0) {
                    b.offset += data as u64;
                    b.len -= data as u64;
                    session.body_sent(data as u64, now);
                    if b.len == 0 {
                        *body = None;
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Pushed::Blocked),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads the next part of `body` into `buf` if the page cache holds it (`RWF_NOWAIT`): how many
/// bytes, or `None` if reading would wait for the disk, or failed (the pool's sendfile then
/// meets the failure and reports it).
#[cfg(target_os = "linux")]
fn read_cached(body: &Body, buf: &mut [u8]) -> Option<usize> {
    use std::sync::atomic::{AtomicBool, Ordering};
    /// Cleared when the file system cannot read without waiting: then every body uses the pool.
    static NOWAIT_READS: AtomicBool = AtomicBool::new(true);
    if !NOWAIT_READS.load(Ordering::Relaxed) {
        return None;
    }
    let flags = rustix::io::ReadWriteFlags::NOWAIT;
    match rustix::io::preadv2(&body.file, &mut [io::IoSliceMut::new(buf)], body.offset, flags) {
        Ok(0) => None,
        Ok(n) => Some(n),
        Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::INVAL) => {
            NOWAIT_READS.store(false, Ordering::Relaxed);
            None
        }
        Err(_) => None,
    }
}

#[cfg(not(target_os = "linux"))]
fn read_cached(_body: &Body, _buf: &mut [u8]) -> Option<usize> {
    None
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
