//! TLS for tests of clients: a private CA whose certificates are made at run time (no key is
//! ever checked in), and a TLS terminator that puts a real TLS listener in front of a real,
//! plain Ferry server and relays the decrypted bytes.
//!
//! The terminator stands in for the engines' own TLS listeners (`ferryd --tls-listen`) until
//! they have them, and stays useful after: its configuration can be made wrong on purpose
//! (another ALPN protocol, none), and it counts what it decrypted, so a test can tell that a
//! client refused a server before sending it a single Ferry byte.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferry_tls::generate::{Ca, Validity};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustls::{ServerConfig, ServerConnection};

/// A private CA in a directory: `ca.pem`, and the certificates it issues, as PEM files.
#[derive(Debug)]
pub struct Pki {
    ca: Ca,
    /// `DIR/NAME`: the CA's file is this with `.pem`, its certificates' files start with it.
    prefix: String,
}

/// A server certificate's files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// A new CA named `name`, its certificate written to `dir/NAME.pem`.
    ///
    /// # Panics
    /// The CA cannot be made or written.
    pub fn new(dir: &Path, name: &str) -> Self {
        let ca = Ca::new(name).expect("making a CA");
        std::fs::create_dir_all(dir).expect("creating the certificates' directory");
        std::fs::write(dir.join(format!("{name}.pem")), ca.cert_pem()).expect("writing the CA certificate");
        Self { ca, prefix: dir.join(name).to_string_lossy().into_owned() }
    }

    /// The CA's certificate file: what a client trusts (`ferry --ca`).
    pub fn ca_file(&self) -> PathBuf {
        format!("{}.pem", self.prefix).into()
    }

    /// A server certificate for `names` (DNS names or IP addresses), written as
    /// `NAME-label.pem` and `NAME-label.key`.
    ///
    /// # Panics
    /// The certificate cannot be made or written.
    pub fn issue(&self, label: &str, names: &[&str], validity: Validity) -> CertFiles {
        let issued = self.ca.issue(names, validity).expect("issuing a certificate");
        let base = &self.prefix;
        let files = CertFiles { cert: format!("{base}-{label}.pem").into(), key: format!("{base}-{label}.key").into() };
        std::fs::write(&files.cert, issued.cert_pem).expect("writing a certificate");
        std::fs::write(&files.key, issued.key_pem).expect("writing a key");
        files
    }
}

/// What a [`Terminator`] has seen.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// TLS handshakes completed.
    pub handshakes: AtomicU64,
    /// Decrypted bytes received from clients: Ferry bytes, hellos included.
    pub app_bytes: AtomicU64,
    /// TLS `close_notify` alerts received from clients: sessions they ended cleanly.
    pub close_notifies: AtomicU64,
    /// Connections over (closed by either side, or failed).
    pub finished: AtomicU64,
}

/// A TLS listener on 127.0.0.1 (or another address) that relays each connection's decrypted
/// bytes to a plain server, and the server's answers back, encrypted. Stopped when dropped,
/// its connections with it.
pub struct Terminator {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Terminator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminator").field("addr", &self.addr).field("stats", &self.stats).finish_non_exhaustive()
    }
}

/// How long a relayed connection may stay idle before the terminator closes it.
const IDLE: Duration = Duration::from_secs(30);
/// How often the terminator's threads look whether they should stop.
const TICK: Duration = Duration::from_millis(50);
/// How long a connection whose backend closed still reads the client's last records.
const LINGER: Duration = Duration::from_millis(500);

impl Terminator {
    /// Ferry's own server configuration (`ferry_tls::server_config`) with `cert`, in front of
    /// `backend`, on 127.0.0.1.
    ///
    /// # Panics
    /// The certificate cannot be loaded, or no port can be bound.
    pub fn start(backend: SocketAddr, cert: &CertFiles) -> Self {
        Self::start_with(backend, "127.0.0.1:0".parse().expect("an address"), config(cert))
    }

    /// Any configuration, on any local address.
    ///
    /// # Panics
    /// No port can be bound.
    pub fn start_with(backend: SocketAddr, listen: SocketAddr, config: Arc<ServerConfig>) -> Self {
        let listener = TcpListener::bind(listen).expect("binding the terminator's port");
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let addr = listener.local_addr().expect("the bound address");
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let threads = Arc::new(Mutex::new(Vec::new()));
        let (stats2, stop2, threads2) = (stats.clone(), stop.clone(), threads.clone());
        let acceptor = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                if !readable(&listener, TICK) {
                    continue;
                }
                let Ok((client, _)) = listener.accept() else { continue };
                stats2.accepted.fetch_add(1, Ordering::SeqCst);
                let (stats, stop, config) = (stats2.clone(), stop2.clone(), config.clone());
                let t = std::thread::spawn(move || {
                    let _ = relay(client, backend, config, &stats, &stop);
                    stats.finished.fetch_add(1, Ordering::SeqCst);
                });
                threads2.lock().expect("not poisoned").push(t);
            }
        });
        Self { addr, stats, stop, threads, acceptor: Some(acceptor) }
    }

    /// Waits until `n` connections are over, at most `within`; whether they are.
    pub fn wait_finished(&self, n: u64, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.stats.finished.load(Ordering::SeqCst) < n {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }
}

