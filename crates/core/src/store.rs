//! The store: a root directory holding a flat namespace of files.
//!
//! Confinement is the kernel's job, not string comparison's (`[SEC-2]`): every operation goes
//! through a cap-std [`Dir`] handle (fd-relative, `openat2(RESOLVE_BENEATH)` where the kernel has
//! it), names are single validated path components, and symbolic links are never followed
//! (`[NAME-10]`). Uploads are written to temporary files under the reserved `.ferry` prefix that
//! LIST never shows, fsynced, and published in one kernel step that also decides what the PUT
//! reports (`crate::publish`): a rename that refuses to replace, else swaps with the file there,
//! for overwrite; a hard link, which the kernel refuses if the name exists, for create-only. So two
//! racing uploads can neither both create nor both win (`[STORE-1]`, `[STORE-5]`, `[STORE-6]`).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use cap_fs_ext::{FollowSymlinks, MetadataExt, OpenOptionsFollowExt, OpenOptionsMaybeDirExt};
use cap_std::fs::{Dir, Metadata, OpenOptions};
use ferry_proto::{Digest, Entry, ErrorCode, Name, PutHead, PutMode};

use crate::digests::persist::{self, Persist, PersistMode};
use crate::digests::{DigestCache, FileKey, Flights, HashJob, HashLimiter};
use crate::listing::{DirStamp, ListingCache};
use crate::publish::{self, Holder};

/// Temporary upload files begin with this (inside the reserved `.ferry` prefix, `[NAME-6]`).
pub const TEMP_PREFIX: &str = ".ferry-tmp-";

/// Why a store operation failed, as a client will hear it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such file")]
    NotFound,
    #[error("the file exists")]
    Exists,
    /// `[STORE-8]`: the name is held by something that is not a regular file. It is not in the
    /// namespace, yet it is not ours to replace or remove: a PUT of it is refused.
    #[error("the name is held by a directory or link on the server, which Ferry does not serve or replace")]
    NotAFile,
    #[error("no space left on the server for this file")]
    Full,
    #[error("storage error: {0}")]
    Io(#[source] io::Error),
}

impl StoreError {
    /// The protocol's code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound => ErrorCode::NOT_FOUND,
            Self::Exists => ErrorCode::EXISTS,
            Self::NotAFile => ErrorCode::FORBIDDEN,
            Self::Full => ErrorCode::STORAGE_FULL,
            Self::Io(_) => ErrorCode::INTERNAL,
        }
    }
}

impl From<io::Error> for StoreError {
    fn from(e: io::Error) -> Self {
        // ENOSPC and EDQUOT: the disk or the quota is full.
        let full = matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
            || matches!(e.raw_os_error(), Some(28 | 122));
        match e.kind() {
            _ if full => Self::Full,
            io::ErrorKind::NotFound => Self::NotFound,
            io::ErrorKind::AlreadyExists => Self::Exists,
            _ => Self::Io(e),
        }
    }
}

/// Store settings.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Names longer than this are not listed (they could not be asked for).
    pub max_name_len: u32,
    /// Files hashed at once, at most (`[SEC-3]`).
    pub max_concurrent_hashes: usize,
    /// Digests remembered in memory, at most.
    pub digest_cache_entries: usize,
    /// Where digests are kept across restarts.
    pub persist: PersistMode,
    /// The index file for [`PersistMode::Auto`] and [`PersistMode::Index`]; `None`:
    /// [`persist::DEFAULT_INDEX_NAME`] in the root.
    pub index_path: Option<PathBuf>,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            max_name_len: 255,
            max_concurrent_hashes: 2,
            digest_cache_entries: 100_000,
            persist: PersistMode::Auto,
            index_path: None,
        }
    }
}

/// A file opened for reading: the handle that is hashed and sent, so both see one version.
#[derive(Debug)]
pub struct OpenedFile {
    pub file: std::fs::File,
    pub size: u64,
    pub key: FileKey,
}

/// The root directory and what is known about its files.
#[derive(Debug)]
pub struct Store {
    root: Dir,
    settings: StoreSettings,
    digests: DigestCache,
    /// Where digests outlive the process.
    persist: Persist,
    /// Hashes under way, which a GET of the same version joins.
    flights: Arc<Flights>,
    hashing: HashLimiter,
    tmp_seq: AtomicU64,
    /// The listing LISTs share while nothing changed (`[RES-3]`).
    listing: ListingCache,
    /// Whether the kernel has `openat2(RESOLVE_CACHED)`: cleared at its first refusal.
    cached_opens: std::sync::atomic::AtomicBool,
}

