//! The client's digest cache (`ferry_client::digest_cache`): an upload of a file unchanged since
//! it was last hashed, uploaded or downloaded, is sent without being read first; any other
//! version of the file is hashed; a cache that cannot be used changes nothing but the speed.
//!
//! Whether a file was read before sending is observed through `Progress::hashing`, never through
//! timing. The server is the fake one, which checks every PUT's data against its MD5 like a real
//! server and records what it received.

use std::fs::{File, FileTimes, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_client::testing::{hello, raw, Action, FakeServer, Seen};
use ferry_client::{Client, Config, Jitter, Progress, RetryPolicy};
use ferry_digest_store::{FileKey, Index};
use ferry_proto::{tag, Digest, ErrorCode, Name, PutMode, Request, Role};

/// Stores nothing, answers a PUT whose data matches its MD5 with "created" and any other with
/// `CHECKSUM_MISMATCH`, and serves `body` as `f`.
fn server(body: Vec<u8>) -> FakeServer {
    let md5 = Digest::of(&body);
    FakeServer::start(hello(Role::Write), move |s| match &s.request {
        Request::Put(head) if Some(Digest::of(&s.data)) == head.md5 => Action::Reply(vec![tag::PUT, 0]),
        Request::Put(_) => Action::Reply(raw::error(ErrorCode::CHECKSUM_MISMATCH, "the data does not match")),
        Request::Get { offset, .. } => {
            Action::Reply(raw::get(b"f", *offset, body.len() as u64, md5, &body[*offset as usize..]))
        }
        _ => Action::Reply(raw::error(ErrorCode::UNSUPPORTED, "no")),
    })
}

/// A new client, as a new `ferry` process would be, with its cache at `cache`.
fn client(server: &FakeServer, cache: Option<PathBuf>) -> Client {
    Client::new(Config {
        server: server.addr.to_string(),
        timeout: Duration::from_secs(5),
        retry: RetryPolicy { retries: 0, jitter: Jitter::fixed(0.5), ..RetryPolicy::default() },
        digest_cache: cache,
        ..Config::default()
    })
}

/// Counts the calls of `Progress::hashing`: a file read to compute its MD5.
#[derive(Default)]
struct Hashing {
    calls: usize,
}

impl Progress for Hashing {
    fn hashing(&mut self, _: &Path, _: u64, _: u64) {
        self.calls += 1;
    }
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

/// The MD5 each PUT announced, in order.
fn put_digests(seen: &[Seen]) -> Vec<Digest> {
    seen.iter()
        .filter_map(|s| match &s.request {
            Request::Put(head) => head.md5,
            _ => None,
        })
        .collect()
}

/// Uploads `path` as `f` with a new client and returns whether it read the file first.
fn upload(server: &FakeServer, cache: Option<PathBuf>, path: &Path) -> ferry_client::Uploaded {
    let mut hashing = Hashing::default();
    let up = client(server, cache).upload(path, &name("f"), PutMode::Overwrite, &mut hashing).unwrap();
    assert_eq!(up.digest_from_cache, hashing.calls == 0, "digest_from_cache says whether the file was read");
    up
}

/// Waits until a file created now gets a status-change time later than `path`'s, so that a write
/// to `path` is told apart from the version it has. File systems stamp times from a coarse clock
/// (a jiffy, or a second on some), and the test must not depend on how fast it runs.
fn let_the_file_clock_tick_past(path: &Path) {
    let then = FileKey::of(&std::fs::metadata(path).unwrap()).ctime_ns;
    let probe = path.with_extension("probe");
    while FileKey::of(&File::create(&probe).unwrap().metadata().unwrap()).ctime_ns <= then {
        std::thread::yield_now();
    }
    std::fs::remove_file(probe).unwrap();
}

#[test]
fn a_second_upload_of_an_unchanged_file_does_not_read_it_first() {
    let body = data(3 << 20, 0);
    let server = server(Vec::new());
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache/ferry/digests.redb");
    let path = dir.path().join("big.bin");
    std::fs::write(&path, &body).unwrap();

    assert!(!upload(&server, Some(cache.clone()), &path).digest_from_cache, "the first upload hashes");
    assert!(cache.exists(), "the cache and its directory are created");
    let second = upload(&server, Some(cache.clone()), &path);
    assert!(second.digest_from_cache, "the second takes the digest from the cache");
    assert_eq!(second.md5, Digest::of(&body));
    assert_eq!(put_digests(&server.seen()), [Digest::of(&body); 2], "both verified by the server, once each");
    // Without the cache, the file is read again.
    assert!(!upload(&server, None, &path).digest_from_cache);
}

#[test]
fn an_edit_of_the_same_size_with_its_mtime_set_back_is_hashed_again() {
    let (old, new) = (data(100_000, 0), data(100_000, 0x5A));
    let server = server(Vec::new());
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("digests.redb");
    let path = dir.path().join("doc.txt");
    std::fs::write(&path, &old).unwrap();
    upload(&server, Some(cache.clone()), &path);

    // Rewrite the bytes in place, then set the modification time back, as `cp -p`, `rsync -t`
    // or an editor may: only the status-change time still tells the versions apart.
    let before = std::fs::metadata(&path).unwrap();
    let_the_file_clock_tick_past(&path);
    let mut f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all(&new).unwrap();
    f.set_times(FileTimes::new().set_modified(before.modified().unwrap())).unwrap();
    drop(f);
    let after = std::fs::metadata(&path).unwrap();
    assert_eq!((after.len(), after.modified().unwrap()), (before.len(), before.modified().unwrap()));

    let up = upload(&server, Some(cache.clone()), &path);
    assert!(!up.digest_from_cache, "the edited file is hashed again");
    assert_eq!(up.md5, Digest::of(&new));
    assert_eq!(
        put_digests(&server.seen()),
        [Digest::of(&old), Digest::of(&new)],
        "the new digest was sent the first time, not found out through a refusal"
    );
    assert!(upload(&server, Some(cache), &path).digest_from_cache, "and it is cached in turn");
}

#[test]
fn a_cache_that_cannot_be_used_does_not_break_uploads() {
    let body = data(50_000, 1);
    let server = server(Vec::new());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.bin");
    std::fs::write(&path, &body).unwrap();
    // Its directory would have to be inside a regular file: no one, root included, can make it.
    let under_a_file = path.join("ferry/digests.redb");
    // A file that is not a redb database.
    let garbage = dir.path().join("garbage.redb");
    std::fs::write(&garbage, b"this is not a database").unwrap();
    for cache in [under_a_file, garbage.clone()] {
        for _ in 0..2 {
            let up = upload(&server, Some(cache.clone()), &path);
            assert!(!up.digest_from_cache, "{}", cache.display());
            assert_eq!(up.md5, Digest::of(&body));
        }
    }
    assert_eq!(std::fs::read(&garbage).unwrap(), b"this is not a database", "left as it was");
}

#[test]
fn a_downloaded_file_is_uploaded_without_being_read_first() {
    let body = data(200_000, 2);
    let server = server(body.clone());
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("digests.redb");
    let dest = dir.path().join("f");
    client(&server, Some(cache.clone())).download(&name("f"), &dest, false, &mut Hashing::default()).unwrap();
    let up = upload(&server, Some(cache), &dest);
    assert!(up.digest_from_cache, "the download recorded the published file's digest");
    assert_eq!(put_digests(&server.seen()), [Digest::of(&body)]);
}

#[test]
fn a_wrong_digest_in_the_cache_costs_a_hash_and_a_second_send_never_a_wrong_file() {
    // A record that matches the file's key but not its bytes: what a file system whose times
    // cannot tell two writes apart would leave.
    let body = data(100_000, 3);
    let lie = Digest::of(b"another version");
    let server = server(Vec::new());
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("digests.redb");
    let path = dir.path().join("a.bin");
    std::fs::write(&path, &body).unwrap();
    let index = Index::open_shared(&cache, 10).unwrap();
    index.insert(&FileKey::of(&std::fs::metadata(&path).unwrap()), lie).unwrap();
    drop(index);

    let up = upload(&server, Some(cache.clone()), &path);
    assert!(!up.digest_from_cache, "hashed after the server refused the cached digest");
    assert_eq!(put_digests(&server.seen()), [lie, Digest::of(&body)]);
    assert!(upload(&server, Some(cache), &path).digest_from_cache, "the right digest replaced the wrong one");
}

/// Changes the file's permissions (and so its status-change time) at the first chunk sent.
struct ChmodWhileSending {
    path: PathBuf,
    done: bool,
}

impl Progress for ChmodWhileSending {
    fn transferred(&mut self, _: u64) {
        if !self.done {
            self.done = true;
            let_the_file_clock_tick_past(&self.path);
            let mut perms = std::fs::metadata(&self.path).unwrap().permissions();
            perms.set_readonly(!perms.readonly());
            std::fs::set_permissions(&self.path, perms).unwrap();
        }
    }
}

#[test]
fn a_file_that_is_not_the_version_hashed_at_the_end_is_not_recorded() {
    // A chmod during the upload leaves the bytes alone, so the upload succeeds; but the file's
    // key is no longer the one it was hashed under, and only a digest known to belong to the key
    // recorded is ever recorded.
    let body = data(1 << 20, 4);
    let server = server(Vec::new());
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("digests.redb");
    let path = dir.path().join("a.bin");
    std::fs::write(&path, &body).unwrap();
    let hashed = FileKey::of(&std::fs::metadata(&path).unwrap());
    let mut chmod = ChmodWhileSending { path: path.clone(), done: false };
    let up = client(&server, Some(cache.clone())).upload(&path, &name("f"), PutMode::Overwrite, &mut chmod).unwrap();
    assert!(chmod.done && !up.digest_from_cache);
    assert_ne!(FileKey::of(&std::fs::metadata(&path).unwrap()), hashed, "the chmod moved the ctime");
    assert_eq!(Index::open_shared(&cache, 10).unwrap().get(&hashed).unwrap(), None);
    assert!(!upload(&server, Some(cache), &path).digest_from_cache);
}
