//! Test harness: real `ferryd` processes and runs of the `ferry` binary.
//!
//! **Finding ferryd.** Cargo gives a test the path of its own package's binaries only
//! (`CARGO_BIN_EXE_ferry`), and a dev-dependency's binaries are never built. So the first test
//! that needs ferryd runs `cargo build -p ferryd` — with the same cargo, target directory and
//! profile as this test binary — once per test process, and uses the binary it puts next to
//! `ferry`. Cargo releases its build lock while tests run, and the build is a no-op when ferryd
//! is up to date, so this costs a fraction of a second and never tests a stale server. Set
//! `FERRYD=/path/to/ferryd` to use another binary and skip the build.
//!
//! **Processes.** Every `ferryd` a test starts is killed and reaped when its [`Ferryd`] is
//! dropped, panics included; every `ferry` run has a deadline.

#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long ferryd may take to print its address.
const STARTUP: Duration = Duration::from_secs(30);
/// How long one `ferry` run may take.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// The ferry binary under test.
pub fn ferry_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ferry"))
}

/// The ferryd binary: built (or found up to date) once per test process.
pub fn ferryd_bin() -> &'static Path {
    static FERRYD: OnceLock<PathBuf> = OnceLock::new();
    FERRYD.get_or_init(|| {
        if let Some(p) = std::env::var_os("FERRYD") {
            return PathBuf::from(p);
        }
        let ferry = ferry_bin();
        let profile_dir = ferry.parent().expect("the binary's directory").to_owned();
        let target_dir = profile_dir.parent().expect("the target directory");
        let profile = profile_dir.file_name().and_then(|p| p.to_str()).expect("a profile directory");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "ferryd", "--bin", "ferryd", "--target-dir"])
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        match profile {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.args(["--profile", other]);
            }
        }
        let out = cmd.output().expect("running cargo to build ferryd");
        assert!(out.status.success(), "cargo build -p ferryd failed:\n{}", String::from_utf8_lossy(&out.stderr));
        profile_dir.join(format!("ferryd{}", std::env::consts::EXE_SUFFIX))
    })
}

/// A `ferryd` process on 127.0.0.1, killed when dropped.
pub struct Ferryd {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub root: PathBuf,
    /// Its extra arguments, for a restart.
    args: Vec<String>,
    /// The directory holding its logs (one per start).
    logs: PathBuf,
    starts: usize,
}

impl Ferryd {
    /// Starts ferryd on port 0, serving `root` (created if missing), with `args`; logs go to
    /// files in `logs`.
    pub fn start(root: &Path, logs: &Path, args: &[&str]) -> Self {
        Self::start_on("127.0.0.1:0", root, logs, args)
    }

    /// Starts ferryd listening on `listen`.
    pub fn start_on(listen: &str, root: &Path, logs: &Path, args: &[&str]) -> Self {
        let mut d = Self {
            child: None,
            addr: "127.0.0.1:0".parse().unwrap(),
            root: root.to_owned(),
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            logs: logs.to_owned(),
            starts: 0,
        };
        d.spawn(listen);
        d
    }

