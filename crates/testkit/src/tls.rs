//! The suite over TLS (PROTOCOL.md § 18): one private CA per test process, a certificate for
//! `localhost` and 127.0.0.1 that it signs, made at run time (no key is checked in), and the
//! client's side of every connection the kit makes once [`use_tls`] was called.

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, OnceLock};

use ferry_tls::generate::{Ca, Validity};
use ferry_tls::rustls;

/// The client configuration every connection of this process uses, once set.
static CLIENT: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();

/// This process's test PKI.
struct Pki {
    _dir: tempfile::TempDir,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

static PKI: OnceLock<Pki> = OnceLock::new();

fn pki() -> &'static Pki {
    PKI.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ca = Ca::new("Ferry test CA").expect("a CA");
        let issued = ca.issue(&["localhost", "127.0.0.1"], Validity::Days(2)).expect("a certificate");
        let (cert, key, ca_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"), dir.path().join("ca.pem"));
        std::fs::write(&cert, issued.cert_pem).unwrap();
        std::fs::write(&key, issued.key_pem).unwrap();
        std::fs::write(&ca_file, ca.cert_pem()).unwrap();
        let server = ferry_tls::server_config(ferry_tls::ServerCert::load(&cert, &key).unwrap()).unwrap();
        let client = ferry_tls::client_config(&ferry_tls::Trust::CaFile(ca_file)).unwrap();
        Pki { _dir: dir, server, client }
    })
}

/// The server configuration of this process's TLS listeners.
pub fn server_config() -> Arc<rustls::ServerConfig> {
    pki().server.clone()
}

/// From now on, every connection the kit opens in this process speaks TLS, trusting this
/// process's CA: for a test binary whose engine serves the suite on a TLS listener.
pub fn use_tls() {
    let _ = CLIENT.set(pki().client.clone());
}

/// A connection's bytes: plain, or TLS once [`use_tls`] was called.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsConn>),
}

pub(crate) struct TlsConn {
    conn: rustls::ClientConnection,
    sock: TcpStream,
}

impl Stream {
    /// Wraps a connected socket; over TLS, runs the handshake (under the socket's timeouts) and
    /// checks ALPN before anything else is sent (`[TLS-3]`, `[TLS-5]`).
    pub(crate) fn new(sock: TcpStream) -> io::Result<Self> {
        let Some(config) = CLIENT.get() else { return Ok(Self::Plain(sock)) };
        let name = ferry_tls::server_name("localhost").map_err(io::Error::other)?;
        let mut tls =
            TlsConn { conn: rustls::ClientConnection::new(config.clone(), name).map_err(io::Error::other)?, sock };
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        ferry_tls::check_alpn(tls.conn.alpn_protocol())?;
        Ok(Self::Tls(Box::new(tls)))
    }

    /// The socket underneath.
    pub(crate) fn sock(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(t) => &t.sock,
        }
    }

    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(t) => loop {
                match t.conn.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
                // Requests still waiting in the TLS buffer go out as far as the socket takes them
                // now: the server may need them before it answers what this read waits for.
                t.flush_without_waiting()?;
                if t.conn.read_tls(&mut t.sock)? == 0 {
                    return Ok(0);
                }
                t.conn.process_new_packets().map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
            },
        }
    }

    /// Takes some of `buf`; over TLS, pushes out what waits first and fails with the timeout
    /// only if it took nothing, so that no byte is taken twice.
    pub(crate) fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::Tls(t) => {
                t.flush()?;
                let n = t.conn.writer().write(buf)?;
                match t.flush() {
                    Err(e) if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Err(e),
                    _ => Ok(n),
                }
            }
        }
    }

    pub(crate) fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.write(buf) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if let Self::Tls(t) = self {
            t.flush()?;
        }
        Ok(())
    }
}

impl TlsConn {
    fn flush_without_waiting(&mut self) -> io::Result<()> {
        if !self.conn.wants_write() {
            return Ok(());
        }
        self.sock.set_nonblocking(true)?;
        let flushed = self.flush();
        self.sock.set_nonblocking(false)?;
        match flushed {
            Err(e) if e.kind() != ErrorKind::WouldBlock => Err(e),
            _ => Ok(()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.sock)?;
        }
        Ok(())
    }
}

/// A client configuration trusting this process's CA, for TLS `versions`, offering `alpn`: for
/// the cases that try what a server must refuse.
pub fn client_config_with(
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let ca = pki()._dir.path().join("ca.pem");
    ferry_tls::client_config_for(&ferry_tls::Trust::CaFile(ca), versions, alpn).expect("a client configuration")
}
