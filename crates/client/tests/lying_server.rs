//! The client against a server that lies or fails on cue (`ferry_client::testing::FakeServer`):
//! wrong digests, hostile names, replies cut off, files that change between attempts.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_client::testing::{hello, raw, Action, FakeServer, Seen};
use ferry_client::{exit, Client, Config, Error, Jitter, NoProgress, Progress, RetryPolicy};
use ferry_proto::{Digest, ErrorCode, Name, Request, Role};

fn client(server: &FakeServer, retries: u32) -> (Client, Arc<Mutex<Vec<Duration>>>) {
    let config = Config {
        server: server.addr.to_string(),
        timeout: Duration::from_secs(5),
        retry: RetryPolicy { retries, jitter: Jitter::fixed(0.0), ..RetryPolicy::default() },
        ..Config::default()
    };
    let waits = Arc::new(Mutex::new(Vec::new()));
    let w = waits.clone();
    let client = Client::new(config).with_sleep(Arc::new(move |d| w.lock().unwrap().push(d)));
    (client, waits)
}

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

fn get_offsets(seen: &[Seen]) -> Vec<u64> {
    seen.iter()
        .filter_map(|s| match &s.request {
            Request::Get { offset, .. } => Some(*offset),
            _ => None,
        })
        .collect()
}

/// Asserts that nothing at all was written for `dest`: no file, no `.part`, no sidecar.
#[track_caller]
fn assert_nothing_left(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn a_download_that_does_not_match_its_md5_leaves_no_file() {
    let body = data(100_000);
    let lie = Digest::of(b"something else");
    let server = FakeServer::start(hello(Role::Read), move |s| match &s.request {
        Request::Get { offset, .. } => {
            Action::Reply(raw::get(b"f", *offset, body.len() as u64, lie, &body[*offset as usize..]))
        }
        _ => Action::Reply(raw::error(ErrorCode::UNSUPPORTED, "no")),
    });
    let dir = tempfile::tempdir().unwrap();
    let (mut c, _) = client(&server, 5);
    let err = c.download(&name("f"), &dir.path().join("f"), false, &mut NoProgress).unwrap_err();
    assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err}");
    assert_eq!(err.exit_code(), exit::CHECKSUM);
    assert_nothing_left(dir.path());
    assert_eq!(get_offsets(&server.seen()), [0], "a fresh download is not repeated on a mismatch");
}

#[test]
fn a_name_with_a_path_in_a_list_is_refused() {
    for hostile in [&b"../etc/passwd"[..], b"/abs", b"a/b", b"..", b"a\x1b[2Jb", b"x\\y", b"\xff"] {
        let server = FakeServer::start(hello(Role::Read), move |_| Action::Reply(raw::list(&[(hostile, 1, 0)])));
        let (mut c, _) = client(&server, 0);
        let err = c.list(&mut NoProgress).unwrap_err();
        assert!(matches!(err, Error::Protocol { .. }), "{hostile:?}: {err}");
        assert_eq!(err.exit_code(), exit::NETWORK);
        assert!(!err.to_string().contains('\x1b'), "control characters are not printed: {err}");
    }
}

#[test]
fn a_download_answered_under_another_name_writes_nothing() {
    for answer in [&b"../../victim"[..], b"other"] {
        let server = FakeServer::start(hello(Role::Read), move |_| {
            Action::Reply(raw::get(answer, 0, 2, Digest::of(b"hi"), b"hi"))
        });
        let dir = tempfile::tempdir().unwrap();
        let (mut c, _) = client(&server, 0);
        let err = c.download(&name("f"), &dir.path().join("f"), false, &mut NoProgress).unwrap_err();
        assert!(matches!(err, Error::Protocol { .. }), "{err}");
        assert_nothing_left(dir.path());
        assert!(!dir.path().parent().unwrap().join("victim").exists());
    }
}

