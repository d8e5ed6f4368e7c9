//! Connection threads that accept their own connections (leader/followers).
//!
//! Every idle thread waits in `accept(2)` on the shared listener; the kernel wakes one of them
//! per connection, and that thread admits and serves it itself, then goes back to `accept`. No
//! connection is handed from thread to thread: a new connection costs one wakeup, not a
//! hand-over (a futex wake and a second thread's wakeup), and no thread is created or torn down
//! for it while idle threads remain.
//!
//! One thread is always accepting: a thread that takes a connection while no other is waiting
//! starts a new one first. So the threads number at most the connections admitted
//! (`max_clients`) plus the ones waiting in `accept`, and those beyond one exit after
//! [`IDLE_KEEP`] without a connection. Accepts wake every tick (the listener's
//! `SO_RCVTIMEO`, see [`connection::prepare_listener`]), so a thread notices a shutdown, or that
//! it has been idle long enough, without anyone connecting to wake it.

use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_core::Server;
use tracing::{error, info, warn};

use crate::admission::{Admission, Admitted};
use crate::closer::Closer;
use crate::connection;

/// How long a thread beyond the one always accepting waits for a connection before it exits.
pub(crate) const IDLE_KEEP: Duration = Duration::from_secs(30);

/// What the accepting threads share.
pub(crate) struct Acceptors {
    pub(crate) server: Arc<Server>,
    pub(crate) listener: TcpListener,
    pub(crate) admission: Arc<Admission>,
    pub(crate) closer: Closer,
    /// The `BUSY` reply for clients over a cap (`[CAP-1]`).
    pub(crate) busy: Vec<u8>,
    /// This listener's TLS configuration, if it is a TLS listener (PROTOCOL.md § 18).
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// Threads waiting in `accept` now, or about to.
    accepting: AtomicUsize,
    /// [`IDLE_KEEP`], shorter in tests.
    idle_keep: Duration,
}

impl Acceptors {
    pub(crate) fn new(
        server: Arc<Server>,
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        admission: Arc<Admission>,
        closer: Closer,
    ) -> Self {
        let busy = ferry_proto::server::ServerConnection::busy_reply();
        Self { server, listener, admission, closer, busy, tls, accepting: AtomicUsize::new(0), idle_keep: IDLE_KEEP }
    }

    /// Starts one more accepting thread.
    ///
    /// # Errors
    /// The thread could not be started.
    pub(crate) fn start_thread(self: &Arc<Self>) -> io::Result<()> {
        self.accepting.fetch_add(1, Ordering::SeqCst);
        let me = self.clone();
        std::thread::Builder::new().name("ferry-conn".into()).spawn(move || me.run()).map(drop).inspect_err(|_| {
            self.accepting.fetch_sub(1, Ordering::SeqCst);
        })
    }

    /// Threads waiting in `accept` now (for tests).
    #[cfg(test)]
    pub(crate) fn accepting(&self) -> usize {
        self.accepting.load(Ordering::SeqCst)
    }

