//! The version of a file that a digest describes.

use std::fs::{File, Metadata};
use std::io;
use std::time::UNIX_EPOCH;

/// What identifies one version of a file's content. Two observations of a file with equal keys
/// saw the same bytes, unless someone wrote the file and then set both of its times back, which
/// the kernel does not allow for the status-change time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    /// Modification time in nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Status-change time in nanoseconds since the epoch: moved by every write, and, unlike
    /// `mtime_ns`, impossible for a user to set back (`touch -d`, `cp -p`, `rsync -t`, an editor
    /// restoring it). It also moves on a rename, a new hard link, a chmod or an xattr change,
    /// which costs only a re-hash.
    pub ctime_ns: i128,
}

impl FileKey {
    /// The key of the file `meta` describes, as it was when `meta` was taken.
    pub fn of(meta: &Metadata) -> Self {
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX));
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Self {
                dev: meta.dev(),
                ino: meta.ino(),
                size: meta.len(),
                mtime_ns,
                ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            }
        }
        #[cfg(not(unix))]
        {
            Self { dev: 0, ino: 0, size: meta.len(), mtime_ns, ctime_ns: 0 }
        }
    }

    /// The key of an open file, as it is now.
    ///
    /// # Errors
    /// `fstat` failed.
    pub fn of_file(file: &File) -> io::Result<Self> {
        Ok(Self::of(&file.metadata()?))
    }

    /// The key without its status-change time: what stays equal when only the file's metadata
    /// (a rename, an xattr) changed.
    pub(crate) fn content_part(&self) -> (u64, u64, u64, i128) {
        (self.dev, self.ino, self.size, self.mtime_ns)
    }
}