#[test]
fn a_download_cut_off_resumes_from_what_it_kept() {
    let body = data(300_000);
    let md5 = Digest::of(&body);
    let size = body.len() as u64;
    let server = FakeServer::start(hello(Role::Read), move |s| match &s.request {
        // The first connection is cut off after 100 000 bytes of data.
        Request::Get { offset: 0, .. } if s.conn == 0 => {
            Action::ReplyAndClose(raw::get(b"f", 0, size, md5, &body[..100_000]))
        }
        Request::Get { offset, .. } => Action::Reply(raw::get(b"f", *offset, size, md5, &body[*offset as usize..])),
        _ => Action::Reply(raw::error(ErrorCode::UNSUPPORTED, "no")),
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f");
    let (mut c, waits) = client(&server, 5);
    let done = c.download(&name("f"), &dest, false, &mut NoProgress).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), data(300_000));
    assert_eq!(get_offsets(&server.seen()), [0, 100_000]);
    assert_eq!(done.resumed_from, Some(100_000));
    assert_eq!(*waits.lock().unwrap(), [Duration::from_secs(1)], "one retry, after the first backoff step");
    assert!(!dir.path().join("f.part").exists() && !dir.path().join("f.part.meta").exists());
}

#[test]
fn a_part_of_another_version_of_the_file_is_not_resumed() {
    // [GET-7]: the .part and its sidecar say "version A"; the server now has version B.
    let a = data(50_000);
    let b: Vec<u8> = data(60_000).into_iter().map(|x| x ^ 0x55).collect();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f");
    std::fs::write(dir.path().join("f.part"), &a[..20_000]).unwrap();
    let meta = format!(r#"{{"ferry_part":1,"name":"f","size":50000,"md5":"{}"}}"#, Digest::of(&a));
    std::fs::write(dir.path().join("f.part.meta"), meta).unwrap();
    let (size, md5) = (b.len() as u64, Digest::of(&b));
    let served = b.clone();
    let server = FakeServer::start(hello(Role::Read), move |s| match &s.request {
        Request::Get { offset, .. } => Action::Reply(raw::get(b"f", *offset, size, md5, &served[*offset as usize..])),
        _ => Action::Reply(raw::error(ErrorCode::UNSUPPORTED, "no")),
    });
    let (mut c, waits) = client(&server, 5);
    let done = c.download(&name("f"), &dest, false, &mut NoProgress).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b);
    assert_eq!(get_offsets(&server.seen()), [20_000, 0]);
    assert_eq!(done.restarts, 1);
    assert_eq!(done.resumed_from, None);
    assert!(waits.lock().unwrap().is_empty(), "starting again is not a retry");
}