    /// One thread's life: accept, serve, accept again, until a shutdown or a long idle spell.
    /// Counted in `accepting` on entry.
    fn run(self: Arc<Self>) {
        let mut idle_since = Instant::now();
        let mut backoff = Duration::from_millis(5);
        loop {
            if self.server.is_shutting_down() {
                self.accepting.fetch_sub(1, Ordering::SeqCst);
                return;
            }
            let (stream, peer) = match self.listener.accept() {
                Ok(pair) => {
                    backoff = Duration::from_millis(5);
                    pair
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    if idle_since.elapsed() >= self.idle_keep && self.leave_if_not_last() {
                        return;
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The shutdown hook shut the listener: every waiting accept fails at once.
                Err(_) if self.server.is_shutting_down() => continue,
                Err(e) => {
                    // Too many open files, no buffers, a connection aborted before accept: all pass.
                    warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "accept failed; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            // This thread is about to serve: someone else must be accepting meanwhile.
            if self.accepting.fetch_sub(1, Ordering::SeqCst) == 1 && !self.server.is_shutting_down() {
                if let Err(e) = self.start_thread() {
                    error!(error = %e, "could not start a connection thread; accepting again after this connection");
                }
            }
            let stream = Arc::new(stream);
            match self.admission.admit(peer.ip(), &stream) {
                Admitted::Yes(ticket) => connection::serve(&self.server, stream, peer, self.tls.as_ref(), ticket),
                Admitted::Busy => {
                    // `[CAP-1]`, `[CAP-2]`: BUSY without reading, and no thread for this client.
                    info!(%peer, "at capacity: BUSY");
                    if let Ok(stream) = Arc::try_unwrap(stream) {
                        self.closer.refuse(stream, &self.busy, self.tls.as_ref());
                    }
                }
                // The drain has begun: the connection is closed unanswered, as before a listener
                // closes.
                Admitted::Closed => {}
            }
            self.accepting.fetch_add(1, Ordering::SeqCst);
            idle_since = Instant::now();
        }
    }

    /// Leaves the accepting threads unless this is the last one; returns whether it left.
    fn leave_if_not_last(&self) -> bool {
        self.accepting.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n > 1).then(|| n - 1)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use ferry_proto::ClientHello;

    use super::*;

    /// A server's acceptors on a fresh root, with one thread started; idle threads beyond one
    /// leave after `idle_keep`.
    fn start(idle_keep: Duration) -> (tempfile::TempDir, Arc<Server>, Arc<Acceptors>) {
        let dir = tempfile::tempdir().unwrap();
        let settings = ferry_core::Settings { root: dir.path().to_owned(), ..ferry_core::Settings::default() };
        let server = Server::new(settings).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        connection::prepare_listener(&listener).unwrap();
        let admission = Arc::new(Admission::new(&server.settings));
        let closer = Closer::start(server.settings.linger);
        let mut acceptors = Acceptors::new(server.clone(), listener, None, admission, closer);
        acceptors.idle_keep = idle_keep;
        let acceptors = Arc::new(acceptors);
        acceptors.start_thread().unwrap();
        (dir, server, acceptors)
    }

    /// A client that has been answered its hello: a thread is serving it.
    fn served_client(acceptors: &Acceptors) -> TcpStream {
        let mut c = TcpStream::connect(acceptors.listener.local_addr().unwrap()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut hello = Vec::new();
        ClientHello { min_version: 1, max_version: 1, token: None }.encode(&mut hello);
        c.write_all(&hello).unwrap();
        let mut first = [0u8; 1];
        c.read_exact(&mut first).unwrap();
        assert_eq!(first[0], 0x80, "a server hello");
        c
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A thread that takes a connection while no other waits starts one first, so connections
    /// are served at once while others are; a thread that has served one goes back to accept.
    #[test]
    fn one_thread_always_accepts_and_threads_come_back_to_accept() {
        let (_dir, server, acceptors) = start(IDLE_KEEP);
        wait_for("the first thread accepts", || acceptors.accepting() == 1);
        let first = served_client(&acceptors);
        let second = served_client(&acceptors);
        wait_for("a thread accepts while two serve", || acceptors.accepting() == 1);
        drop((first, second));
        wait_for("both serving threads accept again", || acceptors.accepting() == 3);
        let third = served_client(&acceptors);
        wait_for("the third client took a waiting thread", || acceptors.accepting() == 2);
        drop(third);
        server.request_shutdown();
        let _ = rustix::net::shutdown(&acceptors.listener, rustix::net::Shutdown::Read);
        wait_for("every thread leaves at shutdown", || acceptors.accepting() == 0);
    }

    /// Threads beyond the one always accepting leave after a spell without a connection.
    #[test]
    fn idle_threads_beyond_one_leave() {
        let (_dir, server, acceptors) = start(Duration::from_millis(300));
        let clients: Vec<_> = (0..3).map(|_| served_client(&acceptors)).collect();
        drop(clients);
        wait_for("the idle threads leave, but one", || acceptors.accepting() == 1);
        let again = served_client(&acceptors);
        drop(again);
        server.request_shutdown();
        wait_for("the last one leaves at shutdown, within a tick", || acceptors.accepting() == 0);
    }
}
