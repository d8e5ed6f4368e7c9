//! The byte stream under a [`Connection`](crate::conn::Connection): a TCP socket, or TLS over
//! one (PROTOCOL.md § 18), behind one `Read + Write` type so that the protocol code above does
//! not care which.
//!
//! TLS here is rustls's blocking [`StreamOwned`] over the same `TcpStream`, so the socket's
//! read and write deadlines keep bounding every wait. Two things are done by hand rather than by
//! `StreamOwned`: the handshake (`handshake`), so that it gets one deadline for the whole
//! exchange and its failures — a certificate refused (`[TLS-5]`), a server that chose another
//! ALPN protocol or none (`[TLS-3]`) — are known before a single Ferry byte is written; and
//! reads, so that one read waits at most the read deadline however the server splits its
//! records.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

/// How a client speaks TLS to one server: the rustls configuration (whom it trusts, ALPN
/// `ferry/1`, TLS 1.3) and the name the certificate must carry (also sent as SNI).
#[derive(Debug, Clone)]
pub struct TlsSetup {
    pub(crate) config: Arc<rustls::ClientConfig>,
    pub(crate) name: ServerName<'static>,
}

impl TlsSetup {
    /// The setup for `trust`, checking the certificate against `name`.
    ///
    /// # Errors
    /// The CA file cannot be used, or `name` is neither a DNS name nor an IP address.
    pub fn new(trust: &ferry_tls::Trust, name: &str) -> Result<Self, ferry_tls::TlsError> {
        Ok(Self { config: ferry_tls::client_config(trust)?, name: ferry_tls::server_name(name)? })
    }

    /// The name the certificate is checked against, for messages.
    pub fn name(&self) -> String {
        self.name.to_str().into_owned()
    }
}

/// Why a TLS handshake did not give a usable connection.
#[derive(Debug)]
pub(crate) enum HandshakeError {
    /// The socket failed, timed out, or the server closed it.
    Io(io::Error),
    /// rustls refused the exchange: a certificate, an alert from the server, a message that is
    /// not TLS.
    Tls(rustls::Error),
    /// The handshake completed, but the server did not choose `ferry/1` (`[TLS-3]`).
    Alpn(io::Error),
}

/// A connection's byte stream.
#[derive(Debug)]
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => &s.sock,
        }
    }

    /// Whether the stream is encrypted.
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }

    pub(crate) fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp().set_read_timeout(timeout)
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().local_addr()
    }

    /// Closes both directions at once, sending nothing more (not even TLS's `close_notify`):
    /// the connection is given up.
    pub(crate) fn abort(&self) {
        let _ = self.tcp().shutdown(Shutdown::Both);
    }

    /// Ends a session cleanly: TLS's `close_notify` (`[TLS-9]`), so that the server can tell
    /// the end from a truncation; nothing on a plain connection. Failures are ignored: the
    /// connection is being closed.
    pub(crate) fn close_notify(&mut self) {
        if let Self::Tls(s) = self {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
    }

    /// Reads what has arrived without waiting: `Ok(None)` if nothing (decrypted) is there yet,
    /// `Ok(Some(0))` at the end of the stream.
    pub(crate) fn read_nonblocking(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match self {
            Self::Plain(s) => read_socket_nonblocking(s, buf),
            Self::Tls(s) => {
                if let Some(n) = plaintext(&mut s.conn, buf)? {
                    return Ok(Some(n));
                }
                match s.conn.read_tls(&mut NoWait(&s.sock)) {
                    Ok(0) => return Ok(Some(0)),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                    Err(e) => return Err(e),
                }
                s.conn.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                plaintext(&mut s.conn, buf)
            }
        }
    }
}

/// Decrypted bytes rustls holds: `Ok(None)` if none, `Ok(Some(0))` once the server has closed.
fn plaintext(conn: &mut ClientConnection, buf: &mut [u8]) -> io::Result<Option<usize>> {
    match conn.reader().read(buf) {
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        // Closed without `close_notify`: an end all the same; the protocol machine tells a cut
        // reply from a finished one by the reply's own length (§ 18.9).
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Some(0)),
        Err(e) => Err(e),
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(s) => read_within_deadline(s, buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
        }
    }

    /// On TLS, writes out every record rustls holds (each write waits at most the write
    /// deadline).
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::Tls(s) => s.flush(),
        }
    }
}

