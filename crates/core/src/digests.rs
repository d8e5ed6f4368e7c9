//! The digest cache: a file's MD5 is computed once per version of the file.
//!
//! A version is identified by what the kernel says of the file — device, inode, size,
//! modification time and status-change time — so a file replaced by an upload (a new inode) or
//! edited in place (a new ctime, even when its size is the same and its mtime was set back) is
//! never served with a stale digest. Uploads insert the digest they verified
//! while the data streamed in; files copied into the root by hand are hashed on first need, by a
//! [`HashJob`] that the engine runs within a bound on files hashed at once (`[SEC-3]`).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use ferry_proto::digest::Hasher;
use ferry_proto::Digest;

use crate::store::Store;

/// Files are hashed through a buffer of this size.
const HASH_BUF: usize = 256 * 1024;

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

/// Hashing one file whose digest is not known yet: the slow part of a first GET, handed to the
/// engine as a value (see [`crate::Session::take_hash_job`]) so that each engine runs it where
/// blocking is harmless, holding one of its hash permits (`[SEC-3]`). It owns a duplicate of the
/// GET's open handle, so it hashes exactly the version that will be sent (`[GET-5]`).
#[derive(Debug)]
pub struct HashJob {
    /// Where the digest is remembered.
    store: Arc<Store>,
    /// The same open file the GET will send from (a duplicated descriptor).
    file: File,
    /// The version being hashed; its size is how much is read.
    key: FileKey,
}

impl HashJob {
    pub(crate) fn new(store: Arc<Store>, file: &File, key: FileKey) -> io::Result<Self> {
        Ok(Self { store, file: file.try_clone()?, key })
    }

    /// The size of the file to hash, in bytes.
    pub fn size(&self) -> u64 {
        self.key.size
    }

    /// Hashes the file, unless its digest has become known meanwhile (another connection may
    /// have hashed the same version while this job waited for a permit), and remembers it.
    /// Nothing here limits concurrency: call it holding one of the engine's hash permits. It
    /// blocks for as long as reading the whole file takes.
    ///
    /// # Errors
    /// Reading the file failed.
    pub fn run(&self) -> io::Result<Digest> {
        let cache = self.store.digests();
        if let Some(digest) = cache.get(&self.key) {
            return Ok(digest);
        }
        let started = Instant::now();
        let digest = hash_file(&self.file, self.key.size)?;
        cache.note_hashed();
        self.store.learn_digest(self.key, digest);
        tracing::info!(
            bytes = self.key.size,
            ms = started.elapsed().as_millis() as u64,
            "hashed a file not seen before"
        );
        Ok(digest)
    }
}

/// The MD5 of the first `size` bytes of `file`. It reads at explicit offsets: the handle shares
/// its file position with the one the body is sent from, which must not move. A file that shrank
/// meanwhile gives the digest of what is left; sending it then fails as it must (`[GET-6]`).
fn hash_file(file: &File, size: u64) -> io::Result<Digest> {
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; HASH_BUF];
    let mut at = 0;
    while at < size {
        let want = usize::try_from(size - at).unwrap_or(usize::MAX).min(buf.len());
        let n = read_at(file, &mut buf[..want], at)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(hasher.finish())
}

/// One positional read, retried when a signal interrupts it.
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    loop {
        #[cfg(unix)]
        let r = std::os::unix::fs::FileExt::read_at(file, buf, offset);
        #[cfg(windows)]
        let r = std::os::windows::fs::FileExt::seek_read(file, buf, offset);
        match r {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}
