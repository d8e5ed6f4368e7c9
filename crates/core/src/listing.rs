//! One directory listing shared by every LIST while nothing has changed.
//!
//! A listing costs a `readdir` and an `fstatat` per file, and a client that pipelines LISTs can
//! ask for one with every byte it sends. A snapshot is reused while the store has made no change
//! (uploads, deletes, new digests bump a generation), the root directory's own times are the
//! same (files added, removed or renamed by hand change them), and it is younger than
//! [`MAX_AGE`] (a file edited in place by hand changes neither). Connections stream the shared
//! entries (`[RES-3]`): a thousand clients listing a large root hold one copy, not a thousand.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_proto::Entry;

/// How long a snapshot may answer LISTs: how late a file edited in place by hand, at the same
/// name, shows its new size and time.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// What the root directory's metadata says of its entries: a name added, removed or renamed
/// changes its modification and status-change times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirStamp {
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

#[derive(Debug)]
struct Snapshot {
    generation: u64,
    stamp: DirStamp,
    taken: Instant,
    entries: Arc<[Entry]>,
}

/// The shared snapshot and the store's change counter.
#[derive(Debug, Default)]
pub struct ListingCache {
    generation: AtomicU64,
    snapshot: Mutex<Option<Snapshot>>,
}

impl ListingCache {
    /// The store changed the namespace or learned a digest: the next LIST reads the directory.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The snapshot if it still holds for `stamp` at `now`; otherwise `build`s a new one (without
    /// holding the lock: a slow directory read never makes other connections wait on it) and
    /// keeps it.
    ///
    /// # Errors
    /// `build` failed.
    pub fn get_or_build(
        &self,
        stamp: DirStamp,
        now: Instant,
        build: impl FnOnce() -> io::Result<Vec<Entry>>,
    ) -> io::Result<Arc<[Entry]>> {
        let generation = self.generation.load(Ordering::SeqCst);
        if let Some(entries) = self.current(generation, stamp, now) {
            return Ok(entries);
        }
        let entries: Arc<[Entry]> = build()?.into();
        *self.lock() = Some(Snapshot { generation, stamp, taken: now, entries: entries.clone() });
        Ok(entries)
    }

    /// The snapshot if it still holds for `stamp` at `now`, without reading the directory: what
    /// an engine may answer a LIST with where it must not block.
    pub fn get(&self, stamp: DirStamp, now: Instant) -> Option<Arc<[Entry]>> {
        self.current(self.generation.load(Ordering::SeqCst), stamp, now)
    }

    fn current(&self, generation: u64, stamp: DirStamp, now: Instant) -> Option<Arc<[Entry]>> {
        let snapshot = self.lock();
        let s = snapshot.as_ref()?;
        (s.generation == generation && s.stamp == stamp && now.saturating_duration_since(s.taken) < MAX_AGE)
            .then(|| s.entries.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Snapshot>> {
        // A snapshot is replaced whole: a panic elsewhere cannot leave it half-written.
        self.snapshot.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> Entry {
        Entry { name: ferry_proto::Name::parse(name).unwrap(), size: 1, mtime_ms: 0, md5: None }
    }

    #[test]
    fn reused_until_a_change_a_new_stamp_or_age() {
        let cache = ListingCache::default();
        let stamp = DirStamp { mtime_ns: 1, ctime_ns: 1 };
        let t0 = Instant::now();
        let mut builds = 0;
        let mut list = |stamp, now| {
            cache
                .get_or_build(stamp, now, || {
                    builds += 1;
                    Ok(vec![entry("a")])
                })
                .unwrap()
        };
        let first = list(stamp, t0);
        let again = list(stamp, t0 + Duration::from_millis(10));
        assert!(Arc::ptr_eq(&first, &again), "shared while nothing changed");
        assert!(cache.get(stamp, t0 + Duration::from_millis(10)).is_some_and(|e| Arc::ptr_eq(&e, &first)));
        assert!(cache.get(DirStamp { mtime_ns: 2, ctime_ns: 1 }, t0).is_none(), "only for its stamp");
        assert!(cache.get(stamp, t0 + MAX_AGE).is_none(), "only while young");
        list(DirStamp { mtime_ns: 2, ctime_ns: 2 }, t0 + Duration::from_millis(20));
        list(DirStamp { mtime_ns: 2, ctime_ns: 2 }, t0 + MAX_AGE * 2);
        assert_eq!(builds, 3, "a new stamp and an old snapshot each read the directory");
        cache.invalidate();
        let mut rebuilt = false;
        cache
            .get_or_build(DirStamp { mtime_ns: 2, ctime_ns: 2 }, t0 + MAX_AGE * 2, || {
                rebuilt = true;
                Ok(vec![])
            })
            .unwrap();
        assert!(rebuilt, "a store change reads the directory again");
    }
}
