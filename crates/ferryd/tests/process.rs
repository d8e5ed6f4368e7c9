//! The real `ferryd` binary, run as a process: what the in-process suite (ferry-testkit, run by
//! each engine's tests) cannot see — flags, the `listening on` line, signals, the exit status,
//! the log.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ferry_proto::codec::ServerItem;
use ferry_proto::{ErrorCode, PutMode, Request, Role};
use ferry_testkit::client::IO_TIMEOUT;
use ferry_testkit::{content, md5, wait_until, Client, TestServer};

fn ferryd() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ferryd"))
}

/// Started on port 0, ferryd prints `listening on ADDR` with the real port, and serves a session
/// on it: upload, list, download, goodbye; the file lands in `--root`.
#[test]
fn prints_its_address_and_serves() {
    let server = TestServer::process(ferryd(), &[]);
    assert_ne!(server.addr.port(), 0);
    let data = content(1, 100_000);
    let mut c = server.client();
    assert!(!c.put_ok("hello.bin", &data));
    assert_eq!(c.list().len(), 1);
    assert_eq!(c.get_ok("hello.bin", 0).1, data);
    c.bye();
    assert_eq!(server.read_file("hello.bin").unwrap(), data);
}

/// [SHUT-3] [SHUT-4]: SIGTERM starts the drain: an idle client gets `SHUTTING_DOWN`, an upload in
/// flight completes and is stored, new connections are not served, and ferryd exits 0.
#[test]
fn sigterm_drains_and_exits_zero() {
    let mut server = TestServer::process(ferryd(), &["--grace", "20"]);
    let data = content(2, 1 << 20);
    let mut uploader = server.client();
    uploader.put_head(PutMode::CreateOnly, "late.bin", data.len() as u64, md5(&data));
    uploader.send_data(&data[..data.len() / 2]);
    assert!(wait_until(IO_TIMEOUT, || !server.temp_files().is_empty()), "the upload never started");
    let mut idle = server.client();
    server.shutdown();
    idle.expect_fatal(ErrorCode::SHUTTING_DOWN);
    uploader.send_data(&data[data.len() / 2..]);
    assert!(!uploader.read_reply().replaced(), "[SHUT-4] the transfer in flight completes");
    uploader.expect_fatal(ErrorCode::SHUTTING_DOWN);
    drop((idle, uploader));
    let status = server.wait_stopped(Duration::from_secs(20)).unwrap();
    assert_eq!(status.code(), Some(0), "exit status; log:\n{}", server.log());
    assert_eq!(server.read_file("late.bin").unwrap(), data);
    assert!(Client::try_connect(server.addr).is_err(), "[SHUT-3] no longer accepting");
}

/// [GET-8] [LIST-5]: ferryd hashes a file copied in by hand before anyone asks (STAT shows its
/// digest with no GET), and, under each `--digests` mode that keeps them, reads the digests back
/// after a graceful restart instead of hashing again: its start-up scan finds nothing to hash.
#[test]
fn digests_are_computed_ahead_and_kept_across_restarts() {
    for mode in ["auto", "index", "xattr"] {
        let dir = ferry_testkit::server::new_dir();
        let data = content(3, 3 << 20);
        std::fs::write(dir.path().join("root/by-hand.bin"), &data).unwrap();
        let args = ["--digests", mode, "--log-level", "info"];
        let mut server = TestServer::process_in(ferryd(), dir, &args);
        let digest_known = |server: &TestServer| server.client().stat("by-hand.bin").stat().md5 == Some(md5(&data));
        assert!(wait_until(Duration::from_secs(30), || digest_known(&server)), "{mode}: hashed ahead");
        if mode == "xattr" && server.log().contains("cannot set user xattrs") {
            // A file system without user xattrs: nothing to keep them in.
            continue;
        }
        server.shutdown();
        assert_eq!(server.wait_stopped(Duration::from_secs(20)).unwrap().code(), Some(0));

        server.respawn(ferryd(), &args);
        assert!(digest_known(&server), "{mode}: the digest is known at once after the restart");
        assert!(wait_until(Duration::from_secs(20), || server.log().contains("scanned the root")), "{mode}: scanned");
        let log = server.log();
        assert!(log.contains("digests_known=1 to_hash=0"), "{mode}: nothing to hash after the restart; log:\n{log}");
        assert!(!log.contains("hashed a file"), "{mode}: log:\n{log}");
    }
}

/// `ferryd --help` lists every flag with its default.
#[test]
fn help_lists_every_flag() {
    let out = Command::new(ferryd())
        .arg("--help")
        .env_remove("FERRYD_LOG")
        .env("COLUMNS", "100")
        .output()
        .expect("running ferryd --help");
    assert!(out.status.success());
    insta::assert_snapshot!(String::from_utf8(out.stdout).unwrap());
}