/// Reads decrypted bytes, waiting at most the socket's read deadline in all, as a plain read
/// does. (rustls's own `Stream::read` reads the socket until a whole record is in, each read
/// with the full deadline: a server trickling a record byte by byte could stretch one read far
/// past it, and the `[GET-9]` wait, which sets the deadline to the time left, with it.)
fn read_within_deadline(s: &mut StreamOwned<ClientConnection, TcpStream>, buf: &mut [u8]) -> io::Result<usize> {
    // Records still to write first (a key update, say), as rustls's own read does.
    while s.conn.wants_write() {
        s.conn.write_tls(&mut s.sock)?;
    }
    let start = Instant::now();
    // Socket reads so far, and the deadline as set, read once a second socket read shows that
    // it must be shared out.
    let mut reads = 0u32;
    let mut full = None;
    let mut eof = false;
    let result = loop {
        match plaintext(&mut s.conn, buf) {
            Ok(Some(n)) => break Ok(n),
            Ok(None) if eof => break Ok(0),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
        if reads == 1 {
            full = s.sock.read_timeout()?;
        }
        if let (1.., Some(full)) = (reads, full) {
            let left = full.saturating_sub(start.elapsed());
            if left.is_zero() {
                break Err(io::ErrorKind::TimedOut.into());
            }
            s.sock.set_read_timeout(Some(left))?;
        }
        reads += 1;
        match s.conn.read_tls(&mut s.sock) {
            Ok(0) => eof = true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
        if let Err(e) = s.conn.process_new_packets() {
            let _ = s.conn.write_tls(&mut s.sock);
            break Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
    };
    if let (2.., Some(full)) = (reads, full) {
        s.sock.set_read_timeout(Some(full))?;
    }
    result
}

/// The TLS handshake on `sock`, all of it within `timeout` (each read is given what is left),
/// then the check of the protocol the server chose (`[TLS-3]`). The certificate is checked by
/// rustls during the handshake (`[TLS-5]`). Nothing of Ferry has been sent when this returns.
/// The socket's read deadline is `timeout` again afterwards.
pub(crate) fn handshake(
    mut sock: TcpStream,
    setup: &TlsSetup,
    timeout: Duration,
) -> Result<StreamOwned<ClientConnection, TcpStream>, HandshakeError> {
    let deadline = Instant::now() + timeout;
    let mut conn = ClientConnection::new(setup.config.clone(), setup.name.clone()).map_err(HandshakeError::Tls)?;
    while conn.is_handshaking() {
        while conn.wants_write() {
            conn.write_tls(&mut sock).map_err(HandshakeError::Io)?;
        }
        if !conn.wants_read() {
            // A client in the middle of its handshake always waits for the server; if rustls
            // ever says otherwise, going round again would spin.
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HandshakeError::Io(io::ErrorKind::TimedOut.into()));
        }
        sock.set_read_timeout(Some(left)).map_err(HandshakeError::Io)?;
        match conn.read_tls(&mut sock) {
            Ok(0) => {
                return Err(HandshakeError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection during the TLS handshake",
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(HandshakeError::Io(e)),
        }
        if let Err(e) = conn.process_new_packets() {
            // Tell the server why (the alert rustls queued), as far as the socket lets us.
            let _ = conn.write_tls(&mut sock);
            return Err(HandshakeError::Tls(e));
        }
    }
    sock.set_read_timeout(Some(timeout)).map_err(HandshakeError::Io)?;
    // The client's Finished, if it is still queued: the handshake is whole either way, and a
    // server that chose the wrong protocol sees a session end rather than a broken handshake.
    while conn.wants_write() {
        conn.write_tls(&mut sock).map_err(HandshakeError::Io)?;
    }
    ferry_tls::check_alpn(conn.alpn_protocol()).map_err(HandshakeError::Alpn)?;
    Ok(StreamOwned::new(conn, sock))
}

/// A socket read that never waits, for rustls's `read_tls`.
struct NoWait<'a>(&'a TcpStream);

impl Read for NoWait<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read_socket_nonblocking(self.0, buf)?.ok_or_else(|| io::ErrorKind::WouldBlock.into())
    }
}

/// Reads what is there without blocking: `Ok(None)` if nothing is.
#[cfg(unix)]
fn read_socket_nonblocking(stream: &TcpStream, buf: &mut [u8]) -> io::Result<Option<usize>> {
    use rustix::net::RecvFlags;
    loop {
        match rustix::net::recv(stream, &mut *buf, RecvFlags::DONTWAIT) {
            Ok((n, _)) => return Ok(Some(n)),
            Err(rustix::io::Errno::AGAIN) => return Ok(None),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads what is there without blocking: `Ok(None)` if nothing is.
#[cfg(not(unix))]
fn read_socket_nonblocking(mut stream: &TcpStream, buf: &mut [u8]) -> io::Result<Option<usize>> {
    stream.set_nonblocking(true)?;
    let r = stream.read(buf);
    stream.set_nonblocking(false)?;
    match r {
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}
