//! Digests: a file's MD5 is computed once per version of the file, and remembered.
//!
//! A version is identified by what the kernel says of the file ([`FileKey`]: device, inode,
//! size, modification time and status-change time), so a file replaced by an upload (a new
//! inode) or edited in place (a new ctime, even when its size is the same and its mtime was set
//! back) is never served with a stale digest.
//!
//! - [`DigestCache`]: the digests known in memory, bounded.
//! - `persist`: the digests kept across restarts, in a user xattr or an index file.
//! - `flight`: hashes under way, which a GET of the same version joins instead of hashing again.
//! - [`HashJob`]: hashing one file, handed to the engine (or the background indexer) as a value.
//!
//! Uploads learn the digest they verified while the data streamed in; files copied into the root
//! by hand are hashed in the background ([`crate::indexer`]), or on the first GET that needs them,
//! within a bound on files hashed at once (`[SEC-3]`).

mod flight;
mod job;
pub mod persist;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use ferry_proto::Digest;

pub use ferry_digest_store::FileKey;
pub(crate) use flight::Flights;
pub use job::{Begun, HashFollow, HashJob, HashLead};

/// Digests by file version, bounded in size.
#[derive(Debug)]
pub struct DigestCache {
    map: Mutex<HashMap<FileKey, Digest>>,
    /// At most this many entries (each about 80 bytes); when full, the cache is cleared rather
    /// than grown, which costs re-hashing but never unbounded memory.
    capacity: usize,
    /// How many files were hashed from disk: the figure that shows a cached GET did not hash.
    hashed: AtomicU64,
    /// How many hashes a GET waited for instead of hashing the file itself.
    joined: AtomicU64,
    /// How many digests were read back from where they persist (xattr or index).
    loaded: AtomicU64,
}

impl DigestCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            hashed: AtomicU64::new(0),
            joined: AtomicU64::new(0),
            loaded: AtomicU64::new(0),
        }
    }

    pub fn get(&self, key: &FileKey) -> Option<Digest> {
        self.lock().get(key).copied()
    }

    pub fn insert(&self, key: FileKey, digest: Digest) {
        let mut map = self.lock();
        if map.len() >= self.capacity && !map.contains_key(&key) {
            map.clear();
        }
        map.insert(key, digest);
    }

    /// Records that a file was hashed from disk.
    pub fn note_hashed(&self) {
        self.hashed.fetch_add(1, Ordering::Relaxed);
    }

    /// How many files were hashed from disk since start.
    pub fn hashed_count(&self) -> u64 {
        self.hashed.load(Ordering::Relaxed)
    }

    pub(crate) fn note_joined(&self) {
        self.joined.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times a GET waited for a hash already under way, since start.
    pub fn joined_count(&self) -> u64 {
        self.joined.load(Ordering::Relaxed)
    }

    pub(crate) fn note_loaded(&self) {
        self.loaded.fetch_add(1, Ordering::Relaxed);
    }

    /// How many digests were read back from an xattr or the index since start.
    pub fn loaded_count(&self) -> u64 {
        self.loaded.load(Ordering::Relaxed)
    }

    /// How many digests are known in memory.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no digest is known in memory.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FileKey, Digest>> {
        // A panic while holding the lock cannot leave the map inconsistent (single inserts).
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A counting semaphore that bounds how many files are hashed at once (`[SEC-3]`), so that many
/// first GETs of large hand-copied files cannot saturate the disk and every core.
#[derive(Debug)]
pub struct HashLimiter {
    free: Mutex<usize>,
    cv: Condvar,
}

impl HashLimiter {
    pub fn new(permits: usize) -> Self {
        Self { free: Mutex::new(permits.max(1)), cv: Condvar::new() }
    }

    /// Waits for a permit; it is given back when the guard drops.
    pub fn acquire(&self) -> HashPermit<'_> {
        let mut free = self.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while *free == 0 {
            free = self.cv.wait(free).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *free -= 1;
        HashPermit { limiter: self }
    }
}

/// A permit to hash one file.
#[derive(Debug)]
pub struct HashPermit<'a> {
    limiter: &'a HashLimiter,
}

impl Drop for HashPermit<'_> {
    fn drop(&mut self) {
        *self.limiter.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
        self.limiter.cv.notify_one();
    }
}

