//! Where digests are kept across restarts: in a user extended attribute on each file
//! (`user.ferry.md5`), or in an index file, or nowhere.
//!
//! [`PersistMode::Auto`] tries the attribute first, since it travels with the file and dies with
//! it, and falls back to the index for a file system without user attributes (some tmpfs and
//! network mounts) and for files the server may not annotate (owned by someone else). Nothing here
//! is ever an error for a client: a digest that cannot be kept is computed again after a restart.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use ferry_digest_store::Index;
use ferry_proto::Digest;

use super::FileKey;

/// Where digests persist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PersistMode {
    /// The file's xattr where the root's file system has user xattrs, else the index; the index
    /// also for files the server may not annotate.
    #[default]
    Auto,
    /// Only the file's xattr.
    Xattr,
    /// Only the index.
    Index,
    /// Nowhere: digests live in memory and are computed again after every start.
    Off,
}

/// The default index file, inside the root under the reserved `.ferry` prefix, which is never
/// listed or served (`[NAME-6]`): it goes where the root goes.
pub const DEFAULT_INDEX_NAME: &str = ".ferry-digests";

/// Records in the index, at most: about 60 bytes each on disk.
pub const INDEX_MAX_ENTRIES: u64 = 1_000_000;

/// Files whose xattr this process wrote that it remembers the exact ctime of, at most (about
/// 40 bytes each).
pub const WRITTEN_MAX: usize = 100_000;

/// The digests' home for one root.
#[derive(Debug)]
pub struct Persist {
    mode: PersistMode,
    /// Whether xattrs are tried; cleared for good when the file system turns out to lack them.
    xattr: AtomicBool,
    /// Whether the index may be used.
    index_allowed: bool,
    index_path: PathBuf,
    /// Opened at start if the file exists, else on its first use: a root whose digests all fit in
    /// xattrs never gets an index file.
    index: OnceLock<Option<Index>>,
    /// The exact ctime each xattr written by this process left on its file, by device and inode.
    /// An xattr can only record a window around its own write's ctime (see
    /// [`ferry_digest_store::xattr`]); this holds the file to the exact value while the process
    /// lives, so that even an edit within that window is caught. Bounded: cleared when full.
    written: Mutex<HashMap<(u64, u64), i128>>,
    /// At most this many entries in `written`.
    written_max: usize,
}

impl Persist {
    /// Where `mode` keeps digests for a root, `probe` being a scratch file in it: xattrs are
    /// used only if one can be set on it.
    pub fn new(mode: PersistMode, index_path: PathBuf, probe: impl FnOnce() -> io::Result<()>) -> Self {
        let xattr = matches!(mode, PersistMode::Auto | PersistMode::Xattr) && xattrs_work(mode, probe);
        let index_allowed = matches!(mode, PersistMode::Auto | PersistMode::Index);
        let persist = Self {
            mode,
            xattr: AtomicBool::new(xattr),
            index_allowed,
            index_path,
            index: OnceLock::new(),
            written: Mutex::default(),
            written_max: WRITTEN_MAX,
        };
        if index_allowed && (persist.index_path.exists() || !xattr) {
            persist.index();
        }
        persist
    }

    /// Keeps nothing.
    pub fn off() -> Self {
        Self::new(PersistMode::Off, PathBuf::new(), || Ok(()))
    }

    /// One line for the log: where digests are kept.
    pub fn describe(&self) -> String {
        let xattr = self.xattr.load(Ordering::Relaxed);
        let index = self.index.get().and_then(Option::as_ref).is_some();
        let path = self.index_path.display();
        match (xattr, index, self.index_allowed) {
            (true, _, true) => {
                format!("in {} xattrs (index {path} for files without one)", ferry_digest_store::xattr::NAME)
            }
            (true, _, false) => format!("in {} xattrs", ferry_digest_store::xattr::NAME),
            (false, true, _) => format!("in the index {path}"),
            (false, false, _) => "nowhere: digests are computed again after every start".to_owned(),
        }
    }

    /// The mode asked for.
    pub fn mode(&self) -> PersistMode {
        self.mode
    }

    /// Whether digests are kept at all.
    pub fn is_on(&self) -> bool {
        self.xattr.load(Ordering::Relaxed) || self.index().is_some()
    }