fn key_of(meta: &Metadata) -> FileKey {
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.into_std().duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128);
    FileKey { dev: meta.dev(), ino: meta.ino(), size: meta.len(), mtime_ns, ctime_ns: ctime_ns(meta) }
}

/// [`key_of`] from `fstat(2)`'s answer: the same fields, so both paths find the same digests.
#[cfg(target_os = "linux")]
#[allow(clippy::unnecessary_cast)] // the field types differ between architectures
fn key_of_stat(st: &rustix::fs::Stat) -> FileKey {
    let ns = |s: i64, n: u64| i128::from(s) * 1_000_000_000 + i128::from(n);
    let (mtime, ctime) =
        (ns(st.st_mtime as i64, st.st_mtime_nsec as u64), ns(st.st_ctime as i64, st.st_ctime_nsec as u64));
    FileKey {
        dev: st.st_dev as u64,
        ino: st.st_ino as u64,
        size: st.st_size as u64,
        // As `key_of`: a time before the epoch counts as the epoch.
        mtime_ns: mtime.max(0),
        ctime_ns: ctime,
    }
}

/// The status-change time in nanoseconds since the epoch. Unlike the modification time, no user
/// can set it: every write moves it to "now", so a file edited in place whose mtime was put back
/// still gets a new key.
#[cfg(unix)]
fn ctime_ns(meta: &Metadata) -> i128 {
    use cap_std::fs::MetadataExt as _;
    i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec())
}

#[cfg(not(unix))]
fn ctime_ns(_meta: &Metadata) -> i128 {
    0
}

fn mtime_ms(key: &FileKey) -> i64 {
    i64::try_from(key.mtime_ns / 1_000_000).unwrap_or(i64::MAX)
}

/// Opening a file to read it: never through a link (`[NAME-10]`), and never blocking. A FIFO put
/// in the root by hand would otherwise hold the opening thread until a writer appears; with
/// `O_NONBLOCK` it opens at once and is then refused as not a regular file. On a regular file
/// the flag changes nothing.
fn read_only_nofollow() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true).follow(FollowSymlinks::No);
    #[cfg(unix)]
    {
        use cap_std::fs::OpenOptionsExt;
        o.custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32);
    }
    o
}

impl Store {
    /// Opens (creating it if missing) the root directory, and removes temporary files that an
    /// earlier run left behind (`[STORE-7]`).
    ///
    /// # Errors
    /// The directory cannot be created, opened or listed. A leftover that cannot be removed is
    /// only logged: it is never served, and must not keep the server from starting.
    pub fn open(path: &Path, settings: StoreSettings) -> io::Result<Self> {
        std::fs::create_dir_all(path)?;
        let root = Dir::open_ambient_dir(path, cap_std::ambient_authority())?;
        let mut store = Self {
            root,
            digests: DigestCache::new(settings.digest_cache_entries),
            persist: Persist::off(),
            flights: Arc::default(),
            hashing: HashLimiter::new(settings.max_concurrent_hashes),
            tmp_seq: AtomicU64::new(0),
            listing: ListingCache::default(),
            cached_opens: std::sync::atomic::AtomicBool::new(true),
            settings,
        };
        store.remove_stale_temp_files()?;
        let index_path = store.settings.index_path.clone().unwrap_or_else(|| persist::default_index_path(path));
        store.persist = Persist::new(store.settings.persist, index_path, || store.probe_xattrs());
        Ok(store)
    }

    /// Whether user xattrs can be set in the root: tried on a scratch temporary file.
    fn probe_xattrs(&self) -> io::Result<()> {
        let name = format!("{TEMP_PREFIX}probe-{}", std::process::id());
        let mut o = OpenOptions::new();
        o.write(true).create(true).truncate(true).follow(FollowSymlinks::No);
        let file = self.root.open_with(&name, &o)?.into_std();
        #[cfg(target_os = "linux")]
        let outcome = ferry_digest_store::xattr::probe(&file);
        #[cfg(not(target_os = "linux"))]
        let outcome = Err(io::Error::from(io::ErrorKind::Unsupported));
        drop(file);
        self.root.remove_file(&name)?;
        outcome
    }

