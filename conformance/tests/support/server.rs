//! The server: an acceptor thread and one thread per connection, each driving a
//! [`ServerConnection`] over its socket with the files in a shared in-memory map (like
//! `ferry_proto::memory`, plus capacity, deadlines, STATUS history, a lingering close and the
//! shutdown drain). Every place a fault changes behaviour is marked `// Fault:`.
//!
//! Two setups add to that (`Setup::disk`, `Setup::big_file`). On disk, the map is the content
//! of a root directory on disk: read from it whenever the map is locked, and written back when
//! the lock is let go; uploads arrive in a temporary file under `.ferry`. That is what the
//! suite's local mode (`--root`) needs: files planted by hand are served, symbolic links and
//! directories are not. A big file is a file of 4 GiB and more that no one uploaded, generated
//! as it is sent: the suite's large content ([`large::fill`]), which no case can afford to
//! upload to every broken server.
//!
//! Everything is bounded: reads wake at least every 100 ms to notice [`Server`] being dropped, and
//! dropping it joins every thread.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferry_conformance::cases::large;
use ferry_proto::limits::ReadLimits;
use ferry_proto::server::{Command, Event, ServerConfig, ServerConnection};
use ferry_proto::{
    Capabilities, ClientItem, ConnRecord, Decoded, Digest, Entry, ErrorCode, ErrorReply, FrameHead, Name, NameError,
    PutHead, PutMode, Request, RequestDecoder, RequestKind, Role,
};

use super::{Fault, Setup, Trailer};

/// How long a closing connection reads and drops input before closing (`[ERR-9]`).
const LINGER: Duration = Duration::from_millis(500);
/// How long a shutdown lets requests in progress finish (§ 13).
const GRACE: Duration = Duration::from_secs(2);
/// Bound on the waits of a fault that keeps a connection open.
const KEEP_OPEN: Duration = Duration::from_secs(20);
/// How long a reply is held back, hoping to swap it with the next one (`ReorderReplies`).
const HOLD: Duration = Duration::from_millis(150);
/// How long a write may wait for a client that does not read (`[TIME-5]`).
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
/// STATUS keeps this many connections.
const HISTORY: usize = 64;
/// How long `RacyPutOutcome` waits between deciding a PUT's outcome and publishing the file.
const RACE_WINDOW: Duration = Duration::from_millis(20);
/// How often `UnboundedOutput` tries to send what it has queued.
const FLUSH_EVERY: Duration = Duration::from_millis(5);
/// The name of the big file (`Setup::big_file`).
const BIG_NAME: &str = "big-4gib.bin";
/// GET data of the big file up to this size is sent with the reply's head; more is streamed.
const BIG_INLINE: u64 = 8 << 20;

/// A running server; dropping it stops it and joins all its threads.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
    /// The root of a server on disk, removed after the threads are joined.
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server on 127.0.0.1:0, correct unless `fault` is given.
    pub fn start(setup: Setup, fault: Option<Fault>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking listener");
        let addr = listener.local_addr().expect("local address");
        let mut anonymous = setup.anonymous;
        if fault == Some(Fault::ForbiddenIgnored) {
            // Fault: the connection machine grants write; the hello will announce `setup.anonymous`.
            anonymous = Role::Write;
        }
        let mut capabilities = Capabilities::ALL_V1;
        if setup.trailer == Trailer::Off && fault != Some(Fault::TrailerUnannounced) {
            capabilities = Capabilities(capabilities.0 & !Capabilities::TRAILER.0);
        }
        let config = ServerConfig {
            limits: ReadLimits { max_name_len: 255, max_file_size: 1 << 30 },
            max_clients: setup.max_clients,
            handshake_timeout: setup.handshake_timeout,
            idle_timeout: Some(setup.idle_timeout),
            head_timeout: setup.request_timeout,
            progress_timeout: setup.request_timeout,
            // Fault: TrailerUnannounced serves TRAILER's requests; the hello says it does not.
            capabilities,
            anonymous: Some(anonymous),
            // Fault: ReadOnlyLeaks refuses writes in the host, and only some of them.
            read_only: setup.read_only && fault != Some(Fault::ReadOnlyLeaks),
            ..ServerConfig::default()
        };
        let dir = setup.disk.then(|| tempfile::tempdir().expect("a temporary root"));
        let shared = Arc::new(Shared {
            config: Arc::new(config),
            setup,
            fault,
            root: dir.as_ref().map(|d| d.path().to_owned()),
            big: setup.big_file.then(|| (Name::parse(BIG_NAME).expect("a valid name"), now_ms())),
            digests: Mutex::default(),
            write_backs: AtomicU64::new(0),
            files: Mutex::default(),
            history: Mutex::default(),
            next_id: AtomicU64::new(1),
            active: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            write_lock: Mutex::new(()),
        });
        let s = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name("broken-acceptor".into())
            .spawn(move || accept_loop(listener, &s))
            .expect("spawn acceptor");
        Self { addr, shared, acceptor: Some(acceptor), _dir: dir }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The root directory of a server on disk.
    pub fn root(&self) -> Option<&Path> {
        self.shared.root.as_deref()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

#[derive(Debug)]
struct Shared {
    config: Arc<ServerConfig>,
    setup: Setup,
    fault: Option<Fault>,
    /// Where the files are, on disk (`Setup::disk`).
    root: Option<PathBuf>,
    /// The big file's name and mtime (`Setup::big_file`).
    big: Option<(Name, i64)>,
    /// Digests remembered by name, size and mtime (`StaleDigestAfterEdit`).
    digests: Mutex<HashMap<(Name, u64, i64), Digest>>,
    /// Names for the temporary files of write-backs.
    write_backs: AtomicU64,
    files: Mutex<BTreeMap<Name, Stored>>,
    history: Mutex<VecDeque<ConnRecord>>,
    next_id: AtomicU64,
    /// Connections occupying a serving slot (`[CAP-1]`, `[CAP-2]`).
    active: AtomicUsize,
    /// The server is being dropped.
    stop: AtomicBool,
    /// An admin asked for SHUTDOWN (§ 13).
    draining: AtomicBool,
    /// Held by every write under `StalledReaderHoldsServer`.
    write_lock: Mutex<()>,
}

#[derive(Debug, Clone)]
struct Stored {
    data: Vec<u8>,
    mtime_ms: i64,
}

/// The files, locked. On disk they are read from the root when locked, and what changed is
/// written back when the lock is let go.
struct Files<'a> {
    map: MutexGuard<'a, BTreeMap<Name, Stored>>,
    /// On disk: the server, and the files as they were read.
    disk: Option<(&'a Shared, BTreeMap<Name, Stored>)>,
}

impl Deref for Files<'_> {
    type Target = BTreeMap<Name, Stored>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl DerefMut for Files<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.map
    }
}

