//! Sending a GET's file range from a blocking-pool task that owns the transfer: sendfile(2) on
//! Linux, waiting for the socket's writability with poll(2) on its own duplicate of the socket,
//! so the reactor threads never touch the disk. Elsewhere, a buffered copy on the same task.

use std::io;
use std::time::{Duration, Instant};

use ferry_core::{Body, Session};
use tokio::net::TcpStream;

/// Sends all of `body`, reporting progress to `session`, and hands the session back.
///
/// # Errors
/// The socket failed, or stayed unwritable past `limit` (`[TIME-5]`).
pub(crate) async fn send(stream: &TcpStream, body: Body, session: Session, limit: Duration) -> io::Result<Session> {
    let fd = dup_socket(stream)?;
    tokio::task::spawn_blocking(move || transfer(&fd, body, session, limit)).await.map_err(io::Error::other)?
}

#[cfg(unix)]
fn dup_socket(stream: &TcpStream) -> io::Result<std::os::fd::OwnedFd> {
    // A duplicate the task owns: if the connection is dropped meanwhile, the descriptor number
    // cannot be reused under the transfer.
    Ok(rustix::io::dup(stream)?)
}

#[cfg(target_os = "linux")]
fn transfer(fd: &std::os::fd::OwnedFd, mut body: Body, mut session: Session, limit: Duration) -> io::Result<Session> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    while body.len > 0 {
        let want = body.len.min(1 << 20) as usize;
        let mut offset = body.offset;
        match rustix::fs::sendfile(fd, &body.file, Some(&mut offset), want) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shorter than announced")),
            Ok(n) => {
                body.offset += n as u64;
                body.len -= n as u64;
                session.body_sent(n as u64, Instant::now());
            }
            Err(rustix::io::Errno::AGAIN) => {
                let mut fds = [PollFd::new(fd, PollFlags::OUT)];
                let timeout = Timespec { tv_sec: limit.as_secs() as i64, tv_nsec: i64::from(limit.subsec_nanos()) };
                if poll(&mut fds, Some(&timeout))? == 0 {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "client stopped reading"));
                }
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(session)
}

#[cfg(all(unix, not(target_os = "linux")))]
fn transfer(fd: &std::os::fd::OwnedFd, mut body: Body, mut session: Session, limit: Duration) -> io::Result<Session> {
    use std::io::{Read, Seek, SeekFrom};
    let mut buf = vec![0u8; 256 * 1024];
    let mut file = &body.file;
    file.seek(SeekFrom::Start(body.offset))?;
    while body.len > 0 {
        let n = file.read(&mut buf[..body.len.min(buf.len() as u64) as usize])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shorter than announced"));
        }
        let mut sent = 0;
        let started = Instant::now();
        while sent < n {
            match rustix::io::write(fd, &buf[sent..n]) {
                Ok(k) => sent += k,
                Err(rustix::io::Errno::AGAIN) if started.elapsed() < limit => std::thread::yield_now(),
                Err(e) => return Err(e.into()),
            }
        }
        body.len -= n as u64;
        session.body_sent(n as u64, Instant::now());
    }
    Ok(session)
}