/// [AUTH-1] [AUTH-2] [ROLE-1] [SHUT-1] [SEC-1]: a `--tokens` file grants its roles; with
/// `--anonymous none`, no token and an unknown token get `UNAUTHORIZED`; an admin's SHUTDOWN stops
/// ferryd with exit status 0; and no token, known or not, appears in the log — even at trace
/// level.
#[test]
fn tokens_file_is_honoured_and_never_logged() {
    let dir = ferry_testkit::server::new_dir();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "# who may do what\nadmin s3cret-admin-token\nread guest-token-42\n").unwrap();
    let tokens = tokens.to_str().unwrap().to_owned();
    let mut server =
        TestServer::process_in(ferryd(), dir, &["--tokens", &tokens, "--anonymous", "none", "--log-level", "trace"]);
    let mut guest = server.client_with_token("guest-token-42");
    assert_eq!(guest.server_hello().unwrap().role, Role::Read, "[AUTH-1]");
    guest.put("x", b"x", PutMode::Overwrite).assert_error(ErrorCode::FORBIDDEN);
    guest.bye();
    Client::start(server.addr, None).expect_fatal(ErrorCode::UNAUTHORIZED);
    Client::start(server.addr, Some("unknown-token-7")).expect_fatal(ErrorCode::UNAUTHORIZED);
    let mut admin = server.client_with_token("s3cret-admin-token");
    assert_eq!(admin.server_hello().unwrap().role, Role::Admin, "[AUTH-1]");
    admin.request(&Request::Shutdown).assert_is(&ServerItem::ShutdownOk);
    admin.expect_closed(IO_TIMEOUT);
    drop(admin);
    let status = server.wait_stopped(Duration::from_secs(20)).unwrap();
    assert_eq!(status.code(), Some(0), "[SHUT-1]");
    let log = server.log();
    assert!(log.contains("handshake"), "the log is written at trace level:\n{log}");
    for token in ["s3cret-admin-token", "guest-token-42", "unknown-token-7"] {
        assert!(!log.contains(token), "[SEC-1] {token} is in the log:\n{log}");
    }
}

/// ferryd refuses to start when no client could ever get in (`--anonymous none`, no tokens), and
/// when its tokens file is malformed — without echoing the token.
#[test]
fn refuses_configurations_that_cannot_work() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let run = |args: &[&str]| {
        Command::new(ferryd())
            .args(["--listen", "127.0.0.1:0", "--root"])
            .arg(&root)
            .args(args)
            .env_remove("FERRYD_LOG")
            .output()
            .expect("running ferryd")
    };
    let out = run(&["--anonymous", "none"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tokens"));
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "superuser hunter2-token\n").unwrap();
    let out = run(&["--tokens", tokens.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 1"), "{stderr}");
    assert!(!stderr.contains("hunter2-token"), "[SEC-1] {stderr}");
}

/// A storage error is logged with what was being done and to which file: here the root's file
/// system turns read-only under a running server (as a failing disk's does), and an upload
/// cannot create its temporary file. Needs root, to mount a tmpfs of its own; skips without.
#[test]
fn a_storage_error_names_the_operation_and_the_file() {
    use rustix::mount::{mount, mount_remount, unmount, MountFlags, UnmountFlags};
    let dir = ferry_testkit::server::new_dir();
    let root = dir.path().join("root");
    if let Err(e) = mount("tmpfs", &root, "tmpfs", MountFlags::NOSUID | MountFlags::NODEV, c"size=1m") {
        eprintln!("skipped: cannot mount a tmpfs (not root?): {e}");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = unmount(&self.0, UnmountFlags::DETACH);
        }
    }
    let _unmount = Unmount(root.clone());
    // Nothing held open for writing, so that the file system can be made read-only under it.
    let server = TestServer::process_in(ferryd(), dir, &["--digests", "off", "--background-hashes", "0"]);
    mount_remount(&root, MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV, c"")
        .expect("remounting read-only");
    let mut c = server.client();
    c.put("notes.txt", b"hello", PutMode::Overwrite).assert_error(ErrorCode::INTERNAL);
    assert!(wait_until(IO_TIMEOUT, || server.log().contains("storage error")), "log:\n{}", server.log());
    let log = server.log();
    let line = log.lines().find(|l| l.contains("storage error")).unwrap();
    assert!(line.contains("operation=\"creating an upload's temporary file\""), "{line}");
    assert!(line.contains(&format!("path={}", root.join("notes.txt").display())), "{line}");
    assert!(line.contains("Read-only file system"), "{line}");
}
