//! Digests in a small embedded database (redb), one record per inode.
//!
//! For file systems without user extended attributes (some tmpfs and network mounts), files the
//! server may not annotate (owned by another user), and the client, which must not annotate the
//! files of the user it works for. A record is keyed by device and inode and holds the rest of
//! the [`FileKey`] with the digest, so a file has at most one record, replaced when it changes;
//! [`Index::retain`] drops the records of files that are gone.
//!
//! Writes are not durable one by one ([`Index::insert`]): losing the last ones in a crash costs
//! a re-hash, not a wrong digest. [`Index::flush`] makes them durable; a server calls it now and
//! then and when it stops.

use std::path::Path;

use ferry_proto::Digest;
use redb::{
    ConcurrencyMode, Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};

use crate::key::FileKey;

/// (device << 64 | inode) → (size, mtime_ns, ctime_ns, md5).
const DIGESTS: TableDefinition<u128, (u64, i128, i128, [u8; 16])> = TableDefinition::new("ferry-digests-v1");

/// Why the index could not be used. A digest index is a cache: callers log this and go on
/// without it, hashing instead.
#[derive(Debug, thiserror::Error)]
#[error("digest index: {0}")]
pub struct IndexError(#[from] redb::Error);

impl IndexError {
    /// Whether another handle (another process, or one this process is still closing) holds the
    /// index: opening it again a moment later may succeed.
    pub fn is_held_elsewhere(&self) -> bool {
        matches!(self.0, redb::Error::DatabaseAlreadyOpen)
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for IndexError {
            fn from(e: $t) -> Self {
                Self(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// A digest index in one file.
pub struct Index {
    db: Database,
    /// At most this many records; when full, the index is emptied rather than grown (a full
    /// index costs re-hashing, never unbounded disk).
    max_entries: u64,
    /// How each write is committed: [`Durability::None`] for the one process that owns the
    /// index (made durable by [`Index::flush`]), [`Durability::Immediate`] where several
    /// processes share it, since a non-durable commit would live in this process only.
    durability: Durability,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").field("max_entries", &self.max_entries).finish_non_exhaustive()
    }
}

fn record_id(key: &FileKey) -> u128 {
    (u128::from(key.dev) << 64) | u128::from(key.ino)
}

impl Index {
    /// Opens the index at `path` for this process alone (a server's), creating the file (not its
    /// directory) if it is missing. Writes are made durable by [`Self::flush`].
    ///
    /// # Errors
    /// The file cannot be created or opened, is open in another process, is not a digest index,
    /// or is damaged beyond redb's repair.
    pub fn open(path: &Path, max_entries: u64) -> Result<Self, IndexError> {
        Self::open_in(path, max_entries, ConcurrencyMode::ExclusiveWriter, Durability::None)
    }

    /// Opens the index at `path` to share with other processes (clients run side by side),
    /// creating the file (not its directory) if it is missing. Every write is durable at once.
    ///
    /// # Errors
    /// As [`Self::open`], except that other processes may have it open.
    pub fn open_shared(path: &Path, max_entries: u64) -> Result<Self, IndexError> {
        Self::open_in(path, max_entries, ConcurrencyMode::MultiWriter, Durability::Immediate)
    }

    fn open_in(
        path: &Path,
        max_entries: u64,
        mode: ConcurrencyMode,
        durability: Durability,
    ) -> Result<Self, IndexError> {
        let db = Database::builder().set_concurrency_mode(mode).create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(DIGESTS)?;
        txn.commit()?;
        Ok(Self { db, max_entries: max_entries.max(1), durability })
    }

    /// The digest recorded for exactly this version of the file, if any.
    ///
    /// # Errors
    /// The database could not be read.
    pub fn get(&self, key: &FileKey) -> Result<Option<Digest>, IndexError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DIGESTS)?;
        let Some(record) = table.get(record_id(key))? else { return Ok(None) };
        let (size, mtime_ns, ctime_ns, md5) = record.value();
        let same = size == key.size && mtime_ns == key.mtime_ns && ctime_ns == key.ctime_ns;
        Ok(same.then_some(Digest(md5)))
    }

    /// Records the digest of this version of the file, replacing what was recorded for its inode.
    /// Not durable until [`Self::flush`].
    ///
    /// # Errors
    /// The database could not be written.
    pub fn insert(&self, key: &FileKey, digest: Digest) -> Result<(), IndexError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(self.durability)?;
        {
            let mut table = txn.open_table(DIGESTS)?;
            let id = record_id(key);
            if table.len()? >= self.max_entries && table.get(id)?.is_none() {
                tracing::info!(records = self.max_entries, "the digest index is full: emptied");
                table.retain(|_, _| false)?;
            }
            table.insert(id, (key.size, key.mtime_ns, key.ctime_ns, digest.0))?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Forgets what is recorded for this inode.
    ///
    /// # Errors
    /// The database could not be written.
    pub fn remove(&self, dev: u64, ino: u64) -> Result<(), IndexError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(self.durability)?;
        txn.open_table(DIGESTS)?.remove(record_id(&FileKey { dev, ino, size: 0, mtime_ns: 0, ctime_ns: 0 }))?;
        txn.commit()?;
        Ok(())
    }

    /// Keeps only the records of the inodes `keep` accepts (given device and inode), and returns
    /// how many were dropped: how a server forgets files that are gone.
    ///
    /// # Errors
    /// The database could not be written.
    pub fn retain(&self, mut keep: impl FnMut(u64, u64) -> bool) -> Result<u64, IndexError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(self.durability)?;
        let dropped;
        {
            let mut table = txn.open_table(DIGESTS)?;
            let before = table.len()?;
            table.retain(|id, _| keep((id >> 64) as u64, id as u64))?;
            dropped = before - table.len()?;
        }
        txn.commit()?;
        Ok(dropped)
    }

    /// How many records the index holds.
    ///
    /// # Errors
    /// The database could not be read.
    pub fn len(&self) -> Result<u64, IndexError> {
        Ok(self.db.begin_read()?.open_table(DIGESTS)?.len()?)
    }

    /// Whether the index holds no record.
    ///
    /// # Errors
    /// The database could not be read.
    pub fn is_empty(&self) -> Result<bool, IndexError> {
        Ok(self.len()? == 0)
    }

    /// Makes every earlier write durable.
    ///
    /// # Errors
    /// The database could not be written.
    pub fn flush(&self) -> Result<(), IndexError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ino: u64, size: u64) -> FileKey {
        FileKey { dev: 7, ino, size, mtime_ns: 1_700_000_000_123_456_789, ctime_ns: 1_700_000_001_000_000_001 }
    }

    #[test]
    fn a_digest_is_found_only_for_the_exact_version_it_was_recorded_for() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("d.redb"), 10).unwrap();
        let k = key(1, 5);
        index.insert(&k, Digest::of(b"hello")).unwrap();
        assert_eq!(index.get(&k).unwrap(), Some(Digest::of(b"hello")));
        for changed in [
            FileKey { size: 6, ..k },
            FileKey { mtime_ns: k.mtime_ns + 1, ..k },
            FileKey { ctime_ns: k.ctime_ns + 1, ..k },
            FileKey { ino: 2, ..k },
            FileKey { dev: 8, ..k },
        ] {
            assert_eq!(index.get(&changed).unwrap(), None, "{changed:?}");
        }
    }

    #[test]
    fn records_survive_reopening_once_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.redb");
        {
            let index = Index::open(&path, 10).unwrap();
            index.insert(&key(1, 5), Digest::of(b"a")).unwrap();
            index.flush().unwrap();
        }
        let index = Index::open(&path, 10).unwrap();
        assert_eq!(index.get(&key(1, 5)).unwrap(), Some(Digest::of(b"a")));
    }

    #[test]
    fn a_new_version_replaces_the_record_of_its_inode() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("d.redb"), 10).unwrap();
        index.insert(&key(1, 5), Digest::of(b"a")).unwrap();
        index.insert(&key(1, 6), Digest::of(b"b")).unwrap();
        assert_eq!(index.len().unwrap(), 1);
        assert_eq!(index.get(&key(1, 5)).unwrap(), None);
        assert!(!index.is_empty().unwrap());
        index.remove(7, 1).unwrap();
        assert!(index.is_empty().unwrap());
        assert_eq!(index.len().unwrap(), 0);
    }

    #[test]
    fn a_full_index_is_emptied_but_a_known_inode_is_replaced_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("d.redb"), 2).unwrap();
        index.insert(&key(1, 1), Digest::of(b"1")).unwrap();
        index.insert(&key(2, 2), Digest::of(b"2")).unwrap();
        // Full, but inode 2 is there already: nothing is dropped.
        index.insert(&key(2, 3), Digest::of(b"3")).unwrap();
        assert_eq!(index.get(&key(1, 1)).unwrap(), Some(Digest::of(b"1")));
        assert_eq!(index.len().unwrap(), 2);
        // Full, and inode 3 is new: emptied, then recorded.
        index.insert(&key(3, 3), Digest::of(b"4")).unwrap();
        assert_eq!(index.len().unwrap(), 1);
        assert_eq!(index.get(&key(3, 3)).unwrap(), Some(Digest::of(b"4")));
    }

    #[test]
    fn retain_drops_the_records_of_inodes_that_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("d.redb"), 10).unwrap();
        for ino in 1..=5 {
            index.insert(&key(ino, ino), Digest::of(&[ino as u8])).unwrap();
        }
        index.insert(&FileKey { dev: 8, ..key(2, 2) }, Digest::of(b"dev 8")).unwrap();
        assert_eq!(index.len().unwrap(), 6, "inode 2 of device 8 is another file");
        let dropped = index.retain(|dev, ino| dev == 7 && ino % 2 == 0).unwrap();
        assert_eq!(dropped, 4, "inodes 1, 3, 5 of device 7, and device 8's");
        assert_eq!(index.len().unwrap(), 2);
        assert_eq!(index.get(&key(2, 2)).unwrap(), Some(Digest::of(&[2])));
        assert_eq!(index.get(&key(1, 1)).unwrap(), None);
    }

    #[test]
    fn shared_handles_on_one_file_see_each_others_records() {
        // A client run in two terminals at once.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.redb");
        let a = Index::open_shared(&path, 10).unwrap();
        let b = Index::open_shared(&path, 10).unwrap();
        a.insert(&key(1, 5), Digest::of(b"a")).unwrap();
        assert_eq!(b.get(&key(1, 5)).unwrap(), Some(Digest::of(b"a")));
    }

    #[test]
    fn a_servers_index_is_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.redb");
        let _owner = Index::open(&path, 10).unwrap();
        let refused = Index::open(&path, 10).expect_err("a second server on the same index is refused");
        assert!(refused.is_held_elsewhere(), "{refused}");
    }

    /// What is recorded is durable once flushed: a copy of the file taken then (as a crash would
    /// leave it) holds it.
    #[test]
    fn a_flush_makes_the_records_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.redb");
        let index = Index::open(&path, 10).unwrap();
        index.insert(&key(1, 5), Digest::of(b"a")).unwrap();
        index.flush().unwrap();
        let copy = dir.path().join("copy.redb");
        std::fs::copy(&path, &copy).unwrap();
        assert_eq!(Index::open(&copy, 10).unwrap().get(&key(1, 5)).unwrap(), Some(Digest::of(b"a")));
    }

    #[test]
    fn its_debug_form_says_what_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("d.redb"), 10).unwrap();
        assert_eq!(format!("{index:?}"), "Index { max_entries: 10, .. }");
    }
}