    fn index(&self) -> Option<&Index> {
        if !self.index_allowed {
            return None;
        }
        self.index
            .get_or_init(|| match open_index(&self.index_path) {
                Ok(index) => Some(index),
                Err(e) => {
                    tracing::warn!(path = %self.index_path.display(), error = %e,
                        "cannot use the digest index: digests of files without an xattr are computed again after a restart");
                    None
                }
            })
            .as_ref()
    }

    /// The digest kept for this version of `file`, if any.
    pub fn lookup(&self, file: &File, key: &FileKey) -> Option<Digest> {
        #[cfg(target_os = "linux")]
        if self.xattr.load(Ordering::Relaxed) {
            match ferry_digest_store::xattr::read(file, key) {
                Ok(Some(digest)) if self.written_matches(key) => return Some(digest),
                Ok(Some(_)) => return None,
                Ok(None) => {}
                Err(e) => self.xattr_failed(&e),
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = file;
        // With xattrs on, the index only holds files that could not get one: look there only
        // if it exists.
        let index = if self.xattr.load(Ordering::Relaxed) { self.index.get()?.as_ref() } else { self.index() };
        match index?.get(key) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "digest index lookup failed");
                None
            }
        }
    }

    /// Keeps `digest` for `key`, the version of `file` that was hashed or verified, unless the
    /// file changed since. Returns the file's key now: writing an xattr moves its ctime.
    pub fn remember(&self, file: &File, key: &FileKey, digest: Digest) -> FileKey {
        #[cfg(target_os = "linux")]
        if self.xattr.load(Ordering::Relaxed) {
            use ferry_digest_store::xattr::{self, Written};
            match xattr::write(file, key, digest) {
                Ok(Written::Stored(now)) => {
                    self.note_written(&now);
                    return now;
                }
                Ok(Written::Changed) => return *key,
                Ok(Written::Unsettled) => {}
                Err(e) => self.xattr_failed(&e),
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = file;
        if let Some(index) = self.index() {
            if let Err(e) = index.insert(key, digest) {
                tracing::warn!(error = %e, "could not record a digest in the index");
            }
        }
        *key
    }

    /// Whether an xattr that vouches for `key` was not written by this process for another ctime.
    fn written_matches(&self, key: &FileKey) -> bool {
        let written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        written.get(&(key.dev, key.ino)).is_none_or(|&ctime| ctime == key.ctime_ns)
    }

    fn note_written(&self, now: &FileKey) {
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        if written.len() >= self.written_max && !written.contains_key(&(now.dev, now.ino)) {
            written.clear();
        }
        written.insert((now.dev, now.ino), now.ctime_ns);
    }

    /// Drops index records of inodes `live` rejects; how a full scan of the root forgets files
    /// that are gone.
    pub fn prune(&self, live: impl FnMut(u64, u64) -> bool) {
        let Some(Some(index)) = self.index.get() else { return };
        match index.retain(live) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(records = n, "dropped the index records of files that are gone"),
            Err(e) => tracing::warn!(error = %e, "could not prune the digest index"),
        }
    }

    /// Makes what was kept durable. Called now and then, and at shutdown.
    pub fn flush(&self) {
        if let Some(Some(index)) = self.index.get() {
            if let Err(e) = index.flush() {
                tracing::warn!(error = %e, "could not flush the digest index");
            }
        }
    }

    /// An xattr could not be read or written. A file system without user xattrs turns them off
    /// for good (the index takes over); a file the server may not annotate uses the index.
    fn xattr_failed(&self, e: &io::Error) {
        if e.raw_os_error() == Some(rustix::io::Errno::NOTSUP.raw_os_error()) {
            if self.xattr.swap(false, Ordering::Relaxed) {
                tracing::warn!("the root's file system has no user xattrs: digests go to the index");
            }
        } else {
            tracing::debug!(error = %e, "no digest xattr for this file");
        }
    }
}

/// How long opening the index waits for another handle to let go of it: a server restarted in
/// place, whose previous instance is still closing it.
pub const INDEX_OPEN_WAIT: Duration = Duration::from_secs(2);