impl Drop for Files<'_> {
    fn drop(&mut self) {
        if let Some((shared, before)) = &self.disk {
            shared.write_back(before, &self.map);
        }
    }
}

impl Shared {
    fn files(&self) -> Files<'_> {
        let mut map = self.files.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let disk = self.root.as_deref().map(|root| {
            *map = self.load(root);
            (self, map.clone())
        });
        Files { map, disk }
    }

    /// The regular files with valid names in `root`.
    fn load(&self, root: &Path) -> BTreeMap<Name, Stored> {
        let mut out = BTreeMap::new();
        for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
            let Some(name) = entry.file_name().to_str().and_then(|s| Name::parse(s).ok()) else { continue };
            let path = entry.path();
            // Fault: SymlinksFollowed looks through links (`[NAME-10]`).
            let meta = if self.is(Fault::SymlinksFollowed) {
                std::fs::metadata(&path)
            } else {
                std::fs::symlink_metadata(&path)
            };
            let Some(meta) = meta.ok().filter(std::fs::Metadata::is_file) else { continue };
            let Ok(data) = std::fs::read(&path) else { continue };
            out.insert(name, Stored { data, mtime_ms: mtime_ms(&meta) });
        }
        out
    }

    /// Writes what changed between `before` and `after` to the root: removed files are removed,
    /// new and changed ones written to a temporary file and renamed over their name. An entry
    /// that is not a regular file is never replaced or removed (`[STORE-8]`).
    fn write_back(&self, before: &BTreeMap<Name, Stored>, after: &BTreeMap<Name, Stored>) {
        let Some(root) = &self.root else { return };
        let regular = |p: &Path| std::fs::symlink_metadata(p).map(|m| m.is_file());
        for name in before.keys().filter(|n| !after.contains_key(*n)) {
            let path = root.join(name.as_str());
            if regular(&path).unwrap_or(false) {
                let _ = std::fs::remove_file(path);
            }
        }
        for (name, f) in after {
            if before.get(name).is_some_and(|old| old.data == f.data && old.mtime_ms == f.mtime_ms) {
                continue;
            }
            let path = root.join(name.as_str());
            if !regular(&path).unwrap_or(true) {
                continue;
            }
            let n = self.write_backs.fetch_add(1, Ordering::SeqCst);
            let tmp = root.join(format!(".ferry-wb-{n}"));
            if std::fs::write(&tmp, &f.data).and_then(|()| std::fs::rename(&tmp, &path)).is_err() {
                let _ = std::fs::remove_file(tmp);
            }
        }
    }

    /// Whether `name` is held in the root by an entry that is not a regular file (on disk).
    fn not_a_file(&self, name: &Name) -> bool {
        self.root.as_ref().is_some_and(|root| {
            std::fs::symlink_metadata(root.join(name.as_str())).is_ok_and(|m| !m.file_type().is_file())
        })
    }

    /// A file's digest.
    fn digest(&self, name: &Name, f: &Stored) -> Digest {
        if !self.is(Fault::StaleDigestAfterEdit) {
            return Digest::of(&f.data);
        }
        // Fault: remembered by name, size and mtime, which an edit in place can keep.
        let key = (name.clone(), f.data.len() as u64, f.mtime_ms);
        *self
            .digests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key)
            .or_insert_with(|| Digest::of(&f.data))
    }

    /// A file's entry.
    fn entry(&self, name: &Name, f: &Stored) -> Entry {
        let mut mtime_ms = f.mtime_ms;
        if self.is(Fault::MtimeWholeSeconds) {
            // Fault: rounded down to whole seconds.
            mtime_ms -= mtime_ms.rem_euclid(1000);
        }
        Entry { name: name.clone(), size: f.data.len() as u64, mtime_ms, md5: Some(self.digest(name, f)) }
    }

    /// The big file's entry.
    fn big_entry(&self) -> Option<Entry> {
        let (name, mtime_ms) = self.big.clone()?;
        Some(Entry { name, size: large::SIZE, mtime_ms, md5: Some(large::digest()) })
    }

    fn history(&self) -> MutexGuard<'_, VecDeque<ConnRecord>> {
        self.history.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn is(&self, fault: Fault) -> bool {
        self.fault == Some(fault)
    }

    /// Restores what an upload replaced for the time of its transfer.
    fn put_back(&self, name: Name, old: Option<Stored>) {
        match old {
            Some(f) => self.files().insert(name, f),
            None => self.files().remove(&name),
        };
    }

    fn record(&self, id: u64, update: impl FnOnce(&mut ConnRecord)) {
        if let Some(r) = self.history().iter_mut().find(|r| r.id == id) {
            update(r);
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A file's mtime in milliseconds since the epoch, truncated (`[LIST-4]`).
fn mtime_ms(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn accept_loop(listener: TcpListener, shared: &Arc<Shared>) {
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) && !shared.draining.load(Ordering::SeqCst) {
        let (stream, peer) = match listener.accept() {
            Ok(s) => s,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(_) => continue,
        };
        threads.retain(|t| !t.is_finished());
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_nodelay(true);
        // Fault: StalledReaderHoldsServer waits for a client that does not read as long as its
        // announced progress deadline allows (holding the write lock all the while).
        let write_timeout =
            if shared.is(Fault::StalledReaderHoldsServer) { shared.setup.request_timeout } else { WRITE_TIMEOUT };
        let _ = stream.set_write_timeout(Some(write_timeout)); // `[TIME-5]`
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        {
            let mut h = shared.history();
            h.push_back(ConnRecord {
                id,
                peer: peer.to_string(),
                connected_ms: now_ms(),
                disconnected_ms: None,
                bytes_in: 0,
                bytes_out: 0,
            });
            while h.len() > HISTORY {
                h.pop_front();
            }
        }
        let full = shared.active.load(Ordering::SeqCst) >= shared.setup.max_clients as usize;
        // Fault: IgnoreCapacity serves every connection.
        let s = shared.clone();
        let spawned = if full && !shared.is(Fault::IgnoreCapacity) {
            // `[CAP-1]`, `[CAP-2]`: BUSY at once, without a slot.
            std::thread::Builder::new().name("broken-busy".into()).spawn(move || {
                let busy = ServerConnection::busy_reply();
                let mut stream = stream;
                let _ = stream.write_all(&busy);
                s.record(id, |r| {
                    r.bytes_out = busy.len() as u64;
                    r.disconnected_ms = Some(now_ms());
                });
                linger(&mut stream, &s);
            })
        } else {
            shared.active.fetch_add(1, Ordering::SeqCst);
            std::thread::Builder::new().name(format!("broken-conn-{id}")).spawn(move || {
                Session::new(&s, stream, id).serve();
                s.record(id, |r| r.disconnected_ms = Some(now_ms()));
                s.active.fetch_sub(1, Ordering::SeqCst);
            })
        };
        if let Ok(t) = spawned {
            threads.push(t);
        }
    }
    drop(listener);
    for t in threads {
        let _ = t.join();
    }
}

/// Shuts the sending side, then reads and drops input for a bounded time before the socket is
/// closed (`[ERR-9]`), so that the last reply is not destroyed by a reset.
fn linger(stream: &mut TcpStream, shared: &Shared) {
    let _ = stream.shutdown(Shutdown::Write);
    let end = Instant::now() + LINGER;
    drain_until(stream, shared, end);
}

/// Reads and drops input until EOF, `end`, or the server stops.
fn drain_until(stream: &mut TcpStream, shared: &Shared, end: Instant) {
    let mut buf = [0u8; 4096];
    loop {
        let now = Instant::now();
        if now >= end || shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let _ = stream.set_read_timeout(Some((end - now).min(Duration::from_millis(100))));
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(_) => return,
        }
    }
}

/// One connection.
struct Session<'a> {
    shared: &'a Shared,
    stream: TcpStream,
    id: u64,
    conn: ServerConnection,
    /// Received bytes the machine has not used yet.
    input: Vec<u8>,
    /// The upload in progress: its head and the bytes so far.
    upload: Option<(PutHead, Vec<u8>)>,
    /// The file an upload replaced for the time of its transfer (`VisibleDuringUpload`).
    provisional: Option<(Name, Option<Stored>)>,
    /// The version the client offered last, seen in its hello (for `VersionNotNegotiated`).
    client_max_version: u16,
    /// A reply held back to be swapped with the next (`ReorderReplies`), and since when.
    held: Option<(Vec<u8>, Instant)>,
    /// Close after sending what is pending, whatever the machine says (`DropAfterRecoverable`).
    force_close: bool,
    drain_started: Option<Instant>,
    /// This step's output ends with GET data (which may look like anything).
    data_in_step: bool,
    /// A write failed: the connection is over.
    failed: bool,
    /// Reply bytes the socket did not take yet (`UnboundedOutput`).
    backlog: VecDeque<u8>,
    /// The upload's temporary file, on disk.
    temp: Option<(PathBuf, std::fs::File)>,
    /// The big file's data still to send after this step's replies: from where, and how much.
    big_pending: Option<(u64, u64)>,
    /// The PUT being read is above the announced limit (`TooLargeReadsData`).
    too_large_after_data: bool,
    /// The trailing PUT being read was answered before its trailer (`ReplyBeforeTrailer`).
    answered_early: bool,
    /// The requests as the machine reads them, decoded again to tell a FETCH from a GET, which
    /// the machine's command does not for offsets above 0 (`TrailingFetchResumed`).
    shadow: Option<(RequestDecoder, Vec<u8>)>,
    /// The last request the shadow decoder read was a FETCH.
    fetching: bool,
    /// A refused trailing PUT's data bytes, then trailer bytes, still to come
    /// (`RefusalTrailerUnchecked`).
    scrub: Option<(u64, u64)>,
}

