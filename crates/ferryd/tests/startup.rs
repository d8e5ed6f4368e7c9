//! ferryd's start-up, run as a user would run it: flags and their bounds, human sizes and
//! durations, the root (created with care, checked writable), the port, the config file, the
//! error messages and exit statuses, the log's colours, completions and the man page.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use ferry_proto::{ErrorCode, PutMode, Role};
use ferry_testkit::client::IO_TIMEOUT;
use ferry_testkit::{wait_until, TestServer};

fn ferryd() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ferryd"))
}

/// `ferryd ARGS` run to its end, for runs that must not start serving: in a fresh temporary
/// directory (where a default root would appear), with no FERRYD_LOG. A ferryd that is still
/// running after [`IO_TIMEOUT`] has wrongly started: it is killed, and the test fails.
fn run(args: &[&str]) -> Output {
    run_with(Command::new(ferryd()).args(args).env_remove("FERRYD_LOG"))
}

fn run_with(cmd: &mut Command) -> Output {
    let cwd = tempfile::tempdir().unwrap();
    let child = cmd
        .current_dir(cwd.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running ferryd");
    let pid = rustix::process::Pid::from_child(&child);
    let (tx, rx) = std::sync::mpsc::channel();
    // Read on another thread: a long completion script must not fill a pipe nobody reads.
    std::thread::spawn(move || tx.send(child.wait_with_output().expect("waiting for ferryd")));
    match rx.recv_timeout(IO_TIMEOUT) {
        Ok(out) => out,
        Err(_) => {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            let out = rx.recv().unwrap();
            panic!("{cmd:?} started instead of failing: {}", stderr(&out));
        }
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A ferryd started by a test (killed when dropped), its stdout's first line read.
struct Running {
    child: Child,
    addr: SocketAddr,
}

impl Running {
    /// Starts `ferryd ARGS` in `cwd` with its stderr going to `stderr`, and waits for its
    /// `listening on` line.
    fn start(cwd: &Path, args: &[&str], stderr: impl Into<Stdio>) -> Self {
        let mut child = Command::new(ferryd())
            .args(args)
            .current_dir(cwd)
            .env_remove("FERRYD_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("running ferryd");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr = line.trim().strip_prefix("listening on ").and_then(|a| a.parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            panic!("ferryd {args:?} did not start: {line:?} {:?}", child.wait_with_output());
        };
        Self { child, addr }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every flag's bad values are refused at once, with exit status 2, naming the flag and what it
/// takes; none is quietly turned into something else (`--handshake-timeout 0` once became 1 s,
/// `--log-level nonsense` turned logging off).
#[test]
fn bad_values_are_refused_saying_what_is_allowed() {
    let cases: &[(&[&str], &str)] = &[
        (&["--log-level", "nonsense"], "use one of error, warn, info, debug, trace, off"),
        (&["--log-level", "info,verbose"], "unknown log level `verbose`"),
        (&["--max-clients", "0"], "--max-clients"),
        (&["--max-per-ip", "0"], "--max-per-ip"),
        (&["--max-concurrent-hashes", "0"], "--max-concurrent-hashes"),
        (&["--history", "0"], "--history"),
        (&["--handshake-timeout", "0"], "0 is not allowed here; the least is 1ms"),
        (&["--head-timeout", "0"], "0 is not allowed here"),
        (&["--progress-timeout", "0s"], "0 is not allowed here"),
        (&["--idle-timeout", "soon"], "5m"),
        (&["--idle-timeout", "100days"], "the most allowed is"),
        (&["--linger", "61s"], "the most allowed is 1m"),
        (&["--max-file-size", "0"], "the least allowed is 1"),
        (&["--max-file-size", "lots"], "64G"),
        (&["--max-output", "100"], "the least allowed is 1KiB"),
        (&["--max-name-len", "0"], "--max-name-len"),
    ];
    for (args, expected) in cases {
        let out = run(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(args[0]) && err.contains(expected), "{args:?}: {err}");
    }
    let out = run_with(Command::new(ferryd()).env("FERRYD_LOG", "nonsense"));
    assert_eq!(out.status.code(), Some(2), "FERRYD_LOG is checked as the flag is");
    assert!(stderr(&out).contains("unknown log level `nonsense`"));
}

/// Sizes and durations take units (announced in the server hello in bytes and milliseconds), and
/// plain numbers keep their old meaning: bytes, seconds, milliseconds for --linger.
#[test]
fn sizes_and_durations_take_units_and_plain_numbers() {
    let server = TestServer::process(
        ferryd(),
        &["--max-file-size", "3G", "--idle-timeout", "5m", "--head-timeout", "1500ms", "--progress-timeout", "2"],
    );
    let hello = server.client().server_hello().unwrap();
    assert_eq!(hello.max_file_size, 3 << 30);
    assert_eq!(hello.idle_timeout_ms, 300_000);
    assert_eq!(hello.head_timeout_ms, 1_500);
    assert_eq!(hello.progress_timeout_ms, 2_000);

    let server = TestServer::process(ferryd(), &["--max-file-size", "4096", "--idle-timeout", "0", "--linger", "500"]);
    let hello = server.client().server_hello().unwrap();
    assert_eq!(hello.max_file_size, 4096);
    assert_eq!(hello.idle_timeout_ms, 0, "0: no idle limit, as documented");
}

/// `--root /a/typo/path` creates nothing when /a/typo is missing, and says why it will not start.
#[test]
fn a_root_whose_parent_is_missing_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("a/typo/path");
    let out = run(&["--listen", "127.0.0.1:0", "--root", typo.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("error: cannot serve --root "), "{err}");
    assert!(err.contains(&dir.path().join("a/typo").display().to_string()) && err.contains("typo"), "{err}");
    assert!(!dir.path().join("a").exists(), "nothing was created");
}

/// A missing root whose parent exists is created, and so is the default root: ferryd says so.
#[test]
fn a_missing_root_under_an_existing_parent_is_created_and_reported() {
    let dir = ferry_testkit::server::new_dir();
    let root = dir.path().join("new-root");
    let log = dir.path().join("log");
    let server = Running::start(
        dir.path(),
        &["--listen", "127.0.0.1:0", "--root", root.to_str().unwrap()],
        std::fs::File::create(&log).unwrap(),
    );
    assert!(root.is_dir());
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(&format!("ferryd: created the directory {}", root.display())), "{text}");

    // The default, ./server_files, relative to where ferryd runs.
    let server = Running::start(dir.path(), &["--listen", "127.0.0.1:0"], std::fs::File::create(&log).unwrap());
    assert!(dir.path().join("server_files").is_dir());
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("ferryd: created the directory ./server_files"), "{text}");
}

/// A directory this process cannot create files in: a read-only tmpfs when run as root (for whom
/// permissions are no obstacle), else a directory without write permission. `None`, with the
/// reason printed, where neither can be had.
struct Unwritable {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Unwritable {
    fn new() -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro");
        std::fs::create_dir(&path).unwrap();
        if rustix::process::geteuid().is_root() {
            use rustix::mount::{mount, MountFlags};
            let flags = MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV;
            if let Err(e) = mount("tmpfs", &path, "tmpfs", flags, c"size=64k") {
                eprintln!("skipped: cannot mount a read-only tmpfs: {e}");
                return None;
            }
        } else {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o555)).unwrap();
        }
        Some(Self { path, _dir: dir })
    }
}

impl Drop for Unwritable {
    fn drop(&mut self) {
        if rustix::process::geteuid().is_root() {
            let _ = rustix::mount::unmount(&self.path, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

/// A root ferryd cannot write to is refused at start-up with the root, the failed operation and
/// the remedies (rather than every upload failing later as a storage error); with --read-only
/// it is served.
#[test]
fn an_unwritable_root_is_refused_unless_read_only() {
    let Some(ro) = Unwritable::new() else { return };
    let root = ro.path.to_str().unwrap();
    let out = run(&["--listen", "127.0.0.1:0", "--root", root]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for part in [root, "must be writable", "--read-only", "creating .ferry-tmp-probe-writable-"] {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }

    let server = Running::start(
        ro.path.parent().unwrap(),
        &["--listen", "127.0.0.1:0", "--root", root, "--read-only"],
        Stdio::null(),
    );
    let mut c = ferry_testkit::Client::hello(server.addr, None);
    assert!(c.list().is_empty());
    c.put("x", b"x", PutMode::Overwrite).assert_error(ErrorCode::FORBIDDEN);
}

/// A port in use: the error names the address and suggests `--listen 127.0.0.1:0`; exit status
/// 1; no backtrace, even with RUST_BACKTRACE set; and no root created by the failed start.
#[test]
fn a_port_in_use_is_reported_with_a_remedy_and_no_backtrace() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let out = run_with(
        Command::new(ferryd())
            .args(["--listen", &addr, "--root", root.to_str().unwrap()])
            .env("RUST_BACKTRACE", "full")
            .env("RUST_LIB_BACKTRACE", "1"),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with(&format!("error: cannot listen on {addr}: ")), "{err}");
    assert!(err.contains("--listen 127.0.0.1:0"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line, no backtrace: {err}");
    assert!(!root.exists(), "a failed start creates no root");
}

/// `--help` shows which variable sets --log-level without showing its value as if set to empty
/// (`[env: FERRYD_LOG=]`), and without its value when it is set.
#[test]
fn help_names_the_environment_variable_without_a_value() {
    for value in [None, Some("debug")] {
        let mut cmd = Command::new(ferryd());
        cmd.arg("--help").env_remove("FERRYD_LOG");
        if let Some(v) = value {
            cmd.env("FERRYD_LOG", v);
        }
        let help = String::from_utf8(run_with(&mut cmd).stdout).unwrap();
        assert!(help.contains("[env: FERRYD_LOG]"), "{help}");
        assert!(!help.contains("FERRYD_LOG="), "{help}");
    }
}

/// The log has no colour codes when it goes to a file or pipe...
#[test]
fn the_log_is_plain_text_in_a_file() {
    let server = TestServer::process(ferryd(), &[]);
    server.client().bye();
    assert!(wait_until(IO_TIMEOUT, || server.log().contains("handshake done")));
    let log = server.log();
    assert!(!log.contains('\x1b'), "{log:?}");
}

/// ...and has them on a terminal (a pseudo-terminal here).
#[test]
fn the_log_is_coloured_on_a_terminal() {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    let terminal = std::fs::OpenOptions::new().read(true).write(true).open(name.to_str().unwrap()).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let seen = seen.clone();
        let mut master = std::fs::File::from(master);
        // Ends with EIO once the last holder of the terminal side has closed it.
        std::thread::spawn(move || {
            let mut buf = [0; 4096];
            while let Ok(n @ 1..) = master.read(&mut buf) {
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let dir = ferry_testkit::server::new_dir();
    let root = dir.path().join("root");
    let server = Running::start(dir.path(), &["--listen", "127.0.0.1:0", "--root", root.to_str().unwrap()], terminal);
    let has = |s: &str| String::from_utf8_lossy(&seen.lock().unwrap()).contains(s);
    assert!(wait_until(IO_TIMEOUT, || has("serving")), "the log reached the terminal");
    assert!(has("\x1b["), "coloured: {:?}", String::from_utf8_lossy(&seen.lock().unwrap()));
    drop(server);
    reader.join().unwrap();
}

/// `ferryd completions SHELL` and `ferryd man` print what the clap definitions say, and exit 0.
#[test]
fn completions_and_man_page() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = run(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains("max-file-size") && script.contains("ferryd"), "{shell}: {script}");
    }
    let out = run(&["man"]);
    assert!(out.status.success());
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.contains(".TH ferryd 1"), "{page}");
    assert!(page.contains("max\\-file\\-size"), "{page}");
    // A subcommand does not take the server's flags.
    assert_eq!(run(&["--root", "x", "man"]).status.code(), Some(2));
    assert_eq!(run(&["completions", "tcsh"]).status.code(), Some(2));
}

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("ferryd.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Every key of the config file is applied; a flag on the command line wins over its key; a
/// relative path in the file is relative to the file.
#[test]
fn the_config_file_sets_flags_and_the_command_line_wins() {
    let dir = ferry_testkit::server::new_dir();
    std::fs::write(dir.path().join("tokens"), "read reader-token\n").unwrap();
    let config = write_config(
        dir.path(),
        r#"
# every kind of value: sizes, durations, numbers, switches, paths, choices
max-file-size = "1K"
idle-timeout = "2m"
max-name-len = 16
max-clients = 9
read-only = true
no-legacy = false
tokens = "tokens"
anonymous = "none"
"#,
    );
    let server = TestServer::process_in(ferryd(), dir, &["--config", &config]);
    let c = server.client_with_token("reader-token");
    let hello = c.server_hello().unwrap();
    assert_eq!(
        (hello.max_file_size, hello.idle_timeout_ms, hello.max_name_len, hello.max_clients, hello.role),
        (1024, 120_000, 16, 9, Role::Read)
    );
    c.bye();

    let dir = ferry_testkit::server::new_dir();
    std::fs::write(dir.path().join("tokens"), "write writer-token\n").unwrap();
    let config = write_config(
        dir.path(),
        "max-file-size = \"1K\"\nmax-name-len = 16\nanonymous = \"none\"\ntokens = \"tokens\"\n",
    );
    let server =
        TestServer::process_in(ferryd(), dir, &["--config", &config, "--max-file-size", "2K", "--anonymous", "write"]);
    let mut c = server.client();
    let hello = c.server_hello().unwrap();
    assert_eq!((hello.max_file_size, hello.max_name_len, hello.role), (2048, 16, Role::Write), "the flags win");
    assert!(!c.put_ok("from-a-flag", &[7; 2000]), "2000 bytes fit the flag's 2K");
}

/// A config file with an unknown key, a bad value or bad TOML is a usage error (status 2) that
/// names the file and the key.
#[test]
fn config_file_errors_name_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("max-clinets = 3\n", "unknown key `max-clinets`"),
        ("max-clients = 0\n", "--max-clients"),
        ("handshake-timeout = \"0s\"\n", "0 is not allowed here"),
        ("read-only = \"yes\"\n", "`read-only` is a switch"),
        ("listen = [\"127.0.0.1:1\"]\n", "`listen` takes one value"),
        ("config = \"other.toml\"\n", "unknown key `config`"),
        ("max-clients = \n", "TOML"),
    ];
    for (text, expected) in cases {
        let config = write_config(dir.path(), text);
        let out = run(&["--config", &config, "--listen", "127.0.0.1:0"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(err.starts_with(&format!("error: in the config file {config}: ")), "{text}: {err}");
        assert!(err.contains(expected), "{text}: {err}");
    }
    let out = run(&["--config", "/nonexistent/ferryd.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot read it"));
}