    /// Removes the regular files under [`TEMP_PREFIX`] (`[STORE-7]`, a SHOULD). Anything else
    /// there — a directory, a link, a file this process may not remove — is not ours to judge:
    /// it is left alone with a warning that names it, and start-up goes on.
    fn remove_stale_temp_files(&self) -> io::Result<()> {
        let mut removed = 0;
        for entry in self.root.entries()? {
            let Ok(entry) = entry.inspect_err(|e| tracing::warn!(error = %e, "could not read a root entry")) else {
                continue;
            };
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !name.starts_with(TEMP_PREFIX) {
                continue;
            }
            // file_type does not follow links: a link named like a temporary file is kept too.
            match entry.file_type() {
                Ok(t) if t.is_file() => match entry.remove_file() {
                    Ok(()) => removed += 1,
                    Err(e) => tracing::warn!(entry = ?name, error = %e, "could not remove a stale temporary file"),
                },
                Ok(_) => {
                    tracing::warn!(entry = ?name, "left alone: named like a temporary file, but not a regular file")
                }
                Err(e) => tracing::warn!(entry = ?name, error = %e, "could not inspect a stale temporary file"),
            }
        }
        if removed > 0 {
            tracing::info!(removed, "removed stale temporary upload files");
        }
        Ok(())
    }

    /// The longest name the root's file system accepts, where it says (`f_namemax`).
    pub fn fs_name_max(&self) -> Option<u32> {
        #[cfg(unix)]
        {
            rustix::fs::fstatvfs(&self.root).ok().and_then(|v| u32::try_from(v.f_namemax).ok()).filter(|&n| n > 0)
        }
        #[cfg(not(unix))]
        {
            None
        }
    }

    /// Lowers the name length limit (names longer are not listed).
    pub fn set_max_name_len(&mut self, max: u32) {
        self.settings.max_name_len = max;
    }

    /// The digest cache, for figures.
    pub fn digests(&self) -> &DigestCache {
        &self.digests
    }

    /// Where digests persist.
    pub fn persist(&self) -> &Persist {
        &self.persist
    }

    /// Hashes under way.
    pub(crate) fn flights(&self) -> &Arc<Flights> {
        &self.flights
    }

    /// How many hashes are under way now.
    pub fn hashes_under_way(&self) -> usize {
        self.flights.len()
    }

    /// Makes the digests kept so far durable (the index; xattrs are written through).
    pub fn flush_digests(&self) {
        self.persist.flush();
    }

