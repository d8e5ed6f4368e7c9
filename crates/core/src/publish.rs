//! Publishing a verified upload under its name: one kernel step decides the outcome, so that what
//! a PUT reports is what happened even when other uploads of the name race it.
//!
//! - Overwrite (`[STORE-5]`, `[PUT-2]`): `renameat2(RENAME_NOREPLACE)` publishes under a free
//!   name and says "created"; if the name is taken by a file, `RENAME_EXCHANGE` swaps the upload
//!   and that file in one step and says "replaced", and the old file, now under the temporary
//!   name, is removed. Of racing overwrites of a new name exactly one is created. A name taken by
//!   anything else is never replaced (`[STORE-8]`).
//! - Create-only (`[STORE-6]`): `link(2)` fails if the name exists, so exactly one racer wins.
//!
//! Where the file system or kernel lacks the rename flags, overwrite falls back to a look, then a
//! plain rename: the file is still published whole, only the reported outcome may be wrong under
//! a race.

use std::io;

use cap_std::fs::Dir;

use crate::store::StoreError;

/// What holds a name in the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holder {
    /// Nothing we can see: the name is free (or cannot be looked up, which publishing reports).
    Nothing,
    /// A regular file: a name of the namespace.
    File,
    /// A directory, a symbolic link (dangling or not), a device…: not in the namespace, and never
    /// replaced (`[STORE-8]`).
    Other,
}

/// What holds `name` in `root`, without following a link (`[NAME-10]`).
pub(crate) fn holder(root: &Dir, name: &str) -> Holder {
    match root.symlink_metadata(name) {
        Ok(meta) if meta.is_file() => Holder::File,
        Ok(_) => Holder::Other,
        Err(_) => Holder::Nothing,
    }
}

/// Publishes `tmp` as `name` for a create-only PUT. Returns nothing: the outcome is always
/// "created".
///
/// # Errors
/// [`StoreError::Exists`] if a file holds the name, [`StoreError::NotAFile`] if anything else
/// does; storage errors.
pub(crate) fn create_only(root: &Dir, tmp: &str, name: &str) -> Result<(), StoreError> {
    // link(2) fails with EEXIST if the name exists: exactly one racer wins (`[STORE-6]`).
    if let Err(e) = root.hard_link(tmp, root, name) {
        if e.kind() == io::ErrorKind::AlreadyExists && holder(root, name) == Holder::Other {
            return Err(StoreError::NotAFile);
        }
        return Err(e.into());
    }
    root.remove_file(tmp)?;
    Ok(())
}

/// Publishes `tmp` as `name` for an overwrite PUT. Returns whether a file was replaced.
///
/// # Errors
/// [`StoreError::NotAFile`] if a directory, link or other non-file holds the name (the upload is
/// then still under `tmp`); storage errors.
pub(crate) fn overwrite(root: &Dir, tmp: &str, name: &str) -> Result<bool, StoreError> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        atomic::overwrite(root, tmp, name)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        overwrite_by_look_then_rename(root, tmp, name)
    }
}

/// Overwrite without the rename flags: look, then rename. Between the two, a racing upload can
/// create the name, and then both report "created"; the file is still one upload, whole.
fn overwrite_by_look_then_rename(root: &Dir, tmp: &str, name: &str) -> Result<bool, StoreError> {
    let before = holder(root, name);
    if before == Holder::Other {
        return Err(StoreError::NotAFile);
    }
    root.rename(tmp, root, name)?;
    Ok(before == Holder::File)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod atomic {
    use cap_std::fs::Dir;
    use rustix::fs::{renameat_with, RenameFlags};
    use rustix::io::Errno;

    use super::{holder, overwrite_by_look_then_rename, Holder};
    use crate::store::StoreError;

    /// How many times an overwrite tries "publish as new, else swap with the file there" before
    /// it settles for a plain rename. Each retry means the name's file vanished between two
    /// system calls: only an outside actor deleting and re-creating it in a loop gets that far.
    const ATTEMPTS: usize = 8;

    /// The errors by which a kernel or file system says it lacks a rename flag.
    fn unsupported(e: Errno) -> bool {
        matches!(e, Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP)
    }

    /// One renameat2 within the root. Both names are single validated path components, so this
    /// stays confined like every cap-std call (`[SEC-2]`), and renameat2 never follows a link.
    fn rename(root: &Dir, from: &str, to: &str, flags: RenameFlags) -> Result<(), Errno> {
        renameat_with(root, from, root, to, flags)
    }

    pub(super) fn overwrite(root: &Dir, tmp: &str, name: &str) -> Result<bool, StoreError> {
        for _ in 0..ATTEMPTS {
            match rename(root, tmp, name, RenameFlags::NOREPLACE) {
                Ok(()) => return Ok(false),
                Err(Errno::EXIST) => {}
                Err(e) if unsupported(e) => return overwrite_by_look_then_rename(root, tmp, name),
                Err(e) => return Err(std::io::Error::from(e).into()),
            }
            match holder(root, name) {
                Holder::Other => return Err(StoreError::NotAFile),
                // Deleted since: publish as new again.
                Holder::Nothing => continue,
                Holder::File => {}
            }
            match rename(root, tmp, name, RenameFlags::EXCHANGE) {
                Ok(()) => {
                    remove_exchanged(root, tmp, name)?;
                    return Ok(true);
                }
                // The file vanished between the look and the swap.
                Err(Errno::NOENT) => continue,
                Err(e) if unsupported(e) => return overwrite_by_look_then_rename(root, tmp, name),
                Err(e) => return Err(std::io::Error::from(e).into()),
            }
        }
        tracing::warn!(name, "the name kept vanishing while an upload was published; renaming over it");
        overwrite_by_look_then_rename(root, tmp, name).map(|_| true)
    }

    /// After an exchange, `tmp` names what held `name`: normally the replaced file, removed now.
    /// If it is not a regular file (someone swapped a directory or link in between the look and
    /// the exchange), a second exchange puts it back, and the upload, under `tmp` again, is
    /// refused (`[STORE-8]`).
    fn remove_exchanged(root: &Dir, tmp: &str, name: &str) -> Result<(), StoreError> {
        match holder(root, tmp) {
            Holder::File => {
                if let Err(e) = root.remove_file(tmp) {
                    // Published all the same; the next start removes the leftover (`[STORE-7]`).
                    tracing::warn!(error = %e, "could not remove the file an upload replaced");
                }
                Ok(())
            }
            Holder::Nothing => Ok(()),
            Holder::Other => {
                rename(root, tmp, name, RenameFlags::EXCHANGE).map_err(std::io::Error::from)?;
                Err(StoreError::NotAFile)
            }
        }
    }
}
