//! The trailing form (PROTOCOL.md § 6.5, § 7.10) against scripted servers: which form the client
//! chooses for each server, what it sends, and what a wrong or missing trailer leaves behind
//! (`[TRL-1]`, `[TRL-2]`, `[TRL-3]`, `[TRL-10]`).

use std::fs::{File, FileTimes};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ferry_client::local::{with_suffix, PartMeta};
use ferry_client::testing::{hello, raw, trailer_hello, Action, FakeServer, Seen};
use ferry_client::{exit, Client, Config, Error, Jitter, NoProgress, Progress, RetryPolicy};
use ferry_proto::{tag, Digest, ErrorCode, Name, PutMode, Request, Role, ServerHello};

fn client(server: &FakeServer, retries: u32, cache: Option<PathBuf>) -> (Client, Arc<Mutex<Vec<Duration>>>) {
    let config = Config {
        server: server.addr.to_string(),
        timeout: Duration::from_secs(5),
        retry: RetryPolicy { retries, jitter: Jitter::fixed(0.5), ..RetryPolicy::default() },
        digest_cache: cache,
        ..Config::default()
    };
    let waits = Arc::new(Mutex::new(Vec::new()));
    let w = waits.clone();
    (Client::new(config).with_sleep(Arc::new(move |d| w.lock().unwrap().push(d))), waits)
}

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ (i / 4093) as u8).collect()
}

/// The requests seen, by kind and offset (`PUT` with whether its digest trailed).
fn requests(server: &FakeServer) -> Vec<String> {
    server
        .seen()
        .iter()
        .map(|s| match &s.request {
            Request::Stat(_) => "STAT".to_owned(),
            Request::Get { offset, .. } => format!("GET {offset}"),
            Request::Fetch { offset, .. } => format!("FETCH {offset}"),
            Request::Put(head) if head.is_trailing() => "PUT trailing".to_owned(),
            Request::Put(_) => "PUT leading".to_owned(),
            other => format!("{:?}", other.kind()),
        })
        .collect()
}

/// What is in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// Stores nothing; answers a PUT with "created" if its data matches its digest, leading or
/// trailing, and with `CHECKSUM_MISMATCH` otherwise.
fn put_server(hello: ServerHello) -> FakeServer {
    FakeServer::start(hello, |s: &Seen| match &s.request {
        Request::Put(head) if Some(Digest::of(&s.data)) == head.md5.or(s.trailer) => Action::Reply(vec![tag::PUT, 0]),
        Request::Put(_) => Action::Reply(raw::error(ErrorCode::CHECKSUM_MISMATCH, "the data does not match")),
        _ => Action::Reply(raw::error(ErrorCode::UNSUPPORTED, "no")),
    })
}

/// The one PUT the server received.
#[track_caller]
fn the_put(server: &FakeServer) -> Seen {
    let puts: Vec<_> = server.seen().into_iter().filter(|s| matches!(s.request, Request::Put(_))).collect();
    assert_eq!(puts.len(), 1, "{puts:?}");
    puts.into_iter().next().unwrap()
}

#[test]
fn an_upload_to_a_server_with_trailer_is_hashed_as_it_is_sent() {
    let body = data(700_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("up");
    std::fs::write(&path, &body).unwrap();
    let server = put_server(trailer_hello(Role::Write));
    let (mut c, _) = client(&server, 0, None);
    let mut progress = Counting::default();
    let up = c.upload(&path, &name("up"), PutMode::CreateOnly, &mut progress).unwrap();
    assert!(up.trailing && !up.digest_from_cache);
    assert_eq!(up.md5, Digest::of(&body));
    assert_eq!(progress.hashing, 0, "the file is not read before it is sent");
    let put = the_put(&server);
    assert_eq!(put.data, body);
    assert_eq!(put.trailer, Some(Digest::of(&body)), "[TRL-2] the digest of the bytes sent");
    let Request::Put(head) = put.request else { unreachable!() };
    assert_eq!((head.mode, head.wire_mode()), (PutMode::CreateOnly, 0x81));
}

#[test]
fn an_empty_file_goes_in_the_trailing_form_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty");
    std::fs::write(&path, b"").unwrap();
    let server = put_server(trailer_hello(Role::Write));
    let (mut c, _) = client(&server, 0, None);
    let up = c.upload(&path, &name("empty"), PutMode::Overwrite, &mut NoProgress).unwrap();
    assert!(up.trailing);
    assert_eq!(the_put(&server).trailer, Some(Digest::EMPTY));
}

