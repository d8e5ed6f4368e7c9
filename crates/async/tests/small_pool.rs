//! The async engine on a runtime whose blocking pool has only four threads. The engine's design
//! says no pool thread ever waits — for a client, or for a hash permit (`[SEC-3]`) — so a small
//! pool must serve as well as tokio's default of 512; with the default, a bug that parks pool
//! threads only shows under hundreds of clients.

use std::time::{Duration, Instant};

use ferry_proto::{Digest, Name, Request, ServerItem};
use ferry_testkit::{Handle, ANY_LOOPBACK_PORT};

/// Pool threads: more than the one hash the case below allows at once, far fewer than its
/// waiting GETs.
const POOL: usize = 4;

fn start_small_pool(settings: ferry_core::Settings) -> std::io::Result<Handle> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ferry-async")
        .max_blocking_threads(POOL)
        .build()?;
    let running = ferry_async::spawn_on(rt, settings, ANY_LOOPBACK_PORT)?;
    Ok(Handle::new(running.addr, running.server.clone(), move || running.wait()))
}

#[test]
fn gets_waiting_for_a_hash_do_not_hold_up_other_clients() {
    ferry_testkit::suite::gets_waiting_for_a_hash_do_not_hold_up_other_clients(start_small_pool);
}

/// A handshake, a STATUS, and a GET or STAT of a file whose digest is known are answered on the
/// reactor, from the kernel's and the store's caches: they are served while the only pool thread
/// is taken. (When every request made a pool trip, they waited out the client's timeout.) A
/// request that needs the disk, a DELETE, waits for the pool meanwhile instead of running on
/// the reactor. With one reactor thread, the STATUS that shows the DELETE read also shows
/// whether it was carried out where it was read.
#[test]
fn cached_requests_are_served_while_the_only_pool_thread_is_taken() {
    let content = b"small and cached";
    let dir = ferry_testkit::server::new_dir();
    std::fs::write(dir.path().join("small.txt"), content).unwrap();
    std::fs::write(dir.path().join("gone.txt"), b"deleted on the pool").unwrap();
    let settings = ferry_core::Settings { root: dir.path().to_owned(), ..ferry_core::Settings::default() };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(1)
        .max_blocking_threads(1)
        .build()
        .unwrap();
    let pool = rt.handle().clone();
    let running = ferry_async::spawn_on(rt, settings, ANY_LOOPBACK_PORT).unwrap();

    // The first GET hashes the file, on the pool; its digest is in memory from then on.
    let mut first = ferry_testkit::Client::hello(running.addr, None);
    assert_eq!(first.get_ok("small.txt", 0).1, content);

    let (release, held) = std::sync::mpsc::channel::<()>();
    let (taken, is_taken) = std::sync::mpsc::channel();
    pool.spawn_blocking(move || {
        taken.send(()).unwrap();
        let _ = held.recv();
    });
    is_taken.recv_timeout(Duration::from_secs(10)).expect("the pool thread is taken");

    let mut fresh = ferry_testkit::Client::hello(running.addr, None);
    let (frame, data) = fresh.get_ok("small.txt", 0);
    assert_eq!((frame.md5, data.as_slice()), (Digest::of(content), &content[..]));
    assert_eq!(fresh.stat("small.txt").stat().md5, Some(frame.md5));
    assert_eq!(first.get_ok("small.txt", 3).1, &content[3..]);

    let first_peer = first.local_addr().to_string();
    let bytes_in = |c: &mut ferry_testkit::Client| {
        let records = c.request(&Request::Status).records();
        records.iter().find(|r| r.peer == first_peer).map(|r| r.bytes_in).expect("the first client is listed")
    };
    let before = bytes_in(&mut fresh);
    first.send(&Request::Delete(Name::parse("gone.txt").unwrap()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while bytes_in(&mut fresh) == before {
        assert!(Instant::now() < deadline, "the DELETE was never read");
        std::thread::yield_now();
    }
    assert!(dir.path().join("gone.txt").exists(), "the DELETE ran on the reactor");

    drop(release);
    first.read_reply().assert_is(&ServerItem::DeleteOk);
    assert!(!dir.path().join("gone.txt").exists());
    running.server.request_shutdown();
    drop((first, fresh));
    running.wait().unwrap();
}
