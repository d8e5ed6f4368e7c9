//! [`TestServer`]: a server under test, on 127.0.0.1 with its own temporary root.
//!
//! In-process servers are started through an engine's [`StartFn`]; process servers run the real
//! `ferryd` binary (its path comes from `env!("CARGO_BIN_EXE_ferryd")`, which only ferryd's own
//! tests have). Either way, dropping the `TestServer` stops the server — a child process is killed
//! and reaped — before its root is deleted.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ferry_core::Settings;
use tempfile::TempDir;

use crate::client::{Client, ConnectOptions};
use crate::{Handle, StartFn};

/// How long a `ferryd` process may take to print its address.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

enum Kind {
    InProcess(Handle),
    Process { child: Child, log: PathBuf },
    Stopped,
}

/// A running server and its temporary directory: `dir/root` is the served root; other files of
/// a test (a tokens file, say) can live in `dir`.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The engine's plain and TLS listeners, where it says ([`crate::Handle::listeners`]).
    pub plain_addr: Option<SocketAddr>,
    pub tls_addr: Option<SocketAddr>,
    kind: Kind,
    root: PathBuf,
    dir: TempDir,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer").field("addr", &self.addr).field("root", &self.root).finish_non_exhaustive()
    }
}

/// A fresh temporary directory for a test server, with an empty `root` directory in it.
///
/// # Panics
/// The directory cannot be created.
pub fn new_dir() -> TempDir {
    let dir = tempfile::Builder::new().prefix("ferry-test-").tempdir().expect("a temporary directory");
    std::fs::create_dir(dir.path().join("root")).expect("the root directory");
    dir
}

impl TestServer {
    /// A server with default settings and an empty root.
    #[track_caller]
    pub fn start(engine: StartFn) -> Self {
        Self::start_with(engine, |_| {})
    }

    /// A server with default settings changed by `configure` (the root is set already).
    #[track_caller]
    pub fn start_with(engine: StartFn, configure: impl FnOnce(&mut Settings)) -> Self {
        Self::start_in(engine, new_dir(), configure)
    }

    /// A server on a directory the test prepared (see [`new_dir`]): it serves `dir/root`.
    #[track_caller]
    pub fn start_in(engine: StartFn, dir: TempDir, configure: impl FnOnce(&mut Settings)) -> Self {
        let root = dir.path().join("root");
        let mut settings = Settings { root: root.clone(), ..Settings::default() };
        configure(&mut settings);
        let handle = engine(settings).unwrap_or_else(|e| panic!("starting the server: {e}"));
        let (plain_addr, tls_addr) = (handle.plain_addr, handle.tls_addr);
        Self { addr: handle.addr, plain_addr, tls_addr, kind: Kind::InProcess(handle), root, dir }
    }

    /// Stops this in-process server, as a signal would, and starts a new one with `engine` on the
    /// same root and directory: what survives a restart, survives this.
    ///
    /// # Panics
    /// This is not an in-process server, or the new one cannot start.
    #[track_caller]
    pub fn restart(&mut self, engine: StartFn, configure: impl FnOnce(&mut Settings)) {
        let Kind::InProcess(h) = std::mem::replace(&mut self.kind, Kind::Stopped) else {
            panic!("only an in-process server restarts")
        };
        // As a process would have exited: every thread that held the server (a connection
        // finishing its close, say) has let go of it, and with it of its files and locks. The
        // last reference is dropped here, so that its destructor (which closes the digest index
        // and releases the index's lock) has finished before the new server opens the root. A
        // count seen reaching zero from here would not say that: `Arc::drop` decrements first
        // and runs the destructor after, on the thread that let go last, so the new server could
        // find the index still locked and keep digests nowhere.
        let old = std::sync::Arc::clone(h.server());
        drop(h);
        let let_go = |count: &dyn Fn() -> usize| crate::wait_until(Duration::from_secs(10), || count() == 1);
        assert!(let_go(&|| std::sync::Arc::strong_count(&old)), "the old server let go");
        // A hash job or an upload holds the store itself, and may outlive the server by a moment.
        let store = std::sync::Arc::clone(&old.store);
        drop(old);
        assert!(let_go(&|| std::sync::Arc::strong_count(&store)), "the old store let go");
        drop(store);
        let mut settings = Settings { root: self.root.clone(), ..Settings::default() };
        configure(&mut settings);
        let handle = engine(settings).unwrap_or_else(|e| panic!("restarting the server: {e}"));
        self.addr = handle.addr;
        (self.plain_addr, self.tls_addr) = (handle.plain_addr, handle.tls_addr);
        self.kind = Kind::InProcess(handle);
    }

