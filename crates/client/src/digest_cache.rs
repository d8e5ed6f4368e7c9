//! The client's digest cache: the MD5s of local files it uploaded or downloaded, so that an upload
//! of a file unchanged since does not read the whole file before sending. (A frame carries the
//! digest before the data, so without a digest at hand nothing can be sent until the last byte
//! has been read: 2 s and more for a 1 GiB file.)
//!
//! A digest is recorded under the [`FileKey`] of the file it describes — device, inode, size,
//! and modification and status-change times in nanoseconds. The status-change time is what makes
//! the key trustworthy: a user can set a file's mtime back (`touch -d`, `cp -p`, `rsync -t`, an
//! editor), never its ctime, which every write moves. The records live in a redb
//! [`Index`] shared by every `ferry` process of the user ([`Index::open_shared`]), at
//! [`default_path`] unless the caller chooses another place or none.
//!
//! It is a cache, and never the reason an operation fails: if it cannot be opened, read or
//! written, that is logged (at debug level) and the client hashes as if it had none. Nor can a
//! wrong record store a wrong file: the server checks the data against the digest sent, and an
//! upload whose cached digest the server refuses is hashed and sent again
//! ([`crate::Client::upload`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use ferry_digest_store::{FileKey, Index};
use ferry_proto::Digest;

/// Records the cache holds at most; when full it is emptied, not grown. A record takes about
/// 100 bytes on disk, so the file stays within a few MiB.
pub const CACHE_ENTRIES: u64 = 20_000;

/// The cache's file name, in the `ferry` directory of the user's cache directory.
const FILE_NAME: &str = "digests.redb";

/// Where `ferry` keeps its digest cache: `$XDG_CACHE_HOME/ferry/digests.redb`, or
/// `$HOME/.cache/ferry/digests.redb` when `XDG_CACHE_HOME` is unset or not an absolute path (the
/// XDG base directory specification says to ignore a relative one). `None` without either.
pub fn default_path() -> Option<PathBuf> {
    path_from(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
}

/// [`default_path`] for these values of `XDG_CACHE_HOME` and `HOME`.
fn path_from(xdg_cache_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let absolute = |v: OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    let base = xdg_cache_home.and_then(absolute).or_else(|| home.and_then(absolute).map(|h| h.join(".cache")))?;
    Some(base.join("ferry").join(FILE_NAME))
}

/// The cache as one [`crate::Client`] uses it: opened at its first use, so that commands that
/// transfer nothing never touch it, and given up for the client's life if it cannot be opened.
pub(crate) struct DigestCache {
    /// The database file; `None`: no cache.
    path: Option<PathBuf>,
    state: State,
}

enum State {
    /// Not needed yet.
    Unopened,
    Open(Index),
    /// Opening failed (logged once): the client goes on without a cache.
    Failed,
}

impl std::fmt::Debug for DigestCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Unopened => "unopened",
            State::Open(_) => "open",
            State::Failed => "failed",
        };
        f.debug_struct("DigestCache").field("path", &self.path).field("state", &state).finish()
    }
}

impl DigestCache {
    /// A cache in the file `path` (its directory is created when needed); `None` for none.
    /// Off Unix there is never one: a [`FileKey`] there has no inode or status-change time, so
    /// it cannot tell one file from another of the same size and mtime.
    pub(crate) fn new(path: Option<PathBuf>) -> Self {
        let path = if cfg!(unix) { path } else { None };
        Self { path, state: State::Unopened }
    }

    /// The digest recorded for exactly this version of a file, if any.
    pub(crate) fn get(&mut self, key: &FileKey) -> Option<Digest> {
        let index = self.index()?;
        index.get(key).unwrap_or_else(|e| {
            tracing::debug!(error = %e, "digest cache: cannot read it; hashing instead");
            None
        })
    }

