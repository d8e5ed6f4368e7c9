//! The files a load asks for, and what each reply must carry: name, size and MD5.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use ferry_proto::{Digest, Name};

/// One file the server holds, as the load generator expects to receive it.
#[derive(Debug, Clone)]
pub struct Expected {
    /// The file's name: a valid Ferry name that also needs no escaping in an HTTP path.
    pub name: String,
    /// Its size in bytes: a reply of any other length is wrong.
    pub size: u64,
    /// The MD5 of its content, computed here from the bytes on disk, never taken from a server.
    pub digest: Digest,
    /// Its content, for files of at most [`CONTENT_KEPT_MAX`] bytes (`--verify content`).
    pub content: Option<Box<[u8]>>,
}

/// Files up to this size have their content kept in memory, to compare replies with.
pub const CONTENT_KEPT_MAX: u64 = 1 << 20;

impl Expected {
    pub fn new(name: String, data: &[u8]) -> Self {
        let size = data.len() as u64;
        let content = (size <= CONTENT_KEPT_MAX).then(|| data.into());
        Self { name, size, digest: Digest::of(data), content }
    }
}

/// The set of files a load picks names from.
#[derive(Debug, Clone, Default)]
pub struct FileSet {
    pub files: Vec<Expected>,
}

impl FileSet {
    /// Writes `count` files of `size` random bytes into `dir`, named `f0000.bin` and up. Files
    /// and directory are made readable by all: nginx's workers run as another user.
    ///
    /// # Errors
    /// A file cannot be written.
    pub fn create(dir: &Path, count: usize, size: usize, seed: u64) -> Result<Self> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut data = vec![0u8; size];
        let mut files = Vec::with_capacity(count);
        for i in 0..count {
            rng.fill(&mut data);
            let name = format!("f{i:04}.bin");
            let path = dir.join(&name);
            let mut f = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
            f.write_all(&data)?;
            f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
            files.push(Expected::new(name, &data));
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        Ok(Self { files })
    }

    /// Reads the regular files of `dir` a load can ask for (see [`usable_name`]), the first
    /// `limit` in name order, and hashes each.
    ///
    /// # Errors
    /// The directory cannot be read, or holds no usable file.
    pub fn scan(dir: &Path, limit: usize) -> Result<Self> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            if let Some(name) = entry.file_name().to_str().filter(|n| usable_name(n)) {
                names.push(name.to_owned());
            }
        }
        names.sort();
        names.truncate(limit);
        if names.is_empty() {
            bail!("{} holds no file a load can ask for", dir.display());
        }
        let mut files = Vec::with_capacity(names.len());
        for name in names {
            let data = std::fs::read(dir.join(&name))?;
            files.push(Expected::new(name, &data));
        }
        Ok(Self { files })
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Whether every file's content is held, for `--verify content`.
    pub fn has_content(&self) -> bool {
        self.files.iter().all(|f| f.content.is_some())
    }

    pub fn get(&self, i: u32) -> &Expected {
        &self.files[i as usize]
    }
}

/// A name both protocols can carry as it is: a valid Ferry name made only of letters, digits,
/// `.`, `_` and `-` (so an HTTP path needs no escaping), and not hidden (ferryd keeps its digest
/// index in a dot-file of its root).
pub fn usable_name(name: &str) -> bool {
    !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && Name::parse(name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_finds_what_create_wrote_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let made = FileSet::create(dir.path(), 3, 100, 7).unwrap();
        std::fs::write(dir.path().join(".ferry-digests"), b"x").unwrap();
        std::fs::write(dir.path().join("with space"), b"x").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let found = FileSet::scan(dir.path(), 10).unwrap();
        assert_eq!(found.len(), 3);
        for (a, b) in made.files.iter().zip(&found.files) {
            assert_eq!((&a.name, a.size, a.digest), (&b.name, b.size, b.digest));
        }
        assert_eq!(FileSet::scan(dir.path(), 2).unwrap().len(), 2);
    }
}