    /// Runs the `ferryd` binary at `ferryd` with `--listen 127.0.0.1:0 --root DIR/root` and `args`,
    /// and reads the address from its `listening on ADDR` line. Its log goes to `DIR/ferryd.log`.
    #[track_caller]
    pub fn process(ferryd: &Path, args: &[&str]) -> Self {
        Self::process_in(ferryd, new_dir(), args)
    }

    /// [`TestServer::process`] on a directory the test prepared.
    #[track_caller]
    pub fn process_in(ferryd: &Path, dir: TempDir, args: &[&str]) -> Self {
        let root = dir.path().join("root");
        let log = dir.path().join("ferryd.log");
        let (child, addr, tls_addr) = spawn_ferryd(ferryd, &root, &log, args);
        Self { addr, plain_addr: Some(addr), tls_addr, kind: Kind::Process { child, log }, root, dir }
    }

    /// Runs `ferryd` again on the same root, once this process server has stopped (see
    /// [`TestServer::wait_stopped`]): what survives a restart, survives this. The log starts
    /// afresh.
    ///
    /// # Panics
    /// This is an in-process server, or the new process does not start.
    #[track_caller]
    pub fn respawn(&mut self, ferryd: &Path, args: &[&str]) {
        let log = match std::mem::replace(&mut self.kind, Kind::Stopped) {
            Kind::Process { mut child, log } => {
                let _ = child.kill();
                let _ = child.wait();
                log
            }
            Kind::Stopped => self.dir.path().join("ferryd.log"),
            Kind::InProcess(_) => panic!("respawn is for process servers; see restart"),
        };
        let (child, addr, tls_addr) = spawn_ferryd(ferryd, &self.root, &log, args);
        (self.addr, self.plain_addr, self.tls_addr) = (addr, Some(addr), tls_addr);
        self.kind = Kind::Process { child, log };
    }

    /// The served root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The test's temporary directory (the root's parent).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The path of `name` in the root, to check the file system directly.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Writes a file straight into the root, as an operator would.
    #[track_caller]
    pub fn write_file(&self, name: &str, data: &[u8]) {
        std::fs::write(self.path(name), data).unwrap_or_else(|e| panic!("writing {name}: {e}"));
    }

