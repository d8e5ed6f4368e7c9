//! Digests in a user extended attribute on the file itself, `user.ferry.md5`.
//!
//! The attribute holds the digest with the key of the version it describes. The catch: setting
//! an attribute moves the file's status-change time (ctime), so the attribute cannot hold the
//! exact ctime that its own write produces. It holds a narrow window instead: the realtime
//! clock read just before the write, less [`COARSE_LAG_NS`] (kernels that stamp with the coarse
//! clock lag it by up to a tick), to that reading plus [`WRITE_SLACK_NS`]. After the write the file
//! is stat'ed again; if its ctime fell outside the window (the thread was preempted, or someone
//! changed the file meanwhile), the write is tried again, and finally undone.
//!
//! A version is then taken to be the one hashed when device, inode, size and modification time
//! are equal and the ctime lies in the window. The one change this misses is a write to the same
//! inode that also sets the modification time back, completed within [`WRITE_SLACK_NS`] (1 ms)
//! after the attribute's own write; any later change moves ctime past the window. A process that
//! wrote the attribute knows the exact ctime its write produced, and should hold the file to it
//! (ferry-core does); and the file's reader verifies the digest anyway, so even the missed change
//! costs a failed download, never a wrong file.

use std::fs::File;
use std::io;

use ferry_proto::Digest;
use rustix::fs::XattrFlags;

use crate::key::FileKey;

/// The attribute's name. `user.` attributes are the ones an unprivileged owner may set.
pub const NAME: &str = "user.ferry.md5";

/// How far behind the realtime clock a ctime stamped by the kernel may be: one tick of the
/// coarse clock at the lowest common rate (HZ=100), doubled.
pub const COARSE_LAG_NS: i128 = 20_000_000;
/// How long after the clock is read the attribute's write may stamp ctime: the system call's own
/// time, with room for a short preemption (a longer one fails the check, and the write is tried
/// again).
pub const WRITE_SLACK_NS: i128 = 1_000_000;
/// Writes tried before the attribute is given up for this file.
const ATTEMPTS: usize = 3;
/// The first word of the value, with its format's version.
const MAGIC: &str = "ferry-md5/1";

/// What [`write()`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The attribute now vouches for the file, whose key (with its new ctime) is this.
    Stored(FileKey),
    /// The file is no longer the version `key` describes: nothing was stored.
    Changed,
    /// The file's ctime kept falling outside the window: the attribute was removed.
    Unsettled,
}

/// The digest the attribute records for the file's current version, `key` (from `fstat` of the
/// same file), if it records one.
///
/// # Errors
/// The file system does not support user attributes (`ENOTSUP`), or reading failed. A missing
/// or unreadable attribute is `Ok(None)`.
pub fn read(file: &File, key: &FileKey) -> io::Result<Option<Digest>> {
    let mut buf = [0u8; 192];
    let n = match rustix::fs::fgetxattr(file, NAME, &mut buf) {
        Ok(n) => n,
        Err(rustix::io::Errno::NODATA | rustix::io::Errno::RANGE) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok(parse(&buf[..n]).and_then(|v| v.vouches_for(key).then_some(v.digest)))
}

/// Stores `digest` as the digest of `key`, the version of `file` that was hashed, unless the
/// file has changed since.
///
/// # Errors
/// The file system does not support user attributes (`ENOTSUP`), the process may not set them
/// on this file (`EPERM`, `EACCES`), or `fstat` failed.
pub fn write(file: &File, key: &FileKey, digest: Digest) -> io::Result<Written> {
    let mut expected_ctime = key.ctime_ns;
    for _ in 0..ATTEMPTS {
        let before = FileKey::of_file(file)?;
        if before.content_part() != key.content_part() || before.ctime_ns != expected_ctime {
            remove(file)?;
            return Ok(Written::Changed);
        }
        let now = realtime_ns();
        let value = Value { key: *key, ctime_from: now - COARSE_LAG_NS, ctime_to: now + WRITE_SLACK_NS, digest };
        rustix::fs::fsetxattr(file, NAME, value.encode().as_bytes(), XattrFlags::empty())?;
        let after = FileKey::of_file(file)?;
        if after.content_part() != key.content_part() {
            remove(file)?;
            return Ok(Written::Changed);
        }
        if value.vouches_for(&after) {
            return Ok(Written::Stored(after));
        }
        expected_ctime = after.ctime_ns;
    }
    remove(file)?;
    Ok(Written::Unsettled)
}

/// Removes the attribute, if the file has one.
///
/// # Errors
/// Removing it failed for another reason than its absence.
pub fn remove(file: &File) -> io::Result<()> {
    match rustix::fs::fremovexattr(file, NAME) {
        Ok(()) | Err(rustix::io::Errno::NODATA) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether user attributes can be set on `file` by this process: sets and removes a scratch one.
///
/// # Errors
/// They cannot (`ENOTSUP` where the file system has none).
pub fn probe(file: &File) -> io::Result<()> {
    const SCRATCH: &str = "user.ferry.probe";
    rustix::fs::fsetxattr(file, SCRATCH, b"1", XattrFlags::empty())?;
    rustix::fs::fremovexattr(file, SCRATCH)?;
    Ok(())
}

fn realtime_ns() -> i128 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
    i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec)
}

/// The attribute's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Value {
    /// The version hashed; its `ctime_ns` is not compared (the write moved it).
    key: FileKey,
    /// The window the attribute's own write stamped ctime in, inclusive.
    ctime_from: i128,
    ctime_to: i128,
    digest: Digest,
}

