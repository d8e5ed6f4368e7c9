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
use std::time::{Duration, Instant};

use ferry_core::{Body, Session};
use tokio::net::TcpStream;

/// Bodies up to this size are read into memory on the reactor when the page cache holds them,
/// and leave with their reply head in one write; larger ones are sent with sendfile(2) from the
/// pool.
pub(crate) const INLINE_BODY_MAX: usize = 64 * 1024;

/// At most this many bytes of replies are staged (copied together) on the reactor for one
/// write: each reactor thread's buffer ([`STAGE`]), and the most a connection keeps when the
/// socket does not take them ([`Staged`]).
const STAGE_MAX: usize = 2 * INLINE_BODY_MAX;

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

/// Staged reply bytes the socket did not take: they go before anything the session holds.
#[derive(Debug)]
pub(crate) struct Staged {
    bytes: Vec<u8>,
    sent: usize,
    /// `[TIME-5]`: when the connection is dropped if they have not all gone; partial progress
    /// does not move it.
    pub(crate) deadline: Instant,
}

thread_local! {
    /// Each reactor thread's staging buffer.
    static STAGE: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(STAGE_MAX));
}

/// On the reactor: writes the session's pending output, and `body` if it is small and cached,
/// until everything is out, the socket is full, or the rest needs the pool.
///
/// A small cached body is staged with its head, and reported sent at once; the replies that lets
/// the session produce (a pipelined GET's, or the BYE that ends a short connection) are staged
/// or written with it, so that they leave in one `writev` and, mostly, one segment. What the
/// socket does not take is kept in `staged`, due by `now + progress_timeout`.
///
/// # Errors
/// The socket failed.
pub(crate) fn push_inline(
    stream: &TcpStream,
    session: &mut Session,
    body: &mut Option<Body>,
    staged: &mut Option<Staged>,
    progress_timeout: Duration,
) -> io::Result<Pushed> {
    loop {
        if let Some(st) = staged {
            match stream.try_write(&st.bytes[st.sent..]) {
                Ok(n) => {
                    st.sent += n;
                    if st.sent == st.bytes.len() {
                        *staged = None;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Pushed::Blocked),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            continue;
        }
        if body.is_none() {
            *body = session.take_body();
        }
        match body {
            None if session.pending_output().is_empty() => return Ok(Pushed::Done),
            None => match stream.try_write(session.pending_output()) {
                Ok(n) => session.consume_output(n, Instant::now()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Pushed::Blocked),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            },
            Some(_) => {
                let left = STAGE.with(|stage| stage_and_write(stream, session, body, &mut stage.borrow_mut()))?;
                match left {
                    Stage::NotCached => return Ok(Pushed::NeedsPool),
                    Stage::Written => {}
                    Stage::Left(bytes) => {
                        *staged = Some(Staged { bytes, sent: 0, deadline: Instant::now() + progress_timeout });
                    }
                }
            }
        }
    }
}

/// How [`stage_and_write`] went.
enum Stage {
    /// The body is not small, or not in the page cache: nothing was done.
    NotCached,
    /// All staged bytes were written.
    Written,
    /// These staged bytes were not.
    Left(Vec<u8>),
}

/// Stages the pending output and the small cached `body`, reports them consumed and sent, and
/// goes on while that makes another small cached body ready; then writes the stage and the
/// session's new pending output together.
fn stage_and_write(
    stream: &TcpStream,
    session: &mut Session,
    body: &mut Option<Body>,
    stage: &mut Vec<u8>,
) -> io::Result<Stage> {
    stage.clear();
    let now = Instant::now();
    while let Some(b) = body.as_mut() {
        let head = session.pending_output().len();
        let start = stage.len();
        if b.len as usize > INLINE_BODY_MAX || start + head + b.len as usize > STAGE_MAX {
            break;
        }
        stage.extend_from_slice(session.pending_output());
        stage.resize(start + head + b.len as usize, 0);
        let Some(n) = read_cached(b, &mut stage[start + head..]) else {
            stage.truncate(start);
            break;
        };
        stage.truncate(start + head + n);
        session.consume_output(head, now);
        b.offset += n as u64;
        b.len -= n as u64;
        session.body_sent(n as u64, now);
        if b.len > 0 {
            break; // partly cached: the rest is sent from the pool
        }
        *body = session.take_body();
    }
    if stage.is_empty() {
        return Ok(Stage::NotCached);
    }
    let out = session.pending_output();
    let written = loop {
        match stream.try_write_vectored(&[IoSlice::new(stage), IoSlice::new(out)]) {
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => break 0,
            other => break other?,
        }
    };
    let of_stage = written.min(stage.len());
    if written > of_stage {
        session.consume_output(written - of_stage, now);
    }
    Ok(if of_stage == stage.len() { Stage::Written } else { Stage::Left(stage[of_stage..].to_vec()) })
}

/// [`read_cached`], for the TLS path.
pub(crate) fn read_cached_at(body: &Body, buf: &mut [u8]) -> Option<usize> {
    read_cached(body, buf)
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
