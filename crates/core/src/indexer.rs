//! Background hashing: every file in the root gets its digest before anyone asks for it.
//!
//! The frame carries a file's MD5 before its data, so a GET of a file whose digest is unknown
//! waits while the whole file is read. The indexer spares clients that wait: at start it goes
//! through the root, reads back the digests kept across restarts ([`crate::digests::persist`])
//! and queues the files that have none; while it runs, it watches the root with inotify and queues
//! each file that appears or changes, once it has been quiet for [`IndexerSettings::settle`] (or
//! at once when its writer closes it or it is renamed into the root). The watch asks only for
//! those events: not for opens and reads, which every GET makes. A few threads of lowered
//! priority hash the queue. A GET of a file whose hash is under way joins that hash
//! ([`crate::digests::HashFollow`]) instead of reading the file a second time.
//!
//! Everything here is bounded: the queue and the set of files waiting to settle hold at most
//! [`MAX_QUEUED`] names each (past that, a full rescan replaces them), and events are read through
//! a buffer of [`EVENT_BUF`] bytes; the kernel's own queue is bounded (`max_queued_events`), and
//! its overflow, too, means a rescan.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferry_proto::Name;
use tracing::{debug, info, warn};

use crate::digests::Begun;
use crate::store::{Store, TEMP_PREFIX};
use crate::Server;

/// Names queued for hashing, or waiting to settle, at most (each). Past that the root is scanned
/// again once the queue has drained, which finds the same files without holding their names.
pub const MAX_QUEUED: usize = 100_000;
/// Bytes of inotify events read at once.
pub const EVENT_BUF: usize = 4096;
/// How often the dispatcher wakes to move settled files to the queue.
const TICK: Duration = Duration::from_millis(100);
/// How often the index is made durable while the indexer runs.
const FLUSH_EVERY: Duration = Duration::from_secs(30);
/// The nice value of the hashing threads: clients are served first.
const BACKGROUND_NICE: i32 = 10;

/// How the indexer works.
#[derive(Debug, Clone)]
pub struct IndexerSettings {
    /// Files hashed at once in the background (besides GETs' own hashes, `[SEC-3]`).
    pub threads: usize,
    /// How long a changed file must be left alone before it is hashed: a file still being
    /// copied in is hashed once, when the copy ends.
    pub settle: Duration,
    /// How often progress is logged while hashing goes on.
    pub progress_every: Duration,
}

impl Default for IndexerSettings {
    fn default() -> Self {
        Self { threads: 1, settle: Duration::from_secs(1), progress_every: Duration::from_secs(10) }
    }
}

/// The running indexer. Dropping it (or [`Indexer::stop`]) stops it: a hash in progress is
/// abandoned, and the index is flushed.
#[derive(Debug)]
pub struct Indexer {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    store: Arc<Store>,
    settings: IndexerSettings,
    stop: AtomicBool,
    state: Mutex<State>,
    /// Signalled when work is queued, a file is done, or the indexer stops.
    changed: Condvar,
}

/// What the hashing threads share with the dispatcher.
#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Name>,
    queued: HashSet<Name>,
    /// Files being hashed now.
    busy: usize,
    /// The queue overflowed: scan again once it has drained.
    rescan: bool,
    round: Round,
}

/// Progress since the queue was last empty.
#[derive(Debug, Default)]
struct Round {
    started: Option<Instant>,
    files: u64,
    bytes: u64,
    files_done: u64,
    bytes_done: u64,
}

impl Indexer {
    /// Starts indexing the server's root and watching it. The indexer stops by itself when the
    /// server's shutdown begins: draining connections need the disk more.
    ///
    /// # Errors
    /// A thread could not be started. A watcher that cannot be set up is only logged: files are
    /// then hashed at start and by GETs.
    pub fn start(server: &Server, settings: IndexerSettings) -> std::io::Result<Self> {
        let indexer = Self::start_on(server.store.clone(), &server.settings.root, settings)?;
        let shared = indexer.shared.clone();
        server.on_shutdown(move || {
            shared.stop.store(true, Ordering::SeqCst);
            shared.changed.notify_all();
        });
        Ok(indexer)
    }