/// Opens the index, waiting up to [`INDEX_OPEN_WAIT`] while another handle holds it. The lock is
/// a file lock, which announces its release to nobody: the wait polls.
fn open_index(path: &Path) -> Result<Index, ferry_digest_store::IndexError> {
    let deadline = Instant::now() + INDEX_OPEN_WAIT;
    loop {
        match Index::open(path, INDEX_MAX_ENTRIES) {
            Err(e) if e.is_held_elsewhere() && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Whether xattrs can be set in the root, tried on a scratch file.
fn xattrs_work(mode: PersistMode, probe: impl FnOnce() -> io::Result<()>) -> bool {
    match probe() {
        Ok(()) => true,
        Err(e) => {
            let fallback = if mode == PersistMode::Auto { "using the index instead" } else { "digests are not kept" };
            tracing::warn!(error = %e, "cannot set user xattrs in the root: {fallback}");
            false
        }
    }
}

/// The index file for a root, when none is given.
pub fn default_index_path(root: &Path) -> PathBuf {
    root.join(DEFAULT_INDEX_NAME)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::of(&[n])
    }

    fn file_in(dir: &Path, name: &str, content: &[u8]) -> (PathBuf, File, FileKey) {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        let file = File::open(&path).unwrap();
        let key = FileKey::of_file(&file).unwrap();
        (path, file, key)
    }

    fn no_xattrs() -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    /// A file whose file system has no user xattrs (procfs answers `ENOTSUP`), for the paths
    /// taken when the probe said yes but a file says no.
    fn file_without_xattrs() -> Option<File> {
        let file = File::open("/proc/self/stat").ok()?;
        let mut buf = [0u8; 8];
        match rustix::fs::fgetxattr(&file, ferry_digest_store::xattr::NAME, &mut buf) {
            Err(rustix::io::Errno::NOTSUP) => Some(file),
            _ => None,
        }
    }

    /// The xattr a probe sets in `dir` works, on this machine (a temporary directory).
    fn xattrs_in(dir: &Path) -> bool {
        let (_, file, _) = file_in(dir, "probe", b"");
        ferry_digest_store::xattr::probe(&file).is_ok()
    }

    #[test]
    fn each_mode_keeps_digests_where_it_says() {
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join("index");
        type Probe = fn() -> io::Result<()>;
        // The mode, its probe's answer; then whether digests are kept, how the log says where,
        // and whether the index file is made at start.
        let cases: [(PersistMode, Probe, bool, &str, bool); 6] = [
            (PersistMode::Off, || Ok(()), false, "nowhere", false),
            (PersistMode::Index, no_xattrs, true, "in the index", true),
            (PersistMode::Xattr, || Ok(()), true, "in user.ferry.md5 xattrs", false),
            (PersistMode::Xattr, no_xattrs, false, "nowhere", false),
            (PersistMode::Auto, || Ok(()), true, "in user.ferry.md5 xattrs (index", false),
            (PersistMode::Auto, no_xattrs, true, "in the index", true),
        ];
        for (mode, probe, on, said, index_made) in cases {
            let _ = std::fs::remove_file(&index);
            let persist = Persist::new(mode, index.clone(), probe);
            let what = format!("{mode:?}, probe {:?}: {}", probe().is_ok(), persist.describe());
            assert_eq!(persist.mode(), mode, "{what}");
            assert_eq!(persist.is_on(), on, "{what}");
            assert!(persist.describe().starts_with(said), "{what}");
            assert_eq!(index.exists(), index_made, "{what}: whether the index was opened at start");
        }
        assert_eq!(Persist::off().mode(), PersistMode::Off);
        assert!(!Persist::off().is_on());
        assert_eq!(default_index_path(Path::new("/srv/root")), Path::new("/srv/root/.ferry-digests"));
    }

    /// Auto with xattrs that work keeps no index file until a digest needs one: then it opens it.
    #[test]
    fn the_index_is_made_when_a_file_can_have_no_xattr() {
        let Some(proc_file) = file_without_xattrs() else {
            return eprintln!("skipped: no file here refuses user xattrs with ENOTSUP");
        };
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join("index");
        let key = FileKey::of_file(&proc_file).unwrap();
        // The probe said yes (as on a root with xattrs), but this file's file system says no.
        let persist = Persist::new(PersistMode::Auto, index.clone(), || Ok(()));
        assert!(!index.exists());
        assert_eq!(persist.lookup(&proc_file, &key), None);
        assert!(persist.describe().starts_with("in the index"), "ENOTSUP turned xattrs off: {}", persist.describe());
        assert_eq!(persist.remember(&proc_file, &key, digest(1)), key);
        assert_eq!(persist.lookup(&proc_file, &key), Some(digest(1)), "kept in the index");

        // With xattrs only, the same failure leaves digests nowhere.
        let xattr_only = Persist::new(PersistMode::Xattr, index, || Ok(()));
        assert!(xattr_only.is_on());
        assert_eq!(xattr_only.remember(&proc_file, &key, digest(2)), key);
        assert!(!xattr_only.is_on(), "{}", xattr_only.describe());
        assert_eq!(xattr_only.lookup(&proc_file, &key), None);
    }

    /// The xattr this process wrote vouches for the file only at the exact ctime its write left:
    /// an attribute rewritten since, by another process for an edited file, is not trusted by this
    /// one (it hashes again), while the process lives.
    #[test]
    fn an_xattr_rewritten_by_another_process_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        if !xattrs_in(dir.path()) {
            return eprintln!("skipped: no user xattrs in {}", dir.path().display());
        }
        let (path, file, key) = file_in(dir.path(), "f", b"hello");
        let persist = Persist::new(PersistMode::Xattr, dir.path().join("index"), || Ok(()));
        let now = persist.remember(&file, &key, digest(1));
        assert_ne!(now, key, "the xattr's write moved ctime");
        assert_eq!(persist.lookup(&file, &now), Some(digest(1)));

        // Someone else edits the file, keeping size and mtime, and records its digest.
        let mtime = file.metadata().unwrap().modified().unwrap();
        let mut w = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        w.write_all(b"HELLO").unwrap();
        w.set_modified(mtime).unwrap();
        let edited = FileKey::of_file(&file).unwrap();
        use ferry_digest_store::xattr::{self, Written};
        let Written::Stored(theirs) = xattr::write(&file, &edited, digest(2)).unwrap() else { panic!("not stored") };
        assert_eq!(xattr::read(&file, &theirs).unwrap(), Some(digest(2)), "the xattr vouches for their version");
        assert_eq!(persist.lookup(&file, &theirs), None, "this process holds the file to its own write's ctime");

        // Another process (a restart) trusts it.
        let fresh = Persist::new(PersistMode::Xattr, dir.path().join("index"), || Ok(()));
        assert_eq!(fresh.lookup(&file, &theirs), Some(digest(2)));
    }

    #[test]
    fn the_written_ctimes_are_bounded() {
        let mut persist = Persist::off();
        persist.written_max = 2;
        let key = |ino, ctime_ns| FileKey { dev: 1, ino, size: 1, mtime_ns: 0, ctime_ns };
        let len = |p: &Persist| p.written.lock().unwrap().len();
        persist.note_written(&key(1, 10));
        persist.note_written(&key(2, 20));
        assert_eq!(len(&persist), 2, "full, nothing dropped yet");
        persist.note_written(&key(1, 11));
        assert_eq!(len(&persist), 2, "full, but inode 1 was there: updated in place");
        assert!(persist.written_matches(&key(1, 11)) && !persist.written_matches(&key(1, 10)));
        assert!(!persist.written_matches(&key(2, 21)));
        persist.note_written(&key(3, 30));
        assert_eq!(len(&persist), 1, "full, and inode 3 is new: emptied, then added");
        assert!(persist.written_matches(&key(2, 21)), "forgotten: any ctime goes");
    }

    #[test]
    fn prune_forgets_the_records_of_files_that_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let persist = Persist::new(PersistMode::Index, dir.path().join("index"), no_xattrs);
        let (_, a, ka) = file_in(dir.path(), "a", b"a");
        let (_, b, kb) = file_in(dir.path(), "b", b"b");
        persist.remember(&a, &ka, digest(1));
        persist.remember(&b, &kb, digest(2));
        persist.prune(|dev, ino| (dev, ino) == (ka.dev, ka.ino));
        assert_eq!(persist.lookup(&a, &ka), Some(digest(1)));
        assert_eq!(persist.lookup(&b, &kb), None);
    }

    /// What the index records is durable once flushed: a copy of the file taken then (as a crash
    /// would leave it) holds the record.
    #[test]
    fn flushed_digests_are_in_the_index_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        let persist = Persist::new(PersistMode::Index, path.clone(), no_xattrs);
        let (_, a, ka) = file_in(dir.path(), "a", b"a");
        persist.remember(&a, &ka, digest(1));
        let copy = |name: &str| {
            let to = dir.path().join(name);
            std::fs::copy(&path, &to).unwrap();
            Index::open(&to, 10).unwrap().get(&ka).unwrap()
        };
        persist.flush();
        assert_eq!(copy("after-flush"), Some(digest(1)));
    }
}
