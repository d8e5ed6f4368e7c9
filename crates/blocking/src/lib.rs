//! `ferry-blocking`: the reference server engine — std::net, one thread per client, no async.
//!
//! It owns sockets and threads and nothing else: every protocol and storage decision is made by
//! the [`ferry_core::Session`] it drives. Read it as the plainest statement of what an engine
//! must do: admit or refuse connections (`admission`), shuttle bytes with deadlines
//! (`connection`) on threads that accept their own connections and are reused from one to the
//! next (`acceptors`), send file bodies without copying them through user space (`body`),
//! and drain on shutdown ([`serve`]).

mod acceptors;
mod admission;
mod body;
mod closer;
mod connection;
mod tls;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferry_core::{Server, Settings};
use tracing::{info, warn};

use crate::acceptors::Acceptors;
use crate::admission::Admission;
use crate::closer::Closer;
pub use crate::connection::prepare_listener;

/// A server running on a background thread: what tests and embedders use.
#[derive(Debug)]
pub struct Running {
    /// The address actually bound (port 0 resolved).
    pub addr: SocketAddr,
    /// The TLS listener's address, if there is one ([`spawn_with`]).
    pub tls_addr: Option<SocketAddr>,
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
    spawn_with(settings, listen, None)
}

/// [`spawn`], with a TLS listener as well (PROTOCOL.md § 18): `tls` is its address and
/// configuration; [`Running::tls_addr`] gives the port bound.
///
/// # Errors
/// The root cannot be opened or an address cannot be bound.
pub fn spawn_with(
    settings: Settings,
    listen: SocketAddr,
    tls: Option<(SocketAddr, Arc<rustls::ServerConfig>)>,
) -> io::Result<Running> {
    let server = Server::new(settings)?;
    let plain = Listener::bind(listen, None)?;
    let addr = plain.socket.local_addr()?;
    let mut listeners = vec![plain];
    let mut tls_addr = None;
    if let Some((at, config)) = tls {
        let l = Listener::bind(at, Some(config))?;
        tls_addr = Some(l.socket.local_addr()?);
        listeners.push(l);
    }
    let s = server.clone();
    let thread = std::thread::Builder::new().name("ferry-accept".into()).spawn(move || serve_all(s, listeners))?;
    Ok(Running { addr, tls_addr, server, thread: Some(thread) })
}

/// A listening socket and, for a TLS listener, its configuration.
#[derive(Debug)]
pub struct Listener {
    pub socket: TcpListener,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Listener {
    /// Binds `addr` and sets the options accepted sockets inherit ([`prepare_listener`]).
    ///
    /// # Errors
    /// The address cannot be bound.
    pub fn bind(addr: SocketAddr, tls: Option<Arc<rustls::ServerConfig>>) -> io::Result<Self> {
        let socket = TcpListener::bind(addr)?;
        prepare_listener(&socket)?;
        Ok(Self { socket, tls })
    }
}

/// Serves connections from `listener` until a shutdown is requested, then drains: connections
/// waiting for a request are told `SHUTTING_DOWN`, transfers in flight get `grace` to finish,
/// the rest are closed (§ 13).
///
/// # Errors
/// The listener's options cannot be set, or no connection thread can be started.
pub fn serve(server: Arc<Server>, listener: TcpListener) -> io::Result<()> {
    serve_all(server, vec![Listener { socket: listener, tls: None }])
}

/// [`serve`] on several listeners at once, plain and TLS, sharing the caps (`max_clients` counts
/// connections on all of them).
///
/// # Errors
/// A listener's options cannot be set, or no connection thread can be started.
pub fn serve_all(server: Arc<Server>, listeners: Vec<Listener>) -> io::Result<()> {
    let admission = Arc::new(Admission::new(&server.settings));
    let closer = Closer::start(server.settings.linger);
    let mut all = Vec::new();
    for Listener { socket, tls } in listeners {
        connection::prepare_listener(&socket)?;
        all.push(Arc::new(Acceptors::new(server.clone(), socket, tls, admission.clone(), closer.clone())));
    }
    let (stop_tx, stop_rx) = std::sync::mpsc::sync_channel::<()>(1);
    // Weak: the server keeps its hooks, and must not keep the listeners open through them.
    let shut: Vec<_> = all.iter().map(Arc::downgrade).collect();
    server.on_shutdown(move || {
        for acceptors in shut.iter().filter_map(std::sync::Weak::upgrade) {
            // Stops listening and wakes every thread waiting in accept at once (Linux fails
            // them); they would also notice within a tick.
            let _ = rustix::net::shutdown(&acceptors.listener, rustix::net::Shutdown::Read);
        }
        let _ = stop_tx.try_send(());
    });
    for acceptors in &all {
        acceptors.start_thread()?;
    }
    drop(all);
    let _ = stop_rx.recv();
    admission.close();

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
