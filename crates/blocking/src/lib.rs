//! `ferry-blocking`: the reference server engine — std::net, one thread per client, no async.
//!
//! It owns sockets and threads and nothing else: every protocol and storage decision is made by
//! the [`ferry_core::Session`] it drives. Read it as the plainest statement of what an engine
//! must do: admit or refuse connections ([`admission`]), shuttle bytes with deadlines
//! ([`connection`]) on threads reused from one connection to the next ([`workers`]), send file
//! bodies without copying them through user space ([`body`]), and drain on shutdown ([`serve`]).

mod admission;
mod body;
mod closer;
mod connection;
mod workers;

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferry_core::{Server, Settings};
use ferry_proto::server::ServerConnection;
use tracing::{error, info, warn};

use crate::admission::Admission;
use crate::closer::Closer;
use crate::workers::Workers;

/// A server running on a background thread: what tests and embedders use.
#[derive(Debug)]
pub struct Running {
    /// The address actually bound (port 0 resolved).
    pub addr: SocketAddr,
    pub server: Arc<Server>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Running {
    /// Starts the graceful shutdown, as SIGTERM or an admin's SHUTDOWN would.
    pub fn shutdown(&self) {
        self.server.request_shutdown();
    }

    /// Waits until the server has drained and stopped.
    ///
    /// # Errors
    /// The accept loop failed fatally.
    pub fn wait(mut self) -> io::Result<()> {
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(io::Error::other("the server thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    /// A server never outlives its handle: dropping it shuts the server down and waits.
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.server.request_shutdown();
            let _ = t.join();
        }
    }
}

/// Binds `listen` and serves `settings` on a background thread.
///
/// # Errors
/// The root cannot be opened or the address cannot be bound.
pub fn spawn(settings: Settings, listen: SocketAddr) -> io::Result<Running> {
    let server = Server::new(settings)?;
    let listener = TcpListener::bind(listen)?;
    let addr = listener.local_addr()?;
    let s = server.clone();
    let thread = std::thread::Builder::new().name("ferry-accept".into()).spawn(move || serve(s, listener))?;
    Ok(Running { addr, server, thread: Some(thread) })
}

/// Serves connections from `listener` until a shutdown is requested, then drains: connections
/// waiting for a request are told `SHUTTING_DOWN`, transfers in flight get `grace` to finish,
/// the rest are closed (§ 13).
///
/// # Errors
/// Only if the listener's address cannot be read; accept errors are retried.
pub fn serve(server: Arc<Server>, listener: TcpListener) -> io::Result<()> {
    let addr = listener.local_addr()?;
    // A blocked accept() wakes up when something connects: the shutdown hook connects to itself.
    let wake_addr = match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => SocketAddr::from(([127, 0, 0, 1], a.port())),
        SocketAddr::V6(a) if a.ip().is_unspecified() => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port())),
        other => other,
    };
    server.on_shutdown(move || {
        let _ = TcpStream::connect_timeout(&wake_addr, Duration::from_secs(1));
    });
    connection::prepare_listener(&listener)?;
    let workers = Workers::default();
    let admission = Arc::new(Admission::new(&server.settings));
    let closer = Closer::start(server.settings.linger);
    let busy = ServerConnection::busy_reply();
    let mut backoff = Duration::from_millis(5);

    while !server.is_shutting_down() {
        let (stream, peer) = match listener.accept() {
            Ok(pair) => {
                backoff = Duration::from_millis(5);
                pair
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Too many open files, no buffers, a connection aborted before accept: all pass.
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "accept failed; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        if server.is_shutting_down() {
            break;
        }
        let stream = Arc::new(stream);
        match admission.admit(peer.ip(), &stream) {
            Some(ticket) => {
                let s = server.clone();
                if let Err(e) = workers.run(move || connection::serve(&s, stream, peer, ticket)) {
                    error!(error = %e, "could not start a connection thread");
                }
            }
            None => {
                // `[CAP-1]`, `[CAP-2]`: BUSY without reading, and no thread for this client.
                info!(%peer, "at capacity: BUSY");
                if let Ok(stream) = Arc::try_unwrap(stream) {
                    closer.refuse(stream, &busy);
                }
            }
        }
    }

    drop(listener);
    let grace = server.settings.grace;
    let deadline = Instant::now() + grace;
    info!(open = admission.open(), grace_ms = grace.as_millis() as u64, "draining");
    if !admission.wait_empty(deadline) {
        warn!(open = admission.open(), "grace period over: closing the remaining connections");
        admission.close_all();
        admission.wait_empty(Instant::now() + Duration::from_secs(5));
    }
    info!("stopped");
    Ok(())
}
