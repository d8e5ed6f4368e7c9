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
