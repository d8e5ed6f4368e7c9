//! Every case over TLS (`conformance run --over-tls`): a relay owned by the run that turns each
//! plain connection a case makes into a TLS connection to the server's TLS listener
//! (PROTOCOL.md § 18), so that a server is checked in full where it speaks only TLS.
//!
//! The cases stay as they are: they talk plain TCP to the relay's loopback listener, with their
//! own socket options, writer threads and half-closes. For each connection accepted, the relay
//! connects to the server, completes a TLS 1.3 handshake offering ALPN `ferry/1` (`[TLS-1]`,
//! `[TLS-2]`), checks the certificate and the ALPN the server chose (`[TLS-3]`, `[TLS-5]`), and
//! then carries bytes both ways, keeping what a case can observe of the server as it is without
//! TLS:
//!
//! - Backpressure: each direction holds one chunk at a time (16 KiB) besides rustls's bounded
//!   buffers, and the relay's sockets have small kernel buffers (64 KiB): a server that
//!   stops reading, or a case that stops reading, is felt at the other end after little more
//!   than without the relay (`resources.*`, `limits.deadline.stalled-reader`).
//! - Half-close: a case's FIN becomes the TLS `close_notify` and the shutdown of the TCP write
//!   side (`[TLS-9]`); the server's end of the stream (a `close_notify`, or a bare TCP FIN)
//!   becomes a FIN to the case.
//! - Resets: a reset or a TLS error on one side resets the other (`SO_LINGER` 0), so that a case
//!   that checks how a connection ended sees what the server did.
//!
//! The relay makes no decision of its own and has no deadline of its own past the handshake:
//! a relayed connection lives as long as the server and the case keep it, and the run's end
//! closes any left.

