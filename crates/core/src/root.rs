//! The root directory, made ready before a server opens it.
//!
//! A typo in a root path must not grow a tree of directories (`/srv/fery/files` creating
//! `/srv/fery` and everything under it, or, run as root, a new top-level directory): only a
//! built-in default root is created with its parents; a root that was asked for is created only
//! if its parent exists. And a root the server cannot write to would make every upload fail
//! late, as a storage error the client can do nothing about: [`check_writable`] finds that out at
//! start-up, where the operator can.

use std::io;
use std::path::{Path, PathBuf};

use crate::store::TEMP_PREFIX;

/// How much of a missing root [`prepare`] may create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// The root and any missing parents: for a built-in default, which no typo produced.
    WithParents,
    /// Only the root's last component, when its parent exists: for a root that was asked for.
    LastComponent,
}

/// A root that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    /// Something other than a directory holds the root's path.
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    /// The root is missing, and so is the directory it would be created in.
    #[error("{root} does not exist, and neither does its parent {parent}: only a root's last component is created")]
    MissingParent { root: PathBuf, parent: PathBuf },
    /// Creating the root, or one of its parents, failed.
    #[error("cannot create the directory {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The root's state cannot be read.
    #[error("cannot inspect {path}")]
    Inspect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file cannot be created in the root (or the probe cannot be removed again).
    #[error("{root} is not writable: {operation} {probe} failed")]
    NotWritable {
        root: PathBuf,
        /// What was tried: "creating" or "removing".
        operation: &'static str,
        probe: String,
        #[source]
        source: io::Error,
    },
}

/// Makes sure `root` is a directory, creating what `create` allows. Returns the directories
/// created, outermost first (empty if the root existed), for the caller to report.
///
/// # Errors
/// The path holds something other than a directory; the root is missing and `create` forbids
/// creating it; a directory cannot be created.
pub fn prepare(root: &Path, create: Create) -> Result<Vec<PathBuf>, RootError> {
    match std::fs::metadata(root) {
        Ok(meta) if meta.is_dir() => return Ok(Vec::new()),
        Ok(_) => return Err(RootError::NotADirectory(root.to_owned())),
        // Missing, or under a file (ENOTDIR): the walk up below finds which.
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {}
        Err(source) => return Err(RootError::Inspect { path: root.to_owned(), source }),
    }
    // The components to create, innermost first; `Path::parent` of a relative one-component
    // path is "", which is the current directory.
    let mut missing = vec![root.to_owned()];
    let mut at = root;
    while let Some(parent) = at.parent().filter(|p| !p.as_os_str().is_empty()) {
        match std::fs::metadata(parent) {
            Ok(meta) if meta.is_dir() => break,
            Ok(_) => return Err(RootError::NotADirectory(parent.to_owned())),
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {}
            Err(source) => return Err(RootError::Inspect { path: parent.to_owned(), source }),
        }
        if create == Create::LastComponent {
            return Err(RootError::MissingParent { root: root.to_owned(), parent: parent.to_owned() });
        }
        missing.push(parent.to_owned());
        at = parent;
    }
    missing.reverse();
    for path in &missing {
        match std::fs::create_dir(path) {
            // Made meanwhile by someone else: not ours to report, but there.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {}
            Err(source) => return Err(RootError::Create { path: path.clone(), source }),
            Ok(()) => {}
        }
    }
    Ok(missing)
}

/// Checks that files can be created and removed in `root`, by creating and removing a probe: an
/// empty file under the temporary-upload prefix, which LIST never shows and a later start-up
/// removes if this process dies in between (`[STORE-7]`).
///
/// # Errors
/// [`RootError::NotWritable`], with the operation that failed and the probe's name.
pub fn check_writable(root: &Path) -> Result<(), RootError> {
    let probe = format!("{TEMP_PREFIX}probe-writable-{}", std::process::id());
    let path = root.join(&probe);
    let fail =
        |operation, source| RootError::NotWritable { root: root.to_owned(), operation, probe: probe.clone(), source };
    // A probe of the same name can only be a leftover of a process with our id, long gone.
    let _ = std::fs::remove_file(&path);
    std::fs::OpenOptions::new().write(true).create_new(true).open(&path).map_err(|e| fail("creating", e))?;
    std::fs::remove_file(&path).map_err(|e| fail("removing", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_root_is_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(prepare(dir.path(), Create::LastComponent).unwrap(), Vec::<PathBuf>::new());
        check_writable(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the probe is removed");
    }

    #[test]
    fn a_root_that_was_asked_for_is_created_only_under_an_existing_parent() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("files");
        assert_eq!(prepare(&root, Create::LastComponent).unwrap(), vec![root.clone()]);
        assert!(root.is_dir());

        let typo = dir.path().join("a/typo/path");
        match prepare(&typo, Create::LastComponent) {
            Err(RootError::MissingParent { root, parent }) => {
                assert_eq!((root, parent), (typo.clone(), dir.path().join("a/typo")));
            }
            other => panic!("{other:?}"),
        }
        assert!(!dir.path().join("a").exists(), "nothing is created");
    }

    #[test]
    fn a_default_root_is_created_with_its_parents() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("a/b/c");
        let created = prepare(&root, Create::WithParents).unwrap();
        assert_eq!(created, vec![dir.path().join("a"), dir.path().join("a/b"), root.clone()]);
        assert!(root.is_dir());
    }

    #[test]
    fn a_file_in_the_way_is_not_a_root() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(prepare(&file, Create::WithParents), Err(RootError::NotADirectory(p)) if p == file));
        assert!(
            matches!(prepare(&file.join("root"), Create::WithParents), Err(RootError::NotADirectory(p)) if p == file)
        );
    }

    #[test]
    fn a_relative_root_in_the_current_directory_has_an_existing_parent() {
        // "name" has the parent "": the current directory, which exists. Nothing is created here:
        // the path names a directory that exists in every test process's current directory.
        assert_eq!(prepare(Path::new("src"), Create::LastComponent).unwrap(), Vec::<PathBuf>::new());
    }
}