    fn spawn(&mut self, listen: &str) {
        std::fs::create_dir_all(&self.logs).unwrap();
        let log = self.log_path(self.starts);
        self.starts += 1;
        let mut child = Command::new(ferryd_bin())
            .args(["--listen", listen, "--root"])
            .arg(&self.root)
            .args(["--log-level", "info", "--grace", "1"])
            .args(&self.args)
            .env_remove("FERRYD_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("running {}: {e}", ferryd_bin().display()));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for _ in lines {}
        });
        let line = rx.recv_timeout(STARTUP);
        let addr = match &line {
            Ok(Some(Ok(l))) => l.strip_prefix("listening on ").and_then(|a| a.parse().ok()),
            _ => None,
        };
        match addr {
            Some(a) => {
                self.addr = a;
                self.child = Some(child);
            }
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("ferryd did not start ({line:?}); its log:\n{}", read_lossy(&log));
            }
        }
    }

    fn log_path(&self, n: usize) -> PathBuf {
        self.logs.join(format!("ferryd-{n}.log"))
    }

    /// Kills the process (SIGKILL: no drain, no goodbye) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts ferryd again on the same port and root. The port was just freed; binding is
    /// retried for a while in case it is not yet reusable.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill it first");
        let listen = self.addr.to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.spawn(&listen)));
            match result {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => std::panic::resume_unwind(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Waits for the process to exit by itself (after a SHUTDOWN), at most `within`.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("ferryd did not exit within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log of start number `n` (0 for the first), without terminal colours.
    pub fn log(&self, n: usize) -> String {
        strip_ansi(&read_lossy(&self.log_path(n)))
    }

    /// The offsets of the GETs logged by start number `n`; a FETCH answered in the trailing form,
    /// which is always from offset 0 (`[TRL-6]`), counts as a GET from 0.
    pub fn get_offsets(&self, n: usize) -> Vec<u64> {
        self.log(n)
            .lines()
            .filter(|l| l.contains(" GET ") || l.ends_with(" GET"))
            .filter_map(|l| match l.contains(" GET (FETCH") {
                true => Some(0),
                false => l.split_whitespace().find_map(|w| w.strip_prefix("offset=")).and_then(|o| o.parse().ok()),
            })
            .collect()
    }
}

impl Drop for Ferryd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn read_lossy(p: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
}

/// Removes ANSI escape sequences (ESC [ ... letter).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A test's world: a temporary directory with a server root, a working directory for the
/// client, and a running ferryd.
pub struct World {
    pub dir: tempfile::TempDir,
    pub server: Ferryd,
}

impl World {
    /// A ferryd with `args`, an empty root and an empty working directory.
    pub fn new(args: &[&str]) -> Self {
        let dir = tempfile::Builder::new().prefix("ferry-cli-").tempdir().unwrap();
        std::fs::create_dir(dir.path().join("work")).unwrap();
        let server = Ferryd::start(&dir.path().join("root"), &dir.path().join("logs"), args);
        Self { dir, server }
    }

    /// The client's working directory.
    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// The server's root.
    pub fn root(&self) -> PathBuf {
        self.server.root.clone()
    }

    /// A `ferry` command aimed at this world's server, run in the working directory.
    pub fn ferry(&self) -> Command {
        ferry_cmd(&self.work(), &self.server.addr.to_string(), &self.dir.path().join("home"))
    }

    /// Runs `ferry ARGS` and returns its output.
    pub fn run(&self, args: &[&str]) -> Run {
        run(self.ferry().args(args))
    }

    /// Runs `ferry ARGS` with environment variables set.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = self.ferry();
        for (k, v) in env {
            cmd.env(k, v);
        }
        run(cmd.args(args))
    }
}

/// A `ferry` command for `server`, in `cwd`, with a clean environment: no FERRY_* variables
/// from the developer's shell, HOME in the test's directory (the shell's history, the digest
/// cache).
pub fn ferry_cmd(cwd: &Path, server: &str, home: &Path) -> Command {
    ferry_cmd_timeout(cwd, server, home, "5")
}

/// [`ferry_cmd`] with another `--timeout` (which may be given only once).
pub fn ferry_cmd_timeout(cwd: &Path, server: &str, home: &Path, timeout: &str) -> Command {
    let mut cmd = Command::new(ferry_bin());
    cmd.current_dir(cwd)
        .env_remove("FERRY_SERVER")
        .env_remove("FERRY_TOKEN")
        .env_remove("FERRY_HISTORY")
        .env_remove("FERRY_NO_DIGEST_CACHE")
        .env_remove("FERRY_DIGEST_FIRST")
        .env_remove("FERRY_LOG")
        // The digest cache goes under HOME, in the test's directory.
        .env_remove("XDG_CACHE_HOME")
        .env("HOME", home)
        .env("COLUMNS", "100")
        .args(["--server", server, "--timeout", timeout])
        .stdin(Stdio::null());
    cmd
}

/// What a run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "expected success:\n{self:#?}");
        self
    }

    #[track_caller]
    pub fn code(self, code: i32) -> Self {
        assert_eq!(self.code, code, "expected exit status {code}:\n{self:#?}");
        self
    }
}

/// Runs `cmd` to completion within the deadline.
pub fn run(cmd: &mut Command) -> Run {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("running ferry");
    let out = wait_output(child, RUN_DEADLINE);
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `cmd` with `input` on its standard input.
pub fn run_with_input(cmd: &mut Command, input: &str) -> Run {
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("running ferry");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = wait_output(child, RUN_DEADLINE);
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Waits for `child`, killing it if it runs past `within`.
pub fn wait_output(mut child: Child, within: Duration) -> Output {
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut v);
        }
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut v);
        }
        v
    });
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ferry ran longer than {within:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output { status, stdout: out_t.join().unwrap(), stderr: err_t.join().unwrap() }
}

/// A child process killed when dropped (for `ferry` runs a test drives by hand).
pub struct Guard(pub Option<Child>);

impl Guard {
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }

    pub fn take(&mut self) -> Child {
        self.0.take().unwrap()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `len` bytes of a deterministic, non-repeating pattern.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Polls `cond` every 5 ms until it holds or `within` passes.
pub fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// The names in `dir`, sorted.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}
