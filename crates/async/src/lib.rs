//! `ferry-async`: the tokio engine. A driver, like quinn's: it moves bytes between sockets and
//! [`ferry_core::Session`]s and makes no protocol or storage decision of its own — reading it next
//! to `ferry-blocking` shows the same steps, done with tasks instead of threads.
//!
//! - Admission: a semaphore bounds the sockets held (taken before `accept`), a second one the
//!   connections served; a client beyond the cap gets `BUSY` and a lingering close (`[CAP-1]`).
//! - Disk work stays off the reactor, and so does nothing else: input is fed to the session on
//!   the reactor, which answers there what the kernel's and the store's caches hold (a GET or
//!   STAT of a file whose digest is in memory, a LIST of an unchanged root, STATUS) and hands
//!   back the rest ([`Session::defer_store_calls`]) for one trip to the blocking pool. A small
//!   body the page cache holds leaves from the reactor with its head in one `writev`; a large
//!   or uncached one is sent with sendfile from the pool (`body`).
//! - No pool thread ever waits for a hash permit (`[SEC-3]`): a GET of a file not hashed yet
//!   hands its session's hash job back to the reactor, which awaits a server-wide semaphore of
//!   `max_concurrent_hashes` permits and only then runs the hash on the pool.
//! - An idle connection holds no buffer: it waits for readability, then reads.
//! - Shutdown drains like mini-redis: a watch tells every connection, each holds a clone of an
//!   mpsc sender, and the server knows the drain is done when all are dropped.

mod body;
mod connection;
mod tls;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[cfg(doc)]
use ferry_core::Session;
use ferry_core::{Server, Settings};
use ferry_proto::server::ServerConnection;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{error, info, warn};

/// Sockets refused with BUSY that may linger at once, beyond the served ones.
const REFUSING_MAX: usize = 1024;

/// A server running on its own runtime thread: what tests and embedders use.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    /// The TLS listener's address, if there is one ([`spawn_with`]).
    pub tls_addr: Option<SocketAddr>,
    pub server: Arc<Server>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl Running {
    /// Starts the graceful shutdown.
    pub fn shutdown(&self) {
        self.server.request_shutdown();
    }

    /// Waits until the server has drained and stopped.
    ///
    /// # Errors
    /// The runtime failed.
    pub fn wait(mut self) -> io::Result<()> {
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(io::Error::other("the server thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.server.request_shutdown();
            let _ = t.join();
        }
    }
}

/// A multi-threaded runtime with `workers` reactor threads (0: one per core).
///
/// # Errors
/// The runtime cannot be built.
pub fn runtime(workers: usize) -> io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all().thread_name("ferry-async");
    if workers > 0 {
        b.worker_threads(workers);
    }
    b.build()
}

/// Binds `listen` and serves `settings` on a runtime of its own, on a background thread.
///
/// # Errors
/// The root cannot be opened or the address cannot be bound.
pub fn spawn(settings: Settings, listen: SocketAddr) -> io::Result<Running> {
    spawn_on(runtime(0)?, settings, listen)
}

/// [`spawn`] on a runtime the caller built: a test may give it a small blocking pool, to show
/// that nothing parks pool threads.
///
/// # Errors
/// The root cannot be opened or the address cannot be bound.
pub fn spawn_on(rt: tokio::runtime::Runtime, settings: Settings, listen: SocketAddr) -> io::Result<Running> {
    spawn_with(rt, settings, listen, None)
}