#[test]
fn a_server_without_trailer_gets_the_digest_first() {
    let body = data(300_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("up");
    std::fs::write(&path, &body).unwrap();
    let server = put_server(hello(Role::Write));
    let (mut c, _) = client(&server, 0, None);
    let mut progress = Counting::default();
    let up = c.upload(&path, &name("up"), PutMode::Overwrite, &mut progress).unwrap();
    assert!(!up.trailing);
    assert!(progress.hashing > 0, "[TRL-1] read first, to send the digest first");
    let put = the_put(&server);
    let Request::Put(head) = &put.request else { unreachable!() };
    assert_eq!((head.md5, put.trailer, head.wire_mode()), (Some(Digest::of(&body)), None, 0));
}

#[test]
fn the_trailing_form_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("up");
    std::fs::write(&path, data(1000)).unwrap();
    let server = put_server(trailer_hello(Role::Write));
    let (mut c, _) = client(&server, 0, None);
    c.config_mut().trailer = false;
    assert!(!c.upload(&path, &name("up"), PutMode::Overwrite, &mut NoProgress).unwrap().trailing);
    assert_eq!(requests(&server), ["PUT leading"]);
}

#[test]
fn a_digest_from_the_cache_goes_first_and_a_refused_one_is_replaced_by_a_trailer() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let path = dir.path().join("up");
    std::fs::write(&path, data(50_000)).unwrap();
    let server = put_server(trailer_hello(Role::Write));
    let (mut c, _) = client(&server, 0, Some(cache.clone()));
    let first = c.upload(&path, &name("up"), PutMode::Overwrite, &mut NoProgress).unwrap();
    assert!(first.trailing, "unknown: hashed as sent");
    let (mut c, _) = client(&server, 0, Some(cache.clone()));
    let mut progress = Counting::default();
    let second = c.upload(&path, &name("up"), PutMode::Overwrite, &mut progress).unwrap();
    assert!(second.digest_from_cache && !second.trailing, "known: the leading form costs no extra read");
    assert_eq!(progress.hashing, 0);
    assert_eq!(requests(&server), ["PUT trailing", "PUT leading"]);

    // A cached digest the server refuses (a write the file's times cannot tell apart): sent
    // again, hashed as it goes.
    let key = ferry_digest_store::FileKey::of(&std::fs::metadata(&path).unwrap());
    ferry_digest_store::Index::open_shared(&cache, 10).unwrap().insert(&key, Digest::of(b"stale")).unwrap();
    let (mut c, _) = client(&server, 0, Some(cache));
    let third = c.upload(&path, &name("up"), PutMode::Overwrite, &mut NoProgress).unwrap();
    assert!(!third.digest_from_cache && third.trailing);
    assert_eq!(third.md5, Digest::of(&data(50_000)));
    assert_eq!(requests(&server)[2..], ["PUT leading", "PUT trailing"]);
}

#[test]
fn a_file_that_changes_while_it_is_sent_gets_no_trailer_and_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("up");
    std::fs::write(&path, data(2_000_000)).unwrap();
    let server = put_server(trailer_hello(Role::Write));
    let (mut c, _) = client(&server, 3, None);
    // Another program writes to the file while it is being sent.
    struct Touch(PathBuf, bool);
    impl Progress for Touch {
        fn transferred(&mut self, _: u64) {
            if !self.1 {
                self.1 = true;
                let later = SystemTime::now() + Duration::from_secs(3600);
                File::options()
                    .write(true)
                    .open(&self.0)
                    .unwrap()
                    .set_times(FileTimes::new().set_modified(later))
                    .unwrap();
            }
        }
    }
    let err = c.upload(&path, &name("up"), PutMode::Overwrite, &mut Touch(path.clone(), false)).unwrap_err();
    assert!(matches!(err, Error::LocalChanged { .. }), "{err}");
    assert_eq!(err.exit_code(), exit::CHECKSUM);
    // The connection was closed before the trailer: the PUT never completed on the server (had
    // the trailer gone, the client would have read the server's "created", and not failed).
    assert!(requests(&server).is_empty(), "{:?}", requests(&server));
}