    /// A file's content read straight from the root, or `None` if it does not exist.
    pub fn read_file(&self, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.path(name)).ok()
    }

    /// The names in the root directory, as the file system lists them (temporary files included).
    #[track_caller]
    pub fn root_entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.root)
            .expect("reading the root")
            .map(|e| e.expect("a directory entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Names in the root that start with the reserved `.ferry` prefix: a server's temporary files.
    pub fn temp_files(&self) -> Vec<String> {
        self.root_entries().into_iter().filter(|n| n.starts_with(ferry_proto::name::RESERVED_PREFIX)).collect()
    }

    /// Asserts that within `within` no temporary file is left in the root (`[STORE-2]`).
    #[track_caller]
    pub fn assert_no_temp_files(&self, within: Duration) {
        if !crate::wait_until(within, || self.temp_files().is_empty()) {
            panic!("[STORE-2] temporary files left in the root: {:?}", self.temp_files());
        }
    }

    /// A raw TCP connection (nothing sent).
    #[track_caller]
    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// A connection past its handshake, without a token.
    #[track_caller]
    pub fn client(&self) -> Client {
        Client::hello(self.addr, None)
    }

    /// A connection past its handshake, presenting `token`.
    #[track_caller]
    pub fn client_with_token(&self, token: &str) -> Client {
        Client::hello(self.addr, Some(token))
    }

    /// A connection past its handshake, with socket options.
    #[track_caller]
    pub fn client_with(&self, options: ConnectOptions) -> Client {
        Client::hello_with(self.addr, None, options)
    }

    /// Starts the graceful shutdown: in-process as a signal handler would, a process with SIGTERM.
    #[track_caller]
    pub fn shutdown(&self) {
        match &self.kind {
            Kind::InProcess(h) => h.shutdown(),
            Kind::Process { child, .. } => {
                let status =
                    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("running kill(1)");
                assert!(status.success(), "kill -TERM failed");
            }
            Kind::Stopped => {}
        }
    }

    /// Waits until the server has stopped, at most `within`; for a process, returns its exit
    /// status.
    ///
    /// # Panics
    /// It did not stop in time.
    #[track_caller]
    pub fn wait_stopped(&mut self, within: Duration) -> Option<ExitStatus> {
        match std::mem::replace(&mut self.kind, Kind::Stopped) {
            Kind::InProcess(mut h) => {
                h.wait_stopped(within);
                None
            }
            Kind::Process { mut child, log } => {
                let deadline = Instant::now() + within;
                loop {
                    // No event announces a child's exit to a thread: poll it.
                    if let Some(status) = child.try_wait().expect("waiting for ferryd") {
                        return Some(status);
                    }
                    if Instant::now() >= deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        let log = std::fs::read_to_string(&log).unwrap_or_default();
                        panic!("ferryd did not exit within {within:?}; its log:\n{log}");
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            Kind::Stopped => None,
        }
    }

    /// A process server's process id, to signal it.
    pub fn pid(&self) -> Option<u32> {
        match &self.kind {
            Kind::Process { child, .. } => Some(child.id()),
            _ => None,
        }
    }

    /// A process server's log (stderr) so far; empty for an in-process server.
    pub fn log(&self) -> String {
        match &self.kind {
            Kind::Process { log, .. } => std::fs::read_to_string(log).unwrap_or_default(),
            _ => std::fs::read_to_string(self.dir.path().join("ferryd.log")).unwrap_or_default(),
        }
    }

    /// The in-process server's handle.
    pub fn handle(&self) -> Option<&Handle> {
        match &self.kind {
            Kind::InProcess(h) => Some(h),
            _ => None,
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // Stop the server before the root it serves is deleted.
        match std::mem::replace(&mut self.kind, Kind::Stopped) {
            Kind::InProcess(h) => drop(h),
            Kind::Process { mut child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Kind::Stopped => {}
        }
    }
}

/// Runs the `ferryd` binary on `root` with `--listen 127.0.0.1:0`, its log to `log`, and reads the
/// address from its `listening on ADDR` line.
#[track_caller]
fn spawn_ferryd(ferryd: &Path, root: &Path, log: &Path, args: &[&str]) -> (Child, SocketAddr, Option<SocketAddr>) {
    let mut child = Command::new(ferryd)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("FERRYD_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(log).expect("the log file"))
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", ferryd.display()));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Every line is sent, so the child never blocks on a full pipe.
        for line in BufReader::new(stdout).lines() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |prefix: &str| match rx.recv_timeout(STARTUP_TIMEOUT) {
        Ok(Ok(line)) => line.strip_prefix(prefix).and_then(|a| a.parse::<SocketAddr>().ok()).ok_or(line),
        other => Err(format!("{other:?}")),
    };
    let addrs = next("listening on ").and_then(|plain| {
        // With --tls-listen, the TLS listener's address follows on a line of its own.
        let tls = if args.contains(&"--tls-listen") { Some(next("tls listening on ")?) } else { None };
        Ok((plain, tls))
    });
    let (addr, tls_addr) = match addrs {
        Ok(pair) => pair,
        Err(got) => {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("ferryd did not print `listening on ADDR` (got {got}); its log:\n{log}");
        }
    };
    (child, addr, tls_addr)
}