/// [`spawn_on`], with a TLS listener as well (PROTOCOL.md § 18): `tls` is its address and
/// configuration; [`Running::tls_addr`] gives the port bound.
///
/// # Errors
/// The root cannot be opened or an address cannot be bound.
pub fn spawn_with(
    rt: tokio::runtime::Runtime,
    settings: Settings,
    listen: SocketAddr,
    tls: Option<(SocketAddr, Arc<rustls::ServerConfig>)>,
) -> io::Result<Running> {
    let server = Server::new(settings)?;
    let bind = |at: SocketAddr| -> io::Result<std::net::TcpListener> {
        let l = std::net::TcpListener::bind(at)?;
        prepare_listener(&l)?;
        l.set_nonblocking(true)?;
        Ok(l)
    };
    let plain = bind(listen)?;
    let addr = plain.local_addr()?;
    let mut std_listeners = vec![(plain, None)];
    let mut tls_addr = None;
    if let Some((at, config)) = tls {
        let l = bind(at)?;
        tls_addr = Some(l.local_addr()?);
        std_listeners.push((l, Some(config)));
    }
    let s = server.clone();
    let thread = std::thread::Builder::new().name("ferry-async-main".into()).spawn(move || {
        rt.block_on(async move {
            let mut listeners = Vec::new();
            for (l, tls) in std_listeners {
                listeners.push(Listener { socket: TcpListener::from_std(l)?, tls });
            }
            serve_all(s, listeners).await
        })
    })?;
    Ok(Running { addr, tls_addr, server, thread: Some(thread) })
}

/// Per-address counts of connections served (`[CAP-1]`).
#[derive(Debug, Default)]
struct PerIp {
    counts: Mutex<HashMap<IpAddr, u32>>,
}

/// A connection's place under the per-address cap; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct IpSlot {
    per_ip: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn take(self: &Arc<Self>, ip: IpAddr, max: u32) -> Option<IpSlot> {
        let ip = ferry_core::peer::group(ip);
        let mut c = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = c.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot { per_ip: self.clone(), ip })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut c = self.per_ip.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = c.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.remove(&self.ip);
            }
        }
    }
}

/// Sets, once, the options Linux gives accepted sockets from their listener: TCP_NODELAY
/// (replies are written whole; Nagle's algorithm would only delay them). A connection the kernel
/// queued before this call inherits nothing: call it before anyone can connect ([`spawn`] does;
/// `ferryd` does before it says where it listens). [`serve`] calls it too.
///
/// # Errors
/// The option cannot be set.
pub fn prepare_listener(listener: &impl std::os::fd::AsFd) -> io::Result<()> {
    rustix::net::sockopt::set_tcp_nodelay(listener, true)?;
    Ok(())
}

/// Serves connections until a shutdown is requested, then drains (§ 13).
///
/// # Errors
/// Only if the listener's options cannot be set; accept errors are retried.
pub async fn serve(server: Arc<Server>, listener: TcpListener) -> io::Result<()> {
    serve_all(server, vec![Listener { socket: listener, tls: None }]).await
}