impl<'a> Session<'a> {
    fn new(shared: &'a Shared, stream: TcpStream, id: u64) -> Self {
        Self {
            conn: ServerConnection::new(shared.config.clone(), Instant::now()),
            shared,
            stream,
            id,
            input: Vec::new(),
            upload: None,
            provisional: None,
            client_max_version: 1,
            held: None,
            force_close: false,
            drain_started: None,
            data_in_step: false,
            failed: false,
            backlog: VecDeque::new(),
            temp: None,
            big_pending: None,
            too_large_after_data: false,
            answered_early: false,
            shadow: shared.is(Fault::TrailingFetchResumed).then(|| {
                let trailer = shared.config.capabilities.contains(Capabilities::TRAILER);
                (RequestDecoder::new(shared.config.limits).with_trailer(trailer), Vec::new())
            }),
            fetching: false,
            scrub: None,
        }
    }

    /// On disk, an upload's data also goes to a temporary file in the root.
    fn start_temp(&mut self, name: &Name) {
        let Some(root) = &self.shared.root else { return };
        let n = self.shared.write_backs.fetch_add(1, Ordering::SeqCst);
        let temp = if self.is(Fault::TempNotReserved) {
            // Fault: the temporary file has a valid name.
            root.join(format!("{}.part", name.as_str()))
        } else {
            root.join(format!(".ferry-tmp-{}-{n}", self.id))
        };
        if let Ok(file) = std::fs::File::create(&temp) {
            self.temp = Some((temp, file));
        }
    }

    /// Removes the upload's temporary file.
    fn end_temp(&mut self) {
        if let Some((path, file)) = self.temp.take() {
            drop(file);
            let _ = std::fs::remove_file(path);
        }
    }

    fn is(&self, fault: Fault) -> bool {
        self.shared.is(fault)
    }