    /// Records `md5` as the digest of this version of a file.
    pub(crate) fn insert(&mut self, key: &FileKey, md5: Digest) {
        if let Some(index) = self.index() {
            if let Err(e) = index.insert(key, md5) {
                tracing::debug!(error = %e, "digest cache: cannot record a digest");
            }
        }
    }

    /// Forgets what is recorded for the file of `key` (its digest proved wrong).
    pub(crate) fn forget(&mut self, key: &FileKey) {
        if let Some(index) = self.index() {
            if let Err(e) = index.remove(key.dev, key.ino) {
                tracing::debug!(error = %e, "digest cache: cannot forget a digest");
            }
        }
    }

    /// The open index, opening it on first use.
    fn index(&mut self) -> Option<&Index> {
        if matches!(self.state, State::Unopened) {
            let path = self.path.as_deref()?;
            self.state = match open(path) {
                Ok(index) => State::Open(index),
                Err(e) => {
                    tracing::debug!(path = %path.display(), error = %e, "digest cache: cannot open it; going on without");
                    State::Failed
                }
            };
        }
        match &self.state {
            State::Open(index) => Some(index),
            State::Unopened | State::Failed => None,
        }
    }
}

/// Why the cache could not be opened: only ever logged.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error("cannot create its directory: {0}")]
    Directory(#[from] std::io::Error),
    #[error(transparent)]
    Index(#[from] ferry_digest_store::IndexError),
}

/// Opens (creating it and its directory if needed) the index at `path`.
fn open(path: &Path) -> Result<Index, OpenError> {
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    Ok(Index::open_shared(path, CACHE_ENTRIES)?)
}

/// Creates `dir` and its missing parents; the last one readable by its owner only, since the
/// names of the files someone transfers are nobody else's business (the index holds inode
/// numbers, not names, but the directory is ours to keep private).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ino: u64) -> FileKey {
        FileKey { dev: 1, ino, size: 10, mtime_ns: 5, ctime_ns: 6 }
    }

    #[test]
    fn records_are_kept_across_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/digests.redb");
        let mut cache = DigestCache::new(Some(path.clone()));
        assert_eq!(cache.get(&key(1)), None);
        cache.insert(&key(1), Digest::of(b"one"));
        drop(cache);
        let mut cache = DigestCache::new(Some(path));
        assert_eq!(cache.get(&key(1)), Some(Digest::of(b"one")));
        assert_eq!(cache.get(&FileKey { ctime_ns: 7, ..key(1) }), None, "another version of the file");
        cache.forget(&key(1));
        assert_eq!(cache.get(&key(1)), None);
    }

    #[test]
    fn a_cache_that_cannot_be_opened_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a file");
        std::fs::write(&file, b"x").unwrap();
        // Its directory would have to be inside a regular file: no one, root included, can.
        let mut cache = DigestCache::new(Some(file.join("ferry/digests.redb")));
        cache.insert(&key(1), Digest::of(b"one"));
        assert_eq!(cache.get(&key(1)), None);
        assert!(matches!(cache.state, State::Failed));
        let mut none = DigestCache::new(None);
        none.insert(&key(1), Digest::of(b"one"));
        assert_eq!(none.get(&key(1)), None);
    }

    #[test]
    fn the_default_place_follows_xdg() {
        let os = |s: &str| Some(OsString::from(s));
        let at = |s: &str| Some(PathBuf::from(s));
        assert_eq!(path_from(os("/x/cache"), os("/home/u")), at("/x/cache/ferry/digests.redb"));
        assert_eq!(path_from(None, os("/home/u")), at("/home/u/.cache/ferry/digests.redb"));
        // A relative XDG_CACHE_HOME is to be ignored; so is a relative HOME.
        assert_eq!(path_from(os("cache"), os("/home/u")), at("/home/u/.cache/ferry/digests.redb"));
        assert_eq!(path_from(os(""), os("/home/u")), at("/home/u/.cache/ferry/digests.redb"));
        assert_eq!(path_from(None, os("home")), None);
        assert_eq!(path_from(None, None), None);
    }
}
