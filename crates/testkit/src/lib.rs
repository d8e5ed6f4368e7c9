//! `ferry-testkit`: the server integration suite, written once and run against every engine.
//!
//! An engine's test file names the engine and nothing else:
//!
//! ```ignore
//! fn start(settings: ferry_core::Settings) -> std::io::Result<ferry_testkit::Handle> {
//!     let running = ferry_blocking::spawn(settings, ferry_testkit::ANY_LOOPBACK_PORT)?;
//!     Ok(ferry_testkit::Handle::new(running.addr, running.server.clone(), move || running.wait()))
//! }
//! ferry_testkit::server_suite!(start);
//! ```
//!
//! - [`server`]: [`TestServer`], a server on 127.0.0.1 with a fresh temporary root, in-process
//!   through an engine's [`StartFn`] or as a real `ferryd` process.
//! - [`client`]: [`Client`], a raw client over a `TcpStream` with 5 s read and write timeouts,
//!   built on ferry-proto's `ClientConnection` and encoders, able to send any bytes at all.
//! - [`suite`]: one `pub fn` per case, each citing the PROTOCOL.md requirement ids it checks;
//!   [`server_suite!`] turns them into `#[test]`s.
//!
//! Nothing here sleeps and hopes: a test waits for an event (a reply, EOF) with a deadline, or, when
//! there is no event to wait on, polls a condition every few milliseconds up to a deadline.

pub mod client;
pub mod server;
pub mod suite;
pub mod tls;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use client::{Client, Item, ReadError, Reply};
use ferry_core::{Server, Settings};
pub use server::TestServer;

/// Where an in-process engine binds: 127.0.0.1, a free port.
pub const ANY_LOOPBACK_PORT: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 0));

/// How an engine is started: bind 127.0.0.1 port 0 ([`ANY_LOOPBACK_PORT`]), serve `settings` in the
/// background, and hand back a [`Handle`].
pub type StartFn = fn(Settings) -> io::Result<Handle>;

/// A server an engine is running in this process. Dropping it shuts the server down and waits for
/// it: no server outlives its test.
pub struct Handle {
    /// The address actually bound: the one the suite's clients use.
    pub addr: SocketAddr,
    /// The plain listener and the TLS listener (PROTOCOL.md § 18), where the engine opened them
    /// ([`Handle::listeners`]); `addr` is one of them.
    pub plain_addr: Option<SocketAddr>,
    pub tls_addr: Option<SocketAddr>,
    server: Arc<Server>,
    wait: Option<Box<dyn FnOnce() -> io::Result<()> + Send>>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Handle {
    /// A running server: its address, its shared state (through which a shutdown is requested, as
    /// a signal would), and how to wait until it has drained and stopped.
    pub fn new(addr: SocketAddr, server: Arc<Server>, wait: impl FnOnce() -> io::Result<()> + Send + 'static) -> Self {
        Self { addr, plain_addr: None, tls_addr: None, server, wait: Some(Box::new(wait)) }
    }

    /// Says which listeners the engine opened: the suite's TLS cases use them.
    #[must_use]
    pub fn listeners(mut self, plain: SocketAddr, tls: Option<SocketAddr>) -> Self {
        self.plain_addr = Some(plain);
        self.tls_addr = tls;
        self
    }

    /// The server's shared state.
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }

    /// Starts the graceful shutdown, as SIGTERM would.
    pub fn shutdown(&self) {
        self.server.request_shutdown();
    }

    /// Waits until the server has stopped (after a shutdown was requested), at most `within`.
    ///
    /// # Panics
    /// The server did not stop in time, or its engine failed.
    #[track_caller]
    pub fn wait_stopped(&mut self, within: Duration) {
        let Some(wait) = self.wait.take() else { return };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(wait());
        });
        match rx.recv_timeout(within) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("the engine failed: {e}"),
            Err(_) => panic!("the server did not stop within {within:?}"),
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(wait) = self.wait.take() {
            self.server.request_shutdown();
            let _ = wait();
        }
    }
}

/// Polls `condition` every 5 ms until it holds or `within` passes; returns whether it held. For
/// conditions no event announces (a file vanishing, a history record closing).
pub fn wait_until(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Deterministic, non-repeating test content: `len` bytes that differ for each `seed` (a simple
/// xorshift stream, so two versions of a file never share a block).
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The MD5 of `data`.
pub fn md5(data: &[u8]) -> ferry_proto::Digest {
    ferry_proto::Digest::of(data)
}

/// A valid name, for building requests.
///
/// # Panics
/// `s` is not a valid name.
#[track_caller]
pub fn name(s: &str) -> ferry_proto::Name {
    ferry_proto::Name::parse(s).unwrap_or_else(|e| panic!("{s:?} is not a valid name: {e}"))
}