impl Drop for Terminator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        for t in self.threads.lock().expect("not poisoned").drain(..) {
            let _ = t.join();
        }
    }
}

/// `ferry_tls::server_config` with the certificate in `cert`.
///
/// # Panics
/// The certificate cannot be loaded.
pub fn config(cert: &CertFiles) -> Arc<ServerConfig> {
    let loaded = ferry_tls::ServerCert::load(&cert.cert, &cert.key).expect("loading the certificate");
    ferry_tls::server_config(loaded).expect("a server configuration")
}

/// [`config`] choosing among `alpn` instead of `ferry/1`: a server of another protocol, or
/// (with none) one that chooses no protocol at all.
///
/// # Panics
/// The certificate cannot be loaded.
pub fn config_with_alpn(cert: &CertFiles, alpn: &[&[u8]]) -> Arc<ServerConfig> {
    let mut c = (*config(cert)).clone();
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(c)
}

/// Whether `fd` is readable within `timeout`.
fn readable(fd: &impl std::os::fd::AsFd, timeout: Duration) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    let t = Timespec::try_from(timeout).expect("a short timeout");
    matches!(poll(&mut fds, Some(&t)), Ok(n) if n > 0)
}

/// Relays one connection until either side closes it, it stays idle for [`IDLE`], or the
/// terminator stops. The backend is connected only when the first decrypted byte arrives.
fn relay(
    mut client: TcpStream,
    backend_addr: SocketAddr,
    config: Arc<ServerConfig>,
    stats: &Stats,
    stop: &AtomicBool,
) -> io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_write_timeout(Some(IDLE))?;
    let mut tls = ServerConnection::new(config).map_err(io::Error::other)?;
    tls.set_buffer_limit(None);
    let mut backend: Option<TcpStream> = None;
    // Once the backend has closed, the client's last records (its close_notify) are still read,
    // for a moment, as a lingering close would.
    let mut backend_closed: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];
    let mut last_activity = Instant::now();
    let result = loop {
        while tls.wants_write() {
            tls.write_tls(&mut client)?;
        }
        if stop.load(Ordering::SeqCst)
            || last_activity.elapsed() > IDLE
            || backend_closed.is_some_and(|at| at.elapsed() > LINGER)
        {
            break Ok(());
        }
        let (client_ready, backend_ready) = {
            let mut fds = vec![PollFd::new(&client, PollFlags::IN)];
            if let Some(b) = &backend {
                fds.push(PollFd::new(b, PollFlags::IN));
            }
            let t = Timespec::try_from(TICK).expect("a short timeout");
            match poll(&mut fds, Some(&t)) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => break Err(e.into()),
            }
            let ready = |f: &PollFd<'_>| !f.revents().is_empty();
            (ready(&fds[0]), fds.get(1).is_some_and(ready))
        };
        if client_ready {
            last_activity = Instant::now();
            if tls.read_tls(&mut client)? == 0 {
                break Ok(());
            }
            let was_handshaking = tls.is_handshaking();
            let state = match tls.process_new_packets() {
                Ok(state) => state,
                Err(_) => {
                    // The alert that says why goes out; then the connection is over.
                    let _ = tls.write_tls(&mut client);
                    break Ok(());
                }
            };
            if was_handshaking && !tls.is_handshaking() {
                stats.handshakes.fetch_add(1, Ordering::SeqCst);
            }
            let closed = state.peer_has_closed();
            loop {
                match tls.reader().read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) if backend_closed.is_some() => {}
                    Ok(n) => {
                        stats.app_bytes.fetch_add(n as u64, Ordering::SeqCst);
                        if backend.is_none() {
                            let b = TcpStream::connect(backend_addr)?;
                            b.set_write_timeout(Some(IDLE))?;
                            backend = Some(b);
                        }
                        backend.as_mut().expect("connected").write_all(&buf[..n])?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            if closed {
                stats.close_notifies.fetch_add(1, Ordering::SeqCst);
                if let Some(b) = &backend {
                    let _ = b.shutdown(Shutdown::Write);
                }
            }
        }
        if backend_ready {
            last_activity = Instant::now();
            let b = backend.as_mut().expect("polled");
            match b.read(&mut buf) {
                Ok(0) | Err(_) => {
                    // The session is over: say so, then wait for the client to close (or for the
                    // idle limit), so that its close_notify is seen whichever end closed first.
                    tls.send_close_notify();
                    backend = None;
                    backend_closed = Some(Instant::now());
                }
                Ok(n) => tls.writer().write_all(&buf[..n])?,
            }
        }
    };
    while tls.wants_write() {
        if tls.write_tls(&mut client).is_err() {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    result
}