    /// Every regular file with a valid name, unsorted, with its key: what a listing shows and the
    /// background indexer works through. Only metadata is read.
    ///
    /// # Errors
    /// The directory cannot be read.
    pub fn scan(&self) -> io::Result<Vec<(Name, FileKey)>> {
        let mut out = Vec::new();
        for entry in self.root.entries()? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            let raw = entry.file_name();
            let Some(name) = raw.to_str().and_then(|s| Name::new(s.as_bytes(), self.settings.max_name_len).ok()) else {
                continue;
            };
            let Ok(meta) = entry.metadata() else { continue };
            out.push((name, key_of(&meta)));
        }
        Ok(out)
    }

    /// Every regular file with a valid name, sorted by name (`[LIST-1]`, `[LIST-2]`), with the
    /// digests already known (`[LIST-3]`: none is computed for a listing). Shared with other
    /// LISTs while nothing changed ([`crate::listing`]).
    ///
    /// # Errors
    /// The directory cannot be read.
    pub fn list(&self) -> io::Result<Arc<[Entry]>> {
        let meta = self.root.dir_metadata()?;
        let stamp = DirStamp { mtime_ns: key_of(&meta).mtime_ns, ctime_ns: ctime_ns(&meta) };
        self.listing.get_or_build(stamp, std::time::Instant::now(), || self.read_listing())
    }

    /// Reads the directory for [`Self::list`].
    fn read_listing(&self) -> io::Result<Vec<Entry>> {
        let mut out: Vec<Entry> =
            self.scan()?.into_iter().map(|(name, key)| Self::entry(name, &key, self.digests.get(&key))).collect();
        out.sort_by(|a, b| a.name.as_str().as_bytes().cmp(b.name.as_str().as_bytes()));
        Ok(out)
    }

    /// One file's entry; its digest if known, in memory or where digests persist (`[LIST-5]`:
    /// reading a kept digest is cheap; nothing is hashed here).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] unless `name` is a regular file.
    pub fn stat(&self, name: &Name) -> Result<Entry, StoreError> {
        let meta = self.root.symlink_metadata(name.as_str()).map_err(lookup_error)?;
        if !meta.is_file() {
            return Err(StoreError::NotFound);
        }
        let key = key_of(&meta);
        let md5 = self.digests.get(&key).or_else(|| {
            // Only through the open file can its xattr be read. It may have been replaced since
            // the lookup: its digest counts only for the version whose size and time are shown.
            let opened = self.open_file(name).ok().filter(|o| o.key == key)?;
            self.persisted_digest(&opened.file, &opened.key)
        });
        Ok(Self::entry(name.clone(), &key, md5))
    }

    /// What LIST and STAT show of the version `key` of `name`.
    pub fn entry(name: Name, key: &FileKey, md5: Option<Digest>) -> Entry {
        Entry { name, size: key.size, mtime_ms: mtime_ms(key), md5 }
    }

    /// Opens a file for a GET, without following links.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] unless `name` is a regular file.
    pub fn open_file(&self, name: &Name) -> Result<OpenedFile, StoreError> {
        let file = self.root.open_with(name.as_str(), &read_only_nofollow()).map_err(|e| {
            // O_NOFOLLOW on a link fails with ELOOP: for the client, there is no such file.
            if e.raw_os_error() == Some(40) {
                StoreError::NotFound
            } else {
                lookup_error(e)
            }
        })?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(StoreError::NotFound);
        }
        let key = key_of(&meta);
        Ok(OpenedFile { file: file.into_std(), size: key.size, key })
    }

    /// A GET's or STAT's file opened from what the kernel has cached, with its digest if known in
    /// memory, or `None` when that cannot be done without waiting for the disk: the async engine
    /// answers the first on its reactor and takes only the second to its blocking pool.
    ///
    /// `openat2(RESOLVE_CACHED)` fails with `EAGAIN` rather than read a directory block or
    /// revalidate a network file system's entry; `fstat` of an open file reads only its inode,
    /// in memory since the open. Every failure, even "not found", is `None`: the pool's
    /// [`Self::open_file`] gives the answer, so the two paths cannot disagree on an error.
    pub fn open_cached(&self, name: &Name) -> Option<(OpenedFile, Option<Digest>)> {
        let opened = self.open_from_caches(name)?;
        let md5 = self.digests.get(&opened.key);
        Some((opened, md5))
    }

    #[cfg(target_os = "linux")]
    fn open_from_caches(&self, name: &Name) -> Option<OpenedFile> {
        use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
        if !self.cached_opens.load(Ordering::Relaxed) {
            return None;
        }
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        let resolve =
            ResolveFlags::CACHED | ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        let fd = match rustix::fs::openat2(&self.root, name.as_str(), flags, Mode::empty(), resolve) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOSYS | rustix::io::Errno::INVAL) => {
                // A kernel before 5.12 (no RESOLVE_CACHED) or without openat2: never again.
                self.cached_opens.store(false, Ordering::Relaxed);
                return None;
            }
            Err(_) => return None,
        };
        let st = rustix::fs::fstat(&fd).ok()?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return None;
        }
        let key = key_of_stat(&st);
        Some(OpenedFile { file: fd.into(), size: key.size, key })
    }

    #[cfg(not(target_os = "linux"))]
    fn open_from_caches(&self, _name: &Name) -> Option<OpenedFile> {
        None
    }

    /// The listing if a LIST can be answered from the shared snapshot without reading the
    /// directory (`fstat` of the open root reads no disk); `None` sends it to [`Self::list`].
    pub fn list_cached(&self) -> Option<Arc<[Entry]>> {
        let meta = self.root.dir_metadata().ok()?;
        let stamp = DirStamp { mtime_ns: key_of(&meta).mtime_ns, ctime_ns: ctime_ns(&meta) };
        self.listing.get(stamp, std::time::Instant::now())
    }

    /// The digest of an opened file, if it is known, in memory or where digests persist: no file
    /// is hashed here. A GET of a file not hashed yet gets a [`HashJob`] from
    /// [`Store::hash_job`] instead, which the engine runs.
    pub fn cached_digest(&self, opened: &OpenedFile) -> Option<Digest> {
        self.digests.get(&opened.key).or_else(|| self.persisted_digest(&opened.file, &opened.key))
    }

    /// The digest kept across restarts for this version of `file`, remembered in memory if found.
    pub(crate) fn persisted_digest(&self, file: &std::fs::File, key: &FileKey) -> Option<Digest> {
        let digest = self.persist.lookup(file, key)?;
        self.digests.note_loaded();
        self.digests.insert(*key, digest);
        self.listing.invalidate();
        Some(digest)
    }

    /// The work of hashing an opened file, for the engine to run where blocking is harmless and
    /// within its hash limit (`[SEC-3]`). It hashes the same open file, so the digest describes
    /// exactly the bytes that will be sent (`[GET-5]`).
    ///
    /// # Errors
    /// The handle cannot be duplicated (out of descriptors).
    pub fn hash_job(self: &Arc<Self>, opened: &OpenedFile) -> io::Result<HashJob> {
        HashJob::new(self.clone(), &opened.file, opened.key)
    }

    /// The bound on files hashed at once (`[SEC-3]`), for an engine whose threads may block while
    /// they wait for a permit (the blocking engine). The async engine keeps its own, awaited on
    /// its reactor, so that no blocking-pool thread ever waits for a permit.
    pub fn hash_limiter(&self) -> &HashLimiter {
        &self.hashing
    }

    /// Removes a file.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] unless `name` is a regular file.
    pub fn delete(&self, name: &Name) -> Result<(), StoreError> {
        let meta = self.root.symlink_metadata(name.as_str()).map_err(lookup_error)?;
        if !meta.is_file() {
            return Err(StoreError::NotFound);
        }
        self.root.remove_file(name.as_str())?;
        self.listing.invalidate();
        Ok(())
    }

    /// Remembers a verified digest of `key`, the version of `file` that was hashed or verified,
    /// in memory and where digests persist; listings taken before it are not reused.
    ///
    /// The digest is kept first and known in memory only then, so that no reply can announce it
    /// before its xattr is written: writing it moves the file's ctime, and a client that edits
    /// the file after seeing the reply must find the file's ctime moved again by its edit, on
    /// file systems whose timestamps are as coarse as a clock tick too.
    pub(crate) fn learn_digest(&self, key: FileKey, digest: Digest, file: Option<&std::fs::File>) {
        let now = file.map(|file| self.persist.remember(file, &key, digest));
        self.digests.insert(key, digest);
        // An xattr's write moves the file's ctime: the digest goes with the new key too.
        if let Some(now) = now.filter(|now| *now != key) {
            self.digests.insert(now, digest);
        }
        self.listing.invalidate();
    }

    /// Starts an upload: a new temporary file that only [`Upload::commit`] publishes.
    ///
    /// # Errors
    /// [`StoreError::NotAFile`] if the name is held by a directory, link or other non-file (either
    /// mode, `[STORE-8]`), [`StoreError::Exists`] for a create-only PUT of an existing file (both
    /// checked again at commit), or the temporary file cannot be made.
    pub fn begin_upload(self: &Arc<Self>, head: &PutHead) -> Result<Upload, StoreError> {
        match (publish::holder(&self.root, head.name.as_str()), head.mode) {
            (Holder::Other, _) => return Err(StoreError::NotAFile),
            (Holder::File, PutMode::CreateOnly) => return Err(StoreError::Exists),
            (Holder::File, PutMode::Overwrite) | (Holder::Nothing, _) => {}
        }
        let tmp_name = format!("{TEMP_PREFIX}{}-{}", std::process::id(), self.tmp_seq.fetch_add(1, Ordering::Relaxed));
        let mut o = OpenOptions::new();
        o.write(true).create_new(true).follow(FollowSymlinks::No);
        let file = self.root.open_with(&tmp_name, &o)?.into_std();
        Ok(Upload { store: self.clone(), tmp_name: Some(tmp_name), file, head: head.clone() })
    }
}