use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ferry_tls::rustls::{self, pki_types::ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Bytes one direction of a relayed connection holds at once.
const CHUNK: usize = 16 * 1024;
/// The send and receive buffers of the relay's sockets, on both sides (the kernel doubles them).
/// Small, so that the relay never holds megabytes a case means the server to hold; large enough
/// that a 4 GiB upload is not slowed on loopback.
const SOCKET_BUFFER: u32 = 64 * 1024;
/// Connections waiting to be accepted: more than a run ever opens at once.
const BACKLOG: u32 = 1024;
/// The relay's runtime threads: the server and the cases share the machine with it.
const THREADS: usize = 2;

/// A problem starting the relay: nothing can be checked over TLS then.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot start the TLS relay: {0}")]
    Start(#[source] io::Error),
    #[error("a TLS connection to {addr} fails: {source}")]
    Upstream {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// The server's TLS listener and how to reach it.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    /// TLS 1.3 and ALPN `ferry/1` (`ferry_tls::client_config`), with the trust the run was given.
    pub config: Arc<rustls::ClientConfig>,
    /// The name the certificate is checked against, sent as SNI.
    pub name: ServerName<'static>,
    /// For the TCP connect and the TLS handshake each.
    pub timeout: Duration,
}

/// Which address the server sees for each connection the relay carries: `STATUS` records show
/// the relay's address, not the case's (`Ctx::seen_by_server`). An entry lives as long as its
/// connection, so that a case's port reused later never finds another connection's entry.
#[derive(Debug, Clone, Default)]
pub struct Directory(Arc<(Mutex<HashMap<SocketAddr, SocketAddr>>, Condvar)>);

impl Directory {
    /// The address the server sees for the relayed connection whose case-side address is
    /// `case_side` (the case socket's `local_addr`), waiting until `deadline` for the relay to
    /// have reached the server; `None` if it did not, or the connection is over.
    pub fn seen_as(&self, case_side: SocketAddr, deadline: Instant) -> Option<SocketAddr> {
        let (map, changed) = &*self.0;
        let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(&seen) = map.get(&case_side) {
                return Some(seen);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            map = changed.wait_timeout(map, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    fn insert(&self, case_side: SocketAddr, seen: SocketAddr) {
        let (map, changed) = &*self.0;
        map.lock().unwrap_or_else(PoisonError::into_inner).insert(case_side, seen);
        changed.notify_all();
    }

    fn remove(&self, case_side: SocketAddr) {
        self.0 .0.lock().unwrap_or_else(PoisonError::into_inner).remove(&case_side);
    }
}

/// The relay: a plain listener on 127.0.0.1 and the runtime carrying its connections. Dropping
/// it closes the listener and every connection still open.
#[derive(Debug)]
pub struct TlsRelay {
    addr: SocketAddr,
    directory: Directory,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TlsRelay {
    /// Starts the relay, after one TLS connection to `upstream` proved that the server can be
    /// reached and its certificate and ALPN are right: a run whose every connection would fail
    /// stops with the reason instead.
    ///
    /// # Errors
    /// The runtime or the listener cannot be made, or the first TLS connection fails.
    pub fn start(upstream: Upstream) -> Result<Self, RelayError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(THREADS)
            .thread_name("tls-relay")
            .enable_all()
            .build()
            .map_err(RelayError::Start)?;
        let upstream = Arc::new(upstream);
        runtime.block_on(async {
            let (mut tls, _) =
                connect(&upstream).await.map_err(|source| RelayError::Upstream { addr: upstream.addr, source })?;
            let _ = tls.shutdown().await;
            Ok::<_, RelayError>(())
        })?;
        let listener = runtime.block_on(async { listen() }).map_err(RelayError::Start)?;
        let addr = listener.local_addr().map_err(RelayError::Start)?;
        let directory = Directory::default();
        runtime.spawn(accept_loop(listener, upstream, directory.clone()));
        Ok(Self { addr, directory, runtime: Some(runtime) })
    }

    /// Where the cases connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Which address the server sees for each relayed connection.
    pub fn directory(&self) -> Directory {
        self.directory.clone()
    }
}

impl Drop for TlsRelay {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The relay's listener: loopback, a port of its own, small buffers for the sockets it accepts.
fn listen() -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    // Accepted sockets inherit them; the receive window is agreed on at the handshake.
    socket.set_recv_buffer_size(SOCKET_BUFFER)?;
    socket.set_send_buffer_size(SOCKET_BUFFER)?;
    socket.bind((Ipv4Addr::LOCALHOST, 0).into())?;
    socket.listen(BACKLOG)
}

async fn accept_loop(listener: TcpListener, upstream: Arc<Upstream>, directory: Directory) {
    loop {
        match listener.accept().await {
            Ok((plain, case_side)) => {
                tokio::spawn(relay(plain, case_side, upstream.clone(), directory.clone()));
            }
            // Out of file descriptors, or a connection reset before it was accepted: the case
            // that made it sees its own error; the others go on.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// A TCP connection to the server with small buffers, and the TLS handshake on it, each within
/// the timeout; ALPN checked (`[TLS-3]`).
async fn connect(upstream: &Upstream) -> io::Result<(TlsStream<TcpStream>, SocketAddr)> {
    let socket = if upstream.addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_recv_buffer_size(SOCKET_BUFFER)?;
    socket.set_send_buffer_size(SOCKET_BUFFER)?;
    let tcp = tokio::time::timeout(upstream.timeout, socket.connect(upstream.addr))
        .await
        .map_err(|_| io::Error::new(ErrorKind::TimedOut, "the TCP connect timed out"))??;
    tcp.set_nodelay(true)?;
    let seen = tcp.local_addr()?;
    let connector = TlsConnector::from(upstream.config.clone());
    let tls = tokio::time::timeout(upstream.timeout, connector.connect(upstream.name.clone(), tcp))
        .await
        .map_err(|_| io::Error::new(ErrorKind::TimedOut, "the TLS handshake timed out"))??;
    ferry_tls::check_alpn(tls.get_ref().1.alpn_protocol())?;
    Ok((tls, seen))
}

/// Which side of a relayed connection failed.
#[derive(Debug, Clone, Copy)]
enum Broken {
    /// The case's side: reset by the case, or closed while the server's bytes were on the way.
    Plain,
    /// The server's side: a TCP reset, or a TLS error.
    Tls,
}

/// Carries one connection, from the handshake to the end of both directions.
async fn relay(mut plain: TcpStream, case_side: SocketAddr, upstream: Arc<Upstream>, directory: Directory) {
    let _ = plain.set_nodelay(true);
    let mut tls = match connect(&upstream).await {
        Ok((tls, seen)) => {
            directory.insert(case_side, seen);
            tls
        }
        // The server closed during the handshake: so does the relay. Anything else (refused,
        // reset, a TLS alert, a wrong certificate or ALPN) resets the case's connection.
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => return,
        Err(_) => return reset(&plain),
    };
    let broken = {
        let (mut plain_in, mut plain_out) = plain.split();
        let (mut tls_in, mut tls_out) = tokio::io::split(&mut tls);
        tokio::try_join!(
            pump(&mut plain_in, &mut tls_out, Broken::Plain, Broken::Tls),
            pump(&mut tls_in, &mut plain_out, Broken::Tls, Broken::Plain),
        )
        .err()
    };
    directory.remove(case_side);
    match broken {
        None => {}
        Some(Broken::Plain) => reset(tls.get_ref().0),
        Some(Broken::Tls) => reset(&plain),
    }
}

/// Copies `from` to `to` a chunk at a time, each flushed at once (cases exchange small messages
/// and wait for the answers); at the end of `from`, shuts `to`'s sending side. Which side broke,
/// if one did.
async fn pump<R, W>(from: &mut R, to: &mut W, from_side: Broken, to_side: Broken) -> Result<(), Broken>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(n) => n,
            // A TCP FIN without close_notify: the server ended the stream, as a plain server's
            // FIN does. (`tls.session` judges the missing close_notify, `[TLS-9]`.)
            Err(e) if e.kind() == ErrorKind::UnexpectedEof && matches!(from_side, Broken::Tls) => 0,
            Err(_) => return Err(from_side),
        };
        if n == 0 {
            return to.shutdown().await.map_err(|_| to_side);
        }
        to.write_all(&buf[..n]).await.map_err(|_| to_side)?;
        to.flush().await.map_err(|_| to_side)?;
    }
}

/// Ends `stream` with a reset: linger 0, then the close when it is dropped.
fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}