/// A listening socket and, for a TLS listener (PROTOCOL.md § 18), its configuration.
pub struct Listener {
    pub socket: TcpListener,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// What every accept loop shares: the caps count connections on all listeners together.
struct Shared {
    server: Arc<Server>,
    served: Arc<Semaphore>,
    /// Sockets held at once: the served ones plus those being refused.
    sockets: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
    hashes: Arc<Semaphore>,
    busy: Arc<[u8]>,
    stop: watch::Receiver<bool>,
    force: watch::Receiver<bool>,
    drain: mpsc::Sender<()>,
}

/// [`serve`] on several listeners at once, plain and TLS.
///
/// # Errors
/// Only if a listener's options cannot be set; accept errors are retried.
pub async fn serve_all(server: Arc<Server>, listeners: Vec<Listener>) -> io::Result<()> {
    for l in &listeners {
        prepare_listener(&l.socket)?;
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let (force_tx, force_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let hook_tx = stop_tx.clone();
    server.on_shutdown(move || {
        let _ = hook_tx.send(true);
    });
    let settings = &server.settings;
    let (drain_tx, mut drain_rx) = mpsc::channel::<()>(1);
    let shared = Arc::new(Shared {
        served: Arc::new(Semaphore::new(settings.max_clients.max(1) as usize)),
        sockets: Arc::new(Semaphore::new(settings.max_clients.max(1) as usize + REFUSING_MAX)),
        per_ip: Arc::new(PerIp::default()),
        hashes: Arc::new(Semaphore::new(settings.max_concurrent_hashes.max(1))),
        busy: ServerConnection::busy_reply().into(),
        stop: stop_rx,
        force: force_rx,
        drain: drain_tx,
        server: server.clone(),
    });
    let loops: Vec<_> = listeners.into_iter().map(|l| tokio::spawn(accept_loop(shared.clone(), l))).collect();
    for l in loops {
        let _ = l.await;
    }
    let open = settings.max_clients as usize - shared.served.available_permits();
    drop(shared);
    let grace = server.settings.grace;
    info!(open, grace_ms = grace.as_millis() as u64, "draining");
    if tokio::time::timeout(grace, drain_rx.recv()).await.is_err() {
        warn!("grace period over: closing the remaining connections");
        let _ = force_tx.send(true);
        if tokio::time::timeout(Duration::from_secs(5), drain_rx.recv()).await.is_err() {
            error!("connections did not close after the grace period");
        }
    }
    info!("stopped");
    Ok(())
}

/// Accepts on one listener until the shutdown: admits or refuses each connection.
async fn accept_loop(shared: Arc<Shared>, listener: Listener) {
    let Listener { socket: listener, tls } = listener;
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let settings = &shared.server.settings;
    let mut stop = shared.stop.clone();
    let mut backoff = Duration::from_millis(5);
    loop {
        // The socket permit is taken before accept: a flood cannot make us hold unbounded sockets.
        let socket_permit = tokio::select! {
            p = shared.sockets.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff = Duration::from_millis(5);
                pair
            }
            Err(e) => {
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "accept failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let admitted = shared
            .served
            .clone()
            .try_acquire_owned()
            .ok()
            .and_then(|p| shared.per_ip.take(peer.ip(), settings.max_per_ip.max(1)).map(|slot| (p, slot)));
        match admitted {
            Some((permit, slot)) => {
                let conn = connection::Conn {
                    server: shared.server.clone(),
                    stop: shared.stop.clone(),
                    force: shared.force.clone(),
                    hashes: shared.hashes.clone(),
                    _drain: shared.drain.clone(),
                    _permits: (permit, slot, socket_permit),
                };
                match &tls {
                    None => tokio::spawn(conn.serve(stream, peer)),
                    Some(acceptor) => tokio::spawn(conn.serve_tls(stream, peer, acceptor.clone())),
                };
            }
            None => {
                info!(%peer, "at capacity: BUSY");
                let linger = settings.linger;
                let busy = shared.busy.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => connection::refuse(stream, &busy, linger).await,
                        Some(acceptor) => tls::refuse(stream, acceptor, &busy, linger).await,
                    }
                    drop(socket_permit);
                });
            }
        }
    }
}

/// Serves a bound std listener on a new runtime with `workers` reactor threads (0: one per
/// core), blocking until the drain is done: the entry point for binaries that do not use tokio
/// themselves.
///
/// # Errors
/// The runtime cannot be built or the listener cannot be registered.
pub fn serve_blocking(server: Arc<Server>, listener: std::net::TcpListener, workers: usize) -> io::Result<()> {
    serve_all_blocking(server, vec![(listener, None)], workers)
}

/// [`serve_blocking`] on several listeners, plain and TLS.
///
/// # Errors
/// The runtime cannot be built or a listener cannot be registered.
pub fn serve_all_blocking(
    server: Arc<Server>,
    listeners: Vec<(std::net::TcpListener, Option<Arc<rustls::ServerConfig>>)>,
    workers: usize,
) -> io::Result<()> {
    let rt = runtime(workers)?;
    rt.block_on(async move {
        let mut all = Vec::new();
        for (l, tls) in listeners {
            l.set_nonblocking(true)?;
            all.push(Listener { socket: TcpListener::from_std(l)?, tls });
        }
        serve_all(server, all).await
    })
}