#[test]
fn a_resumed_download_that_does_not_verify_is_fetched_whole_once_more() {
    let body = data(80_000);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f");
    // The kept bytes are damaged, though the sidecar names the right file.
    std::fs::write(dir.path().join("f.part"), vec![0u8; 30_000]).unwrap();
    let meta = format!(r#"{{"ferry_part":1,"name":"f","size":80000,"md5":"{}"}}"#, Digest::of(&body));
    std::fs::write(dir.path().join("f.part.meta"), meta).unwrap();
    let (size, md5) = (body.len() as u64, Digest::of(&body));
    let served = body.clone();
    let server = FakeServer::start(hello(Role::Read), move |s| match &s.request {
        Request::Get { offset, .. } => Action::Reply(raw::get(b"f", *offset, size, md5, &served[*offset as usize..])),
        _ => Action::Reply(raw::error(ErrorCode::UNSUPPORTED, "no")),
    });
    let (mut c, _) = client(&server, 5);
    let done = c.download(&name("f"), &dest, false, &mut NoProgress).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(get_offsets(&server.seen()), [30_000, 0]);
    assert_eq!(done.restarts, 1);
}

#[test]
fn a_server_that_keeps_cutting_off_is_given_up_on_and_the_part_is_kept() {
    let body = data(10_000);
    let md5 = Digest::of(&body);
    let server = FakeServer::start(hello(Role::Read), move |s| match &s.request {
        // The first connection delivers 1 000 bytes; every later one dies before any data.
        Request::Get { offset, .. } if s.conn == 0 => {
            Action::ReplyAndClose(raw::get(b"f", *offset, 10_000, md5, &body[..1_000]))
        }
        Request::Get { offset, .. } => Action::ReplyAndClose(raw::get(b"f", *offset, 10_000, md5, &[])),
        _ => Action::Reply(raw::error(ErrorCode::UNSUPPORTED, "no")),
    });
    let dir = tempfile::tempdir().unwrap();
    let (mut c, waits) = client(&server, 3);
    let err = c.download(&name("f"), &dir.path().join("f"), false, &mut NoProgress).unwrap_err();
    assert!(matches!(err, Error::Retried { attempts: 4, .. }), "{err}");
    assert_eq!(err.exit_code(), exit::NETWORK);
    let secs: Vec<u64> = waits.lock().unwrap().iter().map(Duration::as_secs).collect();
    assert_eq!(secs, [1, 2, 4]);
    assert_eq!(get_offsets(&server.seen()), [0, 1_000, 1_000, 1_000]);
    assert_eq!(std::fs::read(dir.path().join("f.part")).unwrap(), data(1_000), "kept for the next run");
    assert!(dir.path().join("f.part.meta").exists());
    assert!(!dir.path().join("f").exists());
}

#[test]
fn a_refused_create_only_upload_is_not_retried() {
    let server = FakeServer::start(hello(Role::Write), |_| Action::Reply(raw::error(ErrorCode::EXISTS, "exists")));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big");
    std::fs::write(&path, data(1 << 20)).unwrap();
    let (mut c, waits) = client(&server, 5);
    let err = c.upload(&path, &name("big"), ferry_proto::PutMode::CreateOnly, &mut NoProgress).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::EXISTS), "{err}");
    assert_eq!(err.exit_code(), exit::REFUSED);
    assert!(waits.lock().unwrap().is_empty());
}

#[derive(Default)]
struct Record {
    started: Vec<(u64, u64)>,
    bytes: u64,
    retries: Vec<u32>,
}

impl Progress for Record {
    fn transfer_started(&mut self, _: &Name, total: u64, from: u64) {
        self.started.push((total, from));
    }
    fn transferred(&mut self, bytes: u64) {
        self.bytes += bytes;
    }
    fn retrying(&mut self, _: &Error, _: Duration, retry: u32, _: u32) {
        self.retries.push(retry);
    }
}

#[test]
fn progress_hears_every_start_byte_and_retry() {
    let body = data(200_000);
    let md5 = Digest::of(&body);
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let server = FakeServer::start(hello(Role::Read), move |s| match &s.request {
        Request::Get { offset, .. } if c2.fetch_add(1, Ordering::SeqCst) == 0 => {
            Action::ReplyAndClose(raw::get(b"f", *offset, 200_000, md5, &body[..50_000]))
        }
        Request::Get { offset, .. } => Action::Reply(raw::get(b"f", *offset, 200_000, md5, &body[*offset as usize..])),
        _ => Action::Reply(raw::error(ErrorCode::UNSUPPORTED, "no")),
    });
    let dir = tempfile::tempdir().unwrap();
    let (mut c, _) = client(&server, 5);
    let mut rec = Record::default();
    c.download(&name("f"), &dir.path().join("f"), false, &mut rec).unwrap();
    assert_eq!(rec.started, [(200_000, 0), (200_000, 50_000)]);
    assert_eq!(rec.bytes, 200_000);
    assert_eq!(rec.retries, [1]);
}

#[test]
fn a_part_longer_than_the_server_s_file_starts_again() {
    // The server's file shrank below the bytes kept: BAD_OFFSET, then a GET from 0.
    let body = data(10_000);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.part"), data(20_000)).unwrap();
    let meta = format!(r#"{{"ferry_part":1,"name":"f","size":50000,"md5":"{}"}}"#, Digest::of(&data(50_000)));
    std::fs::write(dir.path().join("f.part.meta"), meta).unwrap();
    let (size, md5) = (body.len() as u64, Digest::of(&body));
    let served = body.clone();
    let server = FakeServer::start(hello(Role::Read), move |s| match &s.request {
        Request::Get { offset, .. } if *offset > size => {
            Action::Reply(raw::error(ErrorCode::BAD_OFFSET, "past the end"))
        }
        Request::Get { offset, .. } => Action::Reply(raw::get(b"f", *offset, size, md5, &served[*offset as usize..])),
        _ => Action::Reply(raw::error(ErrorCode::UNSUPPORTED, "no")),
    });
    let (mut c, waits) = client(&server, 5);
    let done = c.download(&name("f"), &dir.path().join("f"), false, &mut NoProgress).unwrap();
    assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), body);
    assert_eq!(get_offsets(&server.seen()), [20_000, 0]);
    assert_eq!(done.restarts, 1);
    assert!(waits.lock().unwrap().is_empty());
    assert_eq!(server.seen().iter().map(|s| s.conn).collect::<Vec<_>>(), [0, 0], "the connection was kept");
}

