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
//!   or uncached one is sent with sendfile from the pool ([`body`]).
//! - No pool thread ever waits for a hash permit (`[SEC-3]`): a GET of a file not hashed yet
//!   hands its session's hash job back to the reactor, which awaits a server-wide semaphore of
//!   `max_concurrent_hashes` permits and only then runs the hash on the pool.
//! - An idle connection holds no buffer: it waits for readability, then reads.
//! - Shutdown drains like mini-redis: a watch tells every connection, each holds a clone of an
//!   mpsc sender, and the server knows the drain is done when all are dropped.

mod body;
mod connection;

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
    let server = Server::new(settings)?;
    let std_listener = std::net::TcpListener::bind(listen)?;
    prepare_listener(&std_listener)?;
    let addr = std_listener.local_addr()?;
    let s = server.clone();
    let thread = std::thread::Builder::new().name("ferry-async-main".into()).spawn(move || {
        rt.block_on(async move {
            std_listener.set_nonblocking(true)?;
            serve(s, TcpListener::from_std(std_listener)?).await
        })
    })?;
    Ok(Running { addr, server, thread: Some(thread) })
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
/// Only if the listener's address cannot be read; accept errors are retried.
pub async fn serve(server: Arc<Server>, listener: TcpListener) -> io::Result<()> {
    prepare_listener(&listener)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (force_tx, force_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let hook_tx = stop_tx.clone();
    server.on_shutdown(move || {
        let _ = hook_tx.send(true);
    });
    let settings = &server.settings;
    let served = Arc::new(Semaphore::new(settings.max_clients.max(1) as usize));
    // Sockets held at once: the served ones plus those being refused.
    let sockets = Arc::new(Semaphore::new(settings.max_clients.max(1) as usize + REFUSING_MAX));
    let per_ip = Arc::new(PerIp::default());
    let hashes = Arc::new(Semaphore::new(settings.max_concurrent_hashes.max(1)));
    let (drain_tx, mut drain_rx) = mpsc::channel::<()>(1);
    let busy: Arc<[u8]> = ServerConnection::busy_reply().into();
    let mut stop = stop_rx.clone();
    let mut backoff = Duration::from_millis(5);

    loop {
        // The socket permit is taken before accept: a flood cannot make us hold unbounded sockets.
        let socket_permit = tokio::select! {
            p = sockets.clone().acquire_owned() => p.map_err(io::Error::other)?,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
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
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        let admitted = served
            .clone()
            .try_acquire_owned()
            .ok()
            .and_then(|p| per_ip.take(peer.ip(), settings.max_per_ip.max(1)).map(|slot| (p, slot)));
        match admitted {
            Some((permit, slot)) => {
                let conn = connection::Conn {
                    server: server.clone(),
                    stop: stop_rx.clone(),
                    force: force_rx.clone(),
                    hashes: hashes.clone(),
                    _drain: drain_tx.clone(),
                    _permits: (permit, slot, socket_permit),
                };
                tokio::spawn(conn.serve(stream, peer));
            }
            None => {
                info!(%peer, "at capacity: BUSY");
                let linger = settings.linger;
                let busy = busy.clone();
                tokio::spawn(async move {
                    connection::refuse(stream, &busy, linger).await;
                    drop(socket_permit);
                });
            }
        }
    }

    drop(listener);
    drop(drain_tx);
    let grace = server.settings.grace;
    info!(
        open = settings.max_clients as usize - served.available_permits(),
        grace_ms = grace.as_millis() as u64,
        "draining"
    );
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

/// Serves a bound std listener on a new runtime with `workers` reactor threads (0: one per
/// core), blocking until the drain is done: the entry point for binaries that do not use tokio
/// themselves.
///
/// # Errors
/// The runtime cannot be built or the listener cannot be registered.
pub fn serve_blocking(server: Arc<Server>, listener: std::net::TcpListener, workers: usize) -> io::Result<()> {
    let rt = runtime(workers)?;
    rt.block_on(async move {
        listener.set_nonblocking(true)?;
        serve(server, TcpListener::from_std(listener)?).await
    })
}
