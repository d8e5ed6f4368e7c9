//! Hashing one file whose digest is not known yet: the slow part of a first GET, and the work of
//! the background indexer.
//!
//! A [`HashJob`] is handed out as a value (see [`crate::Session::take_hash_job`]) so that each
//! engine runs it where blocking is harmless, within its bound on files hashed at once
//! (`[SEC-3]`). [`HashJob::begin`] decides who hashes: the digest may have become known
//! meanwhile, another connection or the indexer may be hashing the same version (the job then
//! follows that hash), or the job leads and hashes.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ferry_proto::digest::Hasher;
use ferry_proto::Digest;

use super::flight::{Claim, Flight, Lease};
use super::{FileKey, HashLimiter};
use crate::store::Store;

/// Files are hashed through a buffer of this size.
const HASH_BUF: usize = 256 * 1024;
/// Hashes of files this large are logged at info level; smaller ones at debug, or a root of many
/// small files would flood the log at start-up.
const LOG_HASH_MIN: u64 = 64 << 20;

/// The hash of one open file. It owns a duplicate of the GET's open handle, so it hashes exactly
/// the version that will be sent (`[GET-5]`).
#[derive(Debug)]
pub struct HashJob {
    /// Where the digest is remembered.
    store: Arc<Store>,
    /// The same open file the GET will send from (a duplicated descriptor).
    file: File,
    /// The version being hashed; its size is how much is read.
    key: FileKey,
}

/// Who hashes, decided by [`HashJob::begin`].
#[derive(Debug)]
pub enum Begun {
    /// The digest became known meanwhile.
    Known(Digest),
    /// Nobody else is hashing this version: the caller does, with [`HashLead::run`].
    Lead(HashLead),
    /// Someone is: wait for their outcome with [`HashFollow::wait`] or [`HashFollow::done`].
    Follow(HashFollow),
}

/// The duty to hash one version; others may be waiting for it.
#[derive(Debug)]
pub struct HashLead {
    job: HashJob,
    lease: Lease,
}

/// A wait for a hash someone else runs.
#[derive(Debug)]
pub struct HashFollow {
    job: HashJob,
    flight: Arc<Flight>,
}

impl HashJob {
    pub(crate) fn new(store: Arc<Store>, file: &File, key: FileKey) -> io::Result<Self> {
        Ok(Self { store, file: file.try_clone()?, key })
    }

    /// The size of the file to hash, in bytes.
    pub fn size(&self) -> u64 {
        self.key.size
    }

    /// Decides who hashes. Never blocks on the disk or on another hash.
    pub fn begin(self) -> Begun {
        if let Some(digest) = self.store.digests().get(&self.key) {
            return Begun::Known(digest);
        }
        match self.store.flights().claim(self.key) {
            Claim::Lead(lease) => Begun::Lead(HashLead { job: self, lease }),
            Claim::Follow(flight) => Begun::Follow(HashFollow { job: self, flight }),
        }
    }

    /// The whole job for a thread that may block: follows a hash under way, or leads one holding
    /// a permit of `limiter` (`[SEC-3]`).
    ///
    /// # Errors
    /// Reading the file failed.
    pub fn run_blocking(self, limiter: &HashLimiter) -> io::Result<Digest> {
        let mut job = self;
        loop {
            match job.begin() {
                Begun::Known(digest) => return Ok(digest),
                Begun::Lead(lead) => {
                    let _permit = limiter.acquire();
                    return lead.run();
                }
                Begun::Follow(follow) => match follow.wait() {
                    Ok(digest) => return Ok(digest),
                    Err(again) => job = again,
                },
            }
        }
    }
}

impl HashLead {
    /// The size of the file to hash, in bytes.
    pub fn size(&self) -> u64 {
        self.job.key.size
    }

    /// Hashes the file, unless its digest has become known meanwhile (read back from where it
    /// persists), remembers it, and tells whoever waits. Call it holding a hash permit: nothing
    /// here limits concurrency. It blocks for as long as reading the whole file takes.
    ///
    /// # Errors
    /// Reading the file failed.
    pub fn run(self) -> io::Result<Digest> {
        self.run_until(&AtomicBool::new(false))
    }

    /// [`Self::run`], given up (with [`io::ErrorKind::Interrupted`]) as soon as `stop` is set:
    /// how the background indexer stops when the server does.
    ///
    /// # Errors
    /// Reading the file failed, or `stop` was set.
    pub fn run_until(self, stop: &AtomicBool) -> io::Result<Digest> {
        let Self { job, lease } = self;
        if let Some(digest) = job.store.persisted_digest(&job.file, &job.key) {
            lease.complete(Some(digest));
            return Ok(digest);
        }
        let started = Instant::now();
        // On failure the lease drops, and waiters hash the file themselves.
        let digest = hash_file(&job.file, job.key.size, stop)?;
        job.store.digests().note_hashed();
        job.store.learn_digest(job.key, digest, Some(&job.file));
        lease.complete(Some(digest));
        let ms = started.elapsed().as_millis() as u64;
        if job.key.size >= LOG_HASH_MIN {
            tracing::info!(bytes = job.key.size, ms, "hashed a file");
        } else {
            tracing::debug!(bytes = job.key.size, ms, "hashed a file");
        }
        Ok(digest)
    }
}

impl HashFollow {
    /// Blocks until the hash being followed ends. Its digest; or, if it failed, the job back, to
    /// begin again (and most likely lead).
    ///
    /// # Errors
    /// The hash followed failed: the job is returned.
    pub fn wait(self) -> Result<Digest, HashJob> {
        self.job.store.digests().note_joined();
        self.flight.wait().ok_or(self.job)
    }

