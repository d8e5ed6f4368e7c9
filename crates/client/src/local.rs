//! The local side of a download: the `.part` file that holds the bytes received so far, the
//! `.part.meta` sidecar that says which file they belong to, and the final rename.
//!
//! A download to `DEST` writes `DEST.part`. Before the first data byte is written,
//! `DEST.part.meta` records the size and MD5 the server announced for the whole file; a later
//! attempt — in this process or the next one — resumes from the end of `DEST.part` only if the
//! server still announces that size and MD5 (`[GET-7]`), and starts again from 0 otherwise. Only a
//! file whose whole MD5 matched is renamed to `DEST`, after an fsync, never over an existing file
//! unless asked; the directory is fsynced after the rename. While a download runs, `DEST.part` is
//! locked (`flock`), so two processes never write the same `.part`.
//!
//! A download in the trailing form (PROTOCOL.md § 7.10) learns the MD5 only after the data, so
//! its sidecar records the size alone. Bytes kept under such a sidecar (a connection lost before
//! the trailer) are resumed against any file of that size; the leading digest of the resumed
//! reply is then recorded, and the MD5 of the whole, checked before the rename as always, tells
//! whether the bytes kept belonged to it (if not, the download starts again from 0).

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ferry_proto::{Digest, FrameHead, Name};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// What a `.part` file is a part of. Identity is by content: the same size and MD5 are the same
/// bytes, whichever server or name they came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartMeta {
    /// Always 1: the sidecar's format.
    pub ferry_part: u32,
    /// The remote name (for people reading the file; not used to decide).
    pub name: String,
    /// The whole file's size.
    pub size: u64,
    /// The whole file's MD5, in hex; absent while a download in the trailing form (§ 7.10) has
    /// not received it yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
}

impl PartMeta {
    fn of(name: &Name, identity: Identity) -> Self {
        Self {
            ferry_part: 1,
            name: name.as_str().to_owned(),
            size: identity.size,
            md5: identity.md5.map(|d| d.to_string()),
        }
    }

    /// The size and digest, if the sidecar is well-formed.
    fn identity(&self) -> Option<Identity> {
        (self.ferry_part == 1).then_some(())?;
        let md5 = match &self.md5 {
            Some(hex) => Some(Digest::from_hex(hex.as_bytes())?),
            None => None,
        };
        Some(Identity { size: self.size, md5 })
    }
}

/// Which file the bytes of a `.part` file belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// The whole file's size.
    pub size: u64,
    /// The whole file's MD5; `None` until a download in the trailing form has received it.
    pub md5: Option<Digest>,
}

impl Identity {
    /// The identity a leading frame announces.
    pub fn of(frame: &FrameHead) -> Self {
        Self { size: frame.size, md5: Some(frame.md5) }
    }
}

/// `path` with `suffix` appended to its file name.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// A download's `.part` file, open and locked.
#[derive(Debug)]
pub struct Part {
    /// The final destination.
    pub dest: PathBuf,
    pub path: PathBuf,
    meta_path: PathBuf,
    file: File,
    /// Bytes in the file.
    len: u64,
    /// The size and digest of the file the bytes belong to, if known (from the sidecar or the
    /// server). `None`: the bytes, if any, cannot be trusted and the download starts from 0.
    identity: Option<Identity>,
}