impl Drop for Store {
    /// What was kept stays kept: the index's last writes are made durable.
    fn drop(&mut self) {
        self.persist.flush();
    }
}

/// A lookup's error as the client hears it. A valid name longer than the file system's own limit
/// (ENAMETOOLONG, 36 on Linux: `max_name_len` may be up to 4096 where most file systems stop at
/// 255 bytes) names no file: `NOT_FOUND` (`[STAT-2]`, `[GET-3]`, `[DEL-2]`), not `INTERNAL`
/// (`[ERR-6]`).
fn lookup_error(e: io::Error) -> StoreError {
    if e.raw_os_error() == Some(36) {
        StoreError::NotFound
    } else {
        StoreError::from(e)
    }
}

/// An upload in progress. Dropped without [`Upload::commit`], it removes its temporary file: an
/// interrupted or refused upload leaves nothing behind (`[STORE-2]`).
#[derive(Debug)]
pub struct Upload {
    store: Arc<Store>,
    /// `None` once published or removed.
    tmp_name: Option<String>,
    file: std::fs::File,
    head: PutHead,
}

impl Upload {
    /// The name the upload will be published under.
    pub fn name(&self) -> &Name {
        &self.head.name
    }

    /// Appends data.
    ///
    /// # Errors
    /// The write failed (a full disk is [`StoreError::Full`]).
    pub fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.file.write_all(data)?;
        Ok(())
    }

    /// Publishes the verified file under its name, durably (`[STORE-3]`): fsync the file, rename
    /// (or hard-link, for create-only) it into place in one kernel step that also decides the
    /// outcome (`publish`), fsync the directory. Returns whether an earlier file was replaced
    /// (`[PUT-2]`).
    ///
    /// # Errors
    /// [`StoreError::Exists`] if a create-only upload lost a race; [`StoreError::NotAFile`] if a
    /// directory or link took the name meanwhile (`[STORE-8]`); storage errors.
    /// `md5` is the digest the machine verified the data against, leading or trailing (§ 6.5):
    /// the digest cache learns it.
    pub fn commit(mut self, md5: Digest) -> Result<bool, StoreError> {
        let Some(tmp) = self.tmp_name.clone() else { return Err(StoreError::NotFound) };
        self.file.sync_all()?;
        let written = self.key()?;
        let name = self.head.name.as_str();
        let root = &self.store.root;
        let replaced = match self.head.mode {
            PutMode::Overwrite => publish::overwrite(root, &tmp, name)?,
            PutMode::CreateOnly => {
                publish::create_only(root, &tmp, name)?;
                false
            }
        };
        self.tmp_name = None;
        // The rename is durable only once the directory is. cap-std's directory handle is an
        // O_PATH descriptor, which cannot be fsynced: open the directory readable for that.
        let mut dir = OpenOptions::new();
        dir.read(true).maybe_dir(true);
        root.open_with(".", &dir)?.sync_all()?;
        // Publishing moved the file's status-change time: the verified digest goes with the key
        // it has now, unless its content may have changed since it was written.
        let published = self.key()?;
        let unchanged = FileKey { ctime_ns: published.ctime_ns, ..written } == published;
        if unchanged {
            self.store.learn_digest(published, md5, Some(&self.file));
        }
        // A new name, or new content under an old one: listings taken before are stale.
        self.store.listing.invalidate();
        Ok(replaced)
    }

    /// The key of the upload's file, as it is now.
    fn key(&self) -> io::Result<FileKey> {
        Ok(key_of(&cap_std::fs::File::from_std(self.file.try_clone()?).metadata()?))
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp_name.take() {
            if let Err(e) = self.store.root.remove_file(&tmp) {
                tracing::warn!(file = %tmp, error = %e, "could not remove a temporary upload file");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ferry_proto::Name;

    use super::*;

    fn name(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    fn store_in(dir: &Path, persist: PersistMode) -> Arc<Store> {
        Arc::new(Store::open(dir, StoreSettings { persist, ..StoreSettings::default() }).unwrap())
    }

    /// `[PUT-5]`: a full disk or quota (ENOSPC 28, EDQUOT 122 on Linux, or errors of those kinds
    /// made without an OS code) is `STORAGE_FULL`; the other errors keep their meaning.
    #[test]
    fn io_errors_map_to_what_a_client_hears() {
        let full = [
            io::Error::from_raw_os_error(28),
            io::Error::from_raw_os_error(122),
            io::Error::from(io::ErrorKind::StorageFull),
            io::Error::from(io::ErrorKind::QuotaExceeded),
            io::Error::new(io::ErrorKind::StorageFull, "no room"),
        ];
        for e in full {
            let what = format!("{e:?}");
            let mapped = StoreError::from(e);
            assert!(matches!(mapped, StoreError::Full), "{what}: {mapped:?}");
            assert_eq!(mapped.code(), ErrorCode::STORAGE_FULL, "{what}");
        }
        let others = [
            (io::Error::from_raw_os_error(2), ErrorCode::NOT_FOUND),
            (io::Error::from(io::ErrorKind::NotFound), ErrorCode::NOT_FOUND),
            (io::Error::from_raw_os_error(17), ErrorCode::EXISTS),
            (io::Error::from(io::ErrorKind::AlreadyExists), ErrorCode::EXISTS),
            (io::Error::from_raw_os_error(5), ErrorCode::INTERNAL),
            (io::Error::other("disk on fire"), ErrorCode::INTERNAL),
        ];
        for (e, code) in others {
            let what = format!("{e:?}");
            assert_eq!(StoreError::from(e).code(), code, "{what}");
        }
        assert_eq!(StoreError::NotAFile.code(), ErrorCode::FORBIDDEN);
        // A name too long for the file system names no file; a lookup's other errors map as above.
        assert!(matches!(lookup_error(io::Error::from_raw_os_error(36)), StoreError::NotFound));
        assert!(matches!(lookup_error(io::Error::from_raw_os_error(28)), StoreError::Full));
        assert!(matches!(lookup_error(io::Error::from_raw_os_error(13)), StoreError::Io(_)));
    }

    /// The kernel's own ENOSPC, from a write to `/dev/full`, is `STORAGE_FULL`.
    #[test]
    fn a_write_to_a_full_device_is_storage_full() {
        let Ok(mut full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            return eprintln!("skipped: no /dev/full here");
        };
        let e = full.write_all(&[0u8; 4096]).and_then(|()| full.flush()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(28), "{e:?}");
        assert_eq!(StoreError::from(e).code(), ErrorCode::STORAGE_FULL);
    }

    /// Start-up removes the regular files named like temporary uploads and nothing else: not a
    /// directory, not a link (which it must not follow either), not a file of another name.
    #[test]
    fn start_up_removes_only_stale_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join(".ferry-tmp-1-0"), b"stale").unwrap();
        std::fs::write(root.join("kept.bin"), b"kept").unwrap();
        std::fs::create_dir(root.join(".ferry-tmp-dir")).unwrap();
        std::os::unix::fs::symlink("kept.bin", root.join(".ferry-tmp-link")).unwrap();
        drop(store_in(root, PersistMode::Off));
        assert!(!root.join(".ferry-tmp-1-0").exists());
        assert!(root.join("kept.bin").is_file());
        assert!(root.join(".ferry-tmp-dir").is_dir());
        assert!(root.join(".ferry-tmp-link").symlink_metadata().unwrap().file_type().is_symlink());
    }

    #[test]
    fn the_file_systems_name_limit_is_reported_and_applied() {
        let dir = tempfile::tempdir().unwrap();
        let fs_max = rustix::fs::statvfs(dir.path()).unwrap().f_namemax;
        let long = "n".repeat(20);
        std::fs::write(dir.path().join(&long), b"x").unwrap();
        let mut store = Store::open(dir.path(), StoreSettings::default()).unwrap();
        assert_eq!(store.fs_name_max().map(u64::from), Some(fs_max));
        let names = |s: &Store| s.scan().unwrap().into_iter().map(|(n, _)| n.as_str().to_owned()).collect::<Vec<_>>();
        assert_eq!(names(&store), std::slice::from_ref(&long));
        store.set_max_name_len(19);
        assert!(names(&store).is_empty(), "a name above the limit is not served");
        assert!(store.list().unwrap().is_empty());
    }

    /// A digest learned by hashing is found again for the file as it is now, in memory (even
    /// though keeping it in an xattr moved the file's ctime), and after a restart where it was
    /// kept: no file is read twice.
    #[test]
    fn a_hashed_digest_is_known_for_the_file_as_it_is_now() {
        for mode in [PersistMode::Auto, PersistMode::Index] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("f"), b"content").unwrap();
            let d = Digest::of(b"content");
            {
                let store = store_in(dir.path(), mode);
                let opened = store.open_file(&name("f")).unwrap();
                assert_eq!(store.cached_digest(&opened), None, "{mode:?}");
                assert_eq!(store.hash_job(&opened).unwrap().run_blocking(store.hash_limiter()).unwrap(), d);
                assert_eq!(store.stat(&name("f")).unwrap().md5, Some(d), "{mode:?}: STAT knows it");
                assert_eq!(store.cached_digest(&store.open_file(&name("f")).unwrap()), Some(d), "{mode:?}");
                assert_eq!(store.digests().loaded_count(), 0, "{mode:?}: found in memory, not read back");
                assert_eq!(store.digests().hashed_count(), 1);
            }
            let store = store_in(dir.path(), mode);
            assert!(store.digests().is_empty(), "{mode:?}: not in memory after a restart");
            assert_eq!(store.stat(&name("f")).unwrap().md5, Some(d), "{mode:?}: STAT reads it back [LIST-5]");
            assert_eq!(store.cached_digest(&store.open_file(&name("f")).unwrap()), Some(d), "{mode:?}");
            assert_eq!(
                (store.digests().loaded_count(), store.digests().hashed_count()),
                (1, 0),
                "{mode:?}: read back once, then remembered"
            );
        }
    }

    /// `flush_digests` makes the index durable while the server runs: a copy of the index file
    /// taken right after it (as a crash would leave it) holds the digest.
    #[test]
    fn flushed_digests_are_durable_in_the_index() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"content").unwrap();
        let store = store_in(dir.path(), PersistMode::Index);
        let opened = store.open_file(&name("f")).unwrap();
        store.hash_job(&opened).unwrap().run_blocking(store.hash_limiter()).unwrap();
        store.flush_digests();
        let copy = dir.path().join("copy");
        std::fs::copy(persist::default_index_path(dir.path()), &copy).unwrap();
        let index = ferry_digest_store::Index::open(&copy, 10).unwrap();
        assert_eq!(index.get(&opened.key).unwrap(), Some(Digest::of(b"content")));
    }

    /// The index is flushed when the store goes, even when it goes in a panic (a thread that
    /// held the last reference to it panicked), when redb's own close writes nothing.
    #[test]
    fn digests_are_kept_when_the_store_goes_down_in_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"content").unwrap();
        let store = store_in(dir.path(), PersistMode::Index);
        let opened = store.open_file(&name("f")).unwrap();
        store.hash_job(&opened).unwrap().run_blocking(store.hash_limiter()).unwrap();
        drop(opened);
        let held = std::panic::AssertUnwindSafe(store);
        let gone = std::thread::spawn(move || {
            let _held = held;
            panic!("a thread holding the last reference to the store panics (this panic is expected)");
        })
        .join();
        assert!(gone.is_err());
        let store = store_in(dir.path(), PersistMode::Index);
        assert_eq!(store.cached_digest(&store.open_file(&name("f")).unwrap()), Some(Digest::of(b"content")));
        assert_eq!(store.digests().hashed_count(), 0);
    }

    /// An upload's verified digest is known at once for the published file, and kept.
    #[test]
    fn an_uploads_digest_is_known_once_published() {
        for mode in [PersistMode::Auto, PersistMode::Index] {
            let dir = tempfile::tempdir().unwrap();
            let data = b"uploaded bytes";
            let head = PutHead::trailing(PutMode::CreateOnly, name("up"), data.len() as u64);
            {
                let store = store_in(dir.path(), mode);
                let mut upload = store.begin_upload(&head).unwrap();
                upload.write(data).unwrap();
                assert!(!upload.commit(Digest::of(data)).unwrap(), "created, not replaced");
                assert_eq!(store.stat(&name("up")).unwrap().md5, Some(Digest::of(data)), "{mode:?}");
                assert_eq!(store.list().unwrap()[0].md5, Some(Digest::of(data)), "{mode:?}");
            }
            let store = store_in(dir.path(), mode);
            assert_eq!(store.cached_digest(&store.open_file(&name("up")).unwrap()), Some(Digest::of(data)));
        }
    }
}
