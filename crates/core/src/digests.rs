//! The digest cache: a file's MD5 is computed once per version of the file.
//!
//! A version is identified by what the kernel says of the file — device, inode, size,
//! modification time and status-change time — so a file replaced by an upload (a new inode) or
//! edited in place (a new ctime, even when its size is the same and its mtime was set back) is
//! never served with a stale digest. Uploads insert the digest they verified
//! while the data streamed in; files copied into the root by hand are hashed on first need.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use ferry_proto::Digest;

/// What identifies one version of a file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    /// Modification time in nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Status-change time in nanoseconds since the epoch: moved by every write, and, unlike
    /// `mtime_ns`, impossible for a user to set back (`touch -d`, `cp -p`, an editor restoring
    /// it). It also moves on a rename, a new hard link or a chmod, which costs only a re-hash.
    pub ctime_ns: i128,
}

/// Digests by file version, bounded in size.
#[derive(Debug)]
pub struct DigestCache {
    map: Mutex<HashMap<FileKey, Digest>>,
    /// At most this many entries (each about 80 bytes); when full, the cache is cleared rather
    /// than grown, which costs re-hashing but never unbounded memory.
    capacity: usize,
    /// How many files were hashed from disk: the figure that shows a cached GET did not hash.
    hashed: AtomicU64,
}

impl DigestCache {
    pub fn new(capacity: usize) -> Self {
        Self { map: Mutex::new(HashMap::new()), capacity: capacity.max(1), hashed: AtomicU64::new(0) }
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