impl Value {
    fn vouches_for(&self, key: &FileKey) -> bool {
        self.key.content_part() == key.content_part() && (self.ctime_from..=self.ctime_to).contains(&key.ctime_ns)
    }

    fn encode(&self) -> String {
        let k = &self.key;
        format!(
            "{MAGIC} dev={} ino={} size={} mtime={} ctime={}..{} md5={}",
            k.dev, k.ino, k.size, k.mtime_ns, self.ctime_from, self.ctime_to, self.digest
        )
    }
}

/// Reads a value written by [`Value::encode`]; anything else (another version, a hand-edited
/// attribute) is `None`, which costs a re-hash.
fn parse(raw: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut words = text.split(' ');
    if words.next()? != MAGIC {
        return None;
    }
    let mut field = |name: &str| words.next()?.strip_prefix(name)?.strip_prefix('=');
    let dev = field("dev")?.parse().ok()?;
    let ino = field("ino")?.parse().ok()?;
    let size = field("size")?.parse().ok()?;
    let mtime_ns = field("mtime")?.parse().ok()?;
    let (from, to) = field("ctime")?.split_once("..")?;
    let (ctime_from, ctime_to) = (from.parse().ok()?, to.parse().ok()?);
    let digest = Digest::from_hex(field("md5")?.as_bytes())?;
    if words.next().is_some() {
        return None;
    }
    Some(Value { key: FileKey { dev, ino, size, mtime_ns, ctime_ns: ctime_from }, ctime_from, ctime_to, digest })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use proptest::prelude::*;

    use super::*;

    fn file_with(dir: &std::path::Path, content: &[u8]) -> (std::path::PathBuf, File) {
        let path = dir.join("f");
        std::fs::File::create(&path).unwrap().write_all(content).unwrap();
        let file = File::open(&path).unwrap();
        (path, file)
    }

    fn xattr_dir() -> Option<tempfile::TempDir> {
        let dir = tempfile::tempdir().ok()?;
        let (_, f) = file_with(dir.path(), b"");
        probe(&f).ok().map(|()| dir)
    }

    #[test]
    fn a_stored_digest_is_read_back_for_the_version_it_describes() {
        let Some(dir) = xattr_dir() else { return eprintln!("no user xattrs here: skipped") };
        let (_, file) = file_with(dir.path(), b"hello");
        let key = FileKey::of_file(&file).unwrap();
        let Written::Stored(now) = write(&file, &key, Digest::of(b"hello")).unwrap() else { panic!("not stored") };
        assert_ne!(now.ctime_ns, key.ctime_ns, "writing the attribute moved ctime");
        assert_eq!(read(&file, &now).unwrap(), Some(Digest::of(b"hello")));
        assert_eq!(read(&file, &FileKey::of_file(&file).unwrap()).unwrap(), Some(Digest::of(b"hello")));
    }

    #[test]
    fn an_edit_in_place_with_the_mtime_set_back_is_not_vouched_for() {
        let Some(dir) = xattr_dir() else { return eprintln!("no user xattrs here: skipped") };
        let (path, file) = file_with(dir.path(), b"hello");
        let meta = file.metadata().unwrap();
        let key = FileKey::of(&meta);
        assert!(matches!(write(&file, &key, Digest::of(b"hello")).unwrap(), Written::Stored(_)));
        // Past the attribute's window, then the same size and the old mtime.
        std::thread::sleep(std::time::Duration::from_millis(30));
        let mut w = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        w.write_all(b"HELLO").unwrap();
        w.set_modified(meta.modified().unwrap()).unwrap();
        let edited = FileKey::of_file(&file).unwrap();
        assert_eq!((edited.size, edited.mtime_ns), (key.size, key.mtime_ns));
        assert_eq!(read(&file, &edited).unwrap(), None);
    }

    #[test]
    fn a_file_changed_before_the_write_gets_no_attribute() {
        let Some(dir) = xattr_dir() else { return eprintln!("no user xattrs here: skipped") };
        let (path, file) = file_with(dir.path(), b"hello");
        let key = FileKey::of_file(&file).unwrap();
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"!").unwrap();
        assert_eq!(write(&file, &key, Digest::of(b"hello")).unwrap(), Written::Changed);
        let mut buf = [0u8; 8];
        assert!(rustix::fs::fgetxattr(&file, NAME, &mut buf).is_err(), "no attribute left");
    }

    #[test]
    fn a_copied_attribute_does_not_vouch_for_another_inode() {
        let Some(dir) = xattr_dir() else { return eprintln!("no user xattrs here: skipped") };
        let (_, file) = file_with(dir.path(), b"hello");
        let key = FileKey::of_file(&file).unwrap();
        let Written::Stored(now) = write(&file, &key, Digest::of(b"hello")).unwrap() else { panic!() };
        assert_eq!(read(&file, &FileKey { ino: now.ino + 1, ..now }).unwrap(), None);
        assert_eq!(
            read(&file, &FileKey { ctime_ns: now.ctime_ns + COARSE_LAG_NS + WRITE_SLACK_NS + 1, ..now }).unwrap(),
            None
        );
    }

    /// The attribute records the window its own write stamped ctime in: from the clock before the
    /// write less the coarse clock's lag, to that clock plus the write's slack; a ctime outside it,
    /// on either side, is not vouched for.
    #[test]
    fn the_attribute_vouches_for_a_narrow_window_around_its_write() {
        let Some(dir) = xattr_dir() else { return eprintln!("no user xattrs here: skipped") };
        let (_, file) = file_with(dir.path(), b"hello");
        let key = FileKey::of_file(&file).unwrap();
        let Written::Stored(now) = write(&file, &key, Digest::of(b"hello")).unwrap() else { panic!("not stored") };
        let mut buf = [0u8; 192];
        let n = rustix::fs::fgetxattr(&file, NAME, &mut buf).unwrap();
        let v = parse(&buf[..n]).expect("a value");
        assert_eq!(v.ctime_to - v.ctime_from, COARSE_LAG_NS + WRITE_SLACK_NS, "{v:?}");
        assert!((v.ctime_from..=v.ctime_to).contains(&now.ctime_ns), "{v:?} {now:?}");
        let clock = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i128;
        let written_at = v.ctime_from + COARSE_LAG_NS;
        assert!((clock - 5_000_000_000..=clock).contains(&written_at), "the clock read before the write: {v:?}");
        assert_eq!(v.key, FileKey { ctime_ns: v.ctime_from, ..key });
        for outside in [v.ctime_from - 1, v.ctime_to + 1] {
            assert_eq!(read(&file, &FileKey { ctime_ns: outside, ..now }).unwrap(), None, "{outside}");
        }
        for inside in [v.ctime_from, v.ctime_to] {
            assert_eq!(read(&file, &FileKey { ctime_ns: inside, ..now }).unwrap(), Some(Digest::of(b"hello")));
        }
    }

    /// A file whose status changed since it was hashed (here a chmod: same content, new ctime)
    /// may have been written meanwhile: no attribute vouches for it.
    #[test]
    fn a_file_whose_ctime_moved_before_the_write_gets_no_attribute() {
        use std::os::unix::fs::PermissionsExt;
        let Some(dir) = xattr_dir() else { return eprintln!("no user xattrs here: skipped") };
        let (path, file) = file_with(dir.path(), b"hello");
        let key = FileKey::of_file(&file).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30)); // past a coarse clock tick
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let now = FileKey::of_file(&file).unwrap();
        assert_eq!((now.content_part(), now.ctime_ns != key.ctime_ns), (key.content_part(), true));
        assert_eq!(write(&file, &key, Digest::of(b"hello")).unwrap(), Written::Changed);
        assert_eq!(read(&file, &now).unwrap(), None);
    }

    /// An attribute left by an earlier version is removed when the file turns out to have
    /// changed.
    #[test]
    fn a_changed_file_loses_its_earlier_attribute() {
        let Some(dir) = xattr_dir() else { return eprintln!("no user xattrs here: skipped") };
        let (path, file) = file_with(dir.path(), b"hello");
        let key = FileKey::of_file(&file).unwrap();
        let Written::Stored(now) = write(&file, &key, Digest::of(b"hello")).unwrap() else { panic!("not stored") };
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"!").unwrap();
        assert_eq!(write(&file, &now, Digest::of(b"hello")).unwrap(), Written::Changed);
        let mut buf = [0u8; 192];
        assert_eq!(rustix::fs::fgetxattr(&file, NAME, &mut buf), Err(rustix::io::Errno::NODATA), "removed");
        remove(&file).expect("removing an absent attribute is fine");
    }

    /// procfs has no user attributes: the probe says so, and so do the other calls.
    #[test]
    fn a_file_system_without_user_attributes_is_told_apart() {
        let Ok(file) = File::open("/proc/self/stat") else { return eprintln!("no procfs here: skipped") };
        let key = FileKey::of_file(&file).unwrap();
        let notsup = Some(rustix::io::Errno::NOTSUP.raw_os_error());
        assert_eq!(probe(&file).unwrap_err().raw_os_error(), notsup);
        assert_eq!(read(&file, &key).unwrap_err().raw_os_error(), notsup);
        assert_eq!(remove(&file).unwrap_err().raw_os_error(), notsup);
        assert_eq!(write(&file, &key, Digest::of(b"")).unwrap_err().raw_os_error(), notsup);
    }

    #[test]
    fn garbage_is_no_digest() {
        for raw in
            [&b""[..], b"ferry-md5/2 dev=1", b"ferry-md5/1 dev=x ino=1 size=1 mtime=1 ctime=1..2 md5=00", b"\xff"]
        {
            assert_eq!(parse(raw), None);
        }
    }

    proptest! {
        #[test]
        fn values_round_trip(dev: u64, ino: u64, size: u64, mtime_ns: i64, from: i64, width in 0i64..1_000_000_000, md5: [u8; 16]) {
            let (from, mtime_ns) = (i128::from(from), i128::from(mtime_ns));
            let v = Value {
                key: FileKey { dev, ino, size, mtime_ns, ctime_ns: from },
                ctime_from: from,
                ctime_to: from + i128::from(width),
                digest: Digest(md5),
            };
            prop_assert_eq!(parse(v.encode().as_bytes()), Some(v));
        }

        #[test]
        fn parsing_never_panics(raw: Vec<u8>) {
            let _ = parse(&raw);
        }
    }
}