impl Part {
    /// Opens (creating if needed) and locks `dest`'s `.part` file, and reads its sidecar.
    ///
    /// A `.part` file is taken as an earlier download's only if it is empty or its sidecar is
    /// there and well-formed — the sidecar is always written before the first data byte. Anything
    /// else is someone's file that happens to have that name, and is overwritten only with
    /// `overwrite` (`--force`).
    ///
    /// # Errors
    /// The file cannot be opened, another process holds its lock, or it is not ours.
    pub fn open(dest: &Path, overwrite: bool) -> Result<Self, Error> {
        let path = with_suffix(dest, ".part");
        let meta_path = with_suffix(dest, ".part.meta");
        let local = |what, source| Error::Local { what, path: path.clone(), source };
        let existed = std::fs::symlink_metadata(&path).is_ok();
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // A symbolic link in the way is not followed: opening it fails.
            options.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
        }
        let file = options.open(&path).map_err(|e| local("open", e))?;
        let metadata = file.metadata().map_err(|e| local("read the size of", e))?;
        if !metadata.is_file() {
            return Err(Error::LocalExists { path });
        }
        lock(&file).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock => Error::Busy { path: dest.to_owned() },
            _ => local("lock", e),
        })?;
        let len = metadata.len();
        let sidecar = match std::fs::read(&meta_path) {
            Ok(bytes) => Some(serde_json::from_slice::<PartMeta>(&bytes).ok().and_then(|m| m.identity())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::Local { what: "read", path: meta_path, source: e }),
        };
        let ours = match sidecar {
            Some(identity) => identity.is_some(),
            None => len == 0,
        };
        if !ours && !overwrite {
            if !existed {
                let _ = std::fs::remove_file(&path);
            }
            let in_the_way = if sidecar.is_some() { meta_path } else { path };
            return Err(Error::LocalExists { path: in_the_way });
        }
        let identity = sidecar.flatten();
        let mut part = Self { dest: dest.to_owned(), path, meta_path, file, len, identity };
        match part.identity {
            // Bytes past the announced end cannot be part of that file.
            Some(Identity { size, .. }) if part.len > size => part.reset()?,
            // Bytes of an unknown file, which we may overwrite: start again.
            None if part.len > 0 => part.reset()?,
            _ => {}
        }
        part.file.seek(SeekFrom::End(0)).map_err(|e| Error::Local {
            what: "seek in",
            path: part.path.clone(),
            source: e,
        })?;
        Ok(part)
    }

    /// Bytes held.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no bytes are held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The size and MD5 of the file the bytes held belong to, if known.
    pub fn identity(&self) -> Option<Identity> {
        self.identity
    }

    /// Where to resume: the bytes held, if they belong to a known file.
    pub fn resume_offset(&self) -> u64 {
        if self.identity.is_some() {
            self.len
        } else {
            0
        }
    }

    /// Whether the server's frame is the file these bytes belong to (`[GET-7]`), as far as
    /// the sidecar can tell: bytes of a trailing download whose MD5 never came match any file of
    /// their size (the whole file's MD5 decides in the end).
    pub fn matches(&self, frame: &FrameHead) -> bool {
        self.identity.is_some_and(|i| i.size == frame.size && i.md5.is_none_or(|md5| md5 == frame.md5))
    }

    /// Records the MD5 a resumed reply announced for bytes whose sidecar had none, so that a
    /// later resume checks it (`[GET-7]`).
    ///
    /// # Errors
    /// The sidecar cannot be written.
    pub fn learn(&mut self, frame: &FrameHead) -> Result<(), Error> {
        if self.identity.is_some_and(|i| i.md5.is_none()) {
            self.write_sidecar(&frame.name, Identity::of(frame))?;
        }
        Ok(())
    }

    /// Forgets the bytes held: empties the file and removes the sidecar.
    ///
    /// # Errors
    /// The file cannot be truncated.
    pub fn reset(&mut self) -> Result<(), Error> {
        self.file.set_len(0).map_err(|e| Error::Local { what: "empty", path: self.path.clone(), source: e })?;
        self.file.seek(SeekFrom::Start(0)).map_err(|e| Error::Local {
            what: "seek in",
            path: self.path.clone(),
            source: e,
        })?;
        self.len = 0;
        self.identity = None;
        let _ = std::fs::remove_file(&self.meta_path);
        Ok(())
    }

    /// Starts over for the file `name` of that identity (its MD5 unknown, for a reply in the
    /// trailing form): empties the file and writes the sidecar (atomically, through a temporary
    /// file) before any data is written.
    ///
    /// # Errors
    /// The files cannot be written.
    pub fn begin(&mut self, name: &Name, identity: Identity) -> Result<(), Error> {
        self.reset()?;
        self.write_sidecar(name, identity)
    }

    fn write_sidecar(&mut self, name: &Name, identity: Identity) -> Result<(), Error> {
        let json = serde_json::to_vec_pretty(&PartMeta::of(name, identity)).map_err(io::Error::other);
        let tmp = with_suffix(&self.meta_path, ".tmp");
        json.and_then(|json| std::fs::write(&tmp, json))
            .and_then(|()| std::fs::rename(&tmp, &self.meta_path))
            .map_err(|e| Error::Local { what: "write", path: self.meta_path.clone(), source: e })?;
        self.identity = Some(identity);
        Ok(())
    }

    /// A second handle on the file, for reading the bytes held (to hash them).
    ///
    /// # Errors
    /// The file cannot be reopened.
    pub fn reader(&self) -> Result<File, Error> {
        File::open(&self.path).map_err(|e| Error::Local { what: "read", path: self.path.clone(), source: e })
    }

    /// Appends received bytes.
    ///
    /// # Errors
    /// The write failed (a full disk…).
    pub fn append(&mut self, data: &[u8]) -> Result<(), Error> {
        self.file.write_all(data).map_err(|e| Error::Local { what: "write", path: self.path.clone(), source: e })?;
        self.len += data.len() as u64;
        Ok(())
    }

    /// Flushes the bytes to stable storage and publishes them under the final name; without
    /// `overwrite`, never over an existing file. The sidecar is removed.
    ///
    /// Returns the published file's metadata, taken through the still open descriptor after the
    /// rename (which moves its ctime): it describes the file this download wrote, whatever
    /// another process may have put at `dest` by then. `None` if `fstat` failed, which is no
    /// failure of the download.
    ///
    /// # Errors
    /// The destination exists (without `overwrite`), or a file operation failed.
    pub fn publish(self, overwrite: bool) -> Result<Option<std::fs::Metadata>, Error> {
        let local = |what, path: &Path, source| Error::Local { what, path: path.to_owned(), source };
        self.file.sync_all().map_err(|e| local("flush", &self.path, e))?;
        rename(&self.path, &self.dest, overwrite).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => Error::LocalExists { path: self.dest.clone() },
            _ => local("rename the download to", &self.dest, e),
        })?;
        let _ = std::fs::remove_file(&self.meta_path);
        sync_dir(&self.dest).map_err(|e| local("flush the directory of", &self.dest, e))?;
        Ok(self.file.metadata().ok())
    }

    /// Removes the `.part` file and its sidecar: what a failed verification leaves.
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(&self.meta_path);
    }
}

