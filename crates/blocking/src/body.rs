//! Sending a GET's file range: sendfile(2) on Linux, so the data goes from the page cache to the
//! socket without passing through user space; a plain buffered copy elsewhere.

use std::io;
use std::net::TcpStream;

use ferry_core::Body;

/// Bytes handed to one sendfile call: large enough to keep the pipe full, small enough that
/// progress is reported often.
const CHUNK: u64 = 1 << 20;

/// Sends the next part of `body`, advancing it; returns the bytes sent (0 once it is done).
///
/// # Errors
/// The socket failed, or stayed unwritable past its write timeout (`[TIME-5]`).
pub(crate) fn send_some(stream: &TcpStream, body: &mut Body) -> io::Result<u64> {
    if body.len == 0 {
        return Ok(0);
    }
    let want = body.len.min(CHUNK);
    let n = send_chunk(stream, body, want)?;
    if n == 0 {
        // The file shrank under us (edited in place by hand): the frame cannot be completed.
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shorter than announced"));
    }
    body.offset += n;
    body.len -= n;
    Ok(n)
}

#[cfg(target_os = "linux")]
fn send_chunk(stream: &TcpStream, body: &Body, want: u64) -> io::Result<u64> {
    let mut offset = body.offset;
    loop {
        match rustix::fs::sendfile(stream, &body.file, Some(&mut offset), want as usize) {
            Ok(n) => return Ok(n as u64),
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "client stopped reading"));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn send_chunk(stream: &TcpStream, body: &Body, want: u64) -> io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut file = &body.file;
    file.seek(SeekFrom::Start(body.offset))?;
    let mut buf = vec![0u8; want as usize];
    let n = file.read(&mut buf)?;
    (&*stream).write_all(&buf[..n])?;
    Ok(n as u64)
}