    /// [`Self::wait`] for a task: waits without blocking its thread.
    ///
    /// # Errors
    /// The hash followed failed: the job is returned.
    pub async fn done(self) -> Result<Digest, HashJob> {
        self.job.store.digests().note_joined();
        self.flight.done().await.ok_or(self.job)
    }
}

/// The MD5 of the first `size` bytes of `file`. It reads at explicit offsets: the handle shares
/// its file position with the one the body is sent from, which must not move. A file that shrank
/// meanwhile gives the digest of what is left; sending it then fails as it must (`[GET-6]`).
fn hash_file(file: &File, size: u64, stop: &AtomicBool) -> io::Result<Digest> {
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; HASH_BUF];
    let mut at = 0;
    while at < size {
        if stop.load(Ordering::Relaxed) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "hashing stopped: the server is stopping"));
        }
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

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use ferry_proto::Name;

    use super::*;
    use crate::store::StoreSettings;

    fn store_with(files: &[(&str, &[u8])]) -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let store = Store::open(dir.path(), StoreSettings::default()).unwrap();
        (dir, Arc::new(store))
    }

    fn job(store: &Arc<Store>, name: &str) -> HashJob {
        let opened = store.open_file(&Name::parse(name).unwrap()).unwrap();
        store.hash_job(&opened).unwrap()
    }

    /// A second hash of a version being hashed follows the first: it learns the leader's digest,
    /// on a thread (blocking engine) or in a task (async engine), and the file is read once.
    #[test]
    fn a_follower_is_given_the_leaders_digest() {
        let (a, b) = (vec![1u8; 1000], vec![2u8; 3000]);
        let (_dir, store) = store_with(&[("a", &a), ("b", &b)]);
        for (name, content, in_a_task) in [("a", &a, false), ("b", &b, true)] {
            let Begun::Lead(lead) = job(&store, name).begin() else { panic!("nobody hashes {name} yet") };
            let Begun::Follow(follow) = job(&store, name).begin() else { panic!("{name} is being hashed") };
            assert_eq!(lead.size(), content.len() as u64);
            assert_eq!(store.hashes_under_way(), 1);
            let joined = store.digests().joined_count();
            let waiter =
                std::thread::spawn(
                    move || {
                        if in_a_task {
                            crate::digests::block_on(follow.done())
                        } else {
                            follow.wait()
                        }
                    },
                );
            assert_eq!(lead.run().unwrap(), Digest::of(content));
            let Ok(followed) = waiter.join().unwrap() else { panic!("the hash followed failed") };
            assert_eq!(followed, Digest::of(content), "{name}");
            assert_eq!(store.digests().joined_count(), joined + 1, "{name}: one GET joined");
            assert_eq!(store.hashes_under_way(), 0);
            assert!(matches!(job(&store, name).begin(), Begun::Known(d) if d == Digest::of(content)));
        }
        assert_eq!(store.digests().hashed_count(), 2, "each file was read once");
    }

    /// A follower of a hash that fails gets its job back, to hash the file itself.
    #[test]
    fn a_follower_of_a_failed_hash_gets_its_job_back() {
        let (_dir, store) = store_with(&[("a", b"abc"), ("b", b"abc")]);
        for (name, in_a_task) in [("a", false), ("b", true)] {
            let Begun::Lead(lead) = job(&store, name).begin() else { panic!() };
            let Begun::Follow(follow) = job(&store, name).begin() else { panic!() };
            drop(lead);
            let back = if in_a_task { crate::digests::block_on(follow.done()) } else { follow.wait() };
            let Err(again) = back else { panic!("a failed hash gave a digest") };
            assert_eq!(again.size(), 3);
            assert_eq!(again.run_blocking(&HashLimiter::new(1)).unwrap(), Digest::of(b"abc"));
        }
    }

    /// `[GET-5]`: the digest is that of the version opened, `key.size` bytes, even when the file
    /// grew meanwhile, and when it spans several reads of the hash buffer.
    #[test]
    fn only_the_opened_size_is_hashed() {
        let first = (0..HASH_BUF * 2 + 123).map(|i| (i % 251) as u8).collect::<Vec<_>>();
        let (dir, store) = store_with(&[("grows", &first)]);
        let job = job(&store, "grows");
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(dir.path().join("grows")).unwrap();
            f.write_all(&[7u8; HASH_BUF]).unwrap();
        }
        assert_eq!(job.size(), first.len() as u64);
        assert_eq!(job.run_blocking(&HashLimiter::new(1)).unwrap(), Digest::of(&first));
    }

    /// A read that fails ends the hash with the error; it is not retried forever. Bounded: a hash
    /// that retries is reported, not waited for.
    #[test]
    fn a_read_error_ends_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("write-only");
        std::fs::write(&path, b"0123456789").unwrap();
        // Opened for writing only: every read fails with EBADF.
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || tx.send(hash_file(&file, 10, &AtomicBool::new(false)).map_err(|e| e.kind())));
        let outcome = rx.recv_timeout(Duration::from_secs(10)).expect("the hash ended");
        assert!(matches!(outcome, Err(kind) if kind != io::ErrorKind::Interrupted), "{outcome:?}");
    }

    #[test]
    fn a_stopped_hash_is_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let file = File::open(&path).unwrap();
        assert_eq!(hash_file(&file, 10, &AtomicBool::new(false)).unwrap(), Digest::of(b"0123456789"));
        assert_eq!(hash_file(&file, 0, &AtomicBool::new(false)).unwrap(), Digest::of(b""));
        let err = hash_file(&file, 10, &AtomicBool::new(true)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Interrupted);
    }
}