#[cfg(unix)]
fn lock(file: &File) -> io::Result<()> {
    use rustix::fs::{flock, FlockOperation};
    flock(file, FlockOperation::NonBlockingLockExclusive).map_err(|e| {
        if e == rustix::io::Errno::WOULDBLOCK {
            io::ErrorKind::WouldBlock.into()
        } else {
            io::Error::from(e)
        }
    })
}

#[cfg(not(unix))]
fn lock(_file: &File) -> io::Result<()> {
    Ok(())
}

/// Renames `from` to `to`; unless `overwrite`, fails with `AlreadyExists` rather than replace a
/// file, atomically where the platform can.
fn rename(from: &Path, to: &Path, overwrite: bool) -> io::Result<()> {
    if overwrite {
        return std::fs::rename(from, to);
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use rustix::fs::{renameat_with, RenameFlags, CWD};
        match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::EXIST) => return Err(io::ErrorKind::AlreadyExists.into()),
            // The file system cannot do it atomically: fall through to check, then rename.
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS | rustix::io::Errno::OPNOTSUPP) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if std::fs::symlink_metadata(to).is_ok() {
        return Err(io::ErrorKind::AlreadyExists.into());
    }
    std::fs::rename(from, to)
}

/// Flushes the directory holding `path`, so a rename into it survives a crash.
fn sync_dir(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(data: &[u8]) -> FrameHead {
        FrameHead { name: Name::parse("f").unwrap(), size: data.len() as u64, md5: Digest::of(data) }
    }

    #[test]
    fn a_part_file_without_a_sidecar_is_someone_else_s() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        std::fs::write(with_suffix(&dest, ".part"), b"a user's own file").unwrap();
        assert!(matches!(Part::open(&dest, false), Err(Error::LocalExists { .. })));
        assert_eq!(std::fs::read(with_suffix(&dest, ".part")).unwrap(), b"a user's own file");
        let part = Part::open(&dest, true).unwrap();
        assert_eq!(part.len(), 0, "--force overwrites it");
        assert_eq!(part.resume_offset(), 0);
    }

    #[test]
    fn a_foreign_sidecar_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        std::fs::write(with_suffix(&dest, ".part.meta"), b"notes").unwrap();
        assert!(matches!(Part::open(&dest, false), Err(Error::LocalExists { .. })));
        assert!(!with_suffix(&dest, ".part").exists(), "nothing created");
        assert_eq!(std::fs::read(with_suffix(&dest, ".part.meta")).unwrap(), b"notes");
    }

    #[cfg(unix)]
    #[test]
    fn a_symbolic_link_in_place_of_the_part_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        let target = dir.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, with_suffix(&dest, ".part")).unwrap();
        assert!(Part::open(&dest, true).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    }

    #[test]
    fn an_empty_part_without_a_sidecar_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        std::fs::write(with_suffix(&dest, ".part"), b"").unwrap();
        assert_eq!(Part::open(&dest, false).unwrap().resume_offset(), 0);
    }

    #[test]
    fn a_sidecar_makes_the_bytes_resumable_for_that_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        let whole = b"hello world";
        {
            let mut part = Part::open(&dest, false).unwrap();
            part.begin(&frame(whole).name, Identity::of(&frame(whole))).unwrap();
            part.append(&whole[..5]).unwrap();
        }
        let part = Part::open(&dest, false).unwrap();
        assert_eq!(part.resume_offset(), 5);
        assert!(part.matches(&frame(whole)));
        assert!(!part.matches(&frame(b"hello there")), "[GET-7] another file");
    }

    #[test]
    fn a_trailing_download_s_sidecar_holds_the_size_until_a_digest_is_learnt() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        let whole = b"hello world";
        {
            let mut part = Part::open(&dest, false).unwrap();
            part.begin(&frame(whole).name, Identity { size: 11, md5: None }).unwrap();
            part.append(&whole[..5]).unwrap();
        }
        let meta = std::fs::read_to_string(with_suffix(&dest, ".part.meta")).unwrap();
        assert!(!meta.contains("md5"), "{meta}");
        let mut part = Part::open(&dest, false).unwrap();
        assert_eq!(part.resume_offset(), 5, "kept for a resume");
        assert!(part.matches(&frame(whole)) && part.matches(&frame(b"hello there")), "any file of that size");
        assert!(!part.matches(&frame(b"hello")), "but not another size");
        part.learn(&frame(whole)).unwrap();
        drop(part);
        let part = Part::open(&dest, false).unwrap();
        assert_eq!(part.identity(), Some(Identity::of(&frame(whole))));
        assert!(!part.matches(&frame(b"hello there")), "[GET-7] once the digest is known");
    }

    #[test]
    fn more_bytes_than_the_file_has_start_again() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        {
            let mut part = Part::open(&dest, false).unwrap();
            part.begin(&frame(b"ab").name, Identity::of(&frame(b"ab"))).unwrap();
            part.append(b"abc").unwrap();
        }
        assert_eq!(Part::open(&dest, false).unwrap().resume_offset(), 0);
    }

    #[test]
    fn a_second_opener_is_told_the_part_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        let _first = Part::open(&dest, false).unwrap();
        assert!(matches!(Part::open(&dest, false), Err(Error::Busy { .. })));
    }

    #[test]
    fn publish_never_replaces_without_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        std::fs::write(&dest, b"precious").unwrap();
        let mut part = Part::open(&dest, false).unwrap();
        part.begin(&frame(b"new").name, Identity::of(&frame(b"new"))).unwrap();
        part.append(b"new").unwrap();
        assert!(matches!(part.publish(false), Err(Error::LocalExists { .. })));
        assert_eq!(std::fs::read(&dest).unwrap(), b"precious");
        let mut part = Part::open(&dest, false).unwrap();
        assert_eq!(part.resume_offset(), 3, "the verified bytes are still there");
        part.append(b"").unwrap();
        part.publish(true).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
        assert!(!with_suffix(&dest, ".part").exists());
        assert!(!with_suffix(&dest, ".part.meta").exists());
    }
}
