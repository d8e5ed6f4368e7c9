//! Digests that last (§ 7.3 `[GET-8]`, § 7.1 `[LIST-5]`): kept across restarts, in the file's
//! xattr or in the index; computed in the background before anyone asks; and a GET that needs a
//! digest being computed waits for that computation instead of reading the file again.
//!
//! What a case asserts about hashing it reads from the server's counters (files hashed from
//! disk, digests read back, GETs that joined a hash), never from timing.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_core::digests::persist::PersistMode;
use ferry_core::digests::Begun;
use ferry_core::indexer::{Indexer, IndexerSettings};
use ferry_core::store::Store;
use ferry_proto::Request;

use crate::server::TestServer;
use crate::{content, md5, wait_until, StartFn};

/// Where a case's server keeps digests: the file's xattr (with the index for files that cannot
/// have one), and the index alone, as on a file system without user xattrs.
const MODES: [PersistMode; 2] = [PersistMode::Auto, PersistMode::Index];

fn store(server: &TestServer) -> &Arc<Store> {
    &server.handle().expect("an in-process server").server().store
}

/// [GET-8] [GET-2]: a digest computed once is kept across a restart, wherever digests are kept:
/// the first GET after the restart reads it back and hashes nothing.
pub fn digests_survive_a_restart(engine: StartFn) {
    for mode in MODES {
        let mut server = TestServer::start_with(engine, |s| s.digests = mode);
        let data = content(41, 300_000);
        server.write_file("by-hand.bin", &data);
        assert_eq!(server.client().get_ok("by-hand.bin", 0).0.md5, md5(&data), "{mode:?}");
        assert_eq!(store(&server).digests().hashed_count(), 1, "{mode:?}: the first GET hashed the file");
        let uploaded = content(42, 1000);
        server.client().put_ok("uploaded.bin", &uploaded);

        server.restart(engine, |s| s.digests = mode);
        let mut c = server.client();
        let (frame, got) = c.get_ok("by-hand.bin", 0);
        assert_eq!(frame.md5, md5(&data), "{mode:?} [GET-2]");
        assert!(got == data, "{mode:?}: the file's content");
        assert_eq!(c.get_ok("uploaded.bin", 0).0.md5, md5(&uploaded), "{mode:?}: an upload's verified digest");
        let digests = store(&server).digests();
        assert_eq!(
            digests.hashed_count(),
            0,
            "{mode:?} [GET-8]: nothing was hashed after the restart; digests kept {}; loaded {}",
            store(&server).persist().describe(),
            digests.loaded_count()
        );
        assert_eq!(digests.loaded_count(), 2, "{mode:?}: both digests were read back");
        if mode == PersistMode::Index {
            assert!(server.path(".ferry-digests").is_file(), "the index is in the root");
            assert!(!c.list().iter().any(|e| e.name.as_str().starts_with(".ferry")), "[LIST-1] and never listed");
        }
    }
}

/// [GET-8] [GET-2] [GET-5]: a file edited in place while the server was down — same size, and its
/// modification time set back — is not served with the digest kept for its earlier content.
pub fn a_file_edited_while_the_server_was_down_gets_its_new_digest(engine: StartFn) {
    for mode in MODES {
        let mut server = TestServer::start_with(engine, |s| s.digests = mode);
        let (v1, v2) = (content(43, 64 * 1024), content(44, 64 * 1024));
        server.write_file("edited.bin", &v1);
        assert_eq!(server.client().get_ok("edited.bin", 0).0.md5, md5(&v1));

        server.restart(engine, |s| s.digests = PersistMode::Off);
        let path = server.path("edited.bin");
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        // Past the window the xattr's own write stamped ctime in.
        std::thread::sleep(Duration::from_millis(30));
        {
            let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.write_all(&v2).unwrap();
            f.set_modified(mtime).unwrap();
        }
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.len(), meta.modified().unwrap()), (v1.len() as u64, mtime), "same size, same mtime");

        server.restart(engine, |s| s.digests = mode);
        let mut c = server.client();
        let e = c.stat("edited.bin").stat();
        assert!(e.md5.is_none_or(|d| d == md5(&v2)), "{mode:?} [LIST-3] no stale digest: {e:?}");
        let (frame, data) = c.get_ok("edited.bin", 0);
        assert_eq!(frame.md5, md5(&v2), "{mode:?} [GET-2] the digest of the file as it is");
        assert!(data == v2, "{mode:?} [GET-5]");
        assert_eq!(store(&server).digests().hashed_count(), 1, "{mode:?}: the edited file was hashed again");
    }
}