    /// Starts indexing `store`, whose root is at `root_path`, and watching it.
    ///
    /// # Errors
    /// A thread could not be started.
    pub fn start_on(store: Arc<Store>, root_path: &Path, settings: IndexerSettings) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            store,
            settings: IndexerSettings { threads: settings.threads.max(1), ..settings },
            stop: AtomicBool::new(false),
            state: Mutex::default(),
            changed: Condvar::new(),
        });
        let watch = Watch::new(root_path);
        let mut threads = Vec::new();
        for i in 0..shared.settings.threads {
            let s = shared.clone();
            threads.push(std::thread::Builder::new().name(format!("ferry-hash-bg-{i}")).spawn(move || s.hash_queue())?);
        }
        let s = shared.clone();
        threads.push(std::thread::Builder::new().name("ferry-indexer".into()).spawn(move || s.dispatch(watch))?);
        Ok(Self { shared, threads })
    }

    /// Blocks until `done` holds or `deadline` passes, checking again whenever the indexer
    /// finishes a file. Whether it held.
    pub fn wait_until(&self, deadline: Instant, mut done: impl FnMut(&Store) -> bool) -> bool {
        let mut state = self.shared.lock();
        loop {
            if done(&self.shared.store) {
                return true;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else { return false };
            state = self.shared.changed.wait_timeout(state, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// Stops the indexer and waits for its threads; the index is flushed.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.shared.store.flush_digests();
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The watch on the root: inotify for files closed after writing, renamed in, or whose metadata
/// changed (`touch`, a new mtime). Not opens or reads: every GET opens a file.
struct Watch {
    #[cfg(target_os = "linux")]
    inotify: Option<inotify::Inotify>,
}

/// What one wait on the watch saw.
#[derive(Debug, Default)]
struct Seen {
    /// Files closed after writing, or renamed into the root: ready now.
    ready: Vec<Name>,
    /// Files whose metadata changed: ready once they settle.
    touched: Vec<Name>,
    /// The kernel's queue overflowed: events were lost.
    overflowed: bool,
}

impl Watch {
    fn new(root: &Path) -> Self {
        #[cfg(target_os = "linux")]
        {
            use inotify::{Inotify, WatchMask};
            let mask = WatchMask::CLOSE_WRITE | WatchMask::MOVED_TO | WatchMask::ATTRIB | WatchMask::ONLYDIR;
            let inotify = Inotify::init().and_then(|i| {
                i.watches().add(root, mask)?;
                Ok(i)
            });
            match inotify {
                Ok(i) => Self { inotify: Some(i) },
                Err(e) => {
                    warn!(error = %e, "cannot watch the root: files copied in while the server runs are hashed by their first GET");
                    Self { inotify: None }
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = root;
            Self {}
        }
    }

    /// Waits up to `wait` for events; `None` if there is no watch (the caller waits by itself).
    fn wait(&mut self, wait: Duration) -> Option<Seen> {
        #[cfg(target_os = "linux")]
        {
            use inotify::EventMask;
            use rustix::event::{poll, PollFd, PollFlags, Timespec};
            let inotify = self.inotify.as_mut()?;
            let timeout = Timespec::try_from(wait).unwrap_or(Timespec { tv_sec: 0, tv_nsec: 100_000_000 });
            let mut fds = [PollFd::new(&*inotify, PollFlags::IN)];
            let mut seen = Seen::default();
            if !matches!(poll(&mut fds, Some(&timeout)), Ok(n) if n > 0) {
                return Some(seen);
            }
            let mut buf = [0u8; EVENT_BUF];
            let events = match inotify.read_events(&mut buf) {
                Ok(events) => events,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(seen),
                Err(e) => {
                    debug!(error = %e, "reading the root's events failed: rescanning");
                    seen.overflowed = true;
                    return Some(seen);
                }
            };
            for event in events {
                if event.mask.contains(EventMask::Q_OVERFLOW) {
                    seen.overflowed = true;
                    continue;
                }
                let Some(name) = event.name.and_then(|n| n.to_str()) else { continue };
                // Our own temporary files and index are not the namespace's.
                if name.starts_with(".ferry") || name.starts_with(TEMP_PREFIX) {
                    continue;
                }
                let Ok(name) = Name::new(name.as_bytes(), u32::MAX) else { continue };
                if event.mask.intersects(EventMask::CLOSE_WRITE | EventMask::MOVED_TO) {
                    seen.ready.push(name);
                } else {
                    seen.touched.push(name);
                }
            }
            Some(seen)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = wait;
            None
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The dispatcher: the first scan, then the watch's events, settled files to the queue,
    /// rescans, progress and flushes.
    fn dispatch(&self, mut watch: Watch) {
        self.scan();
        let mut settling: HashMap<Name, Instant> = HashMap::new();
        let mut last_flush = Instant::now();
        let mut last_progress = Instant::now();
        while !self.stopping() {
            let mut overflowed = false;
            match watch.wait(TICK) {
                Some(seen) => {
                    overflowed = seen.overflowed;
                    let now = Instant::now();
                    let ready = now.checked_sub(self.settings.settle).unwrap_or(now);
                    let events =
                        seen.ready.into_iter().map(|n| (n, ready)).chain(seen.touched.into_iter().map(|n| (n, now)));
                    for (name, at) in events {
                        if settling.len() >= MAX_QUEUED && !settling.contains_key(&name) {
                            overflowed = true;
                            continue;
                        }
                        settling.insert(name, at);
                    }
                }
                // No watch: only the first scan, rescans and GETs find files.
                None => {
                    let state = self.lock();
                    let _ = self.changed.wait_timeout(state, TICK);
                }
            }
            let now = Instant::now();
            let settle = self.settings.settle;
            let ready: Vec<Name> =
                settling.iter().filter(|(_, t)| now.duration_since(**t) >= settle).map(|(n, _)| n.clone()).collect();
            for name in ready {
                settling.remove(&name);
                self.enqueue(name, None);
            }
            let rescan = {
                let mut state = self.lock();
                let due = overflowed || (state.rescan && state.queue.is_empty() && state.busy == 0);
                if due {
                    state.rescan = false;
                }
                due
            };
            if rescan {
                settling.clear();
                self.scan();
            }
            if now.duration_since(last_progress) >= self.settings.progress_every {
                last_progress = now;
                self.log_progress();
            }
            if now.duration_since(last_flush) >= FLUSH_EVERY {
                last_flush = now;
                self.store.flush_digests();
            }
        }
    }

    /// Goes through the root: digests kept across restarts are read back, files without one are
    /// queued, and the index forgets files that are gone.
    fn scan(&self) {
        let started = Instant::now();
        let files = match self.store.scan() {
            Ok(files) => files,
            Err(e) => return warn!(error = %e, "cannot read the root to hash its files"),
        };
        let mut live = HashSet::with_capacity(files.len());
        let (mut known, mut queued) = (0u64, 0u64);
        for (name, key) in files {
            if self.stopping() {
                return;
            }
            live.insert((key.dev, key.ino));
            if self.store.digests().get(&key).is_some() {
                known += 1;
                continue;
            }
            let Ok(opened) = self.store.open_file(&name) else { continue };
            if self.store.cached_digest(&opened).is_some() {
                known += 1;
            } else if self.enqueue(name, Some(opened.size)) {
                queued += 1;
            }
        }
        self.store.persist().prune(|dev, ino| live.contains(&(dev, ino)));
        info!(
            files = known + queued,
            digests_known = known,
            to_hash = queued,
            ms = started.elapsed().as_millis() as u64,
            "scanned the root"
        );
    }

    /// Queues a file for hashing, given its size if known to need it (a scan's), else checked
    /// first (a watcher's: the event may be the file's new digest xattr). Whether it was queued
    /// (needed, not queued already, and within the bound).
    fn enqueue(&self, name: Name, size: Option<u64>) -> bool {
        let size = match size {
            Some(size) => size,
            None => match self.store.open_file(&name) {
                Ok(opened) if self.store.cached_digest(&opened).is_none() => opened.size,
                _ => return false,
            },
        };
        let mut state = self.lock();
        if state.queued.contains(&name) {
            return false;
        }
        if state.queue.len() >= MAX_QUEUED {
            state.rescan = true;
            return false;
        }
        state.queued.insert(name.clone());
        state.queue.push_back(name);
        let round = &mut state.round;
        round.started.get_or_insert_with(Instant::now);
        round.files += 1;
        round.bytes += size;
        drop(state);
        self.changed.notify_all();
        true
    }

    /// A hashing thread: takes files from the queue until the indexer stops.
    fn hash_queue(&self) {
        lower_priority();
        loop {
            let name = {
                let mut state = self.lock();
                loop {
                    if self.stopping() {
                        return;
                    }
                    if let Some(name) = state.queue.pop_front() {
                        state.queued.remove(&name);
                        state.busy += 1;
                        break name;
                    }
                    state = self.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
                }
            };
            let bytes = self.hash_one(&name);
            let mut state = self.lock();
            state.busy -= 1;
            state.round.files_done += 1;
            state.round.bytes_done += bytes;
            if state.queue.is_empty() && state.busy == 0 {
                finish_round(&mut state.round);
            }
            drop(state);
            self.changed.notify_all();
        }
    }

    /// Hashes one file unless its digest is known or someone is hashing it; the bytes read.
    fn hash_one(&self, name: &Name) -> u64 {
        let Ok(opened) = self.store.open_file(name) else { return 0 };
        if self.store.cached_digest(&opened).is_some() {
            return 0;
        }
        let job = match self.store.hash_job(&opened) {
            Ok(job) => job,
            Err(e) => {
                warn!(name = %name, error = %e, "cannot hash a file in the background");
                return 0;
            }
        };
        match job.begin() {
            Begun::Lead(lead) => match lead.run_until(&self.stop) {
                Ok(_) => opened.size,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
                Err(e) => {
                    warn!(name = %name, error = %e, "cannot hash a file in the background");
                    0
                }
            },
            // Known meanwhile, or a GET is hashing it.
            Begun::Known(_) | Begun::Follow(_) => 0,
        }
    }

    fn log_progress(&self) {
        let state = self.lock();
        let r = &state.round;
        if r.started.is_some() && r.files_done < r.files {
            info!(
                "hashed {} of {} files, {} of {}",
                thousands(r.files_done),
                thousands(r.files),
                gib(r.bytes_done),
                gib(r.bytes)
            );
        }
    }
}

/// The queue has drained: says how long the round took, and starts the next one afresh.
fn finish_round(round: &mut Round) {
    if let Some(started) = round.started {
        info!(
            files = round.files_done,
            bytes = round.bytes_done,
            secs = started.elapsed().as_secs_f64(),
            "background hashing done: {} files, {}",
            thousands(round.files_done),
            gib(round.bytes_done)
        );
    }
    *round = Round::default();
}

/// Lowers the calling thread's CPU priority (and, under the CFQ and BFQ I/O schedulers, its
/// I/O priority, which follows it): hashing in the background must not slow serving.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), BACKGROUND_NICE) {
        debug!(error = %e, "could not lower the background hashing priority");
    }
}

/// `1204` → `1,204`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in GiB with one decimal, or MiB below one GiB.
fn gib(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
    } else {
        format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_as_in_the_log() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1204), "1,204");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(gib(38 << 30), "38.0 GiB");
        assert_eq!(gib(3 << 19), "1.5 MiB");
    }
}