/// Serves `body` as `f`: FETCH from 0 with `fetch` (bytes of a whole reply), anything else in
/// the leading form.
fn fetch_server(body: Vec<u8>, fetch: impl Fn(&Seen, &[u8]) -> Action + Send + Sync + 'static) -> FakeServer {
    let md5 = Digest::of(&body);
    let size = body.len() as u64;
    FakeServer::start(trailer_hello(Role::Read), move |s| match &s.request {
        Request::Stat(_) => Action::Reply(raw::stat(b"f", size, 0, None)),
        Request::Fetch { offset: 0, .. } => fetch(s, &body),
        Request::Get { offset, .. } | Request::Fetch { offset, .. } => {
            Action::Reply(raw::get(b"f", *offset, size, md5, &body[*offset as usize..]))
        }
        _ => Action::Reply(raw::error(ErrorCode::UNSUPPORTED, "no")),
    })
}

#[test]
fn a_trailing_reply_whose_trailer_matches_is_published_and_cached() {
    let body = data(600_000);
    let server = fetch_server(body.clone(), |_, body| {
        Action::Reply(raw::fetch_trailing(b"f", body.len() as u64, body, Digest::of(body)))
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out");
    std::fs::create_dir(&dest).unwrap();
    let cache = dir.path().join("cache");
    let (mut c, _) = client(&server, 0, Some(cache.clone()));
    let done = c.download(&name("f"), &dest.join("f"), false, &mut NoProgress).unwrap();
    assert_eq!(std::fs::read(dest.join("f")).unwrap(), body);
    assert_eq!((done.md5, done.size, done.resumed_from), (Digest::of(&body), body.len() as u64, None));
    assert_eq!(names_in(&dest), ["f"]);
    assert_eq!(requests(&server), ["STAT", "FETCH 0"]);
    // The verified trailer went into the digest cache: the file is not read to know its digest.
    let (mut c, _) = client(&server, 0, Some(cache));
    let mut progress = Counting::default();
    assert_eq!(c.local_digest(&dest.join("f"), &mut progress).unwrap(), Digest::of(&body));
    assert_eq!(progress.hashing, 0);
}

#[test]
fn a_trailing_reply_whose_trailer_does_not_match_leaves_no_file() {
    let body = data(400_000);
    let server = fetch_server(body, |_, body| {
        Action::Reply(raw::fetch_trailing(b"f", body.len() as u64, body, Digest::of(b"another file")))
    });
    let dir = tempfile::tempdir().unwrap();
    let (mut c, _) = client(&server, 5, None);
    let err = c.download(&name("f"), &dir.path().join("f"), false, &mut NoProgress).unwrap_err();
    assert!(
        matches!(err, Error::ChecksumMismatch { expected, .. } if expected == Digest::of(b"another file")),
        "{err}"
    );
    assert_eq!(err.exit_code(), exit::CHECKSUM);
    assert!(names_in(dir.path()).is_empty(), "[TRL-10] {:?}", names_in(dir.path()));
    assert_eq!(requests(&server), ["STAT", "FETCH 0"], "a fresh download is not repeated on a mismatch");
}

#[test]
fn a_connection_lost_inside_the_trailer_is_resumed_against_a_leading_digest() {
    let body = data(300_000);
    let size = body.len() as u64;
    let server = fetch_server(body.clone(), |s, body| {
        let whole = raw::fetch_trailing(b"f", body.len() as u64, body, Digest::of(body));
        assert_eq!(s.conn, 0, "resumed with a GET, not fetched again");
        Action::ReplyAndClose(whole[..whole.len() - 10].to_vec())
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f");
    let (mut c, waits) = client(&server, 5, None);
    let done = c.download(&name("f"), &dest, false, &mut NoProgress).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(done.resumed_from, Some(size));
    assert_eq!(requests(&server), ["STAT", "FETCH 0", "STAT", format!("GET {size}").as_str()]);
    assert_eq!(waits.lock().unwrap().len(), 1);
    assert_eq!(names_in(dir.path()), ["f"]);
}

#[test]
fn a_connection_lost_inside_the_trailer_leaves_unverified_bytes_and_no_file() {
    let body = data(300_000);
    let size = body.len() as u64;
    let server = fetch_server(body.clone(), |_, body| {
        let whole = raw::fetch_trailing(b"f", body.len() as u64, body, Digest::of(body));
        Action::ReplyAndClose(whole[..whole.len() - 1].to_vec())
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f");
    let (mut c, _) = client(&server, 0, None);
    let err = c.download(&name("f"), &dest, false, &mut NoProgress).unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.exit_code(), exit::NETWORK);
    assert!(!dest.exists(), "[TRL-3] [TRL-10] not received");
    assert_eq!(names_in(dir.path()), ["f.part", "f.part.meta"]);
    assert_eq!(std::fs::read(with_suffix(&dest, ".part")).unwrap(), body, "kept for a resume");
    let meta: PartMeta = serde_json::from_slice(&std::fs::read(with_suffix(&dest, ".part.meta")).unwrap()).unwrap();
    assert_eq!((meta.size, meta.md5), (size, None), "the size alone: the digest never came");

    // A later run resumes from the end, and the leading digest of the GET verifies the bytes.
    drop(c);
    let (mut c, _) = client(&server, 0, None);
    let done = c.download(&name("f"), &dest, false, &mut NoProgress).unwrap();
    assert_eq!(done.resumed_from, Some(size));
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(names_in(dir.path()), ["f"]);
}

#[test]
fn unverified_bytes_of_another_version_are_fetched_again_whole() {
    // The first reply is cut inside the data; by the resume the file has changed (same size).
    let old = data(200_000);
    let new: Vec<u8> = old.iter().map(|b| b ^ 0x55).collect();
    let server = fetch_server(new.clone(), move |s, body| match s.conn {
        0 => {
            let whole = raw::fetch_trailing(b"f", old.len() as u64, &old, Digest::of(&old));
            Action::ReplyAndClose(whole[..150_000].to_vec())
        }
        _ => Action::Reply(raw::fetch_trailing(b"f", body.len() as u64, body, Digest::of(body))),
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f");
    let (mut c, _) = client(&server, 5, None);
    let done = c.download(&name("f"), &dest, false, &mut NoProgress).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), new);
    assert_eq!(done.restarts, 1);
    let seen = requests(&server);
    assert_eq!(seen.iter().filter(|r| r.starts_with("GET ")).count(), 1, "{seen:?}");
    assert_eq!(seen.last().map(String::as_str), Some("FETCH 0"), "{seen:?}");
}

#[test]
fn a_download_from_a_server_without_trailer_is_a_get() {
    let body = data(10_000);
    let md5 = Digest::of(&body);
    let server = FakeServer::start(hello(Role::Read), move |s| match &s.request {
        Request::Get { offset, .. } => Action::Reply(raw::get(b"f", *offset, 10_000, md5, &body[*offset as usize..])),
        _ => Action::Reply(raw::error(ErrorCode::NOT_FOUND, "no")),
    });
    let dir = tempfile::tempdir().unwrap();
    let (mut c, _) = client(&server, 0, None);
    c.download(&name("f"), &dir.path().join("f"), false, &mut NoProgress).unwrap();
    assert_eq!(requests(&server), ["STAT", "GET 0"], "[TRL-1]");
}

#[test]
fn a_download_to_a_writer_checks_the_trailer() {
    let body = data(100_000);
    let good = fetch_server(body.clone(), |_, body| {
        Action::Reply(raw::fetch_trailing(b"f", body.len() as u64, body, Digest::of(body)))
    });
    let (mut c, _) = client(&good, 0, None);
    let mut out = Vec::new();
    let done = c.download_to_writer(&name("f"), &mut out, &mut NoProgress).unwrap();
    assert_eq!((out, done.md5), (body.clone(), Digest::of(&body)));

    let bad = fetch_server(body.clone(), |_, body| {
        Action::Reply(raw::fetch_trailing(b"f", body.len() as u64, body, Digest::EMPTY))
    });
    let (mut c, _) = client(&bad, 0, None);
    let err = c.download_to_writer(&name("f"), &mut Vec::new(), &mut NoProgress).unwrap_err();
    assert_eq!(err.exit_code(), exit::CHECKSUM, "{err}");
}

/// Counts the calls of `Progress::hashing`: a file read to compute its MD5.
#[derive(Default)]
struct Counting {
    hashing: usize,
}

impl Progress for Counting {
    fn hashing(&mut self, _: &Path, _: u64, _: u64) {
        self.hashing += 1;
    }
}
