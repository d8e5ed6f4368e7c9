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
    client_with_timeout(server, retries, Duration::from_secs(5))
}

fn client_with_timeout(server: &FakeServer, retries: u32, timeout: Duration) -> (Client, Arc<Mutex<Vec<Duration>>>) {
    let config = Config {
        server: server.addr.to_string(),
        timeout,
        retry: RetryPolicy { retries, jitter: Jitter::fixed(0.5), ..RetryPolicy::default() },
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
    waiting: Vec<(Name, u64, Duration)>,
}

impl Progress for Record {
    fn waiting_for_digest(&mut self, name: &Name, size: u64, allowed: Duration) {
        self.waiting.push((name.clone(), size, allowed));
    }
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
    assert_eq!(server.seen().iter().map(|s| s.conn).collect::<Vec<_>>(), [0; 4], "the connection was kept");
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

// `[GET-9]`: a server that has no digest for a file (STAT shows no md5) must hash it before it can
// send the head of a GET reply. The client allows it a second for every 16 MiB on top of its read
// deadline, and only then.

/// The read deadline of these tests: far below the server's delays.
const SHORT: Duration = Duration::from_millis(250);

/// A server of one file, `f`, whose STAT shows `md5` only if `known`, and whose GET replies start
/// after `delay`, or never (`None`). A LIST is answered after a second.
fn hashing_server(body: Vec<u8>, known: bool, delay: Option<Duration>) -> FakeServer {
    let (size, md5) = (body.len() as u64, Digest::of(&body));
    FakeServer::start(hello(Role::Read), move |s| match &s.request {
        Request::Stat(_) => Action::Reply(raw::stat(b"f", size, 0, known.then_some(md5))),
        Request::Get { offset, .. } => {
            let reply = raw::get(b"f", *offset, size, md5, &body[*offset as usize..]);
            match delay {
                Some(d) => Action::ReplyAfter(d, reply),
                None => Action::Silence,
            }
        }
        Request::List => Action::ReplyAfter(Duration::from_secs(1), raw::list(&[])),
        _ => Action::Reply(raw::error(ErrorCode::UNSUPPORTED, "no")),
    })
}

fn requests(server: &FakeServer) -> Vec<(usize, &'static str)> {
    server.seen().iter().map(|s| (s.conn, s.request.kind().as_str())).collect()
}

#[test]
fn a_server_computing_a_digest_is_given_a_second_per_16_mib() {
    // 16 MiB and a byte: two seconds more than the deadline of 0.25 s. The head comes after one.
    let body = data((16 << 20) + 1);
    let server = hashing_server(body.clone(), false, Some(Duration::from_secs(1)));
    let dir = tempfile::tempdir().unwrap();
    let (mut c, waits) = client_with_timeout(&server, 0, SHORT);
    let mut rec = Record::default();
    let done = c.download(&name("f"), &dir.path().join("f"), false, &mut rec).unwrap();
    assert_eq!(done.md5, Digest::of(&body));
    assert!(std::fs::read(dir.path().join("f")).unwrap() == body);
    assert_eq!(rec.waiting, [(name("f"), body.len() as u64, SHORT + Duration::from_secs(2))]);
    assert!(waits.lock().unwrap().is_empty(), "not retried");
    assert_eq!(requests(&server), [(0, "STAT"), (0, "GET")], "the STAT goes first, on the same connection");
    // The deadline is back to normal for what follows: a LIST answered after a second fails.
    let err = c.list(&mut NoProgress).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
}

#[test]
fn a_short_wait_for_a_digest_is_not_worth_a_word() {
    // No md5 in the STAT, but the head comes at once: the caller hears of no wait.
    let server = hashing_server(data(1000), false, Some(Duration::ZERO));
    let dir = tempfile::tempdir().unwrap();
    let (mut c, _) = client(&server, 0);
    let mut rec = Record::default();
    c.download(&name("f"), &dir.path().join("f"), false, &mut rec).unwrap();
    assert!(rec.waiting.is_empty());
}

#[test]
fn a_server_that_knows_the_digest_is_held_to_the_ordinary_deadline() {
    let server = hashing_server(data(1000), true, Some(Duration::from_secs(1)));
    let dir = tempfile::tempdir().unwrap();
    let (mut c, _) = client_with_timeout(&server, 0, SHORT);
    let mut rec = Record::default();
    let err = c.download(&name("f"), &dir.path().join("f"), false, &mut rec).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("did not answer within 0.25 s while starting a download"), "{err}");
    assert!(rec.waiting.is_empty());
}

#[test]
fn a_digest_that_never_comes_is_reported_as_what_it_is() {
    // 1000 bytes: a second more (a second for every 16 MiB begun), 1.25 s in all.
    let server = hashing_server(data(1000), false, None);
    let dir = tempfile::tempdir().unwrap();
    let (mut c, _) = client_with_timeout(&server, 0, SHORT);
    let started = std::time::Instant::now();
    let err = c.download(&name("f"), &dir.path().join("f"), false, &mut NoProgress).unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(1250), "{:?}", started.elapsed());
    assert!(matches!(err, Error::DigestTimeout { size: 1000, .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "{} had no MD5 for f and did not finish computing the MD5 of its 1000 B within 1.25 s (--timeout, \
             plus a second for every 16 MiB) — try again later: the server may have finished by then",
            server.addr
        )
    );
    assert_eq!(err.exit_code(), exit::NETWORK);
    assert!(err.is_transient(), "the server may have finished by the next attempt");
    assert_nothing_left(dir.path());
}

#[test]
fn a_resumed_download_of_a_file_being_hashed_waits_too() {
    // The first connection is cut off after 100 000 bytes; then the server restarts, say, and
    // has no digest: the GET from 100 000 waits for it.
    let body = data((16 << 20) + 1);
    let (size, md5) = (body.len() as u64, Digest::of(&body));
    let served = body.clone();
    let server = FakeServer::start(hello(Role::Read), move |s| match &s.request {
        Request::Stat(_) => Action::Reply(raw::stat(b"f", size, 0, (s.conn == 0).then_some(md5))),
        Request::Get { offset, .. } if s.conn == 0 => {
            Action::ReplyAndClose(raw::get(b"f", *offset, size, md5, &served[..100_000]))
        }
        Request::Get { offset, .. } => {
            Action::ReplyAfter(Duration::from_secs(1), raw::get(b"f", *offset, size, md5, &served[*offset as usize..]))
        }
        _ => Action::Reply(raw::error(ErrorCode::UNSUPPORTED, "no")),
    });
    let dir = tempfile::tempdir().unwrap();
    let (mut c, waits) = client_with_timeout(&server, 1, SHORT);
    let mut rec = Record::default();
    let done = c.download(&name("f"), &dir.path().join("f"), false, &mut rec).unwrap();
    assert_eq!(done.resumed_from, Some(100_000));
    assert!(std::fs::read(dir.path().join("f")).unwrap() == body);
    assert_eq!(get_offsets(&server.seen()), [0, 100_000]);
    assert_eq!(rec.waiting, [(name("f"), size, SHORT + Duration::from_secs(2))]);
    assert_eq!(waits.lock().unwrap().len(), 1, "one retry, for the cut");
}

#[test]
fn a_refused_stat_leaves_it_to_the_get() {
    // A server that refuses STAT (a role without it, say) still serves the GET; one that has no
    // such file says so in the GET's reply, and that is the error.
    let body = data(5000);
    let md5 = Digest::of(&body);
    let server = FakeServer::start(hello(Role::Read), move |s| match &s.request {
        Request::Stat(_) => Action::Reply(raw::error(ErrorCode::NOT_FOUND, "no stat")),
        Request::Get { name, .. } if name.as_str() == "f" => {
            Action::Reply(raw::get(b"f", 0, body.len() as u64, md5, &body))
        }
        _ => Action::Reply(raw::error(ErrorCode::NOT_FOUND, "no such file")),
    });
    let dir = tempfile::tempdir().unwrap();
    let (mut c, _) = client(&server, 0);
    let mut rec = Record::default();
    c.download(&name("f"), &dir.path().join("f"), false, &mut rec).unwrap();
    assert!(rec.waiting.is_empty());
    let err = c.download(&name("g"), &dir.path().join("g"), false, &mut rec).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NOT_FOUND));
    assert!(matches!(err, Error::Refused { op: ferry_proto::RequestKind::Get, .. }), "{err:?}");
    assert_eq!(requests(&server), [(0, "STAT"), (0, "GET"), (0, "STAT"), (0, "GET")]);
}
