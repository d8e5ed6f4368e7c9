//! § 11 and the storage side of § 7: atomic, verified uploads; consistent reads; big files.

use std::collections::HashSet;
use std::io::{Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use ferry_proto::codec::ServerItem;
use ferry_proto::{Digest, ErrorCode, PutMode, Request};

use crate::client::{ConnectOptions, Item, ReadError, IO_TIMEOUT};
use crate::{content, md5, wait_until, Client, StartFn, TestServer};

/// A client whose receive buffer is small and fixed: a download it does not read stalls the
/// server after a few megabytes at most (the server's send buffer).
fn slow_reader() -> ConnectOptions {
    ConnectOptions { recv_buffer: Some(16 * 1024), ..ConnectOptions::default() }
}

/// Waits until the server has begun storing an upload (a temporary file exists).
#[track_caller]
fn wait_for_upload_to_start(server: &TestServer) {
    assert!(wait_until(IO_TIMEOUT, || !server.temp_files().is_empty()), "the upload never started");
}

/// [STORE-2] [STORE-1]: an upload whose client leaves half-way — closing the socket, or
/// only its sending side — leaves the namespace as it was: no new file, an earlier file of that
/// name unchanged, no temporary file.
pub fn upload_cut_midway_leaves_nothing(engine: StartFn) {
    let server = TestServer::start(engine);
    let old = content(50, 10_000);
    server.client().put_ok("kept.bin", &old);
    for (n, half_close) in [("new.bin", false), ("kept.bin", false), ("new2.bin", true)] {
        let data = content(51, 200_000);
        let mut c = server.client();
        c.put_head(PutMode::Overwrite, n, data.len() as u64, md5(&data));
        c.send_data(&data[..100_000]);
        wait_for_upload_to_start(&server);
        if half_close {
            c.shutdown_write();
            c.expect_closed(IO_TIMEOUT);
        }
        drop(c);
        server.assert_no_temp_files(IO_TIMEOUT);
    }
    assert_eq!(server.root_entries(), ["kept.bin"], "[STORE-2]");
    assert_eq!(server.read_file("kept.bin").unwrap(), old, "[STORE-2] the earlier file stays");
    let mut c = server.client();
    c.stat("new.bin").assert_error(ErrorCode::NOT_FOUND);
    assert_eq!(c.get_ok("kept.bin", 0).1, old);
}

/// [STORE-1] [LIST-1] [STORE-4] [STORE-7]: while an upload is under way, other connections see the
/// earlier version whole (LIST, STAT, GET) and never the temporary file; once it is answered they
/// see the new version whole.
pub fn upload_is_invisible_until_complete(engine: StartFn) {
    let server = TestServer::start(engine);
    let (v0, v1) = (content(52, 30_000), content(53, 400_000));
    let mut observer = server.client();
    observer.put_ok("doc.bin", &v0);
    let mut uploader = server.client();
    uploader.put_head(PutMode::Overwrite, "doc.bin", v1.len() as u64, md5(&v1));
    uploader.send_data(&v1[..200_000]);
    wait_for_upload_to_start(&server);
    uploader.send_data(&v1[200_000..300_000]);
    let entries = observer.list();
    assert_eq!(entries.len(), 1, "[LIST-1] no temporary file listed: {entries:?}");
    assert_eq!((entries[0].name.as_str(), entries[0].size), ("doc.bin", v0.len() as u64), "[STORE-1]");
    assert_eq!(observer.stat("doc.bin").stat().size, v0.len() as u64, "[STORE-1]");
    let (frame, data) = observer.get_ok("doc.bin", 0);
    assert_eq!((frame.md5, data), (md5(&v0), v0.clone()), "[STORE-1] the old version, whole");
    uploader.send_data(&v1[300_000..]);
    assert!(uploader.read_reply().replaced());
    let (frame, data) = observer.get_ok("doc.bin", 0);
    assert_eq!((frame.md5, data.len()), (md5(&v1), v1.len()), "[STORE-1] the new version, whole");
    assert_eq!(data, v1);
    assert_eq!(server.root_entries(), ["doc.bin"]);
}

/// `racers` clients send the same name's upload at once: each sends its head and half its data,
/// all wait at a barrier, then each sends the rest. Returns each client's reply and content.
fn race(server: &TestServer, name: &str, mode: PutMode, size: usize, racers: usize) -> Vec<(Vec<u8>, crate::Reply)> {
    let barrier = Arc::new(Barrier::new(racers));
    let threads: Vec<_> = (0..racers)
        .map(|i| {
            let (addr, barrier, name) = (server.addr, barrier.clone(), name.to_owned());
            std::thread::spawn(move || {
                let data = content(60 + i as u64, size);
                let mut c = Client::hello(addr, None);
                c.put_head(mode, &name, data.len() as u64, md5(&data));
                c.send_data(&data[..size / 2]);
                barrier.wait();
                c.send_data(&data[size / 2..]);
                let reply = c.read_reply();
                (data, reply)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().expect("a racing client")).collect()
}

/// [STORE-6] [PUT-1]: of eight create-only uploads of one new name racing each other, exactly one
/// gets `put_ok` (created) and seven get `EXISTS`; the file is the winner's, whole. Three rounds.
pub fn racing_create_only_uploads_have_one_winner(engine: StartFn) {
    let server = TestServer::start(engine);
    for name in ["race-1", "race-2", "race-3"] {
        let results = race(&server, name, PutMode::CreateOnly, 64 * 1024, 8);
        let winners: Vec<&Vec<u8>> = results
            .iter()
            .filter_map(|(data, reply)| match reply.head() {
                ServerItem::PutOk { replaced: false } => Some(data),
                ServerItem::Error(e) if e.code == ErrorCode::EXISTS => None,
                _ => panic!("[STORE-6] unexpected reply {reply:?}"),
            })
            .collect();
        assert_eq!(winners.len(), 1, "[STORE-6] exactly one winner");
        assert_eq!(&server.read_file(name).unwrap(), winners[0], "[STORE-6] the winner's file, whole");
    }
    server.assert_no_temp_files(IO_TIMEOUT);
    assert_eq!(server.root_entries(), ["race-1", "race-2", "race-3"]);
}

/// [STORE-5]: eight overwrite uploads of one name racing each other all succeed, and the file ends
/// up equal to one of them, whole.
pub fn racing_overwrites_leave_one_whole_upload(engine: StartFn) {
    let server = TestServer::start(engine);
    let results = race(&server, "contested", PutMode::Overwrite, 256 * 1024, 8);
    for (_, reply) in &results {
        reply.replaced();
    }
    let stored = server.read_file("contested").unwrap();
    assert!(results.iter().any(|(data, _)| *data == stored), "[STORE-5] the file is one upload, whole");
    let (frame, data) = server.client().get_ok("contested", 0);
    assert_eq!(frame.md5, md5(&stored));
    assert_eq!(data, stored);
    server.assert_no_temp_files(IO_TIMEOUT);
}

/// [PUT-2] [STORE-5] [STORE-9]: of concurrent overwrite uploads of a name that does not exist yet, exactly
/// one reports "created" and the others "replaced" — the outcome is decided in the same step as
/// the publication, not by a look before it — and the file is one of the uploads, whole. Twenty
/// rounds of four racers, each round on a fresh name.
pub fn racing_overwrites_of_a_new_name_create_it_once(engine: StartFn) {
    const ROUNDS: usize = 20;
    let server = TestServer::start(engine);
    for round in 0..ROUNDS {
        let name = format!("fresh-{round}");
        let results = race(&server, &name, PutMode::Overwrite, 16 * 1024, 4);
        let created = results.iter().filter(|(_, reply)| !reply.replaced()).count();
        assert_eq!(created, 1, "[PUT-2] round {round}: exactly one upload created {name}");
        let stored = server.read_file(&name).unwrap();
        assert!(results.iter().any(|(data, _)| *data == stored), "[STORE-5] the file is one upload, whole");
    }
    server.assert_no_temp_files(IO_TIMEOUT);
    assert_eq!(server.root_entries().len(), ROUNDS, "no file left behind under another name");
}

/// [STORE-4] [GET-5] [LIST-3]: while one client keeps replacing a file with one of four versions,
/// two others GET and STAT it: every GET returns one version, whole, with that version's digest,
/// and every STAT describes one version.
pub fn reads_during_replacement_see_one_whole_version(engine: StartFn) {
    const SIZE: usize = 192 * 1024;
    let server = TestServer::start(engine);
    let versions: Arc<Vec<Vec<u8>>> = Arc::new((0..4).map(|i| content(70 + i, SIZE)).collect());
    let digests: Arc<HashSet<Digest>> = Arc::new(versions.iter().map(|v| md5(v)).collect());
    server.client().put_ok("hot.bin", &versions[0]);
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (addr, digests, done) = (server.addr, digests.clone(), done.clone());
            std::thread::spawn(move || {
                let mut c = Client::hello(addr, None);
                let mut rounds = 0;
                while rounds < 10 || (!done.load(Ordering::SeqCst) && rounds < 200) {
                    let (frame, data) = c.get_ok("hot.bin", 0);
                    assert!(digests.contains(&frame.md5), "[GET-5] an announced version");
                    assert_eq!(md5(&data), frame.md5, "[STORE-4] the data is the announced version, whole");
                    assert_eq!(frame.size, SIZE as u64);
                    let e = c.stat("hot.bin").stat();
                    assert_eq!(e.size, SIZE as u64, "[STORE-4]");
                    assert!(e.md5.is_none_or(|d| digests.contains(&d)), "[STORE-4] [LIST-3] {e:?}");
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();
    let mut writer = server.client();
    for i in 1..=40 {
        assert!(writer.put_ok("hot.bin", &versions[i % 4]));
    }
    done.store(true, Ordering::SeqCst);
    for r in readers {
        r.join().expect("a reader");
    }
    assert_eq!(server.read_file("hot.bin").unwrap(), versions[0]);
}

/// Reads a GET reply's head, leaving its data unread.
#[track_caller]
fn read_get_head(c: &mut Client) -> ferry_proto::FrameHead {
    match c.next_item(None) {
        Ok(Some(Item::Msg(ServerItem::GetHead { frame, .. }))) => frame,
        other => panic!("expected a GET reply head, got {other:?}"),
    }
}

/// Reads a GET reply's data to its end.
#[track_caller]
fn read_get_data(c: &mut Client) -> Vec<u8> {
    let mut data = Vec::new();
    loop {
        match c.next_item(None) {
            Ok(Some(Item::Data(d))) => data.extend_from_slice(&d),
            Ok(Some(Item::Msg(ServerItem::DataEnd))) => return data,
            other => panic!("expected GET data, got {other:?}"),
        }
    }
}

/// [GET-5] [DEL-1] [STORE-4]: a GET whose data is still being sent when the file is replaced, and
/// then when it is deleted, completes with exactly the version its head announced.
pub fn get_in_flight_completes_with_the_version_it_announced(engine: StartFn) {
    const SIZE: usize = 16 << 20;
    let server = TestServer::start(engine);
    let (v1, v2) = (content(80, SIZE), content(81, SIZE));
    let mut writer = server.client();
    writer.put_ok("moving.bin", &v1);
    let mut reader = server.client_with(slow_reader());

    reader.send(&Request::Get { name: crate::name("moving.bin"), offset: 0 });
    let frame = read_get_head(&mut reader);
    assert_eq!(frame.md5, md5(&v1));
    assert!(writer.put_ok("moving.bin", &v2), "replaced while the GET is in flight");
    assert!(read_get_data(&mut reader) == v1, "[GET-5] the old version, whole, after a replace");

    reader.send(&Request::Get { name: crate::name("moving.bin"), offset: 0 });
    let frame = read_get_head(&mut reader);
    assert_eq!(frame.md5, md5(&v2));
    writer.delete("moving.bin").assert_is(&ServerItem::DeleteOk);
    assert!(read_get_data(&mut reader) == v2, "[DEL-1] [GET-5] the deleted version, whole");
    reader.stat("moving.bin").assert_error(ErrorCode::NOT_FOUND);
}

/// [GET-6] [FRAME-1]: when a file shrinks (edited in place) while its data is being sent, the
/// server cannot send what it announced: it closes the connection, and the client sees a
/// truncated frame — a prefix of the file, then the close, never anything else.
pub fn get_of_a_file_truncated_mid_send_closes_the_connection(engine: StartFn) {
    const SIZE: usize = 16 << 20;
    let server = TestServer::start(engine);
    let data = content(82, SIZE);
    server.write_file("shrinking.bin", &data);
    let mut reader = server.client_with(slow_reader());
    reader.send(&Request::Get { name: crate::name("shrinking.bin"), offset: 0 });
    let frame = read_get_head(&mut reader);
    assert_eq!(frame.size, SIZE as u64);
    std::fs::OpenOptions::new().write(true).open(server.path("shrinking.bin")).unwrap().set_len(1024).unwrap();
    let mut got = Vec::new();
    let end = loop {
        match reader.next_item(None) {
            Ok(Some(Item::Data(d))) => got.extend_from_slice(&d),
            other => break other,
        }
    };
    assert!(
        matches!(end, Err(ReadError::Truncated { .. } | ReadError::Reset)),
        "[GET-6] the connection closes inside the frame, got {end:?} after {} bytes",
        got.len()
    );
    assert!(got.len() < SIZE, "[GET-6] a truncated frame");
    assert!(got[..got.len().min(1024)] == data[..got.len().min(1024)], "a prefix of the file");
}

/// [GET-1] [GET-2] [LIST-1] [STAT-1] [ENC-1] [FRAME-2]: a sparse file of 4 GiB + 4 KiB (sizes and
/// offsets past 32 bits) is listed and STATed with its size; GETs from offsets past 2^32 return
/// the right bytes and the digest of the whole file.
pub fn files_over_4_gib_are_listed_and_resumed(engine: StartFn) {
    const SIZE: u64 = (4 << 30) + 4096;
    let server = TestServer::start(engine);
    let tail: &'static [u8] = b"the last 16 byte";
    let straddle: &'static [u8] = b"<-4 GiB->";
    {
        let mut f = std::fs::File::create(server.path("sparse.bin")).unwrap();
        f.set_len(SIZE).unwrap();
        f.seek(SeekFrom::Start((1 << 32) - 4)).unwrap();
        f.write_all(straddle).unwrap();
        f.seek(SeekFrom::Start(SIZE - 16)).unwrap();
        f.write_all(tail).unwrap();
    }
    // The digest of the whole file, computed here from what was written (holes read as zeros)
    // while the server reads and hashes the file itself.
    let hashing = std::thread::spawn(move || {
        let pieces: [(u64, &[u8]); 2] = [((1 << 32) - 4, straddle), (SIZE - 16, tail)];
        let mut h = ferry_proto::digest::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0u64;
        while at < SIZE {
            let n = (SIZE - at).min(buf.len() as u64) as usize;
            buf[..n].fill(0);
            for (offset, bytes) in pieces {
                let (from, to) = (offset.max(at), (offset + bytes.len() as u64).min(at + n as u64));
                if from < to {
                    let src = &bytes[(from - offset) as usize..(to - offset) as usize];
                    buf[(from - at) as usize..(to - at) as usize].copy_from_slice(src);
                }
            }
            h.update(&buf[..n]);
            at += n as u64;
        }
        h.finish()
    });
    let mut c = server.client();
    // The first GET waits while the server hashes 4 GiB.
    c.set_io_timeout(Duration::from_secs(300));
    let entries = c.list();
    assert_eq!((entries[0].name.as_str(), entries[0].size), ("sparse.bin", SIZE), "[LIST-1] [ENC-1]");
    assert_eq!(c.stat("sparse.bin").stat().size, SIZE, "[STAT-1]");
    let (frame, data) = c.get_ok("sparse.bin", SIZE - 16);
    assert_eq!(frame.size, SIZE, "[GET-1]");
    assert_eq!(&data, tail, "[GET-1] the last 16 bytes");
    let whole = hashing.join().unwrap();
    assert_eq!(frame.md5, whole, "[GET-2] the digest of the whole 4 GiB file");
    let (frame, data) = c.get_ok("sparse.bin", (1 << 32) - 4);
    assert_eq!(frame.md5, whole);
    assert_eq!(data.len(), 4096 + 4);
    assert_eq!(&data[..straddle.len()], straddle, "bytes across the 4 GiB boundary");
    assert_eq!(&data[data.len() - 16..], tail);
    let e = c.stat("sparse.bin").stat();
    assert!(e.md5.is_none_or(|d| d == whole), "[LIST-3] {e:?}");
}

/// [STORE-7] (a SHOULD: the server must start whatever it cannot clean): a root holding a
/// directory named like a temporary file, with a file inside, next to a stale temporary file. The
/// server starts and serves, the stale file is removed, and the directory and its content are left
/// alone.
pub fn start_up_leaves_a_directory_named_like_a_temporary_file(engine: StartFn) {
    let dir = crate::server::new_dir();
    let root = dir.path().join("root");
    let odd = root.join(".ferry-tmp-dir");
    std::fs::create_dir(&odd).unwrap();
    std::fs::write(odd.join("inside"), b"not ours").unwrap();
    let stale = root.join(".ferry-tmp-1-2");
    std::fs::write(&stale, b"half an upload").unwrap();
    let server = TestServer::start_in(engine, dir, |_| {});
    assert!(wait_until(Duration::from_secs(2), || !stale.exists()), "[STORE-7] {:?}", server.root_entries());
    assert!(server.client().list().is_empty(), "[LIST-1] neither is listed");
    assert_eq!(server.root_entries(), [".ferry-tmp-dir"], "the directory is left alone");
    assert_eq!(std::fs::read(odd.join("inside")).unwrap(), b"not ours", "and its content too");
}

/// The kinds of entry that may hold a name in the root without being a regular file.
#[derive(Debug, Clone, Copy)]
enum NonFile {
    /// A directory, with a file inside.
    Dir,
    /// A symbolic link to a file outside the root.
    Link,
    /// A symbolic link to nothing.
    Dangling,
}

const NON_FILES: [NonFile; 3] = [NonFile::Dir, NonFile::Link, NonFile::Dangling];

/// Makes `name` in the root a `kind` of non-file; link targets live in `outside`.
fn make_non_file(server: &TestServer, name: &str, kind: NonFile, outside: &std::path::Path) {
    let path = server.path(name);
    match kind {
        NonFile::Dir => {
            std::fs::create_dir(&path).unwrap();
            std::fs::write(path.join("inside"), b"a directory's own file").unwrap();
        }
        NonFile::Link => {
            let target = outside.join(format!("{name}.target"));
            std::fs::write(&target, b"a link's target").unwrap();
            std::os::unix::fs::symlink(target, path).unwrap();
        }
        NonFile::Dangling => std::os::unix::fs::symlink(outside.join(format!("{name}.missing")), path).unwrap(),
    }
}

/// What a non-file is, observed without following it and through it: the kind of entry, a
/// link's target path, and the content behind it. Equal before and after means untouched.
fn describe(path: &std::path::Path) -> String {
    let meta = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{} is gone: {e}", path.display()));
    if meta.is_dir() {
        let inside = std::fs::read(path.join("inside")).unwrap_or_default();
        let count = std::fs::read_dir(path).unwrap().count();
        format!("directory of {count} entries, inside: {:?}", String::from_utf8_lossy(&inside))
    } else if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path).unwrap();
        let behind = std::fs::read(&target).map(|d| String::from_utf8_lossy(&d).into_owned());
        format!("link to {} holding {behind:?}", target.display())
    } else {
        format!("a {:?}", meta.file_type())
    }
}

/// Asserts that the outside directory holds only the link targets it was given: nothing was
/// created through a dangling link.
#[track_caller]
fn assert_nothing_written_through_links(outside: &std::path::Path) {
    for entry in std::fs::read_dir(outside).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(name.ends_with(".target"), "[SEC-2] {name} was created outside the root");
    }
}

/// [SEC-2] [NAME-10] [PUT-5] [STAT-2] [STORE-8] (a name held by a non-file is not in the namespace
/// and is never replaced): a PUT of a name that a directory, a
/// link to a file or a dangling link holds gets `FORBIDDEN` in either mode; the entry is left as
/// it was, the refused data is read and discarded (the next request on the connection is
/// answered), and STAT of the name says `NOT_FOUND`.
pub fn put_onto_a_directory_or_link_is_forbidden_and_replaces_nothing(engine: StartFn) {
    let server = TestServer::start(engine);
    let outside = tempfile::tempdir().unwrap();
    let data = content(90, 300_000);
    let mut c = server.client();
    for (i, kind) in NON_FILES.into_iter().enumerate() {
        let name = format!("held-{i}");
        make_non_file(&server, &name, kind, outside.path());
        let before = describe(&server.path(&name));
        for mode in [PutMode::Overwrite, PutMode::CreateOnly] {
            let reply = c.put(&name, &data, mode);
            assert_eq!(reply.error_code(), Some(ErrorCode::FORBIDDEN), "{kind:?}, {mode:?}: {reply:?}");
            c.stat(&name).assert_error(ErrorCode::NOT_FOUND);
            assert_eq!(describe(&server.path(&name)), before, "{kind:?}, {mode:?}: the entry is untouched");
        }
    }
    assert_nothing_written_through_links(outside.path());
    assert!(c.list().is_empty(), "[NAME-10] none of them is listed");
    server.assert_no_temp_files(IO_TIMEOUT);
}

/// [SEC-2] [NAME-10] [STORE-2] [STORE-8]: a directory or link
/// that takes a name while an upload of that name is under way is not replaced when the upload
/// completes: the PUT gets `FORBIDDEN` in either mode, the entry is left as it was, no temporary
/// file is left, and the connection goes on.
pub fn a_directory_or_link_made_during_an_upload_is_not_replaced(engine: StartFn) {
    let server = TestServer::start(engine);
    let outside = tempfile::tempdir().unwrap();
    let data = content(91, 300_000);
    let mut c = server.client();
    for (i, kind) in NON_FILES.into_iter().enumerate() {
        for mode in [PutMode::Overwrite, PutMode::CreateOnly] {
            let name = format!("late-{i}-{}", mode as u8);
            c.put_head(mode, &name, data.len() as u64, md5(&data));
            c.send_data(&data[..100_000]);
            wait_for_upload_to_start(&server);
            make_non_file(&server, &name, kind, outside.path());
            let before = describe(&server.path(&name));
            c.send_data(&data[100_000..]);
            let reply = c.read_reply();
            assert_eq!(reply.error_code(), Some(ErrorCode::FORBIDDEN), "{kind:?}, {mode:?}: {reply:?}");
            assert_eq!(describe(&server.path(&name)), before, "{kind:?}, {mode:?}: the entry is untouched");
            server.assert_no_temp_files(IO_TIMEOUT);
            c.stat(&name).assert_error(ErrorCode::NOT_FOUND);
        }
    }
    assert_nothing_written_through_links(outside.path());
}

/// A file's status-change time, in nanoseconds.
fn ctime_ns(path: &std::path::Path) -> i128 {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec())
}

/// Waits until the clock that stamps status-change times in `dir` has moved past `since` (file
/// systems stamp with a coarse clock, so a write right after another may carry the same time):
/// rewrites a probe file there and reads its ctime until it is later.
#[track_caller]
fn wait_for_ctime_after(dir: &std::path::Path, since: i128) {
    let probe = dir.join("ctime-probe");
    let moved = wait_until(Duration::from_secs(2), || {
        std::fs::write(&probe, b"probe").unwrap();
        ctime_ns(&probe) > since
    });
    assert!(moved, "the file system's ctime clock did not move in 2 s");
}

/// [GET-2] [GET-5] [STAT-1] [LIST-3]: a file edited in place by hand — same size, and its
/// modification time set back to what it was — is not served with the digest of its earlier
/// content: STAT no longer reports the old digest, GET sends the new content with its digest.
/// (Before the edit, the uploaded file's digest is the one verified on upload: no hashing.)
pub fn a_file_edited_in_place_with_its_mtime_set_back_gets_its_new_digest(engine: StartFn) {
    let server = TestServer::start(engine);
    let hashed = || server.handle().expect("an in-process server").server().store.digests().hashed_count();
    let (v1, v2) = (content(92, 64 * 1024), content(93, 64 * 1024));
    let path = server.path("edited.bin");
    let mut c = server.client();
    c.put_ok("edited.bin", &v1);
    assert_eq!(c.stat("edited.bin").stat().md5, Some(md5(&v1)), "[LIST-3] the upload's digest is known");
    assert_eq!(c.get_ok("edited.bin", 0).0.md5, md5(&v1));
    assert_eq!(hashed(), 0, "the digest verified on upload is kept: nothing was hashed");

    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    wait_for_ctime_after(server.dir(), ctime_ns(&path));
    {
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all(&v2).unwrap();
        f.set_modified(mtime).unwrap();
    }
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!((meta.len(), meta.modified().unwrap()), (v1.len() as u64, mtime), "same size, same mtime");

    let e = c.stat("edited.bin").stat();
    assert!(e.md5.is_none_or(|d| d == md5(&v2)), "[LIST-3] no stale digest: {e:?}");
    let (frame, data) = c.get_ok("edited.bin", 0);
    assert_eq!(frame.md5, md5(&v2), "[GET-2] the digest of the file as it is");
    assert!(data == v2, "[GET-5] the content it describes");
    assert_eq!(c.stat("edited.bin").stat().md5, Some(md5(&v2)));
    assert_eq!(hashed(), 1, "the edited file was hashed once");
}

/// The MD5 of 1 GiB of zero bytes (`truncate -s 1G f && md5sum f`).
pub(crate) const MD5_OF_1_GIB_OF_ZEROS: &str = "cd573cfaace07e7949bc0c46028904ff";

/// [SEC-3] [LIST-3] [GET-2]: GETs waiting for the server's bound on files hashed at once do not
/// hold up anyone else. With `max_concurrent_hashes = 1`, 64 connections each ask for a 1 GiB file
/// nobody has hashed yet (from offset = size, so no data flows); a new client's hello and LIST
/// are then answered while that file is still being hashed. Every GET is answered in the end with
/// the file's digest, and the file was hashed once.
pub fn gets_waiting_for_a_hash_do_not_hold_up_other_clients(engine: StartFn) {
    const WAITING: usize = 64;
    const SIZE: u64 = 1 << 30;
    let server = TestServer::start_with(engine, |s| {
        s.max_concurrent_hashes = 1;
        s.max_clients = WAITING as u32 + 4;
        s.max_per_ip = WAITING as u32 + 4;
    });
    let hashed = || server.handle().expect("an in-process server").server().store.digests().hashed_count();
    std::fs::File::create(server.path("zeros.bin")).unwrap().set_len(SIZE).unwrap();
    let mut waiting: Vec<Client> = (0..WAITING).map(|_| server.client()).collect();
    for c in &mut waiting {
        c.send(&Request::Get { name: crate::name("zeros.bin"), offset: SIZE });
    }

    let mut newcomer = server.client();
    let listed = newcomer.list();
    assert_eq!(hashed(), 0, "[SEC-3] the newcomer was answered only once the file was hashed");
    assert_eq!((listed.len(), listed[0].md5), (1, None), "[LIST-3] no digest is computed for LIST");

    let digest = Digest::from_hex(MD5_OF_1_GIB_OF_ZEROS.as_bytes()).unwrap();
    for c in &mut waiting {
        // One hash of 1 GiB: seconds on a slow machine, more when tests share its cores.
        c.set_io_timeout(Duration::from_secs(120));
        let (offset, frame) = c.read_reply().frame();
        assert_eq!((offset, frame.size, frame.md5), (SIZE, SIZE, digest), "[GET-2]");
    }
    assert_eq!(hashed(), 1, "[SEC-3] the file was hashed once, not once per waiting GET");
}

/// [PUT-5] [STORE-2] [ERR-6]: an upload that does not fit on the root's file system gets
/// `STORAGE_FULL`, not `INTERNAL`; its data is read and discarded, the connection goes on, and no
/// temporary file is left behind, so the space is free again for the next upload. The root is a
/// 256 KiB tmpfs; where none can be mounted (not root), the case says why and skips.
pub fn a_put_that_fills_the_disk_is_storage_full_and_leaves_nothing(engine: StartFn) {
    let fs = match super::SmallFs::mount("tmpfs", "size=256k,mode=0755") {
        Ok(fs) => fs,
        Err(why) => return eprintln!("skipped: {why}"),
    };
    let root = fs.path().to_owned();
    let server = TestServer::start_with(engine, |s| s.root = root.clone());
    let entries = || {
        let mut names: Vec<String> =
            std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    };
    let mut c = server.client();
    let big = content(57, 1 << 20);
    c.put("big.bin", &big, PutMode::Overwrite).assert_error(ErrorCode::STORAGE_FULL);
    c.stat("big.bin").assert_error(ErrorCode::NOT_FOUND);
    assert!(wait_until(IO_TIMEOUT, || entries().is_empty()), "[STORE-2] nothing left: {:?}", entries());
    let small = content(58, 100_000);
    assert!(!c.put_ok("small.bin", &small), "[PUT-5] the connection goes on, and the space is free again");
    assert_eq!(c.get_ok("small.bin", 0).1, small);
    assert_eq!(entries(), ["small.bin"]);
}