    fn serve(mut self) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                return;
            }
            if self.shared.draining.load(Ordering::SeqCst) && self.drain_started.is_none() {
                self.drain_started = Some(Instant::now());
                self.conn.begin_shutdown(Instant::now());
            }
            if self.drain_started.is_some_and(|t| t.elapsed() > GRACE) {
                break; // § 13: the grace period is over; an upload in progress is discarded.
            }
            self.rewrite_input();
            let chunks = self.process(Instant::now());
            if !self.send(chunks) {
                break;
            }
            self.stream_big();
            if self.failed {
                break;
            }
            if self.conn.is_closed() || self.force_close {
                break;
            }
            let now = Instant::now();
            let mut wait = Duration::from_millis(100);
            if let Some(deadline) = self.conn.poll_timeout() {
                wait = wait.min(deadline.saturating_duration_since(now));
            }
            if self.held.is_some() {
                wait = wait.min(HOLD / 2);
            }
            if !self.backlog.is_empty() {
                wait = wait.min(FLUSH_EVERY);
            }
            let _ = self.stream.set_read_timeout(Some(wait.max(Duration::from_millis(1))));
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.conn.handle_eof(&self.input);
                    break;
                }
                Ok(n) => {
                    self.input.extend_from_slice(&buf[..n]);
                    self.shared.record(self.id, |r| r.bytes_in += n as u64);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                    self.on_tick();
                }
                Err(_) => break,
            }
            // Fault: UnboundedOutput sends what it queued as the socket takes it.
            self.flush_backlog();
        }
        self.close();
    }

    /// A read timed out: deadlines, and held replies.
    fn on_tick(&mut self) {
        let now = Instant::now();
        if self.conn.poll_timeout().is_some_and(|d| now >= d) {
            let request_in_progress = self.conn.is_busy();
            let idle = !request_in_progress && self.conn.role().is_some();
            // Fault: HangOnTruncated has no head or progress deadline, IdleNeverTimesOut no idle one.
            let skip =
                (request_in_progress && self.is(Fault::HangOnTruncated)) || (idle && self.is(Fault::IdleNeverTimesOut));
            if !skip {
                self.conn.handle_timeout(now);
            }
        }
        if self.held.as_ref().is_some_and(|(_, t)| t.elapsed() >= HOLD) {
            let (h, _) = self.held.take().expect("held");
            self.write(&h);
        }
    }

    /// Hooks on the client's bytes before the machine sees them: the hello.
    fn rewrite_input(&mut self) {
        if self.conn.role().is_some() || self.conn.is_legacy() || !self.input.starts_with(ferry_proto::limits::MAGIC) {
            return;
        }
        if self.input.len() >= 9 {
            self.client_max_version = u16::from_be_bytes([self.input[7], self.input[8]]);
        }
        if self.input.len() < 11 || !self.is(Fault::UnknownTokenFallsBack) {
            return;
        }
        // Fault: an unknown (but well-formed) token is dropped from the hello: the anonymous role.
        let len = usize::from(u16::from_be_bytes([self.input[9], self.input[10]]));
        let Some(token) = self.input.get(11..11 + len) else { return };
        let well_formed = len > 0 && len <= 256 && token.iter().all(|b| (0x21..=0x7E).contains(b));
        let known = std::str::from_utf8(token).is_ok_and(|t| self.shared.config.tokens.contains_key(t));
        if well_formed && !known {
            self.input.drain(9..11 + len);
            self.input.splice(9..9, [0, 0]);
        }
    }

    fn take_output(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        // A long reply is produced as it is taken: take it whole.
        while !self.conn.pending_output().is_empty() {
            out.extend_from_slice(self.conn.pending_output());
            let n = self.conn.pending_output().len();
            self.conn.consume_output(n, Instant::now());
        }
        out
    }

    /// Runs the machine on the input: one chunk of output per step (the replies a step produced).
    fn process(&mut self, now: Instant) -> Vec<Vec<u8>> {
        if self.waits_for_legacy_name() {
            return Vec::new();
        }
        let mut input = std::mem::take(&mut self.input);
        let mut used = 0;
        let mut chunks = Vec::new();
        loop {
            self.scrub_trailer(&mut input[used..]);
            let (n, event) = self.conn.handle_input(&input[used..], now);
            self.shadow_read(&input[used..used + n]);
            self.scrubbed(n);
            used += n;
            let mut chunk = self.take_output();
            let more = event.is_some();
            self.data_in_step = false;
            match event {
                Some(event) => self.on_event(event, &mut chunk, now),
                None => self.after_machine_replies(&mut chunk),
            }
            self.chunk_faults(&mut chunk);
            // The machine pauses while its output is above its bound (`[RES-2]`); this host
            // takes the output at once, so a step that produced some is followed by another.
            let produced = !chunk.is_empty();
            if produced {
                chunks.push(chunk);
            }
            // The big file's data goes before anything else.
            if !(more || n > 0 || produced) || self.force_close || self.big_pending.is_some() {
                break;
            }
        }
        self.input = input[used..].to_vec();
        chunks
    }

    /// `RefusalTrailerUnchecked`: the trailer of a refused trailing PUT, as far as it has arrived
    /// in `input` (which starts where the machine reads next), has every byte that is not a
    /// hexadecimal digit replaced by `0` before the machine sees it.
    fn scrub_trailer(&self, input: &mut [u8]) {
        let Some((data, trailer)) = self.scrub else { return };
        let from = usize::try_from(data).unwrap_or(usize::MAX).min(input.len());
        let to = from.saturating_add(trailer as usize).min(input.len());
        for b in &mut input[from..to] {
            if !b.is_ascii_hexdigit() {
                // Fault: the digit is never checked.
                *b = b'0';
            }
        }
    }

    /// The machine used `n` bytes: they count against what [`Self::scrub_trailer`] waits for.
    fn scrubbed(&mut self, n: usize) {
        let Some((data, trailer)) = &mut self.scrub else { return };
        let n = n as u64;
        let from_data = n.min(*data);
        *data -= from_data;
        *trailer = trailer.saturating_sub(n - from_data);
        if *data == 0 && *trailer == 0 {
            self.scrub = None;
        }
    }

    /// Decodes again the bytes the machine has just used (`TrailingFetchResumed` only).
    fn shadow_read(&mut self, used: &[u8]) {
        let Some((decoder, pending)) = &mut self.shadow else { return };
        pending.extend_from_slice(used);
        loop {
            match decoder.decode(pending) {
                Ok(Decoded::Item { item, consumed }) => {
                    match item {
                        ClientItem::Request(r) => self.fetching = matches!(r, Request::Fetch { .. }),
                        ClientItem::Rejected { kind, .. } => self.fetching = kind == RequestKind::Fetch,
                        _ => {}
                    }
                    pending.drain(..consumed);
                }
                Ok(Decoded::NeedMore) => return,
                Err(_) => {
                    self.shadow = None;
                    return;
                }
            }
        }
    }

    /// `LegacyWaitsForName`: a legacy request whose name length is above the limit is kept from
    /// the machine until the whole name has arrived.
    fn waits_for_legacy_name(&self) -> bool {
        if !self.is(Fault::LegacyWaitsForName) || self.conn.role().is_some() || self.conn.is_legacy() {
            return false;
        }
        match self.input.as_slice() {
            [0, a, b, c, rest @ ..] => {
                let len = u32::from_be_bytes([0, *a, *b, *c]) as usize;
                len > self.shared.config.limits.max_name_len as usize && rest.len() < len
            }
            _ => false,
        }
    }

    /// Replies the machine made by itself (HELP, BYE, fatal errors, deadlines).
    fn after_machine_replies(&mut self, chunk: &mut Vec<u8>) {
        if !self.conn.is_closed() || self.conn.is_legacy() {
            return;
        }
        match self.conn.close_reason() {
            None if chunk.last() == Some(&ferry_proto::tag::BYE) && self.is(Fault::NoByeReply) => {
                // Fault: BYE without its reply.
                chunk.pop();
            }
            Some(_) => {
                if let Some(at) = tail_error(chunk) {
                    let is_opcode = chunk[at..].windows(14).any(|w| w == b"unknown opcode");
                    if is_opcode && self.is(Fault::UnknownOpcodeNotMalformed) {
                        // Fault: UNSUPPORTED for an unknown opcode.
                        chunk[at + 1..at + 3].copy_from_slice(&ErrorCode::UNSUPPORTED.0.to_be_bytes());
                    }
                    let version = self.conn.close_reason() == Some(ErrorCode::UNSUPPORTED_VERSION);
                    if version && self.is(Fault::WrongVersionError) {
                        // Fault: MALFORMED for a hello offering no version spoken.
                        chunk[at + 1..at + 3].copy_from_slice(&ErrorCode::MALFORMED.0.to_be_bytes());
                    }
                }
            }
            None => {}
        }
    }

    /// Faults on any version 1 error reply, which starts at `at` and ends `chunk`.
    fn error_faults(&self, chunk: &mut Vec<u8>, at: usize) {
        if self.is(Fault::MessageTooLong) {
            // Fault: the message is padded to 1100 bytes.
            let len = usize::from(u16::from_be_bytes([chunk[at + 3], chunk[at + 4]]));
            chunk.resize(at + 5 + len.max(1100), b'.');
            let new_len = (chunk.len() - at - 5) as u16;
            chunk[at + 3..at + 5].copy_from_slice(&new_len.to_be_bytes());
        }
    }

    /// Faults on a step's output whatever made it.
    fn chunk_faults(&self, chunk: &mut Vec<u8>) {
        if self.conn.is_legacy() {
            self.legacy_faults(chunk);
        } else if !self.data_in_step {
            // A step makes at most one error reply, and nothing after it but GET data.
            if let Some(at) = tail_error(chunk) {
                self.error_faults(chunk, at);
            }
        }
        if self.is(Fault::HelpNotUtf8) {
            // Fault: the help text's first byte becomes 0xFF.
            let mut help = Vec::new();
            ferry_proto::ServerItem::Help(self.shared.config.help_text.clone()).encode(&mut help);
            if let Some(at) = chunk.windows(help.len()).position(|w| w == help.as_slice()) {
                chunk[at + 5] = 0xFF;
            }
        }
    }

    fn legacy_faults(&self, chunk: &mut Vec<u8>) {
        if self.is(Fault::LegacyWrongShape) && chunk.starts_with(b"ERROR") {
            // Fault: a version 1 error (NOT_FOUND) instead of "ERROR" and a message.
            let message = String::from_utf8_lossy(&chunk[5..]).into_owned();
            chunk.clear();
            ErrorReply::new(ErrorCode::NOT_FOUND, message).encode(chunk);
        }
    }

    fn key(&self, name: Name) -> Name {
        if self.is(Fault::CaseInsensitiveNames) {
            // Fault: names are folded to lowercase.
            Name::parse(&name.as_str().to_lowercase()).unwrap_or(name)
        } else {
            name
        }
    }

    /// Carries out an event; the replies go to `chunk` (which holds what the step made so far).
    fn on_event(&mut self, event: Event<'_>, chunk: &mut Vec<u8>, now: Instant) {
        match event {
            Event::Connected { .. } => self.hello_faults(chunk),
            Event::Shutdown => self.shared.draining.store(true, Ordering::SeqCst),
            Event::Refused { kind, error } => {
                if let Some(at) = tail_error(chunk) {
                    self.accept_bad_name(kind, &error, chunk, at);
                }
                if kind == RequestKind::Shutdown && self.is(Fault::ShutdownForbiddenIgnored) {
                    // Fault: the server stops although it refused.
                    self.shared.draining.store(true, Ordering::SeqCst);
                }
            }
            Event::PutData(d) => {
                if let Some((_, buf)) = &mut self.upload {
                    buf.extend_from_slice(d);
                }
                if let Some((_, file)) = &mut self.temp {
                    let _ = file.write_all(d);
                }
                self.reply_before_trailer(chunk);
            }
            Event::PutComplete { verified, .. } => {
                self.end_temp();
                if std::mem::take(&mut self.answered_early) {
                    // Fault: ReplyBeforeTrailer answered already; the machine's reply is dropped.
                    self.upload = None;
                    if verified {
                        self.conn.respond_put(false, now);
                        let _ = self.take_output();
                    } else if let Some(at) = tail_error(chunk) {
                        chunk.truncate(at);
                    }
                    return;
                }
                if std::mem::take(&mut self.too_large_after_data) {
                    // Fault: TooLargeReadsData answers only now (unless the machine already
                    // answered CHECKSUM_MISMATCH).
                    if verified {
                        self.conn.respond_error(ErrorCode::TOO_LARGE, "the file is larger than max_file_size", now);
                    }
                    chunk.extend(self.take_output());
                    return;
                }
                let Some((head, data)) = self.upload.take() else { return };
                let provisional = self.provisional.take();
                let trailing = head.is_trailing();
                let name = self.key(head.name);
                if !verified {
                    // The machine has answered CHECKSUM_MISMATCH.
                    // Fault: TrailerMismatchPublished does not look at a trailer.
                    let unchecked = trailing && self.is(Fault::TrailerMismatchPublished);
                    if self.is(Fault::PublishOnMismatch) || unchecked {
                        // Fault: the file is stored anyway.
                        self.shared.files().insert(name, Stored { data, mtime_ms: now_ms() });
                    } else if let Some((name, old)) = provisional {
                        self.shared.put_back(name, old);
                    }
                    return;
                }
                let mut files = self.shared.files();
                let exists = match &provisional {
                    Some((_, old)) => old.is_some(),
                    None => files.contains_key(&name),
                };
                if self.is(Fault::RacyPutOutcome) {
                    // Fault: the outcome is decided, the lock let go, and the file published a
                    // moment later: uploads of the name that finish meanwhile decide alike.
                    drop(files);
                    std::thread::sleep(RACE_WINDOW);
                    files = self.shared.files();
                }
                // Fault: CreateOnlyOverwrites and CreateOnlyRace skip the check (`[STORE-6]`).
                let check = !self.is(Fault::CreateOnlyOverwrites) && !self.is(Fault::CreateOnlyRace);
                if head.mode == PutMode::CreateOnly && exists && check {
                    drop(files);
                    self.conn.respond_error(ErrorCode::EXISTS, "the file exists", now);
                } else {
                    files.insert(name, Stored { data, mtime_ms: now_ms() });
                    drop(files);
                    // Fault: WrongPutOutcome inverts the outcome.
                    self.conn.respond_put(exists != self.is(Fault::WrongPutOutcome), now);
                }
                chunk.extend(self.take_output());
            }
            Event::Command(command) => self.on_command(command, chunk, now),
        }
    }

    fn on_command(&mut self, command: Command, chunk: &mut Vec<u8>, now: Instant) {
        match command {
            Command::List => {
                let files = self.shared.files().clone();
                let mut entries: Vec<Entry> = files.iter().map(|(n, f)| self.shared.entry(n, f)).collect();
                if self.is(Fault::ListWrongDigest) {
                    // Fault: the digest of the file and one more byte.
                    for (e, f) in entries.iter_mut().zip(files.values()) {
                        e.md5 = Some(Digest::of(&[f.data.as_slice(), b"!"].concat()));
                    }
                }
                if let Some(e) = self.shared.big_entry() {
                    entries.push(e);
                    entries.sort_by(|a, b| a.name.as_str().as_bytes().cmp(b.name.as_str().as_bytes()));
                }
                self.conn.respond_list(entries.as_slice(), now);
                let mut reply = self.take_output();
                if self.is(Fault::UnsortedList) || self.is(Fault::ListShowsTemp) {
                    // The machine wants sorted entries (and valid names): the reply is re-encoded.
                    let rest = reply.split_off(list_len(&entries)); // a drain's SHUTTING_DOWN
                    reply.clear();
                    let mut shown: Vec<&Entry> = entries.iter().collect();
                    let temp = self.is(Fault::ListShowsTemp);
                    if self.is(Fault::UnsortedList) {
                        // Fault: entries in reverse order.
                        shown.reverse();
                    }
                    reply.push(ferry_proto::tag::LIST);
                    reply.extend_from_slice(&(shown.len() as u32 + u32::from(temp)).to_be_bytes());
                    if temp {
                        // Fault: a temporary upload file, `.ferry-tmp-upload`, 0 bytes, no md5.
                        let name = b".ferry-tmp-upload";
                        reply.extend_from_slice(&(name.len() as u32).to_be_bytes());
                        reply.extend_from_slice(name);
                        reply.extend_from_slice(&[0; 16]);
                        reply.push(0);
                    }
                    for e in shown {
                        e.encode(&mut reply);
                    }
                    reply.extend(rest);
                }
                chunk.extend(reply);
            }
            Command::Stat(name) => {
                let found = self.shared.files().get(&self.key(name.clone())).cloned();
                let found = found.map(|f| self.shared.entry(&name, &f)).or_else(|| self.big_entry_for(&name));
                match found {
                    Some(mut e) => {
                        // Fault: StatWrongSize adds one byte.
                        e.size += u64::from(self.is(Fault::StatWrongSize));
                        if self.is(Fault::StatSizeTruncated32) {
                            // Fault: the size modulo 2^32.
                            e.size &= 0xffff_ffff;
                        }
                        self.conn.respond_stat(&e, now);
                    }
                    None => self.not_found(now),
                }
                chunk.extend(self.take_output());
            }
            Command::Delete(name) => {
                let key = self.key(name);
                let removed = if self.is(Fault::DeleteKeepsFile) {
                    // Fault: the file is kept.
                    self.shared.files().contains_key(&key)
                } else {
                    self.shared.files().remove(&key).is_some()
                };
                if removed {
                    self.conn.respond_delete(now);
                } else {
                    self.not_found(now);
                }
                chunk.extend(self.take_output());
            }
            Command::Status => {
                // Fault: StatusMissingSelf leaves this connection out.
                let records: Vec<ConnRecord> = (self.shared.history().iter())
                    .filter(|r| r.id != self.id || !self.is(Fault::StatusMissingSelf))
                    .cloned()
                    .collect();
                self.conn.respond_status(records, now);
                chunk.extend(self.take_output());
            }
            Command::Get { name, offset, trailing } => {
                let found = self.shared.files().get(&self.key(name.clone())).cloned();
                match found {
                    Some(f) => self.get(name, offset, trailing, &f, chunk, now),
                    None if self.big_entry_for(&name).is_some() => self.get_big(name, offset, chunk, now),
                    None if self.is(Fault::WrongCodeNotFound) => {
                        // Fault: INTERNAL for a missing file.
                        self.conn.respond_error(ErrorCode::INTERNAL, "could not open the file", now);
                    }
                    None => self.not_found(now),
                }
                chunk.extend(self.take_output());
            }
            Command::Put(head) => {
                let exists = self.shared.files().contains_key(&self.key(head.name.clone()));
                let announced = self.shared.config.limits.max_file_size / 2;
                if self.is(Fault::ReadOnlyLeaks) && head.mode == PutMode::Overwrite {
                    // Fault: the only writes this "read-only" server refuses.
                    self.conn.respond_error(ErrorCode::FORBIDDEN, "this server is read-only", now);
                } else if self.is(Fault::TooLargeReadsData) && head.size > announced {
                    // Fault: the data of a PUT above the announced limit is read (and dropped);
                    // TOO_LARGE comes after it.
                    self.conn.accept_put();
                    self.too_large_after_data = true;
                } else if self.shared.not_a_file(&head.name) {
                    // `[STORE-8]`: a link or a directory holds the name.
                    self.conn.respond_error(ErrorCode::FORBIDDEN, "the name is not a regular file", now);
                } else if head.mode == PutMode::CreateOnly && exists && !self.is(Fault::CreateOnlyOverwrites) {
                    // Fault: CreateOnlyOverwrites skips this check.
                    self.conn.respond_error(ErrorCode::EXISTS, "the file exists", now);
                    if head.is_trailing() && self.is(Fault::RefusalTrailerUnchecked) {
                        // Fault: the trailer after the discarded data is not checked.
                        self.scrub = Some((head.size, 32));
                    }
                } else {
                    self.conn.accept_put();
                    if self.is(Fault::VisibleDuringUpload) {
                        // Fault: an empty file under the name until the upload ends.
                        let name = self.key(head.name.clone());
                        let empty = Stored { data: Vec::new(), mtime_ms: now_ms() };
                        let old = self.shared.files().insert(name.clone(), empty);
                        self.provisional = Some((name, old));
                    }
                    self.start_temp(&head.name);
                    self.upload = Some((head, Vec::new()));
                }
                chunk.extend(self.take_output());
            }
        }
    }

    /// The big file's entry, if `name` is the big file's and no upload took its name.
    fn big_entry_for(&self, name: &Name) -> Option<Entry> {
        self.shared.big_entry().filter(|e| &e.name == name)
    }

    /// A GET of the big file: its data is generated, with the reply if it is small, else
    /// streamed after this step's replies (`big_pending`).
    fn get_big(&mut self, name: Name, offset: u64, chunk: &mut Vec<u8>, now: Instant) {
        let frame = FrameHead { name, size: large::SIZE, md5: large::digest() };
        let Some((_, remaining)) = self.conn.respond_get(frame, now) else { return };
        chunk.extend(self.take_output());
        let mut from = offset;
        if self.is(Fault::OffsetWrapped32) {
            // Fault: the offset modulo 2^32.
            from &= 0xffff_ffff;
        }
        if remaining > BIG_INLINE {
            self.big_pending = Some((from, remaining));
            return;
        }
        let at = chunk.len();
        chunk.resize(at + remaining as usize, 0);
        large::fill(from, &mut chunk[at..]);
        self.data_in_step = remaining > 0;
        self.conn.body_sent(remaining, now);
    }

    /// Sends the big file's data that [`Self::get_big`] left for later.
    fn stream_big(&mut self) {
        let Some((from, n)) = self.big_pending.take() else { return };
        let mut buf = vec![0u8; 1 << 20];
        let mut sent = 0u64;
        while sent < n && !self.failed && !self.shared.stop.load(Ordering::SeqCst) {
            let k = (n - sent).min(buf.len() as u64) as usize;
            large::fill(from + sent, &mut buf[..k]);
            self.write(&buf[..k]);
            sent += k as u64;
        }
        self.conn.body_sent(sent, Instant::now());
    }

    fn not_found(&mut self, now: Instant) {
        self.conn.respond_error(ErrorCode::NOT_FOUND, "no such file", now);
        // Fault: the connection is closed after a recoverable error.
        self.force_close |= self.is(Fault::DropAfterRecoverable);
    }

    fn get(&mut self, name: Name, offset: u64, trailing: bool, f: &Stored, chunk: &mut Vec<u8>, now: Instant) {
        let data = f.data.as_slice();
        let size = data.len() as u64;
        if trailing && self.trails() {
            // A FETCH from 0 (`[TRL-6]`), answered in the trailing form (§ 7.10).
            let Some(n) = self.conn.respond_get_trailing(name, size, now) else { return };
            chunk.extend(self.take_output());
            chunk.extend_from_slice(data);
            self.conn.body_sent(n, now);
            let mut md5 = Digest::of(data);
            if self.is(Fault::WrongTrailer) {
                // Fault: the digest of the file and one more byte.
                md5 = Digest::of(&[data, b"!"].concat());
            }
            self.conn.send_trailer(md5, now);
            chunk.extend(self.take_output());
            self.data_in_step = true;
            return;
        }
        // Fault: TrailingGet answers a GET from 0, TrailingFetchResumed a FETCH from above 0, with
        // tag 0x8B.
        let forced = (self.is(Fault::TrailingGet) && !trailing && offset == 0 && !self.fetching)
            || (self.is(Fault::TrailingFetchResumed) && self.fetching && offset > 0 && offset <= size);
        let md5 = self.shared.digest(&name, f);
        let mut frame = FrameHead { name, size, md5 };
        if self.is(Fault::WrongDigest) {
            // Fault: the digest of the file and one more byte.
            frame.md5 = Digest::of(&[data, b"!"].concat());
        }
        if self.is(Fault::TailDigest) {
            // Fault: the digest of the bytes sent only.
            frame.md5 = Digest::of(&data[(offset.min(size)) as usize..]);
        }
        if self.is(Fault::OffByOneSize) {
            // Fault: one byte more announced than sent.
            frame.size += 1;
        }
        let past_end = offset > size;
        if past_end && self.is(Fault::BadOffsetNotRefused) {
            // Fault: an empty frame; the machine is told the file is `offset` bytes long, and the
            // size field is put back afterwards.
            frame.size = offset;
        }
        let Some((_, remaining)) = self.conn.respond_get(frame.clone(), now) else { return };
        let mut head = self.take_output();
        if forced {
            // The machine sends the leading form; its head is replaced, and the whole file sent.
            head.clear();
            ferry_proto::ServerItem::FetchTrailing { name: frame.name.clone(), size }.encode(&mut head);
            chunk.extend(head);
            chunk.extend_from_slice(data);
            chunk.extend_from_slice(&Digest::of(data).to_hex());
            self.data_in_step = true;
            self.conn.body_sent(remaining, now);
            return;
        }
        let name_len = frame.name.as_str().len();
        if past_end && self.is(Fault::BadOffsetNotRefused) {
            let at = 1 + 8 + 4 + name_len;
            head[at..at + 8].copy_from_slice(&size.to_be_bytes());
        }
        if self.is(Fault::UppercaseDigest) {
            // Fault: the digest's hexadecimal digits in uppercase (the head's last 32 bytes).
            let at = head.len() - 32;
            head[at..].make_ascii_uppercase();
        }
        chunk.extend(head);
        let mut from = if self.is(Fault::IgnoreOffset) { 0 } else { offset.min(size) as usize };
        if self.is(Fault::OffsetWrapped32) {
            // Fault: the offset modulo 2^32.
            from = (offset & 0xffff_ffff).min(size) as usize;
        }
        chunk.extend_from_slice(&data[from..]);
        self.data_in_step = from < data.len();
        self.conn.body_sent(remaining, now);
    }

    /// Whether a FETCH from 0 gets the trailing form.
    fn trails(&self) -> bool {
        self.shared.setup.trailer == Trailer::Trailing
    }

    /// `ReplyBeforeTrailer`: once a trailing upload's data is all there, it is published and
    /// answered, its trailer not yet read.
    fn reply_before_trailer(&mut self, chunk: &mut Vec<u8>) {
        if !self.is(Fault::ReplyBeforeTrailer) || self.answered_early {
            return;
        }
        let Some((head, data)) = &self.upload else { return };
        if !head.is_trailing() || data.len() as u64 != head.size {
            return;
        }
        // Fault: answered (and published) now.
        let name = self.key(head.name.clone());
        let stored = Stored { data: data.clone(), mtime_ms: now_ms() };
        let replaced = self.shared.files().insert(name, stored).is_some();
        chunk.extend_from_slice(&[ferry_proto::tag::PUT, u8::from(replaced)]);
        self.answered_early = true;
    }

    /// Faults on the server hello, the whole of `chunk` (the handshake's step makes nothing else).
    fn hello_faults(&self, chunk: &mut [u8]) {
        if chunk.len() != 36 {
            return;
        }
        if self.is(Fault::VersionNotNegotiated) {
            // Fault: the client's max_version.
            chunk[1..3].copy_from_slice(&self.client_max_version.to_be_bytes());
        }
        if self.is(Fault::ForbiddenIgnored) {
            // Fault: announces the configured role (read); the machine granted write.
            chunk[3] = self.shared.setup.anonymous as u8;
        }
        if self.is(Fault::AnnouncedFileSizeNotEnforced) || self.is(Fault::TooLargeReadsData) {
            // Fault: half the limit the machine enforces.
            let half = self.shared.config.limits.max_file_size / 2;
            chunk[12..20].copy_from_slice(&half.to_be_bytes());
        }
        if self.is(Fault::ExtraCapabilityBits) {
            // Fault: bit 8, which version 1 does not define.
            chunk[6] |= 0x01;
        }
        if self.is(Fault::TrailerUnannounced) {
            // Fault: TRAILER (bit 4) is not announced, though the machine serves it.
            chunk[7] &= !(Capabilities::TRAILER.0 as u8);
        }
    }

    /// `AcceptDotDot`, `AcceptSlash`, `AcceptReservedPrefix`: the BAD_NAME reply at `at` becomes
    /// what a server that took the name would send.
    fn accept_bad_name(&self, kind: RequestKind, error: &ErrorReply, chunk: &mut Vec<u8>, at: usize) {
        let accepted = [
            (Fault::AcceptDotDot, NameError::DotName("..")),
            (Fault::AcceptSlash, NameError::ForbiddenChar('/')),
            (Fault::AcceptReservedPrefix, NameError::Reserved),
        ]
        .into_iter()
        .any(|(f, e)| self.is(f) && error.code == ErrorCode::BAD_NAME && error.message == e.to_string());
        if !accepted {
            return;
        }
        chunk.truncate(at);
        match kind {
            // The machine discards the data; the reply says it was stored.
            RequestKind::Put => chunk.extend_from_slice(&[ferry_proto::tag::PUT, 0]),
            _ => ErrorReply::new(ErrorCode::NOT_FOUND, "no such file").encode(chunk),
        }
    }

    /// Sends a step's chunks; false if the connection failed.
    fn send(&mut self, chunks: Vec<Vec<u8>>) -> bool {
        for c in chunks {
            let reorder =
                self.is(Fault::ReorderReplies) && !self.conn.is_legacy() && c.first() != Some(&ferry_proto::tag::HELLO);
            if !reorder {
                if let Some((h, _)) = self.held.take() {
                    self.write(&h);
                }
                self.write(&c);
                continue;
            }
            // Fault: a reply is held back; if the next one comes soon and differs, it goes first.
            match self.held.take() {
                Some((h, _)) if h != c => {
                    self.write(&c);
                    self.write(&h);
                }
                Some((h, _)) => {
                    self.write(&h);
                    self.held = Some((c, Instant::now()));
                }
                None => self.held = Some((c, Instant::now())),
            }
        }
        if self.conn.is_closed() || self.force_close {
            if let Some((h, _)) = self.held.take() {
                self.write(&h);
            }
        }
        !self.failed
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.failed || bytes.is_empty() {
            return;
        }
        if self.is(Fault::UnboundedOutput) {
            // Fault: what the socket does not take now is queued, and input is read on.
            self.backlog.extend(bytes);
            self.flush_backlog();
            return;
        }
        // Fault: StalledReaderHoldsServer writes every reply, server-wide, under one lock.
        let shared = self.shared;
        let _one_at_a_time = self
            .is(Fault::StalledReaderHoldsServer)
            .then(|| shared.write_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        match self.stream.write_all(bytes) {
            Ok(()) => self.shared.record(self.id, |r| r.bytes_out += bytes.len() as u64),
            Err(_) => self.failed = true,
        }
    }

    /// Sends what the socket takes of the backlog (`UnboundedOutput`) without waiting.
    fn flush_backlog(&mut self) {
        if self.backlog.is_empty() || self.failed || self.stream.set_nonblocking(true).is_err() {
            return;
        }
        while !self.backlog.is_empty() {
            let (front, _) = self.backlog.as_slices();
            match self.stream.write(front) {
                Ok(0) => self.failed = true,
                Ok(n) => {
                    self.backlog.drain(..n);
                    self.shared.record(self.id, |r| r.bytes_out += n as u64);
                    continue;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => self.failed = true,
            }
            break;
        }
        let _ = self.stream.set_nonblocking(false);
    }

    fn close(mut self) {
        let rest = self.take_output();
        self.write(&rest);
        if let Some((h, _)) = self.held.take() {
            self.write(&h);
        }
        // Fault: UnboundedOutput's queue goes out as a blocking write would, within its deadline.
        let backlog: Vec<u8> = std::mem::take(&mut self.backlog).into();
        if !self.failed && self.stream.write_all(&backlog).is_ok() {
            self.shared.record(self.id, |r| r.bytes_out += backlog.len() as u64);
        }
        if let Some((name, old)) = self.provisional.take() {
            self.shared.put_back(name, old);
        }
        if self.is(Fault::TempLeftAfterCut) {
            // Fault: a cut-off upload's temporary file stays.
            self.temp = None;
        }
        self.end_temp();
        if let Some((head, data)) = self.upload.take() {
            let all_data = head.is_trailing() && data.len() as u64 == head.size;
            if self.is(Fault::PublishPartial) || (all_data && self.is(Fault::PublishBeforeTrailer)) {
                // Fault: the bytes of a cut-off upload are published.
                let name = self.key(head.name);
                self.shared.files().insert(name, Stored { data, mtime_ms: now_ms() });
            }
        }
        let fatal = self.conn.close_reason().is_some_and(|c| c.is_fatal()) && !self.conn.is_legacy();
        let keep_open =
            (fatal && self.is(Fault::KeepOpenAfterFatal)) || (self.conn.is_legacy() && self.is(Fault::LegacyStaysOpen));
        if keep_open {
            // Fault: the connection stays open until the client closes it.
            let end = Instant::now() + KEEP_OPEN;
            drain_until(&mut self.stream, self.shared, end);
            return;
        }
        linger(&mut self.stream, self.shared);
    }
}

/// The length of a LIST reply of `entries`.
fn list_len(entries: &[Entry]) -> usize {
    let mut out = vec![0; 5];
    for e in entries {
        e.encode(&mut out);
    }
    out.len()
}

/// Where the error reply that ends `out` starts, if one does: a tag 0xFF, a code of § 9.2, and a
/// message reaching the end. Messages are UTF-8 and never contain 0xFF.
fn tail_error(out: &[u8]) -> Option<usize> {
    (0..out.len()).rev().filter(|&p| out[p] == ferry_proto::tag::ERROR).find(|&p| {
        out.len() >= p + 5 && {
            let code = u16::from_be_bytes([out[p + 1], out[p + 2]]);
            let len = usize::from(u16::from_be_bytes([out[p + 3], out[p + 4]]));
            (0x0100..=0x02FF).contains(&code) && p + 5 + len == out.len()
        }
    })
}
