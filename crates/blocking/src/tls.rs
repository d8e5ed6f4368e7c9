//! A connection's TLS layer (PROTOCOL.md § 18) on the same blocking socket: rustls's state
//! machine, fed from the socket and drained to it by hand, so that the socket's timeouts keep
//! bounding every wait exactly as on a plain connection.
//!
//! Bytes are never taken twice or lost to a timeout: [`Tls::write`] first pushes out the
//! ciphertext already waiting, and fails with the timeout only if it took none of the new bytes.
//! What it took may stay buffered (at most rustls's buffer limit); [`Tls::flush`] sends it, and
//! the connection flushes before it waits for input.

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use rustls::{ServerConfig, ServerConnection};

use crate::connection::blocked;

/// Socket reads one [`Tls::read`] makes, at most, before it reports no plaintext yet.
const MAX_RECORD_READS: usize = 64;

/// One connection's TLS state.
pub(crate) struct Tls {
    conn: ServerConnection,
}

impl Tls {
    pub(crate) fn new(config: Arc<ServerConfig>) -> io::Result<Self> {
        Ok(Self { conn: ServerConnection::new(config).map_err(io::Error::other)? })
    }

    /// Plaintext from the client into `buf`; 0 when the client has closed (with or without its
    /// `close_notify`: a session's framing tells a truncation by itself). A failed handshake or a
    /// forged record is an `InvalidData` error, after the alert has been sent (`[TLS-4]`,
    /// `[TLS-8]`). The socket's read timeout surfaces as `WouldBlock` or `TimedOut`, as on a plain
    /// connection.
    pub(crate) fn read(&mut self, sock: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        // Records that carry no plaintext (handshake messages, empty records, key updates) are
        // read a bounded number at a time: a peer that streams them without end gets a tick
        // back, as if it were silent, so the session's deadlines still apply.
        for _ in 0..MAX_RECORD_READS {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            // Handshake messages the last records called for go out before we wait for more.
            self.flush(sock)?;
            if self.conn.read_tls(&mut &*sock)? == 0 {
                return Ok(0);
            }
            if let Err(e) = self.conn.process_new_packets() {
                // The alert that says why; the connection ends either way.
                let _ = self.flush(sock);
                return Err(io::Error::new(ErrorKind::InvalidData, e));
            }
        }
        Err(ErrorKind::WouldBlock.into())
    }

    /// Takes up to `bytes.len()` plaintext bytes for sending and pushes out what the socket will
    /// take now; returns how many it took (never 0 for non-empty `bytes` unless it failed).
    ///
    /// # Errors
    /// The socket failed, or its write timeout passed before any of `bytes` could be taken.
    pub(crate) fn write(&mut self, sock: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
        self.flush(sock)?;
        let n = self.conn.writer().write(bytes)?;
        match self.flush(sock) {
            Ok(()) => Ok(n),
            // Taken, and waiting in rustls's buffer: the next write or flush sends it.
            Err(e) if blocked(&e) => Ok(n),
            Err(e) => Err(e),
        }
    }

    /// Sends all the ciphertext waiting.
    ///
    /// # Errors
    /// The socket failed, or its write timeout passed (some may have gone: call again).
    pub(crate) fn flush(&mut self, sock: &TcpStream) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut &*sock)?;
        }
        Ok(())
    }

    /// Queues the `close_notify` alert (`[TLS-9]`) and sends what it can: the socket is being
    /// closed, so a client that stopped reading does not hold it.
    pub(crate) fn close(&mut self, sock: &TcpStream) {
        self.conn.send_close_notify();
        let _ = self.flush(sock);
    }

    /// Whether the handshake is still going on.
    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }
}

/// Refusing a TLS client at capacity (`[CAP-1]`): its `BUSY` must travel inside TLS, so the
/// handshake is run first, without blocking, by the closer's polling thread ([`crate::closer`]).
pub(crate) struct Refusal {
    conn: ServerConnection,
    reply: Vec<u8>,
    sent_reply: bool,
}

/// What a refusal's step left to do.
pub(crate) enum Step {
    /// Waiting for the client.
    Pending,
    /// `BUSY` and `close_notify` went out, or the client failed the handshake: linger, then close.
    Done,
}

impl Refusal {
    pub(crate) fn new(config: Arc<ServerConfig>, reply: &[u8]) -> io::Result<Self> {
        Ok(Self {
            conn: ServerConnection::new(config).map_err(io::Error::other)?,
            reply: reply.to_vec(),
            sent_reply: false,
        })
    }

    /// Moves the handshake and the reply along with what a non-blocking socket gives and takes.
    pub(crate) fn step(&mut self, sock: &TcpStream) -> Step {
        loop {
            while self.conn.wants_write() {
                match self.conn.write_tls(&mut &*sock) {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Step::Pending,
                    Err(_) => return Step::Done,
                }
            }
            if self.sent_reply {
                return Step::Done;
            }
            if !self.conn.is_handshaking() {
                let _ = self.conn.writer().write_all(&self.reply);
                self.conn.send_close_notify();
                self.sent_reply = true;
                continue;
            }
            match self.conn.read_tls(&mut &*sock) {
                Ok(0) => return Step::Done,
                Ok(_) => {
                    if self.conn.process_new_packets().is_err() {
                        let _ = self.conn.write_tls(&mut &*sock);
                        return Step::Done;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Step::Pending,
                Err(_) => return Step::Done,
            }
        }
    }
}

/// A GET body's bytes read from the file this size at a time and encrypted: sendfile cannot
/// carry TLS records (without kTLS).
const BODY_CHUNK: usize = 64 * 1024;

thread_local! {
    static BODY: std::cell::RefCell<Box<[u8]>> = std::cell::RefCell::new(vec![0u8; BODY_CHUNK].into_boxed_slice());
}

impl Tls {
    /// Sends the next part of `body` through TLS, advancing it; returns the bytes taken.
    ///
    /// # Errors
    /// The file or the socket failed, or the socket's write timeout passed with nothing taken.
    pub(crate) fn send_body(&mut self, sock: &TcpStream, body: &mut ferry_core::Body) -> io::Result<u64> {
        use std::os::unix::fs::FileExt;
        BODY.with(|buf| {
            let mut buf = buf.borrow_mut();
            let want = body.len.min(BODY_CHUNK as u64) as usize;
            let read = body.file.read_at(&mut buf[..want], body.offset)?;
            if read == 0 {
                return Err(io::Error::new(ErrorKind::UnexpectedEof, "file shorter than announced"));
            }
            let n = self.write(sock, &buf[..read])? as u64;
            body.offset += n;
            body.len -= n;
            Ok(n)
        })
    }
}