/// Asks to stop once `after` bytes have arrived.
struct StopAfter {
    after: u64,
    seen: u64,
}

impl Progress for StopAfter {
    fn transferred(&mut self, bytes: u64) {
        self.seen += bytes;
    }
    fn cancelled(&mut self) -> bool {
        self.seen >= self.after
    }
}

#[test]
fn a_cancelled_download_keeps_its_part_for_later() {
    let body = data(2_000_000);
    let md5 = Digest::of(&body);
    let served = body.clone();
    let server = FakeServer::start(hello(Role::Read), move |s| match &s.request {
        Request::Get { offset, .. } => {
            Action::Reply(raw::get(b"f", *offset, 2_000_000, md5, &served[*offset as usize..]))
        }
        _ => Action::Reply(raw::error(ErrorCode::UNSUPPORTED, "no")),
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f");
    let (mut c, waits) = client(&server, 5);
    let err = c.download(&name("f"), &dest, false, &mut StopAfter { after: 1, seen: 0 }).unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");
    assert_eq!(err.exit_code(), exit::INTERRUPTED);
    assert!(waits.lock().unwrap().is_empty(), "not retried");
    let kept = std::fs::metadata(dir.path().join("f.part")).unwrap().len();
    assert!(kept > 0 && kept < 2_000_000, "{kept}");
    let done = c.download(&name("f"), &dest, false, &mut NoProgress).unwrap();
    assert_eq!(done.resumed_from, Some(kept));
    assert_eq!(std::fs::read(&dest).unwrap(), body);
}

#[test]
fn an_unknown_fatal_code_closes_the_connection_and_is_a_server_failure() {
    // 0x0107 is in the fatal range and not defined; 0x0300 is outside every range (`[ERR-5]`).
    for code in [0x0107, 0x0300] {
        let server = FakeServer::start(hello(Role::Read), move |s| match s.conn {
            0 => Action::Reply(raw::error(ErrorCode(code), "a code from the future")),
            _ => Action::Reply(raw::list(&[])),
        });
        let (mut c, _) = client(&server, 3);
        let err = c.list(&mut NoProgress).unwrap_err();
        assert!(matches!(err, Error::UnknownFatal { .. }), "0x{code:04x}: {err}");
        assert_eq!(err.exit_code(), exit::NETWORK, "0x{code:04x}: {err}");
        // Not retried, and the connection is not used again: the next command opens another.
        c.list(&mut NoProgress).unwrap();
        let conns: Vec<usize> = server.seen().iter().map(|s| s.conn).collect();
        assert_eq!(conns, [0, 1], "0x{code:04x}");
    }
}

#[test]
fn an_unknown_recoverable_code_is_a_refusal_and_the_connection_goes_on() {
    let server = FakeServer::start(hello(Role::Read), move |s| match s.request {
        Request::Stat(_) => Action::Reply(raw::error(ErrorCode(0x0209), "a refusal from the future")),
        _ => Action::Reply(raw::list(&[])),
    });
    let (mut c, _) = client(&server, 3);
    let err = c.stat(&name("f"), &mut NoProgress).unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    assert_eq!(err.exit_code(), exit::REFUSED);
    c.list(&mut NoProgress).unwrap();
    let conns: Vec<usize> = server.seen().iter().map(|s| s.conn).collect();
    assert_eq!(conns, [0, 0]);
}