/// Runs a future to its end on the calling thread, parking it while the future is pending: how
/// the tests drive the async waits without an async runtime.
#[cfg(test)]
pub(crate) fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    use super::*;

    fn key(ino: u64) -> FileKey {
        FileKey { dev: 1, ino, size: 10, mtime_ns: 0, ctime_ns: 0 }
    }

    fn digest(n: u8) -> Digest {
        Digest::of(&[n])
    }

    /// Runs `f` on a thread of its own and waits for it at most 10 s: a limiter that never gives
    /// a permit fails the test instead of hanging it.
    fn bounded(what: &str, f: impl FnOnce() + Send + 'static) {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            f();
            let _ = tx.send(());
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(()) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: still waiting for a permit after 10 s"),
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: failed"),
        }
    }

    #[test]
    fn a_digest_is_found_for_its_version_only() {
        let cache = DigestCache::new(10);
        assert!(cache.is_empty());
        cache.insert(key(1), digest(1));
        assert_eq!(cache.get(&key(1)), Some(digest(1)));
        assert_eq!(cache.get(&key(2)), None);
        assert_eq!(cache.get(&FileKey { ctime_ns: 1, ..key(1) }), None, "a new ctime is a new version");
        assert_eq!((cache.len(), cache.is_empty()), (1, false));
        cache.insert(key(2), digest(2));
        cache.insert(key(1), digest(3));
        assert_eq!(cache.len(), 2, "a known version is replaced, not added");
        assert_eq!(cache.get(&key(1)), Some(digest(3)));
    }

    /// A full cache is emptied to make room for a new version, but a version it already holds is
    /// updated in place: learning a digest again must not wipe everything else.
    #[test]
    fn a_full_cache_is_emptied_only_for_a_new_version() {
        let cache = DigestCache::new(2);
        cache.insert(key(1), digest(1));
        cache.insert(key(2), digest(2));
        assert_eq!(cache.len(), 2, "full, nothing dropped yet");
        cache.insert(key(2), digest(2));
        assert_eq!(cache.get(&key(1)), Some(digest(1)), "full, but key 2 was there: nothing dropped");
        assert_eq!(cache.len(), 2);
        cache.insert(key(3), digest(3));
        assert_eq!(cache.len(), 1, "full, and key 3 is new: emptied, then added");
        assert_eq!((cache.get(&key(1)), cache.get(&key(3))), (None, Some(digest(3))));
    }

    #[test]
    fn the_counters_count_what_they_say() {
        let cache = DigestCache::new(1);
        assert_eq!((cache.hashed_count(), cache.joined_count(), cache.loaded_count()), (0, 0, 0));
        cache.note_hashed();
        cache.note_joined();
        cache.note_joined();
        cache.note_loaded();
        cache.note_loaded();
        cache.note_loaded();
        assert_eq!((cache.hashed_count(), cache.joined_count(), cache.loaded_count()), (1, 2, 3));
    }

    /// `[SEC-3]`: with every permit taken, the next hash waits until one is given back, and only
    /// then. The waiter's progress is reported through a channel; the check that it is held back
    /// can only fail if it is let through.
    #[test]
    fn the_hash_limiter_holds_a_hash_back_until_a_permit_is_given_back() {
        bounded("two permits, three hashes, three rounds", hold_back_a_third_hash);
    }

    fn hold_back_a_third_hash() {
        let limiter = Arc::new(HashLimiter::new(2));
        for _ in 0..3 {
            let first = limiter.acquire();
            let second = limiter.acquire();
            let (tx, rx) = mpsc::channel();
            let waiter = std::thread::spawn({
                let limiter = limiter.clone();
                move || {
                    let _third = limiter.acquire();
                    tx.send(()).unwrap();
                }
            });
            assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "a third hash ran with two permits");
            drop(first);
            rx.recv_timeout(Duration::from_secs(10)).expect("a permit given back lets the waiter run");
            waiter.join().unwrap();
            drop(second);
            // Every permit is back: the next round sees two again.
        }
    }

    #[test]
    fn a_limiter_of_zero_permits_still_lets_one_hash_run() {
        bounded("one permit, taken twice in turn", || {
            let limiter = HashLimiter::new(0);
            drop(limiter.acquire());
            drop(limiter.acquire());
        });
    }
}