/// [GET-8] [LIST-5]: with background hashing, a file in the root when the server starts and a
/// file copied in while it runs both get their digests without any GET: STAT reports them, and
/// the GETs that follow hash nothing.
pub fn files_are_hashed_in_the_background_before_anyone_asks(engine: StartFn) {
    let dir = crate::server::new_dir();
    let before = content(45, 200_000);
    std::fs::write(dir.path().join("root/before.bin"), &before).unwrap();
    let server = TestServer::start_in(engine, dir, |_| {});
    let handle = server.handle().expect("an in-process server");
    let settings = IndexerSettings { settle: Duration::from_millis(50), ..IndexerSettings::default() };
    let indexer = Indexer::start(handle.server(), settings).expect("the indexer");
    let deadline = Instant::now() + Duration::from_secs(30);
    assert!(indexer.wait_until(deadline, |s| s.digests().hashed_count() == 1), "the file there at start was hashed");

    let after = content(46, 300_000);
    server.write_file("after.bin", &after);
    assert!(indexer.wait_until(deadline, |s| s.digests().hashed_count() == 2), "the file copied in was hashed");
    let mut c = server.client();
    assert_eq!(c.stat("before.bin").stat().md5, Some(md5(&before)), "[LIST-3]");
    assert_eq!(c.stat("after.bin").stat().md5, Some(md5(&after)), "[LIST-3]");
    assert_eq!(c.get_ok("after.bin", 0).0.md5, md5(&after));
    assert_eq!(store(&server).digests().hashed_count(), 2, "[GET-8] the GET hashed nothing");
    indexer.stop();
}

/// [GET-8] [LIST-5] [GET-2]: a GET of a file whose hash is under way waits for that hash and is
/// answered with its digest: the file is read once. Meanwhile a STAT of it is answered at once,
/// without a digest. The hash under way is led by the case itself, so that the GET is certain to
/// arrive while it runs.
pub fn a_get_joins_the_hash_under_way(engine: StartFn) {
    let server = TestServer::start(engine);
    let data = content(47, 1 << 20);
    server.write_file("shared.bin", &data);
    let store = store(&server);
    let opened = store.open_file(&crate::name("shared.bin")).unwrap();
    let Begun::Lead(lead) = store.hash_job(&opened).unwrap().begin() else { panic!("nobody else hashes it") };

    let mut getter = server.client();
    getter.send(&Request::Get { name: crate::name("shared.bin"), offset: 0 });
    assert!(wait_until(Duration::from_secs(10), || store.digests().joined_count() == 1), "the GET joined the hash");
    let e = server.client().stat("shared.bin").stat();
    assert_eq!(e.md5, None, "[LIST-5] a STAT does not wait for the hash under way");
    assert_eq!(store.digests().hashed_count(), 0);

    assert_eq!(lead.run().unwrap(), md5(&data));
    let reply = getter.read_reply();
    let (_, frame) = reply.frame();
    assert_eq!(frame.md5, md5(&data), "[GET-2]");
    assert!(reply.data == data);
    assert_eq!(store.digests().hashed_count(), 1, "[GET-8] the file was read once");
}

/// [GET-8]: a GET that arrives while the background indexer hashes the same file waits for that
/// hash, and is served correctly; the file is hashed once. (1 GiB of zeros takes seconds to hash;
/// the GET is sent as soon as the hash is under way.)
pub fn a_get_during_background_hashing_is_served_by_it(engine: StartFn) {
    const SIZE: u64 = 1 << 30;
    let server = TestServer::start(engine);
    std::fs::File::create(server.path("zeros.bin")).unwrap().set_len(SIZE).unwrap();
    let handle = server.handle().expect("an in-process server");
    let indexer = Indexer::start(handle.server(), IndexerSettings::default()).expect("the indexer");
    let store = store(&server);
    assert!(wait_until(Duration::from_secs(10), || store.hashes_under_way() == 1), "background hashing began");
    let mut c = server.client();
    c.set_io_timeout(Duration::from_secs(120));
    let (frame, data) = c.get_ok("zeros.bin", SIZE - 16);
    assert_eq!(frame.md5.to_string(), super::storage::MD5_OF_1_GIB_OF_ZEROS, "[GET-2]");
    assert_eq!(data, vec![0u8; 16]);
    assert_eq!(store.digests().hashed_count(), 1, "[GET-8] hashed once, by the indexer");
    assert_eq!(store.digests().joined_count(), 1, "the GET waited for the background hash");
    indexer.stop();
}

/// [GET-8] [GET-2]: on a root whose file system has no user xattrs (a ramfs), digests are kept in
/// the index in the root, and the server says so; they survive a restart. Where no ramfs can be
/// mounted (not root), the case says why and skips.
pub fn a_root_without_user_xattrs_keeps_digests_in_the_index(engine: StartFn) {
    let fs = match super::SmallFs::mount("ramfs", "mode=0755") {
        Ok(fs) => fs,
        Err(why) => return eprintln!("skipped: {why}"),
    };
    let root = fs.path().to_owned();
    let data = content(48, 100_000);
    std::fs::write(root.join("f.bin"), &data).unwrap();
    let mut server = TestServer::start_with(engine, |s| s.root = root.clone());
    let kept = store(&server).persist().describe();
    assert!(kept.starts_with("in the index"), "no xattrs here, so the index: {kept}");
    assert_eq!(server.client().get_ok("f.bin", 0).0.md5, md5(&data));
    assert_eq!(store(&server).digests().hashed_count(), 1);
    assert!(root.join(".ferry-digests").is_file(), "the index is in the root");

    server.restart(engine, |s| s.root = root.clone());
    let mut c = server.client();
    assert_eq!(c.get_ok("f.bin", 0).0.md5, md5(&data), "[GET-2]");
    let digests = store(&server).digests();
    assert_eq!((digests.hashed_count(), digests.loaded_count()), (0, 1), "[GET-8] read back from the index");
    assert_eq!(c.list().iter().map(|e| e.name.as_str().to_owned()).collect::<Vec<_>>(), ["f.bin"]);
}
